/*
 * systemd notifications (see sdnotify.h): one non-blocking datagram per
 * state line, and the watchdog pings from a loop timer.
 */
#include "obs/sdnotify.h"

#include <errno.h>
#include <ev.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/alloc.h"

struct ami_sdnotify {
    struct ev_loop *loop;
    ami_logger_t *log;
    int fd;
    struct sockaddr_un addr;
    socklen_t addr_len;
    uint64_t watchdog_usec;        /* systemd's WatchdogSec, 0 = none */
    ev_timer ping;
    ami_counter_t *m_sent;
    ami_counter_t *m_failed;
};

/* NOTIFY_SOCKET: "/run/systemd/notify" or "@abstract". */
static bool parse_address(ami_sdnotify_t *n, const char *name)
{
    size_t len = strlen(name);
    if (len < 2 || len >= sizeof n->addr.sun_path || (name[0] != '/' && name[0] != '@'))
        return false;
    memset(&n->addr, 0, sizeof n->addr);
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, name, len);
    if (name[0] == '@')
        n->addr.sun_path[0] = '\0';
    n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/'));
    return true;
}

/* WATCHDOG_USEC applies to us only if WATCHDOG_PID is absent or ours. */
static uint64_t watchdog_from_env(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    if (!usec || (pid && strtol(pid, NULL, 10) != (long)getpid()))
        return 0;
    char *end;
    unsigned long long v = strtoull(usec, &end, 10);
    return *usec && !*end ? (uint64_t)v : 0;
}

void ami_sdnotify_send(ami_sdnotify_t *n, const char *state)
{
    if (!n)
        return;
    ssize_t rc;
    do {
        rc = sendto(n->fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&n->addr,
                    n->addr_len);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        ami_counter_inc(n->m_failed);
        AMI_LOG(n->log, AMI_LOG_DEBUG, "systemd notification not sent", AMI_F_STR("state", state),
                AMI_F_STR("error", strerror(errno)));
        return;
    }
    ami_counter_inc(n->m_sent);
}

static void on_ping(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    ami_sdnotify_send(t->data, "WATCHDOG=1");
}

ami_sdnotify_t *ami_sdnotify_new(struct ev_loop *loop, ami_metrics_t *m, ami_logger_t *log)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return NULL;
    ami_sdnotify_t *n = ami_calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->loop = loop;
    n->log = log;
    n->fd = -1;
    if (!parse_address(n, name) || (n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
        AMI_LOG(log, AMI_LOG_WARN, "NOTIFY_SOCKET is set but unusable; no systemd notifications",
                AMI_F_STR("notify_socket", name), AMI_F_STR("error", n->fd < 0 ? strerror(errno) : "bad address"));
        ami_free(n);
        return NULL;
    }
    n->watchdog_usec = watchdog_from_env();
    n->m_sent = ami_metrics_counter(m, "ami_systemd_notifications_total", "Notifications sent to systemd",
                                    NULL, NULL);
    n->m_failed = ami_metrics_counter(m, "ami_systemd_notifications_failed_total",
                                      "Notifications systemd's socket refused", NULL, NULL);
    ev_init(&n->ping, on_ping);
    n->ping.data = n;
    return n;
}

void ami_sdnotify_ready(ami_sdnotify_t *n, const char *status)
{
    if (!n)
        return;
    char line[300];
    snprintf(line, sizeof line, "READY=1\nSTATUS=%s", status ? status : "running");
    ami_sdnotify_send(n, line);
    if (!n->watchdog_usec || ev_is_active(&n->ping))
        return;
    double every = (double)n->watchdog_usec / 2e6;
    ev_timer_set(&n->ping, every, every);
    ev_timer_start(n->loop, &n->ping);
    ev_unref(n->loop); /* the pings alone must not keep the engine running */
    AMI_LOG(n->log, AMI_LOG_INFO, "systemd watchdog pings on", AMI_F_DBL("every_s", every),
            AMI_F_DBL("watchdog_s", (double)n->watchdog_usec / 1e6));
}

uint64_t ami_sdnotify_watchdog_usec(const ami_sdnotify_t *n)
{
    return n ? n->watchdog_usec / 2 : 0;
}

void ami_sdnotify_free(ami_sdnotify_t *n)
{
    if (!n)
        return;
    if (ev_is_active(&n->ping)) {
        ev_ref(n->loop);
        ev_timer_stop(n->loop, &n->ping);
    }
    if (n->fd >= 0)
        close(n->fd);
    ami_free(n);
}
