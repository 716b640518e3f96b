/* edmc bench --tune: the tensor-core tiles measured on the device.  The
 * benchmark's plan runs once, kernel by kernel, with every contraction on
 * each candidate tile in turn (64×64, 64×128, 128×64, 128×128, each with the
 * cost model's split-K; $EDMC_TUNE_TILES=BMxBN,... for fewer) and once as it
 * stands (the table so far, else the cost model); each contraction's fastest
 * tile goes into the architecture's table (runtime/cuda_tiles_file.h), which
 * every later compile there reads.  The benchmark then runs as usual, on the
 * tiles chosen. */
#ifndef EDMC_CLI_BENCH_TUNE_H
#define EDMC_CLI_BENCH_TUNE_H

#include <stddef.h>

#include "cli/cli.h"
#include "compiler/ir.h"
#include "runtime/backend.h"

int bench_tune(const cli_opts *o, const edm_graph *g, const edm_backend_options *bo, edm_status *st);

/* One profiled run (after a warm-up one) of the benchmark's plan with bo
 * (cli/cmd_bench.c): the rows (malloc'd), the device's architecture and name. */
int bench_profile(const cli_opts *o, const edm_graph *g, const edm_backend_options *bo, edm_cuda_profile_row **rows,
                  int *nrows, char *arch, size_t arch_size, char *device, size_t device_size, edm_status *st);

#endif
