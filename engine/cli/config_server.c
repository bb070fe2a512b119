/*
 * The servers and defaults sections: one ami_server_options_t per server.
 *
 * Each server starts from ami_server_options_default, then takes the values
 * of `defaults`, then its own. The defaults table is checked once on its own
 * (errors read "defaults.port: ..."); when its values are later applied to
 * each server, a bad one is skipped quietly so one typo is reported once.
 *
 * Secrets: a table may name one source (secret, secret_env, secret_file); a
 * server that names its own ignores the one in defaults. The value is read
 * now, at load time, so a missing variable or unreadable file stops the
 * engine at start-up, not at the first reconnect at 3 a.m. No error
 * message ever contains a secret's value.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "cli/config_internal.h"
#include "transport/tcp.h"
#include "util/alloc.h"

#define MAX_SECRET_BYTES 4096
#define KEY_MAX 63

typedef enum { F_U16, F_U32, F_SIZE } int_type_t;

typedef struct int_opt {
    const char *name;
    size_t off;
    int_type_t type;
    uint64_t min, max;
} int_opt_t;

#define OFF(f) offsetof(ami_server_options_t, f)
#define MIB ((uint64_t)1 << 20)

/* Ranges: wide enough for any sane deployment, narrow enough to catch a
 * value typed in the wrong unit (seconds for ms, MiB for bytes). */
static const int_opt_t INT_OPTS[] = {
    {"port", OFF(port), F_U16, 1, 65535},
    {"connect_timeout_ms", OFF(connect_timeout_ms), F_U32, 1, 600000},
    {"login_timeout_ms", OFF(login_timeout_ms), F_U32, 1, 600000},
    {"action_timeout_ms", OFF(action_timeout_ms), F_U32, 1, 3600000},
    {"heartbeat_interval_ms", OFF(heartbeat_interval_ms), F_U32, 0, 3600000},
    {"heartbeat_timeout_ms", OFF(heartbeat_timeout_ms), F_U32, 0, 3600000},
    {"heartbeat_max_failures", OFF(heartbeat_max_failures), F_U32, 1, 1000},
    {"backoff_initial_ms", OFF(backoff_initial_ms), F_U32, 1, 3600000},
    {"backoff_max_ms", OFF(backoff_max_ms), F_U32, 1, 86400000},
    {"backoff_reset_ms", OFF(backoff_reset_ms), F_U32, 1, 86400000},
    {"max_pending", OFF(max_pending), F_U32, 1, 1000000},
    {"write_hwm_bytes", OFF(write_hwm), F_SIZE, 4096, 1024 * MIB},
    {"read_chunk_bytes", OFF(read_chunk), F_SIZE, 512, 16 * MIB},
    {"max_line_bytes", OFF(parser.max_line), F_SIZE, 256, 64 * MIB},
    {"max_headers", OFF(parser.max_headers), F_SIZE, 8, 10000000},
    {"max_message_bytes", OFF(parser.max_message), F_SIZE, 1024, 1024 * MIB},
    {"max_list_items", OFF(max_messages[AMI_STRATEGY_LIST]), F_U32, 1, 10000000},
    {"max_command_lines", OFF(max_messages[AMI_STRATEGY_COMMAND]), F_U32, 1, 10000000},
    {"max_completion_events", OFF(max_messages[AMI_STRATEGY_EVENT]), F_U32, 1, 1000000},
};
#define N_INT_OPTS (sizeof INT_OPTS / sizeof INT_OPTS[0])

static const char *const SERVER_KEYS[] = {
    "key", "host", "port", "username", "secret", "secret_env", "secret_file", "auth",
    "enforce_ip_endpoints", "connect_timeout_ms", "login_timeout_ms", "action_timeout_ms",
    "heartbeat_interval_ms", "heartbeat_timeout_ms", "heartbeat_max_failures",
    "backoff_initial_ms", "backoff_max_ms", "backoff_reset_ms", "max_pending", "write_hwm_bytes", "read_chunk_bytes",
    "max_line_bytes", "max_headers", "max_message_bytes", "max_list_items", "max_command_lines",
    "max_completion_events", "events", "filters", "tls"};
#define N_SERVER_KEYS (sizeof SERVER_KEYS / sizeof SERVER_KEYS[0])

static const char *const AUTH_NAMES[] = {"plain", "md5"};

/* Asterisk's manager.conf permission classes, the words an Events mask may use. */
static const char *const EVENT_CLASSES[] = {
    "system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf", "reporting",
    "cdr", "dialplan", "originate", "agi", "cc", "aoc", "test", "security", "message", "all"};
#define N_EVENT_CLASSES (sizeof EVENT_CLASSES / sizeof EVENT_CLASSES[0])

/* What one server (or the defaults) has been given so far. */
typedef struct srv {
    ami_server_options_t *o;
    char *source;      /* where the secret came from: 160 bytes, owned by the caller */
    const char *label;
    bool secret_named; /* some table named a secret source, valid or not */
    bool port_named;   /* some table set the port (else TLS takes 5039) */
} srv_t;

static void set_int(ami_server_options_t *o, const int_opt_t *spec, uint64_t v)
{
    char *p = (char *)o + spec->off;
    if (spec->type == F_U16) {
        uint16_t x = (uint16_t)v;
        memcpy(p, &x, sizeof x);
    } else if (spec->type == F_U32) {
        uint32_t x = (uint32_t)v;
        memcpy(p, &x, sizeof x);
    } else {
        size_t x = (size_t)v;
        memcpy(p, &x, sizeof x);
    }
    if (spec->off == OFF(max_messages[AMI_STRATEGY_LIST]))
        o->max_messages[AMI_STRATEGY_AUTO] = (uint32_t)v; /* AUTO lists are lists too */
}

static bool has_line_break(const char *s) { return strpbrk(s, "\r\n") != NULL; }

static void replace(const char **slot, const char *value)
{
    ami_free((char *)*slot);
    *slot = value ? ami_strdup(value) : NULL;
}

/* A string sent to Asterisk as a header value: a line break would let a
 * config value inject headers of its own. */
static bool read_header_value(cfg_ctx_t *cx, int idx, const char *where, const char **out)
{
    if (!cfg_read_string(cx, idx, where, true, out))
        return false;
    if (has_line_break(*out)) {
        cfg_error(cx, "%s: contains a line break; AMI header values cannot hold one, remove it", where);
        return false;
    }
    return true;
}

static bool valid_key(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '_' && k[i] != '.' && k[i] != '-')
            return false;
    return true;
}

static void check_events(cfg_ctx_t *cx, const char *where, const char *mask)
{
    static const char *const words[] = {"on", "off"};
    if (strcmp(mask, "on") == 0 || strcmp(mask, "off") == 0)
        return;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", mask);
    for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        while (*w == ' ')
            w++;
        for (char *e = w + strlen(w); e > w && e[-1] == ' ';)
            *--e = '\0';
        bool known = false;
        for (size_t i = 0; i < N_EVENT_CLASSES && !known; i++)
            known = strcmp(w, EVENT_CLASSES[i]) == 0;
        if (known)
            continue;
        const char *s = cfg_suggest(w, EVENT_CLASSES, N_EVENT_CLASSES);
        if (!s)
            s = cfg_suggest(w, words, 2);
        cfg_error(cx, "%s: \"%.40s\" is not an event class%s%s%s; use \"on\", \"off\" or a list such as "
                      "\"call,system\"",
                  where, w, s ? " (did you mean \"" : "", s ? s : "", s ? "\"?)" : "");
    }
}

static void read_filters(cfg_ctx_t *cx, srv_t *s, int idx, const char *where)
{
    lua_State *L = cx->L;
    if (!cfg_expect_table(cx, idx, where))
        return;
    size_t n = lua_objlen(L, idx);
    size_t entries = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        entries++;
        lua_pop(L, 1);
    }
    if (entries != n) {
        cfg_error(cx, "%s: expected a list of strings ({ \"Event: Hangup\", ... }), found other keys", where);
        return;
    }
    if (n > AMI_MAX_FILTERS) {
        cfg_error(cx, "%s: %zu filters, at most %d are allowed; merge them into fewer patterns", where,
                  n, AMI_MAX_FILTERS);
        return;
    }
    const char *vals[AMI_MAX_FILTERS];
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        char w[192];
        snprintf(w, sizeof w, "%s[%zu]", where, i + 1);
        lua_rawgeti(L, idx, (int)i + 1);
        ok = read_header_value(cx, lua_gettop(L), w, &vals[i]) && ok;
        lua_pop(L, 1); /* the string stays alive in the table */
    }
    if (!ok)
        return;
    for (size_t i = 0; i < s->o->nfilters; i++)
        ami_free((char *)s->o->filters[i]);
    s->o->nfilters = 0;
    for (size_t i = 0; i < n; i++)
        s->o->filters[s->o->nfilters++] = ami_strdup(vals[i]);
}

/* Read a whole secret file; NULL with errno set on failure. *mode: its
 * type and permission bits. Only a regular file is read: a FIFO or a
 * terminal would block the loop (SIGHUP reloads the config on it), so the
 * open does not wait and anything else is refused (EINVAL). */
static char *slurp_secret(const char *path, size_t *len, mode_t *mode)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return NULL;
    struct stat st;
    *mode = fstat(fd, &st) == 0 ? st.st_mode : 0;
    if (!S_ISREG(*mode)) {
        close(fd);
        errno = EINVAL;
        return NULL;
    }
    char *buf = ami_malloc(MAX_SECRET_BYTES + 1);
    size_t n = 0;
    ssize_t r = 0;
    while (buf && n <= MAX_SECRET_BYTES &&
           (r = read(fd, buf + n, MAX_SECRET_BYTES + 1 - n)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        n += (size_t)r;
    }
    int saved = errno;
    close(fd);
    if (!buf || r < 0) {
        if (buf)
            explicit_bzero(buf, MAX_SECRET_BYTES + 1);
        ami_free(buf);
        errno = buf ? saved : ENOMEM;
        return NULL;
    }
    *len = n;
    buf[n < MAX_SECRET_BYTES ? n : MAX_SECRET_BYTES] = '\0';
    return buf;
}

static void set_secret(srv_t *s, const char *value, size_t len, const char *source)
{
    ami_server_options_t *o = s->o;
    if (o->secret) {
        explicit_bzero((char *)o->secret, strlen(o->secret));
        ami_free((char *)o->secret);
    }
    o->secret = ami_strndup(value, len);
    snprintf(s->source, 160, "%s", source);
}

static void load_secret_file(cfg_ctx_t *cx, srv_t *s, const char *where, const char *file)
{
    char *path = cfg_resolve_path(cx, file);
    size_t len = 0;
    mode_t mode = 0;
    char *text = path ? slurp_secret(path, &len, &mode) : NULL;
    if (text && (mode & (S_IROTH | S_IWOTH)))
        cfg_warn(cx, "%s: \"%.120s\" is readable%s by every user of the machine (mode %03o); "
                     "chmod 600 it (or 640 with a group only the engine is in)",
                 where, path, mode & S_IWOTH ? " and writable" : "", (unsigned)(mode & 0777));
    if (!text && mode && !S_ISREG(mode)) {
        cfg_error(cx, "%s: \"%.120s\" is not a regular file (a pipe, device or folder); give the file that "
                      "holds the secret", where, path);
    } else if (!text) {
        cfg_error(cx, "%s: cannot read \"%.120s\": %s; check the path and that the engine's user may read it",
                  where, path ? path : file, strerror(errno));
    } else if (len > MAX_SECRET_BYTES) {
        cfg_error(cx, "%s: \"%.120s\" is larger than %d bytes; the file must hold only the secret", where,
                  path, MAX_SECRET_BYTES);
    } else {
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
            len--;
        text[len] = '\0';
        if (len == 0)
            cfg_error(cx, "%s: \"%.120s\" is empty; write the secret into it", where, path);
        else if (strlen(text) != len || has_line_break(text))
            cfg_error(cx, "%s: \"%.120s\" holds more than one line or a NUL byte; the file must hold only "
                          "the secret", where, path);
        else {
            char source[300];
            snprintf(source, sizeof source, "file %s", path);
            set_secret(s, text, len, source);
        }
    }
    if (text)
        explicit_bzero(text, MAX_SECRET_BYTES + 1);
    ami_free(text);
    ami_free(path);
}

/* idx: the table that names the secret; name: which of the three keys. */
static void load_secret(cfg_ctx_t *cx, srv_t *s, int idx, const char *name, const char *where)
{
    lua_State *L = cx->L;
    cfg_rawfield(L, idx, name);
    int v = lua_gettop(L);
    const char *text = NULL;
    bool is_value = strcmp(name, "secret") == 0;
    if (!cfg_read_string(cx, v, where, !is_value, &text)) {
        /* reported */
    } else if (is_value) {
        if (has_line_break(text))
            cfg_error(cx, "%s: contains a line break; AMI header values cannot hold one, remove it", where);
        else
            set_secret(s, text, strlen(text), "inline");
    } else if (strcmp(name, "secret_env") == 0) {
        const char *env = getenv(text);
        char source[200];
        snprintf(source, sizeof source, "env %s", text);
        if (!env)
            cfg_error(cx, "%s: the environment variable %.80s is not set; export it before starting the "
                          "engine, or use secret_file", where, text);
        else if (!*env)
            cfg_error(cx, "%s: the environment variable %.80s is empty; put the secret in it", where, text);
        else if (has_line_break(env))
            cfg_error(cx, "%s: the environment variable %.80s holds a line break; AMI header values cannot "
                          "hold one, remove it", where, text);
        else
            set_secret(s, env, strlen(env), source);
    } else {
        load_secret_file(cx, s, where, text);
    }
    lua_pop(L, 1);
}

static void apply_secret(cfg_ctx_t *cx, srv_t *s, int idx)
{
    static const char *const sources[] = {"secret", "secret_env", "secret_file"};
    const char *named[3];
    size_t n = 0;
    for (size_t i = 0; i < 3; i++) {
        cfg_rawfield(cx->L, idx, sources[i]);
        if (!lua_isnil(cx->L, -1))
            named[n++] = sources[i];
        lua_pop(cx->L, 1);
    }
    if (n == 0)
        return;
    s->secret_named = true;
    if (n > 1) {
        cfg_error(cx, "%s: more than one secret source (%s, %s%s%s); keep exactly one of secret, secret_env, "
                      "secret_file", s->label, named[0], named[1], n > 2 ? ", " : "", n > 2 ? named[2] : "");
        return;
    }
    char where[160];
    snprintf(where, sizeof where, "%s.%s", s->label, named[0]);
    load_secret(cx, s, idx, named[0], where);
}

static void apply_one(cfg_ctx_t *cx, srv_t *s, int v, const char *key, const char *where)
{
    for (size_t i = 0; i < N_INT_OPTS; i++) {
        if (strcmp(key, INT_OPTS[i].name) == 0) {
            uint64_t x;
            if (cfg_read_uint(cx, v, where, INT_OPTS[i].min, INT_OPTS[i].max, &x))
                set_int(s->o, &INT_OPTS[i], x);
            return;
        }
    }
    const char *str;
    bool b;
    if (strcmp(key, "key") == 0) {
        if (cfg_read_string(cx, v, where, true, &str)) {
            if (valid_key(str))
                replace(&s->o->server_key, str);
            else
                cfg_error(cx, "%s: \"%.70s\" is not a valid key; use 1 to %d characters of A-Z a-z 0-9 _ . -",
                          where, str, KEY_MAX);
        }
    } else if (strcmp(key, "host") == 0) {
        if (cfg_read_string(cx, v, where, true, &str)) {
            bool clean = true;
            for (const char *p = str; *p; p++)
                clean = clean && !isspace((unsigned char)*p) && !iscntrl((unsigned char)*p);
            if (clean)
                replace(&s->o->host, str);
            else
                cfg_error(cx, "%s: \"%.70s\" contains spaces or control characters; give an IP address", where, str);
        }
    } else if (strcmp(key, "username") == 0) {
        if (read_header_value(cx, v, where, &str))
            replace(&s->o->username, str);
    } else if (strcmp(key, "auth") == 0) {
        int a = cfg_read_enum(cx, v, where, AUTH_NAMES, 2);
        if (a >= 0)
            s->o->auth = (ami_auth_t)a;
    } else if (strcmp(key, "enforce_ip_endpoints") == 0) {
        if (cfg_read_bool(cx, v, where, &b))
            s->o->enforce_ip_endpoints = b;
    } else if (strcmp(key, "events") == 0) {
        if (read_header_value(cx, v, where, &str)) {
            size_t before = cx->total;
            check_events(cx, where, str);
            if (cx->total == before)
                replace(&s->o->events, str);
        }
    } else if (strcmp(key, "filters") == 0) {
        read_filters(cx, s, v, where);
    } else if (strcmp(key, "tls") == 0) {
        cfg_read_tls(cx, s->o, v, where);
    }
    /* secret, secret_env, secret_file: apply_secret */
}

/* Apply the options of the table at idx to s. */
static void apply_table(cfg_ctx_t *cx, srv_t *s, int idx, bool is_defaults)
{
    lua_State *L = cx->L;
    cfg_check_keys(cx, idx, s->label, SERVER_KEYS, N_SERVER_KEYS);
    for (size_t k = 0; k < N_SERVER_KEYS; k++) {
        const char *key = SERVER_KEYS[k];
        cfg_rawfield(L, idx, key);
        int v = lua_gettop(L);
        char where[160];
        snprintf(where, sizeof where, "%s.%s", s->label, key);
        if (lua_isnil(L, v)) {
            /* not given */
        } else if (is_defaults && (strcmp(key, "key") == 0 || strcmp(key, "host") == 0)) {
            cfg_error(cx, "%s: each server needs its own %s; move it into the server's table", where, key);
        } else {
            apply_one(cx, s, v, key, where);
            s->port_named = s->port_named || strcmp(key, "port") == 0;
        }
        lua_pop(L, 1);
    }
    apply_secret(cx, s, idx);
}

/* Checks across options, once every table has been applied. */
static void check_server(cfg_ctx_t *cx, srv_t *s, size_t errors_before)
{
    ami_server_options_t *o = s->o;
    if (!o->host) {
        cfg_error(cx, "%s.host: missing; give the Asterisk server's IP address, e.g. host = \"10.0.0.5\"",
                  s->label);
    } else if (o->enforce_ip_endpoints && !ami_tcp_is_ip_literal(o->host)) {
        cfg_error(cx, "%s.host: \"%.70s\" is not an IP address and enforce_ip_endpoints is on (DNS lookups "
                      "can block the engine); use the IP, or set enforce_ip_endpoints = false",
                  s->label, o->host);
    }
    if (!o->username)
        cfg_error(cx, "%s.username: missing; give the manager.conf user, e.g. username = \"engine\"", s->label);
    if (!o->secret && !s->secret_named)
        cfg_error(cx, "%s.secret: missing; give one of secret_env = \"VAR\", secret_file = \"/path\" or "
                      "secret = \"...\"", s->label);
    if (o->backoff_initial_ms > o->backoff_max_ms)
        cfg_error(cx, "%s: backoff_initial_ms (%u) is larger than backoff_max_ms (%u); lower the first or "
                      "raise the second", s->label, o->backoff_initial_ms, o->backoff_max_ms);
    if (o->parser.max_line && o->parser.max_message && o->parser.max_line > o->parser.max_message)
        cfg_error(cx, "%s: max_line_bytes (%zu) is larger than max_message_bytes (%zu); a line is part of "
                      "a message, lower the first or raise the second", s->label, o->parser.max_line,
                  o->parser.max_message);
    if (o->tls.enabled && !s->port_named)
        o->port = AMI_TLS_DEFAULT_PORT;
    cfg_check_tls(cx, s->label, o);
    if (cx->total != errors_before || !o->secret)
        return;
    ami_err_t err;
    if (ami_server_options_validate(o, &err) < 0)
        cfg_error(cx, "%s: %s", s->label, err.msg);
}

void cfg_free_server(ami_server_options_t *o)
{
    ami_free((char *)o->server_key);
    ami_free((char *)o->host);
    ami_free((char *)o->username);
    if (o->secret) {
        explicit_bzero((char *)o->secret, strlen(o->secret));
        ami_free((char *)o->secret);
    }
    ami_free((char *)o->events);
    for (size_t i = 0; i < o->nfilters && i < AMI_MAX_FILTERS; i++)
        ami_free((char *)o->filters[i]);
    ami_tls_options_free(&o->tls);
    ami_server_options_default(o);
}

/* servers must be a list: {1..n} and nothing else. */
static size_t list_length(cfg_ctx_t *cx, int idx)
{
    lua_State *L = cx->L;
    size_t n = lua_objlen(L, idx), entries = 0;
    bool other = false;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        entries++;
        if (lua_type(L, -2) == LUA_TSTRING && !other) {
            other = true;
            cfg_error(cx, "servers.%.40s: servers is a list, write servers = { { key = \"%.40s\", ... }, ... }",
                      lua_tostring(L, -2), lua_tostring(L, -2));
        }
        lua_pop(L, 1);
    }
    if (entries != n && !other)
        cfg_error(cx, "servers: the list has holes or non-number keys; write servers = { {...}, {...} }");
    return n;
}

void cfg_load_servers(cfg_ctx_t *cx, int servers_idx, int defaults_idx)
{
    lua_State *L = cx->L;
    bool have_defaults = !lua_isnil(L, defaults_idx) && cfg_expect_table(cx, defaults_idx, "defaults");
    if (have_defaults) {
        ami_server_options_t scratch;
        ami_server_options_default(&scratch);
        char source[160];
        srv_t d = {.o = &scratch, .source = source, .label = "defaults"};
        apply_table(cx, &d, defaults_idx, true);
        cfg_free_server(&scratch);
    }
    if (lua_isnil(L, servers_idx)) {
        cfg_error(cx, "servers: no servers configured; add servers = { { key = \"pbx1\", host = \"10.0.0.5\", "
                      "username = \"engine\", secret_env = \"AMI_SECRET_PBX1\" } }");
        return;
    }
    if (!cfg_expect_table(cx, servers_idx, "servers"))
        return;
    size_t before_list = cx->total;
    size_t n = list_length(cx, servers_idx);
    if (n == 0 && cx->total == before_list)
        cfg_error(cx, "servers: the list is empty; add at least one server");
    if (n > AMI_CONFIG_MAX_SERVERS) {
        cfg_error(cx, "servers: %zu servers, at most %d are supported; run more engines", n, AMI_CONFIG_MAX_SERVERS);
        n = AMI_CONFIG_MAX_SERVERS;
    }
    size_t index_of[AMI_CONFIG_MAX_SERVERS]; /* slot -> position in the list, for messages */
    for (size_t i = 0; i < n; i++) {
        size_t before = cx->total;
        char label[96];
        snprintf(label, sizeof label, "servers[%zu]", i + 1);
        lua_rawgeti(L, servers_idx, (int)i + 1);
        int t = lua_gettop(L);
        if (!lua_istable(L, t)) {
            char got[80];
            cfg_value_text(L, t, got, sizeof got);
            cfg_error(cx, "%s: expected a table of server options, got %s; write { key = ..., host = ..., ... }",
                      label, got);
            lua_pop(L, 1);
            continue;
        }
        cfg_rawfield(L, t, "key");
        if (lua_type(L, -1) == LUA_TSTRING && valid_key(lua_tostring(L, -1)))
            snprintf(label, sizeof label, "servers[%zu] (%s)", i + 1, lua_tostring(L, -1));
        lua_pop(L, 1);
        index_of[cx->cfg->nservers] = i + 1;
        char *source = cx->cfg->secret_source[cx->cfg->nservers];
        ami_server_options_t *o = &cx->cfg->servers[cx->cfg->nservers++];
        ami_server_options_default(o);
        srv_t s = {.o = o, .source = source, .label = label};
        if (have_defaults) {
            cx->quiet++;
            apply_table(cx, &s, defaults_idx, true);
            cx->quiet--;
        }
        apply_table(cx, &s, t, false);
        lua_pop(L, 1);
        if (!o->server_key) {
            cfg_error(cx, "%s.key: missing; give the server a short unique name, e.g. key = \"pbx%zu\"", label,
                      i + 1);
        } else {
            for (size_t j = 0; j + 1 < cx->cfg->nservers; j++) {
                const char *other = cx->cfg->servers[j].server_key;
                if (other && strcmp(other, o->server_key) == 0) {
                    cfg_error(cx, "%s.key: \"%s\" is also the key of servers[%zu]; every server needs its own key",
                              label, o->server_key, index_of[j]);
                    break;
                }
            }
        }
        check_server(cx, &s, before);
    }
}

char *cfg_read_secret(cfg_ctx_t *cx, int idx, const char *label, char *source, size_t source_size)
{
    ami_server_options_t scratch;
    ami_server_options_default(&scratch);
    char from[160] = "";
    srv_t s = {.o = &scratch, .source = from, .label = label};
    apply_secret(cx, &s, idx);
    char *secret = (char *)scratch.secret;
    scratch.secret = NULL;
    snprintf(source, source_size, "%s", from);
    cfg_free_server(&scratch);
    return secret;
}
