/* The connection observer (session/conn.h) against the simulated Asterisk:
 * it sees every message before routing (list items an action consumes
 * included), every action written (login and heartbeat too), each one's
 * single resolution or cancellation; removing it stops the calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/client.h"
#include "session/conn.h"
#include "harness.h"
#include "sim/sim.h"

#define MAX_IDS 256

typedef struct seen {
    int banners, responses, events, list_items;
    int sent, finals, cancels;
    char sent_names[MAX_IDS][24];
    uint8_t state[MAX_IDS]; /* 0 never sent, 1 sent, 2 resolved, 3 cancelled, 9 twice */
    ami_conn_t *conn;
    int bad_conn;
} seen_t;

static void on_message(void *ud, ami_conn_t *c, const ami_msg_t *msg)
{
    seen_t *s = ud;
    s->bad_conn += c != s->conn;
    if (msg->kind == AMI_MSG_BANNER)
        s->banners++;
    else if (msg->kind == AMI_MSG_RESPONSE)
        s->responses++;
    else if (msg->kind == AMI_MSG_EVENT) {
        s->events++;
        s->list_items += strcmp(ami_msg_name(msg), "CoreShowChannel") == 0;
    }
}

static void on_sent(void *ud, ami_conn_t *c, uint64_t id, const char *action)
{
    seen_t *s = ud;
    s->bad_conn += c != s->conn;
    assert_true(id < MAX_IDS);
    s->state[id] = s->state[id] ? 9 : 1;
    snprintf(s->sent_names[id], sizeof s->sent_names[id], "%s", action);
    s->sent++;
}

static void on_final(void *ud, ami_conn_t *c, const ami_pending_note_t *n)
{
    seen_t *s = ud;
    s->bad_conn += c != s->conn;
    assert_true(n->id < MAX_IDS);
    s->state[n->id] = s->state[n->id] == 1 ? 2 : 9;
    s->finals++;
}

static void on_cancel(void *ud, ami_conn_t *c, uint64_t id)
{
    seen_t *s = ud;
    s->bad_conn += c != s->conn;
    assert_true(id < MAX_IDS);
    s->state[id] = s->state[id] == 1 ? 3 : 9;
    s->cancels++;
}

typedef struct done {
    int finals;
    uint32_t items;
} done_t;

static void on_done(void *ud, const ami_pending_note_t *n)
{
    done_t *d = ud;
    if (n->signal == AMI_PENDING_DONE || n->signal == AMI_PENDING_FAILED) {
        d->finals++;
        d->items = n->items;
    }
}

static bool finished(void *ud)
{
    return ((done_t *)ud)->finals > 0;
}

static bool connected(void *ud)
{
    return ami_client_connected_count(ud) == 1;
}

static bool stopped(void *ud)
{
    return ami_client_stopped(ud);
}

static void observer_sees_every_message_and_every_action_once(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_sim_t *sim = ami_sim_new(loop, NULL);
    ami_sim_node_config_t nc = {.name = "pbx1", .calls_per_second = 30, .call_duration_ms = 5000, .seed = 3};
    ami_sim_node_t *node = ami_sim_add_node(sim, &nc, NULL);
    assert_non_null(node);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = loop;
    ami_client_t *client = ami_client_new(&cc, NULL);
    ami_server_options_t o;
    ami_server_options_default(&o);
    o.server_key = "pbx1";
    o.host = "127.0.0.1";
    o.port = ami_sim_node_port(node);
    o.username = "engine";
    o.secret = "s3cret";
    o.heartbeat_interval_ms = 50;
    o.events = "on"; /* a session setting: one more action after the login */
    assert_int_equal(ami_client_add_server(client, &o, NULL), 0);
    seen_t s = {.conn = ami_client_conn(client, 0)};
    ami_conn_observer_t obs = {on_message, on_sent, on_final, on_cancel, &s};
    ami_conn_set_observer(s.conn, &obs);

    ami_client_start(client);
    assert_true(harness_run_until(loop, connected, client, 5000));
    harness_run_for(loop, 300); /* calls start; heartbeats go and come back */

    done_t list = {0};
    ami_action_req_t csc = {.name = "CoreShowChannels"};
    assert_int_equal(ami_client_send(client, "pbx1", &csc, on_done, &list, NULL, NULL), 0);
    done_t never = {0};
    ami_action_handle_t h;
    ami_action_req_t slow = {.name = "Ping"};
    assert_int_equal(ami_client_send(client, "pbx1", &slow, on_done, &never, &h, NULL), 0);
    assert_true(ami_client_cancel(client, h));
    assert_true(harness_run_until(loop, finished, &list, 5000));
    assert_true(list.items > 0); /* calls were up: the list had items */

    /* the observer saw the items the list consumed, not only what reached subscribers */
    assert_true(s.list_items >= (int)list.items);
    assert_int_equal(s.banners, 1);
    assert_int_equal(s.bad_conn, 0);
    assert_string_equal(s.sent_names[1], "Login");
    assert_string_equal(s.sent_names[2], "Events");
    int pings = 0;
    for (int id = 1; id < MAX_IDS; id++) {
        pings += strcmp(s.sent_names[id], "Ping") == 0;
        assert_int_not_equal(s.state[id], 9); /* nothing sent or resolved twice */
    }
    assert_true(pings >= 3); /* heartbeats, and the cancelled one */
    assert_int_equal(s.cancels, 1);
    assert_int_equal(never.finals, 0);

    /* every action is either resolved, cancelled or still pending: never lost */
    ami_client_stop(client, 500);
    assert_true(harness_run_until(loop, stopped, client, 5000));
    int resolved = 0, cancelled = 0;
    for (int id = 1; id < MAX_IDS; id++) {
        resolved += s.state[id] == 2;
        cancelled += s.state[id] == 3;
        assert_true(s.state[id] != 1); /* after the stop nothing is left pending */
    }
    assert_int_equal(resolved + cancelled, s.sent);
    assert_int_equal(resolved, s.finals);

    /* removed: no more calls */
    ami_conn_set_observer(s.conn, NULL);
    int events_before = s.events, sent_before = s.sent;
    ami_client_start(client);
    assert_true(harness_run_until(loop, connected, client, 5000));
    harness_run_for(loop, 200);
    assert_int_equal(s.events, events_before);
    assert_int_equal(s.sent, sent_before);

    ami_client_free(client);
    ami_sim_free(sim);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(observer_sees_every_message_and_every_action_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
