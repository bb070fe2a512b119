/* The client API's bookkeeping: subscriptions (by name, case-insensitive,
 * for every event, removed during dispatch), state watchers, and the bounds
 * and refusals of the embedder API (max_servers, max_subscriptions,
 * duplicate keys, unknown servers). */
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

typedef struct counts {
    int hangup, any, unsub_self;
    ami_client_t *client;
    ami_subscription_t *self;
} counts_t;

static void on_hangup(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)server_key;
    (void)msg;
    ((counts_t *)ud)->hangup++;
}

static void on_any(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)server_key;
    (void)msg;
    ((counts_t *)ud)->any++;
}

/* Unsubscribes itself from inside the dispatch. */
static void once(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)server_key;
    (void)msg;
    counts_t *c = ud;
    c->unsub_self++;
    ami_client_unsubscribe(c->client, c->self);
}

static bool got(void *ud)
{
    return ((counts_t *)ud)->any >= 2;
}

static void subscriptions_match_names_and_can_go_away_during_dispatch(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.heartbeat_interval_ms = 0;
    cw_add_server(w, &o);
    counts_t c = {.client = w->client};
    ami_err_t err;
    assert_non_null(ami_client_subscribe(w->client, "hangup", on_hangup, &c, &err));
    ami_subscription_t *twice = ami_client_subscribe(w->client, "HANGUP", on_hangup, &c, &err);
    assert_non_null(twice);
    c.self = ami_client_subscribe(w->client, "Hangup", once, &c, &err);
    assert_non_null(ami_client_subscribe(w->client, "*", on_any, &c, &err));
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    static const char ev[] = "Event: Hangup\r\nChannel: SIP/1-0001\r\nCause: 16\r\n\r\n";
    c.any = 0;
    ami_sim_node_inject(n, ev, sizeof ev - 1);
    ami_sim_node_inject(n, ev, sizeof ev - 1);
    assert_true(harness_run_until(w->loop, got, &c, 3000));
    assert_int_equal(c.hangup, 4);     /* two subscriptions, two events */
    assert_int_equal(c.unsub_self, 1); /* gone after its first run */
    ami_client_unsubscribe(w->client, twice);
    ami_client_unsubscribe(w->client, NULL);
    c.any = 0;
    ami_sim_node_inject(n, ev, sizeof ev - 1);
    ami_sim_node_inject(n, ev, sizeof ev - 1);
    assert_true(harness_run_until(w->loop, got, &c, 3000));
    assert_int_equal(c.hangup, 6);
    cw_free(w);
}

static void subscribe_refuses_what_it_cannot_keep(void **state)
{
    (void)state;
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.max_subscriptions = 2;
    ami_client_t *client = ami_client_new(&cc, NULL);
    counts_t c = {0};
    ami_err_t err;
    assert_null(ami_client_subscribe(client, "Hangup", NULL, &c, &err));
    assert_int_equal(err.code, AMI_E_INVALID);
    char longname[80];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_null(ami_client_subscribe(client, longname, on_hangup, &c, &err));
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_non_null(ami_client_subscribe(client, "Hangup", on_hangup, &c, &err));
    assert_non_null(ami_client_subscribe(client, NULL, on_any, &c, &err));
    assert_null(ami_client_subscribe(client, "Newchannel", on_hangup, &c, &err));
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_non_null(strstr(err.msg, "max_subscriptions"));
    ami_client_free(client);
    ami_client_free(NULL);
}

static void on_state_noop(void *ud, const char *key, ami_conn_state_t from, ami_conn_state_t to,
                          const char *reason)
{
    (void)ud;
    (void)key;
    (void)from;
    (void)to;
    (void)reason;
}

static void servers_and_watchers_are_bounded(void **state)
{
    (void)state;
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.max_servers = 0;       /* 0: the default (256) */
    cc.max_subscriptions = 0; /* 0: the default */
    ami_client_t *client = ami_client_new(&cc, NULL);
    ami_err_t err;
    for (int i = 0; i < 256; i++) {
        char key[64];
        snprintf(key, sizeof key, "a-rather-long-server-name-to-fill-the-known-list-%02d", i);
        ami_server_options_t o;
        cw_fast_options(&o, key, 5038);
        assert_int_equal(ami_client_add_server(client, &o, &err), 0);
    }
    ami_server_options_t o;
    cw_fast_options(&o, "one-too-many", 5038);
    assert_int_equal(ami_client_add_server(client, &o, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_non_null(strstr(err.msg, "at most 256 servers"));
    /* an unknown key: the error lists the known ones, as many as fit */
    outcome_t out = {0};
    ami_action_req_t req = {.name = "Ping"};
    assert_int_equal(ami_client_send(client, "nope", &req, cw_capture, &out, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_UNKNOWN_SERVER);
    assert_non_null(strstr(err.msg, "a-rather-long-server-name-to-fill-the-known-list-00"));
    assert_null(strstr(err.msg, "list-63"));
    for (int i = 0; i < 16; i++)
        assert_int_equal(ami_client_on_state(client, on_state_noop, NULL), 0);
    assert_int_equal(ami_client_on_state(client, on_state_noop, NULL), -1);
    ami_client_free(client);

    client = ami_client_new(NULL, NULL);
    cw_fast_options(&o, "pbx1", 5038);
    assert_int_equal(ami_client_add_server(client, &o, &err), 0);
    assert_int_equal(ami_client_add_server(client, &o, &err), -1);
    assert_int_equal(err.code, AMI_E_CONFIG);
    assert_non_null(strstr(err.msg, "\"pbx1\" is used twice"));
    assert_int_equal(ami_client_server_index(client, "pbx1"), 0);
    assert_string_equal(ami_client_server_key(client, 0), "pbx1");
    assert_int_equal(ami_client_connected_count(client), 0);
    ami_client_free(client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(subscriptions_match_names_and_can_go_away_during_dispatch),
        cmocka_unit_test(subscribe_refuses_what_it_cannot_keep),
        cmocka_unit_test(servers_and_watchers_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
