/* Fuzz target for the front end: any bytes as a .edm program must give either a
 * graph or diagnostics, never a crash, a leak or undefined behaviour.
 * libFuzzer: make fuzz; ./fuzz_parser tests/fuzz/corpus
 * Replayed over the seed corpus by `make check` (replay_main.c). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "compiler/elaborate.h"
#include "compiler/ir_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    edm_status st;
    edm_status_init(&st);
    edm_sources *src = edm_sources_new();
    edm_diags *diags = malloc(sizeof *diags);
    if (!src || !diags) {
        edm_sources_free(src);
        free(diags);
        return 0;
    }
    int file = edm_sources_add_text(src, "fuzz.edm", (const char *)data, size, &st);
    if (file >= 0) {
        edm_program prog;
        if (edm_compile_source(src, file, NULL, NULL, 0, &prog, diags) == 0) {
            /* a graph that compiles must also print */
            FILE *null = fopen("/dev/null", "w");
            if (null) {
                edm_ir_write_text(prog.graph, null, &st);
                edm_ir_write_xml(prog.graph, null, &st);
                fclose(null);
            }
            edm_program_free(&prog);
        } else {
            FILE *null = fopen("/dev/null", "w");
            if (null) {
                for (int i = 0; i < diags->count; i++)
                    edm_diag_print(src, &diags->items[i], null);
                fclose(null);
            }
        }
    }
    free(diags);
    edm_sources_free(src);
    return 0;
}
