#include "config.h"

#include "compiler/passes/passes.h"

#include <stdlib.h>
#include <string.h>

/* "%12 conv2d" or "%3 param "unet.enc.conv.weight"" for messages. */
static const char *describe(int id, const edm_node *n, char *buf, size_t size)
{
    if (n->name)
        snprintf(buf, size, "%%%d %s \"%s\"", id, edm_op_name(n->op), n->name);
    else
        snprintf(buf, size, "%%%d %s", id, edm_op_name(n->op));
    return buf;
}

static int is_bool(int v) { return v == 0 || v == 1; }

static int check_attrs(int id, const edm_node *n, edm_status *st)
{
    char d[320];
    switch (n->op) {
    case EDM_OP_PARAM:
    case EDM_OP_BUFFER: {
        edm_init_kind k;
        if (edm_init_from_name(edm_init_name(n->attr.init.kind), &k) != 0)
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: bad init kind %d", describe(id, n, d, sizeof d),
                            (int)n->attr.init.kind);
        break;
    }
    case EDM_OP_CLAMP:
        if (!(n->attr.clamp.lo <= n->attr.clamp.hi))
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: clamp bounds lo=%g > hi=%g",
                            describe(id, n, d, sizeof d), n->attr.clamp.lo, n->attr.clamp.hi);
        break;
    case EDM_OP_SUM:
    case EDM_OP_SUMSQ:
        if (!is_bool(n->attr.reduce.keepdim))
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: keepdim is %d, not 0 or 1",
                            describe(id, n, d, sizeof d), n->attr.reduce.keepdim);
        break;
    case EDM_OP_MATMUL:
        if (!is_bool(n->attr.matmul.trans_a) || !is_bool(n->attr.matmul.trans_b))
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: trans_a/trans_b must be 0 or 1",
                            describe(id, n, d, sizeof d));
        break;
    case EDM_OP_CONV2D:
    case EDM_OP_CONV2D_BWD_DATA:
    case EDM_OP_CONV2D_BWD_WEIGHT:
        if (n->attr.conv.stride < 1 || n->attr.conv.pad < 0)
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: bad stride %d or padding %d",
                            describe(id, n, d, sizeof d), n->attr.conv.stride, n->attr.conv.pad);
        if (!is_bool(n->attr.conv.taps) || (n->attr.conv.taps && n->op == EDM_OP_CONV2D_BWD_WEIGHT))
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: taps is %d (0 or 1, and 0 on conv2d_bwd_weight)",
                            describe(id, n, d, sizeof d), n->attr.conv.taps);
        break;
    default:
        break;
    }
    return 0;
}

static int check_structure(const edm_graph *g, int id, const edm_node *n, edm_status *st)
{
    char d[320];
    edm_dtype dt;
    if ((unsigned)n->op >= EDM_OP_COUNT)
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%%%d: unknown op %d", id, (int)n->op);
    if (edm_dtype_from_name(edm_dtype_name(n->dtype), &dt) != 0)
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: unknown dtype %d", describe(id, n, d, sizeof d),
                        (int)n->dtype);
    if (n->ninputs != edm_op_arity(n->op))
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: %d inputs, expected %d", describe(id, n, d, sizeof d),
                        n->ninputs, edm_op_arity(n->op));
    for (int i = 0; i < n->ninputs; i++) {
        int in = n->input[i];
        if (in < 0 || in >= edm_graph_count(g))
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: input %d refers to missing value %%%d",
                            describe(id, n, d, sizeof d), i, in);
        if (in >= id)
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc,
                            "%s: input %d is %%%d, which does not come before it (not in topological order)",
                            describe(id, n, d, sizeof d), i, in);
    }
    if ((n->op == EDM_OP_INPUT || n->op == EDM_OP_PARAM || n->op == EDM_OP_BUFFER) && (!n->name || !n->name[0]))
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: has no name", describe(id, n, d, sizeof d));
    if (n->shape.rank < 0 || n->shape.rank > EDM_MAX_RANK)
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: rank %d out of range", describe(id, n, d, sizeof d),
                        n->shape.rank);
    return check_attrs(id, n, st);
}

static int check_shape(const edm_graph *g, int id, const edm_node *n, edm_status *st)
{
    char d[320], a[128], b[128];
    edm_node copy = *n;
    if (edm_infer_node(g, &copy, st) != 0) {
        edm_status_prefix(st, "%s", describe(id, n, d, sizeof d));
        return -1;
    }
    if (!edm_shape_equal(&copy.shape, &n->shape))
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: stored shape %s, but inference gives %s",
                        describe(id, n, d, sizeof d), edm_shape_str(&n->shape, a, sizeof a),
                        edm_shape_str(&copy.shape, b, sizeof b));
    if (copy.dtype != n->dtype)
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: stored dtype %s, but inference gives %s",
                        describe(id, n, d, sizeof d), edm_dtype_name(n->dtype), edm_dtype_name(copy.dtype));
    return 0;
}

/* ------------------------------------------------------------------ names */

/* Parameters and buffers share one namespace (the state dict); inputs and
 * outputs each have their own. */
enum { NS_STATE, NS_INPUT, NS_OUTPUT };

typedef struct {
    const char *name;
    int ns;
    int id;
} name_entry;

static int compare_entries(const void *pa, const void *pb)
{
    const name_entry *a = pa, *b = pb;
    if (a->ns != b->ns)
        return a->ns < b->ns ? -1 : 1;
    int c = strcmp(a->name, b->name);
    if (c)
        return c;
    return (a->id > b->id) - (a->id < b->id);
}

static int namespace_of(edm_op op)
{
    switch (op) {
    case EDM_OP_PARAM:
    case EDM_OP_BUFFER:
        return NS_STATE;
    case EDM_OP_INPUT:
        return NS_INPUT;
    case EDM_OP_OUTPUT:
        return NS_OUTPUT;
    default:
        return -1;
    }
}

static int check_names(const edm_graph *g, edm_status *st)
{
    int count = edm_graph_count(g), n = 0, rc = 0;
    name_entry *e = malloc(((size_t)count + 1) * sizeof *e);
    if (!e)
        return edm_nomem(st);
    for (int id = 0; id < count; id++) {
        const edm_node *node = edm_graph_node(g, id);
        int ns = namespace_of(node->op);
        if (ns >= 0 && node->name)
            e[n++] = (name_entry){node->name, ns, id};
    }
    qsort(e, (size_t)n, sizeof *e, compare_entries);
    for (int i = 1; i < n && rc == 0; i++) {
        if (e[i].ns != e[i - 1].ns || strcmp(e[i].name, e[i - 1].name) != 0)
            continue;
        const edm_node *dup = edm_graph_node(g, e[i].id), *first = edm_graph_node(g, e[i - 1].id);
        char d[320];
        rc = edm_fail(st, EDM_ERR_INTERNAL, dup->loc, "%s: duplicate name, also used by %%%d %s",
                      describe(e[i].id, dup, d, sizeof d), e[i - 1].id, edm_op_name(first->op));
        if (first->loc.file >= 0)
            edm_note_add(st, first->loc, "%%%d %s \"%s\" is made here", e[i - 1].id, edm_op_name(first->op),
                         first->name);
    }
    free(e);
    return rc;
}

int edm_pass_verify(const edm_graph *g, edm_status *st)
{
    int outputs = 0;
    for (int id = 0; id < edm_graph_count(g); id++) {
        const edm_node *n = edm_graph_node(g, id);
        if (check_structure(g, id, n, st) != 0 || check_shape(g, id, n, st) != 0)
            return -1;
        outputs += n->op == EDM_OP_OUTPUT;
    }
    if (check_names(g, st) != 0)
        return -1;
    if (outputs == 0)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "the graph has no output");
    return 0;
}
