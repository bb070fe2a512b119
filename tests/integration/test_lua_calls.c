/*
 * ami.channels / ami.channel / ami.calls from scripts run by the runtime:
 * handlers see the table already updated by the event they handle, every
 * argument a script can pass is checked, the objects cannot be changed or
 * forged, and without a call state the functions answer an error value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "lua_world.h"

static lua_world_t *world_with(const char *script, bool callstate)
{
    lua_world_options_t opt = {.nodes = 1, .callstate = callstate};
    lua_world_t *w = lua_world_new(&opt);
    lua_world_write(w, "test.lua", script);
    lua_world_load(w);
    return w;
}

static void expect_log(lua_world_t *w, const char *needle, int count)
{
    if (!lua_world_wait_log(w, needle, count, 5000))
        fail_msg("log never held \"%s\" %d times (has %d). Log:\n%s", needle, count,
                 lua_world_count_log(w, needle), log_capture_text(&w->lines));
}

/* Handlers registered by name and for "*", in both orders: each checks the
 * table against its own event. */
static const char ORDER_SCRIPT[] =
    "local function check(ev)\n"
    "  local name = ev:name()\n"
    "  local ch = ami.channel(ev.server, ev.Uniqueid)\n"
    "  if name == 'Newchannel' or name == 'Newstate' or name == 'Newexten' then\n"
    "    local ok = ch and ch.channel == ev.Channel and ch.state == tonumber(ev.ChannelState)\n"
    "                  and ch.priority == tonumber(ev.Priority)\n"
    "    ami.log.info(ok and 'order-ok' or 'order-bad', {ev = name, uid = ev.Uniqueid})\n"
    "  elseif name == 'Hangup' then\n"
    "    local listed = false\n"
    "    for _, c in ipairs(ami.channels(ev.server)) do listed = listed or c.uniqueid == ev.Uniqueid end\n"
    "    local ok = not listed and ch and ch.hangup_cause == tonumber(ev.Cause)\n"
    "    ami.log.info(ok and 'order-ok' or 'order-bad', {ev = name, uid = ev.Uniqueid})\n"
    "  end\n"
    "end\n"
    "ami.on('*', check)\n"
    "for _, n in ipairs({'Newchannel', 'Newstate', 'Newexten', 'Hangup'}) do ami.on(n, check) end\n";

static bool synced(void *ud)
{
    return ami_callstate_synced(((lua_world_t *)ud)->cs, 0);
}

static void handlers_see_the_table_updated_by_their_event(void **state)
{
    (void)state;
    lua_world_t *w = world_with(ORDER_SCRIPT, true);
    /* made after the login: rebuilt at once, not at the next login */
    assert_true(harness_run_until(w->loop, synced, w, 3000));
    ami_sim_node_set_call_rate(w->nodes[0], 30);
    expect_log(w, "msg=order-ok ev=Hangup", 20);
    ami_sim_node_set_call_rate(w->nodes[0], 0);
    print_message("%d checks ok\n", lua_world_count_log(w, "msg=order-ok"));
    assert_true(lua_world_count_log(w, "msg=order-ok ev=Newchannel") >= 20);
    assert_true(lua_world_count_log(w, "msg=order-ok ev=Newstate") >= 20);
    assert_int_equal(lua_world_count_log(w, "msg=order-bad"), 0);
    lua_world_free(w);
}

/* Each line: a label and an expression whose error (pcall) must contain a text. */
static const char HOSTILE_SCRIPT[] =
    "local function expect(label, text, f, ...)\n"
    "  local ok, err = pcall(f, ...)\n"
    "  if ok then ami.log.info('hostile-bad', {label = label, why = 'no error'}) return end\n"
    "  if not tostring(err):find(text, 1, true) then\n"
    "    ami.log.info('hostile-bad', {label = label, why = tostring(err)}) return end\n"
    "  ami.log.info('hostile-ok', {label = label})\n"
    "end\n"
    "ami.on('Newchannel', function(ev)\n"
    "  local ch = ami.channel(ev.server, ev.Uniqueid)\n"
    "  expect('server nil', 'string expected', ami.channels, nil)\n"
    "  expect('server table', 'string expected', ami.channel, {}, 'x')\n"
    "  expect('id missing', 'string expected', ami.channel, 'pbx1')\n"
    "  expect('calls bad', 'string expected', ami.calls, function() end)\n"
    "  expect('filter type', 'table expected', ami.channels, 'pbx1', 'Up')\n"
    "  expect('filter key', 'filter keys are', ami.channels, 'pbx1', {nope = 1})\n"
    "  expect('filter server', 'filter keys are', ami.channels, 'pbx1', {server = 'pbx1'})\n"
    "  expect('filter index', 'filter keys are', ami.channels, 'pbx1', {'Up'})\n"
    "  expect('filter number', 'must be numbers', ami.channels, 'pbx1', {state = '6'})\n"
    "  expect('filter string', 'must be strings', ami.channels, 'pbx1', {linkedid = 5})\n"
    "  expect('filter many', 'at most 8', ami.channels, 'pbx1', {channel = 'a', uniqueid = 'a', linkedid = 'a',\n"
    "    context = 'a', exten = 'a', state_desc = 'a', caller_num = 'a', caller_name = 'a', language = 'a'})\n"
    "  expect('unknown field', \"no field 'chanel'\", function() return ch.chanel end)\n"
    "  expect('number key', 'no field', function() return ch[1] end)\n"
    "  expect('write', 'read-only', function() ch.channel = 'x' end)\n"
    "  expect('totable on an event', 'ami.channel expected', ch.totable, ev)\n"
    "  expect('var on a string', 'ami.channel expected', ch.var, 'x', 'CALLTAG')\n"
    "  expect('var untracked', 'is not tracked', ch.var, ch, 'NOT_TRACKED')\n"
    "  expect('var name type', 'string expected', ch.var, ch, {})\n"
    "  expect('setmetatable', 'table expected', setmetatable, ch, {})\n"
    "  local mt = getmetatable(ch)\n"
    "  ami.log.info(mt == 'ami.channel' and 'hostile-ok' or 'hostile-bad', {label = 'locked'})\n"
    "  local huge = string.rep('x', 60000) .. '\\0' .. '\\r\\n'\n"
    "  ami.log.info(ami.channel('pbx1', huge) == nil and #ami.channels('pbx1', {channel = huge}) == 0\n"
    "    and 'hostile-ok' or 'hostile-bad', {label = 'huge'})\n"
    "  local none, err = ami.channels('nope')\n"
    "  ami.log.info(none == nil and err:find('^unknown_server: no server named \"nope\"') and 'hostile-ok'\n"
    "    or 'hostile-bad', {label = 'unknown server'})\n"
    "  ami.log.info('hostile-done')\n"
    "end)\n";

static void every_argument_is_checked_and_objects_cannot_be_forged(void **state)
{
    (void)state;
    lua_world_t *w = world_with(HOSTILE_SCRIPT, true);
    ami_sim_node_set_call_rate(w->nodes[0], 5);
    expect_log(w, "msg=hostile-done", 1);
    ami_sim_node_set_call_rate(w->nodes[0], 0);
    const char *bad = strstr(log_capture_text(&w->lines), "msg=hostile-bad");
    if (bad)
        fail_msg("a hostile case was not refused: %.300s", bad);
    assert_true(lua_world_count_log(w, "msg=hostile-ok") >= 22);
    lua_world_free(w);
}

static void without_a_call_state_the_functions_answer_an_error(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local chans, err = ami.channels('pbx1')\n"
        "ami.log.info('off', {enabled = ami.callstate, chans = tostring(chans), err = err})\n"
        "local ch, err2 = ami.channel('pbx1', 'x')\n"
        "local calls, err3 = ami.calls('pbx1')\n"
        "ami.log.info('off2', {same = err == err2 and err == err3, none = ch == nil and calls == nil})\n",
        false);
    expect_log(w, "msg=off chans=nil enabled=false err=\"config: the call state is off; add callstate = {} "
                  "to the engine config\"", 1);
    expect_log(w, "msg=off2 none=true same=true", 1);
    lua_world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handlers_see_the_table_updated_by_their_event),
        cmocka_unit_test(every_argument_is_checked_and_objects_cannot_be_forged),
        cmocka_unit_test(without_a_call_state_the_functions_answer_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
