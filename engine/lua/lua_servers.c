/*
 * ami.servers() and ami.server(key): the state of the configured Asterisk
 * servers, as plain tables built on each call (a snapshot, never updated).
 *
 *   for _, s in ipairs(ami.servers()) do
 *     if not s.connected then ami.log.warn("server down", {server = s.key, error = s.last_error}) end
 *   end
 *   local s, err = ami.server("pbx1")   -- nil, "unknown_server: ..." for a key no server has
 *
 * Fields: key, state ("connected", ...), connected, pending,
 * heartbeat_failures, backoff_ms, last_error (nil when none), events,
 * logins, reconnects (connection attempts after the first); owned (this
 * instance runs the server's scripts: always true without high
 * availability), and with it owner (instance name) and epoch (lua_ha.c).
 */
#include <stdio.h>

#include "lua/lua_internal.h"

static void set_number(lua_State *L, const char *key, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

/* Raises only on a memory error. */
static void push_server(lua_State *L, const ami_server_info_t *info)
{
    const ami_conn_stats_t *st = info->stats;
    lua_createtable(L, 0, 11);
    lua_pushstring(L, info->server_key);
    lua_setfield(L, -2, "key");
    lua_pushstring(L, ami_conn_state_name(info->state));
    lua_setfield(L, -2, "state");
    lua_pushboolean(L, info->state == AMI_CONN_CONNECTED);
    lua_setfield(L, -2, "connected");
    set_number(L, "pending", (double)info->pending);
    set_number(L, "heartbeat_failures", info->heartbeat_failures);
    set_number(L, "backoff_ms", info->backoff_ms);
    if (info->last_error && info->last_error[0]) {
        lua_pushstring(L, info->last_error);
        lua_setfield(L, -2, "last_error");
    }
    set_number(L, "events", st ? (double)st->events : 0);
    set_number(L, "logins", st ? (double)st->logins : 0);
    set_number(L, "reconnects", st && st->connects > 0 ? (double)(st->connects - 1) : 0);
}

static int l_servers(lua_State *L)
{
    gen_t *g = lua_touserdata(L, lua_upvalueindex(1));
    ami_client_t *c = g->rt->client;
    size_t n = c ? ami_client_server_count(c) : 0;
    lua_createtable(L, (int)n, 0);
    int slot = 0;
    for (size_t i = 0; i < n; i++) {
        ami_server_info_t info;
        if (ami_client_server_info(c, i, &info) != 0)
            continue;
        push_server(L, &info);
        lua_ha_server_fields(L, g->rt, info.server_key);
        lua_rawseti(L, -2, ++slot);
    }
    return 1;
}

MAY_RAISE static int l_server(lua_State *L)
{
    gen_t *g = lua_touserdata(L, lua_upvalueindex(1));
    const char *key = luaL_checkstring(L, 1);
    ami_client_t *c = g->rt->client;
    int i = c ? ami_client_server_index(c, key) : -1;
    ami_server_info_t info;
    if (i < 0 || ami_client_server_info(c, (size_t)i, &info) != 0) {
        char msg[AMI_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "no server named \"%.64s\"", key);
        lua_pushnil(L);
        push_error(L, AMI_E_UNKNOWN_SERVER, msg);
        return 2;
    }
    push_server(L, &info);
    lua_ha_server_fields(L, g->rt, info.server_key);
    return 1;
}

void ami_lua_inject_servers(lua_State *L, gen_t *g)
{
    static const luaL_Reg fns[] = {{"servers", l_servers}, {"server", l_server}, {NULL, NULL}};
    lua_pushlightuserdata(L, g);
    luaL_setfuncs(L, fns, 1);
}
