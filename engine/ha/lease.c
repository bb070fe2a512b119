/*
 * The lease state machine (see lease.h for the rules it keeps).
 */
#include "ha/lease.h"

#include <stdio.h>
#include <string.h>

#define MS 1000000LL

void ami_lease_init(ami_lease_t *l, const ami_lease_timing_t *t, int64_t now)
{
    memset(l, 0, sizeof *l);
    l->t = *t;
    l->role = AMI_LEASE_STANDBY;
    l->next_try = now;
}

static void mark_unowned(ami_lease_t *l, int64_t since)
{
    if (!l->unowned_known || since > l->unowned_since)
        l->unowned_since = since;
    l->unowned_known = true;
}

static void stop_acting(ami_lease_t *l, int64_t now)
{
    l->role = AMI_LEASE_STANDBY;
    mark_unowned(l, now < l->acting_until ? now : l->acting_until);
    l->next_try = now; /* the lease may still be ours in Redis: an acquire resumes it */
}

ami_lease_op_t ami_lease_due(ami_lease_t *l, int64_t now, bool reachable, ami_lease_change_t *change)
{
    *change = AMI_LEASE_SAME;
    if (l->role == AMI_LEASE_OWNER && now >= l->acting_until) {
        stop_acting(l, now);
        *change = AMI_LEASE_EXPIRED;
    }
    if (l->inflight != AMI_LEASE_OP_NONE)
        return AMI_LEASE_OP_NONE;
    switch (l->role) {
    case AMI_LEASE_OWNER:
        return reachable && (l->renew_soon || now - l->last_renewed >= l->t.renew_ns) ? AMI_LEASE_OP_RENEW
                                                                                       : AMI_LEASE_OP_NONE;
    case AMI_LEASE_STANDBY:
        return reachable && now >= l->next_try ? AMI_LEASE_OP_ACQUIRE : AMI_LEASE_OP_NONE;
    default:
        return l->need_release ? AMI_LEASE_OP_RELEASE : AMI_LEASE_OP_NONE;
    }
}

uint64_t ami_lease_sent(ami_lease_t *l, ami_lease_op_t op, int64_t now)
{
    l->inflight = op;
    l->inflight_sent = now;
    if (op == AMI_LEASE_OP_RENEW)
        l->renew_soon = false;
    if (op == AMI_LEASE_OP_ACQUIRE)
        l->next_try = now + l->t.retry_ns;
    return ++l->seq;
}

static bool matches(const ami_lease_t *l, uint64_t seq, ami_lease_op_t op)
{
    return l->inflight == op && l->seq == seq;
}

static void note_owner(ami_lease_t *l, const char *owner)
{
    snprintf(l->owner, sizeof l->owner, "%s", owner ? owner : "");
}

/* Refused: someone holds it. It renewed about (lease - pttl) before we
 * sent, so it was alive then; try again right after its lease could run
 * out, or at the retry interval, whichever comes first. */
static void refused(ami_lease_t *l, int64_t sent, const ami_lease_seen_t *seen)
{
    if (seen->epoch > l->epoch)
        l->epoch = seen->epoch;
    note_owner(l, seen->owner);
    if (seen->pttl_ms < 0)
        return;
    int64_t pttl = seen->pttl_ms * MS;
    mark_unowned(l, sent - (l->t.lease_ns - pttl));
    int64_t at_expiry = sent + pttl + MS;
    if (at_expiry < l->next_try)
        l->next_try = at_expiry;
}

ami_lease_change_t ami_lease_on_acquire(ami_lease_t *l, uint64_t seq, int64_t now, const ami_lease_seen_t *seen)
{
    if (!matches(l, seq, AMI_LEASE_OP_ACQUIRE))
        return AMI_LEASE_SAME;
    int64_t sent = l->inflight_sent;
    l->inflight = AMI_LEASE_OP_NONE;
    if (!seen->won) {
        refused(l, sent, seen);
        return AMI_LEASE_SAME;
    }
    if (l->role == AMI_LEASE_RELEASED) {
        l->need_release = true; /* won after the drain began: give it back */
        return AMI_LEASE_SAME;
    }
    bool same = l->held_epoch != 0 && seen->epoch == l->held_epoch;
    l->role = AMI_LEASE_OWNER;
    l->epoch = l->held_epoch = seen->epoch;
    l->last_renewed = sent;
    l->acting_until = sent + l->t.lease_ns - l->t.guard_ns;
    note_owner(l, seen->owner);
    (void)now;
    return same ? AMI_LEASE_RESUMED : AMI_LEASE_ACQUIRED;
}

ami_lease_change_t ami_lease_on_renew(ami_lease_t *l, uint64_t seq, int64_t now, bool renewed)
{
    if (!matches(l, seq, AMI_LEASE_OP_RENEW))
        return AMI_LEASE_SAME;
    int64_t sent = l->inflight_sent;
    l->inflight = AMI_LEASE_OP_NONE;
    if (l->role != AMI_LEASE_OWNER)
        return AMI_LEASE_SAME; /* expired or released meanwhile */
    if (renewed) {
        l->last_renewed = sent;
        l->acting_until = sent + l->t.lease_ns - l->t.guard_ns;
        return AMI_LEASE_SAME;
    }
    stop_acting(l, now);
    l->owner[0] = '\0';
    return AMI_LEASE_LOST;
}

void ami_lease_on_done(ami_lease_t *l, uint64_t seq, int64_t now)
{
    (void)now;
    if (l->seq != seq || l->inflight == AMI_LEASE_OP_NONE)
        return;
    if (l->inflight == AMI_LEASE_OP_RELEASE)
        l->need_release = false; /* released, or Redis is gone: the lease will expire by itself */
    l->inflight = AMI_LEASE_OP_NONE;
}

void ami_lease_release(ami_lease_t *l, int64_t now)
{
    if (l->role == AMI_LEASE_RELEASED)
        return;
    if (l->role == AMI_LEASE_OWNER || l->held_epoch)
        l->need_release = l->role == AMI_LEASE_OWNER || now < l->last_renewed + l->t.lease_ns;
    l->role = AMI_LEASE_RELEASED;
    l->acting_until = now;
}

bool ami_lease_settled(const ami_lease_t *l)
{
    return l->role == AMI_LEASE_RELEASED && !l->need_release && l->inflight == AMI_LEASE_OP_NONE;
}

void ami_lease_renew_soon(ami_lease_t *l)
{
    l->renew_soon = l->role == AMI_LEASE_OWNER;
}

void ami_lease_poke(ami_lease_t *l, int64_t now, int64_t notice_margin_ns)
{
    if (l->role != AMI_LEASE_STANDBY)
        return;
    mark_unowned(l, now - notice_margin_ns);
    l->next_try = now;
}

const char *ami_lease_role_name(ami_lease_role_t r)
{
    static const char *const names[] = {"standby", "owner", "released"};
    return (unsigned)r < 3 ? names[r] : "?";
}

const char *ami_lease_change_name(ami_lease_change_t c)
{
    static const char *const names[] = {"same", "acquired", "resumed", "expired", "lost"};
    return (unsigned)c < 5 ? names[c] : "?";
}
