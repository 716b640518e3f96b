/* NVRTC compilation and the cubin cache (see cuda_nvrtc.h). */
#ifdef __linux__
#define _GNU_SOURCE 1 /* NOLINT(bugprone-reserved-identifier): sched_getaffinity, the cores this process may run on */
#endif
#include "config.h"

#include "codegen/cuda_nvrtc.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codegen/cubin_bundle.h"
#include "codegen/cuda_source_split.h"
#include "runtime/clock.h"

#ifdef EDMC_HAVE_CUDA
#include <nvrtc.h>
#endif

#define CACHE_MAGIC "EDMCUBIN"
#define CACHE_VERSION 1u

void edm_cubin_free(edm_cubin *c)
{
    if (!c)
        return;
    free(c->data);
    memset(c, 0, sizeof *c);
}

static uint64_t fnv_add(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The options every compilation gets after --gpu-architecture (part of the
 * key).  --split-compile=0 lets NVRTC optimize on every core (img512-s
 * forward: 10 s → 6 s on 2 cores). */
static const char *const EXTRA_OPTIONS[] = {"--std=c++17", "-default-device", "--split-compile=0"};
#define NEXTRA (sizeof EXTRA_OPTIONS / sizeof EXTRA_OPTIONS[0])

uint64_t edm_cuda_cache_key(const char *source, const char *arch, int nvrtc_major, int nvrtc_minor)
{
    uint64_t h = 0xcbf29ce484222325ull;
    char ver[64];
    snprintf(ver, sizeof ver, "nvrtc %d.%d cache %u", nvrtc_major, nvrtc_minor, CACHE_VERSION);
    h = fnv_add(h, source, strlen(source) + 1);
    h = fnv_add(h, arch, strlen(arch) + 1);
    h = fnv_add(h, ver, strlen(ver) + 1);
    for (size_t i = 0; i < NEXTRA; i++)
        h = fnv_add(h, EXTRA_OPTIONS[i], strlen(EXTRA_OPTIONS[i]) + 1);
    return h;
}

/* mkdir -p */
static int make_dirs(const char *path, edm_status *st)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "the kernel cache path is too long");
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
                return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot create the kernel cache folder %s: %s", tmp,
                                strerror(errno));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

#ifdef EDMC_HAVE_CUDA

int edm_nvrtc_available(void) { return 1; }

int edm_nvrtc_version(int *major, int *minor, edm_status *st)
{
    nvrtcResult r = nvrtcVersion(major, minor);
    if (r != NVRTC_SUCCESS)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "nvrtcVersion: %s", nvrtcGetErrorString(r));
    return 0;
}

/* One NVRTC program; split: the --split-compile option (its threads). */
static int compile_program(const char *source, const char *arch, const char *split, edm_cubin *out, char **log,
                           edm_status *st)
{
    memset(out, 0, sizeof *out);
    if (log)
        *log = NULL;
    if (strncmp(arch, "sm_", 3) != 0 || strlen(arch) > 16)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "CUDA architecture '%s': expected sm_XY (e.g. sm_90)", arch);
    double t0 = edm_now_seconds();
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, source, "edmc_kernels.cu", 0, NULL, NULL);
    if (r != NVRTC_SUCCESS)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "nvrtcCreateProgram: %s", nvrtcGetErrorString(r));
    char archopt[48];
    snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
    const char *opts[1 + NEXTRA];
    opts[0] = archopt;
    for (size_t i = 0; i < NEXTRA; i++)
        opts[1 + i] = strncmp(EXTRA_OPTIONS[i], "--split-compile=", 16) == 0 ? split : EXTRA_OPTIONS[i];
    nvrtcResult cr = nvrtcCompileProgram(prog, (int)(1 + NEXTRA), opts);
    int rc = 0;
    size_t logsize = 0;
    char *text = NULL;
    if (nvrtcGetProgramLogSize(prog, &logsize) == NVRTC_SUCCESS && logsize > 1) {
        text = malloc(logsize);
        if (text && nvrtcGetProgramLog(prog, text) != NVRTC_SUCCESS) {
            free(text);
            text = NULL;
        }
    }
    if (cr != NVRTC_SUCCESS) {
        rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "NVRTC (%s) failed: %s\n%s", arch, nvrtcGetErrorString(cr),
                      text ? text : "(no log)");
    } else {
        size_t size = 0;
        r = nvrtcGetCUBINSize(prog, &size);
        if (r != NVRTC_SUCCESS || size == 0) {
            rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "nvrtcGetCUBINSize: %s",
                          r != NVRTC_SUCCESS ? nvrtcGetErrorString(r) : "empty cubin");
        } else if (!(out->data = malloc(size))) {
            rc = edm_nomem(st);
        } else if ((r = nvrtcGetCUBIN(prog, out->data)) != NVRTC_SUCCESS) {
            rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "nvrtcGetCUBIN: %s", nvrtcGetErrorString(r));
            edm_cubin_free(out);
        } else {
            out->size = size;
        }
    }
    nvrtcDestroyProgram(&prog);
    if (log)
        *log = text;
    else
        free(text);
    out->seconds = edm_now_seconds() - t0;
    return rc;
}

int edm_nvrtc_compile(const char *source, const char *arch, edm_cubin *out, char **log, edm_status *st)
{
    return compile_program(source, arch, "--split-compile=0", out, log, st);
}

#else /* no toolkit */

int edm_nvrtc_available(void) { return 0; }

int edm_nvrtc_version(int *major, int *minor, edm_status *st)
{
    *major = *minor = 0;
    return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "this edmc was built without the CUDA toolkit (NVRTC)");
}

int edm_nvrtc_compile(const char *source, const char *arch, edm_cubin *out, char **log, edm_status *st)
{
    (void)source;
    (void)arch;
    memset(out, 0, sizeof *out);
    if (log)
        *log = NULL;
    return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                    "this edmc was built without the CUDA toolkit: it cannot compile kernels (configure --with-cuda)");
}

static int compile_program(const char *source, const char *arch, const char *split, edm_cubin *out, char **log,
                           edm_status *st)
{
    (void)split;
    return edm_nvrtc_compile(source, arch, out, log, st);
}

#endif

/* Parts a compiling thread gets on average (cuda_source_split.h): enough
 * that the threads finish within a part's time of each other. */
#define PARTS_PER_JOB 16

int edm_nvrtc_jobs(edm_status *st)
{
    const char *env = getenv("EDMC_COMPILE_JOBS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end || v < 1 || v > EDM_CUBIN_BUNDLE_MAX)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "EDMC_COMPILE_JOBS=%s: expected 1 to %d programs at once",
                            env, EDM_CUBIN_BUNDLE_MAX);
        return (int)v;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
#ifdef __linux__
    cpu_set_t set; /* a container or taskset may allow fewer than are online */
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0 && CPU_COUNT(&set) < cores)
        cores = CPU_COUNT(&set);
#endif
    return cores < 1 ? 1 : cores > 16 ? 16 : (int)cores;
}

typedef struct {
    edm_cubin cubin;
    edm_status st;
    int rc;
} part_result;

/* The parts, and the next one a thread takes: the threads take parts as
 * they finish one (their times differ too much to share them out before). */
typedef struct {
    const edm_source_parts *sp;
    const char *arch;
    part_result *result;
    atomic_int next;
} part_queue;

static void *compile_parts(void *arg)
{
    part_queue *q = arg;
    for (int i; (i = atomic_fetch_add(&q->next, 1)) < q->sp->n;) {
        part_result *r = &q->result[i];
        r->rc = compile_program(q->sp->text[i], q->arch, "--split-compile=1", &r->cubin, NULL, &r->st);
    }
    return NULL;
}

/* The parts' cubins as one bundle, each with the names of its kernels. */
static int bundle_parts(const edm_source_parts *sp, const part_result *result, edm_cubin *out, edm_status *st)
{
    edm_cubin_part parts[EDM_CUBIN_BUNDLE_MAX];
    sbuf names[EDM_CUBIN_BUNDLE_MAX] = {{0}};
    int rc = 0;
    for (int i = 0; i < sp->n; i++) {
        for (char **q = sp->names[i]; *q; q++)
            sb_putn(&names[i], *q, strlen(*q) + 1);
        rc = names[i].oom ? edm_nomem(st) : rc;
        parts[i] = (edm_cubin_part){.cubin = result[i].cubin.data, .size = result[i].cubin.size,
                                    .names = names[i].p ? names[i].p : "", .names_size = names[i].len};
    }
    if (rc == 0)
        rc = edm_cubin_bundle_write(parts, sp->n, &out->data, &out->size, st);
    for (int i = 0; i < sp->n; i++)
        free(names[i].p);
    return rc;
}

int edm_nvrtc_compile_parallel(const char *source, const char *arch, int jobs, edm_cubin *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    if (!edm_nvrtc_available() || jobs <= 1)
        return edm_nvrtc_compile(source, arch, out, NULL, st);
    edm_source_parts sp;
    int want = jobs * PARTS_PER_JOB < EDM_CUBIN_BUNDLE_MAX ? jobs * PARTS_PER_JOB : EDM_CUBIN_BUNDLE_MAX;
    if (edm_cuda_source_split(source, want, &sp, st) != 0)
        return -1;
    if (sp.n == 1) {
        edm_source_parts_free(&sp);
        return edm_nvrtc_compile(source, arch, out, NULL, st);
    }
    double t0 = edm_now_seconds();
    part_result result[EDM_CUBIN_BUNDLE_MAX];
    for (int i = 0; i < sp.n; i++) {
        result[i] = (part_result){.rc = 0};
        edm_status_init(&result[i].st);
    }
    part_queue q = {.sp = &sp, .arch = arch, .result = result};
    atomic_init(&q.next, 0);
    pthread_t thread[EDM_CUBIN_BUNDLE_MAX];
    int nthreads = 0, rc = 0;
    while (nthreads < jobs - 1 && nthreads < sp.n - 1 &&
           pthread_create(&thread[nthreads], NULL, compile_parts, &q) == 0)
        nthreads++;
    compile_parts(&q); /* this thread too, and all of them where no other could start */
    for (int i = 0; i < nthreads; i++)
        pthread_join(thread[i], NULL);
    for (int i = 0; i < sp.n && rc == 0; i++)
        if (result[i].rc != 0) {
            *st = result[i].st;
            edm_status_prefix(st, "kernels, part %d of %d (EDMC_COMPILE_JOBS=1 compiles them as one program)", i + 1,
                              sp.n);
            rc = -1;
        }
    if (rc == 0)
        rc = bundle_parts(&sp, result, out, st);
    for (int i = 0; i < sp.n; i++)
        edm_cubin_free(&result[i].cubin);
    edm_source_parts_free(&sp);
    out->seconds = edm_now_seconds() - t0;
    return rc;
}

int edm_nvrtc_compile_kernels(const char *source, const char *arch, void **cubin, size_t *size, double *seconds,
                              edm_status *st)
{
    edm_cubin c;
    if (edm_nvrtc_compile_cached(source, arch, &c, st) != 0)
        return -1;
    *cubin = c.data; /* handed over: the caller frees it */
    *size = c.size;
    *seconds = c.seconds;
    return 0;
}

/* header: magic, version, key, size (little-endian host) */
typedef struct {
    char magic[8];
    uint32_t version, pad;
    uint64_t key, size;
} cache_header;

static int cache_read(const char *path, uint64_t key, edm_cubin *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    cache_header h;
    int ok = fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, CACHE_MAGIC, 8) == 0 && h.version == CACHE_VERSION &&
             h.key == key && h.size > 0 && h.size < ((uint64_t)1 << 32);
    void *data = ok ? malloc((size_t)h.size) : NULL;
    ok = ok && data && fread(data, 1, (size_t)h.size, f) == (size_t)h.size && fgetc(f) == EOF;
    fclose(f);
    if (!ok) {
        free(data);
        return -1;
    }
    out->data = data;
    out->size = (size_t)h.size;
    out->from_cache = 1;
    return 0;
}

static int cache_write(const char *dir, const char *path, uint64_t key, const edm_cubin *c, edm_status *st)
{
    if (make_dirs(dir, st) != 0)
        return -1;
    char tmp[4300];
    int len = snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path);
    if (len < 0 || (size_t)len >= sizeof tmp)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "the kernel cache path is too long");
    int fd = mkstemp(tmp);
    if (fd < 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot write to the kernel cache %s: %s", dir, strerror(errno));
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(tmp);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot write %s: %s", tmp, strerror(errno));
    }
    cache_header h = {.version = CACHE_VERSION, .key = key, .size = c->size};
    memcpy(h.magic, CACHE_MAGIC, 8);
    int ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(c->data, 1, c->size, f) == c->size;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

int edm_nvrtc_compile_cached(const char *source, const char *arch, edm_cubin *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    int major = 0, minor = 0;
    if (edm_nvrtc_version(&major, &minor, st) != 0)
        return -1;
    char dir[4096];
    if (edm_cuda_cache_dir(dir, sizeof dir, st) != 0)
        return -1;
    int jobs = edm_nvrtc_jobs(st);
    if (jobs < 1)
        return -1;
    if (!dir[0])
        return edm_nvrtc_compile_parallel(source, arch, jobs, out, st);
    uint64_t key = edm_cuda_cache_key(source, arch, major, minor);
    char path[4200];
    snprintf(path, sizeof path, "%s/%016llx-%s.cubin", dir, (unsigned long long)key, arch);
    double t0 = edm_now_seconds();
    if (cache_read(path, key, out) == 0) {
        out->seconds = edm_now_seconds() - t0;
        return 0;
    }
    if (edm_nvrtc_compile_parallel(source, arch, jobs, out, st) != 0)
        return -1;
    /* a cache that cannot be written is not an error for the compilation */
    edm_status ignored;
    edm_status_init(&ignored);
    (void)cache_write(dir, path, key, out, &ignored);
    return 0;
}
