/* SHA-256 (nettle) as lowercase hex: the checksums of a package's entries
 * (runtime/package.h) and the name of the kernel source a cubin was built
 * from. */
#ifndef EDMC_CHECKSUM_H
#define EDMC_CHECKSUM_H

#include <stddef.h>

#define EDM_SHA256_HEX 65 /* 64 hex digits and the NUL */

void edm_sha256_hex(const void *data, size_t size, char out[EDM_SHA256_HEX]);

#endif
