/*
 * systemd's notification protocol, for Type=notify services: READY=1 when
 * the engine serves, STATUS=..., RELOADING=1 / READY=1 around a reload,
 * STOPPING=1 when it drains, and WATCHDOG=1 pings for WatchdogSec=.
 *
 * The pings are sent from a timer on the engine's own loop, at half the
 * interval systemd asks for (WATCHDOG_USEC): when the loop stalls (a long
 * call nothing can interrupt), the pings stop and systemd restarts the
 * service. That is the last line of defence behind the script watchdog and
 * the pattern budgets.
 *
 * The protocol is a datagram to the AF_UNIX socket named by NOTIFY_SOCKET
 * (a path, or an abstract name starting with '@'); nothing is sent when the
 * variable is absent, so the engine runs the same outside systemd. Sending
 * never blocks (MSG_DONTWAIT); a refused datagram is counted, not retried.
 * Loop thread only.
 */
#ifndef AMI_OBS_SDNOTIFY_H
#define AMI_OBS_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "obs/log.h"
#include "obs/metrics.h"

struct ev_loop;

typedef struct ami_sdnotify ami_sdnotify_t;

/* From the environment (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID). NULL
 * when not started by systemd with notification; never fails otherwise
 * (a bad NOTIFY_SOCKET is logged and ignored). */
ami_sdnotify_t *ami_sdnotify_new(struct ev_loop *loop, ami_metrics_t *m, ami_logger_t *log);
void ami_sdnotify_free(ami_sdnotify_t *n);

/* Send one state line ("READY=1", "STATUS=3 of 3 servers connected"). */
void ami_sdnotify_send(ami_sdnotify_t *n, const char *state);
/* READY=1, and start the watchdog pings if systemd asked for them. */
void ami_sdnotify_ready(ami_sdnotify_t *n, const char *status);
/* The ping interval (half of WatchdogSec), 0 when systemd set none. */
uint64_t ami_sdnotify_watchdog_usec(const ami_sdnotify_t *n);

#endif
