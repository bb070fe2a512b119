/*
 * The call state bound to a client: one table per server, the event
 * subscriptions that feed them, the CoreShowChannels rebuild after every
 * login (with its retries), and the metrics.
 */
#include <ctype.h>
#include <ev.h>
#include <stdio.h>
#include <string.h>

#include "callstate/callstate_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define DEFAULT_MAX_CHANNELS 10000u
#define MAX_MAX_CHANNELS 10000000u
#define DEFAULT_VAR_MAX 256u
#define MAX_VAR_MAX 4096u
#define RETRY_FIRST_MS 1000u
#define RETRY_MAX_MS 30000u
#define MAX_SUBS 24

typedef struct cs_server {
    ami_callstate_t *cs;
    size_t index;
    const char *key; /* the client's string: stable, and what events carry */
    cs_table_t table;
    bool synced;
    bool inflight;
    ami_action_handle_t action;
    int64_t rebuild_started_ns;
    ev_timer retry;
    uint32_t retry_ms;
    uint64_t failures;
    ami_gauge_t *m_channels, *m_calls, *m_synced;
    ami_counter_t *m_refused, *m_truncated, *m_rebuilds, *m_failures;
} cs_server_t;

struct ami_callstate {
    ami_client_t *client;
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_metrics_t *metrics;
    ami_callstate_config_t cfg;
    char *var_names[AMI_CALLSTATE_MAX_VARIABLES];
    size_t var_len[AMI_CALLSTATE_MAX_VARIABLES];
    chan_read_conf_t read_conf;
    uint64_t serials;
    void *scratch;
    cs_server_t *servers;
    size_t nservers;
    cs_server_t **by_key;  /* open addressing on the key pointer */
    size_t by_key_mask;
    ami_subscription_t *subs[MAX_SUBS];
    size_t nsubs;
    bool watching;
    ev_prepare reaper;     /* end of the loop iteration: forget hung-up channels */
    cs_calls_ws_t ws;
};

/* ---- configuration ------------------------------------------------------------------- */

void ami_callstate_config_default(ami_callstate_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_channels = DEFAULT_MAX_CHANNELS;
    cfg->variable_max_bytes = DEFAULT_VAR_MAX;
}

static int check_var_name(const char *name, size_t i, ami_err_t *err)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > AMI_CALLSTATE_VARIABLE_NAME_MAX)
        return ami_err_set(err, AMI_E_CONFIG, "variables[%zu]: a name of 1 to %d characters is needed",
                           i + 1, AMI_CALLSTATE_VARIABLE_NAME_MAX);
    if (name[0] == '_')
        return ami_err_set(err, AMI_E_CONFIG,
                           "variables[%zu]: \"%.64s\" starts with '_'; write the name without Asterisk's "
                           "inheritance prefix (it is ignored when matching)", i + 1, name);
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)name[k];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.')
            return ami_err_set(err, AMI_E_CONFIG,
                               "variables[%zu]: \"%.64s\" is not a variable name (letters, digits, '_', '-', '.')",
                               i + 1, name);
    }
    return 0;
}

int ami_callstate_config_validate(const ami_callstate_config_t *cfg, ami_err_t *err)
{
    if (cfg->max_channels < 1 || cfg->max_channels > MAX_MAX_CHANNELS)
        return ami_err_set(err, AMI_E_CONFIG, "max_channels: expected 1 to %u, got %u", MAX_MAX_CHANNELS,
                           cfg->max_channels);
    if (cfg->variable_max_bytes < 1 || cfg->variable_max_bytes > MAX_VAR_MAX)
        return ami_err_set(err, AMI_E_CONFIG, "variable_max_bytes: expected 1 to %u, got %u", MAX_VAR_MAX,
                           cfg->variable_max_bytes);
    if (cfg->nvariables > AMI_CALLSTATE_MAX_VARIABLES)
        return ami_err_set(err, AMI_E_CONFIG, "variables: at most %d names can be tracked, got %zu",
                           AMI_CALLSTATE_MAX_VARIABLES, cfg->nvariables);
    for (size_t i = 0; i < cfg->nvariables; i++) {
        if (check_var_name(cfg->variables[i], i, err) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->variables[i], cfg->variables[j]) == 0)
                return ami_err_set(err, AMI_E_CONFIG, "variables[%zu]: \"%s\" is listed twice", i + 1,
                                   cfg->variables[i]);
    }
    return 0;
}

/* ---- servers by key ------------------------------------------------------------------- */

static size_t key_slot(const ami_callstate_t *cs, const char *key)
{
    return (size_t)(((uintptr_t)key >> 3) * 0x9e3779b97f4a7c15ull >> 32) & cs->by_key_mask;
}

static bool index_servers(ami_callstate_t *cs)
{
    size_t n = 8;
    while (n < 2 * cs->nservers)
        n *= 2;
    cs->by_key = ami_calloc(n, sizeof *cs->by_key);
    if (!cs->by_key)
        return false;
    cs->by_key_mask = n - 1;
    for (size_t i = 0; i < cs->nservers; i++) {
        size_t p = key_slot(cs, cs->servers[i].key);
        while (cs->by_key[p])
            p = (p + 1) & cs->by_key_mask;
        cs->by_key[p] = &cs->servers[i];
    }
    return true;
}

/* Events carry the client's own key pointer: no string compare per event. */
static cs_server_t *server_of(const ami_callstate_t *cs, const char *key)
{
    for (size_t p = key_slot(cs, key);; p = (p + 1) & cs->by_key_mask) {
        cs_server_t *s = cs->by_key[p];
        if (!s || s->key == key)
            return s;
    }
}

/* ---- rebuild ------------------------------------------------------------------------------ */

static void start_rebuild(cs_server_t *s);

static void schedule_retry(cs_server_t *s)
{
    s->retry_ms = s->retry_ms ? s->retry_ms * 2 : RETRY_FIRST_MS;
    if (s->retry_ms > RETRY_MAX_MS)
        s->retry_ms = RETRY_MAX_MS;
    ev_timer_stop(s->cs->loop, &s->retry);
    ev_timer_set(&s->retry, s->retry_ms / 1000.0, 0.);
    ev_timer_start(s->cs->loop, &s->retry);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    cs_server_t *s = w->data;
    ami_server_info_t info;
    if (ami_client_server_info(s->cs->client, s->index, &info) == 0 && info.state == AMI_CONN_CONNECTED)
        start_rebuild(s);
}

static void rebuild_failed(cs_server_t *s, ami_status_t status, const char *reason)
{
    ami_callstate_t *cs = s->cs;
    cs_table_rebuild_abort(&s->table);
    s->inflight = false;
    s->failures++;
    ami_counter_inc(s->m_failures);
    bool retry = status != AMI_E_DISCONNECTED && status != AMI_E_SHUTDOWN && status != AMI_E_CANCELLED &&
                 status != AMI_E_NOT_CONNECTED && status != AMI_E_HEARTBEAT;
    if (retry)
        schedule_retry(s);
    AMI_LOG(cs->log, retry ? AMI_LOG_WARN : AMI_LOG_INFO,
            "call state rebuild failed; the table keeps what events told it",
            AMI_F_STR("server_key", s->key), AMI_F_STR("error", reason ? reason : ami_status_name(status)),
            AMI_F_UINT("retry_ms", retry ? s->retry_ms : 0), AMI_F_UINT("channels", s->table.count));
}

static void rebuild_done(cs_server_t *s, const ami_pending_note_t *n)
{
    ami_callstate_t *cs = s->cs;
    if (!n->msg || n->msg->kind != AMI_MSG_EVENT) {
        /* A plain Success without a list would read as "no channels". */
        rebuild_failed(s, AMI_E_PROTOCOL, "CoreShowChannels answered without a list (no EventList)");
        return;
    }
    cs_table_rebuild_end(&s->table, !n->truncated);
    s->inflight = false;
    s->synced = true;
    ami_counter_inc(s->m_rebuilds);
    ami_gauge_set(s->m_synced, 1);
    s->retry_ms = 0;
    AMI_LOG(cs->log, n->truncated ? AMI_LOG_WARN : AMI_LOG_INFO,
            n->truncated ? "call state rebuilt from a truncated list; unlisted channels were kept"
                         : "call state rebuilt",
            AMI_F_STR("server_key", s->key), AMI_F_UINT("channels", s->table.count),
            AMI_F_UINT("listed", n->items), AMI_F_UINT("dropped_items", n->dropped),
            AMI_F_DBL("ms", (double)(ami_now_ns() - s->rebuild_started_ns) / 1e6));
}

static void on_list_note(void *ud, const ami_pending_note_t *n)
{
    cs_server_t *s = ud;
    switch (n->signal) {
    case AMI_PENDING_RESPONSE:
        cs_table_rebuild_listing(&s->table);
        break;
    case AMI_PENDING_ITEM:
        if (n->msg && ami_str_ieq(ami_msg_name(n->msg), strlen(ami_msg_name(n->msg)), "CoreShowChannel", 15))
            cs_table_rebuild_item(&s->table, n->msg, ev_now(s->cs->loop));
        break;
    case AMI_PENDING_DONE:
        rebuild_done(s, n);
        break;
    case AMI_PENDING_FAILED:
        rebuild_failed(s, n->status, n->reason);
        break;
    }
}

static void start_rebuild(cs_server_t *s)
{
    ami_callstate_t *cs = s->cs;
    if (s->inflight) {
        ami_client_cancel(cs->client, s->action);
        cs_table_rebuild_abort(&s->table);
        s->inflight = false;
    }
    ami_action_req_t req = {.name = "CoreShowChannels", .strategy = AMI_STRATEGY_LIST,
                            .timeout_ms = cs->cfg.rebuild_timeout_ms};
    ami_err_t err;
    cs_table_rebuild_begin(&s->table);
    s->rebuild_started_ns = ami_now_ns();
    if (ami_client_send(cs->client, s->key, &req, on_list_note, s, &s->action, &err) < 0) {
        rebuild_failed(s, err.code == AMI_E_NOT_CONNECTED ? AMI_E_NOT_CONNECTED : err.code, err.msg);
        return;
    }
    s->inflight = true;
}

/* ---- events and states from the client ---------------------------------------------------------- */

static void on_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    ami_callstate_t *cs = ud;
    cs_server_t *s = server_of(cs, server_key);
    if (!s)
        return;
    cs_table_apply(&s->table, msg, ev_now(cs->loop));
    if (s->table.dead && !ev_is_active(&cs->reaper))
        ev_prepare_start(cs->loop, &cs->reaper);
}

/* A hung-up channel stays findable while its Hangup is dispatched (every
 * subscriber runs in the same loop iteration); before the loop waits again
 * it is forgotten, so a later lookup never finds a channel long gone. */
static void on_reap(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    ami_callstate_t *cs = w->data;
    for (size_t i = 0; i < cs->nservers; i++)
        cs_table_forget_dead(&cs->servers[i].table);
    ev_prepare_stop(loop, w);
}

static void on_state(void *ud, const char *server_key, ami_conn_state_t from, ami_conn_state_t to,
                     const char *reason)
{
    (void)from;
    (void)reason;
    ami_callstate_t *cs = ud;
    cs_server_t *s = server_of(cs, server_key);
    if (!s)
        return;
    s->synced = false;
    ami_gauge_set(s->m_synced, 0);
    if (to == AMI_CONN_CONNECTED) {
        s->retry_ms = 0;
        start_rebuild(s);
        return;
    }
    ev_timer_stop(cs->loop, &s->retry);
}

/* ---- metrics ------------------------------------------------------------------------------------ */

/* Channels, calls, refusals and cuts are counted by the tables (which know
 * nothing of metrics) and published here, just before a scrape; rebuilds
 * and sync are published as they happen. */
static void collect(void *ud, ami_metrics_t *m)
{
    (void)m;
    ami_callstate_t *cs = ud;
    for (size_t i = 0; i < cs->nservers; i++) {
        cs_server_t *s = &cs->servers[i];
        const ami_calls_view_t *v = ami_callstate_calls(cs, i);
        ami_gauge_set(s->m_channels, (double)s->table.count);
        ami_gauge_set(s->m_calls, v ? (double)v->ncalls : 0);
        s->m_refused->value = (double)s->table.refused;
        s->m_truncated->value = (double)s->table.truncated;
    }
}

static void register_metrics(ami_callstate_t *cs, cs_server_t *s)
{
    const char *const labels[] = {"server_key", s->key, NULL};
    ami_metrics_t *m = cs->metrics;
    s->m_channels = ami_metrics_gauge(m, "ami_callstate_channels", "Channels in the live call state", labels, NULL);
    s->m_calls = ami_metrics_gauge(m, "ami_callstate_calls",
                                   "Calls in the live call state (channels grouped by Linkedid and bridge)",
                                   labels, NULL);
    s->m_synced = ami_metrics_gauge(m, "ami_callstate_synced",
                                    "1 when the call state was rebuilt since the server's last login", labels, NULL);
    s->m_refused = ami_metrics_counter(m, "ami_callstate_channels_refused_total",
                                       "Channels not tracked because max_channels were tracked", labels, NULL);
    s->m_truncated = ami_metrics_counter(m, "ami_callstate_values_truncated_total",
                                         "Channel fields and variable values cut to their bound", labels, NULL);
    s->m_rebuilds = ami_metrics_counter(m, "ami_callstate_rebuilds_total",
                                        "Call state rebuilds from CoreShowChannels that completed", labels, NULL);
    s->m_failures = ami_metrics_counter(m, "ami_callstate_rebuild_failures_total",
                                        "Call state rebuilds that failed (retried while connected)", labels, NULL);
}

/* ---- lifecycle ---------------------------------------------------------------------------------- */

static int copy_config(ami_callstate_t *cs, const ami_callstate_config_t *cfg)
{
    cs->cfg = *cfg;
    cs->cfg.variables = NULL;
    for (size_t i = 0; i < cfg->nvariables; i++) {
        cs->var_len[i] = strlen(cfg->variables[i]);
        if (!(cs->var_names[i] = ami_strndup(cfg->variables[i], cs->var_len[i])))
            return -1;
    }
    cs->read_conf = (chan_read_conf_t){.nvars = (uint32_t)cfg->nvariables,
                                       .var_names = (const char *const *)cs->var_names,
                                       .var_name_len = cs->var_len,
                                       .var_max = cfg->variable_max_bytes};
    cs->scratch = ami_malloc(chan_max_size(cs->read_conf.nvars, cs->read_conf.var_max));
    return cs->scratch ? 0 : -1;
}

static int add_servers(ami_callstate_t *cs)
{
    cs->nservers = ami_client_server_count(cs->client);
    cs->servers = ami_calloc(cs->nservers ? cs->nservers : 1, sizeof *cs->servers);
    if (!cs->servers)
        return -1;
    for (size_t i = 0; i < cs->nservers; i++) {
        cs_server_t *s = &cs->servers[i];
        s->cs = cs;
        s->index = i;
        s->key = ami_client_server_key(cs->client, i);
        ev_init(&s->retry, on_retry);
        s->retry.data = s;
        if (cs_table_init(&s->table, &cs->read_conf, cs->cfg.max_channels, &cs->serials, cs->scratch) < 0)
            return -1;
        register_metrics(cs, s);
    }
    return index_servers(cs) ? 0 : -1;
}

static int subscribe_all(ami_callstate_t *cs, ami_err_t *err)
{
    const char *names[MAX_SUBS];
    size_t n = cs_event_names(names, MAX_SUBS, cs->cfg.nvariables > 0);
    for (size_t i = 0; i < n; i++) {
        cs->subs[cs->nsubs] = ami_client_subscribe(cs->client, names[i], on_event, cs, err);
        if (!cs->subs[cs->nsubs])
            return -1;
        cs->nsubs++;
    }
    if (ami_client_on_state(cs->client, on_state, cs) < 0)
        return ami_err_set(err, AMI_E_LIMIT, "the client has no room for another state watcher");
    cs->watching = true;
    return 0;
}

ami_callstate_t *ami_callstate_new(ami_client_t *client, const ami_callstate_config_t *cfg, ami_err_t *err)
{
    ami_callstate_config_t defaults;
    if (!cfg) {
        ami_callstate_config_default(&defaults);
        cfg = &defaults;
    }
    if (!client) {
        ami_err_set(err, AMI_E_INVALID, "the call state needs a client");
        return NULL;
    }
    if (ami_callstate_config_validate(cfg, err) < 0)
        return NULL;
    cs_hash_init();
    ami_callstate_t *cs = ami_calloc(1, sizeof *cs);
    if (!cs) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the call state");
        return NULL;
    }
    cs->client = client;
    cs->loop = ami_client_loop(client);
    ev_prepare_init(&cs->reaper, on_reap);
    cs->reaper.data = cs;
    cs->log = ami_client_logger(client);
    cs->metrics = ami_client_metrics(client);
    if (copy_config(cs, cfg) < 0 || add_servers(cs) < 0) {
        ami_callstate_free(cs);
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the call state");
        return NULL;
    }
    if (subscribe_all(cs, err) < 0) {
        ami_callstate_free(cs);
        return NULL;
    }
    ami_metrics_add_collector(cs->metrics, collect, cs);
    for (size_t i = 0; i < cs->nservers; i++) { /* made late: servers already logged in rebuild now */
        ami_server_info_t info;
        if (ami_client_server_info(client, i, &info) == 0 && info.state == AMI_CONN_CONNECTED)
            start_rebuild(&cs->servers[i]);
    }
    AMI_LOG(cs->log, AMI_LOG_INFO, "call state on", AMI_F_UINT("servers", cs->nservers),
            AMI_F_UINT("max_channels", cs->cfg.max_channels), AMI_F_UINT("variables", cs->cfg.nvariables));
    return cs;
}

void ami_callstate_free(ami_callstate_t *cs)
{
    if (!cs)
        return;
    if (cs->metrics)
        ami_metrics_remove_collector(cs->metrics, collect, cs);
    if (cs->watching)
        ami_client_off_state(cs->client, on_state, cs);
    for (size_t i = 0; i < cs->nsubs; i++)
        ami_client_unsubscribe(cs->client, cs->subs[i]);
    if (cs->loop)
        ev_prepare_stop(cs->loop, &cs->reaper);
    for (size_t i = 0; cs->servers && i < cs->nservers; i++) {
        cs_server_t *s = &cs->servers[i];
        if (s->inflight)
            ami_client_cancel(cs->client, s->action);
        if (cs->loop)
            ev_timer_stop(cs->loop, &s->retry);
        cs_table_deinit(&s->table);
    }
    for (size_t i = 0; i < cs->cfg.nvariables; i++)
        ami_free(cs->var_names[i]);
    cs_calls_ws_free(&cs->ws);
    ami_free(cs->servers);
    ami_free(cs->by_key);
    ami_free(cs->scratch);
    ami_free(cs);
}

/* ---- reading ----------------------------------------------------------------------------------- */

int ami_callstate_server_index(const ami_callstate_t *cs, const char *server_key)
{
    for (size_t i = 0; server_key && i < cs->nservers; i++)
        if (strcmp(cs->servers[i].key, server_key) == 0)
            return (int)i;
    return -1;
}

size_t ami_callstate_server_count(const ami_callstate_t *cs)
{
    return cs->nservers;
}

const char *ami_callstate_server_key(const ami_callstate_t *cs, size_t server)
{
    return server < cs->nservers ? cs->servers[server].key : NULL;
}

bool ami_callstate_synced(const ami_callstate_t *cs, size_t server)
{
    return server < cs->nservers && cs->servers[server].synced;
}

size_t ami_callstate_count(const ami_callstate_t *cs, size_t server)
{
    return server < cs->nservers ? cs->servers[server].table.count : 0;
}

const ami_chan_t *ami_callstate_find(const ami_callstate_t *cs, size_t server, const char *id, size_t len)
{
    if (server >= cs->nservers || !id)
        return NULL;
    return cs_table_find(&cs->servers[server].table, id, len);
}

const ami_chan_t *ami_callstate_first(const ami_callstate_t *cs, size_t server, ami_chan_iter_t *it)
{
    const cs_slot_t *s = server < cs->nservers ? cs->servers[server].table.head : NULL;
    it->at = s ? s->next : NULL;
    return s ? s->rec : NULL;
}

const ami_chan_t *ami_callstate_next(ami_chan_iter_t *it)
{
    const cs_slot_t *s = it->at;
    it->at = s ? s->next : NULL;
    return s ? s->rec : NULL;
}

size_t ami_callstate_var_count(const ami_callstate_t *cs)
{
    return cs->cfg.nvariables;
}

const char *ami_callstate_var_name(const ami_callstate_t *cs, size_t i)
{
    return i < cs->cfg.nvariables ? cs->var_names[i] : NULL;
}

const ami_calls_view_t *ami_callstate_calls(ami_callstate_t *cs, size_t server)
{
    if (server >= cs->nservers)
        return NULL;
    return cs_calls_group(&cs->ws, &cs->servers[server].table);
}

void ami_callstate_stats(const ami_callstate_t *cs, size_t server, ami_callstate_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (server >= cs->nservers)
        return;
    const cs_server_t *s = &cs->servers[server];
    out->channels = s->table.count;
    out->refused = s->table.refused;
    out->truncated = s->table.truncated;
    out->rebuilds = s->table.rebuilds;
    out->rebuild_failures = s->failures;
    out->events_applied = s->table.events_applied;
}
