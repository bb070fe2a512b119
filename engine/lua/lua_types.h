/*
 * Private to engine/lua: the runtime's types (prototypes are in
 * lua_internal.h). Kept apart so that every file of the runtime can see
 * the structures without pulling in every other file's functions.
 *
 * The shape of the runtime:
 *
 *   runtime -> generation (current, and old ones draining after a reload)
 *                -> script (one per *.lua file: a lua_State of its own)
 *                     -> handlers, waiters, coroutines (pooled, parked)
 *
 * A script is the unit of isolation: its own Lua state, memory limit, log
 * rate, metric series and coroutine pool. Nothing one script does can
 * reach another's globals, libraries or coroutines, and one script at its
 * limits leaves every other one working.
 *
 * Everything here belongs to the loop thread, except the watchdog's fields
 * marked atomic, which its thread reads.
 */
#ifndef AMI_LUA_TYPES_H
#define AMI_LUA_TYPES_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <lua.h>

#include "cluster/client.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"

typedef struct gen gen_t;
typedef struct script script_t;
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

/* ---- handlers -------------------------------------------------------------------- */

#define HANDLER_BUCKETS 128u

struct handler {
    uint32_t id;
    uint32_t order;      /* registration order within the script */
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
    script_t *sc;
    co_state_t state;
    wait_t *wait;        /* set while parked */
    const char *label;   /* what it runs, for logs (points into a handler or label_buf) */
    char label_buf[96];
    int nargs;           /* queued runs: arguments already on its stack */
    co_t *prev, *next;   /* idle pool, parked list or run queue */
};

typedef enum wait_kind { WAIT_SLEEP = 0, WAIT_ACTION, WAIT_EVENT, WAIT_HTTP, WAIT_EXTERNAL } wait_kind_t;
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
    wait_t *wprev, *wnext;           /* in the script's waiters */
    bool linked;
    /* Other kinds (WAIT_HTTP, WAIT_EXTERNAL): called when the wait is
     * disposed of, woken or cancelled (a cancelled coroutine, a failed
     * yield), unless the waker cleared it first; and the kind's state. */
    void (*cancel)(wait_t *w);
    void *ext;
};

/* ---- scripts ------------------------------------------------------------------------ */

typedef struct log_bucket {
    double tokens;                   /* lines that may still be written now */
    double bytes;                    /* bytes likewise */
    int64_t refill_ns;
    uint64_t dropped;                /* since the last "dropped" notice */
    int64_t notice_ns;
} log_bucket_t;

struct script {
    gen_t *gen;
    lua_State *L;
    char name[64];                   /* "hangup_causes.lua", or "console" */
    /* memory: every allocation of the state, engine's pushes included */
    int64_t mem_bytes;
    size_t mem_limit;
    lua_Alloc base_alloc;            /* LuaJIT's own allocator, wrapped for accounting */
    void *base_ud;
    uint32_t strict;                 /* > 0: allocations past mem_limit are refused */
    int64_t last_gc_ns;
    int64_t refusal_log_ns;          /* last "event not given" log line */
    int64_t filter_log_ns;           /* last "filter over budget" log line */
    /* handlers and waiters */
    handler_t *buckets[HANDLER_BUCKETS];
    handler_t *every;                /* "*" handlers */
    handler_t *server_handlers;      /* ami.on_server: the engine's ServerState events */
    uint32_t nhandlers;
    uint32_t next_handler_id;
    wait_t *waiters;                 /* ami.wait_for, in arrival order */
    wait_t *waiters_tail;
    uint32_t nwaiters;
    /* coroutines */
    co_t *idle;                      /* pool of finished coroutines */
    uint32_t nidle;
    co_t *parked;                    /* waiting coroutines */
    uint32_t nparked;
    uint32_t nidle_waits;            /* of which idle (ami.every between runs) */
    uint32_t nqueued;                /* in the runtime's run queue */
    /* registry refs of this state */
    int env_ref;                     /* the base environment */
    int event_mt_ref;                /* metatable of event objects */
    int pattern_mt_ref;              /* metatable marking ami.pattern values */
    int dispatch_ref;                /* dispatch's protected entry, made once */
    int note_ref;                    /* action notes' protected entry, made once */
    int result_refs[7];              /* a result's keys and metatable (lua_action.c) */
    int owned_ref;                   /* weak set of the engine's threads */
    int frozen_ref;                  /* weak map: read-only table -> its name */
    /* bounds */
    log_bucket_t log;
    uint32_t metric_series;          /* series this script registered */
    ami_counter_t *m_memory_refused;
    ami_counter_t *m_log_dropped;
    ami_counter_t *m_series_refused;
    ami_counter_t *m_events_refused;
    script_t *next;
};

/* ---- generations ------------------------------------------------------------------- */

typedef enum gen_state { GEN_LOADING = 0, GEN_ACTIVE, GEN_DRAINING } gen_state_t;

struct gen {
    ami_lua_runtime_t *rt;
    uint64_t id;
    gen_state_t state;
    script_t *scripts;               /* in load order */
    script_t *scripts_tail;
    uint32_t nscripts;
    uint32_t nparked;                /* over every script */
    uint32_t nidle_waits;
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
    char **getenv_allow;             /* names, or prefixes ending in '*' */
    size_t ngetenv_allow;
    char **getenv_deny;              /* secret variables: never given to scripts */
    size_t ngetenv_deny;
    ami_client_t *client;
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_subscription_t *sub;
    struct ami_ha *ha;               /* high availability (lua_ha.c); NULL: every server is ours */
    bool watching_states;            /* registered with ami_client_on_state */
    gen_t *current;
    gen_t *draining;                 /* list of old generations */
    uint64_t next_gen_id;
    bool drained;                    /* no new events to handlers */
    uint64_t event_seq;              /* bumps per dispatched event */
    uint32_t dispatch_depth;
    bool handlers_dead;              /* ami.off during dispatch: sweep later */
    co_t *running;                   /* coroutine being resumed, NULL outside Lua */
    script_t *loading;               /* script whose top level runs, NULL otherwise */
    wait_t *preparing;               /* wait set up by an ami.* call about to yield */
    int64_t budget_ns;               /* for the running resume */
    bool watchdog_fired;             /* the hook stopped the running code */
    co_t *runq, *runq_tail;          /* coroutines to start or resume */
    uint32_t nrunq;
    ev_prepare runq_prepare;         /* runs the queue every iteration, under any load */
    ev_idle runq_idle;               /* keeps the loop from blocking while the queue is not empty */
    wait_t *spare_waits;             /* disposed waits kept for the next (linked by wnext), */
    uint32_t nspare_waits;           /* at most SPARE_WAITS_MAX: an action's wait per round trip */
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
    ami_counter_t *m_filter_budget;
    ami_counter_t *m_foreign_resume;
    ami_gauge_t *m_parked;
    ami_gauge_t *m_memory;
    ami_gauge_t *m_generations;
};

#endif
