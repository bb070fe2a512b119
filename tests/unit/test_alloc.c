/* The accounting allocator (util/alloc.h): live bytes and blocks per
 * account, a block charged to the account that made it whoever frees or
 * grows it, external (Lua) bytes on the engine's account only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdalign.h>
#include <string.h>

#include "util/alloc.h"

typedef struct snapshot {
    int64_t bytes[AMI_ALLOC_ACCOUNTS];
    int64_t blocks[AMI_ALLOC_ACCOUNTS];
} snapshot_t;

static snapshot_t snap(void)
{
    snapshot_t s;
    for (int a = 0; a < AMI_ALLOC_ACCOUNTS; a++) {
        s.bytes[a] = ami_alloc_account_live_bytes((ami_alloc_account_t)a);
        s.blocks[a] = ami_alloc_account_live_blocks((ami_alloc_account_t)a);
    }
    return s;
}

static void expect_growth(const snapshot_t *before, ami_alloc_account_t a, int64_t bytes, int64_t blocks)
{
    snapshot_t now = snap();
    for (int i = 0; i < AMI_ALLOC_ACCOUNTS; i++) {
        assert_int_equal(now.bytes[i] - before->bytes[i], i == (int)a ? bytes : 0);
        assert_int_equal(now.blocks[i] - before->blocks[i], i == (int)a ? blocks : 0);
    }
}

static void blocks_are_charged_to_the_current_account(void **state)
{
    (void)state;
    snapshot_t s0 = snap();
    void *e = ami_malloc(100);
    expect_growth(&s0, AMI_ALLOC_ENGINE, 100, 1);
    assert_int_equal(ami_alloc_use(AMI_ALLOC_SIMULATOR), AMI_ALLOC_ENGINE);
    snapshot_t s1 = snap();
    void *sim = ami_calloc(3, 10);
    expect_growth(&s1, AMI_ALLOC_SIMULATOR, 30, 1);
    assert_int_equal(ami_alloc_use(AMI_ALLOC_ENGINE), AMI_ALLOC_SIMULATOR);
    ami_free(sim); /* freed under the engine's account: the simulator's is credited */
    expect_growth(&s1, AMI_ALLOC_SIMULATOR, 0, 0);
    ami_free(e);
    expect_growth(&s0, AMI_ALLOC_ENGINE, 0, 0);
    assert_int_equal(ami_alloc_live_bytes(), s0.bytes[AMI_ALLOC_ENGINE]);
    assert_int_equal(ami_alloc_live_blocks(), s0.blocks[AMI_ALLOC_ENGINE]);
}

static void realloc_keeps_the_account_that_made_the_block(void **state)
{
    (void)state;
    snapshot_t s0 = snap();
    ami_alloc_use(AMI_ALLOC_SIMULATOR);
    char *p = ami_realloc(NULL, 16);
    memcpy(p, "0123456789abcde", 16);
    ami_alloc_use(AMI_ALLOC_ENGINE);
    p = ami_realloc(p, 4096);
    assert_memory_equal(p, "0123456789abcde", 16);
    expect_growth(&s0, AMI_ALLOC_SIMULATOR, 4096, 1);
    p = ami_realloc(p, 8);
    expect_growth(&s0, AMI_ALLOC_SIMULATOR, 8, 1);
    assert_null(ami_realloc(p, 0)); /* frees */
    expect_growth(&s0, AMI_ALLOC_SIMULATOR, 0, 0);
}

static void user_pointers_keep_malloc_alignment(void **state)
{
    (void)state;
    for (size_t n = 1; n < 200; n += 7) {
        void *p = ami_malloc(n);
        assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
        ami_free(p);
    }
}

static void external_bytes_count_on_the_engine_account_only(void **state)
{
    (void)state;
    snapshot_t s0 = snap();
    ami_alloc_note_external(5000);
    expect_growth(&s0, AMI_ALLOC_ENGINE, 5000, 0);
    ami_alloc_note_external(-5000);
    expect_growth(&s0, AMI_ALLOC_ENGINE, 0, 0);
}

static void bad_requests_are_refused_and_counted_nowhere(void **state)
{
    (void)state;
    snapshot_t s0 = snap();
    assert_null(ami_malloc(SIZE_MAX));
    assert_null(ami_calloc(SIZE_MAX / 2, 4));
    void *p = ami_malloc(8);
    assert_null(ami_realloc(p, SIZE_MAX)); /* p stays valid */
    ami_free(p);
    ami_free(NULL);
    /* an unknown account is ignored: the current one stays */
    assert_int_equal(ami_alloc_use((ami_alloc_account_t)77), AMI_ALLOC_ENGINE);
    assert_int_equal(ami_alloc_use(AMI_ALLOC_ENGINE), AMI_ALLOC_ENGINE);
    assert_int_equal(ami_alloc_account_live_bytes((ami_alloc_account_t)77), 0);
    assert_int_equal(ami_alloc_account_live_blocks((ami_alloc_account_t)77), 0);
    expect_growth(&s0, AMI_ALLOC_ENGINE, 0, 0);
}

static void strdup_copies_and_counts(void **state)
{
    (void)state;
    snapshot_t s0 = snap();
    char *a = ami_strdup("hello");
    char *b = ami_strndup("hello world", 5);
    assert_string_equal(a, "hello");
    assert_string_equal(b, "hello");
    assert_null(ami_strdup(NULL));
    expect_growth(&s0, AMI_ALLOC_ENGINE, 12, 2);
    ami_free(a);
    ami_free(b);
    expect_growth(&s0, AMI_ALLOC_ENGINE, 0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blocks_are_charged_to_the_current_account),
        cmocka_unit_test(realloc_keeps_the_account_that_made_the_block),
        cmocka_unit_test(user_pointers_keep_malloc_alignment),
        cmocka_unit_test(external_bytes_count_on_the_engine_account_only),
        cmocka_unit_test(bad_requests_are_refused_and_counted_nowhere),
        cmocka_unit_test(strdup_copies_and_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
