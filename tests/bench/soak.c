/*
 * The soak: a day of production in under an hour, with exact accounting.
 *
 * The engine (client + Lua runtime running the example scripts) works
 * against a simulated 2-node cluster in a child process (tests/bench/
 * soak_sim.c) that generates real-shaped call traffic. Its timers are scaled
 * so that a 45-minute run holds more of each of these than 24 hours at
 * production settings (the assumptions are printed with the figures):
 *
 *   heartbeat cycles   a Ping every --heartbeat-ms (production: every 5 s)
 *   forced heartbeat   every --disconnect-every s one node (in turn) is
 *   disconnects        frozen until the heartbeat gives up ("Max heartbeat
 *                      failures"), then thawed: by SIGSTOP of its process, as
 *                      the real Asterisk of issue 10 was, and by the
 *                      simulator's own silence (it answers nothing and sends
 *                      no event), each node taking both in turn (--freeze).
 *                      No direct call to force-close: real missed Pongs
 *   reconnects         one after each of those
 *   reloads            every --reload-every s (a new Lua generation)
 *   list actions       CoreShowChannels from the soak and QueueStatus from
 *                      scripts/queue_stats.lua, each every --list-every s per
 *                      server
 *
 * At the end every node goes quiet, the scripts stop, the engine logs off,
 * and the accounting must be exact:
 *   - every action the engine sent (logins, Pings, the scripts' and the
 *     soak's) resolved exactly once (an answer, an error or a timeout) or was
 *     cancelled by its owner: none twice, none lost, none left open; every
 *     CoreShowChannels that completed delivered exactly the ListItems its
 *     Complete event announced;
 *   - per node and event name, the events the simulator queued equal the
 *     events the engine parsed, plus those in flight at a forced disconnect,
 *     counted session by session (the simulator's sessions against the
 *     engine's, banner to banner): a session may come short only if the
 *     engine ended it for missed heartbeats, and the shortfalls must add up
 *     to the per-name differences. A SIGSTOPped node catches up when it is
 *     continued, answering into the session the engine has just closed: those
 *     events really were in flight. A muted node sends nothing more (what it
 *     would have sent is counted as muted and printed).
 * Memory: after a warm-up, live bytes (the engine's allocation account,
 * Lua heaps included), RSS and open descriptors are sampled every
 * --sample-every s right after a full Lua collection; see soak_trend.c for
 * the verdict (least-squares slopes per hour on long runs, troughs always).
 *
 *   soak [--duration S] [--warmup S] [--heartbeat-ms MS] [--disconnect-every S]
 *        [--freeze stop|mute] [--reload-every S] [--list-every S] [--sample-every S]
 *        [--cps N] [--log-level L] [--inject-leak BYTES] [--require-24h]
 * Exit 0 when everything held, 1 otherwise, 2 for bad arguments.
 */
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_args.h"
#include "bench_util.h"
#include "callstate/callstate.h"
#include "cluster/client.h"
#include "session/conn.h"
#include "lua/runtime.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "soak.h"
#include "util/alloc.h"
#include "util/clock.h"

#ifndef AMI_BENCH_SOURCE_DIR
#error "AMI_BENCH_SOURCE_DIR must name the source tree (scripts/, lua/)"
#endif

/* Production, as assumed for the 24-hour equivalents (pessimistic where a
 * guess was needed: more churn than a healthy site sees). */
#define PROD_HEARTBEAT_S 5.0
#define PROD_DISCONNECTS_PER_SERVER_DAY 144.0 /* one every 10 minutes per server */
#define PROD_RELOADS_DAY 144.0                /* a deploy every 10 minutes */
#define PROD_LIST_EVERY_S 10.0                /* each list action, per server */
#define DAY_S 86400.0
#define FROZEN_TOO_LONG_S 30.0

enum { FREEZE_STOP, FREEZE_MUTE, FREEZE_BOTH };

static int parse_freeze(const char *v)
{
    return strcmp(v, "stop") == 0 ? FREEZE_STOP : strcmp(v, "mute") == 0 ? FREEZE_MUTE
                                                : strcmp(v, "both") == 0 ? FREEZE_BOTH : -1;
}

typedef struct options {
    double duration, warmup, disconnect_every, reload_every, list_every, sample_every, cps;
    uint32_t heartbeat_ms, heartbeat_failures, call_ms;
    int log_level;
    size_t inject_leak;
    bool require_24h;
    int freeze; /* FREEZE_* */
} options_t;

typedef struct soak {
    const options_t *o;
    struct ev_loop *loop;
    ami_client_t *client;
    ami_callstate_t *callstate; /* the live call state, as `callstate = {}` gives the engine */
    ami_lua_runtime_t *rt;
    soak_sim_t sim;
    soak_account_t acct;
    soak_trend_t trend;
    double t0;
    ev_timer cycle_t, reload_t, list_t, sample_t, sample_ready_t, end_t;
    bool frozen[SOAK_NODES];
    double frozen_at[SOAK_NODES];
    uint64_t next_node, freezes, stop_freezes, hb_closes, closes_while_frozen, stuck;
    uint64_t unplanned_hb;  /* heartbeat closes of a node nobody froze: the machine stalled it */
    uint64_t other_closes;  /* closes of a node nobody froze, for any other reason */
    double detect_min, detect_max, detect_sum;
    uint64_t reloads, reload_failures;
    void **leaked;
    size_t nleaked, leaked_cap;
} soak_t;

/* ---- forced heartbeat disconnects through real silence -------------------------------- */

static void thaw(soak_t *s, size_t i)
{
    s->frozen[i] = false;
    soak_sim_thaw(&s->sim, i);
}

static void on_cycle(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    soak_t *s = w->data;
    for (size_t i = 0; i < SOAK_NODES; i++)
        if (s->frozen[i]) {
            if (ev_now(loop) - s->frozen_at[i] > FROZEN_TOO_LONG_S) {
                s->stuck++; /* the heartbeat never gave up */
                thaw(s, i);
            }
            return; /* one node frozen at a time: the other keeps working */
        }
    size_t i = (size_t)(s->next_node % SOAK_NODES);
    if (ami_conn_state(ami_client_conn(s->client, i)) != AMI_CONN_CONNECTED)
        return; /* still coming back from the last one */
    /* the nodes take turns, and each node takes the two kinds of freeze in turn */
    bool stop = s->o->freeze == FREEZE_STOP || (s->o->freeze == FREEZE_BOTH && s->next_node / SOAK_NODES % 2 == 0);
    s->next_node++;
    s->frozen[i] = true;
    s->frozen_at[i] = ev_now(loop);
    s->freezes++;
    s->stop_freezes += stop;
    soak_sim_freeze(&s->sim, i, stop);
}

static void on_state(void *ud, const char *key, ami_conn_state_t from, ami_conn_state_t to, const char *reason)
{
    (void)from;
    soak_t *s = ud;
    if (to != AMI_CONN_BACKOFF)
        return;
    int i = ami_client_server_index(s->client, key);
    if (i < 0)
        return;
    bool heartbeat = reason && strcmp(reason, "Max heartbeat failures") == 0;
    if (!s->frozen[i]) {
        /* A node nobody froze went silent anyway: the machine stalled it (or
         * the engine) past the heartbeat's tolerance. Still a heartbeat close,
         * accounted as such; other reasons are not expected at all. */
        if (heartbeat) {
            s->unplanned_hb++;
            soak_account_heartbeat_closed(&s->acct, (size_t)i);
        } else {
            s->other_closes++;
        }
        fprintf(stderr, "soak: %s closed while not frozen: %s\n", key, reason ? reason : "");
        return;
    }
    if (!heartbeat) {
        s->closes_while_frozen++; /* e.g. a login that began just before the freeze */
        return;
    }
    double took = ev_now(s->loop) - s->frozen_at[i];
    s->detect_min = s->hb_closes == 0 || took < s->detect_min ? took : s->detect_min;
    s->detect_max = took > s->detect_max ? took : s->detect_max;
    s->detect_sum += took;
    s->hb_closes++;
    soak_account_heartbeat_closed(&s->acct, (size_t)i);
    thaw(s, (size_t)i);
    if (s->o->inject_leak && s->nleaked < s->leaked_cap)
        s->leaked[s->nleaked++] = ami_malloc(s->o->inject_leak);
}

/* ---- reloads, list actions, samples ---------------------------------------------------- */

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

static void on_list(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    soak_t *s = w->data;
    for (size_t i = 0; i < SOAK_NODES; i++)
        if (ami_conn_state(ami_client_conn(s->client, i)) == AMI_CONN_CONNECTED)
            soak_account_list(&s->acct, i);
}

static void sample(soak_t *s)
{
    ami_err_t err;
    if (ami_lua_runtime_spawn_string(s->rt, "soak-gc", "collectgarbage('collect')", true, &err) < 0)
        fprintf(stderr, "soak: collect: %s\n", err.msg);
    ami_lua_stats_t st;
    ami_lua_runtime_stats(s->rt, &st);
    soak_sample_t v = {.t = bench_now_s() - s->t0, .live = ami_alloc_live_bytes(), .lua = st.lua_memory,
                       .rss_kib = bench_vmrss_kib(), .fds = soak_open_fds(), .cycles = s->hb_closes};
    for (size_t i = 0; i < SOAK_NODES; i++)
        v.buffers += (int64_t)ami_conn_stats(ami_client_conn(s->client, i))->buffer_bytes;
    soak_trend_add(&s->trend, &v);
}

/* A sample waits until the last reload's old generation is closed (its
 * heap would count twice), checking every 50 ms. */
static void on_sample_ready(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    soak_t *s = w->data;
    ami_lua_stats_t st;
    ami_lua_runtime_stats(s->rt, &st);
    if (st.generations_live > 1)
        return;
    ev_timer_stop(loop, w);
    sample(s);
}

static void on_sample(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    soak_t *s = w->data;
    if (bench_now_s() - s->t0 >= s->o->warmup && !ev_is_active(&s->sample_ready_t))
        ev_timer_start(loop, &s->sample_ready_t);
}

static void on_end(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* ---- setup ------------------------------------------------------------------------------ */

static int add_servers(soak_t *s)
{
    static const char *const keys[SOAK_NODES] = {"pbx1", "pbx2"};
    for (size_t i = 0; i < SOAK_NODES; i++) {
        ami_server_options_t so;
        ami_server_options_default(&so);
        so.server_key = keys[i];
        so.host = "127.0.0.1";
        so.port = s->sim.ports[i];
        so.username = "engine";
        so.secret = "s3cret";
        so.heartbeat_interval_ms = s->o->heartbeat_ms;
        so.heartbeat_max_failures = s->o->heartbeat_failures;
        so.backoff_initial_ms = 100;
        so.backoff_max_ms = 400;
        so.action_timeout_ms = 3000;
        so.login_timeout_ms = 2000;
        ami_err_t err;
        if (ami_client_add_server(s->client, &so, &err) < 0) {
            fprintf(stderr, "soak: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

typedef bool (*pred_fn)(soak_t *s);

/* Run the loop until pred holds or ms pass. */
static bool run_until(soak_t *s, pred_fn pred, uint32_t ms)
{
    int64_t deadline = ami_now_ms() + ms;
    while (!pred(s) && ami_now_ms() < deadline)
        ami_client_tick(s->client, 10);
    return pred(s);
}

static bool all_connected(soak_t *s)
{
    return ami_client_connected_count(s->client) == SOAK_NODES;
}

static bool none_frozen(soak_t *s)
{
    for (size_t i = 0; i < SOAK_NODES; i++)
        if (s->frozen[i])
            return false;
    return true;
}

static bool lists_closed(soak_t *s)
{
    return s->acct.lists_open == 0;
}

static bool stopped(soak_t *s)
{
    return ami_client_stopped(s->client);
}

static int start_engine(soak_t *s)
{
    ami_err_t err;
    if (add_servers(s) < 0 || soak_account_attach(&s->acct, s->client) < 0 ||
        ami_client_on_state(s->client, on_state, s) < 0)
        return -1;
    ami_callstate_config_t csc;
    ami_callstate_config_default(&csc);
    s->callstate = ami_callstate_new(s->client, &csc, &err); /* the example scripts read it */
    if (!s->callstate) {
        fprintf(stderr, "soak: call state: %s\n", err.msg);
        return -1;
    }
    ami_client_start(s->client);
    if (!run_until(s, all_connected, 5000)) {
        fprintf(stderr, "soak: the simulated servers did not accept the login\n");
        return -1;
    }
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.scripts_dir = AMI_BENCH_SOURCE_DIR "/scripts";
    lc.lua_path = AMI_BENCH_SOURCE_DIR "/lua/?.lua;" AMI_BENCH_SOURCE_DIR "/lua/?/init.lua";
    lc.watch_scripts = false;
    lc.reload_grace_ms = 1000;
    static const char *const env_allowed[] = {"QUEUE_STATS_*", "AFTER_HOURS_*", NULL};
    lc.getenv_allow = env_allowed; /* the scripts' settings below */
    lc.callstate = s->callstate;
    s->rt = ami_lua_runtime_new(s->client, &lc, &err);
    if (!s->rt || ami_lua_runtime_load(s->rt, &err) < 0) {
        fprintf(stderr, "soak: runtime: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void start_timers(soak_t *s)
{
    const options_t *o = s->o;
    ev_timer_init(&s->cycle_t, on_cycle, o->disconnect_every, o->disconnect_every);
    ev_timer_init(&s->reload_t, on_reload, o->reload_every, o->reload_every);
    ev_timer_init(&s->list_t, on_list, o->list_every, o->list_every);
    ev_timer_init(&s->sample_t, on_sample, o->sample_every, o->sample_every);
    ev_timer_init(&s->sample_ready_t, on_sample_ready, 0., 0.05);
    s->sample_ready_t.data = s;
    ev_timer_init(&s->end_t, on_end, o->duration, 0.);
    ev_timer *all[] = {&s->cycle_t, &s->reload_t, &s->list_t, &s->sample_t, &s->end_t};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        all[i]->data = s;
        ev_timer_start(s->loop, all[i]);
    }
}

static void stop_timers(soak_t *s)
{
    ev_timer *all[] = {&s->cycle_t, &s->reload_t, &s->list_t, &s->sample_t, &s->sample_ready_t, &s->end_t};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ev_timer_stop(s->loop, all[i]);
}

/* The end: a last freeze completes, every node goes quiet, the scripts stop,
 * the soak's lists finish, the engine logs off; then nothing moves. */
static bool wind_down(soak_t *s)
{
    stop_timers(s);
    bool ok = run_until(s, none_frozen, 30000);
    ok = run_until(s, all_connected, 10000) && ok;
    ok = soak_sim_quiet(&s->sim) == 0 && ok;
    sample(s); /* the last point, engine still whole */
    ami_lua_runtime_shutdown(s->rt);
    ok = run_until(s, lists_closed, 10000) && ok;
    ami_client_stop(s->client, 1000);
    ok = run_until(s, stopped, 5000) && ok;
    if (!ok)
        printf("soak: FAIL: the engine did not wind down (frozen node, reconnect, quiet, lists or logoff)\n");
    return ok;
}

/* ---- the report ------------------------------------------------------------------------- */

static uint64_t logins(soak_t *s)
{
    uint64_t n = 0;
    for (size_t i = 0; i < SOAK_NODES; i++)
        n += ami_conn_stats(ami_client_conn(s->client, i))->logins;
    return n;
}

/* One figure against its 24-hour production equivalent; false when short. */
static bool day_line(const char *what, double got, double day, const char *assumed)
{
    printf("  %-32s %10.0f %12.0f %7.2f  %s\n", what, got, day, day > 0 ? got / day : 0, assumed);
    return got >= day;
}

static bool day_report(soak_t *s)
{
    const soak_count_t *qs = soak_account_action(&s->acct, "QueueStatus");
    double reconnects = (double)(logins(s) > SOAK_NODES ? logins(s) - SOAK_NODES : 0);
    printf("24-hour equivalents (2 servers)   this run   24 h at prod   ratio  production assumed\n");
    bool all = true;
    all &= day_line("heartbeat cycles (Pings answered)", (double)s->acct.pings_answered,
                    SOAK_NODES * DAY_S / PROD_HEARTBEAT_S, "a Ping every 5 s");
    all &= day_line("forced heartbeat disconnects", (double)s->hb_closes,
                    SOAK_NODES * PROD_DISCONNECTS_PER_SERVER_DAY, "one per server every 10 min");
    all &= day_line("reconnects", reconnects, SOAK_NODES * PROD_DISCONNECTS_PER_SERVER_DAY,
                    "one per forced disconnect");
    all &= day_line("reloads", (double)s->reloads, PROD_RELOADS_DAY, "one every 10 min");
    all &= day_line("CoreShowChannels", (double)s->acct.nlists, SOAK_NODES * DAY_S / PROD_LIST_EVERY_S,
                    "every 10 s per server");
    all &= day_line("QueueStatus (queue_stats.lua)", qs ? (double)qs->sent : 0,
                    SOAK_NODES * DAY_S / PROD_LIST_EVERY_S, "every 10 s per server");
    return all;
}

static bool cycles_report(soak_t *s)
{
    printf("cycles: %llu freezes (%llu by SIGSTOP, %llu muted), %llu ended by \"Max heartbeat failures\" (detected %.3f / %.3f / %.3f s "
           "after the freeze: min / mean / max), %llu other closes while frozen; not frozen: %llu "
           "heartbeat closes (a stalled machine), %llu other closes; %llu stuck; %llu logins; %llu reloads "
           "(%llu failed)\n",
           (unsigned long long)s->freezes, (unsigned long long)s->stop_freezes,
           (unsigned long long)(s->freezes - s->stop_freezes), (unsigned long long)s->hb_closes, s->detect_min,
           s->hb_closes ? s->detect_sum / (double)s->hb_closes : 0, s->detect_max,
           (unsigned long long)s->closes_while_frozen, (unsigned long long)s->unplanned_hb,
           (unsigned long long)s->other_closes,
           (unsigned long long)s->stuck, (unsigned long long)logins(s), (unsigned long long)s->reloads,
           (unsigned long long)s->reload_failures);
    bool want_cycles = s->o->disconnect_every < s->o->duration, want_reloads = s->o->reload_every < s->o->duration;
    /* A stall now and then is the machine; a close of healthy sessions at
     * every turn would be the engine. */
    uint64_t stalls_allowed = s->freezes / 100 > 2 ? s->freezes / 100 : 2;
    if (s->unplanned_hb > stalls_allowed)
        printf("soak: FAIL: %llu heartbeat closes of nodes nobody froze (at most %llu stalls of the machine "
               "are taken as such)\n", (unsigned long long)s->unplanned_hb, (unsigned long long)stalls_allowed);
    return (s->hb_closes > 0 || !want_cycles) && s->hb_closes == s->freezes && s->other_closes == 0 &&
           s->unplanned_hb <= stalls_allowed && s->stuck == 0 && (s->reloads > 0 || !want_reloads) &&
           s->reload_failures == 0 &&
           logins(s) == SOAK_NODES + s->hb_closes + s->closes_while_frozen + s->unplanned_hb;
}

static int report(soak_t *s, bool wound_down)
{
    soak_node_report_t sim[SOAK_NODES];
    bool sim_ok = soak_sim_report(&s->sim, sim) == 0;
    if (!sim_ok)
        printf("soak: FAIL: no report from the simulator\n");
    ami_lua_stats_t st;
    ami_lua_runtime_stats(s->rt, &st);
    printf("traffic: %llu + %llu calls simulated; %llu handler runs (%llu errors, %llu killed)\n",
           sim_ok ? (unsigned long long)sim[0].stats.calls_started : 0ull,
           sim_ok ? (unsigned long long)sim[1].stats.calls_started : 0ull, (unsigned long long)st.handler_runs,
           (unsigned long long)st.handler_errors, (unsigned long long)st.handler_kills);
    bool cycles = cycles_report(s);
    bool actions = soak_account_actions_report(&s->acct);
    bool events = sim_ok && soak_account_events_report(&s->acct, sim);
    soak_sim_report_free(sim);
    size_t tail_min = (size_t)(2 * s->o->reload_every / s->o->sample_every) + 1;
    bool judge = s->trend.n > 1 && s->trend.v[s->trend.n - 1].t - s->trend.v[0].t >= 600;
    bool memory = soak_trend_report(&s->trend, judge, tail_min);
    bool day = day_report(s);
    const soak_count_t *qs = soak_account_action(&s->acct, "QueueStatus");
    bool workload = st.handler_runs > 0 && s->acct.nlists > 0 && qs && qs->sent > 0;
    if (!workload)
        printf("soak: FAIL: the workload did not run (handler runs, the soak's lists, queue_stats.lua's "
               "QueueStatus)\n");
    bool pass = wound_down && workload && cycles && actions && events && memory && (day || !s->o->require_24h);
    printf("soak: %s: cycles %s, actions %s, events %s, memory %s, 24 h equivalent %s\n",
           pass ? "PASS" : "FAIL", cycles ? "ok" : "FAIL", actions ? "exact" : "FAIL",
           events ? "exact" : "FAIL", memory ? "flat" : "FAIL",
           day ? "reached" : s->o->require_24h ? "FAIL (--require-24h)" : "not reached (not required)");
    return pass ? 0 : 1;
}

/* ---- options ------------------------------------------------------------------------------ */

static bool log_level(void *out, const char *value)
{
    *(int *)out = ami_log_level_parse(value);
    return *(int *)out >= 0;
}

static bool freeze_mode(void *out, const char *value)
{
    *(int *)out = parse_freeze(value);
    return *(int *)out >= 0;
}

/* 0: run; 1: --help printed; 2: a bad argument reported. */
static int parse_args(options_t *o, int argc, char **argv)
{
    *o = (options_t){.duration = 60, .warmup = -1, .disconnect_every = 4, .reload_every = 5,
                     .list_every = 0.2, .sample_every = -1, .cps = 10, .heartbeat_ms = 100,
                     .heartbeat_failures = 5,
                     .call_ms = 3000, .log_level = AMI_LOG_ERROR, .freeze = FREEZE_BOTH};
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("duration", "S", "the run, >= 4 (default 60; CI 30; 2700 for a day's equivalent)",
            BENCH_DOUBLE, &o->duration, 4, 1e7),
        BENCH_OPT_NUM("warmup", "S", "before sampling (default: a quarter of the run, at most 60)",
            BENCH_DOUBLE, &o->warmup, 0, 1e7),
        BENCH_OPT_NUM("heartbeat-ms", "MS", "heartbeat interval (default 100)",
            BENCH_UINT, &o->heartbeat_ms, 10, 600000),
        BENCH_OPT_NUM("heartbeat-failures", "N",
            "failed rounds before the close (default 5: a loaded machine may stall a node for a few)",
            BENCH_UINT, &o->heartbeat_failures, 1, 1000),
        BENCH_OPT_NUM("disconnect-every", "S", "freeze a node, in turn, until its heartbeat fails (default 4)",
            BENCH_DOUBLE, &o->disconnect_every, 0.001, 1e7),
        BENCH_OPT_CHECK("freeze", "stop|mute|both",
            "SIGSTOP of the node's process, the simulator's silence, or each in turn (default both)",
            &o->freeze, freeze_mode),
        BENCH_OPT_NUM("reload-every", "S", "reload the scripts (default 5)",
            BENCH_DOUBLE, &o->reload_every, 0.001, 1e7),
        BENCH_OPT_NUM("list-every", "S", "CoreShowChannels and QueueStatus per server (default 0.2)",
            BENCH_DOUBLE, &o->list_every, 0.001, 1e7),
        BENCH_OPT_NUM("sample-every", "S", "memory samples (default 60 for runs of 10 min or more, else 1)",
            BENCH_DOUBLE, &o->sample_every, 0.01, 1e7),
        BENCH_OPT_NUM("cps", "N", "simulated calls per second per node (default 10)",
            BENCH_DOUBLE, &o->cps, 0, 1e6),
        BENCH_OPT_CHECK("log-level", "L", "debug, info, warn, error or off (default error)",
            &o->log_level, log_level),
        BENCH_OPT_NUM("inject-leak", "BYTES",
            "leak this much per forced disconnect (checks the detector; judged on runs of 10 min or more)",
            BENCH_SIZE, &o->inject_leak, 0, 1 << 30),
        BENCH_OPT_FLAG("require-24h", "fail unless every figure reaches its 24-hour equivalent",
            &o->require_24h),
    };
    int rc = bench_args_parse(argc, argv, "soak", args, BENCH_NARGS(args));
    if (rc != 0)
        return rc;
    if (o->warmup < 0)
        o->warmup = o->duration / 4 < 60 ? o->duration / 4 : 60;
    if (o->sample_every < 0)
        o->sample_every = o->duration >= 600 ? 60 : 1;
    if (o->warmup >= o->duration - 2) {
        fprintf(stderr, "soak: --warmup must end 2 s before --duration\n");
        return 2;
    }
    return 0;
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    options_t o;
    int args_rc = parse_args(&o, argc, argv);
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    /* The example scripts' settings: after_hours always "closed" (its
     * redirects run), queue_stats polling at the soak's list pace. */
    char every[32];
    snprintf(every, sizeof every, "%g", o.list_every);
    setenv("AFTER_HOURS_SCHEDULE", "never", 0);
    setenv("QUEUE_STATS_INTERVAL", every, 1);
    soak_t s = {.o = &o};
    if (soak_sim_start(&s.sim, o.cps, o.call_ms) < 0) /* before any thread exists */
        return 1;
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
    ami_err_t err;
    s.client = ami_client_new(&cc, &err);
    int rc = 1;
    if (!s.client || !s.leaked || start_engine(&s) < 0)
        goto out;
    printf("soak: %.0f s (warm-up %.0f s), 2 nodes at %.0f calls/s each, the example scripts; a Ping every "
           "%u ms (%u failed rounds close); a node frozen (%s) every %.1f s until its heartbeat fails; "
           "a reload every %.1f s; "
           "CoreShowChannels and QueueStatus every %.2f s per server; samples every %.0f s\n",
           o.duration, o.warmup, o.cps, o.heartbeat_ms, o.heartbeat_failures,
           o.freeze == FREEZE_STOP ? "SIGSTOP" : o.freeze == FREEZE_MUTE ? "muted" : "SIGSTOP or muted, in turn",
           o.disconnect_every, o.reload_every, o.list_every, o.sample_every);
    fflush(stdout);
    s.t0 = bench_now_s();
    start_timers(&s);
    ev_run(s.loop, 0);
    bool wound_down = wind_down(&s);
    rc = report(&s, wound_down);
out:
    if (s.rt) {
        ami_lua_runtime_shutdown(s.rt);
        ami_lua_runtime_free(s.rt);
    }
    soak_account_free(&s.acct);
    ami_callstate_free(s.callstate);
    ami_client_free(s.client);
    ami_metrics_free(metrics);
    ev_loop_destroy(s.loop);
    ami_logger_free(log);
    for (size_t i = 0; i < s.nleaked; i++)
        ami_free(s.leaked[i]);
    free(s.leaked);
    soak_trend_free(&s.trend);
    printf("teardown: %lld live bytes in %lld blocks after everything was freed\n",
           (long long)ami_alloc_live_bytes(), (long long)ami_alloc_live_blocks());
    soak_sim_stop(&s.sim);
    return rc;
}
