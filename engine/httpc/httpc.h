/*
 * Outbound HTTP on the engine's loop: libcurl's multi interface driven by
 * libev (curl tells us which sockets to watch and when its timer is due; we
 * tell curl what happened), so no request ever makes the loop wait. Names
 * are resolved by libcurl's threaded resolver: ami_httpc_new refuses a
 * libcurl built without an asynchronous resolver.
 *
 * Everything is bounded by the config: transfers in flight (overall and per
 * owner, an opaque string such as the script that asked), URL length,
 * request headers and body, response headers and body, total and connect
 * time, redirects (only ever to http or https). Every refusal is counted
 * (ami_http_client_refused_total{reason}); TLS peers are verified unless
 * the config says otherwise; proxies come from the config only, never from
 * the environment.
 *
 * Memory: ami_httpc_start copies everything it needs from the request (the
 * caller may free it on return). The response handed to `done` is borrowed:
 * valid only during the callback. A transfer belongs to the client until
 * `done` has been called or ami_httpc_cancel returned; after either the
 * handle is gone.
 *
 * Callbacks: `done` runs from the loop (never from inside ami_httpc_start
 * or ami_httpc_cancel), exactly once per started transfer unless it was
 * cancelled first. It may start and cancel transfers; it must not free the
 * client.
 *
 * Thread: the loop thread only. The resolver's threads are libcurl's own.
 */
#ifndef AMI_HTTPC_HTTPC_H
#define AMI_HTTPC_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/log.h"
#include "obs/metrics.h"

struct ev_loop;

typedef struct ami_httpc_config {
    uint32_t max_concurrent;     /* transfers in flight; default 256 */
    uint32_t max_per_owner;      /* of which one owner (script); default 64 */
    size_t max_response_bytes;   /* response body; default 1 MiB */
    size_t max_header_bytes;     /* response head, and request headers; default 64 KiB */
    size_t max_request_bytes;    /* request body; default 1 MiB */
    size_t max_url_bytes;        /* default 8 KiB */
    uint32_t timeout_ms;         /* whole transfer: the default and the most a request may ask; default 10000 */
    uint32_t connect_timeout_ms; /* default 3000 */
    uint32_t max_redirects;      /* followed; 0 = a 3xx is the answer; default 3 */
    const char *ca_file;         /* PEM bundle; NULL = the system's store (copied) */
    bool verify;                 /* TLS peer and name verification; default true */
    const char *proxy;           /* "http://host:port"; NULL = none (copied) */
    uint32_t max_host_labels;    /* hosts named in metrics; later ones count as "other"; default 50 */
} ami_httpc_config_t;

void ami_httpc_config_default(ami_httpc_config_t *cfg);

/* The error kinds a transfer can end with (stable, lower-case names). */
typedef enum ami_httpc_kind {
    AMI_HTTPC_OK = 0,
    AMI_HTTPC_INVALID,   /* the request is malformed (method, URL, header, number) */
    AMI_HTTPC_LIMIT,     /* too many transfers in flight (overall or for this owner) */
    AMI_HTTPC_REFUSED,   /* refused by policy: a scheme other than http/https, also on redirect */
    AMI_HTTPC_TOO_LARGE, /* URL, request headers/body, response headers/body over their bound */
    AMI_HTTPC_TIMEOUT,   /* total or connect time ran out */
    AMI_HTTPC_DNS,       /* the name did not resolve */
    AMI_HTTPC_CONNECT,   /* connection refused or unreachable */
    AMI_HTTPC_TLS,       /* handshake or verification failed */
    AMI_HTTPC_REDIRECT,  /* more redirects than max_redirects */
    AMI_HTTPC_PROTOCOL,  /* the peer's answer is not valid HTTP */
    AMI_HTTPC_IO,        /* sending or receiving failed */
    AMI_HTTPC_NOMEM,
    AMI_HTTPC_KIND_COUNT
} ami_httpc_kind_t;

const char *ami_httpc_kind_name(ami_httpc_kind_t kind);

typedef struct ami_httpc_err {
    ami_httpc_kind_t kind;
    char msg[256];
} ami_httpc_err_t;

typedef struct ami_httpc_header {
    const char *name;    /* responses: lower-cased */
    size_t name_len;
    const char *value;
    size_t value_len;
} ami_httpc_header_t;

#define AMI_HTTPC_MAX_HEADERS 64 /* request headers; more is refused (too_large) */

typedef struct ami_httpc_request {
    const char *method;          /* GET HEAD POST PUT PATCH DELETE OPTIONS (any case); NULL = GET */
    const char *url;             /* http:// or https:// */
    size_t url_len;
    const ami_httpc_header_t *headers;
    size_t nheaders;
    const char *body;            /* NULL = none */
    size_t body_len;
    uint32_t timeout_ms;         /* 0 = the config's timeout_ms; more than it is invalid */
    const char *owner;           /* per-owner bound; NULL = counted only overall */
} ami_httpc_request_t;

typedef struct ami_httpc_response {
    ami_httpc_err_t err;         /* kind AMI_HTTPC_OK: the fields below are the answer */
    long status;
    const ami_httpc_header_t *headers; /* the final response's, in order, repeats kept */
    size_t nheaders;
    const char *body;
    size_t body_len;
    const char *url;             /* where the answer came from, after redirects */
    double seconds;              /* from start to done */
} ami_httpc_response_t;

typedef void (*ami_httpc_done_fn)(void *ud, const ami_httpc_response_t *res);

typedef struct ami_httpc ami_httpc_t;
typedef struct ami_httpc_transfer ami_httpc_transfer_t;

/* NULL with err when libcurl lacks what the client needs (an asynchronous
 * resolver, http/https, the options used) or the config is unusable. The
 * client borrows loop, metrics and log (log may be NULL). */
ami_httpc_t *ami_httpc_new(struct ev_loop *loop, const ami_httpc_config_t *cfg, ami_metrics_t *metrics,
                           ami_logger_t *log, ami_httpc_err_t *err);
/* Ends every transfer without calling its `done`. */
void ami_httpc_free(ami_httpc_t *h);

/* Start a transfer. NULL with err when the request is refused at once
 * (invalid, limit, refused, too_large); `done` is then never called. */
ami_httpc_transfer_t *ami_httpc_start(ami_httpc_t *h, const ami_httpc_request_t *req, ami_httpc_done_fn done,
                                      void *ud, ami_httpc_err_t *err);
/* Abandon a transfer now (its connection closes); `done` is not called. */
void ami_httpc_cancel(ami_httpc_t *h, ami_httpc_transfer_t *t);

/* Count a request its caller refused before ami_httpc_start (its own
 * checks of a script's values): ami_http_client_refused_total{reason="invalid"}. */
void ami_httpc_note_invalid(ami_httpc_t *h);

/* Transfers in flight, and of those how many wait to be handed to curl
 * (at most 64 join per loop iteration, so a burst never holds the loop). */
uint32_t ami_httpc_active(const ami_httpc_t *h);
uint32_t ami_httpc_queued(const ami_httpc_t *h);
const ami_httpc_config_t *ami_httpc_config(const ami_httpc_t *h);

#endif
