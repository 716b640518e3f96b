/* CUDA C of fused plans: every step of edm2-tiny's and edm2-img512-s's plans
 * (forward and training, dropout included) rendered as one kernel and
 * compiled by NVRTC for sm_90; every kernel the launch table names is in the
 * cubin.  The numbers these kernels compute are for the emulator
 * (tests/emu) and tests/gpu/run.sh, once the CUDA executor runs plans. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* training: 0 forward, 1 the training step, 2 with dropout 0.1 */
static edm_graph *load_rewritten(const char *model, int training, unsigned fuse)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s", env_or("srcdir", "."), model);
    edm_sources *src = edm_sources_new();
    edm_diags *d = calloc(1, sizeof *d);
    assert_non_null(src);
    assert_non_null(d);
    edm_define defs[] = {{"training", "true"}, {"dropout", "0.1"}};
    edm_program prog;
    if (edm_compile_file(src, path, defs, training, &prog, d) != 0)
        edm_diag_print(src, &d->items[0], stderr);
    assert_non_null(prog.graph);
    edm_status st;
    edm_status_init(&st);
    edm_pipeline_options po = {.training = training != 0, .fuse = fuse};
    edm_graph *rw = NULL;
    if (edm_pipeline_run(prog.graph, &po, "rewrite", &rw, &st) != 0)
        print_error("%s\n", st.msg);
    assert_non_null(rw);
    edm_program_free(&prog);
    edm_sources_free(src);
    free(d);
    return rw;
}

/* Whether the compiled image (a cubin or a bundle of them) holds kernel
 * `name`: in the cubin the bundle names for it. */
static int in_cubin(const edm_cubin *c, const char *name)
{
    edm_cubin_part parts[EDM_CUBIN_BUNDLE_MAX];
    int n = 0;
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_cubin_bundle_read(c->data, c->size, parts, EDM_CUBIN_BUNDLE_MAX, &n, &st), 0);
    size_t k = strlen(name);
    for (int p = 0; p < n; p++) {
        if (!edm_cubin_part_has(&parts[p], name))
            continue;
        const char *h = parts[p].cubin;
        for (size_t i = 0; i + k <= parts[p].size; i++)
            if (h[i] == name[0] && memcmp(h + i, name, k) == 0)
                return 1;
    }
    return 0;
}

/* Whether step s is an attention step, and the block it launches: 256 threads,
 * 128 for attention on tensor cores (64 queries, 4 warps). */
static int is_attention(const edm_plan *p, int s)
{
    return p->steps[s].core >= 0 && edm_graph_node(p->g, p->steps[s].core)->op == EDM_OP_ATTENTION;
}
static unsigned block_of(const edm_plan *p, int s, edm_dtype storage)
{
    return is_attention(p, s) && storage != EDM_F32 ? 128u : 256u;
}

static void compile_plan(const char *model, int training, edm_dtype storage, unsigned fuse)
{
    if (!edm_nvrtc_available())
        skip();
    edm_graph *g = load_rewritten(model, training, fuse);
    edm_status st;
    edm_status_init(&st);
    edm_plan_options po = {.fuse = fuse, .training = training != 0};
    edm_plan *p = edm_plan_build(g, &po, &st);
    assert_non_null(p);
    edm_cuda_options opt = {.storage = storage, .batch = 8, .training = training != 0, .tensor_cores = 1};
    edm_cuda_plan_module m;
    if (edm_cuda_codegen_plan(p, &opt, &m, &st) != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(st.code, EDM_OK);
    assert_int_equal(m.nlaunch, p->nsteps);
    edm_cubin cubin;
    /* through the disk cache: CI's second run of the suite finds them */
    int rc = edm_nvrtc_compile_cached(m.source, "sm_90", &cubin, &st);
    if (rc != 0) {
        print_error("%s\n", st.msg);
        FILE *f = fopen("/tmp/edmc-fused-failed.cu", "w");
        if (f) {
            fputs(m.source, f);
            fclose(f);
        }
    }
    assert_int_equal(rc, 0);
    /* every kernel in the cubin its bundle names (compiled in parts: EDMC_COMPILE_JOBS, main) */
    edm_source_parts whole;
    assert_int_equal(edm_cuda_source_split(m.source, 1, &whole, &st), 0);
    for (char **q = whole.names[0]; *q; q++) {
        if (!in_cubin(&cubin, *q))
            print_error("%s not in the cubin\n", *q);
        assert_true(in_cubin(&cubin, *q));
    }
    edm_source_parts_free(&whole);
    /* one kernel per group: what the executor launches */
    assert_int_equal(m.ngroups, edm_plan_kernels(p));
    for (int gi = 0; gi < m.ngroups; gi++) {
        if (!in_cubin(&cubin, m.group[gi].kernel))
            print_error("%s not in the cubin\n", m.group[gi].kernel);
        assert_true(in_cubin(&cubin, m.group[gi].kernel));
        assert_true(m.group[gi].grid[0] >= 1 && m.group[gi].block[0] == block_of(p, m.group[gi].first_step, storage));
    }
    int prologues = 0, epilogues = 0, attention_tc = 0;
    for (int s = 0; s < m.nlaunch; s++) {
        attention_tc += is_attention(p, s) && m.launch[s].block[0] == 128;
        assert_true(m.launch[s].grid[0] >= 1 && m.launch[s].block[0] == block_of(p, s, storage));
        for (int k = 0; k < p->steps[s].nmembers; k++) {
            prologues += p->steps[s].members[k].role == EDM_ROLE_PROLOGUE;
            epilogues += p->steps[s].members[k].role == EDM_ROLE_EPILOGUE && p->steps[s].core >= 0;
        }
    }
    if (fuse != EDM_FUSE_NONE)
        assert_true(prologues > 0 && epilogues > 0);
    if (training == 2)
        assert_non_null(strstr(m.source, "edm_mix64(*P.seed"));
    /* the contractions on tensor cores (f16/bf16), split-K for the weight gradients of training */
    int mma = 0, splitk = 0;
    for (const char *q = m.source; (q = strstr(q, "edm_mma_" )) != NULL; q++)
        mma += strncmp(q, "edm_mma_f16(acc[i]", 18) == 0 || strncmp(q, "edm_mma_bf16(acc[i]", 19) == 0;
    for (const char *q = m.source; (q = strstr(q, "atomicAdd(&EDM_SPLITK_COUNT(seed)[tile_]")) != NULL; q++)
        splitk++;
    int copies = 0; /* the taps convolutions' weight tiles by cp.async (cuda_gemm_mma.h, EDM_MMA_A_ASYNC) */
    for (const char *q = m.source; (q = strstr(q, "edm_cp_async16((unsigned)")) != NULL; q++)
        copies++;
    int wide = 0; /* the weight gradients' dy read eight elements a load (cuda_gemm_mma.h, EDM_MMA_A_WIDE) */
    for (const char *q = m.source; (q = strstr(q, "_A8v(P, z, m, k, &ra[4 * e])")) != NULL; q++)
        wide++;
    if (storage != EDM_F32 && training)
        assert_true(wide > 0);
    else
        assert_int_equal(wide, 0);
    if (storage != EDM_F32)
        assert_true(mma > 0);
    else
        assert_int_equal(mma, 0);
    if (storage != EDM_F32 && training && fuse != EDM_FUSE_NONE)
        assert_true(splitk > 0);
    if (storage != EDM_F32 && !training && (fuse & EDM_FUSE_ATTN)) /* the forward's attention steps */
        assert_true(attention_tc > 0);
    if (storage != EDM_F32 && (fuse & EDM_FUSE_TAPS))
        assert_true(copies > 0);
    print_message("# %s %s %s: %d steps (%d kernels in the plan), %d prologue and %d epilogue members, "
                  "%d tensor-core contractions (%d split-K, %d weight tiles by cp.async, %d wide dy loads), %d attention steps on "
                  "tensor cores, %zu KiB source, %zu KiB cubin, NVRTC %.1f s\n",
                  model, training ? "train" : "forward", edm_dtype_name(storage), p->nsteps, edm_plan_kernels(p),
                  prologues, epilogues, mma, splitk, copies, wide, attention_tc, m.len / 1024, cubin.size / 1024,
                  cubin.seconds);
    edm_cubin_free(&cubin);
    edm_cuda_plan_module_free(&m);
    edm_plan_free(p);
    edm_graph_free(g);
}

static void test_tiny_forward_f32(void **state)
{
    (void)state;
    compile_plan("edm2-tiny.edm", 0, EDM_F32, EDM_FUSE_ALL);
}

static void test_tiny_train_dropout_bf16(void **state)
{
    (void)state;
    compile_plan("edm2-tiny.edm", 2, EDM_BF16, EDM_FUSE_ALL);
}

static void test_tiny_unfused_f16(void **state)
{
    (void)state;
    compile_plan("edm2-tiny.edm", 0, EDM_F16, EDM_FUSE_NONE);
}

static void test_s_forward_f16(void **state)
{
    (void)state;
    compile_plan("edm2-img512-s.edm", 0, EDM_F16, EDM_FUSE_ALL);
}

static void test_s_train_bf16(void **state)
{
    (void)state;
    compile_plan("edm2-img512-s.edm", 1, EDM_BF16, EDM_FUSE_ALL);
}

int main(void)
{
    /* the modules compiled in parts, the bundle path, whatever the cores here */
    setenv("EDMC_COMPILE_JOBS", "3", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_forward_f32), cmocka_unit_test(test_tiny_train_dropout_bf16),
        cmocka_unit_test(test_tiny_unfused_f16), cmocka_unit_test(test_s_forward_f16),
        cmocka_unit_test(test_s_train_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
