/* One EDM2 training step on the CPU backend against the reference
 * (../shared/testdata/edm2-tiny/train_step.safetensors): forced weight
 * normalization, the loss, every gradient, and the parameters after one Adam
 * step, each within the testdata README's tolerances. */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compiler/elaborate.h"
#include "compiler/passes/passes.h"
#include "runtime/safetensors.h"
#include "runtime/train.h"

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static float *read_tensor(const edm_st_file *f, const char *name, int64_t n)
{
    edm_status st;
    edm_status_init(&st);
    const edm_st_entry *e = edm_st_find(f, name);
    if (!e)
        print_error("golden file lacks %s\n", name);
    assert_non_null(e);
    assert_int_equal(e->numel, n);
    float *data = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_non_null(data);
    assert_int_equal(edm_st_read_f32(f, e, data, n, &st), 0);
    return data;
}

/* ‖a − b‖ / max(‖b‖, floor·sqrt(n)) */
static double rel_err(const float *a, const float *b, int64_t n, double floor)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    double f = floor * floor * (double)n;
    return sqrt(num / (den > f ? den : (f > 0 ? f : 1)));
}

static void test_one_training_step(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/edm2-tiny.edm", env_or("srcdir", "."));
    edm_sources *src = edm_sources_new();
    edm_diags *d = malloc(sizeof *d);
    assert_non_null(src);
    assert_non_null(d);
    edm_define defs[] = {{"training", "true"}};
    edm_program prog;
    if (edm_compile_file(src, path, defs, 1, &prog, d) != 0)
        edm_diag_print(src, &d->items[0], stderr);
    assert_non_null(prog.graph);
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_pass_autodiff(prog.graph, NULL, 0, &st), 0);
    assert_int_equal(edm_pass_verify(prog.graph, &st), 0);

    const char *td = env_or("EDMC_TESTDATA", "../shared/testdata");
    snprintf(path, sizeof path, "%s/edm2-tiny/weights.safetensors", td);
    edm_st_file *w = edm_st_open(path, &st);
    snprintf(path, sizeof path, "%s/edm2-tiny/train_step.safetensors", td);
    edm_st_file *gold = edm_st_open(path, &st);
    assert_non_null(w);
    assert_non_null(gold);

    edm_backend_options opt = edm_backend_defaults(EDM_DEVICE_CPU);
    edm_trainer *t = edm_trainer_new(prog.graph, 3, &opt, &st);
    if (!t)
        print_error("%s\n", st.msg);
    assert_non_null(t);
    if (edm_trainer_load(t, w, &st) != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(st.code, EDM_OK);
    assert_int_equal(edm_trainer_force_wn(t, &st), 0);

    int bad = 0;
    char name[512];
    for (int i = 0; i < edm_trainer_nparams(t); i++) {
        edm_train_param *p = edm_trainer_param(t, i);
        snprintf(name, sizeof name, "normalized.%s", p->name);
        float *want = read_tensor(gold, name, p->numel);
        double e = rel_err(p->value, want, p->numel, 0);
        if (!(e < 1e-5)) {
            print_error("%s: relative error %.3g\n", name, e);
            bad++;
        }
        free(want);
    }
    assert_int_equal(bad, 0);

    const char *inputs[] = {"images", "class_labels", "rnd_normal", "unit_noise"};
    const int64_t sizes[] = {3 * 4 * 16 * 16, 3 * 10, 3, 3 * 4 * 16 * 16};
    for (int i = 0; i < 4; i++) {
        float *v = read_tensor(gold, inputs[i], sizes[i]);
        assert_int_equal(edm_backend_set_f32(edm_trainer_backend(t), inputs[i], v, sizes[i], &st), 0);
        free(v);
    }
    double loss = 0;
    assert_int_equal(edm_trainer_zero_grad(t, &st), 0);
    if (edm_trainer_accumulate(t, 3, &loss, &st) != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(st.code, EDM_OK);
    float *want_loss = read_tensor(gold, "loss", 1);
    double le = fabs(loss - want_loss[0]) / fabs(want_loss[0]);
    if (!(le < 1e-5))
        print_error("loss %.9g, reference %.9g (relative error %.3g)\n", loss, (double)want_loss[0], le);
    assert_true(le < 1e-5);
    free(want_loss);

    for (int i = 0; i < edm_trainer_nparams(t); i++) {
        edm_train_param *p = edm_trainer_param(t, i);
        snprintf(name, sizeof name, "grad.%s", p->name);
        float *want = read_tensor(gold, name, p->numel);
        double e = rel_err(p->grad, want, p->numel, 0);
        if (!(e < 1e-3)) {
            print_error("%s: relative error %.3g\n", name, e);
            bad++;
        }
        free(want);
    }
    assert_int_equal(bad, 0);

    /* the Adam step: compare the update (step1 - normalized), floor 1e-6 */
    float **before = calloc((size_t)edm_trainer_nparams(t), sizeof *before);
    assert_non_null(before);
    for (int i = 0; i < edm_trainer_nparams(t); i++) {
        edm_train_param *p = edm_trainer_param(t, i);
        before[i] = malloc(sizeof(float) * (size_t)p->numel);
        memcpy(before[i], p->value, sizeof(float) * (size_t)p->numel);
    }
    edm_adam adam = {0.9, 0.99, 1e-8};
    int64_t nonfinite = -1;
    assert_int_equal(edm_trainer_adam(t, &adam, 0.01, 1, &nonfinite, &st), 0);
    assert_int_equal(nonfinite, 0);
    for (int i = 0; i < edm_trainer_nparams(t); i++) {
        edm_train_param *p = edm_trainer_param(t, i);
        snprintf(name, sizeof name, "step1.%s", p->name);
        float *want = read_tensor(gold, name, p->numel);
        for (int64_t k = 0; k < p->numel; k++) {
            want[k] -= before[i][k];
            before[i][k] = p->value[k] - before[i][k];
        }
        double e = rel_err(before[i], want, p->numel, 1e-6);
        if (!(e < 1e-3)) {
            print_error("%s: update relative error %.3g\n", name, e);
            bad++;
        }
        free(want);
        free(before[i]);
    }
    free(before);
    assert_int_equal(bad, 0);

    edm_trainer_free(t);
    edm_st_close(w);
    edm_st_close(gold);
    edm_program_free(&prog);
    edm_sources_free(src);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_training_step),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
