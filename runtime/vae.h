/* The Stable Diffusion VAE (models/sd-vae.edm, diffusers' AutoencoderKL) as
 * the latent (img512) models use it: decoding their samples to pixels and
 * encoding images into the reference's latent datasets, with the
 * reference's conventions (its StabilityVAEEncoder): the VAE sees pixels /
 * 255, its decoded images become bytes as clamp(y, 0, 1)·255 rounded down,
 * and the samples are the raw latents normalised by runtime/latent.h.
 *
 * The weights are a diffusers safetensors file (both parts; each part takes
 * its own tensors). Its configuration is the .edm's defaults
 * (sd-vae-ft-mse) unless the file carries edmc.config metadata; the names
 * of the attention's layers (to_q... or the older query...) are read from
 * the file.  It compiles its .edm model, so it is built into the front-end
 * library with denoiser_open.c, not the runtime one. */
#ifndef EDMC_VAE_H
#define EDMC_VAE_H

#include <stdint.h>

#include "compiler/source.h"
#include "compiler/status.h"
#include "runtime/backend.h"

typedef struct edm_vae edm_vae;

typedef struct {
    const char *weights; /* FILE.safetensors (or anything edm_weights_open reads) */
    const char *model;   /* models/sd-vae.edm */
    int decoder;         /* 1: the decoder, 0: the encoder */
    int resolution;      /* the decoder's latent side, or the encoder's image side */
    int64_t batch;       /* the most images one call takes */
    edm_backend_options backend;
} edm_vae_spec;

/* Opens the weights, compiles the part and loads it.  A compile error is
 * returned in st with its position in src. */
edm_vae *edm_vae_open(const edm_vae_spec *spec, edm_sources *src, edm_status *st);
void edm_vae_free(edm_vae *v);

/* The pixel images' channels and side, and the latents' channels and side. */
int edm_vae_image_channels(const edm_vae *v);
int edm_vae_image_resolution(const edm_vae *v);
int edm_vae_latent_channels(const edm_vae *v);
int edm_vae_latent_resolution(const edm_vae *v);
/* The most images one call takes. */
int64_t edm_vae_batch(const edm_vae *v);

/* n ≤ batch samples of a latent model (normalised latents, n × C × r × r)
 * to n images (n × 3 × R × R) in edmc's pixel convention (edm_image_to_u8
 * gives the byte the reference writes). */
int edm_vae_decode(edm_vae *v, const float *latents, int64_t n, float *images, edm_status *st);
/* n ≤ batch images (n × 3 × R × R bytes, CHW) to n × 2C × r × r values: the
 * posterior's mean, then its std (what a latent dataset stores). */
int edm_vae_encode(edm_vae *v, const unsigned char *pixels, int64_t n, float *mean_std, edm_status *st);

#endif
