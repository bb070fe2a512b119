#include "util/buf.h"

#include <stdio.h>
#include <string.h>

#include "util/alloc.h"

void ami_buf_init(ami_buf_t *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit;
}

void ami_buf_deinit(ami_buf_t *b)
{
    ami_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int ami_buf_reserve(ami_buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return -1;
    size_t need = b->len + extra;
    if (b->limit && need > b->limit)
        return -1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (b->limit && cap > b->limit)
        cap = b->limit;
    char *p = ami_realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int ami_buf_append(ami_buf_t *b, const void *p, size_t n)
{
    if (ami_buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int ami_buf_append_str(ami_buf_t *b, const char *s)
{
    return ami_buf_append(b, s, strlen(s));
}

int ami_buf_vprintf(ami_buf_t *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n < 0) {
        va_end(again);
        return -1;
    }
    if ((size_t)n < sizeof small) {
        va_end(again);
        return ami_buf_append(b, small, (size_t)n);
    }
    if (ami_buf_reserve(b, (size_t)n + 1) < 0) {
        va_end(again);
        return -1;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
    va_end(again);
    b->len += (size_t)n;
    return 0;
}

int ami_buf_printf(ami_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = ami_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void ami_buf_consume(ami_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void ami_buf_shrink(ami_buf_t *b, size_t keep)
{
    if (b->cap <= keep || b->len > keep)
        return;
    if (keep == 0) {
        ami_free(b->data);
        b->data = NULL;
        b->cap = 0;
        return;
    }
    char *p = ami_realloc(b->data, keep);
    if (p) {
        b->data = p;
        b->cap = keep;
    }
}
