/* One training step of EDM2 (docs/edm2.md §3) on a backend (CPU or CUDA): forced weight
 * normalization, forward + backward of the training graph (a .edm program
 * compiled with training=true, differentiated by edm_pass_autodiff), NaN/Inf
 * gradients zeroed, Adam with bias correction.  Parameters and the optimizer
 * state are float32 masters.  On the CPU the trainer owns them (value, m, v,
 * grad below); on CUDA they live on the device (runtime/backend_cuda.h's
 * edm_cuda_opt_*) and value/m/v are host copies that edm_trainer_pull
 * refreshes (for checkpoints, the state check of several ranks) and
 * edm_trainer_push sends back (after a resume). */
#ifndef EDMC_TRAIN_H
#define EDMC_TRAIN_H

#include <stdint.h>

#include "compiler/ir.h"
#include "runtime/backend.h"
#include "runtime/safetensors.h"

typedef struct {
    const char *name;
    int node;      /* PARAM node */
    int grad_node; /* OUTPUT grad.<name> */
    int forced_wn;
    edm_shape shape;
    int64_t numel;
    float *value, *m, *v, *grad;
} edm_train_param;

typedef struct {
    double beta1, beta2, eps; /* 0.9, 0.99, 1e-8 */
} edm_adam;

typedef struct edm_trainer edm_trainer;

/* g: the training graph after autodiff (it has the output "loss" and a seed
 * input "grad.loss"); batch: the per-run batch (micro-batch). */
edm_trainer *edm_trainer_new(const edm_graph *g, int64_t batch, const edm_backend_options *opt, edm_status *st);
void edm_trainer_free(edm_trainer *t);

int edm_trainer_nparams(const edm_trainer *t);
edm_train_param *edm_trainer_param(edm_trainer *t, int i);
edm_train_param *edm_trainer_find(edm_trainer *t, const char *name);
/* Draws the model's initial parameters and buffers (edm_weights_init's values). */
int edm_trainer_init(edm_trainer *t, uint64_t seed, edm_status *st);
/* Loads parameters (and buffers) from a weights file, checking it fits. */
int edm_trainer_load(edm_trainer *t, const edm_st_file *f, edm_status *st);
edm_backend *edm_trainer_backend(edm_trainer *t);
/* Device trainers: copies the masters (and, with moments, Adam's m and v)
 * into the host arrays / sends the host arrays to the device.  No-ops on the CPU. */
int edm_trainer_pull(edm_trainer *t, int moments, edm_status *st);
int edm_trainer_push(edm_trainer *t, edm_status *st);
/* The power-function EMAs (runtime/phema.h), kept where the masters are (the
 * host's arrays, or the device): attach `count` copies of the current
 * weights, update them all with β_k after a step (copy ← β_k·copy +
 * (1−β_k)·weights, float32 as edm_phema_ema_lerp), read or write copy k of
 * parameter i (its numel floats). */
int edm_trainer_ema_attach(edm_trainer *t, int count, edm_status *st);
int edm_trainer_ema_update(edm_trainer *t, const double *beta, edm_status *st);
int edm_trainer_ema_get(edm_trainer *t, int k, int i, float *out, edm_status *st);
int edm_trainer_ema_set(edm_trainer *t, int k, int i, const float *in, edm_status *st);
/* Device trainers: copies the accumulated gradients into grad (edmc step). */
int edm_trainer_pull_grad(edm_trainer *t, edm_status *st);

/* w ← w / (1e-4 + rms(w over all but dim 0)) for every forced-WN parameter. */
int edm_trainer_force_wn(edm_trainer *t, edm_status *st);
/* Clears the accumulated gradients. */
int edm_trainer_zero_grad(edm_trainer *t, edm_status *st);
/* on: every step is one edm_trainer_accumulate on one process (no
 * --batch-gpu passes, no ranks), so a device trainer lets Adam read that
 * pass's gradients and holds no accumulators (4 bytes per parameter less);
 * the results are the same bits.  Off (the default) before a step of
 * several passes or an all-reduce. */
int edm_trainer_direct_grads(edm_trainer *t, int on, edm_status *st);
/* One micro-batch: the inputs must be set on the backend (images, labels,
 * rnd_normal, unit_noise); accumulates gradients of Σ_n loss_n / total_batch
 * and adds Σ_n loss_n / total_batch to *loss. */
int edm_trainer_accumulate(edm_trainer *t, int64_t total_batch, double *loss, edm_status *st);
/* Data parallel: the accumulated gradients ← their sum over the ranks, by c
 * (runtime/dist.h), the same bits on every rank; between the last
 * edm_trainer_accumulate and edm_trainer_adam.  A CUDA trainer with a host
 * collective stages the gradients through the host. */
struct edm_collective;
struct edm_dist;
int edm_trainer_allreduce_grad(edm_trainer *t, struct edm_collective *c, const char *what, edm_status *st);
/* 1 when the accumulated gradients are device memory, which a device
 * collective (NCCL) sums in place; 0 when they are the host's. */
int edm_trainer_device_grads(const edm_trainer *t);
/* NCCL over this trainer's device accumulators and stream (every rank calls
 * it together); NULL with st filled when NCCL is absent or fails, or (a usage
 * error) when the gradients are host memory. */
struct edm_collective *edm_trainer_nccl(edm_trainer *t, struct edm_dist *d, edm_status *st);
/* Data parallel over a device collective (NCCL), overlapped with the
 * backward pass (docs/distributed.md, "Overlap"): called before the step's
 * last edm_trainer_accumulate, which then accumulates each bucket of
 * gradients (runtime/grad_buckets.h, at most bucket_bytes each) as soon as
 * its last writer is queued and queues its sum over the ranks on the
 * collective's own stream; edm_trainer_overlap_end, in place of
 * edm_trainer_allreduce_grad, waits for the sums and orders Adam after
 * them.  After a failure (failed, or a failed begin) overlap_end still
 * queues the buckets not yet sent, so that the other ranks' collectives
 * end, and returns -1; its own error goes in st only when !failed.  Not on
 * the host (an error). */
int edm_trainer_overlap_begin(edm_trainer *t, struct edm_collective *c, int64_t bucket_bytes, const char *what,
                              edm_status *st);
int edm_trainer_overlap_end(edm_trainer *t, int failed, edm_status *st);
/* The buckets for bucket_bytes (the number, and each one's bytes in
 * bytes[0..*n), at most cap of them); -1 on the host. */
int edm_trainer_buckets(edm_trainer *t, int64_t bucket_bytes, int64_t *bytes, int cap, int *n, edm_status *st);

/* Zeroes non-finite gradients (their number in *nonfinite) and applies one
 * Adam step with learning rate lr; step counts from 1. */
int edm_trainer_adam(edm_trainer *t, const edm_adam *adam, double lr, int64_t step, int64_t *nonfinite,
                     edm_status *st);

#endif
