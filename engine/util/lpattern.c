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
/* Rare items stay out of match(), so its frame stays small (it is entered
 * for every nested level of every attempt). */
#define COLD __attribute__((noinline))

/* ---- characters (ASCII only, as LuaJIT's lj_char: no locale) ------------------------- */

/* Base properties of a byte; every class is a union of some of them. */
enum {
    CH_LOWER = 1, CH_UPPER = 2, CH_DIGIT = 4, CH_SPACE = 8,
    CH_CNTRL = 16, CH_PUNCT = 32, CH_HEXLETTER = 64, CH_NUL = 128,
};

#define IN(c, lo, hi) ((c) >= (lo) && (c) <= (hi))
#define CH(c)                                                                         \
    (uint8_t)((IN(c, 'a', 'z') ? CH_LOWER : 0) | (IN(c, 'A', 'Z') ? CH_UPPER : 0) |   \
              (IN(c, '0', '9') ? CH_DIGIT : 0) |                                       \
              ((c) == ' ' || IN(c, '\t', '\r') ? CH_SPACE : 0) |                      \
              ((c) < ' ' || (c) == 127 ? CH_CNTRL : 0) |                               \
              (IN(c, '!', '/') || IN(c, ':', '@') || IN(c, '[', '`') || IN(c, '{', '~') \
                   ? CH_PUNCT : 0) |                                                   \
              (IN(c, 'a', 'f') || IN(c, 'A', 'F') ? CH_HEXLETTER : 0) |               \
              ((c) == 0 ? CH_NUL : 0))
#define CH4(c) CH(c), CH((c) + 1), CH((c) + 2), CH((c) + 3)
#define CH16(c) CH4(c), CH4((c) + 4), CH4((c) + 8), CH4((c) + 12)
#define CH64(c) CH16(c), CH16((c) + 16), CH16((c) + 32), CH16((c) + 48)

static const uint8_t char_props[256] = {CH64(0), CH64(64), CH64(128), CH64(192)};

/* For the letter after '%': the properties its class covers, NEGATED for
 * upper case, 0 when it is no class (the character stands for itself). */
#define NEGATED 0x100
#define CLASS(lower, props) [lower] = (props), [(lower) - 32] = (props) | NEGATED

static const uint16_t class_props[256] = {
    CLASS('a', CH_LOWER | CH_UPPER),
    CLASS('c', CH_CNTRL),
    CLASS('d', CH_DIGIT),
    CLASS('g', CH_LOWER | CH_UPPER | CH_DIGIT | CH_PUNCT),
    CLASS('l', CH_LOWER),
    CLASS('p', CH_PUNCT),
    CLASS('s', CH_SPACE),
    CLASS('u', CH_UPPER),
    CLASS('w', CH_LOWER | CH_UPPER | CH_DIGIT),
    CLASS('x', CH_DIGIT | CH_HEXLETTER),
    CLASS('z', CH_NUL),
};

static inline bool is_digit(int c) { return c >= '0' && c <= '9'; }

/* %cl against c: a class letter (upper case negates) or cl itself. */
static inline bool class_match(int c, int cl)
{
    unsigned props = class_props[cl];
    if (!props)
        return cl == c;
    bool in = (char_props[c] & props) != 0;
    return (props & NEGATED) ? !in : in;
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

/* Past the set "[...]" at p. NULL (and m->error) if it has no ']'. */
static const char *set_end(lpat_t *m, const char *p)
{
    const char *end = m->pat_end;
    char c;
    if (++p < end && *p == '^')
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

/* Past the item at p: "x", "%x" or "[set]". NULL (and m->error) if malformed. */
static inline const char *class_end(lpat_t *m, const char *p)
{
    if (*p == ESC)
        return p + 1 < m->pat_end ? p + 2 : fail(m, LPAT_E_ENDS_WITH_ESCAPE);
    return *p == '[' ? set_end(m, p) : p + 1;
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

/* How many bytes from s on (up to the end) the item [p, ep) matches,
 * charged a check interval's worth at a time. */
static bool count_repeats(lpat_t *m, const char *s, const char *p, const char *ep, size_t *n)
{
    uint64_t cost = (uint64_t)(ep - p);
    size_t chunk = cost <= 16 ? 256 : cost < LPAT_CHECK_EVERY ? LPAT_CHECK_EVERY / cost : 1;
    size_t i = 0, left = (size_t)(m->src_end - s);
    for (;;) {
        size_t stop = i + (left - i < chunk ? left - i : chunk), from = i;
        while (i < stop && single_match((unsigned char)s[i], p, ep))
            i++;
        if (charge(m, (i - from) * cost))
            return false;
        if (i < stop || i == left)
            break;
    }
    *n = i;
    return true;
}

/* Greedy: as many as the item takes, then give back one at a time. */
static const char *max_expand(lpat_t *m, const char *s, const char *p, const char *ep)
{
    size_t i;
    if (!count_repeats(m, s, p, ep, &i))
        return NULL;
    for (;;) {
        const char *res = match(m, s + i, ep + 1);
        if (res || m->error)
            return res;
        if (i-- == 0)
            return NULL;
    }
}

/* Lazy: the rest first, one more of the item each time it fails. */
static COLD const char *min_expand(lpat_t *m, const char *s, const char *p, const char *ep)
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

/* "(" or "()" at p. */
static const char *start_capture(lpat_t *m, const char *s, const char *p)
{
    ptrdiff_t what = LPAT_CAP_UNFINISHED;
    if (p + 1 < m->pat_end && p[1] == ')') {
        what = LPAT_CAP_POSITION;
        p++;
    }
    if (m->level >= LPAT_MAXCAPTURES)
        return fail(m, LPAT_E_TOO_MANY_CAPTURES);
    m->capture[m->level].init = s;
    m->capture[m->level].len = what;
    m->level++;
    const char *res = match(m, s, p + 1);
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
static COLD const char *match_backref(lpat_t *m, const char *s, int digit)
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
static COLD const char *match_balance(lpat_t *m, const char *s, const char *p)
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

/* %f[set] with p at '%': past the set if s is at the frontier, else NULL. */
static COLD const char *frontier(lpat_t *m, const char *s, const char *p)
{
    p += 2;
    if (p >= m->pat_end || *p != '[')
        return fail(m, LPAT_E_FRONTIER_BRACKET);
    const char *ep = set_end(m, p);
    if (!ep || charge(m, 2 * (uint64_t)(ep - p)))
        return NULL;
    int prev = s == m->src ? 0 : (unsigned char)s[-1];
    int cur = s < m->src_end ? (unsigned char)*s : 0; /* LuaJIT reads the terminating NUL */
    if (bracket_match(prev, p, ep - 1) || !bracket_match(cur, p, ep - 1))
        return NULL;
    return ep;
}

/* A single item at p ending at ep, and what follows it. Its quantifier
 * decides: '?' may go on at *pp (returns s or s + 1, *pp moved), the other
 * repetitions finish this level (*pp set to NULL); a plain item returns
 * s + 1 or NULL. */
static const char *quantified(lpat_t *m, const char *s, const char **pp, const char *ep)
{
    const char *p = *pp;
    bool hit = s < m->src_end && single_match((unsigned char)*s, p, ep);
    switch (ep < m->pat_end ? *ep : '\0') {
    case '?':
        if (hit) {
            const char *res = match(m, s + 1, ep + 1);
            if (res || m->error) {
                *pp = NULL;
                return res;
            }
        }
        *pp = ep + 1;
        return s;
    case '*':
        *pp = NULL;
        return max_expand(m, s, p, ep);
    case '+':
        *pp = NULL;
        return hit ? max_expand(m, s + 1, p, ep) : NULL;
    case '-':
        *pp = NULL;
        return min_expand(m, s, p, ep);
    default:
        *pp = ep;
        return hit ? s + 1 : NULL;
    }
}

/* A character that stands for itself, not followed by a quantifier. */
static inline bool is_plain_char(const char *p, const char *end)
{
    switch (*p) {
    case '(': case ')': case '%': case '.': case '[': case '$':
        return false;
    }
    if (p + 1 == end)
        return true;
    switch (p[1]) {
    case '*': case '+': case '-': case '?':
        return false;
    }
    return true;
}

/* Matches the rest of the pattern from p against the subject from s: the
 * end of the match, or NULL. Items that cannot backtrack loop here; the
 * others nest (one level of LPAT_MAXDEPTH each, as in LuaJIT). */
static const char *match(lpat_t *m, const char *s, const char *p)
{
    if (++m->depth > LPAT_MAXDEPTH)
        return fail(m, LPAT_E_TOO_COMPLEX);
    const char *end = m->pat_end;
    while (s && p < end) {
        if (charge(m, 1)) {
            s = NULL;
            break;
        }
        if (is_plain_char(p, end)) { /* the common case, without the general machinery */
            s = s < m->src_end && *s == *p ? s + 1 : NULL;
            p++;
            continue;
        }
        switch (*p) {
        case '(':
            s = start_capture(m, s, p);
            goto done;
        case ')':
            s = end_capture(m, s, p + 1);
            goto done;
        case '$':
            if (p + 1 != end)
                break; /* a '$' that does not end the pattern is a character */
            s = s == m->src_end ? s : NULL;
            goto done;
        case ESC:
            if (p + 1 < end && p[1] == 'b') {
                s = match_balance(m, s, p + 2);
                p += 4;
                continue;
            }
            if (p + 1 < end && p[1] == 'f') {
                p = frontier(m, s, p);
                s = p ? s : NULL;
                continue;
            }
            if (p + 1 < end && is_digit((unsigned char)p[1])) {
                s = match_backref(m, s, (unsigned char)p[1]);
                p += 2;
                continue;
            }
            break;
        }
        const char *ep = class_end(m, p);
        if (!ep || (*p == '[' && charge(m, (uint64_t)(ep - p)))) {
            s = NULL;
            break;
        }
        s = quantified(m, s, &p, ep);
        if (!p)
            break;
    }
done:
    m->depth--;
    return s; /* NULL after any error: every path that fails returns NULL */
}

/* ---- the API ------------------------------------------------------------------------------- */

void lpat_init(lpat_t *m, const char *subject, size_t len, const char *pattern, size_t plen)
{
    if (!subject)
        subject = "", len = 0;
    if (!pattern)
        pattern = "", plen = 0;
    const char *nul = memchr(pattern, '\0', plen);
    m->src = subject;
    m->src_end = subject + len;
    m->pat = pattern;
    m->pat_end = nul ? nul : pattern + plen;
    m->check = NULL;
    m->check_ud = NULL;
    m->steps = 0;
    m->max_steps = UINT64_MAX;
    m->next_check = LPAT_CHECK_EVERY;
    m->error = LPAT_E_NONE;
    m->level = 0;
    m->depth = 0;
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

/* Try p at init, init + 1, ... (only init if anchored). */
static lpat_result_t search(lpat_t *m, size_t init, const char *p, bool anchored, size_t *start,
                            size_t *end)
{
    if (m->error != LPAT_E_NONE)
        return lpat_result_of(m->error);
    size_t len = (size_t)(m->src_end - m->src);
    if (init > len)
        return LPAT_NOMATCH;
    for (size_t pos = init;; pos++) {
        lpat_result_t r = try_at(m, m->src + pos, p, end);
        if (r == LPAT_MATCH)
            *start = pos;
        if (r != LPAT_NOMATCH)
            return r;
        if (anchored || pos >= len)
            return LPAT_NOMATCH;
    }
}

lpat_result_t lpat_find(lpat_t *m, size_t init, size_t *start, size_t *end)
{
    bool anchored = m->pat < m->pat_end && *m->pat == '^';
    return search(m, init, m->pat + anchored, anchored, start, end);
}

lpat_result_t lpat_scan(lpat_t *m, size_t init, size_t *start, size_t *end)
{
    return search(m, init, m->pat, false, start, end);
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

/* First candidates by memchr and memcmp, as LuaJIT does (fast on real
 * data); once that has compared more than a few times the haystack, the
 * rest goes to glibc's memmem, which is linear in the worst case (two-way). */
bool lpat_plain_find(const char *subject, size_t len, size_t init, const char *needle, size_t nlen,
                     size_t *start)
{
    if (init > len || nlen > len - init)
        return false;
    if (nlen == 0) {
        *start = init;
        return true;
    }
    const char *h = subject + init, *last = subject + len - nlen;
    size_t work = 0, work_limit = 4 * (len - init) + 256;
    while (h <= last && work < work_limit) {
        const char *q = memchr(h, needle[0], (size_t)(last - h) + 1);
        if (!q)
            return false;
        if (memcmp(q + 1, needle + 1, nlen - 1) == 0) {
            *start = (size_t)(q - subject);
            return true;
        }
        work += nlen;
        h = q + 1;
    }
    if (h > last)
        return false;
    const char *hit = memmem(h, (size_t)(subject + len - h), needle, nlen);
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
