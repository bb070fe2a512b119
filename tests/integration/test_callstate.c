/*
 * The call state bound to a real client and the simulated Asterisk over
 * TCP on 127.0.0.1, on one loop.
 *
 * The proof used throughout is a checkpoint: the test sends its own
 * CoreShowChannels through the same client, and when the list completes
 * (in the action's callback, so the table has applied every event the
 * server wrote before the list) the table must equal the list field by
 * field, and hold as many calls as the list's channels grouped by Linkedid
 * and bridge. Scenarios: traffic with calls ringing, answered, bridged and
 * hung up; blind and attended transfers; renames; a reconnect in the
 * middle; a slow list with events flowing before it; an engine restart; a
 * failing rebuild that is retried. The simulator's Local originates that
 * run an application directly are not used: like Asterisk, it changes
 * their Application without an event.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "callstate/callstate.h"
#include "cluster/client.h"
#include "harness.h"
#include "obs/metrics.h"
#include "sim/sim.h"
#include "util/alloc.h"

#define MAX_ITEMS 512
#define FIELD 128

typedef struct item {
    char f[AMI_CHAN_STR_COUNT][FIELD];
    int state, priority;
} item_t;

typedef struct world {
    int64_t live_before;
    struct ev_loop *loop;
    ami_sim_t *sim;
    ami_sim_node_t *nodes[2];
    int nnodes;
    ami_client_t *client;
    ami_metrics_t *metrics;
    ami_callstate_t *cs;
    ami_callstate_config_t cfg;
    uint32_t heartbeat_ms;
    /* checkpoint */
    item_t items[MAX_ITEMS];
    size_t nitems;
    bool cp_done;
    char cp_error[512];
    size_t cp_channels, cp_calls, cp_bridged;
    /* a plain action */
    bool act_done;
    bool act_ok;
    char act_msg[128];
} world_t;

static void fast_options(ami_server_options_t *o, const char *key, uint16_t port, uint32_t heartbeat_ms)
{
    ami_server_options_default(o);
    o->server_key = key;
    o->host = "127.0.0.1";
    o->port = port;
    o->username = "engine";
    o->secret = "s3cret";
    o->heartbeat_interval_ms = heartbeat_ms;
    o->backoff_initial_ms = 20;
    o->backoff_max_ms = 200;
    o->action_timeout_ms = 3000;
}

static void start_engine(world_t *w)
{
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = w->loop;
    cc.metrics = w->metrics;
    cc.seed = 7;
    w->client = ami_client_new(&cc, NULL);
    assert_non_null(w->client);
    for (int i = 0; i < w->nnodes; i++) {
        ami_server_options_t o;
        fast_options(&o, i == 0 ? "pbx1" : "pbx2", ami_sim_node_port(w->nodes[i]), w->heartbeat_ms);
        ami_err_t err;
        if (ami_client_add_server(w->client, &o, &err) < 0)
            fail_msg("add_server: %s", err.msg);
    }
    ami_err_t err;
    w->cs = ami_callstate_new(w->client, &w->cfg, &err);
    if (!w->cs)
        fail_msg("callstate: %s", err.msg);
    ami_client_start(w->client);
}

static void stop_engine(world_t *w)
{
    ami_callstate_free(w->cs);
    ami_client_free(w->client);
    w->cs = NULL;
    w->client = NULL;
}

static bool all_synced(void *ud)
{
    world_t *w = ud;
    for (int i = 0; i < w->nnodes; i++)
        if (!ami_callstate_synced(w->cs, (size_t)i))
            return false;
    return true;
}

static world_t *world_new(int nnodes, double cps, uint32_t call_ms, const ami_callstate_config_t *cfg)
{
    world_t *w = calloc(1, sizeof *w);
    w->live_before = ami_alloc_live_bytes();
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->sim = ami_sim_new(w->loop, NULL);
    w->metrics = ami_metrics_new(5000);
    w->nnodes = nnodes;
    w->heartbeat_ms = 1000;
    for (int i = 0; i < nnodes; i++) {
        ami_sim_node_config_t nc = {.name = i == 0 ? "pbx1" : "pbx2", .calls_per_second = cps,
                                    .call_duration_ms = call_ms, .seed = (uint32_t)(11 + i)};
        ami_err_t err;
        w->nodes[i] = ami_sim_add_node(w->sim, &nc, &err);
        if (!w->nodes[i])
            fail_msg("sim: %s", err.msg);
    }
    if (cfg)
        w->cfg = *cfg;
    else
        ami_callstate_config_default(&w->cfg);
    return w;
}

static void world_start(world_t *w)
{
    start_engine(w);
    assert_true(harness_run_until(w->loop, all_synced, w, 3000));
}

static void world_free(world_t *w)
{
    stop_engine(w);
    ami_sim_free(w->sim);
    ami_metrics_free(w->metrics);
    ev_loop_destroy(w->loop);
    assert_int_equal(ami_alloc_live_bytes(), w->live_before);
    free(w);
}

/* ---- checkpoints ------------------------------------------------------------------ */

static const struct {
    const char *key;
    ami_chan_field_t f;
} ITEM_FIELDS[] = {
    {"Channel", AMI_CHAN_CHANNEL},           {"Uniqueid", AMI_CHAN_UNIQUEID},
    {"Linkedid", AMI_CHAN_LINKEDID},         {"ChannelStateDesc", AMI_CHAN_STATE_DESC},
    {"CallerIDNum", AMI_CHAN_CALLER_NUM},    {"CallerIDName", AMI_CHAN_CALLER_NAME},
    {"ConnectedLineNum", AMI_CHAN_CONNECTED_NUM}, {"ConnectedLineName", AMI_CHAN_CONNECTED_NAME},
    {"Language", AMI_CHAN_LANGUAGE},         {"AccountCode", AMI_CHAN_ACCOUNTCODE},
    {"Context", AMI_CHAN_CONTEXT},           {"Exten", AMI_CHAN_EXTEN},
    {"Application", AMI_CHAN_APPLICATION},   {"ApplicationData", AMI_CHAN_APPDATA},
    {"BridgeId", AMI_CHAN_BRIDGE},
};
#define NFIELDS (sizeof ITEM_FIELDS / sizeof ITEM_FIELDS[0])

static void keep_item(world_t *w, const ami_msg_t *m)
{
    if (w->nitems >= MAX_ITEMS)
        return;
    item_t *it = &w->items[w->nitems++];
    memset(it, 0, sizeof *it);
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *v = ami_msg_get(m, ITEM_FIELDS[i].key);
        snprintf(it->f[ITEM_FIELDS[i].f], FIELD, "%s", v ? v : "");
    }
    const char *st = ami_msg_get(m, "ChannelState"), *pr = ami_msg_get(m, "Priority");
    it->state = st ? atoi(st) : -1;
    it->priority = pr ? atoi(pr) : 0;
}

/* Calls among the listed channels, by Linkedid and bridge (quadratic: tests only). */
static size_t count_calls(world_t *w)
{
    size_t root[MAX_ITEMS];
    for (size_t i = 0; i < w->nitems; i++)
        root[i] = i;
    for (size_t i = 0; i < w->nitems; i++)
        for (size_t j = 0; j < i; j++) {
            const item_t *a = &w->items[i], *b = &w->items[j];
            bool same = strcmp(a->f[AMI_CHAN_LINKEDID], b->f[AMI_CHAN_LINKEDID]) == 0 ||
                        (a->f[AMI_CHAN_BRIDGE][0] && strcmp(a->f[AMI_CHAN_BRIDGE], b->f[AMI_CHAN_BRIDGE]) == 0);
            if (!same)
                continue;
            size_t ra = root[i], rb = root[j];
            for (size_t k = 0; k < w->nitems; k++)
                if (root[k] == ra)
                    root[k] = rb;
        }
    size_t n = 0;
    for (size_t i = 0; i < w->nitems; i++)
        n += root[i] == i;
    return n;
}

static void compare(world_t *w, size_t server)
{
    size_t count = ami_callstate_count(w->cs, server);
    if (count != w->nitems) {
        snprintf(w->cp_error, sizeof w->cp_error, "the table has %zu channels, the list %zu", count, w->nitems);
        return;
    }
    for (size_t i = 0; i < w->nitems; i++) {
        const item_t *it = &w->items[i];
        const char *uid = it->f[AMI_CHAN_UNIQUEID];
        const ami_chan_t *c = ami_callstate_find(w->cs, server, uid, strlen(uid));
        if (!c) {
            snprintf(w->cp_error, sizeof w->cp_error, "listed %s (%s) is not in the table", uid,
                     it->f[AMI_CHAN_CHANNEL]);
            return;
        }
        for (size_t k = 0; k < NFIELDS; k++) {
            ami_chan_field_t f = ITEM_FIELDS[k].f;
            if (strcmp(ami_chan_str(c, f, NULL), it->f[f]) != 0) {
                snprintf(w->cp_error, sizeof w->cp_error, "%s: %s is \"%s\" in the table, \"%s\" in the list",
                         it->f[AMI_CHAN_CHANNEL], ITEM_FIELDS[k].key, ami_chan_str(c, f, NULL), it->f[f]);
                return;
            }
        }
        if (ami_chan_state(c) != it->state || ami_chan_priority(c) != it->priority) {
            snprintf(w->cp_error, sizeof w->cp_error, "%s: state/priority %d/%d in the table, %d/%d listed",
                     it->f[AMI_CHAN_CHANNEL], ami_chan_state(c), ami_chan_priority(c), it->state, it->priority);
            return;
        }
        w->cp_bridged += it->f[AMI_CHAN_BRIDGE][0] != '\0';
    }
    const ami_calls_view_t *v = ami_callstate_calls(w->cs, server);
    w->cp_calls = count_calls(w);
    if (!v || v->ncalls != w->cp_calls)
        snprintf(w->cp_error, sizeof w->cp_error, "%zu calls in the table, %zu in the list",
                 v ? v->ncalls : 0, w->cp_calls);
}

typedef struct cp_ctx {
    world_t *w;
    size_t server;
} cp_ctx_t;

static void on_checkpoint(void *ud, const ami_pending_note_t *n)
{
    cp_ctx_t *cx = ud;
    world_t *w = cx->w;
    if (n->signal == AMI_PENDING_ITEM) {
        keep_item(w, n->msg);
        return;
    }
    if (n->signal == AMI_PENDING_RESPONSE)
        return;
    if (n->signal == AMI_PENDING_FAILED)
        snprintf(w->cp_error, sizeof w->cp_error, "CoreShowChannels failed: %s", n->reason);
    else
        compare(w, cx->server); /* right now: nothing else has run since the list's end */
    w->cp_done = true;
}

static bool cp_finished(void *ud)
{
    return ((world_t *)ud)->cp_done;
}

/* The table equals CoreShowChannels; returns how many channels were listed. */
static size_t checkpoint(world_t *w, size_t server)
{
    w->nitems = 0;
    w->cp_done = false;
    w->cp_error[0] = '\0';
    w->cp_bridged = 0;
    cp_ctx_t cx = {w, server};
    ami_action_req_t req = {.name = "CoreShowChannels", .strategy = AMI_STRATEGY_LIST};
    ami_err_t err;
    if (ami_client_send(w->client, ami_callstate_server_key(w->cs, server), &req, on_checkpoint, &cx, NULL,
                        &err) < 0)
        fail_msg("checkpoint: %s", err.msg);
    assert_true(harness_run_until(w->loop, cp_finished, w, 3000));
    if (w->cp_error[0])
        fail_msg("checkpoint on server %zu: %s", server, w->cp_error);
    return w->nitems;
}

/* ---- actions ----------------------------------------------------------------------- */

static void on_action(void *ud, const ami_pending_note_t *n)
{
    world_t *w = ud;
    if (n->signal != AMI_PENDING_DONE && n->signal != AMI_PENDING_FAILED)
        return;
    w->act_done = true;
    w->act_ok = n->signal == AMI_PENDING_DONE;
    const char *m = n->msg ? ami_msg_get(n->msg, "Message") : NULL;
    snprintf(w->act_msg, sizeof w->act_msg, "%s", m ? m : n->reason ? n->reason : "");
}

static bool act_finished(void *ud)
{
    return ((world_t *)ud)->act_done;
}

static bool action(world_t *w, const char *name, const ami_kv_t *hdrs, size_t n)
{
    w->act_done = false;
    ami_action_req_t req = {.name = name, .hdrs = hdrs, .nhdrs = n};
    ami_err_t err;
    if (ami_client_send(w->client, "pbx1", &req, on_action, w, NULL, &err) < 0)
        fail_msg("%s: %s", name, err.msg);
    assert_true(harness_run_until(w->loop, act_finished, w, 3000));
    return w->act_ok;
}

/* A talking call's channel (the caller leg of a bridged PJSIP pair), or NULL. */
static const ami_chan_t *bridged_channel(world_t *w, const char *not_linkedid)
{
    ami_chan_iter_t it;
    for (const ami_chan_t *c = ami_callstate_first(w->cs, 0, &it); c; c = ami_callstate_next(&it)) {
        if (!*ami_chan_str(c, AMI_CHAN_BRIDGE, NULL) ||
            strcmp(ami_chan_str(c, AMI_CHAN_UNIQUEID, NULL), ami_chan_str(c, AMI_CHAN_LINKEDID, NULL)) != 0)
            continue;
        if (not_linkedid && strcmp(ami_chan_str(c, AMI_CHAN_LINKEDID, NULL), not_linkedid) == 0)
            continue;
        return c;
    }
    return NULL;
}

static bool two_bridged_calls(void *ud)
{
    world_t *w = ud;
    const ami_chan_t *a = bridged_channel(w, NULL);
    return a && bridged_channel(w, ami_chan_str(a, AMI_CHAN_LINKEDID, NULL));
}

static size_t call_of(world_t *w, const char *uid)
{
    const ami_calls_view_t *v = ami_callstate_calls(w->cs, 0);
    for (size_t i = 0; i < v->nchans; i++)
        if (strcmp(ami_chan_str(v->chans[i], AMI_CHAN_UNIQUEID, NULL), uid) == 0)
            return v->call_of[i];
    return SIZE_MAX;
}

/* ---- scenarios ----------------------------------------------------------------------- */

static void calls_ringing_bridged_and_hung_up_match_core_show_channels(void **state)
{
    (void)state;
    world_t *w = world_new(2, 40, 800, NULL);
    world_start(w);
    size_t most = 0, bridged = 0, calls = 0;
    for (int i = 0; i < 16; i++) {
        harness_run_for(w->loop, 120);
        for (size_t s = 0; s < 2; s++) {
            size_t n = checkpoint(w, s);
            most = n > most ? n : most;
            bridged += w->cp_bridged;
            calls += w->cp_calls;
        }
    }
    print_message("16 x 2 checkpoints: up to %zu channels, %zu bridged and %zu calls seen\n", most, bridged, calls);
    assert_true(most >= 5);
    assert_true(bridged > 0);
    /* traffic stops; whatever still runs (queued callers wait long) is hung up */
    for (int i = 0; i < 2; i++)
        ami_sim_node_set_call_rate(w->nodes[i], 0);
    harness_run_for(w->loop, 100);
    ami_chan_iter_t it;
    char names[512][128];
    size_t n = 0;
    for (const ami_chan_t *c = ami_callstate_first(w->cs, 0, &it); c && n < 512; c = ami_callstate_next(&it))
        snprintf(names[n++], 128, "%s", ami_chan_str(c, AMI_CHAN_CHANNEL, NULL));
    for (size_t i = 0; i < n; i++) {
        ami_kv_t h[] = {AMI_KV("Channel", names[i])};
        action(w, "Hangup", h, 1); /* "No such channel" once its call ended: fine */
    }
    ami_sim_node_set_call_rate(w->nodes[1], 0);
    harness_run_for(w->loop, 100);
    assert_int_equal(checkpoint(w, 0), 0);
    checkpoint(w, 1);
    world_free(w);
}

static void blind_and_attended_transfers_match_core_show_channels(void **state)
{
    (void)state;
    world_t *w = world_new(1, 8, 60000, NULL);
    world_start(w);
    assert_true(harness_run_until(w->loop, two_bridged_calls, w, 5000));
    ami_sim_node_set_call_rate(w->nodes[0], 0);
    checkpoint(w, 0);

    /* blind: the caller leg transfers its peer to 2999 */
    const ami_chan_t *x = bridged_channel(w, NULL);
    char xname[128], xlinked[64];
    snprintf(xname, sizeof xname, "%s", ami_chan_str(x, AMI_CHAN_CHANNEL, NULL));
    snprintf(xlinked, sizeof xlinked, "%s", ami_chan_str(x, AMI_CHAN_LINKEDID, NULL));
    ami_kv_t blind[] = {AMI_KV("Channel", xname), AMI_KV("Context", "from-internal"), AMI_KV("Exten", "2999")};
    assert_true(action(w, "BlindTransfer", blind, 3));
    checkpoint(w, 0);
    assert_null(ami_callstate_find(w->cs, 0, xname, strlen(xname)));
    for (int i = 0; i < 8; i++) {
        harness_run_for(w->loop, 150);
        checkpoint(w, 0);
    }

    /* attended: another talking call's caller transfers to 2888 */
    const ami_chan_t *y = bridged_channel(w, xlinked);
    assert_non_null(y);
    char yname[128];
    snprintf(yname, sizeof yname, "%s", ami_chan_str(y, AMI_CHAN_CHANNEL, NULL));
    ami_kv_t att[] = {AMI_KV("Channel", yname), AMI_KV("Context", "from-internal"), AMI_KV("Exten", "2888")};
    assert_true(action(w, "Atxfer", att, 3));
    bool saw_target = false;
    for (int i = 0; i < 12; i++) {
        checkpoint(w, 0);
        ami_chan_iter_t it;
        for (const ami_chan_t *c = ami_callstate_first(w->cs, 0, &it); c; c = ami_callstate_next(&it))
            saw_target |= strncmp(ami_chan_str(c, AMI_CHAN_CHANNEL, NULL), "PJSIP/2888-", 11) == 0;
        harness_run_for(w->loop, 100);
    }
    assert_true(saw_target);
    assert_null(ami_callstate_find(w->cs, 0, yname, strlen(yname))); /* the transferer hung up */
    /* the target is now in one call with the transferee */
    ami_chan_iter_t it;
    const ami_chan_t *target = NULL;
    for (const ami_chan_t *c = ami_callstate_first(w->cs, 0, &it); c; c = ami_callstate_next(&it))
        if (strncmp(ami_chan_str(c, AMI_CHAN_CHANNEL, NULL), "PJSIP/2888-", 11) == 0)
            target = c;
    assert_non_null(target);
    const char *bridge = ami_chan_str(target, AMI_CHAN_BRIDGE, NULL);
    assert_true(*bridge);
    size_t in_bridge = 0;
    for (const ami_chan_t *c = ami_callstate_first(w->cs, 0, &it); c; c = ami_callstate_next(&it))
        if (strcmp(ami_chan_str(c, AMI_CHAN_BRIDGE, NULL), bridge) == 0) {
            in_bridge++;
            assert_int_equal(call_of(w, ami_chan_str(c, AMI_CHAN_UNIQUEID, NULL)),
                             call_of(w, ami_chan_str(target, AMI_CHAN_UNIQUEID, NULL)));
        }
    assert_int_equal(in_bridge, 2);
    /* a redirected channel leaves its bridge */
    const ami_chan_t *z = NULL;
    for (const ami_chan_t *c = ami_callstate_first(w->cs, 0, &it); c && !z; c = ami_callstate_next(&it))
        if (*ami_chan_str(c, AMI_CHAN_BRIDGE, NULL))
            z = c;
    assert_non_null(z);
    {
        char zname[128];
        snprintf(zname, sizeof zname, "%s", ami_chan_str(z, AMI_CHAN_CHANNEL, NULL));
        ami_kv_t redirect[] = {AMI_KV("Channel", zname), AMI_KV("Context", "ivr"), AMI_KV("Exten", "123")};
        assert_true(action(w, "Redirect", redirect, 3));
        checkpoint(w, 0);
        z = ami_callstate_find(w->cs, 0, zname, strlen(zname));
        assert_non_null(z);
        assert_string_equal(ami_chan_str(z, AMI_CHAN_BRIDGE, NULL), "");
        assert_string_equal(ami_chan_str(z, AMI_CHAN_CONTEXT, NULL), "ivr");
    }
    /* a channel that is in no bridge cannot be transferred */
    ami_kv_t bad[] = {AMI_KV("Channel", "PJSIP/nobody-1"), AMI_KV("Exten", "1")};
    assert_false(action(w, "BlindTransfer", bad, 2));
    world_free(w);
}

static void a_rename_follows_the_channel(void **state)
{
    (void)state;
    world_t *w = world_new(1, 8, 60000, NULL);
    world_start(w);
    assert_true(harness_run_until(w->loop, two_bridged_calls, w, 5000));
    const ami_chan_t *c = bridged_channel(w, NULL);
    char old[128], uid[64];
    snprintf(old, sizeof old, "%s", ami_chan_str(c, AMI_CHAN_CHANNEL, NULL));
    snprintf(uid, sizeof uid, "%s", ami_chan_str(c, AMI_CHAN_UNIQUEID, NULL));
    ami_err_t err;
    assert_int_equal(ami_sim_node_rename(w->nodes[0], old, "PJSIP/renamed-0001", &err), 0);
    checkpoint(w, 0);
    c = ami_callstate_find(w->cs, 0, "PJSIP/renamed-0001", 18);
    assert_non_null(c);
    assert_string_equal(ami_chan_str(c, AMI_CHAN_UNIQUEID, NULL), uid);
    assert_null(ami_callstate_find(w->cs, 0, old, strlen(old)));
    world_free(w);
}

static bool rebuilt_twice(void *ud)
{
    world_t *w = ud;
    ami_callstate_stats_t st;
    ami_callstate_stats(w->cs, 0, &st);
    return st.rebuilds >= 2 && ami_callstate_synced(w->cs, 0);
}

static void a_reconnect_in_the_middle_rebuilds_the_table(void **state)
{
    (void)state;
    world_t *w = world_new(1, 30, 1500, NULL);
    world_start(w);
    harness_run_for(w->loop, 700);
    checkpoint(w, 0);
    /* the server goes away; calls go on and end without the engine */
    ami_sim_node_stop(w->nodes[0]);
    harness_run_for(w->loop, 50);
    assert_false(ami_callstate_synced(w->cs, 0));
    size_t stale = ami_callstate_count(w->cs, 0);
    harness_run_for(w->loop, 1500);
    assert_int_equal(ami_callstate_count(w->cs, 0), stale); /* last known state meanwhile */
    ami_err_t err;
    assert_int_equal(ami_sim_node_restart(w->nodes[0], &err), 0);
    assert_true(harness_run_until(w->loop, rebuilt_twice, w, 3000));
    checkpoint(w, 0);
    for (int i = 0; i < 5; i++) {
        harness_run_for(w->loop, 100);
        checkpoint(w, 0);
    }
    /* sessions dropped while calls run: the same again */
    ami_sim_node_drop_sessions(w->nodes[0]);
    harness_run_for(w->loop, 20);
    assert_true(harness_run_until(w->loop, all_synced, w, 3000));
    checkpoint(w, 0);
    world_free(w);
}

static void events_while_the_list_is_slow_are_not_lost(void **state)
{
    (void)state;
    world_t *w = world_new(1, 40, 1000, NULL);
    w->heartbeat_ms = 0;
    world_start(w);
    harness_run_for(w->loop, 500);
    ami_callstate_stats_t before;
    ami_callstate_stats(w->cs, 0, &before);
    ami_sim_faults_t f = {.response_delay_ms = 400};
    ami_sim_node_set_faults(w->nodes[0], &f);
    ami_sim_node_drop_sessions(w->nodes[0]);
    harness_run_for(w->loop, 20);
    assert_true(harness_run_until(w->loop, all_synced, w, 4000));
    ami_callstate_stats_t after;
    ami_callstate_stats(w->cs, 0, &after);
    assert_int_equal(after.rebuilds, before.rebuilds + 1);
    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(w->nodes[0], &none);
    for (int i = 0; i < 4; i++) {
        checkpoint(w, 0);
        harness_run_for(w->loop, 100);
    }
    world_free(w);
}

static void an_engine_restart_finds_the_calls_already_up(void **state)
{
    (void)state;
    world_t *w = world_new(1, 20, 60000, NULL);
    world_start(w);
    harness_run_for(w->loop, 800);
    size_t before = checkpoint(w, 0);
    assert_true(before > 0);
    stop_engine(w);
    harness_run_for(w->loop, 300);
    start_engine(w);
    assert_true(harness_run_until(w->loop, all_synced, w, 3000));
    assert_true(checkpoint(w, 0) >= before);
    ami_chan_iter_t it;
    const ami_chan_t *c = ami_callstate_first(w->cs, 0, &it);
    assert_non_null(c);
    assert_true(ami_chan_started(c) > 0);
    world_free(w);
}

static bool failed_then_synced(void *ud)
{
    world_t *w = ud;
    ami_callstate_stats_t st;
    ami_callstate_stats(w->cs, 0, &st);
    return st.rebuild_failures >= 1 && ami_callstate_synced(w->cs, 0);
}

static void a_failed_rebuild_is_retried_and_counted(void **state)
{
    (void)state;
    ami_callstate_config_t cfg;
    ami_callstate_config_default(&cfg);
    cfg.rebuild_timeout_ms = 150;
    world_t *w = world_new(1, 0, 1000, &cfg);
    w->heartbeat_ms = 0;
    ami_sim_faults_t slow = {.response_delay_ms = 400};
    ami_sim_node_set_faults(w->nodes[0], &slow);
    start_engine(w);
    harness_run_for(w->loop, 300);
    assert_false(ami_callstate_synced(w->cs, 0));
    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(w->nodes[0], &none);
    assert_true(harness_run_until(w->loop, failed_then_synced, w, 5000));
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_metrics_render(w->metrics, &out);
    double v = 0;
    assert_int_equal(ami_metrics_value(w->metrics, "ami_callstate_rebuild_failures_total",
                                       (const char *const[]){"server_key", "pbx1", NULL}, &v), 0);
    assert_true(v >= 1);
    assert_int_equal(ami_metrics_value(w->metrics, "ami_callstate_synced",
                                       (const char *const[]){"server_key", "pbx1", NULL}, &v), 0);
    assert_true(v == 1);
    ami_buf_deinit(&out);
    world_free(w);
}

static void max_channels_bounds_the_table_and_counts_refusals(void **state)
{
    (void)state;
    ami_callstate_config_t cfg;
    ami_callstate_config_default(&cfg);
    cfg.max_channels = 4;
    world_t *w = world_new(1, 30, 60000, &cfg);
    world_start(w);
    harness_run_for(w->loop, 1000);
    assert_int_equal(ami_callstate_count(w->cs, 0), 4);
    ami_callstate_stats_t st;
    ami_callstate_stats(w->cs, 0, &st);
    assert_true(st.refused > 0);
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_metrics_render(w->metrics, &out);
    double v = 0;
    const char *const labels[] = {"server_key", "pbx1", NULL};
    assert_int_equal(ami_metrics_value(w->metrics, "ami_callstate_channels_refused_total", labels, &v), 0);
    assert_true(v == (double)st.refused);
    assert_int_equal(ami_metrics_value(w->metrics, "ami_callstate_channels", labels, &v), 0);
    assert_true(v == 4);
    assert_non_null(strstr(out.data, "ami_callstate_calls{server_key=\"pbx1\"}"));
    ami_buf_deinit(&out);
    world_free(w);
}

/* ---- order: subscribers made after the call state see it updated ------------------------ */

typedef struct order {
    world_t *w;
    int newchannel_seen, newchannel_missing;
    int hangup_gone, hangup_found_dead, hangup_wrong;
    int every_seen, every_missing;
} order_t;

static void on_named(void *ud, const char *key, const ami_msg_t *m)
{
    order_t *o = ud;
    int srv = ami_callstate_server_index(o->w->cs, key);
    const char *uid = ami_msg_get(m, "Uniqueid");
    const ami_chan_t *c = uid ? ami_callstate_find(o->w->cs, (size_t)srv, uid, strlen(uid)) : NULL;
    if (strcmp(ami_msg_name(m), "Newchannel") == 0) {
        if (c)
            o->newchannel_seen++;
        else
            o->newchannel_missing++;
        return;
    }
    bool listed = false;
    ami_chan_iter_t it;
    for (const ami_chan_t *x = ami_callstate_first(o->w->cs, (size_t)srv, &it); x; x = ami_callstate_next(&it))
        listed |= x == c;
    if (!listed)
        o->hangup_gone++;
    if (c && ami_chan_hangup_cause(c) >= 0)
        o->hangup_found_dead++;
    else
        o->hangup_wrong++;
}

static void on_every(void *ud, const char *key, const ami_msg_t *m)
{
    order_t *o = ud;
    if (strcmp(ami_msg_name(m), "Newstate") != 0)
        return;
    int srv = ami_callstate_server_index(o->w->cs, key);
    const char *uid = ami_msg_get(m, "Uniqueid");
    const char *st = ami_msg_get(m, "ChannelState");
    const ami_chan_t *c = ami_callstate_find(o->w->cs, (size_t)srv, uid, strlen(uid));
    if (c && ami_chan_state(c) == atoi(st))
        o->every_seen++;
    else
        o->every_missing++;
}

static void subscribers_see_the_table_updated_by_their_event(void **state)
{
    (void)state;
    world_t *w = world_new(1, 40, 300, NULL);
    world_start(w);
    order_t o = {.w = w};
    ami_err_t err;
    ami_subscription_t *s1 = ami_client_subscribe(w->client, "*", on_every, &o, &err);
    ami_subscription_t *s2 = ami_client_subscribe(w->client, "Newchannel", on_named, &o, &err);
    ami_subscription_t *s3 = ami_client_subscribe(w->client, "Hangup", on_named, &o, &err);
    harness_run_for(w->loop, 3000);
    ami_client_unsubscribe(w->client, s1);
    ami_client_unsubscribe(w->client, s2);
    ami_client_unsubscribe(w->client, s3);
    print_message("Newchannel %d, Hangup %d, Newstate %d\n", o.newchannel_seen, o.hangup_found_dead, o.every_seen);
    assert_true(o.newchannel_seen > 10);
    assert_int_equal(o.newchannel_missing, 0);
    assert_true(o.hangup_found_dead > 5);
    assert_int_equal(o.hangup_gone, o.hangup_found_dead);
    assert_int_equal(o.hangup_wrong, 0);
    assert_true(o.every_seen > 10);
    assert_int_equal(o.every_missing, 0);
    world_free(w);
}

static void freeing_during_a_rebuild_leaves_nothing_behind(void **state)
{
    (void)state;
    world_t *w = world_new(1, 20, 1000, NULL);
    w->heartbeat_ms = 0;
    world_start(w);
    harness_run_for(w->loop, 300);
    ami_sim_faults_t slow = {.response_delay_ms = 300};
    ami_sim_node_set_faults(w->nodes[0], &slow);
    ami_sim_node_drop_sessions(w->nodes[0]);
    harness_run_for(w->loop, 150); /* reconnected, the list is on its way */
    ami_callstate_free(w->cs);
    w->cs = NULL;
    harness_run_for(w->loop, 600); /* the late list reaches nobody */
    world_free(w);
}

static void config_is_checked(void **state)
{
    (void)state;
    ami_callstate_config_t cfg;
    ami_err_t err;
    ami_callstate_config_default(&cfg);
    assert_int_equal(ami_callstate_config_validate(&cfg, &err), 0);
    cfg.max_channels = 0;
    assert_int_equal(ami_callstate_config_validate(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "max_channels"));
    ami_callstate_config_default(&cfg);
    cfg.variable_max_bytes = 5000;
    assert_int_equal(ami_callstate_config_validate(&cfg, &err), -1);
    const char *bad[][2] = {{"OK", "__X"}, {"OK", "A B"}, {"OK", ""}, {"DUP", "DUP"}};
    for (size_t i = 0; i < 4; i++) {
        ami_callstate_config_default(&cfg);
        cfg.variables = bad[i];
        cfg.nvariables = 2;
        assert_int_equal(ami_callstate_config_validate(&cfg, &err), -1);
        assert_int_equal(err.code, AMI_E_CONFIG);
    }
    ami_callstate_config_default(&cfg);
    cfg.nvariables = AMI_CALLSTATE_MAX_VARIABLES + 1;
    assert_int_equal(ami_callstate_config_validate(&cfg, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(calls_ringing_bridged_and_hung_up_match_core_show_channels),
        cmocka_unit_test(blind_and_attended_transfers_match_core_show_channels),
        cmocka_unit_test(a_rename_follows_the_channel),
        cmocka_unit_test(a_reconnect_in_the_middle_rebuilds_the_table),
        cmocka_unit_test(events_while_the_list_is_slow_are_not_lost),
        cmocka_unit_test(an_engine_restart_finds_the_calls_already_up),
        cmocka_unit_test(a_failed_rebuild_is_retried_and_counted),
        cmocka_unit_test(max_channels_bounds_the_table_and_counts_refusals),
        cmocka_unit_test(subscribers_see_the_table_updated_by_their_event),
        cmocka_unit_test(freeing_during_a_rebuild_leaves_nothing_behind),
        cmocka_unit_test(config_is_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
