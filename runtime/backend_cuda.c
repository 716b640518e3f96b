/* The CUDA backend (see backend_cuda.h).
 *
 * UNTESTED ON A GPU in the session that wrote it: `make check` runs the
 * host side against a fake driver (tests/fakecuda: every copy, launch
 * geometry and cuBLASLt layout validated, no kernel executed) and the
 * numbers against the emulating driver (tests/emu: the generated kernels
 * compiled for and run on the CPU); tests/gpu/run.sh checks them on a lent
 * GPU (docs/cuda.md). */
#include "config.h"

#include "runtime/backend_cuda.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cubin_bundle.h"
#include "codegen/cuda_codegen.h"
#include "runtime/checksum.h"
#include "compiler/passes/fusion.h"
#include "runtime/clock.h"
#include "runtime/cuda_api.h"
#include "runtime/cuda_tiles_file.h"
#include "runtime/cuda_gemm.h"

/* Host ↔ device transfers of non-f32 values go through an f32 staging
 * buffer of this many elements, in chunks. */
#define STAGING_ELEMS ((int64_t)1 << 22)
/* cuBLASLt's workspace, and the most an im2col buffer may take (samples are
 * processed in chunks that fit). */
#define LT_WORKSPACE_BYTES ((size_t)32 << 20)
#define COL_LIMIT_BYTES ((int64_t)256 << 20)
/* $EDMC_CUDA_CHUNK_BYTES overrides that limit for the im2col buffer and the
 * weight-gradient partials: a test forces several chunks and a tail with it. */

int edm_cuda_probe(char *desc, size_t size, edm_status *st)
{
    cu_api api;
    if (cu_api_open(&api, st) != 0)
        return -1;
    int rc = cu_api_init(&api, st);
    cu_device dev = 0;
    char name[256] = "";
    int major = 0, minor = 0, driver = 0;
    size_t mem = 0;
    if (rc == 0)
        rc = cu_check(&api, api.DeviceGet(&dev, 0), "cuDeviceGet", st);
    if (rc == 0)
        rc = cu_check(&api, api.DeviceGetName(name, (int)sizeof name, dev), "cuDeviceGetName", st);
    if (rc == 0)
        rc = cu_check(&api, api.DeviceGetAttribute(&major, CU_ATTR_CC_MAJOR, dev), "cuDeviceGetAttribute", st);
    if (rc == 0)
        rc = cu_check(&api, api.DeviceGetAttribute(&minor, CU_ATTR_CC_MINOR, dev), "cuDeviceGetAttribute", st);
    if (rc == 0)
        rc = cu_check(&api, api.DeviceTotalMem(&mem, dev), "cuDeviceTotalMem", st);
    if (rc == 0)
        rc = cu_check(&api, api.DriverGetVersion(&driver), "cuDriverGetVersion", st);
    if (rc == 0)
        snprintf(desc, size, "%s, sm_%d%d, %.1f GiB, driver %d.%d", name, major, minor, (double)mem / (1 << 30),
                 driver / 1000, driver % 1000 / 10);
    cu_api_close(&api);
    return rc;
}

/* ------------------------------------------------------------------ state */

typedef struct {
    int base;       /* the value whose memory this one uses (itself unless an alias) */
    int64_t offset; /* bytes into the arena (bases only; -1: none, an inlined value) */
    int64_t bytes;
    int keep;
} value_plan;

/* How one contraction runs on the library path (cuBLASLt). */
typedef struct {
    int use;              /* 0: the generated kernel runs instead */
    int64_t chunk;        /* samples per im2col / batched call (convolutions) */
    cuda_gemm_call full;  /* `chunk` entries (or the matmul's count) */
    cuda_gemm_call tail;  /* the last, smaller chunk (count 0: none) */
    /* conv2d_bwd_weight: full/tail write one f32 partial dw per sample; these
     * sum a chunk's partials into dw (ones[1×chunk] · partials[chunk×O·C·k·k]) */
    cuda_gemm_call sum_full, sum_tail;
    cu_function im2col, col2im;
} gemm_plan;

typedef struct {
    int node, grad_node, forced_wn;
    int64_t rows, numel;
    cu_ptr m, v, acc; /* f32 on the device */
} opt_param;

struct edm_cuda_exec {
    const edm_graph *g;      /* what runs: the caller's graph, or its fusion rewrite */
    const edm_graph *user_g; /* the graph the caller names nodes in */
    edm_graph *own_g;        /* the rewrite (NULL: none) */
    int *map;                /* user node id → id in g (-1: removed) */
    edm_cuda_exec_options opt;
    int64_t batch;
    /* --fuse: an execution plan (compiler/passes/fusion.h), one launch per
     * group; NULL: one kernel (or cuBLASLt call) per node */
    edm_plan *plan;
    edm_plan *node_plan;   /* unfused: the --fuse=none plan that places the values */
    edm_cuda_plan_module pcode;
    edm_mma_tiles tiles;   /* the tiles measured for this architecture (cuda_tiles_file.h) */
    int source_only;       /* edm_cuda_exec_source: the kernels of a package, no device */
    cu_function *group_fn; /* per plan group */
    int64_t *numel;        /* per value of g, batch bound */
    edm_dtype *dtype;      /* per value of g: its storage */
    int64_t const_offset, const_bytes; /* the constants' block of a fused arena */
    cu_ptr *garg;          /* every group's kernel arguments, group after group */
    cu_ptr gtable;         /* the argument tables of the groups of several steps */
    void **gargp;          /* pointers to them (cuLaunchKernel's form) */
    int *garg_first;       /* per group: its first argument */
    cu_api api;
    lt_api lt;
    lt_handle lt_handle;
    cu_device dev;
    cu_context ctx;
    int ctx_retained;
    cu_stream stream;
    cu_module module[EDM_CUBIN_BUNDLE_MAX]; /* the kernels' image: a cubin, or a bundle's cubins (cubin_bundle.h) */
    edm_cubin_part part[EDM_CUBIN_BUNDLE_MAX]; /* which kernels each holds (names copied; cubin NULL) */
    int nmodules;
    char device_name[256], arch[16], describe[400];
    int cc_major;     /* the device's compute capability, major */
    int tensor_cores; /* the generated contractions of the network run on tensor cores */
    edm_cuda_module code;
    cu_function *fn; /* per node (KERNEL nodes) */
    cu_function cast_in[3], cast_out[3]; /* by dtype: f32, f16, bf16 */
    cu_function grad_acc[3], force_wn, adam[3], ema; /* grad_acc, adam: by the gradient's dtype */
    gemm_plan *gemm; /* per node */
    int ngemm_library, ngemm_fallback;
    value_plan *vp;
    int nvalues;
    cu_ptr arena;
    size_t arena_bytes, total_bytes;
    cu_ptr staging; /* f32, STAGING_ELEMS */
    cu_ptr seed;    /* the run's block the kernels read: the dropout seed, the split-K workspace's address */
    cu_ptr splitk;  /* the generated contractions' split-K workspace, then its counts (cuda_gemm_mma.h) */
    size_t splitk_bytes;
    cu_ptr col;     /* im2col buffer */
    size_t col_bytes;
    cu_ptr partial; /* conv2d_bwd_weight: per-sample f32 partial gradients of a chunk */
    size_t partial_bytes;
    cu_ptr ones;    /* f32 ones, one per sample of the largest chunk (the partials' sum) */
    int64_t nones;
    cu_ptr lt_ws;   /* cuBLASLt workspace */
    int *set;       /* leaves given a value */
    cu_graph graph;
    cu_graph_exec graph_exec;
    /* a forward-only plan's weights groups (edm_plan_weights_groups; 0: none, or
     * training), and whether their values in the arena are those of the
     * parameters as they are (a run may then start after them: graph_rest) */
    int weights_groups, weights_fresh;
    cu_graph graph_rest;
    cu_graph_exec graph_rest_exec;
    /* a run cut at given launches (edm_cuda_exec_run_cut): one graph per
     * segment, for the cuts they were captured with */
    cu_graph *seg_graph;
    cu_graph_exec *seg_exec;
    int *seg_cut, nseg_cut;
    /* a collective overlapping the run: its own stream, and the events that
     * order the two streams (made on first use) */
    cu_stream comm;
    cu_event fork, join;
    opt_param *params;
    int nparams;
    cu_ptr opt_mem;    /* m, v of every parameter */
    size_t opt_bytes;
    cu_ptr acc_mem;    /* the f32 gradient accumulators, made on first use */
    size_t acc_bytes;
    int direct_grads;  /* Adam reads the kept gradients: no accumulators (edm_cuda_opt_direct_grads) */
    cu_ptr nonfinite;  /* unsigned long long counter */
    cu_ptr ema_mem;    /* nema copies of every parameter, parameter by parameter */
    int nema;
    size_t ema_stride; /* bytes of one EMA copy (all parameters, 256-aligned each) */
    double compile_seconds;
};

#define CU(call, what) cu_check(&x->api, x->api.call, what, st)

/* Every copy and memset goes on the executor's own (non-blocking) stream, so
 * it is ordered with the kernels and nothing touches the legacy stream,
 * which a CUDA Graph capture would not allow; each waits for completion. */
static int copy_in(edm_cuda_exec *x, cu_ptr dst, const void *src, size_t bytes, edm_status *st)
{
    return CU(MemcpyHtoDAsync(dst, src, bytes, x->stream), "cuMemcpyHtoDAsync") != 0
               ? -1
               : CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

static int copy_out(edm_cuda_exec *x, void *dst, cu_ptr src, size_t bytes, edm_status *st)
{
    return CU(MemcpyDtoHAsync(dst, src, bytes, x->stream), "cuMemcpyDtoHAsync") != 0
               ? -1
               : CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

static int zero(edm_cuda_exec *x, cu_ptr dst, size_t bytes, edm_status *st)
{
    return CU(MemsetD8Async(dst, 0, bytes, x->stream), "cuMemsetD8Async") != 0
               ? -1
               : CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

static size_t align256(size_t v) { return (v + 255) & ~(size_t)255; }
static size_t dtype_size(edm_dtype t) { return t == EDM_F32 ? 4 : 2; }
static int dtype_index(edm_dtype t) { return t == EDM_F16 ? 1 : t == EDM_BF16 ? 2 : 0; }

static cu_ptr value_ptr(const edm_cuda_exec *x, int id)
{
    const value_plan *v = &x->vp[x->vp[id].base];
    return x->arena + (cu_ptr)v->offset;
}

static edm_dtype value_dtype(const edm_cuda_exec *x, int id) { return x->dtype[id]; }

/* The id in g of the caller's node (the rewrite renumbers), or -1. */
static int own_id(const edm_cuda_exec *x, int user_node)
{
    if (user_node < 0 || user_node >= edm_graph_count(x->user_g))
        return -1;
    return x->map ? x->map[user_node] : user_node;
}

/* ------------------------------------------------------------------ memory plan */

/* One memory planner for both paths: the execution plan's
 * (compiler/passes/fusion.h).  Unfused, it is the plan of --fuse=none over
 * the caller's graph (a step per compute node, in node order); fused, the
 * plan the kernels were rendered from. */
/* The plan's stored values at its offsets (memory reused after the last
 * group reading it), then the leaves the host sets, then the constants (f32,
 * filled once from the host: fused kernels take them as literals, unfused
 * ones fill them again each run; the host may read one through an output),
 * all 256-aligned. */
/* The plan's roots bound at the values' storage sizes. */
static int bind_plan(const edm_cuda_exec *x, edm_plan *p, edm_status *st)
{
    int n = x->nvalues;
    int64_t *esize = malloc(sizeof *esize * (size_t)(n > 0 ? n : 1));
    if (!esize)
        return edm_nomem(st);
    for (int i = 0; i < n; i++)
        esize[i] = (int64_t)dtype_size(x->dtype[i]);
    int rc = edm_plan_bind_sizes(p, x->batch, (int64_t)sizeof(float), esize, st);
    free(esize);
    return rc;
}

/* Of a fused plan's constants, those that need memory (set in *need, the
 * caller's calloc'd array of nvalues): read by a kernel (an alias of one is a
 * stored input; a constant itself is a literal), or by the host through a
 * kept alias (an output) or the caller's keep list, or every one when the
 * host may read any value (keep_all).  The others, zeros padding a slice's
 * gradient for instance (img512-s's training step at batch 128 has 61 such,
 * 4.1 GiB in f32), take none.  (A leaf's own keep flag only says it lives
 * through the run.) */
static void constants_read(const edm_cuda_exec *x, unsigned char *need)
{
    if (x->opt.keep_all) {
        memset(need, 1, (size_t)x->nvalues);
        return;
    }
    for (int l = 0; l < x->pcode.nlaunch; l++)
        for (int k = 0; k < x->pcode.launch[l].ninputs; k++)
            need[x->pcode.launch[l].inputs[k]] = 1;
    for (int i = 0; i < x->nvalues; i++)
        if (x->vp[i].keep && x->vp[i].base != i)
            need[x->vp[i].base] = 1;
    for (int k = 0; k < x->opt.nkeep; k++) { /* the values the caller asked to read */
        int id = own_id(x, x->opt.keep[k]);
        if (id >= 0 && id < x->nvalues)
            need[x->vp[id].base] = 1;
    }
}

static int plan_values(edm_cuda_exec *x, edm_plan *p, edm_status *st)
{
    int n = x->nvalues;
    if (bind_plan(x, p, st) != 0)
        return -1;
    /* a package's plan: its memory table for this device and batch is what
     * binding made here (or the run stops, naming the value) */
    if (p == x->plan &&
        edm_plan_layout_check(p, x->arch, x->batch, x->dtype, (int64_t)LT_WORKSPACE_BYTES, st) != 0)
        return -1;
    unsigned char *need = calloc((size_t)(n > 0 ? n : 1), 1);
    if (!need)
        return edm_nomem(st);
    int64_t top = (int64_t)align256((size_t)p->arena_bytes);
    for (int pass = 0; pass < 2; pass++) { /* the host's leaves, then the constants */
        if (pass == 1) {
            x->const_offset = top;
            for (int i = 0; i < n; i++) /* a kept alias keeps its base */
                if (x->vp[i].keep)
                    x->vp[x->vp[i].base].keep = 1;
            if (p == x->plan)
                constants_read(x, need);
            else /* unfused: the node kernels read every constant */
                memset(need, 1, (size_t)n);
        }
        for (int i = 0; i < n; i++) {
            const edm_node *nd = edm_graph_node(x->g, i);
            const edm_plan_value *v = &p->values[i];
            value_plan *q = &x->vp[i];
            int leaf = edm_op_class_of(nd->op) == EDM_CLASS_LEAF;
            if (pass == 0)
                *q = (value_plan){.base = v->stored ? v->base : i, .offset = v->base == i && v->step >= 0 ? v->offset : -1,
                                  .keep = v->stored && v->keep,
                                  .bytes = (int64_t)align256((size_t)x->numel[i] * dtype_size(x->dtype[i]))};
            if (v->base == i && leaf && (nd->op == EDM_OP_CONST) == (pass == 1) && (pass == 0 || need[i])) {
                q->offset = top;
                top += q->bytes;
            }
        }
    }
    free(need);
    x->const_bytes = top - x->const_offset;
    x->arena_bytes = (size_t)(top > 0 ? top : 256);
    x->total_bytes = (size_t)(p->stored_bytes + x->const_offset - (int64_t)align256((size_t)p->arena_bytes)) +
                     (size_t)x->const_bytes;
    return 0;
}

/* The constants' block of a fused arena, from the host. */
static int fill_constants(edm_cuda_exec *x, edm_status *st)
{
    if (!x->plan || x->const_bytes == 0)
        return 0;
    float *img = calloc((size_t)x->const_bytes / sizeof(float), sizeof(float));
    if (!img)
        return edm_nomem(st);
    for (int i = 0; i < x->nvalues; i++) {
        const edm_node *nd = edm_graph_node(x->g, i);
        if (nd->op != EDM_OP_CONST || x->vp[i].offset < x->const_offset)
            continue;
        float *at = img + (x->vp[i].offset - x->const_offset) / (int64_t)sizeof(float);
        for (int64_t k = 0; k < x->numel[i]; k++)
            at[k] = (float)nd->attr.constant.value;
    }
    int rc = copy_in(x, x->arena + (cu_ptr)x->const_offset, img, (size_t)x->const_bytes, st);
    free(img);
    return rc;
}

/* Unfused: the --fuse=none plan of the graph, keeping everything or the
 * outputs, and the values placed by it. */
static int plan_nodes(edm_cuda_exec *x, int keep_all, edm_status *st)
{
    edm_plan_free(x->node_plan);
    edm_plan_options po = {.fuse = EDM_FUSE_NONE, .training = x->opt.training, .keep_all = keep_all};
    x->node_plan = edm_plan_build(x->g, &po, st);
    if (!x->node_plan)
        return -1;
    /* the kernels launch in node order: lifetimes in step order must be the same */
    for (int s = 1; s < x->node_plan->nsteps; s++)
        if (x->node_plan->steps[s].root <= x->node_plan->steps[s - 1].root)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "the unfused plan is not in node order (step %d)", s);
    return plan_values(x, x->node_plan, st);
}

static void drop_one_graph(edm_cuda_exec *x, cu_graph *graph, cu_graph_exec *exec)
{
    if (*exec)
        x->api.GraphExecDestroy(*exec);
    if (*graph)
        x->api.GraphDestroy(*graph);
    *exec = NULL;
    *graph = NULL;
}

static void drop_segments(edm_cuda_exec *x)
{
    for (int k = 0; x->seg_graph && k <= x->nseg_cut; k++)
        drop_one_graph(x, &x->seg_graph[k], &x->seg_exec[k]);
    free(x->seg_graph);
    free(x->seg_exec);
    free(x->seg_cut);
    x->seg_graph = NULL;
    x->seg_exec = NULL;
    x->seg_cut = NULL;
    x->nseg_cut = 0;
}

static void drop_graph(edm_cuda_exec *x)
{
    drop_one_graph(x, &x->graph, &x->graph_exec);
    drop_one_graph(x, &x->graph_rest, &x->graph_rest_exec);
    drop_segments(x);
}

static int alloc_arena(edm_cuda_exec *x, edm_status *st)
{
    drop_graph(x); /* a captured graph holds the old addresses */
    x->weights_fresh = 0;
    if (x->arena) {
        if (CU(MemFree(x->arena), "cuMemFree") != 0)
            return -1;
        x->arena = 0;
    }
    if (CU(MemAlloc(&x->arena, x->arena_bytes), "cuMemAlloc (activation arena)") != 0) {
        edm_status_prefix(st, "%.1f MiB", (double)x->arena_bytes / (1 << 20));
        return -1;
    }
    /* unfused, constants are filled by their kernels every run; zero the rest once */
    return zero(x, x->arena, x->arena_bytes, st) != 0 ? -1 : fill_constants(x, st);
}

/* The split-K workspace and its counts (zero: each tile's count starts at
 * 0 and its last block resets it), their addresses at seed[1] and seed[2]
 * of the run's block (codegen/cuda_codegen.h). */
static int alloc_splitk(edm_cuda_exec *x, edm_status *st)
{
    int64_t floats = x->plan ? x->pcode.splitk_floats : x->code.splitk_floats;
    int64_t counts = x->plan ? x->pcode.splitk_counts : x->code.splitk_counts;
    if (floats <= 0)
        return 0;
    size_t ws = align256(sizeof(float) * (size_t)floats);
    x->splitk_bytes = ws + align256(sizeof(unsigned) * (size_t)(counts > 0 ? counts : 1));
    if (CU(MemAlloc(&x->splitk, x->splitk_bytes), "cuMemAlloc (split-K workspace)") != 0) {
        edm_status_prefix(st, "%.1f MiB", (double)x->splitk_bytes / (1 << 20));
        return -1;
    }
    unsigned long long where[2] = {x->splitk, x->splitk + ws};
    if (zero(x, x->splitk + ws, x->splitk_bytes - ws, st) != 0)
        return -1;
    return copy_in(x, x->seed + sizeof(unsigned long long), where, sizeof where, st);
}

/* --fuse: every group kernel's arguments (the arena's addresses are fixed).
 * A one-step group takes its root, the stored values it reads and the seed;
 * a group of several takes a table of those pointers in device memory and
 * the seed (codegen/cuda_codegen.h). */
static int group_args(edm_cuda_exec *x, edm_status *st)
{
    const edm_cuda_plan_module *m = &x->pcode;
    size_t total = 0, table = 0;
    for (int gi = 0; gi < m->ngroups; gi++) {
        size_t ptrs = 0;
        for (int s = m->group[gi].first_step; s < m->group[gi].first_step + m->group[gi].nsteps; s++)
            ptrs += 1 + (size_t)m->launch[s].ninputs;
        if (m->group[gi].nsteps > 1) {
            table += ptrs;
            total += 2;
        } else {
            total += ptrs + 1;
        }
    }
    x->garg = malloc(sizeof *x->garg * (total ? total : 1));
    x->gargp = malloc(sizeof *x->gargp * (total ? total : 1));
    x->garg_first = malloc(sizeof *x->garg_first * (m->ngroups > 0 ? (size_t)m->ngroups : 1u));
    cu_ptr *host = malloc(sizeof *host * (table ? table : 1));
    if (!x->garg || !x->gargp || !x->garg_first || !host) {
        free(host);
        return edm_nomem(st);
    }
    int rc = CU(MemAlloc(&x->gtable, sizeof *host * (table ? table : 1)), "cuMemAlloc (group argument tables)");
    size_t at = 0, tat = 0;
    for (int gi = 0; rc == 0 && gi < m->ngroups; gi++) {
        const edm_cuda_group_launch *G = &m->group[gi];
        x->garg_first[gi] = (int)at;
        if (G->nsteps > 1)
            x->garg[at++] = x->gtable + (cu_ptr)(tat * sizeof *host);
        cu_ptr *out = G->nsteps > 1 ? host : x->garg;
        size_t *pos = G->nsteps > 1 ? &tat : &at;
        for (int s = G->first_step; s < G->first_step + G->nsteps; s++) {
            const edm_cuda_step_launch *L = &m->launch[s];
            out[(*pos)++] = value_ptr(x, x->plan->steps[s].root);
            for (int k = 0; k < L->ninputs; k++)
                out[(*pos)++] = value_ptr(x, L->inputs[k]);
        }
        x->garg[at++] = x->seed;
    }
    for (size_t k = 0; k < total; k++)
        x->gargp[k] = &x->garg[k];
    if (rc == 0 && table > 0)
        rc = copy_in(x, x->gtable, host, sizeof *host * table, st);
    free(host);
    return rc;
}

/* --fuse: the fusion rewrites (a new graph, the caller's ids mapped), the
 * plan over it, its kernels' source; the storage and size of every value. */
static int build_plan(edm_cuda_exec *x, const edm_cuda_options *co, edm_status *st)
{
    int ucount = edm_graph_count(x->user_g);
    x->map = malloc(sizeof *x->map * (size_t)(ucount > 0 ? ucount : 1));
    if (!x->map)
        return edm_nomem(st);
    edm_plan_options po = {.fuse = x->opt.fuse, .training = x->opt.training, .keep_all = x->opt.keep_all,
                           .written = x->opt.plan};
    x->plan = edm_plan_for_run(x->user_g, &po, x->opt.keep, x->opt.nkeep, &x->own_g, &x->g, x->map, st);
    if (!x->plan)
        return -1;
    /* the optimizer's kernels write the parameters in place: no group may be skipped */
    x->weights_groups = x->opt.optimizer ? 0 : edm_plan_weights_groups(x->plan);
    x->nvalues = edm_graph_count(x->g);
    if (edm_cuda_codegen_plan(x->plan, co, &x->pcode, st) != 0)
        return -1;
    size_t n = (size_t)(x->nvalues > 0 ? x->nvalues : 1);
    x->numel = malloc(sizeof *x->numel * n);
    x->dtype = malloc(sizeof *x->dtype * n);
    x->group_fn = calloc((size_t)(x->pcode.ngroups > 0 ? x->pcode.ngroups : 1), sizeof *x->group_fn);
    if (!x->numel || !x->dtype || !x->group_fn)
        return edm_nomem(st);
    for (int i = 0; i < x->nvalues; i++) {
        const edm_shape *sh = &edm_graph_node(x->g, i)->shape;
        x->numel[i] = 1;
        for (int d = 0; d < sh->rank; d++)
            x->numel[i] *= sh->dim[d] == EDM_DIM_BATCH ? x->batch : sh->dim[d];
        x->dtype[i] = x->pcode.dtype[i];
    }
    return 0;
}

/* Unfused: the node module's sizes and storage types. */
static int node_values(edm_cuda_exec *x, edm_status *st)
{
    size_t n = (size_t)(x->nvalues > 0 ? x->nvalues : 1);
    x->numel = malloc(sizeof *x->numel * n);
    x->dtype = malloc(sizeof *x->dtype * n);
    if (!x->numel || !x->dtype)
        return edm_nomem(st);
    for (int i = 0; i < x->nvalues; i++) {
        x->numel[i] = x->code.launch[i].numel;
        x->dtype[i] = x->code.launch[i].dtype;
    }
    return 0;
}

/* ------------------------------------------------------------------ setup */

static int open_device(edm_cuda_exec *x, edm_status *st)
{
    if (cu_api_open(&x->api, st) != 0 || cu_api_init(&x->api, st) != 0)
        return -1;
    int major = 0, minor = 0;
    if (CU(DeviceGet(&x->dev, x->opt.device), "cuDeviceGet") != 0 ||
        CU(DeviceGetName(x->device_name, (int)sizeof x->device_name, x->dev), "cuDeviceGetName") != 0 ||
        CU(DeviceGetAttribute(&major, CU_ATTR_CC_MAJOR, x->dev), "cuDeviceGetAttribute") != 0 ||
        CU(DeviceGetAttribute(&minor, CU_ATTR_CC_MINOR, x->dev), "cuDeviceGetAttribute") != 0 ||
        CU(DevicePrimaryCtxRetain(&x->ctx, x->dev), "cuDevicePrimaryCtxRetain") != 0)
        return -1;
    snprintf(x->arch, sizeof x->arch, "sm_%d%d", major, minor);
    x->cc_major = major;
    x->ctx_retained = 1;
    if (CU(CtxSetCurrent(x->ctx), "cuCtxSetCurrent") != 0 ||
        CU(StreamCreate(&x->stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate") != 0)
        return -1;
    return 0;
}

static int get_function(edm_cuda_exec *x, const char *name, cu_function *out, edm_status *st)
{
    int m = 0;
    while (m < x->nmodules - 1 && !edm_cubin_part_has(&x->part[m], name))
        m++;
    if (cu_check(&x->api, x->api.ModuleGetFunction(out, x->module[m], name), "cuModuleGetFunction", st) != 0) {
        edm_status_prefix(st, "kernel %s", name);
        return -1;
    }
    return 0;
}

/* Loads the kernels' image (a cubin or a bundle of them), one module per cubin. */
static int load_image(edm_cuda_exec *x, const void *image, size_t size, const char *what, edm_status *st)
{
    edm_cubin_part parts[EDM_CUBIN_BUNDLE_MAX];
    int n = 0;
    if (edm_cubin_bundle_read(image, size, parts, EDM_CUBIN_BUNDLE_MAX, &n, st) != 0) {
        edm_status_prefix(st, "%s", what);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        /* the driver reads an ELF image in place: at malloc's alignment, not wherever the bundle put it */
        void *copy = malloc(parts[i].size);
        char *names = parts[i].names ? malloc(parts[i].names_size ? parts[i].names_size : 1) : NULL;
        if (!copy || (parts[i].names && !names)) {
            free(copy);
            free(names);
            return edm_nomem(st);
        }
        memcpy(copy, parts[i].cubin, parts[i].size);
        if (names && parts[i].names_size)
            memcpy(names, parts[i].names, parts[i].names_size);
        x->part[i] = (edm_cubin_part){.names = names, .names_size = names ? parts[i].names_size : 0};
        x->nmodules = i + 1;
        int rc = cu_check(&x->api, x->api.ModuleLoadData(&x->module[i], copy), "cuModuleLoadData", st);
        free(copy);
        if (rc != 0) {
            edm_status_prefix(st, "%s%s", what, n > 1 ? ", one of its cubins" : "");
            return -1;
        }
    }
    return 0;
}

/* A kernel launched with smem bytes of dynamic shared memory: past the
 * default 48 KiB (a convolution's halo stages) its limit raised to that. */
static int get_function_smem(edm_cuda_exec *x, const char *name, unsigned smem, cu_function *out, edm_status *st)
{
    if (get_function(x, name, out, st) != 0)
        return -1;
    if (smem > 48u * 1024u &&
        cu_check(&x->api, x->api.FuncSetAttribute(*out, CU_FUNC_ATTR_MAX_DYNAMIC_SHARED, (int)smem),
                 "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)", st) != 0) {
        edm_status_prefix(st, "kernel %s, %u bytes of shared memory", name, smem);
        return -1;
    }
    return 0;
}

/* The emulating driver (tests/emu/cuda_emu.so) runs the kernels on the host
 * from their CUDA C source: it exports edmEmuLoadSource, which takes the
 * source where cuModuleLoadData takes a cubin (no NVRTC then). */
typedef cu_result (*emu_load_source_fn)(cu_module *, const char *);

/* The ahead-of-time cubin for this device and batch, made from this source;
 * NULL with st naming what the package holds when there is none. */
static const edm_cuda_kernel_image *packaged_kernels(const edm_cuda_exec *x, const char *source, edm_status *st)
{
    char archs[256] = "", batches[256] = "";
    size_t na = 0, nb = 0;
    const edm_cuda_kernel_image *found = NULL;
    for (int i = 0; i < x->opt.nkernels; i++) {
        const edm_cuda_kernel_image *k = &x->opt.kernels[i];
        if (strcmp(k->arch, x->arch) != 0) {
            if (!strstr(archs, k->arch) && na < sizeof archs)
                na += (size_t)snprintf(archs + na, sizeof archs - na, "%s%s", na ? ", " : "", k->arch);
            continue;
        }
        if (nb < sizeof batches)
            nb += (size_t)snprintf(batches + nb, sizeof batches - nb, "%s%lld", nb ? ", " : "", (long long)k->batch);
        if (k->batch == x->batch)
            found = k;
    }
    if (!found && nb == 0) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the package holds kernels for %s; this GPU (%s) is %s", archs,
                 x->device_name, x->arch);
        return NULL;
    }
    if (!found) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the package holds kernels for batch %s on %s, not batch %lld", batches,
                 x->arch, (long long)x->batch);
        return NULL;
    }
    char sha[EDM_SHA256_HEX];
    edm_sha256_hex(source, strlen(source), sha);
    if (strcmp(sha, found->source_sha256) != 0) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                 "the package's kernels for %s, batch %lld, were generated from another source than this run's "
                 "(other --precision, --fuse or mode, or another edmc)", x->arch, (long long)x->batch);
        return NULL;
    }
    return found;
}

static int load_kernels(edm_cuda_exec *x, edm_status *st)
{
    const char *source = x->plan ? x->pcode.source : x->code.source;
    const edm_cuda_kernel_image *packaged = NULL;
    if (x->opt.nkernels > 0 && !(packaged = packaged_kernels(x, source, st)))
        return -1;
    void *sym = dlsym(x->api.lib, "edmEmuLoadSource");
    if (sym) { /* the emulator runs the source the package's cubin was checked to come from */
        emu_load_source_fn load;
        memcpy(&load, &sym, sizeof load);
        double t0 = edm_now_seconds();
        if (cu_check(&x->api, load(&x->module[0], source), "edmEmuLoadSource (the emulator)", st) != 0)
            return -1;
        x->nmodules = 1;
        x->compile_seconds = edm_now_seconds() - t0;
    } else if (packaged) {
        if (load_image(x, packaged->cubin, packaged->size, "the package's kernels", st) != 0)
            return -1;
    } else {
        void *cubin = NULL;
        size_t size = 0;
        if (x->opt.compile(source, x->arch, &cubin, &size, &x->compile_seconds, st) != 0)
            return -1;
        int rc = load_image(x, cubin, size, "the compiled kernels", st);
        free(cubin);
        if (rc != 0)
            return -1;
    }
    static const edm_dtype types[3] = {EDM_F32, EDM_F16, EDM_BF16};
    char name[64];
    for (int t = 0; t < 3; t++) {
        const char *sfx = edm_cuda_dtype_suffix(types[t]);
        snprintf(name, sizeof name, "edm_cast_from_f32_%s", sfx);
        if (get_function(x, name, &x->cast_in[t], st) != 0)
            return -1;
        snprintf(name, sizeof name, "edm_cast_to_f32_%s", sfx);
        if (get_function(x, name, &x->cast_out[t], st) != 0)
            return -1;
        if (x->opt.optimizer) {
            snprintf(name, sizeof name, "edm_grad_acc_%s", sfx);
            if (get_function(x, name, &x->grad_acc[t], st) != 0)
                return -1;
            snprintf(name, sizeof name, "edm_adam_%s", sfx);
            if (get_function(x, name, &x->adam[t], st) != 0)
                return -1;
        }
    }
    if (x->opt.optimizer &&
        (get_function(x, "edm_force_wn", &x->force_wn, st) != 0 || get_function(x, "edm_ema", &x->ema, st) != 0))
        return -1;
    for (int gi = 0; x->plan && gi < x->pcode.ngroups; gi++)
        if (get_function_smem(x, x->pcode.group[gi].kernel, x->pcode.group[gi].smem, &x->group_fn[gi], st) != 0)
            return -1;
    for (int i = 0; !x->plan && i < x->code.nlaunch; i++) {
        const edm_cuda_launch *L = &x->code.launch[i];
        if (L->kind == EDM_CUDA_KERNEL && get_function_smem(x, L->kernel, L->smem, &x->fn[i], st) != 0)
            return -1;
        if (L->im2col[0] && get_function(x, L->im2col, &x->gemm[i].im2col, st) != 0)
            return -1;
        if (L->col2im[0] && get_function(x, L->col2im, &x->gemm[i].col2im, st) != 0)
            return -1;
    }
    return 0;
}

static int is_conv(edm_op op)
{
    return op == EDM_OP_CONV2D || op == EDM_OP_CONV2D_BWD_DATA || op == EDM_OP_CONV2D_BWD_WEIGHT;
}

/* Bytes of one sample's col buffer ([C·k·k][OH·OW] of the col's type). */
static int64_t col_sample_bytes(const edm_cuda_launch *L)
{
    const edm_cuda_gemm *g = &L->gemm;
    /* conv2d / bwd_weight: B is col (k×n or n×k); bwd_data: C is col (m×n) */
    int64_t elems = g->stride_b, bytes = (int64_t)dtype_size(g->type_b);
    if (g->trans_a) { /* conv2d_bwd_data: col is C */
        elems = g->stride_c;
        bytes = (int64_t)dtype_size(g->type_c);
    }
    return elems * bytes;
}

static void release_plan(edm_cuda_exec *x, gemm_plan *p)
{
    cuda_gemm_release(&x->lt, &p->full);
    cuda_gemm_release(&x->lt, &p->tail);
    cuda_gemm_release(&x->lt, &p->sum_full);
    cuda_gemm_release(&x->lt, &p->sum_tail);
}

/* The cuBLASLt calls of contraction i: 0, 1 (no algorithm), -1.
 * Convolutions go by chunks of samples whose im2col buffer (and, for the
 * weight gradient, whose f32 partials) fit in `limit` bytes.  The weight
 * gradient Σ_n dy[n]·col[n]ᵀ is one batched GEMM writing each sample's
 * partial, then one GEMM with a ones vector summing them into dw — two calls
 * a chunk, not one a sample. */
static int plan_gemm(edm_cuda_exec *x, int i, int64_t limit, edm_status *st)
{
    gemm_plan *p = &x->gemm[i];
    const edm_cuda_launch *L = &x->code.launch[i];
    edm_op op = edm_graph_node(x->g, i)->op;
    edm_cuda_gemm g = L->gemm;
    if (!is_conv(op))
        return cuda_gemm_prepare(&x->lt, x->lt_handle, &g, g.count, LT_WORKSPACE_BYTES, &p->full, st);
    int64_t per = L->gemm.direct ? 0 : col_sample_bytes(L);
    if (op == EDM_OP_CONV2D_BWD_WEIGHT)
        per += g.m * g.n * (int64_t)sizeof(float);
    p->chunk = per > 0 ? limit / per : g.count;
    p->chunk = p->chunk < 1 ? 1 : p->chunk > g.count ? g.count : p->chunk;
    int64_t tail = g.count % p->chunk;
    if (op == EDM_OP_CONV2D_BWD_WEIGHT) {
        g.stride_c = g.m * g.n; /* sample z's partial, f32 */
        g.type_c = EDM_F32;
        g.accumulate = 0;
    }
    int rc = cuda_gemm_prepare(&x->lt, x->lt_handle, &g, p->chunk, LT_WORKSPACE_BYTES, &p->full, st);
    if (rc == 0 && tail > 0)
        rc = cuda_gemm_prepare(&x->lt, x->lt_handle, &g, tail, LT_WORKSPACE_BYTES, &p->tail, st);
    if (rc != 0 || op != EDM_OP_CONV2D_BWD_WEIGHT)
        return rc;
    /* dw (1 × O·C·k·k) += ones (1 × count) · partials (count × O·C·k·k), all f32 */
    edm_cuda_gemm sum = {.m = 1, .n = L->gemm.m * L->gemm.n, .k = p->chunk, .count = 1,
                         .type_a = EDM_F32, .type_b = EDM_F32, .type_c = EDM_F32};
    rc = cuda_gemm_prepare(&x->lt, x->lt_handle, &sum, 1, LT_WORKSPACE_BYTES, &p->sum_full, st);
    sum.k = tail;
    if (rc == 0 && tail > 0)
        rc = cuda_gemm_prepare(&x->lt, x->lt_handle, &sum, 1, LT_WORKSPACE_BYTES, &p->sum_tail, st);
    return rc;
}

/* Decides, per contraction, between cuBLASLt and the generated kernel, and
 * prepares the cuBLASLt calls. */
static int plan_gemms(edm_cuda_exec *x, edm_status *st)
{
    int any = 0;
    for (int i = 0; i < x->nvalues; i++) {
        const edm_cuda_launch *L = &x->code.launch[i];
        edm_op op = edm_graph_node(x->g, i)->op;
        int wanted = op == EDM_OP_MATMUL ? x->opt.matmul_library : is_conv(op) ? x->opt.conv_library : 0;
        /* a convolution needs its col helper unless it is 1×1 (direct) */
        int helpers = !is_conv(op) || L->gemm.direct || (op == EDM_OP_CONV2D_BWD_DATA ? L->col2im[0] : L->im2col[0]);
        x->gemm[i].use = wanted && L->cublaslt && helpers && cuda_gemm_types_supported(&L->gemm);
        any |= x->gemm[i].use;
        if (wanted && !x->gemm[i].use && L->kind == EDM_CUDA_KERNEL)
            x->ngemm_fallback++;
    }
    if (!any)
        return 0;
    if (lt_api_open(&x->lt, st) != 0 || lt_check(&x->lt, x->lt.Create(&x->lt_handle), "cublasLtCreate", st) != 0)
        return -1;
    if (CU(MemAlloc(&x->lt_ws, LT_WORKSPACE_BYTES), "cuMemAlloc (cuBLASLt workspace)") != 0)
        return -1;
    const char *env = getenv("EDMC_CUDA_CHUNK_BYTES");
    int64_t limit = env && atoll(env) > 0 ? atoll(env) : COL_LIMIT_BYTES;
    int64_t col_most = 0, partial_most = 0, ones_most = 0;
    for (int i = 0; i < x->nvalues; i++) {
        gemm_plan *p = &x->gemm[i];
        if (!p->use)
            continue;
        edm_op op = edm_graph_node(x->g, i)->op;
        int rc = plan_gemm(x, i, limit, st);
        if (rc < 0) {
            edm_status_prefix(st, "node %%%d (%s)", i, edm_op_name(op));
            return -1;
        }
        if (rc == 1) { /* no algorithm: the generated kernel */
            release_plan(x, p);
            p->use = 0;
            x->ngemm_fallback++;
            continue;
        }
        x->ngemm_library++;
        const edm_cuda_launch *L = &x->code.launch[i];
        if (is_conv(op) && !L->gemm.direct)
            col_most = p->chunk * col_sample_bytes(L) > col_most ? p->chunk * col_sample_bytes(L) : col_most;
        if (op == EDM_OP_CONV2D_BWD_WEIGHT) {
            int64_t bytes = p->chunk * L->gemm.m * L->gemm.n * (int64_t)sizeof(float);
            partial_most = bytes > partial_most ? bytes : partial_most;
            ones_most = p->chunk > ones_most ? p->chunk : ones_most;
        }
    }
    if (col_most > 0) {
        x->col_bytes = (size_t)col_most;
        if (CU(MemAlloc(&x->col, x->col_bytes), "cuMemAlloc (im2col buffer)") != 0)
            return -1;
    }
    if (partial_most > 0) {
        x->partial_bytes = (size_t)partial_most;
        x->nones = ones_most;
        float *ones = malloc(sizeof(float) * (size_t)ones_most);
        if (!ones)
            return edm_nomem(st);
        for (int64_t k = 0; k < ones_most; k++)
            ones[k] = 1.0f;
        int rc = CU(MemAlloc(&x->partial, x->partial_bytes), "cuMemAlloc (weight-gradient partials)");
        if (rc == 0)
            rc = CU(MemAlloc(&x->ones, sizeof(float) * (size_t)ones_most), "cuMemAlloc (ones)");
        if (rc == 0)
            rc = copy_in(x, x->ones, ones, sizeof(float) * (size_t)ones_most, st);
        free(ones);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static void describe(edm_cuda_exec *x)
{
    if (x->plan) {
        char fuse[64];
        snprintf(x->describe, sizeof x->describe, "%s (%s), %s, fused plan (--fuse=%s, %d kernels, %s GEMMs), %s",
                 x->device_name, x->arch, edm_dtype_name(x->opt.storage), edm_fuse_str(x->opt.fuse, fuse, sizeof fuse),
                 x->pcode.ngroups, x->tensor_cores ? "tensor-core" : "CUDA-core",
                 x->opt.no_graph ? "launch by launch" : "CUDA Graph");
        return;
    }
    int mm = x->opt.matmul_library, cv = x->opt.conv_library;
    snprintf(x->describe, sizeof x->describe, "%s (%s), %s, matmul %s, conv %s, %s%s", x->device_name, x->arch,
             edm_dtype_name(x->opt.storage), mm ? "cuBLASLt" : "generated", cv ? "im2col+cuBLASLt" : "implicit GEMM",
             x->opt.no_graph ? "launch by launch" : "CUDA Graph",
             x->ngemm_fallback ? " (some contractions on generated kernels)" : "");
}

/* The kernels' source (and for --fuse, the plan they run), for a device of
 * compute capability x->cc_major. */
static int generate(edm_cuda_exec *x, edm_status *st)
{
    x->nvalues = edm_graph_count(x->user_g);
    edm_cuda_options co = {.storage = x->opt.storage,
                           .batch = x->batch,
                           .training = x->opt.training,
                           .gemm_library = x->opt.matmul_library || x->opt.conv_library,
                           .optimizer = x->opt.optimizer,
                           .network_scope = x->opt.network_scope};
    co.tensor_cores = !x->opt.no_tensor_cores && x->cc_major >= 8; /* mma.sync m16n8k16: sm_80 */
    x->tensor_cores = co.tensor_cores && co.storage != EDM_F32;
    co.mma_tile = x->opt.mma_tile;
    /* the tiles measured on such a device, unless a tile is forced (tuning's candidates); not for
     * a package, whose cubins are compiled ahead of time on another machine with the cost model's */
    int packaged = x->source_only || x->opt.plan || x->opt.nkernels > 0;
    if (x->tensor_cores && !co.mma_tile.bm && !packaged && edm_cuda_tiles_load(x->arch, &x->tiles, st) != 0)
        return -1;
    co.tiles = &x->tiles;
    if (edm_cuda_options_env(&co, st) != 0)
        return -1;
    int rc = x->opt.fuse ? build_plan(x, &co, st) : edm_cuda_codegen(x->user_g, &co, &x->code, st);
    if (rc == 0 && !x->opt.fuse)
        rc = node_values(x, st);
    return rc;
}

int edm_cuda_exec_source(const edm_graph *g, int64_t batch, const edm_cuda_exec_options *opt, const char *arch,
                         char **source, edm_plan_layout *layout, edm_status *st)
{
    *source = NULL;
    if (layout)
        memset(layout, 0, sizeof *layout);
    int sm = 0;
    if (sscanf(arch, "sm_%d", &sm) != 1 || sm < 10)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "'%s' is not an architecture like sm_90", arch);
    edm_cuda_exec *x = calloc(1, sizeof *x);
    if (!x)
        return edm_nomem(st);
    x->g = x->user_g = g;
    x->batch = batch;
    x->opt = *opt;
    x->cc_major = sm / 10;
    x->source_only = 1;
    snprintf(x->arch, sizeof x->arch, "%s", arch);
    int rc = generate(x, st);
    if (rc == 0 && !(*source = strdup(x->plan ? x->pcode.source : x->code.source)))
        rc = edm_nomem(st);
    /* the fused plan's memory as a run binds it (the unfused path plans anew) */
    if (rc == 0 && layout && x->plan)
        rc = bind_plan(x, x->plan, st) != 0 ? -1
             : edm_plan_layout_make(x->plan, arch, batch, x->dtype, (int64_t)LT_WORKSPACE_BYTES, layout, st);
    if (rc != 0) {
        free(*source);
        *source = NULL;
    }
    edm_cuda_exec_free(x);
    return rc;
}

edm_cuda_exec *edm_cuda_exec_new(const edm_graph *g, int64_t batch, const edm_cuda_exec_options *opt,
                                 edm_status *st)
{
    edm_cuda_exec *x = calloc(1, sizeof *x);
    if (!x) {
        edm_nomem(st);
        return NULL;
    }
    x->g = x->user_g = g;
    x->batch = batch;
    if (opt)
        x->opt = *opt;
    int rc = 0;
    if (!x->opt.nkernels && !x->opt.compile)
        rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                      "no kernel compiler: this program was built without the CUDA toolkit (NVRTC), so it runs "
                      "--device=cuda only from a package's kernels (edmc compile)");
    if (rc == 0)
        rc = open_device(x, st);
    if (rc == 0)
        rc = generate(x, st);
    if (rc == 0) {
        size_t n = (size_t)(x->nvalues ? x->nvalues : 1);
        x->fn = calloc(n, sizeof *x->fn);
        x->vp = calloc(n, sizeof *x->vp);
        x->set = calloc(n, sizeof *x->set);
        x->gemm = calloc(n, sizeof *x->gemm);
        if (!x->fn || !x->vp || !x->set || !x->gemm)
            rc = edm_nomem(st);
    }
    if (rc == 0)
        rc = load_kernels(x, st);
    if (rc == 0 && !x->plan)
        rc = plan_gemms(x, st);
    if (rc == 0)
        rc = x->plan ? plan_values(x, x->plan, st) : plan_nodes(x, 0, st);
    if (rc == 0)
        rc = alloc_arena(x, st);
    if (rc == 0)
        rc = CU(MemAlloc(&x->staging, sizeof(float) * (size_t)STAGING_ELEMS), "cuMemAlloc (staging)");
    if (rc == 0)
        rc = CU(MemAlloc(&x->seed, 256), "cuMemAlloc (seed)");
    if (rc == 0)
        rc = zero(x, x->seed, 256, st);
    if (rc == 0)
        rc = alloc_splitk(x, st);
    if (rc == 0 && x->plan)
        rc = group_args(x, st);
    if (rc != 0) {
        edm_cuda_exec_free(x);
        return NULL;
    }
    describe(x);
    return x;
}

void edm_cuda_exec_free(edm_cuda_exec *x)
{
    if (!x)
        return;
    for (int i = 0; x->gemm && i < x->nvalues; i++)
        release_plan(x, &x->gemm[i]);
    if (x->lt_handle)
        x->lt.Destroy(x->lt_handle);
    lt_api_close(&x->lt);
    if (x->api.lib) {
        /* teardown: errors here have nowhere better to go */
        if (x->stream)
            x->api.StreamSynchronize(x->stream);
        if (x->comm)
            x->api.StreamSynchronize(x->comm);
        drop_graph(x);
        if (x->fork)
            x->api.EventDestroy(x->fork);
        if (x->join)
            x->api.EventDestroy(x->join);
        if (x->comm)
            x->api.StreamDestroy(x->comm);
        cu_ptr mem[] = {x->staging, x->arena,   x->seed,     x->col,  x->lt_ws,  x->opt_mem, x->nonfinite,
                        x->ema_mem, x->partial, x->ones, x->gtable, x->acc_mem, x->splitk};
        for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++)
            if (mem[i])
                x->api.MemFree(mem[i]);
        for (int i = 0; i < x->nmodules; i++)
            if (x->module[i])
                x->api.ModuleUnload(x->module[i]);
        if (x->stream)
            x->api.StreamDestroy(x->stream);
        if (x->ctx_retained)
            x->api.DevicePrimaryCtxRelease(x->dev);
    }
    cu_api_close(&x->api);
    edm_cuda_module_free(&x->code);
    edm_cuda_plan_module_free(&x->pcode);
    edm_mma_tiles_free(&x->tiles);
    edm_plan_free(x->plan);
    edm_plan_free(x->node_plan);
    edm_graph_free(x->own_g);
    free(x->map);
    free(x->group_fn);
    free(x->numel);
    free(x->dtype);
    free(x->garg);
    free(x->gargp);
    free(x->garg_first);
    free(x->fn);
    free(x->vp);
    free(x->set);
    free(x->gemm);
    free(x->params);
    for (int i = 0; i < x->nmodules; i++)
        free((char *)x->part[i].names);
    free(x);
}

int edm_cuda_exec_keep_all(edm_cuda_exec *x, edm_status *st)
{
    if (x->plan) /* the plan decides what is stored: it was made knowing */
        return x->opt.keep_all ? 0
                               : edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC,
                                          "a fused executor keeps what its options said when it was made");
    if (plan_nodes(x, 1, st) != 0 || alloc_arena(x, st) != 0)
        return -1;
    memset(x->set, 0, sizeof *x->set * (size_t)x->nvalues); /* the arena was replaced */
    return 0;
}

void edm_cuda_exec_set_seed(edm_cuda_exec *x, uint64_t seed) { x->opt.seed = seed; }

int64_t edm_cuda_exec_numel(const edm_cuda_exec *x, int node)
{
    int id = own_id(x, node);
    return id >= 0 ? x->numel[id] : -1;
}

size_t edm_cuda_exec_arena_bytes(const edm_cuda_exec *x) { return x->arena_bytes; }
const char *edm_cuda_exec_device_name(const edm_cuda_exec *x) { return x->device_name; }
const char *edm_cuda_exec_arch(const edm_cuda_exec *x) { return x->arch; }
double edm_cuda_exec_compile_seconds(const edm_cuda_exec *x) { return x->compile_seconds; }
const char *edm_cuda_exec_describe(const edm_cuda_exec *x) { return x->describe; }
size_t edm_cuda_exec_total_bytes(const edm_cuda_exec *x) { return x->total_bytes; }

size_t edm_cuda_exec_device_bytes(const edm_cuda_exec *x)
{
    return x->arena_bytes + sizeof(float) * (size_t)STAGING_ELEMS + 256 + x->splitk_bytes + x->col_bytes +
           x->partial_bytes + sizeof(float) * (size_t)x->nones +
           (x->lt_ws ? LT_WORKSPACE_BYTES : 0) + x->opt_bytes + x->acc_bytes + (size_t)x->nema * x->ema_stride;
}

int edm_cuda_exec_find(const edm_cuda_exec *x, edm_op op, const char *name)
{
    return edm_graph_find(x->user_g, op, name);
}

/* ------------------------------------------------------------------ transfers */

static unsigned grid_1d(int64_t n)
{
    int64_t gsz = (n + 255) / 256;
    return gsz < 1 ? 1u : gsz > (1 << 20) ? (1u << 20) : (unsigned)gsz;
}

static int launch_1d(edm_cuda_exec *x, cu_function f, void **args, int64_t n, const char *what, edm_status *st)
{
    return cu_check(&x->api, x->api.LaunchKernel(f, grid_1d(n), 1, 1, 256, 1, 1, 0, x->stream, args, NULL), what, st);
}

/* f32 host data into a value of any type (chunks through the staging buffer). */
static int upload(edm_cuda_exec *x, cu_ptr dst, edm_dtype t, const float *data, int64_t n, edm_status *st)
{
    if (t == EDM_F32)
        return copy_in(x, dst, data, sizeof(float) * (size_t)n, st);
    for (int64_t at = 0; at < n; at += STAGING_ELEMS) {
        long long count = n - at < STAGING_ELEMS ? n - at : STAGING_ELEMS;
        cu_ptr y = dst + (cu_ptr)(at * (int64_t)dtype_size(t)), src = x->staging;
        void *args[] = {&y, &src, &count};
        if (copy_in(x, x->staging, data + at, sizeof(float) * (size_t)count, st) != 0 ||
            launch_1d(x, x->cast_in[dtype_index(t)], args, count, "cuLaunchKernel(edm_cast_from_f32)", st) != 0)
            return -1;
    }
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

static int download(edm_cuda_exec *x, float *out, cu_ptr src, edm_dtype t, int64_t n, edm_status *st)
{
    if (t == EDM_F32)
        return copy_out(x, out, src, sizeof(float) * (size_t)n, st);
    for (int64_t at = 0; at < n; at += STAGING_ELEMS) {
        long long count = n - at < STAGING_ELEMS ? n - at : STAGING_ELEMS;
        cu_ptr y = x->staging, a = src + (cu_ptr)(at * (int64_t)dtype_size(t));
        void *args[] = {&y, &a, &count};
        if (launch_1d(x, x->cast_out[dtype_index(t)], args, count, "cuLaunchKernel(edm_cast_to_f32)", st) != 0 ||
            copy_out(x, out + at, x->staging, sizeof(float) * (size_t)count, st) != 0)
            return -1;
    }
    return 0;
}

int edm_cuda_exec_set_f32(edm_cuda_exec *x, const char *name, const float *data, int64_t n, edm_status *st)
{
    int id = edm_graph_find_leaf(x->g, name);
    if (id < 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the model has no input, parameter or buffer '%s'", name);
    if (x->numel[id] != n)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "'%s' has %lld elements, %lld given", name,
                        (long long)x->numel[id], (long long)n);
    /* a value without a batch may be read by the weights groups: their results go stale */
    if (!edm_shape_has_batch(&edm_graph_node(x->g, id)->shape))
        x->weights_fresh = 0;
    if (upload(x, value_ptr(x, id), value_dtype(x, id), data, n, st) != 0)
        return -1;
    x->set[id] = 1;
    return 0;
}

int edm_cuda_exec_get_f32(edm_cuda_exec *x, int node, float *out, int64_t n, edm_status *st)
{
    int id = own_id(x, node);
    if (id < 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no value %%%d%s", node,
                        node >= 0 && x->map ? " (removed by the fusion rewrites)" : "");
    if (!x->vp[x->vp[id].base].keep || x->vp[x->vp[id].base].offset < 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "value %%%d was not kept (edm_cuda_exec_keep_all)", node);
    if (x->numel[id] != n)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "value %%%d has %lld elements, not %lld", node,
                        (long long)x->numel[id], (long long)n);
    return download(x, out, value_ptr(x, id), value_dtype(x, id), n, st);
}

/* ------------------------------------------------------------------ running */

static int launch_node_kernel(edm_cuda_exec *x, int i, edm_status *st)
{
    const edm_node *n = edm_graph_node(x->g, i);
    const edm_cuda_launch *L = &x->code.launch[i];
    cu_ptr y = value_ptr(x, i);
    cu_ptr a = n->ninputs > 0 ? value_ptr(x, n->input[0]) : 0;
    cu_ptr b = n->ninputs > 1 ? value_ptr(x, n->input[1]) : 0;
    cu_ptr seed = x->seed;
    void *args[] = {&y, &a, &b, &seed};
    cu_result r = x->api.LaunchKernel(x->fn[i], L->grid[0], L->grid[1], L->grid[2], L->block[0], L->block[1],
                                      L->block[2], L->smem, x->stream, args, NULL);
    if (r != CU_SUCCESS) {
        cu_check(&x->api, r, "cuLaunchKernel", st);
        edm_status_prefix(st, "node %%%d (%s, kernel %s)", i, edm_op_name(n->op), L->kernel);
        return -1;
    }
    return 0;
}

/* im2col / col2im of samples [n0, n0+count). */
static int launch_col(edm_cuda_exec *x, cu_function f, cu_ptr dst, cu_ptr src, int64_t n0, int64_t count,
                      int64_t elems, const char *what, edm_status *st)
{
    long long first = (long long)n0, cnt = (long long)count;
    void *args[] = {&dst, &src, &first, &cnt};
    return launch_1d(x, f, args, elems, what, st);
}

/* The B operand of samples [n0, n0+cnt) of a convolution reading x: x itself
 * for a 1×1 (direct) convolution, else the im2col buffer, filled now. */
static int col_operand(edm_cuda_exec *x, const gemm_plan *p, const edm_cuda_gemm *g, cu_ptr in, int64_t n0,
                       int64_t cnt, cu_ptr *out, edm_status *st)
{
    if (g->direct) {
        *out = in + (cu_ptr)((size_t)(n0 * g->stride_b) * dtype_size(g->type_b));
        return 0;
    }
    *out = x->col;
    return launch_col(x, p->im2col, x->col, in, n0, cnt, cnt * g->stride_b, "cuLaunchKernel(im2col)", st);
}

/* A contraction through cuBLASLt (the plan says how). */
static int run_gemm(edm_cuda_exec *x, int i, edm_status *st)
{
    const edm_node *n = edm_graph_node(x->g, i);
    const edm_cuda_launch *L = &x->code.launch[i];
    const edm_cuda_gemm *g = &L->gemm;
    gemm_plan *p = &x->gemm[i];
    cu_ptr y = value_ptr(x, i), a = value_ptr(x, n->input[0]), b = value_ptr(x, n->input[1]);
    size_t sa = dtype_size(g->type_a), sb = dtype_size(g->type_b), sc = dtype_size(g->type_c);
#define GEMM(call, A, B, C, beta) \
    cuda_gemm_run(&x->lt, x->lt_handle, call, A, B, C, beta, x->lt_ws, LT_WORKSPACE_BYTES, x->stream, st)
    switch (n->op) {
    case EDM_OP_MATMUL:
        return GEMM(&p->full, a, b, y, 0.0f);
    case EDM_OP_CONV2D: /* inputs (x, w): A = w, B = col(x) */
        for (int64_t n0 = 0; n0 < g->count; n0 += p->chunk) {
            int64_t cnt = g->count - n0 < p->chunk ? g->count - n0 : p->chunk;
            cu_ptr B;
            if (col_operand(x, p, g, a, n0, cnt, &B, st) != 0)
                return -1;
            if (GEMM(cnt == p->chunk ? &p->full : &p->tail, b, B, y + (cu_ptr)((size_t)(n0 * g->stride_c) * sc),
                     0.0f) != 0)
                return -1;
        }
        return 0;
    case EDM_OP_CONV2D_BWD_DATA: /* inputs (dy, w): C = col, A = w (trans), B = dy; col2im */
        for (int64_t n0 = 0; n0 < g->count; n0 += p->chunk) {
            int64_t cnt = g->count - n0 < p->chunk ? g->count - n0 : p->chunk;
            cu_ptr C = g->direct ? y + (cu_ptr)((size_t)(n0 * g->stride_c) * sc) : x->col;
            if (GEMM(cnt == p->chunk ? &p->full : &p->tail, b, a + (cu_ptr)((size_t)(n0 * g->stride_b) * sb), C,
                     0.0f) != 0)
                return -1;
            if (!g->direct && launch_col(x, p->col2im, y, x->col, n0, cnt, cnt * (L->numel / g->count),
                                         "cuLaunchKernel(col2im)", st) != 0)
                return -1;
        }
        return 0;
    case EDM_OP_CONV2D_BWD_WEIGHT: /* inputs (x, dy): C = dw (Σ over samples), A = dy, B = col(x) */
        for (int64_t n0 = 0; n0 < g->count; n0 += p->chunk) {
            int64_t cnt = g->count - n0 < p->chunk ? g->count - n0 : p->chunk;
            int whole = cnt == p->chunk;
            cu_ptr B;
            if (col_operand(x, p, g, a, n0, cnt, &B, st) != 0 ||
                GEMM(whole ? &p->full : &p->tail, b + (cu_ptr)((size_t)(n0 * g->stride_a) * sa), B, x->partial,
                     0.0f) != 0 ||
                GEMM(whole ? &p->sum_full : &p->sum_tail, x->ones, x->partial, y, n0 > 0 ? 1.0f : 0.0f) != 0)
                return -1;
        }
        return 0;
    default:
        return edm_fail(st, EDM_ERR_INTERNAL, n->loc, "cuBLASLt path for %s", edm_op_name(n->op));
    }
#undef GEMM
}

/* --fuse: the plan's groups in order, one launch each. */
/* One kernel of the fused plan: group gi. */
static int launch_group(edm_cuda_exec *x, int gi, edm_status *st)
{
    const edm_cuda_group_launch *G = &x->pcode.group[gi];
    cu_result r = x->api.LaunchKernel(x->group_fn[gi], G->grid[0], G->grid[1], G->grid[2], G->block[0], G->block[1],
                                      G->block[2], G->smem, x->stream, x->gargp + x->garg_first[gi], NULL);
    if (r != CU_SUCCESS) {
        cu_check(&x->api, r, "cuLaunchKernel", st);
        edm_status_prefix(st, "group %d (kernel %s, %d step%s)", gi, G->kernel, G->nsteps, G->nsteps == 1 ? "" : "s");
        return -1;
    }
    return 0;
}

/* The run's launch positions: the plan's groups (fused), else the nodes. */
static int launch_count(const edm_cuda_exec *x) { return x->plan ? x->pcode.ngroups : x->nvalues; }

/* The work of launch positions [from, to) on the stream. */
static int launch_range(edm_cuda_exec *x, int from, int to, edm_status *st)
{
    if (x->plan) {
        for (int gi = from; gi < to; gi++)
            if (launch_group(x, gi, st) != 0)
                return -1;
        return 0;
    }
    for (int i = from; i < to; i++) {
        /* a value the plan gave no memory is read by nothing: dead code, not run */
        if (x->code.launch[i].kind != EDM_CUDA_KERNEL || x->vp[i].offset < 0)
            continue;
        int rc = x->gemm[i].use ? run_gemm(x, i, st) : launch_node_kernel(x, i, st);
        if (rc != 0) {
            if (x->gemm[i].use)
                edm_status_prefix(st, "node %%%d (%s)", i, edm_op_name(edm_graph_node(x->g, i)->op));
            return -1;
        }
    }
    return 0;
}

/* Launch positions [from, to) captured into one instantiated graph. */
static int capture_range(edm_cuda_exec *x, int from, int to, cu_graph *out, cu_graph_exec *exec, edm_status *st)
{
    if (CU(StreamBeginCapture(x->stream, CU_STREAM_CAPTURE_THREAD_LOCAL), "cuStreamBeginCapture") != 0)
        return -1;
    int rc = launch_range(x, from, to, st);
    cu_graph graph = NULL;
    cu_result r = x->api.StreamEndCapture(x->stream, &graph);
    if (rc != 0) {
        if (graph)
            x->api.GraphDestroy(graph);
        return -1;
    }
    if (cu_check(&x->api, r, "cuStreamEndCapture", st) != 0)
        return -1;
    *out = graph;
    return CU(GraphInstantiate(exec, graph, 0), "cuGraphInstantiateWithFlags");
}

/* Before a run: every leaf set, the dropout seed on the device. */
static int prepare_run(edm_cuda_exec *x, edm_status *st)
{
    for (int i = 0; i < x->nvalues; i++) {
        const edm_node *n = edm_graph_node(x->g, i);
        if (edm_op_class_of(n->op) == EDM_CLASS_LEAF && n->op != EDM_OP_CONST && !x->set[i])
            return edm_fail(st, EDM_ERR_USAGE, n->loc, "%s '%s' has no value", edm_op_name(n->op), n->name);
    }
    unsigned long long seed = x->opt.seed;
    return copy_in(x, x->seed, &seed, sizeof seed, st);
}

int edm_cuda_exec_profile(edm_cuda_exec *x, edm_cuda_profile_row **rows, int *nrows, edm_status *st)
{
    *rows = NULL;
    *nrows = 0;
    if (!x->plan)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--profile times the kernels of a fused plan (--fuse=all or a list)");
    if (prepare_run(x, st) != 0)
        return -1;
    int n = x->pcode.ngroups;
    cu_event *ev = calloc((size_t)n + 1, sizeof *ev);
    edm_cuda_profile_row *r = calloc((size_t)(n > 0 ? n : 1), sizeof *r);
    int rc = ev && r ? 0 : edm_nomem(st);
    int made = 0;
    for (; rc == 0 && made <= n; made++)
        rc = CU(EventCreate(&ev[made], 0), "cuEventCreate");
    if (rc == 0)
        rc = CU(EventRecord(ev[0], x->stream), "cuEventRecord");
    for (int gi = 0; gi < n && rc == 0; gi++) {
        rc = launch_group(x, gi, st);
        if (rc == 0)
            rc = CU(EventRecord(ev[gi + 1], x->stream), "cuEventRecord");
    }
    if (rc == 0)
        rc = CU(EventSynchronize(ev[n]), "cuEventSynchronize");
    for (int gi = 0; gi < n && rc == 0; gi++) {
        float ms = 0;
        rc = CU(EventElapsedTime(&ms, ev[gi], ev[gi + 1]), "cuEventElapsedTime");
        const edm_cuda_group_launch *G = &x->pcode.group[gi];
        snprintf(r[gi].kernel, sizeof r[gi].kernel, "%s", G->kernel);
        r[gi].ms = ms;
        r[gi].steps = G->nsteps;
        if (G->nsteps == 1) { /* a tensor-core contraction: which, for tuning */
            r[gi].mma = x->pcode.launch[G->first_step].mma;
            r[gi].mma_tile = x->pcode.launch[G->first_step].mma_tile;
        }
    }
    for (int i = 0; ev && i < made; i++)
        if (ev[i])
            x->api.EventDestroy(ev[i]);
    free(ev);
    if (rc != 0) {
        free(r);
        return -1;
    }
    *rows = r;
    *nrows = n;
    return 0;
}

int edm_cuda_exec_run(edm_cuda_exec *x, edm_status *st)
{
    if (prepare_run(x, st) != 0)
        return -1;
    /* the weights groups' values already made from these parameters: start after them */
    int from = x->weights_fresh ? x->weights_groups : 0;
    if (x->opt.no_graph) {
        if (launch_range(x, from, launch_count(x), st) != 0)
            return -1;
    } else {
        cu_graph *graph = from ? &x->graph_rest : &x->graph;
        cu_graph_exec *exec = from ? &x->graph_rest_exec : &x->graph_exec;
        if (!*exec && capture_range(x, from, launch_count(x), graph, exec, st) != 0)
            return -1;
        if (CU(GraphLaunch(*exec, x->stream), "cuGraphLaunch") != 0)
            return -1;
    }
    if (CU(StreamSynchronize(x->stream), "cuStreamSynchronize (after the run)") != 0)
        return -1;
    x->weights_fresh = x->weights_groups > 0;
    return 0;
}

int edm_cuda_exec_launches(const edm_cuda_exec *x) { return launch_count(x); }

/* The segments' graphs for these cuts (captured again when the cuts change). */
static int capture_segments(edm_cuda_exec *x, const int *cut, int ncut, edm_status *st)
{
    if (x->seg_cut && x->nseg_cut == ncut && memcmp(x->seg_cut, cut, sizeof *cut * (size_t)ncut) == 0)
        return 0;
    drop_segments(x);
    x->seg_graph = calloc((size_t)ncut + 1, sizeof *x->seg_graph);
    x->seg_exec = calloc((size_t)ncut + 1, sizeof *x->seg_exec);
    x->seg_cut = malloc(sizeof *cut * (size_t)(ncut ? ncut : 1));
    if (!x->seg_graph || !x->seg_exec || !x->seg_cut) {
        drop_segments(x);
        return edm_nomem(st);
    }
    memcpy(x->seg_cut, cut, sizeof *cut * (size_t)ncut);
    x->nseg_cut = ncut;
    for (int k = 0, from = 0; k <= ncut; k++) {
        int to = k < ncut ? cut[k] + 1 : launch_count(x);
        if (to > from && capture_range(x, from, to, &x->seg_graph[k], &x->seg_exec[k], st) != 0) {
            drop_segments(x);
            return -1;
        }
        from = to > from ? to : from;
    }
    return 0;
}

int edm_cuda_exec_run_cut(edm_cuda_exec *x, const int *cut, int ncut, int (*at)(void *ctx, int k, edm_status *st),
                          void *ctx, edm_status *st)
{
    int n = launch_count(x);
    for (int k = 0; k < ncut; k++)
        if (cut[k] < -1 || cut[k] >= n || (k > 0 && cut[k] < cut[k - 1]))
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "cut %d of a run at launch %d (of %d, in order)", k,
                            cut[k], n);
    if (prepare_run(x, st) != 0 || (!x->opt.no_graph && capture_segments(x, cut, ncut, st) != 0))
        return -1;
    for (int k = 0, from = 0; k <= ncut; k++) {
        int to = k < ncut ? cut[k] + 1 : n;
        if (to > from) {
            int rc = x->opt.no_graph ? launch_range(x, from, to, st)
                                     : CU(GraphLaunch(x->seg_exec[k], x->stream), "cuGraphLaunch");
            if (rc != 0)
                return -1;
            from = to;
        }
        if (k < ncut && at(ctx, k, st) != 0)
            return -1;
    }
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize (after the run)");
}

/* ------------------------------------------------------------------ the optimizer */

int edm_cuda_opt_attach(edm_cuda_exec *x, const edm_cuda_opt_param *p, int n, edm_status *st)
{
    if (!x->opt.optimizer)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "the executor was built without optimizer kernels");
    x->params = calloc((size_t)(n > 0 ? n : 1), sizeof *x->params);
    if (!x->params)
        return edm_nomem(st);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int node = own_id(x, p[i].node), grad = own_id(x, p[i].grad_node);
        if (node < 0 || grad < 0)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "optimizer parameter %d: no node %%%d or %%%d", i,
                            p[i].node, p[i].grad_node);
        const edm_node *pn = edm_graph_node(x->g, node);
        if (pn->op != EDM_OP_PARAM || value_dtype(x, node) != EDM_F32 || !x->vp[x->vp[grad].base].keep)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "'%s' is not an f32 parameter with a kept gradient",
                            pn->name);
        opt_param *q = &x->params[i];
        q->node = node;
        q->grad_node = grad;
        q->forced_wn = p[i].forced_wn;
        q->rows = p[i].rows > 0 ? p[i].rows : 1;
        q->numel = x->numel[node];
        total += 2 * align256(sizeof(float) * (size_t)q->numel);
    }
    x->nparams = n;
    x->opt_bytes = total + 256;
    if (CU(MemAlloc(&x->opt_mem, total ? total : 256), "cuMemAlloc (optimizer state)") != 0 ||
        zero(x, x->opt_mem, total ? total : 256, st) != 0 || CU(MemAlloc(&x->nonfinite, 256), "cuMemAlloc (Adam's non-finite counter)") != 0)
        return -1;
    cu_ptr at = x->opt_mem;
    for (int i = 0; i < n; i++) {
        opt_param *q = &x->params[i];
        size_t bytes = align256(sizeof(float) * (size_t)q->numel);
        q->m = at;
        q->v = at + bytes;
        at += 2 * bytes;
    }
    return 0;
}

/* The accumulators, zeroed, on first use: a step of one pass on one rank
 * never needs them (edm_cuda_opt_direct_grads). */
static int ensure_acc(edm_cuda_exec *x, edm_status *st)
{
    if (x->direct_grads)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC,
                        "the gradient accumulators were asked for with direct gradients (one pass, one rank)");
    if (x->acc_mem || x->nparams == 0)
        return 0;
    size_t total = 0;
    for (int i = 0; i < x->nparams; i++)
        total += align256(sizeof(float) * (size_t)x->params[i].numel);
    if (CU(MemAlloc(&x->acc_mem, total), "cuMemAlloc (the gradient accumulators)") != 0)
        return -1;
    x->acc_bytes = total;
    if (zero(x, x->acc_mem, total, st) != 0)
        return -1;
    cu_ptr at = x->acc_mem;
    for (int i = 0; i < x->nparams; i++) {
        x->params[i].acc = at;
        at += align256(sizeof(float) * (size_t)x->params[i].numel);
    }
    return 0;
}

int edm_cuda_opt_direct_grads(edm_cuda_exec *x, int on, edm_status *st)
{
    if (on && x->acc_mem) /* chosen before the first step, never with accumulated gradients */
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "direct gradients after the accumulators were made");
    x->direct_grads = on != 0;
    return 0;
}

int edm_cuda_opt_force_wn(edm_cuda_exec *x, edm_status *st)
{
    for (int i = 0; i < x->nparams; i++) {
        opt_param *q = &x->params[i];
        if (!q->forced_wn)
            continue;
        cu_ptr w = value_ptr(x, q->node);
        long long rows = (long long)q->rows, fan_in = (long long)(q->numel / q->rows);
        void *args[] = {&w, &rows, &fan_in};
        unsigned grid = (unsigned)(rows < 1 ? 1 : rows);
        if (CU(LaunchKernel(x->force_wn, grid, 1, 1, 256, 1, 1, 0, x->stream, args, NULL),
               "cuLaunchKernel(edm_force_wn)") != 0)
            return -1;
    }
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

int edm_cuda_opt_zero_grad(edm_cuda_exec *x, edm_status *st)
{
    if (x->direct_grads) /* each run writes the kept gradients whole */
        return 0;
    if (ensure_acc(x, st) != 0)
        return -1;
    for (int i = 0; i < x->nparams; i++)
        if (CU(MemsetD8Async(x->params[i].acc, 0, sizeof(float) * (size_t)x->params[i].numel, x->stream),
               "cuMemsetD8Async") != 0)
            return -1;
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

static int accumulate_one(edm_cuda_exec *x, int i, edm_status *st)
{
    if (x->direct_grads)
        return 0;
    if (ensure_acc(x, st) != 0)
        return -1;
    opt_param *q = &x->params[i];
    cu_ptr acc = q->acc, g = value_ptr(x, q->grad_node);
    long long n = (long long)q->numel;
    void *args[] = {&acc, &g, &n};
    return launch_1d(x, x->grad_acc[dtype_index(value_dtype(x, q->grad_node))], args, q->numel,
                     "cuLaunchKernel(edm_grad_acc)", st);
}

int edm_cuda_opt_accumulate(edm_cuda_exec *x, edm_status *st)
{
    for (int i = 0; i < x->nparams; i++)
        if (accumulate_one(x, i, st) != 0)
            return -1;
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

int edm_cuda_opt_accumulate_some(edm_cuda_exec *x, const int *which, int n, edm_status *st)
{
    for (int k = 0; k < n; k++) {
        if (which[k] < 0 || which[k] >= x->nparams)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "no optimizer parameter %d", which[k]);
        if (accumulate_one(x, which[k], st) != 0)
            return -1;
    }
    return 0;
}

int edm_cuda_opt_grad_ready(const edm_cuda_exec *x, int i)
{
    if (i < 0 || i >= x->nparams)
        return -1;
    int base = x->vp[x->params[i].grad_node].base;
    if (!x->plan) /* unfused: launch position i is node i */
        return base;
    int step = x->plan->values[base].step;
    return step >= 0 ? x->plan->steps[step].group : -1;
}

int edm_cuda_opt_adam(edm_cuda_exec *x, double lr, double beta1, double beta2, double eps, int64_t step,
                      int64_t *nonfinite, edm_status *st)
{
    double c1 = 1 - pow(beta1, (double)step), c2 = 1 - pow(beta2, (double)step);
    if (zero(x, x->nonfinite, 8, st) != 0 || (!x->direct_grads && ensure_acc(x, st) != 0))
        return -1;
    for (int i = 0; i < x->nparams; i++) {
        opt_param *q = &x->params[i];
        int dt = x->direct_grads ? dtype_index(value_dtype(x, q->grad_node)) : 0;
        cu_ptr w = value_ptr(x, q->node), m = q->m, v = q->v, counter = x->nonfinite;
        cu_ptr g = x->direct_grads ? value_ptr(x, q->grad_node) : q->acc;
        long long n = (long long)q->numel;
        void *args[] = {&w, &m, &v, &g, &n, &lr, &beta1, &beta2, &eps, &c1, &c2, &counter};
        if (launch_1d(x, x->adam[dt], args, q->numel, "cuLaunchKernel(edm_adam)", st) != 0)
            return -1;
    }
    unsigned long long bad = 0;
    if (copy_out(x, &bad, x->nonfinite, sizeof bad, st) != 0)
        return -1;
    *nonfinite = (int64_t)bad;
    return 0;
}

static int check_param(const edm_cuda_exec *x, int i, int64_t n, edm_status *st)
{
    if (i < 0 || i >= x->nparams)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "no optimizer parameter %d", i);
    if (x->params[i].numel != n)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "parameter %d has %lld elements, not %lld", i,
                        (long long)x->params[i].numel, (long long)n);
    return 0;
}

int edm_cuda_opt_download(edm_cuda_exec *x, int i, float *value, float *m, float *v, int64_t n, edm_status *st)
{
    if (check_param(x, i, n, st) != 0)
        return -1;
    const opt_param *q = &x->params[i];
    if (value && download(x, value, value_ptr(x, q->node), EDM_F32, n, st) != 0)
        return -1;
    if (m && download(x, m, q->m, EDM_F32, n, st) != 0)
        return -1;
    return v ? download(x, v, q->v, EDM_F32, n, st) : 0;
}

int edm_cuda_opt_upload(edm_cuda_exec *x, int i, const float *value, const float *m, const float *v, int64_t n,
                        edm_status *st)
{
    if (check_param(x, i, n, st) != 0)
        return -1;
    const opt_param *q = &x->params[i];
    if (value && upload(x, value_ptr(x, q->node), EDM_F32, value, n, st) != 0)
        return -1;
    if (m && upload(x, q->m, EDM_F32, m, n, st) != 0)
        return -1;
    return v ? upload(x, q->v, EDM_F32, v, n, st) : 0;
}

int edm_cuda_opt_download_grad(edm_cuda_exec *x, int i, float *grad, int64_t n, edm_status *st)
{
    if (check_param(x, i, n, st) != 0)
        return -1;
    if (x->direct_grads) {
        int g = x->params[i].grad_node;
        return download(x, grad, value_ptr(x, g), value_dtype(x, g), n, st);
    }
    return ensure_acc(x, st) != 0 ? -1 : download(x, grad, x->params[i].acc, EDM_F32, n, st);
}

unsigned long long edm_cuda_opt_grad_ptr(const edm_cuda_exec *x, int i)
{
    return i >= 0 && i < x->nparams ? (unsigned long long)x->params[i].acc : 0;
}

void *edm_cuda_exec_stream(const edm_cuda_exec *x) { return x->stream; }

int edm_cuda_exec_sync(edm_cuda_exec *x, edm_status *st) { return CU(StreamSynchronize(x->stream), "cuStreamSynchronize"); }

int edm_cuda_exec_sync_stream(edm_cuda_exec *x, void *stream, edm_status *st)
{
    return CU(StreamSynchronize((cu_stream)stream), "cuStreamSynchronize");
}

int edm_cuda_exec_bind_thread(edm_cuda_exec *x, edm_status *st) { return CU(CtxSetCurrent(x->ctx), "cuCtxSetCurrent"); }

void *edm_cuda_exec_comm_stream(edm_cuda_exec *x, edm_status *st)
{
    if (!x->comm) {
        /* no timing: the events only order the streams */
        if (CU(StreamCreate(&x->comm, CU_STREAM_NON_BLOCKING), "cuStreamCreate (the collective's stream)") != 0 ||
            CU(EventCreate(&x->fork, CU_EVENT_DISABLE_TIMING), "cuEventCreate") != 0 ||
            CU(EventCreate(&x->join, CU_EVENT_DISABLE_TIMING), "cuEventCreate") != 0)
            return NULL;
    }
    return x->comm;
}

/* waiter's later work waits for the work queued so far on done (through ev). */
static int stream_waits(edm_cuda_exec *x, cu_stream waiter, cu_event ev, cu_stream done, edm_status *st)
{
    if (!x->comm)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "the collective's stream was not made");
    return CU(EventRecord(ev, done), "cuEventRecord") != 0 ? -1
                                                           : CU(StreamWaitEvent(waiter, ev, 0), "cuStreamWaitEvent");
}

int edm_cuda_exec_comm_waits(edm_cuda_exec *x, edm_status *st) { return stream_waits(x, x->comm, x->fork, x->stream, st); }

int edm_cuda_exec_compute_waits(edm_cuda_exec *x, edm_status *st)
{
    return stream_waits(x, x->stream, x->join, x->comm, st);
}

int edm_cuda_opt_upload_grad(edm_cuda_exec *x, int i, const float *grad, int64_t n, edm_status *st)
{
    if (check_param(x, i, n, st) != 0 || ensure_acc(x, st) != 0)
        return -1;
    return upload(x, x->params[i].acc, EDM_F32, grad, n, st);
}

/* ------------------------------------------------------------------ EMAs */

/* Where EMA k of parameter i starts. */
static cu_ptr ema_ptr(const edm_cuda_exec *x, int k, int i)
{
    cu_ptr at = x->ema_mem + (cu_ptr)((size_t)k * x->ema_stride);
    for (int j = 0; j < i; j++)
        at += align256(sizeof(float) * (size_t)x->params[j].numel);
    return at;
}

static int ema_step(edm_cuda_exec *x, int k, double beta, edm_status *st)
{
    for (int i = 0; i < x->nparams; i++) {
        cu_ptr e = ema_ptr(x, k, i), w = value_ptr(x, x->params[i].node);
        long long n = (long long)x->params[i].numel;
        void *args[] = {&e, &w, &n, &beta};
        if (launch_1d(x, x->ema, args, x->params[i].numel, "cuLaunchKernel(edm_ema)", st) != 0)
            return -1;
    }
    return 0;
}

int edm_cuda_opt_ema_attach(edm_cuda_exec *x, int count, edm_status *st)
{
    if (x->ema_mem || count < 1)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "EMAs attached twice, or %d of them", count);
    x->ema_stride = 0;
    for (int i = 0; i < x->nparams; i++)
        x->ema_stride += align256(sizeof(float) * (size_t)x->params[i].numel);
    x->ema_stride = x->ema_stride ? x->ema_stride : 256;
    if (CU(MemAlloc(&x->ema_mem, (size_t)count * x->ema_stride), "cuMemAlloc (EMAs)") != 0)
        return -1;
    x->nema = count;
    /* β = 0 copies the weights exactly (the lerp's second branch: w − (w − e)·0) */
    if (zero(x, x->ema_mem, (size_t)count * x->ema_stride, st) != 0)
        return -1;
    for (int k = 0; k < count; k++)
        if (ema_step(x, k, 0.0, st) != 0)
            return -1;
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

int edm_cuda_opt_ema_update(edm_cuda_exec *x, const double *beta, edm_status *st)
{
    for (int k = 0; k < x->nema; k++)
        if (ema_step(x, k, beta[k], st) != 0)
            return -1;
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize");
}

static int check_ema(const edm_cuda_exec *x, int k, int i, int64_t n, edm_status *st)
{
    if (k < 0 || k >= x->nema)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "no EMA %d", k);
    return check_param(x, i, n, st);
}

int edm_cuda_opt_ema_download(edm_cuda_exec *x, int k, int i, float *out, int64_t n, edm_status *st)
{
    return check_ema(x, k, i, n, st) == 0 ? download(x, out, ema_ptr(x, k, i), EDM_F32, n, st) : -1;
}

int edm_cuda_opt_ema_upload(edm_cuda_exec *x, int k, int i, const float *in, int64_t n, edm_status *st)
{
    return check_ema(x, k, i, n, st) == 0 ? upload(x, ema_ptr(x, k, i), EDM_F32, in, n, st) : -1;
}
