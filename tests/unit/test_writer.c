/* The action writer: exact wire bytes, injection refused, Asterisk's limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "protocol/actionid.h"
#include "protocol/writer.h"
#include "util/alloc.h"

static void assert_buf_eq(const ami_buf_t *b, const char *expect)
{
    assert_int_equal(b->len, strlen(expect));
    assert_memory_equal(b->data, expect, b->len);
}

static void writes_action_id_and_headers_in_order(void **state)
{
    (void)state;
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_kv_t h[] = {AMI_KV("Channel", "Local/100@test"), AMI_KV("Application", "Wait"),
                    AMI_KV("Data", "1"), AMI_KV("Async", "true")};
    ami_err_t err;
    assert_int_equal(ami_write_action(&out, "Originate", "orig-async-1", h, 4, &err), 0);
    /* Byte-identical to what the recorded client sent (originate-async.sent). */
    assert_buf_eq(&out, "Action: Originate\r\nActionID: orig-async-1\r\nChannel: Local/100@test\r\n"
                        "Application: Wait\r\nData: 1\r\nAsync: true\r\n\r\n");
    ami_buf_deinit(&out);
}

static void repeated_keys_are_written_as_repeated_lines(void **state)
{
    (void)state;
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_kv_t h[] = {AMI_KV("Variable", "A=1"), AMI_KV("Variable", "B=2")};
    assert_int_equal(ami_write_action(&out, "Originate", NULL, h, 2, NULL), 0);
    assert_buf_eq(&out, "Action: Originate\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n");
    ami_buf_deinit(&out);
}

static void empty_value_is_written_as_key_colon_space(void **state)
{
    (void)state;
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_kv_t h[] = {AMI_KV("Value", "")};
    assert_int_equal(ami_write_action(&out, "Setvar", "x", h, 1, NULL), 0);
    assert_buf_eq(&out, "Action: Setvar\r\nActionID: x\r\nValue: \r\n\r\n");
    ami_buf_deinit(&out);
}

static void assert_refused(const char *name, ami_kv_t kv, ami_status_t code, const char *needle)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_buf_append_str(&out, "previous bytes");
    ami_err_t err;
    assert_int_equal(ami_write_action(&out, name, "id-1", &kv, 1, &err), -1);
    assert_int_equal(err.code, code);
    if (!strstr(err.msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
    assert_buf_eq(&out, "previous bytes"); /* nothing written on error */
    ami_buf_deinit(&out);
}

static void crlf_in_value_is_refused_as_injection(void **state)
{
    (void)state;
    assert_refused("Setvar", AMI_KV("Value", "x\r\nAction: Originate"), AMI_E_INVALID, "injection");
    assert_refused("Setvar", AMI_KV("Value", "x\nAction: Originate"), AMI_E_INVALID, "LF");
    assert_refused("Setvar", AMI_KV("Value", "x\rAction"), AMI_E_INVALID, "CR");
}

static void nul_in_value_is_refused(void **state)
{
    (void)state;
    ami_kv_t kv = {"Value", 5, "a\0b", 3};
    assert_refused("Setvar", kv, AMI_E_INVALID, "NUL");
}

static void bad_keys_are_refused(void **state)
{
    (void)state;
    assert_refused("Setvar", AMI_KV("Va:lue", "x"), AMI_E_INVALID, "':'");
    assert_refused("Setvar", AMI_KV("Val ue", "x"), AMI_E_INVALID, "blank");
    assert_refused("Setvar", AMI_KV("Val\r\nue", "x"), AMI_E_INVALID, "injection");
    ami_kv_t empty = {"", 0, "x", 1};
    assert_refused("Setvar", empty, AMI_E_INVALID, "empty key");
}

static void engine_owned_headers_are_refused(void **state)
{
    (void)state;
    assert_refused("Ping", AMI_KV("ActionID", "mine"), AMI_E_INVALID, "set by the engine");
    assert_refused("Ping", AMI_KV("action", "Originate"), AMI_E_INVALID, "set by the engine");
}

static void bad_action_names_are_refused(void **state)
{
    (void)state;
    assert_refused("Ping\r\nAction: Originate", AMI_KV("a", "b"), AMI_E_INVALID, "action name");
    assert_refused("", AMI_KV("a", "b"), AMI_E_INVALID, "empty");
    assert_refused("Core Show", AMI_KV("a", "b"), AMI_E_INVALID, "action name");
}

static void line_over_asterisk_limit_is_refused(void **state)
{
    (void)state;
    char value[AMI_WRITER_MAX_LINE];
    /* "Data: " + value: exactly the limit is accepted, one more byte is not. */
    memset(value, 'v', sizeof value);
    ami_kv_t ok = {"Data", 4, value, AMI_WRITER_MAX_LINE - 6};
    ami_buf_t out;
    ami_buf_init(&out, 0);
    assert_int_equal(ami_write_action(&out, "Originate", NULL, &ok, 1, NULL), 0);
    ami_buf_deinit(&out);
    ami_kv_t big = {"Data", 4, value, AMI_WRITER_MAX_LINE - 5};
    assert_refused("Originate", big, AMI_E_LIMIT, "1024");
}

static void more_than_128_lines_is_refused(void **state)
{
    (void)state;
    ami_kv_t h[AMI_WRITER_MAX_LINES];
    for (size_t i = 0; i < AMI_WRITER_MAX_LINES; i++)
        h[i] = AMI_KV("Variable", "A=1");
    ami_err_t err;
    ami_buf_t out;
    ami_buf_init(&out, 0);
    /* Action + ActionID + 126 headers = 128 lines: accepted. */
    assert_int_equal(ami_write_action(&out, "Originate", "id", h, AMI_WRITER_MAX_LINES - 2, &err), 0);
    ami_buf_clear(&out);
    assert_int_equal(ami_write_action(&out, "Originate", "id", h, AMI_WRITER_MAX_LINES - 1, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_non_null(strstr(err.msg, "128"));
    assert_int_equal(out.len, 0);
    ami_buf_deinit(&out);
}

static void full_output_buffer_is_backpressure(void **state)
{
    (void)state;
    ami_buf_t out;
    ami_buf_init(&out, 40);
    ami_err_t err;
    assert_int_equal(ami_write_action(&out, "Ping", "a1-1", NULL, 0, &err), 0);
    size_t before = out.len;
    assert_int_equal(ami_write_action(&out, "Ping", "a1-2", NULL, 0, &err), -1);
    assert_int_equal(err.code, AMI_E_BACKPRESSURE);
    assert_int_equal(out.len, before);
    ami_buf_deinit(&out);
}

static void describe_redacts_secrets(void **state)
{
    (void)state;
    ami_kv_t h[] = {AMI_KV("Username", "engine"), AMI_KV("Secret", "s3cret"), AMI_KV("key", "abc")};
    char line[200];
    ami_action_describe(line, sizeof line, "Login", "id-1", h, 3);
    assert_string_equal(line, "Login ActionID=id-1 Username=engine Secret=[redacted] key=[redacted]");
    assert_null(strstr(line, "s3cret"));
}

static void action_ids_are_unique_and_round_trip(void **state)
{
    (void)state;
    ami_actionid_gen_t g;
    ami_actionid_init(&g, 0xabcdef01);
    char a[AMI_ACTIONID_MAX], b[AMI_ACTIONID_MAX];
    uint64_t s1 = ami_actionid_next(&g), s2 = ami_actionid_next(&g);
    ami_actionid_format(&g, s1, a);
    ami_actionid_format(&g, s2, b);
    assert_string_equal(a, "aabcdef01-1");
    assert_string_not_equal(a, b);
    uint64_t back;
    assert_true(ami_actionid_parse(&g, b, strlen(b), &back));
    assert_int_equal(back, s2);
    assert_false(ami_actionid_parse(&g, "login-1", 7, &back));
    assert_false(ami_actionid_parse(&g, "aabcdef01-", 10, &back));
    assert_false(ami_actionid_parse(&g, "aabcdef01-12x", 13, &back));
    assert_false(ami_actionid_parse(&g, "aabcdef01-99999999999999999999999", 33, &back));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writes_action_id_and_headers_in_order),
        cmocka_unit_test(repeated_keys_are_written_as_repeated_lines),
        cmocka_unit_test(empty_value_is_written_as_key_colon_space),
        cmocka_unit_test(crlf_in_value_is_refused_as_injection),
        cmocka_unit_test(nul_in_value_is_refused),
        cmocka_unit_test(bad_keys_are_refused),
        cmocka_unit_test(engine_owned_headers_are_refused),
        cmocka_unit_test(bad_action_names_are_refused),
        cmocka_unit_test(line_over_asterisk_limit_is_refused),
        cmocka_unit_test(more_than_128_lines_is_refused),
        cmocka_unit_test(full_output_buffer_is_backpressure),
        cmocka_unit_test(describe_redacts_secrets),
        cmocka_unit_test(action_ids_are_unique_and_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
