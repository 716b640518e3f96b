/* The CPU backend against the reference: edm2-tiny's forward pass on the
 * golden inputs reproduces D_x, logvar and every recorded activation
 * (../shared/testdata/edm2-tiny/forward.safetensors) within 1e-4 relative. */
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
#include "runtime/backend_cpu.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"

typedef struct {
    edm_program prog;
    edm_st_file *weights, *golden;
} fixture;

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/edm2-tiny.edm", env_or("srcdir", "."));
    edm_sources *src = edm_sources_new();
    edm_diags *d = malloc(sizeof *d);
    if (!src || !d || edm_compile_file(src, path, NULL, 0, &f->prog, d) != 0) {
        if (d && d->count)
            edm_diag_print(src, &d->items[0], stderr);
        edm_sources_free(src);
        free(d);
        free(f);
        return -1;
    }
    edm_sources_free(src);
    free(d);
    edm_status st;
    edm_status_init(&st);
    const char *td = env_or("EDMC_TESTDATA", "../shared/testdata");
    snprintf(path, sizeof path, "%s/edm2-tiny/weights.safetensors", td);
    f->weights = edm_st_open(path, &st);
    snprintf(path, sizeof path, "%s/edm2-tiny/forward.safetensors", td);
    f->golden = edm_st_open(path, &st);
    if (!f->weights || !f->golden) {
        fprintf(stderr, "%s\n", st.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    edm_program_free(&f->prog);
    edm_st_close(f->weights);
    edm_st_close(f->golden);
    free(f);
    return 0;
}

static float *golden(const fixture *f, const char *name, int64_t *n)
{
    edm_status st;
    edm_status_init(&st);
    const edm_st_entry *e = edm_st_find(f->golden, name);
    if (!e)
        return NULL;
    float *data = malloc(sizeof(float) * (size_t)e->numel);
    assert_non_null(data);
    assert_int_equal(edm_st_read_f32(f->golden, e, data, e->numel, &st), 0);
    *n = e->numel;
    return data;
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

/* The golden file names activations act.<tap>, except the embedding. */
static const char *tap_for(const char *golden_name)
{
    if (strcmp(golden_name, "act.emb_noise") == 0)
        return "unet.emb_noise";
    return golden_name + 4;
}

static void run_forward(void **state, edm_dtype compute, double tol, unsigned fuse)
{
    fixture *f = *state;
    const edm_graph *g = f->prog.graph;
    edm_status st;
    edm_status_init(&st);

    /* keep every tapped activation the golden file has */
    int keep[256], nkeep = 0;
    for (int i = 0; i < edm_st_count(f->golden); i++) {
        const char *name = edm_st_entry_at(f->golden, i)->name;
        if (strncmp(name, "act.", 4) != 0)
            continue;
        int node = edm_graph_find_tap(g, tap_for(name));
        if (node < 0)
            print_error("no tap for %s\n", name);
        assert_true(node >= 0);
        assert_true(nkeep < 256);
        keep[nkeep++] = node;
    }
    assert_true(nkeep >= 10);
    edm_backend_options opt = edm_backend_defaults(EDM_DEVICE_CPU);
    opt.cpu = (edm_cpu_options){.compute = compute, .keep = keep, .nkeep = nkeep, .fuse = fuse};
    edm_backend *x = edm_backend_new(g, 3, &opt, &st);
    assert_non_null(x);
    if (edm_weights_load(x, g, f->weights, &st) != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(st.code, EDM_OK);
    const char *inputs[] = {"x", "sigma", "class_labels"};
    for (int i = 0; i < 3; i++) {
        int64_t n;
        float *data = golden(f, inputs[i], &n);
        assert_non_null(data);
        assert_int_equal(edm_backend_set_f32(x, inputs[i], data, n, &st), 0);
        free(data);
    }
    if (edm_backend_run(x, &st) != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(st.code, EDM_OK);

    int compared = 0, worst_ok = 1;
    for (int i = 0; i < edm_st_count(f->golden); i++) {
        const char *name = edm_st_entry_at(f->golden, i)->name;
        int node;
        if (strcmp(name, "D_x") == 0 || strcmp(name, "logvar") == 0)
            node = edm_backend_find(x, EDM_OP_OUTPUT, name);
        else if (strncmp(name, "act.", 4) == 0)
            node = edm_graph_find_tap(g, tap_for(name));
        else
            continue;
        int64_t n;
        float *want = golden(f, name, &n);
        assert_int_equal(edm_backend_numel(x, node), n);
        float *got = malloc(sizeof(float) * (size_t)n);
        assert_non_null(got);
        assert_int_equal(edm_backend_get_f32(x, node, got, n, &st), 0);
        double e = rel_err(got, want, n);
        if (!(e < tol)) {
            print_error("%s: relative error %.3g (tolerance %.1g)\n", name, e, tol);
            worst_ok = 0;
        }
        compared++;
        free(want);
        free(got);
    }
    assert_true(worst_ok);
    assert_true(compared >= 12);
    /* liveness reuse: far less memory live at once than all stored activations together
     * (the arena; the fused steps' workspaces come on top) */
    const edm_plan *plan = edm_cpu_plan(edm_backend_cpu(x));
    assert_true(plan->arena_bytes * 2 < plan->stored_bytes);
    assert_true(edm_backend_peak_bytes(x) >= (size_t)plan->arena_bytes);
    edm_backend_free(x);
}

static void test_forward_f32(void **state) { run_forward(state, EDM_F32, 1e-4, EDM_FUSE_NONE); }
static void test_forward_f64(void **state) { run_forward(state, EDM_F64, 1e-4, EDM_FUSE_NONE); }
/* fused: the kept activations are stored, everything else as the plan decides */
static void test_forward_f32_fused(void **state) { run_forward(state, EDM_F32, 1e-4, EDM_FUSE_ALL); }
static void test_forward_f64_fused(void **state) { run_forward(state, EDM_F64, 1e-4, EDM_FUSE_ALL); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_f32),
        cmocka_unit_test(test_forward_f64),
        cmocka_unit_test(test_forward_f32_fused),
        cmocka_unit_test(test_forward_f64_fused),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, setup, teardown);
}
