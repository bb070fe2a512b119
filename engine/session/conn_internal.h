/*
 * Private to session/: the connection's structure and what its two halves
 * share. conn.c runs the connection's life (state machine, closing, backoff,
 * reconnect, transport callbacks); conn_input.c the input (messages routed
 * within the read budget); conn_session.c what is said over the
 * socket (actions, login, session settings); conn_heartbeat.c the heartbeat. The connection owns
 * everything it points to except env's loop, ids, log and metrics, which
 * are borrowed. Loop thread only.
 */
#ifndef AMI_HEALTH_CONN_INTERNAL_H
#define AMI_HEALTH_CONN_INTERNAL_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "session/conn.h"
#include "session/conn_metrics.h"
#include "transport/tcp.h"

typedef enum login_phase { WAIT_BANNER = 0, WAIT_CHALLENGE, WAIT_LOGIN, LOGGED_IN } login_phase_t;

struct ami_conn {
    ami_server_options_t opt; /* strings below are owned copies */
    ami_conn_env_t env;
    ami_conn_callbacks_t cb;
    void *ud;
    ami_tcp_t *tcp;
    ami_tls_ctx_t *tls;       /* NULL for plain TCP; the transport borrows it */
    ami_parser_t parser;
    ami_registry_t *reg;
    ami_conn_state_t state;
    login_phase_t phase;
    bool stopping;
    bool in_dispatch;
    uint64_t close_gen;       /* bumps on every close; stale dispatch loops notice */
    uint32_t attempts;        /* consecutive failures (attempts, or sessions that did not stay up) */
    uint32_t backoff_ms;
    uint32_t hb_failures;     /* consecutive failed heartbeat rounds */
    uint64_t ping_id;         /* heartbeat Ping in flight, 0 if none */
    bool hb_round_open;       /* a Ping went out (or was refused) and is not judged yet */
    bool hb_answered;         /* this round's Ping got its Pong */
    char hb_problem[160];     /* why this round's Ping was not sent or was refused */
    uint64_t logoff_id;
    uint32_t rng;
    int64_t armed_deadline;
    ev_timer backoff_timer;
    ev_timer heartbeat_timer; /* repeating: a Ping every heartbeat_interval_ms */
    ev_timer hb_check_timer;  /* heartbeat_timeout_ms after each Ping: judge it */
    ev_timer action_timer;
    ev_timer login_timer;
    ev_timer stop_timer;
    ev_timer healthy_timer;   /* backoff_reset_ms after login: the backoff starts over */
    ami_conn_t *drain_next;   /* in pace's queue of input left by the read budget */
    ami_conn_t *drain_prev;
    bool draining;            /* in that queue */
    unsigned drained_in;      /* ev_iteration() of its last turn in the queue */
    uint32_t budget;          /* messages per loop iteration */
    uint32_t budget_used;     /* of it, in budget_iteration */
    unsigned budget_iteration;
    int64_t budget_ns;        /* input time per loop iteration, then one message per wake-up */
    int64_t input_ns;         /* the clock's last reading while handling input */
    bool read_deferred;       /* the last read was put off for time: the next is not */
    ami_conn_pace_t *pace;    /* env.pace, or own_pace */
    ami_conn_pace_t own_pace;
    ami_conn_stats_t stats;
    ami_conn_metrics_t m;
    ami_conn_observer_t obs;  /* all NULL unless a tool set one */
    char last_error[AMI_ERR_MSG_MAX];
    uint64_t bad_lines_seen;       /* the parser's bad_lines already counted */
    uint64_t bad_lines_unlogged;   /* counted since the last log line about them */
    double bad_lines_logged_at;    /* loop time of that line; 0 = never */
};

/* ---- conn.c ---------------------------------------------------------------------- */

/* Move to state `to`: metrics, a log line, then the on_state callback. */
void conn_set_state(ami_conn_t *c, ami_conn_state_t to, const char *reason);
/* Logged in: reset the backoff if the session is still up after ms. */
void conn_session_healthy_after(ami_conn_t *c, uint32_t ms);

/* ---- conn_input.c ---------------------------------------------------------------- */

/* The transport's read_buffer and on_read (ud = the connection). */
char *conn_input_read_buffer(void *ud, size_t want, size_t *got);
void conn_input_on_read(void *ud, size_t n);
/* ev_init the drain watchers and take the budget from env. */
void conn_input_init(ami_conn_t *c);
/* The session ends: no input is left to drain. */
void conn_input_stop(ami_conn_t *c);

/* ---- conn_session.c -------------------------------------------------------------- */

/* Register, serialise and flush an action whatever the state (login goes out
 * before CONNECTED). reserved: may use the registry's reserved slot. */
int conn_send_spec(ami_conn_t *c, const ami_action_req_t *req, bool reserved, ami_pending_cb cb,
                   void *ud, uint64_t *id_out, ami_err_t *err);
/* conn_send_spec without the reserved slot. */
int conn_send_raw(ami_conn_t *c, const ami_action_req_t *req, ami_pending_cb cb, void *ud,
                  uint64_t *id_out, ami_err_t *err);
/* (Re)arm the action timer on the registry's next deadline, or stop it when none. */
void conn_arm_action_timer(ami_conn_t *c);
/* The registry's on_final hook (ud = the connection): action counts and latency. */
void conn_on_final(void *ud, const ami_pending_note_t *n);
/* The banner came: send Challenge (MD5) or Login (plain). */
void conn_begin_login(ami_conn_t *c);
/* ev_init the heartbeat, action and login timers, with the connection as data. */
void conn_session_init_timers(ami_conn_t *c);

/* ---- conn_heartbeat.c -------------------------------------------------------------- */

void conn_heartbeat_init(ami_conn_t *c);
/* Logged in: failures back to 0, the first Ping in heartbeat_interval_ms. */
void conn_heartbeat_start(ami_conn_t *c);
/* The session ends: no more Pings or judgements. */
void conn_heartbeat_stop(ami_conn_t *c);

#endif
