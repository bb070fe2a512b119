/*
 * The loop monitor (see loopmon.h): iteration times from an ev_check /
 * ev_prepare pair, stalls counted when the loop comes back, and a thread
 * that says so while a stall goes on.
 */
#include "obs/loopmon.h"

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "util/alloc.h"
#include "util/clock.h"

struct ami_loopmon {
    struct ev_loop *loop;
    ami_loopmon_config_t cfg;
    ami_logger_t *log;
    ev_check woke;
    ev_prepare sleeping;
    int64_t busy_since_ns;          /* when this iteration's work began; 0 while asleep */
    int64_t last_stall_end_ns;
    ami_loopmon_stats_t st;
    ami_counter_t *m_stalls;
    ami_gauge_t *m_longest;
    /* the watching thread */
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    _Atomic int64_t busy_since_shared; /* busy_since_ns, for the thread */
    _Atomic uint64_t stall_seq;        /* bumps at each iteration: the thread logs a stall once */
};

void ami_loopmon_config_default(ami_loopmon_config_t *cfg)
{
    cfg->stall_ms = 1000;
    cfg->window_ms = 60000;
    cfg->thread = true;
}

/* ---- on the loop ------------------------------------------------------------------ */

static void stall_over(ami_loopmon_t *lm, int64_t now, double secs)
{
    lm->st.stalls++;
    lm->st.last_stall_s = secs;
    if (secs > lm->st.longest_stall_s)
        lm->st.longest_stall_s = secs;
    lm->last_stall_end_ns = now;
    ami_counter_inc(lm->m_stalls);
    ami_gauge_set(lm->m_longest, lm->st.longest_stall_s);
    AMI_LOG(lm->log, AMI_LOG_WARN, "event loop stalled", AMI_F_DBL("seconds", secs),
            AMI_F_UINT("threshold_ms", lm->cfg.stall_ms),
            AMI_F_STR("hint", "a long call that nothing could interrupt ran on the loop (a huge sort, "
                              "encode or copy in a script), or the process was paused; every server "
                              "waited meanwhile"));
}

static void on_woke(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_loopmon_t *lm = w->data;
    lm->busy_since_ns = ami_now_ns();
    atomic_store_explicit(&lm->busy_since_shared, lm->busy_since_ns, memory_order_release);
}

static void on_sleeping(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_loopmon_t *lm = w->data;
    atomic_fetch_add_explicit(&lm->stall_seq, 1, memory_order_relaxed);
    atomic_store_explicit(&lm->busy_since_shared, 0, memory_order_release);
    if (!lm->busy_since_ns)
        return; /* the first iteration: nothing timed yet */
    int64_t now = ami_now_ns();
    double secs = (double)(now - lm->busy_since_ns) / 1e9;
    lm->busy_since_ns = 0;
    lm->st.iterations++;
    if (secs * 1000 >= lm->cfg.stall_ms)
        stall_over(lm, now, secs);
}

/* ---- the watching thread ------------------------------------------------------------ */

static void wait_quarter(ami_loopmon_t *lm)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t ns = (int64_t)lm->cfg.stall_ms * 1000000 / 4;
    until.tv_nsec += ns % 1000000000;
    until.tv_sec += ns / 1000000000 + until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&lm->wake, &lm->lock, &until);
}

static void *watch_main(void *arg)
{
    ami_loopmon_t *lm = arg;
    uint64_t reported = UINT64_MAX;
    pthread_mutex_lock(&lm->lock);
    while (!lm->stop) {
        wait_quarter(lm);
        int64_t since = atomic_load_explicit(&lm->busy_since_shared, memory_order_acquire);
        uint64_t seq = atomic_load_explicit(&lm->stall_seq, memory_order_relaxed);
        if (!since || seq == reported || (ami_now_ns() - since) / 1000000 < lm->cfg.stall_ms)
            continue;
        reported = seq;
        AMI_LOG(lm->log, AMI_LOG_WARN, "event loop stalled and still busy",
                AMI_F_DBL("seconds_so_far", (double)(ami_now_ns() - since) / 1e9),
                AMI_F_STR("hint", "nothing is served until it returns; under systemd, WatchdogSec "
                                  "restarts the engine if it never does"));
    }
    pthread_mutex_unlock(&lm->lock);
    return NULL;
}

static int start_thread(ami_loopmon_t *lm, ami_err_t *err)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lm->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&lm->lock, NULL);
    int rc = pthread_create(&lm->thread, NULL, watch_main, lm);
    if (rc != 0) {
        pthread_cond_destroy(&lm->wake);
        pthread_mutex_destroy(&lm->lock);
        return ami_err_set(err, AMI_E_IO, "cannot start the loop monitor's thread: %s", strerror(rc));
    }
    lm->thread_running = true;
    return 0;
}

static void stop_thread(ami_loopmon_t *lm)
{
    if (!lm->thread_running)
        return;
    pthread_mutex_lock(&lm->lock);
    lm->stop = true;
    pthread_cond_signal(&lm->wake);
    pthread_mutex_unlock(&lm->lock);
    pthread_join(lm->thread, NULL);
    pthread_cond_destroy(&lm->wake);
    pthread_mutex_destroy(&lm->lock);
    lm->thread_running = false;
}

/* ---- life ------------------------------------------------------------------------------ */

static void register_metrics(ami_loopmon_t *lm, ami_metrics_t *m)
{
    lm->m_stalls = ami_metrics_counter(m, "ami_loop_stalls_total",
                                       "Loop iterations longer than the stall threshold", NULL, NULL);
    lm->m_longest = ami_metrics_gauge(m, "ami_loop_longest_stall_seconds",
                                      "The longest loop stall since the engine started", NULL, NULL);
}

ami_loopmon_t *ami_loopmon_new(struct ev_loop *loop, const ami_loopmon_config_t *cfg, ami_metrics_t *m,
                               ami_logger_t *log, ami_err_t *err)
{
    ami_loopmon_t *lm = ami_calloc(1, sizeof *lm);
    if (!lm) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the loop monitor");
        return NULL;
    }
    lm->loop = loop;
    ami_loopmon_config_default(&lm->cfg);
    if (cfg)
        lm->cfg = *cfg;
    if (!lm->cfg.stall_ms)
        lm->cfg.stall_ms = 1000;
    lm->log = log;
    register_metrics(lm, m);
    if (lm->cfg.thread && start_thread(lm, err) < 0) {
        ami_free(lm);
        return NULL;
    }
    ev_check_init(&lm->woke, on_woke);
    ev_prepare_init(&lm->sleeping, on_sleeping);
    lm->woke.data = lm->sleeping.data = lm;
    /* Highest priority: the check runs first after the wake-up, the prepare
     * last before the sleep, so the whole iteration is timed. */
    ev_set_priority(&lm->woke, EV_MAXPRI);
    ev_set_priority(&lm->sleeping, EV_MINPRI);
    ev_check_start(loop, &lm->woke);
    ev_prepare_start(loop, &lm->sleeping);
    /* Neither keeps the loop alive on its own. */
    ev_unref(loop);
    ev_unref(loop);
    return lm;
}

void ami_loopmon_free(ami_loopmon_t *lm)
{
    if (!lm)
        return;
    ev_ref(lm->loop);
    ev_ref(lm->loop);
    ev_check_stop(lm->loop, &lm->woke);
    ev_prepare_stop(lm->loop, &lm->sleeping);
    stop_thread(lm);
    ami_free(lm);
}

void ami_loopmon_stats(const ami_loopmon_t *lm, ami_loopmon_stats_t *out)
{
    *out = lm->st;
    out->last_stall_ago_s = lm->last_stall_end_ns ? (double)(ami_now_ns() - lm->last_stall_end_ns) / 1e9 : -1;
}

bool ami_loopmon_recent_stall(const ami_loopmon_t *lm, ami_loopmon_stats_t *out)
{
    ami_loopmon_stats(lm, out);
    return out->last_stall_ago_s >= 0 && out->last_stall_ago_s * 1000 < lm->cfg.window_ms;
}
