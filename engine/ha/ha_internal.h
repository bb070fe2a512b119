/*
 * Private to engine/ha: the coordinator's structures, shared by ha.c
 * (leases, the gate, health), ha_setup.c (config, identity, start, free), gap.c (calls seen while not acting, the
 * takeover report), kv.c (ami.kv) and stream.c (event fan-out).
 */
#ifndef AMI_HA_INTERNAL_H
#define AMI_HA_INTERNAL_H

#include <ev.h>

#include "ha/ha.h"
#include "ha/lease.h"
#include "obs/log.h"
#include "obs/metrics.h"

#define HA_PREFIX_MAX 96
#define HA_KEY_MAX 192
#define HA_INSTANCE_MAX 64
#define HA_GAP_RING 512u     /* call starts remembered per server while standing by */
#define HA_UNIQUEID_MAX 40

typedef struct gap_call {
    int64_t at;                    /* monotonic ns */
    char uniqueid[HA_UNIQUEID_MAX];
} gap_call_t;

typedef struct ha_server {
    ami_ha_t *ha;
    uint32_t index;                /* in the client */
    const char *key;               /* the client's string (stable while it lives) */
    char lease_key[HA_KEY_MAX];
    char epoch_key[HA_KEY_MAX];
    ami_lease_t lease;
    ami_redis_req_t *req;          /* the lease command in flight */
    uint64_t req_seq;
    bool ami_up;                   /* AMI link logged in */
    bool held_seen;                /* seen held by another instance in the current Redis run */
    int64_t ami_down_since;
    char seen_owner[AMI_LEASE_OWNER_MAX]; /* last owner logged, to log changes once */
    gap_call_t *ring;              /* HA_GAP_RING entries, allocated at start */
    uint32_t ring_next;            /* total recorded (the next slot is ring_next % HA_GAP_RING) */
    ami_gauge_t *m_acting, *m_epoch;
    ami_counter_t *m_changes[5];   /* by ami_lease_change_t (SAME unused) */
    ami_counter_t *m_gap_calls, *m_takeovers;
} ha_server_t;

typedef struct ha_stream ha_stream_t;

struct ami_ha {
    ami_ha_config_t cfg;
    char *cluster, *stream_name;
    char *stream_events[AMI_HA_MAX_STREAM_EVENTS];
    char instance[HA_INSTANCE_MAX];
    char token[40];
    char prefix[HA_PREFIX_MAX];    /* "ami:<cluster>:" */
    char channel[HA_KEY_MAX];      /* prefix + "released" */
    ami_client_t *client;
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_redis_t *lease_conn, *sub_conn, *data_conn;
    ha_server_t *servers;
    size_t nservers;
    ev_timer tick;
    bool started, draining;
    char run_id[48];               /* the Redis run the lease link talks to (INFO server) */
    bool run_known;                /* run_id asked since the link last came up */
    int64_t run_since;             /* when this run was first seen */
    ami_redis_req_t *info_req;
    ami_subscription_t *calls_sub;
    ha_stream_t *stream;
    ami_counter_t *m_gap_overflow;
    ami_histogram_t *m_unowned;
};

ha_server_t *ha_server_by_key(const ami_ha_t *ha, const char *key);

/* ha.c: the tick, the lease link coming up or down, a released lease. */
void ha_on_tick(struct ev_loop *loop, ev_timer *t, int revents);
void ha_on_lease_conn(void *ud, bool up, const char *why);
void ha_on_released(void *ud, const char *payload, size_t len);
/* Monotonic ns, the clock every lease time is on. */
int64_t ha_now(void);

/* gap.c */
int gap_start(ami_ha_t *ha, ami_err_t *err);
void gap_stop(ami_ha_t *ha);
/* The server's lease was just taken (ACQUIRED or RESUMED): report what
 * started while nobody acted. */
void gap_report(ha_server_t *s, int64_t now);

/* stream.c */
int stream_start(ami_ha_t *ha, ami_err_t *err);
void stream_stop(ami_ha_t *ha);

#endif
