/*
 * The matcher follows Lua 5.1's recursive design so that it nests, fails
 * and reports errors exactly where LuaJIT does: each nested match() is one
 * level of LPAT_MAXDEPTH, and a malformed item is an error only once the
 * search reaches it. Unlike LuaJIT it never longjmps on its own: an error
 * sets m->error and every loop that would try another alternative stops.
 */
#include "util/lpattern.h"

#include <string.h>

#define ESC '%'

/* ---- characters (ASCII only, as LuaJIT's lj_char: no locale) ------------------------- */

static inline bool is_digit(int c) { return c >= '0' && c <= '9'; }
static inline bool is_lower(int c) { return c >= 'a' && c <= 'z'; }
static inline bool is_upper(int c) { return c >= 'A' && c <= 'Z'; }
static inline bool is_alpha(int c) { return is_lower(c) || is_upper(c); }
static inline bool is_alnum(int c) { return is_alpha(c) || is_digit(c); }
static inline bool is_graph(int c) { return c > ' ' && c < 127; }

static bool in_class(int c, int lower_cl)
{
    switch (lower_cl) {
    case 'a': return is_alpha(c);
    case 'c': return c < ' ' || c == 127;
    case 'd': return is_digit(c);
    case 'g': return is_graph(c);
    case 'l': return is_lower(c);
    case 'p': return is_graph(c) && !is_alnum(c);
    case 's': return c == ' ' || (c >= '\t' && c <= '\r');
    case 'u': return is_upper(c);
    case 'w': return is_alnum(c);
    case 'x': return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
    case 'z': return c == 0;
    default: return false;
    }
}

/* %cl against c: a class letter (upper case negates) or cl itself. */
static bool class_match(int c, int cl)
{
    switch (cl | 0x20) {
    case 'a': case 'c': case 'd': case 'g': case 'l': case 'p':
    case 's': case 'u': case 'w': case 'x': case 'z':
        return is_lower(cl) ? in_class(c, cl) : !in_class(c, cl | 0x20);
    default:
        return cl == c;
    }
}

/* ---- errors and the budget ----------------------------------------------------------------- */

static const char *fail(lpat_t *m, lpat_error_t e)
{
    if (m->error == LPAT_E_NONE)
        m->error = e;
    return NULL;
}

static bool checkpoint(lpat_t *m)
{
    m->next_check = (m->steps | (LPAT_CHECK_EVERY - 1)) + 1;
    if (m->error != LPAT_E_NONE)
        return true;
    if (m->steps > m->max_steps || (m->check && m->check(m->check_ud) != 0)) {
        fail(m, LPAT_E_BUDGET);
        return true;
    }
    return false;
}

static inline bool charge(lpat_t *m, uint64_t n)
{
    m->steps += n;
    return m->steps >= m->next_check && checkpoint(m);
}

bool lpat_charge(lpat_t *m, uint64_t n)
{
    return charge(m, n) || m->error != LPAT_E_NONE;
}

/* ---- single items ----------------------------------------------------------------------- */

/* Past the item at p: "x", "%x" or "[set]". NULL (and m->error) if malformed. */
static const char *class_end(lpat_t *m, const char *p)
{
    const char *end = m->pat_end;
    char c = *p++;
    if (c == ESC)
        return p < end ? p + 1 : fail(m, LPAT_E_ENDS_WITH_ESCAPE);
    if (c != '[')
        return p;
    if (p < end && *p == '^')
        p++;
    do { /* the first character is taken literally, even ']' */
        if (p >= end)
            return fail(m, LPAT_E_MISSING_BRACKET);
        c = *p++;
        if (c == ESC && p < end)
            p++;
    } while (p >= end || *p != ']');
    return p + 1;
}

/* c against the set from '[' at p to ']' at ec. */
static bool bracket_match(int c, const char *p, const char *ec)
{
    bool found = true;
    if (p[1] == '^') {
        found = false;
        p++;
    }
    while (++p < ec) {
        if (*p == ESC) {
            p++;
            if (class_match(c, (unsigned char)*p))
                return found;
        } else if (p[1] == '-' && p + 2 < ec) {
            p += 2;
            if ((unsigned char)p[-2] <= c && c <= (unsigned char)*p)
                return found;
        } else if ((unsigned char)*p == c) {
            return found;
        }
    }
    return !found;
}

static inline bool single_match(int c, const char *p, const char *ep)
{
    switch (*p) {
    case '.': return true;
    case ESC: return class_match(c, (unsigned char)p[1]);
    case '[': return bracket_match(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

/* ---- the matcher ------------------------------------------------------------------------ */

static const char *match(lpat_t *m, const char *s, const char *p);

/* Greedy: as many as the item takes, then give back one at a time. */
static const char *max_expand(lpat_t *m, const char *s, const char *p, const char *ep)
{
    uint64_t cost = (uint64_t)(ep - p);
    size_t i = 0;
    while (s + i < m->src_end && single_match((unsigned char)s[i], p, ep)) {
        i++;
        if (charge(m, cost))
            return NULL;
    }
    for (;;) {
        const char *res = match(m, s + i, ep + 1);
        if (res || m->error)
            return res;
        if (i-- == 0)
            return NULL;
    }
}

/* Lazy: the rest first, one more of the item each time it fails. */
static const char *min_expand(lpat_t *m, const char *s, const char *p, const char *ep)
{
    uint64_t cost = (uint64_t)(ep - p);
    for (;;) {
        const char *res = match(m, s, ep + 1);
        if (res || m->error)
            return res;
        if (s >= m->src_end || !single_match((unsigned char)*s, p, ep))
            return NULL;
        s++;
        if (charge(m, cost))
            return NULL;
    }
}

static const char *start_capture(lpat_t *m, const char *s, const char *p, ptrdiff_t what)
{
    if (m->level >= LPAT_MAXCAPTURES)
        return fail(m, LPAT_E_TOO_MANY_CAPTURES);
    m->capture[m->level].init = s;
    m->capture[m->level].len = what;
    m->level++;
    const char *res = match(m, s, p);
    if (!res)
        m->level--;
    return res;
}

static const char *end_capture(lpat_t *m, const char *s, const char *p)
{
    int l = m->level - 1;
    while (l >= 0 && m->capture[l].len != LPAT_CAP_UNFINISHED)
        l--;
    if (l < 0)
        return fail(m, LPAT_E_PATTERN_CAPTURE);
    m->capture[l].len = s - m->capture[l].init;
    const char *res = match(m, s, p);
    if (!res)
        m->capture[l].len = LPAT_CAP_UNFINISHED;
    return res;
}

/* %1-%9: the text of a closed capture again. */
static const char *match_backref(lpat_t *m, const char *s, int digit)
{
    int l = digit - '1';
    if (l < 0 || l >= m->level || m->capture[l].len == LPAT_CAP_UNFINISHED)
        return fail(m, LPAT_E_CAPTURE_INDEX);
    ptrdiff_t len = m->capture[l].len;
    if (len < 0 || m->src_end - s < len) /* a position capture has no text: never equal */
        return NULL;
    if (charge(m, (uint64_t)len))
        return NULL;
    return memcmp(m->capture[l].init, s, (size_t)len) == 0 ? s + len : NULL;
}

/* %bxy at s; p points at x. */
static const char *match_balance(lpat_t *m, const char *s, const char *p)
{
    if (m->pat_end - p < 2)
        return fail(m, LPAT_E_UNBALANCED);
    if (s >= m->src_end || *s != p[0])
        return NULL;
    size_t open = 1;
    while (++s < m->src_end) {
        if (charge(m, 1))
            return NULL;
        if (*s == p[1]) {
            if (--open == 0)
                return s + 1;
        } else if (*s == p[0]) {
            open++;
        }
    }
    return NULL;
}

/* %f[set] at *pp: true if s is at the frontier (then *pp is past the set). */
static bool frontier(lpat_t *m, const char *s, const char **pp)
{
    const char *p = *pp + 2;
    if (p >= m->pat_end || *p != '[') {
        fail(m, LPAT_E_FRONTIER_BRACKET);
        return false;
    }
    const char *ep = class_end(m, p);
    if (!ep || charge(m, 2 * (uint64_t)(ep - p)))
        return false;
    int prev = s == m->src ? 0 : (unsigned char)s[-1];
    int cur = s < m->src_end ? (unsigned char)*s : 0; /* LuaJIT reads the terminating NUL */
    if (bracket_match(prev, p, ep - 1) || !bracket_match(cur, p, ep - 1))
        return false;
    *pp = ep;
    return true;
}

/* A single item, maybe quantified. True: go on at *sp, *pp. False: *sp is
 * this level's result (NULL: no match). */
static bool single_step(lpat_t *m, const char **sp, const char **pp)
{
    const char *s = *sp, *p = *pp;
    const char *ep = class_end(m, p);
    if (!ep || (*p == '[' && charge(m, (uint64_t)(ep - p)))) {
        *sp = NULL;
        return false;
    }
    bool hit = s < m->src_end && single_match((unsigned char)*s, p, ep);
    switch (ep < m->pat_end ? *ep : '\0') {
    case '?':
        if (hit) {
            const char *res = match(m, s + 1, ep + 1);
            if (res || m->error) {
                *sp = res;
                return false;
            }
        }
        *pp = ep + 1;
        return true;
    case '*':
        *sp = max_expand(m, s, p, ep);
        return false;
    case '+':
        *sp = hit ? max_expand(m, s + 1, p, ep) : NULL;
        return false;
    case '-':
        *sp = min_expand(m, s, p, ep);
        return false;
    default:
        *sp = hit ? s + 1 : NULL;
        *pp = ep;
        return hit;
    }
}

/* %b, %f and %1-%9; anything else after '%' is a single item. */
static bool escape_step(lpat_t *m, const char **sp, const char **pp)
{
    const char *p = *pp;
    int next = p + 1 < m->pat_end ? (unsigned char)p[1] : 0;
    if (next == 'b') {
        *sp = match_balance(m, *sp, p + 2);
        *pp = p + 4;
    } else if (next == 'f') {
        if (!frontier(m, *sp, pp))
            *sp = NULL;
    } else if (is_digit(next)) {
        *sp = match_backref(m, *sp, next);
        *pp = p + 2;
    } else {
        return single_step(m, sp, pp);
    }
    return *sp != NULL;
}

/* One pattern element: true to go on at *sp, *pp without nesting. */
static bool match_element(lpat_t *m, const char **sp, const char **pp)
{
    const char *p = *pp;
    if (p >= m->pat_end)
        return false; /* the whole pattern matched, up to *sp */
    switch (*p) {
    case '(':
        if (p + 1 < m->pat_end && p[1] == ')')
            *sp = start_capture(m, *sp, p + 2, LPAT_CAP_POSITION);
        else
            *sp = start_capture(m, *sp, p + 1, LPAT_CAP_UNFINISHED);
        return false;
    case ')':
        *sp = end_capture(m, *sp, p + 1);
        return false;
    case '$':
        if (p + 1 != m->pat_end)
            break; /* a '$' that does not end the pattern is a plain character */
        if (*sp != m->src_end)
            *sp = NULL;
        return false;
    case ESC:
        return escape_step(m, sp, pp);
    }
    return single_step(m, sp, pp);
}

static const char *match(lpat_t *m, const char *s, const char *p)
{
    if (++m->depth > LPAT_MAXDEPTH)
        return fail(m, LPAT_E_TOO_COMPLEX);
    while (!charge(m, 1) && match_element(m, &s, &p)) {
    }
    m->depth--;
    return m->error == LPAT_E_NONE ? s : NULL;
}

/* ---- the API ------------------------------------------------------------------------------- */

void lpat_init(lpat_t *m, const char *subject, size_t len, const char *pattern, size_t plen)
{
    memset(m, 0, offsetof(lpat_t, capture));
    if (!subject)
        subject = "", len = 0;
    if (!pattern)
        pattern = "", plen = 0;
    m->src = subject;
    m->src_end = subject + len;
    const char *nul = memchr(pattern, '\0', plen);
    m->pat = pattern;
    m->pat_end = nul ? nul : pattern + plen;
    m->max_steps = UINT64_MAX;
    m->next_check = LPAT_CHECK_EVERY;
}

void lpat_set_budget(lpat_t *m, uint64_t max_steps, lpat_check_fn check, void *ud)
{
    m->max_steps = max_steps;
    m->check = check;
    m->check_ud = ud;
}

bool lpat_take_anchor(lpat_t *m)
{
    if (m->pat < m->pat_end && *m->pat == '^') {
        m->pat++;
        return true;
    }
    return false;
}

lpat_result_t lpat_result_of(lpat_error_t e)
{
    if (e == LPAT_E_NONE)
        return LPAT_NOMATCH;
    return e == LPAT_E_BUDGET ? LPAT_OVERBUDGET : LPAT_BADPATTERN;
}

static lpat_result_t try_at(lpat_t *m, const char *s, const char *p, size_t *end)
{
    m->level = 0;
    m->depth = 0;
    const char *e = match(m, s, p);
    if (!e)
        return lpat_result_of(m->error);
    *end = (size_t)(e - m->src);
    return LPAT_MATCH;
}

lpat_result_t lpat_match_at(lpat_t *m, size_t pos, size_t *end)
{
    if (m->error != LPAT_E_NONE)
        return lpat_result_of(m->error);
    if (pos > (size_t)(m->src_end - m->src))
        return LPAT_NOMATCH;
    return try_at(m, m->src + pos, m->pat, end);
}

lpat_result_t lpat_find(lpat_t *m, size_t init, size_t *start, size_t *end)
{
    if (m->error != LPAT_E_NONE)
        return lpat_result_of(m->error);
    if (init > (size_t)(m->src_end - m->src))
        return LPAT_NOMATCH;
    const char *p = m->pat;
    bool anchor = p < m->pat_end && *p == '^';
    if (anchor)
        p++;
    size_t len = (size_t)(m->src_end - m->src);
    for (size_t pos = init;; pos++) {
        lpat_result_t r = try_at(m, m->src + pos, p, end);
        if (r == LPAT_MATCH)
            *start = pos;
        if (r != LPAT_NOMATCH)
            return r;
        if (anchor || pos >= len)
            return LPAT_NOMATCH;
    }
}

lpat_error_t lpat_capture(const lpat_t *m, int i, size_t start, size_t end, lpat_span_t *out)
{
    if (i < 0 || i >= m->level) {
        if (i != 0)
            return LPAT_E_CAPTURE_INDEX;
        *out = (lpat_span_t){.start = start, .len = end - start, .position = false};
        return LPAT_E_NONE;
    }
    const lpat_capture_t *c = &m->capture[i];
    if (c->len == LPAT_CAP_UNFINISHED)
        return LPAT_E_UNFINISHED_CAPTURE;
    out->start = (size_t)(c->init - m->src);
    out->position = c->len == LPAT_CAP_POSITION;
    out->len = out->position ? 0 : (size_t)c->len;
    return LPAT_E_NONE;
}

lpat_error_t lpat_captures_check(const lpat_t *m)
{
    for (int i = 0; i < m->level; i++)
        if (m->capture[i].len == LPAT_CAP_UNFINISHED)
            return LPAT_E_UNFINISHED_CAPTURE;
    return LPAT_E_NONE;
}

/* ---- plain search --------------------------------------------------------------------------- */

bool lpat_has_specials(const char *pattern, size_t plen)
{
    for (size_t i = 0; i < plen; i++) {
        switch (pattern[i]) {
        case '^': case '$': case '*': case '+': case '?':
        case '.': case '(': case '[': case '%': case '-':
            return true;
        }
    }
    return false;
}

bool lpat_plain_find(const char *subject, size_t len, size_t init, const char *needle, size_t nlen,
                     size_t *start)
{
    if (init > len)
        return false;
    if (nlen == 0) {
        *start = init;
        return true;
    }
    /* glibc's memmem is linear in the worst case (two-way): no budget needed. */
    const char *hit = memmem(subject + init, len - init, needle, nlen);
    if (!hit)
        return false;
    *start = (size_t)(hit - subject);
    return true;
}

const char *lpat_error_message(lpat_error_t e)
{
    switch (e) {
    case LPAT_E_NONE: return "no error";
    case LPAT_E_ENDS_WITH_ESCAPE: return "malformed pattern (ends with '%')";
    case LPAT_E_MISSING_BRACKET: return "malformed pattern (missing ']')";
    case LPAT_E_FRONTIER_BRACKET: return "missing '[' after '%f' in pattern";
    case LPAT_E_UNBALANCED: return "unbalanced pattern";
    case LPAT_E_PATTERN_CAPTURE: return "invalid pattern capture";
    case LPAT_E_CAPTURE_INDEX: return "invalid capture index";
    case LPAT_E_TOO_MANY_CAPTURES: return "too many captures";
    case LPAT_E_UNFINISHED_CAPTURE: return "unfinished capture";
    case LPAT_E_TOO_COMPLEX: return "pattern too complex";
    case LPAT_E_BUDGET: return "pattern matching stopped: over its step budget";
    }
    return "unknown pattern error";
}
