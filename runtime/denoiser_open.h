/* Opening a denoiser from a weights file: the model configuration comes
 * from the file's metadata (edmc.model + edmc.config written by `edmc init`,
 * or the reference's `config` JSON), overridden or supplied by a .edm file
 * and -D defines, and the model is compiled by the front end.  This is
 * where the denoiser meets the parser (and runtime/vae.c, for its model), so
 * it is built into the front-end library, not the runtime one (a package's denoiser is built on its graph
 * with edm_denoiser_new). */
#ifndef EDMC_DENOISER_OPEN_H
#define EDMC_DENOISER_OPEN_H

#include <stdint.h>

#include "compiler/elaborate.h"
#include "compiler/source.h"
#include "runtime/backend.h"
#include "runtime/denoiser.h"

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

/* Compiles path with defs into prog; the first error into st (with a note
 * counting the others), its position in src. */
int edm_compile_model(edm_sources *src, const char *path, const edm_define *defs, int ndefs, edm_program *prog,
                      edm_status *st);
/* The same on a source manager of its own (one manager loads each file once,
 * so a probe for the parameters a model has cannot share the real one); with
 * embedded (edmc.source JSON, read from `from`) its files instead of the
 * disk's. */
int edm_compile_probe(const char *model, const char *embedded, const char *from, const edm_define *defs, int ndefs,
                      edm_program *prog, edm_status *st);

#endif
