/* The fuzz targets whose readers take a path: the input as a temporary file. */
#ifndef EDMC_FUZZ_TEMP_H
#define EDMC_FUZZ_TEMP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Writes data to a new file named from path ("/tmp/x-XXXXXX", rewritten in
 * place); 1 when it is there whole (the caller unlinks it), else 0 (nothing left). */
static inline int fuzz_temp_file(const uint8_t *data, size_t size, char *path)
{
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        close(fd);
        unlink(path);
        return 0;
    }
    int ok = fwrite(data, 1, size, fp) == size;
    ok = fclose(fp) == 0 && ok;
    if (!ok)
        unlink(path);
    return ok;
}

#endif
