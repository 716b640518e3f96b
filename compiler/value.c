#include "config.h"

#include "compiler/value.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *val_kind_name(val_kind k)
{
    static const char *const names[] = {"none", "bool", "number", "string", "list", "tensor", "batch size N"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

value val_none(void) { return (value){.kind = VAL_NONE}; }
value val_bool(int b) { return (value){.kind = VAL_BOOL, .num = b ? 1 : 0}; }
value val_int(double v) { return (value){.kind = VAL_NUM, .num = v, .is_int = 1}; }

value val_num(double v)
{
    value r = {.kind = VAL_NUM, .num = v};
    r.is_int = isfinite(v) && v == floor(v) && fabs(v) <= 9007199254740992.0;
    return r;
}

value val_str(const char *s) { return (value){.kind = VAL_STR, .str = s}; }
value val_tensor(int id) { return (value){.kind = VAL_TENSOR, .tensor = id}; }
value val_batch(void) { return (value){.kind = VAL_BATCH}; }

val_list *val_list_new(edm_arena *a, int cap)
{
    val_list *l = edm_arena_alloc(a, sizeof *l);
    if (!l)
        return NULL;
    if (cap < 4)
        cap = 4;
    l->items = edm_arena_alloc(a, sizeof(value) * (size_t)cap);
    if (!l->items)
        return NULL;
    l->cap = cap;
    return l;
}

int val_list_push(edm_arena *a, val_list *l, value v)
{
    if (l->count == l->cap) {
        if (l->cap > (1 << 24))
            return -1;
        value *items = edm_arena_alloc(a, sizeof(value) * (size_t)l->cap * 2);
        if (!items)
            return -1;
        memcpy(items, l->items, sizeof(value) * (size_t)l->count);
        l->items = items;
        l->cap *= 2;
    }
    l->items[l->count++] = v;
    return 0;
}

/* Formatting writes into buf while counting every byte it wanted.  Lists may
 * contain themselves (l.push(l)): a list met again inside itself prints as
 * "[...]", like Python.  It stops early once the text passes VAL_FORMAT_MAX
 * (the caller sees a length over it), and refuses lists nested deeper than
 * VAL_FORMAT_DEPTH (SIZE_MAX), so the work and the C stack stay bounded. */
typedef struct {
    char *buf;
    size_t size, used;
    int depth;
    const val_list *path[VAL_FORMAT_DEPTH];
} fmt_ctx;

static void put(fmt_ctx *f, const char *s)
{
    size_t len = strlen(s);
    if (f->used < f->size) {
        size_t room = f->size - f->used - 1;
        size_t n = len < room ? len : room;
        memcpy(f->buf + f->used, s, n);
        f->buf[f->used + n] = '\0';
    }
    f->used += len;
}

static int format_rec(fmt_ctx *f, const value *v, int quote)
{
    char tmp[64];
    switch (v->kind) {
    case VAL_NONE:
        put(f, "none");
        return 0;
    case VAL_BOOL:
        put(f, v->num != 0 ? "true" : "false");
        return 0;
    case VAL_NUM:
        if (v->is_int && fabs(v->num) <= 9007199254740992.0)
            snprintf(tmp, sizeof tmp, "%lld", (long long)v->num);
        else
            snprintf(tmp, sizeof tmp, "%.15g", v->num);
        /* keep a float recognisable as one */
        if (!v->is_int && !strpbrk(tmp, ".eEn"))
            strcat(tmp, ".0");
        put(f, tmp);
        return 0;
    case VAL_STR:
        if (quote)
            put(f, "\"");
        put(f, v->str);
        if (quote)
            put(f, "\"");
        return 0;
    case VAL_LIST:
        for (int d = 0; d < f->depth; d++)
            if (f->path[d] == v->list) {
                put(f, "[...]");
                return 0;
            }
        if (f->depth >= VAL_FORMAT_DEPTH)
            return -1;
        f->path[f->depth++] = v->list;
        put(f, "[");
        for (int i = 0; i < v->list->count && f->used <= VAL_FORMAT_MAX; i++) {
            if (i)
                put(f, ", ");
            if (format_rec(f, &v->list->items[i], 1) != 0)
                return -1;
        }
        put(f, "]");
        f->depth--;
        return 0;
    case VAL_TENSOR:
        snprintf(tmp, sizeof tmp, "tensor %%%d", v->tensor);
        put(f, tmp);
        return 0;
    case VAL_BATCH:
        put(f, "N");
        return 0;
    }
    return 0;
}

size_t val_format(const value *v, char *buf, size_t size, int quote)
{
    fmt_ctx *f = malloc(sizeof *f);
    if (!f)
        return SIZE_MAX;
    f->buf = buf;
    f->size = size;
    f->used = 0;
    f->depth = 0;
    if (size)
        buf[0] = '\0';
    int rc = format_rec(f, v, quote);
    size_t used = f->used;
    free(f);
    return rc != 0 ? SIZE_MAX : used;
}

/* Deep equality without recursion: an explicit stack of list pairs being
 * compared.  Shared sub-lists (l = [l, l]) make the walk exponential and a
 * list holding itself makes it endless, so every item compared counts one
 * step against the caller's budget. */
typedef struct {
    const val_list *a, *b;
    int i;
} eq_frame;

static int equal_flat(const value *a, const value *b)
{
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case VAL_NONE:
    case VAL_BATCH:
        return 1;
    case VAL_BOOL:
    case VAL_NUM:
        return a->num == b->num;
    case VAL_STR:
        return strcmp(a->str, b->str) == 0;
    case VAL_TENSOR:
        return a->tensor == b->tensor;
    case VAL_LIST:
        return a->list == b->list || a->list->count == b->list->count ? 2 : 0;
    }
    return 0;
}

int val_equal(const value *a, const value *b, long *steps, long max_steps)
{
    int r = equal_flat(a, b);
    if (r != 2)
        return r;
    if (a->list == b->list)
        return 1;
    size_t cap = 16, n = 0;
    eq_frame *st = malloc(cap * sizeof *st);
    if (!st)
        return -1;
    st[n++] = (eq_frame){a->list, b->list, 0};
    int result = 1;
    while (n > 0) {
        eq_frame *f = &st[n - 1];
        if (f->i == f->a->count) {
            n--;
            continue;
        }
        if (++*steps > max_steps) {
            result = -1;
            break;
        }
        const value *x = &f->a->items[f->i], *y = &f->b->items[f->i];
        f->i++;
        r = equal_flat(x, y);
        if (r == 0) {
            result = 0;
            break;
        }
        if (r == 2 && x->list != y->list) {
            if (n == cap) {
                eq_frame *ns = realloc(st, 2 * cap * sizeof *st);
                if (!ns) {
                    result = -1;
                    break;
                }
                st = ns;
                cap *= 2;
            }
            st[n++] = (eq_frame){x->list, y->list, 0};
        }
    }
    free(st);
    return result;
}
