/*
 * A raw AMI peer for the benchmarks: a loopback listener on its own thread
 * (plain blocking-free sockets and poll, none of the engine's code on its
 * send path) that plays just enough of Asterisk for a client to log in,
 * answers every action at once ("Response: Success" with its ActionID),
 * and sends events:
 *
 *   BENCH_PEER_FLOOD   as fast as the socket takes them, the simulator's
 *                      five call events (Newchannel, Newstate, VarSet,
 *                      Hangup, DeviceStateChange), with every per-call
 *                      identifier (Channel, Uniqueid, Linkedid, the VarSet
 *                      value) new in every event and never seen again in
 *                      the run: the stream whose values never repeat.
 *   BENCH_PEER_PACED   `rate` events a second, each a UserEvent carrying
 *                      "Seq: n", sent in small batches on a clock; when an
 *                      action arrives carrying "Seq: n", the time from the
 *                      send() that carried event n's last byte to the
 *                      read() that brought the action's first byte is one
 *                      latency sample.
 *
 * One connection at a time (a new one replaces the old). The peer owns its
 * memory; samples are read after bench_peer_stop. The thread may be pinned
 * to a CPU (cpu >= 0).
 */
#ifndef AMI_BENCH_PEER_H
#define AMI_BENCH_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum bench_peer_mode { BENCH_PEER_FLOOD = 0, BENCH_PEER_PACED } bench_peer_mode_t;

typedef struct bench_peer_config {
    bench_peer_mode_t mode;
    double rate;        /* PACED: events per second */
    int cpu;            /* pin the peer's thread to this CPU; -1: not pinned */
    bool realtime;      /* run the peer's thread at SCHED_FIFO priority */
    bool spin;          /* PACED: never sleep between events (give it a CPU of its own) */
    size_t max_samples; /* PACED: latency samples kept (later ones are counted, not kept) */
} bench_peer_config_t;

typedef struct bench_peer bench_peer_t;

/* NULL on failure (message on stderr). */
bench_peer_t *bench_peer_start(const bench_peer_config_t *cfg);
uint16_t bench_peer_port(const bench_peer_t *p);
/* PACED: start (or restart) keeping latency samples from now on. */
void bench_peer_measure(bench_peer_t *p, bool on);
void bench_peer_stop(bench_peer_t *p);
void bench_peer_free(bench_peer_t *p);

/* After stop and before bench_peer_samples (which sorts them): how the
 * samples over over_ns came, in runs of consecutive actions (a stall of
 * the machine delays every event queued behind it), and the spinning
 * peer's own stalls (its thread not running for more than 50 µs: time the
 * guest's kernel or the host took). */
typedef struct bench_peer_tail {
    uint64_t over, bursts, longest_burst;
    uint64_t peer_stalls, peer_stalled_ns;
} bench_peer_tail_t;
bench_peer_tail_t bench_peer_tail(const bench_peer_t *p, uint32_t over_ns);

/* After stop: latency samples in ns (sorted), how many events were sent
 * while measuring and how many of their actions came back. */
const uint32_t *bench_peer_samples(bench_peer_t *p, size_t *n);
uint64_t bench_peer_sent(const bench_peer_t *p);
uint64_t bench_peer_acked(const bench_peer_t *p);
uint64_t bench_peer_events(const bench_peer_t *p); /* every event sent, warm-up included */
long bench_peer_preempted(const bench_peer_t *p);  /* the peer thread's involuntary switches while measuring */

#endif
