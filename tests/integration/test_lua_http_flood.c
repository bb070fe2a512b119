/* 1,000 concurrent slow HTTP requests from scripts while an AMI event flood
 * runs through a Lua handler: every request is answered, the events keep
 * flowing, and no loop iteration comes near the time one answer takes (a
 * loop that waited for an answer, a DNS lookup or a connect would show an
 * iteration at least that long). Iterations are timed with an ev_check
 * (work starts after the poll) and an ev_prepare (about to poll again); the
 * spread is printed as a figure, the bound asserted is the answer's delay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "httpc/httpc.h"
#include "lua_world.h"
#include "sim/sim_http.h"
#include "util/clock.h"

#define REQUESTS 1000
#define DELAY_MS 1500
#define MAX_SAMPLES (1u << 22)

typedef struct timing {
    ev_check start;
    ev_prepare end;
    ev_timer watch;
    int64_t began_ns;
    uint32_t *samples_us;
    size_t n;
    lua_world_t *w;
    ami_sim_http_t *web;
    uint32_t max_active;
    uint64_t max_open;
} timing_t;

static void on_start(struct ev_loop *loop, ev_check *c, int revents)
{
    (void)loop;
    (void)revents;
    timing_t *t = c->data;
    t->began_ns = ami_now_ns();
}

static void on_end(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)revents;
    timing_t *t = p->data;
    if (t->began_ns && t->n < MAX_SAMPLES)
        t->samples_us[t->n++] = (uint32_t)((ami_now_ns() - t->began_ns) / 1000);
    t->began_ns = 0;
}

static void on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    timing_t *t = w->data;
    uint32_t active = ami_httpc_active(t->w->httpc);
    uint64_t open = ami_sim_http_stats(t->web).open;
    if (active > t->max_active)
        t->max_active = active;
    if (open > t->max_open)
        t->max_open = open;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const timing_t *t, double p)
{
    size_t i = (size_t)(p * (double)(t->n - 1));
    return t->samples_us[i] / 1000.0;
}

static void thousand_slow_requests_during_an_event_flood_never_stall_the_loop(void **state)
{
    (void)state;
    ami_err_t err;
    ami_sim_http_t *web = ami_sim_http_start(&err);
    assert_non_null(web);
    ami_httpc_config_t hc;
    ami_httpc_config_default(&hc);
    hc.max_concurrent = REQUESTS + 100;
    hc.max_per_owner = REQUESTS + 100;
    hc.timeout_ms = 60000;
    hc.connect_timeout_ms = 30000;
    lua_world_options_t opt = {.nodes = 1, .http = &hc, .budget_ms = 200};
    lua_world_t *w = lua_world_new(&opt);
    char script[2048];
    /* One event starts every request (spawned coroutines run every loop
     * iteration, flood or not); it is sent before the flood, so that a
     * session the simulator drops for reading too slowly under a loaded
     * machine cannot lose it. */
    snprintf(script, sizeof script,
             "local events, answered, failed = 0, 0, 0\n"
             "ami.on('*', function(ev) local a, b = ev.Channel, ev.Uniqueid; events = events + 1 end)\n"
             "local function one()\n"
             "  local res, err = ami.http.get('http://127.0.0.1:%u/delay/%d')\n"
             "  if res and res.status == 200 then answered = answered + 1\n"
             "  else failed = failed + 1; ami.log.warn('request failed', {err = err}) end\n"
             "  if answered + failed == %d then\n"
             "    ami.log.info('all answered', {answered = answered, failed = failed, events = events})\n"
             "  end\n"
             "end\n"
             "ami.on({Event = 'UserEvent', UserEvent = 'HttpGo'}, function()\n"
             "  for i = 1, %d do assert(ami.spawn(one)) end\n"
             "end)\n",
             ami_sim_http_port(web), DELAY_MS, REQUESTS, REQUESTS);
    lua_world_write(w, "flood.lua", script);
    lua_world_load(w);

    static uint32_t samples[MAX_SAMPLES]; /* static: a failed assertion must not leak it */
    timing_t t = {.w = w, .web = web, .samples_us = samples};
    ev_check_init(&t.start, on_start);
    ev_prepare_init(&t.end, on_end);
    ev_timer_init(&t.watch, on_watch, 0.01, 0.01);
    t.start.data = t.end.data = t.watch.data = &t;
    ev_set_priority(&t.start, EV_MAXPRI);
    ev_set_priority(&t.end, EV_MINPRI);

    ev_check_start(w->loop, &t.start);
    ev_prepare_start(w->loop, &t.end);
    ev_timer_start(w->loop, &t.watch);
    int64_t t0 = ami_now_ns();
    lua_world_inject(w, 0, "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: HttpGo\r\n\r\n");
    ami_sim_faults_t flood = {.flood_events_per_sec = -1};
    ami_sim_node_set_faults(w->nodes[0], &flood);
    bool done = lua_world_wait_log(w, "msg=\"all answered\"", 1, 120000);
    double secs = (double)(ami_now_ns() - t0) / 1e9;
    ev_check_stop(w->loop, &t.start);
    ev_prepare_stop(w->loop, &t.end);
    ev_timer_stop(w->loop, &t.watch);
    ami_sim_faults_t calm = {0};
    ami_sim_node_set_faults(w->nodes[0], &calm);
    if (!done) {
        size_t len = w->lines.len;
        fail_msg("not every request was answered in 120 s; the log ends:\n%s",
                 len > 4000 ? log_capture_text(&w->lines) + len - 4000 : log_capture_text(&w->lines));
    }

    qsort(t.samples_us, t.n, sizeof *t.samples_us, cmp_u32);
    double max_ms = t.samples_us[t.n - 1] / 1000.0;
    ami_lua_stats_t st;
    ami_lua_runtime_stats(w->rt, &st);
    printf("figure: %d requests answered (%d ms each) in %.2f s during the flood; %zu loop iterations: "
           "p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms; in flight at once: %u (server saw %llu "
           "connections open); handler runs %llu\n",
           REQUESTS, DELAY_MS, secs, t.n, pct_ms(&t, 0.5), pct_ms(&t, 0.99), pct_ms(&t, 0.999), max_ms,
           t.max_active, (unsigned long long)t.max_open, (unsigned long long)st.handler_runs);
    assert_int_equal(lua_world_count_log(w, "answered=1000"), 1);
    assert_int_equal(lua_world_count_log(w, "failed=0"), 1);
    assert_int_equal(lua_world_count_log(w, "request failed"), 0);
    assert_true(t.max_active >= REQUESTS);       /* really all in flight together */
    assert_true(st.handler_runs > 10 * REQUESTS); /* the flood really flowed through Lua meanwhile */
    /* Not a wall-clock bound on one iteration (a busy machine can stretch a
     * few): a design that waited for answers would stall once per request. */
    size_t stalls = 0;
    for (size_t i = 0; i < t.n; i++)
        stalls += t.samples_us[i] / 1000.0 >= DELAY_MS / 2.0;
    if (stalls > REQUESTS / 100)
        fail_msg("%zu loop iterations lasted %d ms or more: something waited (an answer takes %d ms)", stalls,
                 DELAY_MS / 2, DELAY_MS);
    lua_world_free(w);
    ami_sim_http_stop(web);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(thousand_slow_requests_during_an_event_flood_never_stall_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
