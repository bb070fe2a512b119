/*
 * The HTTP endpoint's listener (see http.h): configuration, the listening
 * socket, accepting connections in bounded batches within max_connections
 * (evicting one per accept at the limit; pausing when out of descriptors),
 * the endpoint's own counters, and its lifecycle. What happens on an
 * accepted connection, and which one is evicted, is in http_client.c.
 */
#include "util/sockaddr.h"
#include "obs/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "obs/http_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define DEFAULT_BIND_IP "127.0.0.1"
#define DEFAULT_MAX_CONNECTIONS 256u
#define DEFAULT_REQUEST_TIMEOUT_MS 3000u
#define DEFAULT_RESPONSE_TIMEOUT_MS 10000u
#define DEFAULT_MAX_REQUEST 8192u
#define DEFAULT_MAX_RESPONSE ((size_t)16 << 20)
#define DEFAULT_MAX_BUFFERED ((size_t)64 << 20)
#define DEFAULT_BACKLOG 4096u
/* Bounded work per wakeup even in a connect storm; see accept_batch_of. */
#define ACCEPT_BATCH_MAX 1024u
/* Out of descriptors, the listener stays readable: pause instead of spinning. */
#define ACCEPT_PAUSE_S 0.1
#define EVICT_NOTICE_NS (60 * (int64_t)1000000000)

#define REQUESTS_NAME "ami_http_requests_total"
#define REQUESTS_HELP "HTTP requests answered by the metrics endpoint, by path and status code."
#define REFUSED_NAME "ami_http_connections_refused_total"
#define REFUSED_HELP "HTTP connections closed at once, without a request read (no memory for them)."
#define EVICTED_NAME "ami_http_connections_evicted_total"
#define EVICTED_HELP "HTTP connections closed to make room for a new one at max_connections, by the phase they were in."
#define TIMEOUTS_NAME "ami_http_timeouts_total"
#define TIMEOUTS_HELP "HTTP connections closed for exceeding request_timeout_ms (read) or response_timeout_ms (write)."
#define OPEN_NAME "ami_http_connections"
#define OPEN_HELP "HTTP connections open now."
#define BUFFERED_NAME "ami_http_response_bytes_buffered"
#define BUFFERED_HELP "Bytes of HTTP answers held for clients still reading them."

static const char *const phase_labels[PHASE_COUNT] = {"read", "write", "linger"};
static const char *const route_labels[ROUTE_COUNT] = {"/metrics", "/healthz", "other"};

static const int codes[] = {200, 400, 404, 405, 431, 500, 503};
#define NCODES (sizeof codes / sizeof codes[0])
_Static_assert(NCODES == HTTP_NCODES, "HTTP_NCODES must count codes[]");

void ami_http_config_default(ami_http_config_t *cfg)
{
    cfg->bind_ip = DEFAULT_BIND_IP;
    cfg->port = 0;
    cfg->max_connections = DEFAULT_MAX_CONNECTIONS;
    cfg->request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
    cfg->response_timeout_ms = DEFAULT_RESPONSE_TIMEOUT_MS;
    cfg->max_request = DEFAULT_MAX_REQUEST;
    cfg->max_response = DEFAULT_MAX_RESPONSE;
    cfg->max_buffered = DEFAULT_MAX_BUFFERED;
    cfg->backlog = DEFAULT_BACKLOG;
}

/* ---- counting ----------------------------------------------------------------------- */

static ami_counter_t *counter(ami_http_t *h, const char *name, const char *help,
                              const char *const *labels)
{
    return h->metrics ? ami_metrics_counter(h->metrics, name, help, labels, NULL) : &h->unregistered;
}

static ami_gauge_t *gauge(ami_http_t *h, const char *name, const char *help)
{
    return h->metrics ? ami_metrics_gauge(h->metrics, name, help, NULL, NULL) : &h->unregistered_gauge;
}

void http_count_request(ami_http_t *h, enum route r, int code)
{
    size_t i = 0;
    while (i < NCODES - 1 && codes[i] != code)
        i++;
    if (!h->requests[r][i]) {
        char code_s[8];
        snprintf(code_s, sizeof code_s, "%d", codes[i]);
        h->requests[r][i] = counter(h, REQUESTS_NAME, REQUESTS_HELP,
                                    (const char *const[]){"path", route_labels[r], "code", code_s, NULL});
    }
    ami_counter_inc(h->requests[r][i]);
}

/* One line a minute at most: an attack must not flood the log as well. */
void http_count_eviction(ami_http_t *h, enum phase phase)
{
    ami_counter_inc(h->evicted[phase]);
    h->evicted_unreported++;
    int64_t now = ami_now_ns();
    if (h->evict_notice_ns && now - h->evict_notice_ns < EVICT_NOTICE_NS)
        return;
    AMI_LOG(h->log, AMI_LOG_WARN, "http connections evicted: max_connections open (many slow or idle clients?)",
            AMI_F_STR("addr", h->addr), AMI_F_UINT("evicted", h->evicted_unreported),
            AMI_F_UINT("max_connections", h->cfg.max_connections),
            AMI_F_STR("see", "ami_http_connections_evicted_total"));
    h->evicted_unreported = 0;
    h->evict_notice_ns = now;
}

static void register_counters(ami_http_t *h)
{
    h->refused = counter(h, REFUSED_NAME, REFUSED_HELP, NULL);
    for (int p = 0; p < PHASE_COUNT; p++)
        h->evicted[p] = counter(h, EVICTED_NAME, EVICTED_HELP, (const char *const[]){"phase", phase_labels[p], NULL});
    for (int p = PHASE_READ; p <= PHASE_WRITE; p++)
        h->timeouts[p] = counter(h, TIMEOUTS_NAME, TIMEOUTS_HELP, (const char *const[]){"phase", phase_labels[p], NULL});
    h->open = gauge(h, OPEN_NAME, OPEN_HELP);
    h->buffered_gauge = gauge(h, BUFFERED_NAME, BUFFERED_HELP);
}

/* ---- accepting ---------------------------------------------------------------------- */

static void pause_accepting(ami_http_t *h, int e)
{
    AMI_LOG(h->log, AMI_LOG_WARN, "http accept failed; pausing the listener",
            AMI_F_STR("addr", h->addr), AMI_F_STR("error", strerror(e)),
            AMI_F_DBL("pause_s", ACCEPT_PAUSE_S));
    ev_io_stop(h->loop, &h->accept_w);
    ev_timer_set(&h->accept_pause, ACCEPT_PAUSE_S, 0.);
    ev_timer_start(h->loop, &h->accept_pause);
}

static void on_accept_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    ami_http_t *h = w->data;
    ev_io_start(loop, &h->accept_w);
}

static bool accept_failed_transiently(int e)
{
    return e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM;
}

/* Batches until EAGAIN, each at most accept_batch long. The connections of
 * this batch are not evicted by it (h->batch), and the listener runs after
 * every connection's watcher in an iteration (its priority), so a scrape
 * whose request is there by the next iteration is served before it could be. */
static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_http_t *h = w->data;
    h->batch++;
    for (uint32_t i = 0; i < h->accept_batch; i++) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && accept_failed_transiently(errno))
            continue;
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                pause_accepting(h, errno);
            return;
        }
        if ((h->nclients >= h->cfg.max_connections && !http_client_evict_one(h)) || !http_client_new(h, fd)) {
            close(fd);
            ami_counter_inc(h->refused);
        }
    }
}

/* ---- setup ---------------------------------------------------------------------------- */

static void format_addr(ami_http_t *h, const struct sockaddr_storage *ss, uint16_t port)
{
    const void *a = ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    inet_ntop(ss->ss_family, a, h->ip, sizeof h->ip);
    snprintf(h->addr, sizeof h->addr, ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", h->ip,
             (unsigned)port);
}

static const char *bind_hint(int e)
{
    switch (e) {
    case EADDRINUSE: return "choose another metrics.listen port";
    case EACCES: return "use a port above 1023 or another metrics.listen port";
    case EADDRNOTAVAIL: return "set metrics.listen to an address of this host";
    default: return "check metrics.listen";
    }
}

static int listen_on(ami_http_t *h, ami_err_t *err)
{
    const char *ip = h->cfg.bind_ip;
    struct sockaddr_storage ss;
    socklen_t len;
    if (!ami_sockaddr_from_ip(ip, h->cfg.port, &ss, &len))
        return ami_err_set(err, AMI_E_CONFIG,
                           "metrics listen address '%.64s' is not an IPv4 or IPv6 literal; "
                           "set metrics.listen to one, such as 127.0.0.1", ip);
    format_addr(h, &ss, h->cfg.port);
    h->cfg.bind_ip = h->ip; /* the caller's string need not outlive this call */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ami_err_set(err, AMI_E_IO, "cannot listen on %s: socket: %s; %s", h->addr,
                           strerror(errno), bind_hint(errno));
    int one = 1;
    /* a restarted engine must rebind while the old scrapes sit in TIME_WAIT */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, (int)h->cfg.backlog) < 0) {
        int e = errno;
        close(fd);
        return ami_err_set(err, AMI_E_IO, "cannot listen on %s: %s; %s", h->addr, strerror(e),
                           bind_hint(e));
    }
    struct sockaddr_storage got;
    socklen_t glen = sizeof got;
    if (getsockname(fd, (struct sockaddr *)&got, &glen) == 0)
        h->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                  : ((struct sockaddr_in *)&got)->sin_port);
    format_addr(h, &ss, h->port);
    h->fd = fd;
    return 0;
}

static void apply_config(ami_http_config_t *out, const ami_http_config_t *in)
{
    ami_http_config_default(out);
    if (!in)
        return;
    if (in->bind_ip)
        out->bind_ip = in->bind_ip;
    out->port = in->port;
#define TAKE(field) if (in->field) out->field = in->field
    TAKE(max_connections);
    TAKE(request_timeout_ms);
    TAKE(response_timeout_ms);
    TAKE(max_request);
    TAKE(max_response);
    TAKE(max_buffered);
    TAKE(backlog);
#undef TAKE
    if (out->max_buffered < out->max_response)
        out->max_buffered = out->max_response; /* one full rendering must always fit */
    if (out->backlog > INT32_MAX)
        out->backlog = INT32_MAX;
}

/* Half of max_connections: at the limit, at least as many connections from
 * earlier batches are open as this batch can bring, so eviction always
 * finds a victim and no new connection is turned away. */
static uint32_t accept_batch_of(uint32_t max_connections)
{
    uint32_t n = max_connections / 2;
    return n < 1 ? 1 : n > ACCEPT_BATCH_MAX ? ACCEPT_BATCH_MAX : n;
}

ami_http_t *ami_http_new(struct ev_loop *loop, const ami_http_config_t *cfg, ami_metrics_t *metrics,
                         ami_http_health_fn health, void *health_ud, ami_logger_t *log, ami_err_t *err)
{
    if (!loop) {
        ami_err_set(err, AMI_E_INVALID, "ami_http_new: no loop");
        return NULL;
    }
    ami_http_t *h = ami_calloc(1, sizeof *h);
    if (!h) {
        ami_err_set(err, AMI_E_NOMEM, "ami_http_new: out of memory");
        return NULL;
    }
    h->loop = loop;
    apply_config(&h->cfg, cfg);
    h->accept_batch = accept_batch_of(h->cfg.max_connections);
    h->metrics = metrics;
    h->health = health;
    h->health_ud = health_ud;
    h->log = log;
    h->fd = -1;
    ami_err_t local;
    if (listen_on(h, &local) < 0) {
        AMI_LOG(log, AMI_LOG_WARN, "http listen failed", AMI_F_STR("error", local.msg));
        if (err)
            *err = local;
        ami_free(h);
        return NULL;
    }
    register_counters(h);
    ev_io_init(&h->accept_w, on_accept, h->fd, EV_READ);
    h->accept_w.data = h;
    ev_set_priority(&h->accept_w, EV_MINPRI);
    ev_init(&h->accept_pause, on_accept_pause);
    h->accept_pause.data = h;
    ev_io_start(loop, &h->accept_w);
    AMI_LOG(log, AMI_LOG_DEBUG, "http listening", AMI_F_STR("addr", h->addr));
    return h;
}

uint16_t ami_http_port(const ami_http_t *h)
{
    return h ? h->port : 0;
}

void ami_http_free(ami_http_t *h)
{
    if (!h)
        return;
    for (int p = 0; p < PHASE_COUNT; p++)
        while (h->phases[p].head)
            http_client_close(h->phases[p].head);
    ev_io_stop(h->loop, &h->accept_w);
    ev_timer_stop(h->loop, &h->accept_pause);
    close(h->fd);
    ami_free(h);
}
