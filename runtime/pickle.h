/* A restricted reader of Python pickles (protocols 2 to 5).
 *
 * Python's pickle.load runs whatever callables a file names; this reader
 * never runs anything.  It decodes the opcodes into a tree of values in an
 * arena: a "global" is only a name, and calling one (REDUCE, NEWOBJ) or
 * setting an object's state (BUILD) only records an object node (the
 * global, its arguments, its state, the items added to it).  Only globals on
 * the caller's list are accepted, and only the opcodes that binary pickles of
 * data use; anything else is one error naming the opcode or the global and
 * its byte offset.  The caller interprets the tree.
 *
 * Strings and bytes point into the input (not NUL-terminated: use len).
 * Values may be shared through the memo, and a hostile file can make a list
 * contain itself, so a walker must bound its depth. */
#ifndef EDMC_PICKLE_H
#define EDMC_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/arena.h"
#include "compiler/status.h"

typedef enum {
    EDM_PK_NONE,
    EDM_PK_BOOL,
    EDM_PK_INT,
    EDM_PK_BIGINT, /* an integer wider than 64 bits: s/len its little-endian two's complement bytes */
    EDM_PK_FLOAT,
    EDM_PK_STR,
    EDM_PK_BYTES,
    EDM_PK_TUPLE,
    EDM_PK_LIST,
    EDM_PK_DICT, /* items: key, value, key, value, ... */
    EDM_PK_SET,
    EDM_PK_GLOBAL, /* s: "module.name" */
    EDM_PK_OBJECT, /* cls called with args (REDUCE/NEWOBJ), then state (BUILD), dict/list items */
    EDM_PK_PERSID, /* a persistent id: args is the id object */
} edm_pk_kind;

typedef struct edm_pk edm_pk;
struct edm_pk {
    edm_pk_kind kind;
    int64_t i;     /* BOOL, INT */
    double f;      /* FLOAT */
    const char *s; /* STR, BYTES, BIGINT, GLOBAL */
    size_t len;
    edm_pk **items; /* TUPLE, LIST, SET, DICT (2·n entries) */
    int64_t n, cap;
    const edm_pk *cls; /* OBJECT: a GLOBAL */
    edm_pk *args;      /* OBJECT: the call's arguments (a TUPLE); PERSID: the id */
    edm_pk *state;     /* OBJECT: BUILD's argument, or NULL */
    edm_pk *dict;      /* OBJECT: SETITEM(S) on it (dict subclasses), a DICT or NULL */
    edm_pk *list;      /* OBJECT: APPEND(S) on it (list subclasses), a LIST or NULL */
    size_t pos;        /* byte offset of the opcode that made it */
};

typedef struct {
    const char *const *globals; /* "module.name" accepted by GLOBAL / STACK_GLOBAL */
    int nglobals;
    int allow_persid; /* BINPERSID (torch's storages) */
    const char *what; /* the file, for errors */
    size_t base;      /* added to offsets in errors (a pickle inside another file) */
} edm_pk_rules;

/* Reads one pickle from data[*pos..len) up to its STOP; *pos is left after
 * it.  Returns the value, or NULL with st filled (EDM_ERR_FORMAT naming the
 * byte offset, or EDM_ERR_NOMEM / EDM_ERR_LIMIT). */
edm_pk *edm_pk_read(edm_arena *a, const unsigned char *data, size_t len, size_t *pos, const edm_pk_rules *r,
                    edm_status *st);

/* Small queries for interpreters (all tolerate NULL). */
int edm_pk_str_is(const edm_pk *v, const char *s);      /* a STR equal to s */
int edm_pk_global_is(const edm_pk *v, const char *name); /* an OBJECT whose cls is the GLOBAL name */
/* The value under STR key in a DICT, or in an OBJECT's dict items; NULL if absent. */
const edm_pk *edm_pk_get(const edm_pk *dict, const char *key);
/* The item count of a DICT (pairs) or an OBJECT's dict items; -1 if neither. */
int64_t edm_pk_dict_size(const edm_pk *dict);
/* The i-th key / value of the same. */
const edm_pk *edm_pk_dict_key(const edm_pk *dict, int64_t i);
const edm_pk *edm_pk_dict_value(const edm_pk *dict, int64_t i);
/* A short description of v's kind for errors ("a string", "an object of collections.OrderedDict"). */
const char *edm_pk_describe(const edm_pk *v, char *buf, size_t size);

#endif
