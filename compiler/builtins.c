/* The built-in functions of the .edm language: compile-time helpers (len,
 * range, str, ...), math that works on numbers and tensors alike, the
 * primitive tensor ops (one per IR op) and the makers of learned parameters
 * and buffers.  docs/language.md lists them all. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compiler/elab_internal.h"
#include "compiler/ew_math.h"

typedef int (*builtin_fn)(elab *e, const call_args *a, const char *label, edm_loc loc, value *out);

typedef struct {
    const char *name;
    builtin_fn fn;
    const char *const *params; /* parameter names, positional order; NULL-terminated */
    int needs_label;           /* 1: the call must be labelled (it makes a named tensor) */
} builtin;

/* ------------------------------------------------------------------ argument access */

/* Resolved arguments: slot i holds parameter i (by position or keyword). */
typedef struct {
    int given[8];
    value v[8];
    edm_loc loc[8];
} slots;

static int bind_args(elab *e, const builtin *b, const call_args *a, edm_loc loc, slots *s)
{
    int np = 0;
    while (b->params[np])
        np++;
    memset(s, 0, sizeof *s);
    if (a->npos > np)
        return elab_fail(e, a->pos_loc[np], "%s takes at most %d argument%s, %d given", b->name, np, np == 1 ? "" : "s",
                         a->npos);
    for (int i = 0; i < a->npos; i++) {
        s->given[i] = 1;
        s->v[i] = a->pos[i];
        s->loc[i] = a->pos_loc[i];
    }
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < np && strcmp(b->params[i], a->kwname[k]) != 0)
            i++;
        if (i == np) {
            const char *best = NULL;
            for (int j = 0; j < np; j++)
                if (edm_edit_distance(a->kwname[k], b->params[j], 2) <= 2)
                    best = b->params[j];
            return elab_fail(e, a->kw_loc[k], "%s has no argument '%s'%s%s%s", b->name, a->kwname[k],
                             best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "");
        }
        if (s->given[i])
            return elab_fail(e, a->kw_loc[k], "argument '%s' of %s given twice", b->params[i], b->name);
        s->given[i] = 1;
        s->v[i] = a->kw[k];
        s->loc[i] = a->kw_loc[k];
    }
    for (int i = 0; i < np; i++)
        if (!s->given[i])
            s->loc[i] = loc;
    return 0;
}

static int req(elab *e, const builtin *b, const slots *s, int i, edm_loc loc)
{
    if (!s->given[i])
        return elab_fail(e, loc, "%s: missing argument '%s'", b->name, b->params[i]);
    return 0;
}

static int get_tensor(elab *e, const builtin *b, const slots *s, int i, edm_loc loc, int *id)
{
    if (req(e, b, s, i, loc) != 0)
        return -1;
    if (s->v[i].kind != VAL_TENSOR)
        return elab_fail(e, s->loc[i], "%s: argument '%s' must be a tensor, got %s", b->name, b->params[i],
                         val_kind_name(s->v[i].kind));
    *id = s->v[i].tensor;
    return 0;
}

static int get_num(elab *e, const builtin *b, const slots *s, int i, edm_loc loc, double def, double *x)
{
    if (!s->given[i]) {
        if (isnan(def))
            return req(e, b, s, i, loc);
        *x = def;
        return 0;
    }
    if (s->v[i].kind != VAL_NUM)
        return elab_fail(e, s->loc[i], "%s: argument '%s' must be a number, got %s", b->name, b->params[i],
                         val_kind_name(s->v[i].kind));
    *x = s->v[i].num;
    return 0;
}

static int get_int(elab *e, const builtin *b, const slots *s, int i, edm_loc loc, double def, long long lo,
                   long long hi, long long *x)
{
    double d = 0;
    if (get_num(e, b, s, i, loc, def, &d) != 0)
        return -1;
    if (d != floor(d) || d < (double)lo || d > (double)hi)
        return elab_fail(e, s->loc[i], "%s: argument '%s' must be an integer in [%lld, %lld], got %g", b->name,
                         b->params[i], lo, hi, d);
    *x = (long long)d;
    return 0;
}

static int get_bool(elab *e, const builtin *b, const slots *s, int i, int def, int *x)
{
    if (!s->given[i]) {
        *x = def;
        return 0;
    }
    if (s->v[i].kind != VAL_BOOL)
        return elab_fail(e, s->loc[i], "%s: argument '%s' must be true or false, got %s", b->name, b->params[i],
                         val_kind_name(s->v[i].kind));
    *x = s->v[i].num != 0;
    return 0;
}

static int get_str(elab *e, const builtin *b, const slots *s, int i, edm_loc loc, const char *def, const char **x)
{
    if (!s->given[i]) {
        if (!def)
            return req(e, b, s, i, loc);
        *x = def;
        return 0;
    }
    if (s->v[i].kind != VAL_STR)
        return elab_fail(e, s->loc[i], "%s: argument '%s' must be a string, got %s", b->name, b->params[i],
                         val_kind_name(s->v[i].kind));
    *x = s->v[i].str;
    return 0;
}

/* A list of small integers (axes, permutations, shapes without N). */
static int get_int_list(elab *e, const builtin *b, const slots *s, int i, edm_loc loc, int64_t *out, int max,
                        int *count, int allow_batch)
{
    if (req(e, b, s, i, loc) != 0)
        return -1;
    const value *v = &s->v[i];
    if (v->kind == VAL_NUM) { /* a single axis */
        if (!v->is_int)
            return elab_fail(e, s->loc[i], "%s: '%s' must be an integer or a list of integers", b->name, b->params[i]);
        out[0] = (int64_t)v->num;
        *count = 1;
        return 0;
    }
    if (v->kind != VAL_LIST)
        return elab_fail(e, s->loc[i], "%s: '%s' must be a list, got %s", b->name, b->params[i],
                         val_kind_name(v->kind));
    if (v->list->count > max)
        return elab_fail(e, s->loc[i], "%s: '%s' has %d entries, at most %d allowed", b->name, b->params[i],
                         v->list->count, max);
    for (int k = 0; k < v->list->count; k++) {
        const value *d = &v->list->items[k];
        if (d->kind == VAL_BATCH && allow_batch && k == 0)
            out[k] = EDM_DIM_BATCH;
        else if (d->kind == VAL_NUM && d->is_int && fabs(d->num) < 1e12)
            out[k] = (int64_t)d->num;
        else
            return elab_fail(e, s->loc[i], "%s: entry %d of '%s' must be an integer%s", b->name, k, b->params[i],
                             allow_batch ? " (or N first)" : "");
    }
    *count = v->list->count;
    return 0;
}

static const edm_node *node(elab *e, int id) { return edm_graph_node(e->graph, id); }

static int emit(elab *e, edm_node *n, edm_loc loc, value *out)
{
    int id = elab_add_node(e, n, loc);
    if (id < 0)
        return -1;
    *out = val_tensor(id);
    return 0;
}

static int axes_mask(elab *e, const builtin *b, const slots *s, int i, edm_loc loc, int rank, uint32_t *mask)
{
    int64_t ax[EDM_MAX_RANK];
    int n;
    if (get_int_list(e, b, s, i, loc, ax, EDM_MAX_RANK, &n, 0) != 0)
        return -1;
    *mask = 0;
    for (int k = 0; k < n; k++) {
        int64_t a = ax[k] < 0 ? ax[k] + rank : ax[k];
        if (a < 0 || a >= rank)
            return elab_fail(e, s->loc[i], "%s: axis %lld out of range for rank %d", b->name, (long long)ax[k], rank);
        if (*mask & (1u << a))
            return elab_fail(e, s->loc[i], "%s: axis %lld repeated", b->name, (long long)ax[k]);
        *mask |= 1u << a;
    }
    return 0;
}

/* ------------------------------------------------------------------ builtins */

#define P(...) ((const char *const[]){__VA_ARGS__, NULL})
#define FN(name) static int name(elab *e, const call_args *a, const char *label, edm_loc loc, value *out)
#define BIND()                                                         \
    slots s;                                                           \
    const builtin *self = find(__func__ + 3);                          \
    if (bind_args(e, self, a, loc, &s) != 0)                           \
        return -1;                                                     \
    (void)label

static const builtin *find(const char *name);

FN(bi_len)
{
    BIND();
    if (req(e, self, &s, 0, loc) != 0)
        return -1;
    if (s.v[0].kind == VAL_LIST)
        *out = val_int(s.v[0].list->count);
    else if (s.v[0].kind == VAL_STR)
        *out = val_int((double)strlen(s.v[0].str));
    else
        return elab_fail(e, s.loc[0], "len: needs a list or a string, got %s", val_kind_name(s.v[0].kind));
    return 0;
}

FN(bi_range)
{
    BIND();
    long long lo = 0, hi, step = 1;
    if (s.given[1]) {
        if (get_int(e, self, &s, 0, loc, NAN, -ELAB_MAX_LIST, ELAB_MAX_LIST, &lo) != 0 ||
            get_int(e, self, &s, 1, loc, NAN, -ELAB_MAX_LIST, ELAB_MAX_LIST, &hi) != 0 ||
            get_int(e, self, &s, 2, loc, 1, -ELAB_MAX_LIST, ELAB_MAX_LIST, &step) != 0)
            return -1;
    } else {
        /* range(stop): the one argument is the stop, and errors should say so */
        s.given[1] = 1;
        s.v[1] = s.v[0];
        s.loc[1] = s.loc[0];
        if (get_int(e, self, &s, 1, loc, NAN, -ELAB_MAX_LIST, ELAB_MAX_LIST, &hi) != 0)
            return -1;
    }
    if (step == 0)
        return elab_fail(e, loc, "range: step must not be 0");
    /* every element made counts as a step: bounds the time and memory of loops over ranges */
    long long count = step > 0 ? (hi > lo ? (hi - lo + step - 1) / step : 0) : (lo > hi ? (lo - hi - step - 1) / -step : 0);
    e->steps += (long)count;
    if (e->steps > ELAB_MAX_STEPS)
        return edm_fail(e->st, EDM_ERR_LIMIT, loc, "elaboration takes more than %ld steps (endless loop?)",
                        ELAB_MAX_STEPS);
    val_list *l = val_list_new(e->arena, 4);
    if (!l)
        return edm_nomem(e->st);
    for (long long i = lo; step > 0 ? i < hi : i > hi; i += step)
        if (val_list_push(e->arena, l, val_int((double)i)) != 0)
            return edm_nomem(e->st);
    *out = (value){.kind = VAL_LIST, .list = l};
    return 0;
}

FN(bi_reversed)
{
    BIND();
    if (req(e, self, &s, 0, loc) != 0)
        return -1;
    if (s.v[0].kind != VAL_LIST)
        return elab_fail(e, s.loc[0], "reversed: needs a list, got %s", val_kind_name(s.v[0].kind));
    const val_list *src = s.v[0].list;
    val_list *l = val_list_new(e->arena, src->count);
    if (!l)
        return edm_nomem(e->st);
    for (int i = src->count - 1; i >= 0; i--)
        l->items[l->count++] = src->items[i];
    *out = (value){.kind = VAL_LIST, .list = l};
    return 0;
}

FN(bi_str)
{
    BIND();
    if (req(e, self, &s, 0, loc) != 0)
        return -1;
    if (s.v[0].kind == VAL_TENSOR)
        return elab_fail(e, s.loc[0], "str: cannot format a tensor");
    char *buf;
    if (elab_format_exact(e, &s.v[0], 0, loc, "str", &buf) != 0)
        return -1;
    *out = val_str(buf);
    return 0;
}

/* int, floor, ceil: integers are exact doubles, so at most 2^53 in size. */
static int to_int(elab *e, const builtin *self, const slots *s, double r, value *out)
{
    if (!(fabs(r) <= 9007199254740992.0))
        return elab_fail(e, s->loc[0], "%s: %g is out of the integer range (magnitude at most 2^53)", self->name,
                         s->v[0].num);
    *out = val_int(r);
    return 0;
}

FN(bi_int)
{
    BIND();
    double x = 0;
    if (get_num(e, self, &s, 0, loc, NAN, &x) != 0)
        return -1;
    return to_int(e, self, &s, trunc(x), out);
}

FN(bi_float)
{
    BIND();
    double x = 0;
    if (get_num(e, self, &s, 0, loc, NAN, &x) != 0)
        return -1;
    *out = val_num(x);
    out->is_int = 0;
    return 0;
}

static int min_max(elab *e, const builtin *self, const call_args *a, edm_loc loc, value *out, int want_max)
{
    const value *items;
    int n;
    if (a->nkw)
        return elab_fail(e, a->kw_loc[0], "%s takes no keyword arguments", self->name);
    if (a->npos == 1 && a->pos[0].kind == VAL_LIST) {
        items = a->pos[0].list->items;
        n = a->pos[0].list->count;
    } else {
        items = a->pos;
        n = a->npos;
    }
    if (n == 0)
        return elab_fail(e, loc, "%s of nothing", self->name);
    value best = items[0];
    for (int i = 0; i < n; i++) {
        if (items[i].kind != VAL_NUM)
            return elab_fail(e, loc, "%s: needs numbers, got %s", self->name, val_kind_name(items[i].kind));
        if (want_max ? items[i].num > best.num : items[i].num < best.num)
            best = items[i];
    }
    *out = best;
    return 0;
}

FN(bi_min)
{
    (void)label;
    return min_max(e, find("min"), a, loc, out, 0);
}

FN(bi_max)
{
    (void)label;
    return min_max(e, find("max"), a, loc, out, 1);
}

FN(bi_error)
{
    BIND();
    const char *msg = NULL;
    if (get_str(e, self, &s, 0, loc, NULL, &msg) != 0)
        return -1;
    (void)out;
    return elab_fail(e, loc, "%s", msg);
}

FN(bi_shape)
{
    BIND();
    int id = 0;
    if (get_tensor(e, self, &s, 0, loc, &id) != 0)
        return -1;
    const edm_shape *sh = &node(e, id)->shape;
    val_list *l = val_list_new(e->arena, sh->rank);
    if (!l)
        return edm_nomem(e->st);
    for (int i = 0; i < sh->rank; i++)
        l->items[l->count++] = sh->dim[i] == EDM_DIM_BATCH ? val_batch() : val_int((double)sh->dim[i]);
    *out = (value){.kind = VAL_LIST, .list = l};
    return 0;
}

FN(bi_channels)
{
    BIND();
    int id = 0;
    if (get_tensor(e, self, &s, 0, loc, &id) != 0)
        return -1;
    const edm_shape *sh = &node(e, id)->shape;
    if (sh->rank < 2)
        return elab_fail(e, s.loc[0], "channels: needs a tensor of rank 2 or more");
    *out = val_int((double)sh->dim[1]);
    return 0;
}

FN(bi_rank)
{
    BIND();
    int id = 0;
    if (get_tensor(e, self, &s, 0, loc, &id) != 0)
        return -1;
    *out = val_int(node(e, id)->shape.rank);
    return 0;
}

/* Math that folds on numbers and records an op on tensors. */
static int unary_math(elab *e, const char *name, edm_op op, const call_args *a, edm_loc loc,
                      value *out)
{
    const builtin *self = find(name);
    slots s;
    if (bind_args(e, self, a, loc, &s) != 0 || req(e, self, &s, 0, loc) != 0)
        return -1;
    if (s.v[0].kind == VAL_NUM) {
        edm_node math = {.op = op}; /* the one table of elementwise math (compiler/ew_math.h) */
        double r = edm_ew_eval(&math, s.v[0].num, 0);
        if (!isfinite(r))
            return elab_fail(e, loc, "%s(%g) is not finite", name, s.v[0].num);
        *out = val_num(r);
        out->is_int = 0;
        return 0;
    }
    int id = 0;
    if (get_tensor(e, self, &s, 0, loc, &id) != 0)
        return -1;
    edm_node n = {.op = op, .ninputs = 1, .input = {id}};
    return emit(e, &n, loc, out);
}


#define MATH(fname, op)                                            \
    FN(bi_##fname)                                                 \
    {                                                              \
        (void)label;                                               \
        return unary_math(e, #fname, op, a, loc, out);             \
    }
MATH(sqrt, EDM_OP_SQRT)
MATH(rsqrt, EDM_OP_RSQRT)
MATH(exp, EDM_OP_EXP)
MATH(log, EDM_OP_LOG)
MATH(cos, EDM_OP_COS)
MATH(sin, EDM_OP_SIN)
MATH(sigmoid, EDM_OP_SIGMOID)
MATH(silu, EDM_OP_SILU)
MATH(square, EDM_OP_SQUARE)

FN(bi_abs)
{
    BIND();
    double x = 0;
    if (get_num(e, self, &s, 0, loc, NAN, &x) != 0)
        return -1;
    *out = s.v[0];
    out->num = fabs(x);
    return 0;
}

FN(bi_floor)
{
    BIND();
    double x = 0;
    if (get_num(e, self, &s, 0, loc, NAN, &x) != 0)
        return -1;
    return to_int(e, self, &s, floor(x), out);
}

FN(bi_ceil)
{
    BIND();
    double x = 0;
    if (get_num(e, self, &s, 0, loc, NAN, &x) != 0)
        return -1;
    return to_int(e, self, &s, ceil(x), out);
}

FN(bi_conv2d)
{
    BIND();
    int x = 0, w = 0;
    long long stride = 1, pad = 0;
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 || get_tensor(e, self, &s, 1, loc, &w) != 0 ||
        get_int(e, self, &s, 2, loc, 1, 1, 64, &stride) != 0 || get_int(e, self, &s, 3, loc, 0, 0, 64, &pad) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_CONV2D, .ninputs = 2, .input = {x, w}};
    n.attr.conv.stride = (int)stride;
    n.attr.conv.pad = (int)pad;
    return emit(e, &n, loc, out);
}

FN(bi_matmul)
{
    BIND();
    int x = 0, y = 0, ta = 0, tb = 0;
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 || get_tensor(e, self, &s, 1, loc, &y) != 0 ||
        get_bool(e, self, &s, 2, 0, &ta) != 0 || get_bool(e, self, &s, 3, 0, &tb) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_MATMUL, .ninputs = 2, .input = {x, y}};
    n.attr.matmul.trans_a = ta;
    n.attr.matmul.trans_b = tb;
    return emit(e, &n, loc, out);
}

FN(bi_reshape)
{
    BIND();
    int x = 0, nd = 0;
    int64_t dims[EDM_MAX_RANK];
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 ||
        get_int_list(e, self, &s, 1, loc, dims, EDM_MAX_RANK, &nd, 1) != 0)
        return -1;
    const edm_shape *in = &node(e, x)->shape;
    edm_node n = {.op = EDM_OP_RESHAPE, .ninputs = 1, .input = {x}};
    n.shape.rank = nd;
    int infer = -1;
    int64_t known = 1;
    int has_batch = s.v[1].kind == VAL_LIST && nd > 0 && s.v[1].list->items[0].kind == VAL_BATCH;
    for (int i = 0; i < nd; i++) {
        n.shape.dim[i] = dims[i];
        if (i == 0 && has_batch)
            continue;
        if (dims[i] == -1) {
            if (infer >= 0)
                return elab_fail(e, s.loc[1], "reshape: at most one dimension may be -1");
            infer = i;
        } else if (dims[i] < 1) {
            return elab_fail(e, s.loc[1], "reshape: dimension %d is %lld", i, (long long)dims[i]);
        } else {
            known *= dims[i];
        }
    }
    if (infer >= 0) {
        int64_t total = edm_shape_numel_per_sample(in);
        if (known == 0 || total % known != 0)
            return elab_fail(e, s.loc[1], "reshape: cannot infer the -1 dimension");
        n.shape.dim[infer] = total / known;
    }
    return emit(e, &n, loc, out);
}

FN(bi_permute)
{
    BIND();
    int x = 0, np = 0;
    int64_t perm[EDM_MAX_RANK];
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 ||
        get_int_list(e, self, &s, 1, loc, perm, EDM_MAX_RANK, &np, 0) != 0)
        return -1;
    if (np != node(e, x)->shape.rank)
        return elab_fail(e, s.loc[1], "permute: %d axes given for a tensor of rank %d", np, node(e, x)->shape.rank);
    edm_node n = {.op = EDM_OP_PERMUTE, .ninputs = 1, .input = {x}};
    for (int i = 0; i < np; i++)
        n.attr.permute.perm[i] = (int)(perm[i] >= -EDM_MAX_RANK && perm[i] < EDM_MAX_RANK ? perm[i] : -1);
    return emit(e, &n, loc, out);
}

FN(bi_concat)
{
    BIND();
    int x = 0, y = 0;
    long long axis = 0;
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 || get_tensor(e, self, &s, 1, loc, &y) != 0 ||
        get_int(e, self, &s, 2, loc, NAN, -EDM_MAX_RANK, EDM_MAX_RANK - 1, &axis) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_CONCAT, .ninputs = 2, .input = {x, y}};
    n.attr.concat.axis = (int)axis;
    return emit(e, &n, loc, out);
}

FN(bi_slice)
{
    BIND();
    int x = 0;
    long long axis = 0, start = 0, len = 0;
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 ||
        get_int(e, self, &s, 1, loc, NAN, -EDM_MAX_RANK, EDM_MAX_RANK - 1, &axis) != 0 ||
        get_int(e, self, &s, 2, loc, NAN, 0, (long long)1 << 40, &start) != 0 ||
        get_int(e, self, &s, 3, loc, NAN, 1, (long long)1 << 40, &len) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_SLICE, .ninputs = 1, .input = {x}};
    n.attr.slice.axis = (int)axis;
    n.attr.slice.start = start;
    n.attr.slice.len = len;
    return emit(e, &n, loc, out);
}

static int reduce(elab *e, const char *name, edm_op op, const call_args *a, edm_loc loc, value *out)
{
    const builtin *self = find(name);
    slots s;
    int x = 0, keep = 0;
    if (bind_args(e, self, a, loc, &s) != 0 || get_tensor(e, self, &s, 0, loc, &x) != 0 ||
        get_bool(e, self, &s, 2, 0, &keep) != 0)
        return -1;
    edm_node n = {.op = op, .ninputs = 1, .input = {x}};
    if (axes_mask(e, self, &s, 1, loc, node(e, x)->shape.rank, &n.attr.reduce.axes) != 0)
        return -1;
    n.attr.reduce.keepdim = keep;
    return emit(e, &n, loc, out);
}

FN(bi_sum)
{
    (void)label;
    return reduce(e, "sum", EDM_OP_SUM, a, loc, out);
}

FN(bi_sumsq)
{
    (void)label;
    return reduce(e, "sumsq", EDM_OP_SUMSQ, a, loc, out);
}

FN(bi_softmax)
{
    BIND();
    int x = 0;
    long long axis = 0;
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 ||
        get_int(e, self, &s, 1, loc, -1, -EDM_MAX_RANK, EDM_MAX_RANK - 1, &axis) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_SOFTMAX, .ninputs = 1, .input = {x}};
    n.attr.softmax.axis = (int)axis;
    return emit(e, &n, loc, out);
}

static int simple_unary(elab *e, const char *name, edm_op op, const call_args *a, edm_loc loc, value *out)
{
    const builtin *self = find(name);
    slots s;
    int x = 0;
    if (bind_args(e, self, a, loc, &s) != 0 || get_tensor(e, self, &s, 0, loc, &x) != 0)
        return -1;
    edm_node n = {.op = op, .ninputs = 1, .input = {x}};
    return emit(e, &n, loc, out);
}

FN(bi_avgpool2)
{
    (void)label;
    return simple_unary(e, "avgpool2", EDM_OP_AVGPOOL2, a, loc, out);
}

FN(bi_upsample2)
{
    (void)label;
    return simple_unary(e, "upsample2", EDM_OP_UPSAMPLE2, a, loc, out);
}

FN(bi_clamp)
{
    BIND();
    int x = 0;
    double lo = 0, hi = 0;
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 || get_num(e, self, &s, 1, loc, NAN, &lo) != 0 ||
        get_num(e, self, &s, 2, loc, NAN, &hi) != 0)
        return -1;
    if (!(lo <= hi))
        return elab_fail(e, loc, "clamp: lower bound %g above upper bound %g", lo, hi);
    edm_node n = {.op = EDM_OP_CLAMP, .ninputs = 1, .input = {x}};
    n.attr.clamp.lo = lo;
    n.attr.clamp.hi = hi;
    return emit(e, &n, loc, out);
}

FN(bi_maximum)
{
    BIND();
    if (req(e, self, &s, 0, loc) != 0 || req(e, self, &s, 1, loc) != 0)
        return -1;
    return elab_tensor_binary(e, EDM_OP_MAXIMUM, s.v[0], s.v[1], loc, out);
}

FN(bi_dropout)
{
    BIND();
    int x = 0;
    double p = 0;
    if (get_tensor(e, self, &s, 0, loc, &x) != 0 || get_num(e, self, &s, 1, loc, NAN, &p) != 0)
        return -1;
    if (p == 0) { /* no op at all: keeps graphs of dropout-free presets clean */
        *out = val_tensor(x);
        return 0;
    }
    edm_node n = {.op = EDM_OP_DROPOUT, .ninputs = 1, .input = {x}};
    n.attr.dropout.p = p;
    n.attr.dropout.mask_id = 0; /* its own mask */
    return emit(e, &n, loc, out);
}

/* A tensor filled with one value, e.g. full([N, 1, 64, 64], 1): the shape may
 * carry the batch size. */
FN(bi_full)
{
    BIND();
    int64_t dims[EDM_MAX_RANK];
    int nd;
    double v = 0;
    if (get_int_list(e, self, &s, 0, loc, dims, EDM_MAX_RANK, &nd, 1) != 0 ||
        get_num(e, self, &s, 1, loc, NAN, &v) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_CONST, .dtype = EDM_F32, .shape = {.rank = nd}};
    for (int i = 0; i < nd; i++) {
        if (dims[i] < 1 && !(i == 0 && dims[i] == EDM_DIM_BATCH && s.v[0].list->items[0].kind == VAL_BATCH))
            return elab_fail(e, s.loc[0], "full: dimension %d is %lld", i, (long long)dims[i]);
        n.shape.dim[i] = dims[i];
    }
    n.attr.constant.value = v;
    return emit(e, &n, loc, out);
}

/* param / buffer / scalar: named by the call's label within the current scope. */
static int make_leaf(elab *e, edm_op op, const char *label, edm_loc loc, const edm_shape *shape, edm_init_kind kind,
                     double val, double scale, uint64_t seed, int forced_wn, value *out)
{
    const char *name = elab_join_scope(e, label);
    if (!name)
        return edm_nomem(e->st);
    if (elab_register_name(e, name, loc) != 0)
        return -1;
    edm_node n = {.op = op, .dtype = EDM_F32, .shape = *shape, .name = name};
    n.attr.init.kind = kind;
    n.attr.init.value = val;
    n.attr.init.scale = scale;
    n.attr.init.seed = seed;
    n.attr.init.forced_wn = forced_wn;
    return emit(e, &n, loc, out);
}

static int leaf_init(elab *e, const builtin *self, const slots *s, int i, edm_loc loc, edm_init_kind *kind)
{
    const char *init = NULL;
    if (get_str(e, self, s, i, loc, "normal", &init) != 0)
        return -1;
    if (edm_init_from_name(init, kind) != 0)
        return elab_fail(e, s->loc[i], "%s: unknown init '%s' (zeros, ones, const, normal, uniform)", self->name,
                         init);
    return 0;
}

static int leaf_shape(elab *e, const builtin *self, const slots *s, edm_loc loc, edm_shape *shape)
{
    int64_t dims[EDM_MAX_RANK];
    int nd;
    if (get_int_list(e, self, s, 0, loc, dims, EDM_MAX_RANK, &nd, 0) != 0)
        return -1;
    shape->rank = nd;
    for (int i = 0; i < nd; i++) {
        if (dims[i] < 1)
            return elab_fail(e, s->loc[0], "%s: dimension %d is %lld", self->name, i, (long long)dims[i]);
        shape->dim[i] = dims[i];
    }
    return 0;
}

FN(bi_parameter)
{
    BIND();
    edm_shape shape;
    edm_init_kind kind;
    double value_ = 0, scale = 0;
    int forced = 0;
    if (leaf_shape(e, self, &s, loc, &shape) != 0 || leaf_init(e, self, &s, 1, loc, &kind) != 0 ||
        get_num(e, self, &s, 2, loc, 0, &value_) != 0 || get_num(e, self, &s, 3, loc, 1, &scale) != 0 ||
        get_bool(e, self, &s, 4, 0, &forced) != 0)
        return -1;
    if (forced && shape.rank < 2)
        return elab_fail(e, s.loc[4], "parameter: forced_wn needs a weight of rank 2 or more (output channels first)");
    return make_leaf(e, EDM_OP_PARAM, label, loc, &shape, kind, value_, scale, 0, forced, out);
}

FN(bi_scalar)
{
    BIND();
    double init = 0;
    if (get_num(e, self, &s, 0, loc, 0, &init) != 0)
        return -1;
    /* shape [1], not []: the reference's checkpoints store gains that way */
    edm_shape shape = {.rank = 1, .dim = {1}};
    return make_leaf(e, EDM_OP_PARAM, label, loc, &shape, EDM_INIT_CONST, init, 1, 0, 0, out);
}

FN(bi_buffer)
{
    BIND();
    edm_shape shape;
    edm_init_kind kind;
    double scale = 0;
    long long seed = 0;
    if (leaf_shape(e, self, &s, loc, &shape) != 0 || leaf_init(e, self, &s, 1, loc, &kind) != 0 ||
        get_num(e, self, &s, 2, loc, 1, &scale) != 0 ||
        get_int(e, self, &s, 3, loc, 0, 0, (long long)1 << 52, &seed) != 0)
        return -1;
    return make_leaf(e, EDM_OP_BUFFER, label, loc, &shape, kind, 0, scale, (uint64_t)seed, 0, out);
}

/* ------------------------------------------------------------------ the table */

static const builtin table[] = {
    {"len", bi_len, P("x"), 0},
    {"range", bi_range, P("start", "stop", "step"), 0},
    {"reversed", bi_reversed, P("list"), 0},
    {"str", bi_str, P("x"), 0},
    {"int", bi_int, P("x"), 0},
    {"float", bi_float, P("x"), 0},
    {"min", bi_min, P("x"), 0},
    {"max", bi_max, P("x"), 0},
    {"abs", bi_abs, P("x"), 0},
    {"floor", bi_floor, P("x"), 0},
    {"ceil", bi_ceil, P("x"), 0},
    {"error", bi_error, P("message"), 0},
    {"shape", bi_shape, P("x"), 0},
    {"channels", bi_channels, P("x"), 0},
    {"rank", bi_rank, P("x"), 0},
    {"sqrt", bi_sqrt, P("x"), 0},
    {"rsqrt", bi_rsqrt, P("x"), 0},
    {"exp", bi_exp, P("x"), 0},
    {"log", bi_log, P("x"), 0},
    {"cos", bi_cos, P("x"), 0},
    {"sin", bi_sin, P("x"), 0},
    {"sigmoid", bi_sigmoid, P("x"), 0},
    {"silu", bi_silu, P("x"), 0},
    {"square", bi_square, P("x"), 0},
    {"conv2d", bi_conv2d, P("x", "weight", "stride", "pad"), 0},
    {"matmul", bi_matmul, P("a", "b", "trans_a", "trans_b"), 0},
    {"reshape", bi_reshape, P("x", "shape"), 0},
    {"permute", bi_permute, P("x", "perm"), 0},
    {"concat", bi_concat, P("a", "b", "axis"), 0},
    {"slice", bi_slice, P("x", "axis", "start", "len"), 0},
    {"sum", bi_sum, P("x", "axes", "keepdim"), 0},
    {"sumsq", bi_sumsq, P("x", "axes", "keepdim"), 0},
    {"softmax", bi_softmax, P("x", "axis"), 0},
    {"avgpool2", bi_avgpool2, P("x"), 0},
    {"upsample2", bi_upsample2, P("x"), 0},
    {"clamp", bi_clamp, P("x", "lo", "hi"), 0},
    {"maximum", bi_maximum, P("a", "b"), 0},
    {"dropout", bi_dropout, P("x", "p"), 0},
    {"full", bi_full, P("shape", "value"), 0},
    {"parameter", bi_parameter, P("shape", "init", "value", "scale", "forced_wn"), 1},
    {"scalar", bi_scalar, P("init"), 1},
    {"buffer", bi_buffer, P("shape", "init", "scale", "seed"), 1},
};

#define NBUILTINS ((int)(sizeof table / sizeof table[0]))

static const builtin *find(const char *name)
{
    for (int i = 0; i < NBUILTINS; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

int builtin_exists(const char *name) { return find(name) != NULL; }

int builtin_count(void) { return NBUILTINS; }

const char *builtin_name(int i) { return i >= 0 && i < NBUILTINS ? table[i].name : NULL; }

int builtin_call(elab *e, const char *name, const call_args *args, const char *label, edm_loc loc, value *out)
{
    const builtin *b = find(name);
    if (!b)
        return elab_fail(e, loc, "unknown op '%s'", name);
    if (b->needs_label && !label)
        return elab_fail(e, loc, "%s(...) makes a named tensor: give it a name, as in 'weight: %s(...)'", name, name);
    if (!b->needs_label && label && find(name))
        return elab_fail(e, loc, "'%s' is a primitive: only blocks, parameter, scalar and buffer take an instance name",
                         name);
    return b->fn(e, args, label, loc, out);
}
