/* The strict Prometheus text checker (tests/support/prom_check.h) the
 * endpoint's and the engine's tests rely on: it must accept valid
 * exposition text and reject each kind of invalid text with its reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "prom_check.h"

static void prom_check_accepts_valid_text(void **state)
{
    (void)state;
    const char *good[] = {
        "",
        "# a free comment\n#\n",
        "# HELP a Some \\\\ help\\n here.\n# TYPE a counter\na 1\n",
        "# HELP a\n# TYPE a gauge\na -1.5e-3\n",
        "a{} 1\n",
        "a{b=\"c \\\\ \\\" \\n\",d=\"\xc3\xa9\"} NaN 1700000000000\n",
        "a{b=\"\"} +Inf\na{b=\"x\"} -Inf -5\n",
        "x:y_z 0.5\n",
        "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 3\n"
        "h_sum 1.2\nh_count 3\n",
        "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"1\"} 2\ns_sum 3\ns_count 2\n",
        "a 1\n# TYPE b counter\nb 2\n",
    };
    char why[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (prom_check(good[i], strlen(good[i]), why, sizeof why) != 0)
            fail_msg("case %zu rejected: %s", i, why);
}

static void prom_check_rejects_invalid_text(void **state)
{
    (void)state;
    const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"a 1", "line 1: the last line does not end in a newline"},
        {"a 1\n\nb 2\n", "line 2: empty line"},
        {"a  1\n", "not a float"},
        {"a 1 \n", "trailing blank"},
        {" a 1\n", "metric name"},
        {"1a 1\n", "metric name"},
        {"a-b 1\n", "expected one space"},
        {"a x\n", "'x' is not a float"},
        {"a Inf\n", "not a float"},
        {"a nan\n", "not a float"},
        {"a 0x10\n", "not a float"},
        {"a 1 12.5\n", "not a timestamp"},
        {"a{b=\"c\\x\"} 1\n", "invalid escape"},
        {"a{b=\"c\",} 1\n", "trailing comma"},
        {"a{b=\"c\" } 1\n", "expected ',' or '}'"},
        {"a{__b=\"c\"} 1\n", "reserved"},
        {"a{b=\"c\",b=\"d\"} 1\n", "label b twice"},
        {"a{b=c} 1\n", "expected =\""},
        {"a{1b=\"c\"} 1\n", "invalid label name"},
        {"a{b=\"c} 1\n", "unterminated"},
        {"a{b=\"\xff\"} 1\n", "UTF-8"},
        {"a{b=\"\xc0\xaf\"} 1\n", "UTF-8"},
        {"# HELP a bad \\x escape\n", "invalid escape"},
        {"# HELP\n", "HELP without"},
        {"# HELP a x\n# HELP a y\n", "second HELP"},
        {"# TYPE a\n", "TYPE must be"},
        {"# TYPE a foo\n", "unknown type 'foo'"},
        {"# TYPE a counter\n# TYPE a gauge\n", "second TYPE"},
        {"a 1\n# TYPE a counter\n", "TYPE for a after its first sample"},
        {"a 1\nb 1\na 2\n", "line 3: a sample for family a after another family began"},
        {"a{x=\"1\"} 1\na{x=\"1\"} 2\n", "appears twice"},
        {"# TYPE a counter\na -1\n", "counter a is negative"},
        {"# TYPE h histogram\nh 1\n", "not _bucket, _sum or _count"},
        {"# TYPE h histogram\nh_bucket 1\n", "float le"},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n", "without le=\"+Inf\""},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n", "must not decrease"},
        {"# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n", "must increase"},
        {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", "differs from the +Inf bucket"},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 1\n", "without le=\"+Inf\""},
        {"# TYPE s summary\ns 1\n", "quantile"},
        {"a 1\r\n", "trailing blank or CR"},
    };
    char why[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (prom_check(bad[i].text, strlen(bad[i].text), why, sizeof why) == 0)
            fail_msg("case %zu accepted: %s", i, bad[i].text);
        if (!strstr(why, bad[i].why))
            fail_msg("case %zu: why is \"%s\", want \"%s\"", i, why, bad[i].why);
    }
    assert_int_equal(prom_check("a\0 1\n", 5, why, sizeof why), -1);
    assert_non_null(strstr(why, "NUL"));
    assert_int_equal(prom_check("a 1", 3, NULL, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prom_check_accepts_valid_text),
        cmocka_unit_test(prom_check_rejects_invalid_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
