/*
 * Private to engine/lua: the functions the runtime's files share (the
 * types are in lua_types.h). One file per area of the `ami` API
 * (lua_action.c, lua_handlers.c, lua_timer.c, lua_log.c, ...), each with
 * one ami_lua_inject_<area>(L, sc) that puts its functions into the module.
 *
 * Longjmp discipline: functions marked MAY_RAISE can luaL_error (longjmp out
 * of the C frame). Before calling one, nothing may be half-built: no
 * malloc'd memory only a local holds, no half-linked structure.
 *
 * Every C function reachable from Lua checks its arguments' types (an
 * engine object by its metatable or tag, never by assumption), and every
 * metatable the engine creates is locked (__metatable): scripts are
 * untrusted code.
 */
#ifndef AMI_LUA_INTERNAL_H
#define AMI_LUA_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>

#include "lua/lua_types.h"

#define MAY_RAISE /* this function can luaL_error */

/* ---- lua_script.c: one script's Lua state ----------------------------------------- */

/* A new state with the ami module and the sandbox built, not yet running
 * anything. NULL and err on failure. */
script_t *script_new(gen_t *g, const char *name, ami_err_t *err);
/* Cancel its coroutines, free its handlers, close the state. */
void script_close(script_t *sc);
/* The script owning L (any thread of its state). */
script_t *script_of(lua_State *L);
/* Allocations past the memory limit are refused between enter and leave
 * (script code, and the engine's protected pushes); elsewhere the engine's
 * own small pushes may pass it so they never fail unprotected. */
static inline void script_strict_enter(script_t *sc) { sc->strict++; }
static inline void script_strict_leave(script_t *sc) { sc->strict--; }
/* After a run: collect garbage early when close to the limit. */
void script_after_run(script_t *sc);
/* Is thread L one of the engine's own coroutines? */
bool script_owns_thread(script_t *sc, lua_State *L, int idx);

/* ---- lua_gen.c: generations ------------------------------------------------------ */

gen_t *gen_new(ami_lua_runtime_t *rt, ami_err_t *err);
/* Load every script of the folder into g; -1 with a message naming file and line. */
int gen_load_scripts(gen_t *g, ami_err_t *err);
/* The generation's script for tools and specs (created on first use). */
script_t *gen_console(gen_t *g, ami_err_t *err);
void gen_activate(ami_lua_runtime_t *rt, gen_t *g);
void gen_close(gen_t *g);
/* A draining generation closes once nothing waits in it. */
void gen_maybe_finish_draining(gen_t *g);

/* ---- lua_sched.c: coroutines -------------------------------------------------------- */

co_t *sched_co_get(script_t *sc);             /* from the pool or new; NULL if refused */
void sched_co_release(co_t *co);              /* back to the pool or freed */
/* Resume co with nargs arguments already on its stack. Handles yield/park,
 * completion, errors (logged), the watchdog. */
void sched_resume(co_t *co, int nargs);
/* The same for a coroutine just taken from sched_co_get with its function
 * and nargs arguments pushed: it is where the engine left it by
 * construction (an idle pooled coroutine is empty, status 0, and no script
 * can resume or touch it), so the checks of sched_resume are skipped. */
void sched_start(co_t *co, int nargs);
/* The running coroutine if L is it and may yield; else raises a clear error. MAY_RAISE */
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
/* Cancel every parked/queued coroutine of sc (no resume). */
void sched_cancel_script(script_t *sc);
/* Cancel sc's coroutines that sit idle between periodic runs (drain). */
void sched_cancel_idle(script_t *sc);

/* ---- lua_watchdog.c ---------------------------------------------------------------- */

int watchdog_start(ami_lua_runtime_t *rt, ami_err_t *err);
void watchdog_stop(ami_lua_runtime_t *rt);
void watchdog_enter(ami_lua_runtime_t *rt, lua_State *L, int64_t budget_ns);
void watchdog_leave(ami_lua_runtime_t *rt, lua_State *L);
/* Called before a state is closed: the watchdog must let go of it. */
void watchdog_forget(ami_lua_runtime_t *rt, lua_State *L);
/* For C loops that no hook can interrupt (pattern matching): raise the
 * watchdog's error if the running code is past its budget. MAY_RAISE */
MAY_RAISE void watchdog_check(lua_State *L);

/* ---- lua_args.c: validated arguments --------------------------------------------------- */

typedef struct num_range {
    double min;
    double max;
    bool integer;
    const char *unit;                /* "milliseconds", "seconds" */
} num_range_t;

extern const num_range_t RANGE_TIMEOUT_MS;  /* integer 1 .. 86400000 */
extern const num_range_t RANGE_SECONDS;     /* 0 .. one year */

/* The number at idx, checked against r: true and *out, or false and a
 * message naming fn and what ("ami.sleep: seconds must be a finite number
 * from 0 to 31536000, got nan"). Never raises. */
bool arg_number(lua_State *L, int idx, const char *fn, const char *what, const num_range_t *r,
                double *out, char *why, size_t why_size);
/* Push nil, "invalid: <why>"; returns 2 (for `return push_invalid(...)`). */
int push_invalid(lua_State *L, const char *why);
/* A string argument without NUL bytes: the text, or NULL and a message. */
const char *arg_text(lua_State *L, int idx, const char *fn, const char *what, size_t *len, char *why,
                     size_t why_size);

/* ---- lua_event.c: event objects ------------------------------------------------------ */

/* Push a copy of msg as an event object (valid forever, unchanged). MAY_RAISE (memory) */
void event_push(script_t *sc, lua_State *L, const ami_msg_t *msg, const char *server_key);
void ami_lua_inject_event(lua_State *L, script_t *sc);

/* ---- lua_direct.c: an event's only handler run without a protected call ---------- */

/* Handlers of sc (not its waiters) for msg, event number seq (engine: the
 * engine's ServerState), without a protected call when only one handler may
 * want it. True: done, whether it ran or matched nothing; false: nothing was
 * done (no condition evaluated either), use the protected path. */
bool direct_dispatch(script_t *sc, const ami_msg_t *msg, const char *server_key, bool engine, uint64_t seq);
/* May an object for msg (NULL: none) be made in sc without a protected
 * call? Outside strict mode, where the accounting allocator refuses
 * nothing, and with room to spare under the memory limit, so that the
 * limit holds as on the protected path. lua_action.c asks it too. */
bool direct_room_for(const script_t *sc, const ami_msg_t *msg);

/* ---- per-area injections ------------------------------------------------------------------ */

void ami_lua_inject_handlers(lua_State *L, script_t *sc);  /* ami.on, ami.off, ami.wait_for, ami.pattern */
void ami_lua_inject_action(lua_State *L, script_t *sc);    /* ami.action, ami.collect */
void ami_lua_inject_timer(lua_State *L, script_t *sc);     /* ami.sleep, ami.spawn, ami.every, ami.now, ami.time */
void ami_lua_inject_log(lua_State *L, script_t *sc);       /* ami.log.* */
void ami_lua_inject_metrics(lua_State *L, script_t *sc);   /* ami.metrics.* */
void ami_lua_inject_servers(lua_State *L, script_t *sc);   /* ami.servers, ami.server, ami.on_server */
void ami_lua_inject_http(lua_State *L, script_t *sc);      /* ami.http.request, get, post */
void ami_lua_inject_json(lua_State *L, script_t *sc);      /* ami.json.encode, decode, null */
void ami_lua_inject_kv(lua_State *L, script_t *sc);        /* ami.kv.* (lua_kv.c) */
void ami_lua_inject_calls(lua_State *L, script_t *sc);     /* ami.channels, ami.channel, ami.calls */

/* lua_ha.c: the ownership gate. Without HA every server is ours. */
bool lua_ha_may_act(const ami_lua_runtime_t *rt, const char *server_key);
/* Push nil, "not_owner: ..." for an action refused by the gate; returns 2. */
int lua_ha_refuse(lua_State *L, const ami_lua_runtime_t *rt, const char *server_key);
/* Add owned, owner and epoch to the server table on top of L. */
void lua_ha_server_fields(lua_State *L, const ami_lua_runtime_t *rt, const char *server_key);
/* lua_servers.c: ServerState events from the client's state changes. */
void server_events_start(ami_lua_runtime_t *rt);
void server_events_stop(ami_lua_runtime_t *rt);
/* Specs only: package.loaded["ami.testing"]; the ami table stays on top. */
void ami_lua_inject_testing(lua_State *L, script_t *sc);
/* Run a script file in sc as at load time, in L (a running coroutine or the
 * main thread). MAY_RAISE: errors propagate to the caller. */
MAY_RAISE void run_script_in(lua_State *L, script_t *sc, const char *path);

/* lua_sandbox.c: the base environment scripts see (at the top of L's stack
 * on return). Blocked functions raise an error that says why and what to
 * use instead. */
void sandbox_push_env(lua_State *L, script_t *sc);
/* Load a script file as a chunk with its own environment over the base. */
int sandbox_load_file(lua_State *L, script_t *sc, const char *path, ami_err_t *err);
/* Make the table at the top a read-only proxy named name (replaces it). MAY_RAISE */
MAY_RAISE void sandbox_make_readonly(lua_State *L, script_t *sc, const char *name);

/* lua_handlers.c: dispatch one event to sc's waiters, and to its handlers
 * when handlers_too (false: another instance owns the server, or the
 * generation is draining). The engine's own ServerState events go to
 * ami.on_server handlers and to waiters that name them, never to "*". */
void handlers_dispatch(script_t *sc, const ami_msg_t *msg, const char *server_key, bool handlers_too);
void handlers_dispatch_server_state(script_t *sc, const ami_msg_t *msg, const char *server_key,
                                    bool handlers_too);
/* ami.on_server(fn): a handler for ServerState events. MAY_RAISE */
MAY_RAISE int handlers_on_server(lua_State *L);
void handlers_free_all(script_t *sc);
/* ami.off for every handler (safe during dispatch). */
void handlers_remove_all(script_t *sc);
void waiter_unlink(script_t *sc, wait_t *w);
/* Build a filter from the value at idx: an event name string, "*", or a table
 * {Event = "Hangup", Channel = "x", Cause = ami.pattern("^1")}. MAY_RAISE. */
MAY_RAISE void filter_from_lua(lua_State *L, int idx, filter_t *f);
void filter_free(filter_t *f);
/* Does msg match? Patterns run under a step budget: past it, no match. */
bool filter_match(script_t *sc, const filter_t *f, const ami_msg_t *msg, uint32_t name_hash,
                  const char *name, size_t name_len);
/* The two halves of filter_match: the event name, then the conditions. */
bool filter_name_match(const filter_t *f, uint32_t name_hash, const char *name, size_t name_len);
bool filter_conds_match(script_t *sc, const filter_t *f, const ami_msg_t *msg);

/* Helpers */
/* Call the C function stored at registry ref fn_ref with ud, protected and
 * strict (see script_strict_enter). Unlike lua_cpcall it allocates nothing
 * (lua_cpcall makes a closure per call, which shows on the per-event path).
 * 0, or a Lua status with the error message on top of L. */
int script_pcall_ref(script_t *sc, int fn_ref, void *ud);
void log_lua_error(ami_lua_runtime_t *rt, const char *what, const char *label, lua_State *co, const char *msg);
/* Push "kind: message" for an error status. */
void push_error(lua_State *L, ami_status_t code, const char *msg);

#endif
