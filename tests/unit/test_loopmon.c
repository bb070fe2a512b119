/* The loop monitor times iterations, counts a stall once the loop comes
 * back, says so from its thread while the stall goes on, and reports it to
 * /healthz for a while after. The stall here is a deliberate blocking sleep
 * inside a timer callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <string.h>
#include <time.h>

#include "obs/loopmon.h"
#include "log_capture.h"

static log_capture_t lines;

static void block_ms(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    long ms = (long)(intptr_t)t->data;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static ami_logger_t *capturing_logger(void)
{
    return log_capture_logger(&lines, AMI_LOG_INFO, AMI_LOG_FMT_LOGFMT, 0);
}

static void stop_loop(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* One iteration blocks for `block` ms; the loop goes on a little after it
 * (a stall is measured when the loop is about to sleep again). */
static void run_with_blocking_timer(struct ev_loop *loop, long block)
{
    ev_timer t, end;
    ev_timer_init(&t, block_ms, 0.01, 0.);
    t.data = (void *)(intptr_t)block;
    ev_timer_start(loop, &t);
    ev_now_update(loop);
    ev_timer_init(&end, stop_loop, 0.01 + block / 1000.0 + 0.05, 0.);
    ev_timer_start(loop, &end);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
    ev_timer_stop(loop, &end);
}

static void a_long_iteration_is_a_stall_counted_logged_and_reported(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_metrics_t *m = ami_metrics_new(100);
    ami_logger_t *log = capturing_logger();
    ami_loopmon_config_t cfg = {.stall_ms = 200, .window_ms = 60000, .thread = true};
    ami_loopmon_t *lm = ami_loopmon_new(loop, &cfg, m, log, NULL);
    assert_non_null(lm);
    ami_loopmon_stats_t st;
    run_with_blocking_timer(loop, 50); /* busy, but under the threshold */
    assert_false(ami_loopmon_recent_stall(lm, &st));
    assert_int_equal(st.stalls, 0);
    run_with_blocking_timer(loop, 600);
    assert_true(ami_loopmon_recent_stall(lm, &st));
    assert_int_equal(st.stalls, 1);
    assert_true(st.last_stall_s >= 0.6 && st.longest_stall_s >= 0.6);
    double v;
    assert_int_equal(ami_metrics_value(m, "ami_loop_stalls_total", NULL, &v), 0);
    assert_true(v == 1.0);
    assert_true(st.iterations >= 2);
    ami_logger_free(log); /* flushes the thread's lines too */
    assert_non_null(strstr(log_capture_text(&lines), "event loop stalled and still busy"));
    assert_non_null(strstr(log_capture_text(&lines), "msg=\"event loop stalled\" seconds=0.6"));
    ami_loopmon_free(lm);
    ami_metrics_free(m);
    ev_loop_destroy(loop);
    log_capture_free(&lines);
}

static void a_stall_is_reported_only_within_the_window(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_metrics_t *m = ami_metrics_new(100);
    ami_loopmon_config_t cfg = {.stall_ms = 100, .window_ms = 300, .thread = false};
    ami_loopmon_t *lm = ami_loopmon_new(loop, &cfg, m, NULL, NULL);
    run_with_blocking_timer(loop, 150);
    ami_loopmon_stats_t st;
    assert_true(ami_loopmon_recent_stall(lm, &st));
    struct timespec ts = {0, 400 * 1000000};
    nanosleep(&ts, NULL);
    assert_false(ami_loopmon_recent_stall(lm, &st));
    assert_int_equal(st.stalls, 1);
    ami_loopmon_free(lm);
    ami_metrics_free(m);
    ev_loop_destroy(loop);
}

static void the_monitor_does_not_keep_the_loop_alive(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_metrics_t *m = ami_metrics_new(100);
    ami_loopmon_t *lm = ami_loopmon_new(loop, NULL, m, NULL, NULL);
    ev_run(loop, 0); /* returns at once: nothing else is active */
    ami_loopmon_free(lm);
    ami_metrics_free(m);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_long_iteration_is_a_stall_counted_logged_and_reported),
        cmocka_unit_test(a_stall_is_reported_only_within_the_window),
        cmocka_unit_test(the_monitor_does_not_keep_the_loop_alive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
