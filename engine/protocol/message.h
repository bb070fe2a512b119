/*
 * An AMI message as the parser hands it out: a kind and an ordered list of
 * headers. Header keys and values are slices of the parser's buffer, each
 * also NUL-terminated in place, so they can be used as C strings.
 *
 * A message is BORROWED: it stays valid until the next call to
 * ami_parser_next / ami_parser_feed / ami_parser_reserve / ami_parser_reset
 * on the parser that produced it. Copy what must outlive that.
 *
 * Keys are looked up case-insensitively (ASCII), as Asterisk does. Duplicate
 * keys are kept in arrival order (several `Variable:` or `Output:` lines);
 * ami_msg_get returns the first, ami_msg_next_index walks the rest.
 */
#ifndef AMI_PROTOCOL_MESSAGE_H
#define AMI_PROTOCOL_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ami_msg_kind {
    AMI_MSG_BANNER = 0, /* "Asterisk Call Manager/x.y.z": one header, key "Banner" */
    AMI_MSG_RESPONSE,   /* first line is "Response: ..." */
    AMI_MSG_EVENT,      /* first line is "Event: ..." */
    AMI_MSG_OTHER       /* any other first key (e.g. "Action:" seen by a server) */
} ami_msg_kind_t;

/* Offsets are relative to ami_msg_t.base. Two key_off values mark
 * synthetic keys: AMI_HDR_KEY_OUTPUT ("Output", legacy Command output lines)
 * and AMI_HDR_KEY_BANNER ("Banner", the banner line). */
typedef struct ami_hdr {
    uint32_t key_off;
    uint32_t key_len;
    uint32_t val_off;
    uint32_t val_len;
} ami_hdr_t;

#define AMI_HDR_KEY_OUTPUT UINT32_MAX
#define AMI_HDR_KEY_BANNER (UINT32_MAX - 1)

typedef struct ami_msg {
    ami_msg_kind_t kind;
    const char *base;
    const ami_hdr_t *hdrs;
    size_t nhdrs;
    size_t wire_len;      /* bytes this message took on the wire */
    int32_t actionid_idx; /* index of the first ActionID header, or -1 */
    uint32_t name_hash;   /* ami_name_hash of the first header's value (the event name) */
    bool legacy_command;  /* parsed from "Response: Follows" ... "--END COMMAND--" */
    uint32_t bad_lines;   /* malformed lines the parser left out of this message */
} ami_msg_t;

static inline const char *ami_msg_key(const ami_msg_t *m, size_t i, size_t *len)
{
    const ami_hdr_t *h = &m->hdrs[i];
    if (h->key_off >= AMI_HDR_KEY_BANNER) {
        if (len)
            *len = 6;
        return h->key_off == AMI_HDR_KEY_OUTPUT ? "Output" : "Banner";
    }
    if (len)
        *len = h->key_len;
    return m->base + h->key_off;
}

static inline const char *ami_msg_value(const ami_msg_t *m, size_t i, size_t *len)
{
    if (len)
        *len = m->hdrs[i].val_len;
    return m->base + m->hdrs[i].val_off;
}

/* Index of the first header named key at or after `from`, or -1. */
long ami_msg_next_index(const ami_msg_t *m, const char *key, size_t key_len, size_t from);

/* Value of the first header named key (case-insensitive), or NULL. */
const char *ami_msg_get(const ami_msg_t *m, const char *key);
const char *ami_msg_getn(const ami_msg_t *m, const char *key, size_t key_len, size_t *val_len);

/* Value of the first header (the event or response name), "" if none. */
const char *ami_msg_name(const ami_msg_t *m);

/* The ActionID value or NULL. */
const char *ami_msg_action_id(const ami_msg_t *m, size_t *len);

/* FNV-1a over the ASCII-lowercased bytes: event names hash once, in the
 * parser, and every dispatcher uses msg->name_hash. */
static inline uint32_t ami_name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        h = (h ^ (c >= 'A' && c <= 'Z' ? c | 0x20u : c)) * 16777619u;
    }
    return h;
}

/* ASCII case-insensitive equality of two slices (inline: it runs for
 * every header on the hot path). */
static inline bool ami_str_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x != y && ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 25))
            return false;
    }
    return true;
}

/* Is this a response that reports success (Success, Pong, Follows, Goodbye)? */
bool ami_msg_is_success(const ami_msg_t *m);

#endif
