#include "protocol/actionid.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint32_t random_seed(void)
{
    uint32_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = (uint32_t)time(NULL) ^ ((uint32_t)getpid() << 16);
    return seed ? seed : 1;
}

void ami_actionid_init(ami_actionid_gen_t *g, uint32_t seed)
{
    if (seed == 0)
        seed = random_seed();
    g->prefix_len = (size_t)snprintf(g->prefix, sizeof g->prefix, "a%08x-", seed);
    g->next = 1;
}

size_t ami_actionid_format(const ami_actionid_gen_t *g, uint64_t seq, char *out)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    memcpy(out, g->prefix, g->prefix_len);
    size_t len = g->prefix_len;
    while (n)
        out[len++] = digits[--n];
    out[len] = '\0';
    return len;
}

bool ami_actionid_parse(const ami_actionid_gen_t *g, const char *s, size_t len, uint64_t *seq)
{
    if (len <= g->prefix_len || len > g->prefix_len + 20)
        return false;
    if (memcmp(s, g->prefix, g->prefix_len) != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = g->prefix_len; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *seq = v;
    return true;
}
