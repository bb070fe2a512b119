/*
 * Private to obs/http*.c: the endpoint's structure and what its halves
 * share. http.c owns the listener, accepts, counts and frees; http_client.c
 * serves one accepted connection (struct client, which it allocates and
 * frees) and chooses which one to evict; http_head.c parses request heads.
 * The endpoint owns its clients; the loop, registry, logger and health_ud
 * are borrowed (see http.h). Loop thread only.
 */
#ifndef AMI_OBS_HTTP_INTERNAL_H
#define AMI_OBS_HTTP_INTERNAL_H

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "obs/http.h"

/* Paths are bucketed so that a scanner probing URLs cannot grow the registry. */
enum route { ROUTE_METRICS, ROUTE_HEALTHZ, ROUTE_OTHER, ROUTE_COUNT };

/* Where a connection is: reading its head, writing its answer, or draining
 * what the client still sends after the answer (nothing left to lose). */
enum phase { PHASE_READ, PHASE_WRITE, PHASE_LINGER, PHASE_COUNT };

/* Status codes counted apart (codes[] in http.c); any other counts as the last. */
#define HTTP_NCODES 7

struct client;

/* The connections of one phase, oldest (in that phase) first. */
struct client_list {
    struct client *head, *tail;
};

struct ami_http {
    struct ev_loop *loop;
    ami_http_config_t cfg;
    uint32_t accept_batch;           /* accepts per wakeup: at most half of max_connections */
    ami_metrics_t *metrics;
    ami_http_health_fn health;
    void *health_ud;
    ami_logger_t *log;
    int fd;
    uint16_t port;
    ev_io accept_w;
    ev_timer accept_pause;
    struct client_list phases[PHASE_COUNT];
    uint32_t nclients;
    uint64_t batch;                  /* accept wakeups so far: the current one's clients are immune */
    size_t buffered;                 /* answer bytes held by connections in PHASE_WRITE */
    uint64_t evicted_unreported;     /* since the last warn line */
    int64_t evict_notice_ns;
    ami_counter_t *refused;
    ami_counter_t *evicted[PHASE_COUNT];
    ami_counter_t *timeouts[2];      /* PHASE_READ, PHASE_WRITE */
    ami_gauge_t *open;
    ami_gauge_t *buffered_gauge;
    ami_counter_t *requests[ROUTE_COUNT][HTTP_NCODES];
    ami_counter_t unregistered;      /* every counter points here when there is no registry */
    ami_gauge_t unregistered_gauge;
    char ip[INET6_ADDRSTRLEN];
    char addr[INET6_ADDRSTRLEN + 8]; /* "ip:port" or "[ip]:port", for messages */
};

/* ---- http.c ---------------------------------------------------------------------- */

/* Count one answered request in ami_http_requests_total{path,code}. */
void http_count_request(ami_http_t *h, enum route r, int code);
/* Count one eviction, and say so at warn at most once a minute. */
void http_count_eviction(ami_http_t *h, enum phase phase);

/* ---- http_client.c --------------------------------------------------------------- */

/* Serve the accepted socket fd (non-blocking), reading it at once: false if
 * out of memory, fd then still the caller's. The connection may be answered
 * and closed before this returns. */
bool http_client_new(ami_http_t *h, int fd);
/* Log the request if answered, stop its watchers, close its socket and free it. */
void http_client_close(struct client *c);
/* Close one connection to make room for a new one (see http.h for which):
 * false when every open connection came in the current accept batch. */
bool http_client_evict_one(ami_http_t *h);

#endif
