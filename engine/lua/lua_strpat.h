/*
 * string.find, string.match, string.gmatch and string.gsub with LuaJIT
 * 2.1's exact behaviour (arguments, conversions, results, error messages),
 * matched by util/lpattern under a step budget, so that a pathological
 * pattern or a 60 KB subject cannot hold the event loop inside one C call.
 *
 * ami_strpat_install puts the four functions into a string table. They
 * share one budget: every LPAT_CHECK_EVERY steps of matching (and of gsub's
 * copying) they call check(L, ud) with the lua_State of the calling script.
 * check returns 0 to go on; it stops the call either by raising a Lua error
 * itself (luaL_error: its message is what the script sees) or by returning
 * nonzero (the call then raises "pattern matching stopped: over its step
 * budget"). Raising from check is safe: nothing is allocated outside Lua's
 * own stack, and gsub builds its result in a luaL_Buffer.
 *
 * Memory: the budget is copied into a userdata the functions keep as an
 * upvalue; the caller's struct need not outlive the call. check and ud
 * must stay valid as long as the functions are reachable.
 *
 * Threads: the loop thread (whoever runs the lua_State).
 *
 * ami_strpat_match_budget is string.find(s, pat) ~= nil for C callers
 * (event filters), with a step limit instead of a callback; it never raises.
 */
#ifndef AMI_LUA_STRPAT_H
#define AMI_LUA_STRPAT_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

typedef struct ami_strpat_budget {
    int (*check)(lua_State *L, void *ud); /* NULL: no budget */
    void *ud;
} ami_strpat_budget_t;

/* Set find, match, gmatch and gsub in the table at string_table_idx (raw
 * sets). b may be NULL (no budget). Raises only on out-of-memory. */
void ami_strpat_install(lua_State *L, int string_table_idx, const ami_strpat_budget_t *b);

#define AMI_STRPAT_MATCH 1
#define AMI_STRPAT_NOMATCH 0
#define AMI_STRPAT_BADPATTERN (-1)
#define AMI_STRPAT_OVERBUDGET (-2)

/* Does string.find(s, pat) find something? 1 match, 0 no match, -1 bad
 * pattern (*errmsg: LuaJIT's message, static), -2 over max_steps
 * (UINT64_MAX: no limit). errmsg may be NULL. */
int ami_strpat_match_budget(const char *s, size_t n, const char *pat, size_t plen,
                            uint64_t max_steps, const char **errmsg);

#endif
