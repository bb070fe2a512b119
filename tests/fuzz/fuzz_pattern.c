/*
 * libFuzzer target for Lua patterns (engine/util/lpattern.c and
 * engine/lua/lua_strpat.c).
 *
 * Input layout: 3 header bytes, then the pattern, the gsub template and
 * the subject.
 *   byte 0: bits 0-1 the function (find, match, gmatch, gsub); bit 2 the
 *           differential mode; bits 3-7 init (0: none, else init - 16).
 *   byte 1: pattern length, byte 2: template length (both cut to what is
 *           there); the subject is the rest.
 * Always: lpattern alone under a small step budget. It must stop (within
 * the bound lpattern.h promises), its plain search must agree with a naive
 * one,
 * and a match must make sense (start <= end <= length, captures inside
 * the subject or positions in range, errors with a message).
 * Differential mode: the same call through LuaJIT's own string function
 * and ours, in one lua_State (JIT off, as the engine runs scripts), where
 * ours runs first under a budget: if it finishes, LuaJIT's equal amount
 * of work is bounded too, and the results (values, types, error texts)
 * must be identical.
 * Any violation aborts with a description.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "lua/lua_strpat.h"
#include "util/lpattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STEPS 200000u
#define LUA_CHECKS 50 /* ours in Lua: 50 checks of 4096 steps */

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_pattern: invariant failed: %s: ", #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

typedef struct input {
    unsigned fn;        /* 0 find, 1 match, 2 gmatch, 3 gsub */
    bool differential;
    int init;           /* 0: none */
    const char *pat, *tmpl, *subject;
    size_t plen, tlen, slen;
} input_t;

static bool parse_input(const uint8_t *d, size_t size, input_t *in)
{
    if (size < 3)
        return false;
    in->fn = d[0] & 3;
    in->differential = d[0] & 4;
    in->init = (d[0] >> 3) ? (int)(d[0] >> 3) - 16 : 0;
    const char *rest = (const char *)d + 3;
    size_t left = size - 3;
    in->plen = d[1] < left ? d[1] : left;
    in->pat = rest;
    rest += in->plen, left -= in->plen;
    in->tlen = d[2] < left ? d[2] : left;
    in->tmpl = rest;
    in->subject = rest + in->tlen;
    in->slen = left - in->tlen;
    return true;
}

/* ---- lpattern alone ---------------------------------------------------------------------- */

static void check_match(const lpat_t *m, const input_t *in, size_t start, size_t end)
{
    CHECK(start <= end && end <= in->slen, "match [%zu, %zu) of %zu bytes", start, end, in->slen);
    CHECK(m->level >= 0 && m->level <= LPAT_MAXCAPTURES, "level %d", m->level);
    for (int i = 0; i < m->level; i++) {
        lpat_span_t sp;
        lpat_error_t e = lpat_capture(m, i, start, end, &sp);
        if (e != LPAT_E_NONE) {
            CHECK(e == LPAT_E_UNFINISHED_CAPTURE, "capture %d: error %d", i, e);
            continue;
        }
        CHECK(sp.start <= in->slen && sp.len <= in->slen - sp.start, "capture %d: [%zu +%zu) of %zu",
              i, sp.start, sp.len, in->slen);
    }
}

static void check_bounded(const lpat_t *m, const input_t *in)
{
    CHECK(m->steps <= MAX_STEPS + 2 * LPAT_CHECK_EVERY + 2 * (in->slen + in->plen), "%llu steps",
          (unsigned long long)m->steps);
    if (m->error != LPAT_E_NONE)
        CHECK(lpat_error_message(m->error)[0] != '\0', "error %d without a message", m->error);
}

static void fuzz_lpattern(const input_t *in)
{
    lpat_t m;
    lpat_init(&m, in->subject, in->slen, in->pat, in->plen);
    lpat_set_budget(&m, MAX_STEPS, NULL, NULL);
    size_t init = in->init > 0 && (size_t)in->init <= in->slen ? (size_t)in->init : 0;
    size_t start = 0, end = 0;
    lpat_result_t r = lpat_find(&m, init, &start, &end);
    if (r == LPAT_MATCH) {
        CHECK(start >= init, "match at %zu before init %zu", start, init);
        check_match(&m, in, start, end);
    } else {
        CHECK(r == LPAT_NOMATCH || r == lpat_result_of(m.error), "result %d, error %d", r, m.error);
    }
    check_bounded(&m, in);

    /* gmatch's way: every position, one state, one budget. */
    lpat_init(&m, in->subject, in->slen, in->pat, in->plen);
    lpat_set_budget(&m, MAX_STEPS, NULL, NULL);
    for (size_t pos = 0; pos <= in->slen; pos++) {
        r = lpat_match_at(&m, pos, &end);
        if (r == LPAT_MATCH)
            check_match(&m, in, pos, end);
        else if (r != LPAT_NOMATCH)
            break;
    }
    check_bounded(&m, in);
}

/* The plain search against the obvious one (inputs are at most 4 KB). */
static void fuzz_plain(const input_t *in)
{
    size_t init = in->init > 0 && (size_t)in->init <= in->slen ? (size_t)in->init : 0;
    size_t want = SIZE_MAX, got = SIZE_MAX;
    for (size_t i = init; i + in->plen <= in->slen; i++) {
        if (memcmp(in->subject + i, in->pat, in->plen) == 0) {
            want = i;
            break;
        }
    }
    bool found = lpat_plain_find(in->subject, in->slen, init, in->pat, in->plen, &got);
    CHECK(found == (want != SIZE_MAX) && (!found || got == want), "plain find: %zu, want %zu", got, want);
}

/* ---- differential, through Lua ------------------------------------------------------------ */

static int lua_checks;

static int fuzz_check(lua_State *L, void *ud)
{
    if (++lua_checks > LUA_CHECKS)
        return luaL_error(L, "fuzz: over budget");
    return 0;
}

/* compare(fn, s, p, init_or_template): true, or false and a description. */
static const char compare_chunk[] =
    "local mine, orig = ...\n"
    "local function pack(...) return {n = select('#', ...), ...} end\n"
    "local function all(f, fn, s, p, x)\n"
    "  if fn ~= 'gmatch' then return pack(pcall(f, s, p, x)) end\n"
    "  return pack(pcall(function()\n"
    "    local it, out = f(s, p), {}\n"
    "    for i = 1, 40 do\n"
    "      local r = pack(it())\n"
    "      out[#out + 1] = r.n\n"
    "      for j = 1, r.n do out[#out + 1] = r[j] end\n"
    "      if r[1] == nil then break end\n"
    "    end\n"
    "    return unpack(out)\n"
    "  end))\n"
    "end\n"
    "return function(fn, s, p, x)\n"
    "  local a = all(mine[fn], fn, s, p, x)\n"
    "  if not a[1] and tostring(a[2]):find('fuzz: over budget', 1, true) then return true end\n"
    "  local b = all(orig[fn], fn, s, p, x)\n"
    "  local same = a.n == b.n\n"
    "  for i = 1, math.max(a.n, b.n) do\n"
    "    if type(a[i]) ~= type(b[i]) or a[i] ~= b[i] then same = false end\n"
    "  end\n"
    "  if same then return true end\n"
    "  local t = {}\n"
    "  for i = 1, b.n do t[#t + 1] = string.format('%q', tostring(b[i])) end\n"
    "  t[#t + 1] = '| ours:'\n"
    "  for i = 1, a.n do t[#t + 1] = string.format('%q', tostring(a[i])) end\n"
    "  return false, 'LuaJIT: ' .. table.concat(t, ' ')\n"
    "end\n";

static lua_State *diff_state(void)
{
    static lua_State *L;
    if (L)
        return L;
    L = luaL_newstate();
    CHECK(L != NULL, "no lua_State");
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    CHECK(luaL_loadstring(L, compare_chunk) == 0, "chunk: %s", lua_tostring(L, -1));
    lua_newtable(L);
    static const ami_strpat_budget_t budget = {fuzz_check, NULL};
    ami_strpat_install(L, -1, &budget);
    lua_getglobal(L, "string");
    CHECK(lua_pcall(L, 2, 1, 0) == 0, "chunk: %s", lua_tostring(L, -1));
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_compare");
    return L;
}

static void fuzz_differential(const input_t *in)
{
    static const char *const names[] = {"find", "match", "gmatch", "gsub"};
    lua_State *L = diff_state();
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_compare");
    lua_pushstring(L, names[in->fn]);
    lua_pushlstring(L, in->subject, in->slen);
    lua_pushlstring(L, in->pat, in->plen);
    if (in->fn == 3)
        lua_pushlstring(L, in->tmpl, in->tlen);
    else if (in->init)
        lua_pushinteger(L, in->init);
    else
        lua_pushnil(L);
    lua_checks = 0;
    CHECK(lua_pcall(L, 4, 2, 0) == 0, "compare: %s", lua_tostring(L, -1));
    CHECK(lua_toboolean(L, -2), "%s(subject %zu bytes, pattern \"%.*s\"): %s", names[in->fn], in->slen,
          (int)in->plen, in->pat, lua_tostring(L, -1));
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input_t in;
    if (!parse_input(data, size, &in))
        return 0;
    fuzz_lpattern(&in);
    fuzz_plain(&in);
    if (in.differential)
        fuzz_differential(&in);
    return 0;
}
