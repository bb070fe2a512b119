/*
 * High availability: two or three engine instances for one Asterisk
 * cluster, on different machines, coordinated through Redis. A client of
 * the cluster layer like any embedder, beside it; an engine without it
 * behaves exactly as before.
 *
 * Every instance connects to every Asterisk server (hot standby), but the
 * scripts of a server run only on the instance that holds its lease
 * (lease.h): ami_ha_acting() is the one question the Lua runtime asks per
 * event and per action. Leases live in Redis under "ami:<cluster>:":
 *   lease:<server_key>  hash {owner, token, epoch}, with a time to live
 *   epoch:<server_key>  counter; INCR at every change of owner (the fencing epoch)
 *   released            pub/sub channel: "<server_key>" when a lease is given back
 * Each is changed only by a Lua script run inside Redis (EVAL), so acquire
 * (take it if free), renew and release (only with our token) are atomic.
 * The token is random per process: two processes started with the same
 * instance name still never share a lease.
 *
 * Each instance knows which Redis process it talks to (INFO server,
 * run_id). On a run new to it (its own start, a Redis restart, a failover)
 * it takes a free lease only after one whole lease, or once it has seen
 * that lease held in this run: a lease the previous run handed out has run
 * out by then in its holder's own view. Owners renew at once after every
 * reconnect. A counter lost with Redis's data restarts from Redis's clock
 * (ms), so epochs only grow.
 *
 * Redis runs over three connections (redis.h): "ha-lease" for the lease
 * scripts only (so script traffic can never delay a renew), "ha-sub" for
 * the released channel, "ha-data" for ami.kv and the event stream.
 *
 * Takeover: when an instance acquires a lease with nobody having acted for
 * the server since some moment (the previous owner's last renew, or this
 * instance's own stop), it logs the calls that started on that server in
 * the meantime (Newchannel with Uniqueid == Linkedid, recorded while it was
 * not acting, a bounded ring per server) and counts them: those calls may
 * have had no script run for them.
 *
 * Memory: the config's strings are copied. Thread: the loop thread only.
 */
#ifndef AMI_HA_HA_H
#define AMI_HA_HA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/client.h"
#include "ha/redis.h"
#include "util/buf.h"
#include "util/err.h"

#define AMI_HA_MAX_STREAM_EVENTS 64

typedef struct ami_ha_config {
    const char *cluster;          /* key prefix "ami:<cluster>:"; required */
    const char *instance;         /* this instance's name; NULL: "<hostname>-<pid>" */
    ami_redis_config_t redis;     /* address, AUTH, timeouts, max_pending (per connection) */
    uint32_t lease_ms;            /* default 3000 */
    uint32_t renew_ms;            /* default 1000; at most lease_ms / 2 */
    size_t kv_max_key;            /* ami.kv key bytes; default 512 */
    size_t kv_max_value;          /* ami.kv value bytes; default 65536 */
    /* Event fan-out to a Redis Stream, by the owner of each event's server. */
    const char *stream;           /* stream key; NULL: no fan-out */
    const char *stream_events[AMI_HA_MAX_STREAM_EVENTS]; /* event names; none: every event */
    size_t nstream_events;
    uint32_t stream_maxlen;       /* XADD MAXLEN ~ n; default 100000 */
    uint32_t stream_max_inflight; /* XADDs awaiting a reply; default 1000; more are dropped */
} ami_ha_config_t;

void ami_ha_config_default(ami_ha_config_t *cfg);

typedef struct ami_ha ami_ha_t;

/* Validate cfg and build (nothing connects yet). The client's servers must
 * all be added already. */
ami_ha_t *ami_ha_new(ami_client_t *client, const ami_ha_config_t *cfg, ami_err_t *err);
void ami_ha_start(ami_ha_t *ha);
/* Stop acting for every server now and give the leases back. */
void ami_ha_drain(ami_ha_t *ha);
/* After ami_ha_drain: every release answered (or failed). */
bool ami_ha_drained(const ami_ha_t *ha);
void ami_ha_free(ami_ha_t *ha);

/* May scripts act for this server now? Cheap: per event and per action. */
bool ami_ha_acting(const ami_ha_t *ha, const char *server_key);

typedef struct ami_ha_lease_info {
    bool acting;           /* this instance acts for the server now */
    const char *role;      /* "owner", "standby", "released" */
    uint64_t epoch;        /* the fencing epoch (ours when acting, the latest seen otherwise; 0: none yet) */
    const char *owner;     /* the owner's instance name as last seen ("" if unknown) */
} ami_ha_lease_info_t;

/* 0, or -1 for a key no server has. Strings valid until the next loop iteration. */
int ami_ha_lease_info(const ami_ha_t *ha, const char *server_key, ami_ha_lease_info_t *out);
const char *ami_ha_instance(const ami_ha_t *ha);
size_t ami_ha_acting_count(const ami_ha_t *ha);
/* Every Redis connection (lease, subscriber, data) is up. */
bool ami_ha_redis_up(const ami_ha_t *ha);
/* Lines for /healthz: what this instance owns, and who owns the rest. */
void ami_ha_health(const ami_ha_t *ha, ami_buf_t *out);

/* ---- ami.kv: shared state, keys under "ami:<cluster>:kv:" (kv.c) ---------------------- */

typedef enum ami_kv_op { AMI_KV_GET = 0, AMI_KV_SET, AMI_KV_INCRBY, AMI_KV_PEXPIRE, AMI_KV_DEL } ami_kv_op_t;

typedef struct ami_kv_req {
    ami_kv_op_t op;
    const char *key;
    size_t key_len;
    const char *value;     /* SET */
    size_t value_len;
    int64_t number;        /* INCRBY: the increment; PEXPIRE: ms */
    int64_t ttl_ms;        /* SET: 0 = no expiry */
    bool only_new;         /* SET: NX */
} ami_kv_req_t;

/* Validate (sizes; numbers are the caller's) and send. Same contract as
 * ami_redis_command. Without HA there is no ami_ha_t: callers say so. */
int ami_ha_kv(ami_ha_t *ha, const ami_kv_req_t *req, ami_redis_reply_fn fn, void *ud, ami_redis_req_t **out,
              ami_err_t *err);
void ami_ha_kv_cancel(ami_ha_t *ha, ami_redis_req_t *req);
size_t ami_ha_kv_max_key(const ami_ha_t *ha);
size_t ami_ha_kv_max_value(const ami_ha_t *ha);

#endif
