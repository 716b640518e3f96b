/* The IR: a graph of primitive ops over SSA values with static shapes.
 *
 * Every node produces exactly one value (its id is the value id).  Shapes are
 * static except for the batch dimension, written EDM_DIM_BATCH ("N"), which is
 * allowed only as dimension 0 and is bound when a plan is made.  Nodes are kept
 * in topological order: a node's inputs always have smaller ids.
 *
 * The op set is deliberately small (EDM2's MP ops are written in .edm files in
 * terms of these), so that autodiff needs one rule per primitive and the
 * fusion pass matches chains of primitives.  One X-macro table carries every
 * op's name, arity and class; the name table and the enum cannot drift apart. */
#ifndef EDMC_IR_H
#define EDMC_IR_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/status.h"

#define EDM_MAX_RANK 6
#define EDM_MAX_INPUTS 3
#define EDM_DIM_BATCH (-1) /* the symbolic batch size, only ever dim 0 */

typedef enum {
    EDM_F32,
    EDM_F16,
    EDM_BF16,
    EDM_F64,
} edm_dtype;

const char *edm_dtype_name(edm_dtype t);
int edm_dtype_from_name(const char *name, edm_dtype *out); /* 0 on success */

typedef struct {
    int rank;
    int64_t dim[EDM_MAX_RANK];
} edm_shape;

/* Op classes drive counting, autodiff and fusion. */
typedef enum {
    EDM_CLASS_LEAF,     /* input, param, buffer, const */
    EDM_CLASS_UNARY,    /* elementwise, one input */
    EDM_CLASS_BINARY,   /* elementwise, two inputs, numpy broadcasting */
    EDM_CLASS_REDUCE,   /* reduction over an axis mask */
    EDM_CLASS_CONTRACT, /* conv2d, matmul: counted as multiply-adds */
    EDM_CLASS_LAYOUT,   /* reshape, permute, concat, slice: no arithmetic */
    EDM_CLASS_OTHER,    /* softmax, resampling, dropout, output */
} edm_op_class;

/* X(enum suffix, name, arity, class, macs per output element for elementwise) */
#define EDM_OPS(X)                                           \
    X(INPUT, "input", 0, EDM_CLASS_LEAF, 0)                  \
    X(PARAM, "param", 0, EDM_CLASS_LEAF, 0)                  \
    X(BUFFER, "buffer", 0, EDM_CLASS_LEAF, 0)                \
    X(CONST, "const", 0, EDM_CLASS_LEAF, 0)                  \
    X(NEG, "neg", 1, EDM_CLASS_UNARY, 1)                     \
    X(EXP, "exp", 1, EDM_CLASS_UNARY, 1)                     \
    X(LOG, "log", 1, EDM_CLASS_UNARY, 1)                     \
    X(SQRT, "sqrt", 1, EDM_CLASS_UNARY, 1)                   \
    X(RSQRT, "rsqrt", 1, EDM_CLASS_UNARY, 1)                 \
    X(SIN, "sin", 1, EDM_CLASS_UNARY, 1)                     \
    X(COS, "cos", 1, EDM_CLASS_UNARY, 1)                     \
    X(SQUARE, "square", 1, EDM_CLASS_UNARY, 1)               \
    X(SIGMOID, "sigmoid", 1, EDM_CLASS_UNARY, 3)             \
    X(SILU, "silu", 1, EDM_CLASS_UNARY, 3)                   \
    X(CLAMP, "clamp", 1, EDM_CLASS_UNARY, 2)                 \
    X(STEP, "step", 1, EDM_CLASS_UNARY, 1)                   \
    X(ADD, "add", 2, EDM_CLASS_BINARY, 1)                    \
    X(SUB, "sub", 2, EDM_CLASS_BINARY, 1)                    \
    X(MUL, "mul", 2, EDM_CLASS_BINARY, 1)                    \
    X(DIV, "div", 2, EDM_CLASS_BINARY, 1)                    \
    X(MAXIMUM, "maximum", 2, EDM_CLASS_BINARY, 1)            \
    X(SUM, "sum", 1, EDM_CLASS_REDUCE, 1)                    \
    X(SUMSQ, "sumsq", 1, EDM_CLASS_REDUCE, 1)                \
    X(CONV2D, "conv2d", 2, EDM_CLASS_CONTRACT, 0)            \
    X(MATMUL, "matmul", 2, EDM_CLASS_CONTRACT, 0)            \
    X(CONV2D_BWD_DATA, "conv2d_bwd_data", 2, EDM_CLASS_CONTRACT, 0)     \
    X(CONV2D_BWD_WEIGHT, "conv2d_bwd_weight", 2, EDM_CLASS_CONTRACT, 0) \
    X(RESHAPE, "reshape", 1, EDM_CLASS_LAYOUT, 0)            \
    X(PERMUTE, "permute", 1, EDM_CLASS_LAYOUT, 0)            \
    X(CONCAT, "concat", 2, EDM_CLASS_LAYOUT, 0)              \
    X(SLICE, "slice", 1, EDM_CLASS_LAYOUT, 0)                \
    X(EXPAND, "expand", 1, EDM_CLASS_LAYOUT, 0)              \
    X(SOFTMAX, "softmax", 1, EDM_CLASS_OTHER, 3)             \
    X(ATTENTION, "attention", 3, EDM_CLASS_OTHER, 0)         \
    X(AVGPOOL2, "avgpool2", 1, EDM_CLASS_OTHER, 1)           \
    X(UPSAMPLE2, "upsample2", 1, EDM_CLASS_OTHER, 0)         \
    X(DROPOUT, "dropout", 1, EDM_CLASS_OTHER, 1)             \
    X(OUTPUT, "output", 1, EDM_CLASS_OTHER, 0)

typedef enum {
#define EDM_OP_ENUM(e, name, arity, cls, macs) EDM_OP_##e,
    EDM_OPS(EDM_OP_ENUM)
#undef EDM_OP_ENUM
        EDM_OP_COUNT
} edm_op;

const char *edm_op_name(edm_op op);
int edm_op_arity(edm_op op);
edm_op_class edm_op_class_of(edm_op op);
int edm_op_macs_per_element(edm_op op);
int edm_op_from_name(const char *name, edm_op *out); /* 0 on success */

/* How a parameter or buffer is initialised (EDM2: weights N(0,1), gains 0,
 * fourier frequencies 2π·N(0,1), phases 2π·U(0,1)). */
typedef enum {
    EDM_INIT_ZEROS,
    EDM_INIT_ONES,
    EDM_INIT_CONST,   /* every element = init_value */
    EDM_INIT_NORMAL,  /* N(0,1) * init_scale */
    EDM_INIT_UNIFORM, /* U[0,1) * init_scale */
} edm_init_kind;

const char *edm_init_name(edm_init_kind k);
int edm_init_from_name(const char *name, edm_init_kind *out);

typedef struct {
    edm_op op;
    int ninputs;
    int input[EDM_MAX_INPUTS];
    edm_shape shape;
    edm_dtype dtype;
    edm_loc loc;
    const char *name;   /* INPUT/OUTPUT/PARAM/BUFFER: the tensor's name (state-dict name for params) */
    const char *scope;  /* label path of the instance that made it, e.g. "unet.enc.16x16_block0.conv_res0"; may be "" */
    const char *origin; /* the .edm function the node came from ("mp_silu"), or the op's own name */
    union {
        struct { double value; } constant;                        /* CONST: every element = value; shape [] for a scalar */
        /* PARAM, BUFFER; forced_wn: training replaces the stored weight by its
         * weight-normalized self before every step (docs/edm2.md §3) */
        struct { edm_init_kind kind; double value, scale; uint64_t seed; int forced_wn; } init;
        struct { double lo, hi; } clamp;                           /* CLAMP; STEP is x >= 0 ? 1 : 0 */
        struct { uint32_t axes; int keepdim; } reduce;             /* SUM, SUMSQ: bit i = axis i (N may be reduced away) */
        /* CONV2D: input [N,C,H,W], weight [O,C,k,k] (taps: [O,k,k,C], as the fusion's
         * taps rule gives it).  CONV2D_BWD_DATA (dy, w) → dx [N,C,in_h,in_w] (taps: w
         * [C,k,k,O]); CONV2D_BWD_WEIGHT (x, dy) → dw [O,C,k,k] with k = kernel. */
        struct { int stride, pad; int64_t in_h, in_w, kernel; int taps; } conv;
        struct { int trans_a, trans_b; } matmul;                   /* MATMUL on the last two dims, batch dims broadcast */
        struct { int perm[EDM_MAX_RANK]; } permute;                /* PERMUTE: out dim i = in dim perm[i] */
        struct { int axis; } concat;                               /* CONCAT */
        struct { int axis; int64_t start, len; } slice;            /* SLICE */
        struct { int axis; } softmax;                              /* SOFTMAX */
        /* DROPOUT: identity when not training; the mask is a function of
         * (seed, mask node, element): mask_id 0 (or less) is the node itself,
         * otherwise the forward dropout whose mask the backward pass reuses
         * (never 0: a dropout has an input before it) */
        struct { double p; int mask_id; } dropout;
        struct { int dummy; } expand; /* EXPAND: broadcasts its input to n->shape (set by the builder) */
    } attr;
} edm_node;

/* Whether n's value is its first input's memory, with no work and no
 * storage of its own: a reshape, an output, and a dropout where it is the
 * identity (not training).  The one rule for the planner, the code
 * generators and the statistics. */
int edm_node_is_alias(const edm_node *n, int training);

typedef struct edm_graph edm_graph;

edm_graph *edm_graph_new(void);
void edm_graph_free(edm_graph *g);

int edm_graph_count(const edm_graph *g);
const edm_node *edm_graph_node(const edm_graph *g, int id);
edm_node *edm_graph_node_mut(edm_graph *g, int id);

/* Adds a node (copied; strings interned into the graph).  Shapes are NOT
 * inferred here: builders call edm_infer_node first.  Returns the new id, or -1
 * when out of memory (status set). */
int edm_graph_add(edm_graph *g, const edm_node *n, edm_status *st);

/* Strings owned by the graph (interned). NULL on out of memory. */
const char *edm_graph_intern(edm_graph *g, const char *s);

/* The file table for locations. */
int edm_graph_add_file(edm_graph *g, const char *path, edm_status *st); /* returns index or -1 */
const char *edm_graph_file(const edm_graph *g, int index); /* NULL when out of range */
int edm_graph_file_count(const edm_graph *g);

/* Taps: named values worth looking at — the elaborator records the result of
 * every labelled block call under its scope path ("unet.enc.16x16_block0"),
 * so activations can be dumped and compared with the reference's by name. */
int edm_graph_add_tap(edm_graph *g, const char *name, int node, edm_status *st);
/* The same without the search by name, for a caller that indexes its taps:
 * index -1 appends name (new to the graph), else re-points tap index.
 * Returns the tap's index, or -1. */
int edm_graph_put_tap(edm_graph *g, int index, const char *name, int node, edm_status *st);
int edm_graph_tap_count(const edm_graph *g);
const char *edm_graph_tap_name(const edm_graph *g, int i);
int edm_graph_tap_node(const edm_graph *g, int i);
int edm_graph_find_tap(const edm_graph *g, const char *name); /* node id or -1 */
/* The first node of op whose name is `name` (inputs, outputs, params,
 * buffers), or -1. */
int edm_graph_find(const edm_graph *g, edm_op op, const char *name);
/* The leaf a backend sets by name: the input, else the parameter, else the buffer; -1. */
int edm_graph_find_leaf(const edm_graph *g, const char *name);

/* ------------------------------------------------------------------ rewriting
 * A graph is append-only; a pass rewrites by rebuilding it.  edm_graph_rewrite
 * walks the old graph in order and hands each node (inputs already mapped to
 * the new graph) to a callback, which either copies it (edm_rewriter_emit),
 * emits other nodes in its place and returns the id that now carries the old
 * value, or drops it.  Files and taps carry over (a tap of a dropped node is
 * dropped); map[old] = new id, or -1 for a dropped node. */

/* Readers of every value: users[off[i] .. off[i+1]) read value i (a node
 * reading a value twice appears twice). */
typedef struct {
    int n;
    int *off;
    int *users;
} edm_uses;

int edm_uses_build(const edm_graph *g, edm_uses *u, edm_status *st);
void edm_uses_free(edm_uses *u);
static inline int edm_uses_count(const edm_uses *u, int id) { return u->off[id + 1] - u->off[id]; }

/* Replaces every read of `from` by `to` (to must precede every reader, so the
 * order stays topological).  Returns the number of reads replaced, or -1. */
int edm_graph_replace_uses(edm_graph *g, int from, int to, edm_status *st);

typedef struct edm_rewriter edm_rewriter;
#define EDM_REWRITE_DROP (-2)
/* Returns the new id carrying old node `old`'s value, EDM_REWRITE_DROP, or -1
 * with st set.  n is a copy of the old node with its inputs mapped. */
typedef int (*edm_rewrite_fn)(edm_rewriter *rw, int old, const edm_node *n, void *ctx, edm_status *st);
edm_graph *edm_graph_rewrite(const edm_graph *g, edm_rewrite_fn fn, void *ctx, int *map, edm_status *st);
/* Inside a callback: adds n (inputs are new ids) after inferring its shape; the new id or -1. */
int edm_rewriter_emit(edm_rewriter *rw, const edm_node *n, edm_status *st);
const edm_graph *edm_rewriter_old(const edm_rewriter *rw);
const edm_graph *edm_rewriter_new(const edm_rewriter *rw);
int edm_rewriter_map(const edm_rewriter *rw, int old); /* new id of an earlier old node, or -1 */

/* Shape helpers. */
int64_t edm_shape_numel_per_sample(const edm_shape *s); /* product, batch dim counted as 1 */
int edm_shape_has_batch(const edm_shape *s);
int edm_shape_equal(const edm_shape *a, const edm_shape *b);
/* Whether two dim lists hold the same elements in the same order: equal once
 * their size-1 dims are dropped (a reshape that only adds or drops 1s). */
int edm_dims_same_order(const int64_t *a, int ra, const int64_t *b, int rb);
/* "[N, 4, 16, 16]" into buf (always NUL-terminated). Returns buf. */
char *edm_shape_str(const edm_shape *s, char *buf, size_t size);

/* Compute the output shape/dtype of n from its op, attributes and the graph's
 * inputs.  On error, st holds a message naming both operand shapes (and the
 * positions where they were made). */
int edm_infer_node(const edm_graph *g, edm_node *n, edm_status *st);

#endif
