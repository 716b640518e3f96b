/* Checks that the fake CUDA driver (fake_cuda.c) refuses what it must, so
 * that it cannot silently accept everything: out-of-bounds copies, unknown
 * kernels, bad launches, calls forbidden during a capture, inconsistent
 * cuBLASLt products, and FAKE_CUDA_FAIL / FAKE_CUDA_NO_DEVICE.
 *
 *     fake_cuda_selftest FAKE.so [checks]   the validation checks
 *     fake_cuda_selftest FAKE.so inject     with FAKE_CUDA_FAIL=cuMemAlloc_v2:2,cublasLtMatmul,cuGraphLaunch
 *                                           and FAKE_CUDA_LEAKS=1
 *     fake_cuda_selftest FAKE.so nodevice   with FAKE_CUDA_NO_DEVICE=1
 *
 * Prints "ok DESCRIPTION" or "not ok DESCRIPTION: why" per check (the TAP
 * script tests/cli/cuda_fake.sh numbers them); exit status 1 if any failed.
 * The cubins come from NVRTC (real, no GPU needed). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nvrtc.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cuda.h>
#include <cublasLt.h>
#pragma GCC diagnostic pop

/* ------------------------------------------------------------------ the library's entry points */

typedef struct {
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*PrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*PrimaryCtxRelease)(CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*FuncSetAttribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                             void **, void **);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemGetInfo)(size_t *, size_t *);
    CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (*MemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
    CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*MemsetD8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*MemsetD32)(CUdeviceptr, unsigned, size_t);
    CUresult (*StreamCreate)(CUstream *, unsigned);
    CUresult (*StreamDestroy)(CUstream);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*BeginCapture)(CUstream, CUstreamCaptureMode);
    CUresult (*EndCapture)(CUstream, CUgraph *);
    CUresult (*GraphInstantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*GraphLaunch)(CUgraphExec, CUstream);
    CUresult (*GraphExecDestroy)(CUgraphExec);
    CUresult (*GraphDestroy)(CUgraph);
    CUresult (*EventCreate)(CUevent *, unsigned);
    CUresult (*EventRecord)(CUevent, CUstream);
    CUresult (*EventElapsedTime)(float *, CUevent, CUevent);
    CUresult (*EventDestroy)(CUevent);
    CUresult (*GetErrorName)(CUresult, const char **);
    CUresult (*GetErrorString)(CUresult, const char **);
    CUresult (*StreamWaitEvent)(CUstream, CUevent, unsigned);
    CUresult (*Collective)(CUstream, CUdeviceptr, size_t, const char *); /* the fake's fake_cuda_collective */
    cublasStatus_t (*LtCreate)(cublasLtHandle_t *);
    cublasStatus_t (*LtDestroy)(cublasLtHandle_t);
    cublasStatus_t (*DescCreate)(cublasLtMatmulDesc_t *, cublasComputeType_t, cudaDataType_t);
    cublasStatus_t (*DescDestroy)(cublasLtMatmulDesc_t);
    cublasStatus_t (*DescSet)(cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t, const void *, size_t);
    cublasStatus_t (*LayoutCreate)(cublasLtMatrixLayout_t *, cudaDataType, uint64_t, uint64_t, int64_t);
    cublasStatus_t (*LayoutDestroy)(cublasLtMatrixLayout_t);
    cublasStatus_t (*LayoutSet)(cublasLtMatrixLayout_t, cublasLtMatrixLayoutAttribute_t, const void *, size_t);
    cublasStatus_t (*PrefCreate)(cublasLtMatmulPreference_t *);
    cublasStatus_t (*PrefDestroy)(cublasLtMatmulPreference_t);
    cublasStatus_t (*PrefSet)(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void *, size_t);
    cublasStatus_t (*Heuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                                cublasLtMatmulHeuristicResult_t *, int *);
    cublasStatus_t (*Matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void *, const void *, cublasLtMatrixLayout_t,
                             const void *, cublasLtMatrixLayout_t, const void *, const void *, cublasLtMatrixLayout_t,
                             void *, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t);
} api;

static api cu; /* the test program's one table of entry points */

static int resolve(void *lib, const char *name, void *fn, size_t size)
{
    void *sym = dlsym(lib, name);
    if (!sym) {
        printf("not ok the library exports %s\n", name);
        return -1;
    }
    memcpy(fn, &sym, size);
    return 0;
}

#define R(field, name) rc |= resolve(lib, name, &cu.field, sizeof cu.field)

static int load(const char *path)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("not ok dlopen %s: %s\n", path, dlerror());
        return -1;
    }
    int rc = 0;
    R(Init, "cuInit");
    R(DeviceGetCount, "cuDeviceGetCount");
    R(DeviceGetAttribute, "cuDeviceGetAttribute");
    R(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    R(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    R(CtxSetCurrent, "cuCtxSetCurrent");
    R(ModuleLoadData, "cuModuleLoadData");
    R(ModuleUnload, "cuModuleUnload");
    R(ModuleGetFunction, "cuModuleGetFunction");
    R(FuncSetAttribute, "cuFuncSetAttribute");
    R(LaunchKernel, "cuLaunchKernel");
    R(MemAlloc, "cuMemAlloc_v2");
    R(MemFree, "cuMemFree_v2");
    R(MemGetInfo, "cuMemGetInfo_v2");
    R(MemcpyHtoD, "cuMemcpyHtoD_v2");
    R(MemcpyDtoH, "cuMemcpyDtoH_v2");
    R(MemcpyDtoD, "cuMemcpyDtoD_v2");
    R(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    R(MemsetD8, "cuMemsetD8_v2");
    R(MemsetD32, "cuMemsetD32_v2");
    R(StreamCreate, "cuStreamCreate");
    R(StreamWaitEvent, "cuStreamWaitEvent");
    R(Collective, "fake_cuda_collective");
    R(StreamDestroy, "cuStreamDestroy_v2");
    R(StreamSynchronize, "cuStreamSynchronize");
    R(BeginCapture, "cuStreamBeginCapture_v2");
    R(EndCapture, "cuStreamEndCapture");
    R(GraphInstantiate, "cuGraphInstantiateWithFlags");
    R(GraphLaunch, "cuGraphLaunch");
    R(GraphExecDestroy, "cuGraphExecDestroy");
    R(GraphDestroy, "cuGraphDestroy");
    R(EventCreate, "cuEventCreate");
    R(EventRecord, "cuEventRecord");
    R(EventElapsedTime, "cuEventElapsedTime");
    R(EventDestroy, "cuEventDestroy_v2");
    R(GetErrorName, "cuGetErrorName");
    R(GetErrorString, "cuGetErrorString");
    R(LtCreate, "cublasLtCreate");
    R(LtDestroy, "cublasLtDestroy");
    R(DescCreate, "cublasLtMatmulDescCreate");
    R(DescDestroy, "cublasLtMatmulDescDestroy");
    R(DescSet, "cublasLtMatmulDescSetAttribute");
    R(LayoutCreate, "cublasLtMatrixLayoutCreate");
    R(LayoutDestroy, "cublasLtMatrixLayoutDestroy");
    R(LayoutSet, "cublasLtMatrixLayoutSetAttribute");
    R(PrefCreate, "cublasLtMatmulPreferenceCreate");
    R(PrefDestroy, "cublasLtMatmulPreferenceDestroy");
    R(PrefSet, "cublasLtMatmulPreferenceSetAttribute");
    R(Heuristic, "cublasLtMatmulAlgoGetHeuristic");
    R(Matmul, "cublasLtMatmul");
    return rc;
}

/* ------------------------------------------------------------------ reporting, with stderr captured per check */

static int failures;
static FILE *captured;
static int saved_stderr = -1;
static char err_text[8192];

static void capture_begin(void)
{
    fflush(stderr);
    captured = tmpfile();
    if (!captured)
        return;
    saved_stderr = dup(2);
    dup2(fileno(captured), 2);
}

static const char *capture_end(void)
{
    err_text[0] = '\0';
    if (!captured)
        return err_text;
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    rewind(captured);
    size_t n = fread(err_text, 1, sizeof err_text - 1, captured);
    err_text[n] = '\0';
    fclose(captured);
    captured = NULL;
    return err_text;
}

/* want_text NULL: nothing on stderr; else stderr must contain it. */
static void report(const char *desc, long got, long want, const char *err, const char *want_text)
{
    int ok = got == want && (want_text ? strstr(err, want_text) != NULL : err[0] == '\0');
    if (ok) {
        printf("ok %s\n", desc);
    } else {
        failures++;
        char first[300];
        snprintf(first, sizeof first, "%.299s", err);
        first[strcspn(first, "\n")] = '\0';
        printf("not ok %s: returned %ld (want %ld), stderr '%s' (want %s%s%s)\n", desc, got, want, first,
               want_text ? "'" : "nothing", want_text ? want_text : "", want_text ? "'" : "");
    }
}

#define EXPECT(desc, call, want, text)             \
    do {                                           \
        capture_begin();                           \
        long got_ = (long)(call);                  \
        const char *err_ = capture_end();          \
        report(desc, got_, (long)(want), err_, text); \
    } while (0)

static void check(const char *desc, int cond)
{
    if (cond) {
        printf("ok %s\n", desc);
    } else {
        failures++;
        printf("not ok %s\n", desc);
    }
}

/* ------------------------------------------------------------------ a cubin from NVRTC */

static const char kernels[] =
    "extern \"C\" __global__ void k12_silu(float *y, const float *a, const float *b, const unsigned long long *seed)\n"
    "{ unsigned i = blockIdx.x * blockDim.x + threadIdx.x; y[i] = a[i] + b[i] + (float)*seed; }\n"
    "extern \"C\" __global__ void __launch_bounds__(128) bounded(float *y) { y[threadIdx.x] = 1.0f; }\n"
    "extern \"C\" __global__ void big(float *y)\n"
    "{ extern __shared__ float s[]; s[threadIdx.x] = y[threadIdx.x]; __syncthreads(); y[threadIdx.x] = s[threadIdx.x ^ "
    "1]; }\n";

static void *compile(const char *arch, size_t *size)
{
    nvrtcProgram prog;
    if (nvrtcCreateProgram(&prog, kernels, "selftest.cu", 0, NULL, NULL) != NVRTC_SUCCESS)
        return NULL;
    char opt[64];
    snprintf(opt, sizeof opt, "--gpu-architecture=%s", arch);
    const char *opts[] = {opt, "-default-device"};
    void *cubin = NULL;
    if (nvrtcCompileProgram(prog, 2, opts) == NVRTC_SUCCESS && nvrtcGetCUBINSize(prog, size) == NVRTC_SUCCESS &&
        (cubin = malloc(*size)) != NULL && nvrtcGetCUBIN(prog, cubin) != NVRTC_SUCCESS) {
        free(cubin);
        cubin = NULL;
    }
    nvrtcDestroyProgram(&prog);
    return cubin;
}

/* ------------------------------------------------------------------ the checks */

static void *thread_alloc(void *arg)
{
    CUcontext ctx = arg;
    CUdeviceptr p = 0;
    EXPECT("a thread without a current context is refused", cu.MemAlloc(&p, 64), CUDA_ERROR_INVALID_CONTEXT,
           "no current context");
    cu.CtxSetCurrent(ctx);
    EXPECT("after cuCtxSetCurrent on that thread it may allocate", cu.MemAlloc(&p, 64), CUDA_SUCCESS, NULL);
    cu.MemFree(p);
    return NULL;
}

static void check_memory(CUcontext ctx)
{
    CUdeviceptr p = 0, q = 0;
    unsigned char host[2048], back[2048];
    for (int i = 0; i < 2048; i++)
        host[i] = (unsigned char)i;
    EXPECT("cuMemAlloc 1000 bytes", cu.MemAlloc(&p, 1000), CUDA_SUCCESS, NULL);
    EXPECT("cuMemAlloc of 0 bytes is refused", cu.MemAlloc(&q, 0), CUDA_ERROR_INVALID_VALUE, "0 bytes");
    EXPECT("a copy filling the allocation", cu.MemcpyHtoD(p, host, 1000), CUDA_SUCCESS, NULL);
    EXPECT("a copy one byte past the end is refused", cu.MemcpyHtoD(p, host, 1001), CUDA_ERROR_INVALID_VALUE,
           "fake cuda: cuMemcpyHtoD_v2: destination out of bounds");
    EXPECT("a copy from an offset past the end is refused", cu.MemcpyDtoH(back, p + 500, 600), CUDA_ERROR_INVALID_VALUE,
           "100 bytes past its end");
    EXPECT("a copy to an address that is no allocation is refused", cu.MemcpyHtoD(p + 4096 * 16, host, 4),
           CUDA_ERROR_INVALID_VALUE, "not in any allocation");
    memset(back, 0, sizeof back);
    EXPECT("a copy back", cu.MemcpyDtoH(back, p, 1000), CUDA_SUCCESS, NULL);
    check("copies really copy", memcmp(host, back, 1000) == 0);
    EXPECT("a host pointer must not be device memory", cu.MemcpyHtoD(p, (const void *)(uintptr_t)p, 4),
           CUDA_ERROR_INVALID_VALUE, "is device memory");
    EXPECT("an overlapping device copy is refused", cu.MemcpyDtoD(p + 8, p, 16), CUDA_ERROR_INVALID_VALUE, "overlap");
    EXPECT("cuMemsetD32 at an unaligned address is refused", cu.MemsetD32(p + 2, 7, 4), CUDA_ERROR_INVALID_VALUE,
           "aligned");
    EXPECT("cuMemsetD32 past the end is refused", cu.MemsetD32(p, 7, 251), CUDA_ERROR_INVALID_VALUE, "out of bounds");
    EXPECT("cuMemsetD8", cu.MemsetD8(p + 10, 0xab, 5), CUDA_SUCCESS, NULL);
    cu.MemcpyDtoH(back, p, 16);
    check("memsets really write", back[9] == 9 && back[10] == 0xab && back[14] == 0xab && back[15] == 15);
    EXPECT("cuMemFree", cu.MemFree(p), CUDA_SUCCESS, NULL);
    EXPECT("a copy into freed memory is refused as a use after free", cu.MemcpyHtoD(p, host, 4),
           CUDA_ERROR_INVALID_VALUE, "use after free");
    EXPECT("a double free is refused", cu.MemFree(p), CUDA_ERROR_INVALID_VALUE, "not the start of a live allocation");
    size_t free0 = 0, total = 0, free1 = 0;
    cu.MemGetInfo(&free0, &total);
    CUdeviceptr huge = 0;
    EXPECT("cuMemAlloc 40 GiB (reserved, not touched)", cu.MemAlloc(&huge, (size_t)40 << 30), CUDA_SUCCESS, NULL);
    cu.MemGetInfo(&free1, &total);
    check("cuMemGetInfo counts it", total == (size_t)80 << 30 && free0 - free1 == (size_t)40 << 30);
    EXPECT("a 40 GiB memset of 0 (pages given back, not written)", cu.MemsetD8(huge, 0, (size_t)40 << 30), CUDA_SUCCESS,
           NULL);
    EXPECT("cuMemAlloc beyond 80 GiB runs out of memory", cu.MemAlloc(&q, (size_t)41 << 30), CUDA_ERROR_OUT_OF_MEMORY,
           NULL);
    cu.MemFree(huge);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_alloc, ctx) == 0)
        pthread_join(t, NULL);
}

static void check_module(CUfunction *silu_out, CUmodule *mod_out)
{
    size_t size = 0, size80 = 0;
    void *cubin = compile("sm_90", &size), *cubin80 = compile("sm_80", &size80);
    check("NVRTC compiles the test kernels", cubin && cubin80);
    if (!cubin || !cubin80) {
        free(cubin);
        free(cubin80);
        return;
    }
    CUmodule mod = NULL, mod80 = NULL;
    EXPECT("cuModuleLoadData of an sm_90 cubin", cu.ModuleLoadData(&mod, cubin), CUDA_SUCCESS, NULL);
    EXPECT("an sm_80 cubin does not load on sm_90", cu.ModuleLoadData(&mod80, cubin80), CUDA_ERROR_NO_BINARY_FOR_GPU,
           "sm_80");
    EXPECT("a PTX text is refused", cu.ModuleLoadData(&mod80, ".version 8.0\n.target sm_90\n"), CUDA_ERROR_INVALID_IMAGE,
           "not an ELF cubin");
    memset(cubin, 0, size); /* the module keeps its own copy */
    free(cubin);
    free(cubin80);
    CUfunction f = NULL, g = NULL, bounded = NULL, big = NULL;
    EXPECT("cuModuleGetFunction finds a kernel", cu.ModuleGetFunction(&f, mod, "k12_silu"), CUDA_SUCCESS, NULL);
    EXPECT("the same kernel twice is the same handle", cu.ModuleGetFunction(&g, mod, "k12_silu") == 0 && f == g, 1,
           NULL);
    EXPECT("a missing kernel is CUDA_ERROR_NOT_FOUND", cu.ModuleGetFunction(&g, mod, "k12_gelu"), CUDA_ERROR_NOT_FOUND,
           "no kernel 'k12_gelu' in the module (its kernels:");
    EXPECT("a suffix of a kernel's name is not that kernel", cu.ModuleGetFunction(&g, mod, "silu"), CUDA_ERROR_NOT_FOUND,
           "no kernel 'silu'");
    cu.ModuleGetFunction(&bounded, mod, "bounded");
    cu.ModuleGetFunction(&big, mod, "big");

    CUdeviceptr y = 0, a = 0, b = 0, seed = 0;
    cu.MemAlloc(&y, 4096);
    cu.MemAlloc(&a, 4096);
    cu.MemAlloc(&b, 4096);
    cu.MemAlloc(&seed, 8);
    void *args[] = {&y, &a, &b, &seed};
    EXPECT("a launch", cu.LaunchKernel(f, 4, 1, 1, 256, 1, 1, 0, NULL, args, NULL), CUDA_SUCCESS, NULL);
    void *short_args[] = {&y, &a, &b, NULL};
    EXPECT("a launch missing a parameter is refused", cu.LaunchKernel(f, 4, 1, 1, 256, 1, 1, 0, NULL, short_args, NULL),
           CUDA_ERROR_INVALID_VALUE, "kernelParams[3] is NULL; the kernel takes 4 parameters");
    EXPECT("a launch without kernelParams is refused", cu.LaunchKernel(f, 4, 1, 1, 256, 1, 1, 0, NULL, NULL, NULL),
           CUDA_ERROR_INVALID_VALUE, "kernelParams");
    EXPECT("a block of 1025 threads is refused", cu.LaunchKernel(f, 4, 1, 1, 1025, 1, 1, 0, NULL, args, NULL),
           CUDA_ERROR_INVALID_VALUE, "block 1025x1x1");
    EXPECT("an empty grid is refused", cu.LaunchKernel(f, 0, 1, 1, 256, 1, 1, 0, NULL, args, NULL),
           CUDA_ERROR_INVALID_VALUE, "grid 0x1x1");
    EXPECT("grid y 65536 is refused", cu.LaunchKernel(f, 1, 65536, 1, 256, 1, 1, 0, NULL, args, NULL),
           CUDA_ERROR_INVALID_VALUE, "grid");
    EXPECT("256 threads beyond __launch_bounds__(128) are refused",
           cu.LaunchKernel(bounded, 1, 1, 1, 256, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
           "__launch_bounds__ allow 128");
    EXPECT("64 KiB of dynamic shared memory needs the attribute",
           cu.LaunchKernel(big, 1, 1, 1, 256, 1, 1, 65536, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE,
           "65536 bytes of dynamic shared memory, the limit is 49152");
    EXPECT("cuFuncSetAttribute raises it",
           cu.FuncSetAttribute(big, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 65536), CUDA_SUCCESS, NULL);
    EXPECT("then the launch is accepted", cu.LaunchKernel(big, 1, 1, 1, 256, 1, 1, 65536, NULL, args, NULL), CUDA_SUCCESS,
           NULL);
    EXPECT("but not beyond 227 KiB", cu.FuncSetAttribute(big, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 232449),
           CUDA_ERROR_INVALID_VALUE, "outside [0, 232448]");
    cu.MemFree(y);
    cu.MemFree(a);
    cu.MemFree(b);
    cu.MemFree(seed);
    *silu_out = f;
    *mod_out = mod;
}

static void check_capture(CUfunction f)
{
    CUstream s = NULL, nb = NULL;
    cu.StreamCreate(&s, 0);
    cu.StreamCreate(&nb, CU_STREAM_NON_BLOCKING);
    CUdeviceptr y = 0, q = 0;
    cu.MemAlloc(&y, 4096);
    void *args[] = {&y, &y, &y, &y};
    float one = 1.0f, fortytwo = 42.0f, back = 0.0f;
    cu.MemcpyHtoD(y, &one, 4);
    CUgraph graph = NULL;
    CUgraphExec exec = NULL;

    EXPECT("the legacy stream cannot be captured", cu.BeginCapture(NULL, CU_STREAM_CAPTURE_MODE_GLOBAL),
           CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "legacy");
    EXPECT("cuStreamBeginCapture", cu.BeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_SUCCESS, NULL);
    EXPECT("a launch is recorded", cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, s, args, NULL), CUDA_SUCCESS, NULL);
    EXPECT("a synchronous copy during a global capture is refused", cu.MemcpyHtoD(y, &one, 4),
           CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "capturing in global mode");
    EXPECT("which invalidates the capture", cu.EndCapture(s, &graph), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, NULL);
    check("and gives no graph", graph == NULL);

    cu.BeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
    EXPECT("cuMemAlloc during a global capture is refused", cu.MemAlloc(&q, 64), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
           "cuMemAlloc_v2: not allowed");
    cu.EndCapture(s, &graph);

    cu.BeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
    EXPECT("synchronizing the capturing stream is refused", cu.StreamSynchronize(s),
           CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "is capturing");
    cu.EndCapture(s, &graph);

    cu.BeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED);
    EXPECT("legacy-stream work while a blocking stream captures is refused",
           cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_STREAM_CAPTURE_IMPLICIT,
           "legacy (NULL) stream");
    cu.EndCapture(s, &graph);

    cu.BeginCapture(nb, CU_STREAM_CAPTURE_MODE_RELAXED);
    EXPECT("a relaxed capture of a non-blocking stream allows a synchronous copy", cu.MemcpyHtoD(y, &one, 4),
           CUDA_SUCCESS, NULL);
    cu.EndCapture(nb, &graph);
    cu.GraphDestroy(graph);
    graph = NULL;

    EXPECT("a capture", cu.BeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_SUCCESS, NULL);
    EXPECT("records an async copy", cu.MemcpyHtoDAsync(y, &fortytwo, 4, s), CUDA_SUCCESS, NULL);
    EXPECT("an async copy out of bounds is refused while capturing", cu.MemcpyHtoDAsync(y + 4094, &fortytwo, 4, s),
           CUDA_ERROR_INVALID_VALUE, "out of bounds");
    cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, s, args, NULL);
    EXPECT("cuStreamEndCapture", cu.EndCapture(s, &graph), CUDA_SUCCESS, NULL);
    cu.MemcpyDtoH(&back, y, 4);
    check("the captured copy has not run yet", back == 1.0f);
    EXPECT("cuGraphInstantiateWithFlags", cu.GraphInstantiate(&exec, graph, 0), CUDA_SUCCESS, NULL);
    EXPECT("cuGraphLaunch", cu.GraphLaunch(exec, s), CUDA_SUCCESS, NULL);
    cu.MemcpyDtoH(&back, y, 4);
    check("the graph launch replays the copy", back == 42.0f);
    EXPECT("cuGraphDestroy", cu.GraphDestroy(graph), CUDA_SUCCESS, NULL);
    EXPECT("the exec outlives its graph", cu.GraphLaunch(exec, s), CUDA_SUCCESS, NULL);
    EXPECT("instantiating a destroyed graph is refused", cu.GraphInstantiate(&exec, graph, 0), CUDA_ERROR_INVALID_VALUE,
           "not a live graph");
    EXPECT("destroying a graph twice is refused", cu.GraphDestroy(graph), CUDA_ERROR_INVALID_VALUE, "not a live graph");
    cu.MemFree(y);
    EXPECT("replaying a copy into freed memory is refused", cu.GraphLaunch(exec, s), CUDA_ERROR_INVALID_VALUE,
           "use after free");
    EXPECT("cuGraphExecDestroy", cu.GraphExecDestroy(exec), CUDA_SUCCESS, NULL);
    EXPECT("launching a destroyed exec is refused", cu.GraphLaunch(exec, s), CUDA_ERROR_INVALID_VALUE,
           "not a live graph exec");

    CUevent e0 = NULL, e1 = NULL, e2 = NULL;
    cu.EventCreate(&e0, 0);
    cu.EventCreate(&e1, 0);
    cu.EventCreate(&e2, 0);
    cu.EventRecord(e0, s);
    cu.EventRecord(e1, s);
    float ms = -1;
    EXPECT("cuEventElapsedTime", cu.EventElapsedTime(&ms, e0, e1), CUDA_SUCCESS, NULL);
    check("elapsed time >= 0", ms >= 0);
    EXPECT("an event never recorded has no time", cu.EventElapsedTime(&ms, e0, e2), CUDA_ERROR_INVALID_HANDLE,
           "never recorded");
    cu.EventDestroy(e0);
    cu.EventDestroy(e1);
    cu.EventDestroy(e2);
    EXPECT("destroying an event twice is refused", cu.EventDestroy(e2), CUDA_ERROR_INVALID_HANDLE, "not a live event");
    cu.StreamDestroy(s);
    cu.StreamDestroy(nb);
    EXPECT("a destroyed stream is refused", cu.StreamSynchronize(s), CUDA_ERROR_INVALID_HANDLE, "not a live stream");
}

/* A column-major layout with a batch. */
static cublasLtMatrixLayout_t layout(cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld, int32_t batch,
                                     int64_t stride)
{
    cublasLtMatrixLayout_t L = NULL;
    cu.LayoutCreate(&L, t, rows, cols, ld);
    cu.LayoutSet(L, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch);
    cu.LayoutSet(L, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
    return L;
}

static void check_cublaslt(void)
{
    cublasLtHandle_t h = NULL;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    EXPECT("cublasLtCreate", cu.LtCreate(&h), CUBLAS_STATUS_SUCCESS, NULL);
    cu.DescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cu.PrefCreate(&pref);
    /* D (64x16) = A (64x32) B (32x16), f32, column-major */
    cublasLtMatrixLayout_t A = layout(CUDA_R_32F, 64, 32, 64, 1, 0), B = layout(CUDA_R_32F, 32, 16, 32, 1, 0),
                           C = layout(CUDA_R_32F, 64, 16, 64, 1, 0);
    CUdeviceptr a = 0, b = 0, c = 0, small = 0, ws = 0;
    cu.MemAlloc(&a, 64 * 32 * 4 + 256);
    cu.MemAlloc(&b, 32 * 16 * 4);
    cu.MemAlloc(&c, 64 * 16 * 4);
    cu.MemAlloc(&small, 64 * 16 * 4 - 4);
    cu.MemAlloc(&ws, 1024);
    void *pa = (void *)(uintptr_t)a, *pb = (void *)(uintptr_t)b, *pc = (void *)(uintptr_t)c;
    float alpha = 1, beta = 0;
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    EXPECT("cublasLtMatmulAlgoGetHeuristic", cu.Heuristic(h, desc, A, B, C, C, pref, 1, &res, &n), CUBLAS_STATUS_SUCCESS,
           NULL);
    check("one result, no workspace", n == 1 && res.workspaceSize == 0 && res.state == CUBLAS_STATUS_SUCCESS);
    EXPECT("cublasLtMatmul", cu.Matmul(h, desc, &alpha, pa, A, pb, B, &beta, pc, C, pc, C, &res.algo, NULL, 0, NULL),
           CUBLAS_STATUS_SUCCESS, NULL);
    EXPECT("cublasLtMatmul without an algo",
           cu.Matmul(h, desc, &alpha, pa, A, pb, B, &beta, pc, C, pc, C, NULL, NULL, 0, NULL), CUBLAS_STATUS_SUCCESS,
           NULL);
    EXPECT("a D allocation 4 bytes short is refused",
           cu.Matmul(h, desc, &alpha, pa, A, pb, B, &beta, pc, C, (void *)(uintptr_t)small, C, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "fake cublasLt: cublasLtMatmul: D out of bounds");
    int32_t trans = CUBLAS_OP_T;
    cu.DescSet(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans);
    EXPECT("a transposed A that no longer fits is refused",
           cu.Matmul(h, desc, &alpha, pa, A, pb, B, &beta, pc, C, pc, C, NULL, NULL, 0, NULL), CUBLAS_STATUS_INVALID_VALUE,
           "shapes do not make a product: op(A) is 32x64");
    trans = CUBLAS_OP_N;
    cu.DescSet(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans);
    EXPECT("an attribute of the wrong size is refused", cu.DescSet(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, 8),
           CUBLAS_STATUS_INVALID_VALUE, "the attribute takes 4");
    cublasLtMatrixLayout_t B31 = layout(CUDA_R_32F, 31, 16, 32, 1, 0);
    EXPECT("k of A and B disagreeing is refused", cu.Heuristic(h, desc, A, B31, C, C, pref, 1, &res, &n),
           CUBLAS_STATUS_INVALID_VALUE, "shapes do not make a product");
    cublasLtMatrixLayout_t A2 = layout(CUDA_R_32F, 64, 32, 64, 2, 2048);
    EXPECT("batch counts disagreeing are refused",
           cu.Matmul(h, desc, &alpha, pa, A2, pb, B, &beta, pc, C, pc, C, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "batch counts A 2, B 1, C 1, D 1");
    cublasLtMatrixLayout_t B2 = layout(CUDA_R_32F, 32, 16, 32, 2, 0), C2 = layout(CUDA_R_32F, 64, 16, 64, 2, 1024);
    EXPECT("a batch of 2 whose second D is out of the allocation is refused",
           cu.Matmul(h, desc, &alpha, pa, A2, pb, B2, &beta, pc, C2, pc, C2, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "out of bounds");
    cublasLtMatrixLayout_t C2z = layout(CUDA_R_32F, 64, 16, 64, 2, 0);
    EXPECT("a batched D at stride 0 is refused",
           cu.Matmul(h, desc, &alpha, pa, A2, pb, B2, &beta, pc, C2z, pc, C2z, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "stride 0");
    cublasLtMatrixLayout_t Ald = layout(CUDA_R_32F, 64, 32, 32, 1, 0);
    EXPECT("ld < rows is refused", cu.Matmul(h, desc, &alpha, pa, Ald, pb, B, &beta, pc, C, pc, C, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "ld 32 < rows 64");
    cublasLtMatrixLayout_t B16 = layout(CUDA_R_16F, 32, 16, 32, 1, 0);
    EXPECT("A f32 with B f16 is not a supported combination",
           cu.Matmul(h, desc, &alpha, pa, A, pb, B16, &beta, pc, C, pc, C, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_NOT_SUPPORTED, "not a combination cuBLASLt supports");
    void *pa64 = (void *)(uintptr_t)(a + 64);
    EXPECT("A less aligned than the heuristic was promised is refused",
           cu.Matmul(h, desc, &alpha, pa64, A, pb, B, &beta, pc, C, pc, C, &res.algo, NULL, 0, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "is not 256-byte aligned");
    uint32_t align = 64;
    cu.PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align, sizeof align);
    cu.Heuristic(h, desc, A, B, C, C, pref, 1, &res, &n);
    EXPECT("with MIN_ALIGNMENT_A_BYTES 64 it is accepted",
           cu.Matmul(h, desc, &alpha, pa64, A, pb, B, &beta, pc, C, pc, C, &res.algo, NULL, 0, NULL),
           CUBLAS_STATUS_SUCCESS, NULL);
    cublasLtMatrixLayout_t Asq = layout(CUDA_R_32F, 32, 32, 64, 1, 0), Csq = layout(CUDA_R_32F, 32, 16, 64, 1, 0);
    EXPECT("an algo chosen for another problem is refused",
           cu.Matmul(h, desc, &alpha, pa, Asq, pb, B, &beta, pc, Csq, pc, Csq, &res.algo, NULL, 0, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "another problem");
    EXPECT("D overlapping A is refused",
           cu.Matmul(h, desc, &alpha, pa, A, pb, B, &beta, pc, C, pa, C, NULL, NULL, 0, NULL), CUBLAS_STATUS_INVALID_VALUE,
           "overlaps A");
    EXPECT("a workspace out of bounds is refused",
           cu.Matmul(h, desc, &alpha, pa, A, pb, B, &beta, pc, C, pc, C, NULL, (void *)(uintptr_t)ws, 2048, NULL),
           CUBLAS_STATUS_INVALID_VALUE, "workspace out of bounds");
    cu.LayoutDestroy(B31);
    EXPECT("a destroyed layout is refused", cu.Heuristic(h, desc, A, B31, C, C, pref, 1, &res, &n),
           CUBLAS_STATUS_INVALID_VALUE, "not a live matrix layout");

    CUstream s = NULL;
    CUgraph g = NULL;
    CUgraphExec x = NULL;
    cu.StreamCreate(&s, 0);
    cu.BeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
    EXPECT("a matmul is recorded by a capture",
           cu.Matmul(h, desc, &alpha, pa, A, pb, B, &beta, pc, C, pc, C, NULL, NULL, 0, s), CUBLAS_STATUS_SUCCESS, NULL);
    cu.EndCapture(s, &g);
    cu.GraphInstantiate(&x, g, 0);
    EXPECT("and replayed", cu.GraphLaunch(x, s), CUDA_SUCCESS, NULL);
    cu.MemFree(c);
    EXPECT("a replayed matmul whose D was freed is refused", cu.GraphLaunch(x, s), CUDA_ERROR_INVALID_VALUE,
           "use after free");
    cu.GraphExecDestroy(x);
    cu.GraphDestroy(g);
    cu.StreamDestroy(s);

    cublasLtMatrixLayout_t all[] = {A, B, C, A2, B2, C2, C2z, Ald, B16, Asq, Csq};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        cu.LayoutDestroy(all[i]);
    cu.DescDestroy(desc);
    cu.PrefDestroy(pref);
    cu.LtDestroy(h);
    EXPECT("a destroyed handle is refused", cu.LtDestroy(h), CUBLAS_STATUS_INVALID_VALUE, "not a live cuBLASLt handle");
    cu.MemFree(a);
    cu.MemFree(b);
    cu.MemFree(small);
    cu.MemFree(ws);
}

static const char *error_name(CUresult r)
{
    const char *s = NULL;
    cu.GetErrorName(r, &s);
    return s ? s : "(null)";
}

/* Races between streams (stream_order.h): a collective (as the fake NCCL
 * queues one) on one stream after a kernel on another must wait for an event
 * recorded after the kernel; and the reverse. */
static void check_order(CUfunction f)
{
    CUstream a = NULL, b = NULL;
    CUevent e = NULL;
    cu.StreamCreate(&a, CU_STREAM_NON_BLOCKING);
    cu.StreamCreate(&b, CU_STREAM_NON_BLOCKING);
    cu.EventCreate(&e, CU_EVENT_DISABLE_TIMING);
    CUdeviceptr y = 0;
    cu.MemAlloc(&y, 4096);
    void *args[] = {&y, &y, &y, &y};

    cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, a, args, NULL);
    EXPECT("a collective on another stream than the kernel that wrote its buffer, with no event between: a race",
           cu.Collective(b, y, 64, "collective 1"), CUDA_ERROR_ILLEGAL_STATE, "a race: collective 1 (stream");
    cu.StreamSynchronize(b); /* the host waited for it: what follows is after it */
    cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, a, args, NULL);
    cu.EventRecord(e, a);
    EXPECT("cuStreamWaitEvent", cu.StreamWaitEvent(b, e, 0), CUDA_SUCCESS, NULL);
    EXPECT("the same after an event recorded after the kernel, waited for", cu.Collective(b, y, 64, "collective 2"),
           CUDA_SUCCESS, NULL);
    cu.EventRecord(e, a); /* before the writer: orders nothing of it */
    cu.StreamWaitEvent(a, e, 0);
    EXPECT("a kernel after the collective, its stream not waiting for the collective's: a race",
           cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, a, args, NULL), CUDA_ERROR_ILLEGAL_STATE, "which collective 2");
    cu.EventRecord(e, a);
    cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, a, args, NULL);
    cu.StreamWaitEvent(b, e, 0);
    EXPECT("an event recorded before the kernel orders nothing of it: a race", cu.Collective(b, y, 64, "collective 3"),
           CUDA_ERROR_ILLEGAL_STATE, "a race");
    cu.EventRecord(e, b);
    cu.StreamWaitEvent(a, e, 0);
    EXPECT("a kernel after an event recorded after the collective", cu.LaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, a, args, NULL),
           CUDA_SUCCESS, NULL);
    cu.StreamSynchronize(a);
    EXPECT("the host's synchronization with the stream orders it too", cu.Collective(b, y, 64, "collective 4"),
           CUDA_SUCCESS, NULL);
    EXPECT("a collective's buffer must lie in one allocation", cu.Collective(b, y + 4000, 400, "collective 5"),
           CUDA_ERROR_INVALID_VALUE, "collective 5");
    cu.StreamSynchronize(b);
    cu.MemFree(y);
    cu.EventDestroy(e);
    cu.StreamDestroy(a);
    cu.StreamDestroy(b);
}

static int run_checks(void)
{
    int count = 0;
    EXPECT("calls before cuInit are refused", cu.DeviceGetCount(&count), CUDA_ERROR_NOT_INITIALIZED, "cuInit has not");
    EXPECT("cuInit", cu.Init(0), CUDA_SUCCESS, NULL);
    int major = 0, minor = 0, optin = 0;
    cu.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0);
    cu.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0);
    cu.DeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 0);
    check("an sm_90 device with 227 KiB of opt-in shared memory", major == 9 && minor == 0 && optin == 232448);
    CUdeviceptr p = 0;
    EXPECT("cuMemAlloc without a context is refused", cu.MemAlloc(&p, 64), CUDA_ERROR_INVALID_CONTEXT,
           "no current context");
    CUcontext ctx = NULL;
    EXPECT("cuDevicePrimaryCtxRetain", cu.PrimaryCtxRetain(&ctx, 0), CUDA_SUCCESS, NULL);
    EXPECT("cuCtxSetCurrent", cu.CtxSetCurrent(ctx), CUDA_SUCCESS, NULL);
    check_memory(ctx);
    CUfunction f = NULL;
    CUmodule mod = NULL;
    check_module(&f, &mod);
    if (f) {
        check_capture(f);
        check_order(f);
    }
    check_cublaslt();
    if (mod) {
        EXPECT("cuModuleUnload", cu.ModuleUnload(mod), CUDA_SUCCESS, NULL);
        EXPECT("a function of an unloaded module is refused", cu.FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 0),
               CUDA_ERROR_INVALID_HANDLE, "not a live function");
    }
    EXPECT("cuDevicePrimaryCtxRelease_v2", cu.PrimaryCtxRelease(0), CUDA_SUCCESS, NULL);
    EXPECT("released more often than retained is refused", cu.PrimaryCtxRelease(0), CUDA_ERROR_INVALID_CONTEXT,
           "not retained");
    EXPECT("a released context is no longer current", cu.MemAlloc(&p, 64), CUDA_ERROR_INVALID_CONTEXT,
           "no current context");
    check("cuGetErrorName names the codes", strcmp(error_name(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED),
                                                   "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED") == 0);
    return 0;
}

/* FAKE_CUDA_FAIL=cuMemAlloc_v2:2,cublasLtMatmul,cuGraphLaunch FAKE_CUDA_LEAKS=1 */
static int run_inject(void)
{
    CUcontext ctx = NULL;
    cu.Init(0);
    cu.PrimaryCtxRetain(&ctx, 0);
    cu.CtxSetCurrent(ctx);
    CUdeviceptr p = 0, q = 0;
    EXPECT("the first cuMemAlloc succeeds", cu.MemAlloc(&p, 4096), CUDA_SUCCESS, NULL);
    EXPECT("the second fails as FAKE_CUDA_FAIL says, silently", cu.MemAlloc(&q, 4096), CUDA_ERROR_OUT_OF_MEMORY, NULL);
    check("... and cuGetErrorName names it", strcmp(error_name(CUDA_ERROR_OUT_OF_MEMORY), "CUDA_ERROR_OUT_OF_MEMORY") == 0);
    EXPECT("the third succeeds", cu.MemAlloc(&q, 4096), CUDA_SUCCESS, NULL);
    cublasLtHandle_t h = NULL;
    cublasLtMatmulDesc_t desc = NULL;
    cu.LtCreate(&h);
    cu.DescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatrixLayout_t L = NULL;
    cu.LayoutCreate(&L, CUDA_R_32F, 4, 4, 4);
    float one = 1;
    void *pp = (void *)(uintptr_t)p, *pq = (void *)(uintptr_t)q;
    EXPECT("cublasLtMatmul fails with CUBLAS_STATUS_EXECUTION_FAILED",
           cu.Matmul(h, desc, &one, pp, L, pp, L, &one, pq, L, pq, L, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_EXECUTION_FAILED, NULL);
    EXPECT("its second call succeeds", cu.Matmul(h, desc, &one, pp, L, pp, L, &one, pq, L, pq, L, NULL, NULL, 0, NULL),
           CUBLAS_STATUS_SUCCESS, NULL);
    cu.LayoutDestroy(L);
    cu.DescDestroy(desc);
    cu.LtDestroy(h);
    CUstream s = NULL;
    CUgraph g = NULL;
    CUgraphExec x = NULL;
    cu.StreamCreate(&s, 0);
    cu.BeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
    cu.EndCapture(s, &g);
    cu.GraphInstantiate(&x, g, 0);
    EXPECT("cuGraphLaunch fails with CUDA_ERROR_LAUNCH_FAILED", cu.GraphLaunch(x, s), CUDA_ERROR_LAUNCH_FAILED, NULL);
    check("... and cuGetErrorName names it", strcmp(error_name(CUDA_ERROR_LAUNCH_FAILED), "CUDA_ERROR_LAUNCH_FAILED") == 0);
    EXPECT("a launch failure is sticky", cu.StreamSynchronize(s), CUDA_ERROR_LAUNCH_FAILED, NULL);
    EXPECT("cuMemFree too", cu.MemFree(p), CUDA_ERROR_LAUNCH_FAILED, NULL);
    cu.GraphDestroy(g);
    EXPECT("releasing the poisoned context frees what it held (not a leak)", cu.PrimaryCtxRelease(0), CUDA_SUCCESS,
           NULL);
    cu.PrimaryCtxRetain(&ctx, 0);
    cu.CtxSetCurrent(ctx);
    EXPECT("a new context works again", cu.MemAlloc(&p, 64), CUDA_SUCCESS, NULL);
    EXPECT("memory not freed when the context goes is a leak (FAKE_CUDA_LEAKS)", cu.PrimaryCtxRelease(0), CUDA_SUCCESS,
           "leak: 1 device allocation still alive when the primary context was released");
    return 0;
}

static int run_nodevice(void)
{
    EXPECT("FAKE_CUDA_NO_DEVICE=1: cuInit returns CUDA_ERROR_NO_DEVICE, silently", cu.Init(0), CUDA_ERROR_NO_DEVICE,
           NULL);
    const char *text = NULL;
    cu.GetErrorString(CUDA_ERROR_NO_DEVICE, &text);
    check("cuGetErrorString describes it", text && strstr(text, "no CUDA-capable device"));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fake_cuda_selftest FAKE.so [checks|inject|nodevice]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (load(argv[1]) != 0)
        return 1;
    const char *mode = argc > 2 ? argv[2] : "";
    if (strcmp(mode, "inject") == 0)
        run_inject();
    else if (strcmp(mode, "nodevice") == 0)
        run_nodevice();
    else
        run_checks();
    return failures ? 1 : 0;
}
