/*
 * HTTP from scripts: how many requests per second the engine completes, and
 * how long its loop iterations get while 1,000 slow requests wait during an
 * AMI event flood.
 *
 *   rps    --inflight coroutines each loop ami.http.get("/ok") for --duration
 *          seconds against the simulated web service (its own thread);
 *          every answer closes its connection, so each request is a TCP
 *          connect, a request, an answer and a close.
 *   slow   --requests coroutines each ami.http.get("/delay/<--delay-ms>");
 *          once all are in flight the AMI simulator (its own thread, full
 *          speed) starts flooding events into a Lua handler reading two
 *          fields. Iterations are timed from an ev_check (work starts after
 *          the poll) to an ev_prepare (about to poll again) until the last
 *          answer: p50 / p99 / p99.9 / max.
 *
 *   bench_http [--duration S] [--inflight N] [--requests N] [--delay-ms MS]
 */
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_args.h"
#include "bench_util.h"
#include "cluster/client.h"
#include "httpc/httpc.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "sim/sim.h"
#include "sim/sim_http.h"
#include "util/clock.h"

#define MAX_SAMPLES (4u << 20)

typedef struct options {
    double duration;
    int inflight;
    int requests;
    int delay_ms;
} options_t;

typedef struct bench {
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_client_t *client;
    ami_httpc_t *httpc;
    ami_lua_runtime_t *rt;
    ami_sim_http_t *web;
    char dir[64];
    ev_check it_start;
    ev_prepare it_end;
    int64_t started_ns;
    uint32_t *samples;
    size_t nsamples;
    bool sampling;
} bench_t;

static void on_it_start(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    ((bench_t *)w->data)->started_ns = ami_now_ns();
}

static void on_it_end(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    bench_t *b = w->data;
    if (b->sampling && b->started_ns && b->nsamples < MAX_SAMPLES)
        b->samples[b->nsamples++] = (uint32_t)((ami_now_ns() - b->started_ns) / 1000);
    b->started_ns = 0;
}

static int cmp_u32(const void *a, const void *c)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)c;
    return x < y ? -1 : x > y;
}

static double pct_ms(const bench_t *b, double q)
{
    if (!b->nsamples)
        return 0;
    return b->samples[(size_t)(q * (double)(b->nsamples - 1))] / 1000.0;
}

static void print_spread(const char *what, bench_t *b)
{
    qsort(b->samples, b->nsamples, sizeof *b->samples, cmp_u32);
    printf("%s: %zu loop iterations: p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n", what, b->nsamples,
           pct_ms(b, 0.5), pct_ms(b, 0.99), pct_ms(b, 0.999), b->nsamples ? b->samples[b->nsamples - 1] / 1000.0 : 0);
}

static double counter(bench_t *b, const char *name)
{
    double v = 0;
    ami_metrics_value(b->metrics, name, NULL, &v);
    return v;
}

static void on_stop(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void run_for(bench_t *b, double secs)
{
    ev_timer stop;
    ev_timer_init(&stop, on_stop, secs, 0.);
    ev_timer_start(b->loop, &stop);
    ev_run(b->loop, 0);
    ev_timer_stop(b->loop, &stop);
}

static int setup(bench_t *b)
{
    ami_err_t err;
    ami_httpc_err_t herr = {0};
    b->loop = ev_loop_new(EVFLAG_AUTO);
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = AMI_LOG_WARN;
    b->log = ami_logger_new(&lc);
    b->metrics = ami_metrics_new(10000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = b->loop;
    cc.log = b->log;
    cc.metrics = b->metrics;
    b->client = ami_client_new(&cc, &err);
    b->web = ami_sim_http_start(&err);
    ami_httpc_config_t hc;
    ami_httpc_config_default(&hc);
    hc.max_concurrent = hc.max_per_owner = 20000;
    hc.timeout_ms = 120000;
    hc.connect_timeout_ms = 60000;
    b->httpc = ami_httpc_new(b->loop, &hc, b->metrics, b->log, &herr);
    snprintf(b->dir, sizeof b->dir, "/tmp/ami-bench-http-XXXXXX");
    if (!b->client || !b->web || !b->httpc || !mkdtemp(b->dir)) {
        fprintf(stderr, "bench_http: setup failed: %s %s\n", err.msg, herr.msg);
        return -1;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/bench.lua", b->dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs("ami.on('*', function(ev) local a, c = ev.Channel, ev.Uniqueid end)\n", f);
    fclose(f);
    ami_lua_config_t rc;
    ami_lua_config_default(&rc);
    rc.scripts_dir = b->dir;
    rc.watch_scripts = false;
    rc.http = b->httpc;
    b->rt = ami_lua_runtime_new(b->client, &rc, &err);
    if (!b->rt || ami_lua_runtime_load(b->rt, &err) < 0) {
        fprintf(stderr, "bench_http: runtime: %s\n", err.msg);
        return -1;
    }
    b->samples = malloc(MAX_SAMPLES * sizeof *b->samples);
    ev_check_init(&b->it_start, on_it_start);
    ev_prepare_init(&b->it_end, on_it_end);
    b->it_start.data = b->it_end.data = b;
    ev_set_priority(&b->it_start, EV_MAXPRI);
    ev_set_priority(&b->it_end, EV_MINPRI);
    ev_check_start(b->loop, &b->it_start);
    ev_prepare_start(b->loop, &b->it_end);
    return b->samples ? 0 : -1;
}

static void spawn(bench_t *b, const char *code)
{
    ami_err_t err;
    if (ami_lua_runtime_spawn_string(b->rt, "=bench", code, false, &err) < 0)
        fprintf(stderr, "bench_http: %s\n", err.msg);
}

static void bench_rps(bench_t *b, const options_t *o)
{
    char code[1024];
    snprintf(code, sizeof code,
             "local ok = ami.metrics.counter('bench_http_ok', 'answers')\n"
             "local bad = ami.metrics.counter('bench_http_failed', 'failures')\n"
             "local stop = ami.now() + %.3f\n"
             "for i = 1, %d do ami.spawn(function()\n"
             "  while ami.now() < stop do\n"
             "    local res = ami.http.get('http://127.0.0.1:%u/ok')\n"
             "    if res and res.status == 200 then ok:inc() else bad:inc() end\n"
             "  end\n"
             "end) end\n",
             o->duration, o->inflight, ami_sim_http_port(b->web));
    spawn(b, code);
    double t0 = bench_now_s();
    b->nsamples = 0;
    b->sampling = true;
    run_for(b, o->duration);
    b->sampling = false;
    double secs = bench_now_s() - t0;
    while (ami_httpc_active(b->httpc))
        ev_run(b->loop, EVRUN_ONCE);
    double ok = counter(b, "bench_http_ok"), bad = counter(b, "bench_http_failed");
    printf("rps: %.0f requests/s (%d in flight, %.0f answered, %.0f failed in %.1f s; a connection each)\n",
           ok / secs, o->inflight, ok, bad, secs);
    print_spread("rps", b);
}

static void bench_slow(bench_t *b, const options_t *o)
{
    char code[1024];
    snprintf(code, sizeof code,
             "local ok = ami.metrics.counter('bench_http_slow_ok', 'answers')\n"
             "local bad = ami.metrics.counter('bench_http_slow_failed', 'failures')\n"
             "for i = 1, %d do ami.spawn(function()\n"
             "  local res = ami.http.get('http://127.0.0.1:%u/delay/%d')\n"
             "  if res and res.status == 200 then ok:inc() else bad:inc() end\n"
             "end) end\n",
             o->requests, ami_sim_http_port(b->web), o->delay_ms);
    spawn(b, code);
    while ((int)ami_httpc_active(b->httpc) < o->requests)
        ev_run(b->loop, EVRUN_ONCE);
    /* All in flight: now the flood starts (on login). */
    ami_sim_t *sim = ami_sim_new(NULL, b->log);
    ami_sim_node_config_t nc = {.name = "pbx1"};
    ami_err_t err;
    ami_sim_node_t *node = ami_sim_add_node(sim, &nc, &err);
    ami_sim_faults_t f = {.flood_events_per_sec = -1};
    ami_sim_node_set_faults(node, &f);
    pthread_t th;
    pthread_create(&th, NULL, bench_sim_thread, sim);
    ami_server_options_t so;
    ami_server_options_default(&so);
    so.server_key = "pbx1";
    so.host = "127.0.0.1";
    so.port = ami_sim_node_port(node);
    so.username = "engine";
    so.secret = "s3cret";
    ami_client_add_server(b->client, &so, &err);
    ami_lua_stats_t st0, st1;
    ami_lua_runtime_stats(b->rt, &st0);
    double t0 = bench_now_s();
    b->nsamples = 0;
    b->sampling = true;
    ami_client_start(b->client);
    while (counter(b, "bench_http_slow_ok") + counter(b, "bench_http_slow_failed") < o->requests)
        ev_run(b->loop, EVRUN_ONCE);
    b->sampling = false;
    double secs = bench_now_s() - t0;
    ami_lua_runtime_stats(b->rt, &st1);
    printf("slow: %d requests of %d ms each, all in flight, answered in %.2f s during the flood "
           "(%.0f ok, %.0f failed); %.0f events/s into Lua meanwhile\n",
           o->requests, o->delay_ms, secs, counter(b, "bench_http_slow_ok"), counter(b, "bench_http_slow_failed"),
           (double)(st1.handler_runs - st0.handler_runs) / secs);
    print_spread("slow", b);
    ami_client_stop(b->client, 500);
    for (int i = 0; i < 100 && !ami_client_stopped(b->client); i++)
        ami_client_tick(b->client, 10);
    ami_sim_stop(sim);
    pthread_join(th, NULL);
    ami_lua_runtime_free(b->rt);
    b->rt = NULL;
    ami_client_free(b->client);
    b->client = NULL;
    ami_sim_free(sim);
}

static void teardown(bench_t *b)
{
    ami_lua_runtime_free(b->rt);
    ami_httpc_free(b->httpc);
    ami_client_free(b->client);
    ami_sim_http_stop(b->web);
    ami_metrics_free(b->metrics);
    ami_logger_free(b->log);
    if (b->loop)
        ev_loop_destroy(b->loop);
    if (b->dir[0])
        bench_remove_dir(b->dir);
    free(b->samples);
}

int main(int argc, char **argv)
{
    options_t o = {.duration = 3, .inflight = 64, .requests = 1000, .delay_ms = 2000};
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("duration", "S", "seconds of the rps run (default 3)",
            BENCH_DOUBLE, &o.duration, 0.001, 1e6),
        BENCH_OPT_NUM("inflight", "N", "coroutines of the rps run (default 64)",
            BENCH_INT, &o.inflight, 1, 1e6),
        BENCH_OPT_NUM("requests", "N", "slow requests waiting during the flood (default 1000)",
            BENCH_INT, &o.requests, 1, 1e7),
        BENCH_OPT_NUM("delay-ms", "MS", "how long each slow request waits (default 2000)",
            BENCH_INT, &o.delay_ms, 1, 3600000),
    };
    int args_rc = bench_args_parse(argc, argv, "bench_http", args, BENCH_NARGS(args));
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    bench_t b = {0};
    int rc = setup(&b);
    if (rc == 0) {
        bench_rps(&b, &o);
        bench_slow(&b, &o);
    }
    teardown(&b);
    return rc == 0 ? 0 : 1;
}
