/* NCCL's ABI as runtime/dist_nccl.c calls it (nccl.h of NCCL 2.x), written
 * out by hand: edmc opens libnccl.so.2 at run time and builds without NCCL's
 * headers.  Where configure finds nccl.h, runtime/nccl_abi_check.c compares
 * every line below with it at build time (static asserts). */
#ifndef EDMC_NCCL_ABI_H
#define EDMC_NCCL_ABI_H

#include <stddef.h>

typedef int nccl_result; /* ncclResult_t: 0 = ncclSuccess */
typedef void *nccl_comm; /* ncclComm_t */
typedef struct {
    char internal[128];
} nccl_unique_id;        /* ncclUniqueId (NCCL_UNIQUE_ID_BYTES) */
#define NCCL_FLOAT32 7   /* ncclFloat32 */
#define NCCL_SUM 0       /* ncclSum */

/* The entry points used, X(NAME, RETURN, (PARAMETERS)) for ncclNAME, over the
 * types R (ncclResult_t), C (ncclComm_t), U (ncclUniqueId), D
 * (ncclDataType_t), O (ncclRedOp_t) and S (cudaStream_t). */
#define NCCL_ENTRY_POINTS(X, R, C, U, D, O, S)                                                                         \
    X(GetVersion, R, (int *))                                                                                          \
    X(GetUniqueId, R, (U *))                                                                                           \
    X(CommInitRank, R, (C *, int, U, int))                                                                             \
    X(AllReduce, R, (const void *, void *, size_t, D, O, C, S))                                                        \
    X(GroupStart, R, (void))                                                                                           \
    X(GroupEnd, R, (void))                                                                                             \
    X(CommGetAsyncError, R, (C, R *))                                                                                  \
    X(CommAbort, R, (C))                                                                                               \
    X(CommDestroy, R, (C))                                                                                             \
    X(GetErrorString, const char *, (R))

/* ... with edmc's own types in those places */
#define NCCL_EDMC_ENTRY_POINTS(X) NCCL_ENTRY_POINTS(X, nccl_result, nccl_comm, nccl_unique_id, int, int, void *)

#endif
