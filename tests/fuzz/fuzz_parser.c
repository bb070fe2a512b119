/*
 * libFuzzer target for the AMI parser (engine/protocol/parser.c).
 *
 * Input layout: 3 configuration bytes, then the stream.
 *   byte 0: limits. Bit 7 set: default limits; else max_line 8..263
 *           (bits 0-4, x8 + 8), max_message = max_line x (1 + bits 5-6 x 3).
 *   byte 1: bits 0-2 chunking mode (see next_chunk), bit 3: no banner
 *           expected (server-side reader), bits 4-7: max_headers 1..16
 *           (with non-default limits).
 *   byte 2: seed of the chunk sizes.
 * The stream is fed in chunks (or read through reserve/commit), draining with
 * ami_parser_next after each; every message is checked against the
 * invariants of message.h / parser.h; after an error the parser is reset and
 * the rest of the input goes on. Then the same stream is parsed in one feed:
 * up to the first error both must give the same messages (chunking must not
 * change the result), and an error in one means an error in the other.
 * Any violation aborts with a description.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/message.h"
#include "protocol/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_parser: invariant failed: %s: ", #cond);    \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            abort();                                                          \
        }                                                                     \
    } while (0)

typedef struct config {
    ami_parser_limits_t lim;
    bool banner;
    unsigned mode;
    uint32_t seed;
} config_t;

static config_t read_config(const uint8_t *d)
{
    config_t c;
    memset(&c, 0, sizeof c);
    if (d[0] & 0x80) {
        ami_parser_limits_default(&c.lim);
    } else {
        c.lim.max_line = 8 + (size_t)(d[0] & 0x1f) * 8;
        c.lim.max_message = c.lim.max_line * (1 + (size_t)((d[0] >> 5) & 3) * 3);
        c.lim.max_headers = 1 + (size_t)(d[1] >> 4);
    }
    c.mode = d[1] & 7;
    c.banner = !(d[1] & 8);
    c.seed = (uint32_t)d[2] * 2654435761u + 1;
    return c;
}

static uint32_t rng(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Size of the next chunk. Modes: 0 all at once, 1 one byte, 2 fixed 2..33,
 * 3 random 1..64, 4 random 1..4096, 5 reserve/commit 1..16, 6 reserve/commit
 * random 1..512, 7 two halves. */
static size_t next_chunk(const config_t *c, uint32_t *s, size_t left, size_t total)
{
    size_t n;
    switch (c->mode) {
    case 0: n = left; break;
    case 1: n = 1; break;
    case 2: n = 2 + (c->seed >> 3) % 32; break;
    case 3: n = 1 + rng(s) % 64; break;
    case 4: n = 1 + rng(s) % 4096; break;
    case 5: n = 1 + rng(s) % 16; break;
    case 6: n = 1 + rng(s) % 512; break;
    default: n = left == total ? total / 2 + 1 : left; break;
    }
    return n < left ? n : left;
}

/* Messages of the one-feed reference parse, as hashes. */
typedef struct trace {
    uint64_t *h;
    size_t n, cap;
    bool failed; /* ended with a parse error */
} trace_t;

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t msg_hash(const ami_msg_t *m)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    int32_t meta[4] = {(int32_t)m->kind, m->actionid_idx, m->legacy_command, (int32_t)m->bad_lines};
    h = mix(h, meta, sizeof meta);
    h = mix(h, &m->wire_len, sizeof m->wire_len);
    for (size_t i = 0; i < m->nhdrs; i++) {
        size_t kl, vl;
        const char *k = ami_msg_key(m, i, &kl);
        const char *v = ami_msg_value(m, i, &vl);
        h = mix(h, &kl, sizeof kl);
        h = mix(h, k, kl);
        h = mix(h, &vl, sizeof vl);
        h = mix(h, v, vl);
    }
    return h;
}

static void check_span(const ami_msg_t *m, size_t i, const char *what, uint32_t off, uint32_t len)
{
    /* the slice and its NUL lie inside the message's bytes */
    CHECK((size_t)off + len < m->wire_len, "header %zu %s off %u len %u wire_len %zu", i, what, off, len,
          m->wire_len);
    const char *s = m->base + off;
    CHECK(s[len] == '\0', "header %zu %s not NUL-terminated", i, what);
    CHECK(memchr(s, '\0', len) == NULL, "header %zu %s holds a NUL", i, what);
    CHECK(memchr(s, '\n', len) == NULL, "header %zu %s holds a LF", i, what);
    CHECK(memchr(s, '\r', len) == NULL, "header %zu %s holds a CR", i, what);
}

static void check_msg(const config_t *c, const ami_msg_t *m, bool first_after_start)
{
    CHECK(m->nhdrs >= 1, "empty message");
    CHECK(m->nhdrs <= c->lim.max_headers, "%zu headers > max_headers %zu", m->nhdrs, c->lim.max_headers);
    CHECK(m->wire_len >= 2 && m->wire_len <= c->lim.max_message, "wire_len %zu", m->wire_len);
    CHECK(m->kind <= AMI_MSG_OTHER, "kind %d", (int)m->kind);
    if (m->kind == AMI_MSG_BANNER) {
        CHECK(c->banner && first_after_start, "banner where none is expected");
        CHECK(m->nhdrs == 1 && m->hdrs[0].key_off == AMI_HDR_KEY_BANNER, "banner headers");
        CHECK(strncmp(ami_msg_value(m, 0, NULL), "Asterisk Call Manager", 21) == 0, "banner text");
    } else {
        CHECK(!(c->banner && first_after_start), "first message is not the banner");
    }
    long first_aid = -1; /* index of the first ActionID header */
    for (size_t i = 0; i < m->nhdrs; i++) {
        const ami_hdr_t *h = &m->hdrs[i];
        if (h->key_off == AMI_HDR_KEY_OUTPUT) {
            CHECK(m->legacy_command, "synthetic Output key outside legacy output");
        } else if (h->key_off == AMI_HDR_KEY_BANNER) {
            CHECK(m->kind == AMI_MSG_BANNER, "synthetic Banner key in a message");
        } else {
            CHECK(h->key_len >= 1, "empty key");
            check_span(m, i, "key", h->key_off, h->key_len);
            CHECK(memchr(m->base + h->key_off, ':', h->key_len) == NULL, "':' in key");
            CHECK(h->key_off + h->key_len < h->val_off, "value before its key");
            if (ami_str_ieq(m->base + h->key_off, h->key_len, "ActionID", 8)) {
                if (first_aid < 0)
                    first_aid = (long)i;
            }
        }
        check_span(m, i, "value", h->val_off, h->val_len);
    }
    CHECK(m->actionid_idx == first_aid, "actionid_idx %d, first ActionID at %ld", m->actionid_idx, first_aid);
    if (m->actionid_idx >= 0)
        CHECK(ami_msg_action_id(m, NULL) == ami_msg_value(m, (size_t)m->actionid_idx, NULL), "action_id");
    /* the accessors agree with the headers */
    CHECK(ami_msg_name(m) == ami_msg_value(m, 0, NULL), "name");
    for (size_t i = 0; i < m->nhdrs; i++) {
        size_t kl;
        const char *k = ami_msg_key(m, i, &kl);
        long at = ami_msg_next_index(m, k, kl, 0);
        CHECK(at >= 0 && (size_t)at <= i, "next_index of header %zu gave %ld", i, at);
        CHECK(ami_msg_next_index(m, k, kl, i) == (long)i, "next_index from %zu", i);
    }
    bool ok = ami_msg_is_success(m);
    CHECK(!ok || m->kind == AMI_MSG_RESPONSE, "is_success on a non-response");
    /* dropped lines: never from the banner, never more than the bytes allow */
    CHECK(m->kind != AMI_MSG_BANNER || m->bad_lines == 0, "bad lines in the banner");
    CHECK((size_t)m->bad_lines * 2 <= m->wire_len, "%u bad lines in %zu bytes", m->bad_lines, m->wire_len);
}

/* One-feed reference parse, up to the first error. */
static void reference(const config_t *c, const uint8_t *d, size_t n, trace_t *t)
{
    ami_parser_t p;
    CHECK(ami_parser_init(&p, &c->lim) == 0, "init");
    ami_parser_expect_banner(&p, c->banner);
    ami_err_t err;
    CHECK(ami_parser_feed(&p, d, n, &err) == 0, "reference feed: %s", err.msg);
    ami_msg_t m;
    int rc;
    while ((rc = ami_parser_next(&p, &m, &err)) == 1) {
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 64;
            t->h = realloc(t->h, t->cap * sizeof *t->h);
            CHECK(t->h != NULL, "oom");
        }
        t->h[t->n++] = msg_hash(&m);
    }
    t->failed = rc < 0;
    ami_parser_deinit(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    config_t c = read_config(data);
    const uint8_t *s = data + 3;
    size_t n = size - 3;

    trace_t ref = {0};
    reference(&c, s, n, &ref);

    ami_parser_t p;
    CHECK(ami_parser_init(&p, &c.lim) == 0, "init with max_line %zu max_message %zu", c.lim.max_line,
          c.lim.max_message);
    ami_parser_expect_banner(&p, c.banner);

    uint32_t seed = c.seed;
    size_t off = 0, msgs = 0, errors = 0;
    uint64_t bad_in_msgs = 0; /* bad lines of the messages delivered */
    bool first = true;     /* next message is the first since (re)start */
    bool compare = true;   /* still before the first error: compare with ref */
    bool reserve = c.mode == 5 || c.mode == 6;
    while (off < n) {
        size_t len = next_chunk(&c, &seed, n - off, n);
        ami_err_t err;
        if (reserve) {
            size_t got;
            char *dst = ami_parser_reserve(&p, len, &got);
            CHECK(dst != NULL && got >= 1 && got <= len, "reserve %zu gave %zu", len, got);
            memcpy(dst, s + off, got);
            ami_parser_commit(&p, got);
            len = got;
        } else {
            /* drained after every feed, so the buffer never hits its bound */
            CHECK(ami_parser_feed(&p, s + off, len, &err) == 0, "feed of %zu: %s", len, err.msg);
        }
        off += len;
        ami_msg_t m;
        int rc;
        while ((rc = ami_parser_next(&p, &m, &err)) == 1) {
            check_msg(&c, &m, first);
            first = false;
            if (compare) {
                CHECK(msgs < ref.n, "message %zu not in the one-feed parse", msgs);
                CHECK(msg_hash(&m) == ref.h[msgs], "message %zu differs from the one-feed parse", msgs);
            }
            msgs++;
            CHECK(ami_parser_stats(&p)->messages == msgs, "stats.messages");
            bad_in_msgs += m.bad_lines;
            CHECK(bad_in_msgs <= ami_parser_stats(&p)->bad_lines, "msg bad_lines %llu > stats %llu",
                  (unsigned long long)bad_in_msgs, (unsigned long long)ami_parser_stats(&p)->bad_lines);
            if (m.bad_lines) {
                const ami_parser_bad_t *bad = ami_parser_last_bad(&p);
                CHECK(bad->kind != AMI_BAD_NONE && bad->line >= 2, "last_bad kind %d line %zu",
                      (int)bad->kind, bad->line);
                CHECK(strlen(bad->excerpt) < sizeof bad->excerpt, "excerpt");
            }
        }
        if (rc == 0) {
            /* bounded: a partial message never exceeds max_message */
            CHECK(ami_parser_buffered(&p) <= c.lim.max_message, "buffered %zu > max_message %zu",
                  ami_parser_buffered(&p), c.lim.max_message);
            continue;
        }
        CHECK(err.code == AMI_E_PROTOCOL || err.code == AMI_E_LIMIT, "error code %d", (int)err.code);
        CHECK(err.msg[0] != '\0', "empty error message");
        CHECK(ami_parser_stats(&p)->errors == ++errors, "stats.errors");
        if (compare) {
            CHECK(ref.failed, "chunked parse failed (%s) where the one-feed parse did not", err.msg);
            CHECK(msgs == ref.n, "error after %zu messages, one-feed parse after %zu", msgs, ref.n);
            compare = false;
        }
        /* sticky */
        ami_err_t again;
        CHECK(ami_parser_next(&p, &m, &again) == -1 && again.code == err.code, "error not sticky");
        CHECK(ami_parser_feed(&p, "x", 1, &again) == -1, "feed after error");
        CHECK(ami_parser_stats(&p)->errors == errors, "sticky error counted twice");
        ami_parser_reset(&p);
        CHECK(ami_parser_buffered(&p) == 0, "reset leaves bytes");
        first = true;
    }
    if (compare) {
        CHECK(!ref.failed, "one-feed parse failed, chunked parse did not");
        CHECK(msgs == ref.n, "%zu messages, one-feed parse gave %zu", msgs, ref.n);
    }
    ami_parser_deinit(&p);
    free(ref.h);
    return 0;
}
