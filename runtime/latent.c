#include "config.h"

#include "runtime/latent.h"

static const float k_raw_mean[EDM_LATENT_CHANNELS] = {5.81f, 3.25f, 0.12f, -2.15f};
static const float k_raw_std[EDM_LATENT_CHANNELS] = {4.17f, 4.62f, 3.71f, 3.28f};

float edm_latent_scale(int c) { return 0.5f / k_raw_std[c]; }

float edm_latent_bias(int c) { return -k_raw_mean[c] * edm_latent_scale(c); }
