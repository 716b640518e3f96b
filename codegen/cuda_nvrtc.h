/* Compiling generated CUDA C with NVRTC, and the on-disk cache of cubins.
 *
 * NVRTC needs no GPU: CI compiles every generated kernel for sm_90.  Without
 * the toolkit (configure --without-cuda) the functions fail with a clear
 * message and edm_nvrtc_available() is 0.
 *
 * The cache: $EDMC_CACHE_DIR, else $XDG_CACHE_HOME/edmc, else
 * $HOME/.cache/edmc; one file per (source, architecture, NVRTC version,
 * options), named by the FNV-1a 64 hash of all four; written to a temporary
 * file and renamed, so readers never see half a file.  EDMC_CACHE_DIR=off
 * disables it. */
#ifndef EDMC_CUDA_NVRTC_H
#define EDMC_CUDA_NVRTC_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/cuda_cache_dir.h"
#include "compiler/status.h"

typedef struct {
    void *data; /* the cubin (ELF), or a bundle of cubins (codegen/cubin_bundle.h) */
    size_t size;
    int from_cache;
    double seconds; /* compile (or cache read) wall time */
} edm_cubin;

/* 1 when built with NVRTC. */
int edm_nvrtc_available(void);
/* NVRTC's version (e.g. 13, 0). */
int edm_nvrtc_version(int *major, int *minor, edm_status *st);
/* Compiles source for arch ("sm_90") to a cubin.  On a compile error st
 * holds NVRTC's log (the first part of it) and, when log is not NULL, *log
 * the whole log (malloc'd; also set on success when NVRTC said anything). */
int edm_nvrtc_compile(const char *source, const char *arch, edm_cubin *out, char **log, edm_status *st);
/* The number of programs to compile at once: $EDMC_COMPILE_JOBS (1 to
 * EDM_CUBIN_BUNDLE_MAX), else the cores this process may run on (at most
 * 16); -1 with st where the variable is not a number in range. */
int edm_nvrtc_jobs(edm_status *st);
/* source cut into at most `jobs` parts (cuda_source_split.h), compiled at
 * once, one thread each: out is a bundle of their cubins (cubin_bundle.h),
 * or one cubin where the source makes one part (no unit marks, jobs 1).
 * The kernels are the same machine code either way. */
int edm_nvrtc_compile_parallel(const char *source, const char *arch, int jobs, edm_cubin *out, edm_status *st);
/* edm_nvrtc_compile_parallel with edm_nvrtc_jobs(), through the disk cache
 * (which keeps whichever image it made: a cubin or a bundle). */
int edm_nvrtc_compile_cached(const char *source, const char *arch, edm_cubin *out, edm_status *st);
void edm_cubin_free(edm_cubin *c);
/* edm_nvrtc_compile_cached as the CUDA executor's kernel compiler
 * (edm_cuda_compile_fn, runtime/backend_cuda.h): *cubin malloc'd, the
 * caller's to free.  Programs that compile kernels install it; the runtime
 * library does not link NVRTC. */
int edm_nvrtc_compile_kernels(const char *source, const char *arch, void **cubin, size_t *size, double *seconds,
                              edm_status *st);

/* The cache key of a compilation (FNV-1a 64 over source, arch, NVRTC version, options). */
uint64_t edm_cuda_cache_key(const char *source, const char *arch, int nvrtc_major, int nvrtc_minor);

#endif
