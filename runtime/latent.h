/* The reference's normalisation of the Stable Diffusion VAE's latents (the
 * img512 models; docs/edm2.md §5): per channel c, a raw latent z becomes
 * z·scale(c) + bias(c), with scale = 0.5 / raw_std and bias = −raw_mean·scale
 * for raw_mean = [5.81, 3.25, 0.12, −2.15], raw_std = [4.17, 4.62, 3.71,
 * 3.28] (mean 0, std 0.5), in float32 as the reference computes them. */
#ifndef EDMC_LATENT_H
#define EDMC_LATENT_H

#define EDM_LATENT_CHANNELS 4

/* c in 0..EDM_LATENT_CHANNELS-1 */
float edm_latent_scale(int c);
float edm_latent_bias(int c);

#endif
