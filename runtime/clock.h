/* Wall-clock seconds for timing (status lines, benchmarks, compile times). */
#ifndef EDMC_CLOCK_H
#define EDMC_CLOCK_H

#include <time.h>

/* Seconds on the monotonic clock (0 if it cannot be read): only differences mean anything. */
static inline double edm_now_seconds(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0)
        return 0;
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU seconds of the whole process (all threads): with one thread on a busy
 * machine, images per CPU second is the throughput an idle machine would show. */
static inline double edm_cpu_seconds(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t) != 0)
        return 0;
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#endif
