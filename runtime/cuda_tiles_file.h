/* Where the measured tensor-core tiles (codegen/cuda_tiles.h) are kept, and
 * their reading and writing: $EDMC_TILES (a file; "off": none), else
 * tiles-ARCH.txt in the kernel cache's folder (codegen/cuda_cache_dir.h), one
 * table a GPU architecture.  `edmc bench --tune` writes it; every later
 * compile for that architecture by the executor reads it, and `edmc dump
 * --stage=cuda` the one $EDMC_TILES names.  Packages (`edmc compile`) do not:
 * their cubins must match the source the executor makes on another machine. */
#ifndef EDMC_RUNTIME_CUDA_TILES_FILE_H
#define EDMC_RUNTIME_CUDA_TILES_FILE_H

#include <stddef.h>

#include "codegen/cuda_tiles.h"
#include "compiler/status.h"

/* The table's path for arch ("sm_90") into buf; "" when there is none
 * (EDMC_TILES=off, or the kernel cache is off); 0 or -1. */
int edm_cuda_tiles_path(const char *arch, char *buf, size_t size, edm_status *st);
/* Reads the table for arch into t (empty when there is no file); a
 * malformed file: -1 with its path and line in st. */
int edm_cuda_tiles_load(const char *arch, edm_mma_tiles *t, edm_status *st);
/* edm_cuda_tiles_path, where a table must be written: none is an error. */
int edm_cuda_tiles_save_path(const char *arch, char *buf, size_t size, edm_status *st);
/* Writes t to path (atomically; the folder made); header: its first comment. */
int edm_cuda_tiles_save(const char *path, const edm_mma_tiles *t, const char *header, edm_status *st);

#endif
