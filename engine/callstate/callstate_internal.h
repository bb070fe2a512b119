/*
 * Private to engine/callstate: the record layout (chan.c), the reading of
 * channel fields out of AMI messages (chan_read.c), and one server's table
 * (table.c, table_rebuild.c) with its indexes. The table is pure: messages
 * and the time in, no sockets, no client, no loop, so tests drive it with
 * any interleaving of events and list items. callstate.c binds one table
 * per server to the client.
 */
#ifndef AMI_CALLSTATE_INTERNAL_H
#define AMI_CALLSTATE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "callstate/callstate.h"
#include "callstate/channel.h"
#include "cluster/client.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "protocol/message.h"
#include "util/err.h"

#include <string.h>

/* Equality of short byte strings (keys, values: mostly under 40 bytes) with
 * a few overlapping word loads: cheaper than a call to memcmp, or a byte
 * loop, on the per-event path. */
static inline bool cs_same_bytes(const char *a, const char *b, size_t len)
{
    uint64_t x, y, z, w;
    if (len >= 8) {
        if (len > 16) {
            if (len > 32)
                return memcmp(a, b, len) == 0;
            for (size_t i = 0; i + 8 < len; i += 8) {
                memcpy(&x, a + i, 8);
                memcpy(&y, b + i, 8);
                if (x != y)
                    return false;
            }
        } else {
            memcpy(&x, a, 8);
            memcpy(&y, b, 8);
            if (x != y)
                return false;
        }
        memcpy(&z, a + len - 8, 8);
        memcpy(&w, b + len - 8, 8);
        return z == w;
    }
    if (len >= 4) {
        uint32_t p, q, r, t;
        memcpy(&p, a, 4);
        memcpy(&q, b, 4);
        memcpy(&r, a + len - 4, 4);
        memcpy(&t, b + len - 4, 4);
        return ((p ^ q) | (r ^ t)) == 0;
    }
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* ---- the record (chan.c) ------------------------------------------------------ */

#define CHAN_VAR_UNSET UINT32_MAX

struct ami_chan {
    uint32_t size;
    uint32_t version;
    uint64_t serial;
    double started;
    double answered;
    int32_t state;
    int32_t priority;
    int32_t hangup_cause;
    uint32_t nvars;
    uint32_t str_off[AMI_CHAN_STR_COUNT + 1]; /* the last: end of the string slots */
    uint16_t str_len[AMI_CHAN_STR_COUNT];
    /* then nvars pairs {uint32 off, uint32 len (CHAN_VAR_UNSET)}, then the bytes:
     * each string in a slot of a multiple of 8 bytes (zero-padded), so a
     * value that changes within its slot is rewritten in place */
};

/* What an event or a list item says about one channel: only the fields it
 * carries are set (their bit in the masks). Values are borrowed from the
 * message and already cut to their bound. */
typedef struct chan_update {
    uint32_t str_mask;
    uint32_t var_mask;
    const char *str[AMI_CHAN_STR_COUNT];
    uint16_t str_len[AMI_CHAN_STR_COUNT];
    const char *var[AMI_CALLSTATE_MAX_VARIABLES];
    uint16_t var_len[AMI_CALLSTATE_MAX_VARIABLES];
    bool has_state, has_priority, has_cause, has_started, has_answered;
    int32_t state, priority, hangup_cause;
    double started, answered;
} chan_update_t;

static inline void chan_update_str(chan_update_t *u, ami_chan_field_t f, const char *s, size_t len)
{
    u->str[f] = s;
    u->str_len[f] = (uint16_t)len;
    u->str_mask |= 1u << f;
}

/* The bound of a record with nvars variables of at most var_max bytes. */
size_t chan_max_size(uint32_t nvars, uint32_t var_max);

/* Write old (or nothing) changed by u into out, at most cap bytes (out is
 * not old; chan_max_size bytes always suffice). Returns the new size, or 0
 * when the record would not fit (out is then partly written). serial and
 * version are copied from old (0 without). */
size_t chan_build(void *out, size_t cap, const ami_chan_t *old, uint32_t nvars, const chan_update_t *u);

/* Same contents (version aside)? */
bool chan_same(const ami_chan_t *a, const ami_chan_t *b);

/* Apply u to r in place when every string it changes fits its slot and it
 * sets no variable: 1 changed (version bumped), 0 nothing to change, -1
 * does not fit (build a new record). */
int chan_update_in_place(ami_chan_t *r, const chan_update_t *u);

/* ---- reading messages (chan_read.c) ------------------------------------------------ */

typedef struct chan_read_conf {
    uint32_t nvars;
    const char *const *var_names;
    const size_t *var_name_len;
    uint32_t var_max;
} chan_read_conf_t;

/* The channel-independent headers an event may carry. */
typedef struct event_extras {
    const char *bridge;     /* BridgeUniqueid */
    size_t bridge_len;
    const char *dial_status;/* DialStatus */
    size_t dial_status_len;
    const char *newname;    /* Newname (Rename) */
    size_t newname_len;
    const char *variable;   /* Variable (VarSet) */
    size_t variable_len;
    const char *value;      /* Value (VarSet) */
    size_t value_len;
    const char *cause_txt;  /* Cause-txt */
    size_t cause_txt_len;
    int32_t cause;          /* Cause; -1 if absent or not a number */
    double timestamp;       /* Timestamp (timestampevents=yes); 0 if absent */
    uint32_t duration_s;    /* Duration "HH:MM:SS" (CoreShowChannel) */
    bool has_duration;
} event_extras_t;

/* The snapshot whose keys start with prefix ("" for the event's own
 * channel, "Dest", "LocalOne", ...) into u; extras (may be NULL, and only
 * with prefix "") gets the other headers. Returns how many values were cut
 * to their bound. */
uint32_t chan_read(const ami_msg_t *msg, const char *prefix, size_t plen, const chan_read_conf_t *conf,
                   chan_update_t *u, event_extras_t *extras);

/* A tracked variable's index for a VarSet/ChanVariable name ("__X" counts
 * as "X", as Asterisk's inheritance prefixes do), or -1. */
int chan_var_index(const chan_read_conf_t *conf, const char *name, size_t len);

/* ---- one server's table (table.c, table_rebuild.c) ------------------------------------- */

typedef struct cs_slot cs_slot_t;

struct cs_slot {
    cs_slot_t *uid_next, *name_next; /* hash chains */
    cs_slot_t *prev, *next;          /* oldest first */
    uint32_t uid_hash, name_hash;
    uint32_t cap;                    /* bytes allocated for rec */
    uint64_t event_seq;              /* table seq of the last event that touched it */
    uint32_t listed;                 /* rebuild id of the last list item that refreshed it */
    ami_chan_t *rec;
};

typedef struct cs_tomb cs_tomb_t;

#define CS_KIND_SLOTS 64u

typedef struct cs_table {
    const chan_read_conf_t *conf;
    uint32_t max_channels;
    uint64_t *serials;               /* shared by every table of a call state */
    void *scratch;                   /* chan_max_size bytes, shared (one thread) */
    cs_slot_t **uid_buckets, **name_buckets;
    uint32_t nbuckets;               /* power of two */
    cs_slot_t *head, *tail;
    uint32_t count;
    cs_slot_t *dead;                 /* hung up by the event being dispatched */
    cs_slot_t *spare;                /* freed slots kept for reuse */
    uint32_t nspare;
    uint64_t seq;                    /* bumps per event */
    /* rebuild */
    bool rebuilding, listing;
    uint32_t rebuild_id;
    uint64_t listing_seq;            /* seq when the list's first response came */
    cs_tomb_t **tombs;               /* Uniqueids hung up since then */
    uint32_t ntombs, tomb_buckets;
    /* counters */
    uint64_t refused, truncated, rebuilds, events_applied;
    uint64_t changes;                /* inserts, updates and removals */
    uint32_t ev_hash[24];            /* the names the table reads, hashed once */
    uint8_t ev_len[24];
    uint8_t kind_slot[CS_KIND_SLOTS];/* open addressing by hash: index + 1 into the names */
} cs_table_t;

int cs_table_init(cs_table_t *t, const chan_read_conf_t *conf, uint32_t max_channels,
                  uint64_t *serials, void *scratch);
void cs_table_deinit(cs_table_t *t);

/* One event of the server (any name: the table picks what it knows). */
void cs_table_apply(cs_table_t *t, const ami_msg_t *msg, double now);

/* The rebuild: begin when CoreShowChannels is sent; listing at its first
 * response; item for each CoreShowChannel; end at CoreShowChannelsComplete
 * (complete = false when items were dropped past a cap: nothing unlisted is
 * dropped then); abort when it failed (the table stays as it is). */
void cs_table_rebuild_begin(cs_table_t *t);
void cs_table_rebuild_listing(cs_table_t *t);
void cs_table_rebuild_item(cs_table_t *t, const ami_msg_t *item, double now);
void cs_table_rebuild_end(cs_table_t *t, bool complete);
void cs_table_rebuild_abort(cs_table_t *t);

/* By Uniqueid, else by Channel; the channel hung up by the event being
 * dispatched is found too. */
const ami_chan_t *cs_table_find(const cs_table_t *t, const char *id, size_t len);

/* The Hangup's dispatch is over: forget the channel it removed. */
void cs_table_forget_dead(cs_table_t *t);

/* The event names the table reads (VarSet only with tracked variables). */
size_t cs_event_names(const char **out, size_t cap, bool with_varset);

/* table_events.c: index the event names a table reads (at init). */
void cs_events_index(cs_table_t *t);

/* ami_chan_str without the call and the range check, for the table's own
 * code where f is always valid. */
static inline const char *cs_field(const ami_chan_t *r, ami_chan_field_t f, size_t *len)
{
    if (len)
        *len = r->str_len[f];
    return (const char *)r + r->str_off[f];
}

/* table.c internals shared with table_events.c and table_rebuild.c */
cs_slot_t *table_find_uid(const cs_table_t *t, const char *uid, size_t len, uint32_t hash);
cs_slot_t *table_find_name(const cs_table_t *t, const char *name, size_t len);
cs_slot_t *table_insert(cs_table_t *t, const chan_update_t *u, uint32_t uid_hash);
void table_update(cs_table_t *t, cs_slot_t *s, const chan_update_t *u);
void table_remove(cs_table_t *t, cs_slot_t *s);
void table_release(cs_table_t *t, cs_slot_t *s);
uint32_t cs_hash(const char *s, size_t n);
/* Draw the hash's per-process key (once; before any table is filled). */
void cs_hash_init(void);

/* Tombstones (table_rebuild.c). */
void tombs_add(cs_table_t *t, const char *uid, size_t len);
void tombs_clear(cs_table_t *t);

/* ---- calls (calls.c) --------------------------------------------------------------- */

typedef struct cs_calls_ws {
    const ami_chan_t **chans;
    uint32_t *call_of;
    uint32_t *parent;
    uint32_t *keys;          /* open addressing: (index + 1) of the first channel per key */
    uint32_t *key_hash;
    size_t cap, key_cap;
    ami_calls_view_t view;
} cs_calls_ws_t;

const ami_calls_view_t *cs_calls_group(cs_calls_ws_t *ws, const cs_table_t *t);
void cs_calls_ws_free(cs_calls_ws_t *ws);

#endif
