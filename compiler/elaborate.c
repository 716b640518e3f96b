#include "config.h"

#include "compiler/elaborate.h"

#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/elab_internal.h"
#include "compiler/passes/passes.h"

static int exec_stmts(elab *e, const ast *s);
static int eval(elab *e, const ast *x, value *out);

/* ------------------------------------------------------------------ errors */

int elab_fail(elab *e, edm_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    edm_vfail(e->st, EDM_ERR_SEMANTIC, loc, fmt, ap);
    va_end(ap);
    return -1;
}

static int nomem(elab *e, edm_loc loc)
{
    return edm_fail(e->st, EDM_ERR_NOMEM, loc, "out of memory (or the program needs more than 1 GiB to elaborate)");
}

/* Picks the closest candidate to `name` within an edit distance that scales
 * with its length; NULL when nothing is close. */
static const char *closest(const char *name, const char *best, const char *cand, int *best_d)
{
    int cap = (int)strlen(name) / 3 + 1;
    if (cap > 3)
        cap = 3;
    int d = edm_edit_distance(name, cand, cap);
    if (d <= cap && d < *best_d && strcmp(name, cand) != 0) {
        *best_d = d;
        return cand;
    }
    return best;
}

static const char *suggest_name(elab *e, const char *name, int callable)
{
    const char *best = NULL;
    int d = 1000;
    if (!callable) {
        if (e->locals)
            for (binding *b = e->locals->vars; b; b = b->next)
                best = closest(name, best, b->name, &d);
        for (binding *b = e->globals.vars; b; b = b->next)
            best = closest(name, best, b->name, &d);
        for (param_entry *p = e->params; p; p = p->next)
            best = closest(name, best, p->name, &d);
        best = closest(name, best, "pi", &d);
    } else {
        for (block_def *b = e->blocks; b; b = b->next)
            best = closest(name, best, b->def->str, &d);
        for (int i = 0; i < builtin_count(); i++)
            best = closest(name, best, builtin_name(i), &d);
    }
    return best;
}

/* A value for a message: cut at 4096 bytes (marked "..."). */
static char *fmt_value(elab *e, const value *v, int quote)
{
    size_t n = val_format(v, NULL, 0, quote);
    if (n == SIZE_MAX)
        return "[a list nested too deeply to print]";
    int cut = n > 4096;
    if (cut)
        n = 4096;
    char *buf = edm_arena_alloc(e->arena, n + 4);
    if (!buf)
        return "?";
    val_format(v, buf, n + 1, quote);
    if (cut)
        strcpy(buf + n, "...");
    return buf;
}

int elab_format_exact(elab *e, const value *v, int quote, edm_loc loc, const char *what, char **out)
{
    size_t n = val_format(v, NULL, 0, quote);
    if (n == SIZE_MAX)
        return elab_fail(e, loc, "%s: a list nested deeper than %d levels", what, VAL_FORMAT_DEPTH);
    if (n > VAL_FORMAT_MAX)
        return elab_fail(e, loc, "%s: longer than 64 KiB", what);
    char *buf = edm_arena_alloc(e->arena, n + 1);
    if (!buf)
        return nomem(e, loc);
    val_format(v, buf, n + 1, quote);
    *out = buf;
    return 0;
}

int elab_equal(elab *e, const value *a, const value *b, edm_loc loc, int *eq)
{
    int r = val_equal(a, b, &e->steps, ELAB_MAX_STEPS);
    if (r < 0)
        return edm_fail(e->st, EDM_ERR_LIMIT, loc,
                        "elaboration takes more than %ld steps (comparing lists that share or contain sub-lists)",
                        ELAB_MAX_STEPS);
    *eq = r;
    return 0;
}

/* ------------------------------------------------------------------ graph helpers */

int elab_add_node(elab *e, edm_node *n, edm_loc loc)
{
    n->loc = loc;
    if (!n->scope)
        n->scope = e->scope;
    if (!n->origin)
        n->origin = e->origin ? e->origin : edm_op_name(n->op);
    if (edm_graph_count(e->graph) >= ELAB_MAX_NODES)
        return edm_fail(e->st, EDM_ERR_LIMIT, loc, "the program makes more than %d graph nodes", ELAB_MAX_NODES);
    if (edm_infer_node(e->graph, n, e->st) != 0)
        return -1;
    return edm_graph_add(e->graph, n, e->st);
}

int elab_const(elab *e, double v, edm_loc loc)
{
    edm_node n = {.op = EDM_OP_CONST, .dtype = EDM_F32};
    n.attr.constant.value = v;
    n.origin = "const";
    return elab_add_node(e, &n, loc);
}

static int as_tensor(elab *e, value v, edm_loc loc)
{
    if (v.kind == VAL_TENSOR)
        return v.tensor;
    if (v.kind == VAL_NUM)
        return elab_const(e, v.num, loc);
    return elab_fail(e, loc, "expected a tensor or a number, got %s", val_kind_name(v.kind));
}

int elab_tensor_binary(elab *e, edm_op op, value a, value b, edm_loc loc, value *out)
{
    int ia = as_tensor(e, a, loc);
    if (ia < 0)
        return -1;
    int ib = as_tensor(e, b, loc);
    if (ib < 0)
        return -1;
    edm_node n = {.op = op, .ninputs = 2, .input = {ia, ib}};
    int id = elab_add_node(e, &n, loc);
    if (id < 0)
        return -1;
    *out = val_tensor(id);
    return 0;
}

const char *elab_join_scope(elab *e, const char *label)
{
    if (!e->scope[0])
        return edm_arena_strdup(e->arena, label);
    size_t n = strlen(e->scope) + strlen(label) + 2;
    char *s = edm_arena_alloc(e->arena, n);
    if (s)
        snprintf(s, n, "%s.%s", e->scope, label);
    return s;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

void *sym_get(const symtab *t, const char *key)
{
    if (!t->cap)
        return NULL;
    for (size_t i = (size_t)hash_str(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (!t->slots[i].key)
            return NULL;
        if (strcmp(t->slots[i].key, key) == 0)
            return t->slots[i].val;
    }
}

static void sym_insert(sym_slot *slots, size_t cap, const char *key, void *val)
{
    size_t i = (size_t)hash_str(key) & (cap - 1);
    while (slots[i].key && strcmp(slots[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    slots[i].key = key;
    slots[i].val = val;
}

int sym_put(edm_arena *a, symtab *t, const char *key, void *val)
{
    if ((t->count + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        sym_slot *slots = edm_arena_alloc(a, cap * sizeof *slots);
        if (!slots)
            return -1;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].key)
                sym_insert(slots, cap, t->slots[i].key, t->slots[i].val);
        t->slots = slots; /* the old array stays in the arena: at most as much again */
        t->cap = cap;
    }
    if (!sym_get(t, key))
        t->count++;
    sym_insert(t->slots, t->cap, key, val);
    return 0;
}

int elab_register_name(elab *e, const char *name, edm_loc loc)
{
    name_entry *old = sym_get(&e->name_index, name);
    if (old) {
        elab_fail(e, loc, "a parameter or buffer named '%s' already exists", name);
        edm_note_add(e->st, old->loc, "'%s' was first made here", name);
        return -1;
    }
    name_entry *x = edm_arena_alloc(e->arena, sizeof *x);
    if (!x || sym_put(e->arena, &e->name_index, name, x) != 0)
        return nomem(e, loc);
    x->name = name;
    x->loc = loc;
    x->next = e->names;
    e->names = x;
    return 0;
}

/* ------------------------------------------------------------------ environments */

static binding *find_binding(const env *where, const char *name)
{
    return sym_get(&where->index, name);
}

static int bind(elab *e, env *where, const char *name, value v, edm_loc loc)
{
    binding *b = find_binding(where, name);
    if (!b) {
        b = edm_arena_alloc(e->arena, sizeof *b);
        if (!b || sym_put(e->arena, &where->index, name, b) != 0)
            return nomem(e, loc);
        b->name = name;
        b->next = where->vars;
        where->vars = b;
    }
    b->v = v;
    b->loc = loc;
    return 0;
}

static param_entry *find_param(elab *e, const char *name)
{
    return sym_get(&e->param_index, name);
}

static block_def *find_block(elab *e, const char *name)
{
    return sym_get(&e->block_index, name);
}

static int lookup(elab *e, const char *name, edm_loc loc, value *out)
{
    binding *b = e->locals ? find_binding(e->locals, name) : NULL;
    if (!b)
        b = find_binding(&e->globals, name);
    if (b) {
        *out = b->v;
        return 0;
    }
    param_entry *p = find_param(e, name);
    if (p) {
        *out = p->v;
        return 0;
    }
    if (strcmp(name, "pi") == 0) {
        *out = val_num(3.14159265358979323846);
        return 0;
    }
    if (strcmp(name, "N") == 0) {
        *out = val_batch();
        return 0;
    }
    const char *s = suggest_name(e, name, 0);
    if (find_block(e, name) || builtin_exists(name))
        return elab_fail(e, loc, "'%s' is a block or op, not a value: call it as %s(...)", name, name);
    if (s)
        return elab_fail(e, loc, "unknown name '%s' (did you mean '%s'?)", name, s);
    return elab_fail(e, loc, "unknown name '%s'", name);
}

/* ------------------------------------------------------------------ expressions */

static int expect_num(elab *e, const value *v, edm_loc loc, const char *what)
{
    if (v->kind != VAL_NUM)
        return elab_fail(e, loc, "%s must be a number, got %s", what, val_kind_name(v->kind));
    return 0;
}

static int expect_bool(elab *e, const value *v, edm_loc loc, const char *what)
{
    if (v->kind != VAL_BOOL)
        return elab_fail(e, loc, "%s must be true or false, got %s %s", what, val_kind_name(v->kind),
                         fmt_value(e, v, 1));
    return 0;
}

/* "{name}" inside a string literal is replaced by the value of name. */
static int interpolate(elab *e, const ast *x, value *out)
{
    const char *s = x->str;
    if (!strchr(s, '{')) {
        *out = val_str(s);
        return 0;
    }
    size_t cap = strlen(s) + 64, used = 0;
    char *buf = edm_arena_alloc(e->arena, cap);
    if (!buf)
        return nomem(e, x->loc);
    while (*s) {
        size_t n = strspn(s + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789");
        const char *piece = s;
        size_t piece_len = 1;
        char name[130];
        if (*s == '{' && n > 0 && n < sizeof name && s[1 + n] == '}' && !(s[1] >= '0' && s[1] <= '9')) {
            memcpy(name, s + 1, n);
            name[n] = '\0';
            value v;
            if (lookup(e, name, x->loc, &v) != 0)
                return -1;
            if (v.kind == VAL_TENSOR)
                return elab_fail(e, x->loc, "cannot put tensor '%s' into a string", name);
            char *text;
            if (elab_format_exact(e, &v, 0, x->loc, "string interpolation", &text) != 0)
                return -1;
            piece = text;
            piece_len = strlen(piece);
            s += n + 2;
        } else {
            s++;
        }
        if (used + piece_len > 65536)
            return elab_fail(e, x->loc, "string longer than 64 KiB");
        if (used + piece_len + 1 > cap) {
            size_t ncap = (used + piece_len + 1) * 2;
            if (ncap > 65537)
                ncap = 65537;
            char *nb = edm_arena_alloc(e->arena, ncap);
            if (!nb)
                return nomem(e, x->loc);
            memcpy(nb, buf, used);
            buf = nb;
            cap = ncap;
        }
        memcpy(buf + used, piece, piece_len);
        used += piece_len;
    }
    buf[used] = '\0';
    *out = val_str(buf);
    return 0;
}

static int eval_list(elab *e, const ast *x, value *out)
{
    val_list *l = val_list_new(e->arena, 4);
    if (!l)
        return nomem(e, x->loc);
    for (const ast *it = x->a; it; it = it->next) {
        value v;
        if (eval(e, it, &v) != 0)
            return -1;
        if (val_list_push(e->arena, l, v) != 0)
            return nomem(e, it->loc);
    }
    out->kind = VAL_LIST;
    out->list = l;
    return 0;
}

static int num_binary(elab *e, ast_op op, value a, value b, edm_loc loc, value *out)
{
    double x = a.num, y = b.num, r;
    int ints = a.is_int && b.is_int;
    switch (op) {
    case OP_ADD: r = x + y; break;
    case OP_SUB: r = x - y; break;
    case OP_MUL: r = x * y; break;
    case OP_DIV:
        if (y == 0)
            return elab_fail(e, loc, "division by zero");
        *out = val_num(x / y);
        out->is_int = 0;
        return 0;
    case OP_IDIV:
    case OP_MOD:
        if (y == 0)
            return elab_fail(e, loc, "division by zero");
        r = op == OP_IDIV ? floor(x / y) : x - floor(x / y) * y;
        break;
    case OP_POW:
        r = pow(x, y);
        ints = ints && y >= 0;
        break;
    default:
        return elab_fail(e, loc, "internal: bad numeric operator");
    }
    if (!isfinite(r))
        return elab_fail(e, loc, "arithmetic overflow or invalid result (%s %s %s)", fmt_value(e, &a, 1), ast_op_text(op),
                         fmt_value(e, &b, 1));
    *out = val_num(r);
    out->is_int = ints && out->is_int;
    return 0;
}

static int compare(elab *e, ast_op op, value a, value b, edm_loc loc, value *out)
{
    if (op == OP_EQ || op == OP_NE) {
        if (a.kind == VAL_TENSOR || b.kind == VAL_TENSOR)
            return elab_fail(e, loc, "cannot compare tensors with '%s' at compile time", ast_op_text(op));
        int eq = 0;
        if (elab_equal(e, &a, &b, loc, &eq) != 0)
            return -1;
        *out = val_bool(op == OP_EQ ? eq : !eq);
        return 0;
    }
    int c;
    if (a.kind == VAL_NUM && b.kind == VAL_NUM)
        c = a.num < b.num ? -1 : a.num > b.num;
    else if (a.kind == VAL_STR && b.kind == VAL_STR)
        c = strcmp(a.str, b.str);
    else
        return elab_fail(e, loc, "cannot order %s and %s with '%s'", val_kind_name(a.kind), val_kind_name(b.kind),
                         ast_op_text(op));
    int r = op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0;
    *out = val_bool(r);
    return 0;
}

static int concat_values(elab *e, value a, value b, edm_loc loc, value *out)
{
    if (a.kind == VAL_STR) {
        size_t n = strlen(a.str) + strlen(b.str);
        if (n > 65536)
            return elab_fail(e, loc, "string longer than 64 KiB");
        char *s = edm_arena_alloc(e->arena, n + 1);
        if (!s)
            return nomem(e, loc);
        strcpy(s, a.str);
        strcat(s, b.str);
        *out = val_str(s);
        return 0;
    }
    if (a.list->count + b.list->count > ELAB_MAX_LIST)
        return elab_fail(e, loc, "list longer than %d", ELAB_MAX_LIST);
    val_list *l = val_list_new(e->arena, a.list->count + b.list->count);
    if (!l)
        return nomem(e, loc);
    for (int i = 0; i < a.list->count; i++)
        l->items[l->count++] = a.list->items[i];
    for (int i = 0; i < b.list->count; i++)
        l->items[l->count++] = b.list->items[i];
    out->kind = VAL_LIST;
    out->list = l;
    return 0;
}

static int eval_binary(elab *e, const ast *x, value *out)
{
    value a, b;
    if (eval(e, x->a, &a) != 0)
        return -1;
    /* short-circuit logic */
    if (x->op == OP_AND || x->op == OP_OR) {
        if (expect_bool(e, &a, x->a->loc, "an operand of 'and'/'or'") != 0)
            return -1;
        if ((x->op == OP_AND && a.num == 0) || (x->op == OP_OR && a.num != 0)) {
            *out = a;
            return 0;
        }
        if (eval(e, x->b, &b) != 0)
            return -1;
        if (expect_bool(e, &b, x->b->loc, "an operand of 'and'/'or'") != 0)
            return -1;
        *out = b;
        return 0;
    }
    if (eval(e, x->b, &b) != 0)
        return -1;
    switch (x->op) {
    case OP_EQ: case OP_NE: case OP_LT: case OP_LE: case OP_GT: case OP_GE:
        return compare(e, x->op, a, b, x->loc, out);
    case OP_IN:
        if (b.kind == VAL_LIST) {
            int found = 0;
            for (int i = 0; i < b.list->count && !found; i++)
                if (elab_equal(e, &a, &b.list->items[i], x->loc, &found) != 0)
                    return -1;
            *out = val_bool(found);
            return 0;
        }
        if (b.kind == VAL_STR && a.kind == VAL_STR) {
            *out = val_bool(strstr(b.str, a.str) != NULL);
            return 0;
        }
        return elab_fail(e, x->loc, "'in' needs a list (or a string) on its right, got %s", val_kind_name(b.kind));
    default:
        break;
    }
    if (a.kind == VAL_TENSOR || b.kind == VAL_TENSOR) {
        if ((a.kind != VAL_TENSOR && a.kind != VAL_NUM) || (b.kind != VAL_TENSOR && b.kind != VAL_NUM))
            return elab_fail(e, x->loc, "cannot apply '%s' to %s and %s", ast_op_text(x->op), val_kind_name(a.kind),
                             val_kind_name(b.kind));
        edm_op op;
        switch (x->op) {
        case OP_ADD: op = EDM_OP_ADD; break;
        case OP_SUB: op = EDM_OP_SUB; break;
        case OP_MUL: op = EDM_OP_MUL; break;
        case OP_DIV: op = EDM_OP_DIV; break;
        case OP_POW: {
            if (a.kind != VAL_TENSOR || b.kind != VAL_NUM || (b.num != 2 && b.num != 0.5 && b.num != -0.5))
                return elab_fail(e, x->loc, "a tensor may only be raised to the power 2, 0.5 or -0.5");
            edm_node n = {.op = b.num == 2 ? EDM_OP_SQUARE : b.num == 0.5 ? EDM_OP_SQRT : EDM_OP_RSQRT,
                          .ninputs = 1, .input = {a.tensor}};
            int id = elab_add_node(e, &n, x->loc);
            if (id < 0)
                return -1;
            *out = val_tensor(id);
            return 0;
        }
        default:
            return elab_fail(e, x->loc, "operator '%s' does not apply to tensors", ast_op_text(x->op));
        }
        return elab_tensor_binary(e, op, a, b, x->loc, out);
    }
    if (x->op == OP_ADD && ((a.kind == VAL_STR && b.kind == VAL_STR) || (a.kind == VAL_LIST && b.kind == VAL_LIST)))
        return concat_values(e, a, b, x->loc, out);
    if (a.kind != VAL_NUM || b.kind != VAL_NUM)
        return elab_fail(e, x->loc, "cannot apply '%s' to %s and %s", ast_op_text(x->op), val_kind_name(a.kind),
                         val_kind_name(b.kind));
    return num_binary(e, x->op, a, b, x->loc, out);
}

static int eval_unary(elab *e, const ast *x, value *out)
{
    value a;
    if (eval(e, x->a, &a) != 0)
        return -1;
    if (x->op == OP_NOT) {
        if (expect_bool(e, &a, x->a->loc, "the operand of 'not'") != 0)
            return -1;
        *out = val_bool(a.num == 0);
        return 0;
    }
    if (a.kind == VAL_TENSOR) {
        edm_node n = {.op = EDM_OP_NEG, .ninputs = 1, .input = {a.tensor}};
        int id = elab_add_node(e, &n, x->loc);
        if (id < 0)
            return -1;
        *out = val_tensor(id);
        return 0;
    }
    if (expect_num(e, &a, x->a->loc, "the operand of unary '-'") != 0)
        return -1;
    *out = a;
    out->num = -a.num;
    return 0;
}

static int eval_index(elab *e, const ast *x, value *out)
{
    value base, idx;
    if (eval(e, x->a, &base) != 0 || eval(e, x->b, &idx) != 0)
        return -1;
    if (idx.kind != VAL_NUM || !idx.is_int)
        return elab_fail(e, x->b->loc, "an index must be an integer, got %s", fmt_value(e, &idx, 1));
    long long n;
    if (base.kind == VAL_LIST)
        n = base.list->count;
    else if (base.kind == VAL_STR)
        n = (long long)strlen(base.str);
    else
        return elab_fail(e, x->a->loc, "cannot index a %s", val_kind_name(base.kind));
    /* range-check the double before converting it (1e19 does not fit a long long) */
    if (!(idx.num >= -(double)n && idx.num < (double)n))
        return elab_fail(e, x->b->loc, "index %s out of range for length %lld", fmt_value(e, &idx, 1), n);
    long long i = (long long)idx.num;
    if (i < 0)
        i += n;
    if (base.kind == VAL_LIST) {
        *out = base.list->items[i];
        return 0;
    }
    if ((unsigned char)base.str[i] >= 0x80) /* one byte of a multi-byte character is not a string */
        return elab_fail(e, x->b->loc, "index %lld falls inside a multi-byte (UTF-8) character", i);
    char *s = edm_arena_strndup(e->arena, base.str + i, 1);
    if (!s)
        return nomem(e, x->loc);
    *out = val_str(s);
    return 0;
}

/* ------------------------------------------------------------------ calls */

static int eval_args(elab *e, const ast *args, call_args *ca)
{
    memset(ca, 0, sizeof *ca);
    for (const ast *a = args; a; a = a->next) {
        value v;
        if (eval(e, a->a, &v) != 0)
            return -1;
        if (a->str) {
            if (ca->nkw == 8)
                return elab_fail(e, a->loc, "too many keyword arguments (at most 8)");
            for (int i = 0; i < ca->nkw; i++)
                if (strcmp(ca->kwname[i], a->str) == 0)
                    return elab_fail(e, a->loc, "keyword argument '%s' given twice", a->str);
            ca->kwname[ca->nkw] = a->str;
            ca->kw_loc[ca->nkw] = a->loc;
            ca->kw[ca->nkw++] = v;
        } else {
            if (ca->nkw > 0)
                return elab_fail(e, a->loc, "a positional argument cannot follow keyword arguments");
            if (ca->npos == 8)
                return elab_fail(e, a->loc, "too many positional arguments (at most 8)");
            ca->pos_loc[ca->npos] = a->loc;
            ca->pos[ca->npos++] = v;
        }
    }
    return 0;
}

static int call_block(elab *e, const ast *def, const call_args *ca, const char *label, edm_loc loc, value *out)
{
    if (e->depth >= ELAB_MAX_CALL_DEPTH)
        return edm_fail(e->st, EDM_ERR_LIMIT, loc, "block calls nested deeper than %d (unbounded recursion?)",
                        ELAB_MAX_CALL_DEPTH);
    env local = {NULL};
    int nparams = 0;
    for (const ast *p = def->a; p; p = p->next)
        nparams++;
    if (ca->npos > nparams)
        return elab_fail(e, ca->pos_loc[nparams], "block '%s' takes %d arguments, %d given", def->str, nparams,
                         ca->npos);
    for (int k = 0; k < ca->nkw; k++) {
        const ast *p = def->a;
        int i = 0;
        for (; p && strcmp(p->str, ca->kwname[k]) != 0; p = p->next)
            i++;
        if (!p) {
            const char *best = NULL;
            int d = 1000;
            for (const ast *q = def->a; q; q = q->next)
                best = closest(ca->kwname[k], best, q->str, &d);
            elab_fail(e, ca->kw_loc[k], "block '%s' has no parameter '%s'%s%s%s", def->str, ca->kwname[k],
                      best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "");
            edm_note_add(e->st, def->loc, "'%s' is defined here", def->str);
            return -1;
        }
        if (i < ca->npos)
            return elab_fail(e, ca->kw_loc[k], "parameter '%s' of '%s' given twice", p->str, def->str);
    }
    int i = 0;
    for (const ast *p = def->a; p; p = p->next, i++) {
        value v;
        edm_loc vloc = loc;
        int found = 0;
        if (i < ca->npos) {
            v = ca->pos[i];
            vloc = ca->pos_loc[i];
            found = 1;
        }
        for (int k = 0; k < ca->nkw && !found; k++)
            if (strcmp(ca->kwname[k], p->str) == 0) {
                v = ca->kw[k];
                vloc = ca->kw_loc[k];
                found = 1;
            }
        if (!found) {
            if (!p->a) {
                elab_fail(e, loc, "missing argument '%s' of block '%s'", p->str, def->str);
                edm_note_add(e->st, def->loc, "'%s' is defined here", def->str);
                return -1;
            }
            /* defaults see the globals only, like a definition-time default */
            env *saved = e->locals;
            e->locals = NULL;
            int rc = eval(e, p->a, &v);
            e->locals = saved;
            if (rc != 0)
                return -1;
        }
        if (p->num == 1 && v.kind != VAL_TENSOR && v.kind != VAL_NONE)
            return elab_fail(e, vloc, "argument '%s' of block '%s' must be a tensor, got %s", p->str, def->str,
                             val_kind_name(v.kind));
        if (p->num == 2 && v.kind == VAL_TENSOR)
            return elab_fail(e, vloc, "argument '%s' of block '%s' is a compile-time value, not a tensor (tensor "
                             "parameters come before ';')", p->str, def->str);
        if (bind(e, &local, p->str, v, vloc) != 0)
            return -1;
    }
    const char *saved_scope = e->scope, *saved_origin = e->origin;
    env *saved_locals = e->locals;
    if (label) {
        e->scope = elab_join_scope(e, label);
        if (!e->scope)
            return nomem(e, loc);
    }
    e->origin = def->str;
    e->locals = &local;
    e->depth++;
    int rc = exec_stmts(e, def->b);
    e->depth--;
    e->locals = saved_locals;
    e->scope = saved_scope;
    e->origin = saved_origin;
    if (rc != 0) {
        edm_note_add(e->st, loc, "in block '%s' called here", def->str);
        return -1;
    }
    *out = e->returning ? e->retval : val_none();
    e->returning = 0;
    if (label && out->kind == VAL_TENSOR) {
        const char *tap = elab_join_scope(e, label);
        if (!tap)
            return nomem(e, loc);
        /* the index holds tap index + 1: a label reused re-points its tap */
        uintptr_t known = (uintptr_t)sym_get(&e->tap_index, tap);
        int idx = edm_graph_put_tap(e->graph, (int)known - 1, tap, out->tensor, e->st);
        if (idx < 0)
            return -1;
        if (!known && sym_put(e->arena, &e->tap_index, tap, (void *)(uintptr_t)(idx + 1)) != 0)
            return nomem(e, loc);
    }
    return 0;
}

/* The arguments live on the heap, not in this frame: calls nest (f(g(h(x))),
 * recursion), and each level of the C stack must stay small. */
static int eval_call(elab *e, const ast *call, const char *label, value *out)
{
    block_def *b = find_block(e, call->str);
    if (!b && !builtin_exists(call->str)) {
        const char *s = suggest_name(e, call->str, 1);
        if (s)
            return elab_fail(e, call->loc, "unknown op '%s' (did you mean '%s'?)", call->str, s);
        return elab_fail(e, call->loc, "unknown op '%s'", call->str);
    }
    call_args *ca = malloc(sizeof *ca);
    if (!ca)
        return nomem(e, call->loc);
    int rc = eval_args(e, call->a, ca);
    if (rc == 0)
        rc = b ? call_block(e, b->def, ca, label, call->loc, out) : builtin_call(e, call->str, ca, label, call->loc, out);
    free(ca);
    return rc;
}

static int eval_labeled(elab *e, const ast *x, value *out)
{
    value lab;
    if (x->a->kind == AST_IDENT)
        lab = val_str(x->a->str);
    else if (interpolate(e, x->a, &lab) != 0)
        return -1;
    const char *s = lab.str;
    if (!s[0] || strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789.") != strlen(s) ||
        s[0] == '.' || s[strlen(s) - 1] == '.' || strstr(s, ".."))
        return elab_fail(e, x->a->loc, "bad instance name \"%s\": use letters, digits, '_' and inner '.'", s);
    return eval_call(e, x->b, s, out);
}

static int method_on(elab *e, const ast *x, value obj, const call_args *args, value *out);

static int eval_method(elab *e, const ast *x, value *out)
{
    value obj;
    if (eval(e, x->a, &obj) != 0)
        return -1;
    call_args *ca = malloc(sizeof *ca); /* off the C stack, as in eval_call */
    if (!ca)
        return nomem(e, x->loc);
    int rc = eval_args(e, x->c, ca);
    if (rc == 0)
        rc = method_on(e, x, obj, ca, out);
    free(ca);
    return rc;
}

static int method_on(elab *e, const ast *x, value obj, const call_args *args, value *out)
{
    if (obj.kind != VAL_LIST)
        return elab_fail(e, x->loc, "'.%s()' needs a list, got %s", x->str, val_kind_name(obj.kind));
    if (strcmp(x->str, "push") == 0) {
        if (args->npos != 1 || args->nkw)
            return elab_fail(e, x->loc, "push takes one argument");
        if (obj.list->count >= ELAB_MAX_LIST || val_list_push(e->arena, obj.list, args->pos[0]) != 0)
            return elab_fail(e, x->loc, "list longer than %d", ELAB_MAX_LIST);
        *out = val_none();
        return 0;
    }
    if (strcmp(x->str, "pop") == 0) {
        if (args->npos || args->nkw)
            return elab_fail(e, x->loc, "pop takes no arguments");
        if (obj.list->count == 0)
            return elab_fail(e, x->loc, "pop from an empty list");
        *out = obj.list->items[--obj.list->count];
        return 0;
    }
    return elab_fail(e, x->loc, "lists have no method '%s' (they have push and pop)", x->str);
}

static int eval_expr(elab *e, const ast *x, value *out);

/* Every recursion of the interpreter passes here or through exec_stmt: the
 * nesting counter bounds the C stack whatever the program does (the parser
 * bounds each file's tree; this bounds trees times block calls). */
static int too_deep(elab *e, edm_loc loc)
{
    return edm_fail(e->st, EDM_ERR_LIMIT, loc,
                    "expressions and block calls nested deeper than %d levels at elaboration", ELAB_MAX_NESTING);
}

static int eval(elab *e, const ast *x, value *out)
{
    if (e->nesting >= ELAB_MAX_NESTING)
        return too_deep(e, x->loc);
    e->nesting++;
    int rc = eval_expr(e, x, out);
    e->nesting--;
    return rc;
}

static int eval_expr(elab *e, const ast *x, value *out)
{
    if (++e->steps > ELAB_MAX_STEPS)
        return edm_fail(e->st, EDM_ERR_LIMIT, x->loc, "elaboration takes more than %ld steps (endless loop?)",
                        ELAB_MAX_STEPS);
    switch (x->kind) {
    case AST_NUM:
        *out = val_num(x->num);
        out->is_int = x->is_int;
        return 0;
    case AST_STR:
        return interpolate(e, x, out);
    case AST_BOOL:
        *out = val_bool(x->num != 0);
        return 0;
    case AST_NONE:
        *out = val_none();
        return 0;
    case AST_LIST:
        return eval_list(e, x, out);
    case AST_IDENT:
        return lookup(e, x->str, x->loc, out);
    case AST_CALL:
        return eval_call(e, x, NULL, out);
    case AST_LABELED:
        return eval_labeled(e, x, out);
    case AST_UNARY:
        return eval_unary(e, x, out);
    case AST_BINARY:
        return eval_binary(e, x, out);
    case AST_INDEX:
        return eval_index(e, x, out);
    case AST_METHOD:
        return eval_method(e, x, out);
    case AST_COND: {
        value c;
        if (eval(e, x->b, &c) != 0 || expect_bool(e, &c, x->b->loc, "the condition") != 0)
            return -1;
        return eval(e, c.num != 0 ? x->a : x->c, out);
    }
    default:
        return elab_fail(e, x->loc, "internal: %s is not an expression", ast_kind_name(x->kind));
    }
}

/* ------------------------------------------------------------------ statements */

/* noinline: its path buffers must not swell exec_stmt_inner's frame */
static int exec_import(elab *e, const ast *s) __attribute__((noinline));

static int shape_from_value(elab *e, const value *v, edm_loc loc, edm_shape *shape)
{
    if (v->kind != VAL_LIST)
        return elab_fail(e, loc, "a shape must be a list like [N, 4, 64, 64], got %s", val_kind_name(v->kind));
    if (v->list->count > EDM_MAX_RANK)
        return elab_fail(e, loc, "rank %d exceeds the maximum of %d", v->list->count, EDM_MAX_RANK);
    shape->rank = v->list->count;
    for (int i = 0; i < shape->rank; i++) {
        const value *d = &v->list->items[i];
        if (d->kind == VAL_BATCH) {
            if (i != 0)
                return elab_fail(e, loc, "the batch size N may only be the first dimension");
            shape->dim[i] = EDM_DIM_BATCH;
        } else if (d->kind == VAL_NUM && d->is_int && d->num >= 1 && d->num < 1e12) {
            shape->dim[i] = (int64_t)d->num;
        } else {
            return elab_fail(e, loc, "dimension %d of the shape must be a positive integer, got %s", i,
                             fmt_value(e, d, 1));
        }
    }
    return 0;
}

static int exec_param(elab *e, const ast *s)
{
    if (e->locals)
        return elab_fail(e, s->loc, "'param' is allowed at the top level only");
    if (find_param(e, s->str))
        return 0; /* already set: by -D, or by a preset before the import */
    value v;
    override *o = NULL;
    for (override *x = e->overrides; x; x = x->next)
        if (strcmp(x->name, s->str) == 0)
            o = x;
    value def;
    if (eval(e, s->a, &def) != 0)
        return -1;
    if (def.kind == VAL_TENSOR)
        return elab_fail(e, s->a->loc, "parameter '%s' must be a compile-time value, not a tensor", s->str);
    v = def;
    if (o) {
        o->used = 1;
        if (o->v.kind != def.kind) {
            edm_fail(e->st, EDM_ERR_USAGE, o->loc, "-D %s: expected a %s like %s, got %s", s->str,
                     val_kind_name(def.kind), fmt_value(e, &def, 1), fmt_value(e, &o->v, 1));
            edm_note_add(e->st, s->loc, "parameter '%s' is declared here", s->str);
            return -1;
        }
        v = o->v;
    }
    param_entry *p = edm_arena_alloc(e->arena, sizeof *p);
    if (!p)
        return nomem(e, s->loc);
    p->name = s->str;
    p->v = v;
    if (sym_put(e->arena, &e->param_index, p->name, p) != 0)
        return nomem(e, s->loc);
    p->next = e->params;
    e->params = p;
    return 0;
}

/* The first param, input or output statement in a block's body (they belong
 * at the top level), searching inside if and for bodies too. */
static const ast *top_level_only(const ast *s)
{
    for (; s; s = s->next) {
        if (s->kind == AST_PARAM || s->kind == AST_INPUT || s->kind == AST_OUTPUT)
            return s;
        const ast *found = NULL;
        if (s->kind == AST_FOR)
            found = top_level_only(s->b);
        for (const ast *br = s->kind == AST_IF ? s : NULL; br && !found; br = br->c)
            found = top_level_only(br->b);
        if (found)
            return found;
    }
    return NULL;
}

static int io_declared(elab *e, char kind, const ast *s);

/* input and output statements, out of exec_stmt_inner (noinline): their graph
 * nodes are large, and exec_stmt_inner recurses once per nested statement. */
static __attribute__((noinline)) int exec_input(elab *e, const ast *s)
{
    value v;
    if (e->locals)
        return elab_fail(e, s->loc, "'input' is allowed at the top level only");
    if (eval(e, s->a, &v) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_INPUT, .dtype = EDM_F32, .name = s->str, .origin = "input"};
    if (shape_from_value(e, &v, s->a->loc, &n.shape) != 0)
        return -1;
    if (io_declared(e, 'i', s) != 0)
        return -1;
    int id = elab_add_node(e, &n, s->loc);
    if (id < 0)
        return -1;
    return bind(e, &e->globals, s->str, val_tensor(id), s->loc);
}

static __attribute__((noinline)) int exec_output(elab *e, const ast *s)
{
    value v;
    if (e->locals)
        return elab_fail(e, s->loc, "'output' is allowed at the top level only");
    if (eval(e, s->a, &v) != 0)
        return -1;
    if (v.kind != VAL_TENSOR)
        return elab_fail(e, s->a->loc, "output '%s' must be a tensor, got %s", s->str, val_kind_name(v.kind));
    if (io_declared(e, 'o', s) != 0)
        return -1;
    edm_node n = {.op = EDM_OP_OUTPUT, .ninputs = 1, .input = {v.tensor}, .name = s->str, .origin = "output"};
    return elab_add_node(e, &n, s->loc) < 0 ? -1 : 0;
}

static int exec_stmt_inner(elab *e, const ast *s);

/* An input or output named twice is an error; the index remembers the first
 * statement of each name (hashed: programs may declare many). */
static int io_declared(elab *e, char kind, const ast *s)
{
    size_t n = strlen(s->str) + 3;
    char *key = edm_arena_alloc(e->arena, n);
    if (!key)
        return nomem(e, s->loc);
    snprintf(key, n, "%c:%s", kind, s->str);
    const ast *first = sym_get(&e->io_index, key);
    if (first) {
        elab_fail(e, s->loc, "%s '%s' declared twice", kind == 'i' ? "input" : "output", s->str);
        edm_note_add(e->st, first->loc, "first declared here");
        return -1;
    }
    if (sym_put(e->arena, &e->io_index, key, (void *)(uintptr_t)s) != 0)
        return nomem(e, s->loc);
    return 0;
}

static int exec_stmt(elab *e, const ast *s)
{
    if (e->nesting >= ELAB_MAX_NESTING)
        return too_deep(e, s->loc);
    e->nesting++;
    int rc = exec_stmt_inner(e, s);
    e->nesting--;
    return rc;
}

static int exec_stmt_inner(elab *e, const ast *s)
{
    value v;
    if (++e->steps > ELAB_MAX_STEPS)
        return edm_fail(e->st, EDM_ERR_LIMIT, s->loc, "elaboration takes more than %ld steps (endless loop?)",
                        ELAB_MAX_STEPS);
    switch (s->kind) {
    case AST_ASSIGN:
        if (eval(e, s->a, &v) != 0)
            return -1;
        if (find_param(e, s->str) && !e->locals)
            return elab_fail(e, s->loc, "cannot assign to parameter '%s' (use -D %s=... to change it)", s->str,
                             s->str);
        return bind(e, e->locals ? e->locals : &e->globals, s->str, v, s->loc);
    case AST_EXPR:
        return eval(e, s->a, &v);
    case AST_IF: {
        for (const ast *branch = s; branch; branch = branch->c) {
            if (!branch->a) /* else */
                return exec_stmts(e, branch->b);
            if (eval(e, branch->a, &v) != 0 || expect_bool(e, &v, branch->a->loc, "the condition of 'if'") != 0)
                return -1;
            if (v.num != 0)
                return exec_stmts(e, branch->b);
        }
        return 0;
    }
    case AST_FOR: {
        if (eval(e, s->a, &v) != 0)
            return -1;
        if (v.kind != VAL_LIST)
            return elab_fail(e, s->a->loc, "'for' needs a list to loop over, got %s", val_kind_name(v.kind));
        val_list *l = v.list;
        int n = l->count; /* loop over the list as it was when the loop started */
        for (int i = 0; i < n && i < l->count; i++) {
            /* an iteration with an empty body still counts: no endless loop of no steps */
            if (++e->steps > ELAB_MAX_STEPS)
                return edm_fail(e->st, EDM_ERR_LIMIT, s->loc, "elaboration takes more than %ld steps (endless loop?)",
                                ELAB_MAX_STEPS);
            if (bind(e, e->locals ? e->locals : &e->globals, s->str, l->items[i], s->loc) != 0)
                return -1;
            if (exec_stmts(e, s->b) != 0)
                return -1;
            if (e->returning)
                return 0;
        }
        return 0;
    }
    case AST_RETURN:
        if (!e->locals)
            return elab_fail(e, s->loc, "'return' outside a block");
        if (s->a) {
            if (eval(e, s->a, &e->retval) != 0)
                return -1;
        } else {
            e->retval = val_none();
        }
        e->returning = 1;
        return 0;
    case AST_INPUT:
        return exec_input(e, s);
    case AST_OUTPUT:
        return exec_output(e, s);
    case AST_PARAM:
        return exec_param(e, s);
    case AST_IMPORT:
        if (e->locals)
            return elab_fail(e, s->loc, "'import' is allowed at the top level only");
        return exec_import(e, s);
    case AST_BLOCK: {
        if (e->locals)
            return elab_fail(e, s->loc, "blocks are defined at the top level only");
        block_def *old = find_block(e, s->str);
        if (old) {
            elab_fail(e, s->loc, "block '%s' defined twice", s->str);
            edm_note_add(e->st, old->def->loc, "first defined here");
            return -1;
        }
        if (builtin_exists(s->str))
            return elab_fail(e, s->loc, "'%s' is a built-in op; choose another block name", s->str);
        for (const ast *p = s->a; p; p = p->next)
            for (const ast *q = p->next; q; q = q->next)
                if (strcmp(p->str, q->str) == 0) {
                    elab_fail(e, q->loc, "parameter '%s' repeated", q->str);
                    edm_note_add(e->st, p->loc, "'%s' is first declared here", p->str);
                    return -1;
                }
        const ast *top = top_level_only(s->b);
        if (top) {
            elab_fail(e, top->loc, "'%s' is allowed at the top level only, not inside a block",
                      top->kind == AST_PARAM ? "param" : top->kind == AST_INPUT ? "input" : "output");
            edm_note_add(e->st, s->loc, "in the definition of block '%s'", s->str);
            return -1;
        }
        block_def *b = edm_arena_alloc(e->arena, sizeof *b);
        if (!b)
            return nomem(e, s->loc);
        b->def = s;
        if (sym_put(e->arena, &e->block_index, s->str, b) != 0)
            return nomem(e, s->loc);
        b->next = e->blocks;
        e->blocks = b;
        return 0;
    }
    case AST_ASSERT: {
        if (eval(e, s->a, &v) != 0 || expect_bool(e, &v, s->a->loc, "the condition of 'assert'") != 0)
            return -1;
        if (v.num != 0)
            return 0;
        value msg = val_str("assertion failed");
        if (s->b && eval(e, s->b, &msg) != 0)
            return -1;
        return elab_fail(e, s->loc, "%s", msg.kind == VAL_STR ? msg.str : fmt_value(e, &msg, 1));
    }
    default:
        return elab_fail(e, s->loc, "internal: %s is not a statement", ast_kind_name(s->kind));
    }
}

static int exec_stmts(elab *e, const ast *s)
{
    for (; s; s = s->next) {
        if (exec_stmt(e, s) != 0)
            return -1;
        if (e->returning)
            return 0;
    }
    return 0;
}

/* ------------------------------------------------------------------ files */

static int run_file(elab *e, int file, edm_diags *diags);

/* Rewrites "a/./b" as "a/b" and "a/x/../b" as "a/b" in place, so that one file
 * reached along two paths (an import cycle through "..") gets one name. */
static void normalize_path(char *path)
{
    char *seg[512];
    int n = 0, absolute = path[0] == '/';
    for (char *t = path; *t && n < 512;) {
        while (*t == '/')
            *t++ = '\0';
        if (!*t)
            break;
        char *start = t;
        while (*t && *t != '/')
            t++;
        if (*t)
            *t++ = '\0';
        if (strcmp(start, ".") == 0)
            continue;
        if (strcmp(start, "..") == 0 && n > 0 && strcmp(seg[n - 1], "..") != 0)
            n--;
        else if (!(strcmp(start, "..") == 0 && absolute))
            seg[n++] = start;
    }
    char out[4096];
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        int w = snprintf(out + used, sizeof out - used, "%s%s", i || absolute ? "/" : "", seg[i]);
        if (w < 0 || (size_t)w >= sizeof out - used)
            return; /* cannot happen: the result is never longer than the input */
        used += (size_t)w;
    }
    if (n == 0)
        snprintf(out, sizeof out, "%s", absolute ? "/" : ".");
    strcpy(path, out);
}

static int exec_import(elab *e, const ast *s)
{
    value name;
    if (eval(e, s->a, &name) != 0)
        return -1;
    if (name.kind != VAL_STR || !name.str[0])
        return elab_fail(e, s->a->loc, "import needs a file name (a string), got %s", val_kind_name(name.kind));
    const edm_source *from = edm_sources_get(e->src, s->loc.file);
    char path[4096];
    const char *slash = from ? strrchr(from->path, '/') : NULL;
    if (name.str[0] == '/' || !slash)
        snprintf(path, sizeof path, "%s", name.str);
    else
        snprintf(path, sizeof path, "%.*s/%s", (int)(slash - from->path), from->path, name.str);
    normalize_path(path);
    int file = edm_sources_load(e->src, path, s->loc, e->st);
    if (file < 0)
        return -1;
    for (int i = 0; i < e->nimporting; i++)
        if (e->importing[i] == file)
            return elab_fail(e, s->loc, file == s->loc.file ? "import cycle: '%s' imports itself"
                                                            : "import cycle: '%s' is imported while it is being imported",
                             path);
    for (int i = 0; i < e->nran; i++)
        if (e->ran[i] == file)
            return 0; /* imported already (a file may be in the source manager before: not run yet) */
    if (e->nimporting == 64)
        return elab_fail(e, s->loc, "imports nested deeper than 64");
    if (run_file(e, file, NULL) != 0) {
        edm_note_add(e->st, s->loc, "imported from here");
        return -1;
    }
    return 0;
}

/* Parses and runs one file; syntax errors go to diags when given (the first
 * always into e->st). */
static int run_file(elab *e, int file, edm_diags *diags)
{
    edm_parse_ctx *pc = malloc(sizeof *pc);
    if (!pc)
        return nomem(e, EDM_NO_LOC);
    ast *prog;
    int nerr = edm_parse_program(e->arena, e->src, file, &prog, pc);
    if (diags)
        diags->count = 0;
    if (nerr > 0) {
        int n = nerr < EDM_MAX_SYNTAX_ERRORS ? nerr : EDM_MAX_SYNTAX_ERRORS;
        for (int i = 0; diags && i < n; i++)
            diags->items[i] = pc->errors[i];
        if (diags)
            diags->count = n;
        *e->st = pc->errors[0];
        free(pc);
        return -1;
    }
    free(pc);
    if (e->nran == ELAB_MAX_FILES)
        return elab_fail(e, EDM_NO_LOC, "more than %d files imported", ELAB_MAX_FILES);
    e->ran[e->nran++] = file;
    e->importing[e->nimporting++] = file;
    int rc = exec_stmts(e, prog);
    e->nimporting--;
    return rc;
}

static int parse_defines(elab *e, const edm_define *defs, int ndefs)
{
    for (int i = 0; i < ndefs; i++) {
        char name[256];
        snprintf(name, sizeof name, "<-D %s>", defs[i].name);
        const char *id = defs[i].name;
        if (!id[0] || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") != strlen(id) ||
            (id[0] >= '0' && id[0] <= '9'))
            return edm_fail(e->st, EDM_ERR_USAGE, EDM_NO_LOC, "-D %s: not a parameter name", id);
        int file = edm_sources_add_text(e->src, name, defs[i].value, strlen(defs[i].value), e->st);
        if (file < 0)
            return -1;
        edm_parse_ctx *pc = malloc(sizeof *pc);
        if (!pc)
            return nomem(e, EDM_NO_LOC);
        ast *x;
        int nerr = edm_parse_expression(e->arena, e->src, file, &x, pc);
        if (nerr > 0) {
            *e->st = pc->errors[0];
            free(pc);
            /* the value is shown under the message already: quote only its start,
             * with bytes other than printable ASCII as '?' */
            char shown[41];
            size_t k = 0;
            for (; k < 40 && defs[i].value[k]; k++) {
                unsigned char c = (unsigned char)defs[i].value[k];
                shown[k] = '?';
                if (c >= 0x20 && c < 0x7f)
                    shown[k] = defs[i].value[k];
            }
            shown[k] = '\0';
            edm_status_prefix(e->st, "-D %s=%s%s: not a valid value", id, shown, defs[i].value[k] ? "..." : "");
            e->st->code = EDM_ERR_USAGE;
            return -1;
        }
        free(pc);
        value v;
        if (eval(e, x, &v) != 0) {
            edm_status_prefix(e->st, "-D %s", id);
            e->st->code = EDM_ERR_USAGE;
            return -1;
        }
        if (v.kind == VAL_TENSOR)
            return edm_fail(e->st, EDM_ERR_USAGE, x->loc, "-D %s: a parameter cannot be a tensor", id);
        override *o = edm_arena_alloc(e->arena, sizeof *o);
        if (!o)
            return nomem(e, EDM_NO_LOC);
        *o = (override){.name = id, .v = v, .loc = x->loc, .next = e->overrides};
        for (override *p = e->overrides; p; p = p->next)
            if (strcmp(p->name, id) == 0)
                return edm_fail(e->st, EDM_ERR_USAGE, x->loc, "-D %s given twice", id);
        e->overrides = o;
    }
    return 0;
}

static int check_overrides_used(elab *e)
{
    for (override *o = e->overrides; o; o = o->next) {
        if (o->used)
            continue;
        const char *best = NULL;
        int d = 1000;
        for (param_entry *p = e->params; p; p = p->next)
            best = closest(o->name, best, p->name, &d);
        if (best)
            return edm_fail(e->st, EDM_ERR_USAGE, o->loc, "-D %s: the program has no parameter '%s' (did you mean '%s'?)",
                            o->name, o->name, best);
        return edm_fail(e->st, EDM_ERR_USAGE, o->loc, "-D %s: the program has no parameter '%s'", o->name, o->name);
    }
    return 0;
}

static int collect_params(elab *e, edm_program *prog)
{
    int n = 0;
    for (param_entry *p = e->params; p; p = p->next)
        n++;
    prog->params = calloc((size_t)(n ? n : 1), sizeof *prog->params);
    if (!prog->params)
        return nomem(e, EDM_NO_LOC);
    /* declaration order: the list is newest first */
    int i = n;
    for (param_entry *p = e->params; p; p = p->next) {
        i--;
        prog->params[i].name = strdup(p->name);
        prog->params[i].value = strdup(fmt_value(e, &p->v, 1));
        prog->nparams++;
        if (!prog->params[i].name || !prog->params[i].value)
            return nomem(e, EDM_NO_LOC);
    }
    return 0;
}

int edm_compile_file(edm_sources *src, const char *path, const edm_define *defs, int ndefs, edm_program *prog,
                     edm_diags *diags)
{
    return edm_compile_source(src, -1, path, defs, ndefs, prog, diags);
}

int edm_compile_source(edm_sources *src, int file, const char *path, const edm_define *defs, int ndefs,
                       edm_program *prog, edm_diags *diags)
{
    memset(prog, 0, sizeof *prog);
    memset(diags, 0, sizeof *diags);
    edm_status *st = &diags->items[0];
    edm_status_init(st);
    elab e = {.src = src, .st = st, .scope = "", .origin = NULL};
    e.arena = edm_arena_new(ELAB_ARENA_LIMIT);
    e.graph = edm_graph_new();
    int rc = -1;
    if (!e.arena || !e.graph) {
        edm_nomem(st);
        goto done;
    }
    if (parse_defines(&e, defs, ndefs) != 0)
        goto done;
    if (file < 0)
        file = edm_sources_load(src, path, EDM_NO_LOC, st);
    if (file < 0)
        goto done;
    edm_diags *syntax = malloc(sizeof *syntax);
    if (!syntax) {
        edm_nomem(st);
        goto done;
    }
    if (run_file(&e, file, syntax) != 0) {
        if (syntax->count > 0) {
            *diags = *syntax;
            free(syntax);
            goto done_counted;
        }
        free(syntax);
        goto done;
    }
    free(syntax);
    if (check_overrides_used(&e) != 0)
        goto done;
    /* the graph's file table mirrors the source manager's, index for index */
    for (int i = 0; i < edm_sources_count(src); i++)
        if (edm_graph_add_file(e.graph, edm_sources_get(src, i)->path, st) != i) {
            if (st->code == EDM_OK)
                edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "file table out of step");
            goto done;
        }
    int noutputs = 0;
    for (int i = 0; i < edm_graph_count(e.graph); i++)
        noutputs += edm_graph_node(e.graph, i)->op == EDM_OP_OUTPUT;
    if (noutputs == 0) {
        edm_fail(st, EDM_ERR_SEMANTIC, (edm_loc){file, 1, 1, 1},
                 "the program has no output (declare one with 'output NAME = ...;')");
        goto done;
    }
    if (edm_pass_verify(e.graph, st) != 0)
        goto done;
    if (collect_params(&e, prog) != 0)
        goto done;
    prog->graph = e.graph;
    e.graph = NULL;
    rc = 0;
done:
    diags->count = rc == 0 ? 0 : 1;
done_counted:
    if (rc != 0)
        edm_program_free(prog);
    edm_graph_free(e.graph);
    edm_arena_free(e.arena);
    return rc;
}

void edm_program_free(edm_program *prog)
{
    for (int i = 0; i < prog->nparams; i++) {
        free((char *)prog->params[i].name);
        free((char *)prog->params[i].value);
    }
    free(prog->params);
    edm_graph_free(prog->graph);
    memset(prog, 0, sizeof *prog);
}

const char *edm_program_param(const edm_program *prog, const char *name)
{
    for (int i = 0; i < prog->nparams; i++)
        if (strcmp(prog->params[i].name, name) == 0)
            return prog->params[i].value;
    return NULL;
}
