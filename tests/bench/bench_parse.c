/*
 * Parser throughput on a real event stream.
 *
 * Loads tests/fixtures/asterisk/event-stream-mixed.ami (682 messages recorded
 * from Asterisk 22), repeats its body (everything after the banner line) in
 * memory to about --mb MB behind one banner, then parses it the way the
 * transport does: ami_parser_reserve, a 64 KiB "read" (memcpy from the
 * in-memory stream), ami_parser_commit, ami_parser_next until it needs more.
 * Each message is touched (its name and ActionID looked up) so the work is
 * not optimised away.
 *
 * Prints every run and the best and median of: MB/s and messages/s over the
 * whole loop, and "parse only", the same figures with the time spent in the
 * memcpy "reads" subtracted (each memcpy is timed on its own). 1 MB = 10^6
 * bytes.
 *
 *   bench_parse [--mb N] [--runs N] [--read KiB]
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "protocol/message.h"
#include "protocol/parser.h"

#ifndef AMI_FIXTURE_DIR
#error "AMI_FIXTURE_DIR must be defined (tests/fixtures/asterisk)"
#endif

#define FIXTURE "event-stream-mixed"

typedef struct run_result {
    double secs;      /* whole loop */
    double copy_secs; /* inside the memcpy "reads" */
    uint64_t msgs;
    uint64_t bytes;
} run_result_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *load(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *d = malloc((size_t)size);
    if (!d || fread(d, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(d);
        return NULL;
    }
    fclose(f);
    *len = (size_t)size;
    return d;
}

static volatile size_t sink;

static int run(const char *stream, size_t len, size_t read_size, run_result_t *r)
{
    ami_parser_t p;
    if (ami_parser_init(&p, NULL) != 0)
        return -1;
    ami_msg_t m;
    ami_err_t err;
    size_t off = 0, touched = 0;
    uint64_t msgs = 0;
    double copy = 0;
    double t0 = now();
    while (off < len) {
        size_t got;
        char *dst = ami_parser_reserve(&p, read_size, &got);
        if (!dst) {
            fprintf(stderr, "bench_parse: reserve failed at %zu\n", off);
            ami_parser_deinit(&p);
            return -1;
        }
        size_t n = len - off < got ? len - off : got;
        double c0 = now();
        memcpy(dst, stream + off, n);
        copy += now() - c0;
        ami_parser_commit(&p, n);
        off += n;
        int rc;
        while ((rc = ami_parser_next(&p, &m, &err)) == 1) {
            msgs++;
            touched += m.nhdrs + (size_t)ami_msg_name(&m)[0];
            if (m.actionid_idx >= 0)
                touched += 1;
        }
        if (rc < 0) {
            fprintf(stderr, "bench_parse: parse error: %s\n", err.msg);
            ami_parser_deinit(&p);
            return -1;
        }
    }
    r->secs = now() - t0;
    r->copy_secs = copy;
    r->msgs = msgs;
    r->bytes = len;
    sink = touched;
    ami_parser_deinit(&p);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double best(const double *v, int n)
{
    double b = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] > b)
            b = v[i];
    return b;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_parse [--mb N] [--runs N] [--read KiB]\n");
}

int main(int argc, char **argv)
{
    long mb = 300, runs = 5, read_kib = 64;
    for (int i = 1; i < argc; i++) {
        long *target = NULL;
        if (strcmp(argv[i], "--mb") == 0)
            target = &mb;
        else if (strcmp(argv[i], "--runs") == 0)
            target = &runs;
        else if (strcmp(argv[i], "--read") == 0)
            target = &read_kib;
        if (!target || i + 1 >= argc) {
            usage();
            return 2;
        }
        char *end;
        *target = strtol(argv[++i], &end, 10);
        if (*end || *target <= 0 || *target > 100000) {
            usage();
            return 2;
        }
    }
    if (runs > 64)
        runs = 64;

    size_t flen;
    char *fx = load(AMI_FIXTURE_DIR "/" FIXTURE ".ami", &flen);
    if (!fx)
        return 1;
    const char *nl = memchr(fx, '\n', flen);
    if (!nl) {
        fprintf(stderr, "bench_parse: no banner line in %s.ami\n", FIXTURE);
        return 1;
    }
    size_t banner_len = (size_t)(nl + 1 - fx);
    const char *body = fx + banner_len;
    size_t body_len = flen - banner_len;
    size_t target = (size_t)mb * 1000000u;
    size_t copies = (target + body_len - 1) / body_len;
    if (copies == 0)
        copies = 1;
    size_t len = banner_len + copies * body_len;
    char *stream = malloc(len);
    if (!stream) {
        fprintf(stderr, "bench_parse: cannot allocate %zu bytes\n", len);
        return 1;
    }
    memcpy(stream, fx, banner_len);
    for (size_t i = 0; i < copies; i++)
        memcpy(stream + banner_len + i * body_len, body, body_len);

#ifdef AMI_SANITIZED
    printf("WARNING: built with sanitizers; figures are not representative\n");
#endif
    printf("stream: %s body (%zu bytes, 682 messages) x %zu = %.1f MB, %zu KiB reads, %ld runs\n", FIXTURE,
           body_len, copies, (double)len / 1e6, (size_t)read_kib, runs);

    double mbps[64], mps[64], pmbps[64], pmps[64];
    uint64_t expect = 1 + 682 * (uint64_t)copies;
    for (int i = 0; i < runs; i++) {
        run_result_t r;
        if (run(stream, len, (size_t)read_kib * 1024, &r) != 0)
            return 1;
        if (r.msgs != expect) {
            fprintf(stderr, "bench_parse: %llu messages, expected %llu\n", (unsigned long long)r.msgs,
                    (unsigned long long)expect);
            return 1;
        }
        double parse = r.secs - r.copy_secs;
        mbps[i] = (double)r.bytes / 1e6 / r.secs;
        mps[i] = (double)r.msgs / r.secs;
        pmbps[i] = (double)r.bytes / 1e6 / parse;
        pmps[i] = (double)r.msgs / parse;
        printf("run %d: %.3f s, %7.0f MB/s, %5.2f M msg/s | parse only (memcpy %.3f s excluded): %7.0f MB/s, "
               "%5.2f M msg/s\n",
               i + 1, r.secs, mbps[i], mps[i] / 1e6, r.copy_secs, pmbps[i], pmps[i] / 1e6);
    }
    int n = (int)runs;
    double b_mbps = best(mbps, n), b_mps = best(mps, n), b_pmbps = best(pmbps, n), b_pmps = best(pmps, n);
    double m_mbps = median(mbps, n), m_mps = median(mps, n), m_pmbps = median(pmbps, n), m_pmps = median(pmps, n);
    printf("best:   %7.0f MB/s, %5.2f M msg/s | parse only %7.0f MB/s, %5.2f M msg/s\n", b_mbps, b_mps / 1e6,
           b_pmbps, b_pmps / 1e6);
    printf("median: %7.0f MB/s, %5.2f M msg/s | parse only %7.0f MB/s, %5.2f M msg/s\n", m_mbps, m_mps / 1e6,
           m_pmbps, m_pmps / 1e6);
    printf("parse only: best %.0f MB/s, %.2f M msg/s (memcpy reads excluded)\n", b_pmbps, b_pmps / 1e6);
    printf("parse: best %.0f MB/s, %.2f M msg/s (%s x %zu, %ld KiB reads)\n", b_mbps, b_mps / 1e6, FIXTURE,
           copies, read_kib);
    free(stream);
    free(fx);
    return 0;
}
