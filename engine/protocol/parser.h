/*
 * The AMI reader: bytes in, messages out. No sockets, no loop, no Lua.
 *
 * Incremental: feed bytes in chunks of any size (or read straight into the
 * parser's buffer with reserve/commit), then call ami_parser_next until it
 * returns 0 (needs more bytes). Resumable: a message split across reads is
 * not re-scanned from its start.
 *
 *   ami_parser_t p;
 *   ami_parser_init(&p, NULL);                 // default limits
 *   ami_parser_feed(&p, bytes, n, &err);
 *   ami_msg_t m;
 *   while ((rc = ami_parser_next(&p, &m, &err)) == 1) use(&m);
 *   if (rc < 0) close_and_reconnect(err.msg);  // sticky until reset
 *
 * What it accepts (the real server's framing, plus field leniency):
 *   - the banner line "Asterisk Call Manager/x.y.z" first (when expected);
 *   - "Key: Value" lines ended by CRLF or a bare LF; a message ends at an
 *     empty line; extra empty lines between messages are skipped;
 *   - values split at the first ':' with one following space dropped, so
 *     values may hold ": " and keep meaningful leading blanks (Command output);
 *   - a header with no value ("ReportBlock:"), an empty value ("Key: ");
 *   - legacy Command output ("Response: Follows", raw lines, "--END COMMAND--"):
 *     each raw line becomes an "Output" header, as in the modern form.
 * What it drops, and reports (the stream stays usable): a malformed line
 * inside a message whose first line was good -- a line without ':' or with
 * an empty key, or holding a NUL byte or a CR not followed by LF. That is
 * bad data of that message (any peer allowed to send UserEvent can relay
 * such a line), not a lost stream: the line is left out of the message,
 * msg->bad_lines and stats.bad_lines count it, and ami_parser_last_bad
 * describes the latest one. Bounds still apply to it.
 * What it refuses, with AMI_E_PROTOCOL or AMI_E_LIMIT and a clear message
 * (framing is lost or a bound exceeded: close and re-establish):
 *   - a first line of a message that is not "Key: Value" (no ':', an empty
 *     key, a NUL or a lone CR), garbage where the banner should be;
 *   - a line longer than max_line, more than max_headers headers, a message
 *     larger than max_message.
 * Errors are sticky: next() keeps returning -1 until ami_parser_reset().
 * The parser never logs: its caller counts and logs what it reports.
 *
 * Memory: one buffer (grows up to about max_message + the read size) and one
 * header array (up to max_headers entries), both reused; no allocation per
 * message or per header once warm.
 */
#ifndef AMI_PROTOCOL_PARSER_H
#define AMI_PROTOCOL_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/message.h"
#include "util/err.h"

typedef struct ami_parser_limits {
    size_t max_line;    /* bytes in one line, terminator excluded; default 65536 */
    size_t max_headers; /* headers in one message; default 131072 */
    size_t max_message; /* bytes in one message; default 4 MiB */
} ami_parser_limits_t;

void ami_parser_limits_default(ami_parser_limits_t *lim);

typedef struct ami_parser_stats {
    uint64_t messages;
    uint64_t bytes;
    uint64_t errors;
    uint64_t bad_lines; /* malformed lines dropped from framed messages */
} ami_parser_stats_t;

typedef enum ami_bad_kind {
    AMI_BAD_NONE = 0,
    AMI_BAD_NO_COLON,  /* "text without a separator" */
    AMI_BAD_EMPTY_KEY, /* ": value" */
    AMI_BAD_NUL,       /* a NUL byte in the line */
    AMI_BAD_LONE_CR    /* a CR not followed by LF in the line */
} ami_bad_kind_t;

/* The latest dropped line: what was wrong, where, and how it began. */
typedef struct ami_parser_bad {
    ami_bad_kind_t kind;
    size_t line;       /* 1-based line number within its message */
    char excerpt[40];  /* its first bytes, unprintable ones as '.' */
} ami_parser_bad_t;

const char *ami_bad_kind_name(ami_bad_kind_t kind);

typedef struct ami_parser {
    /* private: use the functions below */
    char *buf;
    size_t cap;
    size_t start;     /* first byte of the message being parsed */
    size_t scan;      /* next unparsed line starts here */
    size_t end;       /* end of valid data */
    size_t line_scanned; /* bytes of the partial line at scan already checked */
    size_t line_colon;   /* its first ':' relative to scan, or SIZE_MAX */
    uint8_t line_bad;    /* ami_bad_kind_t seen in the partial line so far */
    uint32_t msg_bad_lines; /* lines dropped from the message being parsed */
    ami_parser_bad_t last_bad;
    ami_hdr_t *hdrs;
    size_t nhdrs;
    size_t hdrs_cap;
    ami_parser_limits_t lim;
    ami_parser_stats_t stats;
    int32_t actionid_idx;
    uint32_t name_hash;
    uint8_t kind;
    bool expect_banner;
    bool banner_done;
    bool in_legacy_output;
    bool legacy_ended;
    bool failed;
    ami_err_t error;
} ami_parser_t;

/* lim may be NULL for defaults. Returns 0 or -1 (bad limits). */
int ami_parser_init(ami_parser_t *p, const ami_parser_limits_t *lim);
void ami_parser_deinit(ami_parser_t *p);

/* Back to the start state: empty buffer, banner expected again, error cleared. */
void ami_parser_reset(ami_parser_t *p);

/* Whether the first line must be the banner (default true). A server-side
 * reader (the simulator parsing actions) sets false. */
void ami_parser_expect_banner(ami_parser_t *p, bool expect);

/* Copy bytes in. -1 with AMI_E_LIMIT if they do not fit even after
 * compaction within the buffer bound (drain with next() first). */
int ami_parser_feed(ami_parser_t *p, const void *data, size_t len, ami_err_t *err);

/* Zero-copy reads: get room for at least `want` bytes (fewer if the bound is
 * reached; *got tells), read into it, then commit what was read. */
char *ami_parser_reserve(ami_parser_t *p, size_t want, size_t *got);
void ami_parser_commit(ami_parser_t *p, size_t n);

/* 1: *msg holds a message. 0: need more bytes. -1: protocol error (err filled). */
int ami_parser_next(ami_parser_t *p, ami_msg_t *msg, ami_err_t *err);

/* The latest dropped line (kind AMI_BAD_NONE if none yet). */
const ami_parser_bad_t *ami_parser_last_bad(const ami_parser_t *p);

/* Bytes buffered and not yet returned as messages. */
size_t ami_parser_buffered(const ami_parser_t *p);

static inline const ami_parser_stats_t *ami_parser_stats(const ami_parser_t *p) { return &p->stats; }

#endif
