/*
 * The engine's HTTP endpoint: Prometheus metrics (/metrics) and a health
 * answer (/healthz) for scrapers and orchestrators.
 *
 * It runs on the engine's own libev loop, so it must never make that loop
 * wait: the listener and every connection are non-blocking, each connection
 * has one bounded request buffer and one time budget (timeout_ms, from
 * accept to the last byte of the response), and a scraper that stops
 * reading only parks its own connection on an EV_WRITE watcher. It speaks
 * exactly one request per connection (Connection: close), GET and HEAD
 * only; no keep-alive, no bodies, no TLS: it is meant for a loopback or
 * management address, not for the open internet.
 *
 * Answers: /metrics -> 200, the registry in text format 0.0.4 (500 when the
 * rendering exceeds max_response); /healthz -> the health callback's 200 or
 * 503 (200 "ok\n" without one); other paths -> 404; other methods -> 405;
 * a malformed request -> 400; a head over max_request -> 431. A query
 * string is ignored for routing (and left out of the debug log line).
 * When input may still be arriving after the answer (a body, a refused
 * head), the connection half-closes and drains it until the client closes
 * or the budget ends: closing on unread input would make the kernel reset
 * the connection and could destroy the answer before the client reads it.
 *
 * Its own metrics live in the registry it serves:
 *   ami_http_requests_total{path="/metrics"|"/healthz"|"other",code="..."}
 *   ami_http_connections_refused_total   (accepted and closed: over max_clients)
 *   ami_http_timeouts_total              (closed for exceeding timeout_ms)
 *
 * Ownership: the endpoint borrows the loop, the registry, the logger and
 * health_ud; all must outlive it. It copies the config. ami_http_free closes
 * the listener and every connection, whatever state they are in.
 *
 * Thread: all of it, callbacks included, runs on the loop's thread.
 */
#ifndef AMI_OBS_HTTP_H
#define AMI_OBS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "obs/log.h"
#include "obs/metrics.h"
#include "util/buf.h"
#include "util/err.h"

struct ev_loop;

typedef struct ami_http ami_http_t;

/* Fill body (text) and return the HTTP status to send (200 or 503). Loop
 * thread. body has a limit; what does not fit is cut off. Any other status
 * is answered as 503: a health check that cannot say "healthy" is not. */
typedef int (*ami_http_health_fn)(void *ud, ami_buf_t *body);

/* Zero fields take their defaults, so a zeroed struct is a valid config. */
typedef struct ami_http_config {
    const char *bind_ip;     /* default "127.0.0.1"; an IPv4 or IPv6 literal */
    uint16_t port;           /* 0: an ephemeral port (tests); read it back with ami_http_port */
    size_t max_request;      /* bytes of request head accepted; default 8192 */
    uint32_t timeout_ms;     /* whole request-response budget per connection; default 5000 */
    uint32_t max_clients;    /* concurrent connections; default 32; more are closed at once and counted */
    size_t max_response;     /* default 16 MiB: a /metrics rendering larger than this is a 500 */
} ami_http_config_t;

void ami_http_config_default(ami_http_config_t *cfg);

/* Listen at once. NULL with err: AMI_E_CONFIG if bind_ip is not an IP
 * literal, AMI_E_IO if the socket cannot be bound (the message names the
 * address and what to do), AMI_E_NOMEM. metrics may be NULL (then /metrics
 * is empty and the endpoint counts nothing); log and health may be NULL. */
ami_http_t *ami_http_new(struct ev_loop *loop, const ami_http_config_t *cfg, ami_metrics_t *metrics,
                         ami_http_health_fn health, void *health_ud, ami_logger_t *log, ami_err_t *err);

/* The bound port (the ephemeral one when cfg->port was 0). */
uint16_t ami_http_port(const ami_http_t *h);

/* Closes the listener and every client. NULL is a no-op. */
void ami_http_free(ami_http_t *h);

#endif
