/*
 * The ha section: high availability on Redis (engine/ha). Absent: the
 * engine runs alone, exactly as without this file.
 *
 *   ha = {
 *     cluster  = "prod",                      -- keys under "ami:prod:"; the same on every instance
 *     instance = "engine-a",                  -- this instance's name; default "<hostname>-<pid>"
 *     redis = { address = "10.0.0.9:6379",    -- or "unix:/run/redis/redis.sock"
 *               username = "engine", secret_env = "AMI_REDIS_SECRET",
 *               connect_timeout_ms = 1000, command_timeout_ms = 1000,
 *               backoff_initial_ms = 100, backoff_max_ms = 5000, max_pending = 10000 },
 *     lease_ms = 3000, renew_ms = 1000,
 *     kv = { max_key_bytes = 512, max_value_bytes = 65536 },
 *     stream = { name = "ami:prod:events", events = {"Newchannel", "Hangup"},
 *                maxlen = 100000, max_inflight = 1000 },
 *   }
 *
 * The Redis password comes from secret, secret_env or secret_file, read at
 * load time like the servers' secrets (config_server.c) and never shown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/config_internal.h"
#include "transport/tcp.h"
#include "util/alloc.h"

static const char *const HA_KEYS[] = {"cluster", "instance", "redis", "lease_ms", "renew_ms", "kv", "stream"};
static const char *const REDIS_KEYS[] = {"address", "username", "secret", "secret_env", "secret_file",
                                         "connect_timeout_ms", "command_timeout_ms", "backoff_initial_ms",
                                         "backoff_max_ms", "max_pending"};
static const char *const KV_KEYS[] = {"max_key_bytes", "max_value_bytes"};
static const char *const STREAM_KEYS[] = {"name", "events", "maxlen", "max_inflight"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static bool name_chars(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') && !(s[i] >= '0' && s[i] <= '9') &&
            s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

static void read_u32_at(cfg_ctx_t *cx, int t, const char *section, const char *key, uint64_t min, uint64_t max,
                        uint32_t *dst)
{
    cfg_rawfield(cx->L, t, key);
    char where[96];
    snprintf(where, sizeof where, "%s.%s", section, key);
    uint64_t v;
    if (!lua_isnil(cx->L, -1) && cfg_read_uint(cx, lua_gettop(cx->L), where, min, max, &v))
        *dst = (uint32_t)v;
    lua_pop(cx->L, 1);
}

static void read_name(cfg_ctx_t *cx, int t, const char *key, size_t max, const char **dst)
{
    cfg_rawfield(cx->L, t, key);
    char where[64];
    snprintf(where, sizeof where, "ha.%s", key);
    const char *s;
    if (!lua_isnil(cx->L, -1) && cfg_read_string(cx, lua_gettop(cx->L), where, true, &s)) {
        if (name_chars(s, max))
            *dst = ami_strdup(s);
        else
            cfg_error(cx, "%s: \"%.60s\" must be 1 to %zu characters of A-Z a-z 0-9 _ . -", where, s, max);
    }
    lua_pop(cx->L, 1);
}

/* "ip:port" (IPv4) or "unix:/path". */
static void parse_address(cfg_ctx_t *cx, const char *given, ami_redis_config_t *rc)
{
    if (strncmp(given, "unix:", 5) == 0) {
        if (!given[5]) {
            cfg_error(cx, "ha.redis.address: \"unix:\" needs a socket path, e.g. \"unix:/run/redis/redis.sock\"");
            return;
        }
        rc->unix_path = cfg_resolve_path(cx, given + 5);
        return;
    }
    const char *colon = strrchr(given, ':');
    char ip[64];
    size_t n = colon ? (size_t)(colon - given) : strlen(given);
    bool ok = n > 0 && n < sizeof ip;
    if (ok) {
        memcpy(ip, given, n);
        ip[n] = '\0';
        ok = !strchr(ip, ':') && !strchr(ip, '[') && ami_tcp_is_ip_literal(ip);
    }
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 6379;
    if (!ok || (colon && (!*(colon + 1) || *end || port < 1 || port > 65535))) {
        cfg_error(cx, "ha.redis.address: \"%.60s\" is not an IPv4 address with an optional port, nor "
                      "\"unix:/path\" (no host names: a lookup would block the engine; for IPv6 use a unix "
                      "socket or a local proxy)", given);
        return;
    }
    rc->ip = ami_strdup(ip);
    rc->port = (uint16_t)port;
}

static void load_redis(cfg_ctx_t *cx, int t)
{
    ami_engine_config_t *cfg = cx->cfg;
    ami_redis_config_t *rc = &cfg->ha.redis;
    lua_State *L = cx->L;
    if (lua_isnil(L, t)) {
        cfg_error(cx, "ha.redis: missing; give redis = { address = \"10.0.0.9:6379\" }");
        return;
    }
    if (!cfg_expect_table(cx, t, "ha.redis"))
        return;
    cfg_check_keys(cx, t, "ha.redis", REDIS_KEYS, COUNT(REDIS_KEYS));
    const char *s;
    cfg_rawfield(L, t, "address");
    if (lua_isnil(L, -1))
        cfg_error(cx, "ha.redis.address: missing; give \"10.0.0.9:6379\" or \"unix:/run/redis/redis.sock\"");
    else if (cfg_read_string(cx, lua_gettop(L), "ha.redis.address", true, &s))
        parse_address(cx, s, rc);
    lua_pop(L, 1);
    cfg_rawfield(L, t, "username");
    if (!lua_isnil(L, -1) && cfg_read_string(cx, lua_gettop(L), "ha.redis.username", true, &s))
        rc->username = ami_strdup(s);
    lua_pop(L, 1);
    rc->password = cfg_read_secret(cx, t, "ha.redis", cfg->ha_secret_source, sizeof cfg->ha_secret_source);
    read_u32_at(cx, t, "ha.redis", "connect_timeout_ms", 10, 600000, &rc->connect_timeout_ms);
    read_u32_at(cx, t, "ha.redis", "command_timeout_ms", 10, 600000, &rc->command_timeout_ms);
    read_u32_at(cx, t, "ha.redis", "backoff_initial_ms", 1, 3600000, &rc->backoff_initial_ms);
    read_u32_at(cx, t, "ha.redis", "backoff_max_ms", 1, 86400000, &rc->backoff_max_ms);
    read_u32_at(cx, t, "ha.redis", "max_pending", 1, 10000000, &rc->max_pending);
    if (rc->backoff_initial_ms > rc->backoff_max_ms)
        cfg_error(cx, "ha.redis: backoff_initial_ms (%u) is larger than backoff_max_ms (%u)", rc->backoff_initial_ms,
                  rc->backoff_max_ms);
}

static void load_stream_events(cfg_ctx_t *cx, int v)
{
    lua_State *L = cx->L;
    ami_ha_config_t *hc = &cx->cfg->ha;
    if (lua_type(L, v) == LUA_TSTRING && strcmp(lua_tostring(L, v), "*") == 0)
        return;
    if (!lua_istable(L, v)) {
        cfg_error(cx, "ha.stream.events: expected \"*\" or a list of event names such as {\"Newchannel\", \"Hangup\"}");
        return;
    }
    size_t n = lua_objlen(L, v);
    if (n > AMI_HA_MAX_STREAM_EVENTS) {
        cfg_error(cx, "ha.stream.events: %zu names, at most %d", n, AMI_HA_MAX_STREAM_EVENTS);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, v, (int)i + 1);
        char where[64];
        snprintf(where, sizeof where, "ha.stream.events[%zu]", i + 1);
        const char *s;
        if (cfg_read_string(cx, lua_gettop(L), where, true, &s)) {
            if (name_chars(s, 63))
                hc->stream_events[hc->nstream_events++] = ami_strdup(s);
            else
                cfg_error(cx, "%s: \"%.60s\" is not an event name", where, s);
        }
        lua_pop(L, 1);
    }
}

static void load_stream(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    ami_ha_config_t *hc = &cx->cfg->ha;
    if (lua_isnil(L, t) || !cfg_expect_table(cx, t, "ha.stream"))
        return;
    cfg_check_keys(cx, t, "ha.stream", STREAM_KEYS, COUNT(STREAM_KEYS));
    cfg_rawfield(L, t, "name");
    const char *s;
    if (lua_isnil(L, -1))
        cfg_error(cx, "ha.stream.name: missing; give the stream's key, e.g. name = \"ami:prod:events\"");
    else if (cfg_read_string(cx, lua_gettop(L), "ha.stream.name", true, &s)) {
        if (strlen(s) <= 128 && !strpbrk(s, " \r\n\t"))
            hc->stream = ami_strdup(s);
        else
            cfg_error(cx, "ha.stream.name: give a redis key of at most 128 bytes without spaces");
    }
    lua_pop(L, 1);
    cfg_rawfield(L, t, "events");
    if (!lua_isnil(L, -1))
        load_stream_events(cx, lua_gettop(L));
    lua_pop(L, 1);
    read_u32_at(cx, t, "ha.stream", "maxlen", 1, 1000000000, &hc->stream_maxlen);
    read_u32_at(cx, t, "ha.stream", "max_inflight", 1, 1000000, &hc->stream_max_inflight);
}

static void load_kv(cfg_ctx_t *cx, int t)
{
    ami_ha_config_t *hc = &cx->cfg->ha;
    if (lua_isnil(cx->L, t) || !cfg_expect_table(cx, t, "ha.kv"))
        return;
    cfg_check_keys(cx, t, "ha.kv", KV_KEYS, COUNT(KV_KEYS));
    uint32_t key = (uint32_t)hc->kv_max_key, value = (uint32_t)hc->kv_max_value;
    read_u32_at(cx, t, "ha.kv", "max_key_bytes", 1, 4096, &key);
    read_u32_at(cx, t, "ha.kv", "max_value_bytes", 1, 64u << 20, &value);
    hc->kv_max_key = key;
    hc->kv_max_value = value;
}

static void check_timing(cfg_ctx_t *cx)
{
    const ami_ha_config_t *hc = &cx->cfg->ha;
    if (hc->renew_ms * 2 > hc->lease_ms)
        cfg_error(cx, "ha.renew_ms: %u is more than half of lease_ms (%u); renew well before the lease expires, "
                      "e.g. lease_ms = 3000, renew_ms = 1000", hc->renew_ms, hc->lease_ms);
    else if ((uint64_t)hc->renew_ms + hc->redis.command_timeout_ms >= hc->lease_ms)
        cfg_error(cx, "ha: renew_ms (%u) + redis.command_timeout_ms (%u) must be less than lease_ms (%u), or a "
                      "single slow renew loses the lease", hc->renew_ms, hc->redis.command_timeout_ms, hc->lease_ms);
}

void cfg_load_ha(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    if (lua_isnil(L, t) || !cfg_expect_table(cx, t, "ha"))
        return;
    ami_ha_config_t *hc = &cx->cfg->ha;
    cx->cfg->ha_enabled = true;
    cfg_check_keys(cx, t, "ha", HA_KEYS, COUNT(HA_KEYS));
    read_name(cx, t, "cluster", 48, &hc->cluster);
    if (!hc->cluster)
        cfg_error(cx, "ha.cluster: missing; give the same short name on every instance, e.g. cluster = \"prod\"");
    read_name(cx, t, "instance", 63, &hc->instance);
    read_u32_at(cx, t, "ha", "lease_ms", 200, 600000, &hc->lease_ms);
    read_u32_at(cx, t, "ha", "renew_ms", 20, 300000, &hc->renew_ms);
    static const char *const subs[] = {"redis", "kv", "stream"};
    for (size_t i = 0; i < COUNT(subs); i++) {
        cfg_rawfield(L, t, subs[i]);
        int v = lua_gettop(L);
        if (i == 0)
            load_redis(cx, v);
        else if (i == 1)
            load_kv(cx, v);
        else
            load_stream(cx, v);
        lua_pop(L, 1);
    }
    check_timing(cx);
}

void cfg_free_ha(ami_engine_config_t *cfg)
{
    ami_ha_config_t *hc = &cfg->ha;
    ami_free((char *)hc->cluster);
    ami_free((char *)hc->instance);
    ami_free((char *)hc->redis.ip);
    ami_free((char *)hc->redis.unix_path);
    ami_free((char *)hc->redis.username);
    if (hc->redis.password) {
        explicit_bzero((char *)hc->redis.password, strlen(hc->redis.password));
        ami_free((char *)hc->redis.password);
    }
    ami_free((char *)hc->stream);
    for (size_t i = 0; i < hc->nstream_events && i < AMI_HA_MAX_STREAM_EVENTS; i++)
        ami_free((char *)hc->stream_events[i]);
    ami_ha_config_default(hc);
    cfg->ha_enabled = false;
    cfg->ha_secret_source[0] = '\0';
}

void cfg_describe_ha(const ami_engine_config_t *cfg, ami_buf_t *out)
{
    const ami_ha_config_t *hc = &cfg->ha;
    if (!cfg->ha_enabled)
        return; /* the summary of an engine without ha reads as it always did */
    ami_buf_printf(out, "ha: cluster %s, instance %s, lease %u ms renewed every %u ms\n", hc->cluster,
                   hc->instance ? hc->instance : "<hostname>-<pid>", hc->lease_ms, hc->renew_ms);
    if (hc->redis.ip)
        ami_buf_printf(out, "  redis: %s:%u", hc->redis.ip, hc->redis.port);
    else
        ami_buf_printf(out, "  redis: unix:%s", hc->redis.unix_path ? hc->redis.unix_path : "?");
    ami_buf_printf(out, "%s%s, password %s%s; timeouts connect %u ms, command %u ms; max_pending %u\n",
                   hc->redis.username ? ", user " : "", hc->redis.username ? hc->redis.username : "",
                   hc->redis.password ? "from " : "none", hc->redis.password ? cfg->ha_secret_source : "",
                   hc->redis.connect_timeout_ms, hc->redis.command_timeout_ms, hc->redis.max_pending);
    ami_buf_printf(out, "  kv: keys up to %zu bytes, values up to %zu bytes\n", hc->kv_max_key, hc->kv_max_value);
    if (hc->stream)
        ami_buf_printf(out, "  stream: %s, %s, maxlen ~%u, max_inflight %u\n", hc->stream,
                       hc->nstream_events ? "listed events" : "every event", hc->stream_maxlen,
                       hc->stream_max_inflight);
}

static bool differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

bool ami_config_ha_changed(const ami_engine_config_t *a, const ami_engine_config_t *b)
{
    const ami_ha_config_t *x = &a->ha, *y = &b->ha;
    if (a->ha_enabled != b->ha_enabled)
        return true;
    return a->ha_enabled &&
           (differ(x->cluster, y->cluster) || differ(x->instance, y->instance) || x->lease_ms != y->lease_ms ||
            x->renew_ms != y->renew_ms || differ(x->redis.ip, y->redis.ip) || x->redis.port != y->redis.port ||
            differ(x->redis.unix_path, y->redis.unix_path) || differ(x->stream, y->stream));
}
