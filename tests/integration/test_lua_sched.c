/* Spawned work progresses under any load: ami.spawn and ami.every run while
 * an event flood keeps the loop busy every iteration, fairly against the
 * handlers of the flood's events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lua_world.h"

static void spawned_and_periodic_work_runs_during_an_event_flood(void **state)
{
    (void)state;
    alarm(60);
    lua_world_options_t opt = {.budget_ms = 200};
    lua_world_t *w = lua_world_new(&opt);
    lua_world_write(w, "busy.lua",
                    "local seen = 0\n"
                    "ami.on('*', function(ev) seen = seen + 1; local x = ev.Channel end)\n"
                    "local spawned, ticks = 0, 0\n"
                    "local function chain() spawned = spawned + 1; ami.spawn(chain) end\n"
                    "ami.on({Event = 'UserEvent', UserEvent = 'Start'}, function()\n"
                    "  ami.spawn(chain)\n"
                    "  ami.every(0.05, function() ticks = ticks + 1 end)\n"
                    "end)\n"
                    "ami.on({Event = 'UserEvent', UserEvent = 'Report'}, function()\n"
                    "  ami.log.info('progress', {spawned = spawned, ticks = ticks, seen = seen})\n"
                    "end)\n");
    lua_world_load(w);
    ami_sim_faults_t flood = {.flood_events_per_sec = -1};
    ami_sim_node_set_faults(w->nodes[0], &flood);
    lua_world_run_for(w, 300);
    lua_world_inject(w, 0, "Event: UserEvent\r\nUserEvent: Start\r\n\r\n");
    lua_world_run_for(w, 1000);
    lua_world_inject(w, 0, "Event: UserEvent\r\nUserEvent: Report\r\n\r\n");
    if (!lua_world_wait_log(w, "msg=progress", 1, 10000))
        fail_msg("no report. Log:\n%s", log_capture_text(&w->lines));
    int spawned = 0, ticks = 0;
    long seen = 0;
    const char *line = strstr(log_capture_text(&w->lines), "msg=progress");
    assert_int_equal(sscanf(line, "msg=progress seen=%ld spawned=%d ticks=%d", &seen, &spawned, &ticks), 3);
    print_message("in ~1 s of flood: %ld events handled, %d spawned runs, %d periodic runs\n", seen, spawned,
                  ticks);
    assert_true(seen > 10000);   /* the flood really kept the loop busy */
    assert_true(spawned > 100);  /* a spawn chain progresses every iteration */
    assert_true(ticks >= 5);     /* ami.every started and ticks (every 50 ms) */
    ami_sim_faults_t calm = {0};
    ami_sim_node_set_faults(w->nodes[0], &calm);
    lua_world_free(w);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spawned_and_periodic_work_runs_during_an_event_flood),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
