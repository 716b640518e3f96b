/* st_wsum: checks a file written by `edmc phema` against its inputs, for the
 * command-line tests.
 * usage: st_wsum OUT.safetensors INDIR LATEST [UNIT]
 * Reads the coefficients the file records (metadata edmc.phema.coefs, one
 * per snapshot file in INDIR), checks they sum to 1, that every learned
 * tensor equals Σ c_i·snapshot_i (within float32 rounding), and that the
 * buffers (*.freqs, *.phases) are LATEST's exactly.  With UNIT, also checks
 * that the coefficients pick that one snapshot (1 for it, ~0 for others). */
#include "config.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/safetensors.h"

#define MAX_IN 256

static int is_buffer(const char *name)
{
    size_t n = strlen(name);
    return (n > 6 && strcmp(name + n - 6, ".freqs") == 0) || (n > 7 && strcmp(name + n - 7, ".phases") == 0);
}

static int check(const char *out_path, const char *dir, const char *latest, const char *unit, edm_status *st)
{
    edm_st_file *in[MAX_IN] = {0};
    double coef[MAX_IN];
    int n = 0, rc = 0;
    edm_st_file *out = edm_st_open(out_path, st);
    if (!out)
        return -1;
    const char *meta = edm_st_metadata(out, "edmc.phema.coefs");
    json_object *j = meta ? json_tokener_parse(meta) : NULL;
    if (!j || !json_object_is_type(j, json_type_object)) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no edmc.phema.coefs metadata", out_path);
        goto done;
    }
    double sum = 0;
    int latest_used = 0;
    json_object_object_foreach(j, key, val)
    {
        if (n == MAX_IN) {
            rc = edm_fail(st, EDM_ERR_LIMIT, EDM_NO_LOC, "more than %d snapshots", MAX_IN);
            goto done;
        }
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, key);
        coef[n] = json_object_get_double(val);
        sum += coef[n];
        latest_used |= strcmp(key, latest) == 0;
        if (unit && fabs(coef[n] - (strcmp(key, unit) == 0)) > 1e-9) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "coefficient of %s is %.17g (want %d)", key, coef[n],
                          strcmp(key, unit) == 0);
            goto done;
        }
        in[n] = edm_st_open(path, st);
        if (!in[n]) {
            rc = -1;
            goto done;
        }
        n++;
    }
    if (n == 0 || fabs(sum - 1) > 1e-12 || !latest_used) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%d coefficients summing to %.17g (latest %s used: %d)", n, sum,
                      latest, latest_used);
        goto done;
    }
    char lpath[2048];
    snprintf(lpath, sizeof lpath, "%s/%s", dir, latest);
    edm_st_file *lf = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(edm_st_path(in[i]), lpath) == 0)
            lf = in[i];
    if (edm_st_count(out) != edm_st_count(lf)) {
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s has %d tensors, %s has %d", out_path, edm_st_count(out),
                      latest, edm_st_count(lf));
        goto done;
    }
    for (int k = 0; rc == 0 && k < edm_st_count(out); k++) {
        const edm_st_entry *e = edm_st_entry_at(out, k);
        size_t count = (size_t)(e->numel ? e->numel : 1);
        double *got = malloc(sizeof(double) * count), *want = calloc(count, sizeof(double));
        double *scale = calloc(count, sizeof(double)), *tmp = malloc(sizeof(double) * count);
        if (!got || !want || !scale || !tmp)
            rc = edm_nomem(st);
        if (rc == 0)
            rc = edm_st_read_f64(out, e, got, e->numel, st);
        for (int i = 0; rc == 0 && i < n; i++) {
            const edm_st_entry *ei = edm_st_find(in[i], e->name);
            if (!ei || ei->numel != e->numel) {
                rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no tensor '%s' of %lld elements",
                              edm_st_path(in[i]), e->name, (long long)e->numel);
                break;
            }
            if (is_buffer(e->name) && in[i] != lf)
                continue;
            rc = edm_st_read_f64(in[i], ei, tmp, e->numel, st);
            double c = is_buffer(e->name) ? 1 : coef[i];
            for (int64_t q = 0; rc == 0 && q < e->numel; q++) {
                want[q] += c * tmp[q];
                scale[q] += fabs(c * tmp[q]);
            }
        }
        for (int64_t q = 0; rc == 0 && q < e->numel; q++) {
            double tol = is_buffer(e->name) ? 0 : 1e-7 * scale[q] + 1e-30;
            if (!(fabs(got[q] - want[q]) <= tol))
                rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s'[%lld] = %.9g, want %.9g", out_path, e->name,
                              (long long)q, got[q], want[q]);
        }
        free(got);
        free(want);
        free(scale);
        free(tmp);
    }
done:
    for (int i = 0; i < n; i++)
        edm_st_close(in[i]);
    json_object_put(j);
    edm_st_close(out);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: st_wsum OUT.safetensors INDIR LATEST [UNIT]\n");
        return 2;
    }
    edm_status st;
    edm_status_init(&st);
    if (check(argv[1], argv[2], argv[3], argc == 5 ? argv[4] : NULL, &st) != 0) {
        fprintf(stderr, "st_wsum: %s\n", st.msg);
        return 1;
    }
    return 0;
}
