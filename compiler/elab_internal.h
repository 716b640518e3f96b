/* Shared between elaborate.c (statements, expressions, calls) and builtins.c
 * (the built-in functions). Not part of the library's interface. */
#ifndef EDMC_ELAB_INTERNAL_H
#define EDMC_ELAB_INTERNAL_H

#include "compiler/ast.h"
#include "compiler/elaborate.h"
#include "compiler/value.h"

/* Resource limits, so that no program can hang or exhaust the machine. */
#define ELAB_MAX_CALL_DEPTH 64
#define ELAB_MAX_STEPS 20000000L
#define ELAB_MAX_NODES 4000000
#define ELAB_MAX_LIST 1000000
#define ELAB_ARENA_LIMIT ((size_t)1 << 30)
/* Expressions, statements and block calls nested at once while elaborating
 * (each level is a few C stack frames). */
#define ELAB_MAX_NESTING 1500

/* A name -> pointer index in the arena (open addressing, FNV-1a), so that
 * name lookups stay O(1) with 100,000 globals, blocks or tensor names. */
/* Files one compilation may run (the model and everything it imports). */
#define ELAB_MAX_FILES 256

typedef struct {
    const char *key;
    void *val;
} sym_slot;

typedef struct {
    sym_slot *slots;
    size_t cap, count;
} symtab;

void *sym_get(const symtab *t, const char *key);
int sym_put(edm_arena *a, symtab *t, const char *key, void *val); /* 0 or -1 (out of memory) */

typedef struct binding {
    const char *name;
    value v;
    edm_loc loc;
    struct binding *next;
} binding;

typedef struct {
    binding *vars; /* newest first */
    symtab index;  /* name -> binding */
} env;

typedef struct block_def {
    const ast *def;
    struct block_def *next;
} block_def;

typedef struct param_entry {
    const char *name;
    value v;
    struct param_entry *next;
} param_entry;

typedef struct override {
    const char *name;
    value v;
    edm_loc loc;
    int used;
    struct override *next;
} override;

typedef struct name_entry { /* parameter/buffer names made so far, for duplicates */
    const char *name;
    edm_loc loc;
    struct name_entry *next;
} name_entry;

typedef struct {
    edm_sources *src;
    edm_arena *arena;
    edm_graph *graph;
    edm_status *st;
    env globals;
    env *locals; /* NULL at top level */
    block_def *blocks;
    symtab block_index; /* name -> block_def */
    param_entry *params;
    symtab param_index; /* name -> param_entry */
    override *overrides;
    name_entry *names;
    symtab name_index;  /* name -> name_entry */
    symtab io_index;    /* "i:NAME" / "o:NAME" -> the input/output node (edm_node index + 1) */
    symtab tap_index;   /* block-call labels already tapped */
    const char *scope;  /* label path, "" at top level */
    const char *origin; /* innermost block's name */
    int depth;
    int nesting; /* eval/exec recursion, bounded by ELAB_MAX_NESTING */
    long steps;
    int returning;
    value retval;
    int importing[64]; /* files being imported, for cycles */
    int nimporting;
    int ran[ELAB_MAX_FILES]; /* files this compilation ran (the main one and its imports): each runs once */
    int nran;
} elab;

/* Builtins: name lookup and call.  args: evaluated positional values,
 * kwnames/kwvals: keyword arguments.  label: the call's label or NULL. */
typedef struct {
    int npos;
    value pos[8];
    edm_loc pos_loc[8];
    int nkw;
    const char *kwname[8];
    value kw[8];
    edm_loc kw_loc[8];
} call_args;

int builtin_exists(const char *name);
/* The builtin names, for "did you mean". */
int builtin_count(void);
const char *builtin_name(int i);
int builtin_call(elab *e, const char *name, const call_args *args, const char *label, edm_loc loc, value *out);

/* Helpers used by both files. */
int elab_add_node(elab *e, edm_node *n, edm_loc loc); /* infers, adds; returns id or -1 */
int elab_const(elab *e, double v, edm_loc loc);       /* a CONST node */
int elab_fail(elab *e, edm_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *elab_join_scope(elab *e, const char *label); /* scope + "." + label */
/* v formatted in full (str(), interpolation), or an error at loc naming what. */
int elab_format_exact(elab *e, const value *v, int quote, edm_loc loc, const char *what, char **out);
/* Deep equality counted against the step limit (an error when over it). */
int elab_equal(elab *e, const value *a, const value *b, edm_loc loc, int *eq);
int elab_register_name(elab *e, const char *name, edm_loc loc);
int elab_tensor_binary(elab *e, edm_op op, value a, value b, edm_loc loc, value *out);

#endif
