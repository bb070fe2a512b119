#include "lua_world.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "httpc/httpc.h"

static void add_server(lua_world_t *w, const char *key, ami_sim_node_t *node, bool heartbeat)
{
    ami_server_options_t o;
    ami_server_options_default(&o);
    o.server_key = key;
    o.host = "127.0.0.1";
    o.port = ami_sim_node_port(node);
    o.username = "engine";
    o.secret = "s3cret";
    o.heartbeat_interval_ms = heartbeat ? 200 : 0;
    o.heartbeat_max_failures = 2;
    o.backoff_initial_ms = 20;
    o.backoff_max_ms = 100;
    o.action_timeout_ms = 3000;
    ami_err_t err;
    if (ami_client_add_server(w->client, &o, &err) < 0)
        fail_msg("add_server: %s", err.msg);
}

static bool all_connected(void *ud)
{
    lua_world_t *w = ud;
    return ami_client_connected_count(w->client) == ami_client_server_count(w->client);
}

lua_world_t *lua_world_new(const lua_world_options_t *opt)
{
    lua_world_options_t d = {.nodes = 1};
    if (!opt)
        opt = &d;
    lua_world_t *w = calloc(1, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/ami-lua-test-XXXXXX");
    if (!mkdtemp(w->dir))
        fail_msg("mkdtemp failed");
    w->loop = ev_loop_new(EVFLAG_AUTO);
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = AMI_LOG_INFO;
    log_capture_attach(&w->lines, &lc);
    w->log = ami_logger_new(&lc);
    w->metrics = ami_metrics_new(10000);
    w->sim = ami_sim_new(w->loop, NULL);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = w->loop;
    cc.log = w->log;
    cc.metrics = w->metrics;
    w->client = ami_client_new(&cc, NULL);
    int nodes = opt->nodes == 2 ? 2 : 1;
    static const char *const names[] = {"pbx1", "pbx2"};
    for (int i = 0; i < nodes; i++) {
        ami_sim_node_config_t nc = {.name = names[i]};
        w->nodes[i] = ami_sim_add_node(w->sim, &nc, NULL);
        add_server(w, names[i], w->nodes[i], !opt->no_heartbeat);
    }
    ami_client_start(w->client);
    if (!harness_run_until(w->loop, all_connected, w, 5000))
        fail_msg("servers did not connect");
    if (opt->callstate) {
        static const char *const VARS[] = {"CALLTAG", "FOO"};
        ami_callstate_config_t csc;
        ami_callstate_config_default(&csc);
        csc.variables = VARS;
        csc.nvariables = 2;
        w->cs = ami_callstate_new(w->client, &csc, NULL);
        if (!w->cs)
            fail_msg("callstate");
    }
    ami_lua_config_t lcfg;
    ami_lua_config_default(&lcfg);
    if (opt->lua)
        lcfg = *opt->lua;
    lcfg.callstate = w->cs;
    lcfg.scripts_dir = w->dir;
    lcfg.lua_path = AMI_SOURCE_DIR "/lua/?.lua;" AMI_SOURCE_DIR "/lua/?/init.lua";
    lcfg.handler_budget_ms = opt->budget_ms ? opt->budget_ms : 50;
    lcfg.reload_grace_ms = opt->grace_ms ? opt->grace_ms : 2000;
    lcfg.watch_scripts = opt->watch;
    lcfg.reload_debounce_ms = 50;
    if (opt->http) {
        ami_httpc_err_t herr = {0};
        w->httpc = ami_httpc_new(w->loop, opt->http, w->metrics, w->log, &herr);
        if (!w->httpc)
            fail_msg("http client: %s", herr.msg);
        lcfg.http = w->httpc;
    }
    ami_err_t err;
    w->rt = ami_lua_runtime_new(w->client, &lcfg, &err);
    if (!w->rt)
        fail_msg("runtime: %s", err.msg);
    return w;
}

void lua_world_free(lua_world_t *w)
{
    ami_lua_runtime_free(w->rt);
    ami_httpc_free(w->httpc);
    ami_callstate_free(w->cs);
    ami_client_free(w->client);
    ami_sim_free(w->sim);
    ami_logger_free(w->log);
    ami_metrics_free(w->metrics);
    ev_loop_destroy(w->loop);
    log_capture_free(&w->lines);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", w->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", w->dir);
    free(w);
}

void lua_world_write(lua_world_t *w, const char *name, const char *source)
{
    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", w->dir, name);
    FILE *f = fopen(tmp, "w");
    if (!f)
        fail_msg("cannot write %s", tmp);
    fputs(source, f);
    fclose(f);
    if (rename(tmp, path) != 0) /* atomic, as editors do */
        fail_msg("cannot rename %s", tmp);
}

void lua_world_remove(lua_world_t *w, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    unlink(path);
}

void lua_world_load(lua_world_t *w)
{
    ami_err_t err;
    if (ami_lua_runtime_load(w->rt, &err) < 0)
        fail_msg("load: %s", err.msg);
}

void lua_world_inject(lua_world_t *w, int node, const char *raw)
{
    ami_sim_node_inject(w->nodes[node], raw, strlen(raw));
}

int lua_world_count_log(lua_world_t *w, const char *needle)
{
    return (int)log_capture_count(&w->lines, needle);
}

typedef struct log_wait {
    lua_world_t *w;
    const char *needle;
    int count;
} log_wait_t;

static bool log_has(void *ud)
{
    log_wait_t *lw = ud;
    return lua_world_count_log(lw->w, lw->needle) >= lw->count;
}

bool lua_world_wait_log(lua_world_t *w, const char *needle, int count, uint32_t ms)
{
    log_wait_t lw = {w, needle, count};
    return harness_run_until(w->loop, log_has, &lw, ms);
}

void lua_world_run_for(lua_world_t *w, uint32_t ms)
{
    harness_run_for(w->loop, ms);
}

double lua_world_metric(lua_world_t *w, const char *name, const char *const *labels)
{
    double v = -1;
    ami_metrics_value(w->metrics, name, labels, &v);
    return v;
}
