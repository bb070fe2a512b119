/*
 * libFuzzer target for the HTTP endpoint's request-head parser
 * (engine/obs/http_head.c), the first code an HTTP client's bytes reach.
 *
 * Input layout: 1 byte seeding the split points, then the bytes a client
 * sends. Checked on every input:
 *   - http_head_end finds the same head whether the bytes arrive at once or
 *     in chunks (the endpoint scans as they arrive, resuming at *scan);
 *   - http_head_parse of any bytes never reads outside them, and what it
 *     accepts is well-formed by an independent reading of the grammar
 *     (request line of three fields, token method, visible-ASCII target,
 *     HTTP/1.d, header lines name:value without controls, one empty line
 *     ending exactly at the end), with the spans and counts it reports.
 * Any violation aborts with a description.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/http_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_http_head: invariant failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            abort();                                                          \
        }                                                                     \
    } while (0)

static bool tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    for (const char *p = extra; *p; p++)
        if ((unsigned char)*p == c)
            return true;
    return false;
}

/* Lines as the grammar sees them: [start, end) without the LF and one CR. */
typedef struct line {
    size_t start, end, next;
} line_t;

static bool line_at(const char *p, size_t len, size_t from, line_t *l)
{
    size_t i = from;
    while (i < len && p[i] != '\n')
        i++;
    if (i == len)
        return false;
    l->start = from;
    l->end = i > from && p[i - 1] == '\r' ? i - 1 : i;
    l->next = i + 1;
    return true;
}

static void check_request_line(const char *p, line_t l, const http_head_t *h)
{
    size_t sp1 = l.start;
    while (sp1 < l.end && p[sp1] != ' ')
        sp1++;
    size_t sp2 = sp1 + 1;
    while (sp2 < l.end && p[sp2] != ' ')
        sp2++;
    CHECK(sp1 < l.end && sp2 < l.end, "fewer than three fields accepted");
    CHECK(h->method.p == p + l.start && h->method.n == sp1 - l.start, "method span");
    CHECK(h->target.p == p + sp1 + 1 && h->target.n == sp2 - sp1 - 1, "target span");
    CHECK(h->method.n > 0 && h->target.n > 0, "empty method or target accepted");
    for (size_t i = 0; i < h->method.n; i++)
        CHECK(tchar((unsigned char)h->method.p[i]), "method byte 0x%02x", (unsigned char)h->method.p[i]);
    for (size_t i = 0; i < h->target.n; i++) {
        unsigned char c = (unsigned char)h->target.p[i];
        CHECK(c > 0x20 && c < 0x7f, "target byte 0x%02x", c);
    }
    const char *v = p + sp2 + 1;
    CHECK(l.end - (sp2 + 1) == 8 && memcmp(v, "HTTP/1.", 7) == 0 && v[7] >= '0' && v[7] <= '9',
          "version \"%.*s\"", (int)(l.end - sp2 - 1), v);
    CHECK(h->minor == v[7] - '0', "minor %d", h->minor);
}

static void check_header_line(const char *p, line_t l)
{
    size_t colon = l.start;
    while (colon < l.end && p[colon] != ':')
        colon++;
    CHECK(colon < l.end && colon > l.start, "header line without a name and ':'");
    for (size_t i = l.start; i < colon; i++)
        CHECK(tchar((unsigned char)p[i]), "header name byte 0x%02x", (unsigned char)p[i]);
    for (size_t i = colon + 1; i < l.end; i++) {
        unsigned char c = (unsigned char)p[i];
        CHECK(c == '\t' || (c >= 0x20 && c != 0x7f), "header value byte 0x%02x", c);
    }
}

/* What http_head_parse accepted must be exactly one well-formed head. */
static void check_accepted(const char *p, size_t len, const http_head_t *h)
{
    line_t l;
    CHECK(line_at(p, len, 0, &l), "no request line");
    check_request_line(p, l, h);
    size_t headers = 0;
    for (;;) {
        CHECK(line_at(p, len, l.next, &l), "no empty line");
        if (l.start == l.end)
            break;
        check_header_line(p, l);
        headers++;
    }
    CHECK(l.next == len, "bytes after the empty line: %zu of %zu", l.next, len);
    CHECK(h->nheaders == headers, "nheaders %zu, counted %zu", h->nheaders, headers);
}

static size_t head_end_chunked(const char *p, size_t len, uint8_t seed)
{
    size_t scan = 0, have = 0;
    uint32_t s = seed * 2654435761u + 1;
    while (have < len) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        size_t step = 1 + s % (seed & 1 ? 3 : 64);
        have = have + step < len ? have + step : len;
        size_t end = http_head_end(p, have, &scan);
        if (end)
            return end;
        CHECK(scan <= have, "scan %zu past %zu bytes", scan, have);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t seed = data[0];
    size_t len = size - 1;
    /* a copy of exactly len bytes, so ASan sees any read past them */
    char *p = malloc(len ? len : 1);
    CHECK(p != NULL, "oom");
    memcpy(p, data + 1, len);

    size_t scan = 0;
    size_t end = http_head_end(p, len, &scan);
    CHECK(end <= len, "end %zu past %zu", end, len);
    CHECK(head_end_chunked(p, len, seed) == end, "the head ends elsewhere when it arrives in chunks");

    http_head_t h;
    if (end) {
        CHECK(p[end - 1] == '\n', "the head does not end in LF");
        if (http_head_parse(p, end, &h) == 0)
            check_accepted(p, end, &h);
    }
    if (http_head_parse(p, len, &h) == 0) { /* any bytes at all */
        check_accepted(p, len, &h);
        CHECK(end == len, "accepted %zu bytes, but the head ends at %zu", len, end);
    }
    free(p);
    return 0;
}
