/* Fuzz target for the restricted pickle reader and the import of the
 * reference's network pickles: any bytes must import (and the result open
 * as a safetensors image) or fail with a status, never crash, hang, leak or
 * read out of bounds (torch.save zips too, through a temporary file).  Replayed over tests/fuzz/pkl_corpus by `make check`
 * (replay_main.c); `make fuzz-pickle` builds the libFuzzer binary. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    int rc;
    if (size >= 4 && memcmp(data, "PK\x03\x04", 4) == 0) { /* a torch.save zip: through a file, as libzip reads */
        char path[] = "/tmp/edmc-fuzz-pt-XXXXXX";
        int fd = mkstemp(path);
        FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
        int ok = fp && fwrite(data, 1, size, fp) == size;
        ok = fp && fclose(fp) == 0 && ok;
        if (!fp && fd >= 0)
            close(fd);
        rc = ok ? edm_ref_import_any(path, w, &st) : -1;
        if (fd >= 0)
            unlink(path);
    } else {
        rc = edm_ref_import(data, size, "fuzz.pkl", w, &st);
    }
    if (rc == 0 && edm_st_writer_to_memory(w, &image, &len, &st) == 0) {
        edm_st_file *f = edm_st_open_memory("fuzz.pkl", image, len, &st);
        edm_st_close(f);
    }
    edm_st_writer_free(w);
    return 0;
}
