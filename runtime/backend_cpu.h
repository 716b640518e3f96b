/* The CPU reference backend: runs an IR graph in float32 or float64.
 *
 * It is the oracle for every faster backend, so each op is one plain kernel
 * (runtime/cpu_kernels.inc, compiled once per precision); convolutions are
 * im2col + GEMM and matrix products GEMM, both through OpenBLAS; loops over
 * elements use OpenMP.  Activations are freed after their last use and their
 * memory reused (best fit), so the peak stays far below the sum of all
 * activations. */
#ifndef EDMC_BACKEND_CPU_H
#define EDMC_BACKEND_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/ir.h"
#include "compiler/passes/fusion.h"
#include "compiler/status.h"

typedef struct {
    edm_dtype compute; /* EDM_F32 (default) or EDM_F64 */
    int threads;       /* 0: OpenMP's default */
    int keep_all;      /* keep every value after the run (debugging, activations) */
    const int *keep;   /* or these node ids only (outputs are always kept) */
    int nkeep;
    int training;      /* dropout active (needs a seed); otherwise the identity */
    uint64_t seed;
    unsigned fuse;     /* fusion rules (fusion.h); 0: one kernel per node */
    const struct edm_plan_text *plan; /* a plan written ahead of time (a package's), or NULL: plan anew */
} edm_cpu_options;

typedef struct edm_cpu edm_cpu;

/* Binds the batch size and plans memory. */
edm_cpu *edm_cpu_new(const edm_graph *g, int64_t batch, const edm_cpu_options *opt, edm_status *st);
void edm_cpu_free(edm_cpu *x);

/* Sets a leaf (input, parameter or buffer) by name; n must equal its element
 * count (with the batch bound). */
int edm_cpu_set_f32(edm_cpu *x, const char *name, const float *data, int64_t n, edm_status *st);
int edm_cpu_set_f64(edm_cpu *x, const char *name, const double *data, int64_t n, edm_status *st);
/* The node id of a leaf or output by name, or -1. */
int edm_cpu_find(const edm_cpu *x, edm_op op, const char *name);

int edm_cpu_run(edm_cpu *x, edm_status *st);
/* The dropout seed of the next runs (training: a new one every step). */
void edm_cpu_set_seed(edm_cpu *x, uint64_t seed);

/* Reads a value kept after the run (outputs, keep list, leaves). */
int64_t edm_cpu_numel(const edm_cpu *x, int node);
int edm_cpu_get_f32(const edm_cpu *x, int node, float *out, int64_t n, edm_status *st);
int edm_cpu_get_f64(const edm_cpu *x, int node, double *out, int64_t n, edm_status *st);

/* Activation memory (bytes, leaves excluded): what the backend allocated,
 * reusing freed buffers best-fit, and what the last run's activations would
 * have taken with no reuse. */
size_t edm_cpu_peak_bytes(const edm_cpu *x);
size_t edm_cpu_total_bytes(const edm_cpu *x);
/* The plan it runs (over its rewritten graph). */
const edm_plan *edm_cpu_plan(const edm_cpu *x);

#endif
