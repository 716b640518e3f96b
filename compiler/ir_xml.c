#include "config.h"

#include "compiler/ir_io.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlstring.h>
#include <libxml/xmlwriter.h>

/* ------------------------------------------------------------------ op attributes
 * One row per (op, XML attribute): the writer, the reader and edm_graph_equal
 * all walk this table, so the three cannot disagree about an op's attributes. */

typedef enum {
    A_INT,    /* int */
    A_BOOL,   /* int, 0 or 1 */
    A_I64,    /* int64_t */
    A_U64,    /* uint64_t */
    A_DOUBLE, /* double, exact round trip */
    A_INIT,   /* edm_init_kind, by name */
    A_AXES,   /* uint32_t bit mask, as a comma list of axes */
    A_PERM,   /* int[EDM_MAX_RANK], as a comma list of rank entries */
} attr_kind;

typedef struct {
    edm_op op;
    const char *key;
    attr_kind kind;
    size_t off;
} attr_spec;

#define ATTR(op, key, kind, member) {EDM_OP_##op, key, kind, offsetof(edm_node, attr.member)}

static const attr_spec attr_specs[] = {
    ATTR(CONST, "value", A_DOUBLE, constant.value),
    ATTR(PARAM, "init", A_INIT, init.kind),
    ATTR(PARAM, "init_value", A_DOUBLE, init.value),
    ATTR(PARAM, "init_scale", A_DOUBLE, init.scale),
    ATTR(PARAM, "seed", A_U64, init.seed),
    ATTR(PARAM, "forced_wn", A_BOOL, init.forced_wn),
    ATTR(BUFFER, "init", A_INIT, init.kind),
    ATTR(BUFFER, "init_value", A_DOUBLE, init.value),
    ATTR(BUFFER, "init_scale", A_DOUBLE, init.scale),
    ATTR(BUFFER, "seed", A_U64, init.seed),
    ATTR(CLAMP, "lo", A_DOUBLE, clamp.lo),
    ATTR(CLAMP, "hi", A_DOUBLE, clamp.hi),
    ATTR(SUM, "axes", A_AXES, reduce.axes),
    ATTR(SUM, "keepdim", A_BOOL, reduce.keepdim),
    ATTR(SUMSQ, "axes", A_AXES, reduce.axes),
    ATTR(SUMSQ, "keepdim", A_BOOL, reduce.keepdim),
    ATTR(CONV2D, "stride", A_INT, conv.stride),
    ATTR(CONV2D, "pad", A_INT, conv.pad),
    ATTR(CONV2D, "taps", A_BOOL, conv.taps),
    ATTR(CONV2D_BWD_DATA, "stride", A_INT, conv.stride),
    ATTR(CONV2D_BWD_DATA, "pad", A_INT, conv.pad),
    ATTR(CONV2D_BWD_DATA, "in_h", A_I64, conv.in_h),
    ATTR(CONV2D_BWD_DATA, "in_w", A_I64, conv.in_w),
    ATTR(CONV2D_BWD_DATA, "taps", A_BOOL, conv.taps),
    ATTR(CONV2D_BWD_WEIGHT, "stride", A_INT, conv.stride),
    ATTR(CONV2D_BWD_WEIGHT, "pad", A_INT, conv.pad),
    ATTR(CONV2D_BWD_WEIGHT, "kernel", A_I64, conv.kernel),
    ATTR(MATMUL, "trans_a", A_BOOL, matmul.trans_a),
    ATTR(MATMUL, "trans_b", A_BOOL, matmul.trans_b),
    ATTR(PERMUTE, "perm", A_PERM, permute.perm),
    ATTR(CONCAT, "axis", A_INT, concat.axis),
    ATTR(SLICE, "axis", A_INT, slice.axis),
    ATTR(SLICE, "start", A_I64, slice.start),
    ATTR(SLICE, "len", A_I64, slice.len),
    ATTR(SOFTMAX, "axis", A_INT, softmax.axis),
    ATTR(DROPOUT, "p", A_DOUBLE, dropout.p),
    ATTR(DROPOUT, "mask_id", A_INT, dropout.mask_id),
};

#define NSPECS ((int)(sizeof attr_specs / sizeof attr_specs[0]))

static const char *const common_attrs[] = {"id", "op", "dtype", "shape", "name", "scope", "origin", "loc", "inputs"};

static const void *field(const edm_node *n, const attr_spec *s) { return (const char *)n + s->off; }
static void *field_mut(edm_node *n, const attr_spec *s) { return (char *)n + s->off; }

static const attr_spec *find_spec(edm_op op, const char *key)
{
    for (int i = 0; i < NSPECS; i++)
        if (attr_specs[i].op == op && strcmp(attr_specs[i].key, key) == 0)
            return &attr_specs[i];
    return NULL;
}

static int is_common_attr(const char *key)
{
    for (size_t i = 0; i < sizeof common_attrs / sizeof common_attrs[0]; i++)
        if (strcmp(common_attrs[i], key) == 0)
            return 1;
    return 0;
}

/* Equal doubles: same value and sign of zero, or both NaN. */
static int same_double(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

static int attr_equal(const edm_node *a, const edm_node *b, const attr_spec *s)
{
    const void *fa = field(a, s), *fb = field(b, s);
    switch (s->kind) {
    case A_INT:
    case A_BOOL:
        return *(const int *)fa == *(const int *)fb;
    case A_I64:
        return *(const int64_t *)fa == *(const int64_t *)fb;
    case A_U64:
        return *(const uint64_t *)fa == *(const uint64_t *)fb;
    case A_DOUBLE:
        return same_double(*(const double *)fa, *(const double *)fb);
    case A_INIT:
        return *(const edm_init_kind *)fa == *(const edm_init_kind *)fb;
    case A_AXES:
        return *(const uint32_t *)fa == *(const uint32_t *)fb;
    case A_PERM: {
        const int *pa = fa, *pb = fb;
        int rank = a->shape.rank < 0 ? 0 : a->shape.rank > EDM_MAX_RANK ? EDM_MAX_RANK : a->shape.rank;
        for (int i = 0; i < rank; i++)
            if (pa[i] != pb[i])
                return 0;
        return 1;
    }
    }
    return 0;
}

/* ------------------------------------------------------------------ equality */

static int same_string(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static int nodes_equal(const edm_node *a, const edm_node *b)
{
    if (a->op != b->op || a->ninputs != b->ninputs || a->dtype != b->dtype)
        return 0;
    if (a->ninputs < 0 || a->ninputs > EDM_MAX_INPUTS)
        return 0;
    for (int i = 0; i < a->ninputs; i++)
        if (a->input[i] != b->input[i])
            return 0;
    if (a->shape.rank < 0 || a->shape.rank > EDM_MAX_RANK || !edm_shape_equal(&a->shape, &b->shape))
        return 0;
    if (a->loc.file != b->loc.file || a->loc.line != b->loc.line || a->loc.col != b->loc.col ||
        a->loc.span != b->loc.span)
        return 0;
    if (!same_string(a->name, b->name) || !same_string(a->scope, b->scope) || !same_string(a->origin, b->origin))
        return 0;
    for (int i = 0; i < NSPECS; i++)
        if (attr_specs[i].op == a->op && !attr_equal(a, b, &attr_specs[i]))
            return 0;
    return 1;
}

int edm_graph_equal(const edm_graph *a, const edm_graph *b)
{
    if (edm_graph_count(a) != edm_graph_count(b) || edm_graph_file_count(a) != edm_graph_file_count(b))
        return 0;
    for (int i = 0; i < edm_graph_file_count(a); i++)
        if (!same_string(edm_graph_file(a, i), edm_graph_file(b, i)))
            return 0;
    for (int i = 0; i < edm_graph_count(a); i++)
        if (!nodes_equal(edm_graph_node(a, i), edm_graph_node(b, i)))
            return 0;
    if (edm_graph_tap_count(a) != edm_graph_tap_count(b))
        return 0;
    for (int i = 0; i < edm_graph_tap_count(a); i++)
        if (!same_string(edm_graph_tap_name(a, i), edm_graph_tap_name(b, i)) ||
            edm_graph_tap_node(a, i) != edm_graph_tap_node(b, i))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    xmlTextWriterPtr w;
    edm_status *st;
} xml_out;

static int writer_failed(xml_out *o) { return edm_fail(o->st, EDM_ERR_NOMEM, EDM_NO_LOC, "writing XML failed (out of memory)"); }

static int xw_start(xml_out *o, const char *element)
{
    return xmlTextWriterStartElement(o->w, BAD_CAST element) < 0 ? writer_failed(o) : 0;
}

static int xw_end(xml_out *o) { return xmlTextWriterEndElement(o->w) < 0 ? writer_failed(o) : 0; }

static int xw_attr(xml_out *o, const char *key, const char *value)
{
    return xmlTextWriterWriteAttribute(o->w, BAD_CAST key, BAD_CAST value) < 0 ? writer_failed(o) : 0;
}

static int xw_attr_int(xml_out *o, const char *key, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    return xw_attr(o, key, buf);
}

/* Strings must be valid UTF-8 without control characters (which XML 1.0 cannot
 * carry, or which attribute-value normalisation would turn into spaces). */
static int xw_attr_string(xml_out *o, int id, const char *key, const char *value)
{
    char where[32] = "file table";
    if (id >= 0)
        snprintf(where, sizeof where, "node %d", id);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC,
                            "%s: %s contains control character 0x%02x, which XML cannot carry", where, key, *p);
    if (!xmlCheckUTF8((const unsigned char *)value))
        return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: %s is not valid UTF-8", where, key);
    return xw_attr(o, key, value);
}

/* Appends "v" or ",v" to buf. */
static void list_append(char *buf, size_t size, long long v)
{
    size_t used = strlen(buf);
    if (used < size)
        snprintf(buf + used, size - used, used ? ",%lld" : "%lld", v);
}

static int xw_shape(xml_out *o, int id, const edm_shape *s)
{
    char buf[EDM_MAX_RANK * 24 + 1] = "";
    if (s->rank < 0 || s->rank > EDM_MAX_RANK)
        return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC, "node %d: rank %d out of range", id, s->rank);
    for (int i = 0; i < s->rank; i++) {
        if (s->dim[i] == EDM_DIM_BATCH) {
            size_t used = strlen(buf);
            snprintf(buf + used, sizeof buf - used, used ? ",N" : "N");
        } else {
            list_append(buf, sizeof buf, (long long)s->dim[i]);
        }
    }
    return xw_attr(o, "shape", buf);
}

static int xw_op_attr(xml_out *o, int id, const edm_node *n, const attr_spec *s)
{
    char buf[EDM_MAX_RANK * 24 + 32 * 4] = "";
    const void *f = field(n, s);
    switch (s->kind) {
    case A_INT:
        snprintf(buf, sizeof buf, "%d", *(const int *)f);
        break;
    case A_BOOL:
        if (*(const int *)f != 0 && *(const int *)f != 1)
            return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC, "node %d: %s is %d, not 0 or 1", id, s->key,
                            *(const int *)f);
        snprintf(buf, sizeof buf, "%d", *(const int *)f);
        break;
    case A_I64:
        snprintf(buf, sizeof buf, "%lld", (long long)*(const int64_t *)f);
        break;
    case A_U64:
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)*(const uint64_t *)f);
        break;
    case A_DOUBLE:
        snprintf(buf, sizeof buf, "%.17g", *(const double *)f);
        break;
    case A_INIT: {
        edm_init_kind k = *(const edm_init_kind *)f;
        edm_init_kind check;
        if (edm_init_from_name(edm_init_name(k), &check) != 0)
            return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC, "node %d: bad init kind %d", id, (int)k);
        snprintf(buf, sizeof buf, "%s", edm_init_name(k));
        break;
    }
    case A_AXES:
        for (int i = 0; i < 32; i++)
            if (*(const uint32_t *)f & (1u << i))
                list_append(buf, sizeof buf, i);
        break;
    case A_PERM:
        for (int i = 0; i < n->shape.rank && i < EDM_MAX_RANK; i++)
            list_append(buf, sizeof buf, ((const int *)f)[i]);
        break;
    }
    return xw_attr(o, s->key, buf);
}

static int xw_node(xml_out *o, const edm_graph *g, int id)
{
    const edm_node *n = edm_graph_node(g, id);
    edm_dtype dt;
    edm_op op;
    char buf[64];
    if (edm_op_from_name(edm_op_name(n->op), &op) != 0)
        return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC, "node %d: bad op %d", id, (int)n->op);
    if (edm_dtype_from_name(edm_dtype_name(n->dtype), &dt) != 0)
        return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC, "node %d: bad dtype %d", id, (int)n->dtype);
    if (n->ninputs < 0 || n->ninputs > EDM_MAX_INPUTS)
        return edm_fail(o->st, EDM_ERR_INTERNAL, EDM_NO_LOC, "node %d: %d inputs", id, n->ninputs);
    if (xw_start(o, "node") || xw_attr_int(o, "id", id) || xw_attr(o, "op", edm_op_name(n->op)) ||
        xw_attr(o, "dtype", edm_dtype_name(n->dtype)) || xw_shape(o, id, &n->shape))
        return -1;
    if (n->name && xw_attr_string(o, id, "name", n->name))
        return -1;
    if (xw_attr_string(o, id, "scope", n->scope ? n->scope : "") ||
        xw_attr_string(o, id, "origin", n->origin ? n->origin : edm_op_name(n->op)))
        return -1;
    snprintf(buf, sizeof buf, "%d:%d:%d:%d", n->loc.file, n->loc.line, n->loc.col, n->loc.span);
    if (xw_attr(o, "loc", buf))
        return -1;
    if (n->ninputs > 0) {
        buf[0] = '\0';
        for (int i = 0; i < n->ninputs; i++)
            list_append(buf, sizeof buf, n->input[i]);
        if (xw_attr(o, "inputs", buf))
            return -1;
    }
    for (int i = 0; i < NSPECS; i++)
        if (attr_specs[i].op == n->op && xw_op_attr(o, id, n, &attr_specs[i]))
            return -1;
    return xw_end(o);
}

static int xw_graph(xml_out *o, const edm_graph *g)
{
    if (xmlTextWriterSetIndent(o->w, 1) < 0 || xmlTextWriterSetIndentString(o->w, BAD_CAST "  ") < 0 ||
        xmlTextWriterStartDocument(o->w, NULL, "UTF-8", NULL) < 0)
        return writer_failed(o);
    if (xw_start(o, "edmc-ir") || xw_attr(o, "version", "1") || xw_start(o, "files"))
        return -1;
    for (int i = 0; i < edm_graph_file_count(g); i++)
        if (xw_start(o, "file") || xw_attr_int(o, "index", i) ||
            xw_attr_string(o, -1, "path", edm_graph_file(g, i)) || xw_end(o))
            return -1;
    if (xw_end(o) || xw_start(o, "nodes"))
        return -1;
    for (int id = 0; id < edm_graph_count(g); id++)
        if (xw_node(o, g, id))
            return -1;
    if (xw_end(o))
        return -1;
    if (edm_graph_tap_count(g) > 0) {
        if (xw_start(o, "taps"))
            return -1;
        for (int i = 0; i < edm_graph_tap_count(g); i++)
            if (xw_start(o, "tap") || xw_attr_string(o, -1, "name", edm_graph_tap_name(g, i)) ||
                xw_attr_int(o, "node", edm_graph_tap_node(g, i)) || xw_end(o))
                return -1;
        if (xw_end(o))
            return -1;
    }
    if (xw_end(o))
        return -1;
    return xmlTextWriterEndDocument(o->w) < 0 ? writer_failed(o) : 0;
}

int edm_ir_write_xml(const edm_graph *g, FILE *out, edm_status *st)
{
    xmlBufferPtr buf = xmlBufferCreate();
    if (!buf)
        return edm_nomem(st);
    xml_out o = {xmlNewTextWriterMemory(buf, 0), st};
    if (!o.w) {
        xmlBufferFree(buf);
        return edm_nomem(st);
    }
    int rc = xw_graph(&o, g);
    xmlFreeTextWriter(o.w); /* flushes into buf */
    if (rc == 0) {
        size_t len = (size_t)xmlBufferLength(buf);
        if (fwrite(xmlBufferContent(buf), 1, len, out) != len || fflush(out) != 0)
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "writing the IR XML failed");
    }
    xmlBufferFree(buf);
    return rc;
}

/* ------------------------------------------------------------------ reader */

typedef struct {
    const char *name; /* the document's name, for messages */
    edm_status *st;
    edm_graph *g;
} xml_in;

static int fail_at(xml_in *r, xmlNodePtr x, int id, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "<name>:<line>: node <id>: <why>" (no node part when id < 0). */
static int fail_at(xml_in *r, xmlNodePtr x, int id, const char *fmt, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    long line = x ? xmlGetLineNo(x) : 0;
    if (id >= 0)
        return edm_fail(r->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s:%ld: node %d: %s", r->name, line, id, why);
    return edm_fail(r->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s:%ld: %s", r->name, line, why);
}

/* The attributes of one element, copied out of the tree. */
#define MAX_XATTRS 24

typedef struct {
    int n;
    struct {
        const char *key;
        xmlChar *value;
    } a[MAX_XATTRS];
} attr_list;

static void attrs_free(attr_list *l)
{
    for (int i = 0; i < l->n; i++)
        xmlFree(l->a[i].value);
    l->n = 0;
}

static int attrs_collect(xml_in *r, xmlNodePtr x, int id, attr_list *l)
{
    for (xmlAttrPtr a = x->properties; a; a = a->next) {
        if (a->ns)
            return fail_at(r, x, id, "unexpected attribute '%s:%s'", (const char *)a->ns->prefix, (const char *)a->name);
        if (l->n == MAX_XATTRS)
            return fail_at(r, x, id, "too many attributes");
        xmlChar *v = a->children ? xmlNodeListGetString(x->doc, a->children, 1) : xmlStrdup(BAD_CAST "");
        if (!v)
            v = xmlStrdup(BAD_CAST "");
        if (!v)
            return edm_nomem(r->st);
        l->a[l->n].key = (const char *)a->name;
        l->a[l->n].value = v;
        l->n++;
    }
    return 0;
}

static const char *attrs_get(const attr_list *l, const char *key)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->a[i].key, key) == 0)
            return (const char *)l->a[i].value;
    return NULL;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    if (!*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* underflow to a subnormal also sets ERANGE and is fine; no attribute of
     * a graph .edm can make is non-finite ("nan", "inf", 1e999) */
    if (*end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* A sep-separated list of integers in [lo, hi] ("N" for the batch dimension
 * when allowed); "" is the empty list.  On error, why says what is wrong. */
static int parse_int_list(const char *s, char sep, int64_t lo, int64_t hi, int allow_batch, int64_t *vals,
                          int max, int *count, char *why, size_t whysize)
{
    *count = 0;
    if (!*s)
        return 0;
    for (;;) {
        const char *end = strchr(s, sep);
        size_t len = end ? (size_t)(end - s) : strlen(s);
        char tok[32];
        if (len == 0 || len >= sizeof tok) {
            snprintf(why, whysize, "empty or overlong item");
            return -1;
        }
        memcpy(tok, s, len);
        tok[len] = '\0';
        if (*count == max) {
            snprintf(why, whysize, "more than %d items", max);
            return -1;
        }
        if (allow_batch && strcmp(tok, "N") == 0) {
            vals[*count] = EDM_DIM_BATCH;
        } else if (parse_i64(tok, lo, hi, &vals[*count]) != 0) {
            snprintf(why, whysize, "'%s' is not an integer in [%lld, %lld]", tok, (long long)lo, (long long)hi);
            return -1;
        }
        (*count)++;
        if (!end)
            return 0;
        s = end + 1;
    }
}

static int read_op_attr(xml_in *r, xmlNodePtr x, int id, const char *text, const attr_spec *s, edm_node *n)
{
    void *f = field_mut(n, s);
    char why[256] = "not a valid value";
    int64_t vals[32], v;
    int count, ok = 0;
    switch (s->kind) {
    case A_INT:
        ok = parse_i64(text, INT_MIN, INT_MAX, &v) == 0;
        if (ok)
            *(int *)f = (int)v;
        break;
    case A_BOOL:
        ok = strcmp(text, "0") == 0 || strcmp(text, "1") == 0;
        if (ok)
            *(int *)f = text[0] == '1';
        else
            snprintf(why, sizeof why, "expected 0 or 1");
        break;
    case A_I64:
        ok = parse_i64(text, INT64_MIN, INT64_MAX, &v) == 0;
        if (ok)
            *(int64_t *)f = v;
        break;
    case A_U64:
        ok = parse_u64(text, (uint64_t *)f) == 0;
        break;
    case A_DOUBLE:
        ok = parse_double(text, (double *)f) == 0;
        break;
    case A_INIT:
        ok = edm_init_from_name(text, (edm_init_kind *)f) == 0;
        if (!ok)
            snprintf(why, sizeof why, "unknown init kind");
        break;
    case A_AXES: {
        uint32_t axes = 0;
        ok = parse_int_list(text, ',', 0, 31, 0, vals, 32, &count, why, sizeof why) == 0;
        for (int i = 0; ok && i < count; i++) {
            if (axes & (1u << vals[i])) {
                snprintf(why, sizeof why, "axis %lld listed twice", (long long)vals[i]);
                ok = 0;
            }
            axes |= 1u << vals[i];
        }
        if (ok)
            *(uint32_t *)f = axes;
        break;
    }
    case A_PERM: {
        int rank = edm_graph_node(r->g, n->input[0])->shape.rank;
        ok = parse_int_list(text, ',', 0, EDM_MAX_RANK - 1, 0, vals, EDM_MAX_RANK, &count, why, sizeof why) == 0;
        if (ok && count != rank) {
            snprintf(why, sizeof why, "%d entries for an input of rank %d", count, rank);
            ok = 0;
        }
        for (int i = 0; ok && i < count; i++)
            ((int *)f)[i] = (int)vals[i];
        break;
    }
    }
    if (!ok)
        return fail_at(r, x, id, "bad %s '%s': %s", s->key, text, why);
    return 0;
}

static int read_loc(xml_in *r, xmlNodePtr x, int id, const char *text, edm_loc *loc)
{
    int64_t v[4];
    int count;
    char why[128];
    if (parse_int_list(text, ':', -1, INT_MAX, 0, v, 4, &count, why, sizeof why) != 0)
        return fail_at(r, x, id, "bad loc '%s': %s", text, why);
    if (count != 4 || v[1] < 0 || v[2] < 0 || v[3] < 0)
        return fail_at(r, x, id, "bad loc '%s': expected file:line:col:span", text);
    if (v[0] >= edm_graph_file_count(r->g))
        return fail_at(r, x, id, "loc file index %lld, but the file table has %d entries", (long long)v[0],
                       edm_graph_file_count(r->g));
    *loc = (edm_loc){(int)v[0], (int)v[1], (int)v[2], (int)v[3]};
    return 0;
}

static int read_inputs(xml_in *r, xmlNodePtr x, int id, const char *text, edm_node *n)
{
    int64_t v[8];
    int count;
    char why[128];
    int arity = edm_op_arity(n->op);
    if (!text && arity > 0)
        return fail_at(r, x, id, "%s needs %d inputs, but there is no 'inputs' attribute", edm_op_name(n->op), arity);
    if (!text)
        text = "";
    if (parse_int_list(text, ',', INT_MIN, INT_MAX, 0, v, 8, &count, why, sizeof why) != 0)
        return fail_at(r, x, id, "bad inputs '%s': %s", text, why);
    if (count != arity)
        return fail_at(r, x, id, "%s takes %d inputs, got %d", edm_op_name(n->op), arity, count);
    for (int i = 0; i < count; i++) {
        if (v[i] < 0 || v[i] >= id)
            return fail_at(r, x, id, "input %lld is not an earlier node", (long long)v[i]);
        n->input[i] = (int)v[i];
    }
    n->ninputs = count;
    return 0;
}

static int read_shape(xml_in *r, xmlNodePtr x, int id, const char *text, edm_shape *s)
{
    int64_t v[EDM_MAX_RANK];
    char why[128];
    /* as in .edm: every dimension at least 1 (a zero-size tensor is no tensor) */
    if (parse_int_list(text, ',', 1, (int64_t)1 << 40, 1, v, EDM_MAX_RANK, &s->rank, why, sizeof why) != 0)
        return fail_at(r, x, id, "bad shape '%s': %s", text, why);
    for (int i = 0; i < s->rank; i++)
        s->dim[i] = v[i];
    return 0;
}

/* Re-infers the node and checks the file's shape and dtype agree. */
static int check_inferred(xml_in *r, xmlNodePtr x, int id, const edm_node *n)
{
    edm_node copy = *n;
    edm_status tmp;
    edm_status_init(&tmp);
    if (edm_infer_node(r->g, &copy, &tmp) != 0)
        return fail_at(r, x, id, "%s", tmp.msg);
    if (!edm_shape_equal(&copy.shape, &n->shape)) {
        char a[128], b[128];
        return fail_at(r, x, id, "shape %s in the file, but %s gives %s", edm_shape_str(&n->shape, a, sizeof a),
                       edm_op_name(n->op), edm_shape_str(&copy.shape, b, sizeof b));
    }
    if (copy.dtype != n->dtype)
        return fail_at(r, x, id, "dtype %s in the file, but %s gives %s", edm_dtype_name(n->dtype),
                       edm_op_name(n->op), edm_dtype_name(copy.dtype));
    return 0;
}

static int read_node_attrs(xml_in *r, xmlNodePtr x, int id, const attr_list *l, edm_node *n)
{
    const char *s = attrs_get(l, "id");
    int64_t v;
    if (!s)
        return fail_at(r, x, id, "missing attribute 'id'");
    if (parse_i64(s, INT_MIN, INT_MAX, &v) != 0 || v != id)
        return fail_at(r, x, id, "id '%s' out of order: ids must be 0, 1, 2, ... (expected %d)", s, id);
    if (!(s = attrs_get(l, "op")))
        return fail_at(r, x, id, "missing attribute 'op'");
    if (edm_op_from_name(s, &n->op) != 0)
        return fail_at(r, x, id, "unknown op '%s'", s);
    for (int i = 0; i < l->n; i++)
        if (!is_common_attr(l->a[i].key) && !find_spec(n->op, l->a[i].key))
            return fail_at(r, x, id, "unexpected attribute '%s' for %s", l->a[i].key, edm_op_name(n->op));
    if (!(s = attrs_get(l, "dtype")))
        return fail_at(r, x, id, "missing attribute 'dtype'");
    if (edm_dtype_from_name(s, &n->dtype) != 0)
        return fail_at(r, x, id, "unknown dtype '%s'", s);
    if (!(s = attrs_get(l, "shape")))
        return fail_at(r, x, id, "missing attribute 'shape'");
    if (read_shape(r, x, id, s, &n->shape) != 0)
        return -1;
    n->name = attrs_get(l, "name");
    n->scope = attrs_get(l, "scope");
    n->origin = attrs_get(l, "origin");
    if ((s = attrs_get(l, "loc")) && read_loc(r, x, id, s, &n->loc) != 0)
        return -1;
    if (read_inputs(r, x, id, attrs_get(l, "inputs"), n) != 0)
        return -1;
    for (int i = 0; i < NSPECS; i++) {
        if (attr_specs[i].op != n->op)
            continue;
        if (!(s = attrs_get(l, attr_specs[i].key)))
            return fail_at(r, x, id, "%s needs attribute '%s'", edm_op_name(n->op), attr_specs[i].key);
        if (read_op_attr(r, x, id, s, &attr_specs[i], n) != 0)
            return -1;
    }
    return check_inferred(r, x, id, n);
}

static int read_node(xml_in *r, xmlNodePtr x, int id)
{
    attr_list l = {0};
    edm_node n;
    memset(&n, 0, sizeof n);
    n.loc = EDM_NO_LOC;
    int rc = attrs_collect(r, x, id, &l);
    if (rc == 0)
        rc = read_node_attrs(r, x, id, &l, &n);
    if (rc == 0 && edm_graph_add(r->g, &n, r->st) < 0)
        rc = -1;
    attrs_free(&l); /* after edm_graph_add: the node's strings point into l */
    return rc;
}

static int is_element(xmlNodePtr x, const char *name)
{
    return x->type == XML_ELEMENT_NODE && xmlStrcmp(x->name, BAD_CAST name) == 0;
}

static int read_files(xml_in *r, xmlNodePtr files)
{
    int index = 0;
    for (xmlNodePtr x = files->children; x; x = x->next) {
        if (x->type != XML_ELEMENT_NODE)
            continue;
        if (!is_element(x, "file"))
            return fail_at(r, x, -1, "unexpected element <%s> in <files>", (const char *)x->name);
        attr_list l = {0};
        int rc = attrs_collect(r, x, -1, &l);
        const char *idx = attrs_get(&l, "index"), *path = attrs_get(&l, "path");
        int64_t v;
        if (rc == 0 && (!idx || parse_i64(idx, 0, INT_MAX, &v) != 0 || v != index))
            rc = fail_at(r, x, -1, "file index '%s' out of order (expected %d)", idx ? idx : "", index);
        if (rc == 0 && !path)
            rc = fail_at(r, x, -1, "file %d has no path", index);
        if (rc == 0) {
            int got = edm_graph_add_file(r->g, path, r->st);
            if (got >= 0 && got != index)
                rc = fail_at(r, x, -1, "file %d repeats the path of file %d", index, got);
            else if (got < 0)
                rc = -1;
        }
        attrs_free(&l);
        if (rc != 0)
            return -1;
        index++;
    }
    return 0;
}

static int read_nodes(xml_in *r, xmlNodePtr nodes)
{
    int id = 0;
    for (xmlNodePtr x = nodes->children; x; x = x->next) {
        if (x->type != XML_ELEMENT_NODE)
            continue;
        if (!is_element(x, "node"))
            return fail_at(r, x, -1, "unexpected element <%s> in <nodes>", (const char *)x->name);
        if (id == INT_MAX)
            return fail_at(r, x, -1, "too many nodes");
        if (read_node(r, x, id) != 0)
            return -1;
        id++;
    }
    return 0;
}

static int read_taps(xml_in *r, xmlNodePtr taps)
{
    for (xmlNodePtr x = taps->children; x; x = x->next) {
        if (x->type != XML_ELEMENT_NODE)
            continue;
        if (!is_element(x, "tap"))
            return fail_at(r, x, -1, "unexpected element <%s> in <taps>", (const char *)x->name);
        attr_list l = {0};
        int rc = attrs_collect(r, x, -1, &l);
        const char *name = attrs_get(&l, "name"), *node = attrs_get(&l, "node");
        int64_t v = -1;
        if (rc == 0 && (!name || !name[0]))
            rc = fail_at(r, x, -1, "tap without a name");
        if (rc == 0 && (!node || parse_i64(node, 0, (int64_t)edm_graph_count(r->g) - 1, &v) != 0))
            rc = fail_at(r, x, -1, "tap '%s' refers to node '%s', which does not exist", name ? name : "",
                         node ? node : "");
        if (rc == 0)
            rc = edm_graph_add_tap(r->g, name, (int)v, r->st);
        attrs_free(&l);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int read_doc(xml_in *r, xmlDocPtr doc)
{
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!root || !is_element(root, "edmc-ir"))
        return fail_at(r, root, -1, "the root element is <%s>, expected <edmc-ir>", root ? (const char *)root->name : "");
    xmlChar *version = xmlGetProp(root, BAD_CAST "version");
    int ok = version && xmlStrcmp(version, BAD_CAST "1") == 0;
    if (!ok) {
        fail_at(r, root, -1, "unsupported version '%s' (expected 1)", version ? (const char *)version : "");
        xmlFree(version);
        return -1;
    }
    xmlFree(version);
    int seen_files = 0, seen_nodes = 0, seen_taps = 0;
    for (xmlNodePtr x = root->children; x; x = x->next) {
        if (x->type != XML_ELEMENT_NODE)
            continue;
        if (is_element(x, "files") && !seen_files && !seen_nodes) {
            seen_files = 1;
            if (read_files(r, x) != 0)
                return -1;
        } else if (is_element(x, "nodes") && !seen_nodes) {
            seen_nodes = 1;
            if (read_nodes(r, x) != 0)
                return -1;
        } else if (is_element(x, "taps") && seen_nodes && !seen_taps) {
            seen_taps = 1;
            if (read_taps(r, x) != 0)
                return -1;
        } else {
            return fail_at(r, x, -1, "unexpected element <%s> in <edmc-ir>", (const char *)x->name);
        }
    }
    if (!seen_nodes)
        return fail_at(r, root, -1, "no <nodes> element");
    return 0;
}

/* libxml2's message for the last error, without its trailing newline. */
static void last_xml_error(xmlParserCtxtPtr ctxt, char *buf, size_t size, int *line)
{
    xmlErrorPtr e = xmlCtxtGetLastError(ctxt);
    *line = e ? e->line : 0;
    snprintf(buf, size, "%s", e && e->message ? e->message : "unknown error");
    size_t len = strlen(buf);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = '\0';
}

edm_graph *edm_ir_read_xml_memory(const char *data, size_t size, const char *name, edm_status *st)
{
    xml_in r = {name ? name : "<memory>", st, NULL};
    if (size > INT_MAX) {
        edm_fail(st, EDM_ERR_LIMIT, EDM_NO_LOC, "%s: too large for an IR file", r.name);
        return NULL;
    }
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        edm_nomem(st);
        return NULL;
    }
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, data ? data : "", (int)size, NULL, NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_BIG_LINES);
    if (!doc) {
        char why[512];
        int line;
        last_xml_error(ctxt, why, sizeof why, &line);
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s:%d: not well-formed XML: %s", r.name, line, why);
        xmlFreeParserCtxt(ctxt);
        return NULL;
    }
    r.g = edm_graph_new();
    int rc = r.g ? read_doc(&r, doc) : edm_nomem(st);
    xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    if (rc != 0) {
        edm_graph_free(r.g);
        return NULL;
    }
    return r.g;
}

/* Reads the whole file; NULL with st set on failure. */
static char *slurp(const char *path, size_t *size, edm_status *st)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t used = 0, cap = 65536;
    char *buf = malloc(cap);
    while (buf) {
        used += fread(buf + used, 1, cap - used, f);
        if (used < cap || cap > (size_t)INT_MAX)
            break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    if (!buf) {
        fclose(f);
        edm_nomem(st);
        return NULL;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot read %s", path);
        return NULL;
    }
    *size = used;
    return buf;
}

edm_graph *edm_ir_read_xml_file(const char *path, edm_status *st)
{
    size_t size;
    char *data = slurp(path, &size, st);
    if (!data)
        return NULL;
    edm_graph *g = edm_ir_read_xml_memory(data, size, path, st);
    free(data);
    return g;
}
