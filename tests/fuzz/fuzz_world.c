#include "fuzz_world.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz world: %s: %s\n", what, why ? why : "");
    abort();
}

static void keep_errors(void *ud, ami_log_level_t level, const char *line, size_t len)
{
    fuzz_world_t *w = ud;
    if (getenv("AMI_FUZZ_VERBOSE"))
        fprintf(stderr, "%.*s\n", (int)len, line);
    if (level < AMI_LOG_ERROR)
        return;
    w->nerrors++;
    size_t room = sizeof w->errors - 1 - w->errors_len;
    size_t n = len + 1 < room ? len : room > 0 ? room - 1 : 0;
    memcpy(w->errors + w->errors_len, line, n);
    w->errors_len += n;
    if (w->errors_len + 1 < sizeof w->errors)
        w->errors[w->errors_len++] = '\n';
    w->errors[w->errors_len] = '\0';
}

void fuzz_world_clear_errors(fuzz_world_t *w)
{
    w->errors_len = 0;
    w->errors[0] = '\0';
    w->nerrors = 0;
}

char *fuzz_read_source(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tests/fuzz/%s", AMI_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot read", path);
    static char buf[1 << 17];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *copy = strdup(buf);
    if (!copy)
        die("out of memory", path);
    return copy;
}

static char folder[64], script_path[256];

static void remove_folder(void)
{
    if (script_path[0])
        unlink(script_path);
    rmdir(folder);
}

static void write_script(fuzz_world_t *w, const char *name, const char *source)
{
    char *path = script_path;
    snprintf(path, sizeof script_path, "%s/%s", w->dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(source, f) < 0 || fclose(f) != 0)
        die("cannot write", path);
}

static bool connected(void *ud)
{
    fuzz_world_t *w = ud;
    return ami_client_connected_count(w->client) == 1;
}

static void add_server(fuzz_world_t *w)
{
    ami_server_options_t o;
    ami_server_options_default(&o);
    o.server_key = "pbx1";
    o.host = "127.0.0.1";
    o.port = ami_sim_node_port(w->node);
    o.username = "engine";
    o.secret = "s3cret";
    o.heartbeat_interval_ms = 0; /* no traffic of its own between inputs */
    o.backoff_initial_ms = 10;
    o.backoff_max_ms = 50;
    o.action_timeout_ms = 2000;
    ami_err_t err;
    if (ami_client_add_server(w->client, &o, &err) < 0)
        die("add server", err.msg);
}

fuzz_world_t *fuzz_world_new(const char *script, const char *source, const ami_lua_config_t *cfg)
{
    fuzz_world_t *w = calloc(1, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/ami-fuzz-XXXXXX");
    if (!w || !mkdtemp(w->dir))
        die("mkdtemp", "failed");
    snprintf(folder, sizeof folder, "%s", w->dir);
    if (script)
        write_script(w, script, source);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = getenv("AMI_FUZZ_VERBOSE") ? AMI_LOG_DEBUG : AMI_LOG_ERROR;
    lc.sink = keep_errors;
    lc.sink_ud = w;
    w->log = ami_logger_new(&lc);
    w->metrics = ami_metrics_new(20000);
    w->sim = ami_sim_new(w->loop, getenv("AMI_FUZZ_VERBOSE") ? w->log : NULL);
    ami_sim_node_config_t nc = {.name = "pbx1"};
    w->node = ami_sim_add_node(w->sim, &nc, NULL);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = w->loop;
    cc.log = w->log;
    cc.metrics = w->metrics;
    cc.seed = 1;
    w->client = ami_client_new(&cc, NULL);
    if (!w->log || !w->metrics || !w->sim || !w->node || !w->client)
        die("setup", "out of memory");
    add_server(w);
    ami_client_start(w->client);
    if (!fuzz_world_run_until(w, connected, w, 5000))
        die("setup", "the client did not log in to the simulator");
    ami_lua_config_t lcfg = *cfg;
    lcfg.scripts_dir = w->dir;
    lcfg.lua_path = AMI_SOURCE_DIR "/lua/?.lua";
    lcfg.watch_scripts = false;
    ami_err_t err;
    w->rt = ami_lua_runtime_new(w->client, &lcfg, &err);
    if (!w->rt || ami_lua_runtime_load(w->rt, &err) < 0)
        die("runtime", err.msg);
    atexit(remove_folder);
    return w;
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    *(bool *)t->data = true;
    ev_break(loop, EVBREAK_ONE);
}

bool fuzz_world_run_until(fuzz_world_t *w, bool (*pred)(void *ud), void *ud, uint32_t max_ms)
{
    bool expired = false;
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, max_ms / 1000.0, 0.);
    deadline.data = &expired;
    ev_timer_start(w->loop, &deadline);
    bool ok = pred && pred(ud);
    while (!ok && !expired) {
        ev_run(w->loop, EVRUN_ONCE);
        ok = pred && pred(ud);
    }
    ev_timer_stop(w->loop, &deadline);
    return ok;
}

void fuzz_world_run_for(fuzz_world_t *w, uint32_t ms)
{
    fuzz_world_run_until(w, NULL, NULL, ms);
}
