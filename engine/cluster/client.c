#include "cluster/client.h"

#include <ev.h>
#include <stdio.h>
#include <string.h>

#include "cluster/busy_poll.h"
#include "session/conn.h"
#include "util/alloc.h"
#include "util/clock.h"

#define DEFAULT_MAX_SERVERS 256u
#define DEFAULT_MAX_SUBSCRIPTIONS 4096u
#define SUB_BUCKETS 128u
#define MAX_STATE_WATCHERS 16u
#define EVENT_NAME_MAX 64u

struct ami_subscription {
    char name[EVENT_NAME_MAX]; /* "" for every event */
    size_t name_len;
    uint32_t hash;
    ami_event_fn fn;
    void *ud;
    bool dead;
    ami_subscription_t *next;
};

typedef struct state_watcher {
    ami_state_fn fn;
    void *ud;
} state_watcher_t;

typedef struct server {
    ami_client_t *client;
    ami_conn_t *conn;
    uint32_t index;
} server_t;

struct ami_client {
    ami_client_config_t cfg;
    struct ev_loop *loop;
    bool own_loop;
    ami_metrics_t *metrics;
    bool own_metrics;
    ami_logger_t *log;
    ami_actionid_gen_t ids;
    ami_conn_pace_t pace;     /* the read budget's clock, shared by every server */
    ami_busy_poll_t busy_poll;
    server_t *servers;
    uint32_t nservers;
    uint32_t rr_next;
    ami_subscription_t *buckets[SUB_BUCKETS];
    ami_subscription_t *every;
    uint32_t nsubs;
    uint32_t dispatch_depth;
    bool has_dead;
    state_watcher_t watchers[MAX_STATE_WATCHERS];
    uint32_t nwatchers;
    ev_prepare iter_end;
    ev_check iter_start;
    int64_t iter_started_ns;
    ami_histogram_t *iter_hist;
    bool timing_started;      /* the two timing watchers are started and unref'd */
    ev_timer tick_timer;
};

static const char *const policy_names[] = {"first_healthy", "round_robin", "least_pending"};

int ami_route_policy_parse(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, policy_names[i]) == 0)
            return i;
    return -1;
}

const char *ami_route_policy_name(ami_route_policy_t p)
{
    return (unsigned)p < 3 ? policy_names[p] : "unknown";
}

void ami_client_config_default(ami_client_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->route = AMI_ROUTE_FIRST_HEALTHY;
    cfg->max_servers = DEFAULT_MAX_SERVERS;
    cfg->max_subscriptions = DEFAULT_MAX_SUBSCRIPTIONS;
}

/* ---- loop iteration timing: how long the loop works between two polls ------- */

static void on_iter_start(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_client_t *c = w->data;
    c->iter_started_ns = ami_now_ns();
}

static void on_iter_end(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_client_t *c = w->data;
    if (c->iter_started_ns && c->iter_hist)
        ami_histogram_observe(c->iter_hist, (double)(ami_now_ns() - c->iter_started_ns) / 1e9);
    c->iter_started_ns = 0;
}

static void start_iteration_timing(ami_client_t *c)
{
    static const double bounds[] = {0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                    0.005,   0.01,    0.025,  0.05,    0.1,    0.25,  1};
    c->iter_hist = ami_metrics_histogram(c->metrics, "ami_loop_iteration_seconds",
                                         "Time the loop works between two polls (event handling, writes)",
                                         bounds, sizeof bounds / sizeof bounds[0], NULL, NULL);
    ev_check_init(&c->iter_start, on_iter_start);
    ev_prepare_init(&c->iter_end, on_iter_end);
    c->iter_start.data = c->iter_end.data = c;
    ev_set_priority(&c->iter_start, EV_MAXPRI);
    ev_set_priority(&c->iter_end, EV_MINPRI);
    ev_check_start(c->loop, &c->iter_start);
    ev_prepare_start(c->loop, &c->iter_end);
    ev_unref(c->loop); /* timing watchers must not keep the loop alive */
    ev_unref(c->loop);
    c->timing_started = true;
}

/* coverage-begin: seed-2.2 (the timer that bounds tick) */
static void on_tick_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}
/* coverage-end: seed-2.2 */

ami_client_t *ami_client_new(const ami_client_config_t *cfg, ami_err_t *err)
{
    ami_client_config_t defaults;
    if (!cfg) {
        ami_client_config_default(&defaults);
        cfg = &defaults;
    }
    ami_client_t *c = ami_calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->cfg = *cfg;
    if (!c->cfg.max_servers)
        c->cfg.max_servers = DEFAULT_MAX_SERVERS;
    if (!c->cfg.max_subscriptions)
        c->cfg.max_subscriptions = DEFAULT_MAX_SUBSCRIPTIONS;
    c->loop = cfg->loop;
    if (!c->loop) {
        c->loop = ev_loop_new(EVFLAG_AUTO);
        c->own_loop = true;
    }
    c->metrics = cfg->metrics;
    if (!c->metrics) {
        c->metrics = ami_metrics_new(0);
        c->own_metrics = true;
    }
    c->log = cfg->log;
    c->servers = ami_calloc(c->cfg.max_servers, sizeof *c->servers);
    if (!c->loop || !c->metrics || !c->servers)
        goto nomem;
    ami_actionid_init(&c->ids, 0);
    ev_init(&c->tick_timer, on_tick_timer);
    start_iteration_timing(c);
    ami_busy_poll_init(&c->busy_poll, c->loop, &c->pace, c->metrics);
    return c;
nomem:
    ami_client_free(c);
    ami_err_set(err, AMI_E_NOMEM, "out of memory creating the client");
    return NULL;
}

static void free_subscriptions(ami_subscription_t *s)
{
    while (s) {
        ami_subscription_t *next = s->next;
        ami_free(s);
        s = next;
    }
}

void ami_client_free(ami_client_t *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->nservers; i++)
        ami_conn_free(c->servers[i].conn);
    ami_free(c->servers);
    for (uint32_t b = 0; b < SUB_BUCKETS; b++)
        free_subscriptions(c->buckets[b]);
    free_subscriptions(c->every);
    if (c->loop) {
        if (c->timing_started) {
            /* undo the unrefs before stopping, as libev asks; only if they happened */
            ev_ref(c->loop);
            ev_ref(c->loop);
            ev_check_stop(c->loop, &c->iter_start);
            ev_prepare_stop(c->loop, &c->iter_end);
        }
        ev_timer_stop(c->loop, &c->tick_timer);
        if (c->busy_poll.loop)
            ami_busy_poll_stop(&c->busy_poll);
        if (c->own_loop)
            ev_loop_destroy(c->loop);
    }
    if (c->own_metrics)
        ami_metrics_free(c->metrics);
    ami_free(c);
}

void ami_client_set_busy_poll(ami_client_t *c, uint32_t window_us)
{
    ami_busy_poll_set(&c->busy_poll, window_us);
}

bool ami_client_busy_polling(const ami_client_t *c)
{
    return ami_busy_poll_spinning(&c->busy_poll);
}

/* ---- servers ------------------------------------------------------------------ */

static void on_conn_event(void *ud, ami_conn_t *conn, const ami_msg_t *msg);
static void on_conn_state(void *ud, ami_conn_t *conn, ami_conn_state_t from, ami_conn_state_t to,
                          const char *reason);

int ami_client_add_server(ami_client_t *c, const ami_server_options_t *opt, ami_err_t *err)
{
    if (c->nservers >= c->cfg.max_servers)
        return ami_err_set(err, AMI_E_LIMIT, "at most %u servers (max_servers)", c->cfg.max_servers);
    if (opt->server_key && ami_client_server_index(c, opt->server_key) >= 0)
        return ami_err_set(err, AMI_E_CONFIG, "server_key \"%s\" is used twice; each server needs its own",
                           opt->server_key);
    server_t *s = &c->servers[c->nservers];
    s->client = c;
    s->index = c->nservers;
    ami_conn_env_t env = {.loop = c->loop, .log = c->log, .metrics = c->metrics, .ids = &c->ids,
                          .seed = c->cfg.seed ? c->cfg.seed + c->nservers : 0, .pace = &c->pace};
    ami_conn_callbacks_t cb = {.on_event = on_conn_event, .on_state = on_conn_state};
    s->conn = ami_conn_new(opt, &env, &cb, s, err);
    if (!s->conn)
        return -1;
    c->nservers++;
    return 0;
}

void ami_client_start(ami_client_t *c)
{
    for (uint32_t i = 0; i < c->nservers; i++)
        ami_conn_start(c->servers[i].conn);
}

void ami_client_stop(ami_client_t *c, uint32_t grace_ms)
{
    for (uint32_t i = 0; i < c->nservers; i++)
        ami_conn_stop(c->servers[i].conn, grace_ms);
}

bool ami_client_stopped(const ami_client_t *c)
{
    for (uint32_t i = 0; i < c->nservers; i++)
        if (ami_conn_state(c->servers[i].conn) != AMI_CONN_STOPPED)
            return false;
    return true;
}

/* ---- subscriptions ------------------------------------------------------------- */

static void append(ami_subscription_t **head, ami_subscription_t *s)
{
    while (*head)
        head = &(*head)->next;
    *head = s;
}

ami_subscription_t *ami_client_subscribe(ami_client_t *c, const char *event, ami_event_fn fn,
                                         void *ud, ami_err_t *err)
{
    bool every = !event || !*event || strcmp(event, "*") == 0;
    size_t len = every ? 0 : strlen(event);
    if (!fn || len >= EVENT_NAME_MAX) {
        ami_err_set(err, AMI_E_INVALID, "subscribe needs a callback and an event name under %u bytes",
                    EVENT_NAME_MAX);
        return NULL;
    }
    if (c->nsubs >= c->cfg.max_subscriptions) {
        ami_err_set(err, AMI_E_LIMIT, "at most %u subscriptions (max_subscriptions)",
                    c->cfg.max_subscriptions);
        return NULL;
    }
    ami_subscription_t *s = ami_calloc(1, sizeof *s);
    if (!s) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory subscribing");
        return NULL;
    }
    memcpy(s->name, event ? event : "", len);
    s->name_len = len;
    s->hash = ami_name_hash(s->name, len);
    s->fn = fn;
    s->ud = ud;
    append(every ? &c->every : &c->buckets[s->hash % SUB_BUCKETS], s);
    c->nsubs++;
    return s;
}

static void sweep_list(ami_client_t *c, ami_subscription_t **head)
{
    while (*head) {
        ami_subscription_t *s = *head;
        if (s->dead) {
            *head = s->next;
            ami_free(s);
            c->nsubs--;
        } else {
            head = &s->next;
        }
    }
}

static void sweep(ami_client_t *c)
{
    for (uint32_t b = 0; b < SUB_BUCKETS; b++)
        sweep_list(c, &c->buckets[b]);
    sweep_list(c, &c->every);
    c->has_dead = false;
}

/* Unlinked lazily: a callback may unsubscribe while events are dispatched. */
void ami_client_unsubscribe(ami_client_t *c, ami_subscription_t *sub)
{
    if (!sub)
        return;
    sub->dead = true;
    c->has_dead = true;
    if (c->dispatch_depth == 0)
        sweep(c);
}

int ami_client_on_state(ami_client_t *c, ami_state_fn fn, void *ud)
{
    if (c->nwatchers >= MAX_STATE_WATCHERS)
        return -1;
    c->watchers[c->nwatchers++] = (state_watcher_t){fn, ud};
    return 0;
}

void ami_client_off_state(ami_client_t *c, ami_state_fn fn, void *ud)
{
    for (uint32_t i = 0; i < c->nwatchers; i++)
        if (c->watchers[i].fn == fn && c->watchers[i].ud == ud) {
            memmove(&c->watchers[i], &c->watchers[i + 1], (c->nwatchers - i - 1) * sizeof c->watchers[0]);
            c->nwatchers--;
            return;
        }
}

static void on_conn_event(void *ud, ami_conn_t *conn, const ami_msg_t *msg)
{
    server_t *srv = ud;
    ami_client_t *c = srv->client;
    const char *name = ami_msg_name(msg);
    size_t len = msg->nhdrs ? msg->hdrs[0].val_len : 0;
    uint32_t h = msg->name_hash;
    const char *key = ami_conn_key(conn);
    c->dispatch_depth++;
    for (ami_subscription_t *s = c->buckets[h % SUB_BUCKETS]; s; s = s->next)
        if (!s->dead && s->hash == h && ami_str_ieq(s->name, s->name_len, name, len))
            s->fn(s->ud, key, msg);
    for (ami_subscription_t *s = c->every; s; s = s->next)
        if (!s->dead)
            s->fn(s->ud, key, msg);
    if (--c->dispatch_depth == 0 && c->has_dead)
        sweep(c);
}

static void on_conn_state(void *ud, ami_conn_t *conn, ami_conn_state_t from, ami_conn_state_t to,
                          const char *reason)
{
    server_t *srv = ud;
    ami_client_t *c = srv->client;
    for (uint32_t i = 0; i < c->nwatchers; i++)
        c->watchers[i].fn(c->watchers[i].ud, ami_conn_key(conn), from, to, reason);
}

/* ---- routing and actions ---------------------------------------------------------- */

static int pick_server(ami_client_t *c)
{
    int best = -1;
    for (uint32_t n = 0; n < c->nservers; n++) {
        uint32_t i = c->cfg.route == AMI_ROUTE_ROUND_ROBIN ? (c->rr_next + n) % c->nservers : n;
        ami_conn_t *conn = c->servers[i].conn;
        if (ami_conn_state(conn) != AMI_CONN_CONNECTED)
            continue;
        if (c->cfg.route != AMI_ROUTE_LEAST_PENDING) {
            if (c->cfg.route == AMI_ROUTE_ROUND_ROBIN)
                c->rr_next = i + 1;
            return (int)i;
        }
        if (best < 0 || ami_conn_pending(conn) < ami_conn_pending(c->servers[best].conn))
            best = (int)i;
    }
    return best;
}

static int unknown_server(const ami_client_t *c, const char *key, ami_err_t *err)
{
    char known[256] = "";
    size_t used = 0;
    for (uint32_t i = 0; i < c->nservers && used < sizeof known - 1; i++) {
        int n = snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                         ami_conn_key(c->servers[i].conn));
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return ami_err_set(err, AMI_E_UNKNOWN_SERVER, "no server named \"%.64s\" (known: %s)", key,
                       c->nservers ? known : "none");
}

int ami_client_send(ami_client_t *c, const char *server_key, const ami_action_req_t *req,
                    ami_pending_cb cb, void *ud, ami_action_handle_t *h, ami_err_t *err)
{
    int i;
    if (server_key && *server_key) {
        i = ami_client_server_index(c, server_key);
        if (i < 0)
            return unknown_server(c, server_key, err);
    } else {
        i = pick_server(c);
        if (i < 0)
            return ami_err_set(err, AMI_E_NOT_CONNECTED,
                               "no server is connected, so the %s policy has nowhere to send %s",
                               ami_route_policy_name(c->cfg.route), req->name ? req->name : "the action");
    }
    uint64_t id;
    if (ami_conn_send(c->servers[i].conn, req, cb, ud, &id, err) < 0)
        return -1;
    if (h) {
        h->server = (uint32_t)i;
        h->id = id;
    }
    return 0;
}

bool ami_client_cancel(ami_client_t *c, ami_action_handle_t h)
{
    if (h.server >= c->nservers)
        return false;
    return ami_conn_cancel(c->servers[h.server].conn, h.id);
}

/* ---- loop driving -------------------------------------------------------------------- */

/* coverage-begin: seed-2.2 (poll never blocks, tick may) */
void ami_client_poll(ami_client_t *c)
{
    ev_run(c->loop, EVRUN_NOWAIT);
}

void ami_client_tick(ami_client_t *c, uint32_t timeout_ms)
{
    ev_timer_set(&c->tick_timer, timeout_ms / 1000.0, 0.);
    ev_timer_start(c->loop, &c->tick_timer);
    ev_run(c->loop, EVRUN_ONCE);
    ev_timer_stop(c->loop, &c->tick_timer);
}
/* coverage-end: seed-2.2 */

struct ev_loop *ami_client_loop(const ami_client_t *c)
{
    return c->loop;
}

ami_metrics_t *ami_client_metrics(const ami_client_t *c)
{
    return c->metrics;
}

ami_logger_t *ami_client_logger(const ami_client_t *c)
{
    return c->log;
}

/* ---- introspection --------------------------------------------------------------------- */

size_t ami_client_server_count(const ami_client_t *c)
{
    return c->nservers;
}

int ami_client_server_index(const ami_client_t *c, const char *server_key)
{
    for (uint32_t i = 0; i < c->nservers; i++)
        if (strcmp(ami_conn_key(c->servers[i].conn), server_key) == 0)
            return (int)i;
    return -1;
}

const char *ami_client_server_key(const ami_client_t *c, size_t i)
{
    return i < c->nservers ? ami_conn_key(c->servers[i].conn) : NULL;
}

int ami_client_server_info(const ami_client_t *c, size_t i, ami_server_info_t *out)
{
    if (i >= c->nservers)
        return -1;
    const ami_conn_t *conn = c->servers[i].conn;
    out->server_key = ami_conn_key(conn);
    out->state = ami_conn_state(conn);
    out->pending = ami_conn_pending(conn);
    out->heartbeat_failures = ami_conn_heartbeat_failures(conn);
    out->backoff_ms = ami_conn_backoff_delay(conn);
    out->last_error = ami_conn_last_error(conn);
    out->stats = ami_conn_stats(conn);
    return 0;
}

size_t ami_client_connected_count(const ami_client_t *c)
{
    size_t n = 0;
    for (uint32_t i = 0; i < c->nservers; i++)
        n += ami_conn_state(c->servers[i].conn) == AMI_CONN_CONNECTED;
    return n;
}

ami_conn_t *ami_client_conn(ami_client_t *c, size_t i)
{
    return i < c->nservers ? c->servers[i].conn : NULL;
}
