/* The EDM2 training loop (docs/edm2.md §3-4) on a backend (CPU or CUDA): batches from a
 * dataset, σ and noise from counter-based streams, gradient accumulation,
 * the inverse-sqrt learning-rate schedule with warm-up, power-function EMAs
 * and their snapshots, atomic checkpoints that resume bit for bit, a status
 * line and stats.jsonl. */
#ifndef EDMC_TRAIN_LOOP_H
#define EDMC_TRAIN_LOOP_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "compiler/ir.h"
#include "runtime/backend.h"
#include "runtime/safetensors.h"

#define EDM_TRAIN_MAX_EMA 8
/* The default bound of NCCL's gradient buckets (as PyTorch DDP's bucket_cap_mb). */
#define EDM_TRAIN_BUCKET_BYTES ((int64_t)25 << 20)

typedef struct {
    const char *outdir;
    const char *data;          /* folder, zip or builtin:NAME */
    int64_t batch;             /* images per optimizer step */
    int64_t batch_gpu;         /* images per forward/backward (accumulation); 0 = batch */
    int64_t duration;          /* images in all */
    int64_t status_every;      /* images; 0 = never */
    int64_t snapshot_every;    /* images; 0 = never */
    int64_t checkpoint_every;  /* images; 0 = only at the end */
    double ref_lr, ref_batches, rampup_mimg;
    double beta1, beta2, eps;
    uint64_t seed;
    int nstd;
    double std[EDM_TRAIN_MAX_EMA]; /* σ_rel of the EMAs (0.050, 0.100) */
    int snapshot_fp32;             /* else fp16, as the reference */
    int threads;
    edm_backend_options backend;   /* device, CUDA storage and ablations (threads/seed come from above) */
    int resume;                    /* continue from the newest checkpoint in outdir */
    const char *model;             /* metadata: the .edm file */
    const char *config;            /* metadata: the parameters, as JSON */
    const char *source;            /* metadata: the model's source files (runtime/model_source.h), or NULL */
    int max_nonfinite;             /* status intervals in a row with a non-finite loss before the run
                                    * stops with an error (0: the default, 2) */
    const char *collective;        /* ranks on CUDA: "nccl", "mpi" (through the host) or NULL/"auto"
                                    * (NCCL when it opens, else MPI) */
    int no_overlap;                /* NCCL: one all-reduce after the backward pass (else bucket by bucket
                                    * during the last pass's backward pass) */
    int64_t bucket_bytes;          /* NCCL overlapped: the buckets' bound (0: 25 MiB) */
    struct edm_dist *dist;         /* data parallel over the ranks of runtime/dist.h; NULL: one process.
                                    * Each rank trains on its share of every batch (batch / ranks images,
                                    * in passes of batch_gpu), the gradients are summed over the ranks in
                                    * rank order, and every rank keeps the same weights, moments and EMAs;
                                    * rank 0 alone writes the folder (log: pass NULL on the others). */
} edm_train_opts;

/* Trains the training graph g (compiled with training=true, differentiated).
 * init: starting weights, or NULL for the model's own initialisation with
 * seed.  stop: set (from a signal handler) to end early with a checkpoint.
 * Returns 0 when the run ended (or was stopped cleanly).  outdir is locked
 * (flock on outdir/.lock) for the run: a second training into it fails. */
int edm_train(const edm_graph *g, const edm_train_opts *o, const edm_st_file *init, volatile sig_atomic_t *stop,
              FILE *log, edm_status *st);

/* The learning rate before the step that starts at cur_nimg images. */
double edm_train_lr(const edm_train_opts *o, int64_t cur_nimg);

#endif
