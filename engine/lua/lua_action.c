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

#include "correlation/registry.h"
#include "lua/lua_internal.h"
#include "protocol/writer.h"

/* The correlation registry refuses a completion event name it could not
 * keep whole (it could never match). */
#define COMPLETE_ON_MAX AMI_REGISTRY_NAME_MAX

typedef struct headers {
    ami_kv_t kv[AMI_WRITER_MAX_LINES];
    size_t n;
    int anchor; /* stack slot for a table keeping converted strings alive (nil until needed) */
} headers_t;

/* A number becomes its shortest text; NaN and infinities are no value
 * Asterisk understands, and a script that sends one has a bug to hear of. */
static const char *number_text(lua_State *L, int idx, headers_t *h, size_t *len)
{
    double d = lua_tonumber(L, idx);
    if (d != d || d - d != 0)
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
    return t == LUA_TNUMBER ? number_text(L, idx, h, len) : NULL;
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
                 "invalid: header %.64s must be a string, a finite number, a boolean or an array of those",
                 key);
        return false;
    }
    h->kv[h->n++] = (ami_kv_t){key, klen, v, vlen};
    return true;
}

/* An array value gives one line per element, in order. A table that is not
 * a proper array (a hole, or other keys) would lose values silently: refused. */
static bool array_length(lua_State *L, int t, size_t *n)
{
    size_t count = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return false;
        }
        double k = lua_tonumber(L, -1);
        if (k < 1 || k != (double)(size_t)k || k > AMI_WRITER_MAX_LINES) {
            lua_pop(L, 1);
            return false;
        }
        count++;
        if ((size_t)k > max)
            max = (size_t)k;
    }
    *n = count;
    return count == max;
}

static bool add_entry(lua_State *L, headers_t *h, const char *key, size_t klen, char *why,
                      size_t why_size)
{
    int v = lua_gettop(L);
    if (!lua_istable(L, v))
        return add_header(L, h, key, klen, v, why, why_size);
    size_t n;
    if (!array_length(L, v, &n)) {
        snprintf(why, why_size,
                 "invalid: header %.64s is a table but not an array of values 1..n without holes "
                 "(nil inside it would drop lines silently)", key);
        return false;
    }
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

/* opts: raw reads (no metamethod of the script's table runs here); every
 * problem is an error value. */
static bool parse_opts(lua_State *L, int idx, ami_action_req_t *req, char *why, size_t why_size)
{
    if (lua_isnoneornil(L, idx))
        return true;
    if (!lua_istable(L, idx)) {
        snprintf(why, why_size, "ami.action: opts must be a table ({timeout = ms, ...})");
        return false;
    }
    lua_pushliteral(L, "timeout");
    lua_rawget(L, idx);
    double ms;
    if (!lua_isnil(L, -1) && !arg_number(L, -1, "ami.action", "opts.timeout", &RANGE_TIMEOUT_MS, &ms, why, why_size))
        return false;
    if (!lua_isnil(L, -1))
        req->timeout_ms = (uint32_t)ms;
    lua_pushliteral(L, "strategy");
    lua_rawget(L, idx);
    if (!lua_isnil(L, -1)) {
        static const char *const names[] = {"auto", "single", "list", "command", "event"};
        const char *given = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        size_t i = 0;
        while (i < 5 && strcmp(names[i], given) != 0)
            i++;
        if (i == 5) {
            snprintf(why, why_size, "ami.action: opts.strategy must be \"auto\", \"single\", \"list\", "
                                    "\"command\" or \"event\"");
            return false;
        }
        req->strategy = (ami_strategy_t)i;
    }
    lua_pushliteral(L, "complete_on");
    lua_rawget(L, idx);
    if (!lua_isnil(L, -1)) {
        size_t n;
        req->completion_event = arg_text(L, -1, "ami.action", "opts.complete_on", &n, why, why_size);
        if (!req->completion_event)
            return false;
        if (n == 0 || n > COMPLETE_ON_MAX) {
            snprintf(why, why_size, "ami.action: opts.complete_on must be an event name of 1 to %d bytes",
                     COMPLETE_ON_MAX);
            return false;
        }
        req->strategy = AMI_STRATEGY_EVENT; /* kept alive by opts */
    }
    if (req->strategy == AMI_STRATEGY_EVENT && !req->completion_event) {
        snprintf(why, why_size, "ami.action: opts.strategy \"event\" needs opts.complete_on = \"EventName\"");
        return false;
    }
    return true;
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

/* A result's keys, interned once per script, and its metatable: registry
 * refs (a result per action: the keys are not hashed again for each, and
 * both ways of building one below reach them from any thread of the
 * state). */
enum { RK_FINAL = 0, RK_RESPONSE, RK_OK, RK_ITEMS, RK_TRUNCATED, RK_DROPPED, RK_MT, RK_COUNT };

_Static_assert(RK_COUNT == sizeof((script_t *)0)->result_refs / sizeof(int), "one ref per key and the metatable");

static const char *const result_keys[RK_MT] = {"final", "response", "ok", "items", "truncated", "dropped"};

static void push_ref(lua_State *L, const script_t *sc, int k)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->result_refs[k]);
}

/* The final message's object is made first and the table takes its stack
 * slot, so final and response (the same object for a single response)
 * need no lookup; each key is pushed before its value. L: any thread of
 * the script's state. */
static void push_result(lua_State *L, wait_t *w, const ami_pending_note_t *n)
{
    script_t *sc = w->co->sc;
    bool list = w->items_ref != LUA_NOREF || n->strategy == AMI_STRATEGY_LIST || n->truncated;
    int final = 0;
    if (n->msg) {
        event_push(sc, L, n->msg, w->server);
        final = lua_gettop(L);
    }
    lua_createtable(L, 0, list ? 6 : 3);
    int t = lua_gettop(L);
    if (final) {
        push_ref(L, sc, RK_FINAL);
        lua_pushvalue(L, final);
        lua_rawset(L, t);
    }
    push_ref(L, sc, RK_RESPONSE);
    if (w->response_ref != LUA_NOREF)
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->response_ref);
    else if (final)
        lua_pushvalue(L, final);
    else
        lua_pushnil(L);
    lua_rawset(L, t);
    if (list) {
        push_ref(L, sc, RK_ITEMS);
        push_items(L, w); /* list fields only where there is a list: results are per action */
        lua_rawset(L, t);
        push_ref(L, sc, RK_TRUNCATED);
        lua_pushboolean(L, n->truncated);
        lua_rawset(L, t);
        push_ref(L, sc, RK_DROPPED);
        lua_pushinteger(L, (lua_Integer)n->dropped);
        lua_rawset(L, t);
    }
    push_ref(L, sc, RK_OK);
    lua_pushboolean(L, n->signal == AMI_PENDING_DONE);
    lua_rawset(L, t);
    push_ref(L, sc, RK_MT);
    lua_setmetatable(L, t);
    if (final)
        lua_replace(L, final);
}

/* What the coroutine gets back, pushed on L (a->nres values). */
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
    script_t *sc = w->co->sc;
    switch (n->signal) {
    case AMI_PENDING_RESPONSE:
        event_push(sc, L, n->msg, w->server);
        w->response_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        return 0;
    case AMI_PENDING_ITEM:
        if (w->items_ref == LUA_NOREF) {
            lua_newtable(L);
            w->items_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->items_ref);
        event_push(sc, L, n->msg, w->server);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 1);
        return 0;
    default:
        push_final(L, a);
        lua_xmove(L, w->co->L, a->nres);
        return 0;
    }
}

/* May a successful action's result be built straight onto its coroutine,
 * without the protected call (lua_pcall, its entry, lua_xmove: ~350 of the
 * ~8,700 instructions a Ping round trip from Lua costs)? Nothing there may
 * raise, and nothing does when:
 *  - the script is outside strict mode (not inside one of its runs or the
 *    engine's protected calls), where its allocator refuses nothing, and
 *    the result fits within its memory limit with room to spare
 *    (direct_room_for, as for events), so the limit holds as on the
 *    protected path (near it, that path builds the result under the limit,
 *    or the script gets "nomem" as always);
 *  - a collection step runs no Lua code (scripts get no finalizers, the
 *    engine's objects have none: lua_direct.c);
 *  - the coroutine parked in sched_yield_for from the C function ami.action:
 *    LuaJIT gave that function LUA_MINSTACK free slots and lua_yield drops
 *    its frame, so the handful of pushes below fit without growing it.
 * Failures (errors, timeouts, disconnects: rare, and their text is
 * formatted) keep the protected path. */
static bool direct_ready(const script_t *sc, const ami_pending_note_t *n)
{
    return n->signal == AMI_PENDING_DONE && direct_room_for(sc, n->msg);
}

static void on_note(void *ud, const ami_pending_note_t *n)
{
    wait_t *w = ud;
    script_t *sc = w->co->sc;
    bool final = n->signal == AMI_PENDING_DONE || n->signal == AMI_PENDING_FAILED;
    if (final)
        w->action_live = false;
    if (w->state != WAIT_ARMED)
        return; /* cannot happen: unarmed waits cancel their action */
    cb_args_t a = {w, n, 0};
    if (direct_ready(sc, n)) {
        push_final(w->co->L, &a);
        sched_wake(w, a.nres);
        return;
    }
    int top = lua_gettop(sc->L);
    if (script_pcall_ref(sc, sc->note_ref, &a) != 0) {
        log_lua_error(sc->gen->rt, "action result lost", w->co->label, sc->L, lua_tostring(sc->L, -1));
        lua_settop(sc->L, top);
        if (!final)
            return;
        lua_settop(w->co->L, 0);
        lua_pushnil(w->co->L);
        lua_pushliteral(w->co->L, "nomem: the action's result could not be built (the script's memory_limit)");
        a.nres = 2;
    }
    lua_settop(sc->L, top);
    if (final)
        sched_wake(w, a.nres);
}

/* ---- ami.action / ami.collect ------------------------------------------------------------- */

/* Everything that can be refused is checked before anything is sent. */
static bool build_request(lua_State *L, bool collect, ami_action_req_t *req, const char **server,
                          headers_t *h, char *why, size_t why_size)
{
    const char *fn = collect ? "ami.collect" : "ami.action";
    *server = NULL;
    if (!lua_isnil(L, 1) && !(*server = arg_text(L, 1, fn, "the server key", NULL, why, why_size)))
        return false;
    size_t nlen;
    if (!(req->name = arg_text(L, 2, fn, "the action name", &nlen, why, why_size)))
        return false;
    if (!lua_isnil(L, 3) && !lua_istable(L, 3)) {
        snprintf(why, why_size, "%s: headers must be a table ({Key = \"value\"}) or nil", fn);
        return false;
    }
    if (!parse_opts(L, 4, req, why, why_size))
        return false;
    if (collect && req->strategy == AMI_STRATEGY_AUTO)
        req->strategy = AMI_STRATEGY_LIST;
    if (!collect_headers(L, 3, h, why, why_size))
        return false;
    req->hdrs = h->kv;
    req->nhdrs = h->n;
    return true;
}

static int send_action(lua_State *L, bool collect)
{
    co_t *co = sched_require_co(L, collect ? "ami.collect" : "ami.action");
    ami_lua_runtime_t *rt = co->sc->gen->rt;
    lua_settop(L, 4); /* absent headers/opts become nil: indices 1..4 are fixed from here */
    ami_action_req_t req = {0};
    const char *server;
    headers_t h; /* pointers into Lua strings only: nothing to free if anything raises */
    char why[240];
    if (!build_request(L, collect, &req, &server, &h, why, sizeof why)) {
        lua_pushnil(L);
        if (strncmp(why, "invalid: ", 9) == 0 || strncmp(why, "limit: ", 7) == 0)
            lua_pushstring(L, why);
        else
            lua_pushfstring(L, "invalid: %s", why);
        return 2;
    }
    if (!lua_ha_may_act(rt, server))
        return lua_ha_refuse(L, rt, server);
    wait_t *w = sched_wait_new(co, WAIT_ACTION);
    if (!w)
        return luaL_error(L, "out of memory in ami.action");
    w->collect = collect;
    ami_err_t err;
    if (ami_client_send(rt->client, server, &req, on_note, w, &w->action, &err) < 0) {
        sched_wait_cancel(w);
        lua_pushnil(L);
        push_error(L, err.code, err.msg);
        return 2;
    }
    w->action_live = true;
    w->server = ami_client_server_key(rt->client, w->action.server);
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

/* res.X: a method (get, all, headers, totable; upvalue 1), else the final
 * message's header, then the response's. */
static int result_index(lua_State *L)
{
    if (!lua_istable(L, 1) || lua_type(L, 2) != LUA_TSTRING)
        return 0;
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    static const char *const parts[] = {"final", "response"};
    for (int i = 0; i < 2; i++) {
        lua_pushstring(L, parts[i]);
        lua_rawget(L, 1);
        if (lua_type(L, -1) == LUA_TUSERDATA) {
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

/* A result reads like the answer: the event methods over final, then response. */
static const char result_methods_src[] =
    "local rawget, type, pairs, select = ...\n"
    "local function parts(res)\n"
    "  if type(res) ~= 'table' then error('bad argument #1 (action result expected)', 3) end\n"
    "  local f, r = rawget(res, 'final'), rawget(res, 'response')\n"
    "  if r == f then r = nil end\n"
    "  return f, r\n"
    "end\n"
    "local M = {}\n"
    "function M.get(res, key)\n"
    "  local f, r = parts(res)\n"
    "  local v = f and f:get(key)\n"
    "  if v == nil and r then v = r:get(key) end\n"
    "  return v\n"
    "end\n"
    "function M.all(res, key)\n"
    "  local f, r = parts(res)\n"
    "  local t = f and f:all(key) or {}\n"
    "  if #t == 0 and r then t = r:all(key) end\n"
    "  return t\n"
    "end\n"
    "function M.headers(res)\n"
    "  local f, r = parts(res)\n"
    "  local list = {}\n"
    "  for _, m in pairs({f or false, r or false}) do\n"
    "    if m then for k, v in m:headers() do list[#list + 1] = k; list[#list + 1] = v end end\n"
    "  end\n"
    "  local i = -1\n"
    "  return function() i = i + 2; if list[i] then return list[i], list[i + 1] end end\n"
    "end\n"
    "function M.totable(res)\n"
    "  local f, r = parts(res)\n"
    "  local t = r and r:totable() or {}\n"
    "  if f then for k, v in pairs(f:totable()) do t[k] = v end end\n"
    "  return t\n"
    "end\n"
    "return M\n";

MAY_RAISE static void push_result_methods(lua_State *L)
{
    if (luaL_loadbuffer(L, result_methods_src, sizeof result_methods_src - 1, "=ami.result") != 0)
        lua_error(L);
    lua_getglobal(L, "rawget");
    lua_getglobal(L, "type");
    lua_getglobal(L, "pairs");
    lua_getglobal(L, "select");
    lua_call(L, 4, 1);
}

void ami_lua_inject_action(lua_State *L, script_t *sc)
{
    for (int i = 0; i < RK_MT; i++) {
        lua_pushstring(L, result_keys[i]);
        sc->result_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_newtable(L);
    push_result_methods(L);
    lua_pushcclosure(L, result_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "ami.result");
    lua_setfield(L, -2, "__metatable");
    sc->result_refs[RK_MT] = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, on_note_protected);
    sc->note_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    static const luaL_Reg fns[] = {{"action", l_action}, {"collect", l_collect}, {NULL, NULL}};
    luaL_register(L, NULL, fns);
}
