/*
 * Memory of a parked coroutine with its pending action.
 *
 * A simulated Asterisk, in a child process of its own (so that its memory
 * is not in this process's counters), logs the engine in and from then on
 * reads every action and answers none (faults.all_silent). The engine's
 * heartbeat is off (a silent server would otherwise be force-closed).
 *
 * Steps, all on this process's loop:
 *   1. load a trivial script; full GC; measure ami_alloc_live_bytes() (every
 *      engine allocation, the Lua heap included: the runtime allocates
 *      through it) and ami_lua_runtime_stats().lua_memory;
 *   2. spawn --count coroutines (default 10000), each calling
 *      ami.action("pbx1", "Ping", nil, opts) with a shared opts table
 *      {timeout = 3600000}: each parks in the scheduler with one pending
 *      action in the connection's registry (the spawning chunk yields every
 *      1000 spawns to stay within the handler budget);
 *   3. wait until all are parked and written, let the loop settle, full GC,
 *      measure again. (live after - live before) / count is the figure.
 *   4. fail every pending action (force-close the connection), let the
 *      coroutines finish, full GC, measure again: what is left over the
 *      baseline is the coroutine pool's idle cache (up to 256) and what grew
 *      for the burst (tables, buffers), not a leak.
 *
 * Also printed: the same delta as malloc sees it (mallinfo2: chunk headers,
 * rounding and the engine's own size header per block), the VmRSS delta
 * (an upper bound: it includes memory freed after the burst but kept by
 * malloc), and the bytes the connection preallocates per max_pending slot
 * (which this run raises to --count, so they sit in the baseline).
 *
 * The full GC runs as a trusted chunk (ami_lua_runtime_spawn_string with
 * trusted = true sees the state's real collectgarbage, as tools do; scripts
 * only get collectgarbage("count")).
 *
 *   bench_coro_mem [--count N]
 */
#include <ev.h>
#include <malloc.h>
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
#include "session/conn.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "sim/sim.h"
#include "util/alloc.h"
#include "util/clock.h"

#define TIMEOUT_MS 3600000u

/* ---- the simulator, in a child process ------------------------------------------- */

typedef struct silent_watch {
    ev_timer t;
    ami_sim_node_t *node;
} silent_watch_t;

static void on_silent_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    silent_watch_t *sw = (silent_watch_t *)w;
    ami_sim_node_stats_t st = ami_sim_node_stats(sw->node);
    if (st.logins_ok < 1)
        return;
    ami_sim_faults_t f = {.all_silent = true};
    ami_sim_node_set_faults(sw->node, &f);
    ev_timer_stop(loop, w);
}

/* Fork a simulator with one node that goes silent after the first login.
 * Returns the child's pid, *port its port; -1 on failure. */
static pid_t sim_fork(uint16_t *port)
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
        ssize_t n = read(fds[0], port, sizeof *port);
        close(fds[0]);
        if (n != (ssize_t)sizeof *port || *port == 0) {
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
    ami_sim_node_config_t nc = {.name = "pbx1"};
    ami_sim_node_t *node = sim ? ami_sim_add_node(sim, &nc, NULL) : NULL;
    uint16_t p = node ? ami_sim_node_port(node) : 0;
    if (write(fds[1], &p, sizeof p) != (ssize_t)sizeof p || !node)
        _exit(1);
    close(fds[1]);
    silent_watch_t sw = {.node = node};
    ev_timer_init(&sw.t, on_silent_watch, 0.002, 0.002);
    ev_timer_start(ami_sim_loop(sim), &sw.t);
    ami_sim_run(sim, 0);
    _exit(0);
}

/* ---- the engine side --------------------------------------------------------------- */

typedef struct snap {
    int64_t live;
    int64_t blocks;
    int64_t lua;
    long rss_kib;
    size_t in_use; /* malloc's own view: bytes in chunks handed out, headers included */
    size_t kept;   /* free chunks malloc keeps (resident once touched) */
} snap_t;

static void settle(ami_client_t *c, uint32_t ms)
{
    int64_t until = ami_now_ms() + ms;
    while (ami_now_ms() < until)
        ami_client_tick(c, 5);
}

static int full_gc(ami_lua_runtime_t *rt, ami_client_t *c)
{
    ami_err_t err;
    ami_lua_stats_t a, b;
    ami_lua_runtime_stats(rt, &a);
    if (ami_lua_runtime_spawn_string(rt, "full-gc",
                                     "collectgarbage('collect') collectgarbage('collect')", true,
                                     &err) < 0) {
        fprintf(stderr, "bench_coro_mem: gc: %s\n", err.msg);
        return -1;
    }
    settle(c, 50);
    ami_lua_runtime_stats(rt, &b);
    if (b.handler_errors != a.handler_errors) {
        fprintf(stderr, "bench_coro_mem: the full GC chunk failed (see the log)\n");
        return -1;
    }
    return 0;
}

static void measure(ami_lua_runtime_t *rt, snap_t *s)
{
    ami_lua_stats_t st;
    ami_lua_runtime_stats(rt, &st);
    s->live = ami_alloc_live_bytes();
    s->blocks = ami_alloc_live_blocks();
    s->lua = st.lua_memory;
    s->rss_kib = bench_vmrss_kib();
    struct mallinfo2 mi = mallinfo2();
    s->in_use = mi.uordblks + mi.hblkhd;
    s->kept = mi.fordblks;
}

/* Bytes the connection preallocates per max_pending slot (the correlation
 * registry's slot table, heap and free list): two servers that differ only
 * in max_pending, on a client that never starts. */
static double slot_bytes(uint32_t count)
{
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    ami_client_t *c = ami_client_new(&cc, NULL);
    if (!c)
        return -1;
    ami_server_options_t so;
    ami_server_options_default(&so);
    so.host = "127.0.0.1";
    so.username = "engine";
    so.secret = "s3cret";
    so.server_key = "a";
    so.max_pending = 16;
    int64_t l0 = ami_alloc_live_bytes();
    ami_client_add_server(c, &so, NULL);
    int64_t l1 = ami_alloc_live_bytes();
    so.server_key = "b";
    so.max_pending = count + 16;
    ami_client_add_server(c, &so, NULL);
    int64_t l2 = ami_alloc_live_bytes();
    ami_client_free(c);
    return (double)((l2 - l1) - (l1 - l0)) / count;
}

int main(int argc, char **argv)
{
    uint32_t count = 10000;
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("count", "N", "parked coroutines, 1..100000 (default 10000)",
            BENCH_UINT, &count, 1, 100000),
    };
    int args_rc = bench_args_parse(argc, argv, "bench_coro_mem", args, BENCH_NARGS(args));
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    uint16_t port = 0;
    pid_t child = sim_fork(&port);
    if (child < 0) {
        fprintf(stderr, "bench_coro_mem: cannot start the simulator\n");
        return 1;
    }

    int rc = 1;
    ami_err_t err;
    char dir[64] = "";
    ami_lua_runtime_t *rt = NULL;
    ami_logger_config_t lcfg;
    ami_logger_config_default(&lcfg);
    lcfg.level = AMI_LOG_ERROR;
    ami_logger_t *log = ami_logger_new(&lcfg);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = loop;
    cc.log = log;
    ami_client_t *client = ami_client_new(&cc, &err);
    if (!client)
        goto out;
    ami_server_options_t so;
    ami_server_options_default(&so);
    so.server_key = "pbx1";
    so.host = "127.0.0.1";
    so.port = port;
    so.username = "engine";
    so.secret = "s3cret";
    so.heartbeat_interval_ms = 0; /* the server will never answer a Ping */
    so.action_timeout_ms = TIMEOUT_MS;
    so.max_pending = count + 16;
    so.write_hwm = (size_t)count * 256 + (1u << 20);
    if (ami_client_add_server(client, &so, &err) < 0) {
        fprintf(stderr, "bench_coro_mem: %s\n", err.msg);
        goto out;
    }
    ami_client_start(client);
    int64_t deadline = ami_now_ms() + 5000;
    while (ami_client_connected_count(client) < 1 && ami_now_ms() < deadline)
        ami_client_tick(client, 10);
    if (ami_client_connected_count(client) < 1) {
        fprintf(stderr, "bench_coro_mem: no login\n");
        goto out;
    }

    snprintf(dir, sizeof dir, "/tmp/ami-bench-coro-XXXXXX");
    if (!mkdtemp(dir)) {
        dir[0] = '\0';
        goto out;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/bench.lua", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        goto out;
    fputs("local ami = require \"ami\"\n", f);
    fclose(f);
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.scripts_dir = dir;
    lc.watch_scripts = false;
    lc.max_coroutines = count + 1000;
    rt = ami_lua_runtime_new(client, &lc, &err);
    if (!rt || ami_lua_runtime_load(rt, &err) < 0) {
        fprintf(stderr, "bench_coro_mem: runtime: %s\n", err.msg);
        goto out;
    }
    settle(client, 200);

    /* 1. baseline */
    snap_t s0, s1, s2;
    if (full_gc(rt, client) < 0)
        goto out;
    measure(rt, &s0);

    /* 2. park */
    char code[512];
    snprintf(code, sizeof code,
             "local ami = require 'ami'\n"
             "local opts = {timeout = %u}\n"
             "local function park() return ami.action('pbx1', 'Ping', nil, opts) end\n"
             "for i = 1, %u do\n"
             "  if i %% 1000 == 0 then ami.sleep(0) end -- stay within the handler budget\n"
             "  assert(ami.spawn(park))\n"
             "end\n",
             TIMEOUT_MS, count);
    if (ami_lua_runtime_spawn_string(rt, "park", code, false, &err) < 0) {
        fprintf(stderr, "bench_coro_mem: %s\n", err.msg);
        goto out;
    }
    deadline = ami_now_ms() + 30000;
    ami_lua_stats_t st;
    ami_server_info_t info;
    for (;;) {
        ami_client_tick(client, 5);
        ami_lua_runtime_stats(rt, &st);
        ami_client_server_info(client, 0, &info);
        if ((st.coroutines_parked >= count && info.pending >= count) || ami_now_ms() > deadline)
            break;
    }
    if (st.coroutines_parked < count || info.pending < count) {
        fprintf(stderr, "bench_coro_mem: only %llu coroutines parked, %zu actions pending\n",
                (unsigned long long)st.coroutines_parked, info.pending);
        goto out;
    }
    settle(client, 300); /* every Ping written and read by the server */
    if (full_gc(rt, client) < 0)
        goto out;
    measure(rt, &s1);
    ami_lua_runtime_stats(rt, &st);
    ami_client_server_info(client, 0, &info);
    size_t parked = (size_t)st.coroutines_parked;
    size_t pending = info.pending;

    /* 4. release */
    ami_conn_force_close(ami_client_conn(client, 0), AMI_E_DISCONNECTED, "bench over");
    deadline = ami_now_ms() + 10000;
    do {
        ami_client_tick(client, 5);
        ami_lua_runtime_stats(rt, &st);
    } while (st.coroutines_parked > 0 && ami_now_ms() < deadline);
    settle(client, 100);
    if (full_gc(rt, client) < 0)
        goto out;
    measure(rt, &s2);

    double per = (double)(s1.live - s0.live) / count;
    double per_lua = (double)(s1.lua - s0.lua) / count;
    double per_blocks = (double)(s1.blocks - s0.blocks) / count;
    printf("coro_mem: %.0f bytes per parked coroutine with its pending action (%u parked; "
           "target <= 2048)\n", per, count);
    printf("coro_mem_lua: %.0f bytes of it in the Lua heap (thread, stack, frames), %.0f in C "
           "(scheduler, wait, registry, buffers); %.1f C blocks each\n",
           per_lua, per - per_lua, per_blocks);
    printf("coro_mem_malloc: %.0f bytes per parked coroutine as malloc sees it (its chunk "
           "headers and rounding, and the engine's 16-byte size header per block, included)\n",
           (double)((int64_t)s1.in_use - (int64_t)s0.in_use) / count);
    printf("coro_mem_rss: %.0f bytes per parked coroutine in VmRSS (an upper bound: it also "
           "counts %.0f bytes per coroutine freed after the burst of spawns but kept by malloc)\n",
           (double)(s1.rss_kib - s0.rss_kib) * 1024.0 / count,
           (double)((int64_t)s1.kept - (int64_t)s0.kept) / count);
    double slot = slot_bytes(count);
    printf("coro_mem_slot: +%.0f bytes per max_pending slot, preallocated by the connection at "
           "start (in the baseline above; %.0f bytes with it)\n", slot, per + slot);
    printf("coro_mem_totals: live bytes %lld before, %lld parked (%zu coroutines, %zu pending), "
           "%lld after release (+%lld: the coroutine pool's idle cache of up to 256, tables and "
           "buffers grown for the burst)\n",
           (long long)s0.live, (long long)s1.live, parked, pending, (long long)s2.live,
           (long long)(s2.live - s0.live));
    rc = 0;

out:
    if (rt)
        ami_lua_runtime_free(rt);
    ami_client_free(client);
    ev_loop_destroy(loop);
    ami_logger_free(log);
    if (dir[0])
        bench_remove_dir(dir);
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    return rc;
}
