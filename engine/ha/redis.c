/*
 * The Redis connection: hiredis async on libev, with the timeouts, AUTH,
 * backoff and bounds hiredis 0.14 does not have (see redis.h).
 *
 * hiredis calls every command's callback exactly once: with the reply, or
 * with NULL when the context is freed or fails. Each command's privdata is
 * a req_t that lives until that call, even when the caller was answered
 * earlier (timeout) or cancelled: `answered` keeps the caller's callback to
 * one call. A context that failed or was dropped is forgotten (r->ac =
 * NULL) before hiredis frees it, so callbacks running during that free see
 * the connection as down and cannot send into it.
 */
#include "ha/redis.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libev.h>

#include "util/alloc.h"
#include "util/backoff.h"


typedef enum link_state { LINK_DOWN = 0, LINK_HANDSHAKE, LINK_UP } link_state_t;

struct ami_redis_req {
    ami_redis_t *r;
    ami_redis_reply_fn fn;
    void *ud;
    ev_timer timer;
    bool answered; /* the caller got its callback, or cancelled: hiredis's call only frees */
};

struct ami_redis {
    ami_redis_config_t cfg;
    char *name, *ip, *unix_path, *username, *password, *channel;
    struct ev_loop *loop;
    ami_logger_t *log;
    redisAsyncContext *ac;       /* NULL while down */
    link_state_t state;
    bool started;
    bool freeing;                /* ami_redis_free: pending callers hear nothing more */
    uint32_t failures;           /* consecutive failed attempts (backoff exponent) */
    uint32_t rng;
    ev_timer retry;              /* backoff before the next attempt */
    ev_timer handshake;          /* connect + AUTH + PING deadline */
    size_t pending;
    ami_redis_state_fn state_fn;
    void *state_ud;
    ami_redis_message_fn msg_fn;
    void *msg_ud;
    char last_error[160];
    ami_gauge_t *m_connected, *m_pending;
    ami_counter_t *m_connects, *m_disconnects, *m_commands, *m_timeouts;
    ami_counter_t *m_refused_down, *m_refused_full;
};

/* ---- replies ---------------------------------------------------------------------- */

ami_redis_type_t ami_redis_reply_type(const ami_redis_reply_t *r)
{
    switch (r ? r->type : REDIS_REPLY_NIL) {
    case REDIS_REPLY_NIL: return AMI_REDIS_NIL;
    case REDIS_REPLY_INTEGER: return AMI_REDIS_INTEGER;
    case REDIS_REPLY_STRING: return AMI_REDIS_STRING;
    case REDIS_REPLY_STATUS: return AMI_REDIS_STATUS;
    case REDIS_REPLY_ARRAY: return AMI_REDIS_ARRAY;
    case REDIS_REPLY_ERROR: return AMI_REDIS_ERROR;
    default: return AMI_REDIS_OTHER;
    }
}

long long ami_redis_reply_integer(const ami_redis_reply_t *r)
{
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

const char *ami_redis_reply_str(const ami_redis_reply_t *r, size_t *len)
{
    bool text = r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                      r->type == REDIS_REPLY_ERROR);
    if (len)
        *len = text ? r->len : 0;
    return text ? r->str : NULL;
}

size_t ami_redis_reply_elements(const ami_redis_reply_t *r)
{
    return r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
}

const ami_redis_reply_t *ami_redis_reply_at(const ami_redis_reply_t *r, size_t i)
{
    return i < ami_redis_reply_elements(r) ? r->element[i] : NULL;
}

/* ---- the link's life ----------------------------------------------------------------- */

static void set_state(ami_redis_t *r, link_state_t s)
{
    r->state = s;
    ami_gauge_set(r->m_connected, s == LINK_UP ? 1 : 0);
}

static uint32_t backoff_ms(ami_redis_t *r)
{
    return ami_backoff_delay(&r->rng, r->cfg.backoff_initial_ms, r->cfg.backoff_max_ms, r->failures);
}

/* The link is gone (or never came up): forget the context, tell the
 * owner, and schedule the next attempt. The caller frees the context. */
static void link_lost(ami_redis_t *r, const char *why)
{
    bool was_up = r->state == LINK_UP;
    r->ac = NULL;
    set_state(r, LINK_DOWN);
    ev_timer_stop(r->loop, &r->handshake);
    snprintf(r->last_error, sizeof r->last_error, "%s", why);
    r->failures += !was_up;
    uint32_t delay = was_up ? r->cfg.backoff_initial_ms : backoff_ms(r);
    if (was_up) {
        ami_counter_inc(r->m_disconnects);
        AMI_LOG(r->log, AMI_LOG_WARN, "redis connection lost; reconnecting", AMI_F_STR("conn", r->name),
                AMI_F_STR("error", why), AMI_F_UINT("retry_ms", delay));
    } else {
        AMI_LOG(r->log, r->failures <= 1 ? AMI_LOG_WARN : AMI_LOG_DEBUG, "redis connection failed",
                AMI_F_STR("conn", r->name), AMI_F_STR("error", why), AMI_F_UINT("attempt", r->failures),
                AMI_F_UINT("retry_ms", delay));
    }
    ev_timer_set(&r->retry, delay / 1000.0, 0.);
    ev_timer_start(r->loop, &r->retry);
    if (was_up && r->state_fn)
        r->state_fn(r->state_ud, false, why);
}

/* Close the current link on our initiative (timeouts): pending commands
 * fail with "disconnected" while hiredis frees the context. */
static void drop(ami_redis_t *r, const char *why)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    link_lost(r, why);
    redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    ami_redis_t *r = ac->data;
    if (status == REDIS_OK || r->ac != ac)
        return;
    char why[160];
    snprintf(why, sizeof why, "connect: %s", ac->errstr[0] ? ac->errstr : "failed");
    link_lost(r, why); /* hiredis frees the context after this returns */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    ami_redis_t *r = ac->data;
    if (r->ac != ac)
        return; /* we dropped it ourselves */
    link_lost(r, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "connection error"));
}

static void on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    ami_redis_t *r = privdata;
    const redisReply *m = reply;
    if (!m || r->ac != ac || m->type != REDIS_REPLY_ARRAY || m->elements < 3)
        return;
    const redisReply *kind = m->element[0], *payload = m->element[2];
    if (kind->type == REDIS_REPLY_STRING && strcmp(kind->str, "message") == 0 &&
        payload->type == REDIS_REPLY_STRING && r->msg_fn)
        r->msg_fn(r->msg_ud, payload->str, payload->len);
}

static void link_up(ami_redis_t *r)
{
    ev_timer_stop(r->loop, &r->handshake);
    set_state(r, LINK_UP);
    r->failures = 0;
    r->last_error[0] = '\0';
    ami_counter_inc(r->m_connects);
    AMI_LOG(r->log, AMI_LOG_INFO, "redis connected", AMI_F_STR("conn", r->name),
            AMI_F_STR("address", r->ip ? r->ip : r->unix_path), AMI_F_UINT("port", r->ip ? r->cfg.port : 0));
    if (r->channel)
        redisAsyncCommand(r->ac, on_message, r, "SUBSCRIBE %s", r->channel);
    if (r->state_fn)
        r->state_fn(r->state_ud, true, NULL);
}

/* AUTH's and PING's replies. privdata: r. Only the PING's success completes
 * the handshake; any error reply ends the attempt. */
static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    ami_redis_t *r = privdata;
    const redisReply *rep = reply;
    if (!rep || r->ac != ac || r->state != LINK_HANDSHAKE)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof why, "redis refused the login: %.120s", rep->str);
        link_lost(r, why);
        redisAsyncFree(ac); /* deferred by hiredis until this callback returns */
        return;
    }
    if (rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0)
        link_up(r);
}

static void on_handshake_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    ami_redis_t *r = t->data;
    char why[96];
    snprintf(why, sizeof why, "no answer within connect_timeout_ms (%u ms)", r->cfg.connect_timeout_ms);
    drop(r, why);
}

static void send_handshake(ami_redis_t *r)
{
    if (r->password && r->username)
        redisAsyncCommand(r->ac, on_handshake, r, "AUTH %s %s", r->username, r->password);
    else if (r->password)
        redisAsyncCommand(r->ac, on_handshake, r, "AUTH %s", r->password);
    redisAsyncCommand(r->ac, on_handshake, r, "PING");
}

static void attempt(ami_redis_t *r)
{
    redisAsyncContext *ac = r->ip ? redisAsyncConnect(r->ip, r->cfg.port) : redisAsyncConnectUnix(r->unix_path);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof why, "connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        link_lost(r, why);
        return;
    }
    ac->data = r;
    r->ac = ac;
    set_state(r, LINK_HANDSHAKE);
    if (r->ip)
        redisEnableKeepAlive(&ac->c);
    redisLibevAttach(r->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect); /* arms the first write event */
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    send_handshake(r); /* queued until the socket connects */
    ev_timer_set(&r->handshake, r->cfg.connect_timeout_ms / 1000.0, 0.);
    ev_timer_start(r->loop, &r->handshake);
}

static void on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    attempt(t->data);
}

/* ---- commands ---------------------------------------------------------------------------- */

static void answer(ami_redis_req_t *q, const redisReply *reply, const ami_err_t *err)
{
    if (q->answered || q->r->freeing)
        return;
    q->answered = true;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ami_err_t e;
        ami_err_set(&e, AMI_E_SERVER, "redis: %.200s", reply->str);
        q->fn(q->ud, NULL, &e);
    } else {
        q->fn(q->ud, reply, err);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    ami_redis_req_t *q = privdata;
    ami_redis_t *r = q->r;
    ev_timer_stop(r->loop, &q->timer);
    r->pending--;
    ami_gauge_set(r->m_pending, (double)r->pending);
    if (reply) {
        answer(q, reply, NULL);
    } else {
        const char *why = r->ac == ac && ac->errstr[0] ? ac->errstr : r->last_error;
        ami_err_t e;
        ami_err_set(&e, AMI_E_DISCONNECTED, "the redis connection closed before the reply (%s)",
                    why[0] ? why : "closing");
        answer(q, NULL, &e);
    }
    ami_free(q);
}

static void on_command_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    ami_redis_req_t *q = t->data;
    ami_redis_t *r = q->r;
    ami_counter_inc(r->m_timeouts);
    ami_err_t e;
    ami_err_set(&e, AMI_E_TIMEOUT, "redis did not answer within command_timeout_ms (%u ms)",
                r->cfg.command_timeout_ms);
    /* Drop the link before answering, so whatever the caller sends next
     * sees it down instead of joining the stuck queue. */
    ami_redis_reply_fn fn = q->fn;
    void *ud = q->ud;
    q->answered = true;
    drop(r, "a command timed out (redis paused or unreachable)"); /* frees q via on_reply */
    fn(ud, NULL, &e);
}

int ami_redis_command(ami_redis_t *r, int argc, const char *const *argv, const size_t *lens,
                      ami_redis_reply_fn fn, void *ud, ami_redis_req_t **req, ami_err_t *err)
{
    if (req)
        *req = NULL;
    if (r->state != LINK_UP || !r->ac || r->channel) {
        ami_counter_inc(r->m_refused_down);
        return ami_err_set(err, AMI_E_NOT_CONNECTED, "redis (%s) is not connected%s%s", r->name,
                           r->last_error[0] ? ": " : "", r->last_error);
    }
    if (r->pending >= r->cfg.max_pending) {
        ami_counter_inc(r->m_refused_full);
        return ami_err_set(err, AMI_E_LIMIT, "%zu redis commands already wait for a reply (max_pending)",
                           r->pending);
    }
    ami_redis_req_t *q = ami_calloc(1, sizeof *q);
    if (!q)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory sending a redis command");
    *q = (ami_redis_req_t){.r = r, .fn = fn, .ud = ud};
    if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, (const char **)argv, lens) != REDIS_OK) {
        ami_free(q);
        ami_counter_inc(r->m_refused_down);
        return ami_err_set(err, AMI_E_NOT_CONNECTED, "redis (%s) connection is closing", r->name);
    }
    ev_timer_init(&q->timer, on_command_timeout, r->cfg.command_timeout_ms / 1000.0, 0.);
    q->timer.data = q;
    ev_now_update(r->loop); /* the deadline counts from now, not from the loop's cached time */
    ev_timer_start(r->loop, &q->timer);
    r->pending++;
    ami_gauge_set(r->m_pending, (double)r->pending);
    ami_counter_inc(r->m_commands);
    if (req)
        *req = q;
    return 0;
}

void ami_redis_cancel(ami_redis_t *r, ami_redis_req_t *req)
{
    if (!req)
        return;
    req->answered = true;
    ev_timer_stop(r->loop, &req->timer);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

void ami_redis_config_default(ami_redis_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->name = "redis";
    cfg->port = 6379;
    cfg->connect_timeout_ms = 1000;
    cfg->command_timeout_ms = 1000;
    cfg->backoff_initial_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->max_pending = 10000;
}

static char *dup_opt(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = ami_strdup(s);
    *ok = *ok && d;
    return d;
}

static void fill_defaults(ami_redis_config_t *c)
{
    ami_redis_config_t d;
    ami_redis_config_default(&d);
    if (!c->port)
        c->port = d.port;
    if (!c->connect_timeout_ms)
        c->connect_timeout_ms = d.connect_timeout_ms;
    if (!c->command_timeout_ms)
        c->command_timeout_ms = d.command_timeout_ms;
    if (!c->backoff_initial_ms)
        c->backoff_initial_ms = d.backoff_initial_ms;
    if (c->backoff_max_ms < c->backoff_initial_ms)
        c->backoff_max_ms = c->backoff_initial_ms > d.backoff_max_ms ? c->backoff_initial_ms : d.backoff_max_ms;
    if (!c->max_pending)
        c->max_pending = d.max_pending;
}

static void register_metrics(ami_redis_t *r, ami_metrics_t *m)
{
    const char *const conn[] = {"conn", r->name, NULL};
    const char *const down[] = {"conn", r->name, "reason", "not_connected", NULL};
    const char *const full[] = {"conn", r->name, "reason", "max_pending", NULL};
    r->m_connected = ami_metrics_gauge(m, "ami_redis_connected", "1 while the redis connection is up", conn, NULL);
    r->m_pending = ami_metrics_gauge(m, "ami_redis_pending", "Redis commands awaiting a reply", conn, NULL);
    r->m_connects = ami_metrics_counter(m, "ami_redis_connects_total", "Redis connections established", conn, NULL);
    r->m_disconnects = ami_metrics_counter(m, "ami_redis_disconnects_total",
                                           "Established redis connections that were lost", conn, NULL);
    r->m_commands = ami_metrics_counter(m, "ami_redis_commands_total", "Redis commands sent", conn, NULL);
    r->m_timeouts = ami_metrics_counter(m, "ami_redis_command_timeouts_total",
                                        "Redis commands that got no reply within command_timeout_ms", conn, NULL);
    r->m_refused_down = ami_metrics_counter(m, "ami_redis_commands_refused_total",
                                            "Redis commands refused before sending", down, NULL);
    r->m_refused_full = ami_metrics_counter(m, "ami_redis_commands_refused_total",
                                            "Redis commands refused before sending", full, NULL);
}

ami_redis_t *ami_redis_new(struct ev_loop *loop, const ami_redis_config_t *cfg, ami_logger_t *log,
                           ami_metrics_t *metrics, ami_err_t *err)
{
    if (!cfg || (!cfg->ip && !cfg->unix_path)) {
        ami_err_set(err, AMI_E_CONFIG, "redis: give an IPv4 address or a unix socket path");
        return NULL;
    }
    ami_redis_t *r = ami_calloc(1, sizeof *r);
    if (!r) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the redis connection");
        return NULL;
    }
    r->cfg = *cfg;
    fill_defaults(&r->cfg);
    bool ok = true;
    r->name = dup_opt(cfg->name ? cfg->name : "redis", &ok);
    r->ip = dup_opt(cfg->ip, &ok);
    r->unix_path = cfg->ip ? NULL : dup_opt(cfg->unix_path, &ok);
    r->username = dup_opt(cfg->username, &ok);
    r->password = dup_opt(cfg->password, &ok);
    r->cfg.name = r->name;
    r->cfg.ip = r->ip;
    r->cfg.unix_path = r->unix_path;
    r->cfg.username = r->username;
    r->cfg.password = NULL; /* only r->password holds it */
    if (!ok) {
        ami_redis_free(r);
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the redis connection");
        return NULL;
    }
    r->loop = loop;
    r->log = log;
    r->rng = ami_backoff_seed(cfg->seed);
    ev_init(&r->retry, on_retry);
    r->retry.data = r;
    ev_init(&r->handshake, on_handshake_timeout);
    r->handshake.data = r;
    register_metrics(r, metrics);
    return r;
}

void ami_redis_on_state(ami_redis_t *r, ami_redis_state_fn fn, void *ud)
{
    r->state_fn = fn;
    r->state_ud = ud;
}

int ami_redis_subscribe(ami_redis_t *r, const char *channel, ami_redis_message_fn fn, void *ud, ami_err_t *err)
{
    if (r->started || r->channel)
        return ami_err_set(err, AMI_E_INVALID, "redis: subscribe once, before start");
    r->channel = ami_strdup(channel);
    if (!r->channel)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory");
    r->msg_fn = fn;
    r->msg_ud = ud;
    return 0;
}

void ami_redis_start(ami_redis_t *r)
{
    if (r->started)
        return;
    r->started = true;
    attempt(r);
}

bool ami_redis_up(const ami_redis_t *r)
{
    return r->state == LINK_UP;
}

size_t ami_redis_pending(const ami_redis_t *r)
{
    return r->pending;
}

static void wipe(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        ami_free(s);
    }
}

void ami_redis_free(ami_redis_t *r)
{
    if (!r)
        return;
    if (r->loop) {
        ev_timer_stop(r->loop, &r->retry);
        ev_timer_stop(r->loop, &r->handshake);
    }
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->state_fn = NULL;
    r->msg_fn = NULL;
    if (ac) {
        ac->onDisconnect = NULL;
        r->freeing = true; /* hiredis calls on_reply with NULL for each pending command */
        r->state = LINK_DOWN;
        redisAsyncFree(ac);
    }
    ami_free(r->name);
    ami_free(r->ip);
    ami_free(r->unix_path);
    ami_free(r->username);
    wipe(r->password);
    ami_free(r->channel);
    ami_free(r);
}
