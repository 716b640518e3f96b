/* Splitting a fused module's CUDA C into programs that NVRTC compiles at
 * the same time, one per core.
 *
 * NVRTC compiles one program on little more than one core, even with
 * --split-compile (the S training module: 31.7 s of CPU in 20.9 s), and a
 * module's kernels are independent of each other.  So the code generator
 * marks its source in units (a plan group's kernel and the step functions it
 * calls), each unit naming the earlier units it calls into; this file cuts
 * the source at the marks into parts of about equal work.  Every part holds
 * the source's prelude (the types and helper functions before the first
 * unit) and whole units (those that call into each other in one part), so
 * it compiles alone; the kernels are the same machine code as in the whole
 * source.  The parts are many more than the cores (tens): NVRTC's time for
 * a kernel is hard to foretell, so the compiler's threads take the next
 * part as they finish one, and a part without work costs only its prelude
 * (0.03 s).
 *
 * The marks are comments, so the whole source still compiles as one program
 * (the emulator, `edmc dump`, EDMC_COMPILE_JOBS=1):
 *     / * edmc-unit U [needs A B ...] * /
 *     / * edmc-units-end * /
 */
#ifndef EDMC_CUDA_SOURCE_SPLIT_H
#define EDMC_CUDA_SOURCE_SPLIT_H

#include <stdint.h>

#include "codegen/text.h"
#include "compiler/status.h"

/* The mark opening unit `unit` (0 for the module's fixed kernels, which need
 * none): it calls functions of the units in needs. */
void edm_source_unit_mark(sbuf *b, int unit, const int *needs, int nneeds);
/* The mark after the last unit. */
void edm_source_units_end(sbuf *b);

typedef struct {
    char **text;   /* the parts' sources */
    char ***names; /* each part's kernels (extern "C" __global__), NULL-terminated lists */
    int n;
} edm_source_parts;

/* Cuts source into at most max_parts parts of about equal work.  A source
 * without marks, or max_parts 1, gives one part: the source itself.  A mark
 * it cannot read, or a unit needing one that is not before it, is an
 * internal error. */
int edm_cuda_source_split(const char *source, int max_parts, edm_source_parts *out, edm_status *st);
void edm_source_parts_free(edm_source_parts *p);

#endif
