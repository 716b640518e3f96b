/* Fuzz target for the restricted pickle reader and the import of the
 * reference's network pickles: any bytes must import (and the result open
 * as a safetensors image) or fail with a status, never crash, hang, leak or
 * read out of bounds.  Replayed over tests/fuzz/pkl_corpus by `make check`
 * (replay_main.c); `make fuzz-pickle` builds the libFuzzer binary. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "runtime/ref_import.h"
#include "runtime/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    edm_status st;
    edm_status_init(&st);
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return 0;
    void *image = NULL;
    size_t len = 0;
    if (edm_ref_import(data, size, "fuzz.pkl", w, &st) == 0 && edm_st_writer_to_memory(w, &image, &len, &st) == 0) {
        edm_st_file *f = edm_st_open_memory("fuzz.pkl", image, len, &st);
        edm_st_close(f);
    }
    edm_st_writer_free(w);
    return 0;
}
