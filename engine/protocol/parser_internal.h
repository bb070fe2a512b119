/*
 * What engine/protocol/parser.c and parser_lines.c share; nothing outside
 * them includes this. The parser's contract is in parser.h. parser.c owns
 * the general path (every line, every check, every error); parser_lines.c
 * holds ami_parser_next, which takes the common line fast and leaves any
 * other line to parser.c. All of it runs on the thread that owns the
 * parser; nothing here allocates.
 */
#ifndef AMI_PROTOCOL_PARSER_INTERNAL_H
#define AMI_PROTOCOL_PARSER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "protocol/parser.h"

/* A header array grown past this by a huge message is given back after it. */
#define PARSER_HDRS_KEEP 4096u

/* A header as two 8-byte stores where the byte order allows: left to
 * itself the compiler merges the four fields into one vector store built by
 * seven shuffles, which cost 4% of a parse (bench_parse). */
static inline void put_header(ami_hdr_t *h, uint32_t key_off, uint32_t key_len, uint32_t val_off,
                              uint32_t val_len)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    _Static_assert(offsetof(ami_hdr_t, key_len) == 4 && offsetof(ami_hdr_t, val_off) == 8 &&
                       offsetof(ami_hdr_t, val_len) == 12 && sizeof(ami_hdr_t) == 16,
                   "put_header writes ami_hdr_t as two (offset, length) words");
    uint64_t key = (uint64_t)key_off | (uint64_t)key_len << 32;
    uint64_t val = (uint64_t)val_off | (uint64_t)val_len << 32;
    memcpy((char *)h, &key, 8);
    memcpy((char *)h + 8, &val, 8);
#else
    h->key_off = key_off;
    h->key_len = key_len;
    h->val_off = val_off;
    h->val_len = val_len;
#endif
}

/* Scan one line from i: the index of its first NUL, CR or LF, and in
 * *colon the first ':' before that byte (left alone if already set).
 * Sixteen bytes per step: this loop runs over every byte of the stream.
 * The general path (whole_blocks false) looks up to `end` and returns
 * `end` when no terminator is buffered yet; its last load may overrun `end`,
 * which the buffer's SCAN_PAD readable bytes past its capacity allow. The
 * fast path (whole_blocks true, a constant at the call) looks at whole
 * blocks below `end` only, with no mask for a short tail, and returns
 * SIZE_MAX when they hold no terminator: the general path then takes the
 * line. `end` may lie below i. */
static inline size_t parser_scan(const char *b, size_t i, size_t end, size_t *colon, bool whole_blocks)
{
#ifdef __SSE2__
    const __m128i lf = _mm_set1_epi8('\n');
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i nul = _mm_setzero_si128();
    const __m128i col = _mm_set1_epi8(':');
    while (whole_blocks ? i + 16 <= end : i < end) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        unsigned term = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)),
                         _mm_cmpeq_epi8(v, nul)));
        unsigned valid = 0xFFFFu;
        if (!whole_blocks && end - i < 16)
            valid = (1u << (end - i)) - 1u;
        term &= valid;
        if (*colon == SIZE_MAX) {
            /* Colons before the terminator; every colon when there is none
             * (term 0 gives an all-ones mask). */
            unsigned c = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, col)) & valid & ((term & (0u - term)) - 1u);
            if (c)
                *colon = i + (size_t)__builtin_ctz(c);
        }
        if (term)
            return i + (size_t)__builtin_ctz(term);
        i += 16;
    }
#else
    for (; i < end; i++) {
        char c = b[i];
        if (c == '\n' || c == '\r' || c == '\0')
            return i;
        if (c == ':' && *colon == SIZE_MAX)
            *colon = i;
    }
#endif
    return whole_blocks ? SIZE_MAX : end;
}

/* The first line of a message says its kind, name hash and whether legacy
 * Command output follows. */
void parser_classify(ami_parser_t *p, const char *key, size_t klen, const char *val, size_t vlen);

/* Hand out the message parsed so far and start the next one. */
void parser_finish_message(ami_parser_t *p, ami_msg_t *msg);

/* One line by the general path (parser.c): 1 with *msg filled, 0 when more
 * bytes are needed, -1 on an error, PARSER_AGAIN to go on. */
#define PARSER_AGAIN 2
int parser_take_line(ami_parser_t *p, ami_msg_t *msg, ami_err_t *err);

#endif
