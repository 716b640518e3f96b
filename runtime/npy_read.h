/* Reading NumPy's .npy format (version 1-3) as the reference's latent
 * datasets store it: a little-endian float32 or float16 array in C order.
 * The header's dict is parsed, not evaluated; anything else is an error. */
#ifndef EDMC_NPY_READ_H
#define EDMC_NPY_READ_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/status.h"

typedef struct {
    int itemsize; /* 2 ('<f2') or 4 ('<f4') */
    int ndim;
    int64_t shape[8];
} edm_npy_info;

/* The header of the .npy file b (len bytes; fname for messages): its dict
 * into info, the offset where the data starts into *data. */
int edm_npy_header(const char *fname, const unsigned char *b, size_t len, edm_npy_info *info, size_t *data,
                   edm_status *st);
/* Element i of data (as the header described it) as a float. */
float edm_npy_element(const edm_npy_info *info, const unsigned char *data, size_t i);

#endif
