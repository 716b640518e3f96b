/* A model's parameters and buffers as files: drawing initial values the way
 * the reference does, and loading a safetensors file into a backend by the
 * reference's names, with every mismatch reported at once. */
#ifndef EDMC_WEIGHTS_H
#define EDMC_WEIGHTS_H

#include <stdint.h>

#include "compiler/ir.h"
#include "runtime/backend.h"
#include "runtime/safetensors.h"

/* Adds every PARAM and BUFFER of g to w, drawn from its init (conv/FC weights
 * N(0,1), gains 0, fourier frequencies 2π·N(0,1), phases 2π·U(0,1)): a
 * counter-based stream per tensor, keyed by the seed and the tensor's name. */
int edm_weights_init(const edm_graph *g, uint64_t seed, edm_st_writer *w, edm_status *st);
/* The same values, set directly on a backend. */
int edm_weights_init_backend(const edm_graph *g, uint64_t seed, edm_backend *x, edm_status *st);

/* Whether a stored tensor of shape rank/dim fits a parameter of shape want:
 * the same shape, or a scalar stored as [] or [1] for either. */
int edm_weights_shape_fits(int rank, const int64_t *dim, const edm_shape *want);

/* Checks f against g (missing, unexpected and wrongly shaped tensors, all
 * listed) and copies every tensor into x. */
int edm_weights_load(edm_backend *x, const edm_graph *g, const edm_st_file *f, edm_status *st);
/* The same, with ignore_others: tensors of f that g does not name are left
 * alone (a file holding more than one network, as a VAE's encoder and
 * decoder). */
int edm_weights_load_part(edm_backend *x, const edm_graph *g, const edm_st_file *f, int ignore_others,
                          edm_status *st);

/* Fails (EDM_ERR_FORMAT), naming the file, tensor and element, at the first
 * NaN or infinity among the values of f's tensors that g's PARAMs and BUFFERs
 * name (tensors g does not name, or f lacks, are not looked at). */
int edm_weights_check_finite(const edm_graph *g, const edm_st_file *f, edm_status *st);
/* The same for n values of one tensor: "WHAT: 'NAME' element K is nan". */
int edm_check_finite(const float *v, int64_t n, const char *what, const char *name, edm_status *st);

#endif
