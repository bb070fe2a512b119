/*
 * Monotonic time for deadlines and durations. Never wall-clock time:
 * deadlines must not jump when NTP steps the system clock.
 */
#ifndef AMI_UTIL_CLOCK_H
#define AMI_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t ami_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A few milliseconds of resolution for a fraction of the cost: for budgets
 * measured in tens of milliseconds, read once per handler run. */
static inline int64_t ami_now_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t ami_now_ms(void)
{
    return ami_now_ns() / 1000000LL;
}

#endif
