/*
 * The coordinator's life: the config checked and copied, the instance's
 * name and random token, one lease per server of the client, the three
 * Redis connections, start and free.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ha/ha_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define MS 1000000LL


void ami_ha_config_default(ami_ha_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    ami_redis_config_default(&cfg->redis);
    cfg->lease_ms = 3000;
    cfg->renew_ms = 1000;
    cfg->kv_max_key = 512;
    cfg->kv_max_value = 65536;
    cfg->stream_maxlen = 100000;
    cfg->stream_max_inflight = 1000;
}

static bool valid_name(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

static int validate(const ami_ha_config_t *c, ami_err_t *err)
{
    if (!valid_name(c->cluster, 48))
        return ami_err_set(err, AMI_E_CONFIG, "ha.cluster: give 1 to 48 characters of A-Z a-z 0-9 _ . -");
    if (c->instance && !valid_name(c->instance, HA_INSTANCE_MAX - 1))
        return ami_err_set(err, AMI_E_CONFIG, "ha.instance: give 1 to %d characters of A-Z a-z 0-9 _ . -",
                           HA_INSTANCE_MAX - 1);
    if (c->lease_ms < 200 || c->lease_ms > 600000)
        return ami_err_set(err, AMI_E_CONFIG, "ha.lease_ms: %u is outside 200..600000", c->lease_ms);
    if (c->renew_ms < 20 || c->renew_ms * 2 > c->lease_ms)
        return ami_err_set(err, AMI_E_CONFIG, "ha.renew_ms: %u must be at least 20 and at most half of "
                                              "lease_ms (%u), so a lease is renewed well before it expires",
                           c->renew_ms, c->lease_ms);
    uint32_t timeout = c->redis.command_timeout_ms ? c->redis.command_timeout_ms : 1000;
    if ((uint64_t)c->renew_ms + timeout >= c->lease_ms)
        return ami_err_set(err, AMI_E_CONFIG, "ha: renew_ms (%u) + redis command_timeout_ms (%u) must be "
                                              "less than lease_ms (%u), or one slow renew loses the lease",
                           c->renew_ms, timeout, c->lease_ms);
    if (c->nstream_events > AMI_HA_MAX_STREAM_EVENTS)
        return ami_err_set(err, AMI_E_CONFIG, "ha.stream.events: at most %d names", AMI_HA_MAX_STREAM_EVENTS);
    return 0;
}

static bool copy_config(ami_ha_t *ha, const ami_ha_config_t *cfg)
{
    ha->cfg = *cfg;
    ha->cluster = ami_strdup(cfg->cluster);
    ha->stream_name = cfg->stream ? ami_strdup(cfg->stream) : NULL;
    bool ok = ha->cluster && (!cfg->stream || ha->stream_name);
    for (size_t i = 0; i < cfg->nstream_events; i++) {
        ha->stream_events[i] = ami_strdup(cfg->stream_events[i]);
        ok = ok && ha->stream_events[i];
    }
    ha->cfg.cluster = ha->cluster;
    ha->cfg.stream = ha->stream_name;
    for (size_t i = 0; i < AMI_HA_MAX_STREAM_EVENTS; i++)
        ha->cfg.stream_events[i] = i < cfg->nstream_events ? ha->stream_events[i] : NULL;
    if (!ha->cfg.kv_max_key)
        ha->cfg.kv_max_key = 512;
    if (!ha->cfg.kv_max_value)
        ha->cfg.kv_max_value = 65536;
    if (!ha->cfg.stream_maxlen)
        ha->cfg.stream_maxlen = 100000;
    if (!ha->cfg.stream_max_inflight)
        ha->cfg.stream_max_inflight = 1000;
    return ok;
}

static void make_identity(ami_ha_t *ha)
{
    if (ha->cfg.instance) {
        snprintf(ha->instance, sizeof ha->instance, "%s", ha->cfg.instance);
    } else {
        char host[HA_INSTANCE_MAX] = "engine";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(ha->instance, sizeof ha->instance, "%.40s-%ld", host, (long)getpid());
    }
    ha->cfg.instance = NULL; /* only ha->instance holds it */
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, GRND_NONBLOCK) != (ssize_t)sizeof raw) {
        uint64_t a = (uint64_t)ami_now_ns() ^ ((uint64_t)getpid() << 32), b = a * 6364136223846793005ULL + 1;
        memcpy(raw, &a, 8);
        memcpy(raw + 8, &b, 8);
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(ha->token + 2 * i, 3, "%02x", raw[i]);
    snprintf(ha->prefix, sizeof ha->prefix, "ami:%s:", ha->cluster);
    snprintf(ha->channel, sizeof ha->channel, "%sreleased", ha->prefix);
}

static void init_server_metrics(ha_server_t *s, ami_metrics_t *m)
{
    const char *const l[] = {"server_key", s->key, NULL};
    s->m_acting = ami_metrics_gauge(m, "ami_ha_owner", "1 while this instance holds the server's lease and acts for it",
                                    l, NULL);
    s->m_epoch = ami_metrics_gauge(m, "ami_ha_epoch", "The server's fencing epoch (ours when owner, the latest seen otherwise)",
                                   l, NULL);
    for (int c = AMI_LEASE_ACQUIRED; c <= AMI_LEASE_LOST; c++) {
        const char *const lc[] = {"server_key", s->key, "change", ami_lease_change_name((ami_lease_change_t)c), NULL};
        s->m_changes[c] = ami_metrics_counter(m, "ami_ha_lease_changes_total",
                                              "Lease transitions of this instance by kind", lc, NULL);
    }
    s->m_gap_calls = ami_metrics_counter(m, "ami_ha_gap_calls_total",
                                         "Calls that started while no instance acted for the server, reported at takeovers",
                                         l, NULL);
    s->m_takeovers = ami_metrics_counter(m, "ami_ha_takeovers_total",
                                         "Leases this instance took after a time with no instance acting", l, NULL);
}

static int init_servers(ami_ha_t *ha, ami_err_t *err)
{
    size_t n = ami_client_server_count(ha->client);
    ha->servers = ami_calloc(n ? n : 1, sizeof *ha->servers);
    if (!ha->servers)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory");
    int64_t lease_ns = (int64_t)ha->cfg.lease_ms * MS;
    int64_t guard = lease_ns / 20 > 50 * MS ? lease_ns / 20 : 50 * MS;
    ami_lease_timing_t t = {.lease_ns = lease_ns, .renew_ns = (int64_t)ha->cfg.renew_ms * MS,
                            .retry_ns = (int64_t)ha->cfg.renew_ms * MS, .guard_ns = guard};
    int64_t now = ha_now();
    for (size_t i = 0; i < n; i++) {
        ha_server_t *s = &ha->servers[i];
        s->ha = ha;
        s->index = (uint32_t)i;
        s->key = ami_client_server_key(ha->client, i);
        snprintf(s->lease_key, sizeof s->lease_key, "%slease:%s", ha->prefix, s->key);
        snprintf(s->epoch_key, sizeof s->epoch_key, "%sepoch:%s", ha->prefix, s->key);
        ami_lease_init(&s->lease, &t, now);
        init_server_metrics(s, ha->metrics);
    }
    ha->nservers = n;
    return 0;
}

static ami_redis_t *open_conn(ami_ha_t *ha, const char *name, ami_err_t *err)
{
    ami_redis_config_t rc = ha->cfg.redis;
    rc.name = name;
    return ami_redis_new(ha->loop, &rc, ha->log, ha->metrics, err);
}

static int open_conns(ami_ha_t *ha, ami_err_t *err)
{
    ha->lease_conn = open_conn(ha, "ha-lease", err);
    ha->sub_conn = ha->lease_conn ? open_conn(ha, "ha-sub", err) : NULL;
    ha->data_conn = ha->sub_conn ? open_conn(ha, "ha-data", err) : NULL;
    if (!ha->data_conn)
        return -1;
    ami_redis_on_state(ha->lease_conn, ha_on_lease_conn, ha);
    return ami_redis_subscribe(ha->sub_conn, ha->channel, ha_on_released, ha, err);
}

ami_ha_t *ami_ha_new(ami_client_t *client, const ami_ha_config_t *cfg, ami_err_t *err)
{
    if (validate(cfg, err) < 0)
        return NULL;
    ami_ha_t *ha = ami_calloc(1, sizeof *ha);
    if (!ha || !copy_config(ha, cfg)) {
        ami_ha_free(ha);
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the high-availability coordinator");
        return NULL;
    }
    ha->client = client;
    ha->loop = ami_client_loop(client);
    ha->log = ami_client_logger(client);
    ha->metrics = ami_client_metrics(client);
    make_identity(ha);
    ev_init(&ha->tick, ha_on_tick);
    ha->tick.data = ha;
    ha->m_unowned = ami_metrics_histogram(ha->metrics, "ami_ha_unowned_seconds",
                                          "At each takeover: how long no instance had acted for the server",
                                          NULL, 0, NULL, NULL);
    if (init_servers(ha, err) < 0 || open_conns(ha, err) < 0 || gap_start(ha, err) < 0 ||
        stream_start(ha, err) < 0) {
        ami_ha_free(ha);
        return NULL;
    }
    return ha;
}

void ami_ha_start(ami_ha_t *ha)
{
    if (ha->started)
        return;
    ha->started = true;
    double every = ha->cfg.renew_ms / 20000.0;
    every = every < 0.01 ? 0.01 : every > 0.05 ? 0.05 : every;
    ev_timer_set(&ha->tick, every, every);
    ev_timer_start(ha->loop, &ha->tick);
    AMI_LOG(ha->log, AMI_LOG_INFO, "high availability on: leases in redis", AMI_F_STR("instance", ha->instance),
            AMI_F_STR("cluster", ha->cluster), AMI_F_UINT("lease_ms", ha->cfg.lease_ms),
            AMI_F_UINT("renew_ms", ha->cfg.renew_ms), AMI_F_UINT("servers", ha->nservers));
    ami_redis_start(ha->lease_conn);
    ami_redis_start(ha->sub_conn);
    ami_redis_start(ha->data_conn);
}

void ami_ha_free(ami_ha_t *ha)
{
    if (!ha)
        return;
    if (ha->loop)
        ev_timer_stop(ha->loop, &ha->tick);
    stream_stop(ha);
    gap_stop(ha);
    ami_redis_free(ha->lease_conn);
    ami_redis_free(ha->sub_conn);
    ami_redis_free(ha->data_conn);
    for (size_t i = 0; i < ha->nservers; i++)
        ami_free(ha->servers[i].ring);
    ami_free(ha->servers);
    ami_free(ha->cluster);
    ami_free(ha->stream_name);
    for (size_t i = 0; i < AMI_HA_MAX_STREAM_EVENTS; i++)
        ami_free(ha->stream_events[i]);
    ami_free(ha);
}
