/* The heartbeat (the seed's 3.1) against the simulator, in loop time.
 *
 * The contract (docs/configuration.md): a Ping every interval I, judged
 * timeout T <= I after it goes out; at N consecutive failed rounds the
 * connection is force-closed with "Max heartbeat failures". A server that
 * goes silent is closed exactly D = N*I + T after the last answered Ping was
 * sent. The window tests put a probe timer just before D (the connection
 * must still be up) and one just after (it must be closed): libev runs
 * expired timers in deadline order, so a slow machine delays both sides
 * alike and cannot make the probes lie. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_world.h"
#include "harness.h"
#include "util/alloc.h"

typedef struct probe {
    ev_timer timer;
    cworld_t *w;
    bool fired;
    bool connected;      /* state of server 0 when it fired */
    int closes;          /* entries into backoff so far, when it fired */
} probe_t;

static void on_probe(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    probe_t *p = t->data;
    p->fired = true;
    p->connected = cw_in_state(p->w, 0, AMI_CONN_CONNECTED);
    p->closes = p->w->transitions[AMI_CONN_BACKOFF];
}

static void probe_arm(probe_t *p, cworld_t *w, double after_s)
{
    memset(p, 0, sizeof *p);
    p->w = w;
    ev_timer_init(&p->timer, on_probe, after_s, 0.);
    p->timer.data = p;
    ev_timer_start(w->loop, &p->timer);
}

typedef struct pong_wait {
    ami_sim_node_t *node;
    uint64_t answered;
} pong_wait_t;

static bool pong_sent(void *ud)
{
    pong_wait_t *p = ud;
    return ami_sim_node_stats(p->node).pings_answered > p->answered;
}

/* Run until the simulator answers a heartbeat Ping; the loop time then is
 * at or just after the moment that Ping was sent. */
static void wait_for_a_pong(cworld_t *w, ami_sim_node_t *n)
{
    pong_wait_t p = {n, ami_sim_node_stats(n).pings_answered};
    if (!harness_run_until(w->loop, pong_sent, &p, 5000))
        fail_msg("no Ping answered within 5 s");
}

static bool both_fired(void *ud)
{
    probe_t *p = ud;
    return p[0].fired && p[1].fired;
}

static cworld_t *connected_world(ami_sim_node_t **node, uint32_t interval, uint32_t timeout,
                                 uint32_t failures)
{
    cworld_t *w = cw_new(&(cw_config_t){.capture_logs = true});
    *node = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(*node));
    o.heartbeat_interval_ms = interval;
    o.heartbeat_timeout_ms = timeout;
    o.heartbeat_max_failures = failures;
    o.action_timeout_ms = 60000;   /* actions fail by the heartbeat, not by their timeout */
    o.backoff_initial_ms = 10000;  /* no reconnect within the test's window */
    o.backoff_max_ms = 20000;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    return w;
}

/* After the Pong of one round the server goes silent; `load` (may be NULL)
 * runs right then. The close must fall in (D - margin, D + margin]. */
static void assert_detection_window(uint32_t interval, uint32_t timeout, uint32_t failures,
                                    void (*load)(cworld_t *w, ami_sim_node_t *n))
{
    ami_sim_node_t *n;
    cworld_t *w = connected_world(&n, interval, timeout, failures);
    wait_for_a_pong(w, n);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.all_silent = true});
    uint64_t pings_before = ami_sim_node_stats(n).pings;
    double d = (failures * (double)interval + timeout) / 1000.0;
    double margin = (interval < timeout ? interval : timeout) / 2000.0;
    probe_t probes[2];
    probe_arm(&probes[0], w, d - margin);
    probe_arm(&probes[1], w, d + margin);
    if (load)
        load(w, n);
    assert_true(harness_run_until(w->loop, both_fired, probes, (uint32_t)(d * 1000) + 10000));
    print_message("I=%u T=%u N=%u: D=%.3f s; up at D-%.3f: %d, closed at D+%.3f: %d\n", interval,
                  timeout, failures, d, margin, probes[0].connected, margin, probes[1].closes);
    assert_true(probes[0].connected);
    assert_int_equal(probes[0].closes, 0);
    assert_int_equal(probes[1].closes, 1);
    assert_string_equal(w->last_reason, "Max heartbeat failures");
    /* one Ping per round, none skipped: N of them went unanswered */
    assert_int_equal(ami_sim_node_stats(n).pings - pings_before, failures);
    assert_true(cw_metric(w, "ami_heartbeat_failures_total",
                          (const char *const[]){"server_key", "pbx1", NULL}) == failures);
    cw_free(w);
}

static void timeout_equal_to_interval_closes_at_n_intervals_plus_timeout(void **state)
{
    (void)state;
    assert_detection_window(300, 300, 3, NULL); /* the defaults' shape: 5 s x 3, timeout = interval */
}

static void timeout_shorter_than_interval_closes_at_n_intervals_plus_timeout(void **state)
{
    (void)state;
    assert_detection_window(400, 160, 2, NULL);
}

static void one_allowed_failure_closes_at_one_interval_plus_timeout(void **state)
{
    (void)state;
    assert_detection_window(250, 200, 1, NULL);
}

/* Everything the seed's 3.1 lists: pending actions fail once with the
 * reason, the session closes, backoff starts, the client reconnects. */
static void unresponsive_server_is_force_closed_and_reconnected(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.action_timeout_ms = 60000; /* pending actions fail by the heartbeat */
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);

    ami_sim_faults_t silent = {.all_silent = true};
    ami_sim_node_set_faults(n, &silent);
    outcome_t pending[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(cw_send(w, "pbx1", "CoreStatus", &pending[i], NULL), 0);
    int connected_before = w->transitions[AMI_CONN_CONNECTED];
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_string_equal(w->last_reason, "Max heartbeat failures");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pending[i].finals, 1);
        assert_int_equal(pending[i].status, AMI_E_HEARTBEAT);
        assert_string_equal(pending[i].reason, "Max heartbeat failures");
    }
    assert_true(cw_metric(w, "ami_heartbeat_failures_total", (const char *const[]){"server_key", "pbx1", NULL}) >= 2);
    assert_true(cw_metric(w, "ami_disconnects_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "heartbeat", NULL}) == 1);

    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(n, &none);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(w->transitions[AMI_CONN_CONNECTED], connected_before + 1);
    harness_run_for(w->loop, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pending[i].finals, 1); /* still exactly once */
    cw_free(w);
}

/* ---- a loaded connection (issue: "a loaded engine never declares a stalled server dead") ---- */

static outcome_t load_outcomes[16];

/* Every one of max_pending (8) slots waits on the silent server. */
static void fill_max_pending(cworld_t *w, ami_sim_node_t *n)
{
    (void)n;
    memset(load_outcomes, 0, sizeof load_outcomes);
    ami_err_t err;
    int sent = 0;
    while (cw_send(w, "pbx1", "CoreStatus", &load_outcomes[sent], &err) == 0)
        sent++;
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_int_equal(sent, 8);
}

static void stall_with_max_pending_reached_is_detected_in_the_same_time(void **state)
{
    (void)state;
    /* connected_world's options, with max_pending 8 */
    ami_sim_node_t *n;
    cworld_t *w = cw_new(&(cw_config_t){.capture_logs = true});
    n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.heartbeat_interval_ms = 300;
    o.heartbeat_timeout_ms = 300;
    o.heartbeat_max_failures = 2;
    o.max_pending = 8;
    o.action_timeout_ms = 60000;
    o.backoff_initial_ms = 10000;
    o.backoff_max_ms = 20000;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    wait_for_a_pong(w, n);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.all_silent = true});
    fill_max_pending(w, n);
    double d = 0.9, margin = 0.15;
    probe_t probes[2];
    probe_arm(&probes[0], w, d - margin);
    probe_arm(&probes[1], w, d + margin);
    assert_true(harness_run_until(w->loop, both_fired, probes, 12000));
    assert_true(probes[0].connected);
    assert_int_equal(probes[1].closes, 1);
    assert_string_equal(w->last_reason, "Max heartbeat failures");
    for (int i = 0; i < 8; i++) {
        assert_int_equal(load_outcomes[i].finals, 1);
        assert_int_equal(load_outcomes[i].status, AMI_E_HEARTBEAT);
    }
    cw_free(w);
}

/* The server stops reading: our write buffer passes its high-water mark,
 * so the Ping cannot even be queued. That is a failed round too. */
typedef struct filler {
    ev_timer timer;
    cworld_t *w;
    outcome_t sink;
} filler_t;

static uint64_t bytes_out(cworld_t *w)
{
    ami_server_info_t info;
    ami_client_server_info(w->client, 0, &info);
    return info.stats->bytes_out;
}

/* Fill the kernel's socket buffers, then ours: send big actions until the
 * high-water mark refuses, let the socket take what it will, again, until
 * it takes nothing more. */
static void saturate(filler_t *f)
{
    static char big[900];
    memset(big, 'x', sizeof big - 1);
    ami_kv_t h[] = {ami_kv("Data", big)};
    ami_action_req_t req = {.name = "UserEvent", .hdrs = h, .nhdrs = 1};
    for (int still = 0; still < 3;) {
        while (ami_client_send(f->w->client, "pbx1", &req, cw_capture, &f->sink, NULL, NULL) == 0)
            ;
        uint64_t before = bytes_out(f->w);
        ami_client_poll(f->w->client);
        still = bytes_out(f->w) == before ? still + 1 : 0;
    }
}

/* Keep it full to the last byte, with actions no bigger than the heartbeat's Ping. */
static void top_up(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    filler_t *f = t->data;
    ami_action_req_t ping = {.name = "Ping"};
    while (ami_client_send(f->w->client, "pbx1", &ping, cw_capture, &f->sink, NULL, NULL) == 0)
        ;
}

static void stall_with_the_write_buffer_full_is_detected_in_the_same_time(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = cw_new(&(cw_config_t){.capture_logs = true});
    n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.heartbeat_interval_ms = 400;
    o.heartbeat_timeout_ms = 400;
    o.heartbeat_max_failures = 2;
    o.write_hwm = 4096;
    o.max_pending = 100000; /* the kernel's socket buffers take megabytes first */
    o.action_timeout_ms = 60000;
    o.backoff_initial_ms = 10000;
    o.backoff_max_ms = 20000;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    wait_for_a_pong(w, n);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.stall_reads = true});
    probe_t probes[2];
    probe_arm(&probes[0], w, 1.2 - 0.2);
    probe_arm(&probes[1], w, 1.2 + 0.2);
    filler_t f = {.w = w};
    saturate(&f);
    ev_timer_init(&f.timer, top_up, 0., 0.002);
    f.timer.data = &f;
    ev_timer_start(w->loop, &f.timer);
    assert_true(harness_run_until(w->loop, both_fired, probes, 12000));
    ev_timer_stop(w->loop, &f.timer);
    assert_true(probes[0].connected);
    assert_int_equal(probes[1].closes, 1);
    assert_string_equal(w->last_reason, "Max heartbeat failures");
    if (cw_log_lines(w, (const char *const[]){"level=warn", "heartbeat failed", "Ping not sent",
                                              "output buffer is full", NULL}) < 1)
        fail_msg("no \"Ping not sent\" failure in the log:\n%s", log_capture_text(&w->logs));
    cw_free(w);
}

/* The reserved slot: a healthy server whose max_pending slots are always in
 * use still answers the heartbeat, so it is not declared dead. */
typedef struct keep_full {
    cworld_t *w;
    int done;
    int failed;
} keep_full_t;

static void refill(void *ud, const ami_pending_note_t *n)
{
    keep_full_t *k = ud;
    if (n->signal == AMI_PENDING_DONE)
        k->done++;
    else if (n->signal == AMI_PENDING_FAILED)
        k->failed++;
    else
        return;
    ami_action_req_t req = {.name = "CoreStatus"};
    ami_client_send(k->w->client, "pbx1", &req, refill, k, NULL, NULL);
}

typedef struct busy {
    keep_full_t *k;
    ami_sim_node_t *node;
    uint64_t pongs_before;
} busy_t;

static bool ten_rounds_done(void *ud)
{
    busy_t *b = ud;
    return ami_sim_node_stats(b->node).pings_answered - b->pongs_before >= 10 || b->k->failed > 0;
}

static void busy_healthy_server_keeps_its_connection(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.max_pending = 4;
    o.heartbeat_interval_ms = 100;
    o.heartbeat_timeout_ms = 100;
    o.heartbeat_max_failures = 2;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.response_delay_ms = 2});
    keep_full_t k = {.w = w};
    for (int i = 0; i < 4; i++) {
        ami_action_req_t req = {.name = "CoreStatus"};
        assert_int_equal(ami_client_send(w->client, "pbx1", &req, refill, &k, NULL, NULL), 0);
    }
    busy_t b = {&k, n, ami_sim_node_stats(n).pings_answered};
    /* ten heartbeat rounds while every slot stays taken */
    assert_true(harness_run_until(w->loop, ten_rounds_done, &b, 30000));
    ami_server_info_t info;
    ami_client_server_info(w->client, 0, &info);
    assert_int_equal(k.failed, 0);
    assert_int_equal(info.stats->heartbeat_failures, 0);
    assert_int_equal(w->transitions[AMI_CONN_BACKOFF], 0);
    ami_client_stop(w->client, 100);
    harness_run_for(w->loop, 200);
    cw_free(w);
}

/* ---- a Pong resets the count ------------------------------------------------------- */

typedef struct hb_wait {
    cworld_t *w;
    uint32_t failures;
} hb_wait_t;

static bool failures_are(void *ud)
{
    hb_wait_t *h = ud;
    return ami_conn_heartbeat_failures(ami_client_conn(h->w->client, 0)) == h->failures;
}

static void wait_failures(cworld_t *w, uint32_t failures)
{
    hb_wait_t h = {w, failures};
    if (!harness_run_until(w->loop, failures_are, &h, 5000))
        fail_msg("heartbeat failures never reached %u (at %u)", failures,
                 ami_conn_heartbeat_failures(ami_client_conn(w->client, 0)));
}

static void a_pong_resets_the_failure_count(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    /* 400 ms between a round's judgement and the next Ping: time to switch the fault */
    cworld_t *w = connected_world(&n, 500, 100, 3);
    for (int round = 0; round < 2; round++) {
        ami_sim_node_set_faults(n, &(ami_sim_faults_t){.ping_silent = true});
        wait_failures(w, 2); /* one short of the limit */
        ami_sim_node_set_faults(n, NULL);
        wait_failures(w, 0); /* the next Pong */
    }
    assert_int_equal(w->transitions[AMI_CONN_BACKOFF], 0);
    assert_true(cw_metric(w, "ami_heartbeat_failures_total",
                          (const char *const[]){"server_key", "pbx1", NULL}) == 4);
    /* each failure said so, at WARN, with its count */
    assert_int_equal(cw_log_lines(w, (const char *const[]){"level=warn", "msg=\"heartbeat failed\"",
                                                           "server_key=pbx1", "failures=2", "max=3",
                                                           "no Pong within 100 ms", NULL}),
                     2);
    cw_free(w);
}

/* A late Pong (after its round was judged) is ignored, not counted as the
 * next round's answer. */
static void a_late_pong_does_not_answer_a_later_round(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = connected_world(&n, 300, 100, 2);
    wait_for_a_pong(w, n);
    /* every answer now takes 150 ms: past T (100), before the next Ping (300) */
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.response_delay_ms = 150});
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_string_equal(w->last_reason, "Max heartbeat failures");
    cw_free(w);
}

/* ---- options ------------------------------------------------------------------------ */

static void a_timeout_longer_than_the_interval_is_a_config_error(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", 5038);
    o.heartbeat_interval_ms = 1000;
    o.heartbeat_timeout_ms = 1001;
    ami_err_t err;
    assert_int_equal(ami_client_add_server(w->client, &o, &err), -1);
    assert_int_equal(err.code, AMI_E_CONFIG);
    assert_non_null(strstr(err.msg, "heartbeat_timeout_ms (1001)"));
    assert_non_null(strstr(err.msg, "heartbeat_interval_ms (1000)"));
    o.heartbeat_timeout_ms = 1000;
    assert_int_equal(ami_client_add_server(w->client, &o, &err), 0);
    o.server_key = "pbx2";
    o.heartbeat_timeout_ms = 0; /* = the interval */
    assert_int_equal(ami_client_add_server(w->client, &o, &err), 0);
    o.server_key = "pbx3";
    o.heartbeat_interval_ms = 0; /* off: the timeout is not used */
    o.heartbeat_timeout_ms = 5000;
    assert_int_equal(ami_client_add_server(w->client, &o, &err), 0);
    o.server_key = "pbx4";
    o.heartbeat_interval_ms = 1000;
    o.heartbeat_max_failures = 0;
    assert_int_equal(ami_client_add_server(w->client, &o, &err), -1);
    assert_non_null(strstr(err.msg, "heartbeat_max_failures"));
    cw_free(w);
}

/* ---- memory (seed 6.4), through real missed Pongs ----------------------------------- */

typedef struct sessions_wait {
    ami_sim_node_t *node;
} sessions_wait_t;

static bool one_session_left(void *ud)
{
    return ami_sim_node_stats(((sessions_wait_t *)ud)->node).sessions_live == 1;
}

typedef struct closes_wait {
    cworld_t *w;
    int closes;
} closes_wait_t;

static bool closed_again(void *ud)
{
    closes_wait_t *c = ud;
    return c->w->transitions[AMI_CONN_BACKOFF] >= c->closes;
}

static void memory_is_stable_over_1000_forced_heartbeat_disconnects(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.heartbeat_interval_ms = 3;
    o.heartbeat_timeout_ms = 3;
    o.heartbeat_max_failures = 1;
    o.backoff_initial_ms = 1;
    o.backoff_max_ms = 2;
    o.action_timeout_ms = 60000;
    cw_add_server(w, &o);
    /* The server logs in and reads on, but never answers a Ping. */
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.ping_silent = true});
    ami_client_start(w->client);
    ami_conn_t *c = ami_client_conn(w->client, 0);
    int64_t warm = 0;
    for (int cycle = 1; cycle <= 1000; cycle++) {
        cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
        outcome_t out = {0};
        assert_int_equal(cw_send(w, "pbx1", "Ping", &out, NULL), 0);
        closes_wait_t cl = {w, cycle};
        assert_true(harness_run_until(w->loop, closed_again, &cl, 3000));
        assert_int_equal(out.finals, 1);
        assert_int_equal(out.status, AMI_E_HEARTBEAT);
        if (cycle == 5 || cycle == 1000) {
            cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
            sessions_wait_t s = {n};
            assert_true(harness_run_until(w->loop, one_session_left, &s, 3000));
            if (cycle == 5)
                warm = ami_alloc_live_bytes();
        }
    }
    int64_t after = ami_alloc_live_bytes();
    print_message("live bytes after 5 cycles: %lld, after 1000: %lld\n", (long long)warm, (long long)after);
    assert_int_equal(after, warm);
    assert_int_equal(ami_conn_stats(c)->force_closes, 1000);
    assert_int_equal(ami_conn_stats(c)->heartbeat_failures, 1000);
    cw_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unresponsive_server_is_force_closed_and_reconnected),
        cmocka_unit_test(timeout_equal_to_interval_closes_at_n_intervals_plus_timeout),
        cmocka_unit_test(timeout_shorter_than_interval_closes_at_n_intervals_plus_timeout),
        cmocka_unit_test(one_allowed_failure_closes_at_one_interval_plus_timeout),
        cmocka_unit_test(stall_with_max_pending_reached_is_detected_in_the_same_time),
        cmocka_unit_test(stall_with_the_write_buffer_full_is_detected_in_the_same_time),
        cmocka_unit_test(busy_healthy_server_keeps_its_connection),
        cmocka_unit_test(a_pong_resets_the_failure_count),
        cmocka_unit_test(a_late_pong_does_not_answer_a_later_round),
        cmocka_unit_test(a_timeout_longer_than_the_interval_is_a_config_error),
        cmocka_unit_test(memory_is_stable_over_1000_forced_heartbeat_disconnects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
