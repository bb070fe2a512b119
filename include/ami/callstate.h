/*
 * The live call state: per server, the table of channels the Asterisk
 * server has right now, and the calls they make up. A client of the public
 * client API (<ami/client.h>) like any embedder; it knows nothing of Lua.
 *
 *   ami_callstate_config_t cfg;  ami_callstate_config_default(&cfg);
 *   cfg.max_channels = 20000;  cfg.variables = (const char *[]){"CRM_ID"};  cfg.nvariables = 1;
 *   ami_callstate_t *cs = ami_callstate_new(client, &cfg, &err);  // after add_server, before start
 *   ...
 *   int srv = ami_callstate_server_index(cs, "pbx1");
 *   const ami_chan_t *ch = ami_callstate_find(cs, srv, "1795801132.4", 12);  // Uniqueid or Channel
 *   ami_chan_iter_t it;
 *   for (const ami_chan_t *c = ami_callstate_first(cs, srv, &it); c; c = ami_callstate_next(&it))
 *       printf("%s %s\n", ami_chan_str(c, AMI_CHAN_CHANNEL, NULL), ami_chan_str(c, AMI_CHAN_STATE_DESC, NULL));
 *
 * How it stays right:
 *   - After every login (first start, reconnect) it sends CoreShowChannels
 *     and rebuilds the server's table from the list; a failed rebuild is
 *     retried (1 s, doubling up to 30 s) while the server stays connected.
 *   - Events keep it current: Newchannel creates a channel; Newstate,
 *     NewCallerid, NewConnectedLine, NewAccountCode, Newexten, Rename,
 *     DialBegin/DialState/DialEnd, BridgeEnter/BridgeLeave/BridgeDestroy,
 *     LocalBridge, BlindTransfer, AttendedTransfer and (with tracked
 *     variables) VarSet update it; Hangup removes it. Only Newchannel and a
 *     rebuild create channels: an event about a channel the table does not
 *     know changes nothing, so a late event can never resurrect one.
 *   - Events that arrive while a rebuild runs are applied at once, and the
 *     rebuild does not undo them: a channel an event touched after the
 *     list's first response keeps what the event said, one hung up then is
 *     not brought back by a list item, and at the list's end every channel
 *     neither listed nor touched since is dropped (it ended while the
 *     engine was not looking). See docs/usage-guide.md for the reasoning.
 *   - While a server is disconnected its table keeps the last known state
 *     (ami_callstate_synced says false) until the next rebuild.
 *
 * Order: the call state subscribes to the event names above. The client
 * runs named subscriptions before "*" ones and, for one name, in the order
 * they were made, so a "*" subscriber (the Lua runtime) or a subscriber
 * made after ami_callstate_new sees the table already updated by the event
 * it is handling. During the dispatch of its Hangup, the channel is gone
 * from the table but ami_callstate_find still answers it (with its hangup
 * cause), until the next event of that server or the end of the loop
 * iteration, whichever comes first.
 *
 * Bounds: at most max_channels channels per server (a Newchannel past it
 * is refused and counted); strings of at most AMI_CHAN_FIELD_MAX bytes and
 * variable values of at most variable_max_bytes (longer ones are cut and
 * counted); at most AMI_CALLSTATE_MAX_VARIABLES tracked names. While a
 * rebuild runs, the hung-up Uniqueids it must not bring back are kept too
 * (at most max_channels).
 *
 * Metrics (label server_key): ami_callstate_channels, ami_callstate_calls,
 * ami_callstate_synced (gauges), ami_callstate_channels_refused_total,
 * ami_callstate_values_truncated_total, ami_callstate_rebuilds_total,
 * ami_callstate_rebuild_failures_total.
 *
 * Memory: the call state copies its configuration; records are its own
 * (see <ami/channel.h> for borrowing and copying them).
 * Threads: the loop thread only. Free it before the client.
 */
#ifndef AMI_CALLSTATE_H
#define AMI_CALLSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/channel.h>
#include <ami/client.h>
#include <ami/err.h>
#include <ami/export.h>

AMI_BEGIN_DECLS

#define AMI_CALLSTATE_MAX_VARIABLES 32
#define AMI_CALLSTATE_VARIABLE_NAME_MAX 64

typedef struct ami_callstate_config {
    uint32_t max_channels;         /* per server; default 10000 */
    const char *const *variables;  /* channel variables to track (names, case-sensitive) */
    size_t nvariables;             /* at most AMI_CALLSTATE_MAX_VARIABLES */
    uint32_t variable_max_bytes;   /* longest value kept; default 256, at most 4096 */
    uint32_t rebuild_timeout_ms;   /* CoreShowChannels; 0 = the server's action timeout */
} ami_callstate_config_t;

AMI_API void ami_callstate_config_default(ami_callstate_config_t *cfg);

/* Check a configuration without creating anything: -1 with AMI_E_CONFIG. */
AMI_API int ami_callstate_config_validate(const ami_callstate_config_t *cfg, ami_err_t *err);

typedef struct ami_callstate ami_callstate_t;

/* Tracks every server the client has now (add servers first). A server
 * already logged in is rebuilt at once; the others at their login. */
AMI_API ami_callstate_t *ami_callstate_new(ami_client_t *client, const ami_callstate_config_t *cfg,
                                           ami_err_t *err);
AMI_API void ami_callstate_free(ami_callstate_t *cs);

/* The client's server index (same numbering as ami_client_server_index), or -1. */
AMI_API int ami_callstate_server_index(const ami_callstate_t *cs, const char *server_key);
AMI_API size_t ami_callstate_server_count(const ami_callstate_t *cs);
AMI_API const char *ami_callstate_server_key(const ami_callstate_t *cs, size_t server);

/* True once the table of that server was rebuilt since its last login. */
AMI_API bool ami_callstate_synced(const ami_callstate_t *cs, size_t server);
AMI_API size_t ami_callstate_count(const ami_callstate_t *cs, size_t server);

/* A channel by Uniqueid, else by exact Channel name; NULL if unknown. */
AMI_API const ami_chan_t *ami_callstate_find(const ami_callstate_t *cs, size_t server, const char *id,
                                             size_t len);

/* Every channel of a server, oldest first. The iterator is valid until
 * the next event of that server is applied. */
typedef struct ami_chan_iter {
    const void *at;
} ami_chan_iter_t;

AMI_API const ami_chan_t *ami_callstate_first(const ami_callstate_t *cs, size_t server, ami_chan_iter_t *it);
AMI_API const ami_chan_t *ami_callstate_next(ami_chan_iter_t *it);

/* Tracked variable names, in configuration order (ami_chan_var's index). */
AMI_API size_t ami_callstate_var_count(const ami_callstate_t *cs);
AMI_API const char *ami_callstate_var_name(const ami_callstate_t *cs, size_t i);

/* Calls: channels grouped by Linkedid and by bridge (two channels sharing
 * either are in one call, transitively: a transfer that bridges two calls
 * makes them one). chans[i] (oldest first) is in call call_of[i]; calls are
 * numbered 0..ncalls-1 in the order of their oldest channel. The arrays
 * belong to the call state and are valid until the next call of this
 * function or the next event of that server; NULL on out of memory. */
typedef struct ami_calls_view {
    size_t nchans;
    size_t ncalls;
    const ami_chan_t *const *chans;
    const uint32_t *call_of;
} ami_calls_view_t;

AMI_API const ami_calls_view_t *ami_callstate_calls(ami_callstate_t *cs, size_t server);

typedef struct ami_callstate_stats {
    uint64_t channels;          /* live now */
    uint64_t refused;           /* Newchannel / list items over max_channels */
    uint64_t truncated;         /* values cut to their bound */
    uint64_t rebuilds;          /* completed */
    uint64_t rebuild_failures;
    uint64_t events_applied;    /* events that changed or removed a channel */
} ami_callstate_stats_t;

AMI_API void ami_callstate_stats(const ami_callstate_t *cs, size_t server, ami_callstate_stats_t *out);

AMI_END_DECLS

#endif
