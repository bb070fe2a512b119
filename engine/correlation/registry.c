/*
 * The correlation registry (see registry.h): configuration and lifecycle,
 * adding and cancelling actions, the completion strategies, routing of
 * responses and events, and the failure paths (timeouts, fail_all). The
 * indexes it keeps over its slots are in registry_index.c.
 */
#include "correlation/registry.h"

#include <stdio.h>
#include <string.h>

#include "correlation/registry_internal.h"
#include "util/alloc.h"

#define DEFAULT_MAX_PENDING 1024u
#define DEFAULT_CAP_LIST 10000u
#define DEFAULT_CAP_COMMAND 100000u
#define DEFAULT_CAP_EVENT 64u

static const char *const strategy_names[AMI_STRATEGY_COUNT] = {
    [AMI_STRATEGY_AUTO] = "auto",       [AMI_STRATEGY_SINGLE] = "single",
    [AMI_STRATEGY_LIST] = "eventlist",  [AMI_STRATEGY_COMMAND] = "command",
    [AMI_STRATEGY_EVENT] = "completion_event",
};

const char *ami_strategy_name(ami_strategy_t s)
{
    return (unsigned)s < AMI_STRATEGY_COUNT ? strategy_names[s] : "unknown";
}

void ami_registry_config_default(ami_registry_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_pending = DEFAULT_MAX_PENDING;
    cfg->server_key = "";
}

/* ---- lifecycle --------------------------------------------------------------- */

/* coverage-begin: seed-4.1 (a cap per strategy) */
static void set_caps(ami_registry_t *r, const ami_registry_config_t *cfg)
{
    static const uint32_t defaults[AMI_STRATEGY_COUNT] = {
        [AMI_STRATEGY_AUTO] = DEFAULT_CAP_LIST,       [AMI_STRATEGY_SINGLE] = 1,
        [AMI_STRATEGY_LIST] = DEFAULT_CAP_LIST,       [AMI_STRATEGY_COMMAND] = DEFAULT_CAP_COMMAND,
        [AMI_STRATEGY_EVENT] = DEFAULT_CAP_EVENT,
    };
    for (int s = 0; s < AMI_STRATEGY_COUNT; s++)
        r->caps[s] = cfg->max_messages[s] ? cfg->max_messages[s] : defaults[s];
}
/* coverage-end: seed-4.1 */

ami_registry_t *ami_registry_new(const ami_registry_config_t *cfg, ami_err_t *err)
{
    if (!cfg || !cfg->ids) {
        ami_err_set(err, AMI_E_INVALID, "registry needs a config with an ActionID generator");
        return NULL;
    }
    uint32_t max = cfg->max_pending ? cfg->max_pending : DEFAULT_MAX_PENDING;
    if (max > (1u << 24)) {
        ami_err_set(err, AMI_E_INVALID, "max_pending %u is above the supported 16777216", max);
        return NULL;
    }
    uint32_t n = max + AMI_REGISTRY_RESERVED;
    ami_registry_t *r = ami_calloc(1, sizeof *r);
    if (!r)
        goto nomem;
    r->nslots = n;
    r->max_pending = max;
    if (registry_pool_init(r) < 0)
        goto nomem;
    r->fifo_head = r->fifo_tail = NONE;
    r->dl_head = r->dl_tail = NONE;
    set_caps(r, cfg);
    snprintf(r->server_key, sizeof r->server_key, "%s", cfg->server_key ? cfg->server_key : "");
    r->ids = cfg->ids;
    r->log = cfg->log;
    r->on_final = cfg->on_final;
    r->on_final_ud = cfg->on_final_ud;
    /* coverage-begin: seed-4.1 (the drop counter) */
    if (cfg->metrics)
        r->dropped_counter = ami_metrics_counter(
            cfg->metrics, "ami_correlation_events_dropped_total",
            "Events for a pending action dropped past its strategy's max_messages cap",
            (const char *const[]){"server_key", r->server_key, NULL}, NULL);
    /* coverage-end: seed-4.1 */
    return r;
nomem:
    ami_registry_free(r);
    ami_err_set(err, AMI_E_NOMEM, "out of memory creating a registry of %u slots", n);
    return NULL;
}

void ami_registry_free(ami_registry_t *r)
{
    if (!r)
        return;
    registry_pool_free(r);
    ami_free(r);
}

/* Names are checked against AMI_REGISTRY_NAME_MAX before they get here; the
 * bound holds anyway. One per action: no formatting machinery. */
static void copy_name(char *dst, size_t size, const char *src)
{
    size_t n = src ? strnlen(src, size - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/* Ordinary actions share max_pending slots; the reserved ones are kept for
 * actions that must go out even then (the heartbeat). */
static bool has_room(const ami_registry_t *r, bool reserved)
{
    if (reserved)
        return r->reserved_in_use < AMI_REGISTRY_RESERVED && r->nfree > 0;
    return r->ncap - r->nfree - r->reserved_in_use < r->max_pending;
}

int ami_registry_add(ami_registry_t *r, const ami_pending_spec_t *spec, ami_err_t *err)
{
    if (!spec->cb || spec->id == 0 || (unsigned)spec->strategy >= AMI_STRATEGY_COUNT)
        return ami_err_set(err, AMI_E_INVALID, "pending action needs a callback, an id and a strategy");
    if (spec->strategy == AMI_STRATEGY_EVENT && (!spec->completion_event || !*spec->completion_event))
        return ami_err_set(err, AMI_E_INVALID,
                           "the completion_event strategy needs the name of the completing event");
    if (spec->completion_event && strlen(spec->completion_event) > AMI_REGISTRY_NAME_MAX)
        return ami_err_set(err, AMI_E_INVALID,
                           "completion event name \"%.40s...\" is longer than %d bytes: no AMI event has "
                           "such a name, so it could never complete", spec->completion_event, AMI_REGISTRY_NAME_MAX);
    if (spec->action && strlen(spec->action) > AMI_REGISTRY_NAME_MAX)
        return ami_err_set(err, AMI_E_INVALID, "action name \"%.40s...\" is longer than %d bytes",
                           spec->action, AMI_REGISTRY_NAME_MAX);
    if (registry_table_find(r, spec->id) != NONE)
        return ami_err_set(err, AMI_E_INVALID, "action id %llu is already pending",
                           (unsigned long long)spec->id);
    if (!has_room(r, spec->reserved)) {
        r->stats.refused++;
        return ami_err_set(err, AMI_E_LIMIT,
                           "%u actions already pending on server %s (max_pending): wait for "
                           "answers or raise max_pending",
                           r->max_pending, r->server_key);
    }
    /* The free slots kept back for reserved actions are not an ordinary action's. */
    if (r->nfree <= (spec->reserved ? 0 : AMI_REGISTRY_RESERVED - r->reserved_in_use) && registry_pool_grow(r) < 0)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory for a pending action on server %s", r->server_key);
    uint32_t idx = r->free_stack[--r->nfree];
    slot_t *s = slot_at(r, idx);
    memset(s, 0, sizeof *s);
    s->reserved = spec->reserved;
    r->reserved_in_use += spec->reserved;
    s->id = spec->id;
    s->cb = spec->cb;
    s->ud = spec->ud;
    s->deadline_ms = spec->deadline_ms;
    s->timeout_ms = spec->timeout_ms;
    s->start_ns = spec->start_ns;
    s->strategy = (uint8_t)spec->strategy;
    s->cap = r->caps[spec->strategy];
    s->epoch = r->epoch;
    s->heap_idx = NONE;
    copy_name(s->action, sizeof s->action, spec->action);
    copy_name(s->completion_event, sizeof s->completion_event, spec->completion_event);
    registry_table_insert(r, idx);
    if (s->deadline_ms > 0)
        registry_deadline_add(r, idx);
    s->phase = PHASE_AWAIT_RESPONSE;
    registry_fifo_push(r, idx);
    r->stats.added++;
    return 0;
}


bool ami_registry_cancel(ami_registry_t *r, uint64_t id)
{
    uint32_t t = registry_table_find(r, id);
    if (t == NONE)
        return false;
    registry_release(r, r->table[t] - 1);
    return true;
}

bool ami_registry_has(const ami_registry_t *r, uint64_t id)
{
    return registry_table_find(r, id) != NONE;
}

size_t ami_registry_pending(const ami_registry_t *r)
{
    return r->ncap - r->nfree;
}

const ami_registry_stats_t *ami_registry_stats(const ami_registry_t *r)
{
    return &r->stats;
}

int64_t ami_registry_next_deadline(const ami_registry_t *r)
{
    int64_t deadline_ms;
    return registry_deadline_first(r, &deadline_ms) == NONE ? 0 : deadline_ms;
}

/* ---- notifications ------------------------------------------------------------ */

static void note_init(ami_pending_note_t *n, const slot_t *s, ami_pending_signal_t sig,
                      const ami_msg_t *msg)
{
    memset(n, 0, sizeof *n);
    n->signal = sig;
    n->id = s->id;
    n->strategy = (ami_strategy_t)s->strategy;
    n->msg = msg;
    n->items = s->items;
    n->dropped = s->dropped;
    n->truncated = s->dropped > 0;
    n->action = s->action;
    n->start_ns = s->start_ns;
}

static void notify(const slot_t *s, ami_pending_signal_t sig, const ami_msg_t *msg)
{
    ami_pending_note_t n;
    note_init(&n, s, sig, msg);
    s->cb(s->ud, &n);
}

/* The slot is released before the callback runs: the callback may add or
 * cancel actions, and the note carries copies of everything it needs. */
static void finish(ami_registry_t *r, uint32_t idx, ami_pending_signal_t sig, const ami_msg_t *msg,
                   ami_status_t status, const char *reason)
{
    slot_t copy = *slot_at(r, idx);
    registry_release(r, idx);
    ami_pending_note_t n;
    note_init(&n, &copy, sig, msg);
    n.status = sig == AMI_PENDING_FAILED ? status : AMI_OK;
    n.reason = reason;
    if (sig == AMI_PENDING_DONE)
        r->stats.completed++;
    else
        r->stats.failed++;
    if (r->on_final)
        r->on_final(r->on_final_ud, &n);
    copy.cb(copy.ud, &n);
}

/* A failed Command says why only in its Output lines ("No such command
 * 'x' ..."); its Message is the generic "Command output follows". */
static bool output_reason(const ami_msg_t *msg, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (long i = ami_msg_next_index(msg, "Output", 6, 0); i >= 0 && len + 1 < size;
         i = ami_msg_next_index(msg, "Output", 6, (size_t)i + 1)) {
        size_t n;
        const char *v = ami_msg_value(msg, (size_t)i, &n);
        if (n == 0)
            continue;
        int w = snprintf(out + len, size - len, "%s%.*s", len ? " / " : "", (int)n, v);
        len += w > 0 ? (size_t)w : 0;
    }
    return out[0] != '\0';
}

static void fail_with_server_error(ami_registry_t *r, uint32_t idx, const ami_msg_t *msg)
{
    char reason[200];
    const char *text = ami_msg_get(msg, "Message");
    const char *what = ami_msg_name(msg);
    if (msg->kind == AMI_MSG_RESPONSE && output_reason(msg, reason, sizeof reason)) {
        /* Asterisk's own words, from the output */
    } else if (msg->kind == AMI_MSG_EVENT) {
        const char *resp = ami_msg_get(msg, "Response");
        const char *why = ami_msg_get(msg, "Reason");
        snprintf(reason, sizeof reason, "%s: %s%s%s", what, resp ? resp : "Failure",
                 why ? ", Reason " : "", why ? why : "");
    } else {
        snprintf(reason, sizeof reason, "%s", text && *text ? text : what);
    }
    finish(r, idx, AMI_PENDING_FAILED, msg, AMI_E_SERVER, reason);
}

/* ---- responses ------------------------------------------------------------------ */

static bool ieq_cstr(const char *v, size_t n, const char *lit)
{
    return ami_str_ieq(v, n, lit, strlen(lit));
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (ami_str_ieq(hay, strnlen(hay, n), needle, n))
            return true;
    return false;
}

/* "EventList: start" in any case (the first EventList decides); old
 * servers only say "... will follow" in their first Message. One walk over
 * the headers for both: every answer to an AUTO action is asked. */
static bool opens_list(const ami_msg_t *msg)
{
    const char *text = NULL;
    for (size_t i = 0; i < msg->nhdrs; i++) {
        size_t klen, n;
        const char *k = ami_msg_key(msg, i, &klen);
        if (klen == 9 && ami_str_ieq(k, klen, "EventList", 9)) {
            const char *v = ami_msg_value(msg, i, &n);
            return ieq_cstr(v, n, "start");
        }
        if (!text && klen == 7 && ami_str_ieq(k, klen, "Message", 7))
            text = ami_msg_value(msg, i, NULL);
    }
    return text && contains_ci(text, "will follow");
}

static size_t count_output_lines(const ami_msg_t *msg)
{
    size_t lines = 0;
    for (size_t i = 0; i < msg->nhdrs; i++) {
        size_t klen;
        const char *k = ami_msg_key(msg, i, &klen);
        if (ieq_cstr(k, klen, "Output"))
            lines++;
    }
    return lines;
}

static void on_command_response(ami_registry_t *r, uint32_t idx, const ami_msg_t *msg)
{
    slot_t *s = slot_at(r, idx);
    size_t lines = count_output_lines(msg);
    /* coverage-begin: seed-4.1 (Command output over its cap) */
    if (lines > s->cap) {
        s->dropped = (uint32_t)(lines - s->cap);
        lines = s->cap;
        r->stats.dropped_events += s->dropped;
        if (r->dropped_counter)
            ami_counter_add(r->dropped_counter, s->dropped);
        char id[AMI_ACTIONID_MAX];
        ami_actionid_format(r->ids, s->id, id);
        AMI_LOG(r->log, AMI_LOG_WARN, "correlation cap reached: command output truncated",
                AMI_F_STR("action_id", id), AMI_F_STR("server_key", r->server_key),
                AMI_F_STR("strategy", ami_strategy_name((ami_strategy_t)s->strategy)),
                AMI_F_UINT("count", lines), AMI_F_UINT("dropped", s->dropped));
    }
    /* coverage-end: seed-4.1 */
    s->items = (uint32_t)lines;
    if (ami_msg_is_success(msg))
        finish(r, idx, AMI_PENDING_DONE, msg, AMI_OK, NULL);
    else
        fail_with_server_error(r, idx, msg);
}

static void on_response(ami_registry_t *r, uint32_t idx, const ami_msg_t *msg)
{
    slot_t *s = slot_at(r, idx);
    registry_fifo_remove(r, idx);
    if (s->strategy == AMI_STRATEGY_COMMAND) {
        on_command_response(r, idx, msg);
        return;
    }
    if (!ami_msg_is_success(msg)) {
        fail_with_server_error(r, idx, msg);
        return;
    }
    switch ((ami_strategy_t)s->strategy) {
    case AMI_STRATEGY_AUTO:
    case AMI_STRATEGY_LIST:
        if (!opens_list(msg))
            break;
        s->strategy = AMI_STRATEGY_LIST;
        s->phase = PHASE_IN_LIST;
        notify(s, AMI_PENDING_RESPONSE, msg);
        return;
    case AMI_STRATEGY_EVENT:
        s->phase = PHASE_AWAIT_EVENT;
        notify(s, AMI_PENDING_RESPONSE, msg);
        return;
    default:
        break;
    }
    if (s->strategy == AMI_STRATEGY_AUTO)
        s->strategy = AMI_STRATEGY_SINGLE;
    finish(r, idx, AMI_PENDING_DONE, msg, AMI_OK, NULL);
}

/* ---- events -------------------------------------------------------------------- */

static bool completes_list(const ami_msg_t *msg)
{
    size_t n;
    const char *v = ami_msg_getn(msg, "EventList", 9, &n);
    if (v)
        return ieq_cstr(v, n, "Complete");
    const char *name = ami_msg_name(msg);
    size_t len = strlen(name);
    return len > 8 && ieq_cstr(name + len - 8, 8, "Complete");
}

/* coverage-begin: seed-4.1 (items past the cap dropped, counted, logged) */
static void drop_item(ami_registry_t *r, slot_t *s)
{
    s->dropped++;
    r->stats.dropped_events++;
    if (r->dropped_counter)
        ami_counter_inc(r->dropped_counter);
    if (s->dropped > 1)
        return; /* one WARNING per action, not one per event */
    char id[AMI_ACTIONID_MAX];
    ami_actionid_format(r->ids, s->id, id);
    AMI_LOG(r->log, AMI_LOG_WARN, "correlation cap reached: dropping further events for this action",
            AMI_F_STR("action_id", id), AMI_F_STR("server_key", r->server_key),
            AMI_F_STR("strategy", ami_strategy_name((ami_strategy_t)s->strategy)),
            AMI_F_STR("action", s->action), AMI_F_UINT("count", s->items),
            AMI_F_UINT("max_messages", s->cap));
}

static void take_item(ami_registry_t *r, uint32_t idx, const ami_msg_t *msg)
{
    slot_t *s = slot_at(r, idx);
    if (s->items >= s->cap) {
        drop_item(r, s);
        return;
    }
    s->items++;
    notify(s, AMI_PENDING_ITEM, msg);
}

static void log_truncated(ami_registry_t *r, const slot_t *s)
{
    char id[AMI_ACTIONID_MAX];
    ami_actionid_format(r->ids, s->id, id);
    AMI_LOG(r->log, AMI_LOG_WARN, "action completed truncated: events past the cap were dropped",
            AMI_F_STR("action_id", id), AMI_F_STR("server_key", r->server_key),
            AMI_F_STR("strategy", ami_strategy_name((ami_strategy_t)s->strategy)),
            AMI_F_STR("action", s->action), AMI_F_UINT("count", s->items),
            AMI_F_UINT("dropped", s->dropped));
}
/* coverage-end: seed-4.1 */

static void on_list_event(ami_registry_t *r, uint32_t idx, const ami_msg_t *msg)
{
    slot_t *s = slot_at(r, idx);
    registry_fifo_remove(r, idx);
    s->phase = PHASE_IN_LIST;
    if (s->strategy == AMI_STRATEGY_AUTO)
        s->strategy = AMI_STRATEGY_LIST;
    if (!completes_list(msg)) {
        take_item(r, idx, msg);
        return;
    }
    /* coverage-begin: seed-4.1 (a list completed truncated) */
    if (s->dropped)
        log_truncated(r, s);
    /* coverage-end: seed-4.1 */
    finish(r, idx, AMI_PENDING_DONE, msg, AMI_OK, NULL);
}

static bool event_reports_failure(const ami_msg_t *msg)
{
    size_t n;
    const char *v = ami_msg_getn(msg, "Response", 8, &n);
    return v && !ieq_cstr(v, n, "Success");
}

static ami_registry_took_t on_completion_event(ami_registry_t *r, uint32_t idx, const ami_msg_t *msg)
{
    slot_t *s = slot_at(r, idx);
    const char *name = ami_msg_name(msg);
    if (!ami_str_ieq(name, strlen(name), s->completion_event, strlen(s->completion_event))) {
        take_item(r, idx, msg);
        return AMI_TOOK_ITEM;
    }
    registry_fifo_remove(r, idx);
    if (event_reports_failure(msg))
        fail_with_server_error(r, idx, msg);
    else
        finish(r, idx, AMI_PENDING_DONE, msg, AMI_OK, NULL);
    return AMI_TOOK_COMPLETION;
}

/* ---- routing ----------------------------------------------------------------------- */

static uint32_t slot_for_id(const ami_registry_t *r, const ami_msg_t *msg, bool *ours)
{
    size_t len;
    const char *id = ami_msg_action_id(msg, &len);
    uint64_t seq;
    *ours = id && ami_actionid_parse(r->ids, id, len, &seq);
    if (!*ours)
        return NONE;
    uint32_t t = registry_table_find(r, seq);
    return t == NONE ? NONE : r->table[t] - 1;
}

static ami_registry_took_t route_response(ami_registry_t *r, const ami_msg_t *msg)
{
    bool ours;
    uint32_t idx = slot_for_id(r, msg, &ours);
    if (ours && idx == NONE) {
        r->stats.unmatched++; /* answer to a cancelled or timed-out action */
        return AMI_TOOK_RESPONSE;
    }
    if (!ours) {
        if (msg->actionid_idx >= 0)
            return AMI_TOOK_NOTHING; /* somebody else's ActionID */
        idx = r->fifo_head; /* no ActionID at all: answers come in order */
        if (idx == NONE) {
            r->stats.unmatched++;
            return AMI_TOOK_NOTHING;
        }
    }
    on_response(r, idx, msg);
    return AMI_TOOK_RESPONSE;
}

static ami_registry_took_t route_event(ami_registry_t *r, const ami_msg_t *msg)
{
    bool ours;
    uint32_t idx = slot_for_id(r, msg, &ours);
    if (idx == NONE)
        return AMI_TOOK_NOTHING; /* e.g. the UserEvent an earlier UserEvent action caused */
    if (slot_at(r, idx)->strategy == AMI_STRATEGY_EVENT)
        return on_completion_event(r, idx, msg);
    if (slot_at(r, idx)->strategy == AMI_STRATEGY_SINGLE || slot_at(r, idx)->strategy == AMI_STRATEGY_COMMAND)
        return AMI_TOOK_NOTHING; /* a single-response action does not own events */
    on_list_event(r, idx, msg);
    return AMI_TOOK_ITEM;
}

ami_registry_took_t ami_registry_on_message(ami_registry_t *r, const ami_msg_t *msg)
{
    if (msg->kind == AMI_MSG_RESPONSE)
        return route_response(r, msg);
    if (msg->kind == AMI_MSG_EVENT && msg->actionid_idx >= 0)
        return route_event(r, msg);
    return AMI_TOOK_NOTHING;
}

/* ---- failure paths ------------------------------------------------------------------- */

/* coverage-begin: seed-4.1 (the timeout says events were dropped) */
static void timeout_reason(const ami_registry_t *r, const slot_t *s, char *out, size_t size)
{
    char id[AMI_ACTIONID_MAX];
    ami_actionid_format(r->ids, s->id, id);
    if (s->dropped)
        snprintf(out, size,
                 "%s (%s) on %s timed out after %u ms: %u events past the max_messages cap of %u "
                 "were dropped and the list never completed",
                 s->action, id, r->server_key, s->timeout_ms, s->dropped, s->cap);
    else if (s->phase == PHASE_IN_LIST)
        snprintf(out, size, "%s (%s) on %s timed out after %u ms: the list started but did not "
                 "complete (%u items so far)",
                 s->action, id, r->server_key, s->timeout_ms, s->items);
    else if (s->phase == PHASE_AWAIT_EVENT)
        snprintf(out, size, "%s (%s) on %s timed out after %u ms waiting for %s",
                 s->action, id, r->server_key, s->timeout_ms, s->completion_event);
    else
        snprintf(out, size, "%s (%s) on %s got no response within %u ms", s->action, id,
                 r->server_key, s->timeout_ms);
}
/* coverage-end: seed-4.1 */

size_t ami_registry_expire(ami_registry_t *r, int64_t now_ms)
{
    size_t n = 0;
    int64_t deadline_ms;
    for (uint32_t idx; (idx = registry_deadline_first(r, &deadline_ms)) != NONE && deadline_ms <= now_ms;) {
        char reason[512]; /* names up to AMI_REGISTRY_NAME_MAX and a 63-byte server key fit */
        timeout_reason(r, slot_at(r, idx), reason, sizeof reason);
        finish(r, idx, AMI_PENDING_FAILED, NULL, AMI_E_TIMEOUT, reason);
        n++;
    }
    return n;
}

/* coverage-begin: seed-3.1 (every pending action fails once) */
size_t ami_registry_fail_all(ami_registry_t *r, ami_status_t status, const char *reason)
{
    /* Actions added by the callbacks below belong to the next epoch and are
     * left alone: each action present now fails exactly once. */
    uint32_t epoch = r->epoch++;
    size_t n = 0;
    for (uint32_t i = 0; i < r->ncap; i++) {
        if (slot_at(r, i)->id == 0 || slot_at(r, i)->epoch != epoch)
            continue;
        finish(r, i, AMI_PENDING_FAILED, NULL, status, reason ? reason : ami_status_name(status));
        n++;
    }
    return n;
}
/* coverage-end: seed-3.1 */
