/* Power-function EMA (docs/edm2.md §4): the σ_rel ↔ γ conversions, the
 * per-step decay β, inner products of power-function profiles, the post-hoc
 * reconstruction coefficients, and the EMA tracker the trainer keeps.
 *
 * Times are in images (t > 0).  Every computation on profiles is in float64;
 * the tracker holds float32 arrays like the reference. */
#ifndef EDMC_PHEMA_H
#define EDMC_PHEMA_H

#include <stdint.h>

#include "compiler/status.h"

/* The largest σ_rel with a real γ > 0: sqrt(1/12) (γ = 0). */
#define EDM_PHEMA_STD_MAX 0.28867513459481287

/* σ_rel → γ: the largest real root of γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²).
 * Fails (EDM_ERR_USAGE, naming σ_rel) unless 0 < std < EDM_PHEMA_STD_MAX. */
int edm_phema_std_to_exp(double std, double *gamma, edm_status *st);
/* γ → σ_rel = sqrt((γ+1) / ((γ+2)²(γ+3))), γ > -1. */
double edm_phema_exp_to_std(double gamma);
/* The decay of one step that ends at t_next images and covers dt images:
 * (1 − dt/t_next)^(γ+1). */
double edm_phema_beta(double gamma, double t_next, double dt);
/* ⟨a, b⟩ of the normalised power-function profiles ending at t_a, t_b with
 * exponents γ_a, γ_b. */
double edm_phema_dot(double t_a, double gamma_a, double t_b, double gamma_b);

/* The reconstruction coefficients: snapshots i = 0..n-1 ending at in_t[i]
 * with σ_rel in_std[i], wanted profiles j = 0..m-1 ending at out_t with
 * σ_rel out_std[j].  Writes x[i*m + j] (n×m, row-major), each column summing
 * to 1.  Fails on a bad σ_rel, two identical snapshots (a singular Gram
 * matrix) or a solve whose residual is not small. */
int edm_phema_solve(int n, const double *in_t, const double *in_std, int m, double out_t, const double *out_std,
                    double *x, edm_status *st);

/* nimg of a snapshot named by kimg, the way the reference recovers it:
 * ((kimg·1000 + 999) // 1024)·1024. */
int64_t edm_phema_kimg_to_nimg(int64_t kimg);

/* One EMA's step with β (edm_phema_beta): y ← β·y + (1−β)·net over n floats,
 * in float32 as torch's lerp_ (the trainer's EMAs on the host, train_host.c). */
void edm_phema_ema_lerp(float *y, const float *net, int64_t n, double beta);

#endif
