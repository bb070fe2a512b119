/*
 * The soak's samples and their verdict. Each sample is taken right after a
 * full collection of the current Lua state, so what is left is what is
 * live. Two readings of "no growth":
 *
 *   the least-squares slope per hour of each series (live bytes, the C
 *   engine alone, RSS, open descriptors), judged on long runs only (a slope
 *   over a few minutes of noisy samples says little);
 *
 *   troughs: (min of the last samples) - (min of all): live bytes on every
 *   run (a gross leak), and the C engine per forced-disconnect cycle between
 *   the two minima on long runs. The C engine is judged without its
 *   connections' buffers: a parser's buffer keeps its high-water mark (up to
 *   512 KiB, by design), so it steps up by 64 KiB when a burst first needs
 *   it, at a random moment of the run, and that step is not a leak. What is
 *   left holds the live call state's table, which fills with the calls in
 *   progress over the first minute or so and then moves with them (+-10 KiB
 *   here): a short run sees it fill, so short runs print this figure without
 *   judging it (the exact per-cycle check is test_heartbeat's, over 1000
 *   forced disconnects). The 4 KiB floor is for one-off growth such as a
 *   metric series for a hangup cause seen for the first time.
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "soak.h"

/* Tolerances: troughs (any run) and slopes per hour (long runs). */
#define TROUGH_TOTAL (256 * 1024)     /* Lua heaps wander between generations */
#define TROUGH_C_FLOOR (4 * 1024)
#define TROUGH_C_PER_CYCLE 64.0
#define SLOPE_TOTAL (256.0 * 1024)    /* bytes per hour */
#define SLOPE_C (32.0 * 1024)
#define SLOPE_RSS (2.0 * 1024 * 1024)
#define SLOPE_FDS 1.0

int soak_trend_add(soak_trend_t *tr, const soak_sample_t *s)
{
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? tr->cap * 2 : 256;
        soak_sample_t *grown = realloc(tr->v, cap * sizeof *grown);
        if (!grown)
            return -1;
        tr->v = grown;
        tr->cap = cap;
    }
    tr->v[tr->n++] = *s;
    return 0;
}

void soak_trend_free(soak_trend_t *tr)
{
    free(tr->v);
    tr->v = NULL;
    tr->n = tr->cap = 0;
}

long soak_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the one opendir holds */
}

typedef double (*series_fn)(const soak_sample_t *s);

static double total_of(const soak_sample_t *s) { return (double)s->live; }
static double judged_total_of(const soak_sample_t *s) { return (double)(s->live - s->buffers); }
static double c_of(const soak_sample_t *s) { return (double)(s->live - s->lua - s->buffers); }
static double buffers_of(const soak_sample_t *s) { return (double)s->buffers; }
static double lua_of(const soak_sample_t *s) { return (double)s->lua; }
static double rss_of(const soak_sample_t *s) { return (double)s->rss_kib * 1024.0; }
static double fds_of(const soak_sample_t *s) { return (double)s->fds; }

/* Least-squares slope of the series against time, per hour. */
static double slope_per_hour(const soak_trend_t *tr, series_fn f)
{
    double mt = 0, my = 0;
    for (size_t i = 0; i < tr->n; i++) {
        mt += tr->v[i].t;
        my += f(&tr->v[i]);
    }
    mt /= (double)tr->n;
    my /= (double)tr->n;
    double sty = 0, stt = 0;
    for (size_t i = 0; i < tr->n; i++) {
        double dt = tr->v[i].t - mt;
        sty += dt * (f(&tr->v[i]) - my);
        stt += dt * dt;
    }
    return stt > 0 ? sty / stt * 3600.0 : 0;
}

typedef struct trough {
    double min, growth;
    uint64_t cycles;
    double per_cycle;
} trough_t;

static trough_t trough(const soak_trend_t *tr, series_fn f, size_t tail)
{
    size_t lo = 0, tlo = tr->n - tail;
    for (size_t i = 1; i < tr->n; i++)
        if (f(&tr->v[i]) < f(&tr->v[lo]))
            lo = i;
    for (size_t i = tr->n - tail + 1; i < tr->n; i++)
        if (f(&tr->v[i]) < f(&tr->v[tlo]))
            tlo = i;
    trough_t t = {.min = f(&tr->v[lo]), .growth = f(&tr->v[tlo]) - f(&tr->v[lo])};
    t.cycles = tr->v[tlo].cycles > tr->v[lo].cycles ? tr->v[tlo].cycles - tr->v[lo].cycles : 0;
    t.per_cycle = t.growth > 0 ? t.growth / (double)(t.cycles ? t.cycles : 1) : 0;
    return t;
}

static void print_series(const soak_trend_t *tr, const char *name, series_fn f, const char *unit, double scale)
{
    double mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < tr->n; i++) {
        double v = f(&tr->v[i]);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    printf("  %-22s first %10.0f  min %10.0f  max %10.0f  last %10.0f %-4s slope %+10.1f %s/h\n", name,
           f(&tr->v[0]) / scale, mn / scale, mx / scale, f(&tr->v[tr->n - 1]) / scale, unit,
           slope_per_hour(tr, f) / scale, unit);
}

bool soak_trend_report(const soak_trend_t *tr, bool judge_slopes, size_t tail_min)
{
    if (tr->n < 4) {
        printf("memory: FAIL: %zu samples; run longer\n", tr->n);
        return false;
    }
    printf("samples: %zu, every %.0f s from %.0f s to %.0f s (after a full Lua collection)\n", tr->n,
           tr->n > 1 ? (tr->v[tr->n - 1].t - tr->v[0].t) / (double)(tr->n - 1) : 0, tr->v[0].t,
           tr->v[tr->n - 1].t);
    print_series(tr, "live bytes (C + Lua)", total_of, "B", 1);
    print_series(tr, "live bytes w/o buffers", judged_total_of, "B", 1);
    print_series(tr, "C engine w/o buffers", c_of, "B", 1);
    print_series(tr, "connection buffers", buffers_of, "B", 1);
    print_series(tr, "Lua heaps", lua_of, "B", 1);
    print_series(tr, "VmRSS", rss_of, "KiB", 1024);
    print_series(tr, "open descriptors", fds_of, "", 1);

    size_t tail = tr->n / 4 > tail_min ? tr->n / 4 : tail_min;
    if (tail > tr->n / 2)
        tail = tr->n / 2;
    trough_t all = trough(tr, judged_total_of, tail), c = trough(tr, c_of, tail);
    printf("troughs: live bytes w/o buffers %+.0f (min of the last %zu samples - min of all); C engine w/o buffers %+.0f, "
           "%+.1f per forced-disconnect cycle over %llu cycles\n",
           all.growth, tail, c.growth, c.per_cycle, (unsigned long long)c.cycles);
    bool ok = true;
    if (all.growth > TROUGH_TOTAL) {
        printf("memory: FAIL: live bytes' troughs grew by %.0f (tolerance %d)\n", all.growth, TROUGH_TOTAL);
        ok = false;
    }
    if (judge_slopes && c.growth > TROUGH_C_FLOOR && c.per_cycle > TROUGH_C_PER_CYCLE) {
        printf("memory: FAIL: the C engine's troughs (without buffers) grew by %.0f, %.1f per cycle (tolerance %.0f per "
               "cycle above %d)\n", c.growth, c.per_cycle, TROUGH_C_PER_CYCLE, TROUGH_C_FLOOR);
        ok = false;
    }
    if (!judge_slopes) {
        printf("slopes and the C engine's troughs: printed, not judged (a run of at least 10 minutes "
               "judges them)\n");
        return ok;
    }
    struct { const char *name; series_fn f; double limit; } judged[] = {
        {"live bytes w/o buffers", judged_total_of, SLOPE_TOTAL},
        {"C engine w/o buffers", c_of, SLOPE_C},
        {"VmRSS", rss_of, SLOPE_RSS},
        {"open descriptors", fds_of, SLOPE_FDS},
    };
    for (size_t i = 0; i < sizeof judged / sizeof judged[0]; i++) {
        double s = slope_per_hour(tr, judged[i].f);
        if (s > judged[i].limit) {
            printf("memory: FAIL: %s rise by %.1f per hour (tolerance %.1f)\n", judged[i].name, s,
                   judged[i].limit);
            ok = false;
        }
    }
    return ok;
}
