/*
 * The soak: memory stability of the whole engine under churn.
 *
 * A simulated Asterisk cluster (2 nodes, background call traffic) runs in a
 * child process of its own, so that this process's allocation counters hold
 * the engine alone. The engine (client + Lua runtime) runs the example
 * scripts from scripts/ (helpers from lua/) against it, and meanwhile:
 *
 *   - every --disconnect-every seconds one server (in turn) is force-closed
 *     exactly as the heartbeat does it (AMI_E_HEARTBEAT, "Max heartbeat
 *     failures"): pending actions fail, the parser resets, the socket
 *     closes, backoff, reconnect, login;
 *   - every --reload-every seconds the scripts are reloaded (a new Lua
 *     generation; the old one drains and is closed);
 *   - every second after --warmup, ami_alloc_live_bytes() is sampled (every
 *     engine allocation, the Lua heaps included).
 *
 * At the end it prints min/max/last live bytes, disconnect cycles, reloads,
 * events handled, VmRSS at start and end, and exits 1 if live bytes grew.
 *
 * Growth = (min of the last samples) - (min of all samples after the
 * warm-up); "the last samples" are the last quarter of the run, and at least
 * two reload periods. Minima, because the Lua heaps and the buffers of calls
 * in progress go up and down all the time; a trough is what is left when
 * the garbage collector has run, so a rising trough is a leak. Two series,
 * sampled at the same instant, are judged:
 *
 *   the C engine alone (live bytes - Lua heaps), per disconnect cycle: FAIL
 *     when it grew by more than 4 KiB AND by more than 64 bytes per cycle
 *     on average (cycles counted between the two minima). Its troughs are
 *     flat to the byte over minutes here (peaks add ~5 KiB of transient
 *     buffers), so this is where a per-cycle leak, the thing this soak
 *     hunts, shows. The 4 KiB floor is for one-off growth that is not a
 *     leak (a metric series for a hangup cause seen for the first time,
 *     a few hundred bytes each). In a 20 s CI run (8 to 10 cycles between
 *     the minima at one per second) it catches a leak above ~500 bytes per
 *     cycle (checked with --inject-leak 1024: FAIL; 400: below the floor);
 *     over 24 h (~80,000 cycles) anything above 64 bytes per cycle.
 *   everything (C + Lua heaps): FAIL when it grew by more than 256 KiB. The
 *     Lua heaps swing by ~450 KiB between collections (140 to 590 KiB with
 *     the example scripts) and each reload starts a new one, so their
 *     troughs wander by up to ~60 KiB in a short run: no per-cycle figure
 *     can be read from them. 256 KiB is four times that wander and still
 *     below one generation's heap that is never closed (150+ KiB each, one
 *     per reload: two missed closes trip it).
 * --inject-leak BYTES leaks that much per disconnect cycle on purpose (via
 * ami_malloc), to check that the detector trips.
 *
 *   soak [--duration S] [--warmup S] [--disconnect-every S] [--reload-every S]
 *        [--cps N] [--log-level L] [--inject-leak BYTES]
 */
#include <ev.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_args.h"
#include "bench_util.h"
#include "cluster/client.h"
#include "health/conn.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "sim/sim.h"
#include "util/alloc.h"
#include "util/clock.h"

#ifndef AMI_BENCH_SOURCE_DIR
#error "AMI_BENCH_SOURCE_DIR must name the source tree (scripts/, lua/)"
#endif

#define NODES 2
#define TOL_TOTAL (256 * 1024)
#define TOL_PER_CYCLE 64.0
#define TOL_C_FLOOR (4 * 1024)

typedef struct options {
    double duration;
    double warmup;
    double disconnect_every;
    double reload_every;
    double cps;
    int log_level;
    size_t inject_leak;
} options_t;

typedef struct soak {
    const options_t *o;
    struct ev_loop *loop;
    ami_client_t *client;
    ami_lua_runtime_t *rt;
    double t0;
    ev_timer disconnect_t, reload_t, sample_t, end_t;
    uint64_t cycles, cycles_skipped;
    uint64_t reloads, reload_failures;
    int64_t *samples;
    int64_t *lua_samples;
    uint64_t *cycles_at; /* disconnect cycles done when each sample was taken */
    size_t nsamples, cap;
    void **leaked;
    size_t nleaked, leaked_cap;
} soak_t;

/* ---- the simulator, in a child process ------------------------------------------- */

static pid_t sim_fork(double cps, uint16_t ports[NODES])
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(fds[1]);
        ssize_t n = read(fds[0], ports, NODES * sizeof *ports);
        close(fds[0]);
        if (n != (ssize_t)(NODES * sizeof *ports) || !ports[0]) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
        return pid;
    }
    close(fds[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    ami_sim_t *sim = ami_sim_new(NULL, NULL);
    uint16_t p[NODES] = {0};
    static const char *const names[NODES] = {"pbx1", "pbx2"};
    for (int i = 0; sim && i < NODES; i++) {
        ami_sim_node_config_t nc = {.name = names[i], .calls_per_second = cps, .seed = 7u + (uint32_t)i};
        ami_sim_node_t *node = ami_sim_add_node(sim, &nc, NULL);
        p[i] = node ? ami_sim_node_port(node) : 0;
        if (!p[i])
            p[0] = 0;
    }
    if (write(fds[1], p, sizeof p) != (ssize_t)sizeof p || !p[0])
        _exit(1);
    close(fds[1]);
    ami_sim_run(sim, 0);
    _exit(0);
}

/* ---- the engine side --------------------------------------------------------------- */

static void on_disconnect(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    soak_t *s = w->data;
    size_t i = (size_t)((s->cycles + s->cycles_skipped) % NODES);
    ami_conn_t *c = ami_client_conn(s->client, i);
    if (ami_conn_state(c) != AMI_CONN_CONNECTED) {
        s->cycles_skipped++; /* still reconnecting from the last one: try the other next */
        return;
    }
    ami_conn_force_close(c, AMI_E_HEARTBEAT, "Max heartbeat failures");
    s->cycles++;
    if (s->o->inject_leak && s->nleaked < s->leaked_cap)
        s->leaked[s->nleaked++] = ami_malloc(s->o->inject_leak);
}

static void on_reload(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    soak_t *s = w->data;
    ami_err_t err;
    if (ami_lua_runtime_reload(s->rt, "soak", &err) < 0) {
        s->reload_failures++;
        fprintf(stderr, "soak: reload failed: %s\n", err.msg);
    } else {
        s->reloads++;
    }
}

static void on_sample(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    soak_t *s = w->data;
    if (bench_now_s() - s->t0 < s->o->warmup || s->nsamples >= s->cap)
        return;
    ami_lua_stats_t st;
    ami_lua_runtime_stats(s->rt, &st);
    s->lua_samples[s->nsamples] = st.lua_memory;
    s->cycles_at[s->nsamples] = s->cycles;
    s->samples[s->nsamples++] = ami_alloc_live_bytes();
}

static void on_end(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static int64_t min_of(const int64_t *v, size_t from, size_t to)
{
    int64_t m = INT64_MAX;
    for (size_t i = from; i < to; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

static int64_t max_of(const int64_t *v, size_t from, size_t to)
{
    int64_t m = INT64_MIN;
    for (size_t i = from; i < to; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

/* Growth of a series' troughs: min of the last `tail` samples - min of all,
 * and per disconnect cycle between the two minima. */
typedef struct trend {
    int64_t min;
    int64_t growth;
    uint64_t cycles;
    double per_cycle;
} trend_t;

static trend_t trend(const int64_t *v, const uint64_t *cycles_at, size_t n, size_t tail)
{
    size_t lo = 0, tlo = n - tail;
    for (size_t i = 1; i < n; i++)
        if (v[i] < v[lo])
            lo = i;
    for (size_t i = n - tail + 1; i < n; i++)
        if (v[i] < v[tlo])
            tlo = i;
    trend_t t = {.min = v[lo], .growth = v[tlo] - v[lo]};
    t.cycles = cycles_at[tlo] > cycles_at[lo] ? cycles_at[tlo] - cycles_at[lo] : 0;
    t.per_cycle = t.growth > 0 ? (double)t.growth / (double)(t.cycles ? t.cycles : 1) : 0;
    return t;
}

static bool log_level(void *out, const char *value)
{
    *(int *)out = ami_log_level_parse(value);
    return *(int *)out >= 0;
}

/* 0: run; 1: --help printed; 2: a bad argument reported. */
static int parse_args(options_t *o, int argc, char **argv)
{
    *o = (options_t){.duration = 60, .warmup = -1, .disconnect_every = 1, .reload_every = 5,
                     .cps = 10, .log_level = AMI_LOG_ERROR};
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("duration", "S", "total run, >= 4 (default 60; CI 20; 86400 for 24 h)",
            BENCH_DOUBLE, &o->duration, 4, 1e7),
        BENCH_OPT_NUM("warmup", "S", "before sampling (default: a quarter of the run, at most 30)",
            BENCH_DOUBLE, &o->warmup, 0, 1e7),
        BENCH_OPT_NUM("disconnect-every", "S", "force-close a server, in turn (default 1)",
            BENCH_DOUBLE, &o->disconnect_every, 0.001, 1e6),
        BENCH_OPT_NUM("reload-every", "S", "reload the scripts (default 5)",
            BENCH_DOUBLE, &o->reload_every, 0.001, 1e6),
        BENCH_OPT_NUM("cps", "N", "simulated calls per second per node (default 10)",
            BENCH_DOUBLE, &o->cps, 0, 1e6),
        BENCH_OPT_CHECK("log-level", "L", "debug, info, warn, error or off (default error)",
            &o->log_level, log_level),
        BENCH_OPT_NUM("inject-leak", "BYTES", "leak this much per disconnect cycle (checks the detector)",
            BENCH_SIZE, &o->inject_leak, 0, 1 << 30),
    };
    int rc = bench_args_parse(argc, argv, "soak", args, BENCH_NARGS(args));
    if (rc != 0)
        return rc;
    if (o->warmup < 0) {
        o->warmup = o->duration / 4;
        if (o->warmup > 30)
            o->warmup = 30;
    }
    if (o->warmup >= o->duration - 2) {
        fprintf(stderr, "soak: --warmup must end 2 s before --duration\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options_t o;
    int args_rc = parse_args(&o, argc, argv);
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    /* The example scripts' settings: after_hours always "closed" (its
     * redirects run), queue_stats every second. */
    setenv("AFTER_HOURS_SCHEDULE", "never", 0);
    setenv("QUEUE_STATS_INTERVAL", "1", 0);

    uint16_t ports[NODES] = {0};
    pid_t child = sim_fork(o.cps, ports); /* before any thread exists */
    if (child < 0) {
        fprintf(stderr, "soak: cannot start the simulator\n");
        return 1;
    }
    long rss_start = bench_vmrss_kib();
    int rc = 1;
    ami_err_t err;
    soak_t s = {.o = &o};
    s.cap = (size_t)(o.duration + 10);
    s.samples = calloc(s.cap, sizeof *s.samples);
    s.lua_samples = calloc(s.cap, sizeof *s.lua_samples);
    s.cycles_at = calloc(s.cap, sizeof *s.cycles_at);
    s.leaked_cap = o.inject_leak ? (size_t)(o.duration / o.disconnect_every) + 16 : 0;
    s.leaked = calloc(s.leaked_cap + 1, sizeof *s.leaked);
    ami_logger_config_t lcfg;
    ami_logger_config_default(&lcfg);
    lcfg.level = (ami_log_level_t)o.log_level;
    ami_logger_t *log = ami_logger_new(&lcfg);
    ami_metrics_t *metrics = ami_metrics_new(10000);
    s.loop = ev_loop_new(EVFLAG_AUTO);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = s.loop;
    cc.log = log;
    cc.metrics = metrics;
    s.client = ami_client_new(&cc, &err);
    if (!s.client || !s.samples || !s.lua_samples || !s.cycles_at)
        goto out;
    static const char *const keys[NODES] = {"pbx1", "pbx2"};
    for (int i = 0; i < NODES; i++) {
        ami_server_options_t so;
        ami_server_options_default(&so);
        so.server_key = keys[i];
        so.host = "127.0.0.1";
        so.port = ports[i];
        so.username = "engine";
        so.secret = "s3cret";
        so.heartbeat_interval_ms = 1000;
        so.backoff_initial_ms = 50;
        so.backoff_max_ms = 200;
        so.action_timeout_ms = 3000;
        if (ami_client_add_server(s.client, &so, &err) < 0) {
            fprintf(stderr, "soak: %s\n", err.msg);
            goto out;
        }
    }
    ami_client_start(s.client);
    int64_t deadline = ami_now_ms() + 5000;
    while (ami_client_connected_count(s.client) < NODES && ami_now_ms() < deadline)
        ami_client_tick(s.client, 10);
    if (ami_client_connected_count(s.client) < NODES) {
        fprintf(stderr, "soak: the simulated servers did not accept the login\n");
        goto out;
    }
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.scripts_dir = AMI_BENCH_SOURCE_DIR "/scripts";
    lc.lua_path = AMI_BENCH_SOURCE_DIR "/lua/?.lua;" AMI_BENCH_SOURCE_DIR "/lua/?/init.lua";
    lc.watch_scripts = false;
    lc.reload_grace_ms = 1000;
    s.rt = ami_lua_runtime_new(s.client, &lc, &err);
    if (!s.rt || ami_lua_runtime_load(s.rt, &err) < 0) {
        fprintf(stderr, "soak: runtime: %s\n", err.msg);
        goto out;
    }

    s.t0 = bench_now_s();
    ev_timer_init(&s.disconnect_t, on_disconnect, o.disconnect_every, o.disconnect_every);
    ev_timer_init(&s.reload_t, on_reload, o.reload_every, o.reload_every);
    ev_timer_init(&s.sample_t, on_sample, 1., 1.);
    ev_timer_init(&s.end_t, on_end, o.duration, 0.);
    s.disconnect_t.data = s.reload_t.data = s.sample_t.data = s.end_t.data = &s;
    ev_timer_start(s.loop, &s.disconnect_t);
    ev_timer_start(s.loop, &s.reload_t);
    ev_timer_start(s.loop, &s.sample_t);
    ev_timer_start(s.loop, &s.end_t);
    printf("soak: %.0f s (warm-up %.0f s), 2 servers at %.0f calls/s each, example scripts, "
           "a forced heartbeat disconnect every %.1f s, a reload every %.1f s\n",
           o.duration, o.warmup, o.cps, o.disconnect_every, o.reload_every);
    fflush(stdout);
    ev_run(s.loop, 0);
    ev_timer_stop(s.loop, &s.disconnect_t);
    ev_timer_stop(s.loop, &s.reload_t);
    ev_timer_stop(s.loop, &s.sample_t);
    ev_timer_stop(s.loop, &s.end_t);

    ami_lua_stats_t st;
    ami_lua_runtime_stats(s.rt, &st);
    uint64_t logins = 0, events = 0, force_closes = 0;
    for (size_t i = 0; i < NODES; i++) {
        const ami_conn_stats_t *cs = ami_conn_stats(ami_client_conn(s.client, i));
        logins += cs->logins;
        events += cs->events;
        force_closes += cs->force_closes;
    }
    long rss_end = bench_vmrss_kib();
    size_t n = s.nsamples;
    if (n < 4) {
        fprintf(stderr, "soak: too few samples (%zu): run longer\n", n);
        goto out;
    }
    /* The tail spans a quarter of the run, and at least two reload periods
     * (each generation's Lua heap has its own trough). */
    size_t tail = n / 4;
    if (tail < (size_t)(2 * o.reload_every) + 1)
        tail = (size_t)(2 * o.reload_every) + 1;
    if (tail > n / 2)
        tail = n / 2;
    int64_t *c_only = calloc(n, sizeof *c_only);
    if (!c_only)
        goto out;
    for (size_t i = 0; i < n; i++)
        c_only[i] = s.samples[i] - s.lua_samples[i];
    trend_t all = trend(s.samples, s.cycles_at, n, tail);
    trend_t c = trend(c_only, s.cycles_at, n, tail);

    printf("live_bytes: min %lld, max %lld, last %lld (%zu samples, 1/s after warm-up)\n",
           (long long)all.min, (long long)max_of(s.samples, 0, n), (long long)s.samples[n - 1], n);
    printf("lua_bytes: min %lld, max %lld, last %lld (the Lua heaps, part of the above)\n",
           (long long)min_of(s.lua_samples, 0, n), (long long)max_of(s.lua_samples, 0, n),
           (long long)s.lua_samples[n - 1]);
    printf("c_bytes: min %lld, max %lld, last %lld (the above minus the Lua heaps: the C "
           "engine alone)\n",
           (long long)c.min, (long long)max_of(c_only, 0, n), (long long)c_only[n - 1]);
    free(c_only);
    printf("growth: %+lld bytes in all (min of the last %zu samples - min after warm-up); C "
           "engine alone %+lld bytes, %+.1f bytes per disconnect cycle over %llu cycles\n",
           (long long)all.growth, tail, (long long)c.growth, c.per_cycle,
           (unsigned long long)c.cycles);
    printf("cycles: %llu forced heartbeat disconnects (%llu force-closes in all, %llu logins), "
           "%llu reloads (%llu failed)\n",
           (unsigned long long)s.cycles, (unsigned long long)force_closes,
           (unsigned long long)logins, (unsigned long long)s.reloads,
           (unsigned long long)s.reload_failures);
    printf("events: %llu received, %llu handler runs (%llu errors, %llu killed), generation %llu\n",
           (unsigned long long)events, (unsigned long long)st.handler_runs,
           (unsigned long long)st.handler_errors, (unsigned long long)st.handler_kills,
           (unsigned long long)st.generation);
    printf("vmrss: %ld KiB at start, %ld KiB at end\n", rss_start, rss_end);

    bool leak = all.growth > TOL_TOTAL;
    bool c_leak = c.growth > TOL_C_FLOOR && c.per_cycle > TOL_PER_CYCLE;
    bool stuck = s.cycles == 0 || logins < s.cycles || st.handler_runs == 0 || s.reloads == 0 ||
                 s.reload_failures > 0;
    if (leak)
        printf("soak: FAIL: live bytes grew by %lld (tolerance: %d)\n", (long long)all.growth,
               TOL_TOTAL);
    else if (c_leak)
        printf("soak: FAIL: the C engine's live bytes grew by %lld, %.1f per cycle (tolerance: "
               "%.0f per cycle above %d)\n",
               (long long)c.growth, c.per_cycle, TOL_PER_CYCLE, TOL_C_FLOOR);
    else if (stuck)
        printf("soak: FAIL: the engine did not go through the cycles (cycles %llu, logins %llu, "
               "handler runs %llu, reloads %llu)\n",
               (unsigned long long)s.cycles, (unsigned long long)logins,
               (unsigned long long)st.handler_runs, (unsigned long long)s.reloads);
    else
        printf("soak: PASS: no heap growth\n");
    rc = leak || c_leak || stuck ? 1 : 0;

out:
    if (s.rt) {
        ami_lua_runtime_shutdown(s.rt);
        ami_lua_runtime_free(s.rt);
    }
    if (s.client) {
        ami_client_stop(s.client, 500);
        deadline = ami_now_ms() + 1000;
        while (!ami_client_stopped(s.client) && ami_now_ms() < deadline)
            ami_client_tick(s.client, 10);
        ami_client_free(s.client);
    }
    ami_metrics_free(metrics);
    ev_loop_destroy(s.loop);
    ami_logger_free(log);
    for (size_t i = 0; i < s.nleaked; i++)
        ami_free(s.leaked[i]);
    free(s.leaked);
    printf("teardown: %lld live bytes in %lld blocks after everything was freed\n",
           (long long)ami_alloc_live_bytes(), (long long)ami_alloc_live_blocks());
    free(s.samples);
    free(s.lua_samples);
    free(s.cycles_at);
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    return rc;
}
