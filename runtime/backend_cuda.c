/* The CUDA backend (see backend_cuda.h).
 *
 * UNTESTED ON A GPU.  Written and built on a machine without a CUDA driver:
 * the probe's "no driver" path runs in `make check`; the driver calls, the
 * arena and the launches are exercised only by tests/gpu/run.sh on a lent
 * GPU machine.
 *
 * The driver API is declared here (the few types and entry points used, by
 * their versioned ABI names), so this file builds without the toolkit. */
#include "config.h"

#include "runtime/backend_cuda.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cuda_codegen.h"
#include "codegen/cuda_nvrtc.h"

/* ------------------------------------------------------------------ the driver API, opened at run time */

typedef int cu_result; /* CUresult: 0 = CUDA_SUCCESS */
typedef int cu_device;
typedef void *cu_context;
typedef void *cu_module;
typedef void *cu_function;
typedef void *cu_stream;
typedef unsigned long long cu_ptr; /* CUdeviceptr */

#define CU_SUCCESS 0
#define CU_ERROR_NO_DEVICE 100
#define CU_ATTR_CC_MAJOR 75
#define CU_ATTR_CC_MINOR 76
#define CU_STREAM_DEFAULT 0u /* blocking: ordered with the legacy stream's copies */

typedef struct {
    void *lib;
    cu_result (*Init)(unsigned);
    cu_result (*DriverGetVersion)(int *);
    cu_result (*DeviceGetCount)(int *);
    cu_result (*DeviceGet)(cu_device *, int);
    cu_result (*DeviceGetName)(char *, int, cu_device);
    cu_result (*DeviceGetAttribute)(int *, int, cu_device);
    cu_result (*DeviceTotalMem)(size_t *, cu_device);
    cu_result (*DevicePrimaryCtxRetain)(cu_context *, cu_device);
    cu_result (*DevicePrimaryCtxRelease)(cu_device);
    cu_result (*CtxSetCurrent)(cu_context);
    cu_result (*ModuleLoadData)(cu_module *, const void *);
    cu_result (*ModuleUnload)(cu_module);
    cu_result (*ModuleGetFunction)(cu_function *, cu_module, const char *);
    cu_result (*LaunchKernel)(cu_function, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              cu_stream, void **, void **);
    cu_result (*MemAlloc)(cu_ptr *, size_t);
    cu_result (*MemFree)(cu_ptr);
    cu_result (*MemcpyHtoD)(cu_ptr, const void *, size_t);
    cu_result (*MemcpyDtoH)(void *, cu_ptr, size_t);
    cu_result (*MemsetD8)(cu_ptr, unsigned char, size_t);
    cu_result (*StreamCreate)(cu_stream *, unsigned);
    cu_result (*StreamDestroy)(cu_stream);
    cu_result (*StreamSynchronize)(cu_stream);
    cu_result (*GetErrorName)(cu_result, const char **);
    cu_result (*GetErrorString)(cu_result, const char **);
} cu_api;

/* Resolves one symbol into a function pointer (memcpy: ISO C has no cast
 * from void * to a function pointer). */
static int resolve(void *lib, const char *name, void *fnptr, size_t fnsize, edm_status *st)
{
    void *sym = dlsym(lib, name);
    if (!sym)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the CUDA driver lacks %s (driver too old?)", name);
    memcpy(fnptr, &sym, fnsize);
    return 0;
}

#define RESOLVE(field, name) resolve(api->lib, name, &api->field, sizeof api->field, st)

static void api_close(cu_api *api)
{
    if (api->lib)
        dlclose(api->lib);
    memset(api, 0, sizeof *api);
}

static int api_open(cu_api *api, edm_status *st)
{
    memset(api, 0, sizeof *api);
    api->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!api->lib) {
        const char *why = dlerror();
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no CUDA driver (libcuda.so.1 not found%s%s)",
                        why ? ": " : "", why ? why : "");
    }
    int rc = 0;
    rc |= RESOLVE(Init, "cuInit");
    rc |= RESOLVE(DriverGetVersion, "cuDriverGetVersion");
    rc |= RESOLVE(DeviceGetCount, "cuDeviceGetCount");
    rc |= RESOLVE(DeviceGet, "cuDeviceGet");
    rc |= RESOLVE(DeviceGetName, "cuDeviceGetName");
    rc |= RESOLVE(DeviceGetAttribute, "cuDeviceGetAttribute");
    rc |= RESOLVE(DeviceTotalMem, "cuDeviceTotalMem_v2");
    rc |= RESOLVE(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    rc |= RESOLVE(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    rc |= RESOLVE(CtxSetCurrent, "cuCtxSetCurrent");
    rc |= RESOLVE(ModuleLoadData, "cuModuleLoadData");
    rc |= RESOLVE(ModuleUnload, "cuModuleUnload");
    rc |= RESOLVE(ModuleGetFunction, "cuModuleGetFunction");
    rc |= RESOLVE(LaunchKernel, "cuLaunchKernel");
    rc |= RESOLVE(MemAlloc, "cuMemAlloc_v2");
    rc |= RESOLVE(MemFree, "cuMemFree_v2");
    rc |= RESOLVE(MemcpyHtoD, "cuMemcpyHtoD_v2");
    rc |= RESOLVE(MemcpyDtoH, "cuMemcpyDtoH_v2");
    rc |= RESOLVE(MemsetD8, "cuMemsetD8_v2");
    rc |= RESOLVE(StreamCreate, "cuStreamCreate");
    rc |= RESOLVE(StreamDestroy, "cuStreamDestroy_v2");
    rc |= RESOLVE(StreamSynchronize, "cuStreamSynchronize");
    rc |= RESOLVE(GetErrorName, "cuGetErrorName");
    rc |= RESOLVE(GetErrorString, "cuGetErrorString");
    if (rc != 0) {
        api_close(api);
        return -1;
    }
    return 0;
}

/* Fails naming the call and the driver's error. */
static int cu_check(const cu_api *api, cu_result r, const char *call, edm_status *st)
{
    if (r == CU_SUCCESS)
        return 0;
    const char *name = NULL, *text = NULL;
    if (api->GetErrorName)
        api->GetErrorName(r, &name);
    if (api->GetErrorString)
        api->GetErrorString(r, &text);
    return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s failed: %s (%d)%s%s", call, name ? name : "CUDA error", r,
                    text ? ": " : "", text ? text : "");
}

#define CU(call, what) cu_check(&x->api, x->api.call, what, st)

/* cuInit and the device count, with the plain messages of the probe. */
static int api_init(const cu_api *api, edm_status *st)
{
    cu_result r = api->Init(0);
    if (r == CU_ERROR_NO_DEVICE)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no CUDA device (the driver is installed, cuInit found no GPU)");
    if (r != CU_SUCCESS) {
        cu_check(api, r, "cuInit", st);
        edm_status_prefix(st, "no usable CUDA device: ");
        return -1;
    }
    int count = 0;
    if (cu_check(api, api->DeviceGetCount(&count), "cuDeviceGetCount", st) != 0)
        return -1;
    if (count < 1)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no CUDA device (cuDeviceGetCount found none)");
    return 0;
}

int edm_cuda_probe(char *desc, size_t size, edm_status *st)
{
    cu_api api;
    if (api_open(&api, st) != 0)
        return -1;
    int rc = api_init(&api, st);
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
    api_close(&api);
    return rc;
}

/* ------------------------------------------------------------------ the executor */

typedef struct {
    int base;       /* the value whose memory this one uses (itself unless an alias) */
    int64_t offset; /* bytes into the arena (bases only) */
    int64_t bytes;
    int last_use;   /* last node reading the base (through any alias) */
    int keep;
} value_plan;

struct edm_cuda_exec {
    const edm_graph *g;
    edm_cuda_exec_options opt;
    int64_t batch;
    cu_api api;
    cu_device dev;
    cu_context ctx;
    int ctx_retained;
    cu_stream stream;
    cu_module module;
    char device_name[256];
    edm_cuda_module code;
    cu_function *fn;   /* per node (KERNEL nodes) */
    cu_function cast_in, cast_out;
    value_plan *vp;
    int nvalues;
    size_t esize;
    cu_ptr arena;
    size_t arena_bytes;
    cu_ptr staging; /* f32 staging for uploads and downloads */
    size_t staging_bytes;
    int *set;        /* leaves given a value */
    int planned_keep_all;
    double compile_seconds;
};

static size_t align256(size_t v) { return (v + 255) & ~(size_t)255; }

/* First-fit offsets over lifetimes [definition, last use]; leaves and kept
 * values live for the whole run. */
typedef struct {
    int64_t offset, bytes;
    int end;
} live_block;

static int plan_memory(edm_cuda_exec *x, int keep_all, edm_status *st)
{
    const edm_graph *g = x->g;
    int n = x->nvalues;
    for (int i = 0; i < n; i++) {
        const edm_node *nd = edm_graph_node(g, i);
        value_plan *v = &x->vp[i];
        v->base = x->code.launch[i].kind == EDM_CUDA_ALIAS ? x->vp[nd->input[0]].base : i;
        v->bytes = (int64_t)align256((size_t)x->code.launch[i].numel * x->esize);
        v->last_use = i;
        v->keep = keep_all || nd->op == EDM_OP_OUTPUT || edm_op_class_of(nd->op) == EDM_CLASS_LEAF;
        for (int k = 0; k < nd->ninputs; k++) {
            value_plan *src = &x->vp[x->vp[nd->input[k]].base];
            src->last_use = i > src->last_use ? i : src->last_use;
        }
        if (v->keep && v->base != i)
            x->vp[v->base].keep = 1;
    }
    live_block *live = malloc(sizeof *live * (n > 0 ? (size_t)n : 1u));
    if (!live)
        return edm_nomem(st);
    int nlive = 0;
    int64_t top = 0;
    for (int i = 0; i < n; i++) {
        value_plan *v = &x->vp[i];
        if (v->base != i)
            continue;
        /* drop blocks whose values died before this node */
        int w = 0;
        for (int k = 0; k < nlive; k++)
            if (live[k].end >= i)
                live[w++] = live[k];
        nlive = w;
        /* lowest gap that fits (blocks kept sorted by offset) */
        int64_t at = 0;
        int pos = 0;
        for (; pos < nlive; pos++) {
            if (live[pos].offset - at >= v->bytes)
                break;
            int64_t end = live[pos].offset + live[pos].bytes;
            at = end > at ? end : at;
        }
        v->offset = at;
        memmove(live + pos + 1, live + pos, sizeof *live * (size_t)(nlive - pos));
        live[pos] = (live_block){.offset = at, .bytes = v->bytes, .end = v->keep ? n : v->last_use};
        nlive++;
        top = at + v->bytes > top ? at + v->bytes : top;
    }
    free(live);
    x->arena_bytes = (size_t)(top ? top : 256);
    return 0;
}

static cu_ptr value_ptr(const edm_cuda_exec *x, int id)
{
    const value_plan *v = &x->vp[x->vp[id].base];
    return x->arena + (cu_ptr)v->offset;
}

static int open_device(edm_cuda_exec *x, edm_status *st)
{
    if (api_open(&x->api, st) != 0 || api_init(&x->api, st) != 0)
        return -1;
    if (CU(DeviceGet(&x->dev, x->opt.device), "cuDeviceGet") != 0 ||
        CU(DeviceGetName(x->device_name, (int)sizeof x->device_name, x->dev), "cuDeviceGetName") != 0 ||
        CU(DevicePrimaryCtxRetain(&x->ctx, x->dev), "cuDevicePrimaryCtxRetain") != 0)
        return -1;
    x->ctx_retained = 1;
    if (CU(CtxSetCurrent(x->ctx), "cuCtxSetCurrent") != 0 ||
        CU(StreamCreate(&x->stream, CU_STREAM_DEFAULT), "cuStreamCreate") != 0)
        return -1;
    return 0;
}

static int load_kernels(edm_cuda_exec *x, edm_status *st)
{
    int major = 0, minor = 0;
    if (CU(DeviceGetAttribute(&major, CU_ATTR_CC_MAJOR, x->dev), "cuDeviceGetAttribute") != 0 ||
        CU(DeviceGetAttribute(&minor, CU_ATTR_CC_MINOR, x->dev), "cuDeviceGetAttribute") != 0)
        return -1;
    char arch[16];
    snprintf(arch, sizeof arch, "sm_%d%d", major, minor);
    edm_cubin cubin;
    if (edm_nvrtc_compile_cached(x->code.source, arch, &cubin, st) != 0)
        return -1;
    x->compile_seconds = cubin.seconds;
    int rc = CU(ModuleLoadData(&x->module, cubin.data), "cuModuleLoadData");
    edm_cubin_free(&cubin);
    if (rc != 0)
        return -1;
    if (CU(ModuleGetFunction(&x->cast_in, x->module, "edm_cast_from_f32"), "cuModuleGetFunction(edm_cast_from_f32)") !=
            0 ||
        CU(ModuleGetFunction(&x->cast_out, x->module, "edm_cast_to_f32"), "cuModuleGetFunction(edm_cast_to_f32)") != 0)
        return -1;
    for (int i = 0; i < x->code.nlaunch; i++) {
        const edm_cuda_launch *L = &x->code.launch[i];
        if (L->kind != EDM_CUDA_KERNEL)
            continue;
        if (cu_check(&x->api, x->api.ModuleGetFunction(&x->fn[i], x->module, L->kernel), "cuModuleGetFunction", st) !=
            0) {
            edm_status_prefix(st, "kernel %s: ", L->kernel);
            return -1;
        }
    }
    return 0;
}

static int alloc_arena(edm_cuda_exec *x, edm_status *st)
{
    if (x->arena) {
        if (CU(MemFree(x->arena), "cuMemFree") != 0)
            return -1;
        x->arena = 0;
    }
    if (CU(MemAlloc(&x->arena, x->arena_bytes), "cuMemAlloc (activation arena)") != 0) {
        edm_status_prefix(st, "%.1f MiB: ", (double)x->arena_bytes / (1 << 20));
        return -1;
    }
    /* constants are filled by their kernels every run; zero the rest once */
    return CU(MemsetD8(x->arena, 0, x->arena_bytes), "cuMemsetD8");
}

edm_cuda_exec *edm_cuda_exec_new(const edm_graph *g, int64_t batch, const edm_cuda_exec_options *opt,
                                 edm_status *st)
{
    edm_cuda_exec *x = calloc(1, sizeof *x);
    if (!x) {
        edm_nomem(st);
        return NULL;
    }
    x->g = g;
    x->batch = batch;
    if (opt)
        x->opt = *opt;
    x->esize = x->opt.storage == EDM_F32 ? 4 : 2;
    x->nvalues = edm_graph_count(g);
    edm_cuda_options co = {.storage = x->opt.storage, .batch = batch, .training = x->opt.training};
    int rc = edm_cuda_codegen(g, &co, &x->code, st);
    if (rc == 0 && !edm_nvrtc_available())
        rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                      "this edmc was built without the CUDA toolkit: it cannot compile kernels for --device=cuda");
    if (rc == 0) {
        x->fn = calloc((size_t)(x->nvalues ? x->nvalues : 1), sizeof *x->fn);
        x->vp = calloc((size_t)(x->nvalues ? x->nvalues : 1), sizeof *x->vp);
        x->set = calloc((size_t)(x->nvalues ? x->nvalues : 1), sizeof *x->set);
        if (!x->fn || !x->vp || !x->set)
            rc = edm_nomem(st);
    }
    if (rc == 0)
        rc = open_device(x, st);
    if (rc == 0)
        rc = load_kernels(x, st);
    if (rc == 0)
        rc = plan_memory(x, 0, st);
    if (rc == 0)
        rc = alloc_arena(x, st);
    if (rc == 0) {
        size_t most = 4;
        for (int i = 0; i < x->nvalues; i++)
            most = (size_t)x->code.launch[i].numel * 4 > most ? (size_t)x->code.launch[i].numel * 4 : most;
        x->staging_bytes = most;
        rc = CU(MemAlloc(&x->staging, most), "cuMemAlloc (staging)");
    }
    if (rc != 0) {
        edm_cuda_exec_free(x);
        return NULL;
    }
    return x;
}

void edm_cuda_exec_free(edm_cuda_exec *x)
{
    if (!x)
        return;
    if (x->api.lib) {
        /* teardown: errors here have nowhere better to go */
        if (x->stream)
            x->api.StreamSynchronize(x->stream);
        if (x->staging)
            x->api.MemFree(x->staging);
        if (x->arena)
            x->api.MemFree(x->arena);
        if (x->module)
            x->api.ModuleUnload(x->module);
        if (x->stream)
            x->api.StreamDestroy(x->stream);
        if (x->ctx_retained)
            x->api.DevicePrimaryCtxRelease(x->dev);
    }
    api_close(&x->api);
    edm_cuda_module_free(&x->code);
    free(x->fn);
    free(x->vp);
    free(x->set);
    free(x);
}

int edm_cuda_exec_keep_all(edm_cuda_exec *x, edm_status *st)
{
    if (plan_memory(x, 1, st) != 0 || alloc_arena(x, st) != 0)
        return -1;
    memset(x->set, 0, sizeof *x->set * (size_t)x->nvalues); /* the arena was replaced */
    x->planned_keep_all = 1;
    return 0;
}

void edm_cuda_exec_set_seed(edm_cuda_exec *x, uint64_t seed) { x->opt.seed = seed; }

int64_t edm_cuda_exec_numel(const edm_cuda_exec *x, int node)
{
    return node >= 0 && node < x->nvalues ? x->code.launch[node].numel : -1;
}

size_t edm_cuda_exec_arena_bytes(const edm_cuda_exec *x) { return x->arena_bytes; }
const char *edm_cuda_exec_device_name(const edm_cuda_exec *x) { return x->device_name; }
double edm_cuda_exec_compile_seconds(const edm_cuda_exec *x) { return x->compile_seconds; }

static unsigned grid_1d(int64_t n)
{
    int64_t gsz = (n + 255) / 256;
    return gsz < 1 ? 1u : gsz > (1 << 20) ? (1u << 20) : (unsigned)gsz;
}

static int cast_launch(edm_cuda_exec *x, cu_function f, cu_ptr dst, cu_ptr src, int64_t n, const char *what,
                       edm_status *st)
{
    long long count = (long long)n;
    void *args[] = {&dst, &src, &count};
    return cu_check(&x->api, x->api.LaunchKernel(f, grid_1d(n), 1, 1, 256, 1, 1, 0, x->stream, args, NULL), what, st);
}

int edm_cuda_exec_set_f32(edm_cuda_exec *x, const char *name, const float *data, int64_t n, edm_status *st)
{
    int id = -1;
    for (int i = 0; i < x->nvalues && id < 0; i++) {
        const edm_node *nd = edm_graph_node(x->g, i);
        if ((nd->op == EDM_OP_INPUT || nd->op == EDM_OP_PARAM || nd->op == EDM_OP_BUFFER) && nd->name &&
            strcmp(nd->name, name) == 0)
            id = i;
    }
    if (id < 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the model has no input, parameter or buffer '%s'", name);
    if (x->code.launch[id].numel != n)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "'%s' has %lld elements, %lld given", name,
                        (long long)x->code.launch[id].numel, (long long)n);
    if (CU(MemcpyHtoD(x->staging, data, sizeof(float) * (size_t)n), "cuMemcpyHtoD") != 0 ||
        cast_launch(x, x->cast_in, value_ptr(x, id), x->staging, n, "cuLaunchKernel(edm_cast_from_f32)", st) != 0 ||
        CU(StreamSynchronize(x->stream), "cuStreamSynchronize") != 0)
        return -1;
    x->set[id] = 1;
    return 0;
}

int edm_cuda_exec_run(edm_cuda_exec *x, edm_status *st)
{
    for (int i = 0; i < x->nvalues; i++) {
        const edm_node *n = edm_graph_node(x->g, i);
        const edm_cuda_launch *L = &x->code.launch[i];
        if (L->kind == EDM_CUDA_NONE && !x->set[i])
            return edm_fail(st, EDM_ERR_USAGE, n->loc, "%s '%s' has no value", edm_op_name(n->op), n->name);
        if (L->kind != EDM_CUDA_KERNEL)
            continue;
        cu_ptr y = value_ptr(x, i);
        cu_ptr a = n->ninputs > 0 ? value_ptr(x, n->input[0]) : 0;
        cu_ptr b = n->ninputs > 1 ? value_ptr(x, n->input[1]) : 0;
        unsigned long long seed = x->opt.seed;
        void *args[] = {&y, &a, &b, &seed};
        cu_result r = x->api.LaunchKernel(x->fn[i], L->grid[0], L->grid[1], L->grid[2], L->block[0], L->block[1],
                                          L->block[2], L->smem, x->stream, args, NULL);
        if (r != CU_SUCCESS) {
            cu_check(&x->api, r, "cuLaunchKernel", st);
            edm_status_prefix(st, "node %%%d (%s, kernel %s): ", i, edm_op_name(n->op), L->kernel);
            return -1;
        }
    }
    return CU(StreamSynchronize(x->stream), "cuStreamSynchronize (after the run)");
}

int edm_cuda_exec_get_f32(edm_cuda_exec *x, int node, float *out, int64_t n, edm_status *st)
{
    if (node < 0 || node >= x->nvalues)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no value %%%d", node);
    if (!x->vp[x->vp[node].base].keep)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "value %%%d was not kept (edm_cuda_exec_keep_all)", node);
    if (x->code.launch[node].numel != n)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "value %%%d has %lld elements, not %lld", node,
                        (long long)x->code.launch[node].numel, (long long)n);
    if (cast_launch(x, x->cast_out, x->staging, value_ptr(x, node), n, "cuLaunchKernel(edm_cast_to_f32)", st) != 0 ||
        CU(StreamSynchronize(x->stream), "cuStreamSynchronize") != 0 ||
        CU(MemcpyDtoH(out, x->staging, sizeof(float) * (size_t)n), "cuMemcpyDtoH") != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ TEMPORARY (being written) */

static int not_yet(edm_status *st)
{
    return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the CUDA optimizer is not available yet");
}

int edm_cuda_opt_attach(edm_cuda_exec *x, const edm_cuda_opt_param *p, int n, edm_status *st)
{
    (void)x, (void)p, (void)n;
    return not_yet(st);
}
int edm_cuda_opt_force_wn(edm_cuda_exec *x, edm_status *st) { (void)x; return not_yet(st); }
int edm_cuda_opt_zero_grad(edm_cuda_exec *x, edm_status *st) { (void)x; return not_yet(st); }
int edm_cuda_opt_accumulate(edm_cuda_exec *x, edm_status *st) { (void)x; return not_yet(st); }
int edm_cuda_opt_adam(edm_cuda_exec *x, double lr, double beta1, double beta2, double eps, int64_t step,
                      int64_t *nonfinite, edm_status *st)
{
    (void)x, (void)lr, (void)beta1, (void)beta2, (void)eps, (void)step, (void)nonfinite;
    return not_yet(st);
}
int edm_cuda_opt_download(edm_cuda_exec *x, int i, float *value, float *m, float *v, int64_t n, edm_status *st)
{
    (void)x, (void)i, (void)value, (void)m, (void)v, (void)n;
    return not_yet(st);
}
int edm_cuda_opt_upload(edm_cuda_exec *x, int i, const float *value, const float *m, const float *v, int64_t n,
                        edm_status *st)
{
    (void)x, (void)i, (void)value, (void)m, (void)v, (void)n;
    return not_yet(st);
}
int edm_cuda_opt_download_grad(edm_cuda_exec *x, int i, float *grad, int64_t n, edm_status *st)
{
    (void)x, (void)i, (void)grad, (void)n;
    return not_yet(st);
}
size_t edm_cuda_exec_device_bytes(const edm_cuda_exec *x) { return x->arena_bytes + x->staging_bytes; }
size_t edm_cuda_exec_total_bytes(const edm_cuda_exec *x) { return x->arena_bytes; }
const char *edm_cuda_exec_describe(const edm_cuda_exec *x) { return x->device_name; }
int edm_cuda_exec_find(const edm_cuda_exec *x, edm_op op, const char *name)
{
    for (int i = 0; i < x->nvalues; i++) {
        const edm_node *nd = edm_graph_node(x->g, i);
        if (nd->op == op && nd->name && strcmp(nd->name, name) == 0)
            return i;
    }
    return -1;
}
