/* A denoiser: one compiled model graph, its weights and an executor, which
 * evaluates the preconditioned network D(x; σ, labels) (and its logvar) for
 * up to `batch` samples at a time.  The sampler holds one for the main net
 * and one for the guide.
 *
 * A denoiser is built on a graph: one the caller compiled (tests), a
 * package's, or the model a weights file names, compiled by
 * edm_denoiser_open (runtime/denoiser_open.h, which needs the front end). */
#ifndef EDMC_DENOISER_H
#define EDMC_DENOISER_H

#include <stdint.h>

#include "compiler/elaborate.h"
#include "runtime/backend.h"
#include "runtime/safetensors.h"

typedef struct edm_denoiser edm_denoiser;

/* What a denoiser computes on: the image shape and the label width. */
typedef struct {
    int channels, height, width;
    int label_dim; /* 0: unconditional (no class_labels input) */
} edm_denoiser_shape;

/* The interface a denoiser needs of g: inputs x [N, C, H, W], sigma [N],
 * optional class_labels [N, L]; outputs D_x like x (its node id into
 * *out_d), optional logvar with one value per sample (*out_logvar, -1 when
 * absent).  0 with the image shape, or -1 naming what is missing. */
int edm_denoiser_interface(const edm_graph *g, edm_denoiser_shape *shape, int *out_d, int *out_logvar,
                           edm_status *st);

/* Builds a denoiser on g (borrowed, must outlive it) with the weights of f
 * (borrowed too; read again whenever the batch size changes). */
edm_denoiser *edm_denoiser_new(const edm_graph *g, const edm_st_file *f, int64_t batch,
                               const edm_backend_options *opt, edm_status *st);

/* Hands over what d keeps and frees with it: the weights file d reads
 * (weights, the f given to edm_denoiser_new), the name of the model it was
 * compiled from, and program, freed by release (the front end's compiled
 * program: the runtime does not know its type).  On failure (no memory)
 * nothing is taken. */
int edm_denoiser_adopt(edm_denoiser *d, edm_st_file *weights, const char *model, void *program,
                       void (*release)(void *), edm_status *st);
void edm_denoiser_free(edm_denoiser *d);

edm_denoiser_shape edm_denoiser_get_shape(const edm_denoiser *d);
int64_t edm_denoiser_batch(const edm_denoiser *d);
/* Elements of one sample (channels · height · width). */
int64_t edm_denoiser_sample_numel(const edm_denoiser *d);
/* The .edm file it was compiled from ("" when built from a graph). */
const char *edm_denoiser_model(const edm_denoiser *d);
/* What its backend holds (edm_backend_peak_bytes; 0 before the first evaluation binds one). */
size_t edm_denoiser_peak_bytes(const edm_denoiser *d);

/* D for n ≤ batch samples: x (n samples), sigma (n values > 0), labels
 * (n × label_dim; must be NULL for an unconditional model); writes D (n
 * samples) and, when logvar is not NULL, n log-variances. */
int edm_denoiser_eval(edm_denoiser *d, const float *x, const float *sigma, const float *labels, int64_t n, float *D,
                      float *logvar, edm_status *st);

/* The defines a weights file's metadata implies ("edmc.config", else the
 * reference's "config"), and the .edm file named by "edmc.model" (or NULL).
 * Names and values are owned by the list. */
typedef struct {
    edm_define *items;
    int count;
    char *model;
    const char *source; /* the metadata key they came from, or NULL */
} edm_define_list;

int edm_define_list_from_weights(const edm_st_file *f, edm_define_list *out, edm_status *st);
void edm_define_list_free(edm_define_list *l);

#endif
