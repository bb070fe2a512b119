#include "http_probe.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "prom_check.h"
#include "util/alloc.h"


/* ---- a non-blocking test client ----------------------------------------------------- */

void hc_connect_to(hc_t *c, int family, uint16_t port, int rcvbuf)
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

void hc_connect(hc_t *c, uint16_t port)
{
    hc_connect_to(c, AF_INET, port, 0);
}

void hc_send_n(hc_t *c, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0)
            fail_msg("client send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

void hc_send(hc_t *c, const char *s)
{
    hc_send_n(c, s, strlen(s));
}

/* Read what is there; true once the server closed (or reset). */
bool hc_pump(void *ud)
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

void hc_close(hc_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->data);
    c->data = NULL;
}

/* ---- the response --------------------------------------------------------------------- */

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

void resp_parse(const hc_t *c, resp_t *r)
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

void resp_assert_header(resp_t *r, const char *name, const char *want)
{
    char v[256];
    if (!resp_header(r, name, v, sizeof v))
        fail_msg("no %s header in:\n%s", name, r->head);
    assert_string_equal(v, want);
}

/* Every answer: Connection: close, no-store, a Content-Length that is the body's. */
void resp_assert_common(resp_t *r, bool head_only)
{
    resp_assert_header(r, "Connection", "close");
    resp_assert_header(r, "Cache-Control", "no-store");
    assert_true(r->content_length >= 0);
    if (!head_only)
        assert_int_equal((size_t)r->content_length, r->body_len);
    else
        assert_int_equal(r->body_len, 0);
}

/* ---- the world: a loop, a registry, a logger, the endpoint ------------------------------- */

int http_env_health(void *ud, ami_buf_t *body)
{
    http_env_t *e = ud;
    e->health_calls++;
    ami_buf_append_str(body, e->health_text);
    return e->health_code;
}

int http_env_setup(void **state)
{
    http_env_t *e = calloc(1, sizeof *e);
    e->live_before = ami_alloc_live_bytes();
    e->loop = ev_loop_new(EVFLAG_AUTO);
    e->metrics = ami_metrics_new(200000);
    e->log = log_capture_logger(&e->logs, AMI_LOG_DEBUG, AMI_LOG_FMT_LOGFMT, 0);
    e->health_code = 200;
    e->health_text = "healthy\n";
    *state = e;
    return 0;
}

int http_env_teardown(void **state)
{
    http_env_t *e = *state;
    ami_http_free(e->http);
    ami_metrics_free(e->metrics);
    ami_logger_free(e->log);
    ev_loop_destroy(e->loop);
    assert_int_equal(ami_alloc_live_bytes(), e->live_before);
    log_capture_free(&e->logs);
    free(e);
    return 0;
}

void http_env_start(http_env_t *e, const ami_http_config_t *cfg, bool with_health)
{
    ami_err_t err;
    e->http = ami_http_new(e->loop, cfg, e->metrics, with_health ? http_env_health : NULL, e, e->log, &err);
    if (!e->http)
        fail_msg("ami_http_new: %s", err.msg);
    e->port = ami_http_port(e->http);
    assert_true(e->port != 0);
}

/* One request on a fresh connection, read to the server's close. */
void probe_exchange(http_env_t *e, hc_t *c, const char *raw)
{
    hc_connect(c, e->port);
    hc_send(c, raw);
    if (!harness_run_until(e->loop, hc_pump, c, PROBE_T))
        fail_msg("no close within %d ms for request %.40s (got %zu bytes)", PROBE_T, raw, c->len);
}

void probe_get(http_env_t *e, const char *raw, resp_t *r)
{
    hc_t c;
    probe_exchange(e, &c, raw);
    assert_int_equal(c.err, 0);
    resp_parse(&c, r);
    /* body points into c.data: keep a copy for the caller only when small */
    static char body[1 << 16];
    assert_true(r->body_len < sizeof body);
    memcpy(body, r->body, r->body_len);
    body[r->body_len] = '\0';
    r->body = body;
    hc_close(&c);
}

double probe_metric(http_env_t *e, const char *name, const char *const *labels)
{
    double v = -1;
    if (ami_metrics_value(e->metrics, name, labels, &v) < 0)
        return -1;
    return v;
}

char *probe_render(http_env_t *e, size_t *len)
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

void probe_assert_prom(const char *text, size_t len)
{
    char why[256];
    if (prom_check(text, len, why, sizeof why) != 0)
        fail_msg("not valid Prometheus text: %s", why);
}


size_t probe_count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}
