/* The CUDA backend: the driver API opened at run time, and an executor that
 * runs a graph's generated kernels (codegen/cuda_codegen.h) in node order.
 *
 * libcuda.so.1 is dlopen'ed, never linked, so one edmc binary runs on
 * machines with and without a GPU; without one, edm_cuda_probe says plainly
 * that no driver or no device was found.  Kernels are a package's cubins, or
 * compiled for the device's own architecture (sm_XY from its compute
 * capability) by the compiler the caller installs (NVRTC through the disk
 * cache, for edmc).
 *
 * UNTESTED ON A GPU: this file was written on a machine without a CUDA
 * driver; everything up to dlopen's failure is exercised by `make check`,
 * the rest by tests/gpu/run.sh (docs/cuda.md lists what it must confirm). */
#ifndef EDMC_BACKEND_CUDA_H
#define EDMC_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/cuda_tiles.h"
#include "compiler/ir.h"
#include "compiler/passes/fusion.h"
#include "compiler/status.h"

/* Looks for a driver and a device.  0 and a one-line description in desc
 * ("NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB, driver 13.0"), or -1 with
 * "no CUDA driver (libcuda.so.1 not found)" / "no CUDA device ..." in st. */
int edm_cuda_probe(char *desc, size_t size, edm_status *st);

/* A kernel compiler: CUDA C for arch ("sm_90") into a cubin (*cubin
 * malloc'd, the caller's to free; *seconds the time it took).  The runtime
 * library holds none, so it links neither NVRTC nor the code generator's
 * compiler: a program that compiles kernels installs one (edmc installs
 * edm_nvrtc_compile_kernels, codegen/cuda_nvrtc.h); without one only a
 * package's cubins run. */
typedef int (*edm_cuda_compile_fn)(const char *source, const char *arch, void **cubin, size_t *size,
                                   double *seconds, edm_status *st);

typedef struct {
    edm_dtype storage;  /* the network's activations: EDM_F32 (default), EDM_F16 or EDM_BF16 (the
                           dtype rule of codegen/cuda_codegen.h keeps the rest f32); math is f32 */
    int training;       /* dropout active */
    uint64_t seed;      /* dropout seed */
    int device;         /* ordinal */
    int matmul_library; /* matmul through cuBLASLt (else the generated tiled kernels) */
    int conv_library;   /* convolutions as im2col + cuBLASLt (else generated implicit GEMM) */
    int no_graph;       /* launch node by node (else capture one CUDA Graph at the first run, replay it) */
    int optimizer;      /* compile the optimizer kernels (edm_cuda_opt_*) */
    int no_tensor_cores; /* generated contractions on CUDA cores even where tensor cores could run them */
    const char *network_scope; /* see edm_cuda_options (NULL: "unet"; "": every node) */
    /* fusion rules (compiler/passes/fusion.h); 0: one kernel per node.  Not 0:
     * the graph is rewritten and planned, one generated kernel per plan group
     * runs (contractions as generated implicit GEMMs with their prologues and
     * epilogues inside; matmul_library / conv_library do not apply), and what
     * stays readable after a run is decided here: */
    unsigned fuse;
    int keep_all;       /* every value stays readable */
    const int *keep;    /* these nodes too (ids of g) */
    int nkeep;
    const struct edm_plan_text *plan; /* the fused plan written ahead of time (a package's), or NULL */
    /* ahead-of-time cubins (a package's): the one for the device's
     * architecture and the batch is loaded, and NVRTC is not called; none
     * given (nkernels 0): compiled through NVRTC's cache */
    const struct edm_cuda_kernel_image *kernels;
    int nkernels;
    edm_cuda_compile_fn compile; /* compiles the kernels when there are no cubins (NULL: none can) */
    /* tuning's candidates: this tile for every tensor-core contraction (splits 0: the cost
     * model's for it); bm 0: the tiles measured before (cuda_tiles_file.h), else the cost model's */
    edm_mma_tile mma_tile;
} edm_cuda_exec_options;

/* One cubin compiled ahead of time: for arch ("sm_90") and batch, from the
 * kernel source whose SHA-256 (hex) is source_sha256. */
typedef struct edm_cuda_kernel_image {
    const char *arch;
    int64_t batch;
    const char *source_sha256;
    const void *cubin;
    size_t size;
} edm_cuda_kernel_image;

typedef struct edm_cuda_exec edm_cuda_exec;

/* Opens the device, generates and compiles the graph's kernels (batch
 * bound), plans one memory arena (leaves pinned, activations reused after
 * their last reader) and allocates it. */
edm_cuda_exec *edm_cuda_exec_new(const edm_graph *g, int64_t batch, const edm_cuda_exec_options *opt,
                                 edm_status *st);
void edm_cuda_exec_free(edm_cuda_exec *x);
/* The CUDA C an executor with these options would compile for g at batch
 * on a device of architecture arch ("sm_90"; tensor cores from sm_80)
 * (malloc'd into *source), without a device: what `edmc compile` hands to
 * NVRTC ahead of time.  layout (may be NULL): the fused plan's memory as
 * such an executor binds it (edm_plan_layout_free; no values unfused). */
int edm_cuda_exec_source(const edm_graph *g, int64_t batch, const edm_cuda_exec_options *opt, const char *arch,
                         char **source, edm_plan_layout *layout, edm_status *st);

/* One kernel's time in a profiled run. */
typedef struct {
    char kernel[48];
    double ms;
    int steps;            /* plan steps it runs */
    edm_mma_key mma;      /* a tensor-core contraction: which (op "" otherwise) */
    edm_mma_tile mma_tile; /* and its tile */
} edm_cuda_profile_row;

/* Runs a fused plan once, launch by launch, with a CUDA event before and
 * after each kernel: *rows (malloc'd, one per kernel in launch order).  Not
 * for the unfused path (its GEMMs are library calls between kernels). */
int edm_cuda_exec_profile(edm_cuda_exec *x, edm_cuda_profile_row **rows, int *nrows, edm_status *st);

/* Sets a leaf (input, param, buffer) from f32 host data (converted to the storage type on the device). */
int edm_cuda_exec_set_f32(edm_cuda_exec *x, const char *name, const float *data, int64_t n, edm_status *st);
void edm_cuda_exec_set_seed(edm_cuda_exec *x, uint64_t seed);
/* Launches every kernel in node order on one stream and waits for them. */
int edm_cuda_exec_run(edm_cuda_exec *x, edm_status *st);
/* Copies a value out as f32.  Only values alive at the end are valid: the
 * outputs, leaves, and every value when keep_all was asked for. */
int edm_cuda_exec_get_f32(edm_cuda_exec *x, int node, float *out, int64_t n, edm_status *st);
int64_t edm_cuda_exec_numel(const edm_cuda_exec *x, int node);
/* Keep every value (no reuse): for op-by-op comparison with the CPU backend.
 * Must be called before the first run; 0 or -1 (out of device memory). */
int edm_cuda_exec_keep_all(edm_cuda_exec *x, edm_status *st);
/* Bytes of device memory the arena takes; the name of the device. */
size_t edm_cuda_exec_arena_bytes(const edm_cuda_exec *x);
const char *edm_cuda_exec_device_name(const edm_cuda_exec *x);
/* Its architecture, "sm_90". */
const char *edm_cuda_exec_arch(const edm_cuda_exec *x);
/* NVRTC (or cache) seconds spent on the kernels. */
double edm_cuda_exec_compile_seconds(const edm_cuda_exec *x);

/* ------------------------------------------------------------------ the trainer's state on the device
 *
 * Parameters are leaves stored f32 in the arena: they are the master
 * weights.  edm_cuda_opt_attach gives each Adam's m and v on the device,
 * and an f32 gradient accumulator on first use; the step then never leaves
 * the GPU:
 *     force_wn → zero_grad → (set inputs, run, accumulate)× → adam
 * and the host reads the state back only for EMA, snapshots and checkpoints.
 * A step of one pass on one rank needs no accumulator: after
 * edm_cuda_opt_direct_grads(x, 1) zero_grad and accumulate do nothing, Adam
 * reads the run's kept gradients (the same bits), and the accumulators'
 * memory (4 bytes per parameter) is never taken; it is chosen before the
 * first step (an error once the accumulators exist). */

typedef struct {
    int node;      /* PARAM */
    int grad_node; /* OUTPUT grad.<name> */
    int forced_wn;
    int64_t rows;  /* dim 0 (forced WN normalizes each row) */
} edm_cuda_opt_param;

int edm_cuda_opt_attach(edm_cuda_exec *x, const edm_cuda_opt_param *p, int n, edm_status *st);
int edm_cuda_opt_direct_grads(edm_cuda_exec *x, int on, edm_status *st);
/* w ← w / (1e-4 + rms(row)) for the forced-WN parameters. */
int edm_cuda_opt_force_wn(edm_cuda_exec *x, edm_status *st);
int edm_cuda_opt_zero_grad(edm_cuda_exec *x, edm_status *st);
/* After a run: accumulators += the gradients of this run. */
int edm_cuda_opt_accumulate(edm_cuda_exec *x, edm_status *st);
/* Non-finite accumulated gradients count as 0 (their number in *nonfinite),
 * then one Adam step; step counts from 1. */
int edm_cuda_opt_adam(edm_cuda_exec *x, double lr, double beta1, double beta2, double eps, int64_t step,
                      int64_t *nonfinite, edm_status *st);
/* Parameter i's master weight, m and v (any may be NULL), n elements, to or from the host. */
int edm_cuda_opt_download(edm_cuda_exec *x, int i, float *value, float *m, float *v, int64_t n, edm_status *st);
int edm_cuda_opt_upload(edm_cuda_exec *x, int i, const float *value, const float *m, const float *v, int64_t n,
                        edm_status *st);
/* The accumulated gradient of parameter i (tests). */
int edm_cuda_opt_download_grad(edm_cuda_exec *x, int i, float *grad, int64_t n, edm_status *st);
/* Data parallel with a device collective (NCCL): the device address of
 * parameter i's f32 accumulator (0 when i is out of range, before the first
 * accumulation or with direct gradients), the stream the
 * step's work is queued on (a CUstream), and a wait for that stream. */
unsigned long long edm_cuda_opt_grad_ptr(const edm_cuda_exec *x, int i);
void *edm_cuda_exec_stream(const edm_cuda_exec *x);
int edm_cuda_exec_sync(edm_cuda_exec *x, edm_status *st);
/* The accumulator of parameter i from the host (a data-parallel run's reduced gradient). */
int edm_cuda_opt_upload_grad(edm_cuda_exec *x, int i, const float *grad, int64_t n, edm_status *st);

/* Overlapping a device collective with the backward pass (runtime/grad_buckets.h).
 *
 * A run has edm_cuda_exec_launches positions (the fused plan's groups, or the
 * nodes); edm_cuda_opt_grad_ready says after which one parameter i's
 * gradient is final (-1: before the run).  edm_cuda_exec_run_cut runs like
 * edm_cuda_exec_run but calls at(ctx, k) right after queueing launch cut[k]
 * (cuts in ascending order, -1 allowed), with one CUDA Graph per segment
 * between cuts; at may queue more work: edm_cuda_opt_accumulate_some (the
 * accumulators of those parameters += their gradients, queued, not waited
 * for), then edm_cuda_exec_comm_waits (the collective's stream waits, through
 * an event, for everything queued so far on the executor's stream) and the
 * collective on edm_cuda_exec_comm_stream.  Before the accumulators are read
 * again, edm_cuda_exec_compute_waits makes the executor's stream wait for
 * the collective's. */
int edm_cuda_exec_launches(const edm_cuda_exec *x);
int edm_cuda_opt_grad_ready(const edm_cuda_exec *x, int i);
int edm_cuda_exec_run_cut(edm_cuda_exec *x, const int *cut, int ncut, int (*at)(void *ctx, int k, edm_status *st),
                          void *ctx, edm_status *st);
int edm_cuda_opt_accumulate_some(edm_cuda_exec *x, const int *which, int n, edm_status *st);
/* The collective's stream (a CUstream, made on first use; NULL with st filled on error). */
void *edm_cuda_exec_comm_stream(edm_cuda_exec *x, edm_status *st);
int edm_cuda_exec_comm_waits(edm_cuda_exec *x, edm_status *st);
int edm_cuda_exec_compute_waits(edm_cuda_exec *x, edm_status *st);
/* Waits for the work queued on a stream of this executor. */
int edm_cuda_exec_sync_stream(edm_cuda_exec *x, void *stream, edm_status *st);
/* Makes the executor's context (its device) current on the calling thread:
 * for another thread that calls the driver or a library that takes the
 * thread's device, as ncclCommInitRank does. */
int edm_cuda_exec_bind_thread(edm_cuda_exec *x, edm_status *st);

/* Power-function EMAs of the parameters on the device (runtime/phema.c's
 * arithmetic): `count` f32 copies, each initialised to the current weights. */
int edm_cuda_opt_ema_attach(edm_cuda_exec *x, int count, edm_status *st);
/* ema_k ← β_k·ema_k + (1−β_k)·w for every parameter, k < count. */
int edm_cuda_opt_ema_update(edm_cuda_exec *x, const double *beta, edm_status *st);
/* EMA k of parameter i, n elements, to or from the host. */
int edm_cuda_opt_ema_download(edm_cuda_exec *x, int k, int i, float *out, int64_t n, edm_status *st);
int edm_cuda_opt_ema_upload(edm_cuda_exec *x, int k, int i, const float *in, int64_t n, edm_status *st);

/* Device bytes held in all (arena, workspace, staging, optimizer state) and
 * what the arena would take with no reuse. */
size_t edm_cuda_exec_device_bytes(const edm_cuda_exec *x);
size_t edm_cuda_exec_total_bytes(const edm_cuda_exec *x);
/* "NVIDIA H100 80GB HBM3 (sm_90), f16, matmul cuBLASLt, conv im2col+cuBLASLt, graph" */
const char *edm_cuda_exec_describe(const edm_cuda_exec *x);
/* Finds a leaf or output by name (-1 if none). */
int edm_cuda_exec_find(const edm_cuda_exec *x, edm_op op, const char *name);

#endif
