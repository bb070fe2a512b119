/*
 * Private to the config loader: what config.c (Lua evaluation, top-level
 * sections, describe) and config_server.c (server options, secrets) share.
 *
 * Every reader takes the Lua value at a stack index and a "where" label
 * ("servers[2] (pbx2).port"), and on a bad value records one error in the
 * words of the operator's file and returns false, so the caller simply goes
 * on to the next key: all mistakes are reported in one run.
 *
 * The readers run after the config chunk has finished, inside lua_cpcall,
 * and only use raw table access: no metamethod of the config can run again.
 */
#ifndef AMI_CLI_CONFIG_INTERNAL_H
#define AMI_CLI_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "cli/config.h"

typedef struct cfg_ctx {
    lua_State *L;
    ami_engine_config_t *cfg;
    ami_config_errors_t *errs;
    const char *dir; /* the config file's folder; "" when it is the working directory */
    int quiet;       /* > 0: values already reported once (defaults applied to a server) */
    size_t total;    /* errors found, including those past AMI_CONFIG_MAX_ERRORS */
} cfg_ctx_t;

/* t[key] without metamethods, pushed on the stack. */
static inline void cfg_rawfield(lua_State *L, int t, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, t < 0 ? t - 1 : t);
}

void cfg_error(cfg_ctx_t *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Valid but unwise: kept in the config's warnings (--check-config prints them). */
void cfg_warn(cfg_ctx_t *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "string \"5s\"", "number 1.5", "boolean true", "table": for "got ..." */
void cfg_value_text(lua_State *L, int idx, char *out, size_t n);
/* The closest of known[] to word, or NULL when nothing is close. */
const char *cfg_suggest(const char *word, const char *const *known, size_t n);

bool cfg_read_uint(cfg_ctx_t *cx, int idx, const char *where, uint64_t min, uint64_t max,
                   uint64_t *out);
/* A non-empty string; show_value false for secrets (never echo them). */
bool cfg_read_string(cfg_ctx_t *cx, int idx, const char *where, bool show_value, const char **out);
bool cfg_read_bool(cfg_ctx_t *cx, int idx, const char *where, bool *out);
/* Index into names[], or -1 (error recorded, listing the allowed names). */
int cfg_read_enum(cfg_ctx_t *cx, int idx, const char *where, const char *const *names, size_t n);

/* Is the value at idx a table? If not, record "expected a table". */
bool cfg_expect_table(cfg_ctx_t *cx, int idx, const char *where);
/* Report every key of the table at idx that is not in known[]. */
void cfg_check_keys(cfg_ctx_t *cx, int idx, const char *where, const char *const *known, size_t n);

/* A path from the config, made relative to the config file's folder. */
char *cfg_resolve_path(const cfg_ctx_t *cx, const char *path);

/* servers and defaults (either index may hold nil). */
void cfg_load_servers(cfg_ctx_t *cx, int servers_idx, int defaults_idx);

/* The http section (config_http.c): load (idx may hold nil or false),
 * free its strings, describe it. */
void cfg_load_http(cfg_ctx_t *cx, int idx);
void cfg_free_http(ami_engine_config_t *cfg);
void cfg_describe_http(const ami_engine_config_t *cfg, ami_buf_t *out);
/* config_tls.c: a server's tls table (or false/true) into o->tls; the
 * checks once the server is complete (its files are loaded now); the
 * --check-config line. */
void cfg_read_tls(cfg_ctx_t *cx, ami_server_options_t *o, int idx, const char *where);
void cfg_check_tls(cfg_ctx_t *cx, const char *label, const ami_server_options_t *o);
void cfg_describe_tls(const ami_server_options_t *o, ami_buf_t *out);
/* The callstate section (config_callstate.c); idx may hold nil. */
void cfg_load_callstate(cfg_ctx_t *cx, int idx);
void cfg_free_callstate(ami_engine_config_t *cfg);
void cfg_describe_callstate(const ami_engine_config_t *cfg, ami_buf_t *out);

/* A server's secret block holds "value\0source": the source ("env NAME",
 * "file PATH", "inline") is what describe shows instead of the value. */
void cfg_free_server(ami_server_options_t *o);

/* A secret named in the table at idx by secret, secret_env or secret_file
 * (read as for servers), for other sections; NULL if none is named or on a
 * reported error. source gets where it came from. The caller wipes and
 * frees it. */
char *cfg_read_secret(cfg_ctx_t *cx, int idx, const char *label, char *source, size_t source_size);

/* The ha section (config_ha.c). */
void cfg_load_ha(cfg_ctx_t *cx, int idx);
void cfg_free_ha(ami_engine_config_t *cfg);
void cfg_describe_ha(const ami_engine_config_t *cfg, ami_buf_t *out);

#endif
