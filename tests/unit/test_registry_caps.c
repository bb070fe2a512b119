/* The correlation registry's caps (the seed's 4.1): per strategy, items past
 * max_messages are dropped and counted; the first drop logs ONE WARNING line
 * carrying action_id, server_key, strategy and count; the action still
 * completes (truncated) or times out saying events were dropped. Every
 * strategy that can carry items is covered: eventlist (LIST and AUTO),
 * completion_event (EVENT) and command (COMMAND). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correlation/registry.h"
#include "registry_world.h"

/* A logfmt field "key=value" stands alone in the line: after a space, and
 * followed by a space or the end of the line. */
static void assert_field(const char *line, const char *key, const char *value)
{
    char want[160];
    snprintf(want, sizeof want, " %s=%s", key, value);
    const char *at = strstr(line, want);
    if (!at || (at[strlen(want)] != ' ' && at[strlen(want)] != '\0'))
        fail_msg("log line lacks %s=%s: %s", key, value, line);
}

static void assert_field_uint(const char *line, const char *key, unsigned long long value)
{
    char v[32];
    snprintf(v, sizeof v, "%llu", value);
    assert_field(line, key, v);
}

/* The one WARNING of a cap hit: its level and every field the seed asks for. */
static void assert_cap_warning(world_t *w, const char *msg, uint64_t id, const char *strategy,
                               unsigned long long count)
{
    char line[1024], ia[AMI_ACTIONID_MAX];
    the_log_line(w, msg, line, sizeof line);
    assert_field(line, "level", "warn");
    assert_field(line, "action_id", id_text(w, id, ia));
    assert_field(line, "server_key", "pbx1");
    assert_field(line, "strategy", strategy);
    assert_field_uint(line, "count", count);
}

#define DROP_MSG "\"correlation cap reached: dropping further events for this action\""

static void list_events_past_the_cap_are_dropped_logged_once_and_counted(void **state)
{
    (void)state;
    world_t *w = world_new(16, 3);
    uint64_t a = add_action(w, "CoreShowChannels", AMI_STRATEGY_AUTO, NULL, 0);
    send_list(w, a, 5, true);
    assert_int_equal(count_notes(w, a, AMI_PENDING_ITEM), 3);
    const seen_t *done = final_note(w, a);
    assert_int_equal(done->signal, AMI_PENDING_DONE);
    assert_true(done->truncated);
    assert_int_equal(done->items, 3);
    assert_int_equal(done->dropped, 2);
    assert_true(dropped_metric(w) == 2.0);
    assert_int_equal(ami_registry_stats(w->reg)->dropped_events, 2);
    /* One WARNING when dropping starts (not one per dropped event), with
     * every field, then one when the truncated list completes. */
    assert_cap_warning(w, DROP_MSG, a, "eventlist", 3);
    char line[1024];
    the_log_line(w, "action completed truncated", line, sizeof line);
    assert_field(line, "level", "warn");
    assert_field_uint(line, "dropped", 2);
    world_free(w);
}

static void explicit_list_strategy_has_its_own_cap(void **state)
{
    (void)state;
    uint32_t caps[AMI_STRATEGY_COUNT] = {[AMI_STRATEGY_LIST] = 2, [AMI_STRATEGY_AUTO] = 50};
    world_t *w = registry_world_new(16, caps);
    uint64_t a = add_action(w, "Status", AMI_STRATEGY_LIST, NULL, 0);
    send_list(w, a, 4, true);
    assert_int_equal(final_note(w, a)->items, 2);
    assert_int_equal(final_note(w, a)->dropped, 2);
    assert_cap_warning(w, DROP_MSG, a, "eventlist", 2);
    world_free(w);
}

static void capped_list_that_never_completes_times_out_saying_events_were_dropped(void **state)
{
    (void)state;
    world_t *w = world_new(16, 2);
    uint64_t a = add_action(w, "CoreShowChannels", AMI_STRATEGY_AUTO, NULL, 5000);
    send_list(w, a, 4, false);
    assert_int_equal(ami_registry_expire(w->reg, 4999), 0);
    assert_int_equal(ami_registry_expire(w->reg, 5000), 1);
    const seen_t *n = final_note(w, a);
    assert_int_equal(n->signal, AMI_PENDING_FAILED);
    assert_int_equal(n->status, AMI_E_TIMEOUT);
    assert_int_equal(n->dropped, 2);
    assert_non_null(strstr(n->reason, "dropped"));
    assert_non_null(strstr(n->reason, "never completed"));
    world_free(w);
}

/* Originate-like: intermediate events carrying the ActionID before the
 * completion event are items of the EVENT strategy, capped like a list's. */
static void completion_event_strategy_caps_intermediate_events(void **state)
{
    (void)state;
    uint32_t caps[AMI_STRATEGY_COUNT] = {[AMI_STRATEGY_EVENT] = 2};
    world_t *w = registry_world_new(16, caps);
    uint64_t a = add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0);
    char ia[AMI_ACTIONID_MAX], text[1024];
    id_text(w, a, ia);
    snprintf(text, sizeof text,
             "Response: Success\r\nActionID: %s\r\nMessage: Originate successfully queued\r\n\r\n"
             "Event: DialBegin\r\nActionID: %s\r\n\r\n"
             "Event: DialState\r\nActionID: %s\r\n\r\n"
             "Event: DialEnd\r\nActionID: %s\r\n\r\n"
             "Event: Newstate\r\nActionID: %s\r\n\r\n"
             "Event: OriginateResponse\r\nActionID: %s\r\nResponse: Success\r\n\r\n",
             ia, ia, ia, ia, ia, ia);
    assert_int_equal(feed(w, text), 6);
    assert_int_equal(count_notes(w, a, AMI_PENDING_ITEM), 2);
    const seen_t *done = final_note(w, a);
    assert_int_equal(done->signal, AMI_PENDING_DONE);
    assert_string_equal(done->name, "OriginateResponse");
    assert_int_equal(done->dropped, 2);
    assert_true(done->truncated);
    assert_true(dropped_metric(w) == 2.0);
    assert_cap_warning(w, DROP_MSG, a, "completion_event", 2);
    world_free(w);
}

static void completion_event_that_never_comes_times_out_naming_it(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 100);
    char ia[AMI_ACTIONID_MAX], text[256];
    snprintf(text, sizeof text, "Response: Success\r\nActionID: %s\r\n\r\n", id_text(w, a, ia));
    feed(w, text);
    assert_int_equal(count_notes(w, a, AMI_PENDING_RESPONSE), 1);
    assert_int_equal(ami_registry_expire(w->reg, 100), 1);
    assert_int_equal(final_note(w, a)->status, AMI_E_TIMEOUT);
    assert_non_null(strstr(final_note(w, a)->reason, "waiting for OriginateResponse"));
    world_free(w);
}

static void command_output_over_the_cap_is_truncated_logged_and_counted(void **state)
{
    (void)state;
    uint32_t caps[AMI_STRATEGY_COUNT] = {[AMI_STRATEGY_COMMAND] = 2};
    world_t *w = registry_world_new(16, caps);
    uint64_t a = add_action(w, "Command", AMI_STRATEGY_COMMAND, NULL, 0);
    char ia[AMI_ACTIONID_MAX], text[256];
    snprintf(text, sizeof text, "Response: Success\r\nActionID: %s\r\nMessage: Command output follows\r\n"
             "Output: 1\r\nOutput: 2\r\nOutput: 3\r\n\r\n", id_text(w, a, ia));
    feed(w, text);
    const seen_t *n = final_note(w, a);
    assert_int_equal(n->signal, AMI_PENDING_DONE);
    assert_int_equal(n->items, 2);
    assert_int_equal(n->dropped, 1);
    assert_true(n->truncated);
    assert_true(dropped_metric(w) == 1.0);
    assert_int_equal(ami_registry_stats(w->reg)->dropped_events, 1);
    assert_cap_warning(w, "\"correlation cap reached: command output truncated\"", a, "command", 2);
    world_free(w);
}

static void command_output_within_the_cap_logs_nothing(void **state)
{
    (void)state;
    uint32_t caps[AMI_STRATEGY_COUNT] = {[AMI_STRATEGY_COMMAND] = 3};
    world_t *w = registry_world_new(16, caps);
    uint64_t a = add_action(w, "Command", AMI_STRATEGY_COMMAND, NULL, 0);
    char ia[AMI_ACTIONID_MAX], text[256];
    snprintf(text, sizeof text, "Response: Success\r\nActionID: %s\r\n"
             "Output: 1\r\nOutput: 2\r\nOutput: 3\r\n\r\n", id_text(w, a, ia));
    feed(w, text);
    assert_int_equal(final_note(w, a)->items, 3);
    assert_false(final_note(w, a)->truncated);
    assert_int_equal(count_log_lines(w, "cap reached"), 0);
    assert_true(dropped_metric(w) == 0.0);
    world_free(w);
}

static void failed_command_with_output_over_the_cap_fails_with_the_server_message(void **state)
{
    (void)state;
    uint32_t caps[AMI_STRATEGY_COUNT] = {[AMI_STRATEGY_COMMAND] = 1};
    world_t *w = registry_world_new(16, caps);
    uint64_t a = add_action(w, "Command", AMI_STRATEGY_COMMAND, NULL, 0);
    char ia[AMI_ACTIONID_MAX], text[256];
    snprintf(text, sizeof text, "Response: Error\r\nActionID: %s\r\nMessage: Command output follows\r\n"
             "Output: No such command 'x'\r\nOutput: more\r\n\r\n", id_text(w, a, ia));
    feed(w, text);
    assert_int_equal(final_note(w, a)->signal, AMI_PENDING_FAILED);
    assert_int_equal(final_note(w, a)->status, AMI_E_SERVER);
    assert_int_equal(final_note(w, a)->dropped, 1);
    world_free(w);
}

static void default_caps_are_documented_values(void **state)
{
    (void)state;
    ami_registry_config_t rc;
    ami_registry_config_default(&rc);
    assert_int_equal(rc.max_pending, 1024);
    /* a SINGLE action owns no events: items never reach it */
    world_t *w = world_new(4, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    char ia[AMI_ACTIONID_MAX], text[256];
    snprintf(text, sizeof text, "Event: UserEvent\r\nActionID: %s\r\n\r\n", id_text(w, a, ia));
    assert_int_equal(feed(w, text), 0);
    assert_int_equal(w->nnotes, 0);
    assert_string_equal(ami_strategy_name(AMI_STRATEGY_COUNT), "unknown");
    assert_string_equal(ami_strategy_name(AMI_STRATEGY_AUTO), "auto");
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(list_events_past_the_cap_are_dropped_logged_once_and_counted),
        cmocka_unit_test(explicit_list_strategy_has_its_own_cap),
        cmocka_unit_test(capped_list_that_never_completes_times_out_saying_events_were_dropped),
        cmocka_unit_test(completion_event_strategy_caps_intermediate_events),
        cmocka_unit_test(completion_event_that_never_comes_times_out_naming_it),
        cmocka_unit_test(command_output_over_the_cap_is_truncated_logged_and_counted),
        cmocka_unit_test(command_output_within_the_cap_logs_nothing),
        cmocka_unit_test(failed_command_with_output_over_the_cap_fails_with_the_server_message),
        cmocka_unit_test(default_caps_are_documented_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
