#include "obs/http.h"

#include <arpa/inet.h>
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

#include "util/alloc.h"
#include "util/clock.h"

#define DEFAULT_BIND_IP "127.0.0.1"
#define DEFAULT_MAX_REQUEST 8192u
#define DEFAULT_TIMEOUT_MS 5000u
#define DEFAULT_MAX_CLIENTS 32u
#define DEFAULT_MAX_RESPONSE (16u << 20)
#define READ_CHUNK 4096u
#define LINGER_CHUNK 4096u
/* Bounded work per wakeup, so a connect storm cannot hold the loop. */
#define ACCEPTS_PER_WAKEUP 64
/* Out of descriptors, the listener stays readable: pause instead of spinning. */
#define ACCEPT_PAUSE_S 0.1
#define HEALTH_BODY_MAX (64u << 10)
#define ERROR_BODY_MAX 256u
#define RESPONSE_HEAD_MAX 512u
#define LOG_FIELD_MAX 128u

#define REQUESTS_NAME "ami_http_requests_total"
#define REQUESTS_HELP "HTTP requests answered by the metrics endpoint, by path and status code."
#define REFUSED_NAME "ami_http_connections_refused_total"
#define REFUSED_HELP "HTTP connections closed at once because max_clients were already open."
#define TIMEOUTS_NAME "ami_http_timeouts_total"
#define TIMEOUTS_HELP "HTTP connections closed for exceeding their request-response time budget."

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define PROM_TEXT "text/plain; version=0.0.4; charset=utf-8"

/* Paths are bucketed so that a scanner probing URLs cannot grow the registry. */
enum route { ROUTE_METRICS, ROUTE_HEALTHZ, ROUTE_OTHER, ROUTE_COUNT };
static const char *const route_labels[ROUTE_COUNT] = {"/metrics", "/healthz", "other"};

static const int codes[] = {200, 400, 404, 405, 431, 500, 503};
#define NCODES (sizeof codes / sizeof codes[0])

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
    ami_counter_t *requests[ROUTE_COUNT][NCODES];
    ami_counter_t unregistered; /* every counter points here when there is no registry */
    char ip[INET6_ADDRSTRLEN];
    char addr[INET6_ADDRSTRLEN + 8]; /* "ip:port" or "[ip]:port", for messages */
};

void ami_http_config_default(ami_http_config_t *cfg)
{
    cfg->bind_ip = DEFAULT_BIND_IP;
    cfg->port = 0;
    cfg->max_request = DEFAULT_MAX_REQUEST;
    cfg->timeout_ms = DEFAULT_TIMEOUT_MS;
    cfg->max_clients = DEFAULT_MAX_CLIENTS;
    cfg->max_response = DEFAULT_MAX_RESPONSE;
}

static void on_client_io(struct ev_loop *loop, ev_io *w, int revents);
static void on_client_timeout(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- counting and logging --------------------------------------------------------- */

static ami_counter_t *counter(ami_http_t *h, const char *name, const char *help,
                              const char *const *labels)
{
    return h->metrics ? ami_metrics_counter(h->metrics, name, help, labels, NULL) : &h->unregistered;
}

static void count_request(ami_http_t *h, enum route r, int code)
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

static void client_close(struct client *c)
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

static struct client *client_new(ami_http_t *h, int fd)
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
        client_close(c);
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
            client_close(c);
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
    count_request(c->h, r, code);
    const char *allow = code == 405 ? "Allow: GET, HEAD\r\n" : "";
    if (ami_buf_printf(&c->head,
                       "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                       "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                       code, reason_phrase(code), ctype, c->body.len, allow) < 0) {
        client_close(c);
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
        client_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, want, 0);
    if (n < 0 && transient(errno))
        return;
    if (n <= 0) { /* the client left before asking anything */
        client_close(c);
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
    client_close(c);
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
    client_close(c);
}

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
        if (!client_new(h, fd))
            close(fd);
    }
}

/* ---- setup ---------------------------------------------------------------------------- */

static int parse_addr(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        *len = sizeof *v6;
        return 0;
    }
    return -1;
}

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
    if (parse_addr(ip, h->cfg.port, &ss, &len) < 0)
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
        client_close(h->clients);
    ev_io_stop(h->loop, &h->accept_w);
    ev_timer_stop(h->loop, &h->accept_pause);
    close(h->fd);
    ami_free(h);
}
