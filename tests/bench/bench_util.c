#include "bench_util.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim/sim.h"
#include "util/clock.h"

void bench_remove_dir(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bench.lua", dir);
    unlink(path);
    rmdir(dir);
}

void *bench_sim_thread(void *sim)
{
    ami_sim_run(sim, 0);
    return NULL;
}

long bench_vmrss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

double bench_now_s(void)
{
    return (double)ami_now_ns() / 1e9;
}

double bench_thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long bench_thread_preempted(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nivcsw : -1;
}

bool bench_pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

bool bench_realtime(void)
{
    struct sched_param sp = {.sched_priority = 10};
    return pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
}

static void on_iter_start(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    ((bench_iter_t *)w->data)->started_ns = ami_now_ns();
}

static void on_iter_end(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    bench_iter_t *it = w->data;
    if (it->sampling && it->started_ns) {
        int64_t d = ami_now_ns() - it->started_ns;
        if (it->n < it->cap)
            it->samples[it->n++] = d > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        else
            it->truncated = true;
    }
    it->started_ns = 0;
}

int bench_iter_start(bench_iter_t *it, struct ev_loop *loop, size_t cap)
{
    memset(it, 0, sizeof *it);
    it->samples = malloc(cap * sizeof *it->samples);
    if (!it->samples)
        return -1;
    it->cap = cap;
    it->loop = loop;
    ev_check_init(&it->start, on_iter_start);
    ev_prepare_init(&it->end, on_iter_end);
    it->start.data = it->end.data = it;
    ev_set_priority(&it->start, EV_MAXPRI);
    ev_set_priority(&it->end, EV_MINPRI);
    ev_check_start(loop, &it->start);
    ev_prepare_start(loop, &it->end);
    return 0;
}

void bench_iter_sample(bench_iter_t *it, bool on)
{
    if (on) {
        it->n = 0;
        it->truncated = false;
    }
    it->sampling = on;
}

static void on_run_for_end(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

void bench_run_for(struct ev_loop *loop, ev_timer *stop, double secs)
{
    ev_timer_init(stop, on_run_for_end, secs, 0.);
    ev_timer_start(loop, stop);
    ev_run(loop, 0);
    ev_timer_stop(loop, stop);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const uint32_t *s, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)s[i < n ? i : n - 1] / 1000.0;
}

void bench_spread_of(uint32_t *ns, size_t n, bench_spread_t *out)
{
    memset(out, 0, sizeof *out);
    qsort(ns, n, sizeof *ns, cmp_u32);
    for (size_t i = 0; i < n; i++)
        out->busy_s += (double)ns[i] / 1e9;
    out->n = n;
    out->p50_us = pct_us(ns, n, 0.50);
    out->p99_us = pct_us(ns, n, 0.99);
    out->p999_us = pct_us(ns, n, 0.999);
    out->max_us = n ? (double)ns[n - 1] / 1000.0 : 0;
}

void bench_iter_spread(bench_iter_t *it, bench_spread_t *out)
{
    bench_spread_of(it->samples, it->n, out);
}

void bench_iter_stop(bench_iter_t *it)
{
    if (!it->samples)
        return;
    ev_check_stop(it->loop, &it->start);
    ev_prepare_stop(it->loop, &it->end);
    free(it->samples);
    it->samples = NULL;
}
