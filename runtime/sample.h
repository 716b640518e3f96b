/* The EDM samplers (docs/sampling.md): on the noise levels
 * t_i = (σmax^{1/ρ} + i/(N−1)·(σmin^{1/ρ} − σmax^{1/ρ}))^ρ, t_N = 0, Heun's
 * 2nd-order method with the stochastic "churn" of the EDM paper's Algorithm 2
 * (the default), Euler's method, or DPM-Solver++(2M); guidance by a second
 * network, D = D_g + w·(D − D_g), optionally only inside a σ interval.
 *
 * Every random draw belongs to one seed (a counter-based stream keyed by the
 * seed), so image k is the same whatever batch it is drawn in. */
#ifndef EDMC_SAMPLE_H
#define EDMC_SAMPLE_H

#include <stdint.h>

#include "compiler/status.h"
#include "runtime/denoiser.h"

typedef enum {
    EDM_SAMPLER_HEUN,     /* 2nd order, 2N − 1 evaluations (the EDM default) */
    EDM_SAMPLER_EULER,    /* 1st order, N evaluations */
    EDM_SAMPLER_DPMPP_2M, /* DPM-Solver++(2M): 2nd-order multistep on log σ, N evaluations, no churn */
} edm_sampler;

typedef struct {
    edm_sampler sampler;
    int steps;                        /* N >= 2 */
    double sigma_min, sigma_max, rho; /* 0.002, 80, 7 */
    double S_churn, S_min, S_max, S_noise; /* 0, 0, inf, 1: no churn */
    double guidance;                  /* w; 1: the guide is not evaluated */
    double guidance_lo, guidance_hi;  /* guidance only at σ in [lo, hi] (0, inf: everywhere) */
} edm_sample_params;

/* "heun", "euler", "dpmpp-2m" (-1 for another name), and back. */
int edm_sampler_from_name(const char *name);
const char *edm_sampler_name(edm_sampler s);
/* Denoiser evaluations per image: 2N − 1 for Heun, N for the others. */
int edm_sample_nfe(const edm_sample_params *p);

void edm_sample_params_default(edm_sample_params *p);
/* Refuses steps < 2, σmin <= 0, σmax <= σmin, ρ <= 0, negative or
 * non-finite churn settings, non-finite guidance (EDM_ERR_USAGE). */
int edm_sample_params_check(const edm_sample_params *p, edm_status *st);

/* t[0..steps] (steps + 1 values, t[steps] = 0). */
void edm_sample_schedule(const edm_sample_params *p, double *t);
/* γ_i for a step at noise level t: min(S_churn/N, √2 − 1) inside
 * [S_min, S_max] when S_churn > 0, else 0. */
double edm_sample_gamma(const edm_sample_params *p, double t);

/* The unit normal noise of a seed (numel values) and its random class. */
void edm_sample_noise(uint64_t seed, float *out, int64_t numel);
int edm_sample_class(uint64_t seed, int label_dim);

/* Checks that a guide can guide net: the same image shape, and either the
 * same label width (it gets the labels) or unconditional (it gets none). */
int edm_sample_check_guide(const edm_denoiser *net, const edm_denoiser *guide, edm_status *st);

/* Samples n images (n <= both denoisers' batch).  x holds each image's unit
 * noise on entry and the sample on return; seeds[i] keys image i's churn
 * noise; labels are n × label_dim (NULL for an unconditional net).  guide may
 * be NULL when p->guidance is 1. */
int edm_sample_run(const edm_sample_params *p, edm_denoiser *net, edm_denoiser *guide, const uint64_t *seeds,
                   const float *labels, int64_t n, float *x, edm_status *st);

#endif
