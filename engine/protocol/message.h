/*
 * An AMI message as the parser hands it out. The type and its accessors
 * are public (<ami/message.h>: the message as an embedder reads it); this
 * adds what the engine's hot paths share (the name hash every dispatcher
 * uses, the case-insensitive compare).
 *
 * A message is BORROWED: it stays valid until the next call to
 * ami_parser_next / ami_parser_feed / ami_parser_reserve / ami_parser_reset
 * on the parser that produced it. Copy what must outlive that.
 */
#ifndef AMI_PROTOCOL_MESSAGE_H
#define AMI_PROTOCOL_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <ami/message.h>

/* Eight bytes with their ASCII capitals lowered: a byte gets 0x20 where it
 * lies in 'A'..'Z' (top bit clear, >= 'A', < '['). */
static inline uint64_t ami_lower8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, top = 0x8080808080808080ull;
    uint64_t ge_a = (w | top) - ones * 'A', ge_z1 = (w | top) - ones * ('Z' + 1);
    return w | ((ge_a & ~ge_z1 & ~w & top) >> 2);
}

static inline uint64_t ami_load8(const char *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    return w;
}

/* The ASCII-lowercased bytes hashed eight at a time (the last word
 * overlaps the one before it; under eight bytes, two overlapping 4-byte
 * loads or three single bytes), with the length mixed in: event names hash
 * once, in the parser, and every dispatcher uses msg->name_hash. A byte at
 * a time (FNV-1a) was a chain of one multiply per byte on the parser's
 * path. Reads only s[0..n). */
static inline uint32_t ami_name_hash(const char *s, size_t n)
{
    const uint64_t k = 0x9E3779B97F4A7C15ull;
    uint64_t h = (uint64_t)n * k, last;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            h = (h ^ ami_lower8(ami_load8(s + i))) * k;
            h ^= h >> 29;
        }
        last = ami_load8(s + n - 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        last = (uint64_t)a | (uint64_t)b << 32;
    } else {
        last = n ? (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[n / 2] << 8 |
                       (uint64_t)(unsigned char)s[n - 1] << 16
                 : 0;
    }
    h = (h ^ ami_lower8(last)) * k;
    h ^= h >> 32;
    return (uint32_t)((h * k) >> 32);
}

/* ASCII case-insensitive equality of two slices (inline: it runs for
 * every header on the hot path). */
static inline bool ami_str_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x != y && ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 25))
            return false;
    }
    return true;
}

#endif
