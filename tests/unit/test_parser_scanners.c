/*
 * The parser's line scanners (ami_scanner_t: plain C, SSE2, AVX2,
 * AVX-512BW, chosen at run time): every kind this CPU has must give exactly
 * the messages, bad lines and errors of the plain C one, wherever a line
 * ends, a ':' or a bad byte falls relative to the 64-byte blocks they
 * classify, and for lines longer than a block. The event name's hash folds
 * ASCII capitals and nothing else. (Every input of the malformed and
 * bad-line tests also runs through each scanner: see parse_both.)
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

#include "parse_run.h"
#include "protocol/message.h"
#include "protocol/parser.h"

static result_t REF, GOT;

/* Each kind this CPU has against the plain C scanner, in one feed and in
 * chunks of `chunk` bytes. */
static void assert_all_scanners_agree(const char *in, size_t len, size_t chunk)
{
    parse_kind(&REF, NULL, true, in, len, 0, AMI_SCANNER_SCALAR);
    for (int k = AMI_SCANNER_SCALAR; k < AMI_SCANNER_COUNT; k++) {
        if (!ami_scanner_available((ami_scanner_t)k))
            continue;
        parse_kind(&GOT, NULL, true, in, len, 0, (ami_scanner_t)k);
        assert_same_outcome(&REF, &GOT);
        parse_kind(&GOT, NULL, true, in, len, chunk, (ami_scanner_t)k);
        assert_same_outcome(&REF, &GOT);
    }
}

static void test_unavailable_scanners_are_refused_and_the_current_one_kept(void **state)
{
    (void)state;
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    ami_scanner_t best = ami_parser_scanner(&p);
    assert_int_not_equal(best, AMI_SCANNER_AUTO);
    assert_true(ami_scanner_available(best));
    assert_true(ami_scanner_available(AMI_SCANNER_SCALAR));
    for (int k = AMI_SCANNER_SCALAR; k < AMI_SCANNER_COUNT; k++) {
        assert_int_equal(ami_parser_use_scanner(&p, AMI_SCANNER_SCALAR), 0);
        bool have = ami_scanner_available((ami_scanner_t)k);
        assert_int_equal(ami_parser_use_scanner(&p, (ami_scanner_t)k), have ? 0 : -1);
        assert_int_equal(ami_parser_scanner(&p), have ? (ami_scanner_t)k : AMI_SCANNER_SCALAR);
        assert_string_not_equal(ami_scanner_name((ami_scanner_t)k), "unknown");
    }
    assert_int_equal(ami_parser_use_scanner(&p, (ami_scanner_t)AMI_SCANNER_COUNT), -1);
    assert_int_equal(ami_parser_use_scanner(&p, AMI_SCANNER_AUTO), 0);
    assert_int_equal(ami_parser_scanner(&p), best);
    ami_parser_deinit(&p);
}

/* A first line of length a shifts where the second line's bytes fall in a
 * block; the byte under test sits at offset b of the second line's value. */
static void test_every_scanner_agrees_wherever_a_byte_falls_in_a_block(void **state)
{
    (void)state;
    static const char specials[] = {':', '\0', '\r', '\n', ' ', 'x'};
    char in[512];
    size_t runs = 0;
    for (size_t s = 0; s < sizeof specials; s++)
        for (size_t a = 0; a < 70; a += 3)
            for (size_t b = 0; b < 90; b++) {
                size_t n = (size_t)snprintf(in, sizeof in, BANNER "Event: Block\r\nA: ");
                memset(in + n, 'a', a);
                n += a;
                n += (size_t)snprintf(in + n, sizeof in - n, "\r\nVal: ");
                memset(in + n, 'v', b);
                n += b;
                in[n++] = specials[s];
                n += (size_t)snprintf(in + n, sizeof in - n, "y\r\nZ: 1\r\n\r\nEvent: After\r\n\r\n");
                assert_all_scanners_agree(in, n, 7 + (a + b) % 23);
                runs++;
            }
    assert_true(runs > 10000);
}

/* Lines of one to several blocks, keys and values of every length around
 * the block size. */
static void test_every_scanner_agrees_on_lines_longer_than_a_block(void **state)
{
    (void)state;
    static char in[4096];
    for (size_t len = 1; len < 300; len += 7) {
        ami_parser_t ref, got;
        for (int k = AMI_SCANNER_SCALAR; k < AMI_SCANNER_COUNT; k++) {
            if (!ami_scanner_available((ami_scanner_t)k))
                continue;
            size_t n = (size_t)snprintf(in, sizeof in, BANNER "Event: Long\r\n");
            memset(in + n, 'k', len);
            n += len;
            n += (size_t)snprintf(in + n, sizeof in - n, ": ");
            memset(in + n, 'v', len * 2);
            n += len * 2;
            n += (size_t)snprintf(in + n, sizeof in - n, "\r\nAfter: x\r\n\r\n");
            assert_int_equal(ami_parser_init(&ref, NULL), 0);
            assert_int_equal(ami_parser_init(&got, NULL), 0);
            assert_int_equal(ami_parser_use_scanner(&ref, AMI_SCANNER_SCALAR), 0);
            assert_int_equal(ami_parser_use_scanner(&got, (ami_scanner_t)k), 0);
            assert_int_equal(ami_parser_feed(&ref, in, n, NULL), 0);
            assert_int_equal(ami_parser_feed(&got, in, n, NULL), 0);
            ami_msg_t a, b;
            for (int m = 0; m < 2; m++) {
                assert_int_equal(ami_parser_next(&ref, &a, NULL), 1);
                assert_int_equal(ami_parser_next(&got, &b, NULL), 1);
                assert_int_equal(a.nhdrs, b.nhdrs);
                assert_int_equal(a.wire_len, b.wire_len);
                for (size_t h = 0; h < a.nhdrs; h++) {
                    size_t kl1, kl2, vl1, vl2;
                    const char *k1 = ami_msg_key(&a, h, &kl1), *k2 = ami_msg_key(&b, h, &kl2);
                    const char *v1 = ami_msg_value(&a, h, &vl1), *v2 = ami_msg_value(&b, h, &vl2);
                    assert_int_equal(kl1, kl2);
                    assert_int_equal(vl1, vl2);
                    assert_memory_equal(k1, k2, kl1);
                    assert_memory_equal(v1, v2, vl1);
                }
            }
            assert_int_equal(a.nhdrs, 3);
            ami_parser_deinit(&ref);
            ami_parser_deinit(&got);
        }
    }
}

static void test_name_hash_folds_ascii_capitals_and_nothing_else(void **state)
{
    (void)state;
    assert_int_equal(ami_name_hash("Newchannel", 10), ami_name_hash("NEWCHANNEL", 10));
    assert_int_equal(ami_name_hash("DeviceStateChange", 17), ami_name_hash("devicestatechange", 17));
    assert_int_not_equal(ami_name_hash("Hangup", 6), ami_name_hash("Hangup ", 7));
    assert_int_not_equal(ami_name_hash("Hangup", 6), ami_name_hash("HangupRequest", 13));
    /* Every byte against its case partner: folded only for 'A'..'Z'. */
    for (int c = 0; c < 256; c++) {
        char one = (char)c, other = (char)(c ^ 0x20);
        bool letter = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
        for (size_t at = 0; at < 20; at++) {
            char a[20], b[20];
            memset(a, 'q', sizeof a);
            memset(b, 'q', sizeof b);
            a[at] = one;
            b[at] = other;
            uint32_t ha = ami_name_hash(a, at + 1), hb = ami_name_hash(b, at + 1);
            if (letter)
                assert_int_equal(ha, hb);
            else
                assert_int_not_equal(ha, hb);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unavailable_scanners_are_refused_and_the_current_one_kept),
        cmocka_unit_test(test_every_scanner_agrees_wherever_a_byte_falls_in_a_block),
        cmocka_unit_test(test_every_scanner_agrees_on_lines_longer_than_a_block),
        cmocka_unit_test(test_name_hash_folds_ascii_capitals_and_nothing_else),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
