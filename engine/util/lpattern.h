/*
 * Lua 5.1 patterns, as LuaJIT 2.1 matches them, under a step budget.
 *
 * Lua's matcher backtracks: `(.*)@(.*)` against 60 KB costs billions of
 * steps, and inside LuaJIT that is one C call no debug hook can interrupt.
 * This matcher gives the same answers (the same captures, the same errors,
 * raised at the same point of the search: LuaJIT reports a malformed
 * pattern only when the search reaches the bad item) and counts its work.
 * A step is about one byte of subject or pattern examined or copied; every
 * LPAT_CHECK_EVERY steps it stops if the state's step limit is passed or if
 * the caller's check callback returns nonzero. So a search stops within
 * max_steps + 2 x LPAT_CHECK_EVERY + 2 x (subject + pattern length) steps. The callback may also
 * longjmp (luaL_error): the matcher holds nothing that needs cleaning up.
 *
 * Memory: nothing is allocated. An lpat_t lives where the caller puts it
 * (usually the C stack, about 600 bytes) and holds pointers into the
 * subject and the pattern, which must outlive it. Neither needs a NUL
 * terminator. As in Lua 5.1, a NUL byte in the pattern ends it (write %z
 * to match a NUL).
 *
 * Threads: no global state; any thread may use its own lpat_t.
 *
 * Use: lpat_init, then lpat_find (string.find's search: from an offset,
 * anchored by a leading '^'), lpat_scan (the same with the pattern taken
 * literally: gmatch does not anchor) or lpat_match_at (one position; gsub
 * calls lpat_take_anchor first). After LPAT_MATCH, lpat_capture reads the captures. After an error
 * the state is spent: later calls return the same error.
 */
#ifndef AMI_UTIL_LPATTERN_H
#define AMI_UTIL_LPATTERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LPAT_MAXCAPTURES 32     /* LUA_MAXCAPTURES */
#define LPAT_MAXDEPTH 200       /* LuaJIT's LJ_MAX_XLEVEL: nested matches */
#define LPAT_CHECK_EVERY 4096u  /* steps between budget checks (a power of two) */

#define LPAT_CAP_UNFINISHED (-1)
#define LPAT_CAP_POSITION (-2)

typedef enum lpat_result {
    LPAT_MATCH = 1,
    LPAT_NOMATCH = 0,
    LPAT_BADPATTERN = -1,  /* m->error says which; lpat_error_message has LuaJIT's text */
    LPAT_OVERBUDGET = -2,  /* the step limit was passed or the check said stop */
} lpat_result_t;

typedef enum lpat_error {
    LPAT_E_NONE = 0,
    LPAT_E_ENDS_WITH_ESCAPE,   /* malformed pattern (ends with '%') */
    LPAT_E_MISSING_BRACKET,    /* malformed pattern (missing ']') */
    LPAT_E_FRONTIER_BRACKET,   /* missing '[' after '%f' in pattern */
    LPAT_E_UNBALANCED,         /* unbalanced pattern (%b without two characters) */
    LPAT_E_PATTERN_CAPTURE,    /* invalid pattern capture (')' with nothing open) */
    LPAT_E_CAPTURE_INDEX,      /* invalid capture index */
    LPAT_E_TOO_MANY_CAPTURES,  /* too many captures */
    LPAT_E_UNFINISHED_CAPTURE, /* unfinished capture (read after a match) */
    LPAT_E_TOO_COMPLEX,        /* pattern too complex (LPAT_MAXDEPTH) */
    LPAT_E_BUDGET,             /* over the step budget (not a pattern error) */
} lpat_error_t;

typedef struct lpat_capture {
    const char *init;
    ptrdiff_t len;  /* >= 0, LPAT_CAP_UNFINISHED or LPAT_CAP_POSITION */
} lpat_capture_t;

/* Nonzero stops the match with LPAT_OVERBUDGET. May longjmp instead. */
typedef int (*lpat_check_fn)(void *ud);

/* Fields are read-only for callers (steps may be read at any time). */
typedef struct lpat {
    const char *src, *src_end;   /* the whole subject */
    const char *pat, *pat_end;   /* the pattern, up to its first NUL */
    lpat_check_fn check;
    void *check_ud;
    uint64_t steps;              /* work done so far, over every call on this state */
    uint64_t max_steps;          /* UINT64_MAX: no limit */
    uint64_t next_check;
    lpat_error_t error;
    int level;                   /* captures open or closed */
    int depth;                   /* nested matches */
    lpat_capture_t capture[LPAT_MAXCAPTURES];
} lpat_t;

/* A capture as lpat_capture reads it: offsets into the subject. */
typedef struct lpat_span {
    size_t start;   /* for a position capture: the 0-based position */
    size_t len;
    bool position;  /* a () capture: Lua returns start + 1 as a number */
} lpat_span_t;

/* No budget: no check, no limit. */
void lpat_init(lpat_t *m, const char *subject, size_t len, const char *pattern, size_t plen);
/* The budget: stop past max_steps, or when check(ud) returns nonzero. */
void lpat_set_budget(lpat_t *m, uint64_t max_steps, lpat_check_fn check, void *ud);

/* Consume a leading '^'; true if there was one (gsub's anchor). */
bool lpat_take_anchor(lpat_t *m);

/* Match at exactly offset pos (<= len); on LPAT_MATCH *end is where it ended. */
lpat_result_t lpat_match_at(lpat_t *m, size_t pos, size_t *end);

/* string.find's search: first match starting at init (<= len) or later,
 * only at init if the pattern starts with '^'. */
lpat_result_t lpat_find(lpat_t *m, size_t init, size_t *start, size_t *end);
/* The same search with the pattern taken literally, a leading '^' included
 * (gmatch; gsub after lpat_take_anchor). */
lpat_result_t lpat_scan(lpat_t *m, size_t init, size_t *start, size_t *end);

/* After a match [start, end): capture i (0-based). With no captures,
 * capture 0 is the whole match. LPAT_E_CAPTURE_INDEX or
 * LPAT_E_UNFINISHED_CAPTURE as LuaJIT raises them. */
lpat_error_t lpat_capture(const lpat_t *m, int i, size_t start, size_t end, lpat_span_t *out);
/* LPAT_E_UNFINISHED_CAPTURE if a capture opened by the last match never closed. */
lpat_error_t lpat_captures_check(const lpat_t *m);

/* Count n steps of the caller's own work (gsub's copying) against the
 * budget: true means stop (m->error is LPAT_E_BUDGET). */
bool lpat_charge(lpat_t *m, uint64_t n);

/* Does the pattern use any of ^$*+?.([%- (else string.find searches plainly)? */
bool lpat_has_specials(const char *pattern, size_t plen);
/* Plain search, linear time: true and *start if needle occurs at or after init (<= len). */
bool lpat_plain_find(const char *subject, size_t len, size_t init, const char *needle, size_t nlen,
                     size_t *start);

lpat_result_t lpat_result_of(lpat_error_t e);
/* LuaJIT's message for a pattern error; never NULL. */
const char *lpat_error_message(lpat_error_t e);

#endif
