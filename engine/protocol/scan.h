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
 */
#ifndef AMI_PROTOCOL_SCAN_H
#define AMI_PROTOCOL_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/parser.h"

/* Readable bytes every classification needs from its start. */
#define AMI_SCAN_WIDTH 64u

typedef void (*ami_scan_fn)(const char *s, uint64_t *term, uint64_t *colon);

/* The classifier of a kind, or NULL if this CPU or build lacks it.
 * AMI_SCANNER_AUTO gives the fastest available one. */
ami_scan_fn ami_scan_impl(ami_scanner_t kind);

/* The kind AMI_SCANNER_AUTO picks on this CPU. */
ami_scanner_t ami_scan_best(void);

/* The classified 64 bytes the line scan is in: bits at and past lim are
 * cleared. Lives for one ami_parser_next call (the buffer cannot move
 * during it; the NULs written into parsed lines are all behind the scan,
 * which only moves forward). */
typedef struct ami_scan_block {
    size_t base;    /* buffer index of bit 0 */
    size_t lim;     /* first index the masks do not cover */
    uint64_t term;  /* LF, CR or NUL */
    uint64_t colon; /* ':' */
} ami_scan_block_t;

/* Classify the 64 bytes from i (i < end). The buffer has AMI_SCAN_WIDTH readable
 * bytes past its capacity, so the load may overrun `end` safely; the bits
 * from `end` on are dropped. */
static inline void ami_scan_load(const ami_parser_t *p, ami_scan_block_t *blk, size_t i, size_t end)
{
    p->scan_fn(p->buf + i, &blk->term, &blk->colon);
    blk->base = i;
    if (end - i < AMI_SCAN_WIDTH) {
        uint64_t keep = ((uint64_t)1 << (end - i)) - 1;
        blk->term &= keep;
        blk->colon &= keep;
        blk->lim = end;
    } else {
        blk->lim = i + AMI_SCAN_WIDTH;
    }
}

/* Scan one line from i: returns the index of its first NUL, CR or LF, or
 * `end` if none is buffered yet. Also records the first ':' before that byte
 * in *colon (left alone if already set). Each 64-byte block is classified
 * once and serves every line it holds (three or four of a typical event). */
static inline size_t ami_scan_line(const ami_parser_t *p, ami_scan_block_t *blk, size_t i, size_t end, size_t *colon)
{
    for (;;) {
        if (i >= blk->lim) {
            if (i >= end)
                return end;
            ami_scan_load(p, blk, i, end);
        }
        uint64_t above = ~(uint64_t)0 << (i - blk->base);
        uint64_t term = blk->term & above;
        if (*colon == SIZE_MAX) {
            uint64_t c = blk->colon & above & ((term & (0 - term)) - 1); /* below the first terminator */
            if (c)
                *colon = blk->base + (size_t)__builtin_ctzll(c);
        }
        if (term)
            return blk->base + (size_t)__builtin_ctzll(term);
        i = blk->lim;
    }
}

/* Take the ordinary header lines that follow a message's first line, as
 * take_header in parser.c would, and stop before anything else. */
void ami_scan_headers(ami_parser_t *p, ami_scan_block_t *blk);

#endif
