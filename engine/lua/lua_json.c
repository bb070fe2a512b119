/*
 * ami.json: JSON for scripts, by Debian's lua-cjson.
 *
 *   local text, err = ami.json.encode({call = id, agents = {"1001", "1002"}})
 *   local value, err = ami.json.decode(res.body)
 *   if value.transfer == ami.json.null then ... end   -- JSON null
 *
 * Each generation gets its own cjson instance, configured here and never
 * handed out: scripts see only encode, decode and null, so no script can
 * change how another one encodes (cjson's configuration functions act on
 * the instance). The configuration: strict numbers (NaN, Infinity and hex
 * are refused both ways), nesting at most JSON_MAX_DEPTH, no encode buffer
 * kept between calls.
 *
 * Bounded so one call cannot stall the loop: decode takes at most
 * JSON_MAX_BYTES of text; encode first walks the value and refuses more
 * than JSON_MAX_ITEMS values or JSON_MAX_BYTES of strings. Errors are
 * values: nil, "invalid: ..." or nil, "too_large: ...".
 */
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"

/* lua-cjson-dev's lua-cjson.h says only this; declared here so that Lua
 * 5.1's own headers stay off the include path (LuaJIT's are used). */
int luaopen_cjson(lua_State *L);

#define JSON_MAX_BYTES ((size_t)1 << 20)
#define JSON_MAX_ITEMS 100000u
#define JSON_MAX_DEPTH 100

typedef struct walk {
    size_t items;
    size_t bytes;
    const char *why;
} walk_t;

/* Counts what encoding the value at idx would visit; false (and why) as
 * soon as a bound is passed, so the walk costs no more than the bound. */
static bool walk_value(lua_State *L, int idx, int depth, walk_t *w)
{
    if (++w->items > JSON_MAX_ITEMS) {
        w->why = "too_large: more than 100000 values to encode";
        return false;
    }
    if (lua_type(L, idx) == LUA_TSTRING) {
        w->bytes += lua_objlen(L, idx);
        if (w->bytes > JSON_MAX_BYTES) {
            w->why = "too_large: more than 1 MiB of strings to encode";
            return false;
        }
        return true;
    }
    if (!lua_istable(L, idx))
        return true;
    if (depth >= JSON_MAX_DEPTH) {
        w->why = "invalid: tables nested deeper than 100 (a table that contains itself?)";
        return false;
    }
    luaL_checkstack(L, 3, "ami.json.encode");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int top = lua_gettop(L);
        bool ok = walk_value(L, top - 1, depth + 1, w) && walk_value(L, top, depth + 1, w);
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return false;
        }
    }
    return true;
}

/* Call the cjson function in upvalue 1 on the argument, protected. */
static int call_cjson(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == 0)
        return 1;
    const char *msg = lua_tostring(L, -1);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", rc == LUA_ERRMEM ? "nomem" : "invalid", msg ? msg : "cjson failed");
    return 2;
}

static int l_encode(lua_State *L)
{
    lua_settop(L, 1);
    walk_t w = {0};
    if (!walk_value(L, 1, 0, &w)) {
        lua_pushnil(L);
        lua_pushstring(L, w.why);
        return 2;
    }
    return call_cjson(L);
}

static int l_decode(lua_State *L)
{
    lua_settop(L, 1);
    if (lua_type(L, 1) != LUA_TSTRING) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid: ami.json.decode expects a string, got %s", luaL_typename(L, 1));
        return 2;
    }
    size_t len = lua_objlen(L, 1);
    if (len > JSON_MAX_BYTES) {
        lua_pushnil(L);
        lua_pushfstring(L, "too_large: %d bytes of JSON; at most %d", (int)len, (int)JSON_MAX_BYTES);
        return 2;
    }
    return call_cjson(L);
}

/* cjson_instance.<setter>(value): a number, or a boolean when is_bool. */
static void configure(lua_State *L, int cj, const char *setter, int value, bool is_bool)
{
    lua_getfield(L, cj, setter);
    if (is_bool)
        lua_pushboolean(L, value);
    else
        lua_pushinteger(L, value);
    lua_call(L, 1, 0);
}

/* Builds ami.json in the ami table on top of L (under build_module's
 * protection: raises only on a memory error). */
void ami_lua_inject_json(lua_State *L, script_t *sc)
{
    (void)sc;
    lua_pushcfunction(L, luaopen_cjson);
    lua_call(L, 0, 1);
    int cj = lua_gettop(L);
    configure(L, cj, "encode_max_depth", JSON_MAX_DEPTH, false);
    configure(L, cj, "decode_max_depth", JSON_MAX_DEPTH, false);
    configure(L, cj, "encode_invalid_numbers", 0, true);
    configure(L, cj, "decode_invalid_numbers", 0, true);
    configure(L, cj, "encode_keep_buffer", 0, true);
    lua_createtable(L, 0, 3);
    lua_getfield(L, cj, "encode");
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -2, "encode");
    lua_getfield(L, cj, "decode");
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, cj, "null");
    lua_setfield(L, -2, "null");
    lua_setfield(L, cj - 1, "json");
    lua_pop(L, 1);
}
