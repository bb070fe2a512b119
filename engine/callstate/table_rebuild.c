/*
 * Rebuilding a server's table from CoreShowChannels while events keep
 * coming.
 *
 * The list is a snapshot Asterisk takes at one point T of its event stream.
 * Events written before the list's first response happened before T, so the
 * list already holds their effect: a list item overwrites what they said.
 * Events after the list's end may have happened before T (Asterisk queues a
 * session's events while it writes a list and flushes them after) or after
 * it; they are applied as usual, and since every channel event carries the
 * channel's whole snapshot, replaying an older one only moves the channel
 * back to a state the following events move forward again. Events between
 * the first response and the end (a server that interleaves) may be on
 * either side of T, so the table trusts them over the list:
 *   - a channel an event touched since the first response keeps what the
 *     event said (its item is ignored);
 *   - a channel hung up since the first response is remembered (a
 *     tombstone), so its item does not bring it back;
 * and at the end every channel that was neither listed nor touched since
 * the first response is dropped: it ended while the engine was not looking.
 */
#include <string.h>

#include "callstate/callstate_internal.h"
#include "util/alloc.h"

#define TOMB_BUCKETS_MIN 64u

struct cs_tomb {
    cs_tomb_t *next;
    uint32_t hash;
    uint32_t len;
    char uid[];
};

void tombs_clear(cs_table_t *t)
{
    for (uint32_t b = 0; b < t->tomb_buckets; b++) {
        for (cs_tomb_t *x = t->tombs[b], *next; x; x = next) {
            next = x->next;
            ami_free(x);
        }
        t->tombs[b] = NULL;
    }
    t->ntombs = 0;
}

static bool tombs_grow(cs_table_t *t)
{
    uint32_t n = t->tomb_buckets ? t->tomb_buckets * 2 : TOMB_BUCKETS_MIN;
    cs_tomb_t **b = ami_calloc(n, sizeof *b);
    if (!b)
        return t->tomb_buckets > 0; /* longer chains, still correct */
    for (uint32_t i = 0; i < t->tomb_buckets; i++) {
        for (cs_tomb_t *x = t->tombs[i], *next; x; x = next) {
            next = x->next;
            x->next = b[x->hash & (n - 1)];
            b[x->hash & (n - 1)] = x;
        }
    }
    ami_free(t->tombs);
    t->tombs = b;
    t->tomb_buckets = n;
    return true;
}

/* Bounded by max_channels: past it a hung-up channel may come back from
 * the list, and its next event (or the next rebuild) corrects that. */
void tombs_add(cs_table_t *t, const char *uid, size_t len)
{
    if (t->ntombs >= t->max_channels)
        return;
    if (t->ntombs >= t->tomb_buckets && !tombs_grow(t))
        return;
    cs_tomb_t *x = ami_malloc(sizeof *x + len);
    if (!x)
        return;
    x->hash = cs_hash(uid, len);
    x->len = (uint32_t)len;
    memcpy(x->uid, uid, len);
    cs_tomb_t **b = &t->tombs[x->hash & (t->tomb_buckets - 1)];
    x->next = *b;
    *b = x;
    t->ntombs++;
}

static bool tombs_has(const cs_table_t *t, const char *uid, size_t len, uint32_t hash)
{
    if (!t->ntombs)
        return false;
    for (cs_tomb_t *x = t->tombs[hash & (t->tomb_buckets - 1)]; x; x = x->next)
        if (x->hash == hash && x->len == len && memcmp(x->uid, uid, len) == 0)
            return true;
    return false;
}

void cs_table_rebuild_begin(cs_table_t *t)
{
    t->rebuilding = true;
    t->listing = false;
    t->rebuild_id++;
    tombs_clear(t);
}

void cs_table_rebuild_listing(cs_table_t *t)
{
    if (!t->rebuilding || t->listing)
        return;
    t->listing = true;
    t->listing_seq = t->seq;
}

static void clear_update(chan_update_t *u)
{
    u->str_mask = u->var_mask = 0;
    u->has_state = u->has_priority = u->has_cause = u->has_started = u->has_answered = false;
}

void cs_table_rebuild_item(cs_table_t *t, const ami_msg_t *item, double now)
{
    if (!t->rebuilding)
        return;
    cs_table_rebuild_listing(t); /* an item implies the list started */
    chan_update_t u;
    event_extras_t x;
    clear_update(&u);
    t->truncated += chan_read(item, "", 0, t->conf, &u, &x);
    if (!(u.str_mask & (1u << AMI_CHAN_UNIQUEID)) || u.str_len[AMI_CHAN_UNIQUEID] == 0)
        return;
    const char *uid = u.str[AMI_CHAN_UNIQUEID];
    size_t len = u.str_len[AMI_CHAN_UNIQUEID];
    uint32_t hash = cs_hash(uid, len);
    if (tombs_has(t, uid, len, hash))
        return;
    cs_slot_t *s = table_find_uid(t, uid, len, hash);
    if (s && s->event_seq > t->listing_seq) {
        s->listed = t->rebuild_id;
        return;
    }
    bool up = u.has_state && u.state == 6;
    if (!s || s->rec->started == 0) {
        u.started = now - (x.has_duration ? (double)x.duration_s : 0);
        u.has_started = true;
    }
    if (up && (!s || s->rec->answered == 0)) {
        u.answered = now; /* up before the engine looked: the rebuild is the best it knows */
        u.has_answered = true;
    }
    if (s)
        table_update(t, s, &u);
    else
        s = table_insert(t, &u, hash);
    if (s)
        s->listed = t->rebuild_id;
}

void cs_table_rebuild_end(cs_table_t *t, bool complete)
{
    if (!t->rebuilding)
        return;
    cs_table_rebuild_listing(t); /* an empty list may come without items */
    if (complete) {
        for (cs_slot_t *s = t->head, *next; s; s = next) {
            next = s->next;
            if (s->listed == t->rebuild_id || s->event_seq > t->listing_seq)
                continue;
            table_remove(t, s);
            table_release(t, s);
            t->changes++;
        }
    }
    t->rebuilding = t->listing = false;
    t->rebuilds++;
    tombs_clear(t);
}

void cs_table_rebuild_abort(cs_table_t *t)
{
    t->rebuilding = t->listing = false;
    tombs_clear(t);
}
