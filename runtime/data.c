/* Datasets (folders, zips, built-ins): opening and probing them, decoding
 * an image (PNG through png_io.c, latent .npy) and the shuffle; see data.h.
 * The index and file bytes are data_index.c's, the labels data_labels.c's,
 * the built-in images data_builtin.c's, the batch loader data_loader.c's. */
#include "config.h"

#include "runtime/data.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "runtime/data_builtin.h"
#include "runtime/data_internal.h"
#include "runtime/latent.h"
#include "runtime/npy_read.h"
#include "runtime/png_io.h"
#include "runtime/rng.h"

#define MAX_PATH EDM_DATA_MAX_PATH
#define MAX_CHANNELS EDM_BUILTIN_MAX_CHANNELS /* per image (the built-in sets draw up to this many) */
#define NAME_LATENT_NOISE "edm.data.latent_noise"
#define NAME_SHUFFLE "edm.data.shuffle"


/* ================================================================ helpers */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ================================================================ PNG */

/* A PNG libpng would not read: not a PNG at all, or a damaged one, named. */
static int png_unreadable(const char *fname, const unsigned char *bytes, size_t len, int rc, const char *msg,
                          edm_status *st)
{
    if (rc == EDM_PNG_NOMEM)
        return edm_nomem(st);
    if (!edm_png_is_png(bytes, len))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not a PNG file", fname);
    return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: corrupt PNG (%s)", fname, msg);
}

typedef struct {
    const edm_dataset *ds;
    const char *fname;
    edm_status *st;
} png_want;

/* What the model takes, asked of the header before the pixels are decoded:
 * 0, or 1 (refused) with w->st filled. */
static int png_fits(const edm_png_header *h, void *ctx)
{
    const png_want *w = ctx;
    const edm_dataset *ds = w->ds;
    if (h->depth == 16)
        edm_fail(w->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is a 16-bit PNG; only 8-bit images are supported", w->fname);
    else if (h->width != (uint32_t)ds->res || h->height != (uint32_t)ds->res)
        edm_fail(w->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is %lux%lu pixels; the model's resolution is %dx%d", w->fname,
                 (unsigned long)h->width, (unsigned long)h->height, ds->res, ds->res);
    else if (ds->ch == 1 && h->colour)
        edm_fail(w->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is a colour image, but the model has 1 channel", w->fname);
    else
        return 0;
    return 1;
}

/* Decodes into out [ch, res, res] as x/127.5 − 1. */
static int decode_png(const edm_dataset *ds, const char *fname, const unsigned char *bytes, size_t len, float *out,
                      edm_status *st)
{
    char msg[EDM_PNG_MSG];
    edm_png_rows o;
    png_want want = {ds, fname, st};
    int rc = edm_png_read_rows(bytes, len, png_fits, &want, &o, msg);
    if (rc > 0) /* refused by png_fits, said there */
        return -1;
    if (rc != 0)
        return png_unreadable(fname, bytes, len, rc, msg, st);
    size_t plane = (size_t)ds->res * (size_t)ds->res, w = o.header.width, hh = o.header.height;
    int colour = o.nc >= 3;
    for (int c = 0; c < ds->ch; c++) {
        size_t sc = colour ? (size_t)c : 0; /* gray → every channel; alpha dropped */
        float *dst = out + (size_t)c * plane;
        for (size_t y = 0; y < hh; y++)
            for (size_t x = 0; x < w; x++)
                dst[y * w + x] = (float)o.rows[y][x * (size_t)o.nc + sc] / 127.5f - 1.0f;
    }
    edm_png_rows_free(&o);
    return 0;
}

/* ================================================================ NPY */

/* Decodes a latent (2C, R, R) .npy (mean and std) and draws a sample into
 * out [C, R, R], normalised (runtime/latent.h). */
static int decode_npy(const edm_dataset *ds, const char *fname, const unsigned char *b, size_t len, uint64_t seed,
                      uint64_t pos, float *out, edm_status *st)
{
    edm_npy_info info = {0, 0, {0}};
    size_t data = 0;
    if (edm_npy_header(fname, b, len, &info, &data, st) != 0)
        return -1;
    int C = ds->ch, R = ds->res;
    if (info.ndim != 3 || info.shape[0] != 2 * (int64_t)C || info.shape[1] != R || info.shape[2] != R) {
        char shp[128];
        size_t o = 0;
        shp[0] = 0;
        for (int d = 0; d < info.ndim && o < sizeof shp; d++) {
            int w = snprintf(shp + o, sizeof shp - o, "%s%lld", d ? ", " : "", (long long)info.shape[d]);
            if (w < 0)
                break;
            o += (size_t)w;
        }
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s has shape (%s); the model wants (%d, %d, %d) (mean and std of %d latent channels)", fname,
                        shp, 2 * C, R, R, C);
    }
    size_t plane = (size_t)R * (size_t)R, count = 2 * (size_t)C * plane;
    if (len - data != count * (size_t)info.itemsize)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: corrupt .npy (%zu data bytes, expected %zu)", fname,
                        len - data, count * (size_t)info.itemsize);
    const unsigned char *d = b + data;
    edm_rng rng = edm_rng_make(seed, NAME_LATENT_NOISE);
    /* ε straight into out, then the formula in place */
    edm_rng_normal(&rng, pos * (uint64_t)((size_t)C * plane), out, (int64_t)((size_t)C * plane));
    for (int c = 0; c < C; c++) {
        float scale = edm_latent_scale(c), bias = edm_latent_bias(c);
        for (size_t i = 0; i < plane; i++) {
            size_t im = (size_t)c * plane + i, is = ((size_t)C + (size_t)c) * plane + i;
            float mean = edm_npy_element(&info, d, im), sd = edm_npy_element(&info, d, is);
            float z = mean + sd * out[im];
            out[im] = z * scale + bias;
            /* a NaN, an infinity or a value that overflows would only make the loss NaN */
            if (!isfinite(out[im]))
                return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                                "%s: latent element %zu of channel %d is not finite (mean %g, std %g)", fname, i, c,
                                (double)mean, (double)sd);
        }
    }
    return 0;
}

/* ============================================================== dataset */

void edm_dataset_close(edm_dataset *ds)
{
    if (!ds)
        return;
    if (ds->zip)
        zip_discard(ds->zip);
    if (ds->zip_mu_ok)
        pthread_mutex_destroy(&ds->zip_mu);
    free(ds->spec);
    free(ds->entries);
    free(ds->names);
    free(ds->labels);
    free(ds);
}

static int open_builtin(edm_dataset *ds, const char *what, edm_status *st)
{
    static const struct {
        const char *name;
        edm_builtin_kind kind;
    } kinds[] = {{"shapes", EDM_BUILTIN_SHAPES}, {"stripes", EDM_BUILTIN_STRIPES}, {"blobs", EDM_BUILTIN_BLOBS}};
    size_t nlen = 0;
    while (what[nlen] && !(what[nlen] >= '0' && what[nlen] <= '9'))
        nlen++;
    int found = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        if (strlen(kinds[k].name) == nlen && strncmp(kinds[k].name, what, nlen) == 0) {
            ds->builtin = kinds[k].kind;
            found = 1;
        }
    if (!found)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "unknown built-in dataset '%s' (builtin:shapes, builtin:stripes, builtin:blobs)", ds->spec);
    if (what[nlen]) {
        char *end = NULL;
        errno = 0;
        long r = strtol(what + nlen, &end, 10);
        if (errno || *end || r <= 0)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "built-in dataset '%s': bad resolution suffix", ds->spec);
        if (r != ds->res)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "built-in dataset '%s' is meant for resolution %ld, but the model's resolution is %d",
                            ds->spec, r, ds->res);
    }
    ds->kind = DS_BUILTIN;
    ds->n = EDM_BUILTIN_SIZE;
    return 0;
}

edm_dataset *edm_dataset_open(const char *spec, int resolution, int channels, int label_dim, edm_status *st)
{
    if (!spec || resolution <= 0 || resolution > 16384 || channels <= 0 || channels > MAX_CHANNELS || label_dim < 0) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                 "dataset %s: bad model geometry (resolution %d, channels %d, label_dim %d)", spec ? spec : "(null)",
                 resolution, channels, label_dim);
        return NULL;
    }
    edm_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) {
        edm_nomem(st);
        return NULL;
    }
    ds->res = resolution;
    ds->ch = channels;
    ds->label_dim = label_dim;
    ds->spec = dup_str(spec);
    if (!ds->spec) {
        edm_nomem(st);
        edm_dataset_close(ds);
        return NULL;
    }
    if (strncmp(spec, "builtin:", 8) == 0) {
        if (open_builtin(ds, spec + 8, st)) {
            edm_dataset_close(ds);
            return NULL;
        }
        return ds;
    }
    size_t l = strlen(ds->spec);
    while (l > 1 && ds->spec[l - 1] == '/')
        ds->spec[--l] = 0;
    if (edm_data_index(ds, st)) {
        edm_dataset_close(ds);
        return NULL;
    }
    if (ds->kind == DS_PNG && channels != 1 && channels != 3) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "dataset %s holds PNG images, but the model has %d channels (1 or 3)",
                 ds->spec, channels);
        edm_dataset_close(ds);
        return NULL;
    }
    if (ds->kind == DS_NPY && channels != 4) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                 "dataset %s holds latents (.npy), but the model has %d channels (latent models have 4)", ds->spec,
                 channels);
        edm_dataset_close(ds);
        return NULL;
    }
    if (label_dim > 0 && edm_data_load_labels(ds, st)) {
        edm_dataset_close(ds);
        return NULL;
    }
    /* read the first image so that a wrong size or format shows at once */
    size_t elems = (size_t)channels * (size_t)resolution * (size_t)resolution;
    float *tmp = malloc(elems * sizeof *tmp);
    if (!tmp) {
        edm_nomem(st);
        edm_dataset_close(ds);
        return NULL;
    }
    int rc = edm_dataset_read(ds, 0, 0, 0, tmp, NULL, st);
    free(tmp);
    if (rc) {
        edm_dataset_close(ds);
        return NULL;
    }
    return ds;
}

/* ================================================================ probe */

/* A PNG's size and colour from its header. */
static int png_geometry(const char *fname, const unsigned char *bytes, size_t len, int *res, int *ch,
                        edm_status *st)
{
    char msg[EDM_PNG_MSG];
    edm_png_header h;
    int rc = edm_png_read_header(bytes, len, &h, msg);
    if (rc != 0)
        return png_unreadable(fname, bytes, len, rc, msg, st);
    if (h.width != h.height || h.width == 0 || h.width > 16384)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is %lux%lu pixels; images must be square", fname,
                        (unsigned long)h.width, (unsigned long)h.height);
    *res = (int)h.width;
    *ch = h.colour ? 3 : 1;
    return 0;
}

int edm_dataset_probe(const char *spec, edm_dataset_geometry *g, edm_status *st)
{
    memset(g, 0, sizeof *g);
    if (strncmp(spec, "builtin:", 8) == 0) {
        static const struct {
            const char *name;
            int classes;
        } kinds[] = {{"shapes", 3}, {"stripes", 4}, {"blobs", 4}};
        const char *what = spec + 8;
        size_t nlen = strcspn(what, "0123456789");
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
            if (strlen(kinds[k].name) == nlen && strncmp(kinds[k].name, what, nlen) == 0)
                g->classes = kinds[k].classes;
        if (!g->classes)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "unknown built-in dataset '%s' (builtin:shapes, builtin:stripes, builtin:blobs)", spec);
        g->resolution = what[nlen] ? atoi(what + nlen) : 0; /* a bad suffix is reported at open */
        return 0;
    }
    edm_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return edm_nomem(st);
    ds->spec = dup_str(spec);
    int rc = ds->spec ? 0 : edm_nomem(st);
    size_t l = ds->spec ? strlen(ds->spec) : 0;
    while (l > 1 && ds->spec[l - 1] == '/')
        ds->spec[--l] = 0;
    if (rc == 0)
        rc = edm_data_index(ds, st);
    unsigned char *bytes = NULL;
    size_t len = 0;
    char fname[MAX_PATH];
    if (rc == 0) {
        edm_data_file_name(ds, 0, fname, sizeof fname);
        rc = edm_data_read_file(ds, ds->entries[0].name, ds->entries[0].zidx, &bytes, &len, st);
    }
    if (rc == 0 && ds->kind == DS_PNG) {
        rc = png_geometry(fname, bytes, len, &g->resolution, &g->channels, st);
    } else if (rc == 0) {
        edm_npy_info info = {0, 0, {0}};
        size_t data = 0;
        rc = edm_npy_header(fname, bytes, len, &info, &data, st);
        if (rc == 0 && (info.ndim != 3 || info.shape[0] % 2 || info.shape[1] != info.shape[2] ||
                        info.shape[1] < 1 || info.shape[1] > 16384 || info.shape[0] > 2 * (int64_t)MAX_CHANNELS))
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                          "%s: a latent must have shape (2C, R, R) (the mean and std of C channels)", fname);
        if (rc == 0) {
            g->channels = (int)(info.shape[0] / 2);
            g->resolution = (int)info.shape[1];
            g->latent = 1;
        }
    }
    if (rc == 0)
        rc = edm_data_probe_classes(ds, &g->classes, st);
    free(bytes);
    edm_dataset_close(ds);
    return rc;
}

int64_t edm_dataset_size(const edm_dataset *ds) { return ds->n; }
int edm_dataset_resolution(const edm_dataset *ds) { return ds->res; }
int edm_dataset_channels(const edm_dataset *ds) { return ds->ch; }
int edm_dataset_label_dim(const edm_dataset *ds) { return ds->label_dim; }
int edm_dataset_is_latent(const edm_dataset *ds) { return ds->kind == DS_NPY; }

const char *edm_dataset_name(const edm_dataset *ds, int64_t i, char *buf, size_t bufsize)
{
    static const char *const names[] = {"shapes", "stripes", "blobs"};
    if (bufsize == 0)
        return buf;
    if (i < 0 || i >= ds->n)
        snprintf(buf, bufsize, "(no image %lld)", (long long)i);
    else if (ds->kind == DS_BUILTIN)
        snprintf(buf, bufsize, "%s#%lld", names[ds->builtin], (long long)i);
    else
        snprintf(buf, bufsize, "%s", ds->entries[i].name);
    return buf;
}

int edm_dataset_label(const edm_dataset *ds, int64_t i)
{
    if (ds->label_dim <= 0 || i < 0 || i >= ds->n)
        return -1;
    if (ds->kind == DS_BUILTIN)
        return edm_builtin_class(ds->builtin, i) % ds->label_dim;
    return ds->labels[i];
}

int edm_dataset_read(edm_dataset *ds, int64_t i, uint64_t seed, uint64_t stream_pos, float *image, float *labels,
                     edm_status *st)
{
    if (i < 0 || i >= ds->n)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "dataset %s has no image %lld (it has %lld)", ds->spec,
                        (long long)i, (long long)ds->n);
    if (labels && ds->label_dim > 0) {
        memset(labels, 0, (size_t)ds->label_dim * sizeof *labels);
        labels[edm_dataset_label(ds, i)] = 1.0f;
    }
    if (ds->kind == DS_BUILTIN) {
        edm_builtin_render(ds->builtin, ds->res, ds->ch, i, image);
        return 0;
    }
    char fname[MAX_PATH + 64];
    edm_data_file_name(ds, i, fname, sizeof fname);
    unsigned char *bytes = NULL;
    size_t len = 0;
    if (edm_data_read_file(ds, ds->entries[i].name, ds->entries[i].zidx, &bytes, &len, st))
        return -1;
    int rc = ds->kind == DS_PNG ? decode_png(ds, fname, bytes, len, image, st)
                                : decode_npy(ds, fname, bytes, len, seed, stream_pos, image, st);
    free(bytes);
    return rc;
}

/* A uniform integer in [0, bound) from two 64-bit candidates of one Philox
 * block (rejection keeps it unbiased; both failing has probability < 2^-80). */
static uint64_t bounded(const uint32_t key[2], uint64_t i, uint64_t stream, uint64_t bound)
{
    uint32_t ctr[4] = {(uint32_t)i, (uint32_t)(i >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)}, w[4];
    edm_philox(w, ctr, key);
    uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound */
    uint64_t a = (uint64_t)w[0] | (uint64_t)w[1] << 32, b = (uint64_t)w[2] | (uint64_t)w[3] << 32;
    if (a >= threshold)
        return a % bound;
    return b % bound;
}

void edm_dataset_permutation(const edm_dataset *ds, uint64_t seed, uint64_t epoch, int64_t *perm)
{
    edm_rng r = edm_rng_make(seed, NAME_SHUFFLE);
    uint64_t stream = r.stream ^ (epoch * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    for (int64_t i = 0; i < ds->n; i++)
        perm[i] = i;
    for (int64_t i = ds->n - 1; i > 0; i--) {
        int64_t j = (int64_t)bounded(r.key, (uint64_t)i, stream, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
