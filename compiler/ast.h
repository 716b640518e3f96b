/* The syntax tree of a .edm file.  Every node carries its source position.
 * Nodes live in an arena owned by the caller of the parser; sequences
 * (statements, arguments, list items, block parameters) are `next` chains. */
#ifndef EDMC_AST_H
#define EDMC_AST_H

#include "compiler/arena.h"
#include "compiler/status.h"

typedef enum {
    /* expressions */
    AST_NUM,     /* num, is_int */
    AST_STR,     /* str (escapes resolved; {name} interpolated at elaboration) */
    AST_BOOL,    /* num = 0/1 */
    AST_NONE,
    AST_LIST,    /* a = first item */
    AST_IDENT,   /* str */
    AST_CALL,    /* str = callee, a = first argument (AST_ARG chain) */
    AST_ARG,     /* str = keyword or NULL, a = value */
    AST_LABELED, /* a = label (AST_IDENT or AST_STR), b = the call */
    AST_UNARY,   /* op, a */
    AST_BINARY,  /* op, a, b */
    AST_INDEX,   /* a[b] */
    AST_SLICE,   /* a[b:c], b/c may be NULL */
    AST_METHOD,  /* a.str(args = c) */
    AST_COND,    /* a if b else c: written `if b then a else c` */
    /* statements */
    AST_ASSIGN,  /* str = a */
    AST_EXPR,    /* a */
    AST_IF,      /* if a { b } else { c }  (c may be an AST_IF for `else if`) */
    AST_FOR,     /* for str in a { b } */
    AST_RETURN,  /* a may be NULL */
    AST_INPUT,   /* input str: a (shape list) [dtype c] */
    AST_OUTPUT,  /* output str = a */
    AST_PARAM,   /* param str = a (default) */
    AST_IMPORT,  /* import a (a string expression, resolved against the importing file) */
    AST_BLOCK,   /* block str(params = a: AST_PARAMDECL chain) { b } */
    AST_PARAMDECL, /* str, a = default or NULL; num: 1 tensor (before ';'), 2 compile-time (after), 0 either */
    AST_ASSERT,  /* assert a, b (message, may be NULL) */
} ast_kind;

typedef enum {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_IDIV, OP_MOD, OP_POW,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
    OP_AND, OP_OR, OP_NOT, OP_NEG, OP_IN,
} ast_op;

typedef struct ast ast;
struct ast {
    ast_kind kind;
    edm_loc loc;
    ast_op op;
    double num;
    int is_int;
    const char *str;
    ast *a, *b, *c;
    ast *next;
    ast *tail;  /* parser only: the last node of the chain this node heads */
    int depth;  /* parser only: height of the tree under this node */
};

ast *ast_new(edm_arena *arena, ast_kind kind, edm_loc loc);
const char *ast_op_text(ast_op op);
const char *ast_kind_name(ast_kind k);

#endif
