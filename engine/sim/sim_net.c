/*
 * Listeners and sessions: accept, read into the parser, buffered writes,
 * closing, and the write budget that the close_after_bytes fault needs.
 * Every socket is non-blocking; output goes through one bounded buffer per
 * session and is flushed when the socket says it is writable.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/sockaddr.h"
#include "sim/sim_internal.h"
#include "util/alloc.h"

#define READ_CHUNK (64u << 10)
#define ACCEPTS_PER_CALL 64
#define COMPACT_ABOVE (256u << 10)

static const char BANNER_FMT[] = "Asterisk Call Manager/%s\r\n";
static const char GARBAGE_BANNER[] = "SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n";

double sim_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* Asterisk's security-event address form: IPV4/TCP/127.0.0.1/5038. */
static void format_addr(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    const char *fam = "IPV4";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
        port = ntohs(v6->sin6_port);
        fam = "IPV6";
    } else {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
        port = ntohs(v4->sin_port);
    }
    snprintf(out, size, "%s/TCP/%s/%u", fam, ip, port);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents);

int sim_listen(ami_sim_node_t *n, ami_err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!ami_sockaddr_from_ip(n->bind_ip, n->port, &ss, &len))
        return ami_err_set(err, AMI_E_CONFIG, "sim node %s: bind address '%s' is not an IP literal",
                           n->name, n->bind_ip);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ami_err_set(err, AMI_E_IO, "sim node %s: socket: %s", n->name, strerror(errno));
    int one = 1;
    /* restart must rebind the same port while old connections sit in TIME_WAIT */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        return ami_err_set(err, AMI_E_IO, "sim node %s: cannot listen on %s port %u: %s", n->name,
                           n->bind_ip, (unsigned)n->port, strerror(e));
    }
    struct sockaddr_storage got;
    socklen_t glen = sizeof got;
    if (getsockname(fd, (struct sockaddr *)&got, &glen) == 0)
        n->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                  : ((struct sockaddr_in *)&got)->sin_port);
    n->lfd = fd;
    ev_io_init(&n->accept_w, on_accept, fd, EV_READ);
    n->accept_w.data = n;
    ev_io_start(n->sim->loop, &n->accept_w);
    n->running = true;
    return 0;
}

void sim_unlisten(ami_sim_node_t *n)
{
    if (n->lfd >= 0) {
        ev_io_stop(n->sim->loop, &n->accept_w);
        close(n->lfd);
        n->lfd = -1;
    }
    n->running = false;
}

static void session_free(sim_session_t *s)
{
    ami_parser_deinit(&s->parser);
    ami_buf_deinit(&s->out);
    ami_buf_deinit(&s->held);
    sim_filters_free(s);
    sim_flood_session_reset(s);
    ami_free(s);
}

void sim_reap(ami_sim_node_t *n)
{
    while (n->graveyard) {
        sim_session_t *s = n->graveyard;
        n->graveyard = s->next;
        session_free(s);
    }
    ev_idle_stop(n->sim->loop, &n->reaper);
}

void sim_session_close(sim_session_t *s, const char *why)
{
    if (s->closed)
        return;
    ami_sim_node_t *n = s->node;
    struct ev_loop *loop = n->sim->loop;
    s->closed = true;
    AMI_LOG(SIM_LOG(n), AMI_LOG_DEBUG, "sim session closed", AMI_F_STR("node", n->name),
            AMI_F_UINT("session", s->id), AMI_F_STR("reason", why));
    ev_io_stop(loop, &s->rw);
    ev_io_stop(loop, &s->ww);
    ev_timer_stop(loop, &s->delay_timer);
    ev_timer_stop(loop, &s->auth_timer);
    sim_replay_stop(s);
    sim_session_forget_call(s);
    n->stats.bytes_unsent_at_close += s->out.len - s->out_pos;
    sim_count_session_closed(s);
    sim_tls_session_end(s);
    close(s->fd);
    s->fd = -1;
    if (s->prev)
        s->prev->next = s->next;
    else
        n->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    n->stats.sessions_live--;
    s->prev = NULL;
    s->next = n->graveyard;
    n->graveyard = s;
    ev_idle_start(loop, &n->reaper);
}

static size_t sim_write_budget(const sim_session_t *s)
{
    uint64_t lim = s->node->faults.close_after_bytes;
    if (!lim)
        return SIZE_MAX;
    return s->bytes_out >= lim ? 0 : (size_t)(lim - s->bytes_out);
}

long sim_write_raw(sim_session_t *s, const char *p, size_t len)
{
    size_t budget = sim_write_budget(s);
    if (budget == 0) {
        sim_session_close(s, "close_after_bytes fault");
        return -1;
    }
    if (len > budget)
        len = budget;
    ssize_t r = s->tls ? sim_tls_send(s, p, len) : send(s->fd, p, len, MSG_NOSIGNAL);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        sim_session_close(s, strerror(errno));
        return -1;
    }
    s->bytes_out += (uint64_t)r;
    s->node->stats.bytes_sent += (uint64_t)r;
    if (sim_write_budget(s) == 0) {
        sim_session_close(s, "close_after_bytes fault");
        return -1;
    }
    return (long)r;
}

void sim_session_want_write(sim_session_t *s)
{
    if (!s->closed && !s->tls_write_wants_read)
        ev_io_start(s->node->sim->loop, &s->ww);
}

/* Write out what is queued; in max-flood mode keep the socket full. */
static void session_flush(sim_session_t *s)
{
    while (!s->closed) {
        /* TLS floods stage whole blocks into out (sim_flood.c) */
        if ((s->flood_off == 0 || s->tls) && s->out_pos < s->out.len) {
            long r = sim_write_raw(s, s->out.data + s->out_pos, s->out.len - s->out_pos);
            if (r < 0)
                return;
            if (r == 0) {
                sim_session_want_write(s);
                return;
            }
            s->out_pos += (size_t)r;
            if (s->out_pos == s->out.len) {
                ami_buf_clear(&s->out);
                s->out_pos = 0;
                ami_buf_shrink(&s->out, 1u << 20);
            }
            continue;
        }
        if (sim_flood_max_active(s)) {
            int r = sim_flood_write(s);
            if (r < 0)
                return;
            if (r == 0) {
                sim_session_want_write(s);
                return;
            }
            if (r == 1)
                break;
            continue;
        }
        break;
    }
    if (s->closed)
        return;
    if (s->half_close_pending) {
        s->half_close_pending = false;
        sim_tls_notify_close(s);
        shutdown(s->fd, SHUT_WR);
    }
    if (s->close_after_flush) {
        sim_session_close(s, "closed after reply");
        return;
    }
    if (!s->tls_read_wants_write)
        ev_io_stop(s->node->sim->loop, &s->ww);
}

int sim_session_send(sim_session_t *s, const void *p, size_t len)
{
    if (s->closed)
        return -1;
    if (s->out_pos && (s->out_pos >= COMPACT_ABOVE || s->out.len + len > s->out.limit)) {
        ami_buf_consume(&s->out, s->out_pos);
        s->out_pos = 0;
    }
    if (ami_buf_append(&s->out, p, len) < 0) {
        /* A client that does not read: real Asterisk gives up on it too. */
        s->node->stats.sessions_dropped_slow++;
        AMI_LOG(SIM_LOG(s->node), AMI_LOG_WARN, "sim dropped a slow client",
                AMI_F_STR("node", s->node->name), AMI_F_UINT("session", s->id),
                AMI_F_UINT("queued", s->out.len - s->out_pos));
        sim_session_close(s, "output buffer full");
        return -1;
    }
    sim_count_sent(s, p, len);
    sim_session_want_write(s);
    return 0;
}

void sim_session_close_after_flush(sim_session_t *s)
{
    if (s->closed)
        return;
    s->close_after_flush = true;
    ev_io_stop(s->node->sim->loop, &s->rw);
    sim_session_want_write(s);
}

void sim_session_update_reading(sim_session_t *s)
{
    if (s->closed)
        return;
    struct ev_loop *loop = s->node->sim->loop;
    bool want = !s->busy && !s->close_after_flush && !s->node->faults.stall_reads;
    if (want)
        ev_io_start(loop, &s->rw);
    else
        ev_io_stop(loop, &s->rw);
}

static void process_input(sim_session_t *s)
{
    ami_msg_t m;
    ami_err_t err;
    while (!s->closed && !s->busy && !s->close_after_flush) {
        int rc = ami_parser_next(&s->parser, &m, &err);
        if (rc == 0)
            break;
        if (rc > 0 && m.bad_lines) {
            /* The parser drops a malformed line and goes on; the simulator
             * stays strict with what clients send, as its tests expect. */
            const ami_parser_bad_t *bad = ami_parser_last_bad(&s->parser);
            ami_err_set(&err, AMI_E_PROTOCOL, "line %zu of an action: %s (\"%s\")", bad->line,
                        ami_bad_kind_name(bad->kind), bad->excerpt);
            rc = -1;
        }
        if (rc < 0) {
            AMI_LOG(SIM_LOG(s->node), AMI_LOG_WARN, "sim got a malformed action",
                    AMI_F_STR("node", s->node->name), AMI_F_UINT("session", s->id),
                    AMI_F_STR("error", err.msg));
            sim_reply(s, NULL, "Error", err.msg);
            sim_session_close_after_flush(s);
            break;
        }
        sim_dispatch(s, &m);
    }
    sim_session_update_reading(s);
}

static size_t count_messages(sim_session_t *s)
{
    ami_msg_t m;
    ami_err_t err;
    size_t n = 0;
    int rc;
    while ((rc = ami_parser_next(&s->parser, &m, &err)) == 1)
        n++;
    if (rc < 0)
        sim_session_close(s, err.msg);
    return n;
}

/* 1 read something, 0 nothing now, -1 closed. */
static int read_some(sim_session_t *s)
{
    size_t got = 0;
    char *dst = ami_parser_reserve(&s->parser, READ_CHUNK, &got);
    if (!dst || got == 0) {
        sim_reply(s, NULL, "Error", "Message too large");
        sim_session_close_after_flush(s);
        return -1;
    }
    ssize_t r = s->tls ? sim_tls_recv(s, dst, got) : recv(s->fd, dst, got, 0);
    if (r > 0) {
        ami_parser_commit(&s->parser, (size_t)r);
        s->node->stats.bytes_received += (uint64_t)r;
        return 1;
    }
    if (r == 0) {
        sim_session_close(s, "client closed");
        return -1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    sim_session_close(s, strerror(errno));
    return -1;
}

static void handle_input(sim_session_t *s)
{
    if (s->replaying) {
        size_t n = count_messages(s);
        if (!s->closed && n)
            sim_replay_input(s, n);
    } else {
        process_input(s);
    }
}

/* TLS: a record the parser had no room for stays decrypted in the session,
 * where no readiness announces it, so it is read now. */
static bool more_decrypted(sim_session_t *s)
{
    return !s->closed && s->tls && ev_is_active(&s->rw) && ami_tls_pending(s->tls) > 0;
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    SIM_ACCOUNT();
    sim_session_t *s = w->data;
    if (s->tls_handshaking) {
        sim_tls_handshake_step(s);
        return;
    }
    bool retry_write = s->tls_write_wants_read;
    s->tls_write_wants_read = false;
    do {
        if (read_some(s) <= 0)
            break;
        handle_input(s);
    } while (more_decrypted(s));
    if (!s->closed && (s->out.len > s->out_pos || retry_write))
        session_flush(s);
}

void sim_session_read_now(sim_session_t *s)
{
    on_read(s->node->sim->loop, &s->rw, EV_READ);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    SIM_ACCOUNT();
    sim_session_t *s = w->data;
    if (s->tls_handshaking) {
        sim_tls_handshake_step(s);
        return;
    }
    if (s->tls_read_wants_write) {
        s->tls_read_wants_write = false;
        sim_session_read_now(s);
        if (s->closed)
            return;
    }
    session_flush(s);
}

/* Resume after a delayed answer or a finished sync Originate. */
static void on_delay(struct ev_loop *loop, ev_timer *w, int revents)
{
    SIM_ACCOUNT();
    sim_session_t *s = w->data;
    if (s->has_pending) {
        ami_msg_t m = s->pending;
        s->has_pending = false;
        s->busy = false;
        sim_dispatch_now(s, &m);
    }
    if (s->closed)
        return;
    process_input(s);
    if (!s->closed && s->out.len > s->out_pos)
        session_flush(s);
}

void sim_session_resume_soon(sim_session_t *s)
{
    if (s->closed)
        return;
    struct ev_loop *loop = s->node->sim->loop;
    ev_timer_stop(loop, &s->delay_timer);
    ev_timer_set(&s->delay_timer, 0., 0.);
    ev_timer_start(loop, &s->delay_timer);
}

static void on_auth_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    SIM_ACCOUNT();
    sim_session_t *s = w->data;
    if (!s->logged_in)
        sim_session_close(s, "authtimeout");
}

static void noop_timer(struct ev_loop *loop, ev_timer *w, int revents) {}

static void greet(sim_session_t *s)
{
    const ami_sim_faults_t *f = &s->node->faults;
    if (f->garbage_banner) {
        sim_session_send(s, GARBAGE_BANNER, sizeof GARBAGE_BANNER - 1);
    } else if (!f->no_banner) {
        char line[128];
        int len = snprintf(line, sizeof line, BANNER_FMT, s->node->ami_version);
        sim_session_send(s, line, (size_t)len);
    }
}

static void session_watchers_init(sim_session_t *s)
{
    ev_io_init(&s->rw, on_read, s->fd, EV_READ);
    ev_io_init(&s->ww, on_write, s->fd, EV_WRITE);
    ev_timer_init(&s->delay_timer, on_delay, 0., 0.);
    ev_timer_init(&s->auth_timer, on_auth_timeout, SIM_AUTH_TIMEOUT_S, 0.);
    ev_timer_init(&s->rp_timer, noop_timer, 0., 0.);
    s->rw.data = s->ww.data = s->delay_timer.data = s->auth_timer.data = s->rp_timer.data = s;
}

static void session_open(ami_sim_node_t *n, int fd, const struct sockaddr_storage *peer)
{
    sim_session_t *s = ami_calloc(1, sizeof *s);
    if (!s || ami_parser_init(&s->parser, NULL) < 0) {
        ami_free(s);
        close(fd);
        return;
    }
    ami_parser_expect_banner(&s->parser, false);
    ami_buf_init(&s->out, SIM_OUT_LIMIT);
    ami_buf_init(&s->held, SIM_OUT_LIMIT);
    s->node = n;
    s->fd = fd;
    s->id = ++n->next_session_id;
    s->mask = SIM_EV_ALL;
    s->started_wall = sim_wall_now();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_storage me;
    socklen_t mlen = sizeof me;
    if (getsockname(fd, (struct sockaddr *)&me, &mlen) == 0)
        format_addr(&me, s->local, sizeof s->local);
    format_addr(peer, s->remote, sizeof s->remote);
    session_watchers_init(s);
    s->next = n->sessions;
    if (n->sessions)
        n->sessions->prev = s;
    n->sessions = s;
    n->stats.sessions_accepted++;
    n->stats.sessions_live++;
    AMI_LOG(SIM_LOG(n), AMI_LOG_DEBUG, "sim session opened", AMI_F_STR("node", n->name),
            AMI_F_UINT("session", s->id), AMI_F_STR("remote", s->remote));
    if (n->tls) {
        ev_timer_start(n->sim->loop, &s->auth_timer); /* a stalled handshake ends like a silent login */
        sim_tls_session_start(s);
        return;
    }
    sim_session_begin(s);
}

void sim_session_begin(sim_session_t *s)
{
    ami_sim_node_t *n = s->node;
    if (n->flow) {
        ev_timer_stop(n->sim->loop, &s->auth_timer);
        s->replaying = true;
        sim_session_update_reading(s);
        sim_replay_start(s);
        return;
    }
    ev_timer_start(n->sim->loop, &s->auth_timer);
    greet(s);
    sim_session_update_reading(s);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    SIM_ACCOUNT();
    ami_sim_node_t *n = w->data;
    for (int i = 0; i < ACCEPTS_PER_CALL; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(n->lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                AMI_LOG(SIM_LOG(n), AMI_LOG_WARN, "sim accept failed", AMI_F_STR("node", n->name),
                        AMI_F_STR("error", strerror(errno)));
            return;
        }
        if (n->stats.sessions_live >= SIM_MAX_SESSIONS) {
            AMI_LOG(SIM_LOG(n), AMI_LOG_WARN, "sim refused a connection: too many sessions",
                    AMI_F_STR("node", n->name), AMI_F_UINT("limit", SIM_MAX_SESSIONS));
            close(fd);
            continue;
        }
        session_open(n, fd, &peer);
    }
}
