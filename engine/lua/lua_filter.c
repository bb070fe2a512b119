/*
 * Handler filters, compiled to C when a handler is registered: the event
 * name (case-insensitive, hashed) and header conditions, each an exact
 * value or an ami.pattern run by the budgeted matcher (a pattern that runs
 * out of its budget does not match, and is counted and logged). Matching
 * never calls Lua and never raises: dispatch and the direct run call it
 * outside any protected call.
 */
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "lua/lua_strpat.h"
#include "protocol/message.h"
#include "util/alloc.h"
#include "util/clock.h"

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* ---- filters ------------------------------------------------------------------- */

static bool is_pattern(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx))
        return false;
    lua_rawgeti(L, LUA_REGISTRYINDEX, script_of(L)->pattern_mt_ref);
    bool yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* First pass: check every entry so that the second pass, which allocates,
 * cannot raise. */
MAY_RAISE static size_t validate_filter_table(lua_State *L, int t)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "filter keys must be header names (strings)");
        int vt = lua_type(L, -1);
        if (vt != LUA_TSTRING && vt != LUA_TNUMBER && !is_pattern(L, -1))
            luaL_error(L, "filter value for %s must be a string, a number or ami.pattern(...)",
                       lua_tostring(L, -2));
        n++;
        lua_pop(L, 1);
    }
    return n;
}

static char *dup_lower(const char *s, size_t n)
{
    char *d = ami_malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)lower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

static void set_event(filter_t *f, const char *name, size_t n)
{
    if (n == 0 || (n == 1 && name[0] == '*'))
        return;
    f->event = dup_lower(name, n);
    f->event_len = n;
    f->event_hash = ami_name_hash(name, n);
}

/* The value at the top of the stack (string, number or pattern) into c. */
static void take_cond(lua_State *L, cond_t *c, const char *key, size_t klen)
{
    size_t vlen;
    const char *v;
    c->pattern = is_pattern(L, -1);
    if (c->pattern) {
        lua_rawgeti(L, -1, 1);
        v = lua_tolstring(L, -1, &vlen);
        c->value = ami_strndup(v, vlen);
        lua_pop(L, 1);
    } else {
        lua_pushvalue(L, -1); /* tolstring on a copy: numbers convert in place */
        v = lua_tolstring(L, -1, &vlen);
        c->value = ami_strndup(v, vlen);
        lua_pop(L, 1);
    }
    c->value_len = vlen;
    c->key = ami_strndup(key, klen);
    c->key_len = klen;
}

MAY_RAISE void filter_from_lua(lua_State *L, int idx, filter_t *f)
{
    memset(f, 0, sizeof *f);
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t n;
        const char *name = lua_tolstring(L, idx, &n);
        set_event(f, name, n);
        return;
    }
    if (!lua_istable(L, idx))
        luaL_error(L, "a filter is an event name (\"Hangup\"), \"*\", or a table of header = value");
    size_t n = validate_filter_table(L, idx);
    f->conds = n ? ami_calloc(n, sizeof *f->conds) : NULL;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen);
        if (ami_str_ieq(key, klen, "Event", 5) && lua_type(L, -1) == LUA_TSTRING && !f->event) {
            size_t vlen;
            const char *v = lua_tolstring(L, -1, &vlen);
            set_event(f, v, vlen);
        } else if (f->conds) {
            take_cond(L, &f->conds[f->nconds++], key, klen);
        }
        lua_pop(L, 1);
    }
}

void filter_free(filter_t *f)
{
    ami_free(f->event);
    for (size_t i = 0; i < f->nconds; i++) {
        ami_free(f->conds[i].key);
        ami_free(f->conds[i].value);
    }
    ami_free(f->conds);
    memset(f, 0, sizeof *f);
}

/* Counted, and said once a second per script: which filter gave up. */
static void filter_over_budget(script_t *sc, const cond_t *c)
{
    ami_counter_inc(sc->gen->rt->m_filter_budget);
    int64_t now = ami_now_coarse_ns();
    if (now - sc->filter_log_ns < 1000000000LL)
        return;
    sc->filter_log_ns = now;
    AMI_LOG(sc->gen->rt->log, AMI_LOG_WARN, "filter pattern over its step budget; treated as no match",
            AMI_F_STR("script", sc->name), AMI_F_STRN("header", c->key, c->key_len),
            AMI_F_STRN("pattern", c->value, c->value_len > 80 ? 80 : c->value_len),
            AMI_F_UINT("filter_max_steps", sc->gen->rt->cfg.filter_max_steps));
}

/* The pattern under a step budget (no Lua involved): past it, or for a bad
 * pattern, no match. A 60 KB value against "(.*)@(.*)" costs a bounded
 * fraction of a millisecond instead of seconds. */
static bool pattern_match(script_t *sc, const char *v, size_t vlen, const cond_t *c)
{
    ami_lua_runtime_t *rt = sc->gen->rt;
    int rc = ami_strpat_match_budget(v, vlen, c->value, c->value_len, rt->cfg.filter_max_steps, NULL);
    if (rc == AMI_STRPAT_OVERBUDGET)
        filter_over_budget(sc, c);
    return rc == AMI_STRPAT_MATCH;
}

static bool cond_match(const cond_t *c, script_t *sc, const ami_msg_t *msg)
{
    for (long i = ami_msg_next_index(msg, c->key, c->key_len, 0); i >= 0;
         i = ami_msg_next_index(msg, c->key, c->key_len, (size_t)i + 1)) {
        size_t vlen;
        const char *v = ami_msg_value(msg, (size_t)i, &vlen);
        if (c->pattern ? pattern_match(sc, v, vlen, c)
                       : (vlen == c->value_len && memcmp(v, c->value, vlen) == 0))
            return true; /* a repeated header matches if any of its values does */
    }
    return false;
}

bool filter_name_match(const filter_t *f, uint32_t name_hash, const char *name, size_t name_len)
{
    return !f->event || (f->event_hash == name_hash && ami_str_ieq(f->event, f->event_len, name, name_len));
}

bool filter_conds_match(script_t *sc, const filter_t *f, const ami_msg_t *msg)
{
    for (size_t i = 0; i < f->nconds; i++)
        if (!cond_match(&f->conds[i], sc, msg))
            return false;
    return true;
}

bool filter_match(script_t *sc, const filter_t *f, const ami_msg_t *msg, uint32_t name_hash,
                  const char *name, size_t name_len)
{
    return filter_name_match(f, name_hash, name, name_len) && filter_conds_match(sc, f, msg);
}
