/*
 * The config's http section: the HTTP client scripts use (ami.http).
 *
 *   http = { max_concurrent = 256, max_per_script = 64, timeout_ms = 10000,
 *            connect_timeout_ms = 3000, max_redirects = 3,
 *            max_response_bytes = 1048576, max_request_bytes = 1048576,
 *            max_header_bytes = 65536, max_url_bytes = 8192, max_host_labels = 50,
 *            ca_file = "/etc/ssl/certs/ca-certificates.crt", verify = true,
 *            proxy = "http://proxy.lan:3128" }
 *
 * No section (or http = false): ami.http answers "disabled". The section,
 * even empty, turns it on with the defaults above (ca_file: the system's
 * store; proxy: none, whatever the environment says). Read like every
 * section: each mistake is reported with its place, all in one run.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/config_internal.h"
#include "util/alloc.h"

static const char *const HTTP_KEYS[] = {
    "max_concurrent",     "max_per_script", "max_response_bytes", "max_request_bytes", "max_header_bytes",
    "max_url_bytes",      "timeout_ms",     "connect_timeout_ms", "max_redirects",     "ca_file",
    "verify",             "proxy",          "max_host_labels"};
#define N_HTTP_KEYS (sizeof HTTP_KEYS / sizeof HTTP_KEYS[0])

#define HTTP_MIB ((uint64_t)1 << 20)

static bool http_read_num(cfg_ctx_t *cx, int t, const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
    cfg_rawfield(cx->L, t, key);
    char where[64];
    snprintf(where, sizeof where, "http.%s", key);
    bool got = !lua_isnil(cx->L, -1) && cfg_read_uint(cx, lua_gettop(cx->L), where, min, max, out);
    lua_pop(cx->L, 1);
    return got;
}

static void http_read_u32(cfg_ctx_t *cx, int t, const char *key, uint64_t min, uint64_t max, uint32_t *dst)
{
    uint64_t v;
    if (http_read_num(cx, t, key, min, max, &v))
        *dst = (uint32_t)v;
}

static void http_read_size(cfg_ctx_t *cx, int t, const char *key, uint64_t min, uint64_t max, size_t *dst)
{
    uint64_t v;
    if (http_read_num(cx, t, key, min, max, &v))
        *dst = (size_t)v;
}

static void http_read_ca_file(cfg_ctx_t *cx, int t)
{
    const char *given;
    cfg_rawfield(cx->L, t, "ca_file");
    if (!lua_isnil(cx->L, -1) && cfg_read_string(cx, lua_gettop(cx->L), "http.ca_file", true, &given)) {
        char *path = cfg_resolve_path(cx, given);
        if (path && access(path, R_OK) != 0) {
            cfg_error(cx, "http.ca_file: \"%.150s\" cannot be read (%s); give a PEM file of the CAs to trust",
                      path, strerror(errno));
            ami_free(path);
        } else {
            cx->cfg->http.ca_file = path;
        }
    }
    lua_pop(cx->L, 1);
}

static void http_read_proxy(cfg_ctx_t *cx, int t)
{
    static const char *const schemes[] = {"http://", "https://", "socks5://", "socks5h://"};
    const char *proxy;
    cfg_rawfield(cx->L, t, "proxy");
    if (!lua_isnil(cx->L, -1) && cfg_read_string(cx, lua_gettop(cx->L), "http.proxy", true, &proxy)) {
        bool ok = false;
        for (size_t i = 0; i < sizeof schemes / sizeof schemes[0] && !ok; i++)
            ok = strncasecmp(proxy, schemes[i], strlen(schemes[i])) == 0;
        if (!ok || strpbrk(proxy, " \t\r\n"))
            cfg_error(cx, "http.proxy: \"%.100s\" is not a proxy URL; write \"http://host:port\" (or https://, "
                          "socks5://, socks5h://)", proxy);
        else
            cx->cfg->http.proxy = ami_strdup(proxy);
    }
    lua_pop(cx->L, 1);
}

static void http_read_limits(cfg_ctx_t *cx, int t)
{
    ami_httpc_config_t *h = &cx->cfg->http;
    uint32_t per_script = 0;
    http_read_u32(cx, t, "max_concurrent", 1, 100000, &h->max_concurrent);
    http_read_u32(cx, t, "max_per_script", 1, 100000, &per_script);
    http_read_size(cx, t, "max_response_bytes", 1, 256 * HTTP_MIB, &h->max_response_bytes);
    http_read_size(cx, t, "max_request_bytes", 0, 256 * HTTP_MIB, &h->max_request_bytes);
    http_read_size(cx, t, "max_header_bytes", 1024, 16 * HTTP_MIB, &h->max_header_bytes);
    http_read_size(cx, t, "max_url_bytes", 64, HTTP_MIB, &h->max_url_bytes);
    http_read_u32(cx, t, "timeout_ms", 1, 3600000, &h->timeout_ms);
    http_read_u32(cx, t, "connect_timeout_ms", 1, 3600000, &h->connect_timeout_ms);
    http_read_u32(cx, t, "max_redirects", 0, 50, &h->max_redirects);
    http_read_u32(cx, t, "max_host_labels", 1, 10000, &h->max_host_labels);
    if (per_script > h->max_concurrent)
        cfg_error(cx, "http.max_per_script: %u is more than http.max_concurrent (%u); a script cannot have "
                      "more requests in flight than the whole engine", per_script, h->max_concurrent);
    else if (per_script)
        h->max_per_owner = per_script;
    else if (h->max_per_owner > h->max_concurrent)
        h->max_per_owner = h->max_concurrent; /* the default, within a smaller overall bound */
}

void cfg_load_http(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    if (lua_isnil(L, t) || (lua_type(L, t) == LUA_TBOOLEAN && !lua_toboolean(L, t)))
        return;
    if (!cfg_expect_table(cx, t, "http"))
        return;
    cfg_check_keys(cx, t, "http", HTTP_KEYS, N_HTTP_KEYS);
    cx->cfg->http_enabled = true;
    http_read_limits(cx, t);
    http_read_ca_file(cx, t);
    http_read_proxy(cx, t);
    cfg_rawfield(L, t, "verify");
    bool verify;
    if (!lua_isnil(L, -1) && cfg_read_bool(cx, lua_gettop(L), "http.verify", &verify))
        cx->cfg->http.verify = verify;
    lua_pop(L, 1);
}

void cfg_free_http(ami_engine_config_t *cfg)
{
    ami_free((char *)cfg->http.ca_file);
    ami_free((char *)cfg->http.proxy);
    cfg->http.ca_file = cfg->http.proxy = NULL;
}

void cfg_describe_http(const ami_engine_config_t *cfg, ami_buf_t *out)
{
    const ami_httpc_config_t *h = &cfg->http;
    if (!cfg->http_enabled) {
        ami_buf_printf(out, "http: off (ami.http answers \"disabled\")\n");
        return;
    }
    ami_buf_printf(out, "http: max_concurrent %u, per script %u; timeout %u ms, connect %u ms; redirects %u\n",
                   h->max_concurrent, h->max_per_owner, h->timeout_ms, h->connect_timeout_ms, h->max_redirects);
    ami_buf_printf(out, "  bytes: response %zu, request %zu, headers %zu, url %zu; host labels %u\n",
                   h->max_response_bytes, h->max_request_bytes, h->max_header_bytes, h->max_url_bytes,
                   h->max_host_labels);
    ami_buf_printf(out, "  tls: verify %s, CAs %s; proxy %s\n",
                   h->verify ? "on" : "OFF (any server can pose as the one a script calls)",
                   h->ca_file ? h->ca_file : "the system's store", h->proxy ? "configured" : "none");
}
