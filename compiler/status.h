/* Errors travel up as an edm_status: a code, a message, the source position it
 * is about and up to a few notes (other positions: where an operand was made,
 * the block call that led here).  Library code fills it and returns; only the
 * CLI prints it, once, through edm_diag_print (compiler/source.h). */
#ifndef EDMC_STATUS_H
#define EDMC_STATUS_H

#include <stdarg.h>

/* A source position: index into a file table (the source manager's and the
 * graph's agree), 1-based line and column; span = columns to underline. */
typedef struct {
    int file; /* -1: no position */
    int line;
    int col;
    int span;
} edm_loc;

#define EDM_NO_LOC ((edm_loc){-1, 0, 0, 0})

typedef enum {
    EDM_OK = 0,
    EDM_ERR_SYNTAX,   /* the .edm text does not parse */
    EDM_ERR_SEMANTIC, /* names, types, shapes, values in a program */
    EDM_ERR_USAGE,    /* command line */
    EDM_ERR_IO,       /* files */
    EDM_ERR_FORMAT,   /* a file read back is malformed */
    EDM_ERR_NOMEM,
    EDM_ERR_LIMIT,    /* a program exceeds a resource limit (recursion, size) */
    EDM_ERR_INTERNAL,
} edm_code;

#define EDM_STATUS_MSG 1024
#define EDM_STATUS_NOTES 8

typedef struct {
    edm_loc loc;
    char msg[256];
} edm_note;

typedef struct {
    edm_code code;
    edm_loc loc;
    char msg[EDM_STATUS_MSG];
    int nnotes;
    edm_note notes[EDM_STATUS_NOTES];
} edm_status;

void edm_status_init(edm_status *st);
/* Sets code, position and message (printf-style); clears notes. Returns -1 so
 * callers can write `return edm_fail(st, ...)`. */
int edm_fail(edm_status *st, edm_code code, edm_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int edm_vfail(edm_status *st, edm_code code, edm_loc loc, const char *fmt, va_list ap);
/* Adds a note (ignored beyond EDM_STATUS_NOTES). */
void edm_note_add(edm_status *st, edm_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes the message with context ("reading weights.safetensors: ..."). */
void edm_status_prefix(edm_status *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int edm_nomem(edm_status *st);

#endif
