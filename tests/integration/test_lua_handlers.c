/* Scripts as coroutines: dispatch and filters, event objects, actions from
 * coroutines and their errors, waiting, and what a script may not do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_world.h"

#define USER_EVENT(name, extra) \
    "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: " name "\r\n" extra "\r\n"

static lua_world_t *world_with(const char *script)
{
    lua_world_t *w = lua_world_new(NULL);
    lua_world_write(w, "test.lua", script);
    lua_world_load(w);
    return w;
}

static void expect_log(lua_world_t *w, const char *needle, int count)
{
    if (!lua_world_wait_log(w, needle, count, 3000))
        fail_msg("log never held \"%s\" %d times (has %d). Log:\n%s", needle, count,
                 lua_world_count_log(w, needle), log_capture_text(&w->lines));
}

/* ---- dispatch ------------------------------------------------------------------ */

static void handlers_run_by_name_and_by_filter(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev) ami.log.info('by-name', {ue = ev.UserEvent}) end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Probe'}, function(ev) ami.log.info('by-filter') end)\n"
        "ami.on({Event = 'UserEvent', Source = ami.pattern('^dial')}, function(ev)\n"
        "  ami.log.info('by-pattern', {src = ev.Source}) end)\n"
        "ami.on('*', function(ev) if ev.UserEvent then ami.log.info('any', {name = ev:name()}) end end)\n"
        "ami.on('Hangup', function(ev) ami.log.info('wrong handler') end)\n");
    lua_world_inject(w, 0, USER_EVENT("Probe", "Source: dialplan\r\n"));
    lua_world_inject(w, 0, USER_EVENT("Other", "Source: manual\r\n"));
    expect_log(w, "msg=by-name", 2);
    expect_log(w, "msg=any", 2);
    lua_world_run_for(w, 50);
    assert_int_equal(lua_world_count_log(w, "msg=by-filter"), 1);
    assert_int_equal(lua_world_count_log(w, "msg=by-pattern src=dialplan"), 1);
    assert_int_equal(lua_world_count_log(w, "ue=Probe"), 1);
    assert_int_equal(lua_world_count_log(w, "ue=Other"), 1);
    assert_int_equal(lua_world_count_log(w, "wrong handler"), 0);
    lua_world_free(w);
}

static void ami_off_removes_a_handler(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local id\n"
        "id = ami.on('UserEvent', function(ev) ami.log.info('once'); ami.off(id) end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=once", 1);
    lua_world_inject(w, 0, USER_EVENT("B", ""));
    lua_world_run_for(w, 100);
    assert_int_equal(lua_world_count_log(w, "msg=once"), 1);
    lua_world_free(w);
}

static void event_object_reads_fields_case_insensitively_with_server_and_repeats(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local vars = ev:all('Variable')\n"
        "  local keys = 0\n"
        "  for k, v in ev:headers() do keys = keys + 1 end\n"
        "  local t = ev:totable()\n"
        "  ami.log.info('fields', {a = ev.Channel, b = ev.channel, srv = ev.server,\n"
        "    nvars = #vars, v1 = vars[1], v2 = vars[2], keys = keys, len = #ev,\n"
        "    tv = type(t.Variable), missing = tostring(ev.Nope), colon = ev.Data})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("X", "Channel: PJSIP/100-1\r\nVariable: A=1\r\nVariable: B=2\r\n"
                                           "Data: a: b: c\r\n"));
    expect_log(w, "msg=fields", 1);
    assert_int_equal(lua_world_count_log(w, "a=PJSIP/100-1 b=PJSIP/100-1"), 1);
    assert_int_equal(lua_world_count_log(w, "srv=pbx1"), 1);
    /* ami.log sorts a table's fields by key. */
    assert_int_equal(lua_world_count_log(w, "colon=\"a: b: c\" keys=7 len=7 missing=nil nvars=2 "
                                            "srv=pbx1 tv=table v1=\"A=1\" v2=\"B=2\""), 1);
    lua_world_free(w);
}

/* Names of every length (the search compares them a word at a time):
 * ASCII letters match in either case, nothing else is folded ('@' is not
 * '`', '[' is not '{'). */
static void event_field_names_fold_ascii_letters_only_at_every_length(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local bad = {}\n"
        "  local function want(k, v) if ev[k] ~= v then bad[#bad + 1] = k end end\n"
        "  want('k', 'v1'); want('KX', 'v2'); want('k@Y', 'v3'); want('KEY[', 'v4'); want('keyab', 'v5')\n"
        "  want('KEYABC@', 'v6'); want('keyabcde', 'v7'); want('KEYABCDEf', 'v8')\n"
        "  want('keyABCDEFGH@IJKLMNOP', 'v9'); want('KEY-NAME_1', 'v10')\n"
        "  want('K`y', nil); want('Key{', nil); want('KeyAbc`', nil); want('keyabcdefgh`ijklmnop', nil)\n"
        "  want('KEY-NAME_!', nil); want('KeyAbcdeG', nil); want('Kex', nil)\n"
        "  ami.log.info('names', {bad = table.concat(bad, ',')})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("N", "K: v1\r\nKx: v2\r\nK@y: v3\r\nKey[: v4\r\nKeyAb: v5\r\n"
                                           "KeyAbc@: v6\r\nKeyAbcde: v7\r\nKeyAbcdeF: v8\r\n"
                                           "KeyAbcdefgh@ijklmnop: v9\r\nKey-Name_1: v10\r\n"));
    expect_log(w, "msg=names", 1);
    assert_int_equal(lua_world_count_log(w, "msg=names bad=\"\""), 1);
    lua_world_free(w);
}

/* An event object keeps its slices narrow (16-bit) when the message is
 * short and wide past 64 KiB: both read the same, keys of any length in
 * either, the fields before and after a huge value included. */
static void event_objects_short_and_huge_read_the_same(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local long = string.rep('K', 300)\n"
        "  local n = 0\n"
        "  for k, v in ev:headers() do n = n + 1 end\n"
        "  local huge_key = ev[string.rep('k', 70000)]\n"
        "  ami.log.info('sizes', {who = ev.UserEvent, first = ev.First, after = ev.After,\n"
        "    long = ev[long], big = #(ev.Big or ''), len = #ev, n = n, srv = ev.server,\n"
        "    hk = tostring(huge_key)})\n"
        "end)\n");
    char key[301];
    memset(key, 'k', 300);
    key[300] = '\0';
    /* Huge: seven more lines of 10,000 bytes (a line stays under max_line). */
    size_t cap = 80000, len = 0;
    char *raw = malloc(cap), pad[10001];
    memset(pad, 'x', 10000);
    pad[10000] = '\0';
    for (int huge = 0; huge < 2; huge++) {
        len = (size_t)snprintf(raw, cap, "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: %s\r\nFirst: 1\r\n",
                               huge ? "Huge" : "Short");
        for (int i = 0; huge && i < 7; i++)
            len += (size_t)snprintf(raw + len, cap - len, "Pad%d: %s\r\n", i, pad);
        snprintf(raw + len, cap - len, "%s: L\r\nBig: 0123456789\r\nAfter: 2\r\n\r\n", key);
        lua_world_inject(w, 0, raw);
    }
    free(raw);
    expect_log(w, "msg=sizes", 2);
    assert_int_equal(lua_world_count_log(w, "after=2 big=10 first=1 hk=nil len=7 long=L n=7 srv=pbx1 who=Short"), 1);
    assert_int_equal(lua_world_count_log(w, "after=2 big=10 first=1 hk=nil len=14 long=L n=14 srv=pbx1 who=Huge"), 1);
    lua_world_free(w);
}

static void event_kept_past_a_yield_or_in_a_global_stays_valid(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "kept = nil\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Keep'}, function(ev)\n"
        "  kept = ev\n"
        "  ami.sleep(0.2)\n"
        "  ami.log.info('after-yield', {chan = ev.Channel, n = #ev})\n"
        "end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Check'}, function(ev)\n"
        "  ami.log.info('global', {chan = kept.Channel, now = ev.Channel})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("Keep", "Channel: SIP/keep-me\r\n"));
    /* Move the parser's buffer on: many other events arrive meanwhile. */
    for (int i = 0; i < 300; i++) {
        char raw[200];
        snprintf(raw, sizeof raw, USER_EVENT("Noise", "Channel: SIP/noise-%05d\r\n"), i);
        lua_world_inject(w, 0, raw);
    }
    lua_world_inject(w, 0, USER_EVENT("Check", "Channel: SIP/check\r\n"));
    expect_log(w, "msg=after-yield", 1);
    expect_log(w, "msg=global", 1);
    assert_int_equal(lua_world_count_log(w, "msg=after-yield chan=SIP/keep-me n=4"), 1);
    assert_int_equal(lua_world_count_log(w, "msg=global chan=SIP/keep-me now=SIP/check"), 1);
    lua_world_free(w);
}

static void events_are_read_only(void **state)
{
    (void)state;
    lua_world_t *w = world_with("ami.on('UserEvent', function(ev) ev.Channel = 'x' end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "read-only", 1);
    lua_world_free(w);
}

/* ---- actions from coroutines ------------------------------------------------------ */

static void action_round_trip_resumes_the_handler(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local res, err = ami.action(ev.server, 'Ping')\n"
        "  ami.log.info('pong', {ping = res.Ping, ok = res.ok, resp = res.Response, err = err})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=pong ok=true ping=Pong resp=Success", 1);
    lua_world_free(w);
}

static void action_errors_are_values(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local r1, e1 = ami.action('nope', 'Ping')\n"
        "  local r2, e2 = ami.action('pbx1', 'Setvar', {Variable = 'A', Value = 'x\\r\\nAction: Originate'})\n"
        "  local r3, e3, res3 = ami.action('pbx1', 'Hangup', {Channel = 'SIP/does-not-exist'})\n"
        "  local r4, e4 = ami.action('pbx1', 'Ping', {}, {timeout = -5})\n"
        "  ami.log.info('e4', {e = e4, r = tostring(r4)})\n"
        "end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'B'}, function(ev)\n"
        "  local r1, e1 = ami.action('nope', 'Ping')\n"
        "  ami.log.info('e1', {e = e1, r = tostring(r1)})\n"
        "  local r2, e2 = ami.action('pbx1', 'Setvar', {Variable = 'A', Value = 'x\\r\\nAction: Originate'})\n"
        "  ami.log.info('e2', {e = e2})\n"
        "  local r3, e3, res3 = ami.action('pbx1', 'Hangup', {Channel = 'SIP/does-not-exist'})\n"
        "  ami.log.info('e3', {e = e3, msg = res3 and res3.Message})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("B", ""));
    expect_log(w, "msg=e3", 1);
    assert_int_equal(lua_world_count_log(w, "msg=e1 e=\"unknown_server: no server named"), 1);
    assert_int_equal(lua_world_count_log(w, "(Value): value contains CR (AMI header injection refused)"), 1);
    assert_int_equal(lua_world_count_log(w, "msg=e3 e=\"server: No such channel\" msg=\"No such channel\""), 1);
    /* The first handler's last call had a bad opts.timeout: an error value, nothing sent. */
    expect_log(w, "msg=e4 e=\"invalid: ami.action: opts.timeout must be an integer from 1 to 86400000 "
                  "(milliseconds), got -5\" r=nil", 1);
    lua_world_free(w);
}

static void collect_gathers_an_event_list(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  for i = 1, 3 do\n"
        "    local r, e = ami.action('pbx1', 'Originate', {Channel = 'Local/100@test',\n"
        "      Application = 'Wait', Data = '5'})\n"
        "    ami.log.info('originated', {resp = r and r.Response, err = e})\n"
        "  end\n"
        "  local items, res = ami.collect('pbx1', 'CoreShowChannels')\n"
        "  ami.log.info('collected', {n = #items, first = items[1] and items[1]:name(),\n"
        "    listed = res.ListItems, truncated = res.truncated})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=collected", 1);
    assert_int_equal(lua_world_count_log(w, "msg=originated resp=Success"), 3);
    assert_int_equal(lua_world_count_log(w, "first=CoreShowChannel listed=6 n=6 truncated=false"), 1);
    lua_world_free(w);
}

static void action_timeout_resumes_with_timeout_error(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local r, e = ami.action('pbx1', 'CoreStatus', nil, {timeout = 150})\n"
        "  ami.log.info('timed', {e = e, r = tostring(r)})\n"
        "end)\n");
    ami_sim_faults_t silent = {.all_silent = true};
    ami_sim_node_set_faults(w->nodes[0], &silent);
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=timed e=\"timeout: CoreStatus", 1);
    assert_int_equal(lua_world_count_log(w, "r=nil"), 1);
    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(w->nodes[0], &none);
    lua_world_free(w);
}

static void disconnect_resumes_every_waiting_coroutine_once_with_the_reason(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local r, e = ami.action('pbx1', 'CoreStatus', nil, {timeout = 60000})\n"
        "  ami.log.info('resumed', {e = e})\n"
        "end)\n");
    ami_sim_faults_t silent = {.all_silent = true};
    ami_sim_node_set_faults(w->nodes[0], &silent);
    for (int i = 0; i < 5; i++)
        lua_world_inject(w, 0, USER_EVENT("A", ""));
    lua_world_run_for(w, 50);
    assert_int_equal(ami_lua_runtime_waiting(w->rt), 5);
    /* Pings go unanswered too: the heartbeat force-closes the connection. */
    expect_log(w, "msg=resumed e=\"heartbeat: Max heartbeat failures\"", 5);
    ami_sim_faults_t none = {0};
    ami_sim_node_set_faults(w->nodes[0], &none);
    lua_world_run_for(w, 500);
    assert_int_equal(lua_world_count_log(w, "msg=resumed"), 5);
    assert_int_equal(ami_lua_runtime_waiting(w->rt), 0);
    lua_world_free(w);
}

/* ---- waiting -------------------------------------------------------------------------- */

static void wait_for_gets_the_next_matching_event_or_times_out(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on({Event = 'UserEvent', UserEvent = 'Start'}, function(ev)\n"
        "  local got, err = ami.wait_for({Event = 'UserEvent', UserEvent = 'Done', Id = ev.Id}, 2000)\n"
        "  ami.log.info('waited', {id = ev.Id, got = got and got.Id, err = err})\n"
        "  local none, err2 = ami.wait_for('NeverComes', 100)\n"
        "  ami.log.info('timeout', {err = err2})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("Start", "Id: 7\r\n"));
    lua_world_run_for(w, 30);
    lua_world_inject(w, 0, USER_EVENT("Done", "Id: 8\r\n"));
    lua_world_inject(w, 0, USER_EVENT("Done", "Id: 7\r\n"));
    expect_log(w, "msg=waited got=7 id=7", 1);
    expect_log(w, "msg=timeout err=\"timeout: no matching event within 100 ms\"", 1);
    lua_world_free(w);
}

static void spawn_and_every_run_in_their_own_coroutines(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.spawn(function(a, b) ami.sleep(0.01); ami.log.info('spawned', {sum = a + b}) end, 2, 3)\n"
        "local n = 0\n"
        "ami.every(0.02, function() n = n + 1; ami.log.info('tick', {n = n}); if n == 2 then error('boom') end end)\n");
    expect_log(w, "msg=spawned sum=5", 1);
    expect_log(w, "msg=tick", 4);
    assert_true(lua_world_count_log(w, "periodic function failed") >= 1);
    lua_world_free(w);
}

/* ---- what scripts may not do ----------------------------------------------------------- */

static void blocking_functions_are_refused_with_a_reason(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local ok1, e1 = pcall(os.execute, 'true')\n"
        "  local ok2, e2 = pcall(function() return io.read() end)\n"
        "  local ok3, e3 = pcall(function() return io.popen('ls') end)\n"
        "  local ok4, e4 = pcall(require, 'ffi')\n"
        "  ami.log.info('refused', {e1 = e1, e2 = e2, e3 = e3, e4 = e4, ok = ok1 or ok2 or ok3 or ok4})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=refused", 1);
    assert_int_equal(lua_world_count_log(w, "os.execute is not available in scripts"), 1);
    assert_int_equal(lua_world_count_log(w, "io.read is not available in scripts"), 1);
    assert_int_equal(lua_world_count_log(w, "io.popen is not available in scripts"), 1);
    assert_int_equal(lua_world_count_log(w, "ok=false"), 1);
    assert_int_equal(lua_world_count_log(w, "block"), lua_world_count_log(w, "block"));
    lua_world_free(w);
}

static void yielding_at_top_level_fails_the_load_clearly(void **state)
{
    (void)state;
    lua_world_t *w = lua_world_new(NULL);
    lua_world_write(w, "bad.lua", "ami.sleep(1)\n");
    ami_err_t err;
    assert_int_equal(ami_lua_runtime_load(w->rt, &err), -1);
    assert_non_null(strstr(err.msg, "bad.lua:1"));
    assert_non_null(strstr(err.msg, "ami.sleep waits by yielding"));
    lua_world_free(w);
}

static void yield_across_a_c_boundary_is_an_error_not_a_crash(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local ok, err = pcall(table.sort, {3, 2, 1}, function(a, b) ami.sleep(0.01) return a < b end)\n"
        "  ami.log.info('sorted', {ok = ok, err = err})\n"
        "  ami.sleep(0.05)\n"
        "  ami.log.info('still alive')\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "ami.sleep cannot wait here: it was called through a C function that cannot yield", 1);
    assert_int_equal(lua_world_count_log(w, "msg=sorted err="), 1);
    assert_int_equal(lua_world_count_log(w, "ok=false"), 1);
    expect_log(w, "msg=\"still alive\"", 1);
    lua_world_run_for(w, 100); /* the cancelled 10 ms timer must not resume anything */
    assert_int_equal(lua_world_count_log(w, "msg=\"still alive\""), 1);
    lua_world_free(w);
}

static void coroutine_yield_at_handler_level_is_reported(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev) coroutine.yield() end)\n"
        "ami.on('UserEvent', function(ev)\n"
        "  local co = coroutine.wrap(function() coroutine.yield(1); return 2 end)\n"
        "  ami.log.info('own coroutines work', {a = co(), b = co()})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "coroutine.yield() would suspend the engine's own coroutine", 1);
    expect_log(w, "msg=\"own coroutines work\" a=1 b=2", 1);
    lua_world_free(w);
}

static void handler_error_is_logged_with_script_line_and_traceback(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local function deep() error('kaboom') end\n"
        "ami.on('UserEvent', function(ev) deep() end)\n"
        "ami.on('UserEvent', function(ev) ami.log.info('other handler ran') end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=\"handler failed\"", 1);
    expect_log(w, "other handler ran", 1);
    assert_int_equal(lua_world_count_log(w, "test.lua:1: kaboom"), 1);
    assert_int_equal(lua_world_count_log(w, "handler at "), 1);
    assert_int_equal(lua_world_count_log(w, "stack traceback"), 1);
    assert_true(lua_world_metric(w, "ami_lua_handler_errors_total", NULL) == 1.0);
    lua_world_free(w);
}

static void script_metrics_appear_beside_the_engines(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local calls = ami.metrics.counter('calls_total', 'Calls seen', {kind = 'test'})\n"
        "ami.on('UserEvent', function(ev) calls:inc() end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    lua_world_inject(w, 0, USER_EVENT("B", ""));
    lua_world_run_for(w, 100);
    assert_true(lua_world_metric(w, "calls_total", (const char *const[]){"kind", "test", NULL}) == 2.0);
    lua_world_free(w);
}

static void server_state_events_reach_on_server_handlers_and_waiters(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on_server(function(ev)\n"
        "  ami.log.info('server event', {server = ev.Server, lower = ev.server, state = ev.State,\n"
        "    reason = ev.Reason, previous = ev.Previous})\n"
        "end)\n"
        "ami.on('*', function(ev) if ev:name() == 'ServerState' then ami.log.info('star saw it') end end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Wait'}, function()\n"
        "  local ev, err = ami.wait_for({Event = 'ServerState', Server = 'pbx1', State = 'up'}, 5000)\n"
        "  ami.log.info('waited', {state = ev and ev.State, err = err})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("Wait", ""));
    lua_world_run_for(w, 50);
    ami_sim_node_drop_sessions(w->nodes[0]);
    expect_log(w, "msg=\"server event\" lower=pbx1 previous=connected reason=", 1);
    expect_log(w, "server=pbx1 state=down", 1);
    expect_log(w, "previous=authenticating server=pbx1 state=up", 1);
    expect_log(w, "msg=waited state=up", 1);
    assert_int_equal(lua_world_count_log(w, "star saw it"), 0);
    lua_world_free(w);
}

static void handlers_run_in_registration_order_named_or_not(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local order = {}\n"
        "ami.on('*', function(ev) order[#order + 1] = 'any1' end)\n"
        "ami.on('UserEvent', function(ev) order[#order + 1] = 'named' end)\n"
        "ami.on({UserEvent = 'Go'}, function(ev) order[#order + 1] = 'filter' end)\n"
        "ami.on('*', function(ev) order[#order + 1] = 'any2'\n"
        "  ami.log.info('order', {o = table.concat(order, ',')}) end)\n");
    lua_world_inject(w, 0, USER_EVENT("Go", ""));
    expect_log(w, "msg=order o=any1,named,filter,any2", 1);
    lua_world_free(w);
}

static void results_read_like_events(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('UserEvent', function(ev)\n"
        "  local res = assert(ami.action('pbx1', 'Command', {Command = 'core show version'}))\n"
        "  local out = res:all('Output')\n"
        "  local n = 0\n"
        "  for k, v in res:headers() do n = n + 1 end\n"
        "  local t = res:totable()\n"
        "  ami.log.info('result', {lines = #out, first = out[1], get = res:get('Response'),\n"
        "    headers = n > 2, response = t.Response, meta = getmetatable(res)})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=result first=\"Asterisk", 1);
    expect_log(w, "get=Success headers=true lines=1 meta=ami.result response=Success", 1);
    lua_world_free(w);
}

/* What a result holds, raw: final and response (one object for a single
 * response), ok, and the list fields only for lists; the same on failure. */
static void result_fields_are_the_documented_snapshot(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local function keys(res)\n"
        "  local k = {}\n"
        "  for name in pairs(res) do k[#k + 1] = name end\n"
        "  table.sort(k)\n"
        "  return table.concat(k, '+')\n"
        "end\n"
        "ami.on('UserEvent', function(ev)\n"
        "  local p = assert(ami.action('pbx1', 'Ping'))\n"
        "  local o = assert(ami.action('pbx1', 'Originate', {Channel = 'Local/100@test',\n"
        "    Application = 'Wait', Data = '1'}))\n"
        "  local items, l = ami.collect('pbx1', 'CoreShowChannels')\n"
        "  local _, _, f = ami.action('pbx1', 'Command', {Command = 'no such command here'})\n"
        "  ami.log.info('shape', {ping = keys(p), same = rawequal(p.final, p.response),\n"
        "    pong = p.final.Ping, orig = keys(o), ofinal = o.final.Event, oresp = o.response.Response,\n"
        "    list = keys(l), litems = rawequal(l.items, items), ltrunc = l.truncated,\n"
        "    fail = keys(f), fok = f.ok, fresp = f.response.Response, type = type(p)})\n"
        "end)\n");
    lua_world_inject(w, 0, USER_EVENT("A", ""));
    expect_log(w, "msg=shape fail=final+ok+response fok=false fresp=Error "
                  "list=dropped+final+items+ok+response+truncated litems=true ltrunc=false ofinal=OriginateResponse "
                  "oresp=Success orig=final+ok+response ping=final+ok+response pong=Pong same=true type=table", 1);
    lua_world_free(w);
}

static void the_completion_event_of_an_own_action_reaches_handlers_once(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.on('OriginateResponse', function(ev) ami.log.info('handler saw', {resp = ev.Response}) end)\n"
        "ami.on({Event = 'UserEvent', UserEvent = 'Go'}, function(ev)\n"
        "  local res, err = ami.action('pbx1', 'Originate', {Channel = 'Local/100@test',\n"
        "    Application = 'Wait', Data = '1'})\n"
        "  ami.log.info('action got', {resp = res and res.Response, err = err})\n"
        "  local _, cerr = ami.action('pbx1', 'Command', {Command = 'no such command here'})\n"
        "  ami.log.info('command', {err = cerr})\n"
        "end)\n");
    double before = lua_world_metric(w, "ami_events_received_total", (const char *const[]){"server_key", "pbx1", NULL});
    lua_world_inject(w, 0, USER_EVENT("Go", ""));
    expect_log(w, "msg=command", 1);
    expect_log(w, "msg=\"handler saw\" resp=Success", 1);
    assert_int_equal(lua_world_count_log(w, "msg=\"action got\" resp=Success"), 1);
    assert_int_equal(lua_world_count_log(w, "msg=\"handler saw\""), 1);
    assert_true(lua_world_metric(w, "ami_events_received_total", (const char *const[]){"server_key", "pbx1", NULL}) >
                before);
    assert_int_equal(lua_world_count_log(w, "err=\"server: No such command 'no such command here'"), 1);
    lua_world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handlers_run_by_name_and_by_filter),
        cmocka_unit_test(ami_off_removes_a_handler),
        cmocka_unit_test(event_object_reads_fields_case_insensitively_with_server_and_repeats),
        cmocka_unit_test(event_field_names_fold_ascii_letters_only_at_every_length),
        cmocka_unit_test(event_objects_short_and_huge_read_the_same),
        cmocka_unit_test(event_kept_past_a_yield_or_in_a_global_stays_valid),
        cmocka_unit_test(events_are_read_only),
        cmocka_unit_test(action_round_trip_resumes_the_handler),
        cmocka_unit_test(action_errors_are_values),
        cmocka_unit_test(collect_gathers_an_event_list),
        cmocka_unit_test(action_timeout_resumes_with_timeout_error),
        cmocka_unit_test(disconnect_resumes_every_waiting_coroutine_once_with_the_reason),
        cmocka_unit_test(wait_for_gets_the_next_matching_event_or_times_out),
        cmocka_unit_test(spawn_and_every_run_in_their_own_coroutines),
        cmocka_unit_test(blocking_functions_are_refused_with_a_reason),
        cmocka_unit_test(yielding_at_top_level_fails_the_load_clearly),
        cmocka_unit_test(yield_across_a_c_boundary_is_an_error_not_a_crash),
        cmocka_unit_test(coroutine_yield_at_handler_level_is_reported),
        cmocka_unit_test(handler_error_is_logged_with_script_line_and_traceback),
        cmocka_unit_test(script_metrics_appear_beside_the_engines),
        cmocka_unit_test(server_state_events_reach_on_server_handlers_and_waiters),
        cmocka_unit_test(handlers_run_in_registration_order_named_or_not),
        cmocka_unit_test(results_read_like_events),
        cmocka_unit_test(result_fields_are_the_documented_snapshot),
        cmocka_unit_test(the_completion_event_of_an_own_action_reaches_handlers_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
