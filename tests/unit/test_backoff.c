/* The reconnect delays every link shares (util/backoff.h): equal jitter
 * within [c/2, c], the ceiling doubling per failure up to the maximum,
 * spread rather than lock-step, and safe at the edges (huge failure counts,
 * initial above max, a zero random state). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/backoff.h"

static void delays_stay_in_the_upper_half_of_a_doubling_ceiling(void **state)
{
    (void)state;
    uint32_t rng = 12345;
    for (uint32_t failures = 0; failures < 12; failures++) {
        uint64_t ceiling = 500ull << failures;
        if (ceiling > 30000)
            ceiling = 30000;
        uint32_t lo = UINT32_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint32_t d = ami_backoff_delay(&rng, 500, 30000, failures);
            assert_in_range(d, (ceiling + 1) / 2, ceiling);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* jittered across the whole window, the first retry included */
        assert_true(lo < (ceiling + 1) / 2 + ceiling / 10);
        assert_true(hi > ceiling - ceiling / 10);
    }
}

static void edges_do_not_overflow_or_stall(void **state)
{
    (void)state;
    uint32_t rng = 0; /* a zero state must not stick at zero */
    uint32_t a = ami_backoff_random(&rng), b = ami_backoff_random(&rng);
    assert_true(a != 0 && b != 0 && a != b);
    assert_in_range(ami_backoff_delay(&rng, 1000, 60000, UINT32_MAX), 30000, 60000);
    assert_in_range(ami_backoff_delay(&rng, UINT32_MAX, UINT32_MAX, 40), UINT32_MAX / 2, UINT32_MAX);
    assert_in_range(ami_backoff_delay(&rng, 1, 1, 0), 1, 1);
    assert_int_equal(ami_backoff_delay(&rng, 0, 0, 3), 0);
}

static void two_engines_seeded_apart_do_not_retry_in_lock_step(void **state)
{
    (void)state;
    uint32_t a = ami_backoff_seed(0), b = ami_backoff_seed(0);
    assert_true(a != 0 && b != 0);
    assert_int_equal(ami_backoff_seed(7), 7);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += ami_backoff_delay(&a, 500, 30000, 3) == ami_backoff_delay(&b, 500, 30000, 3);
    assert_true(same < 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delays_stay_in_the_upper_half_of_a_doubling_ceiling),
        cmocka_unit_test(edges_do_not_overflow_or_stall),
        cmocka_unit_test(two_engines_seeded_apart_do_not_retry_in_lock_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
