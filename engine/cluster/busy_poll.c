#include "cluster/busy_poll.h"

#include "util/clock.h"

static void set_spinning(ami_busy_poll_t *bp, bool on, int64_t now)
{
    if (on == (bool)ev_is_active(&bp->spin))
        return;
    if (on) {
        ev_idle_start(bp->loop, &bp->spin);
        ev_unref(bp->loop);
        bp->spin_since_ns = now;
    } else {
        ev_ref(bp->loop);
        ev_idle_stop(bp->loop, &bp->spin);
        if (bp->spin_seconds)
            ami_counter_add(bp->spin_seconds, (double)(now - bp->spin_since_ns) / 1e9);
    }
}

/* The last prepare before the poll (lowest priority): input handled by this
 * iteration already moved the clock. */
static void on_decide(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_busy_poll_t *bp = w->data;
    int64_t last_input = bp->pace->started_ns, now = ami_now_ns();
    set_spinning(bp, last_input && now - last_input < bp->window_ns, now);
}

static void on_spin(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

void ami_busy_poll_init(ami_busy_poll_t *bp, struct ev_loop *loop, const ami_conn_pace_t *pace,
                        ami_metrics_t *metrics)
{
    *bp = (ami_busy_poll_t){.loop = loop, .pace = pace};
    bp->spin_seconds = ami_metrics_counter(metrics, "ami_loop_busy_poll_seconds_total",
                                           "Time the loop spent polling without sleeping (busy_poll_us)", NULL, NULL);
    ev_prepare_init(&bp->decide, on_decide);
    ev_idle_init(&bp->spin, on_spin);
    bp->decide.data = bp->spin.data = bp;
    ev_set_priority(&bp->decide, EV_MINPRI);
    ev_set_priority(&bp->spin, EV_MINPRI);
}

void ami_busy_poll_set(ami_busy_poll_t *bp, uint32_t window_us)
{
    if (window_us > AMI_BUSY_POLL_MAX_US)
        window_us = AMI_BUSY_POLL_MAX_US;
    bp->window_ns = (int64_t)window_us * 1000;
    if (window_us && !bp->started) {
        ev_prepare_start(bp->loop, &bp->decide);
        ev_unref(bp->loop);
        bp->started = true;
    } else if (!window_us) {
        ami_busy_poll_stop(bp);
    }
}

bool ami_busy_poll_spinning(const ami_busy_poll_t *bp)
{
    return ev_is_active(&bp->spin);
}

void ami_busy_poll_stop(ami_busy_poll_t *bp)
{
    set_spinning(bp, false, ami_now_ns());
    if (bp->started) {
        ev_ref(bp->loop);
        ev_prepare_stop(bp->loop, &bp->decide);
        bp->started = false;
    }
}
