/* Dataset conversion (dataset_convert.h): list the sources, read their
 * labels, then per image decode, transform, encode and write it. */
#include "config.h"

#include "runtime/dataset_convert.h"

#include <dirent.h>
#include <errno.h>
#include <json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zip.h>

#include "runtime/files.h"
#include "runtime/resample.h"
#include "runtime/zip_read.h"
#include "runtime/zip_write.h"

#define SCAN_MAX_DEPTH 64
#define SOURCE_MAX_BYTES ((size_t)1 << 30)

/* ------------------------------------------------------------ transforms */

int edm_transform_parse(const char *name, edm_transform *out)
{
    static const char *const names[] = {"none", "center-crop", "center-crop-wide", "center-crop-dhariwal"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (edm_transform)i;
            return 0;
        }
    return -1;
}

static int copy_image(const edm_rgb8 *in, edm_rgb8 *out, edm_status *st)
{
    return edm_crop_rgb8(in, 0, 0, in->width, in->height, out, st);
}

/* A crop then a resize, the intermediate freed. */
static int crop_resize(const edm_rgb8 *in, int x0, int y0, int w, int h, int width, int height, edm_filter f,
                       edm_rgb8 *out, edm_status *st)
{
    edm_rgb8 mid;
    if (edm_crop_rgb8(in, x0, y0, w, h, &mid, st) != 0)
        return -1;
    int rc = edm_resize_rgb8(&mid, width, height, f, out, st);
    edm_rgb8_free(&mid);
    return rc;
}

static int center_crop_wide(const edm_rgb8 *in, int width, int height, edm_rgb8 *out, edm_status *st)
{
    /* the band's height, rounded half to even as numpy does */
    int ch = (int)nearbyint((double)width * in->height / in->width);
    if (in->width < width || ch < height)
        return 0; /* skipped: out->px stays NULL */
    edm_rgb8 band;
    if (crop_resize(in, 0, (in->height - ch) / 2, in->width, ch, width, height, EDM_FILTER_LANCZOS, &band, st) != 0)
        return -1;
    out->px = calloc((size_t)width * (size_t)width * 3, 1);
    if (!out->px) {
        edm_rgb8_free(&band);
        return edm_nomem(st);
    }
    out->width = out->height = width;
    memcpy(out->px + (size_t)((width - height) / 2) * (size_t)width * 3, band.px, (size_t)width * (size_t)height * 3);
    edm_rgb8_free(&band);
    return 0;
}

/* ADM's ImageNet crop: halve with a box filter while the short side is at
 * least twice the size, scale the short side to the size (bicubic), crop
 * the centre. */
static int center_crop_dhariwal(const edm_rgb8 *in, int size, edm_rgb8 *out, edm_status *st)
{
    edm_rgb8 cur;
    if (copy_image(in, &cur, st) != 0)
        return -1;
    while ((cur.width < cur.height ? cur.width : cur.height) >= 2 * size) {
        edm_rgb8 half;
        if (edm_resize_rgb8(&cur, cur.width / 2, cur.height / 2, EDM_FILTER_BOX, &half, st) != 0) {
            edm_rgb8_free(&cur);
            return -1;
        }
        edm_rgb8_free(&cur);
        cur = half;
    }
    double scale = (double)size / (cur.width < cur.height ? cur.width : cur.height);
    int w = (int)nearbyint(cur.width * scale), h = (int)nearbyint(cur.height * scale);
    edm_rgb8 scaled;
    int rc = edm_resize_rgb8(&cur, w, h, EDM_FILTER_BICUBIC, &scaled, st);
    edm_rgb8_free(&cur);
    if (rc != 0)
        return -1;
    rc = edm_crop_rgb8(&scaled, (w - size) / 2, (h - size) / 2, size, size, out, st);
    edm_rgb8_free(&scaled);
    return rc;
}

int edm_transform_image(const edm_rgb8 *in, edm_transform t, int width, int height, edm_rgb8 *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    int crop = in->width < in->height ? in->width : in->height;
    switch (t) {
    case EDM_TRANSFORM_NONE:
        if (width == 0 || (width == in->width && height == in->height))
            return copy_image(in, out, st);
        return edm_resize_rgb8(in, width, height, EDM_FILTER_LANCZOS, out, st);
    case EDM_TRANSFORM_CENTER_CROP:
        return crop_resize(in, (in->width - crop) / 2, (in->height - crop) / 2, crop, crop, width, height,
                           EDM_FILTER_LANCZOS, out, st);
    case EDM_TRANSFORM_CENTER_CROP_WIDE: return center_crop_wide(in, width, height, out, st);
    default: return center_crop_dhariwal(in, width, out, st);
    }
}

/* ------------------------------------------------------------ sources */

typedef struct {
    char *rel; /* the name in the dataset's terms ("cat/1.jpg") */
    zip_uint64_t zidx;
} source_file;

typedef struct {
    const char *root;
    zip_t *zip; /* NULL: a folder */
    source_file *f;
    int64_t n, cap;
} source_list;

/* The extensions the reference's tool counts as images (PIL's). */
static int is_image_name(const char *name)
{
    static const char *const exts[] = {"png", "jpg",  "jpeg", "jpe", "jfif", "bmp", "dib", "gif", "tif", "tiff",
                                       "webp", "ppm", "pgm",  "pbm", "pnm",  "tga", "ico", "jp2", "j2k", "pcx"};
    const char *dot = strrchr(name, '.');
    if (!dot || strchr(dot, '/'))
        return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot + 1, exts[i]) == 0)
            return 1;
    return 0;
}

static int list_add(source_list *l, const char *rel, zip_uint64_t zidx, edm_status *st)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 256;
        source_file *f = realloc(l->f, sizeof *f * (size_t)cap);
        if (!f)
            return edm_nomem(st);
        l->f = f;
        l->cap = cap;
    }
    l->f[l->n].rel = strdup(rel);
    if (!l->f[l->n].rel)
        return edm_nomem(st);
    l->f[l->n++].zidx = zidx;
    return 0;
}

static void list_free(source_list *l)
{
    for (int64_t i = 0; i < l->n; i++)
        free(l->f[i].rel);
    free(l->f);
    if (l->zip)
        zip_discard(l->zip);
}

static int scan_folder(source_list *l, const char *rel, int depth, edm_status *st)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", l->root, rel[0] ? "/" : "", rel);
    if (depth > SCAN_MAX_DEPTH)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: folders nested more than %d deep", path, SCAN_MAX_DEPTH);
    DIR *d = opendir(path);
    if (!d)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open folder %s: %s", path, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[4096], full[8200];
        int n = snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        int m = snprintf(full, sizeof full, "%s/%s", l->root, sub);
        if (n < 0 || (size_t)n >= sizeof sub - 1 || m < 0 || (size_t)m >= sizeof full) {
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s/%s: path too long", path, e->d_name);
            break;
        }
        struct stat sb;
        if (stat(full, &sb) != 0)
            continue; /* a dangling link: not a file, as for the reference */
        if (S_ISDIR(sb.st_mode))
            rc = scan_folder(l, sub, depth + 1, st);
        else if (S_ISREG(sb.st_mode) && is_image_name(sub))
            rc = list_add(l, sub, 0, st);
    }
    closedir(d);
    return rc;
}

static int scan_zip(source_list *l, edm_status *st)
{
    int err = 0;
    l->zip = zip_open(l->root, ZIP_RDONLY, &err);
    if (!l->zip) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open zip %s: %s", l->root, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    zip_int64_t n = zip_get_num_entries(l->zip, 0);
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(l->zip, (zip_uint64_t)i, 0);
        if (name && is_image_name(name) && list_add(l, name, (zip_uint64_t)i, st) != 0)
            return -1;
    }
    return 0;
}

static int cmp_source(const void *a, const void *b)
{
    return strcmp(((const source_file *)a)->rel, ((const source_file *)b)->rel);
}

/* A file's bytes: from the folder, or the zip entry. */
static int read_source(const source_list *l, const char *rel, zip_uint64_t zidx, int in_zip, unsigned char **out,
                       size_t *len, edm_status *st)
{
    *out = NULL;
    *len = 0;
    if (in_zip)
        return edm_zip_read_entry(l->zip, zidx, SOURCE_MAX_BYTES, l->root, out, len, st);
    char path[8200];
    snprintf(path, sizeof path, "%s/%s", l->root, rel);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot open: %s", path, strerror(errno));
    unsigned char *b = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= SOURCE_MAX_BYTES) {
                rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: larger than 1 GiB", path);
                break;
            }
            cap = cap ? 2 * cap : 65536;
            unsigned char *nb = realloc(b, cap);
            if (!nb) {
                rc = edm_nomem(st);
                break;
            }
            b = nb;
        }
        size_t got = fread(b + n, 1, cap - n, fp);
        n += got;
        if (got == 0) {
            if (ferror(fp))
                rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
    }
    fclose(fp);
    if (rc != 0) {
        free(b);
        return -1;
    }
    *out = b;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------ labels */

/* The label of each source (-1: none), from dataset.json or the top-level folders. */
static int json_labels(const source_list *l, int in_zip, int *labels, edm_status *st)
{
    unsigned char *bytes = NULL;
    size_t len = 0;
    zip_int64_t zidx = in_zip ? zip_name_locate(l->zip, "dataset.json", 0) : 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/dataset.json", l->root);
    struct stat sb;
    if (in_zip ? zidx < 0 : stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    if (read_source(l, "dataset.json", (zip_uint64_t)zidx, in_zip, &bytes, &len, st) != 0)
        return -1;
    json_tokener *tok = json_tokener_new();
    json_object *root = tok ? json_tokener_parse_ex(tok, (const char *)bytes, (int)len) : NULL;
    json_tokener_free(tok);
    free(bytes);
    json_object *arr = NULL;
    if (!root || !json_object_is_type(root, json_type_object) || !json_object_object_get_ex(root, "labels", &arr)) {
        json_object_put(root);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: dataset.json is not an object with \"labels\"", l->root);
    }
    int rc = 0;
    if (arr && !json_object_is_type(arr, json_type_array))
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: dataset.json: \"labels\" is neither a list nor null",
                      l->root);
    size_t n = arr && rc == 0 ? json_object_array_length(arr) : 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_object *pair = json_object_array_get_idx(arr, i), *name, *cls;
        if (!json_object_is_type(pair, json_type_array) || json_object_array_length(pair) != 2 ||
            !json_object_is_type(name = json_object_array_get_idx(pair, 0), json_type_string) ||
            !json_object_is_type(cls = json_object_array_get_idx(pair, 1), json_type_int) ||
            json_object_get_int64(cls) < 0 || json_object_get_int64(cls) > INT32_MAX) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                          "%s: dataset.json: labels entry %zu is not [\"<path>\", <class 0 or more>]", l->root, i);
            break;
        }
        source_file key = {.rel = (char *)json_object_get_string(name)};
        source_file *hit = bsearch(&key, l->f, (size_t)l->n, sizeof *l->f, cmp_source);
        if (hit)
            labels[hit - l->f] = (int)json_object_get_int64(cls);
    }
    json_object_put(root);
    return rc == 0 ? (arr ? 1 : 0) : -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Without dataset.json labels: the index of each file's top-level folder
 * among the sorted distinct names ("" for files at the root), when there are
 * two or more. */
static int folder_labels(const source_list *l, int *labels, edm_status *st)
{
    char **top = calloc((size_t)l->n, sizeof *top);
    int rc = top ? 0 : edm_nomem(st);
    for (int64_t i = 0; rc == 0 && i < l->n; i++) {
        const char *slash = strchr(l->f[i].rel, '/');
        top[i] = strndup(l->f[i].rel, slash ? (size_t)(slash - l->f[i].rel) : 0);
        if (!top[i])
            rc = edm_nomem(st);
    }
    char **names = rc == 0 ? malloc(sizeof *names * (size_t)l->n) : NULL;
    if (rc == 0 && !names)
        rc = edm_nomem(st);
    if (rc == 0) {
        memcpy(names, top, sizeof *names * (size_t)l->n);
        qsort(names, (size_t)l->n, sizeof *names, cmp_str);
        size_t distinct = 0;
        for (int64_t i = 0; i < l->n; i++)
            if (distinct == 0 || strcmp(names[distinct - 1], names[i]) != 0)
                names[distinct++] = names[i];
        for (int64_t i = 0; i < l->n; i++) {
            char **hit = bsearch(&top[i], names, distinct, sizeof *names, cmp_str);
            labels[i] = distinct > 1 && hit ? (int)(hit - names) : -1;
        }
    }
    for (int64_t i = 0; top && i < l->n; i++)
        free(top[i]);
    free(top);
    free(names);
    return rc;
}

/* ------------------------------------------------------------ output */

typedef struct {
    const char *dest;
    edm_zip_writer *zip; /* NULL: a folder */
    char made_dir[8];    /* the last NNNNN folder made */
} sink;

static int sink_put(sink *s, const char *name, const void *data, size_t len, edm_status *st)
{
    if (s->zip) {
        if (edm_zip_add(s->zip, name, data, len) != 0)
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot write %s: %s", s->dest, name, strerror(errno));
        return 0;
    }
    char path[8200];
    const char *slash = strchr(name, '/');
    size_t dlen = slash ? (size_t)(slash - name) : 0;
    if (slash && (strlen(s->made_dir) != dlen || strncmp(s->made_dir, name, dlen) != 0)) {
        snprintf(path, sizeof path, "%s/%.*s", s->dest, (int)(slash - name), name);
        if (edm_make_dirs(path, st) != 0)
            return -1;
        snprintf(s->made_dir, sizeof s->made_dir, "%.*s", (int)(slash - name), name);
    }
    snprintf(path, sizeof path, "%s/%s", s->dest, name);
    return edm_write_bytes_atomic(path, data, len, st);
}

/* ------------------------------------------------------------ the loop */

typedef struct {
    const edm_convert_opts *o;
    edm_convert_result *r;
    source_list *src;
    const int *labels;
    int64_t n;
    edm_status *st;
} job;

static int is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

/* One source image into the dataset, or counted as skipped or unreadable.
 * *first_w holds the size every image must have (0 before the first). */
static int convert_one(job *j, sink *s, int64_t idx, char *labels_json, size_t *used, size_t cap, int *all_labelled)
{
    const source_file *f = &j->src->f[idx];
    unsigned char *bytes = NULL;
    size_t len = 0;
    edm_rgb8 img = {0}, out = {0};
    edm_status why;
    edm_status_init(&why);
    char shown[8200]; /* the file as errors name it: folder/a.jpg, or archive.zip:a.jpg */
    snprintf(shown, sizeof shown, "%s%s%s", j->src->root, j->src->zip ? ":" : "/", f->rel);
    if (read_source(j->src, f->rel, f->zidx, j->src->zip != NULL, &bytes, &len, &why) != 0 ||
        edm_decode_image(bytes, len, shown, &img, &why) != 0) {
        free(bytes);
        if (why.code == EDM_ERR_NOMEM)
            return *j->st = why, -1;
        j->r->unreadable++;
        if (j->o->on_unreadable)
            j->o->on_unreadable(j->o->ctx, &why);
        return 0;
    }
    free(bytes);
    int rc = edm_transform_image(&img, j->o->transform, j->o->width, j->o->height, &out, j->st);
    edm_rgb8_free(&img);
    if (rc != 0)
        return -1;
    if (!out.px) {
        j->r->skipped++;
        return 0;
    }
    char arch[64];
    const edm_convert_opts *o = j->o;
    snprintf(arch, sizeof arch, "%05lld/%.16s%08lld.%.8s", (long long)(idx / 1000), o->encode ? o->entry_stem : "img",
             (long long)idx, o->encode ? o->entry_ext : "png");
    if (j->r->resolution == 0) {
        if (out.width != out.height || !is_pow2(out.width)) {
            edm_rgb8_free(&out);
            return edm_fail(j->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s: the images come out %dx%d; they must be square and a power of two wide "
                            "(give --resolution=WxH and a --transform)",
                            shown, out.width, out.height);
        }
        j->r->resolution = out.width;
    } else if (out.width != j->r->resolution || out.height != j->r->resolution) {
        edm_rgb8_free(&out);
        return edm_fail(j->st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s comes out %dx%d, the images before it %dx%d: every image must be of one size "
                        "(give --resolution=WxH)",
                        shown, out.width, out.height, j->r->resolution, j->r->resolution);
    }
    unsigned char *png = NULL;
    size_t plen = 0;
    rc = o->encode ? o->encode(o->encode_ctx, &out, &png, &plen, j->st) : edm_encode_png_rgb8(&out, &png, &plen, j->st);
    edm_rgb8_free(&out);
    if (rc == 0)
        rc = sink_put(s, arch, png, plen, j->st);
    free(png);
    if (rc != 0)
        return -1;
    j->r->written++;
    if (j->labels[idx] < 0)
        *all_labelled = 0;
    else if (*used + 64 < cap)
        *used += (size_t)snprintf(labels_json + *used, cap - *used, "%s[\"%s\", %d]", j->r->written > 1 ? ", " : "",
                                  arch, j->labels[idx]);
    return 0;
}

static int run(job *j, sink *s)
{
    size_t cap = (size_t)j->n * 64 + 64, used = 0;
    char *labels_json = malloc(cap);
    if (!labels_json)
        return edm_nomem(j->st);
    labels_json[0] = '\0';
    int all_labelled = 1, rc = 0;
    for (int64_t idx = 0; idx < j->n && rc == 0; idx++) {
        rc = convert_one(j, s, idx, labels_json, &used, cap, &all_labelled);
        if (rc == 0 && j->o->on_progress)
            j->o->on_progress(j->o->ctx, idx + 1, j->n);
    }
    j->r->labelled = all_labelled && j->r->written > 0;
    if (rc == 0) {
        /* json.dumps' spacing, as the reference writes it */
        size_t jlen = used + 32;
        char *json = malloc(jlen);
        if (!json) {
            free(labels_json);
            return edm_nomem(j->st);
        }
        int n = snprintf(json, jlen, "{\"labels\": %s%s%s}", j->r->labelled ? "[" : "",
                         j->r->labelled ? labels_json : "null", j->r->labelled ? "]" : "");
        rc = sink_put(s, "dataset.json", json, (size_t)n, j->st);
        free(json);
    }
    free(labels_json);
    return rc;
}

typedef struct {
    job *j;
    sink *s;
} zip_body_ctx;

/* edm_write_atomic's body for a zip destination: the whole conversion (its
 * status in the job's st, which the caller keeps over the write's). */
static int zip_body(FILE *fp, void *ctx, char *err, size_t errsize)
{
    zip_body_ctx *z = ctx;
    z->s->zip = edm_zip_writer_new(fp);
    if (!z->s->zip) {
        edm_nomem(z->j->st);
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    int rc = run(z->j, z->s);
    if (rc == 0 && edm_zip_finish(z->s->zip) != 0)
        rc = edm_fail(z->j->st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot write: %s", z->s->dest, strerror(errno));
    if (rc != 0)
        snprintf(err, errsize, "%s", z->j->st->msg);
    edm_zip_writer_free(z->s->zip);
    z->s->zip = NULL;
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static int check_options(const edm_convert_opts *o, edm_status *st)
{
    int w = o->width, h = o->height;
    if ((w == 0) != (h == 0) || w < 0 || h < 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--resolution: expected WxH with both positive");
    if (o->transform != EDM_TRANSFORM_NONE && w == 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--transform needs --resolution=WxH");
    if (o->transform == EDM_TRANSFORM_CENTER_CROP_DHARIWAL && w != h)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "--transform=center-crop-dhariwal needs a square --resolution (got %dx%d)", w, h);
    if (o->transform == EDM_TRANSFORM_CENTER_CROP_WIDE && h > w)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "--transform=center-crop-wide needs a --resolution no taller than wide (got %dx%d)", w, h);
    if (w > 65536 || h > 65536)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--resolution %dx%d: at most 65536 a side", w, h);
    return 0;
}

/* The destination folder must be new or empty (as the reference requires). */
static int check_folder_dest(const char *dest, edm_status *st)
{
    DIR *d = opendir(dest);
    if (!d)
        return errno == ENOENT ? edm_make_dirs(dest, st)
                               : edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "--dest=%s: %s", dest, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty ? 0 : edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--dest=%s: the folder must be empty", dest);
}

static int open_sources(source_list *l, edm_status *st)
{
    struct stat sb;
    if (stat(l->root, &sb) != 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open --source=%s: %s", l->root, strerror(errno));
    int rc;
    if (S_ISDIR(sb.st_mode))
        rc = scan_folder(l, "", 0, st);
    else if (S_ISREG(sb.st_mode) && ends_with(l->root, ".zip"))
        rc = scan_zip(l, st);
    else
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--source=%s: neither a folder nor a .zip file", l->root);
    if (rc == 0 && l->n > 0)
        qsort(l->f, (size_t)l->n, sizeof *l->f, cmp_source);
    if (rc == 0 && l->n == 0)
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "--source=%s: no image files (PNG, JPEG) in it", l->root);
    return rc;
}

int edm_dataset_convert(const edm_convert_opts *o, edm_convert_result *r, edm_status *st)
{
    memset(r, 0, sizeof *r);
    if (check_options(o, st) != 0)
        return -1;
    source_list l = {.root = o->source};
    int *labels = NULL;
    int rc = open_sources(&l, st);
    if (rc == 0 && !(labels = malloc(sizeof(int) * (size_t)l.n)))
        rc = edm_nomem(st);
    if (rc == 0) {
        for (int64_t i = 0; i < l.n; i++)
            labels[i] = -1;
        int from_json = json_labels(&l, l.zip != NULL, labels, st);
        if (from_json < 0)
            rc = -1;
        else if (from_json == 0)
            rc = folder_labels(&l, labels, st);
    }
    edm_status inner;
    edm_status_init(&inner);
    job j = {.o = o, .r = r, .src = &l, .labels = labels, .st = &inner};
    j.n = o->max_images >= 0 && o->max_images < l.n ? o->max_images : l.n;
    r->sources = j.n;
    sink s = {.dest = o->dest};
    if (rc == 0 && ends_with(o->dest, ".zip")) {
        char folder[4096];
        edm_folder_of(o->dest, folder, sizeof folder);
        zip_body_ctx z = {.j = &j, .s = &s};
        rc = edm_make_dirs(folder, st);
        if (rc == 0 && edm_write_atomic(o->dest, zip_body, &z, st) != 0) {
            if (inner.code != EDM_OK) /* the conversion's own error, not the write's summary of it */
                *st = inner;
            rc = -1;
        }
    } else if (rc == 0) {
        rc = check_folder_dest(o->dest, st);
        if (rc == 0 && run(&j, &s) != 0) {
            *st = inner;
            rc = -1;
        }
    }
    free(labels);
    list_free(&l);
    return rc;
}
