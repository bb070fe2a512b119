/*
 * A growable byte buffer with a hard limit.
 *
 * Used for outgoing action bytes, rendered metrics and log lines. Growth
 * stops at `limit`: an append that would pass it fails with AMI_E_LIMIT and
 * leaves the buffer unchanged, so a caller can refuse work instead of
 * growing without bound. limit 0 means "no limit" (only for tools and tests).
 * The buffer owns `data`; ami_buf_deinit frees it.
 */
#ifndef AMI_UTIL_BUF_H
#define AMI_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct ami_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t limit;
} ami_buf_t;

void ami_buf_init(ami_buf_t *b, size_t limit);
void ami_buf_deinit(ami_buf_t *b);

/* Make room for `extra` more bytes. 0, or -1 past the limit or out of memory. */
int ami_buf_reserve(ami_buf_t *b, size_t extra);
int ami_buf_append(ami_buf_t *b, const void *p, size_t n);
int ami_buf_append_str(ami_buf_t *b, const char *s);
int ami_buf_printf(ami_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ami_buf_vprintf(ami_buf_t *b, const char *fmt, va_list ap);

/* Drop the first n bytes (n > len drops all). */
void ami_buf_consume(ami_buf_t *b, size_t n);
/* Forget the content, keep the memory. */
static inline void ami_buf_clear(ami_buf_t *b) { b->len = 0; }
/* Give back memory above `keep` bytes of capacity (after a burst). */
void ami_buf_shrink(ami_buf_t *b, size_t keep);

#endif
