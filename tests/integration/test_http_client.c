/* The HTTP client (engine/httpc) on a real loop against a real local web
 * server on its own thread: answers, headers, errors by kind, every bound
 * and its counter, redirects and their policy, cancellation, TLS
 * verification with certificates made at test time, proxies ignored from
 * the environment. */
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
#include "httpc/httpc.h"
#include "https_peer.h"
#include "obs/metrics.h"
#include "sim/sim_http.h"

static ami_sim_http_t *srv; /* one server for the whole file */

typedef struct outcome {
    bool done;
    int calls;
    ami_httpc_kind_t kind;
    char msg[256];
    long status;
    char body[8192];
    size_t body_len;
    char headers[4096];        /* "name=value\n" per header, in order */
    size_t nheaders;
    char url[600];
} outcome_t;

typedef struct world {
    struct ev_loop *loop;
    ami_metrics_t *metrics;
    ami_httpc_t *h;
    char base[64];
} world_t;

static void on_done(void *ud, const ami_httpc_response_t *res)
{
    outcome_t *o = ud;
    o->done = true;
    o->calls++;
    o->kind = res->err.kind;
    snprintf(o->msg, sizeof o->msg, "%s", res->err.msg);
    o->status = res->status;
    o->body_len = res->body_len;
    snprintf(o->body, sizeof o->body, "%.*s", (int)(res->body_len < sizeof o->body ? res->body_len : sizeof o->body - 1),
             res->body ? res->body : "");
    o->nheaders = res->nheaders;
    o->headers[0] = '\0';
    for (size_t i = 0; i < res->nheaders; i++) {
        size_t at = strlen(o->headers);
        snprintf(o->headers + at, sizeof o->headers - at, "%.*s=%.*s\n", (int)res->headers[i].name_len,
                 res->headers[i].name, (int)res->headers[i].value_len, res->headers[i].value);
    }
    snprintf(o->url, sizeof o->url, "%s", res->url ? res->url : "");
}

static world_t *world_new(const ami_httpc_config_t *cfg)
{
    world_t *w = calloc(1, sizeof *w);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->metrics = ami_metrics_new(5000);
    ami_httpc_err_t err = {0};
    w->h = ami_httpc_new(w->loop, cfg, w->metrics, NULL, &err);
    if (!w->h)
        fail_msg("ami_httpc_new: %s", err.msg);
    snprintf(w->base, sizeof w->base, "http://127.0.0.1:%u", ami_sim_http_port(srv));
    return w;
}

static void world_free(world_t *w)
{
    ami_httpc_free(w->h);
    ami_metrics_free(w->metrics);
    ev_loop_destroy(w->loop);
    free(w);
}

static ami_httpc_config_t config(void)
{
    ami_httpc_config_t c;
    ami_httpc_config_default(&c);
    return c;
}

static bool is_done(void *ud)
{
    return ((outcome_t *)ud)->done;
}

static void url_of(world_t *w, const char *path, char *out, size_t n)
{
    snprintf(out, n, "%s%s", w->base, path);
}

static ami_httpc_request_t get(const char *url)
{
    return (ami_httpc_request_t){.method = "GET", .url = url, .url_len = strlen(url)};
}

/* Start req and run the loop until it is answered (fails the test if not). */
static void perform(world_t *w, const ami_httpc_request_t *req, outcome_t *o)
{
    memset(o, 0, sizeof *o);
    ami_httpc_err_t err = {0};
    if (!ami_httpc_start(w->h, req, on_done, o, &err))
        fail_msg("refused at once: %s: %s", ami_httpc_kind_name(err.kind), err.msg);
    if (!harness_run_until(w->loop, is_done, o, 15000))
        fail_msg("no answer in 15 s");
}

static void perform_path(world_t *w, const char *path, outcome_t *o)
{
    char url[256];
    url_of(w, path, url, sizeof url);
    ami_httpc_request_t req = get(url);
    perform(w, &req, o);
}

static double metric(world_t *w, const char *name, const char *const *labels)
{
    double v = 0;
    if (ami_metrics_value(w->metrics, name, labels, &v) < 0)
        return 0;
    return v;
}

static double refused(world_t *w, const char *reason)
{
    return metric(w, "ami_http_client_refused_total", (const char *const[]){"reason", reason, NULL});
}

/* A request refused before anything is sent: kind and counted reason. */
static void expect_refused_at_once(world_t *w, const ami_httpc_request_t *req, ami_httpc_kind_t kind,
                                   const char *reason, const char *text)
{
    double before = refused(w, reason);
    outcome_t o = {0};
    ami_httpc_err_t err = {0};
    assert_null(ami_httpc_start(w->h, req, on_done, &o, &err));
    assert_string_equal(ami_httpc_kind_name(err.kind), ami_httpc_kind_name(kind));
    if (!strstr(err.msg, text))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, text);
    assert_true(refused(w, reason) == before + 1);
    harness_run_for(w->loop, 20);
    assert_false(o.done); /* a refused request never calls back */
}

static void expect_error(outcome_t *o, ami_httpc_kind_t kind, const char *text)
{
    assert_true(o->done);
    if (o->kind != kind)
        fail_msg("expected %s, got %s: %s", ami_httpc_kind_name(kind), ami_httpc_kind_name(o->kind), o->msg);
    if (text && !strstr(o->msg, text))
        fail_msg("message \"%s\" lacks \"%s\"", o->msg, text);
}

/* ---- answers -------------------------------------------------------------------- */

static void get_returns_status_headers_and_body(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/ok", &o);
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 200);
    assert_string_equal(o.body, "ok");
    assert_non_null(strstr(o.headers, "content-type=text/plain\n"));
    assert_non_null(strstr(o.url, "/ok"));
    assert_int_equal(o.calls, 1);
    assert_true(metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "2xx", NULL}) == 1);
    assert_int_equal(ami_httpc_active(w->h), 0);
    world_free(w);
}

static void post_sends_method_headers_and_body_without_expect_or_form_type(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char url[256];
    url_of(w, "/echo", url, sizeof url);
    static const char body[] = "{\"call\":\"1700000000.1\"}";
    ami_httpc_header_t hs[] = {{"X-Token", 7, "abc 123", 7}, {"X-Empty", 7, "", 0}};
    ami_httpc_request_t req = {.method = "post", .url = url, .url_len = strlen(url), .headers = hs, .nheaders = 2,
                               .body = body, .body_len = sizeof body - 1};
    outcome_t o;
    perform(w, &req, &o);
    assert_int_equal(o.status, 200);
    assert_non_null(strstr(o.body, "POST /echo\n"));
    assert_non_null(strstr(o.body, "X-Token: abc 123\r\n"));
    assert_non_null(strstr(o.body, "X-Empty:"));
    assert_non_null(strstr(o.body, "Content-Length: 23\r\n"));
    assert_non_null(strstr(o.body, "\r\n\r\n{\"call\":\"1700000000.1\"}"));
    assert_null(strstr(o.body, "Expect:"));
    assert_null(strstr(o.body, "x-www-form-urlencoded"));
    world_free(w);
}

static void put_and_delete_use_their_method(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char url[256];
    url_of(w, "/echo", url, sizeof url);
    ami_httpc_request_t req = {.method = "PUT", .url = url, .url_len = strlen(url), .body = "x", .body_len = 1};
    outcome_t o;
    perform(w, &req, &o);
    assert_non_null(strstr(o.body, "PUT /echo\n"));
    req = (ami_httpc_request_t){.method = "DELETE", .url = url, .url_len = strlen(url)};
    perform(w, &req, &o);
    assert_non_null(strstr(o.body, "DELETE /echo\n"));
    world_free(w);
}

static void response_headers_are_lower_cased_in_order_with_repeats_kept(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/headers", &o);
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
    world_free(w);
}

static void error_statuses_are_answers_counted_by_class(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/status/503", &o);
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 503);
    perform_path(w, "/nothing-here", &o);
    assert_int_equal(o.status, 404);
    assert_true(metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "5xx", NULL}) == 1);
    assert_true(metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "4xx", NULL}) == 1);
    world_free(w);
}

/* ---- errors by kind --------------------------------------------------------------- */

static void slow_answer_past_the_timeout_is_a_timeout(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char url[256];
    url_of(w, "/delay/3000", url, sizeof url);
    ami_httpc_request_t req = get(url);
    req.timeout_ms = 200;
    outcome_t o;
    perform(w, &req, &o);
    expect_error(&o, AMI_HTTPC_TIMEOUT, "in time");
    assert_true(metric(w, "ami_http_client_errors_total", (const char *const[]){"kind", "timeout", NULL}) == 1);
    assert_true(metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "error", NULL}) == 1);
    url_of(w, "/delay/100", url, sizeof url);
    req = get(url);
    req.timeout_ms = 5000;
    perform(w, &req, &o); /* a slow answer within its time is an answer */
    assert_int_equal(o.status, 200);
    assert_string_equal(o.body, "slow");
    world_free(w);
}

static bool server_has_no_open_connection(void *ud)
{
    (void)ud;
    return ami_sim_http_stats(srv).open == 0;
}

static void a_server_that_never_answers_times_out_and_the_connection_closes(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.timeout_ms = 300;
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/never", &o);
    expect_error(&o, AMI_HTTPC_TIMEOUT, NULL);
    assert_true(harness_run_until(w->loop, server_has_no_open_connection, NULL, 5000));
    world_free(w);
}

static void connection_refused_is_a_connect_error(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/ok", ami_sim_http_refused_port(srv));
    ami_httpc_request_t req = get(url);
    outcome_t o;
    perform(w, &req, &o);
    expect_error(&o, AMI_HTTPC_CONNECT, NULL);
    world_free(w);
}

static void answers_that_are_not_http_are_protocol_errors(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/close", &o);
    expect_error(&o, AMI_HTTPC_PROTOCOL, NULL);
    perform_path(w, "/garbage", &o);
    expect_error(&o, AMI_HTTPC_PROTOCOL, NULL);
    world_free(w);
}

static void an_unknown_name_is_a_dns_error_without_stalling_the_loop(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    static const char url[] = "http://ami-engine-test.invalid/ok";
    ami_httpc_request_t req = get(url);
    req.timeout_ms = 2000;
    outcome_t o;
    perform(w, &req, &o);
    /* No resolver answers in time on some machines: a timeout is fine, a
     * blocked loop (perform's own deadline) is not. */
    if (o.kind != AMI_HTTPC_DNS && o.kind != AMI_HTTPC_TIMEOUT)
        fail_msg("expected dns or timeout, got %s: %s", ami_httpc_kind_name(o.kind), o.msg);
    world_free(w);
}

/* ---- bounds on the answer --------------------------------------------------------- */

static void a_body_over_the_bound_is_too_large_announced_or_streamed(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_response_bytes = 100000;
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/big/100000", &o); /* exactly the bound: fine */
    assert_int_equal(o.status, 200);
    assert_int_equal(o.body_len, 100000);
    perform_path(w, "/big/100001", &o);
    expect_error(&o, AMI_HTTPC_TOO_LARGE, "max_response_bytes");
    assert_true(refused(w, "response_body") == 1);
    perform_path(w, "/stream/5000000", &o);
    expect_error(&o, AMI_HTTPC_TOO_LARGE, "max_response_bytes");
    assert_true(refused(w, "response_body") == 2);
    world_free(w);
}

static void response_headers_over_the_bound_are_too_large(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_header_bytes = 4096;
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/bigheader/3000", &o);
    assert_int_equal(o.status, 200);
    perform_path(w, "/bigheader/5000", &o);
    expect_error(&o, AMI_HTTPC_TOO_LARGE, "max_header_bytes");
    assert_true(refused(w, "response_headers") == 1);
    world_free(w);
}

/* ---- redirects ------------------------------------------------------------------------- */

static void redirects_are_followed_up_to_the_bound(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_redirects = 3;
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/redirect/3", &o);
    assert_int_equal(o.status, 200);
    assert_string_equal(o.body, "arrived");
    assert_non_null(strstr(o.url, "/redirect/0"));
    assert_null(strstr(o.headers, "location="));   /* the final answer's headers only */
    perform_path(w, "/redirect/4", &o);
    expect_error(&o, AMI_HTTPC_REDIRECT, "max_redirects");
    perform_path(w, "/loop", &o);
    expect_error(&o, AMI_HTTPC_REDIRECT, NULL);
    assert_true(refused(w, "redirects") == 2);
    world_free(w);
}

static void redirects_to_other_schemes_are_refused(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/redirect-to?file:///etc/passwd", &o);
    expect_error(&o, AMI_HTTPC_REFUSED, "not http or https");
    perform_path(w, "/redirect-to?ftp://127.0.0.1/x", &o);
    expect_error(&o, AMI_HTTPC_REFUSED, "not http or https");
    assert_true(refused(w, "scheme") == 2);
    world_free(w);
}

static void with_no_redirects_allowed_the_3xx_is_the_answer(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_redirects = 0;
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/redirect/1", &o);
    assert_int_equal(o.status, 302);
    assert_non_null(strstr(o.headers, "location=/redirect/0\n"));
    world_free(w);
}

/* ---- bounds and checks on the request ------------------------------------------------------ */

static void bad_requests_are_refused_at_once_with_their_reason(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_url_bytes = 100;
    c.max_request_bytes = 10;
    world_t *w = world_new(&c);
    char ok[128];
    url_of(w, "/ok", ok, sizeof ok);
    ami_httpc_request_t r = get(ok);
    r.method = "TRACE";
    expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "method");
    r = get("ftp://127.0.0.1/x");
    expect_refused_at_once(w, &r, AMI_HTTPC_REFUSED, "scheme", "http:// or https://");
    r = get("file:///etc/passwd");
    expect_refused_at_once(w, &r, AMI_HTTPC_REFUSED, "scheme", "http:// or https://");
    r = get("http://127.0.0.1/a b");
    expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "space or control");
    r = get("http://");
    expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "not a valid URL");
    char long_url[200];
    snprintf(long_url, sizeof long_url, "http://127.0.0.1/%0150d", 7);
    r = get(long_url);
    expect_refused_at_once(w, &r, AMI_HTTPC_TOO_LARGE, "url_length", "max_url_bytes");
    r = (ami_httpc_request_t){.method = "POST", .url = ok, .url_len = strlen(ok), .body = "12345678901", .body_len = 11};
    expect_refused_at_once(w, &r, AMI_HTTPC_TOO_LARGE, "request_body", "max_request_bytes");
    r = (ami_httpc_request_t){.method = "GET", .url = ok, .url_len = strlen(ok), .body = "x", .body_len = 1};
    expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "has no body");
    r = get(ok);
    r.timeout_ms = c.timeout_ms + 1;
    expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", "http.timeout_ms");
    world_free(w);
}

static void header_injection_and_engine_owned_headers_are_refused(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char ok[128];
    url_of(w, "/ok", ok, sizeof ok);
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
        ami_httpc_request_t r = get(ok);
        r.headers = &bad[i].h;
        r.nheaders = 1;
        expect_refused_at_once(w, &r, AMI_HTTPC_INVALID, "invalid", bad[i].text);
    }
    ami_httpc_header_t many[65];
    for (size_t i = 0; i < 65; i++)
        many[i] = (ami_httpc_header_t){"X-N", 3, "v", 1};
    ami_httpc_request_t r = get(ok);
    r.headers = many;
    r.nheaders = 65;
    expect_refused_at_once(w, &r, AMI_HTTPC_TOO_LARGE, "request_headers", "at most 64");
    assert_int_equal(ami_sim_http_stats(srv).open, 0);
    world_free(w);
}

/* ---- concurrency and cancellation --------------------------------------------------------------- */

typedef struct many {
    outcome_t o[8];
} many_t;

static bool all_done(void *ud)
{
    outcome_t *o = ud;
    return o[0].done && o[1].done;
}

static void concurrency_is_bounded_overall_and_per_owner(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_concurrent = 2;
    c.max_per_owner = 1;
    world_t *w = world_new(&c);
    char url[128];
    url_of(w, "/delay/200", url, sizeof url);
    outcome_t o[3] = {0};
    ami_httpc_request_t r = get(url);
    r.owner = "a.lua";
    ami_httpc_err_t err;
    assert_non_null(ami_httpc_start(w->h, &r, on_done, &o[0], &err));
    assert_null(ami_httpc_start(w->h, &r, on_done, &o[2], &err)); /* a.lua has its one */
    assert_int_equal(err.kind, AMI_HTTPC_LIMIT);
    assert_non_null(strstr(err.msg, "max_per_script"));
    r.owner = "b.lua";
    assert_non_null(ami_httpc_start(w->h, &r, on_done, &o[1], &err));
    r.owner = "c.lua";
    assert_null(ami_httpc_start(w->h, &r, on_done, &o[2], &err)); /* two in flight overall */
    assert_non_null(strstr(err.msg, "max_concurrent"));
    assert_true(refused(w, "max_per_script") == 1);
    assert_true(refused(w, "max_concurrent") == 1);
    assert_true(metric(w, "ami_http_client_in_flight", NULL) == 2);
    assert_true(harness_run_until(w->loop, all_done, o, 10000));
    assert_false(o[2].done);
    r.owner = "a.lua"; /* finished transfers give their places back */
    assert_non_null(ami_httpc_start(w->h, &r, on_done, &o[2], &err));
    assert_true(harness_run_until(w->loop, is_done, &o[2], 10000));
    assert_true(metric(w, "ami_http_client_in_flight", NULL) == 0);
    world_free(w);
}

static void a_cancelled_transfer_never_calls_back_and_closes_its_connection(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char url[128];
    url_of(w, "/never", url, sizeof url);
    outcome_t o = {0};
    ami_httpc_request_t r = get(url);
    ami_httpc_transfer_t *t = ami_httpc_start(w->h, &r, on_done, &o, NULL);
    assert_non_null(t);
    uint64_t requests = ami_sim_http_stats(srv).requests;
    for (int i = 0; i < 400 && ami_sim_http_stats(srv).requests == requests; i++)
        harness_run_for(w->loop, 5);
    assert_int_equal(ami_sim_http_stats(srv).open, 1);
    ami_httpc_cancel(w->h, t);
    assert_true(harness_run_until(w->loop, server_has_no_open_connection, NULL, 5000));
    harness_run_for(w->loop, 50);
    assert_false(o.done);
    assert_int_equal(ami_httpc_active(w->h), 0);
    assert_true(metric(w, "ami_http_client_cancelled_total", NULL) == 1);
    world_free(w);
}

static void a_transfer_cancelled_before_the_loop_runs_never_reaches_the_server(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char url[128];
    url_of(w, "/ok", url, sizeof url);
    uint64_t requests = ami_sim_http_stats(srv).requests;
    outcome_t o[3] = {0};
    ami_httpc_request_t r = get(url);
    ami_httpc_transfer_t *t[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(t[i] = ami_httpc_start(w->h, &r, on_done, &o[i], NULL));
    ami_httpc_cancel(w->h, t[1]); /* the middle one of the start queue */
    assert_true(harness_run_until(w->loop, is_done, &o[2], 5000));
    assert_true(harness_run_until(w->loop, is_done, &o[0], 5000));
    harness_run_for(w->loop, 50);
    assert_false(o[1].done);
    assert_int_equal(ami_sim_http_stats(srv).requests, requests + 2);
    ami_httpc_cancel(w->h, ami_httpc_start(w->h, &r, on_done, &o[1], NULL));
    world_free(w); /* and one freed while still queued */
    assert_false(o[1].done);
}

static void a_burst_of_starts_joins_curl_in_batches_and_all_finish(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_concurrent = c.max_per_owner = 300;
    world_t *w = world_new(&c);
    char url[128];
    url_of(w, "/ok", url, sizeof url);
    static outcome_t o[300];
    memset(o, 0, sizeof o);
    ami_httpc_request_t r = get(url);
    for (int i = 0; i < 300; i++)
        assert_non_null(ami_httpc_start(w->h, &r, on_done, &o[i], NULL));
    assert_int_equal(ami_httpc_queued(w->h), 300);
    ev_run(w->loop, EVRUN_ONCE); /* one iteration hands 64 to curl */
    assert_int_equal(ami_httpc_queued(w->h), 300 - 64);
    ev_run(w->loop, EVRUN_ONCE);
    assert_int_equal(ami_httpc_queued(w->h), 300 - 128);
    assert_true(harness_run_until(w->loop, is_done, &o[299], 20000));
    assert_int_equal(ami_httpc_queued(w->h), 0);
    for (int i = 0; i < 300; i++) {
        assert_true(harness_run_until(w->loop, is_done, &o[i], 20000));
        assert_int_equal(o[i].status, 200);
    }
    assert_int_equal(ami_httpc_active(w->h), 0);
    world_free(w);
}

typedef struct chain {
    world_t *w;
    outcome_t first, second;
    char url[128];
} chain_t;

static void on_first_done(void *ud, const ami_httpc_response_t *res)
{
    chain_t *ch = ud;
    on_done(&ch->first, res);
    ami_httpc_request_t r = get(ch->url);
    assert_non_null(ami_httpc_start(ch->w->h, &r, on_done, &ch->second, NULL));
}

static void a_done_callback_may_start_the_next_request(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    chain_t ch = {.w = world_new(&c)};
    url_of(ch.w, "/ok", ch.url, sizeof ch.url);
    ami_httpc_request_t r = get(ch.url);
    assert_non_null(ami_httpc_start(ch.w->h, &r, on_first_done, &ch, NULL));
    assert_true(harness_run_until(ch.w->loop, is_done, &ch.second, 10000));
    assert_int_equal(ch.first.status, 200);
    assert_int_equal(ch.second.status, 200);
    world_free(ch.w);
}

static void freeing_the_client_ends_transfers_without_callbacks(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    char url[128];
    url_of(w, "/never", url, sizeof url);
    outcome_t o = {0};
    ami_httpc_request_t r = get(url);
    assert_non_null(ami_httpc_start(w->h, &r, on_done, &o, NULL));
    harness_run_for(w->loop, 50);
    world_free(w);
    assert_false(o.done);
}

/* ---- metrics labels ---------------------------------------------------------------------------- */

static void hosts_past_the_label_cap_count_as_other(void **state)
{
    (void)state;
    ami_httpc_config_t c = config();
    c.max_host_labels = 1;
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/ok", &o);
    char url[128];
    snprintf(url, sizeof url, "http://localhost:%u/ok", ami_sim_http_port(srv));
    ami_httpc_request_t r = get(url);
    perform(w, &r, &o);
    assert_int_equal(o.status, 200);
    assert_true(metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "2xx", NULL}) == 1);
    assert_true(metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "other", "class", "2xx", NULL}) == 1);
    world_free(w);
}

/* ---- proxies ------------------------------------------------------------------------------------ */

static void proxies_in_the_environment_are_ignored(void **state)
{
    (void)state;
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%u", ami_sim_http_refused_port(srv));
    setenv("http_proxy", proxy, 1);
    setenv("HTTP_PROXY", proxy, 1);
    setenv("ALL_PROXY", proxy, 1);
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    outcome_t o;
    perform_path(w, "/ok", &o);
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("ALL_PROXY");
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 200);
    world_free(w);
}

static void a_configured_proxy_is_used(void **state)
{
    (void)state;
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%u", ami_sim_http_port(srv));
    ami_httpc_config_t c = config();
    c.proxy = proxy; /* the echo route shows the absolute URL a proxy receives */
    world_t *w = world_new(&c);
    ami_httpc_request_t r = get("http://crm.example/echo");
    outcome_t o;
    perform(w, &r, &o);
    assert_int_equal(o.status, 200);
    assert_non_null(strstr(o.body, "GET http://crm.example/echo\n"));
    world_free(w);
}

/* ---- TLS ------------------------------------------------------------------------------------------ */

static https_certs_t certs;

static void https_get(world_t *w, uint16_t port, outcome_t *o)
{
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%u/", port);
    ami_httpc_request_t r = get(url);
    perform(w, &r, o);
}

static void tls_peers_are_verified_against_the_configured_ca(void **state)
{
    (void)state;
    if (!certs.dir[0] && !https_certs_make(&certs))
        fail_msg("cannot make test certificates");
    https_peer_t good, wrong;
    assert_true(https_peer_start(&good, &certs, certs.cert, certs.key));
    assert_true(https_peer_start(&wrong, &certs, certs.wrong_cert, certs.wrong_key));
    outcome_t o;

    ami_httpc_config_t c = config();
    c.ca_file = certs.ca;
    world_t *w = world_new(&c);
    https_get(w, good.port, &o);
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 200);
    https_get(w, wrong.port, &o); /* the right CA, the wrong name */
    expect_error(&o, AMI_HTTPC_TLS, NULL);
    world_free(w);

    c.ca_file = certs.other_ca; /* a CA that did not sign the server's certificate */
    w = world_new(&c);
    https_get(w, good.port, &o);
    expect_error(&o, AMI_HTTPC_TLS, NULL);
    assert_true(metric(w, "ami_http_client_errors_total", (const char *const[]){"kind", "tls", NULL}) == 1);
    world_free(w);

    c.verify = false;
    w = world_new(&c);
    https_get(w, good.port, &o);
    assert_int_equal(o.status, 200);
    world_free(w);

    https_peer_stop(&good);
    https_peer_stop(&wrong);
}

static void the_system_store_does_not_trust_a_test_ca(void **state)
{
    (void)state;
    if (!certs.dir[0] && !https_certs_make(&certs))
        fail_msg("cannot make test certificates");
    https_peer_t good;
    assert_true(https_peer_start(&good, &certs, certs.cert, certs.key));
    ami_httpc_config_t c = config();
    world_t *w = world_new(&c);
    outcome_t o;
    https_get(w, good.port, &o);
    expect_error(&o, AMI_HTTPC_TLS, NULL);
    world_free(w);
    https_peer_stop(&good);
}

/* ---- the client's own checks -------------------------------------------------------------------- */

static void a_zero_limit_in_the_config_is_refused(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_metrics_t *m = ami_metrics_new(1000);
    ami_httpc_config_t c = config();
    c.max_concurrent = 0;
    ami_httpc_err_t err = {0};
    assert_null(ami_httpc_new(loop, &c, m, NULL, &err));
    assert_int_equal(err.kind, AMI_HTTPC_INVALID);
    ami_metrics_free(m);
    ev_loop_destroy(loop);
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
    https_certs_remove(&certs);
    proc_kill_all();
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
        cmocka_unit_test(concurrency_is_bounded_overall_and_per_owner),
        cmocka_unit_test(a_cancelled_transfer_never_calls_back_and_closes_its_connection),
        cmocka_unit_test(a_transfer_cancelled_before_the_loop_runs_never_reaches_the_server),
        cmocka_unit_test(a_burst_of_starts_joins_curl_in_batches_and_all_finish),
        cmocka_unit_test(a_done_callback_may_start_the_next_request),
        cmocka_unit_test(freeing_the_client_ends_transfers_without_callbacks),
        cmocka_unit_test(hosts_past_the_label_cap_count_as_other),
        cmocka_unit_test(proxies_in_the_environment_are_ignored),
        cmocka_unit_test(a_configured_proxy_is_used),
        cmocka_unit_test(tls_peers_are_verified_against_the_configured_ca),
        cmocka_unit_test(the_system_store_does_not_trust_a_test_ca),
        cmocka_unit_test(a_zero_limit_in_the_config_is_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
