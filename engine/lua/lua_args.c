/*
 * Validated arguments: the one conversion every ami.* function uses for
 * numbers that become timers, timeouts or counts, and for text that goes
 * to C strings.
 *
 * A script's number may be NaN, +-inf, negative, huge or fractional. NaN
 * passes every `<` and `>` range check, and a NaN or infinite delay breaks
 * libev's timer heap (every timer of the engine stops: heartbeats, action
 * timeouts, backoff). So the check is written once, here, as "is it a
 * finite number inside [min, max]", and every API returns its message as
 * an error value. Never raises.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"

const num_range_t RANGE_TIMEOUT_MS = {1, 86400000, true, "milliseconds"};
const num_range_t RANGE_SECONDS = {0, 86400.0 * 365, false, "seconds"};

static void describe_value(lua_State *L, int idx, char *out, size_t n)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER) {
        double d = lua_tonumber(L, idx);
        if (isnan(d))
            snprintf(out, n, "nan");
        else if (isinf(d))
            snprintf(out, n, "%sinf", d < 0 ? "-" : "");
        else
            snprintf(out, n, "%.17g", d);
    } else if (t == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        snprintf(out, n, "a string (\"%.*s%s\")", (int)(len > 24 ? 24 : len), s, len > 24 ? "..." : "");
    } else {
        snprintf(out, n, "%s", t == LUA_TNONE ? "nothing" : lua_typename(L, t));
    }
}

bool arg_number(lua_State *L, int idx, const char *fn, const char *what, const num_range_t *r,
                double *out, char *why, size_t why_size)
{
    double d = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : NAN;
    bool ok = lua_type(L, idx) == LUA_TNUMBER && isfinite(d) && d >= r->min && d <= r->max &&
              (!r->integer || floor(d) == d);
    if (ok) {
        *out = d;
        return true;
    }
    char got[64];
    describe_value(L, idx, got, sizeof got);
    snprintf(why, why_size, "%s: %s must be a%s %s from %.15g to %.15g (%s), got %s", fn, what,
             r->integer ? "n" : "", r->integer ? "integer" : "finite number", r->min, r->max, r->unit, got);
    return false;
}

int push_invalid(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushfstring(L, "invalid: %s", why);
    return 2;
}

const char *arg_text(lua_State *L, int idx, const char *fn, const char *what, size_t *len, char *why,
                     size_t why_size)
{
    size_t n = 0;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
    if (!s) {
        char got[64];
        describe_value(L, idx, got, sizeof got);
        snprintf(why, why_size, "%s: %s must be a string, got %s", fn, what, got);
        return NULL;
    }
    if (memchr(s, '\0', n)) {
        snprintf(why, why_size, "%s: %s contains a NUL byte; AMI text cannot hold one", fn, what);
        return NULL;
    }
    if (len)
        *len = n;
    return s;
}
