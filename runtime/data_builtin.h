/* The built-in datasets (builtin:shapes, stripes, blobs): images drawn from
 * counter-based random streams, so image i is the same on every machine and
 * in every order; each has a few classes (the shape: an upright disc, square
 * or triangle; the stripes' direction; the number of blobs).  Pixels in [-1, 1], channels-first. */
#ifndef EDMC_DATA_BUILTIN_H
#define EDMC_DATA_BUILTIN_H

#include <stdint.h>

typedef enum { EDM_BUILTIN_SHAPES, EDM_BUILTIN_STRIPES, EDM_BUILTIN_BLOBS } edm_builtin_kind;

#define EDM_BUILTIN_MAX_CHANNELS 64 /* channels drawn; the dataset refuses more */

/* Image i's class. */
int edm_builtin_class(edm_builtin_kind kind, int64_t i);
/* Image i into out [ch, res, res] (ch <= EDM_BUILTIN_MAX_CHANNELS). */
void edm_builtin_render(edm_builtin_kind kind, int res, int ch, int64_t i, float *out);

#endif
