/*
 * The coordinator: one lease per server, driven by a short periodic tick
 * that asks each lease what is due (lease.h) and runs the matching Redis
 * script; the answers go back into the lease, and every change of owner is
 * logged and counted.
 */
#include "ha/ha_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/clock.h"

#define MS 1000000LL
#define NOTICE_MARGIN_NS (100 * MS) /* a release message reaches us this soon after the owner stopped */

/* KEYS: lease, epoch. ARGV: owner, token, ttl ms, lowest acceptable epoch.
 * Ours (same token): extend. Someone else's: report it. Free: take it with
 * the next epoch, never below one an instance has already seen (a Redis
 * restarted without its data must not hand out old epochs again). */
static const char ACQUIRE_LUA[] =
    "local h = redis.call('HMGET', KEYS[1], 'token', 'epoch', 'owner')\n"
    "if h[1] then\n"
    "  if h[1] == ARGV[2] then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "    return {1, tonumber(h[2]), h[3], tonumber(ARGV[3])}\n"
    "  end\n"
    "  return {0, tonumber(h[2]), h[3], redis.call('PTTL', KEYS[1])}\n"
    "end\n"
    "local e = redis.call('INCR', KEYS[2])\n"
    "local floor = tonumber(ARGV[4])\n"
    "if e <= floor then e = floor + 1; redis.call('SET', KEYS[2], e) end\n"
    "redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', ARGV[2], 'epoch', e)\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "return {1, e, ARGV[1], tonumber(ARGV[3])}\n";

/* KEYS: lease. ARGV: token, ttl ms. 1 if still ours and extended. */
static const char RENEW_LUA[] =
    "if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n";

/* KEYS: lease. ARGV: token, channel, server key. */
static const char RELEASE_LUA[] =
    "if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

int64_t ha_now(void)
{
    return ami_now_ns();
}

ha_server_t *ha_server_by_key(const ami_ha_t *ha, const char *key)
{
    if (!key)
        return NULL;
    for (size_t i = 0; i < ha->nservers; i++)
        if (ha->servers[i].key == key)
            return &ha->servers[i];
    for (size_t i = 0; i < ha->nservers; i++)
        if (strcmp(ha->servers[i].key, key) == 0)
            return &ha->servers[i];
    return NULL;
}

/* ---- what each change means ------------------------------------------------------------ */

static void publish_state(ha_server_t *s, int64_t now)
{
    ami_gauge_set(s->m_acting, ami_lease_acting(&s->lease, now) ? 1 : 0);
    ami_gauge_set(s->m_epoch, (double)s->lease.epoch);
}

static void on_change(ha_server_t *s, ami_lease_change_t c, int64_t now, const char *previous)
{
    ami_ha_t *ha = s->ha;
    if (c == AMI_LEASE_SAME)
        return;
    ami_counter_inc(s->m_changes[c]);
    publish_state(s, now);
    bool redis_up = ami_redis_up(ha->lease_conn);
    switch (c) {
    case AMI_LEASE_ACQUIRED:
    case AMI_LEASE_RESUMED:
        AMI_LOG(ha->log, AMI_LOG_INFO,
                c == AMI_LEASE_ACQUIRED ? "lease acquired: this instance now runs the server's scripts"
                                        : "lease resumed: this instance runs the server's scripts again",
                AMI_F_STR("server_key", s->key), AMI_F_UINT("epoch", s->lease.epoch),
                AMI_F_STR("instance", ha->instance), AMI_F_STR("previous_owner", previous));
        snprintf(s->seen_owner, sizeof s->seen_owner, "%s", ha->instance);
        gap_report(s, now);
        break;
    case AMI_LEASE_EXPIRED:
        AMI_LOG(ha->log, AMI_LOG_WARN,
                "lease not renewed in time: stopped acting for the server (scripts do not run for it)",
                AMI_F_STR("server_key", s->key), AMI_F_UINT("epoch", s->lease.epoch),
                AMI_F_BOOL("redis_up", redis_up), AMI_F_BOOL("ami_up", s->ami_up));
        s->seen_owner[0] = '\0';
        break;
    case AMI_LEASE_LOST:
        AMI_LOG(ha->log, AMI_LOG_WARN, "lease lost: redis refused the renew; stopped acting for the server",
                AMI_F_STR("server_key", s->key), AMI_F_UINT("epoch", s->lease.epoch));
        s->seen_owner[0] = '\0';
        break;
    default:
        break;
    }
}

/* A refused acquire names the current owner: log when it changes. */
static void note_other_owner(ha_server_t *s)
{
    if (!s->lease.owner[0] || strcmp(s->lease.owner, s->seen_owner) == 0)
        return;
    snprintf(s->seen_owner, sizeof s->seen_owner, "%s", s->lease.owner);
    AMI_LOG(s->ha->log, AMI_LOG_INFO, "server owned by another instance; standing by",
            AMI_F_STR("server_key", s->key), AMI_F_STR("owner", s->lease.owner),
            AMI_F_UINT("epoch", s->lease.epoch));
    publish_state(s, ha_now());
}

/* ---- lease commands and their replies ---------------------------------------------------- */

static bool parse_acquire(const ami_redis_reply_t *r, ami_lease_seen_t *seen)
{
    if (ami_redis_reply_elements(r) != 4)
        return false;
    const ami_redis_reply_t *won = ami_redis_reply_at(r, 0), *epoch = ami_redis_reply_at(r, 1);
    const ami_redis_reply_t *pttl = ami_redis_reply_at(r, 3);
    if (ami_redis_reply_type(won) != AMI_REDIS_INTEGER || ami_redis_reply_type(pttl) != AMI_REDIS_INTEGER)
        return false;
    seen->won = ami_redis_reply_integer(won) == 1;
    long long e = ami_redis_reply_integer(epoch);
    seen->epoch = e > 0 ? (uint64_t)e : 0;
    seen->owner = ami_redis_reply_str(ami_redis_reply_at(r, 2), NULL);
    seen->pttl_ms = ami_redis_reply_integer(pttl);
    return true;
}

static void on_lease_reply(void *ud, const ami_redis_reply_t *reply, const ami_err_t *err)
{
    ha_server_t *s = ud;
    ami_lease_t *l = &s->lease;
    uint64_t seq = s->req_seq;
    ami_lease_op_t op = l->inflight;
    int64_t now = ha_now();
    s->req = NULL;
    ami_lease_seen_t seen;
    if (err || (op == AMI_LEASE_OP_ACQUIRE && !parse_acquire(reply, &seen)) ||
        (op != AMI_LEASE_OP_ACQUIRE && ami_redis_reply_type(reply) != AMI_REDIS_INTEGER)) {
        AMI_LOG(s->ha->log, AMI_LOG_DEBUG, "lease command failed", AMI_F_STR("server_key", s->key),
                AMI_F_UINT("op", op), AMI_F_STR("error", err ? err->msg : "unexpected reply"));
        ami_lease_on_done(l, seq, now);
        return;
    }
    if (op == AMI_LEASE_OP_ACQUIRE) {
        char previous[AMI_LEASE_OWNER_MAX];
        snprintf(previous, sizeof previous, "%s", s->seen_owner);
        ami_lease_change_t c = ami_lease_on_acquire(l, seq, now, &seen);
        if (c == AMI_LEASE_SAME)
            note_other_owner(s);
        on_change(s, c, now, previous);
    } else if (op == AMI_LEASE_OP_RENEW) {
        on_change(s, ami_lease_on_renew(l, seq, now, ami_redis_reply_integer(reply) == 1), now, "");
    } else {
        ami_lease_on_done(l, seq, now);
        AMI_LOG(s->ha->log, AMI_LOG_INFO, "lease released", AMI_F_STR("server_key", s->key),
                AMI_F_UINT("epoch", l->epoch), AMI_F_BOOL("held", ami_redis_reply_integer(reply) == 1));
    }
}

static int send_op(ha_server_t *s, ami_lease_op_t op, ami_err_t *err)
{
    ami_ha_t *ha = s->ha;
    char ttl[24], floor[24], nkeys[] = "2";
    snprintf(ttl, sizeof ttl, "%u", ha->cfg.lease_ms);
    snprintf(floor, sizeof floor, "%llu", (unsigned long long)s->lease.epoch);
    const char *argv[9];
    int argc = 0;
    argv[argc++] = "EVAL";
    if (op == AMI_LEASE_OP_ACQUIRE) {
        const char *a[] = {ACQUIRE_LUA, nkeys, s->lease_key, s->epoch_key, ha->instance, ha->token, ttl, floor};
        memcpy(argv + argc, a, sizeof a);
        argc += 8;
    } else if (op == AMI_LEASE_OP_RENEW) {
        const char *a[] = {RENEW_LUA, "1", s->lease_key, ha->token, ttl};
        memcpy(argv + argc, a, sizeof a);
        argc += 5;
    } else {
        const char *a[] = {RELEASE_LUA, "1", s->lease_key, ha->token, ha->channel, s->key};
        memcpy(argv + argc, a, sizeof a);
        argc += 6;
    }
    size_t lens[9];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return ami_redis_command(ha->lease_conn, argc, argv, lens, on_lease_reply, s, &s->req, err);
}

static bool reachable(ha_server_t *s, int64_t now)
{
    if (s->lease.role == AMI_LEASE_OWNER)
        return s->ami_up || now - s->ami_down_since < s->lease.t.lease_ns;
    return s->ami_up;
}

static void track_ami(ha_server_t *s, int64_t now)
{
    ami_server_info_t info;
    bool up = ami_client_server_info(s->ha->client, s->index, &info) == 0 && info.state == AMI_CONN_CONNECTED;
    if (s->ami_up && !up)
        s->ami_down_since = now;
    s->ami_up = up;
}

static void step(ha_server_t *s, int64_t now)
{
    ami_lease_change_t c;
    track_ami(s, now);
    ami_lease_op_t op = ami_lease_due(&s->lease, now, reachable(s, now), &c);
    on_change(s, c, now, "");
    bool redis_up = ami_redis_up(s->ha->lease_conn);
    if (op == AMI_LEASE_OP_NONE || (!redis_up && op != AMI_LEASE_OP_RELEASE))
        return; /* asked for again at the next tick */
    uint64_t seq = ami_lease_sent(&s->lease, op, now);
    s->req_seq = seq;
    ami_err_t err;
    if (!redis_up) {
        ami_lease_on_done(&s->lease, seq, now); /* a release is given up: the lease expires by itself */
        return;
    }
    if (send_op(s, op, &err) < 0) {
        ami_lease_on_done(&s->lease, seq, now);
        AMI_LOG(s->ha->log, AMI_LOG_DEBUG, "lease command not sent", AMI_F_STR("server_key", s->key),
                AMI_F_STR("error", err.msg));
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    ami_ha_t *ha = t->data;
    int64_t now = ha_now();
    for (size_t i = 0; i < ha->nservers; i++)
        step(&ha->servers[i], now);
}

static void on_lease_conn(void *ud, bool up, const char *why)
{
    ami_ha_t *ha = ud;
    if (up)
        on_tick(ha->loop, &ha->tick, 0); /* renew or acquire at once */
}

static void on_released(void *ud, const char *payload, size_t len)
{
    ami_ha_t *ha = ud;
    char key[HA_KEY_MAX];
    if (len == 0 || len >= sizeof key)
        return;
    memcpy(key, payload, len);
    key[len] = '\0';
    ha_server_t *s = ha_server_by_key(ha, key);
    if (!s || ha->draining)
        return;
    int64_t now = ha_now();
    ami_lease_poke(&s->lease, now, NOTICE_MARGIN_NS);
    step(s, now);
}

/* ---- the API ------------------------------------------------------------------------------ */

bool ami_ha_acting(const ami_ha_t *ha, const char *server_key)
{
    const ha_server_t *s = ha_server_by_key(ha, server_key);
    /* The coarse clock lags the precise one by at most a few ms, far inside the guard. */
    return s && ami_lease_acting(&s->lease, ami_now_coarse_ns());
}

int ami_ha_lease_info(const ami_ha_t *ha, const char *server_key, ami_ha_lease_info_t *out)
{
    const ha_server_t *s = ha_server_by_key(ha, server_key);
    if (!s)
        return -1;
    out->acting = ami_lease_acting(&s->lease, ha_now());
    out->role = ami_lease_role_name(s->lease.role);
    out->epoch = s->lease.epoch;
    out->owner = out->acting ? ha->instance : s->lease.owner;
    return 0;
}

const char *ami_ha_instance(const ami_ha_t *ha)
{
    return ha->instance;
}

size_t ami_ha_acting_count(const ami_ha_t *ha)
{
    int64_t now = ha_now();
    size_t n = 0;
    for (size_t i = 0; i < ha->nservers; i++)
        n += ami_lease_acting(&ha->servers[i].lease, now);
    return n;
}

bool ami_ha_redis_up(const ami_ha_t *ha)
{
    return ami_redis_up(ha->lease_conn) && ami_redis_up(ha->sub_conn) && ami_redis_up(ha->data_conn);
}

void ami_ha_health(const ami_ha_t *ha, ami_buf_t *out)
{
    int64_t now = ha_now();
    ami_buf_printf(out, "ha: instance %s owns %zu of %zu servers; redis %s\n", ha->instance,
                   ami_ha_acting_count(ha), ha->nservers, ami_ha_redis_up(ha) ? "up" : "down");
    for (size_t i = 0; i < ha->nservers; i++) {
        const ha_server_t *s = &ha->servers[i];
        bool acting = ami_lease_acting(&s->lease, now);
        ami_buf_printf(out, "ha %s %s owner=%s epoch=%llu\n", s->key, acting ? "owned" : "standby",
                       acting ? ha->instance : (s->lease.owner[0] ? s->lease.owner : "unknown"),
                       (unsigned long long)s->lease.epoch);
    }
}

void ami_ha_drain(ami_ha_t *ha)
{
    if (ha->draining)
        return;
    ha->draining = true;
    int64_t now = ha_now();
    size_t held = 0;
    for (size_t i = 0; i < ha->nservers; i++) {
        ha_server_t *s = &ha->servers[i];
        held += ami_lease_acting(&s->lease, now);
        ami_lease_release(&s->lease, now);
        publish_state(s, now);
        step(s, now);
    }
    AMI_LOG(ha->log, AMI_LOG_INFO, "draining: giving every lease back", AMI_F_STR("instance", ha->instance),
            AMI_F_UINT("owned", held));
}

bool ami_ha_drained(const ami_ha_t *ha)
{
    for (size_t i = 0; i < ha->nservers; i++)
        if (!ami_lease_settled(&ha->servers[i].lease))
            return false;
    return true;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

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
    ami_redis_on_state(ha->lease_conn, on_lease_conn, ha);
    return ami_redis_subscribe(ha->sub_conn, ha->channel, on_released, ha, err);
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
    ev_init(&ha->tick, on_tick);
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
