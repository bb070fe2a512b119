#include "transport/tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/resolver.h"
#include "util/alloc.h"
#include "util/sockaddr.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define DEFAULT_READ_CHUNK (64u << 10)
#define DEFAULT_WRITE_HWM (1u << 20)
/* Give memory back after a burst once the buffer is empty again. */
#define WBUF_KEEP (64u << 10)

struct ami_tcp {
    struct ev_loop *loop;
    ami_tcp_options_t opt;
    ami_tcp_callbacks_t cb;
    void *ud;
    ami_logger_t *log;
    int fd;
    ami_tcp_state_t state;
    ev_io rio;
    ev_io wio;
    ev_timer connect_timer;
    ev_prepare flush_hook;
    ami_buf_t wbuf;
    ami_resolve_t *resolve;
    ami_tls_t *tls;          /* this connection's TLS session, NULL for plain TCP */
    bool read_wants_write;   /* TLS: a read must write first (key update, renegotiation) */
    bool write_wants_read;   /* TLS: a write must read first (renegotiation) */
    bool read_paused;        /* the owner has input left: ami_tcp_pause_reading */
    bool read_skipped;       /* this wake-up reads nothing: ami_tcp_skip_read */
    bool rio_silenced;       /* a long pause stopped rio; resuming starts it */
    uint8_t paused_wakeups;  /* readiness ignored since the pause began */
    uint64_t gen;            /* bumps on every close: a callback may close and reopen */
    uint16_t port;
    char peer[80];
    ami_tcp_stats_t stats;
};

void ami_tcp_options_default(ami_tcp_options_t *opt)
{
    opt->enforce_ip = true;
    opt->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    opt->read_chunk = DEFAULT_READ_CHUNK;
    opt->write_hwm = DEFAULT_WRITE_HWM;
    opt->tls = NULL;
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents);
static void silence_if_long_paused(ami_tcp_t *t);
static void on_writable(struct ev_loop *loop, ev_io *w, int revents);
static void on_connect_timeout(struct ev_loop *loop, ev_timer *w, int revents);
static void on_flush_hook(struct ev_loop *loop, ev_prepare *w, int revents);

ami_tcp_t *ami_tcp_new(struct ev_loop *loop, const ami_tcp_options_t *opt,
                       const ami_tcp_callbacks_t *cb, void *ud, ami_logger_t *log)
{
    ami_tcp_t *t = ami_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->loop = loop;
    ami_tcp_options_default(&t->opt);
    if (opt) {
        t->opt.enforce_ip = opt->enforce_ip;
        if (opt->connect_timeout_ms)
            t->opt.connect_timeout_ms = opt->connect_timeout_ms;
        if (opt->read_chunk)
            t->opt.read_chunk = opt->read_chunk;
        if (opt->write_hwm)
            t->opt.write_hwm = opt->write_hwm;
        t->opt.tls = opt->tls;
    }
    t->cb = *cb;
    t->ud = ud;
    t->log = log;
    t->fd = -1;
    ami_buf_init(&t->wbuf, t->opt.write_hwm);
    ev_init(&t->rio, on_readable);
    ev_init(&t->wio, on_writable);
    ev_init(&t->connect_timer, on_connect_timeout);
    ev_prepare_init(&t->flush_hook, on_flush_hook);
    t->rio.data = t->wio.data = t->connect_timer.data = t->flush_hook.data = t;
    return t;
}

void ami_tcp_free(ami_tcp_t *t)
{
    if (!t)
        return;
    ami_tcp_close(t);
    ami_buf_deinit(&t->wbuf);
    ami_free(t);
}

/* coverage-begin: seed-2.1 (IP literals only) */
bool ami_tcp_is_ip_literal(const char *host)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return host && *host && ami_sockaddr_from_ip(host, 1, &ss, &len);
}
/* coverage-end: seed-2.1 */

static void describe_peer(ami_tcp_t *t, const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof ip);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof ip);
    snprintf(t->peer, sizeof t->peer, ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, t->port);
}

/* Close and tell the owner, for failures the transport noticed itself. */
static void fail(ami_tcp_t *t, ami_status_t why, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(ami_tcp_t *t, ami_status_t why, const char *fmt, ...)
{
    char reason[AMI_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    ami_tcp_close(t);
    if (t->cb.on_close)
        t->cb.on_close(t->ud, why, reason);
}

/* 0, or -1 with err and the slot closed again (no callback: the caller
 * reports it, at once from ami_tcp_open or through on_close after a lookup). */
static int start_connect(ami_tcp_t *t, const struct sockaddr_storage *ss, socklen_t len, ami_err_t *err)
{
    describe_peer(t, ss);
    t->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (t->fd < 0)
        return ami_err_set(err, AMI_E_IO, "socket() for %s failed: %s", t->peer, strerror(errno));
    int one = 1;
    setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    t->stats.connects++;
    t->state = AMI_TCP_CONNECTING;
    if (connect(t->fd, (const struct sockaddr *)ss, len) < 0 && errno != EINPROGRESS) {
        int rc = ami_err_set(err, AMI_E_IO, "connect to %s failed: %s", t->peer, strerror(errno));
        ami_tcp_close(t);
        return rc;
    }
    ev_io_set(&t->wio, t->fd, EV_WRITE);
    ev_io_start(t->loop, &t->wio);
    ev_timer_set(&t->connect_timer, t->opt.connect_timeout_ms / 1000.0, 0.);
    ev_timer_start(t->loop, &t->connect_timer);
    return 0;
}

static void on_resolved(void *ud, const struct sockaddr_storage *ss, socklen_t len, const char *error)
{
    ami_tcp_t *t = ud;
    t->resolve = NULL;
    if (error) {
        fail(t, AMI_E_IO, "%s", error);
        return;
    }
    struct sockaddr_storage addr = *ss;
    if (addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&addr)->sin_port = htons(t->port);
    else
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons(t->port);
    ami_err_t err;
    if (start_connect(t, &addr, len, &err) < 0)
        fail(t, err.code, "%s", err.msg);
}

int ami_tcp_open(ami_tcp_t *t, const char *host, uint16_t port, ami_err_t *err)
{
    if (t->state != AMI_TCP_IDLE)
        return ami_err_set(err, AMI_E_INVALID, "transport is busy (%d); close it before opening again",
                           (int)t->state);
    if (port == 0)
        return ami_err_set(err, AMI_E_INVALID, "port 0 is not a valid AMI port");
    t->port = port;
    ami_buf_clear(&t->wbuf);
    struct sockaddr_storage ss;
    socklen_t len;
    /* coverage-begin: seed-2.1 (a hostname refused without a lookup) */
    if (ami_sockaddr_from_ip(host, port, &ss, &len))
        return start_connect(t, &ss, len, err);
    if (t->opt.enforce_ip)
        return ami_err_set(err, AMI_E_INVALID,
                           "host \"%.64s\" is not an IP address: enforce_ip_endpoints is on, so "
                           "hostnames are refused without a DNS lookup (a lookup can block the loop). "
                           "Use the server's IP address, or set enforce_ip_endpoints = false to "
                           "resolve names on a helper thread",
                           host);
    /* coverage-end: seed-2.1 */
    snprintf(t->peer, sizeof t->peer, "%.64s:%u", host, port);
    t->stats.resolver_calls++;
    t->resolve = ami_resolve_start(t->loop, host, on_resolved, t, err);
    if (!t->resolve)
        return -1;
    t->state = AMI_TCP_RESOLVING;
    return 0;
}

void ami_tcp_close(ami_tcp_t *t)
{
    if (t->resolve) {
        ami_resolve_cancel(t->resolve);
        t->resolve = NULL;
    }
    ev_io_stop(t->loop, &t->rio);
    ev_io_stop(t->loop, &t->wio);
    ev_timer_stop(t->loop, &t->connect_timer);
    ev_prepare_stop(t->loop, &t->flush_hook);
    if (t->tls) {
        if (t->state == AMI_TCP_OPEN)
            ami_tls_close_notify(t->tls);
        ami_tls_free(t->tls);
        t->tls = NULL;
    }
    t->read_wants_write = t->write_wants_read = false;
    t->read_paused = t->read_skipped = t->rio_silenced = false;
    t->gen++;
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
    t->state = AMI_TCP_IDLE;
    ami_buf_clear(&t->wbuf);
    ami_buf_shrink(&t->wbuf, WBUF_KEEP);
}

static void opened(ami_tcp_t *t)
{
    ev_timer_stop(t->loop, &t->connect_timer);
    ev_io_stop(t->loop, &t->wio);
    ev_io_start(t->loop, &t->rio);
    t->state = AMI_TCP_OPEN;
    if (t->cb.on_open)
        t->cb.on_open(t->ud);
}

/* ---- TLS handshake ------------------------------------------------------------------ */

static void handshake_step(ami_tcp_t *t)
{
    switch (ami_tls_handshake(t->tls)) {
    case AMI_TLS_DONE: {
        const ami_tls_ctx_t *ctx = t->opt.tls;
        AMI_LOG(t->log, AMI_LOG_INFO, "tls established", AMI_F_STR("server_key", ami_tls_ctx_server_key(ctx)),
                AMI_F_STR("peer", t->peer), AMI_F_STR("version", ami_tls_version(t->tls)),
                AMI_F_STR("cipher", ami_tls_cipher(t->tls)),
                AMI_F_STR("verified_name",
                          ami_tls_ctx_verifies(ctx) ? ami_tls_ctx_expected_name(ctx) : "(verify off)"));
        opened(t);
        return;
    }
    case AMI_TLS_WANT_READ:
        ev_io_stop(t->loop, &t->wio);
        return;
    case AMI_TLS_WANT_WRITE:
        ev_io_start(t->loop, &t->wio);
        return;
    default:
        fail(t, AMI_E_IO, "TLS handshake with %s failed: %s", t->peer, ami_tls_error(t->tls));
    }
}

static void start_handshake(ami_tcp_t *t)
{
    ami_tls_ctx_t *ctx = t->opt.tls;
    ami_err_t err;
    if (ami_tls_ctx_refresh(ctx, &err) < 0)
        AMI_LOG(t->log, AMI_LOG_WARN, "tls files changed but do not load; using the previous ones",
                AMI_F_STR("server_key", ami_tls_ctx_server_key(ctx)), AMI_F_STR("error", err.msg));
    if (!ami_tls_ctx_verifies(ctx))
        AMI_LOG(t->log, AMI_LOG_WARN, "tls certificate verification is off",
                AMI_F_STR("server_key", ami_tls_ctx_server_key(ctx)), AMI_F_STR("peer", t->peer),
                AMI_F_STR("risk", "anyone on the network path can pose as this server and read the AMI secret"),
                AMI_F_STR("fix", "set tls.verify = true with tls.ca_file"));
    t->tls = ami_tls_new(ctx, t->fd, &err);
    if (!t->tls) {
        fail(t, AMI_E_NOMEM, "TLS with %s: %s", t->peer, err.msg);
        return;
    }
    t->state = AMI_TCP_HANDSHAKE;
    ev_timer_stop(t->loop, &t->connect_timer);
    ev_timer_set(&t->connect_timer, ami_tls_ctx_handshake_timeout_ms(ctx) / 1000.0, 0.);
    ev_timer_start(t->loop, &t->connect_timer);
    ev_io_start(t->loop, &t->rio);
    handshake_step(t);
}

static void connected(ami_tcp_t *t)
{
    ev_io_stop(t->loop, &t->wio);
    ev_io_set(&t->wio, t->fd, EV_WRITE);
    ev_io_set(&t->rio, t->fd, EV_READ);
    if (t->opt.tls)
        start_handshake(t);
    else
        opened(t);
}

static void on_connect_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_tcp_t *t = w->data;
    if (t->state == AMI_TCP_HANDSHAKE) {
        uint32_t ms = ami_tls_ctx_handshake_timeout_ms(t->opt.tls);
        ami_tls_handshake_timed_out(t->tls, ms);
        fail(t, AMI_E_TIMEOUT, "TLS handshake with %s failed: %s", t->peer, ami_tls_error(t->tls));
        return;
    }
    fail(t, AMI_E_TIMEOUT, "connect to %s timed out after %u ms", t->peer, t->opt.connect_timeout_ms);
}

/* A TLS session ended while open: the peer's close reads like plain TCP's. */
static void tls_ended(ami_tcp_t *t, ami_tls_result_t r)
{
    if (r == AMI_TLS_CLOSED)
        fail(t, AMI_E_DISCONNECTED, "%s closed the connection (%s TLS close_notify)", t->peer,
             ami_tls_reason(t->tls) == AMI_TLS_R_NONE ? "with" : "without");
    else
        fail(t, AMI_E_DISCONNECTED, "TLS session with %s failed: %s", t->peer, ami_tls_error(t->tls));
}

/* Through TLS: bytes of plaintext taken, 0 to wait (watchers set), -1 closed. */
static long send_tls(ami_tcp_t *t)
{
    size_t put = 0;
    ami_tls_result_t r = ami_tls_write(t->tls, t->wbuf.data, t->wbuf.len, &put);
    if (r == AMI_TLS_DONE)
        return (long)put;
    if (r == AMI_TLS_WANT_WRITE) {
        ev_io_start(t->loop, &t->wio);
        return 0;
    }
    if (r == AMI_TLS_WANT_READ) {
        /* rio is always on while open; polling for writability would spin */
        t->write_wants_read = true;
        if (!t->read_wants_write)
            ev_io_stop(t->loop, &t->wio);
        return 0;
    }
    tls_ended(t, r);
    return -1;
}

static long send_plain(ami_tcp_t *t)
{
    for (;;) {
        ssize_t n = send(t->fd, t->wbuf.data, t->wbuf.len, MSG_NOSIGNAL);
        if (n > 0)
            return (long)n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(t->loop, &t->wio);
            return 0;
        }
        fail(t, AMI_E_DISCONNECTED, "write to %s failed: %s", t->peer, n < 0 ? strerror(errno) : "no progress");
        return -1;
    }
}

/* Write as much as the socket takes now; wait for what it needs if not all.
 * A TLS write that waited is retried with the same bytes at the front, as
 * OpenSSL requires: the buffer only grows at its end until bytes are sent. */
static void flush(ami_tcp_t *t)
{
    while (t->wbuf.len) {
        long n = t->tls ? send_tls(t) : send_plain(t);
        if (n <= 0)
            return;
        t->stats.bytes_out += (uint64_t)n;
        t->stats.writes++;
        ami_buf_consume(&t->wbuf, (size_t)n);
    }
    if (!t->read_wants_write)
        ev_io_stop(t->loop, &t->wio);
    if (t->wbuf.cap > WBUF_KEEP)
        ami_buf_shrink(&t->wbuf, WBUF_KEEP);
}

static void read_some(ami_tcp_t *t);

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_tcp_t *t = w->data;
    if (t->state == AMI_TCP_CONNECTING) {
        int soerr = 0;
        socklen_t len = sizeof soerr;
        getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr) {
            fail(t, AMI_E_IO, "connect to %s failed: %s", t->peer, strerror(soerr));
            return;
        }
        connected(t);
        if (t->state == AMI_TCP_OPEN && t->wbuf.len)
            ami_tcp_schedule_flush(t);
        return;
    }
    if (t->state == AMI_TCP_HANDSHAKE) {
        handshake_step(t);
        if (t->state == AMI_TCP_OPEN && t->wbuf.len)
            ami_tcp_schedule_flush(t);
        return;
    }
    if (t->read_wants_write && !t->read_paused) {
        uint64_t gen = t->gen;
        t->read_wants_write = false;
        read_some(t);
        if (gen != t->gen)
            return;
    }
    flush(t);
}

static void on_flush_hook(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    ami_tcp_t *t = w->data;
    ev_prepare_stop(loop, w);
    if (t->state == AMI_TCP_OPEN && !ev_is_active(&t->wio))
        flush(t);
}

void ami_tcp_schedule_flush(ami_tcp_t *t)
{
    if (t->state == AMI_TCP_OPEN && t->wbuf.len && !ev_is_active(&t->flush_hook))
        ev_prepare_start(t->loop, &t->flush_hook);
}

ami_buf_t *ami_tcp_wbuf(ami_tcp_t *t)
{
    return &t->wbuf;
}

/* Whether the read_buffer just called skipped this wake-up. */
static bool took_skip(ami_tcp_t *t)
{
    bool skipped = t->read_skipped;
    t->read_skipped = false;
    return skipped;
}

/* One read per wake-up: a flooding server gets one chunk per loop iteration,
 * like every other ready connection. */
static void read_plain(ami_tcp_t *t)
{
    size_t room = 0;
    char *dst = t->cb.read_buffer(t->ud, t->opt.read_chunk, &room);
    if (t->read_paused || took_skip(t))
        return;
    if (!dst || room == 0) {
        fail(t, AMI_E_LIMIT, "no room to read from %s: the input buffer is at its bound", t->peer);
        return;
    }
    ssize_t n = recv(t->fd, dst, room, 0);
    if (n > 0) {
        t->stats.bytes_in += (uint64_t)n;
        t->stats.reads++;
        t->cb.on_read(t->ud, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n == 0)
        fail(t, AMI_E_DISCONNECTED, "%s closed the connection", t->peer);
    else
        fail(t, AMI_E_DISCONNECTED, "read from %s failed: %s", t->peer, strerror(errno));
}

/* Up to read_chunk bytes of plaintext per wake-up, the same share as plain
 * TCP's one recv, record by record (16 KiB at most each); plaintext the
 * session already decrypted is taken too, since no readiness would ever
 * announce it. The owner may close (and reopen) from on_read: gen tells. */
static void read_tls(ami_tcp_t *t)
{
    size_t budget = t->opt.read_chunk;
    uint64_t gen = t->gen;
    for (;;) {
        size_t want = budget ? budget : ami_tls_pending(t->tls);
        if (want == 0)
            return;
        size_t room = 0, got = 0;
        char *dst = t->cb.read_buffer(t->ud, want, &room);
        if (t->read_paused || took_skip(t))
            return;
        if (!dst || room == 0) {
            fail(t, AMI_E_LIMIT, "no room to read from %s: the input buffer is at its bound", t->peer);
            return;
        }
        ami_tls_result_t r = ami_tls_read(t->tls, dst, room, &got);
        if (r == AMI_TLS_WANT_READ)
            return;
        if (r == AMI_TLS_WANT_WRITE) {
            t->read_wants_write = true;
            ev_io_start(t->loop, &t->wio);
            return;
        }
        if (r != AMI_TLS_DONE) {
            tls_ended(t, r);
            return;
        }
        t->stats.bytes_in += (uint64_t)got;
        t->stats.reads++;
        t->cb.on_read(t->ud, got);
        if (gen != t->gen || t->read_paused)
            return;
        budget = got >= budget ? 0 : budget - got;
    }
}

static void read_some(ami_tcp_t *t)
{
    if (t->tls)
        read_tls(t);
    else
        read_plain(t);
}

/* A write that waited for readability (TLS) is retried after the read. */
static void read_now(ami_tcp_t *t)
{
    bool retry_write = t->write_wants_read;
    uint64_t gen = t->gen;
    t->write_wants_read = false;
    read_some(t);
    if (retry_write && gen == t->gen)
        flush(t);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_tcp_t *t = w->data;
    if (t->state == AMI_TCP_HANDSHAKE) {
        handshake_step(t);
        return;
    }
    if (t->read_paused) {
        t->stats.paused_wakeups++;
        silence_if_long_paused(t);
        return;
    }
    read_now(t);
}

/* rio stays on while paused: stopping and starting it costs two epoll_ctl
 * calls, more than a pause of an iteration or two (the usual one) costs.
 * A pause that lasts (many servers flooding at once: each drains a message
 * or a few per iteration for hundreds of iterations) would instead have
 * the kernel report the socket, and the loop call back for nothing, in
 * every one of them: the third ignored readiness stops rio until resumed. */
#define SILENCE_AFTER_WAKEUPS 2

static void silence_if_long_paused(ami_tcp_t *t)
{
    if (t->paused_wakeups < SILENCE_AFTER_WAKEUPS) {
        t->paused_wakeups++;
        return;
    }
    ev_io_stop(t->loop, &t->rio);
    t->rio_silenced = true;
}

void ami_tcp_pause_reading(ami_tcp_t *t)
{
    if (t->state == AMI_TCP_OPEN && !t->read_paused) {
        t->read_paused = true;
        t->paused_wakeups = 0;
    }
}

void ami_tcp_resume_reading(ami_tcp_t *t)
{
    if (t->state == AMI_TCP_OPEN && t->read_paused) {
        t->read_paused = false;
        if (t->rio_silenced) {
            t->rio_silenced = false;
            ev_io_start(t->loop, &t->rio);
        }
        read_now(t);
    }
}

bool ami_tcp_skip_read(ami_tcp_t *t)
{
    if (t->state != AMI_TCP_OPEN || (t->tls && ami_tls_holds_input(t->tls)))
        return false;
    t->read_skipped = true;
    t->stats.reads_skipped++;
    return true;
}

ami_tcp_state_t ami_tcp_state(const ami_tcp_t *t)
{
    return t->state;
}

const char *ami_tcp_peer(const ami_tcp_t *t)
{
    return t->peer;
}

const ami_tcp_stats_t *ami_tcp_stats(const ami_tcp_t *t)
{
    return &t->stats;
}
