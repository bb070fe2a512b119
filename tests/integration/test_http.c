/* The /metrics and /healthz endpoint over real TCP on 127.0.0.1: routing,
 * strict parsing, limits, timeouts, slow and byte-at-a-time clients, the
 * loop never waiting on any of them, and a clean free with clients still
 * connected. The server runs on a loop this thread drives with a bound
 * while non-blocking client sockets talk to it; every test proves on
 * teardown that every byte the endpoint allocated came back. Also the
 * strict Prometheus text checker (tests/support/prom_check.h) itself. */
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
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "log_capture.h"
#include "proc.h"
#include "obs/http.h"
#include "prom_check.h"
#include "util/alloc.h"

#define T 3000 /* ms: generous bound for anything that should happen */
#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- a non-blocking test client ----------------------------------------------------- */

typedef struct hc {
    int fd;
    char *data;
    size_t len, cap;
    bool eof;
    int err; /* errno of a failed recv (ECONNRESET) */
} hc_t;

static void hc_connect_to(hc_t *c, int family, uint16_t port, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    if (rcvbuf)
        assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    }
    /* Loopback connects complete in the kernel's backlog: blocking is fine,
     * the server's loop need not run. */
    assert_int_equal(connect(c->fd, (struct sockaddr *)&ss, len), 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

static void hc_connect(hc_t *c, uint16_t port)
{
    hc_connect_to(c, AF_INET, port, 0);
}

static void hc_send_n(hc_t *c, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0)
            fail_msg("client send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

static void hc_send(hc_t *c, const char *s)
{
    hc_send_n(c, s, strlen(s));
}

/* Read what is there; true once the server closed (or reset). */
static bool hc_pump(void *ud)
{
    hc_t *c = ud;
    while (!c->eof && !c->err) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            c->data = realloc(c->data, c->cap + 1);
            assert_non_null(c->data);
        }
        ssize_t n = recv(c->fd, c->data + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            c->data[c->len] = '\0';
        } else if (n == 0) {
            c->eof = true;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            c->err = errno;
        }
    }
    return c->eof || c->err;
}

static void hc_close(hc_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->data);
    c->data = NULL;
}

/* ---- the response --------------------------------------------------------------------- */

typedef struct resp {
    int status;
    const char *head; /* status line and headers, NUL-terminated copy */
    const char *body;
    size_t body_len;
    long content_length; /* -1 if absent */
    char head_copy[2048];
} resp_t;

static const char *resp_header(resp_t *r, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            snprintf(out, size, "%.*s", (int)(e - v), v);
            return out;
        }
    }
    return NULL;
}

static void parse_resp(const hc_t *c, resp_t *r)
{
    memset(r, 0, sizeof *r);
    if (!c->data)
        fail_msg("no response at all (eof=%d err=%d)", c->eof, c->err);
    const char *end = strstr(c->data, "\r\n\r\n");
    if (!end)
        fail_msg("no complete response head in %zu bytes", c->len);
    size_t head_len = (size_t)(end - c->data) + 2;
    assert_true(head_len < sizeof r->head_copy);
    memcpy(r->head_copy, c->data, head_len);
    r->head_copy[head_len] = '\0';
    r->head = r->head_copy;
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    r->body = end + 4;
    r->body_len = c->len - (head_len + 2);
    char v[64];
    r->content_length = resp_header(r, "Content-Length", v, sizeof v) ? atol(v) : -1;
}

static void assert_header(resp_t *r, const char *name, const char *want)
{
    char v[256];
    if (!resp_header(r, name, v, sizeof v))
        fail_msg("no %s header in:\n%s", name, r->head);
    assert_string_equal(v, want);
}

/* Every answer: Connection: close, no-store, a Content-Length that is the body's. */
static void assert_common(resp_t *r, bool head_only)
{
    assert_header(r, "Connection", "close");
    assert_header(r, "Cache-Control", "no-store");
    assert_true(r->content_length >= 0);
    if (!head_only)
        assert_int_equal((size_t)r->content_length, r->body_len);
    else
        assert_int_equal(r->body_len, 0);
}

/* ---- the world: a loop, a registry, a logger, the endpoint ------------------------------- */

typedef struct env {
    int64_t live_before;
    struct ev_loop *loop;
    ami_metrics_t *metrics;
    ami_logger_t *log;
    ami_http_t *http;
    uint16_t port;
    int health_code;
    const char *health_text;
    int health_calls;
    log_capture_t logs;
} env_t;

static int health(void *ud, ami_buf_t *body)
{
    env_t *e = ud;
    e->health_calls++;
    ami_buf_append_str(body, e->health_text);
    return e->health_code;
}

static int setup(void **state)
{
    env_t *e = calloc(1, sizeof *e);
    e->live_before = ami_alloc_live_bytes();
    e->loop = ev_loop_new(EVFLAG_AUTO);
    e->metrics = ami_metrics_new(200000);
    e->log = log_capture_logger(&e->logs, AMI_LOG_DEBUG, AMI_LOG_FMT_LOGFMT, 0);
    e->health_code = 200;
    e->health_text = "healthy\n";
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env_t *e = *state;
    ami_http_free(e->http);
    ami_metrics_free(e->metrics);
    ami_logger_free(e->log);
    ev_loop_destroy(e->loop);
    assert_int_equal(ami_alloc_live_bytes(), e->live_before);
    log_capture_free(&e->logs);
    free(e);
    return 0;
}

static void start_cfg(env_t *e, const ami_http_config_t *cfg, bool with_health)
{
    ami_err_t err;
    e->http = ami_http_new(e->loop, cfg, e->metrics, with_health ? health : NULL, e, e->log, &err);
    if (!e->http)
        fail_msg("ami_http_new: %s", err.msg);
    e->port = ami_http_port(e->http);
    assert_true(e->port != 0);
}

static void start(env_t *e)
{
    start_cfg(e, NULL, true);
}

/* One request on a fresh connection, read to the server's close. */
static void exchange(env_t *e, hc_t *c, const char *raw)
{
    hc_connect(c, e->port);
    hc_send(c, raw);
    if (!harness_run_until(e->loop, hc_pump, c, T))
        fail_msg("no close within %d ms for request %.40s (got %zu bytes)", T, raw, c->len);
}

static void get(env_t *e, const char *raw, resp_t *r)
{
    hc_t c;
    exchange(e, &c, raw);
    assert_int_equal(c.err, 0);
    parse_resp(&c, r);
    /* body points into c.data: keep a copy for the caller only when small */
    static char body[1 << 16];
    assert_true(r->body_len < sizeof body);
    memcpy(body, r->body, r->body_len);
    body[r->body_len] = '\0';
    r->body = body;
    hc_close(&c);
}

static double metric(env_t *e, const char *name, const char *const *labels)
{
    double v = -1;
    if (ami_metrics_value(e->metrics, name, labels, &v) < 0)
        return -1;
    return v;
}

static char *render(env_t *e, size_t *len)
{
    ami_buf_t b;
    ami_buf_init(&b, 0);
    assert_int_equal(ami_metrics_render(e->metrics, &b), 0);
    char *s = malloc(b.len + 1);
    memcpy(s, b.data, b.len);
    s[b.len] = '\0';
    *len = b.len;
    ami_buf_deinit(&b);
    return s;
}

static void assert_prom_valid(const char *text, size_t len)
{
    char why[256];
    if (prom_check(text, len, why, sizeof why) != 0)
        fail_msg("not valid Prometheus text: %s", why);
}

/* ---- /metrics ----------------------------------------------------------------------------- */

static void metrics_returns_the_exact_rendering(void **state)
{
    env_t *e = *state;
    start(e);
    ami_counter_add(ami_metrics_counter(e->metrics, "ami_test_events_total", "Events seen.",
                                        L("server_key", "pbx1"), NULL), 42);
    size_t len;
    char *expect = render(e, &len); /* the endpoint counts this request after rendering it */
    hc_t c;
    exchange(e, &c, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    resp_t r;
    parse_resp(&c, &r);
    assert_int_equal(r.status, 200);
    assert_common(&r, false);
    assert_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    assert_int_equal(r.body_len, len);
    assert_memory_equal(r.body, expect, len);
    assert_non_null(strstr(expect, "ami_test_events_total{server_key=\"pbx1\"} 42\n"));
    assert_non_null(strstr(expect, "# TYPE ami_http_timeouts_total counter\nami_http_timeouts_total 0\n"));
    assert_prom_valid(r.body, r.body_len);
    free(expect);
    hc_close(&c);
    assert_true(metric(e, "ami_http_requests_total", L("path", "/metrics", "code", "200")) == 1);
}

static void metrics_text_passes_the_strict_format_check(void **state)
{
    env_t *e = *state;
    start(e);
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
        get(e, i == 2 ? "GET /metrics HTTP/1.1\r\n\r\n" : "GET /nope HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_prom_valid(r.body, r.body_len);
    assert_non_null(strstr(r.body, "ami_http_requests_total{path=\"other\",code=\"404\"} 2\n"));
    assert_non_null(strstr(r.body, "ami_latency_seconds_bucket{server_key=\"pbx2\",le=\"+Inf\"} 50\n"));
}

static void metrics_past_max_response_is_500(void **state)
{
    env_t *e = *state;
    ami_http_config_t cfg = {.max_response = 512};
    start_cfg(e, &cfg, true);
    for (int i = 0; i < 50; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        ami_metrics_gauge(e->metrics, "ami_filler", "Filler.", L("i", v), NULL);
    }
    resp_t r;
    get(e, "GET /metrics HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 500);
    assert_common(&r, false);
    assert_non_null(strstr(log_capture_text(&e->logs), "level=warn"));
    assert_non_null(strstr(log_capture_text(&e->logs), "max_response=512"));
    assert_true(metric(e, "ami_http_requests_total", L("path", "/metrics", "code", "500")) == 1);
}

/* ---- /healthz ---------------------------------------------------------------------------- */

static void healthz_answers_what_the_callback_says(void **state)
{
    env_t *e = *state;
    start(e);
    resp_t r;
    get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_common(&r, false);
    assert_header(&r, "Content-Type", "text/plain; charset=utf-8");
    assert_string_equal(r.body, "healthy\n");

    e->health_code = 503;
    e->health_text = "pbx1: backoff\n";
    get(e, "GET /healthz HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 503);
    assert_common(&r, false);
    assert_string_equal(r.body, "pbx1: backoff\n");

    e->health_code = 418; /* not "healthy": answered as unavailable */
    get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 503);
    assert_int_equal(e->health_calls, 3);
    assert_true(metric(e, "ami_http_requests_total", L("path", "/healthz", "code", "503")) == 2);
}

static void healthz_without_a_callback_is_ok(void **state)
{
    env_t *e = *state;
    start_cfg(e, NULL, false);
    resp_t r;
    get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
}

/* ---- methods, paths, malformed input ------------------------------------------------------------ */

static void head_sends_headers_with_the_length_and_no_body(void **state)
{
    env_t *e = *state;
    start(e);
    resp_t r;
    get(e, "GET /healthz HTTP/1.1\r\n\r\n", &r);
    long get_length = r.content_length;
    get(e, "HEAD /healthz HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_common(&r, true);
    assert_int_equal(r.content_length, get_length);

    get(e, "HEAD /metrics HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_common(&r, true);
    assert_true(r.content_length > 0);
    get(e, "HEAD /missing HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    assert_common(&r, true);
}

static void routing_ignores_the_query_and_unknown_paths_are_404(void **state)
{
    env_t *e = *state;
    start(e);
    resp_t r;
    get(e, "GET /metrics?name[]=ami_x HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    get(e, "GET /healthz? HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    const char *misses[] = {"GET / HTTP/1.1\r\n\r\n", "GET /metricsx HTTP/1.1\r\n\r\n",
                            "GET /metrics/ HTTP/1.1\r\n\r\n", "GET /METRICS HTTP/1.1\r\n\r\n",
                            "GET //metrics HTTP/1.1\r\n\r\n"};
    for (size_t i = 0; i < sizeof misses / sizeof misses[0]; i++) {
        get(e, misses[i], &r);
        assert_int_equal(r.status, 404);
        assert_common(&r, false);
    }
    assert_true(metric(e, "ami_http_requests_total", L("path", "other", "code", "404")) == 5);
}

static void other_methods_are_405_with_allow(void **state)
{
    env_t *e = *state;
    ami_http_config_t cfg = {.timeout_ms = 150};
    start_cfg(e, &cfg, true);
    const char *reqs[] = {
        "POST /metrics HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
        "DELETE /healthz HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "get /metrics HTTP/1.1\r\n\r\n", /* methods are case-sensitive */
    };
    resp_t r;
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        get(e, reqs[i], &r);
        assert_int_equal(r.status, 405);
        assert_common(&r, false);
        assert_header(&r, "Allow", "GET, HEAD");
    }
    assert_true(metric(e, "ami_http_requests_total", L("path", "/metrics", "code", "405")) == 2);

    /* After answering, the server drains what the client still sends, until
     * the client closes or the budget ends: that is no timeout. */
    hc_t c;
    hc_connect(&c, e->port);
    hc_send(&c, "PUT /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    parse_resp(&c, &r);
    assert_int_equal(r.status, 405);
    char junk[1024];
    memset(junk, 'x', sizeof junk);
    hc_send_n(&c, junk, sizeof junk);
    harness_run_for(e->loop, 300);
    assert_true(metric(e, "ami_http_timeouts_total", NULL) == 0);
    hc_close(&c);
}

static void malformed_requests_are_400(void **state)
{
    env_t *e = *state;
    start(e);
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
        get(e, bad[i], &r);
        if (r.status != 400)
            fail_msg("case %zu: status %d, want 400", i, r.status);
        assert_common(&r, false);
    }
    hc_t c; /* a NUL byte cannot go through hc_send */
    hc_connect(&c, e->port);
    hc_send_n(&c, "GET /met\0rics HTTP/1.1\r\n\r\n", 26);
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    parse_resp(&c, &r);
    assert_int_equal(r.status, 400);
    hc_close(&c);
    assert_true(metric(e, "ami_http_requests_total", L("path", "other", "code", "400")) ==
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
    env_t *e = *state;
    start(e);
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
        parse_resp(&c, &r);
        if (r.status != 200 && r.status != 400 && r.status != 404 && r.status != 405)
            fail_msg("case %d: status %d", i, r.status);
        assert_common(&r, false);
        hc_close(&c);
    }
}

static void bare_lf_heads_and_headers_are_accepted(void **state)
{
    env_t *e = *state;
    start(e);
    resp_t r;
    get(e, "GET /healthz HTTP/1.0\n\n", &r);
    assert_int_equal(r.status, 200);
    get(e, "GET /healthz HTTP/1.1\nHost: x\nUser-Agent: t/1.0 (\xe2\x9c\x93)\n\n", &r);
    assert_int_equal(r.status, 200);
    get(e, "GET /healthz HTTP/1.1\r\nHost:x\r\nX-Empty:\r\nX-Tab:\ta\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
}

static void an_oversized_head_is_431(void **state)
{
    env_t *e = *state;
    ami_http_config_t cfg = {.max_request = 256};
    start_cfg(e, &cfg, true);
    char req[4096];
    int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.1\r\nX-Fill: ");
    memset(req + n, 'a', sizeof req - (size_t)n - 1);
    req[sizeof req - 1] = '\0';
    resp_t r;
    get(e, req, &r);
    assert_int_equal(r.status, 431);
    assert_common(&r, false);
    assert_non_null(strstr(r.head, "431 Request Header Fields Too Large"));

    /* a head of exactly max_request bytes still fits */
    n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nX-Fill: ");
    memset(req + n, 'a', 256 - (size_t)n - 4);
    memcpy(req + 256 - 4, "\r\n\r\n", 5);
    assert_int_equal(strlen(req), 256);
    get(e, req, &r);
    assert_int_equal(r.status, 200);
    assert_true(metric(e, "ami_http_requests_total", L("path", "other", "code", "431")) == 1);
}

/* ---- time, limits, slow clients -------------------------------------------------------------- */

static void a_silent_client_times_out_and_is_counted(void **state)
{
    env_t *e = *state;
    ami_http_config_t cfg = {.timeout_ms = 100};
    start_cfg(e, &cfg, true);
    hc_t silent, partial;
    hc_connect(&silent, e->port);
    hc_connect(&partial, e->port);
    hc_send(&partial, "GET /metrics HTTP/1.1\r\nHost:");
    assert_true(harness_run_until(e->loop, hc_pump, &silent, T));
    assert_true(harness_run_until(e->loop, hc_pump, &partial, T));
    assert_int_equal(silent.len, 0);
    assert_int_equal(partial.len, 0);
    assert_true(metric(e, "ami_http_timeouts_total", NULL) == 2);
    assert_non_null(strstr(log_capture_text(&e->logs), "http connection timed out"));
    hc_close(&silent);
    hc_close(&partial);
}

static void clients_past_max_clients_are_closed_and_counted(void **state)
{
    env_t *e = *state;
    ami_http_config_t cfg = {.max_clients = 2};
    start_cfg(e, &cfg, true);
    hc_t a, b, extra;
    hc_connect(&a, e->port);
    hc_connect(&b, e->port);
    hc_connect(&extra, e->port);
    assert_true(harness_run_until(e->loop, hc_pump, &extra, T));
    assert_int_equal(extra.len, 0);
    assert_true(metric(e, "ami_http_connections_refused_total", NULL) == 1);
    hc_send(&a, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &a, T));
    resp_t r;
    parse_resp(&a, &r);
    assert_int_equal(r.status, 200);
    hc_close(&a);
    hc_close(&extra);
    hc_t c; /* a's slot is free again */
    exchange(e, &c, "GET /healthz HTTP/1.1\r\n\r\n");
    parse_resp(&c, &r);
    assert_int_equal(r.status, 200);
    assert_true(metric(e, "ami_http_connections_refused_total", NULL) == 1);
    hc_close(&c);
    hc_close(&b);
}

static void a_request_sent_one_byte_at_a_time_works(void **state)
{
    env_t *e = *state;
    start(e);
    const char *req = "GET /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";
    hc_t c;
    hc_connect(&c, e->port);
    for (const char *p = req; p[1]; p++) {
        hc_send_n(&c, p, 1);
        harness_run_for(e->loop, 1);
        if (hc_pump(&c))
            fail_msg("closed after %zu bytes: %s", (size_t)(p - req), c.data ? c.data : "");
        assert_int_equal(c.len, 0);
    }
    hc_send(&c, "\n");
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    resp_t r;
    parse_resp(&c, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen("healthy\n"));
    hc_close(&c);
}

/* Big enough that neither socket buffer can take it whole (tcp_wmem's
 * ceiling is 4 MiB by default), so the server must wait for EV_WRITE. */
static size_t make_metrics_big(env_t *e)
{
    char pad[161];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < 60000; i++) {
        char v[16];
        snprintf(v, sizeof v, "%06d", i);
        ami_counter_inc(ami_metrics_counter(e->metrics, "ami_test_big_total", "Big.", L("series", v, "pad", pad), NULL));
    }
    size_t len;
    free(render(e, &len));
    assert_true(len > (8u << 20));
    return len;
}

static void a_client_that_never_reads_does_not_block_the_loop(void **state)
{
    env_t *e = *state;
    ami_http_config_t cfg = {.timeout_ms = 30000};
    start_cfg(e, &cfg, true);
    size_t big = make_metrics_big(e);
    hc_t slow, quick;
    hc_connect_to(&slow, AF_INET, e->port, 4096);
    hc_send(&slow, "GET /metrics HTTP/1.1\r\n\r\n");
    harness_run_for(e->loop, 100); /* rendered, written up to EAGAIN, parked on EV_WRITE */

    hc_connect(&quick, e->port);
    hc_send(&quick, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &quick, T));
    resp_t r;
    parse_resp(&quick, &r);
    assert_int_equal(r.status, 200);
    hc_close(&quick);

    int queued = 0;
    assert_int_equal(ioctl(slow.fd, FIONREAD, &queued), 0);
    assert_true((size_t)queued < big); /* the rest is still the server's to send */

    /* When the slow client reads at last, every byte arrives, in order. */
    assert_true(harness_run_until(e->loop, hc_pump, &slow, 20000));
    assert_int_equal(slow.err, 0);
    parse_resp(&slow, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal((size_t)r.content_length, r.body_len);
    assert_true(r.body_len >= big);
    assert_prom_valid(r.body, r.body_len);
    assert_true(metric(e, "ami_http_timeouts_total", NULL) == 0);
    hc_close(&slow);
}

static void free_with_clients_in_every_state_is_clean(void **state)
{
    env_t *e = *state;
    start(e);
    make_metrics_big(e);
    hc_t c[4];
    hc_connect(&c[0], e->port);                         /* silent */
    hc_connect(&c[1], e->port);                         /* half a request */
    hc_send(&c[1], "GET /metr");
    hc_connect_to(&c[2], AF_INET, e->port, 4096);       /* a big answer pending */
    hc_send(&c[2], "GET /metrics HTTP/1.1\r\n\r\n");
    hc_connect(&c[3], e->port);                         /* answered, lingering */
    hc_send(&c[3], "POST /healthz HTTP/1.1\r\n\r\nbody");
    harness_run_for(e->loop, 100);
    ami_http_free(e->http);
    e->http = NULL;
    for (int i = 0; i < 4; i++) { /* each sees the end, the pending answer after its bytes */
        assert_true(harness_run_until(e->loop, hc_pump, &c[i], T));
        hc_close(&c[i]);
    }
    hc_t late;
    memset(&late, 0, sizeof late);
    late.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(e->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(late.fd, (struct sockaddr *)&a, sizeof a), -1); /* the listener is gone */
    hc_close(&late);
}

static void running_out_of_descriptors_pauses_the_listener(void **state)
{
    env_t *e = *state;
    start(e);
    hc_t c;
    hc_connect(&c, e->port);
    hc_send(&c, "GET /healthz HTTP/1.1\r\n\r\n");
    int next = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the descriptor accept would get */
    assert_true(next >= 0);
    close(next);
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct rlimit low = {(rlim_t)next, saved.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    harness_run_for(e->loop, 50);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    /* one warning, not a loop spinning on a listener that stays readable */
    assert_int_equal(log_capture_count(&e->logs, "pausing the listener"), 1);
    assert_non_null(strstr(log_capture_text(&e->logs), strerror(EMFILE)));
    assert_false(hc_pump(&c));
    assert_true(harness_run_until(e->loop, hc_pump, &c, T)); /* resumed: served */
    resp_t r;
    parse_resp(&c, &r);
    assert_int_equal(r.status, 200);
    hc_close(&c);
}

/* ---- setup errors, IPv6, logs --------------------------------------------------------------- */

static void bind_failures_name_the_address_and_the_fix(void **state)
{
    env_t *e = *state;
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
    env_t *e = *state;
    if (!ipv6_loopback_available()) {
        print_message(IPV6_SKIP_MESSAGE);
        skip();
    }
    ami_http_config_t cfg = {.bind_ip = "::1"};
    ami_err_t err;
    e->http = ami_http_new(e->loop, &cfg, e->metrics, health, e, e->log, &err);
    if (!e->http)
        fail_msg("::1 can be bound, but the endpoint could not listen there: %s", err.msg);
    hc_t c;
    hc_connect_to(&c, AF_INET6, ami_http_port(e->http), 0);
    hc_send(&c, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    resp_t r;
    parse_resp(&c, &r);
    assert_int_equal(r.status, 200);
    hc_close(&c);
    assert_non_null(strstr(log_capture_text(&e->logs), "addr=[::1]:"));
}

static void requests_are_logged_at_debug(void **state)
{
    env_t *e = *state;
    start(e);
    resp_t r;
    get(e, "GET /healthz?verbose=1 HTTP/1.1\r\n\r\n", &r);
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
    env_t *e = *state;
    ami_err_t err;
    e->http = ami_http_new(e->loop, NULL, NULL, NULL, NULL, NULL, &err);
    assert_non_null(e->http);
    e->port = ami_http_port(e->http);
    resp_t r;
    get(e, "GET /metrics HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    get(e, "BREW /pot HTTP/1.1\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
}

/* ---- the checker itself ----------------------------------------------------------------------- */

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
        cmocka_unit_test_setup_teardown(metrics_returns_the_exact_rendering, setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_text_passes_the_strict_format_check, setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_past_max_response_is_500, setup, teardown),
        cmocka_unit_test_setup_teardown(healthz_answers_what_the_callback_says, setup, teardown),
        cmocka_unit_test_setup_teardown(healthz_without_a_callback_is_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(head_sends_headers_with_the_length_and_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(routing_ignores_the_query_and_unknown_paths_are_404, setup, teardown),
        cmocka_unit_test_setup_teardown(other_methods_are_405_with_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_requests_are_400, setup, teardown),
        cmocka_unit_test_setup_teardown(mutated_requests_always_get_a_well_formed_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(bare_lf_heads_and_headers_are_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(an_oversized_head_is_431, setup, teardown),
        cmocka_unit_test_setup_teardown(a_silent_client_times_out_and_is_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(clients_past_max_clients_are_closed_and_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(a_request_sent_one_byte_at_a_time_works, setup, teardown),
        cmocka_unit_test_setup_teardown(a_client_that_never_reads_does_not_block_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(free_with_clients_in_every_state_is_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(running_out_of_descriptors_pauses_the_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(bind_failures_name_the_address_and_the_fix, setup, teardown),
        cmocka_unit_test_setup_teardown(ipv6_loopback_works, setup, teardown),
        cmocka_unit_test_setup_teardown(requests_are_logged_at_debug, setup, teardown),
        cmocka_unit_test_setup_teardown(a_null_registry_and_logger_are_fine, setup, teardown),
        cmocka_unit_test(prom_check_accepts_valid_text),
        cmocka_unit_test(prom_check_rejects_invalid_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
