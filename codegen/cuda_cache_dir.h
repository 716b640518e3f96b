/* Where compiled kernels and the tiles measured on a device are kept:
 * $EDMC_CACHE_DIR ("off": nowhere), else $XDG_CACHE_HOME/edmc, else
 * $HOME/.cache/edmc.  Apart from NVRTC (cuda_nvrtc.h), which the runtime
 * library does not link. */
#ifndef EDMC_CODEGEN_CUDA_CACHE_DIR_H
#define EDMC_CODEGEN_CUDA_CACHE_DIR_H

#include <stddef.h>

#include "compiler/status.h"

/* The cache folder ("" when disabled); 0 or -1 (no place for it). */
int edm_cuda_cache_dir(char *buf, size_t size, edm_status *st);

#endif
