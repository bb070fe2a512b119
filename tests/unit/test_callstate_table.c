/*
 * The call state's table, driven directly (no sockets): what each event
 * does to it, its bounds, hostile values, and the rebuild from
 * CoreShowChannels with events before, inside and after the list.
 * Messages are written as text and parsed by the project's parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table_world.h"
#include "util/alloc.h"

#define NOW 1000.0

typedef table_world_t world_t;

static world_t *world_new(uint32_t max_channels, uint32_t var_max)
{
    return table_world_new(max_channels, var_max, true);
}

static void world_free(world_t *w)
{
    table_world_free(w);
}

static const ami_msg_t *msg(world_t *w, const char *lines)
{
    return table_world_msg(w, lines);
}

static void apply(world_t *w, const char *lines)
{
    cs_table_apply(&w->t, msg(w, lines), NOW);
}

static void item(world_t *w, const char *lines)
{
    cs_table_rebuild_item(&w->t, msg(w, lines), NOW);
}

static const ami_chan_t *find(world_t *w, const char *id)
{
    return cs_table_find(&w->t, id, strlen(id));
}

static const char *str(const ami_chan_t *c, ami_chan_field_t f)
{
    return ami_chan_str(c, f, NULL);
}

/* A full snapshot block, as Asterisk writes it. */
static const char *chan_block(char *out, size_t n, const char *name, const char *uid, const char *linked,
                              int state, const char *exten)
{
    static const char *const DESC[] = {"Down", "Rsrvd", "OffHook", "Dialing", "Ring", "Ringing", "Up"};
    snprintf(out, n,
             "Channel: %s\nChannelState: %d\nChannelStateDesc: %s\nCallerIDNum: 1001\n"
             "CallerIDName: Alice\nConnectedLineNum: <unknown>\nConnectedLineName: <unknown>\n"
             "Language: en\nAccountCode: \nContext: from-internal\nExten: %s\nPriority: 1\n"
             "Uniqueid: %s\nLinkedid: %s\n",
             name, state, DESC[state], exten, uid, linked);
    return out;
}

static void newchannel(world_t *w, const char *name, const char *uid, const char *linked)
{
    char block[1024], text[1200];
    snprintf(text, sizeof text, "Event: Newchannel\nPrivilege: call,all\n%s",
             chan_block(block, sizeof block, name, uid, linked, 4, "2001"));
    apply(w, text);
}

static void event_for(world_t *w, const char *event, const char *uid, const char *extra)
{
    char text[1200];
    snprintf(text, sizeof text, "Event: %s\nUniqueid: %s\n%s", event, uid, extra ? extra : "");
    apply(w, text);
}

static void list_item(world_t *w, const char *name, const char *uid, const char *linked, int state,
                      const char *duration, const char *bridge)
{
    char block[1024], text[1400];
    snprintf(text, sizeof text,
             "Event: CoreShowChannel\nActionID: csc\n%sApplication: Dial\nApplicationData: PJSIP/2001\n"
             "Duration: %s\nBridgeId: %s\n",
             chan_block(block, sizeof block, name, uid, linked, state, "2001"), duration, bridge);
    item(w, text);
}

/* ---- events ------------------------------------------------------------------------------ */

static void newchannel_creates_a_channel_with_every_field(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-00000001", "1700000000.1", "1700000000.1");
    assert_int_equal(w->t.count, 1);
    const ami_chan_t *c = find(w, "1700000000.1");
    assert_non_null(c);
    assert_string_equal(str(c, AMI_CHAN_CHANNEL), "PJSIP/1001-00000001");
    assert_string_equal(str(c, AMI_CHAN_LINKEDID), "1700000000.1");
    assert_int_equal(ami_chan_state(c), 4);
    assert_string_equal(str(c, AMI_CHAN_STATE_DESC), "Ring");
    assert_string_equal(str(c, AMI_CHAN_CALLER_NUM), "1001");
    assert_string_equal(str(c, AMI_CHAN_CALLER_NAME), "Alice");
    assert_string_equal(str(c, AMI_CHAN_CONNECTED_NUM), "<unknown>");
    assert_string_equal(str(c, AMI_CHAN_LANGUAGE), "en");
    assert_string_equal(str(c, AMI_CHAN_ACCOUNTCODE), "");
    assert_string_equal(str(c, AMI_CHAN_CONTEXT), "from-internal");
    assert_string_equal(str(c, AMI_CHAN_EXTEN), "2001");
    assert_int_equal(ami_chan_priority(c), 1);
    assert_string_equal(str(c, AMI_CHAN_BRIDGE), "");
    assert_int_equal(ami_chan_hangup_cause(c), -1);
    assert_true(ami_chan_started(c) == NOW);
    assert_true(ami_chan_answered(c) == 0);
    assert_null(ami_chan_var(c, 0, NULL));
    assert_ptr_equal(find(w, "PJSIP/1001-00000001"), c); /* by name too */
    world_free(w);
}

static void events_update_their_fields(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    uint32_t v = ami_chan_version(find(w, "u1"));
    event_for(w, "Newstate", "u1", "ChannelState: 6\nChannelStateDesc: Up\n");
    event_for(w, "NewCallerid", "u1", "CallerIDNum: 555\nCallerIDName: Bob\n");
    event_for(w, "NewConnectedLine", "u1", "ConnectedLineNum: 2001\nConnectedLineName: Carol\n");
    event_for(w, "NewAccountCode", "u1", "AccountCode: sales\n");
    event_for(w, "Newexten", "u1", "Context: ivr\nExten: s\nPriority: 3\nExtension: s\nApplication: Playback\n"
                                   "AppData: hello-world\n");
    const ami_chan_t *c = find(w, "u1");
    assert_int_equal(ami_chan_state(c), 6);
    assert_string_equal(str(c, AMI_CHAN_STATE_DESC), "Up");
    assert_true(ami_chan_answered(c) == NOW);
    assert_string_equal(str(c, AMI_CHAN_CALLER_NUM), "555");
    assert_string_equal(str(c, AMI_CHAN_CALLER_NAME), "Bob");
    assert_string_equal(str(c, AMI_CHAN_CONNECTED_NUM), "2001");
    assert_string_equal(str(c, AMI_CHAN_CONNECTED_NAME), "Carol");
    assert_string_equal(str(c, AMI_CHAN_ACCOUNTCODE), "sales");
    assert_string_equal(str(c, AMI_CHAN_CONTEXT), "ivr");
    assert_string_equal(str(c, AMI_CHAN_EXTEN), "s");
    assert_int_equal(ami_chan_priority(c), 3);
    assert_string_equal(str(c, AMI_CHAN_APPLICATION), "Playback");
    assert_string_equal(str(c, AMI_CHAN_APPDATA), "hello-world");
    assert_string_equal(str(c, AMI_CHAN_LANGUAGE), "en"); /* untouched fields stay */
    assert_int_equal(ami_chan_version(c), v + 5);
    world_free(w);
}

static void an_event_that_changes_nothing_keeps_the_version(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    uint32_t v = ami_chan_version(find(w, "u1"));
    uint64_t applied = w->t.events_applied;
    event_for(w, "Newexten", "u1", "Context: from-internal\nExten: 2001\n");
    assert_int_equal(ami_chan_version(find(w, "u1")), v);
    assert_int_equal(w->t.events_applied, applied);
    world_free(w);
}

static void hangup_removes_but_the_channel_stays_findable_during_its_dispatch(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    newchannel(w, "PJSIP/1002-2", "u2", "u2");
    event_for(w, "Hangup", "u1", "Channel: PJSIP/1001-1\nCause: 17\nCause-txt: User busy\n");
    assert_int_equal(w->t.count, 1);
    assert_ptr_equal(w->t.head->rec, find(w, "u2"));
    const ami_chan_t *dead = find(w, "u1");
    assert_non_null(dead);
    assert_int_equal(ami_chan_hangup_cause(dead), 17);
    assert_string_equal(str(dead, AMI_CHAN_HANGUP_CAUSE_TXT), "User busy");
    assert_non_null(find(w, "PJSIP/1001-1"));
    event_for(w, "Newstate", "u2", "ChannelState: 6\n"); /* the next event */
    assert_null(find(w, "u1"));
    assert_null(find(w, "PJSIP/1001-1"));
    world_free(w);
}

static void events_never_create_or_resurrect_a_channel(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    event_for(w, "Newstate", "ghost", "Channel: PJSIP/9-1\nChannelState: 6\n");
    event_for(w, "BridgeEnter", "ghost", "BridgeUniqueid: b1\n");
    assert_int_equal(w->t.count, 0);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    event_for(w, "Hangup", "u1", "Cause: 16\n");
    event_for(w, "BridgeLeave", "u1", "BridgeUniqueid: b1\n");
    event_for(w, "SoftHangupRequest", "u1", "Cause: 16\n");
    event_for(w, "Newstate", "u1", "ChannelState: 6\n");
    assert_int_equal(w->t.count, 0);
    assert_null(find(w, "u1"));
    world_free(w);
}

static void rename_changes_the_name_index(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    apply(w, "Event: Rename\nChannel: PJSIP/1001-1\nNewname: PJSIP/1001-1<MASQ>\nUniqueid: u1\n");
    assert_string_equal(str(find(w, "u1"), AMI_CHAN_CHANNEL), "PJSIP/1001-1<MASQ>");
    assert_non_null(find(w, "PJSIP/1001-1<MASQ>"));
    /* a Rename without Uniqueid finds the channel by its old name */
    apply(w, "Event: Rename\nChannel: PJSIP/1001-1<MASQ>\nNewname: PJSIP/7-7\n");
    assert_ptr_equal(find(w, "PJSIP/7-7"), find(w, "u1"));
    assert_null(find(w, "PJSIP/1001-1"));
    assert_null(find(w, "PJSIP/1001-1<MASQ>"));
    /* any snapshot with a new Channel for the Uniqueid renames too */
    event_for(w, "Newstate", "u1", "Channel: PJSIP/8-8\nChannelState: 5\n");
    assert_ptr_equal(find(w, "PJSIP/8-8"), find(w, "u1"));
    assert_null(find(w, "PJSIP/7-7"));
    world_free(w);
}

static void bridges_set_and_clear_membership(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    newchannel(w, "PJSIP/2001-2", "u2", "u1");
    newchannel(w, "PJSIP/3001-3", "u3", "u3");
    event_for(w, "BridgeEnter", "u1", "BridgeUniqueid: b1\nBridgeType: basic\n");
    event_for(w, "BridgeEnter", "u2", "BridgeUniqueid: b1\n");
    event_for(w, "BridgeEnter", "u3", "BridgeUniqueid: b2\n");
    assert_string_equal(str(find(w, "u1"), AMI_CHAN_BRIDGE), "b1");
    assert_string_equal(str(find(w, "u2"), AMI_CHAN_BRIDGE), "b1");
    event_for(w, "BridgeLeave", "u1", "BridgeUniqueid: b1\n");
    assert_string_equal(str(find(w, "u1"), AMI_CHAN_BRIDGE), "");
    event_for(w, "BridgeLeave", "u3", "BridgeUniqueid: b-other\n"); /* not the bridge it is in */
    assert_string_equal(str(find(w, "u3"), AMI_CHAN_BRIDGE), "b2");
    apply(w, "Event: BridgeDestroy\nBridgeUniqueid: b1\n");
    assert_string_equal(str(find(w, "u2"), AMI_CHAN_BRIDGE), "");
    assert_string_equal(str(find(w, "u3"), AMI_CHAN_BRIDGE), "b2");
    world_free(w);
}

static void dial_events_record_who_dialed_and_how_it_ended(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    newchannel(w, "PJSIP/2001-2", "u2", "u1");
    apply(w, "Event: DialBegin\nChannel: PJSIP/1001-1\nUniqueid: u1\nDestChannel: PJSIP/2001-2\n"
             "DestChannelState: 5\nDestChannelStateDesc: Ringing\nDestUniqueid: u2\nDialString: 2001\n");
    const ami_chan_t *callee = find(w, "u2");
    assert_string_equal(str(callee, AMI_CHAN_DIALED_BY), "u1");
    assert_int_equal(ami_chan_state(callee), 5);
    assert_string_equal(str(callee, AMI_CHAN_STATE_DESC), "Ringing");
    assert_string_equal(str(find(w, "u1"), AMI_CHAN_DIALED_BY), "");
    apply(w, "Event: DialEnd\nChannel: PJSIP/1001-1\nUniqueid: u1\nDestChannel: PJSIP/2001-2\n"
             "DestUniqueid: u2\nDialStatus: BUSY\n");
    assert_string_equal(str(find(w, "u1"), AMI_CHAN_DIAL_STATUS), "BUSY");
    assert_string_equal(str(find(w, "u2"), AMI_CHAN_DIAL_STATUS), "BUSY");
    /* an Originate dials without a caller: only the Dest snapshot */
    newchannel(w, "Local/100@test-1;1", "u3", "u3");
    apply(w, "Event: DialBegin\nDestChannel: Local/100@test-1;1\nDestUniqueid: u3\nDialString: 100@test\n");
    assert_string_equal(str(find(w, "u3"), AMI_CHAN_DIALED_BY), "");
    world_free(w);
}

static void transfer_and_local_bridge_snapshots_update_each_channel(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "Local/1@t-1;1", "l1", "l1");
    newchannel(w, "Local/1@t-1;2", "l2", "l1");
    apply(w, "Event: LocalBridge\nLocalOneChannel: Local/1@t-1;1\nLocalOneUniqueid: l1\nLocalOneChannelState: 5\n"
             "LocalTwoChannel: Local/1@t-1;2\nLocalTwoUniqueid: l2\nLocalTwoExten: 77\nContext: t\nExten: 1\n");
    assert_int_equal(ami_chan_state(find(w, "l1")), 5);
    assert_string_equal(str(find(w, "l2"), AMI_CHAN_EXTEN), "77");
    assert_string_equal(str(find(w, "l1"), AMI_CHAN_EXTEN), "2001"); /* the event's own Exten is no snapshot */
    apply(w, "Event: BlindTransfer\nResult: Success\nTransfererChannel: Local/1@t-1;1\nTransfererUniqueid: l1\n"
             "TransfererExten: 88\nTransfereeChannel: Local/1@t-1;2\nTransfereeUniqueid: l2\n"
             "TransfereeContext: xfer\nExtension: 9\n");
    assert_string_equal(str(find(w, "l1"), AMI_CHAN_EXTEN), "88");
    assert_string_equal(str(find(w, "l2"), AMI_CHAN_CONTEXT), "xfer");
    apply(w, "Event: AttendedTransfer\nOrigTransfererUniqueid: l1\nOrigTransfererPriority: 4\n"
             "TransferTargetUniqueid: l2\nTransferTargetExten: 99\n");
    assert_int_equal(ami_chan_priority(find(w, "l1")), 4);
    assert_string_equal(str(find(w, "l2"), AMI_CHAN_EXTEN), "99");
    world_free(w);
}

static void only_tracked_variables_are_kept(void **state)
{
    (void)state;
    world_t *w = world_new(100, 8);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    event_for(w, "VarSet", "u1", "Variable: CRM_ID\nValue: 42\n");
    event_for(w, "VarSet", "u1", "Variable: DIALSTATUS\nValue: ANSWER\n");
    event_for(w, "VarSet", "u1", "Variable: __CALLTAG\nValue: tag-1\n"); /* inheritance prefix */
    const ami_chan_t *c = find(w, "u1");
    size_t len;
    assert_string_equal(ami_chan_var(c, 0, &len), "42");
    assert_int_equal(len, 2);
    assert_string_equal(ami_chan_var(c, 1, NULL), "tag-1");
    event_for(w, "VarSet", "u1", "Variable: crm_id\nValue: 7\n"); /* names are case-sensitive */
    assert_string_equal(ami_chan_var(find(w, "u1"), 0, NULL), "42");
    uint64_t cut = w->t.truncated;
    event_for(w, "VarSet", "u1", "Variable: CRM_ID\nValue: 0123456789abcdef\n");
    assert_string_equal(ami_chan_var(find(w, "u1"), 0, NULL), "01234567");
    assert_int_equal(w->t.truncated, cut + 1);
    /* ChanVariable (manager.conf channelvars) in any snapshot */
    event_for(w, "Newstate", "u1", "ChanVariable: CALLTAG=chanvar\nChanVariable: OTHER=x\n");
    assert_string_equal(ami_chan_var(find(w, "u1"), 1, NULL), "chanvar");
    /* a global VarSet has no channel */
    apply(w, "Event: VarSet\nChannel: none\nUniqueid: none\nVariable: CRM_ID\nValue: global\n");
    assert_string_equal(ami_chan_var(find(w, "u1"), 0, NULL), "01234567");
    world_free(w);
}

static void max_channels_refuses_and_counts(void **state)
{
    (void)state;
    world_t *w = world_new(3, 256);
    char name[32], uid[32];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "PJSIP/1-%d", i);
        snprintf(uid, sizeof uid, "u%d", i);
        newchannel(w, name, uid, uid);
    }
    assert_int_equal(w->t.count, 3);
    assert_int_equal(w->t.refused, 2);
    assert_null(find(w, "u3"));
    event_for(w, "Hangup", "u0", "Cause: 16\n");
    newchannel(w, "PJSIP/1-9", "u9", "u9"); /* room again */
    assert_non_null(find(w, "u9"));
    assert_int_equal(w->t.refused, 2);
    world_free(w);
}

static void hostile_values_are_cut_or_ignored(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    static char text[66000];
    char big[60001];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(text, sizeof text, "Event: Newchannel\nChannel: %s\nUniqueid: u1\nChannelState: -3\n"
                                "Priority: 99999999999999\nCallerIDName: %.1000s\n", big, big);
    apply(w, text);
    const ami_chan_t *c = find(w, "u1");
    assert_non_null(c);
    size_t len;
    ami_chan_str(c, AMI_CHAN_CHANNEL, &len);
    assert_int_equal(len, AMI_CHAN_FIELD_MAX);
    assert_int_equal(w->t.truncated, 2);
    assert_int_equal(ami_chan_state(c), -1);   /* not a state number: unknown */
    assert_int_equal(ami_chan_priority(c), 0); /* too big: ignored */
    apply(w, "Event: Newchannel\nChannel: PJSIP/x\nUniqueid: \n");  /* no Uniqueid: nothing */
    apply(w, "Event: Newchannel\nChannel: PJSIP/y\n");
    apply(w, "Event: Hangup\n");
    apply(w, "Event: Rename\nUniqueid: u1\nNewname: \n");
    apply(w, "Event: BridgeDestroy\n");
    apply(w, "Event: DialEnd\nDialStatus: ANSWER\n");
    apply(w, "Event: Newstate\nUniqueid: u1\nChannelState: 6x\nDuration: 99:99:99\nTimestamp: nan\n");
    assert_int_equal(w->t.count, 1);
    assert_int_equal(ami_chan_state(find(w, "u1")), -1);
    world_free(w);
}

static void event_timestamps_set_the_times(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    apply(w, "Event: Newchannel\nTimestamp: 1700000000.250000\nChannel: PJSIP/1\nUniqueid: u1\nChannelState: 4\n");
    assert_true(ami_chan_started(find(w, "u1")) == 1700000000.25);
    apply(w, "Event: Newstate\nTimestamp: 1700000003.5\nUniqueid: u1\nChannelState: 6\n");
    assert_true(ami_chan_answered(find(w, "u1")) == 1700000003.5);
    world_free(w);
}

/* ---- rebuild ------------------------------------------------------------------------- */

static void rebuild_replaces_the_table_with_the_list(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/old-1", "gone", "gone");   /* ended while the engine was away */
    newchannel(w, "PJSIP/1001-1", "u1", "u1");      /* still there */
    event_for(w, "VarSet", "u1", "Variable: CRM_ID\nValue: 42\n");
    cs_table_rebuild_begin(&w->t);
    cs_table_rebuild_listing(&w->t);
    list_item(w, "PJSIP/1001-1", "u1", "u1", 6, "00:00:09", "b7");
    list_item(w, "PJSIP/2001-2", "u2", "u1", 6, "01:02:03", "b7");
    cs_table_rebuild_end(&w->t, true);
    assert_int_equal(w->t.count, 2);
    assert_null(find(w, "gone"));
    const ami_chan_t *u1 = find(w, "u1"), *u2 = find(w, "u2");
    assert_int_equal(ami_chan_state(u1), 6);
    assert_string_equal(str(u1, AMI_CHAN_BRIDGE), "b7");
    assert_string_equal(str(u1, AMI_CHAN_APPLICATION), "Dial");
    assert_string_equal(str(u1, AMI_CHAN_APPDATA), "PJSIP/2001");
    assert_true(ami_chan_started(u1) == NOW);       /* known from its Newchannel */
    assert_string_equal(ami_chan_var(u1, 0, NULL), "42"); /* kept: the list has no variables */
    assert_true(ami_chan_started(u2) == NOW - 3723); /* from Duration */
    assert_true(ami_chan_answered(u2) == NOW);
    assert_int_equal(w->t.rebuilds, 1);
    assert_false(w->t.rebuilding);
    world_free(w);
}

static void events_before_the_list_are_overwritten_by_it(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    cs_table_rebuild_begin(&w->t);
    /* before the first response: happened before the snapshot */
    event_for(w, "Newstate", "u1", "ChannelState: 5\nChannelStateDesc: Ringing\n");
    newchannel(w, "PJSIP/short-1", "brief", "brief"); /* will not be listed: ended before the snapshot */
    cs_table_rebuild_listing(&w->t);
    list_item(w, "PJSIP/1001-1", "u1", "u1", 6, "00:00:01", "");
    cs_table_rebuild_end(&w->t, true);
    assert_int_equal(ami_chan_state(find(w, "u1")), 6);
    assert_null(find(w, "brief"));
    assert_int_equal(w->t.count, 1);
    world_free(w);
}

static void events_inside_the_list_win_over_its_items(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    newchannel(w, "PJSIP/1002-1", "u2", "u2");
    cs_table_rebuild_begin(&w->t);
    cs_table_rebuild_listing(&w->t);
    /* interleaved with the items: may be after the snapshot */
    event_for(w, "Newstate", "u1", "ChannelState: 6\nChannelStateDesc: Up\n");
    event_for(w, "Hangup", "u2", "Cause: 16\n");
    newchannel(w, "PJSIP/1003-1", "u3", "u3");
    list_item(w, "PJSIP/1001-1", "u1", "u1", 5, "00:00:01", ""); /* older than the Newstate */
    list_item(w, "PJSIP/1002-1", "u2", "u2", 6, "00:00:01", ""); /* hung up since: stays gone */
    cs_table_rebuild_end(&w->t, true);
    assert_int_equal(ami_chan_state(find(w, "u1")), 6);
    assert_null(find(w, "u2"));
    assert_non_null(find(w, "u3")); /* created after the snapshot: not dropped */
    assert_int_equal(w->t.count, 2);
    assert_int_equal(w->t.ntombs, 0); /* tombstones live only during a rebuild */
    world_free(w);
}

static void events_after_the_list_converge(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    cs_table_rebuild_begin(&w->t);
    cs_table_rebuild_listing(&w->t);
    list_item(w, "PJSIP/1001-1", "u1", "u1", 6, "00:00:02", "");
    cs_table_rebuild_end(&w->t, true);
    /* Asterisk flushes the events it queued while it wrote the list: older than the list */
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    assert_int_equal(ami_chan_state(find(w, "u1")), 4);
    event_for(w, "Newstate", "u1", "ChannelState: 6\nChannelStateDesc: Up\n");
    newchannel(w, "PJSIP/brief-1", "brief", "brief");
    event_for(w, "Hangup", "brief", "Cause: 16\n");
    event_for(w, "Newstate", "u2", "ChannelState: 6\n"); /* ended before the list: unknown, ignored */
    assert_int_equal(w->t.count, 1);
    assert_int_equal(ami_chan_state(find(w, "u1")), 6);
    assert_true(ami_chan_started(find(w, "u1")) == NOW - 2); /* the rebuild's start time stays */
    world_free(w);
}

static void a_truncated_or_failed_rebuild_drops_nothing(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    newchannel(w, "PJSIP/1002-1", "u2", "u2");
    cs_table_rebuild_begin(&w->t);
    cs_table_rebuild_listing(&w->t);
    list_item(w, "PJSIP/1001-1", "u1", "u1", 6, "00:00:01", "");
    cs_table_rebuild_end(&w->t, false);
    assert_int_equal(w->t.count, 2);
    cs_table_rebuild_begin(&w->t);
    cs_table_rebuild_listing(&w->t);
    cs_table_rebuild_abort(&w->t);
    assert_int_equal(w->t.count, 2);
    assert_int_equal(w->t.rebuilds, 1);
    /* items outside a rebuild do nothing */
    list_item(w, "PJSIP/9-1", "u9", "u9", 6, "00:00:01", "");
    assert_null(find(w, "u9"));
    world_free(w);
}

static void an_empty_list_empties_the_table(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "PJSIP/1001-1", "u1", "u1");
    cs_table_rebuild_begin(&w->t);
    cs_table_rebuild_end(&w->t, true); /* CoreShowChannelsComplete, ListItems: 0 */
    assert_int_equal(w->t.count, 0);
    world_free(w);
}

static void list_items_respect_max_channels(void **state)
{
    (void)state;
    world_t *w = world_new(2, 256);
    cs_table_rebuild_begin(&w->t);
    cs_table_rebuild_listing(&w->t);
    list_item(w, "PJSIP/1-1", "u1", "u1", 6, "00:00:01", "");
    list_item(w, "PJSIP/1-2", "u2", "u2", 6, "00:00:01", "");
    list_item(w, "PJSIP/1-3", "u3", "u3", 6, "00:00:01", "");
    cs_table_rebuild_end(&w->t, true);
    assert_int_equal(w->t.count, 2);
    assert_int_equal(w->t.refused, 1);
    world_free(w);
}

/* ---- calls ------------------------------------------------------------------------- */

static void calls_group_by_linkedid_and_bridge_transitively(void **state)
{
    (void)state;
    world_t *w = world_new(100, 256);
    newchannel(w, "A", "a", "L1");
    newchannel(w, "B", "b", "L1"); /* same Linkedid as a */
    newchannel(w, "C", "c", "L2");
    newchannel(w, "D", "d", "L3");
    newchannel(w, "E", "e", "L4");
    newchannel(w, "F", "f", "L2"); /* joins c by Linkedid */
    event_for(w, "BridgeEnter", "b", "BridgeUniqueid: br\n");
    event_for(w, "BridgeEnter", "d", "BridgeUniqueid: br\n"); /* d joins a,b through the bridge */
    cs_calls_ws_t ws = {0};
    const ami_calls_view_t *v = cs_calls_group(&ws, &w->t);
    assert_non_null(v);
    assert_int_equal(v->nchans, 6);
    assert_int_equal(v->ncalls, 3);
    uint32_t want[] = {0, 0, 1, 0, 2, 1};
    for (int i = 0; i < 6; i++)
        assert_int_equal(v->call_of[i], want[i]);
    /* the transfer is over: d leaves the bridge and is a call of its own again */
    event_for(w, "BridgeLeave", "d", "BridgeUniqueid: br\n");
    v = cs_calls_group(&ws, &w->t);
    assert_int_equal(v->ncalls, 4);
    cs_calls_ws_free(&ws);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(newchannel_creates_a_channel_with_every_field),
        cmocka_unit_test(events_update_their_fields),
        cmocka_unit_test(an_event_that_changes_nothing_keeps_the_version),
        cmocka_unit_test(hangup_removes_but_the_channel_stays_findable_during_its_dispatch),
        cmocka_unit_test(events_never_create_or_resurrect_a_channel),
        cmocka_unit_test(rename_changes_the_name_index),
        cmocka_unit_test(bridges_set_and_clear_membership),
        cmocka_unit_test(dial_events_record_who_dialed_and_how_it_ended),
        cmocka_unit_test(transfer_and_local_bridge_snapshots_update_each_channel),
        cmocka_unit_test(only_tracked_variables_are_kept),
        cmocka_unit_test(max_channels_refuses_and_counts),
        cmocka_unit_test(hostile_values_are_cut_or_ignored),
        cmocka_unit_test(event_timestamps_set_the_times),
        cmocka_unit_test(rebuild_replaces_the_table_with_the_list),
        cmocka_unit_test(events_before_the_list_are_overwritten_by_it),
        cmocka_unit_test(events_inside_the_list_win_over_its_items),
        cmocka_unit_test(events_after_the_list_converge),
        cmocka_unit_test(a_truncated_or_failed_rebuild_drops_nothing),
        cmocka_unit_test(an_empty_list_empties_the_table),
        cmocka_unit_test(list_items_respect_max_channels),
        cmocka_unit_test(calls_group_by_linkedid_and_bridge_transitively),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
