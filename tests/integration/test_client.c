/* The C client against the simulated Asterisk over real TCP on 127.0.0.1:
 * endpoints and name resolution, login, actions, session settings, routing
 * policies, driving the loop with poll and tick, fairness between servers.
 * Heartbeat, reconnects and hostile servers have their own files. Every
 * test bounds its own time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_world.h"
#include "cluster/client.h"
#include "harness.h"
#include "sim/sim.h"
#include "util/alloc.h"

/* ---- proof that no resolver runs on the loop: this definition replaces libc's ---- */

static atomic_int resolver_calls;
static atomic_int resolver_calls_on_main_thread;
static pthread_t main_thread;

/* "pbx.test.invalid" resolves to 127.0.0.1, anything else fails. One block,
 * so libc's freeaddrinfo can free it. Must run on the resolver thread: the
 * tests run the loop on the main thread, so a call there is a blocking
 * lookup on the loop. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    (void)service;
    (void)hints;
    resolver_calls++;
    if (pthread_equal(pthread_self(), main_thread))
        resolver_calls_on_main_thread++;
    if (!node || strcmp(node, "pbx.test.invalid") != 0)
        return EAI_NONAME;
    struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in));
    struct sockaddr_in *sin = (struct sockaddr_in *)(ai + 1);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ai->ai_family = AF_INET;
    ai->ai_socktype = SOCK_STREAM;
    ai->ai_addr = (struct sockaddr *)sin;
    ai->ai_addrlen = sizeof *sin;
    *res = ai;
    return 0;
}

/* ---- endpoints ------------------------------------------------------------------------------- */

static void hostname_is_refused_without_a_lookup_when_enforced(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", 5038);
    o.host = "pbx1.example.com";
    ami_err_t err;
    resolver_calls = 0;
    assert_int_equal(ami_client_add_server(w->client, &o, &err), -1);
    assert_int_equal(err.code, AMI_E_CONFIG);
    assert_non_null(strstr(err.msg, "not an IP address"));
    assert_non_null(strstr(err.msg, "enforce_ip_endpoints"));
    assert_int_equal(resolver_calls, 0);
    cw_free(w);
}

static void ip_literal_is_accepted_and_logs_in(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    cw_add_server(w, &o);
    resolver_calls = 0;
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(resolver_calls, 0);
    outcome_t out = {0};
    assert_int_equal(cw_send(w, "pbx1", "Ping", &out, NULL), 0);
    assert_true(harness_run_until(w->loop, cw_finished, &out, 2000));
    assert_int_equal(out.signal, AMI_PENDING_DONE);
    cw_free(w);
}

static void hostname_resolves_off_the_loop_when_enforcement_is_off(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.host = "pbx.test.invalid";
    o.enforce_ip_endpoints = false;
    cw_add_server(w, &o);
    resolver_calls = resolver_calls_on_main_thread = 0;
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(resolver_calls, 1); /* handed back through ev_async */
    assert_int_equal(resolver_calls_on_main_thread, 0);
    cw_free(w);
}

static void unresolvable_hostname_backs_off_with_a_clear_error(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", 5038);
    o.host = "nowhere.test.invalid";
    o.enforce_ip_endpoints = false;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_non_null(strstr(w->last_reason, "cannot resolve host \"nowhere.test.invalid\""));
    cw_free(w);
}

static void ipv6_literal_is_accepted(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    bool have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a, sizeof a) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6) {
        print_message("SKIPPED ipv6_literal_is_accepted: this machine has no ::1 to listen on\n");
        skip();
    }
    cworld_t *w = cw_new(NULL);
    ami_sim_node_config_t nc = {.name = "v6", .bind_ip = "::1"};
    ami_sim_node_t *n = ami_sim_add_node(w->sim, &nc, NULL);
    assert_non_null(n);
    ami_server_options_t o;
    cw_fast_options(&o, "v6", ami_sim_node_port(n));
    o.host = "::1";
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    cw_free(w);
}

static void md5_login_works(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.auth = AMI_AUTH_MD5;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 1);
    cw_free(w);
}

/* ---- actions -------------------------------------------------------------------------------------- */

static void actions_fail_at_once_for_unknown_and_disconnected_servers(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", cw_closed_port());
    cw_add_server(w, &o);
    ami_client_start(w->client);
    outcome_t out = {0};
    ami_err_t err;
    assert_int_equal(cw_send(w, "nope", "Ping", &out, &err), -1);
    assert_int_equal(err.code, AMI_E_UNKNOWN_SERVER);
    assert_non_null(strstr(err.msg, "known: pbx1"));
    assert_int_equal(cw_send(w, "pbx1", "Ping", &out, &err), -1);
    assert_int_equal(err.code, AMI_E_NOT_CONNECTED);
    assert_int_equal(cw_send(w, NULL, "Ping", &out, &err), -1);
    assert_int_equal(err.code, AMI_E_NOT_CONNECTED);
    assert_int_equal(out.finals, 0);
    assert_true(cw_metric(w, "ami_actions_failed_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "not_connected", NULL}) == 1);
    cw_free(w);
}

static void originate_is_sent_async_and_completes_on_originate_response(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_kv_t h[] = {AMI_KV("Channel", "Local/100@test"), AMI_KV("Application", "Wait"),
                    AMI_KV("Data", "1"), AMI_KV("Async", "false")};
    ami_action_req_t req = {.name = "Originate", .hdrs = h, .nhdrs = 4};
    outcome_t out = {0};
    assert_int_equal(ami_client_send(w->client, "pbx1", &req, cw_capture, &out, NULL, NULL), 0);
    assert_true(harness_run_until(w->loop, cw_finished, &out, 5000));
    assert_int_equal(out.signal, AMI_PENDING_DONE);
    assert_string_equal(out.name, "OriginateResponse");
    cw_free(w);
}

static void write_buffer_high_water_mark_refuses_with_backpressure(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.write_hwm = 4096;
    o.max_pending = 30000; /* the kernel's socket buffers take megabytes first */
    o.heartbeat_interval_ms = 0;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_sim_faults_t stall = {.stall_reads = true};
    ami_sim_node_set_faults(n, &stall);
    harness_run_for(w->loop, 20);
    char big[900];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ami_kv_t h[] = {ami_kv("Data", big)};
    static outcome_t outs[20000];
    ami_err_t err = {0};
    int sent = 0;
    for (; sent < 20000; sent++) {
        ami_action_req_t req = {.name = "UserEvent", .hdrs = h, .nhdrs = 1};
        if (ami_client_send(w->client, "pbx1", &req, cw_capture, &outs[sent], NULL, &err) < 0)
            break;
        if (sent % 4 == 3)
            ami_client_poll(w->client); /* let the socket take what it can */
    }
    assert_true(sent < 20000);
    assert_int_equal(err.code, AMI_E_BACKPRESSURE);
    assert_true(cw_metric(w, "ami_actions_failed_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "backpressure", NULL}) >= 1);
    cw_free(w);
}

/* ---- session settings ------------------------------------------------------------------------- */

typedef struct user_events {
    int per_server[2];
} user_events_t;

static void count_user_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)msg;
    user_events_t *u = ud;
    u->per_server[strcmp(server_key, "quiet") == 0 ? 0 : 1]++;
}

static bool control_got(void *ud)
{
    return ((user_events_t *)ud)->per_server[1] >= 1;
}

/* Events off lives in Asterisk's session: lost on reconnect unless re-sent. */
static void session_events_setting_is_reapplied_after_every_reconnect(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t quiet, control;
    cw_fast_options(&quiet, "quiet", ami_sim_node_port(n));
    cw_fast_options(&control, "control", ami_sim_node_port(n));
    quiet.events = "off";
    cw_add_server(w, &quiet);
    cw_add_server(w, &control);
    user_events_t u = {{0, 0}};
    assert_non_null(ami_client_subscribe(w->client, "UserEvent", count_user_event, &u, NULL));
    ami_client_start(w->client);
    for (int round = 0; round < 3; round++) {
        cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
        cw_expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
        harness_run_for(w->loop, 50); /* the Events action is answered */
        u.per_server[1] = 0;
        static const char raw[] = "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Probe\r\n\r\n";
        ami_sim_node_inject(n, raw, sizeof raw - 1);
        assert_true(harness_run_until(w->loop, control_got, &u, 2000));
        harness_run_for(w->loop, 30);
        assert_int_equal(u.per_server[0], 0); /* the quiet session still has events off */
        ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_DISCONNECTED, "test reconnect");
    }
    cw_free(w);
}

/* ---- fairness -------------------------------------------------------------------------------------- */

typedef struct pinger {
    cworld_t *w;
    int done;
    int failed;
    outcome_t out[200];
} pinger_t;

static void count_ping(void *ud, const ami_pending_note_t *n)
{
    pinger_t *p = ud;
    if (n->signal == AMI_PENDING_DONE)
        p->done++;
    else if (n->signal == AMI_PENDING_FAILED)
        p->failed++;
}

static bool pings_over(void *ud)
{
    pinger_t *p = ud;
    return p->done + p->failed >= 200;
}

static void event_flood_on_one_server_does_not_starve_another(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *a = cw_add_node(w, "flood");
    ami_sim_node_t *b = cw_add_node(w, "quiet");
    ami_server_options_t oa, ob;
    cw_fast_options(&oa, "flood", ami_sim_node_port(a));
    cw_fast_options(&ob, "quiet", ami_sim_node_port(b));
    oa.heartbeat_interval_ms = ob.heartbeat_interval_ms = 0;
    ob.action_timeout_ms = 1000;
    cw_add_server(w, &oa);
    cw_add_server(w, &ob);
    ami_client_start(w->client);
    cw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    cw_expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
    ami_sim_faults_t flood = {.flood_events_per_sec = -1};
    ami_sim_node_set_faults(a, &flood);
    harness_run_for(w->loop, 100);
    pinger_t p = {.w = w};
    for (int i = 0; i < 200; i++) {
        ami_action_req_t req = {.name = "Ping"};
        assert_int_equal(ami_client_send(w->client, "quiet", &req, count_ping, &p, NULL, NULL), 0);
        if (i % 20 == 19)
            harness_run_for(w->loop, 5);
    }
    assert_true(harness_run_until(w->loop, pings_over, &p, 10000));
    assert_int_equal(p.failed, 0);
    assert_int_equal(p.done, 200);
    ami_server_info_t info;
    ami_client_server_info(w->client, 0, &info);
    assert_true(info.stats->events > 1000); /* the flood really flowed meanwhile */
    cw_free(w);
}

/* ---- routing policies ------------------------------------------------------------------------- */

static cworld_t *three_servers(ami_route_policy_t route, ami_sim_node_t *nodes[3])
{
    cworld_t *w = cw_new(&(cw_config_t){.route = route});
    static const char *const keys[] = {"pbx1", "pbx2", "pbx3"};
    for (int i = 0; i < 3; i++) {
        nodes[i] = cw_add_node(w, keys[i]);
        ami_server_options_t o;
        cw_fast_options(&o, keys[i], ami_sim_node_port(nodes[i]));
        o.heartbeat_interval_ms = 0;
        o.backoff_initial_ms = 5000; /* a stopped node stays out of the test */
        o.backoff_max_ms = 5000;
        cw_add_server(w, &o);
    }
    ami_client_start(w->client);
    for (size_t i = 0; i < 3; i++)
        cw_expect_state(w, i, AMI_CONN_CONNECTED, 3000);
    return w;
}

/* Send n actions with no server named; the servers chosen, in order. */
static void route_n(cworld_t *w, int n, uint32_t *chosen, outcome_t *outs)
{
    for (int i = 0; i < n; i++) {
        ami_action_req_t req = {.name = "Ping"};
        ami_action_handle_t h;
        ami_err_t err;
        if (ami_client_send(w->client, NULL, &req, cw_capture, &outs[i], &h, &err) < 0)
            fail_msg("routed send %d: %s", i, err.msg);
        chosen[i] = h.server;
    }
}

static void first_healthy_sends_to_the_first_connected_server(void **state)
{
    (void)state;
    ami_sim_node_t *nodes[3];
    cworld_t *w = three_servers(AMI_ROUTE_FIRST_HEALTHY, nodes);
    uint32_t chosen[6];
    outcome_t outs[6] = {{0}};
    route_n(w, 3, chosen, outs);
    for (int i = 0; i < 3; i++)
        assert_int_equal(chosen[i], 0);
    ami_sim_node_stop(nodes[0]);
    cw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    route_n(w, 3, chosen + 3, outs + 3);
    for (int i = 3; i < 6; i++)
        assert_int_equal(chosen[i], 1);
    cw_free(w);
}

static void round_robin_takes_connected_servers_in_turn(void **state)
{
    (void)state;
    ami_sim_node_t *nodes[3];
    cworld_t *w = three_servers(AMI_ROUTE_ROUND_ROBIN, nodes);
    uint32_t chosen[10];
    outcome_t outs[10] = {{0}};
    route_n(w, 6, chosen, outs);
    for (int i = 0; i < 6; i++)
        assert_int_equal(chosen[i], (uint32_t)(i % 3));
    /* a server that is down is skipped, the turn goes on */
    ami_sim_node_stop(nodes[1]);
    cw_expect_state(w, 1, AMI_CONN_BACKOFF, 3000);
    route_n(w, 4, chosen + 6, outs + 6);
    assert_int_equal(chosen[6], 0);
    assert_int_equal(chosen[7], 2);
    assert_int_equal(chosen[8], 0);
    assert_int_equal(chosen[9], 2);
    cw_free(w);
}

static void least_pending_picks_the_server_with_fewest_waiting(void **state)
{
    (void)state;
    ami_sim_node_t *nodes[3];
    cworld_t *w = three_servers(AMI_ROUTE_LEAST_PENDING, nodes);
    /* pbx1 holds its answers; two actions wait there, one on pbx2 */
    ami_sim_node_set_faults(nodes[0], &(ami_sim_faults_t){.all_silent = true});
    ami_sim_node_set_faults(nodes[1], &(ami_sim_faults_t){.all_silent = true});
    outcome_t held[3] = {{0}};
    assert_int_equal(cw_send(w, "pbx1", "Ping", &held[0], NULL), 0);
    assert_int_equal(cw_send(w, "pbx1", "Ping", &held[1], NULL), 0);
    assert_int_equal(cw_send(w, "pbx2", "Ping", &held[2], NULL), 0);
    uint32_t chosen[3];
    outcome_t outs[3] = {{0}};
    route_n(w, 1, chosen, outs);
    assert_int_equal(chosen[0], 2); /* pbx3: none waiting */
    ami_sim_node_set_faults(nodes[2], &(ami_sim_faults_t){.all_silent = true});
    route_n(w, 2, chosen + 1, outs + 1);
    /* now pbx2 and pbx3 both have one waiting: the first in order wins, then pbx3 */
    assert_int_equal(chosen[1], 1);
    assert_int_equal(chosen[2], 2);
    cw_free(w);
}

static void client_and_policy_names(void **state)
{
    (void)state;
    assert_int_equal(ami_route_policy_parse("first_healthy"), AMI_ROUTE_FIRST_HEALTHY);
    assert_int_equal(ami_route_policy_parse("round_robin"), AMI_ROUTE_ROUND_ROBIN);
    assert_int_equal(ami_route_policy_parse("least_pending"), AMI_ROUTE_LEAST_PENDING);
    assert_int_equal(ami_route_policy_parse("random"), -1);
    assert_int_equal(ami_route_policy_parse(NULL), -1);
    assert_string_equal(ami_route_policy_name(AMI_ROUTE_LEAST_PENDING), "least_pending");
    assert_string_equal(ami_route_policy_name((ami_route_policy_t)7), "unknown");
    /* a client with its own loop and metrics, introspected without servers */
    ami_client_t *c = ami_client_new(NULL, NULL);
    assert_non_null(c);
    assert_non_null(ami_client_loop(c));
    assert_non_null(ami_client_metrics(c));
    assert_null(ami_client_logger(c));
    assert_int_equal(ami_client_server_count(c), 0);
    assert_null(ami_client_server_key(c, 0));
    assert_null(ami_client_conn(c, 0));
    ami_server_info_t info;
    assert_int_equal(ami_client_server_info(c, 0, &info), -1);
    assert_true(ami_client_stopped(c));
    assert_false(ami_client_cancel(c, (ami_action_handle_t){.server = 3, .id = 1}));
    ami_client_free(c);
}

/* ---- driving the loop: poll and tick, each guarded by alarm() ------------------------------------ */

static void hung(int sig)
{
    (void)sig;
    static const char msg[] = "a loop call blocked past its alarm(): it must not\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void guard(unsigned seconds)
{
    struct sigaction sa = {.sa_handler = hung};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
}

static void nothing(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
}

/* A client whose loop has a watcher that keeps it waiting for a minute. */
static ami_client_t *client_with_a_distant_timer(ev_timer *t)
{
    ami_client_t *c = ami_client_new(NULL, NULL);
    ev_timer_init(t, nothing, 60., 0.);
    ev_timer_start(ami_client_loop(c), t);
    return c;
}

static void poll_never_blocks(void **state)
{
    (void)state;
    ev_timer distant;
    ami_client_t *c = client_with_a_distant_timer(&distant);
    guard(5);
    for (int i = 0; i < 100; i++)
        ami_client_poll(c);
    alarm(0);
    ev_timer_stop(ami_client_loop(c), &distant);
    ami_client_free(c);
}

static void tick_blocks_up_to_its_timeout_and_no_longer(void **state)
{
    (void)state;
    ev_timer distant;
    ami_client_t *c = client_with_a_distant_timer(&distant);
    struct ev_loop *loop = ami_client_loop(c);
    guard(10);
    for (int i = 0; i < 3; i++) {
        ev_now_update(loop);
        double before = ev_now(loop);
        ami_client_tick(c, 300);
        ev_now_update(loop);
        double waited = ev_now(loop) - before;
        /* it waited (nothing else could wake it) ... */
        assert_true(waited >= 0.29);
    }
    /* ... and no longer than its timeout: the alarm did not go off */
    alarm(0);
    ev_timer_stop(loop, &distant);
    ami_client_free(c);
}

static void tick_returns_when_io_arrives(void **state)
{
    (void)state;
    cworld_t *w = cw_new(NULL);
    ami_sim_node_t *n = cw_add_node(w, "pbx1");
    ami_server_options_t o;
    cw_fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.heartbeat_interval_ms = 0;
    cw_add_server(w, &o);
    ami_client_start(w->client);
    guard(20);
    /* each tick may wait 60 s but returns as soon as the exchange moves on */
    for (int i = 0; i < 200 && !cw_in_state(w, 0, AMI_CONN_CONNECTED); i++)
        ami_client_tick(w->client, 60000);
    alarm(0);
    assert_true(cw_in_state(w, 0, AMI_CONN_CONNECTED));
    cw_free(w);
}

int main(void)
{
    main_thread = pthread_self();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hostname_is_refused_without_a_lookup_when_enforced),
        cmocka_unit_test(ip_literal_is_accepted_and_logs_in),
        cmocka_unit_test(ipv6_literal_is_accepted),
        cmocka_unit_test(hostname_resolves_off_the_loop_when_enforcement_is_off),
        cmocka_unit_test(unresolvable_hostname_backs_off_with_a_clear_error),
        cmocka_unit_test(session_events_setting_is_reapplied_after_every_reconnect),
        cmocka_unit_test(md5_login_works),
        cmocka_unit_test(actions_fail_at_once_for_unknown_and_disconnected_servers),
        cmocka_unit_test(originate_is_sent_async_and_completes_on_originate_response),
        cmocka_unit_test(write_buffer_high_water_mark_refuses_with_backpressure),
        cmocka_unit_test(event_flood_on_one_server_does_not_starve_another),
        cmocka_unit_test(first_healthy_sends_to_the_first_connected_server),
        cmocka_unit_test(round_robin_takes_connected_servers_in_turn),
        cmocka_unit_test(least_pending_picks_the_server_with_fewest_waiting),
        cmocka_unit_test(poll_never_blocks),
        cmocka_unit_test(tick_blocks_up_to_its_timeout_and_no_longer),
        cmocka_unit_test(tick_returns_when_io_arrives),
        cmocka_unit_test(client_and_policy_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
