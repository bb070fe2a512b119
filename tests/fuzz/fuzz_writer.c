/*
 * libFuzzer target for the action writer (engine/protocol/writer.c): the
 * last step before a script's values reach an Asterisk server.
 *
 * Input layout: byte 0 picks the output buffer's limit (to reach the
 * backpressure path), then fields separated by 0xFF: the action name, the
 * ActionID (absent when the field is empty), then key, value, key, value...
 * Any byte may be in a field, CR, LF and NUL included.
 *
 * Invariants, on every input:
 *   - success: what was appended is exactly one action: "Action: name",
 *     the ActionID line if given, then only the given headers in order, each
 *     on one CRLF-terminated line, then one empty line; and the AMI parser
 *     (as a server reads it) gives back one message with exactly those
 *     headers and values. Nothing injected, nothing lost.
 *   - failure: the buffer is untouched, the error is INVALID, LIMIT or
 *     BACKPRESSURE with a message, and ami_action_validate agrees.
 *   - a CR, LF or NUL in the name, a key or a value is always refused.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/message.h"
#include "protocol/parser.h"
#include "protocol/writer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "fuzz_writer: invariant failed: %s: ", #cond);  \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            abort();                                                        \
        }                                                                   \
    } while (0)

#define MAX_FIELDS 300
#define PREFIX "Action: Earlier\r\n\r\n" /* already queued: must stay as it is */

typedef struct field {
    const char *p;
    size_t n;
} field_t;

static size_t split(const uint8_t *d, size_t n, field_t *f, size_t max)
{
    size_t nf = 0, start = 0;
    for (size_t i = 0; i <= n && nf < max; i++) {
        if (i == n || d[i] == 0xff) {
            f[nf++] = (field_t){(const char *)d + start, i - start};
            start = i + 1;
        }
    }
    return nf;
}

static bool has_line_byte(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return true;
    return false;
}

/* The writer's name and ActionID are C strings: a field is cut at its
 * first NUL, as a C caller would pass it. */
static char *cstr(field_t f)
{
    char *s = malloc(f.n + 1);
    CHECK(s != NULL, "oom");
    memcpy(s, f.p, f.n);
    s[f.n] = '\0';
    return s;
}

static size_t expect_line(const char *out, size_t at, size_t len, const char *k, size_t kn, const char *v,
                          size_t vn)
{
    CHECK(at + kn + 2 + vn + 2 <= len, "output ends inside the line of %.*s", (int)kn, k);
    CHECK(memcmp(out + at, k, kn) == 0 && memcmp(out + at + kn, ": ", 2) == 0, "key at %zu", at);
    CHECK(vn == 0 || memcmp(out + at + kn + 2, v, vn) == 0, "value of %.*s", (int)kn, k);
    CHECK(memcmp(out + at + kn + 2 + vn, "\r\n", 2) == 0, "line of %.*s not ended by CRLF", (int)kn, k);
    return at + kn + 2 + vn + 2;
}

static void check_bytes(const char *out, size_t len, const char *name, const char *id, const ami_kv_t *kv,
                        size_t n)
{
    size_t at = expect_line(out, 0, len, "Action", 6, name, strlen(name));
    if (id)
        at = expect_line(out, at, len, "ActionID", 8, id, strlen(id));
    for (size_t i = 0; i < n; i++)
        at = expect_line(out, at, len, kv[i].key, kv[i].key_len, kv[i].val, kv[i].val_len);
    CHECK(at + 2 == len && memcmp(out + at, "\r\n", 2) == 0, "not one empty line at the end");
    size_t crlf = 0;
    for (size_t i = 0; i < len; i++) {
        CHECK(out[i] != '\0', "NUL in the output");
        CHECK(out[i] != '\r' || (i + 1 < len && out[i + 1] == '\n'), "lone CR at %zu", i);
        CHECK(out[i] != '\n' || (i > 0 && out[i - 1] == '\r'), "bare LF at %zu", i);
        crlf += out[i] == '\n';
    }
    CHECK(crlf == 2 + (id ? 1 : 0) + n, "%zu lines for %zu headers", crlf, n);
}

/* As a server reads it: one message, these headers and nothing else. */
static void check_parsed(const char *out, size_t len, const char *name, const char *id, const ami_kv_t *kv,
                         size_t n)
{
    ami_parser_t p;
    CHECK(ami_parser_init(&p, NULL) == 0, "parser init");
    ami_parser_expect_banner(&p, false);
    ami_err_t err;
    CHECK(ami_parser_feed(&p, out, len, &err) == 0, "feed: %s", err.msg);
    ami_msg_t m;
    CHECK(ami_parser_next(&p, &m, &err) == 1, "the output is not a message: %s", err.msg);
    size_t first = id ? 2 : 1;
    CHECK(m.nhdrs == first + n, "%zu headers parsed, %zu written", m.nhdrs, first + n);
    size_t vl;
    CHECK(strcmp(ami_msg_key(&m, 0, NULL), "Action") == 0 && strcmp(ami_msg_value(&m, 0, &vl), name) == 0,
          "Action header");
    if (id)
        CHECK(strcmp(ami_msg_value(&m, 1, &vl), id) == 0, "ActionID header");
    for (size_t i = 0; i < n; i++) {
        size_t kl;
        const char *k = ami_msg_key(&m, first + i, &kl);
        const char *v = ami_msg_value(&m, first + i, &vl);
        CHECK(kl == kv[i].key_len && memcmp(k, kv[i].key, kl) == 0, "key %zu parsed differently", i);
        CHECK(vl == kv[i].val_len && (vl == 0 || memcmp(v, kv[i].val, vl) == 0), "value %zu parsed differently", i);
    }
    CHECK(ami_parser_next(&p, &m, &err) == 0, "a second message in one action");
    CHECK(ami_parser_buffered(&p) == 0, "bytes left after the action");
    ami_parser_deinit(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static field_t f[MAX_FIELDS];
    size_t nf = split(data + 1, size - 1, f, MAX_FIELDS);
    char *name = cstr(f[0]);
    char *id = nf > 1 && f[1].n ? cstr(f[1]) : NULL;
    static ami_kv_t kv[MAX_FIELDS / 2];
    size_t n = 0;
    bool injection = has_line_byte(name, strlen(name)) || (id && has_line_byte(id, strlen(id)));
    for (size_t i = 2; i + 1 < nf; i += 2, n++) {
        kv[n] = (ami_kv_t){f[i].p, f[i].n, f[i + 1].p, f[i + 1].n};
        injection |= has_line_byte(f[i].p, f[i].n) || has_line_byte(f[i + 1].p, f[i + 1].n);
    }

    size_t limit = data[0] < 0x80 ? (size_t)data[0] * 32 : 0; /* 0: unbounded */
    ami_buf_t out;
    ami_buf_init(&out, limit);
    bool prefix = limit == 0 || limit > sizeof PREFIX;
    if (prefix)
        CHECK(ami_buf_append(&out, PREFIX, sizeof PREFIX - 1) == 0, "prefix");
    size_t before = out.len;
    ami_err_t err;
    int rc = ami_write_action(&out, name, id, kv, n, &err);
    if (rc == 0) {
        CHECK(!injection, "a CR, LF or NUL went through");
        check_bytes(out.data + before, out.len - before, name, id, kv, n);
        check_parsed(out.data + before, out.len - before, name, id, kv, n);
        CHECK(ami_action_validate(name, kv, n, &err) == 0, "validate refuses what was written: %s", err.msg);
    } else {
        CHECK(rc == -1, "rc %d", rc);
        CHECK(out.len == before, "a refused action changed the buffer (%zu -> %zu)", before, out.len);
        CHECK(err.code == AMI_E_INVALID || err.code == AMI_E_LIMIT || err.code == AMI_E_BACKPRESSURE,
              "error code %d", (int)err.code);
        CHECK(err.msg[0] != '\0', "empty error message");
        if (err.code == AMI_E_BACKPRESSURE)
            CHECK(ami_action_validate(name, kv, n, &err) == 0, "backpressure for an invalid action");
    }
    if (prefix)
        CHECK(memcmp(out.data, PREFIX, sizeof PREFIX - 1) == 0, "the queued action was touched");
    ami_buf_deinit(&out);
    free(name);
    free(id);
    return 0;
}
