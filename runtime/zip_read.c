/* One zip entry into memory (zip_read.h). */
#include "config.h"

#include "runtime/zip_read.h"

#include <stdlib.h>

int edm_zip_read_entry(zip_t *z, zip_uint64_t idx, uint64_t max, const char *what, unsigned char **out, size_t *len,
                       edm_status *st)
{
    *out = NULL;
    *len = 0;
    const char *name = zip_get_name(z, idx, 0);
    zip_stat_t zs;
    zip_stat_init(&zs);
    if (!name || zip_stat_index(z, idx, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: entry %llu: %s", what, (unsigned long long)idx,
                        zip_strerror(z));
    if (zs.size > max)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: %s: %llu bytes, more than the %llu edmc reads", what,
                        name, (unsigned long long)zs.size, (unsigned long long)max);
    unsigned char *buf = malloc(zs.size ? (size_t)zs.size : 1);
    if (!buf)
        return edm_nomem(st);
    zip_file_t *f = zip_fopen_index(z, idx, 0);
    if (!f) {
        free(buf);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: %s: cannot open it: %s", what, name, zip_strerror(z));
    }
    zip_int64_t got = zip_fread(f, buf, zs.size);
    if (got < 0 || (zip_uint64_t)got != zs.size) {
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: %s: cannot read it: %s", what, name, zip_file_strerror(f));
        zip_fclose(f);
        free(buf);
        return -1;
    }
    zip_fclose(f);
    *out = buf;
    *len = (size_t)zs.size;
    return 0;
}
