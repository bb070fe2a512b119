/*
 * A server's tls table (servers[i].tls, or defaults.tls for every server):
 *
 *   tls = { ca_file = "/etc/ami-engine/asterisk-ca.pem", server_name = "pbx1.example.com",
 *           cert_file = "client.pem", key_file = "client.key",   -- optional client certificate
 *           verify = true, handshake_timeout_ms = 5000 }
 *   tls = false    -- a server that stays on plain TCP although defaults.tls is set
 *   tls = true     -- TLS with defaults.tls's settings only
 *
 * A server's table adds to the defaults' table key by key. Paths are
 * resolved against the config file's folder. Once a server is complete,
 * its files are loaded now, as the engine will load them, so a missing CA
 * file, a key that does not match its certificate or a key behind a
 * passphrase stops the engine at start-up (and fails a SIGHUP reload), not
 * at the first reconnect. A server with TLS and no port of its own (nor in
 * defaults) uses Asterisk's TLS port, 5039.
 */
#include <string.h>

#include <lauxlib.h>

#include "cli/config_internal.h"
#include "transport/tls.h"
#include "util/alloc.h"

static const char *const TLS_KEYS[] = {"ca_file",  "server_name", "cert_file",
                                       "key_file", "verify",      "handshake_timeout_ms"};
#define N_TLS_KEYS (sizeof TLS_KEYS / sizeof TLS_KEYS[0])

static void replace_owned(const char **slot, char *value)
{
    ami_free((char *)*slot);
    *slot = value;
}

static void read_path(cfg_ctx_t *cx, int v, const char *where, const char **slot)
{
    const char *text;
    if (cfg_read_string(cx, v, where, true, &text))
        replace_owned(slot, cfg_resolve_path(cx, text));
}

static void read_one(cfg_ctx_t *cx, ami_tls_options_t *t, int v, const char *key, const char *where)
{
    const char *text;
    bool b;
    uint64_t ms;
    if (strcmp(key, "ca_file") == 0)
        read_path(cx, v, where, &t->ca_file);
    else if (strcmp(key, "cert_file") == 0)
        read_path(cx, v, where, &t->cert_file);
    else if (strcmp(key, "key_file") == 0)
        read_path(cx, v, where, &t->key_file);
    else if (strcmp(key, "server_name") == 0 && cfg_read_string(cx, v, where, true, &text))
        replace_owned(&t->server_name, ami_strdup(text));
    else if (strcmp(key, "verify") == 0 && cfg_read_bool(cx, v, where, &b))
        t->no_verify = !b;
    else if (strcmp(key, "handshake_timeout_ms") == 0 && cfg_read_uint(cx, v, where, 1, 600000, &ms))
        t->handshake_timeout_ms = (uint32_t)ms;
}

void cfg_read_tls(cfg_ctx_t *cx, ami_server_options_t *o, int idx, const char *where)
{
    lua_State *L = cx->L;
    if (lua_type(L, idx) == LUA_TBOOLEAN) {
        o->tls.enabled = lua_toboolean(L, idx);
        return;
    }
    if (!lua_istable(L, idx)) {
        char got[80];
        cfg_value_text(L, idx, got, sizeof got);
        cfg_error(cx, "%s: expected a table such as { ca_file = \"/etc/ami-engine/ca.pem\" }, or false, got %s",
                  where, got);
        return;
    }
    o->tls.enabled = true;
    cfg_check_keys(cx, idx, where, TLS_KEYS, N_TLS_KEYS);
    for (size_t k = 0; k < N_TLS_KEYS; k++) {
        cfg_rawfield(L, idx, TLS_KEYS[k]);
        char w[200];
        snprintf(w, sizeof w, "%s.%s", where, TLS_KEYS[k]);
        if (!lua_isnil(L, -1))
            read_one(cx, &o->tls, lua_gettop(L), TLS_KEYS[k], w);
        lua_pop(L, 1);
    }
}

void cfg_check_tls(cfg_ctx_t *cx, const char *label, const ami_server_options_t *o)
{
    const ami_tls_options_t *t = &o->tls;
    if (!t->enabled)
        return;
    size_t before = cx->total;
    if (!t->no_verify && !t->ca_file)
        cfg_error(cx, "%s.tls.ca_file: missing; give the CA certificate (PEM) that signed Asterisk's "
                      "certificate, e.g. ca_file = \"/etc/ami-engine/asterisk-ca.pem\"",
                  label);
    if (t->key_file && !t->cert_file)
        cfg_error(cx, "%s.tls.key_file: set without cert_file; give the client certificate too", label);
    ami_err_t err;
    if (cx->total == before && ami_tls_options_validate(t, &err) < 0)
        cfg_error(cx, "%s.%s", label, err.msg);
    if (cx->total != before || !o->host)
        return;
    ami_tls_ctx_t *ctx = ami_tls_client_new(t, o->host, o->server_key, NULL, NULL, &err);
    if (!ctx)
        cfg_error(cx, "%s.%s", label, err.msg);
    ami_tls_ctx_free(ctx);
}

void cfg_describe_tls(const ami_server_options_t *o, ami_buf_t *out)
{
    const ami_tls_options_t *t = &o->tls;
    if (!t->enabled)
        return;
    if (t->no_verify)
        ami_buf_printf(out, "    tls: VERIFY OFF (insecure: anyone on the path can pose as this server)");
    else
        ami_buf_printf(out, "    tls: verify %s%s against %s", t->server_name ? "" : "the host ",
                       t->server_name ? t->server_name : o->host, t->ca_file);
    if (t->cert_file)
        ami_buf_printf(out, ", client certificate %s", t->cert_file);
    ami_buf_printf(out, ", handshake timeout %u ms\n",
                   t->handshake_timeout_ms ? t->handshake_timeout_ms : AMI_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS);
}
