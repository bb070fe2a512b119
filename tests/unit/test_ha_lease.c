/* The lease state machine (engine/ha/lease.c) on a fake clock: when an
 * owner acts, renews and stops; what a standby does with a refusal; stale
 * replies; drain. Times are in ms for reading, ns inside. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "ha/lease.h"

#define MS 1000000LL
#define LEASE 3000
#define RENEW 1000
#define GUARD 150

static ami_lease_t L;

static int setup(void **state)
{
    ami_lease_timing_t t = {.lease_ns = LEASE * MS, .renew_ns = RENEW * MS, .retry_ns = RENEW * MS,
                            .guard_ns = GUARD * MS};
    ami_lease_init(&L, &t, 0);
    return 0;
}

static ami_lease_op_t due(int64_t ms, bool reachable, ami_lease_change_t *c)
{
    ami_lease_change_t scratch;
    return ami_lease_due(&L, ms * MS, reachable, c ? c : &scratch);
}

static ami_lease_change_t win(uint64_t seq, int64_t at_ms, uint64_t epoch)
{
    ami_lease_seen_t seen = {.won = true, .epoch = epoch, .owner = "me", .pttl_ms = LEASE};
    return ami_lease_on_acquire(&L, seq, at_ms * MS, &seen);
}

/* Acquire sent at 0, answered at reply_ms. */
static void become_owner(int64_t reply_ms, uint64_t epoch)
{
    assert_int_equal(due(0, true, NULL), AMI_LEASE_OP_ACQUIRE);
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 0);
    assert_int_equal(win(seq, reply_ms, epoch), AMI_LEASE_ACQUIRED);
}

static bool acting(int64_t ms)
{
    return ami_lease_acting(&L, ms * MS);
}

/* ---- owner ---------------------------------------------------------------------------- */

static void a_standby_acquires_only_a_server_it_can_reach(void **state)
{
    assert_int_equal(due(0, false, NULL), AMI_LEASE_OP_NONE);
    assert_int_equal(due(0, true, NULL), AMI_LEASE_OP_ACQUIRE);
    assert_false(acting(0));
}

static void acting_counts_from_the_send_time_not_the_reply(void **state)
{
    become_owner(900, 7); /* a slow reply: Redis may have started the lease right after 0 */
    assert_int_equal(L.epoch, 7);
    assert_true(acting(900));
    assert_true(acting(LEASE - GUARD - 1));
    assert_false(acting(LEASE - GUARD));
}

static void one_command_at_a_time(void **state)
{
    assert_int_equal(due(0, true, NULL), AMI_LEASE_OP_ACQUIRE);
    ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 0);
    assert_int_equal(due(5000, true, NULL), AMI_LEASE_OP_NONE);
}

static void the_owner_renews_after_the_interval_and_the_renew_extends_from_its_send(void **state)
{
    become_owner(10, 1);
    assert_int_equal(due(RENEW - 1, true, NULL), AMI_LEASE_OP_NONE);
    assert_int_equal(due(RENEW, true, NULL), AMI_LEASE_OP_RENEW);
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_RENEW, RENEW * MS);
    assert_int_equal(ami_lease_on_renew(&L, seq, 2500 * MS, true), AMI_LEASE_SAME);
    assert_true(acting(RENEW + LEASE - GUARD - 1));
    assert_false(acting(RENEW + LEASE - GUARD));
    assert_int_equal(due(2 * RENEW - 1, true, NULL), AMI_LEASE_OP_NONE);
    assert_int_equal(due(2 * RENEW, true, NULL), AMI_LEASE_OP_RENEW);
}

static void without_renewals_the_owner_stops_at_the_lease_end_and_says_so_once(void **state)
{
    become_owner(10, 1);
    for (int64_t t = RENEW; t < LEASE - GUARD; t += 100) {
        ami_lease_change_t c;
        ami_lease_op_t op = due(t, true, &c);
        assert_int_equal(c, AMI_LEASE_SAME);
        if (op == AMI_LEASE_OP_RENEW) /* sent, then failed: redis unreachable */
            ami_lease_on_done(&L, ami_lease_sent(&L, op, t * MS), (t + 50) * MS);
        assert_true(acting(t));
    }
    ami_lease_change_t c;
    due(LEASE - GUARD, true, &c);
    assert_int_equal(c, AMI_LEASE_EXPIRED);
    assert_false(acting(LEASE - GUARD));
    due(LEASE, true, &c);
    assert_int_equal(c, AMI_LEASE_SAME);
    assert_true(L.unowned_known);
    assert_true(L.unowned_since == (LEASE - GUARD) * MS);
}

static void after_a_reconnect_the_owner_renews_at_once(void **state)
{
    become_owner(10, 1);
    assert_int_equal(due(300, true, NULL), AMI_LEASE_OP_NONE);
    ami_lease_renew_soon(&L);
    assert_int_equal(due(300, true, NULL), AMI_LEASE_OP_RENEW);
    ami_lease_sent(&L, AMI_LEASE_OP_RENEW, 300 * MS);
    assert_false(L.renew_soon);
}

static void a_free_lease_not_taken_is_tried_again_when_the_wait_ends(void **state)
{
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 0);
    ami_lease_seen_t seen = {.won = false, .free = true, .pttl_ms = 250};
    assert_int_equal(ami_lease_on_acquire(&L, seq, MS, &seen), AMI_LEASE_SAME);
    assert_int_equal(due(250, true, NULL), AMI_LEASE_OP_NONE);
    assert_int_equal(due(251, true, NULL), AMI_LEASE_OP_ACQUIRE);
}

static void a_refused_renew_stops_acting_at_once(void **state)
{
    become_owner(10, 1);
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_RENEW, RENEW * MS);
    assert_int_equal(ami_lease_on_renew(&L, seq, (RENEW + 5) * MS, false), AMI_LEASE_LOST);
    assert_false(acting(RENEW + 5));
    assert_int_equal(L.role, AMI_LEASE_STANDBY);
}

static void a_late_renew_reply_after_expiry_is_ignored_and_the_lease_resumes_with_its_epoch(void **state)
{
    become_owner(10, 4);
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_RENEW, RENEW * MS);
    ami_lease_change_t c;
    due(LEASE - GUARD + 1, true, &c);
    assert_int_equal(c, AMI_LEASE_EXPIRED);
    /* the renew Redis accepted comes back now: too late to act on */
    assert_int_equal(ami_lease_on_renew(&L, seq, LEASE * MS, true), AMI_LEASE_SAME);
    assert_false(acting(LEASE));
    assert_int_equal(due(LEASE, true, NULL), AMI_LEASE_OP_ACQUIRE);
    seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, LEASE * MS);
    assert_int_equal(win(seq, LEASE + 5, 4), AMI_LEASE_RESUMED);
    assert_true(acting(LEASE + 5));
}

static void a_stale_reply_changes_nothing(void **state)
{
    assert_int_equal(due(0, true, NULL), AMI_LEASE_OP_ACQUIRE);
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 0);
    ami_lease_on_done(&L, seq, 10 * MS); /* timed out */
    assert_int_equal(win(seq, 20, 9), AMI_LEASE_SAME);
    assert_false(acting(20));
}

/* ---- standby ------------------------------------------------------------------------------- */

static void a_refusal_schedules_the_next_try_right_after_the_lease_could_expire(void **state)
{
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 1000 * MS);
    ami_lease_seen_t seen = {.won = false, .epoch = 12, .owner = "other", .pttl_ms = 400};
    assert_int_equal(ami_lease_on_acquire(&L, seq, 1002 * MS, &seen), AMI_LEASE_SAME);
    assert_string_equal(L.owner, "other");
    assert_int_equal(L.epoch, 12);
    assert_int_equal(due(1400, true, NULL), AMI_LEASE_OP_NONE);
    assert_int_equal(due(1401, true, NULL), AMI_LEASE_OP_ACQUIRE);
    /* the owner renewed (lease - pttl) before our send: alive until then at least */
    assert_true(L.unowned_known);
    assert_true(L.unowned_since == (1000 - (LEASE - 400)) * MS);
}

static void a_refusal_with_a_long_lease_left_retries_at_the_interval(void **state)
{
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 0);
    ami_lease_seen_t seen = {.won = false, .epoch = 3, .owner = "other", .pttl_ms = 2900};
    ami_lease_on_acquire(&L, seq, MS, &seen);
    assert_int_equal(due(RENEW - 1, true, NULL), AMI_LEASE_OP_NONE);
    assert_int_equal(due(RENEW, true, NULL), AMI_LEASE_OP_ACQUIRE);
}

static void a_release_notice_makes_a_standby_try_at_once(void **state)
{
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 0);
    ami_lease_seen_t seen = {.won = false, .epoch = 3, .owner = "other", .pttl_ms = 2900};
    ami_lease_on_acquire(&L, seq, MS, &seen);
    ami_lease_poke(&L, 200 * MS, 100 * MS);
    assert_int_equal(due(200, true, NULL), AMI_LEASE_OP_ACQUIRE);
    assert_true(L.unowned_since == 100 * MS);
}

/* ---- drain ------------------------------------------------------------------------------------ */

static void a_drained_owner_stops_at_once_and_gives_the_lease_back(void **state)
{
    become_owner(10, 2);
    ami_lease_release(&L, 500 * MS);
    assert_false(acting(500));
    assert_false(ami_lease_settled(&L));
    assert_int_equal(due(500, true, NULL), AMI_LEASE_OP_RELEASE);
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_RELEASE, 500 * MS);
    assert_false(ami_lease_settled(&L));
    ami_lease_on_done(&L, seq, 510 * MS);
    assert_true(ami_lease_settled(&L));
    assert_int_equal(due(5000, true, NULL), AMI_LEASE_OP_NONE);
}

static void an_acquire_won_after_the_drain_began_is_given_back(void **state)
{
    assert_int_equal(due(0, true, NULL), AMI_LEASE_OP_ACQUIRE);
    uint64_t seq = ami_lease_sent(&L, AMI_LEASE_OP_ACQUIRE, 0);
    ami_lease_release(&L, 5 * MS);
    assert_int_equal(win(seq, 10, 5), AMI_LEASE_SAME);
    assert_false(acting(10));
    assert_int_equal(due(10, true, NULL), AMI_LEASE_OP_RELEASE);
}

static void a_standby_that_never_held_settles_at_once(void **state)
{
    ami_lease_release(&L, 0);
    assert_true(ami_lease_settled(&L));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(a_standby_acquires_only_a_server_it_can_reach, setup),
        cmocka_unit_test_setup(acting_counts_from_the_send_time_not_the_reply, setup),
        cmocka_unit_test_setup(one_command_at_a_time, setup),
        cmocka_unit_test_setup(the_owner_renews_after_the_interval_and_the_renew_extends_from_its_send, setup),
        cmocka_unit_test_setup(without_renewals_the_owner_stops_at_the_lease_end_and_says_so_once, setup),
        cmocka_unit_test_setup(after_a_reconnect_the_owner_renews_at_once, setup),
        cmocka_unit_test_setup(a_free_lease_not_taken_is_tried_again_when_the_wait_ends, setup),
        cmocka_unit_test_setup(a_refused_renew_stops_acting_at_once, setup),
        cmocka_unit_test_setup(a_late_renew_reply_after_expiry_is_ignored_and_the_lease_resumes_with_its_epoch, setup),
        cmocka_unit_test_setup(a_stale_reply_changes_nothing, setup),
        cmocka_unit_test_setup(a_refusal_schedules_the_next_try_right_after_the_lease_could_expire, setup),
        cmocka_unit_test_setup(a_refusal_with_a_long_lease_left_retries_at_the_interval, setup),
        cmocka_unit_test_setup(a_release_notice_makes_a_standby_try_at_once, setup),
        cmocka_unit_test_setup(a_drained_owner_stops_at_once_and_gives_the_lease_back, setup),
        cmocka_unit_test_setup(an_acquire_won_after_the_drain_began_is_given_back, setup),
        cmocka_unit_test_setup(a_standby_that_never_held_settles_at_once, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
