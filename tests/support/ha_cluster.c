#include "ha_cluster.h"

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cluster/client.h"
#include "harness.h"
#include "obs/metrics.h"

#define ENGINE_BIN AMI_BINARY_DIR "/ami-engine"
#define SIM_BIN AMI_BINARY_DIR "/ami-sim"
#define SECRET "s3cret"
#define POLL_MS 50
#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *const NAMES[HA_NSERVERS] = {"pbx1", "pbx2"};

static const char SCRIPT[] =
    "-- Redirect every inbound call once: the observer counts the Redirects.\n"
    "local ami = require 'ami'\n"
    "ami.on({Event = 'Newchannel', Context = 'from-pstn'}, function(ev)\n"
    "  if ev.Uniqueid ~= ev.Linkedid then return end\n"
    "  local _, err = ami.action(ev.server, 'Redirect',\n"
    "    {Channel = ev.Channel, Context = 'ha-e2e', Exten = 's', Priority = 1})\n"
    "  if err then ami.log.warn('redirect failed', {server = ev.server, uid = ev.Uniqueid, err = err}) end\n"
    "end)\n";

/* ---- the observer ------------------------------------------------------------------------ */

static ha_call_t *find_call(ha_cluster_t *c, const char *uid, int server)
{
    for (size_t i = c->ncalls; i-- > 0;)
        if (c->calls[i].server == server && strcmp(c->calls[i].uid, uid) == 0)
            return &c->calls[i];
    return NULL;
}

static int server_index(const char *key)
{
    for (int i = 0; i < HA_NSERVERS; i++)
        if (strcmp(key, NAMES[i]) == 0)
            return i;
    return -1;
}

static void on_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    ha_cluster_t *c = ud;
    int s = server_index(server_key);
    const char *uid = ami_msg_get(msg, "Uniqueid");
    const char *ctx = ami_msg_get(msg, "Context");
    if (s < 0 || !uid || !ctx)
        return;
    if (strcmp(ami_msg_name(msg), "Newchannel") == 0) {
        const char *lid = ami_msg_get(msg, "Linkedid");
        if ((lid && strcmp(lid, uid) != 0) || c->ncalls >= HA_MAX_CALLS)
            return;
        ha_call_t *call = &c->calls[c->ncalls++];
        memset(call, 0, sizeof *call);
        snprintf(call->uid, sizeof call->uid, "%s", uid);
        call->server = s;
        call->started_ms = mono_ms();
        call->inbound = strcmp(ctx, "from-pstn") == 0;
    } else if (strcmp(ctx, "ha-e2e") == 0) {
        ha_call_t *call = find_call(c, uid, s);
        if (call)
            call->redirects++;
        else
            c->stray_redirects++;
    }
}

static bool observer_connected(void *ud)
{
    ha_cluster_t *c = ud;
    return ami_client_connected_count(c->observer) == HA_NSERVERS;
}

static int start_observer(ha_cluster_t *c)
{
    c->loop = ev_loop_new(EVFLAG_AUTO);
    c->metrics = ami_metrics_new(1000);
    c->calls = calloc(HA_MAX_CALLS, sizeof *c->calls);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = c->loop;
    cc.metrics = c->metrics;
    c->observer = ami_client_new(&cc, NULL);
    if (!c->observer || !c->calls)
        return -1;
    for (int i = 0; i < HA_NSERVERS; i++) {
        ami_server_options_t o;
        ami_server_options_default(&o);
        o.server_key = NAMES[i];
        o.host = "127.0.0.1";
        o.port = c->ports[i];
        o.username = "engine";
        o.secret = SECRET;
        if (ami_client_add_server(c->observer, &o, NULL) < 0)
            return -1;
    }
    ami_client_subscribe(c->observer, "Newchannel", on_event, c, NULL);
    ami_client_subscribe(c->observer, "Newexten", on_event, c, NULL);
    ami_client_start(c->observer);
    return harness_run_until(c->loop, observer_connected, c, 5000) ? 0 : -1;
}

void ha_cluster_pump(ha_cluster_t *c, uint32_t ms)
{
    harness_run_for(c->loop, ms);
}

/* ---- processes ---------------------------------------------------------------------------- */

static int start_sim(ha_cluster_t *c)
{
    char out[640], err[640];
    snprintf(out, sizeof out, "%s/sim.out", c->dir);
    snprintf(err, sizeof err, "%s/sim.err", c->dir);
    const char *const *argv = L(SIM_BIN, "--nodes", "2", "--names", "pbx1,pbx2", "--base-port", "0", "--cps",
                                c->opt.cps, "--secret", SECRET, "--duration", "600", "--seed", "7");
    if (proc_spawn(&c->sim, argv, NULL, out, err) < 0 || !file_wait_contains(out, "READY", 5000))
        return -1;
    char *text = file_read(out, NULL);
    for (int i = 0; i < HA_NSERVERS && text; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "node %s listening on 127.0.0.1:", NAMES[i]);
        const char *at = strstr(text, needle);
        c->ports[i] = at ? (uint16_t)atoi(at + strlen(needle)) : 0;
    }
    free(text);
    return c->ports[0] && c->ports[1] ? 0 : -1;
}

static int write_config(ha_cluster_t *c, ha_engine_t *e)
{
    char ha[1024] = "";
    if (!c->opt.no_ha)
        snprintf(ha, sizeof ha,
                 "ha = { cluster = 'e2e', instance = '%s', lease_ms = %u, renew_ms = %u,\n"
                 "       redis = { address = 'unix:%s', command_timeout_ms = 500, connect_timeout_ms = 500,\n"
                 "                 backoff_initial_ms = 50, backoff_max_ms = 500 } }\n",
                 e->name, c->opt.lease_ms, c->opt.renew_ms, c->redis.socket);
    FILE *f = fopen(e->config, "w");
    if (!f)
        return -1;
    fprintf(f,
            "servers = { { key = 'pbx1', host = '127.0.0.1', port = %u },\n"
            "            { key = 'pbx2', host = '127.0.0.1', port = %u } }\n"
            "defaults = { username = 'engine', secret = '%s', heartbeat_interval_ms = 500,\n"
            "             backoff_initial_ms = 100, backoff_max_ms = 500 }\n"
            "scripts = { dir = '%s', watch = false }\n"
            "metrics = { listen = '127.0.0.1:%u' }\n"
            "drain_grace_ms = 1000\n%s",
            c->ports[0], c->ports[1], SECRET, c->scripts, e->mport, ha);
    return fclose(f);
}

int ha_cluster_engine_start(ha_cluster_t *c, int i)
{
    ha_engine_t *e = &c->engines[i];
    char out[700], log[700];
    snprintf(out, sizeof out, "%s/%s-%d.out", c->dir, e->name, e->runs);
    snprintf(log, sizeof log, "%s/%s-%d.log", c->dir, e->name, e->runs);
    snprintf(e->log, sizeof e->log, "%s", log);
    e->runs++;
    e->mport = 0; /* the config asks for a port from the kernel; the log says which */
    if (write_config(c, e) < 0 || proc_spawn(&e->proc, L(ENGINE_BIN, "-c", e->config), NULL, out, e->log) < 0)
        return -1;
    if (!file_wait_contains(e->log, "msg=\"ami-engine started\"", 5000)) {
        ha_cluster_dump(c, i, "the engine did not start");
        return -1;
    }
    e->mport = engine_metrics_port(e->log, 5000);
    if (!e->mport) {
        ha_cluster_dump(c, i, "the engine logged no metrics port");
        return -1;
    }
    return 0;
}

void ha_cluster_engine_signal(ha_cluster_t *c, int i, int sig)
{
    proc_signal(&c->engines[i].proc, sig);
}

bool ha_cluster_engine_running(ha_cluster_t *c, int i)
{
    return c->engines[i].proc.pid && proc_running(&c->engines[i].proc);
}

int ha_cluster_start(ha_cluster_t *c, const ha_cluster_options_t *opt)
{
    memset(c, 0, sizeof *c);
    c->opt = *opt;
    if (!c->opt.lease_ms)
        c->opt.lease_ms = 4000;
    if (!c->opt.renew_ms)
        c->opt.renew_ms = 1000;
    if (!c->opt.cps)
        c->opt.cps = "4";
    if (tmpdir_make("ami-ha-", c->dir, sizeof c->dir) < 0)
        return -1;
    snprintf(c->scripts, sizeof c->scripts, "%s/scripts", c->dir);
    char path[700];
    snprintf(path, sizeof path, "%s/redirect.lua", c->scripts);
    if (mkdir(c->scripts, 0755) < 0 || file_write_atomic(path, SCRIPT) < 0)
        return -1;
    if (redis_server_start(&c->redis, c->dir, false, NULL, NULL) < 0 || start_sim(c) < 0 || start_observer(c) < 0)
        return -1;
    for (int i = 0; i < c->opt.engines && i < HA_MAX_ENGINES; i++) {
        ha_engine_t *e = &c->engines[i];
        snprintf(e->name, sizeof e->name, "e%d", i + 1);
        snprintf(e->config, sizeof e->config, "%s/e%d.lua", c->dir, i + 1);
        if (ha_cluster_engine_start(c, i) < 0)
            return -1;
    }
    return 0;
}

void ha_cluster_stop(ha_cluster_t *c)
{
    for (int i = 0; i < HA_MAX_ENGINES; i++)
        if (c->engines[i].proc.pid)
            proc_kill(&c->engines[i].proc);
    if (c->sim.pid)
        proc_kill(&c->sim);
    redis_server_stop(&c->redis);
    if (c->observer)
        ami_client_free(c->observer);
    if (c->metrics)
        ami_metrics_free(c->metrics);
    if (c->loop)
        ev_loop_destroy(c->loop);
    free(c->calls);
    if (c->dir[0] && !getenv("AMI_E2E_KEEP"))
        tmpdir_remove(c->dir);
    else if (c->dir[0])
        fprintf(stderr, "kept %s\n", c->dir);
    memset(c, 0, sizeof *c);
}

/* ---- ownership from /healthz ------------------------------------------------------------------ */

/* Does engine i claim server s? Its epoch in *epoch. */
static bool claims(ha_cluster_t *c, int i, int s, uint64_t *epoch)
{
    int status = 0;
    char *body = NULL;
    size_t len;
    if (!ha_cluster_engine_running(c, i) ||
        http_get("127.0.0.1", c->engines[i].mport, "/healthz", 500, &status, &body, &len) < 0)
        return false;
    char needle[48];
    snprintf(needle, sizeof needle, "ha %s owned ", NAMES[s]);
    const char *at = strstr(body, needle);
    const char *ep = at ? strstr(at, "epoch=") : NULL;
    if (ep && epoch)
        *epoch = strtoull(ep + 6, NULL, 10);
    free(body);
    return at != NULL;
}

int ha_cluster_owner(ha_cluster_t *c, int s, int *nclaims, uint64_t *epoch)
{
    int owner = -1, n = 0;
    for (int i = 0; i < HA_MAX_ENGINES; i++)
        if (claims(c, i, s, epoch)) {
            owner = i;
            n++;
        }
    if (nclaims)
        *nclaims = n;
    return owner;
}

typedef struct owner_wait {
    ha_cluster_t *c;
    int server, not, found;
    int64_t at_ms;
    int mode; /* 0 single owners, 1 new owner of server, 2 no owner */
} owner_wait_t;

static bool owners_as_wanted(void *ud)
{
    owner_wait_t *w = ud;
    ha_cluster_t *c = w->c;
    int64_t now = mono_ms();
    if (now - c->last_poll_ms < POLL_MS)
        return false;
    c->last_poll_ms = now;
    bool ok = true;
    for (int s = 0; s < HA_NSERVERS && ok; s++) {
        if (w->mode == 1 && s != w->server)
            continue;
        int n, owner = ha_cluster_owner(c, s, &n, NULL);
        ok = w->mode == 0 ? n == 1 : w->mode == 2 ? n == 0 : (n == 1 && owner != w->not);
        if (ok && w->mode == 1)
            w->found = owner;
    }
    if (ok)
        w->at_ms = mono_ms(); /* after the polls: a late figure, never an early one */
    return ok;
}

static bool wait_owners(ha_cluster_t *c, owner_wait_t *w, uint32_t ms)
{
    c->last_poll_ms = 0;
    return harness_run_until(c->loop, owners_as_wanted, w, ms);
}

bool ha_cluster_wait_single_owners(ha_cluster_t *c, uint32_t ms)
{
    owner_wait_t w = {.c = c, .mode = 0};
    return wait_owners(c, &w, ms);
}

int ha_cluster_wait_new_owner(ha_cluster_t *c, int s, int not, uint32_t ms, int64_t *at_ms)
{
    owner_wait_t w = {.c = c, .mode = 1, .server = s, .not = not, .found = -1};
    if (!wait_owners(c, &w, ms))
        return -1;
    if (at_ms)
        *at_ms = w.at_ms;
    return w.found;
}

bool ha_cluster_wait_no_owner(ha_cluster_t *c, uint32_t ms)
{
    owner_wait_t w = {.c = c, .mode = 2};
    return wait_owners(c, &w, ms);
}

/* ---- logs ------------------------------------------------------------------------------------ */

static char *log_line(ha_cluster_t *c, int i, const char *const *needles, bool last)
{
    char *text = file_read(c->engines[i].log, NULL);
    char *found = NULL;
    for (char *line = text; line && *line && (last || !found);) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        bool all = true;
        for (const char *const *k = needles; *k && all; k++)
            all = strstr(line, *k) != NULL;
        if (all) {
            free(found);
            found = strdup(line);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return found;
}

char *ha_cluster_log_line(ha_cluster_t *c, int i, const char *const *needles)
{
    return log_line(c, i, needles, false);
}

char *ha_cluster_log_last_line(ha_cluster_t *c, int i, const char *const *needles)
{
    return log_line(c, i, needles, true);
}

size_t ha_cluster_log_count(ha_cluster_t *c, int i, const char *needle)
{
    char *text = file_read(c->engines[i].log, NULL);
    size_t n = text ? str_count(text, needle) : 0;
    free(text);
    return n;
}

void ha_cluster_dump(ha_cluster_t *c, int i, const char *why)
{
    size_t len = 0;
    char *text = file_read(c->engines[i].log, &len);
    const char *from = text ? text : "";
    if (len > 5000)
        from = text + len - 5000;
    fprintf(stderr, "---- %s; tail of %s ----\n%s\n---- end ----\n", why, c->engines[i].log, from);
    free(text);
}
