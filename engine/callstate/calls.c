/*
 * Calls: the channels of a server grouped by Linkedid and by bridge, with
 * a union-find over the channels (oldest first) and one open-addressing
 * table of the keys seen. Each component's root is its oldest channel, so
 * calls come numbered in the order of their oldest channel. The workspace
 * grows to the largest table seen and is reused: O(channels) per call, no
 * allocation once warm.
 */
#include <string.h>

#include "callstate/callstate_internal.h"
#include "util/alloc.h"

void cs_calls_ws_free(cs_calls_ws_t *ws)
{
    ami_free(ws->chans);
    ami_free(ws->call_of);
    ami_free(ws->parent);
    ami_free(ws->keys);
    ami_free(ws->key_hash);
    memset(ws, 0, sizeof *ws);
}

static bool reserve(cs_calls_ws_t *ws, size_t n)
{
    size_t key_cap = 16;
    while (key_cap < 4 * n)
        key_cap *= 2;
    if (n > ws->cap) {
        const ami_chan_t **chans = ami_realloc(ws->chans, n * sizeof *chans);
        if (chans)
            ws->chans = chans;
        uint32_t *call_of = ami_realloc(ws->call_of, n * sizeof *call_of);
        if (call_of)
            ws->call_of = call_of;
        uint32_t *parent = ami_realloc(ws->parent, n * sizeof *parent);
        if (parent)
            ws->parent = parent;
        if (!chans || !call_of || !parent)
            return false;
        ws->cap = n;
    }
    if (key_cap > ws->key_cap) {
        uint32_t *keys = ami_realloc(ws->keys, key_cap * sizeof *keys);
        if (keys)
            ws->keys = keys;
        uint32_t *hashes = ami_realloc(ws->key_hash, key_cap * sizeof *hashes);
        if (hashes)
            ws->key_hash = hashes;
        if (!keys || !hashes)
            return false;
        ws->key_cap = key_cap;
    }
    return true;
}

static uint32_t find(uint32_t *parent, uint32_t i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void join(uint32_t *parent, uint32_t a, uint32_t b)
{
    a = find(parent, a);
    b = find(parent, b);
    if (a < b)
        parent[b] = a;
    else if (b < a)
        parent[a] = b;
}

/* Join channel i with the first channel that had the same value of f. */
static void by_key(cs_calls_ws_t *ws, uint32_t i, ami_chan_field_t f)
{
    size_t len;
    const char *v = ami_chan_str(ws->chans[i], f, &len);
    if (len == 0)
        return;
    uint32_t h = cs_hash(v, len) ^ (uint32_t)f * 0x9e3779b9u;
    size_t mask = ws->key_cap - 1;
    for (size_t p = h & mask;; p = (p + 1) & mask) {
        if (ws->keys[p] == 0) {
            ws->keys[p] = i + 1;
            ws->key_hash[p] = h;
            return;
        }
        if (ws->key_hash[p] != h)
            continue;
        size_t olen;
        const char *o = ami_chan_str(ws->chans[ws->keys[p] - 1], f, &olen);
        if (olen == len && memcmp(o, v, len) == 0) {
            join(ws->parent, i, ws->keys[p] - 1);
            return;
        }
    }
}

const ami_calls_view_t *cs_calls_group(cs_calls_ws_t *ws, const cs_table_t *t)
{
    size_t n = t->count;
    if (!reserve(ws, n))
        return NULL;
    memset(ws->keys, 0, ws->key_cap * sizeof *ws->keys);
    uint32_t i = 0;
    for (const cs_slot_t *s = t->head; s; s = s->next, i++) {
        ws->chans[i] = s->rec;
        ws->parent[i] = i;
    }
    for (i = 0; i < n; i++) {
        by_key(ws, i, AMI_CHAN_LINKEDID);
        by_key(ws, i, AMI_CHAN_BRIDGE);
    }
    uint32_t ncalls = 0;
    for (i = 0; i < n; i++) {
        uint32_t root = find(ws->parent, i);
        ws->call_of[i] = root == i ? ncalls++ : ws->call_of[root];
    }
    ws->view = (ami_calls_view_t){.nchans = n, .ncalls = ncalls, .chans = ws->chans, .call_of = ws->call_of};
    return &ws->view;
}
