#include "config.h"

#include "compiler/value.h"

#include <math.h>
#include <stdio.h>
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

static size_t put(char *buf, size_t size, size_t used, const char *s)
{
    size_t len = strlen(s);
    if (used < size) {
        size_t n = len < size - used ? len : size - used - 1;
        memcpy(buf + used, s, n);
        buf[used + n] = '\0';
    }
    return used + len;
}

/* Lists may contain themselves (l.push(l)): nesting deeper than this prints as
 * "[...]", and a list stops once its text passes VAL_FORMAT_MAX characters. */
#define VAL_FORMAT_DEPTH 16
#define VAL_FORMAT_MAX 65536

static size_t format_rec(const value *v, char *buf, size_t size, int quote, int depth);

size_t val_format(const value *v, char *buf, size_t size, int quote)
{
    return format_rec(v, buf, size, quote, 0);
}

static size_t format_rec(const value *v, char *buf, size_t size, int quote, int depth)
{
    char tmp[64];
    size_t used = 0;
    if (size)
        buf[0] = '\0';
    switch (v->kind) {
    case VAL_NONE:
        return put(buf, size, used, "none");
    case VAL_BOOL:
        return put(buf, size, used, v->num != 0 ? "true" : "false");
    case VAL_NUM:
        if (v->is_int)
            snprintf(tmp, sizeof tmp, "%lld", (long long)v->num);
        else
            snprintf(tmp, sizeof tmp, "%.15g", v->num);
        /* keep a float recognisable as one */
        if (!v->is_int && !strpbrk(tmp, ".eEn"))
            strcat(tmp, ".0");
        return put(buf, size, used, tmp);
    case VAL_STR:
        if (quote)
            used = put(buf, size, used, "\"");
        used = put(buf, size, used, v->str);
        return quote ? put(buf, size, used, "\"") : used;
    case VAL_LIST:
        if (depth >= VAL_FORMAT_DEPTH)
            return put(buf, size, used, "[...]");
        used = put(buf, size, used, "[");
        for (int i = 0; i < v->list->count; i++) {
            if (used > VAL_FORMAT_MAX)
                return put(buf, size, used, "...]");
            if (i)
                used = put(buf, size, used, ", ");
            used += format_rec(&v->list->items[i], used < size ? buf + used : NULL, used < size ? size - used : 0, 1,
                               depth + 1);
        }
        return put(buf, size, used, "]");
    case VAL_TENSOR:
        snprintf(tmp, sizeof tmp, "tensor %%%d", v->tensor);
        return put(buf, size, used, tmp);
    case VAL_BATCH:
        return put(buf, size, used, "N");
    }
    return used;
}

/* Deeper than this, lists compare unequal (a list that contains itself). */
#define VAL_EQUAL_DEPTH 64

static int equal_rec(const value *a, const value *b, int depth);

int val_equal(const value *a, const value *b)
{
    return equal_rec(a, b, 0);
}

static int equal_rec(const value *a, const value *b, int depth)
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
        if (a->list == b->list)
            return 1;
        if (a->list->count != b->list->count || depth >= VAL_EQUAL_DEPTH)
            return 0;
        for (int i = 0; i < a->list->count; i++)
            if (!equal_rec(&a->list->items[i], &b->list->items[i], depth + 1))
                return 0;
        return 1;
    }
    return 0;
}
