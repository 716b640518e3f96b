/* A fake CUDA driver and cuBLASLt, for tests only (never installed).
 *
 * One shared library that exports the driver API entry points edmc's CUDA
 * backend dlopens (by their versioned ABI names: cuMemAlloc_v2, ...) and the
 * cuBLASLt ones, so `make check` runs the --device=cuda paths end to end on a
 * machine without a GPU:
 *     EDMC_CUDA_DRIVER=tests/fakecuda/fake_cuda.so
 *     EDMC_CUBLASLT=tests/fakecuda/fake_cuda.so
 * Kernels do not execute, nor do GEMMs unless FAKE_CUDA_COMPUTE=1 (results
 * are garbage: mostly zeros), but every host-side call is checked the way the
 * real driver would refuse it, and more strictly where the real one would
 * silently corrupt memory:
 *   - device memory is host memory (mmap, MAP_NORESERVE: nothing is touched
 *     until written); a table of allocations bounds every copy, memset and
 *     cuBLASLt operand: [ptr, ptr+size) must lie inside one live allocation;
 *   - modules are ELF cubins: cuModuleGetFunction finds kernels in the
 *     symbol table (a kernel-name mismatch between codegen and executor is
 *     CUDA_ERROR_NOT_FOUND); .nv.info gives each kernel's parameter count,
 *     launch bounds and registers, which cuLaunchKernel checks along with the
 *     grid, block and dynamic shared memory limits of an H100;
 *   - stream capture: work on the capturing stream is recorded (copies and
 *     memsets are replayed by cuGraphLaunch, with their bounds re-checked);
 *     calls the real driver forbids during a capture fail like it
 *     (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED / _IMPLICIT) and invalidate it;
 *   - cublasLtMatmul: types, op(A) m×k, op(B) k×n, C/D m×n, ld, batch counts
 *     and strides, alignment promised to the heuristic, overlaps, workspace;
 *   - the primary context is current per thread (cuCtxSetCurrent), as in the
 *     real driver: a thread that never made it current gets
 *     CUDA_ERROR_INVALID_CONTEXT;
 *   - races between streams (tests/fakecuda/stream_order.h): work that
 *     touches a device address (a kernel's pointer arguments, a copy's or
 *     memset's start, a fake NCCL collective's buffer through the one other
 *     export, fake_cuda_collective) must be ordered after the last work that
 *     touched it on another stream — by an event recorded after that work and
 *     waited for (cuStreamWaitEvent), or a synchronization of the host —
 *     else the call fails with CUDA_ERROR_ILLEGAL_STATE ("a race: ...").
 * Every refusal prints one line "fake cuda: <call>: ..." or "fake cublasLt:
 * <call>: ..." on stderr (tests treat such a line as a failure); a call that
 * succeeds prints nothing.
 *
 * Environment:
 *   FAKE_CUDA_FAIL=SYMBOL[:N][,SYMBOL[:N]...]  the N-th call (default 1st) of SYMBOL
 *       (its exported name: cuMemAlloc_v2, cuGraphLaunch, cublasLtMatmul) fails:
 *       CUDA_ERROR_OUT_OF_MEMORY (cuMemAlloc_v2), CUDA_ERROR_LAUNCH_FAILED
 *       (cuLaunchKernel, cuGraphLaunch; sticky like a real launch failure: the
 *       context's later calls fail the same way until it is released),
 *       CUBLAS_STATUS_EXECUTION_FAILED (cublasLt*), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
 *       (cuStreamEndCapture, which ends the capture all the same), CUDA_ERROR_INVALID_VALUE
 *       otherwise.  Injected failures print nothing (the caller must say it).
 *   FAKE_CUDA_NO_DEVICE=1   cuInit returns CUDA_ERROR_NO_DEVICE.
 *   FAKE_CUDA_DROP_WAITS=1  cuStreamWaitEvent succeeds but orders nothing, as if the caller had
 *       forgotten it: the tests' proof that the race check below fails a missing dependency.
 *   FAKE_CUDA_VERBOSE=1     at exit, one line of counts: "fake-cuda stats: launches=..."
 *                   =2      also a line per allocation, module, capture and graph.
 *       A test in the same process reads the same counts at any time through
 *       the one extra export, long long fake_cuda_stat(const char *name)
 *       ("launches", "matmuls", "matmuls_computed", ...; -1 for an unknown
 *       name), found with dlsym on the fake's handle.  For the fake NCCL's
 *       collectives (fake_cuda_collective, below) the line also has
 *       collectives=C (buffers checked) and work_between_collectives=W: the
 *       kernels and matmuls queued (launched, or replayed from a graph)
 *       after the first collective and before the last, gradient
 *       accumulations (edm_grad_acc*) left out: the backward pass's work
 *       that an all-reduce in buckets overlaps (0 when every bucket is sent
 *       after the backward pass).
 *   FAKE_CUDA_LEAKS=1       report, as "fake cuda: leak: ...", objects still alive at
 *       exit or when the primary context is released (allocations, modules,
 *       streams, events, graphs, cuBLASLt handles and descriptors).
 *   FAKE_CUDA_COMPUTE=1     cublasLtMatmul really computes, on the host, once its checks
 *       pass: D = alpha·op(A)·op(B) + beta·C for every batch entry (layout order,
 *       rows, cols, ld, batch count and strided batch offset as given; stride 0
 *       reads the same matrix for every entry), TRANSA/TRANSB from the descriptor.
 *       Elements of CUDA_R_32F, _16F, _16BF and _64F are widened to double on
 *       load; the products accumulate in double; D is rounded to float, then
 *       (round to nearest even) to _16F / _16BF, or stored as double for _64F.
 *       The compute type is otherwise ignored (no f16 or TF32 accumulation).
 *       alpha and beta have the scale type (_32F, _16F or _64F), read at the
 *       call in host pointer mode (as cuBLASLt does, also when captured) and
 *       when the product runs in the device modes (per row in the vector ones).
 *       As in BLAS, C is not read when beta is 0 and A, B are not when alpha
 *       is 0.  In a stream capture nothing is computed until cuGraphLaunch
 *       replays it (then in order with the replayed copies and memsets).
 *       Integer and FP8 types and epilogues other than the default are refused
 *       ("not computed by the fake").  Counted as matmuls_computed.
 *
 * Memory: a memset of 0 over more than 64 MiB does not write: the pages are
 * given back (madvise MADV_DONTNEED, which reads back as zeros on a private
 * anonymous mapping), so zeroing a tens-of-GiB arena costs nothing.  Every
 * other copy and memset really happens.
 *
 * The library is linked -z nodelete: dlclose does not unload it, so its
 * state (and FAKE_CUDA_FAIL's call counts) lasts the whole process, like a
 * real driver's; edmc opens and closes the driver more than once.
 *
 * Built with -DFAKE_CUDA_EMULATE it is the EMULATOR (tests/emu/cuda_emu.so):
 * the same checks, and kernels really run on the host.  It exports
 *     CUresult edmEmuLoadSource(CUmodule *module, const char *cuda_source)
 * which the executor finds with dlsym and calls instead of NVRTC +
 * cuModuleLoadData: the source is compiled as C++ with tests/emu/cuda_emu.h
 * (tests/emu/emu.c), cuModuleGetFunction finds kernels in the compiled
 * module's table (parameter count and sizes from the kernel's own C++ type),
 * cuLaunchKernel runs the grid block by block (a captured launch keeps a copy
 * of its parameters and runs at cuGraphLaunch), and FAKE_CUDA_COMPUTE is on
 * unless set to 0.  FAKE_CUDA_VERBOSE=1's line then also counts
 * kernels_run and the compile time (emu_compile_s). */
#define _GNU_SOURCE /* memmem, MAP_ANONYMOUS, MAP_NORESERVE, madvise */

#include <elf.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* cublasLt.h declares cublasLtLoggerForceDisable() without a prototype */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cuda.h>
#include <cublasLt.h>
#pragma GCC diagnostic pop

#include "tests/fakecuda/stream_order.h"

#ifdef FAKE_CUDA_EMULATE
#include "tests/emu/emu.h"
#define FC_MAX_KPARAMS 16 /* parameters of an emulated kernel (each at most 16 bytes) */
#endif

/* ------------------------------------------------------------------ limits of the device we pretend to be (an H100) */

#define FC_DEVICE_NAME "NVIDIA H100 80GB HBM3 (fake)"
#define FC_TOTAL_MEM (80ull << 30)
#define FC_CC_MAJOR 9
#define FC_CC_MINOR 0
#define FC_SMEM_DEFAULT 49152   /* dynamic shared memory without cuFuncSetAttribute */
#define FC_SMEM_OPTIN 232448    /* 227 KiB: the most cuFuncSetAttribute allows */
#define FC_REGS_PER_BLOCK 65536
#define FC_BIG_MEMSET (64u << 20)
#define FC_MAX_FAIL 8

/* ------------------------------------------------------------------ the objects behind the handles */

enum { K_NONE, K_MODULE, K_FUNC, K_STREAM, K_EVENT, K_GRAPH, K_EXEC, K_LT, K_LT_DESC, K_LT_LAYOUT, K_LT_PREF, K_KINDS };
static const char *const kind_name[K_KINDS] = {"?", "module", "function", "stream", "event", "graph", "graph exec",
                                               "cuBLASLt handle", "matmul descriptor", "matrix layout",
                                               "matmul preference"};

typedef struct {
    int32_t compute, scale, pointer_mode, transa, transb, transc, fill;
    uint32_t epilogue;
    const void *bias;
    int64_t bias_stride;
    int32_t bias_type;
} fc_ltdesc;

typedef struct {
    uint32_t type;
    int32_t order;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride, plane;
    uint32_t batch_mode;
} fc_layout;

/* One product as cublasLtMatmul was given it, run at the call or at the
 * replay of a capture (FAKE_CUDA_COMPUTE). */
typedef struct {
    fc_ltdesc d;
    fc_layout L[4];                 /* A, B, C, D */
    const void *p[4];               /* A, B, C, D */
    const void *alpha, *beta;       /* device pointer modes: read when it runs */
    unsigned char alpha_v[8], beta_v[8]; /* host pointer mode: the scalars, read at the call */
    uint64_t m, n, k;
} fc_gemm;

/* A device range that a recorded operation touches, re-checked at replay. */
typedef struct {
    uintptr_t ptr;
    size_t bytes;
    const char *what;
} fc_range;

/* One operation recorded by a stream capture. */
typedef enum { N_KERNEL, N_HTOD, N_DTOH, N_DTOD, N_SET8, N_SET32, N_MATMUL, N_EVENT } fc_node_kind;
typedef struct {
    fc_node_kind kind;
    uintptr_t dst, src; /* copies (host or device by kind), memsets (dst) */
    size_t bytes;       /* copies: bytes; memsets: elements */
    unsigned value;
    CUevent event;
    fc_range range[8]; /* matmul operands */
    int nrange;
    fc_gemm gemm;      /* matmul */
    int grad_acc;      /* kernel: a gradient accumulation (edm_grad_acc*), not counted as work */
#ifdef FAKE_CUDA_EMULATE
    struct CUfunc_st *func; /* kernel: what runs at the replay, with a copy of its parameters */
    unsigned grid[3], block[3];
    unsigned char kparam[FC_MAX_KPARAMS][16];
#endif
} fc_node;

typedef struct {
    fc_node *v;
    size_t n, cap;
    size_t kernels, matmuls;
} fc_nodes;

struct CUctx_st {
    int unused;
};

struct CUfunc_st {
    struct CUmod_st *mod;
    char *name;
    int nparams;        /* from .nv.info (-1: unknown) */
    uint32_t *param_size;
    int max_threads;    /* __launch_bounds__ (0: none) */
    int regs;           /* registers per thread (0: unknown) */
    int max_dyn_smem;   /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
#ifdef FAKE_CUDA_EMULATE
    const emu_kernel *emu; /* the compiled kernel */
#endif
};

struct CUmod_st {
    unsigned char *image;
    size_t size;
    struct CUfunc_st **func;
    int nfunc, capfunc;
#ifdef FAKE_CUDA_EMULATE
    emu_module emu; /* a module from edmEmuLoadSource (image NULL) */
#endif
};

struct CUstream_st {
    unsigned flags;
    int order;          /* its id in fc.order (-1: not followed) */
    int capturing, invalidated;
    CUstreamCaptureMode mode;
    pthread_t thread;
    fc_nodes rec;
};

struct CUevent_st {
    unsigned flags;
    int recorded;
    double t;
    so_clock clock; /* what was ordered before it when it was recorded */
};

struct CUgraph_st {
    fc_nodes nodes;
};

struct CUgraphExec_st {
    fc_nodes nodes;
};

struct cublasLtContext {
    int unused;
};

typedef struct {
    uint32_t search, reduction, align[4];
    uint64_t max_workspace, impl;
    float waves;
} fc_pref;

typedef struct {
    uintptr_t base;
    size_t size, mapped;
} fc_alloc;

typedef struct {
    const void *p;
    int kind; /* 0 empty, -1 deleted */
} fc_slot;

typedef struct {
    char name[64];
    long nth, calls;
} fc_fail;

/* ------------------------------------------------------------------ the state
 *
 * The project's rule is no global mutable state, but a driver is by nature a
 * process-wide singleton: the handles it gives out are process-wide, and the
 * backend calls it from whatever thread runs it (the data loader has its
 * own).  So all of the fake's state is this one struct, every entry point
 * holds its mutex, and the only other state is the per-thread current
 * context below (per thread in the real driver too). */
static struct {
    pthread_mutex_t mu;
    int configured, verbose, leaks, no_device, compute, initialized;
    int drop_waits; /* FAKE_CUDA_DROP_WAITS: cuStreamWaitEvent orders nothing */
    fc_fail fail[FC_MAX_FAIL];
    int nfail;
    /* the primary context of device 0 */
    struct CUctx_st ctx;
    int ctx_refs;
    unsigned ctx_gen; /* bumped when it is destroyed: stale current contexts */
    CUresult sticky;  /* an (injected) launch failure poisons the context */
    /* device memory */
    fc_alloc *alloc;
    size_t nalloc, capalloc, in_use, peak;
    fc_alloc freed[64]; /* the last frees, to name a use after free */
    unsigned nfreed;
    /* every live handle, by address */
    fc_slot *slot;
    size_t capslot, nslot, usedslot;
    /* which work is ordered before which, across streams (stream_order.h) */
    so_state order;
    /* streams now capturing */
    struct CUstream_st *capture[16];
    int ncapture;
    struct {
        unsigned long launches, launches_captured, graph_launches, kernels_replayed, matmuls, matmuls_captured, matmuls_replayed,
            matmuls_computed, copies, memsets, allocs, modules, captures, kernels_run;
        /* kernels (but gradient accumulations) and matmuls queued; collectives checked; the work queued
         * at the first and at the last collective */
        unsigned long work, collectives, work_at_first_collective, work_at_last_collective;
        unsigned long long copied;
        double emu_compile_s;
    } n;
} fc = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The context current on this thread: the primary one of generation gen, or none. */
static _Thread_local struct {
    int set;
    unsigned gen;
} fc_current;

/* ------------------------------------------------------------------ messages */

__attribute__((format(printf, 2, 3))) static void say(const char *prefix, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s%s\n", prefix, line);
    fflush(stderr);
}

#define complain(...) say("fake cuda: ", __VA_ARGS__)
#define lt_complain(...) say("fake cublasLt: ", __VA_ARGS__)
#define trace(...) (fc.verbose >= 2 ? say("fake-cuda trace: ", __VA_ARGS__) : (void)0)

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ configuration */

static void configure(void)
{
    if (fc.configured)
        return;
    fc.configured = 1;
    const char *v = getenv("FAKE_CUDA_VERBOSE");
    fc.verbose = v ? atoi(v) : 0;
    v = getenv("FAKE_CUDA_LEAKS");
    fc.leaks = v && atoi(v) > 0;
    v = getenv("FAKE_CUDA_NO_DEVICE");
    fc.no_device = v && atoi(v) > 0;
    v = getenv("FAKE_CUDA_DROP_WAITS");
    fc.drop_waits = v && atoi(v) > 0;
    v = getenv("FAKE_CUDA_COMPUTE");
    fc.compute = v && atoi(v) > 0;
#ifdef FAKE_CUDA_EMULATE
    fc.compute = !v || atoi(v) > 0; /* the emulator computes unless told not to */
#endif
    v = getenv("FAKE_CUDA_FAIL");
    while (v && *v) {
        size_t len = strcspn(v, ",");
        size_t name_len = strcspn(v, ":,");
        long nth = 1;
        int ok = name_len > 0 && name_len < sizeof fc.fail[0].name && fc.nfail < FC_MAX_FAIL;
        if (ok && name_len < len) {
            char *end;
            nth = strtol(v + name_len + 1, &end, 10);
            ok = nth >= 1 && end == v + len;
        }
        if (!ok) {
            complain("FAKE_CUDA_FAIL=%s: expected SYMBOL[:N][,SYMBOL[:N]...] (at most %d)", getenv("FAKE_CUDA_FAIL"),
                     FC_MAX_FAIL);
            fc.nfail = 0;
            break;
        }
        memcpy(fc.fail[fc.nfail].name, v, name_len);
        fc.fail[fc.nfail].name[name_len] = '\0';
        fc.fail[fc.nfail].nth = nth;
        fc.fail[fc.nfail].calls = 0;
        fc.nfail++;
        v += len;
        if (*v == ',')
            v++;
    }
}

/* Counts a call of `call`; 1 when FAKE_CUDA_FAIL says this one fails. */
static int injected(const char *call)
{
    for (int i = 0; i < fc.nfail; i++)
        if (strcmp(fc.fail[i].name, call) == 0 && ++fc.fail[i].calls == fc.fail[i].nth) {
            trace("%s: failing call %ld (FAKE_CUDA_FAIL)", call, fc.fail[i].nth);
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------------ the handle registry (an open-addressing set) */

static size_t slot_hash(const void *p, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static fc_slot *slot_find(const void *p)
{
    if (!fc.capslot || !p)
        return NULL;
    for (size_t i = slot_hash(p, fc.capslot), k = 0; k < fc.capslot; k++, i = (i + 1) & (fc.capslot - 1)) {
        if (fc.slot[i].kind == 0)
            return NULL;
        if (fc.slot[i].kind > 0 && fc.slot[i].p == p)
            return &fc.slot[i];
    }
    return NULL;
}

static int slot_grow(void)
{
    size_t cap = fc.capslot ? fc.capslot * 2 : 256;
    while ((fc.nslot + 1) * 2 > cap)
        cap *= 2;
    fc_slot *s = calloc(cap, sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < fc.capslot; i++) {
        if (fc.slot[i].kind <= 0)
            continue;
        size_t j = slot_hash(fc.slot[i].p, cap);
        while (s[j].kind != 0)
            j = (j + 1) & (cap - 1);
        s[j] = fc.slot[i];
    }
    free(fc.slot);
    fc.slot = s;
    fc.capslot = cap;
    fc.usedslot = fc.nslot;
    return 0;
}

static int reg_add(const void *p, int kind)
{
    if ((fc.usedslot + 1) * 2 > fc.capslot && slot_grow() != 0)
        return -1;
    size_t i = slot_hash(p, fc.capslot);
    while (fc.slot[i].kind > 0)
        i = (i + 1) & (fc.capslot - 1);
    if (fc.slot[i].kind == 0)
        fc.usedslot++;
    fc.slot[i] = (fc_slot){.p = p, .kind = kind};
    fc.nslot++;
    return 0;
}

static int reg_kind(const void *p)
{
    const fc_slot *s = slot_find(p);
    return s ? s->kind : K_NONE;
}

static void reg_del(const void *p)
{
    fc_slot *s = slot_find(p);
    if (s) {
        s->kind = -1;
        fc.nslot--;
    }
}

/* 1 if p is a live handle of that kind, else says what it is (never, or no longer, one). */
static int live(const char *call, const char *arg, const void *p, int kind)
{
    if (p && reg_kind(p) == kind)
        return 1;
    int k = p ? reg_kind(p) : K_NONE;
    if (kind >= K_LT)
        lt_complain("%s: %s %p is not a live %s%s%s", call, arg, p, kind_name[kind], k ? ": it is a " : "",
                    k ? kind_name[k] : p ? " (destroyed, or never created)" : "");
    else
        complain("%s: %s %p is not a live %s%s%s", call, arg, p, kind_name[kind], k ? ": it is a " : "",
                 k ? kind_name[k] : p ? " (destroyed, or never created)" : "");
    return 0;
}

/* ------------------------------------------------------------------ device memory */

/* Index of the allocation containing address p, or -1. */
static long alloc_at(uintptr_t p)
{
    size_t lo = 0, hi = fc.nalloc;
    while (lo < hi) { /* first allocation whose base is > p */
        size_t mid = lo + (hi - lo) / 2;
        if (fc.alloc[mid].base <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    const fc_alloc *a = &fc.alloc[lo - 1];
    return p - a->base < a->size ? (long)(lo - 1) : -1;
}

static void describe_address(uintptr_t p, char *buf, size_t size)
{
    for (unsigned k = 0; k < fc.nfreed && k < 64; k++) {
        const fc_alloc *f = &fc.freed[(fc.nfreed - 1 - k) % 64];
        if (p - f->base < f->size) {
            snprintf(buf, size, "inside a freed allocation 0x%llx of %zu bytes: use after free",
                     (unsigned long long)f->base, f->size);
            return;
        }
    }
    snprintf(buf, size, "not in any allocation");
}

/* CUDA_SUCCESS if [p, p+bytes) lies inside one live allocation. */
static int range_ok(const char *prefix, const char *call, const char *what, uintptr_t p, size_t bytes)
{
    if (bytes == 0)
        return 1;
    long i = alloc_at(p);
    char why[256];
    if (i < 0) {
        describe_address(p, why, sizeof why);
    } else {
        const fc_alloc *a = &fc.alloc[i];
        size_t room = a->size - (size_t)(p - a->base);
        if (bytes <= room)
            return 1;
        snprintf(why, sizeof why, "allocation 0x%llx of %zu bytes, offset %zu: %zu bytes past its end",
                 (unsigned long long)a->base, a->size, (size_t)(p - a->base), bytes - room);
    }
    say(prefix, "%s: %s out of bounds (0x%llx + %zu bytes: %s)", call, what, (unsigned long long)p, bytes, why);
    return 0;
}

static CUresult check_device(const char *call, const char *what, CUdeviceptr p, size_t bytes)
{
    return range_ok("fake cuda: ", call, what, (uintptr_t)p, bytes) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* A host pointer must be one (not NULL, not device memory). */
static CUresult check_host(const char *call, const char *what, const void *p, size_t bytes)
{
    if (bytes == 0)
        return CUDA_SUCCESS;
    if (!p) {
        complain("%s: %s is NULL (%zu bytes)", call, what, bytes);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (alloc_at((uintptr_t)p) >= 0) {
        complain("%s: %s %p is device memory, not host memory", call, what, p);
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* Writes bytes of value c at p (device memory); zeroing a big range gives its pages back. */
static void device_fill(uintptr_t p, int c, size_t bytes)
{
    if (c == 0 && bytes > FC_BIG_MEMSET) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        uintptr_t lo = (p + page - 1) / page * page, hi = (p + bytes) / page * page;
        if (lo < hi && madvise((void *)lo, hi - lo, MADV_DONTNEED) == 0) {
            memset((void *)p, 0, lo - p);
            memset((void *)hi, 0, p + bytes - hi);
            return;
        }
    }
    memset((void *)p, c, bytes);
}

static void free_alloc_at(size_t i)
{
    fc_alloc a = fc.alloc[i];
    munmap((void *)a.base, a.mapped);
    memmove(fc.alloc + i, fc.alloc + i + 1, sizeof *fc.alloc * (fc.nalloc - i - 1));
    fc.nalloc--;
    fc.in_use -= a.size;
    fc.freed[fc.nfreed++ % 64] = a;
}

/* ------------------------------------------------------------------ contexts, entry checks, captures */

enum { F_CTX = 1, F_UNSAFE = 2, F_NOINJECT = 4 /* the call handles FAKE_CUDA_FAIL itself */ };

static int have_context(const char *call)
{
    if (fc_current.set && fc_current.gen == fc.ctx_gen && fc.ctx_refs > 0)
        return 1;
    complain("%s: no current context on this thread (cuDevicePrimaryCtxRetain + cuCtxSetCurrent%s)", call,
             fc_current.set ? "; the one set was released since" : "");
    return 0;
}

static void invalidate(struct CUstream_st *s) { s->invalidated = 1; }

/* A call the real driver calls "potentially unsafe" during a capture (it may
 * synchronize or allocate): refused while a capture in GLOBAL mode (any
 * thread) or THREAD_LOCAL mode (this thread) runs, and the capture is
 * invalidated. */
static CUresult capture_unsafe(const char *call)
{
    CUresult r = CUDA_SUCCESS;
    for (int i = 0; i < fc.ncapture; i++) {
        struct CUstream_st *s = fc.capture[i];
        if (s->mode == CU_STREAM_CAPTURE_MODE_GLOBAL ||
            (s->mode == CU_STREAM_CAPTURE_MODE_THREAD_LOCAL && pthread_equal(s->thread, pthread_self()))) {
            if (r == CUDA_SUCCESS)
                complain("%s: not allowed while stream %p is capturing in %s mode (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; "
                         "the capture is invalidated)",
                         call, (void *)s, s->mode == CU_STREAM_CAPTURE_MODE_GLOBAL ? "global" : "thread-local");
            invalidate(s);
            r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        }
    }
    return r;
}

static int is_legacy(CUstream s) { return s == NULL || s == CU_STREAM_LEGACY; }

/* Work on the legacy stream synchronizes with every blocking stream: refused
 * while one of them captures. */
static CUresult capture_implicit(const char *call, CUstream stream)
{
    if (!is_legacy(stream))
        return CUDA_SUCCESS;
    CUresult r = CUDA_SUCCESS;
    for (int i = 0; i < fc.ncapture; i++) {
        struct CUstream_st *s = fc.capture[i];
        if (s->flags & CU_STREAM_NON_BLOCKING)
            continue;
        if (r == CUDA_SUCCESS)
            complain("%s: work on the legacy (NULL) stream while the blocking stream %p is capturing "
                     "(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT; the capture is invalidated)",
                     call, (void *)s);
        invalidate(s);
        r = CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    }
    return r;
}

/* The stream is one: NULL, the legacy or per-thread stream, or a live stream. */
static int stream_ok(const char *call, CUstream s)
{
    return is_legacy(s) || s == CU_STREAM_PER_THREAD || live(call, "stream", s, K_STREAM);
}

/* The stream that records this work, or NULL (it runs now). */
static struct CUstream_st *recording(CUstream s)
{
    return is_legacy(s) || s == CU_STREAM_PER_THREAD || !s->capturing ? NULL : s;
}

/* The stream's id in the ordering model: 0 for the legacy and per-thread streams. */
static int order_id(CUstream s) { return is_legacy(s) || s == CU_STREAM_PER_THREAD ? 0 : s->order; }

/* A new operation on stream s (not recorded by a capture): its sequence number. */
static unsigned long long order_op(CUstream s) { return so_op(&fc.order, order_id(s)); }

/* Operation seq on s touches device address p: refused when it races with
 * the last operation that touched p on another stream. */
static CUresult order_touch(const char *call, CUstream s, unsigned long long seq, uintptr_t p, const char *what)
{
    if (p == 0 || alloc_at(p) < 0) /* not device memory (a scalar that is no pointer) */
        return CUDA_SUCCESS;
    char why[400];
    if (so_touch(&fc.order, order_id(s), seq, p, what, why, sizeof why) == 0)
        return CUDA_SUCCESS;
    complain("%s: a race: %s", call, why);
    return CUDA_ERROR_ILLEGAL_STATE;
}

/* A kernel's parameters that are device pointers (8 bytes, inside an allocation) as touches. */
static CUresult order_kernel(const char *call, CUstream s, unsigned long long seq, const struct CUfunc_st *f,
                             void *const *params)
{
    for (int i = 0; i < f->nparams; i++) {
        if (f->param_size[i] != sizeof(uintptr_t))
            continue;
        uintptr_t p;
        memcpy(&p, params[i], sizeof p);
        CUresult r = order_touch(call, s, seq, p, f->name);
        if (r != CUDA_SUCCESS)
            return r;
    }
    return CUDA_SUCCESS;
}

static fc_node *nodes_push(fc_nodes *ns)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? 2 * ns->cap : 64;
        fc_node *v = realloc(ns->v, cap * sizeof *v);
        if (!v)
            return NULL;
        ns->v = v;
        ns->cap = cap;
    }
    fc_node *nd = &ns->v[ns->n++];
    memset(nd, 0, sizeof *nd);
    return nd;
}

static int nodes_append(fc_nodes *dst, const fc_nodes *src)
{
    for (size_t i = 0; i < src->n; i++) {
        fc_node *nd = nodes_push(dst);
        if (!nd)
            return -1;
        *nd = src->v[i];
    }
    dst->kernels += src->kernels;
    dst->matmuls += src->matmuls;
    return 0;
}

static void nodes_free(fc_nodes *ns)
{
    free(ns->v);
    memset(ns, 0, sizeof *ns);
}

/* Common checks at the start of a driver call: initialized, FAKE_CUDA_FAIL,
 * a current context, a poisoned context, a capture that forbids the call. */
static CUresult enter(const char *call, unsigned flags)
{
    configure();
    if (!fc.initialized) {
        complain("%s: cuInit has not been called (CUDA_ERROR_NOT_INITIALIZED)", call);
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    if (!(flags & F_NOINJECT) && injected(call)) {
        if (strcmp(call, "cuMemAlloc_v2") == 0)
            return CUDA_ERROR_OUT_OF_MEMORY;
        if (strcmp(call, "cuLaunchKernel") == 0 || strcmp(call, "cuGraphLaunch") == 0)
            return fc.sticky = CUDA_ERROR_LAUNCH_FAILED;
        return CUDA_ERROR_INVALID_VALUE;
    }
    if ((flags & F_CTX) && !have_context(call))
        return CUDA_ERROR_INVALID_CONTEXT;
    if ((flags & F_CTX) && fc.sticky)
        return fc.sticky;
    if (flags & F_UNSAFE)
        return capture_unsafe(call);
    return CUDA_SUCCESS;
}

#define ENTER(call, flags)                     \
    do {                                       \
        CUresult enter_r_ = enter(call, flags); \
        if (enter_r_ != CUDA_SUCCESS)          \
            return enter_r_;                   \
    } while (0)

#define LOCKED(type, expr)                  \
    do {                                    \
        pthread_mutex_lock(&fc.mu);         \
        type locked_r_ = (expr);            \
        pthread_mutex_unlock(&fc.mu);       \
        return locked_r_;                   \
    } while (0)

/* ------------------------------------------------------------------ ELF cubins */

typedef struct {
    const unsigned char *p;
    size_t n;
    Elf64_Ehdr eh;
} elf_view;

static int elf_shdr(const elf_view *e, unsigned i, Elf64_Shdr *sh)
{
    if (i >= e->eh.e_shnum || e->eh.e_shentsize < sizeof *sh)
        return -1;
    uint64_t off = e->eh.e_shoff + (uint64_t)i * e->eh.e_shentsize;
    if (off + sizeof *sh > e->n)
        return -1;
    memcpy(sh, e->p + off, sizeof *sh);
    if (sh->sh_type != SHT_NOBITS && (sh->sh_offset > e->n || sh->sh_size > e->n - sh->sh_offset))
        return -1;
    return 0;
}

/* The NUL-terminated string at off in string-table section idx, or NULL. */
static const char *elf_str(const elf_view *e, unsigned idx, uint64_t off)
{
    Elf64_Shdr sh;
    if (elf_shdr(e, idx, &sh) != 0 || sh.sh_type != SHT_STRTAB || off >= sh.sh_size)
        return NULL;
    const char *s = (const char *)e->p + sh.sh_offset + off;
    return memchr(s, '\0', sh.sh_size - off) ? s : NULL;
}

static int elf_section(const elf_view *e, const char *name, Elf64_Shdr *out)
{
    for (unsigned i = 1; i < e->eh.e_shnum; i++) {
        const char *nm;
        if (elf_shdr(e, i, out) == 0 && (nm = elf_str(e, e->eh.e_shstrndx, out->sh_name)) && strcmp(nm, name) == 0)
            return 0;
    }
    return -1;
}

/* The size of the ELF image at p (it carries none): the furthest of its
 * header tables, sections and segments.  0 if it is not a 64-bit ELF. */
static size_t elf_image_size(const unsigned char *p, Elf64_Ehdr *eh)
{
    memcpy(eh, p, sizeof *eh);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_ident[EI_DATA] != ELFDATA2LSB)
        return 0;
    const uint64_t cap = 1ull << 30;
    uint64_t end = sizeof *eh;
    if (eh->e_shnum && (eh->e_shentsize < sizeof(Elf64_Shdr) || eh->e_shoff > cap))
        return 0;
    if (eh->e_phnum && (eh->e_phentsize < sizeof(Elf64_Phdr) || eh->e_phoff > cap))
        return 0;
    uint64_t sh_end = eh->e_shoff + (uint64_t)eh->e_shnum * eh->e_shentsize;
    uint64_t ph_end = eh->e_phoff + (uint64_t)eh->e_phnum * eh->e_phentsize;
    end = eh->e_shnum && sh_end > end ? sh_end : end;
    end = eh->e_phnum && ph_end > end ? ph_end : end;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        Elf64_Shdr sh;
        memcpy(&sh, p + eh->e_shoff + (uint64_t)i * eh->e_shentsize, sizeof sh);
        if (sh.sh_type == SHT_NOBITS)
            continue;
        if (sh.sh_offset > cap || sh.sh_size > cap)
            return 0;
        end = sh.sh_offset + sh.sh_size > end ? sh.sh_offset + sh.sh_size : end;
    }
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, p + eh->e_phoff + (uint64_t)i * eh->e_phentsize, sizeof ph);
        if (ph.p_offset > cap || ph.p_filesz > cap)
            return 0;
        end = ph.p_offset + ph.p_filesz > end ? ph.p_offset + ph.p_filesz : end;
    }
    return end <= cap ? (size_t)end : 0;
}

/* Finds a kernel (STT_FUNC with the CUDA entry flag) by name: 0 and its
 * symbol index, 1 not found, 2 a device function (not a kernel), -1 no symbol table. */
#define STO_CUDA_ENTRY 0x10
static int elf_kernel(const elf_view *e, const char *name, unsigned *index)
{
    Elf64_Shdr symtab;
    unsigned i;
    for (i = 1; i < e->eh.e_shnum; i++)
        if (elf_shdr(e, i, &symtab) == 0 && symtab.sh_type == SHT_SYMTAB)
            break;
    if (i >= e->eh.e_shnum || symtab.sh_entsize < sizeof(Elf64_Sym))
        return -1;
    int found = 1;
    for (uint64_t k = 1; k < symtab.sh_size / symtab.sh_entsize; k++) {
        Elf64_Sym sym;
        memcpy(&sym, e->p + symtab.sh_offset + k * symtab.sh_entsize, sizeof sym);
        const char *nm = elf_str(e, symtab.sh_link, sym.st_name);
        if (!nm || ELF64_ST_TYPE(sym.st_info) != STT_FUNC || strcmp(nm, name) != 0)
            continue;
        if (!(sym.st_other & STO_CUDA_ENTRY)) {
            found = 2;
            continue;
        }
        *index = (unsigned)k;
        return 0;
    }
    return found;
}

/* .nv.info records: format byte, attribute byte, a 16-bit value or (format
 * 4, EIFMT_SVAL) the size of the data that follows. */
#define EIFMT_SVAL 4
#define EIATTR_MAX_THREADS 0x05
#define EIATTR_KPARAM_INFO 0x17
#define EIATTR_REGCOUNT 0x2f

typedef void (*nv_info_fn)(struct CUfunc_st *f, int attr, const unsigned char *data, unsigned size, unsigned sym);

static void nv_info_walk(const elf_view *e, const char *section, struct CUfunc_st *f, unsigned sym, nv_info_fn fn)
{
    Elf64_Shdr sh;
    if (elf_section(e, section, &sh) != 0 || sh.sh_type == SHT_NOBITS)
        return;
    const unsigned char *p = e->p + sh.sh_offset;
    for (uint64_t at = 0; at + 4 <= sh.sh_size;) {
        unsigned fmt = p[at], attr = p[at + 1], v16 = p[at + 2] | (unsigned)p[at + 3] << 8;
        if (fmt == EIFMT_SVAL) {
            if (at + 4 + v16 > sh.sh_size)
                return;
            fn(f, (int)attr, p + at + 4, v16, sym);
            at += 4 + v16;
        } else {
            at += 4;
        }
    }
}

static uint32_t rd32(const unsigned char *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void nv_info_count(struct CUfunc_st *f, int attr, const unsigned char *d, unsigned size, unsigned sym)
{
    (void)sym;
    if (attr == EIATTR_KPARAM_INFO && size >= 12) {
        int ordinal = d[4] | d[5] << 8;
        f->nparams = ordinal + 1 > f->nparams ? ordinal + 1 : f->nparams;
    } else if (attr == EIATTR_MAX_THREADS && size >= 12) {
        f->max_threads = (int)(rd32(d) * rd32(d + 4) * rd32(d + 8));
    }
}

static void nv_info_params(struct CUfunc_st *f, int attr, const unsigned char *d, unsigned size, unsigned sym)
{
    (void)sym;
    if (attr == EIATTR_KPARAM_INFO && size >= 12) {
        int ordinal = d[4] | d[5] << 8;
        if (ordinal < f->nparams)
            f->param_size[ordinal] = (rd32(d + 8) >> 18) & 0x3fff;
    }
}

static void nv_info_regs(struct CUfunc_st *f, int attr, const unsigned char *d, unsigned size, unsigned sym)
{
    if (attr == EIATTR_REGCOUNT && size >= 8 && rd32(d) == sym)
        f->regs = (int)rd32(d + 4);
}

/* The parameters, launch bounds and registers of kernel `name` (symbol sym). */
static int read_kernel_info(const elf_view *e, struct CUfunc_st *f, unsigned sym)
{
    char section[512];
    snprintf(section, sizeof section, ".nv.info.%s", f->name);
    f->nparams = 0;
    nv_info_walk(e, section, f, sym, nv_info_count);
    if (f->nparams > 0) {
        f->param_size = calloc((size_t)f->nparams, sizeof *f->param_size);
        if (!f->param_size)
            return -1;
        nv_info_walk(e, section, f, sym, nv_info_params);
    } else if (elf_section(e, section, &(Elf64_Shdr){0}) != 0) {
        f->nparams = -1; /* no .nv.info for it: parameters unknown */
    }
    nv_info_walk(e, ".nv.info", f, sym, nv_info_regs);
    return 0;
}

/* ------------------------------------------------------------------ the driver: init, device, context */

CUresult CUDAAPI cuGetErrorName(CUresult error, const char **pStr);
CUresult CUDAAPI cuGetErrorString(CUresult error, const char **pStr);

static const struct {
    CUresult code;
    const char *name, *text;
} errors[] = {
#define E(code, text) {code, #code, text}
    E(CUDA_SUCCESS, "no error"),
    E(CUDA_ERROR_INVALID_VALUE, "invalid argument"),
    E(CUDA_ERROR_OUT_OF_MEMORY, "out of memory"),
    E(CUDA_ERROR_NOT_INITIALIZED, "initialization error"),
    E(CUDA_ERROR_DEINITIALIZED, "driver shutting down"),
    E(CUDA_ERROR_NO_DEVICE, "no CUDA-capable device is detected"),
    E(CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal"),
    E(CUDA_ERROR_INVALID_IMAGE, "device kernel image is invalid"),
    E(CUDA_ERROR_INVALID_CONTEXT, "invalid device context"),
    E(CUDA_ERROR_NO_BINARY_FOR_GPU, "no kernel image is available for execution on the device"),
    E(CUDA_ERROR_INVALID_HANDLE, "invalid resource handle"),
    E(CUDA_ERROR_NOT_FOUND, "named symbol not found"),
    E(CUDA_ERROR_NOT_READY, "device not ready"),
    E(CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access was encountered"),
    E(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "too many resources requested for launch"),
    E(CUDA_ERROR_LAUNCH_FAILED, "unspecified launch failure"),
    E(CUDA_ERROR_NOT_SUPPORTED, "operation not supported"),
    E(CUDA_ERROR_ILLEGAL_STATE, "the operation cannot be performed in the present state"),
    E(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "operation not permitted when stream is capturing"),
    E(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "operation failed due to a previous error during capture"),
    E(CUDA_ERROR_STREAM_CAPTURE_UNMATCHED, "capture was not initiated in this stream"),
    E(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, "attempt to terminate a thread-local capture sequence from another thread"),
    E(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, "operation would make the legacy stream depend on a capturing blocking stream"),
    E(CUDA_ERROR_UNKNOWN, "unknown error"),
#undef E
};

CUresult CUDAAPI cuGetErrorName(CUresult error, const char **pStr)
{
    if (!pStr)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
        if (errors[i].code == error) {
            *pStr = errors[i].name;
            return CUDA_SUCCESS;
        }
    *pStr = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult CUDAAPI cuGetErrorString(CUresult error, const char **pStr)
{
    if (!pStr)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
        if (errors[i].code == error) {
            *pStr = errors[i].text;
            return CUDA_SUCCESS;
        }
    *pStr = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

static CUresult do_init(unsigned flags)
{
    configure();
    if (injected("cuInit"))
        return CUDA_ERROR_INVALID_VALUE;
    if (fc.no_device)
        return CUDA_ERROR_NO_DEVICE;
    if (flags != 0) {
        complain("cuInit: flags must be 0, got %u", flags);
        return CUDA_ERROR_INVALID_VALUE;
    }
    fc.initialized = 1;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuInit(unsigned int Flags) { LOCKED(CUresult, do_init(Flags)); }

CUresult CUDAAPI cuDriverGetVersion(int *driverVersion)
{
    if (!driverVersion)
        return CUDA_ERROR_INVALID_VALUE;
    *driverVersion = CUDA_VERSION;
    return CUDA_SUCCESS;
}

static CUresult device_ok(const char *call, CUdevice dev)
{
    if (dev == 0)
        return CUDA_SUCCESS;
    complain("%s: device %d does not exist (one device: 0)", call, dev);
    return CUDA_ERROR_INVALID_DEVICE;
}

static CUresult null_arg(const char *call, const char *what)
{
    complain("%s: %s is NULL", call, what);
    return CUDA_ERROR_INVALID_VALUE;
}

static CUresult do_device_count(int *count)
{
    ENTER("cuDeviceGetCount", 0);
    if (!count)
        return null_arg("cuDeviceGetCount", "count");
    *count = 1;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDeviceGetCount(int *count) { LOCKED(CUresult, do_device_count(count)); }

static CUresult do_device_get(CUdevice *device, int ordinal)
{
    ENTER("cuDeviceGet", 0);
    if (!device)
        return null_arg("cuDeviceGet", "device");
    CUresult r = device_ok("cuDeviceGet", ordinal);
    if (r == CUDA_SUCCESS)
        *device = ordinal;
    return r;
}
CUresult CUDAAPI cuDeviceGet(CUdevice *device, int ordinal) { LOCKED(CUresult, do_device_get(device, ordinal)); }

static CUresult do_device_name(char *name, int len, CUdevice dev)
{
    ENTER("cuDeviceGetName", 0);
    if (!name || len <= 0) {
        complain("cuDeviceGetName: name %p, len %d", (void *)name, len);
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult r = device_ok("cuDeviceGetName", dev);
    if (r == CUDA_SUCCESS)
        snprintf(name, (size_t)len, "%s", FC_DEVICE_NAME);
    return r;
}
CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice dev) { LOCKED(CUresult, do_device_name(name, len, dev)); }

static int attribute_value(int a)
{
    switch (a) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: return 64;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: return 2147483647;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: return FC_SMEM_DEFAULT;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return FC_SMEM_OPTIN;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: return 233472;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: return 65536;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: return FC_REGS_PER_BLOCK;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: return 65536;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return 132;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: return 2048;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: return 1980000;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: return 2619000;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: return 5120;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: return 52428800;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: return 1;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: return 1;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return FC_CC_MAJOR;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return FC_CC_MINOR;
    default: return 0;
    }
}

static CUresult do_device_attribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
    ENTER("cuDeviceGetAttribute", 0);
    if (!pi)
        return null_arg("cuDeviceGetAttribute", "pi");
    if ((int)attrib <= 0 || attrib >= CU_DEVICE_ATTRIBUTE_MAX) {
        complain("cuDeviceGetAttribute: no attribute %d", (int)attrib);
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult r = device_ok("cuDeviceGetAttribute", dev);
    if (r == CUDA_SUCCESS)
        *pi = attribute_value((int)attrib);
    return r;
}
CUresult CUDAAPI cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
    LOCKED(CUresult, do_device_attribute(pi, attrib, dev));
}

static CUresult do_total_mem(size_t *bytes, CUdevice dev)
{
    ENTER("cuDeviceTotalMem_v2", 0);
    if (!bytes)
        return null_arg("cuDeviceTotalMem_v2", "bytes");
    CUresult r = device_ok("cuDeviceTotalMem_v2", dev);
    if (r == CUDA_SUCCESS)
        *bytes = FC_TOTAL_MEM;
    return r;
}
CUresult CUDAAPI cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) { LOCKED(CUresult, do_total_mem(bytes, dev)); }

static CUresult do_ctx_retain(CUcontext *pctx, CUdevice dev)
{
    ENTER("cuDevicePrimaryCtxRetain", 0);
    if (!pctx)
        return null_arg("cuDevicePrimaryCtxRetain", "pctx");
    CUresult r = device_ok("cuDevicePrimaryCtxRetain", dev);
    if (r != CUDA_SUCCESS)
        return r;
    fc.ctx_refs++;
    *pctx = &fc.ctx;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) { LOCKED(CUresult, do_ctx_retain(pctx, dev)); }

static void destroy_module(struct CUmod_st *m);
static void destroy_stream(struct CUstream_st *s);

static void leak(const char *what, size_t count, const char *when)
{
    if (fc.leaks && count && when)
        complain("leak: %zu %s%s still alive %s", count, what, count == 1 ? "" : "s", when);
}

/* The primary context goes away: everything it owned with it (what is still
 * alive is reported as a leak under FAKE_CUDA_LEAKS). */
static void destroy_context(void)
{
    /* after a launch failure nothing can be freed but by releasing the context: no leaks then */
    const char *when = fc.sticky ? NULL : "when the primary context was released";
    leak("device allocation", fc.nalloc, when);
    so_host_waits_all(&fc.order);
    while (fc.nalloc)
        free_alloc_at(fc.nalloc - 1);
    size_t count[K_KINDS] = {0};
    for (size_t i = 0; i < fc.capslot; i++)
        if (fc.slot[i].kind > 0)
            count[fc.slot[i].kind]++;
    leak("module", count[K_MODULE], when);
    leak("stream", count[K_STREAM], when);
    leak("event", count[K_EVENT], when);
    leak("graph exec", count[K_EXEC], when);
    for (size_t i = 0; i < fc.capslot; i++) {
        fc_slot *s = &fc.slot[i];
        if (s->kind == K_MODULE) {
            destroy_module((struct CUmod_st *)(uintptr_t)s->p); /* deletes its functions' slots, never this one's */
        } else if (s->kind == K_STREAM) {
            struct CUstream_st *st = (struct CUstream_st *)(uintptr_t)s->p;
            reg_del(st);
            destroy_stream(st);
        } else if (s->kind == K_EVENT || s->kind == K_EXEC) {
            void *p = (void *)(uintptr_t)s->p;
            if (s->kind == K_EXEC)
                nodes_free(&((struct CUgraphExec_st *)p)->nodes);
            reg_del(p);
            free(p);
        }
    }
    fc.ncapture = 0;
    fc.sticky = CUDA_SUCCESS;
    fc.ctx_gen++;
}

static CUresult do_ctx_release(CUdevice dev)
{
    ENTER("cuDevicePrimaryCtxRelease_v2", 0);
    CUresult r = device_ok("cuDevicePrimaryCtxRelease_v2", dev);
    if (r != CUDA_SUCCESS)
        return r;
    if (fc.ctx_refs <= 0) {
        complain("cuDevicePrimaryCtxRelease_v2: the primary context is not retained (released more often than retained)");
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    if (--fc.ctx_refs == 0)
        destroy_context();
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDevicePrimaryCtxRelease_v2(CUdevice dev) { LOCKED(CUresult, do_ctx_release(dev)); }

static CUresult do_ctx_set_current(CUcontext ctx)
{
    ENTER("cuCtxSetCurrent", 0);
    if (!ctx) {
        fc_current.set = 0;
        return CUDA_SUCCESS;
    }
    if (ctx != &fc.ctx || fc.ctx_refs <= 0) {
        complain("cuCtxSetCurrent: %p is not a live context (the primary context, retained)", (void *)ctx);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    fc_current.set = 1;
    fc_current.gen = fc.ctx_gen;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx) { LOCKED(CUresult, do_ctx_set_current(ctx)); }

static CUresult do_ctx_get_current(CUcontext *pctx)
{
    ENTER("cuCtxGetCurrent", 0);
    if (!pctx)
        return null_arg("cuCtxGetCurrent", "pctx");
    *pctx = fc_current.set && fc_current.gen == fc.ctx_gen && fc.ctx_refs > 0 ? &fc.ctx : NULL;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxGetCurrent(CUcontext *pctx) { LOCKED(CUresult, do_ctx_get_current(pctx)); }

static CUresult do_ctx_synchronize(void)
{
    ENTER("cuCtxSynchronize", F_CTX | F_UNSAFE);
    so_host_waits_all(&fc.order);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxSynchronize(void) { LOCKED(CUresult, do_ctx_synchronize()); }

/* ------------------------------------------------------------------ modules and functions */

static void destroy_module(struct CUmod_st *m)
{
    for (int i = 0; i < m->nfunc; i++) {
        reg_del(m->func[i]);
        free(m->func[i]->name);
        free(m->func[i]->param_size);
        free(m->func[i]);
    }
    reg_del(m);
    free(m->func);
    free(m->image);
#ifdef FAKE_CUDA_EMULATE
    emu_module_unload(&m->emu);
#endif
    free(m);
}

static CUresult do_module_load(CUmodule *module, const void *image)
{
    const char *call = "cuModuleLoadData";
    ENTER(call, F_CTX);
    if (!module || !image)
        return null_arg(call, !module ? "module" : "image");
    const unsigned char *p = image;
    uint32_t magic;
    memcpy(&magic, p, sizeof magic);
    if (magic == 0xBA55ED50u) {
        complain("%s: a fatbin; the fake loads ELF cubins only (nvrtcGetCUBIN)", call);
        return CUDA_ERROR_INVALID_IMAGE;
    }
    if (memcmp(p, ELFMAG, SELFMAG) != 0) {
        complain("%s: not an ELF cubin (PTX text?); the fake loads ELF cubins only (nvrtcGetCUBIN)", call);
        return CUDA_ERROR_INVALID_IMAGE;
    }
    Elf64_Ehdr eh;
    size_t size = elf_image_size(p, &eh);
    if (size == 0 || eh.e_machine != EM_CUDA) {
        complain("%s: not a 64-bit little-endian CUDA ELF image (machine %u)", call, (unsigned)eh.e_machine);
        return CUDA_ERROR_INVALID_IMAGE;
    }
    /* the target architecture: byte 1 of e_flags from ELF ABI version 8 (CUDA 12.8+), byte 0 before */
    unsigned sm = eh.e_ident[EI_ABIVERSION] >= 8 ? (eh.e_flags >> 8) & 0xff : eh.e_flags & 0xff;
    if (sm >= 20 && sm < 200 && sm != FC_CC_MAJOR * 10 + FC_CC_MINOR) {
        complain("%s: the cubin is for sm_%u, the device is sm_%d%d", call, sm, FC_CC_MAJOR, FC_CC_MINOR);
        return CUDA_ERROR_NO_BINARY_FOR_GPU;
    }
    struct CUmod_st *m = calloc(1, sizeof *m);
    unsigned char *copy = malloc(size);
    if (!m || !copy || reg_add(m, K_MODULE) != 0) {
        free(m);
        free(copy);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    memcpy(copy, p, size);
    m->image = copy;
    m->size = size;
    fc.n.modules++;
    trace("%s: %zu bytes, sm_%u -> %p", call, size, sm, (void *)m);
    *module = m;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuModuleLoadData(CUmodule *module, const void *image) { LOCKED(CUresult, do_module_load(module, image)); }

#ifdef FAKE_CUDA_EMULATE
CUresult edmEmuLoadSource(CUmodule *module, const char *source);

/* The emulator's module load: generated CUDA C instead of a cubin. */
static CUresult do_load_source(CUmodule *module, const char *source)
{
    const char *call = "edmEmuLoadSource";
    ENTER(call, F_CTX);
    if (!module || !source)
        return null_arg(call, !module ? "module" : "source");
    struct CUmod_st *m = calloc(1, sizeof *m);
    if (!m || reg_add(m, K_MODULE) != 0) {
        free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    char err[2048];
    if (emu_module_load(source, &m->emu, err, sizeof err) != 0) {
        complain("%s: %s", call, err);
        reg_del(m);
        free(m);
        return CUDA_ERROR_INVALID_SOURCE;
    }
    fc.n.modules++;
    fc.n.emu_compile_s += m->emu.seconds;
    trace("%s: %d kernels, %s in %.1f s -> %p", call, m->emu.n, m->emu.from_cache ? "cached" : "compiled",
          m->emu.seconds, (void *)m);
    *module = m;
    return CUDA_SUCCESS;
}
CUresult edmEmuLoadSource(CUmodule *module, const char *source) { LOCKED(CUresult, do_load_source(module, source)); }
#endif

static CUresult do_module_unload(CUmodule hmod)
{
    ENTER("cuModuleUnload", F_CTX);
    if (!live("cuModuleUnload", "module", hmod, K_MODULE))
        return CUDA_ERROR_INVALID_HANDLE;
    destroy_module(hmod);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuModuleUnload(CUmodule hmod) { LOCKED(CUresult, do_module_unload(hmod)); }

/* A few kernel names of the module, for a message. */
static void some_kernels(const elf_view *e, char *buf, size_t size)
{
    buf[0] = '\0';
    Elf64_Shdr symtab;
    unsigned i;
    for (i = 1; i < e->eh.e_shnum; i++)
        if (elf_shdr(e, i, &symtab) == 0 && symtab.sh_type == SHT_SYMTAB)
            break;
    if (i >= e->eh.e_shnum || symtab.sh_entsize < sizeof(Elf64_Sym))
        return;
    size_t used = 0, shown = 0, total = 0;
    for (uint64_t k = 1; k < symtab.sh_size / symtab.sh_entsize; k++) {
        Elf64_Sym sym;
        memcpy(&sym, e->p + symtab.sh_offset + k * symtab.sh_entsize, sizeof sym);
        const char *nm = elf_str(e, symtab.sh_link, sym.st_name);
        if (!nm || ELF64_ST_TYPE(sym.st_info) != STT_FUNC || !(sym.st_other & STO_CUDA_ENTRY))
            continue;
        total++;
        if (shown < 6 && used + strlen(nm) + 8 < size) {
            used += (size_t)snprintf(buf + used, size - used, "%s%s", shown ? ", " : "", nm);
            shown++;
        }
    }
    if (total > shown && used + 16 < size)
        snprintf(buf + used, size - used, ", ... (%zu kernels)", total);
}

#ifdef FAKE_CUDA_EMULATE
/* cuModuleGetFunction on a compiled (emulated) module: the kernel from its
 * table, its parameters from the kernel's C++ type. */
static CUresult emu_get_function(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    const char *call = "cuModuleGetFunction";
    const emu_kernel *k = emu_module_find(&hmod->emu, name);
    if (!k) {
        complain("%s: no kernel '%s' in the module (%d kernels)", call, name, hmod->emu.n);
        return CUDA_ERROR_NOT_FOUND;
    }
    int np = k->nparams();
    if (np > FC_MAX_KPARAMS) {
        complain("%s(%s): %d parameters, the emulator takes at most %d", call, name, np, FC_MAX_KPARAMS);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    struct CUfunc_st *f = calloc(1, sizeof *f);
    char *copy = strdup(name);
    uint32_t *sizes = calloc((size_t)np + 1, sizeof *sizes);
    struct CUfunc_st **v = hmod->func;
    if (f && copy && sizes && hmod->nfunc == hmod->capfunc) {
        int cap = hmod->capfunc ? 2 * hmod->capfunc : 64;
        v = realloc(hmod->func, (size_t)cap * sizeof *v);
        if (v) {
            hmod->func = v;
            hmod->capfunc = cap;
        }
    }
    if (!f || !copy || !sizes || !v || reg_add(f, K_FUNC) != 0) {
        free(f);
        free(copy);
        free(sizes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    unsigned us[FC_MAX_KPARAMS + 1] = {0};
    k->sizes(us);
    for (int i = 0; i < np; i++) {
        if (us[i] > 16) {
            complain("%s(%s): parameter %d has %u bytes, the emulator takes at most 16", call, name, i, us[i]);
            reg_del(f);
            free(f);
            free(copy);
            free(sizes);
            return CUDA_ERROR_NOT_SUPPORTED;
        }
        sizes[i] = us[i];
    }
    f->mod = hmod;
    f->name = copy;
    f->nparams = np;
    f->param_size = sizes;
    f->max_dyn_smem = FC_SMEM_DEFAULT;
    f->emu = k;
    hmod->func[hmod->nfunc++] = f;
    *hfunc = f;
    return CUDA_SUCCESS;
}

/* Runs a kernel over its grid (at the launch, or at the replay of a capture). */
static CUresult emu_run(struct CUfunc_st *f, const unsigned grid[3], const unsigned block[3], void **params)
{
    char err[512];
    if (f->mod->emu.launch(f->emu, grid, block, params, err, sizeof err) != 0) {
        complain("cuLaunchKernel: %s", err);
        return fc.sticky = CUDA_ERROR_LAUNCH_FAILED;
    }
    fc.n.kernels_run++;
    return CUDA_SUCCESS;
}
#endif

static CUresult do_get_function(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    const char *call = "cuModuleGetFunction";
    ENTER(call, F_CTX);
    if (!hfunc || !name)
        return null_arg(call, !hfunc ? "hfunc" : "name");
    if (!live(call, "module", hmod, K_MODULE))
        return CUDA_ERROR_INVALID_HANDLE;
    for (int i = 0; i < hmod->nfunc; i++)
        if (strcmp(hmod->func[i]->name, name) == 0) {
            *hfunc = hmod->func[i];
            return CUDA_SUCCESS;
        }
#ifdef FAKE_CUDA_EMULATE
    if (hmod->emu.lib)
        return emu_get_function(hfunc, hmod, name);
#endif
    elf_view e = {.p = hmod->image, .n = hmod->size};
    memcpy(&e.eh, hmod->image, sizeof e.eh);
    unsigned sym = 0;
    int found = elf_kernel(&e, name, &sym);
    if (found < 0) { /* no symbol table: the name as a whole string of the image */
        size_t len = strlen(name);
        char *needle = malloc(len + 2);
        if (!needle)
            return CUDA_ERROR_OUT_OF_MEMORY;
        needle[0] = '\0';
        memcpy(needle + 1, name, len + 1);
        found = memmem(hmod->image, hmod->size, needle, len + 2) ? 0 : 1;
        free(needle);
    }
    if (found != 0) {
        char names[512];
        some_kernels(&e, names, sizeof names);
        complain("%s: no kernel '%s' in the module%s (its kernels: %s)", call, name,
                 found == 2 ? " (a __device__ function of that name, not a __global__ one)" : "",
                 names[0] ? names : "none");
        return CUDA_ERROR_NOT_FOUND;
    }
    struct CUfunc_st *f = calloc(1, sizeof *f);
    char *copy = strdup(name);
    if (!f || !copy) {
        free(f);
        free(copy);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    f->mod = hmod;
    f->name = copy;
    f->max_dyn_smem = FC_SMEM_DEFAULT;
    if (read_kernel_info(&e, f, sym) != 0) {
        free(f->name);
        free(f);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (hmod->nfunc == hmod->capfunc) {
        int cap = hmod->capfunc ? 2 * hmod->capfunc : 64;
        struct CUfunc_st **v = realloc(hmod->func, (size_t)cap * sizeof *v);
        if (!v) {
            free(f->param_size);
            free(f->name);
            free(f);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        hmod->func = v;
        hmod->capfunc = cap;
    }
    if (reg_add(f, K_FUNC) != 0) {
        free(f->param_size);
        free(f->name);
        free(f);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    hmod->func[hmod->nfunc++] = f;
    *hfunc = f;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    LOCKED(CUresult, do_get_function(hfunc, hmod, name));
}

static CUresult do_func_set_attribute(CUfunction f, CUfunction_attribute attrib, int value)
{
    const char *call = "cuFuncSetAttribute";
    ENTER(call, F_CTX);
    if (!live(call, "function", f, K_FUNC))
        return CUDA_ERROR_INVALID_HANDLE;
    switch (attrib) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
        if (value < 0 || value > FC_SMEM_OPTIN) {
            complain("%s(%s): max dynamic shared memory %d outside [0, %d]", call, f->name, value, FC_SMEM_OPTIN);
            return CUDA_ERROR_INVALID_VALUE;
        }
        f->max_dyn_smem = value;
        return CUDA_SUCCESS;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
        if (value < -1 || value > 100) {
            complain("%s(%s): carveout %d outside [-1, 100]", call, f->name, value);
            return CUDA_ERROR_INVALID_VALUE;
        }
        return CUDA_SUCCESS;
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH:
    case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
    case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
        return CUDA_SUCCESS;
    default:
        complain("%s(%s): attribute %d cannot be set", call, f->name, (int)attrib);
        return CUDA_ERROR_INVALID_VALUE;
    }
}
CUresult CUDAAPI cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value)
{
    LOCKED(CUresult, do_func_set_attribute(hfunc, attrib, value));
}

/* ------------------------------------------------------------------ launches */

static int is_grad_acc(const struct CUfunc_st *f) { return f->name && strncmp(f->name, "edm_grad_acc", 12) == 0; }

static CUresult do_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                          unsigned smem, CUstream stream, void **params, void **extra)
{
    const char *call = "cuLaunchKernel";
    ENTER(call, F_CTX);
    if (!live(call, "function", f, K_FUNC))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!stream_ok(call, stream))
        return CUDA_ERROR_INVALID_HANDLE;
    unsigned long long threads = (unsigned long long)bx * by * bz;
    if (bx < 1 || by < 1 || bz < 1 || bx > 1024 || by > 1024 || bz > 64 || threads > 1024) {
        complain("%s(%s): block %ux%ux%u (each >= 1, x, y <= 1024, z <= 64, at most 1024 threads)", call, f->name, bx, by,
                 bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (gx < 1 || gy < 1 || gz < 1 || gx > 2147483647u || gy > 65535 || gz > 65535) {
        complain("%s(%s): grid %ux%ux%u (x in [1, 2^31-1], y and z in [1, 65535])", call, f->name, gx, gy, gz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (smem > (unsigned)f->max_dyn_smem) {
        complain("%s(%s): %u bytes of dynamic shared memory, the limit is %d%s", call, f->name, smem, f->max_dyn_smem,
                 f->max_dyn_smem == FC_SMEM_DEFAULT ? " (raise it with cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES))"
                                                    : "");
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (f->max_threads > 0 && threads > (unsigned long long)f->max_threads) {
        complain("%s(%s): %llu threads per block, its __launch_bounds__ allow %d", call, f->name, threads, f->max_threads);
        return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    }
    if (f->regs > 0) {
        unsigned long long per_warp = ((unsigned long long)f->regs * 32 + 255) / 256 * 256;
        if (per_warp * ((threads + 31) / 32) > FC_REGS_PER_BLOCK) {
            complain("%s(%s): %llu threads x %d registers exceed the %d registers of a block", call, f->name, threads,
                     f->regs, FC_REGS_PER_BLOCK);
            return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
        }
    }
    if (!params || extra) {
        complain("%s(%s): kernelParams %p, extra %p (this backend passes kernelParams, not extra)", call, f->name,
                 (void *)params, (void *)extra);
        return CUDA_ERROR_INVALID_VALUE;
    }
    /* read every parameter the kernel takes: a missing one is a NULL (or, under
     * a sanitizer, a reported bad read) here instead of garbage on a GPU */
    for (int i = 0; i < f->nparams; i++) {
        if (!params[i]) {
            complain("%s(%s): kernelParams[%d] is NULL; the kernel takes %d parameters", call, f->name, i, f->nparams);
            return CUDA_ERROR_INVALID_VALUE;
        }
        unsigned char buf[64];
        volatile unsigned char sink = 0;
        for (uint32_t at = 0; at < f->param_size[i]; at += sizeof buf) {
            uint32_t n = f->param_size[i] - at < sizeof buf ? f->param_size[i] - at : (uint32_t)sizeof buf;
            memcpy(buf, (const unsigned char *)params[i] + at, n);
            sink ^= buf[0];
        }
        (void)sink;
    }
    CUresult r = capture_implicit(call, stream);
    if (r != CUDA_SUCCESS)
        return r;
    struct CUstream_st *rec = recording(stream);
    if (rec) {
        fc_node *nd = nodes_push(&rec->rec);
        if (!nd)
            return CUDA_ERROR_OUT_OF_MEMORY;
        nd->kind = N_KERNEL;
        nd->grad_acc = is_grad_acc(f);
#ifdef FAKE_CUDA_EMULATE
        if (f->emu) { /* the parameters are copied at capture, as a real capture does */
            nd->func = f;
            nd->grid[0] = gx, nd->grid[1] = gy, nd->grid[2] = gz;
            nd->block[0] = bx, nd->block[1] = by, nd->block[2] = bz;
            for (int i = 0; i < f->nparams; i++)
                memcpy(nd->kparam[i], params[i], f->param_size[i]);
        }
#endif
        rec->rec.kernels++;
        fc.n.launches_captured++;
    } else {
        fc.n.launches++;
        fc.n.work += !is_grad_acc(f);
        r = order_kernel(call, stream, order_op(stream), f, params);
        if (r != CUDA_SUCCESS)
            return r;
#ifdef FAKE_CUDA_EMULATE
        if (f->emu) {
            const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
            return emu_run(f, grid, block, params);
        }
#endif
    }
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                                unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                                unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra)
{
    LOCKED(CUresult, do_launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                               hStream, kernelParams, extra));
}

/* ------------------------------------------------------------------ memory */

static CUresult do_mem_alloc(CUdeviceptr *dptr, size_t bytes)
{
    const char *call = "cuMemAlloc_v2";
    ENTER(call, F_CTX | F_UNSAFE);
    if (!dptr)
        return null_arg(call, "dptr");
    if (bytes == 0) {
        complain("%s: 0 bytes", call);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (bytes > FC_TOTAL_MEM - fc.in_use) {
        trace("%s: %zu bytes: out of (fake) device memory, %zu in use", call, bytes, fc.in_use);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE), mapped = (bytes + page - 1) / page * page;
    if (fc.nalloc == fc.capalloc) {
        size_t cap = fc.capalloc ? 2 * fc.capalloc : 64;
        fc_alloc *v = realloc(fc.alloc, cap * sizeof *v);
        if (!v)
            return CUDA_ERROR_OUT_OF_MEMORY;
        fc.alloc = v;
        fc.capalloc = cap;
    }
    void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        trace("%s: %zu bytes: mmap failed", call, bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    size_t at = 0;
    while (at < fc.nalloc && fc.alloc[at].base < (uintptr_t)p)
        at++;
    memmove(fc.alloc + at + 1, fc.alloc + at, sizeof *fc.alloc * (fc.nalloc - at));
    fc.alloc[at] = (fc_alloc){.base = (uintptr_t)p, .size = bytes, .mapped = mapped};
    fc.nalloc++;
    fc.in_use += bytes;
    fc.peak = fc.in_use > fc.peak ? fc.in_use : fc.peak;
    fc.n.allocs++;
    trace("%s: %zu bytes at %p", call, bytes, p);
    *dptr = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) { LOCKED(CUresult, do_mem_alloc(dptr, bytesize)); }

static CUresult do_mem_free(CUdeviceptr dptr)
{
    const char *call = "cuMemFree_v2";
    ENTER(call, F_CTX | F_UNSAFE);
    if (dptr == 0)
        return CUDA_SUCCESS;
    long i = alloc_at((uintptr_t)dptr);
    if (i < 0 || fc.alloc[i].base != (uintptr_t)dptr) {
        char why[256];
        if (i >= 0)
            snprintf(why, sizeof why, "offset %zu inside allocation 0x%llx", (size_t)((uintptr_t)dptr - fc.alloc[i].base),
                     (unsigned long long)fc.alloc[i].base);
        else
            describe_address((uintptr_t)dptr, why, sizeof why);
        complain("%s: 0x%llx is not the start of a live allocation (%s%s)", call, (unsigned long long)dptr, why,
                 i < 0 ? "; freed twice?" : "");
        return CUDA_ERROR_INVALID_VALUE;
    }
    trace("%s: %zu bytes at 0x%llx", call, fc.alloc[i].size, (unsigned long long)dptr);
    so_host_waits_all(&fc.order); /* cuMemFree waits for the work using it */
    free_alloc_at((size_t)i);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemFree_v2(CUdeviceptr dptr) { LOCKED(CUresult, do_mem_free(dptr)); }

static CUresult do_mem_info(size_t *free_bytes, size_t *total)
{
    ENTER("cuMemGetInfo_v2", F_CTX);
    if (!free_bytes || !total)
        return null_arg("cuMemGetInfo_v2", !free_bytes ? "free" : "total");
    *total = FC_TOTAL_MEM;
    *free_bytes = FC_TOTAL_MEM - fc.in_use;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemGetInfo_v2(size_t *free_bytes, size_t *total) { LOCKED(CUresult, do_mem_info(free_bytes, total)); }

/* One copy or memset, checked, then done now or recorded into a capture. */
static CUresult transfer(const char *call, fc_node_kind kind, uintptr_t dst, uintptr_t src, size_t n, unsigned value,
                         CUstream stream, int async)
{
    ENTER(call, F_CTX | (async ? 0 : F_UNSAFE));
    if (async && !stream_ok(call, stream))
        return CUDA_ERROR_INVALID_HANDLE;
    size_t bytes = n;
    CUresult r = CUDA_SUCCESS;
    switch (kind) {
    case N_HTOD:
        r = check_host(call, "source", (const void *)src, n);
        if (r == CUDA_SUCCESS)
            r = check_device(call, "destination", dst, n);
        break;
    case N_DTOH:
        r = check_host(call, "destination", (const void *)dst, n);
        if (r == CUDA_SUCCESS)
            r = check_device(call, "source", src, n);
        break;
    case N_DTOD:
        r = check_device(call, "source", src, n);
        if (r == CUDA_SUCCESS)
            r = check_device(call, "destination", dst, n);
        if (r == CUDA_SUCCESS && n && dst < src + n && src < dst + n) {
            complain("%s: source 0x%llx and destination 0x%llx overlap (%zu bytes)", call, (unsigned long long)src,
                     (unsigned long long)dst, n);
            r = CUDA_ERROR_INVALID_VALUE;
        }
        break;
    case N_SET8:
        r = check_device(call, "destination", dst, n);
        break;
    case N_SET32:
        if (n > SIZE_MAX / 4 || dst % 4) {
            complain("%s: destination 0x%llx %s", call, (unsigned long long)dst,
                     dst % 4 ? "is not 4-byte aligned" : "with too many elements");
            return CUDA_ERROR_INVALID_VALUE;
        }
        bytes = 4 * n;
        r = check_device(call, "destination", dst, bytes);
        break;
    default:
        break;
    }
    if (r != CUDA_SUCCESS)
        return r;
    r = capture_implicit(call, async ? stream : NULL);
    if (r != CUDA_SUCCESS)
        return r;
    struct CUstream_st *rec = async ? recording(stream) : NULL;
    if (rec) {
        fc_node *nd = nodes_push(&rec->rec);
        if (!nd)
            return CUDA_ERROR_OUT_OF_MEMORY;
        *nd = (fc_node){.kind = kind, .dst = dst, .src = src, .bytes = n, .value = value};
        return CUDA_SUCCESS;
    }
    CUstream on = async ? stream : NULL;
    unsigned long long seq = order_op(on);
    r = order_touch(call, on, seq, kind == N_DTOH ? src : dst, call);
    if (r == CUDA_SUCCESS && kind == N_DTOD)
        r = order_touch(call, on, seq, src, call);
    if (r != CUDA_SUCCESS)
        return r;
    if (!async) /* a synchronous call returns when it is done */
        so_host_waits(&fc.order, 0);
    if (kind == N_SET8 || kind == N_SET32) {
        fc.n.memsets++;
        if (kind == N_SET8 || value == 0) {
            device_fill(dst, (int)(value & 0xff), bytes);
        } else {
            uint32_t v = value;
            for (size_t i = 0; i < n; i++)
                memcpy((unsigned char *)dst + 4 * i, &v, 4);
        }
    } else if (n) {
        fc.n.copies++;
        fc.n.copied += n;
        memmove((void *)dst, (const void *)src, n);
    }
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    LOCKED(CUresult, transfer("cuMemcpyHtoD_v2", N_HTOD, (uintptr_t)dstDevice, (uintptr_t)srcHost, ByteCount, 0, NULL, 0));
}
CUresult CUDAAPI cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    LOCKED(CUresult, transfer("cuMemcpyDtoH_v2", N_DTOH, (uintptr_t)dstHost, (uintptr_t)srcDevice, ByteCount, 0, NULL, 0));
}
CUresult CUDAAPI cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    LOCKED(CUresult,
           transfer("cuMemcpyDtoD_v2", N_DTOD, (uintptr_t)dstDevice, (uintptr_t)srcDevice, ByteCount, 0, NULL, 0));
}
CUresult CUDAAPI cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream)
{
    LOCKED(CUresult, transfer("cuMemcpyHtoDAsync_v2", N_HTOD, (uintptr_t)dstDevice, (uintptr_t)srcHost, ByteCount, 0,
                              hStream, 1));
}
CUresult CUDAAPI cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
{
    LOCKED(CUresult, transfer("cuMemcpyDtoHAsync_v2", N_DTOH, (uintptr_t)dstHost, (uintptr_t)srcDevice, ByteCount, 0,
                              hStream, 1));
}
CUresult CUDAAPI cuMemsetD8_v2(CUdeviceptr dstDevice, unsigned char uc, size_t N)
{
    LOCKED(CUresult, transfer("cuMemsetD8_v2", N_SET8, (uintptr_t)dstDevice, 0, N, uc, NULL, 0));
}
CUresult CUDAAPI cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream)
{
    LOCKED(CUresult, transfer("cuMemsetD8Async", N_SET8, (uintptr_t)dstDevice, 0, N, uc, hStream, 1));
}
CUresult CUDAAPI cuMemsetD32_v2(CUdeviceptr dstDevice, unsigned int ui, size_t N)
{
    LOCKED(CUresult, transfer("cuMemsetD32_v2", N_SET32, (uintptr_t)dstDevice, 0, N, ui, NULL, 0));
}
CUresult CUDAAPI cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream)
{
    LOCKED(CUresult, transfer("cuMemsetD32Async", N_SET32, (uintptr_t)dstDevice, 0, N, ui, hStream, 1));
}

/* ------------------------------------------------------------------ streams, captures, graphs */

static void destroy_stream(struct CUstream_st *s)
{
    so_stream_free(&fc.order, s->order);
    for (int i = 0; i < fc.ncapture; i++)
        if (fc.capture[i] == s)
            fc.capture[i--] = fc.capture[--fc.ncapture];
    nodes_free(&s->rec);
    free(s);
}

static CUresult do_stream_create(CUstream *ph, unsigned flags)
{
    const char *call = "cuStreamCreate";
    ENTER(call, F_CTX);
    if (!ph)
        return null_arg(call, "phStream");
    if (flags & ~(unsigned)CU_STREAM_NON_BLOCKING) {
        complain("%s: flags 0x%x (0 or CU_STREAM_NON_BLOCKING)", call, flags);
        return CUDA_ERROR_INVALID_VALUE;
    }
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (!s || reg_add(s, K_STREAM) != 0) {
        free(s);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    s->flags = flags;
    s->order = so_stream_new(&fc.order, !(flags & CU_STREAM_NON_BLOCKING));
    *ph = s;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamCreate(CUstream *phStream, unsigned int Flags) { LOCKED(CUresult, do_stream_create(phStream, Flags)); }

static CUresult do_stream_destroy(CUstream s)
{
    const char *call = "cuStreamDestroy_v2";
    ENTER(call, F_CTX);
    if (!live(call, "stream", s, K_STREAM))
        return CUDA_ERROR_INVALID_HANDLE;
    if (s->capturing) {
        complain("%s: stream %p is still capturing (cuStreamEndCapture first)", call, (void *)s);
        return CUDA_ERROR_ILLEGAL_STATE;
    }
    reg_del(s);
    destroy_stream(s);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamDestroy_v2(CUstream hStream) { LOCKED(CUresult, do_stream_destroy(hStream)); }

static CUresult do_stream_synchronize(CUstream s)
{
    const char *call = "cuStreamSynchronize";
    ENTER(call, F_CTX);
    if (!stream_ok(call, s))
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUstream_st *rec = recording(s);
    if (rec) {
        complain("%s: stream %p is capturing (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; the capture is invalidated)", call,
                 (void *)s);
        invalidate(rec);
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    CUresult r = capture_implicit(call, s);
    if (r == CUDA_SUCCESS)
        so_host_waits(&fc.order, order_id(s));
    return r;
}
CUresult CUDAAPI cuStreamSynchronize(CUstream hStream) { LOCKED(CUresult, do_stream_synchronize(hStream)); }

static CUresult do_begin_capture(CUstream s, CUstreamCaptureMode mode)
{
    const char *call = "cuStreamBeginCapture_v2";
    ENTER(call, F_CTX);
    if (is_legacy(s) || s == CU_STREAM_PER_THREAD) {
        complain("%s: the legacy / per-thread stream cannot be captured; create a stream", call);
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (!live(call, "stream", s, K_STREAM))
        return CUDA_ERROR_INVALID_HANDLE;
    if (mode != CU_STREAM_CAPTURE_MODE_GLOBAL && mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
        mode != CU_STREAM_CAPTURE_MODE_RELAXED) {
        complain("%s: mode %d", call, (int)mode);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (s->capturing) {
        complain("%s: stream %p is already capturing", call, (void *)s);
        return CUDA_ERROR_ILLEGAL_STATE;
    }
    if (fc.ncapture == (int)(sizeof fc.capture / sizeof *fc.capture)) {
        complain("%s: more than %d concurrent captures", call, fc.ncapture);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    nodes_free(&s->rec);
    s->capturing = 1;
    s->invalidated = 0;
    s->mode = mode;
    s->thread = pthread_self();
    fc.capture[fc.ncapture++] = s;
    fc.n.captures++;
    trace("%s: stream %p, mode %d", call, (void *)s, (int)mode);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
{
    LOCKED(CUresult, do_begin_capture(hStream, mode));
}

static CUresult do_end_capture(CUstream s, CUgraph *phGraph)
{
    const char *call = "cuStreamEndCapture";
    ENTER(call, F_CTX | F_NOINJECT);
    int fail = injected(call); /* ends the capture all the same, like a real failure */
    if (!phGraph)
        return null_arg(call, "phGraph");
    if (!live(call, "stream", s, K_STREAM))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!s->capturing) {
        complain("%s: stream %p is not capturing", call, (void *)s);
        return CUDA_ERROR_ILLEGAL_STATE;
    }
    if (s->mode != CU_STREAM_CAPTURE_MODE_RELAXED && !pthread_equal(s->thread, pthread_self())) {
        complain("%s: the capture began on another thread", call);
        return CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;
    }
    s->capturing = 0;
    for (int i = 0; i < fc.ncapture; i++)
        if (fc.capture[i] == s)
            fc.capture[i--] = fc.capture[--fc.ncapture];
    *phGraph = NULL;
    if (s->invalidated || fail) { /* the call that invalidated it said why */
        nodes_free(&s->rec);
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    struct CUgraph_st *g = calloc(1, sizeof *g);
    if (!g || reg_add(g, K_GRAPH) != 0) {
        free(g);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    g->nodes = s->rec;
    memset(&s->rec, 0, sizeof s->rec);
    trace("%s: graph %p, %zu nodes (%zu kernels, %zu matmuls)", call, (void *)g, g->nodes.n, g->nodes.kernels,
          g->nodes.matmuls);
    *phGraph = g;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamEndCapture(CUstream hStream, CUgraph *phGraph) { LOCKED(CUresult, do_end_capture(hStream, phGraph)); }

static CUresult do_instantiate(CUgraphExec *phExec, CUgraph g, unsigned long long flags)
{
    const char *call = "cuGraphInstantiateWithFlags";
    ENTER(call, F_CTX);
    if (!phExec)
        return null_arg(call, "phGraphExec");
    if (!live(call, "graph", g, K_GRAPH))
        return CUDA_ERROR_INVALID_VALUE;
    const unsigned long long known = CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH | CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD |
                                     CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH |
                                     CUDA_GRAPH_INSTANTIATE_FLAG_USE_NODE_PRIORITY;
    if (flags & ~known) {
        complain("%s: unknown flags 0x%llx", call, flags);
        return CUDA_ERROR_INVALID_VALUE;
    }
    struct CUgraphExec_st *x = calloc(1, sizeof *x);
    if (!x || nodes_append(&x->nodes, &g->nodes) != 0 || reg_add(x, K_EXEC) != 0) {
        if (x)
            nodes_free(&x->nodes);
        free(x);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *phExec = x;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags)
{
    LOCKED(CUresult, do_instantiate(phGraphExec, hGraph, flags));
}

static void gemm_compute(const fc_gemm *g);

/* Replays what a capture recorded: copies and memsets happen (and products
 * with FAKE_CUDA_COMPUTE), every recorded device range is checked again (it
 * may have been freed since). */
static CUresult replay(const fc_nodes *ns, CUstream s)
{
    const char *call = "cuGraphLaunch";
    for (size_t i = 0; i < ns->n; i++) {
        const fc_node *nd = &ns->v[i];
        int ok = 1;
        unsigned long long seq = order_op(s);
        CUresult touched = CUDA_SUCCESS;
        switch (nd->kind) {
        case N_HTOD: case N_SET8: case N_SET32:
            touched = order_touch(call, s, seq, nd->dst, "a captured copy or memset");
            break;
        case N_DTOH:
            touched = order_touch(call, s, seq, nd->src, "a captured copy");
            break;
        case N_DTOD:
            touched = order_touch(call, s, seq, nd->src, "a captured copy");
            if (touched == CUDA_SUCCESS)
                touched = order_touch(call, s, seq, nd->dst, "a captured copy");
            break;
        case N_MATMUL:
            for (int k = 0; k < nd->nrange && touched == CUDA_SUCCESS; k++)
                touched = order_touch(call, s, seq, nd->range[k].ptr, "a captured cublasLtMatmul");
            break;
        default: /* kernels below; events order nothing */
            break;
        }
#ifdef FAKE_CUDA_EMULATE
        if (nd->kind == N_KERNEL && nd->func) {
            void *kp[FC_MAX_KPARAMS];
            for (int k = 0; k < nd->func->nparams; k++)
                kp[k] = (void *)nd->kparam[k];
            touched = order_kernel(call, s, seq, nd->func, kp);
        }
#endif
        if (touched != CUDA_SUCCESS)
            return touched;
        switch (nd->kind) {
        case N_KERNEL:
            fc.n.kernels_replayed++;
            fc.n.work += !nd->grad_acc;
#ifdef FAKE_CUDA_EMULATE
            if (nd->func) {
                if (reg_kind(nd->func) != K_FUNC) {
                    complain("%s: a captured kernel's module was unloaded", call);
                    return CUDA_ERROR_INVALID_VALUE;
                }
                void *params[FC_MAX_KPARAMS];
                for (int k = 0; k < nd->func->nparams; k++)
                    params[k] = (void *)nd->kparam[k];
                CUresult r = emu_run(nd->func, nd->grid, nd->block, params);
                if (r != CUDA_SUCCESS)
                    return r;
            }
#endif
            break;
        case N_HTOD:
            ok = range_ok("fake cuda: ", call, "captured copy's destination", nd->dst, nd->bytes);
            if (ok)
                memmove((void *)nd->dst, (const void *)nd->src, nd->bytes);
            break;
        case N_DTOH:
            ok = range_ok("fake cuda: ", call, "captured copy's source", nd->src, nd->bytes);
            if (ok)
                memmove((void *)nd->dst, (const void *)nd->src, nd->bytes);
            break;
        case N_DTOD:
            ok = range_ok("fake cuda: ", call, "captured copy's source", nd->src, nd->bytes) &&
                 range_ok("fake cuda: ", call, "captured copy's destination", nd->dst, nd->bytes);
            if (ok)
                memmove((void *)nd->dst, (const void *)nd->src, nd->bytes);
            break;
        case N_SET8:
            ok = range_ok("fake cuda: ", call, "captured memset's destination", nd->dst, nd->bytes);
            if (ok)
                device_fill(nd->dst, (int)(nd->value & 0xff), nd->bytes);
            break;
        case N_SET32:
            ok = range_ok("fake cuda: ", call, "captured memset's destination", nd->dst, 4 * nd->bytes);
            for (size_t k = 0; ok && k < nd->bytes; k++)
                memcpy((unsigned char *)nd->dst + 4 * k, &nd->value, 4);
            break;
        case N_MATMUL:
            fc.n.matmuls_replayed++;
            fc.n.work++;
            for (int k = 0; ok && k < nd->nrange; k++)
                ok = range_ok("fake cuda: ", call, nd->range[k].what, nd->range[k].ptr, nd->range[k].bytes);
            if (ok && fc.compute)
                gemm_compute(&nd->gemm);
            break;
        case N_EVENT:
            if (reg_kind(nd->event) == K_EVENT) {
                nd->event->recorded = 1;
                nd->event->t = now_seconds();
                so_record(&fc.order, order_id(s), &nd->event->clock);
            }
            break;
        }
        if (!ok)
            return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

static CUresult do_graph_launch(CUgraphExec x, CUstream s)
{
    const char *call = "cuGraphLaunch";
    ENTER(call, F_CTX);
    if (!live(call, "graph exec", x, K_EXEC))
        return CUDA_ERROR_INVALID_VALUE;
    if (!stream_ok(call, s))
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult r = capture_implicit(call, s);
    if (r != CUDA_SUCCESS)
        return r;
    struct CUstream_st *rec = recording(s);
    if (rec) /* a graph launched into a capture becomes part of it */
        return nodes_append(&rec->rec, &x->nodes) == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
    fc.n.graph_launches++;
    return replay(&x->nodes, s);
}
CUresult CUDAAPI cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream) { LOCKED(CUresult, do_graph_launch(hGraphExec, hStream)); }

static CUresult do_exec_destroy(CUgraphExec x)
{
    ENTER("cuGraphExecDestroy", F_CTX);
    if (!live("cuGraphExecDestroy", "graph exec", x, K_EXEC))
        return CUDA_ERROR_INVALID_VALUE;
    reg_del(x);
    nodes_free(&x->nodes);
    free(x);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuGraphExecDestroy(CUgraphExec hGraphExec) { LOCKED(CUresult, do_exec_destroy(hGraphExec)); }

static CUresult do_graph_destroy(CUgraph g)
{
    ENTER("cuGraphDestroy", 0);
    if (!live("cuGraphDestroy", "graph", g, K_GRAPH))
        return CUDA_ERROR_INVALID_VALUE;
    reg_del(g);
    nodes_free(&g->nodes);
    free(g);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuGraphDestroy(CUgraph hGraph) { LOCKED(CUresult, do_graph_destroy(hGraph)); }

/* ------------------------------------------------------------------ events */

static CUresult do_event_create(CUevent *ph, unsigned flags)
{
    const char *call = "cuEventCreate";
    ENTER(call, F_CTX);
    if (!ph)
        return null_arg(call, "phEvent");
    unsigned known = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
    if ((flags & ~known) || ((flags & CU_EVENT_INTERPROCESS) && !(flags & CU_EVENT_DISABLE_TIMING))) {
        complain("%s: flags 0x%x", call, flags);
        return CUDA_ERROR_INVALID_VALUE;
    }
    struct CUevent_st *e = calloc(1, sizeof *e);
    if (!e || reg_add(e, K_EVENT) != 0) {
        free(e);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    e->flags = flags;
    *ph = e;
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventCreate(CUevent *phEvent, unsigned int Flags) { LOCKED(CUresult, do_event_create(phEvent, Flags)); }

static CUresult do_event_record(CUevent e, CUstream s)
{
    const char *call = "cuEventRecord";
    ENTER(call, F_CTX);
    if (!live(call, "event", e, K_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!stream_ok(call, s))
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult r = capture_implicit(call, s);
    if (r != CUDA_SUCCESS)
        return r;
    struct CUstream_st *rec = recording(s);
    if (rec) {
        fc_node *nd = nodes_push(&rec->rec);
        if (!nd)
            return CUDA_ERROR_OUT_OF_MEMORY;
        nd->kind = N_EVENT;
        nd->event = e;
        return CUDA_SUCCESS;
    }
    e->recorded = 1;
    e->t = now_seconds();
    so_record(&fc.order, order_id(s), &e->clock);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventRecord(CUevent hEvent, CUstream hStream) { LOCKED(CUresult, do_event_record(hEvent, hStream)); }

static CUresult do_event_synchronize(CUevent e)
{
    ENTER("cuEventSynchronize", F_CTX);
    if (!live("cuEventSynchronize", "event", e, K_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    so_host_waits_event(&fc.order, &e->clock);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventSynchronize(CUevent hEvent) { LOCKED(CUresult, do_event_synchronize(hEvent)); }

/* The stream's later work waits for what the event recorded (never recorded: nothing, as the real driver). */
static CUresult do_stream_wait_event(CUstream s, CUevent e, unsigned flags)
{
    const char *call = "cuStreamWaitEvent";
    ENTER(call, F_CTX);
    if (!stream_ok(call, s) || !live(call, "event", e, K_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    if (flags != 0) {
        complain("%s: flags 0x%x (0: CU_EVENT_WAIT_DEFAULT)", call, flags);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (recording(s)) { /* a capture across streams is not modelled by the fake */
        complain("%s: stream %p is capturing (the fake records no cross-stream dependency)", call, (void *)s);
        invalidate(recording(s));
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    CUresult r = capture_implicit(call, s);
    if (r != CUDA_SUCCESS)
        return r;
    if (!fc.drop_waits)
        so_wait(&fc.order, order_id(s), &e->clock);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    LOCKED(CUresult, do_stream_wait_event(hStream, hEvent, Flags));
}

/* The fake's one export for the fake NCCL (tests/fakecuda/fake_nccl.c): a
 * collective queued on stream that reads and writes [p, p + bytes): the
 * range must lie in one allocation, and the stream must be ordered after
 * every operation that touched p before (an event recorded after the last
 * one, waited for by this stream); later work touching p must be ordered
 * after the collective in turn.  CUDA_SUCCESS, or an error after one
 * "fake cuda: " line. */
CUresult fake_cuda_collective(CUstream stream, CUdeviceptr p, size_t bytes, const char *what);
static CUresult do_collective(CUstream s, CUdeviceptr p, size_t bytes, const char *what)
{
    const char *call = "fake_cuda_collective";
    ENTER(call, F_CTX);
    if (!stream_ok(call, s))
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult r = check_device(what, "buffer", p, bytes);
    if (r == CUDA_SUCCESS && fc.n.collectives++ == 0)
        fc.n.work_at_first_collective = fc.n.work;
    fc.n.work_at_last_collective = fc.n.work;
    return r != CUDA_SUCCESS ? r : order_touch(what, s, order_op(s), (uintptr_t)p, what);
}
CUresult fake_cuda_collective(CUstream stream, CUdeviceptr p, size_t bytes, const char *what)
{
    LOCKED(CUresult, do_collective(stream, p, bytes, what));
}

static CUresult do_event_elapsed(float *ms, CUevent a, CUevent b)
{
    const char *call = "cuEventElapsedTime";
    ENTER(call, F_CTX);
    if (!ms)
        return null_arg(call, "pMilliseconds");
    if (!live(call, "start event", a, K_EVENT) || !live(call, "end event", b, K_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!a->recorded || !b->recorded || ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING)) {
        complain("%s: the %s event %s", call, !a->recorded || (a->flags & CU_EVENT_DISABLE_TIMING) ? "start" : "end",
                 (!a->recorded || !b->recorded) ? "was never recorded" : "was created with CU_EVENT_DISABLE_TIMING");
        return CUDA_ERROR_INVALID_HANDLE;
    }
    *ms = (float)((b->t - a->t) * 1e3);
    return CUDA_SUCCESS;
}
/* cuda.h 13 maps cuEventElapsedTime to cuEventElapsedTime_v2; the driver exports both */
CUresult CUDAAPI cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    LOCKED(CUresult, do_event_elapsed(pMilliseconds, hStart, hEnd));
}
#ifdef cuEventElapsedTime
#undef cuEventElapsedTime
CUresult CUDAAPI cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd);
CUresult CUDAAPI cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    LOCKED(CUresult, do_event_elapsed(pMilliseconds, hStart, hEnd));
}
#endif

static CUresult do_event_destroy(CUevent e)
{
    ENTER("cuEventDestroy_v2", F_CTX);
    if (!live("cuEventDestroy_v2", "event", e, K_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    reg_del(e);
    free(e);
    return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventDestroy_v2(CUevent hEvent) { LOCKED(CUresult, do_event_destroy(hEvent)); }

/* ------------------------------------------------------------------ cuBLASLt */

#define LT_ALGO_MAGIC 0x66616b656c74616cull /* "fakeltal" */

static cublasStatus_t lt_enter(const char *call)
{
    configure();
    return injected(call) ? CUBLAS_STATUS_EXECUTION_FAILED : CUBLAS_STATUS_SUCCESS;
}

#define LT_ENTER(call)                                 \
    do {                                               \
        cublasStatus_t lt_enter_r_ = lt_enter(call);   \
        if (lt_enter_r_ != CUBLAS_STATUS_SUCCESS)      \
            return lt_enter_r_;                        \
    } while (0)

size_t CUBLASWINAPI cublasLtGetVersion(void) { return CUBLAS_VERSION; }

static const struct {
    cublasStatus_t status;
    const char *name, *text;
} lt_statuses[] = {
#define S(code, text) {code, #code, text}
    S(CUBLAS_STATUS_SUCCESS, "success"),
    S(CUBLAS_STATUS_NOT_INITIALIZED, "the library was not initialized"),
    S(CUBLAS_STATUS_ALLOC_FAILED, "the resource allocation failed"),
    S(CUBLAS_STATUS_INVALID_VALUE, "an invalid numeric value was used as an argument"),
    S(CUBLAS_STATUS_ARCH_MISMATCH, "an absent device architectural feature is required"),
    S(CUBLAS_STATUS_MAPPING_ERROR, "an access to GPU memory space failed"),
    S(CUBLAS_STATUS_EXECUTION_FAILED, "the GPU program failed to execute"),
    S(CUBLAS_STATUS_INTERNAL_ERROR, "an internal operation failed"),
    S(CUBLAS_STATUS_NOT_SUPPORTED, "the functionality requested is not supported"),
    S(CUBLAS_STATUS_LICENSE_ERROR, "license error"),
#undef S
};

const char *CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t status)
{
    for (size_t i = 0; i < sizeof lt_statuses / sizeof *lt_statuses; i++)
        if (lt_statuses[i].status == status)
            return lt_statuses[i].name;
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t status)
{
    for (size_t i = 0; i < sizeof lt_statuses / sizeof *lt_statuses; i++)
        if (lt_statuses[i].status == status)
            return lt_statuses[i].text;
    return "unknown error";
}

static cublasStatus_t lt_null(const char *call, const char *what)
{
    lt_complain("%s: %s is NULL", call, what);
    return CUBLAS_STATUS_INVALID_VALUE;
}

/* Creates an object of `size` bytes as a handle of `kind`. */
static cublasStatus_t lt_create(const char *call, void **out, size_t size, int kind)
{
    LT_ENTER(call);
    if (!out)
        return lt_null(call, "the handle pointer");
    void *p = calloc(1, size);
    if (!p || reg_add(p, kind) != 0) {
        free(p);
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t lt_destroy(const char *call, void *p, int kind)
{
    LT_ENTER(call);
    if (!p && kind != K_LT)
        return CUBLAS_STATUS_SUCCESS; /* destroying NULL descriptors is allowed */
    if (!live(call, "handle", p, kind))
        return CUBLAS_STATUS_INVALID_VALUE;
    reg_del(p);
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t do_lt_create(cublasLtHandle_t *h)
{
    void *p = NULL;
    cublasStatus_t r = lt_create("cublasLtCreate", h ? &p : NULL, sizeof(struct cublasLtContext), K_LT);
    if (r == CUBLAS_STATUS_SUCCESS)
        *h = p;
    return r;
}
cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t *lightHandle) { LOCKED(cublasStatus_t, do_lt_create(lightHandle)); }
cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t lightHandle)
{
    LOCKED(cublasStatus_t, lt_destroy("cublasLtDestroy", lightHandle, K_LT));
}

/* Element size of a matrix type (0: not one the fake knows). */
static size_t type_size(int32_t t)
{
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F: return 2;
    case CUDA_R_16BF: return 2;
    case CUDA_R_64F: return 8;
    case CUDA_R_8I: return 1;
    case CUDA_R_32I: return 4;
    case CUDA_R_8F_E4M3: return 1;
    case CUDA_R_8F_E5M2: return 1;
    default: return 0;
    }
}

static const char *type_name(int32_t t)
{
    switch (t) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_16F: return "CUDA_R_16F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    case CUDA_R_64F: return "CUDA_R_64F";
    case CUDA_R_8I: return "CUDA_R_8I";
    case CUDA_R_32I: return "CUDA_R_32I";
    case CUDA_R_8F_E4M3: return "CUDA_R_8F_E4M3";
    case CUDA_R_8F_E5M2: return "CUDA_R_8F_E5M2";
    default: return "an unknown type";
    }
}

static int compute_known(int32_t c)
{
    switch (c) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
    case CUBLAS_COMPUTE_32I:
    case CUBLAS_COMPUTE_32I_PEDANTIC: return 1;
    default: return 0;
    }
}

static cublasStatus_t do_desc_create(cublasLtMatmulDesc_t *out, cublasComputeType_t compute, cudaDataType_t scale)
{
    const char *call = "cublasLtMatmulDescCreate";
    if (!compute_known((int32_t)compute) || !type_size((int32_t)scale)) {
        LT_ENTER(call);
        lt_complain("%s: compute type %d / scale type %d not known", call, (int)compute, (int)scale);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    void *p = NULL;
    cublasStatus_t r = lt_create(call, out ? &p : NULL, sizeof(fc_ltdesc), K_LT_DESC);
    if (r != CUBLAS_STATUS_SUCCESS)
        return r;
    fc_ltdesc *d = p;
    d->compute = (int32_t)compute;
    d->scale = (int32_t)scale;
    d->pointer_mode = CUBLASLT_POINTER_MODE_HOST;
    d->transa = d->transb = d->transc = CUBLAS_OP_N;
    d->fill = CUBLAS_FILL_MODE_FULL;
    d->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    d->bias_type = -1;
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *matmulDesc, cublasComputeType_t computeType,
                                                     cudaDataType_t scaleType)
{
    LOCKED(cublasStatus_t, do_desc_create(matmulDesc, computeType, scaleType));
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc)
{
    LOCKED(cublasStatus_t, lt_destroy("cublasLtMatmulDescDestroy", matmulDesc, K_LT_DESC));
}

/* Copies an attribute of exactly `want` bytes. */
static cublasStatus_t set_attr(const char *call, const char *attr, void *dst, size_t want, const void *buf, size_t size)
{
    if (!buf || size != want) {
        lt_complain("%s(%s): %zu bytes at %p, the attribute takes %zu", call, attr, size, buf, want);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    memcpy(dst, buf, want);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t do_desc_set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void *buf,
                                  size_t size)
{
    const char *call = "cublasLtMatmulDescSetAttribute";
    LT_ENTER(call);
    if (!live(call, "descriptor", desc, K_LT_DESC))
        return CUBLAS_STATUS_INVALID_VALUE;
    fc_ltdesc *d = (fc_ltdesc *)(void *)desc;
    int32_t i32;
    int64_t i64;
    int8_t i8;
    const void *ptr;
    cublasStatus_t r;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
        if ((r = set_attr(call, "COMPUTE_TYPE", &i32, sizeof i32, buf, size)) == 0 && !compute_known(i32)) {
            lt_complain("%s: compute type %d not known", call, i32);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (r == 0)
            d->compute = i32;
        return r;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
        if ((r = set_attr(call, "SCALE_TYPE", &i32, sizeof i32, buf, size)) == 0 && !type_size(i32)) {
            lt_complain("%s: scale type %d not known", call, i32);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (r == 0)
            d->scale = i32;
        return r;
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
        if ((r = set_attr(call, "POINTER_MODE", &i32, sizeof i32, buf, size)) == 0 &&
            (i32 < CUBLASLT_POINTER_MODE_HOST || i32 > CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST)) {
            lt_complain("%s: pointer mode %d", call, i32);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (r == 0)
            d->pointer_mode = i32;
        return r;
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
    case CUBLASLT_MATMUL_DESC_TRANSC:
        if ((r = set_attr(call, "TRANS", &i32, sizeof i32, buf, size)) != 0)
            return r;
        if (i32 != CUBLAS_OP_N && i32 != CUBLAS_OP_T && i32 != CUBLAS_OP_C) {
            lt_complain("%s: transpose %d (CUBLAS_OP_N, _T or _C)", call, i32);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        *(attr == CUBLASLT_MATMUL_DESC_TRANSA ? &d->transa : attr == CUBLASLT_MATMUL_DESC_TRANSB ? &d->transb
                                                                                                 : &d->transc) = i32;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_FILL_MODE:
        if ((r = set_attr(call, "FILL_MODE", &i32, sizeof i32, buf, size)) == 0)
            d->fill = i32;
        return r;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        return set_attr(call, "EPILOGUE", &d->epilogue, sizeof d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if ((r = set_attr(call, "BIAS_POINTER", &ptr, sizeof ptr, buf, size)) == 0)
            d->bias = ptr;
        return r;
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
        if ((r = set_attr(call, "BIAS_BATCH_STRIDE", &i64, sizeof i64, buf, size)) == 0)
            d->bias_stride = i64;
        return r;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        if ((r = set_attr(call, "BIAS_DATA_TYPE", &i32, sizeof i32, buf, size)) == 0)
            d->bias_type = i32;
        return r;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
    case CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE:
        return set_attr(call, "an int64_t attribute", &i64, sizeof i64, buf, size);
    case CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET:
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE:
    case CUBLASLT_MATMUL_DESC_A_SCALE_MODE:
    case CUBLASLT_MATMUL_DESC_B_SCALE_MODE:
    case CUBLASLT_MATMUL_DESC_C_SCALE_MODE:
    case CUBLASLT_MATMUL_DESC_D_SCALE_MODE:
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_MODE:
    case CUBLASLT_MATMUL_DESC_D_OUT_SCALE_MODE:
        return set_attr(call, "an int32_t attribute", &i32, sizeof i32, buf, size);
    case CUBLASLT_MATMUL_DESC_FAST_ACCUM:
        return set_attr(call, "FAST_ACCUM", &i8, sizeof i8, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
    case CUBLASLT_MATMUL_DESC_A_SCALE_POINTER:
    case CUBLASLT_MATMUL_DESC_B_SCALE_POINTER:
    case CUBLASLT_MATMUL_DESC_C_SCALE_POINTER:
    case CUBLASLT_MATMUL_DESC_D_SCALE_POINTER:
    case CUBLASLT_MATMUL_DESC_AMAX_D_POINTER:
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_POINTER:
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_AMAX_POINTER:
    case CUBLASLT_MATMUL_DESC_D_OUT_SCALE_POINTER:
    case CUBLASLT_MATMUL_DESC_EMULATION_DESCRIPTOR:
        if ((r = set_attr(call, "a pointer attribute", &ptr, sizeof ptr, buf, size)) == 0 && ptr)
            lt_complain("%s: attribute %d (scale, amax, aux or emulation pointers) is not modelled by the fake "
                        "(extend tests/fakecuda/fake_cuda.c)",
                        call, (int)attr);
        return r == 0 && ptr ? CUBLAS_STATUS_NOT_SUPPORTED : r;
    default:
        lt_complain("%s: attribute %d not known", call, (int)attr);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                                           cublasLtMatmulDescAttributes_t attr, const void *buf,
                                                           size_t sizeInBytes)
{
    LOCKED(cublasStatus_t, do_desc_set(matmulDesc, attr, buf, sizeInBytes));
}

static cublasStatus_t do_layout_create(cublasLtMatrixLayout_t *out, cudaDataType type, uint64_t rows, uint64_t cols,
                                       int64_t ld)
{
    const char *call = "cublasLtMatrixLayoutCreate";
    if (!type_size((int32_t)type)) {
        LT_ENTER(call);
        lt_complain("%s: type %d is not one the fake knows (%s)", call, (int)type,
                    "CUDA_R_32F, _16F, _16BF, _64F, _8I, _32I, _8F_E4M3, _8F_E5M2");
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    void *p = NULL;
    cublasStatus_t r = lt_create(call, out ? &p : NULL, sizeof(fc_layout), K_LT_LAYOUT);
    if (r != CUBLAS_STATUS_SUCCESS)
        return r;
    fc_layout *L = p;
    *L = (fc_layout){.type = (uint32_t)type, .order = CUBLASLT_ORDER_COL, .rows = rows, .cols = cols, .ld = ld, .batch = 1};
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *matLayout, cudaDataType type,
                                                       uint64_t rows, uint64_t cols, int64_t ld)
{
    LOCKED(cublasStatus_t, do_layout_create(matLayout, type, rows, cols, ld));
}
cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout)
{
    LOCKED(cublasStatus_t, lt_destroy("cublasLtMatrixLayoutDestroy", matLayout, K_LT_LAYOUT));
}

static cublasStatus_t do_layout_set(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                                    const void *buf, size_t size)
{
    const char *call = "cublasLtMatrixLayoutSetAttribute";
    LT_ENTER(call);
    if (!live(call, "layout", layout, K_LT_LAYOUT))
        return CUBLAS_STATUS_INVALID_VALUE;
    fc_layout *L = (fc_layout *)(void *)layout;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: return set_attr(call, "TYPE", &L->type, sizeof L->type, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return set_attr(call, "ORDER", &L->order, sizeof L->order, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return set_attr(call, "ROWS", &L->rows, sizeof L->rows, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return set_attr(call, "COLS", &L->cols, sizeof L->cols, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_LD: return set_attr(call, "LD", &L->ld, sizeof L->ld, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return set_attr(call, "BATCH_COUNT", &L->batch, sizeof L->batch, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
        return set_attr(call, "STRIDED_BATCH_OFFSET", &L->stride, sizeof L->stride, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET: return set_attr(call, "PLANE_OFFSET", &L->plane, sizeof L->plane, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_MODE:
        return set_attr(call, "BATCH_MODE", &L->batch_mode, sizeof L->batch_mode, buf, size);
    default:
        lt_complain("%s: attribute %d not known", call, (int)attr);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
}
cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t matLayout,
                                                             cublasLtMatrixLayoutAttribute_t attr, const void *buf,
                                                             size_t sizeInBytes)
{
    LOCKED(cublasStatus_t, do_layout_set(matLayout, attr, buf, sizeInBytes));
}

static cublasStatus_t do_pref_create(cublasLtMatmulPreference_t *out)
{
    void *p = NULL;
    cublasStatus_t r = lt_create("cublasLtMatmulPreferenceCreate", out ? &p : NULL, sizeof(fc_pref), K_LT_PREF);
    if (r != CUBLAS_STATUS_SUCCESS)
        return r;
    fc_pref *pf = p;
    for (int i = 0; i < 4; i++)
        pf->align[i] = 256; /* cuBLASLt's default: the heuristic assumes 256-byte aligned matrices */
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref)
{
    LOCKED(cublasStatus_t, do_pref_create(pref));
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref)
{
    LOCKED(cublasStatus_t, lt_destroy("cublasLtMatmulPreferenceDestroy", pref, K_LT_PREF));
}

static cublasStatus_t do_pref_set(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
                                  const void *buf, size_t size)
{
    const char *call = "cublasLtMatmulPreferenceSetAttribute";
    LT_ENTER(call);
    if (!live(call, "preference", pref, K_LT_PREF))
        return CUBLAS_STATUS_INVALID_VALUE;
    fc_pref *p = (fc_pref *)(void *)pref;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return set_attr(call, "SEARCH_MODE", &p->search, sizeof p->search, buf, size);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        return set_attr(call, "MAX_WORKSPACE_BYTES", &p->max_workspace, sizeof p->max_workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
        return set_attr(call, "REDUCTION_SCHEME_MASK", &p->reduction, sizeof p->reduction, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: {
        uint32_t *a = &p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES];
        cublasStatus_t r = set_attr(call, "MIN_ALIGNMENT", a, sizeof *a, buf, size);
        if (r == 0 && (*a == 0 || (*a & (*a - 1)) || *a > 256)) {
            lt_complain("%s: alignment %u (a power of two, at most 256)", call, *a);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        return r;
    }
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT: return set_attr(call, "MAX_WAVES_COUNT", &p->waves, sizeof p->waves, buf, size);
    case CUBLASLT_MATMUL_PREF_IMPL_MASK: return set_attr(call, "IMPL_MASK", &p->impl, sizeof p->impl, buf, size);
    default:
        lt_complain("%s: attribute %d not known", call, (int)attr);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                                 cublasLtMatmulPreferenceAttributes_t attr,
                                                                 const void *buf, size_t sizeInBytes)
{
    LOCKED(cublasStatus_t, do_pref_set(pref, attr, buf, sizeInBytes));
}

/* The problem a matmul describes, from its descriptor and layouts. */
typedef struct {
    const fc_ltdesc *d;
    const fc_layout *L[4]; /* A, B, C, D */
    uint64_t m, n, k;
    int32_t batch;
    uint64_t signature;
} lt_problem;

static const char *const operand_name[4] = {"A", "B", "C", "D"};

static const char *op_name(int32_t t) { return t == CUBLAS_OP_N ? "N" : "T"; }

/* Elements [lo, hi) relative to the pointer that a layout spans, all batches included. */
static int layout_span(const char *call, const char *name, const fc_layout *L, int64_t *lo, int64_t *hi)
{
    if (L->order != CUBLASLT_ORDER_COL && L->order != CUBLASLT_ORDER_ROW) {
        lt_complain("%s: %s: order %d is not modelled by the fake (COL or ROW)", call, name, L->order);
        return -1;
    }
    if (L->batch_mode != 0 || L->plane != 0) {
        lt_complain("%s: %s: pointer-array batches and planar complex layouts are not modelled by the fake", call, name);
        return -1;
    }
    if (L->rows > INT32_MAX || L->cols > INT32_MAX || L->ld < 0 || L->ld > INT32_MAX * 64ll || L->batch < 1) {
        lt_complain("%s: %s: rows %llu, cols %llu, ld %lld, batch count %d out of range", call, name,
                    (unsigned long long)L->rows, (unsigned long long)L->cols, (long long)L->ld, L->batch);
        return -1;
    }
    int col = L->order == CUBLASLT_ORDER_COL;
    int64_t lead = (int64_t)(col ? L->rows : L->cols), other = (int64_t)(col ? L->cols : L->rows);
    if (L->ld < (lead > 1 ? lead : 1)) {
        lt_complain("%s: %s: ld %lld < %s %lld (%s-major %llux%llu)", call, name, (long long)L->ld, col ? "rows" : "cols",
                    (long long)lead, col ? "column" : "row", (unsigned long long)L->rows, (unsigned long long)L->cols);
        return -1;
    }
    int64_t one = lead && other ? (other - 1) * L->ld + lead : 0;
    double far = (double)(L->batch - 1) * (double)(L->stride < 0 ? -L->stride : L->stride) + (double)one;
    if (far > 4e18 / 8) {
        lt_complain("%s: %s: batch count %d x stride %lld is out of range", call, name, L->batch, (long long)L->stride);
        return -1;
    }
    int64_t offs = (int64_t)(L->batch - 1) * L->stride;
    *lo = offs < 0 ? offs : 0;
    *hi = (offs > 0 ? offs : 0) + one;
    if (one == 0)
        *lo = *hi = 0;
    return 0;
}

/* Checks that the descriptor and the four layouts make one valid product. */
static cublasStatus_t lt_check_problem(const char *call, cublasLtHandle_t h, cublasLtMatmulDesc_t desc,
                                       cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                       cublasLtMatrixLayout_t dd, lt_problem *pb)
{
    if (!live(call, "handle", h, K_LT) || !live(call, "computeDesc", desc, K_LT_DESC))
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasLtMatrixLayout_t layouts[4] = {a, b, c, dd};
    const char *args[4] = {"Adesc", "Bdesc", "Cdesc", "Ddesc"};
    for (int i = 0; i < 4; i++) {
        if (!live(call, args[i], layouts[i], K_LT_LAYOUT))
            return CUBLAS_STATUS_INVALID_VALUE;
        pb->L[i] = (const fc_layout *)(const void *)layouts[i];
    }
    const fc_ltdesc *d = (const fc_ltdesc *)(const void *)desc;
    pb->d = d;
    const fc_layout *A = pb->L[0], *B = pb->L[1], *C = pb->L[2], *D = pb->L[3];
    if (d->transc != CUBLAS_OP_N || d->fill != CUBLAS_FILL_MODE_FULL) {
        lt_complain("%s: TRANSC must be CUBLAS_OP_N and FILL_MODE full", call);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    int ta = d->transa != CUBLAS_OP_N, tb = d->transb != CUBLAS_OP_N;
    uint64_t m = D->rows, n = D->cols;
    uint64_t am = ta ? A->cols : A->rows, ak = ta ? A->rows : A->cols;
    uint64_t bk = tb ? B->cols : B->rows, bn = tb ? B->rows : B->cols;
    if (am != m || bn != n || ak != bk || C->rows != m || C->cols != n) {
        lt_complain("%s: shapes do not make a product: op(A) is %llux%llu (A %llux%llu, trans %s), op(B) is %llux%llu "
                    "(B %llux%llu, trans %s), C is %llux%llu, D is %llux%llu; want op(A) m x k, op(B) k x n, C and D m x n",
                    call, (unsigned long long)am, (unsigned long long)ak, (unsigned long long)A->rows,
                    (unsigned long long)A->cols, op_name(d->transa), (unsigned long long)bk, (unsigned long long)bn,
                    (unsigned long long)B->rows, (unsigned long long)B->cols, op_name(d->transb),
                    (unsigned long long)C->rows, (unsigned long long)C->cols, (unsigned long long)m,
                    (unsigned long long)n);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (A->batch != D->batch || B->batch != D->batch || C->batch != D->batch) {
        lt_complain("%s: batch counts A %d, B %d, C %d, D %d: cuBLASLt wants them all equal (broadcast a matrix "
                    "with batch stride 0)",
                    call, A->batch, B->batch, C->batch, D->batch);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (D->batch > 1 && D->stride == 0) {
        lt_complain("%s: D has %d batches at stride 0: they would all write the same matrix (a race, not a sum)", call,
                    D->batch);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    for (int i = 0; i < 4; i++) {
        int64_t lo, hi;
        if (layout_span(call, operand_name[i], pb->L[i], &lo, &hi) != 0)
            return CUBLAS_STATUS_INVALID_VALUE;
    }
    /* the types: cuBLASLt's table of supported combinations, the non-FP8 part */
    int32_t ct = d->compute, ab = (int32_t)A->type, cd = (int32_t)D->type, s = d->scale;
    int ok = A->type == B->type && C->type == D->type;
    if (ct == CUBLAS_COMPUTE_32F || ct == CUBLAS_COMPUTE_32F_PEDANTIC || ct == CUBLAS_COMPUTE_32F_FAST_16F ||
        ct == CUBLAS_COMPUTE_32F_FAST_16BF || ct == CUBLAS_COMPUTE_32F_FAST_TF32)
        ok = ok && s == CUDA_R_32F && (ab == CUDA_R_32F || ab == CUDA_R_16F || ab == CUDA_R_16BF) &&
             (cd == ab || cd == CUDA_R_32F);
    else if (ct == CUBLAS_COMPUTE_16F || ct == CUBLAS_COMPUTE_16F_PEDANTIC)
        ok = ok && ab == CUDA_R_16F && cd == CUDA_R_16F && (s == CUDA_R_16F || s == CUDA_R_32F);
    else if (ct == CUBLAS_COMPUTE_64F || ct == CUBLAS_COMPUTE_64F_PEDANTIC)
        ok = ok && ab == CUDA_R_64F && cd == CUDA_R_64F && s == CUDA_R_64F;
    else
        ok = ok && ab == CUDA_R_8I && (cd == CUDA_R_32I || cd == CUDA_R_8I);
    if (!ok) {
        lt_complain("%s: types A %s, B %s, C %s, D %s with compute type %d and scale %s are not a combination "
                    "cuBLASLt supports (A and B one type, C and D one type: 32F, or 16F/16BF with C/D the same or 32F)",
                    call, type_name((int32_t)A->type), type_name((int32_t)B->type), type_name((int32_t)C->type),
                    type_name(cd), ct, type_name(s));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && d->epilogue != CUBLASLT_EPILOGUE_RELU &&
        d->epilogue != CUBLASLT_EPILOGUE_GELU && d->epilogue != CUBLASLT_EPILOGUE_BIAS &&
        d->epilogue != CUBLASLT_EPILOGUE_RELU_BIAS && d->epilogue != CUBLASLT_EPILOGUE_GELU_BIAS) {
        lt_complain("%s: epilogue %u (aux, gradient) is not modelled by the fake (extend tests/fakecuda/fake_cuda.c)",
                    call, d->epilogue);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    pb->m = m;
    pb->n = n;
    pb->k = ak;
    pb->batch = D->batch;
    pb->signature = (uint64_t)ta | (uint64_t)tb << 1 | (uint64_t)(ct & 0xff) << 8 | (uint64_t)(ab & 0xff) << 16 |
                    (uint64_t)(cd & 0xff) << 24 | (uint64_t)(uint32_t)D->batch << 32;
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t do_heuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                   cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                   cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t *out,
                                   int *count)
{
    const char *call = "cublasLtMatmulAlgoGetHeuristic";
    LT_ENTER(call);
    if (!out || !count)
        return lt_null(call, !out ? "heuristicResultsArray" : "returnAlgoCount");
    if (requested < 1) {
        lt_complain("%s: requestedAlgoCount %d", call, requested);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!live(call, "preference", pref, K_LT_PREF))
        return CUBLAS_STATUS_INVALID_VALUE;
    lt_problem pb;
    cublasStatus_t r = lt_check_problem(call, h, desc, a, b, c, d, &pb);
    if (r != CUBLAS_STATUS_SUCCESS)
        return r;
    const fc_pref *p = (const fc_pref *)(const void *)pref;
    memset(out, 0, sizeof *out);
    out->algo.data[0] = LT_ALGO_MAGIC;
    out->algo.data[1] = (uint64_t)p->align[0] | (uint64_t)p->align[1] << 16 | (uint64_t)p->align[2] << 32 |
                        (uint64_t)p->align[3] << 48;
    out->algo.data[2] = pb.m;
    out->algo.data[3] = pb.n;
    out->algo.data[4] = pb.k;
    out->algo.data[5] = pb.signature;
    out->workspaceSize = 0;
    out->state = CUBLAS_STATUS_SUCCESS;
    out->wavesCount = 1.0f;
    *count = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle,
                                                           cublasLtMatmulDesc_t operationDesc,
                                                           cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                                           cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                                           cublasLtMatmulPreference_t preference,
                                                           int requestedAlgoCount,
                                                           cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                                           int *returnAlgoCount)
{
    LOCKED(cublasStatus_t, do_heuristic(lightHandle, operationDesc, Adesc, Bdesc, Cdesc, Ddesc, preference,
                                        requestedAlgoCount, heuristicResultsArray, returnAlgoCount));
}

static int overlap(const fc_range *x, const fc_range *y)
{
    return x->bytes && y->bytes && x->ptr < y->ptr + y->bytes && y->ptr < x->ptr + x->bytes;
}

/* ------------------------------------------------------------------ FAKE_CUDA_COMPUTE: the product on the host */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (e == 0x1f)
        bits = sign | 0x7f800000u | man << 13; /* inf, NaN */
    else if (e)
        bits = sign | (e + 112) << 23 | man << 13;
    else if (!man)
        bits = sign;
    else { /* subnormal: man·2^-24, normalized */
        uint32_t fe = 113;
        while (!(man & 0x400u)) {
            man <<= 1;
            fe--;
        }
        bits = sign | fe << 23 | (man & 0x3ffu) << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest, ties to even. */
static uint16_t float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu)); /* a quiet NaN */
    if (ax >= 0x477ff000u)                                          /* >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) { /* >= 2^-14: normal */
        uint32_t r = ax - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax <= 0x33000000u) /* <= 2^-25: zero (2^-25 is a tie, to the even 0) */
        return (uint16_t)sign;
    uint32_t e = ax >> 23, man = (ax & 0x7fffffu) | 0x800000u; /* man·2^(e-150), in units of 2^-24: */
    uint32_t shift = 126 - e, q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++; /* 0x400: the smallest normal, encoded right */
    return (uint16_t)(sign | q);
}

static float bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint16_t float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* a quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static int computable_type(int32_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF || t == CUDA_R_64F; }

/* Element i of an array of type t, widened. */
static double fc_load(int32_t t, const void *base, int64_t i)
{
    const unsigned char *p = (const unsigned char *)base + i * (int64_t)type_size(t);
    float f;
    double d;
    uint16_t h;
    switch (t) {
    case CUDA_R_32F: memcpy(&f, p, sizeof f); return f;
    case CUDA_R_64F: memcpy(&d, p, sizeof d); return d;
    case CUDA_R_16F: memcpy(&h, p, sizeof h); return half_to_float(h);
    case CUDA_R_16BF: memcpy(&h, p, sizeof h); return bf16_to_float(h);
    default: return 0;
    }
}

/* Stores v as element i of type t: through float (the 32F compute type's
 * result), then to nearest even for the 16-bit types; _64F exactly. */
static void fc_store(int32_t t, void *base, int64_t i, double v)
{
    unsigned char *p = (unsigned char *)base + i * (int64_t)type_size(t);
    float f = (float)v;
    uint16_t h;
    switch (t) {
    case CUDA_R_32F: memcpy(p, &f, sizeof f); break;
    case CUDA_R_64F: memcpy(p, &v, sizeof v); break;
    case CUDA_R_16F: h = float_to_half(f); memcpy(p, &h, sizeof h); break;
    case CUDA_R_16BF: h = float_to_bf16(f); memcpy(p, &h, sizeof h); break;
    default: break;
    }
}

/* The offset (elements) of (row, col) of batch entry z. */
static int64_t fc_at(const fc_layout *L, int64_t z, uint64_t row, uint64_t col)
{
    int64_t r = (int64_t)row, c = (int64_t)col;
    return z * L->stride + (L->order == CUBLASLT_ORDER_COL ? c * L->ld + r : r * L->ld + c);
}

/* Whether the fake can compute this product; complains when not. */
static int compute_supported(const char *call, const lt_problem *pb)
{
    const fc_ltdesc *d = pb->d;
    for (int i = 0; i < 4; i++)
        if (!computable_type((int32_t)pb->L[i]->type)) {
            lt_complain("%s: %s is %s, not computed by the fake (FAKE_CUDA_COMPUTE: 32F, 16F, 16BF, 64F)", call,
                        operand_name[i], type_name((int32_t)pb->L[i]->type));
            return 0;
        }
    if (d->scale != CUDA_R_32F && d->scale != CUDA_R_16F && d->scale != CUDA_R_64F) {
        lt_complain("%s: scale type %s, not computed by the fake (FAKE_CUDA_COMPUTE)", call, type_name(d->scale));
        return 0;
    }
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
        lt_complain("%s: epilogue %u, not computed by the fake (FAKE_CUDA_COMPUTE: the default epilogue only)", call,
                    d->epilogue);
        return 0;
    }
    return 1;
}

/* alpha or beta for row i: from the host copy or the device pointer (a vector in the vector modes). */
static double scalar_at(const fc_gemm *g, int beta, uint64_t i)
{
    int32_t mode = g->d.pointer_mode;
    if (beta && mode == CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO)
        return 0;
    if (mode == CUBLASLT_POINTER_MODE_HOST || (beta && mode == CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST))
        return fc_load(g->d.scale, beta ? g->beta_v : g->alpha_v, 0);
    return fc_load(g->d.scale, beta ? g->beta : g->alpha, mode == CUBLASLT_POINTER_MODE_DEVICE ? 0 : (int64_t)i);
}

/* D = alpha·op(A)·op(B) + beta·C, every batch entry; op(A) is m×k, op(B) k×n. */
static void gemm_compute(const fc_gemm *g)
{
    const fc_layout *LA = &g->L[0], *LB = &g->L[1], *LC = &g->L[2], *LD = &g->L[3];
    int ta = g->d.transa != CUBLAS_OP_N, tb = g->d.transb != CUBLAS_OP_N;
    /* op(A) and op(B)ᵀ of each batch entry widened once into rows of k doubles, then
     * the same sums in the same order as the element-wise loop below (which stays the
     * fallback when these buffers cannot be had) */
    size_t na = (size_t)g->m * g->k, nb = (size_t)g->k * g->n;
    double *a = na && nb ? malloc(na * sizeof *a) : NULL, *b = a ? malloc(nb * sizeof *b) : NULL;
    if (a && b) {
        for (int64_t z = 0; z < LD->batch; z++) {
            for (uint64_t i = 0; i < g->m; i++)
                for (uint64_t p = 0; p < g->k; p++)
                    a[i * g->k + p] = fc_load((int32_t)LA->type, g->p[0], ta ? fc_at(LA, z, p, i) : fc_at(LA, z, i, p));
            for (uint64_t j = 0; j < g->n; j++)
                for (uint64_t p = 0; p < g->k; p++)
                    b[j * g->k + p] = fc_load((int32_t)LB->type, g->p[1], tb ? fc_at(LB, z, j, p) : fc_at(LB, z, p, j));
            for (uint64_t j = 0; j < g->n; j++)
                for (uint64_t i = 0; i < g->m; i++) {
                    double alpha = scalar_at(g, 0, i), beta = scalar_at(g, 1, i), acc = 0;
                    if (alpha != 0) {
                        const double *ra = a + i * g->k, *rb = b + j * g->k;
                        for (uint64_t p = 0; p < g->k; p++)
                            acc += ra[p] * rb[p];
                    }
                    double v = alpha * acc;
                    if (beta != 0)
                        v += beta * fc_load((int32_t)LC->type, g->p[2], fc_at(LC, z, i, j));
                    fc_store((int32_t)LD->type, (void *)(uintptr_t)g->p[3], fc_at(LD, z, i, j), v);
                }
        }
        free(a);
        free(b);
        fc.n.matmuls_computed++;
        return;
    }
    free(a);
    for (int64_t z = 0; z < LD->batch; z++)
        for (uint64_t j = 0; j < g->n; j++)
            for (uint64_t i = 0; i < g->m; i++) {
                double alpha = scalar_at(g, 0, i), beta = scalar_at(g, 1, i), acc = 0;
                if (alpha != 0)
                    for (uint64_t p = 0; p < g->k; p++)
                        acc += fc_load((int32_t)LA->type, g->p[0], ta ? fc_at(LA, z, p, i) : fc_at(LA, z, i, p)) *
                               fc_load((int32_t)LB->type, g->p[1], tb ? fc_at(LB, z, j, p) : fc_at(LB, z, p, j));
                double v = alpha * acc;
                if (beta != 0)
                    v += beta * fc_load((int32_t)LC->type, g->p[2], fc_at(LC, z, i, j));
                fc_store((int32_t)LD->type, (void *)(uintptr_t)g->p[3], fc_at(LD, z, i, j), v);
            }
    fc.n.matmuls_computed++;
}

static cublasStatus_t do_matmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                                cublasLtMatrixLayout_t Adesc, const void *B, cublasLtMatrixLayout_t Bdesc,
                                const void *beta, const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                                cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace,
                                size_t workspace_bytes, cudaStream_t stream)
{
    const char *call = "cublasLtMatmul";
    LT_ENTER(call);
    if (fc.sticky)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    lt_problem pb;
    cublasStatus_t r = lt_check_problem(call, h, desc, Adesc, Bdesc, Cdesc, Ddesc, &pb);
    if (r != CUBLAS_STATUS_SUCCESS)
        return r;
    if (!stream_ok(call, stream))
        return CUBLAS_STATUS_INVALID_VALUE;
    const fc_ltdesc *d = pb.d;
    /* alpha and beta */
    size_t ssize = type_size(d->scale);
    if (!alpha || !beta)
        return lt_null(call, !alpha ? "alpha" : "beta");
    fc_range rg[8];
    int nrg = 0;
    if (d->pointer_mode == CUBLASLT_POINTER_MODE_HOST) {
        unsigned char scratch[8];
        memcpy(scratch, alpha, ssize); /* host scalars are read at the call */
        memcpy(scratch, beta, ssize);
    } else {
        size_t alen = d->pointer_mode == CUBLASLT_POINTER_MODE_DEVICE ? 1 : pb.m;
        rg[nrg++] = (fc_range){(uintptr_t)alpha, alen * ssize, "alpha (device pointer mode)"};
        if (d->pointer_mode != CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO &&
            d->pointer_mode != CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST)
            rg[nrg++] = (fc_range){(uintptr_t)beta, (d->pointer_mode == CUBLASLT_POINTER_MODE_DEVICE ? 1 : pb.m) * ssize,
                                   "beta (device pointer mode)"};
    }
    /* the four matrices */
    const void *ptr[4] = {A, B, C, D};
    fc_range mat[4];
    for (int i = 0; i < 4; i++) {
        const fc_layout *L = pb.L[i];
        size_t es = type_size((int32_t)L->type);
        int64_t lo, hi;
        layout_span(call, operand_name[i], L, &lo, &hi);
        if (!ptr[i]) {
            lt_complain("%s: %s is NULL", call, operand_name[i]);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if ((uintptr_t)ptr[i] % es) {
            lt_complain("%s: %s %p is not aligned to its %zu-byte elements", call, operand_name[i], ptr[i], es);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        mat[i] = (fc_range){(uintptr_t)ptr[i] + (uintptr_t)(lo * (int64_t)es), (size_t)(hi - lo) * es, operand_name[i]};
        if (!range_ok("fake cublasLt: ", call, operand_name[i], mat[i].ptr, mat[i].bytes)) {
            lt_complain("%s: (%s is %s %llux%llu, ld %lld, %s-major, %d batches at stride %lld, %s)", call,
                        operand_name[i], type_name((int32_t)L->type), (unsigned long long)L->rows,
                        (unsigned long long)L->cols, (long long)L->ld, L->order == CUBLASLT_ORDER_COL ? "column" : "row",
                        L->batch, (long long)L->stride, i < 2 ? (i ? op_name(d->transb) : op_name(d->transa)) : "N");
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        rg[nrg++] = mat[i];
    }
    for (int i = 0; i < 2; i++)
        if (overlap(&mat[i], &mat[3])) {
            lt_complain("%s: D [0x%llx, +%zu) overlaps %s [0x%llx, +%zu): the product would read what it writes", call,
                        (unsigned long long)mat[3].ptr, mat[3].bytes, operand_name[i],
                        (unsigned long long)mat[i].ptr, mat[i].bytes);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    if (C == D) {
        const fc_layout *LC = pb.L[2], *LD = pb.L[3];
        if (LC->ld != LD->ld || LC->order != LD->order || LC->stride != LD->stride || LC->type != LD->type) {
            lt_complain("%s: C == D in place, but their layouts differ (ld %lld / %lld, stride %lld / %lld)", call,
                        (long long)LC->ld, (long long)LD->ld, (long long)LC->stride, (long long)LD->stride);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    } else if (overlap(&mat[2], &mat[3])) {
        lt_complain("%s: C and D overlap without being the same matrix", call);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    /* the bias epilogue: a vector of m elements (of D's type unless BIAS_DATA_TYPE) per batch */
    if (d->epilogue & CUBLASLT_EPILOGUE_BIAS) {
        size_t es = type_size(d->bias_type >= 0 ? d->bias_type : (int32_t)pb.L[3]->type);
        if (!d->bias || !es) {
            lt_complain("%s: a bias epilogue without a bias pointer (or of unknown type %d)", call, d->bias_type);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        rg[nrg++] = (fc_range){(uintptr_t)d->bias, (pb.m + (uint64_t)(pb.batch - 1) * (uint64_t)d->bias_stride) * es,
                               "bias"};
    }
    if (workspace_bytes > 0) {
        if (!workspace)
            return lt_null(call, "workspace (with a workspace size > 0)");
        rg[nrg++] = (fc_range){(uintptr_t)workspace, workspace_bytes, "workspace"};
    }
    for (int i = 0; i < nrg; i++)
        if (!range_ok("fake cublasLt: ", call, rg[i].what, rg[i].ptr, rg[i].bytes))
            return CUBLAS_STATUS_INVALID_VALUE;
    /* an algo from the heuristic: for this problem, with the alignment it was promised */
    if (algo) {
        if (algo->data[0] != LT_ALGO_MAGIC) {
            lt_complain("%s: the algo did not come from cublasLtMatmulAlgoGetHeuristic", call);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (algo->data[2] != pb.m || algo->data[3] != pb.n || algo->data[4] != pb.k || algo->data[5] != pb.signature) {
            lt_complain("%s: the algo was chosen for another problem (m n k %llu %llu %llu, this one %llu %llu %llu, "
                        "or other transposes, types or batch count)",
                        call, (unsigned long long)algo->data[2], (unsigned long long)algo->data[3],
                        (unsigned long long)algo->data[4], (unsigned long long)pb.m, (unsigned long long)pb.n,
                        (unsigned long long)pb.k);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        for (int i = 0; i < 4; i++) {
            uint64_t want = (algo->data[1] >> (16 * i)) & 0xffff;
            if (want && (uintptr_t)ptr[i] % want) {
                lt_complain("%s: %s %p is not %llu-byte aligned, as the preference given to the heuristic promised "
                            "(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_%s_BYTES, default 256)",
                            call, operand_name[i], ptr[i], (unsigned long long)want, operand_name[i]);
                return CUBLAS_STATUS_INVALID_VALUE;
            }
        }
    }
    if (fc.compute && !compute_supported(call, &pb))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    CUresult cr = capture_implicit(call, stream);
    if (cr != CUDA_SUCCESS)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    /* the product as given: host scalars are read now, even when captured */
    fc_gemm g = {.d = *d, .p = {A, B, C, D}, .alpha = alpha, .beta = beta, .m = pb.m, .n = pb.n, .k = pb.k};
    for (int i = 0; i < 4; i++)
        g.L[i] = *pb.L[i];
    if (d->pointer_mode == CUBLASLT_POINTER_MODE_HOST)
        memcpy(g.alpha_v, alpha, ssize);
    if (d->pointer_mode == CUBLASLT_POINTER_MODE_HOST || d->pointer_mode == CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST)
        memcpy(g.beta_v, beta, ssize);
    struct CUstream_st *rec = recording(stream);
    if (rec) {
        fc_node *nd = nodes_push(&rec->rec);
        if (!nd)
            return CUBLAS_STATUS_ALLOC_FAILED;
        nd->kind = N_MATMUL;
        for (int i = 0; i < nrg; i++)
            nd->range[i] = rg[i];
        nd->nrange = nrg;
        nd->gemm = g;
        rec->rec.matmuls++;
        fc.n.matmuls_captured++;
    } else {
        fc.n.matmuls++;
        fc.n.work++;
        if (fc.compute)
            gemm_compute(&g);
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                                           const void *alpha, const void *A, cublasLtMatrixLayout_t Adesc,
                                           const void *B, cublasLtMatrixLayout_t Bdesc, const void *beta,
                                           const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                                           cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo,
                                           void *workspace, size_t workspaceSizeInBytes, cudaStream_t stream)
{
    LOCKED(cublasStatus_t, do_matmul(lightHandle, computeDesc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo,
                                     workspace, workspaceSizeInBytes, stream));
}

/* ------------------------------------------------------------------ counts for tests in the same process */

long long fake_cuda_stat(const char *name);

static long long stat_of(const char *name)
{
    if (!name)
        return -1;
#define FC_STAT(f)                \
    if (strcmp(name, #f) == 0)    \
        return (long long)fc.n.f;
    FC_STAT(launches) FC_STAT(launches_captured) FC_STAT(graph_launches) FC_STAT(kernels_replayed)
    FC_STAT(matmuls) FC_STAT(matmuls_captured) FC_STAT(matmuls_replayed) FC_STAT(matmuls_computed)
    FC_STAT(copies) FC_STAT(memsets) FC_STAT(allocs) FC_STAT(modules) FC_STAT(captures) FC_STAT(kernels_run)
#undef FC_STAT
    return -1;
}

/* One count of the "fake-cuda stats:" line, now (-1: no such count). */
long long fake_cuda_stat(const char *name) { LOCKED(long long, stat_of(name)); }

/* ------------------------------------------------------------------ at exit */

__attribute__((destructor)) static void fake_cuda_fini(void)
{
    pthread_mutex_lock(&fc.mu);
    if (fc.verbose >= 1)
        fprintf(stderr,
                "fake-cuda stats: launches=%lu launches_captured=%lu graph_launches=%lu kernels_replayed=%lu "
                "matmuls=%lu matmuls_captured=%lu matmuls_replayed=%lu captures=%lu modules=%lu allocs=%lu peak_mib=%.1f copies=%lu "
                "copied_mib=%.1f memsets=%lu matmuls_computed=%lu kernels_run=%lu emu_compile_s=%.1f collectives=%lu "
                "work_between_collectives=%lu\n",
                fc.n.launches, fc.n.launches_captured, fc.n.graph_launches, fc.n.kernels_replayed, fc.n.matmuls,
                fc.n.matmuls_captured, fc.n.matmuls_replayed, fc.n.captures, fc.n.modules, fc.n.allocs, (double)fc.peak / (1 << 20),
                fc.n.copies, (double)fc.n.copied / (1 << 20), fc.n.memsets, fc.n.matmuls_computed, fc.n.kernels_run, fc.n.emu_compile_s, fc.n.collectives,
                fc.n.work_at_last_collective - fc.n.work_at_first_collective);
    size_t count[K_KINDS] = {0};
    for (size_t i = 0; i < fc.capslot; i++)
        if (fc.slot[i].kind > 0)
            count[fc.slot[i].kind]++;
    const char *when = "at exit";
    if (fc.leaks && fc.ctx_refs > 0)
        complain("leak: the primary context is still retained (%d) at exit", fc.ctx_refs);
    leak("device allocation", fc.nalloc, when);
    for (int k = K_MODULE; k < K_KINDS; k++)
        if (k != K_FUNC)
            leak(kind_name[k], count[k], when);
    /* give everything back (a sanitizer's leak check may run after this) */
    if (fc.ctx_refs > 0) {
        int verbose_leaks = fc.leaks;
        fc.leaks = 0;
        destroy_context();
        fc.leaks = verbose_leaks;
    }
    for (size_t i = 0; i < fc.capslot; i++) {
        fc_slot *s = &fc.slot[i];
        void *p = (void *)(uintptr_t)s->p;
        if (s->kind == K_GRAPH)
            nodes_free(&((struct CUgraph_st *)p)->nodes);
        if (s->kind > 0 && s->kind != K_FUNC && s->kind != K_MODULE) {
            s->kind = -1;
            free(p);
        }
    }
    free(fc.slot);
    fc.slot = NULL;
    fc.capslot = fc.nslot = fc.usedslot = 0;
    free(fc.alloc);
    fc.alloc = NULL;
    fc.nalloc = fc.capalloc = 0;
    pthread_mutex_unlock(&fc.mu);
}
