/*
 * The HTTP endpoint's listener (see http.h): configuration, the listening
 * socket, accepting connections within max_clients (pausing when out of
 * descriptors), the endpoint's own counters, and its lifecycle. What
 * happens on an accepted connection is in http_client.c.
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

#define DEFAULT_BIND_IP "127.0.0.1"
#define DEFAULT_MAX_REQUEST 8192u
#define DEFAULT_TIMEOUT_MS 5000u
#define DEFAULT_MAX_CLIENTS 32u
#define DEFAULT_MAX_RESPONSE (16u << 20)
/* Bounded work per wakeup, so a connect storm cannot hold the loop. */
#define ACCEPTS_PER_WAKEUP 64
/* Out of descriptors, the listener stays readable: pause instead of spinning. */
#define ACCEPT_PAUSE_S 0.1

#define REQUESTS_NAME "ami_http_requests_total"
#define REQUESTS_HELP "HTTP requests answered by the metrics endpoint, by path and status code."
#define REFUSED_NAME "ami_http_connections_refused_total"
#define REFUSED_HELP "HTTP connections closed at once because max_clients were already open."
#define TIMEOUTS_NAME "ami_http_timeouts_total"
#define TIMEOUTS_HELP "HTTP connections closed for exceeding their request-response time budget."

static const char *const route_labels[ROUTE_COUNT] = {"/metrics", "/healthz", "other"};

static const int codes[] = {200, 400, 404, 405, 431, 500, 503};
#define NCODES (sizeof codes / sizeof codes[0])
_Static_assert(NCODES == HTTP_NCODES, "HTTP_NCODES must count codes[]");

void ami_http_config_default(ami_http_config_t *cfg)
{
    cfg->bind_ip = DEFAULT_BIND_IP;
    cfg->port = 0;
    cfg->max_request = DEFAULT_MAX_REQUEST;
    cfg->timeout_ms = DEFAULT_TIMEOUT_MS;
    cfg->max_clients = DEFAULT_MAX_CLIENTS;
    cfg->max_response = DEFAULT_MAX_RESPONSE;
}

/* ---- counting ----------------------------------------------------------------------- */

static ami_counter_t *counter(ami_http_t *h, const char *name, const char *help,
                              const char *const *labels)
{
    return h->metrics ? ami_metrics_counter(h->metrics, name, help, labels, NULL) : &h->unregistered;
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

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_http_t *h = w->data;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM))
            continue;
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                pause_accepting(h, errno);
            return;
        }
        if (h->nclients >= h->cfg.max_clients) {
            close(fd);
            ami_counter_inc(h->refused);
            AMI_LOG(h->log, AMI_LOG_DEBUG, "http connection refused: max_clients reached",
                    AMI_F_UINT("max_clients", h->cfg.max_clients));
            continue;
        }
        if (!http_client_new(h, fd))
            close(fd);
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
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, SOMAXCONN) < 0) {
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
    if (in->max_request)
        out->max_request = in->max_request;
    if (in->timeout_ms)
        out->timeout_ms = in->timeout_ms;
    if (in->max_clients)
        out->max_clients = in->max_clients;
    if (in->max_response)
        out->max_response = in->max_response;
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
    h->refused = counter(h, REFUSED_NAME, REFUSED_HELP, NULL);
    h->timeouts = counter(h, TIMEOUTS_NAME, TIMEOUTS_HELP, NULL);
    ev_io_init(&h->accept_w, on_accept, h->fd, EV_READ);
    h->accept_w.data = h;
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
    while (h->clients)
        http_client_close(h->clients);
    ev_io_stop(h->loop, &h->accept_w);
    ev_timer_stop(h->loop, &h->accept_pause);
    close(h->fd);
    ami_free(h);
}
