/* Resizing 8-bit RGB images with the filters of the reference's dataset
 * tool (PIL's box, bicubic and Lanczos), computed the way PIL computes
 * them: separable, horizontal pass first, each output sample a normalized
 * weighted sum over a support scaled by the reduction factor, in fixed
 * point with 22 fractional bits, rounded and clipped to 0..255 after each
 * pass. */
#ifndef EDMC_RESAMPLE_H
#define EDMC_RESAMPLE_H

#include "compiler/status.h"
#include "runtime/image_decode.h"

typedef enum { EDM_FILTER_BOX, EDM_FILTER_BICUBIC, EDM_FILTER_LANCZOS } edm_filter;

/* A new image of width × height from in (in is left as it is). */
int edm_resize_rgb8(const edm_rgb8 *in, int width, int height, edm_filter filter, edm_rgb8 *out, edm_status *st);

/* The rectangle [x0, x0+w) × [y0, y0+h) of in, which must lie inside it. */
int edm_crop_rgb8(const edm_rgb8 *in, int x0, int y0, int w, int h, edm_rgb8 *out, edm_status *st);

#endif
