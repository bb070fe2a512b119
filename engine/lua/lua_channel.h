/*
 * Private to engine/lua: channel objects (lua_channel.c) for the call
 * state functions (lua_calls.c). A snapshot pushes objects through a snap_t:
 * snap_open pushes the metatable and the cache, snap_push one object per
 * channel (reused while the channel is unchanged), snap_close counts and
 * trims the cache and leaves the stack as snap_open left it plus whatever
 * the caller pushed since.
 */
#ifndef AMI_LUA_CHANNEL_H
#define AMI_LUA_CHANNEL_H

#include "callstate/callstate.h"
#include "lua/lua_internal.h"

#define LUA_CHANNEL_MT "ami.channel"

/* Field codes: the string fields are their ami_chan_field_t; then these. */
enum {
    F_STATE = 100,
    F_PRIORITY,
    F_STARTED,
    F_ANSWERED,
    F_HANGUP_CAUSE,
    F_SERVER,
    F_VARS,
};

/* The code of a field a script may read, or -1. */
int channel_field_code(const char *name);

/* Register the "ami.channel" metatable (at load). */
void channel_register(lua_State *L);

typedef struct snap {
    lua_State *L;
    const ami_callstate_t *cs;
    int mt;        /* stack index of the channel metatable */
    int cache;     /* stack index of the cache */
    uint32_t made; /* objects this call created */
} snap_t;

MAY_RAISE void snap_open(lua_State *L, const ami_callstate_t *cs, snap_t *sn);
MAY_RAISE void snap_push(snap_t *sn, const ami_chan_t *rec, const char *server, size_t slen);
MAY_RAISE void snap_close(snap_t *sn);

#endif
