/* A dataset's labels, from its dataset.json (data_internal.h). */
#include "config.h"

#include "runtime/data_internal.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int edm_data_load_labels(edm_dataset *ds, edm_status *st)
{
    char jname[EDM_DATA_MAX_PATH];
    snprintf(jname, sizeof jname, "%s/dataset.json", ds->spec);
    int present = 0;
    uint64_t zidx = 0;
    if (edm_data_has_file(ds, "dataset.json", &present, &zidx, st) != 0)
        return -1;
    if (!present)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "%s has no dataset.json, but the model is conditional (label_dim %d) and needs labels", ds->spec,
                        ds->label_dim);
    unsigned char *bytes = NULL;
    size_t len = 0;
    if (edm_data_read_file(ds, "dataset.json", zidx, &bytes, &len, st))
        return -1;
    int rc = parse_labels(ds, jname, bytes, len, st);
    free(bytes);
    return rc;
}

int edm_data_probe_classes(edm_dataset *ds, int *classes, edm_status *st)
{
    *classes = 0;
    int present = 0;
    uint64_t zidx = 0;
    if (edm_data_has_file(ds, "dataset.json", &present, &zidx, st) != 0)
        return -1;
    if (!present)
        return 0;
    unsigned char *bytes = NULL;
    size_t len = 0;
    if (edm_data_read_file(ds, "dataset.json", zidx, &bytes, &len, st))
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
