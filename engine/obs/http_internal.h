/*
 * Private to obs/http*.c: the endpoint's structure and what its two halves
 * share. http.c owns the listener, accepts, counts and frees; http_client.c
 * serves one accepted connection (struct client, which it allocates and
 * frees). The endpoint owns its clients; the loop, registry, logger and
 * health_ud are borrowed (see http.h). Loop thread only.
 */
#ifndef AMI_OBS_HTTP_INTERNAL_H
#define AMI_OBS_HTTP_INTERNAL_H

#include <ev.h>
#include <netinet/in.h>
#include <stdint.h>

#include "obs/http.h"

/* Paths are bucketed so that a scanner probing URLs cannot grow the registry. */
enum route { ROUTE_METRICS, ROUTE_HEALTHZ, ROUTE_OTHER, ROUTE_COUNT };

/* Status codes counted apart (codes[] in http.c); any other counts as the last. */
#define HTTP_NCODES 7

struct client;

struct ami_http {
    struct ev_loop *loop;
    ami_http_config_t cfg;
    ami_metrics_t *metrics;
    ami_http_health_fn health;
    void *health_ud;
    ami_logger_t *log;
    int fd;
    uint16_t port;
    ev_io accept_w;
    ev_timer accept_pause;
    struct client *clients;
    uint32_t nclients;
    ami_counter_t *refused;
    ami_counter_t *timeouts;
    ami_counter_t *requests[ROUTE_COUNT][HTTP_NCODES];
    ami_counter_t unregistered; /* every counter points here when there is no registry */
    char ip[INET6_ADDRSTRLEN];
    char addr[INET6_ADDRSTRLEN + 8]; /* "ip:port" or "[ip]:port", for messages */
};

/* ---- http.c ---------------------------------------------------------------------- */

/* Count one answered request in ami_http_requests_total{path,code}. */
void http_count_request(ami_http_t *h, enum route r, int code);

/* ---- http_client.c --------------------------------------------------------------- */

/* Serve the accepted socket fd (non-blocking): NULL if out of memory, fd then still the caller's. */
struct client *http_client_new(ami_http_t *h, int fd);
/* Log the request if answered, stop its watchers, close its socket and free it. */
void http_client_close(struct client *c);

#endif
