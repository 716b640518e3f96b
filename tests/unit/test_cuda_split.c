/* A module's kernels compiled in parts at once: the cut of the source
 * (codegen/cuda_source_split.h), the bundle of cubins
 * (codegen/cubin_bundle.h) and NVRTC over the parts (codegen/cuda_nvrtc.h). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codegen/cubin_bundle.h"
#include "codegen/cuda_codegen.h"
#include "codegen/cuda_nvrtc.h"
#include "codegen/cuda_source_split.h"
#include "compiler/elaborate.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/passes.h"

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

/* edm2-tiny's training step, fused, bf16, batch 4: CUDA C with units that
 * call into each other (the groups' reused step functions). */
static char *tiny_train_source(int fused, int64_t *splitk_floats)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/models/edm2-tiny.edm", env_or("srcdir", "."));
    edm_sources *src = edm_sources_new();
    edm_diags *d = calloc(1, sizeof *d);
    assert_non_null(src);
    assert_non_null(d);
    edm_program prog;
    edm_define defs[] = {{"training", "true"}};
    if (edm_compile_file(src, path, defs, 1, &prog, d) != 0)
        edm_diag_print(src, &d->items[0], stderr);
    assert_non_null(prog.graph);
    edm_status st;
    edm_status_init(&st);
    edm_cuda_options opt = {.storage = EDM_BF16, .batch = 4, .training = 1, .tensor_cores = 1, .optimizer = 1};
    char *source = NULL;
    if (fused) {
        edm_pipeline_options po = {.training = 1, .fuse = EDM_FUSE_ALL};
        edm_graph *rw = NULL;
        assert_int_equal(edm_pipeline_run(prog.graph, &po, "rewrite", &rw, &st), 0);
        edm_plan_options plo = {.fuse = EDM_FUSE_ALL, .training = 1};
        edm_plan *p = edm_plan_build(rw, &plo, &st);
        assert_non_null(p);
        edm_cuda_plan_module m;
        assert_int_equal(edm_cuda_codegen_plan(p, &opt, &m, &st), 0);
        source = m.source;
        *splitk_floats = m.splitk_floats;
        m.source = NULL;
        edm_cuda_plan_module_free(&m);
        edm_plan_free(p);
        edm_graph_free(rw);
    } else {
        edm_cuda_module m;
        assert_int_equal(edm_cuda_codegen(prog.graph, &opt, &m, &st), 0);
        source = m.source;
        *splitk_floats = m.splitk_floats;
        m.source = NULL;
        edm_cuda_module_free(&m);
    }
    edm_program_free(&prog);
    edm_sources_free(src);
    free(d);
    return source;
}

static int count_names(char **names)
{
    int n = 0;
    while (names && names[n])
        n++;
    return n;
}

/* The part (index) whose list holds name, or -1; *times how many do. */
static int part_of(const edm_source_parts *sp, const char *name, int *times)
{
    int at = -1;
    *times = 0;
    for (int p = 0; p < sp->n; p++)
        for (char **q = sp->names[p]; *q; q++)
            if (strcmp(*q, name) == 0) {
                at = p;
                (*times)++;
            }
    return at;
}

/* Each part: the prelude, then its units; every kernel of the source in
 * exactly one part; a group kernel's step functions in its own part. */
static void check_split(const char *source, int max_parts)
{
    edm_status st;
    edm_status_init(&st);
    edm_source_parts whole, sp;
    assert_int_equal(edm_cuda_source_split(source, 1, &whole, &st), 0);
    assert_int_equal(whole.n, 1);
    assert_string_equal(whole.text[0], source);
    assert_int_equal(edm_cuda_source_split(source, max_parts, &sp, &st), 0);
    print_message("# %d kernels in %d parts (at most %d)\n", count_names(whole.names[0]), sp.n, max_parts);
    assert_true(sp.n > 1 && sp.n <= max_parts);
    const char *first = strstr(source, "\n/* edmc-unit ");
    assert_non_null(first);
    int total = 0;
    for (int p = 0; p < sp.n; p++) {
        assert_memory_equal(sp.text[p], source, (size_t)(first - source));
        assert_non_null(strstr(sp.text[p], "\n/* edmc-units-end */\n"));
        total += count_names(sp.names[p]);
    }
    assert_int_equal(total, count_names(whole.names[0]));
    for (char **q = whole.names[0]; *q; q++) {
        int times = 0;
        assert_true(part_of(&sp, *q, &times) >= 0);
        assert_int_equal(times, 1);
    }
    /* calls "sN_OP_run(" in a part: its definition "void sN_OP_run(" in the same part */
    int calls = 0;
    for (int p = 0; p < sp.n; p++)
        for (const char *c = sp.text[p]; (c = strstr(c, "_run(b_ - t_[1]")) != NULL; c++) {
            const char *s = c;
            while (s > sp.text[p] && s[-1] != ' ')
                s--;
            char def[128];
            snprintf(def, sizeof def, "void %.*s_run(", (int)(c - s), s);
            assert_non_null(strstr(sp.text[p], def));
            calls++;
        }
    print_message("# %d calls of step functions from group kernels, each with its definition\n", calls);
    edm_source_parts_free(&sp);
    edm_source_parts_free(&whole);
}

static void test_split_fused(void **state)
{
    (void)state;
    int64_t ws = 0;
    char *source = tiny_train_source(1, &ws);
    assert_true(ws > 0); /* split-K: the executor's workspace, no module array to duplicate */
    assert_null(strstr(source, "__device__ float"));
    assert_non_null(strstr(source, " needs ")); /* units calling into earlier ones */
    check_split(source, 8);
    check_split(source, 64);
    free(source);
}

static void test_split_nodes(void **state)
{
    (void)state;
    int64_t ws = 0;
    char *source = tiny_train_source(0, &ws);
    check_split(source, 5);
    free(source);
}

static void expect_split_error(const char *source, const char *what)
{
    edm_status st;
    edm_status_init(&st);
    edm_source_parts sp;
    assert_int_equal(edm_cuda_source_split(source, 4, &sp, &st), -1);
    assert_int_equal(st.code, EDM_ERR_INTERNAL);
    if (!strstr(st.msg, what))
        print_error("%s\n", st.msg);
    assert_non_null(strstr(st.msg, what));
}

static void test_split_bad_marks(void **state)
{
    (void)state;
    expect_split_error("int a;\n/* edmc-unit 0 */\nk0\n/* edmc-unit 1 needs 7 */\nk1\n/* edmc-units-end */\n",
                       "needs unit 7");
    expect_split_error("int a;\n/* edmc-unit 0 */\nk0\n/* edmc-unit 1 needs */\n/* edmc-units-end */\n",
                       "unreadable unit mark");
    expect_split_error("int a;\n/* edmc-unit x */\nk0\n/* edmc-units-end */\n", "unreadable unit mark");
    expect_split_error("int a;\n/* edmc-unit 0 */\nk0\n/* edmc-unit 1 */\nk1\n", "end mark");
    /* a unit needing a later one is not before it */
    expect_split_error("p\n/* edmc-unit 0 needs 1 */\nk0\n/* edmc-unit 1 */\nk1\n/* edmc-units-end */\n", "needs unit 1");
    /* a unit needing many (the list has no bound): all in one part */
    char many[16384];
    size_t at = 0;
    for (int u = 0; u < 70; u++)
        at += (size_t)snprintf(many + at, sizeof many - at,
                               "\n/* edmc-unit %d */\nextern \"C\" __global__ void k%d(float *y) {}\n", u, u);
    at += (size_t)snprintf(many + at, sizeof many - at, "\n/* edmc-unit 70 needs");
    for (int u = 0; u < 70; u++)
        at += (size_t)snprintf(many + at, sizeof many - at, " %d", u);
    snprintf(many + at, sizeof many - at, " */\nextern \"C\" __global__ void k70(float *y) {}\n\n/* edmc-units-end */\n");
    edm_status many_st;
    edm_status_init(&many_st);
    edm_source_parts one;
    assert_int_equal(edm_cuda_source_split(many, 8, &one, &many_st), 0);
    assert_int_equal(one.n, 1);
    assert_int_equal(count_names(one.names[0]), 71);
    edm_source_parts_free(&one);
    /* no marks: the source whole */
    edm_status st;
    edm_status_init(&st);
    edm_source_parts sp;
    assert_int_equal(edm_cuda_source_split("extern \"C\" __global__ void k(float *y) {}\n", 8, &sp, &st), 0);
    assert_int_equal(sp.n, 1);
    assert_string_equal(sp.names[0][0], "k");
    assert_null(sp.names[0][1]);
    edm_source_parts_free(&sp);
}

static void test_bundle(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    char c0[] = "\177ELF first", c1[] = "\177ELF second, longer";
    char n0[] = "k_a\0k_b", n1[] = "k_c";
    edm_cubin_part in[2] = {{c0, sizeof c0, n0, sizeof n0}, {c1, sizeof c1, n1, sizeof n1}};
    void *img = NULL;
    size_t size = 0;
    assert_int_equal(edm_cubin_bundle_write(in, 2, &img, &size, &st), 0);
    assert_true(edm_cubin_is_bundle(img, size));
    edm_cubin_part out[4];
    int n = 0;
    assert_int_equal(edm_cubin_bundle_read(img, size, out, 4, &n, &st), 0);
    assert_int_equal(n, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(out[i].size, in[i].size);
        assert_memory_equal(out[i].cubin, in[i].cubin, in[i].size);
        assert_int_equal(((uintptr_t)out[i].cubin - (uintptr_t)img) % 16, 0);
    }
    assert_true(edm_cubin_part_has(&out[0], "k_a") && edm_cubin_part_has(&out[0], "k_b"));
    assert_false(edm_cubin_part_has(&out[0], "k_c") || edm_cubin_part_has(&out[1], "k_a"));
    assert_true(edm_cubin_part_has(&out[1], "k_c"));
    assert_false(edm_cubin_part_has(&out[1], "k_"));
    /* too many parts for the reader, cut short, a part outside the image */
    assert_int_equal(edm_cubin_bundle_read(img, size, out, 1, &n, &st), -1);
    assert_int_equal(st.code, EDM_ERR_FORMAT);
    assert_int_equal(edm_cubin_bundle_read(img, 40, out, 4, &n, &st), -1);
    assert_int_equal(edm_cubin_bundle_read(img, 12, out, 4, &n, &st), -1);
    unsigned char *b = img;
    b[16 + 8] = 0xff; /* part 0's size */
    assert_int_equal(edm_cubin_bundle_read(img, size, out, 4, &n, &st), -1);
    assert_non_null(strstr(st.msg, "outside"));
    free(img);
    /* a cubin alone: one part, every kernel looked for in it */
    assert_int_equal(edm_cubin_bundle_read(c0, sizeof c0, out, 4, &n, &st), 0);
    assert_int_equal(n, 1);
    assert_true(out[0].cubin == c0 && edm_cubin_part_has(&out[0], "anything"));
}

/* NVRTC over the parts at once: every kernel in the cubin its bundle names
 * (the modules of the network: test_cuda_fused). */
static void test_compile_parts(void **state)
{
    (void)state;
    if (!edm_nvrtc_available())
        skip();
    static const char source[] =
        "#define ONE 1.0f\n"
        "\n/* edmc-unit 0 */\n"
        "extern \"C\" __global__ void __launch_bounds__(32) k0(float *y) { y[0] = ONE; }\n"
        "\n/* edmc-unit 1 */\n"
        "static __device__ __noinline__ void s1_run(float *y) { y[threadIdx.x] += ONE; }\n"
        "extern \"C\" __global__ void k1(float *y) { s1_run(y); }\n"
        "\n/* edmc-unit 2 needs 1 */\n"
        "extern \"C\" __global__ void k2(float *y) { s1_run(y + 32); }\n"
        "\n/* edmc-units-end */\n";
    edm_status st;
    edm_status_init(&st);
    edm_cubin c;
    int rc = edm_nvrtc_compile_parallel(source, "sm_90", 3, &c, &st);
    if (rc != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(rc, 0);
    edm_cubin_part parts[EDM_CUBIN_BUNDLE_MAX];
    int n = 0;
    assert_int_equal(edm_cubin_bundle_read(c.data, c.size, parts, EDM_CUBIN_BUNDLE_MAX, &n, &st), 0);
    assert_int_equal(n, 2); /* unit 0; units 1 and 2 together */
    const char *names[] = {"k0", "k1", "k2"};
    for (int k = 0; k < 3; k++) {
        int holders = 0, in = 0;
        for (int p = 0; p < n; p++) {
            if (!edm_cubin_part_has(&parts[p], names[k]))
                continue;
            holders++;
            const char *h = parts[p].cubin;
            for (size_t i = 0; i + 3 <= parts[p].size && !in; i++)
                in = memcmp(h + i, names[k], 3) == 0;
        }
        assert_int_equal(holders, 1);
        assert_true(in);
    }
    edm_cubin_free(&c);
    /* one job: one program, a plain cubin */
    assert_int_equal(edm_nvrtc_compile_parallel(source, "sm_90", 1, &c, &st), 0);
    assert_false(edm_cubin_is_bundle(c.data, c.size));
    edm_cubin_free(&c);
    /* a part that does not compile: its error, and which part */
    static const char bad[] = "\n/* edmc-unit 0 */\nextern \"C\" __global__ void k0(float *y) { y[0] = 1; }\n"
                              "\n/* edmc-unit 1 */\nextern \"C\" __global__ void k1(float *y) { y[0] = nothing; }\n"
                              "\n/* edmc-units-end */\n";
    assert_int_equal(edm_nvrtc_compile_parallel(bad, "sm_90", 2, &c, &st), -1);
    assert_non_null(strstr(st.msg, "part 2 of 2"));
    assert_non_null(strstr(st.msg, "nothing"));
}

static void test_jobs(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    setenv("EDMC_COMPILE_JOBS", "3", 1);
    assert_int_equal(edm_nvrtc_jobs(&st), 3);
    setenv("EDMC_COMPILE_JOBS", "0", 1);
    assert_int_equal(edm_nvrtc_jobs(&st), -1);
    assert_non_null(strstr(st.msg, "EDMC_COMPILE_JOBS=0"));
    setenv("EDMC_COMPILE_JOBS", "2x", 1);
    assert_int_equal(edm_nvrtc_jobs(&st), -1);
    unsetenv("EDMC_COMPILE_JOBS");
    assert_true(edm_nvrtc_jobs(&st) >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_fused),    cmocka_unit_test(test_split_nodes), cmocka_unit_test(test_split_bad_marks),
        cmocka_unit_test(test_bundle),         cmocka_unit_test(test_compile_parts), cmocka_unit_test(test_jobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
