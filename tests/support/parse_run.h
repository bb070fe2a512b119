/*
 * Parse AMI text with the real parser and copy out what came of it, for the
 * parser's unit tests (test_parser_malformed.c, test_parser_bad_lines.c):
 * every message (kind, headers, bad_lines), the last return code and error,
 * the stats and the last dropped line. parse_both feeds the input in one go
 * and one byte at a time and fails the test if the two disagree. Results are
 * plain copies owned by the caller.
 */
#ifndef AMI_TEST_PARSE_RUN_H
#define AMI_TEST_PARSE_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/message.h"
#include "protocol/parser.h"

#define BANNER "Asterisk Call Manager/11.0.0\r\n"

#define MAX_MSGS 8
#define MAX_HDRS 12

typedef struct cmsg {
    ami_msg_kind_t kind;
    bool legacy;
    int32_t actionid_idx;
    size_t wire_len;
    size_t nhdrs;
    uint32_t bad_lines;
    char key[MAX_HDRS][48];
    char val[MAX_HDRS][96];
    size_t vlen[MAX_HDRS];
    bool terminated[MAX_HDRS]; /* key and value NUL-terminated in place */
} cmsg_t;

typedef struct result {
    int rc;        /* last ami_parser_next: -1 error, 0 needs more */
    ami_err_t err; /* when rc == -1 */
    size_t n;      /* messages before that */
    cmsg_t m[MAX_MSGS];
    size_t buffered;
    uint64_t errors;
    uint64_t bad_lines;        /* stats.bad_lines */
    ami_parser_bad_t last_bad; /* ami_parser_last_bad */
} result_t;

/* Feed `in` to p in chunks of `chunk` bytes (0: all at once), draining after
 * each feed, until the end or the first error. */
void run_parser(result_t *r, ami_parser_t *p, const char *in, size_t len, size_t chunk);
/* The same with a fresh parser (lim may be NULL; banner: expect one first). */
void parse_with(result_t *r, const ami_parser_limits_t *lim, bool banner, const char *in, size_t len,
                size_t chunk);
/* In one feed and byte by byte; both must agree. r gets the first. */
void parse_both(result_t *r, const ami_parser_limits_t *lim, bool banner, const char *in, size_t len);

#define PARSE(r, lim, in) parse_both((r), (lim), true, (in), sizeof(in) - 1)
/* Feed a literal into an existing parser, results in R (each test file's own). */
#define RUN(p, in) run_parser(&R, (p), (in), sizeof(in) - 1, 0)

/* rc -1 with this code, a message containing needle, one error counted. */
void assert_error(const result_t *r, ami_status_t code, const char *needle);
/* Header i is key: val, by length; assert_hdr also wants both NUL-terminated in place. */
void assert_hdr_content(const cmsg_t *m, size_t i, const char *key, const char *val);
void assert_hdr(const cmsg_t *m, size_t i, const char *key, const char *val);
void assert_banner(const cmsg_t *m, const char *text);
ami_parser_limits_t small_limits(size_t max_line, size_t max_headers, size_t max_message);

#endif
