/* The tensor-core GEMM body (cuda_gemm_mma.h). */
#include "config.h"

#include "codegen/cuda_gemm_mma.h"

#include <stdio.h>
#include <string.h>

/* d += a·b for one m16n8k16 product, f32 accumulators; a: the four 32-bit
 * registers of A's fragment, b: B's two (PTX ISA, "Matrix Fragments for
 * mma.m16n8k16 with floating point type"); and the packing of two operands
 * into one register, the lower-indexed one in the low half. */
const char edm_mma_preamble[] =
    "#ifdef __CUDA_ARCH__\n"
    "static __device__ __forceinline__ void edm_mma_f16(float *d, const unsigned *a, const unsigned *b)\n"
    "{\n"
    "    asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, \"\n"
    "                 \"{%8, %9}, {%0, %1, %2, %3};\"\n"
    "                 : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3])\n"
    "                 : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b[0]), \"r\"(b[1]));\n"
    "}\n"
    "static __device__ __forceinline__ void edm_mma_bf16(float *d, const unsigned *a, const unsigned *b)\n"
    "{\n"
    "    asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, \"\n"
    "                 \"{%8, %9}, {%0, %1, %2, %3};\"\n"
    "                 : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3])\n"
    "                 : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b[0]), \"r\"(b[1]));\n"
    "}\n"
    /* 16 bytes from global memory straight into shared memory (cp.async.cg; full 0: zeros,
     * nothing read), and the wait for this thread's copies (PTX ISA, cp.async): A's k tiles
     * where A is read as stored (EDM_MMA_A_ASYNC); the emulator models both
     * (tests/emu/cuda_emu.h: a copy lands at the wait) */
    "static __device__ __forceinline__ void edm_cp_async16(unsigned dst, const void *src, int full)\n"
    "{\n"
    "    asm volatile(\"cp.async.cg.shared.global [%0], [%1], 16, %2;\" : : \"r\"(dst), \"l\"(src), \"r\"(full ? 16 : 0)\n"
    "                 : \"memory\");\n"
    "}\n"
    "static __device__ __forceinline__ void edm_cp_async_wait(void) { asm volatile(\"cp.async.wait_all;\" : : : \"memory\"); }\n"
    /* the approximate exp and division of a tensor-core operand's prologue (cuda_codegen.c) */
    "static __device__ __forceinline__ float edm_exp_approx(float x) { return __expf(x); }\n"
    "static __device__ __forceinline__ float edm_div_approx(float a, float b) { return __fdividef(a, b); }\n"
    "#endif\n"
    /* the dynamic shared memory, 16-byte aligned; the halo stages' name for it */
    "#ifndef EDM_DYNAMIC_SHARED\n"
    "#define EDM_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]\n"
    "#endif\n"
    "EDM_DYNAMIC_SHARED(unsigned, edm_halo_sh);\n"
    /* split-K's partial tiles and arrival counts: the executor's memory, its address in
     * the run's block that every kernel takes as `seed` (cuda_codegen.h) */
    "#define EDM_SPLITK_WS(seed) ((float *)(seed)[1])\n"
    "#define EDM_SPLITK_COUNT(seed) ((unsigned *)(seed)[2])\n"
    /* A's 16×16 and two of B's 16×8 fragments from a shared-memory stage (rows of k pairs,
     * `pitch` words apart, base at the fragment's first row and k): one ldmatrix.x4 each,
     * lane l giving the address of row l % 8 of 8×8 matrix l / 8 and receiving word l % 4
     * of row l / 4 of each (PTX ISA, ldmatrix) — on the GPU, and on the emulator, which
     * models the instruction (tests/emu/cuda_emu.h) so that it runs the GPU's addresses;
     * without EDM_LDMATRIX, the same words read one by one (the _words functions).  The
     * lane's row and word offsets are their own functions, which tests/emu/ldsm_check.cpp
     * checks against the fragment layout. */
    "static __device__ __forceinline__ int edm_ldsm_a_offset(int lane, int pitch)\n"
    "{\n    return lane % 16 * pitch + lane / 16 * 4;\n}\n"
    "static __device__ __forceinline__ int edm_ldsm_b_offset(int lane, int pitch)\n"
    "{\n    return (lane % 8 + lane / 16 * 8) * pitch + lane / 8 % 2 * 4;\n}\n"
    "static __device__ __forceinline__ void edm_frag_a_words(unsigned *f, const unsigned *base, int pitch, int lane)\n"
    "{\n"
    "    const int g = lane / 4, t = lane % 4;\n"
    "    f[0] = base[g * pitch + t];\n"
    "    f[1] = base[(g + 8) * pitch + t];\n"
    "    f[2] = base[g * pitch + 4 + t];\n"
    "    f[3] = base[(g + 8) * pitch + 4 + t];\n"
    "}\n"
    "static __device__ __forceinline__ void edm_frag_b2_words(unsigned (*f)[2], const unsigned *base, int pitch, int lane)\n"
    "{\n"
    "    const int g = lane / 4, t = lane % 4;\n"
    "    f[0][0] = base[g * pitch + t];\n"
    "    f[0][1] = base[g * pitch + 4 + t];\n"
    "    f[1][0] = base[(g + 8) * pitch + t];\n"
    "    f[1][1] = base[(g + 8) * pitch + 4 + t];\n"
    "}\n"
    "#if defined(__CUDA_ARCH__) && defined(EDM_LDMATRIX)\n"
    /* x, opaque to the optimizer: computed once, kept in a register (NVVM would
     * otherwise derive each ldmatrix address from threadIdx anew in the loop) */
    "static __device__ __forceinline__ unsigned edm_opaque_u32(unsigned x)\n"
    "{\n    asm(\"\" : \"+r\"(x));\n    return x;\n}\n"
    "static __device__ __forceinline__ void edm_ldsm_x4(unsigned *d, unsigned row)\n"
    "{\n"
    "    asm volatile(\"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\"\n"
    "                 : \"=r\"(d[0]), \"=r\"(d[1]), \"=r\"(d[2]), \"=r\"(d[3]) : \"r\"(row));\n"
    "}\n"
    "#else\n"
    "static __device__ __forceinline__ unsigned edm_opaque_u32(unsigned x) { return x; }\n"
    "#endif\n"
    "#if defined(EDM_LDMATRIX) && (defined(__CUDA_ARCH__) || defined(EDM_EMU_LDMATRIX))\n"
    "static __device__ __forceinline__ void edm_frag_a(unsigned *f, const unsigned *, int, int, unsigned row)\n"
    "{\n    edm_ldsm_x4(f, row);\n}\n"
    "static __device__ __forceinline__ void edm_frag_b2(unsigned (*f)[2], const unsigned *, int, int, unsigned row)\n"
    "{\n"
    "    unsigned d[4];\n"
    "    edm_ldsm_x4(d, row);\n"
    "    f[0][0] = d[0];\n    f[0][1] = d[1];\n    f[1][0] = d[2];\n    f[1][1] = d[3];\n"
    "}\n"
    /* B's fragments j and j + 1 from a halo stage (a convolution's B through a halo tile,
     * edm_mma_halo: rows of pixels, `pitch` words apart, each 16 k pairs), where the 16
     * pixels of the two fragments need not lie in consecutive rows: ldmatrix with the
     * address (bytes) of the row the lane gives, or word by word from the rows r0
     * (fragment j) and r1 (j + 1) of the lane's group; ks: the k step's half. */
    "static __device__ __forceinline__ void edm_frag_b2_halo(unsigned (*f)[2], const unsigned *h, int pitch, unsigned row,\n"
    "                                                        int, int, int, int)\n"
    "{\n    edm_frag_b2(f, h, pitch, 0, row);\n}\n"
    "#else\n"
    "static __device__ __forceinline__ void edm_frag_a(unsigned *f, const unsigned *base, int pitch, int lane, unsigned)\n"
    "{\n    edm_frag_a_words(f, base, pitch, lane);\n}\n"
    "static __device__ __forceinline__ void edm_frag_b2(unsigned (*f)[2], const unsigned *base, int pitch, int lane, unsigned)\n"
    "{\n    edm_frag_b2_words(f, base, pitch, lane);\n}\n"
    "static __device__ __forceinline__ void edm_frag_b2_halo(unsigned (*f)[2], const unsigned *h, int pitch, unsigned,\n"
    "                                                        int r0, int r1, int ks, int lane)\n"
    "{\n"
    "    const int t = lane % 4;\n"
    "    f[0][0] = h[r0 * pitch + ks * 8 + t];\n"
    "    f[0][1] = h[r0 * pitch + ks * 8 + 4 + t];\n"
    "    f[1][0] = h[r1 * pitch + ks * 8 + t];\n"
    "    f[1][1] = h[r1 * pitch + ks * 8 + 4 + t];\n"
    "}\n"
    "#endif\n"
    /* on sm_80+ both halves in one instruction (cvt.rn.f16x2.f32: its first source the
     * high half), rounded as the two conversions round them */
    "static __device__ __forceinline__ unsigned edm_mma_pack_f16(float lo, float hi)\n"
    "{\n"
    "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800\n"
    "    unsigned d;\n"
    "    asm(\"cvt.rn.f16x2.f32 %0, %1, %2;\" : \"=r\"(d) : \"f\"(hi), \"f\"(lo));\n"
    "    return d;\n"
    "#else\n"
    "    return (unsigned)edm_cvt_rn_f16_f32(lo) | (unsigned)edm_cvt_rn_f16_f32(hi) << 16;\n"
    "#endif\n"
    "}\n"
    "static __device__ __forceinline__ unsigned edm_mma_pack_bf16(float lo, float hi)\n"
    "{\n"
    "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800\n"
    "    unsigned d;\n"
    "    asm(\"cvt.rn.bf16x2.f32 %0, %1, %2;\" : \"=r\"(d) : \"f\"(hi), \"f\"(lo));\n"
    "    return d;\n"
    "#else\n"
    "    return (unsigned)edm_cvt_rn_bf16_f32(lo) | (unsigned)edm_cvt_rn_bf16_f32(hi) << 16;\n"
    "#endif\n"
    "}\n"
    /* elements i and i + 1 (i even) of a stored value, packed as the operands of an f16 or
     * bf16 product: stored in that type, one 32-bit load of both (their bits as they are);
     * else each converted.  Off the GPU (the emulator) the halves one by one, the address
     * checked as the GPU's load needs it (EDM_CHECK_ALIGNED, tests/emu/cuda_emu.h) */
    "#ifdef __CUDA_ARCH__\n"
    "static __device__ __forceinline__ unsigned edm_ld_bits2(const unsigned short *p)\n"
    "{\n    return *reinterpret_cast<const unsigned *>(p);\n}\n"
    "#else\n"
    "#ifndef EDM_CHECK_ALIGNED\n"
    "#define EDM_CHECK_ALIGNED(p, bytes, what)\n"
    "#endif\n"
    "static __device__ __forceinline__ unsigned edm_ld_bits2(const unsigned short *p)\n"
    "{\n"
    "    EDM_CHECK_ALIGNED(p, 4, \"a pair's 32-bit load\");\n"
    "    return (unsigned)p[0] | (unsigned)p[1] << 16;\n"
    "}\n"
    "#endif\n"
    "template <class Stored>\n"
    "static __device__ __forceinline__ unsigned edm_ldpair_f16(const Stored *p, long long i)\n"
    "{\n    return edm_mma_pack_f16(ld(p, i), ld(p, i + 1));\n}\n"
    "static __device__ __forceinline__ unsigned edm_ldpair_f16(const h16 *p, long long i) { return edm_ld_bits2(&p[i].x); }\n"
    "template <class Stored>\n"
    "static __device__ __forceinline__ unsigned edm_ldpair_bf16(const Stored *p, long long i)\n"
    "{\n    return edm_mma_pack_bf16(ld(p, i), ld(p, i + 1));\n}\n"
    "static __device__ __forceinline__ unsigned edm_ldpair_bf16(const b16 *p, long long i) { return edm_ld_bits2(&p[i].x); }\n"
    /* the address of element i of a stored value (KNAME_A8: cp.async's source) */
    "template <class Stored>\n"
    "static __device__ __forceinline__ const void *edm_addr_of(const Stored *p, long long i)\n"
    "{\n    return p + i;\n}\n"
    /* elements i..i + 7 of a stored value (i a multiple of 8: 16 bytes, aligned, of a 16-bit
     * type; 32 of f32) in one 16-byte load (two of f32): as f32 (ld8), or packed in pairs as
     * the operands of an f16 or bf16 product (edm_ld8pack_*: the bits as they are where the
     * value is stored in that type).  A's k tile of the weight gradient, dy along its pixels
     * (EDM_MMA_A_WIDE); ldq8_* the same with the elements' coordinates, which a fused
     * prologue reads (KNAME_in1q8).  Off the GPU word by word, the alignment checked. */
    "#ifdef __CUDA_ARCH__\n"
    "static __device__ __forceinline__ void edm_ld_words4(const void *p, unsigned *w)\n"
    "{\n"
    "    const uint4 q = *reinterpret_cast<const uint4 *>(p);\n"
    "    w[0] = q.x;\n    w[1] = q.y;\n    w[2] = q.z;\n    w[3] = q.w;\n"
    "}\n"
    "static __device__ __forceinline__ void edm_st_words4(unsigned *p, const unsigned *w)\n"
    "{\n    *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);\n}\n"
    "#else\n"
    "static __device__ __forceinline__ void edm_ld_words4(const void *p, unsigned *w)\n"
    "{\n"
    "    EDM_CHECK_ALIGNED(p, 16, \"a 16-byte load\");\n"
    "    memcpy(w, p, 16);\n"
    "}\n"
    "static __device__ __forceinline__ void edm_st_words4(unsigned *p, const unsigned *w)\n"
    "{\n"
    "    EDM_CHECK_ALIGNED(p, 16, \"a 16-byte shared store\");\n"
    "    for (int j = 0; j < 4; j++)\n"
    "        p[j] = w[j];\n"
    "}\n"
    "#endif\n"
    "static __device__ __forceinline__ void ld8(const float *p, long long i, float *v)\n"
    "{\n"
    "    unsigned w[8];\n"
    "    edm_ld_words4(p + i, w);\n"
    "    edm_ld_words4(p + i + 4, w + 4);\n"
    "    for (int j = 0; j < 8; j++)\n"
    "        v[j] = __uint_as_float(w[j]);\n"
    "}\n"
    "static __device__ __forceinline__ void ld8(const h16 *p, long long i, float *v)\n"
    "{\n"
    "    unsigned w[4];\n"
    "    edm_ld_words4(p + i, w);\n"
    "    for (int j = 0; j < 8; j++)\n"
    "        v[j] = edm_cvt_f32_f16((unsigned short)(w[j / 2] >> 16 * (j % 2)));\n"
    "}\n"
    "static __device__ __forceinline__ void ld8(const b16 *p, long long i, float *v)\n"
    "{\n"
    "    unsigned w[4];\n"
    "    edm_ld_words4(p + i, w);\n"
    "    for (int j = 0; j < 8; j++)\n"
    "        v[j] = __uint_as_float(j % 2 ? w[j / 2] & 0xffff0000u : w[j / 2] << 16);\n"
    "}\n"
    "template <class Stored>\n"
    "static __device__ __forceinline__ void edm_ld8pack_f16(const Stored *p, long long i, unsigned *w)\n"
    "{\n"
    "    float v[8];\n"
    "    ld8(p, i, v);\n"
    "    for (int j = 0; j < 4; j++)\n"
    "        w[j] = edm_mma_pack_f16(v[2 * j], v[2 * j + 1]);\n"
    "}\n"
    "static __device__ __forceinline__ void edm_ld8pack_f16(const h16 *p, long long i, unsigned *w) { edm_ld_words4(p + i, w); }\n"
    "template <class Stored>\n"
    "static __device__ __forceinline__ void edm_ld8pack_bf16(const Stored *p, long long i, unsigned *w)\n"
    "{\n"
    "    float v[8];\n"
    "    ld8(p, i, v);\n"
    "    for (int j = 0; j < 4; j++)\n"
    "        w[j] = edm_mma_pack_bf16(v[2 * j], v[2 * j + 1]);\n"
    "}\n"
    "static __device__ __forceinline__ void edm_ld8pack_bf16(const b16 *p, long long i, unsigned *w) { edm_ld_words4(p + i, w); }\n"
    "template <class Stored>\n"
    "static __device__ __forceinline__ void ldq8_f16(const Stored *p, long long i, long long, long long, long long, long long,\n"
    "                                                unsigned *w)\n"
    "{\n    edm_ld8pack_f16(p, i, w);\n}\n"
    "template <class Stored>\n"
    "static __device__ __forceinline__ void ldq8_bf16(const Stored *p, long long i, long long, long long, long long, long long,\n"
    "                                                 unsigned *w)\n"
    "{\n    edm_ld8pack_bf16(p, i, w);\n}\n";

/* Shared-memory words a row of a stage: 16 pairs of k, padded to 20 so that
 * rows g = 0..7 of a fragment read start 20·g words apart (banks 0, 20, 8,
 * 28, ...: with the 4 words of a group, 32 distinct banks). */
enum { PITCH = 20 };

/* The epilogue's staging (edm_mma_emit_body): 32 rows of the tile at a pitch
 * of BN + 8 words, so that the fragments' 64-bit halves land in distinct
 * banks (rows g = 0..3 of a half-warp 8 banks apart); 32·(BN + 8) words fit
 * in Bs_ (2·BN·PITCH) for BN of 32 and more.  Its loop unrolled by 2 (the
 * epilogue in the code twice, not once a fragment element). */
enum { STAGE_PAD = 8, STAGE_UNROLL = 2 };

static double ceil_div(double a, double b) { return (double)(int64_t)((a + b - 1) / b); }

/* The k tiles of each split, and the number of splits that have any. */
static int64_t tiles_per_split(int64_t nkt, int splits) { return (nkt + splits - 1) / splits; }
static int used_splits(int64_t nkt, int splits)
{
    int64_t per = tiles_per_split(nkt, splits);
    return (int)((nkt + per - 1) / per);
}

/* The PTX instructions a thread issues a k tile (its loads with their
 * prologues, the stage stores, the fragments, the products, the loop) at
 * tile [i][j], bm = (128, 64)[i], bn = (128, 64)[j], by op and body (B
 * through a halo or the weight gradient's stage, or direct): the mean over
 * the kernels of img512-s's training step at batch 128, fp16, each tile
 * forced (EDMC_MMA_TILE; scripts/ptx-loops.py); and whether 128×128 tiles
 * are chosen: not where most kernels spill there at 128 registers (ptxas:
 * every 1×1 forward convolution, 37 of 37 weight gradients through the
 * stage, 3 of 20 direct ones, 14 of 27 matmuls; 1 of 25 direct
 * backward-data passes, no halo convolution).  Other ops (none on tensor
 * cores now) take the matmul's row. */
typedef struct {
    edm_op op;
    int halo;
    double insts[2][2];
    int square128;
} k_tile_cost;

static const k_tile_cost K_TILE_COSTS[] = {
    {EDM_OP_CONV2D, 1, {{250.8, 209.9}, {219.8, 175.7}}, 1},
    {EDM_OP_CONV2D, 0, {{393.7, 266.2}, {327.3, 201.1}}, 0},
    {EDM_OP_CONV2D_BWD_DATA, 1, {{215.2, 180.8}, {181.4, 150.0}}, 1},
    {EDM_OP_CONV2D_BWD_DATA, 0, {{560.6, 383.4}, {491.0, 298.8}}, 1},
    {EDM_OP_CONV2D_BWD_WEIGHT, 1, {{564.8, 414.5}, {535.0, 328.3}}, 0},
    {EDM_OP_CONV2D_BWD_WEIGHT, 0, {{508.8, 370.2}, {418.9, 255.7}}, 0},
    {EDM_OP_MATMUL, 0, {{592.0, 445.4}, {442.3, 289.2}}, 0},
};

static const k_tile_cost *k_tile_cost_of(edm_op op, int halo)
{
    size_t n = sizeof K_TILE_COSTS / sizeof K_TILE_COSTS[0];
    for (size_t i = 0; i < n; i++)
        if (K_TILE_COSTS[i].op == op && K_TILE_COSTS[i].halo == halo)
            return &K_TILE_COSTS[i];
    return &K_TILE_COSTS[n - 1];
}

int edm_mma_reads_halo(edm_mma_tile t, const edm_mma_halo *halo)
{
    return halo && (halo->wgrad ? edm_mma_wgrad_fits(t, halo) : edm_mma_halo_fits(t, halo));
}

edm_mma_tile edm_mma_choose_splits(edm_op op, const edm_mma_halo *halo, unsigned model, int64_t gm, int64_t gn,
                                   int64_t gk, int64_t gb, edm_mma_tile fixed)
{
    /* per SM and clock: 1024 f16 multiply-adds of the tensor cores (H100
     * dense), four warp instructions issued (one a scheduler), and about 32
     * operands or partial sums through L2; a block's time below is as if it
     * had the SM alone, so a wave of two blocks an SM takes twice it, and a
     * cost is in units of half that */
    const double sms = 132, macs_per_clock = 1024, issue_per_clock = 4, loads_per_clock = 32;
    const double warps = EDM_MMA_THREADS / 32.0;
    const int by_issue = (model & EDM_MMA_BY_ISSUE) != 0, both_fixed = fixed.bm && fixed.bn;
    static const int sizes[] = {128, 64};
    edm_mma_tile best = {fixed.bm ? fixed.bm : 64, fixed.bn ? fixed.bn : 64, 1, both_fixed && fixed.one_block};
    double best_cost = -1;
    int64_t nkt = (gk + EDM_MMA_BK - 1) / EDM_MMA_BK;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int one = 0; one < 2; one++)
                for (int want = 1; want <= 32; want *= 2) {
                    if ((fixed.bm && sizes[i] != fixed.bm) || (fixed.bn && sizes[j] != fixed.bn))
                        break;
                    if (want > 1 && (gb != 1 || nkt / want < 8))
                        break;
                    const int square = i == 0 && j == 0;
                    if (both_fixed ? one != fixed.one_block
                                   : one && !(square && by_issue && (model & EDM_MMA_ONE_BLOCK) != 0))
                        break;
                    int splits = used_splits(nkt, want);
                    double bm = sizes[i], bn = sizes[j], kk = (double)tiles_per_split(nkt, splits) * EDM_MMA_BK;
                    double resident = one ? 1 : 2;
                    double tiles = ceil_div((double)gm, bm) * ceil_div((double)gn, bn), slots = sms * resident;
                    if (splits > 1 && tiles >= slots) /* the tiles fill the GPU already */
                        break;
                    if (splits > 1 && tiles * splits * bm * bn * (double)sizeof(float) > EDM_MMA_SPLITK_BYTES)
                        break; /* the partial tiles would take more memory than they save time */
                    const edm_mma_tile cand = {sizes[i], sizes[j], splits, one};
                    const k_tile_cost *kc = k_tile_cost_of(op, edm_mma_reads_halo(cand, halo));
                    /* 128x128 spills at two blocks an SM where the table says so; one alone needs no such tile */
                    if (by_issue && square && !one && !kc->square128 && !both_fixed)
                        continue;
                    if (one && kc->square128 && !both_fixed) /* two blocks fit it: the model has no reason for one */
                        continue;
                    double waves = ceil_div(tiles * (double)gb * splits, slots);
                    double t_mma = bm * bn * kk / macs_per_clock, t_load = (bm + bn) * kk / loads_per_clock;
                    double t_issue = by_issue ? warps * kc->insts[i][j] * (kk / EDM_MMA_BK) / issue_per_clock : 0;
                    /* split-K: every block writes its partial tile, the last of each tile reads them all */
                    double t_part = splits > 1 ? bm * bn / loads_per_clock : 0;
                    double t_reduce = splits > 1 ? ceil_div(tiles, slots) * splits * bm * bn / loads_per_clock : 0;
                    double t_block = t_mma > t_load ? t_mma : t_load;
                    if (t_issue > t_block)
                        t_block = t_issue;
                    double cost = waves * (t_block + t_part) * resident / 2 + t_reduce;
                    if (best_cost < 0 || cost < best_cost) { /* ties keep the larger tile, fewer splits, two blocks */
                        best_cost = cost;
                        best = cand;
                    }
                }
    return best;
}

edm_mma_tile edm_mma_choose_tile(edm_op op, const edm_mma_halo *halo, unsigned model, int64_t gm, int64_t gn,
                                 int64_t gk, int64_t gb)
{
    return edm_mma_choose_splits(op, halo, model, gm, gn, gk, gb, (edm_mma_tile){0});
}

int edm_mma_fit_tile(edm_mma_tile *t, int64_t gk, int64_t gb)
{
    if ((t->bm != 64 && t->bm != 128) || (t->bn != 64 && t->bn != 128) || t->splits < 1 || t->splits > 1024)
        return -1;
    int64_t nkt = (gk + EDM_MMA_BK - 1) / EDM_MMA_BK;
    if (gb != 1 || nkt < 2)
        t->splits = 1;
    else if (t->splits > nkt)
        t->splits = (int)nkt;
    t->splits = used_splits(nkt, t->splits);
    return 0;
}

int edm_mma_parse_tile(const char *s, edm_mma_tile *t)
{
    int bm = 0, bn = 0, splits = 1, used = 0;
    if (sscanf(s, "%dx%d%n", &bm, &bn, &used) != 2)
        return -1;
    if (s[used] == '/') {
        int more = 0;
        if (sscanf(s + used + 1, "%d%n", &splits, &more) != 1)
            return -1;
        used += 1 + more;
    }
    int one_block = 0;
    if (s[used] == '@') {
        if (strcmp(s + used + 1, "1") != 0 && strcmp(s + used + 1, "2") != 0)
            return -1;
        one_block = s[used + 1] == '1';
        used += 2;
    }
    if (s[used] != '\0')
        return -1;
    *t = (edm_mma_tile){bm, bn, splits, one_block};
    return edm_mma_fit_tile(t, 1 << 20, 1);
}

void edm_mma_format_tile(char *buf, size_t size, edm_mma_tile t)
{
    snprintf(buf, size, "%dx%d/%d%s", t.bm, t.bn, t.splits, t.one_block ? "@1" : "");
}

void edm_mma_workspace(edm_mma_tile t, int64_t gm, int64_t gn, int64_t *floats, int64_t *counts)
{
    int64_t tiles = ((gm + t.bm - 1) / t.bm) * ((gn + t.bn - 1) / t.bn);
    *floats = t.splits > 1 ? tiles * t.splits * t.bm * t.bn : 0;
    *counts = t.splits > 1 ? tiles : 0;
}

/* A halo's columns (the image's and the taps' reach) and its pixel rows, a
 * stage's rows of PITCH words (16 k pairs and the padding that keeps an
 * ldmatrix's 8 rows, any 8 consecutive ones, on distinct banks). */
static int64_t halo_cols(const edm_mma_halo *h) { return h->w + h->k - 1; }
/* A tile's image rows in each of its samples (BN whole rows of one sample,
 * or whole samples), and a sample's rows of the stage. */
static int64_t tile_image_rows(edm_mma_tile t, const edm_mma_halo *h)
{
    return t.bn / h->w < h->h ? t.bn / h->w : h->h;
}
static int64_t halo_sample_rows(edm_mma_tile t, const edm_mma_halo *h)
{
    return (tile_image_rows(t, h) + h->k - 1) * halo_cols(h);
}
static int64_t halo_rows(edm_mma_tile t, const edm_mma_halo *h)
{
    return t.bn / (tile_image_rows(t, h) * h->w) * halo_sample_rows(t, h);
}

unsigned edm_mma_halo_bytes(edm_mma_tile t, const edm_mma_halo *h)
{
    return (unsigned)(2 * halo_rows(t, h) * PITCH * 4);
}

int edm_mma_halo_fits(edm_mma_tile t, const edm_mma_halo *h)
{
    if (!h || h->k < 3 || h->k % 2 == 0 || h->w < 1 || h->h < 1 || t.splits > 1 || t.bn % h->w != 0 ||
        ((h->h * h->w) % t.bn != 0 && t.bn % (h->h * h->w) != 0) || (h->n * h->h * h->w) % t.bn != 0)
        return 0;
    const int64_t words = 2 * halo_rows(t, h) * PITCH; /* two stages; the epilogue stages its rows there too */
    return 4 * (2 * (int64_t)t.bm * PITCH + words) <= EDM_MMA_HALO_SHARED && 32 * (int64_t)(t.bn + STAGE_PAD) <= words;
}

/* The weight gradient's stage (edm_mma_wgrad_fits): a k tile's pixels a row
 * (32, or the image's width), its rows, the stage's rows and columns (the
 * taps' reach), the channels a block's columns touch, and its elements. */
static int64_t wgrad_tile_cols(const edm_mma_halo *h) { return h->w >= EDM_MMA_BK ? EDM_MMA_BK : h->w; }
static int64_t wgrad_rows(const edm_mma_halo *h) { return EDM_MMA_BK / wgrad_tile_cols(h) + h->k - 1; }
static int64_t wgrad_cols(const edm_mma_halo *h) { return wgrad_tile_cols(h) + h->k - 1; }
static int64_t wgrad_channels(edm_mma_tile t, const edm_mma_halo *h)
{
    return (t.bn - 1) / ((int64_t)h->k * h->k) + 2;
}
static int64_t wgrad_elems(edm_mma_tile t, const edm_mma_halo *h)
{
    return (wgrad_channels(t, h) * wgrad_rows(h) * wgrad_cols(h) + 1) / 2 * 2;
}

int edm_mma_wgrad_fits(edm_mma_tile t, const edm_mma_halo *h)
{
    if (!h || !h->wgrad || h->k < 3 || h->k % 2 == 0 || h->c < 1 || h->h < 1 || h->w < 2)
        return 0;
    /* a k tile's 32 pixels within one sample, its pairs within one row */
    if (h->w % EDM_MMA_BK != 0 && (EDM_MMA_BK % h->w != 0 || (h->h * h->w) % EDM_MMA_BK != 0))
        return 0;
    /* A's and B's stages and the stage of x, static: within the 48 KiB a block may declare */
    return (int64_t)8 * (t.bm + t.bn) * PITCH + 2 * wgrad_elems(t, h) <= (int64_t)48 * 1024;
}

void edm_mma_emit_shared(sbuf *b, edm_mma_tile t, const edm_mma_halo *halo)
{
    sb_printf(b, "    __shared__ __align__(16) unsigned As_[2][%d][%d];\n", t.bm, PITCH);
    /* a halo's stages in the dynamic shared memory (edm_mma_halo_bytes: past the static 48 KiB where they must) */
    if (halo && !halo->wgrad)
        sb_printf(b, "    unsigned (*const Hs_)[%lld][%d] = reinterpret_cast<unsigned (*)[%lld][%d]>(edm_halo_sh);\n",
                  (long long)halo_rows(t, halo), PITCH, (long long)halo_rows(t, halo), PITCH);
    else
        sb_printf(b, "    __shared__ __align__(16) unsigned Bs_[2][%d][%d];\n", t.bn, PITCH);
    if (halo && halo->wgrad) /* the weight gradient's stage of x, beside B's */
        sb_printf(b, "    __shared__ __align__(16) unsigned short Ws_[%lld];\n", (long long)wgrad_elems(t, halo));
    if (t.splits > 1)
        sb_puts(b, "    __shared__ int last_;\n");
}

/* The loop that reads a thread's elements of one operand's k tile into
 * registers r[e], each a pair of k-neighbours packed: `rows` rows (A's m,
 * B's n) of 16 pairs.  k-major, the 16 lanes of a half-warp take one row's
 * 16 pairs, a thread's pair the same in all its elements (whatever hangs on
 * k, a convolution's pixel in the weight gradient, is computed once);
 * row-major, consecutive threads take consecutive rows, a thread's row the
 * same in all its elements (a convolution's pixel, in the forward and
 * backward-data passes).  The accessor's arguments: args for k and args1
 * for k + 1 (naming the row and k as the body declares them); pairs (k-major,
 * no k bounds): both at once through KNAME_<acc>2(args), packed. */
static void emit_load_loop(sbuf *b, char reg, int rows, int k_major, int pairs, const char *row, const char *row0,
                           const char *kname, const char *rtest, const char *klo, const char *khi, const char *acc,
                           const char *args, const char *args1, const char *ty)
{
    if (k_major)
        sb_printf(b,
                  "                for (int e = 0; e < %d; e++) {\n"
                  "                    const int %s%s = threadIdx.x / 16 + 16 * e, kp = threadIdx.x %% 16;\n",
                  rows / 16, row, row);
    else
        sb_printf(b,
                  "                for (int e = 0; e < %d; e++) {\n"
                  "                    const int %s%s = threadIdx.x %% %d, kp = threadIdx.x / %d + %d * e;\n",
                  rows / 16, row, row, rows, rows, EDM_MMA_THREADS / rows);
    sb_printf(b, "                    const edm_ix %s = %s + %s%s, %s + 2 * kp;\n", row, row0, row, row, kname);
    if (pairs)
        sb_printf(b,
                  "                    unsigned v = 0u;\n"
                  "                    %sv = KNAME_%s2(a, b, z, %s);\n"
                  "                    r%c[e] = v;\n"
                  "                }\n",
                  rtest, acc, args, reg);
    else
        sb_printf(b,
                  "                    float lo = 0.0f, hi = 0.0f;\n"
                  "                    %s{\n"
                  "                        %slo = KNAME_%s(a, b, z, %s);\n"
                  "                        %shi = KNAME_%s(a, b, z, %s);\n"
                  "                    }\n"
                  "                    r%c[e] = edm_mma_pack_%s(lo, hi);\n"
                  "                }\n",
                  rtest, klo, acc, args, khi, acc, args1, reg, ty);
}

/* A_ASYNC: A's k tile copied into stage `stage` of As_ by cp.async, 16 bytes
 * (four pairs of one row) a copy: four threads a row, `rows` rows; rows past
 * gm (check_m) zero-filled.  Its "store" is the wait (emit_a_store). */
static void emit_async_a_loop(sbuf *b, int rows, int64_t gm, int check_m, const char *stage)
{
    char ok[64] = "1";
    if (check_m)
        snprintf(ok, sizeof ok, "m < %lld_ix", (long long)gm);
    sb_printf(b,
              "                for (int e = 0; e < %d; e++) {\n"
              "                    const int mm = threadIdx.x / 4 + 64 * e, kp = threadIdx.x %% 4 * 4;\n"
              "                    const edm_ix m = m0 + mm, kr = kr_ + 2 * kp;\n"
              "                    const int ok = %s;\n"
              "                    edm_cp_async16((unsigned)__cvta_generic_to_shared(&As_[%s][mm][kp]),\n"
              "                                   KNAME_A8(a, b, z, ok ? m : m0, kq_, kr), ok);\n"
              "                }\n",
              rows / 64, ok, stage);
}

/* A_WIDE: A's k tile read eight k a load, into registers ra: four threads a
 * row (its 32 k), `rows` rows; rows past gm (rtest) zeros. */
static void emit_wide_a_loop(sbuf *b, int rows, const char *rtest)
{
    sb_printf(b,
              "                for (int e = 0; e < %d; e++) {\n"
              "                    const int mm = threadIdx.x / 4 + 64 * e, kp = threadIdx.x %% 4 * 4;\n"
              "                    const edm_ix m = m0 + mm, k = k0 + 2 * kp;\n",
              rows / 64);
    if (rtest[0])
        sb_printf(b,
                  "                    for (int j = 0; j < 4; j++)\n"
                  "                        ra[4 * e + j] = 0u;\n"
                  "                    %sKNAME_A8v(a, b, z, m, k, &ra[4 * e]);\n"
                  "                }\n",
                  rtest);
    else
        sb_puts(b, "                    KNAME_A8v(a, b, z, m, k, &ra[4 * e]);\n"
                   "                }\n");
}

/* The store of those registers into stage s of the operand's shared tile
 * (rows × 16 words, a row's pairs side by side), in the loop's order. */
static void emit_store_loop(sbuf *b, const char *tile, char reg, int rows, int k_major)
{
    sb_printf(b,
              "                for (int e = 0; e < %d; e++) {\n"
              "                    const int q = threadIdx.x + 256 * e;\n",
              rows / 16);
    if (k_major)
        sb_printf(b, "                    %s[s][q / 16][q %% 16] = r%c[e];\n", tile, reg);
    else
        sb_printf(b, "                    %s[s][q %% %d][q / %d] = r%c[e];\n", tile, rows, rows, reg);
    sb_puts(b, "                }\n");
}

/* A's k tile into stage s of As_ (the loop's registers, emit_store_loop), or,
 * copied by cp.async, this thread's wait for its copies: either way before
 * the barrier that shows the stage to the block. */
static void emit_a_store(sbuf *b, int a_async, int rows, int k_major)
{
    if (a_async)
        sb_puts(b, "                edm_cp_async_wait();\n");
    else
        emit_store_loop(b, "As_", 'a', rows, k_major);
}

/* A_WIDE's store: each thread's four words of a row in one 16-byte store. */
static void emit_wide_a_store(sbuf *b, int rows)
{
    sb_printf(b,
              "                for (int e = 0; e < %d; e++)\n"
              "                    edm_st_words4(&As_[s][threadIdx.x / 4 + 64 * e][threadIdx.x %% 4 * 4], &ra[4 * e]);\n",
              rows / 64);
}

/* A k tile's products from A's stage s (and B's fragments, which the caller
 * reads between the two): the loop over its two k steps, each warp's A
 * fragments, then the mma of every fragment pair. */
static void emit_ks_head(sbuf *b, edm_mma_tile t)
{
    const int mt = t.bm / 32, nt = t.bn / 32;
    sb_printf(b,
              "                for (int ks = 0; ks < 2; ks++) {\n"
              "                    unsigned fa[%d][4], fb[%d][2];\n"
              "                    for (int i = 0; i < %d; i++)\n"
              "                        edm_frag_a(fa[i], &As_[s][wm_ * %d + i * 16][ks * 8], %d, lane_,\n"
              "                                   lda_ + 4u * (unsigned)((s * %d + i * 16) * %d + ks * 8));\n",
              mt, nt, mt, t.bm / 2, PITCH, t.bm, PITCH);
}

static void emit_ks_mma(sbuf *b, edm_mma_tile t, const char *ty)
{
    sb_printf(b,
              "                    for (int i = 0; i < %d; i++)\n"
              "                        for (int j = 0; j < %d; j++)\n"
              "                            edm_mma_%s(acc[i][j], fa[i], fb[j]);\n"
              "                }\n",
              t.bm / 32, t.bn / 32, ty);
}

/* The end of a block without split-K: its tile of C leaves through shared
 * memory (`stage`, a word array free after the last barrier, room for 32
 * rows of BN + STAGE_PAD words), 32 rows at a time: the fragments go in as
 * they lie, then every thread takes consecutive columns, so that a warp's
 * stores (and the epilogue's loads) are 32 neighbouring elements of one row,
 * and the epilogue is one copy in the code, not one a fragment element.
 * Closes the z loop (or block) and the kernel. */
static void emit_tile_out(sbuf *b, edm_mma_tile t, int64_t gm, int64_t gn, const char *stage)
{
    const int mt = t.bm / 32, nt = t.bn / 32, wtm = t.bm / 2, wtn = t.bn / 4;
    char cm[64] = "", cn[64] = "";
    if (gm % t.bm != 0)
        snprintf(cm, sizeof cm, "m < %lld_ix", (long long)gm);
    if (gn % t.bn != 0)
        snprintf(cn, sizeof cn, "n < %lld_ix", (long long)gn);
    const int pitch = t.bn + STAGE_PAD;
    char hskip[64] = ""; /* the chunks past the last row are not staged */
    if (gm % t.bm != 0)
        snprintf(hskip, sizeof hskip, " && m0 + 32 * h < %lld_ix", (long long)gm);
    sb_printf(b,
              "        unsigned *const cs_ = %s;\n"
              "#pragma unroll 1\n"
              "        for (int h = 0; h < %d%s; h++) {\n"
              "            for (int i = 0; i < %d; i++) {\n"
              "                const int r = wm_ * %d + i * 16 + g_ - 32 * h;\n"
              "                if (r >= 0 && r < 32)\n"
              "                    for (int j = 0; j < %d; j++) {\n"
              "                        const int c = wn_ * %d + j * 8 + 2 * t4_;\n"
              "                        cs_[r * %d + c] = __float_as_uint(acc[i][j][0]);\n"
              "                        cs_[r * %d + c + 1] = __float_as_uint(acc[i][j][1]);\n"
              "                        cs_[(r + 8) * %d + c] = __float_as_uint(acc[i][j][2]);\n"
              "                        cs_[(r + 8) * %d + c + 1] = __float_as_uint(acc[i][j][3]);\n"
              "                    }\n"
              "            }\n"
              "            __syncthreads();\n"
              "#pragma unroll %d\n"
              "            for (int e = threadIdx.x; e < %d; e += 256) {\n"
              "                const int r = e / %d, c = e %% %d;\n"
              "                const edm_ix m = m0 + 32 * h + r, n = n0 + c;\n"
              "                %s%s%s%s%sKNAME_C(y, z, m, n, __uint_as_float(cs_[r * %d + c]));\n"
              "            }\n"
              "            __syncthreads();\n"
              "        }\n"
              "    }\n}\n",
              stage, t.bm / 32, hskip, mt, wtm, nt, wtn, pitch, pitch, pitch, pitch, STAGE_UNROLL, 32 * t.bn, t.bn,
              t.bn, cm[0] || cn[0] ? "if (" : "", cm, cm[0] && cn[0] ? " && " : "", cn, cm[0] || cn[0] ? ") " : "",
              pitch);
}

/* The halo body's loop over this thread's share of the next channel block
 * (if there is one) at tap tap_: its rows e, their pairs p = tap_ + ktaps·j. */
static void emit_next_pairs(sbuf *b, long long nblocks, long long mine, long long pairs, long long kt)
{
    sb_printf(b,
              "                if (cb_ + 1 < %lld_ix)\n"
              "                    for (int e = 0; e < %lld; e++)\n"
              "                        for (int j = 0; j < %lld; j++) {\n"
              "                            const int p = tap_ + %lld * j;\n",
              nblocks, mine, pairs, kt);
}

/* The halo body's k loops (edm_mma_halo), inside the block's z scope: over
 * the channel blocks, and in each over its taps, one k tile each; A's tiles
 * through two stages as in the direct body, B from the channel block's halo
 * stage at the tap's offset (flipped: the mirrored tap's).  A thread owns
 * pixel rows tid, tid + 256, ... of the stage (their coordinates and bounds
 * computed once), so that neighbouring threads read neighbouring pixels of
 * one channel; beside each k tile's products it reads the next channel
 * block's pairs tap, tap + ktaps, ... of its rows into the other stage. */
static void emit_halo_body(sbuf *b, edm_mma_tile t, edm_dtype type, int64_t gm, int64_t gk, int64_t ktaps,
                           unsigned order, const edm_mma_halo *h)
{
    const char *ty = type == EDM_BF16 ? "bf16" : "f16";
    const int mt = t.bm / 32, nt = t.bn / 32, wtn = t.bn / 4, k = h->k;
    const long long nblocks = (gk + EDM_MMA_BK - 1) / EDM_MMA_BK / ktaps, kt = (long long)ktaps;
    const long long rows = (long long)halo_rows(t, h), cols = (long long)halo_cols(h);
    const long long srows = (long long)halo_sample_rows(t, h);
    const long long tpx = (long long)tile_image_rows(t, h) * (long long)h->w; /* a sample's pixels in the tile */
    const long long mine = (rows + EDM_MMA_THREADS - 1) / EDM_MMA_THREADS, pairs = (16 + kt - 1) / kt;
    const long long w = (long long)h->w, hw = (long long)h->h * (long long)h->w, pad = (h->k - 1) / 2;
    char mtest[64] = "";
    if (gm % t.bm != 0)
        snprintf(mtest, sizeof mtest, "if (m < %lld_ix) ", (long long)gm);
    const int a_pairs = (order & EDM_MMA_A_PAIRS) != 0, a_k_major = !(order & EDM_MMA_A_ROWS);
    const int a_async = a_pairs && (order & EDM_MMA_A_ASYNC) != 0;
    sb_printf(b,
              "    {\n"
              "        const edm_ix z = 0;\n"
              "        float acc[%d][%d][4];\n"
              "        for (int i = 0; i < %d; i++)\n"
              "            for (int j = 0; j < %d; j++)\n"
              "                for (int r = 0; r < 4; r++)\n"
              "                    acc[i][j][r] = 0.0f;\n"
              "        unsigned ra[%d], rh_[%lld][%lld];\n"
              /* the tile's first sample and row (BN whole rows of one sample, or whole
               * samples); this thread's rows of the stage: their sample and pixel, and their
               * row (-1: none) */
              "        const edm_ix nb_ = n0 / %lld_ix, y0_ = n0 %% %lld_ix / %lld_ix;\n"
              "        edm_ix hn_[%lld], hy_[%lld], hx_[%lld];\n"
              "        int hr_[%lld];\n"
              "        for (int e = 0; e < %lld; e++) {\n"
              "            const int r = (int)threadIdx.x + %d * e, q = r %% %lld;\n"
              "            hn_[e] = nb_ + r / %lld;\n"
              "            hy_[e] = y0_ + q / %lld - %lld;\n"
              "            hx_[e] = q %% %lld - %lld;\n"
              "            hr_[e] = r < %lld ? r : -1;\n"
              "        }\n"
              /* each lane's rows of the stage at tap 0 for its B fragments: the address (bytes,
               * stage 0) of the one it gives ldmatrix, and its group's rows for the word-by-word
               * loads */
              "        const unsigned hsa_ = (unsigned)__cvta_generic_to_shared(&Hs_[0][0][0]);\n"
              /* the stage's row of the tile's pixel p at tap 0: its sample's rows, its row's, its column */
              "#define EDM_HALO_ROW(p) ((p) / %lld * %lld + (p) %% %lld / %lld * %lld + (p) %% %lld)\n"
              "        unsigned hl_[%d];\n"
              "        int hg0_[%d], hg1_[%d];\n"
              "        for (int jp = 0; jp < %d; jp++) {\n"
              "            const int pl = wn_ * %d + jp * 16 + lane_ %% 8 + lane_ / 16 * 8, p0 = wn_ * %d + jp * 16 + g_;\n"
              "            hl_[jp] = edm_opaque_u32(hsa_ + 4u * (unsigned)(EDM_HALO_ROW(pl) * %d + lane_ / 8 %% 2 * 4));\n"
              "            hg0_[jp] = EDM_HALO_ROW(p0);\n"
              "            hg1_[jp] = EDM_HALO_ROW(p0 + 8);\n"
              "        }\n"
              "#undef EDM_HALO_ROW\n"
              /* channel block 0's halo, whole, and A's first k tile */
              "        for (int e = 0; e < %lld; e++)\n"
              "            if (hr_[e] >= 0)\n"
              "                for (int p = 0; p < 16; p++)\n"
              "                    Hs_[0][hr_[e]][p] = edm_mma_pack_%s(KNAME_H(a, b, z, hn_[e], 2 * p, hy_[e], hx_[e]),\n"
              "                                                     KNAME_H(a, b, z, hn_[e], 2 * p + 1, hy_[e], hx_[e]));\n"
              "        {\n"
              "            const edm_ix kq_ = 0, kr_ = 0;\n",
              mt, nt, mt, nt, t.bm / 16, mine, pairs, hw, hw, w, mine, mine, mine, mine, mine, EDM_MMA_THREADS, srows,
              srows, cols, pad, cols, pad, rows, tpx, srows, tpx, w, cols, w, nt / 2, nt / 2, nt / 2, nt / 2, wtn, wtn,
              PITCH, mine, ty);
    if (a_async) {
        emit_async_a_loop(b, t.bm, gm, mtest[0] != 0, "0");
    } else {
        emit_load_loop(b, 'a', t.bm, a_k_major, a_pairs, "m", "m0", "kr = kr_", mtest, "", "", "A", "m, kq_, kr",
                       "m, kq_, kr + 1", ty);
        sb_puts(b, "            const int s = 0;\n");
    }
    emit_a_store(b, a_async, t.bm, a_k_major);
    /* s: A's stage; to_: the tap's offset in the stage (rows); the next k tile's (kq_, kr_) */
    sb_printf(b,
              "        }\n"
              "        __syncthreads();\n"
              "        int s = 0;\n"
              "        for (edm_ix cb_ = 0; cb_ < %lld_ix; cb_++) {\n"
              "            const int hb = (int)(cb_ & 1);\n"
              "            int to_ = %lld, kx_ = 0;\n"
              "#pragma unroll 1\n"
              "            for (int tap_ = 0; tap_ < %lld; tap_++) {\n"
              "                const int last_tap = tap_ == %lld;\n"
              "                if (!last_tap || cb_ + 1 < %lld_ix) {\n"
              "                    const edm_ix kq_ = last_tap ? 0 : tap_ + 1, kr_ = (last_tap ? cb_ + 1 : cb_) * 32;\n",
              nblocks, h->flip ? (k - 1) * cols + k - 1 : 0LL, kt, kt - 1, nblocks);
    if (a_async) /* into the stage the products below do not read */
        emit_async_a_loop(b, t.bm, gm, mtest[0] != 0, "s ^ 1");
    else
        emit_load_loop(b, 'a', t.bm, a_k_major, a_pairs, "m", "m0", "kr = kr_", mtest, "", "", "A", "m, kq_, kr",
                       "m, kq_, kr + 1", ty);
    sb_puts(b, "                }\n");
    emit_next_pairs(b, nblocks, mine, pairs, kt);
    sb_printf(b,
              "                            const edm_ix c = (cb_ + 1) * 32 + 2 * p;\n"
              "                            rh_[e][j] = hr_[e] >= 0 && p < 16\n"
              "                                            ? edm_mma_pack_%s(KNAME_H(a, b, z, hn_[e], c, hy_[e], hx_[e]),\n"
              "                                                             KNAME_H(a, b, z, hn_[e], c + 1, hy_[e], hx_[e]))\n"
              "                                            : 0u;\n"
              "                        }\n",
              ty);
    emit_ks_head(b, t);
    sb_printf(b,
              "                    for (int j = 0; j < %d; j += 2)\n"
              "                        edm_frag_b2_halo(&fb[j], &Hs_[hb][0][0], %d,\n"
              "                                         hl_[j / 2] + 4u * (unsigned)((hb * %lld + to_) * %d + ks * 8),\n"
              "                                         hg0_[j / 2] + to_, hg1_[j / 2] + to_, ks, lane_);\n",
              nt, PITCH, rows, PITCH);
    emit_ks_mma(b, t, ty);
    sb_printf(b,
              "                s ^= 1;\n"
              "                if (!last_tap || cb_ + 1 < %lld_ix) {\n",
              nblocks);
    emit_a_store(b, a_async, t.bm, a_k_major);
    sb_puts(b, "                }\n");
    emit_next_pairs(b, nblocks, mine, pairs, kt);
    sb_printf(b,
              "                            if (hr_[e] >= 0 && p < 16)\n"
              "                                Hs_[hb ^ 1][hr_[e]][p] = rh_[e][j];\n"
              "                        }\n"
              /* the next tap: one column on, or the next row's first (flipped: back) */
              "                to_ %s= ++kx_ == %d ? %lld : 1;\n"
              "                kx_ = kx_ == %d ? 0 : kx_;\n"
              "                __syncthreads();\n"
              "            }\n"
              "        }\n",
              h->flip ? "-" : "+", k, cols - k + 1, k);
}

/* The weight gradient's stage (edm_mma_wgrad_fits), before the k loop: the
 * block's first channel; this thread's elements of the stage (channel, or −1:
 * none, and row and column offsets from the tile's first pixel); the stage
 * offsets of its B columns' (channel, tap) (−1: past gn) and of its pair's
 * pixel (k-major: pair tid % 16 of every tile). */
static void emit_wgrad_offsets(sbuf *b, edm_mma_tile t, int64_t gn, const edm_mma_halo *h)
{
    const long long kk = (long long)h->k * h->k, rows = (long long)wgrad_rows(h), cols = (long long)wgrad_cols(h);
    const long long tw = (long long)wgrad_tile_cols(h), elems = (long long)wgrad_elems(t, h), pad = (h->k - 1) / 2;
    const long long mine = (elems + EDM_MMA_THREADS - 1) / EDM_MMA_THREADS;
    sb_printf(b,
              "        const edm_ix wc0_ = n0 / %lld_ix;\n"
              "        edm_ix wc_[%lld];\n"
              "        int wy_[%lld], wx_[%lld];\n"
              "        for (int j = 0; j < %lld; j++) {\n"
              "            const int i = (int)threadIdx.x + %d * j, q = i %% %lld;\n"
              "            wc_[j] = i < %lld && wc0_ + i / %lld < %lld_ix ? wc0_ + i / %lld : -1;\n"
              "            wy_[j] = q / %lld - %lld;\n"
              "            wx_[j] = q %% %lld - %lld;\n"
              "        }\n"
              "        int wo_[%d];\n"
              "        for (int e = 0; e < %d; e++) {\n"
              "            const edm_ix n = n0 + threadIdx.x / 16 + 16 * e, r = n %% %lld_ix;\n"
              "            wo_[e] = n < %lld_ix ? (int)((n / %lld_ix - wc0_) * %lld + r / %d * %lld + r %% %d) : -1;\n"
              "        }\n"
              "        const int wk_ = (int)(threadIdx.x %% 16 * 2 / %lld * %lld + threadIdx.x %% 16 * 2 %% %lld);\n",
              kk, mine, mine, mine, mine, EDM_MMA_THREADS, rows * cols, elems, rows * cols, (long long)h->c,
              rows * cols, cols, pad, cols, pad, t.bn / 16, t.bn / 16, kk, (long long)gn, kk, rows * cols, h->k, cols,
              h->k, tw, cols, tw);
}

/* The weight gradient's stage of k tile k0 (its pixels: sample, first row and
 * column), filled by this thread's elements, rounded to the product's type. */
static void emit_wgrad_fill(sbuf *b, edm_mma_tile t, edm_dtype type, const edm_mma_halo *h)
{
    const long long hw = (long long)h->h * h->w, w = (long long)h->w;
    const long long mine = (wgrad_elems(t, h) + EDM_MMA_THREADS - 1) / EDM_MMA_THREADS;
    sb_printf(b,
              "                {\n"
              "                    const edm_ix nb = k0 / %lld_ix, y0 = k0 %% %lld_ix / %lld_ix, x0 = k0 %% %lld_ix;\n"
              "                    for (int j = 0; j < %lld; j++)\n"
              "                        if (wc_[j] >= 0)\n"
              "                            Ws_[threadIdx.x + %d * j] =\n"
              "                                edm_cvt_rn_%s_f32(KNAME_H(a, b, z, nb, wc_[j], y0 + wy_[j], x0 + wx_[j]));\n"
              "                }\n",
              hw, hw, w, w, mine, EDM_MMA_THREADS, type == EDM_BF16 ? "bf16" : "f16");
}

void edm_mma_emit_body(sbuf *b, edm_mma_tile t, edm_dtype type, int64_t gm, int64_t gn, int64_t gk, int64_t gb,
                       int64_t ktaps, unsigned order, const edm_mma_halo *halo)
{
    const char *ty = type == EDM_BF16 ? "bf16" : "f16";
    const int mt = t.bm / 32, nt = t.bn / 32, wtm = t.bm / 2, wtn = t.bn / 4, area = t.bm * t.bn;
    const long long nkt = (gk + EDM_MMA_BK - 1) / EDM_MMA_BK;
    const int split = t.splits > 1 && gb == 1;
    sb_printf(b,
              "    const int lane_ = threadIdx.x %% 32, warp_ = threadIdx.x / 32;\n"
              "    const int wm_ = warp_ / 4, wn_ = warp_ %% 4, g_ = lane_ / 4, t4_ = lane_ %% 4;\n"
              /* the shared-memory address (bytes) of the row this lane gives ldmatrix in the
               * warp's first fragment of stage 0 */
              "    const unsigned lda_ = edm_opaque_u32((unsigned)__cvta_generic_to_shared(&As_[0][0][0]) +\n"
              "                                         4u * (unsigned)(wm_ * %d + edm_ldsm_a_offset(lane_, %d)));\n",
              wtm * PITCH, PITCH);
    if (!halo || halo->wgrad)
        sb_printf(b,
                  "    const unsigned ldb_ = edm_opaque_u32((unsigned)__cvta_generic_to_shared(&Bs_[0][0][0]) +\n"
                  "                                         4u * (unsigned)(wn_ * %d + edm_ldsm_b_offset(lane_, %d)));\n",
                  wtn * PITCH, PITCH);
    sb_printf(b, "    const edm_ix m0 = (edm_ix)blockIdx.y * %d, n0 = (edm_ix)blockIdx.x * %d;\n", t.bm, t.bn);
    const edm_mma_halo *wgrad = halo && halo->wgrad ? halo : NULL;
    if (halo && !wgrad) {
        emit_halo_body(b, t, type, gm, gk, ktaps, order, halo);
        emit_tile_out(b, t, gm, gn, "&Hs_[0][0][0]");
        return;
    }
    if (split) { /* this block's k tiles: [kt0_, kt0_ + nk_) */
        long long per = (long long)tiles_per_split(nkt, t.splits);
        sb_printf(b,
                  "    const edm_ix kt0_ = (edm_ix)blockIdx.z * %lld_ix;\n"
                  "    const edm_ix nk_ = %lld_ix - kt0_ < %lld_ix ? %lld_ix - kt0_ : %lld_ix;\n"
                  "    {\n        const edm_ix z = 0;\n",
                  per, nkt, per, nkt, per);
    } else {
        sb_printf(b, "    const edm_ix kt0_ = 0, nk_ = %lld_ix;\n"
                     "    for (edm_ix z = blockIdx.z; z < %lld_ix; z += gridDim.z) {\n",
                  nkt, (long long)gb);
    }
    sb_printf(b,
              "        float acc[%d][%d][4];\n"
              "        for (int i = 0; i < %d; i++)\n"
              "            for (int j = 0; j < %d; j++)\n"
              "                for (int r = 0; r < 4; r++)\n"
              "                    acc[i][j][r] = 0.0f;\n"
              "        unsigned ra[%d], rb[%d];\n",
              mt, nt, mt, nt, t.bm / 16, t.bn / 16);
    if (wgrad)
        emit_wgrad_offsets(b, t, gn, wgrad);
    /* step it reads k tile kt0_ + it into registers, multiplies the previous
     * one from its stage, then stores the new one into the other */
    sb_puts(b, "        for (edm_ix it = 0; it <= nk_; it++) {\n"
               "            if (it < nk_) {\n"
               "                const edm_ix k0 = (kt0_ + it) * 32;\n");
    /* Each operand is read in the order its memory runs (`order`, cuda_gemm_mma.h): A
     * by default k-major (a thread's element e has row m0 + tid/16 + 16e and k
     * pair tid % 16), B row-major (column n0 + tid % bn, k pair tid/bn +
     * (256/bn)·e; 256 threads, bn divides 256), so that a warp's load is a
     * run of neighbouring elements.  No bounds test where the tiles divide
     * the rows, columns or k. */
    char mtest[64] = "", ntest[64] = "", kname[64], ka[64], kb[64], kb1[64], ka1[64], klo[64] = "", khi[64] = "";
    if (gm % t.bm != 0)
        snprintf(mtest, sizeof mtest, "if (m < %lld_ix) ", (long long)gm);
    if (gn % t.bn != 0)
        snprintf(ntest, sizeof ntest, "if (n < %lld_ix) ", (long long)gn);
    if (ktaps > 0) {
        /* k tile t = (channel block t / ktaps of 32 channels, tap t % ktaps):
         * one tap a tile, so the accessors' tap arithmetic is the tile's, and
         * the ktaps tiles of a channel block follow one another, reading the
         * same weights' lines and (shifted) activations' rows */
        sb_printf(b, "                const edm_ix t_ = kt0_ + it, kq_ = t_ %% %lld_ix, kr_ = t_ / %lld_ix * 32;\n",
                  (long long)ktaps, (long long)ktaps);
        snprintf(kname, sizeof kname, "kr = kr_");
        snprintf(ka, sizeof ka, "m, kq_, kr");
        snprintf(ka1, sizeof ka1, "m, kq_, kr + 1");
        snprintf(kb, sizeof kb, "kq_, kr, n");
        snprintf(kb1, sizeof kb1, "kq_, kr + 1, n");
    } else {
        snprintf(kname, sizeof kname, "k = k0");
        snprintf(ka, sizeof ka, "m, k");
        snprintf(ka1, sizeof ka1, "m, k + 1");
        snprintf(kb, sizeof kb, "k, n");
        snprintf(kb1, sizeof kb1, "k + 1, n");
        if (gk % EDM_MMA_BK != 0) {
            snprintf(klo, sizeof klo, "if (k < %lld_ix) ", (long long)gk);
            snprintf(khi, sizeof khi, "if (k + 1 < %lld_ix) ", (long long)gk);
        }
    }
    /* A_PAIRS: a thread's pair of A in one load (KNAME_A2); k-major, as A_ROWS is not set with it */
    const int a_pairs = (order & EDM_MMA_A_PAIRS) && ktaps > 0, a_async = a_pairs && (order & EDM_MMA_A_ASYNC);
    const int a_k_major = !(order & EDM_MMA_A_ROWS), b_k_major = (order & EDM_MMA_B_K) != 0;
    const int a_wide = (order & EDM_MMA_A_WIDE) && ktaps == 0 && a_k_major && !a_pairs && gk % EDM_MMA_BK == 0;
    if (a_async)
        emit_async_a_loop(b, t.bm, gm, mtest[0] != 0, "(int)(it & 1)");
    else if (a_wide)
        emit_wide_a_loop(b, t.bm, mtest);
    else
        emit_load_loop(b, 'a', t.bm, a_k_major, a_pairs, "m", "m0", kname, mtest, klo, khi, "A", ka, ka1, ty);
    if (wgrad)
        emit_wgrad_fill(b, t, type, wgrad);
    else
        emit_load_loop(b, 'b', t.bn, b_k_major, 0, "n", "n0", kname, ntest, klo, khi, "B", kb, kb1, ty);
    sb_puts(b, "            }\n");
    sb_puts(b, "            if (it > 0) {\n"
               "                const int s = (int)((it - 1) & 1);\n");
    emit_ks_head(b, t);
    sb_printf(b,
              "                    for (int j = 0; j < %d; j += 2)\n"
              "                        edm_frag_b2(&fb[j], &Bs_[s][wn_ * %d + j * 8][ks * 8], %d, lane_,\n"
              "                                    ldb_ + 4u * (unsigned)((s * %d + j * 8) * %d + ks * 8));\n",
              nt, wtn, PITCH, t.bn, PITCH);
    emit_ks_mma(b, t, ty);
    sb_puts(b, "            }\n");
    if (wgrad) /* the stage of x whole before its pairs are taken; A's and B's stage s free */
        sb_printf(b,
                  "            __syncthreads();\n"
                  "            if (it < nk_)\n"
                  "                for (int e = 0; e < %d; e++) {\n"
                  "                    const int o = wo_[e] + wk_;\n"
                  "                    rb[e] = wo_[e] < 0 ? 0u : (unsigned)Ws_[o] | (unsigned)Ws_[o + 1] << 16;\n"
                  "                }\n",
                  t.bn / 16);
    sb_puts(b, "            if (it < nk_) {\n"
               "                const int s = (int)(it & 1);\n");
    if (a_wide)
        emit_wide_a_store(b, t.bm);
    else
        emit_a_store(b, a_async, t.bm, a_k_major);
    emit_store_loop(b, "Bs_", 'b', t.bn, b_k_major);
    sb_puts(b, "            }\n"
               "            __syncthreads();\n"
               "        }\n");
    if (!split) {
        emit_tile_out(b, t, gm, gn, "&Bs_[0][0][0]");
        return;
    }
    /* split-K: the partial tile out, the last block of the tile sums them in split order */
    sb_printf(b,
              "        const edm_ix tile_ = (edm_ix)blockIdx.y * gridDim.x + blockIdx.x;\n"
              "        float *part_ = EDM_SPLITK_WS(seed) + (tile_ * %d + blockIdx.z) * %dLL;\n"
              "        for (int i = 0; i < %d; i++)\n"
              "            for (int j = 0; j < %d; j++) {\n"
              "                const int r = wm_ * %d + i * 16 + g_, c = wn_ * %d + j * 8 + 2 * t4_;\n"
              "                part_[r * %d + c] = acc[i][j][0];\n"
              "                part_[r * %d + c + 1] = acc[i][j][1];\n"
              "                part_[(r + 8) * %d + c] = acc[i][j][2];\n"
              "                part_[(r + 8) * %d + c + 1] = acc[i][j][3];\n"
              "            }\n"
              "        __threadfence();\n"
              "        __syncthreads();\n"
              "        if (threadIdx.x == 0)\n"
              "            last_ = atomicAdd(&EDM_SPLITK_COUNT(seed)[tile_], 1u) == %du;\n"
              "        __syncthreads();\n",
              t.splits, area, mt, nt, wtm, wtn, t.bn, t.bn, t.bn, t.bn, t.splits - 1);
    sb_printf(b,
              "        if (last_) {\n"
              "            __threadfence();\n"
              "            const volatile float *all_ = EDM_SPLITK_WS(seed) + (long long)tile_ * %lldLL;\n"
              "            for (int e = threadIdx.x; e < %d; e += 256) {\n"
              "                const edm_ix m = m0 + e / %d, n = n0 + e %% %d;\n"
              "                if (m < %lld_ix && n < %lld_ix) {\n"
              "                    float v = 0.0f;\n"
              "                    for (int s = 0; s < %d; s++)\n"
              "                        v += all_[s * %d + e];\n"
              "                    KNAME_C(y, z, m, n, v);\n"
              "                }\n"
              "            }\n"
              "            if (threadIdx.x == 0)\n"
              "                EDM_SPLITK_COUNT(seed)[tile_] = 0u; /* for the next launch */\n"
              "        }\n"
              "    }\n}\n",
              (long long)t.splits * area, area, t.bn, t.bn, (long long)gm, (long long)gn, t.splits, area);
}
