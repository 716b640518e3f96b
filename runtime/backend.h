/* One interface over the executors: the CPU reference backend
 * (runtime/backend_cpu.h) and the CUDA backend (runtime/backend_cuda.h).
 *
 * Everything above the executors (forward, bench, the denoiser and sampler,
 * the evaluator, the trainer) runs a graph through this interface, so
 * `--device=cuda` is one option, not a second code path.  Values cross it
 * as f32 (or f64) host arrays whatever the device stores. */
#ifndef EDMC_BACKEND_H
#define EDMC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/ir.h"
#include "compiler/status.h"
#include "runtime/backend_cpu.h"
#include "runtime/backend_cuda.h"

typedef enum {
    EDM_DEVICE_CPU,
    EDM_DEVICE_CUDA,
} edm_device;

/* How the CUDA backend computes contractions (ablations, one flag each). */
typedef enum {
    EDM_MATMUL_CUBLASLT,  /* matmul through cuBLASLt (default) */
    EDM_MATMUL_GENERATED, /* matmul as a generated tiled kernel */
} edm_matmul_mode;

typedef enum {
    EDM_CONV_IM2COL,   /* im2col (skipped for 1×1) + cuBLASLt GEMM (default) */
    EDM_CONV_IMPLICIT, /* generated implicit-GEMM kernel */
} edm_conv_mode;

typedef struct {
    edm_device device;
    /* CPU: compute precision and threads; both: training (dropout), seed, keep_all/keep */
    edm_cpu_options cpu;
    /* CUDA: storage of the network's activations (EDM_F16 default, EDM_BF16, EDM_F32);
     * leaves, reductions, softmax, preconditioning and loss stay f32 */
    edm_dtype storage;
    edm_matmul_mode matmul;
    edm_conv_mode conv;
    int no_graph;     /* CUDA: launch node by node instead of replaying a captured CUDA Graph */
    int no_tensor_cores; /* CUDA: generated contractions on CUDA cores, not tensor cores (an ablation) */
    int optimizer;    /* CUDA: also compile Adam / forced WN / accumulation kernels (the trainer) */
    int cuda_device;  /* ordinal */
    const char *network_scope; /* CUDA: the instance stored as `storage` (NULL: "unet"; "": all) */
    /* CUDA: cubins compiled ahead of time (a package's; runtime/backend_cuda.h), or none */
    const struct edm_cuda_kernel_image *kernels;
    int nkernels;
    /* CUDA: the kernel compiler for runs without cubins (runtime/backend_cuda.h; NULL: none) */
    edm_cuda_compile_fn compile_kernels;
    /* CUDA, tuning's candidates: this tile for every tensor-core contraction (splits 0: the
     * cost model's for it); bm 0: the tiles measured before, else the cost model's */
    edm_mma_tile mma_tile;
} edm_backend_options;

/* The options of a CPU run with `threads` threads in f32. */
edm_backend_options edm_backend_defaults(edm_device device);

/* Parses "cpu" / "cuda"; 0 or -1. */
int edm_device_from_name(const char *name, edm_device *out);

typedef struct edm_backend edm_backend;

/* Binds the batch size, plans memory; for CUDA also opens the device and
 * compiles the kernels (through the disk cache). */
edm_backend *edm_backend_new(const edm_graph *g, int64_t batch, const edm_backend_options *opt, edm_status *st);
void edm_backend_free(edm_backend *b);
/* CUDA: the kernel source edm_backend_new would compile for g at batch on a
 * GPU of architecture arch ("sm_90") (malloc'd), made without a device, and
 * (layout not NULL) the fused plan's memory as it binds it. */
int edm_backend_kernel_source(const edm_graph *g, int64_t batch, const edm_backend_options *opt, const char *arch,
                              char **source, edm_plan_layout *layout, edm_status *st);

edm_device edm_backend_device(const edm_backend *b);
/* One line: "cpu f32, 2 threads" or "cuda NVIDIA H100 80GB HBM3 (sm_90), f16, cuBLASLt, graph". */
const char *edm_backend_describe(const edm_backend *b);

/* The node id of a leaf or output by name, or -1. */
int edm_backend_find(const edm_backend *b, edm_op op, const char *name);
int64_t edm_backend_numel(const edm_backend *b, int node);

/* Sets a leaf (input, parameter or buffer) by name; n must equal its element count. */
int edm_backend_set_f32(edm_backend *b, const char *name, const float *data, int64_t n, edm_status *st);
int edm_backend_set_f64(edm_backend *b, const char *name, const double *data, int64_t n, edm_status *st);
/* The dropout seed of the next runs. */
void edm_backend_set_seed(edm_backend *b, uint64_t seed);
/* CUDA: one run of a fused plan with each kernel timed (edm_cuda_exec_profile). */
int edm_backend_profile(edm_backend *b, edm_cuda_profile_row **rows, int *nrows, edm_status *st);
/* Runs the graph; returns when the results can be read. */
int edm_backend_run(edm_backend *b, edm_status *st);
/* Reads a value kept after the run (outputs, leaves, keep list / keep_all). */
int edm_backend_get_f32(edm_backend *b, int node, float *out, int64_t n, edm_status *st);
int edm_backend_get_f64(edm_backend *b, int node, double *out, int64_t n, edm_status *st);

/* Memory: CPU: activation bytes allocated (best-fit reuse) and what they
 * would take without reuse.  CUDA: the device bytes this backend holds
 * (arena, workspace, staging) and the arena without reuse. */
size_t edm_backend_peak_bytes(const edm_backend *b);
size_t edm_backend_total_bytes(const edm_backend *b);

/* The executors themselves (NULL when the backend is the other kind). */
edm_cpu *edm_backend_cpu(edm_backend *b);
struct edm_cuda_exec *edm_backend_cuda(edm_backend *b);

#endif
