/* The measured tiles' file (cuda_tiles_file.h). */
#include "config.h"

#include "runtime/cuda_tiles_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cuda_cache_dir.h"
#include "runtime/files.h"

/* A table is a few hundred lines; anything much larger is not one. */
#define MAX_TABLE_BYTES (4 << 20)

int edm_cuda_tiles_path(const char *arch, char *buf, size_t size, edm_status *st)
{
    const char *env = getenv("EDMC_TILES");
    int n;
    if (env && env[0]) {
        if (strcmp(env, "off") == 0) {
            buf[0] = '\0';
            return 0;
        }
        n = snprintf(buf, size, "%s", env);
    } else {
        char dir[4096];
        if (edm_cuda_cache_dir(dir, sizeof dir, st) != 0)
            return -1;
        if (!dir[0]) {
            buf[0] = '\0';
            return 0;
        }
        n = snprintf(buf, size, "%s/tiles-%s.txt", dir, arch);
    }
    if (n < 0 || (size_t)n >= size)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "the tile table's path is too long");
    return 0;
}

int edm_cuda_tiles_load(const char *arch, edm_mma_tiles *t, edm_status *st)
{
    memset(t, 0, sizeof *t);
    char path[4200];
    if (edm_cuda_tiles_path(arch, path, sizeof path, st) != 0)
        return -1;
    if (!path[0])
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) /* nothing measured yet */
            return 0;
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot read the tile table %s: %s", path, strerror(errno));
    }
    char *text = malloc(MAX_TABLE_BYTES + 1);
    size_t len = text ? fread(text, 1, MAX_TABLE_BYTES + 1, f) : 0;
    int err = ferror(f);
    fclose(f);
    if (!text)
        return edm_nomem(st);
    int rc = 0;
    if (err)
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot read the tile table %s", path);
    else if (len > MAX_TABLE_BYTES)
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "the tile table %s is over %d bytes: not a table", path,
                      MAX_TABLE_BYTES);
    else if (memchr(text, '\0', len))
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "the tile table %s is not text", path);
    if (rc == 0) {
        text[len] = '\0';
        rc = edm_mma_tiles_parse(text, path, t, st);
    }
    free(text);
    return rc;
}

int edm_cuda_tiles_save_path(const char *arch, char *buf, size_t size, edm_status *st)
{
    if (edm_cuda_tiles_path(arch, buf, size, st) != 0)
        return -1;
    if (!buf[0])
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "nowhere to keep the measured tiles (EDMC_TILES=off, or the kernel cache is off): "
                        "set EDMC_TILES=FILE");
    return 0;
}

int edm_cuda_tiles_save(const char *path, const edm_mma_tiles *t, const char *header, edm_status *st)
{
    char dir[4200];
    edm_folder_of(path, dir, sizeof dir);
    if (edm_make_dirs(dir, st) != 0)
        return -1;
    sbuf text = {0};
    edm_mma_tiles_format(t, header, &text);
    int rc = text.oom ? edm_nomem(st) : edm_write_bytes_atomic(path, text.p ? text.p : "", text.len, st);
    free(text.p);
    return rc;
}
