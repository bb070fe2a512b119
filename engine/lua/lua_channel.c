/*
 * Channel objects: the userdata scripts get from ami.channels, ami.channel
 * and ami.calls (lua_calls.c). Each holds a copy of a channel's flat record
 * (callstate/channel.h) and the server's key: immutable, so the object of a
 * channel's current version is handed out again by later snapshots (the
 * cache below) until the channel changes.
 *
 * Fields: channel, uniqueid, linkedid, state (number), state_desc,
 * caller_num, caller_name, connected_num, connected_name, language,
 * accountcode, context, exten, priority (number), application, appdata,
 * bridge, dial_status, dialed_by, hangup_cause (number), hangup_cause_txt,
 * started, answered (Unix seconds), server, vars (a new table of the
 * tracked variables); methods ch:var(name), ch:totable(). Fields that can
 * be absent (bridge, dial_status, dialed_by, hangup_*, answered, state)
 * are nil then; a misspelt field raises instead of reading nil. Two
 * objects are == when they are the same version of the same channel. The
 * metatable is registered as "ami.channel" (luaL_checkudata) and locked.
 */
#include <string.h>

#include "lua/lua_channel.h"

/* Every field a script may read, its code, and whether "" reads as nil. */
static const struct {
    const char *name;
    int code;
    bool nil_if_empty;
} FIELDS[] = {
    {"channel", AMI_CHAN_CHANNEL, false},          {"uniqueid", AMI_CHAN_UNIQUEID, false},
    {"linkedid", AMI_CHAN_LINKEDID, false},        {"state_desc", AMI_CHAN_STATE_DESC, false},
    {"caller_num", AMI_CHAN_CALLER_NUM, false},    {"caller_name", AMI_CHAN_CALLER_NAME, false},
    {"connected_num", AMI_CHAN_CONNECTED_NUM, false}, {"connected_name", AMI_CHAN_CONNECTED_NAME, false},
    {"language", AMI_CHAN_LANGUAGE, false},        {"accountcode", AMI_CHAN_ACCOUNTCODE, false},
    {"context", AMI_CHAN_CONTEXT, false},          {"exten", AMI_CHAN_EXTEN, false},
    {"application", AMI_CHAN_APPLICATION, false},  {"appdata", AMI_CHAN_APPDATA, false},
    {"bridge", AMI_CHAN_BRIDGE, true},             {"dial_status", AMI_CHAN_DIAL_STATUS, true},
    {"dialed_by", AMI_CHAN_DIALED_BY, true},       {"hangup_cause_txt", AMI_CHAN_HANGUP_CAUSE_TXT, true},
    {"state", F_STATE, false},                     {"priority", F_PRIORITY, false},
    {"started", F_STARTED, false},                 {"answered", F_ANSWERED, false},
    {"hangup_cause", F_HANGUP_CAUSE, false},       {"server", F_SERVER, false},
    {"vars", F_VARS, false},
};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

typedef struct chan_obj {
    const ami_callstate_t *cs; /* outlives the runtime: for the variable names */
    uint32_t server_len;
    uint32_t pad;
    /* then the record (8-aligned), then the server key */
} chan_obj_t;

static const ami_chan_t *rec_of(const chan_obj_t *o)
{
    return (const ami_chan_t *)(const void *)(o + 1);
}

static const char *server_of(const chan_obj_t *o)
{
    return (const char *)rec_of(o) + ami_chan_size(rec_of(o));
}

/* With the channel metatable at mt: push a copy of rec. Raises only on a
 * memory error (nothing is held across it). */
static void push_channel(lua_State *L, int mt, const ami_callstate_t *cs, const ami_chan_t *rec,
                         const char *server, size_t slen)
{
    size_t size = ami_chan_size(rec);
    chan_obj_t *o = lua_newuserdata(L, sizeof *o + size + slen);
    o->cs = cs;
    o->server_len = (uint32_t)slen;
    o->pad = 0;
    memcpy((char *)(o + 1), rec, size);
    memcpy((char *)(o + 1) + size, server, slen);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
}

/* ---- the snapshot cache ------------------------------------------------------------- */

/* Objects never change, so the object of a channel's current version can be
 * handed out again: a registry table (per script state) maps a channel's
 * serial to its last object. Taking a snapshot then allocates only for the
 * channels that changed since the last one. Key 0 counts the entries made;
 * past twice the live channels the table is rebuilt with the live ones. */
static char cache_key;

#define CACHE_SLACK 256


MAY_RAISE void snap_open(lua_State *L, const ami_callstate_t *cs, snap_t *sn)
{
    sn->L = L;
    sn->cs = cs;
    sn->made = 0;
    luaL_getmetatable(L, LUA_CHANNEL_MT);
    sn->mt = lua_gettop(L);
    lua_pushlightuserdata(L, &cache_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_istable(L, -1)) {
        size_t live = 0;
        for (size_t i = 0; i < ami_callstate_server_count(cs); i++)
            live += ami_callstate_count(cs, i);
        lua_pop(L, 1);
        lua_createtable(L, 0, (int)(live < 65536 ? live : 65536)); /* no rehash while it fills */
        lua_pushlightuserdata(L, &cache_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    sn->cache = lua_gettop(L);
}

/* Push the object of rec's current version. */
MAY_RAISE void snap_push(snap_t *sn, const ami_chan_t *rec, const char *server, size_t slen)
{
    lua_State *L = sn->L;
    lua_Number serial = (lua_Number)ami_chan_serial(rec);
    lua_pushnumber(L, serial);
    lua_rawget(L, sn->cache);
    const chan_obj_t *o = lua_touserdata(L, -1);
    if (o && ami_chan_version(rec_of(o)) == ami_chan_version(rec))
        return;
    lua_pop(L, 1);
    push_channel(L, sn->mt, sn->cs, rec, server, slen);
    lua_pushnumber(L, serial);
    lua_pushvalue(L, -2);
    lua_rawset(L, sn->cache);
    sn->made++;
}

/* Count what this call made; rebuild the cache when it holds too much. */
MAY_RAISE void snap_close(snap_t *sn)
{
    lua_State *L = sn->L;
    lua_rawgeti(L, sn->cache, 0);
    lua_Number entries = lua_tonumber(L, -1) + sn->made;
    lua_pop(L, 1);
    size_t live = 0;
    for (size_t i = 0; i < ami_callstate_server_count(sn->cs); i++)
        live += ami_callstate_count(sn->cs, i);
    if (entries <= 2.0 * (lua_Number)live + CACHE_SLACK) {
        lua_pushnumber(L, entries);
        lua_rawseti(L, sn->cache, 0);
        return;
    }
    lua_createtable(L, 0, (int)live);
    int fresh = lua_gettop(L);
    for (size_t i = 0; i < ami_callstate_server_count(sn->cs); i++) {
        ami_chan_iter_t it;
        for (const ami_chan_t *c = ami_callstate_first(sn->cs, i, &it); c; c = ami_callstate_next(&it)) {
            lua_pushnumber(L, (lua_Number)ami_chan_serial(c));
            lua_pushvalue(L, -1);
            lua_rawget(L, sn->cache);
            lua_rawset(L, fresh); /* nil when absent: nothing stored */
        }
    }
    lua_pushnumber(L, (lua_Number)live);
    lua_rawseti(L, fresh, 0);
    lua_pushlightuserdata(L, &cache_key);
    lua_pushvalue(L, fresh);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
}

MAY_RAISE static chan_obj_t *check_channel(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, LUA_CHANNEL_MT);
}

static void push_field_str(lua_State *L, const ami_chan_t *r, ami_chan_field_t f, bool nil_if_empty)
{
    size_t len;
    const char *v = ami_chan_str(r, f, &len);
    if (len == 0 && nil_if_empty)
        lua_pushnil(L);
    else
        lua_pushlstring(L, v, len);
}

MAY_RAISE static void push_vars(lua_State *L, const chan_obj_t *o)
{
    const ami_chan_t *r = rec_of(o);
    size_t n = ami_chan_var_count(r);
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *v = ami_chan_var(r, i, &len);
        const char *name = ami_callstate_var_name(o->cs, i);
        if (!v || !name)
            continue;
        lua_pushlstring(L, v, len);
        lua_setfield(L, -2, name);
    }
}

/* Push field `code` of o (nil when absent). */
MAY_RAISE static void push_field(lua_State *L, const chan_obj_t *o, int code, bool nil_if_empty)
{
    const ami_chan_t *r = rec_of(o);
    switch (code) {
    case F_STATE:
        if (ami_chan_state(r) >= 0)
            lua_pushinteger(L, ami_chan_state(r));
        else
            lua_pushnil(L);
        break;
    case F_PRIORITY: lua_pushinteger(L, ami_chan_priority(r)); break;
    case F_STARTED: lua_pushnumber(L, ami_chan_started(r)); break;
    case F_ANSWERED:
        if (ami_chan_answered(r) > 0)
            lua_pushnumber(L, ami_chan_answered(r));
        else
            lua_pushnil(L);
        break;
    case F_HANGUP_CAUSE:
        if (ami_chan_hangup_cause(r) >= 0)
            lua_pushinteger(L, ami_chan_hangup_cause(r));
        else
            lua_pushnil(L);
        break;
    case F_SERVER: lua_pushlstring(L, server_of(o), o->server_len); break;
    case F_VARS: push_vars(L, o); break;
    default: push_field_str(L, r, (ami_chan_field_t)code, nil_if_empty); break;
    }
}

/* __index: upvalue 1 maps a field name to its code (negative: nil if
 * empty) or a method. */
MAY_RAISE static int channel_index(lua_State *L)
{
    const chan_obj_t *o = check_channel(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (lua_isfunction(L, -1))
        return 1;
    if (!lua_isnumber(L, -1)) {
        const char *key = lua_tostring(L, 2);
        return luaL_error(L, "channel objects have no field '%s' (see docs/lua-api.md for the fields)",
                          key ? key : luaL_typename(L, 2));
    }
    int code = (int)lua_tointeger(L, -1);
    push_field(L, o, code < 0 ? -code - 1 : code, code < 0);
    return 1;
}

static int channel_newindex(lua_State *L)
{
    return luaL_error(L, "channels are read-only snapshots: copy what you need with ch:totable()");
}

MAY_RAISE static int channel_var(lua_State *L)
{
    const chan_obj_t *o = check_channel(L, 1);
    const char *name = luaL_checkstring(L, 2);
    size_t n = ami_callstate_var_count(o->cs);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ami_callstate_var_name(o->cs, i), name) != 0)
            continue;
        size_t len;
        const char *v = ami_chan_var(rec_of(o), i, &len);
        if (v)
            lua_pushlstring(L, v, len);
        else
            lua_pushnil(L);
        return 1;
    }
    return luaL_error(L, "variable '%s' is not tracked; list it in callstate.variables in the engine config",
                      name);
}

MAY_RAISE static int channel_totable(lua_State *L)
{
    const chan_obj_t *o = check_channel(L, 1);
    lua_createtable(L, 0, (int)NFIELDS);
    for (size_t i = 0; i < NFIELDS; i++) {
        push_field(L, o, FIELDS[i].code, FIELDS[i].nil_if_empty);
        lua_setfield(L, -2, FIELDS[i].name);
    }
    return 1;
}

MAY_RAISE static int channel_eq(lua_State *L)
{
    const chan_obj_t *a = check_channel(L, 1), *b = check_channel(L, 2);
    lua_pushboolean(L, ami_chan_serial(rec_of(a)) == ami_chan_serial(rec_of(b)) &&
                           ami_chan_version(rec_of(a)) == ami_chan_version(rec_of(b)));
    return 1;
}

MAY_RAISE static int channel_tostring(lua_State *L)
{
    const chan_obj_t *o = check_channel(L, 1);
    const ami_chan_t *r = rec_of(o);
    lua_pushfstring(L, "channel %s (%s) on ", ami_chan_str(r, AMI_CHAN_CHANNEL, NULL),
                    ami_chan_str(r, AMI_CHAN_STATE_DESC, NULL));
    lua_pushlstring(L, server_of(o), o->server_len);
    lua_concat(L, 2);
    return 1;
}

int channel_field_code(const char *name)
{
    for (size_t i = 0; i < NFIELDS; i++)
        if (strcmp(FIELDS[i].name, name) == 0)
            return FIELDS[i].code;
    return -1;
}

void channel_register(lua_State *L)
{
    static const luaL_Reg methods[] = {{"var", channel_var}, {"totable", channel_totable}, {NULL, NULL}};
    luaL_newmetatable(L, LUA_CHANNEL_MT);
    lua_createtable(L, 0, (int)NFIELDS + 2); /* names -> codes and methods: __index's upvalue */
    for (size_t i = 0; i < NFIELDS; i++) {
        lua_pushinteger(L, FIELDS[i].nil_if_empty ? -FIELDS[i].code - 1 : FIELDS[i].code);
        lua_setfield(L, -2, FIELDS[i].name);
    }
    luaL_register(L, NULL, methods);
    lua_pushcclosure(L, channel_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, channel_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, channel_eq);
    lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, channel_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, LUA_CHANNEL_MT);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}
