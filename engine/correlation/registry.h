/*
 * The correlation registry: ActionID -> pending action, for one server
 * connection. It decides which incoming messages belong to which action and
 * when an action is complete. It knows nothing of sockets or timers: the
 * caller gives it the time (now_ms) and asks for the next deadline.
 *
 * Completion strategies (ami_strategy_t):
 *   SINGLE  the first response completes it.
 *   LIST    a response with "EventList: start" (any case; or an old server's
 *           "... will follow") opens a list; events carrying the ActionID are
 *           its items; the event with "EventList: Complete" (or an old
 *           server's "...Complete" event) completes it. A response that opens
 *           no list (Response: Error, or a plain Success) completes it at once.
 *   AUTO    LIST if the response opens a list, else SINGLE. The default.
 *   COMMAND the Command action: its single response carries the output as
 *           Output headers; the cap counts those lines.
 *   EVENT   a first response, then a named completion event carrying the
 *           ActionID (Originate with Async: true completes on
 *           OriginateResponse). An error response completes it at once.
 * Routing is strictly by ActionID for events. A response without an ActionID
 * (old servers and proxies) goes to the oldest action still waiting for its
 * first response: Asterisk answers a session's actions in order.
 *
 * Caps: each strategy has max_messages. Past it, the action's further items
 * are dropped and counted; the first drop logs a WARNING with action_id,
 * server_key, strategy and count, and every drop increments
 * ami_correlation_events_dropped_total{server_key}. The action still
 * completes when its list completes, marked truncated with the number
 * dropped; if the list never completes it fails with AMI_E_TIMEOUT and a
 * message that says events were dropped.
 *
 * Every action resolves exactly once: DONE, or FAILED (server error,
 * timeout, fail_all), unless the caller cancels it (no callback at all).
 * The slot is released before the final callback runs, so the callback may
 * add new actions or cancel others. Memory: a pool of at most max_pending
 * (+ AMI_REGISTRY_RESERVED) slots, allocated 64 at a time as actions need
 * them (an idle server holds 64, not max_pending) and kept once allocated;
 * nothing is allocated per message.
 */
#ifndef AMI_CORRELATION_REGISTRY_H
#define AMI_CORRELATION_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/action.h>

#include "obs/log.h"
#include "obs/metrics.h"
#include "protocol/actionid.h"
#include "protocol/message.h"
#include "util/err.h"

/* ami_strategy_t, the notes and ami_pending_cb: <ami/action.h>. */

typedef struct ami_registry_config {
    uint32_t max_pending;                       /* slots; default 1024 */
    uint32_t max_messages[AMI_STRATEGY_COUNT];  /* per-strategy caps; 0 = default */
    const char *server_key;                     /* for logs and metric labels */
    const ami_actionid_gen_t *ids;              /* to recognise our ActionIDs */
    ami_logger_t *log;                          /* may be NULL */
    ami_metrics_t *metrics;                     /* may be NULL */
    /* Optional observer of every final note (DONE or FAILED), called just
     * before the action's own callback: the connection counts outcomes and
     * latency here. */
    ami_pending_cb on_final;
    void *on_final_ud;
} ami_registry_config_t;

/* Default caps: SINGLE 1, LIST 10000, AUTO 10000, COMMAND 100000 lines, EVENT 64. */
void ami_registry_config_default(ami_registry_config_t *cfg);

typedef struct ami_registry ami_registry_t;

ami_registry_t *ami_registry_new(const ami_registry_config_t *cfg, ami_err_t *err);
/* Pending actions are cancelled without callbacks; call fail_all first if
 * their owners must hear about it. */
void ami_registry_free(ami_registry_t *r);

typedef struct ami_pending_spec {
    uint64_t id;                  /* from ami_actionid_next */
    const char *action;           /* action name, for logs */
    ami_strategy_t strategy;
    const char *completion_event; /* EVENT only, e.g. "OriginateResponse" */
    int64_t deadline_ms;          /* absolute, same clock as now_ms; 0 = never */
    uint32_t timeout_ms;          /* the timeout that set deadline_ms, for messages */
    int64_t start_ns;             /* caller's clock; handed back in the notes */
    ami_pending_cb cb;
    void *ud;
    bool reserved;                /* may use a reserved slot (the heartbeat's Ping) */
} ami_pending_spec_t;

/* Slots kept beyond max_pending for reserved actions: a connection whose
 * max_pending actions all wait on a dead server still sends its heartbeat,
 * so the stall is detected as fast as an idle one. */
#define AMI_REGISTRY_RESERVED 1u

/* Register before the action is written. -1: AMI_E_LIMIT when all
 * max_pending slots are in use (counted; a reserved action is refused only
 * when the reserved slots are in use too), AMI_E_INVALID for a bad spec,
 * AMI_E_NOMEM when the pool must grow and cannot (never for a reserved
 * action: its slot is always allocated). */
int ami_registry_add(ami_registry_t *r, const ami_pending_spec_t *spec, ami_err_t *err);

/* Longest action and completion event names kept (AMI_E_INVALID beyond:
 * a completion event name cut short could never match). */
#define AMI_REGISTRY_NAME_MAX 63

/* Forget an action without calling back (its waiter is gone). A late
 * answer is then ignored. Returns false if it was not pending. */
bool ami_registry_cancel(ami_registry_t *r, uint64_t id);

/* What a pending action took an incoming message as (0 when it is no
 * action's: dispatch it as usual). */
typedef enum ami_registry_took {
    AMI_TOOK_NOTHING = 0,
    AMI_TOOK_RESPONSE,    /* a response (or the answer to a cancelled action) */
    AMI_TOOK_ITEM,        /* an event of a list, or an event before the completion event */
    AMI_TOOK_COMPLETION   /* the completion event (OriginateResponse): subscribers may see it too */
} ami_registry_took_t;

/* Offer an incoming response or event. Nonzero if it belonged to a pending
 * action; only a completion event is then worth dispatching further. */
ami_registry_took_t ami_registry_on_message(ami_registry_t *r, const ami_msg_t *msg);

/* Fail every action whose deadline is <= now_ms. Returns how many. */
size_t ami_registry_expire(ami_registry_t *r, int64_t now_ms);

/* Earliest deadline, or 0 if nothing pending has one. */
int64_t ami_registry_next_deadline(const ami_registry_t *r);

/* Fail every pending action once with status and reason (disconnect). */
size_t ami_registry_fail_all(ami_registry_t *r, ami_status_t status, const char *reason);

size_t ami_registry_pending(const ami_registry_t *r);
bool ami_registry_has(const ami_registry_t *r, uint64_t id);

typedef struct ami_registry_stats {
    uint64_t added;
    uint64_t completed;
    uint64_t failed;
    uint64_t refused;        /* add() over max_pending */
    uint64_t dropped_events; /* items past a cap */
    uint64_t unmatched;      /* responses/events with our ActionID prefix but no pending action */
} ami_registry_stats_t;

const ami_registry_stats_t *ami_registry_stats(const ami_registry_t *r);

#endif
