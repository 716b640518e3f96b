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
 * ceil(sqrt(n)) columns, each pixel a scale × scale block (1..64); unused
 * cells are black. */
int edm_image_write_grid(const char *path, const float *images, int64_t n, int channels, int height, int width,
                         int scale, edm_status *st);

/* A line plot, 640 × 420 RGB on white: the n points (x[i], y[i]) joined in
 * order of x, axes framing the data with "nice" ticks (1, 2 or 5 × 10^k),
 * tick labels, the axis titles xlabel (below) and ylabel (above the y axis),
 * and point `mark` (-1: none; meant for the minimum) circled in red, with
 * "min Y at XLABEL=X" written in red in the top right corner.  Text uses a built-in 5×7 font of the digits,
 * ". - + = : _ ( )" and the lower-case letters; other characters are left
 * blank.  Points with a non-finite x or y are left out (and break the line). */
int edm_image_plot(const char *path, const double *x, const double *y, int n, int mark, const char *xlabel,
                   const char *ylabel, edm_status *st);

#endif
