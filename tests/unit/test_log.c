/* The logger: exact logfmt and JSON lines, redaction, truncation, levels,
 * and the async writer's bounded ring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log_capture.h"
#include "obs/log.h"
#include "util/clock.h"

/* A timestamp is 2026-11-27T17:38:47.112Z: 24 bytes, digits where digits go. */
static void assert_ts(const char *ts)
{
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd')
            assert_true(ts[i] >= '0' && ts[i] <= '9');
        else
            assert_int_equal(ts[i], shape[i]);
    }
}

/* The line after its timestamp, which is checked for shape. */
static const char *after_ts(const char *line, ami_log_format_t fmt)
{
    const char *prefix = fmt == AMI_LOG_FMT_JSON ? "{\"ts\":\"" : "ts=";
    size_t n = strlen(prefix);
    assert_memory_equal(line, prefix, n);
    assert_ts(line + n);
    const char *rest = line + n + 24;
    if (fmt == AMI_LOG_FMT_JSON) {
        assert_memory_equal(rest, "\",", 2);
        rest += 2;
    }
    return rest;
}

static void logfmt_renders_typed_fields_in_order(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_LOGFMT, 0);
    AMI_LOG(lg, AMI_LOG_WARN, "correlation cap reached", AMI_F_STR("server_key", "pbx1"),
            AMI_F_INT("count", 100), AMI_F_UINT("big", 18446744073709551615ULL),
            AMI_F_DBL("ratio", 0.25), AMI_F_DBL("tenth", 0.1), AMI_F_BOOL("ok", true),
            AMI_F_BOOL("bad", false), AMI_F_INT("neg", -3));
    assert_int_equal(c.n, 1);
    assert_int_equal(c.level[0], AMI_LOG_WARN);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT),
                        " level=warn msg=\"correlation cap reached\" server_key=pbx1 count=100 "
                        "big=18446744073709551615 ratio=0.25 tenth=0.1 ok=true bad=false neg=-3");
    assert_int_equal(ami_logger_written(lg), 1);
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void logfmt_quotes_and_escapes_values_that_need_it(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_LOGFMT, 0);
    AMI_LOG(lg, AMI_LOG_INFO, "quoting", AMI_F_STR("plain", "abc"), AMI_F_STR("empty", ""),
            AMI_F_STR("space", "a b"), AMI_F_STR("eq", "a=b"), AMI_F_STR("quote", "say \"hi\""),
            AMI_F_STR("back", "back\\slash"), AMI_F_STR("tab", "a\tb"), AMI_F_STR("nl", "a\nb\r"),
            AMI_F_STR("ctl", "\x01"), AMI_F_STR("del", "\x7f"), AMI_F_STRN("bin", "a\0b", 3),
            AMI_F_STR("utf8", "caf\xc3\xa9"), AMI_F_STR("null", NULL));
    assert_int_equal(c.n, 1);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT),
                        " level=info msg=quoting plain=abc empty=\"\" space=\"a b\" eq=\"a=b\" "
                        "quote=\"say \\\"hi\\\"\" back=back\\slash tab=\"a\\tb\" nl=\"a\\nb\\r\" "
                        "ctl=\"\\x01\" del=\"\\x7f\" bin=\"a\\x00b\" utf8=caf\xc3\xa9 null=\"\"");
    assert_null(strchr(c.line[0], '\n'));
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void json_renders_one_object_with_typed_values(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_JSON, 0);
    AMI_LOG(lg, AMI_LOG_WARN, "correlation cap reached", AMI_F_STR("server_key", "pbx1"),
            AMI_F_INT("count", 100), AMI_F_UINT("big", 18446744073709551615ULL),
            AMI_F_DBL("ratio", 0.25), AMI_F_BOOL("ok", true), AMI_F_INT("neg", -3));
    assert_int_equal(c.n, 1);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_JSON),
                        "\"level\":\"warn\",\"msg\":\"correlation cap reached\",\"server_key\":\"pbx1\","
                        "\"count\":100,\"big\":18446744073709551615,\"ratio\":0.25,\"ok\":true,"
                        "\"neg\":-3}");
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void json_escapes_strings_and_passes_high_bytes(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_JSON, 0);
    AMI_LOG(lg, AMI_LOG_ERROR, "say \"hi\"", AMI_F_STR("bs", "a\\b"),
            AMI_F_STR("ctl", "\n\r\t\x01\x1f"), AMI_F_STR("del", "\x7f"),
            AMI_F_STR("utf8", "caf\xc3\xa9"), AMI_F_STRN("bin", "a\0b", 3), AMI_F_STR("k\"q", ""));
    assert_int_equal(c.n, 1);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_JSON),
                        "\"level\":\"error\",\"msg\":\"say \\\"hi\\\"\",\"bs\":\"a\\\\b\","
                        "\"ctl\":\"\\n\\r\\t\\u0001\\u001f\",\"del\":\"\x7f\",\"utf8\":\"caf\xc3\xa9\","
                        "\"bin\":\"a\\u0000b\",\"k\\\"q\":\"\"}");
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void json_renders_non_finite_doubles_as_strings(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_JSON, 0);
    AMI_LOG(lg, AMI_LOG_INFO, "d", AMI_F_DBL("nan", NAN), AMI_F_DBL("inf", INFINITY),
            AMI_F_DBL("ninf", -INFINITY), AMI_F_DBL("huge", 1e300), AMI_F_DBL("third", 1.0 / 3));
    assert_int_equal(c.n, 1);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_JSON),
                        "\"level\":\"info\",\"msg\":\"d\",\"nan\":\"NaN\",\"inf\":\"+Inf\","
                        "\"ninf\":\"-Inf\",\"huge\":1e+300,\"third\":0.33333333333333331}");
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void timestamp_is_utc_wall_clock_with_milliseconds(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_LOGFMT, 0);
    time_t before = time(NULL);
    AMI_LOG(lg, AMI_LOG_INFO, "now");
    time_t after = time(NULL);
    assert_int_equal(c.n, 1);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT), " level=info msg=now");
    struct tm tm = {0};
    assert_int_equal(sscanf(c.line[0], "ts=%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec),
                     6);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t logged = timegm(&tm);
    assert_true(logged >= before && logged <= after);
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void lines_below_the_level_are_skipped(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_WARN, AMI_LOG_FMT_LOGFMT, 0);
    assert_int_equal(ami_logger_level(lg), AMI_LOG_WARN);
    AMI_LOG(lg, AMI_LOG_DEBUG, "d");
    AMI_LOG(lg, AMI_LOG_INFO, "i");
    AMI_LOG(lg, AMI_LOG_WARN, "w");
    AMI_LOG(lg, AMI_LOG_ERROR, "e");
    assert_int_equal(c.n, 2);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT), " level=warn msg=w");
    assert_string_equal(after_ts(c.line[1], AMI_LOG_FMT_LOGFMT), " level=error msg=e");

    ami_logger_set_level(lg, AMI_LOG_DEBUG);
    AMI_LOG(lg, AMI_LOG_DEBUG, "d");
    assert_int_equal(c.n, 3);
    ami_logger_set_level(lg, AMI_LOG_OFF);
    AMI_LOG(lg, AMI_LOG_ERROR, "e");
    ami_log_fields(lg, AMI_LOG_OFF, "off is not a level to log at", NULL, 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(ami_logger_written(lg), 3);
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void secrets_are_redacted_at_debug_level_in_logfmt(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_DEBUG, AMI_LOG_FMT_LOGFMT, 0);
    AMI_LOG(lg, AMI_LOG_DEBUG, "login", AMI_F_STR("secret", "s3cr3t"), AMI_F_STR("Password", "hunter2"),
            AMI_F_STR("KEY", "k3y"), AMI_F_STR("token", "t0k"), AMI_F_STR("Authorization", "Bearer x"),
            AMI_F_STR("client_secret", "cs1"), AMI_F_STR("AMISecret", "as1"), AMI_F_INT("pin_secret", 1234),
            AMI_F_STR("server_key", "pbx1"), AMI_F_STR("keyboard", "qwerty"));
    assert_int_equal(c.n, 1);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT),
                        " level=debug msg=login secret=[redacted] Password=[redacted] KEY=[redacted] "
                        "token=[redacted] Authorization=[redacted] client_secret=[redacted] "
                        "AMISecret=[redacted] pin_secret=[redacted] server_key=pbx1 keyboard=qwerty");
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void secrets_are_redacted_at_debug_level_in_json(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_DEBUG, AMI_LOG_FMT_JSON, 0);
    AMI_LOG(lg, AMI_LOG_DEBUG, "login", AMI_F_STR("password", "hunter2"), AMI_F_BOOL("Token", true),
            AMI_F_DBL("aws_secret", 1.5), AMI_F_STR("user", "admin"));
    assert_int_equal(c.n, 1);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_JSON),
                        "\"level\":\"debug\",\"msg\":\"login\",\"password\":\"[redacted]\","
                        "\"Token\":\"[redacted]\",\"aws_secret\":\"[redacted]\",\"user\":\"admin\"}");
    ami_logger_free(lg);
    log_capture_free(&c);
}

static char *repeat(char ch, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, ch, n);
    s[n] = '\0';
    return s;
}

/* max_line 128: head (44 bytes) + two 34-byte fields + " truncated=true\n" is exactly 128. */
static void long_logfmt_line_is_cut_after_the_last_whole_field(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_LOGFMT, 128);
    char *x = repeat('x', 30);
    AMI_LOG(lg, AMI_LOG_INFO, "m", AMI_F_STR("f1", x), AMI_F_STR("f2", x), AMI_F_STR("f3", x));
    assert_int_equal(c.n, 1);
    char expect[256];
    snprintf(expect, sizeof expect, " level=info msg=m f1=%s f2=%s truncated=true", x, x);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT), expect);
    assert_int_equal(strlen(c.line[0]) + 1, 128);
    free(x);
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void long_json_line_is_cut_and_stays_a_valid_object(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_JSON, 128);
    char *x = repeat('x', 30);
    AMI_LOG(lg, AMI_LOG_INFO, "m", AMI_F_STR("f1", x), AMI_F_STR("f2", x), AMI_F_STR("f3", x));
    assert_int_equal(c.n, 1);
    char expect[256];
    snprintf(expect, sizeof expect, "\"level\":\"info\",\"msg\":\"m\",\"f1\":\"%s\",\"truncated\":true}", x);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_JSON), expect);
    assert_true(strlen(c.line[0]) + 1 <= 128);
    free(x);
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void long_message_is_cut_with_an_ellipsis(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_LOGFMT, 128);
    char *msg = repeat('a', 300);
    AMI_LOG(lg, AMI_LOG_INFO, msg, AMI_F_INT("n", 1));
    assert_int_equal(c.n, 1);
    char *kept = repeat('a', 64);
    char expect[256];
    snprintf(expect, sizeof expect, " level=info msg=\"%s...\" truncated=true", kept);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT), expect);
    assert_int_equal(strlen(c.line[0]) + 1, 128);
    free(kept);
    free(msg);
    ami_logger_free(lg);
    log_capture_free(&c);
}

/* Each '"' escapes to two bytes; the cut must never split one. */
static void cut_json_message_never_splits_an_escape(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_JSON, 128);
    char *msg = repeat('"', 200);
    AMI_LOG(lg, AMI_LOG_INFO, msg);
    assert_int_equal(c.n, 1);
    char expect[256] = "\"level\":\"info\",\"msg\":\"";
    for (int i = 0; i < 25; i++)
        strcat(expect, "\\\"");
    strcat(expect, "...\",\"truncated\":true}");
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_JSON), expect);
    free(msg);
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void set_format_switches_the_rendering(void **state)
{
    (void)state;
    log_capture_t c = {0};
    ami_logger_t *lg = log_capture_logger(&c, AMI_LOG_INFO, AMI_LOG_FMT_LOGFMT, 0);
    AMI_LOG(lg, AMI_LOG_INFO, "one", AMI_F_INT("n", 1));
    ami_logger_set_format(lg, AMI_LOG_FMT_JSON);
    AMI_LOG(lg, AMI_LOG_INFO, "two", AMI_F_INT("n", 2));
    assert_int_equal(c.n, 2);
    assert_string_equal(after_ts(c.line[0], AMI_LOG_FMT_LOGFMT), " level=info msg=one n=1");
    assert_string_equal(after_ts(c.line[1], AMI_LOG_FMT_JSON), "\"level\":\"info\",\"msg\":\"two\",\"n\":2}");
    ami_logger_free(lg);
    log_capture_free(&c);
}

static void null_logger_is_a_silent_no_op(void **state)
{
    (void)state;
    ami_logger_t *lg = NULL;
    assert_false(ami_log_enabled(lg, AMI_LOG_ERROR));
    AMI_LOG(lg, AMI_LOG_ERROR, "nothing", AMI_F_INT("n", 1));
    ami_log_fields(NULL, AMI_LOG_ERROR, "nothing", NULL, 0);
    ami_logger_set_level(NULL, AMI_LOG_DEBUG);
    ami_logger_set_format(NULL, AMI_LOG_FMT_JSON);
    assert_int_equal(ami_logger_level(NULL), AMI_LOG_OFF);
    assert_int_equal(ami_logger_written(NULL), 0);
    assert_int_equal(ami_logger_dropped(NULL), 0);
    ami_logger_free(NULL);
}

static void invalid_config_is_refused(void **state)
{
    (void)state;
    ami_logger_config_t cfg;
    ami_logger_config_default(&cfg);
    cfg.fd = -1;
    assert_null(ami_logger_new(&cfg));
    ami_logger_config_default(&cfg);
    cfg.level = (ami_log_level_t)42;
    assert_null(ami_logger_new(&cfg));
}

static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    while (len < cap && (n = read(fd, buf + len, cap - len)) > 0)
        len += (size_t)n;
    return len;
}

static void sync_mode_writes_whole_lines_to_the_fd(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    ami_logger_config_t cfg;
    ami_logger_config_default(&cfg);
    cfg.fd = p[1];
    ami_logger_t *lg = ami_logger_new(&cfg);
    AMI_LOG(lg, AMI_LOG_INFO, "first", AMI_F_INT("n", 1));
    AMI_LOG(lg, AMI_LOG_INFO, "second", AMI_F_INT("n", 2));
    assert_int_equal(ami_logger_written(lg), 2);
    ami_logger_free(lg);
    close(p[1]);
    char buf[512];
    size_t len = read_all(p[0], buf, sizeof buf - 1);
    buf[len] = '\0';
    close(p[0]);
    char *second = strchr(buf, '\n');
    assert_non_null(second);
    *second++ = '\0';
    assert_string_equal(after_ts(buf, AMI_LOG_FMT_LOGFMT), " level=info msg=first n=1");
    assert_string_equal(after_ts(second, AMI_LOG_FMT_LOGFMT), " level=info msg=second n=2\n");
}

static void async_mode_writes_every_line_to_the_fd(void **state)
{
    (void)state;
    enum { LINES = 200 };
    int p[2];
    assert_int_equal(pipe(p), 0);
    ami_logger_config_t cfg;
    ami_logger_config_default(&cfg);
    cfg.fd = p[1];
    cfg.async = true;
    ami_logger_t *lg = ami_logger_new(&cfg);
    assert_non_null(lg);
    for (int i = 0; i < LINES; i++)
        AMI_LOG(lg, AMI_LOG_INFO, "tick", AMI_F_INT("seq", i));
    int64_t deadline = ami_now_ms() + 5000;
    while (ami_logger_written(lg) < LINES && ami_now_ms() < deadline)
        usleep(1000);
    assert_int_equal(ami_logger_written(lg), LINES);
    assert_int_equal(ami_logger_dropped(lg), 0);
    ami_logger_free(lg);
    close(p[1]);

    static char buf[65536];
    size_t len = read_all(p[0], buf, sizeof buf - 1);
    buf[len] = '\0';
    close(p[0]);
    char *line = buf;
    for (int i = 0; i < LINES; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        char expect[64];
        snprintf(expect, sizeof expect, " level=info msg=tick seq=%d", i);
        assert_string_equal(after_ts(line, AMI_LOG_FMT_LOGFMT), expect);
        line = nl + 1;
    }
    assert_string_equal(line, "");
}

/* Nobody reads the pipe: the writer blocks once it is full, the tiny ring
 * fills, lines are dropped and counted, and free still returns (its wait
 * for the writer is bounded). */
static void async_mode_drops_and_counts_when_the_ring_is_full(void **state)
{
    (void)state;
    enum { LINES = 5000 };
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    ami_logger_config_t cfg;
    ami_logger_config_default(&cfg);
    cfg.fd = p[1];
    cfg.async = true;
    cfg.ring_bytes = 4096;
    ami_logger_t *lg = ami_logger_new(&cfg);
    assert_non_null(lg);
    for (int i = 0; i < LINES; i++)
        AMI_LOG(lg, AMI_LOG_INFO, "flood", AMI_F_INT("seq", i), AMI_F_STR("pad", "0123456789012345678901234567890123456789"));
    uint64_t dropped = ami_logger_dropped(lg);
    assert_true(dropped > 0);
    assert_true(ami_logger_written(lg) + dropped <= LINES);
    alarm(60); /* a free that blocks on the full pipe dies here (SIGALRM) */
    ami_logger_free(lg);
    alarm(0);
    close(p[0]);
    close(p[1]);
}

static void level_parse_accepts_names_case_insensitively(void **state)
{
    (void)state;
    assert_int_equal(ami_log_level_parse("debug"), AMI_LOG_DEBUG);
    assert_int_equal(ami_log_level_parse("INFO"), AMI_LOG_INFO);
    assert_int_equal(ami_log_level_parse("Warn"), AMI_LOG_WARN);
    assert_int_equal(ami_log_level_parse("warning"), AMI_LOG_WARN);
    assert_int_equal(ami_log_level_parse("WARNING"), AMI_LOG_WARN);
    assert_int_equal(ami_log_level_parse("error"), AMI_LOG_ERROR);
    assert_int_equal(ami_log_level_parse("Off"), AMI_LOG_OFF);
    assert_int_equal(ami_log_level_parse(""), -1);
    assert_int_equal(ami_log_level_parse("verbose"), -1);
    assert_int_equal(ami_log_level_parse("info "), -1);
    assert_int_equal(ami_log_level_parse(NULL), -1);
}

static void level_names_round_trip_through_parse(void **state)
{
    (void)state;
    for (int l = AMI_LOG_DEBUG; l <= AMI_LOG_OFF; l++)
        assert_int_equal(ami_log_level_parse(ami_log_level_name((ami_log_level_t)l)), l);
    assert_string_equal(ami_log_level_name(AMI_LOG_WARN), "warn");
    assert_string_equal(ami_log_level_name((ami_log_level_t)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(logfmt_renders_typed_fields_in_order),
        cmocka_unit_test(logfmt_quotes_and_escapes_values_that_need_it),
        cmocka_unit_test(json_renders_one_object_with_typed_values),
        cmocka_unit_test(json_escapes_strings_and_passes_high_bytes),
        cmocka_unit_test(json_renders_non_finite_doubles_as_strings),
        cmocka_unit_test(timestamp_is_utc_wall_clock_with_milliseconds),
        cmocka_unit_test(lines_below_the_level_are_skipped),
        cmocka_unit_test(secrets_are_redacted_at_debug_level_in_logfmt),
        cmocka_unit_test(secrets_are_redacted_at_debug_level_in_json),
        cmocka_unit_test(long_logfmt_line_is_cut_after_the_last_whole_field),
        cmocka_unit_test(long_json_line_is_cut_and_stays_a_valid_object),
        cmocka_unit_test(long_message_is_cut_with_an_ellipsis),
        cmocka_unit_test(cut_json_message_never_splits_an_escape),
        cmocka_unit_test(set_format_switches_the_rendering),
        cmocka_unit_test(null_logger_is_a_silent_no_op),
        cmocka_unit_test(invalid_config_is_refused),
        cmocka_unit_test(sync_mode_writes_whole_lines_to_the_fd),
        cmocka_unit_test(async_mode_writes_every_line_to_the_fd),
        cmocka_unit_test(async_mode_drops_and_counts_when_the_ring_is_full),
        cmocka_unit_test(level_parse_accepts_names_case_insensitively),
        cmocka_unit_test(level_names_round_trip_through_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
