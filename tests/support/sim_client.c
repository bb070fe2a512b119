#include "sim_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"

int sim_client_connect(sim_client_t *c, struct ev_loop *loop, uint16_t port)
{
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        errno = e;
        return -1;
    }
    if (ami_parser_init(&c->parser, NULL) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

void sim_client_close(sim_client_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        ami_parser_deinit(&c->parser);
    }
    c->fd = -1;
}

void sim_client_pump(struct ev_loop *loop, int ms)
{
    int64_t deadline = ami_now_ms() + ms;
    do {
        if (loop)
            ev_run(loop, EVRUN_NOWAIT);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    } while (ami_now_ms() < deadline);
}

/* Wait until the socket has bytes (or EOF): 1, or 0 at the deadline. */
static int wait_readable(sim_client_t *c, int64_t deadline)
{
    for (;;) {
        if (c->loop)
            ev_run(c->loop, EVRUN_NOWAIT);
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int64_t left = deadline - ami_now_ms();
        int r = poll(&p, 1, c->loop ? 1 : (int)(left > 0 ? left : 0));
        if (r > 0)
            return 1;
        if (ami_now_ms() >= deadline)
            return 0;
    }
}

int sim_client_send(sim_client_t *c, const char *text)
{
    size_t len = strlen(text), off = 0;
    int64_t deadline = ami_now_ms() + 5000;
    while (off < len) {
        ssize_t r = send(c->fd, text + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            off += (size_t)r;
            continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        if (ami_now_ms() > deadline)
            return -1;
        sim_client_pump(c->loop, 1);
    }
    if (c->loop)
        ev_run(c->loop, EVRUN_NOWAIT);
    return 0;
}

/* Pull what the socket has into the parser: 1 got bytes, 0 none, -1 EOF. */
static int fill(sim_client_t *c)
{
    size_t got;
    char *dst = ami_parser_reserve(&c->parser, 65536, &got);
    if (!dst || !got)
        return 0;
    ssize_t r = recv(c->fd, dst, got, MSG_DONTWAIT);
    if (r > 0) {
        ami_parser_commit(&c->parser, (size_t)r);
        c->bytes += (uint64_t)r;
        return 1;
    }
    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        c->eof = true;
        return -1;
    }
    return 0;
}

int sim_client_next(sim_client_t *c, ami_msg_t *m, int timeout_ms)
{
    int64_t deadline = ami_now_ms() + timeout_ms;
    for (;;) {
        int rc = ami_parser_next(&c->parser, m, &c->err);
        if (rc != 0)
            return rc;
        if (c->eof)
            return -1;
        if (!wait_readable(c, deadline))
            return 0;
        if (fill(c) < 0)
            return -1;
    }
}

int sim_client_wait_for(sim_client_t *c, ami_msg_t *m, const char *key, const char *value,
                        int timeout_ms)
{
    int64_t deadline = ami_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - ami_now_ms();
        int rc = sim_client_next(c, m, left > 0 ? (int)left : 0);
        if (rc != 1)
            return rc;
        const char *v = ami_msg_get(m, key);
        if (v && strcmp(v, value) == 0)
            return 1;
    }
}

size_t sim_client_read_raw(sim_client_t *c, char *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = ami_now_ms() + timeout_ms;
    size_t len = 0;
    while (len < cap && !c->eof && wait_readable(c, deadline)) {
        ssize_t r = recv(c->fd, buf + len, cap - len, MSG_DONTWAIT);
        if (r > 0)
            len += (size_t)r;
        else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            c->eof = true;
    }
    c->bytes += len;
    return len;
}

bool sim_client_wait_closed(sim_client_t *c, int timeout_ms)
{
    int64_t deadline = ami_now_ms() + timeout_ms;
    char sink[65536];
    while (!c->eof && wait_readable(c, deadline)) {
        ssize_t r = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            c->eof = true;
    }
    return c->eof;
}

const char *sim_client_key(const ami_msg_t *m, size_t i)
{
    return i < m->nhdrs ? ami_msg_key(m, i, NULL) : "";
}
