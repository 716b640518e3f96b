/* Built only where configure found NVIDIA's nccl.h (EDMC_HAVE_NCCL_H): the
 * hand-written ABI of runtime/nccl_abi.h against it, by static asserts.  A
 * mismatch fails the build; nothing here is called. */
#include "config.h"

/* NVIDIA's header is not written for our warning set (void f(); declarations) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

#include "runtime/nccl_abi.h"

_Static_assert(sizeof(nccl_unique_id) == sizeof(ncclUniqueId) && sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES &&
                   NCCL_UNIQUE_ID_BYTES == 128,
               "ncclUniqueId is 128 bytes");
_Static_assert(NCCL_FLOAT32 == ncclFloat32, "ncclFloat32");
_Static_assert(NCCL_SUM == ncclSum, "ncclSum");
_Static_assert(ncclSuccess == 0, "ncclSuccess");
/* edmc's stand-ins have the size of NCCL's types (enums as int, handles as pointers) */
_Static_assert(sizeof(nccl_result) == sizeof(ncclResult_t), "ncclResult_t");
_Static_assert(sizeof(int) == sizeof(ncclDataType_t) && sizeof(int) == sizeof(ncclRedOp_t), "ncclDataType_t, ncclRedOp_t");
_Static_assert(sizeof(nccl_comm) == sizeof(ncclComm_t) && sizeof(void *) == sizeof(cudaStream_t), "ncclComm_t, cudaStream_t");

/* every entry point: with NCCL's types in the stand-ins' places, the type nccl.h declares */
#define NCCL_SAME_TYPE(name, ret, params)                                                                             \
    _Static_assert(_Generic(&nccl##name, ret(*) params: 1, default: 0), "nccl" #name "'s type in runtime/nccl_abi.h");
NCCL_ENTRY_POINTS(NCCL_SAME_TYPE, ncclResult_t, ncclComm_t, ncclUniqueId, ncclDataType_t, ncclRedOp_t, cudaStream_t)
