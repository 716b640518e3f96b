#include "config.h"
#include "compiler/passes/passes.h"

#include <stdlib.h>
#include <string.h>

/* Counting of parameters, multiply-adds and activation memory (docs/edm2.md §2).
 *
 * Every count is "per sample": the batch dimension counts as 1.  A node whose
 * value carries the batch dimension adds to the per-sample totals; one without
 * it (work on parameters alone, such as weight normalization) is once-per-step
 * work.  Activation bytes assume fp32 (4 bytes per element).  OUTPUT and
 * RESHAPE nodes alias their input: they allocate nothing, but keep the input's
 * storage alive as long as they are used. */

#define ACT_BYTES_PER_ELEMENT 4.0

static const edm_node *input_node(const edm_graph *g, const edm_node *n, int i, int id, edm_status *st)
{
    const edm_node *in = i < n->ninputs ? edm_graph_node(g, n->input[i]) : NULL;
    if (!in || n->input[i] >= id)
        edm_fail(st, EDM_ERR_INTERNAL, n->loc, "stats: %s (%%%d) input %d is missing or not earlier in the graph",
                 edm_op_name(n->op), id, i);
    return in;
}

/* Multiply-adds of one node (per sample when the value has the batch dim,
 * otherwise for the whole tensor, which then has no batch dim).  Returns -1 on
 * a malformed node. */
static int node_macs(const edm_graph *g, const edm_node *n, int id, double *macs, edm_status *st)
{
    double out_el = (double)edm_shape_numel_per_sample(&n->shape);
    *macs = 0;
    switch (edm_op_class_of(n->op)) {
    case EDM_CLASS_LEAF:
    case EDM_CLASS_LAYOUT:
        return 0;
    case EDM_CLASS_UNARY:
    case EDM_CLASS_BINARY:
        *macs = (double)edm_op_macs_per_element(n->op) * out_el;
        return 0;
    case EDM_CLASS_REDUCE: {
        const edm_node *a = input_node(g, n, 0, id, st);
        if (!a)
            return -1;
        *macs = (double)edm_op_macs_per_element(n->op) * (double)edm_shape_numel_per_sample(&a->shape);
        return 0;
    }
    case EDM_CLASS_CONTRACT: {
        const edm_node *a = input_node(g, n, 0, id, st);
        const edm_node *b = a ? input_node(g, n, 1, id, st) : NULL;
        if (!b)
            return -1;
        if (n->op == EDM_OP_CONV2D_BWD_DATA) { /* dx = w^T dy: out × (O·k·k) */
            *macs = out_el * (double)b->shape.dim[0] * (double)b->shape.dim[2] * (double)b->shape.dim[3];
            return 0;
        }
        if (n->op == EDM_OP_CONV2D_BWD_WEIGHT) { /* dw = Σ_n dy x^T: (O·C·k·k) × OH·OW per sample */
            *macs = out_el * (double)b->shape.dim[2] * (double)b->shape.dim[3];
            return 0;
        }
        if (n->op == EDM_OP_CONV2D) {
            if (b->shape.rank != 4)
                return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "stats: conv2d (%%%d) weight of rank %d", id,
                                b->shape.rank);
            *macs = out_el * (double)b->shape.dim[1] * (double)b->shape.dim[2] * (double)b->shape.dim[3];
            return 0;
        }
        int r = a->shape.rank;
        if (r < 2)
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "stats: matmul (%%%d) operand of rank %d", id, r);
        int64_t k = n->attr.matmul.trans_a ? a->shape.dim[r - 2] : a->shape.dim[r - 1];
        *macs = out_el * (double)(k == EDM_DIM_BATCH ? 1 : k); /* over N: out × 1 per sample */
        return 0;
    }
    case EDM_CLASS_OTHER:
        switch (n->op) {
        case EDM_OP_SOFTMAX:
        case EDM_OP_AVGPOOL2:
        case EDM_OP_DROPOUT:
            *macs = (double)edm_op_macs_per_element(n->op) * out_el;
            return 0;
        case EDM_OP_ATTENTION: { /* qᵀk, the softmax (3 a score), ·v */
            const edm_node *q = edm_graph_node(g, n->input[0]);
            int r = q->shape.rank;
            double tq = (double)q->shape.dim[r - 1], d = (double)q->shape.dim[r - 2],
                   dv = (double)n->shape.dim[r - 2], tk = (double)edm_graph_node(g, n->input[1])->shape.dim[r - 1];
            *macs = out_el / (dv * tq) * tq * tk * (d + 3 + dv);
            return 0;
        }
        default: /* upsample2, output */
            return 0;
        }
    }
    return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "stats: unknown op %d", (int)n->op);
}

/* The statistics describe the network's forward pass, where a dropout is the identity. */
static int is_alias(const edm_node *n) { return edm_node_is_alias(n, 0); }

/* Does this node's value own batch-dependent activation storage? */
static int owns_activation(const edm_node *n)
{
    if (!edm_shape_has_batch(&n->shape) || is_alias(n))
        return 0;
    return edm_op_class_of(n->op) != EDM_CLASS_LEAF || n->op == EDM_OP_INPUT;
}

typedef struct {
    const char *key;
    int id;
} keyed_node;

static int cmp_keyed(const void *pa, const void *pb)
{
    const keyed_node *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    return (a->id > b->id) - (a->id < b->id);
}

static int cmp_rows(const void *pa, const void *pb)
{
    const edm_stat_row *a = pa, *b = pb;
    if (a->macs_per_sample != b->macs_per_sample)
        return a->macs_per_sample > b->macs_per_sample ? -1 : 1;
    return strcmp(a->key, b->key);
}

static void row_add(edm_stat_row *r, double macs, int per_sample, double act)
{
    r->nodes++;
    if (per_sample)
        r->macs_per_sample += macs;
    else
        r->macs_per_step += macs;
    r->act_bytes_per_sample += act;
}

static const char *origin_of(const edm_node *n)
{
    return n->origin && n->origin[0] ? n->origin : edm_op_name(n->op);
}

int edm_stats_compute(const edm_graph *g, edm_stats *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    int count = edm_graph_count(g);
    size_t n = count > 0 ? (size_t)count : 0;

    double *macs = NULL, *act = NULL, *delta = NULL;
    int *root = NULL, *last = NULL;
    keyed_node *by_origin = NULL;
    edm_stat_row op_rows[EDM_OP_COUNT];
    memset(op_rows, 0, sizeof op_rows);

    if (n > 0) {
        macs = calloc(n, sizeof *macs);
        act = calloc(n, sizeof *act);
        delta = calloc(n + 1, sizeof *delta);
        root = calloc(n, sizeof *root);
        last = calloc(n, sizeof *last);
        by_origin = calloc(n, sizeof *by_origin);
        if (!macs || !act || !delta || !root || !last || !by_origin) {
            edm_nomem(st);
            goto fail;
        }
    }

    /* Pass 1: per-node counts, totals, storage roots. */
    for (int id = 0; id < count; id++) {
        const edm_node *nd = edm_graph_node(g, id);
        if ((unsigned)nd->op >= EDM_OP_COUNT) {
            edm_fail(st, EDM_ERR_INTERNAL, nd->loc, "stats: node %%%d has unknown op %d", id, (int)nd->op);
            goto fail;
        }
        if (nd->ninputs < 0 || nd->ninputs > EDM_MAX_INPUTS) {
            edm_fail(st, EDM_ERR_INTERNAL, nd->loc, "stats: node %%%d has %d inputs", id, nd->ninputs);
            goto fail;
        }
        for (int i = 0; i < nd->ninputs; i++)
            if (!input_node(g, nd, i, id, st))
                goto fail;
        int64_t numel = edm_shape_numel_per_sample(&nd->shape);
        /* work scales with the batch when the result carries N, or when a
         * reduction or contraction sums N away (a weight's gradient) */
        int batch = edm_shape_has_batch(&nd->shape);
        for (int i = 0; i < nd->ninputs && !batch; i++)
            batch = (edm_op_class_of(nd->op) == EDM_CLASS_REDUCE || edm_op_class_of(nd->op) == EDM_CLASS_CONTRACT) &&
                    edm_shape_has_batch(&edm_graph_node(g, nd->input[i])->shape);

        if (nd->op == EDM_OP_PARAM) {
            out->params += numel;
            out->param_tensors++;
        } else if (nd->op == EDM_OP_BUFFER) {
            out->buffers += numel;
            out->buffer_tensors++;
        }

        if (node_macs(g, nd, id, &macs[id], st) != 0)
            goto fail;
        if (batch)
            out->macs_per_sample += macs[id];
        else
            out->macs_per_step += macs[id];

        act[id] = owns_activation(nd) ? (double)numel * ACT_BYTES_PER_ELEMENT : 0.0;
        out->act_bytes_per_sample += act[id];

        /* An alias of a batch-dependent value shares its storage. */
        root[id] = id;
        if (is_alias(nd) && batch) {
            int r = root[nd->input[0]];
            if (act[r] > 0)
                root[id] = r;
        }
        last[id] = id;

        row_add(&op_rows[nd->op], macs[id], batch, act[id]);
        op_rows[nd->op].key = edm_op_name(nd->op);
        by_origin[id].key = origin_of(nd);
        by_origin[id].id = id;
    }
    out->nodes = count;

    /* Pass 2: lifetimes.  A use of any alias extends its root's lifetime; a
     * value reaching an OUTPUT lives to the end. */
    for (int id = 0; id < count; id++) {
        const edm_node *nd = edm_graph_node(g, id);
        for (int i = 0; i < nd->ninputs; i++) {
            int r = root[nd->input[i]];
            if (last[r] < id)
                last[r] = id;
        }
        if (root[id] != id && last[root[id]] < id)
            last[root[id]] = id;
        if (nd->op == EDM_OP_OUTPUT && root[id] != id)
            last[root[id]] = count - 1;
    }
    for (int id = 0; id < count; id++) {
        if (root[id] != id || act[id] <= 0)
            continue;
        delta[id] += act[id];
        delta[last[id] + 1] -= act[id];
    }
    double live = 0;
    for (int t = 0; t < count; t++) {
        live += delta[t];
        if (live > out->peak_act_bytes_per_sample)
            out->peak_act_bytes_per_sample = live;
    }

    /* Rows by op kind. */
    int nrows = 0;
    for (int op = 0; op < EDM_OP_COUNT; op++)
        if (op_rows[op].nodes > 0)
            nrows++;
    if (nrows > 0) {
        out->rows = calloc((size_t)nrows, sizeof *out->rows);
        if (!out->rows) {
            edm_nomem(st);
            goto fail;
        }
        for (int op = 0; op < EDM_OP_COUNT; op++)
            if (op_rows[op].nodes > 0)
                out->rows[out->nrows++] = op_rows[op];
        qsort(out->rows, (size_t)out->nrows, sizeof *out->rows, cmp_rows);
    }

    /* Rows by origin: sort node ids by origin name, then group. */
    if (n > 0) {
        qsort(by_origin, n, sizeof *by_origin, cmp_keyed);
        int norigins = 1;
        for (size_t i = 1; i < n; i++)
            if (strcmp(by_origin[i].key, by_origin[i - 1].key) != 0)
                norigins++;
        out->origins = calloc((size_t)norigins, sizeof *out->origins);
        if (!out->origins) {
            edm_nomem(st);
            goto fail;
        }
        for (size_t i = 0; i < n; i++) {
            if (i == 0 || strcmp(by_origin[i].key, by_origin[i - 1].key) != 0)
                out->origins[out->norigins++].key = by_origin[i].key;
            int id = by_origin[i].id;
            int batch = edm_shape_has_batch(&edm_graph_node(g, id)->shape);
            row_add(&out->origins[out->norigins - 1], macs[id], batch, act[id]);
        }
        qsort(out->origins, (size_t)out->norigins, sizeof *out->origins, cmp_rows);
    }

    free(macs);
    free(act);
    free(delta);
    free(root);
    free(last);
    free(by_origin);
    return 0;

fail:
    free(macs);
    free(act);
    free(delta);
    free(root);
    free(last);
    free(by_origin);
    edm_stats_free(out);
    return -1;
}

void edm_stats_free(edm_stats *s)
{
    if (!s)
        return;
    free(s->rows);
    free(s->origins);
    memset(s, 0, sizeof *s);
}
