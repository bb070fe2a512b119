/*
 * ami.log: structured logging from scripts, through the engine's logger.
 *
 *   ami.log.info("hangup", {chan = ev.Channel, cause = ev.Cause})
 *   -> ts=... level=info msg=hangup cause=16 chan=SIP/100-0001 script=/etc/ami/scripts/x.lua line=3 gen=1
 *
 * Levels: debug, info, warn (alias warning), error. A call below the
 * logger's level returns at once, before looking at its arguments, so
 * debug lines left in a handler cost almost nothing.
 *
 * Bounded: at most LOG_MAX_FIELDS fields (the rest, and fields whose key is
 * not a string, are counted in dropped_fields=N), string values cut at
 * LOG_MAX_VALUE bytes, and per script a rate of lines and bytes per second
 * (a token bucket with one second of burst). Lines past the rate are
 * dropped and counted; once a second a warning says how many. The fields live on the C stack and point into Lua
 * strings kept on the Lua stack, so a Lua error (a raising __tostring)
 * leaks nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "util/clock.h"

#define LOG_MAX_FIELDS 32
#define LOG_MAX_VALUE 2048
#define LOG_MAX_KEY 64
/* script, line, gen, dropped_fields */
#define LOG_ENGINE_FIELDS 4

typedef struct log_line {
    ami_log_field_t f[LOG_MAX_FIELDS + LOG_ENGINE_FIELDS];
    char keys[LOG_MAX_FIELDS][LOG_MAX_KEY];
    size_t n;
    unsigned long dropped;
} log_line_t;

/* Push tostring(v) for the value at idx, as Lua's tostring would. */
MAY_RAISE static const char *push_tostring(lua_State *L, int idx)
{
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    if (luaL_callmeta(L, idx, "__tostring")) {
        if (lua_isstring(L, -1))
            return lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
        lua_pushvalue(L, idx);
        return lua_tostring(L, -1);
    case LUA_TNIL:
        return lua_pushfstring(L, "nil");
    case LUA_TBOOLEAN:
        return lua_pushfstring(L, lua_toboolean(L, idx) ? "true" : "false");
    default:
        return lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
    }
}

/* Keys go into logfmt as they are: keep them to characters that cannot
 * break the line (a key with a space or '=' would forge another field). */
static bool copy_key(char *out, const char *key)
{
    size_t i = 0;
    for (; key[i] && i < LOG_MAX_KEY - 1; i++) {
        char c = key[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        out[i] = ok ? c : '_';
    }
    out[i] = '\0';
    return i > 0;
}

static bool is_integral(lua_Number d)
{
    return d >= -9.0e18 && d <= 9.0e18 && (lua_Number)(long long)d == d;
}

/* The value at the top becomes field f; a converted value replaces it on
 * the stack, so the string stays alive until the line is written. */
MAY_RAISE static void value_field(lua_State *L, ami_log_field_t *f)
{
    size_t len;
    switch (lua_type(L, -1)) {
    case LUA_TNUMBER: {
        lua_Number d = lua_tonumber(L, -1);
        if (is_integral(d))
            *f = AMI_F_INT(f->key, (long long)d);
        else
            *f = AMI_F_DBL(f->key, d);
        return;
    }
    case LUA_TBOOLEAN:
        *f = AMI_F_BOOL(f->key, lua_toboolean(L, -1));
        return;
    case LUA_TTABLE:
        *f = AMI_F_STR(f->key, "table");
        return;
    case LUA_TSTRING:
        break;
    default:
        push_tostring(L, -1);
        lua_replace(L, -2);
    }
    const char *s = lua_tolstring(L, -1, &len);
    *f = AMI_F_STRN(f->key, s, len > LOG_MAX_VALUE ? LOG_MAX_VALUE : len);
}

/* Each kept value stays on the Lua stack under the iteration key. */
MAY_RAISE static void collect_fields(lua_State *L, int idx, log_line_t *line)
{
    luaL_checkstack(L, LOG_MAX_FIELDS + 8, "ami.log: fields");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        char *key = line->keys[line->n];
        if (line->n == LOG_MAX_FIELDS || lua_type(L, -2) != LUA_TSTRING ||
            !copy_key(key, lua_tostring(L, -2))) {
            line->dropped++;
            lua_pop(L, 1);
            continue;
        }
        line->f[line->n].key = key;
        value_field(L, &line->f[line->n]);
        line->n++;
        lua_insert(L, -2);
    }
}

static int field_cmp(const void *a, const void *b)
{
    return strcmp(((const ami_log_field_t *)a)->key, ((const ami_log_field_t *)b)->key);
}

/* The script line that called us: the nearest Lua frame, so that print()
 * (a C function calling ami.log.info) reports the script's line too. */
static void add_caller(lua_State *L, lua_Debug *ar, log_line_t *line)
{
    for (int level = 1; lua_getstack(L, level, ar); level++) {
        if (!lua_getinfo(L, "Sl", ar) || ar->currentline < 0)
            continue;
        const char *src = ar->source[0] == '@' ? ar->source + 1 : ar->short_src;
        line->f[line->n++] = AMI_F_STR("script", src);
        line->f[line->n++] = AMI_F_INT("line", ar->currentline);
        return;
    }
}

/* ---- the per-script rate ----------------------------------------------------------------- */

static void refill(script_t *sc, int64_t now)
{
    const ami_lua_config_t *cfg = &sc->gen->rt->cfg;
    double secs = sc->log.refill_ns ? (double)(now - sc->log.refill_ns) / 1e9 : 1.0;
    sc->log.refill_ns = now;
    sc->log.tokens += secs * cfg->log_lines_per_sec;
    if (sc->log.tokens > cfg->log_lines_per_sec)
        sc->log.tokens = cfg->log_lines_per_sec;
    sc->log.bytes += secs * cfg->log_bytes_per_sec;
    if (sc->log.bytes > cfg->log_bytes_per_sec)
        sc->log.bytes = cfg->log_bytes_per_sec;
}

static void report_dropped(script_t *sc, int64_t now)
{
    if (!sc->log.dropped || now - sc->log.notice_ns < 1000000000LL)
        return;
    AMI_LOG(sc->gen->rt->log, AMI_LOG_WARN, "script log lines dropped (log rate limit)",
            AMI_F_STR("script", sc->name), AMI_F_UINT("dropped", sc->log.dropped),
            AMI_F_UINT("lines_per_sec", sc->gen->rt->cfg.log_lines_per_sec),
            AMI_F_UINT("bytes_per_sec", sc->gen->rt->cfg.log_bytes_per_sec));
    sc->log.dropped = 0;
    sc->log.notice_ns = now;
}

/* Take one line of `bytes` from the bucket, or count it dropped. */
static bool admit(script_t *sc, size_t bytes)
{
    int64_t now = ami_now_coarse_ns();
    refill(sc, now);
    report_dropped(sc, now);
    if (sc->log.tokens >= 1 && sc->log.bytes >= (double)bytes) {
        sc->log.tokens -= 1;
        sc->log.bytes -= (double)bytes;
        return true;
    }
    sc->log.dropped++;
    ami_counter_inc(sc->m_log_dropped);
    return false;
}

static size_t line_bytes(const char *msg, const log_line_t *line)
{
    size_t n = strlen(msg) + 64;
    for (size_t i = 0; i < line->n; i++)
        n += strlen(line->f[i].key) + 2 +
             (line->f[i].type == AMI_LF_STR ? (line->f[i].len == SIZE_MAX ? strlen(line->f[i].v.s) : line->f[i].len)
                                            : 20);
    return n;
}

MAY_RAISE static int log_call(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    ami_log_level_t level = (ami_log_level_t)lua_tointeger(L, lua_upvalueindex(2));
    if (!ami_log_enabled(sc->gen->rt->log, level))
        return 0;
    if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2))
        return luaL_argerror(L, 2, "a table of fields (or nothing) expected");
    lua_settop(L, 2);
    const char *msg = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : push_tostring(L, 1);
    size_t msg_len = strlen(msg);
    if (msg_len > LOG_MAX_VALUE) {
        lua_pushlstring(L, msg, LOG_MAX_VALUE);
        msg = lua_tostring(L, -1);
    }
    log_line_t line;
    line.n = 0;
    line.dropped = 0;
    if (lua_istable(L, 2))
        collect_fields(L, 2, &line);
    if (!admit(sc, line_bytes(msg, &line)))
        return 0;
    qsort(line.f, line.n, sizeof line.f[0], field_cmp);
    lua_Debug ar;
    add_caller(L, &ar, &line);
    line.f[line.n++] = AMI_F_UINT("gen", sc->gen->id);
    if (line.dropped)
        line.f[line.n++] = AMI_F_UINT("dropped_fields", line.dropped);
    ami_log_fields(sc->gen->rt->log, level, msg, line.f, line.n);
    return 0;
}

void ami_lua_inject_log(lua_State *L, script_t *sc)
{
    static const struct {
        const char *name;
        ami_log_level_t level;
    } fns[] = {{"debug", AMI_LOG_DEBUG},
               {"info", AMI_LOG_INFO},
               {"warn", AMI_LOG_WARN},
               {"warning", AMI_LOG_WARN},
               {"error", AMI_LOG_ERROR}};
    lua_createtable(L, 0, (int)(sizeof fns / sizeof fns[0]));
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        lua_pushlightuserdata(L, sc);
        lua_pushinteger(L, fns[i].level);
        lua_pushcclosure(L, log_call, 2);
        lua_setfield(L, -2, fns[i].name);
    }
    lua_setfield(L, -2, "log");
}
