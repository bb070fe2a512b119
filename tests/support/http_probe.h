/*
 * For the HTTP endpoint's tests (test_http*.c): a non-blocking client
 * (hc_*), a parsed response (resp_*), and a world (http_env_*): a loop, a
 * registry, a logger whose lines are kept in logs, and the endpoint with a
 * health callback the test steers. The tests drive the loop themselves with
 * a bound (harness.h); the teardown proves that every byte the endpoint
 * allocated came back. Failures are cmocka failures.
 */
#ifndef AMI_TEST_HTTP_PROBE_H
#define AMI_TEST_HTTP_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log_capture.h"
#include "obs/http.h"

#define PROBE_T 3000 /* ms: generous bound for anything that should happen */
#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- a non-blocking test client ---------------------------------------------------- */

typedef struct hc {
    int fd;
    char *data;
    size_t len, cap;
    bool eof;
    int err; /* errno of a failed recv (ECONNRESET) */
} hc_t;

/* rcvbuf: SO_RCVBUF before connecting (0: the default). */
void hc_connect_to(hc_t *c, int family, uint16_t port, int rcvbuf);
void hc_connect(hc_t *c, uint16_t port);
void hc_send_n(hc_t *c, const char *p, size_t n);
void hc_send(hc_t *c, const char *s);
/* Read what is there; true once the server closed (or reset). A harness predicate. */
bool hc_pump(void *ud);
void hc_close(hc_t *c);

/* ---- the response ------------------------------------------------------------------ */

typedef struct resp {
    int status;
    const char *head; /* status line and headers, NUL-terminated copy */
    const char *body;
    size_t body_len;
    long content_length; /* -1 if absent */
    char head_copy[2048];
} resp_t;

void resp_parse(const hc_t *c, resp_t *r);
void resp_assert_header(resp_t *r, const char *name, const char *want);
/* Every answer: Connection: close, no-store, a Content-Length that is the body's. */
void resp_assert_common(resp_t *r, bool head_only);

/* ---- the world ---------------------------------------------------------------------- */

typedef struct http_env {
    int64_t live_before;
    struct ev_loop *loop;
    ami_metrics_t *metrics;
    ami_logger_t *log;
    ami_http_t *http;
    uint16_t port;
    int health_code;          /* what the health callback answers; 200 */
    const char *health_text;  /* and its body; "healthy\n" */
    int health_calls;
    log_capture_t logs;       /* every log line, debug level included */
} http_env_t;

/* cmocka setup and teardown (state: the http_env_t). */
int http_env_setup(void **state);
int http_env_teardown(void **state);
/* The health callback: answers e->health_code with e->health_text. */
int http_env_health(void *ud, ami_buf_t *body);
/* Start the endpoint (cfg NULL: defaults); with_health: http_env_health. */
void http_env_start(http_env_t *e, const ami_http_config_t *cfg, bool with_health);

/* One request on a fresh connection, read to the server's close. */
void probe_exchange(http_env_t *e, hc_t *c, const char *raw);
/* The same, parsed; r->body is a copy, valid until the next probe_get. */
void probe_get(http_env_t *e, const char *raw, resp_t *r);
/* A series' value, -1 if it does not exist. */
double probe_metric(http_env_t *e, const char *name, const char *const *labels);
/* The registry rendered now (caller frees). */
char *probe_render(http_env_t *e, size_t *len);
void probe_assert_prom(const char *text, size_t len);
size_t probe_count(const char *hay, const char *needle);

#endif
