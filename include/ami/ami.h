/*
 * ami-engine's C library (libami): everything an embedder uses, in one
 * include. Build flags come from pkg-config:
 *
 *   cc app.c $(pkg-config --cflags --libs ami-engine) -lev
 *
 * What is in it:
 *   <ami/client.h>     the client: a cluster of Asterisk servers, events,
 *                      actions, routing; driven by your libev loop
 *   <ami/server.h>     a server's options, connection states, counters
 *   <ami/action.h>     an action to send and how its answer comes back
 *   <ami/message.h>    a message from a server, read-only
 *   <ami/callstate.h>  the live call state (channels and calls per server)
 *   <ami/channel.h>    one channel record of the call state
 *   <ami/tls.h>        AMI over TLS options
 *   <ami/log.h>        the logger the client writes to
 *   <ami/metrics.h>    the Prometheus registry the client counts in
 *   <ami/err.h>        errors as values
 *   <ami/version.h>    the version compiled against and run with
 *
 * libev: the client runs on a libev loop (<ev.h>): yours, passed as
 * ami_client_config_t.loop, or its own, driven with ami_client_poll. The
 * headers only name `struct ev_loop`; include <ev.h> and link -lev
 * yourself when you drive the loop (docs/examples/embed.c shows both).
 *
 * Everything else the library holds is internal and not exported: only the
 * functions declared here are symbols of libami.
 */
#ifndef AMI_AMI_H
#define AMI_AMI_H

#include <ami/action.h>
#include <ami/callstate.h>
#include <ami/channel.h>
#include <ami/client.h>
#include <ami/err.h>
#include <ami/export.h>
#include <ami/log.h>
#include <ami/message.h>
#include <ami/metrics.h>
#include <ami/server.h>
#include <ami/tls.h>
#include <ami/version.h>

#endif
