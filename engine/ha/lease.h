/*
 * The ownership lease of one Asterisk server, as a pure state machine: no
 * I/O, no clock of its own. The caller (ha.c) asks what is due at a given
 * monotonic time, sends the matching Redis script, and feeds the answers
 * back; unit tests drive it with a fake clock.
 *
 *   STANDBY --acquire won--> OWNER --renew refused--> STANDBY   (LOST)
 *      ^                       |  --no renew in time--> STANDBY (EXPIRED)
 *      +------- drain -------> RELEASED (terminal; a held lease is released)
 *
 * Safety rule: an owner acts only while now < acting_until, where
 * acting_until = (send time of the last acquire or renew Redis accepted)
 * + lease - guard, on this process's monotonic clock. Redis starts the
 * lease's time to live when it receives the command, never before it was
 * sent, so (with clocks that run at the same rate, within guard) the owner
 * stops acting before Redis can give the lease to anyone else, whether or
 * not Redis can be reached. A reply that arrives after the owner gave up
 * is ignored; one command is in flight at a time, matched by sequence.
 *
 * A standby retries its acquire every retry interval, or sooner: right
 * after the remaining time to live Redis reported for the current lease,
 * so it takes an expired lease at once. Each refused acquire also tells it
 * when the current owner last renewed; with the owner's own stop, that
 * dates the "unowned since" moment reported at a takeover (calls that
 * started after it may have had no handler).
 *
 * Thread: whatever thread owns it; everything here is plain data.
 */
#ifndef AMI_HA_LEASE_H
#define AMI_HA_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ami_lease_timing {
    int64_t lease_ns;   /* time to live of the lease in Redis */
    int64_t renew_ns;   /* the owner renews this long after its last accepted renew was sent */
    int64_t retry_ns;   /* a standby tries to acquire at least this often */
    int64_t guard_ns;   /* the owner stops acting this long before its lease could expire */
} ami_lease_timing_t;

typedef enum ami_lease_role { AMI_LEASE_STANDBY = 0, AMI_LEASE_OWNER, AMI_LEASE_RELEASED } ami_lease_role_t;

typedef enum ami_lease_op {
    AMI_LEASE_OP_NONE = 0,
    AMI_LEASE_OP_ACQUIRE,
    AMI_LEASE_OP_RENEW,
    AMI_LEASE_OP_RELEASE
} ami_lease_op_t;

typedef enum ami_lease_change {
    AMI_LEASE_SAME = 0,
    AMI_LEASE_ACQUIRED, /* owner, with a new epoch */
    AMI_LEASE_RESUMED,  /* owner again with the epoch it held (its lease outlived a local expiry) */
    AMI_LEASE_EXPIRED,  /* stopped acting: no renew accepted in time */
    AMI_LEASE_LOST      /* stopped acting: Redis refused the renew (the lease is gone or another's) */
} ami_lease_change_t;

#define AMI_LEASE_OWNER_MAX 64

typedef struct ami_lease {
    ami_lease_timing_t t;
    ami_lease_role_t role;
    uint64_t epoch;            /* ours while owner; the latest seen otherwise */
    uint64_t held_epoch;       /* the epoch this instance last held (0: never) */
    int64_t acting_until;
    int64_t last_renewed;      /* send time of the last accepted acquire/renew */
    ami_lease_op_t inflight;   /* the one command in flight, NONE if none */
    uint64_t seq;
    int64_t inflight_sent;
    int64_t next_try;          /* standby: earliest next acquire */
    bool need_release;         /* released (drain) while holding, or winning after */
    bool renew_soon;           /* renew at the next chance, whatever the interval */
    bool unowned_known;        /* unowned_since holds a moment */
    int64_t unowned_since;     /* nobody is known to have acted for the server since */
    char owner[AMI_LEASE_OWNER_MAX]; /* the owner's instance id as last seen, "" if none */
} ami_lease_t;

/* What Redis said to an acquire. */
typedef struct ami_lease_seen {
    bool won;
    bool free;                 /* nobody holds it, but it was not taken (pttl_ms: when to try again) */
    uint64_t epoch;            /* the lease's epoch (ours if won) */
    const char *owner;         /* the holder's instance id */
    int64_t pttl_ms;           /* remaining time to live; < 0 if unknown */
} ami_lease_seen_t;

void ami_lease_init(ami_lease_t *l, const ami_lease_timing_t *t, int64_t now);

/* What to send now. reachable: this instance can serve the server (its
 * AMI link is up, or was lost less than a lease ago); when false a standby
 * does not acquire and an owner stops renewing, so its lease runs out and
 * an instance that can reach the server takes it. *change reports an
 * expiry noticed by this call (else SAME). */
ami_lease_op_t ami_lease_due(ami_lease_t *l, int64_t now, bool reachable, ami_lease_change_t *change);
/* The command ami_lease_due asked for went out at now: its sequence. */
uint64_t ami_lease_sent(ami_lease_t *l, ami_lease_op_t op, int64_t now);

ami_lease_change_t ami_lease_on_acquire(ami_lease_t *l, uint64_t seq, int64_t now, const ami_lease_seen_t *seen);
ami_lease_change_t ami_lease_on_renew(ami_lease_t *l, uint64_t seq, int64_t now, bool renewed);
/* The release was answered, or any command failed (timeout, disconnected, error). */
void ami_lease_on_done(ami_lease_t *l, uint64_t seq, int64_t now);

/* Drain: stop acting now and never acquire again. */
void ami_lease_release(ami_lease_t *l, int64_t now);
/* Released, and nothing left to send or wait for. */
bool ami_lease_settled(const ami_lease_t *l);

/* The Redis link came back: an owner renews at once to learn whether its
 * lease survived. */
void ami_lease_renew_soon(ami_lease_t *l);

/* Another instance released the lease at about now: try at once. */
void ami_lease_poke(ami_lease_t *l, int64_t now, int64_t notice_margin_ns);

static inline bool ami_lease_acting(const ami_lease_t *l, int64_t now)
{
    return l->role == AMI_LEASE_OWNER && now < l->acting_until;
}

const char *ami_lease_role_name(ami_lease_role_t r);
const char *ami_lease_change_name(ami_lease_change_t c);

#endif
