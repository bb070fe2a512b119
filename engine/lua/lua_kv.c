/*
 * ami.kv: state shared by every instance and surviving any of them
 * (counters, per-caller data, idempotency keys), in Redis under the
 * cluster's prefix (engine/ha/kv.c). Each call yields until Redis answers.
 *
 *   local v, err = ami.kv.get("caller:" .. num)        -- string, or nil when absent
 *   local ok, err = ami.kv.set(key, "x", {ttl_ms = 60000, nx = true})
 *                                                       -- true; false when nx and the key exists
 *   local n, err = ami.kv.incr("calls:today", 1)        -- the new value
 *   local ok, err = ami.kv.expire(key, 30000)           -- true; false when the key is absent
 *   local ok, err = ami.kv.del(key)                     -- true; false when the key was absent
 *
 * Errors are values: nil, "kind: message". invalid: a bad argument (a key
 * that is not a string of 1..max_key bytes, a number that is NaN,
 * infinite, fractional, negative where it cannot be, or beyond 2^53);
 * limit: a value over max_value bytes, or too many commands in flight;
 * not_connected / timeout / disconnected / server: Redis; unavailable:
 * the engine runs without high availability (no ha section).
 *
 * Values are strings; a number is stored as its decimal text (NaN and
 * infinities are refused). incr works on the text Redis holds, as INCRBY.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ha/ha.h"
#include "lua/lua_internal.h"
#include "util/alloc.h"

#define MAX_EXACT 9007199254740991.0     /* 2^53 - 1: beyond it a Lua number is not exact */
#define MAX_TTL_MS 315360000000.0        /* ten years */

typedef struct kv_wait {
    ami_ha_t *ha;
    ami_redis_req_t *req;                /* NULL once answered */
    ami_kv_op_t op;
    bool only_new;
} kv_wait_t;

typedef struct kv_result {
    kv_wait_t *kw;
    const ami_redis_reply_t *reply;
    const ami_err_t *err;
    lua_State *co;
    int n;
} kv_result_t;

static int fail(lua_State *L, const char *kind, const char *msg)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", kind, msg);
    return 2;
}

/* A whole number in [min, max]. false with why filled. */
/* A whole number in [min, max], through the runtime's one validated
 * conversion (NaN, infinities and fractions are refused there). */
static bool whole(lua_State *L, int idx, const char *what, double min, double max, int64_t *out, char *why,
                  size_t n)
{
    const num_range_t range = {min, max, true, "a whole number"};
    double v;
    if (!arg_number(L, idx, "ami.kv", what, &range, &v, why, n))
        return false;
    *out = (int64_t)v;
    return true;
}

/* ---- the answer ------------------------------------------------------------------------- */

static void push_answer(lua_State *L, kv_result_t *r)
{
    const ami_redis_reply_t *rep = r->reply;
    size_t len;
    const char *s;
    r->n = 1;
    switch (r->kw->op) {
    case AMI_KV_GET:
        s = ami_redis_reply_str(rep, &len);
        if (ami_redis_reply_type(rep) == AMI_REDIS_STRING)
            lua_pushlstring(L, s, len);
        else
            lua_pushnil(L);
        break;
    case AMI_KV_SET:
        lua_pushboolean(L, ami_redis_reply_type(rep) == AMI_REDIS_STATUS);
        break;
    case AMI_KV_INCRBY:
        lua_pushnumber(L, (lua_Number)ami_redis_reply_integer(rep));
        break;
    default:
        lua_pushboolean(L, ami_redis_reply_integer(rep) > 0);
        break;
    }
}

static int push_protected(lua_State *L)
{
    kv_result_t *r = lua_touserdata(L, 1);
    lua_pop(L, 1);
    if (r->err) {
        lua_pushnil(L);
        push_error(L, r->err->code, r->err->msg);
        r->n = 2;
    } else {
        push_answer(L, r);
    }
    lua_xmove(L, r->co, r->n);
    return 0;
}

static void on_reply(void *ud, const ami_redis_reply_t *reply, const ami_err_t *err)
{
    wait_t *w = ud;
    kv_wait_t *kw = w->ext;
    kw->req = NULL;
    if (w->state != WAIT_ARMED)
        return; /* cannot happen: an unarmed wait is undone, which cancels the command */
    script_t *sc = w->co->sc;
    kv_result_t r = {.kw = kw, .reply = reply, .err = err, .co = w->co->L};
    script_strict_enter(sc);
    int rc = lua_cpcall(sc->L, push_protected, &r);
    script_strict_leave(sc);
    if (rc != 0) {
        lua_pop(sc->L, 1);
        lua_pushnil(w->co->L);
        lua_pushliteral(w->co->L, "nomem: the answer could not be built");
        r.n = 2;
    }
    sched_wake(w, r.n);
}

static void release_wait(wait_t *w)
{
    kv_wait_t *kw = w->ext;
    if (kw && kw->req)
        ami_ha_kv_cancel(kw->ha, kw->req);
    ami_free(kw);
    w->ext = NULL;
}

/* ---- the calls ------------------------------------------------------------------------------ */

/* Check the key at 1, send req, yield. */
static int run(lua_State *L, const char *name, ami_kv_req_t *req)
{
    co_t *co = sched_require_co(L, name);
    ami_ha_t *ha = co->sc->gen->rt->ha;
    if (!ha)
        return fail(L, "unavailable", "ami.kv needs high availability: add an ha section with redis to the config");
    if (lua_type(L, 1) != LUA_TSTRING)
        return fail(L, "invalid", "the key must be a string");
    req->key = lua_tolstring(L, 1, &req->key_len);
    wait_t *w = sched_wait_new(co, WAIT_EXTERNAL);
    kv_wait_t *kw = w ? ami_calloc(1, sizeof *kw) : NULL;
    if (!kw) {
        if (w)
            sched_wait_cancel(w);
        return fail(L, "nomem", "out of memory");
    }
    *kw = (kv_wait_t){.ha = ha, .op = req->op, .only_new = req->only_new};
    w->ext = kw;
    w->cancel = release_wait;
    ami_err_t err;
    if (ami_ha_kv(ha, req, on_reply, w, &kw->req, &err) < 0) {
        sched_wait_cancel(w);
        lua_pushnil(L);
        push_error(L, err.code, err.msg);
        return 2;
    }
    return sched_yield_for(L, w);
}

static int l_get(lua_State *L)
{
    ami_kv_req_t req = {.op = AMI_KV_GET};
    return run(L, "ami.kv.get", &req);
}

static int l_del(lua_State *L)
{
    ami_kv_req_t req = {.op = AMI_KV_DEL};
    return run(L, "ami.kv.del", &req);
}

static bool set_options(lua_State *L, int idx, ami_kv_req_t *req, char *why, size_t n)
{
    if (lua_isnoneornil(L, idx))
        return true;
    if (!lua_istable(L, idx)) {
        snprintf(why, n, "options must be a table such as {ttl_ms = 60000, nx = true}");
        return false;
    }
    lua_getfield(L, idx, "ttl_ms");
    bool ok = lua_isnil(L, -1) || whole(L, lua_gettop(L), "ttl_ms", 1, MAX_TTL_MS, &req->ttl_ms, why, n);
    lua_getfield(L, idx, "nx");
    if (ok && !lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
        snprintf(why, n, "nx must be true or false");
        ok = false;
    }
    req->only_new = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return ok;
}

static int l_set(lua_State *L)
{
    ami_kv_req_t req = {.op = AMI_KV_SET};
    char why[200];
    int t = lua_type(L, 2);
    if (t == LUA_TNUMBER) {
        double v = lua_tonumber(L, 2);
        if (!isfinite(v))
            return fail(L, "invalid", "the value is NaN or infinite; store a finite number or a string");
        lua_pushfstring(L, "%s", lua_tostring(L, 2)); /* the decimal text, anchored on the stack */
        lua_replace(L, 2);
    } else if (t != LUA_TSTRING) {
        return fail(L, "invalid", "the value must be a string or a number");
    }
    req.value = lua_tolstring(L, 2, &req.value_len);
    if (!set_options(L, 3, &req, why, sizeof why))
        return fail(L, "invalid", why);
    return run(L, "ami.kv.set", &req);
}

static int l_incr(lua_State *L)
{
    ami_kv_req_t req = {.op = AMI_KV_INCRBY, .number = 1};
    char why[200];
    if (!lua_isnoneornil(L, 2) && !whole(L, 2, "the increment", -MAX_EXACT, MAX_EXACT, &req.number, why, sizeof why))
        return fail(L, "invalid", why);
    return run(L, "ami.kv.incr", &req);
}

static int l_expire(lua_State *L)
{
    ami_kv_req_t req = {.op = AMI_KV_PEXPIRE};
    char why[200];
    if (!whole(L, 2, "ttl_ms", 1, MAX_TTL_MS, &req.number, why, sizeof why))
        return fail(L, "invalid", why);
    return run(L, "ami.kv.expire", &req);
}

void ami_lua_inject_kv(lua_State *L, script_t *sc)
{
    static const luaL_Reg fns[] = {{"get", l_get},     {"set", l_set}, {"incr", l_incr},
                                   {"expire", l_expire}, {"del", l_del}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    lua_setfield(L, -2, "kv");
}
