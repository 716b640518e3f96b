/* Gradient buckets (grad_buckets.h). */
#include "config.h"

#include "runtime/grad_buckets.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int ready, index;
} ready_of;

static int by_ready(const void *a, const void *b)
{
    const ready_of *p = a, *q = b;
    if (p->ready != q->ready)
        return p->ready < q->ready ? -1 : 1;
    return (p->index > q->index) - (p->index < q->index);
}

int edm_grad_buckets_make(const int *ready, const int64_t *bytes, int n, int64_t cap, edm_grad_buckets *out,
                          edm_status *st)
{
    memset(out, 0, sizeof *out);
    if (n < 0 || cap <= 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "gradient buckets: %d parameters, a bound of %lld bytes", n,
                        (long long)cap);
    for (int i = 0; i < n; i++)
        if (ready[i] < -1 || bytes[i] < 0)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "gradient buckets: parameter %d ready at %d, %lld bytes",
                            i, ready[i], (long long)bytes[i]);
    size_t m = (size_t)(n ? n : 1);
    ready_of *r = malloc(m * sizeof *r);
    out->order = malloc(m * sizeof *out->order);
    out->bucket = malloc(m * sizeof *out->bucket);
    if (!r || !out->order || !out->bucket) {
        free(r);
        edm_grad_buckets_free(out);
        return edm_nomem(st);
    }
    for (int i = 0; i < n; i++)
        r[i] = (ready_of){ready[i], i};
    qsort(r, (size_t)n, sizeof *r, by_ready);
    out->nparams = n;
    for (int i = 0; i < n; i++) {
        int p = r[i].index;
        out->order[i] = p;
        edm_grad_bucket *b = out->n ? &out->bucket[out->n - 1] : NULL;
        if (!b || b->bytes + bytes[p] > cap) { /* a new bucket; one parameter always fits an empty one */
            b = &out->bucket[out->n++];
            *b = (edm_grad_bucket){.first = i, .count = 0, .ready = -1, .bytes = 0};
        }
        b->count++;
        b->bytes += bytes[p];
        b->ready = r[i].ready; /* sorted: the last member's is the latest */
    }
    free(r);
    return 0;
}

void edm_grad_buckets_free(edm_grad_buckets *b)
{
    if (!b)
        return;
    free(b->order);
    free(b->bucket);
    memset(b, 0, sizeof *b);
}
