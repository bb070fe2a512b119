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
 *
 * ami.on_server(fn): fn runs (in its own coroutine, like any handler) with
 * a ServerState event each time a server logs in, loses its session, or is
 * stopped:
 *   ev.Server   "pbx1"   (also ev.server)
 *   ev.State    "up" (logged in) | "down" (the session was lost) | "stopped"
 *               (the engine stopped connecting to it: drain, shutdown)
 *   ev.Reason   why, for down and stopped
 *   ev.Previous the connection state before
 * ami.wait_for({Event = "ServerState", Server = "pbx1", State = "up"}, ms)
 * waits for one. These are the engine's events: "*" handlers do not get them.
 */
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "protocol/parser.h"

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
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    ami_client_t *c = sc->gen->rt->client;
    size_t n = c ? ami_client_server_count(c) : 0;
    lua_createtable(L, (int)n, 0);
    int slot = 0;
    for (size_t i = 0; i < n; i++) {
        ami_server_info_t info;
        if (ami_client_server_info(c, i, &info) != 0)
            continue;
        push_server(L, &info);
        lua_ha_server_fields(L, sc->gen->rt, info.server_key);
        lua_rawseti(L, -2, ++slot);
    }
    return 1;
}

MAY_RAISE static int l_server(lua_State *L)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    const char *key = luaL_checkstring(L, 1);
    ami_client_t *c = sc->gen->rt->client;
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
    lua_ha_server_fields(L, sc->gen->rt, info.server_key);
    return 1;
}

void ami_lua_inject_servers(lua_State *L, script_t *sc)
{
    static const luaL_Reg fns[] = {{"servers", l_servers}, {"server", l_server}, {NULL, NULL}};
    lua_pushlightuserdata(L, sc);
    luaL_setfuncs(L, fns, 1);
    lua_pushcfunction(L, handlers_on_server);
    lua_setfield(L, -2, "on_server");
}

/* ---- ServerState events ---------------------------------------------------------- */

static const char *transition(ami_conn_state_t from, ami_conn_state_t to)
{
    if (to == AMI_CONN_CONNECTED)
        return "up";
    if (to == AMI_CONN_STOPPED)
        return "stopped";
    return from == AMI_CONN_CONNECTED ? "down" : NULL;
}

/* A reason goes into a header value: one line, bounded. */
static void one_line(char *out, size_t size, const char *in)
{
    size_t i = 0;
    for (; in && in[i] && i + 1 < size; i++)
        out[i] = in[i] == '\r' || in[i] == '\n' ? ' ' : in[i];
    out[i] = '\0';
}

/* The event as Asterisk would frame it, parsed like any message. */
static bool build_event(ami_parser_t *p, ami_msg_t *msg, const char *key, const char *state,
                        ami_conn_state_t from, const char *reason)
{
    char why[512], text[800];
    one_line(why, sizeof why, reason);
    int n = snprintf(text, sizeof text, "Event: ServerState\r\nServer: %s\r\nState: %s\r\nPrevious: %s\r\n%s%s%s\r\n",
                     key, state, ami_conn_state_name(from), why[0] ? "Reason: " : "", why, why[0] ? "\r\n" : "");
    ami_err_t err;
    return n > 0 && (size_t)n < sizeof text && ami_parser_feed(p, text, (size_t)n, &err) == 0 &&
           ami_parser_next(p, msg, &err) == 1;
}

static void on_state(void *ud, const char *server_key, ami_conn_state_t from, ami_conn_state_t to,
                     const char *reason)
{
    ami_lua_runtime_t *rt = ud;
    const char *state = transition(from, to);
    if (!state || !rt->current)
        return;
    ami_parser_t p;
    ami_parser_limits_t lim;
    ami_parser_limits_default(&lim);
    ami_parser_init(&p, &lim);
    ami_parser_expect_banner(&p, false);
    ami_msg_t msg;
    if (build_event(&p, &msg, server_key, state, from, reason)) {
        rt->event_seq++;
        bool act = lua_ha_may_act(rt, server_key);
        for (script_t *sc = rt->current->scripts; sc; sc = sc->next)
            handlers_dispatch_server_state(sc, &msg, server_key, act);
    }
    ami_parser_deinit(&p);
}

void server_events_start(ami_lua_runtime_t *rt)
{
    rt->watching_states = ami_client_on_state(rt->client, on_state, rt) == 0;
}

void server_events_stop(ami_lua_runtime_t *rt)
{
    if (rt->watching_states)
        ami_client_off_state(rt->client, on_state, rt);
    rt->watching_states = false;
}
