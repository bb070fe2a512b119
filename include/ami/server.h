/*
 * One Asterisk server as the client sees it: its options, its connection
 * states and its counters.
 *
 * A server's connection is a state machine the library runs by itself:
 *
 *   DISCONNECTED -> CONNECTING -> AUTHENTICATING -> CONNECTED
 *        ^               |              |              |
 *        +---- BACKOFF <-+--------------+--------------+   (any failure)
 *   ami_client_stop: -> STOPPED (Logoff sent first when connected)
 *
 * Login is plain (Username/Secret) or MD5 (Challenge, then Key). After
 * every login the Events mask and Filters below are applied again (they
 * live in Asterisk's session). A Ping every heartbeat_interval_ms; at
 * heartbeat_max_failures unanswered rounds in a row the connection is
 * force-closed ("Max heartbeat failures"): every pending action fails once,
 * and reconnect backoff starts (jittered, doubling from backoff_initial_ms
 * up to backoff_max_ms, reset by a session that stays up backoff_reset_ms).
 *
 * Hosts are IP literals: with enforce_ip_endpoints (the default) a hostname
 * is refused at once, and no resolver is ever called on the loop.
 *
 * Every option has a default (ami_server_options_default): set what you
 * need after calling it. The strings are borrowed for the duration of the
 * call that takes the options (ami_client_add_server keeps copies).
 */
#ifndef AMI_SERVER_H
#define AMI_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/action.h>
#include <ami/err.h>
#include <ami/export.h>
#include <ami/message.h>
#include <ami/tls.h>

AMI_BEGIN_DECLS

typedef enum ami_conn_state {
    AMI_CONN_DISCONNECTED = 0,
    AMI_CONN_CONNECTING,
    AMI_CONN_AUTHENTICATING,
    AMI_CONN_CONNECTED,
    AMI_CONN_BACKOFF,
    AMI_CONN_STOPPED,
    AMI_CONN_STATE_COUNT
} ami_conn_state_t;

/* "disconnected", "connecting", "authenticating", "connected", "backoff", "stopped". */
AMI_API const char *ami_conn_state_name(ami_conn_state_t s);

typedef enum ami_auth { AMI_AUTH_PLAIN = 0, AMI_AUTH_MD5 } ami_auth_t;

#define AMI_MAX_FILTERS 32

/* The per-server options (the seed's ClientOptions). */
typedef struct ami_server_options {
    const char *server_key;
    const char *host;              /* an IP literal unless enforce_ip_endpoints is off */
    uint16_t port;                 /* default 5038 */
    const char *username;
    const char *secret;
    ami_auth_t auth;               /* default plain */
    bool enforce_ip_endpoints;     /* default true */
    uint32_t connect_timeout_ms;   /* default 5000 */
    uint32_t login_timeout_ms;     /* banner + login must finish within; default 5000 */
    uint32_t action_timeout_ms;    /* default for actions; default 10000 */
    uint32_t heartbeat_interval_ms;/* default 5000; 0 disables the heartbeat */
    uint32_t heartbeat_timeout_ms; /* default = interval */
    uint32_t heartbeat_max_failures;/* default 3 */
    uint32_t backoff_initial_ms;   /* default 500 */
    uint32_t backoff_max_ms;       /* default 30000 */
    uint32_t backoff_reset_ms;     /* a session up this long resets the backoff; default 10000 */
    uint32_t max_pending;          /* default 1024 */
    size_t write_hwm;              /* default 1 MiB */
    size_t read_chunk;             /* default 64 KiB */
    ami_parser_limits_t parser;    /* zero fields take the reader's defaults */
    uint32_t max_messages[AMI_STRATEGY_COUNT]; /* per-strategy caps; 0 = default */
    const char *events;            /* Events mask sent after login ("on", "off", "call,system"); NULL = leave */
    const char *filters[AMI_MAX_FILTERS]; /* Filter actions applied after login */
    size_t nfilters;
    ami_tls_options_t tls;         /* AMI over TLS when tls.enabled (see <ami/tls.h>) */
} ami_server_options_t;

AMI_API void ami_server_options_default(ami_server_options_t *opt);

/* Check options without connecting: -1 with AMI_E_CONFIG and a clear message. */
AMI_API int ami_server_options_validate(const ami_server_options_t *opt, ami_err_t *err);

/* A server's counters since it was added. */
typedef struct ami_conn_stats {
    uint64_t connects;          /* connection attempts */
    uint64_t logins;            /* successful logins */
    uint64_t login_failures;
    uint64_t heartbeat_failures;
    uint64_t force_closes;      /* every close: sessions_lost + connect_failures */
    uint64_t sessions_lost;     /* logged-in sessions that ended (not by a stop) */
    uint64_t connect_failures;  /* attempts that ended before login completed */
    uint64_t malformed_lines;   /* bad lines dropped from framed messages */
    uint64_t events;
    uint64_t protocol_errors;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t buffer_bytes;      /* allocated now by the parser and the write buffer */
} ami_conn_stats_t;

AMI_END_DECLS

#endif
