/* The EDM sampler (EDM2-SPEC.md §6): Heun's 2nd-order method on the noise
 * levels t_i = (σmax^{1/ρ} + i/(N−1)·(σmin^{1/ρ} − σmax^{1/ρ}))^ρ, t_N = 0,
 * with the stochastic "churn" of the EDM paper's Algorithm 2 and guidance by
 * a second network, D = D_g + w·(D − D_g).
 *
 * Every random draw belongs to one seed (a counter-based stream keyed by the
 * seed), so image k is the same whatever batch it is drawn in. */
#ifndef EDMC_SAMPLE_H
#define EDMC_SAMPLE_H

#include <stdint.h>

#include "compiler/status.h"
#include "runtime/denoiser.h"

typedef struct {
    int steps;                        /* N >= 2 (2N − 1 evaluations) */
    double sigma_min, sigma_max, rho; /* 0.002, 80, 7 */
    double S_churn, S_min, S_max, S_noise; /* 0, 0, inf, 1: no churn */
    double guidance;                  /* w; 1: the guide is not evaluated */
} edm_sample_params;

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
