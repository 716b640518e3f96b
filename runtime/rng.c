#include "config.h"

#include "runtime/rng.h"

#include <math.h>

void edm_philox(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

edm_rng edm_rng_make(uint64_t seed, const char *name)
{
    edm_rng r;
    r.key[0] = (uint32_t)seed;
    r.key[1] = (uint32_t)(seed >> 32);
    r.stream = hash_name(name);
    return r;
}

/* Block i of the stream: four words. */
static void block(const edm_rng *r, uint64_t i, uint32_t out[4])
{
    uint32_t ctr[4] = {(uint32_t)i, (uint32_t)(i >> 32), (uint32_t)r->stream, (uint32_t)(r->stream >> 32)};
    edm_philox(out, ctr, r->key);
}

/* 24 random bits → [0, 1) exactly representable in float. */
static float to_unit(uint32_t w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

void edm_rng_uniform(const edm_rng *r, uint64_t offset, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t e = offset + (uint64_t)i;
        uint32_t w[4];
        block(r, e / 4, w);
        out[i] = to_unit(w[e % 4]);
    }
}

/* Box-Muller on two words of the element's own block: element e uses block e
 * (words 0-1), so values do not depend on n or the offset. */
static double normal_at(const edm_rng *r, uint64_t e)
{
    uint32_t w[4];
    block(r, e, w);
    double u1 = ((double)w[0] + 1.0) / 4294967297.0; /* (0, 1] */
    double u2 = (double)w[1] / 4294967296.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void edm_rng_normal(const edm_rng *r, uint64_t offset, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)normal_at(r, offset + (uint64_t)i);
}

void edm_rng_normal_f64(const edm_rng *r, uint64_t offset, double *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = normal_at(r, offset + (uint64_t)i);
}
