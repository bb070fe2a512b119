/*
 * How the parser finds lines: a byte classifier that tells, for 64 bytes at
 * once, which ones end a line (LF, CR, NUL) and which are ':', and the line
 * scanning built on it. Private to engine/protocol (parser.c is its only
 * user); no allocation, any thread (each parser is used by one at a time).
 *
 * Several classifiers give the same answer: a plain C loop (any CPU), SSE2
 * (every x86-64), AVX2 and AVX-512BW (when the CPU has them, checked at run
 * time). The parser's buffer keeps AMI_SCAN_WIDTH readable bytes past its
 * capacity, so a classification may run past the data; bits for bytes past
 * the data are dropped.
 *
 * Lines are found in bitmasks of a window of classified bytes, 64 bits at a
 * time from any offset: a line shorter than 64 bytes is found without a
 * branch on where the blocks fall (a branch that a CPU cannot predict).
 */
#ifndef AMI_PROTOCOL_SCAN_H
#define AMI_PROTOCOL_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/parser.h"

/* Readable bytes every classification needs from its start. */
#define AMI_SCAN_WIDTH 64u
/* Blocks of AMI_SCAN_WIDTH bytes classified at once. */
#define AMI_SCAN_BLOCKS 8u

/* Classify n blocks from s: bit j of term[k] (colon[k]) tells whether byte
 * 64 * k + j is LF, CR or NUL (':'). */
typedef void (*ami_scan_fn)(const char *s, size_t n, uint64_t *term, uint64_t *colon);

/* The classifier of a kind, or NULL if this CPU or build lacks it.
 * AMI_SCANNER_AUTO gives the fastest available one. */
ami_scan_fn ami_scan_impl(ami_scanner_t kind);

/* The kind AMI_SCANNER_AUTO picks on this CPU. */
ami_scanner_t ami_scan_best(void);

/* A window of up to 512 classified bytes ahead of the scan: bits from lim
 * on are clear, and a zero block follows the last one, so the 64 bits from
 * any index inside the window can be read without a branch. Lives for one
 * ami_parser_next call (the buffer cannot move during it; the NULs written
 * into parsed lines are all behind the scan, which only moves forward). */
typedef struct ami_scan_win {
    size_t base; /* buffer index of bit 0 of block 0 */
    size_t lim;  /* first index not classified */
    uint64_t term[AMI_SCAN_BLOCKS + 1];
    uint64_t colon[AMI_SCAN_BLOCKS + 1];
} ami_scan_win_t;

/* Classify from i (i < end) as far as the window reaches. The buffer has
 * AMI_SCAN_WIDTH readable bytes past its capacity, so the last block may
 * run past `end` safely; its bits from `end` on are dropped. */
static inline void ami_scan_fill(const ami_parser_t *p, ami_scan_win_t *w, size_t i, size_t end)
{
    size_t avail = end - i;
    size_t n = avail >= AMI_SCAN_BLOCKS * AMI_SCAN_WIDTH ? AMI_SCAN_BLOCKS : (avail + AMI_SCAN_WIDTH - 1) / AMI_SCAN_WIDTH;
    p->scan_fn(p->buf + i, n, w->term, w->colon);
    w->base = i;
    w->lim = i + (avail < n * AMI_SCAN_WIDTH ? avail : n * AMI_SCAN_WIDTH);
    size_t tail = (w->lim - i) % AMI_SCAN_WIDTH;
    if (tail) {
        uint64_t keep = ((uint64_t)1 << tail) - 1;
        w->term[n - 1] &= keep;
        w->colon[n - 1] &= keep;
    }
    w->term[n] = w->colon[n] = 0;
}

/* The 64 bits of mask m from index i (base <= i < lim). */
static inline uint64_t ami_scan_bits(const ami_scan_win_t *w, const uint64_t *m, size_t i)
{
    size_t o = i - w->base;
    unsigned k = (unsigned)(o / AMI_SCAN_WIDTH), b = (unsigned)(o % AMI_SCAN_WIDTH);
    return (m[k] >> b) | ((m[k + 1] << 1) << (63 - b));
}

/* Scan one line from i: returns the index of its first NUL, CR or LF, or
 * `end` if none is buffered yet. Also records the first ':' before that byte
 * in *colon (left alone if already set). */
static inline size_t ami_scan_line(const ami_parser_t *p, ami_scan_win_t *w, size_t i, size_t end, size_t *colon)
{
    for (;;) {
        if (i >= w->lim || i < w->base) {
            if (i >= end)
                return end;
            ami_scan_fill(p, w, i, end);
        }
        uint64_t term = ami_scan_bits(w, w->term, i);
        if (*colon == SIZE_MAX) {
            uint64_t c = ami_scan_bits(w, w->colon, i) & ((term & (0 - term)) - 1); /* before the first end */
            if (c)
                *colon = i + (size_t)__builtin_ctzll(c);
        }
        if (term)
            return i + (size_t)__builtin_ctzll(term);
        i = w->lim - i < AMI_SCAN_WIDTH ? w->lim : i + AMI_SCAN_WIDTH;
    }
}

/* Take the ordinary header lines that follow a message's first line, as
 * take_header in parser.c would, and stop before anything else. */
void ami_scan_headers(ami_parser_t *p, ami_scan_win_t *w);

#endif
