/* A bump allocator: the AST and the elaborator's compile-time values live in
 * arenas and are freed all at once, so error paths cannot leak. */
#ifndef EDMC_ARENA_H
#define EDMC_ARENA_H

#include <stddef.h>

typedef struct edm_arena edm_arena;

/* limit: the most bytes the arena may hand out (0 = unlimited); a program
 * that needs more is refused instead of exhausting the machine. */
edm_arena *edm_arena_new(size_t limit);
void edm_arena_free(edm_arena *a);
/* Zeroed memory, aligned for any type; NULL when out of memory or over the limit. */
void *edm_arena_alloc(edm_arena *a, size_t size);
char *edm_arena_strdup(edm_arena *a, const char *s);
char *edm_arena_strndup(edm_arena *a, const char *s, size_t n);
size_t edm_arena_used(const edm_arena *a);

#endif
