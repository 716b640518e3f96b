/* Op by op: every primitive of the IR, forward and backward, on a backend
 * UNDER TEST against the CPU backend in float64 (the reference), in the
 * spirit of ggml's test-backend-ops.
 *
 * Each case is a tiny graph: operands (inputs [N, ...] where the batch is
 * natural, parameters otherwise), the op under test (or a two-step chain),
 * one output "y".  edm_pass_autodiff then appends the backward graph: the
 * seed input "grad.y" (set to a random r, so the gradients are those of the
 * training objective L = Σ r·y), and the outputs "grad.<operand>" for every
 * parameter and every input operand (passed as wrt).  Both backends run the
 * same forward + backward graph at batch 2 on the same float-exact operand
 * values (so input rounding is not part of the error), dropout in training
 * mode with the same seed (so the same mask).
 *
 * Environment (tests/gpu/run.sh runs it with the CUDA settings):
 *   EDMC_TEST_DEVICE     cpu (default) or cuda
 *   EDMC_TEST_PRECISION  cpu: f32 (default; f64 for a sanity run of the
 *                        reference against itself)
 *                        cuda: fp32 (default), fp16 or bf16: the storage of
 *                        every non-leaf value (network_scope ""; see the
 *                        dtype rule in codegen/cuda_codegen.h: leaves, sum,
 *                        sumsq, softmax and conv2d_bwd_weight stay f32)
 *   EDMC_TEST_GEMM       cuda: library (default: cuBLASLt matmul, im2col
 *                        convolutions) or generated (tiled matmul,
 *                        implicit-GEMM convolutions)
 *   EDMC_TEST_FILTER     a cmocka test filter, e.g. "test_op_conv2d*"
 *   EDMC_CACHE_DIR       cuda: the NVRTC kernel cache (each case compiles)
 * With EDMC_TEST_DEVICE=cuda and no usable device, it prints
 * "# no CUDA device: <why>" and exits 77 (skipped).  `make check` runs the
 * default: CPU f32 against CPU f64.
 *
 * Error measure, per output: e = max_i |t_i - r_i| / max(1, max_i |r_i|),
 * t the backend under test, r the reference (a non-finite t gives e = inf):
 * relative to the largest value for outputs of order 1 or more, absolute
 * below.  "fwd" is e of y, "bwd" the largest e over the grad.* outputs.
 * A case passes when both are at most tol = base × the case's scale (1, or
 * 2-3 for long reductions and contractions), with the base
 *   cpu f32 1e-5, cuda fp32 1e-4, cuda fp16 1e-2, cuda bf16 5e-2 (cpu f64 1e-12).
 * Every case prints one TAP comment: "# op conv2d k3 s2 p1: fwd 3.1e-07 bwd
 * 8.2e-07 (tol 1e-05)".  One cmocka test per op (test_op_<name>), and
 * test_every_op_has_a_case fails when an op of EDM_OPS other than the leaves
 * and output has no test or no case. */
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

#include "codegen/cuda_nvrtc.h"
#include "compiler/ir.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/passes.h"
#include "runtime/backend.h"
#include "runtime/backend_cuda.h"
#include "runtime/rng.h"

#define BATCH 2
#define DROPOUT_SEED 20240611u
#define MAX_OPERANDS 3
#define MAX_STEPS 5
#define MAX_LEAVES 8
#define MAX_OUTPUTS 8

/* ------------------------------------------------------------------ the configuration */

typedef struct {
    edm_device device;
    edm_dtype dtype; /* cpu: compute; cuda: storage */
    edm_matmul_mode matmul;
    edm_conv_mode conv;
    unsigned fuse; /* cuda: the fused plan's kernels (EDMC_TEST_GEMM=fused) */
    double tol;
    char label[64];
} config;

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static int precision_from_env(config *c, const char *p, char *err, size_t errsz)
{
    if (c->device == EDM_DEVICE_CPU) {
        if (strcmp(p, "f32") == 0 || strcmp(p, "fp32") == 0)
            c->dtype = EDM_F32, c->tol = 1e-5;
        else if (strcmp(p, "f64") == 0 || strcmp(p, "fp64") == 0)
            c->dtype = EDM_F64, c->tol = 1e-12;
        else {
            snprintf(err, errsz, "EDMC_TEST_PRECISION=%s: cpu takes f32 or f64", p);
            return -1;
        }
        return 0;
    }
    if (strcmp(p, "fp32") == 0 || strcmp(p, "f32") == 0)
        c->dtype = EDM_F32, c->tol = 1e-4;
    else if (strcmp(p, "fp16") == 0 || strcmp(p, "f16") == 0)
        c->dtype = EDM_F16, c->tol = 1e-2;
    else if (strcmp(p, "bf16") == 0)
        c->dtype = EDM_BF16, c->tol = 5e-2;
    else {
        snprintf(err, errsz, "EDMC_TEST_PRECISION=%s: cuda takes fp32, fp16 or bf16", p);
        return -1;
    }
    return 0;
}

static int config_from_env(config *c, char *err, size_t errsz)
{
    memset(c, 0, sizeof *c);
    const char *dev = env_or("EDMC_TEST_DEVICE", "cpu");
    if (edm_device_from_name(dev, &c->device) != 0) {
        snprintf(err, errsz, "EDMC_TEST_DEVICE=%s: expected cpu or cuda", dev);
        return -1;
    }
    const char *prec = env_or("EDMC_TEST_PRECISION", c->device == EDM_DEVICE_CPU ? "f32" : "fp32");
    if (precision_from_env(c, prec, err, errsz) != 0)
        return -1;
    const char *gemm = env_or("EDMC_TEST_GEMM", "library");
    if (strcmp(gemm, "library") == 0)
        c->matmul = EDM_MATMUL_CUBLASLT, c->conv = EDM_CONV_IM2COL;
    else if (strcmp(gemm, "generated") == 0)
        c->matmul = EDM_MATMUL_GENERATED, c->conv = EDM_CONV_IMPLICIT;
    else if (strcmp(gemm, "fused") == 0)
        c->matmul = EDM_MATMUL_GENERATED, c->conv = EDM_CONV_IMPLICIT, c->fuse = EDM_FUSE_ALL;
    else {
        snprintf(err, errsz, "EDMC_TEST_GEMM=%s: expected library, generated or fused", gemm);
        return -1;
    }
    snprintf(c->label, sizeof c->label, "%s %s%s%s", dev, prec, c->device == EDM_DEVICE_CUDA ? " gemm " : "",
             c->device == EDM_DEVICE_CUDA ? gemm : "");
    return 0;
}

/* The options of the backend under test (training: dropout draws its mask). */
static edm_backend_options test_options(const config *c, int training)
{
    edm_backend_options o = edm_backend_defaults(c->device);
    o.compile_kernels = edm_nvrtc_available() ? edm_nvrtc_compile_kernels : NULL;
    o.cpu.training = training;
    o.cpu.seed = DROPOUT_SEED;
    if (c->device == EDM_DEVICE_CPU) {
        o.cpu.compute = c->dtype;
        o.cpu.threads = 2;
    } else {
        o.storage = c->dtype;
        o.matmul = c->matmul;
        o.conv = c->conv;
        o.cpu.fuse = c->fuse;
        o.network_scope = ""; /* every non-leaf value in the storage type */
    }
    return o;
}

static edm_backend_options reference_options(int training)
{
    edm_backend_options o = edm_backend_defaults(EDM_DEVICE_CPU);
    o.cpu.compute = EDM_F64;
    o.cpu.threads = 1;
    o.cpu.training = training;
    o.cpu.seed = DROPOUT_SEED;
    return o;
}

/* ------------------------------------------------------------------ the cases */

typedef enum {
    D_NORMAL, /* N(0, 1) */
    D_WIDE,   /* 8·N(0, 1): sin/cos over several periods, saturating sigmoid */
    D_POS,    /* exp(0.6·N(0, 1)) in ~(0.1, 10): log, sqrt, rsqrt, divisors */
    D_HIGH,   /* 1000 + 40·N(0, 1): logits whose exp overflows without the max shift */
    D_LOW,    /* -1000 + 40·N(0, 1): logits whose exp underflows without it */
    D_GRID,   /* 1/8 + k/4: at least 1/8 from 0, from the clamp bounds used and from D_GRID0 */
    D_GRID0,  /* k/4 (maximum's second operand: no ties with D_GRID) */
} dist;

typedef struct {
    edm_shape shape; /* with the batch dim N: an input (differentiated through wrt), else a parameter */
    dist d;
} operand;

/* One node of the case; src: an operand index, or RES(k) for step k's result. */
typedef struct {
    edm_node t; /* op and attributes (shape for reshape / expand) */
    int src[3];
} step_def;

#define RES(k) (MAX_OPERANDS + (k))

enum {
    F_TRAIN = 1u,  /* dropout in training mode (same seed on both sides) */
    F_NO_BWD = 2u, /* no gradient rule (conv2d_bwd_*): forward only */
};

typedef struct {
    edm_op op;         /* the op under test: the case runs in test_op_<name> */
    const char *label; /* after the op's name in the report */
    int nin;
    operand in[MAX_OPERANDS];
    int nstep;
    step_def step[MAX_STEPS]; /* the last one is the output y */
    unsigned flags;
    double tol_scale; /* 0 means 1 */
} op_case;

#define SHP(...) {.rank = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .dim = {__VA_ARGS__}}
#define NB EDM_DIM_BATCH
#define IN(d, ...) {SHP(NB, __VA_ARGS__), d}
#define PAR(d, ...) {SHP(__VA_ARGS__), d}

/* op templates (brace initializers: the table is static) */
#define T(o) {.op = EDM_OP_##o}
#define T_CLAMP(l, h) {.op = EDM_OP_CLAMP, .attr.clamp = {.lo = (l), .hi = (h)}}
#define T_RED(o, ax, kd) {.op = EDM_OP_##o, .attr.reduce = {.axes = (ax), .keepdim = (kd)}}
#define T_CONV(s, p) {.op = EDM_OP_CONV2D, .attr.conv = {.stride = (s), .pad = (p)}}
#define T_BWD_DATA(s, p, h, w) \
    {.op = EDM_OP_CONV2D_BWD_DATA, .attr.conv = {.stride = (s), .pad = (p), .in_h = (h), .in_w = (w)}}
#define T_BWD_WEIGHT(s, p, k) {.op = EDM_OP_CONV2D_BWD_WEIGHT, .attr.conv = {.stride = (s), .pad = (p), .kernel = (k)}}
/* the weight gradient of a 3×3 convolution of silu(x / n) (8 channels, n per pixel), its dy (6
 * channels) scaled by n: prologues on both operands at the elements' coordinates, an h × w image */
#define WGRAD_SILU(label_, h, w)                                                                                       \
    {.op = EDM_OP_CONV2D_BWD_WEIGHT, .label = (label_), .nin = 3,                                                     \
     .in = {IN(D_NORMAL, 8, h, w), IN(D_POS, 1, h, w), IN(D_NORMAL, 6, h, w)}, .nstep = 5,                             \
     .step = {{.t = T(DIV), .src = {0, 1}},                                                                            \
              {.t = T(SILU), .src = {RES(0), 0}},                                                                      \
              {.t = T(MUL), .src = {2, 1}},                                                                            \
              {.t = T_BWD_WEIGHT(1, 1, 3), .src = {RES(1), RES(2)}},                                                   \
              {.t = T(NEG), .src = {RES(3), 0}}},                                                                      \
     .flags = F_NO_BWD, .tol_scale = 2}
#define T_MM(ta, tb) {.op = EDM_OP_MATMUL, .attr.matmul = {.trans_a = (ta), .trans_b = (tb)}}
#define T_RESHAPE(...) {.op = EDM_OP_RESHAPE, .shape = SHP(__VA_ARGS__)}
#define T_EXPAND(...) {.op = EDM_OP_EXPAND, .shape = SHP(__VA_ARGS__)}
#define T_PERM(...) {.op = EDM_OP_PERMUTE, .attr.permute.perm = {__VA_ARGS__}}
#define T_CAT(ax) {.op = EDM_OP_CONCAT, .attr.concat.axis = (ax)}
#define T_SLICE(ax, s, l) {.op = EDM_OP_SLICE, .attr.slice = {.axis = (ax), .start = (s), .len = (l)}}
#define T_SOFTMAX(ax) {.op = EDM_OP_SOFTMAX, .attr.softmax.axis = (ax)}
#define T_DROPOUT(prob) {.op = EDM_OP_DROPOUT, .attr.dropout.p = (prob)}

/* single-op cases: X = with flags and a tolerance scale (the arguments are brace
 * initializers, which cannot be parenthesized) */
/* NOLINTBEGIN(bugprone-macro-parentheses) */
#define C1(OP, LABEL, TPL, A) \
    {.op = EDM_OP_##OP, .label = (LABEL), .nin = 1, .in = {A}, .nstep = 1, .step = {{.t = TPL, .src = {0, 0}}}}
#define C1X(OP, LABEL, TPL, A, FLAGS, SCALE)                                                                    \
    {.op = EDM_OP_##OP, .label = (LABEL), .nin = 1, .in = {A}, .nstep = 1, .step = {{.t = TPL, .src = {0, 0}}}, \
     .flags = (FLAGS), .tol_scale = (SCALE)}
#define C2(OP, LABEL, TPL, A, B) \
    {.op = EDM_OP_##OP, .label = (LABEL), .nin = 2, .in = {A, B}, .nstep = 1, .step = {{.t = TPL, .src = {0, 1}}}}
#define C2X(OP, LABEL, TPL, A, B, FLAGS, SCALE)                                                                    \
    {.op = EDM_OP_##OP, .label = (LABEL), .nin = 2, .in = {A, B}, .nstep = 1, .step = {{.t = TPL, .src = {0, 1}}}, \
     .flags = (FLAGS), .tol_scale = (SCALE)}
/* the attn rule's op (no gradient rule: the rule matches forward passes only) */
#define C3_ATTN(LABEL, A, B, C)                                                                              \
    {.op = EDM_OP_ATTENTION, .label = (LABEL), .nin = 3, .in = {A, B, C}, .nstep = 1,                       \
     .step = {{.t = {.op = EDM_OP_ATTENTION}, .src = {0, 1, 2}}}, .flags = F_NO_BWD, .tol_scale = 2}
/* NOLINTEND(bugprone-macro-parentheses) */

#define UNARY(OP, D)                                   \
    C1(OP, "[N,3,5]", T(OP), IN(D, 3, 5)),             \
    C1(OP, "[N,2,129]", T(OP), IN(D, 2, 129)),         \
    C1(OP, "param [4,6]", T(OP), PAR(D, 4, 6))

#define BINARY(OP, DA, DB)                                                    \
    C2(OP, "same shape", T(OP), IN(DA, 3, 4), IN(DB, 3, 4)),                  \
    C2(OP, "bcast param [3,1,1]", T(OP), IN(DA, 3, 4, 5), PAR(DB, 3, 1, 1)),  \
    C2(OP, "bcast both ways", T(OP), IN(DA, 3, 1, 5), IN(DB, 1, 4, 1)),       \
    C2(OP, "bcast scalar param [1]", T(OP), IN(DA, 3, 4), PAR(DB, 1)),        \
    C2(OP, "bcast lower rank [5]", T(OP), IN(DA, 4, 5), PAR(DB, 5)),          \
    C2(OP, "param by input", T(OP), PAR(DA, 4, 5), IN(DB, 4, 5))

#define REDUCE(OP)                                                                     \
    C1(OP, "axes 1,2,3 keepdim", T_RED(OP, 0xEu, 1), IN(D_NORMAL, 3, 4, 5)),           \
    C1(OP, "axes 1,3", T_RED(OP, 0xAu, 0), IN(D_NORMAL, 3, 4, 5)),                     \
    C1(OP, "axis 2 keepdim", T_RED(OP, 0x4u, 1), IN(D_NORMAL, 3, 4, 5)),               \
    C1(OP, "axis 0 (the batch)", T_RED(OP, 0x1u, 0), IN(D_NORMAL, 3, 4)),              \
    C1(OP, "all axes", T_RED(OP, 0x7u, 0), IN(D_NORMAL, 3, 4)),                        \
    C1(OP, "all axes keepdim", T_RED(OP, 0x7u, 1), IN(D_NORMAL, 3, 4)),                \
    C1X(OP, "long axis (500)", T_RED(OP, 0x4u, 1), IN(D_NORMAL, 2, 500), 0, 3),        \
    C1(OP, "param axes 1,2,3 (weight norm)", T_RED(OP, 0xEu, 1), PAR(D_NORMAL, 4, 3, 3, 3))

static const op_case cases[] = {
    /* unary */
    UNARY(NEG, D_NORMAL),
    UNARY(EXP, D_NORMAL),
    UNARY(LOG, D_POS),
    UNARY(SQRT, D_POS),
    UNARY(RSQRT, D_POS),
    UNARY(SIN, D_WIDE),
    UNARY(COS, D_WIDE),
    UNARY(SQUARE, D_NORMAL),
    UNARY(SIGMOID, D_WIDE),
    UNARY(SILU, D_WIDE),
    C1(CLAMP, "[-0.5, 0.75]", T_CLAMP(-0.5, 0.75), IN(D_GRID, 4, 5)),
    C1(CLAMP, "[0, 1] [N,2,129]", T_CLAMP(0, 1), IN(D_GRID, 2, 129)),
    C1(STEP, "[N,3,5] (gradient 0)", T(STEP), IN(D_GRID, 3, 5)),
    {.op = EDM_OP_STEP, .label = "gating: step(a)·b", .nin = 2, .in = {IN(D_GRID, 3, 5), IN(D_NORMAL, 3, 5)},
     .nstep = 2, .step = {{.t = T(STEP), .src = {0, 0}}, {.t = T(MUL), .src = {RES(0), 1}}}},
    /* binary, numpy broadcasting */
    BINARY(ADD, D_NORMAL, D_NORMAL),
    BINARY(SUB, D_NORMAL, D_NORMAL),
    BINARY(MUL, D_NORMAL, D_NORMAL),
    BINARY(DIV, D_NORMAL, D_POS),
    BINARY(MAXIMUM, D_GRID, D_GRID0),
    /* reductions */
    REDUCE(SUM),
    REDUCE(SUMSQ),
    /* convolutions: x [N, C, H, W], w [O, C, k, k] */
    C2(CONV2D, "k1 s1", T_CONV(1, 0), IN(D_NORMAL, 4, 5, 6), PAR(D_NORMAL, 3, 4, 1, 1)),
    C2(CONV2D, "k1 s2", T_CONV(2, 0), IN(D_NORMAL, 3, 6, 6), PAR(D_NORMAL, 2, 3, 1, 1)),
    C2(CONV2D, "k3 s1 p1", T_CONV(1, 1), IN(D_NORMAL, 3, 6, 5), PAR(D_NORMAL, 4, 3, 3, 3)),
    C2(CONV2D, "k3 s2 p1 (odd size)", T_CONV(2, 1), IN(D_NORMAL, 3, 7, 6), PAR(D_NORMAL, 4, 3, 3, 3)),
    C2(CONV2D, "k3 s2 p1 (even size)", T_CONV(2, 1), IN(D_NORMAL, 4, 8, 8), PAR(D_NORMAL, 4, 4, 3, 3)),
    C2(CONV2D, "k3 s1 p0", T_CONV(1, 0), IN(D_NORMAL, 2, 5, 5), PAR(D_NORMAL, 3, 2, 3, 3)),
    C2X(CONV2D, "k3 s1 p1 C16 O8", T_CONV(1, 1), IN(D_NORMAL, 16, 8, 8), PAR(D_NORMAL, 8, 16, 3, 3), 0, 2),
    /* channels in whole k tiles of the tensor-core kernel (32): one tap a k tile */
    C2X(CONV2D, "k3 s1 p1 C32 O8", T_CONV(1, 1), IN(D_NORMAL, 32, 5, 6), PAR(D_NORMAL, 8, 32, 3, 3), 0, 2),
    C2X(CONV2D, "k3 s2 p1 C64 O5", T_CONV(2, 1), IN(D_NORMAL, 64, 5, 4), PAR(D_NORMAL, 5, 64, 3, 3), 0, 3),
    C2X(CONV2D, "k1 s1 C32 O3", T_CONV(1, 0), IN(D_NORMAL, 32, 3, 5), PAR(D_NORMAL, 3, 32, 1, 1), 0, 2),
    /* ... and whole rows of one sample a tile: where its tile has no split-K (the cost model's at batch
     * 128, a tile forced by tests/cli/cuda_emu.sh here) the tensor-core kernel reads x through a halo
     * tile (cuda_gemm_mma.h; two channel blocks, so the next block's halo is read beside the products;
     * 8 columns, so a fragment's 16 pixels span two rows), a 5×5 kernel's too */
    C2X(CONV2D, "k3 s1 p1 C64 O40 [N,64,8,8] (halo)", T_CONV(1, 1), IN(D_NORMAL, 64, 8, 8), PAR(D_NORMAL, 40, 64, 3, 3),
        0, 3),
    C2X(CONV2D, "k5 s1 p2 C32 O8 [N,32,16,4] (halo)", T_CONV(1, 2), IN(D_NORMAL, 32, 16, 4), PAR(D_NORMAL, 8, 32, 5, 5),
        0, 3),
    /* (a 128-pixel tile of the one above: two samples a tile; of this one: 408 rows of halo, 65 KB of
     * stages, past the default 48 KiB) */
    C2X(CONV2D, "k5 s1 p2 C32 O8 [N,32,4,64] (halo)", T_CONV(1, 2), IN(D_NORMAL, 32, 4, 64), PAR(D_NORMAL, 8, 32, 5, 5),
        0, 3),
    /* ... with an epilogue reading a per-sample, per-channel operand (the embedding's modulation) at the
     * element's coordinates */
    {.op = EDM_OP_CONV2D, .label = "-(k3 s1 p1 C32 O8 ·s[N,8,1,1])", .nin = 3,
     .in = {IN(D_NORMAL, 32, 4, 5), PAR(D_NORMAL, 8, 32, 3, 3), IN(D_NORMAL, 8, 1, 1)}, .nstep = 3,
     .step = {{.t = T_CONV(1, 1), .src = {0, 1}}, {.t = T(MUL), .src = {RES(0), 2}}, {.t = T(NEG), .src = {RES(1), 0}}},
     .flags = F_NO_BWD, .tol_scale = 2},
    /* ... reading a concatenation (the decoder's skip) or a slice at the element's coordinates */
    {.op = EDM_OP_CONV2D, .label = "-k3 s1 p1 of concat([N,32,4,5], [N,32,4,5])", .nin = 3,
     .in = {IN(D_NORMAL, 32, 4, 5), IN(D_WIDE, 32, 4, 5), PAR(D_NORMAL, 4, 64, 3, 3)}, .nstep = 3,
     .step = {{.t = T_CAT(1), .src = {0, 1}}, {.t = T_CONV(1, 1), .src = {RES(0), 2}}, {.t = T(NEG), .src = {RES(1), 0}}},
     .flags = F_NO_BWD, .tol_scale = 3},
    {.op = EDM_OP_CONV2D, .label = "-k3 s1 p1 of channels [8, 40) of [N,48,4,5]", .nin = 2,
     .in = {IN(D_NORMAL, 48, 4, 5), PAR(D_NORMAL, 4, 32, 3, 3)}, .nstep = 3,
     .step = {{.t = T_SLICE(1, 8, 32), .src = {0, 0}}, {.t = T_CONV(1, 1), .src = {RES(0), 1}}, {.t = T(NEG), .src = {RES(1), 0}}},
     .flags = F_NO_BWD, .tol_scale = 2},
    /* ... with a prologue reading a per-pixel operand (the pixel norm, then mp_silu's silu): fused, the
     * convolution reads it at the element's coordinates; forward only, as sampling runs it (with gradients
     * the backward pass reads the silu, so it is stored) */
    {.op = EDM_OP_CONV2D, .label = "-k3 s1 p1 C32 of silu(x / n[N,1,8,8]) (halo)", .nin = 3,
     .in = {IN(D_NORMAL, 32, 8, 8), IN(D_POS, 1, 8, 8), PAR(D_NORMAL, 6, 32, 3, 3)}, .nstep = 4,
     .step = {{.t = T(DIV), .src = {0, 1}},
              {.t = T(SILU), .src = {RES(0), 0}},
              {.t = T_CONV(1, 1), .src = {RES(1), 2}},
              {.t = T(NEG), .src = {RES(2), 0}}},
     .flags = F_NO_BWD, .tol_scale = 2},
    {.op = EDM_OP_CONV2D, .label = "-k3 s1 p1 of concat([N,32,8,8], [N,32,8,8]) (halo)", .nin = 3,
     .in = {IN(D_NORMAL, 32, 8, 8), IN(D_WIDE, 32, 8, 8), PAR(D_NORMAL, 4, 64, 3, 3)}, .nstep = 3,
     .step = {{.t = T_CAT(1), .src = {0, 1}}, {.t = T_CONV(1, 1), .src = {RES(0), 2}}, {.t = T(NEG), .src = {RES(1), 0}}},
     .flags = F_NO_BWD, .tol_scale = 3},
    {.op = EDM_OP_CONV2D, .label = "-k3 s1 p1 C32 of silu(x / n[N,1,H,W])", .nin = 3,
     .in = {IN(D_NORMAL, 32, 4, 5), IN(D_POS, 1, 4, 5), PAR(D_NORMAL, 6, 32, 3, 3)}, .nstep = 4,
     .step = {{.t = T(DIV), .src = {0, 1}},
              {.t = T(SILU), .src = {RES(0), 0}},
              {.t = T_CONV(1, 1), .src = {RES(1), 2}},
              {.t = T(NEG), .src = {RES(2), 0}}}, /* (an output's own step takes no prologue) */
     .flags = F_NO_BWD, .tol_scale = 2},
    /* conv2d's gradients directly (autodiff has no rule for them): dy [N, O, oh, ow], w; x, dy */
    C2X(CONV2D_BWD_DATA, "k3 s1 p1", T_BWD_DATA(1, 1, 6, 5), IN(D_NORMAL, 4, 6, 5), PAR(D_NORMAL, 4, 3, 3, 3),
        F_NO_BWD, 1),
    C2X(CONV2D_BWD_DATA, "k3 s2 p1", T_BWD_DATA(2, 1, 7, 6), IN(D_NORMAL, 4, 4, 3), PAR(D_NORMAL, 4, 3, 3, 3),
        F_NO_BWD, 1),
    /* ... dy through a halo tile (the flipped taps), as the forward's x above */
    C2X(CONV2D_BWD_DATA, "k3 s1 p1 O64 C40 [N,64,8,8] (halo)", T_BWD_DATA(1, 1, 8, 8), IN(D_NORMAL, 64, 8, 8),
        PAR(D_NORMAL, 64, 40, 3, 3), F_NO_BWD, 3),
    C2X(CONV2D_BWD_DATA, "k5 s1 p2 O32 C8 [N,32,16,4] (halo)", T_BWD_DATA(1, 2, 16, 4), IN(D_NORMAL, 32, 16, 4),
        PAR(D_NORMAL, 32, 8, 5, 5), F_NO_BWD, 3),
    C2X(CONV2D_BWD_DATA, "k1 s1", T_BWD_DATA(1, 0, 5, 6), IN(D_NORMAL, 3, 5, 6), PAR(D_NORMAL, 3, 4, 1, 1),
        F_NO_BWD, 1),
    C2X(CONV2D_BWD_DATA, "k3 s1 p0", T_BWD_DATA(1, 0, 5, 5), IN(D_NORMAL, 3, 3, 3), PAR(D_NORMAL, 3, 2, 3, 3),
        F_NO_BWD, 1),
    /* dy's channels in whole k tiles (32): one tap a k tile, as in the forward */
    C2X(CONV2D_BWD_DATA, "k3 s1 p1 O32", T_BWD_DATA(1, 1, 5, 6), IN(D_NORMAL, 32, 5, 6), PAR(D_NORMAL, 32, 3, 3, 3),
        F_NO_BWD, 2),
    C2X(CONV2D_BWD_DATA, "k3 s2 p1 O32", T_BWD_DATA(2, 1, 7, 6), IN(D_NORMAL, 32, 4, 3), PAR(D_NORMAL, 32, 5, 3, 3),
        F_NO_BWD, 2),
    C2X(CONV2D_BWD_DATA, "k1 s1 O64", T_BWD_DATA(1, 0, 5, 6), IN(D_NORMAL, 64, 5, 6), PAR(D_NORMAL, 64, 3, 1, 1),
        F_NO_BWD, 3),
    {.op = EDM_OP_CONV2D_BWD_DATA, .label = "-(k3 s1 p1 O32 + r[N,1,H,W])", .nin = 3,
     .in = {IN(D_NORMAL, 32, 4, 5), PAR(D_NORMAL, 32, 6, 3, 3), IN(D_NORMAL, 1, 4, 5)}, .nstep = 3,
     .step = {{.t = T_BWD_DATA(1, 1, 4, 5), .src = {0, 1}}, {.t = T(ADD), .src = {RES(0), 2}}, {.t = T(NEG), .src = {RES(1), 0}}},
     .flags = F_NO_BWD, .tol_scale = 2},
    {.op = EDM_OP_CONV2D_BWD_DATA, .label = "-k3 s1 p1 O32 of dy·s[N,1,H,W]", .nin = 3,
     .in = {IN(D_NORMAL, 32, 4, 5), IN(D_NORMAL, 1, 4, 5), PAR(D_NORMAL, 32, 6, 3, 3)}, .nstep = 3,
     .step = {{.t = T(MUL), .src = {0, 1}}, {.t = T_BWD_DATA(1, 1, 4, 5), .src = {RES(0), 2}}, {.t = T(NEG), .src = {RES(1), 0}}},
     .flags = F_NO_BWD, .tol_scale = 2},
    /* with prologues on both operands, reading per-pixel operands at the elements' coordinates */
    WGRAD_SILU("-k3 s1 p1 of silu(x / n[N,1,H,W]), dy·n", 4, 5),
    C2X(CONV2D_BWD_WEIGHT, "k3 s1 p1", T_BWD_WEIGHT(1, 1, 3), IN(D_NORMAL, 3, 6, 5), IN(D_NORMAL, 4, 6, 5),
        F_NO_BWD, 2),
    C2X(CONV2D_BWD_WEIGHT, "k3 s2 p1", T_BWD_WEIGHT(2, 1, 3), IN(D_NORMAL, 3, 7, 6), IN(D_NORMAL, 4, 4, 3),
        F_NO_BWD, 2),
    C2X(CONV2D_BWD_WEIGHT, "k1 s1", T_BWD_WEIGHT(1, 0, 1), IN(D_NORMAL, 4, 5, 6), IN(D_NORMAL, 3, 5, 6),
        F_NO_BWD, 2),
    C2X(CONV2D_BWD_WEIGHT, "k3 s1 p0", T_BWD_WEIGHT(1, 0, 3), IN(D_NORMAL, 2, 5, 5), IN(D_NORMAL, 3, 3, 3),
        F_NO_BWD, 2),
    /* a sample's pixels in whole k tiles of the tensor-core kernel (32): x read through a stage of its own
     * once a k tile (cuda_gemm_mma.h, edm_mma_wgrad_fits), its prologue with it: 8 columns (a tile's
     * pixels four rows), the 72 columns of C·k·k one block past its edge; a concatenation, 288 columns
     * (blocks starting mid-channel); 64 columns, 5×5 (a tile half a row, the next at column 32) */
    WGRAD_SILU("-k3 s1 p1 of silu(x / n[N,1,8,8]), dy·n (halo)", 8, 8),
    {.op = EDM_OP_CONV2D_BWD_WEIGHT, .label = "-k3 s1 p1 of concat([N,16,8,4], [N,16,8,4]) (halo)", .nin = 3,
     .in = {IN(D_NORMAL, 16, 8, 4), IN(D_WIDE, 16, 8, 4), IN(D_NORMAL, 5, 8, 4)}, .nstep = 3,
     .step = {{.t = T_CAT(1), .src = {0, 1}}, {.t = T_BWD_WEIGHT(1, 1, 3), .src = {RES(0), 2}},
              {.t = T(NEG), .src = {RES(1), 0}}},
     .flags = F_NO_BWD, .tol_scale = 3},
    C2X(CONV2D_BWD_WEIGHT, "k5 s1 p2 [N,4,4,64] (halo)", T_BWD_WEIGHT(1, 2, 5), IN(D_NORMAL, 4, 4, 64),
        IN(D_NORMAL, 3, 4, 64), F_NO_BWD, 3),
    /* matmul on the last two dims, batch dims broadcast */
    C2(MATMUL, "plain", T_MM(0, 0), IN(D_NORMAL, 3, 4), PAR(D_NORMAL, 4, 5)),
    C2(MATMUL, "trans_b (fully connected)", T_MM(0, 1), IN(D_NORMAL, 4), PAR(D_NORMAL, 3, 4)),
    C2(MATMUL, "trans_a", T_MM(1, 0), IN(D_NORMAL, 2, 4, 3), IN(D_NORMAL, 2, 4, 5)),
    C2(MATMUL, "trans_a trans_b", T_MM(1, 1), IN(D_NORMAL, 4, 3), PAR(D_NORMAL, 5, 4)),
    C2(MATMUL, "batch broadcast [N,2] by [2]", T_MM(0, 0), IN(D_NORMAL, 2, 3, 4), PAR(D_NORMAL, 2, 4, 5)),
    C2(MATMUL, "batch broadcast [N,2] by [1]", T_MM(0, 0), IN(D_NORMAL, 2, 3, 4), PAR(D_NORMAL, 1, 4, 2)),
    C2(MATMUL, "per-sample batched", T_MM(0, 0), IN(D_NORMAL, 3, 4), IN(D_NORMAL, 4, 5)),
    C2(MATMUL, "attention scores (trans_b)", T_MM(0, 1), IN(D_NORMAL, 2, 8, 16), IN(D_NORMAL, 2, 8, 16)),
    C2(MATMUL, "contraction over N (trans_a)", T_MM(1, 0), IN(D_NORMAL, 3), IN(D_NORMAL, 4)),
    C2X(MATMUL, "long K=256", T_MM(0, 0), IN(D_NORMAL, 3, 256), PAR(D_NORMAL, 256, 4), 0, 3),
    /* layout */
    C1(RESHAPE, "[N,2,3,4] to [N,6,4]", T_RESHAPE(NB, 6, 4), IN(D_NORMAL, 2, 3, 4)),
    C1(RESHAPE, "[N,2,3,4] to [N,24]", T_RESHAPE(NB, 24), IN(D_NORMAL, 2, 3, 4)),
    C1(RESHAPE, "param [4,6] to [2,3,4]", T_RESHAPE(2, 3, 4), PAR(D_NORMAL, 4, 6)),
    {.op = EDM_OP_RESHAPE, .label = "of a permute", .nin = 1, .in = {IN(D_NORMAL, 2, 3, 4)}, .nstep = 2,
     .step = {{.t = T_PERM(0, 2, 3, 1), .src = {0, 0}}, {.t = T_RESHAPE(NB, 12, 2), .src = {RES(0), 0}}}},
    C1(PERMUTE, "(0,2,3,1)", T_PERM(0, 2, 3, 1), IN(D_NORMAL, 2, 3, 4)),
    C1(PERMUTE, "(0,3,1,2)", T_PERM(0, 3, 1, 2), IN(D_NORMAL, 2, 3, 4)),
    C1(PERMUTE, "(0,1,3,2)", T_PERM(0, 1, 3, 2), IN(D_NORMAL, 2, 3, 4)),
    C1(PERMUTE, "param (2,0,1)", T_PERM(2, 0, 1), PAR(D_NORMAL, 3, 4, 5)),
    C1(PERMUTE, "rank 5 (0,4,2,1,3)", T_PERM(0, 4, 2, 1, 3), IN(D_NORMAL, 2, 3, 2, 3)),
    C2(CONCAT, "axis 1", T_CAT(1), IN(D_NORMAL, 2, 3), IN(D_NORMAL, 1, 3)),
    C2(CONCAT, "axis -1", T_CAT(-1), IN(D_NORMAL, 2, 3), IN(D_NORMAL, 2, 4)),
    C2(CONCAT, "axis 1 of [N,C,H,W] (skip)", T_CAT(1), IN(D_NORMAL, 2, 3, 4), IN(D_NORMAL, 3, 3, 4)),
    C2(CONCAT, "params axis 0", T_CAT(0), PAR(D_NORMAL, 2, 3), PAR(D_NORMAL, 4, 3)),
    C1(SLICE, "axis 1 [1,3)", T_SLICE(1, 1, 2), IN(D_NORMAL, 4, 3)),
    C1(SLICE, "axis 2 [0,3)", T_SLICE(2, 0, 3), IN(D_NORMAL, 2, 5)),
    C1(SLICE, "axis 2 [2,5)", T_SLICE(2, 2, 3), IN(D_NORMAL, 2, 5)),
    C1(SLICE, "axis 1 [2,5) of [N,6,3,2]", T_SLICE(1, 2, 3), IN(D_NORMAL, 6, 3, 2)),
    C1(SLICE, "param axis 0 [1,4)", T_SLICE(0, 1, 3), PAR(D_NORMAL, 5, 3)),
    C1(EXPAND, "[N,3,1] to [N,3,4]", T_EXPAND(NB, 3, 4), IN(D_NORMAL, 3, 1)),
    C1(EXPAND, "[N,1,4] to [N,5,4]", T_EXPAND(NB, 5, 4), IN(D_NORMAL, 1, 4)),
    C1(EXPAND, "[N,1,1,1] to [N,2,3,4]", T_EXPAND(NB, 2, 3, 4), IN(D_NORMAL, 1, 1, 1)),
    C1(EXPAND, "param [3,4] to [N,3,4]", T_EXPAND(NB, 3, 4), PAR(D_NORMAL, 3, 4)),
    C1(EXPAND, "param [1] to [N,3]", T_EXPAND(NB, 3), PAR(D_NORMAL, 1)),
    /* softmax, resampling, dropout */
    C1(SOFTMAX, "last axis", T_SOFTMAX(-1), IN(D_NORMAL, 2, 7)),
    C1(SOFTMAX, "axis 1", T_SOFTMAX(1), IN(D_NORMAL, 5, 3)),
    C1(SOFTMAX, "axis 1 of [N,4,3,2]", T_SOFTMAX(1), IN(D_WIDE, 4, 3, 2)),
    C1(SOFTMAX, "logits near +1000", T_SOFTMAX(-1), IN(D_HIGH, 3, 16)),
    C1(SOFTMAX, "logits near -1000", T_SOFTMAX(-1), IN(D_LOW, 3, 16)),
    C1X(SOFTMAX, "long axis (300)", T_SOFTMAX(-1), IN(D_NORMAL, 2, 300), 0, 2),
    C3_ATTN("[N,2,8,16] heads", IN(D_NORMAL, 2, 8, 16), IN(D_NORMAL, 2, 8, 16), IN(D_NORMAL, 2, 8, 16)),
    C3_ATTN("5 queries, 9 keys, v 3 wide", IN(D_NORMAL, 1, 4, 5), IN(D_WIDE, 1, 4, 9), IN(D_NORMAL, 1, 3, 9)),
    C3_ATTN("300 keys", IN(D_NORMAL, 1, 4, 260), IN(D_NORMAL, 1, 4, 300), IN(D_NORMAL, 1, 2, 300)),
    /* EDM2's head size (64): every k step and output tile of the tensor-core kernel, 2 query and 3 key tiles */
    C3_ATTN("d 64, 70 queries, 130 keys", IN(D_NORMAL, 2, 64, 70), IN(D_NORMAL, 2, 64, 130), IN(D_NORMAL, 2, 64, 130)),
    C3_ATTN("d 72 (padded to 80), v 24 wide", IN(D_NORMAL, 1, 72, 33), IN(D_NORMAL, 1, 72, 65), IN(D_NORMAL, 1, 24, 65)),
    C1(AVGPOOL2, "[N,2,4,6]", T(AVGPOOL2), IN(D_NORMAL, 2, 4, 6)),
    C1(AVGPOOL2, "[N,3,8,8]", T(AVGPOOL2), IN(D_NORMAL, 3, 8, 8)),
    C1(AVGPOOL2, "param [2,3,4,4]", T(AVGPOOL2), PAR(D_NORMAL, 2, 3, 4, 4)),
    C1(UPSAMPLE2, "[N,2,3,4]", T(UPSAMPLE2), IN(D_NORMAL, 2, 3, 4)),
    C1(UPSAMPLE2, "[N,1,5,5]", T(UPSAMPLE2), IN(D_NORMAL, 1, 5, 5)),
    C1X(DROPOUT, "training p=0.25 [N,64]", T_DROPOUT(0.25), IN(D_NORMAL, 64), F_TRAIN, 1),
    C1X(DROPOUT, "training p=0.5 [N,3,8,8]", T_DROPOUT(0.5), IN(D_NORMAL, 3, 8, 8), F_TRAIN, 1),
    C1(DROPOUT, "evaluation (identity)", T_DROPOUT(0.25), IN(D_NORMAL, 3, 5)),
};

#define NCASES (sizeof cases / sizeof cases[0])

/* The ops with a test of their own: test_op_<name>. */
#define OP_TESTS(X)                                                                                             \
    X(NEG, neg) X(EXP, exp) X(LOG, log) X(SQRT, sqrt) X(RSQRT, rsqrt) X(SIN, sin) X(COS, cos) X(SQUARE, square) \
    X(SIGMOID, sigmoid) X(SILU, silu) X(CLAMP, clamp) X(STEP, step) X(ADD, add) X(SUB, sub) X(MUL, mul)         \
    X(DIV, div) X(MAXIMUM, maximum) X(SUM, sum) X(SUMSQ, sumsq) X(CONV2D, conv2d) X(MATMUL, matmul)             \
    X(CONV2D_BWD_DATA, conv2d_bwd_data) X(CONV2D_BWD_WEIGHT, conv2d_bwd_weight) X(RESHAPE, reshape)             \
    X(PERMUTE, permute) X(CONCAT, concat) X(SLICE, slice) X(EXPAND, expand) X(SOFTMAX, softmax)                 \
    X(AVGPOOL2, avgpool2) X(UPSAMPLE2, upsample2) X(DROPOUT, dropout) X(ATTENTION, attention)

typedef struct {
    edm_op op;
    const char *name; /* the suffix of test_op_<name> */
} tested_op;

#define TESTED_OP_ROW(E, name) {EDM_OP_##E, #name},
static const tested_op tested_ops[] = {OP_TESTS(TESTED_OP_ROW)};
#undef TESTED_OP_ROW
#define NTESTED (sizeof tested_ops / sizeof tested_ops[0])

/* ------------------------------------------------------------------ building a case's graph */

static const char *operand_name(int i)
{
    static const char *const names[MAX_OPERANDS] = {"a", "b", "c"};
    return names[i];
}

/* Infers and adds n; its id, or -1 with st set. */
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

static int add_operands(edm_graph *g, const op_case *k, int *id, edm_status *st)
{
    for (int i = 0; i < k->nin; i++) {
        edm_node n = {.op = edm_shape_has_batch(&k->in[i].shape) ? EDM_OP_INPUT : EDM_OP_PARAM,
                      .shape = k->in[i].shape,
                      .name = operand_name(i)};
        if ((id[i] = add_node(g, n, st)) < 0)
            return -1;
    }
    return 0;
}

/* The steps and the output y; the id of y's value in *y. */
static int add_steps(edm_graph *g, const op_case *k, int *id, edm_status *st)
{
    for (int s = 0; s < k->nstep; s++) {
        edm_node n = k->step[s].t;
        for (int j = 0; j < edm_op_arity(n.op); j++) {
            int src = k->step[s].src[j];
            if (src < 0 || (src < MAX_OPERANDS && src >= k->nin) || src >= RES(s))
                return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "case table: bad source %d of step %d", src, s);
            n.input[j] = id[src];
        }
        if ((id[RES(s)] = add_node(g, n, st)) < 0)
            return -1;
    }
    edm_node out = {.op = EDM_OP_OUTPUT, .input = {id[RES(k->nstep - 1)]}, .name = "y"};
    return add_node(g, out, st) < 0 ? -1 : 0;
}

/* The case's graph, differentiated (unless F_NO_BWD) and verified; NULL with st set. */
static edm_graph *build_case(const op_case *k, edm_status *st)
{
    if (k->nin < 1 || k->nin > MAX_OPERANDS || k->nstep < 1 || k->nstep > MAX_STEPS) {
        edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "case table: bad operand or step count");
        return NULL;
    }
    edm_graph *g = edm_graph_new();
    if (!g) {
        edm_nomem(st);
        return NULL;
    }
    int id[MAX_OPERANDS + MAX_STEPS];
    int rc = add_operands(g, k, id, st);
    if (rc == 0)
        rc = add_steps(g, k, id, st);
    if (rc == 0 && !(k->flags & F_NO_BWD)) {
        const char *wrt[MAX_OPERANDS];
        int nwrt = 0;
        for (int i = 0; i < k->nin; i++)
            if (edm_shape_has_batch(&k->in[i].shape))
                wrt[nwrt++] = operand_name(i);
        rc = edm_pass_autodiff(g, wrt, nwrt, st);
    }
    if (rc == 0)
        rc = edm_pass_verify(g, st);
    if (rc != 0) {
        edm_graph_free(g);
        return NULL;
    }
    return g;
}

/* ------------------------------------------------------------------ operand values */

typedef struct {
    const char *name; /* owned by the graph */
    double *data;
    int64_t n;
} leaf_value;

typedef struct {
    int n;
    leaf_value v[MAX_LEAVES];
} leaf_set;

static void leaf_set_free(leaf_set *ls)
{
    for (int i = 0; i < ls->n; i++)
        free(ls->v[i].data);
    ls->n = 0;
}

static int64_t bound_numel(const edm_shape *s, int64_t batch)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= s->dim[i] == EDM_DIM_BATCH ? batch : s->dim[i];
    return n;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static double shaped(dist d, double z)
{
    switch (d) {
    case D_WIDE: return 8 * z;
    case D_POS: return exp(0.6 * z);
    case D_HIGH: return 1000 + 40 * z;
    case D_LOW: return -1000 + 40 * z;
    case D_GRID: return 0.125 + 0.25 * floor(2 * z);
    case D_GRID0: return 0.25 * floor(2 * z + 0.5);
    case D_NORMAL: break;
    }
    return z;
}

/* The distribution of a leaf: the operand's, N(0, 1) for the seeds grad.*. */
static dist leaf_dist(const op_case *k, const char *name)
{
    for (int i = 0; i < k->nin; i++)
        if (strcmp(name, operand_name(i)) == 0)
            return k->in[i].d;
    return D_NORMAL;
}

/* Values for every input and parameter of g, rounded to float so that both
 * backends see exactly the same numbers. */
static int make_leaves(const edm_graph *g, const op_case *k, int64_t batch, leaf_set *ls, edm_status *st)
{
    ls->n = 0;
    for (int id = 0; id < edm_graph_count(g); id++) {
        const edm_node *n = edm_graph_node(g, id);
        if (n->op != EDM_OP_INPUT && n->op != EDM_OP_PARAM && n->op != EDM_OP_BUFFER)
            continue;
        if (ls->n == MAX_LEAVES)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "more than %d leaves", MAX_LEAVES);
        leaf_value *v = &ls->v[ls->n];
        v->name = n->name;
        v->n = bound_numel(&n->shape, batch);
        v->data = malloc(sizeof(double) * (size_t)(v->n > 0 ? v->n : 1));
        if (!v->data)
            return edm_nomem(st);
        ls->n++;
        edm_rng r = edm_rng_make(fnv1a(k->label) ^ (uint64_t)k->op, n->name);
        edm_rng_normal_f64(&r, 0, v->data, v->n);
        dist d = leaf_dist(k, n->name);
        for (int64_t i = 0; i < v->n; i++)
            v->data[i] = (double)(float)shaped(d, v->data[i]);
    }
    return 0;
}

/* ------------------------------------------------------------------ running a backend */

typedef struct {
    int n;
    const char *name[MAX_OUTPUTS]; /* owned by the graph */
    double *data[MAX_OUTPUTS];
    int64_t numel[MAX_OUTPUTS];
} results;

static void results_free(results *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->data[i]);
    r->n = 0;
}

static int set_leaves(edm_backend *b, const leaf_set *ls, edm_status *st)
{
    for (int i = 0; i < ls->n; i++)
        if (edm_backend_set_f64(b, ls->v[i].name, ls->v[i].data, ls->v[i].n, st) != 0)
            return -1;
    return 0;
}

/* Reads every output of g, in node order. */
static int get_outputs(edm_backend *b, const edm_graph *g, results *r, edm_status *st)
{
    r->n = 0;
    for (int id = 0; id < edm_graph_count(g); id++) {
        const edm_node *n = edm_graph_node(g, id);
        if (n->op != EDM_OP_OUTPUT)
            continue;
        if (r->n == MAX_OUTPUTS)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "more than %d outputs", MAX_OUTPUTS);
        int node = edm_backend_find(b, EDM_OP_OUTPUT, n->name);
        int64_t numel = node >= 0 ? edm_backend_numel(b, node) : -1;
        if (numel < 0)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "output %s not found", n->name);
        double *d = malloc(sizeof(double) * (size_t)(numel > 0 ? numel : 1));
        if (!d)
            return edm_nomem(st);
        r->name[r->n] = n->name;
        r->data[r->n] = d;
        r->numel[r->n] = numel;
        r->n++;
        if (edm_backend_get_f64(b, node, d, numel, st) != 0)
            return -1;
    }
    return 0;
}

static int run_backend(const edm_graph *g, const edm_backend_options *o, int64_t batch, const leaf_set *ls,
                       results *r, edm_status *st)
{
    r->n = 0;
    edm_backend *b = edm_backend_new(g, batch, o, st);
    if (!b)
        return -1;
    edm_backend_set_seed(b, DROPOUT_SEED);
    int rc = set_leaves(b, ls, st);
    if (rc == 0)
        rc = edm_backend_run(b, st);
    if (rc == 0)
        rc = get_outputs(b, g, r, st);
    edm_backend_free(b);
    return rc;
}

/* ------------------------------------------------------------------ comparing */

/* max |t - r| / max(1, max |r|); inf when either side is not finite. */
static double scaled_error(const double *t, const double *r, int64_t n)
{
    double scale = 1, worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(r[i]) || !isfinite(t[i]))
            return INFINITY;
        scale = fabs(r[i]) > scale ? fabs(r[i]) : scale;
        double d = fabs(t[i] - r[i]);
        worst = d > worst ? d : worst;
    }
    return worst / scale;
}

typedef struct {
    double fwd, bwd; /* bwd < 0: no gradient outputs */
} case_errors;

static int compare(const results *t, const results *r, case_errors *e, edm_status *st)
{
    e->fwd = -1;
    e->bwd = -1;
    if (t->n != r->n)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%d outputs under test, %d in the reference", t->n, r->n);
    for (int i = 0; i < r->n; i++) {
        if (t->numel[i] != r->numel[i] || strcmp(t->name[i], r->name[i]) != 0)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "output %s: %lld elements, reference %lld", r->name[i],
                            (long long)t->numel[i], (long long)r->numel[i]);
        double err = scaled_error(t->data[i], r->data[i], r->numel[i]);
        double *slot = strcmp(r->name[i], "y") == 0 ? &e->fwd : &e->bwd;
        *slot = err > *slot ? err : *slot;
    }
    if (e->fwd < 0)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "no output y");
    return 0;
}

/* Training-mode dropout must really drop (some, not all) in the reference,
 * or comparing masks proves nothing. */
static int check_dropout_mask(const results *r, edm_status *st)
{
    for (int i = 0; i < r->n; i++) {
        if (strcmp(r->name[i], "y") != 0)
            continue;
        int64_t zeros = 0;
        for (int64_t j = 0; j < r->numel[i]; j++)
            zeros += r->data[i][j] == 0;
        if (zeros == 0 || zeros == r->numel[i])
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "dropout dropped %lld of %lld", (long long)zeros,
                            (long long)r->numel[i]);
    }
    return 0;
}

/* Builds, runs both sides and measures; -1 with st set when something could not run. */
static int measure_case(const config *cfg, const op_case *k, case_errors *e, edm_status *st)
{
    edm_graph *g = build_case(k, st);
    if (!g)
        return -1;
    int training = (k->flags & F_TRAIN) != 0;
    edm_backend_options ro = reference_options(training), to = test_options(cfg, training);
    leaf_set ls = {0};
    results ref = {0}, got = {0};
    int rc = make_leaves(g, k, BATCH, &ls, st);
    if (rc == 0)
        rc = run_backend(g, &ro, BATCH, &ls, &ref, st);
    if (rc == 0 && training)
        rc = check_dropout_mask(&ref, st);
    if (rc == 0)
        rc = run_backend(g, &to, BATCH, &ls, &got, st);
    if (rc == 0)
        rc = compare(&got, &ref, e, st);
    results_free(&got);
    results_free(&ref);
    leaf_set_free(&ls);
    edm_graph_free(g);
    return rc;
}

/* Runs one case and reports it; 1 when it failed. */
static int run_case(const config *cfg, const op_case *k)
{
    edm_status st;
    edm_status_init(&st);
    case_errors e;
    double tol = cfg->tol * (k->tol_scale > 0 ? k->tol_scale : 1);
    if (measure_case(cfg, k, &e, &st) != 0) {
        print_message("# op %s %s: error: %s\n", edm_op_name(k->op), k->label, st.msg);
        return 1;
    }
    char bwd[32];
    if (e.bwd >= 0)
        snprintf(bwd, sizeof bwd, "%.1e", e.bwd);
    else
        snprintf(bwd, sizeof bwd, "n/a");
    int ok = e.fwd <= tol && e.bwd <= tol;
    print_message("# op %s %s: fwd %.1e bwd %s (tol %.0e)%s\n", edm_op_name(k->op), k->label, e.fwd, bwd, tol,
                  ok ? "" : "  FAILED");
    return !ok;
}

static void run_op_cases(void **state, edm_op op)
{
    const config *cfg = *state;
    if (op == EDM_OP_ATTENTION && cfg->device == EDM_DEVICE_CUDA && !cfg->fuse) {
        print_message("# attention not run: on CUDA it runs only in fused plans (EDMC_TEST_GEMM=fused)\n");
        return;
    }
    int ran = 0, failed = 0;
    for (size_t i = 0; i < NCASES; i++)
        if (cases[i].op == op) {
            ran++;
            failed += run_case(cfg, &cases[i]);
        }
    if (ran == 0)
        print_error("no case for %s\n", edm_op_name(op));
    assert_true(ran > 0);
    if (failed)
        print_error("%s: %d of %d cases failed on %s\n", edm_op_name(op), failed, ran, cfg->label);
    assert_int_equal(failed, 0);
}

#define DEFINE_OP_TEST(E, name) \
    static void test_op_##name(void **state) { run_op_cases(state, EDM_OP_##E); }
OP_TESTS(DEFINE_OP_TEST)
#undef DEFINE_OP_TEST

/* ------------------------------------------------------------------ parameters changed between runs */

/* conv2d(x, w / g) with a per-output-channel g: fused, the wn rule's scale
 * 1/g is a weights step (and, on CUDA, the taps rule's copy of w). */
static const op_case WEIGHTS_CASE = {
    .op = EDM_OP_CONV2D, .label = "k3 s1 p1 C32 O8 of w / g[8,1,1,1]", .nin = 3,
    .in = {IN(D_NORMAL, 32, 4, 5), PAR(D_NORMAL, 8, 32, 3, 3), PAR(D_POS, 8, 1, 1, 1)}, .nstep = 2,
    .step = {{.t = T(DIV), .src = {1, 2}}, {.t = T_CONV(1, 1), .src = {0, RES(0)}}}, .flags = F_NO_BWD, .tol_scale = 2};

/* One backend run three times: on the case's values, then with every
 * parameter changed, then again.  A forward plan's weights groups may be
 * skipped while the parameters stay the same (edm_plan_weights_groups): the
 * second run must see the new parameters (as the reference does on them),
 * the third give the second's numbers. */
static int weights_changed(const config *cfg, const op_case *k, double *err, int *same, int *moved, edm_status *st)
{
    edm_graph *g = build_case(k, st);
    if (!g)
        return -1;
    edm_backend_options ro = reference_options(0), to = test_options(cfg, 0);
    leaf_set ls = {0};
    results r1 = {0}, r2 = {0}, r3 = {0}, ref = {0};
    int rc = make_leaves(g, k, BATCH, &ls, st);
    edm_backend *b = rc == 0 ? edm_backend_new(g, BATCH, &to, st) : NULL;
    if (rc == 0 && !b)
        rc = -1;
    if (rc == 0)
        rc = set_leaves(b, &ls, st);
    if (rc == 0)
        rc = edm_backend_run(b, st);
    if (rc == 0)
        rc = get_outputs(b, g, &r1, st);
    double factor = -0.5; /* the parameters times -1/2, 2, -1/2, ...: exact, and no two cancel */
    for (int i = 0; rc == 0 && i < ls.n; i++)
        if (edm_graph_node(g, edm_graph_find_leaf(g, ls.v[i].name))->op == EDM_OP_PARAM) {
            for (int64_t j = 0; j < ls.v[i].n; j++)
                ls.v[i].data[j] *= factor;
            factor = factor < 0 ? 2.0 : -0.5;
            rc = edm_backend_set_f64(b, ls.v[i].name, ls.v[i].data, ls.v[i].n, st);
        }
    if (rc == 0)
        rc = edm_backend_run(b, st);
    if (rc == 0)
        rc = get_outputs(b, g, &r2, st);
    if (rc == 0)
        rc = edm_backend_run(b, st);
    if (rc == 0)
        rc = get_outputs(b, g, &r3, st);
    if (rc == 0)
        rc = run_backend(g, &ro, BATCH, &ls, &ref, st);
    if (rc == 0) {
        case_errors e;
        rc = compare(&r2, &ref, &e, st);
        *err = e.fwd;
        *same = r2.numel[0] == r3.numel[0] && memcmp(r2.data[0], r3.data[0], sizeof(double) * (size_t)r2.numel[0]) == 0;
        *moved = r1.numel[0] == r2.numel[0] && memcmp(r1.data[0], r2.data[0], sizeof(double) * (size_t)r1.numel[0]) != 0;
    }
    edm_backend_free(b);
    results_free(&r1);
    results_free(&r2);
    results_free(&r3);
    results_free(&ref);
    leaf_set_free(&ls);
    edm_graph_free(g);
    return rc;
}

static void test_parameters_changed(void **state)
{
    const config *cfg = *state;
    const op_case *k = &WEIGHTS_CASE;
    edm_status st;
    edm_status_init(&st);
    double err = 0;
    int same = 0, moved = 0;
    if (weights_changed(cfg, k, &err, &same, &moved, &st) != 0)
        print_error("%s\n", st.msg);
    double tol = cfg->tol * (k->tol_scale > 0 ? k->tol_scale : 1);
    print_message("# conv2d %s, the parameters changed between runs: %.1e against the reference (tol %.0e); "
                  "a third run %s; the change %s the output\n",
                  k->label, err, tol, same ? "the same" : "DIFFERENT", moved ? "moved" : "did NOT move");
    assert_true(err <= tol);
    assert_true(same);
    assert_true(moved);
}

/* ------------------------------------------------------------------ coverage */

static int has_test(edm_op op)
{
    for (size_t i = 0; i < NTESTED; i++)
        if (tested_ops[i].op == op)
            return strcmp(tested_ops[i].name, edm_op_name(op)) == 0;
    return 0;
}

static int has_case(edm_op op)
{
    for (size_t i = 0; i < NCASES; i++)
        if (cases[i].op == op)
            return 1;
    return 0;
}

/* Every op of EDM_OPS but the leaves and output has its test_op_<name> and
 * at least one case; every case belongs to a test. */
static void test_every_op_has_a_case(void **state)
{
    (void)state;
    int missing = 0;
    for (int op = 0; op < EDM_OP_COUNT; op++) {
        if (edm_op_class_of((edm_op)op) == EDM_CLASS_LEAF || op == EDM_OP_OUTPUT)
            continue;
        if (!has_test((edm_op)op) || !has_case((edm_op)op)) {
            print_error("op %s: %s\n", edm_op_name((edm_op)op), has_test((edm_op)op) ? "no case" : "no test_op_ test");
            missing++;
        }
    }
    for (size_t i = 0; i < NCASES; i++)
        if (!has_test(cases[i].op)) {
            print_error("case %s %s belongs to no test\n", edm_op_name(cases[i].op), cases[i].label);
            missing++;
        }
    assert_int_equal(missing, 0);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    cmocka_set_message_output(CM_OUTPUT_TAP);
    const char *filter = getenv("EDMC_TEST_FILTER");
    if (filter && filter[0])
        cmocka_set_test_filter(filter);
    config cfg;
    char err[256];
    if (config_from_env(&cfg, err, sizeof err) != 0) {
        printf("Bail out! %s\n", err);
        return 1;
    }
    if (cfg.device == EDM_DEVICE_CUDA) {
        char desc[256];
        edm_status st;
        edm_status_init(&st);
        if (edm_cuda_probe(desc, sizeof desc, &st) != 0) {
            printf("# no CUDA device: %s\n", st.msg);
            return 77;
        }
        printf("# CUDA device: %s\n", desc);
    }
    printf("# backend under test: %s; reference: cpu f64; %zu cases; error = max|t - r| / max(1, max|r|), "
           "tol %.0e x case scale\n",
           cfg.label, NCASES, cfg.tol);
#define REGISTER_OP_TEST(E, name) cmocka_unit_test_prestate(test_op_##name, &cfg),
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_has_a_case),
        OP_TESTS(REGISTER_OP_TEST)
        cmocka_unit_test_prestate(test_parameters_changed, &cfg),
    };
#undef REGISTER_OP_TEST
    return cmocka_run_group_tests(tests, NULL, NULL);
}
