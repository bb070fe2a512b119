/* Scripts cannot hurt the engine: what a hostile (or merely buggy) script
 * author tries, each against a real engine and simulator on loopback. Every
 * test is guarded by alarm(): a regression that hangs the loop fails here
 * instead of blocking the suite; one that crashes it fails as a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua/lua_types.h" /* each script's state, to check its stack is left as found */
#include "lua_world.h"

#define USER_EVENT(name) "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: " name "\r\n\r\n"
#define GUARD_SECONDS 60

static void expect_log(lua_world_t *w, const char *needle, int count)
{
    if (!lua_world_wait_log(w, needle, count, 8000))
        fail_msg("log never held \"%s\" %d times (has %d). Log:\n%s", needle, count,
                 lua_world_count_log(w, needle), log_capture_text(&w->lines));
}

static lua_world_t *world_opts(const lua_world_options_t *opt, const char *name, const char *script)
{
    alarm(GUARD_SECONDS);
    lua_world_t *w = lua_world_new(opt);
    lua_world_write(w, name, script);
    lua_world_load(w);
    return w;
}

static lua_world_t *world_with(const char *script)
{
    lua_world_options_t opt = {.budget_ms = 30};
    return world_opts(&opt, "hostile.lua", script);
}

/* The engine still serves: a handler that waits for a real answer runs. */
static const char FINE[] =
    "ami.on({Event = 'UserEvent', UserEvent = 'Fine'}, function(ev)\n"
    "  local r = ami.action('pbx1', 'Ping')\n"
    "  ami.log.info('fine', {ping = r and r.Ping})\n"
    "end)\n";

static void expect_engine_serves(lua_world_t *w, int times)
{
    lua_world_inject(w, 0, USER_EVENT("Fine"));
    expect_log(w, "msg=fine ping=Pong", times);
}

static void finish(lua_world_t *w)
{
    lua_world_free(w);
    alarm(0);
}

/* ---- 1. memory safety ------------------------------------------------------------ */

static void metatables_taken_with_getmetatable_cannot_crash_the_engine(void **state)
{
    (void)state;
    char script[4096];
    snprintf(script, sizeof script, "%s%s", FINE,
             "ami.on({Event = 'UserEvent', UserEvent = 'Go'}, function(ev)\n"
             "  local res = ami.action('pbx1', 'Ping')\n"
             "  local objects = {pattern = ami.pattern('x'), result = res, event = ev, io = io,\n"
             "    counter = ami.metrics.counter('hostile_total'), string = string, ami = ami,\n"
             "    log = ami.log, os = os, coroutine = coroutine, table = table, G = _G}\n"
             "  local tables = 0\n"
             "  for name, o in pairs(objects) do\n"
             "    local mt = getmetatable(o)\n"
             "    if type(mt) == 'table' then tables = tables + 1; ami.log.info('open metatable', {name = name}) end\n"
             "  end\n"
             "  local crashes = {\n"
             "    function() return getmetatable(ami.pattern('x')).__tostring(12345.678) end,\n"
             "    function() return getmetatable(res).__index(1.2345e-300, 'final') end,\n"
             "    function() return ev.get(12345.678, 'x') end,\n"
             "    function() return ev.all(res, 'x') end,\n"
             "    function() return ev.totable(ami.pattern('y')) end,\n"
             "    function() return ev.headers(io) end,\n"
             "    function() return res.totable(42) end,\n"
             "    function() return res.get(ev, 'Ping') end,\n"
             "    function() return objects.counter.inc(io) end,\n"
             "    function() return objects.counter.inc(ev, 1) end,\n"
             "    function() return tostring(io), io.read() end,\n"
             "  }\n"
             "  local failed = 0\n"
             "  for _, f in ipairs(crashes) do if not pcall(f) then failed = failed + 1 end end\n"
             "  ami.log.info('survived', {open = tables, failed = failed, total = #crashes})\n"
             "end)\n");
    lua_world_t *w = world_with(script);
    lua_world_inject(w, 0, USER_EVENT("Go"));
    expect_log(w, "msg=survived", 1);
    assert_int_equal(lua_world_count_log(w, "open metatable"), 0);
    /* Every call with a foreign first argument fails cleanly. */
    assert_int_equal(lua_world_count_log(w, "msg=survived failed=11 open=0 total=11"), 1);
    expect_engine_serves(w, 1);
    finish(w);
}

/* ---- 2. the watchdog without holes ----------------------------------------------- */

static void run_runaway(const char *body, const char *hint)
{
    char script[4096];
    snprintf(script, sizeof script,
             "%sami.on({Event = 'UserEvent', UserEvent = 'Runaway'}, function(ev)\n%s\nend)\n", FINE, body);
    lua_world_t *w = world_with(script);
    lua_world_inject(w, 0, USER_EVENT("Runaway"));
    expect_log(w, "handler stopped by the watchdog", 1);
    if (hint)
        assert_true(lua_world_count_log(w, hint) >= 1);
    expect_engine_serves(w, 1);
    lua_world_inject(w, 0, USER_EVENT("Runaway"));
    expect_log(w, "handler stopped by the watchdog", 2);
    expect_engine_serves(w, 2);
    finish(w);
}

static void xpcall_message_handler_cannot_outlive_the_watchdog(void **state)
{
    (void)state;
    run_runaway("xpcall(function() while true do end end, function() while true do end end)", NULL);
}

static void nested_message_handlers_and_coroutines_are_stopped(void **state)
{
    (void)state;
    run_runaway("local inner = coroutine.wrap(function()\n"
                "  return xpcall(function() error('x') end, function(e)\n"
                "    return pcall(function() while true do end end)\n"
                "  end)\n"
                "end)\n"
                "while true do pcall(inner) end",
                NULL);
}

static void runaway_metamethods_and_iterators_are_stopped(void **state)
{
    (void)state;
    run_runaway("local t = setmetatable({}, {__index = function(t, k) while true do end end})\n"
                "local ok = pcall(function() return t.x end)\n"
                "for _ in function() return true end do end",
                NULL);
}

static void runaway_tostring_called_from_c_is_stopped(void **state)
{
    (void)state;
    run_runaway("local t = setmetatable({}, {__tostring = function() while true do end end})\n"
                "ami.log.info(t)",
                NULL);
}

static void a_newproxy_finalizer_is_not_available(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.log.info('gc', {newproxy = type(newproxy), collect = pcall(collectgarbage, 'collect')})\n");
    expect_log(w, "msg=gc collect=false newproxy=nil", 1);
    finish(w);
}

static void runaway_top_level_on_reload_keeps_the_running_scripts(void **state)
{
    (void)state;
    lua_world_options_t opt = {.budget_ms = 30};
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.load_budget_ms = 200;
    opt.lua = &lc;
    lua_world_t *w = world_opts(&opt, "a_fine.lua", FINE);
    lua_world_write(w, "b_bad.lua", "xpcall(function() while true do end end, function() while true do end end)\n");
    ami_err_t err;
    assert_int_equal(ami_lua_runtime_reload(w->rt, "test", &err), -1);
    assert_non_null(strstr(err.msg, "without yielding"));
    expect_engine_serves(w, 1);
    finish(w);
}

/* ---- 3. numbers ------------------------------------------------------------------- */

static void nan_infinite_negative_and_fractional_numbers_are_error_values(void **state)
{
    (void)state;
    char script[4096];
    snprintf(script, sizeof script, "%s%s", FINE,
             "ami.on({Event = 'UserEvent', UserEvent = 'Go'}, function(ev)\n"
             "  local bad = {0/0, 1/0, -1/0, -1, 1e300}\n"
             "  local n = 0\n"
             "  for _, v in ipairs(bad) do\n"
             "    local a, e1 = ami.sleep(v)\n"
             "    local b, e2 = ami.wait_for('Nothing', v)\n"
             "    local c, e3 = ami.action('pbx1', 'Ping', nil, {timeout = v})\n"
             "    local d, e4 = ami.every(v, function() end)\n"
             "    for _, e in ipairs({e1, e2, e3, e4}) do\n"
             "      if type(e) == 'string' and e:find('^invalid: ') then n = n + 1 end\n"
             "    end\n"
             "  end\n"
             "  local c, e5 = ami.action('pbx1', 'Ping', nil, {timeout = 1.5})\n"
             "  if e5 and e5:find('integer') then n = n + 1 end\n"
             "  local _, e6 = ami.sleep(0/0)\n"
             "  ami.log.info('numbers', {refused = n, sample = e6})\n"
             "  ami.sleep(0.05)\n"
             "  ami.log.info('timers still run')\n"
             "end)\n");
    lua_world_t *w = world_with(script);
    lua_world_inject(w, 0, USER_EVENT("Go"));
    expect_log(w, "msg=\"timers still run\"", 1);
    assert_int_equal(lua_world_count_log(w, "msg=numbers refused=21"), 1);
    assert_int_equal(lua_world_count_log(w, "ami.sleep: seconds must be a finite number from 0 to 31536000 "
                                            "(seconds), got nan"), 1);
    /* Heartbeats (200 ms) and action timeouts still work: the timer heap is intact. */
    uint64_t before = ami_sim_node_stats(w->nodes[0]).pings_answered;
    lua_world_run_for(w, 700);
    assert_true(ami_sim_node_stats(w->nodes[0]).pings_answered >= before + 2);
    expect_engine_serves(w, 1);
    finish(w);
}

/* ---- 4. the engine's coroutines -------------------------------------------------- */

static void a_saved_coroutine_cannot_be_resumed_with_a_fake_result(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local saved\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'A'}, function(ev)\n"
        "  saved = coroutine.running()\n"
        "  local r = ami.action('pbx1', 'Ping')\n"
        "  ami.log.info('A got', {ping = r and r.Ping})\n"
        "end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'B'}, function(ev)\n"
        "  local ok, err = coroutine.resume(saved, {Ping = 'Fake'})\n"
        "  ami.log.info('B resumed', {ok = ok, err = err})\n"
        "  local ok2, err2 = pcall(coroutine.wrap, saved)\n"
        "  ami.log.info('B wrapped', {ok = ok2})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A") USER_EVENT("B"));
    expect_log(w, "msg=\"A got\" ping=Pong", 1);
    expect_log(w, "msg=\"B resumed\"", 1);
    assert_int_equal(lua_world_count_log(w, "cannot resume this coroutine: it is the engine's"), 1);
    assert_int_equal(lua_world_count_log(w, "ok=false"), 2);
    assert_int_equal(lua_world_count_log(w, "Fake"), 0);
    finish(w);
}

static void a_saved_pooled_coroutine_cannot_be_resumed_later(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local saved\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Save'}, function(ev) saved = coroutine.running() end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Wait'}, function(ev)\n"
        "  ami.sleep(0.1)\n"
        "  ami.log.info('waiter woke', {same = coroutine.running() == saved})\n"
        "end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Poke'}, function(ev)\n"
        "  for i = 1, 3 do ami.log.info('poke', {ok = coroutine.resume(saved)}) end\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("Save"));
    lua_world_run_for(w, 50);
    lua_world_inject(w, 0, USER_EVENT("Wait"));
    lua_world_run_for(w, 20);
    lua_world_inject(w, 0, USER_EVENT("Poke"));
    expect_log(w, "msg=\"waiter woke\"", 1);
    assert_int_equal(lua_world_count_log(w, "msg=poke ok=false"), 3);
    assert_int_equal(lua_world_count_log(w, "handler failed"), 0);
    finish(w);
}

/* ---- 5. hostile values from the network -------------------------------------- */

static void a_pathological_filter_pattern_against_a_huge_value_is_abandoned(void **state)
{
    (void)state;
    char script[2048];
    snprintf(script, sizeof script, "%s%s", FINE,
             "ami.on({Event = 'UserEvent', Data = ami.pattern('(.*)@(.*)')}, function(ev)\n"
             "  ami.log.info('matched', {len = #ev.Data})\n"
             "end)\n");
    lua_world_t *w = world_with(script);
    static char ev[61000];
    int n = snprintf(ev, sizeof ev, "Event: UserEvent\r\nUserEvent: Big\r\nData: ");
    memset(ev + n, 'x', 60000);
    memcpy(ev + n + 60000, "\r\n\r\n", 5);
    for (int i = 0; i < 5; i++)
        lua_world_inject(w, 0, ev);
    lua_world_inject(w, 0, "Event: UserEvent\r\nUserEvent: Small\r\nData: alice@example\r\n\r\n");
    expect_log(w, "msg=matched len=13", 1);
    assert_true(lua_world_metric(w, "ami_lua_filter_budget_exceeded_total", NULL) == 5.0);
    assert_int_equal(lua_world_count_log(w, "filter pattern over its step budget"), 1); /* once a second */
    expect_engine_serves(w, 1);
    finish(w);
}

static void a_pathological_string_find_in_a_script_is_stopped(void **state)
{
    (void)state;
    run_runaway("local s = string.rep('x', 60000)\n"
                "local a = s:find('(.*)@(.*)')\n"
                "local b = string.gsub(s, '(.-)(.-)(.-)@', '%1')",
                "hostile.lua:");
}

/* ---- 6. shared tables are read-only ----------------------------------------------- */

static void libraries_and_the_ami_module_are_read_only(void **state)
{
    (void)state;
    lua_world_options_t opt = {.budget_ms = 30};
    lua_world_t *w = world_opts(&opt, "a_tamper.lua",
        "local attempts = {\n"
        "  function() rawset(string, 'format', function() return 'pwned' end) end,\n"
        "  function() string.format = function() return 'pwned' end end,\n"
        "  function() table.insert(string, 'x') end,\n"
        "  function() table.insert(os, 1, 'x') end,\n"
        "  function() table.remove(coroutine) end,\n"
        "  function() table.sort(math) end,\n"
        "  function() table.move({1}, 1, 1, 1, table) end,\n"
        "  function() rawset(ami, 'action', function() end) end,\n"
        "  function() ami.action = function() end end,\n"
        "  function() ami.log.info = function() end end,\n"
        "  function() rawset(ami.log, 'info', print) end,\n"
        "  function() setmetatable(string, {}) end,\n"
        "  function() rawset(coroutine, 'resume', print) end,\n"
        "}\n"
        "local refused = 0\n"
        "for _, f in ipairs(attempts) do if not pcall(f) then refused = refused + 1 end end\n"
        "ami.log.info('tamper', {refused = refused, total = #attempts, fmt = string.format('%d', 7)})\n");
    lua_world_write(w, "b_victim.lua",
                    "ami.log.info('victim', {fmt = string.format('%d', 8), action = type(ami.action)})\n");
    ami_lua_runtime_reload(w->rt, "test", NULL);
    expect_log(w, "msg=tamper fmt=7 refused=13 total=13", 2);
    expect_log(w, "msg=victim action=function fmt=8", 1);
    finish(w);
}

/* ---- 7. secrets ----------------------------------------------------------------- */

static void os_getenv_gives_only_what_the_config_allows(void **state)
{
    (void)state;
    setenv("AMI_HOSTILE_SECRET", "hunter2", 1);
    setenv("AMI_HOSTILE_OK_NAME", "fine", 1);
    setenv("AMI_HOSTILE_OTHER", "nope", 1);
    static const char *const allow[] = {"AMI_HOSTILE_*", NULL};
    static const char *const deny[] = {"AMI_HOSTILE_SECRET", NULL};
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.getenv_allow = allow;
    lc.getenv_deny = deny;
    lua_world_options_t opt = {.budget_ms = 30, .lua = &lc};
    lua_world_t *w = world_opts(&opt, "env.lua",
        "ami.log.info('env', {hidden = tostring(os.getenv('AMI_HOSTILE_SECRET')),\n"
        "  ok = os.getenv('AMI_HOSTILE_OK_NAME'), other = tostring(os.getenv('AMI_HOSTILE_OTHER')),\n"
        "  home = tostring(os.getenv('HOME')), nul = tostring(os.getenv('AMI_HOSTILE_OK_NAME\\0x'))})\n");
    expect_log(w, "msg=env hidden=nil home=nil nul=nil ok=fine other=nope", 1);
    assert_int_equal(lua_world_count_log(w, "hunter2"), 0);
    finish(w);
    unsetenv("AMI_HOSTILE_SECRET");
}

/* ---- 8. per-script bounds ---------------------------------------------------------- */

static void events_kept_by_a_script_count_against_its_memory_limit(void **state)
{
    (void)state;
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.memory_limit = (size_t)8 << 20;
    lua_world_options_t opt = {.budget_ms = 200, .lua = &lc};
    lua_world_t *w = world_opts(&opt, "a_hoarder.lua",
        "kept = {}\n"
        "ami.on('UserEvent', function(ev) kept[#kept + 1] = ev end)\n");
    lua_world_write(w, "b_ticker.lua",
                    "local n = 0\n"
                    "ami.every(0.02, function() n = n + 1; if n % 10 == 0 then ami.log.info('tick', {n = n}) end end)\n"
                    "ami.on({Event = 'UserEvent', UserEvent = 'Fine'}, function(ev)\n"
                    "  ami.log.info('fine', {ping = ami.action('pbx1', 'Ping').Ping})\n"
                    "end)\n");
    ami_lua_runtime_reload(w->rt, "test", NULL);
    /* 2 KB events: 8 MiB is full after about 4,000. */
    char big[2400];
    int n = snprintf(big, sizeof big, "Event: UserEvent\r\nUserEvent: Hoard\r\nData: ");
    memset(big + n, 'x', 2000);
    memcpy(big + n + 2000, "\r\n\r\n", 5);
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 200; i++)
            lua_world_inject(w, 0, big);
        lua_world_run_for(w, 20);
    }
    const char *labels[] = {"script", "a_hoarder.lua", NULL};
    assert_true(lua_world_metric(w, "ami_lua_script_events_refused_total", labels) > 0);
    /* a refused dispatch leaves nothing behind on the script's stack */
    for (script_t *sc = w->rt->current->scripts; sc; sc = sc->next)
        assert_int_equal(lua_gettop(sc->L), 0);
    ami_lua_stats_t st;
    ami_lua_runtime_stats(w->rt, &st);
    assert_true(st.lua_memory < (int64_t)(3 * lc.memory_limit)); /* two scripts, one at its limit */
    expect_log(w, "msg=tick n=20", 1);
    expect_engine_serves(w, 1);
    finish(w);
}

/* A handler that returns values hands back a pooled coroutine with an
 * empty stack: nothing piles up run after run. */
static void pooled_coroutines_come_back_empty_after_handlers_that_return_values(void **state)
{
    (void)state;
    lua_world_t *w = world_with("ami.on('UserEvent', function(ev) return 1, 'two', ev, {} end)\n");
    for (int i = 0; i < 50; i++)
        lua_world_inject(w, 0, USER_EVENT("Ret"));
    lua_world_run_for(w, 100);
    ami_lua_stats_t st;
    ami_lua_runtime_stats(w->rt, &st);
    assert_true(st.handler_runs >= 50);
    size_t idle = 0;
    for (script_t *sc = w->rt->current->scripts; sc; sc = sc->next)
        for (co_t *co = sc->idle; co; co = co->next, idle++)
            assert_int_equal(lua_gettop(co->L), 0);
    assert_true(idle >= 1);
    finish(w);
}

static void a_flooding_script_is_held_to_its_log_rate(void **state)
{
    (void)state;
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.log_lines_per_sec = 100;
    lua_world_options_t opt = {.budget_ms = 500, .lua = &lc};
    lua_world_t *w = world_opts(&opt, "flood.lua",
        "ami.spawn(function()\n"
        "  for round = 1, 3 do\n"
        "    for i = 1, 20000 do ami.log.info('spam', {i = i}) end\n"
        "    ami.sleep(0.4)\n"
        "  end\n"
        "  ami.log.info('spam done')\n"
        "end)\n");
    expect_log(w, "spam done", 1);
    int lines = lua_world_count_log(w, "msg=spam i=");
    assert_true(lines >= 100 && lines <= 300);
    expect_log(w, "script log lines dropped (log rate limit)", 1);
    const char *labels[] = {"script", "flood.lua", NULL};
    assert_true(lua_world_metric(w, "ami_lua_script_log_lines_dropped_total", labels) >= 59000);
    finish(w);
}

static void a_script_cannot_take_the_engines_metric_series(void **state)
{
    (void)state;
    ami_lua_config_t lc;
    ami_lua_config_default(&lc);
    lc.max_metric_series = 50;
    lua_world_options_t opt = {.budget_ms = 500, .lua = &lc};
    lua_world_t *w = world_opts(&opt, "series.lua",
        "local made, refused = 0, 0\n"
        "for i = 1, 200 do\n"
        "  local c, err = ami.metrics.counter('many_total', 'x', {i = tostring(i)})\n"
        "  if c then made = made + 1 elseif err:find('^limit:') then refused = refused + 1 end\n"
        "end\n"
        "local again = ami.metrics.counter('many_total', 'x', {i = '1'})\n"
        "ami.log.info('series', {made = made, refused = refused, again = again ~= nil})\n");
    expect_log(w, "msg=series again=true made=50 refused=150", 1);
    const char *labels[] = {"script", "series.lua", NULL};
    assert_true(lua_world_metric(w, "ami_lua_script_metric_series_refused_total", labels) == 150);
    finish(w);
}

/* ---- 10. small ones -------------------------------------------------------------- */

static void malformed_actions_are_refused_before_anything_is_sent(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on({Event = 'UserEvent', UserEvent = 'Go'}, function(ev)\n"
        "  local _, e1 = ami.action('pbx1', 'Ping\\0Originate')\n"
        "  local _, e2 = ami.action('pbx1', 'Setvar', {Variable = {'a', nil, 'c'}})\n"
        "  local _, e3 = ami.action('pbx1', 'Setvar', {Value = 0/0})\n"
        "  local ok, e4 = pcall(table.sort, {3, 2, 1}, function(a, b) ami.action('pbx1', 'Originate') return a < b end)\n"
        "  ami.log.info('refused', {e1 = e1, e2 = e2, e3 = e3, e4 = e4})\n"
        "end)\n");
    ami_sim_node_stats_t before = ami_sim_node_stats(w->nodes[0]);
    lua_world_inject(w, 0, USER_EVENT("Go"));
    expect_log(w, "msg=refused", 1);
    lua_world_run_for(w, 100);
    ami_sim_node_stats_t after = ami_sim_node_stats(w->nodes[0]);
    /* Only heartbeats went out. */
    assert_int_equal(after.actions - before.actions, after.pings - before.pings);
    assert_int_equal(ami_sim_node_stats(w->nodes[0]).originates, 0);
    assert_int_equal(lua_world_count_log(w, "the action name contains a NUL byte"), 1);
    assert_int_equal(lua_world_count_log(w, "not an array of values 1..n without holes"), 1);
    assert_int_equal(lua_world_count_log(w, "must be a string, a finite number"), 1);
    assert_int_equal(lua_world_count_log(w, "ami.action cannot wait here"), 1);
    finish(w);
}

/* argv[1]: run only the tests whose names match (a cmocka filter pattern). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metatables_taken_with_getmetatable_cannot_crash_the_engine),
        cmocka_unit_test(xpcall_message_handler_cannot_outlive_the_watchdog),
        cmocka_unit_test(nested_message_handlers_and_coroutines_are_stopped),
        cmocka_unit_test(runaway_metamethods_and_iterators_are_stopped),
        cmocka_unit_test(runaway_tostring_called_from_c_is_stopped),
        cmocka_unit_test(a_newproxy_finalizer_is_not_available),
        cmocka_unit_test(runaway_top_level_on_reload_keeps_the_running_scripts),
        cmocka_unit_test(nan_infinite_negative_and_fractional_numbers_are_error_values),
        cmocka_unit_test(a_pathological_filter_pattern_against_a_huge_value_is_abandoned),
        cmocka_unit_test(a_pathological_string_find_in_a_script_is_stopped),
        cmocka_unit_test(a_saved_coroutine_cannot_be_resumed_with_a_fake_result),
        cmocka_unit_test(a_saved_pooled_coroutine_cannot_be_resumed_later),
        cmocka_unit_test(libraries_and_the_ami_module_are_read_only),
        cmocka_unit_test(os_getenv_gives_only_what_the_config_allows),
        cmocka_unit_test(events_kept_by_a_script_count_against_its_memory_limit),
        cmocka_unit_test(pooled_coroutines_come_back_empty_after_handlers_that_return_values),
        cmocka_unit_test(a_flooding_script_is_held_to_its_log_rate),
        cmocka_unit_test(a_script_cannot_take_the_engines_metric_series),
        cmocka_unit_test(malformed_actions_are_refused_before_anything_is_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
