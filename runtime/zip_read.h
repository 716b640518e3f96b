/* Reading one whole entry of a zip archive (libzip) into memory, for the
 * readers that take files out of zips (dataset sources, torch.save files). */
#ifndef EDMC_ZIP_READ_H
#define EDMC_ZIP_READ_H

#include <stddef.h>
#include <stdint.h>
#include <zip.h>

#include "compiler/status.h"

/* Entry idx of z into a malloc'd buffer (*len bytes).  An entry of more
 * than max bytes, or one libzip cannot read, fails with st naming `what`
 * (the archive) and the entry. */
int edm_zip_read_entry(zip_t *z, zip_uint64_t idx, uint64_t max, const char *what, unsigned char **out, size_t *len,
                       edm_status *st);

#endif
