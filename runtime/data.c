/* Datasets (folders, zips, built-ins) and the prefetching loader; see data.h. */
#include "config.h"

#include "runtime/data.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <png.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zip.h>

#include "runtime/latent.h"
#include "runtime/data_builtin.h"
#include "runtime/npy_read.h"
#include "runtime/rng.h"

#define MAX_FILE_BYTES ((size_t)1 << 30) /* larger dataset files are refused */
#define MAX_DEPTH 32                     /* folder nesting */
#define MAX_PATH 4096
#define MAX_CHANNELS EDM_BUILTIN_MAX_CHANNELS /* per image (the built-in sets draw up to this many) */
#define NAME_LATENT_NOISE "edm.data.latent_noise"
#define NAME_SHUFFLE "edm.data.shuffle"


typedef enum { DS_PNG, DS_NPY, DS_BUILTIN } ds_kind;

typedef struct {
    const char *name; /* relative path, '/'-separated; into names */
    uint64_t zidx;    /* entry index in the zip */
} ds_entry;

struct edm_dataset {
    char *spec; /* as given, for messages; folders without trailing '/' */
    ds_kind kind;
    edm_builtin_kind builtin;
    int res, ch, label_dim;
    int64_t n;
    ds_entry *entries; /* n, sorted by name (files only) */
    char *names;       /* all names, NUL-separated */
    int32_t *labels;   /* n classes; NULL when label_dim = 0 */
    zip_t *zip;        /* NULL for folders */
    pthread_mutex_t zip_mu;
    int zip_mu_ok;
};

/* ================================================================ helpers */

static int ends_with_ci(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    if (lx > ls)
        return 0;
    for (size_t i = 0; i < lx; i++) {
        char a = s[ls - lx + i], b = suffix[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* A growing list of names while indexing. */
typedef struct {
    char *buf;
    size_t len, cap;
    size_t *off;
    uint64_t *zidx;
    int64_t n, cap_n;
    int64_t npng, nnpy;
} name_list;

static int names_add(name_list *nl, const char *name, uint64_t zidx, edm_status *st)
{
    size_t l = strlen(name) + 1;
    if (nl->len + l > nl->cap) {
        size_t cap = nl->cap ? nl->cap : 4096;
        while (cap < nl->len + l)
            cap *= 2;
        char *b = realloc(nl->buf, cap);
        if (!b)
            return edm_nomem(st);
        nl->buf = b;
        nl->cap = cap;
    }
    if (nl->n == nl->cap_n) {
        int64_t cap = nl->cap_n ? nl->cap_n * 2 : 1024;
        size_t *o = realloc(nl->off, (size_t)cap * sizeof *o);
        if (!o)
            return edm_nomem(st);
        nl->off = o;
        uint64_t *z = realloc(nl->zidx, (size_t)cap * sizeof *z);
        if (!z)
            return edm_nomem(st);
        nl->zidx = z;
        nl->cap_n = cap;
    }
    memcpy(nl->buf + nl->len, name, l);
    nl->off[nl->n] = nl->len;
    nl->zidx[nl->n] = zidx;
    nl->len += l;
    nl->n++;
    if (ends_with_ci(name, ".png"))
        nl->npng++;
    else
        nl->nnpy++;
    return 0;
}

static void names_free(name_list *nl)
{
    free(nl->buf);
    free(nl->off);
    free(nl->zidx);
}

static int is_data_file(const char *name) { return ends_with_ci(name, ".png") || ends_with_ci(name, ".npy"); }

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const ds_entry *)a)->name, ((const ds_entry *)b)->name);
}

/* ============================================================ indexing */

/* Appends the data files under root/rel (rel "" for root itself). */
static int scan_dir(const char *root, const char *rel, int depth, name_list *nl, edm_status *st)
{
    char dirpath[MAX_PATH];
    int w = rel[0] ? snprintf(dirpath, sizeof dirpath, "%s/%s", root, rel) : snprintf(dirpath, sizeof dirpath, "%s", root);
    if (w < 0 || (size_t)w >= sizeof dirpath)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s/%s: path too long", root, rel);
    if (depth > MAX_DEPTH)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: folders nested more than %d deep", dirpath, MAX_DEPTH);
    DIR *d = opendir(dirpath);
    if (!d)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open folder %s: %s", dirpath, strerror(errno));
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot read folder %s: %s", dirpath, strerror(errno));
            break;
        }
        if (e->d_name[0] == '.') /* ".", "..", hidden files and folders */
            continue;
        char childrel[MAX_PATH], childpath[MAX_PATH];
        int w1 = rel[0] ? snprintf(childrel, sizeof childrel, "%s/%s", rel, e->d_name)
                        : snprintf(childrel, sizeof childrel, "%s", e->d_name);
        int w2 = snprintf(childpath, sizeof childpath, "%s/%s", dirpath, e->d_name);
        if (w1 < 0 || (size_t)w1 >= sizeof childrel || w2 < 0 || (size_t)w2 >= sizeof childpath) {
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s/%s: path too long", dirpath, e->d_name);
            break;
        }
        struct stat sb;
        if (stat(childpath, &sb) != 0) {
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot stat %s: %s", childpath, strerror(errno));
            break;
        }
        if (S_ISDIR(sb.st_mode)) {
            rc = scan_dir(root, childrel, depth + 1, nl, st);
            if (rc)
                break;
        } else if (S_ISREG(sb.st_mode) && is_data_file(e->d_name)) {
            rc = names_add(nl, childrel, 0, st);
            if (rc)
                break;
        }
    }
    if (closedir(d) != 0 && rc == 0)
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot close folder %s: %s", dirpath, strerror(errno));
    return rc;
}

static int zip_error_fail(edm_status *st, const char *path, int code)
{
    zip_error_t ze;
    zip_error_init_with_code(&ze, code);
    edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open zip %s: %s", path, zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return -1;
}

static int hidden_component(const char *name)
{
    if (name[0] == '.')
        return 1;
    if (strncmp(name, "__MACOSX/", 9) == 0)
        return 1;
    for (const char *p = name; (p = strchr(p, '/')) != NULL; p++)
        if (p[1] == '.')
            return 1;
    return 0;
}

static int scan_zip(edm_dataset *ds, name_list *nl, edm_status *st)
{
    zip_int64_t n = zip_get_num_entries(ds->zip, 0);
    if (n < 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: cannot list the zip's entries", ds->spec);
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(ds->zip, (zip_uint64_t)i, 0);
        if (!name)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: entry %lld has no name: %s", ds->spec, (long long)i,
                            zip_strerror(ds->zip));
        size_t l = strlen(name);
        if (l == 0 || name[l - 1] == '/' || hidden_component(name) || !is_data_file(name))
            continue;
        if (names_add(nl, name, (uint64_t)i, st))
            return -1;
    }
    return 0;
}

/* ============================================================ file bytes */

static void file_label(const edm_dataset *ds, int64_t i, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", ds->spec, ds->entries[i].name);
}

/* Reads the whole file `rel` (entry zidx of a zip) into *out. */
static int read_bytes(edm_dataset *ds, const char *rel, uint64_t zidx, unsigned char **out, size_t *outlen,
                      edm_status *st)
{
    *out = NULL;
    *outlen = 0;
    if (!ds->zip) {
        char path[MAX_PATH];
        int w = snprintf(path, sizeof path, "%s/%s", ds->spec, rel);
        if (w < 0 || (size_t)w >= sizeof path)
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s/%s: path too long", ds->spec, rel);
        FILE *f = fopen(path, "rb");
        if (!f)
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open %s: %s", path, strerror(errno));
        struct stat sb;
        if (fstat(fileno(f), &sb) != 0) {
            int e = errno;
            fclose(f);
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot stat %s: %s", path, strerror(e));
        }
        if (sb.st_size < 0 || (uint64_t)sb.st_size > MAX_FILE_BYTES) {
            fclose(f);
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: file too large", path);
        }
        size_t n = (size_t)sb.st_size;
        unsigned char *b = malloc(n ? n : 1);
        if (!b) {
            fclose(f);
            return edm_nomem(st);
        }
        size_t got = n ? fread(b, 1, n, f) : 0;
        int err = ferror(f);
        if (fclose(f) != 0 || err || got != n) {
            free(b);
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot read %s", path);
        }
        *out = b;
        *outlen = n;
        return 0;
    }
    if (pthread_mutex_lock(&ds->zip_mu) != 0)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "cannot lock the zip of %s", ds->spec);
    int rc = 0;
    unsigned char *b = NULL;
    zip_stat_t zs;
    zip_stat_init(&zs);
    zip_file_t *zf = NULL;
    if (zip_stat_index(ds->zip, zidx, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE)) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s/%s: cannot stat the zip entry: %s", ds->spec, rel,
                      zip_strerror(ds->zip));
    } else if (zs.size > MAX_FILE_BYTES) {
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s/%s: file too large", ds->spec, rel);
    } else if (!(b = malloc(zs.size ? (size_t)zs.size : 1))) {
        rc = edm_nomem(st);
    } else if (!(zf = zip_fopen_index(ds->zip, zidx, 0))) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s/%s: cannot open the zip entry: %s", ds->spec, rel,
                      zip_strerror(ds->zip));
    } else {
        zip_int64_t got = zs.size ? zip_fread(zf, b, zs.size) : 0;
        if (got < 0 || (zip_uint64_t)got != zs.size)
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s/%s: cannot read the zip entry: %s", ds->spec, rel,
                          zip_file_strerror(zf));
        if (zip_fclose(zf) != 0 && rc == 0)
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s/%s: corrupt zip entry (bad checksum)", ds->spec, rel);
    }
    if (pthread_mutex_unlock(&ds->zip_mu) != 0 && rc == 0)
        rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "cannot unlock the zip of %s", ds->spec);
    if (rc) {
        free(b);
        return -1;
    }
    *out = b;
    *outlen = (size_t)zs.size;
    return 0;
}

/* ============================================================== labels */

typedef struct {
    const char *name;
    int64_t cls;
} label_pair;

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const label_pair *)a)->name, ((const label_pair *)b)->name);
}

/* Parses dataset.json (bytes) into ds->labels. */
static int parse_labels(edm_dataset *ds, const char *jname, const unsigned char *bytes, size_t len, edm_status *st)
{
    if (len > (size_t)INT32_MAX)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: too large", jname);
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return edm_nomem(st);
    json_object *root = json_tokener_parse_ex(tok, (const char *)bytes, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (!root || jerr != json_tokener_success) {
        if (jerr == json_tokener_continue)
            edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not valid JSON (unexpected end)", jname);
        else
            edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not valid JSON (%s)", jname, json_tokener_error_desc(jerr));
        json_object_put(root);
        json_tokener_free(tok);
        return -1;
    }
    json_tokener_free(tok);

    int rc = 0;
    label_pair *pairs = NULL;
    json_object *arr = NULL;
    if (!json_object_is_type(root, json_type_object) || !json_object_object_get_ex(root, "labels", &arr)) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no \"labels\" key", jname);
        goto done;
    }
    if (!arr || json_object_is_type(arr, json_type_null)) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                      "%s has no labels (\"labels\": null) but the model is conditional (label_dim %d)", jname,
                      ds->label_dim);
        goto done;
    }
    if (!json_object_is_type(arr, json_type_array)) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: \"labels\" is not a list", jname);
        goto done;
    }
    size_t nl = json_object_array_length(arr);
    if ((int64_t)nl != ds->n) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s has %zu labels for %lld images", jname, nl,
                      (long long)ds->n);
        goto done;
    }
    pairs = malloc((nl ? nl : 1) * sizeof *pairs);
    if (!pairs) {
        rc = edm_nomem(st);
        goto done;
    }
    for (size_t i = 0; i < nl; i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        json_object *p = NULL, *c = NULL;
        if (e && json_object_is_type(e, json_type_array) && json_object_array_length(e) == 2) {
            p = json_object_array_get_idx(e, 0);
            c = json_object_array_get_idx(e, 1);
        }
        if (!p || !c || !json_object_is_type(p, json_type_string) || !json_object_is_type(c, json_type_int)) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: label %zu is not [\"<path>\", <class>]", jname, i);
            goto done;
        }
        pairs[i].name = json_object_get_string(p);
        pairs[i].cls = json_object_get_int64(c);
    }
    qsort(pairs, nl, sizeof *pairs, cmp_label);
    for (size_t i = 1; i < nl; i++)
        if (strcmp(pairs[i - 1].name, pairs[i].name) == 0) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s labels %s twice", jname, pairs[i].name);
            goto done;
        }
    ds->labels = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *ds->labels);
    if (!ds->labels) {
        rc = edm_nomem(st);
        goto done;
    }
    /* both sorted with the same order: walk them together */
    for (int64_t i = 0; i < ds->n; i++) {
        const label_pair *lp = &pairs[i];
        if (strcmp(lp->name, ds->entries[i].name) != 0) {
            /* counts agree and names are unique, so this image has no label */
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s has no label for %s/%s", jname, ds->spec,
                          ds->entries[i].name);
            goto done;
        }
        if (lp->cls < 0 || lp->cls >= ds->label_dim) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: class %lld of %s/%s is outside 0..%d (label_dim %d)",
                          jname, (long long)lp->cls, ds->spec, lp->name, ds->label_dim - 1, ds->label_dim);
            goto done;
        }
        ds->labels[i] = (int32_t)lp->cls;
    }
done:
    free(pairs);
    json_object_put(root);
    return rc;
}

static int load_labels(edm_dataset *ds, edm_status *st)
{
    char jname[MAX_PATH];
    snprintf(jname, sizeof jname, "%s/dataset.json", ds->spec);
    unsigned char *bytes = NULL;
    size_t len = 0;
    int present;
    uint64_t zidx = 0;
    if (ds->zip) {
        zip_int64_t idx = zip_name_locate(ds->zip, "dataset.json", 0);
        present = idx >= 0;
        zidx = present ? (uint64_t)idx : 0;
    } else {
        struct stat sb;
        present = stat(jname, &sb) == 0;
        if (!present && errno != ENOENT)
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot stat %s: %s", jname, strerror(errno));
    }
    if (!present)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "%s has no dataset.json, but the model is conditional (label_dim %d) and needs labels", ds->spec,
                        ds->label_dim);
    if (read_bytes(ds, "dataset.json", zidx, &bytes, &len, st))
        return -1;
    int rc = parse_labels(ds, jname, bytes, len, st);
    free(bytes);
    return rc;
}

/* ================================================================ PNG */

typedef struct {
    const unsigned char *p;
    size_t n, pos;
    char msg[200];
} png_source;

static void png_read_mem(png_structp png, png_bytep out, size_t len)
{
    png_source *s = png_get_io_ptr(png);
    if (len > s->n - s->pos)
        png_error(png, "the file is truncated");
    memcpy(out, s->p + s->pos, len);
    s->pos += len;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_source *s = png_get_error_ptr(png);
    if (s)
        snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* What libpng gave: 8-bit rows of nc channels; why says what went wrong. */
typedef struct {
    png_uint_32 w, h;
    int nc;
    size_t rowbytes;
    unsigned char *pix;
    png_bytep *rows;
    enum { PNG_OK, PNG_LIBERR, PNG_SIZE, PNG_DEPTH16, PNG_COLOUR, PNG_NOMEM } why;
} png_image_rows;

/* All libpng calls, under its setjmp handler; allocations are kept in *o
 * (not in locals the longjmp could clobber) and freed by the caller. */
static void png_decode_rows(png_source *src, int res, int want_gray, png_image_rows *o)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, src, png_on_error, png_on_warning);
    if (!png) {
        o->why = PNG_NOMEM;
        return;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        o->why = PNG_NOMEM;
        return;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        if (o->why == PNG_OK)
            o->why = PNG_LIBERR;
        return;
    }
    png_set_read_fn(png, src, png_read_mem);
    png_read_info(png, info);
    int depth = 0, ctype = 0;
    png_get_IHDR(png, info, &o->w, &o->h, &depth, &ctype, NULL, NULL, NULL);
    if (depth == 16)
        o->why = PNG_DEPTH16;
    else if (o->w != (png_uint_32)res || o->h != (png_uint_32)res)
        o->why = PNG_SIZE;
    else if (want_gray && (ctype & PNG_COLOR_MASK_COLOR))
        o->why = PNG_COLOUR;
    if (o->why != PNG_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    o->nc = png_get_channels(png, info);
    o->rowbytes = png_get_rowbytes(png, info);
    if (png_get_bit_depth(png, info) != 8 || o->nc < 1 || o->nc > 4 || o->rowbytes != (size_t)o->w * (size_t)o->nc)
        png_error(png, "unexpected pixel layout after conversion to 8 bits");
    o->pix = malloc(o->rowbytes * o->h);
    o->rows = malloc(o->h * sizeof *o->rows);
    if (!o->pix || !o->rows) {
        o->why = PNG_NOMEM;
        png_error(png, "out of memory");
    }
    for (png_uint_32 y = 0; y < o->h; y++)
        o->rows[y] = o->pix + (size_t)y * o->rowbytes;
    png_read_image(png, o->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
}

/* Decodes into out [ch, res, res] as x/127.5 − 1. */
static int decode_png(const edm_dataset *ds, const char *fname, const unsigned char *bytes, size_t len, float *out,
                      edm_status *st)
{
    if (len < 8 || png_sig_cmp(bytes, 0, 8) != 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not a PNG file", fname);
    png_source src = {bytes, len, 0, "unknown error"};
    png_image_rows o;
    memset(&o, 0, sizeof o);
    o.why = PNG_OK;
    png_decode_rows(&src, ds->res, ds->ch == 1, &o);
    int rc = 0;
    switch (o.why) {
    case PNG_OK:
        break;
    case PNG_LIBERR:
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: corrupt PNG (%s)", fname, src.msg);
        break;
    case PNG_SIZE:
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is %lux%lu pixels; the model's resolution is %dx%d", fname,
                      (unsigned long)o.w, (unsigned long)o.h, ds->res, ds->res);
        break;
    case PNG_DEPTH16:
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is a 16-bit PNG; only 8-bit images are supported", fname);
        break;
    case PNG_COLOUR:
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is a colour image, but the model has 1 channel", fname);
        break;
    case PNG_NOMEM:
        rc = edm_nomem(st);
        break;
    }
    if (rc == 0) {
        size_t plane = (size_t)ds->res * (size_t)ds->res;
        int colour = o.nc >= 3;
        for (int c = 0; c < ds->ch; c++) {
            size_t sc = colour ? (size_t)c : 0; /* gray → every channel; alpha dropped */
            float *dst = out + (size_t)c * plane;
            for (size_t y = 0; y < o.h; y++)
                for (size_t x = 0; x < o.w; x++)
                    dst[y * o.w + x] = (float)o.pix[y * o.rowbytes + x * (size_t)o.nc + sc] / 127.5f - 1.0f;
        }
    }
    free(o.pix);
    free(o.rows);
    return rc;
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

static int open_files(edm_dataset *ds, edm_status *st)
{
    struct stat sb;
    if (stat(ds->spec, &sb) != 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open dataset %s: %s", ds->spec, strerror(errno));
    name_list nl;
    memset(&nl, 0, sizeof nl);
    if (S_ISDIR(sb.st_mode)) {
        if (scan_dir(ds->spec, "", 0, &nl, st)) {
            names_free(&nl);
            return -1;
        }
    } else if (S_ISREG(sb.st_mode) && ends_with_ci(ds->spec, ".zip")) {
        int zerr = 0;
        ds->zip = zip_open(ds->spec, ZIP_RDONLY, &zerr);
        if (!ds->zip)
            return zip_error_fail(st, ds->spec, zerr);
        if (pthread_mutex_init(&ds->zip_mu, NULL) != 0)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "cannot create a mutex");
        ds->zip_mu_ok = 1;
        if (scan_zip(ds, &nl, st)) {
            names_free(&nl);
            return -1;
        }
    } else {
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "dataset %s is neither a folder nor a .zip file", ds->spec);
    }
    if (nl.n == 0) {
        names_free(&nl);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "dataset %s holds no .png or .npy files", ds->spec);
    }
    if (nl.npng && nl.nnpy) {
        names_free(&nl);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "dataset %s mixes .png (%lld) and .npy (%lld) files", ds->spec,
                        (long long)nl.npng, (long long)nl.nnpy);
    }
    ds->kind = nl.npng ? DS_PNG : DS_NPY;
    ds->n = nl.n;
    ds->names = nl.buf;
    nl.buf = NULL;
    ds->entries = malloc((size_t)nl.n * sizeof *ds->entries);
    if (!ds->entries) {
        names_free(&nl);
        return edm_nomem(st);
    }
    for (int64_t i = 0; i < nl.n; i++) {
        ds->entries[i].name = ds->names + nl.off[i];
        ds->entries[i].zidx = nl.zidx[i];
    }
    names_free(&nl);
    qsort(ds->entries, (size_t)ds->n, sizeof *ds->entries, cmp_entry);
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
    if (open_files(ds, st)) {
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
    if (label_dim > 0 && load_labels(ds, st)) {
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

/* A PNG's size and colour from its header (libpng reads the IHDR chunk). */
static int png_geometry(const char *fname, const unsigned char *bytes, size_t len, int *res, int *ch,
                        edm_status *st)
{
    if (len < 8 || png_sig_cmp(bytes, 0, 8) != 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not a PNG file", fname);
    png_source src = {bytes, len, 0, "unknown error"};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return edm_nomem(st);
    }
    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: corrupt PNG (%s)", fname, src.msg);
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    if (w != h || w == 0 || w > 16384)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s is %lux%lu pixels; images must be square", fname,
                        (unsigned long)w, (unsigned long)h);
    *res = (int)w;
    *ch = ctype & PNG_COLOR_MASK_COLOR ? 3 : 1;
    return 0;
}

/* The number of classes dataset.json names (the largest label + 1), 0 without one. */
static int probe_classes(edm_dataset *ds, int *classes, edm_status *st)
{
    *classes = 0;
    uint64_t zidx = 0;
    if (ds->zip) {
        zip_int64_t idx = zip_name_locate(ds->zip, "dataset.json", 0);
        if (idx < 0)
            return 0;
        zidx = (uint64_t)idx;
    } else {
        char jname[MAX_PATH];
        struct stat sb;
        snprintf(jname, sizeof jname, "%s/dataset.json", ds->spec);
        if (stat(jname, &sb) != 0)
            return 0;
    }
    unsigned char *bytes = NULL;
    size_t len = 0;
    if (read_bytes(ds, "dataset.json", zidx, &bytes, &len, st))
        return -1;
    json_tokener *tok = json_tokener_new();
    json_object *root = tok && len < (size_t)INT32_MAX ? json_tokener_parse_ex(tok, (const char *)bytes, (int)len) : NULL;
    json_object *arr = NULL;
    if (root && json_object_is_type(root, json_type_object) && json_object_object_get_ex(root, "labels", &arr) &&
        json_object_is_type(arr, json_type_array))
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            json_object *c = json_object_array_get_idx(json_object_array_get_idx(arr, i), 1);
            int64_t k = c && json_object_is_type(c, json_type_int) ? json_object_get_int64(c) : -1;
            if (k >= *classes && k < 1000000)
                *classes = (int)k + 1;
        }
    /* a malformed file is reported, with its position, when the dataset is opened */
    json_object_put(root);
    json_tokener_free(tok);
    free(bytes);
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
        rc = open_files(ds, st);
    unsigned char *bytes = NULL;
    size_t len = 0;
    char fname[MAX_PATH];
    if (rc == 0) {
        file_label(ds, 0, fname, sizeof fname);
        rc = read_bytes(ds, ds->entries[0].name, ds->entries[0].zidx, &bytes, &len, st);
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
        rc = probe_classes(ds, &g->classes, st);
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
    file_label(ds, i, fname, sizeof fname);
    unsigned char *bytes = NULL;
    size_t len = 0;
    if (read_bytes(ds, ds->entries[i].name, ds->entries[i].zidx, &bytes, &len, st))
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
