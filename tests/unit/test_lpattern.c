/* engine/util/lpattern.c: Lua 5.1 patterns with LuaJIT's semantics, under a
 * step budget. Matching results and errors item by item (the exhaustive
 * comparison with LuaJIT itself is test_lua_strpat), the limits, then the
 * budget: every kind of work is counted, so each pathological case below
 * is stopped within the bound lpattern.h promises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/lpattern.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* string.find(s, p, init + 1): result, and "start,end" or the error text in out. */
static lpat_result_t find_str(const char *s, size_t n, const char *p, size_t init, char *out, size_t cap)
{
    lpat_t m;
    lpat_init(&m, s, n, p, strlen(p));
    size_t start = 0, end = 0;
    lpat_result_t r = lpat_find(&m, init, &start, &end);
    if (r == LPAT_MATCH) {
        int used = snprintf(out, cap, "%zu,%zu", start, end);
        for (int i = 0; i < m.level && used > 0 && (size_t)used < cap; i++) {
            lpat_span_t sp;
            lpat_error_t e = lpat_capture(&m, i, start, end, &sp);
            if (e != LPAT_E_NONE)
                used += snprintf(out + used, cap - (size_t)used, " <%s>", lpat_error_message(e));
            else if (sp.position)
                used += snprintf(out + used, cap - (size_t)used, " @%zu", sp.start);
            else
                used += snprintf(out + used, cap - (size_t)used, " '%.*s'", (int)sp.len, s + sp.start);
        }
    } else if (r == LPAT_NOMATCH) {
        snprintf(out, cap, "nil");
    } else {
        snprintf(out, cap, "error: %s", lpat_error_message(m.error));
    }
    return r;
}

static void expect(const char *s, const char *p, const char *want)
{
    char got[512];
    find_str(s, strlen(s), p, 0, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("find(\"%s\", \"%s\")\n  want %s\n  got  %s", s, p, want, got);
}

static char *repeat(const char *unit, size_t times)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * times + 1);
    assert_non_null(s);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * times] = '\0';
    return s;
}

/* ---- matching ------------------------------------------------------------------------------ */

static void single_items_and_classes(void **state)
{
    expect("hello", "l", "2,3");
    expect("hello", ".", "0,1");
    expect("ab12", "%d", "2,3");
    expect("ab12", "%D", "0,1");
    expect("a b", "%s", "1,2");
    expect("a\x7f", "%c", "1,2");
    expect("a!", "%p", "1,2");
    expect("A\xe9z", "%l", "2,3"); /* ASCII only: \xe9 is no letter */
    expect("xyz\0", "%z", "nil");  /* strlen stops at the NUL here */
    expect("x.y", "%.", "1,2");
    expect("x%y", "%%", "1,2");
    expect("x]y", "%]", "1,2");
    expect("cafe01", "%x+", "0,6");
    expect("__a", "%w", "2,3");
    expect("a\tb", "%g%G", "0,2");
}

static void sets(void **state)
{
    expect("xyzb", "[abc]", "3,4");
    expect("abcx", "[^abc]", "3,4");
    expect("m", "[a-z]", "0,1");
    expect("-", "[a-]", "0,1");
    expect("]", "[]]", "0,1");
    expect("a]", "[^]]", "0,1");
    expect("%", "[%%]", "0,1");
    expect("_", "[%a_]", "0,1");
    expect("b", "[z-a]", "nil");
}

static void quantifiers_and_anchors(void **state)
{
    expect("aaab", "a*", "0,3");
    expect("baaa", "a*", "0,0");
    expect("baaa", "a+", "1,4");
    expect("<a><b>", "<.->", "0,3");
    expect("<a><b>", "<.*>", "0,6");
    expect("color colour", "colou?r", "0,5");
    expect("xab", "^ab", "nil");
    expect("abx", "ab$", "nil");
    expect("a$b", "a$b", "0,3"); /* '$' not at the end is a character */
    expect("a^b", "a^b", "0,3");
    expect("", "^$", "0,0");
}

static void captures(void **state)
{
    expect("key=val", "(%w+)=(%w+)", "0,7 'key' 'val'");
    expect("abc", "()b()", "1,2 @1 @2");
    expect("abab", "(ab)%1", "0,4 'ab'");
    expect("aXbXc", "(X).-%1", "1,4 'X'");
    expect("abc", "()%1", "nil"); /* a position has no text to repeat */
    expect("f(a(b)c)d", "%b()", "1,8");
    expect("THE (quick) fox", "%f[%a]%a+", "0,3");
    expect("one two", "%f[%S]%a+$", "4,7");
    expect("x", "x%f[%z]", "0,1"); /* the end reads as NUL, as in LuaJIT */
    expect("abc", "(a", "0,1 <unfinished capture>");
}

static void pattern_errors_have_luajit_messages(void **state)
{
    expect("x", "%", "error: malformed pattern (ends with '%')");
    expect("x", "[x", "error: malformed pattern (missing ']')");
    expect("x", "[]", "error: malformed pattern (missing ']')");
    expect("x", "%f", "error: missing '[' after '%f' in pattern");
    expect("x", "%fx", "error: missing '[' after '%f' in pattern");
    expect("x", "%b", "error: unbalanced pattern");
    expect("x", "%bx", "error: unbalanced pattern");
    expect("x", ")", "error: invalid pattern capture");
    expect("x", "%1", "error: invalid capture index");
    expect("x", "(x)%2", "error: invalid capture index");
    expect("x", "(%1)", "error: invalid capture index");
}

static void errors_are_found_where_the_search_reaches(void **state)
{
    expect("abc", "x[", "nil");      /* never gets past 'x' */
    expect("x", "x[", "error: malformed pattern (missing ']')");
    expect("abc", "z%", "nil");
}

static void nul_ends_the_pattern_not_the_subject(void **state)
{
    char out[64];
    const char pat[] = {'b', '\0', 'z'};
    lpat_t m;
    lpat_init(&m, "ab\0c", 4, pat, sizeof pat);
    size_t st, en;
    assert_int_equal(lpat_find(&m, 0, &st, &en), LPAT_MATCH);
    assert_int_equal(st, 1);
    assert_int_equal(en, 2);
    assert_int_equal(find_str("a\0c", 3, "%z", 0, out, sizeof out), LPAT_MATCH);
    assert_string_equal(out, "1,2");
}

static void subject_needs_no_terminator(void **state)
{
    /* Exactly n bytes on the heap: ASan reports any read past them. */
    char *s = malloc(3);
    memcpy(s, "abc", 3);
    char out[64];
    find_str(s, 3, "c%f[%z]$", 0, out, sizeof out);
    assert_string_equal(out, "2,3");
    find_str(s, 3, "%bc)", 0, out, sizeof out);
    assert_string_equal(out, "nil");
    find_str(s, 3, "(c)%1", 0, out, sizeof out);
    assert_string_equal(out, "nil");
    find_str(s, 3, "c.?$", 0, out, sizeof out);
    assert_string_equal(out, "2,3");
    free(s);
}

static void init_and_anchor(void **state)
{
    char out[64];
    find_str("abab", 4, "ab", 1, out, sizeof out);
    assert_string_equal(out, "2,4");
    find_str("abab", 4, "^ab", 1, out, sizeof out);
    assert_string_equal(out, "nil");
    find_str("abab", 4, "", 4, out, sizeof out);
    assert_string_equal(out, "4,4");
    find_str("abab", 4, "", 5, out, sizeof out); /* past the end: no match, no read */
    assert_string_equal(out, "nil");

    lpat_t m;
    lpat_init(&m, "^ab", 3, "^a", 2);
    size_t end;
    assert_int_equal(lpat_match_at(&m, 0, &end), LPAT_MATCH); /* gmatch: '^' is a character */
    assert_int_equal(end, 2);
    lpat_init(&m, "ab", 2, "^a", 2);
    assert_true(lpat_take_anchor(&m));
    assert_int_equal(lpat_match_at(&m, 0, &end), LPAT_MATCH);
    assert_int_equal(end, 1);
}

static void capture_zero_is_the_whole_match(void **state)
{
    lpat_t m;
    lpat_init(&m, "xaby", 4, "ab", 2);
    size_t st, en;
    assert_int_equal(lpat_find(&m, 0, &st, &en), LPAT_MATCH);
    lpat_span_t sp;
    assert_int_equal(lpat_capture(&m, 0, st, en, &sp), LPAT_E_NONE);
    assert_int_equal(sp.start, 1);
    assert_int_equal(sp.len, 2);
    assert_int_equal(lpat_capture(&m, 1, st, en, &sp), LPAT_E_CAPTURE_INDEX);
    assert_int_equal(lpat_captures_check(&m), LPAT_E_NONE);
}

/* ---- limits -------------------------------------------------------------------------------- */

static lpat_result_t find_in(const char *s, const char *p, lpat_t *m)
{
    size_t st, en;
    lpat_init(m, s, strlen(s), p, strlen(p));
    return lpat_find(m, 0, &st, &en);
}

static void depth_limit_is_luajits(void **state)
{
    char *s = repeat("a", 300);
    char *ok = repeat("a?", LPAT_MAXDEPTH - 1);
    char *deep = repeat("a?", LPAT_MAXDEPTH);
    lpat_t m;
    assert_int_equal(find_in(s, ok, &m), LPAT_MATCH);
    assert_int_equal(find_in(s, deep, &m), LPAT_BADPATTERN);
    assert_int_equal(m.error, LPAT_E_TOO_COMPLEX);
    assert_string_equal(lpat_error_message(m.error), "pattern too complex");
    free(s);
    free(ok);
    free(deep);
}

static void capture_limit_is_32(void **state)
{
    char *ok = repeat("()", 32);
    char *over = repeat("()", 33);
    lpat_t m;
    assert_int_equal(find_in("abc", ok, &m), LPAT_MATCH);
    assert_int_equal(m.level, 32);
    assert_int_equal(find_in("abc", over, &m), LPAT_BADPATTERN);
    assert_string_equal(lpat_error_message(m.error), "too many captures");
    free(ok);
    free(over);
}

/* ---- plain search ----------------------------------------------------------------------------- */

static void plain_search(void **state)
{
    assert_false(lpat_has_specials("PJSIP/alice", 11));
    assert_false(lpat_has_specials("a)b]c", 5));
    const char *specials = "^$*+?.([%-";
    for (const char *c = specials; *c; c++)
        assert_true(lpat_has_specials(c, 1));
    size_t at;
    assert_true(lpat_plain_find("a.c.d", 5, 2, ".d", 2, &at));
    assert_int_equal(at, 3);
    assert_false(lpat_plain_find("abc", 3, 1, "a", 1, &at));
    assert_true(lpat_plain_find("abc", 3, 3, "", 0, &at));
    assert_int_equal(at, 3);
    assert_false(lpat_plain_find("abc", 3, 4, "", 0, &at));
}

static void plain_search_hands_over_to_a_linear_search(void **state)
{
    /* Thousands of near misses: the memchr/memcmp loop gives up and memmem
     * (linear) finds the occurrence, the same one. */
    char *hay = repeat("a", 60000);
    char *needle = repeat("a", 3001);
    needle[3000] = 'b';
    size_t at;
    assert_false(lpat_plain_find(hay, 60000, 0, needle, 3001, &at));
    hay[59000] = 'b';
    assert_true(lpat_plain_find(hay, 60000, 0, needle, 3001, &at));
    assert_int_equal(at, 56000);
    assert_true(lpat_plain_find(hay, 60000, 56000, needle, 3001, &at));
    assert_int_equal(at, 56000);
    assert_false(lpat_plain_find(hay, 60000, 56001, needle, 3001, &at));
    hay[59000] = 'a';
    for (size_t start = 0; start < 300; start++) { /* across the hand-over point */
        hay[start + 3000] = 'b';
        assert_true(lpat_plain_find(hay, 60000, 0, needle, 3001, &at));
        assert_int_equal(at, start);
        hay[start + 3000] = 'a';
    }
    free(hay);
    free(needle);
}

/* ---- the budget ------------------------------------------------------------------------------ */

typedef struct check_log {
    int calls;
    lpat_t *m;
    uint64_t last_steps;
    bool monotonic;
    int stop_at;      /* return nonzero on this call; 0: never */
} check_log_t;

static int log_check(void *ud)
{
    check_log_t *log = ud;
    log->calls++;
    if (log->m->steps < log->last_steps)
        log->monotonic = false;
    log->last_steps = log->m->steps;
    return log->stop_at && log->calls >= log->stop_at;
}

/* Run a find on n bytes of s under max_steps; assert it stopped in bounds. */
static void assert_stopped(const char *s, size_t n, const char *p, uint64_t max_steps)
{
    lpat_t m;
    check_log_t log = {.m = &m, .monotonic = true};
    lpat_init(&m, s, n, p, strlen(p));
    lpat_set_budget(&m, max_steps, log_check, &log);
    size_t st, en;
    lpat_result_t r = lpat_find(&m, 0, &st, &en);
    if (r != LPAT_OVERBUDGET)
        fail_msg("\"%.20s...\" (%zu bytes) with \"%.40s\": result %d after %llu steps, want over budget",
                 s, n, p, r, (unsigned long long)m.steps);
    assert_int_equal(m.error, LPAT_E_BUDGET);
    assert_true(m.steps > max_steps);
    assert_true(m.steps <= max_steps + 2 * LPAT_CHECK_EVERY + 2 * (n + strlen(p)));
    assert_true(log.calls >= 1);
    assert_true((uint64_t)log.calls <= m.steps / LPAT_CHECK_EVERY);
    assert_true(log.monotonic);
}

static void budget_stops_the_60k_greedy_pair(void **state)
{
    char *s = repeat("x", 60000);
    assert_stopped(s, 60000, "(.*)@(.*)", 1000000);
    assert_stopped(s, 60000, "(.-)@(.-)", 1000000);
    free(s);
}

static void budget_counts_every_kind_of_work(void **state)
{
    /* Each case does most of its work in one place; drop the count there
     * and the case runs to the end instead of being stopped. */
    char *parens = repeat("(", 60000);
    assert_stopped(parens, 60000, "%b()", 1000000);               /* balance scan */
    char *as = repeat("a", 60000);
    assert_stopped(as, 60000, "^(a*)%1b", 1000000);                /* back-reference compare */
    char *set = repeat("b", 3000);
    set[0] = '[';
    set[2999] = ']';
    assert_stopped(as, 3000, set, 1000000);                         /* a long set, per use */
    char *bs = repeat("b", 3000);
    char *greedy_set = repeat("a", 3004);
    memcpy(greedy_set, "^[", 2);
    memcpy(greedy_set + 3000, "b]*c", 4);
    assert_stopped(bs, 3000, greedy_set, 1000000);                 /* a long set, repeated */
    greedy_set[3002] = '-';
    assert_stopped(bs, 3000, greedy_set, 1000000);                 /* the same, lazily */
    memcpy(greedy_set, "%f[", 3);
    memcpy(greedy_set + 3000, "a]\0", 3);
    assert_stopped(bs, 3000, greedy_set, 1000000);                 /* a long frontier set */
    free(bs);
    free(greedy_set);
    char *lit = repeat("a", 1501);
    lit[1500] = 'b';
    assert_stopped(as, 3000, lit, 1000000);                         /* a long literal pattern */
    assert_stopped(as, 60000, "a-b", 1000000);                      /* lazy expansion */
    assert_stopped(as, 60000, "a*b", 1000000);                      /* greedy expansion */
    free(parens);
    free(as);
    free(set);
    free(lit);
}

static void check_is_called_every_interval_and_can_stop(void **state)
{
    char *s = repeat("x", 60000);
    lpat_t m;
    check_log_t log = {.m = &m, .monotonic = true, .stop_at = 7};
    lpat_init(&m, s, 60000, "(.*)@", 5);
    lpat_set_budget(&m, UINT64_MAX, log_check, &log);
    size_t st, en;
    assert_int_equal(lpat_find(&m, 0, &st, &en), LPAT_OVERBUDGET);
    assert_int_equal(log.calls, 7);
    assert_true(m.steps >= 7ull * LPAT_CHECK_EVERY);
    assert_true(m.steps < 8ull * LPAT_CHECK_EVERY + 60000);
    /* The state is spent: the same error again, no more work. */
    uint64_t steps = m.steps;
    assert_int_equal(lpat_find(&m, 0, &st, &en), LPAT_OVERBUDGET);
    assert_int_equal(lpat_match_at(&m, 0, &en), LPAT_OVERBUDGET);
    assert_int_equal(m.steps, steps);
    free(s);
}

static void no_budget_runs_to_the_end(void **state)
{
    char *s = repeat("x", 3000);
    lpat_t m;
    assert_int_equal(find_in(s, "(.*)@(.*)", &m), LPAT_NOMATCH);
    assert_true(m.steps > 3000ull * 3000 / 2); /* the quadratic work, counted */
    free(s);
}

static void charge_counts_the_callers_work(void **state)
{
    lpat_t m;
    check_log_t log = {.m = &m, .monotonic = true, .stop_at = 2};
    lpat_init(&m, "abc", 3, "b", 1);
    lpat_set_budget(&m, UINT64_MAX, log_check, &log);
    assert_false(lpat_charge(&m, LPAT_CHECK_EVERY - 1));
    assert_int_equal(log.calls, 0);
    assert_false(lpat_charge(&m, 1));
    assert_int_equal(log.calls, 1);
    assert_true(lpat_charge(&m, LPAT_CHECK_EVERY));
    assert_int_equal(m.error, LPAT_E_BUDGET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_items_and_classes),
        cmocka_unit_test(sets),
        cmocka_unit_test(quantifiers_and_anchors),
        cmocka_unit_test(captures),
        cmocka_unit_test(pattern_errors_have_luajit_messages),
        cmocka_unit_test(errors_are_found_where_the_search_reaches),
        cmocka_unit_test(nul_ends_the_pattern_not_the_subject),
        cmocka_unit_test(subject_needs_no_terminator),
        cmocka_unit_test(init_and_anchor),
        cmocka_unit_test(capture_zero_is_the_whole_match),
        cmocka_unit_test(depth_limit_is_luajits),
        cmocka_unit_test(capture_limit_is_32),
        cmocka_unit_test(plain_search),
        cmocka_unit_test(plain_search_hands_over_to_a_linear_search),
        cmocka_unit_test(budget_stops_the_60k_greedy_pair),
        cmocka_unit_test(budget_counts_every_kind_of_work),
        cmocka_unit_test(check_is_called_every_interval_and_can_stop),
        cmocka_unit_test(no_budget_runs_to_the_end),
        cmocka_unit_test(charge_counts_the_callers_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
