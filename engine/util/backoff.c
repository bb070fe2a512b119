#include "util/backoff.h"

#include <sys/random.h>
#include <time.h>

uint32_t ami_backoff_seed(uint32_t seed)
{
    if (seed)
        return seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = (uint32_t)time(NULL);
    return seed ? seed : 0x9e3779b9u;
}

uint32_t ami_backoff_random(uint32_t *state)
{
    uint32_t x = *state ? *state : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

uint32_t ami_backoff_delay(uint32_t *state, uint32_t initial_ms, uint32_t max_ms, uint32_t failures)
{
    uint64_t ceiling = initial_ms;
    for (uint32_t i = 0; i < failures && ceiling < max_ms; i++)
        ceiling *= 2;
    if (ceiling > max_ms)
        ceiling = max_ms;
    uint64_t floor = (ceiling + 1) / 2;
    return (uint32_t)(floor + ami_backoff_random(state) % (ceiling - floor + 1));
}
