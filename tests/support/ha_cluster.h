/*
 * A high-availability cluster of real processes for end-to-end tests and
 * the takeover benchmark: one redis-server (unix socket in a temporary
 * folder), one ami-sim process with two nodes (pbx1, pbx2) making calls,
 * and up to three ami-engine processes (e1, e2, e3) sharing one scripts
 * folder whose script Redirects every inbound call (Context from-pstn) to
 * context "ha-e2e".
 *
 * An observer in this process (an AMI client on its own loop, logged in to
 * both nodes) records every call start (Newchannel whose Uniqueid is its
 * Linkedid) and counts the Redirects each call got (the Newexten into
 * "ha-e2e" that the simulator emits for each one), so a test can prove
 * "once per call, never twice" at the simulator.
 *
 * Ownership is read from each engine's /healthz ("ha pbx1 owned ...").
 * Every wait has a deadline and pumps the observer's loop meanwhile.
 * Test support only: single-threaded, malloc'd, stderr for diagnostics.
 */
#ifndef AMI_TEST_HA_CLUSTER_H
#define AMI_TEST_HA_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proc.h"
#include "redis_server.h"

#define HA_MAX_ENGINES 3
#define HA_MAX_CALLS 20000
#define HA_NSERVERS 2

typedef struct ha_call {
    char uid[40];
    int server;          /* 0 pbx1, 1 pbx2 */
    int64_t started_ms;  /* mono_ms() when the observer saw it */
    bool inbound;
    int redirects;
} ha_call_t;

typedef struct ha_engine {
    char name[8];        /* e1, e2, e3 */
    char config[640];
    char log[720];
    uint16_t mport;
    proc_t proc;
    int runs;
} ha_engine_t;

typedef struct ha_cluster_options {
    int engines;         /* 1..3 */
    uint32_t lease_ms;   /* default 4000 */
    uint32_t renew_ms;   /* default 1000 */
    const char *cps;     /* calls per second per node; default "4" */
    bool no_ha;          /* engines without an ha section */
} ha_cluster_options_t;

typedef struct ha_cluster {
    ha_cluster_options_t opt;
    char dir[512];
    char scripts[600];
    redis_server_t redis;
    proc_t sim;
    uint16_t ports[HA_NSERVERS];
    ha_engine_t engines[HA_MAX_ENGINES];
    struct ev_loop *loop;
    struct ami_client *observer;
    struct ami_metrics *metrics;
    ha_call_t *calls;
    size_t ncalls;
    size_t stray_redirects; /* Redirects of calls the observer never saw start */
    int64_t last_poll_ms;
} ha_cluster_t;

/* Start everything; the engines are started too. 0, or -1 (message on stderr). */
int ha_cluster_start(ha_cluster_t *c, const ha_cluster_options_t *opt);
void ha_cluster_stop(ha_cluster_t *c);

int ha_cluster_engine_start(ha_cluster_t *c, int i);
void ha_cluster_engine_signal(ha_cluster_t *c, int i, int sig);
bool ha_cluster_engine_running(ha_cluster_t *c, int i);

/* Run the observer for ms. */
void ha_cluster_pump(ha_cluster_t *c, uint32_t ms);

/* Which running engine claims to own server s (its /healthz); -1: none.
 * *claims: how many claim it. *epoch: the owner's epoch. */
int ha_cluster_owner(ha_cluster_t *c, int s, int *claims, uint64_t *epoch);
/* Until every server has exactly one owner among the running engines. */
bool ha_cluster_wait_single_owners(ha_cluster_t *c, uint32_t ms);
/* Until an engine other than `not` owns s; its index, or -1. *at_ms when seen. */
int ha_cluster_wait_new_owner(ha_cluster_t *c, int s, int not, uint32_t ms, int64_t *at_ms);
/* Until no running engine owns anything. */
bool ha_cluster_wait_no_owner(ha_cluster_t *c, uint32_t ms);

/* The first line of engine i's log containing every needle (malloc'd), or NULL. */
char *ha_cluster_log_line(ha_cluster_t *c, int i, const char *const *needles);
char *ha_cluster_log_last_line(ha_cluster_t *c, int i, const char *const *needles);
size_t ha_cluster_log_count(ha_cluster_t *c, int i, const char *needle);
/* Print the tail of engine i's log to stderr. */
void ha_cluster_dump(ha_cluster_t *c, int i, const char *why);

#endif
