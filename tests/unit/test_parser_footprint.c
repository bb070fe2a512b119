/* ami_parser_footprint: what the parser holds allocated, to the byte, as the
 * engine's allocator counts it (the soak subtracts it to tell a buffer at its
 * high-water mark from a leak). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "protocol/parser.h"
#include "util/alloc.h"

static void footprint_is_exactly_what_the_parser_allocated(void **state)
{
    (void)state;
    int64_t base = ami_alloc_live_bytes();
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, NULL), 0);
    assert_int_equal(ami_alloc_live_bytes() - base, (int64_t)ami_parser_footprint(&p));
    size_t got;
    char *dst = ami_parser_reserve(&p, 64 << 10, &got);
    assert_non_null(dst);
    assert_true(got >= 64 << 10);
    assert_int_equal(ami_alloc_live_bytes() - base, (int64_t)ami_parser_footprint(&p));
    /* many headers: the header array grows too */
    static const char BANNER[] = "Asterisk Call Manager/11.0.0\r\n";
    memcpy(dst, BANNER, sizeof BANNER - 1);
    ami_parser_commit(&p, sizeof BANNER - 1);
    char line[32];
    assert_int_equal(ami_parser_feed(&p, "Event: Big\r\n", 12, NULL), 0);
    for (int i = 0; i < 300; i++) {
        int n = snprintf(line, sizeof line, "K%d: v\r\n", i);
        assert_int_equal(ami_parser_feed(&p, line, (size_t)n, NULL), 0);
    }
    assert_int_equal(ami_parser_feed(&p, "\r\n", 2, NULL), 0);
    ami_msg_t m;
    ami_err_t err;
    assert_int_equal(ami_parser_next(&p, &m, &err), 1); /* the banner */
    assert_int_equal(ami_parser_next(&p, &m, &err), 1);
    assert_int_equal(m.nhdrs, 301);
    assert_int_equal(ami_alloc_live_bytes() - base, (int64_t)ami_parser_footprint(&p));
    ami_parser_deinit(&p);
    assert_int_equal(ami_alloc_live_bytes(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(footprint_is_exactly_what_the_parser_allocated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
