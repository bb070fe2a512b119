/*
 * The live call state's costs, printed as figures:
 *
 *   memory    bytes per tracked channel: live bytes of the engine with N
 *             channels minus with N/10, over the difference (records,
 *             slots, indexes; two tracked variables set on each channel)
 *   apply     ns per event applied to a table (Newchannel, Newstate,
 *             Newexten, Hangup of realistic snapshots, parsed once,
 *             applied in a loop): the table alone, no socket, no Lua
 *   snapshot  with N live channels (half of them bridged in pairs):
 *             microseconds for the first ami.channels() (every object
 *             made), then per ami.channels() (objects of unchanged
 *             channels reused), ami.calls(), ami.channel(uniqueid), and per
 *             field read, measured inside the Lua runtime (JIT off, as the
 *             engine runs scripts)
 *
 * The channels reach the engine as events from a simulated Asterisk over
 * loopback, as in production: Newchannel, BridgeEnter, VarSet.
 *
 *   bench_calls [--channels N] [--runs R]
 */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_args.h"
#include "bench_util.h"
#include "callstate/callstate_internal.h"
#include "cluster/client.h"
#include "lua/runtime.h"
#include "protocol/parser.h"
#include "sim/sim.h"
#include "util/alloc.h"
#include "util/clock.h"

typedef struct bench {
    struct ev_loop *loop;
    ami_sim_t *sim;
    ami_sim_node_t *node;
    ami_metrics_t *metrics;
    ami_client_t *client;
    ami_callstate_t *cs;
    ami_lua_runtime_t *rt;
    size_t want;
} bench_t;

static void inject_channel(bench_t *b, unsigned i)
{
    char ev[2048];
    unsigned call = i / 2;
    int n = snprintf(ev, sizeof ev,
                     "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/%u-%08x\r\nChannelState: 6\r\n"
                     "ChannelStateDesc: Up\r\nCallerIDNum: %u\r\nCallerIDName: User %u\r\n"
                     "ConnectedLineNum: %u\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\n"
                     "Context: from-internal\r\nExten: %u\r\nPriority: 1\r\nUniqueid: 1700000000.%u\r\n"
                     "Linkedid: 1700000000.%u\r\n\r\n",
                     1001 + i % 50, i, 1001 + i % 50, 1001 + i % 50, 2001 + i % 40, 2001 + i % 40, i, call * 2);
    ami_sim_node_inject(b->node, ev, (size_t)n);
    n = snprintf(ev, sizeof ev,
                 "Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/%u-%08x\r\nUniqueid: 1700000000.%u\r\n"
                 "Variable: CRM_ID\r\nValue: crm-%u\r\n\r\nEvent: VarSet\r\nPrivilege: dialplan,all\r\n"
                 "Channel: PJSIP/%u-%08x\r\nUniqueid: 1700000000.%u\r\nVariable: CALLTAG\r\nValue: tag-%u\r\n\r\n",
                 1001 + i % 50, i, i, i, 1001 + i % 50, i, i, i);
    ami_sim_node_inject(b->node, ev, (size_t)n);
    if (call % 2 == 0) {
        n = snprintf(ev, sizeof ev, "Event: BridgeEnter\r\nPrivilege: call,all\r\nBridgeUniqueid: br-%u\r\n"
                                    "Uniqueid: 1700000000.%u\r\n\r\n", call, i);
        ami_sim_node_inject(b->node, ev, (size_t)n);
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static bool run_until_count(bench_t *b, size_t count, double secs)
{
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.005, 0.005);
    ev_timer_start(b->loop, &tick);
    double deadline = bench_now_s() + secs;
    while (ami_callstate_count(b->cs, 0) != count && bench_now_s() < deadline)
        ev_run(b->loop, EVRUN_ONCE);
    ev_timer_stop(b->loop, &tick);
    return ami_callstate_count(b->cs, 0) == count;
}

static void run_for(bench_t *b, double secs)
{
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.005, 0.005);
    ev_timer_start(b->loop, &tick);
    double deadline = bench_now_s() + secs;
    while (bench_now_s() < deadline)
        ev_run(b->loop, EVRUN_ONCE);
    ev_timer_stop(b->loop, &tick);
}

static int setup(bench_t *b)
{
    b->loop = ev_loop_new(EVFLAG_AUTO);
    b->sim = ami_sim_new(b->loop, NULL);
    ami_sim_node_config_t nc = {.name = "pbx1"};
    ami_err_t err;
    b->node = ami_sim_add_node(b->sim, &nc, &err);
    b->metrics = ami_metrics_new(10000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = b->loop;
    cc.metrics = b->metrics;
    b->client = ami_client_new(&cc, &err);
    if (!b->node || !b->client)
        return -1;
    ami_server_options_t so;
    ami_server_options_default(&so);
    so.server_key = "pbx1";
    so.host = "127.0.0.1";
    so.port = ami_sim_node_port(b->node);
    so.username = "engine";
    so.secret = "s3cret";
    if (ami_client_add_server(b->client, &so, &err) < 0)
        return -1;
    static const char *const VARS[] = {"CRM_ID", "CALLTAG"};
    ami_callstate_config_t csc;
    ami_callstate_config_default(&csc);
    csc.variables = VARS;
    csc.nvariables = 2;
    csc.max_channels = 1000000;
    b->cs = ami_callstate_new(b->client, &csc, &err);
    if (!b->cs)
        return -1;
    ami_client_start(b->client);
    double deadline = bench_now_s() + 5;
    while (!ami_callstate_synced(b->cs, 0) && bench_now_s() < deadline)
        ami_client_tick(b->client, 10);
    return ami_callstate_synced(b->cs, 0) ? 0 : -1;
}

static void teardown(bench_t *b)
{
    ami_lua_runtime_free(b->rt);
    ami_callstate_free(b->cs);
    ami_client_free(b->client);
    ami_sim_free(b->sim);
    ami_metrics_free(b->metrics);
    ev_loop_destroy(b->loop);
}

static int add_channels(bench_t *b, unsigned from, unsigned to)
{
    for (unsigned i = from; i < to; i++) {
        inject_channel(b, i);
        if (i % 200 == 199)
            run_for(b, 0.001);
    }
    if (!run_until_count(b, to, 20)) {
        fprintf(stderr, "bench_calls: the table holds %zu channels, not %u\n", ami_callstate_count(b->cs, 0), to);
        return -1;
    }
    run_for(b, 0.05); /* the VarSets and BridgeEnters after the last Newchannel */
    return 0;
}

/* ---- apply: the table alone ---------------------------------------------------------- */

static void bench_apply(unsigned rounds)
{
    static const char *const VARS[] = {"CRM_ID", "CALLTAG"};
    static const size_t VLEN[] = {6, 7};
    chan_read_conf_t conf = {.nvars = 2, .var_names = VARS, .var_name_len = VLEN, .var_max = 256};
    uint64_t serials = 0;
    void *scratch = ami_malloc(chan_max_size(2, 256));
    cs_table_t t;
    cs_table_init(&t, &conf, 100000, &serials, scratch);
    static const char BLOCK[] =
        "Channel: PJSIP/1001-00000042\r\nChannelState: %d\r\nChannelStateDesc: %s\r\nCallerIDNum: 1001\r\n"
        "CallerIDName: User 1001\r\nConnectedLineNum: 2001\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\n"
        "AccountCode: \r\nContext: from-internal\r\nExten: 2001\r\nPriority: %d\r\nUniqueid: 1700000000.42\r\n"
        "Linkedid: 1700000000.42\r\n";
    char text[4096];
    size_t len = 0;
    len += (size_t)snprintf(text + len, sizeof text - len, "Event: Newchannel\r\nPrivilege: call,all\r\n");
    len += (size_t)snprintf(text + len, sizeof text - len, BLOCK, 4, "Ring", 1);
    len += (size_t)snprintf(text + len, sizeof text - len, "\r\nEvent: Newstate\r\nPrivilege: call,all\r\n");
    len += (size_t)snprintf(text + len, sizeof text - len, BLOCK, 6, "Up", 1);
    len += (size_t)snprintf(text + len, sizeof text - len, "\r\nEvent: Newexten\r\nPrivilege: dialplan,all\r\n");
    len += (size_t)snprintf(text + len, sizeof text - len, BLOCK, 6, "Up", 2);
    len += (size_t)snprintf(text + len, sizeof text - len,
                            "Extension: 2001\r\nApplication: Dial\r\nAppData: PJSIP/2001,30\r\n");
    len += (size_t)snprintf(text + len, sizeof text - len, "\r\nEvent: Hangup\r\nPrivilege: call,all\r\n");
    len += (size_t)snprintf(text + len, sizeof text - len, BLOCK, 6, "Up", 2);
    len += (size_t)snprintf(text + len, sizeof text - len, "Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n");
    /* the parser's messages are borrowed: keep one parser per message */
    ami_parser_t p[4];
    ami_msg_t m[4];
    const char *at = text;
    for (int i = 0; i < 4; i++) {
        const char *end = strstr(at, "\r\n\r\n") + 4;
        ami_parser_init(&p[i], NULL);
        ami_parser_expect_banner(&p[i], false);
        ami_parser_feed(&p[i], at, (size_t)(end - at), NULL);
        ami_parser_next(&p[i], &m[i], NULL);
        at = end;
    }
    /* The machine is shared: the best of 20 slices is the cost, the rest is waiting. */
    double best = 1e18, best_read = 1e18;
    unsigned slice = rounds / 20 ? rounds / 20 : 1;
    chan_update_t u;
    event_extras_t x;
    uint64_t sink = 0;
    for (int k = 0; k < 20; k++) {
        int64_t t0 = ami_now_ns();
        for (unsigned r = 0; r < slice; r++)
            for (int i = 0; i < 4; i++)
                cs_table_apply(&t, &m[i], 1700000000.0);
        int64_t t1 = ami_now_ns();
        for (unsigned r = 0; r < slice; r++) {
            u.str_mask = 0;
            sink += chan_read(&m[1], "", 0, &conf, &u, &x) + u.str_mask;
        }
        int64_t t2 = ami_now_ns();
        if ((double)(t1 - t0) / (4.0 * slice) < best)
            best = (double)(t1 - t0) / (4.0 * slice);
        if ((double)(t2 - t1) / slice < best_read)
            best_read = (double)(t2 - t1) / slice;
    }
    printf("apply: %.0f ns per event into the table (Newchannel, Newstate, Newexten, Hangup of one channel; "
           "best of 20 x %u events; the table alone)\n", best, 4 * slice);
    printf("apply: %.0f ns of it to read the event's snapshot (%zu headers)%s\n", best_read, m[1].nhdrs,
           sink == 1 ? " " : "");
    for (int i = 0; i < 4; i++)
        ami_parser_deinit(&p[i]);
    cs_table_deinit(&t);
    ami_free(scratch);
}

/* ---- snapshots, from Lua ----------------------------------------------------------------- */

static const char SNAPSHOT_SCRIPT[] =
    "local ami = require 'ami'\n"
    "local runs, n = %u, %u\n"
    "local uid = '1700000000.' .. (n - 1)\n"
    "local function time(what, per, f)\n"
    "  f() -- warm\n"
    "  local t0 = os.clock()\n"
    "  for _ = 1, runs do f() end\n"
    "  local us = (os.clock() - t0) / runs * 1e6\n"
    "  io.write(string.format('snapshot: %%9.1f us per %%s (%%s)\\n', us, what, per(us)))\n"
    "end\n"
    "local c0 = os.clock()\n"
    "local chans = ami.channels('pbx1') -- cold: every object made\n"
    "local cold = (os.clock() - c0) * 1e6\n"
    "assert(#chans == n, 'channels: ' .. #chans)\n"
    "io.write(string.format('snapshot: %%9.1f us for the first ami.channels() (%%d objects made, %%.0f ns each)\\n',\n"
    "                       cold, n, cold * 1000 / n))\n"
    "local calls = ami.calls('pbx1')\n"
    "time('ami.channels()', function(us) return string.format('%%d channels, %%.0f ns each', n, us * 1000 / n) end,\n"
    "     function() return ami.channels('pbx1') end)\n"
    "time('ami.calls()', function(us) return string.format('%%d calls of %%d channels', #calls, n) end,\n"
    "     function() return ami.calls('pbx1') end)\n"
    "time('ami.channel(uniqueid)', function() return 'one channel' end, function() return ami.channel('pbx1', uid) end)\n"
    "time('ami.channels(filter)', function() return 'linkedid filter, one call' end,\n"
    "     function() return ami.channels('pbx1', {linkedid = chans[1].linkedid}) end)\n"
    "local ch = chans[1]\n"
    "time('field read x100', function(us) return string.format('%%.0f ns per field', us * 10) end,\n"
    "     function() local s for _ = 1, 100 do s = ch.state_desc end return s end)\n"
    "io.flush()\n";

static int bench_snapshots(bench_t *b, unsigned runs)
{
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.callstate = b->cs;
    lc.watch_scripts = false;
    lc.handler_budget_ms = 60000;
    ami_err_t err;
    b->rt = ami_lua_runtime_new(b->client, &lc, &err);
    if (!b->rt || ami_lua_runtime_load(b->rt, &err) < 0) {
        fprintf(stderr, "bench_calls: runtime: %s\n", err.msg);
        return -1;
    }
    char code[4096];
    snprintf(code, sizeof code, SNAPSHOT_SCRIPT, runs, (unsigned)b->want);
    if (ami_lua_runtime_spawn_string(b->rt, "=bench_calls", code, true, &err) < 0) {
        fprintf(stderr, "bench_calls: %s\n", err.msg);
        return -1;
    }
    ami_lua_stats_t st;
    double deadline = bench_now_s() + 120;
    do {
        ev_run(b->loop, EVRUN_NOWAIT);
        ami_lua_runtime_stats(b->rt, &st);
    } while (st.handler_runs == 0 && st.handler_errors == 0 && bench_now_s() < deadline);
    return st.handler_errors ? -1 : 0;
}

int main(int argc, char **argv)
{
    unsigned channels = 500, runs = 2000;
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("channels", "N", "live channels per server, >= 20 (default 500)",
            BENCH_UINT, &channels, 20, 1e6),
        BENCH_OPT_NUM("runs", "R", "timed repetitions: snapshots R, applied events 500 R (default 2000)",
            BENCH_UINT, &runs, 1, 1e7),
    };
    int args_rc = bench_args_parse(argc, argv, "bench_calls", args, BENCH_NARGS(args));
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    bench_apply(runs * 500);
    bench_t b = {.want = channels};
    int rc = 1;
    if (setup(&b) == 0) {
        unsigned base = channels / 10;
        int64_t live0 = 0, live1 = 0;
        if (add_channels(&b, 0, base) == 0) {
            live0 = ami_alloc_live_bytes();
            if (add_channels(&b, base, channels) == 0) {
                live1 = ami_alloc_live_bytes();
                printf("memory: %.0f bytes per tracked channel (%u channels, 2 variables set on each; "
                       "live bytes with %u minus with %u)\n", (double)(live1 - live0) / (channels - base),
                       channels, channels, base);
                rc = bench_snapshots(&b, runs) == 0 ? 0 : 1;
            }
        }
    } else {
        fprintf(stderr, "bench_calls: the engine did not connect to the simulator\n");
    }
    teardown(&b);
    return rc;
}
