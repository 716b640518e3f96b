/* The graph rewrites of fusion (fusion.h): dead-code elimination, the rules
 * that rewrite (weight norm, attention, the ew rule's), as rows of a rule
 * table (a predicate that matches a node and an emitter that writes its
 * replacement), and the taps rule, a pass over what they give. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "compiler/passes/fusion.h"

/* ------------------------------------------------------------------ DCE */

static int dce_node(edm_rewriter *rw, int old, const edm_node *n, void *ctx, edm_status *st)
{
    const unsigned char *live = ctx;
    if (!live[old])
        return EDM_REWRITE_DROP;
    return edm_rewriter_emit(rw, n, st);
}

edm_graph *edm_pass_dce(const edm_graph *g, const unsigned char *keep, int *map, edm_status *st)
{
    int count = edm_graph_count(g);
    unsigned char *live = calloc((size_t)(count ? count : 1), 1);
    if (!live) {
        edm_nomem(st);
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        const edm_node *n = edm_graph_node(g, i);
        live[i] = n->op == EDM_OP_OUTPUT || n->op == EDM_OP_INPUT || n->op == EDM_OP_PARAM ||
                  n->op == EDM_OP_BUFFER || (keep && keep[i]);
    }
    for (int t = 0; t < edm_graph_tap_count(g); t++)
        live[edm_graph_tap_node(g, t)] = 1;
    for (int i = count - 1; i >= 0; i--) {
        const edm_node *n = edm_graph_node(g, i);
        if (live[i])
            for (int k = 0; k < n->ninputs; k++)
                live[n->input[k]] = 1;
    }
    edm_graph *out = edm_graph_rewrite(g, dce_node, live, map, st);
    free(live);
    return out;
}

/* ------------------------------------------------------------------ rules */

/* A weight-norm match: the contraction reads the parameter `param` through
 * multiplications and divisions by per-output-channel (or scalar) factors. */
#define WN_MAX_FACTORS 8
typedef struct {
    int param;
    int nfactors;
    int factor[WN_MAX_FACTORS];
    int divide[WN_MAX_FACTORS];
    int out_rank; /* rank of the per-output-channel scale against the output: 3 (conv) or 1 (matmul) */
} wn_match;

/* Whether shape f, right-aligned against the weight shape w, is 1 everywhere
 * but (possibly) the output-channel dim 0. */
static int per_row(const edm_shape *f, const edm_shape *w)
{
    if (f->rank > w->rank)
        return 0;
    for (int i = 0; i < f->rank; i++) {
        int wi = w->rank - f->rank + i;
        if (f->dim[i] == 1)
            continue;
        if (wi != 0 || f->dim[i] != w->dim[0])
            return 0;
    }
    return 1;
}

/* What a rule's predicate found, for its emitter. */
typedef struct {
    const edm_graph *g;
    const edm_uses *uses;
    const unsigned char *keep; /* values that must stay (NULL: none) */
} match_ctx;

typedef struct {
    int q, k, v;
} attn_match;

typedef struct {
    int x[2];        /* the concatenated values, unscaled */
    double scale[2]; /* their scalar factors (1: none) */
} cat_match;

typedef struct {
    int op;           /* the elementwise value sliced */
    int sliced[2];    /* per operand: slice it (1), or read it whole (0: broadcast along the axis) */
} push_match;

typedef union {
    wn_match wn;
    attn_match attn;
    cat_match cat;
    push_match push;
} rule_match;

static int match_wn(const match_ctx *x, int id, rule_match *rm)
{
    const edm_graph *g = x->g;
    wn_match *m = &rm->wn;
    const edm_node *c = edm_graph_node(g, id);
    int w;
    if (c->op == EDM_OP_CONV2D) {
        w = c->input[1];
        m->out_rank = 3;
    } else if (c->op == EDM_OP_MATMUL && c->attr.matmul.trans_b && !c->attr.matmul.trans_a &&
               edm_graph_node(g, c->input[1])->shape.rank == 2 && !edm_shape_has_batch(&edm_graph_node(g, c->input[1])->shape)) {
        w = c->input[1];
        m->out_rank = 1;
    } else {
        return 0;
    }
    const edm_shape *ws = &edm_graph_node(g, w)->shape;
    if (edm_shape_has_batch(ws))
        return 0;
    m->nfactors = 0;
    int v = w;
    for (;;) {
        const edm_node *n = edm_graph_node(g, v);
        if (n->op == EDM_OP_PARAM)
            break;
        if ((n->op != EDM_OP_MUL && n->op != EDM_OP_DIV) || m->nfactors == WN_MAX_FACTORS)
            return 0;
        const edm_node *a = edm_graph_node(g, n->input[0]), *b = edm_graph_node(g, n->input[1]);
        int chain, factor;
        if (edm_shape_equal(&a->shape, ws) && per_row(&b->shape, ws) && !edm_shape_equal(&b->shape, ws)) {
            chain = n->input[0];
            factor = n->input[1];
        } else if (n->op == EDM_OP_MUL && edm_shape_equal(&b->shape, ws) && per_row(&a->shape, ws) &&
                   !edm_shape_equal(&a->shape, ws)) {
            chain = n->input[1];
            factor = n->input[0];
        } else {
            return 0;
        }
        m->factor[m->nfactors] = factor;
        m->divide[m->nfactors++] = n->op == EDM_OP_DIV;
        v = chain;
    }
    m->param = v;
    return m->nfactors > 0 && edm_shape_equal(&edm_graph_node(g, v)->shape, ws);
}

static int emit_binary(edm_rewriter *rw, const edm_node *like, edm_op op, int a, int b, const char *origin,
                       edm_status *st)
{
    edm_node n = {.op = op, .ninputs = 2, .input = {a, b}, .loc = like->loc, .scope = like->scope, .origin = origin};
    return edm_rewriter_emit(rw, &n, st);
}

/* conv(x, f(w)) → conv(x, w) · reshape(s): s the product of the factors. */
static int emit_wn(edm_rewriter *rw, const edm_node *c, const rule_match *rm, edm_status *st)
{
    const wn_match *m = &rm->wn;
    int num = -1, den = -1;
    for (int i = 0; i < m->nfactors; i++) {
        int f = edm_rewriter_map(rw, m->factor[i]);
        int *acc = m->divide[i] ? &den : &num;
        *acc = *acc < 0 ? f : emit_binary(rw, c, EDM_OP_MUL, *acc, f, "wn", st);
        if (*acc < 0 || f < 0)
            return -1;
    }
    int s = num;
    if (den >= 0) {
        if (s < 0) {
            edm_node one = {.op = EDM_OP_CONST, .shape = {.rank = 0}, .dtype = EDM_F32, .loc = c->loc,
                            .scope = c->scope, .origin = "wn", .attr.constant.value = 1.0};
            s = edm_rewriter_emit(rw, &one, st);
            if (s < 0)
                return -1;
        }
        s = emit_binary(rw, c, EDM_OP_DIV, s, den, "wn", st);
        if (s < 0)
            return -1;
    }
    const edm_graph *ng = edm_rewriter_new(rw);
    const edm_shape *ss = &edm_graph_node(ng, s)->shape;
    const edm_shape *ws = &edm_graph_node(edm_rewriter_old(rw), m->param)->shape;
    if (ss->rank == ws->rank && ss->dim[0] == ws->dim[0]) {
        edm_node r = {.op = EDM_OP_RESHAPE, .ninputs = 1, .input = {s}, .loc = c->loc, .scope = c->scope,
                      .origin = "wn", .shape = {.rank = m->out_rank}};
        r.shape.dim[0] = ws->dim[0];
        for (int i = 1; i < m->out_rank; i++)
            r.shape.dim[i] = 1;
        s = edm_rewriter_emit(rw, &r, st);
        if (s < 0)
            return -1;
    }
    edm_node raw = *c;
    raw.input[1] = edm_rewriter_map(rw, m->param);
    int y = edm_rewriter_emit(rw, &raw, st);
    if (y < 0)
        return -1;
    return emit_binary(rw, c, EDM_OP_MUL, y, s, "wn", st);
}

/* A value only `user` reads, and nobody asked to keep. */
static int private_to(const match_ctx *x, int v, int user)
{
    return edm_uses_count(x->uses, v) == 1 && x->uses->users[x->uses->off[v]] == user && !(x->keep && x->keep[v]);
}

/* matmul(v, softmax(matmul(q, k, trans_a), last axis), trans_b) at node id,
 * the scores read by the softmax alone: the weights' node into *w and q, k,
 * v into rm.  Whether the weights have other readers is the caller's. */
static int attn_pattern(const match_ctx *x, int id, int *w, rule_match *rm)
{
    const edm_node *m2 = edm_graph_node(x->g, id);
    if (m2->op != EDM_OP_MATMUL || m2->attr.matmul.trans_a || !m2->attr.matmul.trans_b)
        return 0;
    *w = m2->input[1];
    const edm_node *sm = edm_graph_node(x->g, *w);
    if (sm->op != EDM_OP_SOFTMAX || sm->attr.softmax.axis != sm->shape.rank - 1 || (x->keep && x->keep[*w]))
        return 0;
    int s = sm->input[0];
    const edm_node *m1 = edm_graph_node(x->g, s);
    if (m1->op != EDM_OP_MATMUL || !m1->attr.matmul.trans_a || m1->attr.matmul.trans_b || !private_to(x, s, *w))
        return 0;
    const edm_shape *q = &edm_graph_node(x->g, m1->input[0])->shape, *v = &edm_graph_node(x->g, m2->input[0])->shape;
    if (q->rank != v->rank || !edm_dims_same_order(q->dim, q->rank - 2, v->dim, v->rank - 2))
        return 0; /* broadcast heads: not the pattern */
    rm->attn = (attn_match){.q = m1->input[0], .k = m1->input[1], .v = m2->input[0]};
    return 1;
}

/* attn: the pattern, the weights read by the product with v alone (in
 * training the backward pass reads them too: that is attntrain's). */
static int match_attn(const match_ctx *x, int id, rule_match *rm)
{
    int w;
    return attn_pattern(x, id, &w, rm) && private_to(x, w, id);
}

static int emit_attn(edm_rewriter *rw, const edm_node *m2, const rule_match *rm, edm_status *st)
{
    edm_node n = {.op = EDM_OP_ATTENTION, .ninputs = 3, .loc = m2->loc, .scope = m2->scope, .origin = "attn",
                  .input = {edm_rewriter_map(rw, rm->attn.q), edm_rewriter_map(rw, rm->attn.k),
                            edm_rewriter_map(rw, rm->attn.v)}};
    return edm_rewriter_emit(rw, &n, st);
}

/* A constant of one element: its value into *v. */
static int scalar_const(const edm_node *n, double *v)
{
    if (n->op != EDM_OP_CONST)
        return 0;
    for (int d = 0; d < n->shape.rank; d++)
        if (n->shape.dim[d] != 1)
            return 0;
    *v = n->attr.constant.value;
    return 1;
}

/* concat(a·s, b·t) with constant scalars s, t (mp_cat): the scales move past
 * the concatenation, concat(a, b)·[s…s, t…t], so the concatenation reads
 * stored values only and can be a gather recomputed where it is read. */
static int match_catscale(const match_ctx *x, int id, rule_match *rm)
{
    const edm_node *c = edm_graph_node(x->g, id);
    if (c->op != EDM_OP_CONCAT || c->ninputs != 2)
        return 0;
    int scaled = 0;
    for (int k = 0; k < 2; k++) {
        int in = c->input[k];
        const edm_node *m = edm_graph_node(x->g, in);
        rm->cat.x[k] = in;
        rm->cat.scale[k] = 1;
        if (m->op != EDM_OP_MUL)
            continue;
        for (int j = 0; j < 2; j++) {
            const edm_node *f = edm_graph_node(x->g, m->input[j]), *v = edm_graph_node(x->g, m->input[1 - j]);
            double s;
            if (scalar_const(f, &s) && edm_shape_equal(&v->shape, &m->shape)) {
                rm->cat.x[k] = m->input[1 - j];
                rm->cat.scale[k] = s;
                scaled = 1;
                break;
            }
        }
    }
    return scaled;
}

static int emit_catscale(edm_rewriter *rw, const edm_node *c, const rule_match *rm, edm_status *st)
{
    const edm_graph *og = edm_rewriter_old(rw);
    int ax = c->attr.concat.axis, part[2];
    for (int k = 0; k < 2; k++) { /* [1, …, C_k, …, 1] filled with the scale */
        edm_node f = {.op = EDM_OP_CONST, .dtype = c->dtype, .loc = c->loc, .scope = c->scope, .origin = "catscale",
                      .shape = {.rank = c->shape.rank}, .attr.constant.value = rm->cat.scale[k]};
        for (int d = 0; d < c->shape.rank; d++)
            f.shape.dim[d] = d == ax ? edm_graph_node(og, rm->cat.x[k])->shape.dim[d] : 1;
        if ((part[k] = edm_rewriter_emit(rw, &f, st)) < 0)
            return -1;
    }
    edm_node cat = *c, scales = *c;
    cat.input[0] = edm_rewriter_map(rw, rm->cat.x[0]);
    cat.input[1] = edm_rewriter_map(rw, rm->cat.x[1]);
    scales.input[0] = part[0];
    scales.input[1] = part[1];
    scales.origin = "catscale";
    int y = edm_rewriter_emit(rw, &cat, st), s = y < 0 ? -1 : edm_rewriter_emit(rw, &scales, st);
    return s < 0 ? -1 : emit_binary(rw, c, EDM_OP_MUL, y, s, "catscale", st);
}

/* slice(f(a, b)) with f elementwise and every reader of f(a, b) a slice or
 * elementwise work over its elements: the slice moves inside, f(slice(a),
 * slice(b)) (an operand broadcast along the axis is read whole).  The
 * slices then read stored values and are gathers, and f(a, b) is
 * recomputed where it is read instead of stored beside a (the normalized
 * q/k/v of attention: the stored values are the qkv convolution's output
 * and the small norms, not a second copy of qkv).  Only where every operand
 * sliced has other readers, so is stored anyway. */
static int match_slicepush(const match_ctx *x, int id, rule_match *rm)
{
    const edm_node *sl = edm_graph_node(x->g, id);
    if (sl->op != EDM_OP_SLICE)
        return 0;
    int v = sl->input[0], ax = sl->attr.slice.axis;
    const edm_node *f = edm_graph_node(x->g, v);
    edm_op_class c = edm_op_class_of(f->op);
    if ((c != EDM_CLASS_UNARY && c != EDM_CLASS_BINARY) || (x->keep && x->keep[v]))
        return 0;
    for (int k = x->uses->off[v]; k < x->uses->off[v + 1]; k++) {
        const edm_node *u = edm_graph_node(x->g, x->uses->users[k]);
        edm_op_class uc = edm_op_class_of(u->op);
        int elementwise = (uc == EDM_CLASS_UNARY || uc == EDM_CLASS_BINARY) && edm_shape_equal(&u->shape, &f->shape);
        if (u->op != EDM_OP_SLICE && !elementwise)
            return 0;
    }
    rm->push.op = v;
    for (int k = 0; k < f->ninputs; k++) {
        const edm_shape *a = &edm_graph_node(x->g, f->input[k])->shape;
        int same_rank = a->rank == f->shape.rank;
        int whole = a->rank == 0 || (same_rank && a->dim[ax] == 1); /* broadcast along the axis */
        int part = !whole && same_rank && a->dim[ax] == f->shape.dim[ax];
        /* (other ranks: broadcast across ranks, not rewritten); an operand
         * only f reads would be stored for the slices instead of f: no gain */
        if ((!whole && !part) || (part && edm_uses_count(x->uses, f->input[k]) < 2))
            return 0;
        rm->push.sliced[k] = part;
    }
    return 1;
}

static int emit_slicepush(edm_rewriter *rw, const edm_node *sl, const rule_match *rm, edm_status *st)
{
    const edm_graph *og = edm_rewriter_old(rw);
    edm_node f = *edm_graph_node(og, rm->push.op);
    f.origin = "slicepush";
    for (int k = 0; k < f.ninputs; k++) {
        int a = edm_rewriter_map(rw, f.input[k]);
        if (rm->push.sliced[k]) {
            edm_node part = *sl;
            part.input[0] = a;
            part.origin = "slicepush";
            a = edm_rewriter_emit(rw, &part, st);
        }
        if (a < 0)
            return -1;
        f.input[k] = a;
    }
    return edm_rewriter_emit(rw, &f, st);
}

typedef struct {
    const char *name;
    unsigned flag;
    int (*match)(const match_ctx *x, int id, rule_match *m);
    int (*emit)(edm_rewriter *rw, const edm_node *n, const rule_match *m, edm_status *st);
} rewrite_rule;

static const rewrite_rule REWRITE_RULES[] = {
    {"wn", EDM_FUSE_WN, match_wn, emit_wn},
    {"attn", EDM_FUSE_ATTN, match_attn, emit_attn},
    {"catscale", EDM_FUSE_EW, match_catscale, emit_catscale},
    {"slicepush", EDM_FUSE_EW, match_slicepush, emit_slicepush},
};

typedef struct {
    unsigned fuse;
    match_ctx m;
} rewrite_ctx;

static int rewrite_node(edm_rewriter *rw, int old, const edm_node *n, void *ctx, edm_status *st)
{
    const rewrite_ctx *x = ctx;
    for (size_t r = 0; r < sizeof REWRITE_RULES / sizeof REWRITE_RULES[0]; r++) {
        rule_match m;
        if ((x->fuse & REWRITE_RULES[r].flag) && REWRITE_RULES[r].match(&x->m, old, &m))
            return REWRITE_RULES[r].emit(rw, n, &m, st);
    }
    return edm_rewriter_emit(rw, n, st);
}

/* ------------------------------------------------------------------ attntrain */

/* The attntrain rule, on a training step: the forward's attention pattern
 * (attn_pattern) whose weights the backward pass reads too becomes one
 * attention op, as in the forward alone, and the backward pass reads a copy
 * of the scores and the softmax, recomputed from q and k where it first
 * reads them (node order: the plan makes it there).  The [tokens × tokens]
 * weights then live through one block's backward instead of from the
 * forward pass to the backward, and the forward writes no scores.  Only
 * where every other reader of the weights comes after the product with v
 * (the backward pass's). */
typedef struct {
    match_ctx m;
    int *fused;       /* per old node: the softmax it turns into attention (a ·v product), or -1 */
    attn_match *qkv;  /* per old softmax fused: its q, k and v */
    int *recomputed;  /* per old softmax fused: its copy's new id, or -1 until the first backward read */
} attntrain_ctx;

static int match_attntrain(const match_ctx *x, int id, int *w, rule_match *rm)
{
    if (!attn_pattern(x, id, w, rm) || edm_uses_count(x->uses, *w) < 2)
        return 0;
    for (int k = x->uses->off[*w]; k < x->uses->off[*w + 1]; k++)
        if (x->uses->users[k] < id)
            return 0;
    return 1;
}

/* The softmax's copy, from the scores' node recomputed: its new id, or -1. */
static int emit_recomputed(edm_rewriter *rw, int sm, edm_status *st)
{
    const edm_graph *og = edm_rewriter_old(rw);
    const edm_node *osm = edm_graph_node(og, sm);
    edm_node scores = *edm_graph_node(og, osm->input[0]), weights = *osm;
    for (int k = 0; k < scores.ninputs; k++)
        scores.input[k] = edm_rewriter_map(rw, scores.input[k]);
    scores.origin = weights.origin = "attntrain";
    weights.input[0] = edm_rewriter_emit(rw, &scores, st);
    return weights.input[0] < 0 ? -1 : edm_rewriter_emit(rw, &weights, st);
}

static int attntrain_node(edm_rewriter *rw, int old, const edm_node *n, void *ctx, edm_status *st)
{
    attntrain_ctx *x = ctx;
    if (x->fused[old] >= 0) {
        rule_match rm = {.attn = x->qkv[x->fused[old]]};
        return emit_attn(rw, n, &rm, st);
    }
    edm_node r = *n;
    const edm_node *on = edm_graph_node(edm_rewriter_old(rw), old);
    for (int k = 0; k < on->ninputs; k++) {
        int w = on->input[k];
        if (x->qkv[w].q < 0)
            continue;
        if (x->recomputed[w] < 0 && (x->recomputed[w] = emit_recomputed(rw, w, st)) < 0)
            return -1;
        r.input[k] = x->recomputed[w];
    }
    return edm_rewriter_emit(rw, &r, st);
}

/* g's attntrain rewrite (a new graph, map[old] = new id), or NULL with st set. */
static edm_graph *rewrite_attntrain(const edm_graph *g, const unsigned char *keep, int *map, edm_status *st)
{
    int count = edm_graph_count(g);
    size_t n = (size_t)(count ? count : 1);
    attntrain_ctx x = {.m = {.g = g, .keep = keep}};
    edm_uses uses;
    if (edm_uses_build(g, &uses, st) != 0)
        return NULL;
    x.m.uses = &uses;
    x.fused = malloc(sizeof *x.fused * n);
    x.recomputed = malloc(sizeof *x.recomputed * n);
    x.qkv = malloc(sizeof *x.qkv * n);
    edm_graph *out = NULL;
    if (!x.fused || !x.recomputed || !x.qkv) {
        edm_nomem(st);
    } else {
        for (int i = 0; i < count; i++) {
            x.fused[i] = x.recomputed[i] = -1;
            x.qkv[i] = (attn_match){.q = -1, .k = -1, .v = -1};
        }
        for (int i = 0; i < count; i++) {
            int w;
            rule_match rm;
            if (match_attntrain(&x.m, i, &w, &rm)) {
                x.fused[i] = w;
                x.qkv[w] = rm.attn;
            }
        }
        out = edm_graph_rewrite(g, attntrain_node, &x, map, st);
    }
    free(x.fused);
    free(x.recomputed);
    free(x.qkv);
    edm_uses_free(&uses);
    return out;
}

/* ------------------------------------------------------------------ taps */

/* The taps rule: conv2d(x, w) with a k×k kernel, k > 1, and a weight without
 * a batch becomes conv2d[taps](x, permute(w, [0, 2, 3, 1])).  A tensor-core
 * k tile takes 32 channels of one tap: in w's [O, C, k, k] they lie k·k
 * elements apart (a warp's load touches 18 cache lines for a 3×3 kernel),
 * in the copy side by side.  The copy depends on the weights alone, so the
 * plan makes it in the weights group, and its memory is free again after
 * the convolution.  Likewise conv2d_bwd_data(dy, w) reads permute(w, [1, 2,
 * 3, 0]), [C, k, k, O]: its k tile is 32 output channels of one tap, O·k·k
 * apart in w; that copy the plan makes just before its reader (it is not a
 * weights step: it would be held through the forward pass).  One copy a
 * weight value and layout, however many convolutions read it (copy[2·old +
 * backward]: the copy's new id, or -1). */
static int taps_node(edm_rewriter *rw, int old, const edm_node *n, void *ctx, edm_status *st)
{
    int *copy = ctx;
    if ((n->op != EDM_OP_CONV2D && n->op != EDM_OP_CONV2D_BWD_DATA) || n->attr.conv.taps)
        return edm_rewriter_emit(rw, n, st);
    int w = edm_graph_node(edm_rewriter_old(rw), old)->input[1], bwd = n->op == EDM_OP_CONV2D_BWD_DATA;
    const edm_shape *ws = &edm_graph_node(edm_rewriter_old(rw), w)->shape;
    if (ws->rank != 4 || ws->dim[2] < 2 || edm_shape_has_batch(ws))
        return edm_rewriter_emit(rw, n, st);
    int *c = &copy[2 * w + bwd];
    if (*c < 0) {
        edm_node p = {.op = EDM_OP_PERMUTE, .ninputs = 1, .input = {n->input[1]}, .loc = n->loc, .scope = n->scope,
                      .origin = "taps", .attr.permute.perm = {0, 2, 3, 1}};
        if (bwd)
            memcpy(p.attr.permute.perm, (const int[4]){1, 2, 3, 0}, sizeof(int[4]));
        *c = edm_rewriter_emit(rw, &p, st);
        if (*c < 0)
            return -1;
    }
    edm_node conv = *n;
    conv.input[1] = *c;
    conv.attr.conv.taps = 1;
    return edm_rewriter_emit(rw, &conv, st);
}

/* g's taps rewrite (a new graph, map[old] = new id), or NULL with st set. */
static edm_graph *rewrite_taps(const edm_graph *g, const unsigned char *keep, int *map, edm_status *st)
{
    (void)keep; /* a copy changes no value */
    int count = edm_graph_count(g);
    int *copy = malloc(sizeof *copy * 2 * (size_t)(count ? count : 1));
    if (!copy) {
        edm_nomem(st);
        return NULL;
    }
    for (int i = 0; i < 2 * count; i++)
        copy[i] = -1;
    edm_graph *out = edm_graph_rewrite(g, taps_node, copy, map, st);
    free(copy);
    return out;
}

/* g1 (map1[old] into it, old ids < count; keep by old id) through a further
 * rewrite (a rule's pass, or DCE): the new graph, map1 composed with the
 * rewrite's map, g1 freed; or NULL with st set. */
typedef edm_graph *(*later_rewrite)(const edm_graph *g, const unsigned char *keep, int *map, edm_status *st);
static edm_graph *then_rewrite(edm_graph *g1, int *map1, int count, const unsigned char *keep, later_rewrite pass,
                               edm_status *st)
{
    int n1 = edm_graph_count(g1);
    int *map = malloc(sizeof *map * (size_t)(n1 ? n1 : 1));
    unsigned char *keep1 = calloc((size_t)(n1 ? n1 : 1), 1);
    edm_graph *out = NULL;
    if (!map || !keep1) {
        edm_nomem(st);
    } else {
        for (int i = 0; keep && i < count; i++)
            if (keep[i] && map1[i] >= 0)
                keep1[map1[i]] = 1;
        out = pass(g1, keep1, map, st);
        for (int i = 0; out && i < count; i++)
            map1[i] = map1[i] >= 0 ? map[map1[i]] : -1;
    }
    free(map);
    free(keep1);
    edm_graph_free(g1);
    return out;
}

edm_graph *edm_pass_fuse_rewrite(const edm_graph *g, unsigned fuse, const unsigned char *keep, int *map,
                                 edm_status *st)
{
    int count = edm_graph_count(g);
    int *map1 = malloc(sizeof *map1 * (size_t)(count ? count : 1));
    if (!map1) {
        edm_nomem(st);
        return NULL;
    }
    edm_uses uses;
    if (edm_uses_build(g, &uses, st) != 0) {
        free(map1);
        return NULL;
    }
    rewrite_ctx ctx = {.fuse = fuse, .m = {.g = g, .uses = &uses, .keep = keep}};
    edm_graph *g1 = edm_graph_rewrite(g, rewrite_node, &ctx, map1, st);
    edm_uses_free(&uses);
    if (g1 && (fuse & EDM_FUSE_ATTNTRAIN))
        g1 = then_rewrite(g1, map1, count, keep, rewrite_attntrain, st);
    if (g1 && (fuse & EDM_FUSE_TAPS))
        g1 = then_rewrite(g1, map1, count, keep, rewrite_taps, st);
    if (g1)
        g1 = then_rewrite(g1, map1, count, keep, edm_pass_dce, st);
    for (int i = 0; g1 && i < count; i++)
        map[i] = map1[i];
    free(map1);
    return g1;
}
