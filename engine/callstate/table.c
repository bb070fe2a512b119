/*
 * One server's channel table: the slots, their two indexes (Uniqueid and
 * Channel name, chained hashes that double as the table grows), the
 * oldest-first list, and inserting, updating and removing a channel (what
 * each event does is in table_events.c, rebuilds in table_rebuild.c).
 *
 * Hot path: an event is one pass over its headers (chan_read), one hash
 * lookup, and the values that changed rewritten in place; only a value
 * that outgrows its slot (or a variable) rebuilds the record, in a scratch
 * buffer copied back when something changed. Slots freed by Hangup are
 * kept (up to SPARE_MAX) for the next Newchannel, so call churn does not
 * allocate.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "callstate/callstate_internal.h"
#include "util/alloc.h"

#define INITIAL_BUCKETS 64u
#define SPARE_MAX 64u
#define BIT(f) (1u << (f))

/* Uniqueids and channel names are 10 to 40 bytes: mix 8 bytes at a time
 * (a multiply-xorshift per word), the tail as one more word that overlaps
 * the last (the length is in the seed), never a byte loop. A multiply
 * carries a word's high bytes only upwards, and those are the bytes that
 * differ ("1733360000.1234": the sequence ends the last word): a final
 * avalanche brings them down to the bits that pick a bucket. */
/* A key drawn once per process: Uniqueids and names come from the AMI
 * server, and with a known hash a hostile one could pick ids that share a
 * bucket and make every lookup walk the whole table. */
static uint64_t hash_key;
static pthread_once_t hash_key_once = PTHREAD_ONCE_INIT;

static void draw_hash_key(void)
{
    uint64_t k = 0;
    if (getrandom(&k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k)
        k = (uint64_t)(uintptr_t)&k ^ (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull; /* no entropy yet: better than none */
    hash_key = k;
}

void cs_hash_init(void)
{
    pthread_once(&hash_key_once, draw_hash_key);
}

static inline uint64_t hash_mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    return h ^ (h >> 32);
}

uint32_t cs_hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ hash_key ^ n, w;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&w, s + i, 8);
            h = hash_mix(h, w);
        }
        memcpy(&w, s + n - 8, 8);
        h = hash_mix(h, w);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        h = hash_mix(h, (uint64_t)a << 32 | b);
    } else if (n > 0) {
        w = (unsigned char)s[0] | (uint64_t)(unsigned char)s[n / 2] << 8 | (uint64_t)(unsigned char)s[n - 1] << 16;
        h = hash_mix(h, w);
    }
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t)h;
}


/* ---- indexes ------------------------------------------------------------------------ */

int cs_table_init(cs_table_t *t, const chan_read_conf_t *conf, uint32_t max_channels, uint64_t *serials,
                  void *scratch)
{
    memset(t, 0, sizeof *t);
    t->conf = conf;
    t->max_channels = max_channels;
    t->serials = serials;
    t->scratch = scratch;
    cs_events_index(t);
    t->nbuckets = INITIAL_BUCKETS;
    t->uid_buckets = ami_calloc(t->nbuckets, sizeof *t->uid_buckets);
    t->name_buckets = ami_calloc(t->nbuckets, sizeof *t->name_buckets);
    if (!t->uid_buckets || !t->name_buckets) {
        cs_table_deinit(t);
        return -1;
    }
    return 0;
}

static void slot_free(cs_slot_t *s)
{
    ami_free(s->rec);
    ami_free(s);
}

void cs_table_deinit(cs_table_t *t)
{
    for (cs_slot_t *s = t->head, *next; s; s = next) {
        next = s->next;
        slot_free(s);
    }
    for (cs_slot_t *s = t->spare, *next; s; s = next) {
        next = s->next;
        slot_free(s);
    }
    if (t->dead)
        slot_free(t->dead);
    tombs_clear(t);
    ami_free(t->tombs);
    ami_free(t->uid_buckets);
    ami_free(t->name_buckets);
    memset(t, 0, sizeof *t);
}

static void link_uid(cs_table_t *t, cs_slot_t *s)
{
    cs_slot_t **b = &t->uid_buckets[s->uid_hash & (t->nbuckets - 1)];
    s->uid_next = *b;
    *b = s;
}

static void link_name(cs_table_t *t, cs_slot_t *s)
{
    cs_slot_t **b = &t->name_buckets[s->name_hash & (t->nbuckets - 1)];
    s->name_next = *b;
    *b = s;
}

static void unlink_uid(cs_table_t *t, cs_slot_t *s)
{
    for (cs_slot_t **p = &t->uid_buckets[s->uid_hash & (t->nbuckets - 1)]; *p; p = &(*p)->uid_next)
        if (*p == s) {
            *p = s->uid_next;
            return;
        }
}

static void unlink_name(cs_table_t *t, cs_slot_t *s)
{
    for (cs_slot_t **p = &t->name_buckets[s->name_hash & (t->nbuckets - 1)]; *p; p = &(*p)->name_next)
        if (*p == s) {
            *p = s->name_next;
            return;
        }
}

/* Keep chains short: double the buckets when the table outgrows them. A
 * failed allocation just leaves longer chains. */
static void maybe_grow(cs_table_t *t)
{
    if (t->count < t->nbuckets)
        return;
    uint32_t n = t->nbuckets * 2;
    cs_slot_t **uid = ami_calloc(n, sizeof *uid), **name = ami_calloc(n, sizeof *name);
    if (!uid || !name) {
        ami_free(uid);
        ami_free(name);
        return;
    }
    ami_free(t->uid_buckets);
    ami_free(t->name_buckets);
    t->uid_buckets = uid;
    t->name_buckets = name;
    t->nbuckets = n;
    for (cs_slot_t *s = t->head; s; s = s->next) {
        link_uid(t, s);
        link_name(t, s);
    }
}

cs_slot_t *table_find_uid(const cs_table_t *t, const char *uid, size_t len, uint32_t hash)
{
    for (cs_slot_t *s = t->uid_buckets[hash & (t->nbuckets - 1)]; s; s = s->uid_next) {
        size_t n;
        const char *v = cs_field(s->rec, AMI_CHAN_UNIQUEID, &n);
        if (s->uid_hash == hash && n == len && cs_same_bytes(v, uid, len))
            return s;
    }
    return NULL;
}

cs_slot_t *table_find_name(const cs_table_t *t, const char *name, size_t len)
{
    uint32_t hash = cs_hash(name, len);
    for (cs_slot_t *s = t->name_buckets[hash & (t->nbuckets - 1)]; s; s = s->name_next) {
        size_t n;
        const char *v = cs_field(s->rec, AMI_CHAN_CHANNEL, &n);
        if (s->name_hash == hash && n == len && memcmp(v, name, len) == 0)
            return s;
    }
    return NULL;
}

static bool matches(const ami_chan_t *r, const char *id, size_t len)
{
    size_t n;
    const char *v = cs_field(r, AMI_CHAN_UNIQUEID, &n);
    if (n == len && memcmp(v, id, len) == 0)
        return true;
    v = cs_field(r, AMI_CHAN_CHANNEL, &n);
    return n == len && memcmp(v, id, len) == 0;
}

const ami_chan_t *cs_table_find(const cs_table_t *t, const char *id, size_t len)
{
    cs_slot_t *s = table_find_uid(t, id, len, cs_hash(id, len));
    if (!s)
        s = table_find_name(t, id, len);
    if (s)
        return s->rec;
    return t->dead && matches(t->dead->rec, id, len) ? t->dead->rec : NULL;
}

/* ---- slots ---------------------------------------------------------------------------- */

static bool ensure_cap(cs_slot_t *s, size_t size)
{
    if (s->cap >= size)
        return true;
    size_t cap = (size + 63) & ~(size_t)63; /* slack: most updates then fit in place */
    ami_chan_t *rec = ami_realloc(s->rec, cap);
    if (!rec)
        return false;
    s->rec = rec;
    s->cap = (uint32_t)cap;
    return true;
}

static cs_slot_t *slot_take(cs_table_t *t)
{
    cs_slot_t *s = t->spare;
    if (s) {
        t->spare = s->next;
        t->nspare--;
        ami_chan_t *rec = s->rec;
        uint32_t cap = s->cap;
        memset(s, 0, sizeof *s);
        s->rec = rec;
        s->cap = cap;
        return s;
    }
    return ami_calloc(1, sizeof *s);
}

void table_release(cs_table_t *t, cs_slot_t *s)
{
    if (t->nspare >= SPARE_MAX) {
        slot_free(s);
        return;
    }
    s->next = t->spare;
    t->spare = s;
    t->nspare++;
}

/* The record is built straight into its slot when its room suffices (a
 * spare slot's usually does), else in the scratch buffer and copied.
 * uid_hash is cs_hash of u's Uniqueid. */
cs_slot_t *table_insert(cs_table_t *t, const chan_update_t *u, uint32_t uid_hash)
{
    if (t->count >= t->max_channels) {
        t->refused++;
        return NULL;
    }
    cs_slot_t *s = slot_take(t);
    size_t size = s ? chan_build(s->rec, s->cap, NULL, t->conf->nvars, u) : 0;
    if (s && !size) {
        size = chan_build(t->scratch, SIZE_MAX, NULL, t->conf->nvars, u);
        if (ensure_cap(s, size))
            memcpy(s->rec, t->scratch, size);
        else
            size = 0;
    }
    if (!size) {
        if (s)
            slot_free(s);
        t->refused++;
        return NULL;
    }
    s->rec->serial = ++*t->serials;
    s->rec->version = 1;
    s->uid_hash = uid_hash;
    size_t n;
    const char *v = cs_field(s->rec, AMI_CHAN_CHANNEL, &n);
    s->name_hash = cs_hash(v, n);
    s->prev = t->tail;
    if (t->tail)
        t->tail->next = s;
    else
        t->head = s;
    t->tail = s;
    t->count++;
    link_uid(t, s);
    link_name(t, s);
    maybe_grow(t);
    t->changes++;
    return s;
}

static bool renames(const ami_chan_t *r, const chan_update_t *u)
{
    if (!(u->str_mask & BIT(AMI_CHAN_CHANNEL)))
        return false;
    size_t len;
    const char *cur = cs_field(r, AMI_CHAN_CHANNEL, &len);
    return len != u->str_len[AMI_CHAN_CHANNEL] || !cs_same_bytes(cur, u->str[AMI_CHAN_CHANNEL], len);
}

/* Most updates change a few short values: rewritten in place. A value that
 * outgrows its slot, or a variable, rebuilds the record. */
void table_update(cs_table_t *t, cs_slot_t *s, const chan_update_t *u)
{
    bool renamed = renames(s->rec, u);
    if (renamed)
        unlink_name(t, s);
    int rc = chan_update_in_place(s->rec, u);
    if (rc < 0) {
        ami_chan_t *r = t->scratch;
        size_t size = chan_build(r, SIZE_MAX, s->rec, t->conf->nvars, u);
        rc = !chan_same(r, s->rec) && ensure_cap(s, size);
        if (rc) {
            r->version = s->rec->version + 1;
            memcpy(s->rec, r, size);
        }
    }
    if (renamed) {
        size_t len;
        const char *name = cs_field(s->rec, AMI_CHAN_CHANNEL, &len);
        s->name_hash = cs_hash(name, len);
        link_name(t, s);
    }
    if (rc > 0)
        t->changes++;
}

void table_remove(cs_table_t *t, cs_slot_t *s)
{
    unlink_uid(t, s);
    unlink_name(t, s);
    if (s->prev)
        s->prev->next = s->next;
    else
        t->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        t->tail = s->prev;
    s->prev = s->next = NULL;
    t->count--;
}

void cs_table_forget_dead(cs_table_t *t)
{
    if (t->dead) {
        table_release(t, t->dead);
        t->dead = NULL;
    }
}
