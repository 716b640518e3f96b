/* The sampler against the reference: edm2-tiny's EDM Heun samples (8 steps,
 * with and without guidance) from ../shared/testdata/edm2-tiny/sample.safetensors
 * within 1e-3 relative; the step schedule and churn factor; determinism; that
 * an image depends on its seed and not on its batch; PNG output. */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "compiler/elaborate.h"
#include "runtime/denoiser.h"
#include "runtime/image.h"
#include "runtime/safetensors.h"
#include "runtime/sample.h"

#define NIMG ((int64_t)3)
#define NUMEL ((int64_t)4 * 16 * 16)

typedef struct {
    edm_program prog;
    edm_st_file *weights, *guide_weights, *golden;
    edm_denoiser *net, *guide; /* batch NIMG */
    float noise[NIMG * NUMEL], labels[NIMG * 10];
} fixture;

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static edm_st_file *open_golden(const char *file, edm_status *st)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/edm2-tiny/%s", env_or("EDMC_TESTDATA", "../shared/testdata"), file);
    return edm_st_open(path, st);
}

static int compile_tiny(edm_program *prog)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/models/edm2-tiny.edm", env_or("srcdir", "."));
    edm_sources *src = edm_sources_new();
    edm_diags *d = malloc(sizeof *d);
    int rc = src && d ? edm_compile_file(src, path, NULL, 0, prog, d) : -1;
    if (rc != 0 && d && d->count)
        edm_diag_print(src, &d->items[0], stderr);
    edm_sources_free(src);
    free(d);
    return rc;
}

static int read_golden(const fixture *f, const char *name, float *out, int64_t n)
{
    edm_status st;
    edm_status_init(&st);
    const edm_st_entry *e = edm_st_find(f->golden, name);
    return e && e->numel == n ? edm_st_read_f32(f->golden, e, out, n, &st) : -1;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || compile_tiny(&f->prog) != 0)
        return -1;
    edm_status st;
    edm_status_init(&st);
    f->weights = open_golden("weights.safetensors", &st);
    f->guide_weights = open_golden("guide_weights.safetensors", &st);
    f->golden = open_golden("sample.safetensors", &st);
    if (!f->weights || !f->guide_weights || !f->golden) {
        fprintf(stderr, "%s\n", st.msg);
        return -1;
    }
    f->net = edm_denoiser_new(f->prog.graph, f->weights, NIMG, NULL, &st);
    f->guide = f->net ? edm_denoiser_new(f->prog.graph, f->guide_weights, NIMG, NULL, &st) : NULL;
    if (!f->guide || read_golden(f, "noise", f->noise, NIMG * NUMEL) != 0 ||
        read_golden(f, "class_labels", f->labels, NIMG * 10) != 0) {
        fprintf(stderr, "%s\n", st.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    edm_denoiser_free(f->net);
    edm_denoiser_free(f->guide);
    edm_program_free(&f->prog);
    edm_st_close(f->weights);
    edm_st_close(f->guide_weights);
    edm_st_close(f->golden);
    free(f);
    return 0;
}

/* ‖a − b‖ / ‖b‖ */
static double rel_err(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static edm_sample_params golden_params(void)
{
    edm_sample_params p;
    edm_sample_params_default(&p);
    p.steps = 8;
    return p;
}

static void check_golden(fixture *f, const char *name, double guidance)
{
    edm_sample_params p = golden_params();
    p.guidance = guidance;
    edm_status st;
    edm_status_init(&st);
    static const uint64_t seeds[NIMG] = {0, 1, 2};
    float *x = malloc(sizeof(float) * NIMG * NUMEL), *want = malloc(sizeof(float) * NIMG * NUMEL);
    assert_non_null(x);
    assert_non_null(want);
    memcpy(x, f->noise, sizeof(float) * NIMG * NUMEL);
    if (edm_sample_run(&p, f->net, guidance != 1 ? f->guide : NULL, seeds, f->labels, NIMG, x, &st) != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(st.code, EDM_OK);
    assert_int_equal(read_golden(f, name, want, NIMG * NUMEL), 0);
    double e = rel_err(x, want, NIMG * NUMEL);
    print_message("# %s: relative error %.3g\n", name, e);
    assert_true(e < 1e-3);
    free(x);
    free(want);
}

static void test_golden_sample(void **state) { check_golden(*state, "sample", 1); }
static void test_golden_sample_guided(void **state) { check_golden(*state, "sample_guided", 2); }

static void test_schedule(void **state)
{
    (void)state;
    edm_sample_params p = golden_params();
    double t[9];
    edm_sample_schedule(&p, t);
    assert_float_equal(t[0], 80, 1e-9);
    assert_float_equal(t[7], 0.002, 1e-12);
    assert_true(t[8] == 0);
    for (int i = 0; i < 8; i++)
        assert_true(t[i + 1] < t[i]);
    double a = pow(80, 1 / 7.0), b = pow(0.002, 1 / 7.0);
    assert_float_equal(t[3], pow(a + 3 / 7.0 * (b - a), 7), 1e-9);
    p.steps = 2;
    edm_sample_schedule(&p, t);
    assert_float_equal(t[0], 80, 1e-9);
    assert_float_equal(t[1], 0.002, 1e-12);
    assert_true(t[2] == 0);
}

static void test_gamma(void **state)
{
    (void)state;
    edm_sample_params p;
    edm_sample_params_default(&p);
    assert_true(edm_sample_gamma(&p, 10) == 0); /* S_churn = 0 */
    p.S_churn = 4;
    assert_float_equal(edm_sample_gamma(&p, 10), 4.0 / 32, 1e-15);
    p.S_churn = 40; /* capped at √2 − 1 */
    assert_float_equal(edm_sample_gamma(&p, 10), sqrt(2.0) - 1, 1e-15);
    p.S_min = 0.05;
    p.S_max = 50;
    assert_true(edm_sample_gamma(&p, 0.01) == 0);
    assert_true(edm_sample_gamma(&p, 60) == 0);
    assert_true(edm_sample_gamma(&p, 50) > 0);
}

static void test_params_check(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    edm_sample_params p;
    edm_sample_params_default(&p);
    assert_int_equal(edm_sample_params_check(&p, &st), 0);
    p.steps = 1;
    assert_int_equal(edm_sample_params_check(&p, &st), -1);
    assert_int_equal(st.code, EDM_ERR_USAGE);
    assert_non_null(strstr(st.msg, "at least 2 steps"));
    edm_sample_params_default(&p);
    p.sigma_max = 0.001;
    assert_int_equal(edm_sample_params_check(&p, &st), -1);
    edm_sample_params_default(&p);
    p.S_churn = -1;
    assert_int_equal(edm_sample_params_check(&p, &st), -1);
    edm_sample_params_default(&p);
    p.guidance = NAN;
    assert_int_equal(edm_sample_params_check(&p, &st), -1);
}

/* Samples with the given seeds (their own noise and churn) at batch n. */
static float *sample_with(edm_denoiser *net, edm_denoiser *guide, const edm_sample_params *p, const uint64_t *seeds,
                          int n)
{
    edm_status st;
    edm_status_init(&st);
    float *x = malloc(sizeof(float) * (size_t)(n * NUMEL)), *labels = calloc((size_t)n * 10, sizeof(float));
    assert_non_null(x);
    assert_non_null(labels);
    for (int i = 0; i < n; i++) {
        edm_sample_noise(seeds[i], x + i * NUMEL, NUMEL);
        labels[i * 10 + edm_sample_class(seeds[i], 10)] = 1;
    }
    if (edm_sample_run(p, net, guide, seeds, labels, n, x, &st) != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(st.code, EDM_OK);
    free(labels);
    return x;
}

static float *sample_seeds(fixture *f, edm_denoiser *net, const edm_sample_params *p, const uint64_t *seeds, int n)
{
    (void)f;
    return sample_with(net, NULL, p, seeds, n);
}

/* NIMG images guided by the golden guide. */
static float *sample_seeds2(fixture *f, const edm_sample_params *p, const uint64_t *seeds)
{
    return sample_with(f->net, f->guide, p, seeds, NIMG);
}

static void test_churn_off_is_deterministic(void **state)
{
    fixture *f = *state;
    edm_sample_params p = golden_params();
    p.steps = 4;
    static const uint64_t seeds[NIMG] = {7, 8, 9};
    float *a = sample_seeds(f, f->net, &p, seeds, NIMG), *b = sample_seeds(f, f->net, &p, seeds, NIMG);
    assert_memory_equal(a, b, sizeof(float) * NIMG * NUMEL);
    /* churn switched on but outside its range changes nothing */
    p.S_churn = 10;
    p.S_min = 1000;
    float *c = sample_seeds(f, f->net, &p, seeds, NIMG);
    assert_memory_equal(a, c, sizeof(float) * NIMG * NUMEL);
    /* inside its range it does, reproducibly */
    p.S_min = 0;
    float *d = sample_seeds(f, f->net, &p, seeds, NIMG), *e = sample_seeds(f, f->net, &p, seeds, NIMG);
    assert_memory_equal(d, e, sizeof(float) * NIMG * NUMEL);
    assert_true(rel_err(d, a, NIMG * NUMEL) > 1e-3);
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

static void test_seed_not_batch(void **state)
{
    fixture *f = *state;
    /* the noise of a seed is the same whatever is drawn around it */
    float one[NUMEL], part[NUMEL];
    edm_sample_noise(5, one, NUMEL);
    edm_sample_noise(6, part, NUMEL);
    assert_true(rel_err(one, part, NUMEL) > 0.1);
    edm_sample_noise(5, part, NUMEL);
    assert_memory_equal(one, part, sizeof one);

    /* image of seed 8: in a batch of three (two orders) and alone, with churn */
    edm_status st;
    edm_status_init(&st);
    edm_denoiser *single = edm_denoiser_new(f->prog.graph, f->weights, 1, NULL, &st);
    assert_non_null(single);
    edm_sample_params p = golden_params();
    p.steps = 4;
    p.S_churn = 5;
    static const uint64_t abc[NIMG] = {7, 8, 9}, cab[NIMG] = {9, 7, 8}, b[1] = {8};
    float *x1 = sample_seeds(f, f->net, &p, abc, NIMG), *x2 = sample_seeds(f, f->net, &p, cab, NIMG);
    float *x3 = sample_seeds(f, single, &p, b, 1);
    double e12 = rel_err(x1 + NUMEL, x2 + 2 * NUMEL, NUMEL), e13 = rel_err(x1 + NUMEL, x3, NUMEL);
    print_message("# seed 8 across batches: relative differences %.3g, %.3g\n", e12, e13);
    assert_true(e12 < 1e-5);
    assert_true(e13 < 1e-5);
    /* and other seeds give other images */
    assert_true(rel_err(x1, x1 + NUMEL, NUMEL) > 0.1);
    free(x1);
    free(x2);
    free(x3);
    edm_denoiser_free(single);
}

/* The three samplers on the golden net, against Heun with 64 steps: each
 * approaches it as the steps grow, Euler (first order) slowest, and at equal
 * evaluations DPM-Solver++(2M) is closer than Euler. */
static void test_samplers_converge(void **state)
{
    fixture *f = *state;
    static const uint64_t seeds[NIMG] = {0, 1, 2};
    edm_sample_params p = golden_params();
    p.steps = 64;
    float *ref = sample_seeds(f, f->net, &p, seeds, NIMG);
    double err[3][3];
    static const int steps[3] = {4, 8, 16};
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 3; k++) {
            p.sampler = (edm_sampler)s;
            p.steps = steps[k];
            float *x = sample_seeds(f, f->net, &p, seeds, NIMG);
            err[s][k] = rel_err(x, ref, NIMG * NUMEL);
            print_message("# %-8s %2d steps (%2d evaluations): %.4g from heun-64\n", edm_sampler_name(p.sampler),
                          steps[k], edm_sample_nfe(&p), err[s][k]);
            free(x);
        }
    for (int s = 0; s < 3; s++)
        assert_true(err[s][2] < err[s][1] && err[s][1] < err[s][0]);
    /* second order: doubling the steps cuts the error by more than first order does */
    assert_true(err[EDM_SAMPLER_DPMPP_2M][2] < err[EDM_SAMPLER_EULER][2]);
    assert_true(err[EDM_SAMPLER_HEUN][2] < err[EDM_SAMPLER_EULER][2]);
    free(ref);
}

static void test_sampler_names(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++)
        assert_int_equal(edm_sampler_from_name(edm_sampler_name((edm_sampler)s)), s);
    assert_int_equal(edm_sampler_from_name("dpm"), -1);
    edm_sample_params p;
    edm_sample_params_default(&p);
    assert_int_equal(p.sampler, EDM_SAMPLER_HEUN);
    p.steps = 10;
    assert_int_equal(edm_sample_nfe(&p), 19);
    p.sampler = EDM_SAMPLER_DPMPP_2M;
    assert_int_equal(edm_sample_nfe(&p), 10);
    edm_status st;
    edm_status_init(&st);
    p.S_churn = 1;
    assert_int_equal(edm_sample_params_check(&p, &st), -1);
    assert_non_null(strstr(st.msg, "dpmpp-2m is deterministic"));
    p.S_churn = 0;
    p.guidance_lo = 2;
    p.guidance_hi = 1;
    edm_status_init(&st);
    assert_int_equal(edm_sample_params_check(&p, &st), -1);
    assert_non_null(strstr(st.msg, "guidance interval"));
}

/* Guidance inside a σ interval: an interval holding no step's σ is the net
 * alone; one holding every σ is guidance everywhere; one in between neither. */
static void test_guidance_interval(void **state)
{
    fixture *f = *state;
    static const uint64_t seeds[NIMG] = {0, 1, 2};
    edm_sample_params p = golden_params();
    float *plain = sample_seeds(f, f->net, &p, seeds, NIMG);
    p.guidance = 2;
    float *guided = sample_seeds2(f, &p, seeds);
    p.guidance_lo = 1000;
    p.guidance_hi = 2000;
    float *none = sample_seeds2(f, &p, seeds);
    p.guidance_lo = 0;
    p.guidance_hi = 100;
    float *all = sample_seeds2(f, &p, seeds);
    p.guidance_lo = 0.5;
    p.guidance_hi = 5;
    float *part = sample_seeds2(f, &p, seeds);
    assert_memory_equal(none, plain, sizeof(float) * NIMG * NUMEL);
    assert_memory_equal(all, guided, sizeof(float) * NIMG * NUMEL);
    assert_true(rel_err(part, plain, NIMG * NUMEL) > 1e-4);
    assert_true(rel_err(part, guided, NIMG * NUMEL) > 1e-4);
    free(plain);
    free(guided);
    free(none);
    free(all);
    free(part);
}

static void test_denoiser_errors(void **state)
{
    fixture *f = *state;
    edm_status st;
    edm_status_init(&st);
    edm_denoiser_shape s = edm_denoiser_get_shape(f->net);
    assert_int_equal(s.channels, 4);
    assert_int_equal(s.height, 16);
    assert_int_equal(s.width, 16);
    assert_int_equal(s.label_dim, 10);
    float sigma[NIMG + 1] = {1, 1, 1, 1}, *x = f->noise, D[NIMG * NUMEL], logvar[NIMG];
    assert_int_equal(edm_denoiser_eval(f->net, x, sigma, NULL, 1, D, NULL, &st), -1); /* labels missing */
    assert_non_null(strstr(st.msg, "missing"));
    assert_int_equal(edm_denoiser_eval(f->net, x, sigma, f->labels, NIMG + 1, D, NULL, &st), -1);
    sigma[1] = 0;
    assert_int_equal(edm_denoiser_eval(f->net, x, sigma, f->labels, 2, D, NULL, &st), -1);
    sigma[1] = 1;
    assert_int_equal(edm_denoiser_eval(f->net, x, sigma, f->labels, 2, D, logvar, &st), 0);
    assert_true(isfinite(logvar[0]) && isfinite(logvar[1]));
    /* a smaller batch, then the full one again: same values */
    float D2[NIMG * NUMEL];
    assert_int_equal(edm_denoiser_eval(f->net, x, sigma, f->labels, NIMG, D2, NULL, &st), 0);
    assert_true(rel_err(D, D2, NUMEL + NUMEL) < 1e-6);
}

static void test_config_metadata(void **state)
{
    fixture *f = *state;
    edm_status st;
    edm_status_init(&st);
    edm_define_list l;
    assert_int_equal(edm_define_list_from_weights(f->weights, &l, &st), 0);
    assert_string_equal(l.source, "config");
    assert_null(l.model);
    int found = 0;
    for (int i = 0; i < l.count; i++)
        if (strcmp(l.items[i].name, "channel_mult") == 0) {
            assert_string_equal(l.items[i].value, "[1,2]");
            found = 1;
        }
    assert_true(found);
    edm_define_list_free(&l);
}

static int is_png(const char *path)
{
    unsigned char sig[8] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    size_t got = fread(sig, 1, 8, fp);
    fclose(fp);
    static const unsigned char want[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return got == 8 && memcmp(sig, want, 8) == 0;
}

static void test_png(void **state)
{
    (void)state;
    assert_int_equal(edm_image_to_u8(-1), 0);
    assert_int_equal(edm_image_to_u8(0), 128);
    assert_int_equal(edm_image_to_u8(1), 255);
    assert_int_equal(edm_image_to_u8(5), 255);
    assert_int_equal(edm_image_to_u8(NAN), 0);
    char dir[] = "/tmp/edmc_test_sample_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    float img[5 * 3 * 4 * 6];
    for (int i = 0; i < 5 * 3 * 4 * 6; i++)
        img[i] = sinf((float)i);
    edm_status st;
    edm_status_init(&st);
    snprintf(path, sizeof path, "%s/one.png", dir);
    assert_int_equal(edm_image_write_png(path, img, 3, 4, 6, &st), 0);
    assert_true(is_png(path));
    assert_int_equal(remove(path), 0);
    snprintf(path, sizeof path, "%s/grid.png", dir);
    assert_int_equal(edm_image_write_grid(path, img, 5, 3, 4, 6, 1, &st), 0);
    assert_true(is_png(path));
    assert_int_equal(remove(path), 0);
    assert_int_equal(edm_image_write_png(path, img, 4, 4, 6, &st), -1); /* 4 channels */
    assert_non_null(strstr(st.msg, "1 or 3 channels"));
    snprintf(path, sizeof path, "%s/no/such/folder/x.png", dir);
    assert_int_equal(edm_image_write_png(path, img, 1, 4, 6, &st), -1);
    assert_int_equal(st.code, EDM_ERR_IO);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_sample),
        cmocka_unit_test(test_golden_sample_guided),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_gamma),
        cmocka_unit_test(test_params_check),
        cmocka_unit_test(test_churn_off_is_deterministic),
        cmocka_unit_test(test_seed_not_batch),
        cmocka_unit_test(test_samplers_converge),
        cmocka_unit_test(test_sampler_names),
        cmocka_unit_test(test_guidance_interval),
        cmocka_unit_test(test_denoiser_errors),
        cmocka_unit_test(test_config_metadata),
        cmocka_unit_test(test_png),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, setup, teardown);
}
