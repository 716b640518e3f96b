/* CUDA C code generation (see cuda_codegen.h).  The index arithmetic mirrors
 * runtime/backend_cpu.c's plans, so both backends read the same elements. */
#include "config.h"

#include "codegen/cuda_codegen.h"
#include "codegen/cuda_attention_mma.h"
#include "codegen/cuda_gemm_mma.h"
#include "codegen/cuda_source_split.h"
#include "codegen/cuda_step_literals.h"
#include "codegen/text.h"

#include "compiler/ew_math.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A float constant as CUDA C: exact (9 significant digits round-trip), with
 * the non-finite values as bit patterns. */
static void lit_f32(char *out, size_t size, double v)
{
    float f = (float)v;
    if (isnan(f) || isinf(f)) {
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        snprintf(out, size, "__int_as_float(0x%08xU)", (unsigned)bits);
        return;
    }
    char num[48];
    snprintf(num, sizeof num, "%.9g", (double)f);
    snprintf(out, size, "%s%sf", num, strpbrk(num, ".eE") ? "" : ".0");
}

static void lit_f64(char *out, size_t size, double v)
{
    if (isnan(v) || isinf(v)) {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        snprintf(out, size, "__longlong_as_double(0x%016llxLL)", (unsigned long long)bits);
        return;
    }
    char num[48];
    snprintf(num, sizeof num, "%.17g", v);
    snprintf(out, size, "%s%s", num, strpbrk(num, ".eE") ? "" : ".0");
}

/* ------------------------------------------------------------------ bound shapes */

typedef struct {
    int rank;
    int64_t dim[EDM_MAX_RANK];
    int64_t numel;
} bshape;

static bshape bind(const edm_shape *s, int64_t batch)
{
    bshape b = {.rank = s->rank, .numel = 1};
    for (int i = 0; i < s->rank; i++) {
        b.dim[i] = s->dim[i] == EDM_DIM_BATCH ? batch : s->dim[i];
        b.numel *= b.dim[i];
    }
    return b;
}

static int same_dims(const bshape *a, const bshape *b)
{
    return a->rank == b->rank && memcmp(a->dim, b->dim, sizeof a->dim[0] * (size_t)a->rank) == 0;
}

static void strides_of(const bshape *s, int64_t *stride)
{
    int64_t acc = 1;
    for (int i = s->rank - 1; i >= 0; i--) {
        stride[i] = acc;
        acc *= s->dim[i];
    }
}

static int64_t prod(const bshape *s, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++)
        p *= s->dim[i];
    return p;
}

/* Output-index decomposition with per-operand strides: `nops` operands, index
 * variable names in `vars`; dims/strides already coalesced, outermost first. */
typedef struct {
    int rank;
    int64_t dim[EDM_MAX_RANK];
    int64_t s[2][EDM_MAX_RANK];
} index_plan;

/* Right-aligned numpy broadcasting of a (and b) against y, size-1 dims
 * dropped, adjacent dims merged where contiguous for all operands. */
/* s[i]: the stride in a of dimension i of y when a is broadcast to y
 * (numpy's right-aligned rule), 0 where a repeats along it. */
static void broadcast_strides(const bshape *y, const bshape *a, int64_t *s)
{
    int64_t stra[EDM_MAX_RANK];
    strides_of(a, stra);
    for (int i = 0; i < y->rank; i++) {
        int ia = a->rank - y->rank + i;
        s[i] = ia >= 0 && a->dim[ia] != 1 ? stra[ia] : 0;
    }
}

static void plan_broadcast(const bshape *y, const bshape *a, const bshape *b, index_plan *p)
{
    int r = y->rank;
    int64_t sa_full[EDM_MAX_RANK], sb_full[EDM_MAX_RANK];
    broadcast_strides(y, a, sa_full);
    broadcast_strides(y, b, sb_full);
    p->rank = 0;
    for (int i = 0; i < r; i++) {
        if (y->dim[i] == 1)
            continue;
        int q = p->rank - 1;
        if (q >= 0 && p->s[0][q] == sa_full[i] * y->dim[i] && p->s[1][q] == sb_full[i] * y->dim[i]) {
            p->dim[q] *= y->dim[i];
            p->s[0][q] = sa_full[i];
            p->s[1][q] = sb_full[i];
        } else {
            p->dim[p->rank] = y->dim[i];
            p->s[0][p->rank] = sa_full[i];
            p->s[1][p->rank] = sb_full[i];
            p->rank++;
        }
    }
}

/* Emits `long long v0 = …, v1 = …;` computing each operand's offset from the
 * linear index `idx`. */
static void emit_index(sbuf *b, const index_plan *p, int nops, const char *const *vars, const char *idx)
{
    int trivial[2], zero[2];
    for (int k = 0; k < nops; k++) {
        /* offset == idx when the plan is one contiguous dim; 0 when broadcast along all */
        trivial[k] = p->rank == 1 && p->s[k][0] == 1;
        zero[k] = 1;
        for (int d = 0; d < p->rank; d++)
            zero[k] &= p->s[k][d] == 0;
        trivial[k] &= !zero[k];
    }
    for (int k = 0; k < nops; k++) {
        if (zero[k])
            sb_printf(b, "        const edm_ix %s = 0;\n", vars[k]);
        else if (trivial[k])
            sb_printf(b, "        const edm_ix %s = %s;\n", vars[k], idx);
        else
            sb_printf(b, "        edm_ix %s = 0;\n", vars[k]);
    }
    int need = 0;
    for (int k = 0; k < nops; k++)
        need |= !trivial[k] && !zero[k];
    if (!need)
        return;
    sb_printf(b, "        {\n            edm_ix r_ = %s, q_;\n", idx);
    for (int d = p->rank - 1; d >= 0; d--) {
        int used = 0;
        for (int k = 0; k < nops; k++)
            used |= !trivial[k] && !zero[k] && p->s[k][d] != 0;
        if (d > 0 && used)
            sb_printf(b, "            q_ = r_ %% %lld_ix; r_ /= %lld_ix;\n", (long long)p->dim[d], (long long)p->dim[d]);
        else if (d > 0)
            sb_printf(b, "            r_ /= %lld_ix;\n", (long long)p->dim[d]);
        else if (used)
            sb_printf(b, "            q_ = r_;\n");
        for (int k = 0; k < nops; k++)
            if (!trivial[k] && !zero[k] && p->s[k][d] != 0)
                sb_printf(b, "            %s += q_ * %lld_ix;\n", vars[k], (long long)p->s[k][d]);
    }
    sb_puts(b, "        }\n");
}

/* Emits `const edm_ix var = …;`: the offset in a (broadcast to y, numpy's
 * right-aligned rule) of the element of y at coordinates d0_, d1_, ….  One
 * multiply-add a dimension a does not broadcast along, no division: a
 * coordinate that several loads share is then one expression to the compiler. */
static void emit_index_at(sbuf *b, const bshape *y, const bshape *a, const char *var)
{
    int64_t s[EDM_MAX_RANK];
    broadcast_strides(y, a, s);
    sb_printf(b, "        const edm_ix %s = 0", var);
    for (int i = 0; i < y->rank; i++)
        if (s[i] != 0)
            sb_printf(b, " + d%d_ * %lld_ix", i, (long long)s[i]);
    sb_puts(b, ";\n");
}

/* ------------------------------------------------------------------ kernels */

/* The largest split-K workspace any kernel of a module needs (cuda_gemm_mma.h). */
typedef struct {
    int64_t floats, counts;
} mma_need;

typedef struct {
    const edm_graph *g;
    const edm_cuda_options *opt;
    int id;
    const edm_node *n;
    bshape y, a, b;       /* bound shapes of the value and its inputs */
    edm_dtype ty, ta, tb; /* their storage types (f32 for absent inputs) */
    edm_dtype mma;        /* a contraction's tensor-core operand type (f16, bf16), or f32: CUDA cores */
    mma_need *ws;     /* the module's split-K workspace, grown to what its kernels need */
    edm_cuda_launch *L;
    int a_raw; /* a fused step's weight operand read as stored, in the product's type: cp.async (conv_a_async) */
} node_ctx;

/* The device type of a storage dtype (the preamble defines h16 and b16). */
static const char *ctype(edm_dtype t) { return t == EDM_F16 ? "h16" : t == EDM_BF16 ? "b16" : "float"; }

#define BLOCK 256
#define MAX_GRID (1u << 20)

static unsigned grid_for(int64_t work)
{
    int64_t g = (work + BLOCK - 1) / BLOCK;
    if (g < 1)
        g = 1;
    return g > (int64_t)MAX_GRID ? MAX_GRID : (unsigned)g;
}

static void launch_1d(edm_cuda_launch *L, int64_t work)
{
    L->grid[0] = grid_for(work);
    L->grid[1] = L->grid[2] = 1;
    L->block[0] = BLOCK;
    L->block[1] = L->block[2] = 1;
}

/* What a kernel's __launch_bounds__ add to its block size: for a tensor-core
 * GEMM (a contraction whose operands are mma, not attention, whose kernel is
 * its own) on tile t, two blocks an SM as the tile cost model counts them
 * (cuda_gemm_mma.h): at most 128 registers a thread; or one, where the tile
 * says so. */
static const char *min_blocks(edm_dtype mma, const edm_node *n, edm_mma_tile t)
{
    if (mma == EDM_F32 || n->op == EDM_OP_ATTENTION)
        return "";
    return t.one_block ? ", 1" : ", 2";
}

/* The signature of every node kernel, with the concrete types of the value
 * and its inputs; KNAME is replaced by the name. */
static void emit_head(const node_ctx *c, sbuf *b, const char *extra)
{
    sb_printf(b,
              "extern \"C\" __global__ void __launch_bounds__(%d%s) KNAME(%s *__restrict__ y, const %s *__restrict__ a, "
              "const %s *__restrict__ b, const unsigned long long *__restrict__ seed)\n{\n%s",
              BLOCK, min_blocks(c->mma, c->n, c->L->mma_tile), ctype(c->ty), ctype(c->ta), ctype(c->tb), extra);
}

/* emit_head with a tensor-core kernel's shared-memory declarations, which
 * it consumes (their allocation failure carries over into b). */
static void emit_head_shared(const node_ctx *c, sbuf *b, sbuf *shared)
{
    emit_head(c, b, shared->p ? shared->p : "");
    b->oom |= shared->oom;
    free(shared->p);
    *shared = (sbuf){0};
}

/* The elementwise math of compiler/ew_math.h as CUDA C text (the names
 * expanded before stringifying), in x (unary; clamp also reads lo and hi,
 * declared by unary_bounds) or u, v (binary). */
#define EW_EXP expf
#define EW_LOG logf
#define EW_SQRT sqrtf
#define EW_SIN sinf
#define EW_COS cosf
#define EW_ONE 1.0f
#define EW_ZERO 0.0f
#define EW_SIGMOID(x) EDM_SIGMOID_MATH(x, expf)
#define EW_STR(e) #e
#define EW_XSTR(e) EW_STR(e)

static const char *unary_expr(const edm_node *n)
{
    switch (n->op) {
#define EW_UNARY_TEXT(op, simd, expr) \
    case EDM_OP_##op:                 \
        return EW_XSTR(expr);
        EDM_UNARY_MATH(EW_UNARY_TEXT)
#undef EW_UNARY_TEXT
    default: return NULL;
    }
}

static const char *binary_expr(edm_op op)
{
    switch (op) {
#define EW_BINARY_TEXT(o, simd, expr) \
    case EDM_OP_##o:                  \
        return EW_XSTR(expr);
        EDM_BINARY_MATH(EW_BINARY_TEXT)
#undef EW_BINARY_TEXT
    default: return NULL;
    }
}

/* "const float lo = …, hi = …; " for clamp, "" otherwise. */
static const char *unary_bounds(const edm_node *n, char *buf, size_t size)
{
    char lo[64], hi[64];
    if (n->op != EDM_OP_CLAMP)
        return "";
    lit_f32(lo, sizeof lo, n->attr.clamp.lo);
    lit_f32(hi, sizeof hi, n->attr.clamp.hi);
    snprintf(buf, size, "const float lo = %s, hi = %s; ", lo, hi);
    return buf;
}

static void gen_fill(node_ctx *c, sbuf *b)
{
    char v[64];
    lit_f32(v, sizeof v, c->n->attr.constant.value);
    emit_head(c, b, "");
    sb_printf(b, "    EDM_LOOP(%lld_ix) st(y, i, %s);\n}\n", (long long)c->y.numel, v);
    launch_1d(c->L, c->y.numel);
}

static void gen_unary(node_ctx *c, sbuf *b)
{
    char buf[160];
    emit_head(c, b, "");
    sb_printf(b, "    EDM_LOOP(%lld_ix) {\n        %sconst float x = ld(a, i);\n        st(y, i, %s);\n    }\n}\n",
              (long long)c->y.numel, unary_bounds(c->n, buf, sizeof buf), unary_expr(c->n));
    launch_1d(c->L, c->y.numel);
}

static void gen_binary(node_ctx *c, sbuf *b)
{
    static const char *const vars[] = {"ia", "ib"};
    const char *expr = binary_expr(c->n->op);
    index_plan p;
    plan_broadcast(&c->y, &c->a, &c->b, &p);
    emit_head(c, b, "");
    sb_printf(b, "    EDM_LOOP(%lld_ix) {\n", (long long)c->y.numel);
    emit_index(b, &p, 2, vars, "i");
    sb_printf(b, "        const float u = ld(a, ia), v = ld(b, ib);\n        st(y, i, %s);\n    }\n}\n", expr);
    launch_1d(c->L, c->y.numel);
}

static void gen_expand(node_ctx *c, sbuf *b)
{
    static const char *const vars[] = {"ia", "ib"};
    index_plan p;
    plan_broadcast(&c->y, &c->a, &c->a, &p);
    emit_head(c, b, "");
    sb_printf(b, "    EDM_LOOP(%lld_ix) {\n", (long long)c->y.numel);
    emit_index(b, &p, 1, vars, "i");
    sb_puts(b, "        st(y, i, ld(a, ia));\n    }\n}\n");
    launch_1d(c->L, c->y.numel);
}

static void gen_permute(node_ctx *c, sbuf *b)
{
    static const char *const vars[] = {"ia", "ib"};
    int64_t stride[EDM_MAX_RANK];
    strides_of(&c->a, stride);
    index_plan p = {.rank = 0};
    for (int i = 0; i < c->y.rank; i++) {
        if (c->y.dim[i] == 1)
            continue;
        int64_t s = stride[c->n->attr.permute.perm[i]];
        int q = p.rank - 1;
        if (q >= 0 && p.s[0][q] == s * c->y.dim[i]) {
            p.dim[q] *= c->y.dim[i];
            p.s[0][q] = s;
        } else {
            p.dim[p.rank] = c->y.dim[i];
            p.s[0][p.rank] = s;
            p.s[1][p.rank] = 0;
            p.rank++;
        }
    }
    emit_head(c, b, "");
    sb_printf(b, "    EDM_LOOP(%lld_ix) {\n", (long long)c->y.numel);
    emit_index(b, &p, 1, vars, "i");
    sb_puts(b, "        st(y, i, ld(a, ia));\n    }\n}\n");
    launch_1d(c->L, c->y.numel);
}

static void gen_concat(node_ctx *c, sbuf *b)
{
    int ax = c->n->attr.concat.axis;
    int64_t inner = prod(&c->y, ax + 1, c->y.rank);
    long long la = (long long)c->a.dim[ax] * inner, lb = (long long)c->b.dim[ax] * inner,
              ly = (long long)c->y.dim[ax] * inner;
    emit_head(c, b, "");
    sb_printf(b,
              "    EDM_LOOP(%lld_ix) {\n        const edm_ix o = i / %lld_ix, j = i %% %lld_ix;\n"
              "        st(y, i, j < %lld_ix ? ld(a, o * %lld_ix + j) : ld(b, o * %lld_ix + (j - %lld_ix)));\n    }\n}\n",
              (long long)c->y.numel, ly, ly, la, la, lb, la);
    launch_1d(c->L, c->y.numel);
}

static void gen_slice(node_ctx *c, sbuf *b)
{
    int ax = c->n->attr.slice.axis;
    int64_t inner = prod(&c->a, ax + 1, c->a.rank);
    long long la = (long long)c->a.dim[ax] * inner, ly = (long long)c->y.dim[ax] * inner,
              off = (long long)c->n->attr.slice.start * inner;
    emit_head(c, b, "");
    sb_printf(b,
              "    EDM_LOOP(%lld_ix) {\n        const edm_ix o = i / %lld_ix, j = i %% %lld_ix;\n"
              "        st(y, i, ld(a, o * %lld_ix + %lld_ix + j));\n    }\n}\n",
              (long long)c->y.numel, ly, ly, la, off);
    launch_1d(c->L, c->y.numel);
}

/* Sum or sum of squares over an axis mask, accumulated in double like the
 * CPU backend.  Many short reductions: a thread per output; few long ones: a
 * block per output with a shared-memory tree. */
static void gen_reduce(node_ctx *c, sbuf *b)
{
    int64_t stride[EDM_MAX_RANK];
    strides_of(&c->a, stride);
    index_plan kept = {.rank = 0}, red = {.rank = 0};
    int64_t nout = 1, nred = 1;
    int prev = -1; /* class of the previous non-unit dim: 0 kept, 1 reduced */
    for (int i = 0; i < c->a.rank; i++) {
        int r = (int)((c->n->attr.reduce.axes >> i) & 1u);
        if (c->a.dim[i] == 1)
            continue;
        index_plan *p = r ? &red : &kept;
        if (r)
            nred *= c->a.dim[i];
        else
            nout *= c->a.dim[i];
        int q = p->rank - 1;
        if (prev == r && q >= 0 && p->s[0][q] == stride[i] * c->a.dim[i]) {
            p->dim[q] *= c->a.dim[i];
            p->s[0][q] = stride[i];
        } else {
            p->dim[p->rank] = c->a.dim[i];
            p->s[0][p->rank] = stride[i];
            p->s[1][p->rank] = 0;
            p->rank++;
        }
        prev = r;
    }
    static const char *const vbase[] = {"base"}, *const voff[] = {"roff"};
    const char *acc = c->n->op == EDM_OP_SUMSQ ? "acc += v * v;" : "acc += v;";
    int per_thread = nout >= 1024 || nred <= 64;
    emit_head(c, b, per_thread ? "" : "    __shared__ double sh[256];\n");
    if (per_thread) {
        sb_printf(b, "    EDM_LOOP(%lld_ix) {\n", (long long)nout);
        emit_index(b, &kept, 1, vbase, "i");
        sb_printf(b, "        double acc = 0.0;\n        for (edm_ix r = 0; r < %lld_ix; r++) {\n", (long long)nred);
        /* emit_index indents for a loop body: fine one level deeper too */
        emit_index(b, &red, 1, voff, "r");
        sb_printf(b, "            const double v = (double)ld(a, base + roff);\n            %s\n        }\n"
                     "        st(y, i, (float)acc);\n    }\n}\n",
                  acc);
        launch_1d(c->L, nout);
    } else {
        sb_printf(b, "    for (edm_ix o = blockIdx.x; o < %lld_ix; o += gridDim.x) {\n", (long long)nout);
        emit_index(b, &kept, 1, vbase, "o");
        sb_printf(b, "        double acc = 0.0;\n        for (edm_ix r = threadIdx.x; r < %lld_ix; r += %d) {\n",
                  (long long)nred, BLOCK);
        emit_index(b, &red, 1, voff, "r");
        sb_printf(b,
                  "            const double v = (double)ld(a, base + roff);\n            %s\n        }\n"
                  "        sh[threadIdx.x] = acc;\n        __syncthreads();\n"
                  "        for (int s = %d; s > 0; s >>= 1) {\n"
                  "            if ((int)threadIdx.x < s)\n                sh[threadIdx.x] += sh[threadIdx.x + s];\n"
                  "            __syncthreads();\n        }\n"
                  "        if (threadIdx.x == 0)\n            st(y, o, (float)sh[0]);\n        __syncthreads();\n"
                  "    }\n}\n",
                  acc, BLOCK / 2);
        c->L->grid[0] = nout > (int64_t)MAX_GRID ? MAX_GRID : (unsigned)nout;
        c->L->grid[1] = c->L->grid[2] = 1;
        c->L->block[0] = BLOCK;
        c->L->block[1] = c->L->block[2] = 1;
    }
}

static void gen_softmax(node_ctx *c, sbuf *b)
{
    int ax = c->n->attr.softmax.axis;
    long long outer = (long long)prod(&c->a, 0, ax), inner = (long long)prod(&c->a, ax + 1, c->a.rank),
              len = (long long)c->a.dim[ax];
    emit_head(c, b, "");
    sb_printf(b,
              "    EDM_LOOP(%lld_ix) {\n"
              "        const edm_ix o = i / %lld_ix, in = i %% %lld_ix, base = o * %lld_ix + in;\n"
              "        float m = ld(a, base);\n"
              "        for (edm_ix j = 1; j < %lld_ix; j++) {\n"
              "            const float t = ld(a, base + j * %lld_ix);\n            m = t > m ? t : m;\n        }\n"
              "        double s = 0.0;\n"
              "        for (edm_ix j = 0; j < %lld_ix; j++)\n"
              "            s += (double)expf(ld(a, base + j * %lld_ix) - m);\n"
              "        const float inv = (float)(1.0 / s);\n"
              "        for (edm_ix j = 0; j < %lld_ix; j++)\n"
              "            st(y, base + j * %lld_ix, expf(ld(a, base + j * %lld_ix) - m) * inv);\n"
              "    }\n}\n",
              outer * inner, inner, inner, len * inner, len, inner, len, inner, len, inner, inner);
    launch_1d(c->L, outer * inner);
}

/* Attention (the attn fusion rule; only inside a fused plan's step, whose
 * third operand reader replaces ld(c3, ..)): on tensor cores, a block of 64
 * queries of one head (cuda_attention_mma.h); else one thread per (block,
 * query), the query's column in registers, one pass over the keys with the
 * softmax kept online (running max, rescaled sums), so no score is stored. */
static void gen_attention(node_ctx *c, sbuf *b)
{
    int r = c->y.rank;
    bshape k = bind(&edm_graph_node(c->g, c->n->input[1])->shape, c->opt->batch);
    long long outer = (long long)prod(&c->y, 0, r - 2), d = (long long)c->a.dim[r - 2], tq = (long long)c->a.dim[r - 1],
              tk = (long long)k.dim[r - 1], dv = (long long)c->y.dim[r - 2];
    if (c->mma != EDM_F32 && edm_mma_attention_fits(d, dv)) { /* tensor cores (cuda_attention_mma.h) */
        sbuf shared = {0};
        edm_mma_emit_attention_shared(&shared, d, dv);
        emit_head_shared(c, b, &shared);
        edm_mma_emit_attention(b, c->mma, outer, d, tq, tk, dv);
        c->L->grid[0] = (unsigned)((tq + EDM_ATTN_QUERIES - 1) / EDM_ATTN_QUERIES);
        c->L->grid[1] = outer > 65535 ? 65535u : (unsigned)outer;
        c->L->grid[2] = 1;
        c->L->block[0] = EDM_ATTN_THREADS;
        c->L->block[1] = c->L->block[2] = 1;
        return;
    }
    emit_head(c, b, "");
    sb_printf(b,
              "    EDM_LOOP(%lld_ix) {\n"
              "        const edm_ix o = i / %lld_ix, t = i %% %lld_ix;\n"
              "        const edm_ix qb = o * %lld_ix + t, kb = o * %lld_ix, vb = o * %lld_ix;\n"
              "        float q[%lld], acc[%lld];\n"
              "        for (edm_ix e = 0; e < %lld_ix; e++)\n            q[e] = ld(a, qb + e * %lld_ix);\n"
              "        for (edm_ix e = 0; e < %lld_ix; e++)\n            acc[e] = 0.0f;\n"
              "        float m = -3.402823466e38f, l = 0.0f;\n"
              "        for (edm_ix j = 0; j < %lld_ix; j++) {\n"
              "            float s = 0.0f;\n"
              "            for (edm_ix e = 0; e < %lld_ix; e++)\n                s += q[e] * ld(b, kb + e * %lld_ix + j);\n"
              "            if (s > m) {\n"
              "                const float f = expf(m - s);\n"
              "                l *= f;\n"
              "                for (edm_ix e = 0; e < %lld_ix; e++)\n                    acc[e] *= f;\n"
              "                m = s;\n"
              "            }\n"
              "            const float p = expf(s - m);\n"
              "            l += p;\n"
              "            for (edm_ix e = 0; e < %lld_ix; e++)\n                acc[e] += p * ld(c3, vb + e * %lld_ix + j);\n"
              "        }\n"
              "        const float inv = 1.0f / l;\n"
              "        for (edm_ix e = 0; e < %lld_ix; e++)\n            st(y, o * %lld_ix + e * %lld_ix + t, acc[e] * inv);\n"
              "    }\n}\n",
              outer * tq, tq, tq, d * tq, d * tk, dv * tk, d, dv, d, tq, dv, tk, d, tk, dv, dv, tk, dv, dv * tq, tq);
    launch_1d(c->L, outer * tq);
}

static void gen_avgpool2(node_ctx *c, sbuf *b)
{
    long long h = (long long)c->a.dim[2], w = (long long)c->a.dim[3], oh = h / 2, ow = w / 2;
    emit_head(c, b, "");
    sb_printf(b,
              "    EDM_LOOP(%lld_ix) {\n"
              "        const edm_ix p = i / %lld_ix, q = i %% %lld_ix, oy = q / %lld_ix, ox = q %% %lld_ix;\n"
              "        const edm_ix s = p * %lld_ix + 2 * oy * %lld_ix + 2 * ox;\n"
              "        st(y, i, (ld(a, s) + ld(a, s + 1) + ld(a, s + %lld_ix) + ld(a, s + %lld_ix)) * 0.25f);\n"
              "    }\n}\n",
              (long long)c->y.numel, oh * ow, oh * ow, ow, ow, h * w, w, w, w + 1);
    launch_1d(c->L, c->y.numel);
}

static void gen_upsample2(node_ctx *c, sbuf *b)
{
    long long h = (long long)c->a.dim[2], w = (long long)c->a.dim[3], oh = h * 2, ow = w * 2;
    emit_head(c, b, "");
    sb_printf(b,
              "    EDM_LOOP(%lld_ix) {\n"
              "        const edm_ix p = i / %lld_ix, q = i %% %lld_ix, oy = q / %lld_ix, ox = q %% %lld_ix;\n"
              "        st(y, i, ld(a, p * %lld_ix + (oy / 2) * %lld_ix + ox / 2));\n"
              "    }\n}\n",
              (long long)c->y.numel, oh * ow, oh * ow, ow, ow, h * w, w);
    launch_1d(c->L, c->y.numel);
}

/* The CPU backend's mask: kept iff (double)hash(seed, mask, i) >= p·2^64.
 * The seed is read from device memory, so a captured CUDA Graph replays with
 * whatever seed the executor wrote there last. */
static void gen_dropout(node_ctx *c, sbuf *b)
{
    double p = c->n->attr.dropout.p;
    int mask = c->n->attr.dropout.mask_id > 0 ? c->n->attr.dropout.mask_id : c->id;
    char thr[64], scale[64];
    lit_f64(thr, sizeof thr, p * 18446744073709551616.0);
    lit_f32(scale, sizeof scale, 1 / (1 - p));
    emit_head(c, b, "    const unsigned long long sd = *seed;\n");
    sb_printf(b,
              "    EDM_LOOP(%lld_ix) {\n"
              "        const unsigned long long h = edm_mix64(sd ^ edm_mix64(%lluULL * 0x9e3779b97f4a7c15ULL + "
              "(unsigned long long)i));\n"
              "        st(y, i, (double)h >= %s ? ld(a, i) * %s : 0.0f);\n    }\n}\n",
              (long long)c->y.numel, (unsigned long long)mask, thr, scale);
    launch_1d(c->L, c->y.numel);
}

/* ------------------------------------------------------------------ contractions */

typedef struct {
    int64_t n, c, h, w, o, k, stride, pad, oh, ow;
    int taps; /* the taps rule's weight: conv2d's [O, k, k, C], conv2d_bwd_data's [C, k, k, O] */
} conv_geom;

/* The forward convolution a conv-family node belongs to (as the CPU backend). */
static conv_geom conv_of(const node_ctx *c)
{
    const bshape *x, *w, *y;
    switch (c->n->op) {
    case EDM_OP_CONV2D: x = &c->a; w = &c->b; y = &c->y; break;
    case EDM_OP_CONV2D_BWD_DATA: x = &c->y; w = &c->b; y = &c->a; break;
    default: x = &c->a; w = &c->y; y = &c->b; break; /* CONV2D_BWD_WEIGHT */
    }
    int taps = c->n->op != EDM_OP_CONV2D_BWD_WEIGHT && c->n->attr.conv.taps;
    return (conv_geom){.n = x->dim[0], .c = x->dim[1], .h = x->dim[2], .w = x->dim[3],
                       .o = taps && c->n->op == EDM_OP_CONV2D_BWD_DATA ? w->dim[3] : w->dim[0], .k = w->dim[2],
                       .stride = c->n->attr.conv.stride, .pad = c->n->attr.conv.pad, .oh = y->dim[2],
                       .ow = y->dim[3], .taps = taps};
}

/* The library path (cuBLASLt over im2col / col2im buffers) reads weights as
 * they are: a taps weight (only fused plans have them, and they generate
 * their contractions) is an internal error there. */
static int library_conv_check(const node_ctx *c, const conv_geom *p, edm_status *st)
{
    if (c->opt->gemm_library && p->taps)
        return edm_fail(st, EDM_ERR_INTERNAL, c->n->loc, "CUDA codegen: %s reads a taps weight on the library path",
                        edm_op_name(c->n->op));
    return 0;
}

/* A 1×1 convolution with stride 1 and no padding: its col buffer would be x
 * (or dx) itself, so the library path multiplies that directly. */
static int conv_direct(const conv_geom *p) { return p->k == 1 && p->stride == 1 && p->pad == 0; }

/* The tensor-core tile of a contraction (its key into *key): forced
 * (EDMC_MMA_TILE), measured (the tiles table), or the cost model's. */
static edm_mma_tile gemm_tile(const node_ctx *c, int64_t gm, int64_t gn, int64_t gk, int64_t gb, int64_t ktaps,
                              const edm_mma_halo *halo, edm_mma_key *key)
{
    *key = (edm_mma_key){.gm = gm, .gn = gn, .gk = gk, .gb = gb, .ktaps = ktaps};
    snprintf(key->op, sizeof key->op, "%s", edm_op_name(c->n->op));
    const edm_mma_tuned *tuned = edm_mma_tiles_find(c->opt->tiles, key);
    const unsigned model = (c->opt->tiles_by_loads ? 0u : (unsigned)EDM_MMA_BY_ISSUE) |
                           (c->opt->one_block_tiles ? (unsigned)EDM_MMA_ONE_BLOCK : 0u);
    edm_mma_tile t = edm_mma_choose_tile(c->n->op, halo, model, gm, gn, gk, gb);
    if (c->opt->mma_tile.bm && c->opt->mma_tile.splits == 0) { /* a tile forced, its splits the model's */
        t = edm_mma_choose_splits(c->n->op, halo, model, gm, gn, gk, gb, c->opt->mma_tile);
    } else if (c->opt->mma_tile.bm) { /* forced (valid: checked by check_options) */
        t = c->opt->mma_tile;
        (void)edm_mma_fit_tile(&t, gk, gb);
    } else if (tuned) { /* measured on the device (valid: checked when read) */
        t = tuned->tile;
        (void)edm_mma_fit_tile(&t, gk, gb);
    }
    return t;
}

/* The tiled GEMM body: C[z] (GM×GN) = Σ_k A(z,m,k)·B(z,k,n), with the
 * accessors KNAME_A, KNAME_B, KNAME_C emitted before it; ktaps > 0 (tensor
 * cores only): A and B take k as (kq, kr), cuda_gemm_mma.h; order: the
 * directions A's and B's memory runs in (EDM_MMA_A_ROWS, EDM_MMA_B_K), for
 * the tensor-core loads; cand: the halo the tile is chosen for where its
 * geometry allows one (conv_halo_cand, wgrad_halo_cand), else NULL; with_halo:
 * B through it, KNAME_H emitted too (where the tile fits it: halo_fits). */
static void emit_gemm(const node_ctx *c, sbuf *b, int64_t gm, int64_t gn, int64_t gk, int64_t gb, int64_t ktaps,
                      unsigned order, const edm_mma_halo *cand, int with_halo)
{
    edm_cuda_launch *L = c->L;
    const edm_mma_halo *halo = with_halo ? cand : NULL;
    if (c->mma != EDM_F32) { /* tensor cores (cuda_gemm_mma.h) */
        edm_mma_key key;
        edm_mma_tile t = gemm_tile(c, gm, gn, gk, gb, ktaps, cand, &key);
        L->mma = key;
        L->mma_tile = t;
        int64_t floats, counts;
        edm_mma_workspace(t, gm, gn, &floats, &counts);
        if (c->ws->floats < floats)
            c->ws->floats = floats;
        if (c->ws->counts < counts)
            c->ws->counts = counts;
        sbuf shared = {0};
        edm_mma_emit_shared(&shared, t, halo);
        emit_head_shared(c, b, &shared);
        edm_mma_emit_body(b, t, c->mma, gm, gn, gk, gb, ktaps, order, halo);
        L->smem = halo && !halo->wgrad ? edm_mma_halo_bytes(t, halo) : 0u;
        L->grid[0] = (unsigned)((gn + t.bn - 1) / t.bn);
        L->grid[1] = (unsigned)((gm + t.bm - 1) / t.bm);
        L->grid[2] = t.splits > 1 ? (unsigned)t.splits : gb > 65535 ? 65535u : (unsigned)gb;
        L->block[0] = EDM_MMA_THREADS;
        L->block[1] = L->block[2] = 1;
        return;
    }
    emit_head(c, b, "    __shared__ float As[16][64 + 1];\n    __shared__ float Bs[16][64 + 1];\n");
    sb_printf(b,
              "    const edm_ix m0 = (edm_ix)blockIdx.y * 64, n0 = (edm_ix)blockIdx.x * 64;\n"
              "    const int tx = threadIdx.x %% 16, ty = threadIdx.x / 16;\n"
              "    for (edm_ix z = blockIdx.z; z < %lld_ix; z += gridDim.z) {\n"
              "        float acc[4][4];\n"
              "        for (int r = 0; r < 4; r++)\n            for (int s = 0; s < 4; s++)\n"
              "                acc[r][s] = 0.0f;\n"
              "        for (edm_ix k0 = 0; k0 < %lld_ix; k0 += 16) {\n"
              "            for (int e = threadIdx.x; e < 16 * 64; e += 256) {\n"
              "                const int kk = e %% 16, mm = e / 16;\n"
              "                const edm_ix m = m0 + mm, k = k0 + kk;\n"
              "                As[kk][mm] = m < %lld_ix && k < %lld_ix ? KNAME_A(a, b, z, m, k) : 0.0f;\n"
              "            }\n"
              "            for (int e = threadIdx.x; e < 16 * 64; e += 256) {\n"
              "                const int kk = e / 64, nn = e %% 64;\n"
              "                const edm_ix n = n0 + nn, k = k0 + kk;\n"
              "                Bs[kk][nn] = n < %lld_ix && k < %lld_ix ? KNAME_B(a, b, z, k, n) : 0.0f;\n"
              "            }\n"
              "            __syncthreads();\n"
              "            for (int kk = 0; kk < 16; kk++) {\n"
              "                float ra[4], rb[4];\n"
              "                for (int r = 0; r < 4; r++) {\n"
              "                    ra[r] = As[kk][ty + 16 * r];\n                    rb[r] = Bs[kk][tx + 16 * r];\n"
              "                }\n"
              "                for (int r = 0; r < 4; r++)\n                    for (int s = 0; s < 4; s++)\n"
              "                        acc[r][s] += ra[r] * rb[s];\n"
              "            }\n"
              "            __syncthreads();\n"
              "        }\n"
              "        for (int r = 0; r < 4; r++)\n            for (int s = 0; s < 4; s++) {\n"
              "                const edm_ix m = m0 + ty + 16 * r, n = n0 + tx + 16 * s;\n"
              "                if (m < %lld_ix && n < %lld_ix)\n                    KNAME_C(y, z, m, n, acc[r][s]);\n"
              "            }\n"
              "    }\n}\n",
              (long long)gb, (long long)gk, (long long)gm, (long long)gk, (long long)gn, (long long)gk,
              (long long)gm, (long long)gn);
    int64_t gx = (gn + 63) / 64, gy = (gm + 63) / 64;
    L->grid[0] = (unsigned)gx;
    L->grid[1] = (unsigned)gy;
    L->grid[2] = gb > 65535 ? 65535u : (unsigned)gb;
    L->block[0] = BLOCK;
    L->block[1] = L->block[2] = 1;
}

/* The head of a contraction's accessor: A(z, m, k) and B(z, k, n) read the
 * node's inputs (grouped: A(z, m, kq, kr) and B(z, kq, kr, n)), C(z, m, n, v)
 * stores into its value. */
static void emit_acc(const node_ctx *c, sbuf *b, char which, int grouped)
{
    if (which == 'C')
        sb_printf(b,
                  "static __device__ __forceinline__ void KNAME_C(%s *y, edm_ix z, edm_ix m, edm_ix n, "
                  "float v)\n",
                  ctype(c->ty));
    else
        sb_printf(b, "static __device__ __forceinline__ float KNAME_%c(const %s *a, const %s *b, edm_ix z, %s)\n",
                  which, ctype(c->ta), ctype(c->tb),
                  which == 'A' ? (grouped ? "edm_ix m, edm_ix kq, edm_ix kr" : "edm_ix m, edm_ix k")
                               : (grouped ? "edm_ix kq, edm_ix kr, edm_ix n" : "edm_ix k, edm_ix n"));
}

/* Whether a tensor-core convolution's generated body reads its activations
 * with their coordinates (ldq, stq), unless the ablation asks for the flat
 * channel-major reads. */
static int conv_coords(const edm_cuda_options *opt, edm_dtype mma)
{
    return mma != EDM_F32 && !opt->gemm_library && !opt->conv_channel_major;
}

/* Whether such a convolution reading c channels (x's; the backward pass's
 * dy's) also takes one tap a k tile (emit_gemm's ktaps, cuda_gemm_mma.h),
 * rather than k = channel·kh·kw + tap, the library path's col buffer order:
 * when the channels fill whole k tiles. */
static int conv_grouped(const edm_cuda_options *opt, edm_dtype mma, int64_t c)
{
    return conv_coords(opt, mma) && c % EDM_MMA_BK == 0;
}

/* Whether a convolution node reads its weight's k pairs as one (the taps
 * rule's copies, a tile's channels of one tap side by side: the grouped
 * tensor-core body's EDM_MMA_A_PAIRS, through KNAME_A2); c: the channels of
 * its input 0 (x's; the backward-data pass's dy's). */
static int conv_a_pairs(const edm_cuda_options *opt, edm_dtype mma, const edm_node *n, int64_t c)
{
    return (n->op == EDM_OP_CONV2D || n->op == EDM_OP_CONV2D_BWD_DATA) && n->attr.conv.taps &&
           conv_grouped(opt, mma, c);
}

/* Whether a weight gradient reads dy's k tiles eight pixels a load
 * (EDM_MMA_A_WIDE, through KNAME_A8v; its prologue KNAME_in1q8): dy's OH·OW
 * pixels in whole k tiles of one sample, each eight in one row, unless
 * EDMC_WIDE_LOADS=off. */
static int wgrad_a_wide(const edm_cuda_options *opt, edm_dtype mma, int64_t oh, int64_t ow)
{
    return conv_coords(opt, mma) && !opt->no_wide_loads && oh * ow % EDM_MMA_BK == 0 && ow % 8 == 0;
}

/* Whether a taps convolution with its weight's pairs (conv_a_pairs) copies
 * its weight's k tiles into shared memory by cp.async (EDM_MMA_A_ASYNC): the
 * weight read as stored in the product's type (a_raw: a fused step's
 * operand without prologue), unless EDMC_CP_ASYNC=off. */
static int conv_a_async(const node_ctx *c) { return c->a_raw && !c->opt->no_cp_async; }

/* A taps convolution's KNAME_A2(z, m, kq, kr): its weight's elements k and k
 * + 1 at `index` (kr even, the channels a multiple of 32: aligned) in one
 * load, packed for the product (edm_ldpair_f16/bf16); with cp.async, also
 * KNAME_A8: the address of elements kr..kr + 7 (kr a multiple of 8: 16-byte
 * aligned). */
static void emit_pair_acc(const node_ctx *c, sbuf *b, const char *index)
{
    sb_printf(b,
              "static __device__ __forceinline__ unsigned KNAME_A2(const %s *a, const %s *b, edm_ix z, edm_ix m, "
              "edm_ix kq, edm_ix kr)\n{\n    return edm_ldpair_%s(b, %s);\n}\n",
              ctype(c->ta), ctype(c->tb), edm_cuda_dtype_suffix(c->mma), index);
    if (conv_a_async(c))
        sb_printf(b,
                  "static __device__ __forceinline__ const void *KNAME_A8(const %s *a, const %s *b, edm_ix z, "
                  "edm_ix m, edm_ix kq, edm_ix kr)\n{\n    return edm_addr_of(b, %s);\n}\n",
                  ctype(c->ta), ctype(c->tb), index);
}

/* The first line of a convolution's B accessor: channel `ch` and tap (ky,
 * kx) of its k, as kq, kr (grouped) or one k: channel-major, or, with
 * tap_channels > 0 (the forward's taps weight), tap-major, that many
 * channels a tap. */
static void emit_conv_k(sbuf *b, const conv_geom *p, const char *ch, int grouped, int64_t tap_channels)
{
    long long k = p->k, channels = (long long)tap_channels;
    if (grouped)
        sb_printf(b, "    const edm_ix %s = kr, ky = kq / %lld_ix, kx = kq %% %lld_ix;\n", ch, k, k);
    else if (channels > 0)
        sb_printf(b, "    const edm_ix r = k / %lld_ix, %s = k %% %lld_ix, ky = r / %lld_ix, kx = r %% %lld_ix;\n", channels,
                  ch, channels, k, k);
    else
        sb_printf(b, "    const edm_ix %s = k / %lld_ix, r = k %% %lld_ix, ky = r / %lld_ix, kx = r %% %lld_ix;\n", ch, k * k,
                  k * k, k, k);
}

/* How a convolution's B accessor reads its activation (x, or dy) at offset
 * `at`: grouped, through ldq with the coordinates nb, `ch`, `y`, `x` (a fused
 * prologue reads its per-pixel operands there: gen_step). */
static void conv_load(char *out, size_t size, int grouped, const char *at, const char *ch, const char *y,
                      const char *x)
{
    if (grouped)
        snprintf(out, size, "ldq(a, %s, nb, %s, %s, %s)", at, ch, y, x);
    else
        snprintf(out, size, "ld(a, %s)", at);
}

/* A convolution's C accessor: element (m, n) of the GEMM is channel m of
 * pixel n % pixels of sample n / pixels (rows `width` wide); grouped, the
 * store names its coordinates for a fused epilogue (gen_step). */
static void emit_conv_store(const node_ctx *c, sbuf *b, int grouped, int64_t pixels, int64_t channels, int64_t width)
{
    long long px = (long long)pixels, ch = (long long)channels, w = (long long)width;
    emit_acc(c, b, 'C', 0);
    if (grouped)
        sb_printf(b,
                  "{\n    const edm_ix nb = n / %lld_ix, p = n %% %lld_ix;\n"
                  "    stq(y, (nb * %lld_ix + m) * %lld_ix + p, nb, m, p / %lld_ix, p %% %lld_ix, v);\n}\n",
                  px, px, ch, px, w, w);
    else
        sb_printf(b, "{\n    st(y, (n / %lld_ix * %lld_ix + m) * %lld_ix + n %% %lld_ix, v);\n}\n", px, ch, px, px);
}

/* Bit k set: the generated body of contraction `core` reads its input k
 * through ldq with the element's coordinates (a fused prologue reads its
 * operands at them: gen_step); in_shape: the inputs' bound shapes. */
static unsigned coord_operands(const edm_cuda_options *opt, const edm_node *core, edm_dtype mma, const bshape *in_shape)
{
    switch (core->op) {
    case EDM_OP_CONV2D: case EDM_OP_CONV2D_BWD_DATA:
        return in_shape[0].rank == 4 && conv_grouped(opt, mma, in_shape[0].dim[1]) ? 1u : 0u;
    case EDM_OP_CONV2D_BWD_WEIGHT: return conv_coords(opt, mma) ? 3u : 0u; /* its k is the pixels: no taps to group */
    default: return 0;
    }
}

/* Whether a convolution keeps the size at stride 1 with the padding of a
 * k×k kernel, k ≥ 3, and the halo tiles are not turned off
 * (EDMC_CONV_HALO=off): the geometry a halo tile, or a weight gradient's
 * stage, reads. */
static int halo_geometry(const node_ctx *c, const conv_geom *p)
{
    return !c->opt->no_conv_halo && p->stride == 1 && p->k >= 3 && p->pad == (p->k - 1) / 2 && p->oh == p->h &&
           p->ow == p->w;
}

/* The halo a convolution's tile is chosen for where its geometry allows one
 * and its tensor-core body takes a tap a k tile; else NULL. */
static const edm_mma_halo *conv_halo_cand(const node_ctx *c, const conv_geom *p, int64_t ktaps,
                                          const edm_mma_halo *halo)
{
    return ktaps > 0 && halo_geometry(c, p) ? halo : NULL;
}

/* The same for a weight gradient's stage of x (edm_mma_wgrad_fits): tensor
 * cores with coordinates. */
static const edm_mma_halo *wgrad_halo_cand(const node_ctx *c, const conv_geom *p, const edm_mma_halo *halo)
{
    return c->mma != EDM_F32 && conv_coords(c->opt, c->mma) && halo_geometry(c, p) ? halo : NULL;
}

/* Whether the tile chosen for candidate halo cand (NULL: none) fits it. */
static int halo_fits(const node_ctx *c, int64_t gm, int64_t gn, int64_t gk, int64_t ktaps, const edm_mma_halo *cand)
{
    edm_mma_key key;
    return edm_mma_reads_halo(gemm_tile(c, gm, gn, gk, 1, ktaps, cand, &key), cand);
}

/* A halo body's KNAME_H(z, nb, c, iy, ix): the activation at offset `at`
 * (naming nb, c, iy, ix) of an h × w image through ldq, 0 outside it. */
static void emit_halo_acc(const node_ctx *c, sbuf *b, const char *at, int64_t h, int64_t w)
{
    char load[256];
    conv_load(load, sizeof load, 1, at, "c", "iy", "ix");
    sb_printf(b,
              "static __device__ __forceinline__ float KNAME_H(const %s *a, const %s *b, edm_ix z, edm_ix nb, "
              "edm_ix c, edm_ix iy, edm_ix ix)\n{\n"
              "    return iy >= 0 && iy < %lld_ix && ix >= 0 && ix < %lld_ix ? %s : 0.0f;\n}\n",
              ctype(c->ta), ctype(c->tb), (long long)h, (long long)w, load);
}

static int gen_conv2d(node_ctx *c, sbuf *b, edm_status *st)
{
    conv_geom p = conv_of(c);
    if (library_conv_check(c, &p, st) != 0)
        return -1;
    long long kk = (long long)p.k * p.k, ohw = (long long)p.oh * p.ow;
    int64_t gm = p.o, gn = p.n * p.oh * p.ow, gk = p.c * p.k * p.k;
    int64_t ktaps = conv_grouped(c->opt, c->mma, p.c) ? kk : 0;
    char at[160], load[256];
    int pairs = conv_a_pairs(c->opt, c->mma, c->n, p.c);
    if (pairs) { /* w as [O, k, k, C]: a tile's channels of one tap side by side */
        char index[96];
        snprintf(index, sizeof index, "m * %lld_ix + kq * %lld_ix + kr", (long long)gk, (long long)p.c);
        emit_pair_acc(c, b, index);
    } else {
        emit_acc(c, b, 'A', ktaps > 0);
        if (ktaps > 0) /* grouped and not tap-major: a tap's channels k·k apart */
            sb_printf(b, "{\n    return ld(b, m * %lld_ix + kr * %lld_ix + kq);\n}\n", (long long)gk, kk);
        else /* k in the weight's order, channel- or tap-major (emit_conv_k) */
            sb_printf(b, "{\n    return ld(b, m * %lld_ix + k);\n}\n", (long long)gk);
    }
    emit_acc(c, b, 'B', ktaps > 0);
    sb_printf(b, "{\n    const edm_ix nb = n / %lld_ix, p = n %% %lld_ix, oy = p / %lld_ix, ox = p %% %lld_ix;\n", ohw, ohw,
              (long long)p.ow, (long long)p.ow);
    emit_conv_k(b, &p, "c", ktaps > 0, p.taps ? p.c : 0);
    snprintf(at, sizeof at, "((nb * %lld_ix + c) * %lld_ix + iy) * %lld_ix + ix", (long long)p.c, (long long)p.h,
             (long long)p.w);
    conv_load(load, sizeof load, ktaps > 0, at, "c", "iy", "ix");
    sb_printf(b,
              "    const edm_ix iy = oy * %lld_ix - %lld_ix + ky, ix = ox * %lld_ix - %lld_ix + kx;\n"
              "    return iy >= 0 && iy < %lld_ix && ix >= 0 && ix < %lld_ix ? %s : 0.0f;\n}\n",
              (long long)p.stride, (long long)p.pad, (long long)p.stride, (long long)p.pad, (long long)p.h,
              (long long)p.w, load);
    emit_conv_store(c, b, ktaps > 0, ohw, p.o, p.ow);
    if (gm > 65535 * 64LL)
        return edm_fail(st, EDM_ERR_LIMIT, c->n->loc, "CUDA codegen: conv2d with %lld output channels", (long long)gm);
    const edm_mma_halo halo = {.n = p.n, .h = p.h, .w = p.w, .k = (int)p.k};
    const edm_mma_halo *cand = conv_halo_cand(c, &p, ktaps, &halo);
    const int with_halo = halo_fits(c, gm, gn, gk, ktaps, cand);
    if (with_halo) /* x's channel c at input pixel (iy, ix) */
        emit_halo_acc(c, b, at, p.h, p.w);
    /* A along k (the weight's rows), B along the pixels */
    emit_gemm(c, b, gm, gn, gk, 1, ktaps, pairs ? EDM_MMA_A_PAIRS | (conv_a_async(c) ? EDM_MMA_A_ASYNC : 0u) : 0u,
              cand, with_halo);
    if (c->opt->gemm_library) {
        /* y[n] (O×OHW) = w (O×CKK) · col[n] (CKK×OHW); col has x's type; direct: col[n] = x[n] */
        int direct = conv_direct(&p);
        c->L->cublaslt = 1;
        c->L->gemm = (edm_cuda_gemm){.m = gm, .n = ohw, .k = gk, .count = p.n, .stride_a = 0,
                                     .stride_b = direct ? p.c * p.h * p.w : gk * ohw, .stride_c = gm * ohw,
                                     .type_a = c->tb, .type_b = c->ta, .type_c = c->ty, .direct = direct};
    }
    return 0;
}

static int gen_conv2d_bwd_data(node_ctx *c, sbuf *b, edm_status *st)
{
    conv_geom p = conv_of(c);
    if (library_conv_check(c, &p, st) != 0)
        return -1;
    long long kk = (long long)p.k * p.k, hw = (long long)p.h * p.w;
    int64_t gm = p.c, gn = p.n * p.h * p.w, gk = p.o * p.k * p.k;
    int64_t ktaps = conv_grouped(c->opt, c->mma, p.o) ? kk : 0; /* (o, tap), as the forward's (c, tap) */
    int pairs = conv_a_pairs(c->opt, c->mma, c->n, p.o);
    char at[160], load[256];
    if (pairs) { /* wᵀ as [C, k, k, O]: a tile's output channels of one tap side by side */
        char index[96];
        snprintf(index, sizeof index, "(m * %lld_ix + kq) * %lld_ix + kr", kk, (long long)p.o);
        emit_pair_acc(c, b, index);
    } else {
        emit_acc(c, b, 'A', ktaps > 0);
        if (ktaps > 0) /* grouped and w as it is */
            sb_printf(b, "{\n    return ld(b, (kr * %lld_ix + m) * %lld_ix + kq);\n}\n", (long long)p.c, kk);
        else if (p.taps) /* w as [C, k, k, O] */
            sb_printf(b,
                      "{\n    const edm_ix o = k / %lld_ix, r = k %% %lld_ix;\n"
                      "    return ld(b, (m * %lld_ix + r) * %lld_ix + o);\n}\n",
                      kk, kk, kk, (long long)p.o);
        else
            sb_printf(b,
                      "{\n    const edm_ix o = k / %lld_ix, r = k %% %lld_ix;\n"
                      "    return ld(b, (o * %lld_ix + m) * %lld_ix + r);\n}\n",
                      kk, kk, (long long)p.c, kk);
    }
    emit_acc(c, b, 'B', ktaps > 0);
    sb_puts(b, "{\n");
    emit_conv_k(b, &p, "o", ktaps > 0, 0); /* flat: channel-major, whatever w's layout */
    snprintf(at, sizeof at, "((nb * %lld_ix + o) * %lld_ix + oy) * %lld_ix + ox", (long long)p.o, (long long)p.oh,
             (long long)p.ow);
    conv_load(load, sizeof load, ktaps > 0, at, "o", "oy", "ox");
    sb_printf(b,
              "    const edm_ix nb = n / %lld_ix, q = n %% %lld_ix, iy = q / %lld_ix, ix = q %% %lld_ix;\n"
              "    const edm_ix ty = iy + %lld_ix - ky, tx = ix + %lld_ix - kx;\n"
              "    if (ty < 0 || tx < 0 || ty %% %lld_ix != 0 || tx %% %lld_ix != 0)\n        return 0.0f;\n"
              "    const edm_ix oy = ty / %lld_ix, ox = tx / %lld_ix;\n"
              "    return oy < %lld_ix && ox < %lld_ix ? %s : 0.0f;\n"
              "}\n",
              hw, hw, (long long)p.w, (long long)p.w, (long long)p.pad, (long long)p.pad, (long long)p.stride,
              (long long)p.stride, (long long)p.stride, (long long)p.stride, (long long)p.oh, (long long)p.ow, load);
    emit_conv_store(c, b, ktaps > 0, hw, p.c, p.w);
    if (gm > 65535 * 64LL)
        return edm_fail(st, EDM_ERR_LIMIT, c->n->loc, "CUDA codegen: conv2d with %lld input channels", (long long)gm);
    const edm_mma_halo halo = {.n = p.n, .h = p.h, .w = p.w, .k = (int)p.k, .flip = 1};
    const edm_mma_halo *cand = conv_halo_cand(c, &p, ktaps, &halo);
    const int with_halo = halo_fits(c, gm, gn, gk, ktaps, cand);
    if (with_halo) { /* dy's channel c at its pixel (iy, ix) */
        snprintf(at, sizeof at, "((nb * %lld_ix + c) * %lld_ix + iy) * %lld_ix + ix", (long long)p.o, (long long)p.oh,
                 (long long)p.ow);
        emit_halo_acc(c, b, at, p.oh, p.ow);
    }
    /* A = wᵀ: along its rows m (the input channels) w's elements are k·k apart, along k
     * (the output channels) C·k·k; the taps copy: along k side by side */
    emit_gemm(c, b, gm, gn, gk, 1, ktaps,
              pairs ? EDM_MMA_A_PAIRS | (conv_a_async(c) ? EDM_MMA_A_ASYNC : 0u) : p.taps ? 0u : EDM_MMA_A_ROWS,
              cand, with_halo);
    if (c->opt->gemm_library) {
        /* col[n] (CKK×OHW) = wᵀ (CKK×O) · dy[n] (O×OHW), then col2im; col has dx's type;
         * direct: col[n] = dx[n] */
        int direct = conv_direct(&p);
        c->L->cublaslt = 1;
        c->L->gemm = (edm_cuda_gemm){.m = p.c * p.k * p.k, .n = p.oh * p.ow, .k = p.o, .trans_a = 1, .count = p.n,
                                     .stride_a = 0, .stride_b = p.o * p.oh * p.ow,
                                     .stride_c = direct ? p.c * p.h * p.w : p.c * p.k * p.k * p.oh * p.ow,
                                     .type_a = c->tb, .type_b = c->ta, .type_c = c->ty, .direct = direct};
    }
    return 0;
}

static int gen_conv2d_bwd_weight(node_ctx *c, sbuf *b, edm_status *st)
{
    conv_geom p = conv_of(c);
    long long kk = (long long)p.k * p.k, ohw = (long long)p.oh * p.ow;
    int64_t gm = p.o, gn = p.c * p.k * p.k, gk = p.n * p.oh * p.ow;
    int coords = conv_coords(c->opt, c->mma);
    char at[160], load[256];
    emit_acc(c, b, 'A', 0);
    if (coords) /* dy with its coordinates, for a fused prologue (gen_step) */
        sb_printf(b,
                  "{\n    const edm_ix nb = k / %lld_ix, p = k %% %lld_ix;\n"
                  "    return ldq(b, (nb * %lld_ix + m) * %lld_ix + p, nb, m, p / %lld_ix, p %% %lld_ix);\n}\n",
                  ohw, ohw, (long long)p.o, ohw, (long long)p.ow, (long long)p.ow);
    else
        sb_printf(b, "{\n    return ld(b, (k / %lld_ix * %lld_ix + m) * %lld_ix + k %% %lld_ix);\n}\n", ohw,
                  (long long)p.o, ohw, ohw);
    const int wide = wgrad_a_wide(c->opt, c->mma, p.oh, p.ow);
    if (wide) /* dy's elements k..k + 7 of row m (one pixel row), packed */
        sb_printf(b,
                  "static __device__ __forceinline__ void KNAME_A8v(const %s *a, const %s *b, edm_ix z, edm_ix m, "
                  "edm_ix k, unsigned *w)\n{\n"
                  "    const edm_ix nb = k / %lld_ix, p = k %% %lld_ix;\n"
                  "    ldq8_%s(b, (nb * %lld_ix + m) * %lld_ix + p, nb, m, p / %lld_ix, p %% %lld_ix, w);\n}\n",
                  ctype(c->ta), ctype(c->tb), ohw, ohw, edm_cuda_dtype_suffix(c->mma), (long long)p.o, ohw,
                  (long long)p.ow, (long long)p.ow);
    emit_acc(c, b, 'B', 0);
    snprintf(at, sizeof at, "((nb * %lld_ix + c) * %lld_ix + iy) * %lld_ix + ix", (long long)p.c, (long long)p.h,
             (long long)p.w);
    conv_load(load, sizeof load, coords, at, "c", "iy", "ix");
    sb_printf(b,
              "{\n"
              "    const edm_ix nb = k / %lld_ix, q = k %% %lld_ix, oy = q / %lld_ix, ox = q %% %lld_ix;\n"
              "    const edm_ix c = n / %lld_ix, r = n %% %lld_ix, ky = r / %lld_ix, kx = r %% %lld_ix;\n"
              "    const edm_ix iy = oy * %lld_ix - %lld_ix + ky, ix = ox * %lld_ix - %lld_ix + kx;\n"
              "    return iy >= 0 && iy < %lld_ix && ix >= 0 && ix < %lld_ix ? %s : 0.0f;\n}\n",
              ohw, ohw, (long long)p.ow, (long long)p.ow, kk, kk, (long long)p.k, (long long)p.k,
              (long long)p.stride, (long long)p.pad, (long long)p.stride, (long long)p.pad, (long long)p.h,
              (long long)p.w, load);
    emit_acc(c, b, 'C', 0);
    sb_printf(b, "{\n    st(y, m * %lld_ix + n, v);\n}\n", (long long)gn);
    if (gm > 65535 * 64LL)
        return edm_fail(st, EDM_ERR_LIMIT, c->n->loc, "CUDA codegen: conv2d with %lld output channels", (long long)gm);
    const edm_mma_halo halo = {.n = p.n, .h = p.h, .w = p.w, .k = (int)p.k, .wgrad = 1, .c = p.c};
    const edm_mma_halo *cand = wgrad_halo_cand(c, &p, &halo);
    const int with_halo = halo_fits(c, gm, gn, gk, 0, cand);
    if (with_halo) /* x's channel c at input pixel (iy, ix), for the stage */
        emit_halo_acc(c, b, at, p.h, p.w);
    /* B = im2col(x)ᵀ: along k (the pixels) x's rows */
    emit_gemm(c, b, gm, gn, gk, 1, 0, EDM_MMA_B_K | (wide ? EDM_MMA_A_WIDE : 0u), cand, with_halo);
    if (c->opt->gemm_library) {
        /* dw (O×CKK) = Σ_n dy[n] (O×OHW) · col[n]ᵀ (OHW×CKK): one f32 C, accumulated over z;
         * col has x's type; direct: col[n] = x[n] */
        int direct = conv_direct(&p);
        c->L->cublaslt = 1;
        c->L->gemm = (edm_cuda_gemm){.m = gm, .n = gn, .k = ohw, .trans_b = 1, .count = p.n,
                                     .stride_a = p.o * ohw, .stride_b = direct ? p.c * p.h * p.w : gn * ohw,
                                     .stride_c = 0, .accumulate = 1, .type_a = c->tb, .type_b = c->ta,
                                     .type_c = c->ty, .direct = direct};
    }
    return 0;
}

static int gen_matmul(node_ctx *c, sbuf *b, edm_status *st)
{
    const bshape *y = &c->y, *a = &c->a, *bb = &c->b;
    int ta = c->n->attr.matmul.trans_a, tb = c->n->attr.matmul.trans_b;
    int64_t m = y->dim[y->rank - 2], n = y->dim[y->rank - 1], k = ta ? a->dim[a->rank - 2] : a->dim[a->rank - 1];
    int nbatch = y->rank - 2;
    int64_t bdim[EDM_MAX_RANK], sa[EDM_MAX_RANK], sbs[EDM_MAX_RANK], count = 1;
    int64_t acc_a = a->dim[a->rank - 2] * a->dim[a->rank - 1], acc_b = bb->dim[bb->rank - 2] * bb->dim[bb->rank - 1];
    for (int i = nbatch - 1; i >= 0; i--) {
        int ia = a->rank - 2 - (nbatch - i), ib = bb->rank - 2 - (nbatch - i);
        int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? bb->dim[ib] : 1;
        bdim[i] = y->dim[i];
        count *= y->dim[i];
        sa[i] = da == 1 ? 0 : acc_a;
        sbs[i] = db == 1 ? 0 : acc_b;
        acc_a *= da;
        acc_b *= db;
    }
    index_plan p = {.rank = 0};
    for (int i = 0; i < nbatch; i++) {
        if (bdim[i] == 1)
            continue;
        int q = p.rank - 1;
        if (q >= 0 && p.s[0][q] == sa[i] * bdim[i] && p.s[1][q] == sbs[i] * bdim[i]) {
            p.dim[q] *= bdim[i];
            p.s[0][q] = sa[i];
            p.s[1][q] = sbs[i];
        } else {
            p.dim[p.rank] = bdim[i];
            p.s[0][p.rank] = sa[i];
            p.s[1][p.rank] = sbs[i];
            p.rank++;
        }
    }
    static const char *const vars[] = {"oa", "ob"};
    sbuf idx = {0};
    emit_index(&idx, &p, 2, vars, "z");
    if (idx.oom)
        return edm_nomem(st);
    emit_acc(c, b, 'A', 0);
    sb_printf(b, "{\n%s        (void)ob;\n        return ld(a, oa + %s);\n}\n", idx.p ? idx.p : "",
              ta ? "k * %GM% + m" : "m * %GK% + k");
    emit_acc(c, b, 'B', 0);
    sb_printf(b, "{\n%s        (void)oa;\n        return ld(b, ob + %s);\n}\n", idx.p ? idx.p : "",
              tb ? "n * %GK% + k" : "k * %GN% + n");
    free(idx.p);
    emit_acc(c, b, 'C', 0);
    sb_printf(b, "{\n    st(y, (z * %lld_ix + m) * %lld_ix + n, v);\n}\n", (long long)m, (long long)n);
    if (m > 65535 * 64LL)
        return edm_fail(st, EDM_ERR_LIMIT, c->n->loc, "CUDA codegen: matmul with %lld rows", (long long)m);
    emit_gemm(c, b, m, n, k, count, 0, (ta ? EDM_MMA_A_ROWS : 0u) | (tb ? EDM_MMA_B_K : 0u), NULL, 0);
    if (c->opt->gemm_library && p.rank <= 1) {
        c->L->cublaslt = 1;
        c->L->gemm = (edm_cuda_gemm){.m = m, .n = n, .k = k, .trans_a = ta, .trans_b = tb, .count = count,
                                     .stride_a = p.rank ? p.s[0][0] : 0, .stride_b = p.rank ? p.s[1][0] : 0,
                                     .stride_c = m * n, .type_a = c->ta, .type_b = c->tb, .type_c = c->ty};
    }
    /* substitute the %GM%, %GN%, %GK% placeholders */
    char gmv[32], gnv[32], gkv[32];
    snprintf(gmv, sizeof gmv, "%lld_ix", (long long)m);
    snprintf(gnv, sizeof gnv, "%lld_ix", (long long)n);
    snprintf(gkv, sizeof gkv, "%lld_ix", (long long)k);
    sbuf out = {0};
    for (size_t i = 0; i < b->len;) {
        if (b->p[i] == '%' && i + 4 <= b->len && b->p[i + 3] == '%' && b->p[i + 1] == 'G') {
            char w = b->p[i + 2];
            sb_puts(&out, w == 'M' ? gmv : w == 'N' ? gnv : gkv);
            i += 4;
        } else {
            sb_putn(&out, b->p + i, 1);
            i++;
        }
    }
    if (out.oom) {
        free(out.p);
        return edm_nomem(st);
    }
    free(b->p);
    *b = out;
    return 0;
}

/* The library path's helpers for convolutions: im2col of samples
 * [n0, n0+count) into col [count][C·k·k][OH·OW], and the gather col2im
 * dx[n][c][iy][ix] = Σ col[n][c,ky,kx][oy,ox] (no atomics). */
static void gen_im2col(const conv_geom *p, sbuf *b, const char *name, edm_dtype tx)
{
    long long kk = (long long)p->k * p->k, ohw = (long long)p->oh * p->ow, ckk = (long long)(p->c) * kk;
    sb_printf(b,
              "extern \"C\" __global__ void __launch_bounds__(%d) %s(%s *__restrict__ col, const %s *__restrict__ x, "
              "long long n0, long long count)\n{\n"
              "    EDM_LOOP64(count * %lldLL) {\n"
              "        const long long nb = i / %lldLL, rc = i %% %lldLL, row = rc / %lldLL, q = rc %% %lldLL;\n"
              "        const long long c = row / %lldLL, r = row %% %lldLL, ky = r / %lldLL, kx = r %% %lldLL;\n"
              "        const long long oy = q / %lldLL, ox = q %% %lldLL;\n"
              "        const long long iy = oy * %lldLL - %lldLL + ky, ix = ox * %lldLL - %lldLL + kx;\n"
              "        st(col, i, iy >= 0 && iy < %lldLL && ix >= 0 && ix < %lldLL ? "
              "ld(x, (((n0 + nb) * %lldLL + c) * %lldLL + iy) * %lldLL + ix) : 0.0f);\n"
              "    }\n}\n",
              BLOCK, name, ctype(tx), ctype(tx), ckk * ohw, ckk * ohw, ckk * ohw, ohw, ohw, kk, kk, (long long)p->k,
              (long long)p->k,
              (long long)p->ow, (long long)p->ow, (long long)p->stride, (long long)p->pad, (long long)p->stride,
              (long long)p->pad, (long long)p->h, (long long)p->w, (long long)p->c, (long long)p->h, (long long)p->w);
}

static void gen_col2im(const conv_geom *p, sbuf *b, const char *name, edm_dtype tdx)
{
    long long kk = (long long)p->k * p->k, ohw = (long long)p->oh * p->ow, ckk = (long long)(p->c) * kk,
              chw = (long long)p->c * p->h * p->w, hw = (long long)p->h * p->w;
    sb_printf(b,
              "extern \"C\" __global__ void __launch_bounds__(%d) %s(%s *__restrict__ dx, const %s *__restrict__ col, "
              "long long n0, long long count)\n{\n"
              "    EDM_LOOP64(count * %lldLL) {\n"
              "        const long long nb = i / %lldLL, rc = i %% %lldLL, c = rc / %lldLL, q = rc %% %lldLL;\n"
              "        const long long iy = q / %lldLL, ix = q %% %lldLL;\n"
              "        float s = 0.0f;\n"
              "        for (int ky = 0; ky < %lld; ky++)\n"
              "            for (int kx = 0; kx < %lld; kx++) {\n"
              "                const long long ty = iy + %lldLL - ky, tx = ix + %lldLL - kx;\n"
              "                if (ty < 0 || tx < 0 || ty %% %lldLL != 0 || tx %% %lldLL != 0)\n"
              "                    continue;\n"
              "                const long long oy = ty / %lldLL, ox = tx / %lldLL;\n"
              "                if (oy < %lldLL && ox < %lldLL)\n"
              "                    s += ld(col, nb * %lldLL + ((c * %lldLL + ky) * %lldLL + kx) * %lldLL + oy * %lldLL + "
              "ox);\n"
              "            }\n"
              "        st(dx, (n0 + nb) * %lldLL + rc, s);\n"
              "    }\n}\n",
              BLOCK, name, ctype(tdx), ctype(tdx), chw, chw, chw, hw, hw, (long long)p->w, (long long)p->w,
              (long long)p->k, (long long)p->k,
              (long long)p->pad, (long long)p->pad, (long long)p->stride, (long long)p->stride, (long long)p->stride,
              (long long)p->stride, (long long)p->oh, (long long)p->ow, ckk * ohw, (long long)p->k, (long long)p->k,
              ohw, (long long)p->ow, chw);
}

/* ------------------------------------------------------------------ the module */

/* The index type of the module's generated kernels (edm_ix, literals with
 * the suffix _ix) and their grid-stride loop; the kernels whose sizes come
 * from the host (casts, optimizer, im2col) loop in 64 bits (EDM_LOOP64). */
static void emit_index_preamble(sbuf *b, int bits)
{
    sb_printf(b,
              "typedef %s edm_ix; /* %d-bit index arithmetic */\n"
              "static __device__ __forceinline__ constexpr edm_ix operator\"\"_ix(unsigned long long v)\n"
              "{\n    return (edm_ix)v;\n}\n"
              "#define EDM_LOOP(n) for (edm_ix i = (edm_ix)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \\\n"
              "                         i += (edm_ix)gridDim.x * blockDim.x)\n"
              "#define EDM_LOOP64(n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \\\n"
              "                           i += (long long)gridDim.x * blockDim.x)\n",
              bits == 32 ? "int" : "long long", bits);
}

/* splitmix64's finaliser, as runtime/backend_cpu.c's mix64 (dropout masks) */
static const char PREAMBLE_MIX64[] =
    "static __device__ __forceinline__ unsigned long long edm_mix64(unsigned long long z)\n"
    "{\n"
    "    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;\n"
    "    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;\n"
    "    return z ^ (z >> 31);\n"
    "}\n";

/* The three storage types, always all of them: values of one program mix
 * them (the dtype rule), and the cast kernels serve each. */
static const char PREAMBLE_TYPES[] =
    "struct h16 { unsigned short x; }; /* IEEE half */\n"
    "struct b16 { unsigned short x; }; /* bfloat16 */\n"
    "/* the conversions, through named helpers: PTX cvt on the device; on the host\n"
    " * (the emulating driver, tests/emu) its header defines them */\n"
    "#ifdef __CUDA_ARCH__\n"
    "static __device__ __forceinline__ float edm_cvt_f32_f16(unsigned short h)\n"
    "{\n    float f;\n    asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h));\n    return f;\n}\n"
    "static __device__ __forceinline__ unsigned short edm_cvt_rn_f16_f32(float v)\n"
    "{\n    unsigned short h;\n    asm(\"cvt.rn.f16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(v));\n    return h;\n}\n"
    "static __device__ __forceinline__ unsigned short edm_cvt_rn_bf16_f32(float v)\n"
    "{\n    unsigned short h;\n    asm(\"cvt.rn.bf16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(v));\n    return h;\n}\n"
    "#endif\n"
    "static __device__ __forceinline__ float ld(const float *p, long long i) { return p[i]; }\n"
    "static __device__ __forceinline__ void st(float *p, long long i, float v) { p[i] = v; }\n"
    "static __device__ __forceinline__ float ld(const h16 *p, long long i) { return edm_cvt_f32_f16(p[i].x); }\n"
    "static __device__ __forceinline__ void st(h16 *p, long long i, float v) { p[i].x = edm_cvt_rn_f16_f32(v); }\n"
    "static __device__ __forceinline__ float ld(const b16 *p, long long i)\n"
    "{\n    return __uint_as_float((unsigned)p[i].x << 16);\n}\n"
    "static __device__ __forceinline__ void st(b16 *p, long long i, float v) { p[i].x = edm_cvt_rn_bf16_f32(v); }\n"
    /* a load and a store that also name the element's coordinates, for a fused prologue and
     * epilogue (gen_conv2d) */
    "template <class Stored>\n"
    "static __device__ __forceinline__ float ldq(const Stored *p, long long i, long long, long long, long long, long long)\n"
    "{\n    return ld(p, i);\n}\n"
    "template <class Stored>\n"
    "static __device__ __forceinline__ void stq(Stored *p, long long i, long long, long long, long long, long long, float v)\n"
    "{\n    st(p, i, v);\n}\n";

static const edm_dtype STORAGE_TYPES[] = {EDM_F32, EDM_F16, EDM_BF16};

const char *edm_cuda_dtype_suffix(edm_dtype t)
{
    switch (t) {
    case EDM_F32: return "f32";
    case EDM_F16: return "f16";
    case EDM_BF16: return "bf16";
    default: return edm_dtype_name(t); /* no kernel has that suffix */
    }
}

/* Uploads and downloads: f32 host data to and from each storage type. */
static void emit_cast_kernels(sbuf *b)
{
    for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof STORAGE_TYPES[0]; i++) {
        const char *sfx = edm_cuda_dtype_suffix(STORAGE_TYPES[i]), *t = ctype(STORAGE_TYPES[i]);
        sb_printf(b,
                  "extern \"C\" __global__ void __launch_bounds__(%d) edm_cast_from_f32_%s(%s *__restrict__ y, "
                  "const float *__restrict__ x, long long n)\n{\n    EDM_LOOP64(n) st(y, i, x[i]);\n}\n"
                  "extern \"C\" __global__ void __launch_bounds__(%d) edm_cast_to_f32_%s(float *__restrict__ y, "
                  "const %s *__restrict__ x, long long n)\n{\n    EDM_LOOP64(n) y[i] = ld(x, i);\n}\n",
                  BLOCK, sfx, t, BLOCK, sfx, t);
    }
}

/* The optimizer on the f32 masters, in the CPU's arithmetic: runtime/train.c
 * (forced WN, Adam) and runtime/phema.c (EMA, torch's lerp in f32).  The
 * explicit _rn intrinsics keep NVRTC from contracting a*b+c into an fma,
 * which the CPU code (ISO C, no contraction) does not do; only the order of
 * forced WN's f64 sum differs (a tree). */
static const char OPTIMIZER_KERNELS[] =
    "extern \"C\" __global__ void __launch_bounds__(256) edm_force_wn(float *__restrict__ w, long long rows, "
    "long long fan_in)\n"
    "{\n"
    "    __shared__ double sh[256];\n"
    "    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {\n"
    "        float *p = w + r * fan_in;\n"
    "        double ss = 0.0;\n"
    "        for (long long k = threadIdx.x; k < fan_in; k += 256)\n"
    "            ss = __dadd_rn(ss, __dmul_rn((double)p[k], (double)p[k]));\n"
    "        sh[threadIdx.x] = ss;\n"
    "        __syncthreads();\n"
    "        for (int s = 128; s > 0; s >>= 1) {\n"
    "            if ((int)threadIdx.x < s)\n"
    "                sh[threadIdx.x] += sh[threadIdx.x + s];\n"
    "            __syncthreads();\n"
    "        }\n"
    "        const float norm = (float)(1e-4 + sqrt(sh[0] / (double)fan_in));\n"
    "        __syncthreads(); /* sh[0] is read before the next row overwrites it */\n"
    "        for (long long k = threadIdx.x; k < fan_in; k += 256)\n"
    "            p[k] = p[k] / norm;\n"
    "    }\n"
    "}\n"
    "extern \"C\" __global__ void __launch_bounds__(256) edm_ema(float *__restrict__ ema,\n"
    "    const float *__restrict__ w, long long n, double beta)\n"
    "{\n"
    "    const float t = (float)(1.0 - beta);\n"
    "    if (fabsf(t) < 0.5f) {\n"
    "        EDM_LOOP64(n) ema[i] = __fadd_rn(ema[i], __fmul_rn(t, __fsub_rn(w[i], ema[i])));\n"
    "    } else {\n"
    "        const float u = 1.0f - t;\n"
    "        EDM_LOOP64(n) ema[i] = __fsub_rn(w[i], __fmul_rn(__fsub_rn(w[i], ema[i]), u));\n"
    "    }\n"
    "}\n";

/* Adam from the gradient in each storage type: the f32 accumulator, or (a
 * step of one pass on one rank) the kept gradient itself.  "+ 0.0f" is the
 * accumulator's 0 + g, so that both give the same bits (−0 becomes +0). */
static const char ADAM_KERNEL[] =
    "extern \"C\" __global__ void __launch_bounds__(256) edm_adam_%s(float *__restrict__ w, float *__restrict__ m,\n"
    "    float *__restrict__ v, const %s *__restrict__ g, long long n, double lr, double beta1, double beta2,\n"
    "    double eps, double c1, double c2, unsigned long long *nonfinite)\n"
    "{\n"
    "    EDM_LOOP64(n) {\n"
    "        float gi = __fadd_rn(ld(g, i), 0.0f);\n"
    "        if ((__float_as_uint(gi) & 0x7f800000U) == 0x7f800000U) {\n"
    "            gi = 0.0f;\n"
    "            atomicAdd(nonfinite, 1ULL);\n"
    "        }\n"
    "        const double gd = (double)gi;\n"
    "        const float mi = (float)__dadd_rn(__dmul_rn(beta1, (double)m[i]), __dmul_rn(1.0 - beta1, gd));\n"
    "        const float vi =\n"
    "            (float)__dadd_rn(__dmul_rn(beta2, (double)v[i]), __dmul_rn(__dmul_rn(1.0 - beta2, gd), gd));\n"
    "        m[i] = mi;\n"
    "        v[i] = vi;\n"
    "        const double mhat = (double)mi / c1, vhat = (double)vi / c2;\n"
    "        w[i] = (float)__dsub_rn((double)w[i], __dmul_rn(lr, mhat) / __dadd_rn(sqrt(vhat), eps));\n"
    "    }\n"
    "}\n";

/* Gradient accumulation into the f32 accumulators, from each storage type. */
static void emit_optimizer_kernels(sbuf *b)
{
    for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof STORAGE_TYPES[0]; i++)
        sb_printf(b,
                  "extern \"C\" __global__ void __launch_bounds__(%d) edm_grad_acc_%s(float *__restrict__ acc, "
                  "const %s *__restrict__ g, long long n)\n{\n    EDM_LOOP64(n) acc[i] += ld(g, i);\n}\n",
                  BLOCK, edm_cuda_dtype_suffix(STORAGE_TYPES[i]), ctype(STORAGE_TYPES[i]));
    for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof STORAGE_TYPES[0]; i++)
        sb_printf(b, ADAM_KERNEL, edm_cuda_dtype_suffix(STORAGE_TYPES[i]), ctype(STORAGE_TYPES[i]));
    sb_puts(b, OPTIMIZER_KERNELS);
}

/* Identical kernel bodies are emitted once: a table of (hash, body, name),
 * open addressing in a power-of-two size. */
typedef struct {
    uint64_t hash;
    char *body;
    char name[EDM_CUDA_NAME];
    int unit; /* the source unit that holds the kernel (cuda_source_split.h) */
} body_entry;

typedef struct {
    body_entry *e;
    size_t size;
} body_table;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Appends body to out with every "KNAME" replaced by name. */
static void emit_named(sbuf *out, const char *body, const char *name)
{
    const char *p = body;
    for (;;) {
        const char *q = strstr(p, "KNAME");
        if (!q) {
            sb_puts(out, p);
            return;
        }
        sb_putn(out, p, (size_t)(q - p));
        sb_puts(out, name);
        p = q + 5;
    }
}

static int gen_node(node_ctx *c, sbuf *b, edm_status *st)
{
    switch (c->n->op) {
    case EDM_OP_CONST: gen_fill(c, b); return 0;
    case EDM_OP_NEG: case EDM_OP_EXP: case EDM_OP_LOG: case EDM_OP_SQRT: case EDM_OP_RSQRT:
    case EDM_OP_SIN: case EDM_OP_COS: case EDM_OP_SQUARE: case EDM_OP_SIGMOID: case EDM_OP_SILU:
    case EDM_OP_CLAMP: case EDM_OP_STEP:
        gen_unary(c, b);
        return 0;
    case EDM_OP_ADD: case EDM_OP_SUB: case EDM_OP_MUL: case EDM_OP_DIV: case EDM_OP_MAXIMUM:
        gen_binary(c, b);
        return 0;
    case EDM_OP_SUM: case EDM_OP_SUMSQ: gen_reduce(c, b); return 0;
    case EDM_OP_CONV2D: return gen_conv2d(c, b, st);
    case EDM_OP_CONV2D_BWD_DATA: return gen_conv2d_bwd_data(c, b, st);
    case EDM_OP_CONV2D_BWD_WEIGHT: return gen_conv2d_bwd_weight(c, b, st);
    case EDM_OP_MATMUL: return gen_matmul(c, b, st);
    case EDM_OP_PERMUTE: gen_permute(c, b); return 0;
    case EDM_OP_CONCAT: gen_concat(c, b); return 0;
    case EDM_OP_SLICE: gen_slice(c, b); return 0;
    case EDM_OP_EXPAND: gen_expand(c, b); return 0;
    case EDM_OP_SOFTMAX: gen_softmax(c, b); return 0;
    case EDM_OP_ATTENTION: gen_attention(c, b); return 0;
    case EDM_OP_AVGPOOL2: gen_avgpool2(c, b); return 0;
    case EDM_OP_UPSAMPLE2: gen_upsample2(c, b); return 0;
    case EDM_OP_DROPOUT: gen_dropout(c, b); return 0;
    default:
        return edm_fail(st, EDM_ERR_INTERNAL, c->n->loc, "CUDA codegen: no kernel for %s", edm_op_name(c->n->op));
    }
}

/* ------------------------------------------------------------------ the dtype rule */

static int is_leaf(edm_op op)
{
    return op == EDM_OP_INPUT || op == EDM_OP_PARAM || op == EDM_OP_BUFFER || op == EDM_OP_CONST;
}

/* Nodes whose value is their first input's memory. */
static int is_alias(const edm_node *n, const edm_cuda_options *opt) { return edm_node_is_alias(n, opt->training); }

/* Whether scope is the network instance `net` or below it ("unet" holds
 * "unet" and "unet.enc.16x16_block0", not "unetx"); NULL: "unet", "": all. */
static int in_network(const char *scope, const char *net)
{
    if (!net)
        net = "unet";
    if (!net[0])
        return 1;
    if (!scope)
        return 0;
    size_t k = strlen(net);
    return strncmp(scope, net, k) == 0 && (scope[k] == '\0' || scope[k] == '.');
}

/* The tensor-core operand type of a contraction (attention included): the
 * network's storage type (f16 or bf16) for a contraction of the network when
 * the options ask for tensor cores; else f32, the CUDA-core body. */
static edm_dtype contraction_mma(const edm_cuda_options *opt, const edm_node *n)
{
    switch (n->op) {
    case EDM_OP_CONV2D: case EDM_OP_CONV2D_BWD_DATA: case EDM_OP_CONV2D_BWD_WEIGHT: case EDM_OP_MATMUL:
    case EDM_OP_ATTENTION: break;
    default: return EDM_F32;
    }
    if (!opt->tensor_cores || opt->storage == EDM_F32 || !in_network(n->scope, opt->network_scope))
        return EDM_F32;
    return opt->storage;
}

/* Whether contractions may run on tensor cores: the preamble then carries the mma helpers. */
static int uses_mma(const edm_cuda_options *opt) { return opt->tensor_cores && opt->storage != EDM_F32; }

/* The tensor-core helpers (cuda_gemm_mma.h), their fragments by ldmatrix unless opt says not. */
static void emit_mma_preamble(sbuf *out, const edm_cuda_options *opt)
{
    if (!opt->no_ldmatrix)
        sb_puts(out, "#define EDM_LDMATRIX 1 /* the fragments by ldmatrix (EDMC_LDMATRIX=off: word by word) */\n");
    sb_puts(out, edm_mma_preamble);
}

/* The storage of node id's value (cuda_codegen.h); the types of the nodes
 * before it are already in launch[]. */
static edm_dtype value_dtype(const edm_graph *g, const edm_cuda_options *opt, const edm_cuda_launch *launch, int id)
{
    const edm_node *n = edm_graph_node(g, id);
    if (is_alias(n, opt))
        return n->ninputs > 0 && n->input[0] < id ? launch[n->input[0]].dtype : EDM_F32;
    if (opt->storage == EDM_F32 || is_leaf(n->op))
        return EDM_F32;
    switch (n->op) {
    case EDM_OP_SUM: case EDM_OP_SUMSQ: case EDM_OP_CONV2D_BWD_WEIGHT: return EDM_F32;
    default: break;
    }
    return in_network(n->scope, opt->network_scope) ? opt->storage : EDM_F32;
}

int edm_cuda_value_types(const edm_graph *g, const edm_cuda_options *opt, edm_dtype *out, edm_status *st)
{
    int count = edm_graph_count(g);
    edm_cuda_launch *types = calloc((size_t)(count ? count : 1), sizeof *types);
    if (!types)
        return edm_nomem(st);
    for (int id = 0; id < count; id++)
        out[id] = types[id].dtype = value_dtype(g, opt, types, id);
    free(types);
    return 0;
}

/* With gemm_library: a convolution's im2col (conv2d, conv2d_bwd_weight) or
 * col2im (conv2d_bwd_data) kernel, unless the GEMM reads x or writes dx directly. */
static void emit_conv_helper(const node_ctx *c, sbuf *out, edm_cuda_module *m)
{
    edm_cuda_launch *L = c->L;
    if (L->gemm.direct)
        return;
    conv_geom p = conv_of(c);
    if (c->n->op == EDM_OP_CONV2D_BWD_DATA) {
        snprintf(L->col2im, sizeof L->col2im, "k%d_col2im", c->id);
        gen_col2im(&p, out, L->col2im, c->ty);
    } else {
        snprintf(L->im2col, sizeof L->im2col, "k%d_im2col", c->id);
        gen_im2col(&p, out, L->im2col, c->ta);
    }
    m->nkernels++;
}

void edm_cuda_module_free(edm_cuda_module *m)
{
    if (!m)
        return;
    free(m->source);
    free(m->launch);
    memset(m, 0, sizeof *m);
}

/* A table for up to n bodies (NULL entries: out of memory). */
static body_table table_new(int n)
{
    body_table t = {NULL, 64};
    while (t.size < (size_t)n * 2)
        t.size *= 2;
    t.e = calloc(t.size, sizeof *t.e);
    return t;
}

static void table_free(body_table *t)
{
    for (size_t i = 0; t->e && i < t->size; i++)
        free(t->e[i].body);
    free(t->e);
    t->e = NULL;
}

/* The name of an earlier kernel with this body (*unit: the source unit it
 * is in), or NULL after recording the body under `name` in `unit` (*oom set
 * where it could not be kept). */
static const char *table_name(body_table *t, const char *body, const char *name, int *unit, int *oom)
{
    uint64_t h = fnv1a(body, strlen(body));
    size_t slot = (size_t)h & (t->size - 1);
    while (t->e[slot].body && (t->e[slot].hash != h || strcmp(t->e[slot].body, body) != 0))
        slot = (slot + 1) & (t->size - 1);
    if (t->e[slot].body) {
        *unit = t->e[slot].unit;
        return t->e[slot].name;
    }
    if (!(t->e[slot].body = strdup(body))) {
        *oom = 1;
        return NULL;
    }
    t->e[slot].hash = h;
    t->e[slot].unit = *unit;
    snprintf(t->e[slot].name, sizeof t->e[slot].name, "%s", name);
    return NULL;
}

/* The options both generators take. */
static int check_options(const edm_cuda_options *opt, edm_status *st)
{
    if (opt->storage != EDM_F32 && opt->storage != EDM_F16 && opt->storage != EDM_BF16)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "CUDA codegen stores f32, f16 or bf16, not %s",
                        edm_dtype_name(opt->storage));
    if (opt->batch < 1)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "CUDA codegen needs a batch size >= 1");
    edm_mma_tile t = opt->mma_tile;
    if (t.bm && t.splits == 0) /* the cost model's splits for the tile */
        t.splits = 1;
    char name[48];
    edm_mma_format_tile(name, sizeof name, t);
    if (t.bm && edm_mma_fit_tile(&t, 1 << 20, 1) != 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "tensor-core tile %s: expected 64 or 128 each, 1 to 1024 splits",
                        name);
    if (opt->index_bits != 0 && opt->index_bits != 64)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "CUDA codegen: index bits %d (expected 0: automatic, or 64)",
                        opt->index_bits);
    return 0;
}

/* 32-bit index arithmetic when every value of the graph has at most 2^30
 * elements: a division by a constant is then a multiply-high and a shift
 * instead of a 64-bit sequence several times longer (smaller kernels, faster
 * to compile), and a grid-stride loop's last step past n (at most
 * MAX_GRID · BLOCK = 2^28) cannot overflow.  split-K's workspace is indexed
 * in 64 bits (cuda_gemm_mma.c), its partial tiles can exceed the values. */
static int module_index_bits(const edm_graph *g, const edm_cuda_options *opt)
{
    if (opt->index_bits == 64)
        return 64;
    for (int id = 0; id < edm_graph_count(g); id++)
        if (bind(&edm_graph_node(g, id)->shape, opt->batch).numel > ((int64_t)1 << 30))
            return 64;
    return 32;
}

/* A setting of the environment with two values: *chose_other is whether it
 * is `other` (unset or empty: left as it is); any third value an error. */
static int env_either(const char *name, const char *plain, const char *other, int *chose_other, edm_status *st)
{
    const char *v = getenv(name);
    if (!v || !v[0])
        return 0;
    if (strcmp(v, plain) != 0 && strcmp(v, other) != 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s=%s: expected %s or %s", name, v, plain, other);
    *chose_other = strcmp(v, other) == 0;
    return 0;
}

int edm_cuda_options_env(edm_cuda_options *co, edm_status *st)
{
    /* a tile forced on every tensor-core contraction (tests, tuning): "BMxBN" or "BMxBN/SPLITS", "@1" after
     * either for one block an SM */
    const char *tile = getenv("EDMC_MMA_TILE");
    if (tile && tile[0] && edm_mma_parse_tile(tile, &co->mma_tile) != 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "EDMC_MMA_TILE=%s: expected BMxBN or BMxBN/SPLITS, BM and BN 64 or 128, then @1 (one block "
                        "an SM) or nothing",
                        tile);
    /* the kernels' index arithmetic forced to 64 bits (tests: the path of values over 2^30 elements) */
    const char *bits = getenv("EDMC_INDEX_BITS");
    if (bits && bits[0]) {
        if (strcmp(bits, "64") != 0)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "EDMC_INDEX_BITS=%s: expected 64 (or unset)", bits);
        co->index_bits = 64;
    }
    /* the ablations (docs/cuda.md): the tensor-core convolutions' k order, "channel" the library
     * path's; the fragments word by word, not by ldmatrix; the weights' k tiles through registers,
     * not copied by cp.async; the tile cost model without the instructions' issue time, as before
     * its table; the weight gradients' dy a pair a load, not eight elements; the forward
     * convolutions' activations directly, a tap a k tile, not through a halo tile; and a candidate,
     * off until a GPU has judged it: 128x128 one block an SM where two would spill */
    if (env_either("EDMC_CONV_ORDER", "tap", "channel", &co->conv_channel_major, st) != 0 ||
        env_either("EDMC_LDMATRIX", "on", "off", &co->no_ldmatrix, st) != 0 ||
        env_either("EDMC_CP_ASYNC", "on", "off", &co->no_cp_async, st) != 0 ||
        env_either("EDMC_TILE_MODEL", "issue", "loads", &co->tiles_by_loads, st) != 0 ||
        env_either("EDMC_WIDE_LOADS", "on", "off", &co->no_wide_loads, st) != 0 ||
        env_either("EDMC_CONV_HALO", "on", "off", &co->no_conv_halo, st) != 0 ||
        env_either("EDMC_ONE_BLOCK_TILES", "off", "on", &co->one_block_tiles, st) != 0)
        return -1;
    return 0;
}

int edm_cuda_codegen(const edm_graph *g, const edm_cuda_options *opt, edm_cuda_module *m, edm_status *st)
{
    memset(m, 0, sizeof *m);
    if (check_options(opt, st) != 0)
        return -1;
    int count = edm_graph_count(g);
    m->launch = calloc((size_t)(count ? count : 1), sizeof *m->launch);
    body_table table = table_new(count);
    if (!m->launch || !table.e) {
        table_free(&table);
        edm_cuda_module_free(m);
        return edm_nomem(st);
    }
    m->nlaunch = count;
    sbuf out = {0}, body = {0};
    mma_need ws = {0, 0};
    sb_printf(&out,
              "/* generated by edmc: CUDA C for NVRTC; storage %s (network scope \"%s\"), math f32, batch %lld */\n",
              edm_dtype_name(opt->storage), opt->network_scope ? opt->network_scope : "unet", (long long)opt->batch);
    sb_puts(&out, PREAMBLE_TYPES);
    if (uses_mma(opt))
        emit_mma_preamble(&out, opt);
    emit_index_preamble(&out, module_index_bits(g, opt));
    int dropout = 0;
    for (int id = 0; id < count; id++)
        dropout |= edm_graph_node(g, id)->op == EDM_OP_DROPOUT;
    if (opt->training && dropout)
        sb_puts(&out, PREAMBLE_MIX64);
    edm_source_unit_mark(&out, 0, NULL, 0); /* the units of cuda_source_split.h: one per kernel and its helpers */
    emit_cast_kernels(&out);
    if (opt->optimizer)
        emit_optimizer_kernels(&out);
    for (int id = 0; id < count; id++)
        m->launch[id].dtype = value_dtype(g, opt, m->launch, id);
    int rc = 0;
    for (int id = 0; id < count && rc == 0; id++) {
        const edm_node *n = edm_graph_node(g, id);
        edm_cuda_launch *L = &m->launch[id];
        L->node = id;
        node_ctx c = {.g = g, .opt = opt, .id = id, .n = n, .L = L, .y = bind(&n->shape, opt->batch),
                      .ty = L->dtype, .ta = EDM_F32, .tb = EDM_F32, .mma = contraction_mma(opt, n), .ws = &ws};
        if (n->ninputs > 0) {
            c.a = bind(&edm_graph_node(g, n->input[0])->shape, opt->batch);
            c.ta = m->launch[n->input[0]].dtype;
        }
        if (n->ninputs > 1) {
            c.b = bind(&edm_graph_node(g, n->input[1])->shape, opt->batch);
            c.tb = m->launch[n->input[1]].dtype;
        }
        L->numel = c.y.numel;
        if (n->op == EDM_OP_INPUT || n->op == EDM_OP_PARAM || n->op == EDM_OP_BUFFER) {
            L->kind = EDM_CUDA_NONE;
            continue;
        }
        if (is_alias(n, opt)) {
            L->kind = EDM_CUDA_ALIAS;
            continue;
        }
        if (n->op == EDM_OP_ATTENTION) { /* three operands: node kernels take two */
            rc = edm_fail(st, EDM_ERR_INTERNAL, n->loc, "CUDA codegen: attention runs only inside a fused plan");
            break;
        }
        L->kind = EDM_CUDA_KERNEL;
        body.len = 0;
        if (body.p)
            body.p[0] = '\0';
        rc = gen_node(&c, &body, st);
        if (rc != 0)
            break;
        if (body.oom) {
            rc = edm_nomem(st);
            break;
        }
        char name[EDM_CUDA_NAME];
        snprintf(name, sizeof name, "k%d_%s", id, edm_op_name(n->op));
        int oom = 0, unit = id + 1; /* the unit its kernel opens (below), where it is the first */
        const char *earlier = table_name(&table, body.p, name, &unit, &oom);
        if (oom) {
            rc = edm_nomem(st);
            break;
        }
        if (earlier) {
            snprintf(L->kernel, sizeof L->kernel, "%s", earlier);
            m->nshared++;
        } else {
            snprintf(L->kernel, sizeof L->kernel, "%s", name);
            edm_source_unit_mark(&out, id + 1, NULL, 0);
            sb_printf(&out, "\n/* %%%d %s%s%s */\n", id, edm_op_name(n->op), n->scope && n->scope[0] ? " in " : "",
                      n->scope ? n->scope : "");
            emit_named(&out, body.p, L->kernel);
            m->nkernels++;
        }
        /* per-node helpers (small; named after the node) */
        if (opt->gemm_library && (n->op == EDM_OP_CONV2D || n->op == EDM_OP_CONV2D_BWD_DATA ||
                                  n->op == EDM_OP_CONV2D_BWD_WEIGHT))
            emit_conv_helper(&c, &out, m);
    }
    edm_source_units_end(&out);
    if (rc == 0 && out.oom)
        rc = edm_nomem(st);
    free(body.p);
    table_free(&table);
    if (rc != 0) {
        free(out.p);
        edm_cuda_module_free(m);
        return -1;
    }
    m->source = out.p;
    m->len = out.len;
    m->splitk_floats = ws.floats;
    m->splitk_counts = ws.counts;
    return 0;
}

/* ------------------------------------------------------------------ fused plans */

#include "compiler/passes/fusion.h"

/* A group kernel's tables of its steps' literal arguments (step_literals):
 * the values one step after the other, as C text ("N, " / "F, "). */
typedef struct {
    sbuf ints, floats;
    int nints, nfloats;
    int *int_at, *float_at; /* per step of the group: where its values start */
} group_literals;

typedef struct {
    const edm_plan *p;
    const edm_cuda_options *opt;
    const edm_dtype *dt;
    const edm_plan_step *s;
    edm_cuda_step_launch *L;
    int mix64;        /* a dropout inside: the module needs edm_mix64 */
    mma_need *ws; /* the module's split-K workspace */
    body_table *kernels; /* the steps' kernels so far, by text and launch shape */
    int unit;            /* the source unit being written: its plan group's index + 1 */
    int *needs, *nneeds; /* the earlier units whose functions it calls (a group kernel's reused steps) */
    const bshape *coords; /* while a prologue gets its element's coordinates d0_.. in this shape, else NULL */
    int approx; /* while the prologue of a tensor-core operand is emitted: fast_math_expr's intrinsics */
    int wide;   /* while KNAME_in1q8 is emitted: a stored value read at idx is element e_ of l<slot>_ */
    unsigned long long wide_slots; /* and the slots it read so (ld8 before the loop) */
    group_literals *lits; /* a grouped step: its group's literal tables (step_literals) */
    int first_step;       /* and the group's first step */
} step_ctx;

static int is_member(const edm_plan_step *s, int node)
{
    for (int m = 0; m < s->nmembers; m++)
        if (s->members[m].node == node)
            return 1;
    return 0;
}

/* The parameter index of stored value v's base among the step's inputs. */
static int input_slot(const step_ctx *x, int v)
{
    int base = x->p->values[v].base;
    for (int k = 0; k < x->L->ninputs; k++)
        if (x->L->inputs[k] == base)
            return k;
    return -1;
}

/* Writes into ref how member `um` (of the step's list) reads its operand k
 * at index idx (a variable of the function being written), emitting any
 * index arithmetic into b first.  Its variables are named by member index,
 * not node id, so that two steps of the same structure get the same text
 * (one kernel for both: dedupe_kernel). */
static int operand_ref(step_ctx *x, sbuf *b, int um, int k, edm_member_role role, char *ref, size_t size,
                       edm_status *st)
{
    const edm_graph *g = x->p->g;
    int user = x->s->members[um].node;
    const edm_node *u = edm_graph_node(g, user);
    int a = u->input[k];
    const edm_node *na = edm_graph_node(g, a);
    if (na->op == EDM_OP_CONST) {
        lit_f32(ref, size, na->attr.constant.value);
        return 0;
    }
    if (a == x->s->core && role == EDM_ROLE_EPILOGUE) {
        snprintf(ref, size, "c");
        return 0;
    }
    for (int m = 0; m < x->s->nmembers; m++) {
        const edm_plan_member *pm = &x->s->members[m];
        if (pm->node == a && pm->role == role && pm->role != EDM_ROLE_CORE) {
            snprintf(ref, size, "v%d", m);
            return 0;
        }
    }
    int slot = input_slot(x, a);
    if (slot < 0)
        return edm_fail(st, EDM_ERR_INTERNAL, u->loc, "CUDA codegen: step %%%d reads %%%d, which is not stored",
                        x->s->root, a);
    bshape bu = bind(&u->shape, x->opt->batch), ba = bind(&na->shape, x->opt->batch);
    if (bu.numel == ba.numel && edm_dims_same_order(bu.dim, bu.rank, ba.dim, ba.rank)) {
        if (x->wide) {
            x->wide_slots |= 1ull << slot;
            snprintf(ref, size, "l%d_[e_]", slot);
        } else {
            snprintf(ref, size, "ld(P.i%d, idx)", slot);
        }
        return 0;
    }
    char var[32];
    snprintf(var, sizeof var, "o%d_%d", um, k);
    if (x->coords && same_dims(&bu, x->coords)) {
        emit_index_at(b, &bu, &ba, var);
        snprintf(ref, size, "ld(P.i%d, %s)", slot, var);
        return 0;
    }
    index_plan ip;
    plan_broadcast(&bu, &ba, &ba, &ip);
    const char *vars[] = {var, "unused_"};
    if (ip.rank == 0) {
        sb_printf(b, "        const edm_ix %s = 0;\n", var);
    } else {
        emit_index(b, &ip, 1, vars, "idx");
    }
    snprintf(ref, size, "ld(P.i%d, %s)", slot, var);
    return 0;
}

/* A concatenation or a slice inside a step (the ew rule), member m: element
 * idx read from the input whose part of the axis holds it (a slice: its one
 * input, shifted by the start); the inputs are stored values or constants. */
static int gather_member(step_ctx *x, sbuf *b, int m, edm_status *st)
{
    const edm_graph *g = x->p->g;
    int id = x->s->members[m].node;
    const edm_node *n = edm_graph_node(g, id);
    bshape y = bind(&n->shape, x->opt->batch);
    int cat = n->op == EDM_OP_CONCAT, ax = cat ? n->attr.concat.axis : n->attr.slice.axis;
    long long inner = (long long)prod(&y, ax + 1, y.rank), ly = (long long)y.dim[ax] * inner, blk[2] = {0, 0};
    /* with the element's coordinates (x->coords): each input's offset from them, no division */
    int at = x->coords && same_dims(&y, x->coords);
    long long first = 0; /* at: the first input's extent along the axis */
    char ref[2][320];
    for (int k = 0; k < n->ninputs && k < 2; k++) {
        const edm_node *in = edm_graph_node(g, n->input[k]);
        blk[k] = (long long)in->shape.dim[ax] * inner;
        if (k == 0)
            first = (long long)bind(&in->shape, x->opt->batch).dim[ax];
        if (in->op == EDM_OP_CONST) {
            lit_f32(ref[k], sizeof ref[k], in->attr.constant.value);
            continue;
        }
        int slot = input_slot(x, n->input[k]);
        if (slot < 0)
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "CUDA codegen: the %s %%%d reads %%%d, not stored",
                            edm_op_name(n->op), id, n->input[k]);
        if (at) {
            bshape bi = bind(&in->shape, x->opt->batch);
            int64_t stride[EDM_MAX_RANK];
            strides_of(&bi, stride);
            /* the coordinate along the axis in this input: shifted by the first input's extent or the start */
            long long shift = cat ? (k == 0 ? 0 : -first) : (long long)n->attr.slice.start;
            int len = snprintf(ref[k], sizeof ref[k], "ld(P.i%d, 0", slot);
            for (int i = 0; i < y.rank && len > 0 && (size_t)len < sizeof ref[k]; i++)
                len += i == ax && shift != 0
                           ? snprintf(ref[k] + len, sizeof ref[k] - (size_t)len, " + (d%d_ + %lld_ix) * %lld_ix", i,
                                      shift, (long long)stride[i])
                           : snprintf(ref[k] + len, sizeof ref[k] - (size_t)len, " + d%d_ * %lld_ix", i,
                                      (long long)stride[i]);
            if (len > 0 && (size_t)len < sizeof ref[k])
                len += snprintf(ref[k] + len, sizeof ref[k] - (size_t)len, ")");
            if (len < 0 || (size_t)len >= sizeof ref[k])
                return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "CUDA codegen: the %s %%%d: a read too long to write",
                                edm_op_name(n->op), id);
            continue;
        }
        long long off = cat ? (k == 0 ? 0 : -blk[0]) : (long long)n->attr.slice.start * inner;
        snprintf(ref[k], sizeof ref[k], "ld(P.i%d, o_ * %lld_ix + r_ + %lld_ix)", slot, blk[k], off);
    }
    if (at) {
        if (cat)
            sb_printf(b, "        const float v%d = d%d_ < %lld_ix ? %s : %s;\n", m, ax, first, ref[0], ref[1]);
        else
            sb_printf(b, "        const float v%d = %s;\n", m, ref[0]);
        return 0;
    }
    sb_printf(b, "        float v%d;\n        {\n            const edm_ix o_ = idx / %lld_ix, r_ = idx %% %lld_ix;\n",
              m, ly, ly);
    if (cat)
        sb_printf(b, "            v%d = r_ < %lld_ix ? %s : %s;\n        }\n", m, blk[0], ref[0], ref[1]);
    else
        sb_printf(b, "            v%d = %s;\n        }\n", m, ref[0]);
    return 0;
}

/* The hardware's approximate exp and division (edm_exp_approx: __expf,
 * ex2.approx, 2 + 1.2·|x| ulp; edm_div_approx: __fdividef, 2 ulp; in the mma
 * preamble, cuda_gemm_mma.c) for the math a tensor-core operand's
 * prologue runs, as many times per element as the convolution has taps,
 * before rounding the result to f16/bf16 (11 or 8 bits): NULL for an op that
 * keeps its exact text.  __fdividef(x, y) is 0 for |y| > 2^126, where the
 * exact quotient of any operand here is 0 to 16 bits. */
static const char *fast_math_expr(edm_op op)
{
    switch (op) {
    case EDM_OP_EXP: return "edm_exp_approx(x)";
    case EDM_OP_SIGMOID: return "edm_div_approx(1.0f, 1.0f + edm_exp_approx(-(x)))";
    case EDM_OP_SILU: return "edm_div_approx(x, 1.0f + edm_exp_approx(-(x)))";
    case EDM_OP_DIV: return "edm_div_approx(u, v)";
    default: return NULL;
    }
}

/* The members of (role, operand) at index `idx`, each into `vM` (M its index
 * in the step's list); *last gets the last one's index. */
static int emit_members(step_ctx *x, sbuf *b, edm_member_role role, int operand, int *last, edm_status *st)
{
    const edm_graph *g = x->p->g;
    *last = -1;
    for (int m = 0; m < x->s->nmembers; m++) {
        const edm_plan_member *pm = &x->s->members[m];
        if (pm->role != role || pm->operand != operand || pm->node == x->s->core)
            continue;
        const edm_node *n = edm_graph_node(g, pm->node);
        char ra[160], rb[160], buf[256];
        if (n->op == EDM_OP_CONCAT || n->op == EDM_OP_SLICE) { /* a gather from its stored inputs */
            if (gather_member(x, b, m, st) != 0)
                return -1;
            *last = m;
            continue;
        }
        if (operand_ref(x, b, m, 0, role, ra, sizeof ra, st) != 0)
            return -1;
        if (n->ninputs > 1 && operand_ref(x, b, m, 1, role, rb, sizeof rb, st) != 0)
            return -1;
        edm_plan_options po = {.training = x->opt->training};
        if (edm_plan_is_alias(&po, n) || n->op == EDM_OP_EXPAND) {
            sb_printf(b, "        const float v%d = %s;\n", m, ra);
        } else if (n->op == EDM_OP_DROPOUT) {
            char thr[64], scale[64];
            int mask = n->attr.dropout.mask_id > 0 ? n->attr.dropout.mask_id : pm->node;
            lit_f64(thr, sizeof thr, n->attr.dropout.p * 18446744073709551616.0);
            lit_f32(scale, sizeof scale, 1 / (1 - n->attr.dropout.p));
            sb_printf(b,
                      "        const float v%d = (double)edm_mix64(*P.seed ^ edm_mix64(%lluULL * 0x9e3779b97f4a7c15ULL + "
                      "(unsigned long long)idx)) >= %s ? %s * %s : 0.0f;\n",
                      m, (unsigned long long)mask, thr, ra, scale);
            x->mix64 = 1;
        } else if (edm_op_class_of(n->op) == EDM_CLASS_UNARY) {
            const char *fast = x->approx ? fast_math_expr(n->op) : NULL;
            sb_printf(b, "        float v%d;\n        {\n            %sconst float x = %s;\n            v%d = %s;\n        }\n",
                      m, unary_bounds(n, buf, sizeof buf), ra, m, fast ? fast : unary_expr(n));
        } else if (edm_op_class_of(n->op) == EDM_CLASS_BINARY) {
            const char *fast = x->approx ? fast_math_expr(n->op) : NULL;
            sb_printf(b,
                      "        float v%d;\n        {\n            const float u = %s, v = %s;\n            v%d = %s;\n"
                      "        }\n",
                      m, ra, rb, m, fast ? fast : binary_expr(n->op));
        } else {
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "CUDA codegen: %s is not elementwise", edm_op_name(n->op));
        }
        *last = m;
    }
    return 0;
}

/* KNAME_in1q8 (wgrad_a_wide): operand 1 of the weight gradient, dy, with its
 * prologue, at the eight elements idx0_.. of one pixel row (coordinates d0_,
 * d1_, d2_ and d30_ + e_), packed in pairs as the product's operands.  Each
 * stored value the members read at the element's own index comes in one
 * 16-byte load (ld8) before them; the members then run once an element. */
static int emit_wide_reader(step_ctx *x, sbuf *b, const edm_node *core, const bshape *shape, edm_dtype mma,
                            edm_status *st)
{
    const char *ty = edm_cuda_dtype_suffix(mma);
    const edm_node *in = edm_graph_node(x->p->g, core->input[1]);
    sbuf members = {0};
    int last;
    x->coords = shape;
    x->approx = 1;
    x->wide = 1;
    x->wide_slots = 0;
    int rc = emit_members(x, &members, EDM_ROLE_PROLOGUE, 1, &last, st);
    x->coords = NULL;
    x->approx = x->wide = 0;
    if (rc == 0 && members.oom)
        rc = edm_nomem(st);
    if (rc != 0) {
        free(members.p);
        return -1;
    }
    sb_puts(b, "static __device__ __forceinline__ void KNAME_in1q8(const KNAME_args &P, edm_ix idx0_, edm_ix d0_, "
               "edm_ix d1_, edm_ix d2_, edm_ix d30_, unsigned *w_)\n{\n");
    if (last < 0 && in->op == EDM_OP_CONST) {
        char lit[64];
        lit_f32(lit, sizeof lit, in->attr.constant.value);
        sb_printf(b, "    for (int j = 0; j < 4; j++)\n        w_[j] = edm_mma_pack_%s(%s, %s);\n", ty, lit, lit);
    } else if (last < 0) {
        sb_printf(b, "    edm_ld8pack_%s(P.i%d, idx0_, w_);\n", ty, input_slot(x, core->input[1]));
    } else {
        for (int slot = 0; slot < EDM_CUDA_MAX_STEP_INPUTS; slot++)
            if (x->wide_slots >> slot & 1u)
                sb_printf(b, "    float l%d_[8];\n    ld8(P.i%d, idx0_, l%d_);\n", slot, slot, slot);
        sb_printf(b,
                  "    float r_[8];\n"
                  "    for (int e_ = 0; e_ < 8; e_++) {\n"
                  "        const edm_ix idx = idx0_ + e_, d3_ = d30_ + e_;\n"
                  "        (void)idx;\n"
                  "        (void)d3_;\n"
                  "%s"
                  "        r_[e_] = v%d;\n"
                  "    }\n"
                  "    for (int j = 0; j < 4; j++)\n"
                  "        w_[j] = edm_mma_pack_%s(r_[2 * j], r_[2 * j + 1]);\n",
                  members.p ? members.p : "", last, ty);
    }
    sb_puts(b, "    (void)P;\n    (void)idx0_;\n    (void)d0_;\n    (void)d1_;\n    (void)d2_;\n    (void)d30_;\n}\n");
    free(members.p);
    return 0;
}

/* Copies in to out with every `from` replaced by `to`. */
static void replace_all(sbuf *out, const char *in, const char *from, const char *to)
{
    size_t n = strlen(from);
    for (const char *p = in;;) {
        const char *q = strstr(p, from);
        if (!q) {
            sb_puts(out, p);
            return;
        }
        sb_putn(out, p, (size_t)(q - p));
        sb_puts(out, to);
        p = q + n;
    }
}

/* Replaces the text from `start` up to and including `end` (searched after
 * start) by `to`, at every occurrence. */
static void replace_span(sbuf *out, const char *in, const char *start, const char *end, const char *to)
{
    for (const char *p = in;;) {
        const char *a = strstr(p, start);
        const char *e = a ? strstr(a, end) : NULL;
        if (!a || !e) {
            sb_puts(out, p);
            return;
        }
        sb_putn(out, p, (size_t)(a - p));
        sb_puts(out, to);
        p = e + strlen(end);
    }
}

/* A node kernel's body made a step's: the operands through KNAME_in0/1, the
 * store through KNAME_out, the accessors and the kernel taking the step's
 * arguments P. */
static int fuse_body(const char *body, const char *head, sbuf *out)
{
    /* the accessors' signatures, from the first to the last text (NULL: head) */
    static const char *const spans[][3] = {
        {"float KNAME_A(const ", ", edm_ix z", "float KNAME_A(const KNAME_args &P, edm_ix z"},
        {"float KNAME_B(const ", ", edm_ix z", "float KNAME_B(const KNAME_args &P, edm_ix z"},
        {"void KNAME_C(", ", edm_ix z", "void KNAME_C(const KNAME_args &P, edm_ix z"},
        {"unsigned KNAME_A2(const ", ", edm_ix z", "unsigned KNAME_A2(const KNAME_args &P, edm_ix z"},
        {"float KNAME_H(const ", ", edm_ix z", "float KNAME_H(const KNAME_args &P, edm_ix z"},
        {"const void *KNAME_A8(const ", ", edm_ix z", "const void *KNAME_A8(const KNAME_args &P, edm_ix z"},
        {"void KNAME_A8v(const ", ", edm_ix z", "void KNAME_A8v(const KNAME_args &P, edm_ix z"},
        {"extern \"C\" __global__", "seed)\n{\n", NULL},
    };
    /* then their calls and the operands' loads and stores */
    static const char *const subs[][2] = {
        {"KNAME_A(a, b, ", "KNAME_A(P, "}, {"KNAME_B(a, b, ", "KNAME_B(P, "}, {"KNAME_C(y, ", "KNAME_C(P, "},
        {"ld(a, ", "KNAME_in0(P, "},    {"ld(b, ", "KNAME_in1(P, "},    {"ld(c3, ", "KNAME_in2(P, "},
        {"ldq(a, ", "KNAME_in0q(P, "},  {"ldq(b, ", "KNAME_in1q(P, "},  {"stq(y, ", "KNAME_outq(P, "},
        {"st(y, ", "KNAME_out(P, "},           {"KNAME_A2(a, b, ", "KNAME_A2(P, "}, {"KNAME_H(a, b, ", "KNAME_H(P, "},
        {"edm_ldpair_f16(b, ", "KNAME_in1pair(P, "}, {"edm_ldpair_bf16(b, ", "KNAME_in1pair(P, "},
        {"KNAME_A8(a, b, ", "KNAME_A8(P, "},   {"edm_addr_of(b, ", "KNAME_in1addr(P, "},
        {"KNAME_A8v(a, b, ", "KNAME_A8v(P, "}, {"ldq8_f16(b, ", "KNAME_in1q8(P, "}, {"ldq8_bf16(b, ", "KNAME_in1q8(P, "},
    };
    const size_t nspans = sizeof spans / sizeof spans[0], nsubs = sizeof subs / sizeof subs[0];
    sbuf t[2] = {{0}, {0}};
    sb_puts(&t[0], body);
    int cur = 0;
    for (size_t i = 0; i < nspans + nsubs; i++) {
        sbuf *to = &t[!cur];
        to->len = 0;
        if (to->p)
            to->p[0] = '\0';
        const char *from = t[cur].p ? t[cur].p : "";
        if (i < nspans)
            replace_span(to, from, spans[i][0], spans[i][1], spans[i][2] ? spans[i][2] : head);
        else
            replace_all(to, from, subs[i - nspans][0], subs[i - nspans][1]);
        cur = !cur;
    }
    sb_puts(out, t[cur].p ? t[cur].p : "");
    int oom = t[0].oom || t[1].oom;
    free(t[0].p);
    free(t[1].p);
    return oom ? -1 : 0;
}

/* Where a grouped step's literal arguments go (step_literals): a field of
 * KNAME_args each, set from the group kernel's tables (gen_group). */
#define LITERAL_FIELDS "/*@literal-fields*/"
#define LITERAL_INIT "/*@literal-init*/"

/* A grouped step's text with its shapes and f32 constants read from the
 * arguments kv_ and fv_ (cuda_step_literals.h), the values they take
 * recorded in the group's tables. */
static int step_literals(step_ctx *x, const char *in, sbuf *out, edm_status *st)
{
    group_literals *gl = x->lits;
    int k0 = gl->nints, f0 = gl->nfloats;
    gl->int_at[x->L->step - x->first_step] = k0;
    gl->float_at[x->L->step - x->first_step] = f0;
    sbuf taken = {0}, fields = {0}, init = {0}, t = {0};
    int nk = 0, nf = 0;
    edm_cuda_step_literals(in, &taken, &gl->ints, &nk, &gl->floats, &nf);
    gl->nints += nk;
    gl->nfloats += nf;
    if (nk > 0)
        sb_printf(&fields, "    edm_ix k_[%d];\n", nk);
    if (nf > 0)
        sb_printf(&fields, "    float f_[%d];\n", nf);
    for (int j = 0; j < nk; j++)
        sb_printf(&init, "%skv_[%d]%s", j ? ", " : ", {", j, j + 1 == nk ? "}" : "");
    for (int j = 0; j < nf; j++)
        sb_printf(&init, "%sfv_[%d]%s", j ? ", " : ", {", j, j + 1 == nf ? "}" : "");
    replace_all(&t, taken.p ? taken.p : "", LITERAL_FIELDS, fields.p ? fields.p : "");
    out->len = 0;
    if (out->p)
        out->p[0] = '\0';
    replace_all(out, t.p ? t.p : "", LITERAL_INIT, init.p ? init.p : "");
    int oom = taken.oom || fields.oom || init.oom || t.oom || out->oom || gl->ints.oom || gl->floats.oom;
    free(taken.p);
    free(fields.p);
    free(init.p);
    free(t.p);
    return oom ? edm_nomem(st) : 0;
}

/* Emits a step's kernel text (KNAME for its name) unless an earlier step
 * has the same text and launch shape: then L names that one's function, so
 * the repeated blocks of a network compile once (NVRTC's time). */
static int emit_step_kernel(step_ctx *x, const char *text, int grouped, sbuf *out, edm_status *st)
{
    edm_cuda_step_launch *L = x->L;
    sbuf key = {0};
    /* a grouped step's function is told its blocks (bx_ of gx_): its grid is not part of its text */
    sb_printf(&key, "%d %u %u %u %u %u %u\n%s", grouped, grouped ? 0 : L->grid[0], L->grid[1], L->grid[2], L->block[0],
              L->block[1], L->block[2], text);
    int oom = key.oom, unit = x->unit;
    const char *earlier = oom ? NULL : table_name(x->kernels, key.p, L->kernel, &unit, &oom);
    free(key.p);
    if (oom)
        return edm_nomem(st);
    if (earlier && grouped && unit != x->unit) { /* the group kernel calls that unit's KNAME_run */
        int seen = 0;
        for (int i = 0; i < *x->nneeds; i++)
            seen |= x->needs[i] == unit;
        if (!seen)
            x->needs[(*x->nneeds)++] = unit;
    }
    const edm_graph *g = x->p->g;
    const edm_node *root = edm_graph_node(g, x->s->root);
    sb_printf(out, "\n/* step %d: %s -> %%%d%s%s%s%s */\n", L->step, x->s->kind, x->s->root, root->scope[0] ? " in " : "",
              root->scope, earlier ? ": the kernel of " : "", earlier ? earlier : "");
    if (earlier)
        snprintf(L->kernel, sizeof L->kernel, "%s", earlier);
    else
        emit_named(out, text, L->kernel);
    return 0;
}

/* A step kernel's head: the function's declaration (grouped: the device
 * function KNAME_run), its launch bounds' minimum blocks `bounds` (min_blocks)
 * and the text after its name, params. */
static void step_head(sbuf *head, int grouped, const char *bounds, const char *params)
{
    if (grouped)
        sb_printf(head, "static __device__ __noinline__ void KNAME_run%s", params ? params : "");
    else
        sb_printf(head, "extern \"C\" __global__ void __launch_bounds__(%d%s) KNAME%s", BLOCK, bounds,
                  params ? params : "");
}

/* grouped: the step as a device function KNAME_run(bx_, gx_, <its parameters>)
 * that a group kernel calls with its share of the blocks. */
static int gen_step(step_ctx *x, sbuf *out, int grouped, edm_status *st)
{
    const edm_graph *g = x->p->g;
    const edm_plan_step *s = x->s;
    edm_cuda_step_launch *L = x->L;
    /* the stored values it reads */
    for (int m = 0; m < s->nmembers; m++) {
        const edm_node *n = edm_graph_node(g, s->members[m].node);
        for (int k = 0; k < n->ninputs; k++) {
            int a = n->input[k];
            if (edm_graph_node(g, a)->op == EDM_OP_CONST || is_member(s, a))
                continue;
            if (!x->p->values[a].stored)
                return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "CUDA codegen: step %%%d reads %%%d, not stored", s->root, a);
            if (input_slot(x, a) >= 0)
                continue;
            if (L->ninputs == EDM_CUDA_MAX_STEP_INPUTS)
                return edm_fail(st, EDM_ERR_LIMIT, n->loc, "CUDA codegen: a step reads more than %d values",
                                EDM_CUDA_MAX_STEP_INPUTS);
            L->inputs[L->ninputs++] = x->p->values[a].base;
        }
    }
    sbuf b = {0}, head = {0};
    sb_printf(&b, "struct KNAME_args {\n    %s *y;\n", ctype(L->dtype));
    for (int k = 0; k < L->ninputs; k++)
        sb_printf(&b, "    const %s *i%d;\n", ctype(x->dt[L->inputs[k]]), k);
    sb_printf(&b, "    const unsigned long long *seed;\n%s};\n", grouped ? LITERAL_FIELDS : "");
    const edm_node *core = s->core >= 0 ? edm_graph_node(g, s->core) : NULL;
    edm_dtype mma = core ? contraction_mma(x->opt, core) : EDM_F32;
    /* the head after its name; its launch bounds wait for the core's tile (step_head) */
    sbuf params = {0};
    sb_printf(&params, "(%s%s *__restrict__ y", grouped ? "unsigned bx_, unsigned gx_, " : "", ctype(L->dtype));
    for (int k = 0; k < L->ninputs; k++)
        sb_printf(&params, ", const %s *__restrict__ i%d", ctype(x->dt[L->inputs[k]]), k);
    sb_printf(&params, ", const unsigned long long *__restrict__ seed%s)\n{\n    const KNAME_args P = {y",
              grouped ? ", const edm_ix *__restrict__ kv_, const float *__restrict__ fv_" : "");
    for (int k = 0; k < L->ninputs; k++)
        sb_printf(&params, ", i%d", k);
    sb_printf(&params, ", seed%s};\n", grouped ? LITERAL_INIT : "");
    if (grouped)
        sb_puts(&params, "    (void)kv_;\n    (void)fv_;\n");
    int rc = 0, last;
    /* the operands a tensor-core convolution reads with their coordinates (coord_operands) */
    bshape in_shape[2] = {{0}, {0}};
    for (int k = 0; core && k < core->ninputs && k < 2; k++)
        in_shape[k] = bind(&edm_graph_node(g, core->input[k])->shape, x->opt->batch);
    edm_cuda_options nolib = *x->opt;
    nolib.gemm_library = 0; /* the generated contraction: the prologue and epilogue live in it */
    unsigned coords = core ? coord_operands(&nolib, core, mma, in_shape) : 0;
    int weight_raw = 0; /* the weight's pairs read as stored (KNAME_in1addr) */
    /* operand readers: the prologue, or a load */
    for (int k = 0; core && k < core->ninputs && rc == 0; k++) {
        if (k < 2 && (coords >> k & 1u)) {
            sb_printf(&b, "static __device__ __forceinline__ float KNAME_in%dq(const KNAME_args &P, edm_ix idx, edm_ix d0_, "
                          "edm_ix d1_, edm_ix d2_, edm_ix d3_)\n{\n", k);
            x->coords = &in_shape[k];
        } else {
            sb_printf(&b, "static __device__ __forceinline__ float KNAME_in%d(const KNAME_args &P, edm_ix idx)\n{\n", k);
        }
        x->approx = mma != EDM_F32;
        rc = emit_members(x, &b, EDM_ROLE_PROLOGUE, k, &last, st);
        x->coords = NULL;
        x->approx = 0;
        const edm_node *in = edm_graph_node(g, core->input[k]);
        char lit[64];
        if (rc != 0)
            break;
        if (last >= 0) {
            sb_printf(&b, "    return v%d;\n}\n", last);
        } else if (in->op == EDM_OP_CONST) {
            lit_f32(lit, sizeof lit, in->attr.constant.value);
            sb_printf(&b, "    (void)P;\n    (void)idx;\n    return %s;\n}\n", lit);
        } else {
            sb_printf(&b, "    return ld(P.i%d, idx);\n}\n", input_slot(x, core->input[k]));
        }
        if (k == 1 && core->op == EDM_OP_CONV2D_BWD_WEIGHT && (coords >> 1 & 1u) &&
            wgrad_a_wide(&nolib, mma, in_shape[1].dim[2], in_shape[1].dim[3]))
            rc = emit_wide_reader(x, &b, core, &in_shape[1], mma, st);
        if (k == 1 && conv_a_pairs(&nolib, mma, core, in_shape[0].dim[1])) { /* the weight's k pairs (KNAME_A2) */
            sb_puts(&b, "static __device__ __forceinline__ unsigned KNAME_in1pair(const KNAME_args &P, edm_ix idx)\n{\n");
            const int as_stored = last < 0 && in->op != EDM_OP_CONST;
            weight_raw = as_stored && x->dt[core->input[k]] == mma; /* its bits are the operands' */
            if (as_stored)
                sb_printf(&b, "    return edm_ldpair_%s(P.i%d, idx);\n}\n", edm_cuda_dtype_suffix(mma),
                          input_slot(x, core->input[k]));
            else
                sb_printf(&b, "    return edm_mma_pack_%s(KNAME_in1(P, idx), KNAME_in1(P, idx + 1));\n}\n",
                          edm_cuda_dtype_suffix(mma));
            if (weight_raw) /* and its address: cp.async's source (KNAME_A8, if the body copies) */
                sb_printf(&b,
                          "static __device__ __forceinline__ const void *KNAME_in1addr(const KNAME_args &P, edm_ix idx)\n"
                          "{\n    return edm_addr_of(P.i%d, idx);\n}\n",
                          input_slot(x, core->input[k]));
        }
    }
    /* the store: the epilogue, then the root (a grouped convolution's with its coordinates) */
    bshape y_shape = {0};
    if ((coords & 1u) && core->op != EDM_OP_CONV2D_BWD_WEIGHT) {
        y_shape = bind(&core->shape, x->opt->batch);
        sb_puts(&b, "static __device__ __forceinline__ void KNAME_outq(const KNAME_args &P, edm_ix idx, edm_ix d0_, "
                    "edm_ix d1_, edm_ix d2_, edm_ix d3_, float c)\n{\n");
        x->coords = &y_shape;
    } else {
        sb_puts(&b, "static __device__ __forceinline__ void KNAME_out(const KNAME_args &P, edm_ix idx, float c)\n{\n");
    }
    if (rc == 0)
        rc = emit_members(x, &b, EDM_ROLE_EPILOGUE, 0, &last, st);
    x->coords = NULL;
    if (rc == 0) {
        if (last >= 0)
            sb_printf(&b, "    (void)c;\n    st(P.y, idx, v%d);\n}\n", last);
        else
            sb_puts(&b, "    st(P.y, idx, c);\n}\n");
    }
    if (rc == 0 && !core) {
        bshape y = bind(&edm_graph_node(g, s->root)->shape, x->opt->batch);
        step_head(&head, grouped, "", params.p);
        sb_printf(&b, "%s    EDM_LOOP(%lld_ix) KNAME_out(P, i, 0.0f);\n}\n", head.p, (long long)y.numel);
        edm_cuda_launch tmp = {0};
        launch_1d(&tmp, y.numel);
        memcpy(L->grid, tmp.grid, sizeof L->grid);
        memcpy(L->block, tmp.block, sizeof L->block);
    } else if (rc == 0) {
        edm_cuda_launch tmp = {0};
        node_ctx c = {.g = g, .opt = x->opt, .id = s->core, .n = core, .L = &tmp,
                      .y = bind(&core->shape, x->opt->batch), .ty = L->dtype, .ta = EDM_F32, .tb = EDM_F32,
                      .mma = mma, .ws = x->ws, .a_raw = weight_raw};
        if (core->ninputs > 0)
            c.a = bind(&edm_graph_node(g, core->input[0])->shape, x->opt->batch);
        if (core->ninputs > 1)
            c.b = bind(&edm_graph_node(g, core->input[1])->shape, x->opt->batch);
        c.opt = &nolib;
        sbuf body = {0};
        rc = gen_node(&c, &body, st);
        step_head(&head, grouped, min_blocks(mma, core, tmp.mma_tile), params.p);
        if (rc == 0 && (body.oom || fuse_body(body.p ? body.p : "", head.p ? head.p : "", &b) != 0))
            rc = edm_nomem(st);
        free(body.p);
        memcpy(L->grid, tmp.grid, sizeof L->grid);
        memcpy(L->block, tmp.block, sizeof L->block);
        L->mma = tmp.mma;
        L->mma_tile = tmp.mma_tile;
        L->smem = tmp.smem;
    }
    if (rc == 0 && (b.oom || head.oom || params.oom))
        rc = edm_nomem(st);
    free(params.p);
    if (rc == 0 && grouped && (L->grid[1] != 1 || L->grid[2] != 1))
        rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "CUDA codegen: step %d of a group has a %u×%u×%u grid",
                      L->step, L->grid[0], L->grid[1], L->grid[2]);
    sbuf t1 = {0}, t2 = {0};
    const char *text = b.p ? b.p : "";
    if (rc == 0 && grouped) { /* its blocks are bx_ of gx_ */
        replace_all(&t1, text, "blockIdx.x", "bx_");
        replace_all(&t2, t1.p ? t1.p : "", "gridDim.x", "gx_");
        t1.len = 0;
        if (t1.p)
            t1.p[0] = '\0';
        replace_all(&t1, t2.p ? t2.p : "", "EDM_LOOP(", "EDM_LOOP_IN(");
        /* the reductions' tree: the group kernel's dynamic shared memory, not a static array each */
        t2.len = 0;
        if (t2.p)
            t2.p[0] = '\0';
        replace_all(&t2, t1.p ? t1.p : "", "__shared__ double sh[256];", "double *const sh = edm_group_sh;");
        if (t1.oom || t2.oom)
            rc = edm_nomem(st);
        else
            rc = step_literals(x, t2.p ? t2.p : "", &t1, st); /* its shapes and constants: arguments */
        text = t1.p ? t1.p : "";
    }
    if (rc == 0) {
        const edm_node *r = edm_graph_node(g, core ? s->core : s->root);
        L->barrier = strstr(text, "__syncthreads") != NULL;
        snprintf(L->kernel, sizeof L->kernel, "s%d_%s", x->L->step, edm_op_name(r->op));
        rc = emit_step_kernel(x, text, grouped, out, st);
    }
    free(t1.p);
    free(t2.p);
    free(b.p);
    free(head.p);
    return rc;
}

/* A group of several steps: one kernel that finds its block's step in a
 * table and calls that step's function with the step's share of the blocks,
 * its parameters from `a` and its literals from the group's tables.  Steps
 * that share a function (the same text once its literals are arguments)
 * share its call, so the kernel has one call per distinct function. */
static int gen_group(const edm_plan_group *gr, int gi, const edm_cuda_plan_module *m, const group_literals *gl,
                     edm_cuda_group_launch *G, sbuf *out, edm_status *st)
{
    snprintf(G->kernel, sizeof G->kernel, "g%d_%s", gi, gr->name);
    int nsteps = gr->nsteps, nfn = 0;
    int *fn = calloc((size_t)nsteps, sizeof *fn), *first = calloc((size_t)nsteps, sizeof *first);
    if (!fn || !first) {
        free(fn);
        free(first);
        return edm_nomem(st);
    }
    for (int i = 0; i < nsteps; i++) { /* each step's function: its index among the group's distinct ones */
        const edm_cuda_step_launch *L = &m->launch[gr->first_step + i];
        fn[i] = -1;
        for (int f = 0; f < nfn && fn[i] < 0; f++)
            if (strcmp(m->launch[gr->first_step + first[f]].kernel, L->kernel) == 0)
                fn[i] = f;
        if (fn[i] < 0) {
            first[nfn] = i;
            fn[i] = nfn++;
        }
    }
    sb_printf(out, "\nstatic __device__ const edm_ix g%d_k_[%d] = {%s};\n", gi, gl->nints ? gl->nints : 1,
              gl->nints ? gl->ints.p : "0");
    sb_printf(out, "static __device__ const float g%d_f_[%d] = {%s};\n", gi, gl->nfloats ? gl->nfloats : 1,
              gl->nfloats ? gl->floats.p : "0.0f");
    /* per step: {its last block + 1, its first block, its function, its first parameter in a, its literals} */
    sb_printf(out, "static __device__ const unsigned g%d_t_[%d][6] = {\n", gi, nsteps);
    unsigned at = 0;
    int arg = 0;
    for (int i = 0; i < nsteps; i++) {
        const edm_cuda_step_launch *L = &m->launch[gr->first_step + i];
        sb_printf(out, "    {%uU, %uU, %d, %d, %d, %d},\n", at + L->grid[0], at, fn[i], arg, gl->int_at[i],
                  gl->float_at[i]);
        at += L->grid[0];
        arg += 1 + L->ninputs;
    }
    sb_puts(out, "};\n");
    sb_printf(out, "extern \"C\" __global__ void __launch_bounds__(%d) %s(void *const *__restrict__ a, "
                   "const unsigned long long *__restrict__ seed)\n{\n", BLOCK, G->kernel);
    int barrier = 0;
    for (int s = gr->first_step; s < gr->first_step + nsteps; s++)
        barrier |= m->launch[s].barrier;
    if (barrier) /* the emulator (tests/emu) reads a kernel's text for this word to run its threads as fibers */
        sb_puts(out, "    /* its steps synchronise the block: __syncthreads */\n");
    sb_printf(out, "    const unsigned b_ = blockIdx.x;\n"
                   "    int lo_ = 0, hi_ = %d;\n"
                   "    while (lo_ < hi_) {\n"
                   "        const int mid_ = (lo_ + hi_) / 2;\n"
                   "        if (b_ < g%d_t_[mid_][0])\n"
                   "            hi_ = mid_;\n"
                   "        else\n"
                   "            lo_ = mid_ + 1;\n"
                   "    }\n"
                   "    const unsigned *const t_ = g%d_t_[lo_];\n"
                   "    void *const *const p_ = a + t_[3];\n"
                   "    switch (t_[2]) {\n",
              nsteps - 1, gi, gi);
    for (int f = 0; f < nfn; f++) {
        const edm_cuda_step_launch *L = &m->launch[gr->first_step + first[f]];
        sb_printf(out, "    case %d:\n        %s_run(b_ - t_[1], t_[0] - t_[1], (%s *)p_[0]", f, L->kernel, ctype(L->dtype));
        for (int k = 0; k < L->ninputs; k++)
            sb_printf(out, ", (const %s *)p_[%d]", ctype(m->dtype[L->inputs[k]]), k + 1);
        sb_printf(out, ", seed, g%d_k_ + t_[4], g%d_f_ + t_[5]);\n        break;\n", gi, gi);
    }
    sb_puts(out, "    }\n}\n");
    free(fn);
    free(first);
    unsigned smem = BLOCK * sizeof(double); /* edm_group_sh; a step's own use of the memory (a halo) if larger */
    for (int s = gr->first_step; s < gr->first_step + nsteps; s++)
        smem = m->launch[s].smem > smem ? m->launch[s].smem : smem;
    *G = (edm_cuda_group_launch){.grid = {at, 1, 1}, .block = {BLOCK, 1, 1}, .smem = smem,
                                 .first_step = gr->first_step, .nsteps = nsteps};
    snprintf(G->kernel, sizeof G->kernel, "g%d_%s", gi, gr->name);
    return 0;
}

void edm_cuda_plan_module_free(edm_cuda_plan_module *m)
{
    if (!m)
        return;
    free(m->source);
    free(m->launch);
    free(m->group);
    free(m->dtype);
    memset(m, 0, sizeof *m);
}

int edm_cuda_codegen_plan(const edm_plan *p, const edm_cuda_options *opt, edm_cuda_plan_module *m, edm_status *st)
{
    memset(m, 0, sizeof *m);
    if (check_options(opt, st) != 0)
        return -1;
    int count = edm_graph_count(p->g);
    m->dtype = calloc((size_t)(count ? count : 1), sizeof *m->dtype);
    m->launch = calloc((size_t)(p->nsteps ? p->nsteps : 1), sizeof *m->launch);
    m->group = calloc((size_t)(p->ngroups ? p->ngroups : 1), sizeof *m->group);
    if (!m->dtype || !m->launch || !m->group) {
        edm_cuda_plan_module_free(m);
        return edm_nomem(st);
    }
    if (edm_cuda_value_types(p->g, opt, m->dtype, st) != 0) {
        edm_cuda_plan_module_free(m);
        return -1;
    }
    sbuf kernels = {0}, out = {0};
    int rc = 0, mix64 = 0;
    mma_need ws = {0, 0};
    body_table table = table_new(p->nsteps);
    if (!table.e)
        rc = edm_nomem(st);
    int *needs = calloc((size_t)(p->nsteps ? p->nsteps : 1), sizeof *needs);
    if (!needs)
        rc = edm_nomem(st);
    for (int gi = 0; gi < p->ngroups && rc == 0; gi++) {
        /* one source unit (cuda_source_split.h): the group's text after a mark naming what it calls */
        const edm_plan_group *gr = &p->groups[gi];
        int grouped = gr->nsteps > 1, nneeds = 0;
        sbuf unit = {0};
        group_literals lits = {.int_at = calloc((size_t)gr->nsteps, sizeof(int)),
                               .float_at = calloc((size_t)gr->nsteps, sizeof(int))};
        if (!lits.int_at || !lits.float_at)
            rc = edm_nomem(st);
        for (int s = gr->first_step; s < gr->first_step + gr->nsteps && rc == 0; s++) {
            edm_cuda_step_launch *L = &m->launch[s];
            L->step = s;
            L->dtype = m->dtype[p->steps[s].root];
            step_ctx x = {.p = p, .opt = opt, .dt = m->dtype, .s = &p->steps[s], .L = L, .ws = &ws,
                          .kernels = &table, .unit = gi + 1, .needs = needs, .nneeds = &nneeds,
                          .lits = &lits, .first_step = gr->first_step};
            rc = gen_step(&x, &unit, grouped, st);
            mix64 |= x.mix64;
        }
        if (rc == 0 && grouped)
            rc = gen_group(gr, gi, m, &lits, &m->group[gi], &unit, st);
        free(lits.ints.p);
        free(lits.floats.p);
        free(lits.int_at);
        free(lits.float_at);
        edm_source_unit_mark(&kernels, gi + 1, needs, nneeds);
        sb_puts(&kernels, unit.p ? unit.p : "");
        kernels.oom |= unit.oom;
        free(unit.p);
        if (rc == 0 && !grouped) {
            const edm_cuda_step_launch *L = &m->launch[gr->first_step];
            m->group[gi] = (edm_cuda_group_launch){.first_step = gr->first_step, .nsteps = 1};
            memcpy(m->group[gi].kernel, L->kernel, sizeof L->kernel);
            memcpy(m->group[gi].grid, L->grid, sizeof L->grid);
            memcpy(m->group[gi].block, L->block, sizeof L->block);
            m->group[gi].smem = L->smem;
        }
    }
    m->nlaunch = p->nsteps;
    m->ngroups = p->ngroups;
    if (rc == 0) {
        char fuse[64];
        sb_printf(&out, "/* generated by edmc: the fused plan (--fuse=%s), %d kernels; storage %s, math f32, batch %lld */\n",
                  edm_fuse_str(p->opt.fuse, fuse, sizeof fuse), p->ngroups, edm_dtype_name(opt->storage),
                  (long long)opt->batch);
        sb_puts(&out, PREAMBLE_TYPES);
        if (uses_mma(opt))
            emit_mma_preamble(&out, opt);
        emit_index_preamble(&out, module_index_bits(p->g, opt));
        /* a step inside a group kernel loops over its own share of the blocks */
        sb_puts(&out, "#define EDM_LOOP_IN(n) for (edm_ix i = (edm_ix)bx_ * blockDim.x + threadIdx.x; i < (n); \\\n"
                      "                            i += (edm_ix)gx_ * blockDim.x)\n"
                      "#ifndef EDM_DYNAMIC_SHARED\n"
                      "#define EDM_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]\n"
                      "#endif\n"
                      "EDM_DYNAMIC_SHARED(double, edm_group_sh);\n");
        if (mix64)
            sb_puts(&out, PREAMBLE_MIX64);
        edm_source_unit_mark(&out, 0, NULL, 0);
        emit_cast_kernels(&out);
        if (opt->optimizer)
            emit_optimizer_kernels(&out);
        sb_puts(&out, kernels.p ? kernels.p : "");
        edm_source_units_end(&out);
        if (out.oom || kernels.oom)
            rc = edm_nomem(st);
    }
    free(kernels.p);
    free(needs);
    table_free(&table);
    if (rc != 0) {
        free(out.p);
        edm_cuda_plan_module_free(m);
        return -1;
    }
    m->source = out.p;
    m->len = out.len;
    m->splitk_floats = ws.floats;
    m->splitk_counts = ws.counts;
    return 0;
}
