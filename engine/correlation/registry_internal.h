/*
 * Private to correlation/: the registry's structure, shared by registry.c
 * (strategies, routing, failure paths) and registry_index.c (the slot pool,
 * the id table, the deadline heap and the first-response FIFO over it). The
 * registry owns every array here. Slots live in chunks of SLOT_CHUNK that
 * are allocated as actions need them, up to nslots, and never move (a
 * callback may add actions while a note points into its slot); they are
 * named by their index (slot_at); NONE means no slot. Loop thread only.
 */
#ifndef AMI_CORRELATION_REGISTRY_INTERNAL_H
#define AMI_CORRELATION_REGISTRY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "correlation/registry.h"

#define NONE UINT32_MAX
#define IN_DEADLINE_LIST (UINT32_MAX - 1) /* heap_idx of a slot in the deadline list */

typedef enum phase {
    PHASE_AWAIT_RESPONSE = 0, /* in the FIFO of actions waiting for a first response */
    PHASE_IN_LIST,            /* list opened; items until the Complete event */
    PHASE_AWAIT_EVENT         /* response seen; waiting for the completion event */
} phase_t;

typedef struct slot {
    uint64_t id; /* 0: free */
    ami_pending_cb cb;
    void *ud;
    int64_t deadline_ms;
    uint32_t timeout_ms;
    uint32_t items;
    uint32_t dropped;
    uint32_t cap;
    uint32_t heap_idx; /* in the deadline heap; IN_DEADLINE_LIST; NONE: no deadline kept */
    uint32_t dl_prev;  /* in the deadline list */
    uint32_t dl_next;
    uint32_t fifo_prev;
    uint32_t fifo_next;
    uint32_t epoch;
    int64_t start_ns;
    uint8_t strategy; /* as resolved */
    uint8_t phase;
    bool in_fifo;     /* linked in the first-response FIFO */
    bool reserved;    /* holds one of the AMI_REGISTRY_RESERVED slots */
    char action[AMI_REGISTRY_NAME_MAX + 1];
    char completion_event[AMI_REGISTRY_NAME_MAX + 1];
} slot_t;

typedef struct heap_entry {
    int64_t deadline_ms;
    uint32_t slot;
} heap_entry_t;

#define SLOT_CHUNK_SHIFT 6
#define SLOT_CHUNK (1u << SLOT_CHUNK_SHIFT)

struct ami_registry {
    slot_t **chunks;          /* nslots / SLOT_CHUNK (rounded up) pointers, the first ncap / SLOT_CHUNK set */
    uint32_t ncap;            /* slots allocated so far; the free stack and heap hold as many */
    uint32_t nslots;          /* max_pending + AMI_REGISTRY_RESERVED: the bound */
    uint32_t max_pending;
    uint32_t reserved_in_use;
    uint32_t *free_stack;
    uint32_t nfree;
    uint32_t *table; /* id -> slot index + 1; 0 empty; linear probing */
    uint32_t table_mask;
    heap_entry_t *heap; /* slots ordered by deadline, those not in the list */
    uint32_t heap_len;
    uint32_t dl_head;   /* the deadline list: slots whose deadlines came in order, */
    uint32_t dl_tail;   /* earliest first */
    uint32_t fifo_head;
    uint32_t fifo_tail;
    uint32_t epoch;
    uint32_t caps[AMI_STRATEGY_COUNT];
    char server_key[64];
    const ami_actionid_gen_t *ids;
    ami_logger_t *log;
    ami_pending_cb on_final;
    void *on_final_ud;
    ami_counter_t *dropped_counter;
    ami_registry_stats_t stats;
};

static inline slot_t *slot_at(const ami_registry_t *r, uint32_t idx)
{
    return &r->chunks[idx >> SLOT_CHUNK_SHIFT][idx & (SLOT_CHUNK - 1)];
}

/* ---- registry_index.c ------------------------------------------------------------ */

/* The pool with its first chunk (enough for a session's login and
 * heartbeat), bounded by r->nslots. 0, or -1 out of memory. */
int registry_pool_init(ami_registry_t *r);
void registry_pool_free(ami_registry_t *r);
/* One more chunk, its slots on the free stack, the heap and the id table
 * grown to match. 0, or -1 at the bound or out of memory (nothing changed). */
int registry_pool_grow(ami_registry_t *r);

/* The table position holding id (its slot is r->table[pos] - 1), or NONE. */
uint32_t registry_table_find(const ami_registry_t *r, uint64_t id);
/* Index slot by its id; the table must not hold that id yet. */
void registry_table_insert(ami_registry_t *r, uint32_t slot);
/* Empty table position i (from registry_table_find), shifting followers back. */
void registry_table_delete(ami_registry_t *r, uint32_t i);
/* Keep slot's deadline (its deadline_ms is set): at the back of the
 * deadline list if it is due no earlier than the list's last, else in the
 * deadline heap. */
void registry_deadline_add(ami_registry_t *r, uint32_t slot);
/* Forget slot's deadline; nothing if none is kept. */
void registry_deadline_remove(ami_registry_t *r, uint32_t slot);
/* The slot due first and its deadline, or NONE when no deadline is kept. */
uint32_t registry_deadline_first(const ami_registry_t *r, int64_t *deadline_ms);
/* Append slot to the first-response FIFO. */
void registry_fifo_push(ami_registry_t *r, uint32_t slot);
/* Take slot out of the FIFO. Idempotent: a slot already out is left alone
 * (a response unlinks it, then finish() releases it and unlinks again). */
void registry_fifo_remove(ami_registry_t *r, uint32_t slot);
/* Unlink slot from every index and return it to the free stack. */
void registry_release(ami_registry_t *r, uint32_t slot);

#endif
