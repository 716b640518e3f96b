/* Power-function EMA against the reference: every figure of
 * ../shared/testdata/edm2-tiny/phema.json (σ_rel ↔ γ, β, the reconstruction
 * coefficients) to 1e-9 relative, and the properties of a reconstruction. */
#include "config.h"

#include <json-c/json.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/phema.h"

#define TOL 1e-9

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static int setup(void **state)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/edm2-tiny/phema.json", env_or("EDMC_TESTDATA", "../shared/testdata"));
    json_object *j = json_object_from_file(path);
    if (!j) {
        fprintf(stderr, "cannot read %s\n", path);
        return -1;
    }
    *state = j;
    return 0;
}

static int teardown(void **state)
{
    json_object_put(*state);
    return 0;
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        fail_msg("phema.json: no key '%s'", key);
    return v;
}

static double rel_err(double got, double want)
{
    double d = fabs(got - want);
    return want != 0 ? d / fabs(want) : d;
}

static void test_std_to_exp(void **state)
{
    edm_status st;
    edm_status_init(&st);
    double worst = 0;
    json_object_object_foreach(get(*state, "std_to_exp"), key, val)
    {
        double std = strtod(key, NULL), want = json_object_get_double(val), gamma = 0;
        assert_int_equal(edm_phema_std_to_exp(std, &gamma, &st), 0);
        double e = rel_err(gamma, want);
        if (e > TOL)
            fail_msg("std_to_exp(%s) = %.17g, want %.17g (rel %.3g)", key, gamma, want, e);
        worst = fmax(worst, e);
        /* and back */
        assert_true(rel_err(edm_phema_exp_to_std(gamma), std) < 1e-13);
    }
    print_message("# std_to_exp: worst relative error %.3g\n", worst);
}

static void test_exp_to_std(void **state)
{
    double worst = 0;
    json_object_object_foreach(get(*state, "exp_to_std"), key, val)
    {
        double gamma = strtod(key, NULL), want = json_object_get_double(val);
        double e = rel_err(edm_phema_exp_to_std(gamma), want);
        if (e > TOL)
            fail_msg("exp_to_std(%s) = %.17g, want %.17g", key, edm_phema_exp_to_std(gamma), want);
        worst = fmax(worst, e);
    }
    print_message("# exp_to_std: worst relative error %.3g\n", worst);
}

static void test_beta(void **state)
{
    edm_status st;
    edm_status_init(&st);
    json_object *arr = get(*state, "beta");
    double worst = 0;
    assert_true(json_object_array_length(arr) > 0);
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *b = json_object_array_get_idx(arr, i);
        double std = json_object_get_double(get(b, "std")), t_next = json_object_get_double(get(b, "t_next"));
        double dt = json_object_get_double(get(b, "t_delta")), want = json_object_get_double(get(b, "beta"));
        double gamma;
        assert_int_equal(edm_phema_std_to_exp(std, &gamma, &st), 0);
        double got = edm_phema_beta(gamma, t_next, dt), e = rel_err(got, want);
        if (e > TOL)
            fail_msg("beta(std %g, t_next %g, dt %g) = %.17g, want %.17g", std, t_next, dt, got, want);
        worst = fmax(worst, e);
    }
    print_message("# beta: worst relative error %.3g\n", worst);
}

typedef struct {
    int n, m;
    double in_t[64], in_std[64], out_t, out_std[16];
} problem;

static void read_problem(json_object *s, problem *p)
{
    json_object *in_nimg = get(s, "in_nimg"), *in_std = get(s, "in_std"), *out_std = get(s, "out_std");
    p->n = (int)json_object_array_length(in_nimg);
    p->m = (int)json_object_array_length(out_std);
    assert_true(p->n > 0 && p->n <= 64 && p->m > 0 && p->m <= 16);
    assert_int_equal((int)json_object_array_length(in_std), p->n);
    for (int i = 0; i < p->n; i++) {
        p->in_t[i] = json_object_get_double(json_object_array_get_idx(in_nimg, (size_t)i));
        p->in_std[i] = json_object_get_double(json_object_array_get_idx(in_std, (size_t)i));
    }
    for (int j = 0; j < p->m; j++)
        p->out_std[j] = json_object_get_double(json_object_array_get_idx(out_std, (size_t)j));
    p->out_t = json_object_get_double(get(s, "out_nimg"));
}

static void test_solve(void **state)
{
    edm_status st;
    edm_status_init(&st);
    json_object *s = get(*state, "solve"), *coefs = get(s, "coefs");
    problem p;
    read_problem(s, &p);
    assert_int_equal((int)json_object_array_length(coefs), p.n);
    double x[64 * 16];
    if (edm_phema_solve(p.n, p.in_t, p.in_std, p.m, p.out_t, p.out_std, x, &st) != 0)
        fail_msg("%s", st.msg);
    double worst = 0, worst_col = 0;
    int ntiny = 0;
    for (int j = 0; j < p.m; j++) {
        double colmax = 0;
        for (int i = 0; i < p.n; i++)
            colmax = fmax(colmax, fabs(json_object_get_double(
                                      json_object_array_get_idx(json_object_array_get_idx(coefs, (size_t)i), (size_t)j))));
        for (int i = 0; i < p.n; i++) {
            json_object *row = json_object_array_get_idx(coefs, (size_t)i);
            assert_int_equal((int)json_object_array_length(row), p.m);
            double want = json_object_get_double(json_object_array_get_idx(row, (size_t)j));
            double e = rel_err(x[i * p.m + j], want), ec = fabs(x[i * p.m + j] - want) / colmax;
            /* Coefficients below 1e-9 of their column's largest are below
             * the float64 solve's own noise (cond(A)·eps·max|x|): an 80-digit
             * decimal solve of the same system differs from the golden's
             * -1.4e-23 by 13x.  Those are held to the column's scale. */
            int tiny = fabs(want) < 1e-9 * colmax;
            if (tiny ? ec > 1e-12 : e > TOL)
                fail_msg("coefs[%d][%d] = %.17g, want %.17g (relative error %.3g, %.3g of the column)", i, j,
                         x[i * p.m + j], want, e, ec);
            if (tiny)
                ntiny++;
            else
                worst = fmax(worst, e);
            worst_col = fmax(worst_col, ec);
        }
    }
    print_message("# solve: worst relative error %.3g over %d coefficients; %d below 1e-9 of their column; "
                  "worst error %.3g of the column's largest\n",
                  worst, p.n * p.m - ntiny, ntiny, worst_col);
}

/* Every column sums to 1, and wanting a snapshot's own profile gives the
 * unit vector that picks it. */
static void test_properties(void **state)
{
    edm_status st;
    edm_status_init(&st);
    problem p;
    read_problem(get(*state, "solve"), &p);
    double x[64 * 16];
    assert_int_equal(edm_phema_solve(p.n, p.in_t, p.in_std, p.m, p.out_t, p.out_std, x, &st), 0);
    for (int j = 0; j < p.m; j++) {
        double sum = 0;
        for (int i = 0; i < p.n; i++)
            sum += x[i * p.m + j];
        assert_true(fabs(sum - 1) < 1e-12);
    }
    /* the last pair of snapshots end at out_t: reconstruct each of them */
    for (int k = 0; k < p.n; k++) {
        double y[64];
        if (edm_phema_solve(p.n, p.in_t, p.in_std, 1, p.in_t[k], &p.in_std[k], y, &st) != 0)
            fail_msg("%s", st.msg);
        for (int i = 0; i < p.n; i++)
            if (fabs(y[i] - (i == k)) > 1e-9)
                fail_msg("reconstructing snapshot %d: coefficient %d is %.17g", k, i, y[i]);
    }
    /* one snapshot alone reproduces itself */
    double one;
    assert_int_equal(edm_phema_solve(1, p.in_t, p.in_std, 1, p.in_t[0], p.in_std, &one, &st), 0);
    assert_true(fabs(one - 1) < 1e-15);
}

static void test_conversions(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    double g;
    for (double std = 0.001; std < 0.288; std += 0.001) {
        assert_int_equal(edm_phema_std_to_exp(std, &g, &st), 0);
        assert_true(g > 0);
        assert_true(rel_err(edm_phema_exp_to_std(g), std) < 1e-12);
        /* the largest real root: the cubic rises past it */
        double t = 1 / (std * std);
        double p = g * g * g + 7 * g * g + (16 - t) * g + (12 - t);
        assert_true(fabs(p) <= 1e-9 * (g * g * g + 7 * g * g + (16 + t) * g + 12 + t));
    }
    assert_int_equal(edm_phema_std_to_exp(0.28, &g, &st), 0);
    assert_int_equal(edm_phema_std_to_exp(0.29, &g, &st), -1);
    assert_non_null(strstr(st.msg, "out of range"));
    assert_int_equal(edm_phema_std_to_exp(0, &g, &st), -1);
    assert_int_equal(edm_phema_std_to_exp(-0.1, &g, &st), -1);
    assert_int_equal(edm_phema_std_to_exp(NAN, &g, &st), -1);
    assert_int_equal(edm_phema_kimg_to_nimg(65), 65536);
    assert_int_equal(edm_phema_kimg_to_nimg(8388), 8388608);
    assert_int_equal(edm_phema_kimg_to_nimg(0), 0);
    /* a profile's norm: ⟨a,a⟩ = (γ+1)²/((2γ+1)t) */
    assert_true(rel_err(edm_phema_dot(100, 3, 100, 3), 16.0 / 700) < 1e-15);
    /* symmetric */
    assert_true(rel_err(edm_phema_dot(100, 3, 250, 7), edm_phema_dot(250, 7, 100, 3)) < 1e-14);
}

static void test_solve_errors(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    double t[2] = {1000, 1000}, s[2] = {0.1, 0.1}, out = 0.05, x[2];
    assert_int_equal(edm_phema_solve(2, t, s, 1, 1000, &out, x, &st), -1);
    assert_non_null(strstr(st.msg, "linearly dependent"));
    double bad = 0.3;
    assert_int_equal(edm_phema_solve(1, t, s, 1, 1000, &bad, x, &st), -1);
    assert_non_null(strstr(st.msg, "out of range"));
}

static void test_ema(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    double stds[2] = {0.05, 0.10}, gamma[2];
    float ema[2][3] = {{1, 2, 3}, {1, 2, 3}}, net[3] = {0, 0, 0};
    for (int k = 0; k < 2; k++)
        assert_int_equal(edm_phema_std_to_exp(stds[k], &gamma[k], &st), 0);
    /* the first step (t_next == dt) replaces the average */
    for (int k = 0; k < 2; k++)
        edm_phema_ema_lerp(ema[k], net, 3, edm_phema_beta(gamma[k], 100, 100));
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 3; i++)
            assert_true(ema[k][i] == 0);
    float ones[3] = {1, 1, 1};
    for (int k = 0; k < 2; k++) {
        double b = edm_phema_beta(gamma[k], 200, 100);
        edm_phema_ema_lerp(ema[k], ones, 3, b);
        for (int i = 0; i < 3; i++)
            assert_true(fabs(ema[k][i] - (1 - b)) < 1e-6);
    }
    double bad = 0.5, g;
    assert_int_equal(edm_phema_std_to_exp(bad, &g, &st), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_std_to_exp),  cmocka_unit_test(test_exp_to_std), cmocka_unit_test(test_beta),
        cmocka_unit_test(test_solve),       cmocka_unit_test(test_properties), cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_solve_errors), cmocka_unit_test(test_ema),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, setup, teardown);
}
