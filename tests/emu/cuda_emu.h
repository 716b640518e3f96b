/* The CUDA built-ins the generated kernels use, for compiling them on the
 * host as C++ (tests/emu: the emulating driver).  Included (g++ -include)
 * before the source codegen/cuda_codegen.c emits; the emulator appends a
 * table of the module's kernels (EDM_EMU_KERNEL) after it.
 *
 * Execution model: one block at a time; its threads are fibers on their own
 * stacks (a six-register switch on x86-64, ucontext elsewhere), switched at
 * __syncthreads: every thread runs up to
 * the barrier, then the next phase starts.  The order in which a phase runs
 * the threads changes with the phase and the block: thread order, reverse
 * order, a pseudo-random permutation (fixed seed), so a missing barrier or a
 * race reads data not yet written in some block, whichever direction the
 * code happens to tolerate.  A kernel whose text has no
 * __syncthreads runs its threads as plain calls (no fibers); a barrier
 * reached there is an error, not a silent pass.  __shared__ variables are
 * static locals: one copy, reused block after block (shared memory is not
 * preserved between blocks on a GPU either).
 *
 * Not thread-safe: the driver runs one launch at a time (under its lock). */
#ifndef EDMC_CUDA_EMU_H
#define EDMC_CUDA_EMU_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>
#include <utility>

using std::isinf;
using std::isnan;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __noinline__ __attribute__((noinline))
/* dynamic shared memory (the fused plan's group kernels, a convolution's
 * halo stages): one static block, as __shared__ above, 16-byte aligned;
 * 227 KiB, the most a kernel may raise its limit to (the fake driver checks
 * each launch's size against the limit set) */
#define EDM_DYNAMIC_SHARED(T, name) static __attribute__((aligned(16))) T name[227 * 1024 / sizeof(T)]

struct edm_emu_dim3 {
    unsigned x, y, z;
};
typedef edm_emu_dim3 uint3;
typedef edm_emu_dim3 dim3;

/* ------------------------------------------------------------------ the state of the running block */

enum { EDM_EMU_MAX_THREADS = 1024, EDM_EMU_STACK = 64 * 1024 };

#if defined(__x86_64__)
/* Saves the callee-saved registers on this stack, stores the stack pointer
 * in *save and continues on the stack `to` (no signal mask: no system call). */
extern "C" void edm_emu_switch(void **save, void *to) __attribute__((visibility("hidden")));
__asm__(".text\n"
        ".globl edm_emu_switch\n"
        ".hidden edm_emu_switch\n"
        ".type edm_emu_switch,@function\n"
        "edm_emu_switch:\n"
        "    pushq %rbp\n    pushq %rbx\n    pushq %r12\n    pushq %r13\n    pushq %r14\n    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n    popq %r14\n    popq %r13\n    popq %r12\n    popq %rbx\n    popq %rbp\n"
        "    ret\n"
        ".size edm_emu_switch,.-edm_emu_switch\n");
#define EDM_EMU_FAST_SWITCH 1
#endif

struct edm_emu_state {
    uint3 thread, block;
    dim3 block_dim, grid_dim;
    int fibers;    /* the kernel runs its threads as fibers */
    int barriers;  /* __syncthreads calls in this phase (fiber mode) */
    int at_barrier[EDM_EMU_MAX_THREADS];
    int done[EDM_EMU_MAX_THREADS];
    int current;
    int order[EDM_EMU_MAX_THREADS]; /* the phase's order of the threads */
#ifdef EDM_EMU_FAST_SWITCH
    void *sched_sp, *sp[EDM_EMU_MAX_THREADS];
#else
    ucontext_t sched, ctx[EDM_EMU_MAX_THREADS];
#endif
    unsigned char *stacks;
    void (*tramp)(void **);
    void **args;
    char error[256];
};
static edm_emu_state edm_emu;

#define threadIdx (edm_emu.thread)
#define blockIdx (edm_emu.block)
#define blockDim (edm_emu.block_dim)
#define gridDim (edm_emu.grid_dim)

static inline void edm_emu_fail(const char *what)
{
    if (!edm_emu.error[0])
        snprintf(edm_emu.error, sizeof edm_emu.error, "%s (block %u,%u,%u thread %u,%u,%u)", what, edm_emu.block.x,
                 edm_emu.block.y, edm_emu.block.z, edm_emu.thread.x, edm_emu.thread.y, edm_emu.thread.z);
}

/* The generated code's check of an address a GPU load needs aligned (the
 * emulator reads such loads piece by piece: without it, an address the GPU
 * faults on would pass here). */
static inline void edm_emu_check_aligned(const void *p, unsigned bytes, const char *what)
{
    if ((reinterpret_cast<uintptr_t>(p) & (bytes - 1u)) != 0u) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s at %p, not %u-byte aligned (a misaligned address on a GPU)", what, p, bytes);
        edm_emu_fail(msg);
    }
}
#define EDM_CHECK_ALIGNED(p, bytes, what) edm_emu_check_aligned((p), (bytes), (what))

static inline void __syncthreads(void)
{
    if (!edm_emu.fibers) {
        edm_emu_fail("__syncthreads in a kernel the emulator classified as barrier-free");
        return;
    }
    edm_emu.at_barrier[edm_emu.current] = 1;
#ifdef EDM_EMU_FAST_SWITCH
    edm_emu_switch(&edm_emu.sp[edm_emu.current], edm_emu.sched_sp);
#else
    swapcontext(&edm_emu.ctx[edm_emu.current], &edm_emu.sched);
#endif
}

/* ------------------------------------------------------------------ conversions and intrinsics */

static inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}
static inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline int __float_as_int(float f)
{
    int i;
    memcpy(&i, &f, sizeof i);
    return i;
}
static inline double __longlong_as_double(long long i)
{
    double d;
    memcpy(&d, &i, sizeof d);
    return d;
}
static inline long long __double_as_longlong(double d)
{
    long long i;
    memcpy(&i, &d, sizeof i);
    return i;
}
/* round-to-nearest-even arithmetic without contraction (-ffp-contract=off) */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
/* the preamble's approximate exp and division (__expf, __fdividef on the
 * device), as sm_90 computes them up to ex2.approx's and rcp.approx's last
 * bits: ex2 of x·log2(e) rounded to f32; a times the reciprocal, 0 past
 * |b| > 2^126 */
static inline float edm_exp_approx(float x) { return exp2f(x * 1.44269504f); }
static inline float edm_div_approx(float a, float b) { return fabsf(b) > 0x1p126f ? a * 0.0f : a * (1.0f / b); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }

/* f16 → f32: exact (cvt.f32.f16) */
static inline float edm_cvt_f32_f16(unsigned short h)
{
    unsigned sign = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)
        return __uint_as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0) { /* zero or subnormal: m · 2^-24, exact in f32 */
        float f = (float)m * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

/* f32 → f16, round to nearest even (cvt.rn.f16.f32): overflow to inf,
 * gradual underflow, NaN stays NaN (canonical 0x7fff as the hardware) */
static inline unsigned short edm_cvt_rn_f16_f32(float v)
{
    unsigned u = __float_as_uint(v), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return 0x7fff;
    if (a >= 0x477ff000u) /* >= 65520: rounds to inf (and inf) */
        return (unsigned short)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a subnormal (or zero) of f16, units of 2^-24 */
        if (a < 0x33000000u) /* below 2^-25: rounds to 0 (2^-25 exactly is a tie to even 0) */
            return (unsigned short)sign;
        unsigned e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        unsigned shift = 126u - e; /* value = m · 2^(e-150); in units of 2^-24: m >> (126 - e) */
        unsigned q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (unsigned short)(sign | q);
    }
    unsigned r = a - 0x38000000u; /* rebias the exponent: 127 → 15 */
    unsigned q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
        q++;
    return (unsigned short)(sign | q);
}

/* f32 → bf16, round to nearest even (cvt.rn.bf16.f32); NaN → 0x7fff */
static inline unsigned short edm_cvt_rn_bf16_f32(float v)
{
    unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return 0x7fff;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

/* atomics: one launch runs on one host thread, so plain read-modify-writes */
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    unsigned long long old = *p;
    *p = old + v;
    return old;
}
static inline float atomicAdd(float *p, float v)
{
    float old = *p;
    *p = old + v;
    return old;
}
static inline double atomicAdd(double *p, double v)
{
    double old = *p;
    *p = old + v;
    return old;
}
static inline int atomicAdd(int *p, int v)
{
    int old = *p;
    *p = old + v;
    return old;
}
static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    unsigned old = *p;
    *p = old + v;
    return old;
}

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
/* a launch runs on one host thread: memory is ordered already */
static inline void __threadfence(void) {}
/* A shared-memory address as the GPU's shared window has it (32 bits, what
 * ldmatrix takes): here the distance of the __shared__ variable (a static of
 * this module) from an anchor in the same module, offset by 2^31, so that the
 * kernels' 32-bit address arithmetic works on it as on the GPU's, and
 * edm_emu_shared_ptr turns the result back into the host pointer. */
static char edm_emu_shared_anchor;
static inline unsigned long long __cvta_generic_to_shared(const void *p)
{
    const long long d = (long long)((intptr_t)p - (intptr_t)&edm_emu_shared_anchor);
    if (d < -(1LL << 31) || d >= (1LL << 31))
        edm_emu_fail("__cvta_generic_to_shared: not a __shared__ variable of this module");
    return (unsigned long long)(unsigned)(d + (1LL << 31));
}
static inline const void *edm_emu_shared_ptr(unsigned a)
{
    return reinterpret_cast<const void *>((intptr_t)&edm_emu_shared_anchor + (intptr_t)((long long)a - (1LL << 31)));
}

/* ------------------------------------------------------------------ tensor cores */

/* mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: D = A·B + C for the
 * 16×16 A, 16×8 B and 16×8 f32 C held by the 32 lanes of a warp, in the
 * fragment layout of the PTX ISA ("Matrix Fragments for mma.m16n8k16 with
 * floating point type"), with groupID g = lane / 4 and t = lane % 4:
 *   A: register r holds row g + 8·(r & 1), columns 2t + 8·(r >> 1) and the next
 *      (the lower-indexed element in the low 16 bits);
 *   B: register r holds rows 2t + 8·r and the next, column g;
 *   C: d[i] is row g + 8·(i >> 1), column 2t + (i & 1).
 * Warp-collective: each lane leaves its registers in a staging area, waits
 * at a barrier for the others, then computes its own part of D from all of
 * them.  The barrier is the block's (the emulator has no smaller one), so
 * every thread of the block must execute the same sequence of mma calls, as
 * the generated GEMM's threads do; the staging area alternates between two
 * copies from call to call, so one barrier a call suffices. */
struct edm_emu_mma_state {
    unsigned stage[2][EDM_EMU_MAX_THREADS][6];
    unsigned char parity[EDM_EMU_MAX_THREADS];
};
static edm_emu_mma_state edm_emu_mma_regs;

static inline float edm_emu_mma_operand(unsigned reg, int high, int bf16)
{
    unsigned short h = (unsigned short)(high ? reg >> 16 : reg & 0xffffu);
    return bf16 ? __uint_as_float((unsigned)h << 16) : edm_cvt_f32_f16(h);
}

static inline void edm_emu_mma(float *d, const unsigned *a, const unsigned *b, int bf16)
{
    if (!edm_emu.fibers) {
        edm_emu_fail("mma.sync in a kernel the emulator classified as barrier-free");
        return;
    }
    const int me = edm_emu.current, p = edm_emu_mma_regs.parity[me];
    edm_emu_mma_regs.parity[me] = (unsigned char)(p ^ 1);
    unsigned *mine = edm_emu_mma_regs.stage[p][me];
    for (int r = 0; r < 4; r++)
        mine[r] = a[r];
    mine[4] = b[0];
    mine[5] = b[1];
    __syncthreads();
    const int warp0 = me & ~31, lane = me & 31, g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        double sum = 0.0; /* the products of f16/bf16 operands are exact in double */
        for (int k = 0; k < 16; k++) {
            /* A[row][k]: lane 4·(row % 8) + (k % 8) / 2, register (row / 8) + 2·(k / 8), half k % 2 */
            const unsigned *la = edm_emu_mma_regs.stage[p][warp0 + 4 * (row % 8) + (k % 8) / 2];
            float av = edm_emu_mma_operand(la[(row / 8) + 2 * (k / 8)], k % 2, bf16);
            /* B[k][col]: lane 4·col + (k % 8) / 2, register k / 8, half k % 2 */
            const unsigned *lb = edm_emu_mma_regs.stage[p][warp0 + 4 * col + (k % 8) / 2];
            float bv = edm_emu_mma_operand(lb[4 + k / 8], k % 2, bf16);
            sum += (double)av * (double)bv;
        }
        d[i] = (float)((double)d[i] + sum);
    }
}

/* __shfl_xor_sync on floats (the attention kernel's row maxima and sums):
 * warp-collective like mma.sync, by the same staging: each lane leaves its
 * value, waits at the block's barrier, and reads its partner's, the lane of
 * its warp at (its lane) xor lane_mask.  The mask must name the whole warp. */
struct edm_emu_shfl_state {
    float stage[2][EDM_EMU_MAX_THREADS];
    unsigned char parity[EDM_EMU_MAX_THREADS];
};
static edm_emu_shfl_state edm_emu_shfl_regs;

static inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask)
{
    if (!edm_emu.fibers || mask != 0xffffffffu) {
        edm_emu_fail(!edm_emu.fibers ? "__shfl_xor_sync in a kernel the emulator classified as barrier-free"
                                     : "__shfl_xor_sync with a partial mask (the emulator runs whole warps)");
        return v;
    }
    const int me = edm_emu.current, p = edm_emu_shfl_regs.parity[me];
    edm_emu_shfl_regs.parity[me] = (unsigned char)(p ^ 1);
    edm_emu_shfl_regs.stage[p][me] = v;
    __syncthreads();
    return edm_emu_shfl_regs.stage[p][(me & ~31) | ((me & 31) ^ (lane_mask & 31))];
}

/* ldmatrix.sync.aligned.m8n8.x4.shared.b16 (PTX ISA): lane 8·i + r gives the
 * shared-window address of row r of 8×8 matrix i (16 bytes, 16-byte
 * aligned), and each lane l receives, in its register i, 32-bit word l % 4
 * of row l / 4 of matrix i.  Warp-collective, staged as mma.sync is: the
 * generated fragment loads (EDM_LDMATRIX) run here with the addresses the GPU
 * is given. */
#define EDM_EMU_LDMATRIX 1
struct edm_emu_ldsm_state {
    unsigned stage[2][EDM_EMU_MAX_THREADS];
    unsigned char parity[EDM_EMU_MAX_THREADS];
};
static edm_emu_ldsm_state edm_emu_ldsm_regs;

static inline void edm_ldsm_x4(unsigned *d, unsigned row)
{
    if (!edm_emu.fibers) {
        edm_emu_fail("ldmatrix in a kernel the emulator classified as barrier-free");
        return;
    }
    const int me = edm_emu.current, p = edm_emu_ldsm_regs.parity[me];
    edm_emu_ldsm_regs.parity[me] = (unsigned char)(p ^ 1);
    edm_emu_ldsm_regs.stage[p][me] = row;
    __syncthreads();
    const int warp0 = me & ~31, lane = me & 31;
    for (int i = 0; i < 4; i++) {
        const unsigned a = edm_emu_ldsm_regs.stage[p][warp0 + 8 * i + lane / 4];
        if (a % 16u != 0u) {
            edm_emu_fail("ldmatrix: a row address not 16-byte aligned");
            d[i] = 0u;
            continue;
        }
        d[i] = static_cast<const unsigned *>(edm_emu_shared_ptr(a))[lane % 4];
    }
}

/* cp.async.cg.shared.global [dst], [src], 16, full ? 16 : 0 and cp.async.wait_all
 * (PTX ISA): a thread's copies are queued and land when it waits, not before,
 * so that a read of the stage before the wait (and the barrier after it)
 * reads what was there, as it may on the GPU.  Both addresses must be 16-byte
 * aligned; full 0 writes zeros and reads nothing. */
enum { EDM_EMU_MAX_COPIES = 8 };
struct edm_emu_copy_state {
    unsigned dst[EDM_EMU_MAX_THREADS][EDM_EMU_MAX_COPIES];
    const void *src[EDM_EMU_MAX_THREADS][EDM_EMU_MAX_COPIES];
    unsigned char pending[EDM_EMU_MAX_THREADS];
};
static edm_emu_copy_state edm_emu_copies;

static inline void edm_cp_async16(unsigned dst, const void *src, int full)
{
    const int me = edm_emu.current;
    if (!edm_emu.fibers) {
        edm_emu_fail("cp.async in a kernel the emulator classified as barrier-free");
        return;
    }
    if (dst % 16u != 0u)
        edm_emu_fail("cp.async: a shared-memory address not 16-byte aligned");
    if (full)
        edm_emu_check_aligned(src, 16, "cp.async's global source");
    if (edm_emu_copies.pending[me] == EDM_EMU_MAX_COPIES) {
        edm_emu_fail("cp.async: more copies in flight than the emulator queues (8)");
        return;
    }
    const int i = edm_emu_copies.pending[me]++;
    edm_emu_copies.dst[me][i] = dst;
    edm_emu_copies.src[me][i] = full ? src : nullptr;
}

static inline void edm_cp_async_wait(void)
{
    const int me = edm_emu.current;
    for (int i = 0; i < edm_emu_copies.pending[me]; i++) {
        void *d = const_cast<void *>(edm_emu_shared_ptr(edm_emu_copies.dst[me][i]));
        if (edm_emu_copies.src[me][i])
            memcpy(d, edm_emu_copies.src[me][i], 16);
        else
            memset(d, 0, 16);
    }
    edm_emu_copies.pending[me] = 0;
}

static inline void edm_mma_f16(float *d, const unsigned *a, const unsigned *b) { edm_emu_mma(d, a, b, 0); }
static inline void edm_mma_bf16(float *d, const unsigned *a, const unsigned *b) { edm_emu_mma(d, a, b, 1); }

/* ------------------------------------------------------------------ launching */

/* Calls f with its parameters unpacked from the driver's void **args, by
 * the kernel's own parameter types (no ABI guessing). */
template <typename... A, std::size_t... I>
static inline void edm_emu_call(void (*f)(A...), void **args, std::index_sequence<I...>)
{
    f(*static_cast<A *>(args[I])...);
}
template <typename... A> static inline void edm_emu_invoke(void (*f)(A...), void **args)
{
    edm_emu_call(f, args, std::index_sequence_for<A...>{});
}
template <typename... A> static inline int edm_emu_nparams(void (*)(A...)) { return (int)sizeof...(A); }
template <typename... A> static inline void edm_emu_sizes(void (*)(A...), unsigned *out)
{
    const unsigned s[] = {0u, (unsigned)sizeof(A)...};
    for (std::size_t i = 0; i < sizeof...(A); i++)
        out[i] = s[i + 1];
}

struct edm_emu_kernel {
    const char *name;
    void (*tramp)(void **);
    int (*nparams)(void);
    void (*sizes)(unsigned *);
    int barrier; /* its text calls __syncthreads: threads run as fibers */
};

static void edm_emu_fiber(void)
{
    edm_emu.tramp(edm_emu.args);
    edm_emu.done[edm_emu.current] = 1;
#ifdef EDM_EMU_FAST_SWITCH
    edm_emu_switch(&edm_emu.sp[edm_emu.current], edm_emu.sched_sp); /* never resumed */
    abort();
#endif
    /* (ucontext) returning switches to uc_link: the scheduler */
}

static inline void edm_emu_set_thread(unsigned t)
{
    edm_emu.thread.x = t % edm_emu.block_dim.x;
    edm_emu.thread.y = t / edm_emu.block_dim.x % edm_emu.block_dim.y;
    edm_emu.thread.z = t / (edm_emu.block_dim.x * edm_emu.block_dim.y);
}

/* Runs one block's threads as fibers, phase by phase. */
static int edm_emu_block_fibers(int nthreads)
{
    for (int t = 0; t < nthreads; t++) {
        edm_emu.done[t] = edm_emu.at_barrier[t] = 0;
        edm_emu_mma_regs.parity[t] = 0;
        edm_emu_copies.pending[t] = 0; /* a block's copies never waited for do not land in the next */
#ifdef EDM_EMU_FAST_SWITCH
        /* a fresh stack: six zero registers, then the return address (the entry),
         * so that the entry starts with the stack aligned as after a call */
        uintptr_t top = ((uintptr_t)(edm_emu.stacks + (size_t)(t + 1) * EDM_EMU_STACK)) & ~(uintptr_t)15;
        void **frame = (void **)(top - 8 * sizeof(void *));
        for (int r = 0; r < 6; r++)
            frame[r] = nullptr;
        void (*entry)(void) = edm_emu_fiber;
        memcpy(&frame[6], &entry, sizeof entry);
        frame[7] = nullptr;
        edm_emu.sp[t] = frame;
#else
        if (getcontext(&edm_emu.ctx[t]) != 0) {
            edm_emu_fail("getcontext failed");
            return -1;
        }
        edm_emu.ctx[t].uc_stack.ss_sp = edm_emu.stacks + (size_t)t * EDM_EMU_STACK;
        edm_emu.ctx[t].uc_stack.ss_size = EDM_EMU_STACK;
        edm_emu.ctx[t].uc_link = &edm_emu.sched;
        makecontext(&edm_emu.ctx[t], edm_emu_fiber, 0);
#endif
    }
    unsigned long long block_index =
        ((unsigned long long)edm_emu.block.z * edm_emu.grid_dim.y + edm_emu.block.y) * edm_emu.grid_dim.x + edm_emu.block.x;
    for (int phase = 0;; phase++) {
        int waiting = 0, finished = 0;
        unsigned long long kind = ((unsigned long long)phase + block_index) % 3;
        for (int k = 0; k < nthreads; k++)
            edm_emu.order[k] = kind == 1 ? nthreads - 1 - k : k;
        if (kind == 2) { /* Fisher-Yates with a 64-bit LCG seeded by block and phase */
            unsigned long long r = 0x9e3779b97f4a7c15ULL ^ (block_index * 1000003ULL + (unsigned long long)phase);
            for (int k = nthreads - 1; k > 0; k--) {
                r = r * 6364136223846793005ULL + 1442695040888963407ULL;
                int j = (int)((r >> 33) % (unsigned long long)(k + 1));
                int tmp = edm_emu.order[k];
                edm_emu.order[k] = edm_emu.order[j];
                edm_emu.order[j] = tmp;
            }
        }
        for (int k = 0; k < nthreads; k++) {
            int t = edm_emu.order[k];
            if (edm_emu.done[t])
                continue;
            edm_emu.at_barrier[t] = 0;
            edm_emu.current = t;
            edm_emu_set_thread((unsigned)t);
#ifdef EDM_EMU_FAST_SWITCH
            edm_emu_switch(&edm_emu.sched_sp, edm_emu.sp[t]);
#else
            if (swapcontext(&edm_emu.sched, &edm_emu.ctx[t]) != 0) {
                edm_emu_fail("swapcontext failed");
                return -1;
            }
#endif
            if (edm_emu.error[0])
                return -1;
        }
        for (int t = 0; t < nthreads; t++) {
            waiting += edm_emu.at_barrier[t];
            finished += edm_emu.done[t];
        }
        if (finished == nthreads)
            return 0;
        if (waiting + finished != nthreads) {
            edm_emu_fail("a thread neither reached the barrier nor finished");
            return -1;
        }
        /* threads that exited count as arrived (as on sm_70+) */
    }
}

/* The fibers' stacks go with the module: dlclose runs this, so a process
 * that unloads its modules (or LeakSanitizer at exit) finds nothing left. */
__attribute__((destructor)) static void edm_emu_unload(void)
{
    free(edm_emu.stacks);
    edm_emu.stacks = NULL;
}

extern "C" {
extern const edm_emu_kernel edm_emu_kernels[];
extern const int edm_emu_nkernels;

/* Runs one launch over its whole grid; 0, or -1 with the reason in err. */
__attribute__((visibility("default"))) int edm_emu_launch(const edm_emu_kernel *k, const unsigned grid[3],
                                                          const unsigned block[3], void **args, char *err,
                                                          size_t errsize)
{
    unsigned long long nthreads = (unsigned long long)block[0] * block[1] * block[2];
    if (nthreads < 1 || nthreads > EDM_EMU_MAX_THREADS) {
        snprintf(err, errsize, "%s: %llu threads a block", k->name, nthreads);
        return -1;
    }
    edm_emu.error[0] = '\0';
    edm_emu.block_dim = dim3{block[0], block[1], block[2]};
    edm_emu.grid_dim = dim3{grid[0], grid[1], grid[2]};
    edm_emu.tramp = k->tramp;
    edm_emu.args = args;
    edm_emu.fibers = k->barrier;
    if (k->barrier && !edm_emu.stacks) {
        edm_emu.stacks = (unsigned char *)malloc((size_t)EDM_EMU_MAX_THREADS * EDM_EMU_STACK);
        if (!edm_emu.stacks) {
            snprintf(err, errsize, "%s: no memory for the fibers' stacks", k->name);
            return -1;
        }
    }
    for (unsigned bz = 0; bz < grid[2]; bz++)
        for (unsigned by = 0; by < grid[1]; by++)
            for (unsigned bx = 0; bx < grid[0]; bx++) {
                edm_emu.block = uint3{bx, by, bz};
                if (k->barrier) {
                    if (edm_emu_block_fibers((int)nthreads) != 0)
                        goto failed;
                } else {
                    for (unsigned t = 0; t < nthreads; t++) {
                        edm_emu_set_thread(t);
                        k->tramp(args);
                        if (edm_emu.error[0])
                            goto failed;
                    }
                }
            }
    return 0;
failed:
    snprintf(err, errsize, "%s: %s", k->name, edm_emu.error);
    return -1;
}
}

/* One entry of the table the emulator appends after the source. */
#define EDM_EMU_KERNEL(name, barrier)                                                                                  \
    {#name, [](void **a) { edm_emu_invoke(name, a); }, []() { return edm_emu_nparams(name); },                         \
     [](unsigned *s) { edm_emu_sizes(name, s); }, barrier}

#endif
