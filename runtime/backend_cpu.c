#include "config.h"

#include "runtime/backend_cpu.h"

#include "compiler/ew_math.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ plans
 * Index arithmetic that does not depend on the scalar type. */

typedef struct {
    int rank;
    int64_t dim[EDM_MAX_RANK];
    int64_t sa[EDM_MAX_RANK], sb[EDM_MAX_RANK]; /* element strides, 0 where broadcast */
} bcast_plan;

/* A reduction with adjacent dimensions of the same kind merged and size-1
 * dimensions dropped.  The innermost merged dimension is contiguous: either
 * kept (inner_kept, the pixel norm over channels) or reduced (a row sum). */
typedef struct {
    int64_t nout, nred;
    int nkept, nreduced;
    int64_t kdim[EDM_MAX_RANK], kstride[EDM_MAX_RANK];
    int64_t rdim[EDM_MAX_RANK], rstride[EDM_MAX_RANK];
    int inner_kept;
    int64_t inner; /* length of the innermost merged dimension (stride 1) */
} reduce_plan;

typedef struct {
    int64_t n, c, h, w, o, k, stride, pad, oh, ow;
    int taps; /* conv2d's weight [O, k, k, C] (col's rows in that order); conv2d_bwd_data's [C, k, k, O] */
} conv_plan;

typedef struct {
    int64_t batch, m, n, k;
    int ta, tb, nbatch;
    int64_t bdim[EDM_MAX_RANK], sa[EDM_MAX_RANK], sb[EDM_MAX_RANK];
} matmul_plan;

typedef struct {
    int rank;
    int64_t numel;
    int64_t dim[EDM_MAX_RANK];    /* output dims */
    int64_t stride[EDM_MAX_RANK]; /* input stride for each output dim */
} permute_plan;

/* Attention: `outer` blocks of q [d, tq], k [d, tk], v [dv, tk] → y [dv, tq];
 * queries qb at a time (the scores' tile: qb × tk per thread). */
typedef struct {
    int64_t outer, d, dv, tq, tk, qb;
} attn_plan;

/* Elements of one thread's score tile at most (a tile is qb rows of tk). */
#define ATTN_TILE 65536

/* The calling thread's index inside a parallel region (0 outside one). */
static int omp_thread(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The elementwise loops are built for the generic x86-64 target (SSE2) and,
 * where the compiler can, also for AVX2 and AVX-512, the widest the CPU has
 * chosen at load time (GCC's function multiversioning).  Results do not
 * depend on the width: each element is computed alone, and ISO C mode keeps
 * the compiler from contracting a·b + c into an FMA. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

/* Loops over fewer elements than this run on one thread: below it an OpenMP
 * fork and join costs more than the work it shares out. */
#define PAR_MIN 32768

/* This thread's share [*lo, *hi) of n items inside a parallel region. */
static void thread_range(int64_t n, int64_t *lo, int64_t *hi)
{
#ifdef _OPENMP
    int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    int64_t t = 0, nt = 1;
#endif
    int64_t chunk = n / nt, extra = n % nt;
    *lo = t * chunk + (t < extra ? t : extra);
    *hi = *lo + chunk + (t < extra ? 1 : 0);
}

/* The offset of multi-index number i (row-major over dim) under stride. */
static int64_t offset_of(int64_t i, int rank, const int64_t *dim, const int64_t *stride)
{
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; d--) {
        off += (i % dim[d]) * stride[d];
        i /= dim[d];
    }
    return off;
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static uint64_t mix64(uint64_t z) /* splitmix64's finaliser */
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* e^x for float in plain arithmetic the compiler can vectorise, where the
 * libm call cannot be: within 1.22 ulp of the exact value on [-87, 87]
 * (checked against exp() for every float there); outside it the argument
 * is clamped to ±87 (e^87 ≈ 6.1e37 instead of inf, e^-87 ≈ 1.6e-38
 * instead of a subnormal or 0); NaN in, NaN out.  Only sigmoid and SiLU use
 * it, where the clamping does not show; the exp op itself stays libm's.
 * x = n·ln2 + r, |r| ≤ ln2/2 (ln2 in two parts, Cody–Waite); e^r by its
 * Taylor polynomial to r⁷ (truncation < 5e-9); 2^n built in the exponent
 * bits.  Adding 1.5·2²³ rounds x·log2(e) to the integer n and leaves n in
 * the low mantissa bits.  The selects are bit masks: a float compare or a
 * branch would keep GCC (trapping math) from vectorising the loop. */
typedef union {
    float f;
    uint32_t u;
} f32_bits;

static inline float exp_sat_f32(float x)
{
    const float magic = 12582912.0f; /* 1.5·2²³ */
    const uint32_t lim = 0x42ae0000u; /* 87.0f */
    f32_bits in = {.f = x}, c;
    uint32_t mag = in.u & 0x7fffffffu;
    uint32_t big = 0u - (uint32_t)(mag > lim); /* all ones where |x| > 87, inf or NaN */
    c.u = (in.u & ~big) | (((in.u & 0x80000000u) | lim) & big);
    float t = c.f * 1.44269504f + magic;
    float n = t - magic;
    float r = c.f - n * 0.693359375f; /* ln2, high part: exact in a few bits */
    r = r - n * -2.12194440e-4f;       /* ln2 − the high part */
    float q = 1.0f / 5040;
    q = q * r + 1.0f / 720;
    q = q * r + 1.0f / 120;
    q = q * r + 1.0f / 24;
    q = q * r + 1.0f / 6;
    q = q * r + 0.5f;
    q = q * r + 1.0f;
    q = q * r + 1.0f;
    f32_bits tb = {.f = t}, scale, out;
    scale.u = (tb.u - 0x4b400000u + 127u) << 23; /* 2^n, n ∈ [-126, 126] */
    out.f = q * scale.f;
    uint32_t nan = 0u - (uint32_t)(mag > 0x7f800000u);
    out.u = (out.u & ~nan) | (in.u & nan);
    return out.f;
}

/* ------------------------------------------------------------------ fused steps
 * The elementwise members of a step, ready to evaluate: each reads its
 * operands from an earlier member, the step's core, a stored value at the
 * same index or broadcast, or a constant. */

#define RUN 512            /* elements per run of a fused elementwise list */
#define GEMM_COLUMNS 512   /* a fused convolution puts samples side by side up to this many GEMM columns */
#define EW_MAX_MEMBERS 128 /* members of one list (the planner's CHAIN_MAX bounds it) */

enum { SRC_MEMBER, SRC_CORE, SRC_MEM, SRC_CONST, SRC_BCAST };

typedef struct {
    int kind;
    int member;      /* SRC_MEMBER */
    const void *data; /* SRC_MEM, SRC_CONST, SRC_BCAST */
    bcast_plan plan; /* SRC_BCAST: the member's dims, sa = the operand's strides */
} ew_src;

typedef struct {
    const edm_node *n;
    int passthrough; /* reshape, or dropout outside training: the value of src[0] */
    /* a concatenation or a slice (a gather): element i of output block
     * o = i / ly, r = i mod ly, comes from src[0] at o·blk[0] + off[0] + r when
     * r < la, else from src[1] at o·blk[1] + off[1] + r (a concatenation:
     * blocks la and lb, offsets 0 and −la; a slice: la = ly, the input's
     * block, the start as offset) */
    int gather;
    int64_t ly, la, blk[2], off[2];
    const void *cat[2];
    int64_t mask;    /* dropout: the mask id */
    ew_src src[EDM_MAX_INPUTS];
} ew_member;

typedef struct {
    ew_member *m;
    int n;       /* the last member is the list's value */
    int64_t row; /* runs never cross a multiple of this (0: no limit), so every broadcast read is a
                  * constant or a contiguous row: the gcd of their innermost dimensions */
} ew_list;

#define REAL float
#define SFX f32
#define EXPS exp_sat_f32
#define GEMM cblas_sgemm
#define EXP expf
#define LOG logf
#define SQRT sqrtf
#define SIN sinf
#define COS cosf
#include "runtime/cpu_kernels.inc"
#undef REAL
#undef SFX
#undef EXPS
#undef GEMM
#undef EXP
#undef LOG
#undef SQRT
#undef SIN
#undef COS

#define REAL double
#define SFX f64
#define EXPS exp
#define GEMM cblas_dgemm
#define EXP exp
#define LOG log
#define SQRT sqrt
#define SIN sin
#define COS cos
#include "runtime/cpu_kernels.inc"
#undef REAL
#undef SFX
#undef EXPS
#undef GEMM
#undef EXP
#undef LOG
#undef SQRT
#undef SIN
#undef COS

/* ------------------------------------------------------------------ the executor
 * The graph is rewritten by the fusion rules (fusion.h: the weight-norm
 * rewrite, then dead code removed) and planned; every stored value lives in
 * one arena at the plan's offset (leaves in buffers of their own), inlined
 * values only ever in a step's run scratch. */

typedef struct {
    int rank;
    int64_t dim[EDM_MAX_RANK];
    int64_t numel;
    void *data; /* stored values: the leaf's buffer or the arena; NULL when inlined */
    int own;    /* leaves: data is ours to free */
    int set;    /* leaves: data provided */
} slot;

typedef struct {
    const edm_plan_step *s;
    ew_list pro[EDM_MAX_INPUTS]; /* per core operand; n == 0: the operand is read as stored */
    ew_list epi;                 /* n == 0: the core is the root */
    size_t ws_off[EDM_MAX_INPUTS], core_off; /* bytes into the workspace */
    int per_sample;              /* conv2d: prologue, GEMM and epilogue a sample at a time */
    int64_t group;               /* per_sample: samples whose columns share one GEMM (1: none) */
} cpu_step;

struct edm_cpu {
    const edm_graph *user_g; /* the caller's graph: ids in the API are its ids */
    edm_graph *own_g;        /* the rewritten graph (NULL: none) */
    const edm_graph *g;      /* the graph run */
    int *map;                /* user id → id in g (-1: removed) */
    edm_plan *plan;
    edm_cpu_options opt;
    size_t esize; /* sizeof(float) or sizeof(double) */
    int threads;  /* OpenMP threads; OpenBLAS runs single-threaded inside them */
    int64_t batch;
    int nslots;
    slot *slots;
    void *arena;
    cpu_step *steps;
    /* a plan without training: the steps of its weights groups (edm_plan_weights_groups),
     * and whether their values are those of the parameters as they are (a run then
     * starts after them) */
    int weights_steps, weights_fresh;
    void *ws; /* prologue operands and core outputs of the step running */
    size_t ws_bytes;
    void *scratch; /* per thread: the runs of a fused list */
    size_t scratch_elems;
    void *sx, *sy; /* per thread: one sample's operand and output (per-sample convolutions) */
    size_t sx_elems, sy_elems;
    void *colg, *yg; /* per thread: a group of samples' columns and their GEMM's result */
    size_t colg_elems, yg_elems;
    void *col; /* im2col workspace, one per thread */
    size_t col_bytes;
    void *acc; /* per-thread partial weight gradients */
};

/* An attention node's geometry, batch bound (0 for another op). */
static int attn_geometry(const edm_graph *g, const edm_node *n, int64_t batch, attn_plan *p)
{
    if (n->op != EDM_OP_ATTENTION)
        return 0;
    const edm_shape *q = &edm_graph_node(g, n->input[0])->shape, *k = &edm_graph_node(g, n->input[1])->shape;
    int r = n->shape.rank;
    *p = (attn_plan){.outer = 1, .d = q->dim[r - 2], .dv = n->shape.dim[r - 2], .tq = q->dim[r - 1], .tk = k->dim[r - 1]};
    for (int i = 0; i < r - 2; i++)
        p->outer *= n->shape.dim[i] == EDM_DIM_BATCH ? batch : n->shape.dim[i];
    p->qb = ATTN_TILE / p->tk;
    p->qb = p->qb < 1 ? 1 : p->qb > p->tq ? p->tq : p->qb;
    return 1;
}

/* The forward convolution a conv-family node belongs to, batch bound. */
static int conv_geometry(const edm_graph *g, const edm_node *n, int64_t batch, conv_plan *p)
{
    const edm_node *a = n->ninputs > 0 ? edm_graph_node(g, n->input[0]) : NULL;
    const edm_node *b = n->ninputs > 1 ? edm_graph_node(g, n->input[1]) : NULL;
    const edm_node *x, *w = NULL, *y;
    switch (n->op) {
    case EDM_OP_CONV2D: x = a; w = b; y = n; break;
    case EDM_OP_CONV2D_BWD_DATA: x = n; w = b; y = a; break;
    case EDM_OP_CONV2D_BWD_WEIGHT: x = a; w = n; y = b; break;
    default: return 0;
    }
    /* dim 0 is the batch only where it is N: a conv over a parameter has its own */
    int taps = n->op != EDM_OP_CONV2D_BWD_WEIGHT && n->attr.conv.taps;
    *p = (conv_plan){.n = x->shape.dim[0] == EDM_DIM_BATCH ? batch : x->shape.dim[0], .c = x->shape.dim[1],
                     .h = x->shape.dim[2], .w = x->shape.dim[3],
                     .o = taps && n->op == EDM_OP_CONV2D_BWD_DATA ? w->shape.dim[3] : w->shape.dim[0],
                     .k = w->shape.dim[2], .stride = n->attr.conv.stride, .pad = n->attr.conv.pad,
                     .oh = y->shape.dim[2], .ow = y->shape.dim[3], .taps = taps};
    return 1;
}

static void bind_shape(slot *s, const edm_shape *sh, int64_t batch)
{
    s->rank = sh->rank;
    s->numel = 1;
    for (int i = 0; i < sh->rank; i++) {
        s->dim[i] = sh->dim[i] == EDM_DIM_BATCH ? batch : sh->dim[i];
        s->numel *= s->dim[i];
    }
}

/* Same elements in the same order (bound shapes). */
static int same_order(const slot *a, const slot *b)
{
    return a->numel == b->numel && edm_dims_same_order(a->dim, a->rank, b->dim, b->rank);
}

static void plan_broadcast(const slot *y, const slot *a, const slot *b, bcast_plan *p);

/* The members of step s with (role, operand), ready to run. */
static int build_list(edm_cpu *x, const edm_plan_step *s, edm_member_role role, int operand, ew_list *l,
                      edm_status *st)
{
    int n = 0;
    for (int m = 0; m < s->nmembers; m++)
        n += s->members[m].role == role && s->members[m].operand == operand;
    if (role == EDM_ROLE_EPILOGUE && s->core == s->root)
        n = 0;
    l->n = 0;
    if (n == 0)
        return 0;
    if (n > EW_MAX_MEMBERS)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "fused step with %d members", n);
    l->m = calloc((size_t)n, sizeof *l->m);
    if (!l->m)
        return edm_nomem(st);
    int ids[EW_MAX_MEMBERS];
    for (int m = 0; m < s->nmembers; m++) {
        const edm_plan_member *pm = &s->members[m];
        if (pm->role != role || pm->operand != operand)
            continue;
        const edm_node *nd = edm_graph_node(x->g, pm->node);
        ew_member *e = &l->m[l->n];
        e->n = nd;
        e->passthrough = edm_plan_is_alias(&x->plan->opt, nd);
        if (nd->op == EDM_OP_CONCAT || nd->op == EDM_OP_SLICE) {
            int cat = nd->op == EDM_OP_CONCAT, ax = cat ? nd->attr.concat.axis : nd->attr.slice.axis;
            const slot *y = &x->slots[pm->node];
            int64_t inner = 1;
            for (int d = ax + 1; d < y->rank; d++)
                inner *= y->dim[d];
            e->gather = 1;
            e->ly = y->dim[ax] * inner;
            if (cat) {
                e->la = e->blk[0] = x->slots[nd->input[0]].dim[ax] * inner;
                e->blk[1] = x->slots[nd->input[1]].dim[ax] * inner;
                e->off[0] = 0;
                e->off[1] = -e->la;
            } else {
                e->la = e->ly;
                e->blk[0] = x->slots[nd->input[0]].dim[ax] * inner;
                e->off[0] = nd->attr.slice.start * inner;
            }
            for (int k = 0; k < nd->ninputs; k++) {
                e->cat[k] = x->slots[nd->input[k]].data;
                if (!e->cat[k])
                    return edm_fail(st, EDM_ERR_INTERNAL, nd->loc, "fused step %%%d: the %s %%%d reads %%%d, "
                                    "which is not stored", s->root, edm_op_name(nd->op), pm->node, nd->input[k]);
            }
            ids[l->n++] = pm->node;
            continue;
        }
        e->mask = nd->attr.dropout.mask_id > 0 ? nd->attr.dropout.mask_id : pm->node;
        for (int k = 0; k < nd->ninputs; k++) {
            int a = nd->input[k];
            ew_src *src = &e->src[k];
            int found = -1;
            for (int q = 0; q < l->n; q++)
                if (ids[q] == a)
                    found = q;
            const slot *sa = &x->slots[a], *sv = &x->slots[pm->node];
            if (found >= 0) {
                src->kind = SRC_MEMBER;
                src->member = found;
            } else if (a == s->core && role == EDM_ROLE_EPILOGUE) {
                src->kind = SRC_CORE;
            } else if (!sa->data) {
                return edm_fail(st, EDM_ERR_INTERNAL, nd->loc, "fused step %%%d: %%%d reads %%%d, neither stored nor in the step",
                                s->root, pm->node, a);
            } else if (edm_graph_node(x->g, a)->op == EDM_OP_CONST) {
                src->kind = SRC_CONST;
                src->data = sa->data;
            } else if (same_order(sv, sa)) {
                src->kind = SRC_MEM;
                src->data = sa->data;
            } else {
                src->kind = SRC_BCAST;
                src->data = sa->data;
                plan_broadcast(sv, sa, sa, &src->plan);
            }
        }
        ids[l->n++] = pm->node;
    }
    /* the runs' rows: a gcd under 16 would make runs too short to pay; those lists gather */
    int64_t row = 0;
    for (int m = 0; m < l->n; m++)
        for (int k = 0; k < l->m[m].n->ninputs; k++)
            if (l->m[m].src[k].kind == SRC_BCAST) {
                const bcast_plan *bp = &l->m[m].src[k].plan;
                int64_t a = bp->dim[bp->rank - 1], b = row;
                while (b) {
                    int64_t t = a % b;
                    a = b;
                    b = t;
                }
                row = a;
            }
    l->row = row >= 16 ? row : 0;
    return 0;
}

static int prepare_steps(edm_cpu *x, edm_status *st)
{
    const edm_plan *p = x->plan;
    x->steps = calloc((size_t)(p->nsteps ? p->nsteps : 1), sizeof *x->steps);
    if (!x->steps)
        return edm_nomem(st);
    size_t ws = 0, sx = 0, sy = 0, colg = 0, ygn = 0;
    int maxm = 0;
    for (int i = 0; i < p->nsteps; i++) {
        cpu_step *cs = &x->steps[i];
        const edm_plan_step *s = &p->steps[i];
        cs->s = s;
        maxm = s->nmembers > maxm ? s->nmembers : maxm;
        if (build_list(x, s, EDM_ROLE_EPILOGUE, 0, &cs->epi, st) != 0)
            return -1;
        if (s->core < 0)
            continue;
        const edm_node *core = edm_graph_node(x->g, s->core);
        for (int k = 0; k < core->ninputs; k++)
            if (build_list(x, s, EDM_ROLE_PROLOGUE, k, &cs->pro[k], st) != 0)
                return -1;
        conv_plan cp;
        cs->per_sample = core->op == EDM_OP_CONV2D && (cs->pro[0].n || cs->epi.n) && conv_geometry(x->g, core, x->batch, &cp);
        size_t need = 0;
        for (int k = 0; k < core->ninputs; k++) {
            cs->ws_off[k] = need;
            if (cs->pro[k].n && !(cs->per_sample && k == 0))
                need += ((size_t)x->slots[core->input[k]].numel * x->esize + 63) & ~(size_t)63;
        }
        cs->core_off = need;
        if (cs->epi.n && !cs->per_sample)
            need += (size_t)x->slots[s->core].numel * x->esize;
        ws = need > ws ? need : ws;
        if (cs->per_sample) {
            size_t in = (size_t)(cp.c * cp.h * cp.w), out = (size_t)(cp.o * cp.oh * cp.ow);
            sx = in > sx ? in : sx;
            sy = out > sy ? out : sy;
            /* samples side by side up to GEMM_COLUMNS columns (not for 1x1 convolutions: no im2col to share) */
            int64_t ohw = cp.oh * cp.ow;
            cs->group = cp.k == 1 && cp.stride == 1 && cp.pad == 0 ? 1 : (GEMM_COLUMNS + ohw - 1) / ohw;
            cs->group = cs->group > x->batch ? x->batch : cs->group;
            if (cs->group > 1) {
                size_t cg = (size_t)(cp.c * cp.k * cp.k * cs->group * ohw), yg = (size_t)(cp.o * cs->group * ohw);
                colg = cg > colg ? cg : colg;
                ygn = yg > ygn ? yg : ygn;
            }
        }
    }
    size_t t = (size_t)x->threads;
    x->scratch_elems = (size_t)(maxm + 3) * RUN;
    x->ws_bytes = ws;
    x->sx_elems = sx;
    x->sy_elems = sy;
    x->scratch = malloc(x->scratch_elems * t * x->esize);
    x->ws = ws ? malloc(ws) : NULL;
    x->sx = sx ? malloc(sx * t * x->esize) : NULL;
    x->sy = sy ? malloc(sy * t * x->esize) : NULL;
    x->colg_elems = colg;
    x->yg_elems = ygn;
    x->colg = colg ? malloc(colg * t * x->esize) : NULL;
    x->yg = ygn ? malloc(ygn * t * x->esize) : NULL;
    if (!x->scratch || (ws && !x->ws) || (sx && !x->sx) || (sy && !x->sy) || (colg && !x->colg) || (ygn && !x->yg))
        return edm_fail(st, EDM_ERR_NOMEM, EDM_NO_LOC, "out of memory for the fused steps' workspaces");
    return 0;
}

edm_cpu *edm_cpu_new(const edm_graph *g, int64_t batch, const edm_cpu_options *opt, edm_status *st)
{
    if (batch < 1 || batch > (1 << 20)) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "batch size %lld out of range", (long long)batch);
        return NULL;
    }
    edm_cpu *x = calloc(1, sizeof *x);
    if (!x) {
        edm_nomem(st);
        return NULL;
    }
    x->user_g = x->g = g;
    x->batch = batch;
    if (opt)
        x->opt = *opt;
    if (x->opt.compute != EDM_F32 && x->opt.compute != EDM_F64) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the CPU backend computes in f32 or f64, not %s",
                 edm_dtype_name(x->opt.compute));
        free(x);
        return NULL;
    }
    x->esize = x->opt.compute == EDM_F64 ? sizeof(double) : sizeof(float);
    /* One pool of threads: ours. OpenBLAS's own threads, spinning beside
     * OpenMP's on the same cores, made a small model six times slower. */
    openblas_set_num_threads(1);
#ifdef _OPENMP
    if (x->opt.threads > 0)
        omp_set_num_threads(x->opt.threads);
#endif
    x->threads = max_threads();
    int ucount = edm_graph_count(g);
    x->map = malloc(sizeof *x->map * (size_t)(ucount > 0 ? ucount : 1));
    if (!x->map) {
        edm_nomem(st);
        edm_cpu_free(x);
        return NULL;
    }
    edm_plan_options po = {.fuse = x->opt.fuse, .training = x->opt.training, .keep_all = x->opt.keep_all,
                           .written = x->opt.plan};
    x->plan = edm_plan_for_run(g, &po, x->opt.keep, x->opt.nkeep, &x->own_g, &x->g, x->map, st);
    int rc = x->plan ? edm_plan_bind(x->plan, batch, (int64_t)x->esize, st) : -1;
    int wg = x->plan ? edm_plan_weights_groups(x->plan) : 0;
    x->weights_steps = wg > 0 ? x->plan->groups[wg - 1].first_step + x->plan->groups[wg - 1].nsteps : 0;
    int count = edm_graph_count(x->g);
    x->nslots = count;
    x->slots = rc == 0 ? calloc((size_t)(count ? count : 1), sizeof *x->slots) : NULL;
    if (rc == 0 && !x->slots)
        rc = edm_nomem(st);
    if (rc == 0 && x->plan->arena_bytes > 0 && !(x->arena = malloc((size_t)x->plan->arena_bytes)))
        rc = edm_fail(st, EDM_ERR_NOMEM, EDM_NO_LOC, "out of memory allocating %lld bytes of activations",
                      (long long)x->plan->arena_bytes);
    size_t col = 0, acc = 0;
    for (int i = 0; rc == 0 && i < count; i++) {
        const edm_node *n = edm_graph_node(x->g, i);
        const edm_plan_value *v = &x->plan->values[i];
        slot *s = &x->slots[i];
        bind_shape(s, &n->shape, batch);
        if (edm_op_class_of(n->op) == EDM_CLASS_LEAF) {
            s->data = malloc((size_t)(s->numel ? s->numel : 1) * x->esize);
            s->own = 1;
            if (!s->data) {
                rc = edm_fail(st, EDM_ERR_NOMEM, EDM_NO_LOC, "out of memory for '%s'", n->name ? n->name : "a constant");
                break;
            }
            if (n->op == EDM_OP_CONST) {
                if (x->esize == sizeof(double))
                    k_fill_f64(s->data, s->numel, n->attr.constant.value);
                else
                    k_fill_f32(s->data, s->numel, n->attr.constant.value);
                s->set = 1;
            }
        } else if (v->stored) {
            s->data = v->base == i ? (char *)x->arena + v->offset : x->slots[v->base].data;
        }
        conv_plan cp;
        attn_plan ap;
        if (attn_geometry(x->g, n, batch, &ap)) { /* its score tiles live in the im2col workspace */
            size_t need = (size_t)(ap.qb * ap.tk) * x->esize;
            col = need > col ? need : col;
        }
        if (conv_geometry(x->g, n, batch, &cp)) {
            size_t need = (size_t)(cp.c * cp.k * cp.k) * (size_t)(cp.oh * cp.ow) * x->esize;
            col = need > col ? need : col;
            if (n->op == EDM_OP_CONV2D_BWD_WEIGHT)
                acc = acc > (size_t)(cp.o * cp.c * cp.k * cp.k) * x->esize ? acc : (size_t)(cp.o * cp.c * cp.k * cp.k) * x->esize;
        }
    }
    if (rc == 0 && acc && !(x->acc = malloc(acc * (size_t)x->threads)))
        rc = edm_fail(st, EDM_ERR_NOMEM, EDM_NO_LOC, "out of memory for weight-gradient workspaces");
    if (rc == 0 && col) {
        x->col_bytes = col * (size_t)x->threads; /* one workspace per thread */
        if (!(x->col = malloc(x->col_bytes)))
            rc = edm_fail(st, EDM_ERR_NOMEM, EDM_NO_LOC, "out of memory for the im2col workspace (%zu bytes)", x->col_bytes);
    }
    if (rc == 0)
        rc = prepare_steps(x, st);
    if (rc != 0) {
        edm_cpu_free(x);
        return NULL;
    }
    return x;
}

void edm_cpu_free(edm_cpu *x)
{
    if (!x)
        return;
    for (int i = 0; x->slots && i < x->nslots; i++)
        if (x->slots[i].own)
            free(x->slots[i].data);
    for (int i = 0; x->steps && i < x->plan->nsteps; i++) {
        free(x->steps[i].epi.m);
        for (int k = 0; k < EDM_MAX_INPUTS; k++)
            free(x->steps[i].pro[k].m);
    }
    free(x->steps);
    free(x->slots);
    free(x->arena);
    free(x->scratch);
    free(x->ws);
    free(x->sx);
    free(x->sy);
    free(x->colg);
    free(x->yg);
    free(x->col);
    free(x->acc);
    edm_plan_free(x->plan);
    edm_graph_free(x->own_g);
    free(x->map);
    free(x);
}

int edm_cpu_find(const edm_cpu *x, edm_op op, const char *name) { return edm_graph_find(x->user_g, op, name); }

static int find_leaf(const edm_cpu *x, const char *name, int64_t n, edm_status *st)
{
    int id = edm_graph_find_leaf(x->g, name);
    if (id < 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the model has no input, parameter or buffer '%s'", name);
    if (x->slots[id].numel != n)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "'%s' has %lld elements, %lld given", name,
                        (long long)x->slots[id].numel, (long long)n);
    return id;
}

/* Copies n values of type src_f64 ? double : float into dst of the backend's type. */
static void convert(void *dst, int dst_f64, const void *src, int src_f64, int64_t n)
{
    if (dst_f64 == src_f64) {
        memcpy(dst, src, (src_f64 ? sizeof(double) : sizeof(float)) * (size_t)n);
    } else if (dst_f64) {
        const float *f = src;
        double *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = f[i];
    } else {
        const double *d = src;
        float *f = dst;
        for (int64_t i = 0; i < n; i++)
            f[i] = (float)d[i];
    }
}

static int set_leaf(edm_cpu *x, const char *name, const void *data, int src_f64, int64_t n, edm_status *st)
{
    int id = find_leaf(x, name, n, st);
    if (id < 0)
        return -1;
    convert(x->slots[id].data, x->esize == sizeof(double), data, src_f64, n);
    x->slots[id].set = 1;
    if (!edm_shape_has_batch(&edm_graph_node(x->g, id)->shape)) /* read by the weights groups, maybe */
        x->weights_fresh = 0;
    return 0;
}

int edm_cpu_set_f32(edm_cpu *x, const char *name, const float *data, int64_t n, edm_status *st)
{
    return set_leaf(x, name, data, 0, n, st);
}

int edm_cpu_set_f64(edm_cpu *x, const char *name, const double *data, int64_t n, edm_status *st)
{
    return set_leaf(x, name, data, 1, n, st);
}

/* ------------------------------------------------------------------ planning per op */

static void contiguous_strides(const slot *s, int64_t *stride)
{
    int64_t acc = 1;
    for (int i = s->rank - 1; i >= 0; i--) {
        stride[i] = acc;
        acc *= s->dim[i];
    }
}
/* Right-aligns both operands against the output, zeroes broadcast strides and
 * merges adjacent dimensions that are contiguous for all three tensors. */
static void plan_broadcast(const slot *y, const slot *a, const slot *b, bcast_plan *p)
{
    int r = y->rank;
    int64_t dim[EDM_MAX_RANK], sa[EDM_MAX_RANK], sb[EDM_MAX_RANK], stra[EDM_MAX_RANK], strb[EDM_MAX_RANK];
    contiguous_strides(a, stra);
    contiguous_strides(b, strb);
    for (int i = 0; i < r; i++) {
        int ia = a->rank - r + i, ib = b->rank - r + i;
        dim[i] = y->dim[i];
        sa[i] = ia >= 0 && a->dim[ia] != 1 ? stra[ia] : 0;
        sb[i] = ib >= 0 && b->dim[ib] != 1 ? strb[ib] : 0;
    }
    if (r == 0) {
        p->rank = 1;
        p->dim[0] = 1;
        p->sa[0] = p->sb[0] = 0;
        return;
    }
    p->rank = 0;
    for (int i = 0; i < r; i++) {
        if (dim[i] == 1)
            continue; /* size-1 dims carry nothing */
        int q = p->rank - 1;
        if (q >= 0 && p->sa[q] == sa[i] * dim[i] && p->sb[q] == sb[i] * dim[i]) {
            p->dim[q] *= dim[i];
            p->sa[q] = sa[i];
            p->sb[q] = sb[i];
        } else {
            p->dim[p->rank] = dim[i];
            p->sa[p->rank] = sa[i];
            p->sb[p->rank] = sb[i];
            p->rank++;
        }
    }
    if (p->rank == 0) {
        p->rank = 1;
        p->dim[0] = 1;
        p->sa[0] = p->sb[0] = 0;
    }
}

static void plan_reduce(const slot *a, uint32_t axes, reduce_plan *p)
{
    int64_t stride[EDM_MAX_RANK];
    contiguous_strides(a, stride);
    memset(p, 0, sizeof *p);
    p->nout = p->nred = 1;
    int last = -1; /* kind of the last merged dimension: 1 reduced, 0 kept */
    for (int i = 0; i < a->rank; i++) {
        int red = (axes & (1u << i)) != 0;
        if (a->dim[i] == 1)
            continue;
        /* a dimension follows the previous one of its kind contiguously when
         * nothing of the other kind lies between: merge them */
        int64_t *dim = red ? p->rdim : p->kdim, *str = red ? p->rstride : p->kstride;
        int *cnt = red ? &p->nreduced : &p->nkept;
        if (last == red) {
            dim[*cnt - 1] *= a->dim[i];
            str[*cnt - 1] = stride[i];
        } else {
            dim[*cnt] = a->dim[i];
            str[(*cnt)++] = stride[i];
        }
        if (red)
            p->nred *= a->dim[i];
        else
            p->nout *= a->dim[i];
        last = red;
    }
    p->inner_kept = last == 0;
    p->inner = last == 1 ? p->rdim[p->nreduced - 1] : last == 0 ? p->kdim[p->nkept - 1] : 1;
}

static void plan_matmul(const edm_node *n, const slot *y, const slot *a, const slot *b, matmul_plan *p)
{
    memset(p, 0, sizeof *p);
    p->ta = n->attr.matmul.trans_a;
    p->tb = n->attr.matmul.trans_b;
    p->m = y->dim[y->rank - 2];
    p->n = y->dim[y->rank - 1];
    p->k = p->ta ? a->dim[a->rank - 2] : a->dim[a->rank - 1];
    p->nbatch = y->rank - 2;
    p->batch = 1;
    int64_t mat_a = a->dim[a->rank - 2] * a->dim[a->rank - 1], mat_b = b->dim[b->rank - 2] * b->dim[b->rank - 1];
    int64_t acc_a = mat_a, acc_b = mat_b;
    for (int i = p->nbatch - 1; i >= 0; i--) {
        int ia = a->rank - 2 - (p->nbatch - i), ib = b->rank - 2 - (p->nbatch - i);
        p->bdim[i] = y->dim[i];
        p->batch *= y->dim[i];
        int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
        p->sa[i] = da == 1 ? 0 : acc_a;
        p->sb[i] = db == 1 ? 0 : acc_b;
        acc_a *= da;
        acc_b *= db;
    }
}

static void plan_permute(const edm_node *n, const slot *y, const slot *a, permute_plan *p)
{
    int64_t stride[EDM_MAX_RANK];
    contiguous_strides(a, stride);
    p->rank = y->rank;
    p->numel = y->numel;
    for (int i = 0; i < y->rank; i++) {
        p->dim[i] = y->dim[i];
        p->stride[i] = stride[n->attr.permute.perm[i]];
    }
}

static int64_t prod(const slot *s, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++)
        p *= s->dim[i];
    return p;
}

/* ------------------------------------------------------------------ running */

#define DISPATCH(call_f32, call_f64) \
    do {                             \
        if (f64)                     \
            (call_f64);              \
        else                         \
            (call_f32);              \
    } while (0)

/* Node id of g computed from operands pa, pb into py (full tensors). */
static int run_core(edm_cpu *x, int id, const void *const *in, void *py, edm_status *st)
{
    const edm_node *n = edm_graph_node(x->g, id);
    const slot *y = &x->slots[id];
    const slot *a = n->ninputs > 0 ? &x->slots[n->input[0]] : NULL;
    const slot *b = n->ninputs > 1 ? &x->slots[n->input[1]] : NULL;
    const void *pa = in[0], *pb = in[1];
    int f64 = x->esize == sizeof(double);

    switch (n->op) {
    case EDM_OP_NEG: case EDM_OP_EXP: case EDM_OP_LOG: case EDM_OP_SQRT: case EDM_OP_RSQRT:
    case EDM_OP_SIN: case EDM_OP_COS: case EDM_OP_SQUARE: case EDM_OP_SIGMOID: case EDM_OP_SILU:
    case EDM_OP_CLAMP: case EDM_OP_STEP:
        DISPATCH(k_unary_f32(n, pa, py, y->numel), k_unary_f64(n, pa, py, y->numel));
        return 0;
    case EDM_OP_ADD: case EDM_OP_SUB: case EDM_OP_MUL: case EDM_OP_DIV: case EDM_OP_MAXIMUM: {
        bcast_plan p;
        plan_broadcast(y, a, b, &p);
        DISPATCH(k_binary_f32(n->op, &p, pa, pb, py), k_binary_f64(n->op, &p, pa, pb, py));
        return 0;
    }
    case EDM_OP_SUM: case EDM_OP_SUMSQ: {
        reduce_plan p;
        plan_reduce(a, n->attr.reduce.axes, &p);
        int sq = n->op == EDM_OP_SUMSQ;
        DISPATCH(k_reduce_f32(sq, &p, pa, py), k_reduce_f64(sq, &p, pa, py));
        return 0;
    }
    case EDM_OP_CONV2D: {
        conv_plan p;
        conv_geometry(x->g, n, x->batch, &p);
        DISPATCH(k_conv2d_f32(&p, pa, pb, py, x->col, x->threads), k_conv2d_f64(&p, pa, pb, py, x->col, x->threads));
        return 0;
    }
    case EDM_OP_CONV2D_BWD_DATA: {
        conv_plan p;
        conv_geometry(x->g, n, x->batch, &p);
        DISPATCH(k_conv2d_bwd_data_f32(&p, pa, pb, py, x->col), k_conv2d_bwd_data_f64(&p, pa, pb, py, x->col));
        return 0;
    }
    case EDM_OP_CONV2D_BWD_WEIGHT: {
        conv_plan p;
        conv_geometry(x->g, n, x->batch, &p);
        DISPATCH(k_conv2d_bwd_weight_f32(&p, pa, pb, py, x->col, x->acc, x->threads),
                 k_conv2d_bwd_weight_f64(&p, pa, pb, py, x->col, x->acc, x->threads));
        return 0;
    }
    case EDM_OP_EXPAND: {
        bcast_plan p;
        plan_broadcast(y, a, a, &p);
        DISPATCH(k_expand_f32(&p, pa, py), k_expand_f64(&p, pa, py));
        return 0;
    }
    case EDM_OP_MATMUL: {
        matmul_plan p;
        plan_matmul(n, y, a, b, &p);
        DISPATCH(k_matmul_f32(&p, pa, pb, py, x->threads), k_matmul_f64(&p, pa, pb, py, x->threads));
        return 0;
    }
    case EDM_OP_PERMUTE: {
        permute_plan p;
        plan_permute(n, y, a, &p);
        DISPATCH(k_permute_f32(&p, pa, py), k_permute_f64(&p, pa, py));
        return 0;
    }
    case EDM_OP_CONCAT: {
        int ax = n->attr.concat.axis;
        int64_t outer = prod(y, 0, ax), inner = prod(y, ax + 1, y->rank);
        int64_t la = a->dim[ax] * inner, lb = b->dim[ax] * inner, ly = y->dim[ax] * inner;
        char *dy = py;
        DISPATCH((k_blocks_f32(py, ly, pa, la, outer, la), k_blocks_f32((float *)(void *)(dy) + la, ly, pb, lb, outer, lb)),
                 (k_blocks_f64(py, ly, pa, la, outer, la), k_blocks_f64((double *)(void *)(dy) + la, ly, pb, lb, outer, lb)));
        return 0;
    }
    case EDM_OP_SLICE: {
        int ax = n->attr.slice.axis;
        int64_t outer = prod(a, 0, ax), inner = prod(a, ax + 1, a->rank);
        int64_t la = a->dim[ax] * inner, ly = y->dim[ax] * inner, off = n->attr.slice.start * inner;
        const char *da = pa;
        DISPATCH(k_blocks_f32(py, ly, (const float *)(const void *)da + off, la, outer, ly),
                 k_blocks_f64(py, ly, (const double *)(const void *)da + off, la, outer, ly));
        return 0;
    }
    case EDM_OP_SOFTMAX: {
        int ax = n->attr.softmax.axis;
        int64_t outer = prod(a, 0, ax), inner = prod(a, ax + 1, a->rank), len = a->dim[ax];
        DISPATCH(k_softmax_f32(pa, py, outer, len, inner), k_softmax_f64(pa, py, outer, len, inner));
        return 0;
    }
    case EDM_OP_ATTENTION: {
        attn_plan p;
        attn_geometry(x->g, n, x->batch, &p);
        DISPATCH(k_attention_f32(&p, pa, pb, in[2], py, x->col), k_attention_f64(&p, pa, pb, in[2], py, x->col));
        return 0;
    }
    case EDM_OP_AVGPOOL2:
        DISPATCH(k_avgpool2_f32(pa, py, a->dim[0] * a->dim[1], a->dim[2], a->dim[3]),
                 k_avgpool2_f64(pa, py, a->dim[0] * a->dim[1], a->dim[2], a->dim[3]));
        return 0;
    case EDM_OP_UPSAMPLE2:
        DISPATCH(k_upsample2_f32(pa, py, a->dim[0] * a->dim[1], a->dim[2], a->dim[3]),
                 k_upsample2_f64(pa, py, a->dim[0] * a->dim[1], a->dim[2], a->dim[3]));
        return 0;
    case EDM_OP_DROPOUT: {
        int mask = n->attr.dropout.mask_id > 0 ? n->attr.dropout.mask_id : id;
        DISPATCH(k_dropout_f32(pa, py, y->numel, n->attr.dropout.p, x->opt.seed, mask),
                 k_dropout_f64(pa, py, y->numel, n->attr.dropout.p, x->opt.seed, mask));
        return 0;
    }
    default:
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "CPU backend: no kernel for %s", edm_op_name(n->op));
    }
}

static int run_step(edm_cpu *x, const cpu_step *cs, edm_status *st)
{
    const edm_plan_step *s = cs->s;
    const slot *root = &x->slots[s->root];
    int f64 = x->esize == sizeof(double);
    size_t sc = x->scratch_elems;
    if (s->core < 0) { /* one elementwise loop */
        DISPATCH(eval_list_f32(&cs->epi, 0, root->numel, root->data, NULL, 0, x->opt.seed, x->scratch, sc, 1),
                 eval_list_f64(&cs->epi, 0, root->numel, root->data, NULL, 0, x->opt.seed, x->scratch, sc, 1));
        return 0;
    }
    const edm_node *core = edm_graph_node(x->g, s->core);
    const void *in[EDM_MAX_INPUTS] = {NULL, NULL, NULL};
    for (int k = 0; k < core->ninputs; k++) {
        const slot *a = &x->slots[core->input[k]];
        in[k] = a->data;
        if (!cs->pro[k].n || (cs->per_sample && k == 0))
            continue;
        void *dst = (char *)x->ws + cs->ws_off[k];
        DISPATCH(eval_list_f32(&cs->pro[k], 0, a->numel, dst, NULL, 0, x->opt.seed, x->scratch, sc, 1),
                 eval_list_f64(&cs->pro[k], 0, a->numel, dst, NULL, 0, x->opt.seed, x->scratch, sc, 1));
        in[k] = dst;
    }
    if (cs->per_sample) {
        conv_plan p;
        conv_geometry(x->g, core, x->batch, &p);
        DISPATCH(k_conv2d_fused_f32(&p, &cs->pro[0], &cs->epi, in[0], in[1], root->data, x->col, x->sx, x->sy,
                                    x->scratch, sc, x->opt.seed, x->threads, x->colg, x->yg, cs->group),
                 k_conv2d_fused_f64(&p, &cs->pro[0], &cs->epi, in[0], in[1], root->data, x->col, x->sx, x->sy,
                                    x->scratch, sc, x->opt.seed, x->threads, x->colg, x->yg, cs->group));
        return 0;
    }
    void *out = cs->epi.n ? (char *)x->ws + cs->core_off : root->data;
    if (run_core(x, s->core, in, out, st) != 0)
        return -1;
    if (cs->epi.n)
        DISPATCH(eval_list_f32(&cs->epi, 0, root->numel, root->data, out, 0, x->opt.seed, x->scratch, sc, 1),
                 eval_list_f64(&cs->epi, 0, root->numel, root->data, out, 0, x->opt.seed, x->scratch, sc, 1));
    return 0;
}

int edm_cpu_run(edm_cpu *x, edm_status *st)
{
#ifdef _OPENMP
    if (x->opt.threads > 0)
        omp_set_num_threads(x->opt.threads);
#endif
    openblas_set_num_threads(1);
    for (int i = 0; i < x->nslots; i++) {
        const edm_node *n = edm_graph_node(x->g, i);
        if (edm_op_class_of(n->op) == EDM_CLASS_LEAF && !x->slots[i].set)
            return edm_fail(st, EDM_ERR_USAGE, n->loc, "%s '%s' has no value", edm_op_name(n->op), n->name);
    }
    for (int s = x->weights_fresh ? x->weights_steps : 0; s < x->plan->nsteps; s++)
        if (run_step(x, &x->steps[s], st) != 0)
            return -1;
    x->weights_fresh = x->weights_steps > 0;
    return 0;
}

void edm_cpu_set_seed(edm_cpu *x, uint64_t seed) { x->opt.seed = seed; }

int64_t edm_cpu_numel(const edm_cpu *x, int node)
{
    if (node < 0 || node >= edm_graph_count(x->user_g))
        return -1;
    slot s;
    bind_shape(&s, &edm_graph_node(x->user_g, node)->shape, x->batch);
    return s.numel;
}

static const void *value_data(const edm_cpu *x, int node, int64_t n, edm_status *st)
{
    if (node < 0 || node >= edm_graph_count(x->user_g))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no value %%%d", node), NULL;
    int id = x->map[node];
    const slot *s = id >= 0 ? &x->slots[id] : NULL;
    if (!s || !s->data || !x->plan->values[id].keep)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "value %%%d was not kept", node), NULL;
    if (s->numel != n)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "value %%%d has %lld elements, not %lld", node,
                        (long long)s->numel, (long long)n),
               NULL;
    return s->data;
}

int edm_cpu_get_f32(const edm_cpu *x, int node, float *out, int64_t n, edm_status *st)
{
    const void *src = value_data(x, node, n, st);
    if (!src)
        return -1;
    convert(out, 0, src, x->esize == sizeof(double), n);
    return 0;
}

int edm_cpu_get_f64(const edm_cpu *x, int node, double *out, int64_t n, edm_status *st)
{
    const void *src = value_data(x, node, n, st);
    if (!src)
        return -1;
    convert(out, 1, src, x->esize == sizeof(double), n);
    return 0;
}

size_t edm_cpu_peak_bytes(const edm_cpu *x)
{
    return (size_t)x->plan->arena_bytes + x->ws_bytes +
           (x->sx_elems + x->sy_elems + x->colg_elems + x->yg_elems) * (size_t)x->threads * x->esize;
}
size_t edm_cpu_total_bytes(const edm_cpu *x) { return (size_t)x->plan->stored_bytes; }
const edm_plan *edm_cpu_plan(const edm_cpu *x) { return x->plan; }
