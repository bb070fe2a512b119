/*
 * An action to send and how its answer comes back.
 *
 * An action is a name and headers (ami_action_req_t); the library adds the
 * ActionID, writes it and correlates the server's answer with it. How the
 * action completes is its strategy:
 *   AUTO    the default: a response that opens an EventList ("EventList:
 *           start") makes it a LIST, any other completes it (SINGLE).
 *   SINGLE  the first response completes it.
 *   LIST    the response opens a list; events carrying the ActionID are its
 *           items; "EventList: Complete" completes it.
 *   COMMAND the Command action: its response carries the output as Output
 *           headers.
 *   EVENT   a first response, then a named completion event carrying the
 *           ActionID (Originate completes on OriginateResponse).
 * Each strategy has a cap on the messages one action may gather
 * (ami_server_options_t.max_messages); past it items are dropped, counted
 * and the action is marked truncated.
 *
 * The callback (ami_pending_cb) hears RESPONSE and ITEM notes while a list
 * or an EVENT action is in progress, then exactly one DONE or FAILED (a
 * server error, a timeout, a disconnect), unless the action was cancelled
 * (then nothing at all). It is never called from inside the send call.
 * Everything in a note is BORROWED for the duration of the callback.
 */
#ifndef AMI_ACTION_H
#define AMI_ACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/err.h>
#include <ami/export.h>
#include <ami/message.h>

AMI_BEGIN_DECLS

/* One header. Lengths let values with embedded NULs be refused, not cut. */
typedef struct ami_kv {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
} ami_kv_t;

/* AMI_KV("Channel", chan): a header from a literal key and a C string. */
#define AMI_KV(k, v) ((ami_kv_t){(k), sizeof(k) - 1, (v), __builtin_strlen(v)})

static inline ami_kv_t ami_kv(const char *k, const char *v)
{
    ami_kv_t kv = {k, __builtin_strlen(k), v, __builtin_strlen(v)};
    return kv;
}

typedef enum ami_strategy {
    AMI_STRATEGY_AUTO = 0,
    AMI_STRATEGY_SINGLE,
    AMI_STRATEGY_LIST,
    AMI_STRATEGY_COMMAND,
    AMI_STRATEGY_EVENT,
    AMI_STRATEGY_COUNT
} ami_strategy_t;

/* "auto", "single", "list", "command", "event". */
AMI_API const char *ami_strategy_name(ami_strategy_t s);

typedef enum ami_pending_signal {
    AMI_PENDING_RESPONSE, /* the first response arrived; more is coming (LIST/EVENT) */
    AMI_PENDING_ITEM,     /* a list item or intermediate event, within the cap */
    AMI_PENDING_DONE,     /* complete: msg is the final message */
    AMI_PENDING_FAILED    /* failed: status/reason say why; msg may be the error response */
} ami_pending_signal_t;

typedef struct ami_pending_note {
    ami_pending_signal_t signal;
    uint64_t id;
    ami_strategy_t strategy;  /* as resolved (AUTO becomes SINGLE or LIST) */
    const ami_msg_t *msg;     /* borrowed; NULL for timeouts and disconnects */
    uint32_t items;           /* items delivered so far */
    uint32_t dropped;         /* items dropped past the cap */
    bool truncated;           /* dropped > 0, or COMMAND output over the cap */
    ami_status_t status;      /* FAILED only */
    const char *reason;       /* FAILED only: human-readable, NUL-terminated */
    const char *action;       /* the action's name */
    int64_t start_ns;         /* when it was sent (monotonic), for latency */
} ami_pending_note_t;

typedef void (*ami_pending_cb)(void *ud, const ami_pending_note_t *note);

typedef struct ami_action_req {
    const char *name;
    const ami_kv_t *hdrs;
    size_t nhdrs;
    ami_strategy_t strategy;       /* AUTO unless told; Originate -> EVENT, Command -> COMMAND */
    const char *completion_event;  /* EVENT only; Originate's is OriginateResponse */
    uint32_t timeout_ms;           /* 0 = the server's action_timeout_ms */
} ami_action_req_t;

AMI_END_DECLS

#endif
