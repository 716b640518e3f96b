/* The files of a folder or zip dataset, and their bytes (data_internal.h). */
#include "config.h"

#include "runtime/data_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FILE_BYTES ((size_t)1 << 30) /* larger dataset files are refused */
#define MAX_DEPTH 32                     /* folder nesting */
#define MAX_PATH EDM_DATA_MAX_PATH

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

/* ------------------------------------------------------------ scanning */

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

int edm_data_index(edm_dataset *ds, edm_status *st)
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

/* ------------------------------------------------------------ file bytes */

void edm_data_file_name(const edm_dataset *ds, int64_t i, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", ds->spec, ds->entries[i].name);
}

int edm_data_read_file(edm_dataset *ds, const char *rel, uint64_t zidx, unsigned char **out, size_t *outlen,
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

int edm_data_has_file(const edm_dataset *ds, const char *rel, int *present, uint64_t *zidx, edm_status *st)
{
    *present = 0;
    *zidx = 0;
    if (ds->zip) {
        zip_int64_t idx = zip_name_locate(ds->zip, rel, 0);
        *present = idx >= 0;
        *zidx = *present ? (uint64_t)idx : 0;
        return 0;
    }
    char path[MAX_PATH];
    int w = snprintf(path, sizeof path, "%s/%s", ds->spec, rel);
    if (w < 0 || (size_t)w >= sizeof path)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s/%s: path too long", ds->spec, rel);
    struct stat sb;
    *present = stat(path, &sb) == 0;
    if (!*present && errno != ENOENT)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot stat %s: %s", path, strerror(errno));
    return 0;
}
