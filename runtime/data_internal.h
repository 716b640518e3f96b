/* The dataset's parts, shared by its files (not installed): data.c (open,
 * probe, decode, read, the permutation), data_index.c (the files of a
 * folder or zip, and their bytes) and data_labels.c (dataset.json). */
#ifndef EDMC_DATA_INTERNAL_H
#define EDMC_DATA_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <zip.h>

#include "compiler/status.h"
#include "runtime/data.h"
#include "runtime/data_builtin.h"

#define EDM_DATA_MAX_PATH 4096

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

/* Indexes the folder or .zip ds->spec: its .png or .npy files (hidden ones
 * left out), sorted by name; sets kind, n, entries, names and the zip. */
int edm_data_index(edm_dataset *ds, edm_status *st);
/* The whole file rel (entry zidx of a zip) into a malloc'd *out. */
int edm_data_read_file(edm_dataset *ds, const char *rel, uint64_t zidx, unsigned char **out, size_t *outlen,
                       edm_status *st);
/* Whether the folder or zip holds rel at its top (*zidx: its zip entry). */
int edm_data_has_file(const edm_dataset *ds, const char *rel, int *present, uint64_t *zidx, edm_status *st);
/* Image i's name for messages: spec/name. */
void edm_data_file_name(const edm_dataset *ds, int64_t i, char *buf, size_t size);

/* dataset.json's labels into ds->labels (label_dim > 0: it must exist and
 * label every image with a class below label_dim). */
int edm_data_load_labels(edm_dataset *ds, edm_status *st);
/* The number of classes dataset.json names (the largest label + 1), 0
 * without one; a malformed file is reported when the dataset is opened. */
int edm_data_probe_classes(edm_dataset *ds, int *classes, edm_status *st);

#endif
