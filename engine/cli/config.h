/*
 * The ami-engine configuration file: a Lua file that sets a few globals.
 *
 *   servers = {
 *     { key = "pbx1", host = "10.0.0.5", username = "engine", secret_env = "AMI_SECRET_PBX1" },
 *     { key = "pbx2", host = "10.0.0.6", username = "engine", secret_file = "/run/secrets/pbx2",
 *       heartbeat_interval_ms = 2000 },
 *   }
 *   defaults = { port = 5038, heartbeat_interval_ms = 5000 }   -- any server option
 *   scripts  = { dir = "scripts", handler_budget_ms = 20 }
 *   metrics  = { listen = "127.0.0.1:9100", health_quorum = "all", max_connections = 256 }
 *   log      = { level = "info", format = "logfmt" }
 *   routing  = "first_healthy"
 *   http     = { timeout_ms = 5000, ca_file = "/etc/ssl/crm-ca.pem" }  -- ami.http (off without it)
 *   ha       = { cluster = "prod", redis = { address = "10.0.0.9:6379" } }   -- config_ha.c
 *   callstate = { max_channels = 10000, variables = {"CRM_ID"} }  -- off when absent
 *
 * The file is evaluated in an empty sandbox (no io, no os but os.getenv), with
 * an instruction budget: a config cannot hang or touch the system. Then
 * every value is validated; all errors are collected, each naming its place
 * ("servers[2].port: expected an integer from 1 to 65535, got \"abc\"").
 *
 * A server's secret comes from exactly one of secret (the text itself),
 * secret_env (an environment variable) or secret_file (a file, trailing
 * newline removed). Secrets are read at load time and never logged.
 *
 * Relative paths (scripts.dir, lua.path entries, secret_file) are resolved
 * against the config file's folder.
 *
 * Memory: every string in an ami_engine_config_t belongs to it;
 * ami_config_free releases them.
 */
#ifndef AMI_CLI_CONFIG_H
#define AMI_CLI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "callstate/callstate.h"
#include "cluster/client.h"
#include "ha/ha.h"
#include "session/conn.h"
#include "httpc/httpc.h"
#include "lua/runtime.h"
#include "obs/http.h"
#include "obs/log.h"

#define AMI_CONFIG_MAX_SERVERS 256
#define AMI_CONFIG_MAX_ERRORS 64
#define AMI_CONFIG_MAX_WARNINGS 16
#define AMI_CONFIG_MAX_GETENV 64

typedef struct ami_config_errors {
    size_t count;
    char msg[AMI_CONFIG_MAX_ERRORS][256];
} ami_config_errors_t;

typedef struct ami_engine_config {
    char *path;                    /* the file, as given */
    ami_server_options_t servers[AMI_CONFIG_MAX_SERVERS];
    /* Where each server's secret came from ("env AMI_SECRET_PBX1", "file
     * /run/secrets/pbx1", "inline"), for descriptions: never the value. */
    char secret_source[AMI_CONFIG_MAX_SERVERS][160];
    size_t nservers;
    ami_route_policy_t route;
    ami_lua_config_t lua;          /* scripts_dir and lua_path owned by this config */
    bool metrics_enabled;          /* metrics.listen = false turns the endpoint off */
    char *metrics_ip;              /* default "127.0.0.1" */
    uint16_t metrics_port;         /* default 9100 */
    uint32_t health_quorum;        /* servers that must be connected for /healthz 200; 0 = all */
    ami_http_config_t metrics_http; /* the endpoint's limits; bind_ip and port unset (above) */
    ami_log_level_t log_level;     /* default info */
    ami_log_format_t log_format;   /* default logfmt */
    uint32_t drain_grace_ms;       /* SIGTERM: coroutines get this long; default 10000 */
    uint32_t summary_interval_ms;  /* one-line summary per server in the log; default 0 = off */
    uint32_t busy_poll_us;         /* the loop polls without sleeping this long after input; default 0 = off */
    /* os.getenv for scripts (scripts.getenv) and the secret_env variables
     * never given to them; lua.getenv_allow/deny point into these. */
    char *getenv_allow[AMI_CONFIG_MAX_GETENV + 1];
    char *getenv_deny[AMI_CONFIG_MAX_SERVERS + 1];
    /* What is valid but unwise (a world-readable secret file): printed by
     * --check-config and logged at start. */
    size_t nwarnings;
    char warnings[AMI_CONFIG_MAX_WARNINGS][256];
    bool http_enabled;             /* an http section turns ami.http on (config_http.c) */
    ami_httpc_config_t http;       /* ca_file and proxy owned by this config */
    bool ha_enabled;               /* an ha section: leases, ami.kv, stream on Redis (config_ha.c) */
    ami_ha_config_t ha;            /* strings owned by this config */
    char ha_secret_source[160];    /* where the Redis password came from, never the value */
    bool callstate_enabled;        /* the callstate section: off when absent */
    ami_callstate_config_t callstate; /* its variables point into callstate_vars */
    char *callstate_vars[AMI_CALLSTATE_MAX_VARIABLES];
} ami_engine_config_t;

/* Defaults only (no servers). */
void ami_config_init(ami_engine_config_t *cfg);

/* Load and validate. 0 on success; -1 with every problem in errs. On -1 the
 * config is freed (nothing to release). */
int ami_config_load(const char *path, ami_engine_config_t *cfg, ami_config_errors_t *errs);

/* The same from text in memory (tools, fuzzing): name stands for the file
 * in messages, and relative paths resolve against its folder. */
int ami_config_load_text(const char *name, const char *text, size_t len, ami_engine_config_t *cfg,
                         ami_config_errors_t *errs);

void ami_config_free(ami_engine_config_t *cfg);

/* Do two configs differ in their ha section (which needs a restart)? */
bool ami_config_ha_changed(const ami_engine_config_t *a, const ami_engine_config_t *b);

/* Print a config summary without secrets (for --check-config). */
void ami_config_describe(const ami_engine_config_t *cfg, ami_buf_t *out);

#endif
