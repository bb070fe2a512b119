/*
 * Event-to-action latency: from the last byte of an event on the socket to
 * the first byte of the action its Lua handler sends.
 *
 * A raw AMI peer (bench_peer.c, its own thread) sends UserEvents carrying
 * "Seq: n" at a paced rate; the engine (client + Lua runtime on this
 * thread's loop) runs one script:
 *
 *   ami.on("UserEvent", function(ev)
 *     ami.action(ev.server, "UserEvent", {UserEvent = "Ack", Seq = ev.Seq})
 *   end)
 *
 * and the peer timestamps the send() that carried each event's last byte
 * and the read() that brought the action back. Both clocks are the same
 * CLOCK_MONOTONIC. So a sample holds: the kernel's loopback delivery, the
 * loop waking up, the read, parsing, dispatch, the handler, the action's
 * serialisation, the write at the end of the loop iteration (the transport
 * flushes once per iteration), and the delivery back to the peer. A pinned
 * peer spins on its CPU (it never sleeps in poll), so a sample ends when
 * the action lands, not when the peer's thread would have woken up to see
 * it, and each event goes out on its own at its time, as a PBX writes them.
 * --peer-sleeps makes it sleep between events instead (the figures of
 * earlier rounds): each sample then holds the peer's own wake-up, and the
 * peer's late wake-ups send events in small batches, which the engine
 * reads together.
 *
 * By default the peer runs on CPU 1 and the engine on CPU 0 (--no-pin to
 * let the kernel place them; the peer then sleeps between events too).
 * --busy-poll US turns the engine's busy polling on (ami_client_set_busy_poll,
 * the config's busy_poll_us): the engine's own wake-ups leave the samples. Each rate runs --runs times, each run a
 * fresh peer, client and runtime: warm-up, then --duration seconds
 * measured. Printed per run: p50 / p99 / p99.9 / max in microseconds, the
 * events sent and the actions that came back in the window, and the loop
 * iteration spread of the engine meanwhile.
 *
 * --rt runs both threads at SCHED_FIFO priority (root only), so that other
 * programs on a shared machine cannot preempt them: the figures then show
 * the engine's own latency; without it, the machine's.
 *
 *   bench_latency [--rates 10000,100000,500000] [--duration S] [--warmup S]
 *                 [--runs N] [--callstate on|off] [--busy-poll US] [--peer-sleeps] [--no-pin] [--rt]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_args.h"
#include "bench_peer.h"
#include "bench_util.h"
#include "callstate/callstate.h"
#include "cluster/client.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"

#define MAX_RATES 8

typedef struct options {
    double rates[MAX_RATES];
    int nrates;
    double duration, warmup;
    int runs;
    bool callstate;
    bool no_pin;
    bool rt;
    bool peer_sleeps;
    int busy_poll_us;
} options_t;

typedef struct engine {
    struct ev_loop *loop;
    ami_metrics_t *metrics;
    ami_client_t *client;
    ami_callstate_t *cs;
    ami_lua_runtime_t *rt;
    char dir[64];
    ev_timer stop;
} engine_t;

static const char SCRIPT[] =
    "local ami = require \"ami\"\n"
    "ami.on(\"UserEvent\", function(ev)\n"
    "  ami.action(ev.server, \"UserEvent\", {UserEvent = \"Ack\", Seq = ev.Seq})\n"
    "end)\n";

static void run_for(engine_t *e, double secs)
{
    bench_run_for(e->loop, &e->stop, secs);
}

static int write_script(engine_t *e)
{
    snprintf(e->dir, sizeof e->dir, "/tmp/ami-bench-latency-XXXXXX");
    if (!mkdtemp(e->dir)) {
        e->dir[0] = '\0';
        return -1;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/bench.lua", e->dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(SCRIPT, f);
    return fclose(f);
}

static void engine_free(engine_t *e)
{
    if (e->rt)
        ami_lua_runtime_free(e->rt);
    if (e->cs)
        ami_callstate_free(e->cs);
    if (e->client)
        ami_client_free(e->client);
    if (e->metrics)
        ami_metrics_free(e->metrics);
    if (e->loop)
        ev_loop_destroy(e->loop);
    if (e->dir[0])
        bench_remove_dir(e->dir);
}

static int engine_new(engine_t *e, const options_t *o, uint16_t port, ami_logger_t *log)
{
    ami_err_t err;
    memset(e, 0, sizeof *e);
    e->loop = ev_loop_new(EVFLAG_AUTO);
    e->metrics = ami_metrics_new(10000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = e->loop;
    cc.log = log;
    cc.metrics = e->metrics;
    if (!(e->client = ami_client_new(&cc, &err)))
        goto fail;
    ami_server_options_t so;
    ami_server_options_default(&so);
    so.server_key = "pbx1";
    so.host = "127.0.0.1";
    so.port = port;
    so.username = "engine";
    so.secret = "s3cret";
    if (ami_client_add_server(e->client, &so, &err) < 0)
        goto fail;
    ami_client_set_busy_poll(e->client, (uint32_t)o->busy_poll_us);
    if (o->callstate) {
        ami_callstate_config_t csc;
        ami_callstate_config_default(&csc);
        if (!(e->cs = ami_callstate_new(e->client, &csc, &err)))
            goto fail;
    }
    if (write_script(e) < 0) {
        snprintf(err.msg, sizeof err.msg, "cannot write the script: %s", strerror(errno));
        goto fail;
    }
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.scripts_dir = e->dir;
    lc.watch_scripts = false;
    lc.callstate = e->cs;
    if (!(e->rt = ami_lua_runtime_new(e->client, &lc, &err)) || ami_lua_runtime_load(e->rt, &err) < 0)
        goto fail;
    ami_client_start(e->client);
    double deadline = bench_now_s() + 5;
    while (ami_client_connected_count(e->client) < 1 && bench_now_s() < deadline)
        ami_client_tick(e->client, 10);
    if (ami_client_connected_count(e->client) < 1) {
        snprintf(err.msg, sizeof err.msg, "the peer did not accept the login");
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "bench_latency: %s\n", err.msg);
    engine_free(e);
    return -1;
}

static int run_rate(const options_t *o, double rate, int run, ami_logger_t *log)
{
    bench_peer_config_t pc = {.mode = BENCH_PEER_PACED,
                              .rate = rate,
                              .cpu = !o->no_pin ? 1 : -1,
                              .realtime = o->rt,
                              .spin = !o->no_pin && !o->peer_sleeps,
                              .max_samples = (size_t)(rate * o->duration * 1.1) + 1024};
    bench_peer_t *peer = bench_peer_start(&pc);
    if (!peer)
        return -1;
    engine_t e;
    if (engine_new(&e, o, bench_peer_port(peer), log) < 0) {
        bench_peer_free(peer);
        return -1;
    }
    bench_iter_t it;
    if (bench_iter_start(&it, e.loop, (size_t)(o->duration * 2e6) + 1024) < 0) {
        engine_free(&e);
        bench_peer_free(peer);
        return -1;
    }
    run_for(&e, o->warmup);
    bench_peer_measure(peer, true);
    bench_iter_sample(&it, true);
    double cpu0 = bench_thread_cpu_s();
    long pre0 = bench_thread_preempted();
    run_for(&e, o->duration);
    double cpu = bench_thread_cpu_s() - cpu0;
    long preempted = bench_thread_preempted() - pre0;
    bench_iter_sample(&it, false);
    bench_peer_measure(peer, false);
    run_for(&e, 0.2); /* the last actions of the window come back */
    bench_peer_stop(peer);
    bench_peer_tail_t tail = bench_peer_tail(peer, 100000);
    size_t n;
    const uint32_t *s = bench_peer_samples(peer, &n);
    bench_spread_t lat, loop;
    bench_spread_of((uint32_t *)s, n, &lat);
    bench_iter_spread(&it, &loop);
    uint64_t sent = bench_peer_sent(peer), acked = bench_peer_acked(peer);
    printf("latency[%.0f/s run %d]: p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us "
           "(%zu samples; %llu events sent, %llu actions back; engine CPU %.0f%%; "
           "loop iteration p50 %.1f us, p99.9 %.1f us, max %.1f us; preempted: engine %ld, peer %ld times)\n",
           rate, run, lat.p50_us, lat.p99_us, lat.p999_us, lat.max_us, n, (unsigned long long)sent,
           (unsigned long long)acked, 100.0 * cpu / o->duration, loop.p50_us, loop.p999_us, loop.max_us, preempted,
           bench_peer_preempted(peer));
    printf("  tail[%.0f/s run %d]: %llu samples over 100 us in %llu bursts (longest %llu actions in a row)", rate, run,
           (unsigned long long)tail.over, (unsigned long long)tail.bursts, (unsigned long long)tail.longest_burst);
    if (pc.spin)
        printf("; the spinning peer did not run %llu times for over 50 us (%.1f ms in all)",
               (unsigned long long)tail.peer_stalls, tail.peer_stalled_ns / 1e6);
    printf("\n");
    fflush(stdout);
    bench_iter_stop(&it);
    engine_free(&e);
    bench_peer_free(peer);
    return n > 0 ? 0 : -1;
}

static int parse_rates(options_t *o, const char *list)
{
    o->nrates = 0;
    const char *p = list;
    while (*p && o->nrates < MAX_RATES) {
        char *end;
        double r = strtod(p, &end);
        if (end == p || !(r > 0 && r <= 1e7))
            return -1;
        o->rates[o->nrates++] = r;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return o->nrates && !*p ? 0 : -1;
}

static bool rates_list(void *out, const char *value)
{
    return parse_rates(out, value) == 0;
}

static bool on_off(void *out, const char *value)
{
    *(bool *)out = strcmp(value, "on") == 0;
    return *(bool *)out || strcmp(value, "off") == 0;
}

/* 0: run; 1: --help printed; 2: a bad argument reported. */
static int parse_args(options_t *o, int argc, char **argv)
{
    *o = (options_t){.duration = 3, .warmup = 1, .runs = 1};
    parse_rates(o, "10000,100000,500000");
    const bench_arg_t args[] = {
        BENCH_OPT_CHECK("rates", "R1,R2,...", "events per second, up to 8 (default 10000,100000,500000)",
            o, rates_list),
        BENCH_OPT_NUM("duration", "S", "measured seconds per run (default 3)", BENCH_DOUBLE, &o->duration, 0.001, 1e6),
        BENCH_OPT_NUM("warmup", "S", "seconds before measuring (default 1)", BENCH_DOUBLE, &o->warmup, 0, 1e6),
        BENCH_OPT_NUM("runs", "N", "runs per rate (default 1)", BENCH_INT, &o->runs, 1, 1000),
        BENCH_OPT_CHECK("callstate", "on|off", "keep the live call state too (default off)", &o->callstate, on_off),
        BENCH_OPT_FLAG("no-pin", "let the kernel place the peer and the engine (default: CPU 1 and CPU 0)",
            &o->no_pin),
        BENCH_OPT_NUM("busy-poll", "US", "the engine polls without sleeping this long after input (default 0: off)",
            BENCH_INT, &o->busy_poll_us, 0, 10000),
        BENCH_OPT_FLAG("peer-sleeps", "the peer sleeps between events instead of spinning on its CPU", &o->peer_sleeps),
        BENCH_OPT_FLAG("rt", "both threads at SCHED_FIFO priority (root)", &o->rt),
    };
    return bench_args_parse(argc, argv, "bench_latency", args, BENCH_NARGS(args));
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
    bool pinned = !o.no_pin && bench_pin(0);
    bool rt = o.rt && bench_realtime();
    printf("pinning: %s; scheduling: %s\n", pinned ? "engine on CPU 0, peer on CPU 1" : "none (the kernel places both threads)",
           rt ? "SCHED_FIFO (other programs cannot preempt the two threads)" : "normal (shared with whatever else runs)");
    printf("call state: %s; busy polling: %s; the peer %s between events\n", o.callstate ? "on" : "off",
           o.busy_poll_us ? "on" : "off", !o.no_pin && !o.peer_sleeps ? "spins" : "sleeps");
    if (o.busy_poll_us)
        printf("busy polling: the engine spins %d us after input before it sleeps\n", o.busy_poll_us);
    fflush(stdout);
    int failed = 0;
    for (int r = 0; r < o.nrates; r++)
        for (int run = 1; run <= o.runs; run++)
            if (run_rate(&o, o.rates[r], run, log) < 0) {
                fprintf(stderr, "bench_latency: the run at %.0f events/s failed\n", o.rates[r]);
                failed = 1;
            }
    ami_logger_free(log);
    return failed;
}
