/*
 * Event fan-out: the owner of a server copies its events (all, or the
 * configured names) to a Redis Stream, so other systems read AMI events
 * without AMI connections of their own:
 *
 *   XADD <stream> MAXLEN ~ <maxlen> * server <server_key> <Header> <value> ...
 *
 * Only the instance acting for the event's server sends it, so with two or
 * three instances each event is added once (twice at most for an event
 * that arrives in the instant a lease changes hands). Sending never
 * waits: past max_inflight XADDs awaiting a reply, or while the data
 * connection is down, an event is dropped and counted
 * (ami_ha_stream_dropped_total{reason}); a message with more headers than
 * STREAM_MAX_HEADERS keeps the first ones.
 */
#include <stdio.h>
#include <string.h>

#include "ha/ha_internal.h"
#include "util/alloc.h"

#define STREAM_MAX_HEADERS 128
#define STREAM_FIXED_ARGS 8 /* XADD key MAXLEN ~ n * server key */

struct ha_stream {
    ami_ha_t *ha;
    ami_subscription_t *subs[AMI_HA_MAX_STREAM_EVENTS];
    size_t nsubs;
    char maxlen[24];
    uint32_t inflight;
    ami_counter_t *m_sent, *m_failed, *m_dropped_full, *m_dropped_down;
    ami_gauge_t *m_inflight;
};

static void on_added(void *ud, const ami_redis_reply_t *reply, const ami_err_t *err)
{
    ha_stream_t *st = ud;
    st->inflight--;
    ami_gauge_set(st->m_inflight, st->inflight);
    if (err)
        ami_counter_inc(st->m_failed);
    else
        ami_counter_inc(st->m_sent);
}

static void on_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    ha_stream_t *st = ud;
    ami_ha_t *ha = st->ha;
    if (!ami_ha_acting(ha, server_key))
        return;
    if (st->inflight >= ha->cfg.stream_max_inflight) {
        ami_counter_inc(st->m_dropped_full);
        return;
    }
    if (!ami_redis_up(ha->data_conn)) {
        ami_counter_inc(st->m_dropped_down);
        return;
    }
    const char *argv[STREAM_FIXED_ARGS + 2 * STREAM_MAX_HEADERS] = {
        "XADD", ha->stream_name, "MAXLEN", "~", st->maxlen, "*", "server", server_key};
    size_t lens[STREAM_FIXED_ARGS + 2 * STREAM_MAX_HEADERS];
    for (int i = 0; i < STREAM_FIXED_ARGS; i++)
        lens[i] = strlen(argv[i]);
    int argc = STREAM_FIXED_ARGS;
    for (size_t i = 0; i < msg->nhdrs && i < STREAM_MAX_HEADERS; i++) {
        argv[argc] = ami_msg_key(msg, i, &lens[argc]);
        argc++;
        argv[argc] = ami_msg_value(msg, i, &lens[argc]);
        argc++;
    }
    ami_err_t err;
    if (ami_redis_command(ha->data_conn, argc, argv, lens, on_added, st, NULL, &err) < 0) {
        ami_counter_inc(err.code == AMI_E_LIMIT ? st->m_dropped_full : st->m_dropped_down);
        return;
    }
    st->inflight++;
    ami_gauge_set(st->m_inflight, st->inflight);
}

static void register_metrics(ha_stream_t *st, ami_metrics_t *m)
{
    const char *const full[] = {"reason", "max_inflight", NULL};
    const char *const down[] = {"reason", "redis_down", NULL};
    st->m_sent = ami_metrics_counter(m, "ami_ha_stream_added_total", "Events added to the redis stream", NULL, NULL);
    st->m_failed = ami_metrics_counter(m, "ami_ha_stream_failed_total",
                                       "XADDs that failed (error reply, timeout, lost connection)", NULL, NULL);
    st->m_dropped_full = ami_metrics_counter(m, "ami_ha_stream_dropped_total",
                                             "Events not sent to the redis stream", full, NULL);
    st->m_dropped_down = ami_metrics_counter(m, "ami_ha_stream_dropped_total",
                                             "Events not sent to the redis stream", down, NULL);
    st->m_inflight = ami_metrics_gauge(m, "ami_ha_stream_inflight", "XADDs awaiting a reply", NULL, NULL);
}

int stream_start(ami_ha_t *ha, ami_err_t *err)
{
    if (!ha->stream_name)
        return 0;
    ha_stream_t *st = ami_calloc(1, sizeof *st);
    if (!st)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory");
    ha->stream = st;
    st->ha = ha;
    snprintf(st->maxlen, sizeof st->maxlen, "%u", ha->cfg.stream_maxlen);
    register_metrics(st, ha->metrics);
    size_t n = ha->cfg.nstream_events;
    for (size_t i = 0; i < (n ? n : 1); i++) {
        st->subs[i] = ami_client_subscribe(ha->client, n ? ha->cfg.stream_events[i] : NULL, on_event, st, err);
        if (!st->subs[i])
            return -1;
        st->nsubs++;
    }
    return 0;
}

void stream_stop(ami_ha_t *ha)
{
    ha_stream_t *st = ha->stream;
    if (!st)
        return;
    for (size_t i = 0; i < st->nsubs; i++)
        ami_client_unsubscribe(ha->client, st->subs[i]);
    ami_free(st);
    ha->stream = NULL;
}
