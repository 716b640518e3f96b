/* The EDM samplers (Heun with churn, Euler, DPM-Solver++(2M)) and guidance. */
#include "config.h"

#include "runtime/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rng.h"

static const char *const sampler_names[] = {"heun", "euler", "dpmpp-2m"};

int edm_sampler_from_name(const char *name)
{
    for (int i = 0; i < (int)(sizeof sampler_names / sizeof sampler_names[0]); i++)
        if (strcmp(name, sampler_names[i]) == 0)
            return i;
    return -1;
}

const char *edm_sampler_name(edm_sampler s) { return sampler_names[s]; }

int edm_sample_nfe(const edm_sample_params *p) { return p->sampler == EDM_SAMPLER_HEUN ? 2 * p->steps - 1 : p->steps; }

void edm_sample_params_default(edm_sample_params *p)
{
    p->sampler = EDM_SAMPLER_HEUN;
    p->guidance_lo = 0;
    p->guidance_hi = INFINITY;
    p->steps = 32;
    p->sigma_min = 0.002;
    p->sigma_max = 80;
    p->rho = 7;
    p->S_churn = 0;
    p->S_min = 0;
    p->S_max = INFINITY;
    p->S_noise = 1;
    p->guidance = 1;
}

int edm_sample_params_check(const edm_sample_params *p, edm_status *st)
{
    if (p->steps < 2)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "steps = %d: the sampler needs at least 2 steps", p->steps);
    if (!(p->sigma_min > 0) || !isfinite(p->sigma_min))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "sigma_min = %g: must be > 0", p->sigma_min);
    if (!(p->sigma_max > p->sigma_min) || !isfinite(p->sigma_max))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "sigma_max = %g: must be finite and above sigma_min = %g",
                        p->sigma_max, p->sigma_min);
    if (!(p->rho > 0) || !isfinite(p->rho))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "rho = %g: must be > 0", p->rho);
    if (!(p->S_churn >= 0) || !isfinite(p->S_churn))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "S_churn = %g: must be >= 0", p->S_churn);
    if (!(p->S_noise >= 0) || !isfinite(p->S_noise))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "S_noise = %g: must be >= 0", p->S_noise);
    if (isnan(p->S_min) || isnan(p->S_max) || p->S_min > p->S_max)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "S_min = %g, S_max = %g: need S_min <= S_max", p->S_min,
                        p->S_max);
    if (!isfinite(p->guidance))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "guidance = %g: must be finite", p->guidance);
    if (isnan(p->guidance_lo) || isnan(p->guidance_hi) || p->guidance_lo < 0 || p->guidance_lo > p->guidance_hi)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "guidance interval [%g, %g]: need 0 <= lo <= hi",
                        p->guidance_lo, p->guidance_hi);
    if (p->sampler == EDM_SAMPLER_DPMPP_2M && p->S_churn > 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "S_churn = %g: dpmpp-2m is deterministic; churn goes with heun "
                        "or euler", p->S_churn);
    if ((unsigned)p->sampler > EDM_SAMPLER_DPMPP_2M)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "unknown sampler %d", (int)p->sampler);
    return 0;
}

void edm_sample_schedule(const edm_sample_params *p, double *t)
{
    double a = pow(p->sigma_max, 1 / p->rho), b = pow(p->sigma_min, 1 / p->rho);
    for (int i = 0; i < p->steps; i++)
        t[i] = pow(a + (double)i / (p->steps - 1) * (b - a), p->rho);
    t[p->steps] = 0;
}

double edm_sample_gamma(const edm_sample_params *p, double t)
{
    if (!(p->S_churn > 0) || t < p->S_min || t > p->S_max)
        return 0;
    double g = p->S_churn / p->steps, cap = sqrt(2.0) - 1;
    return g < cap ? g : cap;
}

void edm_sample_noise(uint64_t seed, float *out, int64_t numel)
{
    edm_rng r = edm_rng_make(seed, "edmc.sample.noise");
    edm_rng_normal(&r, 0, out, numel);
}

int edm_sample_class(uint64_t seed, int label_dim)
{
    if (label_dim < 1)
        return 0;
    float u;
    edm_rng r = edm_rng_make(seed, "edmc.sample.class");
    edm_rng_uniform(&r, 0, &u, 1);
    int c = (int)(u * (float)label_dim);
    return c < label_dim ? c : label_dim - 1;
}

int edm_sample_check_guide(const edm_denoiser *net, const edm_denoiser *guide, edm_status *st)
{
    edm_denoiser_shape a = edm_denoiser_get_shape(net), b = edm_denoiser_get_shape(guide);
    if (a.channels != b.channels || a.height != b.height || a.width != b.width)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "the guide makes %dx%dx%d images (channels x height x width), the net %dx%dx%d", b.channels,
                        b.height, b.width, a.channels, a.height, a.width);
    if (b.label_dim != 0 && b.label_dim != a.label_dim)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "the guide takes %d class labels, the net %d (a guide must match or be unconditional)",
                        b.label_dim, a.label_dim);
    return 0;
}

/* ------------------------------------------------------------ the loop */

typedef struct {
    const edm_sample_params *p;
    edm_denoiser *net, *guide;
    const uint64_t *seeds;
    const float *labels, *guide_labels;
    int64_t n, numel; /* images, elements per image */
    float *sigma;     /* n */
    float *xh, *xn, *d, *dg, *dcur; /* n · numel each */
    float *dprev;                    /* dpmpp-2m: the previous step's D (n · numel) */
    double hprev;                    /* dpmpp-2m: the previous step's h; 0 before the first */
} sampler;

/* The guided denoiser at noise level t (every image alike) into s->d. */
static int denoise(sampler *s, const float *x, double t, edm_status *st)
{
    for (int64_t i = 0; i < s->n; i++)
        s->sigma[i] = (float)t;
    if (edm_denoiser_eval(s->net, x, s->sigma, s->labels, s->n, s->d, NULL, st) != 0)
        return -1;
    if (s->p->guidance == 1 || t < s->p->guidance_lo || t > s->p->guidance_hi)
        return 0; /* outside the interval the net alone: the guide is not evaluated */
    if (edm_denoiser_eval(s->guide, x, s->sigma, s->guide_labels, s->n, s->dg, NULL, st) != 0) {
        edm_status_prefix(st, "guide");
        return -1;
    }
    /* D_g.lerp(D, w), computed the way the reference's lerp does */
    float w = (float)s->p->guidance;
    int64_t total = s->n * s->numel;
    for (int64_t k = 0; k < total; k++) {
        float a = s->dg[k], b = s->d[k];
        s->d[k] = w < 0.5f ? a + w * (b - a) : b - (b - a) * (1 - w);
    }
    return 0;
}

/* x̂ = x + sqrt(t̂² − t²)·S_noise·ε, ε from each image's churn stream at step i. */
static void churn(sampler *s, const float *x, int step, double t, double t_hat)
{
    float scale = (float)(sqrt(t_hat * t_hat - t * t) * s->p->S_noise);
    for (int64_t i = 0; i < s->n; i++) {
        edm_rng r = edm_rng_make(s->seeds[i], "edmc.sample.churn");
        float *dst = s->xh + i * s->numel;
        edm_rng_normal(&r, (uint64_t)step * (uint64_t)s->numel, dst, s->numel);
        for (int64_t k = 0; k < s->numel; k++)
            dst[k] = x[i * s->numel + k] + scale * dst[k];
    }
}

/* One step from t (x in place) to t_next. */
static int heun_step(sampler *s, float *x, int step, double t, double t_next, edm_status *st)
{
    int64_t total = s->n * s->numel;
    double gamma = edm_sample_gamma(s->p, t);
    float th = (float)(t + gamma * t), tn = (float)t_next;
    if (gamma > 0)
        churn(s, x, step, t, th);
    else
        memcpy(s->xh, x, sizeof(float) * (size_t)total);
    if (denoise(s, s->xh, th, st) != 0)
        return -1;
    for (int64_t k = 0; k < total; k++) {
        s->dcur[k] = (s->xh[k] - s->d[k]) / th;
        s->xn[k] = s->xh[k] + (tn - th) * s->dcur[k];
    }
    if (step < s->p->steps - 1 && s->p->sampler == EDM_SAMPLER_HEUN) {
        if (denoise(s, s->xn, tn, st) != 0)
            return -1;
        for (int64_t k = 0; k < total; k++) {
            float dprime = (s->xn[k] - s->d[k]) / tn;
            s->xn[k] = s->xh[k] + (tn - th) * (0.5f * s->dcur[k] + 0.5f * dprime);
        }
    }
    memcpy(x, s->xn, sizeof(float) * (size_t)total);
    return 0;
}

/* DPM-Solver++(2M) from t to t_next in the EDM parametrisation (x = y + σn):
 * with λ = −log σ and h = λ_next − λ, x_next = (t_next/t)·x + (1 − e^{−h})·D̂,
 * D̂ = D on the first step, else (1 + 1/2r)·D − 1/2r·D_prev with r = h_prev/h;
 * the last step (t_next = 0) lands on D̂ (first order there, as is usual). */
static int dpmpp_step(sampler *s, float *x, double t, double t_next, edm_status *st)
{
    int64_t total = s->n * s->numel;
    if (denoise(s, x, t, st) != 0)
        return -1;
    double h = t_next > 0 ? log(t / t_next) : INFINITY;
    float a = (float)(t_next / t), b = (float)(1 - t_next / t);
    int second = s->hprev > 0 && t_next > 0;
    float c0 = second ? (float)(h / (2 * s->hprev)) : 0.0f, c1 = 1 + c0; /* 1/2r = h / 2h_prev */
    for (int64_t k = 0; k < total; k++) {
        float dhat = second ? c1 * s->d[k] - c0 * s->dprev[k] : s->d[k]; /* dprev is unset before the 2nd step */
        x[k] = a * x[k] + b * dhat;
    }
    memcpy(s->dprev, s->d, sizeof(float) * (size_t)total);
    s->hprev = h;
    return 0;
}

static int check_run(const edm_sample_params *p, edm_denoiser *net, edm_denoiser *guide, const float *labels,
                     int64_t n, edm_status *st)
{
    if (edm_sample_params_check(p, st) != 0)
        return -1;
    if (p->guidance != 1 && !guide)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "guidance %g needs a guide network", p->guidance);
    if (guide && edm_sample_check_guide(net, guide, st) != 0)
        return -1;
    if (!labels != !edm_denoiser_get_shape(net).label_dim)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "sampler: class labels %s for a model with label_dim %d",
                        labels ? "given" : "missing", edm_denoiser_get_shape(net).label_dim);
    if (n < 1 || n > edm_denoiser_batch(net) || (guide && n > edm_denoiser_batch(guide)))
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "sampler: %lld images do not fit the batch",
                        (long long)n);
    return 0;
}

static void free_buffers(sampler *s)
{
    free(s->sigma);
    free(s->xh);
    free(s->xn);
    free(s->d);
    free(s->dg);
    free(s->dcur);
    free(s->dprev);
}

int edm_sample_run(const edm_sample_params *p, edm_denoiser *net, edm_denoiser *guide, const uint64_t *seeds,
                   const float *labels, int64_t n, float *x, edm_status *st)
{
    if (check_run(p, net, guide, labels, n, st) != 0)
        return -1;
    sampler s = {.p = p, .net = net, .guide = guide, .seeds = seeds, .labels = labels, .n = n};
    s.numel = edm_denoiser_sample_numel(net);
    s.guide_labels = guide && edm_denoiser_get_shape(guide).label_dim ? labels : NULL;
    size_t bytes = sizeof(float) * (size_t)(n * s.numel);
    s.sigma = malloc(sizeof(float) * (size_t)n);
    s.xh = malloc(bytes);
    s.xn = malloc(bytes);
    s.d = malloc(bytes);
    s.dg = malloc(bytes);
    s.dcur = malloc(bytes);
    s.dprev = malloc(bytes);
    double *t = malloc(sizeof(double) * (size_t)(p->steps + 1));
    int rc = s.sigma && s.xh && s.xn && s.d && s.dg && s.dcur && s.dprev && t ? 0 : edm_nomem(st);
    if (rc == 0) {
        edm_sample_schedule(p, t);
        float t0 = (float)t[0];
        for (int64_t k = 0; k < n * s.numel; k++)
            x[k] *= t0;
    }
    for (int i = 0; rc == 0 && i < p->steps; i++)
        rc = p->sampler == EDM_SAMPLER_DPMPP_2M ? dpmpp_step(&s, x, t[i], t[i + 1], st)
                                                 : heun_step(&s, x, i, t[i], t[i + 1], st);
    free(t);
    free_buffers(&s);
    return rc;
}
