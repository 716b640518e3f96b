/* Opening the CUDA driver and cuBLASLt at run time (see cuda_api.h). */
#include "config.h"

#include "runtime/cuda_api.h"
#include "runtime/dynlib.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ the driver */

#define CU_RESOLVE(field, name) edm_dynlib_resolve(api->lib, "the CUDA driver", name, &api->field, sizeof api->field, st)

void cu_api_close(cu_api *api)
{
    if (api->lib)
        dlclose(api->lib);
    memset(api, 0, sizeof *api);
}

int cu_api_open(cu_api *api, edm_status *st)
{
    memset(api, 0, sizeof *api);
    api->lib = edm_dynlib_open("EDMC_CUDA_DRIVER", "libcuda.so.1", "CUDA driver", st);
    if (!api->lib)
        return -1;
    int rc = 0;
    rc |= CU_RESOLVE(Init, "cuInit");
    rc |= CU_RESOLVE(DriverGetVersion, "cuDriverGetVersion");
    rc |= CU_RESOLVE(DeviceGetCount, "cuDeviceGetCount");
    rc |= CU_RESOLVE(DeviceGet, "cuDeviceGet");
    rc |= CU_RESOLVE(DeviceGetName, "cuDeviceGetName");
    rc |= CU_RESOLVE(DeviceGetAttribute, "cuDeviceGetAttribute");
    rc |= CU_RESOLVE(DeviceTotalMem, "cuDeviceTotalMem_v2");
    rc |= CU_RESOLVE(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    rc |= CU_RESOLVE(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    rc |= CU_RESOLVE(CtxSetCurrent, "cuCtxSetCurrent");
    rc |= CU_RESOLVE(ModuleLoadData, "cuModuleLoadData");
    rc |= CU_RESOLVE(ModuleUnload, "cuModuleUnload");
    rc |= CU_RESOLVE(ModuleGetFunction, "cuModuleGetFunction");
    rc |= CU_RESOLVE(FuncSetAttribute, "cuFuncSetAttribute");
    rc |= CU_RESOLVE(LaunchKernel, "cuLaunchKernel");
    rc |= CU_RESOLVE(MemAlloc, "cuMemAlloc_v2");
    rc |= CU_RESOLVE(MemFree, "cuMemFree_v2");
    rc |= CU_RESOLVE(MemGetInfo, "cuMemGetInfo_v2");
    rc |= CU_RESOLVE(MemcpyHtoD, "cuMemcpyHtoD_v2");
    rc |= CU_RESOLVE(MemcpyDtoH, "cuMemcpyDtoH_v2");
    rc |= CU_RESOLVE(MemsetD8, "cuMemsetD8_v2");
    rc |= CU_RESOLVE(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    rc |= CU_RESOLVE(MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
    rc |= CU_RESOLVE(MemsetD8Async, "cuMemsetD8Async");
    rc |= CU_RESOLVE(StreamCreate, "cuStreamCreate");
    rc |= CU_RESOLVE(StreamDestroy, "cuStreamDestroy_v2");
    rc |= CU_RESOLVE(StreamSynchronize, "cuStreamSynchronize");
    rc |= CU_RESOLVE(StreamBeginCapture, "cuStreamBeginCapture_v2");
    rc |= CU_RESOLVE(StreamEndCapture, "cuStreamEndCapture");
    rc |= CU_RESOLVE(GraphInstantiate, "cuGraphInstantiateWithFlags");
    rc |= CU_RESOLVE(GraphLaunch, "cuGraphLaunch");
    rc |= CU_RESOLVE(GraphExecDestroy, "cuGraphExecDestroy");
    rc |= CU_RESOLVE(GraphDestroy, "cuGraphDestroy");
    rc |= CU_RESOLVE(GetErrorName, "cuGetErrorName");
    rc |= CU_RESOLVE(GetErrorString, "cuGetErrorString");
    rc |= CU_RESOLVE(EventCreate, "cuEventCreate");
    rc |= CU_RESOLVE(EventRecord, "cuEventRecord");
    rc |= CU_RESOLVE(EventSynchronize, "cuEventSynchronize");
    rc |= CU_RESOLVE(EventElapsedTime, "cuEventElapsedTime");
    rc |= CU_RESOLVE(EventDestroy, "cuEventDestroy_v2");
    rc |= CU_RESOLVE(StreamWaitEvent, "cuStreamWaitEvent");
    if (rc != 0) {
        cu_api_close(api);
        return -1;
    }
    return 0;
}

int cu_check(const cu_api *api, cu_result r, const char *call, edm_status *st)
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

int cu_api_init(const cu_api *api, edm_status *st)
{
    cu_result r = api->Init(0);
    if (r == CU_ERROR_NO_DEVICE)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no CUDA device (the driver is installed, cuInit found no GPU)");
    if (r != CU_SUCCESS) {
        cu_check(api, r, "cuInit", st);
        edm_status_prefix(st, "no usable CUDA device");
        return -1;
    }
    int count = 0;
    if (cu_check(api, api->DeviceGetCount(&count), "cuDeviceGetCount", st) != 0)
        return -1;
    if (count < 1)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no CUDA device (cuDeviceGetCount found none)");
    return 0;
}

/* ------------------------------------------------------------------ cuBLASLt */

#define LT_RESOLVE(field, name) edm_dynlib_resolve(api->lib, "cuBLASLt", name, &api->field, sizeof api->field, st)

void lt_api_close(lt_api *api)
{
    if (api->lib)
        dlclose(api->lib);
    memset(api, 0, sizeof *api);
}

int lt_api_open(lt_api *api, edm_status *st)
{
    memset(api, 0, sizeof *api);
    api->lib = edm_dynlib_open("EDMC_CUBLASLT", "libcublasLt.so.13", "cuBLASLt", st);
    if (!api->lib) {
        edm_status_prefix(st, "--matmul=cublaslt / --conv=im2col need cuBLASLt (or use --matmul=generated "
                              "--conv=implicit)");
        return -1;
    }
    int rc = 0;
    rc |= LT_RESOLVE(Create, "cublasLtCreate");
    rc |= LT_RESOLVE(Destroy, "cublasLtDestroy");
    rc |= LT_RESOLVE(GetVersion, "cublasLtGetVersion");
    rc |= LT_RESOLVE(GetStatusString, "cublasLtGetStatusString");
    rc |= LT_RESOLVE(DescCreate, "cublasLtMatmulDescCreate");
    rc |= LT_RESOLVE(DescDestroy, "cublasLtMatmulDescDestroy");
    rc |= LT_RESOLVE(DescSetAttribute, "cublasLtMatmulDescSetAttribute");
    rc |= LT_RESOLVE(LayoutCreate, "cublasLtMatrixLayoutCreate");
    rc |= LT_RESOLVE(LayoutDestroy, "cublasLtMatrixLayoutDestroy");
    rc |= LT_RESOLVE(LayoutSetAttribute, "cublasLtMatrixLayoutSetAttribute");
    rc |= LT_RESOLVE(PrefCreate, "cublasLtMatmulPreferenceCreate");
    rc |= LT_RESOLVE(PrefDestroy, "cublasLtMatmulPreferenceDestroy");
    rc |= LT_RESOLVE(PrefSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
    rc |= LT_RESOLVE(AlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
    rc |= LT_RESOLVE(Matmul, "cublasLtMatmul");
    if (rc != 0) {
        lt_api_close(api);
        return -1;
    }
    return 0;
}

int lt_check(const lt_api *api, lt_status s, const char *call, edm_status *st)
{
    if (s == 0)
        return 0;
    const char *text = api->GetStatusString ? api->GetStatusString(s) : NULL;
    return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s failed: %s (%d)", call, text ? text : "cuBLASLt error", s);
}
