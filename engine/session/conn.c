/*
 * One server connection's life (see conn.h): options, the state machine,
 * closing, backoff and reconnect, stopping, the transport's callbacks,
 * creation and accessors. What is said over the socket (actions, login,
 * session settings, heartbeat) is in conn_session.c. Loop thread only.
 */
#include "session/conn.h"

#include <ev.h>
#include <stdio.h>
#include <string.h>

#include "session/conn_internal.h"
#include "session/conn_metrics.h"
#include "transport/tcp.h"
#include "util/alloc.h"
#include "util/backoff.h"

static const char *const state_names[AMI_CONN_STATE_COUNT] = {
    "disconnected", "connecting", "authenticating", "connected", "backoff", "stopped",
};

const char *ami_conn_state_name(ami_conn_state_t s)
{
    return (unsigned)s < AMI_CONN_STATE_COUNT ? state_names[s] : "unknown";
}

/* ---- options ------------------------------------------------------------------ */

void ami_server_options_default(ami_server_options_t *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->port = 5038;
    /* coverage-begin: seed-2.1 (on by default) */
    opt->enforce_ip_endpoints = true;
    /* coverage-end: seed-2.1 */
    opt->connect_timeout_ms = 5000;
    opt->login_timeout_ms = 5000;
    opt->action_timeout_ms = 10000;
    opt->heartbeat_interval_ms = 5000;
    opt->heartbeat_max_failures = 3;
    opt->backoff_initial_ms = 500;
    opt->backoff_max_ms = 30000;
    opt->backoff_reset_ms = 10000;
    opt->max_pending = 1024;
    opt->write_hwm = 1u << 20;
    opt->read_chunk = 64u << 10;
}

int ami_server_options_validate(const ami_server_options_t *o, ami_err_t *err)
{
    const char *key = o->server_key && *o->server_key ? o->server_key : "?";
    if (!o->server_key || !*o->server_key)
        return ami_err_set(err, AMI_E_CONFIG, "a server needs a server_key (a short name such as \"pbx1\")");
    if (strlen(o->server_key) > 63)
        return ami_err_set(err, AMI_E_CONFIG, "server_key \"%.20s...\" is longer than 63 bytes", key);
    if (!o->host || !*o->host)
        return ami_err_set(err, AMI_E_CONFIG, "server %s: host is missing", key);
    /* coverage-begin: seed-2.1 (hostnames refused in the options) */
    if (o->enforce_ip_endpoints && !ami_tcp_is_ip_literal(o->host))
        return ami_err_set(err, AMI_E_CONFIG,
                           "server %s: host \"%.64s\" is not an IP address; enforce_ip_endpoints is on "
                           "(DNS lookups can block), so give an IP, or set enforce_ip_endpoints = false",
                           key, o->host);
    /* coverage-end: seed-2.1 */
    if (o->port == 0)
        return ami_err_set(err, AMI_E_CONFIG, "server %s: port must be 1..65535", key);
    if (!o->username || !*o->username)
        return ami_err_set(err, AMI_E_CONFIG, "server %s: username is missing", key);
    if (!o->secret)
        return ami_err_set(err, AMI_E_CONFIG, "server %s: secret is missing", key);
    if (o->heartbeat_interval_ms && o->heartbeat_max_failures == 0)
        return ami_err_set(err, AMI_E_CONFIG, "server %s: heartbeat_max_failures must be at least 1", key);
    if (o->heartbeat_interval_ms && o->heartbeat_timeout_ms > o->heartbeat_interval_ms)
        return ami_err_set(err, AMI_E_CONFIG,
                           "server %s: heartbeat_timeout_ms (%u) is longer than heartbeat_interval_ms (%u); "
                           "one Ping is judged before the next goes out, so the timeout must not exceed "
                           "the interval (0 means \"equal to the interval\")",
                           key, o->heartbeat_timeout_ms, o->heartbeat_interval_ms);
    if (o->backoff_initial_ms == 0 || o->backoff_max_ms < o->backoff_initial_ms)
        return ami_err_set(err, AMI_E_CONFIG,
                           "server %s: backoff needs 0 < backoff_initial_ms <= backoff_max_ms", key);
    if (o->nfilters > AMI_MAX_FILTERS)
        return ami_err_set(err, AMI_E_CONFIG, "server %s: at most %d filters", key, AMI_MAX_FILTERS);
    ami_err_t terr;
    if (ami_tls_options_validate(&o->tls, &terr) < 0)
        return ami_err_set(err, AMI_E_CONFIG, "server %s: %s", key, terr.msg);
    return 0;
}

static void free_option_strings(ami_server_options_t *o)
{
    ami_free((char *)o->server_key);
    ami_free((char *)o->host);
    ami_free((char *)o->username);
    ami_free((char *)o->secret);
    ami_free((char *)o->events);
    for (size_t i = 0; i < o->nfilters; i++)
        ami_free((char *)o->filters[i]);
    ami_tls_options_free(&o->tls);
}

static bool copy_options(ami_server_options_t *dst, const ami_server_options_t *src)
{
    *dst = *src;
    dst->server_key = ami_strdup(src->server_key);
    dst->host = ami_strdup(src->host);
    dst->username = ami_strdup(src->username);
    dst->secret = ami_strdup(src->secret);
    dst->events = src->events ? ami_strdup(src->events) : NULL;
    bool ok = dst->server_key && dst->host && dst->username && dst->secret &&
              (!src->events || dst->events);
    for (size_t i = 0; i < src->nfilters; i++) {
        dst->filters[i] = ami_strdup(src->filters[i]);
        ok = ok && dst->filters[i];
    }
    ok = ami_tls_options_copy(&dst->tls, &src->tls) == 0 && ok;
    if (!dst->heartbeat_timeout_ms)
        dst->heartbeat_timeout_ms = dst->heartbeat_interval_ms;
    return ok;
}

/* ---- small helpers ---------------------------------------------------------------- */

void conn_set_state(ami_conn_t *c, ami_conn_state_t to, const char *reason)
{
    ami_conn_state_t from = c->state;
    if (from == to)
        return;
    c->state = to;
    ami_conn_metrics_state(&c->m, from, to);
    AMI_LOG(c->env.log, to == AMI_CONN_CONNECTED || to == AMI_CONN_STOPPED ? AMI_LOG_INFO : AMI_LOG_DEBUG, "server state",
            AMI_F_STR("server_key", c->opt.server_key), AMI_F_STR("from", ami_conn_state_name(from)),
            AMI_F_STR("to", ami_conn_state_name(to)), AMI_F_STR("reason", reason ? reason : ""));
    if (c->cb.on_state)
        c->cb.on_state(c->ud, c, from, to, reason);
}

/* ---- closing, backoff, reconnect -------------------------------------------------- */

/* Always jittered (the first retry too): util/backoff.h. */
static uint32_t backoff_delay(ami_conn_t *c)
{
    return ami_backoff_delay(&c->rng, c->opt.backoff_initial_ms, c->opt.backoff_max_ms, c->attempts);
}

/* A session that stayed up this long proves the server healthy again: only
 * then do retries start from backoff_initial_ms. A server that fails right
 * after login keeps backing off. */
static void on_healthy_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_conn_t *c = w->data;
    c->attempts = 0;
}

void conn_session_healthy_after(ami_conn_t *c, uint32_t ms)
{
    ev_timer_set(&c->healthy_timer, ms / 1000.0, 0.);
    ev_timer_start(c->env.loop, &c->healthy_timer);
}

/* coverage-begin: seed-3.1 (force close: reset the session) */
static void stop_session_timers(ami_conn_t *c)
{
    conn_heartbeat_stop(c);
    ev_timer_stop(c->env.loop, &c->login_timer);
    ev_timer_stop(c->env.loop, &c->healthy_timer);
}

static void reset_session(ami_conn_t *c)
{
    c->close_gen++;
    stop_session_timers(c);
    ami_tcp_close(c->tcp);
    conn_input_stop(c);
    if (!c->in_dispatch)
        ami_parser_reset(&c->parser); /* else the dispatch loop resets it when it unwinds */
    c->phase = WAIT_BANNER;
    c->logoff_id = 0;
}
/* coverage-end: seed-3.1 */

static void finish_stop(ami_conn_t *c, const char *reason)
{
    ev_timer_stop(c->env.loop, &c->stop_timer);
    ev_timer_stop(c->env.loop, &c->backoff_timer);
    reset_session(c);
    conn_set_state(c, AMI_CONN_STOPPED, reason);
    ami_registry_fail_all(c->reg, AMI_E_SHUTDOWN, "the engine is stopping");
    conn_arm_action_timer(c);
}

/* coverage-begin: seed-3.1 (force close: fail pending, close, back off) */
static void schedule_reconnect(ami_conn_t *c)
{
    c->backoff_ms = backoff_delay(c);
    c->attempts++;
    ev_timer_set(&c->backoff_timer, c->backoff_ms / 1000.0, 0.);
    ev_timer_start(c->env.loop, &c->backoff_timer);
}

void ami_conn_force_close(ami_conn_t *c, ami_status_t status, const char *reason)
{
    if (c->state == AMI_CONN_BACKOFF || c->state == AMI_CONN_STOPPED ||
        c->state == AMI_CONN_DISCONNECTED)
        return;
    if (c->stopping) {
        finish_stop(c, reason);
        return;
    }
    snprintf(c->last_error, sizeof c->last_error, "%s", reason);
    c->stats.force_closes++;
    bool lost = c->state == AMI_CONN_CONNECTED;
    if (lost) {
        c->stats.sessions_lost++;
        ami_conn_metrics_disconnect(&c->m, status);
    } else {
        c->stats.connect_failures++;
        ami_conn_metrics_connect_failure(&c->m, status);
    }
    AMI_LOG(c->env.log, AMI_LOG_WARN, lost ? "connection closed" : "connection attempt failed",
            AMI_F_STR("server_key", c->opt.server_key),
            AMI_F_STR("peer", ami_tcp_peer(c->tcp)), AMI_F_STR("kind", ami_status_name(status)),
            AMI_F_STR("reason", reason), AMI_F_UINT("pending", ami_registry_pending(c->reg)));
    reset_session(c);
    schedule_reconnect(c);
    conn_set_state(c, AMI_CONN_BACKOFF, reason);
    ami_registry_fail_all(c->reg, status, reason);
    conn_arm_action_timer(c);
}
/* coverage-end: seed-3.1 */

static void connect_now(ami_conn_t *c)
{
    if (c->stats.connects++ > 0)
        ami_conn_metrics_reconnect(&c->m);
    c->backoff_ms = 0;
    conn_set_state(c, AMI_CONN_CONNECTING, NULL);
    ami_err_t err;
    if (ami_tcp_open(c->tcp, c->opt.host, c->opt.port, &err) < 0)
        ami_conn_force_close(c, err.code, err.msg);
}

static void on_backoff_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    connect_now(w->data);
}

void ami_conn_start(ami_conn_t *c)
{
    if (c->state != AMI_CONN_DISCONNECTED && c->state != AMI_CONN_STOPPED)
        return;
    c->stopping = false;
    c->attempts = 0;
    connect_now(c);
}

static void on_stop_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    finish_stop(w->data, "logoff not answered in time");
}

static void on_logoff_done(void *ud, const ami_pending_note_t *n)
{
    ami_conn_t *c = ud;
    c->logoff_id = 0;
    if (c->stopping && c->state != AMI_CONN_STOPPED)
        finish_stop(c, n->signal == AMI_PENDING_DONE ? "logged off" : n->reason);
}

void ami_conn_stop(ami_conn_t *c, uint32_t grace_ms)
{
    if (c->state == AMI_CONN_STOPPED || c->stopping)
        return;
    c->stopping = true;
    ev_timer_stop(c->env.loop, &c->backoff_timer);
    if (c->state != AMI_CONN_CONNECTED) {
        finish_stop(c, "stopped");
        return;
    }
    ami_action_req_t logoff = {.name = "Logoff", .timeout_ms = grace_ms ? grace_ms : 1000};
    if (conn_send_raw(c, &logoff, on_logoff_done, c, &c->logoff_id, NULL) < 0) {
        finish_stop(c, "stopped");
        return;
    }
    ev_timer_set(&c->stop_timer, (grace_ms ? grace_ms : 1000) / 1000.0 + 0.05, 0.);
    ev_timer_start(c->env.loop, &c->stop_timer);
}

/* ---- transport callbacks -------------------------------------------------------------- */

static void on_open(void *ud)
{
    ami_conn_t *c = ud;
    c->phase = WAIT_BANNER;
    ev_timer_set(&c->login_timer, c->opt.login_timeout_ms / 1000.0, 0.);
    ev_timer_start(c->env.loop, &c->login_timer);
    conn_set_state(c, AMI_CONN_AUTHENTICATING, NULL);
}

static void on_transport_close(void *ud, ami_status_t why, const char *reason)
{
    ami_conn_t *c = ud;
    /* An attempt keeps the transport's kind (io: refused, unreachable,
     * unresolvable; timeout); an open session that closes is disconnected. */
    if (c->state != AMI_CONN_CONNECTING && why != AMI_E_TIMEOUT)
        why = AMI_E_DISCONNECTED;
    ami_conn_force_close(c, why, reason);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static bool init_parts(ami_conn_t *c, ami_err_t *err)
{
    if (ami_parser_init(&c->parser, &c->opt.parser) < 0) {
        ami_err_set(err, AMI_E_CONFIG, "server %s: invalid parser limits", c->opt.server_key);
        return false;
    }
    ami_registry_config_t rc;
    ami_registry_config_default(&rc);
    rc.max_pending = c->opt.max_pending;
    memcpy(rc.max_messages, c->opt.max_messages, sizeof rc.max_messages);
    rc.server_key = c->opt.server_key;
    rc.ids = c->env.ids;
    rc.log = c->env.log;
    rc.metrics = c->env.metrics;
    rc.on_final = conn_on_final;
    rc.on_final_ud = c;
    c->reg = ami_registry_new(&rc, err);
    if (!c->reg)
        return false;
    if (c->opt.tls.enabled) {
        ami_err_t terr;
        c->tls = ami_tls_client_new(&c->opt.tls, c->opt.host, c->opt.server_key, c->env.metrics, c->env.log, &terr);
        if (!c->tls) {
            ami_err_set(err, terr.code, "server %s: %s", c->opt.server_key, terr.msg);
            return false;
        }
    }
    ami_tcp_options_t to;
    ami_tcp_options_default(&to);
    to.enforce_ip = c->opt.enforce_ip_endpoints;
    to.connect_timeout_ms = c->opt.connect_timeout_ms;
    to.read_chunk = c->opt.read_chunk;
    to.write_hwm = c->opt.write_hwm;
    to.tls = c->tls;
    ami_tcp_callbacks_t tcb = {.on_open = on_open, .read_buffer = conn_input_read_buffer,
                               .on_read = conn_input_on_read, .on_close = on_transport_close};
    c->tcp = ami_tcp_new(c->env.loop, &to, &tcb, c, c->env.log);
    return c->reg && c->tcp;
}

static void init_timers(ami_conn_t *c)
{
    ev_init(&c->backoff_timer, on_backoff_timer);
    ev_init(&c->stop_timer, on_stop_timer);
    ev_init(&c->healthy_timer, on_healthy_timer);
    c->backoff_timer.data = c->stop_timer.data = c->healthy_timer.data = c;
    conn_session_init_timers(c);
    conn_input_init(c);
}

ami_conn_t *ami_conn_new(const ami_server_options_t *opt, const ami_conn_env_t *env,
                         const ami_conn_callbacks_t *cb, void *ud, ami_err_t *err)
{
    if (ami_server_options_validate(opt, err) < 0)
        return NULL;
    if (!env || !env->loop || !env->ids) {
        ami_err_set(err, AMI_E_INVALID, "a connection needs a loop and an ActionID generator");
        return NULL;
    }
    ami_conn_t *c = ami_calloc(1, sizeof *c);
    if (!c || !copy_options(&c->opt, opt)) {
        if (c)
            free_option_strings(&c->opt);
        ami_free(c);
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating server %s", opt->server_key);
        return NULL;
    }
    c->env = *env;
    if (cb)
        c->cb = *cb;
    c->ud = ud;
    c->rng = ami_backoff_seed(env->seed);
    init_timers(c);
    ami_conn_metrics_init(&c->m, env->metrics, c->opt.server_key);
    if (!init_parts(c, err)) {
        ami_conn_free(c);
        return NULL;
    }
    return c;
}

void ami_conn_free(ami_conn_t *c)
{
    if (!c)
        return;
    struct ev_loop *loop = c->env.loop;
    ev_timer_stop(loop, &c->backoff_timer);
    conn_heartbeat_stop(c);
    ev_timer_stop(loop, &c->action_timer);
    ev_timer_stop(loop, &c->login_timer);
    ev_timer_stop(loop, &c->stop_timer);
    ev_timer_stop(loop, &c->healthy_timer);
    conn_input_stop(c);
    if (c->reg)
        ami_registry_fail_all(c->reg, AMI_E_SHUTDOWN, "the connection was freed");
    ami_tcp_free(c->tcp);
    ami_tls_ctx_free(c->tls);
    ami_registry_free(c->reg);
    ami_parser_deinit(&c->parser);
    ami_conn_metrics_deinit(&c->m);
    free_option_strings(&c->opt);
    ami_free(c);
}

/* ---- accessors --------------------------------------------------------------------------- */

void ami_conn_set_observer(ami_conn_t *c, const ami_conn_observer_t *obs)
{
    if (obs)
        c->obs = *obs;
    else
        memset(&c->obs, 0, sizeof c->obs);
}

ami_conn_state_t ami_conn_state(const ami_conn_t *c)
{
    return c->state;
}

const char *ami_conn_key(const ami_conn_t *c)
{
    return c->opt.server_key;
}

size_t ami_conn_pending(const ami_conn_t *c)
{
    return ami_registry_pending(c->reg);
}

const char *ami_conn_last_error(const ami_conn_t *c)
{
    return c->last_error;
}

uint32_t ami_conn_backoff_delay(const ami_conn_t *c)
{
    return c->state == AMI_CONN_BACKOFF ? c->backoff_ms : 0;
}

uint32_t ami_conn_heartbeat_failures(const ami_conn_t *c)
{
    return c->hb_failures;
}

const ami_conn_stats_t *ami_conn_stats(const ami_conn_t *c)
{
    ami_conn_t *mut = (ami_conn_t *)c;
    mut->stats.bytes_out = ami_tcp_stats(c->tcp)->bytes_out;
    mut->stats.buffer_bytes = ami_parser_footprint(&c->parser) + ami_tcp_wbuf(c->tcp)->cap;
    return &c->stats;
}
