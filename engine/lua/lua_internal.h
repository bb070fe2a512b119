/*
 * Private to engine/lua: the runtime's structures and the functions its
 * files share. One file per area of the `ami` API (lua_action.c,
 * lua_events.c, lua_timer.c, lua_log.c, ...), each with one
 * ami_lua_inject_<area>(L, gen) that puts its functions into the module.
 *
 * Longjmp discipline: functions marked MAY_RAISE can luaL_error (longjmp out
 * of the C frame). Before calling one, nothing may be half-built: no
 * malloc'd memory only a local holds, no half-linked structure.
 */
#ifndef AMI_LUA_INTERNAL_H
#define AMI_LUA_INTERNAL_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "cluster/client.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"

#define MAY_RAISE /* this function can luaL_error */

typedef struct gen gen_t;
typedef struct co co_t;
typedef struct wait wait_t;
typedef struct handler handler_t;
typedef struct filter filter_t;

/* ---- filters (ami.on, ami.wait_for) ------------------------------------------- */

typedef struct cond {
    char *key;
    size_t key_len;
    char *value;       /* exact value, or the Lua pattern */
    size_t value_len;
    bool pattern;      /* value is a Lua pattern (ami.pattern(...)) */
} cond_t;

struct filter {
    char *event;       /* lowercased event name, NULL = any */
    size_t event_len;
    uint32_t event_hash;
    cond_t *conds;
    size_t nconds;
};

/* Build a filter from the value at idx: an event name string, "*", or a table
 * {Event = "Hangup", Channel = "x", Cause = ami.pattern("^1")}. MAY_RAISE. */
MAY_RAISE void filter_from_lua(lua_State *L, int idx, filter_t *f);
void filter_free(filter_t *f);
/* Does msg match? Patterns run string.find in L (no yield, no error escapes). */
bool filter_match(const filter_t *f, lua_State *L, const ami_msg_t *msg, uint32_t name_hash,
                  const char *name, size_t name_len);

/* ---- handlers and waiters ---------------------------------------------------------- */

#define HANDLER_BUCKETS 128u

struct handler {
    uint32_t id;
    int fn_ref;          /* registry ref of the function */
    filter_t filter;
    char label[128];     /* "Hangup handler at scripts/x.lua:12" */
    uint64_t since;      /* registered during this event: it does not see it */
    bool dead;
    handler_t *next;
};

/* ---- coroutines and what they wait for ---------------------------------------- */

typedef enum co_state { CO_IDLE = 0, CO_RUNNING, CO_PARKED, CO_QUEUED } co_state_t;

struct co {
    lua_State *L;
    int ref;             /* anchors the thread in the registry */
    gen_t *gen;
    co_state_t state;
    wait_t *wait;        /* set while parked */
    const char *label;   /* what it runs, for logs (points into a handler or "spawn") */
    char label_buf[96];
    int nargs;           /* queued runs: arguments already on its stack */
    co_t *prev, *next;   /* idle pool, parked list or run queue */
};

typedef enum wait_kind { WAIT_SLEEP = 0, WAIT_ACTION, WAIT_EVENT } wait_kind_t;
typedef enum wait_state { WAIT_PREPARED = 0, WAIT_ARMED } wait_state_t;

struct wait {
    wait_kind_t kind;
    wait_state_t state;
    co_t *co;
    ev_timer timer;                  /* sleep; wait_for timeout */
    bool idle;                       /* ami.every between runs: no work in progress */
    uint32_t timeout_ms;             /* wait_for: for the timeout message */
    /* WAIT_ACTION */
    ami_action_handle_t action;
    bool action_live;                /* still registered with the client */
    bool collect;                    /* ami.collect: return the items list */
    int items_ref;                   /* table of item events, LUA_NOREF if none */
    int response_ref;                /* the first response, LUA_NOREF if none */
    const char *server;              /* the server's key (the client's string) */
    /* WAIT_EVENT */
    filter_t filter;
    uint64_t since;                  /* armed during this event: it does not see it */
    wait_t *wprev, *wnext;           /* in gen->waiters */
    bool linked;
};

/* ---- generations ------------------------------------------------------------------- */

typedef enum gen_state { GEN_LOADING = 0, GEN_ACTIVE, GEN_DRAINING } gen_state_t;

struct gen {
    ami_lua_runtime_t *rt;
    lua_State *L;
    uint64_t id;
    gen_state_t state;
    int64_t mem_bytes;
    size_t mem_limit;
    lua_Alloc base_alloc;            /* LuaJIT's own allocator, wrapped for accounting */
    void *base_ud;
    bool mem_refused;
    handler_t *buckets[HANDLER_BUCKETS];
    handler_t *every;                /* "*" handlers */
    uint32_t nhandlers;
    uint32_t next_handler_id;
    wait_t *waiters;                 /* ami.wait_for, in arrival order */
    wait_t *waiters_tail;
    uint32_t nwaiters;
    co_t *idle;                      /* pool of finished coroutines */
    uint32_t nidle;
    co_t *parked;                    /* waiting coroutines */
    uint32_t nparked;
    uint32_t nidle_waits;            /* of which idle (ami.every between runs) */
    int env_ref;                     /* the shared base environment */
    int server_names_ref;            /* table: server index -> key string */
    int event_mt_ref;                /* metatable of event objects */
    int result_mt_ref;               /* metatable of action results */
    int pattern_mt_ref;              /* metatable marking ami.pattern values */
    int dispatch_ref;                /* dispatch's protected entry, made once */
    int note_ref;                    /* action notes' protected entry, made once */
    ev_timer grace_timer;
    gen_t *next;                     /* runtime's list of draining generations */
};

/* ---- the runtime --------------------------------------------------------------------- */

typedef struct watchdog {
    pthread_t thread;
    bool running;
    pthread_mutex_t lock;            /* held while touching `target` or closing a state */
    pthread_cond_t wake;
    bool stop;
    _Atomic int64_t started_ns;      /* 0 when no handler runs */
    _Atomic uint64_t seq;            /* bumps at each resume */
    lua_State *target;               /* state of the running handler (under lock) */
    uint64_t fired_seq;
    _Atomic int64_t budget_ns;
} watchdog_t;

struct ami_lua_runtime {
    ami_lua_config_t cfg;
    char *scripts_dir;
    char *lua_path;
    ami_client_t *client;
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_subscription_t *sub;
    gen_t *current;
    gen_t *draining;                 /* list of old generations */
    uint64_t next_gen_id;
    bool drained;                    /* no new events to handlers */
    uint64_t event_seq;              /* bumps per dispatched event */
    uint32_t dispatch_depth;
    bool handlers_dead;              /* ami.off during dispatch: sweep later */
    co_t *running;                   /* coroutine being resumed, NULL outside Lua */
    wait_t *preparing;               /* wait set up by an ami.* call about to yield */
    int64_t budget_ns;               /* for the running resume */
    bool watchdog_fired;             /* the hook stopped the running coroutine */
    co_t *runq, *runq_tail;          /* spawned coroutines to start */
    uint32_t nrunq;
    ev_idle runq_idle;
    watchdog_t wd;
    ami_lua_stats_t stats;
    int inotify_fd;
    ev_io inotify_io;
    ev_timer debounce;
    /* metrics */
    ami_counter_t *m_handler_runs;
    ami_counter_t *m_handler_errors;
    ami_counter_t *m_handler_kills;
    ami_counter_t *m_refused;
    ami_counter_t *m_waiters_refused;
    ami_counter_t *m_handlers_refused;
    ami_counter_t *m_memory_refused;
    ami_counter_t *m_reloads;
    ami_counter_t *m_reload_failures;
    ami_counter_t *m_events_unhandled;
    ami_gauge_t *m_parked;
    ami_gauge_t *m_memory;
    ami_gauge_t *m_generations;
};

/* ---- lua_sched.c: coroutines -------------------------------------------------------- */

co_t *sched_co_get(gen_t *g);                 /* from the pool or new; NULL if refused */
void sched_co_release(co_t *co);              /* back to the pool or freed */
/* Resume co with nargs arguments already on its stack. Handles yield/park,
 * completion, errors (logged), the watchdog. */
void sched_resume(co_t *co, int nargs);
/* The running coroutine if L is it; else raises a clear error. MAY_RAISE */
MAY_RAISE co_t *sched_require_co(lua_State *L, const char *fn_name);
/* Start a wait for the running coroutine; returns lua_yield's value. */
wait_t *sched_wait_new(co_t *co, wait_kind_t kind);
int sched_yield_for(lua_State *L, wait_t *w);
/* The waited-for thing happened: resume co with nresults pushed on co->L. */
void sched_wake(wait_t *w, int nresults);
/* Undo a wait's registrations (timer, action, waiter list) and free it. */
void sched_wait_cancel(wait_t *w);
/* Queue co to start on the next loop iteration with nargs on its stack. */
bool sched_enqueue(co_t *co, int nargs);
void sched_init(ami_lua_runtime_t *rt);
void sched_deinit(ami_lua_runtime_t *rt);
/* Cancel every parked/queued coroutine of g (no resume). */
void sched_cancel_gen(gen_t *g);
/* Cancel g's coroutines that sit idle between periodic runs (drain). */
void sched_cancel_idle(gen_t *g);

/* ---- lua_watchdog.c ---------------------------------------------------------------- */

int watchdog_start(ami_lua_runtime_t *rt, ami_err_t *err);
void watchdog_stop(ami_lua_runtime_t *rt);
void watchdog_enter(ami_lua_runtime_t *rt, lua_State *L, int64_t budget_ns);
void watchdog_leave(ami_lua_runtime_t *rt, lua_State *L);
/* Called before a state is closed: the watchdog must let go of it. */
void watchdog_forget(ami_lua_runtime_t *rt, lua_State *L);

/* ---- lua_event.c: event objects ------------------------------------------------------ */

/* Push a copy of msg as an event object (valid forever, unchanged). */
void event_push(gen_t *g, lua_State *L, const ami_msg_t *msg, const char *server_key);
void ami_lua_inject_event(lua_State *L, gen_t *g);

/* ---- per-area injections ------------------------------------------------------------------ */

void ami_lua_inject_handlers(lua_State *L, gen_t *g);   /* ami.on, ami.off, ami.wait_for, ami.pattern */
void ami_lua_inject_action(lua_State *L, gen_t *g);     /* ami.action, ami.collect */
void ami_lua_inject_timer(lua_State *L, gen_t *g);      /* ami.sleep, ami.spawn, ami.now, ami.time */
void ami_lua_inject_log(lua_State *L, gen_t *g);        /* ami.log.* */
void ami_lua_inject_metrics(lua_State *L, gen_t *g);    /* ami.metrics.* */
void ami_lua_inject_servers(lua_State *L, gen_t *g);    /* ami.servers, ami.server */
void ami_lua_inject_calls(lua_State *L, gen_t *g);      /* ami.channels, ami.channel, ami.calls */
/* Specs only: package.loaded["ami.testing"]; the ami table stays on top. */
void ami_lua_inject_testing(lua_State *L, gen_t *g);
/* Run a script file in g as at load time, in L (a running coroutine or the
 * main thread). MAY_RAISE: errors propagate to the caller. */
MAY_RAISE void run_script_in(lua_State *L, gen_t *g, const char *path);

/* lua_sandbox.c: the base environment scripts see (at the top of L's stack
 * on return). Blocked functions raise an error that says why and what to
 * use instead. */
void sandbox_push_env(lua_State *L, gen_t *g);
/* Load a script file as a chunk with its own environment over the base. */
int sandbox_load_file(lua_State *L, gen_t *g, const char *path, ami_err_t *err);

/* lua_handlers.c: dispatch one event to g's handlers and waiters. */
void handlers_dispatch(gen_t *g, const ami_msg_t *msg, const char *server_key, bool handlers_too);
void handlers_free_all(gen_t *g);
/* ami.off for every handler (safe during dispatch). */
void handlers_remove_all(gen_t *g);
void waiter_unlink(gen_t *g, wait_t *w);

/* Helpers */
gen_t *gen_of(lua_State *L);
/* Call the C function stored at registry ref fn_ref with ud, protected.
 * Unlike lua_cpcall it allocates nothing (lua_cpcall makes a closure per
 * call, which shows on the per-event path). 0, or a Lua status with the
 * error message on top of L. */
int gen_pcall_ref(lua_State *L, int fn_ref, void *ud);
void log_lua_error(ami_lua_runtime_t *rt, const char *what, const char *label, lua_State *co, const char *msg);
/* Push "kind: message" for an error status. */
void push_error(lua_State *L, ami_status_t code, const char *msg);

#endif
