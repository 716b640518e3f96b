/* Fuzz target for the safetensors reader: any bytes as a weights file must
 * open with every tensor readable, or fail with a status, never crash, leak or
 * read out of bounds; its metadata configuration (edmc.config / config, the
 * -D values generate and phema take from a file) must parse or fail the same way.
 * Replayed over tests/fuzz/st_corpus by `make check` (replay_main.c).
 * (Only replayed for now: `make fuzz` builds a libFuzzer binary of the parser
 * target alone.) */
#include "config.h"

#include "tests/fuzz/fuzz_temp.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "runtime/denoiser.h"
#include "runtime/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/edmc-fuzz-st-XXXXXX";
    if (!fuzz_temp_file(data, size, path))
        return 0;
    edm_status st;
    edm_status_init(&st);
    edm_st_file *f = edm_st_open(path, &st);
    if (f) {
        for (int i = 0; i < edm_st_count(f); i++) {
            const edm_st_entry *e = edm_st_entry_at(f, i);
            if (!e || e->numel > ((int64_t)1 << 24))
                continue;
            float *buf = malloc(sizeof(float) * (size_t)(e->numel ? e->numel : 1));
            if (buf)
                (void)edm_st_read_f32(f, e, buf, e->numel, &st);
            free(buf);
        }
        for (int i = 0; i < edm_st_metadata_count(f); i++)
            (void)edm_st_metadata(f, edm_st_metadata_key(f, i));
        edm_define_list defs;
        if (edm_define_list_from_weights(f, &defs, &st) == 0)
            edm_define_list_free(&defs);
        edm_st_close(f);
    }
    unlink(path);
    return 0;
}
