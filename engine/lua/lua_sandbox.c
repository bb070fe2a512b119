/*
 * The environment scripts run in.
 *
 * One base table per script state (built once, anchored by sc->env_ref)
 * holds the safe globals, read-only views of the libraries, and stand-ins
 * for what would block the loop or defeat the watchdog. The script and each
 * module it requires get their own global table over the base, so their
 * globals are their own and the base, shared by them, cannot be changed.
 *
 * Read-only means read-only: the libraries (string, table, math, bit, os,
 * coroutine) and the ami module are empty proxies with locked metatables,
 * registered in the state's frozen set, and every function that writes a
 * table without metamethods (rawset, table.insert/remove/sort/move) refuses
 * a frozen one. xpcall never runs a script's message handler for the
 * watchdog's own error (LuaJIT runs it with hooks off: it could loop
 * forever). coroutine.resume and coroutine.yield refuse the engine's own
 * coroutines. os.getenv gives only the variables the config allows.
 *
 * A stand-in ("stub") is a small userdata: calling it, indexing it or
 * assigning into it raises an error that says what was refused, why, and
 * what to use instead. A blocked library (io, debug, jit, package) is a stub
 * whose members are stubs too, so `io.read()`, `local r = io.read; r()` and
 * `io.stdin:read()` all fail with the same clear message.
 *
 * The real globals table is never handed to script code: C functions carry
 * it as their environment, so load() takes the environment of the nearest
 * Lua caller, never that of a C frame.
 *
 * Building the base also locks the string metatable (getmetatable("") would
 * hand out the real string library). The libraries must be open in L
 * (luaL_openlibs) and package.loaded.ami set before the base is built.
 * require, which finds and caches modules, is in lua_require.c.
 * Everything here runs on the loop thread.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "lua/lua_sandbox_internal.h"

#define NO_BYTECODE \
    "binary chunks are not available in scripts: bytecode is not checked and can crash the " \
    "engine. Load Lua source text."

/* Registry keys: the addresses are unique, the contents unused. */
static const char STUB_MT_KEY = 's';
static const char SCRIPT_MT_KEY = 'e';

/* ---- what is refused, why, and what to use instead -------------------------- */

typedef struct refusal {
    const char *name;
    const char *why;
    const char *instead;
} refusal_t;

#define WHY_BLOCKS "it would block the engine's event loop and stall every Asterisk server"
#define WHY_FILES \
    "file and process I/O block the engine's event loop and stall every Asterisk server"
#define USE_LOG "Use ami.log for output and the engine config for settings."
#define WHY_LOADFILE "it reads files with blocking I/O, outside the module cache"
#define USE_REQUIRE \
    "Use require(\"name\") for a helper module in the engine's lua/ folder or the scripts folder."
#define WHY_FENV "function environments belong to the engine"
#define USE_MODULE "Each script has its own globals already; share values through a module (require)."

static const refusal_t refusals[] = {
    {"os.execute", WHY_BLOCKS, "Use ami.action to act on Asterisk and ami.spawn/ami.sleep to wait."},
    {"os.exit", "the engine is stopped by its operator (SIGTERM); a script cannot stop it",
     "Return from the handler, or call error() to abandon it."},
    {"os.remove", WHY_FILES, USE_LOG},
    {"os.rename", WHY_FILES, USE_LOG},
    {"os.tmpname", WHY_FILES, USE_LOG},
    {"os.setlocale",
     "the locale belongs to the whole process: changing it would change how every script and the "
     "engine itself format numbers",
     "Format with string.format."},
    {"io", WHY_FILES, USE_LOG},
    {"dofile", WHY_LOADFILE, USE_REQUIRE},
    {"loadfile", WHY_LOADFILE, USE_REQUIRE},
    {"debug", "it can break the engine's safety (hooks, the watchdog)",
     "Catch errors with pcall/xpcall; a failing handler is logged with its script and line."},
    {"jit", "the JIT compiler is off in scripts so that the watchdog can stop runaway handlers",
     "Nothing to do: scripts run in the interpreter."},
    {"ffi", "it gives raw memory access and blocking C calls that could crash or stall the engine",
     "Use the ami API."},
    {"package", "modules are found by the engine, in its lua/ folder and the scripts folder",
     "Use require(\"name\")."},
    {"package.loadlib", "native code could crash or block the engine",
     "Write the helper in Lua and require it."},
    {"module", "it writes into the shared environment (and is deprecated since Lua 5.2)",
     "Write a module as `local M = {} ... return M` and require it."},
    {"getfenv", WHY_FENV, USE_MODULE},
    {"setfenv", WHY_FENV, USE_MODULE},
    {"require(\"os\")", "only part of os is (time, date, clock, difftime, getenv)",
     "Use the global os."},
};

static const refusal_t *refusal_find(const char *name)
{
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
        if (strcmp(refusals[i].name, name) == 0)
            return &refusals[i];
    return NULL;
}

MAY_RAISE static int raise_refusal(lua_State *L, const char *name, const refusal_t *r)
{
    return luaL_error(L, "%s is not available in scripts: %s. %s", name, r->why, r->instead);
}

MAY_RAISE int sandbox_refuse(lua_State *L, const char *name)
{
    return raise_refusal(L, name, refusal_find(name));
}

/* ---- stubs ------------------------------------------------------------------------- */

typedef struct stub stub_t;

/* The stub at idx, or raises: only userdata with the stub metatable. */
MAY_RAISE static const stub_t *check_stub(lua_State *L, int idx)
{
    const stub_t *s = lua_touserdata(L, idx);
    if (s && lua_getmetatable(L, idx)) {
        lua_pushlightuserdata(L, (void *)&STUB_MT_KEY);
        lua_rawget(L, LUA_REGISTRYINDEX);
        bool same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (same)
            return s;
    }
    luaL_argerror(L, idx, "not a stand-in of the sandbox");
    return NULL;
}

struct stub {
    const refusal_t *refusal;
    bool library;  /* its members are stubs (io.read), not errors at once */
    char name[64]; /* "io.read", as the script spelled it */
};

MAY_RAISE static void push_stub(lua_State *L, const char *name, const refusal_t *r, bool library)
{
    stub_t *s = lua_newuserdata(L, sizeof *s);
    s->refusal = r;
    s->library = library;
    snprintf(s->name, sizeof s->name, "%s", name);
    lua_pushlightuserdata(L, (void *)&STUB_MT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

static void member_name(lua_State *L, const stub_t *s, int key, char *out, size_t size)
{
    if (lua_type(L, key) == LUA_TSTRING)
        snprintf(out, size, "%s.%s", s->name, lua_tostring(L, key));
    else
        snprintf(out, size, "%s[...]", s->name);
}

/* A member of a blocked library is a stub of its own, with the member's
 * specific reason when there is one (package.loadlib), else the library's. */
MAY_RAISE static int stub_index(lua_State *L)
{
    const stub_t *s = check_stub(L, 1);
    if (!s->library)
        return raise_refusal(L, s->name, s->refusal);
    char name[2 * sizeof s->name];
    member_name(L, s, 2, name, sizeof name);
    const refusal_t *r = refusal_find(name);
    push_stub(L, name, r ? r : s->refusal, false);
    return 1;
}

MAY_RAISE static int stub_newindex(lua_State *L)
{
    const stub_t *s = check_stub(L, 1);
    if (!s->library)
        return raise_refusal(L, s->name, s->refusal);
    char name[2 * sizeof s->name];
    member_name(L, s, 2, name, sizeof name);
    const refusal_t *r = refusal_find(name);
    return raise_refusal(L, name, r ? r : s->refusal);
}

MAY_RAISE static int stub_call(lua_State *L)
{
    const stub_t *s = check_stub(L, 1);
    return raise_refusal(L, s->name, s->refusal);
}

/* package.path .. ";x" must say why too, not "attempt to concatenate". */
MAY_RAISE static int stub_concat(lua_State *L)
{
    int idx = 2;
    if (lua_getmetatable(L, 1)) {
        lua_pushlightuserdata(L, (void *)&STUB_MT_KEY);
        lua_rawget(L, LUA_REGISTRYINDEX);
        if (lua_rawequal(L, -1, -2))
            idx = 1;
        lua_pop(L, 2);
    }
    const stub_t *s = check_stub(L, idx);
    return raise_refusal(L, s->name, s->refusal);
}

/* Printing or logging a stub must work: it is how a script finds out. */
static int stub_tostring(lua_State *L)
{
    const stub_t *s = check_stub(L, 1);
    lua_pushfstring(L, "not available in scripts: %s", s->name);
    return 1;
}

MAY_RAISE static void create_stub_metatable(lua_State *L)
{
    static const luaL_Reg mt[] = {{"__index", stub_index},
                                  {"__newindex", stub_newindex},
                                  {"__call", stub_call},
                                  {"__concat", stub_concat},
                                  {"__tostring", stub_tostring},
                                  {NULL, NULL}};
    lua_pushlightuserdata(L, (void *)&STUB_MT_KEY);
    lua_createtable(L, 0, 6);
    luaL_setfuncs(L, mt, 0);
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* Sets base[name] to a stub refusing `name`. */
MAY_RAISE static void set_stub(lua_State *L, int base, const char *name, bool library)
{
    push_stub(L, name, refusal_find(name), library);
    lua_setfield(L, base, name);
}

/* ---- read-only tables ---------------------------------------------------------------- */

MAY_RAISE static int readonly_newindex(lua_State *L)
{
    const char *lib = lua_tostring(L, lua_upvalueindex(1));
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L,
                      "cannot set %s.%s: %s is read-only. Keep your own helpers in a local "
                      "table or a module (require).",
                      lib, key, lib);
}

/* Replace the table at the top by an empty proxy reading through to it
 * (__newindex only fires on absent keys, so only a proxy stops a script
 * from replacing string.format), and register the proxy as frozen for the
 * raw writers below. */
MAY_RAISE void sandbox_make_readonly(lua_State *L, script_t *sc, const char *name)
{
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, readonly_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_replace(L, -2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->frozen_ref);
    lua_pushvalue(L, -2);
    lua_pushstring(L, name);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* The frozen table's name if the value at idx is one, else NULL. */
static const char *frozen_name(lua_State *L, script_t *sc, int idx)
{
    if (!lua_istable(L, idx))
        return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->frozen_ref);
    lua_pushvalue(L, idx < 0 ? idx - 1 : idx);
    lua_rawget(L, -2);
    const char *name = lua_tostring(L, -1); /* interned, and the proxy keeps it alive */
    lua_pop(L, 2);
    return name;
}

MAY_RAISE static void refuse_frozen(lua_State *L, script_t *sc, int idx, const char *fn)
{
    const char *name = frozen_name(L, sc, idx);
    if (name)
        luaL_error(L, "%s cannot change %s: it is read-only. Keep your own data in your own tables.",
                   fn, name);
}

/* rawset(t, k, v), refusing frozen tables. */
MAY_RAISE static int sb_rawset(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    refuse_frozen(L, sc, 1, "rawset");
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

/* table.insert/remove/sort/move write without metamethods too: each checks
 * the table it writes first (move writes its fifth argument, or its first). */
MAY_RAISE static int sb_check_writable(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    refuse_frozen(L, sc, 1, lua_tostring(L, 2));
    return 0;
}

static const char table_guard_src[] =
    "local check, lib = ...\n"
    "local insert, remove, sort, move = lib.insert, lib.remove, lib.sort, lib.move\n"
    "lib.insert = function(t, ...) check(t, 'table.insert') return insert(t, ...) end\n"
    "lib.remove = function(t, ...) check(t, 'table.remove') return remove(t, ...) end\n"
    "lib.sort = function(t, ...) check(t, 'table.sort') return sort(t, ...) end\n"
    "if move then\n"
    "  lib.move = function(a1, f, e, t, a2)\n"
    "    check(a2 == nil and a1 or a2, 'table.move')\n"
    "    return move(a1, f, e, t, a2)\n"
    "  end\n"
    "end\n";

/* With the copy of the table library at the top: guard its writers. */
MAY_RAISE static void guard_table_library(lua_State *L, script_t *sc)
{
    if (luaL_loadbuffer(L, table_guard_src, sizeof table_guard_src - 1, "=sandbox.table") != 0)
        lua_error(L);
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, sb_check_writable, 1);
    lua_pushvalue(L, -3);
    lua_call(L, 2, 0);
}

/* ---- xpcall and coroutines ---------------------------------------------------------------- */

/* The message handler a script gives xpcall, behind a guard: for the
 * watchdog's own error the handler would run inside the count hook, where
 * LuaJIT runs no hooks at all, so an endless loop in it could never be
 * stopped. Then the error goes on unhandled; the run is over anyway. */
static int xpcall_guard(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(2));
    if (sc->gen->rt->watchdog_fired)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

MAY_RAISE static int sb_guard_handler(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    lua_settop(L, 1);
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, xpcall_guard, 2);
    return 1;
}

/* xpcall stays LuaJIT's own (yielding inside it works); only the handler
 * is wrapped. The engine's threads are refused to resume and yield. */
static const char guards_src[] =
    "local xpcall, guard, owned, resume, yield, running, error, type = ...\n"
    "local function sb_xpcall(f, handler, ...)\n"
    "  if type(handler) ~= 'function' then error(\"bad argument #2 to 'xpcall' (function expected)\", 2) end\n"
    "  return xpcall(f, guard(handler), ...)\n"
    "end\n"
    "local function sb_resume(co, ...)\n"
    "  if owned[co] then\n"
    "    return false, 'cannot resume this coroutine: it is the engine\\'s (a handler, ami.spawn or ami.every run), '\n"
    "      .. 'and the engine resumes it when what it waits for arrives'\n"
    "  end\n"
    "  return resume(co, ...)\n"
    "end\n"
    "local function sb_yield(...)\n"
    "  if owned[running()] then\n"
    "    error('coroutine.yield() would suspend the engine\\'s own coroutine; wait with ami.sleep, '\n"
    "      .. 'ami.action or ami.wait_for, or yield inside a coroutine of your own (coroutine.wrap)', 2)\n"
    "  end\n"
    "  return yield(...)\n"
    "end\n"
    "return sb_xpcall, sb_resume, sb_yield\n";

/* Pushes xpcall, coroutine.resume and coroutine.yield replacements. */
MAY_RAISE static void push_guards(lua_State *L, script_t *sc)
{
    if (luaL_loadbuffer(L, guards_src, sizeof guards_src - 1, "=sandbox.guards") != 0)
        lua_error(L);
    lua_getfield(L, LUA_GLOBALSINDEX, "xpcall");
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, sb_guard_handler, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->owned_ref);
    lua_getfield(L, LUA_GLOBALSINDEX, "coroutine");
    lua_getfield(L, -1, "resume");
    lua_getfield(L, -2, "yield");
    lua_getfield(L, -3, "running");
    lua_remove(L, -4);
    lua_getfield(L, LUA_GLOBALSINDEX, "error");
    lua_getfield(L, LUA_GLOBALSINDEX, "type");
    lua_call(L, 8, 3);
}

/* ---- os.getenv ------------------------------------------------------------------------------ */

static bool name_listed(const char *name, const char *const *list)
{
    for (; list && *list; list++) {
        size_t n = strlen(*list);
        if (n && (*list)[n - 1] == '*' ? strncmp(name, *list, n - 1) == 0 : strcmp(name, *list) == 0)
            return true;
    }
    return false;
}

/* Only what the config allows (scripts.getenv), never a secret_env variable. */
MAY_RAISE static int sb_getenv(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    const ami_lua_config_t *cfg = &sc->gen->rt->cfg;
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    if (strlen(name) != len || !name_listed(name, cfg->getenv_allow) || name_listed(name, cfg->getenv_deny)) {
        lua_pushnil(L);
        return 1;
    }
    const char *v = getenv(name);
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

/* Push a copy of the global library `lib`: all of it (only == NULL) or the
 * listed members. A copy, so the engine's own string.find and friends stay
 * out of scripts' reach. */
MAY_RAISE static void push_library_copy(lua_State *L, const char *lib, const char *const *only)
{
    lua_newtable(L);
    lua_getfield(L, LUA_GLOBALSINDEX, lib);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (only) {
        for (; *only; only++) {
            lua_getfield(L, -1, *only);
            lua_setfield(L, -3, *only);
        }
    } else {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -5);
        }
    }
    lua_pop(L, 1);
}

/* ---- environments ------------------------------------------------------------------- */

/* A fresh global table over the base: a script's or a module's own. */
MAY_RAISE void sandbox_push_own_env(lua_State *L, script_t *sc, const char *script)
{
    sandbox_push_env(L, sc);
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    if (script) {
        lua_pushstring(L, script);
        lua_setfield(L, -2, "SCRIPT");
    }
    lua_pushlightuserdata(L, (void *)&SCRIPT_MT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

/* The environment of the nearest Lua function up the stack. C frames
 * (pcall, the ami API) carry the real globals, which scripts must not get. */
MAY_RAISE static void push_caller_env(lua_State *L, script_t *sc)
{
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Sf", &ar);
        if (strcmp(ar.what, "C") == 0) {
            lua_pop(L, 1);
            continue;
        }
        lua_getfenv(L, -1);
        lua_remove(L, -2);
        if (lua_istable(L, -1) && !lua_rawequal(L, -1, LUA_GLOBALSINDEX))
            return;
        lua_pop(L, 1);
        break;
    }
    sandbox_push_own_env(L, sc, NULL);
}

void sandbox_push_loaded_module(lua_State *L, const char *name)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_istable(L, -1))
        lua_getfield(L, -1, name);
    else
        lua_pushnil(L);
    lua_remove(L, -2);
}

/* Source files only. LuaJIT's own message for a bytecode file ("attempt to
 * load chunk with wrong mode") names neither the file nor the reason. */
MAY_RAISE int sandbox_load_source_file(lua_State *L, const char *path)
{
    int rc = luaL_loadfilex(L, path, "t");
    if (rc != 0 && lua_isstring(L, -1) && strstr(lua_tostring(L, -1), "wrong mode")) {
        lua_pop(L, 1);
        lua_pushfstring(L, "%s: " NO_BYTECODE, path);
    }
    return rc;
}

/* ---- replacements for base functions ------------------------------------------------ */

/* load(s [, chunkname [, mode [, env]]]) and loadstring(s [, chunkname]):
 * source text only, and the chunk gets the caller's globals. */
MAY_RAISE static int sb_load(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_argerror(L, 1, "scripts may load Lua source from a string only");
    size_t len;
    const char *src = lua_tolstring(L, 1, &len);
    const char *chunkname = luaL_optstring(L, 2, src);
    const char *mode = luaL_optstring(L, 3, "t");
    if (!lua_isnoneornil(L, 4))
        luaL_checktype(L, 4, LUA_TTABLE);
    if ((len > 0 && src[0] == '\033') || !strchr(mode, 't')) {
        lua_pushnil(L);
        lua_pushliteral(L, NO_BYTECODE);
        return 2;
    }
    if (luaL_loadbufferx(L, src, len, chunkname, "t") != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (lua_istable(L, 4))
        lua_pushvalue(L, 4);
    else
        push_caller_env(L, sc);
    lua_setfenv(L, -2);
    return 1;
}

MAY_RAISE static int sb_collectgarbage(lua_State *L)
{
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") != 0)
        return luaL_error(L,
                          "collectgarbage(\"%s\") is not available in scripts: the engine "
                          "manages memory. collectgarbage(\"count\") gives the KiB in use.",
                          opt);
    lua_pushnumber(L, lua_gc(L, LUA_GCCOUNT, 0) + lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0);
    return 1;
}

/* print goes to the log (info), where an operator will see it; stdout may
 * be nobody's. ami.log.info is looked up per call: it may be replaced. */
MAY_RAISE static int sb_print(lua_State *L)
{
    int n = lua_gettop(L);
    sandbox_push_loaded_module(L, "ami");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "log");
        lua_remove(L, -2);
    }
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "info");
        lua_remove(L, -2);
    }
    if (!lua_isfunction(L, -1))
        return 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t'); /* before the push: it may spill the buffer onto the stack */
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        if (!lua_isstring(L, -1))
            return luaL_error(L, "'tostring' must return a string to 'print'");
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_call(L, 1, 0);
    return 0;
}

/* ---- the base environment --------------------------------------------------------- */

MAY_RAISE static int base_newindex(lua_State *L)
{
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L, "cannot set global \"%s\": the shared script environment is read-only "
                         "(each script has its own globals over it)", key);
}

static const char *const safe_globals[] = {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
    "tostring", "type", "unpack", "rawequal", "rawget", "setmetatable",
    "getmetatable", "_VERSION", NULL};

static const char *const coroutine_allowed[] = {"create", "running", "status", "wrap", "isyieldable", NULL};
static const char *const os_allowed[] = {"time", "date", "clock", "difftime", NULL};
static const char *const os_refused[] = {"execute", "exit", "remove", "rename", "tmpname",
                                         "setlocale", NULL};

/* With the guards (xpcall, resume, yield) at -3..-1. */
MAY_RAISE static void add_libraries(lua_State *L, int base, script_t *sc)
{
    static const char *const whole[] = {"string", "table", "math", "bit", NULL};
    for (const char *const *lib = whole; *lib; lib++) {
        push_library_copy(L, *lib, NULL);
        if (strcmp(*lib, "table") == 0)
            guard_table_library(L, sc);
        sandbox_make_readonly(L, sc, *lib);
        lua_setfield(L, base, *lib);
    }
    push_library_copy(L, "coroutine", coroutine_allowed);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "resume");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "yield");
    sandbox_make_readonly(L, sc, "coroutine");
    lua_setfield(L, base, "coroutine");
    push_library_copy(L, "os", os_allowed);
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, sb_getenv, 1);
    lua_setfield(L, -2, "getenv");
    for (const char *const *f = os_refused; *f; f++) {
        char name[32];
        snprintf(name, sizeof name, "os.%s", *f);
        push_stub(L, name, refusal_find(name), false);
        lua_setfield(L, -2, *f);
    }
    sandbox_make_readonly(L, sc, "os");
    lua_setfield(L, base, "os");
}

MAY_RAISE static void add_functions(lua_State *L, int base, script_t *sc)
{
    static const char *const blocked[] = {"dofile", "loadfile", "module", "getfenv", "setfenv", NULL};
    for (const char *const *s = blocked; *s; s++)
        set_stub(L, base, *s, false);
    static const char *const libraries[] = {"io", "debug", "jit", "package", NULL};
    for (const char *const *s = libraries; *s; s++)
        set_stub(L, base, *s, true);
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, sb_load, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, base, "load");
    lua_setfield(L, base, "loadstring");
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, sb_rawset, 1);
    lua_setfield(L, base, "rawset");
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, sandbox_require, 1);
    lua_setfield(L, base, "require");
    lua_getfield(L, LUA_GLOBALSINDEX, "tostring");
    lua_pushcclosure(L, sb_print, 1);
    lua_setfield(L, base, "print");
    lua_pushcfunction(L, sb_collectgarbage);
    lua_setfield(L, base, "collectgarbage");
    sandbox_push_loaded_module(L, "ami");
    lua_setfield(L, base, "ami");
}

/* The metatable of every script's own environment: reads fall through to
 * the base; locked, so getmetatable(_G) cannot reach the base. */
MAY_RAISE static void create_script_metatable(lua_State *L, int base)
{
    lua_pushlightuserdata(L, (void *)&SCRIPT_MT_KEY);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, base);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* getmetatable("").__index is the real string library: lock it away. */
static void lock_string_metatable(lua_State *L)
{
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

MAY_RAISE static void build_base(lua_State *L, script_t *sc)
{
    create_stub_metatable(L);
    lock_string_metatable(L);
    lua_createtable(L, 0, 48);
    int base = lua_gettop(L);
    for (const char *const *s = safe_globals; *s; s++) {
        lua_getfield(L, LUA_GLOBALSINDEX, *s);
        lua_setfield(L, base, *s);
    }
    push_guards(L, sc);
    lua_pushvalue(L, -3);
    lua_setfield(L, base, "xpcall");
    add_libraries(L, base, sc);
    lua_pop(L, 3);
    add_functions(L, base, sc);
    create_script_metatable(L, base);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, base_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, base);
}

/* Raises only on a memory error. */
void sandbox_push_env(lua_State *L, script_t *sc)
{
    if (sc->env_ref > 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, sc->env_ref);
        return;
    }
    build_base(L, sc);
    lua_pushvalue(L, -1);
    sc->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- loading a script ------------------------------------------------------------------ */

typedef struct load_job {
    script_t *sc;
    const char *path;
    int ref;
} load_job_t;

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Runs under lua_cpcall, so neither a syntax error nor a memory error
 * while building the environment escapes as a longjmp. */
static int load_protected(lua_State *L)
{
    load_job_t *job = lua_touserdata(L, 1);
    if (sandbox_load_source_file(L, job->path) != 0)
        return lua_error(L);
    sandbox_push_own_env(L, job->sc, base_name(job->path));
    lua_setfenv(L, -2);
    job->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int sandbox_load_file(lua_State *L, script_t *sc, const char *path, ami_err_t *err)
{
    load_job_t job = {sc, path, LUA_NOREF};
    if (lua_cpcall(L, load_protected, &job) != 0) {
        const char *msg = lua_tostring(L, -1);
        ami_err_set(err, AMI_E_CONFIG, "%s", msg ? msg : "cannot load the script");
        lua_pop(L, 1);
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, job.ref);
    luaL_unref(L, LUA_REGISTRYINDEX, job.ref);
    return 0;
}
