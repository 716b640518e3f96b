/* Stream ordering for the fake CUDA driver (stream_order.h). */
#include "tests/fakecuda/stream_order.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void merge(so_clock *into, const so_clock *from)
{
    for (int i = 0; i < SO_STREAMS; i++)
        if (from->c[i] > into->c[i])
            into->c[i] = from->c[i];
}

int so_stream_new(so_state *s, int blocking)
{
    for (int i = 1; i < SO_STREAMS; i++)
        if (!s->used[i]) {
            s->used[i] = 1;
            s->blocking[i] = (unsigned char)(blocking != 0);
            s->stream[i] = s->host; /* it starts after what the host has seen finish */
            return i;
        }
    return -1;
}

void so_stream_free(so_state *s, int id)
{
    if (id <= 0 || id >= SO_STREAMS)
        return;
    so_host_waits(s, id);
    s->used[id] = 0;
}

unsigned long long so_op(so_state *s, int id)
{
    if (id < 0 || id >= SO_STREAMS)
        return 0;
    merge(&s->stream[id], &s->host);
    if (id == 0) { /* the legacy stream waits for every blocking stream */
        for (int i = 1; i < SO_STREAMS; i++)
            if (s->used[i] && s->blocking[i])
                merge(&s->stream[0], &s->stream[i]);
    } else if (s->blocking[id]) {
        merge(&s->stream[id], &s->stream[0]);
    }
    s->stream[id].c[id] = ++s->seq;
    return s->seq;
}

static size_t slot_of(uintptr_t p, size_t cap)
{
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static so_last *find(so_state *s, uintptr_t p)
{
    if (s->n + 1 > s->cap / 2) { /* grow: at most half full */
        size_t cap = s->cap ? 2 * s->cap : 1024;
        so_last *v = calloc(cap, sizeof *v);
        if (!v)
            return NULL;
        for (size_t i = 0; i < s->cap; i++)
            if (s->last[i].ptr) {
                size_t j = slot_of(s->last[i].ptr, cap);
                while (v[j].ptr)
                    j = (j + 1) & (cap - 1);
                v[j] = s->last[i];
            }
        free(s->last);
        s->last = v;
        s->cap = cap;
    }
    size_t j = slot_of(p, s->cap);
    while (s->last[j].ptr && s->last[j].ptr != p)
        j = (j + 1) & (s->cap - 1);
    return &s->last[j];
}

int so_touch(so_state *s, int id, unsigned long long seq, uintptr_t ptr, const char *what, char *msg, size_t size)
{
    if (id < 0 || id >= SO_STREAMS || !ptr)
        return 0;
    so_last *l = find(s, ptr);
    if (!l) /* out of memory: stop following rather than report a false race */
        return 0;
    int rc = 0;
    if (!l->ptr) {
        s->n++;
    } else if (l->stream != id && l->stream >= 0 && s->stream[id].c[l->stream] < l->seq) {
        snprintf(msg, size,
                 "%s (stream %d) touches 0x%llx, which %s (stream %d) touched before with nothing ordering the two "
                 "(an event recorded after it and waited for, or a synchronization)",
                 what, id, (unsigned long long)ptr, l->what, l->stream);
        rc = -1;
    }
    l->ptr = ptr;
    l->stream = id;
    l->seq = seq;
    snprintf(l->what, sizeof l->what, "%s", what);
    return rc;
}

void so_record(const so_state *s, int id, so_clock *event)
{
    if (id >= 0 && id < SO_STREAMS)
        *event = s->stream[id];
}

void so_wait(so_state *s, int id, const so_clock *event)
{
    if (id >= 0 && id < SO_STREAMS)
        merge(&s->stream[id], event);
}

void so_host_waits(so_state *s, int id)
{
    if (id >= 0 && id < SO_STREAMS)
        merge(&s->host, &s->stream[id]);
}

void so_host_waits_event(so_state *s, const so_clock *event) { merge(&s->host, event); }

void so_host_waits_all(so_state *s)
{
    for (int i = 0; i < SO_STREAMS; i++)
        if (s->used[i] || i == 0)
            merge(&s->host, &s->stream[i]);
}

void so_free(so_state *s)
{
    free(s->last);
    memset(s, 0, sizeof *s);
}
