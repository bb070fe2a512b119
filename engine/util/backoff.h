/*
 * Reconnect delays with "equal jitter", for every link the engine keeps up
 * (AMI sessions, the Redis link): the ceiling doubles with each consecutive
 * failure up to a maximum, and the delay is drawn from its upper half, so
 * that engines which lost the same peer never come back in lock-step, and
 * a retry never comes sooner than half the ceiling. Pure functions over a
 * caller-owned random state: no clock, no allocation, any thread.
 */
#ifndef AMI_UTIL_BACKOFF_H
#define AMI_UTIL_BACKOFF_H

#include <stdint.h>

/* A non-zero seed: the given one, else one from getrandom (never blocks). */
uint32_t ami_backoff_seed(uint32_t seed);

/* xorshift32: spread for jitter, not cryptographic quality. *state != 0. */
uint32_t ami_backoff_random(uint32_t *state);

/* The delay after `failures` consecutive failures (0: the first retry):
 * drawn from [c/2, c] with c = min(max_ms, initial_ms * 2^failures). */
uint32_t ami_backoff_delay(uint32_t *state, uint32_t initial_ms, uint32_t max_ms, uint32_t failures);

#endif
