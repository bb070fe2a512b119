/*
 * The engine's HTTP endpoint: Prometheus metrics (/metrics) and a health
 * answer (/healthz) for scrapers and orchestrators.
 *
 * It runs on the engine's own libev loop, so it must never make that loop
 * wait: the listener and every connection are non-blocking, each connection
 * has one bounded request buffer, and a scraper that stops reading only
 * parks its own connection on an EV_WRITE watcher. It speaks exactly one
 * request per connection (Connection: close), GET and HEAD only; no
 * keep-alive, no bodies, no TLS: it is meant for a loopback or management
 * address, not for the open internet.
 *
 * Under attack a monitoring scrape still gets through, by construction:
 *   - at most max_connections are open. When a new one arrives at the
 *     limit, the endpoint closes (evicts) one to make room: one already
 *     answered and draining first, else the oldest still reading its
 *     request head, else the oldest still being written to. Connections
 *     accepted in the current batch are never evicted by it, and a batch
 *     is at most half of max_connections, so a victim always exists;
 *   - a connection's bytes are read as soon as it is accepted, and in every
 *     loop iteration connections are served before the listener accepts
 *     more (the listener has the lowest priority): a scrape that sends its
 *     request at once is answered before enough newer connections can
 *     arrive to evict it, however many attackers hold or open connections;
 *   - the head must be complete within request_timeout_ms of the accept
 *     (slowloris), the answer written within response_timeout_ms of the
 *     head (a reader that never reads), and the response bytes waiting for
 *     slow readers stay under max_buffered: past it, older writers are
 *     evicted, else the scrape is answered 503;
 *   - the listen backlog (default 4096, capped by net.core.somaxconn) takes
 *     a burst of connects while the loop accepts in batches until EAGAIN.
 *
 * Answers: /metrics -> 200, the registry in text format 0.0.4 (500 when the
 * rendering exceeds max_response; 503 when max_buffered is full of answers
 * nobody reads); /healthz -> the health callback's 200 or 503 (200 "ok\n"
 * without one); other paths -> 404; other methods -> 405; a malformed
 * request -> 400; a head over max_request -> 431. A query string is ignored
 * for routing (and left out of the debug log line). When input may still be
 * arriving after the answer (a body, a refused head), the connection
 * half-closes and drains it until the client closes or the answer's time
 * ends: closing on unread input would make the kernel reset the connection
 * and could destroy the answer before the client reads it.
 *
 * Its own metrics live in the registry it serves:
 *   ami_http_requests_total{path="/metrics"|"/healthz"|"other",code="..."}
 *   ami_http_connections                      (open now)
 *   ami_http_connections_evicted_total{phase="read"|"write"|"linger"}
 *   ami_http_connections_refused_total        (closed at once: no memory)
 *   ami_http_timeouts_total{phase="read"|"write"}
 *   ami_http_response_bytes_buffered          (answers waiting for their readers)
 * and evictions are logged at warn, at most once a minute, with their count.
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
    const char *bind_ip;          /* default "127.0.0.1"; an IPv4 or IPv6 literal */
    uint16_t port;                /* 0: an ephemeral port (tests); read it back with ami_http_port */
    uint32_t max_connections;     /* open at once; default 256; a new one past it evicts one */
    uint32_t request_timeout_ms;  /* accept to the end of the request head; default 3000 */
    uint32_t response_timeout_ms; /* end of the head to the last byte of the answer; default 10000 */
    size_t max_request;           /* bytes of request head accepted; default 8192 */
    size_t max_response;          /* default 16 MiB: a /metrics rendering larger than this is a 500 */
    size_t max_buffered;          /* answer bytes held for slow readers, all connections; default
                                   * 64 MiB, at least max_response */
    uint32_t backlog;             /* listen backlog; default 4096 */
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
