/*
 * ami_parser_next and the parser's fast path: the common line, with the
 * parser's state in locals (see take_common_lines). Any other line goes to
 * the general path, parser_take_line in parser.c. One file, so that the
 * loop and the fast path compile as one function.
 */
#include <string.h>

#include "protocol/parser.h"
#include "protocol/parser_internal.h"
#include "util/alloc.h"

/* "ActionID" in any case, eight bytes at once: OR-ing 0x20 into each byte
 * folds only the letters' capitals onto "actionid" (every byte of it is a
 * letter), which is ami_str_ieq's verdict for this name. */
static inline bool is_actionid_key(const char *key)
{
    uint64_t w, want;
    memcpy(&w, key, 8);
    memcpy(&want, "actionid", 8);
    return (w | 0x2020202020202020u) == want;
}

/* The common line: not the banner, not legacy Command output, "Key: Value"
 * ended by CRLF or LF, no NUL or lone CR, within max_line and max_message,
 * room in the header array; or the empty line that ends a message. Such
 * lines are taken here with the parser's state in locals: the terminator
 * stores are char stores, which may alias any field of *p, so state kept in
 * *p would be reloaded and stored again for every line. Any other line
 * stops the loop and is left untouched to the general path, which checks it
 * as it always did: the outcome is the general path's. Returns 1 at the
 * message's end (*msg filled), else 0. */
static int take_common_lines(ami_parser_t *p, ami_msg_t *msg)
{
    char *const buf = p->buf;
    const size_t end = p->end;
    const size_t start = p->start;
    const size_t max_line = p->lim.max_line;
    /* A terminator found before scan_end leaves next <= start + max_message:
     * max_message checked once per call, not per line. */
    const size_t scan_end = end < start + p->lim.max_message ? end : start + p->lim.max_message - 1;
    ami_hdr_t *const hdrs = p->hdrs;
    const size_t hdrs_cap = p->hdrs_cap;
    size_t scan = p->scan;
    size_t n = p->nhdrs;
    int32_t actionid_idx = p->actionid_idx;
    int done = 0;
    bool stop = false;
    while (!stop) {
        size_t colon = SIZE_MAX;
        size_t t = parser_scan(buf, scan, scan_end, &colon, true);
        if (t == SIZE_MAX)
            break;
        size_t next = t + 1;
        if (buf[t] != '\n') {
            if (buf[t] != '\r' || next == end || buf[next] != '\n')
                break;
            next++;
        }
        size_t len = t - scan;
        if (len > max_line)
            break;
        if (len == 0) {
            if (n == 0)
                break; /* a stray blank line: the general path moves start */
            scan = next;
            done = 1;
            break;
        }
        /* No ':' (SIZE_MAX) or an empty key: both wrap to at least len. */
        if (colon - scan - 1 >= len || n == hdrs_cap)
            break;
        size_t klen = colon - scan;
        size_t voff = klen + 1;
        if (voff < len && buf[colon + 1] == ' ')
            voff++;
        buf[colon] = '\0';
        buf[t] = '\0';
        if (__builtin_expect(n == 0, 0)) {
            parser_classify(p, buf + scan, klen, buf + scan + voff, len - voff);
            stop = p->in_legacy_output; /* "Response: Follows": raw lines follow */
        }
        if (klen == 8 && actionid_idx < 0 && is_actionid_key(buf + scan))
            actionid_idx = (int32_t)n;
        uint32_t off = (uint32_t)(scan - start);
        put_header(&hdrs[n++], off, (uint32_t)klen, off + (uint32_t)voff, (uint32_t)(len - voff));
        scan = next;
    }
    p->scan = scan;
    p->nhdrs = n;
    p->actionid_idx = actionid_idx;
    if (done)
        parser_finish_message(p, msg);
    return done;
}

/* After a huge message, give the header array back (the message it
 * described is invalid from this call on). */
static void shrink_headers(ami_parser_t *p)
{
    if (p->hdrs_cap <= PARSER_HDRS_KEEP || p->nhdrs != 0)
        return;
    ami_hdr_t *smaller = ami_realloc(p->hdrs, PARSER_HDRS_KEEP * sizeof *smaller);
    if (smaller) {
        p->hdrs = smaller;
        p->hdrs_cap = PARSER_HDRS_KEEP;
    }
}

int ami_parser_next(ami_parser_t *p, ami_msg_t *msg, ami_err_t *err)
{
    if (p->failed) {
        if (err)
            *err = p->error;
        return -1;
    }
    shrink_headers(p);
    for (;;) {
        if (!p->in_legacy_output && p->line_scanned == 0 && p->line_bad == AMI_BAD_NONE &&
            (p->nhdrs > 0 || p->banner_done || !p->expect_banner) && take_common_lines(p, msg))
            return 1;
        int rc = parser_take_line(p, msg, err);
        if (rc != PARSER_AGAIN)
            return rc;
    }
}
