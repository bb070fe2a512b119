/*
 * Busy polling: after input arrives, the loop keeps polling without
 * sleeping for a short window before it blocks again.
 *
 * Why: a loop that blocks in epoll_wait between two messages pays a
 * wake-up for each (the scheduler switching the thread back in, and on a
 * virtual machine the host waking an idle virtual CPU): tens of
 * microseconds of latency per event at moderate rates, which is most of
 * the event-to-action latency. Polling for `window` after the last input
 * keeps the thread on its CPU while traffic is dense, so the next message
 * is seen as soon as it lands; once input has been quiet for the window,
 * the loop sleeps as before. The price is CPU: a thread that spins through
 * every gap shorter than the window, so the option is off by default and
 * meant for engines with a core to spare.
 *
 * ami_loop_busy_poll_seconds_total says what it costs: the time spent
 * spinning. The input clock is the read budget's (ami_conn_pace_t.started_ns: when
 * the latest loop iteration with input began), so the connections need not
 * know this exists. The watchers are unref'd: they never keep ev_run alive.
 * Loop thread only.
 */
#ifndef AMI_CLUSTER_BUSY_POLL_H
#define AMI_CLUSTER_BUSY_POLL_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include <ami/client.h>

#include "obs/metrics.h"
#include "session/conn.h"

typedef struct ami_busy_poll {
    struct ev_loop *loop;
    const ami_conn_pace_t *pace;
    int64_t window_ns;
    ev_prepare decide; /* before each poll: spin or sleep */
    ev_idle spin;      /* while active, the poll does not block */
    bool started;
    int64_t spin_since_ns;
    ami_counter_t *spin_seconds; /* ami_loop_busy_poll_seconds_total; NULL if refused */
} ami_busy_poll_t;

void ami_busy_poll_init(ami_busy_poll_t *bp, struct ev_loop *loop, const ami_conn_pace_t *pace,
                        ami_metrics_t *metrics);
/* 0 turns it off; above AMI_BUSY_POLL_MAX_US is clamped to it. */
void ami_busy_poll_set(ami_busy_poll_t *bp, uint32_t window_us);
/* True while the loop polls without blocking. */
bool ami_busy_poll_spinning(const ami_busy_poll_t *bp);
void ami_busy_poll_stop(ami_busy_poll_t *bp);

#endif
