/*
 * A simulated Asterisk cluster speaking AMI over real TCP.
 *
 * One ami_sim_t holds N nodes; each node listens on its own loopback port and
 * behaves like an Asterisk 22 manager interface as recorded in
 * tests/fixtures/asterisk (banner, Login plain and MD5, Ping, Originate with
 * OriginateResponse and channel events, Hangup, Redirect, BlindTransfer and
 * Atxfer of bridged calls, Setvar/Getvar,
 * Status, CoreShowChannels, QueueStatus/QueueSummary, Command, Events,
 * Filter, UserEvent, Logoff, errors with the real texts). It can generate
 * realistic call traffic at a rate, flood events for benchmarks, replay a
 * recorded .flow session, and inject the faults the tests need.
 *
 * It runs on the caller's libev loop (tests put the engine and the simulator
 * on one loop: deterministic, no threads) or on its own loop in the ami-sim
 * program. Nothing in it blocks.
 *
 * With a certificate (tls_cert_file) a node serves AMI over TLS, as
 * Asterisk does with tlsenable: the TLS handshake first, then the banner.
 *
 * It is both the tests' mock AMI server and the ami-sim program's core.
 */
#ifndef AMI_SIM_SIM_H
#define AMI_SIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/log.h"
#include "util/err.h"

struct ev_loop;

typedef struct ami_sim ami_sim_t;
typedef struct ami_sim_node ami_sim_node_t;

typedef struct ami_sim_node_config {
    const char *name;           /* used in logs and as SystemName; default "sim<N>" */
    const char *bind_ip;        /* default "127.0.0.1"; IPv6 literal allowed ("::1") */
    uint16_t port;              /* 0: an ephemeral port (read it with ami_sim_node_port) */
    const char *username;       /* accepted login; default "engine" */
    const char *secret;         /* default "s3cret" */
    const char *ami_version;    /* banner version; default "11.0.0" */
    double calls_per_second;    /* background call traffic; 0 = none */
    uint32_t call_duration_ms;  /* mean talk time of generated calls; default 3000 */
    uint32_t seed;              /* for the traffic generator; 0 = fixed default */
    const char *replay_flow;    /* path of a .flow file: serve that recorded session instead */
    bool count_events;          /* count events per name (ami_sim_node_event_counts); off by
                                   default: it scans every byte sent to a session once more */
    const char *tls_cert_file;  /* serve AMI over TLS with this PEM certificate (chain); NULL = plain */
    const char *tls_key_file;   /* its PEM key; NULL = in tls_cert_file */
    const char *tls_client_ca_file; /* require a client certificate signed by this CA */
    bool tls12_only;            /* cap TLS at 1.2 (where renegotiation exists) */
} ami_sim_node_config_t;

/* Faults, applied to the node's current and future sessions. Zero = off.
 *
 * Login timing: a Login that fails (wrong user/secret/key, or reject_login)
 * is answered after login_delay_ms, or after 200 ms when login_delay_ms is 0
 * (the real server waits about 1 s); a good Login waits login_delay_ms.
 * A session handles one action at a time, like Asterisk: while an answer is
 * delayed, later actions from that session wait behind it.
 *
 * One-shot faults: send_garbage and close_mid_response fire once and then
 * clear themselves in the node's fault set (send_garbage goes to every
 * session logged in when it is set, or else to the next session that logs
 * in; close_mid_response cuts the next action answered on the node).
 * close_after_bytes counts the bytes the server wrote on each session,
 * banner included. */
typedef struct ami_sim_faults {
    bool ping_silent;              /* read Ping actions, never answer them */
    bool all_silent;               /* read every action, answer none */
    bool reject_login;             /* "Authentication failed" (after ~login_delay_ms), then close */
    uint32_t login_delay_ms;       /* delay before answering Login */
    uint32_t response_delay_ms;    /* delay before answering any other action */
    bool no_banner;                /* accept, say nothing */
    bool garbage_banner;           /* send a non-AMI first line */
    bool stall_reads;              /* stop reading from clients (their write buffers fill) */
    uint64_t close_after_bytes;    /* slam the session shut after it sent this many bytes */
    bool close_mid_response;       /* answer the next action with half a message, then close */
    bool half_close_after_login;   /* shutdown(SHUT_WR) right after a successful login */
    bool send_garbage;             /* send one garbage line (no colon) to each logged-in session */
    bool answer_without_action_id; /* answers omit ActionID, as old servers and some proxies do */
    double flood_events_per_sec;   /* extra events to logged-in sessions; <0 = as fast as possible */
    bool mute_events;              /* send sessions no events (answers still go); with all_silent,
                                      a frozen server: not a byte more. Counted per name as muted */
    bool tls_renegotiate;          /* one-shot: every logged-in TLS session renegotiates (TLS 1.2)
                                      or requests a key update (TLS 1.3) */
    bool tls_abrupt_close;         /* TLS sessions close without close_notify (a cut connection) */
} ami_sim_faults_t;

typedef struct ami_sim_node_stats {
    uint64_t sessions_accepted;
    uint64_t sessions_live;
    uint64_t logins_ok;
    uint64_t logins_failed;
    uint64_t actions;              /* actions received (all names) */
    uint64_t pings;                /* Ping actions received */
    uint64_t pings_answered;
    uint64_t originates;
    uint64_t events_sent;
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t calls_started;
    uint64_t calls_active;
    uint64_t sessions_dropped_slow; /* closed because they did not read (output bound hit) */
    uint64_t calls_refused;         /* calls not started: the per-node call cap was reached */
    uint64_t bytes_unsent_at_close; /* queued for a session when it closed, never written */
    uint64_t tls_handshakes;        /* TLS handshakes completed, renegotiations included */
    uint64_t tls_handshake_failures;
    uint64_t tls_renegotiations;    /* renegotiations and key updates requested */
    uint64_t tls_close_notify_received; /* sessions the client ended with close_notify */
} ami_sim_node_stats_t;

/* loop NULL: the simulator creates and owns its own loop (ami_sim_run). */
ami_sim_t *ami_sim_new(struct ev_loop *loop, ami_logger_t *log);
void ami_sim_free(ami_sim_t *sim);
struct ev_loop *ami_sim_loop(ami_sim_t *sim);

ami_sim_node_t *ami_sim_add_node(ami_sim_t *sim, const ami_sim_node_config_t *cfg, ami_err_t *err);
size_t ami_sim_node_count(const ami_sim_t *sim);
ami_sim_node_t *ami_sim_node_at(ami_sim_t *sim, size_t i);

uint16_t ami_sim_node_port(const ami_sim_node_t *node);
const char *ami_sim_node_name(const ami_sim_node_t *node);

/* Kill a node: close its listener and every session (connections refused
 * until restarted). Restart listens again on the same port. */
void ami_sim_node_stop(ami_sim_node_t *node);
int ami_sim_node_restart(ami_sim_node_t *node, ami_err_t *err);
bool ami_sim_node_running(const ami_sim_node_t *node);

/* Close every live session at once (the server "restarts" its sessions). */
void ami_sim_node_drop_sessions(ami_sim_node_t *node);

void ami_sim_node_set_faults(ami_sim_node_t *node, const ami_sim_faults_t *faults);
void ami_sim_node_set_call_rate(ami_sim_node_t *node, double calls_per_second);

/* Replay pacing: recorded gaps are divided by speed (default 1.0 = real
 * time); 0 sends every server entry as soon as the client side allows. */
void ami_sim_node_set_replay_speed(ami_sim_node_t *node, double speed);

/* Send a raw, already framed event ("Event: X\r\n...\r\n\r\n") to every
 * logged-in session whose event mask lets it through. */
void ami_sim_node_inject(ami_sim_node_t *node, const char *raw, size_t len);

ami_sim_node_stats_t ami_sim_node_stats(const ami_sim_node_t *node);

/* Per event name, on a node made with count_events: the events queued to
 * its sessions (broadcast events, list items, completion events; the
 * max-speed flood, which bypasses the queue, is not counted), and those the
 * mute_events fault kept from a session that would have received them.
 * Fills up to max entries, returns how many names there are. Names past the
 * table's 255 land in "(other)". */
typedef struct ami_sim_event_count {
    char name[48];
    uint64_t sent;
    uint64_t muted;
} ami_sim_event_count_t;

size_t ami_sim_node_event_counts(const ami_sim_node_t *node, ami_sim_event_count_t *out, size_t max);

/* Per session, on a node made with count_events: the events queued to it
 * and the bytes written to its socket (and those still queued when it
 * closed). Set against what a client read session by session, this says
 * where events were lost in flight: written after the client had stopped
 * reading. The first 65536 closed sessions come first, in closing order,
 * then the live ones; ids give the order they were accepted in. Fills up to
 * max, returns how many exist. */
typedef struct ami_sim_session_record {
    uint64_t id;
    uint64_t events_queued;
    uint64_t bytes_written;
    uint64_t bytes_unsent; /* closed with this much still queued */
    bool open;
} ami_sim_session_record_t;

size_t ami_sim_node_sessions(const ami_sim_node_t *node, ami_sim_session_record_t *out, size_t max);
/* Rename a live channel (a masquerade, as Asterisk does in pickups and
 * some transfers): the Rename event (Channel, Newname, Uniqueid) goes out
 * and CoreShowChannels/Status show the new name from then on. */
int ami_sim_node_rename(ami_sim_node_t *node, const char *channel, const char *newname, ami_err_t *err);

/* Run the simulator's own loop until ami_sim_stop or duration_ms (0 = forever). */
int ami_sim_run(ami_sim_t *sim, uint32_t duration_ms);
void ami_sim_stop(ami_sim_t *sim);

#endif
