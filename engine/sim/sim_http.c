/*
 * The simulated web service's thread and I/O: the listener, reading a
 * request (head, then Content-Length bytes of body, both bounded), writing
 * the answer without blocking, and closing politely (shut the write side,
 * wait for the client's close) so no answer is lost to a reset.
 * Routes and records are in sim_http_routes.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sim/sim_http_internal.h"
#include "util/alloc.h"

#define READ_CHUNK (64u << 10)
#define LINGER_S 5.0

static void conn_io(struct ev_loop *loop, ev_io *w, int revents);

void sim_http_close(sim_http_conn_t *c)
{
    ami_sim_http_t *s = c->srv;
    ev_io_stop(s->loop, &c->io);
    ev_timer_stop(s->loop, &c->timer);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ami_buf_deinit(&c->in);
    ami_buf_deinit(&c->out);
    pthread_mutex_lock(&s->lock);
    s->stats.open--;
    pthread_mutex_unlock(&s->lock);
    ami_free(c);
}

static void watch(sim_http_conn_t *c, int events)
{
    ev_io_stop(c->srv->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->srv->loop, &c->io);
}

static void on_linger_over(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    sim_http_close(t->data);
}

static void finish_answer(sim_http_conn_t *c)
{
    if (c->close_now) {
        sim_http_close(c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->phase = PH_LINGER;
    watch(c, EV_READ);
    ev_timer_stop(c->srv->loop, &c->timer);
    ev_init(&c->timer, on_linger_over);
    ev_timer_set(&c->timer, LINGER_S, 0.);
    ev_timer_start(c->srv->loop, &c->timer);
}

/* Send what the socket takes; the stream part is generated on the fly. */
static void write_some(sim_http_conn_t *c)
{
    const char *filler = c->srv->filler;
    for (;;) {
        const char *p;
        size_t n;
        if (c->out_pos < c->out.len) {
            p = c->out.data + c->out_pos;
            n = c->out.len - c->out_pos;
        } else if (c->stream_left) {
            p = filler;
            n = c->stream_left < SIM_HTTP_FILLER ? (size_t)c->stream_left : SIM_HTTP_FILLER;
        } else {
            finish_answer(c);
            return;
        }
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (w <= 0) {
            sim_http_close(c);
            return;
        }
        if (c->out_pos < c->out.len)
            c->out_pos += (size_t)w;
        else
            c->stream_left -= (uint64_t)w;
    }
}

void sim_http_send(sim_http_conn_t *c)
{
    c->phase = PH_WRITE;
    watch(c, EV_WRITE);
    write_some(c);
}

/* Is the request complete? Finds the head's end and the body's length. */
static bool request_complete(sim_http_conn_t *c, bool *bad)
{
    if (!c->head_len) {
        char *end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
        if (!end) {
            *bad = c->in.len >= SIM_HTTP_HEAD_MAX;
            return false;
        }
        c->head_len = (size_t)(end - c->in.data) + 4;
        for (char *p = c->in.data; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
            p += *p == '\n';
            if (strncasecmp(p, "Content-Length:", 15) == 0)
                c->body_len = strtoul(p + 15, NULL, 10);
        }
        if (c->body_len > SIM_HTTP_BODY_MAX) {
            *bad = true;
            return false;
        }
    }
    return c->in.len >= c->head_len + c->body_len;
}

static void read_request(sim_http_conn_t *c)
{
    for (;;) {
        if (ami_buf_reserve(&c->in, READ_CHUNK) < 0) {
            sim_http_close(c);
            return;
        }
        ssize_t r = recv(c->fd, c->in.data + c->in.len, READ_CHUNK, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r <= 0) {
            sim_http_close(c);
            return;
        }
        c->in.len += (size_t)r;
        bool bad = false;
        if (request_complete(c, &bad)) {
            pthread_mutex_lock(&c->srv->lock);
            c->srv->stats.requests++;
            pthread_mutex_unlock(&c->srv->lock);
            sim_http_route(c);
            return;
        }
        if (bad) {
            sim_http_close(c);
            return;
        }
    }
}

/* After the answer, or while holding it back: only the client's close matters. */
static void drain_input(sim_http_conn_t *c)
{
    char sink[4096];
    for (;;) {
        ssize_t r = recv(c->fd, sink, sizeof sink, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r <= 0) {
            sim_http_close(c);
            return;
        }
    }
}

static void conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    sim_http_conn_t *c = w->data;
    if (c->phase == PH_READ)
        read_request(c);
    else if (c->phase == PH_WRITE && (revents & EV_WRITE))
        write_some(c);
    else
        drain_input(c);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    ami_sim_http_t *s = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        pthread_mutex_lock(&s->lock);
        bool full = s->stats.open >= SIM_HTTP_MAX_CONNS;
        pthread_mutex_unlock(&s->lock);
        sim_http_conn_t *c = full ? NULL : ami_calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        ami_buf_init(&c->in, SIM_HTTP_HEAD_MAX + SIM_HTTP_BODY_MAX + READ_CHUNK);
        ami_buf_init(&c->out, 0);
        ev_io_init(&c->io, conn_io, fd, EV_READ);
        c->io.data = c;
        ev_init(&c->timer, NULL);
        c->timer.data = c;
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        ev_io_start(loop, &c->io);
        pthread_mutex_lock(&s->lock);
        s->stats.accepted++;
        s->stats.open++;
        pthread_mutex_unlock(&s->lock);
    }
}

/* ---- the server ------------------------------------------------------------------- */

static int bind_loopback(bool listening, uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || (listening && listen(fd, 4096) < 0) ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *server_thread(void *arg)
{
    ami_sim_http_t *s = arg;
    ev_run(s->loop, 0);
    while (s->conns)
        sim_http_close(s->conns);
    return NULL;
}

ami_sim_http_t *ami_sim_http_start(ami_err_t *err)
{
    ami_sim_http_t *s = ami_calloc(1, sizeof *s);
    if (!s) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->listen_fd = bind_loopback(true, &s->port);
    s->refused_fd = bind_loopback(false, &s->refused_port);
    s->loop = ev_loop_new(EVFLAG_AUTO);
    s->filler = ami_malloc(SIM_HTTP_FILLER);
    if (s->filler)
        memset(s->filler, 'x', SIM_HTTP_FILLER);
    if (s->listen_fd < 0 || s->refused_fd < 0 || !s->loop || !s->filler) {
        ami_err_set(err, AMI_E_IO, "sim http: cannot listen on 127.0.0.1: %s", strerror(errno));
        ami_sim_http_stop(s);
        return NULL;
    }
    ev_io_init(&s->accept_io, on_accept, s->listen_fd, EV_READ);
    s->accept_io.data = s;
    ev_io_start(s->loop, &s->accept_io);
    ev_async_init(&s->stop, on_stop);
    ev_async_start(s->loop, &s->stop);
    if (pthread_create(&s->thread, NULL, server_thread, s) != 0) {
        ami_err_set(err, AMI_E_IO, "sim http: cannot start its thread");
        ami_sim_http_stop(s);
        return NULL;
    }
    s->running = true;
    return s;
}

void ami_sim_http_stop(ami_sim_http_t *s)
{
    if (!s)
        return;
    if (s->running) {
        ev_async_send(s->loop, &s->stop);
        pthread_join(s->thread, NULL);
    }
    if (s->loop)
        ev_loop_destroy(s->loop);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->refused_fd >= 0)
        close(s->refused_fd);
    ami_sim_http_forget(s);
    ami_free(s->filler);
    pthread_mutex_destroy(&s->lock);
    ami_free(s);
}

uint16_t ami_sim_http_port(const ami_sim_http_t *s)
{
    return s->port;
}

uint16_t ami_sim_http_refused_port(const ami_sim_http_t *s)
{
    return s->refused_port;
}

void ami_sim_http_fail_next(ami_sim_http_t *s, uint32_t n, int status)
{
    pthread_mutex_lock(&s->lock);
    s->fail_left = n;
    s->fail_status = status;
    pthread_mutex_unlock(&s->lock);
}

ami_sim_http_stats_t ami_sim_http_stats(ami_sim_http_t *s)
{
    pthread_mutex_lock(&s->lock);
    ami_sim_http_stats_t st = s->stats;
    pthread_mutex_unlock(&s->lock);
    return st;
}
