/*
 * One Redis connection on the engine's libev loop: hiredis's async client
 * with its libev adapter (no hand-written RESP), plus what hiredis 0.14
 * leaves to its caller: connect and command timeouts, AUTH, reconnect with
 * jittered backoff, a bound on commands in flight, and counters.
 *
 * Nothing here waits. The address is an IPv4 literal or a unix socket path
 * (no resolver call ever happens on the loop: hiredis hands an IPv4 literal
 * to getaddrinfo, which parses it without a lookup; IPv6 text is refused by
 * the config for that reason). Connecting, AUTH [user] password and a PING
 * must all finish within connect_timeout_ms; until they have, commands are
 * refused at once with AMI_E_NOT_CONNECTED (never queued while down).
 *
 * Every command gets exactly one callback: its reply, or an error (timeout,
 * disconnected, a Redis error reply as AMI_E_SERVER), unless the caller
 * cancelled it first. A command that gets no reply within
 * command_timeout_ms fails with AMI_E_TIMEOUT, and the connection is closed
 * and reopened: Redis answers in order, so one late reply means every later
 * one is late too (a paused or wedged server); waiting on it would only
 * stack up more commands. Commands awaiting a reply are bounded by
 * max_pending; past it a command is refused (AMI_E_LIMIT) and counted.
 *
 * A subscriber connection (ami_redis_subscribe before start) runs
 * SUBSCRIBE on every (re)connect and hands each message's payload to its
 * callback; such a connection sends no other commands.
 *
 * Metrics (label conn = config name): ami_redis_connected,
 * ami_redis_pending, ami_redis_connects_total, ami_redis_disconnects_total,
 * ami_redis_commands_total, ami_redis_command_timeouts_total,
 * ami_redis_commands_refused_total{reason="not_connected"|"max_pending"}.
 *
 * Ownership: the connection copies its config strings; it borrows the
 * loop, logger and metrics, which must outlive it. Replies are borrowed for
 * the duration of the callback. ami_redis_free drops pending commands
 * without calling their callbacks. Thread: the loop thread only; callbacks
 * may send and cancel commands but must not free the connection.
 */
#ifndef AMI_HA_REDIS_H
#define AMI_HA_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/log.h"
#include "obs/metrics.h"
#include "util/err.h"

struct ev_loop;

typedef struct ami_redis_config {
    const char *name;            /* logs and the conn label; default "redis" */
    const char *ip;              /* IPv4 literal; or NULL and unix_path */
    uint16_t port;               /* default 6379 */
    const char *unix_path;
    const char *username;        /* ACL user; NULL: AUTH with the password only */
    const char *password;        /* NULL: no AUTH */
    uint32_t connect_timeout_ms; /* connect + AUTH + PING; default 1000 */
    uint32_t command_timeout_ms; /* default 1000 */
    uint32_t backoff_initial_ms; /* default 100 */
    uint32_t backoff_max_ms;     /* default 5000 */
    uint32_t max_pending;        /* commands awaiting a reply; default 10000 */
    uint32_t seed;               /* backoff jitter; 0 = from the clock */
} ami_redis_config_t;

void ami_redis_config_default(ami_redis_config_t *cfg);

typedef struct ami_redis ami_redis_t;
typedef struct ami_redis_req ami_redis_req_t;
/* A reply, borrowed for the callback (hiredis's redisReply, kept opaque). */
typedef struct redisReply ami_redis_reply_t;

typedef enum ami_redis_type {
    AMI_REDIS_NIL = 0,
    AMI_REDIS_INTEGER,
    AMI_REDIS_STRING,
    AMI_REDIS_STATUS,
    AMI_REDIS_ARRAY,
    AMI_REDIS_ERROR,
    AMI_REDIS_OTHER
} ami_redis_type_t;

ami_redis_type_t ami_redis_reply_type(const ami_redis_reply_t *r);
long long ami_redis_reply_integer(const ami_redis_reply_t *r);
/* String, status or error text (NULL for other types). */
const char *ami_redis_reply_str(const ami_redis_reply_t *r, size_t *len);
size_t ami_redis_reply_elements(const ami_redis_reply_t *r);
/* Element i of an array, or NULL. */
const ami_redis_reply_t *ami_redis_reply_at(const ami_redis_reply_t *r, size_t i);

/* Exactly one of reply and err is non-NULL. */
typedef void (*ami_redis_reply_fn)(void *ud, const ami_redis_reply_t *reply, const ami_err_t *err);
/* up: connected and authenticated; down: why (the connection is retried). */
typedef void (*ami_redis_state_fn)(void *ud, bool up, const char *why);
typedef void (*ami_redis_message_fn)(void *ud, const char *payload, size_t len);

ami_redis_t *ami_redis_new(struct ev_loop *loop, const ami_redis_config_t *cfg, ami_logger_t *log,
                           ami_metrics_t *metrics, ami_err_t *err);
void ami_redis_free(ami_redis_t *r);

void ami_redis_on_state(ami_redis_t *r, ami_redis_state_fn fn, void *ud);
/* Make this a subscriber of channel (copied). Before ami_redis_start. */
int ami_redis_subscribe(ami_redis_t *r, const char *channel, ami_redis_message_fn fn, void *ud,
                        ami_err_t *err);
/* Connect now, and reconnect after every failure until freed. */
void ami_redis_start(ami_redis_t *r);
bool ami_redis_up(const ami_redis_t *r);
/* Commands awaiting a reply (timed-out ones included until the connection drops them). */
size_t ami_redis_pending(const ami_redis_t *r);

/* Send argv (binary-safe). 0 with *req set (may be NULL), or -1 with err
 * and no callback. */
int ami_redis_command(ami_redis_t *r, int argc, const char *const *argv, const size_t *lens,
                      ami_redis_reply_fn fn, void *ud, ami_redis_req_t **req, ami_err_t *err);
/* The callback will not be called. req must be live (not yet answered). */
void ami_redis_cancel(ami_redis_t *r, ami_redis_req_t *req);

#endif
