/* Gradient buckets for overlapping a data-parallel all-reduce with the
 * backward pass (docs/distributed.md, "Overlap").
 *
 * Each parameter's gradient is final after one launch of the backward pass
 * (its last writer, `ready`).  The parameters are taken in the order their
 * gradients become final (ties: parameter order) and packed greedily into
 * buckets of at most `cap` bytes (a parameter larger than cap is a bucket of
 * its own).  A bucket is ready after the launch of its last member.  The
 * result depends only on the plan and cap, so every rank forms the same
 * buckets and issues them in the same order. */
#ifndef EDMC_GRAD_BUCKETS_H
#define EDMC_GRAD_BUCKETS_H

#include <stdint.h>

#include "compiler/status.h"

typedef struct {
    int first, count; /* members: order[first .. first + count) */
    int ready;        /* the launch after which every member's gradient is final (-1: before the run) */
    int64_t bytes;
} edm_grad_bucket;

typedef struct {
    int *order; /* parameter indices, bucket after bucket */
    int nparams;
    edm_grad_bucket *bucket;
    int n;
} edm_grad_buckets;

/* ready[i] >= -1 and bytes[i] >= 0 for the n parameters; cap > 0.  0, or -1
 * with st filled (bad arguments, out of memory). */
int edm_grad_buckets_make(const int *ready, const int64_t *bytes, int n, int64_t cap, edm_grad_buckets *out,
                          edm_status *st);
void edm_grad_buckets_free(edm_grad_buckets *b);

#endif
