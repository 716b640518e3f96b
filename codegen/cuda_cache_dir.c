/* The kernel cache's folder (cuda_cache_dir.h). */
#include "config.h"

#include "codegen/cuda_cache_dir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int edm_cuda_cache_dir(char *buf, size_t size, edm_status *st)
{
    const char *dir = getenv("EDMC_CACHE_DIR");
    int n;
    if (dir && dir[0]) {
        if (strcmp(dir, "off") == 0) {
            buf[0] = '\0';
            return 0;
        }
        n = snprintf(buf, size, "%s", dir);
    } else if ((dir = getenv("XDG_CACHE_HOME")) && dir[0]) {
        n = snprintf(buf, size, "%s/edmc", dir);
    } else if ((dir = getenv("HOME")) && dir[0]) {
        n = snprintf(buf, size, "%s/.cache/edmc", dir);
    } else {
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC,
                        "no folder for the kernel cache: set EDMC_CACHE_DIR (or XDG_CACHE_HOME or HOME)");
    }
    if (n < 0 || (size_t)n >= size)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "the kernel cache path is too long");
    return 0;
}
