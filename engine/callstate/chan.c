/*
 * The flat channel record: building a new version from the old one and an
 * update, and reading it back. No allocation here: callers give the room.
 */
#include <stddef.h>
#include <string.h>

#include "callstate/callstate_internal.h"

static const char *const FIELD_NAMES[AMI_CHAN_STR_COUNT] = {
    "channel",       "uniqueid",       "linkedid",    "state_desc", "caller_num",  "caller_name",
    "connected_num", "connected_name", "language",    "accountcode", "context",    "exten",
    "application",   "appdata",        "bridge",      "dial_status", "dialed_by",  "hangup_cause_txt",
};

const char *ami_chan_field_name(ami_chan_field_t f)
{
    return (unsigned)f < AMI_CHAN_STR_COUNT ? FIELD_NAMES[f] : "?";
}

static uint32_t *var_table(const ami_chan_t *ch)
{
    return (uint32_t *)(void *)((char *)ch + sizeof *ch);
}

#define SLOT(len) (((len) + 8) & ~(size_t)7) /* room for len bytes and the NUL */

/* Fields that start empty and are set once later get room for their usual
 * value up front, so setting them does not rebuild the record. */
static const uint8_t MIN_ROOM[AMI_CHAN_STR_COUNT] = {
    [AMI_CHAN_BRIDGE] = 40,           /* a bridge's UUID */
    [AMI_CHAN_HANGUP_CAUSE_TXT] = 32, /* "User alerting, no answer" */
    [AMI_CHAN_DIAL_STATUS] = 16,      /* "CHANUNAVAIL" */
    [AMI_CHAN_APPLICATION] = 16,      /* Newexten changes them at every step */
    [AMI_CHAN_APPDATA] = 32,
};

/* Every other field: 8 bytes at least, as SLOT gives. */
static size_t room_for(int f, size_t len)
{
    size_t room = SLOT(len);
    return room < MIN_ROOM[f] ? MIN_ROOM[f] : room;
}

size_t chan_max_size(uint32_t nvars, uint32_t var_max)
{
    return sizeof(ami_chan_t) + (size_t)nvars * (2 * sizeof(uint32_t) + SLOT(var_max)) +
           AMI_CHAN_STR_COUNT * SLOT(AMI_CHAN_FIELD_MAX) + 40 + 32 + 16 + 16 + 32;
}

/* Values are mostly under 16 bytes: two overlapping moves copy them, where
 * a call to memcpy would cost more than the copy. */
static inline void copy_value(char *to, const char *from, size_t len)
{
    if (len >= 8 && len <= 16) {
        uint64_t a, b;
        memcpy(&a, from, 8);
        memcpy(&b, from + len - 8, 8);
        memcpy(to, &a, 8);
        memcpy(to + len - 8, &b, 8);
    } else if (len >= 4 && len < 8) {
        uint32_t a, b;
        memcpy(&a, from, 4);
        memcpy(&b, from + len - 4, 4);
        memcpy(to, &a, 4);
        memcpy(to + len - 4, &b, 4);
    } else if (len < 4) {
        for (size_t i = 0; i < len; i++)
            to[i] = from[i];
    } else {
        memcpy(to, from, len);
    }
}

/* A fresh slot of room bytes (a multiple of 8): zeroed a word at a time,
 * then the value, so the NUL and the padding after it are zero (chan_same
 * compares them). */
static size_t put(char *base, size_t pos, const char *s, size_t len, size_t room)
{
    static const uint64_t zero = 0;
    char *at = base + pos;
    for (size_t i = 0; i < room; i += 8)
        memcpy(at + i, &zero, 8);
    copy_value(at, s, len);
    return pos + room;
}

static void build_numbers(ami_chan_t *r, const ami_chan_t *old, const chan_update_t *u)
{
    r->serial = old ? old->serial : 0;
    r->version = old ? old->version : 0;
    r->state = u->has_state ? u->state : old ? old->state : -1;
    r->priority = u->has_priority ? u->priority : old ? old->priority : 0;
    r->hangup_cause = u->has_cause ? u->hangup_cause : old ? old->hangup_cause : -1;
    r->started = u->has_started ? u->started : old ? old->started : 0;
    r->answered = u->has_answered ? u->answered : old ? old->answered : 0;
}

/* The value of string field f after u: u's, else old's, else "". */
static inline const char *str_after(const ami_chan_t *old, const chan_update_t *u, int f, size_t *len)
{
    if (u->str_mask & (1u << f)) {
        *len = u->str_len[f];
        return u->str[f];
    }
    if (old) {
        *len = old->str_len[f];
        return (const char *)old + old->str_off[f];
    }
    *len = 0;
    return "";
}

/* Variable i after u: u's, else old's, else unset (NULL). */
static inline const char *var_after(const ami_chan_t *old, const chan_update_t *u, uint32_t i, size_t *len)
{
    if (u->var_mask & (1u << i)) {
        *len = u->var_len[i];
        return u->var[i];
    }
    const uint32_t *old_vt = old ? var_table(old) : NULL;
    if (old && i < old->nvars && old_vt[2 * i + 1] != CHAN_VAR_UNSET) {
        *len = old_vt[2 * i + 1];
        return (const char *)old + old_vt[2 * i];
    }
    *len = 0;
    return NULL;
}

size_t chan_build(void *out, size_t cap, const ami_chan_t *old, uint32_t nvars, const chan_update_t *u)
{
    ami_chan_t *r = out;
    char *base = out;
    size_t pos = sizeof *r + (size_t)nvars * 2 * sizeof(uint32_t), len;
    if (pos > cap)
        return 0;
    build_numbers(r, old, u);
    r->nvars = nvars;
    for (int f = 0; f < AMI_CHAN_STR_COUNT; f++) {
        const char *s = str_after(old, u, f, &len);
        size_t room = room_for(f, len);
        if (room > cap - pos)
            return 0;
        r->str_off[f] = (uint32_t)pos;
        r->str_len[f] = (uint16_t)len;
        pos = put(base, pos, s, len, room);
    }
    r->str_off[AMI_CHAN_STR_COUNT] = (uint32_t)pos;
    uint32_t *vt = var_table(r);
    for (uint32_t i = 0; i < nvars; i++) {
        const char *s = var_after(old, u, i, &len);
        if (!s) {
            vt[2 * i] = 0;
            vt[2 * i + 1] = CHAN_VAR_UNSET;
            continue;
        }
        if (SLOT(len) > cap - pos)
            return 0;
        vt[2 * i] = (uint32_t)pos;
        vt[2 * i + 1] = (uint32_t)len;
        pos = put(base, pos, s, len, SLOT(len));
    }
    r->size = (uint32_t)pos;
    return pos;
}

static size_t room_of(const ami_chan_t *r, int f)
{
    return r->str_off[f + 1] - r->str_off[f];
}

static bool same_str(const ami_chan_t *r, int f, const char *s, size_t len)
{
    return r->str_len[f] == len && cs_same_bytes((const char *)r + r->str_off[f], s, len);
}

/* Numbers first: they never need room. */
static bool update_numbers(ami_chan_t *r, const chan_update_t *u)
{
    bool changed = false;
    if (u->has_state && r->state != u->state) {
        r->state = u->state;
        changed = true;
    }
    if (u->has_priority && r->priority != u->priority) {
        r->priority = u->priority;
        changed = true;
    }
    if (u->has_cause && r->hangup_cause != u->hangup_cause) {
        r->hangup_cause = u->hangup_cause;
        changed = true;
    }
    if (u->has_started && r->started != u->started) {
        r->started = u->started;
        changed = true;
    }
    if (u->has_answered && r->answered != u->answered) {
        r->answered = u->answered;
        changed = true;
    }
    return changed;
}

int chan_update_in_place(ami_chan_t *r, const chan_update_t *u)
{
    if (u->var_mask)
        return -1;
    uint32_t differ = 0;
    for (uint32_t m = u->str_mask; m; m &= m - 1) {
        int f = __builtin_ctz(m);
        if (same_str(r, f, u->str[f], u->str_len[f]))
            continue;
        if ((size_t)u->str_len[f] + 1 > room_of(r, f))
            return -1;
        differ |= 1u << f;
    }
    for (uint32_t m = differ; m; m &= m - 1) {
        int f = __builtin_ctz(m);
        char *at = (char *)r + r->str_off[f];
        size_t len = u->str_len[f], old = r->str_len[f];
        if (old > len) /* padding stays zero: chan_same compares it */
            memset(at + len, 0, old - len);
        copy_value(at, u->str[f], len);
        at[len] = '\0';
        r->str_len[f] = (uint16_t)len;
    }
    bool changed = update_numbers(r, u) || differ;
    if (changed)
        r->version++;
    return changed ? 1 : 0;
}

bool chan_same(const ami_chan_t *a, const ami_chan_t *b)
{
    size_t from = offsetof(ami_chan_t, started);
    return a->size == b->size && memcmp((const char *)a + from, (const char *)b + from, a->size - from) == 0;
}

/* ---- reading ------------------------------------------------------------------------ */

size_t ami_chan_size(const ami_chan_t *ch)
{
    return ch->size;
}

const char *ami_chan_str(const ami_chan_t *ch, ami_chan_field_t f, size_t *len)
{
    if ((unsigned)f >= AMI_CHAN_STR_COUNT) {
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = ch->str_len[f];
    return (const char *)ch + ch->str_off[f];
}

int ami_chan_state(const ami_chan_t *ch)
{
    return ch->state;
}

int ami_chan_priority(const ami_chan_t *ch)
{
    return ch->priority;
}

int ami_chan_hangup_cause(const ami_chan_t *ch)
{
    return ch->hangup_cause;
}

double ami_chan_started(const ami_chan_t *ch)
{
    return ch->started;
}

double ami_chan_answered(const ami_chan_t *ch)
{
    return ch->answered;
}

size_t ami_chan_var_count(const ami_chan_t *ch)
{
    return ch->nvars;
}

const char *ami_chan_var(const ami_chan_t *ch, size_t i, size_t *len)
{
    if (i >= ch->nvars)
        return NULL;
    const uint32_t *vt = var_table(ch);
    if (vt[2 * i + 1] == CHAN_VAR_UNSET)
        return NULL;
    if (len)
        *len = vt[2 * i + 1];
    return (const char *)ch + vt[2 * i];
}

uint64_t ami_chan_serial(const ami_chan_t *ch)
{
    return ch->serial;
}

uint32_t ami_chan_version(const ami_chan_t *ch)
{
    return ch->version;
}
