/*
 * ami-engine spec: run busted specs inside the engine's own Lua runtime,
 * against an in-process simulated Asterisk cluster on loopback.
 *
 * busted runs in one coroutine of a testing generation, with the real
 * globals (busted needs io, os, debug); scripts under test are loaded with
 * T.load_script exactly as the engine loads them (sandboxed). When a spec
 * calls ami.action, ami.sleep or ami.wait_for, the busted coroutine yields
 * and the loop runs: the simulator answers, events arrive, handlers run.
 *
 *   local T = require "ami.testing"       -- load_script, reset, metric, wait_until,
 *   T.sim.inject("pbx1", raw_event)       -- plus the simulator's controls
 *   T.sim.faults("pbx1", {ping_silent = true})
 *   T.logs("handler failed")              -- captured log lines containing the text
 *   T.http.url("/webhook")                -- a simulated web service on loopback
 *   T.http.fail_next(2, 503)              -- (engine/sim/sim_http.h lists its routes)
 *   T.http.requests()                     -- what it received: {method, path, headers, body}
 *
 * ami.http is on with the default http settings (TLS verified, no proxy).
 */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "cli/cli.h"
#include "sim/sim.h"
#include "sim/sim_http.h"
#include "util/alloc.h"

#define MAX_NODES 8
#define LOG_RING 20000

typedef struct spec_run {
    struct ev_loop *loop;
    ami_sim_t *sim;
    ami_sim_node_t *nodes[MAX_NODES];
    char names[MAX_NODES][16];
    int nnodes;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_client_t *client;
    ami_callstate_t *callstate;
    ami_lua_runtime_t *rt;
    ami_httpc_t *httpc;
    ami_sim_http_t *web;
    char *lines[LOG_RING];
    size_t nlines, first;
    bool verbose;
    bool finished;
    int exit_code;
    ev_timer timeout;
} spec_run_t;

static spec_run_t *run_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* ---- captured logs ------------------------------------------------------------ */

static void capture(void *ud, ami_log_level_t level, const char *line, size_t len)
{
    (void)level;
    spec_run_t *s = ud;
    if (s->verbose)
        fprintf(stderr, "%.*s\n", (int)len, line);
    size_t slot = (s->first + s->nlines) % LOG_RING;
    if (s->nlines == LOG_RING) {
        ami_free(s->lines[s->first]);
        s->first = (s->first + 1) % LOG_RING;
        slot = (s->first + s->nlines - 1) % LOG_RING;
    } else {
        s->nlines++;
    }
    s->lines[slot] = ami_strndup(line, len);
}

static int t_logs(lua_State *L)
{
    spec_run_t *s = run_of(L);
    const char *needle = luaL_optstring(L, 1, NULL);
    lua_newtable(L);
    int n = 0;
    for (size_t i = 0; i < s->nlines; i++) {
        const char *line = s->lines[(s->first + i) % LOG_RING];
        if (line && (!needle || strstr(line, needle))) {
            lua_pushstring(L, line);
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

static int t_clear_logs(lua_State *L)
{
    spec_run_t *s = run_of(L);
    for (size_t i = 0; i < s->nlines; i++) {
        ami_free(s->lines[(s->first + i) % LOG_RING]);
        s->lines[(s->first + i) % LOG_RING] = NULL;
    }
    s->nlines = s->first = 0;
    return 0;
}

static int t_finish(lua_State *L)
{
    spec_run_t *s = run_of(L);
    int code = 0;
    if (lua_isboolean(L, 1))
        code = lua_toboolean(L, 1) ? 0 : 1;
    else
        code = (int)luaL_optinteger(L, 1, 0);
    if (!s->finished) {
        s->finished = true;
        s->exit_code = code;
    }
    ev_break(s->loop, EVBREAK_ALL);
    return 0;
}

/* ---- the simulator's controls ------------------------------------------------------ */

/* Raises (luaL_argerror) for an unknown key. */
static ami_sim_node_t *node_arg(lua_State *L, int idx)
{
    spec_run_t *s = run_of(L);
    const char *key = luaL_checkstring(L, idx);
    for (int i = 0; i < s->nnodes; i++)
        if (strcmp(s->names[i], key) == 0)
            return s->nodes[i];
    luaL_argerror(L, idx, "no simulated server with that key");
    return NULL;
}

static int sim_inject(lua_State *L)
{
    ami_sim_node_t *n = node_arg(L, 1);
    size_t len;
    const char *raw = luaL_checklstring(L, 2, &len);
    ami_sim_node_inject(n, raw, len);
    return 0;
}

static bool opt_bool(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static double opt_num(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static int sim_faults(lua_State *L)
{
    ami_sim_node_t *n = node_arg(L, 1);
    ami_sim_faults_t f = {0};
    if (lua_istable(L, 2)) {
        f.ping_silent = opt_bool(L, 2, "ping_silent");
        f.all_silent = opt_bool(L, 2, "all_silent");
        f.reject_login = opt_bool(L, 2, "reject_login");
        f.login_delay_ms = (uint32_t)opt_num(L, 2, "login_delay_ms");
        f.response_delay_ms = (uint32_t)opt_num(L, 2, "response_delay_ms");
        f.stall_reads = opt_bool(L, 2, "stall_reads");
        f.close_mid_response = opt_bool(L, 2, "close_mid_response");
        f.send_garbage = opt_bool(L, 2, "send_garbage");
        f.flood_events_per_sec = opt_num(L, 2, "flood_events_per_sec");
    }
    ami_sim_node_set_faults(n, &f);
    return 0;
}

static int sim_call_rate(lua_State *L)
{
    ami_sim_node_set_call_rate(node_arg(L, 1), luaL_checknumber(L, 2));
    return 0;
}

static int sim_stop(lua_State *L)
{
    ami_sim_node_stop(node_arg(L, 1));
    return 0;
}

static int sim_restart(lua_State *L)
{
    ami_err_t err;
    if (ami_sim_node_restart(node_arg(L, 1), &err) < 0)
        return luaL_error(L, "%s", err.msg);
    return 0;
}

#define FIELD(name) (lua_pushnumber(L, (lua_Number)st.name), lua_setfield(L, -2, #name))

static int sim_drop_sessions(lua_State *L)
{
    ami_sim_node_drop_sessions(node_arg(L, 1));
    return 0;
}

static int sim_rename(lua_State *L)
{
    ami_err_t err;
    if (ami_sim_node_rename(node_arg(L, 1), luaL_checkstring(L, 2), luaL_checkstring(L, 3), &err) < 0)
        return luaL_error(L, "%s", err.msg);
    return 0;
}

static int sim_stats(lua_State *L)
{
    ami_sim_node_stats_t st = ami_sim_node_stats(node_arg(L, 1));
    lua_newtable(L);
    FIELD(sessions_accepted);
    FIELD(sessions_live);
    FIELD(logins_ok);
    FIELD(logins_failed);
    FIELD(actions);
    FIELD(pings);
    FIELD(originates);
    FIELD(events_sent);
    FIELD(calls_started);
    FIELD(calls_active);
    return 1;
}

/* ---- the simulated web service (T.http) ------------------------------------------ */

static int web_url(lua_State *L)
{
    spec_run_t *s = run_of(L);
    lua_pushfstring(L, "http://127.0.0.1:%d%s", (int)ami_sim_http_port(s->web), luaL_optstring(L, 1, "/"));
    return 1;
}

static int web_refused_url(lua_State *L)
{
    spec_run_t *s = run_of(L);
    lua_pushfstring(L, "http://127.0.0.1:%d%s", (int)ami_sim_http_refused_port(s->web), luaL_optstring(L, 1, "/"));
    return 1;
}

static int web_fail_next(lua_State *L)
{
    lua_Number n = luaL_checknumber(L, 1);
    lua_Integer status = luaL_optinteger(L, 2, 500);
    luaL_argcheck(L, n >= 0 && n <= 1e6, 1, "a count from 0 to 1000000");
    luaL_argcheck(L, status >= 100 && status <= 599, 2, "an HTTP status");
    ami_sim_http_fail_next(run_of(L)->web, (uint32_t)n, (int)status);
    return 0;
}

static int web_requests(lua_State *L)
{
    spec_run_t *s = run_of(L);
    size_t n = ami_sim_http_seen_count(s->web);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        ami_sim_http_seen_t seen;
        if (!ami_sim_http_seen(s->web, i, &seen))
            break;
        lua_createtable(L, 0, 4);
        lua_pushstring(L, seen.method);
        lua_setfield(L, -2, "method");
        lua_pushstring(L, seen.path);
        lua_setfield(L, -2, "path");
        lua_pushstring(L, seen.headers);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, seen.body, seen.body_len);
        lua_setfield(L, -2, "body");
        ami_sim_http_seen_free(&seen);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int web_forget(lua_State *L)
{
    ami_sim_http_forget(run_of(L)->web);
    ami_sim_http_fail_next(run_of(L)->web, 0, 200);
    return 0;
}

static void extend_web(lua_State *L, void *ud)
{
    static const luaL_Reg web[] = {
        {"url", web_url},           {"refused_url", web_refused_url}, {"fail_next", web_fail_next},
        {"requests", web_requests}, {"forget", web_forget},           {NULL, NULL},
    };
    lua_newtable(L);
    for (const luaL_Reg *r = web; r->name; r++) {
        lua_pushlightuserdata(L, ud);
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "http");
}

static void extend(lua_State *L, void *ud)
{
    static const luaL_Reg top[] = {
        {"logs", t_logs}, {"clear_logs", t_clear_logs}, {"finish", t_finish}, {NULL, NULL},
    };
    static const luaL_Reg sim[] = {
        {"inject", sim_inject}, {"faults", sim_faults}, {"call_rate", sim_call_rate},
        {"stop", sim_stop},     {"restart", sim_restart}, {"stats", sim_stats},
        {"rename", sim_rename}, {"drop_sessions", sim_drop_sessions}, {NULL, NULL},
    };
    for (const luaL_Reg *r = top; r->name; r++) {
        lua_pushlightuserdata(L, ud);
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -2, r->name);
    }
    lua_newtable(L);
    for (const luaL_Reg *r = sim; r->name; r++) {
        lua_pushlightuserdata(L, ud);
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "sim");
    extend_web(L, ud);
}

/* ---- setup ------------------------------------------------------------------------- */

static int add_nodes(spec_run_t *s, double cps)
{
    for (int i = 0; i < s->nnodes; i++) {
        snprintf(s->names[i], sizeof s->names[i], "pbx%d", i + 1);
        ami_sim_node_config_t nc = {.name = s->names[i], .calls_per_second = cps, .seed = (uint32_t)(i + 1)};
        ami_err_t err;
        s->nodes[i] = ami_sim_add_node(s->sim, &nc, &err);
        if (!s->nodes[i]) {
            fprintf(stderr, "spec: cannot start the simulator: %s\n", err.msg);
            return -1;
        }
        ami_server_options_t o;
        ami_server_options_default(&o);
        o.server_key = s->names[i];
        o.host = "127.0.0.1";
        o.port = ami_sim_node_port(s->nodes[i]);
        o.username = "engine";
        o.secret = "s3cret";
        o.heartbeat_interval_ms = 1000;
        o.backoff_initial_ms = 50;
        o.backoff_max_ms = 500;
        if (ami_client_add_server(s->client, &o, &err) < 0) {
            fprintf(stderr, "spec: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    spec_run_t *s = t->data;
    fprintf(stderr, "spec: timed out; stopping\n");
    s->finished = true;
    s->exit_code = 124;
    ev_break(loop, EVBREAK_ALL);
}

static void on_connect_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    spec_run_t *s = t->data;
    if (ami_client_connected_count(s->client) == ami_client_server_count(s->client))
        ev_break(loop, EVBREAK_ONE);
}

static bool wait_connected(spec_run_t *s)
{
    ev_timer tick;
    ev_timer_init(&tick, on_connect_tick, 0.01, 0.01);
    tick.data = s;
    ev_timer_start(s->loop, &tick);
    for (int i = 0; i < 500 && ami_client_connected_count(s->client) < ami_client_server_count(s->client); i++)
        ev_run(s->loop, EVRUN_ONCE);
    ev_timer_stop(s->loop, &tick);
    return ami_client_connected_count(s->client) == ami_client_server_count(s->client);
}

/* The bootstrap: busted in the real globals, os.exit routed to T.finish. */
static char *bootstrap(int argc, char **argv)
{
    ami_buf_t c;
    ami_buf_init(&c, 0);
    ami_buf_printf(&c, "local T = require 'ami.testing'\n"
                       "package.path = [==[%s]==] .. ';./?.lua;' .. package.path\n"
                       "arg = {[0] = 'busted'",
                   ami_cli_engine_lua_path());
    for (int i = 0; i < argc; i++)
        ami_buf_printf(&c, ", [==[%s]==]", argv[i]);
    ami_buf_printf(&c, "}\n"
                       "os.exit = function(code) T.finish(code == nil and 0 or code); require('ami').sleep(3e7) end\n"
                       "local ok, err = xpcall(function() require('busted.runner')({standalone = false}) end,\n"
                       "                       debug.traceback)\n"
                       "if not ok then io.stderr:write(tostring(err), '\\n'); T.finish(1) end\n"
                       "T.finish(0)\n");
    ami_buf_append(&c, "", 1);
    return c.data;
}

static int setup(spec_run_t *s, double cps, uint32_t budget_ms)
{
    s->loop = ev_default_loop(EVFLAG_AUTO);
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = AMI_LOG_DEBUG;
    lc.sink = capture;
    lc.sink_ud = s;
    s->log = ami_logger_new(&lc);
    s->metrics = ami_metrics_new(20000);
    s->sim = ami_sim_new(s->loop, NULL);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = s->loop;
    cc.log = s->log;
    cc.metrics = s->metrics;
    s->client = ami_client_new(&cc, NULL);
    if (!s->log || !s->metrics || !s->sim || !s->client || add_nodes(s, cps) < 0)
        return -1;
    ami_err_t werr;
    ami_httpc_err_t herr = {0};
    s->web = ami_sim_http_start(&werr);
    s->httpc = ami_httpc_new(s->loop, NULL, s->metrics, s->log, &herr);
    if (!s->web || !s->httpc) {
        fprintf(stderr, "spec: %s\n", !s->web ? werr.msg : herr.msg);
        return -1;
    }
    /* Specs see the live call state, with the variables the simulator's
     * dialplan and the example scripts set. */
    static const char *const VARS[] = {"CALLTAG", "FOO", "CLICK_TO_CALL", "CLICK_REQUEST"};
    ami_callstate_config_t csc;
    ami_callstate_config_default(&csc);
    csc.variables = VARS;
    csc.nvariables = sizeof VARS / sizeof VARS[0];
    s->callstate = ami_callstate_new(s->client, &csc, NULL);
    if (!s->callstate)
        return -1;
    ami_lua_config_t lc2;
    ami_lua_config_default(&lc2);
    lc2.callstate = s->callstate;
    lc2.lua_path = ami_cli_engine_lua_path();
    lc2.handler_budget_ms = budget_ms;
    lc2.load_budget_ms = budget_ms;
    lc2.watch_scripts = false;
    lc2.testing = true;
    /* Specs set the variables a script reads (spec.helpers.env); a spec
     * run has no secrets to hide. */
    static const char *const every_variable[] = {"*", NULL};
    lc2.getenv_allow = every_variable;
    lc2.testing_extend = extend;
    lc2.testing_ud = s;
    lc2.http = s->httpc;
    ami_err_t err;
    s->rt = ami_lua_runtime_new(s->client, &lc2, &err);
    if (!s->rt || ami_lua_runtime_load(s->rt, &err) < 0) {
        fprintf(stderr, "spec: %s\n", err.msg);
        return -1;
    }
    ami_client_start(s->client);
    if (!wait_connected(s)) {
        fprintf(stderr, "spec: the simulated servers did not connect\n");
        return -1;
    }
    return 0;
}

static void teardown(spec_run_t *s)
{
    ev_timer_stop(s->loop, &s->timeout);
    ami_lua_runtime_free(s->rt);
    ami_httpc_free(s->httpc);
    ami_sim_http_stop(s->web);
    ami_callstate_free(s->callstate);
    ami_client_free(s->client);
    ami_sim_free(s->sim);
    ami_metrics_free(s->metrics);
    ami_logger_free(s->log);
    for (size_t i = 0; i < s->nlines; i++)
        ami_free(s->lines[(s->first + i) % LOG_RING]);
}

int ami_cli_spec(int argc, char **argv)
{
    ami_spec_args_t a;
    int parsed = ami_cli_spec_args(argc, argv, &a);
    if (parsed != 0)
        return parsed == 1 ? 0 : parsed;
    if (a.nodes > MAX_NODES || a.budget_ms > UINT32_MAX || a.timeout_s > 86400 * 7)
        return ami_cli_spec_usage("--nodes is at most 8, --timeout at most a week");
    spec_run_t *s = ami_calloc(1, sizeof *s);
    s->nnodes = (int)a.nodes;
    s->verbose = a.verbose;
    double cps = a.cps;
    uint32_t budget_ms = (uint32_t)a.budget_ms, timeout_s = (uint32_t)a.timeout_s;
    int first = a.first_busted;
    int rc = 1;
    if (setup(s, cps, budget_ms) == 0) {
        char *code = bootstrap(argc - first, argv + first);
        ami_err_t err;
        if (ami_lua_runtime_spawn_string(s->rt, "=busted", code, true, &err) < 0) {
            fprintf(stderr, "spec: %s\n", err.msg);
        } else {
            ev_timer_init(&s->timeout, on_timeout, timeout_s, 0.);
            s->timeout.data = s;
            ev_timer_start(s->loop, &s->timeout);
            ev_run(s->loop, 0);
            rc = s->finished ? s->exit_code : 1;
        }
        ami_free(code);
    }
    teardown(s);
    ami_free(s);
    return rc;
}
