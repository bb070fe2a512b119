/*
 * What each channel event does to a server's table: the event names the
 * table reads (recognised by the parser's name hash), the snapshot(s) each
 * carries, and the few event-specific headers (Cause, BridgeUniqueid,
 * DialStatus, Newname, Variable/Value). Only Newchannel creates a channel;
 * every other event changes a channel the table already has, so a late
 * event can never bring a hung-up channel back.
 */
#include <string.h>

#include "callstate/callstate_internal.h"

#define BIT(f) (1u << (f))

typedef enum ev_kind {
    EV_OTHER = 0,
    EV_NEWCHANNEL,
    EV_HANGUP,
    EV_UPDATE,
    EV_RENAME,
    EV_BRIDGE_ENTER,
    EV_BRIDGE_LEAVE,
    EV_BRIDGE_DESTROY,
    EV_DIAL_BEGIN,
    EV_DIAL_STATUS,
    EV_LOCAL_BRIDGE,
    EV_BLIND_TRANSFER,
    EV_ATTENDED_TRANSFER,
    EV_VARSET,
} ev_kind_t;

static const struct {
    const char *name;
    ev_kind_t kind;
} EVENTS[] = {
    {"Newchannel", EV_NEWCHANNEL},       {"Hangup", EV_HANGUP},
    {"Newstate", EV_UPDATE},             {"NewCallerid", EV_UPDATE},
    {"NewConnectedLine", EV_UPDATE},     {"NewAccountCode", EV_UPDATE},
    {"Newexten", EV_UPDATE},             {"Rename", EV_RENAME},
    {"BridgeEnter", EV_BRIDGE_ENTER},    {"BridgeLeave", EV_BRIDGE_LEAVE},
    {"BridgeDestroy", EV_BRIDGE_DESTROY}, {"DialBegin", EV_DIAL_BEGIN},
    {"DialState", EV_DIAL_STATUS},       {"DialEnd", EV_DIAL_STATUS},
    {"LocalBridge", EV_LOCAL_BRIDGE},    {"BlindTransfer", EV_BLIND_TRANSFER},
    {"AttendedTransfer", EV_ATTENDED_TRANSFER}, {"VarSet", EV_VARSET},
};
#define NEVENTS (sizeof EVENTS / sizeof EVENTS[0])
_Static_assert(sizeof EVENTS / sizeof EVENTS[0] <= 24, "cs_table_t holds 24 event names");

size_t cs_event_names(const char **out, size_t cap, bool with_varset)
{
    size_t n = 0;
    for (size_t i = 0; i < NEVENTS && n < cap; i++)
        if (with_varset || EVENTS[i].kind != EV_VARSET)
            out[n++] = EVENTS[i].name;
    return n;
}

/* The parser hashed the event name already: one probe of a small table by
 * that hash, then the name compared (Asterisk's own case first, word by
 * word; any other case byte by byte). */
static ev_kind_t kind_of(const cs_table_t *t, const ami_msg_t *msg)
{
    if (msg->kind != AMI_MSG_EVENT || msg->nhdrs == 0)
        return EV_OTHER;
    for (uint32_t p = msg->name_hash & (CS_KIND_SLOTS - 1);; p = (p + 1) & (CS_KIND_SLOTS - 1)) {
        uint8_t e = t->kind_slot[p];
        if (e == 0)
            return EV_OTHER;
        if (t->ev_hash[e - 1] != msg->name_hash)
            continue;
        size_t len;
        const char *name = ami_msg_value(msg, 0, &len);
        bool same = len == t->ev_len[e - 1] && (cs_same_bytes(EVENTS[e - 1].name, name, len) ||
                                                ami_str_ieq(EVENTS[e - 1].name, len, name, len));
        return same ? EVENTS[e - 1].kind : EV_OTHER;
    }
}

void cs_events_index(cs_table_t *t)
{
    for (size_t i = 0; i < NEVENTS; i++) {
        t->ev_len[i] = (uint8_t)strlen(EVENTS[i].name);
        t->ev_hash[i] = ami_name_hash(EVENTS[i].name, t->ev_len[i]);
        uint32_t p = t->ev_hash[i] & (CS_KIND_SLOTS - 1);
        while (t->kind_slot[p])
            p = (p + 1) & (CS_KIND_SLOTS - 1);
        t->kind_slot[p] = (uint8_t)(i + 1);
    }
}

/* ---- events ----------------------------------------------------------------------------- */

/* Apply what u says to its channel (creating it only when asked); marks it
 * touched by this event. */
static cs_slot_t *touch(cs_table_t *t, chan_update_t *u, double now, bool create)
{
    if (!(u->str_mask & BIT(AMI_CHAN_UNIQUEID)) || u->str_len[AMI_CHAN_UNIQUEID] == 0)
        return NULL;
    const char *uid = u->str[AMI_CHAN_UNIQUEID];
    size_t len = u->str_len[AMI_CHAN_UNIQUEID];
    uint32_t hash = cs_hash(uid, len);
    cs_slot_t *s = table_find_uid(t, uid, len, hash);
    if (!s && !create)
        return NULL;
    if (u->has_state && u->state == 6 && (!s || s->rec->answered == 0)) {
        u->answered = now;
        u->has_answered = true;
    }
    if (s) {
        table_update(t, s, u);
    } else {
        u->started = now;
        u->has_started = true;
        s = table_insert(t, u, hash);
    }
    if (s)
        s->event_seq = t->seq;
    return s;
}

static double event_time(const event_extras_t *x, double now)
{
    return x->timestamp > 0 ? x->timestamp : now;
}

static void read_snapshot(cs_table_t *t, const ami_msg_t *msg, const char *prefix, chan_update_t *u,
                          event_extras_t *x)
{
    u->str_mask = u->var_mask = 0;
    u->has_state = u->has_priority = u->has_cause = u->has_started = u->has_answered = false;
    t->truncated += chan_read(msg, prefix, strlen(prefix), t->conf, u, x);
}

/* A value the table sets itself (not read by chan_read), cut to the bound. */
static void set_str(cs_table_t *t, chan_update_t *u, ami_chan_field_t f, const char *v, size_t len)
{
    if (!v) {
        v = "";
        len = 0;
    }
    if (len > AMI_CHAN_FIELD_MAX) {
        len = AMI_CHAN_FIELD_MAX;
        t->truncated++;
    }
    chan_update_str(u, f, v, len);
}

static cs_slot_t *slot_of(const cs_table_t *t, const chan_update_t *u)
{
    if (!(u->str_mask & BIT(AMI_CHAN_UNIQUEID)))
        return NULL;
    const char *uid = u->str[AMI_CHAN_UNIQUEID];
    size_t len = u->str_len[AMI_CHAN_UNIQUEID];
    return table_find_uid(t, uid, len, cs_hash(uid, len));
}

static void on_hangup(cs_table_t *t, chan_update_t *u, const event_extras_t *x, double now)
{
    u->hangup_cause = x->cause >= 0 ? x->cause : 0;
    u->has_cause = true;
    set_str(t, u, AMI_CHAN_HANGUP_CAUSE_TXT, x->cause_txt, x->cause_txt_len);
    cs_slot_t *s = touch(t, u, now, false);
    if (!s)
        return;
    table_remove(t, s);
    t->dead = s;
    t->changes++;
    if (t->rebuilding && t->listing) {
        size_t len;
        const char *uid = cs_field(s->rec, AMI_CHAN_UNIQUEID, &len);
        tombs_add(t, uid, len);
    }
}

/* Rename: Channel (the old name), Newname, Uniqueid. */
static void on_rename(cs_table_t *t, chan_update_t *u, const event_extras_t *x, double now)
{
    if (!x->newname || x->newname_len == 0)
        return;
    if (!(u->str_mask & BIT(AMI_CHAN_UNIQUEID)) && (u->str_mask & BIT(AMI_CHAN_CHANNEL))) {
        cs_slot_t *s = table_find_name(t, u->str[AMI_CHAN_CHANNEL], u->str_len[AMI_CHAN_CHANNEL]);
        if (!s)
            return;
        size_t len;
        const char *uid = cs_field(s->rec, AMI_CHAN_UNIQUEID, &len);
        chan_update_str(u, AMI_CHAN_UNIQUEID, uid, len);
    }
    set_str(t, u, AMI_CHAN_CHANNEL, x->newname, x->newname_len);
    touch(t, u, now, false);
}

static bool same_str(const ami_chan_t *r, ami_chan_field_t f, const char *v, size_t len)
{
    size_t n;
    const char *cur = cs_field(r, f, &n);
    return n == len && memcmp(cur, v, len) == 0;
}

static void on_bridge_leave(cs_table_t *t, chan_update_t *u, const event_extras_t *x, double now)
{
    cs_slot_t *s = slot_of(t, u);
    size_t blen = x->bridge_len > AMI_CHAN_FIELD_MAX ? AMI_CHAN_FIELD_MAX : x->bridge_len;
    if (s && (!x->bridge || same_str(s->rec, AMI_CHAN_BRIDGE, x->bridge, blen)))
        set_str(t, u, AMI_CHAN_BRIDGE, "", 0);
    touch(t, u, now, false);
}

static void on_bridge_destroy(cs_table_t *t, const event_extras_t *x)
{
    if (!x->bridge || x->bridge_len == 0)
        return;
    size_t blen = x->bridge_len > AMI_CHAN_FIELD_MAX ? AMI_CHAN_FIELD_MAX : x->bridge_len;
    chan_update_t clear;
    clear.str_mask = clear.var_mask = 0;
    clear.has_state = clear.has_priority = clear.has_cause = clear.has_started = clear.has_answered = false;
    chan_update_str(&clear, AMI_CHAN_BRIDGE, "", 0);
    for (cs_slot_t *s = t->head; s; s = s->next) {
        if (!same_str(s->rec, AMI_CHAN_BRIDGE, x->bridge, blen))
            continue;
        table_update(t, s, &clear);
        s->event_seq = t->seq;
    }
}

/* DialBegin/DialState/DialEnd: the caller's snapshot (absent when an
 * Originate dials) and the callee's (prefix Dest). */
static void on_dial(cs_table_t *t, const ami_msg_t *msg, chan_update_t *caller, const event_extras_t *x,
                    bool begin, double now)
{
    chan_update_t dest;
    read_snapshot(t, msg, "Dest", &dest, NULL);
    const char *status = begin ? "" : x->dial_status;
    size_t status_len = begin ? 0 : x->dial_status_len;
    if (begin && (caller->str_mask & BIT(AMI_CHAN_UNIQUEID)))
        chan_update_str(&dest, AMI_CHAN_DIALED_BY, caller->str[AMI_CHAN_UNIQUEID],
                        caller->str_len[AMI_CHAN_UNIQUEID]);
    if (begin || x->dial_status) {
        set_str(t, caller, AMI_CHAN_DIAL_STATUS, status, status_len);
        set_str(t, &dest, AMI_CHAN_DIAL_STATUS, status, status_len);
    }
    touch(t, caller, now, false);
    touch(t, &dest, now, false);
}

/* Events whose snapshots all carry a prefix: update each channel. */
static void on_prefixed(cs_table_t *t, const ami_msg_t *msg, const char *const *prefixes, double now)
{
    for (; *prefixes; prefixes++) {
        chan_update_t u;
        read_snapshot(t, msg, *prefixes, &u, NULL);
        touch(t, &u, now, false);
    }
}

static void on_varset(cs_table_t *t, chan_update_t *u, const event_extras_t *x, double now)
{
    int i = x->variable ? chan_var_index(t->conf, x->variable, x->variable_len) : -1;
    if (i >= 0) {
        size_t len = x->value ? x->value_len : 0;
        if (len > t->conf->var_max) {
            len = t->conf->var_max;
            t->truncated++;
        }
        u->var[i] = x->value ? x->value : "";
        u->var_len[i] = (uint16_t)len;
        u->var_mask |= 1u << i;
    }
    touch(t, u, now, false);
}

void cs_table_apply(cs_table_t *t, const ami_msg_t *msg, double now)
{
    static const char *const LOCAL[] = {"LocalOne", "LocalTwo", NULL};
    static const char *const BLIND[] = {"Transferer", "Transferee", NULL};
    static const char *const ATTENDED[] = {"OrigTransferer", "SecondTransferer", "Transferee",
                                           "TransferTarget", NULL};
    ev_kind_t kind = kind_of(t, msg);
    if (kind == EV_OTHER)
        return;
    cs_table_forget_dead(t);
    t->seq++;
    uint64_t changes = t->changes;
    chan_update_t u;
    event_extras_t x;
    read_snapshot(t, msg, "", &u, &x);
    now = event_time(&x, now);
    switch (kind) {
    case EV_NEWCHANNEL: touch(t, &u, now, true); break;
    case EV_HANGUP: on_hangup(t, &u, &x, now); break;
    case EV_RENAME: on_rename(t, &u, &x, now); break;
    case EV_BRIDGE_ENTER:
        set_str(t, &u, AMI_CHAN_BRIDGE, x.bridge, x.bridge_len);
        touch(t, &u, now, false);
        break;
    case EV_BRIDGE_LEAVE: on_bridge_leave(t, &u, &x, now); break;
    case EV_BRIDGE_DESTROY: on_bridge_destroy(t, &x); break;
    case EV_DIAL_BEGIN: on_dial(t, msg, &u, &x, true, now); break;
    case EV_DIAL_STATUS: on_dial(t, msg, &u, &x, false, now); break;
    case EV_LOCAL_BRIDGE: on_prefixed(t, msg, LOCAL, now); break;
    case EV_BLIND_TRANSFER: on_prefixed(t, msg, BLIND, now); break;
    case EV_ATTENDED_TRANSFER: on_prefixed(t, msg, ATTENDED, now); break;
    case EV_VARSET: on_varset(t, &u, &x, now); break;
    default: touch(t, &u, now, false); break;
    }
    if (t->changes != changes)
        t->events_applied++;
}
