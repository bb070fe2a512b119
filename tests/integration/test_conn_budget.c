/* The read budget (session/conn_input.c), over real TCP (and TLS) against
 * the simulator on the test's loop: a connection handed more messages than
 * one budget delivers every one, once and in order, a few per loop
 * iteration, while another connection's messages and a timer are served in
 * the iterations between; the time budget stops a wake-up whose handlers
 * are slow; the budget's hits are counted. */
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
#include "session/conn.h"
#include "obs/metrics.h"
#include "sim/sim.h"
#include "tls_world.h"
#include "util/clock.h"

#define NEVENTS 400
#define BUDGET 4
#define MAX_CONNS 8

typedef struct seen {
    struct ev_loop *loop;
    int events;
    int next_seq;           /* the Seq expected next */
    bool out_of_order;
    unsigned iter[NEVENTS]; /* ev_iteration of each event */
    unsigned last_iter;     /* ev_iteration of the latest event */
    uint32_t spin_us;       /* each event's handler busy for this long */
    ami_conn_t *close_other; /* force-closed by this handler at its close_at-th event */
    int close_at;
} seen_t;

typedef struct world {
    struct ev_loop *loop;
    ami_sim_t *sim;
    int nconns;
    ami_sim_node_t *node[MAX_CONNS];
    ami_conn_t *conn[MAX_CONNS];
    seen_t seen[MAX_CONNS];
    ami_metrics_t *metrics;
    ami_actionid_gen_t ids;
    ami_conn_pace_t pace;
    ev_timer tick;
    unsigned tick_iter[4096];
    int ticks;
} world_t;

static void on_event(void *ud, ami_conn_t *c, const ami_msg_t *msg)
{
    (void)c;
    seen_t *s = ud;
    const char *name = ami_msg_get(msg, "Event");
    if (!name || strcmp(name, "UserEvent") != 0)
        return; /* FullyBooted after the login */
    const char *seq = ami_msg_get(msg, "Seq");
    if (!seq || atoi(seq) != s->next_seq)
        s->out_of_order = true;
    s->next_seq++;
    if (s->events < NEVENTS)
        s->iter[s->events] = ev_iteration(s->loop);
    s->last_iter = ev_iteration(s->loop);
    if (s->close_other && s->events == s->close_at) {
        ami_conn_force_close(s->close_other, AMI_E_DISCONNECTED, "closed by the test from another server's handler");
        s->close_other = NULL;
    }
    s->events++;
    int64_t until = ami_now_ns() + (int64_t)s->spin_us * 1000;
    while (s->spin_us && ami_now_ns() < until) {
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    world_t *wd = w->data;
    if (wd->ticks < 4096)
        wd->tick_iter[wd->ticks++] = ev_iteration(loop);
}

static bool all_up(void *ud)
{
    world_t *w = ud;
    for (int i = 0; i < w->nconns; i++)
        if (ami_conn_state(w->conn[i]) != AMI_CONN_CONNECTED)
            return false;
    return true;
}

static bool all_seen(void *ud)
{
    world_t *w = ud;
    for (int i = 0; i < w->nconns; i++)
        if (w->seen[i].events < NEVENTS)
            return false;
    return true;
}

static world_t *world_of(int nconns, uint32_t budget, uint32_t budget_us, uint32_t spin_us, bool tls,
                         size_t read_chunk)
{
    world_t *w = calloc(1, sizeof *w);
    w->nconns = nconns;
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->sim = ami_sim_new(w->loop, NULL);
    w->metrics = ami_metrics_new(0);
    ami_actionid_init(&w->ids, 3);
    ami_conn_env_t env = {.loop = w->loop, .ids = &w->ids, .metrics = w->metrics, .read_budget = budget,
                          .read_budget_us = budget_us, .pace = &w->pace};
    ami_conn_callbacks_t cb = {.on_event = on_event};
    static const char *const keys[MAX_CONNS] = {"pbx1", "pbx2", "pbx3", "pbx4", "pbx5", "pbx6", "pbx7", "pbx8"};
    for (int i = 0; i < nconns; i++) {
        ami_sim_node_config_t nc = {.name = keys[i]};
        if (tls) {
            nc.tls_cert_file = tw_pki("server.crt");
            nc.tls_key_file = tw_pki("server.key");
        }
        w->node[i] = ami_sim_add_node(w->sim, &nc, NULL);
        assert_non_null(w->node[i]);
        ami_server_options_t o;
        if (tls)
            tw_options(&o, keys[i], ami_sim_node_port(w->node[i]), true);
        else
            cw_fast_options(&o, keys[i], ami_sim_node_port(w->node[i]));
        o.heartbeat_interval_ms = 0;
        o.read_chunk = read_chunk;
        w->seen[i].loop = w->loop;
        w->seen[i].spin_us = spin_us;
        ami_err_t err;
        w->conn[i] = ami_conn_new(&o, &env, &cb, &w->seen[i], &err);
        assert_non_null(w->conn[i]);
        ami_conn_start(w->conn[i]);
    }
    assert_true(harness_run_until(w->loop, all_up, w, 3000));
    return w;
}

static world_t *world_new(uint32_t budget, uint32_t budget_us, uint32_t spin_us, bool tls)
{
    /* Small reads: a pause leaves bytes in the socket, and over TLS
     * plaintext in the session (a record is larger than a read). */
    return world_of(2, budget, budget_us, spin_us, tls, 512);
}

static void world_free(world_t *w)
{
    ev_timer_stop(w->loop, &w->tick);
    for (int i = 0; i < w->nconns; i++)
        ami_conn_free(w->conn[i]);
    ami_sim_free(w->sim);
    ami_metrics_free(w->metrics);
    ev_loop_destroy(w->loop);
    free(w);
}

/* NEVENTS UserEvents numbered from 0, in one write to every session of the node. */
static void inject_numbered(ami_sim_node_t *node)
{
    size_t cap = (size_t)NEVENTS * 48, len = 0;
    char *raw = malloc(cap);
    for (int i = 0; i < NEVENTS; i++)
        len += (size_t)snprintf(raw + len, cap - len, "Event: UserEvent\r\nSeq: %d\r\n\r\n", i);
    ami_sim_node_inject(node, raw, len);
    free(raw);
}

static int max_per_iteration(const seen_t *s)
{
    int best = 0, run = 0;
    for (int i = 0; i < NEVENTS; i++) {
        run = i > 0 && s->iter[i] == s->iter[i - 1] ? run + 1 : 1;
        if (run > best)
            best = run;
    }
    return best;
}

static bool iteration_between(const unsigned *iters, int n, unsigned lo, unsigned hi)
{
    for (int i = 0; i < n; i++)
        if (iters[i] > lo && iters[i] < hi)
            return true;
    return false;
}

static double budget_hits(world_t *w, const char *key)
{
    double v = -1;
    ami_metrics_value(w->metrics, "ami_read_budget_hits_total", (const char *const[]){"server_key", key, NULL}, &v);
    return v;
}

static void whole_in_order_across_iterations(bool tls)
{
    world_t *w = world_new(BUDGET, 0, 0, tls);
    ev_timer_init(&w->tick, on_tick, 0.0001, 0.0001);
    w->tick.data = w;
    ev_timer_start(w->loop, &w->tick);
    inject_numbered(w->node[0]);
    inject_numbered(w->node[1]);
    assert_true(harness_run_until(w->loop, all_seen, w, 5000));
    harness_run_for(w->loop, 20); /* nothing handled twice comes after */
    for (int i = 0; i < 2; i++) {
        seen_t *s = &w->seen[i];
        assert_false(s->out_of_order);
        assert_int_equal(s->events, NEVENTS);
        assert_true(max_per_iteration(s) <= BUDGET);
        assert_true(s->iter[NEVENTS - 1] - s->iter[0] >= NEVENTS / BUDGET - 1);
    }
    /* While pbx1 drains, pbx2's events and the timer get iterations of their own. */
    unsigned first = w->seen[0].iter[0], last = w->seen[0].iter[NEVENTS - 1];
    assert_true(iteration_between(w->seen[1].iter, NEVENTS, first, last));
    assert_true(iteration_between(w->tick_iter, w->ticks, first, last));
    assert_true(budget_hits(w, "pbx1") >= NEVENTS / BUDGET - 1);
    assert_true(budget_hits(w, "pbx2") >= NEVENTS / BUDGET - 1);
    assert_int_equal(ami_conn_state(w->conn[0]), AMI_CONN_CONNECTED);
    world_free(w);
}

static void input_over_the_budget_arrives_whole_in_order_across_iterations(void **state)
{
    (void)state;
    whole_in_order_across_iterations(false);
}

/* Over TLS a record holds many messages and the session may hold
 * decrypted bytes no readiness announces: resuming must take them. */
static void the_same_over_tls(void **state)
{
    (void)state;
    whole_in_order_across_iterations(true);
}

/* Handlers of 50 µs against a 100 µs iteration budget: a connection stops
 * at the clock's next look (every 16 messages), and once the iteration is
 * spent the other connection takes one message per wake-up. */
static void slow_handlers_spend_the_iteration_budget_over(bool tls)
{
    world_t *w = world_new(512, 100, 50, tls);
    inject_numbered(w->node[0]);
    inject_numbered(w->node[1]);
    assert_true(harness_run_until(w->loop, all_seen, w, 10000));
    int per_iteration[2] = {max_per_iteration(&w->seen[0]), max_per_iteration(&w->seen[1])};
    for (int i = 0; i < 2; i++) {
        assert_false(w->seen[i].out_of_order);
        assert_int_equal(w->seen[i].events, NEVENTS);
        if (per_iteration[i] > 16)
            fail_msg("pbx%d handled %d messages in one iteration; the time budget allows 16", i + 1,
                     per_iteration[i]);
    }
    assert_true(budget_hits(w, "pbx1") > 0);
    world_free(w);
}

static void slow_handlers_spend_the_iteration_budget(void **state)
{
    (void)state;
    slow_handlers_spend_the_iteration_budget_over(false);
}

/* A read put off for time over TLS: the session may hold plaintext (a
 * record is larger than a 512-byte read) that no readiness would bring
 * back, so the connection queues for its turn instead of waiting for the
 * socket. */
static void slow_handlers_over_tls_lose_nothing_the_session_holds(void **state)
{
    (void)state;
    slow_handlers_spend_the_iteration_budget_over(true);
}

/* How many connections handled a message in loop iteration `it`. */
static int conns_in_iteration(const world_t *w, unsigned it)
{
    int n = 0;
    for (int i = 0; i < w->nconns; i++)
        for (int e = 0; e < NEVENTS; e++)
            if (w->seen[i].iter[e] == it) {
                n++;
                break;
            }
    return n;
}

/* The longest run of iterations in which a connection with input waiting
 * handled none of it (between its first and its last message). */
static unsigned longest_wait(const seen_t *s)
{
    unsigned longest = 0;
    for (int e = 1; e < NEVENTS; e++)
        if (s->iter[e] - s->iter[e - 1] > longest)
            longest = s->iter[e] - s->iter[e - 1];
    return longest;
}

/* Eight servers flooding, handlers of 50 µs, 100 µs of input per
 * iteration: once an iteration's time is spent the connections with input
 * left wait for their turn in a queue instead of each being called for a
 * message (each call cost more than the message with hundreds of
 * servers), and turns go round: nobody waits more than a round. */
static void connections_with_input_left_take_turns(void **state)
{
    (void)state;
    /* Reads that take a server's whole flood at once: a connection's
     * input then outlasts many turns. */
    world_t *w = world_of(MAX_CONNS, 512, 100, 50, false, 64u << 10);
    for (int i = 0; i < MAX_CONNS; i++)
        inject_numbered(w->node[i]);
    assert_true(harness_run_until(w->loop, all_seen, w, 20000));
    unsigned first = UINT32_MAX, last = 0;
    for (int i = 0; i < MAX_CONNS; i++) {
        assert_false(w->seen[i].out_of_order);
        assert_int_equal(w->seen[i].events, NEVENTS);
        if (w->seen[i].iter[0] < first)
            first = w->seen[i].iter[0];
        if (w->seen[i].iter[NEVENTS - 1] > last)
            last = w->seen[i].iter[NEVENTS - 1];
    }
    /* A server's first read after its time was spent takes one message
     * (never twice put off); from then on its input waits for its turn. */
    int crowded = 0;
    for (unsigned it = first; it <= last; it++)
        crowded += conns_in_iteration(w, it) > 2;
    if (crowded > 2)
        fail_msg("%d iterations had more than two connections handling messages; once its time is spent "
                 "the rest wait for their turn",
                 crowded);
    for (int i = 0; i < MAX_CONNS; i++) {
        unsigned wait = longest_wait(&w->seen[i]);
        if (wait > 2 * MAX_CONNS)
            fail_msg("pbx%d waited %u iterations with input left; turns go round every %d", i + 1, wait,
                     MAX_CONNS);
    }
    world_free(w);
}

static bool all_but_second_seen(void *ud)
{
    world_t *w = ud;
    for (int i = 0; i < w->nconns; i++)
        if (i != 1 && w->seen[i].events < NEVENTS)
            return false;
    return true;
}

/* A handler closes another server's connection while that one waits in
 * the queue with input left: it leaves the queue with its input (dropped
 * with the session), and the others go on whole and in order. */
static void a_connection_closed_while_queued_leaves_the_queue(void **state)
{
    (void)state;
    world_t *w = world_of(4, 512, 100, 20, false, 64u << 10);
    w->seen[0].close_other = w->conn[1];
    w->seen[0].close_at = 50;
    for (int i = 0; i < 4; i++)
        inject_numbered(w->node[i]);
    assert_true(harness_run_until(w->loop, all_but_second_seen, w, 20000));
    for (int i = 0; i < 4; i++)
        assert_false(w->seen[i].out_of_order);
    assert_true(w->seen[1].events < NEVENTS);
    assert_true(harness_run_until(w->loop, all_up, w, 5000)); /* it reconnects */
    world_free(w);
}

#define QUIET_EVENTS 40

typedef struct quiet {
    world_t *w;
    int injected;
    unsigned at[QUIET_EVENTS]; /* ev_iteration of each injection */
} quiet_t;

static void on_quiet_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    quiet_t *q = t->data;
    if (q->injected >= QUIET_EVENTS) {
        ev_timer_stop(loop, t);
        return;
    }
    /* Two at once: they arrive in one read, and the second waits in the
     * queue (ahead of the flooding server, which had its turn). */
    char raw[128];
    int n = snprintf(raw, sizeof raw, "Event: UserEvent\r\nSeq: %d\r\n\r\nEvent: UserEvent\r\nSeq: %d\r\n\r\n",
                     q->injected, q->injected + 1);
    q->at[q->injected] = q->at[q->injected + 1] = ev_iteration(loop);
    q->injected += 2;
    ami_sim_node_inject(q->w->node[1], raw, (size_t)n);
}

static bool flood_and_quiet_seen(void *ud)
{
    world_t *w = ud;
    return w->seen[0].events >= 4000 && w->seen[1].events >= QUIET_EVENTS;
}

/* One server flooding (its handlers spend every iteration's input time),
 * another sending two events now and then: the first of a pair is handled
 * within three iterations of the injection (the simulator writes it, the
 * socket reports it, a read put off once goes ahead, whose time is spent:
 * one message), the second in the next iteration, first in the queue, not
 * after another turn of the flooding server. */
static void a_quiet_server_is_not_held_behind_a_flooding_one(void **state)
{
    (void)state;
    world_t *w = world_of(2, 512, 100, 20, false, 64u << 10);
    w->seen[1].spin_us = 0;
    size_t cap = 4000 * 40, len = 0;
    char *raw = malloc(cap);
    for (int i = 0; i < 4000; i++)
        len += (size_t)snprintf(raw + len, cap - len, "Event: UserEvent\r\nSeq: %d\r\n\r\n", i);
    ami_sim_node_inject(w->node[0], raw, len);
    free(raw);
    quiet_t q = {.w = w};
    ev_timer tick;
    ev_timer_init(&tick, on_quiet_tick, 0.001, 0.001);
    tick.data = &q;
    ev_timer_start(w->loop, &tick);
    assert_true(harness_run_until(w->loop, flood_and_quiet_seen, w, 20000));
    ev_timer_stop(w->loop, &tick);
    assert_false(w->seen[0].out_of_order);
    assert_false(w->seen[1].out_of_order);
    int during_flood = 0;
    for (int k = 0; k < q.injected && k < w->seen[1].events; k++) {
        if (w->seen[1].iter[k] > w->seen[0].last_iter)
            break;
        during_flood++;
        unsigned waited = w->seen[1].iter[k] - q.at[k];
        if (k % 2 == 0 && waited > 3)
            fail_msg("the quiet server's event %d waited %u iterations behind the flood", k, waited);
        if (k % 2 == 1 && w->seen[1].iter[k] - w->seen[1].iter[k - 1] > 1)
            fail_msg("the quiet server's event %d waited %u iterations after the one it came with", k,
                     w->seen[1].iter[k] - w->seen[1].iter[k - 1]);
    }
    assert_true(during_flood >= 10);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(input_over_the_budget_arrives_whole_in_order_across_iterations),
        cmocka_unit_test(slow_handlers_spend_the_iteration_budget),
        cmocka_unit_test(slow_handlers_over_tls_lose_nothing_the_session_holds),
        cmocka_unit_test(the_same_over_tls),
        cmocka_unit_test(connections_with_input_left_take_turns),
        cmocka_unit_test(a_quiet_server_is_not_held_behind_a_flooding_one),
        cmocka_unit_test(a_connection_closed_while_queued_leaves_the_queue),
    };
    return cmocka_run_group_tests(tests, tw_make_pki, tw_remove_pki);
}
