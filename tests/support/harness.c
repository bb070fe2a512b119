#include "harness.h"

#include <ev.h>

#include "util/clock.h"

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

bool harness_run_until(struct ev_loop *loop, harness_pred_fn pred, void *ud, uint32_t timeout_ms)
{
    int64_t deadline = ami_now_ms() + timeout_ms;
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.005, 0.005); /* wake up to re-check the predicate */
    ev_timer_start(loop, &tick);
    bool ok = pred(ud);
    while (!ok && ami_now_ms() < deadline) {
        ev_run(loop, EVRUN_ONCE);
        ok = pred(ud);
    }
    ev_timer_stop(loop, &tick);
    return ok;
}

static bool never(void *ud)
{
    (void)ud;
    return false;
}

void harness_run_for(struct ev_loop *loop, uint32_t ms)
{
    harness_run_until(loop, never, NULL, ms);
}
