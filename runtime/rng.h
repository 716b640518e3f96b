/* Counter-based random numbers (Philox4x32-10, Salmon et al. 2011): the
 * value at (key, counter) needs no state, so a tensor's initial values, a
 * seed's noise or a dropout mask never depend on what was drawn before. */
#ifndef EDMC_RNG_H
#define EDMC_RNG_H

#include <stdint.h>

/* Four 32-bit words for counter (c0..c3) under key (k0, k1). */
void edm_philox(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* A stream: key from (seed, name), element i from counter i. */
typedef struct {
    uint32_t key[2];
    uint64_t stream; /* goes into counter words 2-3 */
} edm_rng;

edm_rng edm_rng_make(uint64_t seed, const char *name);
/* n uniform [0, 1) / standard normal values starting at element `offset`. */
void edm_rng_uniform(const edm_rng *r, uint64_t offset, float *out, int64_t n);
void edm_rng_normal(const edm_rng *r, uint64_t offset, float *out, int64_t n);
void edm_rng_normal_f64(const edm_rng *r, uint64_t offset, double *out, int64_t n);

#endif
