/*
 * LuaJIT 2.1's string.find/match/gmatch/gsub (lib_string.c) over
 * util/lpattern. Every observable detail follows LuaJIT: the order in
 * which arguments are checked, init's 32-bit conversion and clamping,
 * string.find's plain search when the pattern has no special character,
 * gmatch taking '^' literally, gsub's "%" at the end of a replacement
 * adding a NUL byte, the error texts (raised with the caller's position,
 * as lj_err_caller does). tests/unit/test_lua_strpat.lua checks all of it
 * against LuaJIT itself.
 */
#include "lua/lua_strpat.h"

#include <stdbool.h>

#include <lauxlib.h>

#include "util/lpattern.h"

#ifndef MAY_RAISE
#define MAY_RAISE /* this function can luaL_error */
#endif

/* The budget as the four functions keep it (upvalue 1): a userdata that
 * points to itself. Lua code cannot make a userdata of this size holding
 * its own address, so a swapped upvalue cannot pass for it; the test is two
 * API calls, where luaL_testudata looks the metatable up by name. */
typedef struct budget_box {
    const struct budget_box *self;
    ami_strpat_budget_t b;
} budget_box_t;

/* gmatch's iterator state (upvalue 1 of the iterator; 2 and 3 anchor the
 * subject and the pattern it points into). */
typedef struct gmatch_state {
    const struct gmatch_state *self;
    ami_strpat_budget_t b;
    const char *s, *p;
    size_t ls, lp;
    size_t pos; /* where the next search starts */
} gmatch_state_t;

/* Upvalue 1 if it is the userdata of that size pointing to itself. */
MAY_RAISE static void *own_upvalue(lua_State *L, size_t size)
{
    void *u = lua_touserdata(L, lua_upvalueindex(1));
    if (!u || lua_objlen(L, lua_upvalueindex(1)) != size || *(void **)u != u)
        luaL_error(L, "string pattern function without its state (tampered upvalue)");
    return u;
}

/* What the lpattern check callback needs to reach the script's check. */
typedef struct budget_call {
    lua_State *L;
    const ami_strpat_budget_t *b;
} budget_call_t;

static int budget_bridge(void *ud)
{
    budget_call_t *bc = ud;
    return bc->b->check(bc->L, bc->b->ud);
}

/* Prepare m for subject and pattern under budget b. */
static void start_match(lua_State *L, const ami_strpat_budget_t *b, lpat_t *m, budget_call_t *bc,
                        const char *s, size_t ls, const char *p, size_t lp)
{
    bc->L = L;
    bc->b = b;
    lpat_init(m, s, ls, p, lp);
    if (b->check)
        lpat_set_budget(m, UINT64_MAX, budget_bridge, bc);
}

MAY_RAISE static const ami_strpat_budget_t *budget_of(lua_State *L)
{
    return &((const budget_box_t *)own_upvalue(L, sizeof(budget_box_t)))->b;
}

MAY_RAISE static int raise_match_error(lua_State *L, const lpat_t *m)
{
    return luaL_error(L, "%s", lpat_error_message(m->error));
}

MAY_RAISE static void charge_or_raise(lua_State *L, lpat_t *m, size_t n)
{
    if (lpat_charge(m, n))
        raise_match_error(L, m);
}

/* ---- captures -------------------------------------------------------------------------------- */

MAY_RAISE static void push_capture(lua_State *L, const lpat_t *m, int i, size_t s, size_t e)
{
    lpat_span_t span;
    lpat_error_t err = lpat_capture(m, i, s, e, &span);
    if (err != LPAT_E_NONE)
        luaL_error(L, "%s", lpat_error_message(err));
    if (span.position)
        lua_pushinteger(L, (lua_Integer)span.start + 1);
    else
        lua_pushlstring(L, m->src + span.start, span.len);
}

/* The captures, or the whole match [s, e) when there are none and whole is set. */
MAY_RAISE static int push_captures(lua_State *L, const lpat_t *m, bool whole, size_t s, size_t e)
{
    int n = (m->level == 0 && whole) ? 1 : m->level;
    luaL_checkstack(L, n, "too many captures"); /* gsub's buffer pieces sit below them */
    for (int i = 0; i < n; i++)
        push_capture(L, m, i, s, e);
    return n;
}

/* ---- find and match --------------------------------------------------------------------------- */

/* LuaJIT converts init with lj_num2int, a plain (int32_t) cast: on x86-64
 * NaN and values out of range become INT32_MIN (cvttsd2si), which C leaves
 * undefined, hence the explicit range test. */
static int32_t num_to_int32(lua_Number n)
{
    if (!(n > -2147483649.0 && n < 2147483648.0))
        return INT32_MIN;
    return (int32_t)n;
}

MAY_RAISE static int32_t opt_int32(lua_State *L, int idx, int32_t def)
{
    return lua_isnoneornil(L, idx) ? def : num_to_int32(luaL_checknumber(L, idx));
}

/* init (1-based, negative from the end) as a 0-based offset in [0, len]. */
static size_t start_offset(int32_t init, size_t len)
{
    int64_t start = init < 0 ? (int64_t)init + (int64_t)len : (int64_t)init - 1;
    if (start < 0)
        return 0;
    return (size_t)start > len ? len : (size_t)start;
}

MAY_RAISE static int find_plain(lua_State *L, const char *s, size_t ls, size_t init, const char *p,
                                size_t lp)
{
    size_t at;
    if (!lpat_plain_find(s, ls, init, p, lp, &at)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)at + 1);
    lua_pushinteger(L, (lua_Integer)(at + lp));
    return 2;
}

/* The pattern search of find and match. */
MAY_RAISE static int find_pattern(lua_State *L, bool find, const char *s, size_t ls, size_t init,
                                  const char *p, size_t lp)
{
    lpat_t m;
    budget_call_t bc;
    start_match(L, budget_of(L), &m, &bc, s, ls, p, lp);
    size_t start, end;
    lpat_result_t r = lpat_find(&m, init, &start, &end);
    if (r == LPAT_NOMATCH) {
        lua_pushnil(L);
        return 1;
    }
    if (r != LPAT_MATCH)
        return raise_match_error(L, &m);
    if (!find)
        return push_captures(L, &m, true, start, end);
    lua_pushinteger(L, (lua_Integer)start + 1);
    lua_pushinteger(L, (lua_Integer)end);
    return push_captures(L, &m, false, start, end) + 2;
}

MAY_RAISE static int find_aux(lua_State *L, bool find)
{
    size_t ls, lp;
    int top = lua_gettop(L); /* absent arguments cost no call */
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = top >= 3 ? start_offset(opt_int32(L, 3, 1), ls) : 0;
    if (find && ((top >= 4 && lua_toboolean(L, 4)) || !lpat_has_specials(p, lp)))
        return find_plain(L, s, ls, init, p, lp);
    return find_pattern(L, find, s, ls, init, p, lp);
}

MAY_RAISE static int l_find(lua_State *L)
{
    return find_aux(L, true);
}

MAY_RAISE static int l_match(lua_State *L)
{
    return find_aux(L, false);
}

/* ---- gmatch ------------------------------------------------------------------------------------ */

MAY_RAISE static int gmatch_next(lua_State *L)
{
    gmatch_state_t *st = own_upvalue(L, sizeof *st);
    if (lua_tolstring(L, lua_upvalueindex(2), NULL) != st->s ||
        lua_tolstring(L, lua_upvalueindex(3), NULL) != st->p)
        luaL_error(L, "gmatch iterator without its strings (tampered upvalue)"); /* they could be freed */
    lpat_t m;
    budget_call_t bc;
    start_match(L, &st->b, &m, &bc, st->s, st->ls, st->p, st->lp);
    size_t start, end;
    lpat_result_t r = lpat_scan(&m, st->pos, &start, &end);
    if (r == LPAT_NOMATCH)
        return 0;
    if (r != LPAT_MATCH)
        return raise_match_error(L, &m);
    st->pos = end == start ? end + 1 : end; /* an empty match moves on */
    return push_captures(L, &m, true, start, end);
}

MAY_RAISE static int l_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const ami_strpat_budget_t *b = budget_of(L);
    lua_settop(L, 2);
    gmatch_state_t *st = lua_newuserdata(L, sizeof *st);
    *st = (gmatch_state_t){.self = st, .b = *b, .s = s, .p = p, .ls = ls, .lp = lp, .pos = 0};
    lua_insert(L, 1);
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* ---- gsub ---------------------------------------------------------------------------------------- */

/* The replacement string (argument 3): %0-%9 captures, %x is x, a final %
 * adds the NUL LuaJIT reads past the end. */
MAY_RAISE static void add_template(lua_State *L, luaL_Buffer *b, lpat_t *m, size_t s, size_t e)
{
    size_t l;
    const char *t = lua_tolstring(L, 3, &l);
    charge_or_raise(L, m, l);
    for (size_t i = 0; i < l; i++) {
        if (t[i] != '%') {
            luaL_addchar(b, t[i]);
            continue;
        }
        char c = ++i < l ? t[i] : '\0';
        if (c < '0' || c > '9') {
            luaL_addchar(b, c);
        } else if (c == '0') {
            charge_or_raise(L, m, e - s);
            luaL_addlstring(b, m->src + s, e - s);
        } else {
            push_capture(L, m, c - '1', s, e);
            charge_or_raise(L, m, lua_objlen(L, -1));
            luaL_addvalue(b);
        }
    }
}

/* One match [s, e) replaced by argument 3 (string, number, table or function). */
MAY_RAISE static void add_value(lua_State *L, luaL_Buffer *b, lpat_t *m, size_t s, size_t e)
{
    switch (lua_type(L, 3)) {
    case LUA_TFUNCTION: {
        lua_pushvalue(L, 3);
        int n = push_captures(L, m, true, s, e);
        lua_call(L, n, 1);
        break;
    }
    case LUA_TTABLE:
        push_capture(L, m, 0, s, e);
        lua_gettable(L, 3);
        break;
    default:
        add_template(L, b, m, s, e);
        return;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, m->src + s, e - s); /* nil or false: keep the match */
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    }
    charge_or_raise(L, m, lua_objlen(L, -1));
    luaL_addvalue(b);
}

MAY_RAISE static int l_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int type = lua_type(L, 3);
    int max_n = (int)luaL_optinteger(L, 4, (lua_Integer)(int)(ls + 1));
    if (type != LUA_TNUMBER && type != LUA_TSTRING && type != LUA_TFUNCTION && type != LUA_TTABLE)
        luaL_argerror(L, 3, "string/function/table expected");
    lpat_t m;
    budget_call_t bc;
    start_match(L, budget_of(L), &m, &bc, src, ls, p, lp);
    bool anchor = lpat_take_anchor(&m);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t pos = 0;
    int n = 0;
    while (n < max_n) {
        /* LuaJIT tries each position in turn and copies the byte where no
         * match starts; lpat_scan finds the next start, the run is copied at once. */
        size_t start = pos, end;
        lpat_result_t r = anchor ? lpat_match_at(&m, pos, &end) : lpat_scan(&m, pos, &start, &end);
        if (r < 0)
            raise_match_error(L, &m);
        if (r == LPAT_NOMATCH)
            break;
        luaL_addlstring(&b, src + pos, start - pos);
        n++;
        add_value(L, &b, &m, start, end);
        pos = end;
        if (end == start) { /* an empty match: copy one byte and move on */
            if (pos == ls)
                break;
            luaL_addchar(&b, src[pos++]);
        }
        if (anchor)
            break;
    }
    luaL_addlstring(&b, src + pos, ls - pos);
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

/* ---- installation and the C entry ---------------------------------------------------------------- */

MAY_RAISE void ami_strpat_install(lua_State *L, int string_table_idx, const ami_strpat_budget_t *b)
{
    static const luaL_Reg fns[] = {
        {"find", l_find}, {"match", l_match}, {"gmatch", l_gmatch}, {"gsub", l_gsub}, {NULL, NULL},
    };
    int t = string_table_idx < 0 && string_table_idx > LUA_REGISTRYINDEX
                ? lua_gettop(L) + string_table_idx + 1
                : string_table_idx;
    budget_box_t *box = lua_newuserdata(L, sizeof *box);
    box->self = box;
    box->b = b ? *b : (ami_strpat_budget_t){NULL, NULL};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushstring(L, f->name);
        lua_pushvalue(L, -2);
        lua_pushcclosure(L, f->func, 1);
        lua_rawset(L, t);
    }
    lua_pop(L, 1);
}

int ami_strpat_match_budget(const char *s, size_t n, const char *pat, size_t plen,
                            uint64_t max_steps, const char **errmsg)
{
    size_t start, end;
    if (!lpat_has_specials(pat, plen))
        return lpat_plain_find(s, n, 0, pat, plen, &start) ? AMI_STRPAT_MATCH : AMI_STRPAT_NOMATCH;
    lpat_t m;
    lpat_init(&m, s, n, pat, plen);
    lpat_set_budget(&m, max_steps, NULL, NULL);
    lpat_result_t r = lpat_find(&m, 0, &start, &end);
    lpat_error_t err = r == LPAT_MATCH ? lpat_captures_check(&m) : m.error;
    if (err != LPAT_E_NONE && errmsg)
        *errmsg = lpat_error_message(err);
    if (err == LPAT_E_BUDGET)
        return AMI_STRPAT_OVERBUDGET;
    if (err != LPAT_E_NONE)
        return AMI_STRPAT_BADPATTERN;
    return r == LPAT_MATCH ? AMI_STRPAT_MATCH : AMI_STRPAT_NOMATCH;
}
