/*
 * One Asterisk server connection and its health: the seed's
 * ConnectionManager. It owns the transport, the parser and the correlation
 * registry of one server and runs its state machine:
 *
 *   DISCONNECTED -> CONNECTING -> AUTHENTICATING -> CONNECTED
 *        ^               |              |              |
 *        +---- BACKOFF <-+--------------+--------------+   (any failure)
 *   ami_conn_stop: -> STOPPED (Logoff sent first when connected)
 *
 * Login is plain (Username/Secret) or MD5 (Challenge, then Key =
 * md5hex(challenge + secret)). After login the server-side Events mask and
 * Filters from the options are (re)applied: they live in Asterisk's session
 * and are lost on every reconnect.
 *
 * Heartbeat: a Ping every heartbeat_interval_ms; a Ping that gets no answer
 * within heartbeat_timeout_ms is a failure (a Pong resets the count); at heartbeat_max_failures
 * consecutive failures the connection is force-closed with the reason
 * "Max heartbeat failures": every pending action fails with it exactly once,
 * the parser resets, the socket closes, and reconnect backoff starts.
 * Any other failure (EOF, socket error, protocol error, login refused,
 * connect timeout) takes the same force-close path with its own reason.
 * A malformed line inside an otherwise framed message (no colon, a NUL, a
 * lone CR) is not a failure: the parser drops it, the connection counts it
 * (ami_malformed_lines_total) and logs it at most once per 10 s per server;
 * the session stays up. Only lost framing or a bound exceeded closes it.
 *
 * Backoff: after the n-th consecutive failure (n = 1, 2, ...) the next
 * attempt waits a delay drawn uniformly from [c/2, c], c = min(max,
 * initial * 2^(n-1)): always jittered, growing, bounded. A failure is an
 * attempt that does not log in, or a session that ends within
 * backoff_reset_ms of its login; only a session that stays up that long
 * resets n, so a server that fails right after login is not hammered.
 *
 * Heartbeat detection time: a server that goes silent is force-closed
 * exactly max_failures * interval + timeout after the last answered Ping
 * (or the login) was sent; timeout <= interval (validated). A Ping that
 * cannot be sent (the write buffer over its high-water mark) is a failed
 * round like an unanswered one; a full registry does not stop it (the Ping
 * has a reserved slot).
 *
 * Originate is always sent with "Async: true" and completes on its
 * OriginateResponse: a synchronous Originate stalls the whole AMI session.
 *
 * TLS (opt.tls.enabled): the connection creates its server's TLS context
 * (ami_conn_new fails with the file's problem if it cannot) and the
 * transport runs the handshake before the banner; a failed handshake is a
 * force-close like a failed connect, with the reason in last_error.
 *
 * Everything runs on the loop thread; nothing waits. Callbacks (events,
 * state changes, action notes) may send and cancel actions; they must not
 * free the connection.
 */
#ifndef AMI_HEALTH_CONN_H
#define AMI_HEALTH_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include <ami/server.h>

#include "correlation/registry.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "protocol/actionid.h"
#include "protocol/message.h"
#include "protocol/parser.h"
#include "protocol/writer.h"
#include "transport/tls.h"
#include "util/err.h"

struct ev_loop;

/* ami_conn_state_t, ami_server_options_t (and _default, _validate),
 * ami_conn_stats_t: <ami/server.h>. ami_action_req_t: <ami/action.h>. */

typedef struct ami_conn ami_conn_t;

typedef struct ami_conn_callbacks {
    void (*on_event)(void *ud, ami_conn_t *c, const ami_msg_t *msg);
    void (*on_state)(void *ud, ami_conn_t *c, ami_conn_state_t from, ami_conn_state_t to,
                     const char *reason);
} ami_conn_callbacks_t;

/* Shared by the connections of one loop (the client owns one, zeroed;
 * it must outlive them): when the loop iteration in progress began
 * handling input, and the connections with input left by the read budget,
 * served in turn. Loop thread only; private but for started_ns. */
typedef struct ami_conn_pace {
    unsigned iteration; /* ev_iteration() that started_ns belongs to */
    int64_t started_ns; /* monotonic time of that iteration's first message */
    struct ev_loop *loop;
    struct ami_conn *drain_head, *drain_tail;
    struct ami_conn *served_from; /* first of those back after a turn in served_it */
    unsigned served_it;
    ev_check drain_check; /* serves the queue first thing in an iteration */
    ev_idle drain_idle;   /* keeps the loop from blocking while input is left */
    bool watchers_ready;
} ami_conn_pace_t;

typedef struct ami_conn_env {
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_actionid_gen_t *ids;  /* shared by every connection of the engine */
    uint32_t seed;            /* for backoff jitter; 0 = random */
    /* The read budget. A connection handles at most read_budget messages
     * per loop iteration (0: 512), and once the iteration has spent
     * read_budget_us on input (0: 200 µs, counted from the first message
     * any connection sharing `pace` handled in it; the clock is read every
     * 16 messages) one message per wake-up and no new read (never twice in
     * a row for one connection). Connections with input left over take
     * turns, in later iterations, before their sockets are read again: each
     * iteration serves them in order until its input time is spent
     * (ami_read_budget_hits_total counts the wake-ups that left some).
     * pace NULL: this connection alone. */
    uint32_t read_budget;
    uint32_t read_budget_us;
    ami_conn_pace_t *pace;    /* borrowed; outlives the connection */
} ami_conn_env_t;

ami_conn_t *ami_conn_new(const ami_server_options_t *opt, const ami_conn_env_t *env,
                         const ami_conn_callbacks_t *cb, void *ud, ami_err_t *err);
/* Fails pending actions with AMI_E_SHUTDOWN, closes, frees. Not from a callback. */
void ami_conn_free(ami_conn_t *c);

/* Begin connecting (DISCONNECTED or STOPPED -> CONNECTING). */
void ami_conn_start(ami_conn_t *c);

/* Stop: no more reconnects. If connected, send Logoff and close when the
 * server says Goodbye (or after grace_ms); pending actions fail with
 * AMI_E_SHUTDOWN. State becomes STOPPED. */
void ami_conn_stop(ami_conn_t *c, uint32_t grace_ms);

/* Force-close now, as the heartbeat does: fail pending with status/reason,
 * reset the parser, close the socket, enter backoff. */
void ami_conn_force_close(ami_conn_t *c, ami_status_t status, const char *reason);

/* Send an action. On success *id is its handle for ami_conn_cancel, and cb
 * will be called with DONE or FAILED exactly once (unless cancelled), never
 * from inside this call. -1 at once (no callback) when not connected
 * (AMI_E_NOT_CONNECTED), over max_pending (AMI_E_LIMIT), over the write
 * high-water mark (AMI_E_BACKPRESSURE), or for an invalid action (AMI_E_INVALID). */
int ami_conn_send(ami_conn_t *c, const ami_action_req_t *req, ami_pending_cb cb, void *ud,
                  uint64_t *id, ami_err_t *err);
bool ami_conn_cancel(ami_conn_t *c, uint64_t id);

/* An observer of one connection, for tools that account for all of its
 * traffic (the soak) or trace it. Every callback may be NULL. They run on
 * the loop thread inside the connection's own processing: they must not
 * send, cancel, close or free anything.
 *   on_message  every message parsed (banner, responses, events), before it
 *               is routed to a pending action or to the event callback;
 *   on_sent     an action was registered and written (logins, heartbeat
 *               Pings and session settings included); its id is what the
 *               notes carry;
 *   on_final    an action resolved (DONE or FAILED), just before its callback;
 *   on_cancel   its owner cancelled an action (no callback follows). */
typedef struct ami_conn_observer {
    void (*on_message)(void *ud, ami_conn_t *c, const ami_msg_t *msg);
    void (*on_sent)(void *ud, ami_conn_t *c, uint64_t id, const char *action);
    void (*on_final)(void *ud, ami_conn_t *c, const ami_pending_note_t *note);
    void (*on_cancel)(void *ud, ami_conn_t *c, uint64_t id);
    void *ud;
} ami_conn_observer_t;

/* Install a copy of obs; NULL removes it. */
void ami_conn_set_observer(ami_conn_t *c, const ami_conn_observer_t *obs);

ami_conn_state_t ami_conn_state(const ami_conn_t *c);
const char *ami_conn_key(const ami_conn_t *c);
size_t ami_conn_pending(const ami_conn_t *c);
const char *ami_conn_last_error(const ami_conn_t *c);
/* Delay of the backoff in progress (ms), 0 if none. */
uint32_t ami_conn_backoff_delay(const ami_conn_t *c);
uint32_t ami_conn_heartbeat_failures(const ami_conn_t *c);

const ami_conn_stats_t *ami_conn_stats(const ami_conn_t *c);

#endif
