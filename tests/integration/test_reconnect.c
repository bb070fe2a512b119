/* Reconnecting against the simulator and against sockets that refuse or
 * hang: the backoff (always jittered, growing, reset only by a session that
 * stayed up), connect and login failures, a server cutting a response, and
 * the metrics that tell a lost session from a failed attempt. Backoff
 * delays are asserted as the values the client drew, never as elapsed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_world.h"
#include "harness.h"
#include "util/alloc.h"

/* The ceiling of the n-th delay (n from 0): min(max, initial * 2^n). */
static uint32_t ceiling_of(uint32_t initial, uint32_t max, size_t n)
{
    uint64_t c = initial;
    for (size_t i = 0; i < n && c < max; i++)
        c *= 2;
    return c > max ? max : (uint32_t)c;
}

/* Every recorded delay lies in [ceil(c/2), c] of its rank. */
static void assert_backoff_ranks(const cworld_t *w, size_t from, uint32_t initial, uint32_t max)
{
    for (size_t i = from; i < w->nbackoffs; i++) {
        uint32_t c = ceiling_of(initial, max, i - from);
        if (w->backoffs[i] < (c + 1) / 2 || w->backoffs[i] > c)
            fail_msg("delay %zu is %u ms, outside [%u, %u]", i - from, w->backoffs[i], (c + 1) / 2, c);
    }
}

static void connection_refused_backs_off_with_growing_jittered_delays(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", cw_closed_port());
    o.backoff_initial_ms = 10;
    o.backoff_max_ms = 160;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    harness_run_for(w->loop, 1500);
    assert_true(w->nbackoffs >= 6);
    assert_non_null(strstr(w->last_reason, "refused"));
    assert_backoff_ranks(w, 0, 10, 160);
    bool varied = false;
    for (size_t i = 1; i < w->nbackoffs; i++)
        varied = varied || w->backoffs[i] != w->backoffs[i - 1];
    assert_true(varied);
    assert_true(cw_metric(w, "ami_reconnects_total", (const char *const[]){"server_key", "pbx1", NULL}) >= 5);
    assert_true(cw_metric(w, "ami_connection_state",
                          (const char *const[]){"server_key", "pbx1", "state", "backoff", NULL}) +
                    cw_metric(w, "ami_connection_state",
                              (const char *const[]){"server_key", "pbx1", "state", "connecting", NULL}) ==
                1);
    cw_free(w);
}

/* Many engines losing one server must not come back in lock-step: even the
 * first retry is drawn at random. */
static void the_first_retry_is_jittered_too(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    uint16_t port = cw_closed_port();
    for (int i = 0; i < 8; i++) {
        char key[8];
        snprintf(key, sizeof key, "pbx%d", i);
        ami_server_options_t o;
        cw_fast_options(&o, key, port);
        o.backoff_initial_ms = 1000;
        o.backoff_max_ms = 8000;
        cw_add_server(w, &o); /* the key is copied */
    }
    ami_client_start(w->client);
    for (int i = 0; i < 200 && w->nbackoffs < 8; i++)
        ami_client_tick(w->client, 10);
    assert_int_equal(w->nbackoffs, 8);
    uint32_t lo = UINT32_MAX, hi = 0;
    for (size_t i = 0; i < 8; i++) {
        assert_in_range(w->backoffs[i], 500, 1000);
        lo = w->backoffs[i] < lo ? w->backoffs[i] : lo;
        hi = w->backoffs[i] > hi ? w->backoffs[i] : hi;
    }
    assert_true(hi > lo);
    cw_free(w);
}

/* A listener whose accept queue is full: the kernel drops further SYNs, so
 * a connect to it hangs until our timeout. */
static int full_listener(uint16_t *port, int *fillers, int nfill)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    listen(fd, 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    for (int i = 0; i < nfill; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    }
    return fd;
}

static void connect_timeout_closes_and_backs_off(void **state)
{
    (void)state;
    uint16_t port;
    int fillers[4];
    int lfd = full_listener(&port, fillers, 4);
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", port);
    o.connect_timeout_ms = 150;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_non_null(strstr(w->last_reason, "timed out"));
    /* an attempt that never logged in is a failed attempt, not a lost session */
    assert_true(cw_metric(w, "ami_connect_failures_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "timeout", NULL}) >= 1);
    assert_true(cw_metric(w, "ami_disconnects_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "timeout", NULL}) == 0);
    cw_free(w);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

static bool two_login_failures(void *ud)
{
    return cw_metric(ud, "ami_login_failures_total", (const char *const[]){"server_key", "pbx1", NULL}) >= 2;
}

static void login_failure_is_clear_and_retries_follow_backoff(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.reject_login = true, .login_delay_ms = 1});
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.backoff_initial_ms = 50;
    o.backoff_max_ms = 400;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    /* wait for the attempts instead of counting them in a fixed wall-clock window */
    assert_true(harness_run_until(w->loop, two_login_failures, w, 10000));
    ami_server_info_t info;
    ami_client_server_info(w->client, 0, &info);
    assert_non_null(strstr(info.last_error, "refused"));
    assert_non_null(strstr(info.last_error, "pbx1"));
    assert_non_null(strstr(info.last_error, "username and secret"));
    assert_true(cw_metric(w, "ami_login_failures_total", (const char *const[]){"server_key", "pbx1", NULL}) >= 2);
    assert_backoff_ranks(w, 0, 50, 400);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
    assert_true(cw_metric(w, "ami_connect_failures_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "auth", NULL}) >= 2);
    /* The server accepts again: the next attempt logs in. */
    ami_sim_node_set_faults(n, NULL);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    cw_free(w);
}

/* ---- a server that fails right after login ------------------------------------------------- */

typedef struct backoffs_wait {
    cworld_t *w;
    size_t n;
} backoffs_wait_t;

static bool enough_backoffs(void *ud)
{
    backoffs_wait_t *b = ud;
    return b->w->nbackoffs >= b->n;
}

static cworld_t *failing_after_login(ami_sim_node_t **n, uint32_t reset_ms)
{
    cworld_t *w = cw_new(NULL);
    *n = cw_add_node(w, "pbx1");
    ami_sim_node_set_faults(*n, &(ami_sim_faults_t){.half_close_after_login = true});
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(*n));
    o.backoff_initial_ms = 8;
    o.backoff_max_ms = 1000;
    o.backoff_reset_ms = reset_ms;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    return w;
}

/* Before: a login reset the backoff, so a server that closes right after
 * it was reconnected every backoff_initial_ms, forever. */
static void a_server_failing_right_after_login_backs_off_exponentially(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = failing_after_login(&n, 10000);
    backoffs_wait_t b = {w, 7};
    assert_true(harness_run_until(w->loop, enough_backoffs, &b, 10000));
    assert_true(ami_sim_node_stats(n).logins_ok >= 6); /* each attempt did log in ... */
    assert_backoff_ranks(w, 0, 8, 1000);                /* ... and the delays still doubled */
    assert_true(w->backoffs[6] >= 256);
    /* each of those sessions was lost after login: counted as lost sessions */
    assert_true(cw_metric(w, "ami_disconnects_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "disconnected", NULL}) >= 7);
    cw_free(w);
}

/* A session that stays up backoff_reset_ms proves the server healthy again:
 * the next failure starts from backoff_initial_ms. */
static void a_session_that_stays_up_resets_the_backoff(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = failing_after_login(&n, 150);
    backoffs_wait_t b = {w, 5};
    assert_true(harness_run_until(w->loop, enough_backoffs, &b, 10000));
    assert_true(w->backoffs[4] >= 64);
    ami_sim_node_set_faults(n, NULL);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 5000);
    /* it stays up past backoff_reset_ms (at least: a longer wait proves the same) */
    harness_run_for(w->loop, 300);
    size_t before = w->nbackoffs;
    ami_sim_node_drop_sessions(n);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_in_range(w->backoffs[before], 4, 8);
    cw_free(w);
}

/* ---- a response cut in the middle -------------------------------------------------------------- */

static void cut_one_response(cworld_t *w, ami_sim_node_t *n)
{
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.close_mid_response = true});
    outcome_t out = {0};
    assert_int_equal(cw_send(w, "pbx1", "CoreShowChannels", &out, NULL), 0);
    assert_true(harness_run_until(w->loop, cw_finished, &out, 3000));
    assert_int_equal(out.signal, AMI_PENDING_FAILED);
    assert_int_equal(out.status, AMI_E_DISCONNECTED);
    ami_sim_node_set_faults(n, NULL);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    harness_run_for(w->loop, 50);
    assert_int_equal(out.finals, 1); /* exactly once, also after the reconnect */
}

static void server_closing_mid_response_fails_pending_once_and_reconnects(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    cut_one_response(w, n);
    int64_t after_first = ami_alloc_live_bytes();
    cut_one_response(w, n);
    /* Nothing kept from a broken session: the second cut leaves memory where the first did. */
    assert_int_equal(ami_alloc_live_bytes(), after_first);
    cw_free(w);
}

/* ---- lost sessions and failed attempts are counted apart --------------------------------------- */

/* Before: one Asterisk restart counted 4-5 "disconnects" (every refused
 * attempt while it was down). Now: one lost session, and the attempts. */
static void a_restart_counts_one_lost_session_and_its_failed_attempts(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.backoff_initial_ms = 10;
    o.backoff_max_ms = 20;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_sim_node_stop(n);
    backoffs_wait_t b = {w, 5};
    assert_true(harness_run_until(w->loop, enough_backoffs, &b, 5000));
    ami_err_t err;
    assert_int_equal(ami_sim_node_restart(n, &err), 0);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    const char *key[] = {"server_key", "pbx1", "reason", NULL, NULL};
    key[3] = "disconnected";
    assert_true(cw_metric(w, "ami_disconnects_total", key) == 1);
    key[3] = "io";
    double refused = cw_metric(w, "ami_connect_failures_total", key);
    assert_true(refused >= 4);
    assert_true(cw_metric(w, "ami_disconnects_total", key) == 0);
    ami_server_info_t info;
    ami_client_server_info(w->client, 0, &info);
    assert_int_equal(info.stats->sessions_lost, 1);
    assert_int_equal(info.stats->connect_failures, (uint64_t)refused);
    assert_int_equal(info.stats->force_closes, info.stats->sessions_lost + info.stats->connect_failures);
    cw_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connection_refused_backs_off_with_growing_jittered_delays),
        cmocka_unit_test(the_first_retry_is_jittered_too),
        cmocka_unit_test(connect_timeout_closes_and_backs_off),
        cmocka_unit_test(login_failure_is_clear_and_retries_follow_backoff),
        cmocka_unit_test(a_server_failing_right_after_login_backs_off_exponentially),
        cmocka_unit_test(a_session_that_stays_up_resets_the_backoff),
        cmocka_unit_test(server_closing_mid_response_fails_pending_once_and_reconnects),
        cmocka_unit_test(a_restart_counts_one_lost_session_and_its_failed_attempts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
