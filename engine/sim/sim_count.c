/*
 * Events per name, for tools that account for every event (the soak): what
 * the node queued to its sessions, and what the mute_events fault kept from
 * them. A fixed open-addressing table of names, allocated only for nodes
 * made with count_events, so the other nodes pay nothing.
 */
#include <stdbool.h>
#include <string.h>

#include "sim/sim_internal.h"

#define SLOTS 256 /* a power of two; one slot stays free for "(other)" */
#define OTHER "(other)"

#define MAX_RECORDS 65536

struct sim_counts {
    ami_sim_event_count_t slot[SLOTS];
    size_t used;
    ami_sim_session_record_t *records; /* closed sessions, in closing order */
    size_t nrecords, records_cap;
};

int sim_counts_new(ami_sim_node_t *n)
{
    n->counts = ami_calloc(1, sizeof *n->counts);
    return n->counts ? 0 : -1;
}

void sim_counts_free(ami_sim_node_t *n)
{
    if (n->counts)
        ami_free(n->counts->records);
    ami_free(n->counts);
    n->counts = NULL;
}

static uint32_t hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static ami_sim_event_count_t *lookup(sim_counts_t *c, const char *name, size_t len)
{
    if (len >= sizeof c->slot[0].name) {
        name = OTHER;
        len = sizeof OTHER - 1;
    }
    bool other = len == sizeof OTHER - 1 && memcmp(name, OTHER, len) == 0;
    uint32_t i = hash(name, len) & (SLOTS - 1);
    for (size_t probes = 0; probes < SLOTS; probes++, i = (i + 1) & (SLOTS - 1)) {
        ami_sim_event_count_t *e = &c->slot[i];
        if (e->name[0] && strncmp(e->name, name, len) == 0 && e->name[len] == '\0')
            return e;
        if (e->name[0])
            continue;
        if (c->used == SLOTS - 1 && !other)
            break; /* the last free slot is kept for "(other)" */
        memcpy(e->name, name, len);
        e->name[len] = '\0';
        c->used++;
        return e;
    }
    return lookup(c, OTHER, sizeof OTHER - 1);
}

/* The name of an event message ("Event: Name\r\n..."), or NULL. */
static const char *event_name(const char *msg, size_t len, size_t *name_len)
{
    static const char KEY[] = "Event: ";
    if (len < sizeof KEY || memcmp(msg, KEY, sizeof KEY - 1) != 0)
        return NULL;
    const char *name = msg + sizeof KEY - 1;
    const char *eol = memchr(name, '\r', len - (sizeof KEY - 1));
    *name_len = eol ? (size_t)(eol - name) : 0;
    return *name_len ? name : NULL;
}

void sim_count_sent(sim_session_t *s, const char *data, size_t len)
{
    ami_sim_node_t *n = s->node;
    if (!n->counts)
        return;
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *stop = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!stop)
            return; /* half a message (a fault cutting it): never a whole event */
        size_t nl;
        const char *name = event_name(p, (size_t)(stop + 2 - p), &nl);
        if (name) {
            lookup(n->counts, name, nl)->sent++;
            s->events_queued++;
        }
        p = stop + 4;
    }
}

void sim_count_muted(ami_sim_node_t *n, const char *ev, size_t len)
{
    size_t nl;
    const char *name = n->counts ? event_name(ev, len, &nl) : NULL;
    if (name)
        lookup(n->counts, name, nl)->muted++;
}

static ami_sim_session_record_t record_of(const sim_session_t *s)
{
    return (ami_sim_session_record_t){.id = s->id, .events_queued = s->events_queued,
                                      .bytes_written = s->bytes_out,
                                      .bytes_unsent = s->out.len - s->out_pos, .open = !s->closed};
}

void sim_count_session_closed(sim_session_t *s)
{
    sim_counts_t *c = s->node->counts;
    if (!c || c->nrecords == MAX_RECORDS)
        return;
    if (c->nrecords == c->records_cap) {
        size_t cap = c->records_cap ? c->records_cap * 2 : 64;
        ami_sim_session_record_t *grown = ami_realloc(c->records, cap * sizeof *grown);
        if (!grown)
            return;
        c->records = grown;
        c->records_cap = cap;
    }
    c->records[c->nrecords] = record_of(s);
    c->records[c->nrecords++].open = false;
}

size_t ami_sim_node_sessions(const ami_sim_node_t *n, ami_sim_session_record_t *out, size_t max)
{
    if (!n->counts)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < n->counts->nrecords; i++, k++)
        if (k < max)
            out[k] = n->counts->records[i];
    for (const sim_session_t *s = n->sessions; s; s = s->next, k++)
        if (k < max)
            out[k] = record_of(s);
    return k;
}

size_t ami_sim_node_event_counts(const ami_sim_node_t *n, ami_sim_event_count_t *out, size_t max)
{
    if (!n->counts)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < SLOTS; i++) {
        const ami_sim_event_count_t *e = &n->counts->slot[i];
        if (!e->name[0])
            continue;
        if (k < max)
            out[k] = *e;
        k++;
    }
    return k;
}
