/* The correlation registry: strategies on recorded sessions, routing by
 * ActionID, timeouts, fail-all, bounds. Caps are in test_registry_caps.c,
 * answers without ActionID in test_registry_fifo.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correlation/registry.h"
#include "fixtures.h"
#include "protocol/parser.h"
#include "registry_world.h"
#include "util/alloc.h"

/* ---- recorded sessions ---------------------------------------------------------- */

static void recorded_core_show_channels_completes_as_eventlist(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    rename_t map[] = {{"orig-1", add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0)},
                      {"orig-2", add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0)},
                      {"orig-3", add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0)},
                      {"csc-3", add_action(w, "CoreShowChannels", AMI_STRATEGY_AUTO, NULL, 0)}};
    fixture_t fx = fixture_load("core-show-channels-3-calls", ".ami");
    size_t len;
    char *text = rewrite_ids(w, &fx, map, 4, &len);
    feed_text(w, text, len);

    const seen_t *csc = final_note(w, map[3].id);
    assert_int_equal(csc->signal, AMI_PENDING_DONE);
    assert_int_equal(csc->strategy, AMI_STRATEGY_LIST);
    assert_string_equal(csc->name, "CoreShowChannelsComplete");
    assert_int_equal(csc->items, 6);
    assert_false(csc->truncated);
    assert_int_equal(count_notes(w, map[3].id, AMI_PENDING_ITEM), 6);
    assert_int_equal(count_notes(w, map[3].id, AMI_PENDING_RESPONSE), 1);
    for (int i = 0; i < 3; i++) {
        const seen_t *o = final_note(w, map[i].id);
        assert_int_equal(o->signal, AMI_PENDING_DONE);
        assert_string_equal(o->name, "OriginateResponse");
    }
    assert_int_equal(ami_registry_pending(w->reg), 0);
    ami_free(text);
    fixture_free(&fx);
    world_free(w);
}

static void recorded_command_completes_with_output_lines(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    rename_t map[] = {{"cmd-2", add_action(w, "Command", AMI_STRATEGY_COMMAND, NULL, 0)},
                      {"cmd-3", add_action(w, "Command", AMI_STRATEGY_COMMAND, NULL, 0)}};
    fixture_t fx = fixture_load("command-multiline", ".ami");
    size_t len;
    char *text = rewrite_ids(w, &fx, map, 2, &len);
    feed_text(w, text, len);
    const seen_t *dialplan = final_note(w, map[0].id);
    assert_int_equal(dialplan->signal, AMI_PENDING_DONE);
    assert_int_equal(dialplan->items, 31); /* Output lines, the empty one included */
    assert_string_equal(dialplan->message, "Command output follows");
    const seen_t *uptime = final_note(w, map[1].id);
    assert_int_equal(uptime->items, 2);
    ami_free(text);
    fixture_free(&fx);
    world_free(w);
}

static void recorded_invalid_command_fails_with_server_error(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    fixture_t sent = fixture_load("command-invalid", ".sent");
    /* Map the recorded ids in the order the client sent them. */
    rename_t map[4];
    size_t n = 0;
    for (const char *p = sent.data; (p = strstr(p, "ActionID: ")) && n < 4; p += 10) {
        static char names[4][32];
        sscanf(p + 10, "%31[^\r]", names[n]);
        if (strncmp(names[n], "login", 5) == 0 || strncmp(names[n], "logoff", 6) == 0)
            continue;
        map[n].recorded = names[n];
        map[n].id = add_action(w, "Command", AMI_STRATEGY_COMMAND, NULL, 0);
        n++;
    }
    assert_int_equal(n, 2);
    fixture_t fx = fixture_load("command-invalid", ".ami");
    size_t len;
    char *text = rewrite_ids(w, &fx, map, n, &len);
    feed_text(w, text, len);
    const seen_t *bad = final_note(w, map[0].id);
    assert_int_equal(bad->signal, AMI_PENDING_FAILED);
    assert_int_equal(bad->status, AMI_E_SERVER);
    /* Asterisk's own words (its Output), not the generic "Command output follows". */
    assert_string_equal(bad->reason, "No such command 'no such command here' (type 'core show help no "
                                     "such' for other possible commands)");
    const seen_t *none = final_note(w, map[1].id);
    assert_int_equal(none->signal, AMI_PENDING_FAILED);
    assert_string_equal(none->reason, "No command provided");
    ami_free(text);
    fixture_free(&sent);
    fixture_free(&fx);
    world_free(w);
}

static void recorded_originate_completes_on_originate_response(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    rename_t map[] = {{"orig-async-1", add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0)}};
    fixture_t fx = fixture_load("originate-async", ".ami");
    size_t len;
    char *text = rewrite_ids(w, &fx, map, 1, &len);
    feed_text(w, text, len);
    assert_int_equal(count_notes(w, map[0].id, AMI_PENDING_RESPONSE), 1);
    const seen_t *done = final_note(w, map[0].id);
    assert_int_equal(done->signal, AMI_PENDING_DONE);
    assert_string_equal(done->name, "OriginateResponse");
    ami_free(text);
    fixture_free(&fx);
    world_free(w);
}

static void a_completion_event_is_taken_as_completion_and_items_as_items(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t id = add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0);
    uint64_t list = add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0);
    char a[40], b[40], text[1200];
    id_text(w, id, a);
    id_text(w, list, b);
    snprintf(text, sizeof text,
             "Response: Success\r\nActionID: %s\r\nMessage: Originate successfully queued\r\n\r\n"
             "Event: VarSet\r\nActionID: %s\r\nVariable: X\r\n\r\n"
             "Event: OriginateResponse\r\nActionID: %s\r\nResponse: Success\r\n\r\n"
             "Response: Success\r\nActionID: %s\r\nEventList: start\r\n\r\n"
             "Event: Status\r\nActionID: %s\r\n\r\n"
             "Event: StatusComplete\r\nActionID: %s\r\nEventList: Complete\r\n\r\n",
             a, a, a, b, b, b);
    ami_parser_t p;
    ami_parser_init(&p, NULL);
    ami_parser_expect_banner(&p, false);
    ami_err_t err;
    ami_parser_feed(&p, text, strlen(text), &err);
    ami_msg_t m;
    ami_registry_took_t took[6];
    int n = 0;
    while (n < 6 && ami_parser_next(&p, &m, &err) == 1)
        took[n++] = ami_registry_on_message(w->reg, &m);
    assert_int_equal(n, 6);
    assert_int_equal(took[0], AMI_TOOK_RESPONSE);
    assert_int_equal(took[1], AMI_TOOK_ITEM);
    assert_int_equal(took[2], AMI_TOOK_COMPLETION);
    assert_int_equal(took[3], AMI_TOOK_RESPONSE);
    assert_int_equal(took[4], AMI_TOOK_ITEM);
    assert_int_equal(took[5], AMI_TOOK_ITEM);
    ami_parser_deinit(&p);
    world_free(w);
}

static void names_the_registry_cannot_keep_whole_are_refused(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    char longname[80];
    memset(longname, 'A', 64);
    longname[64] = '\0';
    ami_pending_spec_t spec = {.id = 999, .action = "Originate", .strategy = AMI_STRATEGY_EVENT,
                               .completion_event = longname, .cb = record, .ud = w};
    ami_err_t err;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_non_null(strstr(err.msg, "could never complete"));
    longname[63] = '\0'; /* 63 bytes: kept whole, accepted */
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), 0);
    spec.id = 1000;
    spec.completion_event = "OriginateResponse";
    memset(longname, 'B', 70);
    longname[70] = '\0';
    spec.action = longname;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    world_free(w);
}

static void recorded_originate_failure_fails_with_reason(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    rename_t map[] = {
        {"orig-fail-1", add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0)},
        {"orig-fail-2", add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0)},
        {"orig-fail-3", add_action(w, "Originate", AMI_STRATEGY_SINGLE, NULL, 0)},
        {"orig-fail-4", add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0)},
    };
    fixture_t fx = fixture_load("originate-failure", ".ami");
    size_t len;
    char *text = rewrite_ids(w, &fx, map, 4, &len);
    feed_text(w, text, len);
    const seen_t *missing = final_note(w, map[0].id);
    assert_int_equal(missing->signal, AMI_PENDING_FAILED);
    assert_int_equal(missing->status, AMI_E_SERVER);
    assert_string_equal(missing->name, "OriginateResponse");
    assert_non_null(strstr(missing->reason, "Failure"));
    assert_non_null(strstr(missing->reason, "Reason 0"));
    assert_string_equal(final_note(w, map[2].id)->reason, "Originate failed");
    assert_string_equal(final_note(w, map[3].id)->reason, "Channel not specified");
    ami_free(text);
    fixture_free(&fx);
    world_free(w);
}

static void recorded_status_lists_and_errors(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    rename_t map[] = {{"status-all", add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0)},
                      {"status-one", add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0)},
                      {"status-exact", add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0)}};
    fixture_t fx = fixture_load("status", ".ami");
    size_t len;
    char *text = rewrite_ids(w, &fx, map, 3, &len);
    feed_text(w, text, len);
    const seen_t *all = final_note(w, map[0].id);
    assert_int_equal(all->signal, AMI_PENDING_DONE);
    assert_string_equal(all->name, "StatusComplete");
    assert_int_equal(all->items, 4);
    const seen_t *partial = final_note(w, map[1].id);
    assert_int_equal(partial->signal, AMI_PENDING_FAILED);
    assert_string_equal(partial->reason, "No such channel");
    const seen_t *exact = final_note(w, map[2].id);
    assert_int_equal(exact->signal, AMI_PENDING_DONE);
    assert_int_equal(exact->items, 1);
    ami_free(text);
    fixture_free(&fx);
    world_free(w);
}

/* ---- routing -------------------------------------------------------------------- */

static void responses_are_routed_by_action_id_not_position(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t b = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    char ida[AMI_ACTIONID_MAX], idb[AMI_ACTIONID_MAX], text[512];
    snprintf(text, sizeof text,
             "Response: Success\r\nActionID: %s\r\nPing: Pong\r\n\r\n"
             "Response: Success\r\nActionID: %s\r\nPing: Pong\r\n\r\n",
             id_text(w, b, idb), id_text(w, a, ida));
    assert_int_equal(feed(w, text), 2);
    assert_int_equal(w->nnotes, 2);
    assert_int_equal(w->notes[0].id, b);
    assert_int_equal(w->notes[1].id, a);
    world_free(w);
}

static void response_without_action_id_goes_to_oldest_waiting(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t b = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    assert_int_equal(feed(w, "Response: Pong\r\n\r\n"), 1); /* an old server's Ping answer */
    assert_int_equal(w->nnotes, 1);
    assert_int_equal(w->notes[0].id, a);
    assert_int_equal(w->notes[0].signal, AMI_PENDING_DONE);
    assert_true(ami_registry_has(w->reg, b));
    world_free(w);
}

static void foreign_action_ids_and_plain_events_are_not_taken(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    assert_int_equal(feed(w, "Response: Success\r\nActionID: someone-else\r\n\r\n"
                             "Event: Hangup\r\nChannel: X\r\n\r\n"
                             "Event: UserEvent\r\nActionID: someone-else\r\n\r\n"),
                     0);
    assert_int_equal(w->nnotes, 0);
    world_free(w);
}

static void interleaved_lists_are_kept_apart(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "QueueStatus", AMI_STRATEGY_AUTO, NULL, 0);
    uint64_t b = add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0);
    char ia[AMI_ACTIONID_MAX], ib[AMI_ACTIONID_MAX], text[1024];
    id_text(w, a, ia);
    id_text(w, b, ib);
    snprintf(text, sizeof text,
             "Response: Success\r\nActionID: %s\r\nEventList: start\r\n\r\n"
             "Response: Success\r\nActionID: %s\r\nEventList: Start\r\n\r\n"
             "Event: Status\r\nChannel: c1\r\nActionID: %s\r\n\r\n"
             "Event: QueueParams\r\nActionID: %s\r\n\r\n"
             "Event: Newchannel\r\nChannel: c2\r\n\r\n"
             "Event: StatusComplete\r\nActionID: %s\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
             "Event: QueueMember\r\nActionID: %s\r\n\r\n"
             "Event: QueueStatusComplete\r\nActionID: %s\r\nEventList: Complete\r\n\r\n",
             ia, ib, ib, ia, ib, ia, ia);
    assert_int_equal(feed(w, text), 7);
    assert_int_equal(final_note(w, a)->items, 2);
    assert_int_equal(final_note(w, b)->items, 1);
    world_free(w);
}

static void error_response_ends_a_list_action_at_once(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Status", AMI_STRATEGY_LIST, NULL, 0);
    char ia[AMI_ACTIONID_MAX], text[256];
    snprintf(text, sizeof text, "Response: Error\r\nActionID: %s\r\nMessage: No such channel\r\n\r\n",
             id_text(w, a, ia));
    feed(w, text);
    const seen_t *n = final_note(w, a);
    assert_int_equal(n->signal, AMI_PENDING_FAILED);
    assert_int_equal(n->status, AMI_E_SERVER);
    assert_string_equal(n->reason, "No such channel");
    assert_int_equal(ami_registry_pending(w->reg), 0);
    world_free(w);
}

static void old_server_list_without_eventlist_header_still_completes(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0);
    char ia[AMI_ACTIONID_MAX], text[512];
    id_text(w, a, ia);
    snprintf(text, sizeof text,
             "Response: Success\r\nActionID: %s\r\nMessage: Channel status will follow\r\n\r\n"
             "Event: Status\r\nActionID: %s\r\n\r\n"
             "Event: StatusComplete\r\nActionID: %s\r\nItems: 1\r\n\r\n",
             ia, ia, ia);
    feed(w, text);
    assert_int_equal(final_note(w, a)->signal, AMI_PENDING_DONE);
    assert_int_equal(final_note(w, a)->items, 1);
    world_free(w);
}

/* Whether a response opens a list: its first EventList header decides,
 * wherever it stands; without one, its first Message ("... will follow"). */
static void the_first_eventlist_or_message_decides_a_list(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    const char *bodies[] = {
        "Message: Channel status will follow\r\nEventList: Complete\r\n", /* not a list */
        "Message: Ok\r\nMessage: Channel status will follow\r\n",        /* not a list */
        "Message: Channel status will follow\r\nMessage: Ok\r\n",        /* a list */
        "Message: Ok\r\nEventList: start\r\nEventList: Complete\r\n",  /* a list */
    };
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0);
        char ia[AMI_ACTIONID_MAX], text[512];
        snprintf(text, sizeof text, "Response: Success\r\nActionID: %s\r\n%s\r\n", id_text(w, ids[i], ia),
                 bodies[i]);
        assert_int_equal(feed(w, text), 1);
    }
    assert_int_equal(final_note(w, ids[0])->signal, AMI_PENDING_DONE);
    assert_int_equal(final_note(w, ids[1])->signal, AMI_PENDING_DONE);
    assert_false(ami_registry_has(w->reg, ids[0]) || ami_registry_has(w->reg, ids[1]));
    assert_true(ami_registry_has(w->reg, ids[2]) && ami_registry_has(w->reg, ids[3]));
    assert_int_equal(count_notes(w, ids[2], AMI_PENDING_RESPONSE), 1);
    assert_int_equal(count_notes(w, ids[3], AMI_PENDING_RESPONSE), 1);
    world_free(w);
}

/* ---- timeouts, fail-all, cancel, bounds --------------------------------------------------- */

static void timeouts_fire_in_deadline_order(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t late = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 300);
    uint64_t early = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 100);
    uint64_t never = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    assert_int_equal(ami_registry_next_deadline(w->reg), 100);
    assert_int_equal(ami_registry_expire(w->reg, 200), 1);
    assert_int_equal(w->notes[0].id, early);
    assert_int_equal(w->notes[0].status, AMI_E_TIMEOUT);
    assert_non_null(strstr(w->notes[0].reason, "no response"));
    assert_int_equal(ami_registry_next_deadline(w->reg), 300);
    assert_int_equal(ami_registry_expire(w->reg, 1000), 1);
    assert_int_equal(w->notes[1].id, late);
    assert_int_equal(ami_registry_next_deadline(w->reg), 0);
    assert_true(ami_registry_has(w->reg, never));
    world_free(w);
}

static void late_answer_after_timeout_is_ignored(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 10);
    ami_registry_expire(w->reg, 10);
    char ia[AMI_ACTIONID_MAX], text[128];
    snprintf(text, sizeof text, "Response: Success\r\nActionID: %s\r\n\r\n", id_text(w, a, ia));
    assert_int_equal(feed(w, text), 1);
    assert_int_equal(w->nnotes, 1); /* still exactly one resolution */
    assert_int_equal(ami_registry_stats(w->reg)->unmatched, 1);
    world_free(w);
}

static void reenter_add(void *ud, const ami_pending_note_t *n)
{
    world_t *w = ud;
    record(w, n);
    /* A waiter that retries at once: must not be failed by the same fail_all. */
    ami_pending_spec_t spec = {.id = ami_actionid_next(&w->ids), .action = "Ping",
                               .strategy = AMI_STRATEGY_SINGLE, .cb = record, .ud = w};
    assert_int_equal(ami_registry_add(w->reg, &spec, NULL), 0);
}

static void fail_all_fails_each_action_exactly_once(void **state)
{
    (void)state;
    world_t *w = world_new(8, 0);
    uint64_t ids[5];
    for (int i = 0; i < 5; i++) {
        ids[i] = ami_actionid_next(&w->ids);
        ami_pending_spec_t spec = {.id = ids[i], .action = "Ping", .strategy = AMI_STRATEGY_SINGLE,
                                   .deadline_ms = 100 + i, .cb = reenter_add, .ud = w};
        assert_int_equal(ami_registry_add(w->reg, &spec, NULL), 0);
    }
    assert_int_equal(ami_registry_fail_all(w->reg, AMI_E_HEARTBEAT, "Max heartbeat failures"), 5);
    assert_int_equal(w->nnotes, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(count_notes(w, ids[i], AMI_PENDING_FAILED), 1);
        assert_string_equal(final_note(w, ids[i])->reason, "Max heartbeat failures");
        assert_int_equal(final_note(w, ids[i])->status, AMI_E_HEARTBEAT);
    }
    assert_int_equal(ami_registry_pending(w->reg), 5); /* the five retries */
    assert_int_equal(ami_registry_next_deadline(w->reg), 0);
    world_free(w);
}

static void cancelled_action_never_calls_back(void **state)
{
    (void)state;
    world_t *w = world_new(8, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 50);
    assert_true(ami_registry_cancel(w->reg, a));
    assert_false(ami_registry_cancel(w->reg, a));
    assert_int_equal(ami_registry_expire(w->reg, 100), 0);
    assert_int_equal(ami_registry_fail_all(w->reg, AMI_E_DISCONNECTED, "x"), 0);
    assert_int_equal(w->nnotes, 0);
    world_free(w);
}

static void max_pending_is_a_hard_bound(void **state)
{
    (void)state;
    world_t *w = world_new(3, 0);
    for (int i = 0; i < 3; i++)
        add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    ami_pending_spec_t spec = {.id = ami_actionid_next(&w->ids), .action = "Ping",
                               .strategy = AMI_STRATEGY_SINGLE, .cb = record, .ud = w};
    ami_err_t err;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_non_null(strstr(err.msg, "max_pending"));
    assert_int_equal(ami_registry_stats(w->reg)->refused, 1);
    world_free(w);
}

static void slots_are_reused_without_growth(void **state)
{
    (void)state;
    world_t *w = world_new(4, 0);
    int64_t before = ami_alloc_live_bytes();
    for (int round = 0; round < 10000; round++) {
        uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, round + 1);
        if (round % 2)
            ami_registry_expire(w->reg, round + 1);
        else
            assert_true(ami_registry_cancel(w->reg, a));
        w->nnotes = 0;
    }
    assert_int_equal(ami_alloc_live_bytes(), before);
    assert_int_equal(ami_registry_pending(w->reg), 0);
    world_free(w);
}

static void bad_configs_and_specs_are_refused(void **state)
{
    (void)state;
    ami_err_t err;
    ami_registry_config_t rc;
    ami_registry_config_default(&rc);
    assert_null(ami_registry_new(&rc, &err)); /* no ActionID generator */
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_null(ami_registry_new(NULL, &err));
    ami_actionid_gen_t ids;
    ami_actionid_init(&ids, 1);
    rc.ids = &ids;
    rc.max_pending = (1u << 24) + 1;
    assert_null(ami_registry_new(&rc, &err));
    assert_non_null(strstr(err.msg, "max_pending"));
    ami_registry_free(NULL);

    world_t *w = world_new(4, 0);
    ami_pending_spec_t spec = {.id = 0, .action = "Ping", .strategy = AMI_STRATEGY_SINGLE, .cb = record, .ud = w};
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1); /* id 0 */
    spec.id = 9;
    spec.cb = NULL;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    spec.cb = record;
    spec.strategy = AMI_STRATEGY_COUNT;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    spec.strategy = AMI_STRATEGY_EVENT;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    assert_non_null(strstr(err.msg, "completing event"));
    spec.strategy = AMI_STRATEGY_SINGLE;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), 0);
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    assert_non_null(strstr(err.msg, "already pending"));
    assert_int_equal(ami_registry_pending(w->reg), 1);
    world_free(w);
}

/* Past max_pending an ordinary action is refused, a reserved one (the
 * heartbeat's Ping) still fits, once. */
static void the_reserved_slot_takes_one_reserved_action_past_max_pending(void **state)
{
    (void)state;
    world_t *w = world_new(2, 0);
    add_action(w, "CoreStatus", AMI_STRATEGY_SINGLE, NULL, 0);
    add_action(w, "CoreStatus", AMI_STRATEGY_SINGLE, NULL, 0);
    ami_err_t err;
    ami_pending_spec_t spec = {.id = ami_actionid_next(&w->ids), .action = "Ping",
                               .strategy = AMI_STRATEGY_SINGLE, .cb = record, .ud = w};
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    spec.reserved = true;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), 0);
    spec.id = ami_actionid_next(&w->ids);
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1); /* one reserved slot */
    assert_int_equal(ami_registry_pending(w->reg), 3);
    /* the reserved slot comes back when its action ends, and stays reserved */
    assert_true(ami_registry_cancel(w->reg, spec.id - 1));
    spec.reserved = false;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    spec.reserved = true;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), 0);
    assert_int_equal(ami_registry_stats(w->reg)->refused, 3);
    world_free(w);
}

/* An AUTO action whose first list item comes before its response (the
 * response lost or sent late by a proxy) is a list from then on. */
static void a_list_item_before_the_response_makes_it_a_list(void **state)
{
    (void)state;
    world_t *w = world_new(4, 0);
    uint64_t a = add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 100);
    char ia[AMI_ACTIONID_MAX], text[256];
    snprintf(text, sizeof text, "Event: Status\r\nActionID: %s\r\nChannel: c1\r\n\r\n", id_text(w, a, ia));
    assert_int_equal(feed(w, text), 1);
    assert_int_equal(count_notes(w, a, AMI_PENDING_ITEM), 1);
    assert_int_equal(ami_registry_expire(w->reg, 100), 1);
    const seen_t *n = final_note(w, a);
    assert_int_equal(n->strategy, AMI_STRATEGY_LIST);
    assert_non_null(strstr(n->reason, "the list started but did not complete (1 items so far)"));
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(recorded_core_show_channels_completes_as_eventlist),
        cmocka_unit_test(recorded_command_completes_with_output_lines),
        cmocka_unit_test(recorded_invalid_command_fails_with_server_error),
        cmocka_unit_test(recorded_originate_completes_on_originate_response),
        cmocka_unit_test(recorded_originate_failure_fails_with_reason),
        cmocka_unit_test(a_completion_event_is_taken_as_completion_and_items_as_items),
        cmocka_unit_test(names_the_registry_cannot_keep_whole_are_refused),
        cmocka_unit_test(recorded_status_lists_and_errors),
        cmocka_unit_test(responses_are_routed_by_action_id_not_position),
        cmocka_unit_test(response_without_action_id_goes_to_oldest_waiting),
        cmocka_unit_test(foreign_action_ids_and_plain_events_are_not_taken),
        cmocka_unit_test(interleaved_lists_are_kept_apart),
        cmocka_unit_test(error_response_ends_a_list_action_at_once),
        cmocka_unit_test(old_server_list_without_eventlist_header_still_completes),
        cmocka_unit_test(the_first_eventlist_or_message_decides_a_list),
        cmocka_unit_test(timeouts_fire_in_deadline_order),
        cmocka_unit_test(late_answer_after_timeout_is_ignored),
        cmocka_unit_test(fail_all_fails_each_action_exactly_once),
        cmocka_unit_test(cancelled_action_never_calls_back),
        cmocka_unit_test(max_pending_is_a_hard_bound),
        cmocka_unit_test(slots_are_reused_without_growth),
        cmocka_unit_test(bad_configs_and_specs_are_refused),
        cmocka_unit_test(the_reserved_slot_takes_one_reserved_action_past_max_pending),
        cmocka_unit_test(a_list_item_before_the_response_makes_it_a_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
