#include "config.h"

#include "compiler/arena.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;
    size_t used, size;
    alignas(max_align_t) unsigned char data[];
} chunk;

struct edm_arena {
    chunk *head;
    size_t limit, total;
};

edm_arena *edm_arena_new(size_t limit)
{
    edm_arena *a = calloc(1, sizeof *a);
    if (a)
        a->limit = limit;
    return a;
}

void edm_arena_free(edm_arena *a)
{
    if (!a)
        return;
    for (chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

void *edm_arena_alloc(edm_arena *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    if (size > ((size_t)1 << 40))
        return NULL;
    size = (size + align - 1) & ~(align - 1);
    if (size == 0)
        size = align;
    chunk *c = a->head;
    if (!c || c->size - c->used < size) {
        size_t csize = size > 65536 ? size : 65536;
        if (a->limit && a->total + csize > a->limit)
            return NULL;
        c = malloc(sizeof *c + csize);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->size = csize;
        a->head = c;
        a->total += csize;
    }
    void *p = c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

char *edm_arena_strndup(edm_arena *a, const char *s, size_t n)
{
    char *p = edm_arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *edm_arena_strdup(edm_arena *a, const char *s) { return edm_arena_strndup(a, s, strlen(s)); }

size_t edm_arena_used(const edm_arena *a) { return a->total; }
