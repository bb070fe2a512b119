/*
 * The correlation registry's indexes over its slot pool (private to
 * correlation/): an id -> slot hash table (linear probing, backward-shift
 * deletion, so no tombstones pile up), a binary heap of slots by deadline,
 * and the FIFO of actions still waiting for their first response (where a
 * response without an ActionID goes). All three are fixed arrays sized at
 * ami_registry_new; nothing here allocates. registry.c decides what an
 * action is waiting for; this file only finds, orders and unlinks slots.
 */
#include <stdbool.h>

#include "correlation/registry_internal.h"

/* ---- id -> slot table (linear probing, backward-shift deletion) ---------- */

static uint32_t hash_id(const ami_registry_t *r, uint64_t id)
{
    return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & r->table_mask;
}

uint32_t registry_table_find(const ami_registry_t *r, uint64_t id)
{
    for (uint32_t i = hash_id(r, id);; i = (i + 1) & r->table_mask) {
        uint32_t e = r->table[i];
        if (e == 0)
            return NONE;
        if (r->slots[e - 1].id == id)
            return i;
    }
}

void registry_table_insert(ami_registry_t *r, uint32_t slot)
{
    uint32_t i = hash_id(r, r->slots[slot].id);
    while (r->table[i])
        i = (i + 1) & r->table_mask;
    r->table[i] = slot + 1;
}

void registry_table_delete(ami_registry_t *r, uint32_t i)
{
    r->table[i] = 0;
    for (uint32_t j = (i + 1) & r->table_mask; r->table[j]; j = (j + 1) & r->table_mask) {
        uint32_t home = hash_id(r, r->slots[r->table[j] - 1].id);
        /* Move the entry back if its home is not in (i, j]. */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            r->table[i] = r->table[j];
            r->table[j] = 0;
            i = j;
        }
    }
}

/* ---- deadline heap --------------------------------------------------------- */

static bool heap_less(const ami_registry_t *r, uint32_t a, uint32_t b)
{
    return r->slots[r->heap[a]].deadline_ms < r->slots[r->heap[b]].deadline_ms;
}

static void heap_swap(ami_registry_t *r, uint32_t a, uint32_t b)
{
    uint32_t t = r->heap[a];
    r->heap[a] = r->heap[b];
    r->heap[b] = t;
    r->slots[r->heap[a]].heap_idx = a;
    r->slots[r->heap[b]].heap_idx = b;
}

static void heap_up(ami_registry_t *r, uint32_t i)
{
    while (i > 0 && heap_less(r, i, (i - 1) / 2)) {
        heap_swap(r, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(ami_registry_t *r, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        if (l < r->heap_len && heap_less(r, l, m))
            m = l;
        if (l + 1 < r->heap_len && heap_less(r, l + 1, m))
            m = l + 1;
        if (m == i)
            return;
        heap_swap(r, i, m);
        i = m;
    }
}

void registry_heap_push(ami_registry_t *r, uint32_t slot)
{
    uint32_t i = r->heap_len++;
    r->heap[i] = slot;
    r->slots[slot].heap_idx = i;
    heap_up(r, i);
}

void registry_heap_remove(ami_registry_t *r, uint32_t slot)
{
    uint32_t i = r->slots[slot].heap_idx;
    if (i == NONE)
        return;
    r->slots[slot].heap_idx = NONE;
    uint32_t last = --r->heap_len;
    if (i == last)
        return;
    r->heap[i] = r->heap[last];
    r->slots[r->heap[i]].heap_idx = i;
    heap_down(r, i);
    heap_up(r, i);
}

/* ---- FIFO of actions awaiting their first response --------------------------- */

void registry_fifo_push(ami_registry_t *r, uint32_t slot)
{
    slot_t *s = &r->slots[slot];
    s->fifo_next = NONE;
    s->fifo_prev = r->fifo_tail;
    if (r->fifo_tail != NONE)
        r->slots[r->fifo_tail].fifo_next = slot;
    else
        r->fifo_head = slot;
    r->fifo_tail = slot;
    s->in_fifo = true;
}

void registry_fifo_remove(ami_registry_t *r, uint32_t slot)
{
    slot_t *s = &r->slots[slot];
    if (!s->in_fifo)
        return;
    if (s->fifo_prev != NONE)
        r->slots[s->fifo_prev].fifo_next = s->fifo_next;
    else
        r->fifo_head = s->fifo_next;
    if (s->fifo_next != NONE)
        r->slots[s->fifo_next].fifo_prev = s->fifo_prev;
    else
        r->fifo_tail = s->fifo_prev;
    s->fifo_prev = s->fifo_next = NONE;
    s->in_fifo = false;
}

/* ---- all of them ---------------------------------------------------------------- */

/* Unlink a slot from every index and return it to the free stack. */
void registry_release(ami_registry_t *r, uint32_t idx)
{
    slot_t *s = &r->slots[idx];
    uint32_t t = registry_table_find(r, s->id);
    if (t != NONE)
        registry_table_delete(r, t);
    registry_heap_remove(r, idx);
    registry_fifo_remove(r, idx);
    r->reserved_in_use -= s->reserved;
    s->reserved = false;
    s->id = 0;
    r->free_stack[r->nfree++] = idx;
}
