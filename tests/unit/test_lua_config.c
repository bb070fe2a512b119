/* The config loader (engine/cli/config*.c): values of a full config,
 * defaults, relative paths, the three secret sources and that no secret
 * value ever reaches describe or an error message; then a catalogue of bad
 * configs, each with the exact fragment of the message the operator sees.
 *
 * The loader is the ami_config library, linked into the program and into
 * every test named test_lua_config*. */

#include "cli/config.h"
#include "cli/config_internal.h"
#include "util/alloc.h"

#include <lauxlib.h>
#include <lua.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIXTURES AMI_SOURCE_DIR "/tests/fixtures/configs"

static char tmpdir[256];

/* ---- helpers ------------------------------------------------------------------------------ */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

/* Load; on an unexpected result, print every message so the failure explains itself. */
static int load(const char *path, ami_engine_config_t *cfg, ami_config_errors_t *errs)
{
    int rc = ami_config_load(path, cfg, errs);
    for (size_t i = 0; i < errs->count; i++)
        print_message("  config error: %s\n", errs->msg[i]);
    return rc;
}

static bool has_error(const ami_config_errors_t *errs, const char *fragment)
{
    for (size_t i = 0; i < errs->count; i++)
        if (strstr(errs->msg[i], fragment))
            return true;
    return false;
}

static void expect_error(const ami_config_errors_t *errs, const char *fragment)
{
    if (!has_error(errs, fragment))
        fail_msg("no error contains: %s", fragment);
}

static char *describe(const ami_engine_config_t *cfg)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_config_describe(cfg, &out);
    char *s = strndup(out.data ? out.data : "", out.len);
    ami_buf_deinit(&out);
    return s;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ami_config_test_XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    setenv("AMI_TEST_CFG_SECRET_PBX1", "env-secret-pbx1", 1);
    setenv("AMI_TEST_CFG_SECRET_PBX2", "env-secret-pbx2", 1);
    setenv("AMI_TEST_CFG_EMPTY", "", 1);
    unsetenv("AMI_TEST_CFG_UNSET");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- valid configs -------------------------------------------------------------------------- */

static void full_config_values(void **state)
{
    (void)state;
    int64_t live = ami_alloc_live_bytes();
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(FIXTURES "/good.lua", &cfg, &errs), 0);
    assert_int_equal(errs.count, 0);
    assert_string_equal(cfg.path, FIXTURES "/good.lua");
    assert_int_equal(cfg.nservers, 2);

    const ami_server_options_t *a = &cfg.servers[0], *b = &cfg.servers[1];
    assert_string_equal(a->server_key, "pbx1");
    assert_string_equal(a->host, "10.0.0.5");
    assert_int_equal(a->port, 5038);
    assert_string_equal(a->username, "engine");
    assert_string_equal(a->secret, "env-secret-pbx1");
    assert_int_equal(a->auth, AMI_AUTH_MD5);
    assert_true(a->enforce_ip_endpoints);
    assert_string_equal(a->events, "call,system");
    assert_int_equal(a->nfilters, 2);
    assert_string_equal(a->filters[0], "Event: Hangup");
    assert_string_equal(a->filters[1], "Event: Newchannel");
    assert_int_equal(a->connect_timeout_ms, 3000); /* from defaults */
    assert_int_equal(a->login_timeout_ms, 4000);
    assert_int_equal(a->action_timeout_ms, 15000);
    assert_int_equal(a->backoff_initial_ms, 250);
    assert_int_equal(a->backoff_max_ms, 20000);
    assert_int_equal(a->heartbeat_interval_ms, 5000); /* built-in default */

    assert_string_equal(b->host, "[fd00::6]");
    assert_int_equal(b->port, 5039);
    assert_string_equal(b->secret, "inline-secret-pbx2");
    assert_int_equal(b->auth, AMI_AUTH_PLAIN);
    assert_null(b->events);
    assert_int_equal(b->heartbeat_interval_ms, 2000);
    assert_int_equal(b->heartbeat_timeout_ms, 1500);
    assert_int_equal(b->heartbeat_max_failures, 5);
    assert_int_equal(b->max_messages[AMI_STRATEGY_LIST], 5000);
    assert_int_equal(b->max_messages[AMI_STRATEGY_AUTO], 5000);
    assert_int_equal(b->max_messages[AMI_STRATEGY_COMMAND], 20000);
    assert_int_equal(b->max_messages[AMI_STRATEGY_EVENT], 8);
    assert_int_equal(b->parser.max_line, 8192);
    assert_int_equal(b->parser.max_headers, 512);
    assert_int_equal(b->parser.max_message, 1048576);
    assert_int_equal(b->write_hwm, 262144);
    assert_int_equal(b->read_chunk, 16384);
    assert_int_equal(b->max_pending, 256);

    assert_string_equal(cfg.lua.scripts_dir, FIXTURES "/scripts");
    assert_string_equal(cfg.lua.lua_path, FIXTURES "/lib/?.lua;/opt/ami/lua/?.lua");
    assert_int_equal(cfg.lua.handler_budget_ms, 50);
    assert_int_equal(cfg.lua.load_budget_ms, 3000);
    assert_int_equal(cfg.lua.reload_grace_ms, 60000);
    assert_int_equal(cfg.lua.max_coroutines, 5000);
    assert_int_equal(cfg.lua.max_handlers, 200);
    assert_int_equal(cfg.lua.max_waiters, 7000);
    assert_int_equal(cfg.lua.memory_limit, (size_t)128 << 20);
    assert_false(cfg.lua.watch_scripts);
    assert_int_equal(cfg.lua.reload_debounce_ms, 500);

    assert_true(cfg.metrics_enabled);
    assert_string_equal(cfg.metrics_ip, "0.0.0.0");
    assert_int_equal(cfg.metrics_port, 9200);
    assert_int_equal(cfg.health_quorum, 1);
    assert_int_equal(cfg.log_level, AMI_LOG_DEBUG);
    assert_int_equal(cfg.log_format, AMI_LOG_FMT_JSON);
    assert_int_equal(cfg.summary_interval_ms, 60000);
    assert_int_equal(cfg.route, AMI_ROUTE_LEAST_PENDING);
    assert_int_equal(cfg.drain_grace_ms, 20000);
    assert_int_equal(cfg.busy_poll_us, 50);
    ami_config_free(&cfg);
    assert_int_equal(ami_alloc_live_bytes(), live);
}

static void minimal_config_takes_defaults(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(FIXTURES "/minimal.lua", &cfg, &errs), 0);
    ami_server_options_t d;
    ami_server_options_default(&d);
    const ami_server_options_t *o = &cfg.servers[0];
    assert_int_equal(o->port, 5038);
    assert_int_equal(o->auth, AMI_AUTH_PLAIN);
    assert_true(o->enforce_ip_endpoints);
    assert_int_equal(o->heartbeat_interval_ms, d.heartbeat_interval_ms);
    assert_int_equal(o->backoff_max_ms, d.backoff_max_ms);
    assert_int_equal(o->write_hwm, d.write_hwm);
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    assert_string_equal(cfg.lua.scripts_dir, FIXTURES "/scripts"); /* the folder next to the file */
    assert_null(cfg.lua.lua_path);
    assert_int_equal(cfg.lua.handler_budget_ms, lc.handler_budget_ms);
    assert_int_equal(cfg.lua.memory_limit, lc.memory_limit);
    assert_true(cfg.lua.watch_scripts);
    assert_true(cfg.metrics_enabled);
    assert_string_equal(cfg.metrics_ip, "127.0.0.1");
    assert_int_equal(cfg.metrics_port, 9100);
    assert_int_equal(cfg.health_quorum, 0);
    assert_int_equal(cfg.log_level, AMI_LOG_INFO);
    assert_int_equal(cfg.log_format, AMI_LOG_FMT_LOGFMT);
    assert_int_equal(cfg.route, AMI_ROUTE_FIRST_HEALTHY);
    assert_int_equal(cfg.drain_grace_ms, 10000);
    assert_int_equal(cfg.busy_poll_us, 0);
    assert_int_equal(cfg.summary_interval_ms, 0);
    ami_config_free(&cfg);
}

static void defaults_applied_and_overridden(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(FIXTURES "/defaults.lua", &cfg, &errs), 0);
    const ami_server_options_t *a = &cfg.servers[0], *b = &cfg.servers[1];
    assert_int_equal(a->port, 5040);
    assert_int_equal(a->heartbeat_interval_ms, 1000);
    assert_string_equal(a->username, "shared");
    assert_string_equal(a->secret, "shared-secret");
    assert_false(a->enforce_ip_endpoints);
    assert_string_equal(a->host, "pbx1.example.net"); /* accepted: enforcement is off */
    assert_int_equal(b->port, 5038);
    assert_int_equal(b->heartbeat_interval_ms, 0);
    assert_string_equal(b->username, "own");
    assert_string_equal(b->secret, "env-secret-pbx2"); /* its own source replaces the default's */
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "pbx1: pbx1.example.net:5040, user shared, auth plain, secret inline"));
    assert_non_null(strstr(d, "pbx2: 10.0.0.6:5038, user own, auth plain, secret from env AMI_TEST_CFG_SECRET_PBX2"));
    assert_non_null(strstr(d, "heartbeat off"));
    free(d);
    ami_config_free(&cfg);
}

static void relative_paths_resolve_against_config_folder(void **state)
{
    (void)state;
    mkdir(tmp_path("rel"), 0700);
    mkdir(tmp_path("rel/handlers"), 0700);
    write_file(tmp_path("rel/pw.txt"), "file-secret\n");
    write_file(tmp_path("rel/engine.lua"),
               "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret_file = 'pw.txt' } }\n"
               "scripts = { dir = './handlers', lua_path = 'lib/?.lua;;' }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("rel/engine.lua"), &cfg, &errs), 0);
    char want[600];
    snprintf(want, sizeof want, "%s/rel/handlers", tmpdir);
    assert_string_equal(cfg.lua.scripts_dir, want);
    snprintf(want, sizeof want, "%s/rel/lib/?.lua", tmpdir);
    assert_string_equal(cfg.lua.lua_path, want);
    assert_string_equal(cfg.servers[0].secret, "file-secret");
    snprintf(want, sizeof want, "secret from file %s/rel/pw.txt", tmpdir);
    char *d = describe(&cfg);
    assert_non_null(strstr(d, want));
    free(d);
    ami_config_free(&cfg);
}

static void no_scripts_folder_means_no_scripts(void **state)
{
    (void)state;
    mkdir(tmp_path("bare"), 0700);
    write_file(tmp_path("bare/engine.lua"),
               "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret = 'pw' } }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("bare/engine.lua"), &cfg, &errs), 0);
    assert_null(cfg.lua.scripts_dir);
    ami_config_free(&cfg);
    write_file(tmp_path("bare/engine.lua"),
               "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret = 'pw' } }\n"
               "scripts = { dir = false }\n");
    assert_int_equal(load(tmp_path("bare/engine.lua"), &cfg, &errs), 0);
    assert_null(cfg.lua.scripts_dir);
    ami_config_free(&cfg);
}

static void secret_inline(void **state)
{
    (void)state;
    write_file(tmp_path("inline.lua"),
               "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret = 'inline-v@lue' } }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("inline.lua"), &cfg, &errs), 0);
    assert_string_equal(cfg.servers[0].secret, "inline-v@lue");
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "secret inline"));
    assert_null(strstr(d, "inline-v@lue"));
    free(d);
    ami_config_free(&cfg);
}

static void secret_from_env(void **state)
{
    (void)state;
    write_file(tmp_path("env.lua"), "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', "
                                    "secret_env = 'AMI_TEST_CFG_SECRET_PBX1' } }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("env.lua"), &cfg, &errs), 0);
    assert_string_equal(cfg.servers[0].secret, "env-secret-pbx1");
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "secret from env AMI_TEST_CFG_SECRET_PBX1"));
    assert_null(strstr(d, "env-secret-pbx1"));
    free(d);
    ami_config_free(&cfg);
}

static void secret_from_file_strips_line_end(void **state)
{
    (void)state;
    write_file(tmp_path("crlf.secret"), "file-v@lue\r\n");
    char text[800];
    snprintf(text, sizeof text, "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', "
                                "secret_file = '%s' } }\n", tmp_path("crlf.secret"));
    write_file(tmp_path("file.lua"), text);
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("file.lua"), &cfg, &errs), 0);
    assert_string_equal(cfg.servers[0].secret, "file-v@lue");
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "secret from file "));
    assert_null(strstr(d, "file-v@lue"));
    free(d);
    ami_config_free(&cfg);
}

static void a_world_readable_secret_file_is_a_warning(void **state)
{
    (void)state;
    write_file(tmp_path("open.secret"), "pw\n");
    chmod(tmp_path("open.secret"), 0644);
    write_file(tmp_path("closed.secret"), "pw\n");
    chmod(tmp_path("closed.secret"), 0600);
    char text[1200];
    snprintf(text, sizeof text,
             "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret_file = '%s' },\n"
             "  { key = 'pbx2', host = '10.0.0.6', username = 'e', secret_file = '%s' } }\n",
             tmp_path("open.secret"), tmp_path("closed.secret"));
    write_file(tmp_path("perm.lua"), text);
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("perm.lua"), &cfg, &errs), 0);
    assert_int_equal(cfg.nwarnings, 1);
    assert_non_null(strstr(cfg.warnings[0], "open.secret\" is readable by every user of the machine (mode 644)"));
    assert_non_null(strstr(cfg.warnings[0], "chmod 600"));
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "warning: servers[1]"));
    free(d);
    ami_config_free(&cfg);
}

/* Opening a FIFO waits for a writer, reading a terminal for a line: either
 * would hold the loop on SIGHUP. Loaded in a child, so a wait fails the
 * test instead of hanging it. */
static void secret_file_that_would_block_is_refused_at_once(void **state)
{
    (void)state;
    const char *fifo = tmp_path("secret.fifo");
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char text[800];
    snprintf(text, sizeof text, "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', "
                                "secret_file = '%s' } }\n", fifo);
    write_file(tmp_path("fifo.lua"), text);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ami_engine_config_t cfg;
        ami_config_errors_t errs;
        int rc = ami_config_load(tmp_path("fifo.lua"), &cfg, &errs);
        _exit(rc == -1 && has_error(&errs, "is not a regular file (a pipe, device or folder)") ? 0 : 1);
    }
    int status = -1;
    for (int i = 0; i < 300 && waitpid(pid, &status, WNOHANG) == 0; i++)
        usleep(10000);
    if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("loading a config whose secret_file is a FIFO blocked for 3 s");
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unlink(fifo);
}

static void describe_never_shows_secrets(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(FIXTURES "/good.lua", &cfg, &errs), 0);
    char *d = describe(&cfg);
    print_message("%s", d);
    assert_null(strstr(d, "env-secret-pbx1"));
    assert_null(strstr(d, "inline-secret-pbx2"));
    assert_non_null(strstr(d, "pbx1: 10.0.0.5:5038, user engine, auth md5, secret from env AMI_TEST_CFG_SECRET_PBX1"));
    assert_non_null(strstr(d, "pbx2: [fd00::6]:5039, user engine2, auth plain, secret inline"));
    assert_non_null(strstr(d, "heartbeat every 2000 ms (timeout 1500 ms, 5 failures close), enforce_ip_endpoints on"));
    assert_non_null(strstr(d, "scripts: " FIXTURES "/scripts (watch off"));
    assert_non_null(strstr(d, "metrics: listen 0.0.0.0:9200, health quorum 1 of 2"));
    assert_non_null(strstr(d, "log: level debug, format json, summary every 60000 ms"));
    assert_non_null(strstr(d, "routing: least_pending"));
    free(d);
    ami_config_free(&cfg);
}

/* What a message quotes from the config reaches the terminal with no
 * control character in it: a CR would hide the start of the line. */
static void control_characters_never_reach_a_message(void **state)
{
    (void)state;
    write_file(tmp_path("ctl.lua"),
               "servers = { { key = 'pb\\rx', host = '10.0.0.1\\r', username = 'e', secret = 's' },\n"
               "            { key = 'pbx2', host = '10.0.0.2', port = 5039, username = 'e', secret = 's',\n"
               "              tls = { ca_file = '/etc/hostname', server_name = 'pbx\\r\\0271' } } }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("ctl.lua"), &cfg, &errs), -1);
    expect_error(&errs, "servers[1].key: \"pb?x\"");
    expect_error(&errs, "servers[2] (pbx2).tls.server_name \"pbx??1\" is not a host name");
    for (size_t i = 0; i < errs.count; i++)
        for (const char *p = errs.msg[i]; *p; p++)
            assert_false((unsigned char)*p < 0x20 || *p == 0x7f);
}

static void secrets_never_in_errors(void **state)
{
    (void)state;
    write_file(tmp_path("leak.lua"),
               "servers = { { key = 'pbx1', host = 'pbx.example.com', username = 'e', secret = 'top-s3cret\\n' },\n"
               "            { key = 'pbx2', host = '10.0.0.6', username = 'e', secret = 424242 } }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("leak.lua"), &cfg, &errs), -1);
    expect_error(&errs, "servers[1] (pbx1).secret: contains a line break");
    expect_error(&errs, "servers[2] (pbx2).secret: expected a string, got number");
    for (size_t i = 0; i < errs.count; i++) {
        assert_null(strstr(errs.msg[i], "top-s3cret"));
        assert_null(strstr(errs.msg[i], "424242"));
    }
}

static void metrics_ipv6_and_off(void **state)
{
    (void)state;
    write_file(tmp_path("m6.lua"), "servers = { { key = 'a', host = '::1', username = 'e', secret = 'pw' } }\n"
                                   "metrics = { listen = '[::1]:9300', health_quorum = 'all' }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("m6.lua"), &cfg, &errs), 0);
    assert_string_equal(cfg.metrics_ip, "::1");
    assert_int_equal(cfg.metrics_port, 9300);
    assert_int_equal(cfg.health_quorum, 0);
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "listen [::1]:9300"));
    assert_non_null(strstr(d, "a: [::1]:5038"));
    free(d);
    ami_config_free(&cfg);
    write_file(tmp_path("moff.lua"), "servers = { { key = 'a', host = '10.1.1.1', username = 'e', secret = 'pw' } }\n"
                                     "metrics = { listen = false }\n");
    assert_int_equal(load(tmp_path("moff.lua"), &cfg, &errs), 0);
    assert_false(cfg.metrics_enabled);
    ami_config_free(&cfg);
    /* port 0: a free port chosen at start (the engine logs it) */
    write_file(tmp_path("mzero.lua"), "servers = { { key = 'a', host = '10.1.1.1', username = 'e', secret = 'pw' } }\n"
                                      "metrics = { listen = '127.0.0.1:0' }\n");
    assert_int_equal(load(tmp_path("mzero.lua"), &cfg, &errs), 0);
    assert_true(cfg.metrics_enabled);
    assert_int_equal(cfg.metrics_port, 0);
    d = describe(&cfg);
    assert_non_null(strstr(d, "listen 127.0.0.1:0 (a free port chosen at start, logged)"));
    free(d);
    ami_config_free(&cfg);
}

static void metrics_endpoint_limits(void **state)
{
    (void)state;
    write_file(tmp_path("mlim.lua"), "servers = { { key = 'a', host = '10.1.1.1', username = 'e', secret = 'pw' } }\n"
                                     "metrics = { max_connections = 64, request_timeout_ms = 1500,\n"
                                     "  response_timeout_ms = 20000, max_request_bytes = 4096, max_response_mb = 8,\n"
                                     "  max_buffered_mb = 32, listen_backlog = 512 }\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("mlim.lua"), &cfg, &errs), 0);
    const ami_http_config_t *hc = &cfg.metrics_http;
    assert_int_equal(hc->max_connections, 64);
    assert_int_equal(hc->request_timeout_ms, 1500);
    assert_int_equal(hc->response_timeout_ms, 20000);
    assert_int_equal(hc->max_request, 4096);
    assert_int_equal(hc->max_response, (size_t)8 << 20);
    assert_int_equal(hc->max_buffered, (size_t)32 << 20);
    assert_int_equal(hc->backlog, 512);
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "  connections: max 64 (backlog 512); request head 1500 ms, 4096 bytes; answer 20000 ms, "
                              "8 MiB; 32 MiB held for slow readers\n"));
    free(d);
    ami_config_free(&cfg);

    assert_int_equal(load(FIXTURES "/minimal.lua", &cfg, &errs), 0); /* unset: the endpoint's defaults */
    ami_http_config_t def;
    ami_http_config_default(&def);
    assert_null(cfg.metrics_http.bind_ip);
    assert_int_equal(cfg.metrics_http.max_connections, def.max_connections);
    assert_int_equal(cfg.metrics_http.request_timeout_ms, def.request_timeout_ms);
    assert_int_equal(cfg.metrics_http.response_timeout_ms, def.response_timeout_ms);
    assert_int_equal(cfg.metrics_http.max_request, def.max_request);
    assert_int_equal(cfg.metrics_http.max_response, def.max_response);
    assert_int_equal(cfg.metrics_http.max_buffered, def.max_buffered);
    assert_int_equal(cfg.metrics_http.backlog, def.backlog);
    ami_config_free(&cfg);
}

/* Text in memory loads exactly as the same text in a file would. */
static void config_text_from_memory(void **state)
{
    (void)state;
    int64_t live = ami_alloc_live_bytes();
    static const char text[] = "servers = { { key = 'a', host = '10.1.1.1', username = 'e', secret = 'pw' } }\n"
                               "scripts = { dir = 'scripts' }\nmetrics = { max_connections = 9 }\n";
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(ami_config_load_text(FIXTURES "/in-memory.lua", text, sizeof text - 1, &cfg, &errs), 0);
    assert_string_equal(cfg.path, FIXTURES "/in-memory.lua");
    assert_string_equal(cfg.lua.scripts_dir, FIXTURES "/scripts"); /* relative to the name's folder */
    assert_int_equal(cfg.metrics_http.max_connections, 9);
    ami_config_free(&cfg);
    static const char bad[] = "servers = {\n  { key = 'a' \n";
    assert_int_equal(ami_config_load_text("mem.lua", bad, sizeof bad - 1, &cfg, &errs), -1);
    expect_error(&errs, "mem.lua:3:");
    assert_int_equal(ami_config_load_text("nul.lua", "x = '\0'", 7, &cfg, &errs), -1); /* the length counts */
    expect_error(&errs, "x: unknown setting");
    assert_int_equal(ami_alloc_live_bytes(), live);
}

static int dump_to_buf(lua_State *L, const void *p, size_t n, void *ud)
{
    (void)L;
    return ami_buf_append(ud, p, n);
}

/* LuaJIT runs bytecode unverified: a binary config could read and write
 * anywhere. It is refused, from a file and from memory, whatever it holds. */
static void compiled_config_is_refused(void **state)
{
    (void)state;
    lua_State *L = luaL_newstate();
    assert_int_equal(luaL_loadstring(L, "servers = { { key = 'a', host = '10.1.1.1', username = 'e', "
                                        "secret = 'pw' } }"), 0);
    ami_buf_t bc;
    ami_buf_init(&bc, 0);
    assert_int_equal(lua_dump(L, dump_to_buf, &bc), 0);
    lua_close(L);
    FILE *f = fopen(tmp_path("compiled.lua"), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bc.data, 1, bc.len, f), bc.len);
    assert_int_equal(fclose(f), 0);
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(ami_config_load(tmp_path("compiled.lua"), &cfg, &errs), -1);
    expect_error(&errs, "compiled.lua: is compiled Lua (bytecode), which is refused; give the config's Lua text");
    assert_int_equal(ami_config_load_text("mem.lua", bc.data, bc.len, &cfg, &errs), -1);
    expect_error(&errs, "mem.lua: is compiled Lua (bytecode), which is refused");
    ami_buf_deinit(&bc);
}

static void init_and_double_free_are_safe(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_init(&cfg);
    assert_string_equal(cfg.metrics_ip, "127.0.0.1");
    assert_int_equal(cfg.nservers, 0);
    ami_config_free(&cfg);
    ami_config_free(&cfg);
    ami_config_errors_t errs;
    int64_t live = ami_alloc_live_bytes();
    assert_int_equal(load(FIXTURES "/bad_many.lua", &cfg, &errs), -1);
    assert_int_equal(ami_alloc_live_bytes(), live); /* a failed load leaves nothing behind */
    ami_config_free(&cfg);                          /* and freeing it again is harmless */
}

/* ---- bad files ------------------------------------------------------------------------------- */

static void load_expect_error(const char *path, const char *fragment)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(path, &cfg, &errs), -1);
    assert_true(errs.count >= 1);
    expect_error(&errs, fragment);
    assert_int_equal(cfg.nservers, 0);
}

static void syntax_error_names_file_and_line(void **state)
{
    (void)state;
    load_expect_error(FIXTURES "/bad_syntax.lua", "bad_syntax.lua:4: '}' expected (to close '{' at line 2)");
    load_expect_error(FIXTURES "/bad_syntax.lua", "; fix the Lua syntax");
}

static void runtime_error_names_file_and_line(void **state)
{
    (void)state;
    load_expect_error(FIXTURES "/bad_runtime.lua", "bad_runtime.lua:3: attempt to index");
}

static void endless_loop_is_stopped(void **state)
{
    (void)state;
    load_expect_error(FIXTURES "/bad_loop.lua", "bad_loop.lua:4: config did not finish (endless loop?)");
}

static void endless_loop_inside_pcall_is_stopped(void **state)
{
    (void)state;
    load_expect_error(FIXTURES "/bad_loop_pcall.lua", "config did not finish (endless loop?)");
}

static void endless_loop_in_an_xpcall_handler_is_stopped(void **state)
{
    (void)state;
    alarm(60); /* before the guard, this hung --check-config and SIGHUP for good */
    load_expect_error(FIXTURES "/bad_loop_xpcall.lua", "config did not finish (endless loop?)");
    load_expect_error(FIXTURES "/bad_loop_nested.lua", "config did not finish (endless loop?)");
    alarm(0);
}

static void a_pathological_pattern_is_stopped(void **state)
{
    (void)state;
    alarm(60); /* LuaJIT's own matcher takes about 20 s here, in one uninterruptible call */
    load_expect_error(FIXTURES "/bad_pattern.lua", "pattern matching stopped: over its step budget");
    alarm(0);
}

static void missing_file(void **state)
{
    (void)state;
    load_expect_error(FIXTURES "/no_such_config.lua",
                      "no_such_config.lua: cannot read the config file (No such file or directory)");
}

static void many_errors_all_reported(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(FIXTURES "/bad_many.lua", &cfg, &errs), -1);
    assert_int_equal(errs.count, 7);
    expect_error(&errs, "servers[1] (pbx1).host: \"pbx1.example.net\" is not an IP address");
    expect_error(&errs, "servers[2] (pbx1).key: \"pbx1\" is also the key of servers[1]");
    expect_error(&errs, "servers[2] (pbx1).port: expected an integer from 1 to 65535, got number 0");
    expect_error(&errs, "servers[3] (pbx3).username: missing");
    expect_error(&errs, "metrics.listen: \"localhost:9100\" is not ip:port");
    expect_error(&errs, "log.level: \"verbose\" is not allowed");
    expect_error(&errs, "routing: \"random\" is not allowed");
}

static void too_many_errors_are_counted(void **state)
{
    (void)state;
    char text[4096] = "servers = { { key = 'a', host = '10.0.0.1', username = 'e', secret = 'pw' } }\n";
    for (int i = 0; i < 80; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "zz%d = 1\n", i);
    write_file(tmp_path("flood.lua"), text);
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(ami_config_load(tmp_path("flood.lua"), &cfg, &errs), -1);
    assert_int_equal(errs.count, AMI_CONFIG_MAX_ERRORS);
    assert_non_null(strstr(errs.msg[AMI_CONFIG_MAX_ERRORS - 1], "... and 17 more errors"));
}

/* ---- the catalogue: one small config, one mistake, one exact message ------------------------ */

typedef struct bad_case {
    const char *name;
    const char *lua;
    const char *fragment;
} bad_case_t;

#define SRV(extra) "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'engine', secret = 'pw'" extra " } }\n"

static const bad_case_t CASES[] = {
    {"unknown_top_level_key_suggests", SRV("") "serverz = {}\n",
     "serverz: unknown setting; did you mean \"servers\"?"},
    {"unknown_top_level_key_global_helper", SRV("") "function helper() end\n",
     "helper: unknown setting; the config may set servers, defaults, scripts, metrics, log, routing, "
     "drain_grace_ms, http, ha, callstate and busy_poll_us (make helper variables local)"},
    {"unknown_server_key_suggests", SRV(", heartbeat_intervall_ms = 1000"),
     "servers[1] (pbx1): unknown option \"heartbeat_intervall_ms\"; did you mean \"heartbeat_interval_ms\"?"},
    {"unknown_section_key_suggests", SRV("") "scripts = { dirr = 'x' }\n",
     "scripts: unknown option \"dirr\"; did you mean \"dir\"?"},
    {"wrong_type_string_for_integer", SRV(", connect_timeout_ms = '5s'"),
     "servers[1] (pbx1).connect_timeout_ms: expected an integer from 1 to 600000, got string \"5s\""},
    {"wrong_type_boolean", SRV(", enforce_ip_endpoints = 'no'"),
     "servers[1] (pbx1).enforce_ip_endpoints: expected true or false, got string \"no\""},
    {"wrong_type_section", SRV("") "log = 'debug'\n", "log: expected a table { ... }, got string \"debug\""},
    {"wrong_type_server_entry", "servers = { 'pbx1' }\n",
     "servers[1]: expected a table of server options, got string \"pbx1\""},
    {"servers_not_a_list", "servers = { pbx1 = { host = '10.0.0.5' } }\n",
     "servers.pbx1: servers is a list, write servers = { { key = \"pbx1\", ... }, ... }"},
    {"port_out_of_range", SRV(", port = 70000"),
     "servers[1] (pbx1).port: expected an integer from 1 to 65535, got number 70000"},
    {"timeout_not_whole", SRV(", action_timeout_ms = 1500.5"),
     "servers[1] (pbx1).action_timeout_ms: expected an integer from 1 to 3600000, got number 1500.5"},
    {"missing_key", "servers = { { host = '10.0.0.5', username = 'e', secret = 'pw' } }\n",
     "servers[1].key: missing; give the server a short unique name"},
    {"bad_key_characters", "servers = { { key = 'pbx 1', host = '10.0.0.5', username = 'e', secret = 'pw' } }\n",
     "servers[1].key: \"pbx 1\" is not a valid key; use 1 to 63 characters of A-Z a-z 0-9 _ . -"},
    {"missing_host", "servers = { { key = 'pbx1', username = 'e', secret = 'pw' } }\n",
     "servers[1] (pbx1).host: missing; give the Asterisk server's IP address"},
    {"missing_username", "servers = { { key = 'pbx1', host = '10.0.0.5', secret = 'pw' } }\n",
     "servers[1] (pbx1).username: missing"},
    {"missing_secret", "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e' } }\n",
     "servers[1] (pbx1).secret: missing; give one of secret_env = \"VAR\", secret_file = \"/path\" or secret = \"...\""},
    {"two_secret_sources", SRV(", secret_env = 'AMI_TEST_CFG_SECRET_PBX1'"),
     "servers[1] (pbx1): more than one secret source (secret, secret_env); keep exactly one of secret, "
     "secret_env, secret_file"},
    {"secret_env_unset",
     "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret_env = 'AMI_TEST_CFG_UNSET' } }\n",
     "servers[1] (pbx1).secret_env: the environment variable AMI_TEST_CFG_UNSET is not set; export it"},
    {"secret_env_empty",
     "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret_env = 'AMI_TEST_CFG_EMPTY' } }\n",
     "servers[1] (pbx1).secret_env: the environment variable AMI_TEST_CFG_EMPTY is empty"},
    {"secret_file_unreadable",
     "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret_file = '/nonexistent/pw' } }\n",
     "servers[1] (pbx1).secret_file: cannot read \"/nonexistent/pw\": No such file or directory; check the path"},
    {"secret_file_is_a_folder",
     "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret_file = '/' } }\n",
     "servers[1] (pbx1).secret_file: \"/\" is not a regular file (a pipe, device or folder)"},
    {"duplicate_server_key",
     "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret = 'pw' },\n"
     "            { key = 'pbx2', host = '10.0.0.6', username = 'e', secret = 'pw' },\n"
     "            { key = 'pbx1', host = '10.0.0.7', username = 'e', secret = 'pw' } }\n",
     "servers[3] (pbx1).key: \"pbx1\" is also the key of servers[1]; every server needs its own key"},
    {"hostname_with_enforcement_on",
     "servers = { { key = 'pbx2', host = 'pbx.example.com', username = 'e', secret = 'pw' } }\n",
     "servers[1] (pbx2).host: \"pbx.example.com\" is not an IP address and enforce_ip_endpoints is on (DNS "
     "lookups can block the engine); use the IP, or set enforce_ip_endpoints = false"},
    {"host_with_spaces", SRV(", host = '10.0.0.5 '") "",
     "servers[1] (pbx1).host: \"10.0.0.5 \" contains spaces"},
    {"username_header_injection", SRV(", username = 'e\\r\\nAction: Originate'"),
     "servers[1] (pbx1).username: contains a line break; AMI header values cannot hold one"},
    {"filter_header_injection", SRV(", filters = { 'Event: Hangup\\nAction: X' }"),
     "servers[1] (pbx1).filters[1]: contains a line break"},
    {"too_many_filters",
     SRV(", filters = { 'a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a',"
         "'a','a','a','a','a','a','a','a','a','a','a','a','a' }"),
     "servers[1] (pbx1).filters: 33 filters, at most 32 are allowed"},
    {"bad_event_class", SRV(", events = 'call,sytem'"),
     "servers[1] (pbx1).events: \"sytem\" is not an event class (did you mean \"system\"?)"},
    {"bad_auth", SRV(", auth = 'sha1'"), "servers[1] (pbx1).auth: \"sha1\" is not allowed; use \"plain\" or \"md5\""},
    {"backoff_initial_above_max", SRV(", backoff_initial_ms = 5000, backoff_max_ms = 1000"),
     "servers[1] (pbx1): backoff_initial_ms (5000) is larger than backoff_max_ms (1000)"},
    {"heartbeat_failures_zero", SRV(", heartbeat_max_failures = 0"),
     "servers[1] (pbx1).heartbeat_max_failures: expected an integer from 1 to 1000, got number 0"},
    {"defaults_cannot_hold_key", SRV("") "defaults = { key = 'x' }\n",
     "defaults.key: each server needs its own key; move it into the server's table"},
    {"defaults_bad_value_reported_once",
     "defaults = { port = 'x' }\n"
     "servers = { { key = 'a', host = '10.0.0.5', username = 'e', secret = 'pw' },\n"
     "            { key = 'b', host = '10.0.0.6', username = 'e', secret = 'pw' } }\n",
     "defaults.port: expected an integer from 1 to 65535, got string \"x\""},
    {"metrics_listen_hostname", SRV("") "metrics = { listen = 'localhost:9100' }\n",
     "metrics.listen: \"localhost:9100\" is not ip:port with an IP address and a port from 0 to 65535; write "
     "\"127.0.0.1:9100\", \"[::1]:9100\", or false to turn the endpoint off"},
    {"metrics_listen_no_port", SRV("") "metrics = { listen = '127.0.0.1' }\n",
     "metrics.listen: \"127.0.0.1\" is not ip:port"},
    {"metrics_listen_port_too_big", SRV("") "metrics = { listen = '127.0.0.1:65536' }\n",
     "metrics.listen: \"127.0.0.1:65536\" is not ip:port"},
    {"metrics_listen_bare_ipv6", SRV("") "metrics = { listen = '::1:9100' }\n",
     "metrics.listen: \"::1:9100\" looks like a bare IPv6 address; put it in brackets"},
    {"metrics_listen_true", SRV("") "metrics = { listen = true }\n",
     "metrics.listen: expected \"ip:port\" or false, got boolean true"},
    {"health_quorum_too_big", SRV("") "metrics = { health_quorum = 3 }\n",
     "metrics.health_quorum: 3 is more than the 1 server configured; use \"all\" or a number from 1 to 1"},
    {"health_quorum_wrong_word", SRV("") "metrics = { health_quorum = 'most' }\n",
     "metrics.health_quorum: expected \"all\" or a number of servers, got string \"most\""},
    {"bad_log_level", SRV("") "log = { level = 'verbose' }\n",
     "log.level: \"verbose\" is not allowed; use \"debug\", \"info\", \"warn\" or \"error\""},
    {"bad_log_format", SRV("") "log = { format = 'xml' }\n",
     "log.format: \"xml\" is not allowed; use \"logfmt\" or \"json\""},
    {"bad_routing", SRV("") "routing = 'random'\n",
     "routing: \"random\" is not allowed; use \"first_healthy\", \"round_robin\" or \"least_pending\""},
    {"routing_wrong_type", SRV("") "routing = 1\n",
     "routing: expected one of \"first_healthy\", \"round_robin\" or \"least_pending\", got number 1"},
    {"scripts_dir_missing", SRV("") "scripts = { dir = '/nonexistent/scripts' }\n",
     "scripts.dir: \"/nonexistent/scripts\" is not a readable folder (No such file or directory); create it, "
     "or set dir = false to run without scripts"},
    {"scripts_dir_is_a_file", SRV("") "scripts = { dir = '/etc/hostname' }\n",
     "scripts.dir: \"/etc/hostname\" is a file, not a folder"},
    {"scripts_lua_path_without_mark", SRV("") "scripts = { lua_path = '/opt/lib' }\n",
     "scripts.lua_path: entry \"/opt/lib\" has no \"?\"; write a template such as \"/opt/lib/?.lua\""},
    {"scripts_budget_zero", SRV("") "scripts = { handler_budget_ms = 0 }\n",
     "scripts.handler_budget_ms: expected an integer from 1 to 60000, got number 0"},
    {"drain_grace_negative", SRV("") "drain_grace_ms = -1\n",
     "drain_grace_ms: expected an integer from 0 to 3600000, got number -1"},
    {"busy_poll_too_long", SRV("") "busy_poll_us = 20000\n",
     "busy_poll_us: expected an integer from 0 to 10000, got number 20000"},
    {"busy_poll_nan", SRV("") "busy_poll_us = 0/0\n", "busy_poll_us: expected an integer from 0 to 10000"},
    {"busy_poll_string", SRV("") "busy_poll_us = '50'\n", "busy_poll_us: expected an integer from 0 to 10000"},
    {"no_servers_at_all", "log = { level = 'info' }\n", "servers: no servers configured; add servers = {"},
    {"empty_server_list", "servers = {}\n", "servers: the list is empty; add at least one server"},
    {"sandbox_has_no_io", SRV("") "local f = io.open('/etc/passwd')\n", "attempt to index global 'io' (a nil value)"},
    {"sandbox_has_no_os_execute", SRV("") "os.execute('true')\n",
     "attempt to call field 'execute' (a nil value) (while running the config file)"},
    {"sandbox_has_no_require", SRV("") "require('os')\n", "attempt to call global 'require' (a nil value)"},
    {"sandbox_has_no_load", SRV("") "loadstring('x = 1')()\n", "attempt to call global 'loadstring' (a nil value)"},
    {"runtime_error_value", SRV("") "error('no PBX list for ' .. 'this site')\n",
     ":2: no PBX list for this site (while running the config file)"},
    {"memory_cap", SRV("") "local t = {} for i = 1, 100 do t[i] = string.rep('x', 1048576 * 8 + i) end\n",
     "running the config used more than 64 MiB; a config file must only set values"},
    {"metrics_buffered_below_response", SRV("") "metrics = { max_response_mb = 32, max_buffered_mb = 16 }\n",
     "metrics.max_buffered_mb: 16 is less than max_response_mb (32); it must hold at least one whole answer"},
    {"metrics_max_connections_zero", SRV("") "metrics = { max_connections = 0 }\n",
     "metrics.max_connections: expected an integer from 1 to 65536, got number 0"},
    {"metrics_request_timeout_fraction", SRV("") "metrics = { request_timeout_ms = 1500.5 }\n",
     "metrics.request_timeout_ms: expected an integer from 10 to 600000, got number 1500.5"},
    {"metrics_response_timeout_string", SRV("") "metrics = { response_timeout_ms = '10s' }\n",
     "metrics.response_timeout_ms: expected an integer from 10 to 3600000, got string \"10s\""},
    {"metrics_request_bytes_too_small", SRV("") "metrics = { max_request_bytes = 100 }\n",
     "metrics.max_request_bytes: expected an integer from 1024 to 1048576, got number 100"},
    {"metrics_backlog_nan", SRV("") "metrics = { listen_backlog = 0/0 }\n",
     "metrics.listen_backlog: expected an integer from 1 to 65535, got number"},
    {"metrics_unknown_limit_suggests", SRV("") "metrics = { max_conections = 5 }\n",
     "metrics: unknown option \"max_conections\"; did you mean \"max_connections\"?"},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

static void bad_case(void **state)
{
    const bad_case_t *c = *state;
    write_file(tmp_path("case.lua"), c->lua);
    int64_t live = ami_alloc_live_bytes();
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(tmp_path("case.lua"), &cfg, &errs), -1);
    expect_error(&errs, c->fragment);
    assert_int_equal(ami_alloc_live_bytes(), live);
    if (strcmp(c->name, "defaults_bad_value_reported_once") == 0)
        assert_int_equal(errs.count, 1);
}

/* Each case is its own named test: a failure names the mistake. */
static int run_catalogue(void)
{
    struct CMUnitTest tests[N_CASES];
    for (size_t i = 0; i < N_CASES; i++) {
        tests[i] = (struct CMUnitTest)cmocka_unit_test(bad_case);
        tests[i].name = CASES[i].name;
        tests[i].initial_state = (void *)&CASES[i];
    }
    return _cmocka_run_group_tests("bad_configs", tests, N_CASES, group_setup, group_teardown);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_config_values),
        cmocka_unit_test(minimal_config_takes_defaults),
        cmocka_unit_test(defaults_applied_and_overridden),
        cmocka_unit_test(relative_paths_resolve_against_config_folder),
        cmocka_unit_test(no_scripts_folder_means_no_scripts),
        cmocka_unit_test(secret_inline),
        cmocka_unit_test(secret_from_env),
        cmocka_unit_test(secret_from_file_strips_line_end),
        cmocka_unit_test(a_world_readable_secret_file_is_a_warning),
        cmocka_unit_test(secret_file_that_would_block_is_refused_at_once),
        cmocka_unit_test(describe_never_shows_secrets),
        cmocka_unit_test(secrets_never_in_errors),
        cmocka_unit_test(control_characters_never_reach_a_message),
        cmocka_unit_test(metrics_ipv6_and_off),
        cmocka_unit_test(metrics_endpoint_limits),
        cmocka_unit_test(config_text_from_memory),
        cmocka_unit_test(compiled_config_is_refused),
        cmocka_unit_test(init_and_double_free_are_safe),
        cmocka_unit_test(syntax_error_names_file_and_line),
        cmocka_unit_test(runtime_error_names_file_and_line),
        cmocka_unit_test(endless_loop_is_stopped),
        cmocka_unit_test(endless_loop_inside_pcall_is_stopped),
        cmocka_unit_test(endless_loop_in_an_xpcall_handler_is_stopped),
        cmocka_unit_test(a_pathological_pattern_is_stopped),
        cmocka_unit_test(missing_file),
        cmocka_unit_test(many_errors_all_reported),
        cmocka_unit_test(too_many_errors_are_counted),
    };
    int failed = cmocka_run_group_tests_name("config", tests, group_setup, group_teardown);
    return failed + run_catalogue();
}
