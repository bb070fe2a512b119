/*
 * The call state against real Asterisk 22: every recorded session with
 * channel events (tests/fixtures/asterisk) is replayed by the simulator
 * (its .flow replay, over TCP, the test playing the recorded client), and
 * the stream is fed to a call-state table as the engine feeds it.
 *
 * Checked on the way:
 *   - after every channel event, the table holds exactly what the event
 *     says about its channel (every snapshot field it carries);
 *   - where the recording ran CoreShowChannels, the table built from the
 *     events alone equals Asterisk's own list at the list's first response
 *     (every field but Application/ApplicationData: an Originate that runs
 *     an application directly changes them without any event), and the
 *     rebuild from that list then leaves the table unchanged;
 *   - at the end, the table holds exactly the channels that had a
 *     Newchannel and no Hangup in the recording (none in most sessions).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "callstate/callstate_internal.h"
#include "fixtures.h"
#include "sim/sim.h"
#include "sim_client.h"
#include "util/alloc.h"

#define MAX_LIST 256
#define MAX_UIDS 512

typedef struct replay {
    const char *name;
    chan_read_conf_t conf;
    uint64_t serials;
    void *scratch;
    cs_table_t t;
    /* the events-only table at the list's first response */
    ami_chan_t *before[MAX_LIST];
    size_t nbefore;
    size_t listed;
    int lists;
    /* Newchannel minus Hangup, as a plain set */
    char live[MAX_UIDS][64];
    size_t nlive;
    uint64_t checked_events;
} replay_t;

static const char *hval(const ami_msg_t *m, const char *key, size_t *len)
{
    return ami_msg_getn(m, key, strlen(key), len);
}

static bool is_event(const ami_msg_t *m, const char *name)
{
    return m->kind == AMI_MSG_EVENT && strcmp(ami_msg_name(m), name) == 0;
}

static void track_live(replay_t *r, const ami_msg_t *m)
{
    size_t len;
    const char *uid = hval(m, "Uniqueid", &len);
    if (!uid)
        return;
    if (is_event(m, "Newchannel")) {
        assert_true(r->nlive < MAX_UIDS && len < 64);
        snprintf(r->live[r->nlive++], 64, "%s", uid);
    } else if (is_event(m, "Hangup")) {
        for (size_t i = 0; i < r->nlive; i++)
            if (strcmp(r->live[i], uid) == 0) {
                memmove(r->live[i], r->live[i + 1], (r->nlive - i - 1) * sizeof r->live[0]);
                r->nlive--;
                return;
            }
    }
}

static void expect_field(const replay_t *r, const ami_msg_t *m, const ami_chan_t *c, const char *key,
                         ami_chan_field_t f)
{
    size_t len;
    const char *v = hval(m, key, &len);
    if (!v)
        return;
    const char *have = ami_chan_str(c, f, NULL);
    if (strcmp(have, v) != 0)
        fail_msg("%s: after %s, %s is \"%s\" in the table but \"%s\" in the event", r->name, ami_msg_name(m),
                 key, have, v);
}

/* The table says what the event said about its channel. */
static void check_event(replay_t *r, const ami_msg_t *m)
{
    static const struct {
        const char *key;
        ami_chan_field_t f;
    } FIELDS[] = {
        {"Channel", AMI_CHAN_CHANNEL},         {"ChannelStateDesc", AMI_CHAN_STATE_DESC},
        {"CallerIDNum", AMI_CHAN_CALLER_NUM},  {"CallerIDName", AMI_CHAN_CALLER_NAME},
        {"ConnectedLineNum", AMI_CHAN_CONNECTED_NUM}, {"ConnectedLineName", AMI_CHAN_CONNECTED_NAME},
        {"Language", AMI_CHAN_LANGUAGE},       {"AccountCode", AMI_CHAN_ACCOUNTCODE},
        {"Context", AMI_CHAN_CONTEXT},         {"Exten", AMI_CHAN_EXTEN},
        {"Linkedid", AMI_CHAN_LINKEDID},
    };
    const char *names[32];
    size_t n = cs_event_names(names, 32, true);
    bool read = false;
    for (size_t i = 0; i < n && !read; i++)
        read = is_event(m, names[i]);
    size_t len;
    const char *uid = hval(m, "Uniqueid", &len);
    if (!read || !uid || is_event(m, "Hangup"))
        return;
    const ami_chan_t *c = cs_table_find(&r->t, uid, len);
    if (!c)
        return; /* not a channel the table tracks (VarSet of "none", queue events...) */
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        expect_field(r, m, c, FIELDS[i].key, FIELDS[i].f);
    const char *st = hval(m, "ChannelState", NULL);
    if (st && ami_chan_state(c) != atoi(st))
        fail_msg("%s: after %s of %s, the state is %d in the table but %s in the event", r->name,
                 ami_msg_name(m), uid, ami_chan_state(c), st);
    const char *prio = hval(m, "Priority", NULL);
    if (prio && ami_chan_priority(c) != atoi(prio))
        fail_msg("%s: after %s of %s, the priority is %d in the table but %s in the event", r->name,
                 ami_msg_name(m), uid, ami_chan_priority(c), prio);
    if (is_event(m, "BridgeEnter"))
        assert_string_equal(ami_chan_str(c, AMI_CHAN_BRIDGE, NULL), hval(m, "BridgeUniqueid", NULL));
    if (is_event(m, "BridgeLeave"))
        assert_string_equal(ami_chan_str(c, AMI_CHAN_BRIDGE, NULL), "");
    r->checked_events++;
}

static void snapshot_before(replay_t *r)
{
    r->nbefore = 0;
    r->listed = 0;
    for (const cs_slot_t *s = r->t.head; s; s = s->next) {
        assert_true(r->nbefore < MAX_LIST);
        ami_chan_t *copy = malloc(ami_chan_size(s->rec));
        memcpy(copy, s->rec, ami_chan_size(s->rec));
        r->before[r->nbefore++] = copy;
    }
}

static void forget_before(replay_t *r)
{
    for (size_t i = 0; i < r->nbefore; i++)
        free(r->before[i]);
    r->nbefore = 0;
}

/* A CoreShowChannel item against the events-only copy of its channel. */
static void check_item(replay_t *r, const ami_msg_t *m)
{
    static const struct {
        const char *key;
        ami_chan_field_t f;
    } FIELDS[] = {
        {"Channel", AMI_CHAN_CHANNEL},         {"ChannelStateDesc", AMI_CHAN_STATE_DESC},
        {"CallerIDNum", AMI_CHAN_CALLER_NUM},  {"CallerIDName", AMI_CHAN_CALLER_NAME},
        {"ConnectedLineNum", AMI_CHAN_CONNECTED_NUM}, {"ConnectedLineName", AMI_CHAN_CONNECTED_NAME},
        {"Language", AMI_CHAN_LANGUAGE},       {"AccountCode", AMI_CHAN_ACCOUNTCODE},
        {"Context", AMI_CHAN_CONTEXT},         {"Exten", AMI_CHAN_EXTEN},
        {"Linkedid", AMI_CHAN_LINKEDID},       {"BridgeId", AMI_CHAN_BRIDGE},
    };
    const char *uid = hval(m, "Uniqueid", NULL);
    assert_non_null(uid);
    const ami_chan_t *c = NULL;
    for (size_t i = 0; i < r->nbefore && !c; i++)
        if (strcmp(ami_chan_str(r->before[i], AMI_CHAN_UNIQUEID, NULL), uid) == 0)
            c = r->before[i];
    if (!c)
        fail_msg("%s: Asterisk lists %s (%s) but the events never created it", r->name, uid,
                 hval(m, "Channel", NULL));
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        expect_field(r, m, c, FIELDS[i].key, FIELDS[i].f);
    assert_int_equal(ami_chan_state(c), atoi(hval(m, "ChannelState", NULL)));
    assert_int_equal(ami_chan_priority(c), atoi(hval(m, "Priority", NULL)));
    r->listed++;
}

static void on_message(replay_t *r, const ami_msg_t *m)
{
    size_t aid_len;
    const char *aid = ami_msg_action_id(m, &aid_len);
    const char *eventlist = hval(m, "EventList", NULL);
    bool csc_list = aid && strncmp(aid, "csc", 3) == 0;
    bool mix_list = aid && strcmp(aid, "mix-csc") == 0;
    if (m->kind == AMI_MSG_RESPONSE && (csc_list || mix_list) && eventlist) {
        snapshot_before(r);
        cs_table_rebuild_begin(&r->t);
        cs_table_rebuild_listing(&r->t);
        return;
    }
    if (is_event(m, "CoreShowChannel") && r->t.rebuilding) {
        check_item(r, m);
        cs_table_rebuild_item(&r->t, m, 1e9);
        return;
    }
    if (is_event(m, "CoreShowChannelsComplete") && r->t.rebuilding) {
        assert_int_equal(r->listed, r->nbefore); /* nothing the events made is missing from the list */
        cs_table_rebuild_end(&r->t, true);
        assert_int_equal(r->t.count, r->nbefore);
        forget_before(r);
        r->lists++;
        return;
    }
    if (m->kind != AMI_MSG_EVENT || aid)
        return; /* responses, and list items of other actions: the registry's, not the table's */
    track_live(r, m);
    cs_table_apply(&r->t, m, 1e9);
    check_event(r, m);
}

static void replay_fixture(const char *name, int *lists, uint64_t *events)
{
    replay_t *r = calloc(1, sizeof *r);
    r->name = name;
    static const char *const VARS[] = {"CALLTAG", "FOO"};
    static const size_t VAR_LEN[] = {7, 3};
    r->conf = (chan_read_conf_t){.nvars = 2, .var_names = VARS, .var_name_len = VAR_LEN, .var_max = 256};
    r->scratch = ami_malloc(chan_max_size(2, 256));
    assert_int_equal(cs_table_init(&r->t, &r->conf, 1000, &r->serials, r->scratch), 0);

    char flow[512];
    snprintf(flow, sizeof flow, "%s/%s.flow", AMI_FIXTURE_DIR, name);
    ami_sim_t *sim = ami_sim_new(NULL, NULL);
    ami_sim_node_config_t nc = {.name = "replay", .replay_flow = flow};
    ami_err_t err;
    ami_sim_node_t *node = ami_sim_add_node(sim, &nc, &err);
    if (!node)
        fail_msg("%s: %s", name, err.msg);
    ami_sim_node_set_replay_speed(node, 0);
    sim_client_t c = {.fd = -1};
    assert_int_equal(sim_client_connect(&c, ami_sim_loop(sim), ami_sim_node_port(node)), 0);
    fixture_t sent = fixture_load(name, ".sent");
    if (sent.len)
        assert_int_equal(sim_client_send(&c, sent.data), 0);
    ami_msg_t m;
    int rc;
    while ((rc = sim_client_next(&c, &m, 5000)) == 1)
        on_message(r, &m);
    assert_true(c.eof); /* the whole recording came through */

    assert_int_equal(r->t.count, r->nlive);
    for (size_t i = 0; i < r->nlive; i++)
        assert_non_null(cs_table_find(&r->t, r->live[i], strlen(r->live[i])));
    *lists += r->lists;
    *events += r->checked_events;

    fixture_free(&sent);
    sim_client_close(&c);
    ami_sim_free(sim);
    forget_before(r);
    cs_table_deinit(&r->t);
    ami_free(r->scratch);
    free(r);
}

static void every_recorded_session_replays_into_the_table_asterisk_reports(void **state)
{
    (void)state;
    int64_t live_before = ami_alloc_live_bytes();
    int sessions = 0, lists = 0;
    uint64_t events = 0;
    for (const char *const *n = fixture_names(); *n; n++) {
        fixture_t ami = fixture_load(*n, ".ami");
        bool channels = strstr(ami.data, "Event: Newchannel\r\n") != NULL;
        fixture_free(&ami);
        if (!channels)
            continue;
        replay_fixture(*n, &lists, &events);
        sessions++;
    }
    print_message("%d sessions replayed, %d CoreShowChannels lists matched, %llu events checked\n", sessions,
                  lists, (unsigned long long)events);
    assert_true(sessions >= 15);
    assert_int_equal(lists, 2); /* core-show-channels-3-calls and event-stream-mixed */
    assert_true(events > 500);
    assert_int_equal(ami_alloc_live_bytes(), live_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_recorded_session_replays_into_the_table_asterisk_reports),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
