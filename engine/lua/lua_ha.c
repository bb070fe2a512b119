/*
 * High availability as the scripts see it: the ownership gate the runtime
 * asks per event and per action, and the owner and epoch fields of
 * ami.server(key) / ami.servers().
 *
 *   local s = ami.server(ev.server)
 *   s.owned   -- true: this instance runs the server's scripts (always true without HA)
 *   s.owner   -- the owning instance's name as last seen (HA only)
 *   s.epoch   -- the fencing epoch: grows at every change of owner (HA only)
 *
 * A script that writes to an outside system can pass s.epoch along and
 * have that system refuse writes with an epoch lower than the highest it
 * has seen: a paused old owner then cannot overwrite the new one's work.
 */
#include <stdio.h>

#include "ha/ha.h"
#include "lua/lua_internal.h"

void ami_lua_runtime_set_ha(ami_lua_runtime_t *rt, struct ami_ha *ha)
{
    rt->ha = ha;
}

bool lua_ha_may_act(const ami_lua_runtime_t *rt, const char *server_key)
{
    return !rt->ha || (server_key && *server_key && ami_ha_acting(rt->ha, server_key));
}

int lua_ha_refuse(lua_State *L, const ami_lua_runtime_t *rt, const char *server_key)
{
    lua_pushnil(L);
    if (!server_key || !*server_key) {
        lua_pushliteral(L, "not_owner: with high availability on, name the server (for example "
                           "ami.action(ev.server, ...)); routing by policy could pick a server another "
                           "instance owns");
        return 2;
    }
    ami_ha_lease_info_t info;
    if (ami_ha_lease_info(rt->ha, server_key, &info) < 0) {
        lua_pushfstring(L, "unknown_server: no server named \"%s\"", server_key);
        return 2;
    }
    lua_pushfstring(L, "not_owner: instance %s does not own server %s (owner: %s, epoch %f); "
                       "its scripts run on the owner",
                    ami_ha_instance(rt->ha), server_key, info.owner[0] ? info.owner : "none yet",
                    (lua_Number)info.epoch);
    return 2;
}

void lua_ha_server_fields(lua_State *L, const ami_lua_runtime_t *rt, const char *server_key)
{
    ami_ha_lease_info_t info;
    if (!rt->ha || ami_ha_lease_info(rt->ha, server_key, &info) < 0) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "owned");
        return;
    }
    lua_pushboolean(L, info.acting);
    lua_setfield(L, -2, "owned");
    if (info.owner[0]) {
        lua_pushstring(L, info.owner);
        lua_setfield(L, -2, "owner");
    }
    lua_pushnumber(L, (lua_Number)info.epoch);
    lua_setfield(L, -2, "epoch");
}
