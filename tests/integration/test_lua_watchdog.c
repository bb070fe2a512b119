/* A loop no script can block: runaway handlers are stopped by the watchdog,
 * interpreted or hot, and everything else keeps being served. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "lua_world.h"
#include "util/clock.h"

#define USER_EVENT(name) "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: " name "\r\n\r\n"

static void expect_log(lua_world_t *w, const char *needle, int count)
{
    if (!lua_world_wait_log(w, needle, count, 5000))
        fail_msg("log never held \"%s\" %d times (has %d). Log:\n%s", needle, count,
                 lua_world_count_log(w, needle), log_capture_text(&w->lines));
}

static lua_world_t *world_with(const char *runaway)
{
    lua_world_options_t opt = {.budget_ms = 30};
    lua_world_t *w = lua_world_new(&opt);
    char script[1024];
    snprintf(script, sizeof script,
             "ami.on({Event = 'UserEvent', UserEvent = 'Runaway'}, function(ev)\n"
             "  %s\n"
             "end)\n"
             "ami.on({Event = 'UserEvent', UserEvent = 'Fine'}, function(ev)\n"
             "  local r = ami.action('pbx1', 'Ping')\n"
             "  ami.log.info('fine', {ping = r and r.Ping})\n"
             "end)\n",
             runaway);
    lua_world_write(w, "runaway.lua", script);
    lua_world_load(w);
    return w;
}

static void run_and_expect_kill(const char *runaway, const char *line_hint)
{
    lua_world_t *w = world_with(runaway);
    int64_t t0 = ami_now_ms();
    lua_world_inject(w, 0, USER_EVENT("Runaway"));
    lua_world_inject(w, 0, USER_EVENT("Fine"));
    expect_log(w, "handler stopped by the watchdog", 1);
    int64_t took = ami_now_ms() - t0;
    expect_log(w, "msg=fine ping=Pong", 1);
    assert_int_equal(lua_world_count_log(w, "without yielding (budget 30 ms)"), 1);
    assert_int_equal(lua_world_count_log(w, line_hint), 1);
    assert_true(lua_world_metric(w, "ami_lua_handler_kills_total", NULL) == 1.0);
    /* The engine goes on: another runaway and another fine event later. */
    lua_world_inject(w, 0, USER_EVENT("Runaway"));
    lua_world_inject(w, 0, USER_EVENT("Fine"));
    expect_log(w, "msg=fine ping=Pong", 2);
    assert_true(lua_world_metric(w, "ami_lua_handler_kills_total", NULL) == 2.0);
    print_message("stopped after %lld ms (budget 30 ms)\n", (long long)took);
    lua_world_free(w);
}

static void interpreted_endless_loop_is_stopped(void **state)
{
    (void)state;
    run_and_expect_kill("while true do end", "runaway.lua:2");
}

static void hot_arithmetic_loop_is_stopped(void **state)
{
    (void)state;
    /* The loop LuaJIT would compile to a trace if the JIT were on. */
    run_and_expect_kill("local x = 0 while true do x = x + 1 end", "runaway.lua:2");
}

static void runaway_that_catches_errors_is_still_stopped(void **state)
{
    (void)state;
    run_and_expect_kill("while true do pcall(function() while true do end end) end", "runaway.lua:2");
}

static void runaway_in_a_called_function_reports_its_line(void **state)
{
    (void)state;
    lua_world_options_t opt = {.budget_ms = 30};
    lua_world_t *w = lua_world_new(&opt);
    lua_world_write(w, "deep.lua",
                    "local function spin(n)\n"
                    "  while n > 0 do n = n + 1 end\n"
                    "end\n"
                    "ami.on('UserEvent', function(ev) spin(1) end)\n");
    lua_world_load(w);
    lua_world_inject(w, 0, USER_EVENT("Runaway"));
    expect_log(w, "handler stopped by the watchdog", 1);
    assert_true(lua_world_count_log(w, "deep.lua:2") >= 1);
    assert_int_equal(lua_world_count_log(w, "in function 'spin'"), 1); /* the traceback */
    lua_world_free(w);
}

static void runaway_top_level_fails_the_load(void **state)
{
    (void)state;
    lua_world_t *w = lua_world_new(NULL);
    lua_world_write(w, "spin.lua", "while true do end\n");
    ami_err_t err;
    int64_t t0 = ami_now_ms();
    assert_int_equal(ami_lua_runtime_load(w->rt, &err), -1);
    assert_non_null(strstr(err.msg, "spin.lua:1"));
    assert_non_null(strstr(err.msg, "without yielding"));
    print_message("load stopped after %lld ms (load budget 2000 ms)\n", (long long)(ami_now_ms() - t0));
    lua_world_free(w);
}

static void short_handlers_are_never_stopped(void **state)
{
    (void)state;
    lua_world_options_t opt = {.budget_ms = 30};
    lua_world_t *w = lua_world_new(&opt);
    lua_world_write(w, "ok.lua",
                    "ami.on('UserEvent', function(ev)\n"
                    "  local t = {} for i = 1, 2000 do t[i] = i * 2 end\n"
                    "  ami.sleep(0.05)\n" /* time spent waiting does not count */
                    "  for i = 1, 2000 do t[i] = t[i] + 1 end\n"
                    "  ami.log.info('done')\n"
                    "end)\n");
    lua_world_load(w);
    for (int i = 0; i < 50; i++)
        lua_world_inject(w, 0, USER_EVENT("Fine"));
    expect_log(w, "msg=done", 50);
    assert_true(lua_world_metric(w, "ami_lua_handler_kills_total", NULL) == 0.0);
    lua_world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(interpreted_endless_loop_is_stopped),
        cmocka_unit_test(hot_arithmetic_loop_is_stopped),
        cmocka_unit_test(runaway_that_catches_errors_is_still_stopped),
        cmocka_unit_test(runaway_in_a_called_function_reports_its_line),
        cmocka_unit_test(runaway_top_level_fails_the_load),
        cmocka_unit_test(short_handlers_are_never_stopped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
