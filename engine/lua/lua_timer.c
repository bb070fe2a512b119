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
    lua_Number secs = luaL_checknumber(L, 1);
    if (secs < 0 || secs > 86400 * 365)
        return luaL_argerror(L, 1, "seconds must be between 0 and one year");
    wait_t *w = sched_wait_new(co, WAIT_SLEEP);
    if (!w)
        return luaL_error(L, "out of memory in ami.sleep");
    w->idle = idle;
    ev_timer_init(&w->timer, on_sleep_done, secs, 0.);
    w->timer.data = w;
    /* Timers count from the loop's cached time; a handler may have run a
     * while since, and must not wake early. */
    ev_now_update(co->gen->rt->loop);
    ev_timer_start(co->gen->rt->loop, &w->timer);
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
    gen_t *g = gen_of(L);
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
    gen_t *g = gen_of(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    co_t *co = sched_co_get(g);
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

/* ami.every in Lua: a loop in a spawned coroutine; pcall keeps one failing
 * run from ending the schedule (yielding inside pcall is fine in LuaJIT). */
static const char every_src[] =
    "local ami, sleep_idle = ...\n"
    "return function(seconds, fn, ...)\n"
    "  if type(seconds) ~= 'number' or seconds <= 0 then\n"
    "    error('ami.every: seconds must be a positive number', 2)\n"
    "  end\n"
    "  if type(fn) ~= 'function' then error('ami.every: a function is required', 2) end\n"
    "  local info = debug.getinfo(2, 'Sl')\n"
    "  local where = info and (info.short_src .. ':' .. info.currentline) or '?'\n"
    "  local args = {n = select('#', ...), ...}\n"
    "  return ami.spawn(function()\n"
    "    while sleep_idle(seconds) ~= false do\n"
    "      local ok, err = pcall(fn, unpack(args, 1, args.n))\n"
    "      if not ok then\n"
    "        ami.log.error('periodic function failed', {where = where, error = tostring(err)})\n"
    "      end\n"
    "    end\n"
    "  end)\n"
    "end\n";

void ami_lua_inject_timer(lua_State *L, gen_t *g)
{
    (void)g;
    static const luaL_Reg fns[] = {
        {"sleep", l_sleep}, {"spawn", l_spawn}, {"now", l_now}, {"time", l_time}, {NULL, NULL},
    };
    luaL_register(L, NULL, fns);
    if (luaL_loadbuffer(L, every_src, sizeof every_src - 1, "=ami.every") != 0)
        lua_error(L);
    lua_pushvalue(L, -2);
    lua_pushcfunction(L, l_idle_sleep);
    lua_call(L, 2, 1);
    lua_setfield(L, -2, "every");
}
