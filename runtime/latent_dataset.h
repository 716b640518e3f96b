/* `edmc dataset encode`: each image of a dataset through the Stable
 * Diffusion VAE's encoder (runtime/vae.h) into the entry the reference's
 * `dataset_tool.py encode` writes for it: a .npy of float32 (2C, R/8, R/8),
 * the posterior's mean then its std, as NNNNN/img-mean-std-NNNNNNNN.npy
 * (the hook edm_convert_opts.encode calls). */
#ifndef EDMC_LATENT_DATASET_H
#define EDMC_LATENT_DATASET_H

#include <stddef.h>

#include "compiler/source.h"
#include "compiler/status.h"
#include "runtime/backend.h"
#include "runtime/image_decode.h"
#include "runtime/vae.h"

#define EDM_LATENT_ENTRY_STEM "img-mean-std-"
#define EDM_LATENT_ENTRY_EXT "npy"

typedef struct {
    const char *weights, *model; /* the VAE's file and models/sd-vae.edm */
    edm_backend_options backend;
    edm_sources *src; /* where a compile error of the model points (the caller's) */
    edm_vae *vae;     /* opened at the first image, for its size */
} edm_latent_encoder;

/* An edm_convert_opts.encode: img (RGB, square) to the bytes of its .npy. */
int edm_latent_encode_image(void *encoder, const edm_rgb8 *img, unsigned char **data, size_t *len, edm_status *st);
void edm_latent_encoder_close(edm_latent_encoder *e);

/* A numpy .npy (format 1.0, '<f4', C order) of shape dim[0..rank) holding v,
 * with the header numpy writes (padded with spaces to a multiple of 64
 * bytes, ending in a newline); malloc'd into *out. */
int edm_npy_f32(const float *v, int rank, const int64_t *dim, unsigned char **out, size_t *len, edm_status *st);

#endif
