/*
 * The request-head parser (see http_head.h): strict, because what it
 * accepts is all an attacker can make the endpoint act on.
 */
#include "obs/http_head.h"

#include <string.h>

bool http_is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static size_t token_len(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && http_is_tchar((unsigned char)p[i]))
        i++;
    return i;
}

size_t http_head_end(const char *p, size_t len, size_t *scan)
{
    for (size_t i = *scan; i < len; i++) {
        if (p[i] != '\n')
            continue;
        if (i + 1 < len && p[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n')
            return i + 3;
        if (i + 2 >= len) {
            *scan = i; /* the empty line may still be arriving */
            return 0;
        }
    }
    *scan = len;
    return 0;
}

/* The next line without its LF (and CR); false when no LF is left. */
static bool next_line(const char **cur, const char *end, http_span_t *line)
{
    const char *nl = memchr(*cur, '\n', (size_t)(end - *cur));
    if (!nl)
        return false;
    line->p = *cur;
    line->n = (size_t)(nl - *cur);
    if (line->n && line->p[line->n - 1] == '\r')
        line->n--;
    *cur = nl + 1;
    return true;
}

/* METHOD SP request-target SP HTTP/1.d, nothing more, nothing less. */
static int parse_request_line(http_span_t line, http_head_t *out)
{
    const char *p = line.p, *end = line.p + line.n;
    out->method = (http_span_t){p, token_len(p, line.n)};
    p += out->method.n;
    if (!out->method.n || p == end || *p++ != ' ')
        return -1;
    out->target.p = p;
    while (p < end && *p > ' ' && *p < 0x7f)
        p++;
    out->target.n = (size_t)(p - out->target.p);
    if (!out->target.n || p == end || *p++ != ' ')
        return -1;
    if (end - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
        return -1;
    out->minor = p[7] - '0';
    return 0;
}

/* field-name ":" field-value; a line starting with blanks has no name. */
static int parse_header(http_span_t line)
{
    size_t name = token_len(line.p, line.n);
    if (!name || name == line.n || line.p[name] != ':')
        return -1;
    for (size_t i = name + 1; i < line.n; i++) {
        unsigned char ch = (unsigned char)line.p[i];
        if ((ch < ' ' && ch != '\t') || ch == 0x7f)
            return -1;
    }
    return 0;
}

int http_head_parse(const char *p, size_t len, http_head_t *out)
{
    const char *cur = p, *end = p + len;
    http_span_t line;
    memset(out, 0, sizeof *out);
    if (!p || !next_line(&cur, end, &line) || parse_request_line(line, out) < 0)
        return -1;
    for (;;) {
        if (!next_line(&cur, end, &line))
            return -1;
        if (!line.n)
            return cur == end ? 0 : -1;
        if (parse_header(line) < 0)
            return -1;
        out->nheaders++;
    }
}
