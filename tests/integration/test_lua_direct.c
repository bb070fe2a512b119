/* An event that only one handler of a script may want, with no waiters,
 * goes to it without dispatch's protected call (engine/lua/lua_direct.c).
 * The guarantees are the protected path's: an error or a runaway in one
 * run does not cost the next events, events arrive in order, an event
 * object outlives its run, ami.off inside the run is safe, the memory
 * limit holds. A successful action's result is built the same way, straight
 * onto its coroutine (engine/lua/lua_action.c), under the same limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "lua/lua_types.h" /* the script's memory, checked against its limit */
#include "lua_world.h"

static void expect_log(lua_world_t *w, const char *needle, int count)
{
    if (!lua_world_wait_log(w, needle, count, 5000))
        fail_msg("log never held \"%s\" %d times (has %d). Log:\n%s", needle, count,
                 lua_world_count_log(w, needle), log_capture_text(&w->lines));
}

/* Events Seq first..last in one send, so that they arrive in few reads. */
static void inject_seq(lua_world_t *w, int first, int last)
{
    char buf[8192];
    size_t n = 0;
    for (int i = first; i <= last; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "Event: UserEvent\r\nUserEvent: Seq\r\nSeq: %d\r\n\r\n", i);
    lua_world_inject(w, 0, buf);
}

/* memory_limit 0: the default. */
static lua_world_t *world_limited(uint32_t budget_ms, size_t memory_limit, const char *script)
{
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    if (memory_limit)
        lc.memory_limit = memory_limit;
    lua_world_options_t opt = {.budget_ms = budget_ms, .lua = &lc};
    lua_world_t *w = lua_world_new(&opt);
    lua_world_write(w, "direct.lua", script);
    lua_world_load(w);
    return w;
}

static lua_world_t *world_with(uint32_t budget_ms, const char *script)
{
    return world_limited(budget_ms, 0, script);
}

/* The line saying `seq`, or NULL. */
static const char *seen_at(lua_world_t *w, int seq)
{
    char needle[64];
    snprintf(needle, sizeof needle, "msg=seen seq=%d ", seq);
    return strstr(log_capture_text(&w->lines), needle);
}

static void errors_do_not_cost_the_next_events(void **state)
{
    (void)state;
    lua_world_t *w = world_with(200, "ami.on('UserEvent', function(ev)\n"
                                     "  if tonumber(ev.Seq) % 2 == 0 then error('boom ' .. ev.Seq) end\n"
                                     "  ami.log.info('seen', {seq = ev.Seq, server = ev.server})\n"
                                     "end)\n");
    inject_seq(w, 1, 40);
    expect_log(w, "msg=seen", 20);
    expect_log(w, "handler failed", 20);
    assert_int_equal(lua_world_count_log(w, "boom 40"), 1);
    assert_true(lua_world_metric(w, "ami_lua_handler_errors_total", NULL) == 20.0);
    assert_int_equal(lua_world_count_log(w, "server=pbx1"), 20);
    for (int i = 1; i + 2 <= 39; i += 2) /* in order */
        assert_true(seen_at(w, i) && seen_at(w, i + 2) && seen_at(w, i) < seen_at(w, i + 2));
    lua_world_free(w);
}

static void a_runaway_run_is_stopped_and_the_next_events_run(void **state)
{
    (void)state;
    lua_world_t *w = world_with(30, "ami.on('UserEvent', function(ev)\n"
                                    "  if ev.Seq == '3' then while true do end end\n"
                                    "  ami.log.info('seen', {seq = ev.Seq})\n"
                                    "end)\n");
    inject_seq(w, 1, 2); /* the pool holds a coroutine from here on */
    expect_log(w, "msg=seen", 2);
    inject_seq(w, 3, 8);
    expect_log(w, "handler stopped by the watchdog", 1);
    expect_log(w, "msg=seen", 7);
    assert_null(seen_at(w, 3));
    assert_true(lua_world_metric(w, "ami_lua_handler_kills_total", NULL) == 1.0);
    inject_seq(w, 9, 9);
    expect_log(w, "msg=seen", 8);
    lua_world_free(w);
}

static void event_objects_outlive_their_run(void **state)
{
    (void)state;
    lua_world_t *w = world_with(200, "kept = {}\n"
                                     "ami.on('UserEvent', function(ev) kept[#kept + 1] = ev end)\n"
                                     "ami.spawn(function()\n"
                                     "  while #kept < 30 do ami.sleep(0.01) end\n"
                                     "  for i = 1, 20000 do local t = {i} end -- garbage: a collection runs\n"
                                     "  for i, ev in ipairs(kept) do\n"
                                     "    ami.log.info('seen', {seq = ev.Seq, i = i, server = ev.server, n = #ev})\n"
                                     "  end\n"
                                     "end)\n");
    inject_seq(w, 1, 30);
    expect_log(w, "msg=seen", 30);
    assert_int_equal(lua_world_count_log(w, "server=pbx1"), 30);
    assert_int_equal(lua_world_count_log(w, "n=3"), 30);
    for (int i = 1; i <= 30; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "msg=seen i=%d n=3 seq=%d ", i, i);
        if (lua_world_count_log(w, needle) != 1)
            fail_msg("no \"%s\" once in:\n%s", needle, log_capture_text(&w->lines));
    }
    lua_world_free(w);
}

/* The run's handler removed by itself: its label stays valid until the run
 * ends (it errors after ami.off), and it runs no more. */
static void a_handler_may_remove_itself(void **state)
{
    (void)state;
    lua_world_t *w = world_with(200, "local id\n"
                                     "id = ami.on('UserEvent', function(ev)\n"
                                     "  ami.log.info('seen', {seq = ev.Seq})\n"
                                     "  if ev.Seq == '2' then ami.off(id); error('gone') end\n"
                                     "end)\n");
    inject_seq(w, 1, 1);
    expect_log(w, "msg=seen", 1);
    inject_seq(w, 2, 5);
    expect_log(w, "handler failed", 1);
    lua_world_run_for(w, 100);
    assert_int_equal(lua_world_count_log(w, "msg=seen"), 2);
    assert_int_equal(lua_world_count_log(w, "where=\"userevent handler at "), 1);
    lua_world_free(w);
}

/* The one candidate's conditions are checked before it runs. */
static void a_sole_handler_s_conditions_hold(void **state)
{
    (void)state;
    lua_world_t *w = world_with(200, "ami.on({Event = 'UserEvent', Seq = ami.pattern('^1')}, function(ev)\n"
                                     "  ami.log.info('seen', {seq = ev.Seq})\n"
                                     "end)\n");
    inject_seq(w, 1, 25); /* 1 and 10..19 match */
    expect_log(w, "msg=seen", 11);
    lua_world_run_for(w, 100);
    assert_int_equal(lua_world_count_log(w, "msg=seen"), 11);
    assert_null(seen_at(w, 2));
    assert_null(seen_at(w, 20));
    lua_world_free(w);
}

/* Two handlers that may want the event: both run, in registration order. */
static void several_candidates_all_run_in_order(void **state)
{
    (void)state;
    lua_world_t *w = world_with(200, "ami.on('*', function(ev) ami.log.info('any', {seq = ev.Seq}) end)\n"
                                     "ami.on('UserEvent', function(ev) ami.log.info('named', {seq = ev.Seq}) end)\n");
    inject_seq(w, 1, 10);
    expect_log(w, "msg=named", 10);
    expect_log(w, "msg=any", 10);
    const char *log = log_capture_text(&w->lines);
    const char *any = strstr(log, "msg=any seq=5 "), *named = strstr(log, "msg=named seq=5 ");
    assert_true(any && named && any < named);
    lua_world_free(w);
}

/* A script that keeps every event never holds more than its limit: near
 * it, events are refused (the protected path), not made past it. */
static void a_hoarder_stays_within_its_memory_limit(void **state)
{
    (void)state;
    const size_t limit = (size_t)2 << 20;
    lua_world_t *w = world_limited(200, limit, "kept = {}\n"
                                               "ami.on('UserEvent', function(ev) kept[#kept + 1] = ev end)\n");
    char big[2400];
    int n = snprintf(big, sizeof big, "Event: UserEvent\r\nUserEvent: Hoard\r\nData: ");
    memset(big + n, 'x', 2000);
    memcpy(big + n + 2000, "\r\n\r\n", 5);
    script_t *sc = w->rt->current->scripts;
    int64_t peak = 0;
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < 50; i++)
            lua_world_inject(w, 0, big);
        for (int t = 0; t < 10; t++) {
            lua_world_run_for(w, 2);
            peak = sc->mem_bytes > peak ? sc->mem_bytes : peak;
        }
    }
    const char *labels[] = {"script", "direct.lua", NULL};
    assert_true(lua_world_metric(w, "ami_lua_script_events_refused_total", labels) > 0);
    print_message("peak %lld of %zu bytes\n", (long long)peak, limit);
    assert_true(peak <= (int64_t)limit);
    lua_world_free(w);
}

/* A successful action's result is built straight onto its coroutine only
 * with room to spare under the memory limit: a script filled to its limit
 * gets "nomem" (the protected path refusing), never a result past the
 * limit, and once it has let go of its memory results come back again. */
static void an_action_result_near_the_limit_is_refused_not_made_past_it(void **state)
{
    (void)state;
    lua_world_t *w = world_limited(2000, (size_t)2 << 20,
                                   "local head, outcome = nil, 'none'\n"
                                   "local function fill() while true do head = {head} end end\n"
                                   "ami.on('UserEvent', function(ev)\n"
                                   "  if ev.UserEvent == 'Fill' then\n"
                                   "    pcall(fill)\n" /* up to the limit, a small table at a time */
                                   "    local res, err = ami.action('pbx1', 'Ping')\n"
                                   "    outcome = res and 'result' or err\n" /* allocates nothing */
                                   "    head = nil\n"
                                   "  else\n"
                                   "    local res = ami.action('pbx1', 'Ping')\n"
                                   "    ami.log.info('outcome', {near_limit = outcome, later = res and res.Ping})\n"
                                   "  end\n"
                                   "end)\n");
    lua_world_inject(w, 0, "Event: UserEvent\r\nUserEvent: Fill\r\n\r\n");
    /* Report once Fill's action came back (the refusal is logged) or, if it
     * was wrongly made, after a while. */
    for (int t = 0; t < 100 && lua_world_count_log(w, "action result lost") == 0; t++)
        lua_world_run_for(w, 5);
    lua_world_inject(w, 0, "Event: UserEvent\r\nUserEvent: Report\r\n\r\n");
    expect_log(w, "msg=outcome later=Pong near_limit=\"nomem: the action's result could not be built", 1);
    assert_int_equal(lua_world_count_log(w, "msg=\"action result lost\""), 1);
    lua_world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(errors_do_not_cost_the_next_events),
        cmocka_unit_test(a_runaway_run_is_stopped_and_the_next_events_run),
        cmocka_unit_test(event_objects_outlive_their_run),
        cmocka_unit_test(a_handler_may_remove_itself),
        cmocka_unit_test(a_sole_handler_s_conditions_hold),
        cmocka_unit_test(several_candidates_all_run_in_order),
        cmocka_unit_test(a_hoarder_stays_within_its_memory_limit),
        cmocka_unit_test(an_action_result_near_the_limit_is_refused_not_made_past_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
