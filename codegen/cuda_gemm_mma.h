/* The tensor-core GEMM body of the generated contractions: the same
 * accessor interface as the CUDA-core body in cuda_codegen.c (the operands
 * read through KNAME_A(a, b, z, m, k) and KNAME_B(a, b, z, k, n), which
 * hold the implicit-GEMM indexing and any fused prologue; each result
 * stored through KNAME_C(y, z, m, n, v), which holds the fused epilogue),
 * computed with mma.sync.m16n8k16 on f16 or bf16 operands with f32
 * accumulation.
 *
 * A block of 256 threads (8 warps, 2 × 4) computes a BM × BN tile of C[z],
 * BM, BN ∈ {64, 128}, over k tiles of 32: each k tile is read through the
 * accessors into registers (two k values a thread, packed as one 32-bit
 * pair) while the tensor cores work on the previous one, then stored into
 * the other of two shared-memory stages, so one barrier a k tile suffices.
 * The fragments are read from shared memory in the register layout of the
 * PTX ISA's m16n8k16 (.row.col) fragments, with a row pitch of 20 words so
 * the reads of a warp touch 32 distinct banks.
 *
 * The instruction is reached through two helpers, edm_mma_f16 and
 * edm_mma_bf16 (d += a·b for one 16×8×16 product), defined as inline PTX
 * under __CUDA_ARCH__ (sm_80 and later); the emulating driver's header
 * (tests/emu/cuda_emu.h) defines them on the host with the same fragment
 * layout, as a warp-collective operation. */
#ifndef EDMC_CUDA_GEMM_MMA_H
#define EDMC_CUDA_GEMM_MMA_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/text.h"
#include "compiler/ir.h"

typedef struct {
    int bm, bn;    /* the block's tile of C: 64 or 128 each */
    int splits;    /* split-K: the k tiles in `splits` ranges, one block each (1: none) */
    int one_block; /* __launch_bounds__(256, 1): one block an SM, up to 255 registers a thread (0: two, 128) */
} edm_mma_tile;

enum { EDM_MMA_THREADS = 256, EDM_MMA_BK = 32 };

/* The most one split-K contraction's partial tiles may take (the module's
 * workspace is its largest user's): S's largest weight gradient at batch
 * 128, 384 × 8640, would otherwise take 32 splits of 128×128 tiles, 408 MiB. */
#define EDM_MMA_SPLITK_BYTES (64.0 * 1024 * 1024)


/* Tile t made valid for a GEMM (a forced tile: EDMC_MMA_TILE): bm and bn 64
 * or 128, splits only for gb = 1 and at most one a k tile; 0 or -1. */
int edm_mma_fit_tile(edm_mma_tile *t, int64_t gk, int64_t gb);

/* Parses "BMxBN", "BMxBN/SPLITS", either with "@1" after it (one block an
 * SM) or "@2" (two, the default) (EDMC_MMA_TILE, the tiles file); 0 or -1. */
int edm_mma_parse_tile(const char *s, edm_mma_tile *t);

/* Tile t as edm_mma_parse_tile reads it: "BMxBN/SPLITS", and "@1" where one_block. */
void edm_mma_format_tile(char *buf, size_t size, edm_mma_tile t);

/* What a tile's kernel needs of the split-K workspace: floats and counts (0 without splits). */
void edm_mma_workspace(edm_mma_tile t, int64_t gm, int64_t gn, int64_t *floats, int64_t *counts);

/* A convolution's B operand (its activations) read through a halo tile:
 * stride 1, padding (k − 1) / 2 (the output as large as the input), ktaps =
 * k·k, the block's BN pixels whole rows of one sample or whole samples (the
 * forward pass's x, or, flipped, the backward-data pass's dy).  Each channel block's
 * 32 channels are read once a block over the rows the tile's taps reach,
 * (BN / w + k − 1) × (w + k − 1) pixels, with the prologue applied once an
 * element, into a shared-memory stage of their own; the k·k k tiles of the
 * block (one tap each) take their B fragments from it at the tap's offset.
 * The next channel block's halo is read in k·k parts (its channel pairs
 * tap, tap + k·k, ...), one beside each k tile's products, into the other
 * of two stages.  Direct, each element of x would be read and its prologue
 * computed once a tap. */
typedef struct {
    int64_t n;    /* the samples */
    int64_t h, w; /* the input's (and output's) rows and columns */
    int k;        /* the kernel's size, odd and at least 3 */
    int flip;     /* the backward-data pass: tap (ky, kx) reads the pixel at (k−1−ky, k−1−kx) of its window */
    int wgrad;    /* the weight gradient's instead (edm_mma_wgrad_fits) */
    int64_t c;    /* with wgrad: x's channels */
} edm_mma_halo;

/* The weight gradient's B operand through a stage of its own (halo with
 * wgrad set): its k is the pixels (a k tile 32 pixels of one sample: whole
 * rows, or 32 of one row), its n the (channel, tap) pairs of the weight, so
 * a block's BN columns are the k·k taps of (BN − 1)/(k·k) + 2 channels at
 * most, and each pixel of x a tap reads is read by k·k columns.  Each k tile,
 * the block reads those channels of the rows the tile's taps reach, with the
 * prologue applied once an element, into a shared stage of 16-bit operands
 * (rounded as a product's operand is), then every B pair of the tile is two
 * of its elements, at an offset fixed for the thread (its columns' channel
 * and tap, its pair's pixel).  Direct, each element would be read and its
 * prologue computed k·k times.  Split-K as without. */
int edm_mma_wgrad_fits(edm_mma_tile t, const edm_mma_halo *h);

/* The most shared memory a block of a halo body may take, A's stages and the
 * halo's together: two blocks an SM on an H100 (228 KiB an SM). */
#define EDM_MMA_HALO_SHARED (96LL * 1024)

/* Whether tile t of such a convolution can read B through the halo: no
 * split, BN whole rows of one sample or whole samples (every tile full), the
 * stages within EDM_MMA_HALO_SHARED. */
int edm_mma_halo_fits(edm_mma_tile t, const edm_mma_halo *h);

/* The halo's two stages, in bytes: the launch's dynamic shared memory
 * (edm_halo_sh; past 48 KiB the executor raises the kernel's limit). */
unsigned edm_mma_halo_bytes(edm_mma_tile t, const edm_mma_halo *h);

/* Whether tile t's body reads B through halo: a convolution's halo tile
 * (edm_mma_halo_fits) or a weight gradient's stage (edm_mma_wgrad_fits);
 * NULL: none. */
int edm_mma_reads_halo(edm_mma_tile t, const edm_mma_halo *halo);

/* The tile for gb GEMMs of gm × gn × gk of contraction op (conv2d,
 * conv2d_bwd_data, conv2d_bwd_weight, matmul), by a cost model of an
 * H100-class GPU (132 SMs, two blocks each): the waves of blocks times the
 * time of a block, the largest of its tensor-core time, its operand-load
 * time and the time its warps take to issue their instructions (a table of
 * PTX instructions a k tile by op, body and tile shape, measured on
 * img512-s's training step: docs/cuda.md, "The tile cost model"), plus the
 * reduction of split-K's partial tiles.  halo: the halo (or the weight
 * gradient's stage) the body reads B through on the tiles that fit it
 * (edm_mma_halo_fits, edm_mma_wgrad_fits), or NULL.  128×128 tiles only for
 * the bodies whose kernels fit them in 128 registers (the halo convolutions
 * and the backward-data passes; the others' spill, most of them), at two
 * blocks an SM.  model: EDM_MMA_BY_ISSUE, or 0: without the issue time and
 * with 128×128 for every body, the model before the table
 * (EDMC_TILE_MODEL=loads, an ablation); with EDM_MMA_ONE_BLOCK too, the
 * bodies that would spill at 128×128 may take that tile one block an SM
 * (one_block: up to 255 registers a thread, half the blocks resident, so
 * each has the SM's issue to itself; EDMC_ONE_BLOCK_TILES=on).  The model
 * knows no latency: a block alone on its SM waits at each barrier for its
 * slowest warp with nothing else to run.  Splits only for gb = 1 (the
 * weight gradient: few output tiles over a reduction of N·OH·OW) and with
 * at least 8 k tiles a split.
 *
 * Split-K stays deterministic and one kernel: each block of a tile writes its
 * partial tile into the split-K workspace, counts itself in the tile's
 * arrival count (an atomic add after a fence), and the block that counts
 * last sums the partials in split order, applies KNAME_C (the epilogue) and
 * resets the count for the next launch.  The workspace and the counts are
 * the executor's memory, shared by a module's kernels (they run one after
 * another on one stream), sized to the largest edm_mma_workspace of them;
 * a kernel finds them in the run's block it takes as `seed` (seed[1], the
 * workspace; seed[2], the counts, zero before the first launch).  Not
 * __device__ arrays of the module: a module compiled in parts
 * (cuda_source_split.h) would hold one each. */
enum { EDM_MMA_BY_ISSUE = 1, EDM_MMA_ONE_BLOCK = 2 };
edm_mma_tile edm_mma_choose_tile(edm_op op, const edm_mma_halo *halo, unsigned model, int64_t gm, int64_t gn,
                                 int64_t gk, int64_t gb);
/* The same with the block's tile fixed to fixed.bm × fixed.bn (0: free):
 * the splits the cost model gives that tile (tuning's candidates,
 * cuda_tiles.h; any tile fixed, 128×128 included; with both fixed, at the
 * blocks an SM fixed.one_block says). */
edm_mma_tile edm_mma_choose_splits(edm_op op, const edm_mma_halo *halo, unsigned model, int64_t gm, int64_t gn,
                                   int64_t gk, int64_t gb, edm_mma_tile fixed);

/* The kernel's shared-memory declarations (emitted first in its body); halo
 * NULL unless the body reads B through one (edm_mma_halo_fits). */
void edm_mma_emit_shared(sbuf *b, edm_mma_tile t, const edm_mma_halo *halo);

/* The order a block's threads read an operand's tile in (edm_mma_emit_body's
 * `order`), to match the order its memory runs in: by default A k-major
 * (neighbouring threads on neighbouring k: A's rows are along k, as a
 * weight's [O][C·k·k]) and B row-major (neighbouring threads on neighbouring
 * columns n: B's rows are along n, as a convolution's pixels).  A_ROWS: A's
 * memory runs along m (a transposed A, the weight read by the backward-data
 * pass); B_K: B's runs along k (a transposed B, the activations the weight
 * gradient reads along its k, the pixels).  A_PAIRS (with ktaps, k-major):
 * A's k pairs lie side by side, aligned, so that the body reads each as one
 * through KNAME_A2(a, b, z, m, kq, kr), which returns them packed
 * (edm_ldpair_f16/bf16: one 32-bit load where A is stored in the product's
 * type, the tap-major weight copy of the taps rule).  A_ASYNC (with A_PAIRS,
 * where A is stored in the product's type and read as it is, no prologue):
 * A's k tiles copied into their stage by cp.async, 16 bytes a copy, from the
 * address KNAME_A8(a, b, z, m, kq, kr) gives (of elements kr..kr + 7),
 * without passing through registers.  A_WIDE (without ktaps and the others
 * on A, gk a multiple of EDM_MMA_BK: dy of the weight gradient, along its
 * pixels): A's rows along k read eight elements at a time, a thread's four
 * pairs of one row through KNAME_A8v(a, b, z, m, k, w) (k a multiple of 8,
 * w the four packed words), one 16-byte load and one 16-byte shared store. */
enum {
    EDM_MMA_A_ROWS = 1u << 0,
    EDM_MMA_B_K = 1u << 1,
    EDM_MMA_A_PAIRS = 1u << 2,
    EDM_MMA_A_ASYNC = 1u << 3,
    EDM_MMA_A_WIDE = 1u << 4
};

/* The rest of the body after the shared declarations, closing the kernel:
 * C[z] (gm × gn) = Σ_k A(z, m, k)·B(z, k, n) for z < gb, operands rounded
 * to `type` (EDM_F16 or EDM_BF16).  The launch: grid (⌈gn/bn⌉, ⌈gm/bm⌉,
 * min(gb, 65535), or the splits), 256 threads.
 *
 * ktaps > 0 (a convolution of C channels, C a multiple of EDM_MMA_BK, and
 * ktaps = kh·kw taps: gk = C·ktaps): k is read as the pair (kq, kr) = (tap,
 * channel) through KNAME_A(a, b, z, m, kq, kr) and KNAME_B(a, b, z, kq, kr,
 * n), k tile t holding the 32 channels of block t / ktaps at tap t % ktaps.
 * The tap is then one value a tile, computed once: every load of a thread in
 * a tile shares its pixel (the bounds, any per-pixel operand of a prologue),
 * and the ktaps tiles of a channel block reuse the same lines of the weights
 * and of the activations.
 *
 * halo (non-NULL only where edm_mma_halo_fits, with ktaps = k·k and B in the
 * default order; or, wgrad, where edm_mma_wgrad_fits, with ktaps 0 and B_K):
 * B's elements come from KNAME_H(a, b, z, nb, c, iy, ix), channel c of input
 * pixel (iy, ix) of sample nb with its prologue, 0 outside the image, instead
 * of KNAME_B. */
void edm_mma_emit_body(sbuf *b, edm_mma_tile t, edm_dtype type, int64_t gm, int64_t gn, int64_t gk, int64_t gb,
                       int64_t ktaps, unsigned order, const edm_mma_halo *halo);

/* The helpers edm_mma_f16 / edm_mma_bf16 for the source's preamble. */
extern const char edm_mma_preamble[];

#endif
