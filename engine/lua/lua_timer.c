/*
 * Time and concurrency: ami.sleep, ami.spawn, ami.every, ami.now, ami.time.
 *
 *   ami.sleep(1.5)                      -- a libev timer; the loop keeps running
 *   ami.spawn(function(a, b) ... end, 1, 2)   -- runs on the next loop iteration
 *   ami.every(60, function() ... end)   -- runs every 60 s, errors logged, never stops
 *   ami.now()                           -- monotonic seconds (for durations)
 *   ami.time()                          -- wall clock, seconds since the epoch
 */
#include <stdio.h>
#include <time.h>

#include "lua/lua_internal.h"
#include "util/clock.h"

static void on_sleep_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    sched_wake(t->data, 0);
}

static int sleep_for(lua_State *L, bool idle)
{
    co_t *co = sched_require_co(L, "ami.sleep");
    double secs;
    char why[200];
    if (!arg_number(L, 1, "ami.sleep", "seconds", &RANGE_SECONDS, &secs, why, sizeof why))
        return push_invalid(L, why);
    wait_t *w = sched_wait_new(co, WAIT_SLEEP);
    if (!w)
        return luaL_error(L, "out of memory in ami.sleep");
    w->idle = idle;
    ev_timer_init(&w->timer, on_sleep_done, secs, 0.);
    w->timer.data = w;
    /* Timers count from the loop's cached time; a handler may have run a
     * while since, and must not wake early. */
    ev_now_update(co->sc->gen->rt->loop);
    ev_timer_start(co->sc->gen->rt->loop, &w->timer);
    return sched_yield_for(L, w);
}

static int l_sleep(lua_State *L)
{
    return sleep_for(L, false);
}

/* ami.every between two runs: an idle wait. A draining engine, or a reload
 * replacing this generation, cancels it rather than waiting for it, and a
 * periodic function of a replaced generation does not run again. */
static int l_idle_sleep(lua_State *L)
{
    gen_t *g = script_of(L)->gen;
    if (g->rt->drained || g->state != GEN_ACTIVE) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return sleep_for(L, true);
}

static void label_spawn(lua_State *L, co_t *co)
{
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(co->label_buf, sizeof co->label_buf, "function spawned at %s:%d", ar.short_src,
                 ar.currentline);
    else
        snprintf(co->label_buf, sizeof co->label_buf, "spawned function");
    co->label = co->label_buf;
}

static int l_spawn(lua_State *L)
{
    script_t *sc = script_of(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    co_t *co = sched_co_get(sc);
    if (!co) {
        lua_pushnil(L);
        push_error(L, AMI_E_LIMIT, "too many coroutines (max_coroutines)");
        return 2;
    }
    label_spawn(L, co);
    lua_xmove(L, co->L, nargs + 1);
    if (!sched_enqueue(co, nargs)) {
        sched_co_release(co);
        lua_pushnil(L);
        push_error(L, AMI_E_LIMIT, "too many coroutines waiting to start (max_coroutines)");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)ami_now_ns() / 1e9);
    return 1;
}

static int l_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* ami.every's interval: a finite number of seconds, at least 1 ms. */
static int l_every_interval(lua_State *L)
{
    static const num_range_t every = {0.001, 86400.0 * 365, false, "seconds"};
    double secs;
    char why[200];
    if (!arg_number(L, 1, "ami.every", "seconds", &every, &secs, why, sizeof why))
        return push_invalid(L, why);
    lua_pushboolean(L, 1);
    return 1;
}

/* ami.every in Lua: a loop in a spawned coroutine; pcall keeps one failing
 * run from ending the schedule (yielding inside pcall is fine in LuaJIT). */
static const char every_src[] =
    "local ami, sleep_idle, valid = ...\n"
    "return function(seconds, fn, ...)\n"
    "  local ok, why = valid(seconds)\n"
    "  if not ok then return nil, why end\n"
    "  if type(fn) ~= 'function' then error('ami.every: a function is required', 2) end\n"
    "  local info = debug.getinfo(2, 'Sl')\n"
    "  local where = info and (info.short_src .. ':' .. info.currentline) or '?'\n"
    "  local args = {n = select('#', ...), ...}\n"
    "  local function run() return fn(unpack(args, 1, args.n)) end\n"
    "  local function report(err)\n"
    "    ami.log.error('periodic function failed', {where = where, error = tostring(err)})\n"
    "  end\n"
    "  -- Nothing outside a pcall allocates in the loop: a script at its memory\n"
    "  -- limit loses a run, not its schedule.\n"
    "  return ami.spawn(function()\n"
    "    while sleep_idle(seconds) ~= false do\n"
    "      local ok, err = pcall(run)\n"
    "      if not ok then pcall(report, err) end\n"
    "    end\n"
    "  end)\n"
    "end\n";

void ami_lua_inject_timer(lua_State *L, script_t *sc)
{
    (void)sc;
    static const luaL_Reg fns[] = {
        {"sleep", l_sleep}, {"spawn", l_spawn}, {"now", l_now}, {"time", l_time}, {NULL, NULL},
    };
    luaL_register(L, NULL, fns);
    if (luaL_loadbuffer(L, every_src, sizeof every_src - 1, "=ami.every") != 0)
        lua_error(L);
    lua_pushvalue(L, -2);
    lua_pushcfunction(L, l_idle_sleep);
    lua_pushcfunction(L, l_every_interval);
    lua_call(L, 3, 1);
    lua_setfield(L, -2, "every");
}
