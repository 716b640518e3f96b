#include "config.h"

#include "compiler/ir_io.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* "{key=value, key=value}" after the operands; nothing when the op has none. */
typedef struct {
    FILE *out;
    int count;
} attr_list;

static void attr_put(attr_list *l, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void attr_put(attr_list *l, const char *key, const char *fmt, ...)
{
    va_list ap;
    fprintf(l->out, "%s%s=", l->count++ ? ", " : " {", key);
    va_start(ap, fmt);
    vfprintf(l->out, fmt, ap);
    va_end(ap);
}

static void attr_end(attr_list *l)
{
    if (l->count)
        fputc('}', l->out);
}

/* The shortest %g form that reads back as the same double. */
static const char *fmt_double(double v, char *buf, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

static void put_double(attr_list *l, const char *key, double v)
{
    char buf[40];
    attr_put(l, key, "%s", fmt_double(v, buf, sizeof buf));
}

static void put_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void write_attrs(const edm_node *n, FILE *out)
{
    attr_list l = {out, 0};
    switch (n->op) {
    case EDM_OP_CONST:
        put_double(&l, "value", n->attr.constant.value);
        break;
    case EDM_OP_PARAM:
    case EDM_OP_BUFFER:
        attr_put(&l, "init", "%s", edm_init_name(n->attr.init.kind));
        put_double(&l, "value", n->attr.init.value);
        put_double(&l, "scale", n->attr.init.scale);
        attr_put(&l, "seed", "%llu", (unsigned long long)n->attr.init.seed);
        if (n->attr.init.forced_wn)
            attr_put(&l, "forced_wn", "%d", 1);
        break;
    case EDM_OP_CLAMP:
        put_double(&l, "lo", n->attr.clamp.lo);
        put_double(&l, "hi", n->attr.clamp.hi);
        break;
    case EDM_OP_SUM:
    case EDM_OP_SUMSQ: {
        fprintf(out, " {axes=[");
        l.count = 1;
        int first = 1;
        for (int i = 0; i < 32; i++)
            if (n->attr.reduce.axes & (1u << i)) {
                fprintf(out, "%s%d", first ? "" : ", ", i);
                first = 0;
            }
        fputc(']', out);
        attr_put(&l, "keepdim", "%d", n->attr.reduce.keepdim);
        break;
    }
    case EDM_OP_CONV2D:
    case EDM_OP_CONV2D_BWD_DATA:
    case EDM_OP_CONV2D_BWD_WEIGHT:
        attr_put(&l, "stride", "%d", n->attr.conv.stride);
        attr_put(&l, "pad", "%d", n->attr.conv.pad);
        if (n->attr.conv.taps)
            attr_put(&l, "taps", "%d", n->attr.conv.taps);
        if (n->op == EDM_OP_CONV2D_BWD_DATA) {
            attr_put(&l, "in_h", "%lld", (long long)n->attr.conv.in_h);
            attr_put(&l, "in_w", "%lld", (long long)n->attr.conv.in_w);
        } else if (n->op == EDM_OP_CONV2D_BWD_WEIGHT) {
            attr_put(&l, "kernel", "%lld", (long long)n->attr.conv.kernel);
        }
        break;
    case EDM_OP_MATMUL:
        attr_put(&l, "trans_a", "%d", n->attr.matmul.trans_a);
        attr_put(&l, "trans_b", "%d", n->attr.matmul.trans_b);
        break;
    case EDM_OP_PERMUTE: {
        int rank = n->shape.rank >= 0 && n->shape.rank <= EDM_MAX_RANK ? n->shape.rank : 0;
        fprintf(out, " {perm=[");
        l.count = 1;
        for (int i = 0; i < rank; i++)
            fprintf(out, "%s%d", i ? ", " : "", n->attr.permute.perm[i]);
        fputc(']', out);
        break;
    }
    case EDM_OP_CONCAT:
        attr_put(&l, "axis", "%d", n->attr.concat.axis);
        break;
    case EDM_OP_SLICE:
        attr_put(&l, "axis", "%d", n->attr.slice.axis);
        attr_put(&l, "start", "%lld", (long long)n->attr.slice.start);
        attr_put(&l, "len", "%lld", (long long)n->attr.slice.len);
        break;
    case EDM_OP_SOFTMAX:
        attr_put(&l, "axis", "%d", n->attr.softmax.axis);
        break;
    case EDM_OP_DROPOUT:
        put_double(&l, "p", n->attr.dropout.p);
        if (n->attr.dropout.mask_id > 0)
            attr_put(&l, "mask_of", "%%%d", n->attr.dropout.mask_id);
        break;
    default:
        break;
    }
    attr_end(&l);
}

static void write_node(const edm_graph *g, int id, const edm_node *n, FILE *out)
{
    char shape[128];
    fprintf(out, "%%%d = %s", id, edm_op_name(n->op));
    if (n->name) {
        fputc(' ', out);
        put_quoted(out, n->name);
    }
    if (n->ninputs > 0) {
        fputc('(', out);
        for (int i = 0; i < n->ninputs && i < EDM_MAX_INPUTS; i++)
            fprintf(out, "%s%%%d", i ? ", " : "", n->input[i]);
        fputc(')', out);
    }
    write_attrs(n, out);
    if (n->shape.rank >= 0 && n->shape.rank <= EDM_MAX_RANK)
        edm_shape_str(&n->shape, shape, sizeof shape);
    else
        snprintf(shape, sizeof shape, "[rank %d?]", n->shape.rank);
    fprintf(out, " : %s%s  ", edm_dtype_name(n->dtype), shape);
    if (n->scope && n->scope[0])
        fprintf(out, "@%s ", n->scope);
    fprintf(out, "(%s)", n->origin ? n->origin : edm_op_name(n->op));
    if (n->loc.file >= 0) {
        const char *path = edm_graph_file(g, n->loc.file);
        if (path)
            fprintf(out, " %s:%d:%d", path, n->loc.line, n->loc.col);
        else
            fprintf(out, " <file %d>:%d:%d", n->loc.file, n->loc.line, n->loc.col);
    }
    fputc('\n', out);
}

int edm_ir_write_text(const edm_graph *g, FILE *out, edm_status *st)
{
    int count = edm_graph_count(g);
    for (int id = 0; id < count; id++)
        write_node(g, id, edm_graph_node(g, id), out);
    if (fflush(out) != 0 || ferror(out))
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "writing the IR text failed");
    return 0;
}
