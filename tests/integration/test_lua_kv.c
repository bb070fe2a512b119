/* ami.kv against a real redis-server: each call yields until Redis answers;
 * keys live under the cluster's prefix; every bad argument (wrong type,
 * NaN, infinities, fractions, negatives, huge numbers, oversized keys and
 * values) is an error value, never a raised error or a command sent;
 * Redis down or paused gives not_connected / timeout; a coroutine
 * cancelled while it waits cancels its command. Without high
 * availability ami.kv says it is unavailable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "ha_world.h"

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Every script below reports with check(name, ok, detail) and ends with DONE. */
#define PRELUDE                                                                                      \
    "local ami = require 'ami'\n"                                                                    \
    "local function check(name, ok, detail)\n"                                                       \
    "  ami.log.info(ok and 'PASS' or 'FAIL', {name = name, detail = tostring(detail)})\n"            \
    "end\n"                                                                                          \
    "local function kind(err) return type(err) == 'string' and err:match('^([%w_]+):') end\n"

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

static void a_round_trip_of_every_operation(void **state)
{
    ha_world_t *hw = ha_world_new(NULL);
    lua_world_write(hw->w, "kv.lua", PRELUDE
        "ami.spawn(function()\n"
        "  check('get absent', ami.kv.get('a') == nil)\n"
        "  check('set', ami.kv.set('a', 'one') == true)\n"
        "  check('get', ami.kv.get('a') == 'one')\n"
        "  check('set nx refused', ami.kv.set('a', 'two', {nx = true}) == false)\n"
        "  check('nx kept', ami.kv.get('a') == 'one')\n"
        "  check('set nx new', ami.kv.set('b', 'x', {nx = true}) == true)\n"
        "  check('incr new', ami.kv.incr('n') == 1)\n"
        "  check('incr by', ami.kv.incr('n', 41) == 42)\n"
        "  check('incr down', ami.kv.incr('n', -2) == 40)\n"
        "  local v, err = ami.kv.incr('a')\n"
        "  check('incr text', v == nil and kind(err) == 'server', err)\n"
        "  check('number value', ami.kv.set('f', 2.5) and ami.kv.get('f') == '2.5')\n"
        "  local bin = 'a\\r\\nb\\0c'\n"
        "  check('binary value', ami.kv.set('bin', bin) and ami.kv.get('bin') == bin)\n"
        "  check('binary key', ami.kv.set('k\\r\\n\\0', 'v') and ami.kv.get('k\\r\\n\\0') == 'v')\n"
        "  check('empty value', ami.kv.set('e', '') and ami.kv.get('e') == '')\n"
        "  check('expire', ami.kv.expire('a', 100) == true)\n"
        "  check('expire absent', ami.kv.expire('zz', 100) == false)\n"
        "  check('ttl on set', ami.kv.set('t', 'x', {ttl_ms = 100}) == true)\n"
        "  ami.sleep(0.3)\n"
        "  check('expired', ami.kv.get('a') == nil and ami.kv.get('t') == nil)\n"
        "  check('del', ami.kv.del('b') == true)\n"
        "  check('del absent', ami.kv.del('b') == false)\n"
        "  ami.log.info('DONE')\n"
        "end)\n");
    lua_world_load(hw->w);
    expect_passes(hw->w, 20);
    char out[128];
    redis_server_cli(&hw->redis, out, sizeof out, L("GET", "ami:test:kv:n"));
    assert_string_equal(out, "40"); /* under the cluster's prefix, nowhere else */
    redis_server_cli(&hw->redis, out, sizeof out, L("EXISTS", "n"));
    assert_string_equal(out, "0");
    ha_world_free(hw);
}

static void bad_arguments_are_error_values_and_send_nothing(void **state)
{
    ha_world_t *hw = ha_world_new(NULL);
    lua_world_write(hw->w, "kv.lua", PRELUDE
        "local function invalid(name, v, err) check(name, v == nil and kind(err) == 'invalid', err) end\n"
        "ami.spawn(function()\n"
        "  invalid('incr NaN', ami.kv.incr('n', 0/0))\n"
        "  invalid('incr inf', ami.kv.incr('n', 1/0))\n"
        "  invalid('incr -inf', ami.kv.incr('n', -1/0))\n"
        "  invalid('incr fraction', ami.kv.incr('n', 1.5))\n"
        "  invalid('incr huge', ami.kv.incr('n', 2^60))\n"
        "  invalid('incr string', ami.kv.incr('n', '5'))\n"
        "  invalid('expire negative', ami.kv.expire('n', -1))\n"
        "  invalid('expire zero', ami.kv.expire('n', 0))\n"
        "  invalid('expire fraction', ami.kv.expire('n', 0.5))\n"
        "  invalid('expire huge', ami.kv.expire('n', 1e300))\n"
        "  invalid('expire missing', ami.kv.expire('n'))\n"
        "  invalid('ttl negative', ami.kv.set('n', 'v', {ttl_ms = -5}))\n"
        "  invalid('ttl NaN', ami.kv.set('n', 'v', {ttl_ms = 0/0}))\n"
        "  invalid('opts type', ami.kv.set('n', 'v', 'fast'))\n"
        "  invalid('nx type', ami.kv.set('n', 'v', {nx = 'yes'}))\n"
        "  invalid('value NaN', ami.kv.set('n', 0/0))\n"
        "  invalid('value inf', ami.kv.set('n', 1/0))\n"
        "  invalid('value table', ami.kv.set('n', {}))\n"
        "  invalid('value nil', ami.kv.set('n'))\n"
        "  invalid('key number', ami.kv.get(5))\n"
        "  invalid('key table', ami.kv.get({}))\n"
        "  invalid('key nil', ami.kv.get())\n"
        "  invalid('key empty', ami.kv.get(''))\n"
        "  invalid('key 60 KB', ami.kv.get(string.rep('k', 60000)))\n"
        "  local v, err = ami.kv.set('big', string.rep('v', 70000))\n"
        "  check('value over the limit', v == nil and kind(err) == 'limit', err)\n"
        "  check('nothing was stored', ami.kv.get('n') == nil)\n"
        "  ami.log.info('DONE')\n"
        "end)\n");
    lua_world_load(hw->w);
    expect_passes(hw->w, 26);
    assert_int_equal(lua_world_count_log(hw->w, "handler failed"), 0);
    ha_world_free(hw);
}

static void at_a_scripts_top_level_it_says_where_to_call_it(void **state)
{
    ha_world_t *hw = ha_world_new(NULL);
    lua_world_write(hw->w, "kv.lua", PRELUDE
        "local ok, err = pcall(ami.kv.get, 'a')\n"
        "check('top level', not ok and tostring(err):find('must be called from a handler', 1, true), err)\n"
        "ami.log.info('DONE')\n");
    lua_world_load(hw->w);
    expect_passes(hw->w, 1);
    ha_world_free(hw);
}

static void redis_down_or_paused_gives_an_error_value(void **state)
{
    ha_world_t *hw = ha_world_new(NULL);
    redis_server_pause(&hw->redis);
    lua_world_write(hw->w, "kv.lua", PRELUDE
        "ami.spawn(function()\n"
        "  local t0 = ami.now()\n"
        "  local v, err = ami.kv.get('a')\n"
        "  check('paused: timeout', v == nil and kind(err) == 'timeout', err)\n"
        "  v, err = ami.kv.get('a')\n"
        "  check('dropped link: not connected at once', v == nil and kind(err) == 'not_connected', err)\n"
        "  ami.log.info('DONE')\n"
        "end)\n");
    lua_world_load(hw->w);
    expect_passes(hw->w, 2);
    redis_server_resume(&hw->redis);
    ha_world_free(hw);
}

static void a_cancelled_coroutine_cancels_its_command(void **state)
{
    ha_world_t *hw = ha_world_new(NULL);
    redis_server_pause(&hw->redis);
    lua_world_write(hw->w, "kv.lua", PRELUDE
        "ami.spawn(function()\n"
        "  ami.log.info('WAITING')\n"
        "  ami.kv.get('a')\n"
        "  ami.log.info('RESUMED')\n"
        "end)\n");
    lua_world_load(hw->w);
    assert_true(lua_world_wait_log(hw->w, "msg=WAITING", 1, 3000));
    ami_lua_runtime_shutdown(hw->w->rt); /* cancels the waiting coroutine */
    lua_world_run_for(hw->w, 500);         /* the timeout fires: nobody may be resumed */
    redis_server_resume(&hw->redis);
    lua_world_run_for(hw->w, 200);
    assert_int_equal(lua_world_count_log(hw->w, "msg=RESUMED"), 0);
    ha_world_free(hw);
}

static void without_high_availability_kv_is_unavailable(void **state)
{
    lua_world_t *w = lua_world_new(NULL);
    lua_world_write(w, "kv.lua", PRELUDE
        "ami.spawn(function()\n"
        "  local v, err = ami.kv.get('a')\n"
        "  check('unavailable', v == nil and kind(err) == 'unavailable', err)\n"
        "  check('owned without ha', ami.server('pbx1').owned == true and ami.server('pbx1').epoch == nil)\n"
        "  ami.log.info('DONE')\n"
        "end)\n");
    lua_world_load(w);
    expect_passes(w, 2);
    lua_world_free(w);
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
        cmocka_unit_test_teardown(a_round_trip_of_every_operation, kill_leftovers),
        cmocka_unit_test_teardown(bad_arguments_are_error_values_and_send_nothing, kill_leftovers),
        cmocka_unit_test_teardown(at_a_scripts_top_level_it_says_where_to_call_it, kill_leftovers),
        cmocka_unit_test_teardown(redis_down_or_paused_gives_an_error_value, kill_leftovers),
        cmocka_unit_test_teardown(a_cancelled_coroutine_cancels_its_command, kill_leftovers),
        cmocka_unit_test_teardown(without_high_availability_kv_is_unavailable, kill_leftovers),
    };
    if (getenv("AMI_TEST_FILTER")) /* run one: AMI_TEST_FILTER=name* */
        cmocka_set_test_filter(getenv("AMI_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
