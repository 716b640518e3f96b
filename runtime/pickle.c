/* The restricted pickle reader (pickle.h): a stack machine over the binary
 * opcodes of protocols 2-5 that only builds values. */
#include "config.h"

#include "runtime/pickle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds that keep a hostile file from exhausting the machine. */
#define PK_MAX_STACK ((int64_t)1 << 22)
#define PK_MAX_MARKS 4096
#define PK_MAX_MEMO ((int64_t)1 << 22)

typedef struct {
    edm_arena *a;
    const unsigned char *d;
    size_t len, at, op_at; /* op_at: the offset of the opcode being run */
    const edm_pk_rules *r;
    edm_status *st;
    edm_pk **stack;
    int64_t sp, scap;
    int64_t marks[PK_MAX_MARKS];
    int nmarks;
    edm_pk **memo;
    int64_t mcap, mcount; /* mcount: entries set (MEMOIZE's next index) */
} pk_vm;

/* ------------------------------------------------------------ opcodes */

/* The opcodes this reader knows by name: those it runs, and those it refuses
 * (text-protocol and code-running ones) so the error can name them. */
static const struct {
    unsigned char op;
    const char *name;
} op_names[] = {
    {'(', "MARK"},          {'.', "STOP"},          {'0', "POP"},          {'1', "POP_MARK"},
    {'2', "DUP"},           {'F', "FLOAT"},         {'I', "INT"},          {'J', "BININT"},
    {'K', "BININT1"},       {'L', "LONG"},          {'M', "BININT2"},      {'N', "NONE"},
    {'P', "PERSID"},        {'Q', "BINPERSID"},     {'R', "REDUCE"},       {'S', "STRING"},
    {'T', "BINSTRING"},     {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"},    {'X', "BINUNICODE"},
    {'a', "APPEND"},        {'b', "BUILD"},         {'c', "GLOBAL"},       {'d', "DICT"},
    {'}', "EMPTY_DICT"},    {'e', "APPENDS"},       {'g', "GET"},          {'h', "BINGET"},
    {'i', "INST"},          {'j', "LONG_BINGET"},   {'l', "LIST"},         {']', "EMPTY_LIST"},
    {'o', "OBJ"},           {'p', "PUT"},           {'q', "BINPUT"},       {'r', "LONG_BINPUT"},
    {'s', "SETITEM"},       {'t', "TUPLE"},         {')', "EMPTY_TUPLE"},  {'u', "SETITEMS"},
    {'G', "BINFLOAT"},      {0x80, "PROTO"},        {0x81, "NEWOBJ"},      {0x82, "EXT1"},
    {0x83, "EXT2"},         {0x84, "EXT4"},         {0x85, "TUPLE1"},      {0x86, "TUPLE2"},
    {0x87, "TUPLE3"},       {0x88, "NEWTRUE"},      {0x89, "NEWFALSE"},    {0x8a, "LONG1"},
    {0x8b, "LONG4"},        {'B', "BINBYTES"},      {'C', "SHORT_BINBYTES"}, {0x8c, "SHORT_BINUNICODE"},
    {0x8d, "BINUNICODE8"},  {0x8e, "BINBYTES8"},    {0x8f, "EMPTY_SET"},   {0x90, "ADDITEMS"},
    {0x91, "FROZENSET"},    {0x92, "NEWOBJ_EX"},    {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"},
    {0x95, "FRAME"},        {0x96, "BYTEARRAY8"},   {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"},
};

static const char *op_name(unsigned char op)
{
    for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
        if (op_names[i].op == op)
            return op_names[i].name;
    return NULL;
}

static int fail(pk_vm *m, const char *fmt, const char *detail)
{
    char what[200];
    snprintf(what, sizeof what, fmt, detail);
    return edm_fail(m->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: byte %zu: %s", m->r->what, m->r->base + m->op_at, what);
}

static int fail_op(pk_vm *m, unsigned char op, const char *why)
{
    const char *name = op_name(op);
    char buf[160];
    if (name)
        snprintf(buf, sizeof buf, "opcode %s (0x%02x) %s", name, op, why);
    else
        snprintf(buf, sizeof buf, "unknown opcode 0x%02x %s", op, why);
    return fail(m, "%s", buf);
}

/* ------------------------------------------------------------ values */

static edm_pk *new_value(pk_vm *m, edm_pk_kind kind)
{
    edm_pk *v = edm_arena_alloc(m->a, sizeof *v);
    if (!v) {
        edm_fail(m->st, EDM_ERR_LIMIT, EDM_NO_LOC, "%s: byte %zu: the pickle's values exceed the memory limit",
                 m->r->what, m->r->base + m->op_at);
        return NULL;
    }
    v->kind = kind;
    v->pos = m->r->base + m->op_at;
    return v;
}

static int add_item(pk_vm *m, edm_pk *c, edm_pk *item)
{
    if (c->n == c->cap) {
        int64_t cap = c->cap ? 2 * c->cap : 8;
        edm_pk **items = edm_arena_alloc(m->a, sizeof(edm_pk *) * (size_t)cap);
        if (!items)
            return edm_fail(m->st, EDM_ERR_LIMIT, EDM_NO_LOC, "%s: byte %zu: the pickle's values exceed the memory limit",
                            m->r->what, m->r->base + m->op_at);
        if (c->n)
            memcpy(items, c->items, sizeof(edm_pk *) * (size_t)c->n);
        c->items = items;
        c->cap = cap;
    }
    c->items[c->n++] = item;
    return 0;
}

/* ------------------------------------------------------------ input */

static int need(pk_vm *m, size_t n)
{
    if (n > m->len - m->at)
        return fail(m, "%s", "the pickle ends inside an opcode's argument (truncated?)");
    return 0;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* n little-endian bytes of argument, n ≤ 8. */
static int arg_le(pk_vm *m, int n, uint64_t *out)
{
    if (need(m, (size_t)n) != 0)
        return -1;
    *out = le(m->d + m->at, n);
    m->at += (size_t)n;
    return 0;
}

/* A length-prefixed run of bytes (the prefix n bytes wide). */
static int arg_bytes(pk_vm *m, int n, const unsigned char **p, size_t *len)
{
    uint64_t l;
    if (arg_le(m, n, &l) != 0)
        return -1;
    if (l > m->len - m->at)
        return fail(m, "%s", "a string or bytes object runs past the end of the pickle (truncated?)");
    *p = m->d + m->at;
    *len = (size_t)l;
    m->at += (size_t)l;
    return 0;
}

/* A text line (GLOBAL's module and name), without its newline. */
static int arg_line(pk_vm *m, const unsigned char **p, size_t *len)
{
    const unsigned char *s = m->d + m->at, *nl = memchr(s, '\n', m->len - m->at);
    if (!nl)
        return fail(m, "%s", "GLOBAL's name has no end of line (truncated?)");
    *p = s;
    *len = (size_t)(nl - s);
    m->at += *len + 1;
    return 0;
}

/* ------------------------------------------------------------ stack */

static int push(pk_vm *m, edm_pk *v)
{
    if (!v)
        return -1;
    if (m->sp == m->scap) {
        if (m->scap >= PK_MAX_STACK)
            return edm_fail(m->st, EDM_ERR_LIMIT, EDM_NO_LOC, "%s: byte %zu: the pickle's stack exceeds %lld values",
                            m->r->what, m->r->base + m->op_at, (long long)PK_MAX_STACK);
        int64_t cap = m->scap ? 2 * m->scap : 64;
        edm_pk **s = realloc(m->stack, sizeof(edm_pk *) * (size_t)cap);
        if (!s)
            return edm_nomem(m->st);
        m->stack = s;
        m->scap = cap;
    }
    m->stack[m->sp++] = v;
    return 0;
}

/* The stack's bottom for the current mark frame. */
static int64_t frame_base(const pk_vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

static edm_pk *pop(pk_vm *m, unsigned char op)
{
    if (m->sp <= frame_base(m)) {
        fail_op(m, op, "needs a value, but the stack is empty");
        return NULL;
    }
    return m->stack[--m->sp];
}

static edm_pk *top(pk_vm *m, unsigned char op)
{
    if (m->sp <= frame_base(m)) {
        fail_op(m, op, "needs a value, but the stack is empty");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* Ends the current mark frame: its values are stack[*from..sp). */
static int pop_mark(pk_vm *m, unsigned char op, int64_t *from)
{
    if (m->nmarks == 0)
        return fail_op(m, op, "needs a MARK, but there is none");
    *from = m->marks[--m->nmarks];
    return 0;
}

/* ------------------------------------------------------------ memo */

static int memo_put(pk_vm *m, uint64_t idx, edm_pk *v)
{
    if (idx >= (uint64_t)PK_MAX_MEMO)
        return fail(m, "%s", "memo index beyond the limit of 4194304 entries");
    if ((int64_t)idx >= m->mcap) {
        int64_t cap = m->mcap ? m->mcap : 64;
        while (cap <= (int64_t)idx)
            cap *= 2;
        edm_pk **p = realloc(m->memo, sizeof(edm_pk *) * (size_t)cap);
        if (!p)
            return edm_nomem(m->st);
        memset(p + m->mcap, 0, sizeof(edm_pk *) * (size_t)(cap - m->mcap));
        m->memo = p;
        m->mcap = cap;
    }
    if (!m->memo[idx])
        m->mcount++;
    m->memo[idx] = v;
    return 0;
}

static int memo_get(pk_vm *m, uint64_t idx)
{
    if ((int64_t)idx >= m->mcap || !m->memo[idx]) {
        char buf[64];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)idx);
        return fail(m, "memo entry %s is read before it is written", buf);
    }
    return push(m, m->memo[idx]);
}

/* ------------------------------------------------------------ opcodes */

static int push_int(pk_vm *m, int64_t i)
{
    edm_pk *v = new_value(m, EDM_PK_INT);
    if (v)
        v->i = i;
    return push(m, v);
}

/* LONG1 / LONG4: n bytes of two's complement, little-endian. */
static int op_long(pk_vm *m, int width)
{
    const unsigned char *p;
    size_t n;
    if (arg_bytes(m, width, &p, &n) != 0)
        return -1;
    if (n > 8) {
        edm_pk *v = new_value(m, EDM_PK_BIGINT);
        if (v) {
            v->s = (const char *)p;
            v->len = n;
        }
        return push(m, v);
    }
    uint64_t u = n ? le(p, (int)n) : 0;
    if (n > 0 && n < 8 && (p[n - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    return push_int(m, (int64_t)u);
}

static int push_text(pk_vm *m, edm_pk_kind kind, int width)
{
    const unsigned char *p;
    size_t n;
    if (arg_bytes(m, width, &p, &n) != 0)
        return -1;
    edm_pk *v = new_value(m, kind);
    if (v) {
        v->s = (const char *)p;
        v->len = n;
    }
    return push(m, v);
}

/* A container of the values stack[from..sp), which are popped. */
static int collect(pk_vm *m, edm_pk_kind kind, int64_t from)
{
    edm_pk *c = new_value(m, kind);
    if (!c)
        return -1;
    for (int64_t i = from; i < m->sp; i++)
        if (add_item(m, c, m->stack[i]) != 0)
            return -1;
    m->sp = from;
    return push(m, c);
}

static int tuple_n(pk_vm *m, unsigned char op, int n)
{
    if (m->sp - frame_base(m) < n)
        return fail_op(m, op, "needs more values than the stack holds");
    return collect(m, EDM_PK_TUPLE, m->sp - n);
}

/* A global by module and name, if the rules allow it. */
static int push_global(pk_vm *m, const char *module, size_t mlen, const char *name, size_t nlen)
{
    char *full = edm_arena_alloc(m->a, mlen + nlen + 2);
    if (!full)
        return edm_nomem(m->st);
    memcpy(full, module, mlen);
    full[mlen] = '.';
    memcpy(full + mlen + 1, name, nlen);
    full[mlen + 1 + nlen] = '\0';
    int ok = strlen(full) == mlen + nlen + 1; /* no NUL inside */
    for (int i = 0; ok && i < m->r->nglobals; i++)
        if (strcmp(full, m->r->globals[i]) == 0) {
            edm_pk *v = new_value(m, EDM_PK_GLOBAL);
            if (v) {
                v->s = full;
                v->len = mlen + nlen + 1;
            }
            return push(m, v);
        }
    char shown[120];
    snprintf(shown, sizeof shown, "%.*s", ok ? (int)(mlen + nlen + 1) : 0, full);
    return fail(m, "the pickle names '%s', which is not a class or function edmc reads (nothing was run)",
                ok ? shown : "(a name with a NUL byte)");
}

static int op_global(pk_vm *m)
{
    const unsigned char *mod, *name;
    size_t ml, nl;
    if (arg_line(m, &mod, &ml) != 0 || arg_line(m, &name, &nl) != 0)
        return -1;
    return push_global(m, (const char *)mod, ml, (const char *)name, nl);
}

static int op_stack_global(pk_vm *m, unsigned char op)
{
    edm_pk *name = pop(m, op), *mod = name ? pop(m, op) : NULL;
    if (!mod)
        return -1;
    if (name->kind != EDM_PK_STR || mod->kind != EDM_PK_STR)
        return fail_op(m, op, "needs two strings (module and name)");
    return push_global(m, mod->s, mod->len, name->s, name->len);
}

/* REDUCE, NEWOBJ, NEWOBJ_EX: records the call. */
static int op_call(pk_vm *m, unsigned char op)
{
    edm_pk *kwargs = NULL;
    if (op == 0x92 && !(kwargs = pop(m, op)))
        return -1;
    edm_pk *args = pop(m, op), *cls = args ? pop(m, op) : NULL;
    if (!cls)
        return -1;
    if (cls->kind != EDM_PK_GLOBAL)
        return fail_op(m, op, "calls something that is not a named class or function");
    if (args->kind != EDM_PK_TUPLE)
        return fail_op(m, op, "needs its arguments as a tuple");
    if (kwargs && (kwargs->kind != EDM_PK_DICT || kwargs->n != 0))
        return fail_op(m, op, "with keyword arguments is not read");
    edm_pk *v = new_value(m, EDM_PK_OBJECT);
    if (v) {
        v->cls = cls;
        v->args = args;
    }
    return push(m, v);
}

static int op_build(pk_vm *m, unsigned char op)
{
    edm_pk *state = pop(m, op), *obj = state ? top(m, op) : NULL;
    if (!obj)
        return -1;
    if (obj->kind != EDM_PK_OBJECT || obj->state)
        return fail_op(m, op, "sets the state of something that is not a new object");
    obj->state = state;
    return 0;
}

/* The dict (or list) that SETITEM(S) (APPEND(S)) add to: the value itself,
 * or an object's items. */
static edm_pk *items_target(pk_vm *m, edm_pk *c, edm_pk_kind kind)
{
    if (c->kind == kind)
        return c;
    if (c->kind != EDM_PK_OBJECT)
        return NULL;
    edm_pk **slot = kind == EDM_PK_DICT ? &c->dict : &c->list;
    if (!*slot)
        *slot = new_value(m, kind);
    return *slot;
}

/* APPEND(S), SETITEM(S), ADDITEMS: the values stack[from..sp) go into the
 * container below them. */
static int add_items(pk_vm *m, unsigned char op, int64_t from, edm_pk_kind kind, int pairs)
{
    if (from <= frame_base(m))
        return fail_op(m, op, "has no container below its items");
    edm_pk *c = m->stack[from - 1];
    edm_pk *t = items_target(m, c, kind);
    if (!t) {
        if (m->st->code != EDM_OK)
            return -1;
        return fail_op(m, op, "adds items to something that is not the right kind of container");
    }
    if (pairs && (m->sp - from) % 2)
        return fail_op(m, op, "has a key without a value");
    for (int64_t i = from; i < m->sp; i++)
        if (add_item(m, t, m->stack[i]) != 0)
            return -1;
    m->sp = from;
    return 0;
}

static int op_proto(pk_vm *m)
{
    uint64_t v;
    if (arg_le(m, 1, &v) != 0)
        return -1;
    if (v < 2 || v > 5) {
        char buf[32];
        snprintf(buf, sizeof buf, "%u", (unsigned)v);
        return fail(m, "pickle protocol %s: edmc reads protocols 2 to 5", buf);
    }
    return 0;
}

static int op_float(pk_vm *m)
{
    if (need(m, 8) != 0)
        return -1;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | m->d[m->at + (size_t)i]; /* big-endian */
    m->at += 8;
    double f;
    memcpy(&f, &u, sizeof f);
    edm_pk *v = new_value(m, EDM_PK_FLOAT);
    if (v)
        v->f = f;
    return push(m, v);
}

static int op_simple(pk_vm *m, unsigned char op, edm_pk_kind kind, int64_t i)
{
    (void)op;
    edm_pk *v = new_value(m, kind);
    if (v)
        v->i = i;
    return push(m, v);
}

static int op_binint(pk_vm *m, int width)
{
    uint64_t u;
    if (arg_le(m, width, &u) != 0)
        return -1;
    return push_int(m, width == 4 ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u);
}

static int op_put(pk_vm *m, unsigned char op, int width)
{
    uint64_t idx;
    edm_pk *v = top(m, op);
    if (!v)
        return -1;
    if (width == 0)
        return memo_put(m, (uint64_t)m->mcount, v);
    return arg_le(m, width, &idx) == 0 ? memo_put(m, idx, v) : -1;
}

static int op_get(pk_vm *m, int width)
{
    uint64_t idx;
    return arg_le(m, width, &idx) == 0 ? memo_get(m, idx) : -1;
}

static int op_mark(pk_vm *m)
{
    if (m->nmarks == PK_MAX_MARKS)
        return fail(m, "%s", "more than 4096 nested MARKs");
    m->marks[m->nmarks++] = m->sp;
    return 0;
}

static int op_items(pk_vm *m, unsigned char op, edm_pk_kind kind, int pairs)
{
    int64_t from = 0;
    return pop_mark(m, op, &from) == 0 ? add_items(m, op, from, kind, pairs) : -1;
}

static int op_single_item(pk_vm *m, unsigned char op, edm_pk_kind kind, int n)
{
    if (m->sp - frame_base(m) < n + 1)
        return fail_op(m, op, "needs more values than the stack holds");
    return add_items(m, op, m->sp - n, kind, n == 2);
}

static int op_container(pk_vm *m, unsigned char op, edm_pk_kind kind)
{
    int64_t from = 0;
    if (pop_mark(m, op, &from) != 0)
        return -1;
    if (kind == EDM_PK_DICT && (m->sp - from) % 2)
        return fail_op(m, op, "has a key without a value");
    return collect(m, kind, from);
}

static int op_persid(pk_vm *m, unsigned char op)
{
    if (!m->r->allow_persid)
        return fail_op(m, op, "(a persistent reference) is not expected in this pickle");
    edm_pk *id = pop(m, op);
    if (!id)
        return -1;
    edm_pk *v = new_value(m, EDM_PK_PERSID);
    if (v)
        v->args = id;
    return push(m, v);
}

static int op_frame(pk_vm *m)
{
    uint64_t n;
    return arg_le(m, 8, &n); /* frames only group opcodes; their length is not needed */
}

/* One opcode; 1 at STOP. */
static int step(pk_vm *m, unsigned char op)
{
    switch (op) {
    case 0x80: return op_proto(m);
    case 0x95: return op_frame(m);
    case '.': return 1;
    case '(': return op_mark(m);
    case '0': return pop(m, op) ? 0 : -1;
    case '1': {
        int64_t from = 0;
        if (pop_mark(m, op, &from) != 0)
            return -1;
        m->sp = from;
        return 0;
    }
    case '2': {
        edm_pk *v = top(m, op);
        return v ? push(m, v) : -1;
    }
    case 'N': return op_simple(m, op, EDM_PK_NONE, 0);
    case 0x88: return op_simple(m, op, EDM_PK_BOOL, 1);
    case 0x89: return op_simple(m, op, EDM_PK_BOOL, 0);
    case 'J': return op_binint(m, 4);
    case 'K': return op_binint(m, 1);
    case 'M': return op_binint(m, 2);
    case 0x8a: return op_long(m, 1);
    case 0x8b: return op_long(m, 4);
    case 'G': return op_float(m);
    case 0x8c: return push_text(m, EDM_PK_STR, 1);
    case 'X': return push_text(m, EDM_PK_STR, 4);
    case 0x8d: return push_text(m, EDM_PK_STR, 8);
    case 'C': return push_text(m, EDM_PK_BYTES, 1);
    case 'B': return push_text(m, EDM_PK_BYTES, 4);
    case 0x8e: return push_text(m, EDM_PK_BYTES, 8);
    case ')': return collect(m, EDM_PK_TUPLE, m->sp);
    case 0x85: return tuple_n(m, op, 1);
    case 0x86: return tuple_n(m, op, 2);
    case 0x87: return tuple_n(m, op, 3);
    case 't': return op_container(m, op, EDM_PK_TUPLE);
    case ']': return collect(m, EDM_PK_LIST, m->sp);
    case 'l': return op_container(m, op, EDM_PK_LIST);
    case '}': return collect(m, EDM_PK_DICT, m->sp);
    case 'd': return op_container(m, op, EDM_PK_DICT);
    case 0x8f: return collect(m, EDM_PK_SET, m->sp);
    case 0x91: return op_container(m, op, EDM_PK_SET);
    case 'a': return op_single_item(m, op, EDM_PK_LIST, 1);
    case 'e': return op_items(m, op, EDM_PK_LIST, 0);
    case 's': return op_single_item(m, op, EDM_PK_DICT, 2);
    case 'u': return op_items(m, op, EDM_PK_DICT, 1);
    case 0x90: return op_items(m, op, EDM_PK_SET, 0);
    case 'c': return op_global(m);
    case 0x93: return op_stack_global(m, op);
    case 'R':
    case 0x81:
    case 0x92: return op_call(m, op);
    case 'b': return op_build(m, op);
    case 'q': return op_put(m, op, 1);
    case 'r': return op_put(m, op, 4);
    case 0x94: return op_put(m, op, 0);
    case 'h': return op_get(m, 1);
    case 'j': return op_get(m, 4);
    case 'Q': return op_persid(m, op);
    default: return fail_op(m, op, "is not read by edmc (it reads the binary pickles of data that torch writes)");
    }
}

edm_pk *edm_pk_read(edm_arena *a, const unsigned char *data, size_t len, size_t *pos, const edm_pk_rules *r,
                    edm_status *st)
{
    pk_vm m = {.a = a, .d = data, .len = len, .at = *pos, .r = r, .st = st};
    edm_pk *result = NULL;
    for (;;) {
        if (m.at >= m.len) {
            m.op_at = m.at;
            fail(&m, "%s", "the pickle ends without its STOP opcode (truncated?)");
            break;
        }
        m.op_at = m.at;
        unsigned char op = m.d[m.at++];
        int rc = step(&m, op);
        if (rc < 0)
            break;
        if (rc == 1) {
            if (m.nmarks)
                fail_op(&m, op, "comes with a MARK still open");
            else if (m.sp != 1)
                fail_op(&m, op, m.sp ? "leaves more than one value on the stack" : "finds no value on the stack");
            else
                result = m.stack[0];
            break;
        }
    }
    if (result)
        *pos = m.at;
    free(m.stack);
    free(m.memo);
    return result;
}

/* ------------------------------------------------------------ queries */

int edm_pk_str_is(const edm_pk *v, const char *s)
{
    size_t n = strlen(s);
    return v && v->kind == EDM_PK_STR && v->len == n && memcmp(v->s, s, n) == 0;
}

int edm_pk_global_is(const edm_pk *v, const char *name)
{
    return v && v->kind == EDM_PK_OBJECT && v->cls && strcmp(v->cls->s, name) == 0;
}

static const edm_pk *dict_of(const edm_pk *d)
{
    if (d && d->kind == EDM_PK_OBJECT)
        return d->dict;
    return d && d->kind == EDM_PK_DICT ? d : NULL;
}

int64_t edm_pk_dict_size(const edm_pk *dict)
{
    const edm_pk *d = dict_of(dict);
    if (d)
        return d->n / 2;
    return dict && dict->kind == EDM_PK_OBJECT ? 0 : -1;
}

const edm_pk *edm_pk_dict_key(const edm_pk *dict, int64_t i) { return dict_of(dict)->items[2 * i]; }
const edm_pk *edm_pk_dict_value(const edm_pk *dict, int64_t i) { return dict_of(dict)->items[2 * i + 1]; }

const edm_pk *edm_pk_get(const edm_pk *dict, const char *key)
{
    const edm_pk *d = dict_of(dict), *found = NULL;
    for (int64_t i = 0; d && i < d->n / 2; i++)
        if (edm_pk_str_is(d->items[2 * i], key))
            found = d->items[2 * i + 1]; /* the last one wins, as in Python */
    return found;
}

const char *edm_pk_describe(const edm_pk *v, char *buf, size_t size)
{
    static const char *const names[] = {"None",  "a bool", "an integer", "an integer", "a float", "a string", "bytes",
                                        "a tuple", "a list", "a dict",     "a set",      "a name",  "an object",
                                        "a persistent reference"};
    if (!v)
        snprintf(buf, size, "nothing");
    else if (v->kind == EDM_PK_OBJECT)
        snprintf(buf, size, "an object of %s", v->cls->s);
    else if (v->kind == EDM_PK_GLOBAL)
        snprintf(buf, size, "the name %s", v->s);
    else
        snprintf(buf, size, "%s", names[v->kind]);
    return buf;
}
