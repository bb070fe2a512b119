/* Servers that send odd or hostile bytes, against the client over real TCP:
 * a malformed line inside a message is that message's bad data (dropped,
 * counted, logged at most once per 10 s) and the session stays up; lost
 * framing or an exceeded bound still closes it, and a server that does that
 * right after every login is backed off, not hammered; answers without an
 * ActionID (old servers, proxies) each reach their own action. */
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

static cworld_t *connected(ami_sim_node_t **n, void (*tweak)(ami_server_options_t *o))
{
    cworld_t *w = cw_new(&(cw_config_t){.capture_logs = true});
    *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(*n));
    o.heartbeat_interval_ms = 0;
    if (tweak)
        tweak(&o);
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    return w;
}

/* ---- malformed lines inside a message -------------------------------------------------------- */

typedef struct user_events {
    int n;
    char last_a[32];
    char last_b[32];
    uint32_t last_bad_lines;
} user_events_t;

static void on_user_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)server_key;
    user_events_t *u = ud;
    u->n++;
    const char *a = ami_msg_get(msg, "A"), *b = ami_msg_get(msg, "B");
    snprintf(u->last_a, sizeof u->last_a, "%s", a ? a : "");
    snprintf(u->last_b, sizeof u->last_b, "%s", b ? b : "");
    u->last_bad_lines = msg->bad_lines;
}

typedef struct count_wait {
    user_events_t *u;
    int n;
} count_wait_t;

static bool got_events(void *ud)
{
    count_wait_t *c = ud;
    return c->u->n >= c->n;
}

static const char *const MALFORMED_KEY[] = {"server_key", "pbx1", NULL};

/* Before: any of these closed the session, failed every pending action and
 * reconnected; any AMI user allowed to send UserEvent could keep the engine
 * offline that way. */
static void malformed_lines_in_relayed_user_events_keep_the_session(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = connected(&n, NULL);
    user_events_t u = {0};
    assert_non_null(ami_client_subscribe(w->client, "UserEvent", on_user_event, &u, NULL));
    /* an action is waiting while the bad data arrives */
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.response_delay_ms = 200});
    outcome_t pending = {.probe = "Ping"};
    assert_int_equal(cw_send(w, "pbx1", "Ping", &pending, NULL), 0);
    static const char lone_cr[] = "Event: UserEvent\r\nA: 1\r\nEvil: one\rtwo\r\nB: 2\r\n\r\n";
    static const char nul[] = "Event: UserEvent\r\nA: 3\r\nEvil: x\0y\r\nB: 4\r\n\r\n";
    static const char no_colon[] = "Event: UserEvent\r\nA: 5\r\nno colon at all\r\nB: 6\r\n\r\n";
    ami_sim_node_inject(n, lone_cr, sizeof lone_cr - 1);
    ami_sim_node_inject(n, nul, sizeof nul - 1);
    ami_sim_node_inject(n, no_colon, sizeof no_colon - 1);
    count_wait_t c = {&u, 3};
    assert_true(harness_run_until(w->loop, got_events, &c, 3000));
    assert_string_equal(u.last_a, "5");
    assert_string_equal(u.last_b, "6"); /* the lines after the bad one are kept */
    assert_int_equal(u.last_bad_lines, 1);
    assert_true(harness_run_until(w->loop, cw_finished, &pending, 3000));
    assert_int_equal(pending.signal, AMI_PENDING_DONE);
    assert_string_equal(pending.probe_value, "Pong");
    assert_int_equal(w->transitions[AMI_CONN_BACKOFF], 0);
    assert_true(cw_in_state(w, 0, AMI_CONN_CONNECTED));
    assert_true(cw_metric(w, "ami_malformed_lines_total", MALFORMED_KEY) == 3);
    assert_true(cw_metric(w, "ami_protocol_errors_total", MALFORMED_KEY) == 0);
    /* logged once (the three came in one read), at WARN, with the latest one's
     * kind, place and first bytes; the next ones within 10 s are only counted */
    if (cw_log_lines(w, (const char *const[]){"malformed line", NULL}) != 1)
        fail_msg("want one line about malformed lines:\n%s", log_capture_text(&w->logs));
    assert_int_equal(cw_log_lines(w, (const char *const[]){"level=warn", "malformed line dropped",
                                                           "server_key=pbx1", "kind=\"no ':' separator\"",
                                                           "line=3", "excerpt=\"no colon at all\"",
                                                           "dropped=3", "total=3", NULL}),
                     1);
    ami_sim_node_inject(n, no_colon, sizeof no_colon - 1);
    c.n = 4;
    assert_true(harness_run_until(w->loop, got_events, &c, 3000));
    assert_true(cw_metric(w, "ami_malformed_lines_total", MALFORMED_KEY) == 4);
    assert_int_equal(cw_log_lines(w, (const char *const[]){"malformed line", NULL}), 1);
    ami_server_info_t info;
    ami_client_server_info(w->client, 0, &info);
    assert_int_equal(info.stats->malformed_lines, 4);
    cw_free(w);
}

/* A garbage line where a message should start: framing is lost, so the
 * session closes (and comes back). */
static void garbage_where_a_message_starts_still_closes_the_session(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = connected(&n, NULL);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.send_garbage = true});
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_non_null(strstr(w->last_reason, "no ':' separator"));
    assert_true(cw_metric(w, "ami_protocol_errors_total", MALFORMED_KEY) == 1);
    assert_true(cw_metric(w, "ami_disconnects_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "protocol", NULL}) == 1);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    cw_free(w);
}

/* ---- a bound exceeded right after every login ------------------------------------------------ */

typedef struct oversize {
    ami_sim_node_t *node;
    char *big;
    size_t len;
} oversize_t;

static void send_oversized_on_login(void *ud, const char *key, ami_conn_state_t from, ami_conn_state_t to,
                                    const char *reason)
{
    (void)key;
    (void)from;
    (void)reason;
    oversize_t *o = ud;
    if (to == AMI_CONN_CONNECTED)
        ami_sim_node_inject(o->node, o->big, o->len);
}

static void small_messages(ami_server_options_t *o)
{
    o->parser.max_line = 1024;
    o->parser.max_message = 4096;
    o->backoff_initial_ms = 8;
    o->backoff_max_ms = 1000;
}

typedef struct backoffs_wait {
    cworld_t *w;
    size_t n;
} backoffs_wait_t;

static bool enough_backoffs(void *ud)
{
    backoffs_wait_t *b = ud;
    return b->w->nbackoffs >= b->n;
}

/* Before: the login reset the backoff, so this server was reconnected (and
 * its oversized message downloaded) every backoff_initial_ms, forever. */
static void a_server_exceeding_a_bound_after_every_login_is_backed_off(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = connected(&n, small_messages);
    oversize_t o = {.node = n};
    ami_buf_t b;
    ami_buf_init(&b, 0);
    ami_buf_append_str(&b, "Event: UserEvent\r\n");
    for (int i = 0; i < 200; i++)
        ami_buf_printf(&b, "Pad%03d: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", i);
    ami_buf_append_str(&b, "\r\n");
    o.big = b.data;
    o.len = b.len;
    ami_client_on_state(w->client, send_oversized_on_login, &o);
    ami_sim_node_inject(n, o.big, o.len);
    backoffs_wait_t bw = {w, 6};
    assert_true(harness_run_until(w->loop, enough_backoffs, &bw, 10000));
    assert_non_null(strstr(w->last_reason, "max_message"));
    for (size_t i = 0; i < w->nbackoffs; i++) {
        uint32_t c = 8u << i;
        if (w->backoffs[i] < c / 2 || w->backoffs[i] > c)
            fail_msg("backoff %zu is %u ms, outside [%u, %u]", i, w->backoffs[i], c / 2, c);
    }
    assert_true(cw_metric(w, "ami_protocol_errors_total", MALFORMED_KEY) >= 6);
    ami_buf_deinit(&b);
    cw_free(w);
}

/* ---- answers without ActionID ---------------------------------------------------------------- */

typedef struct answered {
    outcome_t *outs;
    int n;
} answered_t;

static bool all_answered(void *ud)
{
    answered_t *a = ud;
    for (int i = 0; i < a->n; i++)
        if (!a->outs[i].finals)
            return false;
    return true;
}

/* Before: the registry lost its queue on the first such answer; the second
 * and third came back unmatched (and in longer runs went to other actions). */
static void answers_without_action_id_reach_their_own_actions(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.answer_without_action_id = true});
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.heartbeat_interval_ms = 0;
    o.events = "off"; /* a session setting, answered without ActionID too */
    cw_add_server(w, &o);
    ami_client_start(w->client); /* the Login answer itself has no ActionID */
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    static const struct {
        const char *action, *probe, *expect;
    } kinds[] = {{"Ping", "Ping", "Pong"}, {"CoreStatus", "CoreCurrentCalls", "0"},
                 {"CoreSettings", "SystemName", "pbx1"}};
    enum { N = 60 };
    static outcome_t outs[N];
    memset(outs, 0, sizeof outs);
    for (int i = 0; i < N; i++) {
        outs[i].probe = kinds[i % 3].probe;
        assert_int_equal(cw_send(w, "pbx1", kinds[i % 3].action, &outs[i], NULL), 0);
        if (i % 7 == 6) /* answers and new actions interleave */
            ami_client_poll(w->client);
    }
    answered_t a = {outs, N};
    assert_true(harness_run_until(w->loop, all_answered, &a, 5000));
    for (int i = 0; i < N; i++) {
        if (outs[i].finals != 1 || outs[i].signal != AMI_PENDING_DONE ||
            strcmp(outs[i].probe_value, kinds[i % 3].expect) != 0)
            fail_msg("action %d (%s): finals %d, %s=\"%s\"", i, kinds[i % 3].action, outs[i].finals,
                     kinds[i % 3].probe, outs[i].probe_value);
    }
    cw_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malformed_lines_in_relayed_user_events_keep_the_session),
        cmocka_unit_test(garbage_where_a_message_starts_still_closes_the_session),
        cmocka_unit_test(a_server_exceeding_a_bound_after_every_login_is_backed_off),
        cmocka_unit_test(answers_without_action_id_reach_their_own_actions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
