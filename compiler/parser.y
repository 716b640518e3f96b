%{
/* The .edm grammar (docs/language.md has it in prose).  Pure, with locations;
 * every AST node is allocated in the context's arena, so error recovery needs
 * no %destructor: nothing is freed until the whole parse is dropped. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "compiler/parse.h"
%}

%code requires {
#include "compiler/ast.h"
typedef void *yyscan_t;
}

%code provides {
int edm_yylex(EDM_YYSTYPE *yylval, EDM_YYLTYPE *yylloc, yyscan_t scanner);
}

%define api.prefix {edm_yy}
%define api.pure full
%define parse.error detailed
%locations
%expect 0
%lex-param {yyscan_t scanner}
%parse-param {yyscan_t scanner} {edm_parse_ctx *ctx}

%code {
/* The scanner's entry points (flex writes no header in this build). */
typedef struct yy_buffer_state *YY_BUFFER_STATE;
int edm_yylex_init_extra(edm_parse_ctx *extra, yyscan_t *scanner);
YY_BUFFER_STATE edm_yy_scan_bytes(const char *bytes, int len, yyscan_t scanner);
void edm_yy_delete_buffer(YY_BUFFER_STATE b, yyscan_t scanner);
int edm_yylex_destroy(yyscan_t scanner);

static edm_loc mkloc(const EDM_YYLTYPE *l, const edm_parse_ctx *ctx)
{
    int span = l->last_line == l->first_line ? l->last_column - l->first_column : 1;
    return (edm_loc){ctx->file, l->first_line, l->first_column, span > 0 ? span : 1};
}

static void edm_yyerror(EDM_YYLTYPE *l, yyscan_t scanner, edm_parse_ctx *ctx, const char *msg)
{
    (void)scanner;
    if (ctx->nerrors < EDM_MAX_SYNTAX_ERRORS)
        edm_fail(&ctx->errors[ctx->nerrors], EDM_ERR_SYNTAX, mkloc(l, ctx), "%s", msg);
    ctx->nerrors++;
}

#define NEW(var, kind, l)                                          \
    do {                                                           \
        (var) = ast_new(ctx->arena, (kind), mkloc(&(l), ctx));     \
        if (!(var)) {                                              \
            edm_yyerror(&(l), scanner, ctx, "out of memory");      \
            YYABORT;                                               \
        }                                                          \
    } while (0)

/* Appends b to the chain a.  The head remembers its last node, so building a
 * chain of n statements, list items or arguments takes O(n), not O(n^2). */
static ast *chain(ast *a, ast *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    ast *t = a->tail ? a->tail : a;
    while (t->next)
        t = t->next;
    t->next = b;
    t = b->tail ? b->tail : b;
    while (t->next)
        t = t->next;
    a->tail = t;
    return a;
}

/* The depth of the tree under a node (its children's chains included), so
 * that a long operator chain (`1+1+...`), a long index chain or deeply nested
 * statements are refused here with a position, before any recursive pass
 * (the elaborator, printers) can exhaust the C stack. */
static int chain_depth(const ast *c)
{
    int m = 0;
    for (; c; c = c->next)
        if (c->depth > m)
            m = c->depth;
    return m;
}

static int set_depth(ast *n, edm_parse_ctx *ctx)
{
    int d = chain_depth(n->a);
    int db = chain_depth(n->b), dc = chain_depth(n->c);
    if (db > d)
        d = db;
    if (dc > d)
        d = dc;
    n->depth = d + 1;
    if (n->depth <= EDM_MAX_TREE_DEPTH)
        return 0;
    if (ctx->nerrors < EDM_MAX_SYNTAX_ERRORS)
        edm_fail(&ctx->errors[ctx->nerrors], EDM_ERR_LIMIT, n->loc,
                 "expression or statements nested deeper than %d levels (split it up, or use a loop)",
                 EDM_MAX_TREE_DEPTH);
    ctx->nerrors++;
    return -1;
}

#define DEEP(var)                        \
    do {                                 \
        if (set_depth((var), ctx) != 0)  \
            YYABORT;                     \
    } while (0)

/* Refuse absurd nesting before it can exhaust the C stack in later passes. */
#define EDM_MAX_NESTING 200
#define ENTER(l)                                                           \
    do {                                                                   \
        if (++ctx->depth > EDM_MAX_NESTING) {                              \
            edm_yyerror(&(l), scanner, ctx, "nesting deeper than 200 levels"); \
            YYABORT;                                                       \
        }                                                                  \
    } while (0)
}

%union {
    struct { double value; int is_int; } num;
    const char *str;
    ast *node;
}

%token START_PROGRAM START_EXPR
%token <num> NUM "number"
%token <str> IDENT "name" STR "string"
%token BLOCK "block" PARAM "param" INPUT "input" OUTPUT "output" IMPORT "import"
%token IF "if" THEN "then" ELSE "else" FOR "for" IN "in" RETURN "return" ASSERT "assert"
%token TRUE "true" FALSE "false" NONE "none" AND "and" OR "or" NOT "not"
%token EQ "==" NE "!=" LE "<=" GE ">=" IDIV "//" POW "**"

%type <node> items item stmts stmt else_part block_def param_list param_decls param_decl
%type <node> expr primary postfix args arg_list arg expr_list exprs_ne list call label

%precedence COND
%left OR
%left AND
%precedence NOT
%nonassoc EQ NE '<' LE '>' GE IN
%left '+' '-'
%left '*' '/' IDIV '%'
%precedence UMINUS
%right POW

%start start

%%

start
    : START_PROGRAM items        { ctx->result = $2; }
    | START_EXPR expr            { ctx->result = $2; }
    ;

items
    : %empty                     { $$ = NULL; }
    | items item                 { $$ = chain($1, $2); }
    ;

item
    : stmt                       { $$ = $1; }
    | block_def                  { $$ = $1; }
    | IMPORT expr ';'            { NEW($$, AST_IMPORT, @2); $$->a = $2; DEEP($$); }
    ;

block_def
    : BLOCK IDENT '(' param_list ')' '{' stmts '}'
                                 { NEW($$, AST_BLOCK, @2); $$->str = $2; $$->a = $4; $$->b = $7; DEEP($$); }
    ;

/* tensor parameters ; compile-time parameters (the ';' is optional) */
param_list
    : %empty                     { $$ = NULL; }
    | param_decls                { $$ = $1; }
    | param_decls ';'            { for (ast *p = $1; p; p = p->next) p->num = 1; $$ = $1; }
    | param_decls ';' param_decls
                                 { for (ast *p = $1; p; p = p->next) p->num = 1;
                                   for (ast *p = $3; p; p = p->next) p->num = 2; $$ = chain($1, $3); }
    | ';' param_decls            { for (ast *p = $2; p; p = p->next) p->num = 2; $$ = $2; }
    ;

param_decls
    : param_decl                 { $$ = $1; }
    | param_decls ',' param_decl { $$ = chain($1, $3); }
    ;

param_decl
    : IDENT                      { NEW($$, AST_PARAMDECL, @1); $$->str = $1; DEEP($$); }
    | IDENT '=' expr             { NEW($$, AST_PARAMDECL, @1); $$->str = $1; $$->a = $3; DEEP($$); }
    ;

stmts
    : %empty                     { $$ = NULL; }
    | stmts stmt                 { $$ = chain($1, $2); }
    ;

stmt
    : IDENT '=' expr ';'         { NEW($$, AST_ASSIGN, @1); $$->str = $1; $$->a = $3; DEEP($$); }
    | expr ';'                   { NEW($$, AST_EXPR, @1); $$->a = $1; DEEP($$); }
    | IF expr '{' stmts '}' else_part
                                 { NEW($$, AST_IF, @1); $$->a = $2; $$->b = $4; $$->c = $6; DEEP($$); }
    | FOR IDENT IN expr '{' stmts '}'
                                 { NEW($$, AST_FOR, @2); $$->str = $2; $$->a = $4; $$->b = $6; DEEP($$); }
    | RETURN expr ';'            { NEW($$, AST_RETURN, @1); $$->a = $2; DEEP($$); }
    | RETURN ';'                 { NEW($$, AST_RETURN, @1); DEEP($$); }
    | PARAM IDENT '=' expr ';'   { NEW($$, AST_PARAM, @2); $$->str = $2; $$->a = $4; DEEP($$); }
    | INPUT IDENT ':' expr ';'   { NEW($$, AST_INPUT, @2); $$->str = $2; $$->a = $4; DEEP($$); }
    | OUTPUT IDENT '=' expr ';'  { NEW($$, AST_OUTPUT, @2); $$->str = $2; $$->a = $4; DEEP($$); }
    | ASSERT expr ';'            { NEW($$, AST_ASSERT, @1); $$->a = $2; DEEP($$); }
    | ASSERT expr ',' expr ';'   { NEW($$, AST_ASSERT, @1); $$->a = $2; $$->b = $4; DEEP($$); }
    | error ';'                  { $$ = NULL; yyerrok; }
    | error '}'                  { $$ = NULL; yyerrok; }
    ;

else_part
    : %empty                     { $$ = NULL; }
    | ELSE '{' stmts '}'         { NEW($$, AST_IF, @1); $$->a = NULL; $$->b = $3; DEEP($$); }
    | ELSE IF expr '{' stmts '}' else_part
                                 { NEW($$, AST_IF, @2); $$->a = $3; $$->b = $5; $$->c = $7; DEEP($$); }
    ;

expr
    : postfix                    { $$ = $1; }
    | expr '+' expr              { NEW($$, AST_BINARY, @2); $$->op = OP_ADD; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr '-' expr              { NEW($$, AST_BINARY, @2); $$->op = OP_SUB; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr '*' expr              { NEW($$, AST_BINARY, @2); $$->op = OP_MUL; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr '/' expr              { NEW($$, AST_BINARY, @2); $$->op = OP_DIV; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr IDIV expr             { NEW($$, AST_BINARY, @2); $$->op = OP_IDIV; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr '%' expr              { NEW($$, AST_BINARY, @2); $$->op = OP_MOD; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr POW expr              { NEW($$, AST_BINARY, @2); $$->op = OP_POW; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr EQ expr               { NEW($$, AST_BINARY, @2); $$->op = OP_EQ; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr NE expr               { NEW($$, AST_BINARY, @2); $$->op = OP_NE; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr '<' expr              { NEW($$, AST_BINARY, @2); $$->op = OP_LT; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr LE expr               { NEW($$, AST_BINARY, @2); $$->op = OP_LE; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr '>' expr              { NEW($$, AST_BINARY, @2); $$->op = OP_GT; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr GE expr               { NEW($$, AST_BINARY, @2); $$->op = OP_GE; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr IN expr               { NEW($$, AST_BINARY, @2); $$->op = OP_IN; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr AND expr              { NEW($$, AST_BINARY, @2); $$->op = OP_AND; $$->a = $1; $$->b = $3; DEEP($$); }
    | expr OR expr               { NEW($$, AST_BINARY, @2); $$->op = OP_OR; $$->a = $1; $$->b = $3; DEEP($$); }
    | NOT expr                   { NEW($$, AST_UNARY, @1); $$->op = OP_NOT; $$->a = $2; DEEP($$); }
    | '-' expr %prec UMINUS      { NEW($$, AST_UNARY, @1); $$->op = OP_NEG; $$->a = $2; DEEP($$); }
    | IF expr THEN expr ELSE expr %prec COND
                                 { NEW($$, AST_COND, @1); $$->b = $2; $$->a = $4; $$->c = $6; DEEP($$); }
    ;

postfix
    : primary                    { $$ = $1; }
    | postfix '[' expr ']'       { NEW($$, AST_INDEX, @2); $$->a = $1; $$->b = $3; DEEP($$); }
    | postfix '.' IDENT '(' args ')'
                                 { NEW($$, AST_METHOD, @3); $$->a = $1; $$->str = $3; $$->c = $5; DEEP($$); }
    ;

primary
    : NUM                        { NEW($$, AST_NUM, @1); $$->num = $1.value; $$->is_int = $1.is_int; DEEP($$); }
    | STR                        { NEW($$, AST_STR, @1); $$->str = $1; DEEP($$); }
    | TRUE                       { NEW($$, AST_BOOL, @1); $$->num = 1; DEEP($$); }
    | FALSE                      { NEW($$, AST_BOOL, @1); $$->num = 0; DEEP($$); }
    | NONE                       { NEW($$, AST_NONE, @1); DEEP($$); }
    | IDENT                      { NEW($$, AST_IDENT, @1); $$->str = $1; DEEP($$); }
    | call                       { $$ = $1; }
    | label ':' call             { NEW($$, AST_LABELED, @1); $$->a = $1; $$->b = $3; DEEP($$); }
    | list                       { $$ = $1; }
    | '(' { ENTER(@1); } expr ')' { ctx->depth--; $$ = $3; }
    ;

label
    : IDENT                      { NEW($$, AST_IDENT, @1); $$->str = $1; DEEP($$); }
    | STR                        { NEW($$, AST_STR, @1); $$->str = $1; DEEP($$); }
    ;

call
    : IDENT '(' { ENTER(@2); } args ')'
                                 { ctx->depth--; NEW($$, AST_CALL, @1); $$->str = $1; $$->a = $4; DEEP($$); }
    ;

list
    : '[' { ENTER(@1); } expr_list ']'
                                 { ctx->depth--; NEW($$, AST_LIST, @1); $$->a = $3; DEEP($$); }
    ;

expr_list
    : %empty                     { $$ = NULL; }
    | exprs_ne                   { $$ = $1; }
    | exprs_ne ','               { $$ = $1; }
    ;

exprs_ne
    : expr                       { $$ = $1; }
    | exprs_ne ',' expr          { $$ = chain($1, $3); }
    ;

args
    : %empty                     { $$ = NULL; }
    | arg_list                   { $$ = $1; }
    | arg_list ','               { $$ = $1; }
    ;

arg_list
    : arg                        { $$ = $1; }
    | arg_list ',' arg           { $$ = chain($1, $3); }
    ;

arg
    : expr                       { NEW($$, AST_ARG, @1); $$->a = $1; DEEP($$); }
    | IDENT '=' expr             { NEW($$, AST_ARG, @1); $$->str = $1; $$->a = $3; DEEP($$); }
    ;

%%

static int run_parse(edm_arena *arena, const edm_sources *src, int file, int start, ast **out, edm_parse_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->arena = arena;
    ctx->src = edm_sources_get(src, file);
    ctx->file = file;
    ctx->start_token = start;
    *out = NULL;
    if (!ctx->src) {
        edm_fail(&ctx->errors[0], EDM_ERR_INTERNAL, EDM_NO_LOC, "no source %d", file);
        return ctx->nerrors = 1;
    }
    yyscan_t scanner;
    if (edm_yylex_init_extra(ctx, &scanner) != 0) {
        edm_nomem(&ctx->errors[0]);
        return ctx->nerrors = 1;
    }
    YY_BUFFER_STATE buf = edm_yy_scan_bytes(ctx->src->text, (int)ctx->src->size, scanner);
    int rc = buf ? edm_yyparse(scanner, ctx) : 2;
    if (buf)
        edm_yy_delete_buffer(buf, scanner);
    edm_yylex_destroy(scanner);
    if (rc != 0 && ctx->nerrors == 0) {
        edm_fail(&ctx->errors[0], rc == 2 ? EDM_ERR_NOMEM : EDM_ERR_SYNTAX, EDM_NO_LOC,
                 rc == 2 ? "out of memory while parsing" : "syntax error");
        ctx->nerrors = 1;
    }
    if (ctx->nerrors == 0)
        *out = ctx->result;
    return ctx->nerrors;
}

int edm_parse_program(edm_arena *arena, const edm_sources *src, int file, ast **out, edm_parse_ctx *ctx)
{
    return run_parse(arena, src, file, START_PROGRAM, out, ctx);
}

int edm_parse_expression(edm_arena *arena, const edm_sources *src, int file, ast **out, edm_parse_ctx *ctx)
{
    return run_parse(arena, src, file, START_EXPR, out, ctx);
}
