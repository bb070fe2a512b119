/*
 * A simulated web service (a CRM, a webhook receiver) for tests and specs:
 * an HTTP/1.1 server on 127.0.0.1 with a port the kernel chooses, running
 * its own libev loop on its own thread, so it never shares (or stalls) the
 * loop of the engine it answers.
 *
 * Every answer closes its connection ("Connection: close"). Routes:
 *   /ok                 200 "ok"
 *   /echo               200: "METHOD /path\n", the request's header lines, a
 *                       blank line, the request body
 *   /status/N           status N (100..599), body "status N"
 *   /delay/MS           200 "slow" after MS milliseconds
 *   /never              reads the request and never answers
 *   /big/N              200 with N bytes, announced by Content-Length
 *   /stream/N           200 with N bytes, no Content-Length (ends at close)
 *   /bigheader/N        200 with one header of N bytes
 *   /headers            repeated and mixed-case headers (X-Multi twice, Set-Cookie twice)
 *   /redirect/N         302 to /redirect/N-1; /redirect/0 is 200 "arrived"
 *   /loop               302 to itself, forever
 *   /redirect-to?URL    302 to URL, verbatim
 *   /json               200 application/json, a small document
 *   /webhook            200 {"ok":true}, or what ami_sim_http_fail_next set
 *   /garbage            a line that is not HTTP, then close
 *   /close              close without a word
 *   anything else       404
 *
 * Requests are recorded (the last SIM_HTTP_RECORDS; bodies cut at
 * SIM_HTTP_RECORD_BODY bytes) for assertions.
 *
 * Threads: every function here may be called from any thread; the server's
 * own work happens on its thread. Memory: ami_sim_http_seen returns copies
 * the caller frees with ami_sim_http_seen_free.
 */
#ifndef AMI_SIM_HTTP_H
#define AMI_SIM_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define SIM_HTTP_RECORDS 1024u
#define SIM_HTTP_RECORD_BODY (64u << 10)

typedef struct ami_sim_http ami_sim_http_t;

typedef struct ami_sim_http_seen {
    char method[16];
    char path[512];
    char *headers;       /* the header lines, "\r\n"-separated, NUL-terminated */
    char *body;          /* NUL-terminated; body_len excludes the NUL */
    size_t body_len;
} ami_sim_http_seen_t;

typedef struct ami_sim_http_stats {
    uint64_t accepted;   /* connections accepted */
    uint64_t open;       /* connections open right now */
    uint64_t requests;   /* complete requests read */
} ami_sim_http_stats_t;

ami_sim_http_t *ami_sim_http_start(ami_err_t *err);
/* Closes every connection and joins the thread. */
void ami_sim_http_stop(ami_sim_http_t *s);

uint16_t ami_sim_http_port(const ami_sim_http_t *s);
/* A port bound on 127.0.0.1 where nobody listens: connecting is refused. */
uint16_t ami_sim_http_refused_port(const ami_sim_http_t *s);

/* The next n requests to /webhook get `status` (and body "failing"). */
void ami_sim_http_fail_next(ami_sim_http_t *s, uint32_t n, int status);

ami_sim_http_stats_t ami_sim_http_stats(ami_sim_http_t *s);
/* Requests recorded so far (at most SIM_HTTP_RECORDS: the oldest go first). */
size_t ami_sim_http_seen_count(ami_sim_http_t *s);
/* Copy of the i-th recorded request (0 = oldest kept). false if out of range. */
bool ami_sim_http_seen(ami_sim_http_t *s, size_t i, ami_sim_http_seen_t *out);
void ami_sim_http_seen_free(ami_sim_http_seen_t *seen);
void ami_sim_http_forget(ami_sim_http_t *s);

#endif
