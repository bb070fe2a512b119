/* The ownership gate in the Lua runtime, in one process against a real
 * redis-server: a standby runs no handlers and refuses actions with
 * not_owner (waiters still hear events); a drained rival hands over at once
 * (long before its lease could expire) and the new owner's epoch is higher;
 * an owner that loses Redis keeps acting, then stops no later than its
 * lease and says so, and acts again when Redis is back; the event stream
 * is fed by the owner only, with its in-flight bound and drop counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha_world.h"
#include "harness.h"
#include "util/clock.h"

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

#define PRELUDE                                                                                      \
    "local ami = require 'ami'\n"                                                                    \
    "local function check(name, ok, detail)\n"                                                       \
    "  ami.log.info(ok and 'PASS' or 'FAIL', {name = name, detail = tostring(detail)})\n"            \
    "end\n"                                                                                          \
    "local function kind(err) return type(err) == 'string' and err:match('^([%w_]+):') end\n"         \
    "ami.on('UserEvent', function(ev) ami.log.info('HANDLED', {server = ev.server}) end)\n"

#define USER_EVENT "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Ping\r\n\r\n"

static void expect_passes(lua_world_t *w, int passes)
{
    bool done = lua_world_wait_log(w, "msg=DONE", 1, 8000);
    int fails = lua_world_count_log(w, "msg=FAIL");
    int got = lua_world_count_log(w, "msg=PASS");
    if (!done || fails || got != passes) {
        fprintf(stderr, "log:\n%s\n", log_capture_text(&w->lines));
        fail_msg("done=%d passes=%d (want %d) fails=%d (the log is above)", done, got, passes, fails);
    }
}

static int handled(lua_world_t *w)
{
    return lua_world_count_log(w, "msg=HANDLED");
}

typedef struct owner_wait {
    ami_ha_t *ha;
    const char *owner;
} owner_wait_t;

static bool sees_owner(void *ud)
{
    owner_wait_t *o = ud;
    ami_ha_lease_info_t info;
    return ami_ha_lease_info(o->ha, "pbx1", &info) == 0 && strcmp(info.owner, o->owner) == 0;
}

static uint64_t epoch_of(ami_ha_t *ha)
{
    ami_ha_lease_info_t info;
    assert_int_equal(ami_ha_lease_info(ha, "pbx1", &info), 0);
    return info.epoch;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void a_standby_runs_no_handlers_and_refuses_actions(void **state)
{
    ha_world_options_t o = {.nodes = 1, .rival_first = true};
    ha_world_t *hw = ha_world_new(&o);
    owner_wait_t ow = {hw->ha, "rival"};
    assert_true(harness_run_until(hw->w->loop, sees_owner, &ow, 3000));
    lua_world_write(hw->w, "gate.lua", PRELUDE
        "ami.spawn(function()\n"
        "  local s = ami.server('pbx1')\n"
        "  check('not owned', s.owned == false)\n"
        "  check('owner named', s.owner == 'rival', s.owner)\n"
        "  check('epoch', type(s.epoch) == 'number' and s.epoch >= 1, s.epoch)\n"
        "  check('servers list too', ami.servers()[1].owned == false)\n"
        "  local res, err = ami.action('pbx1', 'Ping')\n"
        "  check('not_owner', res == nil and kind(err) == 'not_owner' and err:find('rival', 1, true), err)\n"
        "  res, err = ami.collect('pbx1', 'CoreShowChannels')\n"
        "  check('collect too', res == nil and kind(err) == 'not_owner', err)\n"
        "  res, err = ami.action(nil, 'Ping')\n"
        "  check('routing by policy refused', res == nil and kind(err) == 'not_owner', err)\n"
        "  ami.log.info('WAITING')\n"
        "  local ev = ami.wait_for({Event = 'UserEvent'}, 3000)\n"
        "  check('waiters still hear', ev ~= nil and ev.server == 'pbx1')\n"
        "  ami.log.info('DONE')\n"
        "end)\n");
    lua_world_load(hw->w);
    assert_true(lua_world_wait_log(hw->w, "msg=WAITING", 1, 3000));
    lua_world_inject(hw->w, 0, USER_EVENT);
    expect_passes(hw->w, 8);
    lua_world_run_for(hw->w, 100);
    assert_int_equal(handled(hw->w), 0);
    assert_true(lua_world_metric(hw->w, "ami_ha_owner", L("server_key", "pbx1")) == 0);
    ha_world_free(hw);
}

static void a_drained_rival_hands_over_at_once_with_a_higher_epoch(void **state)
{
    /* A 10 s lease and a standby that looks every 4 s, and the drain right
     * after it looked: a takeover in well under that can only come from the
     * release and its notice. */
    ha_world_options_t o = {.nodes = 1, .rival_first = true, .lease_ms = 10000, .renew_ms = 4000};
    ha_world_t *hw = ha_world_new(&o);
    owner_wait_t ow = {hw->ha, "rival"};
    assert_true(harness_run_until(hw->w->loop, sees_owner, &ow, 3000));
    uint64_t before = epoch_of(hw->ha);
    lua_world_write(hw->w, "gate.lua", PRELUDE);
    lua_world_load(hw->w);
    int64_t t0 = ami_now_ms();
    ha_world_drop_rival(hw, true);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 5000));
    int64_t took = ami_now_ms() - t0;
    print_message("handover after a drain: %lld ms (lease 10000 ms, standby looks every 4000 ms)\n", (long long)took);
    assert_true(took < 2000);
    assert_true(epoch_of(hw->ha) > before);
    assert_true(lua_world_wait_log(hw->w, "lease acquired", 1, 100));
    lua_world_inject(hw->w, 0, USER_EVENT);
    assert_true(lua_world_wait_log(hw->w, "msg=HANDLED", 1, 3000));
    assert_true(lua_world_metric(hw->w, "ami_ha_owner", L("server_key", "pbx1")) == 1);
    ha_world_free(hw);
}

typedef struct stop_watch {
    ha_world_t *hw;
    int64_t paused_at, lease_ns;
    bool acted_late;
} stop_watch_t;

static bool stopped_acting(void *ud)
{
    stop_watch_t *s = ud;
    bool acting = ami_ha_acting_count(s->hw->ha) > 0;
    if (acting && ami_now_ns() - s->paused_at > s->lease_ns)
        s->acted_late = true;
    return !acting;
}

static void an_owner_without_redis_stops_within_its_lease_and_comes_back(void **state)
{
    ha_world_t *hw = ha_world_new(NULL);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 3000));
    uint64_t epoch = epoch_of(hw->ha);
    lua_world_write(hw->w, "gate.lua", PRELUDE);
    lua_world_load(hw->w);
    stop_watch_t sw = {hw, ami_now_ns(), (int64_t)HA_TEST_LEASE_MS * 1000000, false};
    redis_server_pause(&hw->redis);
    lua_world_inject(hw->w, 0, USER_EVENT);
    assert_true(lua_world_wait_log(hw->w, "msg=HANDLED", 1, 3000)); /* still within its lease */
    /* Safety, on the monotonic clock: never acting past a lease after
     * Redis went silent (the last renew was sent before that). */
    assert_true(harness_run_until(hw->w->loop, stopped_acting, &sw, 5000));
    assert_false(sw.acted_late);
    assert_true(lua_world_wait_log(hw->w, "lease not renewed in time", 1, 100));
    assert_true(lua_world_metric(hw->w, "ami_ha_owner", L("server_key", "pbx1")) == 0);
    lua_world_inject(hw->w, 0, USER_EVENT);
    lua_world_run_for(hw->w, 200);
    assert_int_equal(handled(hw->w), 1);
    redis_server_resume(&hw->redis);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 5000));
    assert_true(epoch_of(hw->ha) >= epoch);
    assert_true(lua_world_wait_log(hw->w, "takeover: calls that started", 1, 100));
    lua_world_inject(hw->w, 0, USER_EVENT);
    assert_true(lua_world_wait_log(hw->w, "msg=HANDLED", 2, 3000));
    ha_world_free(hw);
}

static void the_owner_copies_listed_events_to_the_stream_once(void **state)
{
    ha_world_options_t o = {.nodes = 1, .rival_first = true, .stream = "ami:test:events",
                            .stream_events = L("UserEvent")};
    ha_world_t *hw = ha_world_new(&o);
    lua_world_load(hw->w);
    for (int i = 0; i < 5; i++)
        lua_world_inject(hw->w, 0, USER_EVENT);
    lua_world_inject(hw->w, 0, "Event: Other\r\nPrivilege: user,all\r\n\r\n");
    char out[256] = "";
    for (int i = 0; i < 100 && strcmp(out, "5") != 0; i++) {
        lua_world_run_for(hw->w, 20);
        redis_server_cli(&hw->redis, out, sizeof out, L("XLEN", "ami:test:events"));
    }
    lua_world_run_for(hw->w, 200); /* a second copy, if any, would land now */
    redis_server_cli(&hw->redis, out, sizeof out, L("XLEN", "ami:test:events"));
    assert_string_equal(out, "5"); /* the rival owns pbx1: only it adds, each event once */
    char entry[2048];
    redis_server_cli(&hw->redis, entry, sizeof entry, L("XRANGE", "ami:test:events", "-", "+", "COUNT", "1"));
    assert_non_null(strstr(entry, "\nserver\npbx1\nEvent\nUserEvent\nPrivilege\nuser,all\nUserEvent\nPing"));
    assert_true(lua_world_metric(hw->w, "ami_ha_stream_added_total", NULL) == 0); /* self: a standby */
    ha_world_free(hw);
}

static void a_full_or_dead_stream_link_drops_and_counts(void **state)
{
    ha_world_options_t o = {.nodes = 1, .stream = "ami:test:events", .stream_max_inflight = 2};
    ha_world_t *hw = ha_world_new(&o);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 3000));
    lua_world_load(hw->w);
    redis_server_pause(&hw->redis);
    for (int i = 0; i < 5; i++)
        lua_world_inject(hw->w, 0, USER_EVENT);
    lua_world_run_for(hw->w, 100);
    assert_true(lua_world_metric(hw->w, "ami_ha_stream_dropped_total", L("reason", "max_inflight")) == 3);
    lua_world_run_for(hw->w, 500); /* the XADDs time out: the link drops */
    assert_true(lua_world_metric(hw->w, "ami_ha_stream_failed_total", NULL) == 2);
    lua_world_inject(hw->w, 0, USER_EVENT);
    lua_world_run_for(hw->w, 50);
    double down = lua_world_metric(hw->w, "ami_ha_stream_dropped_total", L("reason", "redis_down"));
    redis_server_resume(&hw->redis);
    /* the owner may have stopped acting by now (no renew for a while): then nothing is sent at all */
    assert_true(down == 1 || ami_ha_acting_count(hw->ha) == 0);
    ha_world_free(hw);
}

typedef struct renew_wait {
    ha_world_t *hw;
    double before;
} renew_wait_t;

static double lease_commands(ha_world_t *hw)
{
    return lua_world_metric(hw->w, "ami_redis_commands_total", L("conn", "ha-lease"));
}

static bool renew_went_out(void *ud)
{
    renew_wait_t *r = ud;
    return lease_commands(r->hw) > r->before;
}

static void after_a_redis_restart_nobody_takes_a_free_lease_for_one_lease(void **state)
{
    /* Renewed every 3 s, and Redis restarted right after a renew: the owner
     * learns its lease is gone from the renew it sends as soon as it is
     * reconnected, not 3 s later. */
    ha_world_options_t o = {.nodes = 1, .lease_ms = 6000, .renew_ms = 3000};
    ha_world_t *hw = ha_world_new(&o);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 12000));
    uint64_t epoch = epoch_of(hw->ha);
    renew_wait_t rw = {hw, lease_commands(hw)};
    assert_true(harness_run_until(hw->w->loop, renew_went_out, &rw, 5000));
    lua_world_run_for(hw->w, 20);
    assert_int_equal(redis_server_restart(&hw->redis), 0); /* its data is gone */
    int64_t restarted = ami_now_ms();
    assert_true(lua_world_wait_log(hw->w, "lease lost", 1, 1500));
    assert_int_equal(ami_ha_acting_count(hw->ha), 0);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 6000 + 5000));
    int64_t waited = ami_now_ms() - restarted;
    print_message("after the redis restart: owner again after %lld ms (lease 6000 ms)\n", (long long)waited);
    /* A lower bound only: a slow machine makes it longer, never shorter. */
    assert_true(waited >= 6000);
    assert_true(epoch_of(hw->ha) > epoch);
    ha_world_free(hw);
}

static void an_owner_that_cannot_reach_its_server_lets_the_lease_go(void **state)
{
    ha_world_t *hw = ha_world_new(NULL);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 3000));
    ami_sim_node_stop(hw->w->nodes[0]);
    /* one lease of grace for a blip, then the lease runs out */
    assert_true(ha_world_wait_acting(hw, hw->ha, 0, 3 * HA_TEST_LEASE_MS + 5000));
    assert_true(lua_world_wait_log(hw->w, "ami_up=false", 1, 1000));
    lua_world_run_for(hw->w, 1500);
    assert_int_equal(ami_ha_acting_count(hw->ha), 0); /* and it does not take it back meanwhile */
    ami_err_t err;
    assert_int_equal(ami_sim_node_restart(hw->w->nodes[0], &err), 0);
    assert_true(ha_world_wait_acting(hw, hw->ha, 1, 8000));
    ha_world_free(hw);
}

/* A failed test skips its own cleanup: stop whatever it started (and
 * continue a redis-server it paused, so it can die). */
static int kill_leftovers(void **state)
{
    proc_kill_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(a_standby_runs_no_handlers_and_refuses_actions, kill_leftovers),
        cmocka_unit_test_teardown(a_drained_rival_hands_over_at_once_with_a_higher_epoch, kill_leftovers),
        cmocka_unit_test_teardown(an_owner_without_redis_stops_within_its_lease_and_comes_back, kill_leftovers),
        cmocka_unit_test_teardown(the_owner_copies_listed_events_to_the_stream_once, kill_leftovers),
        cmocka_unit_test_teardown(a_full_or_dead_stream_link_drops_and_counts, kill_leftovers),
        cmocka_unit_test_teardown(after_a_redis_restart_nobody_takes_a_free_lease_for_one_lease, kill_leftovers),
        cmocka_unit_test_teardown(an_owner_that_cannot_reach_its_server_lets_the_lease_go, kill_leftovers),
    };
    if (getenv("AMI_TEST_FILTER")) /* run one: AMI_TEST_FILTER=name* */
        cmocka_set_test_filter(getenv("AMI_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
