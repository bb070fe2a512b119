/*
 * Private to engine/httpc: what the client (httpc.c: lifecycle, the loop
 * glue, owners), the request builder (httpc_request.c: checks, the easy
 * handle, the data callbacks) and the outcome (httpc_result.c: error kinds,
 * response headers, metrics) share. Loop thread only.
 */
#ifndef AMI_HTTPC_INTERNAL_H
#define AMI_HTTPC_INTERNAL_H

#include <ev.h>

#include "httpc/curl_dl.h"
#include "httpc/httpc.h"
#include "util/buf.h"

#define HTTPC_OWNER_BUCKETS 64u
#define HTTPC_OWNER_KEY_MAX 256u
#define HTTPC_MAX_REQUEST_HEADERS ((size_t)AMI_HTTPC_MAX_HEADERS)
#define HTTPC_HEADER_NAME_MAX 256u
#define HTTPC_HEADER_VALUE_MAX 8192u

typedef enum httpc_refusal {
    REFUSED_MAX_CONCURRENT = 0,
    REFUSED_MAX_PER_OWNER,
    REFUSED_URL_LENGTH,
    REFUSED_REQUEST_HEADERS,
    REFUSED_REQUEST_BODY,
    REFUSED_RESPONSE_HEADERS,
    REFUSED_RESPONSE_BODY,
    REFUSED_REDIRECTS,
    REFUSED_SCHEME,
    REFUSED_INVALID,
    REFUSAL_COUNT
} httpc_refusal_t;

typedef struct httpc_owner {
    char *key;
    uint32_t active;
    struct httpc_owner *next;
} httpc_owner_t;

typedef struct httpc_sock {
    ev_io io;
    ami_httpc_t *h;
    struct httpc_sock *prev, *next;
} httpc_sock_t;

struct ami_httpc_transfer {
    ami_httpc_t *h;
    CURL *easy;
    struct curl_slist *headers;
    char *url;
    char *body;                  /* curl reads it in place: ours until the end */
    char host[128];              /* the metrics label, "other" past the cap */
    httpc_owner_t *owner;
    ami_buf_t resp_head;         /* header lines of the latest response */
    ami_buf_t resp_body;
    httpc_refusal_t overflow;    /* set (with overflowed) when a callback refused data */
    bool overflowed;
    bool linked;                 /* counted in active and in the list */
    bool queued;                 /* waiting to join curl (the start queue) */
    ami_httpc_transfer_t *qprev, *qnext;
    int64_t start_ns;
    ami_httpc_done_fn done;
    void *ud;
    char errbuf[CURL_ERROR_SIZE];
    ami_httpc_transfer_t *prev, *next;
};

typedef struct httpc_metrics {
    ami_metrics_t *registry;
    ami_counter_t *refused[REFUSAL_COUNT];
    ami_counter_t *errors[AMI_HTTPC_KIND_COUNT];
    ami_counter_t *cancelled;
    ami_gauge_t *in_flight;
    ami_histogram_t *duration;
    char **hosts;                /* hosts with a label of their own */
    uint32_t nhosts;
} httpc_metrics_t;

struct ami_httpc {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;              /* curl's own timer */
    ev_timer more;               /* starts and answers left for the next iteration */
    ami_httpc_config_t cfg;      /* ca_file and proxy owned */
    ami_logger_t *log;
    httpc_metrics_t m;
    ami_httpc_transfer_t *transfers;
    ami_httpc_transfer_t *queue_head, *queue_tail; /* started, not yet handed to curl */
    uint32_t nqueued;
    uint32_t active;
    httpc_owner_t *owners[HTTPC_OWNER_BUCKETS];
    httpc_sock_t *socks;
};

/* httpc.c */
void httpc_refuse(ami_httpc_t *h, httpc_refusal_t why, ami_httpc_err_t *err, ami_httpc_kind_t kind,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* httpc_request.c: check the request and fill t (url, body, headers, easy).
 * 0, or -1 with err set and the refusal counted. */
int httpc_request_prepare(ami_httpc_t *h, ami_httpc_transfer_t *t, const ami_httpc_request_t *req,
                          ami_httpc_err_t *err);
/* The host of an http(s) URL, lower-cased, into out; false if the URL
 * does not parse or has no host. */
bool httpc_url_host(const char *url, char *out, size_t size);

/* httpc_result.c */
int httpc_metrics_init(ami_httpc_t *h, ami_metrics_t *registry);
void httpc_metrics_deinit(ami_httpc_t *h);
/* The host's own label, or "other" past max_host_labels. */
void httpc_host_label(ami_httpc_t *h, const char *host, char *out, size_t size);
/* Build the response of a finished transfer and count it. headers is
 * scratch space the caller frees (ami_free) after `done`. */
void httpc_result_build(ami_httpc_transfer_t *t, CURLcode code, ami_httpc_response_t *res,
                        ami_httpc_header_t **headers);

#endif
