/*
 * Private to the simulator: the node, session, channel and call structures
 * shared by its files, and the functions they call on each other.
 *
 * Ownership: ami_sim_t owns its nodes; a node owns its sessions, calls,
 * channels, queues, flood block and replay script. A closed session is
 * unlinked at once and freed later from an idle watcher (its "graveyard"),
 * because the close can happen deep inside a callback that still holds it.
 */
#ifndef AMI_SIM_INTERNAL_H
#define AMI_SIM_INTERNAL_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "protocol/parser.h"
#include "sim/sim.h"
#include "util/alloc.h"
#include "transport/tls.h"
#include "util/buf.h"

/* Per-session output bound. Real Asterisk drops a client that stops reading
 * (writetimeout); we drop it when this much is queued and count it. */
#define SIM_OUT_LIMIT (8u << 20)
#define SIM_MAX_SESSIONS 1024
#define SIM_MAX_FILTERS 64
#define SIM_MAX_CALLS 20000
#define SIM_AUTH_TIMEOUT_S 30.0
#define SIM_FAIL_LOGIN_DELAY_MS 200
#define SIM_ASTERISK_VERSION "22.10.1"

/* Event classes (manager.conf read= classes), as bits. */
enum {
    SIM_EV_SYSTEM = 1u << 0,
    SIM_EV_CALL = 1u << 1,
    SIM_EV_LOG = 1u << 2,
    SIM_EV_VERBOSE = 1u << 3,
    SIM_EV_COMMAND = 1u << 4,
    SIM_EV_AGENT = 1u << 5,
    SIM_EV_USER = 1u << 6,
    SIM_EV_CONFIG = 1u << 7,
    SIM_EV_DTMF = 1u << 8,
    SIM_EV_REPORTING = 1u << 9,
    SIM_EV_CDR = 1u << 10,
    SIM_EV_DIALPLAN = 1u << 11,
    SIM_EV_ORIGINATE = 1u << 12,
    SIM_EV_AGI = 1u << 13,
    SIM_EV_CC = 1u << 14,
    SIM_EV_AOC = 1u << 15,
    SIM_EV_TEST = 1u << 16,
    SIM_EV_SECURITY = 1u << 17,
    SIM_EV_MESSAGE = 1u << 18,
};
#define SIM_EV_ALL ((1u << 19) - 1)

typedef struct sim_filter sim_filter_t;
typedef struct sim_call sim_call_t;
typedef struct sim_flow sim_flow_t;
typedef struct sim_counts sim_counts_t;

/* A run of pre-rendered events and where each one starts (offs[count] = bytes). */
typedef struct sim_evblock {
    char *data;
    uint32_t *offs;
    size_t count;
    size_t bytes;
} sim_evblock_t;

typedef struct sim_session {
    struct sim_session *prev, *next;
    ami_sim_node_t *node;
    int fd;
    ami_tls_t *tls;        /* TLS nodes: the session's TLS, NULL otherwise */
    bool tls_handshaking;  /* accepted, not greeted yet */
    bool tls_read_wants_write, tls_write_wants_read;
    ev_io rw, ww;
    ev_timer delay_timer;  /* delayed answer, or a deferred resume */
    ev_timer auth_timer;   /* never logged in: closed silently, like authtimeout */
    ami_parser_t parser;
    ami_buf_t out;
    size_t out_pos;        /* bytes of out already written */
    ami_buf_t held;        /* events held back while a sync Originate runs */
    uint64_t id;
    uint64_t bytes_out;    /* for faults.close_after_bytes */
    uint64_t events_queued; /* count_events nodes only */
    double started_wall;
    char local[80], remote[80];
    char username[64];
    char challenge[16];
    uint32_t mask;         /* event classes this session reads */
    bool logged_in, closed, close_after_flush, busy, events_dirty;
    bool replaying;
    bool half_close_pending; /* faults.half_close_after_login: shutdown(SHUT_WR) once flushed */
    ami_msg_t pending;     /* an action waiting for its delay (parser buffer untouched meanwhile) */
    bool has_pending;
    sim_call_t *sync_call; /* the sync Originate this session waits for */
    sim_filter_t *filters;
    size_t nfilters;
    /* flood: the view of the node's block this session gets */
    sim_evblock_t own_view; /* filtered copy when mask/filters apply */
    bool view_valid, view_private;
    size_t flood_idx;       /* next event index (rate mode) */
    size_t flood_off;       /* byte offset in the view (max mode) */
    /* replay */
    size_t rp_idx;
    uint64_t rp_msgs;
    double rp_anchor_t, rp_anchor_at;
    ev_timer rp_timer;
} sim_session_t;

typedef struct sim_var {
    struct sim_var *next;
    char *name;
    char *value;
} sim_var_t;

typedef struct sim_chan {
    struct sim_chan *prev, *next;
    sim_call_t *call;
    char name[128], uniqueid[64], linkedid[64];
    char cid_num[40], cid_name[48], conn_num[40], conn_name[48];
    char context[40], exten[40];
    int priority, state;
    char app[32], appdata[96];
    char bridge[40];
    double created;        /* ev_now */
    sim_var_t *vars;
} sim_chan_t;

typedef struct sim_member {
    char name[32], iface[48];
    bool dynamic, paused;
    int status;            /* 1 not in use, 2 in use */
    int in_call, calls_taken;
    long long last_call, login_time;
} sim_member_t;

#define SIM_QUEUE_MEMBERS 8
#define SIM_QUEUE_CALLERS 64

typedef struct sim_queue {
    char name[24];
    sim_member_t members[SIM_QUEUE_MEMBERS];
    size_t nmembers;
    sim_chan_t *callers[SIM_QUEUE_CALLERS];
    double joined[SIM_QUEUE_CALLERS];
    size_t ncallers;
    int completed, abandoned;
} sim_queue_t;

#define SIM_NQUEUES 2

/* One call: its channels and where it is in its life. Each kind of call
 * (originated, background traffic) brings its own step and hangup code. */
struct sim_call {
    sim_call_t *prev, *next;
    ami_sim_node_t *node;
    ev_timer timer;
    void (*step)(sim_call_t *call);                                /* timer fired */
    void (*hangup)(sim_call_t *call, sim_chan_t *which, int cause); /* Hangup action */
    int phase;
    sim_chan_t *a, *b, *c;
    char action_id[64];
    bool async, app_mode, answered;
    sim_session_t *sync_session;
    char dial[96];          /* the Channel the Originate asked for */
    char app[32], data[96]; /* Application/Data, or Context/Exten when !app_mode */
    char dest_ctx[40], dest_exten[40];
    char device[96];        /* for DeviceStateChange */
    const void *ext;        /* the dialplan entry the call runs */
    double duration;        /* seconds until it ends by itself; <0 never */
    int cause;
    int default_cause;      /* for a Hangup action without Cause */
    sim_queue_t *queue;
    int member;
    double queued_at;
    char bridge[40];
    sim_chan_t *xferer;     /* attended transfer in progress: who transfers (c is the target) */
    char xfer_bridge[40];   /* ... and the consultation bridge */
};

typedef struct sim_flood {
    sim_evblock_t block;
    ev_timer timer;
    double rate;           /* events/s; <0 max; 0 off */
    double started;
    uint64_t due_sent;     /* events handed out since started (rate mode) */
} sim_flood_t;

struct ami_sim_node {
    ami_sim_t *sim;
    size_t index;
    char *name, *bind_ip, *username, *secret, *ami_version;
    uint16_t port;
    int lfd;
    ami_tls_ctx_t *tls;    /* serves TLS when set */
    ev_io accept_w;
    bool running;
    ami_sim_faults_t faults;
    ami_sim_node_stats_t stats;
    sim_session_t *sessions;
    sim_session_t *graveyard;
    ev_idle reaper;
    ami_buf_t scratch;     /* one event being rendered */
    ami_buf_t reply;       /* one response being rendered */
    double started_wall;
    uint64_t next_session_id;
    /* call model */
    sim_chan_t *chans;
    sim_call_t *calls;
    uint32_t chan_seq;     /* the -0000000a suffix */
    uint64_t uniq_seq;     /* the .N of Uniqueids */
    uint64_t processed_calls;
    sim_var_t *globals;
    sim_queue_t queues[SIM_NQUEUES];
    /* traffic generator */
    ev_timer traffic_timer;
    double cps, next_arrival;
    uint32_t call_duration_ms;
    uint64_t rng;
    /* flood */
    sim_flood_t flood;
    /* replay */
    sim_flow_t *flow;
    double replay_speed;
    /* per-name event counts (count_events nodes only) */
    sim_counts_t *counts;
};

struct ami_sim {
    struct ev_loop *loop;
    bool own_loop;
    ami_logger_t *log;
    ami_sim_node_t **nodes;
    size_t nnodes, cap;
    ev_async stop_async;
    ev_timer run_timer;
};

/* sim_net.c: listeners and sessions */
int sim_listen(ami_sim_node_t *n, ami_err_t *err);
void sim_unlisten(ami_sim_node_t *n);
void sim_session_close(sim_session_t *s, const char *why);
void sim_session_close_after_flush(sim_session_t *s);
int sim_session_send(sim_session_t *s, const void *p, size_t len);
void sim_session_want_write(sim_session_t *s);
void sim_session_resume_soon(sim_session_t *s);
void sim_session_update_reading(sim_session_t *s);
void sim_reap(ami_sim_node_t *n);
double sim_wall_now(void);
/* send() within the close_after_bytes budget, with accounting: bytes written,
 * 0 would block, -1 the session is closed. */
long sim_write_raw(sim_session_t *s, const char *p, size_t len);
/* A session's AMI life begins (after TLS, if any): banner or replay. */
void sim_session_begin(sim_session_t *s);
/* Run a session's read handler as if its socket became readable. */
void sim_session_read_now(sim_session_t *s);

/* sim_tls.c: TLS sessions (see sim.h) */
int sim_tls_node_init(ami_sim_node_t *n, const ami_sim_node_config_t *cfg, ami_err_t *err);
void sim_tls_node_free(ami_sim_node_t *n);
/* Accepted: start the handshake (the session may be closed on return). */
void sim_tls_session_start(sim_session_t *s);
/* The socket is ready during the handshake; sim_session_begin follows success. */
void sim_tls_handshake_step(sim_session_t *s);
/* recv()/send() contracts: bytes, 0 at EOF (recv), -1 with errno (EAGAIN: wait). */
long sim_tls_recv(sim_session_t *s, char *buf, size_t len);
long sim_tls_send(sim_session_t *s, const char *p, size_t len);
/* close_notify (once, if the socket takes it); end: also free the session's TLS. */
void sim_tls_notify_close(sim_session_t *s);
void sim_tls_session_end(sim_session_t *s);
void sim_tls_renegotiate_all(ami_sim_node_t *n);

/* sim_events.c: event classes, filters, delivery */
uint32_t sim_class_parse(const char *list, bool *ok);
uint32_t sim_class_of_event(const char *ev, size_t len);
int sim_filter_add(sim_session_t *s, const ami_msg_t *m, const char **errmsg);
void sim_filters_free(sim_session_t *s);
bool sim_session_wants(sim_session_t *s, uint32_t cls, const char *ev, size_t len);
void sim_emit(ami_sim_node_t *n, uint32_t cls); /* broadcasts n->scratch */

/* sim_render.c: shapes of messages */
void sim_put(ami_buf_t *b, const char *key, const char *val);
void sim_putf(ami_buf_t *b, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sim_put_int(ami_buf_t *b, const char *key, long long v);
void sim_ev_begin(ami_buf_t *b, const char *event, const char *priv);
void sim_chan_block(ami_buf_t *b, const char *prefix, const sim_chan_t *c);
void sim_end(ami_buf_t *b);
void sim_resp_begin(ami_buf_t *b, const char *response, const char *action_id);
const char *sim_state_desc(int state);
void sim_emit_chan_event(ami_sim_node_t *n, const char *event, uint32_t cls, const sim_chan_t *c);
void sim_emit_newexten(ami_sim_node_t *n, sim_chan_t *c, int prio, const char *app, const char *data);
void sim_emit_hangup(ami_sim_node_t *n, const sim_chan_t *c, int cause);
void sim_emit_cause_event(ami_sim_node_t *n, const char *event, const sim_chan_t *c, int cause);
void sim_emit_devstate(ami_sim_node_t *n, const char *device, const char *state);
void sim_emit_varset(ami_sim_node_t *n, const sim_chan_t *c, const char *var, const char *val);
void sim_emit_security(ami_sim_node_t *n, sim_session_t *s, const char *event, const char *severity,
                       int version, const char *extra);

/* sim_actions.c */
/* An action arrived: counts it, applies the silence and delay faults. */
void sim_dispatch(sim_session_t *s, const ami_msg_t *m);
/* Answer it now (after its delay). */
void sim_dispatch_now(sim_session_t *s, const ami_msg_t *m);
/* Send n->reply to s and clear it. */
void sim_reply_flush(sim_session_t *s);
void sim_reply(sim_session_t *s, const char *action_id, const char *response, const char *message);
const char *sim_action_id(const ami_msg_t *m);

/* sim_lists.c */
void sim_act_status(sim_session_t *s, const ami_msg_t *m);
void sim_act_core_show_channels(sim_session_t *s, const ami_msg_t *m);
void sim_act_queue_status(sim_session_t *s, const ami_msg_t *m);
void sim_act_queue_summary(sim_session_t *s, const ami_msg_t *m);

/* sim_command.c */
void sim_act_show_dialplan(sim_session_t *s, const ami_msg_t *m);
void sim_act_command(sim_session_t *s, const ami_msg_t *m);

/* sim_chan.c: channels, variables, call objects, Hangup and Redirect */
void sim_calls_init(ami_sim_node_t *n);
void sim_calls_clear(ami_sim_node_t *n);
sim_chan_t *sim_chan_new(ami_sim_node_t *n, sim_call_t *call);
sim_chan_t *sim_chan_find(ami_sim_node_t *n, const char *name);
/* Free one channel of a call that goes on without it. */
void sim_chan_drop(ami_sim_node_t *n, sim_chan_t *c);
const char *sim_var_get(sim_var_t *list, const char *name);
int sim_var_set(sim_var_t **list, const char *name, const char *value);
void sim_vars_free(sim_var_t **list);
void sim_next_uniqueid(ami_sim_node_t *n, char out[64]);
sim_call_t *sim_call_new(ami_sim_node_t *n);
void sim_call_free(sim_call_t *call);
void sim_call_schedule(sim_call_t *call, double after_s);
/* Answer the session waiting on this sync Originate (if any) and resume it. */
void sim_call_sync_finish(sim_call_t *call, bool ok);
void sim_session_forget_call(sim_session_t *s);
void sim_act_hangup(sim_session_t *s, const ami_msg_t *m);
void sim_act_redirect(sim_session_t *s, const ami_msg_t *m);
size_t sim_active_calls(const ami_sim_node_t *n);

/* sim_calls.c: Originate */
void sim_act_originate(sim_session_t *s, const ami_msg_t *m);

/* sim_traffic.c: background calls and queues */
void sim_queues_init(ami_sim_node_t *n);
sim_queue_t *sim_queue_find(ami_sim_node_t *n, const char *name);
void sim_queue_drop_caller(sim_queue_t *q, const sim_chan_t *c);
void sim_traffic_set_rate(ami_sim_node_t *n, double cps);
void sim_traffic_start(ami_sim_node_t *n);
void sim_traffic_stop(ami_sim_node_t *n);
double sim_rand01(ami_sim_node_t *n);
void sim_act_queue_add(sim_session_t *s, const ami_msg_t *m);
void sim_act_queue_remove(sim_session_t *s, const ami_msg_t *m);

/* Phases of a background call (sim_traffic.c, sim_transfer.c). */
enum { SIM_T_RING, SIM_T_TALK, SIM_T_QUEUE_WAIT, SIM_T_AGENT_RING, SIM_T_XFER_RING, SIM_T_XFER_TALK };

bool sim_traffic_owns(const sim_call_t *call);
/* call->a dials PJSIP/<ext>: a new leg b rings, then answers or fails. */
void sim_traffic_dial(ami_sim_node_t *n, sim_call_t *call, const char *ext);
/* A new PJSIP channel for call, in the Linkedid of call->a. */
sim_chan_t *sim_traffic_leg(ami_sim_node_t *n, sim_call_t *call, const char *dev, const char *exten);
/* a and b are bridged: talk for a while, then hang up. */
void sim_traffic_talk(sim_call_t *call);
void sim_bridge_id(ami_sim_node_t *n, char out[40]);
void sim_bridge_event(ami_sim_node_t *n, const char *event, const char *bridge, int count, const sim_chan_t *c);
void sim_pair_event(ami_sim_node_t *n, const char *event, uint32_t cls, const sim_chan_t *from,
                    const sim_chan_t *to, const char *tail);

/* sim_transfer.c: BlindTransfer and Atxfer of bridged background calls */
void sim_act_blind_transfer(sim_session_t *s, const ami_msg_t *m);
void sim_act_atxfer(sim_session_t *s, const ami_msg_t *m);
/* The attended transfer's next step (target answers; transfer completes). */
void sim_xfer_step(sim_call_t *call);
/* The call ends during an attended transfer: undo its bridges, hang up the target. */
void sim_xfer_abandon(sim_call_t *call);

/* sim_flood.c */
void sim_flood_free(ami_sim_node_t *n);
void sim_flood_apply(ami_sim_node_t *n);
void sim_flood_session_reset(sim_session_t *s);
/* Whether the max-speed flood writes to s now (may build its filtered view). */
bool sim_flood_max_active(sim_session_t *s);
/* Max mode: write flood bytes to a writable socket. -1 session closed; 0 stop for now (would
 * block, or this turn's budget is spent); 1 nothing to flood; 2 a queued reply goes first. */
int sim_flood_write(sim_session_t *s);

/* sim_count.c: events per name, for exact accounting (config count_events) */
int sim_counts_new(ami_sim_node_t *n);
void sim_counts_free(ami_sim_node_t *n);
/* The complete messages of data (bytes queued to s) that are events. */
void sim_count_sent(sim_session_t *s, const char *data, size_t len);
/* s is closing: keep its record. */
void sim_count_session_closed(sim_session_t *s);
/* One event (starting "Event: ") a muted session did not get. */
void sim_count_muted(ami_sim_node_t *n, const char *ev, size_t len);

/* sim_replay.c */
int sim_flow_load(const char *path, sim_flow_t **out, ami_err_t *err);
void sim_flow_free(sim_flow_t *f);
void sim_replay_start(sim_session_t *s);
void sim_replay_input(sim_session_t *s, size_t nmsgs);
void sim_replay_stop(sim_session_t *s);

#define SIM_LOG(n) ((n)->sim->log)

/* Every way into the simulator (its public functions, its watchers'
 * callbacks) starts with SIM_ACCOUNT(): what it allocates until it returns
 * is charged to the simulator's own account (util/alloc.h), so a test that
 * runs it in-process on the engine's loop still reads the engine's live
 * bytes alone. The previous account comes back on every return path. */
static inline void sim_account_restore(ami_alloc_account_t *previous)
{
    ami_alloc_use(*previous);
}
#define SIM_ACCOUNT()                                                                              \
    ami_alloc_account_t sim_account_ __attribute__((cleanup(sim_account_restore), unused)) =      \
        ami_alloc_use(AMI_ALLOC_SIMULATOR)

#endif
