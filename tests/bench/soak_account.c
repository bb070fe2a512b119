/*
 * The engine side of the soak's accounting, through the connection observer
 * (session/conn.h): every action by its ActionID sequence (sent once, then
 * resolved or cancelled exactly once), actions and events by name, and the
 * CoreShowChannels the soak sends itself (each list's items against the
 * ListItems its Complete event announces).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "soak.h"

enum { UNKNOWN = 0, SENT, RESOLVED, CANCELLED };

static soak_count_t *count_of(soak_count_t *table, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    if (*n == SOAK_MAX_NAMES)
        return &table[SOAK_MAX_NAMES - 1]; /* the last row takes the overflow */
    soak_count_t *c = &table[(*n)++];
    snprintf(c->name, sizeof c->name, "%s", name);
    return c;
}

const soak_count_t *soak_account_action(const soak_account_t *a, const char *name)
{
    for (size_t i = 0; i < a->nactions; i++)
        if (strcmp(a->actions[i].name, name) == 0)
            return &a->actions[i];
    return NULL;
}

static bool reserve(soak_account_t *a, uint64_t id)
{
    if (id < a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 4096;
    while (cap <= id)
        cap *= 2;
    uint8_t *grown = realloc(a->state, cap);
    if (!grown)
        return false;
    memset(grown + a->cap, 0, cap - a->cap);
    a->state = grown;
    a->cap = cap;
    return true;
}

static size_t server_of(const soak_account_t *a, ami_conn_t *c)
{
    for (size_t i = 0; i < SOAK_NODES; i++)
        if (ami_client_conn(a->client, i) == c)
            return i;
    return 0;
}

static void new_session(soak_account_t *a, size_t i)
{
    if (a->nsessions[i] == a->sessions_cap[i]) {
        size_t cap = a->sessions_cap[i] ? a->sessions_cap[i] * 2 : 256;
        soak_session_t *grown = realloc(a->sessions[i], cap * sizeof *grown);
        if (!grown)
            abort();
        a->sessions[i] = grown;
        a->sessions_cap[i] = cap;
    }
    a->sessions[i][a->nsessions[i]++] = (soak_session_t){0};
}

static void on_message(void *ud, ami_conn_t *c, const ami_msg_t *msg)
{
    soak_account_t *a = ud;
    size_t i = server_of(a, c);
    if (msg->kind == AMI_MSG_BANNER)
        new_session(a, i);
    if (msg->kind != AMI_MSG_EVENT)
        return;
    count_of(a->events[i], &a->nevents[i], ami_msg_name(msg))->sent++;
    if (a->nsessions[i])
        a->sessions[i][a->nsessions[i] - 1].events++;
}

void soak_account_heartbeat_closed(soak_account_t *a, size_t server)
{
    if (a->nsessions[server])
        a->sessions[server][a->nsessions[server] - 1].heartbeat_closed = true;
}

static void on_sent(void *ud, ami_conn_t *c, uint64_t id, const char *action)
{
    (void)c;
    soak_account_t *a = ud;
    if (!reserve(a, id)) {
        a->twice++; /* cannot track it: count it against exactness */
        return;
    }
    if (a->state[id] != UNKNOWN)
        a->twice++;
    a->state[id] = SENT;
    a->sent++;
    count_of(a->actions, &a->nactions, action)->sent++;
}

static void settle(soak_account_t *a, uint64_t id, const char *action, bool done)
{
    if (id >= a->cap || a->state[id] == UNKNOWN) {
        a->stray++;
        return;
    }
    if (a->state[id] != SENT) {
        a->twice++;
        return;
    }
    a->state[id] = RESOLVED;
    a->resolved++;
    soak_count_t *c = count_of(a->actions, &a->nactions, action);
    if (done)
        c->done++;
    else
        c->failed++;
}

static void on_final(void *ud, ami_conn_t *c, const ami_pending_note_t *n)
{
    (void)c;
    soak_account_t *a = ud;
    settle(a, n->id, n->action ? n->action : "?", n->signal == AMI_PENDING_DONE);
    if (n->signal == AMI_PENDING_DONE && n->action && strcmp(n->action, "Ping") == 0)
        a->pings_answered++;
}

static void on_cancel(void *ud, ami_conn_t *c, uint64_t id)
{
    (void)c;
    soak_account_t *a = ud;
    if (id >= a->cap || a->state[id] == UNKNOWN) {
        a->stray++;
        return;
    }
    if (a->state[id] != SENT) {
        a->twice++;
        return;
    }
    a->state[id] = CANCELLED;
    a->cancelled++;
}

int soak_account_attach(soak_account_t *a, ami_client_t *client)
{
    a->client = client;
    ami_conn_observer_t obs = {on_message, on_sent, on_final, on_cancel, a};
    for (size_t i = 0; i < ami_client_server_count(client); i++)
        ami_conn_set_observer(ami_client_conn(client, i), &obs);
    return reserve(a, 1) ? 0 : -1;
}

void soak_account_free(soak_account_t *a)
{
    for (size_t i = 0; a->client && i < ami_client_server_count(a->client); i++)
        ami_conn_set_observer(ami_client_conn(a->client, i), NULL);
    free(a->state);
    free(a->lists);
    a->state = NULL;
    a->lists = NULL;
    for (size_t i = 0; i < SOAK_NODES; i++) {
        free(a->sessions[i]);
        a->sessions[i] = NULL;
    }
}

uint64_t soak_account_open(const soak_account_t *a)
{
    return a->sent - a->resolved - a->cancelled;
}

/* ---- the soak's own list actions ------------------------------------------------------ */

/* The list callbacks find the account here and their record by index (the
 * records move when they grow): one account per process. */
static soak_account_t *lists_account;

static void on_list(void *ud, const ami_pending_note_t *n)
{
    soak_account_t *a = lists_account;
    size_t idx = (size_t)(uintptr_t)ud;
    if (n->signal != AMI_PENDING_DONE && n->signal != AMI_PENDING_FAILED)
        return;
    soak_list_rec_t *r = &a->lists[idx];
    if (r->finals++ == 0)
        a->lists_open--;
    if (n->signal == AMI_PENDING_DONE) {
        const char *announced = n->msg ? ami_msg_get(n->msg, "ListItems") : NULL;
        r->done = true;
        r->items_match = announced && strtoul(announced, NULL, 10) == n->items && !n->truncated;
        a->list_items += n->items;
    }
}

int soak_account_list(soak_account_t *a, size_t server)
{
    if (a->nlists == a->lists_cap) {
        size_t cap = a->lists_cap ? a->lists_cap * 2 : 1024;
        soak_list_rec_t *grown = realloc(a->lists, cap * sizeof *grown);
        if (!grown)
            return -1;
        a->lists = grown;
        a->lists_cap = cap;
    }
    lists_account = a;
    a->lists[a->nlists] = (soak_list_rec_t){0};
    ami_action_req_t req = {.name = "CoreShowChannels", .strategy = AMI_STRATEGY_LIST};
    if (ami_client_send(a->client, ami_client_server_key(a->client, server), &req, on_list,
                        (void *)(uintptr_t)a->nlists, NULL, NULL) < 0)
        return -1;
    a->nlists++;
    a->lists_open++;
    return 0;
}

/* ---- reports --------------------------------------------------------------------------- */

bool soak_account_actions_report(const soak_account_t *a)
{
    uint64_t lists_done = 0, lists_failed = 0, lists_twice = 0, lists_bad_items = 0, lists_open = 0;
    for (size_t i = 0; i < a->nlists; i++) {
        const soak_list_rec_t *r = &a->lists[i];
        lists_open += r->finals == 0;
        lists_twice += r->finals > 1;
        lists_done += r->finals && r->done;
        lists_failed += r->finals && !r->done;
        lists_bad_items += r->done && !r->items_match;
    }
    printf("actions: %llu sent: %llu resolved (answer, error or timeout), %llu cancelled by their "
           "owner, %llu still open; %llu resolved twice, %llu resolved without being sent\n",
           (unsigned long long)a->sent, (unsigned long long)a->resolved, (unsigned long long)a->cancelled,
           (unsigned long long)soak_account_open(a), (unsigned long long)a->twice,
           (unsigned long long)a->stray);
    for (size_t i = 0; i < a->nactions; i++) {
        const soak_count_t *c = &a->actions[i];
        printf("  %-18s sent %9llu  done %9llu  failed %7llu\n", c->name, (unsigned long long)c->sent,
               (unsigned long long)c->done, (unsigned long long)c->failed);
    }
    printf("lists: %zu CoreShowChannels sent by the soak: %llu completed with every item their "
           "ListItems announced (%llu items), %llu failed, %llu twice, %llu open, %llu with items "
           "missing or extra\n",
           a->nlists, (unsigned long long)lists_done, (unsigned long long)a->list_items,
           (unsigned long long)lists_failed, (unsigned long long)lists_twice, (unsigned long long)lists_open,
           (unsigned long long)lists_bad_items);
    return a->twice == 0 && a->stray == 0 && soak_account_open(a) == 0 && a->resolved + a->cancelled == a->sent &&
           lists_twice == 0 && lists_open == 0 && lists_bad_items == 0;
}

static uint64_t received(const soak_account_t *a, size_t node, const char *name)
{
    for (size_t i = 0; i < a->nevents[node]; i++)
        if (strcmp(a->events[node][i].name, name) == 0)
            return a->events[node][i].sent;
    return 0;
}

static bool sim_has(const soak_node_report_t *r, const char *name)
{
    for (size_t i = 0; i < r->nev; i++)
        if (strcmp(r->ev[i].name, name) == 0)
            return true;
    return false;
}

/* Session by session: what the simulator queued against what the engine
 * parsed. A session may come short only if the engine itself ended it for
 * missed heartbeats: the events the simulator wrote after the engine had
 * stopped reading were in flight at that forced disconnect. */
typedef struct flight {
    uint64_t lost, sessions_short, bad;
} flight_t;

static flight_t in_flight(const soak_account_t *a, size_t n, const soak_node_report_t *sim)
{
    flight_t f = {0};
    size_t k = 0; /* the engine's sessions, in order; the simulator's that got bytes, by id */
    for (size_t j = 0; j < sim->nsess; j++) {
        const ami_sim_session_record_t *r = &sim->sess[j];
        if (r->bytes_written == 0)
            continue; /* not even the banner went out: the engine never saw it */
        if (k >= a->nsessions[n]) {
            f.bad++;
            printf("  SESSION pbx%zu: the simulator's session %llu has no counterpart in the engine\n", n + 1,
                   (unsigned long long)r->id);
            continue;
        }
        const soak_session_t *e = &a->sessions[n][k++];
        if (e->events == r->events_queued && r->bytes_unsent == 0)
            continue;
        if (e->events > r->events_queued || !e->heartbeat_closed) {
            f.bad++;
            printf("  SESSION pbx%zu #%zu: the simulator queued %llu events, the engine parsed %llu, and the "
                   "engine did %sclose it for missed heartbeats\n",
                   n + 1, k, (unsigned long long)r->events_queued, (unsigned long long)e->events,
                   e->heartbeat_closed ? "" : "not ");
            continue;
        }
        f.lost += r->events_queued - e->events;
        f.sessions_short++;
    }
    if (k != a->nsessions[n]) {
        f.bad++;
        printf("  SESSION pbx%zu: the engine saw %zu sessions, the simulator sent to %zu\n", n + 1,
               a->nsessions[n], k);
    }
    return f;
}

/* Per name: never more received than sent; the shortfall, over every name,
 * is what the sessions lost in flight. */
static bool names_report(const soak_account_t *a, size_t n, const soak_node_report_t *sim, uint64_t *sent,
                         uint64_t *muted, uint64_t *got)
{
    bool ok = true;
    char flying[4096] = "";
    size_t used = 0;
    for (size_t i = 0; i < sim->nev; i++) {
        const ami_sim_event_count_t *e = &sim->ev[i];
        uint64_t r = received(a, n, e->name);
        *sent += e->sent;
        *muted += e->muted;
        *got += r;
        if (r > e->sent)
            printf("  MISMATCH pbx%zu %s: sent %llu, received %llu\n", n + 1, e->name,
                   (unsigned long long)e->sent, (unsigned long long)r);
        else if (r < e->sent && used < sizeof flying - 64)
            used += (size_t)snprintf(flying + used, sizeof flying - used, " %s %llu", e->name,
                                     (unsigned long long)(e->sent - r));
        ok = ok && r <= e->sent;
    }
    if (used)
        printf("  in flight at forced disconnects, pbx%zu, by name:%s\n", n + 1, flying);
    for (size_t i = 0; i < a->nevents[n]; i++)
        if (!sim_has(sim, a->events[n][i].name)) {
            ok = false;
            *got += a->events[n][i].sent;
            printf("  MISMATCH pbx%zu %s: received %llu, never sent\n", n + 1, a->events[n][i].name,
                   (unsigned long long)a->events[n][i].sent);
        }
    return ok;
}

bool soak_account_events_report(const soak_account_t *a, const soak_node_report_t sim[SOAK_NODES])
{
    bool exact = true;
    for (size_t n = 0; n < SOAK_NODES; n++) {
        const ami_conn_stats_t *cs = ami_conn_stats(ami_client_conn(a->client, n));
        uint64_t sent = 0, muted = 0, got = 0;
        bool names_ok = names_report(a, n, &sim[n], &sent, &muted, &got);
        flight_t f = in_flight(a, n, &sim[n]);
        bool sums = sent == got + f.lost;
        printf("events pbx%zu: %llu sent in %zu names = %llu received + %llu in flight when the engine "
               "force-closed %llu of %zu sessions for missed heartbeats%s; %llu more generated while "
               "frozen or quiet, never sent (muted); bytes: %llu written, %llu read, %llu left unwritten "
               "at a close\n",
               n + 1, (unsigned long long)sent, sim[n].nev, (unsigned long long)got, (unsigned long long)f.lost,
               (unsigned long long)f.sessions_short, a->nsessions[n], sums ? "" : " (DOES NOT ADD UP)",
               (unsigned long long)muted, (unsigned long long)sim[n].stats.bytes_sent,
               (unsigned long long)cs->bytes_in, (unsigned long long)sim[n].stats.bytes_unsent_at_close);
        exact = exact && names_ok && f.bad == 0 && sums && sent > 0 && cs->bytes_in <= sim[n].stats.bytes_sent &&
                (f.lost > 0 || cs->bytes_in == sim[n].stats.bytes_sent);
    }
    return exact;
}
