/* Images as PNG files (libpng): 8-bit RGB (3 channels) or gray (1 channel)
 * from CHW floats in [−1, 1], mapped by x·127.5 + 128 and clipped to 0..255
 * (the reference's encoding; NaN becomes 0).  Files are written atomically:
 * a temporary file in the same folder, synced, then renamed over the target. */
#ifndef EDMC_IMAGE_H
#define EDMC_IMAGE_H

#include <stdint.h>

#include "compiler/status.h"

/* One value to one byte. */
unsigned char edm_image_to_u8(float x);

/* One image: chw holds channels × height × width values. */
int edm_image_write_png(const char *path, const float *chw, int channels, int height, int width, edm_status *st);

/* n images (n × channels × height × width) tiled row by row into a grid of
 * ceil(sqrt(n)) columns; unused cells are black. */
int edm_image_write_grid(const char *path, const float *images, int64_t n, int channels, int height, int width,
                         edm_status *st);

#endif
