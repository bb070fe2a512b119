/* Busy polling (cluster/busy_poll.c, ami_client_set_busy_poll): after
 * input the loop polls without sleeping for the window, then sleeps again;
 * off, it never spins; turned off while spinning, it stops at once; the
 * watchers never keep the loop alive. Real TCP against the simulator on the
 * test's loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client_world.h"
#include "harness.h"

typedef struct probe {
    int events;
} probe_t;

static void on_user_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)server_key;
    (void)msg;
    ((probe_t *)ud)->events++;
}

static bool got_event(void *ud)
{
    return ((probe_t *)ud)->events > 0;
}

static cworld_t *connected_world(probe_t *p, ami_sim_node_t **node)
{
    cworld_t *w = cw_new(NULL);
    *node = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(*node));
    o.heartbeat_interval_ms = 0; /* nothing arrives unless the test sends it */
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_err_t err;
    assert_non_null(ami_client_subscribe(w->client, "UserEvent", on_user_event, p, &err));
    return w;
}

static void send_one_event(cworld_t *w, ami_sim_node_t *node, probe_t *p)
{
    static const char ev[] = "Event: UserEvent\r\nUserEvent: Probe\r\n\r\n";
    p->events = 0;
    ami_sim_node_inject(node, ev, sizeof ev - 1);
    assert_true(harness_run_until(w->loop, got_event, p, 3000));
}

static void on_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* Iterations the loop makes in ms of loop time with nothing arriving (one
 * timer ends the run: a sleeping loop wakes for it alone). */
static unsigned iterations_in(cworld_t *w, uint32_t ms)
{
    ev_timer done;
    ev_timer_init(&done, on_done, ms / 1000.0, 0);
    ev_now_update(w->loop);
    ev_timer_start(w->loop, &done);
    unsigned before = ev_iteration(w->loop);
    ev_run(w->loop, 0);
    ev_timer_stop(w->loop, &done);
    return ev_iteration(w->loop) - before;
}

static void after_input_the_loop_spins_for_the_window_then_sleeps(void **state)
{
    (void)state;
    probe_t p = {0};
    ami_sim_node_t *node;
    cworld_t *w = connected_world(&p, &node);
    ami_client_set_busy_poll(w->client, AMI_BUSY_POLL_MAX_US); /* 10 ms */
    harness_run_for(w->loop, 30);
    assert_false(ami_client_busy_polling(w->client)); /* no input since the login, 30 ms ago */

    send_one_event(w, node, &p);
    /* the decision is taken before the next poll: one more iteration */
    ev_run(w->loop, EVRUN_NOWAIT);
    assert_true(ami_client_busy_polling(w->client));
    unsigned spun = iterations_in(w, 60);
    assert_false(ami_client_busy_polling(w->client)); /* quiet for longer than the window */
    unsigned slept = iterations_in(w, 60);
    /* Spinning, each poll returns at once: hundreds of iterations in 10 ms
     * even on a loaded machine; sleeping, one or two (the run's own timer). */
    assert_true(spun > 20);
    assert_true(slept <= 3);
    /* what it cost is counted: about the window (less the iteration that
     * handled the event; more if the machine took the CPU meanwhile) */
    double spent = cw_metric(w, "ami_loop_busy_poll_seconds_total", NULL);
    assert_true(spent >= 0.005 && spent < 1.0);
    print_message("iterations in 60 ms: %u after an event (spinning 10 ms), %u when quiet\n", spun, slept);
    cw_free(w);
}

static void off_by_default_the_loop_never_spins(void **state)
{
    (void)state;
    probe_t p = {0};
    ami_sim_node_t *node;
    cworld_t *w = connected_world(&p, &node);
    send_one_event(w, node, &p);
    ev_run(w->loop, EVRUN_NOWAIT);
    assert_false(ami_client_busy_polling(w->client));
    assert_true(iterations_in(w, 60) <= 3);
    assert_true(cw_metric(w, "ami_loop_busy_poll_seconds_total", NULL) == 0);
    cw_free(w);
}

static void turned_off_while_spinning_it_stops_at_once(void **state)
{
    (void)state;
    probe_t p = {0};
    ami_sim_node_t *node;
    cworld_t *w = connected_world(&p, &node);
    ami_client_set_busy_poll(w->client, AMI_BUSY_POLL_MAX_US);
    send_one_event(w, node, &p);
    ev_run(w->loop, EVRUN_NOWAIT);
    assert_true(ami_client_busy_polling(w->client));
    ami_client_set_busy_poll(w->client, 0);
    assert_false(ami_client_busy_polling(w->client));
    assert_true(iterations_in(w, 60) <= 3);
    /* and on again: the next input spins again */
    ami_client_set_busy_poll(w->client, 99999); /* clamped to the maximum */
    send_one_event(w, node, &p);
    ev_run(w->loop, EVRUN_NOWAIT);
    assert_true(ami_client_busy_polling(w->client));
    cw_free(w);
}

/* The watchers are unref'd: once the client is stopped and the simulator
 * gone, ev_run returns even while the loop was spinning. */
static void busy_polling_never_keeps_the_loop_alive(void **state)
{
    (void)state;
    alarm(10); /* a watcher that keeps the loop alive would make ev_run hang */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = loop;
    ami_err_t err;
    ami_client_t *c = ami_client_new(&cc, &err);
    assert_non_null(c);
    ami_client_set_busy_poll(c, 500);
    ev_run(loop, 0); /* nothing else active: returns at once */
    ami_client_set_busy_poll(c, 0);
    ami_client_set_busy_poll(c, 0); /* twice is harmless */
    ami_client_set_busy_poll(c, 500);
    ami_client_free(c);
    ev_run(loop, 0);
    ev_loop_destroy(loop);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(after_input_the_loop_spins_for_the_window_then_sleeps),
        cmocka_unit_test(off_by_default_the_loop_never_spins),
        cmocka_unit_test(turned_off_while_spinning_it_stops_at_once),
        cmocka_unit_test(busy_polling_never_keeps_the_loop_alive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
