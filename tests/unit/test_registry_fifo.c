/* Answers without an ActionID (old servers, some proxies): the registry
 * hands each to the oldest action still waiting for its first response,
 * because Asterisk answers a session's actions in order. Every in-order
 * answer must reach its own action, whatever else happens to the queue
 * (actions answered by ActionID, cancelled, timed out, lists, completion
 * events arriving first). */
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

/* An answer without ActionID whose Message names the action it answers. */
static size_t answer(world_t *w, const char *tag)
{
    char text[160];
    snprintf(text, sizeof text, "Response: Success\r\nMessage: %s\r\n\r\n", tag);
    return feed(w, text);
}

static void assert_answered(world_t *w, uint64_t id, const char *tag)
{
    const seen_t *n = final_note(w, id);
    assert_int_equal(n->signal, AMI_PENDING_DONE);
    assert_string_equal(n->message, tag);
    assert_int_equal(count_notes(w, id, AMI_PENDING_DONE), 1);
}

static void three_in_order_answers_reach_their_own_actions(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t b = add_action(w, "CoreStatus", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t c = add_action(w, "Getvar", AMI_STRATEGY_AUTO, NULL, 0);
    assert_int_equal(answer(w, "a"), 1);
    assert_int_equal(answer(w, "b"), 1);
    assert_int_equal(answer(w, "c"), 1);
    assert_answered(w, a, "a");
    assert_answered(w, b, "b");
    assert_answered(w, c, "c");
    assert_int_equal(ami_registry_pending(w->reg), 0);
    assert_int_equal(ami_registry_stats(w->reg)->unmatched, 0);
    /* the queue is empty again: one more answer belongs to nobody */
    assert_int_equal(answer(w, "stray"), 0);
    assert_int_equal(ami_registry_stats(w->reg)->unmatched, 1);
    world_free(w);
}

static void answers_by_action_id_leave_the_queue_in_order(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t b = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t c = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t d = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    char ib[AMI_ACTIONID_MAX], text[160];
    /* the middle one is answered with its ActionID */
    snprintf(text, sizeof text, "Response: Success\r\nActionID: %s\r\nMessage: b\r\n\r\n", id_text(w, b, ib));
    assert_int_equal(feed(w, text), 1);
    answer(w, "a");
    answer(w, "c");
    answer(w, "d");
    assert_answered(w, a, "a");
    assert_answered(w, b, "b");
    assert_answered(w, c, "c");
    assert_answered(w, d, "d");
    world_free(w);
}

static void cancelled_and_timed_out_actions_leave_the_queue(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t a = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t gone = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t late = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 50);
    uint64_t d = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t e = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    assert_true(ami_registry_cancel(w->reg, gone));
    assert_int_equal(ami_registry_expire(w->reg, 50), 1);
    assert_int_equal(final_note(w, late)->status, AMI_E_TIMEOUT);
    answer(w, "a");
    answer(w, "d");
    answer(w, "e");
    assert_answered(w, a, "a");
    assert_answered(w, d, "d");
    assert_answered(w, e, "e");
    /* the head and the tail leave too */
    uint64_t f = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t g = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t h = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    assert_true(ami_registry_cancel(w->reg, f));
    assert_true(ami_registry_cancel(w->reg, h));
    answer(w, "g");
    assert_answered(w, g, "g");
    assert_int_equal(ami_registry_pending(w->reg), 0);
    world_free(w);
}

/* A list leaves the queue with its first response; its items and Complete
 * event (which carry the ActionID) do not disturb the queue. */
static void lists_and_completion_events_leave_the_queue_once(void **state)
{
    (void)state;
    world_t *w = world_new(16, 0);
    uint64_t list = add_action(w, "Status", AMI_STRATEGY_AUTO, NULL, 0);
    uint64_t orig = add_action(w, "Originate", AMI_STRATEGY_EVENT, "OriginateResponse", 0);
    uint64_t b = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    uint64_t c = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    char io[AMI_ACTIONID_MAX], il[AMI_ACTIONID_MAX], text[512];
    /* The Originate's completion event comes before any response: it
     * finishes the action and takes it out of the queue. */
    snprintf(text, sizeof text, "Event: OriginateResponse\r\nActionID: %s\r\nResponse: Success\r\n\r\n",
             id_text(w, orig, io));
    assert_int_equal(feed(w, text), 1);
    assert_int_equal(final_note(w, orig)->signal, AMI_PENDING_DONE);
    /* The list's answer, without ActionID, opens it; its items carry it. */
    assert_int_equal(feed(w, "Response: Success\r\nEventList: start\r\nMessage: list\r\n\r\n"), 1);
    answer(w, "b");
    snprintf(text, sizeof text,
             "Event: Status\r\nActionID: %s\r\n\r\nEvent: StatusComplete\r\nActionID: %s\r\n"
             "EventList: Complete\r\n\r\n", id_text(w, list, il), il);
    assert_int_equal(feed(w, text), 2);
    answer(w, "c");
    assert_int_equal(final_note(w, list)->items, 1);
    assert_answered(w, b, "b");
    assert_answered(w, c, "c");
    world_free(w);
}

/* Random interleavings of adds, in-order answers, cancels and timeouts:
 * each answer goes to the oldest waiting action, never anywhere else. */
static void a_long_mixed_run_gives_every_answer_to_its_own_action(void **state)
{
    (void)state;
    enum { N = 400 };
    world_t *w = world_new(64, 0);
    uint64_t ids[N];
    bool waiting[N] = {false};
    size_t added = 0, answered = 0;
    uint32_t rng = 12345;
    int64_t now = 0;
    while (answered < N) {
        rng = rng * 1103515245u + 12345u;
        unsigned r = (rng >> 16) % 10;
        size_t oldest = 0;
        while (oldest < added && !waiting[oldest])
            oldest++;
        if (r < 5 && added < N && ami_registry_pending(w->reg) < 64) {
            ids[added] = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, r == 0 ? now + 1 : 0);
            waiting[added++] = true;
        } else if (r < 8 && oldest < added) {
            char tag[32];
            snprintf(tag, sizeof tag, "n%zu", oldest);
            assert_int_equal(answer(w, tag), 1);
            assert_answered(w, ids[oldest], tag);
            waiting[oldest] = false;
            answered++;
        } else if (r == 8 && oldest + 1 < added) {
            size_t victim = oldest + 1 + (rng >> 8) % (added - oldest - 1);
            if (waiting[victim] && ami_registry_cancel(w->reg, ids[victim])) {
                waiting[victim] = false;
                answered++;
            }
        } else if (r == 9) {
            now++;
            size_t before = w->nnotes;
            size_t n = ami_registry_expire(w->reg, now);
            for (size_t i = before; i < before + n; i++)
                for (size_t k = 0; k < added; k++)
                    if (ids[k] == w->notes[i].id) {
                        waiting[k] = false;
                        answered++;
                    }
        }
        if (added == N && oldest == added)
            break;
        if (w->nnotes > MAX_NOTES - 8)
            w->nnotes = 0; /* the checks above look only at the newest notes */
    }
    assert_int_equal(ami_registry_pending(w->reg), 0);
    assert_int_equal(ami_registry_stats(w->reg)->unmatched, 0);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(three_in_order_answers_reach_their_own_actions),
        cmocka_unit_test(answers_by_action_id_leave_the_queue_in_order),
        cmocka_unit_test(cancelled_and_timed_out_actions_leave_the_queue),
        cmocka_unit_test(lists_and_completion_events_leave_the_queue_once),
        cmocka_unit_test(a_long_mixed_run_gives_every_answer_to_its_own_action),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
