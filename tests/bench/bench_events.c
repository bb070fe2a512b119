/*
 * Events end to end: a simulated Asterisk floods call events as fast as the
 * socket takes them; the engine parses them and delivers each one to a
 * handler. Three variants, each a fresh simulator + client (+ runtime):
 *
 *   c        bare C client: every event to a C subscriber that only counts
 *            (the engine's C path limit, no Lua)
 *   lua      the Lua runtime, JIT off (the default: the watchdog needs it),
 *            one script: ami.on("*", function(ev) local a, b = ev.Channel, ev.Uniqueid end)
 *   jit      the same with cfg.jit = true (unsafe: compiled traces run no
 *            hooks, so the watchdog cannot stop them)
 *
 * The simulator runs on its own loop in a second thread (this machine has
 * two cores: one writes, one reads). The client runs on the main thread.
 * After --warmup seconds of flood, events are counted for --duration
 * seconds: the C subscriber's count, or the runtime's handler_runs.
 *
 * Loop iterations are timed exactly during the measured window: an ev_check
 * at EV_MAXPRI records when the loop starts working after a poll, an
 * ev_prepare at EV_MINPRI records when it is about to poll again; every
 * iteration's duration goes into a preallocated array, sorted at the end
 * for p50 / p99 / p99.9 / max.
 *
 * The "watchdog cost" is lua(JIT on) / lua(JIT off) events/s: what keeping
 * the JIT off, so that the watchdog's count hook can stop a runaway
 * handler, costs on this path.
 *
 * With --tls the simulator serves AMI over TLS (certificates made at start
 * by tests/support/make_certs.sh in a temporary folder, removed at the end)
 * and the client verifies it: the same figures over TLS, for comparison.
 *
 * With --callstate on, the live call state (callstate/callstate.h) tracks
 * the flooded channels first (the flood creates, updates and hangs up a
 * channel every five events), so the figures include keeping the table.
 *
 * With --servers N the simulator runs N servers, each flooding, and the
 * client connects to all: the figures are then per event over all of them.
 *
 * --stream unique replaces the simulator by a raw peer (bench_peer.c) that
 * sends the same five call events with every per-call identifier (Channel,
 * Uniqueid, Linkedid, the VarSet value) new in every event and never seen
 * again: the stream on which no value read by the handler repeats. (The
 * simulator's block repeats every 4096 events; its identifiers are shared by
 * the five events of a call.)
 *
 *   bench_events [--duration S] [--warmup S] [--only c|lua|jit] [--read-chunk KiB] [--tls]
 *                [--callstate on|off] [--track-var NAME] [--handler CODE] [--servers N]
 *                [--stream mixed|unique]
 */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_args.h"
#include "bench_peer.h"
#include "bench_util.h"
#include "callstate/callstate.h"
#include "cluster/client.h"
#include "session/conn.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "sim/sim.h"
#include "util/clock.h"

#define MAX_SAMPLES (4u << 20)

typedef enum variant { V_C = 0, V_LUA, V_JIT, V_COUNT } variant_t;

static const char *const variant_names[V_COUNT + 1] = {"c", "lua", "jit", NULL};

typedef struct options {
    double duration;
    double warmup;
    bool run[V_COUNT];
    uint32_t read_chunk_kib;
    bool tls;
    char pki[64]; /* --tls: the temporary certificate folder */
    bool callstate;
    const char *track_var;
    const char *handler; /* the Lua handler's body */
    uint32_t servers;    /* simulated servers, each flooding */
    bool unique;         /* --stream unique: the raw peer, identifiers never repeat */
} options_t;

typedef struct result {
    bool ok;
    double secs;
    uint64_t events;
    double events_per_s;
    double events_per_cpu_s; /* per CPU second of the engine's thread: steadier on a shared machine */
    double bytes_per_event;
    uint64_t iterations;
    bool truncated;
    double p50_us, p99_us, p999_us, max_us;
    double busy; /* fraction of wall time the loop was working */
    double cpu_ns_per_event; /* the client thread's CPU time per event: steady under contention */
    long preempted; /* involuntary context switches of the engine's thread in the window */
    uint64_t handler_errors;
} result_t;

typedef struct bench {
    struct ev_loop *loop;
    ami_client_t *client;
    ami_lua_runtime_t *rt;
    ami_callstate_t *cs;
    uint64_t c_events;
    /* iteration timing */
    ev_check it_start;
    ev_prepare it_end;
    int64_t started_ns;
    bool sampling;
    uint32_t *samples; /* ns, clamped */
    size_t nsamples;
    bool truncated;
    /* run-for timer */
    ev_timer stop_timer;
} bench_t;

static void on_it_start(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    bench_t *b = w->data;
    b->started_ns = ami_now_ns();
}

static void on_it_end(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    bench_t *b = w->data;
    if (b->sampling && b->started_ns) {
        int64_t d = ami_now_ns() - b->started_ns;
        if (b->nsamples < MAX_SAMPLES)
            b->samples[b->nsamples++] = d > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        else
            b->truncated = true;
    }
    b->started_ns = 0;
}

static void run_for(bench_t *b, double secs)
{
    bench_run_for(b->loop, &b->stop_timer, secs);
}

static void on_c_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)server_key;
    (void)msg;
    ((bench_t *)ud)->c_events++;
}

#define DEFAULT_HANDLER "local a, b = ev.Channel, ev.Uniqueid"

static int write_script(const char *dir, const char *body)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bench.lua", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "local ami = require \"ami\"\nami.on(\"*\", function(ev) %s end)\n", body);
    return fclose(f);
}

static uint64_t delivered(const bench_t *b)
{
    if (!b->rt)
        return b->c_events;
    ami_lua_stats_t st;
    ami_lua_runtime_stats(b->rt, &st);
    return st.handler_runs;
}

static void conn_totals(ami_client_t *c, uint64_t *bytes, uint64_t *events)
{
    *bytes = *events = 0;
    for (uint32_t i = 0; i < ami_client_server_count(c); i++) {
        const ami_conn_stats_t *st = ami_conn_stats(ami_client_conn(c, i));
        *bytes += st->bytes_in;
        *events += st->events;
    }
}

static int run_variant(variant_t v, const options_t *o, ami_logger_t *log, uint32_t *samples,
                       result_t *r)
{
    memset(r, 0, sizeof *r);
    ami_err_t err;
    bench_t b = {.samples = samples};
    char dir[64] = "";
    int rc = -1;

    ami_sim_t *sim = ami_sim_new(NULL, log);
    uint16_t *ports = calloc(o->servers, sizeof *ports);
    bench_peer_t *peer = NULL;
    if (!sim || !ports) {
        fprintf(stderr, "bench_events: cannot create the simulator\n");
        ami_sim_free(sim);
        free(ports);
        return -1;
    }
    char cert[128], key[128], ca[128];
    snprintf(cert, sizeof cert, "%s/server.crt", o->pki);
    snprintf(key, sizeof key, "%s/server.key", o->pki);
    snprintf(ca, sizeof ca, "%s/ca.crt", o->pki);
    for (uint32_t i = 0; i < o->servers && !o->unique; i++) {
        char name[16];
        snprintf(name, sizeof name, "pbx%u", i + 1);
        ami_sim_node_config_t nc = {.name = name};
        if (o->tls) {
            nc.tls_cert_file = cert;
            nc.tls_key_file = key;
        }
        ami_sim_node_t *node = ami_sim_add_node(sim, &nc, &err);
        if (!node) {
            fprintf(stderr, "bench_events: sim node: %s\n", err.msg);
            ami_sim_free(sim);
            free(ports);
            return -1;
        }
        ami_sim_faults_t f = {.flood_events_per_sec = -1}; /* max speed, from login on */
        ami_sim_node_set_faults(node, &f);
        ports[i] = ami_sim_node_port(node);
    }
    if (o->unique) {
        bench_peer_config_t pc = {.mode = BENCH_PEER_FLOOD, .cpu = -1};
        if (!(peer = bench_peer_start(&pc))) {
            ami_sim_free(sim);
            free(ports);
            return -1;
        }
        ports[0] = bench_peer_port(peer);
    }
    pthread_t th;
    if (pthread_create(&th, NULL, bench_sim_thread, sim) != 0) {
        fprintf(stderr, "bench_events: pthread_create failed\n");
        ami_sim_free(sim);
        bench_peer_free(peer);
        free(ports);
        return -1;
    }

    b.loop = ev_loop_new(EVFLAG_AUTO);
    ami_metrics_t *metrics = ami_metrics_new(10000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = b.loop;
    cc.log = log;
    cc.metrics = metrics;
    cc.max_servers = o->servers;
    b.client = ami_client_new(&cc, &err);
    if (!b.client) {
        fprintf(stderr, "bench_events: client: %s\n", err.msg);
        goto out;
    }
    for (uint32_t i = 0; i < o->servers; i++) {
        char name[16];
        snprintf(name, sizeof name, "pbx%u", i + 1);
        ami_server_options_t so;
        ami_server_options_default(&so);
        so.server_key = name;
        so.host = "127.0.0.1";
        so.port = ports[i];
        so.username = "engine";
        so.secret = "s3cret";
        if (o->read_chunk_kib)
            so.read_chunk = (size_t)o->read_chunk_kib << 10;
        if (o->tls) {
            so.tls.enabled = true;
            so.tls.ca_file = ca;
        }
        if (ami_client_add_server(b.client, &so, &err) < 0) {
            fprintf(stderr, "bench_events: add_server: %s\n", err.msg);
            goto out;
        }
    }
    if (o->callstate) {
        ami_callstate_config_t csc;
        ami_callstate_config_default(&csc);
        const char *vars[1] = {o->track_var};
        csc.variables = vars;
        csc.nvariables = o->track_var ? 1 : 0;
        if (!(b.cs = ami_callstate_new(b.client, &csc, &err))) {
            fprintf(stderr, "bench_events: callstate: %s\n", err.msg);
            goto out;
        }
    }
    if (v == V_C) {
        if (!ami_client_subscribe(b.client, "*", on_c_event, &b, &err)) {
            fprintf(stderr, "bench_events: subscribe: %s\n", err.msg);
            goto out;
        }
    } else {
        snprintf(dir, sizeof dir, "/tmp/ami-bench-events-XXXXXX");
        if (!mkdtemp(dir) || write_script(dir, o->handler) != 0) {
            fprintf(stderr, "bench_events: cannot write the script: %s\n", strerror(errno));
            dir[0] = '\0';
            goto out;
        }
        ami_lua_config_t lc;
        ami_lua_config_default(&lc);
        lc.scripts_dir = dir;
        lc.watch_scripts = false;
        lc.jit = v == V_JIT;
        lc.callstate = b.cs;
        b.rt = ami_lua_runtime_new(b.client, &lc, &err);
        if (!b.rt || ami_lua_runtime_load(b.rt, &err) < 0) {
            fprintf(stderr, "bench_events: runtime: %s\n", err.msg);
            goto out;
        }
    }
    ami_client_start(b.client);

    double deadline = bench_now_s() + 10;
    while (ami_client_connected_count(b.client) < o->servers && bench_now_s() < deadline)
        ami_client_tick(b.client, 10);
    if (ami_client_connected_count(b.client) < o->servers) {
        fprintf(stderr, "bench_events: the simulator did not accept the login\n");
        goto out;
    }

    ev_check_init(&b.it_start, on_it_start);
    ev_prepare_init(&b.it_end, on_it_end);
    b.it_start.data = b.it_end.data = &b;
    ev_set_priority(&b.it_start, EV_MAXPRI);
    ev_set_priority(&b.it_end, EV_MINPRI);
    ev_check_start(b.loop, &b.it_start);
    ev_prepare_start(b.loop, &b.it_end);

    run_for(&b, o->warmup);

    uint64_t bytes0, conn_ev0, bytes1, conn_ev1;
    conn_totals(b.client, &bytes0, &conn_ev0);
    uint64_t n0 = delivered(&b);
    double t0 = bench_now_s();
    double cpu0 = bench_thread_cpu_s();
    long pre0 = bench_thread_preempted();
    b.sampling = true;
    run_for(&b, o->duration);
    b.sampling = false;
    double t1 = bench_now_s();
    double cpu1 = bench_thread_cpu_s();
    r->preempted = bench_thread_preempted() - pre0;
    uint64_t n1 = delivered(&b);
    conn_totals(b.client, &bytes1, &conn_ev1);

    ev_check_stop(b.loop, &b.it_start);
    ev_prepare_stop(b.loop, &b.it_end);

    r->secs = t1 - t0;
    r->events = n1 - n0;
    r->events_per_s = (double)r->events / r->secs;
    r->cpu_ns_per_event = r->events ? (cpu1 - cpu0) * 1e9 / (double)r->events : 0;
    r->events_per_cpu_s = r->cpu_ns_per_event > 0 ? 1e9 / r->cpu_ns_per_event : 0;
    r->bytes_per_event =
        conn_ev1 > conn_ev0 ? (double)(bytes1 - bytes0) / (double)(conn_ev1 - conn_ev0) : 0;
    r->iterations = b.nsamples;
    r->truncated = b.truncated;
    bench_spread_t sp;
    bench_spread_of(b.samples, b.nsamples, &sp);
    r->busy = sp.busy_s / r->secs;
    r->p50_us = sp.p50_us;
    r->p99_us = sp.p99_us;
    r->p999_us = sp.p999_us;
    r->max_us = sp.max_us;
    if (b.rt) {
        ami_lua_stats_t st;
        ami_lua_runtime_stats(b.rt, &st);
        r->handler_errors = st.handler_errors + st.handler_kills;
    }
    for (uint32_t i = 0; i < o->servers; i++) {
        ami_conn_t *conn = ami_client_conn(b.client, i);
        if (ami_conn_state(conn) != AMI_CONN_CONNECTED || ami_conn_stats(conn)->force_closes) {
            fprintf(stderr, "bench_events: [%s] connection %u dropped during the run (%s)\n", variant_names[v], i,
                    ami_conn_last_error(conn) ? ami_conn_last_error(conn) : "?");
            goto out;
        }
    }
    r->ok = r->events > 0;
    rc = r->ok ? 0 : -1;

out:
    ami_sim_stop(sim);
    pthread_join(th, NULL);
    bench_peer_free(peer);
    free(ports);
    if (b.rt)
        ami_lua_runtime_free(b.rt);
    if (b.cs) {
        ami_callstate_stats_t cst;
        ami_callstate_stats(b.cs, 0, &cst);
        printf("callstate[%s]: %llu events applied, %llu channels at the end, %llu refused\n", variant_names[v],
               (unsigned long long)cst.events_applied, (unsigned long long)cst.channels,
               (unsigned long long)cst.refused);
        ami_callstate_free(b.cs);
    }
    if (b.client)
        ami_client_free(b.client);
    ami_metrics_free(metrics);
    ev_loop_destroy(b.loop);
    ami_sim_free(sim);
    if (dir[0])
        bench_remove_dir(dir);
    return rc;
}

static int make_pki(options_t *o)
{
    snprintf(o->pki, sizeof o->pki, "/tmp/ami-bench-tls-XXXXXX");
    if (!mkdtemp(o->pki))
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash '%s/tests/support/make_certs.sh' '%s' >/dev/null 2>&1", AMI_BENCH_SOURCE_DIR,
             o->pki);
    return system(cmd) == 0 ? 0 : -1;
}

static void remove_pki(const options_t *o)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", o->pki);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_events: could not remove %s\n", o->pki);
}

static bool stream_kind(void *out, const char *value)
{
    *(bool *)out = strcmp(value, "unique") == 0;
    return *(bool *)out || strcmp(value, "mixed") == 0;
}

static bool on_off(void *out, const char *value)
{
    *(bool *)out = strcmp(value, "on") == 0;
    return *(bool *)out || strcmp(value, "off") == 0;
}

/* 0: run; 1: --help printed; 2: a bad argument reported. */
static int parse_args(options_t *o, int argc, char **argv)
{
    *o = (options_t){.duration = 5, .warmup = 1, .handler = DEFAULT_HANDLER, .servers = 1};
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("duration", "S", "measured seconds per variant (default 5)",
            BENCH_DOUBLE, &o->duration, 0.001, 1e6),
        BENCH_OPT_NUM("warmup", "S", "flood seconds before measuring (default 1)",
            BENCH_DOUBLE, &o->warmup, 0, 1e6),
        BENCH_OPT_PICK("only", "V", "run only variant V (repeatable): c, lua, jit", o->run, variant_names),
        BENCH_OPT_NUM("read-chunk", "KiB", "the client's read size (default: the engine's, 64)",
            BENCH_UINT, &o->read_chunk_kib, 0, 1 << 20),
        BENCH_OPT_FLAG("tls", "AMI over TLS (verified against a CA made for the run)", &o->tls),
        BENCH_OPT_CHECK("callstate", "on|off", "keep the live call state of the flooded channels (default off)",
            &o->callstate, on_off),
        BENCH_OPT_STR("track-var", "NAME", "with --callstate on: track this channel variable too",
            &o->track_var),
        BENCH_OPT_STR("handler", "CODE", "the Lua handler's body (default: " DEFAULT_HANDLER ")", &o->handler),
        BENCH_OPT_NUM("servers", "N", "N simulated servers, each flooding (default 1, at most 256)",
            BENCH_UINT, &o->servers, 1, 256),
        BENCH_OPT_CHECK("stream", "mixed|unique",
            "mixed, or unique: a raw peer whose identifiers never repeat (default mixed)", &o->unique, stream_kind),
    };
    int rc = bench_args_parse(argc, argv, "bench_events", args, BENCH_NARGS(args));
    if (rc != 0)
        return rc;
    if (o->unique && (o->servers != 1 || o->tls)) {
        fprintf(stderr, "bench_events: --stream unique with one server, plain TCP\n");
        return 2;
    }
    bool any = false;
    for (int v = 0; v < V_COUNT; v++)
        any |= o->run[v];
    if (!any)
        for (int v = 0; v < V_COUNT; v++)
            o->run[v] = true;
    return 0;
}

int main(int argc, char **argv)
{
    options_t o;
    int args_rc = parse_args(&o, argc, argv);
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    ami_logger_config_t lcfg;
    ami_logger_config_default(&lcfg);
    lcfg.level = AMI_LOG_WARN;
    ami_logger_t *log = ami_logger_new(&lcfg);
    uint32_t *samples = malloc(MAX_SAMPLES * sizeof *samples);
    if (!samples)
        return 1;
    if (o.tls && make_pki(&o) < 0) {
        fprintf(stderr, "bench_events: cannot make certificates with the openssl CLI\n");
        return 1;
    }
    printf("transport: %s\n", o.tls ? "TLS (verified; the simulator encrypts on its own thread)" : "plain TCP");
    printf("stream: %s, %u server%s\n",
           o.unique ? "unique (raw peer; Channel, Uniqueid, Linkedid new in every event)"
                    : "mixed (simulator; a call's five events share its identifiers)",
           o.servers, o.servers == 1 ? "" : "s");
    printf("call state: %s%s%s\n", o.callstate ? "on" : "off", o.callstate && o.track_var ? ", tracking " : "",
           o.callstate && o.track_var ? o.track_var : "");

    static const char *const what[V_COUNT] = {
        "into a C subscriber (no Lua)",
        "into a Lua handler reading 2 fields",
        "into a Lua handler reading 2 fields",
    };
    static const char *const mode[V_COUNT] = {"C path", "JIT off", "JIT on"};
    result_t res[V_COUNT] = {{0}};
    int failed = 0;
    for (int v = 0; v < V_COUNT; v++) {
        if (!o.run[v])
            continue;
        if (run_variant((variant_t)v, &o, log, samples, &res[v]) < 0) {
            fprintf(stderr, "bench_events: variant %s failed\n", variant_names[v]);
            failed = 1;
            continue;
        }
        const result_t *r = &res[v];
        printf("events[%s]: %.3f M events/s %s (%.1f s, %s; %llu events, %.0f bytes/event; "
               "client thread %.0f ns CPU/event)\n",
               variant_names[v], r->events_per_s / 1e6, what[v], r->secs, mode[v],
               (unsigned long long)r->events, r->bytes_per_event, r->cpu_ns_per_event);
        printf("cpu[%s]: %.3f M events per CPU second of the engine's thread\n", variant_names[v],
               r->events_per_cpu_s / 1e6);
        printf("loop[%s]: iteration p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us "
               "(%llu iterations%s, loop busy %.0f%%; the engine's thread preempted %ld times)\n",
               variant_names[v], r->p50_us, r->p99_us, r->p999_us, r->max_us,
               (unsigned long long)r->iterations, r->truncated ? ", sample array full" : "",
               r->busy * 100, r->preempted);
        if (r->handler_errors)
            printf("warning[%s]: %llu handler errors/kills\n", variant_names[v],
                   (unsigned long long)r->handler_errors);
        fflush(stdout);
    }
    if (res[V_LUA].ok && res[V_JIT].ok)
        printf("watchdog cost: JIT on / JIT off = %.2fx events/s (JIT off keeps %.0f%% of JIT on)\n",
               res[V_JIT].events_per_s / res[V_LUA].events_per_s,
               100.0 * res[V_LUA].events_per_s / res[V_JIT].events_per_s);
    if (res[V_C].ok && res[V_LUA].ok)
        printf("lua overhead: C path / Lua (JIT off) = %.2fx events/s\n",
               res[V_C].events_per_s / res[V_LUA].events_per_s);
    free(samples);
    ami_logger_free(log);
    if (o.tls)
        remove_pki(&o);
    return failed;
}
