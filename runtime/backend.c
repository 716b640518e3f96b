/* One interface over the CPU and CUDA executors (see backend.h). */
#include "config.h"

#include "runtime/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend_cuda.h"

struct edm_backend {
    edm_device device;
    edm_cpu *cpu;
    edm_cuda_exec *cuda;
    float *convert; /* f64 ↔ f32 staging for the CUDA side */
    int64_t convert_n;
    char describe[320];
};

edm_backend_options edm_backend_defaults(edm_device device)
{
    return (edm_backend_options){.device = device,
                                 /* the CUDA executor runs one kernel per node so far */
                                 .cpu = {.compute = EDM_F32, .fuse = device == EDM_DEVICE_CPU ? EDM_FUSE_ALL : EDM_FUSE_NONE},
                                 .storage = EDM_F16,
                                 .matmul = EDM_MATMUL_CUBLASLT,
                                 .conv = EDM_CONV_IM2COL};
}

int edm_device_from_name(const char *name, edm_device *out)
{
    if (strcmp(name, "cpu") == 0)
        *out = EDM_DEVICE_CPU;
    else if (strcmp(name, "cuda") == 0 || strcmp(name, "gpu") == 0)
        *out = EDM_DEVICE_CUDA;
    else
        return -1;
    return 0;
}

static edm_cuda_exec_options cuda_options(const edm_backend_options *o)
{
    return (edm_cuda_exec_options){.storage = o->storage,
                                   .training = o->cpu.training,
                                   .seed = o->cpu.seed,
                                   .device = o->cuda_device,
                                   .matmul_library = o->matmul == EDM_MATMUL_CUBLASLT,
                                   .conv_library = o->conv == EDM_CONV_IM2COL,
                                   .no_graph = o->no_graph,
                                   .no_tensor_cores = o->no_tensor_cores,
                                   .optimizer = o->optimizer,
                                   .network_scope = o->network_scope,
                                   .fuse = o->cpu.fuse,
                                   .keep_all = o->cpu.keep_all,
                                   .keep = o->cpu.keep,
                                   .nkeep = o->cpu.nkeep,
                                   .plan = o->cpu.plan,
                                   .kernels = o->kernels,
                                   .nkernels = o->nkernels,
                                   .compile = o->compile_kernels,
                                   .mma_tile = o->mma_tile};
}

int edm_backend_kernel_source(const edm_graph *g, int64_t batch, const edm_backend_options *opt, const char *arch,
                              char **source, edm_plan_layout *layout, edm_status *st)
{
    edm_cuda_exec_options co = cuda_options(opt);
    return edm_cuda_exec_source(g, batch, &co, arch, source, layout, st);
}

edm_backend *edm_backend_new(const edm_graph *g, int64_t batch, const edm_backend_options *opt, edm_status *st)
{
    edm_backend_options o = opt ? *opt : edm_backend_defaults(EDM_DEVICE_CPU);
    edm_backend *b = calloc(1, sizeof *b);
    if (!b) {
        edm_nomem(st);
        return NULL;
    }
    b->device = o.device;
    if (o.device == EDM_DEVICE_CPU) {
        edm_cpu_options co = o.cpu;
        co.fuse = edm_fuse_cpu(co.fuse);
        b->cpu = edm_cpu_new(g, batch, &co, st);
        if (!b->cpu) {
            free(b);
            return NULL;
        }
        int threads = o.cpu.threads;
        if (threads > 0)
            snprintf(b->describe, sizeof b->describe, "cpu %s, %d thread%s", edm_dtype_name(o.cpu.compute), threads,
                     threads == 1 ? "" : "s");
        else
            snprintf(b->describe, sizeof b->describe, "cpu %s", edm_dtype_name(o.cpu.compute));
        return b;
    }
    edm_cuda_exec_options co = cuda_options(&o);
    b->cuda = edm_cuda_exec_new(g, batch, &co, st);
    /* unfused, a keep list keeps everything (the node planner has no finer rule) */
    if (b->cuda && !o.cpu.fuse && (o.cpu.keep_all || o.cpu.nkeep > 0) && edm_cuda_exec_keep_all(b->cuda, st) != 0) {
        edm_cuda_exec_free(b->cuda);
        b->cuda = NULL;
    }
    if (!b->cuda) {
        free(b);
        return NULL;
    }
    snprintf(b->describe, sizeof b->describe, "cuda %s", edm_cuda_exec_describe(b->cuda));
    return b;
}

void edm_backend_free(edm_backend *b)
{
    if (!b)
        return;
    edm_cpu_free(b->cpu);
    edm_cuda_exec_free(b->cuda);
    free(b->convert);
    free(b);
}

edm_device edm_backend_device(const edm_backend *b) { return b->device; }
const char *edm_backend_describe(const edm_backend *b) { return b->describe; }
edm_cpu *edm_backend_cpu(edm_backend *b) { return b->cpu; }
struct edm_cuda_exec *edm_backend_cuda(edm_backend *b) { return b->cuda; }

int edm_backend_find(const edm_backend *b, edm_op op, const char *name)
{
    return b->cpu ? edm_cpu_find(b->cpu, op, name) : edm_cuda_exec_find(b->cuda, op, name);
}

int64_t edm_backend_numel(const edm_backend *b, int node)
{
    return b->cpu ? edm_cpu_numel(b->cpu, node) : edm_cuda_exec_numel(b->cuda, node);
}

int edm_backend_set_f32(edm_backend *b, const char *name, const float *data, int64_t n, edm_status *st)
{
    return b->cpu ? edm_cpu_set_f32(b->cpu, name, data, n, st) : edm_cuda_exec_set_f32(b->cuda, name, data, n, st);
}

/* The f32 staging array for f64 transfers to and from the device. */
static float *convert_buffer(edm_backend *b, int64_t n, edm_status *st)
{
    if (n > b->convert_n) {
        float *p = realloc(b->convert, sizeof(float) * (size_t)(n > 0 ? n : 1));
        if (!p) {
            edm_nomem(st);
            return NULL;
        }
        b->convert = p;
        b->convert_n = n;
    }
    return b->convert;
}

int edm_backend_set_f64(edm_backend *b, const char *name, const double *data, int64_t n, edm_status *st)
{
    if (b->cpu)
        return edm_cpu_set_f64(b->cpu, name, data, n, st);
    float *f = convert_buffer(b, n, st);
    if (!f)
        return -1;
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)data[i];
    return edm_cuda_exec_set_f32(b->cuda, name, f, n, st);
}

void edm_backend_set_seed(edm_backend *b, uint64_t seed)
{
    if (b->cpu)
        edm_cpu_set_seed(b->cpu, seed);
    else
        edm_cuda_exec_set_seed(b->cuda, seed);
}

int edm_backend_run(edm_backend *b, edm_status *st)
{
    return b->cpu ? edm_cpu_run(b->cpu, st) : edm_cuda_exec_run(b->cuda, st);
}

int edm_backend_profile(edm_backend *b, edm_cuda_profile_row **rows, int *nrows, edm_status *st)
{
    if (b->cpu)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--profile times CUDA kernels (--device=cuda)");
    return edm_cuda_exec_profile(b->cuda, rows, nrows, st);
}

int edm_backend_get_f32(edm_backend *b, int node, float *out, int64_t n, edm_status *st)
{
    return b->cpu ? edm_cpu_get_f32(b->cpu, node, out, n, st) : edm_cuda_exec_get_f32(b->cuda, node, out, n, st);
}

int edm_backend_get_f64(edm_backend *b, int node, double *out, int64_t n, edm_status *st)
{
    if (b->cpu)
        return edm_cpu_get_f64(b->cpu, node, out, n, st);
    float *f = convert_buffer(b, n, st);
    if (!f || edm_cuda_exec_get_f32(b->cuda, node, f, n, st) != 0)
        return -1;
    for (int64_t i = 0; i < n; i++)
        out[i] = f[i];
    return 0;
}

size_t edm_backend_peak_bytes(const edm_backend *b)
{
    return b->cpu ? edm_cpu_peak_bytes(b->cpu) : edm_cuda_exec_device_bytes(b->cuda);
}

size_t edm_backend_total_bytes(const edm_backend *b)
{
    return b->cpu ? edm_cpu_total_bytes(b->cpu) : edm_cuda_exec_total_bytes(b->cuda);
}
