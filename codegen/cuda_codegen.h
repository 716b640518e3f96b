/* CUDA C code generation: one kernel per compute node of a bound graph.
 *
 * Shapes (with the batch N bound), strides and constants are baked into the
 * text.  All arithmetic is f32 (reductions and the optimizer in f64, like the
 * CPU reference).  The source needs no header: f16/bf16 conversions are
 * three named helpers (edm_cvt_f32_f16, edm_cvt_rn_f16_f32,
 * edm_cvt_rn_bf16_f32), inline PTX (cvt) under #ifdef __CUDA_ARCH__, so NVRTC
 * compiles it with no include path; on the host, the emulating driver's
 * header (tests/emu/cuda_emu.h) defines them.
 *
 * Storage types (the dtype rule, the reference's mixed precision: the network in
 * f16, the norms, softmax, preconditioning and loss in f32).  With
 * opt.storage = f32 every value is f32.  Otherwise a value is stored f32 when
 *   - it is a leaf (input, param, buffer, const): parameters are the f32 master weights;
 *   - its op is sum, sumsq or conv2d_bwd_weight (norms, parameter gradients
 *     accumulated over the batch); softmax computes in f32/f64 but stores
 *     its weights like the reference's fp16 attention, so P·V stays one
 *     cuBLASLt GEMM of like types;
 *   - its node's scope is neither opt.network_scope nor below it ("unet",
 *     "unet.enc…"; NULL means "unet", "" means every node): the
 *     preconditioning, the loss and their gradients live outside the U-Net;
 * aliases (reshape, output, dropout when not training) take their base's
 * type, and every other value is stored as opt.storage.  launch[i].dtype
 * says which.  The device types are `float`, `h16` (IEEE half) and `b16`
 * (bfloat16), two-byte structs with overloaded ld()/st().
 *
 * Every node kernel has the signature
 *     extern "C" __global__ void kID_OP(TY *y, const TA *a, const TB *b, const unsigned long long *seed)
 * with TY/TA/TB the concrete types of its value and inputs (`const float *`
 * for absent inputs, passed NULL); seed points at the run's block in device
 * memory: seed[0] the dropout seed, so a captured CUDA Graph replays with a
 * new seed; seed[1] and seed[2] the addresses of the split-K workspace and
 * its counts (splitk_floats, splitk_counts of the module).  Nodes whose code
 * would be identical share one function (named after the first such node).
 *
 * Contractions (conv2d, conv2d_bwd_data, conv2d_bwd_weight, matmul) are
 * generated as tiled implicit-GEMM kernels (64×64 tiles, f32 accumulation),
 * correct for every shape; with tensor_cores, those of the network (stored
 * f16/bf16) as mma.sync kernels instead (codegen/cuda_gemm_mma.h).  With gemm_library set, each also gets a GEMM
 * descriptor for cuBLASLt (strided batched, row-major terms), and
 * convolutions that need one get im2col / col2im kernels:
 *   conv2d (x, w) → y:             C = y, A = w, B = col(x)
 *   conv2d_bwd_data (dy, w) → dx:  C = col, A = w (trans_a), B = dy; then col2im(col) → dx
 *   conv2d_bwd_weight (x, dy) → dw: C = dw (f32, accumulate: Σ over the batch), A = dy,
 *                                  B = col(x) (trans_b)
 *   matmul (a, b) → y:             C = y, A = a, B = b
 * im2col:  kID_im2col(Tcol *col, const Tx *x, long long n0, long long count) fills
 *          col[count][C·k·k][OH·OW] from samples [n0, n0+count);
 * col2im:  kID_col2im(Tdx *dx, const Tcol *col, long long n0, long long count) gathers
 *          dx for samples [n0, n0+count) from col[count][C·k·k][OH·OW] (no atomics).
 * The col buffer's type is the type of x (im2col) or of dx (col2im). */
#ifndef EDMC_CUDA_CODEGEN_H
#define EDMC_CUDA_CODEGEN_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/cuda_gemm_mma.h"
#include "codegen/cuda_tiles.h"
#include "compiler/ir.h"
#include "compiler/status.h"

typedef struct {
    edm_dtype storage; /* the network's activations: EDM_F32, EDM_F16 or EDM_BF16 (see the dtype rule) */
    int64_t batch;     /* binds N (>= 1) */
    int training;      /* dropout draws its mask (else it is an alias) */
    int gemm_library;  /* also emit the cuBLASLt path's helpers and descriptors */
    int optimizer;     /* also emit Adam, forced WN, gradient accumulation, EMA */
    int tensor_cores;  /* the network's generated contractions on tensor cores (storage f16/bf16, sm_80+):
                        * codegen/cuda_gemm_mma.h */
    edm_mma_tile mma_tile; /* tests and tuning: this tile (and splits, where a GEMM may split) for every
                            * tensor-core contraction, splits 0: the cost model's for that tile; bm 0:
                            * the choice of `tiles`, else the cost model's */
    const edm_mma_tiles *tiles; /* tiles measured on the device (cuda_tiles.h), or NULL */
    int index_bits;    /* 64: the kernels' index arithmetic in 64 bits; 0: 32 bits where every value fits */
    int conv_channel_major; /* tensor-core convolutions keep k channel-major (not a tap a k tile): an ablation */
    int no_ldmatrix;   /* tensor-core fragments read from shared memory word by word, not by ldmatrix: an ablation */
    int no_conv_halo;  /* forward convolutions read their activations directly, not through a halo tile: an ablation */
    int no_cp_async;   /* the weights' k tiles through registers, not copied by cp.async: an ablation */
    int no_wide_loads; /* the weight gradients' dy read a pair at a time, not eight elements a load: an ablation */
    int tiles_by_loads; /* the tile cost model without issue time (cuda_gemm_mma.h, model 0): an ablation */
    int one_block_tiles; /* the cost model may give a body that spills at 128x128 that tile one block an SM
                          * (EDM_MMA_ONE_BLOCK): a candidate for the GPU to judge */
    const char *network_scope; /* the instance stored as `storage` (NULL: "unet"; "": all) */
} edm_cuda_options;

typedef enum {
    EDM_CUDA_NONE,   /* leaf set by the host: input, param, buffer */
    EDM_CUDA_ALIAS,  /* reshape, output, dropout when not training: the input's memory */
    EDM_CUDA_KERNEL, /* one launch of `kernel` */
} edm_cuda_kind;

/* A contraction as a (strided batched) GEMM in row-major terms:
 * C[z] (m×n) = op(A[z]) (m×k) · op(B[z]) (k×n), A[z] at a + z·stride_a, etc.
 * (strides in elements; 0: the same matrix for every z).  Which of the
 * weight, the col buffer ([samples][C·k·k][OH·OW]), x, dy and the output A,
 * B and C are: the table at the top of this file.  accumulate: sum over z
 * into one C (conv2d_bwd_weight). */
typedef struct {
    int64_t m, n, k;
    int trans_a, trans_b;
    int64_t count; /* batch entries */
    int64_t stride_a, stride_b, stride_c;
    int accumulate;
    edm_dtype type_a, type_b, type_c; /* element types of A, B, C (the col buffer: the input's type) */
    /* convolutions only: the col buffer is not needed (1×1, stride 1, no padding): B (CONV2D,
     * CONV2D_BWD_WEIGHT) is the input itself, C (CONV2D_BWD_DATA) is dx itself, with the
     * strides above already the per-sample strides of those values */
    int direct;
} edm_cuda_gemm;

#define EDM_CUDA_NAME 48

typedef struct {
    int node;
    edm_cuda_kind kind;
    edm_dtype dtype;            /* storage of the node's value (ALIAS: its base's) */
    char kernel[EDM_CUDA_NAME]; /* KERNEL: the function to launch */
    unsigned grid[3], block[3];
    unsigned smem;   /* dynamic shared memory (bytes) */
    int64_t numel;   /* elements of the node's value, batch bound */
    int cublaslt;    /* a contraction with a valid `gemm` (gemm_library only) */
    edm_cuda_gemm gemm;
    char im2col[EDM_CUDA_NAME], col2im[EDM_CUDA_NAME]; /* conv helpers ("" if none) */
    edm_mma_key mma;      /* a tensor-core contraction: which (for tuning; op "" otherwise) */
    edm_mma_tile mma_tile; /* and the tile it runs */
} edm_cuda_launch;

typedef struct {
    char *source; /* NUL-terminated CUDA C */
    size_t len;
    edm_cuda_launch *launch; /* one per graph node, in node order */
    int nlaunch;
    int nkernels;  /* distinct __global__ functions in source */
    int nshared;   /* KERNEL nodes that reuse another node's function */
    int64_t splitk_floats, splitk_counts; /* the split-K workspace its kernels need (cuda_gemm_mma.h) */
} edm_cuda_module;

/* The settings the environment forces for tests, tuning and ablations (the
 * executor and `edmc dump --stage=cuda` both read them): EDMC_MMA_TILE=BMxBN[/SPLITS][@1]
 * (every tensor-core contraction's tile; @1 one block an SM), EDMC_INDEX_BITS=64 (wide index
 * arithmetic), EDMC_CONV_ORDER=channel|tap (the tensor-core convolutions' k
 * order, docs/cuda.md), EDMC_LDMATRIX=off (the fragments word by word), EDMC_CONV_HALO=off (no halo
 * tiles), EDMC_CP_ASYNC=off (the weights' tiles through registers), EDMC_WIDE_LOADS=off (the weight
 * gradients' dy a pair a load), EDMC_TILE_MODEL=loads (the tile cost model without issue time),
 * EDMC_ONE_BLOCK_TILES=on (the cost model may take 128×128 one block an SM).  A
 * malformed value: -1 with st set. */
int edm_cuda_options_env(edm_cuda_options *co, edm_status *st);

/* Generates the module for g.  The text is deterministic: the same graph and
 * options give the same bytes. */
int edm_cuda_codegen(const edm_graph *g, const edm_cuda_options *opt, edm_cuda_module *m, edm_status *st);
/* The storage type of every value of g under opt (the dtype rule above):
 * out has one entry per node. */
int edm_cuda_value_types(const edm_graph *g, const edm_cuda_options *opt, edm_dtype *out, edm_status *st);
void edm_cuda_module_free(edm_cuda_module *m);

/* Kernels emitted besides the node kernels (f32 = float; T = float, h16 or b16):
 * always:
 *   edm_cast_from_f32_<t>(T *y, const float *x, long long n)   for t = f32, f16, bf16
 *   edm_cast_to_f32_<t>(float *y, const T *x, long long n)
 * with opt.optimizer (parameters are f32 leaves: the masters):
 *   edm_grad_acc_<t>(float *acc, const T *g, long long n)       acc += g
 *   edm_force_wn(float *w, long long rows, long long fan_in)
 *       w ← w / (1e-4 + rms(row)), one block (256 threads) per row, f64 sum
 *   edm_adam(float *w, float *m, float *v, const float *g, long long n, double lr,
 *            double beta1, double beta2, double eps, double c1, double c2,
 *            unsigned long long *nonfinite)
 *       NaN/Inf gradients count as 0 (and are counted, atomically); c1 = 1-β1^t, c2 = 1-β2^t;
 *       f64 arithmetic as runtime/train.c
 *   edm_ema(float *ema, const float *w, long long n, double beta)   ema ← β·ema + (1-β)·w
 *       in runtime/phema.c's f32 arithmetic (torch's lerp with weight (float)(1-β))
 * All take 256-thread blocks and loop grid-stride over n (edm_force_wn over rows:
 * any grid; one block per row is the natural one).  These kernels contract no
 * a·b+c to an fma, so Adam and the EMA round as the CPU code does. */

/* The dtype-name suffix of the kernels above ("f32", "f16", "bf16"; another
 * type gives its edm_dtype_name, which no kernel carries). */
const char *edm_cuda_dtype_suffix(edm_dtype t);

/* ------------------------------------------------------------------ fused plans
 * One kernel per step of an execution plan (compiler/passes/fusion.h), over
 * the graph the plan was made from: the core's body as for a node (the tiled
 * GEMM, the reduction, the layout op) with each operand read through the
 * step's prologue and each value stored through its epilogue; a step without
 * a core is one elementwise loop.  Inlined values live in registers (f32);
 * stored ones follow the dtype rule above.  Every kernel has the signature
 *     extern "C" __global__ void sS_OP(TY *y, const T0 *i0, const T1 *i1, ..., const unsigned long long *seed)
 * with y the root's memory and i0.. the stored values the step reads (their
 * bases, launch.inputs order; constants are literals, never inputs).  The
 * module also carries the cast kernels and (opt.optimizer) the optimizer's,
 * as above, so the executor needs no second module. */
#define EDM_CUDA_MAX_STEP_INPUTS 64

typedef struct {
    int step;
    char kernel[EDM_CUDA_NAME];
    unsigned grid[3], block[3];
    edm_dtype dtype; /* the root's storage */
    int ninputs;
    int inputs[EDM_CUDA_MAX_STEP_INPUTS]; /* value ids (bases) */
    int barrier; /* its code calls __syncthreads */
    unsigned smem; /* dynamic shared memory (bytes): a convolution's halo stages */
    edm_mma_key mma;      /* its core, a tensor-core contraction: which (op "" otherwise) */
    edm_mma_tile mma_tile; /* and the tile it runs */
} edm_cuda_step_launch;

/* One launch per plan group: its steps' kernels, or (a group of several
 * independent steps: the weight preparation, the weight gradients) one
 * kernel whose blocks are shared out among them in order:
 *     extern "C" __global__ void gG_NAME(void *const *a, const unsigned long long *seed)
 * with a a table in device memory holding each step's parameters (root,
 * then inputs) one step after the other (a group may have hundreds: more
 * than a launch's parameter space holds). */
typedef struct {
    char kernel[EDM_CUDA_NAME];
    unsigned grid[3], block[3];
    unsigned smem; /* dynamic shared memory (bytes) */
    int first_step, nsteps;
} edm_cuda_group_launch;

typedef struct {
    char *source;
    size_t len;
    edm_cuda_step_launch *launch; /* one per plan step */
    int nlaunch;
    edm_cuda_group_launch *group; /* one per plan group: what runs */
    int ngroups;
    edm_dtype *dtype; /* storage of every value of the plan's graph */
    int64_t splitk_floats, splitk_counts; /* the split-K workspace its kernels need (cuda_gemm_mma.h) */
} edm_cuda_plan_module;

struct edm_plan;
int edm_cuda_codegen_plan(const struct edm_plan *plan, const edm_cuda_options *opt, edm_cuda_plan_module *m,
                          edm_status *st);
void edm_cuda_plan_module_free(edm_cuda_plan_module *m);

#endif
