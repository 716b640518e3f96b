/* Inside the trainer (train.h): where its optimizer state lives.  A table of
 * functions per backend holds what differs between keeping the float32
 * masters, Adam's moments, the accumulated gradients and the EMAs on the host
 * (the CPU backend: train_host.c) and on the device (CUDA: train_cuda.c), and
 * how the gradients are summed over the ranks; train.c and the training loop
 * run the step through the table and never ask which backend they have. */
#ifndef EDMC_TRAIN_STATE_H
#define EDMC_TRAIN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/backend_cuda.h"
#include "runtime/dist.h"
#include "runtime/grad_buckets.h"
#include "runtime/train.h"

typedef struct edm_trainer_state edm_trainer_state;

struct edm_trainer {
    const edm_graph *g;
    edm_backend *be;
    const edm_trainer_state *state; /* the backend's table */
    edm_cuda_exec *cuda;            /* the device state's owner (CUDA trainers) */
    int64_t batch;
    int nparams;
    edm_train_param *params;
    int loss_node;
    float *scratch; /* the largest gradient, read back */
    float *seed;    /* grad.loss: 1 / total batch for each sample */
    /* host: the passes' gradients summed in double (grad is their float
     * value), so that the sum does not depend on how the passes are grouped:
     * one process or several ranks give the same bits */
    double **acc;
    void *flat_grad; /* every gradient in one buffer for a host all-reduce (allocated on first use) */
    /* host: the power-function EMAs, copy k of parameter i at ema[k * nparams + i] */
    float **ema;
    int nema;
    int64_t nflat;
    /* the all-reduce overlapped with the last pass (edm_trainer_overlap_begin) */
    edm_grad_buckets buckets; /* for bucket_cap bytes (0: not formed yet) */
    int64_t bucket_cap;
    edm_collective *ov;       /* the collective, from overlap_begin to overlap_end (else NULL) */
    const char *ov_what;
    int ov_sent;              /* buckets queued this step */
};

struct edm_trainer_state {
    const char *name;
    /* after the backend is made: the state's own memory */
    int (*attach)(edm_trainer *t, edm_status *st);
    /* value (and m, v when moments) ← the state; the state ← value, m, v */
    int (*pull)(edm_trainer *t, int moments, edm_status *st);
    int (*push)(edm_trainer *t, edm_status *st);
    /* grad ← the accumulated gradients */
    int (*pull_grad)(edm_trainer *t, edm_status *st);
    int (*force_wn)(edm_trainer *t, edm_status *st);
    int (*zero_grad)(edm_trainer *t, edm_status *st);
    /* on: a step is one pass on one rank, so Adam may read the pass's gradients
     * without accumulators (NULL: the state keeps its accumulators) */
    int (*direct_grads)(edm_trainer *t, int on, edm_status *st);
    /* before a pass: the masters onto the backend; after it: its gradients into the accumulators */
    int (*set_masters)(edm_trainer *t, edm_status *st);
    int (*accumulate)(edm_trainer *t, edm_status *st);
    int (*adam)(edm_trainer *t, const edm_adam *adam, double lr, int64_t step, int64_t *nonfinite, edm_status *st);
    int (*allreduce)(edm_trainer *t, edm_collective *c, const char *what, edm_status *st);
    /* a device collective over the state's accumulators (NULL: they are host memory) */
    edm_collective *(*nccl)(edm_trainer *t, edm_dist *d, edm_status *st);
    /* the overlapped all-reduce (NULL where the state is on the host): the
     * buckets formed for t->bucket_cap, the last pass's forward and backward
     * run with each bucket queued at its ready point, the end of the step's
     * sums (failed: see edm_trainer_overlap_end) */
    int (*form_buckets)(edm_trainer *t, edm_status *st);
    int (*run_overlapped)(edm_trainer *t, edm_status *st);
    int (*overlap_end)(edm_trainer *t, int failed, edm_status *st);
    /* the EMAs, beside the masters: count copies of them; each copy k ← β_k·copy + (1−β_k)·masters;
     * copy k of parameter i read or written */
    int (*ema_attach)(edm_trainer *t, int count, edm_status *st);
    int (*ema_update)(edm_trainer *t, const double *beta, edm_status *st);
    int (*ema_get)(edm_trainer *t, int k, int i, float *out, edm_status *st);
    int (*ema_set)(edm_trainer *t, int k, int i, const float *in, edm_status *st);
};

extern const edm_trainer_state edm_trainer_host_state;
extern const edm_trainer_state edm_trainer_cuda_state;

/* The host all-reduce of every gradient as one buffer of elem_bytes per
 * element: each parameter's accumulator (grad_of) copied in, summed over the
 * ranks by sum, copied back. */
int edm_trainer_allreduce_staged(edm_trainer *t, size_t elem_bytes, void *(*grad_of)(edm_trainer *t, int i),
                                 int (*sum)(edm_collective *c, void *buf, int64_t n, const char *what, edm_status *st),
                                 edm_collective *c, const char *what, edm_status *st);

#endif
