/* Fuzz target for ahead-of-time packages (runtime/package.h): any bytes as a
 * package must open, with its plan read over its graph by a CPU executor, or
 * fail with a status; never crash, leak or read out of bounds.  Replayed
 * over tests/fuzz/pkg_corpus by `make check` (replay_main.c): a good package,
 * packages with an entry changed (checksums left stale or recomputed, so
 * the plan reader meets a plan that is not its graph's), another format
 * version, and cut ones. */
#include "config.h"

#include "tests/fuzz/fuzz_temp.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "runtime/package.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The package's plan read over its graph by a CPU executor (a cuda
 * package's kernels need a device; its plan is read on the CPU all the same). */
static void run_plan(edm_package *p, edm_status *st)
{
    edm_backend_options o = edm_backend_defaults(EDM_DEVICE_CPU);
    edm_graph *g = edm_package_take_graph(p);
    if (edm_package_backend(p, &o, st) == 0) {
        o.device = EDM_DEVICE_CPU;
        o.cpu.compute = EDM_F32;
        o.cpu.threads = 1;
        edm_backend_free(edm_backend_new(g, 1, &o, st));
    }
    edm_graph_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/edmc-fuzz-pkg-XXXXXX";
    edm_status st;
    edm_status_init(&st);
    edm_package *p = fuzz_temp_file(data, size, path) ? edm_package_open(path, &st) : NULL;
    if (p) {
        run_plan(p, &st);
        edm_package_close(p);
    }
    unlink(path);
    return 0;
}
