/*
 * One accepted connection of the HTTP endpoint (private to obs/): read the
 * request head into a bounded buffer, parse it strictly (http_head.c),
 * route it (/metrics, /healthz, anything else), write the answer without
 * blocking, then close, or half-close and drain when unread input may
 * follow. Each connection is in one phase list (read, write, linger) in the
 * order it entered it, which is what eviction picks from, and has one timer
 * for the deadline of its phase; whatever happens, it ends in
 * http_client_close, which logs the request once and frees everything the
 * connection owned. The listener, accept and the endpoint's lifecycle are
 * in http.c. Loop thread only.
 */
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "obs/http_head.h"
#include "obs/http_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define READ_CHUNK 4096u
#define LINGER_CHUNK 4096u
#define HEALTH_BODY_MAX (64u << 10)
#define ERROR_BODY_MAX 256u
#define RESPONSE_HEAD_MAX 512u
#define LOG_FIELD_MAX 128u

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define PROM_TEXT "text/plain; version=0.0.4; charset=utf-8"

struct client {
    struct client *prev, *next; /* in h->phases[phase] */
    ami_http_t *h;
    int fd;
    enum phase phase;
    uint64_t batch;    /* the accept batch that brought it: immune to that batch */
    ev_io io;
    ev_timer timer;    /* the deadline of the phase */
    int64_t start_ns;
    ami_buf_t in;
    size_t scan;       /* where the search for the empty line resumes */
    ami_buf_t head;    /* status line and headers of the response */
    ami_buf_t body;
    size_t sent;
    size_t buffered;   /* of the answer's bytes, counted in h->buffered */
    int code;          /* 0 until a response is chosen */
    bool linger;       /* unread input may follow: drain it before closing */
    bool logged;
    http_span_t method, path; /* into in, for the log */
};

static void on_client_io(struct ev_loop *loop, ev_io *w, int revents);
static void on_client_timeout(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- logging ------------------------------------------------------------------------ */

static size_t clamp_log(size_t n)
{
    return n < LOG_FIELD_MAX ? n : LOG_FIELD_MAX;
}

static void log_request(struct client *c)
{
    c->logged = true;
    size_t total = c->head.len + c->body.len;
    AMI_LOG(c->h->log, AMI_LOG_DEBUG, "http request",
            AMI_F_STRN("method", c->method.p, clamp_log(c->method.n)),
            AMI_F_STRN("path", c->path.p, clamp_log(c->path.n)), AMI_F_INT("code", c->code),
            AMI_F_UINT("bytes", c->sent), AMI_F_BOOL("complete", c->sent == total),
            AMI_F_DBL("duration_ms", (double)(ami_now_ns() - c->start_ns) / 1e6));
}

/* ---- phases and connections ---------------------------------------------------------- */

static void list_unlink(struct client_list *l, struct client *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

static void list_append(struct client_list *l, struct client *c)
{
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void set_deadline(struct client *c, uint32_t ms)
{
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_set(&c->timer, ms / 1000.0, 0.);
    ev_timer_start(c->h->loop, &c->timer);
}

static void account_buffered(struct client *c, size_t bytes)
{
    ami_http_t *h = c->h;
    h->buffered = h->buffered - c->buffered + bytes;
    c->buffered = bytes;
    ami_gauge_set(h->buffered_gauge, (double)h->buffered);
}

static void enter_phase(struct client *c, enum phase phase)
{
    list_unlink(&c->h->phases[c->phase], c);
    c->phase = phase;
    list_append(&c->h->phases[phase], c);
}

void http_client_close(struct client *c)
{
    ami_http_t *h = c->h;
    if (c->code && !c->logged)
        log_request(c);
    account_buffered(c, 0);
    ev_io_stop(h->loop, &c->io);
    ev_timer_stop(h->loop, &c->timer);
    close(c->fd);
    ami_buf_deinit(&c->in);
    ami_buf_deinit(&c->head);
    ami_buf_deinit(&c->body);
    list_unlink(&h->phases[c->phase], c);
    h->nclients--;
    ami_gauge_set(h->open, h->nclients);
    ami_free(c);
}

/* A writer given up on: reset the connection, so that the kernel drops the
 * rest of the answer now instead of holding it for a reader that does not read. */
static void close_abortively(struct client *c)
{
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    if (c->phase == PHASE_WRITE)
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    http_client_close(c);
}

/* The oldest connection of a phase that did not come in the current batch. */
static struct client *oldest_evictable(ami_http_t *h, enum phase phase)
{
    struct client *c = h->phases[phase].head;
    while (c && c->batch == h->batch)
        c = c->next;
    return c;
}

static void evict(struct client *c)
{
    http_count_eviction(c->h, c->phase);
    AMI_LOG(c->h->log, AMI_LOG_DEBUG, "http connection evicted", AMI_F_STR("phase",
            c->phase == PHASE_READ ? "read" : c->phase == PHASE_WRITE ? "write" : "linger"),
            AMI_F_UINT("received", c->in.len), AMI_F_UINT("sent", c->sent),
            AMI_F_DBL("age_ms", (double)(ami_now_ns() - c->start_ns) / 1e6));
    close_abortively(c);
}

/* An answered connection loses nothing; one still reading its head is the
 * likeliest to be an attacker (or a client too slow to be served anyway);
 * a writer only when everything else is fresh. */
bool http_client_evict_one(ami_http_t *h)
{
    static const enum phase order[] = {PHASE_LINGER, PHASE_READ, PHASE_WRITE};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        struct client *c = oldest_evictable(h, order[i]);
        if (c) {
            evict(c);
            return true;
        }
    }
    return false;
}

static void watch(struct client *c, int events)
{
    if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(c->h->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->h->loop, &c->io);
}

static void on_readable(struct client *c);

bool http_client_new(ami_http_t *h, int fd)
{
    struct client *c = ami_calloc(1, sizeof *c);
    if (!c)
        return false;
    c->h = h;
    c->fd = fd;
    c->batch = h->batch;
    c->start_ns = ami_now_ns();
    ami_buf_init(&c->in, h->cfg.max_request);
    ami_buf_init(&c->head, RESPONSE_HEAD_MAX);
    ami_buf_init(&c->body, ERROR_BODY_MAX);
    int one = 1;
    /* The response goes out in one burst followed by close: no reason to
     * let Nagle hold its tail back. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ev_io_init(&c->io, on_client_io, fd, EV_READ);
    c->io.data = c;
    ev_init(&c->timer, on_client_timeout);
    c->timer.data = c;
    c->phase = PHASE_READ;
    list_append(&h->phases[PHASE_READ], c);
    h->nclients++;
    ami_gauge_set(h->open, h->nclients);
    ev_io_start(h->loop, &c->io);
    set_deadline(c, h->cfg.request_timeout_ms);
    on_readable(c); /* a scrape's request is usually there already: answer it now */
    return true;
}

/* ---- writing ---------------------------------------------------------------------- */

/* Closing a socket with unread input makes the kernel answer with a reset,
 * which can destroy the response before the client reads it; so when input
 * may still be arriving we half-close and drain until the peer closes or
 * the budget ends. */
static void response_done(struct client *c)
{
    log_request(c);
    if (!c->linger) {
        http_client_close(c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    account_buffered(c, 0);
    ami_buf_deinit(&c->head);
    ami_buf_deinit(&c->body);
    enter_phase(c, PHASE_LINGER); /* the answer's deadline still runs */
    watch(c, EV_READ);
}

static void flush(struct client *c)
{
    size_t total = c->head.len + c->body.len;
    while (c->sent < total) {
        struct iovec iov[2];
        int n = 0;
        if (c->sent < c->head.len)
            iov[n++] = (struct iovec){c->head.data + c->sent, c->head.len - c->sent};
        size_t body_off = c->sent > c->head.len ? c->sent - c->head.len : 0;
        if (c->body.len > body_off)
            iov[n++] = (struct iovec){c->body.data + body_off, c->body.len - body_off};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            watch(c, EV_WRITE);
            return;
        }
        if (w < 0) {
            http_client_close(c);
            return;
        }
        c->sent += (size_t)w;
    }
    response_done(c);
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Service Unavailable";
    }
}

/* c->body holds the full body; HEAD keeps its length and drops its bytes. */
static void respond(struct client *c, enum route r, int code, const char *ctype, bool head_only)
{
    c->code = code;
    http_count_request(c->h, r, code);
    const char *allow = code == 405 ? "Allow: GET, HEAD\r\n" : "";
    if (ami_buf_printf(&c->head,
                       "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                       "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                       code, reason_phrase(code), ctype, c->body.len, allow) < 0) {
        http_client_close(c);
        return;
    }
    if (head_only)
        ami_buf_deinit(&c->body);
    ev_io_stop(c->h->loop, &c->io);
    enter_phase(c, PHASE_WRITE);
    account_buffered(c, c->head.len + c->body.len);
    set_deadline(c, c->h->cfg.response_timeout_ms);
    flush(c);
}

static void respond_error(struct client *c, enum route r, int code, const char *text, bool head_only)
{
    ami_buf_deinit(&c->body);
    ami_buf_init(&c->body, ERROR_BODY_MAX);
    ami_buf_append_str(&c->body, text);
    respond(c, r, code, TEXT_PLAIN, head_only);
}

/* ---- routes ------------------------------------------------------------------------- */

/* Room for an answer of `need` bytes within max_buffered, made by evicting
 * the writers that have waited longest for their readers. One answer alone
 * always fits, whatever its size. */
static bool make_room(struct client *c, size_t need)
{
    ami_http_t *h = c->h;
    while (h->buffered > 0 && h->buffered + need > h->cfg.max_buffered) {
        struct client *w = oldest_evictable(h, PHASE_WRITE);
        if (!w)
            return false;
        evict(w);
    }
    return true;
}

static void serve_metrics(struct client *c, bool head_only)
{
    ami_http_t *h = c->h;
    ami_buf_init(&c->body, h->cfg.max_response);
    if (h->metrics && ami_metrics_render(h->metrics, &c->body) < 0) {
        AMI_LOG(h->log, AMI_LOG_WARN, "metrics rendering refused: larger than max_response or out of memory",
                AMI_F_UINT("max_response", h->cfg.max_response),
                AMI_F_UINT("series", ami_metrics_series_count(h->metrics)));
        respond_error(c, ROUTE_METRICS, 500, "metrics rendering exceeds max_response\n", head_only);
        return;
    }
    if (!head_only && !make_room(c, c->body.len + RESPONSE_HEAD_MAX)) {
        AMI_LOG(h->log, AMI_LOG_WARN, "metrics answer refused: max_buffered is full of answers clients do not read",
                AMI_F_UINT("max_buffered", h->cfg.max_buffered), AMI_F_UINT("buffered", h->buffered));
        respond_error(c, ROUTE_METRICS, 503, "busy: too many answers waiting for slow readers\n", false);
        return;
    }
    respond(c, ROUTE_METRICS, 200, PROM_TEXT, head_only);
}

static void serve_health(struct client *c, bool head_only)
{
    ami_http_t *h = c->h;
    ami_buf_init(&c->body, HEALTH_BODY_MAX);
    int code = 200;
    if (h->health)
        code = h->health(h->health_ud, &c->body) == 200 ? 200 : 503;
    else
        ami_buf_append_str(&c->body, "ok\n");
    respond(c, ROUTE_HEALTHZ, code, TEXT_PLAIN, head_only);
}

/* ---- requests ----------------------------------------------------------------------- */

static bool span_is(http_span_t s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* The query is dropped for routing and for the log alike: it routes
 * nothing here, and a query may carry a token that must not reach a log. */
static http_span_t path_of(http_span_t target)
{
    const char *q = memchr(target.p, '?', target.n);
    return (http_span_t){target.p, q ? (size_t)(q - target.p) : target.n};
}

static enum route route_of(http_span_t path)
{
    return span_is(path, "/metrics") ? ROUTE_METRICS : span_is(path, "/healthz") ? ROUTE_HEALTHZ : ROUTE_OTHER;
}

static void handle_request(struct client *c, size_t head_len)
{
    http_head_t req;
    if (c->in.len > head_len)
        c->linger = true; /* a body or a pipelined request we will not read */
    if (http_head_parse(c->in.data, head_len, &req) < 0) {
        c->linger = true;
        respond_error(c, ROUTE_OTHER, 400, "bad request\n", false);
        return;
    }
    c->method = req.method;
    c->path = path_of(req.target);
    bool head_only = span_is(req.method, "HEAD");
    enum route r = route_of(c->path);
    if (!head_only && !span_is(req.method, "GET")) {
        c->linger = true;
        respond_error(c, r, 405, "method not allowed\n", false);
    } else if (req.target.p[0] != '/') {
        respond_error(c, ROUTE_OTHER, 400, "bad request\n", head_only);
    } else if (r == ROUTE_METRICS) {
        serve_metrics(c, head_only);
    } else if (r == ROUTE_HEALTHZ) {
        serve_health(c, head_only);
    } else {
        respond_error(c, r, 404, "not found\n", head_only);
    }
}

/* ---- events ------------------------------------------------------------------------- */

static bool transient(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

static void on_readable(struct client *c)
{
    size_t room = c->h->cfg.max_request - c->in.len;
    size_t want = room < READ_CHUNK ? room : READ_CHUNK;
    if (ami_buf_reserve(&c->in, want) < 0) {
        http_client_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, want, 0);
    if (n < 0 && transient(errno))
        return;
    if (n <= 0) { /* the client left before asking anything */
        http_client_close(c);
        return;
    }
    c->in.len += (size_t)n;
    size_t head_len = http_head_end(c->in.data, c->in.len, &c->scan);
    if (head_len) {
        handle_request(c, head_len);
    } else if (c->in.len >= c->h->cfg.max_request) {
        c->linger = true;
        respond_error(c, ROUTE_OTHER, 431, "request header fields too large\n", false);
    }
}

static void on_linger(struct client *c)
{
    char sink[LINGER_CHUNK];
    ssize_t n = recv(c->fd, sink, sizeof sink, 0);
    if (n > 0 || (n < 0 && transient(errno)))
        return;
    http_client_close(c);
}

static void on_client_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct client *c = w->data;
    if (c->phase == PHASE_READ)
        on_readable(c);
    else if (c->phase == PHASE_WRITE)
        flush(c);
    else
        on_linger(c);
}

static void on_client_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct client *c = w->data;
    if (c->phase != PHASE_LINGER) { /* lingering is past the answer: nothing was lost */
        bool reading = c->phase == PHASE_READ;
        ami_counter_inc(c->h->timeouts[c->phase]);
        AMI_LOG(c->h->log, AMI_LOG_DEBUG, "http connection timed out", AMI_F_STR("phase", reading ? "read" : "write"),
                AMI_F_UINT("received", c->in.len), AMI_F_UINT("sent", c->sent),
                AMI_F_UINT("timeout_ms", reading ? c->h->cfg.request_timeout_ms : c->h->cfg.response_timeout_ms));
    }
    close_abortively(c);
}
