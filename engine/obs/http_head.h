/*
 * The HTTP endpoint's request-head parser (private to obs/http*.c and its
 * fuzz target): pure functions over bytes, no socket, no allocation, no
 * state but what the caller passes in. Any bytes may be given to either
 * function; neither reads outside p[0..len).
 *
 * What is accepted, and nothing else: a request line
 * `METHOD SP request-target SP HTTP/1.d`, then header lines `name:value`
 * (name a token, value visible text, spaces, tabs and obs-text: no CR, LF,
 * NUL or other controls), then an empty line. Lines end in LF, optionally
 * preceded by one CR. A line starting with blanks (obsolete folding) is
 * refused, as is anything after the blank line: the head passed to
 * http_head_parse is exactly what http_head_end measured.
 *
 * The spans returned point into the caller's bytes: valid as long as they.
 * Any thread (no shared state).
 */
#ifndef AMI_OBS_HTTP_HEAD_H
#define AMI_OBS_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>

typedef struct http_span {
    const char *p;
    size_t n;
} http_span_t;

typedef struct http_head {
    http_span_t method;  /* a token: case-sensitive, as sent */
    http_span_t target;  /* visible ASCII, no spaces */
    int minor;           /* the d of HTTP/1.d */
    size_t nheaders;
} http_head_t;

/* Length of the head in p[0..len) through its empty line, or 0 while that
 * line has not arrived. *scan (0 at first) is where the search resumes, so
 * a head that arrives a byte at a time is still scanned once in total. */
size_t http_head_end(const char *p, size_t len, size_t *scan);

/* Parse the head p[0..len): 0 and *out, or -1 if it is malformed (or is
 * not exactly one head ending in its empty line). */
int http_head_parse(const char *p, size_t len, http_head_t *out);

/* A token character (RFC 9110 tchar). */
bool http_is_tchar(unsigned char ch);

#endif
