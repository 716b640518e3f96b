/* A streaming writer of uncompressed (stored) zip archives, with the zip64
 * records an archive needs past 65535 entries or 4 GiB, as the reference's
 * dataset tool writes its datasets (zipfile, ZIP_STORED).  It writes to a
 * FILE the caller owns (edm_write_atomic's temporary file), so the archive
 * appears whole or not at all. */
#ifndef EDMC_ZIP_WRITE_H
#define EDMC_ZIP_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct edm_zip_writer edm_zip_writer;

edm_zip_writer *edm_zip_writer_new(FILE *fp);
/* Adds one entry; -1 (errno set) when the write fails or memory runs out. */
int edm_zip_add(edm_zip_writer *z, const char *name, const void *data, size_t len);
/* Writes the central directory and the end records. */
int edm_zip_finish(edm_zip_writer *z);
void edm_zip_writer_free(edm_zip_writer *z);

#endif
