/*
 * The AMI client: a cluster of Asterisk servers behind one C API, with no
 * Lua. This is what embedders link (libami; pkg-config ami-engine), and
 * what the engine's own Lua runtime uses.
 *
 *   ami_client_config_t cfg;  ami_client_config_default(&cfg);
 *   cfg.loop = my_loop;                       // or NULL: the client owns a loop
 *   ami_client_t *c = ami_client_new(&cfg, &err);
 *   ami_server_options_t o;   ami_server_options_default(&o);
 *   o.server_key = "pbx1"; o.host = "10.0.0.5"; o.username = "engine"; o.secret = s;
 *   ami_client_add_server(c, &o, &err);
 *   ami_client_subscribe(c, "Hangup", on_hangup, ud, &err);
 *   ami_client_start(c);
 *   ... ami_client_send(c, "pbx1", &req, on_done, ud, &h, &err);
 *
 * Each server is independent: its own socket, reader, pending actions,
 * heartbeat and backoff. One dead or slow server never delays another:
 * nothing waits, and each connection reads one chunk per loop iteration.
 *
 * Driving the loop (libev):
 *   - your own loop: pass it as cfg.loop (a `struct ev_loop *` from <ev.h>,
 *     e.g. EV_DEFAULT); the client only adds watchers to it and you run it
 *     as you always do (ev_run). Link libev yourself (-lev): the client was
 *     built against the libev of your system and shares its loop.
 *   - ami_client_poll(): one non-blocking pass (EVRUN_NOWAIT) of the loop
 *     the client uses. Call it as often as you like from your own main loop.
 *   - ami_client_tick(timeout_ms): one pass that MAY BLOCK up to timeout_ms
 *     waiting for I/O. Handy in tools and tests; not for production loops,
 *     where anything that blocks delays every server.
 *
 * Routing: ami_client_send to a named server, or with server_key NULL/""
 * to one picked by the policy among the connected servers. A server that is
 * not connected fails the action at once (no queueing without bound).
 *
 * Memory: the client copies its configuration and every server's options;
 * messages and notes handed to callbacks are borrowed for the call.
 * Threads: everything on the loop thread. Callbacks may send, cancel,
 * subscribe and unsubscribe; they must not free the client.
 */
#ifndef AMI_CLIENT_H
#define AMI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/action.h>
#include <ami/err.h>
#include <ami/export.h>
#include <ami/log.h>
#include <ami/message.h>
#include <ami/metrics.h>
#include <ami/server.h>

AMI_BEGIN_DECLS

struct ev_loop;

typedef enum ami_route_policy {
    AMI_ROUTE_FIRST_HEALTHY = 0, /* the first connected server in configuration order */
    AMI_ROUTE_ROUND_ROBIN,       /* connected servers in turn */
    AMI_ROUTE_LEAST_PENDING      /* the connected server with the fewest pending actions */
} ami_route_policy_t;

/* "first_healthy" / "round_robin" / "least_pending"; -1 if unknown. */
AMI_API int ami_route_policy_parse(const char *name);
AMI_API const char *ami_route_policy_name(ami_route_policy_t p);

typedef struct ami_client_config {
    struct ev_loop *loop;       /* NULL: the client creates and owns one */
    ami_logger_t *log;          /* NULL: silent */
    ami_metrics_t *metrics;     /* NULL: the client creates and owns a registry */
    ami_route_policy_t route;
    uint32_t max_servers;       /* default 64 */
    uint32_t max_subscriptions; /* default 4096 */
    uint32_t seed;              /* backoff jitter; 0 = random */
} ami_client_config_t;

AMI_API void ami_client_config_default(ami_client_config_t *cfg);

typedef struct ami_client ami_client_t;
typedef struct ami_subscription ami_subscription_t;

typedef void (*ami_event_fn)(void *ud, const char *server_key, const ami_msg_t *msg);
typedef void (*ami_state_fn)(void *ud, const char *server_key, ami_conn_state_t from,
                             ami_conn_state_t to, const char *reason);

AMI_API ami_client_t *ami_client_new(const ami_client_config_t *cfg, ami_err_t *err);
/* Closes every connection (pending actions fail with AMI_E_SHUTDOWN) and frees. */
AMI_API void ami_client_free(ami_client_t *c);

AMI_API int ami_client_add_server(ami_client_t *c, const ami_server_options_t *opt, ami_err_t *err);
AMI_API void ami_client_start(ami_client_t *c);
/* Log off from every server (each gets grace_ms to say Goodbye). */
AMI_API void ami_client_stop(ami_client_t *c, uint32_t grace_ms);
/* True when every server is STOPPED. */
AMI_API bool ami_client_stopped(const ami_client_t *c);

/* event NULL or "*": every event. Names match case-insensitively. Named
 * subscriptions run before "*" ones; for one name, in the order made. */
AMI_API ami_subscription_t *ami_client_subscribe(ami_client_t *c, const char *event, ami_event_fn fn,
                                                 void *ud, ami_err_t *err);
AMI_API void ami_client_unsubscribe(ami_client_t *c, ami_subscription_t *sub);
/* Watch every server's state changes (at most 16 watchers); -1 when full.
 * Watchers are called in registration order. off removes one. */
AMI_API int ami_client_on_state(ami_client_t *c, ami_state_fn fn, void *ud);
AMI_API void ami_client_off_state(ami_client_t *c, ami_state_fn fn, void *ud);

typedef struct ami_action_handle {
    uint32_t server;
    uint64_t id;
} ami_action_handle_t;

/* Send an action to server_key (NULL or "": route by policy). On success
 * *h (if h) is its handle for ami_client_cancel, and cb hears DONE or
 * FAILED exactly once (unless cancelled), never from inside this call.
 * -1 at once, and no callback, for an unknown server
 * (AMI_E_UNKNOWN_SERVER), a server not connected (AMI_E_NOT_CONNECTED),
 * over max_pending (AMI_E_LIMIT), over the write high-water mark
 * (AMI_E_BACKPRESSURE), or an invalid action (AMI_E_INVALID: a name or
 * value holding CR, LF or NUL is refused, never sent). */
AMI_API int ami_client_send(ami_client_t *c, const char *server_key, const ami_action_req_t *req,
                            ami_pending_cb cb, void *ud, ami_action_handle_t *h, ami_err_t *err);
/* Forget an action: no callback will come. False if it was not pending. */
AMI_API bool ami_client_cancel(ami_client_t *c, ami_action_handle_t h);

AMI_API void ami_client_poll(ami_client_t *c);
AMI_API void ami_client_tick(ami_client_t *c, uint32_t timeout_ms);

/* Busy polling (off by default): for window_us microseconds after input
 * from any server, the loop polls without sleeping, so that the next
 * message is handled as soon as it lands instead of after a wake-up (tens
 * of microseconds on a virtual machine). It trades CPU for latency: while
 * messages come closer together than the window, the loop's thread keeps
 * its CPU busy. 0 turns it off; at most 10000 (larger is taken as 10000).
 * May be changed at any time from the loop's thread. */
#define AMI_BUSY_POLL_MAX_US 10000u /* longer would be a CPU given away, not latency bought */
AMI_API void ami_client_set_busy_poll(ami_client_t *c, uint32_t window_us);

AMI_API struct ev_loop *ami_client_loop(const ami_client_t *c);
AMI_API ami_metrics_t *ami_client_metrics(const ami_client_t *c);
AMI_API ami_logger_t *ami_client_logger(const ami_client_t *c);

typedef struct ami_server_info {
    const char *server_key;
    ami_conn_state_t state;
    size_t pending;
    uint32_t heartbeat_failures;
    uint32_t backoff_ms;
    const char *last_error;
    const ami_conn_stats_t *stats;
} ami_server_info_t;

AMI_API size_t ami_client_server_count(const ami_client_t *c);
AMI_API int ami_client_server_index(const ami_client_t *c, const char *server_key);
/* The key of server i (valid while the client lives), or NULL. */
AMI_API const char *ami_client_server_key(const ami_client_t *c, size_t i);
/* 0 and *out filled, or -1. Its pointers stay valid while the client lives
 * (last_error's text changes with the server's next failure). */
AMI_API int ami_client_server_info(const ami_client_t *c, size_t i, ami_server_info_t *out);
AMI_API size_t ami_client_connected_count(const ami_client_t *c);

AMI_END_DECLS

#endif
