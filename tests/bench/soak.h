/*
 * The soak's parts (soak.c runs them; see its header for what it proves):
 *   soak_sim.c      the simulated cluster in a child process, driven over a
 *                   socketpair (freeze a node, thaw it, quiet, report counts)
 *   soak_account.c  the engine side of the exact accounting: every action by
 *                   ActionID, every event by name, the list actions' items
 *   soak_trend.c    memory, RSS and descriptor samples, their least-squares
 *                   slopes and troughs
 * A tool, not the engine: plain malloc, one thread (the loop's).
 */
#ifndef AMI_SOAK_H
#define AMI_SOAK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cluster/client.h"
#include "session/conn.h"
#include "sim/sim.h"

#define SOAK_NODES 2
#define SOAK_MAX_NAMES 128

/* ---- soak_sim.c ---------------------------------------------------------------------- */

typedef struct soak_sim {
    pid_t pid[SOAK_NODES]; /* one child per node */
    int ctl[SOAK_NODES];   /* our ends of the control socketpairs */
    uint16_t ports[SOAK_NODES];
    bool stopped[SOAK_NODES]; /* frozen by SIGSTOP right now */
} soak_sim_t;

typedef struct soak_node_report {
    ami_sim_node_stats_t stats;
    ami_sim_event_count_t ev[SOAK_MAX_NAMES];
    size_t nev;
    ami_sim_session_record_t *sess; /* by id (accepting order); malloc'd */
    size_t nsess, sess_cap;
} soak_node_report_t;

/* Fork the simulators (a node each, cps calls/s, counting events) before
 * any thread exists; 0 once every node listens, -1 after saying why. */
int soak_sim_start(soak_sim_t *s, double cps, uint32_t call_duration_ms);
/* Node i says nothing more: by SIGSTOP (stop) or by the all_silent +
 * mute_events faults (see soak_sim.c). */
void soak_sim_freeze(soak_sim_t *s, size_t i, bool stop);
/* Node i speaks again, however it was frozen. */
void soak_sim_thaw(soak_sim_t *s, size_t i);
/* Every node stops sending events (answers still go); waits for the ack. 0 or -1. */
int soak_sim_quiet(soak_sim_t *s);
/* The nodes' statistics, events per name and sessions. 0 or -1; free it
 * with soak_sim_report_free either way. */
int soak_sim_report(soak_sim_t *s, soak_node_report_t out[SOAK_NODES]);
void soak_sim_report_free(soak_node_report_t out[SOAK_NODES]);
void soak_sim_stop(soak_sim_t *s);

/* ---- soak_account.c ------------------------------------------------------------------ */

typedef struct soak_count {
    char name[48];
    uint64_t sent, done, failed, cancelled; /* actions; events use `sent` only */
} soak_count_t;

typedef struct soak_list_rec {
    uint8_t finals;
    bool done;
    bool items_match; /* DONE: the items delivered equal the list's ListItems */
} soak_list_rec_t;

/* One session of a connection, as the engine saw it: from a banner to the
 * next one. */
typedef struct soak_session {
    uint64_t events;
    bool heartbeat_closed; /* ended by "Max heartbeat failures" */
} soak_session_t;

typedef struct soak_account {
    uint8_t *state; /* by ActionID sequence: 0 unknown, 1 sent, 2 resolved, 3 cancelled */
    size_t cap;
    uint64_t sent, resolved, cancelled;
    uint64_t twice;       /* resolved or cancelled again, or sent twice */
    uint64_t stray;       /* resolved or cancelled without having been sent */
    soak_count_t actions[SOAK_MAX_NAMES];
    size_t nactions;
    soak_count_t events[SOAK_NODES][SOAK_MAX_NAMES]; /* received, by node */
    size_t nevents[SOAK_NODES];
    uint64_t pings_answered;
    soak_session_t *sessions[SOAK_NODES];
    size_t nsessions[SOAK_NODES], sessions_cap[SOAK_NODES];
    /* the CoreShowChannels the soak sends itself */
    soak_list_rec_t *lists;
    size_t nlists, lists_cap, lists_open;
    uint64_t list_items;
    ami_client_t *client;
} soak_account_t;

/* Observe every connection of the client (before it starts). */
int soak_account_attach(soak_account_t *a, ami_client_t *client);
void soak_account_free(soak_account_t *a);
/* Send CoreShowChannels to server i, tracked. 0, or -1 when refused at once. */
int soak_account_list(soak_account_t *a, size_t server);
/* Server i's current session ended by the heartbeat (a forced disconnect). */
void soak_account_heartbeat_closed(soak_account_t *a, size_t server);
/* Actions sent and not yet resolved or cancelled. */
uint64_t soak_account_open(const soak_account_t *a);
/* Print the action and list accounting; true when it is exact. */
bool soak_account_actions_report(const soak_account_t *a);
/* Print events per node and name against the simulator's; true when exact. */
bool soak_account_events_report(const soak_account_t *a, const soak_node_report_t sim[SOAK_NODES]);
const soak_count_t *soak_account_action(const soak_account_t *a, const char *name);

/* ---- soak_trend.c -------------------------------------------------------------------- */

typedef struct soak_sample {
    double t;           /* seconds since the start */
    int64_t live;       /* ami_alloc_live_bytes: C and Lua heaps */
    int64_t lua;        /* the Lua heaps */
    int64_t buffers;    /* the connections' parser and write buffers (kept at their high water) */
    long rss_kib;
    long fds;
    uint64_t cycles;    /* forced heartbeat disconnects so far */
} soak_sample_t;

typedef struct soak_trend {
    soak_sample_t *v;
    size_t n, cap;
} soak_trend_t;

int soak_trend_add(soak_trend_t *tr, const soak_sample_t *s);
void soak_trend_free(soak_trend_t *tr);
long soak_open_fds(void);

/* Verdict on the samples: print every series (first, min, max, last, slope
 * per hour) and the trough growth of the C engine per disconnect cycle.
 * judge_slopes: the run is long enough for slopes to mean something.
 * Returns true when nothing grew. */
bool soak_trend_report(const soak_trend_t *tr, bool judge_slopes, size_t tail_min);

#endif
