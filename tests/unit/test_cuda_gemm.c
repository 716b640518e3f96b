/* The numbers of the CUDA backend's cuBLASLt path, without a GPU.
 *
 * codegen describes each contraction as a row-major strided-batched GEMM
 * (edm_cuda_gemm), runtime/cuda_gemm.c turns it into cuBLASLt's column-major
 * call (A and B swapped, transposes and leading dimensions rewritten) and
 * runtime/backend_cuda.c's run_gemm supplies the pointers, batch offsets and
 * beta.  Here that whole chain runs against the fake driver and cuBLASLt
 * (tests/fakecuda/fake_cuda.c) with FAKE_CUDA_COMPUTE=1, under which the fake
 * really computes every cublasLtMatmul on the host, and the output is
 * compared with the CPU backend in f64.
 *
 * Kernels do not run on the fake, so only graphs whose work is all cuBLASLt
 * can be checked: f32 storage (uploads and downloads are plain copies, no
 * cast kernel), one contraction, library paths on (matmul_library,
 * conv_library), and for convolutions only 1×1 / stride 1 / no padding,
 * which codegen marks `direct` (cuBLASLt reads x or writes dx itself; any
 * other convolution needs an im2col or col2im kernel).  Storage f16 is not
 * checked for the same reason: its uploads go through a cast kernel.
 *
 * Each case asserts that its contraction really went through cuBLASLt: the
 * fake's counts (fake_cuda_stat, read through dlsym) say no kernel was
 * launched and exactly the expected number of products was computed (1, or
 * for conv2d_bwd_weight two a chunk of samples: the batched per-sample
 * partials, then their sum by a GEMM with a ones vector, beta 0 for the first
 * chunk and 1 after), and the executor's describe line names no fallback.  A fallback to the
 * generated kernel would fail those counts (and give zeros, not numbers).
 * test_fake_computes checks the fake's own arithmetic on hand-made cuBLASLt
 * calls, so that a fake and a mapping wrong in the same way cannot agree.
 *
 * Error: max |t - r| / max(1, max |r|), tol 1e-5.
 *
 * Environment: EDMC_CUDA_DRIVER (default $builddir/tests/fakecuda/fake_cuda.so,
 * builddir default "."); without the fake (configured --without-cuda) it
 * prints "# no fake driver" and exits 77.  EDMC_CACHE_DIR (default: a
 * temporary folder, removed at the end): NVRTC compiles each case's graph. */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "codegen/cuda_nvrtc.h"
#include "compiler/ir.h"
#include "compiler/passes/passes.h"
#include "runtime/backend_cpu.h"
#include "runtime/backend_cuda.h"
#include "runtime/cuda_api.h"
#include "runtime/rng.h"

#define TOL 1e-5

/* The fake's counts, by name (-1: unknown). */
typedef long long (*stat_fn)(const char *);
static stat_fn fake_stat;

/* ------------------------------------------------------------------ the cases */

typedef struct {
    const char *label;
    edm_node op;        /* op and attributes */
    edm_shape a, b;     /* operands: with the batch dim an input, else a parameter */
    int64_t batch;
    int graph;          /* run through a captured CUDA Graph (else launch by launch) */
    int gemms;          /* cublasLtMatmul calls per run */
    long long chunk_bytes; /* EDMC_CUDA_CHUNK_BYTES for the run (0: the executor's default) */
} gemm_case;

#define SHP(...) {.rank = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .dim = {__VA_ARGS__}}
#define NB EDM_DIM_BATCH
#define T_MM(ta, tb) {.op = EDM_OP_MATMUL, .attr.matmul = {.trans_a = (ta), .trans_b = (tb)}}
#define T_CONV {.op = EDM_OP_CONV2D, .attr.conv = {.stride = 1, .pad = 0}}
#define T_BWD_DATA(h, w) {.op = EDM_OP_CONV2D_BWD_DATA, .attr.conv = {.stride = 1, .pad = 0, .in_h = (h), .in_w = (w)}}
#define T_BWD_WEIGHT {.op = EDM_OP_CONV2D_BWD_WEIGHT, .attr.conv = {.stride = 1, .pad = 0, .kernel = 1}}

/* m, n, k = 3, 5, 7 in the matmuls unless said; C = 4 and O = 6 channels of 3×5 in the convolutions */
static const gemm_case cases[] = {
    {"matmul a·b, b broadcast over the batch (stride 0)", T_MM(0, 0), SHP(NB, 3, 7), SHP(7, 5), 3, 0, 1, 0},
    {"matmul a·bᵀ, both batched", T_MM(0, 1), SHP(NB, 3, 7), SHP(NB, 5, 7), 3, 0, 1, 0},
    {"matmul aᵀ·b, a broadcast over the batch (stride 0)", T_MM(1, 0), SHP(7, 3), SHP(NB, 7, 5), 3, 0, 1, 0},
    {"matmul aᵀ·bᵀ, both batched", T_MM(1, 1), SHP(NB, 7, 3), SHP(NB, 5, 7), 3, 0, 1, 0},
    {"matmul a·b, one product (no batch)", T_MM(0, 0), SHP(3, 7), SHP(7, 5), 3, 0, 1, 0},
    {"matmul a·b, batch dims [N,2] as one (count 2N)", T_MM(0, 0), SHP(NB, 2, 3, 7), SHP(NB, 2, 7, 5), 3, 0, 1, 0},
    {"matmul aᵀ·b contracting over the batch (m, n, k = 4, 6, N)", T_MM(1, 0), SHP(NB, 4), SHP(NB, 6), 3, 0, 1, 0},
    {"matmul a·bᵀ, both batched, through a CUDA Graph", T_MM(0, 1), SHP(NB, 3, 7), SHP(NB, 5, 7), 3, 1, 1, 0},
    {"conv2d 1x1 (direct), C 4 -> O 6, batch 3", T_CONV, SHP(NB, 4, 3, 5), SHP(6, 4, 1, 1), 3, 0, 1, 0},
    {"conv2d 1x1 (direct), batch 1", T_CONV, SHP(NB, 4, 3, 5), SHP(6, 4, 1, 1), 1, 0, 1, 0},
    {"conv2d_bwd_data 1x1 (direct), O 6 -> C 4, batch 3", T_BWD_DATA(3, 5), SHP(NB, 6, 3, 5), SHP(6, 4, 1, 1), 3, 0,
     1, 0},
    /* the weight gradient: one batched GEMM of per-sample partials, one GEMM with ones summing them */
    {"conv2d_bwd_weight 1x1 (direct), batch 4 in one chunk", T_BWD_WEIGHT, SHP(NB, 4, 3, 5), SHP(NB, 6, 3, 5), 4, 0,
     2, 0},
    /* partials of 6·4 floats (96 bytes) a sample, 200 bytes a chunk: chunks of 2, 2 and a tail of 1,
     * summed into dw with beta 0, then 1, then 1 */
    {"conv2d_bwd_weight 1x1 (direct), batch 5 in chunks 2+2+1", T_BWD_WEIGHT, SHP(NB, 4, 3, 5), SHP(NB, 6, 3, 5), 5, 0,
     6, 200},
};

#define NCASES (sizeof cases / sizeof cases[0])

/* ------------------------------------------------------------------ graphs and values */

static int add_node(edm_graph *g, edm_node n, edm_status *st)
{
    n.ninputs = edm_op_arity(n.op);
    n.dtype = EDM_F32;
    n.loc = EDM_NO_LOC;
    n.scope = "";
    if (edm_infer_node(g, &n, st) != 0)
        return -1;
    return edm_graph_add(g, &n, st);
}

/* a, b → the contraction → output "y"; NULL with st set. */
static edm_graph *build(const gemm_case *k, edm_status *st)
{
    edm_graph *g = edm_graph_new();
    if (!g) {
        edm_nomem(st);
        return NULL;
    }
    edm_node a = {.op = edm_shape_has_batch(&k->a) ? EDM_OP_INPUT : EDM_OP_PARAM, .shape = k->a, .name = "a"};
    edm_node b = {.op = edm_shape_has_batch(&k->b) ? EDM_OP_INPUT : EDM_OP_PARAM, .shape = k->b, .name = "b"};
    edm_node op = k->op;
    int rc = (op.input[0] = add_node(g, a, st)) < 0 || (op.input[1] = add_node(g, b, st)) < 0 ? -1 : 0;
    int y = rc == 0 ? add_node(g, op, st) : -1;
    edm_node out = {.op = EDM_OP_OUTPUT, .input = {y}, .name = "y"};
    if (y < 0 || add_node(g, out, st) < 0 || edm_pass_verify(g, st) != 0) {
        edm_graph_free(g);
        return NULL;
    }
    return g;
}

static int64_t numel(const edm_shape *s, int64_t batch)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= s->dim[i] == EDM_DIM_BATCH ? batch : s->dim[i];
    return n;
}

/* ------------------------------------------------------------------ running both sides */

typedef struct {
    float *a, *b;       /* the operands (f32, the same on both sides) */
    int64_t na, nb, ny;
    double *ref;        /* cpu f64 */
    float *got;         /* cuda on the fake */
    long long launches, computed, replayed;
    char describe[400];
} case_run;

static void case_run_free(case_run *r)
{
    free(r->a);
    free(r->b);
    free(r->ref);
    free(r->got);
    memset(r, 0, sizeof *r);
}

static int run_cpu(const edm_graph *g, const gemm_case *k, case_run *r, edm_status *st)
{
    edm_cpu_options o = {.compute = EDM_F64, .threads = 1};
    edm_cpu *x = edm_cpu_new(g, k->batch, &o, st);
    if (!x)
        return -1;
    double *a = malloc(sizeof(double) * (size_t)r->na), *b = malloc(sizeof(double) * (size_t)r->nb);
    int rc = a && b ? 0 : edm_nomem(st);
    for (int64_t i = 0; rc == 0 && i < r->na; i++)
        a[i] = r->a[i];
    for (int64_t i = 0; rc == 0 && i < r->nb; i++)
        b[i] = r->b[i];
    if (rc == 0)
        rc = edm_cpu_set_f64(x, "a", a, r->na, st);
    if (rc == 0)
        rc = edm_cpu_set_f64(x, "b", b, r->nb, st);
    if (rc == 0)
        rc = edm_cpu_run(x, st);
    int y = edm_cpu_find(x, EDM_OP_OUTPUT, "y");
    if (rc == 0 && (y < 0 || edm_cpu_numel(x, y) != r->ny))
        rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "cpu: output y has %lld elements, not %lld",
                      (long long)(y < 0 ? -1 : edm_cpu_numel(x, y)), (long long)r->ny);
    if (rc == 0)
        rc = edm_cpu_get_f64(x, y, r->ref, r->ny, st);
    free(a);
    free(b);
    edm_cpu_free(x);
    return rc;
}

static int run_cuda(const edm_graph *g, const gemm_case *k, case_run *r, edm_status *st)
{
    edm_cuda_exec_options o = {
        .storage = EDM_F32, .matmul_library = 1, .conv_library = 1, .no_graph = !k->graph, .network_scope = ""};
    o.compile = edm_nvrtc_available() ? edm_nvrtc_compile_kernels : NULL;
    edm_cuda_exec *x = edm_cuda_exec_new(g, k->batch, &o, st);
    if (!x)
        return -1;
    snprintf(r->describe, sizeof r->describe, "%s", edm_cuda_exec_describe(x));
    int rc = edm_cuda_exec_set_f32(x, "a", r->a, r->na, st);
    if (rc == 0)
        rc = edm_cuda_exec_set_f32(x, "b", r->b, r->nb, st);
    long long launches = fake_stat("launches") + fake_stat("launches_captured");
    long long computed = fake_stat("matmuls_computed"), replayed = fake_stat("matmuls_replayed");
    if (rc == 0)
        rc = edm_cuda_exec_run(x, st);
    r->launches = fake_stat("launches") + fake_stat("launches_captured") - launches;
    r->computed = fake_stat("matmuls_computed") - computed;
    r->replayed = fake_stat("matmuls_replayed") - replayed;
    int y = edm_cuda_exec_find(x, EDM_OP_OUTPUT, "y");
    if (rc == 0 && (y < 0 || edm_cuda_exec_numel(x, y) != r->ny))
        rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "cuda: output y has %lld elements, not %lld",
                      (long long)(y < 0 ? -1 : edm_cuda_exec_numel(x, y)), (long long)r->ny);
    if (rc == 0)
        rc = edm_cuda_exec_get_f32(x, y, r->got, r->ny, st);
    edm_cuda_exec_free(x);
    return rc;
}

static int run_case(const gemm_case *k, case_run *r, edm_status *st)
{
    memset(r, 0, sizeof *r);
    edm_graph *g = build(k, st);
    if (!g)
        return -1;
    r->na = numel(&k->a, k->batch);
    r->nb = numel(&k->b, k->batch);
    const edm_node *yn = edm_graph_node(g, edm_graph_count(g) - 1);
    r->ny = numel(&yn->shape, k->batch);
    r->a = malloc(sizeof(float) * (size_t)r->na);
    r->b = malloc(sizeof(float) * (size_t)r->nb);
    r->ref = malloc(sizeof(double) * (size_t)r->ny);
    r->got = malloc(sizeof(float) * (size_t)r->ny);
    int rc = r->a && r->b && r->ref && r->got ? 0 : edm_nomem(st);
    if (rc == 0) {
        edm_rng ra = edm_rng_make(20240611u, k->label), rb = edm_rng_make(20240612u, k->label);
        edm_rng_normal(&ra, 0, r->a, r->na);
        edm_rng_normal(&rb, 0, r->b, r->nb);
        for (int64_t i = 0; i < r->ny; i++)
            r->got[i] = NAN; /* not written: not equal */
        rc = run_cpu(g, k, r, st);
    }
    if (rc == 0)
        rc = run_cuda(g, k, r, st);
    edm_graph_free(g);
    return rc;
}

/* max |t - r| / max(1, max |r|); inf when t is not finite. */
static double scaled_error(const float *t, const double *r, int64_t n, double *ref_max)
{
    double scale = 1, worst = 0, most = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite((double)t[i]) || !isfinite(r[i]))
            return INFINITY;
        most = fabs(r[i]) > most ? fabs(r[i]) : most;
        double d = fabs((double)t[i] - r[i]);
        worst = d > worst ? d : worst;
    }
    scale = most > scale ? most : scale;
    *ref_max = most;
    return worst / scale;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_case(void **state)
{
    const gemm_case *k = *state;
    edm_status st;
    edm_status_init(&st);
    case_run r;
    double t0 = now();
    char chunk[32];
    snprintf(chunk, sizeof chunk, "%lld", k->chunk_bytes);
    if (k->chunk_bytes > 0 ? setenv("EDMC_CUDA_CHUNK_BYTES", chunk, 1) != 0 : unsetenv("EDMC_CUDA_CHUNK_BYTES") != 0)
        fail_msg("setenv failed");
    int rc = run_case(k, &r, &st);
    unsetenv("EDMC_CUDA_CHUNK_BYTES");
    if (rc != 0) {
        print_error("%s: %s\n", k->label, st.msg);
        case_run_free(&r);
        fail();
    }
    double ref_max = 0, err = scaled_error(r.got, r.ref, r.ny, &ref_max);
    long long want = k->gemms;
    print_message("# %s: err %.1e (max|ref| %.2f, %lld values), %lld cuBLASLt products, %lld kernels, %.2f s\n",
                  k->label, err, ref_max, (long long)r.ny, r.computed, r.launches, now() - t0);
    int library = strstr(r.describe, "matmul cuBLASLt") && strstr(r.describe, "conv im2col+cuBLASLt") &&
                  !strstr(r.describe, "generated kernels");
    if (!library)
        print_error("%s: the executor says \"%s\"\n", k->label, r.describe);
    if (r.computed != want || r.launches != 0)
        print_error("%s: %lld products computed (want %lld), %lld kernels launched (want 0): the contraction did not "
                    "run (only) through cuBLASLt\n",
                    k->label, r.computed, want, r.launches);
    if (k->graph && r.replayed != want)
        print_error("%s: %lld products replayed by the graph (want %lld)\n", k->label, r.replayed, want);
    if (!(err <= TOL))
        print_error("%s: error %.3g > %.0e; first values cuda %g %g %g, cpu %g %g %g\n", k->label, err, TOL,
                    (double)r.got[0], r.ny > 1 ? (double)r.got[1] : 0.0, r.ny > 2 ? (double)r.got[2] : 0.0, r.ref[0],
                    r.ny > 1 ? r.ref[1] : 0.0, r.ny > 2 ? r.ref[2] : 0.0);
    if (!(ref_max > 0.5))
        print_error("%s: the reference is all but zero (max %g): the case proves nothing\n", k->label, ref_max);
    int ok = library && r.computed == want && r.launches == 0 && (!k->graph || r.replayed == want) && err <= TOL &&
             ref_max > 0.5;
    case_run_free(&r);
    assert_true(ok);
}

/* ------------------------------------------------------------------ the fake's own arithmetic */

#define LT_LAYOUT_ORDER_ 1       /* CUBLASLT_MATRIX_LAYOUT_ORDER (int32) */
#define LT_ORDER_ROW_ 1          /* CUBLASLT_ORDER_ROW */

typedef struct {
    cu_api cu;
    lt_api lt;
    lt_handle h;
    cu_context ctx;
    int retained;
    cu_ptr mem;
} raw_lt;

static void raw_close(raw_lt *r)
{
    if (r->mem)
        r->cu.MemFree(r->mem);
    if (r->h)
        r->lt.Destroy(r->h);
    if (r->retained)
        r->cu.DevicePrimaryCtxRelease(0);
    lt_api_close(&r->lt);
    cu_api_close(&r->cu);
}

static int raw_open(raw_lt *r, edm_status *st)
{
    memset(r, 0, sizeof *r);
    cu_device dev = 0;
    if (cu_api_open(&r->cu, st) != 0 || cu_api_init(&r->cu, st) != 0 ||
        cu_check(&r->cu, r->cu.DeviceGet(&dev, 0), "cuDeviceGet", st) != 0 ||
        cu_check(&r->cu, r->cu.DevicePrimaryCtxRetain(&r->ctx, dev), "cuDevicePrimaryCtxRetain", st) != 0)
        return -1;
    r->retained = 1;
    if (cu_check(&r->cu, r->cu.CtxSetCurrent(r->ctx), "cuCtxSetCurrent", st) != 0 ||
        cu_check(&r->cu, r->cu.MemAlloc(&r->mem, 1 << 16), "cuMemAlloc", st) != 0 || lt_api_open(&r->lt, st) != 0 ||
        lt_check(&r->lt, r->lt.Create(&r->h), "cublasLtCreate", st) != 0)
        return -1;
    return 0;
}

typedef struct {
    int type;                    /* LT_R_* */
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride;
    int row_major;
} raw_layout;

static int raw_layout_make(raw_lt *r, const raw_layout *d, lt_layout *out, edm_status *st)
{
    int32_t order = LT_ORDER_ROW_;
    if (lt_check(&r->lt, r->lt.LayoutCreate(out, d->type, d->rows, d->cols, d->ld), "cublasLtMatrixLayoutCreate", st))
        return -1;
    if (d->row_major && lt_check(&r->lt, r->lt.LayoutSetAttribute(*out, LT_LAYOUT_ORDER_, &order, sizeof order),
                                 "cublasLtMatrixLayoutSetAttribute(ORDER)", st))
        return -1;
    if (d->batch > 1 &&
        (lt_check(&r->lt, r->lt.LayoutSetAttribute(*out, LT_LAYOUT_BATCH_COUNT, &d->batch, sizeof d->batch),
                  "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)", st) ||
         lt_check(&r->lt, r->lt.LayoutSetAttribute(*out, LT_LAYOUT_BATCH_STRIDE, &d->stride, sizeof d->stride),
                  "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)", st)))
        return -1;
    return 0;
}

/* One cublasLtMatmul: the operands' bytes go to the device at offsets 0, 4096, 8192 (C is D), D comes back. */
static int raw_matmul(raw_lt *r, int ta, int tb, float alpha, float beta, const raw_layout L[3], const void *a,
                      size_t abytes, const void *b, size_t bbytes, void *c, size_t cbytes, edm_status *st)
{
    lt_desc desc = NULL;
    lt_layout lay[3] = {NULL, NULL, NULL};
    int32_t opa = ta ? LT_OP_T : LT_OP_N, opb = tb ? LT_OP_T : LT_OP_N;
    cu_ptr pa = r->mem, pb = r->mem + 4096, pc = r->mem + 8192;
    int rc = lt_check(&r->lt, r->lt.DescCreate(&desc, LT_COMPUTE_32F, LT_R_32F), "cublasLtMatmulDescCreate", st);
    if (rc == 0)
        rc = lt_check(&r->lt, r->lt.DescSetAttribute(desc, LT_DESC_TRANSA, &opa, sizeof opa), "TRANSA", st);
    if (rc == 0)
        rc = lt_check(&r->lt, r->lt.DescSetAttribute(desc, LT_DESC_TRANSB, &opb, sizeof opb), "TRANSB", st);
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = raw_layout_make(r, &L[i], &lay[i], st);
    if (rc == 0)
        rc = cu_check(&r->cu, r->cu.MemcpyHtoD(pa, a, abytes), "cuMemcpyHtoD", st);
    if (rc == 0)
        rc = cu_check(&r->cu, r->cu.MemcpyHtoD(pb, b, bbytes), "cuMemcpyHtoD", st);
    if (rc == 0)
        rc = cu_check(&r->cu, r->cu.MemcpyHtoD(pc, c, cbytes), "cuMemcpyHtoD", st);
    if (rc == 0)
        rc = lt_check(&r->lt,
                      r->lt.Matmul(r->h, desc, &alpha, (void *)(uintptr_t)pa, lay[0], (void *)(uintptr_t)pb, lay[1],
                                   &beta, (void *)(uintptr_t)pc, lay[2], (void *)(uintptr_t)pc, lay[2], NULL, NULL,
                                   0, NULL),
                      "cublasLtMatmul", st);
    if (rc == 0)
        rc = cu_check(&r->cu, r->cu.MemcpyDtoH(c, pc, cbytes), "cuMemcpyDtoH", st);
    for (int i = 0; i < 3; i++)
        if (lay[i])
            r->lt.LayoutDestroy(lay[i]);
    if (desc)
        r->lt.DescDestroy(desc);
    return rc;
}

/* Hand-checked products straight through cuBLASLt's API: transposes, ld with
 * padding, row order, stride-0 broadcast, alpha, beta, and f16 / bf16
 * rounding to nearest even. */
static void test_fake_computes(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    raw_lt r;
    int rc = raw_open(&r, &st);
    /* 1. D (2×2) = 2·op(A)·op(B) + 0.5·C over 2 batches; A is 3×2 column-major with ld 4 (a padded
     *    row), TRANSA (op(A) is 2×3, the same for both batches: stride 0); B is 3×2 column-major,
     *    stride 6; C/D column-major ld 2, stride 4.  op(A) = [1 2 3; 4 5 6]. */
    if (rc == 0) {
        const float a[8] = {1, 2, 3, -99, 4, 5, 6, -99};
        const float b[12] = {1, 0, 1, 0, 1, 1, /* batch 1: */ 2, 0, 0, 0, 0, 1};
        float c[8] = {1, 1, 1, 1, 10, 20, 30, 40};
        /* batch 0: op(A)·B = [4 5; 10 11]; batch 1: [2 3; 8 6] */
        const float want[8] = {2 * 4 + 0.5f, 2 * 10 + 0.5f, 2 * 5 + 0.5f, 2 * 11 + 0.5f,
                               2 * 2 + 5,    2 * 8 + 10,    2 * 3 + 15,   2 * 6 + 20};
        const raw_layout L[3] = {{LT_R_32F, 3, 2, 4, 2, 0, 0},
                                 {LT_R_32F, 3, 2, 3, 2, 6, 0},
                                 {LT_R_32F, 2, 2, 2, 2, 4, 0}};
        rc = raw_matmul(&r, 1, 0, 2.0f, 0.5f, L, a, sizeof a, b, sizeof b, c, sizeof c, &st);
        for (int i = 0; rc == 0 && i < 8; i++)
            if (c[i] != want[i])
                rc = edm_fail(&st, EDM_ERR_INTERNAL, EDM_NO_LOC, "f32 product: D[%d] = %g, want %g", i, (double)c[i],
                              (double)want[i]);
    }
    /* 2. row order, TRANSB: D (1×2, row-major) = A (1×3, row-major) · op(B), B 2×3 row-major (op(B) = Bᵀ);
     *    beta 0: C (NaN) is not read */
    if (rc == 0) {
        const float a[3] = {1, 2, 3}, b[6] = {1, 1, 1, 0, 1, -1};
        float c[2] = {NAN, NAN};
        const raw_layout L[3] = {{LT_R_32F, 1, 3, 3, 1, 0, 1},
                                 {LT_R_32F, 2, 3, 3, 1, 0, 1},
                                 {LT_R_32F, 1, 2, 2, 1, 0, 1}};
        rc = raw_matmul(&r, 0, 1, 1.0f, 0.0f, L, a, sizeof a, b, sizeof b, c, sizeof c, &st);
        if (rc == 0 && (c[0] != 6 || c[1] != -1))
            rc = edm_fail(&st, EDM_ERR_INTERNAL, EDM_NO_LOC, "row-major product: D = %g %g, want 6 -1", (double)c[0],
                          (double)c[1]);
    }
    /* 3. f16, to nearest even: D (1×4) = A (1×2) · B (2×4), A = [1, 2^-11]; column by column
     *    1 + 2^-11 → 1 (0x3c00), (1 + 2^-10) + 2^-11 → 1 + 2^-9 (0x3c02), 65504 + 16 → inf (0x7c00),
     *    2^-11·1.5·2^-13 = 1.5·2^-24 → 2·2^-24 (subnormal 0x0002) */
    if (rc == 0) {
        const uint16_t a[2] = {0x3c00, 0x1000};
        const uint16_t b[8] = {0x3c00, 0x3c00, 0x3c01, 0x3c00, 0x7bff, 0x7800, 0x0000, 0x0a00};
        uint16_t c[4] = {0, 0, 0, 0};
        const uint16_t want[4] = {0x3c00, 0x3c02, 0x7c00, 0x0002};
        const raw_layout L[3] = {{LT_R_16F, 1, 2, 1, 1, 0, 0},
                                 {LT_R_16F, 2, 4, 2, 1, 0, 0},
                                 {LT_R_16F, 1, 4, 1, 1, 0, 0}};
        rc = raw_matmul(&r, 0, 0, 1.0f, 0.0f, L, a, sizeof a, b, sizeof b, c, sizeof c, &st);
        for (int i = 0; rc == 0 && i < 4; i++)
            if (c[i] != want[i])
                rc = edm_fail(&st, EDM_ERR_INTERNAL, EDM_NO_LOC, "f16 product: D[%d] = 0x%04x, want 0x%04x", i, c[i],
                              want[i]);
    }
    /* 4. bf16 likewise, A = [1, 2^-8]: 1 + 2^-8 → 1 (0x3f80), (1 + 2^-7) + 2^-8 → 1 + 2^-6 (0x3f82) */
    if (rc == 0) {
        const uint16_t a[2] = {0x3f80, 0x3b80};
        const uint16_t b[4] = {0x3f80, 0x3f80, 0x3f81, 0x3f80};
        uint16_t c[2] = {0, 0};
        const uint16_t want[2] = {0x3f80, 0x3f82};
        const raw_layout L[3] = {{LT_R_16BF, 1, 2, 1, 1, 0, 0},
                                 {LT_R_16BF, 2, 2, 2, 1, 0, 0},
                                 {LT_R_16BF, 1, 2, 1, 1, 0, 0}};
        rc = raw_matmul(&r, 0, 0, 1.0f, 0.0f, L, a, sizeof a, b, sizeof b, c, sizeof c, &st);
        for (int i = 0; rc == 0 && i < 2; i++)
            if (c[i] != want[i])
                rc = edm_fail(&st, EDM_ERR_INTERNAL, EDM_NO_LOC, "bf16 product: D[%d] = 0x%04x, want 0x%04x", i, c[i],
                              want[i]);
    }
    raw_close(&r);
    if (rc != 0)
        print_error("%s\n", st.msg);
    assert_int_equal(rc, 0);
}

/* ------------------------------------------------------------------ main */

static char cache_dir[4096];

static void remove_cache_dir(void)
{
    DIR *d = opendir(cache_dir);
    if (d) {
        struct dirent *e;
        char path[4400];
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                snprintf(path, sizeof path, "%s/%s", cache_dir, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(cache_dir);
}

int main(void)
{
    cmocka_set_message_output(CM_OUTPUT_TAP);
    char fake[4096];
    const char *drv = getenv("EDMC_CUDA_DRIVER"), *builddir = getenv("builddir");
    if (drv && drv[0])
        snprintf(fake, sizeof fake, "%s", drv);
    else
        snprintf(fake, sizeof fake, "%s/tests/fakecuda/fake_cuda.so", builddir && builddir[0] ? builddir : ".");
    if (access(fake, R_OK) != 0) {
        printf("# no fake driver (%s)\n", fake);
        return 77;
    }
    /* before any executor: the backend opens these, and the fake reads FAKE_CUDA_* at its first call */
    if (setenv("EDMC_CUDA_DRIVER", fake, 1) != 0 || setenv("EDMC_CUBLASLT", fake, 1) != 0 ||
        setenv("FAKE_CUDA_COMPUTE", "1", 1) != 0) {
        printf("Bail out! setenv failed\n");
        return 1;
    }
    void *lib = dlopen(fake, RTLD_NOW | RTLD_LOCAL);
    void *sym = lib ? dlsym(lib, "fake_cuda_stat") : NULL;
    if (!sym) {
        const char *why = dlerror();
        if (drv && drv[0]) { /* a real driver named on purpose: this test is for the fake */
            printf("# EDMC_CUDA_DRIVER=%s is not the fake driver (%s)\n", fake, why ? why : "?");
            return 77;
        }
        printf("Bail out! %s has no fake_cuda_stat (%s)\n", fake, why ? why : "?");
        return 1;
    }
    memcpy(&fake_stat, &sym, sizeof fake_stat);
    const char *cache = getenv("EDMC_CACHE_DIR");
    if (!cache || !cache[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(cache_dir, sizeof cache_dir, "%s/edmc-test-cuda-gemm-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(cache_dir) || setenv("EDMC_CACHE_DIR", cache_dir, 1) != 0) {
            printf("Bail out! no temporary kernel cache folder %s\n", cache_dir);
            return 1;
        }
    }
    printf("# fake driver %s (FAKE_CUDA_COMPUTE=1); reference cpu f64; %zu cases; tol %.0e\n", fake, NCASES, TOL);
    struct CMUnitTest tests[NCASES + 1];
    memset(tests, 0, sizeof tests);
    tests[0].name = "test_fake_computes";
    tests[0].test_func = test_fake_computes;
    for (size_t i = 0; i < NCASES; i++) {
        tests[i + 1].name = cases[i].label;
        tests[i + 1].test_func = test_case;
        tests[i + 1].initial_state = (void *)&cases[i];
    }
    double t0 = now();
    int failed = _cmocka_run_group_tests("test_cuda_gemm", tests, NCASES + 1, NULL, NULL);
    printf("# %.1f s\n", now() - t0);
    if (cache_dir[0])
        remove_cache_dir();
    dlclose(lib);
    return failed;
}
