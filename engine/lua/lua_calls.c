/*
 * ami.channels, ami.channel, ami.calls: read-only snapshots of the live
 * call state (callstate/callstate.h) for scripts.
 *
 *   for _, ch in ipairs(ami.channels("pbx1")) do print(ch.channel, ch.state_desc) end
 *   local mine = ami.channels("pbx1", {linkedid = ev.Linkedid})  -- exact-match filter
 *   local ch = ami.channel("pbx1", ev.Uniqueid)                  -- or a Channel name; nil if none
 *   for _, call in ipairs(ami.calls("pbx1")) do print(call.id, #call.channels) end
 *
 * The channel objects themselves (fields, methods, the snapshot cache) are
 * in lua_channel.c.
 *
 * Errors: no call state configured -> nil, "config: ..."; unknown server
 * -> nil, "unknown_server: ..."; a wrong argument type or filter raises.
 */
#include <stdio.h>
#include <string.h>

#include "lua/lua_channel.h"

#define MAX_FILTER 8

/* ---- arguments ------------------------------------------------------------------------ */

/* The call state and the server's index, or nil + error pushed (returns -1). */
MAY_RAISE static int server_arg(lua_State *L, ami_callstate_t **cs, size_t *srv)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    const char *key = luaL_checkstring(L, 1);
    *cs = sc->gen->rt->cfg.callstate;
    if (!*cs) {
        lua_pushnil(L);
        push_error(L, AMI_E_CONFIG, "the call state is off; add callstate = {} to the engine config");
        return -1;
    }
    int i = ami_callstate_server_index(*cs, key);
    if (i < 0) {
        char msg[AMI_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "no server named \"%.64s\"", key);
        lua_pushnil(L);
        push_error(L, AMI_E_UNKNOWN_SERVER, msg);
        return -1;
    }
    *srv = (size_t)i;
    return 0;
}

typedef struct chan_cond {
    int code;
    const char *s;
    size_t len;
    double num;
} chan_cond_t;

/* The filter table at idx into conds (strings stay on the Lua stack:
 * the table holds them). */
MAY_RAISE static size_t read_filter(lua_State *L, int idx, chan_cond_t *conds)
{
    size_t n = 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int code = name ? channel_field_code(name) : -1;
        if (code < 0 || code == F_SERVER || code == F_VARS || code == F_STARTED || code == F_ANSWERED)
            luaL_argerror(L, idx, "filter keys are string fields (channel, linkedid, bridge, ...), state or priority");
        if (n >= MAX_FILTER)
            luaL_argerror(L, idx, "at most 8 filter fields");
        chan_cond_t *c = &conds[n++];
        c->code = code;
        bool numeric = code == F_STATE || code == F_PRIORITY || code == F_HANGUP_CAUSE;
        if (numeric ? lua_type(L, -1) != LUA_TNUMBER : lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, idx, numeric ? "state, priority and hangup_cause filter values must be numbers"
                                          : "filter values of string fields must be strings");
        if (numeric)
            c->num = lua_tonumber(L, -1);
        else
            c->s = lua_tolstring(L, -1, &c->len);
    }
    return n;
}

static bool matches(const ami_chan_t *r, const chan_cond_t *conds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const chan_cond_t *c = &conds[i];
        double v;
        switch (c->code) {
        case F_STATE: v = ami_chan_state(r); break;
        case F_PRIORITY: v = ami_chan_priority(r); break;
        case F_HANGUP_CAUSE: v = ami_chan_hangup_cause(r); break;
        default: {
            size_t len;
            const char *s = ami_chan_str(r, (ami_chan_field_t)c->code, &len);
            if (len != c->len || memcmp(s, c->s, len) != 0)
                return false;
            continue;
        }
        }
        if (v != c->num)
            return false;
    }
    return true;
}

/* ---- the functions ------------------------------------------------------------------------ */

MAY_RAISE static int l_channels(lua_State *L)
{
    ami_callstate_t *cs;
    size_t srv;
    if (server_arg(L, &cs, &srv) < 0)
        return 2;
    chan_cond_t conds[MAX_FILTER];
    size_t nconds = lua_isnoneornil(L, 2) ? 0 : read_filter(L, 2, conds);
    const char *key = ami_callstate_server_key(cs, srv);
    size_t klen = strlen(key);
    snap_t sn;
    snap_open(L, cs, &sn);
    lua_createtable(L, nconds ? 0 : (int)ami_callstate_count(cs, srv), 1);
    int n = 0;
    ami_chan_iter_t it;
    for (const ami_chan_t *c = ami_callstate_first(cs, srv, &it); c; c = ami_callstate_next(&it)) {
        if (nconds && !matches(c, conds, nconds))
            continue;
        snap_push(&sn, c, key, klen);
        lua_rawseti(L, -2, ++n);
    }
    lua_pushboolean(L, ami_callstate_synced(cs, srv));
    lua_setfield(L, -2, "synced");
    snap_close(&sn);
    return 1;
}

MAY_RAISE static int l_channel(lua_State *L)
{
    ami_callstate_t *cs;
    size_t srv;
    if (server_arg(L, &cs, &srv) < 0)
        return 2;
    size_t len;
    const char *id = luaL_checklstring(L, 2, &len);
    const ami_chan_t *c = ami_callstate_find(cs, srv, id, len);
    if (!c) {
        lua_pushnil(L);
        return 1;
    }
    const char *key = ami_callstate_server_key(cs, srv);
    snap_t sn;
    snap_open(L, cs, &sn);
    snap_push(&sn, c, key, strlen(key));
    snap_close(&sn);
    return 1;
}

/* Per call, in C: where its channels are in the view, in order. A counting
 * sort over call_of; the arrays live in a userdata (collected, so nothing
 * leaks if a push raises). */
typedef struct calls_ws {
    uint32_t *start;  /* ncalls + 1 offsets into idx */
    uint32_t *idx;    /* channel indexes grouped by call, oldest first */
} calls_ws_t;

MAY_RAISE static void sort_by_call(lua_State *L, const ami_calls_view_t *v, calls_ws_t *ws)
{
    uint32_t *mem = lua_newuserdata(L, (v->ncalls + 1 + v->nchans) * sizeof(uint32_t) + 1);
    ws->start = mem;
    ws->idx = mem + v->ncalls + 1;
    memset(ws->start, 0, (v->ncalls + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < v->nchans; i++)
        ws->start[v->call_of[i] + 1]++;
    for (size_t c = 0; c < v->ncalls; c++)
        ws->start[c + 1] += ws->start[c];
    for (size_t i = 0; i < v->nchans; i++) /* start[c] walks forward; fixed below */
        ws->idx[ws->start[v->call_of[i]]++] = (uint32_t)i;
    for (size_t c = v->ncalls; c > 0; c--)
        ws->start[c] = ws->start[c - 1];
    ws->start[0] = 0;
}

/* The distinct bridges of one call, as an array. */
MAY_RAISE static void push_bridges(lua_State *L, const ami_calls_view_t *v, const uint32_t *idx, size_t n)
{
    lua_createtable(L, 1, 0);
    int nb = 0;
    for (size_t k = 0; k < n; k++) {
        size_t len;
        const char *b = ami_chan_str(v->chans[idx[k]], AMI_CHAN_BRIDGE, &len);
        bool seen = len == 0;
        for (size_t j = 0; j < k && !seen; j++) {
            size_t olen;
            const char *o = ami_chan_str(v->chans[idx[j]], AMI_CHAN_BRIDGE, &olen);
            seen = olen == len && memcmp(o, b, len) == 0;
        }
        if (seen)
            continue;
        lua_pushlstring(L, b, len);
        lua_rawseti(L, -2, ++nb);
    }
}

/* {id, server, started, answered, channels = {...}, bridges = {...}} for
 * the call whose channels are idx[0..n); the server key is at key. */
MAY_RAISE static void push_call(lua_State *L, snap_t *sn, int key, const ami_calls_view_t *v,
                                const uint32_t *idx, size_t n)
{
    const ami_chan_t *first = v->chans[idx[0]];
    size_t klen;
    const char *server = lua_tolstring(L, key, &klen);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, ami_chan_str(first, AMI_CHAN_LINKEDID, NULL));
    lua_setfield(L, -2, "id");
    lua_pushvalue(L, key);
    lua_setfield(L, -2, "server");
    lua_pushnumber(L, ami_chan_started(first));
    lua_setfield(L, -2, "started");
    double answered = 0;
    lua_createtable(L, (int)n, 0);
    for (size_t k = 0; k < n; k++) {
        const ami_chan_t *c = v->chans[idx[k]];
        if (ami_chan_answered(c) > 0 && (answered == 0 || ami_chan_answered(c) < answered))
            answered = ami_chan_answered(c);
        snap_push(sn, c, server, klen);
        lua_rawseti(L, -2, (int)k + 1);
    }
    lua_setfield(L, -2, "channels");
    if (answered > 0) {
        lua_pushnumber(L, answered);
        lua_setfield(L, -2, "answered");
    }
    push_bridges(L, v, idx, n);
    lua_setfield(L, -2, "bridges");
}

MAY_RAISE static int l_calls(lua_State *L)
{
    ami_callstate_t *cs;
    size_t srv;
    if (server_arg(L, &cs, &srv) < 0)
        return 2;
    const ami_calls_view_t *v = ami_callstate_calls(cs, srv);
    if (!v) {
        lua_pushnil(L);
        push_error(L, AMI_E_NOMEM, "out of memory grouping the channels into calls");
        return 2;
    }
    calls_ws_t ws;
    sort_by_call(L, v, &ws);
    snap_t sn;
    snap_open(L, cs, &sn);
    lua_pushstring(L, ami_callstate_server_key(cs, srv));
    int key = lua_gettop(L);
    lua_createtable(L, (int)v->ncalls, 0);
    for (size_t c = 0; c < v->ncalls; c++) {
        push_call(L, &sn, key, v, ws.idx + ws.start[c], ws.start[c + 1] - ws.start[c]);
        lua_rawseti(L, -2, (int)c + 1);
    }
    snap_close(&sn); /* balanced: the result stays on top */
    return 1;
}

void ami_lua_inject_calls(lua_State *L, script_t *sc)
{
    static const luaL_Reg fns[] = {{"channels", l_channels}, {"channel", l_channel}, {"calls", l_calls},
                                   {NULL, NULL}};
    channel_register(L);
    lua_pushlightuserdata(L, sc);
    luaL_setfuncs(L, fns, 1);
    lua_pushboolean(L, sc->gen->rt->cfg.callstate != NULL);
    lua_setfield(L, -2, "callstate");
}
