/* A training run's EMA snapshots for post-hoc EMA (phema_snapshots.h). */
#include "config.h"

#include "runtime/phema_snapshots.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/meta_keys.h"
#include "runtime/phema.h"
#include "runtime/ref_import.h"
#include "runtime/train_run.h"

int edm_phema_parse_number(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    return errno || *end || !isfinite(*out) ? -1 : 0;
}

/* <prefix>-<digits>-<digits>.<digits>.safetensors (prefix: network-snapshot), or
 * .pkl (the reference's snapshots, imported as they are read) */
static int parse_name(const char *name, const char *prefix, int64_t *kimg, double *std)
{
    size_t n = strlen(name), lp = strlen(prefix);
    size_t ls = n > 4 && strcmp(name + n - 4, ".pkl") == 0 ? 4 : strlen(".safetensors");
    if (n <= lp + 1 + ls || strncmp(name, prefix, lp) != 0 || name[lp] != '-' ||
        (ls != 4 && strcmp(name + n - ls, ".safetensors") != 0))
        return -1;
    lp++;
    const char *p = name + lp, *end = name + n - ls;
    const char *q = p;
    int64_t k = 0;
    while (q < end && *q >= '0' && *q <= '9') {
        if (k > 100000000000LL)
            return -1;
        k = k * 10 + (*q++ - '0');
    }
    if (q == p || q >= end || *q != '-')
        return -1;
    const char *s = ++q;
    int digits = 0, dots = 0;
    for (; q < end; q++) {
        if (*q == '.' && digits > 0)
            dots++;
        else if (*q >= '0' && *q <= '9')
            digits++;
        else
            return -1;
    }
    if (dots != 1 || end[-1] == '.' || edm_phema_parse_number(s, (size_t)(end - s), std) != 0)
        return -1;
    *kimg = k;
    return 0;
}

static int snapshot_cmp(const void *pa, const void *pb)
{
    const edm_phema_snapshot *a = pa, *b = pb;
    if (a->nimg != b->nimg)
        return a->nimg < b->nimg ? -1 : 1;
    if (a->std != b->std)
        return a->std < b->std ? -1 : 1;
    return strcmp(a->name, b->name);
}

static void snapshot_free(edm_phema_snapshot *s)
{
    edm_st_close(s->f);
    free(s->name);
    free(s->path);
    memset(s, 0, sizeof *s);
}

void edm_phema_snapshots_free(edm_phema_snapshots *set)
{
    for (int i = 0; i < set->n; i++)
        snapshot_free(&set->s[i]);
    free(set->s);
    memset(set, 0, sizeof *set);
}

static int add_snapshot(edm_phema_snapshots *set, const char *dir, const char *name, int64_t kimg, double std,
                        edm_status *st)
{
    if (set->n == set->cap) {
        int cap = set->cap ? 2 * set->cap : 16;
        edm_phema_snapshot *s = realloc(set->s, sizeof *s * (size_t)cap);
        if (!s)
            return edm_nomem(st);
        set->s = s;
        set->cap = cap;
    }
    edm_phema_snapshot *s = &set->s[set->n];
    memset(s, 0, sizeof *s);
    size_t len = strlen(dir) + strlen(name) + 2;
    s->name = strdup(name);
    s->path = malloc(len);
    if (!s->name || !s->path) {
        snapshot_free(s);
        return edm_nomem(st);
    }
    snprintf(s->path, len, "%s/%s", dir, name);
    s->kimg = kimg;
    s->std = std;
    set->n++;
    return 0;
}

static int list_snapshots(edm_phema_snapshots *set, const char *dir, const char *prefix, edm_status *st)
{
    DIR *d = opendir(dir);
    if (!d)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open --indir=%s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        int64_t kimg;
        double std;
        if (parse_name(e->d_name, prefix, &kimg, &std) == 0)
            rc = add_snapshot(set, dir, e->d_name, kimg, std, st);
    }
    closedir(d);
    if (rc == 0 && set->n == 0)
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC,
                      "no snapshots in %s (expected %s-<kimg>-<sigma_rel>.safetensors or .pkl files)", dir, prefix);
    return rc;
}

/* Opens a snapshot, takes kimg and σ_rel from its metadata when given
 * there, and recovers nimg. */
static int open_snapshot(edm_phema_snapshot *s, edm_status *st)
{
    s->f = edm_weights_open(s->path, st);
    if (!s->f)
        return -1;
    const char *k = edm_st_metadata(s->f, EDM_META_PHEMA_KIMG), *v = edm_st_metadata(s->f, EDM_META_PHEMA_STD);
    if (k) {
        char *end;
        errno = 0;
        long long x = strtoll(k, &end, 10);
        if (errno || end == k || *end || x < 0 || x > 100000000000LL)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: metadata %s = '%s' is not a kimg", s->path,
                            EDM_META_PHEMA_KIMG, k);
        s->kimg = x;
    }
    if (v && edm_phema_parse_number(v, strlen(v), &s->std) != 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: metadata %s = '%s' is not a number", s->path,
                        EDM_META_PHEMA_STD, v);
    double g;
    if (edm_phema_std_to_exp(s->std, &g, st) != 0) {
        edm_status_prefix(st, "%s", s->path);
        return -1;
    }
    s->nimg = (double)edm_phema_kimg_to_nimg(s->kimg);
    if (!(s->nimg > 0))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: a snapshot at kimg %lld has seen no images", s->path,
                        (long long)s->kimg);
    return 0;
}

/* Why snapshot b does not belong with a (another configuration, other
 * tensors), or "" when it does. */
static void config_difference(const edm_phema_snapshot *a, const edm_phema_snapshot *b, char *why, size_t size)
{
    const char *ca = edm_st_metadata(a->f, EDM_META_CONFIG), *cb = edm_st_metadata(b->f, EDM_META_CONFIG);
    why[0] = '\0';
    if ((ca == NULL) != (cb == NULL) || (ca && strcmp(ca, cb) != 0)) {
        char diff[500];
        edm_config_diff(ca, cb, diff, sizeof diff);
        snprintf(why, size, "%s: %s", EDM_META_CONFIG, diff);
        return;
    }
    for (int k = 0; k < edm_st_count(a->f); k++) {
        const edm_st_entry *ea = edm_st_entry_at(a->f, k), *eb = edm_st_find(b->f, ea->name);
        char sa[128], sb[128];
        if (!eb) {
            snprintf(why, size, "tensor '%s' is missing from the second", ea->name);
            return;
        }
        edm_st_entry_shape_str(ea, sa, sizeof sa);
        edm_st_entry_shape_str(eb, sb, sizeof sb);
        if (ea->dtype != eb->dtype || strcmp(sa, sb) != 0) {
            snprintf(why, size, "tensor '%s' is %s %s vs %s %s", ea->name, edm_dtype_name(ea->dtype), sa,
                     edm_dtype_name(eb->dtype), sb);
            return;
        }
    }
    for (int k = 0; edm_st_count(a->f) != edm_st_count(b->f) && k < edm_st_count(b->f); k++)
        if (!edm_st_find(a->f, edm_st_entry_at(b->f, k)->name)) {
            snprintf(why, size, "tensor '%s' is only in the second", edm_st_entry_at(b->f, k)->name);
            return;
        }
}

int edm_phema_snapshots_find(edm_phema_snapshots *set, const char *dir, const char *prefix, int64_t max_kimg,
                             edm_status *st)
{
    memset(set, 0, sizeof *set);
    if (list_snapshots(set, dir, prefix, st) != 0)
        return -1;
    for (int i = 0; i < set->n; i++)
        if (open_snapshot(&set->s[i], st) != 0)
            return -1;
    qsort(set->s, (size_t)set->n, sizeof *set->s, snapshot_cmp);
    int keep = 0, total = set->n;
    for (int i = 0; i < set->n; i++) {
        if (max_kimg >= 0 && set->s[i].kimg > max_kimg)
            snapshot_free(&set->s[i]);
        else
            set->s[keep++] = set->s[i];
    }
    set->n = keep;
    if (keep == 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--outkimg=%lld: none of the %d snapshots in %s is that early",
                        (long long)max_kimg, total, dir);
    for (int i = 1; i < set->n; i++)
        if (set->s[i].nimg == set->s[i - 1].nimg && set->s[i].std == set->s[i - 1].std)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s and %s are snapshots of the same time and sigma_rel (kimg %lld, %g)",
                            set->s[i - 1].name, set->s[i].name, (long long)set->s[i].kimg, set->s[i].std);
    for (int i = 1; i < set->n; i++) {
        char why[600];
        config_difference(&set->s[0], &set->s[i], why, sizeof why);
        if (why[0])
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "snapshots of mixed configurations: %s and %s (%s)",
                            set->s[0].name, set->s[i].name, why);
    }
    return 0;
}

static int is_buffer(const edm_phema_output *out, const char *name)
{
    for (int i = 0; i < out->nbuffers; i++)
        if (strcmp(out->buffers[i], name) == 0)
            return 1;
    return 0;
}

int edm_phema_tensor(const edm_phema_snapshots *set, const edm_phema_output *out, const edm_st_entry *e,
                       double *acc, double *tmp, edm_status *st)
{
    const edm_phema_snapshot *latest = &set->s[set->n - 1];
    if (is_buffer(out, e->name))
        return edm_st_read_f64(latest->f, e, acc, e->numel, st);
    memset(acc, 0, sizeof(double) * (size_t)e->numel);
    for (int i = 0; i < set->n; i++) {
        const edm_st_entry *ei = edm_st_find(set->s[i].f, e->name);
        if (edm_st_read_f64(set->s[i].f, ei, tmp, e->numel, st) != 0)
            return -1;
        for (int64_t q = 0; q < e->numel; q++)
            acc[q] += out->coef[i] * tmp[q];
    }
    return 0;
}

static int add_tensors(const edm_phema_snapshots *set, const edm_phema_output *out, edm_st_writer *w, edm_status *st)
{
    const edm_phema_snapshot *latest = &set->s[set->n - 1];
    int rc = 0;
    for (int k = 0; rc == 0 && k < edm_st_count(latest->f); k++) {
        const edm_st_entry *e = edm_st_entry_at(latest->f, k);
        size_t count = (size_t)(e->numel ? e->numel : 1);
        double *acc = calloc(count, sizeof(double)), *tmp = malloc(sizeof(double) * count);
        if (!acc || !tmp)
            rc = edm_nomem(st);
        else
            rc = edm_phema_tensor(set, out, e, acc, tmp, st);
        if (rc == 0)
            rc = edm_st_writer_add_f64(w, e->name, e->dtype, e->rank, e->dim, acc, st);
        free(acc);
        free(tmp);
    }
    return rc;
}

/* The latest snapshot's metadata, then what this file is. */
static int add_metadata(const edm_phema_snapshots *set, const edm_phema_output *out, edm_st_writer *w, edm_status *st)
{
    const edm_phema_snapshot *latest = &set->s[set->n - 1];
    int rc = 0;
    for (int k = 0; rc == 0 && k < edm_st_metadata_count(latest->f); k++) {
        const char *key = edm_st_metadata_key(latest->f, k);
        if (strncmp(key, EDM_META_PHEMA_PREFIX, strlen(EDM_META_PHEMA_PREFIX)) != 0)
            rc = edm_st_writer_meta(w, key, edm_st_metadata(latest->f, key), st);
    }
    json_object *coefs = rc == 0 ? json_object_new_object() : NULL;
    if (rc == 0 && !coefs)
        rc = edm_nomem(st);
    for (int i = 0; rc == 0 && i < set->n; i++)
        if (json_object_object_add(coefs, set->s[i].name, json_object_new_double(out->coef[i])) != 0)
            rc = edm_nomem(st);
    char buf[64];
    if (rc == 0) {
        snprintf(buf, sizeof buf, "%lld", (long long)out->kimg);
        rc = edm_st_writer_meta(w, EDM_META_PHEMA_KIMG, buf, st);
    }
    if (rc == 0) {
        snprintf(buf, sizeof buf, "%.17g", out->std);
        rc = edm_st_writer_meta(w, EDM_META_PHEMA_STD, buf, st);
    }
    if (rc == 0) {
        snprintf(buf, sizeof buf, "%.0f", out->nimg);
        rc = edm_st_writer_meta(w, EDM_META_PHEMA_NIMG, buf, st);
    }
    if (rc == 0)
        rc = edm_st_writer_meta(w, EDM_META_PHEMA_COEFS, json_object_to_json_string_ext(coefs, JSON_C_TO_STRING_PLAIN),
                                st);
    json_object_put(coefs);
    return rc;
}

int edm_phema_write(const edm_phema_snapshots *set, const edm_phema_output *out, const char *path, edm_status *st)
{
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return edm_nomem(st);
    int rc = add_tensors(set, out, w, st);
    if (rc == 0)
        rc = add_metadata(set, out, w, st);
    if (rc == 0)
        rc = edm_st_writer_write(w, path, st);
    edm_st_writer_free(w);
    return rc;
}
