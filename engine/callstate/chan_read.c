/*
 * Reading what an AMI message says about channels: the channel snapshot
 * Asterisk puts in every channel event (Channel, ChannelState, ...,
 * Uniqueid, Linkedid; optionally prefixed: DestChannel, LocalOneChannel),
 * the CoreShowChannel list item's extras (Application, ApplicationData,
 * Duration, BridgeId), tracked ChanVariable values, and the few
 * event-specific headers the table needs (BridgeUniqueid, DialStatus,
 * Newname, Variable/Value, Cause, Cause-txt, Timestamp).
 *
 * One pass over the headers per snapshot; keys are recognised by length
 * first, so most headers cost one or two comparisons.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "callstate/callstate_internal.h"

enum {
    K_NONE = -1,
    /* 0 .. AMI_CHAN_STR_COUNT-1: string fields, by their ami_chan_field_t */
    K_STATE = 64,
    K_PRIORITY,
    K_CHANVAR,
    K_DURATION,
    K_EXTRAS, /* below: only in the event's own (unprefixed) headers */
    K_BRIDGE_UNIQUEID,
    K_DIALSTATUS,
    K_NEWNAME,
    K_VARIABLE,
    K_VALUE,
    K_CAUSE,
    K_CAUSE_TXT,
    K_TIMESTAMP,
};

typedef struct key {
    const char *name;
    int code;
} key_t_;

/* Grouped by length; each group ends with a NULL name. */
static const key_t_ LEN5[] = {{"Exten", AMI_CHAN_EXTEN}, {"Value", K_VALUE}, {"Cause", K_CAUSE}, {NULL, 0}};
static const key_t_ LEN7[] = {{"Channel", AMI_CHAN_CHANNEL}, {"Context", AMI_CHAN_CONTEXT},
                              {"AppData", AMI_CHAN_APPDATA}, {"Newname", K_NEWNAME}, {NULL, 0}};
static const key_t_ LEN8[] = {{"Uniqueid", AMI_CHAN_UNIQUEID}, {"Linkedid", AMI_CHAN_LINKEDID},
                              {"Priority", K_PRIORITY},        {"Language", AMI_CHAN_LANGUAGE},
                              {"BridgeId", AMI_CHAN_BRIDGE},   {"Duration", K_DURATION},
                              {"Variable", K_VARIABLE},        {NULL, 0}};
static const key_t_ LEN9[] = {{"Cause-txt", K_CAUSE_TXT}, {"Timestamp", K_TIMESTAMP}, {NULL, 0}};
static const key_t_ LEN10[] = {{"DialStatus", K_DIALSTATUS}, {NULL, 0}};
static const key_t_ LEN11[] = {{"CallerIDNum", AMI_CHAN_CALLER_NUM}, {"AccountCode", AMI_CHAN_ACCOUNTCODE},
                               {"Application", AMI_CHAN_APPLICATION}, {NULL, 0}};
static const key_t_ LEN12[] = {{"ChannelState", K_STATE}, {"CallerIDName", AMI_CHAN_CALLER_NAME},
                               {"ChanVariable", K_CHANVAR}, {NULL, 0}};
static const key_t_ LEN14[] = {{"BridgeUniqueid", K_BRIDGE_UNIQUEID}, {NULL, 0}};
static const key_t_ LEN15[] = {{"ApplicationData", AMI_CHAN_APPDATA}, {NULL, 0}};
static const key_t_ LEN16[] = {{"ChannelStateDesc", AMI_CHAN_STATE_DESC},
                               {"ConnectedLineNum", AMI_CHAN_CONNECTED_NUM}, {NULL, 0}};
static const key_t_ LEN17[] = {{"ConnectedLineName", AMI_CHAN_CONNECTED_NAME}, {NULL, 0}};

static const key_t_ *group_of(size_t len)
{
    switch (len) {
    case 5: return LEN5;
    case 7: return LEN7;
    case 8: return LEN8;
    case 9: return LEN9;
    case 10: return LEN10;
    case 11: return LEN11;
    case 12: return LEN12;
    case 14: return LEN14;
    case 15: return LEN15;
    case 16: return LEN16;
    case 17: return LEN17;
    default: return NULL;
    }
}

/* Asterisk writes keys in this case: try the exact bytes before the
 * case-insensitive comparison. */
static bool same_key(const char *name, const char *k, size_t len)
{
    return cs_same_bytes(name, k, len) || ami_str_ieq(name, len, k, len);
}

static int classify(const char *k, size_t len)
{
    const key_t_ *g = group_of(len);
    if (!g)
        return K_NONE;
    unsigned char first = (unsigned char)(k[0] | 0x20);
    for (; g->name; g++)
        if ((unsigned char)(g->name[0] | 0x20) == first && same_key(g->name, k, len))
            return g->code;
    return K_NONE;
}

/* The order in which Asterisk writes a channel event: Privilege after the
 * event's name, then the snapshot (ast_manager_build_channel_state_string).
 * After matching one key, the next is most likely the one after it here,
 * checked with one comparison. */
static const struct {
    const char *name;
    uint8_t len;
    int code;
} ORDER[] = {
    {"Privilege", 9, K_NONE},
    {"Channel", 7, AMI_CHAN_CHANNEL},
    {"ChannelState", 12, K_STATE},
    {"ChannelStateDesc", 16, AMI_CHAN_STATE_DESC},
    {"CallerIDNum", 11, AMI_CHAN_CALLER_NUM},
    {"CallerIDName", 12, AMI_CHAN_CALLER_NAME},
    {"ConnectedLineNum", 16, AMI_CHAN_CONNECTED_NUM},
    {"ConnectedLineName", 17, AMI_CHAN_CONNECTED_NAME},
    {"Language", 8, AMI_CHAN_LANGUAGE},
    {"AccountCode", 11, AMI_CHAN_ACCOUNTCODE},
    {"Context", 7, AMI_CHAN_CONTEXT},
    {"Exten", 5, AMI_CHAN_EXTEN},
    {"Priority", 8, K_PRIORITY},
    {"Uniqueid", 8, AMI_CHAN_UNIQUEID},
    {"Linkedid", 8, AMI_CHAN_LINKEDID},
};
#define NORDER (sizeof ORDER / sizeof ORDER[0])

/* Where ORDER goes on after a key found the slow way. */
static size_t order_after(int code)
{
    switch (code) {
    case AMI_CHAN_CHANNEL: return 2;
    case K_STATE: return 3;
    case AMI_CHAN_STATE_DESC: return 4;
    case AMI_CHAN_CALLER_NUM: return 5;
    case AMI_CHAN_CALLER_NAME: return 6;
    case AMI_CHAN_CONNECTED_NUM: return 7;
    case AMI_CHAN_CONNECTED_NAME: return 8;
    case AMI_CHAN_LANGUAGE: return 9;
    case AMI_CHAN_ACCOUNTCODE: return 10;
    case AMI_CHAN_CONTEXT: return 11;
    case AMI_CHAN_EXTEN: return 12;
    case K_PRIORITY: return 13;
    case AMI_CHAN_UNIQUEID: return 14;
    default: return NORDER; /* Linkedid and the rest: nothing predictable follows */
    }
}

/* A key off the predicted order, found the slow way. One that names
 * nothing (Privilege, Cause, ...) leaves the prediction where it was: the
 * snapshot's next key is still the likely one. */
static int classify_off_order(const char *k, size_t len, size_t *pos)
{
    int code = classify(k, len);
    if (code != K_NONE)
        *pos = order_after(code);
    return code;
}

/* A small non-negative decimal, or -1. */
static int32_t parse_int(const char *s, size_t len)
{
    if (len == 0 || len > 9)
        return -1;
    int32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "HH:MM:SS" (hours may have more digits). */
static bool parse_duration(const char *s, size_t len, uint32_t *out)
{
    uint32_t parts[3] = {0, 0, 0};
    size_t n = 0, digits = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ':') {
            if (!digits || ++n > 2)
                return false;
            digits = 0;
        } else if (s[i] >= '0' && s[i] <= '9' && digits < 7) {
            parts[n] = parts[n] * 10 + (uint32_t)(s[i] - '0');
            digits++;
        } else {
            return false;
        }
    }
    if (n != 2 || !digits || parts[1] > 59 || parts[2] > 59)
        return false;
    *out = parts[0] * 3600 + parts[1] * 60 + parts[2];
    return true;
}

/* Values are NUL-terminated in place (protocol/message.h). */
static double parse_timestamp(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return end != s && *end == '\0' && isfinite(v) && v > 0 ? v : 0;
}

int chan_var_index(const chan_read_conf_t *conf, const char *name, size_t len)
{
    for (int i = 0; i < 2 && len > 0 && name[0] == '_'; i++) {
        name++;
        len--;
    }
    for (uint32_t i = 0; i < conf->nvars; i++)
        if (conf->var_name_len[i] == len && memcmp(conf->var_names[i], name, len) == 0)
            return (int)i;
    return -1;
}

static uint32_t cut(size_t *len, size_t max)
{
    if (*len <= max)
        return 0;
    *len = max;
    return 1;
}

static uint32_t read_chanvar(const chan_read_conf_t *conf, chan_update_t *u, const char *v, size_t vlen)
{
    const char *eq = memchr(v, '=', vlen);
    if (!eq)
        return 0;
    int i = chan_var_index(conf, v, (size_t)(eq - v));
    if (i < 0)
        return 0;
    size_t len = vlen - (size_t)(eq - v) - 1;
    uint32_t cuts = cut(&len, conf->var_max);
    u->var[i] = eq + 1;
    u->var_len[i] = (uint16_t)len;
    u->var_mask |= 1u << i;
    return cuts;
}

static void read_extra(event_extras_t *x, int code, const char *v, size_t vlen)
{
    switch (code) {
    case K_BRIDGE_UNIQUEID: x->bridge = v; x->bridge_len = vlen; break;
    case K_DIALSTATUS: x->dial_status = v; x->dial_status_len = vlen; break;
    case K_NEWNAME: x->newname = v; x->newname_len = vlen; break;
    case K_VARIABLE: x->variable = v; x->variable_len = vlen; break;
    case K_VALUE: x->value = v; x->value_len = vlen; break;
    case K_CAUSE: x->cause = parse_int(v, vlen); break;
    case K_CAUSE_TXT: x->cause_txt = v; x->cause_txt_len = vlen; break;
    case K_TIMESTAMP: x->timestamp = parse_timestamp(v); break;
    default: break;
    }
}

/* One header of the snapshot other than a string field, the state or the
 * priority; returns how many values were cut. */
static uint32_t read_field(const chan_read_conf_t *conf, chan_update_t *u, event_extras_t *x, int code,
                           const char *v, size_t vlen)
{
    switch (code) {
    case K_CHANVAR:
        return read_chanvar(conf, u, v, vlen);
    case K_DURATION:
        if (x)
            x->has_duration = parse_duration(v, vlen, &x->duration_s);
        return 0;
    default:
        if (x)
            read_extra(x, code, v, vlen);
        return 0;
    }
}

/* Field by field: a memset of the struct's size is a "rep stos", whose
 * start-up costs more than these stores. */
static void clear_extras(event_extras_t *x)
{
    x->bridge = x->dial_status = x->newname = x->variable = x->value = x->cause_txt = NULL;
    x->bridge_len = x->dial_status_len = x->newname_len = x->variable_len = x->value_len = x->cause_txt_len = 0;
    x->cause = -1;
    x->timestamp = 0;
    x->duration_s = 0;
    x->has_duration = false;
}

/* One pass over the headers for one prefix. Inlined into each of
 * chan_read's two calls, so the event's own snapshot (plen 0, most calls)
 * pays no prefix test. The synthetic keys ("Output", "Banner") name no
 * channel field. String fields, most of a snapshot, are stored here. */
static inline __attribute__((always_inline)) uint32_t
read_headers(const ami_msg_t *msg, const char *prefix, size_t plen, const chan_read_conf_t *conf,
             chan_update_t *u, event_extras_t *x)
{
    const ami_hdr_t *h = msg->hdrs;
    uint32_t cuts = 0;
    size_t pos = plen ? 1 : 0; /* a prefixed snapshot starts at its Channel */
    for (size_t i = 1; i < msg->nhdrs; i++) {
        size_t klen = h[i].key_len;
        if (h[i].key_off >= AMI_HDR_KEY_BANNER || klen <= plen)
            continue;
        const char *k = msg->base + h[i].key_off;
        if (plen && !ami_str_ieq(k, plen, prefix, plen))
            continue;
        k += plen;
        klen -= plen;
        int code;
        if (pos < NORDER && ORDER[pos].len == klen && cs_same_bytes(ORDER[pos].name, k, klen))
            code = ORDER[pos++].code;
        else
            code = classify_off_order(k, klen, &pos);
        const char *v = msg->base + h[i].val_off;
        size_t vlen = h[i].val_len;
        int32_t n;
        if ((unsigned)code < AMI_CHAN_STR_COUNT) {
            cuts += cut(&vlen, AMI_CHAN_FIELD_MAX);
            chan_update_str(u, (ami_chan_field_t)code, v, vlen);
        } else if (code == K_STATE) {
            if ((n = parse_int(v, vlen)) >= 0) {
                u->state = n;
                u->has_state = true;
            }
        } else if (code == K_PRIORITY) {
            if ((n = parse_int(v, vlen)) >= 0) {
                u->priority = n;
                u->has_priority = true;
            }
        } else if (code != K_NONE && !(plen && code > K_EXTRAS)) {
            cuts += read_field(conf, u, x, code, v, vlen);
        }
    }
    return cuts;
}

uint32_t chan_read(const ami_msg_t *msg, const char *prefix, size_t plen, const chan_read_conf_t *conf,
                   chan_update_t *u, event_extras_t *x)
{
    if (x)
        clear_extras(x);
    if (plen == 0)
        return read_headers(msg, "", 0, conf, u, x);
    return read_headers(msg, prefix, plen, conf, u, NULL);
}
