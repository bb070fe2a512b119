/*
 * Reading single values out of the evaluated config, with messages that
 * say where, what was found, and what is expected: the operator fixes the
 * whole file from one run of --check-config.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/config_internal.h"
#include "util/alloc.h"

/* A message may quote what the config holds (a name, a host, a path) and
 * is printed to a terminal or a log: no control character of the config's
 * reaches either (a CR would hide the start of the line). */
static void controls_to_marks(char *msg)
{
    for (unsigned char *p = (unsigned char *)msg; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
}

void cfg_error(cfg_ctx_t *cx, const char *fmt, ...)
{
    if (cx->quiet)
        return;
    cx->total++;
    ami_config_errors_t *e = cx->errs;
    if (e->count >= AMI_CONFIG_MAX_ERRORS)
        return; /* config.c replaces the last message with a count of the rest */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg[e->count], sizeof e->msg[0], fmt, ap);
    va_end(ap);
    controls_to_marks(e->msg[e->count]);
    e->count++;
}

void cfg_warn(cfg_ctx_t *cx, const char *fmt, ...)
{
    ami_engine_config_t *cfg = cx->cfg;
    if (cfg->nwarnings >= AMI_CONFIG_MAX_WARNINGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cfg->warnings[cfg->nwarnings], sizeof cfg->warnings[0], fmt, ap);
    va_end(ap);
    controls_to_marks(cfg->warnings[cfg->nwarnings++]);
}

/* A string as the operator typed it, short and printable. */
static void quote(const char *s, size_t len, char *out, size_t n)
{
    size_t o = 0;
    if (n < 8)
        return;
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 6 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 40) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (isprint(c)) {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, n - o, "\\%u", c);
        }
    }
    out[o++] = '"';
    out[o] = '\0';
}

void cfg_value_text(lua_State *L, int idx, char *out, size_t n)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        char q[64];
        quote(s, len, q, sizeof q);
        snprintf(out, n, "string %s", q);
        break;
    }
    case LUA_TNUMBER:
        snprintf(out, n, "number %.14g", lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN:
        snprintf(out, n, "boolean %s", lua_toboolean(L, idx) ? "true" : "false");
        break;
    default:
        snprintf(out, n, "%s", lua_typename(L, lua_type(L, idx)));
        break;
    }
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return (size_t)-1;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *cfg_suggest(const char *word, const char *const *known, size_t n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    /* Close enough to be a typo, not so loose that any short word matches. */
    size_t limit = strlen(word) <= 4 ? 1 : strlen(word) <= 8 ? 2 : 3;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(word, known[i]);
        if (d <= limit && d < best_d) {
            best = known[i];
            best_d = d;
        }
    }
    return best;
}

static void wrong_type(cfg_ctx_t *cx, int idx, const char *where, const char *expected, bool show_value)
{
    char got[80];
    if (show_value)
        cfg_value_text(cx->L, idx, got, sizeof got);
    else
        snprintf(got, sizeof got, "%s", lua_typename(cx->L, lua_type(cx->L, idx)));
    cfg_error(cx, "%s: expected %s, got %s", where, expected, got);
}

bool cfg_read_uint(cfg_ctx_t *cx, int idx, const char *where, uint64_t min, uint64_t max,
                   uint64_t *out)
{
    char expected[96];
    snprintf(expected, sizeof expected, "an integer from %llu to %llu", (unsigned long long)min,
             (unsigned long long)max);
    if (lua_type(cx->L, idx) != LUA_TNUMBER) {
        wrong_type(cx, idx, where, expected, true);
        return false;
    }
    double d = lua_tonumber(cx->L, idx);
    if (d != floor(d) || d < (double)min || d > (double)max) {
        wrong_type(cx, idx, where, expected, true);
        return false;
    }
    *out = (uint64_t)d;
    return true;
}

bool cfg_read_string(cfg_ctx_t *cx, int idx, const char *where, bool show_value, const char **out)
{
    if (lua_type(cx->L, idx) != LUA_TSTRING) {
        wrong_type(cx, idx, where, "a string", show_value);
        return false;
    }
    size_t len;
    const char *s = lua_tolstring(cx->L, idx, &len);
    if (len == 0) {
        cfg_error(cx, "%s: is empty; give a value or remove the line", where);
        return false;
    }
    if (strlen(s) != len) {
        cfg_error(cx, "%s: contains a NUL byte; remove it", where);
        return false;
    }
    *out = s;
    return true;
}

bool cfg_read_bool(cfg_ctx_t *cx, int idx, const char *where, bool *out)
{
    if (lua_type(cx->L, idx) != LUA_TBOOLEAN) {
        wrong_type(cx, idx, where, "true or false", true);
        return false;
    }
    *out = lua_toboolean(cx->L, idx);
    return true;
}

static void join_names(const char *const *names, size_t n, char *out, size_t size)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o < size; i++)
        o += (size_t)snprintf(out + o, size - o, "%s\"%s\"", i == 0 ? "" : i + 1 == n ? " or " : ", ",
                              names[i]);
}

int cfg_read_enum(cfg_ctx_t *cx, int idx, const char *where, const char *const *names, size_t n)
{
    char allowed[160];
    join_names(names, n, allowed, sizeof allowed);
    if (lua_type(cx->L, idx) != LUA_TSTRING) {
        char expected[180];
        snprintf(expected, sizeof expected, "one of %s", allowed);
        wrong_type(cx, idx, where, expected, true);
        return -1;
    }
    const char *s = lua_tostring(cx->L, idx);
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    char got[64];
    quote(s, strlen(s), got, sizeof got);
    cfg_error(cx, "%s: %s is not allowed; use %s", where, got, allowed);
    return -1;
}

bool cfg_expect_table(cfg_ctx_t *cx, int idx, const char *where)
{
    if (lua_istable(cx->L, idx))
        return true;
    wrong_type(cx, idx, where, "a table { ... }", true);
    return false;
}

void cfg_check_keys(cfg_ctx_t *cx, int idx, const char *where, const char *const *known, size_t n)
{
    lua_State *L = cx->L;
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1; /* lua_next below pushes */
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            char got[80];
            cfg_value_text(L, -1, got, sizeof got);
            cfg_error(cx, "%s: has an entry without a name (key %s); write name = value", where, got);
            continue;
        }
        const char *key = lua_tostring(L, -1);
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (ok)
            continue;
        char q[64];
        quote(key, strlen(key), q, sizeof q);
        const char *s = cfg_suggest(key, known, n);
        if (s)
            cfg_error(cx, "%s: unknown option %s; did you mean \"%s\"?", where, q, s);
        else
            cfg_error(cx, "%s: unknown option %s; see docs/configuration.md for the options", where, q);
    }
}

char *cfg_resolve_path(const cfg_ctx_t *cx, const char *path)
{
    if (path[0] == '/' || !cx->dir[0])
        return ami_strdup(path);
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    size_t a = strlen(cx->dir), b = strlen(path);
    size_t sep = cx->dir[a - 1] == '/' ? 0 : 1; /* the folder may be "/" */
    char *out = ami_malloc(a + sep + b + 1);
    if (!out)
        return NULL;
    memcpy(out, cx->dir, a);
    out[a] = '/';
    memcpy(out + a + sep, path, b + 1);
    /* "docs/examples/../../scripts" reads badly in every log line: use the
     * canonical path when the file exists (templates with '?' keep theirs). */
    char *canonical = realpath(out, NULL);
    if (canonical) {
        ami_free(out);
        out = ami_strdup(canonical);
        free(canonical);
    }
    return out;
}
