/* Passes over the IR.  Each returns 0 or -1 with st filled. */
#ifndef EDMC_PASSES_H
#define EDMC_PASSES_H

#include <stdint.h>
#include <stdio.h>

#include "compiler/ir.h"

/* verify: structural invariants (topological order, arity, input ids, attribute
 * ranges, unique parameter/buffer/input/output names, at least one output) and
 * shapes: re-runs edm_infer_node on a copy of every node and checks the stored
 * shape and dtype agree. */
int edm_pass_verify(const edm_graph *g, edm_status *st);

/* infer: (re)computes every node's shape and dtype in order. */
int edm_pass_infer(edm_graph *g, edm_status *st);

/* autodiff: appends the reverse-mode gradient to g.  Every OUTPUT y that
 * depends on a parameter gets a seed INPUT "grad.<y>" of y's shape (the
 * adjoint: set it to r to get d(Σ r·y)); every PARAM, and every INPUT named in
 * wrt_inputs, gets an OUTPUT "grad.<name>".  One rule per primitive. */
int edm_pass_autodiff(edm_graph *g, const char *const *wrt_inputs, int nwrt, edm_status *st);

/* Counting, with the convention of docs/edm2.md §2:
 *  - conv2d / matmul: output elements × contraction length (multiply-adds);
 *  - elementwise ops: edm_op_macs_per_element() per output element;
 *  - reductions (sum, sumsq): one per input element; softmax 3 per element;
 *    avgpool2 one per output element; layout ops, leaves, outputs: 0.
 * "Per sample" counts only nodes whose value carries the batch dimension
 * (work that scales with the batch); work on parameters alone (weight
 * normalization) is counted separately as once-per-step work. */
typedef struct {
    const char *key; /* op name, or origin name when grouping by origin */
    int64_t nodes;
    double macs_per_sample;
    double macs_per_step; /* parameter-only work */
    double act_bytes_per_sample;
} edm_stat_row;

typedef struct {
    int64_t params;         /* elements of PARAM nodes (learned) */
    int64_t buffers;        /* elements of BUFFER nodes */
    int64_t param_tensors, buffer_tensors;
    double macs_per_sample; /* multiply-adds per sample */
    double macs_per_step;   /* once-per-step (weight-only) work */
    double act_bytes_per_sample;      /* sum over all batch-dependent values, 4 bytes/element (fp32) */
    double peak_act_bytes_per_sample; /* liveness: max over time of live batch-dependent values */
    int64_t nodes;
    int nrows;
    edm_stat_row *rows; /* one per op kind present, sorted by macs_per_sample descending */
    int norigins;
    edm_stat_row *origins; /* one per origin */
} edm_stats;

int edm_stats_compute(const edm_graph *g, edm_stats *out, edm_status *st);
void edm_stats_free(edm_stats *s);

/* The pipeline every command runs, by stage name: "ir" (verify), "train"
 * (autodiff, then verify: only with training), "rewrite" (the fusion rules'
 * rewrites and dead-code elimination into *rewritten, then verify), "fused"
 * (the plan: made by the backend, fusion.h).  Runs the stages up to `until`
 * (NULL: "train"); the graph stages edit g in place, "rewrite" makes a new
 * graph (the caller frees it). */
enum { EDM_STAGE_IR, EDM_STAGE_TRAIN, EDM_STAGE_REWRITE, EDM_STAGE_FUSED };
typedef struct {
    int training;  /* the program was compiled with training=true: differentiate it */
    unsigned fuse; /* fusion rules (fusion.h) */
} edm_pipeline_options;
int edm_pipeline_stage(const char *name); /* index or -1 */
int edm_pipeline_run(edm_graph *g, const edm_pipeline_options *o, const char *until, edm_graph **rewritten,
                     edm_status *st);

#endif
