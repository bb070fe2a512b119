/*
 * Loading the config file: evaluate the Lua in a sandbox, then read the
 * globals it set into an ami_engine_config_t (servers: config_server.c;
 * single values and messages: config_values.c).
 *
 * The sandbox is a fresh Lua state of its own with base functions that
 * cannot reach the system (no io, no os but os.getenv, no require, load,
 * dofile or loadfile), the string/table/math libraries, a 64 MiB memory cap
 * and a 10-million-instruction budget: a config file is data written in
 * Lua, it must not be able to hang the engine at start-up or on SIGHUP.
 * The JIT is off in it because compiled traces never run the count hook.
 *
 * Globals the file sets land in an empty environment table; each one must
 * be a known section. A name that is not (say "serverz") is an error with a
 * suggestion, because a misspelt section silently ignored is how a
 * production engine ends up with default timeouts nobody chose.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>

#include "cli/config.h"
#include "cli/config_internal.h"
#include "lua/lua_strpat.h"
#include "transport/tcp.h"
#include "util/alloc.h"
#include "util/buf.h"

#define INSTRUCTION_BUDGET 10000000
#define MEMORY_CAP ((size_t)64 << 20)
#define LOOP_MSG "config did not finish (endless loop?)"

static const char ENV_KEY = 'e'; /* registry key: the address is unique */

/* Not const: the struct's field is char *. Never freed (see ami_config_free). */
static char default_metrics_ip[] = "127.0.0.1";

static const char *const TOP_KEYS[] = {"servers", "defaults", "scripts",        "metrics",
                                       "log",     "routing",  "drain_grace_ms", "http", "ha",
                                       "callstate", "busy_poll_us"};
#define N_TOP_KEYS (sizeof TOP_KEYS / sizeof TOP_KEYS[0])

static const char *const SCRIPT_KEYS[] = {
    "dir", "lua_path", "handler_budget_ms", "load_budget_ms", "reload_grace_ms", "max_coroutines",
    "max_handlers", "max_waiters", "memory_limit_mb", "watch", "reload_debounce_ms", "getenv",
    "log_lines_per_sec", "log_bytes_per_sec", "max_metric_series", "filter_max_steps"};
static const char *const METRICS_KEYS[] = {"listen", "health_quorum", "max_connections", "request_timeout_ms",
                                           "response_timeout_ms", "max_request_bytes", "max_response_mb",
                                           "max_buffered_mb", "listen_backlog"};
static const char *const LOG_KEYS[] = {"level", "format", "summary_interval_ms"};
static const char *const LEVEL_NAMES[] = {"debug", "info", "warn", "error"};
static const char *const FORMAT_NAMES[] = {"logfmt", "json"};
static const char *const ROUTE_NAMES[] = {"first_healthy", "round_robin", "least_pending"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the sandbox ----------------------------------------------------------------------- */

typedef struct eval_mem {
    size_t used;
    bool capped;
    uint32_t pattern_checks; /* pattern matching's budget checks so far */
} eval_mem_t;

static void *eval_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    eval_mem_t *m = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        if (ptr) {
            explicit_bzero(ptr, osize); /* inline secrets were Lua strings in here */
            ami_free(ptr);
        }
        m->used -= old;
        return NULL;
    }
    if (m->capped && nsize > old && m->used + (nsize - old) > MEMORY_CAP)
        return NULL;
    void *p = ami_realloc(ptr, nsize);
    if (p)
        m->used = m->used - old + nsize;
    return p;
}

static const char BUDGET_SPENT_KEY = 'b'; /* registry key: set once the budget is spent */

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    /* From now on every instruction fails, so a pcall in the config cannot
     * swallow the error and loop on. */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    lua_pushlightuserdata(L, (void *)&BUDGET_SPENT_KEY);
    lua_pushboolean(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    luaL_where(L, 0); /* in a hook, level 0 is the config code that was running */
    lua_pushstring(L, LOOP_MSG);
    lua_concat(L, 2);
    lua_error(L);
}

static int sandbox_getenv(lua_State *L)
{
    const char *v = getenv(luaL_checkstring(L, 1));
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

/* xpcall's message handler, behind a guard: for the budget's own error
 * LuaJIT runs the handler inside the hook, where no hook runs, so a loop in
 * it could never be stopped. Then the error goes on unhandled. */
static int xpcall_guard(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&BUDGET_SPENT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_toboolean(L, -1)) {
        lua_settop(L, 1);
        return 1;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int guard_handler(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcclosure(L, xpcall_guard, 1);
    return 1;
}

static const char xpcall_src[] =
    "local xpcall, guard = ...\n"
    "return function(f, handler, ...) return xpcall(f, guard(handler), ...) end\n";

/* Pattern matching is one C call the instruction budget cannot stop: the
 * matcher checks in every few thousand steps, and the config as a whole
 * gets a fixed number of them (a few hundred million steps at most). */
#define PATTERN_CHECKS_MAX 20000u

static int pattern_budget(lua_State *L, void *ud)
{
    (void)L;
    eval_mem_t *mem = ud;
    return ++mem->pattern_checks > PATTERN_CHECKS_MAX;
}

static int open_sandbox(lua_State *L)
{
    eval_mem_t *mem = lua_touserdata(L, 1);
    lua_settop(L, 0);
    static const lua_CFunction libs[] = {luaopen_base, luaopen_string, luaopen_table, luaopen_math};
    for (size_t i = 0; i < COUNT(libs); i++) {
        lua_pushcfunction(L, libs[i]);
        lua_call(L, 0, 0);
    }
    lua_getglobal(L, "string");
    ami_strpat_budget_t b = {pattern_budget, mem};
    ami_strpat_install(L, lua_gettop(L), &b);
    lua_pop(L, 1);
    static const char *const allowed[] = {"assert", "error",  "ipairs",   "next",   "pairs",
                                          "pcall",  "select", "tonumber", "tostring", "type",
                                          "unpack", "string", "table",    "math"};
    lua_newtable(L); /* base: what the config may read */
    for (size_t i = 0; i < COUNT(allowed); i++) {
        lua_getglobal(L, allowed[i]);
        lua_setfield(L, -2, allowed[i]);
    }
    if (luaL_loadbuffer(L, xpcall_src, sizeof xpcall_src - 1, "=config.xpcall") != 0)
        return lua_error(L);
    lua_getglobal(L, "xpcall");
    lua_pushcfunction(L, guard_handler);
    lua_call(L, 2, 1);
    lua_setfield(L, -2, "xpcall");
    lua_newtable(L);
    lua_pushcfunction(L, sandbox_getenv);
    lua_setfield(L, -2, "getenv");
    lua_setfield(L, -2, "os");
    lua_pushlightuserdata(L, (void *)&ENV_KEY);
    lua_newtable(L); /* env: what the config sets */
    lua_newtable(L);
    lua_pushvalue(L, -4);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

static const char *error_text(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    return msg ? msg : "(the error value is not a string)";
}

/* ---- sections ---------------------------------------------------------------------------- */

static bool is_folder(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void read_u32(cfg_ctx_t *cx, int t, const char *section, const char *key, uint64_t min,
                     uint64_t max, uint32_t *dst)
{
    cfg_rawfield(cx->L, t, key);
    char where[64];
    snprintf(where, sizeof where, "%s.%s", section, key);
    uint64_t v;
    if (!lua_isnil(cx->L, -1) && cfg_read_uint(cx, lua_gettop(cx->L), where, min, max, &v))
        *dst = (uint32_t)v;
    lua_pop(cx->L, 1);
}

static void read_scripts_dir(cfg_ctx_t *cx, int v)
{
    ami_lua_config_t *lc = &cx->cfg->lua;
    lua_State *L = cx->L;
    const char *dir;
    if (lua_isnil(L, v)) {
        char *guess = cfg_resolve_path(cx, "scripts");
        if (guess && is_folder(guess))
            lc->scripts_dir = guess;
        else
            ami_free(guess);
    } else if (lua_type(L, v) == LUA_TBOOLEAN && !lua_toboolean(L, v)) {
        /* false: run without scripts */
    } else if (lua_type(L, v) != LUA_TSTRING) {
        char got[80];
        cfg_value_text(L, v, got, sizeof got);
        cfg_error(cx, "scripts.dir: expected a folder path (a string) or false, got %s", got);
    } else if (cfg_read_string(cx, v, "scripts.dir", true, &dir)) {
        char *path = cfg_resolve_path(cx, dir);
        struct stat st;
        if (!path)
            return;
        if (stat(path, &st) != 0)
            cfg_error(cx, "scripts.dir: \"%.150s\" is not a readable folder (%s); create it, or set "
                          "dir = false to run without scripts", path, strerror(errno));
        else if (!S_ISDIR(st.st_mode))
            cfg_error(cx, "scripts.dir: \"%.150s\" is a file, not a folder; give the folder that holds "
                          "the *.lua scripts", path);
        else if (access(path, R_OK | X_OK) != 0)
            cfg_error(cx, "scripts.dir: \"%.150s\" is not a readable folder (%s); fix its permissions",
                      path, strerror(errno));
        else {
            lc->scripts_dir = path;
            return;
        }
        ami_free(path);
    }
}

/* Each template is made relative to the config's folder, like every path. */
static void read_lua_path(cfg_ctx_t *cx, int v)
{
    const char *spec;
    if (lua_isnil(cx->L, v) || !cfg_read_string(cx, v, "scripts.lua_path", true, &spec))
        return;
    ami_buf_t out;
    ami_buf_init(&out, 0);
    bool ok = true;
    for (const char *p = spec; ok;) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char entry[512];
        if (n >= sizeof entry) {
            cfg_error(cx, "scripts.lua_path: an entry is longer than %zu bytes; shorten it", sizeof entry - 1);
            ok = false;
            break;
        }
        memcpy(entry, p, n);
        entry[n] = '\0';
        if (n > 0 && !strchr(entry, '?')) {
            cfg_error(cx, "scripts.lua_path: entry \"%.100s\" has no \"?\"; write a template such as "
                          "\"%.100s/?.lua\"", entry, entry);
            ok = false;
        } else if (n > 0) {
            char *abs = cfg_resolve_path(cx, entry);
            ok = abs && ami_buf_printf(&out, "%s%s", out.len ? ";" : "", abs) == 0;
            ami_free(abs);
        }
        if (!end)
            break;
        p = end + 1;
    }
    if (ok && out.len)
        cx->cfg->lua.lua_path = ami_strndup(out.data, out.len);
    ami_buf_deinit(&out);
}

/* scripts.getenv: the variables scripts may read, as names or "PREFIX_*". */
static void read_getenv(cfg_ctx_t *cx, int v)
{
    lua_State *L = cx->L;
    if (lua_isnil(L, v) || !cfg_expect_table(cx, v, "scripts.getenv"))
        return;
    size_t n = lua_objlen(L, v), kept = 0;
    if (n > AMI_CONFIG_MAX_GETENV) {
        cfg_error(cx, "scripts.getenv: more than %d entries; use prefixes such as \"CRM_*\"", AMI_CONFIG_MAX_GETENV);
        return;
    }
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, v, (int)i);
        char where[48];
        snprintf(where, sizeof where, "scripts.getenv[%zu]", i);
        const char *name;
        if (cfg_read_string(cx, lua_gettop(L), where, true, &name)) {
            size_t len = strlen(name);
            if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != len &&
                !(len > 1 && name[len - 1] == '*' &&
                  strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == len - 1))
                cfg_error(cx, "%s: \"%.60s\" is not a variable name (letters, digits, _) or a prefix ending "
                              "in *", where, name);
            else
                cx->cfg->getenv_allow[kept++] = ami_strdup(name);
        }
        lua_pop(L, 1);
    }
    cx->cfg->lua.getenv_allow = (const char *const *)cx->cfg->getenv_allow;
}

/* Every secret_env variable is kept from scripts, whatever scripts.getenv says. */
static void deny_secret_variables(ami_engine_config_t *cfg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->nservers && i < AMI_CONFIG_MAX_SERVERS; i++)
        if (strncmp(cfg->secret_source[i], "env ", 4) == 0)
            cfg->getenv_deny[n++] = ami_strdup(cfg->secret_source[i] + 4);
    cfg->lua.getenv_deny = (const char *const *)cfg->getenv_deny;
}

static void load_scripts(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    ami_lua_config_t *lc = &cx->cfg->lua;
    bool table = !lua_isnil(L, t) && cfg_expect_table(cx, t, "scripts");
    if (table)
        cfg_check_keys(cx, t, "scripts", SCRIPT_KEYS, COUNT(SCRIPT_KEYS));
    if (table)
        cfg_rawfield(L, t, "dir");
    else
        lua_pushnil(L);
    read_scripts_dir(cx, lua_gettop(L));
    lua_pop(L, 1);
    if (!table)
        return;
    cfg_rawfield(L, t, "lua_path");
    read_lua_path(cx, lua_gettop(L));
    lua_pop(L, 1);
    read_u32(cx, t, "scripts", "handler_budget_ms", 1, 60000, &lc->handler_budget_ms);
    read_u32(cx, t, "scripts", "load_budget_ms", 1, 600000, &lc->load_budget_ms);
    read_u32(cx, t, "scripts", "reload_grace_ms", 0, 86400000, &lc->reload_grace_ms);
    read_u32(cx, t, "scripts", "max_coroutines", 1, 10000000, &lc->max_coroutines);
    read_u32(cx, t, "scripts", "max_handlers", 1, 1000000, &lc->max_handlers);
    read_u32(cx, t, "scripts", "max_waiters", 1, 10000000, &lc->max_waiters);
    read_u32(cx, t, "scripts", "reload_debounce_ms", 0, 60000, &lc->reload_debounce_ms);
    read_u32(cx, t, "scripts", "log_lines_per_sec", 1, 1000000, &lc->log_lines_per_sec);
    read_u32(cx, t, "scripts", "log_bytes_per_sec", 1024, 1u << 30, &lc->log_bytes_per_sec);
    read_u32(cx, t, "scripts", "max_metric_series", 1, 100000, &lc->max_metric_series);
    read_u32(cx, t, "scripts", "filter_max_steps", 1000, 100000000, &lc->filter_max_steps);
    cfg_rawfield(L, t, "getenv");
    read_getenv(cx, lua_gettop(L));
    lua_pop(L, 1);
    uint32_t mb = 0;
    read_u32(cx, t, "scripts", "memory_limit_mb", 1, 65536, &mb);
    if (mb)
        lc->memory_limit = (size_t)mb << 20;
    cfg_rawfield(L, t, "watch");
    bool watch;
    if (!lua_isnil(L, -1) && cfg_read_bool(cx, lua_gettop(L), "scripts.watch", &watch))
        lc->watch_scripts = watch;
    lua_pop(L, 1);
}

/* "ip:port" or "[v6]:port"; the IP must be a literal, as for servers. */
static void parse_listen(cfg_ctx_t *cx, const char *given)
{
    const char *s = given;
    char ip[64];
    const char *port;
    size_t n;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        n = close ? (size_t)(close - s - 1) : 0;
        port = close && close[1] == ':' ? close + 2 : NULL;
        s++;
    } else {
        const char *colon = strrchr(s, ':');
        n = colon ? (size_t)(colon - s) : 0;
        port = colon ? colon + 1 : NULL;
        if (colon && memchr(s, ':', n)) {
            cfg_error(cx, "metrics.listen: \"%.60s\" looks like a bare IPv6 address; put it in brackets, "
                          "e.g. \"[::1]:9100\"", given);
            return;
        }
    }
    unsigned long p = 0;
    /* port 0: the kernel picks a free one at start and the engine logs it
     * (tests and tools that read the log; a scraper needs a fixed port) */
    bool port_ok = port && *port && strspn(port, "0123456789") == strlen(port) && strlen(port) <= 5 &&
                   (p = strtoul(port, NULL, 10)) <= 65535;
    bool ip_ok = n > 0 && n < sizeof ip;
    if (ip_ok) {
        memcpy(ip, s, n);
        ip[n] = '\0';
        ip_ok = ami_tcp_is_ip_literal(ip);
    }
    if (!port_ok || !ip_ok) {
        cfg_error(cx, "metrics.listen: \"%.60s\" is not ip:port with an IP address and a port from 0 to 65535; "
                      "write \"127.0.0.1:9100\", \"[::1]:9100\", or false to turn the endpoint off",
                  given);
        return;
    }
    cx->cfg->metrics_ip = ami_strdup(ip);
    cx->cfg->metrics_port = (uint16_t)p;
}

/* The endpoint's limits against attacks (obs/http.h says what each bounds). */
static void read_metrics_limits(cfg_ctx_t *cx, int t)
{
    ami_http_config_t *hc = &cx->cfg->metrics_http;
    uint32_t request_bytes = 0, response_mb = 0, buffered_mb = 0;
    read_u32(cx, t, "metrics", "max_connections", 1, 65536, &hc->max_connections);
    read_u32(cx, t, "metrics", "request_timeout_ms", 10, 600000, &hc->request_timeout_ms);
    read_u32(cx, t, "metrics", "response_timeout_ms", 10, 3600000, &hc->response_timeout_ms);
    read_u32(cx, t, "metrics", "max_request_bytes", 1024, 1u << 20, &request_bytes);
    read_u32(cx, t, "metrics", "max_response_mb", 1, 4096, &response_mb);
    read_u32(cx, t, "metrics", "max_buffered_mb", 1, 65536, &buffered_mb);
    read_u32(cx, t, "metrics", "listen_backlog", 1, 65535, &hc->backlog);
    if (request_bytes)
        hc->max_request = request_bytes;
    if (response_mb)
        hc->max_response = (size_t)response_mb << 20;
    if (buffered_mb)
        hc->max_buffered = (size_t)buffered_mb << 20;
    if (hc->max_buffered < hc->max_response)
        cfg_error(cx, "metrics.max_buffered_mb: %zu is less than max_response_mb (%zu); it must hold at least one "
                      "whole answer", hc->max_buffered >> 20, hc->max_response >> 20);
}

static void load_metrics(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    if (lua_isnil(L, t) || !cfg_expect_table(cx, t, "metrics"))
        return;
    cfg_check_keys(cx, t, "metrics", METRICS_KEYS, COUNT(METRICS_KEYS));
    cfg_rawfield(L, t, "listen");
    const char *listen;
    if (lua_isnil(L, -1)) {
        /* default */
    } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        cx->cfg->metrics_enabled = false;
    } else if (lua_type(L, -1) != LUA_TSTRING) {
        char got[80];
        cfg_value_text(L, -1, got, sizeof got);
        cfg_error(cx, "metrics.listen: expected \"ip:port\" or false, got %s", got);
    } else if (cfg_read_string(cx, lua_gettop(L), "metrics.listen", true, &listen)) {
        parse_listen(cx, listen);
    }
    lua_pop(L, 1);
    cfg_rawfield(L, t, "health_quorum");
    size_t n = cx->cfg->nservers;
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "all") == 0)) {
        cx->cfg->health_quorum = 0;
    } else if (lua_type(L, -1) != LUA_TNUMBER) {
        char got[80];
        cfg_value_text(L, -1, got, sizeof got);
        cfg_error(cx, "metrics.health_quorum: expected \"all\" or a number of servers, got %s", got);
    } else {
        uint64_t q;
        if (cfg_read_uint(cx, lua_gettop(L), "metrics.health_quorum", 1, AMI_CONFIG_MAX_SERVERS, &q)) {
            if (n > 0 && q > n)
                cfg_error(cx, "metrics.health_quorum: %llu is more than the %zu server%s configured; use "
                              "\"all\" or a number from 1 to %zu", (unsigned long long)q, n, n == 1 ? "" : "s", n);
            else
                cx->cfg->health_quorum = (uint32_t)q;
        }
    }
    lua_pop(L, 1);
    read_metrics_limits(cx, t);
}

static void load_log(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    if (lua_isnil(L, t) || !cfg_expect_table(cx, t, "log"))
        return;
    cfg_check_keys(cx, t, "log", LOG_KEYS, COUNT(LOG_KEYS));
    cfg_rawfield(L, t, "level");
    int i = lua_isnil(L, -1) ? -1 : cfg_read_enum(cx, lua_gettop(L), "log.level", LEVEL_NAMES, COUNT(LEVEL_NAMES));
    if (i >= 0)
        cx->cfg->log_level = (ami_log_level_t)ami_log_level_parse(LEVEL_NAMES[i]);
    lua_pop(L, 1);
    cfg_rawfield(L, t, "format");
    i = lua_isnil(L, -1) ? -1 : cfg_read_enum(cx, lua_gettop(L), "log.format", FORMAT_NAMES, COUNT(FORMAT_NAMES));
    if (i >= 0)
        cx->cfg->log_format = i == 1 ? AMI_LOG_FMT_JSON : AMI_LOG_FMT_LOGFMT;
    lua_pop(L, 1);
    read_u32(cx, t, "log", "summary_interval_ms", 0, 86400000, &cx->cfg->summary_interval_ms);
}

static void check_top_keys(cfg_ctx_t *cx, int env)
{
    lua_State *L = cx->L;
    lua_pushnil(L);
    while (lua_next(L, env)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            continue; /* only rawset could make one, and the sandbox has none */
        const char *key = lua_tostring(L, -1);
        bool known = false;
        for (size_t i = 0; i < N_TOP_KEYS && !known; i++)
            known = strcmp(key, TOP_KEYS[i]) == 0;
        if (known)
            continue;
        const char *s = cfg_suggest(key, TOP_KEYS, N_TOP_KEYS);
        if (s)
            cfg_error(cx, "%.60s: unknown setting; did you mean \"%s\"?", key, s);
        else
            cfg_error(cx, "%.60s: unknown setting; the config may set servers, defaults, scripts, metrics, "
                          "log, routing, drain_grace_ms, http, ha, callstate and busy_poll_us (make helper variables local)", key);
    }
}

static int extract(lua_State *L)
{
    cfg_ctx_t *cx = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushlightuserdata(L, (void *)&ENV_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    check_top_keys(cx, 1);
    for (size_t i = 0; i < N_TOP_KEYS; i++)
        cfg_rawfield(L, 1, TOP_KEYS[i]); /* at 2 + i, in TOP_KEYS order */
    cfg_load_servers(cx, 2, 3);
    deny_secret_variables(cx->cfg);
    load_scripts(cx, 4);
    load_metrics(cx, 5);
    load_log(cx, 6);
    if (!lua_isnil(L, 7)) {
        int r = cfg_read_enum(cx, 7, "routing", ROUTE_NAMES, COUNT(ROUTE_NAMES));
        if (r >= 0)
            cx->cfg->route = (ami_route_policy_t)ami_route_policy_parse(ROUTE_NAMES[r]);
    }
    uint64_t grace;
    if (!lua_isnil(L, 8) && cfg_read_uint(cx, 8, "drain_grace_ms", 0, 3600000, &grace))
        cx->cfg->drain_grace_ms = (uint32_t)grace;
    cfg_load_http(cx, 9);
    cfg_load_ha(cx, 10);
    cfg_load_callstate(cx, 11);
    uint64_t busy_poll;
    if (!lua_isnil(L, 12) && cfg_read_uint(cx, 12, "busy_poll_us", 0, AMI_BUSY_POLL_MAX_US, &busy_poll))
        cx->cfg->busy_poll_us = (uint32_t)busy_poll;
    return 0;
}

/* The config's code: the file at path, or text already in memory. */
typedef struct cfg_source {
    const char *text; /* NULL: read the file */
    size_t len;
} cfg_source_t;

/* Text only ("t"): LuaJIT does not verify bytecode, and a crafted binary
 * chunk reads and writes wherever it says. */
static int load_chunk(lua_State *L, const char *path, const cfg_source_t *src)
{
    if (!src->text)
        return luaL_loadfilex(L, path, "t");
    char chunkname[512]; /* "@name", as luaL_loadfile names a file's chunk */
    snprintf(chunkname, sizeof chunkname, "@%s", path);
    return luaL_loadbufferx(L, src->text, src->len, chunkname, "t");
}

static void evaluate(cfg_ctx_t *cx, const char *path, const cfg_source_t *src)
{
    eval_mem_t mem = {.capped = true};
    lua_State *L = lua_newstate(eval_alloc, &mem);
    if (!L) {
        cfg_error(cx, "%s: cannot create a Lua state (out of memory)", path);
        return;
    }
    cx->L = L;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    int st = lua_cpcall(L, open_sandbox, &mem);
    if (st != 0) {
        cfg_error(cx, "%s: cannot set up the config sandbox: %s", path, error_text(L));
    } else if ((st = load_chunk(L, path, src)) != 0) {
        if (st == LUA_ERRSYNTAX && (strstr(error_text(L), "wrong mode") || strstr(error_text(L), "binary chunk")))
            cfg_error(cx, "%s: is compiled Lua (bytecode), which is refused; give the config's Lua text", path);
        else if (st == LUA_ERRSYNTAX)
            cfg_error(cx, "%s; fix the Lua syntax", error_text(L));
        else if (st == LUA_ERRMEM)
            cfg_error(cx, "%s: larger than %zu MiB; a config file holds a few settings", path, MEMORY_CAP >> 20);
        else
            cfg_error(cx, "%s: cannot read the config file (%s); check the path given with -c", path,
                      access(path, R_OK) != 0 ? strerror(errno) : error_text(L));
    } else {
        lua_pushlightuserdata(L, (void *)&ENV_KEY);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_setfenv(L, -2);
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, INSTRUCTION_BUDGET);
        st = lua_pcall(L, 0, 0, 0);
        lua_sethook(L, NULL, 0, 0);
        if (st == LUA_ERRMEM)
            cfg_error(cx, "%s: running the config used more than %zu MiB; a config file must only set values",
                      path, MEMORY_CAP >> 20);
        else if (st != 0 && strstr(error_text(L), LOOP_MSG))
            cfg_error(cx, "%s; a config file must only set values, check its loops", error_text(L));
        else if (st != 0)
            cfg_error(cx, "%s (while running the config file)", error_text(L));
    }
    if (st == 0) {
        lua_settop(L, 0);
        mem.capped = false; /* the operator's code is done; reading it must not fail half-way */
        if (lua_cpcall(L, extract, cx) != 0)
            cfg_error(cx, "%s: cannot read the config: %s", path, error_text(L));
    }
    lua_close(L);
    cx->L = NULL;
}

/* ---- the API ------------------------------------------------------------------------------ */

void ami_config_init(ami_engine_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    ami_lua_config_default(&cfg->lua);
    cfg->route = AMI_ROUTE_FIRST_HEALTHY;
    cfg->metrics_enabled = true;
    cfg->metrics_ip = default_metrics_ip;
    cfg->metrics_port = 9100;
    cfg->health_quorum = 0;
    ami_http_config_default(&cfg->metrics_http);
    cfg->metrics_http.bind_ip = NULL;
    cfg->log_level = AMI_LOG_INFO;
    cfg->log_format = AMI_LOG_FMT_LOGFMT;
    cfg->drain_grace_ms = 10000;
    cfg->summary_interval_ms = 0;
    cfg->http_enabled = false;
    ami_httpc_config_default(&cfg->http);
    ami_ha_config_default(&cfg->ha);
    ami_callstate_config_default(&cfg->callstate);
}

static int load_config(const char *path, const cfg_source_t *src, ami_engine_config_t *cfg,
                       ami_config_errors_t *errs)
{
    ami_config_errors_t scratch;
    if (!errs)
        errs = &scratch;
    errs->count = 0;
    ami_config_init(cfg);
    cfg_ctx_t cx = {.cfg = cfg, .errs = errs, .dir = ""};
    if (!path || !*path) {
        cfg_error(&cx, "config: no file given; pass the config file with -c engine.lua");
        return -1;
    }
    cfg->path = ami_strdup(path);
    const char *slash = strrchr(path, '/');
    char *dir = slash ? ami_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : NULL;
    cx.dir = dir ? dir : "";
    if (!cfg->path || (slash && !dir))
        cfg_error(&cx, "%s: out of memory loading the config", path);
    else
        evaluate(&cx, path, src);
    ami_free(dir);
    if (cx.total > errs->count && errs->count > 0)
        snprintf(errs->msg[errs->count - 1], sizeof errs->msg[0],
                 "... and %zu more errors; fix the ones above and check again", cx.total - errs->count + 1);
    if (cx.total == 0)
        return 0;
    ami_config_free(cfg);
    return -1;
}

int ami_config_load(const char *path, ami_engine_config_t *cfg, ami_config_errors_t *errs)
{
    return load_config(path, &(cfg_source_t){NULL, 0}, cfg, errs);
}

int ami_config_load_text(const char *name, const char *text, size_t len, ami_engine_config_t *cfg,
                         ami_config_errors_t *errs)
{
    return load_config(name, &(cfg_source_t){text ? text : "", len}, cfg, errs);
}

void ami_config_free(ami_engine_config_t *cfg)
{
    if (!cfg)
        return;
    ami_free(cfg->path);
    for (size_t i = 0; i < cfg->nservers && i < AMI_CONFIG_MAX_SERVERS; i++)
        cfg_free_server(&cfg->servers[i]);
    ami_free((char *)cfg->lua.scripts_dir);
    ami_free((char *)cfg->lua.lua_path);
    for (size_t i = 0; cfg->getenv_allow[i]; i++)
        ami_free(cfg->getenv_allow[i]);
    for (size_t i = 0; cfg->getenv_deny[i]; i++)
        ami_free(cfg->getenv_deny[i]);
    if (cfg->metrics_ip != default_metrics_ip)
        ami_free(cfg->metrics_ip);
    cfg_free_http(cfg);
    cfg_free_ha(cfg);
    cfg_free_callstate(cfg);
    ami_config_init(cfg); /* a second free, or a free after a failed load, is harmless */
}

static void describe_server(const ami_server_options_t *o, const char *src, ami_buf_t *out)
{
    bool v6 = o->host && strchr(o->host, ':') && o->host[0] != '[';
    ami_buf_printf(out, "  %s: %s%s%s:%u, user %s, auth %s, ", o->server_key, v6 ? "[" : "",
                   o->host, v6 ? "]" : "", o->port, o->username, o->auth == AMI_AUTH_MD5 ? "md5" : "plain");
    if (strcmp(src, "inline") == 0)
        ami_buf_printf(out, "secret inline\n");
    else
        ami_buf_printf(out, "secret from %s\n", src);
    if (o->heartbeat_interval_ms)
        ami_buf_printf(out, "    heartbeat every %u ms (timeout %u ms, %u failures close)",
                       o->heartbeat_interval_ms,
                       o->heartbeat_timeout_ms ? o->heartbeat_timeout_ms : o->heartbeat_interval_ms,
                       o->heartbeat_max_failures);
    else
        ami_buf_printf(out, "    heartbeat off");
    ami_buf_printf(out, ", enforce_ip_endpoints %s\n", o->enforce_ip_endpoints ? "on" : "off");
    ami_buf_printf(out, "    timeouts: connect %u ms, login %u ms, action %u ms; backoff %u..%u ms; "
                        "max_pending %u\n", o->connect_timeout_ms, o->login_timeout_ms,
                   o->action_timeout_ms, o->backoff_initial_ms, o->backoff_max_ms, o->max_pending);
    if (o->events || o->nfilters)
        ami_buf_printf(out, "    events %s, %zu filter%s\n", o->events ? o->events : "(unchanged)",
                       o->nfilters, o->nfilters == 1 ? "" : "s");
    cfg_describe_tls(o, out);
}

void ami_config_describe(const ami_engine_config_t *cfg, ami_buf_t *out)
{
    ami_buf_printf(out, "config: %s\n", cfg->path ? cfg->path : "(defaults)");
    ami_buf_printf(out, "servers: %zu\n", cfg->nservers);
    for (size_t i = 0; i < cfg->nservers && i < AMI_CONFIG_MAX_SERVERS; i++)
        describe_server(&cfg->servers[i], cfg->secret_source[i], out);
    ami_buf_printf(out, "routing: %s\n", ami_route_policy_name(cfg->route));
    const ami_lua_config_t *lc = &cfg->lua;
    if (lc->scripts_dir)
        ami_buf_printf(out, "scripts: %s (watch %s, debounce %u ms)\n", lc->scripts_dir,
                       lc->watch_scripts ? "on" : "off", lc->reload_debounce_ms);
    else
        ami_buf_printf(out, "scripts: none\n");
    if (lc->lua_path)
        ami_buf_printf(out, "  lua_path: %s\n", lc->lua_path);
    ami_buf_printf(out, "  per script: handler budget %u ms, load %u ms, reload grace %u ms; memory %zu MiB; "
                        "max coroutines %u, handlers %u, waiters %u; log %u lines/s, %u bytes/s; "
                        "%u metric series\n", lc->handler_budget_ms,
                   lc->load_budget_ms, lc->reload_grace_ms, lc->memory_limit >> 20, lc->max_coroutines,
                   lc->max_handlers, lc->max_waiters, lc->log_lines_per_sec, lc->log_bytes_per_sec,
                   lc->max_metric_series);
    ami_buf_printf(out, "  os.getenv:");
    if (!cfg->getenv_allow[0])
        ami_buf_printf(out, " nothing (scripts.getenv is empty)");
    for (size_t i = 0; cfg->getenv_allow[i]; i++)
        ami_buf_printf(out, " %s", cfg->getenv_allow[i]);
    ami_buf_printf(out, "%s\n", cfg->getenv_deny[0] ? " (never the secret_env variables)" : "");
    if (!cfg->metrics_enabled)
        ami_buf_printf(out, "metrics: off\n");
    else {
        bool v6 = cfg->metrics_ip && strchr(cfg->metrics_ip, ':');
        ami_buf_printf(out, "metrics: listen %s%s%s:%u%s, health quorum ", v6 ? "[" : "", cfg->metrics_ip,
                       v6 ? "]" : "", cfg->metrics_port,
                       cfg->metrics_port ? "" : " (a free port chosen at start, logged)");
        if (cfg->health_quorum)
            ami_buf_printf(out, "%u of %zu\n", cfg->health_quorum, cfg->nservers);
        else
            ami_buf_printf(out, "all %zu\n", cfg->nservers);
        const ami_http_config_t *hc = &cfg->metrics_http;
        ami_buf_printf(out, "  connections: max %u (backlog %u); request head %u ms, %zu bytes; answer %u ms, "
                            "%zu MiB; %zu MiB held for slow readers\n", hc->max_connections, hc->backlog,
                       hc->request_timeout_ms, hc->max_request, hc->response_timeout_ms, hc->max_response >> 20,
                       hc->max_buffered >> 20);
    }
    ami_buf_printf(out, "log: level %s, format %s, summary ", ami_log_level_name(cfg->log_level),
                   cfg->log_format == AMI_LOG_FMT_JSON ? "json" : "logfmt");
    if (cfg->summary_interval_ms)
        ami_buf_printf(out, "every %u ms\n", cfg->summary_interval_ms);
    else
        ami_buf_printf(out, "off\n");
    ami_buf_printf(out, "drain_grace_ms: %u\n", cfg->drain_grace_ms);
    if (cfg->busy_poll_us)
        ami_buf_printf(out, "busy_poll_us: %u (the loop spins that long after input)\n", cfg->busy_poll_us);
    for (size_t i = 0; i < cfg->nwarnings; i++)
        ami_buf_printf(out, "warning: %s\n", cfg->warnings[i]);
    cfg_describe_http(cfg, out);
    cfg_describe_ha(cfg, out);
    cfg_describe_callstate(cfg, out);
}
