/*
 * The parser's fast path for the common line (take_common_lines in
 * engine/protocol/parser.c) at each of its edges. It takes a line only when
 * the 16-byte block holding its end is buffered, so every case here puts the
 * line of interest in the middle of a feed, with a long message after it:
 * the line is then taken (or refused and left to the general path) by the
 * fast path. Each input is also fed one byte at a time, which leaves most
 * lines to the general path, and must give the same outcome (parse_both).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "parse_run.h"
#include "protocol/message.h"
#include "protocol/parser.h"

/* A message after the case: keeps the case's lines away from the feed's end. */
#define TAIL "Event: AfterTheCase\r\nPrivilege: call,all\r\nChannel: SIP/after-00000001\r\n\r\n"

static result_t R;

static void assert_tail(const result_t *r, size_t i)
{
    assert_true(r->n > i);
    assert_int_equal(r->m[i].kind, AMI_MSG_EVENT);
    assert_hdr(&r->m[i], 0, "Event", "AfterTheCase");
    assert_hdr(&r->m[i], 2, "Channel", "SIP/after-00000001");
}

/* "Hnn: xxx...x\r\n" lines, each line_len bytes with its CRLF. */
static size_t add_lines(char *out, size_t size, size_t n, size_t lines, size_t line_len)
{
    for (size_t i = 0; i < lines; i++) {
        int w = snprintf(out + n, size - n, "H%02zu: ", i % 100);
        n += (size_t)w;
        for (size_t k = (size_t)w; k + 2 < line_len; k++)
            out[n++] = 'x';
        out[n++] = '\r';
        out[n++] = '\n';
    }
    assert_true(n < size);
    return n;
}

/* max_message is checked once per run of common lines (the scan stops where
 * a line could end past it): a message of exactly max_message bytes passes,
 * one byte more fails with the general path's message. */
static void test_message_of_exactly_max_message_passes_one_more_fails(void **state)
{
    (void)state;
    static char in[4096];
    for (size_t extra = 0; extra < 2; extra++) {
        size_t n = (size_t)snprintf(in, sizeof in, BANNER "Response: Success\r\n");
        size_t msg_start = sizeof BANNER - 1;
        n = add_lines(in, sizeof in, n, 7, 30 + extra);
        n += (size_t)snprintf(in + n, sizeof in - n, "\r\n");
        size_t wire = n - msg_start;
        n += (size_t)snprintf(in + n, sizeof in - n, TAIL);
        ami_parser_limits_t lim = small_limits(64, 0, 30 * 7 + 19 + 2);
        parse_both(&R, &lim, true, in, n);
        if (extra == 0) {
            assert_int_equal(wire, lim.max_message);
            assert_int_equal(R.rc, 0);
            assert_int_equal(R.n, 3);
            assert_int_equal(R.m[1].wire_len, wire);
            assert_int_equal(R.m[1].nhdrs, 8);
            assert_tail(&R, 2);
        } else {
            assert_int_equal(R.n, 1);
            assert_error(&R, AMI_E_LIMIT, "message larger than max_message (231 bytes) after");
        }
    }
}

/* The scan's stop for max_message, where a line's CR ends a 16-byte block:
 * "Response: Success" (19 bytes with CRLF), then "H00: 1234567890" whose
 * CR is the last byte of the block at its start: the line ends at byte 36,
 * the message at 38. Small messages follow (each within the bound). */
static void test_line_ending_past_max_message_at_a_block_edge(void **state)
{
    (void)state;
    static const struct {
        size_t max_message;
        size_t n;
        const char *error; /* NULL: the message passes */
    } cases[] = {
        {35, 1, "larger than max_message (35 bytes) after 1 headers"},
        {36, 1, "larger than max_message (36 bytes) after 2 headers"},
        {37, 1, "larger than max_message (37 bytes) after 2 headers"},
        {38, 5, NULL},
    };
    const char in[] = BANNER "Response: Success\r\nH00: 1234567890\r\n\r\n"
                             "Event: T1\r\n\r\nEvent: T2\r\n\r\nEvent: T3\r\n\r\n";
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ami_parser_limits_t lim = small_limits(32, 0, cases[c].max_message);
        parse_both(&R, &lim, true, in, sizeof in - 1);
        assert_int_equal(R.n, cases[c].n);
        if (cases[c].error) {
            assert_error(&R, AMI_E_LIMIT, cases[c].error);
        } else {
            assert_int_equal(R.rc, 0);
            assert_int_equal(R.m[1].wire_len, 38);
            assert_hdr(&R.m[1], 1, "H00", "1234567890");
            assert_hdr(&R.m[4], 0, "Event", "T3");
        }
    }
}

/* A line of max_line bytes is taken; one byte longer is refused, in the
 * middle of a feed as at its end. */
static void test_line_of_exactly_max_line_passes_one_more_fails(void **state)
{
    (void)state;
    static char in[4096];
    for (size_t extra = 0; extra < 2; extra++) {
        size_t n = (size_t)snprintf(in, sizeof in, BANNER "Response: Success\r\nA: 1\r\n");
        n = add_lines(in, sizeof in, n, 1, 40 + 2 + extra);
        n += (size_t)snprintf(in + n, sizeof in - n, "B: 2\r\n\r\n" TAIL);
        ami_parser_limits_t lim = small_limits(40, 0, 0);
        parse_both(&R, &lim, true, in, n);
        if (extra == 0) {
            assert_int_equal(R.rc, 0);
            assert_int_equal(R.n, 3);
            assert_int_equal(R.m[1].nhdrs, 4);
            assert_int_equal(R.m[1].vlen[2], 40 - 5);
            assert_hdr(&R.m[1], 3, "B", "2");
            assert_tail(&R, 2);
        } else {
            assert_int_equal(R.n, 1);
            assert_error(&R, AMI_E_LIMIT, "line 3 of a message is longer than max_line (40 bytes; starts \"H00: xxx");
        }
    }
}

/* The header array grows in the middle of a message (the fast path leaves a
 * full array to the general path), and max_headers still holds there. */
static void test_header_array_grows_mid_feed_and_max_headers_holds(void **state)
{
    (void)state;
    static char in[16384];
    size_t n = (size_t)snprintf(in, sizeof in, BANNER "Event: Many\r\n");
    n = add_lines(in, sizeof in, n, 299, 24);
    n += (size_t)snprintf(in + n, sizeof in - n, "\r\n" TAIL);

    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    assert_int_equal(ami_parser_feed(&p, in, n, NULL), 0);
    ami_msg_t m;
    ami_err_t err;
    assert_int_equal(ami_parser_next(&p, &m, &err), 1);
    assert_int_equal(ami_parser_next(&p, &m, &err), 1);
    assert_int_equal(m.nhdrs, 300);
    for (size_t i = 1; i < 300; i++) {
        size_t klen, vlen;
        const char *k = ami_msg_key(&m, i, &klen);
        const char *v = ami_msg_value(&m, i, &vlen);
        char want[8];
        snprintf(want, sizeof want, "H%02zu", (i - 1) % 100);
        assert_int_equal(klen, 3);
        assert_memory_equal(k, want, 3);
        assert_int_equal(k[klen], '\0');
        assert_int_equal(vlen, 24 - 7);
        assert_int_equal(v[vlen], '\0');
    }
    assert_int_equal(ami_parser_next(&p, &m, &err), 1);
    assert_string_equal(ami_msg_name(&m), "AfterTheCase");
    assert_int_equal(ami_parser_next(&p, &m, &err), 0);
    ami_parser_deinit(&p);

    ami_parser_limits_t lim = small_limits(0, 70, 0);
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "more than max_headers (70)");
}

/* ActionID is found by name in any case, only for an 8-byte key that is
 * exactly that name; the first one wins; as the first header too. */
static void test_actionid_found_in_any_case_first_wins(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Response: Success\r\nUniqueid: 1.2\r\nActionIX: no\r\nActionId: a-1\r\n"
                           "ACTIONID: a-2\r\nMessage: ok\r\n\r\n"
                           "Event: X\r\nLinkedid: 9\r\nactionid: b-1\r\nActionID2: no\r\n\r\n"
                           "Event: Y\r\nAction ID: no\r\nActionI\x44: c-1\r\n\r\n" TAIL);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 5);
    assert_int_equal(R.m[1].actionid_idx, 3);
    assert_hdr(&R.m[1], 3, "ActionId", "a-1");
    assert_hdr(&R.m[1], 4, "ACTIONID", "a-2");
    assert_int_equal(R.m[2].actionid_idx, 2);
    assert_hdr(&R.m[2], 2, "actionid", "b-1");
    assert_int_equal(R.m[3].actionid_idx, 2);
    assert_tail(&R, 4);
    assert_int_equal(R.m[4].actionid_idx, -1);

    /* no banner (a server reading actions): ActionID may come first */
    const char actions[] = "ActionID: first\r\nAction: Ping\r\n\r\nAction: Ping\r\nActionID: second\r\n\r\n" TAIL;
    parse_both(&R, NULL, false, actions, sizeof actions - 1);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 3);
    assert_int_equal(R.m[0].actionid_idx, 0);
    assert_int_equal(R.m[0].kind, AMI_MSG_OTHER);
    assert_int_equal(R.m[1].actionid_idx, 1);
}

/* The first line of a message says its kind, in any case of its key; a
 * "Response: Follows" starts legacy Command output, which the general path
 * reads, and the stream goes on after it. */
static void test_first_line_kind_and_legacy_output_mid_feed(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "EVENT: Newchannel\r\nChannel: a\r\n\r\n"
                           "response: success\r\n\r\n"
                           "Events: off\r\n\r\n"
                           "Respons: x\r\n\r\n"
                           "Response: Followsx\r\nA: 1\r\n\r\n"
                           "Response: FOLLOWS\r\nPrivilege: Command\r\nActionID: c-1\r\n"
                           "line one: with a colon\r\n\r\nlast line--END COMMAND--\r\n\r\n" TAIL);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 8);
    assert_int_equal(R.m[1].kind, AMI_MSG_EVENT);
    assert_hdr(&R.m[1], 1, "Channel", "a");
    assert_int_equal(R.m[2].kind, AMI_MSG_RESPONSE);
    assert_false(R.m[2].legacy);
    assert_int_equal(R.m[3].kind, AMI_MSG_OTHER);
    assert_int_equal(R.m[4].kind, AMI_MSG_OTHER);
    assert_int_equal(R.m[5].kind, AMI_MSG_RESPONSE);
    assert_false(R.m[5].legacy);
    assert_hdr(&R.m[5], 1, "A", "1");
    const cmsg_t *c = &R.m[6];
    assert_true(c->legacy);
    assert_int_equal(c->actionid_idx, 2);
    assert_int_equal(c->nhdrs, 6);
    assert_hdr(c, 1, "Privilege", "Command");
    assert_hdr(c, 3, "Output", "line one: with a colon");
    assert_hdr(c, 4, "Output", "");
    assert_hdr(c, 5, "Output", "last line");
    assert_tail(&R, 7);

    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    const char in[] = BANNER "Event: NewChannel\r\nChannel: a\r\n\r\n" TAIL;
    assert_int_equal(ami_parser_feed(&p, in, sizeof in - 1, NULL), 0);
    ami_msg_t m;
    assert_int_equal(ami_parser_next(&p, &m, NULL), 1);
    assert_int_equal(ami_parser_next(&p, &m, NULL), 1);
    assert_int_equal(m.name_hash, ami_name_hash("newchannel", 10));
    ami_parser_deinit(&p);
}

/* Bare LF endings, values without the space, empty values and stray blank
 * lines between messages, all in the middle of a feed. */
static void test_lf_lines_empty_values_and_stray_blank_lines_mid_feed(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "\r\n\n\r\nEvent: A\nKey:value\nEmpty:\r\nSpace: \r\nTwo:  two\n"
                           "Colons: a: b\r\n\n\r\n\r\nEvent: B\r\n\r\n\n" TAIL);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 4);
    const cmsg_t *a = &R.m[1];
    assert_int_equal(a->nhdrs, 6);
    assert_hdr(a, 1, "Key", "value");
    assert_hdr(a, 2, "Empty", "");
    assert_hdr(a, 3, "Space", "");
    assert_hdr(a, 4, "Two", " two");
    assert_hdr(a, 5, "Colons", "a: b");
    assert_int_equal(R.m[2].nhdrs, 1);
    assert_tail(&R, 3);
    assert_int_equal(R.bad_lines, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_of_exactly_max_message_passes_one_more_fails),
        cmocka_unit_test(test_line_ending_past_max_message_at_a_block_edge),
        cmocka_unit_test(test_line_of_exactly_max_line_passes_one_more_fails),
        cmocka_unit_test(test_header_array_grows_mid_feed_and_max_headers_holds),
        cmocka_unit_test(test_actionid_found_in_any_case_first_wins),
        cmocka_unit_test(test_first_line_kind_and_legacy_output_mid_feed),
        cmocka_unit_test(test_lf_lines_empty_values_and_stray_blank_lines_mid_feed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
