/* edmc's C API: run an ahead-of-time package (`edmc compile`) from a C
 * program.  Link with `pkg-config --cflags --libs edmc` (docs/c-api.md).
 *
 * A model is an opened package with its weights; it evaluates the
 * preconditioned denoiser D(x; sigma, labels) and samples images with the
 * EDM sampler, on the device the package was compiled for.  The library
 * holds no state of its own: everything lives in the model handle, and
 * every function that can fail returns an edmc_code and, when err is not
 * NULL, fills it with the same code and a one-line message.  A model is
 * used by one thread at a time; separate models are independent. */
#ifndef EDMC_H
#define EDMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDMC_API_VERSION 1

typedef enum {
    EDMC_OK = 0,
    EDMC_ERR_USAGE = 1,    /* a bad argument, or a call out of order */
    EDMC_ERR_IO = 2,       /* a file could not be read */
    EDMC_ERR_FORMAT = 3,   /* a package or weights file is malformed or does not fit */
    EDMC_ERR_NOMEM = 4,
    EDMC_ERR_INTERNAL = 5, /* anything else (the device, a limit) */
} edmc_code;

#define EDMC_MESSAGE_SIZE 1024

typedef struct {
    edmc_code code;
    char message[EDMC_MESSAGE_SIZE]; /* "" when code is EDMC_OK */
} edmc_error;

typedef struct edmc_model edmc_model;

/* Opens and checks a package (format version, checksums, graph, parameter
 * table).  threads: CPU threads (0: the default).  On success *out is the
 * model, which edmc_close frees; on failure *out is NULL. */
edmc_code edmc_open(const char *package, int threads, edmc_model **out, edmc_error *err);
void edmc_close(edmc_model *m);

/* Loads the network's weights from a .safetensors file, checked against the
 * package's parameter table (replaces weights loaded before). */
edmc_code edmc_set_weights(edmc_model *m, const char *safetensors, edmc_error *err);

/* The images the model works on (known once it is opened): channels,
 * height, width, and the width of its one-hot class labels (0:
 * unconditional).  Any pointer may be NULL. */
edmc_code edmc_image_shape(const edmc_model *m, int *channels, int *height, int *width, int *label_dim,
                           edmc_error *err);

/* On cuda the kernels are compiled for fixed batches (`edmc compile
 * --batch=`): n up to the largest runs, padded to the next batch held. */

/* D(x; sigma, labels) for n images: x is n × C × H × W, sigma n values > 0,
 * labels n × label_dim (NULL for an unconditional model); writes D
 * (n × C × H × W). */
edmc_code edmc_forward(edmc_model *m, int64_t n, const float *x, const float *sigma, const float *labels, float *D,
                       edmc_error *err);

/* Samples one image per seed with the EDM sampler (Heun, `steps` >= 2 noise
 * levels, sigma from 80 to 0.002, no churn): each image's noise and class
 * come from its seed, as with `edmc generate --seeds`.  images receives
 * n × C × H × W values. */
edmc_code edmc_sample(edmc_model *m, const uint64_t *seeds, int64_t n, int steps, float *images, edmc_error *err);

#ifdef __cplusplus
}
#endif

#endif
