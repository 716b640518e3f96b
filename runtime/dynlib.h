/* Libraries opened at run time (the CUDA driver, cuBLASLt, NCCL): edmc
 * builds and runs without them and says which one is missing. */
#ifndef EDMC_DYNLIB_H
#define EDMC_DYNLIB_H

#include <stddef.h>

#include "compiler/status.h"

/* dlopen of $env, or of fallback when it is unset or empty; NULL with the
 * reason in st ("no <what> (<name> not found: ...)"). */
void *edm_dynlib_open(const char *env, const char *fallback, const char *what, edm_status *st);
/* Symbol name of lib into the function pointer at fnptr (fnsize bytes);
 * fails naming what lacks it. */
int edm_dynlib_resolve(void *lib, const char *what, const char *name, void *fnptr, size_t fnsize, edm_status *st);

#endif
