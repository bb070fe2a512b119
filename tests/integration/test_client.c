/* The C client against the simulated Asterisk over real TCP on 127.0.0.1:
 * endpoints, login, heartbeat, reconnect and backoff, fairness between
 * servers, memory stability. Every test bounds its own time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdatomic.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/client.h"
#include "harness.h"
#include "proc.h"
#include "sim/sim.h"
#include "util/alloc.h"

/* ---- proof that no resolver runs: this definition replaces libc's ------------- */

static atomic_int resolver_calls;

/* "pbx.test.invalid" resolves to 127.0.0.1, anything else fails. One block,
 * so libc's freeaddrinfo can free it. Runs on the resolver thread. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    (void)service;
    (void)hints;
    resolver_calls++;
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

/* ---- world -------------------------------------------------------------------------- */

typedef struct world {
    struct ev_loop *loop;
    ami_sim_t *sim;
    ami_client_t *client;
    ami_metrics_t *metrics;
    int transitions[AMI_CONN_STATE_COUNT];
    uint32_t backoffs[64];
    size_t nbackoffs;
    char last_reason[AMI_ERR_MSG_MAX];
} world_t;

static void on_state(void *ud, const char *key, ami_conn_state_t from, ami_conn_state_t to,
                     const char *reason)
{
    (void)from;
    world_t *w = ud;
    w->transitions[to]++;
    if (reason)
        snprintf(w->last_reason, sizeof w->last_reason, "%s", reason);
    if (to == AMI_CONN_BACKOFF && w->nbackoffs < 64) {
        int i = ami_client_server_index(w->client, key);
        w->backoffs[w->nbackoffs++] = ami_conn_backoff_delay(ami_client_conn(w->client, (size_t)i));
    }
}

/* closed_port(): connections there are refused until world_free (a bound
 * socket that never listens, so no test running in parallel can take it). */
static int refusing_fd = -1;

static world_t *world_new(void)
{
    world_t *w = calloc(1, sizeof *w);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->sim = ami_sim_new(w->loop, NULL);
    w->metrics = ami_metrics_new(5000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = w->loop;
    cc.metrics = w->metrics;
    cc.seed = 42;
    w->client = ami_client_new(&cc, NULL);
    ami_client_on_state(w->client, on_state, w);
    return w;
}

static void world_free(world_t *w)
{
    ami_client_free(w->client);
    ami_sim_free(w->sim);
    ami_metrics_free(w->metrics);
    ev_loop_destroy(w->loop);
    free(w);
    if (refusing_fd >= 0)
        close(refusing_fd);
    refusing_fd = -1;
}

static ami_sim_node_t *add_node(world_t *w, const char *name)
{
    ami_sim_node_config_t nc = {.name = name};
    ami_err_t err;
    ami_sim_node_t *n = ami_sim_add_node(w->sim, &nc, &err);
    if (!n)
        fail_msg("sim node: %s", err.msg);
    return n;
}

static void fast_options(ami_server_options_t *o, const char *key, uint16_t port)
{
    ami_server_options_default(o);
    o->server_key = key;
    o->host = "127.0.0.1";
    o->port = port;
    o->username = "engine";
    o->secret = "s3cret";
    o->heartbeat_interval_ms = 100;
    o->heartbeat_timeout_ms = 100;
    o->heartbeat_max_failures = 2;
    o->backoff_initial_ms = 20;
    o->backoff_max_ms = 200;
    o->connect_timeout_ms = 500;
    o->login_timeout_ms = 1000;
    o->action_timeout_ms = 2000;
}

static void add_server(world_t *w, ami_server_options_t *o)
{
    ami_err_t err;
    if (ami_client_add_server(w->client, o, &err) < 0)
        fail_msg("add_server: %s", err.msg);
}

typedef struct wait_state {
    world_t *w;
    size_t server;
    ami_conn_state_t state;
} wait_state_t;

static bool in_state(void *ud)
{
    wait_state_t *s = ud;
    return ami_conn_state(ami_client_conn(s->w->client, s->server)) == s->state;
}

static void expect_state(world_t *w, size_t server, ami_conn_state_t state, uint32_t ms)
{
    wait_state_t s = {w, server, state};
    if (!harness_run_until(w->loop, in_state, &s, ms))
        fail_msg("server %zu not %s within %u ms (is %s; last reason: %s)", server,
                 ami_conn_state_name(state), ms,
                 ami_conn_state_name(ami_conn_state(ami_client_conn(w->client, server))), w->last_reason);
}

static double metric(world_t *w, const char *name, const char *const *labels)
{
    double v = 0;
    ami_metrics_value(w->metrics, name, labels, &v);
    return v;
}

/* An action result captured for assertions. */
typedef struct outcome {
    int finals;
    ami_pending_signal_t signal;
    ami_status_t status;
    char reason[AMI_ERR_MSG_MAX];
    char name[64];
} outcome_t;

static void capture(void *ud, const ami_pending_note_t *n)
{
    outcome_t *o = ud;
    if (n->signal != AMI_PENDING_DONE && n->signal != AMI_PENDING_FAILED)
        return;
    o->finals++;
    o->signal = n->signal;
    o->status = n->status;
    snprintf(o->reason, sizeof o->reason, "%s", n->reason ? n->reason : "");
    snprintf(o->name, sizeof o->name, "%s", n->msg ? ami_msg_name(n->msg) : "");
}

static bool finished(void *ud)
{
    return ((outcome_t *)ud)->finals > 0;
}

static int send_simple(world_t *w, const char *server, const char *action, outcome_t *o, ami_err_t *err)
{
    ami_action_req_t req = {.name = action};
    return ami_client_send(w->client, server, &req, capture, o, NULL, err);
}

/* ---- endpoints ------------------------------------------------------------------------------- */

static void hostname_is_refused_without_a_lookup_when_enforced(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_server_options_t o;
    fast_options(&o, "pbx1", 5038);
    o.host = "pbx1.example.com";
    ami_err_t err;
    resolver_calls = 0;
    assert_int_equal(ami_client_add_server(w->client, &o, &err), -1);
    assert_int_equal(err.code, AMI_E_CONFIG);
    assert_non_null(strstr(err.msg, "not an IP address"));
    assert_non_null(strstr(err.msg, "enforce_ip_endpoints"));
    assert_int_equal(resolver_calls, 0);
    world_free(w);
}

static void ip_literal_is_accepted_and_logs_in(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    add_server(w, &o);
    resolver_calls = 0;
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(resolver_calls, 0);
    outcome_t out = {0};
    assert_int_equal(send_simple(w, "pbx1", "Ping", &out, NULL), 0);
    assert_true(harness_run_until(w->loop, finished, &out, 2000));
    assert_int_equal(out.signal, AMI_PENDING_DONE);
    world_free(w);
}

static void hostname_resolves_off_the_loop_when_enforcement_is_off(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.host = "pbx.test.invalid";
    o.enforce_ip_endpoints = false;
    add_server(w, &o);
    resolver_calls = 0;
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(resolver_calls, 1); /* on the resolver thread, handed back through ev_async */
    world_free(w);
}

static void unresolvable_hostname_backs_off_with_a_clear_error(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_server_options_t o;
    fast_options(&o, "pbx1", 5038);
    o.host = "nowhere.test.invalid";
    o.enforce_ip_endpoints = false;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_non_null(strstr(w->last_reason, "cannot resolve host \"nowhere.test.invalid\""));
    world_free(w);
}

static void ipv6_literal_is_accepted(void **state)
{
    (void)state;
    if (!ipv6_loopback_available()) {
        print_message(IPV6_SKIP_MESSAGE);
        skip();
    }
    world_t *w = world_new();
    ami_sim_node_config_t nc = {.name = "v6", .bind_ip = "::1"};
    ami_sim_node_t *n = ami_sim_add_node(w->sim, &nc, NULL);
    assert_non_null(n);
    ami_server_options_t o;
    fast_options(&o, "v6", ami_sim_node_port(n));
    o.host = "::1";
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    world_free(w);
}

/* ---- failures and backoff ---------------------------------------------------------------------- */

static uint16_t closed_port(void)
{
    uint16_t port = 0;
    if (refusing_fd < 0)
        refusing_fd = refusing_port(&port);
    if (refusing_fd < 0)
        fail_msg("no refusing port: %s", strerror(errno));
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(refusing_fd, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static void connection_refused_backs_off_with_growing_jittered_delays(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_server_options_t o;
    fast_options(&o, "pbx1", closed_port());
    o.backoff_initial_ms = 10;
    o.backoff_max_ms = 160;
    add_server(w, &o);
    ami_client_start(w->client);
    harness_run_for(w->loop, 1500);
    assert_true(w->nbackoffs >= 6);
    assert_non_null(strstr(w->last_reason, "refused"));
    /* Attempt n waits within [initial, min(max, initial * 2^n)]. */
    bool grew = false, varied = false;
    for (size_t i = 0; i < w->nbackoffs; i++) {
        uint32_t ceiling = 10u << (i < 5 ? i : 5);
        if (ceiling > 160)
            ceiling = 160;
        assert_in_range(w->backoffs[i], 10, ceiling);
        if (i > 2 && w->backoffs[i] > 40)
            grew = true;
        if (i > 0 && w->backoffs[i] != w->backoffs[i - 1])
            varied = true;
    }
    assert_true(grew);
    assert_true(varied);
    assert_true(metric(w, "ami_reconnects_total", (const char *const[]){"server_key", "pbx1", NULL}) >= 5);
    assert_true(metric(w, "ami_connection_state",
                       (const char *const[]){"server_key", "pbx1", "state", "backoff", NULL}) +
                metric(w, "ami_connection_state",
                       (const char *const[]){"server_key", "pbx1", "state", "connecting", NULL}) == 1);
    world_free(w);
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
    world_t *w = world_new();
    ami_server_options_t o;
    fast_options(&o, "pbx1", port);
    o.connect_timeout_ms = 150;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_non_null(strstr(w->last_reason, "timed out"));
    assert_true(metric(w, "ami_disconnects_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "timeout", NULL}) >= 1);
    world_free(w);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

static double login_failures(world_t *w)
{
    return metric(w, "ami_login_failures_total", (const char *const[]){"server_key", "pbx1", NULL});
}

static bool three_login_failures(void *ud)
{
    return login_failures(ud) >= 3;
}

static void login_failure_is_clear_and_retries_follow_backoff(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_sim_faults_t f = {.reject_login = true, .login_delay_ms = 1};
    ami_sim_node_set_faults(n, &f);
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.backoff_initial_ms = 50;
    o.backoff_max_ms = 400;
    add_server(w, &o);
    ev_now_update(w->loop);
    double t0 = ev_now(w->loop);
    ami_client_start(w->client);
    assert_true(harness_run_until(w->loop, three_login_failures, w, 10000));
    ami_server_info_t info;
    ami_client_server_info(w->client, 0, &info);
    assert_non_null(strstr(info.last_error, "refused"));
    assert_non_null(strstr(info.last_error, "pbx1"));
    assert_non_null(strstr(info.last_error, "username and secret"));
    /* Not hammering, in loop time (a slow machine only makes fewer attempts):
     * every retry waits at least backoff_initial_ms (50 ms) first. */
    double failures = login_failures(w);
    double elapsed = ev_now(w->loop) - t0;
    assert_true(failures <= 1 + elapsed / 0.050);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
    /* The server accepts again: the next attempt logs in. */
    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(n, &none);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    world_free(w);
}

static void md5_login_works(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.auth = AMI_AUTH_MD5;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 1);
    world_free(w);
}

/* ---- heartbeat (the seed's 3.1 verification) ------------------------------------------------------- */

static void unresponsive_server_is_force_closed_and_reconnected(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.action_timeout_ms = 60000; /* the pending action must fail by the heartbeat, not by its timeout */
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);

    ami_sim_faults_t silent = {.all_silent = true};
    ami_sim_node_set_faults(n, &silent);
    outcome_t pending[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(send_simple(w, "pbx1", "CoreStatus", &pending[i], NULL), 0);
    int connected_before = w->transitions[AMI_CONN_CONNECTED];
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    assert_string_equal(w->last_reason, "Max heartbeat failures");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pending[i].finals, 1);
        assert_int_equal(pending[i].status, AMI_E_HEARTBEAT);
        assert_string_equal(pending[i].reason, "Max heartbeat failures");
    }
    assert_true(metric(w, "ami_heartbeat_failures_total", (const char *const[]){"server_key", "pbx1", NULL}) >= 2);
    assert_true(metric(w, "ami_disconnects_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "heartbeat", NULL}) == 1);

    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(n, &none);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(w->transitions[AMI_CONN_CONNECTED], connected_before + 1);
    harness_run_for(w->loop, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pending[i].finals, 1); /* still exactly once */
    world_free(w);
}

static void cut_one_response(world_t *w, ami_sim_node_t *n)
{
    ami_sim_faults_t cut = {.close_mid_response = true};
    ami_sim_node_set_faults(n, &cut);
    outcome_t out = {0};
    assert_int_equal(send_simple(w, "pbx1", "CoreShowChannels", &out, NULL), 0);
    assert_true(harness_run_until(w->loop, finished, &out, 3000));
    assert_int_equal(out.signal, AMI_PENDING_FAILED);
    assert_int_equal(out.status, AMI_E_DISCONNECTED);
    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(n, &none);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    harness_run_for(w->loop, 50);
    assert_int_equal(out.finals, 1); /* exactly once, also after the reconnect */
}

static void server_closing_mid_response_fails_pending_once_and_reconnects(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    cut_one_response(w, n);
    int64_t after_first = ami_alloc_live_bytes();
    cut_one_response(w, n);
    /* Nothing kept from a broken session: the second cut leaves memory where the first did. */
    assert_int_equal(ami_alloc_live_bytes(), after_first);
    world_free(w);
}

/* ---- actions -------------------------------------------------------------------------------------- */

static void actions_fail_at_once_for_unknown_and_disconnected_servers(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_server_options_t o;
    fast_options(&o, "pbx1", closed_port());
    add_server(w, &o);
    ami_client_start(w->client);
    outcome_t out = {0};
    ami_err_t err;
    assert_int_equal(send_simple(w, "nope", "Ping", &out, &err), -1);
    assert_int_equal(err.code, AMI_E_UNKNOWN_SERVER);
    assert_non_null(strstr(err.msg, "known: pbx1"));
    assert_int_equal(send_simple(w, "pbx1", "Ping", &out, &err), -1);
    assert_int_equal(err.code, AMI_E_NOT_CONNECTED);
    assert_int_equal(send_simple(w, NULL, "Ping", &out, &err), -1);
    assert_int_equal(err.code, AMI_E_NOT_CONNECTED);
    assert_int_equal(out.finals, 0);
    assert_true(metric(w, "ami_actions_failed_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "not_connected", NULL}) == 1);
    world_free(w);
}

static void originate_is_sent_async_and_completes_on_originate_response(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_kv_t h[] = {AMI_KV("Channel", "Local/100@test"), AMI_KV("Application", "Wait"),
                    AMI_KV("Data", "1"), AMI_KV("Async", "false")};
    ami_action_req_t req = {.name = "Originate", .hdrs = h, .nhdrs = 4};
    outcome_t out = {0};
    assert_int_equal(ami_client_send(w->client, "pbx1", &req, capture, &out, NULL, NULL), 0);
    assert_true(harness_run_until(w->loop, finished, &out, 5000));
    assert_int_equal(out.signal, AMI_PENDING_DONE);
    assert_string_equal(out.name, "OriginateResponse");
    world_free(w);
}

static void write_buffer_high_water_mark_refuses_with_backpressure(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.write_hwm = 4096;
    o.max_pending = 30000; /* the kernel's socket buffers take megabytes first */
    o.heartbeat_interval_ms = 0;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
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
        if (ami_client_send(w->client, "pbx1", &req, capture, &outs[sent], NULL, &err) < 0)
            break;
        if (sent % 4 == 3)
            ami_client_poll(w->client); /* let the socket take what it can */
    }
    assert_true(sent < 20000);
    assert_int_equal(err.code, AMI_E_BACKPRESSURE);
    assert_true(metric(w, "ami_actions_failed_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "backpressure", NULL}) >= 1);
    world_free(w);
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
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t quiet, control;
    fast_options(&quiet, "quiet", ami_sim_node_port(n));
    fast_options(&control, "control", ami_sim_node_port(n));
    quiet.events = "off";
    add_server(w, &quiet);
    add_server(w, &control);
    user_events_t u = {{0, 0}};
    assert_non_null(ami_client_subscribe(w->client, "UserEvent", count_user_event, &u, NULL));
    ami_client_start(w->client);
    for (int round = 0; round < 3; round++) {
        expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
        expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
        harness_run_for(w->loop, 50); /* the Events action is answered */
        u.per_server[1] = 0;
        static const char raw[] = "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Probe\r\n\r\n";
        ami_sim_node_inject(n, raw, sizeof raw - 1);
        assert_true(harness_run_until(w->loop, control_got, &u, 2000));
        harness_run_for(w->loop, 30);
        assert_int_equal(u.per_server[0], 0); /* the quiet session still has events off */
        ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_DISCONNECTED, "test reconnect");
    }
    world_free(w);
}

/* ---- fairness -------------------------------------------------------------------------------------- */

typedef struct pinger {
    world_t *w;
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
    world_t *w = world_new();
    ami_sim_node_t *a = add_node(w, "flood");
    ami_sim_node_t *b = add_node(w, "quiet");
    ami_server_options_t oa, ob;
    fast_options(&oa, "flood", ami_sim_node_port(a));
    fast_options(&ob, "quiet", ami_sim_node_port(b));
    oa.heartbeat_interval_ms = ob.heartbeat_interval_ms = 0;
    ob.action_timeout_ms = 1000;
    add_server(w, &oa);
    add_server(w, &ob);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
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
    world_free(w);
}

/* ---- memory stability (seed 6.4) ------------------------------------------------------------------ */

static bool nothing_pending(void *ud)
{
    return ami_conn_pending(ud) == 0;
}

static void memory_is_stable_over_1000_forced_heartbeat_disconnects(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, "pbx1");
    ami_server_options_t o;
    fast_options(&o, "pbx1", ami_sim_node_port(n));
    o.backoff_initial_ms = 1;
    o.backoff_max_ms = 2;
    o.heartbeat_interval_ms = 0;
    add_server(w, &o);
    ami_client_start(w->client);
    ami_conn_t *c = ami_client_conn(w->client, 0);
    int64_t warm = 0;
    for (int cycle = 1; cycle <= 1000; cycle++) {
        expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
        outcome_t out = {0};
        assert_int_equal(send_simple(w, "pbx1", "Ping", &out, NULL), 0);
        ami_conn_force_close(c, AMI_E_HEARTBEAT, "Max heartbeat failures");
        assert_int_equal(out.finals, 1);
        if (cycle == 5 || cycle == 1000) {
            expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
            /* the simulator's bytes are on its own account: only the engine's own
             * work in flight (the login's answers) must be over */
            assert_true(harness_run_until(w->loop, nothing_pending, c, 3000));
            if (cycle == 5)
                warm = ami_alloc_live_bytes();
        }
    }
    int64_t after = ami_alloc_live_bytes();
    print_message("live bytes after 5 cycles: %lld, after 1000: %lld\n", (long long)warm, (long long)after);
    assert_int_equal(after, warm);
    assert_int_equal(ami_conn_stats(c)->force_closes, 1000);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hostname_is_refused_without_a_lookup_when_enforced),
        cmocka_unit_test(ip_literal_is_accepted_and_logs_in),
        cmocka_unit_test(ipv6_literal_is_accepted),
        cmocka_unit_test(hostname_resolves_off_the_loop_when_enforcement_is_off),
        cmocka_unit_test(unresolvable_hostname_backs_off_with_a_clear_error),
        cmocka_unit_test(session_events_setting_is_reapplied_after_every_reconnect),
        cmocka_unit_test(connection_refused_backs_off_with_growing_jittered_delays),
        cmocka_unit_test(connect_timeout_closes_and_backs_off),
        cmocka_unit_test(login_failure_is_clear_and_retries_follow_backoff),
        cmocka_unit_test(md5_login_works),
        cmocka_unit_test(unresponsive_server_is_force_closed_and_reconnected),
        cmocka_unit_test(server_closing_mid_response_fails_pending_once_and_reconnects),
        cmocka_unit_test(actions_fail_at_once_for_unknown_and_disconnected_servers),
        cmocka_unit_test(originate_is_sent_async_and_completes_on_originate_response),
        cmocka_unit_test(write_buffer_high_water_mark_refuses_with_backpressure),
        cmocka_unit_test(event_flood_on_one_server_does_not_starve_another),
        cmocka_unit_test(memory_is_stable_over_1000_forced_heartbeat_disconnects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
