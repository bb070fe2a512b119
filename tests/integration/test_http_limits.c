/* The HTTP endpoint's limits over real TCP on 127.0.0.1: head and answer
 * deadlines, max_connections and which connection is evicted for a new one,
 * answers held for slow readers (max_buffered), clients that read nothing
 * or a byte at a time, running out of descriptors, a clean free with
 * clients in every state. Each limit with the counter it moves. */
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
#include "obs/http.h"
#include "prom_check.h"

#define T PROBE_T

/* ---- time, limits, slow clients -------------------------------------------------------------- */

static void a_silent_client_times_out_and_is_counted(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.request_timeout_ms = 100};
    http_env_start(e, &cfg, true);
    hc_t silent, partial;
    hc_connect(&silent, e->port);
    hc_connect(&partial, e->port);
    hc_send(&partial, "GET /metrics HTTP/1.1\r\nHost:");
    assert_true(harness_run_until(e->loop, hc_pump, &silent, T));
    assert_true(harness_run_until(e->loop, hc_pump, &partial, T));
    assert_int_equal(silent.len, 0);
    assert_int_equal(partial.len, 0);
    assert_true(probe_metric(e, "ami_http_timeouts_total", L("phase", "read")) == 2);
    assert_true(probe_metric(e, "ami_http_timeouts_total", L("phase", "write")) == 0);
    assert_non_null(strstr(log_capture_text(&e->logs), "http connection timed out"));
    assert_non_null(strstr(log_capture_text(&e->logs), "timeout_ms=100"));
    hc_close(&silent);
    hc_close(&partial);
}

/* Connect and let the endpoint accept it in a batch of its own. */
static void hc_connect_accepted(http_env_t *e, hc_t *c)
{
    hc_connect(c, e->port);
    harness_run_for(e->loop, 20);
}

static void a_connection_past_max_connections_evicts_the_oldest_reading_one(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.max_connections = 2};
    http_env_start(e, &cfg, true);
    hc_t a, b, c;
    hc_connect_accepted(e, &a);
    hc_connect_accepted(e, &b);
    hc_connect(&c, e->port);
    hc_send(&c, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &c, T));
    resp_t r;
    resp_parse(&c, &r);
    assert_int_equal(r.status, 200);
    assert_true(hc_pump(&a)); /* the oldest silent one made room */
    assert_int_equal(a.len, 0);
    assert_false(hc_pump(&b));
    assert_true(probe_metric(e, "ami_http_connections_evicted_total", L("phase", "read")) == 1);
    assert_true(probe_metric(e, "ami_http_connections_refused_total", NULL) == 0);
    assert_non_null(strstr(log_capture_text(&e->logs), "level=warn msg=\"http connections evicted"));
    hc_send(&b, "GET /healthz HTTP/1.1\r\n\r\n"); /* b was left alone */
    assert_true(harness_run_until(e->loop, hc_pump, &b, T));
    resp_parse(&b, &r);
    assert_int_equal(r.status, 200);
    hc_close(&a);
    hc_close(&b);
    hc_close(&c);
}

static void eviction_takes_an_answered_connection_before_a_reading_one(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.max_connections = 2};
    http_env_start(e, &cfg, true);
    hc_t reading, lingering, fresh;
    hc_connect_accepted(e, &reading);
    hc_connect(&lingering, e->port); /* answered, then drained while it sends more */
    hc_send(&lingering, "POST /healthz HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &lingering, T)); /* answered, half-closed */
    assert_non_null(strstr(lingering.data, "405"));
    probe_exchange(e, &fresh, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_false(hc_pump(&reading));
    assert_true(probe_metric(e, "ami_http_connections_evicted_total", L("phase", "linger")) == 1);
    assert_true(probe_metric(e, "ami_http_connections_evicted_total", L("phase", "read")) == 0);
    hc_close(&reading);
    hc_close(&lingering);
    hc_close(&fresh);
}

/* In a loop iteration, connections are served before the listener accepts
 * (and evicts): a request that is there is answered, not evicted. */
static void a_request_that_arrived_is_served_before_new_connections_evict_it(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.max_connections = 1};
    http_env_start(e, &cfg, true);
    for (int i = 0; i < 20; i++) {
        hc_t scrape, next;
        hc_connect_accepted(e, &scrape);
        hc_send(&scrape, "GET /healthz HTTP/1.1\r\n\r\n");
        hc_connect(&next, e->port); /* both are ready in the same iteration */
        assert_true(harness_run_until(e->loop, hc_pump, &scrape, T));
        resp_t r;
        resp_parse(&scrape, &r);
        assert_int_equal(r.status, 200);
        hc_close(&scrape);
        hc_close(&next);
        harness_run_for(e->loop, 5);
    }
    assert_true(probe_metric(e, "ami_http_connections_evicted_total", L("phase", "read")) == 0);
}

static void the_open_connections_gauge_follows_them(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
    hc_t a, b;
    hc_connect_accepted(e, &a);
    hc_connect_accepted(e, &b);
    assert_true(probe_metric(e, "ami_http_connections", NULL) == 2);
    hc_close(&a);
    harness_run_for(e->loop, 20);
    assert_true(probe_metric(e, "ami_http_connections", NULL) == 1);
    hc_close(&b);
    harness_run_for(e->loop, 20);
    assert_true(probe_metric(e, "ami_http_connections", NULL) == 0);
}

static void a_request_sent_one_byte_at_a_time_works(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
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
    resp_parse(&c, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen("healthy\n"));
    hc_close(&c);
}

/* Big enough that neither socket buffer can take it whole (tcp_wmem's
 * ceiling is 4 MiB by default), so the server must wait for EV_WRITE. */
static size_t make_metrics_big(http_env_t *e)
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
    free(probe_render(e, &len));
    assert_true(len > (8u << 20));
    return len;
}

static void a_client_that_never_reads_does_not_block_the_loop(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.response_timeout_ms = 30000};
    http_env_start(e, &cfg, true);
    size_t big = make_metrics_big(e);
    hc_t slow, quick;
    hc_connect_to(&slow, AF_INET, e->port, 4096);
    hc_send(&slow, "GET /metrics HTTP/1.1\r\n\r\n");
    harness_run_for(e->loop, 100); /* rendered, written up to EAGAIN, parked on EV_WRITE */

    hc_connect(&quick, e->port);
    hc_send(&quick, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &quick, T));
    resp_t r;
    resp_parse(&quick, &r);
    assert_int_equal(r.status, 200);
    hc_close(&quick);

    int queued = 0;
    assert_int_equal(ioctl(slow.fd, FIONREAD, &queued), 0);
    assert_true((size_t)queued < big); /* the rest is still the server's to send */

    /* When the slow client reads at last, every byte arrives, in order. */
    assert_true(harness_run_until(e->loop, hc_pump, &slow, 20000));
    assert_int_equal(slow.err, 0);
    resp_parse(&slow, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal((size_t)r.content_length, r.body_len);
    assert_true(r.body_len >= big);
    probe_assert_prom(r.body, r.body_len);
    assert_true(probe_metric(e, "ami_http_timeouts_total", L("phase", "write")) == 0);
    hc_close(&slow);
}

static void a_client_that_never_reads_is_reset_after_response_timeout_ms(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.response_timeout_ms = 200};
    http_env_start(e, &cfg, true);
    make_metrics_big(e);
    hc_t slow;
    hc_connect_to(&slow, AF_INET, e->port, 4096);
    hc_send(&slow, "GET /metrics HTTP/1.1\r\n\r\n");
    harness_run_for(e->loop, 100);
    assert_true(probe_metric(e, "ami_http_response_bytes_buffered", NULL) > (8 << 20));
    harness_run_for(e->loop, 300);
    assert_true(probe_metric(e, "ami_http_timeouts_total", L("phase", "write")) == 1);
    assert_true(probe_metric(e, "ami_http_response_bytes_buffered", NULL) == 0);
    assert_true(probe_metric(e, "ami_http_connections", NULL) == 0);
    assert_true(harness_run_until(e->loop, hc_pump, &slow, T));
    assert_int_equal(slow.err, ECONNRESET); /* the rest of the answer was dropped, not queued */
    assert_non_null(strstr(log_capture_text(&e->logs), "timeout_ms=200"));
    hc_close(&slow);
}

static void answers_past_max_buffered_evict_older_writers_else_are_503(void **state)
{
    http_env_t *e = *state;
    ami_http_config_t cfg = {.max_connections = 8, .max_buffered = 16 << 20};
    http_env_start(e, &cfg, true);
    make_metrics_big(e);
    hc_t first, second, reader;
    hc_connect_to(&first, AF_INET, e->port, 4096); /* both in one accept batch: */
    hc_connect_to(&second, AF_INET, e->port, 4096); /* neither may evict the other */
    hc_send(&first, "GET /metrics HTTP/1.1\r\n\r\n");
    hc_send(&second, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_true(harness_run_until(e->loop, hc_pump, &second, T));
    resp_t r;
    resp_parse(&second, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(second.data, "busy"));
    assert_non_null(strstr(log_capture_text(&e->logs), "max_buffered is full"));
    probe_exchange(e, &reader, "GET /metrics HTTP/1.1\r\n\r\n"); /* a later batch: first makes room */
    resp_parse(&reader, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal((size_t)r.content_length, r.body_len);
    assert_true(harness_run_until(e->loop, hc_pump, &first, T));
    assert_int_equal(first.err, ECONNRESET);
    assert_true(probe_metric(e, "ami_http_connections_evicted_total", L("phase", "write")) == 1);
    assert_true(probe_metric(e, "ami_http_requests_total", L("path", "/metrics", "code", "503")) == 1);
    hc_close(&first);
    hc_close(&second);
    hc_close(&reader);
}

static void free_with_clients_in_every_state_is_clean(void **state)
{
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
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
    http_env_t *e = *state;
    http_env_start(e, NULL, true);
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
    assert_int_equal(probe_count(log_capture_text(&e->logs), "pausing the listener"), 1);
    assert_non_null(strstr(log_capture_text(&e->logs), strerror(EMFILE)));
    assert_false(hc_pump(&c));
    assert_true(harness_run_until(e->loop, hc_pump, &c, T)); /* resumed: served */
    resp_t r;
    resp_parse(&c, &r);
    assert_int_equal(r.status, 200);
    hc_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_silent_client_times_out_and_is_counted, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(a_connection_past_max_connections_evicts_the_oldest_reading_one, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(eviction_takes_an_answered_connection_before_a_reading_one, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(a_request_that_arrived_is_served_before_new_connections_evict_it, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(the_open_connections_gauge_follows_them, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(a_request_sent_one_byte_at_a_time_works, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(a_client_that_never_reads_does_not_block_the_loop, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(a_client_that_never_reads_is_reset_after_response_timeout_ms, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(answers_past_max_buffered_evict_older_writers_else_are_503, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(free_with_clients_in_every_state_is_clean, http_env_setup, http_env_teardown),
        cmocka_unit_test_setup_teardown(running_out_of_descriptors_pauses_the_listener, http_env_setup, http_env_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
