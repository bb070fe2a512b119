/* The /metrics and /healthz endpoint over real TCP on 127.0.0.1, one
 * connection at a time: what it answers (the exact rendering, health,
 * HEAD), routing, strict parsing of what clients send, bind errors, IPv6,
 * logs. The limits (time, connections, eviction, slow clients) are in
 * test_http_limits.c; the attacks in test_http_attack.c. Every test proves
 * on teardown that every byte the endpoint allocated came back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "http_probe.h"
#include "proc.h"
#include "obs/http.h"
#include "prom_check.h"

#define T PROBE_T

/* ---- /metrics ----------------------------------------------------------------------------- */

static void metrics_returns_the_exact_rendering(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    ami_counter_add(ami_metrics_counter(e->metrics, "ami_test_events_total", "Events seen.",
                                        L("server_key", "pbx1"), NULL), 42);
    size_t len;
    /* the endpoint counts this request after rendering it, and its own connection before */
    ami_gauge_set(ami_metrics_gauge(e->metrics, "ami_http_connections", "x", NULL, NULL), 1);
    char *expect = probe_render(e, &len);
    hc_t c;
    probe_exchange(e, &c, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    resp_t r;
    resp_parse(&c, &r);
    assert_int_equal(r.status, 200);
    resp_assert_common(&r, false);
    resp_assert_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    assert_int_equal(r.body_len, len);
    assert_memory_equal(r.body, expect, len);
    assert_non_null(strstr(expect, "ami_test_events_total{server_key=\"pbx1\"} 42\n"));
    assert_non_null(strstr(expect, "# TYPE ami_http_timeouts_total counter\nami_http_timeouts_total{phase=\"read\"} 0\n"
                                   "ami_http_timeouts_total{phase=\"write\"} 0\n"));
    probe_assert_prom(r.body, r.body_len);
    free(expect);
    hc_close(&c);
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "/metrics", "code", "200")) == 1);
}

static void metrics_text_passes_the_strict_format_check(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    ami_metrics_t *m = e->metrics;
    ami_counter_inc(ami_metrics_counter(m, "ami_odd_total", "Help with a \\ backslash\nand a newline.",
                                        L("v", "quote \" backslash \\ newline \n end", "u", "h\xc3\xa9"), NULL));
    ami_gauge_t *g[3] = {ami_metrics_gauge(m, "ami_g", "", L("k", "nan"), NULL),
                         ami_metrics_gauge(m, "ami_g", "", L("k", "inf"), NULL),
                         ami_metrics_gauge(m, "ami_g", "", L("k", "frac"), NULL)};
    ami_gauge_set(g[0], NAN);
    ami_gauge_set(g[1], -INFINITY);
    ami_gauge_set(g[2], 1.0 / 3);
    ami_histogram_t *h = ami_metrics_histogram(m, "ami_latency_seconds", "Latency.", NULL, 0,
                                               L("server_key", "pbx1"), NULL);
    ami_histogram_t *h2 = ami_metrics_histogram(m, "ami_latency_seconds", NULL, NULL, 0,
                                                L("server_key", "pbx2"), NULL);
    for (int i = 0; i < 100; i++)
        ami_histogram_observe(i % 2 ? h : h2, i * 0.013);
    resp_t r;
    for (int i = 0; i < 3; i++) /* and the endpoint's own series, once it has some */
        probe_get(e, i == 2 ? "GET /metrics HTTP/1.1\r\n\r\n" : "GET /nope HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    probe_assert_prom(r.body, r.body_len);
    assert_non_null(strstr(r.body, "ami_http_requests_total{path=\"other\",code=\"404\"} 2\n"));
    assert_non_null(strstr(r.body, "ami_latency_seconds_bucket{server_key=\"pbx2\",le=\"+Inf\"} 50\n"));
}

static void metrics_past_max_response_is_500(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.max_response = 512};
    http_env_start(e, &cfg, true);
    for (int i = 0; i < 50; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        ami_metrics_gauge(e->metrics, "ami_filler", "Filler.", L("i", v), NULL);
    }
    resp_t r;
    probe_get(e, "GET /metrics HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 500);
    resp_assert_common(&r, false);
    assert_non_null(strstr(log_capture_text(&e->logs), "level=warn"));
    assert_non_null(strstr(log_capture_text(&e->logs), "max_response=512"));
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "/metrics", "code", "500")) == 1);
}

/* ---- /healthz ---------------------------------------------------------------------------- */

static void healthz_answers_what_the_callback_says(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    resp_t r;
    probe_get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    resp_assert_common(&r, false);
    resp_assert_header(&r, "Content-Type", "text/plain; charset=utf-8");
    assert_string_equal(r.body, "healthy\n");

    e->health_code = 503;
    e->health_text = "pbx1: backoff\n";
    probe_get(e, "GET /healthz HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 503);
    resp_assert_common(&r, false);
    assert_string_equal(r.body, "pbx1: backoff\n");

    e->health_code = 418; /* not "healthy": answered as unavailable */
    probe_get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 503);
    assert_int_equal(e->health_calls, 3);
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "/healthz", "code", "503")) == 2);
}

static void healthz_without_a_callback_is_ok(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, false);
    resp_t r;
    probe_get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
}

/* ---- methods, paths, malformed input ------------------------------------------------------------ */

static void head_sends_headers_with_the_length_and_no_body(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    resp_t r;
    probe_get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    long get_length = r.content_length;
    probe_get(e, "HEAD /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    resp_assert_common(&r, true);
    assert_int_equal(r.content_length, get_length);

    probe_get(e, "HEAD /metrics HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    resp_assert_common(&r, true);
    assert_true(r.content_length > 0);
    probe_get(e, "HEAD /missing HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    resp_assert_common(&r, true);
}

static void routing_ignores_the_query_and_unknown_paths_are_404(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    resp_t r;
    probe_get(e, "GET /metrics?name[]=ami_x HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    probe_get(e, "GET /healthz? HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    const char *misses[] = {"GET / HTTP/1.1\r\n\r\n", "GET /metricsx HTTP/1.1\r\n\r\n",
                            "GET /metrics/ HTTP/1.1\r\n\r\n", "GET /METRICS HTTP/1.1\r\n\r\n",
                            "GET //metrics HTTP/1.1\r\n\r\n"};
    for (size_t i = 0; i < sizeof misses / sizeof misses[0]; i++) {
        probe_get(e, misses[i], &r);
        assert_int_equal(r.status, 404);
        resp_assert_common(&r, false);
    }
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "other", "code", "404")) == 5);
}

static void other_methods_are_405_with_allow(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.response_timeout_ms = 150};
    http_env_start(e, &cfg, true);
    const char *reqs[] = {
        "POST /metrics HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
        "DELETE /healthz HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "get /metrics HTTP/1.1\r\n\r\n", /* methods are case-sensitive */
    };
    resp_t r;
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        probe_get(e, reqs[i], &r);
        assert_int_equal(r.status, 405);
        resp_assert_common(&r, false);
        resp_assert_header(&r, "Allow", "GET, HEAD");
    }
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "/metrics", "code", "405")) == 2);

    /* After answering, the server drains what the client still sends, until
     * the client closes or the budget ends: that is no timeout. */
    hc_t c;
    hc_connect(&c, e->port);
    hc_send(&c, "PUT /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    resp_parse(&c, &r);
    assert_int_equal(r.status, 405);
    char junk[1024];
    memset(junk, 'x', sizeof junk);
    hc_send_n(&c, junk, sizeof junk);
    harness_run_for(e->loop, 300);
    assert_true(probe_metric(e, "ami_http_timeouts_total", L("phase", "write")) == 0);
    hc_close(&c);
}

static void malformed_requests_are_400(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "\r\n\r\n",
        "GET /metrics\r\n\r\n",
        "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics  HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1 \r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n",
        "GET /metrics HTTP/1.10\r\n\r\n",
        "GET /metrics http/1.1\r\n\r\n",
        "GET metrics HTTP/1.1\r\n\r\n",
        "GET http://localhost/metrics HTTP/1.1\r\n\r\n",
        "GET /met\x01rics HTTP/1.1\r\n\r\n",
        "GET /m\xc3\xa9trics HTTP/1.1\r\n\r\n",
        "GET\t/metrics HTTP/1.1\r\n\r\n",
        "G(T /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nX: a\rb\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nX: \x7f\r\n\r\n",
        "\x16\x03\x01\x02\x05\x01\x07\x01\xfc\x03\x03\n\n", /* a TLS hello, more or less */
    };
    resp_t r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        probe_get(e, bad[i], &r);
        if (r.status != 400)
            fail_msg("case %zu: status %d, want 400", i, r.status);
        resp_assert_common(&r, false);
    }
    hc_t c; /* a NUL byte cannot go through hc_send */
    hc_connect(&c, e->port);
    hc_send_n(&c, "GET /met\0rics HTTP/1.1\r\n\r\n", 26);
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    resp_parse(&c, &r);
    assert_int_equal(r.status, 400);
    hc_close(&c);
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "other", "code", "400")) ==
                (double)(sizeof bad / sizeof bad[0]) + 1);
}

static uint32_t rng(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Mutated valid requests: whatever comes, a well-formed answer and no crash. */
static void mutated_requests_always_get_a_well_formed_answer(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    static const char seed_req[] = "GET /metrics?a=b HTTP/1.1\r\nHost: localhost:9100\r\nAccept: text/plain\r\n";
    static const char alphabet[] = " \t\r\n:/?%GETHADPOS1.\x00\x7f\x80\xff";
    uint32_t seed = 0x9e3779b9u;
    for (int i = 0; i < 300; i++) {
        char req[256];
        size_t n = sizeof seed_req - 1;
        memcpy(req, seed_req, n);
        for (uint32_t k = rng(&seed) % 4 + 1; k > 0; k--) {
            size_t at = rng(&seed) % n;
            char ch = alphabet[rng(&seed) % (sizeof alphabet - 1)];
            switch (rng(&seed) % 3) {
            case 0: req[at] = ch; break;
            case 1: memmove(req + at + 1, req + at, n - at); req[at] = ch; n++; break;
            default: memmove(req + at, req + at + 1, n - at - 1); n--; break;
            }
        }
        memcpy(req + n, "\r\n\r\n", 4);
        hc_t c;
        hc_connect(&c, e->port);
        hc_send_n(&c, req, n + 4);
        if (!harness_run_until(e->loop, hc_pump, &c, T))
            fail_msg("case %d: no answer", i);
        resp_t r;
        resp_parse(&c, &r);
        if (r.status != 200 && r.status != 400 && r.status != 404 && r.status != 405)
            fail_msg("case %d: status %d", i, r.status);
        resp_assert_common(&r, false);
        hc_close(&c);
    }
}

static void bare_lf_heads_and_headers_are_accepted(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    resp_t r;
    probe_get(e, "GET /healthz HTTP/1.0\n\n", &r);
    assert_int_equal(r.status, 200);
    probe_get(e, "GET /healthz HTTP/1.1\nHost: x\nUser-Agent: t/1.0 (\xe2\x9c\x93)\n\n", &r);
    assert_int_equal(r.status, 200);
    probe_get(e, "GET /healthz HTTP/1.1\r\nHost:x\r\nX-Empty:\r\nX-Tab:\ta\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
}

static void an_oversized_head_is_431(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.max_request = 256};
    http_env_start(e, &cfg, true);
    char req[4096];
    int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.1\r\nX-Fill: ");
    memset(req + n, 'a', sizeof req - (size_t)n - 1);
    req[sizeof req - 1] = '\0';
    resp_t r;
    probe_get(e, req, &r);
    assert_int_equal(r.status, 431);
    resp_assert_common(&r, false);
    assert_non_null(strstr(r.head, "431 Request Header Fields Too Large"));

    /* a head of exactly max_request bytes still fits */
    n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nX-Fill: ");
    memset(req + n, 'a', 256 - (size_t)n - 4);
    memcpy(req + 256 - 4, "\r\n\r\n", 5);
    assert_int_equal(strlen(req), 256);
    probe_get(e, req, &r);
    assert_int_equal(r.status, 200);
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "other", "code", "431")) == 1);
}

/* ---- setup errors, IPv6, logs --------------------------------------------------------------- */

static void bind_failures_name_the_address_and_the_fix(void **state)
{
    http_env_t *e = *state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);

    ami_http_config_t cfg;
    ami_http_config_default(&cfg);
    cfg.port = ntohs(a.sin_port);
    ami_err_t err;
    assert_null(ami_http_new(e->loop, &cfg, e->metrics, NULL, NULL, e->log, &err));
    assert_int_equal(err.code, AMI_E_IO);
    char want[64];
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%u: ", (unsigned)cfg.port);
    assert_non_null(strstr(err.msg, want));
    assert_non_null(strstr(err.msg, strerror(EADDRINUSE)));
    assert_non_null(strstr(err.msg, "choose another metrics.listen port"));
    assert_non_null(strstr(log_capture_text(&e->logs), "level=warn"));
    close(fd);

    cfg.bind_ip = "localhost";
    assert_null(ami_http_new(e->loop, &cfg, e->metrics, NULL, NULL, NULL, &err));
    assert_int_equal(err.code, AMI_E_CONFIG);
    assert_non_null(strstr(err.msg, "'localhost' is not an IPv4 or IPv6 literal"));
    assert_null(ami_http_new(e->loop, &cfg, e->metrics, NULL, NULL, NULL, NULL));
}

static void ipv6_loopback_works(void **state)
{
    http_env_t *e = *state;
    if (!ipv6_loopback_available()) {
        print_message(IPV6_SKIP_MESSAGE);
        skip();
    }
    ami_http_config_t cfg = {.bind_ip = "::1"};
    ami_err_t err;
    e->http = ami_http_new(e->loop, &cfg, e->metrics, http_env_health, e, e->log, &err);
    if (!e->http)
        fail_msg("::1 can be bound, but the endpoint could not listen there: %s", err.msg);
    hc_t c;
    hc_connect_to(&c, AF_INET6, ami_http_port(e->http), 0);
    hc_send(&c, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    resp_t r;
    resp_parse(&c, &r);
    assert_int_equal(r.status, 200);
    hc_close(&c);
    assert_non_null(strstr(log_capture_text(&e->logs), "addr=[::1]:"));
}

static void requests_are_logged_at_debug(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    resp_t r;
    probe_get(e, "GET /healthz?verbose=1 HTTP/1.1\r\n\r\n", &r);
    const char *line = strstr(log_capture_text(&e->logs), "msg=\"http request\"");
    assert_non_null(line);
    const char *eol = strchr(line, '\n');
    char one[512];
    snprintf(one, sizeof one, "%.*s", (int)(eol - line), line);
    assert_non_null(strstr(one, "method=GET"));
    assert_non_null(strstr(one, "path=/healthz "));
    assert_null(strstr(one, "verbose")); /* a query may hold a token: never logged */
    assert_non_null(strstr(one, "code=200"));
    char bytes[64];
    snprintf(bytes, sizeof bytes, "bytes=%zu", strlen(r.head) + 2 + r.body_len);
    assert_non_null(strstr(one, bytes));
    assert_non_null(strstr(one, "duration_ms="));
    assert_non_null(strstr(log_capture_text(&e->logs), "level=debug"));
}

static void a_null_registry_and_logger_are_fine(void **state)
{
    http_env_t *e = *state;
    ami_err_t err;
    e->http = ami_http_new(e->loop, NULL, NULL, NULL, NULL, NULL, &err);
    assert_non_null(e->http);
    e->port = ami_http_port(e->http);
    resp_t r;
    probe_get(e, "GET /metrics HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    probe_get(e, "BREW /pot HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(metrics_returns_the_exact_rendering, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(metrics_text_passes_the_strict_format_check, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(metrics_past_max_response_is_500, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(healthz_answers_what_the_callback_says, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(healthz_without_a_callback_is_ok, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(head_sends_headers_with_the_length_and_no_body, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(routing_ignores_the_query_and_unknown_paths_are_404, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(other_methods_are_405_with_allow, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(malformed_requests_are_400, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(mutated_requests_always_get_a_well_formed_answer, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(bare_lf_heads_and_headers_are_accepted, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(an_oversized_head_is_431, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(bind_failures_name_the_address_and_the_fix, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(ipv6_loopback_works, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(requests_are_logged_at_debug, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(a_null_registry_and_logger_are_fine, http_env_setup, http_env_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
