/*
 * The simulator itself, over real TCP: protocol behaviour checked against
 * the recorded Asterisk sessions, every fault, replay, stop/restart, flood.
 * Each test owns a simulator on its own loop, driven from this thread by
 * the test client while it waits (see tests/support/sim_client.h), and
 * proves on teardown that every byte it allocated came back (the
 * simulator's own allocation account, and the engine's, which the test
 * client's parser uses).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "fixtures.h"
#include "sim/sim.h"
#include "sim_client.h"
#include "util/alloc.h"
#include "util/clock.h"
#include "util/md5.h"

#define T 2000 /* ms: generous wait for anything that should come */

static const char LOGIN[] =
    "Action: Login\r\nActionID: login-1\r\nUsername: engine\r\nSecret: s3cret\r\n\r\n";
static const char LOGIN_QUIET[] =
    "Action: Login\r\nActionID: login-1\r\nUsername: engine\r\nSecret: s3cret\r\nEvents: off\r\n\r\n";

typedef struct env {
    int64_t live_before;     /* the engine's account */
    int64_t sim_live_before; /* the simulator's */
    ami_sim_t *sim;
    struct ev_loop *loop;
    ami_sim_node_t *node;
    sim_client_t c;
} env_t;

static int env_open(void **state, const ami_sim_node_config_t *cfg)
{
    env_t *e = calloc(1, sizeof *e);
    e->live_before = ami_alloc_live_bytes();
    e->sim_live_before = ami_alloc_account_live_bytes(AMI_ALLOC_SIMULATOR);
    e->sim = ami_sim_new(NULL, NULL);
    assert_non_null(e->sim);
    e->loop = ami_sim_loop(e->sim);
    ami_err_t err;
    e->node = ami_sim_add_node(e->sim, cfg, &err);
    if (!e->node)
        fail_msg("add_node: %s", err.msg);
    e->c.fd = -1;
    *state = e;
    return 0;
}

static int setup(void **state)
{
    ami_sim_node_config_t cfg = {.name = "pbx1"};
    return env_open(state, &cfg);
}

static int teardown(void **state)
{
    env_t *e = *state;
    sim_client_close(&e->c);
    ami_sim_free(e->sim);
    assert_int_equal(ami_alloc_account_live_bytes(AMI_ALLOC_SIMULATOR), e->sim_live_before);
    assert_int_equal(ami_alloc_live_bytes(), e->live_before);
    free(e);
    return 0;
}

static void connect_client(env_t *e)
{
    assert_int_equal(sim_client_connect(&e->c, e->loop, ami_sim_node_port(e->node)), 0);
}

static void expect_msg(env_t *e, ami_msg_t *m)
{
    int rc = sim_client_next(&e->c, m, T);
    if (rc != 1)
        fail_msg("no message (rc %d, eof %d, err '%s')", rc, e->c.eof, e->c.err.msg);
}

static void check_value(const ami_msg_t *m, const char *key, const char *want)
{
    const char *v = ami_msg_get(m, key);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s: want '%s', got '%s'", key, want, v ? v : "(none)");
}

static void expect_response(env_t *e, const char *response, const char *aid, const char *message)
{
    ami_msg_t m;
    expect_msg(e, &m);
    assert_int_equal(m.kind, AMI_MSG_RESPONSE);
    check_value(&m, "Response", response);
    if (aid) {
        assert_string_equal(sim_client_key(&m, 1), "ActionID");
        check_value(&m, "ActionID", aid);
    } else {
        assert_null(ami_msg_get(&m, "ActionID"));
    }
    if (message)
        check_value(&m, "Message", message);
}

static void skip_banner(env_t *e)
{
    ami_msg_t m;
    expect_msg(e, &m);
    assert_int_equal(m.kind, AMI_MSG_BANNER);
}

/* Connected, logged in, and past FullyBooted/SuccessfulAuth when events are on. */
static void login(env_t *e, bool events)
{
    connect_client(e);
    skip_banner(e);
    assert_int_equal(sim_client_send(&e->c, events ? LOGIN : LOGIN_QUIET), 0);
    expect_response(e, "Success", "login-1", "Authentication accepted");
    if (events) {
        ami_msg_t m;
        assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "SuccessfulAuth", T), 1);
    }
}

static void set_faults(env_t *e, ami_sim_faults_t f)
{
    ami_sim_node_set_faults(e->node, &f);
}

/* Nothing at all arrives within ms. */
static void expect_silence(env_t *e, int ms)
{
    ami_msg_t m;
    int rc = sim_client_next(&e->c, &m, ms);
    if (rc == 1)
        fail_msg("unexpected message: %s", ami_msg_name(&m));
}

/* ---- connection and login ----------------------------------------------- */

static void test_banner(void **state)
{
    env_t *e = *state;
    connect_client(e);
    char buf[64];
    size_t n = sim_client_read_raw(&e->c, buf, 30, T);
    assert_int_equal(n, 30);
    assert_memory_equal(buf, "Asterisk Call Manager/11.0.0\r\n", 30);
    expect_silence(e, 100); /* no blank line after the banner */
}

static void test_login_plain(void **state)
{
    env_t *e = *state;
    connect_client(e);
    skip_banner(e);
    sim_client_send(&e->c, LOGIN);
    expect_response(e, "Success", "login-1", "Authentication accepted");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Event", "FullyBooted");
    check_value(&m, "Privilege", "system,all");
    check_value(&m, "Status", "Fully Booted");
    expect_msg(e, &m);
    check_value(&m, "Event", "SuccessfulAuth");
    check_value(&m, "AccountID", "engine");
    check_value(&m, "UsingPassword", "0");
    sim_client_send(&e->c, "Action: Login\r\nActionID: again\r\nUsername: engine\r\nSecret: s3cret\r\n\r\n");
    expect_response(e, "Success", "again", "Already authenticated");
    assert_int_equal(ami_sim_node_stats(e->node).logins_ok, 1);
}

static void test_login_bad_secret_closes(void **state)
{
    env_t *e = *state;
    set_faults(e, (ami_sim_faults_t){.login_delay_ms = 50});
    connect_client(e);
    skip_banner(e);
    int64_t t0 = ami_now_ms();
    sim_client_send(&e->c, "Action: Login\r\nActionID: bad\r\nUsername: engine\r\nSecret: wrong\r\n\r\n");
    expect_response(e, "Error", "bad", "Authentication failed");
    assert_true(ami_now_ms() - t0 >= 40);
    assert_true(sim_client_wait_closed(&e->c, T));
    assert_int_equal(ami_sim_node_stats(e->node).logins_failed, 1);
}

static void test_md5_known_vectors(void **state)
{
    (void)state;
    char hex[33];
    ami_md5_hex("abc", 3, hex);
    assert_string_equal(hex, "900150983cd24fb0d6963f7d28e17f72");
    ami_md5_hex("", 0, hex);
    assert_string_equal(hex, "d41d8cd98f00b204e9800998ecf8427e");
    /* the recorded login-md5-challenge session */
    ami_md5_hex("123610179s3cret", 15, hex);
    assert_string_equal(hex, "8ae30f812e305ac7d42205e4158c1bb6");
    char big[1000];
    memset(big, 'a', sizeof big);
    ami_md5_t ctx;
    ami_md5_init(&ctx);
    for (int i = 0; i < 1000; i++)
        ami_md5_update(&ctx, big, sizeof big);
    ami_md5_final_hex(&ctx, hex);
    assert_string_equal(hex, "7707d6ae4e027c70eea2a935c2296f21"); /* a million 'a' */
}

static void test_login_md5(void **state)
{
    env_t *e = *state;
    connect_client(e);
    skip_banner(e);
    sim_client_send(&e->c, "Action: Challenge\r\nActionID: chal-1\r\nAuthType: MD5\r\n\r\n");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Response", "Success");
    const char *challenge = ami_msg_get(&m, "Challenge");
    assert_non_null(challenge);
    assert_true(strlen(challenge) >= 6 && strspn(challenge, "0123456789") == strlen(challenge));
    char both[64], key[33], action[256];
    snprintf(both, sizeof both, "%ss3cret", challenge);
    ami_md5_hex(both, strlen(both), key);
    snprintf(action, sizeof action,
             "Action: Login\r\nActionID: login-md5\r\nAuthType: MD5\r\nUsername: engine\r\n"
             "Key: %s\r\n\r\n",
             key);
    sim_client_send(&e->c, action);
    expect_response(e, "Success", "login-md5", "Authentication accepted");
}

static void test_permission_denied_before_login(void **state)
{
    env_t *e = *state;
    connect_client(e);
    skip_banner(e);
    sim_client_send(&e->c, "Action: Ping\r\nActionID: p\r\n\r\n"
                           "Action: CoreShowChannels\r\nActionID: c\r\n\r\n");
    expect_response(e, "Error", "p", "Permission denied");
    expect_response(e, "Error", "c", "Permission denied");
    sim_client_send(&e->c, LOGIN_QUIET);
    expect_response(e, "Success", "login-1", "Authentication accepted");
}

static void test_ping(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Ping\r\nActionID: ping-1\r\n\r\n");
    ami_msg_t m;
    expect_msg(e, &m);
    assert_string_equal(sim_client_key(&m, 1), "ActionID");
    check_value(&m, "ActionID", "ping-1");
    check_value(&m, "Ping", "Pong");
    const char *ts = ami_msg_get(&m, "Timestamp");
    assert_non_null(ts);
    assert_non_null(strchr(ts, '.'));
    assert_int_equal(strlen(strchr(ts, '.') + 1), 6);
    sim_client_send(&e->c, "Action: Ping\r\n\r\n");
    expect_msg(e, &m);
    assert_null(ami_msg_get(&m, "ActionID"));
    assert_string_equal(sim_client_key(&m, 1), "Ping");
    sim_client_send(&e->c, "action: PING\r\nactionid: ping-lc\r\n\r\n");
    expect_response(e, "Success", "ping-lc", NULL);
    assert_int_equal(ami_sim_node_stats(e->node).pings_answered, 3);
}

static void test_logoff_closes(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Logoff\r\nActionID: logoff-1\r\n\r\n");
    expect_response(e, "Goodbye", "logoff-1", "Thanks for all the fish.");
    assert_true(sim_client_wait_closed(&e->c, T));
}

static void test_unknown_and_missing_action(void **state)
{
    env_t *e = *state;
    login(e, true);
    sim_client_send(&e->c, "Action: FrobnicateWidgets\r\nActionID: unk-1\r\n\r\n");
    expect_response(e, "Error", "unk-1",
                    "Invalid/unknown command: FrobnicateWidgets. Use Action: ListCommands to show "
                    "available commands.");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Event", "RequestBadFormat");
    check_value(&m, "RequestType", "Action: FrobnicateWidgets");
    sim_client_send(&e->c, "ActionID: noact-1\r\nFoo: bar\r\n\r\n");
    expect_response(e, "Error", "noact-1", "Missing action in request");
    expect_msg(e, &m);
    check_value(&m, "RequestType", "Action: NONE");
}

static void test_malformed_action_closes(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Ping\r\nthis line has no colon\r\n\r\n");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Response", "Error");
    assert_true(sim_client_wait_closed(&e->c, T));
    assert_true(ami_sim_node_running(e->node));
}

static void test_pipelined_and_lf_only(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Ping\r\nActionID: a\r\n\r\nAction: Ping\r\nActionID: b\r\n\r\n"
                           "Action: Ping\nActionID: c\n\n");
    expect_response(e, "Success", "a", NULL);
    expect_response(e, "Success", "b", NULL);
    expect_response(e, "Success", "c", NULL);
}

/* ---- calls ---------------------------------------------------------------- */

static void test_originate_async(void **state)
{
    env_t *e = *state;
    login(e, true);
    sim_client_send(&e->c, "Action: Originate\r\nActionID: orig-async-1\r\nChannel: Local/100@test\r\n"
                           "Application: Wait\r\nData: 0.2\r\nAsync: true\r\n\r\n");
    expect_response(e, "Success", "orig-async-1", "Originate successfully queued");
    ami_msg_t m;
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "OriginateResponse", T), 1);
    assert_string_equal(sim_client_key(&m, 2), "ActionID");
    check_value(&m, "ActionID", "orig-async-1");
    check_value(&m, "Response", "Success");
    check_value(&m, "Reason", "4");
    const char *chan = ami_msg_get(&m, "Channel");
    assert_non_null(strstr(chan, "Local/100@test-"));
    assert_non_null(strstr(chan, ";1"));
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "Hangup", T), 1);
    check_value(&m, "Cause-txt", "Unknown");
    assert_int_equal(ami_sim_node_stats(e->node).originates, 1);
}

static void test_originate_sync_answers_first(void **state)
{
    env_t *e = *state;
    login(e, true);
    sim_client_send(&e->c, "Action: Originate\r\nActionID: sync-1\r\nChannel: Local/100@test\r\n"
                           "Application: Wait\r\nData: 0.2\r\nAsync: false\r\n\r\n");
    expect_response(e, "Success", "sync-1", "Originate successfully queued");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Event", "Newchannel");
    while (sim_client_next(&e->c, &m, 500) == 1)
        assert_string_not_equal(ami_msg_name(&m), "OriginateResponse");
}

static void test_originate_failures(void **state)
{
    env_t *e = *state;
    login(e, true);
    sim_client_send(&e->c, "Action: Originate\r\nActionID: orig-fail-2\r\nChannel: Bogus/123\r\n"
                           "Application: Wait\r\nData: 1\r\nAsync: true\r\n\r\n");
    expect_response(e, "Success", "orig-fail-2", "Originate successfully queued");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Event", "OriginateResponse");
    check_value(&m, "Response", "Failure");
    check_value(&m, "Channel", "Bogus/123");
    check_value(&m, "Reason", "0");
    check_value(&m, "Uniqueid", "<unknown>");
    sim_client_send(&e->c, "Action: Originate\r\nActionID: orig-fail-1\r\nChannel: Local/999@test\r\n"
                           "Application: Wait\r\nData: 1\r\nAsync: true\r\n\r\n");
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "OriginateResponse", T), 1);
    check_value(&m, "Response", "Failure");
    check_value(&m, "Channel", "Local/999@test");
    sim_client_send(&e->c, "Action: Originate\r\nActionID: orig-fail-3\r\nChannel: Local/999@test\r\n"
                           "Application: Wait\r\nAsync: false\r\n\r\n");
    assert_int_equal(sim_client_wait_for(&e->c, &m, "ActionID", "orig-fail-3", T), 1);
    check_value(&m, "Message", "Originate failed");
    sim_client_send(&e->c, "Action: Originate\r\nActionID: orig-fail-4\r\nApplication: Wait\r\n\r\n");
    assert_int_equal(sim_client_wait_for(&e->c, &m, "ActionID", "orig-fail-4", T), 1);
    check_value(&m, "Message", "Channel not specified");
}

static void originate_long(env_t *e, const char *aid, const char *id1, const char *id2)
{
    char action[512];
    snprintf(action, sizeof action,
             "Action: Originate\r\nActionID: %s\r\nChannel: Local/600@test\r\nApplication: Wait\r\n"
             "Data: 30\r\nAsync: true\r\nChannelId: %s\r\nOtherChannelId: %s\r\n\r\n",
             aid, id1, id2);
    sim_client_send(&e->c, action);
    expect_response(e, "Success", aid, "Originate successfully queued");
}

static void test_core_show_channels_list(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: CoreShowChannels\r\nActionID: csc-0\r\n\r\n");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "EventList", "start");
    check_value(&m, "Message", "Channels will follow");
    expect_msg(e, &m);
    check_value(&m, "Event", "CoreShowChannelsComplete");
    check_value(&m, "ListItems", "0");
    originate_long(e, "o1", "a1", "a2");
    originate_long(e, "o2", "b1", "b2");
    sim_client_send(&e->c, "Action: CoreShowChannels\r\nActionID: csc-3\r\n\r\n");
    expect_response(e, "Success", "csc-3", "Channels will follow");
    int items = 0;
    for (;;) {
        expect_msg(e, &m);
        assert_string_equal(sim_client_key(&m, 1), "ActionID");
        check_value(&m, "ActionID", "csc-3");
        if (strcmp(ami_msg_name(&m), "CoreShowChannelsComplete") == 0)
            break;
        check_value(&m, "Event", "CoreShowChannel");
        assert_null(ami_msg_get(&m, "Privilege"));
        assert_non_null(ami_msg_get(&m, "Duration"));
        items++;
    }
    assert_int_equal(items, 4);
    check_value(&m, "EventList", "Complete");
    check_value(&m, "ListItems", "4");
}

static void test_status(void **state)
{
    env_t *e = *state;
    login(e, false);
    originate_long(e, "o1", "st-a1", "st-a2");
    sim_client_send(&e->c, "Action: Status\r\nActionID: status-none\r\nChannel: Local/nope-0000\r\n\r\n");
    expect_response(e, "Error", "status-none", "No such channel");
    sim_client_send(&e->c, "Action: Status\r\nActionID: status-part\r\nChannel: Local/600@test-\r\n\r\n");
    expect_response(e, "Error", "status-part", "No such channel");
    sim_client_send(&e->c, "Action: CoreShowChannels\r\nActionID: find\r\n\r\n");
    ami_msg_t m;
    char name[128] = "";
    while (sim_client_next(&e->c, &m, T) == 1 && strcmp(ami_msg_name(&m), "CoreShowChannelsComplete"))
        if (ami_msg_get(&m, "Uniqueid") && !strcmp(ami_msg_get(&m, "Uniqueid"), "st-a2"))
            snprintf(name, sizeof name, "%s", ami_msg_get(&m, "Channel"));
    assert_non_null(strstr(name, ";2"));
    char action[256];
    snprintf(action, sizeof action,
             "Action: Status\r\nActionID: status-exact\r\nChannel: %s\r\nVariables: CALLTAG\r\n\r\n",
             name);
    sim_client_send(&e->c, action);
    expect_response(e, "Success", "status-exact", "Channel status will follow");
    expect_msg(e, &m);
    check_value(&m, "Event", "Status");
    check_value(&m, "Privilege", "Call");
    check_value(&m, "Variable", "CALLTAG=long-st-a2");
    assert_string_equal(sim_client_key(&m, m.nhdrs - 1), "ActionID");
    expect_msg(e, &m);
    check_value(&m, "Event", "StatusComplete");
    check_value(&m, "ListItems", "1");
    check_value(&m, "Items", "1");
}

static void test_hangup_with_cause(void **state)
{
    env_t *e = *state;
    login(e, true);
    sim_client_send(&e->c, "Action: Hangup\r\nActionID: hup-1\r\n"
                           "Channel: Local/600@test-nonexistent;1\r\n\r\n");
    expect_response(e, "Error", "hup-1", "No such channel");
    originate_long(e, "orig-h", "hup-a1", "hup-a2");
    ami_msg_t m;
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Uniqueid", "hup-a2", T), 1);
    char action[256];
    snprintf(action, sizeof action, "Action: Hangup\r\nActionID: hup-2\r\nChannel: %s\r\nCause: 21\r\n\r\n",
             ami_msg_get(&m, "Channel"));
    sim_client_send(&e->c, action);
    assert_int_equal(sim_client_wait_for(&e->c, &m, "ActionID", "hup-2", T), 1);
    check_value(&m, "Message", "Channel Hungup");
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "Hangup", T), 1);
    check_value(&m, "Cause", "21");
    check_value(&m, "Cause-txt", "Call Rejected");
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "Hangup", T), 1);
    check_value(&m, "Cause-txt", "Call Rejected");
    assert_int_equal(ami_sim_node_stats(e->node).calls_active, 0);
}

static void test_redirect(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Redirect\r\nActionID: r0\r\nChannel: Local/x-1;1\r\nExten: 100\r\n\r\n");
    expect_response(e, "Error", "r0", "No such channel");
    originate_long(e, "o1", "rd-1", "rd-2");
    sim_client_send(&e->c, "Action: Events\r\nActionID: ev\r\nEventMask: on\r\n\r\n");
    expect_response(e, "Success", "ev", NULL);
    sim_client_send(&e->c, "Action: CoreShowChannels\r\nActionID: find\r\n\r\n");
    ami_msg_t m;
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Uniqueid", "rd-1", T), 1);
    char action[256];
    snprintf(action, sizeof action,
             "Action: Redirect\r\nActionID: r1\r\nChannel: %s\r\nContext: test\r\nExten: 700\r\n"
             "Priority: 1\r\n\r\n",
             ami_msg_get(&m, "Channel"));
    sim_client_send(&e->c, action);
    assert_int_equal(sim_client_wait_for(&e->c, &m, "ActionID", "r1", T), 1);
    check_value(&m, "Message", "Redirect successful");
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "Newexten", T), 1);
    check_value(&m, "Exten", "700");
}

static void test_getvar_setvar(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c,
                    "Action: Setvar\r\nActionID: sv-1\r\nVariable: ENGINE_GLOBAL\r\nValue: 42\r\n\r\n");
    expect_response(e, "Success", "sv-1", "Variable Set");
    ami_msg_t m;
    sim_client_send(&e->c, "Action: Getvar\r\nActionID: gv-1\r\nVariable: ENGINE_GLOBAL\r\n\r\n");
    expect_msg(e, &m);
    check_value(&m, "Variable", "ENGINE_GLOBAL");
    check_value(&m, "Value", "42");
    sim_client_send(&e->c, "Action: Getvar\r\nActionID: gv-3\r\nVariable: NOT_SET_ANYWHERE\r\n\r\n");
    expect_msg(e, &m);
    check_value(&m, "Response", "Success");
    check_value(&m, "Value", "");
    sim_client_send(&e->c, "Action: Getvar\r\nActionID: gv-2\r\nVariable: TESTGLOBAL\r\n\r\n");
    expect_msg(e, &m);
    check_value(&m, "Value", "hello");
    sim_client_send(&e->c, "Action: Getvar\r\nActionID: gv-6\r\n\r\n");
    expect_response(e, "Error", "gv-6", "No variable specified");
    sim_client_send(&e->c, "Action: Getvar\r\nActionID: gv-5\r\nVariable: X\r\n"
                           "Channel: Local/none-00000000;1\r\n\r\n");
    expect_response(e, "Error", "gv-5", "No such channel");
}

static int setup_traffic(void **state)
{
    ami_sim_node_config_t cfg = {.name = "busy", .calls_per_second = 40, .call_duration_ms = 300,
                                 .seed = 7};
    return env_open(state, &cfg);
}

static void test_background_traffic(void **state)
{
    env_t *e = *state;
    login(e, true);
    ami_msg_t m;
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "Newchannel", T), 1);
    assert_non_null(strstr(ami_msg_get(&m, "Channel"), "PJSIP/"));
    check_value(&m, "Privilege", "call,all");
    int64_t deadline = ami_now_ms() + 5000;
    bool hangup = false, bridge = false;
    while (!(hangup && bridge) && ami_now_ms() < deadline && sim_client_next(&e->c, &m, 500) >= 0) {
        if (!strcmp(ami_msg_name(&m), "Hangup")) {
            assert_non_null(ami_msg_get(&m, "Cause-txt"));
            hangup = true;
        }
        bridge |= !strcmp(ami_msg_name(&m), "BridgeEnter");
    }
    assert_true(hangup && bridge);
    ami_sim_node_stats_t st = ami_sim_node_stats(e->node);
    assert_true(st.calls_started > 0);
    assert_true(st.events_sent > 0);
    ami_sim_node_set_call_rate(e->node, 0);
    /* the generated calls are in the channel table */
    sim_client_send(&e->c, "Action: CoreShowChannels\r\nActionID: csc\r\n\r\n");
    assert_int_equal(sim_client_wait_for(&e->c, &m, "ActionID", "csc", T), 1);
    int items = 0;
    while (sim_client_next(&e->c, &m, T) == 1) {
        const char *aid = ami_msg_get(&m, "ActionID");
        if (!aid || strcmp(aid, "csc") != 0)
            continue;
        if (!strcmp(ami_msg_name(&m), "CoreShowChannelsComplete"))
            break;
        items++;
    }
    assert_true(items > 0);
    char want[16];
    snprintf(want, sizeof want, "%d", items);
    check_value(&m, "ListItems", want);
}

static void test_queue_lists(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: QueueStatus\r\nActionID: qs\r\n\r\n");
    expect_response(e, "Success", "qs", "Queue status will follow");
    ami_msg_t m;
    int items = 0, params = 0;
    for (;;) {
        expect_msg(e, &m);
        if (!strcmp(ami_msg_name(&m), "QueueStatusComplete"))
            break;
        assert_string_equal(sim_client_key(&m, m.nhdrs - 1), "ActionID");
        params += !strcmp(ami_msg_name(&m), "QueueParams");
        items++;
    }
    assert_int_equal(params, 2);
    char want[16];
    snprintf(want, sizeof want, "%d", items);
    check_value(&m, "ListItems", want);
    sim_client_send(&e->c, "Action: QueueStatus\r\nActionID: qs-nosuch\r\nQueue: nosuchq\r\n\r\n");
    expect_response(e, "Success", "qs-nosuch", "Queue status will follow");
    expect_msg(e, &m);
    check_value(&m, "Event", "QueueStatusComplete");
    check_value(&m, "ListItems", "0");
    sim_client_send(&e->c, "Action: QueueSummary\r\nActionID: qsum\r\nQueue: sales\r\n\r\n");
    expect_response(e, "Success", "qsum", "Queue summary will follow");
    expect_msg(e, &m);
    check_value(&m, "Queue", "sales");
    expect_msg(e, &m);
    check_value(&m, "ListItems", "1");
}

/* ---- other actions ---------------------------------------------------------- */

static void test_command(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Command\r\nActionID: cmd-1\r\nCommand: core show version\r\n\r\n");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Response", "Success");
    check_value(&m, "Message", "Command output follows");
    assert_int_equal(strncmp(ami_msg_get(&m, "Output"), "Asterisk 22.10.1", 16), 0);
    sim_client_send(&e->c, "Action: Command\r\nActionID: cmd-3\r\nCommand: core show uptime\r\n\r\n");
    expect_msg(e, &m);
    long first = ami_msg_next_index(&m, "Output", 6, 0);
    assert_true(first > 0);
    assert_true(ami_msg_next_index(&m, "Output", 6, (size_t)first + 1) > first);
    assert_int_equal(strncmp(ami_msg_get(&m, "Output"), "System uptime: ", 15), 0);
    sim_client_send(&e->c, "Action: Command\r\nActionID: cmd-bad\r\nCommand: no such command here\r\n\r\n");
    expect_msg(e, &m);
    check_value(&m, "Response", "Error");
    check_value(&m, "Message", "Command output follows");
    check_value(&m, "Output", "No such command 'no such command here' (type 'core show help no such' "
                               "for other possible commands)");
    sim_client_send(&e->c, "Action: Command\r\nActionID: cmd-empty\r\n\r\n");
    expect_response(e, "Error", "cmd-empty", "No command provided");
    sim_client_send(&e->c, "Action: Command\r\nActionID: cmd-2\r\nCommand: dialplan show test\r\n\r\n");
    expect_msg(e, &m);
    check_value(&m, "Output", "[ Context 'test' created by 'pbx_config' ]");
    assert_true(m.nhdrs > 20);
}

static void test_events_off_suppresses(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Originate\r\nActionID: quiet\r\nChannel: Local/100@test\r\n"
                           "Application: Wait\r\nData: 0.1\r\nAsync: true\r\n\r\n");
    expect_response(e, "Success", "quiet", "Originate successfully queued");
    sim_client_send(&e->c, "Action: UserEvent\r\nActionID: ue\r\nUserEvent: X\r\n\r\n");
    expect_response(e, "Success", "ue", "Event Sent");
    expect_silence(e, 300);
    sim_client_send(&e->c, "Action: Events\r\nActionID: ev-call\r\nEventMask: call\r\n\r\n");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Events", "On");
    sim_client_send(&e->c, "Action: Originate\r\nActionID: loud\r\nChannel: Local/100@test\r\n"
                           "Application: Wait\r\nData: 0.1\r\nAsync: true\r\n\r\n");
    expect_response(e, "Success", "loud", NULL);
    int n = 0;
    while (sim_client_next(&e->c, &m, 400) == 1) {
        check_value(&m, "Privilege", "call,all"); /* no dialplan class (Newexten) */
        n++;
    }
    assert_true(n >= 4);
    sim_client_send(&e->c, "Action: Events\r\nActionID: ev-bad\r\nEventMask: nonsense\r\n\r\n");
    expect_msg(e, &m);
    check_value(&m, "Events", "Off");
}

static void test_filter(void **state)
{
    env_t *e = *state;
    login(e, true);
    sim_client_send(&e->c, "Action: Filter\r\nActionID: flt-1\r\nOperation: Add\r\n"
                           "Filter: Event: Newchannel\r\n\r\n");
    expect_response(e, "Success", "flt-1", "Success");
    sim_client_send(&e->c, "Action: Filter\r\nActionID: flt-2\r\nOperation: Add\r\n"
                           "MatchCriteria: name(Hangup)\r\nFilter: \r\n\r\n");
    expect_response(e, "Success", "flt-2", "Success");
    sim_client_send(&e->c, "Action: Filter\r\nActionID: flt-3\r\nOperation: Add\r\n"
                           "MatchCriteria: action(exclude),header(Channel),method(ends_with)\r\n"
                           "Filter: ;2\r\n\r\n");
    expect_response(e, "Success", "flt-3", "Success");
    sim_client_send(&e->c, "Action: Filter\r\nActionID: flt-bad\r\nOperation: Add\r\n"
                           "Filter: Event: (unclosed\r\n\r\n");
    expect_response(e, "Error", "flt-bad", "Filter did not compile.  Check the syntax of the filter given.");
    sim_client_send(&e->c, "Action: Filter\r\nActionID: flt-badop\r\nOperation: Remove\r\nFilter: x\r\n\r\n");
    expect_response(e, "Error", "flt-badop", "Unknown operation");
    sim_client_send(&e->c, "Action: Originate\r\nActionID: orig-flt\r\nChannel: Local/100@test\r\n"
                           "Application: Wait\r\nData: 0.1\r\nAsync: true\r\n\r\n");
    expect_response(e, "Success", "orig-flt", NULL);
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Event", "Newchannel");
    assert_non_null(strstr(ami_msg_get(&m, "Channel"), ";1"));
    expect_msg(e, &m);
    check_value(&m, "Event", "Hangup");
    assert_non_null(strstr(ami_msg_get(&m, "Channel"), ";1"));
    expect_silence(e, 300);
}

static void test_userevent(void **state)
{
    env_t *e = *state;
    login(e, true);
    sim_client_send(&e->c, "Action: UserEvent\r\nActionID: ue-1\r\nUserEvent: EngineProbe\r\n"
                           "Header1: alpha\r\nHeader2: beta: gamma\r\n\r\n");
    expect_response(e, "Success", "ue-1", "Event Sent");
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Event", "UserEvent");
    check_value(&m, "Privilege", "user,all");
    assert_string_equal(sim_client_key(&m, 2), "UserEvent");
    assert_string_equal(sim_client_key(&m, 3), "ActionID");
    check_value(&m, "ActionID", "ue-1");
    check_value(&m, "Header2", "beta: gamma");
}

static void test_inject(void **state)
{
    env_t *e = *state;
    login(e, true);
    static const char RAW[] = "Event: Custom\r\nPrivilege: user,all\r\nFoo: bar\r\n\r\n";
    ami_sim_node_inject(e->node, RAW, sizeof RAW - 1);
    ami_msg_t m;
    expect_msg(e, &m);
    check_value(&m, "Event", "Custom");
    check_value(&m, "Foo", "bar");
}

/* ---- faults ----------------------------------------------------------------- */

static void test_fault_ping_silent(void **state)
{
    env_t *e = *state;
    login(e, false);
    set_faults(e, (ami_sim_faults_t){.ping_silent = true});
    sim_client_send(&e->c, "Action: Ping\r\nActionID: lost\r\n\r\n");
    expect_silence(e, 300);
    sim_client_send(&e->c, "Action: Getvar\r\nActionID: gv\r\nVariable: TESTGLOBAL\r\n\r\n");
    expect_response(e, "Success", "gv", NULL);
    ami_sim_node_stats_t st = ami_sim_node_stats(e->node);
    assert_int_equal(st.pings, 1);
    assert_int_equal(st.pings_answered, 0);
}

static void test_fault_all_silent_and_delay(void **state)
{
    env_t *e = *state;
    login(e, false);
    set_faults(e, (ami_sim_faults_t){.all_silent = true});
    sim_client_send(&e->c, "Action: Getvar\r\nActionID: gv\r\nVariable: TESTGLOBAL\r\n\r\n");
    expect_silence(e, 200);
    set_faults(e, (ami_sim_faults_t){.response_delay_ms = 200});
    int64_t t0 = ami_now_ms();
    sim_client_send(&e->c, "Action: Ping\r\nActionID: slow\r\n\r\nAction: Ping\r\nActionID: after\r\n\r\n");
    expect_response(e, "Success", "slow", NULL);
    assert_true(ami_now_ms() - t0 >= 180);
    expect_response(e, "Success", "after", NULL);
    assert_true(ami_now_ms() - t0 >= 380);
}

static void test_fault_reject_login(void **state)
{
    env_t *e = *state;
    set_faults(e, (ami_sim_faults_t){.reject_login = true, .login_delay_ms = 10});
    connect_client(e);
    skip_banner(e);
    sim_client_send(&e->c, LOGIN);
    expect_response(e, "Error", "login-1", "Authentication failed");
    assert_true(sim_client_wait_closed(&e->c, T));
}

static void test_fault_close_after_bytes(void **state)
{
    env_t *e = *state;
    set_faults(e, (ami_sim_faults_t){.close_after_bytes = 100});
    connect_client(e);
    sim_client_send(&e->c, LOGIN);
    char buf[4096];
    size_t n = sim_client_read_raw(&e->c, buf, sizeof buf, T);
    assert_int_equal(n, 100);
    assert_true(e->c.eof);
    assert_memory_equal(buf, "Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n", 49);
}

static void test_fault_banners(void **state)
{
    env_t *e = *state;
    set_faults(e, (ami_sim_faults_t){.no_banner = true});
    connect_client(e);
    expect_silence(e, 200);
    sim_client_close(&e->c);
    set_faults(e, (ami_sim_faults_t){.garbage_banner = true});
    connect_client(e);
    ami_msg_t m;
    assert_int_equal(sim_client_next(&e->c, &m, T), -1);
    assert_false(e->c.eof); /* a protocol error, not a close */
}

static void test_fault_close_mid_response(void **state)
{
    env_t *e = *state;
    login(e, false);
    set_faults(e, (ami_sim_faults_t){.close_mid_response = true});
    sim_client_send(&e->c, "Action: Ping\r\nActionID: cut\r\n\r\n");
    ami_msg_t m;
    assert_int_equal(sim_client_next(&e->c, &m, T), -1);
    assert_true(e->c.eof);
    assert_true(ami_parser_buffered(&e->c.parser) > 0); /* half a message was left */
}

static void test_fault_half_close_and_garbage(void **state)
{
    env_t *e = *state;
    set_faults(e, (ami_sim_faults_t){.half_close_after_login = true});
    login(e, false);
    assert_true(sim_client_wait_closed(&e->c, T));
    sim_client_close(&e->c);
    set_faults(e, (ami_sim_faults_t){0});
    login(e, false);
    set_faults(e, (ami_sim_faults_t){.send_garbage = true});
    ami_msg_t m;
    assert_int_equal(sim_client_next(&e->c, &m, T), -1);
    assert_false(e->c.eof);
    sim_client_close(&e->c);
    login(e, false); /* one-shot: the next session is clean */
    sim_client_send(&e->c, "Action: Ping\r\nActionID: ok\r\n\r\n");
    expect_response(e, "Success", "ok", NULL);
}

static void test_fault_stall_reads(void **state)
{
    env_t *e = *state;
    login(e, false);
    set_faults(e, (ami_sim_faults_t){.stall_reads = true});
    sim_client_send(&e->c, "Action: Ping\r\nActionID: stalled\r\n\r\n");
    expect_silence(e, 200);
    set_faults(e, (ami_sim_faults_t){0});
    expect_response(e, "Success", "stalled", NULL);
}

static void test_stop_restart(void **state)
{
    env_t *e = *state;
    uint16_t port = ami_sim_node_port(e->node);
    login(e, false);
    ami_sim_node_stop(e->node);
    assert_false(ami_sim_node_running(e->node));
    assert_true(sim_client_wait_closed(&e->c, T));
    sim_client_close(&e->c);
    sim_client_t c2;
    assert_int_equal(sim_client_connect(&c2, e->loop, port), -1);
    assert_int_equal(errno, ECONNREFUSED);
    ami_err_t err;
    assert_int_equal(ami_sim_node_restart(e->node, &err), 0);
    assert_true(ami_sim_node_running(e->node));
    assert_int_equal(ami_sim_node_port(e->node), port);
    login(e, false);
}

static void test_drop_sessions(void **state)
{
    env_t *e = *state;
    login(e, false);
    ami_sim_node_drop_sessions(e->node);
    assert_true(sim_client_wait_closed(&e->c, T));
    sim_client_close(&e->c);
    login(e, false);
    assert_int_equal(ami_sim_node_stats(e->node).sessions_live, 1);
}

/* Read until `want` events came, or `ms` passed; how many came. */
static size_t read_events(env_t *e, size_t want, int ms)
{
    size_t n = 0;
    ami_msg_t m;
    int64_t deadline = ami_now_ms() + ms;
    while (n < want && ami_now_ms() < deadline && sim_client_next(&e->c, &m, 50) == 1)
        n += m.kind == AMI_MSG_EVENT;
    return n;
}

/* The pacing is judged in the simulator's loop time, which a slow or busy
 * machine cannot fool: rate mode never hands out more than rate x elapsed
 * (plus the one event a tick rounds up to); max mode is not paced at all. */
static void test_flood(void **state)
{
    env_t *e = *state;
    login(e, true);
    uint64_t sent_before = ami_sim_node_stats(e->node).events_sent;
    ev_now_update(e->loop);
    double t0 = ev_now(e->loop); /* the flood's start: set_faults reads this clock */
    set_faults(e, (ami_sim_faults_t){.flood_events_per_sec = 2000});
    assert_int_equal(read_events(e, 300, 10 * T), 300);
    double elapsed = ev_now(e->loop) - t0;
    uint64_t sent = ami_sim_node_stats(e->node).events_sent - sent_before;
    print_message("rate mode: %llu events in %.3f s of loop time (2000/s)\n", (unsigned long long)sent, elapsed);
    assert_true((double)sent <= 2000.0 * elapsed + 1.0);
    set_faults(e, (ami_sim_faults_t){.flood_events_per_sec = -1});
    assert_int_equal(read_events(e, 5000, 10 * T), 5000);
    set_faults(e, (ami_sim_faults_t){0});
    sim_client_send(&e->c, "Action: Ping\r\nActionID: after-flood\r\n\r\n");
    ami_msg_t m;
    assert_int_equal(sim_client_wait_for(&e->c, &m, "ActionID", "after-flood", T), 1);
}

static void test_flood_drops_slow_client(void **state)
{
    env_t *e = *state;
    login(e, false);
    sim_client_send(&e->c, "Action: Events\r\nActionID: on\r\nEventMask: on\r\n\r\n");
    set_faults(e, (ami_sim_faults_t){.flood_events_per_sec = 2e6});
    int64_t deadline = ami_now_ms() + 3000;
    while (ami_sim_node_stats(e->node).sessions_dropped_slow == 0 && ami_now_ms() < deadline)
        sim_client_pump(e->loop, 10); /* never read */
    assert_int_equal(ami_sim_node_stats(e->node).sessions_dropped_slow, 1);
    assert_int_equal(ami_sim_node_stats(e->node).sessions_live, 0);
    assert_true(ami_sim_node_stats(e->node).bytes_unsent_at_close > 0); /* what it never wrote */
}

/* ---- event accounting: counts per name, muted events ------------------------- */

static int setup_counted(void **state)
{
    ami_sim_node_config_t cfg = {.name = "counted", .calls_per_second = 40, .call_duration_ms = 200,
                                 .seed = 11, .count_events = true};
    return env_open(state, &cfg);
}

typedef struct tally {
    char name[32][48];
    uint64_t n[32];
    size_t used;
} tally_t;

static void tally_add(tally_t *t, const char *name)
{
    for (size_t i = 0; i < t->used; i++)
        if (strcmp(t->name[i], name) == 0) {
            t->n[i]++;
            return;
        }
    assert_true(t->used < 32);
    snprintf(t->name[t->used], sizeof t->name[0], "%s", name);
    t->n[t->used++] = 1;
}

static uint64_t tally_of(const tally_t *t, const char *name)
{
    for (size_t i = 0; i < t->used; i++)
        if (strcmp(t->name[i], name) == 0)
            return t->n[i];
    return 0;
}

/* Read everything until `quiet_ms` pass without a message. */
static void read_all(env_t *e, tally_t *t, int quiet_ms)
{
    ami_msg_t m;
    while (sim_client_next(&e->c, &m, quiet_ms) == 1)
        if (m.kind == AMI_MSG_EVENT)
            tally_add(t, ami_msg_name(&m));
}

static bool no_calls(void *ud)
{
    return ami_sim_node_stats(ud).calls_active == 0;
}

static void events_are_counted_per_name_exactly_as_the_client_reads_them(void **state)
{
    env_t *e = *state;
    tally_t got = {0};
    connect_client(e);
    skip_banner(e);
    sim_client_send(&e->c, LOGIN); /* every event from here on is tallied */
    sim_client_send(&e->c, "Action: CoreShowChannels\r\nActionID: list\r\n\r\n");
    read_all(e, &got, 100);
    ami_sim_node_set_call_rate(e->node, 0); /* the calls in progress end by themselves */
    int64_t deadline = ami_now_ms() + 5000;
    while (!no_calls(e->node) && ami_now_ms() < deadline)
        read_all(e, &got, 20);
    read_all(e, &got, 100);
    ami_sim_event_count_t counts[64];
    size_t n = ami_sim_node_event_counts(e->node, counts, 64);
    if (n <= 5 || n > 64)
        fail_msg("%zu event names counted", n);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (counts[i].sent != tally_of(&got, counts[i].name))
            fail_msg("%s: the simulator counts %llu sent, the client read %llu", counts[i].name,
                     (unsigned long long)counts[i].sent, (unsigned long long)tally_of(&got, counts[i].name));
        assert_int_equal(counts[i].muted, 0);
        total += counts[i].sent;
    }
    size_t names = got.used;
    assert_int_equal(names, n); /* and the client read no name the simulator did not count */
    assert_true(tally_of(&got, "Newchannel") > 0);
    assert_int_equal(tally_of(&got, "CoreShowChannelsComplete"), 1);
    print_message("%llu events in %zu names, counted exactly\n", (unsigned long long)total, n);
}

static void muted_events_are_not_sent_but_counted(void **state)
{
    env_t *e = *state;
    ami_sim_node_set_call_rate(e->node, 0);
    login(e, true);
    tally_t ignored = {0};
    read_all(e, &ignored, 100);
    set_faults(e, (ami_sim_faults_t){.mute_events = true});
    static const char EV[] = "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Probe\r\n\r\n";
    ami_sim_node_inject(e->node, EV, sizeof EV - 1);
    ami_sim_node_inject(e->node, EV, sizeof EV - 1);
    sim_client_send(&e->c, "Action: Ping\r\nActionID: still\r\n\r\n");
    expect_response(e, "Success", "still", NULL); /* answers still go */
    expect_silence(e, 100);
    set_faults(e, (ami_sim_faults_t){0});
    ami_sim_node_inject(e->node, EV, sizeof EV - 1);
    ami_msg_t m;
    assert_int_equal(sim_client_wait_for(&e->c, &m, "Event", "UserEvent", T), 1);
    ami_sim_event_count_t counts[64];
    size_t n = ami_sim_node_event_counts(e->node, counts, 64);
    bool found = false;
    for (size_t i = 0; i < n && i < 64; i++)
        if (strcmp(counts[i].name, "UserEvent") == 0) {
            found = true;
            assert_int_equal(counts[i].sent, 1);
            assert_int_equal(counts[i].muted, 2);
        }
    assert_true(found);
}

static void nodes_without_count_events_count_nothing(void **state)
{
    env_t *e = *state;
    login(e, true);
    ami_sim_event_count_t counts[4];
    assert_int_equal(ami_sim_node_event_counts(e->node, counts, 4), 0);
}

/* ---- replay and the runner ---------------------------------------------------- */

static int setup_replay(void **state)
{
    ami_sim_node_config_t cfg = {.name = "replay", .replay_flow = AMI_FIXTURE_DIR "/ping.flow"};
    return env_open(state, &cfg);
}

static void test_replay_ping(void **state)
{
    env_t *e = *state;
    fixture_t sent = fixture_load("ping", ".sent");
    fixture_t ami = fixture_load("ping", ".ami");
    connect_client(e);
    sim_client_send(&e->c, sent.data);
    char *buf = malloc(ami.len + 64);
    size_t n = sim_client_read_raw(&e->c, buf, ami.len + 64, 5000);
    assert_true(e->c.eof);
    assert_int_equal(n, ami.len);
    assert_memory_equal(buf, ami.data, ami.len);
    free(buf);
    fixture_free(&sent);
    fixture_free(&ami);
}

static void test_replay_waits_for_client(void **state)
{
    env_t *e = *state;
    ami_sim_node_set_replay_speed(e->node, 0);
    connect_client(e);
    char buf[4096];
    size_t n = sim_client_read_raw(&e->c, buf, sizeof buf, 200);
    assert_int_equal(n, 30); /* the banner, then it waits for the Login */
    assert_false(e->c.eof);
}

static void test_bad_replay_file(void **state)
{
    (void)state;
    int64_t before = ami_alloc_account_live_bytes(AMI_ALLOC_SIMULATOR);
    ami_sim_t *sim = ami_sim_new(NULL, NULL);
    ami_err_t err;
    ami_sim_node_config_t cfg = {.replay_flow = AMI_FIXTURE_DIR "/no-such.flow"};
    assert_null(ami_sim_add_node(sim, &cfg, &err));
    assert_non_null(strstr(err.msg, "no-such.flow"));
    ami_sim_node_config_t bad_ip = {.bind_ip = "localhost"};
    assert_null(ami_sim_add_node(sim, &bad_ip, &err));
    assert_int_equal(err.code, AMI_E_CONFIG);
    ami_sim_free(sim);
    assert_int_equal(ami_alloc_account_live_bytes(AMI_ALLOC_SIMULATOR), before);
}

/* In-process tests read the engine's live bytes while a simulator runs on
 * the same thread: what the simulator allocates must not show there. */
static void simulator_allocations_are_charged_to_its_own_account(void **state)
{
    (void)state;
    int64_t engine_before = ami_alloc_live_bytes();
    int64_t sim_before = ami_alloc_account_live_bytes(AMI_ALLOC_SIMULATOR);
    ami_sim_t *sim = ami_sim_new(NULL, NULL);
    ami_sim_node_config_t cfg = {.name = "pbx1", .calls_per_second = 50};
    ami_sim_node_t *node = ami_sim_add_node(sim, &cfg, NULL);
    assert_non_null(node);
    sim_client_t c;
    assert_int_equal(sim_client_connect(&c, ami_sim_loop(sim), ami_sim_node_port(node)), 0);
    assert_int_equal(sim_client_send(&c, LOGIN), 0);
    ami_msg_t m;
    assert_int_equal(sim_client_wait_for(&c, &m, "Event", "Newchannel", T), 1);
    int64_t engine_with_client = ami_alloc_live_bytes(); /* the test client's parser */
    sim_client_pump(ami_sim_loop(sim), 50);              /* calls come and go meanwhile */
    assert_true(ami_alloc_account_live_bytes(AMI_ALLOC_SIMULATOR) > sim_before);
    assert_int_equal(ami_alloc_live_bytes(), engine_with_client);
    sim_client_close(&c);
    ami_sim_free(sim);
    assert_int_equal(ami_alloc_account_live_bytes(AMI_ALLOC_SIMULATOR), sim_before);
    assert_int_equal(ami_alloc_account_live_blocks(AMI_ALLOC_SIMULATOR), 0);
    assert_int_equal(ami_alloc_live_bytes(), engine_before);
}

static void *stop_later(void *arg)
{
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
    ami_sim_stop(arg);
    return NULL;
}

/* Both runs must end by themselves: a hang is caught by the alarm (the
 * process dies with SIGALRM), not by timing them. */
static void test_run_duration_and_stop(void **state)
{
    env_t *e = *state;
    alarm(60);
    ev_now_update(e->loop);
    double t0 = ev_now(e->loop);
    ami_sim_run(e->sim, 100);
    assert_true(ev_now(e->loop) - t0 >= 0.099); /* it ran its duration, in loop time */
    pthread_t th;
    pthread_create(&th, NULL, stop_later, e->sim);
    ami_sim_run(e->sim, 0); /* until the other thread stops it */
    pthread_join(th, NULL);
    alarm(0);
    ami_sim_node_config_t cfg = {.name = "pbx2"};
    ami_err_t err;
    ami_sim_node_t *second = ami_sim_add_node(e->sim, &cfg, &err);
    assert_non_null(second);
    assert_int_equal(ami_sim_node_count(e->sim), 2);
    assert_ptr_equal(ami_sim_node_at(e->sim, 1), second);
    assert_string_equal(ami_sim_node_name(second), "pbx2");
    assert_int_not_equal(ami_sim_node_port(second), ami_sim_node_port(e->node));
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_banner),
        TEST(test_login_plain),
        TEST(test_login_bad_secret_closes),
        cmocka_unit_test(test_md5_known_vectors),
        cmocka_unit_test(simulator_allocations_are_charged_to_its_own_account),
        TEST(test_login_md5),
        TEST(test_permission_denied_before_login),
        TEST(test_ping),
        TEST(test_logoff_closes),
        TEST(test_unknown_and_missing_action),
        TEST(test_malformed_action_closes),
        TEST(test_pipelined_and_lf_only),
        TEST(test_originate_async),
        TEST(test_originate_sync_answers_first),
        TEST(test_originate_failures),
        TEST(test_core_show_channels_list),
        TEST(test_status),
        TEST(test_hangup_with_cause),
        TEST(test_redirect),
        TEST(test_getvar_setvar),
        cmocka_unit_test_setup_teardown(test_background_traffic, setup_traffic, teardown),
        TEST(test_queue_lists),
        TEST(test_command),
        TEST(test_events_off_suppresses),
        TEST(test_filter),
        TEST(test_userevent),
        TEST(test_inject),
        TEST(test_fault_ping_silent),
        TEST(test_fault_all_silent_and_delay),
        TEST(test_fault_reject_login),
        TEST(test_fault_close_after_bytes),
        TEST(test_fault_banners),
        TEST(test_fault_close_mid_response),
        TEST(test_fault_half_close_and_garbage),
        TEST(test_fault_stall_reads),
        TEST(test_stop_restart),
        TEST(test_drop_sessions),
        TEST(test_flood),
        TEST(test_flood_drops_slow_client),
        cmocka_unit_test_setup_teardown(events_are_counted_per_name_exactly_as_the_client_reads_them,
                                        setup_counted, teardown),
        cmocka_unit_test_setup_teardown(muted_events_are_not_sent_but_counted, setup_counted, teardown),
        TEST(nodes_without_count_events_count_nothing),
        cmocka_unit_test_setup_teardown(test_replay_ping, setup_replay, teardown),
        cmocka_unit_test_setup_teardown(test_replay_waits_for_client, setup_replay, teardown),
        cmocka_unit_test(test_bad_replay_file),
        TEST(test_run_duration_and_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
