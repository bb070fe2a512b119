/*
 * Action round trips: many Ping actions in flight at once, each answered by
 * a simulated Asterisk on its own thread (this machine has two cores).
 *
 *   lua   a script spawns --inflight coroutines (default 1000); each loops
 *         `local res, err = ami.action("pbx1", "Ping")` until the deadline
 *         and records its round trip with ami.now() into a 1 us histogram
 *         kept in Lua (no allocation per action). The results come back to
 *         C through ami.metrics gauges. JIT off (the default).
 *   jit   the same with the JIT on (only with --only jit).
 *   c     the same load from C: --inflight ami_client_send callbacks that
 *         each send the next Ping (the engine's C path limit).
 *
 * Only actions completed inside the measured window (--duration seconds,
 * after --warmup seconds) count. Latency: from the call (ami.action or
 * ami_client_send) to the coroutine running again / the callback.
 *
 *   bench_ping [--duration S] [--warmup S] [--inflight N] [--read-chunk KiB] [--only c|lua|jit]...
 */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_args.h"
#include "bench_util.h"
#include "cluster/client.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "sim/sim.h"
#include "util/clock.h"

#define HIST_US 200000u /* 1 us buckets up to 200 ms, then one overflow bucket */

typedef enum variant { V_C = 0, V_LUA, V_JIT, V_COUNT } variant_t;

static const char *const variant_names[V_COUNT + 1] = {"c", "lua", "jit", NULL};

typedef struct options {
    double duration;
    double warmup;
    uint32_t inflight;
    uint32_t read_chunk_kib; /* 0: the engine's default (64) */
    bool run[V_COUNT];
} options_t;

typedef struct result {
    bool ok;
    double window;
    double completed;
    double errors;
    double p50_us, p99_us, p999_us, max_us;
    double cpu_ns; /* the client thread's CPU per action (at the window's rate over the whole run) */
    bench_spread_t loop; /* loop iterations over the whole run */
} result_t;

typedef struct cbench cbench_t;

typedef struct slot {
    cbench_t *b;
    int64_t t0;
} slot_t;

struct cbench {
    ami_client_t *client;
    int64_t t_start, t_stop; /* ns */
    uint64_t completed, errors, send_failures;
    uint32_t live;
    uint32_t *hist; /* HIST_US + 1 */
    uint64_t max_ns;
    slot_t *slots;
};

static const char SCRIPT_FMT[] =
    "local ami = require \"ami\"\n"
    "local N, WARM, DUR, MAXB = %u, %.6f, %.6f, %u\n"
    "local floor, now = math.floor, ami.now\n"
    "local hist, over, maxlat = {}, 0, 0\n"
    "for i = 0, MAXB do hist[i] = 0 end\n"
    "local g = {}\n"
    "for _, k in ipairs({\"done\", \"completed\", \"errors\", \"p50_us\", \"p99_us\", \"p999_us\",\n"
    "                    \"max_us\", \"window_s\"}) do\n"
    "  g[k] = ami.metrics.gauge(\"bench_ping_\" .. k, \"bench_ping result\")\n"
    "end\n"
    "local completed, errors, finished = 0, 0, 0\n"
    "local t_start = now() + WARM\n"
    "local t_stop = t_start + DUR\n"
    "local function pct(q)\n"
    "  local want, seen = q * completed, 0\n"
    "  for i = 0, MAXB do\n"
    "    seen = seen + hist[i]\n"
    "    if seen >= want then return i end\n"
    "  end\n"
    "  return maxlat\n"
    "end\n"
    "local function report()\n"
    "  g.completed:set(completed)\n"
    "  g.errors:set(errors)\n"
    "  g.p50_us:set(pct(0.5))\n"
    "  g.p99_us:set(pct(0.99))\n"
    "  g.p999_us:set(pct(0.999))\n"
    "  g.max_us:set(maxlat)\n"
    "  g.window_s:set(DUR)\n"
    "  g.done:set(1)\n"
    "end\n"
    "local function worker()\n"
    "  while true do\n"
    "    local t0 = now()\n"
    "    if t0 >= t_stop then break end\n"
    "    local res = ami.action(\"pbx1\", \"Ping\")\n"
    "    local t1 = now()\n"
    "    if t1 >= t_start and t1 < t_stop then\n"
    "      if res then\n"
    "        completed = completed + 1\n"
    "        local us = floor((t1 - t0) * 1e6)\n"
    "        if us > maxlat then maxlat = us end\n"
    "        if us >= MAXB then over = over + 1 else hist[us] = hist[us] + 1 end\n"
    "      else\n"
    "        errors = errors + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  finished = finished + 1\n"
    "  if finished == N then report() end\n"
    "end\n"
    "for _ = 1, N do assert(ami.spawn(worker)) end\n";

static double gauge(ami_metrics_t *m, const char *name)
{
    double v = -1;
    ami_metrics_value(m, name, NULL, &v);
    return v;
}

/* ---- the C variant ------------------------------------------------------------- */

static void c_send(slot_t *s);

static void c_done(void *ud, const ami_pending_note_t *note)
{
    if (note->signal != AMI_PENDING_DONE && note->signal != AMI_PENDING_FAILED)
        return;
    slot_t *s = ud;
    cbench_t *b = s->b;
    int64_t t1 = ami_now_ns();
    if (t1 >= b->t_start && t1 < b->t_stop) {
        if (note->signal == AMI_PENDING_DONE) {
            b->completed++;
            uint64_t ns = (uint64_t)(t1 - s->t0);
            uint64_t us = ns / 1000;
            b->hist[us < HIST_US ? us : HIST_US]++;
            if (ns > b->max_ns)
                b->max_ns = ns;
        } else {
            b->errors++;
        }
    }
    b->live--;
    c_send(s);
}

static void c_send(slot_t *s)
{
    cbench_t *b = s->b;
    s->t0 = ami_now_ns();
    if (s->t0 >= b->t_stop)
        return;
    ami_action_req_t req = {.name = "Ping"};
    ami_action_handle_t h;
    if (ami_client_send(b->client, "pbx1", &req, c_done, s, &h, NULL) < 0) {
        b->send_failures++;
        return;
    }
    b->live++;
}

static double hist_pct(const uint32_t *hist, uint64_t total, double q)
{
    double want = q * (double)total, seen = 0;
    for (uint32_t i = 0; i <= HIST_US; i++) {
        seen += hist[i];
        if (seen >= want)
            return i;
    }
    return HIST_US;
}

/* ---- one run ------------------------------------------------------------------- */

static int run_variant(variant_t v, const options_t *o, ami_logger_t *log, result_t *r)
{
    memset(r, 0, sizeof *r);
    ami_err_t err;
    char dir[64] = "";
    int rc = -1;
    ami_lua_runtime_t *rt = NULL;
    cbench_t cb = {0};

    ami_sim_t *sim = ami_sim_new(NULL, log);
    if (!sim)
        return -1;
    ami_sim_node_config_t nc = {.name = "pbx1"};
    ami_sim_node_t *node = ami_sim_add_node(sim, &nc, &err);
    if (!node) {
        fprintf(stderr, "bench_ping: sim node: %s\n", err.msg);
        ami_sim_free(sim);
        return -1;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, bench_sim_thread, sim) != 0) {
        ami_sim_free(sim);
        return -1;
    }

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    bench_iter_t it = {0};
    ami_metrics_t *metrics = ami_metrics_new(10000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = loop;
    cc.log = log;
    cc.metrics = metrics;
    ami_client_t *client = ami_client_new(&cc, &err);
    if (!client) {
        fprintf(stderr, "bench_ping: client: %s\n", err.msg);
        goto out;
    }
    ami_server_options_t so;
    ami_server_options_default(&so);
    so.server_key = "pbx1";
    so.host = "127.0.0.1";
    so.port = ami_sim_node_port(node);
    so.username = "engine";
    so.secret = "s3cret";
    if (o->read_chunk_kib)
        so.read_chunk = (size_t)o->read_chunk_kib << 10;
    so.max_pending = o->inflight + 64; /* the heartbeat's Ping too */
    if (ami_client_add_server(client, &so, &err) < 0) {
        fprintf(stderr, "bench_ping: add_server: %s\n", err.msg);
        goto out;
    }
    ami_client_start(client);
    int64_t deadline = ami_now_ms() + 5000;
    while (ami_client_connected_count(client) < 1 && ami_now_ms() < deadline)
        ami_client_tick(client, 10);
    if (ami_client_connected_count(client) < 1) {
        fprintf(stderr, "bench_ping: the simulator did not accept the login\n");
        goto out;
    }

    if (bench_iter_start(&it, loop, 4u << 20) < 0)
        goto out;
    bench_iter_sample(&it, true);
    double cpu0 = bench_thread_cpu_s(), wall0 = bench_now_s();
    if (v == V_C) {
        cb.client = client;
        cb.hist = calloc(HIST_US + 1, sizeof *cb.hist);
        cb.slots = calloc(o->inflight, sizeof *cb.slots);
        if (!cb.hist || !cb.slots)
            goto out;
        cb.t_start = ami_now_ns() + (int64_t)(o->warmup * 1e9);
        cb.t_stop = cb.t_start + (int64_t)(o->duration * 1e9);
        for (uint32_t i = 0; i < o->inflight; i++) {
            cb.slots[i].b = &cb;
            c_send(&cb.slots[i]);
        }
        int64_t hard = cb.t_stop / 1000000 + 10000;
        while (cb.live > 0 && ami_now_ms() < hard)
            ami_client_tick(client, 10);
        if (cb.live > 0 || cb.send_failures) {
            fprintf(stderr, "bench_ping: [c] %u actions never finished, %llu sends refused\n",
                    cb.live, (unsigned long long)cb.send_failures);
            goto out;
        }
        r->window = o->duration;
        r->completed = (double)cb.completed;
        r->errors = (double)cb.errors;
        r->p50_us = hist_pct(cb.hist, cb.completed, 0.5);
        r->p99_us = hist_pct(cb.hist, cb.completed, 0.99);
        r->p999_us = hist_pct(cb.hist, cb.completed, 0.999);
        r->max_us = (double)cb.max_ns / 1000.0;
    } else {
        snprintf(dir, sizeof dir, "/tmp/ami-bench-ping-XXXXXX");
        if (!mkdtemp(dir)) {
            fprintf(stderr, "bench_ping: mkdtemp: %s\n", strerror(errno));
            dir[0] = '\0';
            goto out;
        }
        char path[512];
        snprintf(path, sizeof path, "%s/bench.lua", dir);
        FILE *f = fopen(path, "w");
        if (!f)
            goto out;
        fprintf(f, SCRIPT_FMT, o->inflight, o->warmup, o->duration, HIST_US);
        fclose(f);
        ami_lua_config_t lc;
        ami_lua_config_default(&lc);
        lc.scripts_dir = dir;
        lc.watch_scripts = false;
        lc.handler_budget_ms = 1000; /* the final report walks the histogram */
        lc.jit = v == V_JIT;
        rt = ami_lua_runtime_new(client, &lc, &err);
        if (!rt || ami_lua_runtime_load(rt, &err) < 0) {
            fprintf(stderr, "bench_ping: runtime: %s\n", err.msg);
            goto out;
        }
        int64_t hard = ami_now_ms() + (int64_t)((o->warmup + o->duration) * 1000) + 10000;
        while (gauge(metrics, "bench_ping_done") != 1 && ami_now_ms() < hard)
            ami_client_tick(client, 10);
        if (gauge(metrics, "bench_ping_done") != 1) {
            fprintf(stderr, "bench_ping: [%s] the script did not finish\n", variant_names[v]);
            goto out;
        }
        ami_lua_stats_t st;
        ami_lua_runtime_stats(rt, &st);
        if (st.handler_errors || st.handler_kills)
            fprintf(stderr, "bench_ping: [%s] %llu handler errors, %llu kills\n", variant_names[v],
                    (unsigned long long)st.handler_errors, (unsigned long long)st.handler_kills);
        r->window = gauge(metrics, "bench_ping_window_s");
        r->completed = gauge(metrics, "bench_ping_completed");
        r->errors = gauge(metrics, "bench_ping_errors");
        r->p50_us = gauge(metrics, "bench_ping_p50_us");
        r->p99_us = gauge(metrics, "bench_ping_p99_us");
        r->p999_us = gauge(metrics, "bench_ping_p999_us");
        r->max_us = gauge(metrics, "bench_ping_max_us");
    }
    bench_iter_spread(&it, &r->loop);
    r->ok = r->completed > 0;
    if (r->ok)
        r->cpu_ns = (bench_thread_cpu_s() - cpu0) * 1e9 / (r->completed / r->window * (bench_now_s() - wall0));
    rc = r->ok ? 0 : -1;

out:
    bench_iter_stop(&it);
    ami_sim_stop(sim);
    pthread_join(th, NULL);
    if (rt)
        ami_lua_runtime_free(rt);
    if (client)
        ami_client_free(client);
    ami_metrics_free(metrics);
    ev_loop_destroy(loop);
    ami_sim_free(sim);
    free(cb.hist);
    free(cb.slots);
    if (dir[0])
        bench_remove_dir(dir);
    return rc;
}

/* 0: run; 1: --help printed; 2: a bad argument reported. */
static int parse_args(options_t *o, int argc, char **argv)
{
    *o = (options_t){.duration = 5, .warmup = 1, .inflight = 1000};
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("duration", "S", "measured seconds (default 5)", BENCH_DOUBLE, &o->duration, 0.001, 1e6),
        BENCH_OPT_NUM("warmup", "S", "seconds before measuring (default 1)", BENCH_DOUBLE, &o->warmup, 0, 1e6),
        BENCH_OPT_NUM("inflight", "N", "concurrent coroutines / callbacks, 1..100000 (default 1000)",
            BENCH_UINT, &o->inflight, 1, 100000),
        BENCH_OPT_NUM("read-chunk", "KiB", "the client's read size (default: the engine's, 64)",
            BENCH_UINT, &o->read_chunk_kib, 0, 1 << 20),
        BENCH_OPT_PICK("only", "V", "run only variant V (repeatable): c, lua, jit; default lua and c",
            o->run, variant_names),
    };
    int rc = bench_args_parse(argc, argv, "bench_ping", args, BENCH_NARGS(args));
    if (rc == 0 && !o->run[V_C] && !o->run[V_LUA] && !o->run[V_JIT])
        o->run[V_LUA] = o->run[V_C] = true;
    return rc;
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
    static const char *const what[V_COUNT] = {
        "from C callbacks (no Lua)",
        "from Lua coroutines, JIT off",
        "from Lua coroutines, JIT on",
    };
    static const variant_t order[] = {V_LUA, V_JIT, V_C};
    int failed = 0;
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        variant_t v = order[k];
        if (!o.run[v])
            continue;
        result_t r;
        if (run_variant(v, &o, log, &r) < 0) {
            fprintf(stderr, "bench_ping: variant %s failed\n", variant_names[v]);
            failed = 1;
            continue;
        }
        printf("ping[%s]: %.0f actions/s, Ping round trips %s, %u in flight (%.1f s; %.0f done, "
               "%.0f errors)\n",
               variant_names[v], r.completed / r.window, what[v], o.inflight, r.window, r.completed,
               r.errors);
        printf("cpu[%s]: client thread %.0f ns CPU per action (%.2f M actions per CPU second)\n", variant_names[v],
               r.cpu_ns, r.cpu_ns > 0 ? 1e3 / r.cpu_ns : 0);
        printf("latency[%s]: action p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us\n",
               variant_names[v], r.p50_us, r.p99_us, r.p999_us, r.max_us);
        printf("loop[%s]: iteration p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us (%zu iterations; "
               "the Lua variant's last one walks its latency histogram)\n",
               variant_names[v], r.loop.p50_us, r.loop.p99_us, r.loop.p999_us, r.loop.max_us, r.loop.n);
        fflush(stdout);
    }
    ami_logger_free(log);
    return failed;
}
