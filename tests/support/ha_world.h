/*
 * In-process high availability for tests: a lua_world (loop, simulated
 * Asterisk, client, Lua runtime) whose runtime is gated by an ami_ha_t on a
 * real redis-server the test starts, plus an optional rival instance (its
 * own client and ami_ha_t on the same loop, named "rival") to hold or give
 * back leases. Fast timings: lease 1000 ms, renew 200 ms, command timeout
 * 300 ms.
 */
#ifndef AMI_TEST_HA_WORLD_H
#define AMI_TEST_HA_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ha/ha.h"
#include "lua_world.h"
#include "redis_server.h"

#define HA_TEST_LEASE_MS 1000u
#define HA_TEST_RENEW_MS 200u

typedef struct ha_world {
    lua_world_t *w;
    redis_server_t redis;
    ami_ha_t *ha;              /* the world's instance ("self"), gating w->rt */
    ami_client_t *rival_client;
    ami_ha_t *rival;
} ha_world_t;

typedef struct ha_world_options {
    int nodes;                 /* 1 or 2 */
    const char *stream;        /* stream fan-out key, or NULL */
    const char *const *stream_events;
    uint32_t stream_max_inflight;
    bool rival_first;          /* start the rival and let it own everything before self starts */
    uint32_t lease_ms;         /* 0: HA_TEST_LEASE_MS */
    uint32_t renew_ms;         /* 0: HA_TEST_RENEW_MS */
} ha_world_options_t;

/* Skips the test when redis-server is missing. */
ha_world_t *ha_world_new(const ha_world_options_t *opt);
void ha_world_free(ha_world_t *hw);

/* Run until ha acts for n servers (true) or ms pass. */
bool ha_world_wait_acting(ha_world_t *hw, ami_ha_t *ha, size_t n, uint32_t ms);
/* Drain the rival (gives its leases back) and free it. */
void ha_world_drop_rival(ha_world_t *hw, bool drain_first);

#endif
