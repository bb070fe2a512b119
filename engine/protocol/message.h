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

#include <ami/message.h>

/* FNV-1a over the ASCII-lowercased bytes: event names hash once, in the
 * parser, and every dispatcher uses msg->name_hash. */
static inline uint32_t ami_name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        h = (h ^ (c >= 'A' && c <= 'Z' ? c | 0x20u : c)) * 16777619u;
    }
    return h;
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
