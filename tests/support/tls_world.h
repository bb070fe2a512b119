/*
 * What the TLS tests share (test_tls.c, test_tls_session.c): a throw-away
 * PKI made by make_certs.sh for the whole test program, and a world of one
 * loop with the simulator and the C client on it, whose log lines that
 * mention TLS are kept for assertions.
 *
 * Test support only: single-threaded; failures end the test through cmocka.
 */
#ifndef AMI_TEST_TLS_WORLD_H
#define AMI_TEST_TLS_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/client.h"
#include "log_capture.h"
#include "session/conn.h"
#include "sim/sim.h"

typedef struct tls_world {
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_sim_t *sim;
    ami_client_t *client;
    ami_metrics_t *metrics;
    int transitions[AMI_CONN_STATE_COUNT];
    char last_reason[AMI_ERR_MSG_MAX];
    log_capture_t logs; /* every log line (engine and simulator) */
} tls_world_t;

/* WARNING lines saying certificate verification is off. */
size_t tw_verify_off_warnings(const tls_world_t *w);

/* cmocka group setup/teardown: make the PKI / remove it (and kill any program left running). */
int tw_make_pki(void **state);
int tw_remove_pki(void **state);
/* A file of the PKI folder (a rotating buffer of 8 paths). */
const char *tw_pki(const char *name);
void tw_copy_file(const char *from, const char *to);

tls_world_t *tw_new(void);
void tw_free(tls_world_t *w);

typedef struct tw_node_tls {
    const char *cert;      /* file name in the PKI folder */
    const char *client_ca; /* require client certificates signed by it */
    bool tls12_only;
} tw_node_tls_t;

/* A simulator node "pbx1": plain with t NULL, else TLS as t says. */
ami_sim_node_t *tw_add_node(tls_world_t *w, const tw_node_tls_t *t);
ami_sim_node_t *tw_add_tls_node(tls_world_t *w, const char *cert);

/* Fast timers; with tls, TLS verified against the test CA. */
void tw_options(ami_server_options_t *o, const char *key, uint16_t port, bool tls);
void tw_add_server(tls_world_t *w, ami_server_options_t *o);

void tw_expect_state(tls_world_t *w, size_t server, ami_conn_state_t state, uint32_t ms);
const char *tw_last_error(tls_world_t *w, size_t server);
void tw_expect_error(tls_world_t *w, size_t server, const char *fragment);
double tw_metric(tls_world_t *w, const char *name, const char *const *labels);
/* ami_tls_handshake_failures_total{server_key="pbx1", reason} */
double tw_failures(tls_world_t *w, const char *reason);
/* A Ping to server answered within 3 s. */
void tw_ping_ok(tls_world_t *w, const char *server);
/* Start; server 0 backs off with fragment in its reason and never logs in. */
void tw_expect_refused(tls_world_t *w, ami_sim_node_t *n, const char *fragment);

#endif
