/* Several cubins as one image: what compiling a module's parts at once
 * (cuda_source_split.h) makes, kept as one file in the kernel cache and in
 * packages.  The executor loads each cubin as a module and finds each
 * kernel in the one the bundle names for it.
 *
 * Layout (integers little-endian):
 *     "EDMCUBS1"  u32 count  u32 0
 *     count x { u64 offset  u64 size  u64 names_offset  u64 names_size }
 *     the cubins, each at an offset that is a multiple of 16, and each
 *     cubin's kernel names, NUL-terminated one after another.
 * An ELF cubin (one module) is read as a bundle of one whose names are
 * unknown (every kernel is looked for in it). */
#ifndef EDMC_CUBIN_BUNDLE_H
#define EDMC_CUBIN_BUNDLE_H

#include <stddef.h>

#include "compiler/status.h"

#define EDM_CUBIN_BUNDLE_MAX 64

typedef struct {
    const void *cubin;
    size_t size;
    const char *names; /* its kernels, NUL-terminated one after another; NULL: not known */
    size_t names_size;
} edm_cubin_part;

/* 1 when image starts as a bundle does. */
int edm_cubin_is_bundle(const void *image, size_t size);
/* The parts of image (a bundle, or an ELF cubin as one part): pointers into
 * image.  A bundle that does not hold together is EDM_ERR_FORMAT. */
int edm_cubin_bundle_read(const void *image, size_t size, edm_cubin_part *parts, int max_parts, int *nparts,
                          edm_status *st);
/* One image of n parts (names required), malloc'd. */
int edm_cubin_bundle_write(const edm_cubin_part *parts, int n, void **image, size_t *size, edm_status *st);
/* 1 when part holds a kernel of this name (always where its names are not known). */
int edm_cubin_part_has(const edm_cubin_part *part, const char *name);

#endif
