/* SHA-256 through nettle (checksum.h). */
#include "config.h"

#include "runtime/checksum.h"

#include <nettle/sha2.h>
#include <stdint.h>

void edm_sha256_hex(const void *data, size_t size, char out[EDM_SHA256_HEX])
{
    struct sha256_ctx ctx;
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_init(&ctx);
    sha256_update(&ctx, size, data);
    sha256_digest(&ctx, sizeof digest, digest);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < SHA256_DIGEST_SIZE; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[(size_t)2 * SHA256_DIGEST_SIZE] = '\0';
}
