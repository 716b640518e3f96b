/* Reading NumPy .npy files (npy_read.h). */
#include "config.h"

#include "runtime/npy_read.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const char *p, *end;
} hdr_cursor;

static void hdr_ws(hdr_cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hdr_eat(hdr_cursor *c, char ch)
{
    hdr_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static int hdr_string(hdr_cursor *c, char *out, size_t size)
{
    hdr_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (n + 1 >= size)
            return 0;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return 0;
    c->p++;
    out[n] = 0;
    return 1;
}

static int hdr_word(hdr_cursor *c, const char *w)
{
    hdr_ws(c);
    size_t l = strlen(w);
    if ((size_t)(c->end - c->p) >= l && memcmp(c->p, w, l) == 0) {
        c->p += l;
        return 1;
    }
    return 0;
}

/* The header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (8, 64, 64), } */
static const char *parse_npy_dict(const char *h, size_t len, edm_npy_info *info)
{
    hdr_cursor c = {h, h + len};
    int have_descr = 0, have_order = 0, have_shape = 0;
    if (!hdr_eat(&c, '{'))
        return "the header is not a dict";
    for (;;) {
        if (hdr_eat(&c, '}'))
            break;
        char key[32], val[32];
        if (!hdr_string(&c, key, sizeof key) || !hdr_eat(&c, ':'))
            return "malformed header";
        if (strcmp(key, "descr") == 0) {
            if (!hdr_string(&c, val, sizeof val))
                return "malformed 'descr'";
            if (strcmp(val, "<f4") == 0)
                info->itemsize = 4;
            else if (strcmp(val, "<f2") == 0)
                info->itemsize = 2;
            else
                return "unsupported dtype (only '<f4' and '<f2')";
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (hdr_word(&c, "True"))
                return "Fortran-ordered arrays are not supported";
            if (!hdr_word(&c, "False"))
                return "malformed 'fortran_order'";
            have_order = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!hdr_eat(&c, '('))
                return "malformed 'shape'";
            info->ndim = 0;
            for (;;) {
                if (hdr_eat(&c, ')'))
                    break;
                hdr_ws(&c);
                int64_t v = 0;
                int digits = 0;
                while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
                    if (v > (INT64_MAX - 9) / 10)
                        return "'shape' out of range";
                    v = v * 10 + (*c.p++ - '0');
                    digits++;
                }
                if (c.p < c.end && *c.p == 'L') /* Python 2 longs */
                    c.p++;
                if (!digits || info->ndim >= 8)
                    return "malformed 'shape'";
                info->shape[info->ndim++] = v;
                if (!hdr_eat(&c, ',')) {
                    if (!hdr_eat(&c, ')'))
                        return "malformed 'shape'";
                    break;
                }
            }
            have_shape = 1;
        } else {
            return "unknown key in the header";
        }
        if (!hdr_eat(&c, ',')) {
            if (!hdr_eat(&c, '}'))
                return "malformed header";
            break;
        }
    }
    if (!have_descr || !have_order || !have_shape)
        return "the header lacks 'descr', 'fortran_order' or 'shape'";
    return NULL;
}

static float half_to_float(uint16_t h)
{
    int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m | 0x400), e - 25);
    return sign ? -v : v;
}

static float load_f32le(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int edm_npy_header(const char *fname, const unsigned char *b, size_t len, edm_npy_info *info, size_t *data,
                      edm_status *st)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (len < 10 || memcmp(b, magic, 6) != 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not a .npy file", fname);
    int major = b[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: corrupt .npy (truncated header)", fname);
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hstart = 12;
    } else {
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: unsupported .npy version %d", fname, major);
    }
    if (hlen > len - hstart)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: corrupt .npy (truncated header)", fname);
    const char *why = parse_npy_dict((const char *)b + hstart, hlen, info);
    if (why)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: corrupt .npy (%s)", fname, why);
    *data = hstart + hlen;
    return 0;
}


float edm_npy_element(const edm_npy_info *info, const unsigned char *data, size_t i)
{
    return info->itemsize == 4 ? load_f32le(data + 4 * i)
                               : half_to_float((uint16_t)(data[2 * i] | data[2 * i + 1] << 8));
}
