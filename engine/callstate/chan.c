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
static size_t min_room(int f)
{
    switch (f) {
    case AMI_CHAN_BRIDGE: return 40;            /* a bridge's UUID */
    case AMI_CHAN_HANGUP_CAUSE_TXT: return 32;  /* "User alerting, no answer" */
    case AMI_CHAN_DIAL_STATUS: return 16;       /* "CHANUNAVAIL" */
    case AMI_CHAN_APPLICATION: return 16;       /* Newexten changes them at every step */
    case AMI_CHAN_APPDATA: return 32;
    default: return 8;
    }
}

size_t chan_max_size(uint32_t nvars, uint32_t var_max)
{
    return sizeof(ami_chan_t) + (size_t)nvars * (2 * sizeof(uint32_t) + SLOT(var_max)) +
           AMI_CHAN_STR_COUNT * SLOT(AMI_CHAN_FIELD_MAX) + 40 + 32 + 16 + 16 + 32;
}

/* Zero the slot's last word, then copy: the padding after the NUL is zero
 * (chan_same compares it) without a memset call per field. */
static void fill(char *at, size_t room, const char *s, size_t len)
{
    memset(at + room - 8, 0, 8);
    if (len)
        memcpy(at, s, len);
    at[len] = '\0';
}

static size_t put(char *base, size_t pos, const char *s, size_t len, size_t at_least)
{
    size_t room = SLOT(len);
    if (room < at_least)
        room = at_least;
    if (room > SLOT(len))
        memset(base + pos, 0, room);
    fill(base + pos, room, s, len);
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

size_t chan_build(void *out, const ami_chan_t *old, uint32_t nvars, const chan_update_t *u)
{
    ami_chan_t *r = out;
    char *base = out;
    build_numbers(r, old, u);
    r->nvars = nvars;
    size_t pos = sizeof *r + (size_t)nvars * 2 * sizeof(uint32_t);
    for (int f = 0; f < AMI_CHAN_STR_COUNT; f++) {
        const char *s = "";
        size_t len = 0;
        if (u->str_mask & (1u << f)) {
            s = u->str[f];
            len = u->str_len[f];
        } else if (old) {
            s = (const char *)old + old->str_off[f];
            len = old->str_len[f];
        }
        r->str_off[f] = (uint32_t)pos;
        r->str_len[f] = (uint16_t)len;
        pos = put(base, pos, s, len, min_room(f));
    }
    r->str_end = (uint32_t)pos;
    uint32_t *vt = var_table(r);
    const uint32_t *old_vt = old ? var_table(old) : NULL;
    for (uint32_t i = 0; i < nvars; i++) {
        const char *s = NULL;
        size_t len = 0;
        if (u->var_mask & (1u << i)) {
            s = u->var[i];
            len = u->var_len[i];
        } else if (old && i < old->nvars && old_vt[2 * i + 1] != CHAN_VAR_UNSET) {
            s = (const char *)old + old_vt[2 * i];
            len = old_vt[2 * i + 1];
        }
        if (!s) {
            vt[2 * i] = 0;
            vt[2 * i + 1] = CHAN_VAR_UNSET;
            continue;
        }
        vt[2 * i] = (uint32_t)pos;
        vt[2 * i + 1] = (uint32_t)len;
        pos = put(base, pos, s, len, 8);
    }
    r->size = (uint32_t)pos;
    return pos;
}

static size_t room_of(const ami_chan_t *r, int f)
{
    uint32_t end = f + 1 < AMI_CHAN_STR_COUNT ? r->str_off[f + 1] : r->str_end;
    return end - r->str_off[f];
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
        size_t room = room_of(r, f), len = u->str_len[f], old = r->str_len[f];
        if (old > len) /* padding stays zero: chan_same compares it */
            memset(at + len, 0, old - len);
        fill(at, room, u->str[f], len);
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
