/* Decoding source images for dataset conversion: PNG (libpng) and JPEG
 * (libjpeg) bytes to 8-bit RGB of any size, the way the reference's tool
 * reads them (PIL's convert('RGB')): gray is repeated, a palette expanded,
 * alpha dropped (not composited), 16-bit samples cut to their high byte. */
#ifndef EDMC_IMAGE_DECODE_H
#define EDMC_IMAGE_DECODE_H

#include <stddef.h>

#include "compiler/status.h"

typedef struct {
    int width, height;
    unsigned char *px; /* height × width × 3, row by row (malloc'd) */
} edm_rgb8;

/* Decodes bytes by their signature (PNG or JPEG); name is for errors. */
int edm_decode_image(const unsigned char *bytes, size_t len, const char *name, edm_rgb8 *out, edm_status *st);
void edm_rgb8_free(edm_rgb8 *im);

/* A PNG of im in a malloc'd buffer, 8-bit RGB, compressed with libpng's
 * fast setting (the reference's tool writes zlib level 0: same pixels). */
int edm_encode_png_rgb8(const edm_rgb8 *im, unsigned char **out, size_t *len, edm_status *st);

#endif
