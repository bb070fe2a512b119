/*
 * An AMI message as the library hands it out: a kind and an ordered list of
 * headers, read-only.
 *
 * A message is BORROWED: the library passes `const ami_msg_t *` to a
 * callback and it is valid only during that call (its bytes live in the
 * connection's read buffer). Copy what must outlive the callback.
 *
 * Header keys and values are slices of that buffer, each also
 * NUL-terminated in place, so they can be used as C strings. Keys are
 * looked up case-insensitively (ASCII), as Asterisk does. Duplicate keys are
 * kept in arrival order (several `Variable:` or `Output:` lines):
 * ami_msg_get returns the first, ami_msg_next_index walks the rest.
 *
 *   for (size_t i = 0; i < msg->nhdrs; i++) {
 *       size_t klen, vlen;
 *       const char *k = ami_msg_key(msg, i, &klen), *v = ami_msg_value(msg, i, &vlen);
 *   }
 *
 * ami_parser_limits_t: the bounds the reader enforces on every message of a
 * server (a longer line, more headers or a larger message closes the
 * session: see ami_server_options_t.parser).
 */
#ifndef AMI_MESSAGE_H
#define AMI_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/export.h>

AMI_BEGIN_DECLS

typedef enum ami_msg_kind {
    AMI_MSG_BANNER = 0, /* "Asterisk Call Manager/x.y.z": one header, key "Banner" */
    AMI_MSG_RESPONSE,   /* first line is "Response: ..." */
    AMI_MSG_EVENT,      /* first line is "Event: ..." */
    AMI_MSG_OTHER       /* any other first key (e.g. "Action:" seen by a server) */
} ami_msg_kind_t;

/* Offsets are relative to ami_msg_t.base. Two key_off values mark
 * synthetic keys: AMI_HDR_KEY_OUTPUT ("Output", legacy Command output lines)
 * and AMI_HDR_KEY_BANNER ("Banner", the banner line). Use ami_msg_key. */
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
    uint32_t name_hash;   /* the library's hash of the event name (internal use) */
    bool legacy_command;  /* parsed from "Response: Follows" ... "--END COMMAND--" */
    uint32_t bad_lines;   /* malformed lines the reader left out of this message */
} ami_msg_t;

/* Key of header i (i < nhdrs); *len (if len) its length. */
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

/* Value of header i (i < nhdrs); *len (if len) its length. */
static inline const char *ami_msg_value(const ami_msg_t *m, size_t i, size_t *len)
{
    if (len)
        *len = m->hdrs[i].val_len;
    return m->base + m->hdrs[i].val_off;
}

/* Index of the first header named key at or after `from`, or -1. */
AMI_API long ami_msg_next_index(const ami_msg_t *m, const char *key, size_t key_len, size_t from);

/* Value of the first header named key (case-insensitive), or NULL. */
AMI_API const char *ami_msg_get(const ami_msg_t *m, const char *key);
AMI_API const char *ami_msg_getn(const ami_msg_t *m, const char *key, size_t key_len, size_t *val_len);

/* Value of the first header (the event or response name), "" if none. */
AMI_API const char *ami_msg_name(const ami_msg_t *m);

/* The ActionID value or NULL. */
AMI_API const char *ami_msg_action_id(const ami_msg_t *m, size_t *len);

/* Is this a response that reports success (Success, Pong, Follows, Goodbye)? */
AMI_API bool ami_msg_is_success(const ami_msg_t *m);

typedef struct ami_parser_limits {
    size_t max_line;    /* bytes in one line, terminator excluded; default 65536 */
    size_t max_headers; /* headers in one message; default 131072 */
    size_t max_message; /* bytes in one message; default 4 MiB */
} ami_parser_limits_t;

AMI_API void ami_parser_limits_default(ami_parser_limits_t *lim);

AMI_END_DECLS

#endif
