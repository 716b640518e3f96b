/* The tensor-core attention body (cuda_attention_mma.h). */
#include "config.h"

#include "codegen/cuda_attention_mma.h"

/* D padded to the k of one mma (16), Dv to its n (8). */
static long long pad_to(int64_t v, int64_t m)
{
    int64_t padded = (v + m - 1) / m * m;
    return (long long)padded;
}

/* Shared-memory words a row of the key and value tiles: the pairs of the row
 * plus 4, so that the fragment reads of a warp (rows g = 0..7, words t = 0..3)
 * fall in 32 distinct banks for every padded size. */
static long long key_pitch(int64_t d) { return pad_to(d, 16) / 2 + 4; }
enum { VALUE_PITCH = EDM_ATTN_KEYS / 2 + 4 };

int edm_mma_attention_fits(int64_t d, int64_t dv)
{
    return d >= 1 && dv >= 1 && d <= EDM_ATTN_MAX_DIM && dv <= EDM_ATTN_MAX_DIM;
}

void edm_mma_emit_attention_shared(sbuf *b, int64_t d, int64_t dv)
{
    sb_printf(b, "    __shared__ unsigned Ks_[%d][%lld];\n    __shared__ unsigned Vs_[%lld][%d];\n", EDM_ATTN_KEYS,
              key_pitch(d), pad_to(dv, 8), VALUE_PITCH);
}

void edm_mma_emit_attention(sbuf *b, edm_dtype type, int64_t outer, int64_t d, int64_t tq, int64_t tk, int64_t dv)
{
    const char *ty = type == EDM_BF16 ? "bf16" : "f16";
    const long long dp = pad_to(d, 16), dvp = pad_to(dv, 8), ks = dp / 16, ct = dvp / 8;
    const long long D = (long long)d, TQ = (long long)tq, TK = (long long)tk, DV = (long long)dv;
    /* the rows of this thread: t0_ and t0_ + 8 of its warp's 16 queries */
    sb_printf(b,
              "    const int lane_ = threadIdx.x %% 32, warp_ = threadIdx.x / 32, g_ = lane_ / 4, t4_ = lane_ %% 4;\n"
              "    const edm_ix t0_ = (edm_ix)blockIdx.x * %d + warp_ * 16 + g_;\n"
              "    for (edm_ix o = blockIdx.y; o < %lld_ix; o += gridDim.y) {\n"
              "        const edm_ix qb = o * %lld_ix, kb = o * %lld_ix, vb = o * %lld_ix, yb = o * %lld_ix;\n",
              EDM_ATTN_QUERIES, (long long)outer, D * TQ, D * TK, DV * TK, DV * TQ);
    /* q as A fragments: register r holds query t0_ + 8·(r & 1), e = 16·ks + 8·(r >> 1) + 2·t4_ and the next */
    sb_printf(b,
              "        unsigned qa[%lld][4];\n"
              "        for (int s = 0; s < %lld; s++)\n"
              "            for (int r = 0; r < 4; r++) {\n"
              "                const edm_ix t = t0_ + 8 * (r & 1), e = s * 16 + 8 * (r >> 1) + 2 * t4_;\n"
              "                float lo = 0.0f, hi = 0.0f;\n"
              "                if (t < %lld_ix) {\n"
              "                    if (e < %lld_ix)\n                        lo = ld(a, qb + e * %lld_ix + t);\n"
              "                    if (e + 1 < %lld_ix)\n                        hi = ld(a, qb + (e + 1) * %lld_ix + t);\n"
              "                }\n"
              "                qa[s][r] = edm_mma_pack_%s(lo, hi);\n"
              "            }\n"
              "        float acc[%lld][4];\n"
              "        for (int c = 0; c < %lld; c++)\n"
              "            for (int r = 0; r < 4; r++)\n"
              "                acc[c][r] = 0.0f;\n"
              "        float m0 = -3.402823466e38f, m1 = -3.402823466e38f, l0 = 0.0f, l1 = 0.0f;\n",
              ks, ks, TQ, D, TQ, D, TQ, ty, ct, ct);
    /* a tile of keys into shared memory: k as pairs along e, v as pairs along the keys */
    sb_printf(b,
              "        for (edm_ix j0 = 0; j0 < %lld_ix; j0 += %d) {\n"
              "            __syncthreads(); /* the previous tile is read */\n"
              "            for (int q = threadIdx.x; q < %lld; q += %d) {\n"
              "                const int j = q / %lld, ep = q %% %lld;\n"
              "                const edm_ix key = j0 + j, e = 2 * ep;\n"
              "                float lo = 0.0f, hi = 0.0f;\n"
              "                if (key < %lld_ix) {\n"
              "                    if (e < %lld_ix)\n                        lo = ld(b, kb + e * %lld_ix + key);\n"
              "                    if (e + 1 < %lld_ix)\n                        hi = ld(b, kb + (e + 1) * %lld_ix + key);\n"
              "                }\n"
              "                Ks_[j][ep] = edm_mma_pack_%s(lo, hi);\n"
              "            }\n",
              TK, EDM_ATTN_KEYS, EDM_ATTN_KEYS * dp / 2, EDM_ATTN_THREADS, dp / 2, dp / 2, TK, D, TK, D, TK, ty);
    sb_printf(b,
              "            for (int q = threadIdx.x; q < %lld; q += %d) {\n"
              "                const int c = q / %d, jp = q %% %d;\n"
              "                const edm_ix key = j0 + 2 * jp;\n"
              "                float lo = 0.0f, hi = 0.0f;\n"
              "                if (c < %lld) {\n"
              "                    if (key < %lld_ix)\n                        lo = ld(c3, vb + c * %lld_ix + key);\n"
              "                    if (key + 1 < %lld_ix)\n                        hi = ld(c3, vb + c * %lld_ix + key + 1);\n"
              "                }\n"
              "                Vs_[c][jp] = edm_mma_pack_%s(lo, hi);\n"
              "            }\n"
              "            __syncthreads();\n",
              dvp * EDM_ATTN_KEYS / 2, EDM_ATTN_THREADS, EDM_ATTN_KEYS / 2, EDM_ATTN_KEYS / 2, DV, TK, TK, TK, TK, ty);
    /* the scores of the tile; keys past Tk masked; the row maxima over the four lanes of a row */
    sb_printf(b,
              "            float s[%d][4];\n"
              "            for (int n = 0; n < %d; n++) {\n"
              "                for (int r = 0; r < 4; r++)\n"
              "                    s[n][r] = 0.0f;\n"
              "                for (int k = 0; k < %lld; k++) {\n"
              "                    const unsigned kf[2] = {Ks_[n * 8 + g_][k * 8 + t4_], Ks_[n * 8 + g_][k * 8 + 4 + t4_]};\n"
              "                    edm_mma_%s(s[n], qa[k], kf);\n"
              "                }\n"
              "            }\n"
              "            float x0 = m0, x1 = m1;\n"
              "            for (int n = 0; n < %d; n++)\n"
              "                for (int r = 0; r < 4; r++) {\n"
              "                    if (j0 + n * 8 + 2 * t4_ + (r & 1) >= %lld_ix)\n"
              "                        s[n][r] = -3.402823466e38f;\n"
              "                    if (r < 2)\n                        x0 = fmaxf(x0, s[n][r]);\n"
              "                    else\n                        x1 = fmaxf(x1, s[n][r]);\n"
              "                }\n"
              "            x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));\n"
              "            x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));\n"
              "            x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));\n"
              "            x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));\n",
              EDM_ATTN_KEYS / 8, EDM_ATTN_KEYS / 8, ks, ty, EDM_ATTN_KEYS / 8, TK);
    /* rescale by the new maxima; the weights as the A fragments of P·v (n-tiles 2k, 2k+1 are k's 16 keys) */
    sb_printf(b,
              "            const float f0 = expf(m0 - x0), f1 = expf(m1 - x1);\n"
              "            m0 = x0;\n            m1 = x1;\n"
              "            l0 *= f0;\n            l1 *= f1;\n"
              "            for (int c = 0; c < %lld; c++) {\n"
              "                acc[c][0] *= f0;\n                acc[c][1] *= f0;\n"
              "                acc[c][2] *= f1;\n                acc[c][3] *= f1;\n"
              "            }\n"
              "            unsigned pa[%d][4];\n"
              "            for (int k = 0; k < %d; k++)\n"
              "                for (int h = 0; h < 2; h++) {\n"
              "                    const int n = 2 * k + h;\n"
              "                    const float p0 = expf(s[n][0] - m0), p1 = expf(s[n][1] - m0);\n"
              "                    const float p2 = expf(s[n][2] - m1), p3 = expf(s[n][3] - m1);\n"
              "                    l0 += p0 + p1;\n                    l1 += p2 + p3;\n"
              "                    pa[k][2 * h] = edm_mma_pack_%s(p0, p1);\n"
              "                    pa[k][2 * h + 1] = edm_mma_pack_%s(p2, p3);\n"
              "                }\n"
              "            for (int c = 0; c < %lld; c++)\n"
              "                for (int k = 0; k < %d; k++) {\n"
              "                    const unsigned vf[2] = {Vs_[c * 8 + g_][k * 8 + t4_], Vs_[c * 8 + g_][k * 8 + 4 + t4_]};\n"
              "                    edm_mma_%s(acc[c], pa[k], vf);\n"
              "                }\n"
              "        }\n",
              ct, EDM_ATTN_KEYS / 16, EDM_ATTN_KEYS / 16, ty, ty, ct, EDM_ATTN_KEYS / 16, ty);
    /* the row sums over the four lanes, then the store */
    sb_printf(b,
              "        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);\n"
              "        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);\n"
              "        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);\n"
              "        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);\n"
              "        const float i0 = 1.0f / l0, i1 = 1.0f / l1;\n"
              "        for (int c = 0; c < %lld; c++)\n"
              "            for (int r = 0; r < 4; r++) {\n"
              "                const edm_ix t = t0_ + 8 * (r >> 1), ch = c * 8 + 2 * t4_ + (r & 1);\n"
              "                if (t < %lld_ix && ch < %lld_ix)\n"
              "                    st(y, yb + ch * %lld_ix + t, acc[c][r] * (r < 2 ? i0 : i1));\n"
              "            }\n"
              "    }\n}\n",
              ct, TQ, DV, TQ);
}
