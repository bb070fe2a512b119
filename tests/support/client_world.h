/*
 * The C client against the in-process simulator, for integration tests
 * (tests/integration/test_client*.c, test_heartbeat.c, ...): one libev loop
 * runs both, over real TCP on 127.0.0.1 with kernel-chosen ports. The world
 * records every state change of every server (count, the loop time of the
 * last entry into each state, the reason), the backoff delays, and, when
 * asked, the log lines (tests/support/log_capture.h: plain malloc, off the
 * engine's allocation account, so memory tests can use it too). Everything
 * is owned by the world and freed by cw_free.
 */
#ifndef AMI_TEST_CLIENT_WORLD_H
#define AMI_TEST_CLIENT_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/client.h"
#include "log_capture.h"
#include "session/conn.h"
#include "sim/sim.h"


typedef struct cworld {
    struct ev_loop *loop;
    ami_sim_t *sim;
    ami_client_t *client;
    ami_metrics_t *metrics;
    ami_logger_t *log;                          /* NULL unless logs are captured */
    int transitions[AMI_CONN_STATE_COUNT];      /* entries into each state, all servers */
    double entered_at[AMI_CONN_STATE_COUNT];    /* ev_now() of the last entry */
    uint32_t backoffs[64];                      /* delay of each entry into backoff */
    size_t nbackoffs;
    char last_reason[AMI_ERR_MSG_MAX];
    log_capture_t logs;                         /* captured lines */
} cworld_t;

typedef struct cw_config {
    ami_route_policy_t route;
    bool capture_logs;          /* INFO and above into w->logs */
} cw_config_t;

cworld_t *cw_new(const cw_config_t *cfg); /* cfg may be NULL */
void cw_free(cworld_t *w);

ami_sim_node_t *cw_add_node(cworld_t *w, const char *name);
/* Short timings for tests: heartbeat 100 ms x 2, backoff 20..200 ms. */
void cw_fast_options(ami_server_options_t *o, const char *key, uint16_t port);
void cw_add_server(cworld_t *w, const ami_server_options_t *o);

/* A loopback port where connections are refused until cw_free: a socket
 * bound there that never listens, so no test running in parallel can take
 * the port meanwhile (tests/support/proc.h refusing_port). */
uint16_t cw_closed_port(void);

/* Run the loop until server i is in state (fails the test after ms). */
void cw_expect_state(cworld_t *w, size_t server, ami_conn_state_t state, uint32_t ms);
bool cw_in_state(cworld_t *w, size_t server, ami_conn_state_t state);
double cw_metric(cworld_t *w, const char *name, const char *const *labels);

/* How many captured log lines contain every needle given (NULL-terminated). */
size_t cw_log_lines(const cworld_t *w, const char *const *needles);

/* An action's result captured for assertions. */
typedef struct outcome {
    int finals;
    ami_pending_signal_t signal;
    ami_status_t status;
    char reason[AMI_ERR_MSG_MAX];
    char name[64];          /* first header value of the final message */
    char probe_value[128];  /* value of the header named probe, if the final message has it */
    const char *probe;      /* set by the test before sending; may be NULL */
} outcome_t;

void cw_capture(void *ud, const ami_pending_note_t *n); /* ud = outcome_t */
bool cw_finished(void *ud);                            /* ud = outcome_t */
int cw_send(cworld_t *w, const char *server, const char *action, outcome_t *o, ami_err_t *err);

#endif
