/*
 * A correlation registry under test (tests/unit/test_registry*.c): the
 * registry, an ActionID generator, a metrics registry and a logger whose
 * lines are captured, and every note the registry gives recorded in order.
 * Messages are fed as AMI text through the real parser. Everything here is
 * owned by the world and freed by registry_world_free.
 */
#ifndef AMI_TEST_REGISTRY_WORLD_H
#define AMI_TEST_REGISTRY_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "correlation/registry.h"
#include "log_capture.h"
#include "fixtures.h"
#include "util/buf.h"

#define MAX_NOTES 512

typedef struct seen {
    ami_pending_signal_t signal;
    uint64_t id;
    ami_strategy_t strategy;
    char name[64];      /* first header value of the message, "" if none */
    char message[128];  /* its Message header */
    uint32_t items, dropped;
    bool truncated;
    ami_status_t status;
    char reason[AMI_ERR_MSG_MAX];
} seen_t;

typedef struct world {
    ami_actionid_gen_t ids;
    ami_metrics_t *metrics;
    ami_logger_t *log;
    log_capture_t log_lines; /* every captured line (tests/support/log_capture.h) */
    ami_registry_t *reg;
    seen_t notes[MAX_NOTES];
    size_t nnotes;
} world_t;

/* caps[s] == 0 keeps the registry's default for strategy s; caps may be NULL. */
world_t *registry_world_new(uint32_t max_pending, const uint32_t caps[AMI_STRATEGY_COUNT]);
/* A world whose LIST and AUTO caps are list_cap (0: default). */
world_t *world_new(uint32_t max_pending, uint32_t list_cap);
void world_free(world_t *w);

/* The ami_pending_cb that records into the world (ud = world). */
void record(void *ud, const ami_pending_note_t *n);

uint64_t add_action(world_t *w, const char *action, ami_strategy_t strategy,
                    const char *completion_event, int64_t deadline);

/* Offer every message of a text to the registry; returns how many it took. */
size_t feed_text(world_t *w, const char *text, size_t len);
size_t feed(world_t *w, const char *text);

/* Replace "ActionID: <recorded>" in a recorded session by the ids we registered. */
typedef struct rename {
    const char *recorded;
    uint64_t id;
} rename_t;
char *rewrite_ids(world_t *w, const fixture_t *fx, const rename_t *map, size_t n, size_t *out_len);

/* The DONE or FAILED note of id (fails the test if there is none). */
const seen_t *final_note(const world_t *w, uint64_t id);
size_t count_notes(const world_t *w, uint64_t id, ami_pending_signal_t sig);
double dropped_metric(world_t *w);
char *id_text(world_t *w, uint64_t id, char *buf);

/* The only captured log line that contains `needle` (fails the test if
 * there is none or more than one), copied into out. */
void the_log_line(world_t *w, const char *needle, char *out, size_t out_size);
/* How many captured lines contain needle. */
size_t count_log_lines(world_t *w, const char *needle);

/* A list answer for id: the response, `items` items, and the Complete event if asked. */
void send_list(world_t *w, uint64_t id, int items, bool complete);

#endif
