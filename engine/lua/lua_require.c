/*
 * require(name) for scripts: the Lua modules a script may share code
 * through, found in the engine's lua_path, then in the scripts folder.
 *
 * A few names are answered by the engine itself (ami, the read-only
 * libraries) or refused with the reason (os, io, ffi, jit, debug). Anything
 * else is a Lua source file, run once per script (each script has its own state) with its own globals
 * over the base environment and cached in a table of the generation's
 * registry; a module that requires itself, directly or through others, is
 * reported instead of looping. The base environment itself, and the
 * helpers both share, are in lua_sandbox.c. Everything here runs on the
 * loop thread.
 */
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include "lua/lua_internal.h"
#include "lua/lua_sandbox_internal.h"

#define MAX_MODULE_NAME 128

/* Registry keys: the addresses are unique, the contents unused. */
static const char LOADED_KEY = 'l';
static const char LOADING_MARK = 'm';

static bool module_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > MAX_MODULE_NAME || strlen(s) != len)
        return false;
    char prev = '.';
    for (; *s; prev = *s++) {
        bool word = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                    (*s >= '0' && *s <= '9') || *s == '_' || *s == '-';
        if (!word && (*s != '.' || prev == '.'))
            return false;
    }
    return prev != '.';
}

/* Modules the engine provides itself (the libraries, ami) or refuses.
 * True if it pushed the module. */
MAY_RAISE static bool push_builtin_module(lua_State *L, script_t *sc, const char *name)
{
    static const char *const libraries[] = {"string", "table", "math", "bit", "coroutine", NULL};
    static const char *const refused[] = {"ffi", "jit", "io", "debug", NULL};
    if (strcmp(name, "ami") == 0) {
        sandbox_push_loaded_module(L, "ami");
        return true;
    }
    if (strcmp(name, "os") == 0)
        sandbox_refuse(L, "require(\"os\")");
    for (const char *const *r = refused; *r; r++)
        if (strcmp(name, *r) == 0)
            sandbox_refuse(L, name);
    for (const char *const *l = libraries; *l; l++) {
        if (strcmp(name, *l) == 0) {
            sandbox_push_env(L, sc);
            lua_getfield(L, -1, name);
            lua_remove(L, -2);
            return true;
        }
    }
    return false;
}

static bool is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Try the template (length n) with '?' replaced by file. Pushes the path;
 * true if the file exists. */
static bool try_template(lua_State *L, const char *tpl, size_t n, const char *file)
{
    lua_pushlstring(L, tpl, n);
    luaL_gsub(L, lua_tostring(L, -1), "?", file);
    lua_remove(L, -2);
    return is_regular_file(lua_tostring(L, -1));
}

/* The candidate path is at the top. Found: it alone stays above top. Not
 * found: it becomes a line of the "not found" message. */
static bool keep_if_found(lua_State *L, int top, bool found)
{
    if (found) {
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        return true;
    }
    lua_pushfstring(L, "\n\tno file '%s'", lua_tostring(L, -1));
    lua_remove(L, -2);
    return false;
}

/* The module's file: pushes its path, or raises with every path tried. */
MAY_RAISE static void push_module_path(lua_State *L, script_t *sc, const char *name)
{
    int top = lua_gettop(L);
    const char *file = luaL_gsub(L, name, ".", "/");
    for (const char *p = sc->gen->rt->lua_path; p && *p;) {
        luaL_checkstack(L, 4, "require: too many paths in lua_path");
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0 && keep_if_found(L, top, try_template(L, p, n, file)))
            return;
        p += n + (end != NULL);
    }
    if (sc->gen->rt->scripts_dir) {
        luaL_checkstack(L, 4, "require: too many paths in lua_path");
        lua_pushfstring(L, "%s/%s.lua", sc->gen->rt->scripts_dir, file);
        if (keep_if_found(L, top, is_regular_file(lua_tostring(L, -1))))
            return;
    }
    lua_concat(L, lua_gettop(L) - top - 1);
    luaL_error(L, "module '%s' not found (looked in the engine's lua_path and the scripts folder):%s",
               name, lua_tostring(L, -1));
}

/* Stack: 1 name, 2 loaded table, 3 path. Runs the module with its own
 * globals; protected, so a failure does not leave it marked as loading. */
MAY_RAISE static int load_module(lua_State *L, script_t *sc, const char *name)
{
    const char *path = lua_tostring(L, 3);
    if (sandbox_load_source_file(L, path) != 0)
        return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, path,
                          lua_tostring(L, -1));
    sandbox_push_own_env(L, sc, NULL);
    lua_setfenv(L, -2);
    lua_pushlightuserdata(L, (void *)&LOADING_MARK);
    lua_setfield(L, 2, name);
    lua_pushstring(L, name);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pushnil(L);
        lua_setfield(L, 2, name);
        return lua_error(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}

MAY_RAISE static void push_loaded_table(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&LOADED_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_istable(L, -1))
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushlightuserdata(L, (void *)&LOADED_KEY);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* require(name): Lua modules from lua_path, then the scripts folder, each
 * loaded once per script state. */
MAY_RAISE int sandbox_require(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    if (push_builtin_module(L, sc, name))
        return 1;
    if (!module_name_ok(name, len))
        return luaL_argerror(L, 1, "a module name is letters, digits, '_' and '-', with '.' "
                                   "between folder names (e.g. \"helpers.queue\")");
    push_loaded_table(L);
    lua_getfield(L, 2, name);
    if (lua_touserdata(L, -1) == (void *)&LOADING_MARK)
        return luaL_error(L, "require(\"%s\"): the module is already being loaded: it requires "
                             "itself, directly or through another module. Move the shared part "
                             "into a third module.", name);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    push_module_path(L, sc, name);
    return load_module(L, sc, name);
}
