/*
 * The parser on bad and unusual input: a catalogue of what it refuses (with
 * the exact return value, error code and a message naming the problem) and
 * of the leniencies it allows (with the exact messages it produces). The
 * malformed lines it drops from a message are in test_parser_bad_lines.c.
 * Every input of the catalogue is also fed one byte at a time, and must give
 * the same outcome as one feed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "protocol/message.h"
#include "protocol/parser.h"

#include "parse_run.h"

static result_t R;

/* ------------------------------------------------------------------------ */
/* Refused                                                                   */

/* The first line of a message says what it is: if it is not "Key: Value",
 * the stream is out of sync (framing is lost). */
static void test_malformed_first_line_of_a_message_is_a_protocol_error(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Response: Success\r\n\r\nGARBAGE\r\n\r\n");
    assert_int_equal(R.n, 2);
    assert_error(&R, AMI_E_PROTOCOL, "no ':' separator");
    assert_non_null(strstr(R.err.msg, "line 1"));
    assert_non_null(strstr(R.err.msg, "GARBAGE"));

    PARSE(&R, NULL, BANNER ": Success\r\n\r\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_PROTOCOL, "empty key");

    PARSE(&R, NULL, BANNER "Respo\0nse: Success\r\n\r\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_PROTOCOL, "NUL byte");
    assert_non_null(strstr(R.err.msg, "\"Respo\""));

    PARSE(&R, NULL, BANNER "Response: Success\r\r\n\r\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_PROTOCOL, "CR not followed by LF");

    PARSE(&R, NULL, BANNER "Event: A\r\n\r\nEvent: one\rtwo\r\n\r\n");
    assert_int_equal(R.n, 2);
    assert_error(&R, AMI_E_PROTOCOL, "CR not followed by LF");
    assert_non_null(strstr(R.err.msg, "Event: one"));
    assert_int_equal(R.bad_lines, 0);
}

static void test_complete_line_over_max_line_is_a_limit_error(void **state)
{
    (void)state;
    ami_parser_limits_t lim = small_limits(32, 0, 1024);
    /* exactly max_line (32) bytes before the CRLF: fine */
    PARSE(&R, &lim, BANNER "Response: Success\r\nMessage: 12345678901234567890123\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_hdr(&R.m[1], 1, "Message", "12345678901234567890123");
    /* one more byte: refused */
    PARSE(&R, &lim, BANNER "Response: Success\r\nMessage: 123456789012345678901234\r\n\r\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "longer than max_line (32 bytes");
    assert_non_null(strstr(R.err.msg, "line 2"));
    /* the same with a bare LF */
    PARSE(&R, &lim, BANNER "Response: Success\nMessage: 123456789012345678901234\n\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "max_line");
}

static void test_partial_line_over_max_line_errors_without_newline(void **state)
{
    (void)state;
    ami_parser_limits_t lim = small_limits(32, 0, 1024);
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, &lim), 0);
    /* 32 bytes of a line, no terminator yet: wait */
    RUN(&p, BANNER "Response: Success\r\nMessage: 12345678901234567890123");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 1);
    /* its CR: still a legal 32-byte line if the LF follows */
    run_parser(&R, &p, "\r", 1, 0);
    assert_int_equal(R.rc, 0);
    run_parser(&R, &p, "\n\r\n", 3, 0);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 1);
    assert_hdr(&R.m[0], 1, "Message", "12345678901234567890123");
    assert_int_equal(R.buffered, 0);
    ami_parser_deinit(&p);

    /* a line that never ends: refused once past the bound, no newline
     * needed (max_line + a possible CR + 1 byte = 34 bytes buffered) */
    assert_int_equal(ami_parser_init(&p, &lim), 0);
    RUN(&p, BANNER "Response: Success\r\nMessage: 1234567890123456789012345");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "longer than max_line (32 bytes");
    assert_non_null(strstr(R.err.msg, "Message: 1234"));
    ami_parser_deinit(&p);

    /* byte by byte: refused as soon as the 34th byte arrives */
    assert_int_equal(ami_parser_init(&p, &lim), 0);
    run_parser(&R, &p, BANNER, sizeof BANNER - 1, 0);
    assert_int_equal(R.n, 1);
    const char line[] = "Message: 1234567890123456789012345678901234567890";
    size_t i = 0;
    for (; i < sizeof line - 1; i++) {
        run_parser(&R, &p, line + i, 1, 0);
        if (R.rc != 0)
            break;
    }
    assert_int_equal(i + 1, 34);
    assert_error(&R, AMI_E_LIMIT, "max_line");
    ami_parser_deinit(&p);
}

static void test_too_many_headers_is_a_limit_error(void **state)
{
    (void)state;
    ami_parser_limits_t lim = small_limits(0, 4, 0);
    PARSE(&R, &lim, BANNER "Response: Success\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_int_equal(R.m[1].nhdrs, 4);
    PARSE(&R, &lim, BANNER "Response: Success\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "more than max_headers (4)");
}

/* A message of headers "Hnn: <20 x's>" (30 bytes per line with CRLF). */
static size_t build_big(char *out, size_t size, size_t lines, bool end)
{
    size_t n = (size_t)snprintf(out, size, BANNER "Response: Success\r\n");
    for (size_t i = 0; i < lines; i++)
        n += (size_t)snprintf(out + n, size - n, "H%02zu: xxxxxxxxxxxxxxxxxxxxxxx\r\n", i);
    if (end)
        n += (size_t)snprintf(out + n, size - n, "\r\n");
    assert_true(n < size);
    return n;
}

static void test_partial_message_over_max_message_is_a_limit_error(void **state)
{
    (void)state;
    ami_parser_limits_t lim = small_limits(64, 0, 256);
    static char in[4096];
    /* complete header lines, never the blank line: 19 + 9 x 30 = 289 bytes */
    size_t n = build_big(in, sizeof in, 9, false);
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "larger than max_message (256 bytes)");
    /* under the bound and unfinished: just waits */
    n = build_big(in, sizeof in, 7, false); /* 19 + 210 = 229 */
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.buffered, 229);
    /* ... and a partial line that takes the message past the bound */
    memcpy(in + n, "Partial: 0123456789012345678901", 31);
    parse_both(&R, &lim, true, in, n + 31);
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "max_message (256");
}

static void test_complete_message_over_max_message_is_a_limit_error(void **state)
{
    (void)state;
    ami_parser_limits_t lim = small_limits(64, 0, 256);
    static char in[4096];
    /* 19 + 7 x 30 + 2 = 231 bytes: fine */
    size_t n = build_big(in, sizeof in, 7, true);
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_int_equal(R.m[1].wire_len, 231);
    /* exactly max_message: 231 + "Pad: " + 18 + CRLF = 256 */
    n = build_big(in, sizeof in, 7, false);
    n += (size_t)snprintf(in + n, sizeof in - n, "Pad: 123456789012345678\r\n\r\n");
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_int_equal(R.m[1].wire_len, 256);
    /* one byte more */
    n = build_big(in, sizeof in, 7, false);
    n += (size_t)snprintf(in + n, sizeof in - n, "Pad: 1234567890123456789\r\n\r\n");
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "larger than max_message (256 bytes)");
    /* far over, in one feed */
    n = build_big(in, sizeof in, 40, true);
    parse_both(&R, &lim, true, in, n);
    assert_int_equal(R.n, 1);
    assert_error(&R, AMI_E_LIMIT, "max_message");
}

static void test_garbage_before_banner_is_a_protocol_error(void **state)
{
    (void)state;
    PARSE(&R, NULL, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    assert_int_equal(R.n, 0);
    assert_error(&R, AMI_E_PROTOCOL, "banner");
    assert_non_null(strstr(R.err.msg, "SSH-2.0-OpenSSH"));
    /* a message where the banner should be */
    PARSE(&R, NULL, "Response: Success\r\nActionID: 1\r\n\r\n");
    assert_int_equal(R.n, 0);
    assert_error(&R, AMI_E_PROTOCOL, "expected the AMI banner");
    /* garbage, then a banner */
    PARSE(&R, NULL, "HTTP/1.1 400 Bad Request\r\n" BANNER);
    assert_int_equal(R.n, 0);
    assert_error(&R, AMI_E_PROTOCOL, "banner");
}

static void test_stream_cut_mid_message_waits_for_the_rest(void **state)
{
    (void)state;
    static const char *const tails[] = {"Mess", "Message: ok", "Message: ok\r", "Message: ok\r\n",
                                        "Message: ok\r\n\r"};
    for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
        char head[256];
        int n = snprintf(head, sizeof head, BANNER "Response: Success\r\nActionID: 42\r\n%s", tails[t]);
        ami_parser_t p;
        assert_int_equal(ami_parser_init(&p, NULL), 0);
        run_parser(&R, &p, head, (size_t)n, 0);
        assert_int_equal(R.rc, 0);
        assert_int_equal(R.n, 1);
        assert_int_equal(R.buffered, (size_t)n - (sizeof BANNER - 1));
        assert_int_equal(R.errors, 0);
        /* the rest of it, later */
        const char *full = "Response: Success\r\nActionID: 42\r\nMessage: ok\r\n\r\n";
        size_t done = R.buffered;
        run_parser(&R, &p, full + done, strlen(full) - done, 0);
        assert_int_equal(R.rc, 0);
        assert_int_equal(R.n, 1);
        assert_int_equal(R.m[0].kind, AMI_MSG_RESPONSE);
        assert_int_equal(R.m[0].nhdrs, 3);
        assert_hdr(&R.m[0], 0, "Response", "Success");
        assert_hdr(&R.m[0], 1, "ActionID", "42");
        assert_hdr(&R.m[0], 2, "Message", "ok");
        assert_int_equal(R.m[0].actionid_idx, 1);
        assert_int_equal(R.m[0].wire_len, strlen(full));
        assert_int_equal(R.buffered, 0);
        ami_parser_deinit(&p);
    }
}

static void test_errors_are_sticky_until_reset(void **state)
{
    (void)state;
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    RUN(&p, BANNER "Response: Success\r\n\r\nbroken\r\n\r\nResponse: Success\r\n\r\n");
    assert_int_equal(R.n, 2);
    assert_error(&R, AMI_E_PROTOCOL, "no ':' separator");
    ami_err_t first = R.err;

    /* next() keeps failing with the same error, and counts it once */
    for (int i = 0; i < 3; i++) {
        ami_msg_t m;
        ami_err_t err;
        memset(&err, 0, sizeof err);
        assert_int_equal(ami_parser_next(&p, &m, &err), -1);
        assert_int_equal(err.code, first.code);
        assert_string_equal(err.msg, first.msg);
    }
    assert_int_equal(ami_parser_stats(&p)->errors, 1);

    /* reset: the banner is expected again */
    ami_parser_reset(&p);
    assert_int_equal(ami_parser_buffered(&p), 0);
    RUN(&p, "Response: Success\r\n\r\n");
    assert_int_equal(R.n, 0);
    assert_int_equal(R.rc, -1);
    assert_int_equal(R.err.code, AMI_E_PROTOCOL);
    assert_non_null(strstr(R.err.msg, "banner"));
    assert_int_equal(ami_parser_stats(&p)->errors, 2);

    /* reset again: normal parsing */
    ami_parser_reset(&p);
    RUN(&p, BANNER "Response: Success\r\nActionID: 7\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_banner(&R.m[0], "Asterisk Call Manager/11.0.0");
    assert_hdr(&R.m[1], 1, "ActionID", "7");
    assert_int_equal(R.m[1].actionid_idx, 1);
    assert_int_equal(ami_parser_stats(&p)->errors, 2);
    ami_parser_deinit(&p);
}

static void test_feed_after_error_returns_minus_one(void **state)
{
    (void)state;
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    RUN(&p, BANNER ": x\r\n");
    assert_error(&R, AMI_E_PROTOCOL, "empty key");
    size_t before = ami_parser_buffered(&p);
    ami_err_t err;
    memset(&err, 0, sizeof err);
    assert_int_equal(ami_parser_feed(&p, "\r\n", 2, &err), -1);
    assert_int_equal(err.code, AMI_E_PROTOCOL);
    assert_string_equal(err.msg, R.err.msg);
    assert_int_equal(ami_parser_buffered(&p), before);
    /* with no err out-parameter too */
    assert_int_equal(ami_parser_feed(&p, "\r\n", 2, NULL), -1);
    ami_parser_deinit(&p);
}

/* ------------------------------------------------------------------------ */
/* Accepted                                                                  */

static void test_bare_lf_line_endings_are_accepted(void **state)
{
    (void)state;
    PARSE(&R, NULL, "Asterisk Call Manager/11.0.0\nResponse: Success\nActionID: lf\nMessage: a: b\n\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_banner(&R.m[0], "Asterisk Call Manager/11.0.0");
    assert_int_equal(R.m[0].wire_len, 29);
    assert_int_equal(R.m[1].kind, AMI_MSG_RESPONSE);
    assert_int_equal(R.m[1].nhdrs, 3);
    assert_hdr(&R.m[1], 1, "ActionID", "lf");
    assert_hdr(&R.m[1], 2, "Message", "a: b");
    assert_int_equal(R.m[1].wire_len, strlen("Response: Success\nActionID: lf\nMessage: a: b\n\n"));
    assert_int_equal(R.buffered, 0);
}

static void test_message_ended_by_crlf_lf_is_accepted(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Response: Success\r\nActionID: 1\r\n\nEvent: Hangup\r\nCause: 16\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 3);
    assert_int_equal(R.m[1].nhdrs, 2);
    assert_hdr(&R.m[1], 1, "ActionID", "1");
    assert_int_equal(R.m[1].wire_len, strlen("Response: Success\r\nActionID: 1\r\n\n"));
    assert_int_equal(R.m[2].kind, AMI_MSG_EVENT);
    assert_hdr(&R.m[2], 0, "Event", "Hangup");
    assert_hdr(&R.m[2], 1, "Cause", "16");
    assert_int_equal(R.buffered, 0);
}

static void test_header_without_value_is_empty(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Event: RTCPReceived\r\nReportBlock:\r\nAccountCode: \r\nTo: x\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_int_equal(R.m[1].nhdrs, 4);
    assert_hdr(&R.m[1], 1, "ReportBlock", "");
    assert_hdr(&R.m[1], 2, "AccountCode", "");
    assert_hdr(&R.m[1], 3, "To", "x");
}

static void test_extra_blank_lines_between_messages_are_skipped(void **state)
{
    (void)state;
    PARSE(&R, NULL,
          "\r\n" BANNER "\r\n\r\nResponse: Success\r\nActionID: 1\r\n\r\n\r\n\n\r\nEvent: FullyBooted\r\n"
          "Status: Fully Booted\r\n\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 3);
    assert_banner(&R.m[0], "Asterisk Call Manager/11.0.0");
    assert_int_equal(R.m[1].nhdrs, 2);
    assert_hdr(&R.m[1], 0, "Response", "Success");
    assert_hdr(&R.m[1], 1, "ActionID", "1");
    assert_int_equal(R.m[1].wire_len, strlen("Response: Success\r\nActionID: 1\r\n\r\n"));
    assert_int_equal(R.m[2].nhdrs, 2);
    assert_hdr(&R.m[2], 0, "Event", "FullyBooted");
    assert_hdr(&R.m[2], 1, "Status", "Fully Booted");
    assert_int_equal(R.buffered, 0);
}

static void test_response_pong_is_a_successful_response(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Response: Pong\r\nActionID: p\r\n\r\n");
    assert_int_equal(R.n, 2);
    assert_int_equal(R.m[1].kind, AMI_MSG_RESPONSE);
    assert_hdr(&R.m[1], 0, "Response", "Pong");
    /* is_success on a live message */
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    const char in[] = BANNER "Response: Pong\r\nActionID: p\r\n\r\n";
    assert_int_equal(ami_parser_feed(&p, in, sizeof in - 1, NULL), 0);
    ami_msg_t m;
    assert_int_equal(ami_parser_next(&p, &m, NULL), 1);
    assert_int_equal(ami_parser_next(&p, &m, NULL), 1);
    assert_true(ami_msg_is_success(&m));
    assert_string_equal(ami_msg_name(&m), "Pong");
    ami_parser_deinit(&p);
}

static void test_eventlist_start_is_preserved_as_is(void **state)
{
    (void)state;
    PARSE(&R, NULL,
          BANNER "Response: Success\r\nActionID: l\r\nEventList: Start\r\nMessage: Channels will follow\r\n\r\n");
    assert_int_equal(R.n, 2);
    assert_hdr(&R.m[1], 2, "EventList", "Start");
    assert_hdr(&R.m[1], 3, "Message", "Channels will follow");
}

static void test_response_without_actionid_has_none(void **state)
{
    (void)state;
    PARSE(&R, NULL, BANNER "Response: Success\r\nPing: Pong\r\nTimestamp: 1.5\r\n\r\n");
    assert_int_equal(R.n, 2);
    assert_int_equal(R.m[1].actionid_idx, -1);
    assert_int_equal(R.m[1].nhdrs, 3);
}

static void test_legacy_command_output_with_inline_end_marker(void **state)
{
    (void)state;
    PARSE(&R, NULL,
          BANNER "Response: Follows\r\nPrivilege: Command\r\nActionID: x\r\nline one\r\n"
                 "Key: looks like a header\r\n\r\nlast line--END COMMAND--\r\n\r\n"
                 "Response: Success\r\nActionID: after\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 3);
    const cmsg_t *m = &R.m[1];
    assert_int_equal(m->kind, AMI_MSG_RESPONSE);
    assert_true(m->legacy);
    assert_int_equal(m->nhdrs, 7);
    assert_hdr(m, 0, "Response", "Follows");
    assert_hdr(m, 1, "Privilege", "Command");
    assert_hdr(m, 2, "ActionID", "x");
    assert_int_equal(m->actionid_idx, 2);
    /* raw lines become Output headers, a colon in them notwithstanding; the
     * blank line inside the output is an empty Output (it does not end the
     * message), and the inline marker is cut off its line */
    assert_hdr(m, 3, "Output", "line one");
    assert_hdr(m, 4, "Output", "Key: looks like a header");
    assert_hdr_content(m, 5, "Output", "");
    assert_hdr(m, 6, "Output", "last line");
    assert_int_equal(m->wire_len, strlen("Response: Follows\r\nPrivilege: Command\r\nActionID: x\r\nline one\r\n"
                                         "Key: looks like a header\r\n\r\nlast line--END COMMAND--\r\n\r\n"));
    /* and the next message is an ordinary one again */
    assert_false(R.m[2].legacy);
    assert_int_equal(R.m[2].nhdrs, 2);
    assert_hdr(&R.m[2], 1, "ActionID", "after");
}

static void legacy_blank_output_line_is_nul_terminated(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        BANNER "Response: Follows\r\nActionID: x\r\none\r\n\r\ntwo\r\n--END COMMAND--\r\n\r\n",
        BANNER "Response: Follows\nActionID: x\none\n\ntwo\n--END COMMAND--\n\n",
    };
    for (size_t t = 0; t < 2; t++) {
        ami_parser_t p;
        assert_int_equal(ami_parser_init(&p, NULL), 0);
        assert_int_equal(ami_parser_feed(&p, inputs[t], strlen(inputs[t]), NULL), 0);
        ami_msg_t m;
        assert_int_equal(ami_parser_next(&p, &m, NULL), 1);
        assert_int_equal(ami_parser_next(&p, &m, NULL), 1);
        size_t nhdrs = m.nhdrs, len = 99;
        const char *v = nhdrs == 5 ? ami_msg_value(&m, 3, &len) : "?";
        char first = v[0];
        size_t c_len = strlen(v);
        ami_parser_deinit(&p);
        assert_int_equal(nhdrs, 5); /* Response, ActionID, one, "", two */
        assert_int_equal(len, 0);
        assert_int_equal(first, '\0');
        assert_int_equal(c_len, 0);
    }
}

static void test_legacy_command_output_with_end_marker_on_its_own_line(void **state)
{
    (void)state;
    PARSE(&R, NULL,
          BANNER "Response: Follows\r\nPrivilege: Command\r\nActionID: y\r\n"
                 "Asterisk 13.38.3 built by root\r\n   indented: line\r\n--END COMMAND--\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    const cmsg_t *m = &R.m[1];
    assert_true(m->legacy);
    assert_int_equal(m->nhdrs, 5);
    assert_hdr(m, 2, "ActionID", "y");
    assert_hdr(m, 3, "Output", "Asterisk 13.38.3 built by root");
    assert_hdr(m, 4, "Output", "   indented: line");
    assert_int_equal(R.buffered, 0);

    /* a live message: the Output keys are found by the accessors */
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    const char in[] = BANNER "Response: Follows\r\nActionID: y\r\none\r\ntwo\r\n--END COMMAND--\r\n\r\n";
    assert_int_equal(ami_parser_feed(&p, in, sizeof in - 1, NULL), 0);
    ami_msg_t msg;
    assert_int_equal(ami_parser_next(&p, &msg, NULL), 1);
    assert_int_equal(ami_parser_next(&p, &msg, NULL), 1);
    assert_true(msg.legacy_command);
    assert_true(ami_msg_is_success(&msg));
    assert_string_equal(ami_msg_action_id(&msg, NULL), "y");
    long a = ami_msg_next_index(&msg, "Output", 6, 0);
    long b = ami_msg_next_index(&msg, "output", 6, (size_t)a + 1);
    assert_int_equal(a, 2);
    assert_int_equal(b, 3);
    assert_int_equal(ami_msg_next_index(&msg, "Output", 6, (size_t)b + 1), -1);
    assert_string_equal(ami_msg_get(&msg, "Output"), "one");
    assert_string_equal(ami_msg_value(&msg, (size_t)b, NULL), "two");
    ami_parser_deinit(&p);
}

static void test_proxy_banner_is_accepted(void **state)
{
    (void)state;
    PARSE(&R, NULL, "Asterisk Call Manager Proxy/1.0\r\nResponse: Success\r\nActionID: 1\r\n\r\n");
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_banner(&R.m[0], "Asterisk Call Manager Proxy/1.0");
    assert_int_equal(R.m[1].kind, AMI_MSG_RESPONSE);
}

static void test_no_banner_expected_parses_actions_as_other(void **state)
{
    (void)state;
    const char in[] = "Action: Ping\r\nActionID: 1\r\n\r\naction: Logoff\nactionid: 2\n\n";
    parse_both(&R, NULL, false, in, sizeof in - 1);
    assert_int_equal(R.rc, 0);
    assert_int_equal(R.n, 2);
    assert_int_equal(R.m[0].kind, AMI_MSG_OTHER);
    assert_hdr(&R.m[0], 0, "Action", "Ping");
    assert_hdr(&R.m[0], 1, "ActionID", "1");
    assert_int_equal(R.m[0].actionid_idx, 1);
    assert_int_equal(R.m[1].kind, AMI_MSG_OTHER);
    assert_hdr(&R.m[1], 0, "action", "Logoff");
    assert_int_equal(R.m[1].actionid_idx, 1);
    /* the same with the banner expected is refused */
    parse_both(&R, NULL, true, in, sizeof in - 1);
    assert_int_equal(R.n, 0);
    assert_error(&R, AMI_E_PROTOCOL, "banner");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_first_line_of_a_message_is_a_protocol_error),
        cmocka_unit_test(test_complete_line_over_max_line_is_a_limit_error),
        cmocka_unit_test(test_partial_line_over_max_line_errors_without_newline),
        cmocka_unit_test(test_too_many_headers_is_a_limit_error),
        cmocka_unit_test(test_partial_message_over_max_message_is_a_limit_error),
        cmocka_unit_test(test_complete_message_over_max_message_is_a_limit_error),
        cmocka_unit_test(test_garbage_before_banner_is_a_protocol_error),
        cmocka_unit_test(test_stream_cut_mid_message_waits_for_the_rest),
        cmocka_unit_test(test_errors_are_sticky_until_reset),
        cmocka_unit_test(test_feed_after_error_returns_minus_one),
        cmocka_unit_test(test_bare_lf_line_endings_are_accepted),
        cmocka_unit_test(test_message_ended_by_crlf_lf_is_accepted),
        cmocka_unit_test(test_header_without_value_is_empty),
        cmocka_unit_test(test_extra_blank_lines_between_messages_are_skipped),
        cmocka_unit_test(test_response_pong_is_a_successful_response),
        cmocka_unit_test(test_eventlist_start_is_preserved_as_is),
        cmocka_unit_test(test_response_without_actionid_has_none),
        cmocka_unit_test(test_legacy_command_output_with_inline_end_marker),
        cmocka_unit_test(test_legacy_command_output_with_end_marker_on_its_own_line),
        cmocka_unit_test(legacy_blank_output_line_is_nul_terminated),
        cmocka_unit_test(test_proxy_banner_is_accepted),
        cmocka_unit_test(test_no_banner_expected_parses_actions_as_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
