/* Datasets and the loader: a temporary folder of PNGs / .npy latents with a
 * dataset.json, and the same as a zip (written here with libpng and libzip);
 * pixel and latent encodings against the spec's formulas; one-hot labels;
 * shuffling and resume equivalence; the built-in synthetic datasets; and the
 * errors, each naming the file concerned. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <cmocka.h>

#include "runtime/data.h"
#include "runtime/rng.h"

/* ------------------------------------------------------------ fixtures */

#define MAX_FILES 32

typedef struct {
    char root[256]; /* the temporary folder holding everything */
    char dir[300];  /* the current dataset folder */
    int nfiles;
    char *rel[MAX_FILES];
    unsigned char *bytes[MAX_FILES];
    size_t len[MAX_FILES];
} fixture;

static void rm_rf(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                char child[1024];
                snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                rm_rf(child);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void fx_clear(fixture *fx)
{
    for (int i = 0; i < fx->nfiles; i++) {
        free(fx->rel[i]);
        free(fx->bytes[i]);
    }
    fx->nfiles = 0;
}

/* Starts a new dataset folder root/name. */
static void fx_begin(fixture *fx, const char *name)
{
    fx_clear(fx);
    snprintf(fx->dir, sizeof fx->dir, "%s/%s", fx->root, name);
    rm_rf(fx->dir);
    assert_int_equal(mkdir(fx->dir, 0700), 0);
}

/* Writes bytes to dir/rel (making parent folders) and remembers them for the zip. */
static void fx_add(fixture *fx, const char *rel, const void *bytes, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", fx->dir, rel);
    for (char *p = path + strlen(fx->dir) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = 0;
        if (mkdir(path, 0700) != 0)
            assert_int_equal(errno, EEXIST);
        *p = '/';
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_true(fx->nfiles < MAX_FILES);
    fx->rel[fx->nfiles] = strdup(rel);
    fx->bytes[fx->nfiles] = malloc(len ? len : 1);
    assert_non_null(fx->rel[fx->nfiles]);
    assert_non_null(fx->bytes[fx->nfiles]);
    memcpy(fx->bytes[fx->nfiles], bytes, len);
    fx->len[fx->nfiles] = len;
    fx->nfiles++;
}

static void fx_add_text(fixture *fx, const char *rel, const char *text) { fx_add(fx, rel, text, strlen(text)); }

/* The current folder's files as dir.zip (with a folder entry, as zip tools write). */
static void fx_zip(const fixture *fx, char *zpath, size_t size)
{
    snprintf(zpath, size, "%s.zip", fx->dir);
    int err = 0;
    zip_t *z = zip_open(zpath, ZIP_CREATE | ZIP_TRUNCATE, &err);
    assert_non_null(z);
    assert_true(zip_dir_add(z, "00000", ZIP_FL_ENC_UTF_8) >= 0);
    for (int i = 0; i < fx->nfiles; i++) {
        zip_source_t *s = zip_source_buffer(z, fx->bytes[i], fx->len[i], 0);
        assert_non_null(s);
        if (zip_file_add(z, fx->rel[i], s, ZIP_FL_ENC_UTF_8) < 0) {
            zip_source_free(s);
            fail_msg("zip_file_add %s: %s", fx->rel[i], zip_strerror(z));
        }
    }
    assert_int_equal(zip_close(z), 0);
}

/* ---------------------------------------------------------- PNG / NPY */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} membuf;

static void mem_write(png_structp png, png_bytep data, size_t len)
{
    membuf *m = png_get_io_ptr(png);
    if (m->n + len > m->cap) {
        size_t cap = (m->cap + len) * 2;
        unsigned char *p = realloc(m->p, cap);
        if (!p)
            png_error(png, "out of memory");
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, len);
    m->n += len;
}

static void mem_flush(png_structp png) { (void)png; }

/* An 8-bit PNG in memory: ctype PNG_COLOR_TYPE_GRAY/RGB/RGBA, pix rows packed. */
/* A PNG of depth bits per sample (8 or 16, big-endian samples in pix). */
static membuf make_png_depth(int w, int h, int depth, int ctype, const unsigned char *pix)
{
    int nc = (ctype == PNG_COLOR_TYPE_GRAY ? 1 : ctype == PNG_COLOR_TYPE_RGB ? 3 : 4) * depth / 8;
    membuf m = {NULL, 0, 0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    assert_non_null(png);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png)))
        fail_msg("libpng failed writing a test image");
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(pix + (size_t)y * (size_t)w * (size_t)nc));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return m;
}

static membuf make_png(int w, int h, int ctype, const unsigned char *pix) { return make_png_depth(w, h, 8, ctype, pix); }

/* Pixel value of test image `img`, channel c, at (y, x): covers 0 and 255. */
static unsigned char pixel(int img, int c, int y, int x)
{
    int v = (img * 37 + y * 29 + x * 11 + c * 71) % 257;
    return (unsigned char)(v > 255 ? 255 : v);
}

static void add_png(fixture *fx, const char *rel, int img, int size, int ctype)
{
    int nc = ctype == PNG_COLOR_TYPE_GRAY ? 1 : ctype == PNG_COLOR_TYPE_RGB ? 3 : 4;
    unsigned char *pix = malloc((size_t)size * (size_t)size * (size_t)nc);
    assert_non_null(pix);
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            for (int c = 0; c < nc; c++)
                pix[((size_t)y * (size_t)size + (size_t)x) * (size_t)nc + (size_t)c] = pixel(img, c, y, x);
    membuf m = make_png(size, size, ctype, pix);
    fx_add(fx, rel, m.p, m.n);
    free(m.p);
    free(pix);
}

static uint16_t float_to_half_exact(float f)
{
    /* only for values exactly representable as normal halves */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) == 0)
        return (uint16_t)(u >> 16);
    uint32_t sign = u >> 31, e = (u >> 23) & 0xff, m = u & 0x7fffff;
    assert_true((m & 0x1fff) == 0 && e >= 113 && e <= 142);
    return (uint16_t)(sign << 15 | (e - 112) << 10 | m >> 13);
}

/* A .npy of shape (a, b, c), version 1/2/3, descr "<f4" or "<f2". */
static void add_npy(fixture *fx, const char *rel, int version, const char *descr, int a, int b, int c,
                    const float *data)
{
    char dict[128];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d, %d), }", descr, a,
                      b, c);
    size_t pre = version == 1 ? 10 : 12;
    size_t hlen = (size_t)dl + 1;
    while ((pre + hlen) % 64)
        hlen++;
    int f2 = strcmp(descr, "<f2") == 0;
    size_t count = (size_t)a * (size_t)b * (size_t)c, isz = f2 ? 2 : 4;
    size_t total = pre + hlen + count * isz;
    unsigned char *buf = malloc(total);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)version;
    buf[7] = 0;
    if (version == 1) {
        buf[8] = (unsigned char)(hlen & 0xff);
        buf[9] = (unsigned char)(hlen >> 8);
    } else {
        for (int k = 0; k < 4; k++)
            buf[8 + k] = (unsigned char)(hlen >> (8 * k));
    }
    memset(buf + pre, ' ', hlen);
    memcpy(buf + pre, dict, (size_t)dl);
    buf[pre + hlen - 1] = '\n';
    unsigned char *d = buf + pre + hlen;
    for (size_t i = 0; i < count; i++) {
        if (f2) {
            uint16_t h = float_to_half_exact(data[i]);
            d[2 * i] = (unsigned char)h;
            d[2 * i + 1] = (unsigned char)(h >> 8);
        } else {
            uint32_t u;
            memcpy(&u, &data[i], sizeof u);
            for (int k = 0; k < 4; k++)
                d[4 * i + (size_t)k] = (unsigned char)(u >> (8 * k));
        }
    }
    fx_add(fx, rel, buf, total);
    free(buf);
}

/* -------------------------------------------------------------- setup */

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->root, sizeof fx->root, "%s/edm_test_data_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(fx->root)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    fx_clear(fx);
    rm_rf(fx->root);
    free(fx);
    return 0;
}

#define CONTAINS(msg, part)                                                                                            \
    do {                                                                                                               \
        if (!strstr((msg), (part)))                                                                                    \
            fail_msg("message '%s' lacks '%s'", (msg), (part));                                                        \
    } while (0)

/* The standard pixel dataset: 6 images, RGB except one RGBA and one gray,
 * added out of name order, labels 0..4. */
static void make_pixel_set(fixture *fx, const char *name)
{
    fx_begin(fx, name);
    static const int order[6] = {3, 0, 5, 1, 4, 2};
    for (int k = 0; k < 6; k++) {
        int i = order[k];
        char rel[64];
        snprintf(rel, sizeof rel, "00000/img%08d.png", i);
        int ctype = i == 4 ? PNG_COLOR_TYPE_RGBA : i == 5 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB;
        add_png(fx, rel, i, 8, ctype);
    }
    fx_add_text(fx, "dataset.json",
                "{\"labels\": [[\"00000/img00000002.png\", 2], [\"00000/img00000000.png\", 0], "
                "[\"00000/img00000001.png\", 1], [\"00000/img00000003.png\", 3], [\"00000/img00000004.png\", 4], "
                "[\"00000/img00000005.png\", 0]]}");
}

static const int k_pixel_labels[6] = {0, 1, 2, 3, 4, 0};

static void check_pixel_set(edm_dataset *ds)
{
    assert_int_equal(edm_dataset_size(ds), 6);
    assert_int_equal(edm_dataset_is_latent(ds), 0);
    float img[3 * 64], lab[5];
    for (int i = 0; i < 6; i++) {
        char name[64], want[64];
        snprintf(want, sizeof want, "00000/img%08d.png", i);
        assert_string_equal(edm_dataset_name(ds, i, name, sizeof name), want);
        edm_status st;
        edm_status_init(&st);
        if (edm_dataset_read(ds, i, 1, 0, img, lab, &st))
            fail_msg("%s", st.msg);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    int sc = i == 5 ? 0 : c; /* gray is repeated */
                    float want_v = (float)pixel(i, sc, y, x) / 127.5f - 1.0f;
                    assert_true(img[c * 64 + y * 8 + x] == want_v);
                }
        for (int k = 0; k < 5; k++)
            assert_true(lab[k] == (k == k_pixel_labels[i] ? 1.0f : 0.0f));
        assert_int_equal(edm_dataset_label(ds, i), k_pixel_labels[i]);
    }
}

static edm_dataset *open_ok(const char *spec, int res, int ch, int label_dim)
{
    edm_status st;
    edm_status_init(&st);
    edm_dataset *ds = edm_dataset_open(spec, res, ch, label_dim, &st);
    if (!ds)
        fail_msg("opening %s: %s", spec, st.msg);
    return ds;
}

/* Opening must fail with a message holding each of the parts. */
static void open_fails(const char *spec, int res, int ch, int label_dim, const char *part1, const char *part2)
{
    edm_status st;
    edm_status_init(&st);
    edm_dataset *ds = edm_dataset_open(spec, res, ch, label_dim, &st);
    if (ds) {
        edm_dataset_close(ds);
        fail_msg("opening %s succeeded", spec);
    }
    assert_int_not_equal(st.code, EDM_OK);
    CONTAINS(st.msg, part1);
    if (part2)
        CONTAINS(st.msg, part2);
}

/* -------------------------------------------------------------- tests */

static void test_folder_pixels(void **state)
{
    fixture *fx = *state;
    make_pixel_set(fx, "pix");
    edm_dataset *ds = open_ok(fx->dir, 8, 3, 5);
    check_pixel_set(ds);
    edm_dataset_close(ds);
    /* a trailing slash is fine; unconditional models ignore the labels */
    char spec[400];
    snprintf(spec, sizeof spec, "%s/", fx->dir);
    ds = open_ok(spec, 8, 3, 0);
    assert_int_equal(edm_dataset_label(ds, 0), -1);
    edm_dataset_close(ds);
}

static void test_zip_pixels(void **state)
{
    fixture *fx = *state;
    make_pixel_set(fx, "pixzip");
    char zpath[400];
    fx_zip(fx, zpath, sizeof zpath);
    rm_rf(fx->dir); /* the zip alone */
    edm_dataset *ds = open_ok(zpath, 8, 3, 5);
    check_pixel_set(ds);
    edm_dataset_close(ds);
}

static void test_gray_model(void **state)
{
    fixture *fx = *state;
    fx_begin(fx, "gray");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_GRAY);
    add_png(fx, "img1.png", 1, 8, PNG_COLOR_TYPE_RGB);
    edm_dataset *ds = open_ok(fx->dir, 8, 1, 0);
    float img[64];
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_dataset_read(ds, 0, 0, 0, img, NULL, &st), 0);
    for (int k = 0; k < 64; k++)
        assert_true(img[k] == (float)pixel(0, 0, k / 8, k % 8) / 127.5f - 1.0f);
    assert_int_equal(edm_dataset_read(ds, 1, 0, 0, img, NULL, &st), -1);
    CONTAINS(st.msg, "img1.png");
    CONTAINS(st.msg, "colour");
    edm_dataset_close(ds);
}

#define LR 4
#define LC 4
#define LN (2 * LC * LR * LR)

static const float k_mean[4] = {5.81f, 3.25f, 0.12f, -2.15f};
static const float k_std[4] = {4.17f, 4.62f, 3.71f, 3.28f};

/* Latent test data: value of image i, plane p (0..7), element e; halves exact. */
static float latent_value(int i, int p, int e)
{
    if (p >= LC) /* std */
        return i == 0 ? 0.0f : 0.25f * (float)(1 + (p + e + i) % 4);
    return 0.5f * (float)((i * 7 + p * 3 + e) % 17) - 4.0f;
}

static void make_latent_set(fixture *fx, const char *name)
{
    fx_begin(fx, name);
    static const int versions[3] = {1, 2, 3};
    static const char *const descrs[3] = {"<f4", "<f2", "<f4"};
    for (int i = 0; i < 3; i++) {
        float data[LN];
        for (int p = 0; p < 2 * LC; p++)
            for (int e = 0; e < LR * LR; e++)
                data[p * LR * LR + e] = latent_value(i, p, e);
        char rel[64];
        snprintf(rel, sizeof rel, "00000/img%08d.npy", i);
        add_npy(fx, rel, versions[i], descrs[i], 2 * LC, LR, LR, data);
    }
    fx_add_text(fx, "dataset.json",
                "{\"labels\": [[\"00000/img00000000.npy\", 1], [\"00000/img00000001.npy\", 0], "
                "[\"00000/img00000002.npy\", 9]]}");
}

static void test_latents(void **state)
{
    fixture *fx = *state;
    make_latent_set(fx, "lat");
    char zpath[400];
    fx_zip(fx, zpath, sizeof zpath);
    const char *specs[2] = {fx->dir, zpath};
    for (int s = 0; s < 2; s++) {
        edm_dataset *ds = open_ok(specs[s], LR, LC, 10);
        assert_int_equal(edm_dataset_is_latent(ds), 1);
        assert_int_equal(edm_dataset_size(ds), 3);
        float out[LC * LR * LR], out2[LC * LR * LR], eps[LC * LR * LR], lab[10];
        edm_status st;
        edm_status_init(&st);
        const uint64_t seed = 77;
        for (int i = 0; i < 3; i++) {
            const uint64_t pos = 5 + (uint64_t)i;
            if (edm_dataset_read(ds, i, seed, pos, out, lab, &st))
                fail_msg("%s", st.msg);
            edm_rng r = edm_rng_make(seed, "edm.data.latent_noise");
            edm_rng_normal(&r, pos * (uint64_t)(LC * LR * LR), eps, (int64_t)LC * LR * LR);
            for (int c = 0; c < LC; c++) {
                float scale = 0.5f / k_std[c], bias = -k_mean[c] * scale;
                for (int e = 0; e < LR * LR; e++) {
                    float mean = latent_value(i, c, e), sd = latent_value(i, LC + c, e);
                    float z = mean + sd * eps[c * LR * LR + e];
                    float want = z * scale + bias;
                    float got = out[c * LR * LR + e];
                    if (fabsf(got - want) > 1e-5f)
                        fail_msg("image %d channel %d element %d: %g, want %g", i, c, e, (double)got, (double)want);
                    if (i == 0) /* std 0: exactly the affine map of the mean */
                        assert_true(fabsf(got - (mean * scale + bias)) <= 1e-6f);
                }
            }
            /* same (seed, position): same sample; other position: other noise */
            assert_int_equal(edm_dataset_read(ds, i, seed, pos, out2, NULL, &st), 0);
            assert_memory_equal(out, out2, sizeof out);
            assert_int_equal(edm_dataset_read(ds, i, seed, pos + 100, out2, NULL, &st), 0);
            if (i > 0)
                assert_memory_not_equal(out, out2, sizeof out);
            int want_label = i == 0 ? 1 : i == 1 ? 0 : 9;
            for (int k = 0; k < 10; k++)
                assert_true(lab[k] == (k == want_label ? 1.0f : 0.0f));
        }
        /* the final statistics: a mean equal to the raw mean encodes to 0 */
        edm_dataset_close(ds);
    }
    for (int c = 0; c < 4; c++) {
        float scale = 0.5f / k_std[c], bias = -k_mean[c] * scale;
        assert_true(fabsf(k_mean[c] * scale + bias) < 1e-6f);
        assert_true(fabsf((k_mean[c] + k_std[c]) * scale + bias - 0.5f) < 1e-6f);
    }
}

static void test_permutation(void **state)
{
    (void)state;
    edm_dataset *ds = open_ok("builtin:shapes", 8, 3, 0);
    int64_t n = edm_dataset_size(ds);
    int64_t *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    char *seen = calloc((size_t)n, 1);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(seen);
    edm_dataset_permutation(ds, 1, 0, a);
    for (int64_t i = 0; i < n; i++) {
        assert_true(a[i] >= 0 && a[i] < n);
        assert_int_equal(seen[a[i]], 0);
        seen[a[i]] = 1;
    }
    int64_t fixed = 0;
    for (int64_t i = 0; i < n; i++)
        fixed += a[i] == i;
    assert_true(fixed < 20); /* a shuffle, not the identity */
    edm_dataset_permutation(ds, 1, 0, b);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    edm_dataset_permutation(ds, 2, 0, b);
    assert_memory_not_equal(a, b, (size_t)n * sizeof *a);
    edm_dataset_permutation(ds, 1, 1, b);
    assert_memory_not_equal(a, b, (size_t)n * sizeof *a);
    free(a);
    free(b);
    free(seen);
    edm_dataset_close(ds);
}

/* n batches of the stream from `start`, by a loader of nthreads threads. */
static void stream_threads(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start, int nbatches, float *images,
                           float *labels, int nthreads)
{
    edm_status st;
    edm_status_init(&st);
    edm_loader *ld = edm_loader_new_threads(ds, batch, seed, start, nthreads, &st);
    if (!ld)
        fail_msg("%s", st.msg);
    size_t img = (size_t)edm_dataset_channels(ds) * (size_t)edm_dataset_resolution(ds) *
                 (size_t)edm_dataset_resolution(ds);
    size_t ld_n = (size_t)edm_dataset_label_dim(ds);
    for (int k = 0; k < nbatches; k++) {
        assert_int_equal(edm_loader_position(ld), start + k * batch);
        if (edm_loader_next(ld, images + (size_t)k * (size_t)batch * img,
                            labels ? labels + (size_t)k * (size_t)batch * ld_n : NULL, &st))
            fail_msg("%s", st.msg);
    }
    edm_loader_free(ld);
}

static void stream(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start, int nbatches, float *images,
                   float *labels)
{
    stream_threads(ds, batch, seed, start, nbatches, images, labels, 0);
}

static void test_loader_order(void **state)
{
    fixture *fx = *state;
    make_pixel_set(fx, "order");
    edm_dataset *ds = open_ok(fx->dir, 8, 3, 5);
    enum { B = 4, NB = 5, IMG = 3 * 64 };
    float *images = malloc(sizeof(float) * B * NB * IMG), *labels = malloc(sizeof(float) * B * NB * 5);
    float *one = malloc(sizeof(float) * IMG);
    assert_non_null(images);
    assert_non_null(labels);
    assert_non_null(one);
    stream(ds, B, 9, 0, NB, images, labels);
    /* position s is image perm_{s/6}[s%6] */
    int64_t perm[6];
    edm_status st;
    edm_status_init(&st);
    for (int s = 0; s < B * NB; s++) {
        edm_dataset_permutation(ds, 9, (uint64_t)(s / 6), perm);
        int64_t i = perm[s % 6];
        assert_int_equal(edm_dataset_read(ds, i, 9, (uint64_t)s, one, NULL, &st), 0);
        assert_memory_equal(images + (size_t)s * IMG, one, sizeof(float) * IMG);
        for (int k = 0; k < 5; k++)
            assert_true(labels[s * 5 + k] == (k == k_pixel_labels[i] ? 1.0f : 0.0f));
    }
    /* each epoch holds every image once */
    for (int e = 0; e < 3; e++) {
        int count[6] = {0};
        edm_dataset_permutation(ds, 9, (uint64_t)e, perm);
        for (int k = 0; k < 6; k++)
            count[perm[k]]++;
        for (int k = 0; k < 6; k++)
            assert_int_equal(count[k], 1);
    }
    /* other seed, other order */
    float *other = malloc(sizeof(float) * B * NB * IMG);
    assert_non_null(other);
    stream(ds, B, 10, 0, NB, other, NULL);
    assert_memory_not_equal(images, other, sizeof(float) * B * NB * IMG);
    free(other);
    free(one);
    free(images);
    free(labels);
    edm_dataset_close(ds);
}

/* Batches from start k equal the uninterrupted stream from its k-th image on. */
static void check_resume(edm_dataset *ds, int64_t batch, uint64_t seed)
{
    const int NB = (int)((24 + batch - 1) / batch) + 1; /* several epochs of 6 */
    size_t img = (size_t)edm_dataset_channels(ds) * (size_t)edm_dataset_resolution(ds) *
                 (size_t)edm_dataset_resolution(ds);
    size_t nl = (size_t)edm_dataset_label_dim(ds);
    size_t total = (size_t)batch * NB;
    float *full = malloc(total * img * sizeof(float)), *fl = malloc((total * nl + 1) * sizeof(float));
    float *part = malloc(total * img * sizeof(float)), *pl = malloc((total * nl + 1) * sizeof(float));
    assert_non_null(full);
    assert_non_null(fl);
    assert_non_null(part);
    assert_non_null(pl);
    stream(ds, batch, seed, 0, NB, full, nl ? fl : NULL);
    static const int64_t starts[] = {1, 2, 5, 7, 11};
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        int64_t s = starts[k];
        int nb = (int)(((int64_t)total - s) / batch);
        assert_true(nb >= 2);
        stream(ds, batch, seed, s, nb, part, nl ? pl : NULL);
        assert_memory_equal(part, full + (size_t)s * img, (size_t)nb * (size_t)batch * img * sizeof(float));
        if (nl)
            assert_memory_equal(pl, fl + (size_t)s * nl, (size_t)nb * (size_t)batch * nl * sizeof(float));
    }
    /* the same start twice, and with 1 or 7 threads: the same batches */
    stream_threads(ds, batch, seed, 3, NB - 1, part, NULL, 1);
    stream_threads(ds, batch, seed, 3, NB - 1, full, NULL, 7);
    assert_memory_equal(part, full, (size_t)(NB - 1) * (size_t)batch * img * sizeof(float));
    stream(ds, batch, seed, 3, NB - 1, full, NULL);
    assert_memory_equal(part, full, (size_t)(NB - 1) * (size_t)batch * img * sizeof(float));
    free(full);
    free(fl);
    free(part);
    free(pl);
}

static void test_resume(void **state)
{
    fixture *fx = *state;
    make_pixel_set(fx, "resume");
    edm_dataset *ds = open_ok(fx->dir, 8, 3, 5);
    check_resume(ds, 4, 123);
    check_resume(ds, 1, 5);
    edm_dataset_close(ds);
    make_latent_set(fx, "resume_lat");
    ds = open_ok(fx->dir, LR, LC, 10);
    check_resume(ds, 2, 42); /* the latent noise resumes too */
    edm_dataset_close(ds);
    ds = open_ok("builtin:blobs", 16, 4, 4);
    check_resume(ds, 3, 8);
    edm_dataset_close(ds);
}

/* Data parallel: rank r of R takes B/R of every B positions; the ranks'
 * batches together are the single stream's (images, labels, latent noise),
 * from the start and from a resume at a multiple of B. */
static void check_shards(edm_dataset *ds, int64_t B, int R, int64_t micro, uint64_t seed, int64_t start)
{
    const int steps = 5;
    size_t img = (size_t)edm_dataset_channels(ds) * (size_t)edm_dataset_resolution(ds) *
                 (size_t)edm_dataset_resolution(ds);
    size_t nl = (size_t)edm_dataset_label_dim(ds);
    size_t total = (size_t)(B * steps);
    float *full = malloc(total * img * sizeof(float)), *fl = malloc((total * nl + 1) * sizeof(float));
    float *part = malloc(img * sizeof(float) * (size_t)micro), *pl = malloc((nl + 1) * sizeof(float) * (size_t)micro);
    assert_non_null(full);
    assert_non_null(fl);
    assert_non_null(part);
    assert_non_null(pl);
    stream(ds, B, seed, start, steps, full, nl ? fl : NULL);
    int64_t share = B / R;
    for (int r = 0; r < R; r++) {
        edm_status st;
        edm_status_init(&st);
        edm_loader *ld = edm_loader_new_shard(ds, micro, seed, start, B, r * share, share, &st);
        if (!ld)
            fail_msg("%s", st.msg);
        for (int step = 0; step < steps; step++)
            for (int64_t m = 0; m < share / micro; m++) {
                size_t at = (size_t)(step * B + r * share + m * micro); /* in the single stream */
                assert_int_equal(edm_loader_position(ld), start + (int64_t)at);
                if (edm_loader_next(ld, part, nl ? pl : NULL, &st))
                    fail_msg("%s", st.msg);
                assert_memory_equal(part, full + at * img, (size_t)micro * img * sizeof(float));
                if (nl)
                    assert_memory_equal(pl, fl + at * nl, (size_t)micro * nl * sizeof(float));
            }
        edm_loader_free(ld);
    }
    free(full);
    free(fl);
    free(part);
    free(pl);
}

static void test_shards(void **state)
{
    fixture *fx = *state;
    make_latent_set(fx, "shards");
    edm_dataset *ds = open_ok(fx->dir, LR, LC, 10);
    check_shards(ds, 4, 2, 2, 42, 0);
    check_shards(ds, 6, 3, 1, 42, 12); /* resumed at step 2 */
    check_shards(ds, 8, 2, 4, 7, 8);
    edm_dataset_close(ds);
    ds = open_ok("builtin:shapes", 16, 3, 3);
    check_shards(ds, 8, 4, 1, 3, 0);
    edm_status st;
    edm_status_init(&st);
    assert_null(edm_loader_new_shard(ds, 1, 0, 3, 8, 0, 4, &st)); /* not at a step's start */
    edm_dataset_close(ds);
}

static void test_builtin(void **state)
{
    (void)state;
    static const char *const names[] = {"builtin:shapes", "builtin:stripes", "builtin:blobs"};
    static const int nclass[] = {3, 4, 4};
    static const int resolutions[] = {8, 16, 32};
    static const int channels[] = {3, 4};
    for (int k = 0; k < 3; k++)
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 2; c++) {
                int res = resolutions[r], ch = channels[c], label_dim = r == 0 ? 0 : r == 1 ? 2 : 10;
                edm_dataset *ds = open_ok(names[k], res, ch, label_dim);
                edm_dataset *ds2 = open_ok(names[k], res, ch, label_dim);
                assert_int_equal(edm_dataset_size(ds), EDM_BUILTIN_SIZE);
                size_t n = (size_t)ch * (size_t)res * (size_t)res;
                float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), lab[10];
                assert_non_null(a);
                assert_non_null(b);
                int classes_seen[4] = {0};
                edm_status st;
                edm_status_init(&st);
                for (int64_t i = 0; i < 40; i++) {
                    int64_t idx = i * 241;
                    assert_int_equal(edm_dataset_read(ds, idx, 1, (uint64_t)i, a, lab, &st), 0);
                    assert_int_equal(edm_dataset_read(ds2, idx, 99, 7, b, NULL, &st), 0);
                    assert_memory_equal(a, b, n * sizeof *a); /* a function of the index only */
                    double sum = 0, sq = 0;
                    for (size_t e = 0; e < n; e++) {
                        assert_true(isfinite(a[e]) && a[e] >= -1.0f && a[e] <= 1.0f);
                        sum += a[e];
                        sq += (double)a[e] * a[e];
                    }
                    double var = sq / (double)n - (sum / (double)n) * (sum / (double)n);
                    assert_true(var > 1e-3); /* something is drawn */
                    int cls = edm_dataset_label(ds, idx);
                    if (label_dim == 0) {
                        assert_int_equal(cls, -1);
                    } else {
                        assert_true(cls >= 0 && cls < label_dim);
                        for (int j = 0; j < label_dim; j++)
                            assert_true(lab[j] == (j == cls ? 1.0f : 0.0f));
                        if (label_dim == 10)
                            classes_seen[cls] = 1;
                    }
                }
                if (label_dim == 10)
                    for (int j = 0; j < nclass[k]; j++)
                        assert_int_equal(classes_seen[j], 1);
                /* different images differ */
                assert_int_equal(edm_dataset_read(ds, 1, 0, 0, a, NULL, &st), 0);
                assert_int_equal(edm_dataset_read(ds, 2, 0, 0, b, NULL, &st), 0);
                assert_memory_not_equal(a, b, n * sizeof *a);
                free(a);
                free(b);
                edm_dataset_close(ds);
                edm_dataset_close(ds2);
            }
    edm_dataset *ds = open_ok("builtin:shapes16", 16, 3, 0);
    edm_dataset_close(ds);
    open_fails("builtin:shapes16", 32, 3, 0, "shapes16", "32");
    open_fails("builtin:circles", 16, 3, 0, "circles", NULL);
    /* a loader over a built-in */
    ds = open_ok("builtin:stripes", 8, 3, 4);
    float images[5 * 3 * 64], labels[5 * 4];
    stream(ds, 5, 3, 0, 1, images, labels);
    for (int i = 0; i < 5; i++) {
        float s = 0;
        for (int j = 0; j < 4; j++)
            s += labels[i * 4 + j];
        assert_true(s == 1.0f);
    }
    edm_dataset_close(ds);
}

/* ------------------------------------------------------------- errors */

static void test_error_label_count(void **state)
{
    fixture *fx = *state;
    fx_begin(fx, "count");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    add_png(fx, "img1.png", 1, 8, PNG_COLOR_TYPE_RGB);
    add_png(fx, "img2.png", 2, 8, PNG_COLOR_TYPE_RGB);
    fx_add_text(fx, "dataset.json", "{\"labels\": [[\"img0.png\", 0], [\"img1.png\", 1]]}");
    open_fails(fx->dir, 8, 3, 4, "dataset.json has 2 labels for 3 images", "count/dataset.json");
    char zpath[400];
    fx_zip(fx, zpath, sizeof zpath);
    open_fails(zpath, 8, 3, 4, "dataset.json has 2 labels for 3 images", "count.zip");
}

static void test_error_label_range(void **state)
{
    fixture *fx = *state;
    fx_begin(fx, "range");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    add_png(fx, "img1.png", 1, 8, PNG_COLOR_TYPE_RGB);
    fx_add_text(fx, "dataset.json", "{\"labels\": [[\"img0.png\", 0], [\"img1.png\", 7]]}");
    open_fails(fx->dir, 8, 3, 5, "img1.png", "label_dim 5");
    fx_begin(fx, "negative");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    fx_add_text(fx, "dataset.json", "{\"labels\": [[\"img0.png\", -1]]}");
    open_fails(fx->dir, 8, 3, 5, "img0.png", "-1");
    /* a label for a file that is not there */
    fx_begin(fx, "stray");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    add_png(fx, "img1.png", 1, 8, PNG_COLOR_TYPE_RGB);
    fx_add_text(fx, "dataset.json", "{\"labels\": [[\"img0.png\", 0], [\"img9.png\", 1]]}");
    open_fails(fx->dir, 8, 3, 5, "no label for", "img1.png");
    /* not JSON */
    fx_begin(fx, "badjson");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    fx_add_text(fx, "dataset.json", "{\"labels\": [[\"img0.png\", 0]");
    open_fails(fx->dir, 8, 3, 5, "badjson/dataset.json", "JSON");
}

static void test_error_no_json(void **state)
{
    fixture *fx = *state;
    fx_begin(fx, "nojson");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    open_fails(fx->dir, 8, 3, 10, "nojson", "dataset.json");
    edm_dataset *ds = open_ok(fx->dir, 8, 3, 0); /* unconditional: fine */
    edm_dataset_close(ds);
}

static void test_error_missing(void **state)
{
    fixture *fx = *state;
    char spec[400];
    snprintf(spec, sizeof spec, "%s/does-not-exist", fx->root);
    open_fails(spec, 8, 3, 0, "does-not-exist", NULL);
    snprintf(spec, sizeof spec, "%s/does-not-exist.zip", fx->root);
    open_fails(spec, 8, 3, 0, "does-not-exist.zip", NULL);
    fx_begin(fx, "empty");
    fx_add_text(fx, "readme.txt", "nothing");
    open_fails(fx->dir, 8, 3, 0, "empty", "no .png");
    /* a zip that is not one */
    snprintf(spec, sizeof spec, "%s/empty/fake.zip", fx->root);
    FILE *f = fopen(spec, "wb");
    assert_non_null(f);
    fputs("not a zip", f);
    fclose(f);
    open_fails(spec, 8, 3, 0, "fake.zip", NULL);
}

static void test_error_corrupt_png(void **state)
{
    fixture *fx = *state;
    /* first image corrupt: opening fails */
    fx_begin(fx, "corrupt1");
    unsigned char junk[64];
    memset(junk, 0x5a, sizeof junk);
    fx_add(fx, "img0.png", junk, sizeof junk);
    add_png(fx, "img1.png", 1, 8, PNG_COLOR_TYPE_RGB);
    open_fails(fx->dir, 8, 3, 0, "img0.png", "not a PNG");

    /* a truncated image later: the loader reports it, naming the file */
    fx_begin(fx, "corrupt2");
    for (int i = 0; i < 5; i++) {
        char rel[32];
        snprintf(rel, sizeof rel, "img%d.png", i);
        if (i != 3) {
            add_png(fx, rel, i, 8, PNG_COLOR_TYPE_RGB);
            continue;
        }
        unsigned char pix[8 * 8 * 3];
        for (int k = 0; k < 8 * 8 * 3; k++)
            pix[k] = (unsigned char)(k * 13);
        membuf m = make_png(8, 8, PNG_COLOR_TYPE_RGB, pix);
        fx_add(fx, rel, m.p, m.n / 2);
        free(m.p);
    }
    edm_dataset *ds = open_ok(fx->dir, 8, 3, 0);
    /* the batch holding img3.png (index 3) fails; the ones before it arrive */
    int64_t perm[5], where = -1;
    edm_dataset_permutation(ds, 0, 0, perm);
    for (int64_t k = 0; k < 5; k++)
        if (perm[k] == 3)
            where = k;
    edm_status st;
    edm_status_init(&st);
    edm_loader *ld = edm_loader_new_threads(ds, 2, 0, 0, 3, &st);
    assert_non_null(ld);
    float images[2 * 3 * 64];
    int rc = 0, good = 0;
    for (int k = 0; k < 4 && rc == 0; k++) {
        rc = edm_loader_next(ld, images, NULL, &st);
        good += rc == 0;
    }
    assert_int_equal(rc, -1);
    assert_int_equal(good, where / 2);
    CONTAINS(st.msg, "corrupt2/img3.png");
    CONTAINS(st.msg, "corrupt PNG");
    /* and again on the next call */
    edm_status st2;
    edm_status_init(&st2);
    assert_int_equal(edm_loader_next(ld, images, NULL, &st2), -1);
    assert_string_equal(st.msg, st2.msg);
    edm_loader_free(ld);
    /* a CRC error inside the image data */
    fx_begin(fx, "corrupt3");
    {
        unsigned char pix[8 * 8 * 3];
        for (int j = 0; j < 8 * 8 * 3; j++)
            pix[j] = (unsigned char)(j * 7);
        membuf m = make_png(8, 8, PNG_COLOR_TYPE_RGB, pix);
        m.p[m.n - 20] ^= 0xff; /* inside IDAT, before IEND */
        fx_add(fx, "img0.png", m.p, m.n);
        free(m.p);
    }
    open_fails(fx->dir, 8, 3, 0, "corrupt3/img0.png", "corrupt PNG");
    edm_dataset_close(ds);
}

static void test_error_wrong_size(void **state)
{
    fixture *fx = *state;
    fx_begin(fx, "size1");
    add_png(fx, "img0.png", 0, 16, PNG_COLOR_TYPE_RGB);
    open_fails(fx->dir, 8, 3, 0, "size1/img0.png", "16x16");
    /* later in the set: at read time, from the loader */
    fx_begin(fx, "size2");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    add_png(fx, "img1.png", 1, 16, PNG_COLOR_TYPE_RGB);
    add_png(fx, "img2.png", 2, 8, PNG_COLOR_TYPE_RGB);
    edm_dataset *ds = open_ok(fx->dir, 8, 3, 0);
    edm_status st;
    edm_status_init(&st);
    edm_loader *ld = edm_loader_new(ds, 3, 1, 0, &st);
    assert_non_null(ld);
    float images[3 * 3 * 64];
    assert_int_equal(edm_loader_next(ld, images, NULL, &st), -1);
    CONTAINS(st.msg, "size2/img1.png");
    CONTAINS(st.msg, "16x16");
    edm_loader_free(ld);
    /* freeing a loader whose thread is still busy (never asked for a batch) */
    ld = edm_loader_new(ds, 1, 1, 0, &st);
    assert_non_null(ld);
    edm_loader_free(ld);
    edm_dataset_close(ds);
    /* refused from the header, before the pixels: a colour image for a 1-channel model, a 16-bit image */
    fx_begin(fx, "colour1");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    open_fails(fx->dir, 8, 1, 0, "colour1/img0.png", "colour image, but the model has 1 channel");
    fx_begin(fx, "depth16");
    {
        unsigned char pix[8 * 8 * 2] = {0};
        membuf m = make_png_depth(8, 8, 16, PNG_COLOR_TYPE_GRAY, pix);
        fx_add(fx, "img0.png", m.p, m.n);
        free(m.p);
    }
    open_fails(fx->dir, 8, 1, 0, "depth16/img0.png", "16-bit PNG");
    /* pixels for a latent model, latents for a pixel model */
    fx_begin(fx, "kind");
    add_png(fx, "img0.png", 0, 8, PNG_COLOR_TYPE_RGB);
    open_fails(fx->dir, 8, 4, 0, "kind", "channels");
}

static void test_error_corrupt_npy(void **state)
{
    fixture *fx = *state;
    float data[8 * 8 * 8]; /* room for the wrong shape too */
    for (int k = 0; k < 8 * 8 * 8; k++)
        data[k] = 0.5f;
    fx_begin(fx, "npy_shape");
    add_npy(fx, "img0.npy", 1, "<f4", 8, 8, 8, data);
    open_fails(fx->dir, LR, LC, 0, "npy_shape/img0.npy", "shape (8, 8, 8)");
    fx_begin(fx, "npy_magic");
    fx_add_text(fx, "img0.npy", "PK\x03\x04 this is not numpy");
    open_fails(fx->dir, LR, LC, 0, "npy_magic/img0.npy", "not a .npy");
    fx_begin(fx, "npy_dtype");
    add_npy(fx, "img0.npy", 1, "<i4", 2 * LC, LR, LR, data);
    open_fails(fx->dir, LR, LC, 0, "npy_dtype/img0.npy", "dtype");
    fx_begin(fx, "npy_short");
    add_npy(fx, "img0.npy", 1, "<f4", 2 * LC, LR, LR, data);
    {
        char path[512];
        snprintf(path, sizeof path, "%s/img0.npy", fx->dir);
        assert_int_equal(truncate(path, (off_t)(fx->len[0] - 8)), 0);
    }
    open_fails(fx->dir, LR, LC, 0, "npy_short/img0.npy", "corrupt .npy");
    fx_begin(fx, "npy_mixed");
    add_npy(fx, "img0.npy", 1, "<f4", 2 * LC, LR, LR, data);
    add_png(fx, "img1.png", 1, LR, PNG_COLOR_TYPE_RGB);
    open_fails(fx->dir, LR, LC, 0, "npy_mixed", "mixes");
    fx_begin(fx, "npy_pixmodel");
    add_npy(fx, "img0.npy", 1, "<f4", 2 * LC, LR, LR, data);
    open_fails(fx->dir, LR, 3, 0, "npy_pixmodel", "4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folder_pixels),     cmocka_unit_test(test_zip_pixels),
        cmocka_unit_test(test_gray_model),        cmocka_unit_test(test_latents),
        cmocka_unit_test(test_permutation),       cmocka_unit_test(test_loader_order),
        cmocka_unit_test(test_resume),            cmocka_unit_test(test_builtin),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_error_label_count), cmocka_unit_test(test_error_label_range),
        cmocka_unit_test(test_error_no_json),     cmocka_unit_test(test_error_missing),
        cmocka_unit_test(test_error_corrupt_png), cmocka_unit_test(test_error_wrong_size),
        cmocka_unit_test(test_error_corrupt_npy),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, setup, teardown);
}
