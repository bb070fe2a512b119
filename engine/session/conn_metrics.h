/*
 * The metrics one server connection exports, all labelled server_key.
 * Private to session/: conn.c updates them, nobody else.
 *
 *   ami_connection_state{server_key,state}          1 for the current state
 *   ami_reconnects_total{server_key}                connection attempts after the first
 *   ami_disconnects_total{server_key,reason}        logged-in sessions lost, by kind
 *   ami_connect_failures_total{server_key,reason}   attempts that never logged in, by kind
 *   ami_malformed_lines_total{server_key}           bad lines dropped from framed messages
 *   ami_login_failures_total{server_key}
 *   ami_heartbeat_failures_total{server_key}
 *   ami_events_received_total{server_key}
 *   ami_read_budget_hits_total{server_key}          wake-ups that left input for the next iteration
 *   ami_protocol_errors_total{server_key}
 *   ami_actions_sent_total{server_key}
 *   ami_actions_completed_total{server_key}
 *   ami_actions_failed_total{server_key,reason}     timeouts, disconnects, refusals...
 *   ami_action_latency_seconds{server_key}          send -> final answer
 * With no registry every handle points at a private dummy, so the hot path
 * never tests for NULL.
 */
#ifndef AMI_HEALTH_CONN_METRICS_H
#define AMI_HEALTH_CONN_METRICS_H

#include "correlation/registry.h"
#include "session/conn.h"
#include "obs/metrics.h"

typedef struct ami_conn_metrics {
    ami_metrics_t *reg;
    char key[64];
    ami_gauge_t *state[AMI_CONN_STATE_COUNT];
    ami_counter_t *reconnects;
    ami_counter_t *login_failures;
    ami_counter_t *heartbeat_failures;
    ami_counter_t *events;
    ami_counter_t *protocol_errors;
    ami_counter_t *sent;
    ami_counter_t *completed;
    ami_counter_t *failed[AMI_STATUS_COUNT];      /* registered on first use */
    ami_counter_t *disconnects[AMI_STATUS_COUNT]; /* registered on first use */
    ami_counter_t *connect_failures[AMI_STATUS_COUNT]; /* registered on first use */
    ami_counter_t *malformed_lines;
    ami_counter_t *budget_hits;
    ami_histogram_t *latency;
    ami_counter_t dummy_counter;
    ami_gauge_t dummy_gauge;
} ami_conn_metrics_t;

void ami_conn_metrics_init(ami_conn_metrics_t *m, ami_metrics_t *reg, const char *server_key);
void ami_conn_metrics_deinit(ami_conn_metrics_t *m);

void ami_conn_metrics_state(ami_conn_metrics_t *m, ami_conn_state_t from, ami_conn_state_t to);
void ami_conn_metrics_final(ami_conn_metrics_t *m, const ami_pending_note_t *n, int64_t now_ns);
void ami_conn_metrics_refused(ami_conn_metrics_t *m, ami_status_t why);
/* A logged-in session was lost. */
void ami_conn_metrics_disconnect(ami_conn_metrics_t *m, ami_status_t why);
/* A connection attempt ended before login completed. */
void ami_conn_metrics_connect_failure(ami_conn_metrics_t *m, ami_status_t why);

static inline void ami_conn_metrics_sent(ami_conn_metrics_t *m) { ami_counter_inc(m->sent); }
static inline void ami_conn_metrics_event(ami_conn_metrics_t *m) { ami_counter_inc(m->events); }
static inline void ami_conn_metrics_reconnect(ami_conn_metrics_t *m) { ami_counter_inc(m->reconnects); }
static inline void ami_conn_metrics_login_failure(ami_conn_metrics_t *m) { ami_counter_inc(m->login_failures); }
static inline void ami_conn_metrics_heartbeat_failure(ami_conn_metrics_t *m) { ami_counter_inc(m->heartbeat_failures); }
static inline void ami_conn_metrics_protocol_error(ami_conn_metrics_t *m) { ami_counter_inc(m->protocol_errors); }
static inline void ami_conn_metrics_budget_hit(ami_conn_metrics_t *m) { ami_counter_inc(m->budget_hits); }
static inline void ami_conn_metrics_malformed(ami_conn_metrics_t *m, uint64_t lines)
{
    ami_counter_add(m->malformed_lines, (double)lines);
}

#endif
