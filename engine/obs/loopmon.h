/*
 * The loop monitor: how long each iteration of the event loop keeps the
 * loop busy, and the stalls, when one iteration keeps it longer than a
 * threshold (a long C call no hook can stop, a blocking syscall, a host
 * pausing the process).
 *
 * On the loop: an ev_check (the loop woke up) and an ev_prepare (it is
 * about to sleep again) time every iteration's busy part (the client's
 * ami_loop_iteration_seconds histogram has their spread). A stall is
 * counted once the loop comes back (ami_loop_stalls_total,
 * ami_loop_longest_stall_seconds) and logged with its length.
 *
 * Off the loop: a small thread looks at the time of the loop's last
 * progress every quarter of the threshold, and logs a warning while a
 * stall goes on (the loop itself cannot say anything then). It touches
 * nothing but two atomics and the logger (thread-safe).
 *
 * ami_loopmon_recent_stall tells /healthz about a stall within the last
 * window, so that a health check done after a stall says so rather than
 * "ok". Loop thread only, except the monitor's own thread.
 */
#ifndef AMI_OBS_LOOPMON_H
#define AMI_OBS_LOOPMON_H

#include <stdbool.h>
#include <stdint.h>

#include "obs/log.h"
#include "obs/metrics.h"
#include "util/err.h"

struct ev_loop;

typedef struct ami_loopmon_config {
    uint32_t stall_ms;        /* an iteration longer than this is a stall; default 1000 */
    uint32_t window_ms;       /* /healthz reports a stall this long after it; default 60000 */
    bool thread;              /* watch from a thread too (logs during a stall); default true */
} ami_loopmon_config_t;

void ami_loopmon_config_default(ami_loopmon_config_t *cfg);

typedef struct ami_loopmon ami_loopmon_t;

ami_loopmon_t *ami_loopmon_new(struct ev_loop *loop, const ami_loopmon_config_t *cfg, ami_metrics_t *m,
                               ami_logger_t *log, ami_err_t *err);
void ami_loopmon_free(ami_loopmon_t *lm);

typedef struct ami_loopmon_stats {
    uint64_t iterations;
    uint64_t stalls;
    double longest_stall_s;
    double last_stall_s;      /* length of the last stall, 0 if none */
    double last_stall_ago_s;  /* seconds since it ended, or -1 if none */
} ami_loopmon_stats_t;

void ami_loopmon_stats(const ami_loopmon_t *lm, ami_loopmon_stats_t *out);

/* True (and its length and age in out) when a stall ended within the window. */
bool ami_loopmon_recent_stall(const ami_loopmon_t *lm, ami_loopmon_stats_t *out);

#endif
