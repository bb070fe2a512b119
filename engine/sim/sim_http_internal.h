/*
 * Private to the simulated web service: the server and connection
 * structures that its I/O (sim_http.c) and its routes (sim_http_routes.c)
 * share. Connections are touched on the server's thread only; `lock`
 * guards what other threads read or set (records, stats, fail_next).
 */
#ifndef AMI_SIM_HTTP_INTERNAL_H
#define AMI_SIM_HTTP_INTERNAL_H

#include <ev.h>
#include <pthread.h>

#include "sim/sim_http.h"
#include "util/buf.h"

#define SIM_HTTP_HEAD_MAX (64u << 10)
#define SIM_HTTP_BODY_MAX (16u << 20)
#define SIM_HTTP_FILLER (64u << 10)
#define SIM_HTTP_MAX_CONNS 8192u /* past it a connection is closed at once */

typedef enum sim_http_phase {
    PH_READ = 0,   /* reading the request */
    PH_WAIT,       /* answer held back (/delay) or never coming (/never) */
    PH_WRITE,      /* writing the answer */
    PH_LINGER,     /* answer sent, write side shut: waiting for the client to close */
} sim_http_phase_t;

typedef struct sim_http_conn {
    struct sim_http_conn *prev, *next;
    ami_sim_http_t *srv;
    int fd;
    ev_io io;
    ev_timer timer;
    sim_http_phase_t phase;
    ami_buf_t in;
    size_t head_len;       /* 0 until the blank line arrived */
    size_t body_len;       /* from Content-Length */
    ami_buf_t out;
    size_t out_pos;
    uint64_t stream_left;  /* generated body bytes still to send after out */
    bool close_now;        /* /close, /garbage: no lingering */
} sim_http_conn_t;

typedef struct sim_http_record {
    ami_sim_http_seen_t seen;
    bool used;
} sim_http_record_t;

struct ami_sim_http {
    struct ev_loop *loop;
    pthread_t thread;
    bool running;
    ev_async stop;
    int listen_fd;
    int refused_fd;
    uint16_t port;
    uint16_t refused_port;
    char *filler;          /* SIM_HTTP_FILLER bytes of 'x' for generated bodies */
    ev_io accept_io;
    sim_http_conn_t *conns;
    pthread_mutex_t lock;
    ami_sim_http_stats_t stats;
    uint32_t fail_left;
    int fail_status;
    sim_http_record_t records[SIM_HTTP_RECORDS];
    size_t nrecords;       /* total ever recorded; the ring holds the last ones */
    size_t first;          /* index of the oldest kept, in total numbering */
};

/* sim_http_routes.c: a complete request is in c->in; fill c->out (or set a
 * phase and timer) to answer it. */
void sim_http_route(sim_http_conn_t *c);
/* sim_http.c: start writing c->out (and any stream) now. */
void sim_http_send(sim_http_conn_t *c);
/* sim_http.c: close and free the connection. */
void sim_http_close(sim_http_conn_t *c);

#endif
