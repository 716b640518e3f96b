#include "config.h"

#include "compiler/ir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ tables */

typedef struct {
    const char *name;
    int arity;
    edm_op_class cls;
    int macs;
} op_info;

static const op_info op_table[] = {
#define EDM_OP_ROW(e, name, arity, cls, macs) {name, arity, cls, macs},
    EDM_OPS(EDM_OP_ROW)
#undef EDM_OP_ROW
};
_Static_assert(sizeof op_table / sizeof op_table[0] == EDM_OP_COUNT, "op table out of sync");

const char *edm_op_name(edm_op op) { return (unsigned)op < EDM_OP_COUNT ? op_table[op].name : "?"; }
int edm_op_arity(edm_op op) { return (unsigned)op < EDM_OP_COUNT ? op_table[op].arity : 0; }
edm_op_class edm_op_class_of(edm_op op) { return (unsigned)op < EDM_OP_COUNT ? op_table[op].cls : EDM_CLASS_OTHER; }
int edm_op_macs_per_element(edm_op op) { return (unsigned)op < EDM_OP_COUNT ? op_table[op].macs : 0; }

int edm_node_is_alias(const edm_node *n, int training)
{
    return n->op == EDM_OP_RESHAPE || n->op == EDM_OP_OUTPUT || (n->op == EDM_OP_DROPOUT && !training);
}

int edm_op_from_name(const char *name, edm_op *out)
{
    for (int i = 0; i < EDM_OP_COUNT; i++)
        if (strcmp(op_table[i].name, name) == 0) {
            *out = (edm_op)i;
            return 0;
        }
    return -1;
}

static const char *const dtype_names[] = {"f32", "f16", "bf16", "f64"};

const char *edm_dtype_name(edm_dtype t) { return (unsigned)t < 4 ? dtype_names[t] : "?"; }

int edm_dtype_from_name(const char *name, edm_dtype *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(dtype_names[i], name) == 0) {
            *out = (edm_dtype)i;
            return 0;
        }
    return -1;
}

static const char *const init_names[] = {"zeros", "ones", "const", "normal", "uniform"};

const char *edm_init_name(edm_init_kind k) { return (unsigned)k < 5 ? init_names[k] : "?"; }

int edm_init_from_name(const char *name, edm_init_kind *out)
{
    for (int i = 0; i < 5; i++)
        if (strcmp(init_names[i], name) == 0) {
            *out = (edm_init_kind)i;
            return 0;
        }
    return -1;
}

/* ------------------------------------------------------------------ graph */

typedef struct string_block {
    struct string_block *next;
    size_t used, size;
    char data[];
} string_block;

struct edm_graph {
    edm_node *nodes;
    int count, cap;
    const char **files;
    int nfiles, files_cap;
    struct { const char *name; int node; } *taps;
    int ntaps, taps_cap;
    string_block *strings;
    /* open-addressing intern table of pointers into string blocks */
    const char **intern;
    size_t intern_cap, intern_count;
};

edm_graph *edm_graph_new(void)
{
    edm_graph *g = calloc(1, sizeof *g);
    return g;
}

void edm_graph_free(edm_graph *g)
{
    if (!g)
        return;
    free(g->nodes);
    free(g->files);
    free(g->taps);
    free(g->intern);
    for (string_block *b = g->strings, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(g);
}

int edm_graph_count(const edm_graph *g) { return g->count; }

const edm_node *edm_graph_node(const edm_graph *g, int id)
{
    return id >= 0 && id < g->count ? &g->nodes[id] : NULL;
}

edm_node *edm_graph_node_mut(edm_graph *g, int id)
{
    return id >= 0 && id < g->count ? &g->nodes[id] : NULL;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const char *store_string(edm_graph *g, const char *s)
{
    size_t len = strlen(s) + 1;
    string_block *b = g->strings;
    if (!b || b->size - b->used < len) {
        size_t size = len > 16384 ? len : 16384;
        string_block *nb = malloc(sizeof *nb + size);
        if (!nb)
            return NULL;
        nb->next = g->strings;
        nb->used = 0;
        nb->size = size;
        g->strings = nb;
        b = nb;
    }
    char *p = b->data + b->used;
    memcpy(p, s, len);
    b->used += len;
    return p;
}

static int intern_grow(edm_graph *g)
{
    size_t cap = g->intern_cap ? g->intern_cap * 2 : 256;
    const char **t = calloc(cap, sizeof *t);
    if (!t)
        return -1;
    for (size_t i = 0; i < g->intern_cap; i++) {
        const char *s = g->intern[i];
        if (!s)
            continue;
        size_t j = hash_str(s) & (cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = s;
    }
    free(g->intern);
    g->intern = t;
    g->intern_cap = cap;
    return 0;
}

const char *edm_graph_intern(edm_graph *g, const char *s)
{
    if (!s)
        return NULL;
    if ((g->intern_count + 1) * 2 > g->intern_cap && intern_grow(g) != 0)
        return NULL;
    size_t j = hash_str(s) & (g->intern_cap - 1);
    while (g->intern[j]) {
        if (strcmp(g->intern[j], s) == 0)
            return g->intern[j];
        j = (j + 1) & (g->intern_cap - 1);
    }
    const char *p = store_string(g, s);
    if (!p)
        return NULL;
    g->intern[j] = p;
    g->intern_count++;
    return p;
}

int edm_graph_add(edm_graph *g, const edm_node *n, edm_status *st)
{
    if (g->count == g->cap) {
        int cap = g->cap ? g->cap * 2 : 256;
        edm_node *nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return edm_nomem(st);
        g->nodes = nodes;
        g->cap = cap;
    }
    edm_node copy = *n;
    copy.name = n->name ? edm_graph_intern(g, n->name) : NULL;
    copy.scope = edm_graph_intern(g, n->scope ? n->scope : "");
    copy.origin = edm_graph_intern(g, n->origin ? n->origin : edm_op_name(n->op));
    if ((n->name && !copy.name) || !copy.scope || !copy.origin)
        return edm_nomem(st);
    g->nodes[g->count] = copy;
    return g->count++;
}

int edm_graph_add_file(edm_graph *g, const char *path, edm_status *st)
{
    for (int i = 0; i < g->nfiles; i++)
        if (strcmp(g->files[i], path) == 0)
            return i;
    if (g->nfiles == g->files_cap) {
        int cap = g->files_cap ? g->files_cap * 2 : 8;
        const char **f = realloc(g->files, (size_t)cap * sizeof *f);
        if (!f)
            return edm_nomem(st);
        g->files = f;
        g->files_cap = cap;
    }
    const char *p = edm_graph_intern(g, path);
    if (!p)
        return edm_nomem(st);
    g->files[g->nfiles] = p;
    return g->nfiles++;
}

const char *edm_graph_file(const edm_graph *g, int index)
{
    return index >= 0 && index < g->nfiles ? g->files[index] : NULL;
}

int edm_graph_file_count(const edm_graph *g) { return g->nfiles; }

int edm_graph_add_tap(edm_graph *g, const char *name, int node, edm_status *st)
{
    if (node < 0 || node >= g->count)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "tap '%s' refers to missing value %%%d", name, node);
    for (int i = 0; i < g->ntaps; i++)
        if (strcmp(g->taps[i].name, name) == 0) {
            g->taps[i].node = node; /* a name tapped again (a label reused) names the newest value */
            return 0;
        }
    return edm_graph_put_tap(g, -1, name, node, st) < 0 ? -1 : 0;
}

int edm_graph_put_tap(edm_graph *g, int index, const char *name, int node, edm_status *st)
{
    if (node < 0 || node >= g->count || index >= g->ntaps)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "tap '%s' refers to missing value %%%d", name, node);
    if (index >= 0) {
        g->taps[index].node = node;
        return index;
    }
    if (g->ntaps == g->taps_cap) {
        int cap = g->taps_cap ? g->taps_cap * 2 : 64;
        void *t = realloc(g->taps, sizeof *g->taps * (size_t)cap);
        if (!t)
            return edm_nomem(st);
        g->taps = t;
        g->taps_cap = cap;
    }
    const char *p = edm_graph_intern(g, name);
    if (!p)
        return edm_nomem(st);
    g->taps[g->ntaps].name = p;
    g->taps[g->ntaps].node = node;
    return g->ntaps++;
}

int edm_graph_tap_count(const edm_graph *g) { return g->ntaps; }
const char *edm_graph_tap_name(const edm_graph *g, int i) { return i >= 0 && i < g->ntaps ? g->taps[i].name : NULL; }
int edm_graph_tap_node(const edm_graph *g, int i) { return i >= 0 && i < g->ntaps ? g->taps[i].node : -1; }

int edm_graph_find_tap(const edm_graph *g, const char *name)
{
    for (int i = 0; i < g->ntaps; i++)
        if (strcmp(g->taps[i].name, name) == 0)
            return g->taps[i].node;
    return -1;
}

int edm_graph_find(const edm_graph *g, edm_op op, const char *name)
{
    for (int i = 0; i < g->count; i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op == op && n->name && strcmp(n->name, name) == 0)
            return i;
    }
    return -1;
}

int edm_graph_find_leaf(const edm_graph *g, const char *name)
{
    int id = edm_graph_find(g, EDM_OP_INPUT, name);
    if (id < 0)
        id = edm_graph_find(g, EDM_OP_PARAM, name);
    return id >= 0 ? id : edm_graph_find(g, EDM_OP_BUFFER, name);
}

/* ------------------------------------------------------------------ rewriting */

int edm_uses_build(const edm_graph *g, edm_uses *u, edm_status *st)
{
    int n = g->count;
    u->n = n;
    u->off = calloc((size_t)n + 1, sizeof *u->off);
    int total = 0;
    for (int i = 0; i < n; i++)
        total += g->nodes[i].ninputs;
    u->users = malloc(sizeof *u->users * (size_t)(total ? total : 1));
    if (!u->off || !u->users) {
        edm_uses_free(u);
        return edm_nomem(st);
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            u->off[g->nodes[i].input[k] + 1]++;
    for (int i = 0; i < n; i++)
        u->off[i + 1] += u->off[i];
    int *fill = calloc((size_t)n + 1, sizeof *fill);
    if (!fill) {
        edm_uses_free(u);
        return edm_nomem(st);
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++) {
            int v = g->nodes[i].input[k];
            u->users[u->off[v] + fill[v]++] = i;
        }
    free(fill);
    return 0;
}

void edm_uses_free(edm_uses *u)
{
    free(u->off);
    free(u->users);
    u->off = NULL;
    u->users = NULL;
    u->n = 0;
}

int edm_graph_replace_uses(edm_graph *g, int from, int to, edm_status *st)
{
    if (from < 0 || from >= g->count || to < 0 || to >= g->count)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "replace_uses: no value %%%d or %%%d", from, to);
    for (int i = 0; i <= to; i++) /* checked first: a failed call changes nothing */
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            if (g->nodes[i].input[k] == from)
                return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC,
                                "replace_uses: %%%d would read %%%d, which comes after it", i, to);
    int replaced = 0;
    for (int i = to + 1; i < g->count; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            if (g->nodes[i].input[k] == from) {
                g->nodes[i].input[k] = to;
                replaced++;
            }
    return replaced;
}

struct edm_rewriter {
    const edm_graph *old;
    edm_graph *g;
    int *map;
};

const edm_graph *edm_rewriter_old(const edm_rewriter *rw) { return rw->old; }
const edm_graph *edm_rewriter_new(const edm_rewriter *rw) { return rw->g; }
int edm_rewriter_map(const edm_rewriter *rw, int old) { return old >= 0 && old < rw->old->count ? rw->map[old] : -1; }

int edm_rewriter_emit(edm_rewriter *rw, const edm_node *n, edm_status *st)
{
    edm_node copy = *n;
    for (int k = 0; k < copy.ninputs; k++)
        if (copy.input[k] < 0 || copy.input[k] >= rw->g->count)
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "rewrite: %s reads a value that was dropped or is not there",
                            edm_op_name(n->op));
    if (edm_op_class_of(n->op) != EDM_CLASS_LEAF && edm_infer_node(rw->g, &copy, st) != 0)
        return -1;
    return edm_graph_add(rw->g, &copy, st);
}

edm_graph *edm_graph_rewrite(const edm_graph *g, edm_rewrite_fn fn, void *ctx, int *map, edm_status *st)
{
    edm_rewriter rw = {.old = g, .g = edm_graph_new(), .map = map};
    if (!rw.g) {
        edm_nomem(st);
        return NULL;
    }
    for (int i = 0; i < g->nfiles; i++)
        if (edm_graph_add_file(rw.g, g->files[i], st) < 0)
            goto fail;
    for (int i = 0; i < g->count; i++) {
        edm_node n = g->nodes[i];
        map[i] = -1;
        for (int k = 0; k < n.ninputs; k++)
            n.input[k] = map[n.input[k]]; /* -1: dropped; emitting such a node fails */
        /* a dropout's mask is keyed by its node id: keep the old one, so a
         * rewritten graph draws the masks the original draws */
        if (n.op == EDM_OP_DROPOUT && n.attr.dropout.mask_id <= 0)
            n.attr.dropout.mask_id = i;
        int id = fn(&rw, i, &n, ctx, st);
        if (id == EDM_REWRITE_DROP)
            continue;
        if (id < 0)
            goto fail;
        map[i] = id;
    }
    for (int i = 0; i < g->ntaps; i++)
        if (map[g->taps[i].node] >= 0 && edm_graph_add_tap(rw.g, g->taps[i].name, map[g->taps[i].node], st) != 0)
            goto fail;
    return rw.g;
fail:
    edm_graph_free(rw.g);
    return NULL;
}

/* ------------------------------------------------------------------ shapes */

int64_t edm_shape_numel_per_sample(const edm_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++)
        if (s->dim[i] != EDM_DIM_BATCH)
            n *= s->dim[i];
    return n;
}

int edm_shape_has_batch(const edm_shape *s)
{
    return s->rank > 0 && s->dim[0] == EDM_DIM_BATCH;
}

int edm_shape_equal(const edm_shape *a, const edm_shape *b)
{
    if (a->rank != b->rank)
        return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->dim[i] != b->dim[i])
            return 0;
    return 1;
}

int edm_dims_same_order(const int64_t *a, int ra, const int64_t *b, int rb)
{
    int i = 0, j = 0;
    for (;;) {
        while (i < ra && a[i] == 1)
            i++;
        while (j < rb && b[j] == 1)
            j++;
        if (i == ra || j == rb)
            return i == ra && j == rb;
        if (a[i++] != b[j++])
            return 0;
    }
}

char *edm_shape_str(const edm_shape *s, char *buf, size_t size)
{
    size_t used = 0;
    if (size == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, size - used, "[");
    for (int i = 0; i < s->rank && used < size; i++) {
        if (s->dim[i] == EDM_DIM_BATCH)
            used += (size_t)snprintf(buf + used, size - used, "%sN", i ? ", " : "");
        else
            used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)s->dim[i]);
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

/* Largest element count we accept for one tensor (per sample): keeps every
 * later size computation far from overflow. */
#define EDM_MAX_NUMEL ((int64_t)1 << 40)

static int check_size(const edm_node *n, edm_status *st)
{
    int64_t total = 1;
    for (int i = 0; i < n->shape.rank; i++) {
        int64_t d = n->shape.dim[i];
        if (d == EDM_DIM_BATCH && i == 0)
            continue;
        if (d < 0)
            return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s: negative dimension %lld", edm_op_name(n->op), (long long)d);
        if (d > 0 && total > EDM_MAX_NUMEL / d)
            return edm_fail(st, EDM_ERR_LIMIT, n->loc, "%s: tensor too large (more than 2^40 elements per sample)",
                            edm_op_name(n->op));
        total *= d;
    }
    return 0;
}

static int fail_operand_shapes(const edm_graph *g, const edm_node *n, edm_status *st, const char *what)
{
    char sa[96], sb[96];
    const edm_node *a = edm_graph_node(g, n->input[0]);
    const edm_node *b = n->ninputs > 1 ? edm_graph_node(g, n->input[1]) : NULL;
    if (b)
        edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s: %s %s and %s", edm_op_name(n->op), what,
                 edm_shape_str(&a->shape, sa, sizeof sa), edm_shape_str(&b->shape, sb, sizeof sb));
    else
        edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s: %s %s", edm_op_name(n->op), what,
                 edm_shape_str(&a->shape, sa, sizeof sa));
    if (a->loc.file >= 0)
        edm_note_add(st, a->loc, "the first operand, %s, is made here", edm_shape_str(&a->shape, sa, sizeof sa));
    if (b && b->loc.file >= 0)
        edm_note_add(st, b->loc, "the second operand, %s, is made here", edm_shape_str(&b->shape, sb, sizeof sb));
    return -1;
}

static int broadcast(const edm_graph *g, edm_node *n, const edm_shape *a, const edm_shape *b, edm_status *st)
{
    int rank = a->rank > b->rank ? a->rank : b->rank;
    edm_shape out = {.rank = rank};
    for (int i = 0; i < rank; i++) {
        int ia = a->rank - rank + i, ib = b->rank - rank + i;
        int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
        /* the batch dim may only meet the batch dim or 1, and must stay at dim 0 */
        if (da == db || db == 1)
            out.dim[i] = da;
        else if (da == 1)
            out.dim[i] = db;
        else
            return fail_operand_shapes(g, n, st, "cannot broadcast shapes");
        if (out.dim[i] == EDM_DIM_BATCH && i != 0)
            return fail_operand_shapes(g, n, st, "the batch dimension would move in broadcasting");
    }
    n->shape = out;
    return 0;
}

static int norm_axis(int axis, int rank, const edm_node *n, edm_status *st)
{
    int a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= rank)
        return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s: axis %d out of range for rank %d", edm_op_name(n->op), axis,
                        rank);
    return a;
}

static int infer_conv(const edm_graph *g, edm_node *n, const edm_shape *x, const edm_shape *w, edm_status *st)
{
    if (x->rank != 4 || w->rank != 4)
        return fail_operand_shapes(g, n, st, n->attr.conv.taps ? "needs input [N, C, H, W] and weight [O, k, k, C], got"
                                                               : "needs input [N, C, H, W] and weight [O, C, k, k], got");
    int taps = n->attr.conv.taps != 0, wc = taps ? 3 : 1, wk = taps ? 1 : 2; /* the weight's channel and kernel dims */
    if (x->dim[1] != w->dim[wc])
        return fail_operand_shapes(g, n, st, "input channels do not match the weight's:");
    if (w->dim[wk] != w->dim[wk + 1] || w->dim[wk] < 1)
        return fail_operand_shapes(g, n, st, "needs a square kernel, got");
    int64_t s = n->attr.conv.stride, p = n->attr.conv.pad;
    if (s < 1 || p < 0)
        return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "conv2d: bad stride %lld or padding %lld", (long long)s,
                        (long long)p);
    int64_t k = w->dim[wk];
    int64_t h = (x->dim[2] + 2 * p - k) / s + 1, wd = (x->dim[3] + 2 * p - k) / s + 1;
    if (x->dim[2] + 2 * p < k || x->dim[3] + 2 * p < k)
        return fail_operand_shapes(g, n, st, "kernel larger than the padded input:");
    n->shape = (edm_shape){.rank = 4, .dim = {x->dim[0], w->dim[0], h, wd}};
    return 0;
}

/* dy [N,O,OH,OW] and w [O,C,k,k] give dx [N,C,in_h,in_w]; x [N,C,H,W] and dy
 * give dw [O,C,kernel,kernel].  The forward conv must map the input size to
 * the gradient's. */
static int infer_conv_bwd(const edm_graph *g, edm_node *n, const edm_shape *a, const edm_shape *b, edm_status *st)
{
    if (a->rank != 4 || b->rank != 4)
        return fail_operand_shapes(g, n, st, "needs two rank-4 operands, got");
    int64_t s = n->attr.conv.stride, p = n->attr.conv.pad;
    if (s < 1 || p < 0)
        return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s: bad stride or padding", edm_op_name(n->op));
    int64_t k, h, w, oh, ow;
    if (n->op == EDM_OP_CONV2D_BWD_DATA) {
        int taps = n->attr.conv.taps != 0; /* w [C,k,k,O], else [O,C,k,k] */
        int wo = taps ? 3 : 0, wc = taps ? 0 : 1, wk = taps ? 1 : 2;
        k = b->dim[wk];
        h = n->attr.conv.in_h;
        w = n->attr.conv.in_w;
        oh = a->dim[2];
        ow = a->dim[3];
        if (a->dim[1] != b->dim[wo] || b->dim[wk] != b->dim[wk + 1])
            return fail_operand_shapes(g, n, st, "gradient channels do not match the weight:");
        n->shape = (edm_shape){.rank = 4, .dim = {a->dim[0], b->dim[wc], h, w}};
    } else {
        k = n->attr.conv.kernel;
        h = a->dim[2];
        w = a->dim[3];
        oh = b->dim[2];
        ow = b->dim[3];
        if (a->dim[0] != b->dim[0])
            return fail_operand_shapes(g, n, st, "batch sizes differ:");
        n->shape = (edm_shape){.rank = 4, .dim = {b->dim[1], a->dim[1], k, k}};
    }
    if (k < 1 || h < 1 || w < 1 || (h + 2 * p - k) / s + 1 != oh || (w + 2 * p - k) / s + 1 != ow || h + 2 * p < k)
        return fail_operand_shapes(g, n, st, "sizes do not fit a convolution:");
    return 0;
}

/* The target shape (n->shape) must be reachable by broadcasting: each input
 * dimension equals the target's or is 1. */
static int infer_expand(const edm_graph *g, edm_node *n, const edm_shape *a, edm_status *st)
{
    if (a->rank > n->shape.rank)
        return fail_operand_shapes(g, n, st, "cannot expand to a lower rank:");
    for (int i = 0; i < a->rank; i++) {
        int64_t d = a->dim[i], t = n->shape.dim[n->shape.rank - a->rank + i];
        if (d != t && d != 1)
            return fail_operand_shapes(g, n, st, "cannot expand");
    }
    for (int i = 1; i < n->shape.rank; i++)
        if (n->shape.dim[i] == EDM_DIM_BATCH)
            return fail_operand_shapes(g, n, st, "the batch dimension N would not stay first:");
    return 0;
}

static int infer_matmul(const edm_graph *g, edm_node *n, const edm_shape *a, const edm_shape *b, edm_status *st)
{
    if (a->rank < 2 || b->rank < 2)
        return fail_operand_shapes(g, n, st, "needs operands of rank 2 or more, got");
    int64_t m = n->attr.matmul.trans_a ? a->dim[a->rank - 1] : a->dim[a->rank - 2];
    int64_t ka = n->attr.matmul.trans_a ? a->dim[a->rank - 2] : a->dim[a->rank - 1];
    int64_t kb = n->attr.matmul.trans_b ? b->dim[b->rank - 1] : b->dim[b->rank - 2];
    int64_t nn = n->attr.matmul.trans_b ? b->dim[b->rank - 2] : b->dim[b->rank - 1];
    /* contracting over N (ka = kb = N) is how a weight's gradient sums the batch */
    if (ka != kb || (m == EDM_DIM_BATCH && a->rank != 2) || (ka == EDM_DIM_BATCH && (a->rank != 2 || b->rank != 2)))
        return fail_operand_shapes(g, n, st, "inner dimensions do not match:");
    edm_shape ba = {.rank = a->rank - 2}, bb = {.rank = b->rank - 2};
    memcpy(ba.dim, a->dim, sizeof(int64_t) * (size_t)ba.rank);
    memcpy(bb.dim, b->dim, sizeof(int64_t) * (size_t)bb.rank);
    if (broadcast(g, n, &ba, &bb, st) != 0)
        return -1;
    edm_shape out = n->shape;
    if (out.rank + 2 > EDM_MAX_RANK)
        return fail_operand_shapes(g, n, st, "result rank too large:");
    out.dim[out.rank++] = m;
    out.dim[out.rank++] = nn;
    for (int i = 1; i < out.rank; i++)
        if (out.dim[i] == EDM_DIM_BATCH)
            return fail_operand_shapes(g, n, st, "the batch dimension N would not stay first:");
    n->shape = out;
    return 0;
}

int edm_infer_node(const edm_graph *g, edm_node *n, edm_status *st)
{
    if (n->ninputs != edm_op_arity(n->op))
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: %d inputs, expected %d", edm_op_name(n->op), n->ninputs,
                        edm_op_arity(n->op));
    for (int i = 0; i < n->ninputs; i++)
        if (!edm_graph_node(g, n->input[i]))
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "%s: input %d refers to missing value %%%d",
                            edm_op_name(n->op), i, n->input[i]);
    const edm_node *a = n->ninputs > 0 ? edm_graph_node(g, n->input[0]) : NULL;
    const edm_node *b = n->ninputs > 1 ? edm_graph_node(g, n->input[1]) : NULL;
    if (a)
        n->dtype = a->dtype;
    if (n->shape.rank < 0 || n->shape.rank > EDM_MAX_RANK)
        return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "rank %d out of range", n->shape.rank);

    switch (edm_op_class_of(n->op)) {
    case EDM_CLASS_LEAF:
        for (int i = 1; i < n->shape.rank; i++)
            if (n->shape.dim[i] == EDM_DIM_BATCH)
                return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "the batch dimension N may only be the first");
        if (n->op != EDM_OP_INPUT && n->op != EDM_OP_CONST && edm_shape_has_batch(&n->shape))
            return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s '%s' cannot have the batch dimension N",
                            edm_op_name(n->op), n->name ? n->name : "");
        break;
    case EDM_CLASS_UNARY:
        n->shape = a->shape;
        break;
    case EDM_CLASS_BINARY:
        if (broadcast(g, n, &a->shape, &b->shape, st) != 0)
            return -1;
        if (a->dtype != b->dtype)
            return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s: dtypes %s and %s differ", edm_op_name(n->op),
                            edm_dtype_name(a->dtype), edm_dtype_name(b->dtype));
        break;
    case EDM_CLASS_REDUCE: {
        uint32_t axes = n->attr.reduce.axes;
        if (a->shape.rank < 32 && (axes >> a->shape.rank) != 0)
            return fail_operand_shapes(g, n, st, "reduction axis out of range for");
        edm_shape out = {.rank = 0};
        for (int i = 0; i < a->shape.rank; i++) {
            if (axes & (1u << i)) {
                if (n->attr.reduce.keepdim)
                    out.dim[out.rank++] = 1;
            } else {
                out.dim[out.rank++] = a->shape.dim[i];
            }
        }
        n->shape = out;
        break;
    }
    case EDM_CLASS_CONTRACT:
        if (n->op == EDM_OP_CONV2D) {
            if (infer_conv(g, n, &a->shape, &b->shape, st) != 0)
                return -1;
        } else if (n->op == EDM_OP_CONV2D_BWD_DATA || n->op == EDM_OP_CONV2D_BWD_WEIGHT) {
            if (infer_conv_bwd(g, n, &a->shape, &b->shape, st) != 0)
                return -1;
        } else if (infer_matmul(g, n, &a->shape, &b->shape, st) != 0) {
            return -1;
        }
        if (a->dtype != b->dtype)
            return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "%s: dtypes %s and %s differ", edm_op_name(n->op),
                            edm_dtype_name(a->dtype), edm_dtype_name(b->dtype));
        break;
    case EDM_CLASS_LAYOUT:
        switch (n->op) {
        case EDM_OP_RESHAPE: {
            /* n->shape holds the target (set by the builder); element counts must agree
             * and the batch dimension must stay first. */
            if (edm_shape_has_batch(&n->shape) != edm_shape_has_batch(&a->shape))
                return fail_operand_shapes(g, n, st, "must keep the batch dimension N first; input is");
            for (int i = 0; i < n->shape.rank; i++)
                if (n->shape.dim[i] < 0 && !(i == 0 && n->shape.dim[i] == EDM_DIM_BATCH))
                    return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "reshape: bad target dimension %lld",
                                    (long long)n->shape.dim[i]);
            if (check_size(n, st) != 0)
                return -1;
            if (edm_shape_numel_per_sample(&n->shape) != edm_shape_numel_per_sample(&a->shape)) {
                char s1[96], s2[96];
                return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "reshape: cannot reshape %s into %s",
                                edm_shape_str(&a->shape, s1, sizeof s1), edm_shape_str(&n->shape, s2, sizeof s2));
            }
            break;
        }
        case EDM_OP_PERMUTE: {
            int seen = 0;
            edm_shape out = {.rank = a->shape.rank};
            for (int i = 0; i < a->shape.rank; i++) {
                int p = n->attr.permute.perm[i];
                if (p < 0 || p >= a->shape.rank || (seen & (1 << p)))
                    return fail_operand_shapes(g, n, st, "not a permutation of the axes of");
                seen |= 1 << p;
                out.dim[i] = a->shape.dim[p];
            }
            if (edm_shape_has_batch(&a->shape) && n->attr.permute.perm[0] != 0)
                return fail_operand_shapes(g, n, st, "must keep the batch dimension N first; input is");
            n->shape = out;
            break;
        }
        case EDM_OP_CONCAT: {
            if (a->shape.rank != b->shape.rank)
                return fail_operand_shapes(g, n, st, "ranks differ:");
            int ax = norm_axis(n->attr.concat.axis, a->shape.rank, n, st);
            if (ax < 0)
                return -1;
            n->attr.concat.axis = ax;
            edm_shape out = a->shape;
            for (int i = 0; i < a->shape.rank; i++)
                if (i != ax && a->shape.dim[i] != b->shape.dim[i])
                    return fail_operand_shapes(g, n, st, "shapes differ outside the concatenation axis:");
            if (a->shape.dim[ax] == EDM_DIM_BATCH)
                return fail_operand_shapes(g, n, st, "cannot concatenate along the batch dimension:");
            out.dim[ax] = a->shape.dim[ax] + b->shape.dim[ax];
            n->shape = out;
            if (a->dtype != b->dtype)
                return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "concat: dtypes differ");
            break;
        }
        case EDM_OP_EXPAND:
            if (infer_expand(g, n, &a->shape, st) != 0)
                return -1;
            break;
        case EDM_OP_SLICE: {
            int ax = norm_axis(n->attr.slice.axis, a->shape.rank, n, st);
            if (ax < 0)
                return -1;
            n->attr.slice.axis = ax;
            int64_t d = a->shape.dim[ax], s = n->attr.slice.start, l = n->attr.slice.len;
            if (d == EDM_DIM_BATCH || s < 0 || l < 1 || s > d || l > d - s) {
                char sa[96];
                return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "slice: [%lld, %lld) out of range on axis %d of %s",
                                (long long)s, (long long)s + (long long)l, ax, edm_shape_str(&a->shape, sa, sizeof sa));
            }
            n->shape = a->shape;
            n->shape.dim[ax] = l;
            break;
        }
        default:
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "unknown layout op");
        }
        break;
    case EDM_CLASS_OTHER:
        switch (n->op) {
        case EDM_OP_SOFTMAX: {
            int ax = norm_axis(n->attr.softmax.axis, a->shape.rank, n, st);
            if (ax < 0)
                return -1;
            if (a->shape.dim[ax] == EDM_DIM_BATCH)
                return fail_operand_shapes(g, n, st, "cannot take softmax over the batch dimension of");
            n->attr.softmax.axis = ax;
            n->shape = a->shape;
            break;
        }
        case EDM_OP_ATTENTION: { /* softmax over keys of qᵀk, times v: q [.., D, Tq], k [.., D, Tk], v [.., Dv, Tk] */
            const edm_node *k = edm_graph_node(g, n->input[1]), *v = edm_graph_node(g, n->input[2]);
            int r = a->shape.rank, ok = r >= 2 && k->shape.rank == r && v->shape.rank == r;
            for (int d = 0; ok && d < r - 2; d++)
                ok = a->shape.dim[d] == k->shape.dim[d] && a->shape.dim[d] == v->shape.dim[d];
            ok = ok && a->shape.dim[r - 2] == k->shape.dim[r - 2] && k->shape.dim[r - 1] == v->shape.dim[r - 1] &&
                 a->shape.dim[r - 1] != EDM_DIM_BATCH && k->shape.dim[r - 1] != EDM_DIM_BATCH &&
                 a->shape.dim[r - 2] != EDM_DIM_BATCH && v->shape.dim[r - 2] != EDM_DIM_BATCH;
            if (!ok)
                return fail_operand_shapes(g, n, st, "needs q [.., D, Tq], k [.., D, Tk] (and v [.., Dv, Tk]), got");
            n->shape = a->shape;
            n->shape.dim[r - 2] = v->shape.dim[r - 2];
            break;
        }
        case EDM_OP_AVGPOOL2:
        case EDM_OP_UPSAMPLE2: {
            if (a->shape.rank != 4)
                return fail_operand_shapes(g, n, st, "needs [N, C, H, W], got");
            n->shape = a->shape;
            if (n->op == EDM_OP_AVGPOOL2) {
                if (a->shape.dim[2] % 2 || a->shape.dim[3] % 2)
                    return fail_operand_shapes(g, n, st, "needs even height and width, got");
                n->shape.dim[2] /= 2;
                n->shape.dim[3] /= 2;
            } else {
                n->shape.dim[2] *= 2;
                n->shape.dim[3] *= 2;
            }
            break;
        }
        case EDM_OP_DROPOUT:
            if (!(n->attr.dropout.p >= 0 && n->attr.dropout.p < 1))
                return edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "dropout: probability %g not in [0, 1)",
                                n->attr.dropout.p);
            n->shape = a->shape;
            break;
        case EDM_OP_OUTPUT:
            n->shape = a->shape;
            break;
        default:
            return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "unknown op");
        }
        break;
    }
    return check_size(n, st);
}
