/*
 * ami.http: HTTP requests from scripts through the engine's HTTP client
 * (engine/httpc). The calling coroutine yields until the answer; the loop
 * never waits.
 *
 *   local res, err = ami.http.request{method = "POST", url = "https://crm.example/calls",
 *       headers = {["Content-Type"] = "application/json"}, body = ami.json.encode(rec),
 *       timeout = 5000}
 *   local res, err = ami.http.get(url [, {headers = ..., timeout = ...}])
 *   local res, err = ami.http.post(url, body [, {headers = ..., timeout = ...}])
 *
 * res: status (number), headers (lower-cased names; a header sent more than
 * once is an array of its values in order), body (string), url (after
 * redirects). A 4xx or 5xx status is an answer, not an error. Failure:
 * nil, "kind: message" with kind one of disabled, invalid, limit, refused,
 * too_large, timeout, dns, connect, tls, redirect, protocol, io, nomem.
 * Every value is checked (types, numbers that are NaN, infinite, negative,
 * fractional or too large; CR/LF/NUL in headers) and refused as invalid.
 *
 * Requests count against http.max_per_script by script (each script has
 * its own Lua state; its file name is the owner). A coroutine cancelled while it waits
 * (reload grace over, drain) takes its transfer down at once through the
 * wait's cancel hook: nothing resumes a coroutine that is gone.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "httpc/httpc.h"
#include "lua/lua_internal.h"

typedef struct req_build {
    ami_httpc_request_t req;
    ami_httpc_header_t hs[AMI_HTTPC_MAX_HEADERS + 1];
    char why[240];
} req_build_t;

static const char *const REQUEST_FIELDS[] = {"method", "url", "headers", "body", "timeout", NULL};
static const char *const OPTION_FIELDS[] = {"headers", "timeout", NULL};

/* ---- reading the request ------------------------------------------------------------ */

static bool invalid(req_build_t *b, const char *fmt, const char *a, const char *c)
{
    char msg[200];
    snprintf(msg, sizeof msg, fmt, a, c);
    snprintf(b->why, sizeof b->why, "invalid: %s", msg);
    return false;
}

/* Every key of t is one of known (a typo is an error, not a silent default). */
static bool check_fields(lua_State *L, int t, const char *const *known, const char *what, req_build_t *b)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return invalid(b, "%s fields are named by strings%s", what, "");
        }
        const char *key = lua_tostring(L, -1);
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(key, *k) == 0;
        if (!ok) {
            char name[48];
            snprintf(name, sizeof name, "%s", key);
            lua_pop(L, 1);
            return invalid(b, "unknown field \"%s\" in the %s", name, what);
        }
    }
    return true;
}

static void raw_field(lua_State *L, int t, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, t);
}

/* An optional string field, left on the stack (it keeps the string alive). */
static bool string_field(lua_State *L, int t, const char *key, bool required, const char **out, size_t *len,
                         req_build_t *b)
{
    raw_field(L, t, key);
    if (lua_isnil(L, -1) && !required)
        return true;
    if (lua_type(L, -1) != LUA_TSTRING)
        return invalid(b, "%s must be a string, got %s", key, luaL_typename(L, -1));
    *out = lua_tolstring(L, -1, len);
    return true;
}

static bool timeout_field(lua_State *L, int t, uint32_t max_ms, req_build_t *b)
{
    raw_field(L, t, "timeout");
    if (lua_isnil(L, -1))
        return true;
    const num_range_t range = {1, max_ms, true, "milliseconds, at most http.timeout_ms"};
    double ms;
    char why[200];
    if (arg_number(L, -1, "ami.http", "timeout", &range, &ms, why, sizeof why)) {
        b->req.timeout_ms = (uint32_t)ms;
        return true;
    }
    return invalid(b, "%s%s", why, "");
}

/* A header value: a string, or a finite number (converted on the stack). */
static bool header_value(lua_State *L, int v, const char *name, ami_httpc_header_t *hd, req_build_t *b)
{
    int type = lua_type(L, v);
    if (type == LUA_TNUMBER && !isfinite(lua_tonumber(L, v)))
        return invalid(b, "header %s is not a finite number%s", name, "");
    if (type != LUA_TSTRING && type != LUA_TNUMBER)
        return invalid(b, "header %s must be a string, a number or an array of those, got %s", name,
                       luaL_typename(L, v));
    if (type == LUA_TNUMBER) {
        luaL_checkstack(L, 2, "ami.http: too many header values");
        lua_pushvalue(L, v);
        v = lua_gettop(L); /* stays on the stack while the request is built */
    }
    hd->value = lua_tolstring(L, v, &hd->value_len);
    return true;
}

/* Past AMI_HTTPC_MAX_HEADERS only the count grows (to MAX + 1): the client
 * refuses it as too_large and counts it. */
static bool add_header(lua_State *L, int v, const char *name, size_t name_len, req_build_t *b)
{
    if (b->req.nheaders > AMI_HTTPC_MAX_HEADERS)
        return true;
    ami_httpc_header_t *hd = &b->hs[b->req.nheaders];
    hd->name = name;
    hd->name_len = name_len;
    if (!header_value(L, v, name, hd, b))
        return false;
    b->req.nheaders++;
    return true;
}

/* Keys and values stay on the stack below the iteration (they keep the
 * strings alive), so each round pushes the key again for lua_next. */
static bool headers_field(lua_State *L, int t, req_build_t *b)
{
    raw_field(L, t, "headers");
    int hs = lua_gettop(L);
    if (lua_isnil(L, hs))
        return true;
    if (!lua_istable(L, hs))
        return invalid(b, "headers must be a table {Name = \"value\"}, got %s%s", luaL_typename(L, hs), "");
    lua_pushnil(L);
    while (b->req.nheaders <= AMI_HTTPC_MAX_HEADERS && lua_next(L, hs)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return invalid(b, "header names must be strings%s%s", "", "");
        size_t name_len;
        const char *name = lua_tolstring(L, -2, &name_len);
        int v = lua_gettop(L);
        if (lua_istable(L, v)) { /* a repeated header: an array of values */
            size_t n = lua_objlen(L, v);
            for (size_t i = 1; i <= n && b->req.nheaders <= AMI_HTTPC_MAX_HEADERS; i++) {
                luaL_checkstack(L, 4, "ami.http: too many header values");
                lua_rawgeti(L, v, (int)i);
                if (!add_header(L, lua_gettop(L), name, name_len, b))
                    return false;
            }
        } else if (!add_header(L, v, name, name_len, b)) {
            return false;
        }
        luaL_checkstack(L, 4, "ami.http: too many header values");
        lua_pushvalue(L, v - 1);
    }
    return true;
}

/* The request table at t into b; values it points to stay on L's stack. */
static bool read_request(lua_State *L, int t, uint32_t max_ms, req_build_t *b)
{
    memset(&b->req, 0, sizeof b->req);
    b->req.headers = b->hs;
    size_t mlen;
    return check_fields(L, t, REQUEST_FIELDS, "request", b) &&
           string_field(L, t, "method", false, &b->req.method, &mlen, b) &&
           string_field(L, t, "url", true, &b->req.url, &b->req.url_len, b) &&
           string_field(L, t, "body", false, &b->req.body, &b->req.body_len, b) &&
           timeout_field(L, t, max_ms, b) && headers_field(L, t, b);
}

/* ---- the answer ---------------------------------------------------------------------- */

static void push_headers(lua_State *L, const ami_httpc_response_t *res)
{
    lua_createtable(L, 0, (int)res->nheaders);
    for (size_t i = 0; i < res->nheaders; i++) {
        const ami_httpc_header_t *h = &res->headers[i];
        lua_pushlstring(L, h->name, h->name_len);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len);
        } else if (lua_isstring(L, -1)) { /* the second one: make the array */
            lua_createtable(L, 2, 0);
            lua_insert(L, -2);
            lua_rawseti(L, -2, 1);
            lua_pushlstring(L, h->value, h->value_len);
            lua_rawseti(L, -2, 2);
        } else {
            lua_pushlstring(L, h->value, h->value_len);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        }
        lua_rawset(L, -3);
    }
}

typedef struct answer {
    wait_t *w;
    const ami_httpc_response_t *res;
    int nres;
} answer_t;

/* Runs protected in the generation's main state; moves the results onto
 * the waiting coroutine. */
static int build_answer(lua_State *L)
{
    answer_t *a = lua_touserdata(L, 1);
    const ami_httpc_response_t *res = a->res;
    if (res->err.kind != AMI_HTTPC_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", ami_httpc_kind_name(res->err.kind), res->err.msg);
        a->nres = 2;
    } else {
        lua_createtable(L, 0, 4);
        lua_pushnumber(L, (lua_Number)res->status);
        lua_setfield(L, -2, "status");
        push_headers(L, res);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, res->body, res->body_len);
        lua_setfield(L, -2, "body");
        lua_pushstring(L, res->url ? res->url : "");
        lua_setfield(L, -2, "url");
        a->nres = 1;
    }
    lua_xmove(L, a->w->co->L, a->nres);
    return 0;
}

static void on_answer(void *ud, const ami_httpc_response_t *res)
{
    wait_t *w = ud;
    w->ext = NULL; /* the client is done with the transfer */
    w->cancel = NULL;
    if (w->state != WAIT_ARMED)
        return; /* cannot happen: a wait that never armed is cancelled with its transfer */
    script_t *sc = w->co->sc;
    answer_t a = {w, res, 0};
    int top = lua_gettop(sc->L);
    script_strict_enter(sc); /* the answer counts against the script's memory limit */
    int rc = lua_cpcall(sc->L, build_answer, &a);
    script_strict_leave(sc);
    if (rc != 0) {
        log_lua_error(sc->gen->rt, "http answer lost", w->co->label, sc->L, lua_tostring(sc->L, -1));
        lua_pushnil(w->co->L);
        lua_pushliteral(w->co->L, "nomem: the answer could not be built (the script's memory_limit)");
        a.nres = 2;
    }
    lua_settop(sc->L, top);
    sched_wake(w, a.nres);
}

static void cancel_transfer(wait_t *w)
{
    ami_httpc_cancel(w->co->sc->gen->rt->cfg.http, w->ext);
    w->ext = NULL;
}

/* ---- ami.http.request / get / post ------------------------------------------------------ */

static int fail_with(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

/* The request table is at index t. */
static int start_request(lua_State *L, int t, const char *fn_name)
{
    co_t *co = sched_require_co(L, fn_name);
    ami_httpc_t *h = co->sc->gen->rt->cfg.http;
    if (!h)
        return fail_with(L, "disabled: ami.http is off; add an http = { ... } section to the engine's config");
    req_build_t b;
    if (!read_request(L, t, ami_httpc_config(h)->timeout_ms, &b)) {
        ami_httpc_note_invalid(h);
        return fail_with(L, b.why);
    }
    b.req.owner = co->sc->name;
    wait_t *w = sched_wait_new(co, WAIT_HTTP);
    if (!w)
        return fail_with(L, "nomem: out of memory in ami.http.request");
    ami_httpc_err_t err;
    ami_httpc_transfer_t *tr = ami_httpc_start(h, &b.req, on_answer, w, &err);
    if (!tr) {
        sched_wait_cancel(w);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", ami_httpc_kind_name(err.kind), err.msg);
        return 2;
    }
    w->ext = tr;
    w->cancel = cancel_transfer;
    return sched_yield_for(L, w);
}

static int l_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    return start_request(L, 1, "ami.http.request");
}

/* get(url, opts) and post(url, body, opts): a request table made here. */
static int request_from_args(lua_State *L, const char *method, int opts_idx, const char *fn_name)
{
    lua_settop(L, opts_idx);
    if (!lua_isnil(L, opts_idx) && !lua_istable(L, opts_idx))
        return fail_with(L, "invalid: options must be a table {headers = ..., timeout = ...}");
    req_build_t b;
    if (lua_istable(L, opts_idx) && !check_fields(L, opts_idx, OPTION_FIELDS, "options", &b))
        return fail_with(L, b.why);
    lua_createtable(L, 0, 5);
    int t = lua_gettop(L);
    lua_pushstring(L, method);
    lua_setfield(L, t, "method");
    lua_pushvalue(L, 1);
    lua_setfield(L, t, "url");
    if (opts_idx == 3) {
        lua_pushvalue(L, 2);
        lua_setfield(L, t, "body");
    }
    for (const char *const *f = OPTION_FIELDS; *f && lua_istable(L, opts_idx); f++) {
        raw_field(L, opts_idx, *f);
        lua_setfield(L, t, *f);
    }
    return start_request(L, t, fn_name);
}

static int l_get(lua_State *L)
{
    return request_from_args(L, "GET", 2, "ami.http.get");
}

static int l_post(lua_State *L)
{
    return request_from_args(L, "POST", 3, "ami.http.post");
}

void ami_lua_inject_http(lua_State *L, script_t *sc)
{
    (void)sc;
    static const luaL_Reg fns[] = {{"request", l_request}, {"get", l_get}, {"post", l_post}, {NULL, NULL}};
    lua_createtable(L, 0, 3);
    luaL_register(L, NULL, fns);
    lua_setfield(L, -2, "http");
}
