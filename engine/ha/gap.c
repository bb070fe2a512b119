/*
 * Calls that started while no instance acted for a server.
 *
 * Every instance sees every event (hot standby). While it does not act for
 * a server it remembers the call starts there (Newchannel whose Uniqueid
 * is its Linkedid: the first channel of a call) in a bounded ring. When it
 * takes the lease after a time in which nobody is known to have acted
 * (lease.h: unowned_since), it reports the calls that started since: their
 * count in the log and in ami_ha_gap_calls_total, and their Uniqueids (the
 * first GAP_LISTED) in the log line, so an operator or a script can look
 * at them. The moment is an estimate on the safe side: a call the previous
 * owner handled just before it died may be listed, a call it could not
 * handle is never left out (unless the ring overflowed, which is counted).
 */
#include <stdio.h>
#include <string.h>

#include "ha/ha_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define GAP_LISTED 50

static bool first_leg(const ami_msg_t *msg, const char **uid, size_t *ulen)
{
    size_t llen;
    *uid = ami_msg_getn(msg, "Uniqueid", 8, ulen);
    const char *lid = ami_msg_getn(msg, "Linkedid", 8, &llen);
    return *uid && (!lid || (llen == *ulen && memcmp(lid, *uid, llen) == 0));
}

static void on_newchannel(void *ud, const char *server_key, const ami_msg_t *msg)
{
    ami_ha_t *ha = ud;
    ha_server_t *s = ha_server_by_key(ha, server_key);
    const char *uid;
    size_t ulen;
    if (!s || !s->ring || ami_lease_acting(&s->lease, ami_now_coarse_ns()) || !first_leg(msg, &uid, &ulen))
        return;
    gap_call_t *c = &s->ring[s->ring_next++ % HA_GAP_RING];
    c->at = ha_now();
    snprintf(c->uniqueid, sizeof c->uniqueid, "%.*s", (int)(ulen < HA_UNIQUEID_MAX ? ulen : HA_UNIQUEID_MAX - 1),
             uid);
}

int gap_start(ami_ha_t *ha, ami_err_t *err)
{
    for (size_t i = 0; i < ha->nservers; i++) {
        ha->servers[i].ring = ami_calloc(HA_GAP_RING, sizeof(gap_call_t));
        if (!ha->servers[i].ring)
            return ami_err_set(err, AMI_E_NOMEM, "out of memory for the takeover call rings");
    }
    ha->m_gap_overflow = ami_metrics_counter(ha->metrics, "ami_ha_gap_calls_untracked_total",
                                             "Takeovers whose gap held more call starts than the ring keeps "
                                             "(the reported count is a lower bound)", NULL, NULL);
    ha->calls_sub = ami_client_subscribe(ha->client, "Newchannel", on_newchannel, ha, err);
    return ha->calls_sub ? 0 : -1;
}

void gap_stop(ami_ha_t *ha)
{
    if (ha->calls_sub)
        ami_client_unsubscribe(ha->client, ha->calls_sub);
    ha->calls_sub = NULL;
}

/* Newest first: count the calls at or after since, list the first few. */
static size_t collect(const ha_server_t *s, int64_t since, ami_buf_t *ids, bool *complete)
{
    size_t n = 0;
    uint32_t kept = s->ring_next < HA_GAP_RING ? s->ring_next : HA_GAP_RING;
    *complete = true;
    for (uint32_t i = 1; i <= kept; i++) {
        const gap_call_t *c = &s->ring[(s->ring_next - i) % HA_GAP_RING];
        if (c->at < since)
            return n;
        if (n < GAP_LISTED)
            ami_buf_printf(ids, "%s%s", n ? "," : "", c->uniqueid);
        n++;
    }
    *complete = s->ring_next <= HA_GAP_RING;
    return n;
}

void gap_report(ha_server_t *s, int64_t now)
{
    ami_ha_t *ha = s->ha;
    if (!s->lease.unowned_known || !s->ring)
        return;
    int64_t since = s->lease.unowned_since;
    s->lease.unowned_known = false;
    ami_buf_t ids;
    ami_buf_init(&ids, 4096);
    bool complete;
    size_t n = collect(s, since, &ids, &complete);
    double unowned_s = (double)(now - since) / 1e9;
    ami_counter_inc(s->m_takeovers);
    ami_counter_add(s->m_gap_calls, (double)n);
    ami_histogram_observe(ha->m_unowned, unowned_s);
    if (!complete)
        ami_counter_inc(ha->m_gap_overflow);
    AMI_LOG(ha->log, n ? AMI_LOG_WARN : AMI_LOG_INFO,
            "takeover: calls that started while no instance acted for the server (their scripts may not have run)",
            AMI_F_STR("server_key", s->key), AMI_F_UINT("epoch", s->lease.epoch),
            AMI_F_UINT("unowned_ms", (uint64_t)(unowned_s * 1000)), AMI_F_UINT("calls", n),
            AMI_F_BOOL("complete", complete), AMI_F_STRN("uniqueids", ids.data ? ids.data : "", ids.len));
    ami_buf_deinit(&ids);
}
