#include "protocol/parser.h"
#include "protocol/parser_internal.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"

#define DEFAULT_MAX_LINE (64u << 10)
#define DEFAULT_MAX_HEADERS 131072u
#define DEFAULT_MAX_MESSAGE (4u << 20)
#define INITIAL_BUF (16u << 10)
#define INITIAL_HDRS 64u
/* Readable bytes past the capacity, for parser_scan's 16-byte loads. */
#define SCAN_PAD 16u
/* Room for one read beyond the largest message: the buffer's hard bound. */
#define READ_SLACK (256u << 10)
/* After a burst, give memory back once the buffer is empty. */
#define SHRINK_ABOVE (512u << 10)

#define BANNER_PREFIX "Asterisk Call Manager"
#define END_COMMAND "--END COMMAND--"


void ami_parser_limits_default(ami_parser_limits_t *lim)
{
    lim->max_line = DEFAULT_MAX_LINE;
    lim->max_headers = DEFAULT_MAX_HEADERS;
    lim->max_message = DEFAULT_MAX_MESSAGE;
}

static size_t buffer_bound(const ami_parser_t *p)
{
    return p->lim.max_message + READ_SLACK;
}

int ami_parser_init(ami_parser_t *p, const ami_parser_limits_t *lim)
{
    memset(p, 0, sizeof *p);
    ami_parser_limits_default(&p->lim);
    if (lim) {
        if (lim->max_line)
            p->lim.max_line = lim->max_line;
        if (lim->max_headers)
            p->lim.max_headers = lim->max_headers;
        if (lim->max_message)
            p->lim.max_message = lim->max_message;
    }
    /* Offsets are 32-bit; key_off values near UINT32_MAX are reserved. */
    if (p->lim.max_message > (UINT32_MAX >> 1) || p->lim.max_line > p->lim.max_message)
        return -1;
    p->expect_banner = true;
    p->actionid_idx = -1;
    p->line_colon = SIZE_MAX;
    return 0;
}

void ami_parser_deinit(ami_parser_t *p)
{
    ami_free(p->buf);
    ami_free(p->hdrs);
    p->buf = NULL;
    p->hdrs = NULL;
    p->cap = p->hdrs_cap = 0;
}

static void begin_message(ami_parser_t *p)
{
    p->nhdrs = 0;
    p->msg_bad_lines = 0;
    p->name_hash = 0;
    p->actionid_idx = -1;
    p->kind = AMI_MSG_OTHER;
    p->in_legacy_output = false;
    p->legacy_ended = false;
}

void ami_parser_reset(ami_parser_t *p)
{
    p->start = p->scan = p->end = 0;
    p->line_scanned = 0;
    p->line_colon = SIZE_MAX;
    p->line_bad = AMI_BAD_NONE;
    p->banner_done = false;
    p->failed = false;
    ami_err_clear(&p->error);
    begin_message(p);
    if (p->cap > SHRINK_ABOVE) {
        ami_free(p->buf);
        p->buf = NULL;
        p->cap = 0;
    }
}

void ami_parser_expect_banner(ami_parser_t *p, bool expect)
{
    p->expect_banner = expect;
}

size_t ami_parser_buffered(const ami_parser_t *p)
{
    return p->end - p->start;
}

/* Move the unparsed tail to the front. Header offsets are relative to
 * p->start, so a message in progress survives the move. */
static void compact(ami_parser_t *p)
{
    if (p->start == 0)
        return;
    size_t live = p->end - p->start;
    if (live)
        memmove(p->buf, p->buf + p->start, live);
    p->scan -= p->start;
    p->end = live;
    p->start = 0;
}

static bool ensure_room(ami_parser_t *p, size_t want)
{
    if (p->start == p->end && p->cap > SHRINK_ABOVE) {
        ami_free(p->buf);
        p->buf = NULL;
        p->cap = 0;
        p->start = p->scan = p->end = 0;
        p->line_scanned = 0;
        p->line_colon = SIZE_MAX;
    }
    if (p->cap - p->end >= want)
        return true;
    compact(p);
    if (p->cap - p->end >= want)
        return true;
    size_t bound = buffer_bound(p);
    size_t need = p->end + want;
    if (need > bound)
        need = bound;
    if (need <= p->cap)
        return p->cap > p->end;
    size_t cap = p->cap ? p->cap : INITIAL_BUF;
    while (cap < need)
        cap *= 2;
    if (cap > bound)
        cap = bound;
    char *grown = ami_realloc(p->buf, cap + SCAN_PAD);
    if (!grown)
        return p->cap > p->end;
    p->buf = grown;
    p->cap = cap;
    return true;
}

size_t ami_parser_footprint(const ami_parser_t *p)
{
    return (p->buf ? p->cap + SCAN_PAD : 0) + p->hdrs_cap * sizeof *p->hdrs;
}

char *ami_parser_reserve(ami_parser_t *p, size_t want, size_t *got)
{
    if (want == 0)
        want = 1;
    if (!ensure_room(p, want)) {
        *got = 0;
        return NULL;
    }
    size_t room = p->cap - p->end;
    *got = room < want ? room : want;
    return p->buf + p->end;
}

void ami_parser_commit(ami_parser_t *p, size_t n)
{
    if (n > p->cap - p->end)
        n = p->cap - p->end;
    p->end += n;
}

int ami_parser_feed(ami_parser_t *p, const void *data, size_t len, ami_err_t *err)
{
    if (p->failed) {
        if (err)
            *err = p->error;
        return -1;
    }
    /* All or nothing: a caller that drains and retries must not duplicate bytes. */
    if (len > buffer_bound(p) - ami_parser_buffered(p))
        return ami_err_set(err, AMI_E_LIMIT,
                           "parser buffer full (%zu bytes buffered, %zu more offered, bound %zu): "
                           "drain messages with ami_parser_next before feeding more",
                           ami_parser_buffered(p), len, buffer_bound(p));
    size_t got;
    char *dst = ami_parser_reserve(p, len, &got);
    if (!dst || got < len)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory growing the parser buffer to %zu bytes",
                           ami_parser_buffered(p) + len);
    memcpy(dst, data, len);
    ami_parser_commit(p, len);
    return 0;
}

/* Printable excerpt of a line for error messages. */
static void excerpt(char *out, size_t out_size, const char *s, size_t n)
{
    size_t max = out_size - 4;
    size_t i = 0;
    for (; i < n && i < max; i++)
        out[i] = isprint((unsigned char)s[i]) ? s[i] : '.';
    if (i < n) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

static int fail(ami_parser_t *p, ami_err_t *err, ami_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(ami_parser_t *p, ami_err_t *err, ami_status_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    p->error.code = code;
    vsnprintf(p->error.msg, sizeof p->error.msg, fmt, ap);
    va_end(ap);
    p->failed = true;
    p->stats.errors++;
    if (err)
        *err = p->error;
    return -1;
}

#define SNIPPET(name, s, n)  \
    char name[40];           \
    excerpt(name, sizeof name, (s), (n))

static int grow_headers(ami_parser_t *p, ami_err_t *err)
{
    if (p->nhdrs >= p->lim.max_headers)
        return fail(p, err, AMI_E_LIMIT,
                    "message has more than max_headers (%zu) headers; "
                    "raise the parser's max_headers if this server really sends that",
                    p->lim.max_headers);
    size_t cap = p->hdrs_cap ? p->hdrs_cap * 2 : INITIAL_HDRS;
    if (cap > p->lim.max_headers)
        cap = p->lim.max_headers;
    ami_hdr_t *grown = ami_realloc(p->hdrs, cap * sizeof *grown);
    if (!grown)
        return fail(p, err, AMI_E_NOMEM, "out of memory growing the header array to %zu", cap);
    p->hdrs = grown;
    p->hdrs_cap = cap;
    return 0;
}

/* Inline: it runs once per line; growing is the rare, out-of-line case. */
static inline int push_header(ami_parser_t *p, ami_err_t *err, uint32_t key_off, uint32_t key_len,
                              uint32_t val_off, uint32_t val_len)
{
    if (__builtin_expect(p->nhdrs == p->hdrs_cap, 0) && grow_headers(p, err) < 0)
        return -1;
    put_header(&p->hdrs[p->nhdrs++], key_off, key_len, val_off, val_len);
    return 0;
}

void parser_finish_message(ami_parser_t *p, ami_msg_t *msg)
{
    msg->kind = (ami_msg_kind_t)p->kind;
    msg->base = p->buf + p->start;
    msg->hdrs = p->hdrs;
    msg->nhdrs = p->nhdrs;
    msg->wire_len = p->scan - p->start;
    msg->actionid_idx = p->actionid_idx;
    msg->legacy_command = p->in_legacy_output;
    msg->name_hash = p->name_hash;
    msg->bad_lines = p->msg_bad_lines;
    p->stats.messages++;
    p->stats.bytes += msg->wire_len;
    p->start = p->scan;
    begin_message(p);
}

static int take_banner(ami_parser_t *p, ami_err_t *err, char *line, size_t len, ami_msg_t *msg)
{
    size_t plen = sizeof BANNER_PREFIX - 1;
    if (len < plen || memcmp(line, BANNER_PREFIX, plen) != 0) {
        SNIPPET(snippet, line, len);
        return fail(p, err, AMI_E_PROTOCOL,
                    "expected the AMI banner \"Asterisk Call Manager/x.y.z\" first, got \"%s\"; "
                    "is this port an AMI listener?",
                    snippet);
    }
    line[len] = '\0';
    uint32_t off = (uint32_t)(line - (p->buf + p->start));
    if (push_header(p, err, AMI_HDR_KEY_BANNER, 6, off, (uint32_t)len) < 0)
        return -1;
    p->kind = AMI_MSG_BANNER;
    p->banner_done = true;
    parser_finish_message(p, msg);
    return 1;
}

static bool is_end_command(const char *line, size_t len, size_t *output_len)
{
    size_t elen = sizeof END_COMMAND - 1;
    if (len < elen || memcmp(line + len - elen, END_COMMAND, elen) != 0)
        return false;
    *output_len = len - elen;
    return true;
}

/* ami_str_ieq against a literal of 4 to 8 letters given in lower case, as
 * two overlapping 4-byte words: OR-ing 0x20 into a byte maps it onto a
 * lower-case letter only from that letter or its capital. Once a message. */
static inline bool ieq_letters(const char *s, size_t n, const char *lower, size_t lower_len)
{
    if (n != lower_len)
        return false;
    uint32_t head, tail, want_head, want_tail;
    memcpy(&head, s, 4);
    memcpy(&tail, s + n - 4, 4);
    memcpy(&want_head, lower, 4);
    memcpy(&want_tail, lower + n - 4, 4);
    return ((head | 0x20202020u) == want_head) & ((tail | 0x20202020u) == want_tail);
}

void parser_classify(ami_parser_t *p, const char *key, size_t klen, const char *val, size_t vlen)
{
    p->name_hash = ami_name_hash(val, vlen);
    if (ieq_letters(key, klen, "response", 8)) {
        p->kind = AMI_MSG_RESPONSE;
        p->in_legacy_output = ieq_letters(val, vlen, "follows", 7);
    } else if (ieq_letters(key, klen, "event", 5)) {
        p->kind = AMI_MSG_EVENT;
    } else {
        p->kind = AMI_MSG_OTHER;
    }
}

/* A malformed line inside a message whose first line was good: bad data
 * of that message, not a lost stream. Dropped, counted, described. */
static int drop_line(ami_parser_t *p, ami_bad_kind_t kind, const char *line, size_t len)
{
    p->msg_bad_lines++;
    p->stats.bad_lines++;
    p->last_bad.kind = kind;
    p->last_bad.line = p->nhdrs + p->msg_bad_lines;
    excerpt(p->last_bad.excerpt, sizeof p->last_bad.excerpt, line, len);
    return 0;
}

/* A legacy output line is an Output header, except for the ActionID and
 * Privilege headers that precede the output. */
static int take_legacy_line(ami_parser_t *p, ami_err_t *err, char *line, size_t len, size_t colon_at)
{
    uint32_t off = (uint32_t)(line - (p->buf + p->start));
    size_t out_len;
    if (is_end_command(line, len, &out_len)) {
        p->legacy_ended = true;
        if (out_len == 0)
            return 0;
        len = out_len;
    }
    line[len] = '\0';
    char *colon = colon_at < len ? line + colon_at : NULL;
    if (colon && !p->legacy_ended) {
        size_t klen = (size_t)(colon - line);
        bool known = ami_str_ieq(line, klen, "ActionID", 8) || ami_str_ieq(line, klen, "Privilege", 9);
        bool before_output = p->nhdrs == 0 ||
                             p->hdrs[p->nhdrs - 1].key_off != AMI_HDR_KEY_OUTPUT;
        if (known && before_output) {
            size_t voff = klen + 1;
            if (voff < len && line[voff] == ' ')
                voff++;
            *colon = '\0';
            if (klen == 8 && p->actionid_idx < 0)
                p->actionid_idx = (int32_t)p->nhdrs;
            return push_header(p, err, off, (uint32_t)klen, off + (uint32_t)voff,
                               (uint32_t)(len - voff));
        }
    }
    return push_header(p, err, AMI_HDR_KEY_OUTPUT, 6, off, (uint32_t)len);
}

static int take_header(ami_parser_t *p, ami_err_t *err, char *line, size_t len, size_t colon_at)
{
    char *colon = colon_at < len ? line + colon_at : NULL;
    if (!colon || colon == line) {
        if (p->nhdrs > 0)
            return drop_line(p, colon ? AMI_BAD_EMPTY_KEY : AMI_BAD_NO_COLON, line, len);
        SNIPPET(snippet, line, len);
        return fail(p, err, AMI_E_PROTOCOL,
                    "line 1 of a message %s (\"%s\"); the stream is not AMI or is out of sync",
                    colon ? "has an empty key" : "has no ':' separator", snippet);
    }
    size_t klen = (size_t)(colon - line);
    size_t voff = klen + 1;
    if (voff < len && line[voff] == ' ')
        voff++;
    *colon = '\0';
    line[len] = '\0';
    if (p->nhdrs == 0)
        parser_classify(p, line, klen, line + voff, len - voff);
    if (klen == 8 && (line[0] | 0x20) == 'a' && p->actionid_idx < 0 && ami_str_ieq(line, klen, "ActionID", 8))
        p->actionid_idx = (int32_t)p->nhdrs;
    uint32_t off = (uint32_t)(line - (p->buf + p->start));
    return push_header(p, err, off, (uint32_t)klen, off + (uint32_t)voff, (uint32_t)(len - voff));
}

static int line_too_long(ami_parser_t *p, ami_err_t *err, const char *line, size_t len)
{
    SNIPPET(snippet, line, len);
    return fail(p, err, AMI_E_LIMIT,
                "line %zu of a message is longer than max_line (%zu bytes; starts \"%s\")",
                p->nhdrs + 1, p->lim.max_line, snippet);
}

static int message_too_big(ami_parser_t *p, ami_err_t *err)
{
    return fail(p, err, AMI_E_LIMIT,
                "message larger than max_message (%zu bytes) after %zu headers",
                p->lim.max_message, p->nhdrs);
}

/* No complete line is buffered: fail if the partial line or message already
 * passed a bound, so a peer cannot make us buffer without limit. */
static int check_partial(ami_parser_t *p, ami_err_t *err)
{
    size_t partial_line = p->end - p->scan;
    if (partial_line > p->lim.max_line + 1)
        return line_too_long(p, err, p->buf + p->scan, partial_line);
    if (p->end - p->start > p->lim.max_message)
        return message_too_big(p, err);
    return 0;
}

static int take_line(ami_parser_t *p, ami_err_t *err, char *line, size_t len, size_t colon_at,
                     ami_msg_t *msg)
{
    if (p->line_bad) {
        ami_bad_kind_t kind = (ami_bad_kind_t)p->line_bad;
        p->line_bad = AMI_BAD_NONE;
        return drop_line(p, kind, line, len);
    }
    if (len == 0) {
        if (p->in_legacy_output && !p->legacy_ended) {
            line[0] = '\0'; /* the CR or LF: an empty C string */
            return push_header(p, err, AMI_HDR_KEY_OUTPUT, 6,
                               (uint32_t)(line - (p->buf + p->start)), 0);
        }
        if (p->nhdrs == 0) {
            p->start = p->scan; /* a stray blank line between messages */
            return 0;
        }
        parser_finish_message(p, msg);
        return 1;
    }
    if (p->expect_banner && !p->banner_done && p->nhdrs == 0)
        return take_banner(p, err, line, len, msg);
    if (p->in_legacy_output && !p->legacy_ended)
        return take_legacy_line(p, err, line, len, colon_at);
    return take_header(p, err, line, len, colon_at);
}

/* A NUL or a CR not followed by LF at index t. Inside a message whose first
 * line was good, it marks the line bad (dropped when it ends; scanning goes
 * on after the byte). On the first line of a message the stream is out of
 * sync: a protocol error. */
static int bad_byte(ami_parser_t *p, ami_err_t *err, size_t t, size_t colon, bool nul)
{
    if (p->nhdrs > 0) {
        if (!p->line_bad)
            p->line_bad = nul ? AMI_BAD_NUL : AMI_BAD_LONE_CR;
        p->line_scanned = t + 1 - p->scan;
        p->line_colon = colon == SIZE_MAX ? SIZE_MAX : colon - p->scan;
        return 0;
    }
    const char *line = p->buf + p->scan;
    size_t len = t - p->scan;
    SNIPPET(snippet, line, len);
    if (nul)
        return fail(p, err, AMI_E_PROTOCOL,
                    "NUL byte in line %zu of a message (after \"%s\"); AMI is text: the stream is corrupt",
                    p->nhdrs + 1, snippet);
    return fail(p, err, AMI_E_PROTOCOL,
                "CR not followed by LF in line %zu of a message (after \"%s\"); "
                "AMI lines end with CRLF or LF",
                p->nhdrs + 1, snippet);
}

/* Remember how far the partial line was checked, so a line that arrives a
 * byte at a time is scanned once, not once per byte. */
static int need_more(ami_parser_t *p, ami_err_t *err, size_t scanned_to, size_t colon)
{
    p->line_scanned = scanned_to - p->scan;
    p->line_colon = colon == SIZE_MAX ? SIZE_MAX : colon - p->scan;
    return check_partial(p, err);
}

/* One line by the general path, every check and every error (return codes:
 * parser_internal.h). A bad byte inside a message returns PARSER_AGAIN with
 * the partial line's scan state kept: the next call goes on after it. */
int parser_take_line(ami_parser_t *p, ami_msg_t *msg, ami_err_t *err)
{
    size_t colon = p->line_colon == SIZE_MAX ? SIZE_MAX : p->scan + p->line_colon;
    size_t t = parser_scan(p->buf, p->scan + p->line_scanned, p->end, &colon, false);
    if (t == p->end)
        return need_more(p, err, t, colon);
    char *line = p->buf + p->scan;
    size_t len = t - p->scan;
    size_t next = t + 1;
    if (p->buf[t] == '\r') {
        if (t + 1 == p->end)
            return need_more(p, err, t, colon);
        if (p->buf[t + 1] != '\n')
            return bad_byte(p, err, t, colon, false) < 0 ? -1 : PARSER_AGAIN;
        next = t + 2;
    } else if (p->buf[t] == '\0') {
        return bad_byte(p, err, t, colon, true) < 0 ? -1 : PARSER_AGAIN;
    }
    p->scan = next;
    p->line_scanned = 0;
    p->line_colon = SIZE_MAX;
    if (len > p->lim.max_line)
        return line_too_long(p, err, line, len);
    if (p->scan - p->start > p->lim.max_message)
        return message_too_big(p, err);
    size_t colon_at = colon == SIZE_MAX ? SIZE_MAX : colon - (size_t)(line - p->buf);
    int rc = take_line(p, err, line, len, colon_at, msg);
    return rc == 0 ? PARSER_AGAIN : rc;
}

const ami_parser_bad_t *ami_parser_last_bad(const ami_parser_t *p)
{
    return &p->last_bad;
}

const char *ami_bad_kind_name(ami_bad_kind_t kind)
{
    switch (kind) {
    case AMI_BAD_NO_COLON: return "no ':' separator";
    case AMI_BAD_EMPTY_KEY: return "empty key";
    case AMI_BAD_NUL: return "NUL byte";
    case AMI_BAD_LONE_CR: return "CR not followed by LF";
    default: return "none";
    }
}
