/* The CPU backend against an independent reference, in the spirit of ggml's
 * test-backend-ops: a table of cases, each a tiny graph with one op under test
 * (or a short chain), run at batch 1 and 2 (and 3 on two threads) in float64
 * and float32 and compared with a naive float64 evaluator written here with
 * plain nested loops (direct convolution and its gradients, triple-loop
 * matmul, two-pass softmax, multi-index broadcasting).  The reference shares
 * no code with the backend: it even derives every output shape itself and
 * checks it against the graph's.
 *
 * Error measure: normalised MSE, Σ(y - ref)² / Σ ref².
 *   f64: < 1e-20 (an rms relative error of 1e-10; the kernels only differ from
 *        the reference in summation order and GEMM blocking, ~1e-16 relative,
 *        so anything above means a wrong value, not rounding);
 *   f32: < 1e-10 (an rms relative error of 1e-5; float rounding of the inputs
 *        is taken out by feeding the f32 reference the same float-rounded
 *        inputs, so what remains is float arithmetic, ~1e-7 relative per op,
 *        growing like √K in the K-term dot products used here, K ≤ 192;
 *        the worst seen is ~5e-14).
 * A logic error (a wrong index, a missed broadcast, a wrong transposition)
 * gives an nMSE of order 1, eleven orders above either bound. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "compiler/ir.h"
#include "runtime/backend_cpu.h"
#include "runtime/rng.h"

#define TOL_F64 1e-20
#define TOL_F32 1e-10

#define SHAPE(...) \
    ((edm_shape){.rank = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .dim = {__VA_ARGS__}})
#define SCALAR ((edm_shape){.rank = 0})
#define NB EDM_DIM_BATCH

/* ------------------------------------------------------------------ building graphs */

typedef enum {
    D_NORMAL, /* N(0, 1) */
    D_WIDE,   /* N(0, 8²): sin/cos over several periods, saturating sigmoid */
    D_HIGH,   /* 1000 + 40·N(0, 1): logits whose exp overflows without the max shift */
    D_LOW,    /* -1000 + 40·N(0, 1): logits whose exp underflows to 0/0 without it */
    D_POS,    /* exp(0.6·N(0, 1)) ∈ ~(0.1, 10): log, sqrt, rsqrt, divisors */
} dist;

#define MAX_LEAVES 16

typedef struct {
    edm_graph *g;
    int nleaf;
    struct {
        int id;
        dist d;
    } leaf[MAX_LEAVES];
    char err[EDM_STATUS_MSG + 64];
} ctx;

static void ctx_init(ctx *c)
{
    memset(c, 0, sizeof *c);
    c->g = edm_graph_new();
    assert_non_null(c->g);
}

static void ctx_free(ctx *c) { edm_graph_free(c->g); }

static edm_node mk(edm_op op)
{
    edm_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.ninputs = edm_op_arity(op);
    n.dtype = EDM_F32;
    n.loc = EDM_NO_LOC;
    return n;
}

/* Infers and adds; after the first failure every add returns -1 and the
 * first message is kept in c->err. */
static int add(ctx *c, edm_node n)
{
    if (c->err[0])
        return -1;
    edm_status st;
    edm_status_init(&st);
    n.ninputs = edm_op_arity(n.op);
    n.loc = EDM_NO_LOC;
    int id = -1;
    if (edm_infer_node(c->g, &n, &st) != 0 || (id = edm_graph_add(c->g, &n, &st)) < 0) {
        snprintf(c->err, sizeof c->err, "building %s: %s", edm_op_name(n.op), st.msg);
        return -1;
    }
    return id;
}

static int leaf(ctx *c, edm_op kind, const char *name, edm_shape s, dist d)
{
    edm_node n = mk(kind);
    n.name = name;
    n.shape = s;
    int id = add(c, n);
    if (id >= 0) {
        if (c->nleaf == MAX_LEAVES) {
            snprintf(c->err, sizeof c->err, "too many leaves");
            return -1;
        }
        c->leaf[c->nleaf].id = id;
        c->leaf[c->nleaf].d = d;
        c->nleaf++;
    }
    return id;
}

static int input(ctx *c, const char *name, edm_shape s, dist d) { return leaf(c, EDM_OP_INPUT, name, s, d); }
static int param(ctx *c, const char *name, edm_shape s, dist d) { return leaf(c, EDM_OP_PARAM, name, s, d); }

static int cnst(ctx *c, edm_shape s, double v)
{
    edm_node n = mk(EDM_OP_CONST);
    n.shape = s;
    n.attr.constant.value = v;
    return add(c, n);
}

static int op1(ctx *c, edm_node t, int a)
{
    t.input[0] = a;
    return add(c, t);
}

static int op2(ctx *c, edm_node t, int a, int b)
{
    t.input[0] = a;
    t.input[1] = b;
    return add(c, t);
}

static int output(ctx *c, const char *name, int a)
{
    edm_node n = mk(EDM_OP_OUTPUT);
    n.name = name;
    n.input[0] = a;
    return add(c, n);
}

/* Op templates (attributes only; inputs are filled in by op1/op2). */
#define OP(o) ((edm_node){.op = EDM_OP_##o})
#define CLAMP(l, h) ((edm_node){.op = EDM_OP_CLAMP, .attr.clamp.lo = (l), .attr.clamp.hi = (h)})
#define REDUCE(o, ax, kd) ((edm_node){.op = EDM_OP_##o, .attr.reduce.axes = (ax), .attr.reduce.keepdim = (kd)})
#define CONV(s, p) ((edm_node){.op = EDM_OP_CONV2D, .attr.conv.stride = (s), .attr.conv.pad = (p)})
/* conv2d's gradients: dx [N, C, ih, iw] from (dy, w); dw [O, C, k, k] from (x, dy) */
#define CONV_BWD_DATA(s, p, ih, iw)                                                                          \
    ((edm_node){.op = EDM_OP_CONV2D_BWD_DATA, .attr.conv.stride = (s), .attr.conv.pad = (p), .attr.conv.in_h = (ih), \
                .attr.conv.in_w = (iw)})
#define CONV_BWD_WEIGHT(s, p, k) \
    ((edm_node){.op = EDM_OP_CONV2D_BWD_WEIGHT, .attr.conv.stride = (s), .attr.conv.pad = (p), .attr.conv.kernel = (k)})
#define EXPAND(...) ((edm_node){.op = EDM_OP_EXPAND, .shape = SHAPE(__VA_ARGS__)})
#define MATMUL(ta, tb) ((edm_node){.op = EDM_OP_MATMUL, .attr.matmul.trans_a = (ta), .attr.matmul.trans_b = (tb)})
#define RESHAPE(...) ((edm_node){.op = EDM_OP_RESHAPE, .shape = SHAPE(__VA_ARGS__)})
#define PERMUTE(...) ((edm_node){.op = EDM_OP_PERMUTE, .attr.permute.perm = {__VA_ARGS__}})
#define CONCAT(ax) ((edm_node){.op = EDM_OP_CONCAT, .attr.concat.axis = (ax)})
#define SLICE(ax, s, l) \
    ((edm_node){.op = EDM_OP_SLICE, .attr.slice.axis = (ax), .attr.slice.start = (s), .attr.slice.len = (l)})
#define SOFTMAX(ax) ((edm_node){.op = EDM_OP_SOFTMAX, .attr.softmax.axis = (ax)})
#define DROPOUT(prob) ((edm_node){.op = EDM_OP_DROPOUT, .attr.dropout.p = (prob)})
#define CONSTOP(v, s) ((edm_node){.op = EDM_OP_CONST, .shape = (s), .attr.constant.value = (v)})

/* One operand of a single-op case. */
typedef struct {
    edm_op kind; /* EDM_OP_INPUT, EDM_OP_PARAM, EDM_OP_BUFFER or EDM_OP_CONST */
    edm_shape shape;
    dist d;
    double v; /* CONST: the value */
} operand;

#define IN(d, ...) ((operand){EDM_OP_INPUT, SHAPE(NB, __VA_ARGS__), d, 0})
#define IN0(d) ((operand){EDM_OP_INPUT, SHAPE(NB), d, 0}) /* [N] */
#define PAR(d, ...) ((operand){EDM_OP_PARAM, SHAPE(__VA_ARGS__), d, 0})
#define BUF(d, ...) ((operand){EDM_OP_BUFFER, SHAPE(__VA_ARGS__), d, 0})
#define CST(v, s) ((operand){EDM_OP_CONST, s, D_NORMAL, v})

typedef struct {
    const char *name;
    edm_node op; /* the op under test with its attributes (CONST: itself the case) */
    operand in[3];
} op_case;

static void build_single(ctx *c, const op_case *k)
{
    static const char *names[3] = {"a", "b", "c"};
    if (k->op.op == EDM_OP_CONST) {
        output(c, "y", add(c, k->op));
        return;
    }
    int ids[3] = {-1, -1, -1};
    int ar = edm_op_arity(k->op.op);
    for (int i = 0; i < ar; i++) {
        const operand *o = &k->in[i];
        ids[i] = o->kind == EDM_OP_CONST ? cnst(c, o->shape, o->v) : leaf(c, o->kind, names[i], o->shape, o->d);
    }
    edm_node t = k->op;
    memcpy(t.input, ids, sizeof ids);
    output(c, "y", add(c, t));
}

/* ------------------------------------------------------------------ the reference */

typedef struct {
    edm_shape s; /* bound: no symbolic batch */
    int64_t n;
    double *d;
} rt;

static int64_t numel(const edm_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= s->dim[i];
    return n;
}

static edm_shape bind(edm_shape s, int64_t batch)
{
    for (int i = 0; i < s.rank; i++)
        if (s.dim[i] == EDM_DIM_BATCH)
            s.dim[i] = batch;
    return s;
}

static int same_shape(const edm_shape *a, const edm_shape *b)
{
    if (a->rank != b->rank)
        return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->dim[i] != b->dim[i])
            return 0;
    return 1;
}

static void unravel(int64_t i, const edm_shape *s, int64_t *idx)
{
    for (int d = s->rank - 1; d >= 0; d--) {
        idx[d] = i % s->dim[d];
        i /= s->dim[d];
    }
}

static int64_t ravel(const edm_shape *s, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < s->rank; d++)
        off = off * s->dim[d] + idx[d];
    return off;
}

static double rnd(double v, int r32) { return r32 ? (double)(float)v : v; }

/* numpy broadcasting of two bound shapes; -1 when they do not broadcast */
static int ref_broadcast(const edm_shape *a, const edm_shape *b, edm_shape *o)
{
    o->rank = a->rank > b->rank ? a->rank : b->rank;
    for (int i = 0; i < o->rank; i++) {
        int ia = i - (o->rank - a->rank), ib = i - (o->rank - b->rank);
        int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return -1;
        o->dim[i] = da == 1 ? db : da;
    }
    return 0;
}

/* The index into `a` (broadcast against output shape o) of output index idx. */
static int64_t bcast_index(const edm_shape *a, const edm_shape *o, const int64_t *idx)
{
    int64_t ai[EDM_MAX_RANK];
    for (int j = 0; j < a->rank; j++)
        ai[j] = a->dim[j] == 1 ? 0 : idx[j + (o->rank - a->rank)];
    return ravel(a, ai);
}

static int norm(int axis, int rank) { return axis < 0 ? axis + rank : axis; }

static double ref_unary(const edm_node *n, double x, int r32)
{
    switch (n->op) {
    case EDM_OP_NEG: return -x;
    case EDM_OP_EXP: return exp(x);
    case EDM_OP_LOG: return log(x);
    case EDM_OP_SQRT: return sqrt(x);
    case EDM_OP_RSQRT: return 1.0 / sqrt(x);
    case EDM_OP_SIN: return sin(x);
    case EDM_OP_COS: return cos(x);
    case EDM_OP_SQUARE: return x * x;
    case EDM_OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case EDM_OP_SILU: return x / (1.0 + exp(-x));
    case EDM_OP_STEP: return x >= 0 ? 1 : 0;
    case EDM_OP_CLAMP: {
        double lo = rnd(n->attr.clamp.lo, r32), hi = rnd(n->attr.clamp.hi, r32);
        return x < lo ? lo : x > hi ? hi : x;
    }
    default: return NAN;
    }
}

static double ref_binary(edm_op op, double x, double z)
{
    switch (op) {
    case EDM_OP_ADD: return x + z;
    case EDM_OP_SUB: return x - z;
    case EDM_OP_MUL: return x * z;
    case EDM_OP_DIV: return x / z;
    case EDM_OP_MAXIMUM: return x >= z ? x : z;
    default: return NAN;
    }
}

static int rt_alloc(rt *t, edm_shape s)
{
    t->s = s;
    t->n = numel(&s);
    t->d = calloc((size_t)(t->n ? t->n : 1), sizeof(double));
    return t->d ? 0 : -1;
}

/* Evaluates node id into v[id] from its inputs' reference values. */
static int ref_node(const edm_graph *g, int id, int64_t batch, rt *v, double *const *data, int r32, char *err,
                    size_t errsz)
{
    const edm_node *n = edm_graph_node(g, id);
    const rt *a = n->ninputs > 0 ? &v[n->input[0]] : NULL;
    const rt *b = n->ninputs > 1 ? &v[n->input[1]] : NULL;
    const rt *c3 = n->ninputs > 2 ? &v[n->input[2]] : NULL;
    rt *y = &v[id];
    int64_t idx[EDM_MAX_RANK], j2[EDM_MAX_RANK];
    edm_shape s = {.rank = 0};

    switch (n->op) {
    case EDM_OP_INPUT: case EDM_OP_PARAM: case EDM_OP_BUFFER:
        if (!data[id]) {
            snprintf(err, errsz, "reference: no data for leaf %d", id);
            return -1;
        }
        if (rt_alloc(y, bind(n->shape, batch)))
            return -1;
        for (int64_t i = 0; i < y->n; i++)
            y->d[i] = rnd(data[id][i], r32);
        break;
    case EDM_OP_CONST:
        if (rt_alloc(y, bind(n->shape, batch)))
            return -1;
        for (int64_t i = 0; i < y->n; i++)
            y->d[i] = rnd(n->attr.constant.value, r32);
        break;
    case EDM_OP_NEG: case EDM_OP_EXP: case EDM_OP_LOG: case EDM_OP_SQRT: case EDM_OP_RSQRT: case EDM_OP_SIN:
    case EDM_OP_COS: case EDM_OP_SQUARE: case EDM_OP_SIGMOID: case EDM_OP_SILU: case EDM_OP_CLAMP: case EDM_OP_STEP:
        if (rt_alloc(y, a->s))
            return -1;
        for (int64_t i = 0; i < y->n; i++)
            y->d[i] = ref_unary(n, a->d[i], r32);
        break;
    case EDM_OP_ADD: case EDM_OP_SUB: case EDM_OP_MUL: case EDM_OP_DIV: case EDM_OP_MAXIMUM:
        if (ref_broadcast(&a->s, &b->s, &s) != 0 || rt_alloc(y, s))
            goto bad;
        for (int64_t i = 0; i < y->n; i++) {
            unravel(i, &s, idx);
            y->d[i] = ref_binary(n->op, a->d[bcast_index(&a->s, &s, idx)], b->d[bcast_index(&b->s, &s, idx)]);
        }
        break;
    case EDM_OP_SUM: case EDM_OP_SUMSQ: {
        uint32_t axes = n->attr.reduce.axes;
        for (int i = 0; i < a->s.rank; i++)
            if (!(axes & (1u << i)))
                s.dim[s.rank++] = a->s.dim[i];
            else if (n->attr.reduce.keepdim)
                s.dim[s.rank++] = 1;
        if (rt_alloc(y, s))
            return -1;
        for (int64_t i = 0; i < a->n; i++) {
            unravel(i, &a->s, idx);
            int r = 0;
            for (int d = 0; d < a->s.rank; d++)
                if (!(axes & (1u << d)))
                    j2[r++] = idx[d];
                else if (n->attr.reduce.keepdim)
                    j2[r++] = 0;
            double x = a->d[i];
            y->d[ravel(&s, j2)] += n->op == EDM_OP_SUMSQ ? x * x : x;
        }
        break;
    }
    case EDM_OP_CONV2D: {
        /* direct convolution, zero padding */
        int64_t nn = a->s.dim[0], ci = a->s.dim[1], h = a->s.dim[2], w = a->s.dim[3];
        int64_t co = b->s.dim[0], k = b->s.dim[2], st = n->attr.conv.stride, pad = n->attr.conv.pad;
        if (a->s.rank != 4 || b->s.rank != 4 || b->s.dim[1] != ci)
            goto bad;
        int64_t oh = (h + 2 * pad - k) / st + 1, ow = (w + 2 * pad - k) / st + 1;
        if (rt_alloc(y, SHAPE(nn, co, oh, ow)))
            return -1;
        for (int64_t in = 0; in < nn; in++)
            for (int64_t o = 0; o < co; o++)
                for (int64_t oy = 0; oy < oh; oy++)
                    for (int64_t ox = 0; ox < ow; ox++) {
                        double acc = 0;
                        for (int64_t c = 0; c < ci; c++)
                            for (int64_t ky = 0; ky < k; ky++)
                                for (int64_t kx = 0; kx < k; kx++) {
                                    int64_t iy = oy * st + ky - pad, ix = ox * st + kx - pad;
                                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                        continue;
                                    acc += a->d[((in * ci + c) * h + iy) * w + ix] * b->d[((o * ci + c) * k + ky) * k + kx];
                                }
                        y->d[((in * co + o) * oh + oy) * ow + ox] = acc;
                    }
        break;
    }
    case EDM_OP_CONV2D_BWD_DATA: {
        /* dx[n,c,iy,ix] = Σ dy[n,o,oy,ox]·w[o,c,ky,kx] over iy = oy·s + ky - pad, ix likewise:
         * scatter each output gradient back through the kernel */
        int64_t nn = a->s.dim[0], co = a->s.dim[1], oh = a->s.dim[2], ow = a->s.dim[3];
        int64_t ci = b->s.dim[1], k = b->s.dim[2], st = n->attr.conv.stride, pad = n->attr.conv.pad;
        int64_t h = n->attr.conv.in_h, w = n->attr.conv.in_w;
        if (a->s.rank != 4 || b->s.rank != 4 || b->s.dim[0] != co || rt_alloc(y, SHAPE(nn, ci, h, w)))
            goto bad;
        for (int64_t in = 0; in < nn; in++)
            for (int64_t o = 0; o < co; o++)
                for (int64_t oy = 0; oy < oh; oy++)
                    for (int64_t ox = 0; ox < ow; ox++)
                        for (int64_t c = 0; c < ci; c++)
                            for (int64_t ky = 0; ky < k; ky++)
                                for (int64_t kx = 0; kx < k; kx++) {
                                    int64_t iy = oy * st + ky - pad, ix = ox * st + kx - pad;
                                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                        continue;
                                    y->d[((in * ci + c) * h + iy) * w + ix] +=
                                        a->d[((in * co + o) * oh + oy) * ow + ox] * b->d[((o * ci + c) * k + ky) * k + kx];
                                }
        break;
    }
    case EDM_OP_CONV2D_BWD_WEIGHT: {
        /* dw[o,c,ky,kx] = Σ over n, oy, ox of dy[n,o,oy,ox]·x[n,c,oy·s + ky - pad, ox·s + kx - pad] */
        int64_t nn = a->s.dim[0], ci = a->s.dim[1], h = a->s.dim[2], w = a->s.dim[3];
        int64_t co = b->s.dim[1], oh = b->s.dim[2], ow = b->s.dim[3];
        int64_t k = n->attr.conv.kernel, st = n->attr.conv.stride, pad = n->attr.conv.pad;
        if (a->s.rank != 4 || b->s.rank != 4 || b->s.dim[0] != nn || rt_alloc(y, SHAPE(co, ci, k, k)))
            goto bad;
        for (int64_t o = 0; o < co; o++)
            for (int64_t c = 0; c < ci; c++)
                for (int64_t ky = 0; ky < k; ky++)
                    for (int64_t kx = 0; kx < k; kx++) {
                        double acc = 0;
                        for (int64_t in = 0; in < nn; in++)
                            for (int64_t oy = 0; oy < oh; oy++)
                                for (int64_t ox = 0; ox < ow; ox++) {
                                    int64_t iy = oy * st + ky - pad, ix = ox * st + kx - pad;
                                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                        continue;
                                    acc += b->d[((in * co + o) * oh + oy) * ow + ox] * a->d[((in * ci + c) * h + iy) * w + ix];
                                }
                        y->d[((o * ci + c) * k + ky) * k + kx] = acc;
                    }
        break;
    }
    case EDM_OP_EXPAND: {
        /* broadcast to the target shape: right-aligned, size-1 dims repeat */
        edm_shape t = bind(n->shape, batch);
        if (ref_broadcast(&a->s, &t, &s) != 0 || !same_shape(&s, &t) || rt_alloc(y, s))
            goto bad;
        for (int64_t i = 0; i < y->n; i++) {
            unravel(i, &s, idx);
            y->d[i] = a->d[bcast_index(&a->s, &s, idx)];
        }
        break;
    }
    case EDM_OP_MATMUL: {
        int ta = n->attr.matmul.trans_a, tb = n->attr.matmul.trans_b, ra = a->s.rank, rb = b->s.rank;
        if (ra < 2 || rb < 2)
            goto bad;
        int64_t acols = a->s.dim[ra - 1], bcols = b->s.dim[rb - 1];
        int64_t m = ta ? a->s.dim[ra - 1] : a->s.dim[ra - 2], ka = ta ? a->s.dim[ra - 2] : a->s.dim[ra - 1];
        int64_t kb = tb ? b->s.dim[rb - 1] : b->s.dim[rb - 2], nc = tb ? b->s.dim[rb - 2] : b->s.dim[rb - 1];
        edm_shape ba = {.rank = ra - 2}, bb = {.rank = rb - 2}, bo;
        memcpy(ba.dim, a->s.dim, sizeof(int64_t) * (size_t)ba.rank);
        memcpy(bb.dim, b->s.dim, sizeof(int64_t) * (size_t)bb.rank);
        if (ka != kb || ref_broadcast(&ba, &bb, &bo) != 0)
            goto bad;
        s = bo;
        s.dim[s.rank++] = m;
        s.dim[s.rank++] = nc;
        if (rt_alloc(y, s))
            return -1;
        for (int64_t t = 0; t < numel(&bo); t++) {
            unravel(t, &bo, idx);
            const double *pa = a->d + bcast_index(&ba, &bo, idx) * a->s.dim[ra - 2] * acols;
            const double *pb = b->d + bcast_index(&bb, &bo, idx) * b->s.dim[rb - 2] * bcols;
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < nc; j++) {
                    double acc = 0;
                    for (int64_t q = 0; q < ka; q++)
                        acc += (ta ? pa[q * acols + i] : pa[i * acols + q]) * (tb ? pb[j * bcols + q] : pb[q * bcols + j]);
                    y->d[(t * m + i) * nc + j] = acc;
                }
        }
        break;
    }
    case EDM_OP_RESHAPE:
        s = bind(n->shape, batch);
        if (numel(&s) != a->n || rt_alloc(y, s))
            goto bad;
        memcpy(y->d, a->d, sizeof(double) * (size_t)a->n);
        break;
    case EDM_OP_PERMUTE:
        s.rank = a->s.rank;
        for (int i = 0; i < s.rank; i++)
            s.dim[i] = a->s.dim[n->attr.permute.perm[i]];
        if (rt_alloc(y, s))
            return -1;
        for (int64_t i = 0; i < y->n; i++) {
            unravel(i, &s, idx);
            for (int d = 0; d < s.rank; d++)
                j2[n->attr.permute.perm[d]] = idx[d];
            y->d[i] = a->d[ravel(&a->s, j2)];
        }
        break;
    case EDM_OP_CONCAT: {
        int ax = norm(n->attr.concat.axis, a->s.rank);
        s = a->s;
        s.dim[ax] += b->s.dim[ax];
        if (rt_alloc(y, s))
            return -1;
        for (int64_t i = 0; i < y->n; i++) {
            unravel(i, &s, idx);
            if (idx[ax] < a->s.dim[ax]) {
                y->d[i] = a->d[ravel(&a->s, idx)];
            } else {
                idx[ax] -= a->s.dim[ax];
                y->d[i] = b->d[ravel(&b->s, idx)];
            }
        }
        break;
    }
    case EDM_OP_SLICE: {
        int ax = norm(n->attr.slice.axis, a->s.rank);
        s = a->s;
        s.dim[ax] = n->attr.slice.len;
        if (rt_alloc(y, s))
            return -1;
        for (int64_t i = 0; i < y->n; i++) {
            unravel(i, &s, idx);
            idx[ax] += n->attr.slice.start;
            y->d[i] = a->d[ravel(&a->s, idx)];
        }
        break;
    }
    case EDM_OP_ATTENTION: {
        /* by its definition: S = qᵀk, softmax over keys, y = v·Sᵀ, per leading index */
        int r = a->s.rank;
        int64_t d = a->s.dim[r - 2], tq = a->s.dim[r - 1], tk = b->s.dim[r - 1], dv = c3->s.dim[r - 2];
        s = a->s;
        s.dim[r - 2] = dv;
        if (rt_alloc(y, s))
            return -1;
        double *sc = malloc(sizeof *sc * (size_t)tk);
        if (!sc)
            return -1;
        for (int64_t o = 0; o < a->n / (d * tq); o++)
            for (int64_t i = 0; i < tq; i++) {
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < tk; j++) {
                    sc[j] = 0;
                    for (int64_t e = 0; e < d; e++)
                        sc[j] += a->d[(o * d + e) * tq + i] * b->d[(o * d + e) * tk + j];
                    m = fmax(m, sc[j]);
                }
                for (int64_t j = 0; j < tk; j++)
                    sum += sc[j] = exp(sc[j] - m);
                for (int64_t e = 0; e < dv; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < tk; j++)
                        acc += c3->d[(o * dv + e) * tk + j] * sc[j] / sum;
                    y->d[(o * dv + e) * tq + i] = acc;
                }
            }
        free(sc);
        break;
    }
    case EDM_OP_SOFTMAX: {
        /* two passes along each line: the maximum, then exp and sum; then scale */
        int ax = norm(n->attr.softmax.axis, a->s.rank);
        int64_t len = a->s.dim[ax];
        if (rt_alloc(y, a->s))
            return -1;
        for (int64_t i = 0; i < a->n; i++) {
            unravel(i, &a->s, idx);
            if (idx[ax] != 0)
                continue;
            double m = -INFINITY, sum = 0;
            for (int64_t j = 0; j < len; j++) {
                idx[ax] = j;
                m = fmax(m, a->d[ravel(&a->s, idx)]);
            }
            for (int64_t j = 0; j < len; j++) {
                idx[ax] = j;
                int64_t o = ravel(&a->s, idx);
                y->d[o] = exp(a->d[o] - m);
                sum += y->d[o];
            }
            for (int64_t j = 0; j < len; j++) {
                idx[ax] = j;
                y->d[ravel(&a->s, idx)] /= sum;
            }
        }
        break;
    }
    case EDM_OP_AVGPOOL2: case EDM_OP_UPSAMPLE2: {
        if (a->s.rank != 4)
            goto bad;
        int up = n->op == EDM_OP_UPSAMPLE2;
        int64_t nc = a->s.dim[0] * a->s.dim[1], h = a->s.dim[2], w = a->s.dim[3];
        int64_t oh = up ? 2 * h : h / 2, ow = up ? 2 * w : w / 2;
        if (rt_alloc(y, SHAPE(a->s.dim[0], a->s.dim[1], oh, ow)))
            return -1;
        for (int64_t p = 0; p < nc; p++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    const double *src = a->d + p * h * w;
                    double val;
                    if (up) {
                        val = src[(oy / 2) * w + ox / 2];
                    } else {
                        val = 0;
                        for (int dy = 0; dy < 2; dy++)
                            for (int dx = 0; dx < 2; dx++)
                                val += src[(2 * oy + dy) * w + 2 * ox + dx];
                        val /= 4;
                    }
                    y->d[(p * oh + oy) * ow + ox] = val;
                }
        break;
    }
    case EDM_OP_DROPOUT: /* evaluation mode: the identity */
    case EDM_OP_OUTPUT:
        if (rt_alloc(y, a->s))
            return -1;
        memcpy(y->d, a->d, sizeof(double) * (size_t)a->n);
        break;
    default:
        snprintf(err, errsz, "reference: no rule for %s", edm_op_name(n->op));
        return -1;
    }
    edm_shape want = bind(n->shape, batch);
    if (!same_shape(&y->s, &want)) {
        char s1[96], s2[96];
        snprintf(err, errsz, "node %d (%s): the reference's shape %s, the graph's %s", id, edm_op_name(n->op),
                 edm_shape_str(&y->s, s1, sizeof s1), edm_shape_str(&want, s2, sizeof s2));
        return -1;
    }
    return 0;
bad:
    snprintf(err, errsz, "reference: bad operands for node %d (%s)", id, edm_op_name(n->op));
    return -1;
}

static void ref_free(rt *v, int count)
{
    if (!v)
        return;
    for (int i = 0; i < count; i++)
        free(v[i].d);
    free(v);
}

static rt *ref_eval(const edm_graph *g, int64_t batch, double *const *data, int r32, char *err, size_t errsz)
{
    int count = edm_graph_count(g);
    rt *v = calloc((size_t)count, sizeof *v);
    if (!v)
        return NULL;
    for (int i = 0; i < count; i++)
        if (ref_node(g, i, batch, v, data, r32, err, errsz) != 0) {
            ref_free(v, count);
            return NULL;
        }
    return v;
}

/* ------------------------------------------------------------------ running and comparing */

static uint64_t covered;    /* ops that some case ran */
static int default_threads; /* OpenMP's, restored after the 2-thread runs */

typedef struct {
    const char *group;
    int cases, fails;
    double worst[2]; /* worst nMSE seen: [0] f64, [1] f32 */
} tally;

static double nmse(const double *y, const double *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = y[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    if (num == 0)
        return 0;
    return den > 0 ? num / den : INFINITY;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void gen(const char *casename, int64_t batch, const edm_node *n, dist d, double *out, int64_t count)
{
    edm_rng r = edm_rng_make(hash_str(casename) + (uint64_t)batch, n->name);
    edm_rng_normal_f64(&r, 0, out, count);
    for (int64_t i = 0; i < count; i++) {
        switch (d) {
        case D_NORMAL: break;
        case D_WIDE: out[i] *= 8; break;
        case D_HIGH: out[i] = 1000 + 40 * out[i]; break;
        case D_LOW: out[i] = -1000 + 40 * out[i]; break;
        case D_POS: out[i] = exp(0.6 * out[i]); break;
        }
    }
}

/* Runs one case's graph at batch 1 and 2, in f64 and f32, and compares every
 * output (every value with keep_all) with the reference; with rerun, runs the
 * same backend a second time and compares again (buffers are recycled between
 * runs).  Prints one line per failure and returns the number of failures. */
static int check_graph(tally *t, const char *name, ctx *c, int keep_all, int rerun)
{
    t->cases++;
    if (c->err[0]) {
        print_error("%s: %s\n", name, c->err);
        t->fails++;
        return 1;
    }
    const edm_graph *g = c->g;
    int count = edm_graph_count(g), fails = 0;
    for (int i = 0; i < count; i++)
        covered |= 1ull << edm_graph_node(g, i)->op;
    for (int64_t batch = 1; batch <= 3; batch++) {
        double **data = calloc((size_t)count, sizeof *data);
        assert_non_null(data);
        for (int l = 0; l < c->nleaf; l++) {
            const edm_node *n = edm_graph_node(g, c->leaf[l].id);
            edm_shape s = bind(n->shape, batch);
            int64_t m = numel(&s);
            data[c->leaf[l].id] = malloc(sizeof(double) * (size_t)(m ? m : 1));
            assert_non_null(data[c->leaf[l].id]);
            gen(name, batch, n, c->leaf[l].d, data[c->leaf[l].id], m);
        }
        char err[512] = "";
        rt *ref[2] = {ref_eval(g, batch, data, 0, err, sizeof err), NULL};
        if (ref[0])
            ref[1] = ref_eval(g, batch, data, 1, err, sizeof err);
        if (!ref[0] || !ref[1]) {
            print_error("%s [batch %lld]: %s\n", name, (long long)batch, err[0] ? err : "out of memory");
            fails++;
        }
        for (int p = 0; p < 2 && ref[1]; p++) {
            edm_dtype prec = p == 0 ? EDM_F64 : EDM_F32;
            const char *pname = edm_dtype_name(prec);
            double tol = p == 0 ? TOL_F64 : TOL_F32;
            /* batch 3 runs on 2 threads: conv's one-sample-per-thread path, whatever the machine */
            edm_cpu_options opt = {.compute = prec, .keep_all = keep_all, .threads = batch == 3 ? 2 : 0};
            edm_status st;
            edm_status_init(&st);
            edm_cpu *x = edm_cpu_new(g, batch, &opt, &st);
            int ok = x != NULL;
            for (int l = 0; ok && l < c->nleaf; l++) {
                int id = c->leaf[l].id;
                ok = edm_cpu_set_f64(x, edm_graph_node(g, id)->name, data[id], ref[p][id].n, &st) == 0;
            }
            for (int pass = 0; pass <= rerun; pass++) {
            ok = ok && edm_cpu_run(x, &st) == 0;
            if (!ok) {
                print_error("%s [%s, batch %lld]: %s\n", name, pname, (long long)batch, st.msg);
                fails++;
            }
            for (int id = 0; ok && id < count; id++) {
                const edm_node *n = edm_graph_node(g, id);
                if (n->op != EDM_OP_OUTPUT && !keep_all)
                    continue;
                int64_t m = ref[p][id].n;
                if (edm_cpu_numel(x, id) != m) {
                    print_error("%s [%s, batch %lld]: %s %%%d has %lld elements, expected %lld\n", name, pname,
                                (long long)batch, edm_op_name(n->op), id, (long long)edm_cpu_numel(x, id),
                                (long long)m);
                    fails++;
                    continue;
                }
                double *got = malloc(sizeof(double) * (size_t)(m ? m : 1));
                assert_non_null(got);
                if (edm_cpu_get_f64(x, id, got, m, &st) != 0) {
                    print_error("%s [%s, batch %lld]: reading %%%d: %s\n", name, pname, (long long)batch, id, st.msg);
                    fails++;
                } else {
                    double e = nmse(got, ref[p][id].d, m);
                    if (!(e <= tol)) {
                        print_error("%s [%s, batch %lld%s]: %s %%%d: nmse %.3g > %.0e\n", name, pname, (long long)batch,
                                    pass ? ", second run" : "", edm_op_name(n->op), id, e, tol);
                        fails++;
                    }
                    if (e > t->worst[p] || e != e)
                        t->worst[p] = e;
                }
                free(got);
            }
            }
            edm_cpu_free(x);
#ifdef _OPENMP
            omp_set_num_threads(default_threads);
#endif
        }
        ref_free(ref[0], count);
        ref_free(ref[1], count);
        for (int i = 0; i < count; i++)
            free(data[i]);
        free(data);
    }
    t->fails += fails != 0;
    return fails;
}

static void run_table(const char *group, const op_case *cases, size_t n)
{
    tally t = {.group = group};
    for (size_t i = 0; i < n; i++) {
        ctx c;
        ctx_init(&c);
        build_single(&c, &cases[i]);
        check_graph(&t, cases[i].name, &c, 0, 0);
        ctx_free(&c);
    }
    print_message("# %s: %d cases x batch 1,2,3 x f64,f32; worst nmse f64 %.2g, f32 %.2g\n", group, t.cases,
                  t.worst[0], t.worst[1]);
    if (t.fails)
        fail_msg("%s: %d of %d cases failed", group, t.fails, t.cases);
}

#define RUN_TABLE(group, cases) run_table(group, cases, sizeof(cases) / sizeof((cases)[0]))

/* ------------------------------------------------------------------ single-op tables */

static void test_unary(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"neg", OP(NEG), {IN(D_NORMAL, 3, 5, 7)}},
        {"exp", OP(EXP), {IN(D_NORMAL, 3, 5, 7)}},
        {"exp param [4,6]", OP(EXP), {PAR(D_NORMAL, 4, 6)}},
        {"log", OP(LOG), {IN(D_POS, 3, 5, 7)}},
        {"sqrt", OP(SQRT), {IN(D_POS, 3, 5, 7)}},
        {"rsqrt", OP(RSQRT), {IN(D_POS, 3, 5, 7)}},
        {"rsqrt [N,1,1,1]", OP(RSQRT), {IN(D_POS, 1, 1, 1)}},
        {"sin wide", OP(SIN), {IN(D_WIDE, 3, 5, 7)}},
        {"cos wide", OP(COS), {IN(D_WIDE, 3, 5, 7)}},
        {"square", OP(SQUARE), {IN(D_NORMAL, 3, 5, 7)}},
        {"sigmoid", OP(SIGMOID), {IN(D_NORMAL, 3, 5, 7)}},
        {"sigmoid wide", OP(SIGMOID), {IN(D_WIDE, 17)}},
        {"silu", OP(SILU), {IN(D_NORMAL, 3, 5, 7)}},
        {"silu wide", OP(SILU), {IN(D_WIDE, 2, 33)}},
        {"clamp", CLAMP(-0.5, 0.7), {IN(D_NORMAL, 3, 5, 7)}},
        {"clamp wide", CLAMP(-3.0, 2.0), {IN(D_WIDE, 4, 9)}},
        {"neg [N]", OP(NEG), {IN0(D_NORMAL)}},
        {"exp of [] const", OP(EXP), {CST(0.7, SCALAR)}},
        {"sqrt of [N,2,3] const", OP(SQRT), {CST(2.0, SHAPE(NB, 2, 3))}},
        {"step", OP(STEP), {IN(D_NORMAL, 3, 5, 7)}},
        {"step of 0 (is 1)", OP(STEP), {CST(0.0, SHAPE(NB, 4))}},
        {"step of -0.5", OP(STEP), {CST(-0.5, SCALAR)}},
    };
    RUN_TABLE("unary", cases);
}

static void test_binary(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"add same", OP(ADD), {IN(D_NORMAL, 3, 4, 5), IN(D_NORMAL, 3, 4, 5)}},
        {"sub same", OP(SUB), {IN(D_NORMAL, 3, 4, 5), IN(D_NORMAL, 3, 4, 5)}},
        {"mul same", OP(MUL), {IN(D_NORMAL, 3, 4, 5), IN(D_NORMAL, 3, 4, 5)}},
        {"div same", OP(DIV), {IN(D_NORMAL, 3, 4, 5), IN(D_POS, 3, 4, 5)}},
        {"maximum same", OP(MAXIMUM), {IN(D_NORMAL, 3, 4, 5), IN(D_NORMAL, 3, 4, 5)}},
        {"add [N,C,H,W]+[N,C,1,1]", OP(ADD), {IN(D_NORMAL, 3, 4, 5), IN(D_NORMAL, 3, 1, 1)}},
        {"mul [N,C,1,1]*[N,C,H,W]", OP(MUL), {IN(D_NORMAL, 3, 1, 1), IN(D_NORMAL, 3, 4, 5)}},
        {"mul [N,C,H,W]*[C,1,1]", OP(MUL), {IN(D_NORMAL, 3, 4, 5), PAR(D_NORMAL, 3, 1, 1)}},
        {"add [N,C,H,W]+[C,1,1]", OP(ADD), {IN(D_NORMAL, 3, 4, 5), PAR(D_NORMAL, 3, 1, 1)}},
        {"div [N,C,H,W]/[C,1,1]", OP(DIV), {IN(D_NORMAL, 3, 4, 5), PAR(D_POS, 3, 1, 1)}},
        {"sub [N,C,H,W]-[] const", OP(SUB), {IN(D_NORMAL, 3, 4, 5), CST(0.75, SCALAR)}},
        {"mul [N,C,H,W]*[] const", OP(MUL), {IN(D_NORMAL, 3, 4, 5), CST(0.3, SCALAR)}},
        {"sub [] const-[N,3,4]", OP(SUB), {CST(1.25, SCALAR), IN(D_NORMAL, 3, 4)}},
        {"div [] const/[N,3,4]", OP(DIV), {CST(2.0, SCALAR), IN(D_POS, 3, 4)}},
        {"maximum [N,C,H,W] vs [] 0", OP(MAXIMUM), {IN(D_NORMAL, 3, 4, 5), CST(0.0, SCALAR)}},
        {"mul [N,1]*[5]", OP(MUL), {IN(D_NORMAL, 1), PAR(D_NORMAL, 5)}},
        {"add [N,4]+[N,1]", OP(ADD), {IN(D_NORMAL, 4), IN(D_NORMAL, 1)}},
        {"mul [N,3,4,5]*[5]", OP(MUL), {IN(D_NORMAL, 3, 4, 5), PAR(D_NORMAL, 5)}},
        {"add [N,1,4,5]+[1,3,1,1]", OP(ADD), {IN(D_NORMAL, 1, 4, 5), PAR(D_NORMAL, 1, 3, 1, 1)}},
        {"maximum [N,3,1,5] vs [N,1,4,1]", OP(MAXIMUM), {IN(D_NORMAL, 3, 1, 5), IN(D_NORMAL, 1, 4, 1)}},
        {"sub [4,1] param-[N,3,1,6]", OP(SUB), {PAR(D_NORMAL, 4, 1), IN(D_NORMAL, 3, 1, 6)}},
        {"div [N,2,3]/[N,1,1]", OP(DIV), {IN(D_NORMAL, 2, 3), IN(D_POS, 1, 1)}},
        {"mul [N,C,H,W]*[N,1,1,1] const", OP(MUL), {IN(D_NORMAL, 3, 4, 5), CST(-1.5, SHAPE(NB, 1, 1, 1))}},
        {"add [N,C,H,W]+[N,1,4,4] const", OP(ADD), {IN(D_NORMAL, 3, 4, 4), CST(0.125, SHAPE(NB, 1, 4, 4))}},
        {"mul [N,C,H,W]*[C,1,1] buffer", OP(MUL), {IN(D_NORMAL, 3, 4, 5), BUF(D_NORMAL, 3, 1, 1)}},
        {"add params [2,3]+[3]", OP(ADD), {PAR(D_NORMAL, 2, 3), PAR(D_NORMAL, 3)}},
        {"add [] const+[] const", OP(ADD), {CST(0.5, SCALAR), CST(0.25, SCALAR)}},
        {"mul [N]*[] const", OP(MUL), {IN0(D_NORMAL), CST(3.0, SCALAR)}},
        {"sub [N]-[1]", OP(SUB), {IN0(D_NORMAL), PAR(D_NORMAL, 1)}},
        {"mul [N,64,33]*[33] larger", OP(MUL), {IN(D_NORMAL, 64, 33), PAR(D_NORMAL, 33)}},
    };
    RUN_TABLE("binary", cases);
}

static void test_reduce(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"sum [1] keepdim", REDUCE(SUM, 0x2, 1), {IN(D_NORMAL, 3, 4, 5)}},
        {"sum [1]", REDUCE(SUM, 0x2, 0), {IN(D_NORMAL, 3, 4, 5)}},
        {"sumsq [1] keepdim", REDUCE(SUMSQ, 0x2, 1), {IN(D_NORMAL, 3, 4, 5)}},
        {"sum [1,2,3] keepdim", REDUCE(SUM, 0xe, 1), {IN(D_NORMAL, 3, 4, 5)}},
        {"sumsq [1,2,3] keepdim", REDUCE(SUMSQ, 0xe, 1), {IN(D_NORMAL, 3, 4, 5)}},
        {"sumsq [1,2,3]", REDUCE(SUMSQ, 0xe, 0), {IN(D_NORMAL, 3, 4, 5)}},
        {"sum [2] rank 5 keepdim", REDUCE(SUM, 0x4, 1), {IN(D_NORMAL, 2, 3, 4, 5)}},
        {"sum [2] rank 5", REDUCE(SUM, 0x4, 0), {IN(D_NORMAL, 2, 3, 4, 5)}},
        {"sumsq [2] rank 5 keepdim", REDUCE(SUMSQ, 0x4, 1), {IN(D_NORMAL, 2, 3, 4, 5)}},
        {"sumsq [2] rank 5", REDUCE(SUMSQ, 0x4, 0), {IN(D_NORMAL, 2, 3, 4, 5)}},
        {"sum [2,4] rank 5", REDUCE(SUM, 0x14, 0), {IN(D_NORMAL, 2, 3, 4, 5)}},
        {"sum [3] last", REDUCE(SUM, 0x8, 0), {IN(D_NORMAL, 3, 4, 5)}},
        {"sum param [0]", REDUCE(SUM, 0x1, 0), {PAR(D_NORMAL, 4, 6)}},
        {"sumsq param all", REDUCE(SUMSQ, 0x3, 0), {PAR(D_NORMAL, 4, 6)}},
        {"sum param all keepdim", REDUCE(SUM, 0x3, 1), {PAR(D_NORMAL, 4, 6)}},
        {"sum over the batch [0]", REDUCE(SUM, 0x1, 0), {IN(D_NORMAL, 3, 4)}},
        {"sum over the batch [0] keepdim", REDUCE(SUM, 0x1, 1), {IN(D_NORMAL, 3, 4)}},
        {"sumsq over everything [0,1,2,3]", REDUCE(SUMSQ, 0xf, 0), {IN(D_NORMAL, 3, 4, 5)}},
    };
    RUN_TABLE("reduce", cases);
}

static void test_conv2d(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"k1 s1 p0", CONV(1, 0), {IN(D_NORMAL, 4, 5, 6), PAR(D_NORMAL, 3, 4, 1, 1)}},
        {"k1 s2 p0", CONV(2, 0), {IN(D_NORMAL, 4, 6, 5), PAR(D_NORMAL, 3, 4, 1, 1)}},
        {"k1 s1 p1", CONV(1, 1), {IN(D_NORMAL, 2, 3, 4), PAR(D_NORMAL, 3, 2, 1, 1)}},
        {"k3 s1 p1", CONV(1, 1), {IN(D_NORMAL, 3, 8, 8), PAR(D_NORMAL, 5, 3, 3, 3)}},
        {"k3 s1 p0 7x5", CONV(1, 0), {IN(D_NORMAL, 2, 7, 5), PAR(D_NORMAL, 4, 2, 3, 3)}},
        {"k3 s1 p1 5x9", CONV(1, 1), {IN(D_NORMAL, 2, 5, 9), PAR(D_NORMAL, 3, 2, 3, 3)}},
        {"k3 s2 p1 9x6", CONV(2, 1), {IN(D_NORMAL, 3, 9, 6), PAR(D_NORMAL, 2, 3, 3, 3)}},
        {"k3 s2 p1 8x8", CONV(2, 1), {IN(D_NORMAL, 4, 8, 8), PAR(D_NORMAL, 4, 4, 3, 3)}},
        {"k3 s2 p0 7x8", CONV(2, 0), {IN(D_NORMAL, 2, 7, 8), PAR(D_NORMAL, 3, 2, 3, 3)}},
        {"k3 s1 p1 1x1 image", CONV(1, 1), {IN(D_NORMAL, 3, 1, 1), PAR(D_NORMAL, 2, 3, 3, 3)}},
        {"k3 s1 p1 one channel", CONV(1, 1), {IN(D_NORMAL, 1, 4, 6), PAR(D_NORMAL, 1, 1, 3, 3)}},
        {"k3 s1 p2", CONV(1, 2), {IN(D_NORMAL, 2, 4, 5), PAR(D_NORMAL, 3, 2, 3, 3)}},
        {"k3 on a param image [2,3,5,4]", CONV(1, 1), {PAR(D_NORMAL, 2, 3, 5, 4), PAR(D_NORMAL, 2, 3, 3, 3)}},
        {"k3 s1 p1 16->32ch 16x16 larger", CONV(1, 1), {IN(D_NORMAL, 16, 16, 16), PAR(D_NORMAL, 32, 16, 3, 3)}},
        {"k1 16->24ch 12x10 larger", CONV(1, 0), {IN(D_NORMAL, 16, 12, 10), PAR(D_NORMAL, 24, 16, 1, 1)}},
    };
    RUN_TABLE("conv2d", cases);
}

/* conv2d's gradients, against the same direct loops run backwards */
static void test_conv2d_grad(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"bwd_data k1 s1 p0", CONV_BWD_DATA(1, 0, 5, 6), {IN(D_NORMAL, 3, 5, 6), PAR(D_NORMAL, 3, 4, 1, 1)}},
        {"bwd_data k3 s1 p1 8x8", CONV_BWD_DATA(1, 1, 8, 8), {IN(D_NORMAL, 5, 8, 8), PAR(D_NORMAL, 5, 3, 3, 3)}},
        {"bwd_data k3 s1 p0 7x5", CONV_BWD_DATA(1, 0, 7, 5), {IN(D_NORMAL, 4, 5, 3), PAR(D_NORMAL, 4, 2, 3, 3)}},
        {"bwd_data k3 s2 p1 9x6", CONV_BWD_DATA(2, 1, 9, 6), {IN(D_NORMAL, 2, 5, 3), PAR(D_NORMAL, 2, 3, 3, 3)}},
        {"bwd_data k3 s2 p1 8x8", CONV_BWD_DATA(2, 1, 8, 8), {IN(D_NORMAL, 4, 4, 4), PAR(D_NORMAL, 4, 4, 3, 3)}},
        {"bwd_weight k1 s1 p0", CONV_BWD_WEIGHT(1, 0, 1), {IN(D_NORMAL, 4, 5, 6), IN(D_NORMAL, 3, 5, 6)}},
        {"bwd_weight k3 s1 p1 8x8", CONV_BWD_WEIGHT(1, 1, 3), {IN(D_NORMAL, 3, 8, 8), IN(D_NORMAL, 5, 8, 8)}},
        {"bwd_weight k3 s1 p0 7x5", CONV_BWD_WEIGHT(1, 0, 3), {IN(D_NORMAL, 2, 7, 5), IN(D_NORMAL, 4, 5, 3)}},
        {"bwd_weight k3 s2 p1 9x6", CONV_BWD_WEIGHT(2, 1, 3), {IN(D_NORMAL, 3, 9, 6), IN(D_NORMAL, 2, 5, 3)}},
        {"bwd_weight k3 s2 p1 8x8", CONV_BWD_WEIGHT(2, 1, 3), {IN(D_NORMAL, 4, 8, 8), IN(D_NORMAL, 4, 4, 4)}},
    };
    RUN_TABLE("conv2d gradients", cases);
}

static void test_matmul(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"[N,h,d,L]^T x [N,h,d,L]", MATMUL(1, 0), {IN(D_NORMAL, 2, 4, 6), IN(D_NORMAL, 2, 4, 6)}},
        {"[N,K] x [O,K]^T", MATMUL(0, 1), {IN(D_NORMAL, 7), PAR(D_NORMAL, 5, 7)}},
        {"[2,3,4] x [4,5]", MATMUL(0, 0), {PAR(D_NORMAL, 2, 3, 4), PAR(D_NORMAL, 4, 5)}},
        {"[N,K] x [K,O]", MATMUL(0, 0), {IN(D_NORMAL, 6), PAR(D_NORMAL, 6, 3)}},
        {"[N,h,L,d] x [N,h,d,L]", MATMUL(0, 0), {IN(D_NORMAL, 2, 5, 3), IN(D_NORMAL, 2, 3, 5)}},
        {"[N,h,d,L] x [N,h,L,L]^T", MATMUL(0, 1), {IN(D_NORMAL, 2, 3, 5), IN(D_NORMAL, 2, 5, 5)}},
        {"[N,3,5,4]^T x [N,3,6,5]^T", MATMUL(1, 1), {IN(D_NORMAL, 3, 5, 4), IN(D_NORMAL, 3, 6, 5)}},
        {"[N,2,3,4] x [4,5] bcast", MATMUL(0, 0), {IN(D_NORMAL, 2, 3, 4), PAR(D_NORMAL, 4, 5)}},
        {"[3,4] x [N,2,4,5] bcast", MATMUL(0, 0), {PAR(D_NORMAL, 3, 4), IN(D_NORMAL, 2, 4, 5)}},
        {"[N,1,3,4] x [2,4,5] bcast", MATMUL(0, 0), {IN(D_NORMAL, 1, 3, 4), PAR(D_NORMAL, 2, 4, 5)}},
        {"[N,2,4,3]^T x [1,4,5] bcast", MATMUL(1, 0), {IN(D_NORMAL, 2, 4, 3), PAR(D_NORMAL, 1, 4, 5)}},
        {"[N,2,3,4] x [2,5,4]^T bcast", MATMUL(0, 1), {IN(D_NORMAL, 2, 3, 4), PAR(D_NORMAL, 2, 5, 4)}},
        {"[N,1,3] x [3,1] (k=3,n=1)", MATMUL(0, 0), {IN(D_NORMAL, 1, 3), PAR(D_NORMAL, 3, 1)}},
        {"[N,64,96] x [96,80] larger", MATMUL(0, 0), {IN(D_NORMAL, 64, 96), PAR(D_NORMAL, 96, 80)}},
        {"[N,4,32,40]^T x [N,4,32,40] larger", MATMUL(1, 0), {IN(D_NORMAL, 4, 32, 40), IN(D_NORMAL, 4, 32, 40)}},
    };
    RUN_TABLE("matmul", cases);
}

static void test_layout(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"reshape [N,3,4,5]->[N,60]", RESHAPE(NB, 60), {IN(D_NORMAL, 3, 4, 5)}},
        {"reshape [N,12,5]->[N,3,2,10]", RESHAPE(NB, 3, 2, 10), {IN(D_NORMAL, 12, 5)}},
        {"reshape param [6,4]->[2,3,4]", RESHAPE(2, 3, 4), {PAR(D_NORMAL, 6, 4)}},
        {"permute (0,2,3,1)", PERMUTE(0, 2, 3, 1), {IN(D_NORMAL, 3, 4, 5)}},
        {"permute (0,3,1,2)", PERMUTE(0, 3, 1, 2), {IN(D_NORMAL, 3, 4, 5)}},
        {"permute rank 5 (0,3,1,4,2)", PERMUTE(0, 3, 1, 4, 2), {IN(D_NORMAL, 2, 3, 4, 5)}},
        {"permute identity", PERMUTE(0, 1, 2), {IN(D_NORMAL, 3, 4)}},
        {"permute param (1,0)", PERMUTE(1, 0), {PAR(D_NORMAL, 3, 4)}},
        {"permute param (2,0,1)", PERMUTE(2, 0, 1), {PAR(D_NORMAL, 2, 3, 4)}},
        {"concat axis 1", CONCAT(1), {IN(D_NORMAL, 2, 4, 5), IN(D_NORMAL, 3, 4, 5)}},
        {"concat axis 2", CONCAT(2), {IN(D_NORMAL, 3, 1, 5), IN(D_NORMAL, 3, 4, 5)}},
        {"concat last axis", CONCAT(3), {IN(D_NORMAL, 3, 4, 2), IN(D_NORMAL, 3, 4, 5)}},
        {"concat axis -1", CONCAT(-1), {IN(D_NORMAL, 2, 3), IN(D_NORMAL, 2, 1)}},
        {"concat params axis 0", CONCAT(0), {PAR(D_NORMAL, 2, 3), PAR(D_NORMAL, 4, 3)}},
        {"concat params axis 1", CONCAT(1), {PAR(D_NORMAL, 2, 3), PAR(D_NORMAL, 2, 4)}},
        {"concat with a const axis 1", CONCAT(1), {IN(D_NORMAL, 2, 4, 5), CST(0.5, SHAPE(NB, 1, 4, 5))}},
        {"slice axis 1 at 2", SLICE(1, 2, 3), {IN(D_NORMAL, 7, 4)}},
        {"slice last axis at 4", SLICE(2, 4, 5), {IN(D_NORMAL, 3, 9)}},
        {"slice axis 2 at 1", SLICE(2, 1, 4), {IN(D_NORMAL, 3, 6, 5)}},
        {"slice axis -1 at 0", SLICE(-1, 0, 2), {IN(D_NORMAL, 3, 6, 5)}},
        {"slice whole axis", SLICE(1, 0, 4), {IN(D_NORMAL, 4, 3)}},
        {"slice param axis 0", SLICE(0, 1, 2), {PAR(D_NORMAL, 4, 3)}},
        {"expand [N,3,1,1]->[N,3,4,5]", EXPAND(NB, 3, 4, 5), {IN(D_NORMAL, 3, 1, 1)}},
        {"expand [N,1]->[N,6]", EXPAND(NB, 6), {IN(D_NORMAL, 1)}},
        {"expand [N,1,4,1]->[N,3,4,2]", EXPAND(NB, 3, 4, 2), {IN(D_NORMAL, 1, 4, 1)}},
        {"expand param [3,1,5]->[2,3,4,5]", EXPAND(2, 3, 4, 5), {PAR(D_NORMAL, 3, 1, 5)}},
    };
    RUN_TABLE("layout", cases);
}

static void test_softmax(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"last axis", SOFTMAX(2), {IN(D_NORMAL, 3, 7)}},
        {"axis -1", SOFTMAX(-1), {IN(D_WIDE, 2, 3, 5)}},
        {"middle axis 1", SOFTMAX(1), {IN(D_NORMAL, 5, 4, 3)}},
        {"middle axis 2", SOFTMAX(2), {IN(D_WIDE, 5, 4, 3)}},
        {"last axis logits ~1000", SOFTMAX(-1), {IN(D_HIGH, 4, 9)}},
        {"middle axis logits ~1000", SOFTMAX(1), {IN(D_HIGH, 6, 5)}},
        {"last axis logits ~-1000", SOFTMAX(-1), {IN(D_LOW, 3, 8)}},
        {"length 1", SOFTMAX(1), {IN(D_NORMAL, 1, 4)}},
        {"param rank 1", SOFTMAX(0), {PAR(D_NORMAL, 6)}},
    };
    RUN_TABLE("softmax", cases);
}

/* The attn rule's op: [N, heads, d, tokens] operands as the U-Net's attention
 * has them, keys unlike queries in number, values unlike queries in width. */
static void test_attention(void **state)
{
    (void)state;
    const edm_node attn = {.op = EDM_OP_ATTENTION};
    const op_case cases[] = {
        {"[N,2,4,6] q, k, v", attn, {IN(D_NORMAL, 2, 4, 6), IN(D_NORMAL, 2, 4, 6), IN(D_NORMAL, 2, 4, 6)}},
        {"5 keys for 3 queries, v 7 wide", attn, {IN(D_NORMAL, 3, 4, 3), IN(D_NORMAL, 3, 4, 5), IN(D_NORMAL, 3, 7, 5)}},
        {"large logits", attn, {IN(D_WIDE, 1, 8, 9), IN(D_WIDE, 1, 8, 9), IN(D_NORMAL, 1, 8, 9)}},
        {"260 queries over 300 keys: two score tiles", attn, {IN(D_NORMAL, 1, 4, 260), IN(D_NORMAL, 1, 4, 300), IN(D_NORMAL, 1, 2, 300)}},
    };
    RUN_TABLE("attention", cases);
}

static void test_resample(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"avgpool2 8x6", OP(AVGPOOL2), {IN(D_NORMAL, 3, 8, 6)}},
        {"avgpool2 2x2", OP(AVGPOOL2), {IN(D_NORMAL, 1, 2, 2)}},
        {"avgpool2 4x10", OP(AVGPOOL2), {IN(D_NORMAL, 2, 4, 10)}},
        {"upsample2 4x5", OP(UPSAMPLE2), {IN(D_NORMAL, 3, 4, 5)}},
        {"upsample2 1x3", OP(UPSAMPLE2), {IN(D_NORMAL, 2, 1, 3)}},
        {"dropout eval", DROPOUT(0.5), {IN(D_NORMAL, 3, 4, 4)}},
        {"dropout eval p=0", DROPOUT(0.0), {IN(D_NORMAL, 5)}},
    };
    RUN_TABLE("resample/dropout", cases);
}

static void test_const(void **state)
{
    (void)state;
    const op_case cases[] = {
        {"const []", CONSTOP(3.5, SCALAR), {{0}}},
        {"const [3,4]", CONSTOP(-1.25, SHAPE(3, 4)), {{0}}},
        {"const [N,1,4,4]", CONSTOP(0.1, SHAPE(NB, 1, 4, 4)), {{0}}},
        {"const [N,2]", CONSTOP(7.0, SHAPE(NB, 2)), {{0}}},
        {"const [N]", CONSTOP(1e-3, SHAPE(NB)), {{0}}},
        {"const zero [2,2,2]", CONSTOP(0.0, SHAPE(2, 2, 2)), {{0}}},
        {"const as operand", OP(SUB), {CST(0.5, SHAPE(NB, 3, 1, 1)), IN(D_NORMAL, 3, 2, 2)}},
    };
    RUN_TABLE("const", cases);
}

/* ------------------------------------------------------------------ chains: buffer reuse and aliases */

/* y = x + 0.5·(conv(silu(x)) + bias); second output ‖y‖² per sample, reshaped */
static void chain_residual(ctx *c)
{
    int x = input(c, "x", SHAPE(NB, 4, 6, 5), D_NORMAL);
    int w = param(c, "w", SHAPE(4, 4, 3, 3), D_NORMAL);
    int bias = param(c, "bias", SHAPE(4, 1, 1), D_NORMAL);
    int h = op1(c, OP(SILU), x);
    h = op2(c, CONV(1, 1), h, w);
    h = op2(c, OP(ADD), h, bias);
    h = op2(c, OP(MUL), h, cnst(c, SCALAR, 0.5));
    int y = op2(c, OP(ADD), x, h);
    output(c, "y", y);
    int n2 = op1(c, REDUCE(SUMSQ, 0xe, 1), y);
    output(c, "norm", op1(c, RESHAPE(NB), n2));
}

/* EDM2-style attention: q, k, v [N, heads, d, L] */
static void chain_attention(ctx *c)
{
    int q = input(c, "q", SHAPE(NB, 2, 3, 5), D_NORMAL);
    int k = input(c, "k", SHAPE(NB, 2, 3, 5), D_NORMAL);
    int v = input(c, "v", SHAPE(NB, 2, 3, 5), D_NORMAL);
    int s = op2(c, MATMUL(1, 0), q, k); /* [N, 2, L, L] */
    s = op2(c, OP(MUL), s, cnst(c, SCALAR, 1 / sqrt(3.0)));
    int p = op1(c, SOFTMAX(-1), s);
    int o = op2(c, MATMUL(0, 1), v, p); /* [N, 2, d, L] */
    output(c, "y", op1(c, RESHAPE(NB, 6, 5), o));
    output(c, "p", p);
}

/* a small U: pool, conv, upsample, skip concat, slice, permute */
static void chain_unet(ctx *c)
{
    int x = input(c, "x", SHAPE(NB, 2, 8, 6), D_NORMAL);
    int w = param(c, "w", SHAPE(3, 2, 3, 3), D_NORMAL);
    int pooled = op1(c, OP(AVGPOOL2), x);
    int h = op2(c, CONV(1, 1), pooled, w);
    h = op1(c, OP(UPSAMPLE2), h);
    int cat = op2(c, CONCAT(1), h, x); /* [N, 5, 8, 6] */
    int sl = op1(c, SLICE(1, 1, 3), cat);
    output(c, "y", op1(c, PERMUTE(0, 2, 3, 1), sl));
    output(c, "pooled", op1(c, DROPOUT(0.25), pooled));
}

/* A long chain of same-sized values so freed buffers are reused, with one
 * value (sq) made first and read last, and an alias read after its source's
 * other readers are done. */
static void chain_reuse(ctx *c)
{
    int x = input(c, "x", SHAPE(NB, 3, 4, 4), D_NORMAL);
    int sq = op1(c, OP(SQUARE), x);
    int h = op1(c, OP(NEG), x);
    int r = op1(c, RESHAPE(NB, 48), h); /* alias of h */
    h = op1(c, OP(EXP), h);
    h = op1(c, OP(SIN), h);
    h = op1(c, OP(SIGMOID), h);
    h = op1(c, OP(COS), h);
    h = op2(c, OP(MUL), h, sq);
    h = op2(c, OP(MAXIMUM), h, cnst(c, SCALAR, 0.1));
    h = op1(c, OP(SQRT), h);
    h = op1(c, RESHAPE(NB, 48), h);
    h = op2(c, OP(ADD), h, r);
    output(c, "y", h);
    output(c, "sq", op1(c, REDUCE(SUM, 0x2, 0), op1(c, RESHAPE(NB, 48), sq)));
}

/* one value read twice by the same node, twice over */
static void chain_same_operand(ctx *c)
{
    int x = input(c, "x", SHAPE(NB, 3, 5), D_NORMAL);
    int h = op1(c, OP(EXP), x);
    int y = op2(c, OP(MUL), h, h);
    y = op2(c, OP(ADD), y, y);
    output(c, "y", op2(c, MATMUL(0, 1), y, y));
}

static void test_chains(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        void (*build)(ctx *);
    } chains[] = {
        {"chain residual", chain_residual},
        {"chain attention", chain_attention},
        {"chain unet", chain_unet},
        {"chain reuse", chain_reuse},
        {"chain same operand", chain_same_operand},
    };
    tally t = {.group = "chains"};
    for (size_t i = 0; i < sizeof chains / sizeof chains[0]; i++)
        for (int keep_all = 0; keep_all <= 1; keep_all++) {
            ctx c;
            ctx_init(&c);
            chains[i].build(&c);
            char name[96];
            snprintf(name, sizeof name, "%s%s", chains[i].name, keep_all ? " (keep_all)" : "");
            check_graph(&t, name, &c, keep_all, 1);
            ctx_free(&c);
        }
    print_message("# chains: %d runs (each twice) x batch 1,2,3 x f64,f32; worst nmse f64 %.2g, f32 %.2g\n", t.cases, t.worst[0],
                  t.worst[1]);
    if (t.fails)
        fail_msg("chains: %d of %d failed", t.fails, t.cases);
}

/* ------------------------------------------------------------------ dropout in training */

static int same_values(const double *a, const double *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static edm_cpu *run_dropout(const edm_graph *g, edm_dtype prec, uint64_t seed, int training, const double *xs,
                            int64_t n)
{
    edm_status st;
    edm_status_init(&st);
    edm_cpu_options opt = {.compute = prec, .training = training, .seed = seed};
    edm_cpu *x = edm_cpu_new(g, 2, &opt, &st);
    if (!x)
        fail_msg("edm_cpu_new: %s", st.msg);
    if (edm_cpu_set_f64(x, "x", xs, n, &st) != 0 || edm_cpu_run(x, &st) != 0)
        fail_msg("dropout run: %s", st.msg);
    return x;
}

static void get(const edm_cpu *x, int id, double *out, int64_t n)
{
    edm_status st;
    edm_status_init(&st);
    if (edm_cpu_get_f64(x, id, out, n, &st) != 0)
        fail_msg("reading %%%d: %s", id, st.msg);
}

static void test_dropout_training(void **state)
{
    (void)state;
    static const double ps[3] = {0.3, 0.3, 0.9};
    ctx c;
    ctx_init(&c);
    int xin = input(&c, "x", SHAPE(NB, 16, 32, 32), D_NORMAL);
    int outs[5];
    for (int i = 0; i < 3; i++) {
        edm_node d = DROPOUT(ps[i]);
        d.attr.dropout.mask_id = i + 1;
        outs[i] = output(&c, i == 0 ? "d0" : i == 1 ? "d1" : "d2", op1(&c, d, xin));
    }
    edm_node d0 = DROPOUT(0.0);
    d0.attr.dropout.mask_id = 4;
    outs[3] = output(&c, "p0", op1(&c, d0, xin));
    edm_node again = DROPOUT(ps[0]);
    again.attr.dropout.mask_id = 1; /* d0's: the backward pass redraws the forward's mask */
    outs[4] = output(&c, "again", op1(&c, again, xin));
    if (c.err[0])
        fail_msg("%s", c.err);
    covered |= 1ull << EDM_OP_DROPOUT;

    const int64_t n = (int64_t)2 * 16 * 32 * 32;
    double *xs = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n),
           *y2 = malloc(sizeof(double) * (size_t)n);
    unsigned char *mask[2][3];
    assert_true(xs && y && y2);
    edm_rng r = edm_rng_make(99, "x");
    edm_rng_normal_f64(&r, 0, xs, n);
    for (int64_t i = 0; i < n; i++)
        if (xs[i] == 0)
            xs[i] = 1; /* a zero input would look dropped */

    int fails = 0;
    for (int p = 0; p < 2; p++) {
        edm_dtype prec = p == 0 ? EDM_F64 : EDM_F32;
        const char *pname = edm_dtype_name(prec);
        double rtol = p == 0 ? 1e-15 : 4e-7;
        edm_cpu *x = run_dropout(c.g, prec, 7, 1, xs, n);
        for (int k = 0; k < 3; k++) {
            mask[p][k] = malloc((size_t)n);
            assert_non_null(mask[p][k]);
            get(x, outs[k], y, n);
            double scale = 1 / (1 - ps[k]);
            int64_t dropped = 0, bad = 0;
            for (int64_t i = 0; i < n; i++) {
                double xv = p == 0 ? xs[i] : (double)(float)xs[i];
                mask[p][k][i] = y[i] != 0;
                if (y[i] == 0)
                    dropped++;
                else if (!(fabs(y[i] - xv * scale) <= rtol * fabs(xv * scale)))
                    bad++;
            }
            double mean = (double)n * ps[k], sigma = sqrt((double)n * ps[k] * (1 - ps[k]));
            if (bad) {
                print_error("dropout p=%g [%s]: %lld kept elements not scaled by 1/(1-p)\n", ps[k], pname,
                            (long long)bad);
                fails++;
            }
            if (fabs((double)dropped - mean) > 5 * sigma) {
                print_error("dropout p=%g [%s]: %lld of %lld dropped, expected %.0f ± %.0f\n", ps[k], pname,
                            (long long)dropped, (long long)n, mean, 5 * sigma);
                fails++;
            }
        }
        /* p = 0 in training: the identity */
        get(x, outs[3], y, n);
        for (int64_t i = 0; i < n; i++)
            if (y[i] != (p == 0 ? xs[i] : (double)(float)xs[i])) {
                print_error("dropout p=0 [%s]: element %lld changed\n", pname, (long long)i);
                fails++;
                break;
            }
        /* the same seed gives the same values, in a fresh backend and a rerun */
        edm_cpu *x2 = run_dropout(c.g, prec, 7, 1, xs, n);
        get(x, outs[0], y, n);
        get(x2, outs[0], y2, n);
        if (!same_values(y, y2, n)) {
            print_error("dropout [%s]: the same seed gave different values\n", pname);
            fails++;
        }
        edm_status st;
        edm_status_init(&st);
        assert_int_equal(edm_cpu_run(x2, &st), 0);
        get(x2, outs[0], y2, n);
        if (!same_values(y, y2, n)) {
            print_error("dropout [%s]: a second run with the same seed gave different values\n", pname);
            fails++;
        }
        edm_cpu_free(x2);
        /* another seed, another mask */
        x2 = run_dropout(c.g, prec, 8, 1, xs, n);
        get(x2, outs[0], y2, n);
        int64_t differ = 0;
        for (int64_t i = 0; i < n; i++)
            differ += (y2[i] != 0) != mask[p][0][i];
        /* two independent masks at p = 0.3 differ in 2·p·(1-p) = 42% of places */
        if (differ < n / 4) {
            print_error("dropout [%s]: seeds 7 and 8 gave masks differing in only %lld of %lld places\n", pname,
                        (long long)differ, (long long)n);
            fails++;
        }
        edm_cpu_free(x2);
        /* the same mask id gives the same mask in another node */
        get(x, outs[0], y, n);
        get(x, outs[4], y2, n);
        if (!same_values(y, y2, n)) {
            print_error("dropout [%s]: two nodes with the same mask id drew different masks\n", pname);
            fails++;
        }
        /* two dropout nodes (mask ids) with the same p draw different masks */
        differ = 0;
        for (int64_t i = 0; i < n; i++)
            differ += mask[p][0][i] != mask[p][1][i];
        if (differ < n / 4) {
            print_error("dropout [%s]: two nodes share a mask (%lld of %lld places differ)\n", pname,
                        (long long)differ, (long long)n);
            fails++;
        }
        edm_cpu_free(x);
        /* not training: the identity, whatever the seed */
        x = run_dropout(c.g, prec, 7, 0, xs, n);
        get(x, outs[2], y, n);
        for (int64_t i = 0; i < n; i++)
            if (y[i] != (p == 0 ? xs[i] : (double)(float)xs[i])) {
                print_error("dropout eval [%s]: element %lld changed\n", pname, (long long)i);
                fails++;
                break;
            }
        edm_cpu_free(x);
    }
    /* the mask is a function of (seed, node, element), not of the precision */
    for (int k = 0; k < 3; k++)
        if (memcmp(mask[0][k], mask[1][k], (size_t)n) != 0) {
            print_error("dropout p=%g: f32 and f64 masks differ\n", ps[k]);
            fails++;
        }
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 3; k++)
            free(mask[p][k]);
    free(xs);
    free(y);
    free(y2);
    ctx_free(&c);
    if (fails)
        fail_msg("dropout training: %d check(s) failed", fails);
}

/* ------------------------------------------------------------------ errors and exactness */

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected to find \"%s\" in \"%s\"", needle, haystack);
}

#define MUST_FAIL(call)                                          \
    do {                                                         \
        if ((call) == 0)                                         \
            fail_msg("%s succeeded; it should have failed", #call); \
    } while (0)
#define MUST_PASS(call)                                 \
    do {                                                \
        if ((call) != 0)                                \
            fail_msg("%s failed: %s", #call, st.msg);   \
    } while (0)

static void test_errors(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    int a = input(&c, "a", SHAPE(NB, 4), D_NORMAL);
    int b = param(&c, "b", SHAPE(4), D_NORMAL);
    int y = output(&c, "y", op2(&c, OP(ADD), a, b));
    if (c.err[0])
        fail_msg("%s", c.err);
    static const double av[8] = {1, 2, 3, 4, 5, 6, 7, 8}, bv[4] = {0.5, 0.25, 0.125, 0.0625};
    static const float af[8] = {1, 2, 3, 4, 5, 6, 7, 8};

    for (int p = 0; p < 2; p++) {
        edm_cpu_options opt = {.compute = p == 0 ? EDM_F64 : EDM_F32};
        edm_status st;
        edm_status_init(&st);
        edm_cpu *x = edm_cpu_new(c.g, 2, &opt, &st);
        assert_non_null(x);

        /* the wrong element count fails with a message naming the leaf and both counts */
        edm_status_init(&st);
        MUST_FAIL(edm_cpu_set_f64(x, "a", av, 7, &st));
        assert_int_not_equal(st.code, EDM_OK);
        assert_contains(st.msg, "'a'");
        assert_contains(st.msg, "8");
        assert_contains(st.msg, "7");
        edm_status_init(&st);
        MUST_FAIL(edm_cpu_set_f32(x, "b", af, 5, &st));
        assert_contains(st.msg, "'b'");
        assert_contains(st.msg, "5");
        /* an unknown name */
        edm_status_init(&st);
        MUST_FAIL(edm_cpu_set_f64(x, "nope", av, 4, &st));
        assert_contains(st.msg, "nope");
        /* a wrong-sized set must not count as set: running names the missing leaves */
        edm_status_init(&st);
        MUST_PASS(edm_cpu_set_f64(x, "b", bv, 4, &st));
        MUST_FAIL(edm_cpu_run(x, &st));
        assert_contains(st.msg, "'a'");
        edm_status_init(&st);
        MUST_PASS(edm_cpu_set_f32(x, "a", af, 8, &st));
        MUST_PASS(edm_cpu_run(x, &st));
        double out[8];
        MUST_PASS(edm_cpu_get_f64(x, y, out, 8, &st));
        for (int i = 0; i < 8; i++)
            assert_true(out[i] == av[i] + bv[i % 4]);
        /* reading with the wrong count fails */
        edm_status_init(&st);
        MUST_FAIL(edm_cpu_get_f64(x, y, out, 4, &st));
        assert_int_not_equal(st.code, EDM_OK);
        edm_cpu_free(x);

        /* a fresh backend with only the input set: the parameter is named */
        edm_status_init(&st);
        x = edm_cpu_new(c.g, 2, &opt, &st);
        assert_non_null(x);
        MUST_PASS(edm_cpu_set_f64(x, "a", av, 8, &st));
        MUST_FAIL(edm_cpu_run(x, &st));
        assert_contains(st.msg, "'b'");
        edm_cpu_free(x);
    }

    /* bad batch sizes and precisions are refused */
    edm_status st;
    edm_status_init(&st);
    edm_cpu_options opt = {.compute = EDM_F64};
    assert_null(edm_cpu_new(c.g, 0, &opt, &st));
    assert_int_not_equal(st.code, EDM_OK);
    edm_status_init(&st);
    opt.compute = EDM_F16;
    assert_null(edm_cpu_new(c.g, 2, &opt, &st));
    assert_contains(st.msg, "f16");
    ctx_free(&c);
}

/* f64 keeps values exactly (no silent float rounding on the way in, through
 * an op or on the way out); f32 really computes in float. */
static void test_f64_exact(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    int x = input(&c, "x", SHAPE(NB, 4), D_NORMAL);
    int r = output(&c, "r", op1(&c, RESHAPE(NB, 2, 2), x));
    int m = output(&c, "m", op2(&c, OP(MUL), x, cnst(&c, SCALAR, 1.0)));
    int a = output(&c, "a", op2(&c, OP(ADD), x, cnst(&c, SHAPE(NB, 1), 0.0)));
    int p = output(&c, "p", op1(&c, PERMUTE(0, 2, 1), op1(&c, RESHAPE(NB, 1, 4), x)));
    int k = output(&c, "k", cnst(&c, SCALAR, 1 + 1e-12));
    if (c.err[0])
        fail_msg("%s", c.err);
    const double xs[8] = {1 + 1e-12, 1 - 1e-13, 1 + 0x1p-52, 3.141592653589793, 1e-300, -(1 + 1e-15), 0.1, 1e300};
    const int outs[4] = {r, m, a, p};
    edm_status st;
    edm_status_init(&st);
    edm_cpu_options opt = {.compute = EDM_F64};
    edm_cpu *e = edm_cpu_new(c.g, 2, &opt, &st);
    assert_non_null(e);
    assert_int_equal(edm_cpu_set_f64(e, "x", xs, 8, &st), 0);
    assert_int_equal(edm_cpu_run(e, &st), 0);
    double y[8];
    for (int o = 0; o < 4; o++) {
        assert_int_equal(edm_cpu_get_f64(e, outs[o], y, 8, &st), 0);
        for (int i = 0; i < 8; i++)
            if (y[i] != xs[i])
                fail_msg("f64: output %s element %d is %.17g, not %.17g", edm_graph_node(c.g, outs[o])->name, i, y[i],
                         xs[i]);
    }
    assert_int_equal(edm_cpu_get_f64(e, k, y, 1, &st), 0);
    assert_true(y[0] == 1 + 1e-12);
    /* reading f32 from an f64 run rounds once, at the end */
    float f[8];
    assert_int_equal(edm_cpu_get_f32(e, m, f, 8, &st), 0);
    assert_true(f[0] == 1.0f && f[2] == 1.0f);
    edm_cpu_free(e);

    /* in f32 the same values do round */
    opt.compute = EDM_F32;
    e = edm_cpu_new(c.g, 2, &opt, &st);
    assert_non_null(e);
    assert_int_equal(edm_cpu_set_f64(e, "x", xs, 8, &st), 0);
    assert_int_equal(edm_cpu_run(e, &st), 0);
    assert_int_equal(edm_cpu_get_f64(e, m, y, 8, &st), 0);
    for (int i = 0; i < 8; i++)
        assert_true(y[i] == (double)(float)xs[i]);
    assert_true(y[0] == 1.0);
    assert_int_equal(edm_cpu_get_f64(e, k, y, 1, &st), 0);
    assert_true(y[0] == 1.0);
    edm_cpu_free(e);
    ctx_free(&c);
}

/* The reference checks itself: its conv2d gradients are the adjoints of its
 * conv2d, <conv(x, w), dy> = <x, bwd_data(dy, w)> = <w, bwd_weight(x, dy)>. */
static double dot(const rt *a, const rt *b)
{
    double s = 0;
    for (int64_t i = 0; i < a->n; i++)
        s += a->d[i] * b->d[i];
    return s;
}

static void test_reference_adjoint(void **state)
{
    (void)state;
    static const int geo[][7] = {
        /* C, H, W, O, k, stride, pad */
        {3, 8, 8, 5, 3, 1, 1}, {3, 9, 6, 2, 3, 2, 1}, {2, 7, 5, 4, 3, 1, 0}, {4, 5, 6, 3, 1, 1, 0}, {2, 7, 8, 3, 3, 2, 0},
    };
    for (size_t gi = 0; gi < sizeof geo / sizeof geo[0]; gi++) {
        const int *q = geo[gi];
        ctx c;
        ctx_init(&c);
        int x = input(&c, "x", SHAPE(NB, q[0], q[1], q[2]), D_NORMAL);
        int w = param(&c, "w", SHAPE(q[3], q[0], q[4], q[4]), D_NORMAL);
        int y = op2(&c, CONV(q[5], q[6]), x, w);
        int64_t oh = (q[1] + 2 * q[6] - q[4]) / q[5] + 1, ow = (q[2] + 2 * q[6] - q[4]) / q[5] + 1;
        int dy = input(&c, "dy", SHAPE(NB, q[3], oh, ow), D_NORMAL);
        int bd = op2(&c, CONV_BWD_DATA(q[5], q[6], q[1], q[2]), dy, w);
        int bw = op2(&c, CONV_BWD_WEIGHT(q[5], q[6], q[4]), x, dy);
        if (c.err[0])
            fail_msg("%s", c.err);
        int count = edm_graph_count(c.g);
        double **data = calloc((size_t)count, sizeof *data);
        assert_non_null(data);
        for (int l = 0; l < c.nleaf; l++) {
            const edm_node *n = edm_graph_node(c.g, c.leaf[l].id);
            edm_shape s = bind(n->shape, 2);
            data[c.leaf[l].id] = malloc(sizeof(double) * (size_t)numel(&s));
            assert_non_null(data[c.leaf[l].id]);
            gen("adjoint", 2, n, D_NORMAL, data[c.leaf[l].id], numel(&s));
        }
        char err[512] = "";
        rt *v = ref_eval(c.g, 2, data, 0, err, sizeof err);
        if (!v)
            fail_msg("reference: %s", err);
        double d0 = dot(&v[y], &v[dy]), d1 = dot(&v[x], &v[bd]), d2 = dot(&v[w], &v[bw]);
        if (!(fabs(d1 - d0) <= 1e-12 * fabs(d0) && fabs(d2 - d0) <= 1e-12 * fabs(d0)))
            fail_msg("geometry %zu: <conv,dy> %.17g, <x,bwd_data> %.17g, <w,bwd_weight> %.17g", gi, d0, d1, d2);
        ref_free(v, count);
        for (int i = 0; i < count; i++)
            free(data[i]);
        free(data);
        ctx_free(&c);
    }
}

/* Every op of the table ran in some case above (must run last). */
static void test_coverage(void **state)
{
    (void)state;
    int missing = 0;
    for (int op = 0; op < EDM_OP_COUNT; op++)
        if (!(covered & (1ull << op))) {
            print_error("no case runs op %s\n", edm_op_name((edm_op)op));
            missing++;
        }
    if (missing)
        fail_msg("%d op(s) not covered", missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_reduce),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv2d_grad),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_resample),
        cmocka_unit_test(test_const),
        cmocka_unit_test(test_chains),
        cmocka_unit_test(test_dropout_training),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_f64_exact),
        cmocka_unit_test(test_reference_adjoint),
        cmocka_unit_test(test_coverage),
    };
#ifdef _OPENMP
    default_threads = omp_get_max_threads();
#endif
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
