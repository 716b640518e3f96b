/* Small file-system helpers shared by the commands that write folders. */
#ifndef EDMC_FILES_H
#define EDMC_FILES_H

#include <stdio.h>

#include "compiler/status.h"

/* mkdir -p: creates path and its missing parents. */
int edm_make_dirs(const char *path, edm_status *st);

/* path made absolute against the working folder (malloc'd; NULL when out of
 * memory or the working folder is unknown).  Not resolved further: links stay. */
char *edm_absolute_path(const char *path);
/* The folder of path into out: "a/b.edm" → "a", "/b.edm" → "/", "b.edm" → ".". */
void edm_folder_of(const char *path, char *out, size_t size);

/* Writes path atomically: body(fp, ctx, errbuf) fills a temporary file in the
 * same folder (created like any file, so the result follows the umask), which is flushed, fsynced and renamed over path; then
 * the folder is fsynced so the rename lasts.  On any failure the temporary file
 * is removed and st names path and the cause (body's errbuf, or errno). */
typedef int (*edm_write_body)(FILE *fp, void *ctx, char *errbuf, size_t errsize);
int edm_write_atomic(const char *path, edm_write_body body, void *ctx, edm_status *st);
/* The same for len bytes already in memory. */
int edm_write_bytes_atomic(const char *path, const void *data, size_t len, edm_status *st);

/* The model folders: $EDMC_MODELS, ./models and models/ beside the edmc
 * binary (those that are set; existence is not checked).  A weights file's
 * metadata may name a model, or imports, only inside them. */
typedef struct {
    char buf[3][4096];
    const char *dir[4]; /* dir[0..n) point into buf; one spare for the caller */
    int n;
} edm_model_dirs;
void edm_model_dirs_get(edm_model_dirs *d);

#endif
