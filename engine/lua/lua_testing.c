/*
 * require "ami.testing": helpers for specs run by `ami-engine spec`. Only
 * present when the runtime is created with cfg.testing (never in
 * production). The spec tool adds its own functions (the simulator's
 * controls, finish) to the same table.
 *
 *   local T = require "ami.testing"
 *   T.load_script("scripts/hangup_causes.lua")  -- as the engine loads it
 *   T.reset()                                    -- remove every handler
 *   T.metric("calls_total", {cause = "16"})     -- a metric's value or nil
 *   T.wait_until(function() return x > 0 end, 2000)  -- true, or false on timeout
 */
#include "lua/lua_internal.h"

MAY_RAISE void run_script_in(lua_State *L, script_t *sc, const char *path)
{
    ami_err_t err;
    if (sandbox_load_file(L, sc, path, &err) < 0)
        luaL_error(L, "%s", err.msg);
    lua_call(L, 0, 0);
}

static int t_load_script(lua_State *L)
{
    run_script_in(L, script_of(L), luaL_checkstring(L, 1));
    return 0;
}

static int t_reset(lua_State *L)
{
    handlers_remove_all(script_of(L));
    return 0;
}

/* Labels as a table: passed to the registry in sorted key order, as
 * ami.metrics registers them. */
static int t_metric(lua_State *L)
{
    script_t *sc = script_of(L);
    const char *name = luaL_checkstring(L, 1);
    const char *labels[2 * AMI_METRICS_MAX_LABELS + 1];
    size_t n = 0;
    if (lua_istable(L, 2)) {
        lua_newtable(L);
        int keys = lua_gettop(L);
        for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
            lua_pushvalue(L, -2);
            lua_rawseti(L, keys, (int)lua_objlen(L, keys) + 1);
        }
        lua_getglobal(L, "table");
        lua_getfield(L, -1, "sort");
        lua_pushvalue(L, keys);
        lua_call(L, 1, 0);
        lua_pop(L, 1);
        size_t nk = lua_objlen(L, keys);
        for (size_t i = 1; i <= nk && n + 2 < sizeof labels / sizeof labels[0]; i++) {
            luaL_checkstack(L, 3, "labels");
            lua_rawgeti(L, keys, (int)i);
            labels[n++] = lua_tostring(L, -1); /* key and value stay on the stack */
            lua_pushvalue(L, -1);
            lua_gettable(L, 2);
            labels[n++] = lua_tostring(L, -1);
        }
    }
    labels[n] = NULL;
    double v;
    if (ami_metrics_value(sc->gen->rt->metrics, name, n ? labels : NULL, &v) < 0)
        return 0;
    lua_pushnumber(L, v);
    return 1;
}

static const char wait_until_src[] =
    "local ami = ...\n"
    "return function(fn, timeout_ms, every_ms)\n"
    "  local deadline = ami.now() + (timeout_ms or 5000) / 1000\n"
    "  while true do\n"
    "    local v = fn()\n"
    "    if v then return v end\n"
    "    if ami.now() >= deadline then return false end\n"
    "    ami.sleep((every_ms or 10) / 1000)\n"
    "  end\n"
    "end\n";

void ami_lua_inject_testing(lua_State *L, script_t *sc)
{
    static const luaL_Reg fns[] = {
        {"load_script", t_load_script}, {"reset", t_reset}, {"metric", t_metric}, {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    if (luaL_loadbuffer(L, wait_until_src, sizeof wait_until_src - 1, "=ami.testing") != 0)
        lua_error(L);
    lua_pushvalue(L, -3); /* the ami table */
    lua_call(L, 1, 1);
    lua_setfield(L, -2, "wait_until");
    if (sc->gen->rt->cfg.testing_extend)
        sc->gen->rt->cfg.testing_extend(L, sc->gen->rt->cfg.testing_ud);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "ami.testing");
    lua_pop(L, 3);
}
