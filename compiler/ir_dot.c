#include "config.h"

#include "compiler/ir_io.h"

/* Writes s inside a double-quoted dot string. */
static void put_escaped(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

static const char *node_style(edm_op op)
{
    switch (op) {
    case EDM_OP_INPUT:
        return "shape=box, style=filled, fillcolor=lightblue";
    case EDM_OP_OUTPUT:
        return "shape=box, style=filled, fillcolor=palegreen";
    case EDM_OP_PARAM:
    case EDM_OP_BUFFER:
    case EDM_OP_CONST:
        return "shape=box, style=filled, fillcolor=grey85, fontcolor=grey30";
    default:
        return "shape=ellipse";
    }
}

static void write_node(int id, const edm_node *n, FILE *out)
{
    char shape[128];
    if (n->shape.rank >= 0 && n->shape.rank <= EDM_MAX_RANK)
        edm_shape_str(&n->shape, shape, sizeof shape);
    else
        shape[0] = '\0';
    fprintf(out, "  n%d [label=\"%%%d %s", id, id, edm_op_name(n->op));
    if (n->name) {
        fputs("\\n", out);
        put_escaped(out, n->name);
    }
    fprintf(out, "\\n%s%s\", %s];\n", edm_dtype_name(n->dtype), shape, node_style(n->op));
    for (int i = 0; i < n->ninputs && i < EDM_MAX_INPUTS; i++) {
        fprintf(out, "  n%d -> n%d", n->input[i], id);
        if (n->ninputs > 1)
            fprintf(out, " [label=\"%d\"]", i);
        fputs(";\n", out);
    }
}

int edm_ir_write_dot(const edm_graph *g, FILE *out, edm_status *st)
{
    fputs("digraph edmc {\n  node [fontname=\"monospace\", fontsize=10];\n  edge [fontsize=8];\n", out);
    int count = edm_graph_count(g);
    for (int id = 0; id < count; id++)
        write_node(id, edm_graph_node(g, id), out);
    fputs("}\n", out);
    if (fflush(out) != 0 || ferror(out))
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "writing the IR graph (dot) failed");
    return 0;
}
