/* High availability end to end, with the real binaries: three ami-engine
 * processes against one ami-sim (pbx1, pbx2) and one redis-server, a
 * script that Redirects every inbound call, and an observer counting the
 * Redirects per call at the simulator (tests/support/ha_cluster.h).
 *
 * The bound: lease 4 s renewed every 1 s, so a dead owner's servers are
 * taken within one lease of its last renew (the standby retries right after
 * the time to live Redis reports), i.e. within 4 s of its death plus a
 * scheduling tick. Assertions on time are generous (2 s of slack for a
 * loaded 2-core machine); the measured figures are printed, and
 * tests/bench/bench_ha_takeover gives min/median/max over many runs.
 *
 * Skipped when the binaries are not built or redis-server is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ha_cluster.h"

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define LEASE_MS 4000
#define SLACK_MS 2000

static ha_cluster_t C;

static void start(int engines, bool no_ha)
{
    if (access(AMI_BINARY_DIR "/ami-engine", X_OK) != 0 || access(AMI_BINARY_DIR "/ami-sim", X_OK) != 0 ||
        !redis_server_available()) {
        print_message("SKIP: build ami-engine and ami-sim, and install redis-server (tests/deps.sh)\n");
        skip();
    }
    ha_cluster_options_t o = {.engines = engines, .lease_ms = LEASE_MS, .renew_ms = 1000, .cps = "10",
                              .no_ha = no_ha};
    if (ha_cluster_start(&C, &o) < 0)
        fail_msg("the cluster did not start (see above)");
}

static int teardown(void **state)
{
    ha_cluster_stop(&C);
    proc_kill_all();
    return 0;
}

static void wait_single_owners(void)
{
    if (!ha_cluster_wait_single_owners(&C, 15000)) {
        for (int i = 0; i < HA_MAX_ENGINES; i++)
            if (C.engines[i].proc.pid)
                ha_cluster_dump(&C, i, "no single owner per server");
        fail_msg("not exactly one owner per server within 15 s");
    }
}

/* No call was ever redirected twice, and every Redirect belongs to a call. */
static void assert_never_twice(void)
{
    for (size_t i = 0; i < C.ncalls; i++)
        if (C.calls[i].redirects > 1)
            fail_msg("call %s on pbx%d was redirected %d times", C.calls[i].uid, C.calls[i].server + 1,
                     C.calls[i].redirects);
    assert_int_equal(C.stray_redirects, 0);
}

/* Inbound calls that started in [from, to]: how many, and how many were
 * redirected exactly once (the others are printed, with what the engines
 * said about them). */
static size_t inbound_between(int64_t from, int64_t to, int server, size_t *once, bool explain)
{
    size_t n = 0;
    *once = 0;
    for (size_t i = 0; i < C.ncalls; i++) {
        const ha_call_t *c = &C.calls[i];
        if (!c->inbound || c->started_ms < from || c->started_ms > to || (server >= 0 && c->server != server))
            continue;
        n++;
        *once += c->redirects == 1;
        if (c->redirects == 1 || !explain)
            continue;
        print_message("call %s on pbx%d: %d redirects\n", c->uid, c->server + 1, c->redirects);
        for (int e = 0; e < HA_MAX_ENGINES; e++) {
            char *line = C.engines[e].proc.pid ? ha_cluster_log_line(&C, e, L(c->uid)) : NULL;
            if (line)
                print_message("  e%d: %s\n", e + 1, line);
            free(line);
        }
    }
    return n;
}

static size_t calls_between(int64_t from, int64_t to, int server)
{
    size_t n = 0;
    for (size_t i = 0; i < C.ncalls; i++)
        n += C.calls[i].server == server && C.calls[i].started_ms >= from && C.calls[i].started_ms <= to;
    return n;
}

/* Every inbound call of server s started in [from, to] was redirected once. */
static void assert_all_redirected(int64_t from, int64_t to, int s)
{
    size_t once, n = inbound_between(from, to, s, &once, true);
    if (once != n)
        fail_msg("%zu of %zu inbound calls were redirected exactly once", once, n);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void three_instances_keep_one_owner_per_server_and_redirect_each_call_once(void **state)
{
    start(3, false);
    wait_single_owners();
    int64_t t0 = mono_ms();
    for (int round = 0; round < 30; round++) { /* 3 s of samples */
        for (int s = 0; s < HA_NSERVERS; s++) {
            int n;
            ha_cluster_owner(&C, s, &n, NULL);
            if (n != 1)
                fail_msg("pbx%d had %d owners in the steady state", s + 1, n);
        }
        ha_cluster_pump(&C, 100);
    }
    ha_cluster_pump(&C, 1500); /* the last calls' Redirects land */
    size_t once, n = inbound_between(t0, mono_ms() - 1500, -1, &once, true);
    print_message("steady state: %zu inbound calls, %zu redirected exactly once\n", n, once);
    assert_true(n >= 3);
    assert_int_equal(once, n);
    assert_never_twice();
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A log line's "ts=2026-12-04T19:05:48.273Z" in ms since the epoch. */
static int64_t line_wall_ms(const char *line)
{
    struct tm tm = {0};
    int ms = 0;
    if (sscanf(line, "ts=%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &ms) != 7)
        fail_msg("no timestamp in: %s", line);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* The takeover log line of the new owner for server s: its calls= count
 * and its uniqueids= list. */
static char *takeover_line(int engine, int s)
{
    char key[32];
    snprintf(key, sizeof key, "server_key=pbx%d", s + 1);
    return ha_cluster_log_line(&C, engine, L("takeover:", key));
}

static void killing_an_owner_hands_over_within_the_bound_and_reports_the_gap(void **state)
{
    start(3, false);
    wait_single_owners();
    int64_t steady = mono_ms();
    ha_cluster_pump(&C, 1000);
    int victim = ha_cluster_owner(&C, 0, NULL, NULL);
    int64_t killed = mono_ms(), killed_wall = wall_ms();
    ha_cluster_engine_signal(&C, victim, SIGKILL);
    int64_t seen;
    int heir = ha_cluster_wait_new_owner(&C, 0, victim, LEASE_MS + 10000, &seen);
    assert_true(heir >= 0);
    int64_t took = seen - killed;
    print_message("kill -9: pbx1 taken over by e%d after %lld ms (bound: lease %d ms; polled every 50 ms)\n",
                  heir + 1, (long long)took, LEASE_MS);
    assert_true(took <= LEASE_MS + SLACK_MS);
    wait_single_owners();
    ha_cluster_pump(&C, 1500);
    /* Every call of pbx1 that started while nobody acted is in the report:
     * at least those the observer saw between the kill and the takeover. */
    char *line = takeover_line(heir, 0);
    if (!line) {
        ha_cluster_dump(&C, heir, "no takeover report");
        fail_msg("e%d did not report the gap", heir + 1);
    }
    const char *calls = strstr(line, " calls=");
    const char *ids = strstr(line, "uniqueids=");
    assert_non_null(calls);
    assert_non_null(ids);
    size_t reported = strtoul(calls + 7, NULL, 10);
    /* When the heir took over, on the observer's clock (the log says when, in wall time). */
    int64_t taken = killed + (line_wall_ms(line) - killed_wall);
    size_t seen_in_gap = calls_between(killed + 50, taken - 50, 0);
    print_message("gap: %zu calls reported, %zu seen between the kill and the takeover\n", reported, seen_in_gap);
    assert_true(reported >= seen_in_gap);
    size_t unhandled = 0;
    for (size_t i = 0; i < C.ncalls; i++) {
        const ha_call_t *c = &C.calls[i];
        if (c->server != 0 || !c->inbound || c->redirects || c->started_ms < steady + 300 || c->started_ms > taken - 50)
            continue;
        unhandled++;
        if (!strstr(ids, c->uid) && !strstr(line, "complete=false"))
            fail_msg("call %s had no Redirect and is missing from the report: %s", c->uid, line);
    }
    print_message("gap: %zu inbound calls had no Redirect; all of them reported\n", unhandled);
    free(line);
    assert_all_redirected(seen + 500, mono_ms() - 1500, 0);
    assert_never_twice();
}

static void a_drained_instance_hands_over_at_once(void **state)
{
    start(3, false);
    wait_single_owners();
    int owner = ha_cluster_owner(&C, 0, NULL, NULL);
    int64_t sent = mono_ms();
    ha_cluster_engine_signal(&C, owner, SIGTERM);
    int64_t seen;
    int heir = ha_cluster_wait_new_owner(&C, 0, owner, 10000, &seen);
    assert_true(heir >= 0);
    print_message("SIGTERM: pbx1 handed over to e%d after %lld ms (an expired lease would take >= %d ms)\n",
                  heir + 1, (long long)(seen - sent), LEASE_MS - 1000);
    /* The lease was renewed at most 1 s before the signal: waiting for it to
     * expire would take at least 3 s. Under 2 s, it was given back. */
    assert_true(seen - sent < LEASE_MS - 2000);
    assert_true(proc_wait(&C.engines[owner].proc, 10000));
    assert_int_equal(C.engines[owner].proc.exit_code, 0);
    wait_single_owners();
    ha_cluster_pump(&C, 2500);
    assert_all_redirected(seen + 500, mono_ms() - 1500, 0);
    assert_never_twice();
}

static void redis_stopped_then_continued(void **state)
{
    start(2, false);
    wait_single_owners();
    int64_t paused = mono_ms();
    redis_server_pause(&C.redis);
    int n0, n1;
    ha_cluster_owner(&C, 0, &n0, NULL);
    ha_cluster_owner(&C, 1, &n1, NULL);
    assert_true(n0 == 1 && n1 == 1); /* owners keep acting while their leases last */
    assert_true(ha_cluster_wait_no_owner(&C, LEASE_MS + SLACK_MS));
    int64_t stopped = mono_ms();
    print_message("redis SIGSTOP: every owner stopped acting after %lld ms (lease %d ms)\n",
                  (long long)(stopped - paused), LEASE_MS);
    for (int i = 0; i < 2; i++)
        if (ha_cluster_log_count(&C, i, "lease acquired") > 0 &&
            !file_wait_contains(C.engines[i].log, "lease not renewed in time", 2000))
            fail_msg("e%d owned a server but did not say it stopped acting", i + 1);
    ha_cluster_pump(&C, 2500);
    int64_t resumed = mono_ms();
    redis_server_resume(&C.redis);
    /* Nobody acted without a lease: calls that started while nobody owned were not redirected. */
    size_t once, n = inbound_between(stopped + 300, resumed, -1, &once, false);
    print_message("while nobody owned: %zu inbound calls, %zu redirected\n", n, once);
    assert_int_equal(once, 0);
    wait_single_owners();
    int64_t back = mono_ms();
    print_message("redis SIGCONT: single owners again after %lld ms\n", (long long)(back - resumed));
    ha_cluster_pump(&C, 2500);
    assert_all_redirected(back + 500, mono_ms() - 1500, -1);
    assert_never_twice();
}

static void redis_restarted_without_its_data_gives_higher_epochs(void **state)
{
    start(2, false);
    wait_single_owners();
    uint64_t before[HA_NSERVERS] = {0}, after[HA_NSERVERS] = {0};
    for (int s = 0; s < HA_NSERVERS; s++)
        ha_cluster_owner(&C, s, NULL, &before[s]);
    assert_int_equal(redis_server_restart(&C.redis), 0);
    ha_cluster_pump(&C, 2000); /* the renews find the leases gone */
    wait_single_owners();
    for (int s = 0; s < HA_NSERVERS; s++) {
        ha_cluster_owner(&C, s, NULL, &after[s]);
        print_message("pbx%d epoch %llu -> %llu across the redis restart\n", s + 1,
                      (unsigned long long)before[s], (unsigned long long)after[s]);
        assert_true(after[s] > before[s]);
    }
    int64_t back = mono_ms();
    ha_cluster_pump(&C, 2500);
    assert_all_redirected(back + 500, mono_ms() - 1500, -1);
    assert_never_twice();
    /* Everything restarts at once, Redis without its data: no instance
     * remembers an epoch, and they still grow (Redis's clock seeds them). */
    for (int i = 0; i < 2; i++)
        ha_cluster_engine_signal(&C, i, SIGKILL);
    assert_int_equal(redis_server_restart(&C.redis), 0);
    for (int i = 0; i < 2; i++) {
        proc_wait(&C.engines[i].proc, 5000);
        assert_int_equal(ha_cluster_engine_start(&C, i), 0);
    }
    wait_single_owners();
    for (int s = 0; s < HA_NSERVERS; s++) {
        uint64_t fresh = 0;
        ha_cluster_owner(&C, s, NULL, &fresh);
        print_message("pbx%d epoch %llu -> %llu after restarting everything\n", s + 1,
                      (unsigned long long)after[s], (unsigned long long)fresh);
        assert_true(fresh > after[s]);
    }
}

static void without_an_ha_section_the_engine_runs_as_before(void **state)
{
    start(1, true);
    int status = 0;
    char *body = NULL;
    size_t len;
    ha_cluster_pump(&C, 1500);
    assert_int_equal(http_get("127.0.0.1", C.engines[0].mport, "/healthz", 2000, &status, &body, &len), 0);
    assert_null(strstr(body, "ha:"));
    free(body);
    assert_int_equal(http_get("127.0.0.1", C.engines[0].mport, "/metrics", 2000, &status, &body, &len), 0);
    assert_null(strstr(body, "ami_ha_"));
    assert_null(strstr(body, "ami_redis_"));
    free(body);
    int64_t t0 = mono_ms();
    ha_cluster_pump(&C, 4000);
    size_t once, n = inbound_between(t0, mono_ms() - 1500, -1, &once, true);
    assert_true(n >= 1);
    assert_int_equal(once, n);
    assert_never_twice();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(three_instances_keep_one_owner_per_server_and_redirect_each_call_once, teardown),
        cmocka_unit_test_teardown(killing_an_owner_hands_over_within_the_bound_and_reports_the_gap, teardown),
        cmocka_unit_test_teardown(a_drained_instance_hands_over_at_once, teardown),
        cmocka_unit_test_teardown(redis_stopped_then_continued, teardown),
        cmocka_unit_test_teardown(redis_restarted_without_its_data_gives_higher_epochs, teardown),
        cmocka_unit_test_teardown(without_an_ha_section_the_engine_runs_as_before, teardown),
    };
    if (getenv("AMI_TEST_FILTER")) /* run one: AMI_TEST_FILTER=redis_restarted* */
        cmocka_set_test_filter(getenv("AMI_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
