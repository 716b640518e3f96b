/* Several cubins as one image (cubin_bundle.h). */
#include "codegen/cubin_bundle.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char MAGIC[8] = {'E', 'D', 'M', 'C', 'U', 'B', 'S', '1'};
#define HEAD 16u  /* magic, count, 0 */
#define ENTRY 32u /* offset, size, names_offset, names_size */

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

int edm_cubin_is_bundle(const void *image, size_t size)
{
    return size >= sizeof MAGIC && memcmp(image, MAGIC, sizeof MAGIC) == 0;
}

int edm_cubin_bundle_read(const void *image, size_t size, edm_cubin_part *parts, int max_parts, int *nparts,
                          edm_status *st)
{
    *nparts = 0;
    const unsigned char *p = image;
    if (!edm_cubin_is_bundle(image, size)) { /* a cubin alone */
        if (max_parts < 1 || size == 0)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "an empty kernel image");
        parts[0] = (edm_cubin_part){.cubin = image, .size = size};
        *nparts = 1;
        return 0;
    }
    if (size < HEAD)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "a bundle of cubins cut short (%zu bytes)", size);
    uint64_t n = get_le(p + 8, 4);
    if (n < 1 || n > (uint64_t)max_parts || (size - HEAD) / ENTRY < n)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "a bundle of %llu cubins in %zu bytes (at most %d)",
                        (unsigned long long)n, size, max_parts);
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *e = p + HEAD + i * ENTRY;
        uint64_t off = get_le(e, 8), len = get_le(e + 8, 8), noff = get_le(e + 16, 8), nlen = get_le(e + 24, 8);
        if (len == 0 || off > size || len > size - off || noff > size || nlen > size - noff ||
            (nlen > 0 && p[noff + nlen - 1] != '\0'))
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "a bundle of cubins: part %llu lies outside its %zu bytes",
                            (unsigned long long)i, size);
        parts[i] = (edm_cubin_part){.cubin = p + off, .size = (size_t)len, .names = (const char *)p + noff,
                                    .names_size = (size_t)nlen};
    }
    *nparts = (int)n;
    return 0;
}

static size_t align16(size_t v) { return (v + 15u) & ~(size_t)15u; }

int edm_cubin_bundle_write(const edm_cubin_part *parts, int n, void **image, size_t *size, edm_status *st)
{
    *image = NULL;
    *size = 0;
    if (n < 1 || n > EDM_CUBIN_BUNDLE_MAX)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "a bundle of %d cubins", n);
    size_t total = HEAD + (size_t)n * ENTRY;
    for (int i = 0; i < n; i++)
        total = align16(total) + parts[i].size + parts[i].names_size;
    unsigned char *p = calloc(1, total);
    if (!p)
        return edm_nomem(st);
    memcpy(p, MAGIC, sizeof MAGIC);
    put_le(p + 8, (uint64_t)n, 4);
    size_t at = HEAD + (size_t)n * ENTRY;
    for (int i = 0; i < n; i++) {
        unsigned char *e = p + HEAD + (size_t)i * ENTRY;
        at = align16(at);
        memcpy(p + at, parts[i].cubin, parts[i].size);
        put_le(e, at, 8);
        put_le(e + 8, parts[i].size, 8);
        at += parts[i].size;
        if (parts[i].names_size)
            memcpy(p + at, parts[i].names, parts[i].names_size);
        put_le(e + 16, at, 8);
        put_le(e + 24, parts[i].names_size, 8);
        at += parts[i].names_size;
    }
    *image = p;
    *size = total;
    return 0;
}

int edm_cubin_part_has(const edm_cubin_part *part, const char *name)
{
    if (!part->names)
        return 1;
    for (size_t at = 0; at < part->names_size; at += strlen(part->names + at) + 1)
        if (strcmp(part->names + at, name) == 0)
            return 1;
    return 0;
}
