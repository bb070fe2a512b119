/*
 * The Lua runtime: call-handling scripts as coroutines over AMI events and
 * actions. A client of the C API (cluster/client.h) like any embedder.
 *
 * Scripts live in one folder; every *.lua file in it is loaded, in name
 * order, into one "generation". Each file is a script with a lua_State of
 * its own: its own globals over a read-only base, the `ami` module, none of
 * the functions that would block the loop, and its own bounds (memory, log
 * rate, metric series, coroutines). No script can reach another's state.
 *
 * Every handler invocation runs in its own coroutine (taken from a pool and
 * reused, not created per event); a handler that calls ami.action /
 * ami.sleep / ami.wait_for yields and is resumed by the loop when the answer,
 * the timer or the event arrives. Nothing a script does can make the loop
 * wait: blocking functions are absent, and a handler that runs longer than
 * its budget without yielding is stopped by the watchdog (a count hook set
 * from a watchdog thread; the JIT compiler is off in script states because
 * compiled traces never run hooks).
 *
 * Reload (ami_lua_runtime_reload, SIGHUP, a file change) loads a complete new
 * generation first; on any load error the old one keeps running. On success
 * the new generation receives every event from then on, the old one finishes
 * its waiting coroutines (or they are cancelled after the grace period) and
 * its state is closed. Connections are never touched by a reload.
 *
 * Thread: the loop thread only (the watchdog thread is internal).
 */
#ifndef AMI_LUA_RUNTIME_H
#define AMI_LUA_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/client.h"
#include "util/err.h"

struct lua_State;
struct ami_callstate;

typedef struct ami_lua_config {
    const char *scripts_dir;     /* every *.lua here is loaded; NULL = no scripts */
    const char *lua_path;        /* extra require() path for helper modules (lua/ of the engine) */
    uint32_t handler_budget_ms;  /* longest a handler may run without yielding; default 20 */
    uint32_t load_budget_ms;     /* longest a script's top level may run; default 2000 */
    uint32_t reload_grace_ms;    /* old generation's coroutines get this long; default 30000 */
    uint32_t max_coroutines;     /* coroutines waiting or queued, per script; default 100000 */
    uint32_t max_handlers;       /* ami.on registrations per script; default 10000 */
    uint32_t max_waiters;        /* ami.wait_for waiting at once, per script; default 100000 */
    size_t memory_limit;         /* bytes per script (its Lua state); default 512 MiB; 0 = default */
    uint32_t log_lines_per_sec;  /* per script, with a burst of one second's worth; default 1000 */
    uint32_t log_bytes_per_sec;  /* per script; default 1 MiB */
    uint32_t max_metric_series;  /* series one script may register; default 1000 */
    uint32_t filter_max_steps;   /* pattern steps per filter match (ami.pattern); default 100000 */
    /* os.getenv for scripts: NULL-terminated lists. allow: names, or prefixes
     * ending in '*' ("CRM_*"); NULL = no variable at all. deny: names never
     * given whatever allow says (the config's secret_env variables). */
    const char *const *getenv_allow;
    const char *const *getenv_deny;
    uint32_t reload_debounce_ms; /* file-change reloads wait this long for quiet; default 300 */
    bool watch_scripts;          /* reload when a file in scripts_dir changes; default true */
    bool jit;                    /* unsafe: JIT on, the watchdog cannot stop compiled loops */
    /* ami.http's client (engine/httpc), borrowed: it must outlive the
     * runtime. NULL: ami.http.request answers nil, "disabled: ...". */
    struct ami_httpc *http;
    /* The live call state behind ami.channels/channel/calls; NULL: they
     * answer nil, "config: ...". Not owned; it must outlive the runtime. */
    struct ami_callstate *callstate;
    /* Specs only: provide require "ami.testing" (load_script, reset, metric,
     * wait_until) and let the tool add its own functions to that table,
     * which is on top of L's stack when testing_extend is called. */
    bool testing;
    void (*testing_extend)(struct lua_State *L, void *ud);
    void *testing_ud;
} ami_lua_config_t;

void ami_lua_config_default(ami_lua_config_t *cfg);

typedef struct ami_lua_runtime ami_lua_runtime_t;

/* Subscribes to every event of the client. The runtime does not own client. */
ami_lua_runtime_t *ami_lua_runtime_new(ami_client_t *client, const ami_lua_config_t *cfg,
                                       ami_err_t *err);
void ami_lua_runtime_free(ami_lua_runtime_t *rt);

/* High availability (engine/ha): from now on handlers run only for events
 * of servers this instance owns, ami.action/ami.collect to another server
 * fail at once with "not_owner: ...", ami.server(key) reports owner and
 * epoch, and ami.kv works. ami.wait_for, ami.every and ami.spawn are not
 * gated. NULL (the default): every server is ours, ami.kv is unavailable.
 * ha must outlive the runtime. */
struct ami_ha;
void ami_lua_runtime_set_ha(ami_lua_runtime_t *rt, struct ami_ha *ha);

/* Load the first generation. -1 with a message naming file and line. */
int ami_lua_runtime_load(ami_lua_runtime_t *rt, ami_err_t *err);

/* Load a new generation and switch to it; on failure keep the old one. */
int ami_lua_runtime_reload(ami_lua_runtime_t *rt, const char *why, ami_err_t *err);

/* Stop taking events; coroutines keep running until they finish. */
void ami_lua_runtime_drain(ami_lua_runtime_t *rt);
/* Coroutines still waiting, across generations. */
size_t ami_lua_runtime_waiting(const ami_lua_runtime_t *rt);
/* Cancel every waiting coroutine and close every generation. */
void ami_lua_runtime_shutdown(ami_lua_runtime_t *rt);

/* Run a chunk of Lua in a new coroutine of the current generation. The
 * chunk sees the script environment, or with trusted (tools, the spec
 * runner) the state's real globals. */
int ami_lua_runtime_spawn_string(ami_lua_runtime_t *rt, const char *name, const char *code,
                                 bool trusted, ami_err_t *err);

typedef struct ami_lua_stats {
    uint64_t generation;          /* id of the current generation (1, 2, ...) */
    uint64_t generations_live;    /* current + draining */
    uint64_t events_dispatched;   /* events that matched at least one handler */
    uint64_t handler_runs;
    uint64_t handler_errors;
    uint64_t handler_kills;       /* stopped by the watchdog */
    uint64_t coroutines_created;  /* new threads (the pool makes this small) */
    uint64_t coroutines_parked;   /* waiting right now */
    uint64_t refused;             /* handler runs refused: max_coroutines */
    uint64_t reloads;
    uint64_t reload_failures;
    int64_t lua_memory;           /* bytes, all live generations */
} ami_lua_stats_t;

void ami_lua_runtime_stats(const ami_lua_runtime_t *rt, ami_lua_stats_t *out);

#endif
