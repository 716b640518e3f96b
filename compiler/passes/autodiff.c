/* Reverse-mode automatic differentiation over the IR's primitives: one rule
 * per op, each emitting ordinary IR nodes, so the backward pass runs on every
 * backend that runs the forward one.  tests/unit/test_autodiff.c checks every
 * rule against central finite differences in float64. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/passes/passes.h"

/* Rules add nodes, which may move the graph's node array: they work on
 * copies of the forward node and of shapes, never on pointers into it. */
typedef struct {
    edm_graph *g;
    edm_status *st;
    edm_node fwd; /* (a copy of) the forward node whose rule is running: position, scope */
    char origin[160];
} ad;

static const edm_node *node(const ad *c, int id) { return edm_graph_node(c->g, id); }

/* Infers and adds a node made by a rule. */
static int mk(ad *c, edm_node n)
{
    n.loc = c->fwd.loc;
    n.scope = c->fwd.scope;
    n.origin = c->origin;
    if (edm_infer_node(c->g, &n, c->st) != 0) {
        edm_note_add(c->st, c->fwd.loc, "while differentiating %s", edm_op_name(c->fwd.op));
        return -1;
    }
    return edm_graph_add(c->g, &n, c->st);
}

static int unary(ad *c, edm_op op, int a)
{
    if (a < 0)
        return -1;
    return mk(c, (edm_node){.op = op, .ninputs = 1, .input = {a}});
}

static int binary(ad *c, edm_op op, int a, int b)
{
    if (a < 0 || b < 0)
        return -1;
    return mk(c, (edm_node){.op = op, .ninputs = 2, .input = {a, b}});
}

static int constant(ad *c, double v)
{
    edm_node n = {.op = EDM_OP_CONST, .dtype = EDM_F32};
    n.attr.constant.value = v;
    return mk(c, n);
}

static int scale(ad *c, int a, double v) { return binary(c, EDM_OP_MUL, a, constant(c, v)); }

static int reshape(ad *c, int a, const edm_shape *to)
{
    if (a < 0)
        return -1;
    if (edm_shape_equal(&node(c, a)->shape, to))
        return a;
    edm_node n = {.op = EDM_OP_RESHAPE, .ninputs = 1, .input = {a}, .shape = *to};
    return mk(c, n);
}

/* Sums g over the dimensions that broadcasting stretched, back to `to`. */
static int unbroadcast(ad *c, int g, const edm_shape *to)
{
    if (g < 0)
        return -1;
    const edm_shape from_copy = node(c, g)->shape, *from = &from_copy;
    if (edm_shape_equal(from, to))
        return g;
    uint32_t axes = 0;
    for (int i = 0; i < from->rank; i++) {
        int j = to->rank - from->rank + i;
        int64_t t = j >= 0 ? to->dim[j] : 1;
        if (t != from->dim[i])
            axes |= 1u << i;
    }
    int s = g;
    if (axes) {
        edm_node n = {.op = EDM_OP_SUM, .ninputs = 1, .input = {g}};
        n.attr.reduce.axes = axes;
        n.attr.reduce.keepdim = 1;
        s = mk(c, n);
    }
    return reshape(c, s, to);
}

/* dy of a reduction, put back into the input's shape. */
static int expand_back(ad *c, int dy, uint32_t axes, const edm_shape *to)
{
    edm_shape keep = *to;
    for (int i = 0; i < to->rank; i++)
        if (axes & (1u << i))
            keep.dim[i] = 1;
    int r = reshape(c, dy, &keep);
    if (r < 0)
        return -1;
    edm_node n = {.op = EDM_OP_EXPAND, .ninputs = 1, .input = {r}, .shape = *to};
    return mk(c, n);
}

static int zeros(ad *c, const edm_shape *shape)
{
    edm_node n = {.op = EDM_OP_CONST, .dtype = EDM_F32, .shape = *shape};
    return mk(c, n);
}

static int matmul(ad *c, int a, int b, int ta, int tb)
{
    if (a < 0 || b < 0)
        return -1;
    edm_node n = {.op = EDM_OP_MATMUL, .ninputs = 2, .input = {a, b}};
    n.attr.matmul.trans_a = ta;
    n.attr.matmul.trans_b = tb;
    return mk(c, n);
}

/* Gradients of node id (forward value y) given its adjoint dy: writes the
 * contribution to input k into contrib[k] (-2 where there is none). */
static int rule(ad *c, int id, int dy, int contrib[EDM_MAX_INPUTS])
{
    c->fwd = *node(c, id);
    const edm_node *n = &c->fwd;
    snprintf(c->origin, sizeof c->origin, "%s'", n->origin ? n->origin : edm_op_name(n->op));
    int a = n->ninputs > 0 ? n->input[0] : -1, b = n->ninputs > 1 ? n->input[1] : -1;
    edm_shape shape_a = a >= 0 ? node(c, a)->shape : (edm_shape){0};
    edm_shape shape_b = b >= 0 ? node(c, b)->shape : (edm_shape){0};
    const edm_shape *sa = &shape_a, *sb = &shape_b;
    for (int k = 0; k < EDM_MAX_INPUTS; k++)
        contrib[k] = -2;
    switch (n->op) {
    case EDM_OP_NEG:
        contrib[0] = unary(c, EDM_OP_NEG, dy);
        break;
    case EDM_OP_EXP:
        contrib[0] = binary(c, EDM_OP_MUL, dy, id);
        break;
    case EDM_OP_LOG:
        contrib[0] = binary(c, EDM_OP_DIV, dy, a);
        break;
    case EDM_OP_SQRT: /* dy / (2 y) */
        contrib[0] = binary(c, EDM_OP_DIV, scale(c, dy, 0.5), id);
        break;
    case EDM_OP_RSQRT: /* -dy y³ / 2 */
        contrib[0] = binary(c, EDM_OP_MUL, scale(c, dy, -0.5), binary(c, EDM_OP_MUL, unary(c, EDM_OP_SQUARE, id), id));
        break;
    case EDM_OP_SIN:
        contrib[0] = binary(c, EDM_OP_MUL, dy, unary(c, EDM_OP_COS, a));
        break;
    case EDM_OP_COS:
        contrib[0] = binary(c, EDM_OP_MUL, dy, unary(c, EDM_OP_NEG, unary(c, EDM_OP_SIN, a)));
        break;
    case EDM_OP_SQUARE:
        contrib[0] = binary(c, EDM_OP_MUL, scale(c, dy, 2), a);
        break;
    case EDM_OP_SIGMOID: /* dy y (1 - y) */
        contrib[0] = binary(c, EDM_OP_MUL, dy,
                            binary(c, EDM_OP_MUL, id, binary(c, EDM_OP_SUB, constant(c, 1), id)));
        break;
    case EDM_OP_SILU: { /* dy s (1 + a (1 - s)), s = sigmoid(a) */
        int s = unary(c, EDM_OP_SIGMOID, a);
        int t = binary(c, EDM_OP_ADD, constant(c, 1), binary(c, EDM_OP_MUL, a, binary(c, EDM_OP_SUB, constant(c, 1), s)));
        contrib[0] = binary(c, EDM_OP_MUL, dy, binary(c, EDM_OP_MUL, s, t));
        break;
    }
    case EDM_OP_CLAMP: { /* passes where lo <= a <= hi */
        int lo = unary(c, EDM_OP_STEP, binary(c, EDM_OP_SUB, a, constant(c, n->attr.clamp.lo)));
        int hi = unary(c, EDM_OP_STEP, binary(c, EDM_OP_SUB, constant(c, n->attr.clamp.hi), a));
        contrib[0] = binary(c, EDM_OP_MUL, dy, binary(c, EDM_OP_MUL, lo, hi));
        break;
    }
    case EDM_OP_STEP: /* flat almost everywhere */
        break;
    case EDM_OP_ADD:
        contrib[0] = unbroadcast(c, dy, sa);
        contrib[1] = unbroadcast(c, dy, sb);
        break;
    case EDM_OP_SUB:
        contrib[0] = unbroadcast(c, dy, sa);
        contrib[1] = unbroadcast(c, unary(c, EDM_OP_NEG, dy), sb);
        break;
    case EDM_OP_MUL:
        contrib[0] = unbroadcast(c, binary(c, EDM_OP_MUL, dy, b), sa);
        contrib[1] = unbroadcast(c, binary(c, EDM_OP_MUL, dy, a), sb);
        break;
    case EDM_OP_DIV: /* y = a / b: da = dy / b, db = -dy y / b */
        contrib[0] = unbroadcast(c, binary(c, EDM_OP_DIV, dy, b), sa);
        contrib[1] = unbroadcast(c, unary(c, EDM_OP_NEG, binary(c, EDM_OP_DIV, binary(c, EDM_OP_MUL, dy, id), b)), sb);
        break;
    case EDM_OP_MAXIMUM: { /* ties go to a */
        int m = unary(c, EDM_OP_STEP, binary(c, EDM_OP_SUB, a, b));
        contrib[0] = unbroadcast(c, binary(c, EDM_OP_MUL, dy, m), sa);
        contrib[1] = unbroadcast(c, binary(c, EDM_OP_MUL, dy, binary(c, EDM_OP_SUB, constant(c, 1), m)), sb);
        break;
    }
    case EDM_OP_SUM:
        contrib[0] = expand_back(c, dy, n->attr.reduce.axes, sa);
        break;
    case EDM_OP_SUMSQ:
        contrib[0] = binary(c, EDM_OP_MUL, expand_back(c, dy, n->attr.reduce.axes, sa), scale(c, a, 2));
        break;
    case EDM_OP_CONV2D: {
        edm_node d = {.op = EDM_OP_CONV2D_BWD_DATA, .ninputs = 2, .input = {dy, b}};
        d.attr.conv = n->attr.conv;
        d.attr.conv.in_h = sa->dim[2];
        d.attr.conv.in_w = sa->dim[3];
        contrib[0] = mk(c, d);
        edm_node w = {.op = EDM_OP_CONV2D_BWD_WEIGHT, .ninputs = 2, .input = {a, dy}};
        w.attr.conv = n->attr.conv;
        w.attr.conv.kernel = sb->dim[2];
        contrib[1] = mk(c, w);
        break;
    }
    case EDM_OP_MATMUL: { /* y = op(a) op(b) */
        int ta = n->attr.matmul.trans_a, tb = n->attr.matmul.trans_b;
        int da = ta ? matmul(c, b, dy, tb, 1) : matmul(c, dy, b, 0, !tb);
        int db = tb ? matmul(c, dy, a, 1, ta) : matmul(c, a, dy, !ta, 0);
        contrib[0] = unbroadcast(c, da, sa);
        contrib[1] = unbroadcast(c, db, sb);
        break;
    }
    case EDM_OP_RESHAPE:
        contrib[0] = reshape(c, dy, sa);
        break;
    case EDM_OP_EXPAND:
        contrib[0] = unbroadcast(c, dy, sa);
        break;
    case EDM_OP_PERMUTE: {
        edm_node p = {.op = EDM_OP_PERMUTE, .ninputs = 1, .input = {dy}};
        for (int i = 0; i < sa->rank; i++)
            p.attr.permute.perm[n->attr.permute.perm[i]] = i;
        contrib[0] = mk(c, p);
        break;
    }
    case EDM_OP_CONCAT: {
        int ax = n->attr.concat.axis;
        edm_node s0 = {.op = EDM_OP_SLICE, .ninputs = 1, .input = {dy}};
        s0.attr.slice.axis = ax;
        s0.attr.slice.start = 0;
        s0.attr.slice.len = sa->dim[ax];
        contrib[0] = mk(c, s0);
        edm_node s1 = s0;
        s1.attr.slice.start = sa->dim[ax];
        s1.attr.slice.len = sb->dim[ax];
        contrib[1] = mk(c, s1);
        break;
    }
    case EDM_OP_SLICE: { /* dy between zeros */
        int ax = n->attr.slice.axis;
        int64_t start = n->attr.slice.start, len = n->attr.slice.len, rest = sa->dim[ax] - start - len;
        int g = dy;
        if (start > 0) {
            edm_shape z = *sa;
            z.dim[ax] = start;
            edm_node cat = {.op = EDM_OP_CONCAT, .ninputs = 2, .input = {zeros(c, &z), g}};
            cat.attr.concat.axis = ax;
            g = cat.input[0] < 0 ? -1 : mk(c, cat);
        }
        if (rest > 0 && g >= 0) {
            edm_shape z = *sa;
            z.dim[ax] = rest;
            edm_node cat = {.op = EDM_OP_CONCAT, .ninputs = 2, .input = {g, zeros(c, &z)}};
            cat.attr.concat.axis = ax;
            g = cat.input[1] < 0 ? -1 : mk(c, cat);
        }
        contrib[0] = g;
        break;
    }
    case EDM_OP_SOFTMAX: { /* y (dy - Σ dy y) along the axis */
        edm_node s = {.op = EDM_OP_SUM, .ninputs = 1, .input = {binary(c, EDM_OP_MUL, dy, id)}};
        s.attr.reduce.axes = 1u << n->attr.softmax.axis;
        s.attr.reduce.keepdim = 1;
        int sum = s.input[0] < 0 ? -1 : mk(c, s);
        contrib[0] = binary(c, EDM_OP_MUL, id, binary(c, EDM_OP_SUB, dy, sum));
        break;
    }
    case EDM_OP_AVGPOOL2:
        contrib[0] = scale(c, unary(c, EDM_OP_UPSAMPLE2, dy), 0.25);
        break;
    case EDM_OP_UPSAMPLE2:
        contrib[0] = scale(c, unary(c, EDM_OP_AVGPOOL2, dy), 4);
        break;
    case EDM_OP_DROPOUT: { /* the same mask, the same scale */
        edm_node d = {.op = EDM_OP_DROPOUT, .ninputs = 1, .input = {dy}};
        d.attr.dropout.p = n->attr.dropout.p;
        d.attr.dropout.mask_id = n->attr.dropout.mask_id > 0 ? n->attr.dropout.mask_id : id;
        contrib[0] = mk(c, d);
        break;
    }
    case EDM_OP_CONV2D_BWD_DATA:
    case EDM_OP_CONV2D_BWD_WEIGHT:
        return edm_fail(c->st, EDM_ERR_SEMANTIC, n->loc, "autodiff: %s has no gradient rule (no second derivatives)",
                        edm_op_name(n->op));
    case EDM_OP_ATTENTION: /* made by the attn rewrite, which runs after autodiff */
        return edm_fail(c->st, EDM_ERR_SEMANTIC, n->loc, "autodiff: attention has no gradient rule (differentiate "
                                                         "before the fusion rewrites)");
    default:
        break;
    }
    for (int k = 0; k < n->ninputs; k++)
        if (contrib[k] == -1)
            return -1;
    return 0;
}

/* adj[id] += g */
static int accumulate(ad *c, int *adj, int id, int g)
{
    if (adj[id] < 0) {
        adj[id] = g;
        return 0;
    }
    c->fwd = *node(c, id);
    snprintf(c->origin, sizeof c->origin, "grad");
    int s = binary(c, EDM_OP_ADD, adj[id], g);
    if (s < 0)
        return -1;
    adj[id] = s;
    return 0;
}

static int wanted_input(const edm_node *n, const char *const *wrt, int nwrt)
{
    for (int i = 0; i < nwrt; i++)
        if (strcmp(n->name, wrt[i]) == 0)
            return 1;
    return 0;
}

int edm_pass_autodiff(edm_graph *g, const char *const *wrt_inputs, int nwrt, edm_status *st)
{
    int count = edm_graph_count(g);
    int *adj = malloc(sizeof(int) * (size_t)(count ? count : 1));
    unsigned char *needs = calloc((size_t)(count ? count : 1), 1);
    if (!adj || !needs) {
        free(adj);
        free(needs);
        return edm_nomem(st);
    }
    ad c = {.g = g, .st = st};
    int rc = 0;
    /* which values depend on something we differentiate with respect to */
    for (int i = 0; i < count; i++) {
        const edm_node *n = edm_graph_node(g, i);
        adj[i] = -1;
        needs[i] = (unsigned char)(n->op == EDM_OP_PARAM || (n->op == EDM_OP_INPUT && wanted_input(n, wrt_inputs, nwrt)));
        for (int k = 0; k < n->ninputs && n->op != EDM_OP_STEP; k++)
            needs[i] = (unsigned char)(needs[i] | needs[n->input[k]]);
    }
    /* seeds: an input "grad.<output>" for every output that depends on them */
    for (int i = 0; i < count && rc == 0; i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_OUTPUT || !needs[i])
            continue;
        char name[512];
        snprintf(name, sizeof name, "grad.%s", n->name);
        edm_node seed = {.op = EDM_OP_INPUT, .dtype = n->dtype, .shape = n->shape, .name = name};
        c.fwd = *n;
        n = &c.fwd;
        snprintf(c.origin, sizeof c.origin, "input");
        int s = mk(&c, seed);
        rc = s < 0 ? -1 : accumulate(&c, adj, n->input[0], s);
    }
    for (int i = count - 1; i >= 0 && rc == 0; i--) {
        const edm_node fwd = *edm_graph_node(g, i), *n = &fwd;
        if (adj[i] < 0 || edm_op_class_of(n->op) == EDM_CLASS_LEAF || n->op == EDM_OP_OUTPUT)
            continue;
        int contrib[EDM_MAX_INPUTS];
        rc = rule(&c, i, adj[i], contrib);
        for (int k = 0; k < n->ninputs && rc == 0; k++)
            if (contrib[k] >= 0 && needs[n->input[k]])
                rc = accumulate(&c, adj, n->input[k], contrib[k]);
    }
    /* the gradients, as outputs named grad.<parameter> (zeros where nothing depends on it) */
    for (int i = 0; i < count && rc == 0; i++) {
        const edm_node leaf = *edm_graph_node(g, i), *n = &leaf;
        if (n->op != EDM_OP_PARAM && !(n->op == EDM_OP_INPUT && wanted_input(n, wrt_inputs, nwrt)))
            continue;
        c.fwd = leaf;
        snprintf(c.origin, sizeof c.origin, "grad");
        int gid = adj[i] >= 0 ? adj[i] : zeros(&c, &n->shape);
        char name[512];
        snprintf(name, sizeof name, "grad.%s", n->name);
        edm_node out = {.op = EDM_OP_OUTPUT, .ninputs = 1, .input = {gid}, .name = name, .origin = "output",
                        .loc = n->loc, .scope = n->scope};
        if (gid < 0 || edm_infer_node(g, &out, st) != 0 || edm_graph_add(g, &out, st) < 0)
            rc = -1;
    }
    free(adj);
    free(needs);
    return rc;
}
