/*
 * One accepted connection of the HTTP endpoint (private to obs/): read the
 * request head into a bounded buffer, parse it strictly (one request line,
 * well-formed header lines), route it (/metrics, /healthz, anything else),
 * write the answer without blocking, then close, or half-close and drain
 * when unread input may follow. Each connection has one timer for its whole
 * budget; whatever happens, it ends in http_client_close, which logs the
 * request once and frees everything the connection owned. The listener,
 * accept and the endpoint's lifecycle are in http.c. Loop thread only.
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

enum phase { PHASE_READ, PHASE_WRITE, PHASE_LINGER };

typedef struct span {
    const char *p;
    size_t n;
} span_t;

struct client {
    struct client *prev, *next;
    ami_http_t *h;
    int fd;
    enum phase phase;
    ev_io io;
    ev_timer timer;
    int64_t start_ns;
    ami_buf_t in;
    size_t scan;       /* where the search for the blank line resumes */
    ami_buf_t head;    /* status line and headers of the response */
    ami_buf_t body;
    size_t sent;
    int code;          /* 0 until a response is chosen */
    bool linger;       /* unread input may follow: drain it before closing */
    bool logged;
    span_t method, path; /* into in, for the log */
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

/* ---- connections -------------------------------------------------------------------- */

void http_client_close(struct client *c)
{
    ami_http_t *h = c->h;
    if (c->code && !c->logged)
        log_request(c);
    ev_io_stop(h->loop, &c->io);
    ev_timer_stop(h->loop, &c->timer);
    close(c->fd);
    ami_buf_deinit(&c->in);
    ami_buf_deinit(&c->head);
    ami_buf_deinit(&c->body);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nclients--;
    ami_free(c);
}

static void watch(struct client *c, int events)
{
    if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(c->h->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->h->loop, &c->io);
}

struct client *http_client_new(ami_http_t *h, int fd)
{
    struct client *c = ami_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->h = h;
    c->fd = fd;
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
    ev_timer_init(&c->timer, on_client_timeout, h->cfg.timeout_ms / 1000.0, 0.);
    c->timer.data = c;
    ev_io_start(h->loop, &c->io);
    ev_timer_start(h->loop, &c->timer);
    c->next = h->clients;
    if (h->clients)
        h->clients->prev = c;
    h->clients = c;
    h->nclients++;
    return c;
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
    c->phase = PHASE_LINGER;
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
    c->phase = PHASE_WRITE;
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

/* ---- parsing ------------------------------------------------------------------------ */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static size_t token_len(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    return i;
}

/* Lines end in LF, optionally preceded by CR. */
static span_t next_line(const char **cur, const char *end)
{
    const char *nl = memchr(*cur, '\n', (size_t)(end - *cur));
    span_t line = {*cur, (size_t)(nl - *cur)};
    if (line.n && line.p[line.n - 1] == '\r')
        line.n--;
    *cur = nl + 1;
    return line;
}

/* METHOD SP request-target SP HTTP/1.x, nothing more, nothing less. */
static int parse_request_line(span_t line, span_t *method, span_t *target)
{
    const char *p = line.p, *end = line.p + line.n;
    method->p = p;
    method->n = token_len(p, line.n);
    p += method->n;
    if (!method->n || p == end || *p++ != ' ')
        return -1;
    target->p = p;
    while (p < end && *p > ' ' && *p < 0x7f)
        p++;
    target->n = (size_t)(p - target->p);
    if (!target->n || p == end || *p++ != ' ')
        return -1;
    if (end - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
        return -1;
    return 0;
}

/* field-name ":" field-value, where a value is visible text, spaces, tabs
 * and obs-text. A line starting with blanks (obsolete folding) has no name. */
static int parse_header(span_t line)
{
    size_t name = token_len(line.p, line.n);
    if (!name || name == line.n || line.p[name] != ':')
        return -1;
    for (size_t i = name + 1; i < line.n; i++) {
        unsigned char ch = (unsigned char)line.p[i];
        if ((ch < ' ' && ch != '\t') || ch == 0x7f)
            return -1;
    }
    return 0;
}

static int parse_head(const char *p, size_t len, span_t *method, span_t *target)
{
    const char *cur = p, *end = p + len;
    if (parse_request_line(next_line(&cur, end), method, target) < 0)
        return -1;
    for (;;) {
        span_t line = next_line(&cur, end);
        if (!line.n)
            return 0;
        if (parse_header(line) < 0)
            return -1;
    }
}

/* The head ends at the first empty line. 0 while it has not come yet. */
static size_t find_head_end(struct client *c)
{
    const char *d = c->in.data;
    size_t len = c->in.len;
    for (size_t i = c->scan; i < len; i++) {
        if (d[i] != '\n')
            continue;
        if (i + 1 < len && d[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && d[i + 1] == '\r' && d[i + 2] == '\n')
            return i + 3;
        if (i + 2 >= len) {
            c->scan = i; /* the blank line may still be arriving */
            return 0;
        }
    }
    c->scan = len;
    return 0;
}

static bool span_is(span_t s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* The query is dropped for routing and for the log alike: it routes
 * nothing here, and a query may carry a token that must not reach a log. */
static span_t path_of(span_t target)
{
    const char *q = memchr(target.p, '?', target.n);
    return (span_t){target.p, q ? (size_t)(q - target.p) : target.n};
}

static enum route route_of(span_t path)
{
    return span_is(path, "/metrics") ? ROUTE_METRICS : span_is(path, "/healthz") ? ROUTE_HEALTHZ : ROUTE_OTHER;
}

static void handle_request(struct client *c, size_t head_len)
{
    span_t method, target;
    if (c->in.len > head_len)
        c->linger = true; /* a body or a pipelined request we will not read */
    if (parse_head(c->in.data, head_len, &method, &target) < 0) {
        c->linger = true;
        respond_error(c, ROUTE_OTHER, 400, "bad request\n", false);
        return;
    }
    c->method = method;
    c->path = path_of(target);
    bool head_only = span_is(method, "HEAD");
    enum route r = route_of(c->path);
    if (!head_only && !span_is(method, "GET")) {
        c->linger = true;
        respond_error(c, r, 405, "method not allowed\n", false);
    } else if (target.p[0] != '/') {
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
    size_t head_len = find_head_end(c);
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
        ami_counter_inc(c->h->timeouts);
        AMI_LOG(c->h->log, AMI_LOG_DEBUG, "http connection timed out",
                AMI_F_STR("phase", c->phase == PHASE_READ ? "read" : "write"),
                AMI_F_UINT("received", c->in.len), AMI_F_UINT("sent", c->sent),
                AMI_F_UINT("timeout_ms", c->h->cfg.timeout_ms));
    }
    http_client_close(c);
}
