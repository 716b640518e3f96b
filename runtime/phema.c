/* Power-function EMA and post-hoc reconstruction (docs/edm2.md §4). */
#include "config.h"

#include "runtime/phema.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* p(γ) = γ³ + 7γ² + (16 − t)γ + (12 − t) = (γ+2)²(γ+3) − t(γ+1), t = σ⁻². */
static double cubic(double gamma, double t) { return (gamma + 2) * (gamma + 2) * (gamma + 3) - t * (gamma + 1); }

int edm_phema_std_to_exp(double std, double *gamma, edm_status *st)
{
    if (!(std > 0) || !(std < EDM_PHEMA_STD_MAX))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "sigma_rel %g is out of range: a power-function EMA needs 0 < sigma_rel < %.4f "
                        "(sqrt(1/12), exponent gamma > 0)",
                        std, EDM_PHEMA_STD_MAX);
    double t = 1 / (std * std);
    /* For γ >= 0, (γ+2)²(γ+3)/(γ+1) rises from 12 (γ = 0) through t, once;
     * p(0) = 12 − t < 0 and p(sqrt t) > 0 bracket the largest root. Bisect
     * to the last bit, then polish with Newton steps that stay in the
     * bracket. */
    double lo = 0, hi = sqrt(t) + 1;
    for (int it = 0; it < 200 && hi - lo > 0; it++) {
        double mid = lo + (hi - lo) / 2;
        if (mid <= lo || mid >= hi)
            break;
        if (cubic(mid, t) < 0)
            lo = mid;
        else
            hi = mid;
    }
    double g = lo + (hi - lo) / 2;
    for (int it = 0; it < 3; it++) {
        double d = 3 * g * g + 14 * g + (16 - t);
        if (!(d > 0))
            break;
        double next = g - cubic(g, t) / d;
        if (!(next >= lo && next <= hi))
            break;
        g = next;
    }
    *gamma = g;
    return 0;
}

double edm_phema_exp_to_std(double gamma)
{
    return sqrt((gamma + 1) / ((gamma + 2) * (gamma + 2) * (gamma + 3)));
}

double edm_phema_beta(double gamma, double t_next, double dt) { return pow(1 - dt / t_next, gamma + 1); }

double edm_phema_dot(double t_a, double gamma_a, double t_b, double gamma_b)
{
    double e = t_a < t_b ? gamma_b : -gamma_a;
    double t_max = t_a > t_b ? t_a : t_b;
    return (gamma_a + 1) * (gamma_b + 1) * pow(t_a / t_b, e) / ((gamma_a + gamma_b + 1) * t_max);
}

int64_t edm_phema_kimg_to_nimg(int64_t kimg) { return ((kimg * 1000 + 999) / 1024) * 1024; }

/* LU factorisation with partial pivoting of the n×n matrix a (in place);
 * piv[k] is the row swapped into k.  Returns -1 on an exactly singular
 * matrix. */
static int lu_factor(int n, double *a, int *piv)
{
    for (int k = 0; k < n; k++) {
        int p = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[p * n + k]))
                p = i;
        piv[k] = p;
        if (!(a[p * n + k] != 0) || !isfinite(a[p * n + k]))
            return -1;
        if (p != k)
            for (int j = 0; j < n; j++) {
                double tmp = a[k * n + j];
                a[k * n + j] = a[p * n + j];
                a[p * n + j] = tmp;
            }
        for (int i = k + 1; i < n; i++) {
            double l = a[i * n + k] / a[k * n + k];
            a[i * n + k] = l;
            for (int j = k + 1; j < n; j++)
                a[i * n + j] -= l * a[k * n + j];
        }
    }
    return 0;
}

/* Solves LU y = b for the m right-hand sides in b (n×m, row-major), in place. */
static void lu_solve(int n, const double *lu, const int *piv, int m, double *b)
{
    for (int k = 0; k < n; k++)
        if (piv[k] != k)
            for (int j = 0; j < m; j++) {
                double tmp = b[k * m + j];
                b[k * m + j] = b[piv[k] * m + j];
                b[piv[k] * m + j] = tmp;
            }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < i; k++)
            for (int j = 0; j < m; j++)
                b[i * m + j] -= lu[i * n + k] * b[k * m + j];
    for (int i = n - 1; i >= 0; i--) {
        for (int k = i + 1; k < n; k++)
            for (int j = 0; j < m; j++)
                b[i * m + j] -= lu[i * n + k] * b[k * m + j];
        for (int j = 0; j < m; j++)
            b[i * m + j] /= lu[i * n + i];
    }
}

/* r = b − a·x in extended precision, rounded to double; returns the largest
 * |r| relative to |a|·|x| + |b| over all elements. */
static double residual(int n, int m, const double *a, const double *x, const double *b, double *r)
{
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            long double s = b[i * m + j], scale = fabsl((long double)b[i * m + j]);
            for (int k = 0; k < n; k++) {
                long double p = (long double)a[i * n + k] * (long double)x[k * m + j];
                s -= p;
                scale += fabsl(p);
            }
            r[i * m + j] = (double)s;
            double rel = scale > 0 ? (double)(fabsl(s) / scale) : 0;
            if (rel > worst)
                worst = rel;
        }
    return worst;
}

/* Solves a·x = b (n×n, n×m): symmetric diagonal scaling (a Gram matrix has
 * a positive diagonal), LU with partial pivoting, then iterative refinement
 * on residuals computed in extended precision. */
static int solve_refined(int n, int m, const double *a, const double *b, double *x, edm_status *st)
{
    size_t nn = (size_t)n * (size_t)n, nm = (size_t)n * (size_t)m;
    double *lu = malloc(sizeof(double) * nn), *d = malloc(sizeof(double) * (size_t)n);
    double *r = malloc(sizeof(double) * nm);
    int *piv = malloc(sizeof(int) * (size_t)n);
    int rc = 0;
    if (!lu || !d || !r || !piv) {
        rc = edm_nomem(st);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (!(a[i * n + i] > 0) || !isfinite(a[i * n + i])) {
            rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "phema: Gram matrix diagonal %d is %g", i, a[i * n + i]);
            goto done;
        }
        d[i] = 1 / sqrt(a[i * n + i]);
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++)
            lu[i * n + k] = d[i] * a[i * n + k] * d[k];
    if (lu_factor(n, lu, piv) != 0) {
        rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                      "phema: the snapshot profiles are linearly dependent (two snapshots with the same time and "
                      "sigma_rel?)");
        goto done;
    }
    /* x = D·(LU)⁻¹·D·b, then refine with x += D·(LU)⁻¹·D·(b − a·x) */
    memset(x, 0, sizeof(double) * nm);
    memcpy(r, b, sizeof(double) * nm);
    double prev = INFINITY, rel = INFINITY;
    for (int it = 0; it < 20; it++) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
                r[i * m + j] *= d[i];
        lu_solve(n, lu, piv, m, r);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
                x[i * m + j] += d[i] * r[i * m + j];
        rel = residual(n, m, a, x, b, r);
        if (rel < 1e-17 || !(rel < prev * 0.5))
            break;
        prev = rel;
    }
    if (!(rel < 1e-10))
        rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC,
                      "phema: the reconstruction system is too ill-conditioned (relative residual %.3g)", rel);
done:
    free(lu);
    free(d);
    free(r);
    free(piv);
    return rc;
}

int edm_phema_solve(int n, const double *in_t, const double *in_std, int m, double out_t, const double *out_std,
                    double *x, edm_status *st)
{
    if (n < 1 || m < 1)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "phema: nothing to solve (%d snapshots, %d outputs)", n, m);
    if (!(out_t > 0))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "phema: the output time %g must be > 0", out_t);
    for (int i = 0; i < n; i++)
        if (!(in_t[i] > 0))
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "phema: snapshot %d has time %g (must be > 0)", i, in_t[i]);
    size_t nn = (size_t)n * (size_t)n, nm = (size_t)n * (size_t)m;
    double *a = malloc(sizeof(double) * nn), *b = malloc(sizeof(double) * nm);
    double *gin = malloc(sizeof(double) * (size_t)n), *gout = malloc(sizeof(double) * (size_t)m);
    int rc = 0;
    if (!a || !b || !gin || !gout) {
        rc = edm_nomem(st);
        goto done;
    }
    for (int i = 0; i < n && rc == 0; i++)
        rc = edm_phema_std_to_exp(in_std[i], &gin[i], st);
    for (int j = 0; j < m && rc == 0; j++)
        rc = edm_phema_std_to_exp(out_std[j], &gout[j], st);
    if (rc != 0)
        goto done;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < n; k++)
            a[i * n + k] = edm_phema_dot(in_t[i], gin[i], in_t[k], gin[k]);
        for (int j = 0; j < m; j++)
            b[i * m + j] = edm_phema_dot(in_t[i], gin[i], out_t, gout[j]);
    }
    rc = solve_refined(n, m, a, b, x, st);
    for (int j = 0; j < m && rc == 0; j++) {
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += x[i * m + j];
        if (!(fabs(sum) > 0) || !isfinite(sum)) {
            rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "phema: coefficients for sigma_rel %g sum to %g",
                          out_std[j], sum);
            break;
        }
        for (int i = 0; i < n; i++)
            x[i * m + j] /= sum;
    }
done:
    free(a);
    free(b);
    free(gin);
    free(gout);
    return rc;
}

void edm_phema_ema_lerp(float *y, const float *net, int64_t n, double beta)
{
    /* ema.lerp_(net, 1 − β) the way torch computes it in float32 */
    float w = (float)(1 - beta);
    if (fabsf(w) < 0.5f) {
        for (int64_t i = 0; i < n; i++)
            y[i] = y[i] + w * (net[i] - y[i]);
    } else {
        float v = 1 - w;
        for (int64_t i = 0; i < n; i++)
            y[i] = net[i] - (net[i] - y[i]) * v;
    }
}
