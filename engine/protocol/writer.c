#include "protocol/writer.h"

#include <stdio.h>
#include <string.h>

#include "protocol/message.h"

static const char *bad_byte(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r')
            return "CR";
        if (s[i] == '\n')
            return "LF";
        if (s[i] == '\0')
            return "NUL";
    }
    return NULL;
}

static bool name_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

static int validate_name(const char *name, ami_err_t *err)
{
    if (!name || !*name)
        return ami_err_set(err, AMI_E_INVALID, "action name is empty: give the AMI action, e.g. \"Ping\"");
    size_t n = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (!name_char_ok((unsigned char)name[i]))
            return ami_err_set(err, AMI_E_INVALID,
                               "action name \"%.40s\" has a character other than letters, digits, '_' "
                               "and '-' at position %zu",
                               name, i + 1);
    if (n + 8 > AMI_WRITER_MAX_LINE)
        return ami_err_set(err, AMI_E_LIMIT, "action name is %zu bytes long; Asterisk reads at most %d per line",
                           n, AMI_WRITER_MAX_LINE);
    return 0;
}

static int validate_key(const ami_kv_t *kv, size_t index, ami_err_t *err)
{
    if (!kv->key || kv->key_len == 0)
        return ami_err_set(err, AMI_E_INVALID, "header %zu has an empty key", index + 1);
    const char *bad = bad_byte(kv->key, kv->key_len);
    if (bad)
        return ami_err_set(err, AMI_E_INVALID,
                           "header %zu: key contains %s (AMI header injection refused); "
                           "keys and values must be single-line text",
                           index + 1, bad);
    for (size_t i = 0; i < kv->key_len; i++) {
        char c = kv->key[i];
        if (c == ':' || c == ' ' || c == '\t')
            return ami_err_set(err, AMI_E_INVALID, "header %zu: key \"%.*s\" contains %s", index + 1,
                               (int)(kv->key_len > 40 ? 40 : kv->key_len), kv->key,
                               c == ':' ? "':'" : "a blank");
    }
    if (ami_str_ieq(kv->key, kv->key_len, "Action", 6) || ami_str_ieq(kv->key, kv->key_len, "ActionID", 8))
        return ami_err_set(err, AMI_E_INVALID,
                           "header %zu: \"%.*s\" is set by the engine; pass the action name "
                           "separately and let the engine choose the ActionID",
                           index + 1, (int)kv->key_len, kv->key);
    return 0;
}

static int validate_header(const ami_kv_t *kv, size_t index, ami_err_t *err)
{
    if (validate_key(kv, index, err) < 0)
        return -1;
    if (!kv->val && kv->val_len)
        return ami_err_set(err, AMI_E_INVALID, "header %zu (%.*s) has no value", index + 1,
                           (int)(kv->key_len > 40 ? 40 : kv->key_len), kv->key);
    const char *bad = kv->val ? bad_byte(kv->val, kv->val_len) : NULL;
    if (bad)
        return ami_err_set(err, AMI_E_INVALID,
                           "header %zu (%.*s): value contains %s (AMI header injection refused); "
                           "values must be single-line text",
                           index + 1, (int)(kv->key_len > 40 ? 40 : kv->key_len), kv->key, bad);
    size_t line = kv->key_len + 2 + kv->val_len;
    if (line > AMI_WRITER_MAX_LINE)
        return ami_err_set(err, AMI_E_LIMIT,
                           "header %zu (%.*s) makes a %zu-byte line; Asterisk reads each line into a "
                           "1024-byte buffer (%d bytes plus CRLF) and would drop the action",
                           index + 1, (int)(kv->key_len > 40 ? 40 : kv->key_len), kv->key, line,
                           AMI_WRITER_MAX_LINE);
    return 0;
}

int ami_action_validate(const char *name, const ami_kv_t *hdrs, size_t n, ami_err_t *err)
{
    if (validate_name(name, err) < 0)
        return -1;
    if (n > AMI_WRITER_MAX_LINES - 2)
        return ami_err_set(err, AMI_E_LIMIT,
                           "action %s has %zu headers; Asterisk accepts at most %d lines per action "
                           "(Action and ActionID included)",
                           name, n, AMI_WRITER_MAX_LINES);
    for (size_t i = 0; i < n; i++)
        if (validate_header(&hdrs[i], i, err) < 0)
            return -1;
    return 0;
}

static size_t wire_size(const char *name, const char *action_id, const ami_kv_t *hdrs, size_t n)
{
    size_t size = 8 + strlen(name) + 2 + 2;
    if (action_id)
        size += 10 + strlen(action_id) + 2;
    for (size_t i = 0; i < n; i++)
        size += hdrs[i].key_len + 2 + hdrs[i].val_len + 2;
    return size;
}

static void put(char **p, const void *s, size_t n)
{
    memcpy(*p, s, n);
    *p += n;
}

int ami_write_action(ami_buf_t *out, const char *name, const char *action_id,
                     const ami_kv_t *hdrs, size_t n, ami_err_t *err)
{
    if (ami_action_validate(name, hdrs, n, err) < 0)
        return -1;
    if (action_id && (bad_byte(action_id, strlen(action_id)) || strlen(action_id) + 10 > AMI_WRITER_MAX_LINE))
        return ami_err_set(err, AMI_E_INVALID, "ActionID must be one line of at most %d bytes",
                           AMI_WRITER_MAX_LINE - 10);
    size_t size = wire_size(name, action_id, hdrs, n);
    if (ami_buf_reserve(out, size) < 0)
        return ami_err_set(err, AMI_E_BACKPRESSURE,
                           "output buffer is full (%zu bytes queued, limit %zu): the server is not "
                           "reading fast enough; retry later",
                           out->len, out->limit);
    char *p = out->data + out->len;
    put(&p, "Action: ", 8);
    put(&p, name, strlen(name));
    put(&p, "\r\n", 2);
    if (action_id) {
        put(&p, "ActionID: ", 10);
        put(&p, action_id, strlen(action_id));
        put(&p, "\r\n", 2);
    }
    for (size_t i = 0; i < n; i++) {
        put(&p, hdrs[i].key, hdrs[i].key_len);
        put(&p, ": ", 2);
        if (hdrs[i].val_len)
            put(&p, hdrs[i].val, hdrs[i].val_len);
        put(&p, "\r\n", 2);
    }
    put(&p, "\r\n", 2);
    out->len += size;
    return 0;
}

bool ami_header_is_secret(const char *key, size_t key_len)
{
    return ami_str_ieq(key, key_len, "Secret", 6) || ami_str_ieq(key, key_len, "Key", 3) ||
           ami_str_ieq(key, key_len, "Password", 8) || ami_str_ieq(key, key_len, "Token", 5);
}

void ami_action_describe(char *out, size_t out_size, const char *name, const char *action_id,
                         const ami_kv_t *hdrs, size_t n)
{
    if (out_size == 0)
        return;
    int used = snprintf(out, out_size, "%s", name ? name : "?");
    if (action_id && used >= 0 && (size_t)used < out_size)
        used += snprintf(out + used, out_size - (size_t)used, " ActionID=%s", action_id);
    for (size_t i = 0; i < n && used >= 0 && (size_t)used < out_size; i++) {
        bool secret = ami_header_is_secret(hdrs[i].key, hdrs[i].key_len);
        used += snprintf(out + used, out_size - (size_t)used, " %.*s=%.*s", (int)hdrs[i].key_len,
                         hdrs[i].key, secret ? 10 : (int)hdrs[i].val_len,
                         secret ? "[redacted]" : hdrs[i].val);
    }
}
