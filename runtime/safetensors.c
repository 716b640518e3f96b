#include "config.h"
#include "runtime/safetensors.h"

#include "runtime/files.h"

#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The safetensors format as documented by huggingface/safetensors: 8 bytes of
 * little-endian header length, that many bytes of UTF-8 JSON (possibly padded
 * with trailing spaces), then the data section, which the tensors' regions
 * must tile exactly. */

#define ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)
#define ST_META_KEY "__metadata__"

/* ------------------------------------------------------------------ dtypes */

static const char *const st_dtype_names[] = {"F32", "F16", "BF16", "F64"};

char *edm_st_entry_shape_str(const edm_st_entry *e, char *buf, size_t size)
{
    edm_shape s = {.rank = e->rank};
    for (int k = 0; k < e->rank; k++)
        s.dim[k] = e->dim[k];
    return edm_shape_str(&s, buf, size);
}

size_t edm_dtype_size(edm_dtype t)
{
    switch (t) {
    case EDM_F32: return 4;
    case EDM_F16:
    case EDM_BF16: return 2;
    case EDM_F64: return 8;
    }
    return 0;
}

static const char *st_dtype_name(edm_dtype t)
{
    return (unsigned)t < sizeof st_dtype_names / sizeof st_dtype_names[0] ? st_dtype_names[t] : "?";
}

static int st_dtype_parse(const char *s, edm_dtype *out)
{
    for (unsigned i = 0; i < sizeof st_dtype_names / sizeof st_dtype_names[0]; i++) {
        if (strcmp(s, st_dtype_names[i]) == 0) {
            *out = (edm_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------- half-precision numbers */

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Rounds m >> shift to nearest, ties to even (1 <= shift <= 31). */
static uint32_t shift_round_even(uint32_t m, unsigned shift)
{
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u)))
        r++;
    return r;
}

uint16_t edm_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) { /* NaN: keep the top payload bits, stay a NaN */
        uint32_t m = (a >> 13) & 0x3ffu;
        return (uint16_t)(sign | 0x7c00u | (m ? m : 0x200u));
    }
    if (a >= 0x477ff000u) /* >= 65520 (halfway past 65504, ties to even): inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a half subnormal (or zero) */
        uint32_t e = a >> 23;
        if (e < 102u) /* below 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        /* value = m * 2^(e-150); in units of 2^-24 that is m >> (126 - e) */
        return (uint16_t)(sign | shift_round_even(m, 126u - e));
    }
    /* normal: rebias the exponent (127 -> 15); a carry out of the mantissa
     * correctly bumps the exponent */
    return (uint16_t)(sign | shift_round_even(a - 0x38000000u, 13u));
}

float edm_f16_to_f32(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t m = (uint32_t)h & 0x3ffu;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in f32 */
        float v = (float)m * 0x1p-24f;
        return f32_from_bits(f32_bits(v) | sign);
    }
    if (e == 31)
        return f32_from_bits(sign | 0x7f800000u | (m << 13));
    return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t edm_f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) { /* NaN: truncate, but stay a NaN */
        uint32_t r = u >> 16;
        if ((r & 0x7fu) == 0)
            r |= 0x40u;
        return (uint16_t)r;
    }
    /* round to nearest even; overflow carries into inf as it should */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float edm_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

/* ------------------------------------------------ little-endian load/store */

static uint64_t load_le(const unsigned char *p, int nbytes)
{
    uint64_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void store_le(unsigned char *p, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++) {
        p[i] = (unsigned char)(v & 0xffu);
        v >>= 8;
    }
}

static double f64_from_bits(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint64_t f64_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Element i of little-endian data in dtype t, as a double (exact for all four
 * dtypes) or as a float (exact except F64, which rounds). */
static double load_f64(const unsigned char *p, edm_dtype t, int64_t i)
{
    switch (t) {
    case EDM_F32: return (double)f32_from_bits((uint32_t)load_le(p + i * 4, 4));
    case EDM_F16: return (double)edm_f16_to_f32((uint16_t)load_le(p + i * 2, 2));
    case EDM_BF16: return (double)edm_bf16_to_f32((uint16_t)load_le(p + i * 2, 2));
    case EDM_F64: return f64_from_bits(load_le(p + i * 8, 8));
    }
    return 0.0;
}

static float load_f32(const unsigned char *p, edm_dtype t, int64_t i)
{
    switch (t) {
    case EDM_F32: return f32_from_bits((uint32_t)load_le(p + i * 4, 4));
    case EDM_F16: return edm_f16_to_f32((uint16_t)load_le(p + i * 2, 2));
    case EDM_BF16: return edm_bf16_to_f32((uint16_t)load_le(p + i * 2, 2));
    case EDM_F64: return (float)f64_from_bits(load_le(p + i * 8, 8));
    }
    return 0.0f;
}

static void store_f32(unsigned char *p, edm_dtype t, int64_t i, float v)
{
    switch (t) {
    case EDM_F32: store_le(p + i * 4, f32_bits(v), 4); break;
    case EDM_F16: store_le(p + i * 2, edm_f32_to_f16(v), 2); break;
    case EDM_BF16: store_le(p + i * 2, edm_f32_to_bf16(v), 2); break;
    case EDM_F64: store_le(p + i * 8, f64_bits((double)v), 8); break;
    }
}

static void store_f64(unsigned char *p, edm_dtype t, int64_t i, double v)
{
    if (t == EDM_F64)
        store_le(p + i * 8, f64_bits(v), 8);
    else /* double -> float -> half rounds twice; fine for checkpoints */
        store_f32(p, t, i, (float)v);
}

/* "[32, 5, 3, 3]" into buf. */
static const char *fmt_shape(char *buf, size_t cap, int rank, const int64_t *dim)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i <= rank && used < cap; i++) {
        const char *sep = i == 0 ? "[" : ", ";
        int n = i < rank ? snprintf(buf + used, cap - used, "%s%lld", sep, (long long)dim[i])
                         : snprintf(buf + used, cap - used, "]");
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}

/* numel of a shape, or -1 if it (or numel * esize) overflows int64. */
static int64_t shape_numel(int rank, const int64_t *dim, size_t esize)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dim[i] < 0)
            return -1;
        if (dim[i] != 0 && n > INT64_MAX / dim[i])
            return -1;
        n *= dim[i];
    }
    if (esize != 0 && n > INT64_MAX / (int64_t)esize)
        return -1;
    return n;
}

/* ================================================================== reader */

typedef struct {
    const char *name;
    const edm_st_entry *e;
} st_name_ix;

struct edm_st_file {
    char *path;
    void *map;
    size_t map_len;
    int heap; /* map is a malloc'd image (edm_st_open_memory), not a mapping */
    int n;
    edm_st_entry *entries;        /* sorted by data offset */
    st_name_ix *by_name;          /* sorted by name */
    int nmeta;
    char **meta_key;
    char **meta_val;
};

typedef struct {
    edm_st_file *f;
    edm_status *st;
    const unsigned char *data; /* data section */
    uint64_t data_len;
    uint64_t *begin; /* per entry, parallel to f->entries while parsing */
} st_parse;

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void edm_st_close(edm_st_file *f)
{
    if (!f)
        return;
    if (f->map && f->heap)
        free(f->map);
    else if (f->map)
        munmap(f->map, f->map_len);
    for (int i = 0; i < f->n; i++)
        free((char *)f->entries[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_key[i]);
        free(f->meta_val[i]);
    }
    free(f->entries);
    free(f->by_name);
    free(f->meta_key);
    free(f->meta_val);
    free(f->path);
    free(f);
}

/* Maps the whole file read-only; checks it is a regular file of >= 8 bytes. */
static int map_file(edm_st_file *f, edm_status *st)
{
    int fd = open(f->path, O_RDONLY);
    if (fd < 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot stat: %s", f->path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: not a regular file", f->path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: truncated: %lld bytes, too short for the 8-byte header length", f->path,
                        (long long)sb.st_size);
    }
    if ((uintmax_t)sb.st_size > (uintmax_t)SIZE_MAX) {
        close(fd);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: too large to map", f->path);
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (p == MAP_FAILED)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot map: %s", f->path, strerror(err));
    f->map = p;
    f->map_len = (size_t)sb.st_size;
    return 0;
}

/* Parses exactly `len` bytes of JSON: one value, then only whitespace. */
static json_object *parse_header(const edm_st_file *f, const char *text, size_t len, edm_status *st)
{
    if (len > (size_t)INT32_MAX)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: header too large", f->path), NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return edm_nomem(st), NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *root = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        json_object_put(root);
        const char *why = jerr == json_tokener_continue ? "unexpected end of header" : json_tokener_error_desc(jerr);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: header is not valid JSON: %s", f->path, why), NULL;
    }
    for (size_t i = end; i < len; i++) {
        char c = text[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            json_object_put(root);
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s: header is not valid JSON: trailing data at byte %zu of %zu", f->path, i, len),
                   NULL;
        }
    }
    return root;
}

static int parse_metadata(st_parse *p, json_object *meta)
{
    edm_st_file *f = p->f;
    if (!json_object_is_type(meta, json_type_object))
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: __metadata__ is not an object", f->path);
    int n = json_object_object_length(meta);
    f->meta_key = calloc((size_t)n + 1, sizeof *f->meta_key);
    f->meta_val = calloc((size_t)n + 1, sizeof *f->meta_val);
    if (!f->meta_key || !f->meta_val)
        return edm_nomem(p->st);
    json_object_object_foreach(meta, key, val)
    {
        if (!json_object_is_type(val, json_type_string))
            return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: __metadata__ value for '%s' is not a string",
                            f->path, key);
        if ((size_t)json_object_get_string_len(val) != strlen(json_object_get_string(val)))
            return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s: __metadata__ value for '%s' contains a NUL character", f->path, key);
        f->meta_key[f->nmeta] = dup_str(key);
        f->meta_val[f->nmeta] = dup_str(json_object_get_string(val));
        if (!f->meta_key[f->nmeta] || !f->meta_val[f->nmeta]) {
            free(f->meta_key[f->nmeta]);
            free(f->meta_val[f->nmeta]);
            return edm_nomem(p->st);
        }
        f->nmeta++;
    }
    return 0;
}

/* A non-negative JSON integer, or -1 (with *ok = 0) for anything else. */
static int64_t json_nonneg_int(json_object *v, int *ok)
{
    *ok = 0;
    if (!json_object_is_type(v, json_type_int))
        return -1;
    int64_t x = json_object_get_int64(v);
    if (x < 0)
        return x;
    *ok = 1;
    return x;
}

static int parse_shape(st_parse *p, edm_st_entry *e, json_object *shape)
{
    const char *path = p->f->path;
    if (!json_object_is_type(shape, json_type_array))
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': shape is not an array", path, e->name);
    size_t rank = json_object_array_length(shape);
    if (rank > EDM_MAX_RANK)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': rank %zu exceeds the maximum %d", path,
                        e->name, rank, EDM_MAX_RANK);
    e->rank = (int)rank;
    for (size_t i = 0; i < rank; i++) {
        json_object *d = json_object_array_get_idx(shape, i);
        int ok;
        int64_t x = json_nonneg_int(d, &ok);
        if (!ok && json_object_is_type(d, json_type_int))
            return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': negative dimension %lld in shape",
                            path, e->name, (long long)x);
        if (!ok)
            return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': shape element %zu is not an integer",
                            path, e->name, i);
        e->dim[i] = x;
    }
    e->numel = shape_numel(e->rank, e->dim, edm_dtype_size(e->dtype));
    if (e->numel < 0) {
        char sb[160];
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': shape %s is too large", path, e->name,
                        fmt_shape(sb, sizeof sb, e->rank, e->dim));
    }
    return 0;
}

static int parse_offsets(st_parse *p, edm_st_entry *e, json_object *offs, uint64_t *begin_out)
{
    const char *path = p->f->path;
    if (!json_object_is_type(offs, json_type_array) || json_object_array_length(offs) != 2)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': data_offsets is not a [begin, end] pair",
                        path, e->name);
    int ok_b, ok_e;
    int64_t b = json_nonneg_int(json_object_array_get_idx(offs, 0), &ok_b);
    int64_t end = json_nonneg_int(json_object_array_get_idx(offs, 1), &ok_e);
    if (!ok_b || !ok_e)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: tensor '%s': data_offsets must be non-negative integers", path, e->name);
    if (b > end)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': data_offsets [%lld, %lld] begin after end",
                        path, e->name, (long long)b, (long long)end);
    if ((uint64_t)end > p->data_len)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: tensor '%s': data_offsets [%lld, %lld] extend past the data section (%llu bytes); "
                        "file truncated?",
                        path, e->name, (long long)b, (long long)end, (unsigned long long)p->data_len);
    int64_t need = e->numel * (int64_t)edm_dtype_size(e->dtype);
    if (end - b != need) {
        char sb[160];
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: header says %lld bytes for tensor '%s' %s %s, shape needs %lld", path,
                        (long long)(end - b), e->name, fmt_shape(sb, sizeof sb, e->rank, e->dim),
                        st_dtype_name(e->dtype), (long long)need);
    }
    *begin_out = (uint64_t)b;
    e->nbytes = (size_t)need;
    e->data = p->data + b;
    return 0;
}

static int parse_entry(st_parse *p, const char *name, json_object *obj, edm_st_entry *e, uint64_t *begin_out)
{
    const char *path = p->f->path;
    e->name = dup_str(name);
    if (!e->name)
        return edm_nomem(p->st);
    if (!json_object_is_type(obj, json_type_object))
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': entry is not an object", path, name);
    json_object *dtype = NULL, *shape = NULL, *offs = NULL;
    json_object_object_foreach(obj, key, val)
    {
        if (strcmp(key, "dtype") == 0)
            dtype = val;
        else if (strcmp(key, "shape") == 0)
            shape = val;
        else if (strcmp(key, "data_offsets") == 0)
            offs = val;
        else
            return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': unknown key '%s'", path, name, key);
    }
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offs ? "data_offsets" : NULL;
    if (missing)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': missing %s", path, name, missing);
    if (!json_object_is_type(dtype, json_type_string))
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: tensor '%s': dtype is not a string", path, name);
    if (st_dtype_parse(json_object_get_string(dtype), &e->dtype) != 0)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: unsupported dtype '%s' for tensor '%s'", path,
                        json_object_get_string(dtype), name);
    if (parse_shape(p, e, shape) != 0)
        return -1;
    return parse_offsets(p, e, offs, begin_out);
}

static int cmp_by_offset(const void *a, const void *b)
{
    const edm_st_entry *x = a, *y = b;
    const unsigned char *xp = x->data, *yp = y->data;
    if (xp != yp)
        return xp < yp ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_by_name(const void *a, const void *b)
{
    const st_name_ix *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* After sorting by offset, the regions must tile [0, data_len) exactly. */
static int check_tiling(st_parse *p)
{
    edm_st_file *f = p->f;
    uint64_t pos = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        const edm_st_entry *e = &f->entries[i];
        uint64_t b = (uint64_t)((const unsigned char *)e->data - p->data);
        uint64_t end = b + (uint64_t)e->nbytes;
        if (b < pos)
            return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s' (ending at %llu)", f->path,
                            e->name, (unsigned long long)b, (unsigned long long)end, prev, (unsigned long long)pos);
        if (b > pos)
            return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s: hole in the data section: bytes %llu..%llu before tensor '%s' belong to no tensor",
                            f->path, (unsigned long long)pos, (unsigned long long)b, e->name);
        pos = end;
        prev = e->name;
    }
    if (pos != p->data_len)
        return edm_fail(p->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: data section has %llu bytes but the tensors cover only %llu", f->path,
                        (unsigned long long)p->data_len, (unsigned long long)pos);
    return 0;
}

static int parse_tensors(st_parse *p, json_object *root)
{
    edm_st_file *f = p->f;
    int total = json_object_object_length(root);
    f->entries = calloc((size_t)total + 1, sizeof *f->entries);
    f->by_name = calloc((size_t)total + 1, sizeof *f->by_name);
    if (!f->entries || !f->by_name)
        return edm_nomem(p->st);
    json_object_object_foreach(root, name, val)
    {
        if (strcmp(name, ST_META_KEY) == 0) {
            if (parse_metadata(p, val) != 0)
                return -1;
            continue;
        }
        uint64_t begin = 0;
        edm_st_entry *e = &f->entries[f->n];
        f->n++; /* counted first so close() frees the name on failure */
        if (parse_entry(p, name, val, e, &begin) != 0)
            return -1;
    }
    if (f->n > 0)
        qsort(f->entries, (size_t)f->n, sizeof *f->entries, cmp_by_offset);
    if (check_tiling(p) != 0)
        return -1;
    for (int i = 0; i < f->n; i++)
        f->by_name[i] = (st_name_ix){f->entries[i].name, &f->entries[i]};
    if (f->n > 0)
        qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_by_name);
    return 0;
}

static int parse_file(edm_st_file *f, edm_status *st)
{
    const unsigned char *base = f->map;
    uint64_t hlen = load_le(base, 8);
    uint64_t avail = (uint64_t)f->map_len - 8;
    if (hlen > avail)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: header length %llu exceeds the file (%llu bytes after the length); truncated?", f->path,
                        (unsigned long long)hlen, (unsigned long long)avail);
    if (hlen > ST_MAX_HEADER)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: header length %llu exceeds the limit of %llu bytes",
                        f->path, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    json_object *root = parse_header(f, (const char *)base + 8, (size_t)hlen, st);
    if (!root)
        return -1;
    int rc;
    if (!json_object_is_type(root, json_type_object)) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: header is not a JSON object", f->path);
    } else {
        st_parse p = {.f = f, .st = st, .data = base + 8 + hlen, .data_len = avail - hlen};
        rc = parse_tensors(&p, root);
    }
    json_object_put(root);
    return rc;
}

edm_st_file *edm_st_open(const char *path, edm_status *st)
{
    edm_st_file *f = calloc(1, sizeof *f);
    if (!f)
        return edm_nomem(st), NULL;
    f->path = dup_str(path);
    if (!f->path) {
        edm_nomem(st);
        edm_st_close(f);
        return NULL;
    }
    if (map_file(f, st) != 0 || parse_file(f, st) != 0) {
        edm_st_close(f);
        return NULL;
    }
    return f;
}

edm_st_file *edm_st_open_memory(const char *path, void *image, size_t len, edm_status *st)
{
    edm_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        free(image);
        return edm_nomem(st), NULL;
    }
    f->map = image;
    f->map_len = len;
    f->heap = 1;
    f->path = dup_str(path);
    if (!f->path) {
        edm_nomem(st);
        edm_st_close(f);
        return NULL;
    }
    if (len < 8) {
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: truncated: %zu bytes, too short for the 8-byte header length",
                 path, len);
        edm_st_close(f);
        return NULL;
    }
    if (parse_file(f, st) != 0) {
        edm_st_close(f);
        return NULL;
    }
    return f;
}

const char *edm_st_path(const edm_st_file *f) { return f->path; }

int edm_st_count(const edm_st_file *f) { return f->n; }

const edm_st_entry *edm_st_entry_at(const edm_st_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->entries[i] : NULL;
}

const edm_st_entry *edm_st_find(const edm_st_file *f, const char *name)
{
    int lo = 0, hi = f->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->by_name[mid].name);
        if (c == 0)
            return f->by_name[mid].e;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *edm_st_metadata(const edm_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_key[i], key) == 0)
            return f->meta_val[i];
    return NULL;
}

int edm_st_metadata_count(const edm_st_file *f) { return f->nmeta; }

const char *edm_st_metadata_key(const edm_st_file *f, int i)
{
    return i >= 0 && i < f->nmeta ? f->meta_key[i] : NULL;
}

static int check_read(const edm_st_file *f, const edm_st_entry *e, int64_t n, edm_status *st)
{
    if (!e)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: no such tensor", f->path);
    if (n != e->numel)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: tensor '%s' has %lld elements, reading %lld", f->path,
                        e->name, (long long)e->numel, (long long)n);
    return 0;
}

int edm_st_read_f32(const edm_st_file *f, const edm_st_entry *e, float *out, int64_t n, edm_status *st)
{
    if (check_read(f, e, n, st) != 0)
        return -1;
    for (int64_t i = 0; i < n; i++)
        out[i] = load_f32(e->data, e->dtype, i);
    return 0;
}

int edm_st_read_f64(const edm_st_file *f, const edm_st_entry *e, double *out, int64_t n, edm_status *st)
{
    if (check_read(f, e, n, st) != 0)
        return -1;
    for (int64_t i = 0; i < n; i++)
        out[i] = load_f64(e->data, e->dtype, i);
    return 0;
}

/* ================================================================== writer */

typedef struct {
    char *name;
    edm_dtype dtype;
    int rank;
    int64_t dim[EDM_MAX_RANK];
    unsigned char *data; /* little-endian, stored dtype */
    size_t nbytes;
} st_wtensor;

struct edm_st_writer {
    st_wtensor *t;
    int n, cap;
    char **meta_key;
    char **meta_val;
    int nmeta, meta_cap;
};

edm_st_writer *edm_st_writer_new(void) { return calloc(1, sizeof(edm_st_writer)); }

void edm_st_writer_free(edm_st_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta_key[i]);
        free(w->meta_val[i]);
    }
    free(w->t);
    free(w->meta_key);
    free(w->meta_val);
    free(w);
}

/* Validates a new tensor and reserves its slot; returns it with name set and
 * data allocated (nbytes), or NULL with st filled. */
static st_wtensor *writer_slot(edm_st_writer *w, const char *name, edm_dtype stored, int rank, const int64_t *dim,
                               const void *data, edm_status *st)
{
    if (!name || !*name || strcmp(name, ST_META_KEY) == 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "invalid tensor name '%s'", name ? name : "(null)"), NULL;
    if (edm_dtype_size(stored) == 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "tensor '%s': invalid stored dtype %d", name, (int)stored),
               NULL;
    if (rank < 0 || rank > EDM_MAX_RANK || (rank > 0 && !dim))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "tensor '%s': invalid rank %d", name, rank), NULL;
    int64_t numel = shape_numel(rank, dim, edm_dtype_size(stored));
    if (numel < 0 || (uint64_t)numel * edm_dtype_size(stored) > (uint64_t)SIZE_MAX) {
        char sb[160];
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "tensor '%s': invalid shape %s", name,
                        fmt_shape(sb, sizeof sb, rank, dim)),
               NULL;
    }
    if (numel > 0 && !data)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "tensor '%s': no data", name), NULL;
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "duplicate tensor name '%s'", name), NULL;
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 16;
        st_wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t)
            return edm_nomem(st), NULL;
        w->t = t;
        w->cap = cap;
    }
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->nbytes = (size_t)numel * edm_dtype_size(stored);
    t->name = dup_str(name);
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return edm_nomem(st), NULL;
    }
    t->dtype = stored;
    t->rank = rank;
    for (int i = 0; i < rank; i++)
        t->dim[i] = dim[i];
    w->n++;
    return t;
}

int edm_st_writer_add_f32(edm_st_writer *w, const char *name, edm_dtype stored, int rank, const int64_t *dim,
                          const float *data, edm_status *st)
{
    st_wtensor *t = writer_slot(w, name, stored, rank, dim, data, st);
    if (!t)
        return -1;
    int64_t n = (int64_t)(t->nbytes / edm_dtype_size(stored));
    for (int64_t i = 0; i < n; i++)
        store_f32(t->data, stored, i, data[i]);
    return 0;
}

int edm_st_writer_add_raw(edm_st_writer *w, const char *name, edm_dtype stored, int rank, const int64_t *dim,
                          const void *data, edm_status *st)
{
    st_wtensor *t = writer_slot(w, name, stored, rank, dim, data, st);
    if (!t)
        return -1;
    if (t->nbytes)
        memcpy(t->data, data, t->nbytes);
    return 0;
}

int edm_st_writer_add_f64(edm_st_writer *w, const char *name, edm_dtype stored, int rank, const int64_t *dim,
                          const double *data, edm_status *st)
{
    st_wtensor *t = writer_slot(w, name, stored, rank, dim, data, st);
    if (!t)
        return -1;
    int64_t n = (int64_t)(t->nbytes / edm_dtype_size(stored));
    for (int64_t i = 0; i < n; i++)
        store_f64(t->data, stored, i, data[i]);
    return 0;
}

int edm_st_writer_meta(edm_st_writer *w, const char *key, const char *value, edm_status *st)
{
    if (!key || !value)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "metadata key and value must not be NULL");
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta_key[i], key) == 0)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "duplicate metadata key '%s'", key);
    if (w->nmeta == w->meta_cap) {
        int cap = w->meta_cap ? w->meta_cap * 2 : 8;
        char **k = realloc(w->meta_key, (size_t)cap * sizeof *k);
        if (!k)
            return edm_nomem(st);
        w->meta_key = k;
        char **v = realloc(w->meta_val, (size_t)cap * sizeof *v);
        if (!v)
            return edm_nomem(st);
        w->meta_val = v;
        w->meta_cap = cap;
    }
    char *k = dup_str(key), *v = dup_str(value);
    if (!k || !v) {
        free(k);
        free(v);
        return edm_nomem(st);
    }
    w->meta_key[w->nmeta] = k;
    w->meta_val[w->nmeta] = v;
    w->nmeta++;
    return 0;
}

/* json_object_object_add and friends return 0 on success. */
static int jadd(json_object *obj, const char *key, json_object *val)
{
    if (!val)
        return -1;
    if (json_object_object_add(obj, key, val) != 0) {
        json_object_put(val);
        return -1;
    }
    return 0;
}

static int jpush(json_object *arr, json_object *val)
{
    if (!val)
        return -1;
    if (json_object_array_add(arr, val) != 0) {
        json_object_put(val);
        return -1;
    }
    return 0;
}

static json_object *tensor_json(const st_wtensor *t, uint64_t begin)
{
    json_object *o = json_object_new_object();
    json_object *shape = json_object_new_array();
    json_object *offs = json_object_new_array();
    int bad = !o || !shape || !offs;
    for (int i = 0; !bad && i < t->rank; i++)
        bad = jpush(shape, json_object_new_int64(t->dim[i])) != 0;
    if (!bad)
        bad = jpush(offs, json_object_new_int64((int64_t)begin)) != 0 ||
              jpush(offs, json_object_new_int64((int64_t)(begin + t->nbytes))) != 0;
    if (!bad) {
        bad = jadd(o, "dtype", json_object_new_string(st_dtype_name(t->dtype))) != 0;
        bad = bad || jadd(o, "shape", shape) != 0;
        shape = NULL;
        bad = bad || jadd(o, "data_offsets", offs) != 0;
        offs = NULL;
    }
    if (bad) {
        json_object_put(shape);
        json_object_put(offs);
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* The header JSON padded with spaces to a multiple of 8 bytes (malloc'd). */
static char *build_header(const edm_st_writer *w, size_t *len_out)
{
    json_object *root = json_object_new_object();
    int bad = !root;
    if (!bad && w->nmeta > 0) {
        json_object *meta = json_object_new_object();
        bad = !meta;
        for (int i = 0; !bad && i < w->nmeta; i++)
            bad = jadd(meta, w->meta_key[i], json_object_new_string(w->meta_val[i])) != 0;
        if (bad)
            json_object_put(meta);
        else
            bad = jadd(root, ST_META_KEY, meta) != 0;
    }
    uint64_t pos = 0;
    for (int i = 0; !bad && i < w->n; i++) {
        bad = jadd(root, w->t[i].name, tensor_json(&w->t[i], pos)) != 0;
        pos += w->t[i].nbytes;
    }
    char *out = NULL;
    if (!bad) {
        size_t len = 0;
        const char *s = json_object_to_json_string_length(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                          &len);
        size_t padded = (len + 7) / 8 * 8;
        out = s ? malloc(padded + 1) : NULL;
        if (out) {
            memcpy(out, s, len);
            memset(out + len, ' ', padded - len);
            out[padded] = '\0';
            *len_out = padded;
        }
    }
    json_object_put(root);
    return out;
}

static int write_all(FILE *fp, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1;
}

static int write_body(const edm_st_writer *w, FILE *fp, const char *header, size_t hlen)
{
    unsigned char lenbuf[8];
    store_le(lenbuf, (uint64_t)hlen, 8);
    if (write_all(fp, lenbuf, sizeof lenbuf) != 0 || write_all(fp, header, hlen) != 0)
        return -1;
    for (int i = 0; i < w->n; i++)
        if (write_all(fp, w->t[i].data, w->t[i].nbytes) != 0)
            return -1;
    return 0;
}

typedef struct {
    const edm_st_writer *w;
    const char *header;
    size_t hlen;
} body_ctx;

static int write_file_body(FILE *fp, void *ctx, char *err, size_t errsize)
{
    const body_ctx *b = ctx;
    (void)err;
    (void)errsize; /* errno tells */
    return write_body(b->w, fp, b->header, b->hlen);
}

int edm_st_writer_write(edm_st_writer *w, const char *path, edm_status *st)
{
    size_t hlen = 0;
    char *header = build_header(w, &hlen);
    if (!header)
        return edm_nomem(st);
    body_ctx ctx = {w, header, hlen};
    int rc = edm_write_atomic(path, write_file_body, &ctx, st);
    free(header);
    return rc;
}

int edm_st_writer_to_memory(edm_st_writer *w, void **image, size_t *len, edm_status *st)
{
    *image = NULL;
    *len = 0;
    size_t hlen = 0;
    char *header = build_header(w, &hlen);
    if (!header)
        return edm_nomem(st);
    size_t total = 8 + hlen;
    for (int i = 0; i < w->n; i++)
        total += w->t[i].nbytes;
    unsigned char *buf = malloc(total);
    if (!buf) {
        free(header);
        return edm_nomem(st);
    }
    store_le(buf, (uint64_t)hlen, 8);
    memcpy(buf + 8, header, hlen);
    size_t at = 8 + hlen;
    for (int i = 0; i < w->n; i++) {
        if (w->t[i].nbytes)
            memcpy(buf + at, w->t[i].data, w->t[i].nbytes);
        at += w->t[i].nbytes;
    }
    free(header);
    *image = buf;
    *len = total;
    return 0;
}
