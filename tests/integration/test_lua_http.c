/* ami.http and ami.json from scripts: answers and their shape, errors as
 * values, every hostile value refused, the per-script bound, coroutines
 * cancelled while they wait (reload, shutdown, a failed yield) taking their
 * transfer with them, and JSON's bounds and isolation. The web server is a
 * real one on loopback, on its own thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "httpc/httpc.h"
#include "lua_world.h"
#include "sim/sim_http.h"

static ami_sim_http_t *web;

static ami_httpc_config_t http_config(void)
{
    ami_httpc_config_t c;
    ami_httpc_config_default(&c);
    return c;
}

/* A world running script (with every "BASE" replaced by the server's URL). */
static lua_world_t *world_with_config(const char *script, const ami_httpc_config_t *http, uint32_t grace_ms)
{
    lua_world_options_t opt = {.nodes = 1, .http = http, .grace_ms = grace_ms};
    lua_world_t *w = lua_world_new(&opt);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u", ami_sim_http_port(web));
    ami_buf_t src;
    ami_buf_init(&src, 0);
    for (const char *p = script; *p;) {
        const char *at = strstr(p, "BASE");
        size_t n = at ? (size_t)(at - p) : strlen(p);
        ami_buf_append(&src, p, n);
        if (!at)
            break;
        ami_buf_append_str(&src, base);
        p = at + 4;
    }
    ami_buf_append(&src, "", 1);
    lua_world_write(w, "test.lua", src.data);
    ami_buf_deinit(&src);
    lua_world_load(w);
    return w;
}

static lua_world_t *world_with(const char *script)
{
    ami_httpc_config_t c = http_config();
    return world_with_config(script, &c, 0);
}

static void expect_log(lua_world_t *w, const char *needle, int count)
{
    if (!lua_world_wait_log(w, needle, count, 10000))
        fail_msg("log never held \"%s\" %d times (has %d). Log:\n%s", needle, count,
                 lua_world_count_log(w, needle), log_capture_text(&w->lines));
}

/* Log lines holding every one of the needles (fields are logged in name order). */
static int count_lines(lua_world_t *w, const char *const *needles)
{
    int n = 0;
    for (const char *line = log_capture_text(&w->lines); line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        bool all = true;
        for (const char *const *k = needles; *k && all; k++) {
            size_t kl = strlen(*k);
            all = false;
            for (size_t i = 0; i + kl <= len && !all; i++) /* a field ends at a space or the line's end */
                all = memcmp(line + i, *k, kl) == 0 && (i + kl == len || line[i + kl] == ' ') &&
                      (i == 0 || line[i - 1] == ' ');
        }
        n += all;
        line = end ? end + 1 : NULL;
    }
    return n;
}

#define LINES(w, ...) count_lines((w), (const char *const[]){__VA_ARGS__, NULL})

static void expect_line(lua_world_t *w, const char *const *needles)
{
    if (count_lines(w, needles) != 1) {
        char all[256] = "";
        for (const char *const *k = needles; *k; k++)
            snprintf(all + strlen(all), sizeof all - strlen(all), "%s ", *k);
        fail_msg("expected one line with %s in:\n%s", all, log_capture_text(&w->lines));
    }
}

#define EXPECT_LINE(w, ...) expect_line((w), (const char *const[]){__VA_ARGS__, NULL})

static double refused(lua_world_t *w, const char *reason)
{
    return lua_world_metric(w, "ami_http_client_refused_total", (const char *const[]){"reason", reason, NULL});
}

/* ---- answers ---------------------------------------------------------------------- */

static void request_yields_and_returns_status_headers_body_and_url(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.spawn(function()\n"
        "  local res, err = ami.http.request{url = 'BASE/headers', timeout = 5000}\n"
        "  assert(res, err)\n"
        "  local m = res.headers['x-multi']\n"
        "  ami.log.info('answer', {status = res.status, body = res.body, n = #m, m1 = m[1], m2 = m[2],\n"
        "    mixed = res.headers['x-mixed-case'], upper = tostring(res.headers['X-Multi']),\n"
        "    cookies = #res.headers['set-cookie'], same_url = tostring(res.url == 'BASE/headers')})\n"
        "end)\n");
    expect_log(w, "msg=answer", 1);
    EXPECT_LINE(w, "msg=answer", "status=200", "body=h", "n=2", "m1=a", "m2=b", "mixed=v", "upper=nil", "cookies=2",
                "same_url=true");
    lua_world_free(w);
}

static void get_and_post_send_what_the_script_asked(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.spawn(function()\n"
        "  local res = assert(ami.http.post('BASE/echo', ami.json.encode({n = 1}),\n"
        "    {headers = {['Content-Type'] = 'application/json', ['X-Count'] = 42,\n"
        "                ['X-Rep'] = {'one', 'two'}}, timeout = 3000}))\n"
        "  local body = res.body\n"
        "  ami.log.info('posted', {post = tostring(body:find('POST /echo', 1, true) ~= nil),\n"
        "    json = tostring(body:find('{\"n\":1}', 1, true) ~= nil),\n"
        "    ctype = tostring(body:find('Content-Type: application/json', 1, true) ~= nil),\n"
        "    count = tostring(body:find('X-Count: 42', 1, true) ~= nil),\n"
        "    rep = tostring(body:find('X-Rep: one\\r\\nX-Rep: two', 1, true) ~= nil)})\n"
        "  local g = assert(ami.http.get('BASE/ok'))\n"
        "  ami.log.info('got', {status = g.status, body = g.body})\n"
        "end)\n");
    expect_log(w, "msg=got", 1);
    EXPECT_LINE(w, "msg=posted", "post=true", "json=true", "ctype=true", "count=true", "rep=true");
    EXPECT_LINE(w, "msg=got", "status=200", "body=ok");
    lua_world_free(w);
}

static void failures_are_values_with_their_kind(void **state)
{
    (void)state;
    char script[1024];
    snprintf(script, sizeof script,
             "ami.spawn(function()\n"
             "  local function try(name, ...)\n"
             "    local res, err = ...\n"
             "    ami.log.info('outcome', {name = name, status = res and res.status, kind = err and err:match('^([%%w_]+):')})\n"
             "  end\n"
             "  try('slow', ami.http.get('BASE/delay/3000', {timeout = 100}))\n"
             "  try('refused', ami.http.get('http://127.0.0.1:%u/ok'))\n"
             "  try('big', ami.http.get('BASE/big/2000000'))\n"
             "  try('missing', ami.http.get('BASE/missing'))\n"
             "  try('redirect', ami.http.get('BASE/redirect-to?file:///etc/passwd'))\n"
             "  try('loop', ami.http.get('BASE/loop'))\n"
             "  try('broken', ami.http.get('BASE/garbage'))\n"
             "end)\n",
             ami_sim_http_refused_port(web));
    lua_world_t *w = world_with(script);
    expect_log(w, "name=broken", 1);
    EXPECT_LINE(w, "name=slow", "kind=timeout");
    EXPECT_LINE(w, "name=refused", "kind=connect");
    EXPECT_LINE(w, "name=big", "kind=too_large");
    EXPECT_LINE(w, "name=missing", "status=404"); /* an answer, not an error */
    EXPECT_LINE(w, "name=redirect", "kind=refused");
    EXPECT_LINE(w, "name=loop", "kind=redirect");
    EXPECT_LINE(w, "name=broken", "kind=protocol");
    lua_world_free(w);
}

/* ---- hostile values ------------------------------------------------------------------ */

static void hostile_values_are_refused_as_invalid_without_raising(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local cases = {\n"
        "  nan = {url = 'BASE/ok', timeout = 0/0}, inf = {url = 'BASE/ok', timeout = math.huge},\n"
        "  neg = {url = 'BASE/ok', timeout = -5}, zero = {url = 'BASE/ok', timeout = 0},\n"
        "  frac = {url = 'BASE/ok', timeout = 1.5}, huge = {url = 'BASE/ok', timeout = 1e12},\n"
        "  strtimeout = {url = 'BASE/ok', timeout = '100'},\n"
        "  crlf = {url = 'BASE/ok', headers = {['X-A'] = 'v\\r\\nX-Injected: 1'}},\n"
        "  lf = {url = 'BASE/ok', headers = {['X-A'] = {'ok', 'v\\nX'}}},\n"
        "  nul = {url = 'BASE/ok', headers = {['X-A'] = 'v\\0w'}},\n"
        "  badname = {url = 'BASE/ok', headers = {['X A'] = 'v'}},\n"
        "  nanheader = {url = 'BASE/ok', headers = {['X-A'] = 0/0}},\n"
        "  tableheader = {url = 'BASE/ok', headers = {['X-A'] = {{}}}},\n"
        "  numkey = {url = 'BASE/ok', headers = {'v'}},\n"
        "  notable = {url = 'BASE/ok', headers = 'X-A: v'},\n"
        "  nourl = {method = 'GET'}, numurl = {url = 42},\n"
        "  typo = {url = 'BASE/ok', hedaers = {}},\n"
        "  method = {url = 'BASE/ok', method = 'TRACE'},\n"
        "  getbody = {url = 'BASE/ok', body = 'x'},\n"
        "  ftp = {url = 'ftp://127.0.0.1/x'},\n"
        "  space = {url = 'BASE/o k'},\n"
        "  bigurl = {url = 'BASE/' .. string.rep('a', 70000)},\n"
        "  bodytype = {url = 'BASE/ok', method = 'POST', body = {}},\n"
        "}\n"
        "ami.spawn(function()\n"
        "  for name, req in pairs(cases) do\n"
        "    local res, err = ami.http.request(req)\n"
        "    ami.log.info('hostile', {name = name, res = tostring(res), kind = err and err:match('^([%w_]+):')})\n"
        "  end\n"
        "  local res, err = ami.http.get('BASE/ok', 'not a table')\n"
        "  ami.log.info('hostile', {name = 'opts', res = tostring(res), kind = err and err:match('^([%w_]+):')})\n"
        "  res, err = ami.http.get('BASE/ok', {timeout = 100, retries = 3})\n"
        "  ami.log.info('hostile', {name = 'optstypo', res = tostring(res), kind = err and err:match('^([%w_]+):')})\n"
        "  ami.log.info('survived')\n"
        "end)\n");
    expect_log(w, "msg=survived", 1);
    static const char *const invalid[] = {"nan", "inf", "neg", "zero", "frac", "huge", "strtimeout", "crlf", "lf",
                                          "nul", "badname", "nanheader", "tableheader", "numkey", "notable",
                                          "nourl", "numurl", "typo", "method", "getbody", "space", "bodytype",
                                          "opts", "optstypo"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "name=%s", invalid[i]);
        EXPECT_LINE(w, name, "res=nil", "kind=invalid");
    }
    EXPECT_LINE(w, "name=ftp", "res=nil", "kind=refused");
    EXPECT_LINE(w, "name=bigurl", "res=nil", "kind=too_large");
    assert_true(refused(w, "invalid") >= 20);
    assert_int_equal(ami_sim_http_seen_count(web), 0); /* nothing reached the server */
    assert_int_equal(lua_world_count_log(w, "handler failed"), 0);
    lua_world_free(w);
}

static void messages_say_what_was_wrong(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.spawn(function()\n"
        "  local _, e1 = ami.http.request{url = 'BASE/ok', timeout = 0/0}\n"
        "  local _, e2 = ami.http.request{url = 'BASE/ok', headers = {['X-A'] = 'a\\r\\nb'}}\n"
        "  local _, e3 = ami.http.request{url = 'BASE/ok', hedaers = {}}\n"
        "  ami.log.info('e1', {e = e1}); ami.log.info('e2', {e = e2}); ami.log.info('e3', {e = e3})\n"
        "end)\n");
    expect_log(w, "msg=e3", 1);
    assert_int_equal(lua_world_count_log(w, "ami.http: timeout must be an integer from 1 to 10000"), 1);
    assert_int_equal(lua_world_count_log(w, "got nan"), 1);
    assert_int_equal(lua_world_count_log(w, "header injection"), 1);
    assert_int_equal(lua_world_count_log(w, "unknown field \\\"hedaers\\\""), 1);
    lua_world_free(w);
}

static void a_call_outside_a_coroutine_raises_a_clear_error(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local ok, err = pcall(ami.http.get, 'BASE/ok')\n"
        "ami.log.info('top', {ok = tostring(ok), why = tostring(err):match('must be called from a handler') and 'clear'})\n"
        "local ok2 = pcall(ami.http.request, 'BASE/ok')\n"
        "ami.log.info('wrongtype', {ok = tostring(ok2)})\n");
    expect_log(w, "msg=wrongtype", 1);
    EXPECT_LINE(w, "msg=top", "ok=false", "why=clear");
    EXPECT_LINE(w, "msg=wrongtype", "ok=false");
    lua_world_free(w);
}

static void without_an_http_section_requests_are_disabled(void **state)
{
    (void)state;
    lua_world_t *w = world_with_config(
        "ami.spawn(function()\n"
        "  local res, err = ami.http.get('BASE/ok')\n"
        "  ami.log.info('off', {res = tostring(res), kind = err:match('^([%w_]+):')})\n"
        "end)\n", NULL, 0);
    expect_log(w, "msg=off", 1);
    EXPECT_LINE(w, "msg=off", "res=nil", "kind=disabled");
    lua_world_free(w);
}

/* ---- bounds -------------------------------------------------------------------------- */

static void each_script_has_its_own_bound(void **state)
{
    (void)state;
    ami_httpc_config_t c = http_config();
    c.max_per_owner = 2;
    lua_world_options_t opt = {.nodes = 1, .http = &c};
    lua_world_t *w = lua_world_new(&opt);
    char a[512], b[512];
    snprintf(a, sizeof a,
             "for i = 1, 3 do ami.spawn(function()\n"
             "  local res, err = ami.http.get('http://127.0.0.1:%u/delay/300')\n"
             "  ami.log.info('a', {status = res and res.status, kind = err and err:match('^([%%w_]+):')})\n"
             "end) end\n",
             ami_sim_http_port(web));
    snprintf(b, sizeof b,
             "ami.spawn(function() ami.sleep(0.05)\n"
             "  local res, err = ami.http.get('http://127.0.0.1:%u/ok')\n"
             "  ami.log.info('b', {status = res and res.status})\n"
             "end)\n",
             ami_sim_http_port(web));
    lua_world_write(w, "a.lua", a);
    lua_world_write(w, "b.lua", b);
    lua_world_load(w);
    expect_log(w, "msg=b", 1);
    expect_log(w, "msg=a", 3);
    assert_int_equal(LINES(w, "msg=a", "status=200"), 2);
    EXPECT_LINE(w, "msg=a", "kind=limit");
    EXPECT_LINE(w, "msg=b", "status=200");
    assert_true(refused(w, "max_per_script") == 1);
    lua_world_free(w);
}

/* ---- cancellation ----------------------------------------------------------------------- */

static bool server_idle(void *ud)
{
    (void)ud;
    return ami_sim_http_stats(web).open == 0;
}

static bool server_has(void *ud)
{
    return ami_sim_http_stats(web).open >= *(uint64_t *)ud;
}

static bool transfer_in_flight(void *ud)
{
    lua_world_t *w = ud;
    return ami_httpc_active(w->httpc) == 1 && ami_sim_http_stats(web).open >= 1;
}

static void a_coroutine_cancelled_after_the_reload_grace_drops_its_transfer(void **state)
{
    (void)state;
    ami_httpc_config_t c = http_config();
    lua_world_t *w = world_with_config(
        "ami.spawn(function()\n"
        "  local res, err = ami.http.get('BASE/never')\n"
        "  ami.log.info('resumed after cancel')\n"
        "end)\n", &c, 200);
    /* the transfer itself, not only an open connection at the shared
     * server (one of the previous test's may not have closed yet) */
    assert_true(harness_run_until(w->loop, transfer_in_flight, w, 5000));
    lua_world_write(w, "test.lua", "-- nothing waits here\n");
    ami_err_t err;
    assert_int_equal(ami_lua_runtime_reload(w->rt, "test", &err), 0);
    assert_true(harness_run_until(w->loop, server_idle, NULL, 5000)); /* the connection went with it */
    assert_int_equal(ami_httpc_active(w->httpc), 0);
    assert_true(lua_world_metric(w, "ami_http_client_cancelled_total", NULL) == 1);
    lua_world_run_for(w, 100);
    assert_int_equal(lua_world_count_log(w, "resumed after cancel"), 0);
    lua_world_free(w);
}

static void shutdown_with_requests_in_flight_cancels_them(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "for i = 1, 5 do ami.spawn(function() ami.http.get('BASE/never') end) end\n");
    uint64_t five = 5;
    assert_true(harness_run_until(w->loop, server_has, &five, 5000));
    ami_lua_runtime_shutdown(w->rt);
    assert_int_equal(ami_httpc_active(w->httpc), 0);
    assert_true(harness_run_until(w->loop, server_idle, NULL, 5000));
    lua_world_free(w);
}

static void a_request_whose_yield_fails_leaves_no_transfer_behind(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.spawn(function()\n"
        "  local t = {3, 1, 2}\n"
        "  local ok, err = pcall(table.sort, t, function(a, b) ami.http.get('BASE/never'); return a < b end)\n"
        "  ami.log.info('sorted', {ok = tostring(ok), yield = tostring(err):match('yield') and 'across C'})\n"
        "  ami.sleep(0.2)\n"
        "  ami.log.info('still alive')\n"
        "end)\n");
    expect_log(w, "still alive", 1);
    EXPECT_LINE(w, "msg=sorted", "ok=false", "yield=\"across C\"");
    assert_int_equal(ami_httpc_active(w->httpc), 0);
    assert_true(harness_run_until(w->loop, server_idle, NULL, 5000));
    lua_world_free(w);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static void json_round_trips_and_decodes_answers(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "ami.spawn(function()\n"
        "  local res = assert(ami.http.get('BASE/json'))\n"
        "  local v = assert(ami.json.decode(res.body))\n"
        "  ami.log.info('decoded', {agent = v.agent, prio = v.priority, tag = v.tags[2],\n"
        "    to = v.transfer.to, null = tostring(v.transfer.after == ami.json.null), ok = tostring(v.ok)})\n"
        "  local text = assert(ami.json.encode({list = {1, 2, 'three'}, nested = {a = ami.json.null}}))\n"
        "  local back = ami.json.decode(text)\n"
        "  ami.log.info('round', {n = #back.list, third = back.list[3], null = tostring(back.nested.a == ami.json.null)})\n"
        "end)\n");
    expect_log(w, "msg=round", 1);
    EXPECT_LINE(w, "msg=decoded", "agent=1001", "prio=3", "tag=fr", "to=+33123456789", "null=true", "ok=true");
    EXPECT_LINE(w, "msg=round", "n=3", "third=three", "null=true");
    lua_world_free(w);
}

static void json_errors_are_values_and_bounds_hold(void **state)
{
    (void)state;
    lua_world_t *w = world_with(
        "local function kind(v, err) return v == nil and err:match('^([%w_]+):') or 'ok' end\n"
        "local loop = {}; loop.self = loop\n"
        "local wide = {}; for i = 1, 100001 do wide[i] = i end\n"
        "local cases = {\n"
        "  garbage = kind(ami.json.decode('{nope')), notstring = kind(ami.json.decode({})),\n"
        "  nan = kind(ami.json.decode('[NaN]')), hex = kind(ami.json.decode('[0x10]')),\n"
        "  deep = kind(ami.json.decode(string.rep('[', 200) .. string.rep(']', 200))),\n"
        "  big = kind(ami.json.decode('\"' .. string.rep('a', 1048577) .. '\"')),\n"
        "  fn = kind(ami.json.encode({f = print})), encnan = kind(ami.json.encode({0/0})),\n"
        "  cycle = kind(ami.json.encode(loop)), wide = kind(ami.json.encode(wide)),\n"
        "  longstr = kind(ami.json.encode({string.rep('b', 1048577)})),\n"
        "  fine = kind(ami.json.encode({1, 2, 3})),\n"
        "}\n"
        "for name, k in pairs(cases) do ami.log.info('json', {name = name, kind = k}) end\n"
        "ami.log.info('api', {n = (type(ami.json.encode) == 'function' and 1 or 0) + (type(ami.json.decode) == 'function' and 1 or 0)\n"
        "  + (ami.json.null ~= nil and 1 or 0), ro = not pcall(function() ami.json.x = 1 end),\n"
        "  keep = tostring(ami.json.encode_keep_buffer), new = tostring(ami.json.new)})\n");
    expect_log(w, "msg=api", 1);
    static const struct {
        const char *name, *kind;
    } expect[] = {{"garbage", "invalid"}, {"notstring", "invalid"}, {"nan", "invalid"}, {"hex", "invalid"},
                  {"deep", "invalid"},    {"big", "too_large"},     {"fn", "invalid"},  {"encnan", "invalid"},
                  {"cycle", "invalid"},   {"wide", "too_large"},    {"longstr", "too_large"}, {"fine", "ok"}};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        char name[64], kind[64];
        snprintf(name, sizeof name, "name=%s", expect[i].name);
        snprintf(kind, sizeof kind, "kind=%s", expect[i].kind);
        EXPECT_LINE(w, name, kind);
    }
    EXPECT_LINE(w, "msg=api", "n=3", "keep=nil", "new=nil", "ro=true");
    lua_world_free(w);
}

static int group_setup(void **state)
{
    (void)state;
    ami_err_t err;
    web = ami_sim_http_start(&err);
    return web ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    ami_sim_http_stop(web);
    return 0;
}

static int forget(void **state)
{
    (void)state;
    ami_sim_http_forget(web);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(request_yields_and_returns_status_headers_body_and_url, forget),
        cmocka_unit_test_setup(get_and_post_send_what_the_script_asked, forget),
        cmocka_unit_test_setup(failures_are_values_with_their_kind, forget),
        cmocka_unit_test_setup(hostile_values_are_refused_as_invalid_without_raising, forget),
        cmocka_unit_test_setup(messages_say_what_was_wrong, forget),
        cmocka_unit_test_setup(a_call_outside_a_coroutine_raises_a_clear_error, forget),
        cmocka_unit_test_setup(without_an_http_section_requests_are_disabled, forget),
        cmocka_unit_test_setup(each_script_has_its_own_bound, forget),
        cmocka_unit_test_setup(a_coroutine_cancelled_after_the_reload_grace_drops_its_transfer, forget),
        cmocka_unit_test_setup(shutdown_with_requests_in_flight_cancels_them, forget),
        cmocka_unit_test_setup(a_request_whose_yield_fails_leaves_no_transfer_behind, forget),
        cmocka_unit_test_setup(json_round_trips_and_decodes_answers, forget),
        cmocka_unit_test_setup(json_errors_are_values_and_bounds_hold, forget),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
