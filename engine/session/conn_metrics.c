#include "session/conn_metrics.h"

#include <stdio.h>
#include <string.h>

static ami_counter_t *counter(ami_conn_metrics_t *m, const char *name, const char *help)
{
    if (!m->reg)
        return &m->dummy_counter;
    return ami_metrics_counter(m->reg, name, help, (const char *const[]){"server_key", m->key, NULL}, NULL);
}

static ami_counter_t *counter_by_reason(ami_conn_metrics_t *m, const char *name, const char *help,
                                       ami_status_t why)
{
    if (!m->reg)
        return &m->dummy_counter;
    return ami_metrics_counter(m->reg, name, help,
                               (const char *const[]){"server_key", m->key, "reason", ami_status_name(why), NULL},
                               NULL);
}

void ami_conn_metrics_init(ami_conn_metrics_t *m, ami_metrics_t *reg, const char *server_key)
{
    memset(m, 0, sizeof *m);
    m->reg = reg;
    snprintf(m->key, sizeof m->key, "%s", server_key);
    for (int s = 0; s < AMI_CONN_STATE_COUNT; s++) {
        m->state[s] = reg ? ami_metrics_gauge(reg, "ami_connection_state",
                                              "1 for the state each server connection is in",
                                              (const char *const[]){"server_key", m->key, "state",
                                                                    ami_conn_state_name((ami_conn_state_t)s), NULL},
                                              NULL)
                          : &m->dummy_gauge;
        ami_gauge_set(m->state[s], s == AMI_CONN_DISCONNECTED ? 1 : 0);
    }
    m->reconnects = counter(m, "ami_reconnects_total", "Connection attempts after the first");
    m->login_failures = counter(m, "ami_login_failures_total", "Logins the server refused or did not answer");
    m->heartbeat_failures = counter(m, "ami_heartbeat_failures_total", "Pings that got no Pong in time");
    m->events = counter(m, "ami_events_received_total", "Events received");
    m->protocol_errors = counter(m, "ami_protocol_errors_total", "Streams closed for breaking the AMI protocol");
    m->malformed_lines = counter(m, "ami_malformed_lines_total",
                                 "Malformed lines (no colon, empty key, NUL, lone CR) dropped from messages");
    m->budget_hits = counter(m, "ami_read_budget_hits_total",
                             "Wake-ups that left input for the next loop iteration (the read budget was reached)");
    m->sent = counter(m, "ami_actions_sent_total", "Actions written to the server");
    m->completed = counter(m, "ami_actions_completed_total", "Actions answered successfully");
    if (reg)
        m->latency = ami_metrics_histogram(reg, "ami_action_latency_seconds",
                                           "Time from sending an action to its final answer", NULL, 0,
                                           (const char *const[]){"server_key", m->key, NULL}, NULL);
}

void ami_conn_metrics_deinit(ami_conn_metrics_t *m)
{
    /* Series belong to the registry; show the server as gone. */
    for (int s = 0; s < AMI_CONN_STATE_COUNT; s++)
        ami_gauge_set(m->state[s], 0);
}

void ami_conn_metrics_state(ami_conn_metrics_t *m, ami_conn_state_t from, ami_conn_state_t to)
{
    ami_gauge_set(m->state[from], 0);
    ami_gauge_set(m->state[to], 1);
}

static ami_counter_t *failed_counter(ami_conn_metrics_t *m, ami_status_t why)
{
    if ((unsigned)why >= AMI_STATUS_COUNT)
        why = AMI_E_INVALID;
    if (!m->failed[why])
        m->failed[why] = counter_by_reason(m, "ami_actions_failed_total",
                                           "Actions that failed or were refused, by reason", why);
    return m->failed[why];
}

void ami_conn_metrics_final(ami_conn_metrics_t *m, const ami_pending_note_t *n, int64_t now_ns)
{
    if (n->signal == AMI_PENDING_DONE)
        ami_counter_inc(m->completed);
    else
        ami_counter_inc(failed_counter(m, n->status));
    if (m->latency && n->start_ns && n->msg)
        ami_histogram_observe(m->latency, (double)(now_ns - n->start_ns) / 1e9);
}

void ami_conn_metrics_refused(ami_conn_metrics_t *m, ami_status_t why)
{
    ami_counter_inc(failed_counter(m, why));
}

static void count_by_reason(ami_conn_metrics_t *m, ami_counter_t **slots, const char *name,
                            const char *help, ami_status_t why)
{
    if ((unsigned)why >= AMI_STATUS_COUNT)
        why = AMI_E_IO;
    if (!slots[why])
        slots[why] = counter_by_reason(m, name, help, why);
    ami_counter_inc(slots[why]);
}

void ami_conn_metrics_disconnect(ami_conn_metrics_t *m, ami_status_t why)
{
    count_by_reason(m, m->disconnects, "ami_disconnects_total",
                    "Logged-in sessions lost (closed by the server, the heartbeat, an error), by reason", why);
}

void ami_conn_metrics_connect_failure(ami_conn_metrics_t *m, ami_status_t why)
{
    count_by_reason(m, m->connect_failures, "ami_connect_failures_total",
                    "Connection attempts that ended before login completed, by reason", why);
}
