/* The TCP transport on its own (no AMI): the seed's 2.1 endpoint check at
 * ami_tcp_open, the open contract (-1 and no callback, or 0 and exactly one
 * of on_open / on_close), name resolution off the loop thread and its
 * cancellation, reads, buffered writes and every way a connection ends.
 * getaddrinfo is replaced by this file's own: it counts its calls, notes
 * the thread, and can hold a lookup until the test lets it go. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "transport/tcp.h"
#include "util/alloc.h"

/* ---- the resolver this program links instead of libc's ------------------------- */

static atomic_int lookups;
static atomic_int lookups_on_main_thread;
static atomic_int slow_entered, slow_left;
static pthread_t main_thread;
static sem_t slow_release;

/* "pbx.test.invalid" is 127.0.0.1; "slow.test.invalid" too, once the test
 * posts slow_release; anything else does not exist. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    (void)service;
    (void)hints;
    lookups++;
    if (pthread_equal(pthread_self(), main_thread))
        lookups_on_main_thread++;
    bool slow = node && strcmp(node, "slow.test.invalid") == 0;
    if (slow) {
        slow_entered++;
        sem_wait(&slow_release);
    }
    int rc = EAI_NONAME;
    if (node && (slow || strcmp(node, "pbx.test.invalid") == 0)) {
        struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in));
        struct sockaddr_in *sin = (struct sockaddr_in *)(ai + 1);
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ai->ai_family = AF_INET;
        ai->ai_socktype = SOCK_STREAM;
        ai->ai_addr = (struct sockaddr *)sin;
        ai->ai_addrlen = sizeof *sin;
        *res = ai;
        rc = 0;
    }
    if (slow)
        slow_left++;
    return rc;
}

/* pthread_create, failing once when asked (the resolver cannot start its
 * thread), else the real one. */
static atomic_bool fail_next_thread;

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    if (atomic_exchange(&fail_next_thread, false))
        return EAGAIN;
    int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    *(void **)&real = dlsym(RTLD_NEXT, "pthread_create");
    return real(thread, attr, fn, arg);
}

/* ---- a transport and what its callbacks saw --------------------------------------- */

typedef struct rig {
    struct ev_loop *loop;
    ami_tcp_t *tcp;
    int opens, closes;
    ami_status_t close_why;
    char close_reason[AMI_ERR_MSG_MAX];
    char in[1 << 16];
    size_t in_len;
    bool no_room; /* read_buffer offers nothing */
    int skips;    /* read_buffer skips this many wake-ups (ami_tcp_skip_read) */
    int wakeups;  /* read_buffer calls */
} rig_t;

static void on_open(void *ud)
{
    ((rig_t *)ud)->opens++;
}

static char *read_buffer(void *ud, size_t want, size_t *got)
{
    rig_t *r = ud;
    r->wakeups++;
    if (r->skips > 0) {
        r->skips--;
        *got = 0;
        assert_true(ami_tcp_skip_read(r->tcp));
        return NULL;
    }
    size_t room = sizeof r->in - r->in_len;
    *got = r->no_room ? 0 : (want < room ? want : room);
    return r->in + r->in_len;
}

static void on_read(void *ud, size_t n)
{
    ((rig_t *)ud)->in_len += n;
}

static void on_close(void *ud, ami_status_t why, const char *reason)
{
    rig_t *r = ud;
    r->closes++;
    r->close_why = why;
    snprintf(r->close_reason, sizeof r->close_reason, "%s", reason);
}

static rig_t *rig_new(bool enforce_ip, uint32_t connect_timeout_ms, size_t write_hwm)
{
    rig_t *r = calloc(1, sizeof *r);
    r->loop = ev_loop_new(EVFLAG_AUTO);
    ami_tcp_options_t o;
    ami_tcp_options_default(&o);
    o.enforce_ip = enforce_ip;
    if (connect_timeout_ms)
        o.connect_timeout_ms = connect_timeout_ms;
    if (write_hwm)
        o.write_hwm = write_hwm;
    ami_tcp_callbacks_t cb = {.on_open = on_open, .read_buffer = read_buffer, .on_read = on_read,
                              .on_close = on_close};
    r->tcp = ami_tcp_new(r->loop, &o, &cb, r, NULL);
    assert_non_null(r->tcp);
    return r;
}

static void rig_free(rig_t *r)
{
    ami_tcp_free(r->tcp);
    ev_loop_destroy(r->loop);
    free(r);
}

static bool opened(void *ud)
{
    return ((rig_t *)ud)->opens > 0;
}

static bool closed(void *ud)
{
    return ((rig_t *)ud)->closes > 0;
}

/* A listening socket on 127.0.0.1 with a kernel-chosen port. */
static int listener(uint16_t *port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, backlog), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

static uint16_t closed_port(void)
{
    uint16_t port;
    close(listener(&port, 1));
    return port;
}

/* Open to our listener and accept: the peer's socket. */
static int connect_pair(rig_t *r, int lfd, uint16_t port)
{
    assert_int_equal(ami_tcp_open(r->tcp, "127.0.0.1", port, NULL), 0);
    assert_true(harness_run_until(r->loop, opened, r, 3000));
    int peer = accept(lfd, NULL, NULL);
    assert_true(peer >= 0);
    return peer;
}

/* ---- the endpoint check (seed 2.1) ---------------------------------------------------- */

static void hostname_is_refused_at_open_without_a_lookup_or_a_callback(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    lookups = 0;
    ami_err_t err;
    assert_int_equal(ami_tcp_open(r->tcp, "pbx.test.invalid", 5038, &err), -1);
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_non_null(strstr(err.msg, "\"pbx.test.invalid\" is not an IP address"));
    assert_non_null(strstr(err.msg, "enforce_ip_endpoints"));
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_IDLE);
    harness_run_for(r->loop, 50);
    assert_int_equal(r->opens + r->closes, 0);
    assert_int_equal(lookups, 0);
    assert_int_equal(ami_tcp_stats(r->tcp)->resolver_calls, 0);
    assert_int_equal(ami_tcp_stats(r->tcp)->connects, 0);
    rig_free(r);
}

static void ip_literals_are_recognised_without_a_resolver(void **state)
{
    (void)state;
    lookups = 0;
    assert_true(ami_tcp_is_ip_literal("10.0.0.5"));
    assert_true(ami_tcp_is_ip_literal("::1"));
    assert_true(ami_tcp_is_ip_literal("[fd00::5]"));
    assert_false(ami_tcp_is_ip_literal("pbx1"));
    assert_false(ami_tcp_is_ip_literal("10.0.0.256"));
    assert_false(ami_tcp_is_ip_literal("1.2.3.4.5"));
    assert_false(ami_tcp_is_ip_literal(""));
    assert_false(ami_tcp_is_ip_literal(NULL));
    assert_int_equal(lookups, 0);
}

/* ---- the open contract ------------------------------------------------------------------ */

static void bad_port_and_busy_slot_are_refused_at_once(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    ami_err_t err;
    assert_int_equal(ami_tcp_open(r->tcp, "127.0.0.1", 0, &err), -1);
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_non_null(strstr(err.msg, "port 0"));
    uint16_t port;
    int lfd = listener(&port, 4);
    assert_int_equal(ami_tcp_open(r->tcp, "127.0.0.1", port, &err), 0);
    assert_int_equal(ami_tcp_open(r->tcp, "127.0.0.1", port, &err), -1);
    assert_non_null(strstr(err.msg, "busy"));
    assert_true(harness_run_until(r->loop, opened, r, 3000));
    assert_int_equal(r->opens, 1);
    assert_int_equal(r->closes, 0);
    rig_free(r);
    close(lfd);
}

/* TCP to a multicast address fails inside connect() itself. */
static void connect_failing_on_the_spot_returns_minus_one_and_calls_nothing(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    ami_err_t err;
    assert_int_equal(ami_tcp_open(r->tcp, "224.0.0.1", 5038, &err), -1);
    assert_int_equal(err.code, AMI_E_IO);
    assert_non_null(strstr(err.msg, "connect to 224.0.0.1:5038 failed"));
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_IDLE);
    harness_run_for(r->loop, 30);
    assert_int_equal(r->opens + r->closes, 0);
    /* the slot is usable again */
    uint16_t port;
    int lfd = listener(&port, 4);
    close(connect_pair(r, lfd, port));
    rig_free(r);
    close(lfd);
}

static void socket_failure_returns_minus_one_and_calls_nothing(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    int next = dup(0); /* the lowest free descriptor: allow none beyond it */
    close(next);
    struct rlimit tight = {.rlim_cur = (rlim_t)next, .rlim_max = old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
    ami_err_t err;
    int rc = ami_tcp_open(r->tcp, "127.0.0.1", 5038, &err);
    setrlimit(RLIMIT_NOFILE, &old);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, AMI_E_IO);
    assert_non_null(strstr(err.msg, "socket() for 127.0.0.1:5038 failed"));
    harness_run_for(r->loop, 30);
    assert_int_equal(r->opens + r->closes, 0);
    rig_free(r);
}

static void refused_connection_arrives_through_on_close(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    uint16_t port = closed_port();
    assert_int_equal(ami_tcp_open(r->tcp, "127.0.0.1", port, NULL), 0);
    assert_true(harness_run_until(r->loop, closed, r, 3000));
    assert_int_equal(r->closes, 1);
    assert_int_equal(r->opens, 0);
    assert_int_equal(r->close_why, AMI_E_IO);
    assert_non_null(strstr(r->close_reason, "refused"));
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_IDLE);
    rig_free(r);
}

static void connect_timeout_arrives_through_on_close(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = listener(&port, 0);
    int fillers[4];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons(port)};
    for (int i = 0; i < 4; i++) { /* fill the accept queue: the next SYN is dropped */
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    }
    rig_t *r = rig_new(true, 100, 0);
    assert_int_equal(ami_tcp_open(r->tcp, "127.0.0.1", port, NULL), 0);
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_CONNECTING);
    assert_true(harness_run_until(r->loop, closed, r, 3000));
    assert_int_equal(r->close_why, AMI_E_TIMEOUT);
    assert_non_null(strstr(r->close_reason, "timed out after 100 ms"));
    rig_free(r);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

/* ---- an open connection ---------------------------------------------------------------- */

static bool got_bytes(void *ud)
{
    return ((rig_t *)ud)->in_len >= 11;
}

static void reads_and_buffered_writes_go_both_ways(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    uint16_t port;
    int lfd = listener(&port, 4);
    int peer = connect_pair(r, lfd, port);
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_OPEN);
    char want[32];
    snprintf(want, sizeof want, "127.0.0.1:%u", port);
    assert_string_equal(ami_tcp_peer(r->tcp), want);
    assert_int_equal(ami_buf_append_str(ami_tcp_wbuf(r->tcp), "Action: Ping\r\n\r\n"), 0);
    ami_tcp_schedule_flush(r->tcp);
    harness_run_for(r->loop, 20);
    char buf[64];
    ssize_t n = recv(peer, buf, sizeof buf, MSG_DONTWAIT);
    assert_int_equal(n, 16);
    assert_memory_equal(buf, "Action: Ping\r\n\r\n", 16);
    assert_int_equal(send(peer, "Response: x", 11, 0), 11);
    assert_true(harness_run_until(r->loop, got_bytes, r, 3000));
    assert_memory_equal(r->in, "Response: x", 11);
    const ami_tcp_stats_t *st = ami_tcp_stats(r->tcp);
    assert_int_equal(st->bytes_out, 16);
    assert_int_equal(st->bytes_in, 11);
    assert_true(st->reads >= 1 && st->writes >= 1);
    /* the peer goes away: that is a close the transport reports */
    close(peer);
    assert_true(harness_run_until(r->loop, closed, r, 3000));
    assert_int_equal(r->close_why, AMI_E_DISCONNECTED);
    assert_non_null(strstr(r->close_reason, "closed the connection"));
    ami_tcp_close(r->tcp); /* idempotent */
    ami_tcp_close(r->tcp);
    rig_free(r);
    close(lfd);
}

typedef struct drained {
    int fd;
    size_t got;
    size_t want;
} drained_t;

static bool peer_drained(void *ud)
{
    drained_t *d = ud;
    char buf[65536];
    ssize_t n;
    while ((n = recv(d->fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        d->got += (size_t)n;
    return d->got >= d->want;
}

/* More than the socket takes at once: the rest waits for writability. */
static void a_large_write_is_flushed_in_pieces_as_the_peer_reads(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 64u << 20);
    uint16_t port;
    int lfd = listener(&port, 4);
    int peer = connect_pair(r, lfd, port);
    size_t total = 32u << 20;
    char *big = malloc(total);
    memset(big, 'a', total);
    assert_int_equal(ami_buf_append(ami_tcp_wbuf(r->tcp), big, total), 0);
    free(big);
    ami_tcp_schedule_flush(r->tcp);
    ami_tcp_schedule_flush(r->tcp); /* twice is once */
    drained_t d = {peer, 0, total};
    assert_true(harness_run_until(r->loop, peer_drained, &d, 20000));
    assert_int_equal(d.got, total);
    assert_true(ami_tcp_stats(r->tcp)->writes > 1);
    assert_int_equal(r->closes, 0);
    close(peer);
    rig_free(r);
    close(lfd);
}

static void no_room_to_read_closes_with_a_limit_error(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    uint16_t port;
    int lfd = listener(&port, 4);
    int peer = connect_pair(r, lfd, port);
    r->no_room = true;
    assert_int_equal(send(peer, "x", 1, 0), 1);
    assert_true(harness_run_until(r->loop, closed, r, 3000));
    assert_int_equal(r->close_why, AMI_E_LIMIT);
    assert_non_null(strstr(r->close_reason, "no room to read"));
    close(peer);
    rig_free(r);
    close(lfd);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ++*(int *)w->data;
}

/* A pause that lasts: the kernel stops reporting the socket after a few
 * ignored wake-ups (rio is stopped, not polled for nothing in every
 * iteration); resuming reads at once, and readiness works again after. */
static void a_long_pause_silences_the_socket_and_resuming_reads_at_once(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    uint16_t port;
    int lfd = listener(&port, 4);
    int peer = connect_pair(r, lfd, port);
    int ticks = 0;
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.001, 0.001);
    tick.data = &ticks;
    ev_timer_start(r->loop, &tick);
    ami_tcp_pause_reading(r->tcp);
    assert_int_equal(send(peer, "Response: x", 11, 0), 11);
    harness_run_for(r->loop, 60);
    assert_true(ticks >= 10); /* the loop went round many times... */
    const ami_tcp_stats_t *st = ami_tcp_stats(r->tcp);
    assert_true(st->paused_wakeups >= 1);
    assert_true(st->paused_wakeups <= 3); /* ...and stopped hearing of the socket */
    assert_int_equal(r->in_len, 0);
    ami_tcp_resume_reading(r->tcp);
    assert_int_equal(r->in_len, 11); /* read inside the call */
    assert_int_equal(send(peer, "Response: y", 11, 0), 11);
    r->in_len = 0;
    assert_true(harness_run_until(r->loop, got_bytes, r, 3000));
    assert_memory_equal(r->in, "Response: y", 11);
    /* a short pause leaves the watcher on: one ignored wake-up, then a read */
    uint64_t before = st->paused_wakeups;
    ami_tcp_pause_reading(r->tcp);
    assert_int_equal(send(peer, "Response: z", 11, 0), 11);
    harness_run_for(r->loop, 5);
    assert_true(st->paused_wakeups > before);
    r->in_len = 0;
    ami_tcp_resume_reading(r->tcp);
    assert_int_equal(r->in_len, 11);
    ev_timer_stop(r->loop, &tick);
    assert_int_equal(r->closes, 0);
    close(peer);
    rig_free(r);
    close(lfd);
}

/* A skipped wake-up reads nothing and leaves the socket watched: the
 * next iteration's readiness reads the bytes; nothing closes. */
static void a_skipped_read_comes_back_with_the_next_readiness(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    assert_false(ami_tcp_skip_read(r->tcp)); /* not open */
    uint16_t port;
    int lfd = listener(&port, 4);
    int peer = connect_pair(r, lfd, port);
    r->skips = 3;
    assert_int_equal(send(peer, "Response: x", 11, 0), 11);
    assert_true(harness_run_until(r->loop, got_bytes, r, 3000));
    assert_memory_equal(r->in, "Response: x", 11);
    assert_int_equal(r->wakeups, 4);
    assert_int_equal(ami_tcp_stats(r->tcp)->reads_skipped, 3);
    assert_int_equal(r->closes, 0);
    close(peer);
    rig_free(r);
    close(lfd);
}

static void a_reset_peer_fails_the_next_write(void **state)
{
    (void)state;
    rig_t *r = rig_new(true, 0, 0);
    uint16_t port;
    int lfd = listener(&port, 4);
    int peer = connect_pair(r, lfd, port);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(peer); /* RST */
    usleep(20000);
    assert_int_equal(ami_buf_append_str(ami_tcp_wbuf(r->tcp), "Action: Ping\r\n\r\n"), 0);
    ami_tcp_schedule_flush(r->tcp);
    assert_true(harness_run_until(r->loop, closed, r, 3000));
    assert_int_equal(r->close_why, AMI_E_DISCONNECTED);
    assert_int_equal(r->closes, 1);
    rig_free(r);
    close(lfd);
}

/* ---- names, off the loop (enforce_ip off) ------------------------------------------------ */

static void hostname_is_resolved_on_another_thread_then_connected(void **state)
{
    (void)state;
    rig_t *r = rig_new(false, 0, 0);
    uint16_t port;
    int lfd = listener(&port, 4);
    lookups = lookups_on_main_thread = 0;
    assert_int_equal(ami_tcp_open(r->tcp, "pbx.test.invalid", port, NULL), 0);
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_RESOLVING);
    assert_true(harness_run_until(r->loop, opened, r, 3000));
    assert_int_equal(lookups, 1);
    assert_int_equal(lookups_on_main_thread, 0);
    assert_int_equal(ami_tcp_stats(r->tcp)->resolver_calls, 1);
    rig_free(r);
    close(lfd);
}

static void unknown_hostname_arrives_through_on_close(void **state)
{
    (void)state;
    rig_t *r = rig_new(false, 0, 0);
    assert_int_equal(ami_tcp_open(r->tcp, "nowhere.test.invalid", 5038, NULL), 0);
    assert_true(harness_run_until(r->loop, closed, r, 3000));
    assert_int_equal(r->close_why, AMI_E_IO);
    assert_non_null(strstr(r->close_reason, "cannot resolve host \"nowhere.test.invalid\""));
    assert_int_equal(r->opens, 0);
    rig_free(r);
}

static void no_resolver_thread_is_refused_at_once(void **state)
{
    (void)state;
    rig_t *r = rig_new(false, 0, 0);
    int64_t before = ami_alloc_live_bytes();
    fail_next_thread = true;
    ami_err_t err;
    assert_int_equal(ami_tcp_open(r->tcp, "pbx.test.invalid", 5038, &err), -1);
    assert_int_equal(err.code, AMI_E_IO);
    assert_non_null(strstr(err.msg, "cannot start a resolver thread"));
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_IDLE);
    assert_int_equal(ami_alloc_live_bytes(), before);
    harness_run_for(r->loop, 30);
    assert_int_equal(r->opens + r->closes, 0);
    rig_free(r);
}

static bool lookup_entered(void *ud)
{
    (void)ud;
    return slow_entered > 0;
}

typedef struct settle {
    int64_t live;
} settle_t;

static bool lookup_done_and_freed(void *ud)
{
    settle_t *s = ud;
    return slow_left > 0 && ami_alloc_live_bytes() == s->live;
}

static void closing_during_a_lookup_cancels_it(void **state)
{
    (void)state;
    rig_t *r = rig_new(false, 0, 0);
    slow_entered = slow_left = 0;
    settle_t s = {ami_alloc_live_bytes()};
    assert_int_equal(ami_tcp_open(r->tcp, "slow.test.invalid", closed_port(), NULL), 0);
    assert_true(harness_run_until(r->loop, lookup_entered, NULL, 3000));
    ami_tcp_close(r->tcp);
    assert_int_equal(ami_tcp_state(r->tcp), AMI_TCP_IDLE);
    sem_post(&slow_release); /* the lookup finishes after all */
    assert_true(harness_run_until(r->loop, lookup_done_and_freed, &s, 3000));
    harness_run_for(r->loop, 50);
    assert_int_equal(r->opens + r->closes, 0); /* nothing reached the transport */
    rig_free(r);
}

static void freeing_during_a_lookup_is_safe(void **state)
{
    (void)state;
    rig_t *r = rig_new(false, 0, 0);
    slow_entered = slow_left = 0;
    int64_t before_open = ami_alloc_live_bytes();
    assert_int_equal(ami_tcp_open(r->tcp, "slow.test.invalid", 5038, NULL), 0);
    int64_t lookup_bytes = ami_alloc_live_bytes() - before_open;
    assert_true(harness_run_until(r->loop, lookup_entered, NULL, 3000));
    struct ev_loop *loop = r->loop;
    ami_tcp_free(r->tcp);
    r->tcp = NULL;
    /* the lookup's request outlives the transport until its thread is done with it */
    settle_t s = {ami_alloc_live_bytes() - lookup_bytes};
    sem_post(&slow_release);
    assert_true(harness_run_until(loop, lookup_done_and_freed, &s, 3000));
    ev_loop_destroy(loop);
    free(r);
}

int main(void)
{
    main_thread = pthread_self();
    sem_init(&slow_release, 0, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hostname_is_refused_at_open_without_a_lookup_or_a_callback),
        cmocka_unit_test(ip_literals_are_recognised_without_a_resolver),
        cmocka_unit_test(bad_port_and_busy_slot_are_refused_at_once),
        cmocka_unit_test(connect_failing_on_the_spot_returns_minus_one_and_calls_nothing),
        cmocka_unit_test(socket_failure_returns_minus_one_and_calls_nothing),
        cmocka_unit_test(refused_connection_arrives_through_on_close),
        cmocka_unit_test(connect_timeout_arrives_through_on_close),
        cmocka_unit_test(reads_and_buffered_writes_go_both_ways),
        cmocka_unit_test(a_large_write_is_flushed_in_pieces_as_the_peer_reads),
        cmocka_unit_test(no_room_to_read_closes_with_a_limit_error),
        cmocka_unit_test(a_long_pause_silences_the_socket_and_resuming_reads_at_once),
        cmocka_unit_test(a_skipped_read_comes_back_with_the_next_readiness),
        cmocka_unit_test(a_reset_peer_fails_the_next_write),
        cmocka_unit_test(hostname_is_resolved_on_another_thread_then_connected),
        cmocka_unit_test(unknown_hostname_arrives_through_on_close),
        cmocka_unit_test(no_resolver_thread_is_refused_at_once),
        cmocka_unit_test(closing_during_a_lookup_cancels_it),
        cmocka_unit_test(freeing_during_a_lookup_is_safe),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sem_destroy(&slow_release);
    return rc;
}
