/* Fusion: the rules (each switchable with --fuse=), the graph rewrites they
 * need, and the execution plan every backend reads.
 *
 * The plan groups the graph's nodes into steps.  Every non-leaf value is
 * either stored (a step's root: written to memory, with a lifetime and an
 * arena offset) or inlined: recomputed inside each step that reads it, from
 * the stored values it depends on.  A step stores one root; it may contain
 * one core (a node that is not elementwise: a contraction, a reduction, a
 * layout op, softmax, resampling) with
 *   - a prologue: inlined elementwise nodes on a core operand, evaluated as
 *     the operand is read (mp_silu before a convolution),
 *   - an epilogue: inlined elementwise nodes between the core and the root,
 *     applied before the one store (scales, the embedding modulation,
 *     mp_silu, dropout, mp_sum with the residual, clip);
 * with the ew rule a concatenation counts as elementwise: a gather whose
 * every element is read from one of its inputs, which are stored;
 * without a core it is one elementwise loop.  Steps belong to groups, a group
 * is one kernel: with the `wn` rule every parameter-only step (the weight
 * normalisation, once per call) is one group, and so is every step after the
 * backward pass that works on weight gradients alone. */
#ifndef EDMC_FUSION_H
#define EDMC_FUSION_H

#include <stdint.h>
#include <stdio.h>

#include "compiler/ir.h"
#include "compiler/status.h"

/* The rules, a bit each. */
enum {
    EDM_FUSE_WN = 1u << 0,       /* weight norm: raw weight + per-output-channel scale in the epilogue; weight prep as one step */
    EDM_FUSE_PROLOGUE = 1u << 1, /* elementwise work on a core operand, applied as it is read */
    EDM_FUSE_EPILOGUE = 1u << 2, /* elementwise work on a core's output, applied before the store */
    EDM_FUSE_EW = 1u << 3,       /* elementwise chains in one loop */
    EDM_FUSE_ATTN = 1u << 4,     /* q·kᵀ, softmax and ·v as one attention op (no scores stored) */
    EDM_FUSE_TAPS = 1u << 5,     /* a k×k convolution (k > 1) reads its weight tap-major, a copy made with the weights */
    EDM_FUSE_ATTNTRAIN = 1u << 6, /* attn in a training step: the weights recomputed where the backward pass reads them */
    EDM_FUSE_NONE = 0u,
    EDM_FUSE_ALL = (1u << 7) - 1,
};

/* The rules of `fuse` a plan for the CPU backend applies: taps lays weights
 * out for the tensor-core convolutions, and on the CPU (im2col and a GEMM,
 * which read either layout alike) its copies would only cost time (edm2-tiny
 * forward, batch 8, one thread: 25-30% slower with them). */
static inline unsigned edm_fuse_cpu(unsigned fuse) { return fuse & ~(unsigned)EDM_FUSE_TAPS; }

/* "all", "none" or a comma list of rule names; 0 or -1 (st names the bad word). */
int edm_fuse_parse(const char *text, unsigned *out, edm_status *st);
/* "all", "none" or the list, into buf. */
const char *edm_fuse_str(unsigned fuse, char *buf, size_t size);

/* ------------------------------------------------------------------ rewrites */

/* Drops every node no output, tap or kept node needs (leaves stay: a backend
 * is given them by name).  keep may be NULL.  map[old] = new id or -1. */
edm_graph *edm_pass_dce(const edm_graph *g, const unsigned char *keep, int *map, edm_status *st);

/* The graph rewrites of the rules in `fuse` (wn, attn, ew's, taps), then DCE.  Returns
 * a new graph (map[old] = new id, -1 where dropped), or NULL with st set. */
edm_graph *edm_pass_fuse_rewrite(const edm_graph *g, unsigned fuse, const unsigned char *keep, int *map,
                                 edm_status *st);

/* ------------------------------------------------------------------ the plan */

typedef enum {
    EDM_ROLE_PROLOGUE, /* evaluated over a core operand's domain */
    EDM_ROLE_CORE,
    EDM_ROLE_EPILOGUE, /* evaluated over the root's domain (the root is the last) */
} edm_member_role;

typedef struct {
    int node;
    edm_member_role role;
    int operand; /* prologue: the core input it feeds */
} edm_plan_member;

typedef struct {
    int root;  /* the stored value */
    int core;  /* the non-elementwise node inside, or -1 */
    int group; /* the kernel it belongs to */
    const char *kind; /* "ew", "contract", "reduce", "op" (another core) */
    edm_plan_member *members; /* in evaluation order: prologues, core, epilogue; root last */
    int nmembers;
} edm_plan_step;

typedef struct {
    int stored;      /* has memory: a leaf, a root, or an alias of a stored value */
    int base;        /* the value whose memory this is (itself unless an alias) */
    int step;        /* the step writing it (roots), else -1 */
    int first, last; /* bases of roots: the step that writes it and the last step reading it */
    int keep;        /* readable after the run */
    int64_t offset;  /* bytes into the arena, after edm_plan_bind (bases of roots) */
    int64_t bytes;
} edm_plan_value;

typedef struct {
    const char *name; /* "weights", "wgrad" or the root's op */
    int first_step, nsteps;
} edm_plan_group;

typedef struct {
    unsigned fuse;
    int training;                 /* dropout draws masks (else it is an alias) */
    const unsigned char *keep;    /* nodes to keep readable (NULL: outputs only) */
    int keep_all;
    /* edm_plan_for_run: a plan written before (an ahead-of-time package's
     * plan.xml) instead of planning anew; it must be for the same rules and
     * mode and keep every value asked for.  NULL: plan anew. */
    const struct edm_plan_text *written;
} edm_plan_options;

/* A plan's XML text, and its name in errors. */
typedef struct edm_plan_text {
    const char *xml;
    size_t size;
    const char *name;
} edm_plan_text;

/* One stored value of a bound plan (edm_plan_bind_sizes), as a package
 * records it: the value whose memory it is, the steps that write it and last
 * read it (bases of roots; -1 else), its arena offset (-1: a leaf or an
 * alias, placed by the executor or its base), its bytes and storage type. */
typedef struct {
    int node, base, first, last;
    int64_t offset, bytes;
    edm_dtype dtype;
} edm_plan_layout_value;

/* A plan's memory bound for one architecture and batch (a CUDA package's
 * kernels are per architecture and batch, the batch baked in): the arena the
 * plan's roots take, the executor's other workspace (cuBLASLt's), and every
 * stored value in node order.  Written into plan.xml by edmc compile and
 * checked against the binding of a run from the package. */
typedef struct {
    char arch[16];
    int64_t batch;
    int64_t arena_bytes, workspace_bytes;
    edm_plan_layout_value *values;
    int nvalues;
} edm_plan_layout;

typedef struct edm_plan {
    const edm_graph *g;
    edm_plan_options opt;
    edm_plan_step *steps;
    int nsteps;
    edm_plan_group *groups;
    int ngroups;
    edm_plan_value *values; /* one per node */
    int nvalues;
    int64_t arena_bytes; /* after edm_plan_bind */
    int64_t stored_bytes; /* every root with no reuse */
    int64_t act_peak_bytes; /* the most batch-dependent stored bytes live at once, inputs included, constants not (no fragmentation) */
    edm_plan_layout *layouts; /* the memory tables written with it (plan.xml), freed with it; none on the CPU */
    int nlayouts;
    char source[160];         /* the XML it was read from, for errors ("" when planned here) */
} edm_plan;

edm_plan *edm_plan_build(const edm_graph *g, const edm_plan_options *opt, edm_status *st);
void edm_plan_free(edm_plan *p);
/* Binds the batch and element size: value sizes and arena offsets (first fit
 * over the steps' lifetimes). */
int edm_plan_bind(edm_plan *p, int64_t batch, int64_t elem_bytes, edm_status *st);
/* The same with each value's element size (value_elem_bytes[id], one per
 * node; NULL: elem_bytes for all): the CUDA executor stores some values f16.
 * A value's memory is reused only after the group of its last reader (the
 * steps of one group kernel run at the same time); offsets are 256-aligned. */
int edm_plan_bind_sizes(edm_plan *p, int64_t batch, int64_t elem_bytes, const int64_t *value_elem_bytes,
                        edm_status *st);
/* The memory table of p as bound now (edm_plan_bind_sizes), for arch and
 * batch: dtype[id] is each value's storage type, workspace the executor's
 * other device memory.  out is freed with edm_plan_layout_free. */
int edm_plan_layout_make(const edm_plan *p, const char *arch, int64_t batch, const edm_dtype *dtype,
                         int64_t workspace, edm_plan_layout *out, edm_status *st);
void edm_plan_layout_free(edm_plan_layout *l);
/* A plan read with memory tables (a package's): the table for arch and batch
 * must equal the binding made now (the same arguments as above), else one
 * error naming the first value that differs, or that no table is for this
 * architecture and batch.  0 when the plan has no tables. */
int edm_plan_layout_check(const edm_plan *p, const char *arch, int64_t batch, const edm_dtype *dtype,
                          int64_t workspace, edm_status *st);
/* Whether node is an alias (its value is its first input's memory). */
int edm_plan_is_alias(const edm_plan_options *opt, const edm_node *n);
/* What a backend runs: the graph g rewritten by the rules of opt->fuse that
 * rewrite (wn, attn, ew's catscale; then dead code removed), and its plan.
 * keep holds nkeep node ids of g (opt->keep is ignored); *run is the graph
 * planned (*own_g, to free, when a rewrite made one, else g); map[i] is node
 * i of g's id in *run (-1: removed), n = edm_graph_count(g) entries, filled
 * here.  NULL with st set on failure. */
edm_plan *edm_plan_for_run(const edm_graph *g, const edm_plan_options *opt, const int *keep, int nkeep,
                           edm_graph **own_g, const edm_graph **run, int *map, edm_status *st);
/* The groups (kernels) a plan has. */
static inline int edm_plan_kernels(const edm_plan *p) { return p->ngroups; }
/* The groups at the start of a plan without training that work on the
 * parameters alone (the weights groups), else 0.  Their values live to the
 * end of the run (edm_plan_finish): nothing else is placed over them, so an
 * executor run again on unchanged parameters may skip these groups. */
int edm_plan_weights_groups(const edm_plan *p);
/* The value table of a plan whose steps and groups are set (used by the
 * builder and the XML reader, which checks the steps with it). */
int edm_plan_finish(edm_plan *p, const unsigned char *kept, edm_status *st);
/* XML: the groups, their steps and members, the kept values, and the
 * memory tables p->layouts (a CUDA package's, one per architecture and
 * batch); the reader rebuilds the plan over the graph it was made from
 * (checked against it) and keeps the tables for edm_plan_layout_check. */
int edm_plan_write_xml(FILE *out, const edm_plan *p, edm_status *st);
edm_plan *edm_plan_read_xml(const char *path, const edm_graph *g, edm_status *st);
edm_plan *edm_plan_read_xml_memory(const char *data, size_t size, const char *name, const edm_graph *g,
                                   edm_status *st);
/* Text: one line per step with its members (edmc dump --stage=fused). */
int edm_plan_write_text(FILE *f, const edm_plan *p);

#endif
