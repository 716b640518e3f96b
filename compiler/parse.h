/* The parser's entry points.  Syntax errors are collected (several per run,
 * thanks to error recovery at statement boundaries), each with its position. */
#ifndef EDMC_PARSE_H
#define EDMC_PARSE_H

#include "compiler/arena.h"
#include "compiler/ast.h"
#include "compiler/source.h"
#include "compiler/status.h"

#define EDM_MAX_SYNTAX_ERRORS 16
/* Depth of the syntax tree (operator chains, index chains, nested statements). */
#define EDM_MAX_TREE_DEPTH 1000

typedef struct {
    edm_arena *arena;
    const edm_source *src;
    int file;
    int start_token; /* which grammar to parse: a program or one expression */
    ast *result;
    int nerrors;     /* errors seen (may exceed the stored ones) */
    edm_status errors[EDM_MAX_SYNTAX_ERRORS];
    int depth;       /* nesting depth of brackets, to refuse pathological input */
} edm_parse_ctx;

/* Parses a whole file of the source manager. Returns the number of syntax
 * errors (0: *out is the statement chain, possibly NULL for an empty file). */
int edm_parse_program(edm_arena *arena, const edm_sources *src, int file, ast **out, edm_parse_ctx *ctx);
/* Parses one expression (a -D value). */
int edm_parse_expression(edm_arena *arena, const edm_sources *src, int file, ast **out, edm_parse_ctx *ctx);

#endif
