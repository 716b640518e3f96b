/* The tensor-core body of the fused attention op (docs/fusion.md, `attn`):
 * y[o][c][t] = Σ_j softmax_j(Σ_e q[o][e][t]·k[o][e][j]) · v[o][c][j], with
 * q [.., D, Tq], k [.., D, Tk], v [.., Dv, Tk] read through ld(a, ..),
 * ld(b, ..), ld(c3, ..) and the result stored through st(y, ..) — the names
 * a fused step replaces by its prologue readers and its epilogue.
 *
 * One block of 128 threads (4 warps) takes 64 queries of one (sample, head)
 * o, 16 queries a warp; each warp keeps its queries' q as mma.m16n8k16 A
 * fragments in registers and walks the keys in tiles of 64, staged in shared
 * memory as f16/bf16 pairs: the scores S = qᵀk of a tile on the tensor cores
 * (f32 accumulators), the softmax kept online (the row maximum across the
 * four lanes of a row by __shfl_xor_sync, the accumulators rescaled when it
 * grows), the weights exp(S − max) rounded to f16/bf16 and used in place as
 * the A fragments of the product with v, so no score leaves the registers.
 * D and Dv are padded with zeros to 16 and 8, keys past Tk are masked, and
 * queries past Tq are not stored.  The emulating driver (tests/emu) runs
 * __shfl_xor_sync as a collective of the block, like mma.sync. */
#ifndef EDMC_CUDA_ATTENTION_MMA_H
#define EDMC_CUDA_ATTENTION_MMA_H

#include <stdint.h>

#include "codegen/text.h"
#include "compiler/ir.h"

enum { EDM_ATTN_THREADS = 128, EDM_ATTN_QUERIES = 64, EDM_ATTN_KEYS = 64, EDM_ATTN_MAX_DIM = 128 };

/* Whether the tensor-core kernel takes these head sizes (its q fragments and
 * output accumulators live in registers: D, Dv at most EDM_ATTN_MAX_DIM). */
int edm_mma_attention_fits(int64_t d, int64_t dv);

/* The kernel's shared-memory declarations (emitted first in its body). */
void edm_mma_emit_attention_shared(sbuf *b, int64_t d, int64_t dv);

/* The rest of the body after the shared declarations, closing the kernel,
 * for `outer` (sample, head) pairs, operands rounded to `type` (EDM_F16 or
 * EDM_BF16).  The launch: grid (⌈tq/64⌉, min(outer, 65535)), 128 threads. */
void edm_mma_emit_attention(sbuf *b, edm_dtype type, int64_t outer, int64_t d, int64_t tq, int64_t tk, int64_t dv);

#endif
