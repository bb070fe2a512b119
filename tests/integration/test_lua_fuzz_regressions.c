/* Regressions found by the fuzz targets (tests/fuzz), one test each, in a
 * whole engine (tests/support/lua_world.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_world.h"
#include "sim/sim.h"

static void on_guard(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    *(bool *)t->data = true;
    ev_break(loop, EVBREAK_ONE);
}

/* Like lua_world_wait_log, but nothing of the test's own wakes the loop
 * before ms (harness_run_until ticks every 5 ms, which would hide a loop
 * that blocks with work still to do). */
static bool wait_log_untouched(lua_world_t *w, const char *needle, int count, uint32_t ms)
{
    bool expired = false;
    ev_timer guard;
    ev_timer_init(&guard, on_guard, ms / 1000.0, 0.);
    guard.data = &expired;
    ev_timer_start(w->loop, &guard);
    while (!expired && lua_world_count_log(w, needle) < count)
        ev_run(w->loop, EVRUN_ONCE);
    ev_timer_stop(w->loop, &guard);
    return lua_world_count_log(w, needle) >= count;
}

/* fuzz_lua_api: a coroutine started from the run queue (ami.spawn, a tool's
 * chunk) queued its action's bytes from inside libev's prepare phase, where
 * the transport's flush hook (itself a prepare watcher) no longer runs, and
 * the run queue then let the loop block: the action sat unsent until
 * something else woke the loop (a heartbeat, here its own timeout). */
static void an_action_from_a_spawned_coroutine_goes_out_at_once_on_an_idle_loop(void **state)
{
    (void)state;
    lua_world_options_t opt = {.no_heartbeat = true};
    lua_world_t *w = lua_world_new(&opt);
    lua_world_write(w, "spawn.lua",
                    "ami.spawn(function()\n"
                    "  for i = 1, 3 do\n"
                    "    local r, err = ami.action('pbx1', 'Ping', nil, {timeout = 1500})\n"
                    "    ami.log.info(r and 'pong' or ('failed: ' .. err), {i = i})\n"
                    "    ami.spawn(function() end) -- the queue runs again: each round starts from it\n"
                    "    ami.sleep(0)\n"
                    "  end\n"
                    "end)\n");
    lua_world_load(w);
    assert_true(wait_log_untouched(w, "i=3", 1, 10000));
    assert_int_equal(lua_world_count_log(w, "msg=pong"), 3);
    assert_int_equal(lua_world_count_log(w, "failed"), 0);
    lua_world_free(w);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    fclose(f);
    return kib;
}

/* fuzz_lua_api (out of memory after a few thousand inputs): LuaJIT destroys
 * a state's allocator arena on lua_close only if the state still uses that
 * allocator, and scripts' states use a wrapper (for their memory limit), so
 * every closed state left its arena mapped: each reload leaked the memory of
 * every script. Invisible to the sanitizers (the arenas are mmap'd). */
static void reloads_give_back_the_memory_of_closed_script_states(void **state)
{
    (void)state;
    lua_world_t *w = lua_world_new(NULL);
    lua_world_write(w, "big.lua", "local t = {}\n"
                                  "for i = 1, 20000 do t[i] = {i, tostring(i)} end\n"
                                  "ami.on('Hangup', function() return #t end)\n");
    lua_world_load(w);
    for (int i = 0; i < 5; i++) /* warm up: the allocator's steady state */
        assert_int_equal(ami_lua_runtime_reload(w->rt, "test", NULL), 0);
    lua_world_run_for(w, 50);
    long before = rss_kib();
    for (int i = 0; i < 60; i++) {
        assert_int_equal(ami_lua_runtime_reload(w->rt, "test", NULL), 0);
        lua_world_run_for(w, 2);
    }
    long grown = rss_kib() - before;
    print_message("RSS after 60 reloads: %+ld KiB\n", grown);
    assert_true(grown < 16 * 1024);
    lua_world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_action_from_a_spawned_coroutine_goes_out_at_once_on_an_idle_loop),
        cmocka_unit_test(reloads_give_back_the_memory_of_closed_script_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
