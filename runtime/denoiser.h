/* A denoiser: one compiled model graph, its weights and an executor, which
 * evaluates the preconditioned network D(x; σ, labels) (and its logvar) for
 * up to `batch` samples at a time.  The sampler holds one for the main net
 * and one for the guide.
 *
 * A denoiser is either built from a graph the caller compiled (tests), or
 * opened from a weights file: the model configuration then comes from the
 * file's metadata (edmc.model + edmc.config written by `edmc init`, or the
 * reference's `config` JSON), overridden or supplied by a .edm file and -D
 * defines. */
#ifndef EDMC_DENOISER_H
#define EDMC_DENOISER_H

#include <stdint.h>

#include "compiler/elaborate.h"
#include "compiler/source.h"
#include "runtime/backend.h"
#include "runtime/safetensors.h"

typedef struct edm_denoiser edm_denoiser;

/* What a denoiser computes on: the image shape and the label width. */
typedef struct {
    int channels, height, width;
    int label_dim; /* 0: unconditional (no class_labels input) */
} edm_denoiser_shape;

/* Builds a denoiser on g (borrowed, must outlive it) with the weights of f
 * (borrowed too; read again whenever the batch size changes). */
edm_denoiser *edm_denoiser_new(const edm_graph *g, const edm_st_file *f, int64_t batch,
                               const edm_backend_options *opt, edm_status *st);

typedef struct {
    const char *weights; /* W.safetensors */
    const char *model;   /* a .edm file, or NULL: the one named by the weights' edmc.model, */
    const char *fallback_model; /* or else this one (may be NULL) */
    const edm_define *defines; /* override the configuration the weights carry */
    int ndefines;
    int64_t batch; /* the most samples one evaluation takes */
    edm_backend_options backend;
} edm_denoiser_spec;

/* Opens the weights, works out the model and its defines, compiles it and
 * builds the denoiser (which then owns the program and the file).  A compile
 * error is returned in st with its position in src. */
edm_denoiser *edm_denoiser_open(const edm_denoiser_spec *spec, edm_sources *src, edm_status *st);
void edm_denoiser_free(edm_denoiser *d);

edm_denoiser_shape edm_denoiser_get_shape(const edm_denoiser *d);
int64_t edm_denoiser_batch(const edm_denoiser *d);
/* Elements of one sample (channels · height · width). */
int64_t edm_denoiser_sample_numel(const edm_denoiser *d);
/* The .edm file it was compiled from ("" when built from a graph). */
const char *edm_denoiser_model(const edm_denoiser *d);

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

/* Compiles path with defs into prog; the first error into st (with a note
 * counting the others), its position in src. */
int edm_compile_model(edm_sources *src, const char *path, const edm_define *defs, int ndefs, edm_program *prog,
                      edm_status *st);

#endif
