/* The HTTP client (engine/httpc) on a real loop against a real local web
 * server on its own thread: answers and their headers, errors by kind, the
 * bounds on requests and answers with their counters, redirects and their
 * policy. Concurrency, cancellation, TLS and proxies: test_http_client_policy.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "httpc_world.h"

static ami_sim_http_t *srv; /* one server for the whole file */

/* ---- answers -------------------------------------------------------------------- */

static void get_returns_status_headers_and_body(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/ok", &o);
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 200);
    assert_string_equal(o.body, "ok");
    assert_non_null(strstr(o.headers, "content-type=text/plain\n"));
    assert_non_null(strstr(o.url, "/ok"));
    assert_int_equal(o.calls, 1);
    assert_true(hw_metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "2xx", NULL}) == 1);
    assert_int_equal(ami_httpc_active(w->h), 0);
    hw_free(w);
}

static void post_sends_method_headers_and_body_without_expect_or_form_type(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char url[256];
    hw_url(w, "/echo", url, sizeof url);
    static const char body[] = "{\"call\":\"1700000000.1\"}";
    ami_httpc_header_t hs[] = {{"X-Token", 7, "abc 123", 7}, {"X-Empty", 7, "", 0}};
    ami_httpc_request_t req = {.method = "post", .url = url, .url_len = strlen(url), .headers = hs, .nheaders = 2,
                               .body = body, .body_len = sizeof body - 1};
    hw_outcome_t o;
    hw_perform(w, &req, &o);
    assert_int_equal(o.status, 200);
    assert_non_null(strstr(o.body, "POST /echo\n"));
    assert_non_null(strstr(o.body, "X-Token: abc 123\r\n"));
    assert_non_null(strstr(o.body, "X-Empty:"));
    assert_non_null(strstr(o.body, "Content-Length: 23\r\n"));
    assert_non_null(strstr(o.body, "\r\n\r\n{\"call\":\"1700000000.1\"}"));
    assert_null(strstr(o.body, "Expect:"));
    assert_null(strstr(o.body, "x-www-form-urlencoded"));
    hw_free(w);
}

static void put_and_delete_use_their_method(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char url[256];
    hw_url(w, "/echo", url, sizeof url);
    ami_httpc_request_t req = {.method = "PUT", .url = url, .url_len = strlen(url), .body = "x", .body_len = 1};
    hw_outcome_t o;
    hw_perform(w, &req, &o);
    assert_non_null(strstr(o.body, "PUT /echo\n"));
    req = (ami_httpc_request_t){.method = "DELETE", .url = url, .url_len = strlen(url)};
    hw_perform(w, &req, &o);
    assert_non_null(strstr(o.body, "DELETE /echo\n"));
    hw_free(w);
}

static void response_headers_are_lower_cased_in_order_with_repeats_kept(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/headers", &o);
    const char *a = strstr(o.headers, "x-multi=a\n");
    const char *b = strstr(o.headers, "x-multi=b\n");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
    assert_non_null(strstr(o.headers, "set-cookie=c=1\n"));
    assert_non_null(strstr(o.headers, "set-cookie=d=2\n"));
    assert_non_null(strstr(o.headers, "x-mixed-case=v\n"));
    assert_non_null(strstr(o.headers, "x-empty=\n"));
    assert_null(strstr(o.headers, "HTTP/"));
    hw_free(w);
}

static void error_statuses_are_answers_counted_by_class(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/status/503", &o);
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 503);
    hw_perform_path(w, "/nothing-here", &o);
    assert_int_equal(o.status, 404);
    assert_true(hw_metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "5xx", NULL}) == 1);
    assert_true(hw_metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "4xx", NULL}) == 1);
    hw_free(w);
}

/* ---- errors by kind --------------------------------------------------------------- */

static void slow_answer_past_the_timeout_is_a_timeout(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char url[256];
    hw_url(w, "/delay/3000", url, sizeof url);
    ami_httpc_request_t req = hw_get(url);
    req.timeout_ms = 200;
    hw_outcome_t o;
    hw_perform(w, &req, &o);
    hw_expect_error(&o, AMI_HTTPC_TIMEOUT, "in time");
    assert_true(hw_metric(w, "ami_http_client_errors_total", (const char *const[]){"kind", "timeout", NULL}) == 1);
    assert_true(hw_metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "error", NULL}) == 1);
    hw_url(w, "/delay/100", url, sizeof url);
    req = hw_get(url);
    req.timeout_ms = 5000;
    hw_perform(w, &req, &o); /* a slow answer within its time is an answer */
    assert_int_equal(o.status, 200);
    assert_string_equal(o.body, "slow");
    hw_free(w);
}

static void a_server_that_never_answers_times_out_and_the_connection_closes(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.timeout_ms = 300;
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/never", &o);
    hw_expect_error(&o, AMI_HTTPC_TIMEOUT, NULL);
    assert_true(harness_run_until(w->loop, hw_server_idle, srv, 5000));
    hw_free(w);
}

static void connection_refused_is_a_connect_error(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/ok", ami_sim_http_refused_port(srv));
    ami_httpc_request_t req = hw_get(url);
    hw_outcome_t o;
    hw_perform(w, &req, &o);
    hw_expect_error(&o, AMI_HTTPC_CONNECT, NULL);
    hw_free(w);
}

static void answers_that_are_not_http_are_protocol_errors(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/close", &o);
    hw_expect_error(&o, AMI_HTTPC_PROTOCOL, NULL);
    hw_perform_path(w, "/garbage", &o);
    hw_expect_error(&o, AMI_HTTPC_PROTOCOL, NULL);
    hw_free(w);
}

static void an_unknown_name_is_a_dns_error_without_stalling_the_loop(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    static const char url[] = "http://ami-engine-test.invalid/ok";
    ami_httpc_request_t req = hw_get(url);
    req.timeout_ms = 2000;
    hw_outcome_t o;
    hw_perform(w, &req, &o);
    /* No resolver answers in time on some machines: a timeout is fine, a
     * blocked loop (perform's own deadline) is not. */
    if (o.kind != AMI_HTTPC_DNS && o.kind != AMI_HTTPC_TIMEOUT)
        fail_msg("expected dns or timeout, got %s: %s", ami_httpc_kind_name(o.kind), o.msg);
    hw_free(w);
}

/* ---- bounds on the answer --------------------------------------------------------- */

static void a_body_over_the_bound_is_too_large_announced_or_streamed(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_response_bytes = 100000;
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/big/100000", &o); /* exactly the bound: fine */
    assert_int_equal(o.status, 200);
    assert_int_equal(o.body_len, 100000);
    hw_perform_path(w, "/big/100001", &o);
    hw_expect_error(&o, AMI_HTTPC_TOO_LARGE, "max_response_bytes");
    assert_true(hw_refused(w, "response_body") == 1);
    hw_perform_path(w, "/stream/5000000", &o);
    hw_expect_error(&o, AMI_HTTPC_TOO_LARGE, "max_response_bytes");
    assert_true(hw_refused(w, "response_body") == 2);
    hw_free(w);
}

static void response_headers_over_the_bound_are_too_large(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_header_bytes = 4096;
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/bigheader/3000", &o);
    assert_int_equal(o.status, 200);
    hw_perform_path(w, "/bigheader/5000", &o);
    hw_expect_error(&o, AMI_HTTPC_TOO_LARGE, "max_header_bytes");
    assert_true(hw_refused(w, "response_headers") == 1);
    hw_free(w);
}

/* ---- redirects ------------------------------------------------------------------------- */

static void redirects_are_followed_up_to_the_bound(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_redirects = 3;
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/redirect/3", &o);
    assert_int_equal(o.status, 200);
    assert_string_equal(o.body, "arrived");
    assert_non_null(strstr(o.url, "/redirect/0"));
    assert_null(strstr(o.headers, "location="));   /* the final answer's headers only */
    hw_perform_path(w, "/redirect/4", &o);
    hw_expect_error(&o, AMI_HTTPC_REDIRECT, "max_redirects");
    hw_perform_path(w, "/loop", &o);
    hw_expect_error(&o, AMI_HTTPC_REDIRECT, NULL);
    assert_true(hw_refused(w, "redirects") == 2);
    hw_free(w);
}

static void redirects_to_other_schemes_are_refused(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/redirect-to?file:///etc/passwd", &o);
    hw_expect_error(&o, AMI_HTTPC_REFUSED, "not http or https");
    hw_perform_path(w, "/redirect-to?ftp://127.0.0.1/x", &o);
    hw_expect_error(&o, AMI_HTTPC_REFUSED, "not http or https");
    assert_true(hw_refused(w, "scheme") == 2);
    hw_free(w);
}

static void with_no_redirects_allowed_the_3xx_is_the_answer(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_redirects = 0;
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/redirect/1", &o);
    assert_int_equal(o.status, 302);
    assert_non_null(strstr(o.headers, "location=/redirect/0\n"));
    hw_free(w);
}

/* ---- bounds and checks on the request ------------------------------------------------------ */

static void bad_requests_are_refused_at_once_with_their_reason(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_url_bytes = 100;
    c.max_request_bytes = 10;
    hw_t *w = hw_new(&c, srv);
    char ok[128];
    hw_url(w, "/ok", ok, sizeof ok);
    ami_httpc_request_t r = hw_get(ok);
    r.method = "TRACE";
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "method");
    r = hw_get("ftp://127.0.0.1/x");
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_REFUSED, "scheme", "http:// or https://");
    r = hw_get("file:///etc/passwd");
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_REFUSED, "scheme", "http:// or https://");
    r = hw_get("http://127.0.0.1/a b");
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "space or control");
    r = hw_get("http://");
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "not a valid URL");
    char long_url[200];
    snprintf(long_url, sizeof long_url, "http://127.0.0.1/%0150d", 7);
    r = hw_get(long_url);
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_TOO_LARGE, "url_length", "max_url_bytes");
    r = (ami_httpc_request_t){.method = "POST", .url = ok, .url_len = strlen(ok), .body = "12345678901", .body_len = 11};
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_TOO_LARGE, "request_body", "max_request_bytes");
    r = (ami_httpc_request_t){.method = "GET", .url = ok, .url_len = strlen(ok), .body = "x", .body_len = 1};
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "has no body");
    r = hw_get(ok);
    r.timeout_ms = c.timeout_ms + 1;
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "http.timeout_ms");
    hw_free(w);
}

static void header_injection_and_engine_owned_headers_are_refused(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char ok[128];
    hw_url(w, "/ok", ok, sizeof ok);
    static const struct {
        ami_httpc_header_t h;
        const char *text;
    } bad[] = {
        {{"X-A", 3, "v\r\nX-Injected: 1", 17}, "CR or LF"},
        {{"X-A", 3, "v\nX", 3}, "CR or LF"},
        {{"X-A", 3, "v\0x", 3}, "NUL"},
        {{"X-A", 3, "v\x01", 2}, "control character"},
        {{"X A", 3, "v", 1}, "not allowed in a name"},
        {{"X-A:", 4, "v", 1}, "not allowed in a name"},
        {{"", 0, "v", 1}, "header names"},
        {{"Content-Length", 14, "5", 1}, "set by the engine"},
        {{"transfer-encoding", 17, "chunked", 7}, "set by the engine"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ami_httpc_request_t r = hw_get(ok);
        r.headers = &bad[i].h;
        r.nheaders = 1;
        hw_expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", bad[i].text);
    }
    ami_httpc_header_t many[65];
    for (size_t i = 0; i < 65; i++)
        many[i] = (ami_httpc_header_t){"X-N", 3, "v", 1};
    ami_httpc_request_t r = hw_get(ok);
    r.headers = many;
    r.nheaders = 65;
    hw_expect_refused_at_once(w, &r, AMI_HTTPC_TOO_LARGE, "request_headers", "at most 64");
    assert_int_equal(ami_sim_http_stats(srv).open, 0);
    hw_free(w);
}

static int group_setup(void **state)
{
    (void)state;
    ami_err_t err;
    srv = ami_sim_http_start(&err);
    return srv ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    ami_sim_http_stop(srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_returns_status_headers_and_body),
        cmocka_unit_test(post_sends_method_headers_and_body_without_expect_or_form_type),
        cmocka_unit_test(put_and_delete_use_their_method),
        cmocka_unit_test(response_headers_are_lower_cased_in_order_with_repeats_kept),
        cmocka_unit_test(error_statuses_are_answers_counted_by_class),
        cmocka_unit_test(slow_answer_past_the_timeout_is_a_timeout),
        cmocka_unit_test(a_server_that_never_answers_times_out_and_the_connection_closes),
        cmocka_unit_test(connection_refused_is_a_connect_error),
        cmocka_unit_test(answers_that_are_not_http_are_protocol_errors),
        cmocka_unit_test(an_unknown_name_is_a_dns_error_without_stalling_the_loop),
        cmocka_unit_test(a_body_over_the_bound_is_too_large_announced_or_streamed),
        cmocka_unit_test(response_headers_over_the_bound_are_too_large),
        cmocka_unit_test(redirects_are_followed_up_to_the_bound),
        cmocka_unit_test(redirects_to_other_schemes_are_refused),
        cmocka_unit_test(with_no_redirects_allowed_the_3xx_is_the_answer),
        cmocka_unit_test(bad_requests_are_refused_at_once_with_their_reason),
        cmocka_unit_test(header_injection_and_engine_owned_headers_are_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
