/* CUDA C code generation: one kernel per compute node of a bound graph.
 *
 * Shapes (with the batch N bound), strides and constants are baked into the
 * text.  Values are stored as f32, f16 or bf16 (the storage type `T` of the
 * source) and all arithmetic is f32 (reductions and the optimizer in f64,
 * like the CPU reference).  The source needs no header: f16/bf16 conversions
 * are inline PTX (cvt), so NVRTC compiles it with no include path.
 *
 * Every node kernel has the same signature
 *     extern "C" __global__ void kID_OP(T *y, const T *a, const T *b, unsigned long long seed)
 * (a, b: the node's inputs in order, NULL where it has fewer; seed: the
 * dropout seed), so an executor can launch any of them alike.  Nodes whose
 * code would be identical share one function (named after the first such
 * node), which keeps the NVRTC program small.
 *
 * Contractions (conv2d, conv2d_bwd_data, conv2d_bwd_weight, matmul) are
 * generated as tiled implicit-GEMM kernels (64×64 tiles, f32 accumulation),
 * correct for every shape.  With gemm_library set, each also gets a GEMM
 * descriptor for cuBLASLt (strided batched), and convolutions get im2col /
 * col2im kernels for that path. */
#ifndef EDMC_CUDA_CODEGEN_H
#define EDMC_CUDA_CODEGEN_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/ir.h"
#include "compiler/status.h"

typedef struct {
    edm_dtype storage; /* EDM_F32, EDM_F16 or EDM_BF16 */
    int64_t batch;     /* binds N (>= 1) */
    int training;      /* dropout draws its mask (else it is an alias) */
    int gemm_library;  /* also emit the cuBLASLt path's helpers and descriptors */
    int optimizer;     /* also emit Adam, forced WN, gradient accumulation */
} edm_cuda_options;

typedef enum {
    EDM_CUDA_NONE,   /* leaf set by the host: input, param, buffer */
    EDM_CUDA_ALIAS,  /* reshape, output, dropout when not training: the input's memory */
    EDM_CUDA_KERNEL, /* one launch of `kernel` */
} edm_cuda_kind;

/* A contraction as a (strided batched) GEMM in row-major terms:
 * C[z] (m×n) = op(A[z]) (m×k) · op(B[z]) (k×n), A[z] at a + z·stride_a, etc.
 * For convolutions A, B, C refer to the weight, the im2col buffer
 * ([samples][C·k·k][OH·OW]) and the output; accumulate: sum over z into one
 * C (conv2d_bwd_weight). */
typedef struct {
    int64_t m, n, k;
    int trans_a, trans_b;
    int64_t count; /* batch entries */
    int64_t stride_a, stride_b, stride_c;
    int accumulate;
} edm_cuda_gemm;

#define EDM_CUDA_NAME 48

typedef struct {
    int node;
    edm_cuda_kind kind;
    char kernel[EDM_CUDA_NAME]; /* KERNEL: the function to launch */
    unsigned grid[3], block[3];
    unsigned smem;   /* dynamic shared memory (bytes) */
    int64_t numel;   /* elements of the node's value, batch bound */
    int cublaslt;    /* a contraction with a valid `gemm` (gemm_library only) */
    edm_cuda_gemm gemm;
    char im2col[EDM_CUDA_NAME], col2im[EDM_CUDA_NAME]; /* conv helpers ("" if none) */
} edm_cuda_launch;

typedef struct {
    char *source; /* NUL-terminated CUDA C */
    size_t len;
    edm_cuda_launch *launch; /* one per graph node, in node order */
    int nlaunch;
    int nkernels;  /* distinct __global__ functions in source */
    int nshared;   /* KERNEL nodes that reuse another node's function */
} edm_cuda_module;

/* Whether codegen handles op (every op of the table does; the unit test checks). */
int edm_cuda_op_supported(edm_op op);

/* Generates the module for g.  The text is deterministic: the same graph and
 * options give the same bytes. */
int edm_cuda_codegen(const edm_graph *g, const edm_cuda_options *opt, edm_cuda_module *m, edm_status *st);
void edm_cuda_module_free(edm_cuda_module *m);

/* The optimizer kernels emitted with opt.optimizer (their signatures):
 *   edm_cast_from_f32(T *y, const float *x, long long n)
 *   edm_cast_to_f32(float *y, const T *x, long long n)
 *   edm_grad_acc(float *acc, const T *g, long long n)             acc += g
 *   edm_force_wn(float *w, T *w_store, long long rows, long long fan_in)
 *       w ← w / (1e-4 + rms(row)), one block (256 threads) per row
 *   edm_adam(float *w, float *m, float *v, const float *g, T *w_store, long long n,
 *            double lr, double beta1, double beta2, double eps, double c1, double c2,
 *            unsigned long long *nonfinite)
 *       NaN/Inf gradients count as 0 (and are counted); c1 = 1-β1^t, c2 = 1-β2^t.
 * edm_cast_* are always emitted (uploading f32 host data to T storage). */

#endif
