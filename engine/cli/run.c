/*
 * Running the engine: config -> logger, metrics, client, scripts, HTTP
 * endpoint, signals; then the loop until a drain completes.
 *
 * Drain (SIGTERM, SIGINT, --duration): handlers stop receiving events; the
 * coroutines already waiting get drain_grace_ms to finish; then every server
 * is logged off (Logoff, Goodbye) and the program exits 0. A second signal
 * during the drain stops at once.
 *
 * SIGHUP: re-reads the config file. The log level and format, the handler
 * budget and the summary interval apply at once; the scripts are reloaded.
 * Changes to servers, the metrics listener, the scripts folder, the http
 * or the ha section need a restart (they are logged as such).
 *
 * High availability (an ha section): the coordinator (engine/ha) starts
 * with the client and gates the scripts; a drain gives every lease back at
 * once, and the program exits once the releases are answered.
 */
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "obs/http.h"
#include "obs/loopmon.h"
#include "obs/sdnotify.h"
#include "util/alloc.h"

#define LOGOFF_GRACE_MS 2000u

typedef struct engine {
    ami_engine_config_t *cfg;
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_client_t *client;
    ami_callstate_t *callstate;   /* NULL unless the config has a callstate section */
    ami_lua_runtime_t *rt;
    ami_ha_t *ha;                /* NULL without an ha section */
    ami_http_t *http;
    ami_loopmon_t *loopmon;
    ami_sdnotify_t *notify;
    ami_httpc_t *httpc;            /* ami.http's client; NULL without an http section */
    ev_signal sigterm, sigint, sighup;
    ev_timer duration;
    ev_timer drain_check;
    ev_timer summary;
    int draining;       /* 0 running, 1 waiting for coroutines, 2 logging off */
    int64_t drain_deadline;
    uint64_t last_events[AMI_CONFIG_MAX_SERVERS];
    char lua_path[2048];
} engine_t;

/* ---- health ------------------------------------------------------------------ */

static int health(void *ud, ami_buf_t *body)
{
    engine_t *e = ud;
    size_t n = ami_client_server_count(e->client);
    size_t up = ami_client_connected_count(e->client);
    size_t quorum = e->cfg->health_quorum ? e->cfg->health_quorum : n;
    ami_loopmon_stats_t ls;
    bool stalled = e->loopmon && ami_loopmon_recent_stall(e->loopmon, &ls);
    bool ok = up >= quorum && e->draining == 0 && !stalled;
    ami_buf_printf(body, "%s: %zu of %zu servers connected (quorum %zu)%s\n", ok ? "ok" : "unhealthy", up,
                   n, quorum, e->draining ? ", draining" : "");
    if (stalled)
        ami_buf_printf(body, "event loop stalled for %.3f s, %.0f s ago (%llu stalls since start); "
                             "every server waited meanwhile\n",
                       ls.last_stall_s, ls.last_stall_ago_s, (unsigned long long)ls.stalls);
    for (size_t i = 0; i < n; i++) {
        ami_server_info_t info;
        ami_client_server_info(e->client, i, &info);
        ami_buf_printf(body, "%s %s%s%s\n", info.server_key, ami_conn_state_name(info.state),
                       info.last_error[0] ? " last_error=" : "", info.last_error);
    }
    if (e->ha)
        ami_ha_health(e->ha, body);
    return ok ? 200 : 503;
}

/* ---- the periodic one-line summary per server ------------------------------------- */

static void on_summary(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    engine_t *e = t->data;
    double secs = t->repeat > 0 ? t->repeat : 1;
    for (size_t i = 0; i < ami_client_server_count(e->client) && i < AMI_CONFIG_MAX_SERVERS; i++) {
        ami_server_info_t info;
        ami_client_server_info(e->client, i, &info);
        uint64_t delta = info.stats->events - e->last_events[i];
        e->last_events[i] = info.stats->events;
        AMI_LOG(e->log, AMI_LOG_INFO, "summary", AMI_F_STR("server_key", info.server_key),
                AMI_F_STR("state", ami_conn_state_name(info.state)), AMI_F_UINT("events", info.stats->events),
                AMI_F_DBL("events_per_s", (double)delta / secs), AMI_F_UINT("pending", info.pending),
                AMI_F_UINT("logins", info.stats->logins), AMI_F_UINT("disconnects", info.stats->sessions_lost),
                AMI_F_UINT("connect_failures", info.stats->connect_failures));
    }
    ami_lua_stats_t st;
    ami_lua_runtime_stats(e->rt, &st);
    AMI_LOG(e->log, AMI_LOG_INFO, "summary", AMI_F_STR("scripts", "lua"), AMI_F_UINT("gen", st.generation),
            AMI_F_UINT("handler_runs", st.handler_runs), AMI_F_UINT("handler_errors", st.handler_errors),
            AMI_F_UINT("waiting", st.coroutines_parked), AMI_F_INT("lua_memory", st.lua_memory));
}

static void arm_summary(engine_t *e)
{
    ev_timer_stop(e->loop, &e->summary);
    if (!e->cfg->summary_interval_ms)
        return;
    double every = e->cfg->summary_interval_ms / 1000.0;
    ev_timer_set(&e->summary, every, every);
    ev_timer_start(e->loop, &e->summary);
}

/* ---- drain and stop ------------------------------------------------------------------ */

static void on_drain_check(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    engine_t *e = t->data;
    if (e->draining == 1) {
        size_t waiting = ami_lua_runtime_waiting(e->rt);
        if (waiting && ev_now(loop) * 1000 < (double)e->drain_deadline)
            return;
        if (waiting)
            AMI_LOG(e->log, AMI_LOG_WARN, "drain grace over; cancelling waiting coroutines",
                    AMI_F_UINT("coroutines", waiting));
        ami_lua_runtime_shutdown(e->rt);
        e->draining = 2;
        AMI_LOG(e->log, AMI_LOG_INFO, "logging off from every server");
        ami_client_stop(e->client, LOGOFF_GRACE_MS);
    }
    if (e->draining == 2 && ami_client_stopped(e->client) && (!e->ha || ami_ha_drained(e->ha))) {
        ev_timer_stop(loop, t);
        ev_break(loop, EVBREAK_ALL);
    }
}

static void begin_drain(engine_t *e, const char *why)
{
    if (e->draining) {
        AMI_LOG(e->log, AMI_LOG_WARN, "second stop request: stopping now", AMI_F_STR("why", why));
        ev_break(e->loop, EVBREAK_ALL);
        return;
    }
    e->draining = 1;
    ami_sdnotify_send(e->notify, "STOPPING=1");
    e->drain_deadline = (int64_t)(ev_now(e->loop) * 1000) + e->cfg->drain_grace_ms;
    AMI_LOG(e->log, AMI_LOG_INFO, "draining: no new events to handlers; waiting coroutines may finish",
            AMI_F_STR("why", why), AMI_F_UINT("waiting", ami_lua_runtime_waiting(e->rt)),
            AMI_F_UINT("grace_ms", e->cfg->drain_grace_ms));
    ami_lua_runtime_drain(e->rt);
    if (e->ha)
        ami_ha_drain(e->ha); /* another instance takes over now, not when the leases expire */
    ev_timer_set(&e->drain_check, 0., 0.05);
    ev_timer_start(e->loop, &e->drain_check);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    begin_drain(w->data, w->signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_duration(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    begin_drain(t->data, "--duration elapsed");
}

/* ---- SIGHUP ------------------------------------------------------------------------------ */

static void warn_if_changed(engine_t *e, const ami_engine_config_t *fresh)
{
    bool servers = fresh->nservers != e->cfg->nservers;
    for (size_t i = 0; !servers && i < fresh->nservers; i++)
        servers = strcmp(fresh->servers[i].server_key, e->cfg->servers[i].server_key) != 0 ||
                  strcmp(fresh->servers[i].host, e->cfg->servers[i].host) != 0 ||
                  fresh->servers[i].port != e->cfg->servers[i].port ||
                  !ami_tls_options_equal(&fresh->servers[i].tls, &e->cfg->servers[i].tls);
    bool metrics = fresh->metrics_port != e->cfg->metrics_port || fresh->metrics_enabled != e->cfg->metrics_enabled ||
                   memcmp(&fresh->metrics_http, &e->cfg->metrics_http, sizeof fresh->metrics_http) != 0;
    bool http = fresh->http_enabled != e->cfg->http_enabled;
    bool ha = ami_config_ha_changed(fresh, e->cfg);
    if (servers || metrics || http || ha)
        AMI_LOG(e->log, AMI_LOG_WARN, "config changes that need a restart were not applied",
                AMI_F_BOOL("servers", servers), AMI_F_BOOL("metrics_listener", metrics), AMI_F_BOOL("http", http),
                AMI_F_BOOL("ha", ha));
}

static void apply_live_settings(engine_t *e, ami_engine_config_t *fresh)
{
    warn_if_changed(e, fresh);
    ami_logger_set_level(e->log, fresh->log_level);
    ami_logger_set_format(e->log, fresh->log_format);
    e->cfg->log_level = fresh->log_level;
    e->cfg->log_format = fresh->log_format;
    e->cfg->summary_interval_ms = fresh->summary_interval_ms;
    e->cfg->drain_grace_ms = fresh->drain_grace_ms;
    e->cfg->busy_poll_us = fresh->busy_poll_us;
    ami_client_set_busy_poll(e->client, fresh->busy_poll_us);
    e->cfg->health_quorum = fresh->health_quorum;
    arm_summary(e);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    engine_t *e = w->data;
    ami_engine_config_t fresh;
    ami_config_errors_t errs;
    ami_sdnotify_send(e->notify, "RELOADING=1");
    if (ami_config_load(e->cfg->path, &fresh, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++)
            AMI_LOG(e->log, AMI_LOG_ERROR, "SIGHUP: config error; keeping the running config",
                    AMI_F_STR("error", errs.msg[i]));
    } else {
        apply_live_settings(e, &fresh);
        ami_config_free(&fresh);
    }
    ami_lua_runtime_reload(e->rt, "SIGHUP", NULL);
    ami_sdnotify_send(e->notify, "READY=1");
}

/* ---- setup ---------------------------------------------------------------------------------- */

static ami_logger_t *make_logger(const ami_engine_config_t *cfg)
{
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = cfg->log_level;
    lc.format = cfg->log_format;
    lc.async = true; /* a slow stderr reader must never stall the loop */
    return ami_logger_new(&lc);
}

/* The log writer thread counts what its ring refused; publish it at scrape time. */
static void collect_log_stats(void *ud, ami_metrics_t *m)
{
    engine_t *e = ud;
    ami_counter_t *dropped = ami_metrics_counter(m, "ami_log_lines_dropped_total",
                                                 "Log lines dropped because the log ring was full (slow stderr reader)",
                                                 NULL, NULL);
    ami_counter_t *written = ami_metrics_counter(m, "ami_log_lines_written_total", "Log lines written", NULL, NULL);
    dropped->value = (double)ami_logger_dropped(e->log);
    written->value = (double)ami_logger_written(e->log);
}

static int add_servers(engine_t *e)
{
    for (size_t i = 0; i < e->cfg->nservers; i++) {
        ami_err_t err;
        if (ami_client_add_server(e->client, &e->cfg->servers[i], &err) < 0) {
            AMI_LOG(e->log, AMI_LOG_ERROR, "cannot add server", AMI_F_STR("error", err.msg));
            return -1;
        }
    }
    return 0;
}

/* Before the scripts: the call state subscribes first, so handlers see it
 * already updated by the event they handle. */
static int start_callstate(engine_t *e)
{
    if (!e->cfg->callstate_enabled)
        return 0;
    ami_callstate_config_t cc = e->cfg->callstate;
    cc.variables = (const char *const *)e->cfg->callstate_vars;
    ami_err_t err;
    e->callstate = ami_callstate_new(e->client, &cc, &err);
    if (!e->callstate) {
        AMI_LOG(e->log, AMI_LOG_ERROR, "cannot start the call state", AMI_F_STR("error", err.msg));
        return -1;
    }
    return 0;
}

static int start_scripts(engine_t *e)
{
    ami_lua_config_t lc = e->cfg->lua;
    lc.callstate = e->callstate;
    snprintf(e->lua_path, sizeof e->lua_path, "%s%s%s", ami_cli_engine_lua_path(),
             lc.lua_path && *lc.lua_path ? ";" : "", lc.lua_path ? lc.lua_path : "");
    lc.lua_path = e->lua_path;
    lc.http = e->httpc;
    ami_err_t err;
    e->rt = ami_lua_runtime_new(e->client, &lc, &err);
    if (!e->rt) {
        AMI_LOG(e->log, AMI_LOG_ERROR, "cannot start the Lua runtime", AMI_F_STR("error", err.msg));
        return -1;
    }
    ami_lua_runtime_set_ha(e->rt, e->ha);
    return ami_lua_runtime_load(e->rt, &err);
}

/* Refusing to start beats running with an HTTP client that could stall
 * the loop (a libcurl without the threaded resolver). */
static int start_http_client(engine_t *e)
{
    if (!e->cfg->http_enabled)
        return 0;
    ami_httpc_err_t err = {0};
    e->httpc = ami_httpc_new(e->loop, &e->cfg->http, e->metrics, e->log, &err);
    if (!e->httpc) {
        AMI_LOG(e->log, AMI_LOG_ERROR, "cannot start the HTTP client (ami.http)", AMI_F_STR("error", err.msg));
        return -1;
    }
    return 0;
}

static int start_ha(engine_t *e)
{
    if (!e->cfg->ha_enabled)
        return 0;
    ami_err_t err;
    e->ha = ami_ha_new(e->client, &e->cfg->ha, &err);
    if (!e->ha)
        AMI_LOG(e->log, AMI_LOG_ERROR, "cannot start high availability", AMI_F_STR("error", err.msg));
    return e->ha ? 0 : -1;
}

static int start_http(engine_t *e)
{
    if (!e->cfg->metrics_enabled)
        return 0;
    ami_http_config_t hc = e->cfg->metrics_http;
    hc.bind_ip = e->cfg->metrics_ip;
    hc.port = e->cfg->metrics_port;
    ami_err_t err;
    e->http = ami_http_new(e->loop, &hc, e->metrics, health, e, e->log, &err);
    if (!e->http) {
        AMI_LOG(e->log, AMI_LOG_ERROR, "cannot start the metrics endpoint", AMI_F_STR("error", err.msg));
        return -1;
    }
    AMI_LOG(e->log, AMI_LOG_INFO, "metrics endpoint listening", AMI_F_STR("ip", e->cfg->metrics_ip),
            AMI_F_UINT("port", ami_http_port(e->http)), AMI_F_STR("paths", "/metrics /healthz"),
            AMI_F_UINT("max_connections", hc.max_connections));
    return 0;
}

static void watch_signals(engine_t *e)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_init(&e->sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&e->sigint, on_stop_signal, SIGINT);
    ev_signal_init(&e->sighup, on_hup, SIGHUP);
    e->sigterm.data = e->sigint.data = e->sighup.data = e;
    ev_signal_start(e->loop, &e->sigterm);
    ev_signal_start(e->loop, &e->sigint);
    ev_signal_start(e->loop, &e->sighup);
}

static void init_timers(engine_t *e, const ami_run_options_t *opt)
{
    ev_init(&e->drain_check, on_drain_check);
    ev_init(&e->summary, on_summary);
    ev_init(&e->duration, on_duration);
    e->drain_check.data = e->summary.data = e->duration.data = e;
    arm_summary(e);
    if (opt && opt->duration_s) {
        ev_timer_set(&e->duration, opt->duration_s, 0.);
        ev_timer_start(e->loop, &e->duration);
    }
}

static int setup(engine_t *e, const ami_run_options_t *opt)
{
    e->loop = ev_default_loop(EVFLAG_AUTO);
    e->log = make_logger(e->cfg);
    e->metrics = ami_metrics_new(20000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = e->loop;
    cc.log = e->log;
    cc.metrics = e->metrics;
    cc.route = e->cfg->route;
    ami_err_t err;
    e->client = ami_client_new(&cc, &err);
    if (!e->loop || !e->log || !e->metrics || !e->client)
        return -1;
    ami_client_set_busy_poll(e->client, e->cfg->busy_poll_us);
    ami_metrics_add_collector(e->metrics, collect_log_stats, e);
    e->loopmon = ami_loopmon_new(e->loop, NULL, e->metrics, e->log, &err);
    e->notify = ami_sdnotify_new(e->loop, e->metrics, e->log);
    if (!e->loopmon || add_servers(e) < 0 || start_callstate(e) < 0 || start_ha(e) < 0 ||
        start_http_client(e) < 0 || start_scripts(e) < 0 || start_http(e) < 0)
        return -1;
    watch_signals(e);
    init_timers(e, opt);
    return 0;
}

static void teardown(engine_t *e)
{
    if (e->loop) {
        ev_signal_stop(e->loop, &e->sigterm);
        ev_signal_stop(e->loop, &e->sigint);
        ev_signal_stop(e->loop, &e->sighup);
        ev_timer_stop(e->loop, &e->drain_check);
        ev_timer_stop(e->loop, &e->summary);
        ev_timer_stop(e->loop, &e->duration);
    }
    ami_http_free(e->http);
    ami_sdnotify_free(e->notify);
    ami_loopmon_free(e->loopmon);
    ami_lua_runtime_free(e->rt);
    ami_httpc_free(e->httpc); /* after the runtime: its waits cancel their transfers */
    ami_ha_free(e->ha); /* after the scripts (their ami.kv calls), before the client */
    ami_callstate_free(e->callstate);
    ami_client_free(e->client);
    ami_metrics_free(e->metrics);
    ami_logger_free(e->log);
}

int ami_cli_run(ami_engine_config_t *cfg, const ami_run_options_t *opt)
{
    engine_t e = {.cfg = cfg};
    int rc = setup(&e, opt);
    if (rc == 0) {
        AMI_LOG(e.log, AMI_LOG_INFO, "ami-engine started", AMI_F_STR("version", AMI_VERSION),
                AMI_F_STR("config", cfg->path), AMI_F_UINT("servers", cfg->nservers),
                AMI_F_STR("routing", ami_route_policy_name(cfg->route)));
        for (size_t i = 0; i < cfg->nwarnings; i++)
            AMI_LOG(e.log, AMI_LOG_WARN, "config warning", AMI_F_STR("warning", cfg->warnings[i]));
        ami_client_start(e.client);
        char status[96];
        snprintf(status, sizeof status, "serving %zu servers", cfg->nservers);
        ami_sdnotify_ready(e.notify, status);
        if (e.ha)
            ami_ha_start(e.ha);
        ev_run(e.loop, 0);
        AMI_LOG(e.log, AMI_LOG_INFO, "ami-engine stopped");
    }
    teardown(&e);
    return rc == 0 ? 0 : 1;
}
