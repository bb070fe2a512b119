/* The correlation registry's slot pool: allocated as actions need it, in
 * chunks that never move, up to max_pending (+ the reserved slot) and no
 * further; routing, deadlines and the reserved slot across chunks. */
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
#include "util/alloc.h"

#define MANY 200 /* pool of 201 slots: chunks of 64, 64, 64 and 9 */

static int64_t registry_bytes(uint32_t max_pending)
{
    ami_actionid_gen_t ids;
    ami_actionid_init(&ids, 1);
    ami_registry_config_t cfg;
    ami_registry_config_default(&cfg);
    cfg.max_pending = max_pending;
    cfg.ids = &ids;
    int64_t before = ami_alloc_live_bytes();
    ami_registry_t *r = ami_registry_new(&cfg, NULL);
    assert_non_null(r);
    int64_t bytes = ami_alloc_live_bytes() - before;
    ami_registry_free(r);
    assert_int_equal(ami_alloc_live_bytes(), before);
    return bytes;
}

static void an_idle_registry_holds_one_chunk_not_max_pending(void **state)
{
    (void)state;
    int64_t small = registry_bytes(63), large = registry_bytes(1024), huge = registry_bytes(1u << 20);
    /* 63 (+ the reserved slot) is one chunk; 1024 and a million cost the
     * same chunk, plus 8 bytes of chunk pointer per 64 slots of the bound. */
    assert_true(large - small <= (int64_t)(1024 / 64) * 8);
    assert_true(huge - small <= (int64_t)((1u << 20) / 64) * 8);
    assert_true(large < 20 * 1024);
}

static void answer(world_t *w, uint64_t id)
{
    char ia[AMI_ACTIONID_MAX], text[128];
    snprintf(text, sizeof text, "Response: Success\r\nActionID: %s\r\n\r\n", id_text(w, id, ia));
    assert_int_equal(feed(w, text), 1);
}

static void the_pool_grows_to_max_pending_and_no_further(void **state)
{
    (void)state;
    world_t *w = world_new(MANY, 0);
    int64_t idle = ami_alloc_live_bytes();
    uint64_t ids[MANY];
    for (int i = 0; i < MANY; i++) /* deadlines in reverse: the heap reorders across chunks */
        ids[i] = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 1000 - i);
    int64_t full = ami_alloc_live_bytes();
    assert_true(full > idle);
    ami_pending_spec_t spec = {.id = ami_actionid_next(&w->ids), .action = "Ping",
                               .strategy = AMI_STRATEGY_SINGLE, .cb = record, .ud = w};
    ami_err_t err;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_int_equal(ami_registry_stats(w->reg)->refused, 1);
    spec.reserved = true;
    assert_int_equal(ami_registry_add(w->reg, &spec, &err), 0);
    assert_int_equal(ami_registry_pending(w->reg), MANY + 1);
    assert_int_equal(ami_alloc_live_bytes(), full); /* the reserved slot was there already */

    /* The ten earliest deadlines are the last ten added, in the last chunk. */
    assert_int_equal(ami_registry_expire(w->reg, 1000 - MANY + 10), 10);
    for (int i = MANY - 10; i < MANY; i++)
        assert_int_equal(final_note(w, ids[i])->status, AMI_E_TIMEOUT);
    for (int i = 0; i < MANY - 10; i += 2) /* answered in an order of their own */
        answer(w, ids[i]);
    for (int i = MANY - 11; i > 0; i -= 2)
        answer(w, ids[i]);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(count_notes(w, ids[i], AMI_PENDING_DONE) + count_notes(w, ids[i], AMI_PENDING_FAILED), 1);
    assert_int_equal(ami_registry_pending(w->reg), 1);

    /* A second burst reuses the pool: no growth. */
    w->nnotes = 0;
    for (int i = 0; i < MANY; i++)
        ids[i] = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, 0);
    assert_int_equal(ami_alloc_live_bytes(), full);
    assert_int_equal(ami_registry_fail_all(w->reg, AMI_E_DISCONNECTED, "gone"), MANY + 1);
    world_free(w);
}

/* A list item's callback adds actions enough to grow the pool while the
 * note it was handed still points into its slot. */
typedef struct grower {
    world_t *w;
    int added;
    char action_seen[32];
} grower_t;

static void add_many_then_read_note(void *ud, const ami_pending_note_t *n)
{
    grower_t *g = ud;
    if (n->signal != AMI_PENDING_ITEM)
        return;
    for (; g->added < 150; g->added++) {
        ami_pending_spec_t spec = {.id = ami_actionid_next(&g->w->ids), .action = "Ping",
                                   .strategy = AMI_STRATEGY_SINGLE, .cb = record, .ud = g->w};
        assert_int_equal(ami_registry_add(g->w->reg, &spec, NULL), 0);
    }
    snprintf(g->action_seen, sizeof g->action_seen, "%s", n->action);
}

static void a_callback_growing_the_pool_keeps_its_note(void **state)
{
    (void)state;
    world_t *w = world_new(MANY, 0);
    grower_t g = {.w = w};
    uint64_t id = ami_actionid_next(&w->ids);
    ami_pending_spec_t spec = {.id = id, .action = "CoreShowChannels", .strategy = AMI_STRATEGY_LIST,
                               .cb = add_many_then_read_note, .ud = &g};
    assert_int_equal(ami_registry_add(w->reg, &spec, NULL), 0);
    send_list(w, id, 1, false);
    assert_int_equal(g.added, 150);
    assert_string_equal(g.action_seen, "CoreShowChannels");
    assert_true(ami_registry_has(w->reg, id));
    assert_int_equal(ami_registry_pending(w->reg), 151);
    world_free(w);
}

/* Random deadlines, cancellations and answers over a pool of several
 * chunks: the timeouts come in deadline order, each once, exactly for the
 * actions still pending. */
static uint32_t next_rand(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void timeouts_come_in_deadline_order_whatever_was_removed(void **state)
{
    (void)state;
    world_t *w = world_new(MANY, 0);
    uint32_t rng = 12345;
    uint64_t ids[MANY];
    int64_t deadline[MANY];
    bool live[MANY];
    for (int i = 0; i < MANY; i++) {
        deadline[i] = 1 + next_rand(&rng) % 50; /* many equal deadlines */
        ids[i] = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, deadline[i]);
        live[i] = true;
    }
    for (int i = 0; i < MANY; i++) {
        uint32_t pick = next_rand(&rng) % 4;
        if (pick == 0) {
            assert_true(ami_registry_cancel(w->reg, ids[i]));
            live[i] = false;
        } else if (pick == 1) {
            answer(w, ids[i]);
            live[i] = false;
        }
    }
    w->nnotes = 0;
    int expected = 0;
    for (int64_t now = 1; now <= 50; now++) {
        int due = 0;
        for (int i = 0; i < MANY; i++)
            due += live[i] && deadline[i] == now;
        assert_int_equal(ami_registry_expire(w->reg, now), due);
        expected += due;
        assert_int_equal(w->nnotes, expected);
        for (size_t k = w->nnotes - (size_t)due; k < w->nnotes; k++) {
            int i = 0;
            while (ids[i] != w->notes[k].id)
                i++;
            assert_true(live[i]);
            assert_int_equal(deadline[i], now);
            assert_int_equal(w->notes[k].status, AMI_E_TIMEOUT);
        }
    }
    assert_int_equal(ami_registry_pending(w->reg), 0);
    world_free(w);
}

/* The earliest deadline among the live actions (0: none has one). */
static int64_t earliest(const int64_t *deadline, const bool *live, int n)
{
    int64_t first = 0;
    for (int i = 0; i < n; i++)
        if (live[i] && deadline[i] > 0 && (first == 0 || deadline[i] < first))
            first = deadline[i];
    return first;
}

/* Expire at now: exactly the live actions due by then fail, in deadline order. */
static void expire_and_check(world_t *w, int64_t now, const uint64_t *ids, const int64_t *deadline, bool *live,
                             int n)
{
    w->nnotes = 0;
    size_t expired = ami_registry_expire(w->reg, now);
    assert_int_equal(expired, w->nnotes);
    int64_t last = 0;
    for (size_t k = 0; k < w->nnotes; k++) {
        int i = 0;
        while (i < n && !(live[i] && ids[i] == w->notes[k].id))
            i++;
        assert_true(i < n);
        assert_true(deadline[i] > 0 && deadline[i] <= now);
        assert_true(deadline[i] >= last);
        assert_int_equal(w->notes[k].status, AMI_E_TIMEOUT);
        last = deadline[i];
        live[i] = false;
    }
    int64_t next = earliest(deadline, live, n);
    assert_true(next == 0 || next > now);
}

/* Deadlines that come in order (one timeout for every action) are kept in
 * a list, the others in the heap: whatever the mix, and whichever actions
 * leave (answered, cancelled, timed out; at the list's head, middle or
 * tail), the next deadline is the earliest pending one and timeouts come
 * in deadline order. */
static void the_next_deadline_is_the_earliest_in_list_or_heap(void **state)
{
    (void)state;
    world_t *w = world_new(MANY, 0);
    uint32_t rng = 777;
    uint64_t ids[MANY];
    int64_t deadline[MANY];
    bool live[MANY] = {false};
    int64_t clock = 1000;
    for (int step = 0; step < 20000; step++) {
        int i = (int)(next_rand(&rng) % MANY);
        uint32_t pick = next_rand(&rng) % 16;
        if (!live[i]) {
            clock += next_rand(&rng) % 3;
            /* mostly in order, some due earlier than the list's last, some without a deadline */
            deadline[i] = pick < 10 ? clock + 500 : pick < 14 ? clock + (int64_t)(next_rand(&rng) % 500) : 0;
            ids[i] = add_action(w, "Ping", AMI_STRATEGY_SINGLE, NULL, deadline[i]);
            live[i] = true;
        } else if (pick < 6) {
            w->nnotes = 0;
            answer(w, ids[i]);
            live[i] = false;
        } else if (pick < 12) {
            assert_true(ami_registry_cancel(w->reg, ids[i]));
            live[i] = false;
        } else if (pick == 12) {
            expire_and_check(w, clock + 250, ids, deadline, live, MANY);
        }
        assert_int_equal(ami_registry_next_deadline(w->reg), earliest(deadline, live, MANY));
    }
    expire_and_check(w, clock + 1000, ids, deadline, live, MANY);
    for (int i = 0; i < MANY; i++)
        assert_true(!live[i] || deadline[i] == 0);
    assert_int_equal(ami_registry_next_deadline(w->reg), 0);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_idle_registry_holds_one_chunk_not_max_pending),
        cmocka_unit_test(the_pool_grows_to_max_pending_and_no_further),
        cmocka_unit_test(a_callback_growing_the_pool_keeps_its_note),
        cmocka_unit_test(timeouts_come_in_deadline_order_whatever_was_removed),
        cmocka_unit_test(the_next_deadline_is_the_earliest_in_list_or_heap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
