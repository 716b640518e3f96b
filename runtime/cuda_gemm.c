/* cuBLASLt GEMMs in row-major terms (see cuda_gemm.h). */
#include "config.h"

#include "runtime/cuda_gemm.h"

#include <string.h>

static int lt_type(edm_dtype t) { return t == EDM_F16 ? LT_R_16F : t == EDM_BF16 ? LT_R_16BF : LT_R_32F; }

int cuda_gemm_types_supported(const edm_cuda_gemm *g)
{
    if (g->type_a != g->type_b)
        return 0;
    return g->type_c == g->type_a || g->type_c == EDM_F32;
}

/* The alignment every pointer to an operand's entries keeps: the arena
 * aligns values to 256 bytes, and the executor offsets pointers only by
 * whole batch strides. */
static uint32_t operand_alignment(int64_t stride, edm_dtype t)
{
    uint64_t bytes = (uint64_t)stride * (t == EDM_F32 ? 4u : 2u);
    uint32_t align = 256;
    while (bytes && bytes % align)
        align /= 2;
    return align;
}

/* A layout of `rows`×`cols` column-major with leading dimension ld, batched. */
static int make_layout(const lt_api *lt, lt_layout *out, edm_dtype t, int64_t rows, int64_t cols, int64_t ld,
                       int64_t count, int64_t stride, edm_status *st)
{
    if (lt_check(lt, lt->LayoutCreate(out, lt_type(t), (uint64_t)rows, (uint64_t)cols, ld), "cublasLtMatrixLayoutCreate",
                 st) != 0)
        return -1;
    if (count <= 1)
        return 0;
    int32_t n = (int32_t)count;
    int64_t s = stride;
    if (lt_check(lt, lt->LayoutSetAttribute(*out, LT_LAYOUT_BATCH_COUNT, &n, sizeof n),
                 "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)", st) != 0 ||
        lt_check(lt, lt->LayoutSetAttribute(*out, LT_LAYOUT_BATCH_STRIDE, &s, sizeof s),
                 "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)", st) != 0)
        return -1;
    return 0;
}

void cuda_gemm_release(const lt_api *lt, cuda_gemm_call *c)
{
    if (c->a)
        lt->LayoutDestroy(c->a);
    if (c->b)
        lt->LayoutDestroy(c->b);
    if (c->c)
        lt->LayoutDestroy(c->c);
    if (c->desc)
        lt->DescDestroy(c->desc);
    memset(c, 0, sizeof *c);
}

int cuda_gemm_prepare(const lt_api *lt, lt_handle h, const edm_cuda_gemm *g, int64_t count, size_t ws_bytes,
                      cuda_gemm_call *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    out->count = count;
    /* the column-major call: M' = n, N' = m, K' = k; its A is our B, its B our A */
    int32_t opa = g->trans_b ? LT_OP_T : LT_OP_N, opb = g->trans_a ? LT_OP_T : LT_OP_N;
    int rc = lt_check(lt, lt->DescCreate(&out->desc, LT_COMPUTE_32F, LT_R_32F), "cublasLtMatmulDescCreate", st);
    if (rc == 0)
        rc = lt_check(lt, lt->DescSetAttribute(out->desc, LT_DESC_TRANSA, &opa, sizeof opa),
                      "cublasLtMatmulDescSetAttribute(TRANSA)", st);
    if (rc == 0)
        rc = lt_check(lt, lt->DescSetAttribute(out->desc, LT_DESC_TRANSB, &opb, sizeof opb),
                      "cublasLtMatmulDescSetAttribute(TRANSB)", st);
    /* B row-major is k×n (n×k when transposed): column-major n×k (k×n), ld = its row length */
    if (rc == 0)
        rc = g->trans_b ? make_layout(lt, &out->a, g->type_b, g->k, g->n, g->k, count, g->stride_b, st)
                        : make_layout(lt, &out->a, g->type_b, g->n, g->k, g->n, count, g->stride_b, st);
    /* A row-major is m×k (k×m when transposed) */
    if (rc == 0)
        rc = g->trans_a ? make_layout(lt, &out->b, g->type_a, g->m, g->k, g->m, count, g->stride_a, st)
                        : make_layout(lt, &out->b, g->type_a, g->k, g->m, g->k, count, g->stride_a, st);
    if (rc == 0)
        rc = make_layout(lt, &out->c, g->type_c, g->n, g->m, g->n, count, g->stride_c, st);
    if (rc != 0) {
        cuda_gemm_release(lt, out);
        return -1;
    }
    lt_pref pref = NULL;
    uint64_t ws = ws_bytes;
    lt_heuristic best;
    memset(&best, 0, sizeof best);
    int found = 0;
    rc = lt_check(lt, lt->PrefCreate(&pref), "cublasLtMatmulPreferenceCreate", st);
    if (rc == 0)
        rc = lt_check(lt, lt->PrefSetAttribute(pref, LT_PREF_MAX_WORKSPACE, &ws, sizeof ws),
                      "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)", st);
    /* the call's A is our B, its B our A; C and D are the same buffer */
    uint32_t align[4] = {operand_alignment(g->stride_b, g->type_b), operand_alignment(g->stride_a, g->type_a),
                         operand_alignment(g->stride_c, g->type_c), operand_alignment(g->stride_c, g->type_c)};
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = lt_check(lt, lt->PrefSetAttribute(pref, LT_PREF_ALIGN_A + i, &align[i], sizeof align[i]),
                      "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)", st);
    if (rc == 0)
        rc = lt_check(lt,
                      lt->AlgoGetHeuristic(h, out->desc, out->a, out->b, out->c, out->c, pref, 1, &best, &found),
                      "cublasLtMatmulAlgoGetHeuristic", st);
    if (pref)
        lt->PrefDestroy(pref);
    if (rc != 0) {
        cuda_gemm_release(lt, out);
        return -1;
    }
    if (found < 1 || best.state != 0) {
        cuda_gemm_release(lt, out);
        return 1;
    }
    out->algo = best.algo;
    return 0;
}

int cuda_gemm_run(const lt_api *lt, lt_handle h, const cuda_gemm_call *c, cu_ptr a, cu_ptr b, cu_ptr cptr, float beta,
                  cu_ptr ws, size_t ws_bytes, cu_stream s, edm_status *st)
{
    const float alpha = 1.0f;
    /* device pointers travel as void * through cuBLASLt's API */
    void *pa = (void *)(uintptr_t)a, *pb = (void *)(uintptr_t)b, *pc = (void *)(uintptr_t)cptr,
         *pw = (void *)(uintptr_t)ws;
    return lt_check(lt,
                    lt->Matmul(h, c->desc, &alpha, pb, c->a, pa, c->b, &beta, pc, c->c, pc, c->c, &c->algo, pw,
                               ws_bytes, s),
                    "cublasLtMatmul", st);
}
