#include "config.h"

#include "compiler/ast.h"

ast *ast_new(edm_arena *arena, ast_kind kind, edm_loc loc)
{
    ast *n = edm_arena_alloc(arena, sizeof *n);
    if (n) {
        n->kind = kind;
        n->loc = loc;
    }
    return n;
}

const char *ast_op_text(ast_op op)
{
    static const char *const text[] = {"+", "-", "*", "/", "//", "%", "**", "==", "!=", "<",
                                       "<=", ">", ">=", "and", "or", "not", "-", "in"};
    return (unsigned)op < sizeof text / sizeof text[0] ? text[op] : "?";
}

const char *ast_kind_name(ast_kind k)
{
    static const char *const names[] = {
        "number", "string", "bool", "none", "list", "name", "call", "argument", "labeled call",
        "unary", "binary", "index", "slice", "method call", "conditional", "assignment",
        "expression", "if", "for", "return", "input", "output", "param", "import", "block",
        "parameter", "assert"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}
