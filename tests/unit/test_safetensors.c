#include "config.h"
#include "runtime/safetensors.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

typedef struct {
    char dir[256];
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/edmc-st-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    DIR *d = opendir(fx->dir);
    if (d) {
        const struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", fx->dir, de->d_name);
            if (remove(p) != 0)
                fprintf(stderr, "# cannot remove %s\n", p);
        }
        closedir(d);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void path_in(const fixture *fx, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", fx->dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

/* Number of directory entries whose name contains `part`. */
static int count_entries(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    const struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, part))
            n++;
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* A file of header length `hlen_field`, the header text, then `ndata` bytes. */
static void write_st(const char *path, uint64_t hlen_field, const char *header, size_t ndata)
{
    size_t hl = strlen(header);
    size_t total = 8 + hl + ndata;
    unsigned char *buf = calloc(1, total);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen_field >> (8 * i));
    for (size_t i = 0; i < hl; i++)
        buf[8 + i] = (unsigned char)header[i];
    for (size_t i = 0; i < ndata; i++)
        buf[8 + hl + i] = (unsigned char)i;
    write_bytes(path, buf, total);
    free(buf);
}

static void write_header(const char *path, const char *header, size_t ndata)
{
    write_st(path, strlen(header), header, ndata);
}

/* Opens path expecting failure with `code` and `part` in the message, which
 * must start with the path. */
static void expect_open_error(const char *path, edm_code code, const char *part)
{
    edm_status st;
    edm_status_init(&st);
    edm_st_file *f = edm_st_open(path, &st);
    if (f) {
        edm_st_close(f);
        fail_msg("%s: opened, expected an error containing \"%s\"", path, part);
    }
    if (st.code != code || strncmp(st.msg, path, strlen(path)) != 0 || !strstr(st.msg, part))
        fail_msg("expected code %d with \"%s\", got code %d: %s", (int)code, part, (int)st.code, st.msg);
}

static void expect_bad(const fixture *fx, const char *name, const char *header, size_t ndata, const char *part)
{
    char p[512];
    path_in(fx, name, p, sizeof p);
    write_header(p, header, ndata);
    expect_open_error(p, EDM_ERR_FORMAT, part);
}

static edm_st_file *open_ok(const char *path)
{
    edm_status st;
    edm_status_init(&st);
    edm_st_file *f = edm_st_open(path, &st);
    if (!f)
        fail_msg("open %s: %s", path, st.msg);
    return f;
}

static uint32_t fbits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static uint64_t dbits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float ffrom(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ------------------------------------------------------- half conversions */

static void test_f16_roundtrip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = edm_f16_to_f32((uint16_t)h);
        uint16_t back = edm_f32_to_f16(f);
        if (back != h)
            fail_msg("f16 0x%04x -> %a -> 0x%04x", (unsigned)h, (double)f, (unsigned)back);
        int is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0;
        assert_int_equal(isnan(f) != 0, is_nan);
    }
}

static void test_bf16_roundtrip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = edm_bf16_to_f32((uint16_t)h);
        assert_int_equal(fbits(f), h << 16);
        uint16_t back = edm_f32_to_bf16(f);
        if (back != h)
            fail_msg("bf16 0x%04x -> %a -> 0x%04x", (unsigned)h, (double)f, (unsigned)back);
    }
}

static void test_f16_known(void **state)
{
    (void)state;
    assert_int_equal(edm_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(edm_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(edm_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(edm_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(edm_f32_to_f16(0.1f), 0x2e66);
    assert_int_equal(edm_f32_to_f16(1.0f / 3.0f), 0x3555);
    assert_int_equal(edm_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(edm_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(edm_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(edm_f32_to_f16(65520.0f), 0x7c00); /* tie, rounds to even = inf */
    assert_int_equal(edm_f32_to_f16(-1e6f), 0xfc00);
    assert_int_equal(edm_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(edm_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(edm_f32_to_f16(6.1e-5f), 0x03ff);              /* just below 2^-14 */
    assert_int_equal(edm_f32_to_f16(0x1p-14f), 0x0400);             /* smallest normal */
    assert_int_equal(edm_f32_to_f16(0x1p-14f * (1 - 0x1p-12f)), 0x0400); /* rounds up into normal */
    assert_int_equal(edm_f32_to_f16(0x1p-24f), 0x0001);             /* smallest subnormal */
    assert_int_equal(edm_f32_to_f16(1e-8f), 0x0000);
    assert_int_equal(edm_f32_to_f16(-1e-8f), 0x8000);
    assert_int_equal(edm_f32_to_f16(3e-8f), 0x0001);
    assert_int_equal(edm_f32_to_f16(0x1p-25f), 0x0000);             /* tie to even 0 */
    assert_int_equal(edm_f32_to_f16(0x1p-25f * (1 + 0x1p-10f)), 0x0001);
    assert_int_equal(edm_f32_to_f16(0x3p-25f), 0x0002);             /* 1.5 units: tie to even 2 */
    assert_int_equal(edm_f32_to_f16(0x5p-25f), 0x0002);             /* 2.5 units: tie to even 2 */
    assert_int_equal(edm_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);      /* tie to even */
    assert_int_equal(edm_f32_to_f16(1.0f + 0x3p-11f), 0x3c02);      /* tie to even (up) */
    assert_int_equal(edm_f32_to_f16(1.0f + 0x1p-11f + 0x1p-23f), 0x3c01);
    assert_int_equal(edm_f32_to_f16(0x1p-140f), 0x0000);            /* f32 subnormal */
    assert_true(isnan(edm_f16_to_f32(edm_f32_to_f16(NAN))));
    assert_true(isnan(edm_f16_to_f32(edm_f32_to_f16(ffrom(0x7f800001u))))); /* payload only in low bits */
    assert_true(isnan(edm_f16_to_f32(edm_f32_to_f16(ffrom(0xffc00000u)))));
    assert_int_equal(edm_f32_to_f16(ffrom(0xffc00000u)) & 0x8000, 0x8000);
    assert_true(edm_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(edm_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(edm_f16_to_f32(0x8001) == -0x1p-24f);
    assert_true(edm_f16_to_f32(0x03ff) == 0x3ffp-24f);
    assert_true(isinf(edm_f16_to_f32(0xfc00)) && edm_f16_to_f32(0xfc00) < 0);
}

static void test_bf16_known(void **state)
{
    (void)state;
    assert_int_equal(edm_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(edm_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(edm_f32_to_bf16(ffrom(0x3f808000u)), 0x3f80); /* tie to even (down) */
    assert_int_equal(edm_f32_to_bf16(ffrom(0x3f818000u)), 0x3f82); /* tie to even (up) */
    assert_int_equal(edm_f32_to_bf16(ffrom(0x3f808001u)), 0x3f81);
    assert_int_equal(edm_f32_to_bf16(ffrom(0x3f807fffu)), 0x3f80);
    assert_int_equal(edm_f32_to_bf16(ffrom(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to inf */
    assert_int_equal(edm_f32_to_bf16(ffrom(0x7f7f7fffu)), 0x7f7f);
    assert_int_equal(edm_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(edm_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(edm_f32_to_bf16(ffrom(0x00018000u)), 0x0002); /* subnormal tie to even */
    assert_int_equal(edm_f32_to_bf16(ffrom(0x00008000u)), 0x0000);
    assert_true(isnan(edm_bf16_to_f32(edm_f32_to_bf16(NAN))));
    assert_true(isnan(edm_bf16_to_f32(edm_f32_to_bf16(ffrom(0x7f800001u)))));
    assert_true(isnan(edm_bf16_to_f32(edm_f32_to_bf16(ffrom(0xff80ffffu)))));
}

/* The half (by bits, positive) nearest to a finite positive x, by search and
 * direct comparison of distances: an independent reference. */
static uint16_t ref_round(double x, float (*to32)(uint16_t), uint16_t inf_bits)
{
    uint32_t lo = 0, hi = inf_bits; /* to32(lo) <= x < to32(hi) after the search */
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if ((double)to32((uint16_t)mid) <= x)
            lo = mid;
        else
            hi = mid;
    }
    double a = (double)to32((uint16_t)lo);
    double b;
    if (hi == inf_bits) /* above the largest finite: round against the next step up */
        b = a + (a - (double)to32((uint16_t)(lo - 1)));
    else
        b = (double)to32((uint16_t)hi);
    if (x - a < b - x || (x - a == b - x && (lo & 1u) == 0))
        return (uint16_t)lo;
    return (uint16_t)hi;
}

static void test_half_against_reference(void **state)
{
    (void)state;
    /* ~1M float bit patterns spread over all exponents, both signs */
    for (uint64_t u = 0; u < 0x100000000ull; u += 4099) {
        float x = ffrom((uint32_t)u);
        if (isnan(x) || isinf(x))
            continue;
        double ax = fabs((double)x);
        uint16_t sign = signbit(x) ? 0x8000 : 0;
        uint16_t want = (uint16_t)(sign | ref_round(ax, edm_f16_to_f32, 0x7c00));
        uint16_t got = edm_f32_to_f16(x);
        if (got != want)
            fail_msg("f16(%a): got 0x%04x want 0x%04x", (double)x, (unsigned)got, (unsigned)want);
        want = (uint16_t)(sign | ref_round(ax, edm_bf16_to_f32, 0x7f80));
        got = edm_f32_to_bf16(x);
        if (got != want)
            fail_msg("bf16(%a): got 0x%04x want 0x%04x", (double)x, (unsigned)got, (unsigned)want);
    }
}

/* ------------------------------------------------------------- round trips */

static const edm_dtype all_dtypes[] = {EDM_F32, EDM_F16, EDM_BF16, EDM_F64};

static void test_dtype_size(void **state)
{
    (void)state;
    assert_int_equal(edm_dtype_size(EDM_F32), 4);
    assert_int_equal(edm_dtype_size(EDM_F16), 2);
    assert_int_equal(edm_dtype_size(EDM_BF16), 2);
    assert_int_equal(edm_dtype_size(EDM_F64), 8);
}

static void test_roundtrip_dtypes(void **state)
{
    fixture *fx = *state;
    enum { NV = 24 };
    float vf[NV];
    double vd[NV];
    for (int i = 0; i < NV; i++) {
        vd[i] = (i - 11) * 0.3712345678901234 * pow(10.0, (i % 7) - 3);
        vf[i] = (float)vd[i];
    }
    vf[0] = 0.0f;
    vd[0] = -0.0;
    int64_t dim[3] = {2, 3, 4};
    edm_status st;
    edm_status_init(&st);
    edm_st_writer *w = edm_st_writer_new();
    assert_non_null(w);
    const char *names32[] = {"a.f32", "a.f16", "a.bf16", "a.f64"};
    const char *names64[] = {"d.f32", "d.f16", "d.bf16", "d.f64"};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(edm_st_writer_add_f32(w, names32[k], all_dtypes[k], 3, dim, vf, &st), 0);
        assert_int_equal(edm_st_writer_add_f64(w, names64[k], all_dtypes[k], 2, dim, vd, &st), 0);
    }
    char p[512];
    path_in(fx, "rt.safetensors", p, sizeof p);
    if (edm_st_writer_write(w, p, &st) != 0)
        fail_msg("%s", st.msg);
    edm_st_writer_free(w);
    assert_int_equal(count_entries(fx->dir, ".tmp."), 0);

    edm_st_file *f = open_ok(p);
    assert_string_equal(edm_st_path(f), p);
    assert_int_equal(edm_st_count(f), 8);
    /* written in insertion order, so offsets follow it */
    for (int k = 0; k < 4; k++) {
        assert_string_equal(edm_st_entry_at(f, 2 * k)->name, names32[k]);
        assert_string_equal(edm_st_entry_at(f, 2 * k + 1)->name, names64[k]);
    }
    assert_null(edm_st_entry_at(f, 8));
    assert_null(edm_st_entry_at(f, -1));
    assert_null(edm_st_find(f, "nope"));
    for (int k = 0; k < 4; k++) {
        const edm_st_entry *e = edm_st_find(f, names32[k]);
        assert_non_null(e);
        assert_int_equal(e->dtype, all_dtypes[k]);
        assert_int_equal(e->rank, 3);
        assert_int_equal(e->dim[0], 2);
        assert_int_equal(e->dim[1], 3);
        assert_int_equal(e->dim[2], 4);
        assert_int_equal(e->numel, NV);
        assert_int_equal(e->nbytes, NV * edm_dtype_size(all_dtypes[k]));
        float of[NV];
        double od[NV];
        assert_int_equal(edm_st_read_f32(f, e, of, NV, &st), 0);
        assert_int_equal(edm_st_read_f64(f, e, od, NV, &st), 0);
        for (int i = 0; i < NV; i++) {
            float want = vf[i];
            if (all_dtypes[k] == EDM_F16)
                want = edm_f16_to_f32(edm_f32_to_f16(vf[i]));
            else if (all_dtypes[k] == EDM_BF16)
                want = edm_bf16_to_f32(edm_f32_to_bf16(vf[i]));
            assert_true(fbits(of[i]) == fbits(want));
            assert_true(od[i] == (double)want);
            double tol = all_dtypes[k] == EDM_F16 ? 0x1p-11 : all_dtypes[k] == EDM_BF16 ? 0x1p-8 : 0.0;
            assert_true(fabs((double)of[i] - (double)vf[i]) <= tol * fabs((double)vf[i]) + 0x1p-24);
        }
        e = edm_st_find(f, names64[k]);
        assert_non_null(e);
        assert_int_equal(e->rank, 2);
        assert_int_equal(e->numel, 6);
        assert_int_equal(edm_st_read_f64(f, e, od, 6, &st), 0);
        for (int i = 0; i < 6; i++) {
            if (all_dtypes[k] == EDM_F64)
                assert_true(dbits(od[i]) == dbits(vd[i])); /* exact, -0.0 kept */
            else if (all_dtypes[k] == EDM_F32)
                assert_true(od[i] == (double)(float)vd[i]);
            else
                assert_true(fabs(od[i] - vd[i]) <= 0x1p-8 * fabs(vd[i]) + 0x1p-24);
        }
    }
    /* a wrong element count is refused */
    float one;
    assert_int_equal(edm_st_read_f32(f, edm_st_find(f, "a.f32"), &one, 1, &st), -1);
    assert_non_null(strstr(st.msg, "a.f32"));
    edm_st_close(f);

    /* the header length is a multiple of 8 */
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    unsigned char lb[8];
    assert_int_equal(fread(lb, 1, 8, fp), 8);
    fclose(fp);
    assert_int_equal(lb[0] % 8, 0);
}

static void test_metadata_roundtrip(void **state)
{
    fixture *fx = *state;
    edm_status st;
    edm_status_init(&st);
    edm_st_writer *w = edm_st_writer_new();
    assert_non_null(w);
    assert_int_equal(edm_st_writer_meta(w, "config", "{\"a\": [1, 2], \"path\": \"x/y\"}", &st), 0);
    assert_int_equal(edm_st_writer_meta(w, "format", "pt", &st), 0);
    assert_int_equal(edm_st_writer_meta(w, "empty", "", &st), 0);
    assert_int_equal(edm_st_writer_meta(w, "unicode", "\xc3\xa9t\xc3\xa9 \"quoted\"\n\\", &st), 0);
    assert_int_equal(edm_st_writer_meta(w, "format", "again", &st), -1);
    assert_non_null(strstr(st.msg, "format"));
    float x = 1.5f;
    assert_int_equal(edm_st_writer_add_f32(w, "x", EDM_F32, 0, NULL, &x, &st), 0);
    char p[512];
    path_in(fx, "meta.safetensors", p, sizeof p);
    assert_int_equal(edm_st_writer_write(w, p, &st), 0);
    /* writing again replaces the file */
    assert_int_equal(edm_st_writer_write(w, p, &st), 0);
    edm_st_writer_free(w);

    edm_st_file *f = open_ok(p);
    assert_int_equal(edm_st_metadata_count(f), 4);
    assert_string_equal(edm_st_metadata_key(f, 0), "config");
    assert_string_equal(edm_st_metadata_key(f, 1), "format");
    assert_null(edm_st_metadata_key(f, 4));
    assert_string_equal(edm_st_metadata(f, "config"), "{\"a\": [1, 2], \"path\": \"x/y\"}");
    assert_string_equal(edm_st_metadata(f, "format"), "pt");
    assert_string_equal(edm_st_metadata(f, "empty"), "");
    assert_string_equal(edm_st_metadata(f, "unicode"), "\xc3\xa9t\xc3\xa9 \"quoted\"\n\\");
    assert_null(edm_st_metadata(f, "missing"));
    assert_int_equal(edm_st_count(f), 1);
    edm_st_close(f);
}

static void test_zero_size_and_scalars(void **state)
{
    fixture *fx = *state;
    edm_status st;
    edm_status_init(&st);
    edm_st_writer *w = edm_st_writer_new();
    assert_non_null(w);
    int64_t d0[2] = {0, 3};
    int64_t d1[1] = {2};
    float two[2] = {1.0f, -1.0f};
    double pi = 3.141592653589793;
    float e = 2.5f;
    assert_int_equal(edm_st_writer_add_f32(w, "empty.start", EDM_F32, 2, d0, NULL, &st), 0);
    assert_int_equal(edm_st_writer_add_f64(w, "scalar", EDM_F64, 0, NULL, &pi, &st), 0);
    assert_int_equal(edm_st_writer_add_f32(w, "empty.mid", EDM_BF16, 2, d0, NULL, &st), 0);
    assert_int_equal(edm_st_writer_add_f32(w, "vec", EDM_F16, 1, d1, two, &st), 0);
    assert_int_equal(edm_st_writer_add_f32(w, "scalar16", EDM_F16, 0, NULL, &e, &st), 0);
    assert_int_equal(edm_st_writer_add_f64(w, "empty.end", EDM_F64, 2, d0, NULL, &st), 0);
    char p[512];
    path_in(fx, "zero.safetensors", p, sizeof p);
    assert_int_equal(edm_st_writer_write(w, p, &st), 0);
    edm_st_writer_free(w);

    edm_st_file *f = open_ok(p);
    assert_int_equal(edm_st_count(f), 6);
    const edm_st_entry *s = edm_st_find(f, "scalar");
    assert_non_null(s);
    assert_int_equal(s->rank, 0);
    assert_int_equal(s->numel, 1);
    assert_int_equal(s->nbytes, 8);
    double got;
    assert_int_equal(edm_st_read_f64(f, s, &got, 1, &st), 0);
    assert_true(got == pi);
    s = edm_st_find(f, "scalar16");
    float gf;
    assert_int_equal(edm_st_read_f32(f, s, &gf, 1, &st), 0);
    assert_true(gf == 2.5f);
    const char *empties[] = {"empty.start", "empty.mid", "empty.end"};
    for (int i = 0; i < 3; i++) {
        const edm_st_entry *z = edm_st_find(f, empties[i]);
        assert_non_null(z);
        assert_int_equal(z->rank, 2);
        assert_int_equal(z->numel, 0);
        assert_int_equal(z->nbytes, 0);
        assert_int_equal(edm_st_read_f32(f, z, NULL, 0, &st), 0);
    }
    /* entries are in offset order */
    for (int i = 1; i < edm_st_count(f); i++) {
        const edm_st_entry *a = edm_st_entry_at(f, i - 1), *b = edm_st_entry_at(f, i);
        assert_true((const char *)a->data + a->nbytes <= (const char *)b->data);
    }
    edm_st_close(f);

    /* a file with no tensors at all */
    w = edm_st_writer_new();
    assert_non_null(w);
    path_in(fx, "none.safetensors", p, sizeof p);
    assert_int_equal(edm_st_writer_write(w, p, &st), 0);
    edm_st_writer_free(w);
    f = open_ok(p);
    assert_int_equal(edm_st_count(f), 0);
    assert_int_equal(edm_st_metadata_count(f), 0);
    assert_null(edm_st_find(f, "x"));
    edm_st_close(f);
}

/* --------------------------------------------------------------- the golden */

static void test_golden(void **state)
{
    (void)state;
    const char *dir = getenv("EDMC_TESTDATA");
    char p[1024];
    snprintf(p, sizeof p, "%s/edm2-tiny/weights.safetensors", dir && *dir ? dir : "../shared/testdata");
    if (access(p, R_OK) != 0)
        fail_msg("golden file %s missing (set EDMC_TESTDATA)", p);
    edm_st_file *f = open_ok(p);
    assert_int_equal(edm_st_count(f), 63);
    const edm_st_entry *e = edm_st_find(f, "unet.enc.16x16_conv.weight");
    assert_non_null(e);
    assert_int_equal(e->dtype, EDM_F32);
    assert_int_equal(e->rank, 4);
    assert_int_equal(e->dim[0], 32);
    assert_int_equal(e->dim[1], 5);
    assert_int_equal(e->dim[2], 3);
    assert_int_equal(e->dim[3], 3);
    assert_int_equal(e->numel, 32 * 5 * 3 * 3);
    e = edm_st_find(f, "unet.out_gain");
    assert_non_null(e);
    assert_int_equal(e->rank, 1);
    assert_int_equal(e->dim[0], 1);
    assert_non_null(edm_st_metadata(f, "config"));
    edm_status st;
    edm_status_init(&st);
    uint64_t prev_end = 0;
    for (int i = 0; i < edm_st_count(f); i++) {
        const edm_st_entry *x = edm_st_entry_at(f, i);
        assert_ptr_equal(edm_st_find(f, x->name), x);
        uint64_t b = (uint64_t)((const char *)x->data - (const char *)edm_st_entry_at(f, 0)->data);
        assert_int_equal(b, prev_end);
        prev_end = b + x->nbytes;
        double *buf = malloc((size_t)(x->numel ? x->numel : 1) * sizeof *buf);
        assert_non_null(buf);
        assert_int_equal(edm_st_read_f64(f, x, buf, x->numel, &st), 0);
        for (int64_t k = 0; k < x->numel; k++)
            assert_true(isfinite(buf[k]));
        free(buf);
    }
    edm_st_close(f);
}

/* ---------------------------------------------------------- malformed files */

static void test_bad_short_files(void **state)
{
    fixture *fx = *state;
    char p[512];
    path_in(fx, "short.safetensors", p, sizeof p);
    write_bytes(p, "\x10\0\0", 3);
    expect_open_error(p, EDM_ERR_FORMAT, "truncated");
    path_in(fx, "empty.safetensors", p, sizeof p);
    write_bytes(p, "", 0);
    expect_open_error(p, EDM_ERR_FORMAT, "truncated");

    path_in(fx, "beyond.safetensors", p, sizeof p);
    write_st(p, 1000, "{}", 0);
    expect_open_error(p, EDM_ERR_FORMAT, "exceeds the file");
    path_in(fx, "huge.safetensors", p, sizeof p);
    write_st(p, UINT64_MAX, "{}", 0);
    expect_open_error(p, EDM_ERR_FORMAT, "exceeds the file");

    /* a header over 100 MiB, in a sparse file that is long enough */
    path_in(fx, "bighdr.safetensors", p, sizeof p);
    uint64_t big = 100ull * 1024 * 1024 + 8;
    write_st(p, big, "{}", 0);
    assert_int_equal(truncate(p, (off_t)(big + 8)), 0);
    expect_open_error(p, EDM_ERR_FORMAT, "exceeds the limit");

    path_in(fx, "missing.safetensors", p, sizeof p);
    expect_open_error(p, EDM_ERR_IO, "No such file");
    expect_open_error(fx->dir, EDM_ERR_IO, "not a regular file");
}

static void test_bad_json(void **state)
{
    fixture *fx = *state;
    expect_bad(fx, "json1", "{\"x\": {\"dtype\": \"F32\"", 0, "not valid JSON");
    expect_bad(fx, "json2", "{\"x\": nope}", 0, "not valid JSON");
    expect_bad(fx, "json3", "{} {}", 0, "not valid JSON");
    /* NUL padding is not JSON whitespace */
    char p0[512];
    path_in(fx, "json5", p0, sizeof p0);
    write_bytes(p0, "\4\0\0\0\0\0\0\0{}\0\0", 12);
    expect_open_error(p0, EDM_ERR_FORMAT, "not valid JSON");
    expect_bad(fx, "json4", "", 0, "not valid JSON");
    expect_bad(fx, "notobj1", "[1, 2]", 0, "not a JSON object");
    expect_bad(fx, "notobj2", "\"str\"    ", 0, "not a JSON object");
    expect_bad(fx, "entry", "{\"x\": 3}", 0, "tensor 'x': entry is not an object");
    /* header padded with spaces is fine */
    char p[512];
    path_in(fx, "padded", p, sizeof p);
    write_header(p, "{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}       ", 4);
    edm_st_file *f = open_ok(p);
    assert_int_equal(edm_st_count(f), 1);
    edm_st_close(f);
}

static void test_bad_dtype(void **state)
{
    fixture *fx = *state;
    expect_bad(fx, "i64", "{\"x\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
               "unsupported dtype 'I64' for tensor 'x'");
    expect_bad(fx, "f8", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
               "unsupported dtype 'F8_E4M3' for tensor 'w'");
    expect_bad(fx, "dtnum", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               "tensor 'w': dtype is not a string");
}

static void test_bad_shape(void **state)
{
    fixture *fx = *state;
    expect_bad(fx, "neg", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}", 0,
               "tensor 'x': negative dimension -1");
    expect_bad(fx, "huge",
               "{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
               "tensor 'x': shape [4294967296, 4294967296] is too large");
    expect_bad(fx, "huge2",
               "{\"x\":{\"dtype\":\"F64\",\"shape\":[18446744073709551615],\"data_offsets\":[0,0]}}", 0,
               "too large");
    expect_bad(fx, "float", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,0]}}", 0,
               "shape element 0 is not an integer");
    expect_bad(fx, "rank7", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
               "tensor 'x': rank 7");
    expect_bad(fx, "shapeobj", "{\"x\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", 4,
               "shape is not an array");
}

static void test_bad_offsets(void **state)
{
    fixture *fx = *state;
    expect_bad(fx, "mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[10,10],\"data_offsets\":[0,396]}}", 396,
               "header says 396 bytes for tensor 'w' [10, 10] F32, shape needs 400");
    expect_bad(fx, "past", "{\"w\":{\"dtype\":\"F32\",\"shape\":[10,10],\"data_offsets\":[0,400]}}", 396,
               "tensor 'w': data_offsets [0, 400] extend past the data section (396 bytes)");
    expect_bad(fx, "reversed", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
               "begin after end");
    expect_bad(fx, "negoff", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
               "tensor 'w': data_offsets must be non-negative integers");
    expect_bad(fx, "three", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
               "tensor 'w': data_offsets is not a [begin, end] pair");
    expect_bad(fx, "nooff", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'w': missing data_offsets");
    expect_bad(fx, "noshape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'w': missing shape");
    expect_bad(fx, "unknown",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4,
               "tensor 'w': unknown key 'extra'");
}

static void test_bad_tiling(void **state)
{
    fixture *fx = *state;
    expect_bad(fx, "overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "tensor 'b' (bytes 4..12) overlaps tensor 'a'");
    expect_bad(fx, "overlap0",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
               8, "overlaps");
    expect_bad(fx, "hole",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               12, "hole in the data section: bytes 4..8 before tensor 'b'");
    expect_bad(fx, "holestart", "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
               "hole in the data section: bytes 0..4");
    expect_bad(fx, "longer", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12,
               "data section has 12 bytes but the tensors cover only 4");
    expect_bad(fx, "notensor", "{}", 4, "data section has 4 bytes but the tensors cover only 0");
    /* regions out of order in the header are fine: sorted by offset */
    char p[512];
    path_in(fx, "unordered", p, sizeof p);
    write_header(p,
                 "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                 "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                 "\"z\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[8,8]}}",
                 8);
    edm_st_file *f = open_ok(p);
    assert_string_equal(edm_st_entry_at(f, 0)->name, "a");
    assert_string_equal(edm_st_entry_at(f, 1)->name, "b");
    assert_string_equal(edm_st_entry_at(f, 2)->name, "z");
    edm_st_close(f);
}

static void test_bad_metadata(void **state)
{
    fixture *fx = *state;
    expect_bad(fx, "meta1", "{\"__metadata__\":{\"a\":\"ok\",\"n\":1}}", 0,
               "__metadata__ value for 'n' is not a string");
    expect_bad(fx, "meta2", "{\"__metadata__\":[\"a\"]}", 0, "__metadata__ is not an object");
    expect_bad(fx, "meta3", "{\"__metadata__\":{\"a\":null}}", 0, "not a string");
}

/* ------------------------------------------------------------ writer errors */

static void test_writer_errors(void **state)
{
    fixture *fx = *state;
    edm_status st;
    edm_status_init(&st);
    edm_st_writer *w = edm_st_writer_new();
    assert_non_null(w);
    int64_t dim[2] = {2, 2};
    float v[4] = {1, 2, 3, 4};
    assert_int_equal(edm_st_writer_add_f32(w, "w", EDM_F32, 2, dim, v, &st), 0);
    assert_int_equal(edm_st_writer_add_f32(w, "w", EDM_F16, 2, dim, v, &st), -1);
    assert_non_null(strstr(st.msg, "duplicate tensor name 'w'"));
    assert_int_equal(edm_st_writer_add_f32(w, "__metadata__", EDM_F32, 2, dim, v, &st), -1);
    int64_t neg[1] = {-1};
    assert_int_equal(edm_st_writer_add_f32(w, "n", EDM_F32, 1, neg, v, &st), -1);
    assert_non_null(strstr(st.msg, "'n'"));
    assert_int_equal(edm_st_writer_add_f32(w, "r", EDM_F32, 7, dim, v, &st), -1);
    assert_int_equal(edm_st_writer_add_f32(w, "nodata", EDM_F32, 2, dim, NULL, &st), -1);
    assert_non_null(strstr(st.msg, "'nodata'"));

    /* a missing folder fails cleanly */
    char p[512];
    path_in(fx, "no/such/dir/x.safetensors", p, sizeof p);
    edm_status_init(&st);
    assert_int_equal(edm_st_writer_write(w, p, &st), -1);
    assert_int_equal(st.code, EDM_ERR_IO);
    assert_true(strncmp(st.msg, p, strlen(p)) == 0);
    assert_non_null(strstr(st.msg, "No such file"));
    assert_int_equal(count_entries(fx->dir, ".tmp."), 0);

    /* a target that is a folder: the rename fails, the temp file goes */
    path_in(fx, "adir", p, sizeof p);
    assert_int_equal(mkdir(p, 0700), 0);
    edm_status_init(&st);
    assert_int_equal(edm_st_writer_write(w, p, &st), -1);
    assert_int_equal(st.code, EDM_ERR_IO);
    assert_true(strncmp(st.msg, p, strlen(p)) == 0);
    assert_int_equal(count_entries(fx->dir, ".tmp."), 0);
    assert_int_equal(rmdir(p), 0);

    /* still usable: a good write afterwards */
    path_in(fx, "after.safetensors", p, sizeof p);
    assert_int_equal(edm_st_writer_write(w, p, &st), 0);
    edm_st_writer_free(w);
    edm_st_file *f = open_ok(p);
    assert_int_equal(edm_st_count(f), 1);
    edm_st_close(f);
    assert_int_equal(count_entries(fx->dir, ".tmp."), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_roundtrip_all),
        cmocka_unit_test(test_bf16_roundtrip_all),
        cmocka_unit_test(test_f16_known),
        cmocka_unit_test(test_bf16_known),
        cmocka_unit_test(test_half_against_reference),
        cmocka_unit_test(test_dtype_size),
        cmocka_unit_test(test_roundtrip_dtypes),
        cmocka_unit_test(test_metadata_roundtrip),
        cmocka_unit_test(test_zero_size_and_scalars),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_bad_short_files),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_dtype),
        cmocka_unit_test(test_bad_shape),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_bad_tiling),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_writer_errors),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, setup, teardown);
}
