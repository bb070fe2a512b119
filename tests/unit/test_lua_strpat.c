/* engine/lua/lua_strpat.c: LuaJIT's string.find/match/gmatch/gsub under a
 * budget. First the differential test (test_lua_strpat.lua: thousands of
 * hand-picked and random cases through LuaJIT's functions and ours in the
 * same state, identical results and errors required); then the budget:
 * the check is called, it stops the 60 KB `(.*)@(.*)` search, a raise
 * from it unwinds find, gmatch and gsub (mid-buffer, mid-replacement-call)
 * cleanly (ASan/LSan watch), and the C entry for filters. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua/lua_strpat.h"

#define DRIVER AMI_SOURCE_DIR "/tests/unit/test_lua_strpat.lua"
#define STOP_MSG "stopped by the test's budget"

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct counting_budget {
    int calls;
    int raise_after;   /* raise luaL_error on this call; 0: never */
    int refuse_after;  /* return nonzero on this call; 0: never */
} counting_budget_t;

static int counting_check(lua_State *L, void *ud)
{
    counting_budget_t *cb = ud;
    cb->calls++;
    if (cb->raise_after && cb->calls >= cb->raise_after)
        return luaL_error(L, STOP_MSG " after %d checks", cb->calls);
    return cb->refuse_after && cb->calls >= cb->refuse_after;
}

/* A state with the standard libraries and our functions in global `P`. */
static lua_State *state_with(counting_budget_t *cb)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    lua_newtable(L);
    ami_strpat_budget_t b = {counting_check, cb};
    ami_strpat_install(L, -1, cb ? &b : NULL);
    lua_setglobal(L, "P");
    return L;
}

/* Run chunk; returns its first result as a string (static copy) or the error. */
static const char *run(lua_State *L, const char *chunk, bool *ok)
{
    static char out[512];
    int top = lua_gettop(L);
    int rc = luaL_loadstring(L, chunk);
    if (rc == 0)
        rc = lua_pcall(L, 0, 1, 0);
    *ok = rc == 0;
    const char *s = lua_tostring(L, -1);
    snprintf(out, sizeof out, "%s", s ? s : "(not a string)");
    lua_settop(L, top);
    return out;
}

static void assert_runs(lua_State *L, const char *chunk, const char *want)
{
    bool ok;
    const char *got = run(L, chunk, &ok);
    if (!ok || strcmp(got, want) != 0)
        fail_msg("%s\n  want %s\n  got  %s%s", chunk, want, ok ? "" : "error: ", got);
}

static void assert_fails_with(lua_State *L, const char *chunk, const char *fragment)
{
    bool ok;
    const char *got = run(L, chunk, &ok);
    if (ok || !strstr(got, fragment))
        fail_msg("%s\n  want an error with \"%s\"\n  got  %s%s", chunk, fragment, ok ? "" : "error: ", got);
}

/* ---- differential ------------------------------------------------------------------------- */

static int diff_checks;

static int diff_check(lua_State *L, void *ud)
{
    if (++diff_checks > 256) /* ~1 M steps: a case LuaJIT would take long over */
        return luaL_error(L, "strpat-test: budget");
    return 0;
}

static int l_reset_budget(lua_State *L)
{
    diff_checks = 0;
    return 0;
}

static lua_Integer stat_field(lua_State *L, const char *name)
{
    lua_getfield(L, -1, name);
    lua_Integer v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static void run_differential(lua_Integer seed, lua_Integer ncases)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    assert_int_equal(luaL_loadfile(L, DRIVER), 0);
    lua_newtable(L);
    ami_strpat_budget_t b = {diff_check, NULL};
    ami_strpat_install(L, -1, &b);
    lua_pushstring(L, AMI_FIXTURE_DIR);
    lua_pushinteger(L, seed);
    lua_pushinteger(L, ncases);
    lua_pushcfunction(L, l_reset_budget);
    if (lua_pcall(L, 5, 1, 0) != 0)
        fail_msg("driver failed: %s", lua_tostring(L, -1));
    lua_Integer cases = stat_field(L, "cases"), compared = stat_field(L, "compared");
    lua_Integer skipped = stat_field(L, "skipped"), mismatches = stat_field(L, "mismatches");
    lua_Integer values = stat_field(L, "fixture_values");
    lua_Integer errors = stat_field(L, "errors"), hits = stat_field(L, "hits");
    lua_getfield(L, -1, "report");
    print_message("seed %lld: %lld cases, %lld compared (%lld errors, %lld found something), "
                  "%lld skipped (over budget), %lld fixture values, %lld mismatches\n%s\n",
                  (long long)seed, (long long)cases, (long long)compared, (long long)errors,
                  (long long)hits, (long long)skipped, (long long)values, (long long)mismatches,
                  mismatches ? lua_tostring(L, -1) : "");
    assert_true(values > 50);
    assert_true(errors * 10 > compared && hits * 3 > compared); /* neither side of it is thin */
    assert_int_equal(mismatches, 0);
    assert_true(cases > ncases);
    assert_true(skipped * 100 < cases); /* the comparison must cover nearly everything */
    lua_close(L);
}

static void differential_matches_luajit(void **state)
{
    const char *seed = getenv("AMI_STRPAT_SEED");
    const char *n = getenv("AMI_STRPAT_CASES");
    run_differential(seed ? atoll(seed) : 20240501, n ? atoll(n) : 20000);
}

/* ---- the budget ------------------------------------------------------------------------------ */

static void check_is_called_and_can_let_it_finish(void **state)
{
    counting_budget_t cb = {0};
    lua_State *L = state_with(&cb);
    assert_runs(L, "local s = string.rep('x', 30000) .. '@' .. string.rep('y', 10)\n"
                   "local a, b = P.match(s, '(.*)@(.*)') return #a .. ',' .. #b",
                "30000,10");
    assert_true(cb.calls > 0);
    int before = cb.calls;
    assert_runs(L, "return P.find('abc', 'b')", "2"); /* tiny: no check needed */
    assert_int_equal(cb.calls, before);
    lua_close(L);
}

static void raise_from_check_stops_the_60k_search(void **state)
{
    counting_budget_t cb = {.raise_after = 50};
    lua_State *L = state_with(&cb);
    int top = lua_gettop(L);
    assert_fails_with(L, "local s = string.rep('x', 60000) return P.find(s, '(.*)@(.*)')",
                      STOP_MSG " after 50 checks");
    assert_int_equal(cb.calls, 50);
    assert_int_equal(lua_gettop(L), top);
    cb = (counting_budget_t){0};
    assert_runs(L, "return P.match('user@host', '(.*)@(.*)')", "user"); /* the state still works */
    lua_close(L);
}

static void refusal_from_check_raises_budget_error(void **state)
{
    counting_budget_t cb = {.refuse_after = 3};
    lua_State *L = state_with(&cb);
    assert_fails_with(L, "return P.match(string.rep('x', 60000), '(.*)@(.*)')",
                      "pattern matching stopped: over its step budget");
    assert_int_equal(cb.calls, 3);
    lua_close(L);
}

/* gsub's own copying counts too: each case below matches cheaply (a
 * few checks) but copies megabytes into its luaL_Buffer. */
static void gsub_copying_counts_and_raise_unwinds_the_buffer(void **state)
{
    static const char *const cases[] = {
        /* a long template */
        "return P.gsub(string.rep('a', 2000), 'a', string.rep('x', 4000))",
        /* %0 and %1 copies of a long match */
        "return P.gsub(string.rep('a', 20000), '(a+)', string.rep('%0', 100))",
        "return P.gsub(string.rep('a', 20000), '(a+)', string.rep('%1', 100))",
        /* long values from a function or a table */
        "local big = string.rep('y', 20000)\n"
        "return P.gsub(string.rep('ab', 1000), '(a)(b)', function() return big end)",
        "return P.gsub(string.rep('a', 2000), 'a', {a = string.rep('t', 20000)})",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        counting_budget_t cb = {.raise_after = 10};
        lua_State *L = state_with(&cb);
        assert_fails_with(L, cases[i], STOP_MSG " after 10 checks");
        lua_close(L);
    }
}

/* 18 captures per call on top of a luaL_Buffer holding many pieces. */
static void gsub_function_with_many_captures_and_big_results(void **state)
{
    lua_State *L = state_with(NULL);
    assert_runs(L, "local s = string.rep(string.rep('a', 18), 500)\n"
                   "local pat, big = string.rep('(a)', 18), string.rep('x', 9000)\n"
                   "local f = function(...) assert(select('#', ...) == 18) return big end\n"
                   "local r, n = P.gsub(s, pat, f)\n"
                   "return tostring(n == 500 and r == string.gsub(s, pat, f))",
                "true");
    lua_close(L);
}

static void raise_unwinds_gmatch(void **state)
{
    counting_budget_t cb = {.raise_after = 10};
    lua_State *L = state_with(&cb);
    assert_fails_with(L, "local s = string.rep('x', 60000) .. ' a@b'\n"
                         "for a, b in P.gmatch(s, '(.*)@(.*)') do end",
                      STOP_MSG);
    lua_close(L);
}

static void no_budget_means_no_check(void **state)
{
    lua_State *L = state_with(NULL);
    assert_runs(L, "local s = string.rep('x', 2000) .. '@y' return select(2, P.find(s, '(.-)@'))",
                "2001");
    lua_close(L);
}

static void install_sets_only_the_four_functions(void **state)
{
    lua_State *L = state_with(NULL);
    assert_runs(L, "local n = 0 for k, v in pairs(P) do n = n + 1 end return n", "4");
    assert_runs(L, "return tostring(P.find ~= string.find and P.gsub ~= string.gsub)", "true");
    assert_runs(L, "local _, ud = debug.getupvalue(P.find, 1)\n"
                   "return type(ud) .. ' ' .. tostring(getmetatable(ud))",
                "userdata nil");
    lua_close(L);
}

/* Scripts have no debug library; these prove that even with it, swapped
 * upvalues give an error, never a crash or a read of freed memory (ASan). */
static void tampered_upvalues_raise_cleanly(void **state)
{
    lua_State *L = state_with(NULL);
    static const char *const budget_swaps[] = {"io.stdout", "{}", "42", "newproxy()",
                                               "P.gmatch('a', 'a')", "'x'"};
    for (size_t i = 0; i < sizeof budget_swaps / sizeof budget_swaps[0]; i++) {
        char chunk[256];
        snprintf(chunk, sizeof chunk,
                 "local v = %s\n"
                 "if type(v) == 'function' then v = select(2, debug.getupvalue(v, 1)) end\n"
                 "debug.setupvalue(P.match, 1, v) return P.match('a', '.')", budget_swaps[i]);
        assert_fails_with(L, chunk, "without its state");
    }
    assert_fails_with(L, "local _, box = debug.getupvalue(P.find, 1)\n"
                         "local it = P.gmatch('abc', '.') debug.setupvalue(it, 1, box) return it()",
                      "without its state");
    assert_fails_with(L, "local it = P.gmatch('abc', '.') debug.setupvalue(it, 2, {}) return it()",
                      "without its strings");
    assert_fails_with(L, "local it = P.gmatch('abc', '.') debug.setupvalue(it, 2, 'abd') return it()",
                      "without its strings");
    assert_fails_with(L, "local it = P.gmatch('abc', '.') debug.setupvalue(it, 3, 12) return it()",
                      "without its strings");
    assert_runs(L, "local it = P.gmatch('abc', '.') collectgarbage() return it() .. it() .. it()", "abc");
    lua_close(L);
}

/* ---- the C entry for filters ---------------------------------------------------------------- */

static int filter_match(const char *s, const char *p, uint64_t max_steps, const char **err)
{
    return ami_strpat_match_budget(s, strlen(s), p, strlen(p), max_steps, err);
}

static void match_budget_answers_like_string_find(void **state)
{
    const char *err = NULL;
    assert_int_equal(filter_match("PJSIP/alice-0001", "^PJSIP/", UINT64_MAX, &err), AMI_STRPAT_MATCH);
    assert_int_equal(filter_match("SIP/alice-0001", "^PJSIP/", UINT64_MAX, &err), AMI_STRPAT_NOMATCH);
    assert_int_equal(filter_match("a.c", "a.c", UINT64_MAX, &err), AMI_STRPAT_MATCH);
    assert_int_equal(filter_match("abc", "b", UINT64_MAX, &err), AMI_STRPAT_MATCH); /* plain */
    assert_int_equal(filter_match("abc", ")", UINT64_MAX, &err), AMI_STRPAT_NOMATCH); /* plain too */
    assert_null(err);
    assert_int_equal(filter_match("abc", "[a", UINT64_MAX, &err), AMI_STRPAT_BADPATTERN);
    assert_string_equal(err, "malformed pattern (missing ']')");
    assert_int_equal(filter_match("abc", "(a", UINT64_MAX, &err), AMI_STRPAT_BADPATTERN);
    assert_string_equal(err, "unfinished capture");
    /* Lazy like LuaJIT: the bad item is never reached, so no error. */
    assert_int_equal(filter_match("abc", "x[", UINT64_MAX, NULL), AMI_STRPAT_NOMATCH);
}

static void match_budget_stops_the_60k_search(void **state)
{
    size_t n = 60000;
    char *s = malloc(n);
    memset(s, 'x', n);
    const char *err = NULL;
    int r = ami_strpat_match_budget(s, n, "(.*)@(.*)", 9, 1000000, &err);
    assert_int_equal(r, AMI_STRPAT_OVERBUDGET);
    assert_string_equal(err, "pattern matching stopped: over its step budget");
    s[n - 1] = '@';
    assert_int_equal(ami_strpat_match_budget(s, n, "(.*)@(.*)", 9, 1000000, NULL), AMI_STRPAT_MATCH);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(differential_matches_luajit),
        cmocka_unit_test(check_is_called_and_can_let_it_finish),
        cmocka_unit_test(raise_from_check_stops_the_60k_search),
        cmocka_unit_test(refusal_from_check_raises_budget_error),
        cmocka_unit_test(gsub_copying_counts_and_raise_unwinds_the_buffer),
        cmocka_unit_test(gsub_function_with_many_captures_and_big_results),
        cmocka_unit_test(raise_unwinds_gmatch),
        cmocka_unit_test(no_budget_means_no_check),
        cmocka_unit_test(install_sets_only_the_four_functions),
        cmocka_unit_test(tampered_upvalues_raise_cleanly),
        cmocka_unit_test(match_budget_answers_like_string_find),
        cmocka_unit_test(match_budget_stops_the_60k_search),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
