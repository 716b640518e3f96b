/* Compile-time values of the elaborator: what a .edm expression evaluates to.
 * A tensor value is an IR value id; everything else is known at compile time.
 * Lists have reference semantics (like Python's): `s.push(x)` changes the list
 * every name bound to it sees. */
#ifndef EDMC_VALUE_H
#define EDMC_VALUE_H

#include <stddef.h>

#include "compiler/arena.h"

typedef enum {
    VAL_NONE,
    VAL_BOOL,
    VAL_NUM,
    VAL_STR,
    VAL_LIST,
    VAL_TENSOR,
    VAL_BATCH, /* the symbolic batch size N, only meaningful inside shapes */
} val_kind;

typedef struct val_list val_list;

typedef struct {
    val_kind kind;
    int is_int;       /* VAL_NUM: an integer (exactly representable) */
    double num;       /* VAL_NUM, VAL_BOOL (0/1) */
    const char *str;  /* VAL_STR */
    val_list *list;   /* VAL_LIST */
    int tensor;       /* VAL_TENSOR: IR value id */
} value;

struct val_list {
    int count, cap;
    value *items;
};

const char *val_kind_name(val_kind k);
value val_none(void);
value val_bool(int b);
value val_int(double v);
value val_num(double v); /* is_int set when v is integral and small */
value val_str(const char *s);
value val_tensor(int id);
value val_batch(void);
/* A new empty list in the arena; NULL on out of memory / over limit. */
val_list *val_list_new(edm_arena *a, int cap);
int val_list_push(edm_arena *a, val_list *l, value v); /* 0 or -1 */

/* Formats for messages and string interpolation: 3, 0.5, "s" (quoted only when
 * quote), [1, 2], tensor, N; a list inside itself prints as [...].  Returns the
 * number of bytes it wanted, which is above VAL_FORMAT_MAX when it stopped
 * early (the text is then cut), or SIZE_MAX for lists nested deeper than
 * VAL_FORMAT_DEPTH (or out of memory). */
#define VAL_FORMAT_MAX 65536
#define VAL_FORMAT_DEPTH 1000
size_t val_format(const value *v, char *buf, size_t size, int quote);
/* Deep equality of compile-time values (tensors compare by id): 1 or 0, or -1
 * when comparing took more than max_steps in all (*steps counts each list
 * item compared) or out of memory. */
int val_equal(const value *a, const value *b, long *steps, long max_steps);

#endif
