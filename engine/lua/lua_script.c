/*
 * One script's Lua state: creation (the ami module, the sandbox), memory
 * accounting and its limit, the engine's own threads, and closing.
 *
 * Every script file gets a lua_State of its own. That is what makes the
 * isolation real rather than conventional: a script cannot reach another
 * script's globals, libraries, coroutines or memory, whatever it does with
 * rawset, getmetatable or coroutine.running; and its memory is counted
 * exactly, every allocation of its state included (the event objects and
 * action results the engine makes for it too), so a memory limit bounds
 * what it can hold.
 */
#include <stdio.h>
#include <string.h>

#include <luajit.h>
#include <lualib.h>

#include "lua/lua_internal.h"
#include "lua/lua_strpat.h"
#include "util/alloc.h"
#include "util/clock.h"

#define GC_PAUSE 400             /* heap may grow to 4x the live data between collections */
#define EARLY_GC_PERCENT 85      /* past this share of the limit, collect after a run... */
#define EARLY_GC_EVERY_NS 1000000000LL /* ...at most once a second */

static char script_key; /* registry key: the script owning a state */

static void *script_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* The accounting allocator's userdata is the script (wrap_allocator, until
 * script_close gives the state back to LuaJIT's allocator): reading it
 * costs a few instructions where the registry lookup cost ~200, on every
 * yielding ami.* call. The registry entry covers the moments around. */
script_t *script_of(lua_State *L)
{
    void *ud;
    if (lua_getallocf(L, &ud) == script_alloc)
        return ud;
    lua_pushlightuserdata(L, &script_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    script_t *sc = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return sc;
}

int script_pcall_ref(script_t *sc, int fn_ref, void *ud)
{
    lua_State *L = sc->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pushlightuserdata(L, ud);
    script_strict_enter(sc);
    int rc = lua_pcall(L, 1, 0, 0);
    script_strict_leave(sc);
    return rc;
}

void push_error(lua_State *L, ami_status_t code, const char *msg)
{
    lua_pushfstring(L, "%s: %s", ami_status_name(code), msg ? msg : "");
}

void log_lua_error(ami_lua_runtime_t *rt, const char *what, const char *label, lua_State *co,
                   const char *msg)
{
    if (!ami_log_enabled(rt->log, AMI_LOG_ERROR))
        return;
    script_t *sc = script_of(co);
    const char *trace = "";
    int top = lua_gettop(sc->L);
    if (co != sc->L) {
        luaL_traceback(sc->L, co, NULL, 0);
        trace = lua_tostring(sc->L, -1);
    }
    AMI_LOG(rt->log, AMI_LOG_ERROR, what, AMI_F_STR("where", label ? label : "?"),
            AMI_F_STR("error", msg ? msg : "?"), AMI_F_STR("script", sc->name),
            AMI_F_UINT("gen", sc->gen->id), AMI_F_STR("traceback", trace ? trace : ""));
    lua_settop(sc->L, top);
}

/* ---- memory ------------------------------------------------------------------------ */

/* LuaJIT's own allocator (fast for the many small objects a script makes),
 * wrapped to count the script's bytes (and the engine's live bytes) and to
 * enforce its limit where a refusal is safe: inside script code and the
 * engine's protected calls (strict > 0). Elsewhere the engine's few small
 * pushes (a nil, an error string into a coroutine) pass, so that an
 * allocation failure can never unwind an unprotected C frame. */
static void *script_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    script_t *sc = ud;
    size_t old = ptr ? osize : 0;
    if (nsize > old && sc->strict && sc->mem_bytes + (int64_t)(nsize - old) > (int64_t)sc->mem_limit) {
        ami_counter_inc(sc->m_memory_refused);
        ami_counter_inc(sc->gen->rt->m_memory_refused);
        sc->last_gc_ns = 0; /* collect after this run: the heap may be full of garbage */
        return NULL;
    }
    void *p = sc->base_alloc(sc->base_ud, ptr, osize, nsize);
    if (p || nsize == 0) {
        int64_t delta = (int64_t)nsize - (int64_t)old;
        sc->mem_bytes += delta;
        ami_alloc_note_external(delta);
    }
    return p;
}

static void wrap_allocator(script_t *sc)
{
    sc->base_alloc = lua_getallocf(sc->L, &sc->base_ud);
    /* What the new state holds already, so its frees balance later. */
    sc->mem_bytes = (int64_t)lua_gc(sc->L, LUA_GCCOUNT, 0) * 1024 + lua_gc(sc->L, LUA_GCCOUNTB, 0);
    ami_alloc_note_external(sc->mem_bytes);
    lua_setallocf(sc->L, script_alloc, sc);
}

/* LuaJIT does not collect before failing an allocation: a script whose heap
 * is mostly garbage would be refused memory it could have. */
void script_after_run(script_t *sc)
{
    if (sc->mem_bytes * 100 < (int64_t)sc->mem_limit * EARLY_GC_PERCENT && sc->last_gc_ns != 0)
        return;
    int64_t now = ami_now_coarse_ns();
    if (sc->last_gc_ns != 0 && now - sc->last_gc_ns < EARLY_GC_EVERY_NS)
        return;
    sc->last_gc_ns = now;
    lua_gc(sc->L, LUA_GCCOLLECT, 0);
}

/* ---- the engine's threads --------------------------------------------------------------- */

bool script_owns_thread(script_t *sc, lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTHREAD)
        return false;
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->owned_ref);
    lua_pushvalue(L, idx < 0 ? idx - 1 : idx);
    lua_rawget(L, -2);
    bool yes = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return yes;
}

/* A table with weak keys, anchored in the registry. */
static int new_weak_table(lua_State *L)
{
    lua_newtable(L);
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- creation ------------------------------------------------------------------------------ */

/* Pattern matching is one C call no hook can enter: the matcher calls this
 * every few thousand steps, and past the run's budget the watchdog's error
 * stops it like any runaway code. */
static int pattern_budget(lua_State *L, void *ud)
{
    (void)ud;
    watchdog_check(L);
    return 0;
}

/* string.find/match/gmatch/gsub matched under the watchdog, in the real
 * string library (the sandbox copies it; "s:find()" reads it through the
 * string metatable). */
static void budget_patterns(lua_State *L)
{
    lua_getglobal(L, "string");
    ami_strpat_budget_t b = {pattern_budget, NULL};
    ami_strpat_install(L, lua_gettop(L), &b);
    lua_pop(L, 1);
}

/* Every table-valued member of the module (ami.log, ami.metrics, ...) and
 * the module itself become read-only proxies: no script can replace
 * ami.action or ami.log.info, not even with rawset. */
MAY_RAISE static void freeze_module(lua_State *L, script_t *sc, int ami)
{
    lua_pushnil(L);
    while (lua_next(L, ami)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1) && !lua_getmetatable(L, -1)) {
            char name[64];
            snprintf(name, sizeof name, "ami.%s", lua_tostring(L, -2));
            sandbox_make_readonly(L, sc, name);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, ami); /* replacing an existing key's value: next() stays valid */
        } else {
            lua_pop(L, 1);
        }
    }
}

static int build_module(lua_State *L)
{
    script_t *sc = lua_touserdata(L, 1);
    lua_settop(L, 0);
    budget_patterns(L);
    sc->owned_ref = new_weak_table(L);
    sc->frozen_ref = new_weak_table(L);
    lua_newtable(L);
    ami_lua_inject_event(L, sc);
    ami_lua_inject_handlers(L, sc);
    ami_lua_inject_action(L, sc);
    ami_lua_inject_log(L, sc);
    ami_lua_inject_timer(L, sc);
    ami_lua_inject_metrics(L, sc);
    ami_lua_inject_servers(L, sc);
    ami_lua_inject_http(L, sc);
    ami_lua_inject_json(L, sc);
    ami_lua_inject_kv(L, sc);
    ami_lua_inject_calls(L, sc);
    lua_pushnumber(L, (lua_Number)sc->gen->id);
    lua_setfield(L, -2, "generation");
    lua_pushstring(L, sc->name);
    lua_setfield(L, -2, "script");
    lua_pushliteral(L, AMI_VERSION);
    lua_setfield(L, -2, "version");
    if (sc->gen->rt->cfg.testing)
        ami_lua_inject_testing(L, sc);
    freeze_module(L, sc, 1);
    lua_pushvalue(L, 1);
    sandbox_make_readonly(L, sc, "ami");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "ami");
    lua_pop(L, 3);
    sandbox_push_env(L, sc);
    return 0;
}

static ami_counter_t *script_counter(script_t *sc, const char *name, const char *help)
{
    const char *labels[] = {"script", sc->name, NULL};
    return ami_metrics_counter(sc->gen->rt->metrics, name, help, labels, NULL);
}

static void register_metrics(script_t *sc)
{
    sc->m_memory_refused = script_counter(sc, "ami_lua_script_memory_refused_total",
                                          "Allocations refused at the script's memory_limit");
    sc->m_log_dropped = script_counter(sc, "ami_lua_script_log_lines_dropped_total",
                                       "Log lines of the script dropped past its log rate limit");
    sc->m_series_refused = script_counter(sc, "ami_lua_script_metric_series_refused_total",
                                          "Metric series the script asked for past its limits");
    sc->m_events_refused = script_counter(sc, "ami_lua_script_events_refused_total",
                                          "Events not given to the script's handlers (script out of memory)");
}

script_t *script_new(gen_t *g, const char *name, ami_err_t *err)
{
    ami_lua_runtime_t *rt = g->rt;
    script_t *sc = ami_calloc(1, sizeof *sc);
    if (!sc) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the state of script %s", name);
        return NULL;
    }
    sc->gen = g;
    snprintf(sc->name, sizeof sc->name, "%s", name);
    sc->mem_limit = rt->cfg.memory_limit;
    sc->env_ref = sc->owned_ref = sc->frozen_ref = LUA_NOREF;
    sc->log.tokens = rt->cfg.log_lines_per_sec;
    sc->log.bytes = (double)rt->cfg.log_bytes_per_sec;
    register_metrics(sc);
    sc->L = luaL_newstate();
    if (!sc->L) {
        ami_free(sc);
        ami_err_set(err, AMI_E_NOMEM, "cannot create a Lua state for script %s", name);
        return NULL;
    }
    wrap_allocator(sc);
    lua_gc(sc->L, LUA_GCSETPAUSE, GC_PAUSE);
    luaL_openlibs(sc->L);
    if (!rt->cfg.jit)
        luaJIT_setmode(sc->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_pushlightuserdata(sc->L, &script_key);
    lua_pushlightuserdata(sc->L, sc);
    lua_rawset(sc->L, LUA_REGISTRYINDEX);
    script_strict_enter(sc);
    int rc = lua_cpcall(sc->L, build_module, sc);
    script_strict_leave(sc);
    if (rc != 0) {
        ami_err_set(err, AMI_E_NOMEM, "cannot build the ami module for script %s: %s", name,
                    lua_tostring(sc->L, -1));
        script_close(sc);
        return NULL;
    }
    return sc;
}

void script_close(script_t *sc)
{
    ami_lua_runtime_t *rt = sc->gen->rt;
    sched_cancel_script(sc);
    handlers_free_all(sc);
    if (sc->L) {
        watchdog_forget(rt, sc->L);
        /* LuaJIT destroys its allocator's arena on close only when the
         * state still uses that allocator: without this, every closed
         * state (each script of each reload) left its mmap'd arena behind. */
        lua_setallocf(sc->L, sc->base_alloc, sc->base_ud);
        lua_close(sc->L);
        /* Everything the state held went back with the arena. */
        ami_alloc_note_external(-sc->mem_bytes);
    }
    ami_free(sc);
}
