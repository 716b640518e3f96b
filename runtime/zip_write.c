/* Stored zip archives, written in one pass (zip_write.h).  Layout per the
 * PKWARE APPNOTE: local header + name + data per entry, then one central
 * directory header per entry, then (when counts or offsets overflow the
 * 16/32-bit fields) the zip64 end record and its locator, then the end record. */
#include "config.h"

#include "runtime/zip_write.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define U16_FULL 0xffffu
#define U32_FULL 0xffffffffu
/* 1980-01-01 00:00 in MS-DOS form: the same bytes for every run */
#define DOS_DATE ((0u << 9) | (1u << 5) | 1u)

typedef struct {
    char *name;
    uint32_t crc;
    uint64_t size, offset;
} zip_entry;

struct edm_zip_writer {
    FILE *fp;
    uint64_t at; /* bytes written so far */
    zip_entry *e;
    size_t n, cap;
};

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static int out(edm_zip_writer *z, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, z->fp) != n)
        return -1;
    z->at += n;
    return 0;
}

edm_zip_writer *edm_zip_writer_new(FILE *fp)
{
    edm_zip_writer *z = calloc(1, sizeof *z);
    if (z)
        z->fp = fp;
    return z;
}

void edm_zip_writer_free(edm_zip_writer *z)
{
    if (!z)
        return;
    for (size_t i = 0; i < z->n; i++)
        free(z->e[i].name);
    free(z->e);
    free(z);
}

int edm_zip_add(edm_zip_writer *z, const char *name, const void *data, size_t len)
{
    size_t nlen = strlen(name);
    if (nlen > U16_FULL || (uint64_t)len >= U32_FULL) {
        errno = EFBIG;
        return -1;
    }
    if (z->n == z->cap) {
        size_t cap = z->cap ? 2 * z->cap : 256;
        zip_entry *e = realloc(z->e, sizeof *e * cap);
        if (!e)
            return -1;
        z->e = e;
        z->cap = cap;
    }
    zip_entry *e = &z->e[z->n];
    e->name = strdup(name);
    if (!e->name)
        return -1;
    e->crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)len);
    e->size = len;
    e->offset = z->at;
    z->n++;
    unsigned char h[30];
    put32(h, 0x04034b50u);
    put16(h + 4, 20); /* version needed: 2.0 (a stored file) */
    put16(h + 6, 0);  /* flags */
    put16(h + 8, 0);  /* stored */
    put16(h + 10, 0);
    put16(h + 12, DOS_DATE);
    put32(h + 14, e->crc);
    put32(h + 18, (uint32_t)len);
    put32(h + 22, (uint32_t)len);
    put16(h + 26, (unsigned)nlen);
    put16(h + 28, 0);
    return out(z, h, sizeof h) == 0 && out(z, name, nlen) == 0 && out(z, data, len) == 0 ? 0 : -1;
}

/* One central directory header, with a zip64 extra field for an offset past 4 GiB. */
static int central(edm_zip_writer *z, const zip_entry *e)
{
    int big = e->offset >= U32_FULL;
    size_t nlen = strlen(e->name);
    unsigned char h[46], x[12];
    put32(h, 0x02014b50u);
    put16(h + 4, (3u << 8) | 45u); /* made by: Unix, 4.5 */
    put16(h + 6, big ? 45 : 20);
    put16(h + 8, 0);
    put16(h + 10, 0);
    put16(h + 12, 0);
    put16(h + 14, DOS_DATE);
    put32(h + 16, e->crc);
    put32(h + 20, (uint32_t)e->size);
    put32(h + 24, (uint32_t)e->size);
    put16(h + 28, (unsigned)nlen);
    put16(h + 30, big ? sizeof x : 0);
    put16(h + 32, 0); /* comment */
    put16(h + 34, 0); /* disk */
    put16(h + 36, 0); /* internal attributes */
    put32(h + 38, 0100644u << 16);
    put32(h + 42, big ? U32_FULL : (uint32_t)e->offset);
    put16(x, 0x0001);
    put16(x + 2, 8);
    put64(x + 4, e->offset);
    return out(z, h, sizeof h) == 0 && out(z, e->name, nlen) == 0 && (!big || out(z, x, sizeof x) == 0) ? 0 : -1;
}

int edm_zip_finish(edm_zip_writer *z)
{
    uint64_t cd_start = z->at;
    for (size_t i = 0; i < z->n; i++)
        if (central(z, &z->e[i]) != 0)
            return -1;
    uint64_t cd_size = z->at - cd_start, n = z->n;
    int zip64 = n >= U16_FULL || cd_start >= U32_FULL || cd_size >= U32_FULL;
    if (zip64) {
        uint64_t rec = z->at;
        unsigned char r[56], loc[20];
        put32(r, 0x06064b50u);
        put64(r + 4, sizeof r - 12);
        put16(r + 12, (3u << 8) | 45u);
        put16(r + 14, 45);
        put32(r + 16, 0);
        put32(r + 20, 0);
        put64(r + 24, n);
        put64(r + 32, n);
        put64(r + 40, cd_size);
        put64(r + 48, cd_start);
        put32(loc, 0x07064b50u);
        put32(loc + 4, 0);
        put64(loc + 8, rec);
        put32(loc + 16, 1);
        if (out(z, r, sizeof r) != 0 || out(z, loc, sizeof loc) != 0)
            return -1;
    }
    unsigned char end[22];
    put32(end, 0x06054b50u);
    put16(end + 4, 0);
    put16(end + 6, 0);
    put16(end + 8, zip64 ? U16_FULL : (unsigned)n);
    put16(end + 10, zip64 ? U16_FULL : (unsigned)n);
    put32(end + 12, zip64 ? U32_FULL : (uint32_t)cd_size);
    put32(end + 16, zip64 ? U32_FULL : (uint32_t)cd_start);
    put16(end + 20, 0);
    return out(z, end, sizeof end);
}
