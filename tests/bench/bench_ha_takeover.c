/*
 * Takeover times of high availability, with the real binaries
 * (tests/support/ha_cluster.h: redis-server, ami-sim, two ami-engine
 * processes). Each round kills the owner of pbx1 with SIGKILL at a random
 * moment of its renew cycle and times how long until the other instance
 * logs "lease acquired" for pbx1; then it drains the new owner with
 * SIGTERM and times the handover back. The dead or drained instance is
 * restarted between rounds. Times come from the engines' log timestamps
 * (ms) against the wall-clock time the signal was sent: same machine,
 * same clock.
 *
 *   build/tests/bench/bench_ha_takeover [--rounds 5] [--lease-ms 3000] [--renew-ms 1000]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_args.h"
#include "ha_cluster.h"

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define MAX_ROUNDS 100

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "ts=2026-12-04T19:05:48.273Z ..." -> ms since the epoch, or -1. */
static int64_t line_ms(const char *line)
{
    struct tm tm = {0};
    int ms = 0;
    if (!line || sscanf(line, "ts=%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                        &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* The signal went out at sent (wall ms): until heir logs a new "lease
 * acquired" for pbx1, in ms; -1 on timeout. */
static int64_t handover(ha_cluster_t *c, int from, int sig)
{
    int64_t sent = wall_ms();
    ha_cluster_engine_signal(c, from, sig);
    int64_t seen;
    int heir = ha_cluster_wait_new_owner(c, 0, from, 20000, &seen);
    if (heir < 0)
        return -1;
    char *line = ha_cluster_log_last_line(c, heir, L("lease acquired", "server_key=pbx1"));
    int64_t at = line_ms(line);
    free(line);
    return at < 0 ? -1 : at - sent;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void report(const char *what, int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    printf("%-30s %d rounds: min %lld ms, median %lld ms, max %lld ms\n", what, n, (long long)v[0],
           (long long)v[n / 2], (long long)v[n - 1]);
}

static int restart_and_settle(ha_cluster_t *c, int i)
{
    proc_wait(&c->engines[i].proc, 10000);
    if (ha_cluster_engine_start(c, i) < 0 || !ha_cluster_wait_single_owners(c, 15000))
        return -1;
    ha_cluster_pump(c, 1500); /* both instances see the owner */
    return 0;
}

int main(int argc, char **argv)
{
    int rounds = 5;
    unsigned lease = 3000, renew = 1000;
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("rounds", "N", "kill-and-drain rounds (default 5)", BENCH_INT, &rounds, 1, MAX_ROUNDS),
        BENCH_OPT_NUM("lease-ms", "MS", "the engines' lease (default 3000)", BENCH_UINT, &lease, 1, 3600000),
        BENCH_OPT_NUM("renew-ms", "MS", "their renew interval (default 1000)", BENCH_UINT, &renew, 1, 3600000),
    };
    int args_rc = bench_args_parse(argc, argv, "bench_ha_takeover", args, BENCH_NARGS(args));
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    if (!redis_server_available()) {
        fprintf(stderr, "bench_ha_takeover: needs redis-server\n");
        return 2;
    }
    ha_cluster_t c;
    ha_cluster_options_t o = {.engines = 2, .lease_ms = lease, .renew_ms = renew, .cps = "2"};
    if (ha_cluster_start(&c, &o) < 0 || !ha_cluster_wait_single_owners(&c, 15000)) {
        ha_cluster_stop(&c);
        return 1;
    }
    int64_t killed[MAX_ROUNDS], drained[MAX_ROUNDS];
    srand((unsigned)wall_ms());
    int rc = 0;
    for (int r = 0; r < rounds && rc == 0; r++) {
        ha_cluster_pump(&c, (uint32_t)(rand() % (int)renew)); /* a random moment of the renew cycle */
        int owner = ha_cluster_owner(&c, 0, NULL, NULL);
        killed[r] = handover(&c, owner, SIGKILL);
        rc = killed[r] < 0 || restart_and_settle(&c, owner) < 0;
        owner = ha_cluster_owner(&c, 0, NULL, NULL);
        drained[r] = rc ? -1 : handover(&c, owner, SIGTERM);
        rc = rc || drained[r] < 0 || restart_and_settle(&c, owner) < 0;
        if (!rc)
            fprintf(stderr, "round %d: kill -9 %lld ms, SIGTERM %lld ms\n", r + 1, (long long)killed[r],
                    (long long)drained[r]);
    }
    if (rc == 0) {
        printf("ha takeover, lease %u ms renewed every %u ms, 2 engines, redis on a unix socket\n", lease, renew);
        report("kill -9 of the owner:", killed, rounds);
        report("SIGTERM (drain) of the owner:", drained, rounds);
    } else {
        fprintf(stderr, "bench_ha_takeover: a round did not complete\n");
    }
    ha_cluster_stop(&c);
    return rc;
}
