/*
 * The correlation registry's slot pool and its indexes (private to
 * correlation/): the slots in chunks allocated as actions need them (an
 * idle server holds one chunk, not max_pending slots), an id -> slot hash
 * table (linear probing, backward-shift deletion, so no tombstones pile
 * up), the deadlines (a list for those that came in order, a binary heap
 * for the others), and the FIFO of actions still
 * waiting for their first response (where a response without an ActionID
 * goes). Only registry_pool_grow allocates, when every allocated slot is
 * taken; the table, the heap and the free stack grow with it, so none
 * fills. registry.c decides what an action is waiting for; this file only
 * finds, orders and unlinks slots.
 */
#include <stdbool.h>
#include <string.h>

#include "correlation/registry_internal.h"
#include "util/alloc.h"

/* ---- the slot pool ------------------------------------------------------------ */

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

/* A table twice the slots allocated, every live slot indexed again. */
static int rehash(ami_registry_t *r, uint32_t slots)
{
    uint32_t size = pow2_at_least(slots * 2);
    if (r->table && size == r->table_mask + 1)
        return 0;
    uint32_t *table = ami_calloc(size, sizeof *table);
    if (!table)
        return -1;
    ami_free(r->table);
    r->table = table;
    r->table_mask = size - 1;
    for (uint32_t i = 0; i < r->ncap; i++)
        if (slot_at(r, i)->id)
            registry_table_insert(r, i);
    return 0;
}

int registry_pool_init(ami_registry_t *r)
{
    uint32_t nchunks = (r->nslots + SLOT_CHUNK - 1) / SLOT_CHUNK;
    r->chunks = ami_calloc(nchunks, sizeof *r->chunks);
    return r->chunks ? registry_pool_grow(r) : -1;
}

void registry_pool_free(ami_registry_t *r)
{
    for (uint32_t c = 0; r->chunks && c < (r->ncap + SLOT_CHUNK - 1) / SLOT_CHUNK; c++)
        ami_free(r->chunks[c]);
    ami_free(r->chunks);
    ami_free(r->free_stack);
    ami_free(r->heap);
    ami_free(r->table);
}

/* The last chunk may be short: the pool never holds more than nslots. */
int registry_pool_grow(ami_registry_t *r)
{
    if (r->ncap >= r->nslots)
        return -1;
    uint32_t add = r->nslots - r->ncap < SLOT_CHUNK ? r->nslots - r->ncap : SLOT_CHUNK;
    uint32_t cap = r->ncap + add;
    slot_t *chunk = ami_calloc(add, sizeof *chunk);
    uint32_t *free_stack = chunk ? ami_realloc(r->free_stack, cap * sizeof *free_stack) : NULL;
    if (free_stack)
        r->free_stack = free_stack;
    heap_entry_t *heap = free_stack ? ami_realloc(r->heap, cap * sizeof *heap) : NULL;
    if (heap)
        r->heap = heap;
    if (!heap || rehash(r, cap) < 0) {
        ami_free(chunk); /* the larger arrays stay: they only have room to spare */
        return -1;
    }
    r->chunks[r->ncap >> SLOT_CHUNK_SHIFT] = chunk;
    /* Lowest index on top: slots are taken in order. */
    for (uint32_t i = cap; i > r->ncap; i--)
        r->free_stack[r->nfree++] = i - 1;
    r->ncap = cap;
    return 0;
}

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
        if (slot_at(r, e - 1)->id == id)
            return i;
    }
}

void registry_table_insert(ami_registry_t *r, uint32_t slot)
{
    uint32_t i = hash_id(r, slot_at(r, slot)->id);
    while (r->table[i])
        i = (i + 1) & r->table_mask;
    r->table[i] = slot + 1;
}

void registry_table_delete(ami_registry_t *r, uint32_t i)
{
    r->table[i] = 0;
    for (uint32_t j = (i + 1) & r->table_mask; r->table[j]; j = (j + 1) & r->table_mask) {
        uint32_t home = hash_id(r, slot_at(r, r->table[j] - 1)->id);
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

/* Entries carry their deadline: ordering them reads the heap alone, not
 * the slots it names. Sifting moves a hole rather than swapping. */
static void heap_place(ami_registry_t *r, uint32_t i, heap_entry_t e)
{
    r->heap[i] = e;
    slot_at(r, e.slot)->heap_idx = i;
}

static void heap_up(ami_registry_t *r, uint32_t i, heap_entry_t e)
{
    while (i > 0 && e.deadline_ms < r->heap[(i - 1) / 2].deadline_ms) {
        heap_place(r, i, r->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_place(r, i, e);
}

/* 1 if e moved down from i, 0 if i is its place (then it may belong higher). */
static int heap_down(ami_registry_t *r, uint32_t i, heap_entry_t e)
{
    uint32_t from = i;
    for (;;) {
        uint32_t l = 2 * i + 1, m = l;
        if (l >= r->heap_len)
            break;
        if (l + 1 < r->heap_len && r->heap[l + 1].deadline_ms < r->heap[l].deadline_ms)
            m = l + 1;
        if (!(r->heap[m].deadline_ms < e.deadline_ms))
            break;
        heap_place(r, i, r->heap[m]);
        i = m;
    }
    heap_place(r, i, e);
    return i != from;
}

static void heap_remove(ami_registry_t *r, uint32_t i)
{
    uint32_t last = --r->heap_len;
    if (i == last)
        return;
    heap_entry_t e = r->heap[last];
    if (!heap_down(r, i, e))
        heap_up(r, i, e);
}

/* ---- deadlines: a sorted list, the heap for the rest ---------------------------- */

/* Most actions of a connection share one timeout, so their deadlines come
 * in order: those go to the back of a list that stays sorted, in and out
 * in a few instructions (a heap of a thousand pending actions took ~300 to
 * take out its top, on every answer). An action due before the list's
 * last goes into the heap. The first due is the earlier of the list's head
 * and the heap's top. */
void registry_deadline_add(ami_registry_t *r, uint32_t slot)
{
    slot_t *s = slot_at(r, slot);
    if (r->dl_tail != NONE && slot_at(r, r->dl_tail)->deadline_ms > s->deadline_ms) {
        heap_up(r, r->heap_len++, (heap_entry_t){s->deadline_ms, slot});
        return;
    }
    s->heap_idx = IN_DEADLINE_LIST;
    s->dl_prev = r->dl_tail;
    s->dl_next = NONE;
    if (r->dl_tail != NONE)
        slot_at(r, r->dl_tail)->dl_next = slot;
    else
        r->dl_head = slot;
    r->dl_tail = slot;
}

static void list_remove(ami_registry_t *r, slot_t *s)
{
    if (s->dl_prev != NONE)
        slot_at(r, s->dl_prev)->dl_next = s->dl_next;
    else
        r->dl_head = s->dl_next;
    if (s->dl_next != NONE)
        slot_at(r, s->dl_next)->dl_prev = s->dl_prev;
    else
        r->dl_tail = s->dl_prev;
}

void registry_deadline_remove(ami_registry_t *r, uint32_t slot)
{
    slot_t *s = slot_at(r, slot);
    uint32_t i = s->heap_idx;
    s->heap_idx = NONE;
    if (i == IN_DEADLINE_LIST)
        list_remove(r, s);
    else if (i != NONE)
        heap_remove(r, i);
}

uint32_t registry_deadline_first(const ami_registry_t *r, int64_t *deadline_ms)
{
    uint32_t first = NONE;
    if (r->dl_head != NONE) {
        first = r->dl_head;
        *deadline_ms = slot_at(r, first)->deadline_ms;
    }
    if (r->heap_len && (first == NONE || r->heap[0].deadline_ms < *deadline_ms)) {
        first = r->heap[0].slot;
        *deadline_ms = r->heap[0].deadline_ms;
    }
    return first;
}

/* ---- FIFO of actions awaiting their first response --------------------------- */

void registry_fifo_push(ami_registry_t *r, uint32_t slot)
{
    slot_t *s = slot_at(r, slot);
    s->fifo_next = NONE;
    s->fifo_prev = r->fifo_tail;
    if (r->fifo_tail != NONE)
        slot_at(r, r->fifo_tail)->fifo_next = slot;
    else
        r->fifo_head = slot;
    r->fifo_tail = slot;
    s->in_fifo = true;
}

void registry_fifo_remove(ami_registry_t *r, uint32_t slot)
{
    slot_t *s = slot_at(r, slot);
    if (!s->in_fifo)
        return;
    if (s->fifo_prev != NONE)
        slot_at(r, s->fifo_prev)->fifo_next = s->fifo_next;
    else
        r->fifo_head = s->fifo_next;
    if (s->fifo_next != NONE)
        slot_at(r, s->fifo_next)->fifo_prev = s->fifo_prev;
    else
        r->fifo_tail = s->fifo_prev;
    s->fifo_prev = s->fifo_next = NONE;
    s->in_fifo = false;
}

/* ---- all of them ---------------------------------------------------------------- */

/* Unlink a slot from every index and return it to the free stack. */
void registry_release(ami_registry_t *r, uint32_t idx)
{
    slot_t *s = slot_at(r, idx);
    uint32_t t = registry_table_find(r, s->id);
    if (t != NONE)
        registry_table_delete(r, t);
    registry_deadline_remove(r, idx);
    registry_fifo_remove(r, idx);
    r->reserved_in_use -= s->reserved;
    s->reserved = false;
    s->id = 0;
    r->free_stack[r->nfree++] = idx;
}
