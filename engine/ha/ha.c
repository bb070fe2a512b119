/*
 * The coordinator: one lease per server, driven by a short periodic tick
 * that asks each lease what is due (lease.h) and runs the matching Redis
 * script; the answers go back into the lease, and every change of owner is
 * logged and counted.
 */
#include "ha/ha_internal.h"

#include <stdio.h>
#include <string.h>

#include "util/clock.h"

#define MS 1000000LL
#define NOTICE_MARGIN_NS (100 * MS) /* a release message reaches us this soon after the owner stopped */

/* KEYS: lease, epoch. ARGV: owner, token, ttl ms, lowest acceptable
 * epoch, "1" if a free lease may be taken. Replies {code, epoch, owner,
 * pttl}; code 1: ours now (taken, or already ours: extended), 0: someone
 * else's, 2: free but not taken. A new epoch is the counter + 1, never
 * below one an instance has seen; a counter that is gone (Redis lost its
 * data) starts again from Redis's clock in ms, above every epoch it handed
 * out before, so epochs only grow. */
static const char ACQUIRE_LUA[] =
    "local h = redis.call('HMGET', KEYS[1], 'token', 'epoch', 'owner')\n"
    "if h[1] then\n"
    "  if h[1] == ARGV[2] then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "    return {1, tonumber(h[2]), h[3], tonumber(ARGV[3])}\n"
    "  end\n"
    "  return {0, tonumber(h[2]), h[3], redis.call('PTTL', KEYS[1])}\n"
    "end\n"
    "if ARGV[5] ~= '1' then return {2, 0, false, 0} end\n"
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local e\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  e = redis.call('INCR', KEYS[2])\n"
    "else\n"
    "  local t = redis.call('TIME')\n"
    "  e = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "end\n"
    "local floor = tonumber(ARGV[4])\n"
    "if e <= floor then e = floor + 1 end\n"
    "redis.call('SET', KEYS[2], string.format('%.0f', e))\n"
    "redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', ARGV[2], 'epoch', string.format('%.0f', e))\n"
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
    seen->free = ami_redis_reply_integer(won) == 2;
    long long e = ami_redis_reply_integer(epoch);
    seen->epoch = e > 0 ? (uint64_t)e : 0;
    seen->owner = ami_redis_reply_str(ami_redis_reply_at(r, 2), NULL);
    seen->pttl_ms = ami_redis_reply_integer(pttl);
    return true;
}

/* A free lease may be taken once this instance has been connected to the
 * same Redis run for a whole lease: any lease an earlier run (a Redis that
 * restarted without its data, or a master replaced by a replica that had
 * not received it) handed out has run out by then, in its holder's own
 * view, so two owners never act at once. Sooner when this instance has
 * seen the lease held in this run: every instance waits the same way
 * before its first take, so that holder's lease, and any after it, belong
 * to this run. */
static int64_t quarantine_left(const ha_server_t *s, int64_t now)
{
    int64_t end = s->ha->run_since + (int64_t)s->ha->cfg.lease_ms * MS;
    return s->held_seen || end <= now ? 0 : end - now;
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
        if (seen.free) /* try again when the quarantine ends */
            seen.pttl_ms = (quarantine_left(s, l->inflight_sent) + MS - 1) / MS;
        else if (!seen.won)
            s->held_seen = true;
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
    const char *may_take = quarantine_left(s, ha_now()) ? "0" : "1";
    const char *argv[10];
    int argc = 0;
    argv[argc++] = "EVAL";
    if (op == AMI_LEASE_OP_ACQUIRE) {
        const char *a[] = {ACQUIRE_LUA, nkeys, s->lease_key, s->epoch_key, ha->instance, ha->token, ttl, floor,
                           may_take};
        memcpy(argv + argc, a, sizeof a);
        argc += 9;
    } else if (op == AMI_LEASE_OP_RENEW) {
        const char *a[] = {RENEW_LUA, "1", s->lease_key, ha->token, ttl};
        memcpy(argv + argc, a, sizeof a);
        argc += 5;
    } else {
        const char *a[] = {RELEASE_LUA, "1", s->lease_key, ha->token, ha->channel, s->key};
        memcpy(argv + argc, a, sizeof a);
        argc += 6;
    }
    size_t lens[10];
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
    if (op == AMI_LEASE_OP_NONE || (!redis_up && op != AMI_LEASE_OP_RELEASE) ||
        (op == AMI_LEASE_OP_ACQUIRE && !s->ha->run_known))
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

/* ---- which Redis run: INFO server's run_id --------------------------------------------------- */

static void on_info(void *ud, const ami_redis_reply_t *reply, const ami_err_t *err)
{
    ami_ha_t *ha = ud;
    ha->info_req = NULL;
    size_t len;
    const char *text = reply ? ami_redis_reply_str(reply, &len) : NULL;
    const char *at = text ? strstr(text, "run_id:") : NULL;
    if (!at)
        return; /* asked again at the next tick */
    char run[sizeof ha->run_id];
    size_t n = strcspn(at + 7, "\r\n");
    snprintf(run, sizeof run, "%.*s", (int)(n < sizeof run ? n : sizeof run - 1), at + 7);
    if (!ha->run_known && strcmp(run, ha->run_id) != 0) {
        ha->run_since = ha_now();
        for (size_t i = 0; i < ha->nservers; i++)
            ha->servers[i].held_seen = false;
        AMI_LOG(ha->log, AMI_LOG_INFO, "redis run seen: free leases are taken after one lease from now",
                AMI_F_STR("run_id", run), AMI_F_STR("previous_run_id", ha->run_id),
                AMI_F_UINT("wait_ms", ha->cfg.lease_ms));
        snprintf(ha->run_id, sizeof ha->run_id, "%s", run);
    }
    ha->run_known = true;
}

static void ask_run_id(ami_ha_t *ha)
{
    if (ha->run_known || ha->info_req || !ami_redis_up(ha->lease_conn))
        return;
    const char *argv[] = {"INFO", "server"};
    size_t lens[] = {4, 6};
    ami_redis_command(ha->lease_conn, 2, argv, lens, on_info, ha, &ha->info_req, NULL);
}

void ha_on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    ami_ha_t *ha = t->data;
    int64_t now = ha_now();
    ask_run_id(ha);
    for (size_t i = 0; i < ha->nservers; i++)
        step(&ha->servers[i], now);
}

void ha_on_lease_conn(void *ud, bool up, const char *why)
{
    ami_ha_t *ha = ud;
    ha->run_known = false; /* it may be another Redis now: ask again */
    if (!up)
        return;
    /* Owners renew at once: if Redis lost their leases they learn it now. */
    for (size_t i = 0; i < ha->nservers; i++)
        ami_lease_renew_soon(&ha->servers[i].lease);
    ha_on_tick(ha->loop, &ha->tick, 0);
}

void ha_on_released(void *ud, const char *payload, size_t len)
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
