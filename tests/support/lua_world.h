/*
 * A whole engine for Lua tests: one loop, a simulated Asterisk (one or two
 * nodes), the client logged in to them, and the Lua runtime loading scripts
 * from a temporary folder. Log lines are captured for assertions.
 */
#ifndef AMI_TEST_LUA_WORLD_H
#define AMI_TEST_LUA_WORLD_H

#include <stdbool.h>
#include <stdint.h>

#include "callstate/callstate.h"
#include "cluster/client.h"
#include "lua/runtime.h"
#include "sim/sim.h"
#include "log_capture.h"

typedef struct lua_world {
    struct ev_loop *loop;
    ami_sim_t *sim;
    ami_sim_node_t *nodes[2];
    ami_client_t *client;
    ami_metrics_t *metrics;
    ami_logger_t *log;
    log_capture_t lines;      /* every log line (log_capture_text: all of them) */
    ami_lua_runtime_t *rt;
    ami_callstate_t *cs;      /* with opt.callstate: tracks CALLTAG and FOO */
    char dir[256];            /* the scripts folder */
    struct ami_httpc *httpc;  /* ami.http's client when options.http is set */
} lua_world_t;

typedef struct lua_world_options {
    int nodes;                /* 1 (default) or 2: pbx1, pbx2 */
    uint32_t budget_ms;       /* handler budget; default 50 */
    uint32_t grace_ms;        /* reload grace; default 2000 */
    bool watch;               /* reload on file changes */
    bool no_heartbeat;        /* no Ping every 200 ms: nothing wakes an idle loop */
    const ami_lua_config_t *lua; /* base runtime config (limits...); the world sets dir, path, budgets */
    const struct ami_httpc_config *http; /* turn ami.http on with these settings */
    bool callstate;           /* the live call state behind ami.channels */
} lua_world_options_t;

/* Creates the world, connects, but loads no scripts yet. */
lua_world_t *lua_world_new(const lua_world_options_t *opt);
void lua_world_free(lua_world_t *w);

/* Write scripts/<name> with the given source. */
void lua_world_write(lua_world_t *w, const char *name, const char *source);
void lua_world_remove(lua_world_t *w, const char *name);
/* Load the scripts; fails the test on error. */
void lua_world_load(lua_world_t *w);

/* Send a raw event from node i (0 or 1). */
void lua_world_inject(lua_world_t *w, int node, const char *raw);

/* Run until the log holds `needle` count times (true), or ms pass (false). */
bool lua_world_wait_log(lua_world_t *w, const char *needle, int count, uint32_t ms);
int lua_world_count_log(lua_world_t *w, const char *needle);
void lua_world_run_for(lua_world_t *w, uint32_t ms);
double lua_world_metric(lua_world_t *w, const char *name, const char *const *labels);

#endif
