#include "ha_world.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static ami_ha_t *make_ha(ha_world_t *hw, ami_client_t *client, const char *instance, const ha_world_options_t *o)
{
    ami_ha_config_t c;
    ami_ha_config_default(&c);
    c.cluster = "test";
    c.instance = instance;
    c.redis.unix_path = hw->redis.socket;
    c.redis.command_timeout_ms = 300;
    c.redis.connect_timeout_ms = 300;
    c.redis.backoff_initial_ms = 20;
    c.redis.backoff_max_ms = 100;
    c.lease_ms = o->lease_ms ? o->lease_ms : HA_TEST_LEASE_MS;
    c.renew_ms = o->renew_ms ? o->renew_ms : HA_TEST_RENEW_MS;
    c.stream = o->stream;
    for (size_t i = 0; o->stream_events && o->stream_events[i]; i++)
        c.stream_events[c.nstream_events++] = o->stream_events[i];
    if (o->stream_max_inflight)
        c.stream_max_inflight = o->stream_max_inflight;
    ami_err_t err;
    ami_ha_t *ha = ami_ha_new(client, &c, &err);
    if (!ha)
        fail_msg("ami_ha_new: %s", err.msg);
    return ha;
}

static bool all_connected(void *ud)
{
    ami_client_t *c = ud;
    return ami_client_connected_count(c) == ami_client_server_count(c);
}

static void start_rival(ha_world_t *hw, const ha_world_options_t *o)
{
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = hw->w->loop;
    cc.metrics = ami_metrics_new(1000); /* its own registry: no clash with self's series */
    hw->rival_client = ami_client_new(&cc, NULL);
    for (size_t i = 0; i < ami_client_server_count(hw->w->client); i++) {
        ami_server_options_t so;
        ami_server_options_default(&so);
        so.server_key = ami_client_server_key(hw->w->client, i);
        so.host = "127.0.0.1";
        so.port = ami_sim_node_port(hw->w->nodes[i]);
        so.username = "engine";
        so.secret = "s3cret";
        if (ami_client_add_server(hw->rival_client, &so, NULL) < 0)
            fail_msg("rival add_server");
    }
    ami_client_start(hw->rival_client);
    if (!harness_run_until(hw->w->loop, all_connected, hw->rival_client, 5000))
        fail_msg("rival did not connect");
    hw->rival = make_ha(hw, hw->rival_client, "rival", o);
    ami_ha_start(hw->rival);
}

static bool redis_up(void *ud)
{
    return ami_ha_redis_up(ud);
}

ha_world_t *ha_world_new(const ha_world_options_t *opt)
{
    if (!redis_server_available()) {
        print_message("SKIP: redis-server is not installed (bash tests/deps.sh installs it)\n");
        skip();
    }
    ha_world_options_t d = {.nodes = 1};
    const ha_world_options_t *o = opt ? opt : &d;
    ha_world_t *hw = calloc(1, sizeof *hw);
    lua_world_options_t lo = {.nodes = o->nodes, .grace_ms = 300};
    hw->w = lua_world_new(&lo);
    if (redis_server_start(&hw->redis, NULL, false, NULL, NULL) < 0)
        fail_msg("redis-server did not start");
    if (o->rival_first) {
        start_rival(hw, o);
        uint32_t lease = o->lease_ms ? o->lease_ms : HA_TEST_LEASE_MS; /* a new instance waits one lease */
        if (!ha_world_wait_acting(hw, hw->rival, ami_client_server_count(hw->rival_client), lease + 5000))
            fail_msg("the rival did not take the leases");
    }
    hw->ha = make_ha(hw, hw->w->client, "self", o);
    ami_lua_runtime_set_ha(hw->w->rt, hw->ha);
    ami_ha_start(hw->ha);
    if (!harness_run_until(hw->w->loop, redis_up, hw->ha, 5000))
        fail_msg("the redis connections did not come up");
    return hw;
}

typedef struct acting_wait {
    ami_ha_t *ha;
    size_t n;
} acting_wait_t;

static bool acting_n(void *ud)
{
    acting_wait_t *a = ud;
    return ami_ha_acting_count(a->ha) == a->n;
}

bool ha_world_wait_acting(ha_world_t *hw, ami_ha_t *ha, size_t n, uint32_t ms)
{
    acting_wait_t a = {ha, n};
    return harness_run_until(hw->w->loop, acting_n, &a, ms);
}

static bool rival_drained(void *ud)
{
    return ami_ha_drained(ud);
}

void ha_world_drop_rival(ha_world_t *hw, bool drain_first)
{
    if (!hw->rival)
        return;
    if (drain_first) {
        ami_ha_drain(hw->rival);
        harness_run_until(hw->w->loop, rival_drained, hw->rival, 3000);
    }
    ami_metrics_t *m = ami_client_metrics(hw->rival_client);
    ami_ha_free(hw->rival);
    ami_client_free(hw->rival_client);
    ami_metrics_free(m);
    hw->rival = NULL;
    hw->rival_client = NULL;
}

void ha_world_free(ha_world_t *hw)
{
    ha_world_drop_rival(hw, false);
    ami_lua_runtime_free(hw->w->rt); /* its ami.kv calls go before the coordinator */
    hw->w->rt = NULL;
    ami_ha_free(hw->ha);
    lua_world_free(hw->w);
    redis_server_stop(&hw->redis);
    free(hw);
}
