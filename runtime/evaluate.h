/* Validation loss (docs/edm2.md §3's training objective, measured, not
 * minimised): the training graph (a model compiled with training=true; no
 * autodiff needed) run forward on a fixed evaluation set, so that several
 * sets of weights — e.g. the post-hoc EMA reconstructions of edmc phema — are
 * compared on exactly the same images, labels, σ draws and noise.
 *
 * The evaluation set under (data, images, seed):
 *   image k (k = 0 .. images−1) is dataset image perm[k], with perm the
 *   epoch-0 permutation of edm_dataset_permutation(ds, seed, 0) (latent
 *   datasets draw their VAE noise at stream position k);
 *   rnd_normal[k]     = edm_rng_normal(edm_rng_make(seed, "edm.eval.rnd_normal"), k);
 *   unit_noise[k, e]  = edm_rng_normal(edm_rng_make(seed, "edm.eval.unit_noise"), k·C·R·R + e).
 * Dropout is off (evaluation).  The loss is Σ_k loss_k / images, where loss_k
 * is the graph's per-image output "loss" (summed over the image's elements),
 * the quantity the trainer reports per step. */
#ifndef EDMC_EVALUATE_H
#define EDMC_EVALUATE_H

#include <stdint.h>

#include "compiler/ir.h"
#include "compiler/status.h"

/* The default evaluation seed: fixed, and not 0 (the default training seed),
 * so the σ draws and noise differ from training's. */
#define EDM_EVAL_SEED 987654321ULL
#define EDM_EVAL_DEFAULT_IMAGES 256
#define EDM_EVAL_DEFAULT_BATCH 32

typedef struct {
    const char *data; /* dataset spec (folder, .zip, builtin:NAME) */
    int64_t images;   /* evaluation images */
    int64_t batch;    /* images per forward pass (0: EDM_EVAL_DEFAULT_BATCH, at most images) */
    uint64_t seed;
    int threads;      /* 0: OpenMP's default */
} edm_eval_opts;

typedef struct edm_loss_eval edm_loss_eval;

/* g: the training graph (inputs images, rnd_normal, unit_noise and
 * class_labels when label_dim > 0; output "loss" [N]).  Opens the dataset,
 * draws the whole evaluation set once and plans the backend.  NULL and st
 * filled on error. */
edm_loss_eval *edm_loss_eval_new(const edm_graph *g, const edm_eval_opts *o, edm_status *st);
void edm_loss_eval_free(edm_loss_eval *e);

/* Sets a parameter or buffer by name (n elements, as edm_cpu_set_*). */
int edm_loss_eval_set_f32(edm_loss_eval *e, const char *name, const float *data, int64_t n, edm_status *st);
int edm_loss_eval_set_f64(edm_loss_eval *e, const char *name, const double *data, int64_t n, edm_status *st);

/* The mean per-image loss over the evaluation set with the weights set so far
 * (every parameter and buffer must have been set).  Runs are independent:
 * the same weights give the same number. */
int edm_loss_eval_run(edm_loss_eval *e, double *loss, edm_status *st);

#endif
