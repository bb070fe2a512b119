/*
 * What the bench programs share: removing their scripts folder, the
 * simulator's loop on its own thread, process memory and time readings,
 * the timing of every loop iteration, CPU pinning.
 */
#ifndef AMI_BENCH_UTIL_H
#define AMI_BENCH_UTIL_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Remove bench.lua and the folder. */
void bench_remove_dir(const char *dir);
/* pthread entry: ami_sim_run(sim, 0) until ami_sim_stop. */
void *bench_sim_thread(void *sim);
/* VmRSS of this process in KiB, or -1. */
long bench_vmrss_kib(void);
double bench_now_s(void);
/* CPU time of the calling thread, seconds. */
double bench_thread_cpu_s(void);
/* Times the calling thread was preempted (involuntary context switches). */
long bench_thread_preempted(void);
/* Pin the calling thread to one CPU; false if the kernel refused. */
bool bench_pin(int cpu);
/* Real-time (SCHED_FIFO) priority for the calling thread, so that other
 * programs on the machine do not preempt it; false if refused (not root). */
bool bench_realtime(void);

/* Every loop iteration timed while sampling: an ev_check at EV_MAXPRI marks
 * when the loop starts working after a poll, an ev_prepare at EV_MINPRI when
 * it is about to poll again; durations go into a preallocated array. */
typedef struct bench_iter {
    struct ev_loop *loop;
    ev_check start;
    ev_prepare end;
    int64_t started_ns;
    bool sampling;
    uint32_t *samples; /* ns, clamped */
    size_t n, cap;
    bool truncated;
} bench_iter_t;

typedef struct bench_spread {
    double p50_us, p99_us, p999_us, max_us;
    double busy_s; /* sum of the iterations */
    size_t n;
} bench_spread_t;

/* Run loop for secs of loop time, with stop as the timer that ends it. */
void bench_run_for(struct ev_loop *loop, ev_timer *stop, double secs);

int bench_iter_start(bench_iter_t *it, struct ev_loop *loop, size_t cap);
void bench_iter_sample(bench_iter_t *it, bool on); /* on: clears earlier samples */
/* Sorts the samples taken and sums them up. */
void bench_iter_spread(bench_iter_t *it, bench_spread_t *out);
void bench_iter_stop(bench_iter_t *it);
/* Percentiles of n ns samples (sorted in place), in microseconds. */
void bench_spread_of(uint32_t *ns, size_t n, bench_spread_t *out);

#endif
