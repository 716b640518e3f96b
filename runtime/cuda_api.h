/* The CUDA driver API and cuBLASLt, opened at run time with dlopen.
 *
 * Neither library is linked: one edmc binary runs on machines with and
 * without a GPU.  The few types, constants and entry points edmc uses are
 * declared here (values from CUDA 13's cuda.h, cublasLt.h and
 * library_types.h), so the CUDA backend builds without the toolkit.
 * $EDMC_CUDA_DRIVER and $EDMC_CUBLASLT name other libraries to open instead
 * (the tests' fake driver, tests/fakecuda). */
#ifndef EDMC_CUDA_API_H
#define EDMC_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/status.h"

typedef int cu_result; /* CUresult: 0 = CUDA_SUCCESS */
typedef int cu_device;
typedef void *cu_context;
typedef void *cu_module;
typedef void *cu_function;
typedef void *cu_stream;
typedef void *cu_graph;
typedef void *cu_graph_exec;
typedef void *cu_event;
typedef unsigned long long cu_ptr; /* CUdeviceptr */

#define CU_SUCCESS 0
#define CU_ERROR_NO_DEVICE 100
#define CU_ATTR_CC_MAJOR 75
#define CU_ATTR_CC_MINOR 76
#define CU_FUNC_ATTR_MAX_DYNAMIC_SHARED 8 /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
#define CU_STREAM_NON_BLOCKING 1u       /* never synchronizes with the legacy stream (capturable) */
#define CU_EVENT_DISABLE_TIMING 2u      /* an event that only orders streams */
#define CU_STREAM_CAPTURE_THREAD_LOCAL 1 /* CU_STREAM_CAPTURE_MODE_THREAD_LOCAL */

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
    cu_result (*FuncSetAttribute)(cu_function, int, int);
    cu_result (*LaunchKernel)(cu_function, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              cu_stream, void **, void **);
    cu_result (*MemAlloc)(cu_ptr *, size_t);
    cu_result (*MemFree)(cu_ptr);
    cu_result (*MemGetInfo)(size_t *, size_t *);
    cu_result (*MemcpyHtoD)(cu_ptr, const void *, size_t);
    cu_result (*MemcpyDtoH)(void *, cu_ptr, size_t);
    cu_result (*MemsetD8)(cu_ptr, unsigned char, size_t);
    cu_result (*MemcpyHtoDAsync)(cu_ptr, const void *, size_t, cu_stream);
    cu_result (*MemcpyDtoHAsync)(void *, cu_ptr, size_t, cu_stream);
    cu_result (*MemsetD8Async)(cu_ptr, unsigned char, size_t, cu_stream);
    cu_result (*StreamCreate)(cu_stream *, unsigned);
    cu_result (*StreamDestroy)(cu_stream);
    cu_result (*StreamSynchronize)(cu_stream);
    cu_result (*StreamBeginCapture)(cu_stream, int);
    cu_result (*StreamEndCapture)(cu_stream, cu_graph *);
    cu_result (*GraphInstantiate)(cu_graph_exec *, cu_graph, unsigned long long);
    cu_result (*GraphLaunch)(cu_graph_exec, cu_stream);
    cu_result (*GraphExecDestroy)(cu_graph_exec);
    cu_result (*GraphDestroy)(cu_graph);
    cu_result (*GetErrorName)(cu_result, const char **);
    cu_result (*GetErrorString)(cu_result, const char **);
    cu_result (*EventCreate)(cu_event *, unsigned);
    cu_result (*EventRecord)(cu_event, cu_stream);
    cu_result (*EventSynchronize)(cu_event);
    cu_result (*EventElapsedTime)(float *, cu_event, cu_event);
    cu_result (*EventDestroy)(cu_event);
    cu_result (*StreamWaitEvent)(cu_stream, cu_event, unsigned);
} cu_api;

/* Opens the driver ($EDMC_CUDA_DRIVER or libcuda.so.1) and resolves every
 * entry point; "no CUDA driver (...)" when it is not there. */
int cu_api_open(cu_api *api, edm_status *st);
void cu_api_close(cu_api *api);
/* cuInit and the device count, with the probe's plain messages. */
int cu_api_init(const cu_api *api, edm_status *st);
/* 0, or fails naming the call and the driver's error. */
int cu_check(const cu_api *api, cu_result r, const char *call, edm_status *st);

/* ------------------------------------------------------------------ cuBLASLt */

typedef int lt_status; /* cublasStatus_t: 0 = CUBLAS_STATUS_SUCCESS */
typedef void *lt_handle;
typedef void *lt_desc;
typedef void *lt_layout;
typedef void *lt_pref;

typedef struct {
    uint64_t data[8];
} lt_algo; /* cublasLtMatmulAlgo_t */

typedef struct {
    lt_algo algo;
    size_t workspace_size;
    lt_status state;
    float waves;
    int reserved[4];
} lt_heuristic; /* cublasLtMatmulHeuristicResult_t */

#define LT_COMPUTE_32F 68         /* CUBLAS_COMPUTE_32F */
#define LT_R_32F 0                /* CUDA_R_32F */
#define LT_R_16F 2                /* CUDA_R_16F */
#define LT_R_16BF 14              /* CUDA_R_16BF */
#define LT_OP_N 0                 /* CUBLAS_OP_N */
#define LT_OP_T 1                 /* CUBLAS_OP_T */
#define LT_DESC_TRANSA 3          /* CUBLASLT_MATMUL_DESC_TRANSA (int32) */
#define LT_DESC_TRANSB 4          /* CUBLASLT_MATMUL_DESC_TRANSB (int32) */
#define LT_LAYOUT_BATCH_COUNT 5   /* CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT (int32) */
#define LT_LAYOUT_BATCH_STRIDE 6  /* CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET (int64, elements) */
#define LT_PREF_MAX_WORKSPACE 1   /* CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES (uint64) */
#define LT_PREF_ALIGN_A 5         /* CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES (uint32; B, C, D follow) */

typedef struct {
    void *lib;
    lt_status (*Create)(lt_handle *);
    lt_status (*Destroy)(lt_handle);
    size_t (*GetVersion)(void);
    const char *(*GetStatusString)(lt_status);
    lt_status (*DescCreate)(lt_desc *, int, int);
    lt_status (*DescDestroy)(lt_desc);
    lt_status (*DescSetAttribute)(lt_desc, int, const void *, size_t);
    lt_status (*LayoutCreate)(lt_layout *, int, uint64_t, uint64_t, int64_t);
    lt_status (*LayoutDestroy)(lt_layout);
    lt_status (*LayoutSetAttribute)(lt_layout, int, const void *, size_t);
    lt_status (*PrefCreate)(lt_pref *);
    lt_status (*PrefDestroy)(lt_pref);
    lt_status (*PrefSetAttribute)(lt_pref, int, const void *, size_t);
    lt_status (*AlgoGetHeuristic)(lt_handle, lt_desc, lt_layout, lt_layout, lt_layout, lt_layout, lt_pref, int,
                                  lt_heuristic *, int *);
    lt_status (*Matmul)(lt_handle, lt_desc, const void *, const void *, lt_layout, const void *, lt_layout,
                        const void *, const void *, lt_layout, void *, lt_layout, const lt_algo *, void *, size_t,
                        cu_stream);
} lt_api;

/* Opens cuBLASLt ($EDMC_CUBLASLT or libcublasLt.so.13). */
int lt_api_open(lt_api *api, edm_status *st);
void lt_api_close(lt_api *api);
/* 0, or fails naming the call and cuBLASLt's status. */
int lt_check(const lt_api *api, lt_status s, const char *call, edm_status *st);

#endif
