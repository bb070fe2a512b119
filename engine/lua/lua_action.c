/*
 * ami.action and ami.collect: send an action, yield, resume on the answer.
 *
 *   local res, err = ami.action("pbx1", "Setvar",
 *       {Channel = ch, Variable = "SEEN", Value = "1"}, {timeout = 2000})
 *   local items, res = ami.collect("pbx1", "CoreShowChannels")
 *
 * headers: {Key = "value" | number | boolean | {"v1", "v2"} (repeated lines)}
 * opts:    {timeout = ms, strategy = "auto"|"single"|"list"|"command"|"event",
 *           complete_on = "EventName" (implies strategy "event")}
 *
 * Success: a result object. res.X reads header X of the final message (the
 * completion event, the list's Complete event, or the response), then of
 * the response; res.response, res.final, res.items (lists), res.truncated,
 * res.dropped are fields. Failure: nil, "kind: message" [, res] where res
 * is there when the server answered (Response: Error) or items arrived.
 * An invalid request, an unknown or disconnected server, backpressure or
 * too many pending actions fail at once, without yielding.
 */
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "protocol/writer.h"

typedef struct headers {
    ami_kv_t kv[AMI_WRITER_MAX_LINES];
    size_t n;
    int anchor; /* stack slot for a table keeping converted strings alive (nil until needed) */
} headers_t;

static const char *value_text(lua_State *L, int idx, headers_t *h, size_t *len)
{
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING)
        return lua_tolstring(L, idx, len);
    if (t == LUA_TBOOLEAN) {
        bool b = lua_toboolean(L, idx);
        *len = b ? 4 : 5;
        return b ? "true" : "false";
    }
    if (t != LUA_TNUMBER)
        return NULL;
    if (lua_isnil(L, h->anchor)) { /* the first conversion: make the table */
        lua_newtable(L);
        lua_replace(L, h->anchor);
    }
    lua_pushvalue(L, idx);
    const char *s = lua_tolstring(L, -1, len);
    lua_rawseti(L, h->anchor, (int)lua_objlen(L, h->anchor) + 1);
    return s;
}

/* false (and *why) when the headers cannot be sent. The stack may be left
 * with extra values: the caller returns its results from the top. */
static bool add_header(lua_State *L, headers_t *h, const char *key, size_t klen, int vidx,
                       char *why, size_t why_size)
{
    if (h->n >= AMI_WRITER_MAX_LINES) {
        snprintf(why, why_size, "limit: more than %d header lines in one action", AMI_WRITER_MAX_LINES);
        return false;
    }
    size_t vlen;
    const char *v = value_text(L, vidx, h, &vlen);
    if (!v) {
        snprintf(why, why_size,
                 "invalid: header %.64s must be a string, number, boolean or array of those", key);
        return false;
    }
    h->kv[h->n++] = (ami_kv_t){key, klen, v, vlen};
    return true;
}

static bool add_entry(lua_State *L, headers_t *h, const char *key, size_t klen, char *why,
                      size_t why_size)
{
    int v = lua_gettop(L);
    if (!lua_istable(L, v))
        return add_header(L, h, key, klen, v, why, why_size);
    size_t n = lua_objlen(L, v);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, v, (int)i);
        if (!add_header(L, h, key, klen, lua_gettop(L), why, why_size))
            return false;
        lua_pop(L, 1);
    }
    return true;
}

static bool collect_headers(lua_State *L, int t, headers_t *h, char *why, size_t why_size)
{
    lua_pushnil(L); /* most headers are strings: the anchor table is made only if needed */
    h->anchor = lua_gettop(L);
    h->n = 0;
    if (lua_isnoneornil(L, t))
        return true;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(why, why_size, "invalid: header names must be strings");
            return false;
        }
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen);
        if (!add_entry(L, h, key, klen, why, why_size))
            return false;
        lua_pop(L, 1);
    }
    return true;
}

MAY_RAISE static void parse_opts(lua_State *L, int idx, ami_action_req_t *req)
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "timeout");
    if (!lua_isnil(L, -1)) {
        lua_Number ms = lua_tonumber(L, -1);
        if (ms <= 0 || ms > 86400000)
            luaL_error(L, "opts.timeout must be milliseconds between 1 and 86400000");
        req->timeout_ms = (uint32_t)ms;
    }
    lua_getfield(L, idx, "strategy");
    if (!lua_isnil(L, -1)) {
        static const char *const names[] = {"auto", "single", "list", "command", "event", NULL};
        req->strategy = (ami_strategy_t)luaL_checkoption(L, -1, NULL, names);
    }
    lua_getfield(L, idx, "complete_on");
    if (!lua_isnil(L, -1)) {
        req->completion_event = luaL_checkstring(L, -1); /* kept alive by opts */
        req->strategy = AMI_STRATEGY_EVENT;
    }
    lua_pop(L, 3);
    if (req->strategy == AMI_STRATEGY_EVENT && !req->completion_event)
        luaL_error(L, "opts.strategy \"event\" needs opts.complete_on = \"EventName\"");
}

/* ---- results ------------------------------------------------------------------------ */

typedef struct cb_args {
    wait_t *w;
    const ami_pending_note_t *n;
    int nres;
} cb_args_t;

static void push_items(lua_State *L, wait_t *w)
{
    if (w->items_ref == LUA_NOREF)
        lua_newtable(L);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->items_ref);
}

static void push_result(lua_State *L, wait_t *w, const ami_pending_note_t *n)
{
    gen_t *g = w->co->gen;
    lua_createtable(L, 0, 6);
    int t = lua_gettop(L);
    if (n->msg) {
        event_push(g, L, n->msg, w->server);
        lua_setfield(L, t, "final");
    }
    if (w->response_ref != LUA_NOREF)
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->response_ref);
    else
        lua_getfield(L, t, "final");
    lua_setfield(L, t, "response");
    if (w->items_ref != LUA_NOREF || n->strategy == AMI_STRATEGY_LIST || n->truncated) {
        push_items(L, w); /* list fields only where there is a list: results are per action */
        lua_setfield(L, t, "items");
        lua_pushboolean(L, n->truncated);
        lua_setfield(L, t, "truncated");
        lua_pushinteger(L, (lua_Integer)n->dropped);
        lua_setfield(L, t, "dropped");
    }
    lua_pushboolean(L, n->signal == AMI_PENDING_DONE);
    lua_setfield(L, t, "ok");
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->result_mt_ref);
    lua_setmetatable(L, t);
}

static void push_final(lua_State *L, cb_args_t *a)
{
    wait_t *w = a->w;
    const ami_pending_note_t *n = a->n;
    if (n->signal == AMI_PENDING_DONE) {
        if (w->collect) {
            push_items(L, w);
            a->nres = 2;
        } else {
            a->nres = 1;
        }
        push_result(L, w, n);
        return;
    }
    lua_pushnil(L);
    push_error(L, n->status, n->reason ? n->reason : ami_status_name(n->status));
    a->nres = 2;
    if (n->msg || w->items_ref != LUA_NOREF) {
        push_result(L, w, n);
        a->nres = 3;
    }
}

static int on_note_protected(lua_State *L)
{
    cb_args_t *a = lua_touserdata(L, 1);
    lua_pop(L, 1);
    wait_t *w = a->w;
    const ami_pending_note_t *n = a->n;
    gen_t *g = w->co->gen;
    switch (n->signal) {
    case AMI_PENDING_RESPONSE:
        event_push(g, L, n->msg, w->server);
        w->response_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        return 0;
    case AMI_PENDING_ITEM:
        if (w->items_ref == LUA_NOREF) {
            lua_newtable(L);
            w->items_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->items_ref);
        event_push(g, L, n->msg, w->server);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 1);
        return 0;
    default:
        push_final(L, a);
        lua_xmove(L, w->co->L, a->nres);
        return 0;
    }
}

static void on_note(void *ud, const ami_pending_note_t *n)
{
    wait_t *w = ud;
    gen_t *g = w->co->gen;
    bool final = n->signal == AMI_PENDING_DONE || n->signal == AMI_PENDING_FAILED;
    if (final)
        w->action_live = false;
    if (w->state != WAIT_ARMED)
        return; /* cannot happen: unarmed waits cancel their action */
    cb_args_t a = {w, n, 0};
    int top = lua_gettop(g->L);
    if (gen_pcall_ref(g->L, g->note_ref, &a) != 0) {
        log_lua_error(g->rt, "action result lost", w->co->label, g->L, lua_tostring(g->L, -1));
        lua_settop(g->L, top);
        if (!final)
            return;
        lua_pushnil(w->co->L);
        lua_pushliteral(w->co->L, "nomem: the action's result could not be built");
        a.nres = 2;
    }
    lua_settop(g->L, top);
    if (final)
        sched_wake(w, a.nres);
}

/* ---- ami.action / ami.collect ------------------------------------------------------------- */

static int send_action(lua_State *L, bool collect)
{
    co_t *co = sched_require_co(L, collect ? "ami.collect" : "ami.action");
    gen_t *g = co->gen;
    lua_settop(L, 4); /* absent headers/opts become nil: indices 1..4 are fixed from here */
    const char *server = luaL_optstring(L, 1, NULL);
    ami_action_req_t req = {.name = luaL_checkstring(L, 2)};
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    parse_opts(L, 4, &req);
    if (collect && req.strategy == AMI_STRATEGY_AUTO)
        req.strategy = AMI_STRATEGY_LIST;
    headers_t hs; /* pointers into Lua strings only: nothing to free if anything raises */
    headers_t *h = &hs;
    char why[160];
    if (!collect_headers(L, 3, h, why, sizeof why)) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    req.hdrs = h->kv;
    req.nhdrs = h->n;
    if (!lua_ha_may_act(g->rt, server))
        return lua_ha_refuse(L, g->rt, server);
    wait_t *w = sched_wait_new(co, WAIT_ACTION);
    if (!w)
        return luaL_error(L, "out of memory in ami.action");
    w->collect = collect;
    ami_err_t err;
    if (ami_client_send(g->rt->client, server, &req, on_note, w, &w->action, &err) < 0) {
        sched_wait_cancel(w);
        lua_pushnil(L);
        push_error(L, err.code, err.msg);
        return 2;
    }
    w->action_live = true;
    w->server = ami_client_server_key(g->rt->client, w->action.server);
    return sched_yield_for(L, w);
}

static int l_action(lua_State *L)
{
    return send_action(L, false);
}

static int l_collect(lua_State *L)
{
    return send_action(L, true);
}

/* res.X: the final message's header, then the response's. */
static int result_index(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING)
        return 0;
    static const char *const parts[] = {"final", "response"};
    for (int i = 0; i < 2; i++) {
        lua_pushstring(L, parts[i]);
        lua_rawget(L, 1);
        if (lua_isuserdata(L, -1)) {
            lua_pushvalue(L, 2);
            lua_gettable(L, -2);
            if (!lua_isnil(L, -1))
                return 1;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 0;
}

void ami_lua_inject_action(lua_State *L, gen_t *g)
{
    lua_pushcfunction(L, on_note_protected);
    g->note_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_pushcfunction(L, result_index);
    lua_setfield(L, -2, "__index");
    g->result_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    static const luaL_Reg fns[] = {{"action", l_action}, {"collect", l_collect}, {NULL, NULL}};
    luaL_register(L, NULL, fns);
}
