/*
 * Malformed lines inside a message (the parser's part of "one odd value must
 * not tear the session down"): after a good first line, a line without ':',
 * with an empty key, a NUL byte or a lone CR is dropped from its message,
 * counted (msg->bad_lines, stats.bad_lines) and described
 * (ami_parser_last_bad); the message and the stream go on, and every bound
 * still holds. Each input is also fed one byte at a time and must give the
 * same outcome as one feed.
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

static result_t R;

/* A UserEvent relayed by Asterisk carries what its sender wrote: one odd
 * line must not cost the session. Each bad line is dropped from its
 * message, counted, described; the rest of the message and the stream go on. */
static void test_malformed_lines_inside_a_message_are_dropped_and_counted(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        size_t len;
        ami_bad_kind_t kind;
        const char *excerpt;
    } cases[] = {
        {"this line has no colon", 22, AMI_BAD_NO_COLON, "this line has no colon"},
        {": value", 7, AMI_BAD_EMPTY_KEY, ": value"},
        {"Val: x\0y", 8, AMI_BAD_NUL, "Val: x.y"},
        {"Act\0ionID: 1", 12, AMI_BAD_NUL, "Act.ionID: 1"},
        {"Val: x\ry", 8, AMI_BAD_LONE_CR, "Val: x.y"},
        {"Val: x\r\ry", 9, AMI_BAD_LONE_CR, "Val: x..y"},
        {"\0", 1, AMI_BAD_NUL, "."},
        {"\r", 1, AMI_BAD_LONE_CR, "."},
        {"x\0y\rz", 5, AMI_BAD_NUL, "x.y.z"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char in[256];
        int n = snprintf(in, sizeof in, BANNER "Event: UserEvent\r\nA: 1\r\n");
        memcpy(in + n, cases[c].line, cases[c].len);
        n += (int)cases[c].len;
        n += snprintf(in + n, sizeof in - (size_t)n, "\r\nB: 2\r\n\r\nEvent: Next\r\n\r\n");
        parse_both(&R, NULL, true, in, (size_t)n);
        if (R.rc != 0)
            fail_msg("case %zu: %s", c, R.err.msg);
        assert_int_equal(R.n, 3);
        const cmsg_t *m = &R.m[1];
        assert_int_equal(m->kind, AMI_MSG_EVENT);
        assert_int_equal(m->nhdrs, 3);
        assert_hdr(m, 0, "Event", "UserEvent");
        assert_hdr(m, 1, "A", "1");
        assert_hdr(m, 2, "B", "2");
        assert_int_equal(m->bad_lines, 1);
        assert_int_equal(m->wire_len, (size_t)n - (sizeof BANNER - 1) - strlen("Event: Next\r\n\r\n"));
        assert_int_equal(R.m[2].bad_lines, 0);
        assert_hdr(&R.m[2], 0, "Event", "Next");
        assert_int_equal(R.errors, 0);
        assert_int_equal(R.bad_lines, 1);
        assert_int_equal(R.last_bad.kind, cases[c].kind);
        assert_int_equal(R.last_bad.line, 3);
        assert_string_equal(R.last_bad.excerpt, cases[c].excerpt);
    }
    assert_string_equal(ami_bad_kind_name(AMI_BAD_NO_COLON), "no ':' separator");
    assert_string_equal(ami_bad_kind_name(AMI_BAD_EMPTY_KEY), "empty key");
    assert_string_equal(ami_bad_kind_name(AMI_BAD_NUL), "NUL byte");
    assert_string_equal(ami_bad_kind_name(AMI_BAD_LONE_CR), "CR not followed by LF");
    assert_string_equal(ami_bad_kind_name(AMI_BAD_NONE), "none");
}

static void test_several_malformed_lines_are_each_counted(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Response: Success\r\nActionID: 7\r\nbad one\r\nX: \0\r\nMessage: ok\r\n"
                           "bad\rtwo\n\r\nResponse: Success\r\nbad three\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 3);
    assert_int_equal(R.m[1].nhdrs, 3);
    assert_hdr(&R.m[1], 1, "ActionID", "7");
    assert_int_equal(R.m[1].actionid_idx, 1);
    assert_hdr(&R.m[1], 2, "Message", "ok");
    assert_int_equal(R.m[1].bad_lines, 3);
    assert_int_equal(R.m[2].bad_lines, 1);
    assert_int_equal(R.bad_lines, 4);
    assert_int_equal(R.last_bad.line, 2);
    assert_string_equal(R.last_bad.excerpt, "bad three");
    /* a fresh parser has nothing to describe */
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    assert_int_equal(ami_parser_last_bad(&p)->kind, AMI_BAD_NONE);
    ami_parser_deinit(&p);
}

/* Legacy Command output: raw lines are output, but a NUL or a lone CR still
 * makes a line malformed. */
static void test_malformed_line_in_legacy_output_is_dropped(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Response: Follows\r\nActionID: x\r\none\r\nt\0wo\r\nth\rree\r\n"
                           "four\r\n--END COMMAND--\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    const cmsg_t *m = &R.m[1];
    assert_true(m->legacy);
    assert_int_equal(m->nhdrs, 4);
    assert_hdr(m, 2, "Output", "one");
    assert_hdr(m, 3, "Output", "four");
    assert_int_equal(m->bad_lines, 2);
}

/* Dropping a line does not lift a bound: a malformed line is measured like
 * any other, and a message of nothing but malformed lines still ends at
 * max_message. */
static void test_bounds_hold_for_malformed_lines(void **state)
{
    (void)state;
    ami_parser_limits_t lim = small_limits(32, 0, 256);
    PARSE(&R, &lim, BANNER "Response: Success\r\nno colon but far too long for max_line, yes\r\n\r\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "max_line");
    PARSE(&R, &lim, BANNER "Response: Success\r\nValue: \0 and far too long for max_line\r\n\r\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "max_line");
    /* a line that never ends, with a NUL in it: refused at the bound without a newline */
    PARSE(&R, &lim, BANNER "Response: Success\r\nValue: \0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "max_line");
    static char in[4096];
    size_t n = (size_t)snprintf(in, sizeof in, BANNER "Event: Flood\r\n");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(in + n, sizeof in - n, "no colon at all, line %02d\r\n", i);
    n += (size_t)snprintf(in + n, sizeof in - n, "\r\n");
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "max_message");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_lines_inside_a_message_are_dropped_and_counted),
        cmocka_unit_test(test_several_malformed_lines_are_each_counted),
        cmocka_unit_test(test_malformed_line_in_legacy_output_is_dropped),
        cmocka_unit_test(test_bounds_hold_for_malformed_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
