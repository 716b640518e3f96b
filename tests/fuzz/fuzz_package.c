/* Fuzz target for ahead-of-time packages (runtime/package.h): any bytes as a
 * package must open, with its plan read over its graph by a CPU executor and
 * its parameter table checked against weights, or fail with a status; never
 * crash, leak or read out of bounds.  Replayed over tests/fuzz/pkg_corpus by
 * `make check` (replay_main.c): good packages (forward and train), packages
 * with an entry changed (checksums left stale or recomputed, so the plan
 * reader meets a plan that is not its graph's), another format version, and
 * cut ones. */
#include "config.h"

#include "tests/fuzz/fuzz_temp.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "runtime/package.h"
#include "runtime/safetensors.h"

/* Weights beyond this many elements are not made (the check stays cheap). */
#define FUZZ_MAX_WEIGHTS ((int64_t)1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The package's plan read over its graph by a CPU executor (a cuda
 * package's kernels need a device; its plan is read on the CPU all the same). */
static void run_plan(const edm_package *p, const edm_graph *g, edm_status *st)
{
    edm_backend_options o = edm_backend_defaults(EDM_DEVICE_CPU);
    if (edm_package_backend(p, &o, st) == 0) {
        o.device = EDM_DEVICE_CPU;
        o.cpu.compute = EDM_F32;
        o.cpu.threads = 1;
        edm_backend_free(edm_backend_new(g, 1, &o, st));
    }
}

/* Zero weights of every parameter and buffer of g, as a safetensors file in
 * memory; NULL when they would be large (or on failure). */
static edm_st_file *graph_weights(const edm_graph *g, edm_status *st)
{
    int64_t total = 0, most = 1;
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_PARAM && n->op != EDM_OP_BUFFER)
            continue;
        int64_t k = edm_shape_numel_per_sample(&n->shape);
        if (k < 0 || k > FUZZ_MAX_WEIGHTS)
            return NULL;
        total += k;
        most = k > most ? k : most;
        if (total > FUZZ_MAX_WEIGHTS)
            return NULL;
    }
    float *zero = calloc((size_t)most, sizeof *zero);
    edm_st_writer *w = edm_st_writer_new();
    int rc = zero && w ? 0 : -1;
    for (int i = 0; rc == 0 && i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op == EDM_OP_PARAM || n->op == EDM_OP_BUFFER)
            rc = edm_st_writer_add_f32(w, n->name, EDM_F32, n->shape.rank, n->shape.dim, zero, st);
    }
    void *image = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = edm_st_writer_to_memory(w, &image, &len, st);
    edm_st_writer_free(w);
    free(zero);
    return rc == 0 ? edm_st_open_memory("graph-weights.safetensors", image, len, st) : NULL;
}

/* The parameter table against weights made from the graph (which open
 * checked it equals: they must fit) and against no weights at all (which
 * must not, unless the table is empty); abort() on a wrong verdict. */
static void check_weights(const edm_package *p, const edm_graph *g, edm_status *st)
{
    edm_st_file *w = graph_weights(g, st);
    if (w && edm_package_check_weights(p, w, st) != 0) {
        fprintf(stderr, "fuzz_package: weights made from the graph do not fit its table: %s\n", st->msg);
        abort();
    }
    edm_st_close(w);
    int params = 0;
    for (int i = 0; i < edm_graph_count(g); i++)
        params |= edm_graph_node(g, i)->op == EDM_OP_PARAM || edm_graph_node(g, i)->op == EDM_OP_BUFFER;
    edm_st_writer *e = edm_st_writer_new();
    void *image = NULL;
    size_t len = 0;
    edm_st_file *none = e && edm_st_writer_to_memory(e, &image, &len, st) == 0
                            ? edm_st_open_memory("empty.safetensors", image, len, st)
                            : NULL;
    edm_st_writer_free(e);
    if (none && params && edm_package_check_weights(p, none, st) == 0) {
        fprintf(stderr, "fuzz_package: an empty weights file fits a table of parameters\n");
        abort();
    }
    edm_st_close(none);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/edmc-fuzz-pkg-XXXXXX";
    edm_status st;
    edm_status_init(&st);
    edm_package *p = fuzz_temp_file(data, size, path) ? edm_package_open(path, &st) : NULL;
    if (p) {
        edm_graph *g = edm_package_take_graph(p);
        if (g) {
            check_weights(p, g, &st);
            run_plan(p, g, &st);
        }
        edm_graph_free(g);
        edm_package_close(p);
    }
    unlink(path);
    return 0;
}
