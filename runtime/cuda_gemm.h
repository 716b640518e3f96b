/* One GEMM of the CUDA backend through cuBLASLt, prepared once and run many
 * times (also inside a CUDA Graph capture).
 *
 * codegen describes contractions in row-major terms (edm_cuda_gemm:
 * C[z] (m×n) = op(A[z]) (m×k) · op(B[z]) (k×n)); cuBLASLt is column-major.
 * A row-major matrix is its transpose seen column-major, so the call made is
 * Cᵀ (n×m) = op(B)ᵀ · op(A)ᵀ: A and B swap places and the layouts keep the
 * row-major leading dimensions. */
#ifndef EDMC_CUDA_GEMM_H
#define EDMC_CUDA_GEMM_H

#include "codegen/cuda_codegen.h"
#include "runtime/cuda_api.h"

typedef struct {
    lt_desc desc;
    lt_layout a, b, c; /* of the column-major call: a describes B, b describes A */
    lt_algo algo;
    int64_t count;
} cuda_gemm_call;

/* Whether cuBLASLt takes these element types: A and B alike, C alike or f32. */
int cuda_gemm_types_supported(const edm_cuda_gemm *g);

/* Prepares g over `count` batch entries (g's strides) for a workspace of
 * ws_bytes.  0 ready; 1 cuBLASLt has no algorithm for it (the caller falls
 * back to the generated kernel); -1 an error. */
int cuda_gemm_prepare(const lt_api *lt, lt_handle h, const edm_cuda_gemm *g, int64_t count, size_t ws_bytes,
                      cuda_gemm_call *out, edm_status *st);
/* C = op(A)·op(B) + beta·C (pointers to entry 0 of each). */
int cuda_gemm_run(const lt_api *lt, lt_handle h, const cuda_gemm_call *c, cu_ptr a, cu_ptr b, cu_ptr cptr, float beta,
                  cu_ptr ws, size_t ws_bytes, cu_stream s, edm_status *st);
void cuda_gemm_release(const lt_api *lt, cuda_gemm_call *c);

#endif
