/* One server connection's less travelled paths, over real TCP: option
 * validation, login timeouts, MD5 challenges answered wrongly, session
 * settings the server refuses, stopping (Logoff answered, not answered, not
 * sendable, cut short), action refusals, cancellation. Odd answers come from
 * a scripted fake AMI server in this file: it accepts one client, sends the
 * banner and answers each action with the text its script gives. */
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
#include "protocol/parser.h"

/* ---- a scripted fake AMI server ---------------------------------------------------- */

/* The answer to one action ("%s" is replaced by its ActionID), or NULL for none. */
typedef const char *(*fake_script_fn)(const char *action);

typedef struct fake {
    struct ev_loop *loop;
    int lfd, fd;
    uint16_t port;
    ev_io accept_w, read_w;
    ami_parser_t parser;
    fake_script_fn script;
    int actions;
} fake_t;

static void fake_reply(fake_t *f, const ami_msg_t *m)
{
    f->actions++;
    const char *text = f->script(ami_msg_get(m, "Action"));
    if (!text)
        return;
    const char *id = ami_msg_get(m, "ActionID");
    char out[1024];
    int n = snprintf(out, sizeof out, text, id ? id : "");
    (void)!write(f->fd, out, (size_t)n);
}

static void fake_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    fake_t *f = w->data;
    char buf[4096];
    ssize_t n = read(f->fd, buf, sizeof buf);
    if (n <= 0) {
        ev_io_stop(loop, w);
        close(f->fd);
        f->fd = -1;
        return;
    }
    ami_parser_feed(&f->parser, buf, (size_t)n, NULL);
    ami_msg_t m;
    while (ami_parser_next(&f->parser, &m, NULL) == 1)
        fake_reply(f, &m);
}

static void fake_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    fake_t *f = w->data;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return;
    if (f->fd >= 0) { /* one client at a time: the previous one is gone */
        ev_io_stop(loop, &f->read_w);
        close(f->fd);
    }
    f->fd = fd;
    ami_parser_reset(&f->parser);
    ami_parser_expect_banner(&f->parser, false);
    static const char banner[] = "Asterisk Call Manager/11.0.0\r\n";
    (void)!write(fd, banner, sizeof banner - 1);
    ev_io_init(&f->read_w, fake_on_read, fd, EV_READ);
    f->read_w.data = f;
    ev_io_start(loop, &f->read_w);
}

static fake_t *fake_new(struct ev_loop *loop, fake_script_fn script)
{
    fake_t *f = calloc(1, sizeof *f);
    f->loop = loop;
    f->script = script;
    f->fd = -1;
    ami_parser_init(&f->parser, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    getsockname(f->lfd, (struct sockaddr *)&a, &len);
    f->port = ntohs(a.sin_port);
    ev_io_init(&f->accept_w, fake_on_accept, f->lfd, EV_READ);
    f->accept_w.data = f;
    ev_io_start(loop, &f->accept_w);
    return f;
}

static void fake_free(fake_t *f)
{
    ev_io_stop(f->loop, &f->accept_w);
    if (f->fd >= 0) {
        ev_io_stop(f->loop, &f->read_w);
        close(f->fd);
    }
    close(f->lfd);
    ami_parser_deinit(&f->parser);
    free(f);
}

#define OK_LOGIN "Response: Success\r\nActionID: %s\r\nMessage: Authentication accepted\r\n\r\n"

static cworld_t *world_with_fake(fake_t **f, fake_script_fn script, void (*tweak)(ami_server_options_t *))
{
    cworld_t *w = cw_new(&(cw_config_t){.capture_logs = true});
    *f = fake_new(w->loop, script);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", (*f)->port);
    o.heartbeat_interval_ms = 0;
    o.backoff_initial_ms = 5000; /* one attempt per test */
    o.backoff_max_ms = 5000;
    if (tweak)
        tweak(&o);
    cw_add_server(w, &o);
    ami_client_start(w->client);
    return w;
}

/* ---- login ------------------------------------------------------------------------------ */

static void md5(ami_server_options_t *o)
{
    o->auth = AMI_AUTH_MD5;
}

static const char *challenge_without_challenge(const char *action)
{
    return strcmp(action, "Challenge") == 0 ? "Response: Success\r\nActionID: %s\r\n\r\n" : NULL;
}

static void a_challenge_answer_without_a_challenge_is_a_protocol_error(void **state)
{
    (void)state;
    fake_t *f;
    cworld_t *w = world_with_fake(&f, challenge_without_challenge, md5);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_string_equal(w->last_reason, "Challenge answer has no Challenge header");
    assert_true(cw_metric(w, "ami_connect_failures_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "protocol", NULL}) == 1);
    fake_free(f);
    cw_free(w);
}

static const char *challenge_refused(const char *action)
{
    return strcmp(action, "Challenge") == 0
               ? "Response: Error\r\nActionID: %s\r\nMessage: Must specify AuthType\r\n\r\n"
               : NULL;
}

static void a_refused_challenge_is_a_login_failure(void **state)
{
    (void)state;
    fake_t *f;
    cworld_t *w = world_with_fake(&f, challenge_refused, md5);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_non_null(strstr(w->last_reason, "refused: Must specify AuthType"));
    assert_true(cw_metric(w, "ami_login_failures_total", (const char *const[]){"server_key", "pbx1", NULL}) == 1);
    fake_free(f);
    cw_free(w);
}

static const char *never_answers(const char *action)
{
    (void)action;
    return NULL;
}

static void short_login_timeout(ami_server_options_t *o)
{
    o->login_timeout_ms = 150;
}

static void an_unanswered_login_times_out(void **state)
{
    (void)state;
    fake_t *f;
    cworld_t *w = world_with_fake(&f, never_answers, short_login_timeout);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_string_equal(w->last_reason, "pbx1 did not complete login within 150 ms (no login answer)");
    assert_true(cw_metric(w, "ami_connect_failures_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "timeout", NULL}) == 1);
    fake_free(f);
    cw_free(w);
}

static void a_server_without_a_banner_times_out(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.no_banner = true});
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.login_timeout_ms = 150;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_string_equal(w->last_reason, "pbx1 did not complete login within 150 ms (no banner)");
    cw_free(w);
}

/* ---- session settings and the heartbeat's odd answers ------------------------------------ */

static const char *refuses_filters_and_pings(const char *action)
{
    if (strcmp(action, "Login") == 0 || strcmp(action, "Events") == 0)
        return OK_LOGIN;
    if (strcmp(action, "Filter") == 0)
        return "Response: Error\r\nActionID: %s\r\nMessage: Filter Not Allowed\r\n\r\n";
    if (strcmp(action, "Ping") == 0)
        return "Response: Error\r\nActionID: %s\r\nMessage: Ping refused\r\n\r\n";
    return NULL;
}

static void with_settings_and_heartbeat(ami_server_options_t *o)
{
    o->events = "call";
    o->filters[0] = "Event: Hangup";
    o->filters[1] = "!Event: VarSet";
    o->nfilters = 2;
    o->heartbeat_interval_ms = 100;
    o->heartbeat_timeout_ms = 50;
    o->heartbeat_max_failures = 2;
}

static void refused_settings_are_logged_and_error_pongs_fail_the_heartbeat(void **state)
{
    (void)state;
    fake_t *f;
    cworld_t *w = world_with_fake(&f, refuses_filters_and_pings, with_settings_and_heartbeat);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_string_equal(w->last_reason, "Max heartbeat failures");
    assert_int_equal(cw_log_lines(w, (const char *const[]){"level=error", "server refused a session setting",
                                                           "action=Filter", "Filter Not Allowed", NULL}),
                     2);
    assert_int_equal(cw_log_lines(w, (const char *const[]){"heartbeat failed",
                                                           "Ping answered with an error: Ping refused", NULL}),
                     2);
    fake_free(f);
    cw_free(w);
}

/* ---- stopping ------------------------------------------------------------------------------ */

static cworld_t *sim_world(ami_sim_node_t **n, uint32_t max_pending)
{
    cworld_t *w = cw_new(NULL);
    *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(*n));
    o.heartbeat_interval_ms = 0;
    if (max_pending)
        o.max_pending = max_pending;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    return w;
}

static void stop_logs_off_and_fails_what_is_pending(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = sim_world(&n, 0);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.response_delay_ms = 50});
    outcome_t out = {0};
    assert_int_equal(cw_send(w, "pbx1", "CoreStatus", &out, NULL), 0);
    ami_client_stop(w->client, 1000);
    ami_client_stop(w->client, 1000); /* twice is once */
    ami_err_t err;
    assert_int_equal(cw_send(w, "pbx1", "Ping", &out, &err), -1);
    assert_int_equal(err.code, AMI_E_SHUTDOWN);
    cw_expect_state(w, 0, AMI_CONN_STOPPED, 3000);
    assert_string_equal(w->last_reason, "logged off");
    assert_true(ami_client_stopped(w->client));
    assert_int_equal(out.finals, 1);
    /* started again, it connects again */
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_client_start(w->client); /* already running: nothing */
    cw_free(w);
}

static void stop_gives_up_on_an_unanswered_logoff(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = sim_world(&n, 0);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.all_silent = true});
    ami_client_stop(w->client, 100);
    cw_expect_state(w, 0, AMI_CONN_STOPPED, 3000);
    assert_non_null(strstr(w->last_reason, "Logoff"));
    cw_free(w);
}

static void stop_with_every_slot_taken_stops_at_once(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = sim_world(&n, 2);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.all_silent = true});
    outcome_t out[2] = {{0}};
    assert_int_equal(cw_send(w, "pbx1", "Ping", &out[0], NULL), 0);
    assert_int_equal(cw_send(w, "pbx1", "Ping", &out[1], NULL), 0);
    ami_client_stop(w->client, 1000);
    assert_true(cw_in_state(w, 0, AMI_CONN_STOPPED));
    assert_string_equal(w->last_reason, "stopped");
    assert_int_equal(out[0].status, AMI_E_SHUTDOWN);
    cw_free(w);
}

static void a_server_closing_during_logoff_ends_the_stop(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = sim_world(&n, 0);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.all_silent = true});
    ami_client_stop(w->client, 5000);
    assert_true(cw_in_state(w, 0, AMI_CONN_CONNECTED)); /* waiting for Goodbye */
    ami_sim_node_drop_sessions(n);
    cw_expect_state(w, 0, AMI_CONN_STOPPED, 3000);
    assert_int_equal(w->transitions[AMI_CONN_BACKOFF], 0); /* no reconnect while stopping */
    cw_free(w);
}

static void stop_while_not_connected_is_immediate(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", cw_closed_port());
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    ami_client_stop(w->client, 1000);
    assert_true(cw_in_state(w, 0, AMI_CONN_STOPPED));
    ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_DISCONNECTED, "ignored when stopped");
    assert_true(cw_in_state(w, 0, AMI_CONN_STOPPED));
    cw_free(w);
}

/* ---- actions --------------------------------------------------------------------------------- */

static void invalid_actions_are_refused_at_once(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = sim_world(&n, 0);
    ami_err_t err;
    ami_action_req_t noname = {.name = NULL};
    outcome_t out = {0};
    assert_int_equal(ami_client_send(w->client, "pbx1", &noname, cw_capture, &out, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_INVALID);
    ami_action_req_t nocb = {.name = "Ping"};
    assert_int_equal(ami_client_send(w->client, "pbx1", &nocb, NULL, NULL, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_INVALID);
    static ami_kv_t many[AMI_WRITER_MAX_LINES];
    for (int i = 0; i < AMI_WRITER_MAX_LINES; i++)
        many[i] = AMI_KV("Variable", "x=1");
    ami_action_req_t orig = {.name = "Originate", .hdrs = many, .nhdrs = AMI_WRITER_MAX_LINES};
    assert_int_equal(ami_client_send(w->client, "pbx1", &orig, cw_capture, &out, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_non_null(strstr(err.msg, "Originate has 128 headers"));
    ami_kv_t inject[] = {AMI_KV("Channel", "x\r\nAction: Hangup")};
    ami_action_req_t bad = {.name = "Setvar", .hdrs = inject, .nhdrs = 1};
    assert_int_equal(ami_client_send(w->client, "pbx1", &bad, cw_capture, &out, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_int_equal(out.finals, 0);
    assert_int_equal(ami_conn_pending(ami_client_conn(w->client, 0)), 0);
    cw_free(w);
}

static void command_gets_the_command_strategy_and_cancel_silences_an_action(void **state)
{
    (void)state;
    ami_sim_node_t *n;
    cworld_t *w = sim_world(&n, 0);
    ami_kv_t h[] = {AMI_KV("Command", "core show uptime")};
    ami_action_req_t cmd = {.name = "Command", .hdrs = h, .nhdrs = 1};
    outcome_t out = {.probe = "Output"};
    assert_int_equal(ami_client_send(w->client, "pbx1", &cmd, cw_capture, &out, NULL, NULL), 0);
    assert_true(harness_run_until(w->loop, cw_finished, &out, 3000));
    assert_int_equal(out.signal, AMI_PENDING_DONE);
    assert_true(out.probe_value[0] != '\0');
    /* a cancelled action never calls back, even when its answer comes */
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.response_delay_ms = 30});
    outcome_t gone = {0};
    ami_action_handle_t handle;
    ami_action_req_t ping = {.name = "Ping"};
    assert_int_equal(ami_client_send(w->client, "pbx1", &ping, cw_capture, &gone, &handle, NULL), 0);
    assert_true(ami_client_cancel(w->client, handle));
    assert_false(ami_client_cancel(w->client, handle));
    harness_run_for(w->loop, 100);
    assert_int_equal(gone.finals, 0);
    cw_free(w);
}

/* TCP to a multicast address fails inside connect(): the attempt fails at
 * once, with the system's reason, and backs off like any other. */
static void a_connect_failing_on_the_spot_backs_off(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", 5038);
    o.host = "224.0.0.1";
    cw_add_server(w, &o);
    ami_client_start(w->client);
    assert_true(cw_in_state(w, 0, AMI_CONN_BACKOFF));
    assert_non_null(strstr(w->last_reason, "connect to 224.0.0.1:5038 failed"));
    assert_true(cw_metric(w, "ami_connect_failures_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "io", NULL}) == 1);
    cw_free(w);
}

/* An embedder may drive one connection without a client, a metrics
 * registry or a logger. */
typedef struct direct {
    int events;
    int states;
} direct_t;

static void direct_event(void *ud, ami_conn_t *c, const ami_msg_t *msg)
{
    (void)c;
    (void)msg;
    ((direct_t *)ud)->events++;
}

static void direct_state(void *ud, ami_conn_t *c, ami_conn_state_t from, ami_conn_state_t to,
                         const char *reason)
{
    (void)c;
    (void)from;
    (void)to;
    (void)reason;
    ((direct_t *)ud)->states++;
}

static bool direct_up(void *ud)
{
    return ami_conn_state(ud) == AMI_CONN_CONNECTED;
}

static bool direct_got_event(void *ud)
{
    return ((direct_t *)ud)->events > 0;
}

static void a_connection_runs_without_client_metrics_or_log(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_sim_t *sim = ami_sim_new(loop, NULL);
    ami_sim_node_config_t nc = {.name = "pbx1"};
    ami_sim_node_t *n = ami_sim_add_node(sim, &nc, NULL);
    ami_actionid_gen_t ids;
    ami_actionid_init(&ids, 7);
    ami_conn_env_t env = {.loop = loop, .ids = &ids};
    ami_conn_callbacks_t cb = {.on_event = direct_event, .on_state = direct_state};
    direct_t d = {0};
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    ami_err_t err;
    ami_conn_t *c = ami_conn_new(&o, &env, &cb, &d, &err);
    assert_non_null(c);
    assert_string_equal(ami_conn_key(c), "pbx1");
    ami_conn_start(c);
    assert_true(harness_run_until(loop, direct_up, c, 3000));
    static const char ev[] = "Event: Hangup\r\nChannel: x\r\n\r\n";
    ami_sim_node_inject(n, ev, sizeof ev - 1);
    assert_true(harness_run_until(loop, direct_got_event, &d, 3000));
    assert_true(d.states >= 3);
    assert_int_equal(ami_conn_stats(c)->logins, 1);
    assert_true(ami_conn_stats(c)->bytes_out > 0);
    assert_int_equal(ami_conn_backoff_delay(c), 0);
    ami_conn_force_close(c, (ami_status_t)999, "an unknown kind is counted as io");
    assert_int_equal(ami_conn_state(c), AMI_CONN_BACKOFF);
    assert_true(ami_conn_backoff_delay(c) > 0);
    ami_conn_free(c);
    ami_sim_free(sim);
    ev_loop_destroy(loop);
}

/* ---- options --------------------------------------------------------------------------------- */

static void expect_invalid(const ami_server_options_t *o, const char *needle)
{
    ami_err_t err;
    assert_int_equal(ami_server_options_validate(o, &err), -1);
    assert_int_equal(err.code, AMI_E_CONFIG);
    if (!strstr(err.msg, needle))
        fail_msg("\"%s\" does not say \"%s\"", err.msg, needle);
}

static void every_bad_option_is_named(void **state)
{
    (void)state;
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", 5038);
    assert_int_equal(ami_server_options_validate(&o, NULL), 0);
    o.server_key = NULL;
    expect_invalid(&o, "needs a server_key");
    o.server_key = "a-key-that-is-much-longer-than-sixty-three-bytes-which-is-the-limit-here";
    expect_invalid(&o, "longer than 63 bytes");
    cw_fast_options(&o, "pbx1", 5038);
    o.host = "";
    expect_invalid(&o, "host is missing");
    cw_fast_options(&o, "pbx1", 0);
    expect_invalid(&o, "port must be 1..65535");
    cw_fast_options(&o, "pbx1", 5038);
    o.username = NULL;
    expect_invalid(&o, "username is missing");
    cw_fast_options(&o, "pbx1", 5038);
    o.secret = NULL;
    expect_invalid(&o, "secret is missing");
    cw_fast_options(&o, "pbx1", 5038);
    o.backoff_initial_ms = 0;
    expect_invalid(&o, "0 < backoff_initial_ms <= backoff_max_ms");
    cw_fast_options(&o, "pbx1", 5038);
    o.nfilters = AMI_MAX_FILTERS + 1;
    expect_invalid(&o, "at most 32 filters");
    /* parser limits that cannot work are refused when the connection is made */
    cworld_t *w = cw_new(NULL);
    cw_fast_options(&o, "pbx1", 5038);
    o.parser.max_line = 4096;
    o.parser.max_message = 1024;
    ami_err_t err;
    assert_int_equal(ami_client_add_server(w->client, &o, &err), -1);
    assert_non_null(strstr(err.msg, "invalid parser limits"));
    cw_free(w);
    /* a connection needs a loop and an ActionID generator */
    cw_fast_options(&o, "pbx1", 5038);
    ami_conn_env_t env = {0};
    assert_null(ami_conn_new(&o, &env, NULL, NULL, &err));
    assert_int_equal(err.code, AMI_E_INVALID);
    ami_conn_free(NULL);
    assert_string_equal(ami_conn_state_name(AMI_CONN_STATE_COUNT), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_challenge_answer_without_a_challenge_is_a_protocol_error),
        cmocka_unit_test(a_refused_challenge_is_a_login_failure),
        cmocka_unit_test(an_unanswered_login_times_out),
        cmocka_unit_test(a_server_without_a_banner_times_out),
        cmocka_unit_test(refused_settings_are_logged_and_error_pongs_fail_the_heartbeat),
        cmocka_unit_test(stop_logs_off_and_fails_what_is_pending),
        cmocka_unit_test(stop_gives_up_on_an_unanswered_logoff),
        cmocka_unit_test(stop_with_every_slot_taken_stops_at_once),
        cmocka_unit_test(a_server_closing_during_logoff_ends_the_stop),
        cmocka_unit_test(stop_while_not_connected_is_immediate),
        cmocka_unit_test(invalid_actions_are_refused_at_once),
        cmocka_unit_test(command_gets_the_command_strategy_and_cancel_silences_an_action),
        cmocka_unit_test(a_connect_failing_on_the_spot_backs_off),
        cmocka_unit_test(a_connection_runs_without_client_metrics_or_log),
        cmocka_unit_test(every_bad_option_is_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
