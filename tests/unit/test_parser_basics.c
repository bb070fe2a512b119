/*
 * The parser's and the message's API: accessors, value splitting, in-place
 * NUL termination, limits, the feed bound, the zero-copy reserve/commit path,
 * statistics, very large messages and giving memory back after them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/message.h"
#include "protocol/parser.h"
#include "util/alloc.h"

#define BANNER "Asterisk Call Manager/11.0.0\r\n"

static void parser_new(ami_parser_t *p, const ami_parser_limits_t *lim)
{
    assert_int_equal(ami_parser_init(p, lim), 0);
}

static void feed_str(ami_parser_t *p, const char *s)
{
    ami_err_t err;
    if (ami_parser_feed(p, s, strlen(s), &err) != 0)
        fail_msg("feed failed: %s", err.msg);
}

/* The next message, which must be there. */
static void next_ok(ami_parser_t *p, ami_msg_t *m)
{
    ami_err_t err;
    int rc = ami_parser_next(p, m, &err);
    if (rc != 1)
        fail_msg("ami_parser_next returned %d (%s)", rc, rc < 0 ? err.msg : "needs more bytes");
}

/* Banner, then the message in `s`. */
static void parse_one(ami_parser_t *p, const char *s, ami_msg_t *m)
{
    parser_new(p, NULL);
    feed_str(p, BANNER);
    feed_str(p, s);
    next_ok(p, m);
    assert_int_equal(m->kind, AMI_MSG_BANNER);
    next_ok(p, m);
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */

static void test_get_returns_the_first_value_of_a_key(void **state)
{
    (void)state;
    ami_parser_t p;
    ami_msg_t m;
    parse_one(&p,
              "Response: Success\r\nActionID: abc\r\nMessage: Hello\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n",
              &m);
    assert_int_equal(m.kind, AMI_MSG_RESPONSE);
    assert_int_equal(m.nhdrs, 5);
    assert_string_equal(ami_msg_get(&m, "Message"), "Hello");
    assert_string_equal(ami_msg_get(&m, "message"), "Hello");
    assert_string_equal(ami_msg_get(&m, "Variable"), "A=1");
    assert_null(ami_msg_get(&m, "Missing"));
    assert_null(ami_msg_get(&m, "Messag"));   /* no prefix match */
    assert_null(ami_msg_get(&m, "Message2")); /* no longer match */
    assert_null(ami_msg_get(&m, ""));
    ami_parser_deinit(&p);
}

static void test_getn_uses_the_key_length_and_reports_the_value_length(void **state)
{
    (void)state;
    ami_parser_t p;
    ami_msg_t m;
    parse_one(&p, "Response: Success\r\nActionID: abc\r\nMessage: Hello there\r\n\r\n", &m);
    size_t len = 0;
    /* only key_len bytes of the key are used */
    const char *v = ami_msg_getn(&m, "MESSAGE-and-more", 7, &len);
    assert_non_null(v);
    assert_int_equal(len, 11);
    assert_memory_equal(v, "Hello there", 11);
    assert_non_null(ami_msg_getn(&m, "actionid", 8, NULL));
    len = 77;
    assert_null(ami_msg_getn(&m, "Action", 6, &len));
    ami_parser_deinit(&p);
}

static void test_name_is_the_first_value(void **state)
{
    (void)state;
    ami_parser_t p;
    ami_msg_t m;
    parse_one(&p, "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: Local/100@test-0001;1\r\n\r\n", &m);
    assert_int_equal(m.kind, AMI_MSG_EVENT);
    assert_string_equal(ami_msg_name(&m), "Newchannel");
    ami_parser_deinit(&p);

    ami_msg_t empty;
    memset(&empty, 0, sizeof empty);
    assert_string_equal(ami_msg_name(&empty), "");
}

static void test_action_id_gives_the_first_actionid_and_its_length(void **state)
{
    (void)state;
    ami_parser_t p;
    ami_msg_t m;
    parse_one(&p, "Event: Status\r\nPrivilege: Call\r\nChannel: x\r\nActionID: st-1\r\nActionID: st-2\r\n\r\n", &m);
    assert_int_equal(m.actionid_idx, 3);
    size_t len = 0;
    assert_string_equal(ami_msg_action_id(&m, &len), "st-1");
    assert_int_equal(len, 4);
    assert_null(ami_msg_action_id(&(ami_msg_t){.actionid_idx = -1}, &len));
    ami_parser_deinit(&p);

    parse_one(&p, "Response: Success\r\nactionid: lower\r\n\r\n", &m);
    assert_int_equal(m.actionid_idx, 1);
    assert_string_equal(ami_msg_action_id(&m, NULL), "lower");
    ami_parser_deinit(&p);
}

static void test_next_index_walks_duplicate_keys_in_order(void **state)
{
    (void)state;
    ami_parser_t p;
    ami_msg_t m;
    parse_one(&p,
              "Response: Success\r\nVariable: A=1\r\nOther: x\r\nvariable: B=2\r\nVARIABLE: C=3\r\n"
              "Variables: no\r\n\r\n",
              &m);
    static const char *const want[] = {"A=1", "B=2", "C=3"};
    static const long at[] = {1, 3, 4};
    size_t k = 0;
    for (long i = ami_msg_next_index(&m, "Variable", 8, 0); i >= 0;
         i = ami_msg_next_index(&m, "Variable", 8, (size_t)i + 1), k++) {
        assert_true(k < 3);
        assert_int_equal(i, at[k]);
        assert_string_equal(ami_msg_value(&m, (size_t)i, NULL), want[k]);
    }
    assert_int_equal(k, 3);
    assert_int_equal(ami_msg_next_index(&m, "Variable", 8, 2), 3);
    assert_int_equal(ami_msg_next_index(&m, "Variable", 8, m.nhdrs), -1);
    assert_int_equal(ami_msg_next_index(&m, "Variable", 8, 1000), -1);
    assert_int_equal(ami_msg_next_index(&m, "Var", 3, 0), -1);
    assert_int_equal(ami_msg_next_index(&m, "Variables", 9, 0), 5);
    ami_parser_deinit(&p);
}

static void test_str_ieq_is_ascii_case_insensitive(void **state)
{
    (void)state;
    assert_true(ami_str_ieq("ActionID", 8, "actionid", 8));
    assert_true(ami_str_ieq("", 0, "", 0));
    assert_false(ami_str_ieq("ActionID", 8, "ActionI", 7));
    assert_false(ami_str_ieq("Action@", 7, "Action`", 7)); /* '@' | 0x20 is '`' but '@' is no letter */
    assert_false(ami_str_ieq("a[", 2, "a{", 2));
    assert_true(ami_str_ieq("\xc3\xa9", 2, "\xc3\xa9", 2));
    assert_false(ami_str_ieq("\xc3\xa9", 2, "\xc3\x89", 2)); /* no UTF-8 folding */
}

/* is_success on a single message. */
static bool success_of(const char *msg)
{
    ami_parser_t p;
    ami_msg_t m;
    parser_new(&p, NULL);
    ami_parser_expect_banner(&p, false);
    feed_str(&p, msg);
    next_ok(&p, &m);
    bool ok = ami_msg_is_success(&m);
    ami_parser_deinit(&p);
    return ok;
}

static void test_is_success_for_success_pong_follows_goodbye(void **state)
{
    (void)state;
    assert_true(success_of("Response: Success\r\n\r\n"));
    assert_true(success_of("Response: success\r\n\r\n"));
    assert_true(success_of("Response: Pong\r\n\r\n"));
    assert_true(success_of("Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n"));
    assert_true(success_of("Response: Follows\r\nPrivilege: Command\r\nout\r\n--END COMMAND--\r\n\r\n"));
    assert_false(success_of("Response: Error\r\nMessage: Permission denied\r\n\r\n"));
    assert_false(success_of("Response: Failure\r\n\r\n"));
    assert_false(success_of("Response: \r\n\r\n"));
    assert_false(success_of("Response: Successful\r\n\r\n"));
    /* only responses: an event's or a request's Response header does not count */
    assert_false(success_of("Event: OriginateResponse\r\nResponse: Success\r\n\r\n"));
    assert_false(success_of("Action: Ping\r\nResponse: Success\r\n\r\n"));
}

/* ------------------------------------------------------------------------ */
/* Values                                                                    */

static void test_value_split_at_first_colon_with_one_space_dropped(void **state)
{
    (void)state;
    ami_parser_t p;
    ami_msg_t m;
    parse_one(&p,
              "Response: Success\r\n"
              "K1:v\r\n"
              "K2: v\r\n"
              "K3:  v\r\n"
              "K4: a: b: c\r\n"
              "K5::x\r\n"
              "K6: v \r\n"
              "K7:\r\n"
              "K8: \r\n"
              "K9:\tv\r\n"
              "Some Key: spaced\r\n"
              "Output:    indented CLI line\r\n"
              "\r\n",
              &m);
    static const struct {
        const char *k, *v;
    } want[] = {
        {"Response", "Success"}, {"K1", "v"},     {"K2", "v"},        {"K3", " v"},
        {"K4", "a: b: c"},       {"K5", ":x"},    {"K6", "v "},       {"K7", ""},
        {"K8", ""},              {"K9", "\tv"},   {"Some Key", "spaced"}, {"Output", "   indented CLI line"},
    };
    assert_int_equal(m.nhdrs, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < m.nhdrs; i++) {
        size_t kl, vl;
        const char *k = ami_msg_key(&m, i, &kl);
        const char *v = ami_msg_value(&m, i, &vl);
        assert_int_equal(kl, strlen(want[i].k));
        assert_memory_equal(k, want[i].k, kl);
        assert_int_equal(vl, strlen(want[i].v));
        assert_memory_equal(v, want[i].v, vl);
    }
    ami_parser_deinit(&p);
}

static void test_keys_and_values_are_nul_terminated_in_place(void **state)
{
    (void)state;
    ami_parser_t p;
    ami_msg_t m;
    parse_one(&p, "Event: UserEvent\r\nHeader2: beta: gamma\r\nEmpty: \r\nBare:\r\nLast: x\n\n", &m);
    assert_int_equal(m.nhdrs, 5);
    for (size_t i = 0; i < m.nhdrs; i++) {
        size_t kl, vl;
        const char *k = ami_msg_key(&m, i, &kl);
        const char *v = ami_msg_value(&m, i, &vl);
        /* slices of the message's bytes, usable as C strings */
        assert_true(k >= m.base && k + kl < m.base + m.wire_len);
        assert_true(v >= m.base && v + vl < m.base + m.wire_len);
        assert_int_equal(k[kl], '\0');
        assert_int_equal(v[vl], '\0');
        assert_int_equal(strlen(k), kl);
        assert_int_equal(strlen(v), vl);
    }
    assert_string_equal(ami_msg_value(&m, 1, NULL), "beta: gamma");
    assert_int_equal(m.wire_len, strlen("Event: UserEvent\r\nHeader2: beta: gamma\r\nEmpty: \r\nBare:\r\nLast: x\n\n"));
    ami_parser_deinit(&p);

    /* the banner too; its key is the synthetic "Banner" */
    parser_new(&p, NULL);
    feed_str(&p, BANNER);
    next_ok(&p, &m);
    size_t kl;
    assert_string_equal(ami_msg_key(&m, 0, &kl), "Banner");
    assert_int_equal(kl, 6);
    assert_int_equal(m.hdrs[0].key_off, AMI_HDR_KEY_BANNER);
    assert_string_equal(ami_msg_value(&m, 0, NULL), "Asterisk Call Manager/11.0.0");
    ami_parser_deinit(&p);
}

/* ------------------------------------------------------------------------ */
/* Limits and the buffer bound                                               */

static void test_limits_default_and_validation(void **state)
{
    (void)state;
    ami_parser_limits_t lim;
    ami_parser_limits_default(&lim);
    assert_int_equal(lim.max_line, 65536);
    assert_int_equal(lim.max_headers, 131072);
    assert_int_equal(lim.max_message, 4u << 20);

    ami_parser_t p;
    ami_parser_limits_t zero = {0, 0, 0}; /* zero fields take the defaults */
    assert_int_equal(ami_parser_init(&p, &zero), 0);
    assert_int_equal(p.lim.max_line, 65536);
    ami_parser_deinit(&p);

    ami_parser_limits_t line_over_message = {2048, 0, 1024};
    assert_int_equal(ami_parser_init(&p, &line_over_message), -1);
    ami_parser_deinit(&p);
    ami_parser_limits_t huge = {0, 0, (size_t)1 << 31};
    assert_int_equal(ami_parser_init(&p, &huge), -1);
    ami_parser_deinit(&p);
    ami_parser_limits_t equal = {1024, 1, 1024};
    assert_int_equal(ami_parser_init(&p, &equal), 0);
    ami_parser_deinit(&p);
}

/* n bytes of complete 64-byte messages. */
static char *small_messages(size_t n)
{
    static const char one[] = "Event: Tick\r\nPrivilege: system,all\r\nSeq: 0123456789abcdefghi\r\n\r\n";
    assert_int_equal(sizeof one - 1, 64);
    assert_int_equal(n % 64, 0);
    char *s = malloc(n);
    assert_non_null(s);
    for (size_t i = 0; i < n; i += 64)
        memcpy(s + i, one, 64);
    return s;
}

#define BOUND_MAX_MESSAGE 1024u
#define BOUND (BOUND_MAX_MESSAGE + (256u << 10)) /* max_message + a read's slack */

static void test_feed_refuses_undrained_data_past_the_bound(void **state)
{
    (void)state;
    ami_parser_limits_t lim = {256, 0, BOUND_MAX_MESSAGE};
    ami_parser_t p;
    parser_new(&p, &lim);
    ami_parser_expect_banner(&p, false);
    char *data = small_messages(BOUND + 64);
    ami_err_t err;
    /* exactly the bound fits */
    assert_int_equal(ami_parser_feed(&p, data, BOUND, &err), 0);
    assert_int_equal(ami_parser_buffered(&p), BOUND);
    /* not one byte more while nothing was drained */
    memset(&err, 0, sizeof err);
    assert_int_equal(ami_parser_feed(&p, data, 64, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_non_null(strstr(err.msg, "buffer full"));
    assert_non_null(strstr(err.msg, "ami_parser_next"));
    /* the parser itself has not failed: drain, and it goes on */
    ami_msg_t m;
    size_t n = 0;
    while (ami_parser_next(&p, &m, &err) == 1) {
        assert_string_equal(ami_msg_get(&m, "Seq"), "0123456789abcdefghi");
        n++;
    }
    assert_int_equal(n, BOUND / 64);
    assert_int_equal(ami_parser_buffered(&p), 0);
    assert_int_equal(ami_parser_feed(&p, data, BOUND, &err), 0);
    n = 0;
    while (ami_parser_next(&p, &m, &err) == 1)
        n++;
    assert_int_equal(n, BOUND / 64);
    assert_int_equal(ami_parser_stats(&p)->errors, 0);
    /* a single feed bigger than the bound is refused too */
    assert_int_equal(ami_parser_buffered(&p), 0);
    assert_int_equal(ami_parser_feed(&p, data, BOUND + 64, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    ami_parser_deinit(&p);
    free(data);
}

static void feed_over_the_bound_takes_nothing(void **state)
{
    (void)state;
    ami_parser_limits_t lim = {256, 0, BOUND_MAX_MESSAGE};
    ami_parser_t p;
    parser_new(&p, &lim);
    ami_parser_expect_banner(&p, false);
    char *data = small_messages(BOUND);
    ami_err_t err;
    assert_int_equal(ami_parser_feed(&p, data, BOUND - 64, &err), 0);
    int rc = ami_parser_feed(&p, data, 128, &err);
    size_t buffered = ami_parser_buffered(&p);
    /* drain and retry, as the error message says */
    ami_msg_t m;
    size_t n = 0;
    while (ami_parser_next(&p, &m, &err) == 1)
        n++;
    int rc2 = ami_parser_feed(&p, data, 128, &err);
    while (ami_parser_next(&p, &m, &err) == 1)
        n++;
    ami_parser_deinit(&p);
    free(data);
    assert_int_equal(rc, -1);
    assert_int_equal(rc2, 0);
    assert_int_equal(buffered, BOUND - 64);
    assert_int_equal(n, (BOUND - 64) / 64 + 2); /* every message once */
}

static void test_reserve_commit_reads_straight_into_the_buffer(void **state)
{
    (void)state;
    ami_parser_t p;
    parser_new(&p, NULL);
    const char in[] = BANNER "Response: Success\r\nActionID: rc\r\n\r\n";
    size_t got = 0;
    char *dst = ami_parser_reserve(&p, 100, &got);
    assert_non_null(dst);
    assert_int_equal(got, 100);
    memcpy(dst, in, 10);
    ami_parser_commit(&p, 10);
    ami_msg_t m;
    assert_int_equal(ami_parser_next(&p, &m, NULL), 0);
    assert_int_equal(ami_parser_buffered(&p), 10);
    /* the rest, in reads of 7 bytes */
    for (size_t off = 10; off < sizeof in - 1; off += 7) {
        dst = ami_parser_reserve(&p, 7, &got);
        assert_non_null(dst);
        assert_int_equal(got, 7);
        size_t n = sizeof in - 1 - off < 7 ? sizeof in - 1 - off : 7;
        memcpy(dst, in + off, n);
        ami_parser_commit(&p, n);
    }
    next_ok(&p, &m);
    assert_int_equal(m.kind, AMI_MSG_BANNER);
    next_ok(&p, &m);
    assert_string_equal(ami_msg_action_id(&m, NULL), "rc");
    assert_int_equal(ami_parser_next(&p, &m, NULL), 0);
    assert_int_equal(ami_parser_buffered(&p), 0);
    /* want 0 still gives room; commit 0 is a no-op */
    dst = ami_parser_reserve(&p, 0, &got);
    assert_non_null(dst);
    assert_true(got >= 1);
    ami_parser_commit(&p, 0);
    assert_int_equal(ami_parser_buffered(&p), 0);
    ami_parser_deinit(&p);
}

static void test_reserve_at_the_bound_gives_no_room_until_drained(void **state)
{
    (void)state;
    ami_parser_limits_t lim = {256, 0, BOUND_MAX_MESSAGE};
    ami_parser_t p;
    parser_new(&p, &lim);
    ami_parser_expect_banner(&p, false);
    char *data = small_messages(BOUND);
    size_t off = 0, got = 0;
    char *dst;
    while ((dst = ami_parser_reserve(&p, 65536, &got)) != NULL && got > 0) {
        assert_true(got <= 65536);
        assert_true(off + got <= BOUND);
        memcpy(dst, data + off, got);
        ami_parser_commit(&p, got);
        off += got;
    }
    assert_int_equal(off, BOUND);
    assert_int_equal(got, 0);
    ami_msg_t m;
    next_ok(&p, &m); /* one message drained: room for its 64 bytes */
    dst = ami_parser_reserve(&p, 65536, &got);
    assert_non_null(dst);
    assert_int_equal(got, 64);
    ami_parser_deinit(&p);
    free(data);
}

static void test_stats_count_messages_bytes_and_errors(void **state)
{
    (void)state;
    ami_parser_t p;
    parser_new(&p, NULL);
    const ami_parser_stats_t *st = ami_parser_stats(&p);
    assert_int_equal(st->messages, 0);
    const char in[] = BANNER "Response: Success\r\nActionID: 1\r\n\r\nEvent: A\r\n\r\nEvent: B\nX: y\n\n";
    feed_str(&p, in);
    ami_msg_t m;
    for (int i = 0; i < 4; i++)
        next_ok(&p, &m);
    assert_int_equal(ami_parser_next(&p, &m, NULL), 0);
    assert_int_equal(st->messages, 4);
    assert_int_equal(st->bytes, sizeof in - 1);
    assert_int_equal(st->errors, 0);
    /* a partial message counts nothing yet */
    feed_str(&p, "Event: C\r\n");
    assert_int_equal(ami_parser_next(&p, &m, NULL), 0);
    assert_int_equal(st->messages, 4);
    assert_int_equal(st->bytes, sizeof in - 1);
    /* a malformed line inside it is counted, and the message still comes */
    feed_str(&p, "oops\r\n\r\n");
    next_ok(&p, &m);
    assert_int_equal(m.bad_lines, 1);
    assert_int_equal(st->bad_lines, 1);
    assert_int_equal(st->messages, 5);
    /* an error counts once, however often it is reported */
    feed_str(&p, "oops\r\n");
    assert_int_equal(ami_parser_next(&p, &m, NULL), -1);
    assert_int_equal(ami_parser_next(&p, &m, NULL), -1);
    assert_int_equal(st->errors, 1);
    assert_int_equal(st->messages, 5);
    size_t in_bytes = sizeof in - 1 + strlen("Event: C\r\noops\r\n\r\n");
    /* counters survive a reset */
    ami_parser_reset(&p);
    feed_str(&p, BANNER);
    next_ok(&p, &m);
    assert_int_equal(st->messages, 6);
    assert_int_equal(st->bytes, in_bytes + sizeof BANNER - 1);
    assert_int_equal(st->errors, 1);
    assert_int_equal(st->bad_lines, 1);
    ami_parser_deinit(&p);
}

static void test_buffered_counts_bytes_not_yet_returned(void **state)
{
    (void)state;
    ami_parser_t p;
    parser_new(&p, NULL);
    assert_int_equal(ami_parser_buffered(&p), 0);
    feed_str(&p, BANNER "Event: A\r\n\r\nEvent: B\r\n\r\nEvent: C\r\nPartial");
    assert_int_equal(ami_parser_buffered(&p), strlen(BANNER "Event: A\r\n\r\nEvent: B\r\n\r\nEvent: C\r\nPartial"));
    ami_msg_t m;
    next_ok(&p, &m);
    assert_int_equal(ami_parser_buffered(&p), strlen("Event: A\r\n\r\nEvent: B\r\n\r\nEvent: C\r\nPartial"));
    next_ok(&p, &m);
    assert_int_equal(ami_parser_buffered(&p), strlen("Event: B\r\n\r\nEvent: C\r\nPartial"));
    next_ok(&p, &m);
    assert_int_equal(ami_parser_buffered(&p), strlen("Event: C\r\nPartial"));
    assert_int_equal(ami_parser_next(&p, &m, NULL), 0);
    assert_int_equal(ami_parser_buffered(&p), strlen("Event: C\r\nPartial"));
    ami_parser_deinit(&p);
}

/* ------------------------------------------------------------------------ */
/* Big messages                                                              */

/* A modern Command reply with `lines` Output lines of `width` bytes each
 * ("line NNNNN " then x's). */
static char *command_output(size_t lines, size_t width, size_t *len)
{
    const char *head = "Response: Success\r\nActionID: big\r\nMessage: Command output follows\r\n";
    size_t hl = strlen(head);
    size_t cap = hl + lines * (8 + width + 2) + 3;
    char *s = malloc(cap);
    assert_non_null(s);
    memcpy(s, head, hl);
    size_t n = hl;
    for (size_t i = 0; i < lines; i++) {
        n += (size_t)snprintf(s + n, cap - n, "Output: line %05zu ", i);
        size_t pad = width - 11;
        memset(s + n, 'x', pad);
        n += pad;
        memcpy(s + n, "\r\n", 2);
        n += 2;
    }
    memcpy(s + n, "\r\n", 2);
    n += 2;
    *len = n;
    return s;
}

/* Feed `data` through reserve/commit in `read`-byte reads; check the one
 * Command reply it holds. Returns -1 and fills err on a parse error. */
static int parse_command_output(ami_parser_t *p, const char *data, size_t len, size_t read, size_t lines,
                                size_t width, ami_err_t *err)
{
    size_t off = 0;
    ami_msg_t m;
    int rc = 0, got_msgs = 0;
    while (off < len) {
        size_t got;
        char *dst = ami_parser_reserve(p, read, &got);
        assert_non_null(dst);
        size_t n = len - off < got ? len - off : got;
        memcpy(dst, data + off, n);
        ami_parser_commit(p, n);
        off += n;
        while ((rc = ami_parser_next(p, &m, err)) == 1) {
            got_msgs++;
            assert_int_equal(m.kind, AMI_MSG_RESPONSE);
            assert_int_equal(m.nhdrs, 3 + lines);
            assert_int_equal(m.wire_len, len);
            assert_string_equal(ami_msg_action_id(&m, NULL), "big");
            size_t k = 0;
            for (long i = ami_msg_next_index(&m, "Output", 6, 0); i >= 0;
                 i = ami_msg_next_index(&m, "Output", 6, (size_t)i + 1), k++) {
                size_t vl;
                const char *v = ami_msg_value(&m, (size_t)i, &vl);
                char want[16];
                snprintf(want, sizeof want, "line %05zu ", k);
                assert_int_equal(vl, width);
                assert_memory_equal(v, want, 11);
                assert_int_equal(v[vl], '\0');
            }
            assert_int_equal(k, lines);
        }
        if (rc < 0)
            return -1;
    }
    assert_int_equal(got_msgs, 1);
    assert_int_equal(ami_parser_buffered(p), 0);
    return 0;
}

static void test_one_mib_command_output_of_16000_lines_parses_with_default_limits(void **state)
{
    (void)state;
    size_t len;
    char *data = command_output(16000, 56, &len); /* 66 bytes a line */
    assert_true(len > (1u << 20));
    ami_parser_t p;
    parser_new(&p, NULL);
    ami_parser_expect_banner(&p, false);
    ami_err_t err;
    if (parse_command_output(&p, data, len, 65536, 16000, 56, &err) != 0)
        fail_msg("%s", err.msg);
    ami_parser_deinit(&p);
    free(data);
}

static void one_mib_command_output_of_20000_lines_parses_with_default_limits(void **state)
{
    (void)state;
    size_t len;
    char *data = command_output(20000, 43, &len); /* 53 bytes a line */
    assert_true(len > (1u << 20));
    ami_parser_t p;
    parser_new(&p, NULL);
    ami_parser_expect_banner(&p, false);
    ami_err_t err;
    memset(&err, 0, sizeof err);
    int rc = parse_command_output(&p, data, len, 65536, 20000, 43, &err);
    ami_parser_deinit(&p);
    free(data);
    if (rc != 0)
        fail_msg("20,000-line Command output refused: %s", err.msg);
}

static void test_command_output_of_20000_lines_parses_with_max_headers_raised(void **state)
{
    (void)state;
    size_t len;
    char *data = command_output(20000, 43, &len);
    ami_parser_limits_t lim = {0, 32768, 0};
    ami_parser_t p;
    parser_new(&p, &lim);
    ami_parser_expect_banner(&p, false);
    ami_err_t err;
    if (parse_command_output(&p, data, len, 65536, 20000, 43, &err) != 0)
        fail_msg("%s", err.msg);
    ami_parser_deinit(&p);
    free(data);
}

static void test_buffer_shrinks_after_a_big_message_and_parsing_goes_on(void **state)
{
    (void)state;
    size_t len;
    char *big = command_output(16000, 56, &len);
    ami_parser_t p;
    parser_new(&p, NULL);
    feed_str(&p, BANNER);
    ami_msg_t m;
    next_ok(&p, &m);
    int64_t base = ami_alloc_live_bytes();
    ami_err_t err;
    for (int round = 0; round < 3; round++) {
        if (parse_command_output(&p, big, len, 65536, 16000, 56, &err) != 0)
            fail_msg("round %d: %s", round, err.msg);
        int64_t after_big = ami_alloc_live_bytes();
        assert_true(after_big - base > (int64_t)len); /* the buffer grew to hold it */
        /* the next read into an empty parser gives the big buffer back */
        feed_str(&p, "Event: Small\r\nSeq: 1\r\n\r\nEvent: Small\r\nSeq: 2\r\n\r\nEvent: Sm");
        int64_t after_small = ami_alloc_live_bytes();
        assert_true(after_small < after_big - (int64_t)(1u << 20));
        /* what stays: a small buffer and the header array (reused, bounded
         * by max_headers) */
        assert_true(after_small - base < (int64_t)(512u << 10));
        next_ok(&p, &m);
        assert_string_equal(ami_msg_get(&m, "Seq"), "1");
        next_ok(&p, &m);
        assert_string_equal(ami_msg_get(&m, "Seq"), "2");
        assert_int_equal(ami_parser_next(&p, &m, NULL), 0);
        feed_str(&p, "all\r\nSeq: 3\r\n\r\n");
        next_ok(&p, &m);
        assert_string_equal(ami_msg_name(&m), "Small");
        assert_string_equal(ami_msg_get(&m, "Seq"), "3");
        assert_int_equal(ami_parser_buffered(&p), 0);
    }
    /* reset gives it back too */
    if (parse_command_output(&p, big, len, 65536, 16000, 56, &err) != 0)
        fail_msg("%s", err.msg);
    ami_parser_reset(&p);
    assert_true(ami_alloc_live_bytes() - base < (int64_t)(512u << 10));
    feed_str(&p, BANNER "Event: AfterReset\r\n\r\n");
    next_ok(&p, &m);
    next_ok(&p, &m);
    assert_string_equal(ami_msg_name(&m), "AfterReset");
    ami_parser_deinit(&p);
    free(big);
}

/* The event-name hash: ASCII capitals fold onto lower case at every length
 * (the hash reads a word at a time, so each length takes another path), no
 * other byte folds, and only the name's own bytes are read (each name sits
 * in an allocation of exactly its length: AddressSanitizer would see an
 * overread). */
static void the_name_hash_folds_ascii_capitals_only_and_reads_only_the_name(void **state)
{
    (void)state;
    const char *letters = "NewchannelHangupRequestVarSetQueueMemberStatus";
    for (size_t n = 0; n <= 40; n++) {
        char *mixed = malloc(n ? n : 1), *lower = malloc(n ? n : 1), *other = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) {
            mixed[i] = letters[i];
            lower[i] = (char)(letters[i] | 0x20);
            other[i] = lower[i];
        }
        assert_int_equal(ami_name_hash(mixed, n), ami_name_hash(lower, n));
        if (n > 0) {
            other[n - 1] = '@'; /* '@' | 0x20 is '`': not a letter, never folded */
            mixed[n - 1] = '`';
            assert_int_not_equal(ami_name_hash(other, n), ami_name_hash(mixed, n));
            other[n / 2] = (char)(lower[n / 2] ^ 1); /* another letter */
            assert_int_not_equal(ami_name_hash(other, n), ami_name_hash(lower, n));
        }
        if (n > 0)
            assert_int_not_equal(ami_name_hash(lower, n), ami_name_hash(lower, n - 1));
        free(mixed);
        free(lower);
        free(other);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_returns_the_first_value_of_a_key),
        cmocka_unit_test(test_getn_uses_the_key_length_and_reports_the_value_length),
        cmocka_unit_test(test_name_is_the_first_value),
        cmocka_unit_test(test_action_id_gives_the_first_actionid_and_its_length),
        cmocka_unit_test(test_next_index_walks_duplicate_keys_in_order),
        cmocka_unit_test(test_str_ieq_is_ascii_case_insensitive),
        cmocka_unit_test(test_is_success_for_success_pong_follows_goodbye),
        cmocka_unit_test(test_value_split_at_first_colon_with_one_space_dropped),
        cmocka_unit_test(test_keys_and_values_are_nul_terminated_in_place),
        cmocka_unit_test(test_limits_default_and_validation),
        cmocka_unit_test(test_feed_refuses_undrained_data_past_the_bound),
        cmocka_unit_test(feed_over_the_bound_takes_nothing),
        cmocka_unit_test(test_reserve_commit_reads_straight_into_the_buffer),
        cmocka_unit_test(test_reserve_at_the_bound_gives_no_room_until_drained),
        cmocka_unit_test(test_stats_count_messages_bytes_and_errors),
        cmocka_unit_test(test_buffered_counts_bytes_not_yet_returned),
        cmocka_unit_test(test_one_mib_command_output_of_16000_lines_parses_with_default_limits),
        cmocka_unit_test(one_mib_command_output_of_20000_lines_parses_with_default_limits),
        cmocka_unit_test(test_command_output_of_20000_lines_parses_with_max_headers_raised),
        cmocka_unit_test(test_buffer_shrinks_after_a_big_message_and_parsing_goes_on),
        cmocka_unit_test(the_name_hash_folds_ascii_capitals_only_and_reads_only_the_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
