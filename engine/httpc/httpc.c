/*
 * The client: libcurl's multi handle on a libev loop, the transfers in
 * flight, the per-owner bound.
 *
 * libcurl drives itself through two callbacks: "watch this socket for
 * these events" (one ev_io per socket) and "call me back in N ms" (one
 * ev_timer). When either fires we hand the event to curl_multi_socket_action
 * and then collect the transfers it finished. Curl never sleeps and never
 * polls by itself, so every wait is the loop's.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "httpc/httpc_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define MAX_IDLE_CONNECTIONS 64L
#define DELIVER_BATCH 64u
#define START_BATCH 64u

static const char *const kind_names[AMI_HTTPC_KIND_COUNT] = {
    "ok",      "invalid",  "limit",    "refused",  "too_large", "timeout", "dns",
    "connect", "tls",      "redirect", "protocol", "io",        "nomem",
};

const char *ami_httpc_kind_name(ami_httpc_kind_t kind)
{
    return (unsigned)kind < AMI_HTTPC_KIND_COUNT ? kind_names[kind] : "unknown";
}

void ami_httpc_config_default(ami_httpc_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_concurrent = 256;
    cfg->max_per_owner = 64;
    cfg->max_response_bytes = (size_t)1 << 20;
    cfg->max_header_bytes = (size_t)64 << 10;
    cfg->max_request_bytes = (size_t)1 << 20;
    cfg->max_url_bytes = 8192;
    cfg->timeout_ms = 10000;
    cfg->connect_timeout_ms = 3000;
    cfg->max_redirects = 3;
    cfg->verify = true;
    cfg->max_host_labels = 50;
}

static void set_err(ami_httpc_err_t *err, ami_httpc_kind_t kind, const char *fmt, va_list ap)
{
    if (!err)
        return;
    err->kind = kind;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

static int fail(ami_httpc_err_t *err, ami_httpc_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(ami_httpc_err_t *err, ami_httpc_kind_t kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_err(err, kind, fmt, ap);
    va_end(ap);
    return -1;
}

void httpc_refuse(ami_httpc_t *h, httpc_refusal_t why, ami_httpc_err_t *err, ami_httpc_kind_t kind,
                  const char *fmt, ...)
{
    ami_counter_inc(h->m.refused[why]);
    va_list ap;
    va_start(ap, fmt);
    set_err(err, kind, fmt, ap);
    va_end(ap);
}

/* ---- owners (per-script bound) ------------------------------------------------- */

static uint32_t owner_hash(const char *s)
{
    uint32_t x = 2166136261u;
    for (; *s; s++)
        x = (x ^ (unsigned char)*s) * 16777619u;
    return x % HTTPC_OWNER_BUCKETS;
}

static httpc_owner_t **owner_slot(ami_httpc_t *h, const char *key)
{
    httpc_owner_t **p = &h->owners[owner_hash(key)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

/* Entries live while the owner has transfers: at most max_concurrent. */
static httpc_owner_t *owner_acquire(ami_httpc_t *h, const char *owner, ami_httpc_err_t *err)
{
    char key[HTTPC_OWNER_KEY_MAX];
    snprintf(key, sizeof key, "%s", owner);
    httpc_owner_t **slot = owner_slot(h, key);
    if (*slot && (*slot)->active >= h->cfg.max_per_owner) {
        httpc_refuse(h, REFUSED_MAX_PER_OWNER, err, AMI_HTTPC_LIMIT,
                     "%u requests of this script are in flight already (http.max_per_script); wait for "
                     "one to finish", h->cfg.max_per_owner);
        return NULL;
    }
    if (!*slot) {
        httpc_owner_t *o = ami_calloc(1, sizeof *o);
        if (!o || !(o->key = ami_strdup(key))) {
            ami_free(o);
            fail(err, AMI_HTTPC_NOMEM, "out of memory starting an HTTP request");
            return NULL;
        }
        *slot = o;
    }
    (*slot)->active++;
    return *slot;
}

static void owner_release(ami_httpc_t *h, httpc_owner_t *o)
{
    if (!o || --o->active > 0)
        return;
    httpc_owner_t **slot = owner_slot(h, o->key);
    *slot = o->next;
    ami_free(o->key);
    ami_free(o);
}

/* ---- transfers ---------------------------------------------------------------------- */

static void transfer_link(ami_httpc_t *h, ami_httpc_transfer_t *t)
{
    t->linked = true;
    t->prev = NULL;
    t->next = h->transfers;
    if (h->transfers)
        h->transfers->prev = t;
    h->transfers = t;
    h->active++;
    ami_gauge_set(h->m.in_flight, h->active);
}

/* Undo everything a transfer holds; it must already be out of the multi. */
static void transfer_free(ami_httpc_t *h, ami_httpc_transfer_t *t)
{
    if (t->linked) {
        if (t->prev)
            t->prev->next = t->next;
        else
            h->transfers = t->next;
        if (t->next)
            t->next->prev = t->prev;
        h->active--;
        ami_gauge_set(h->m.in_flight, h->active);
    }
    if (t->easy)
        curl_easy_cleanup(t->easy);
    owner_release(h, t->owner);
    curl_slist_free_all(t->headers);
    ami_free(t->url);
    ami_free(t->body);
    ami_buf_deinit(&t->resp_head);
    ami_buf_deinit(&t->resp_body);
    ami_free(t);
}

/* ---- the start queue: at most START_BATCH transfers join curl per loop
 * iteration (curl connects every new transfer in one call: a thousand at
 * once would hold the loop for a while) -------------------------------------- */

static void schedule_more(ami_httpc_t *h)
{
    if (ev_is_active(&h->more))
        return;
    ev_timer_set(&h->more, 0., 0.);
    ev_timer_start(h->loop, &h->more);
}

static void queue_push(ami_httpc_t *h, ami_httpc_transfer_t *t)
{
    t->queued = true;
    t->qnext = NULL;
    t->qprev = h->queue_tail;
    if (h->queue_tail)
        h->queue_tail->qnext = t;
    else
        h->queue_head = t;
    h->queue_tail = t;
    h->nqueued++;
    schedule_more(h);
}

static void queue_remove(ami_httpc_t *h, ami_httpc_transfer_t *t)
{
    if (t->qprev)
        t->qprev->qnext = t->qnext;
    else
        h->queue_head = t->qnext;
    if (t->qnext)
        t->qnext->qprev = t->qprev;
    else
        h->queue_tail = t->qprev;
    t->qprev = t->qnext = NULL;
    t->queued = false;
    h->nqueued--;
}

/* curl would not take it (out of memory): the caller hears it as an answer. */
static void fail_to_start(ami_httpc_t *h, ami_httpc_transfer_t *t, CURLMcode mc)
{
    ami_httpc_response_t res = {0};
    res.err.kind = mc == CURLM_OUT_OF_MEMORY ? AMI_HTTPC_NOMEM : AMI_HTTPC_IO;
    snprintf(res.err.msg, sizeof res.err.msg, "cannot start the request: %s", curl_multi_strerror(mc));
    ami_counter_inc(h->m.errors[res.err.kind]);
    t->done(t->ud, &res);
    transfer_free(h, t);
}

static void start_queued(ami_httpc_t *h)
{
    for (unsigned i = 0; i < START_BATCH && h->queue_head; i++) {
        ami_httpc_transfer_t *t = h->queue_head;
        queue_remove(h, t);
        CURLMcode mc = curl_multi_add_handle(h->multi, t->easy);
        if (mc != CURLM_OK)
            fail_to_start(h, t, mc);
    }
    if (h->queue_head)
        schedule_more(h);
}

ami_httpc_transfer_t *ami_httpc_start(ami_httpc_t *h, const ami_httpc_request_t *req, ami_httpc_done_fn done,
                                      void *ud, ami_httpc_err_t *err)
{
    if (h->active >= h->cfg.max_concurrent) {
        httpc_refuse(h, REFUSED_MAX_CONCURRENT, err, AMI_HTTPC_LIMIT,
                     "%u HTTP requests are in flight already (http.max_concurrent); wait for one to "
                     "finish", h->cfg.max_concurrent);
        return NULL;
    }
    ami_httpc_transfer_t *t = ami_calloc(1, sizeof *t);
    if (!t) {
        fail(err, AMI_HTTPC_NOMEM, "out of memory starting an HTTP request");
        return NULL;
    }
    t->h = h;
    t->done = done;
    t->ud = ud;
    ami_buf_init(&t->resp_head, h->cfg.max_header_bytes);
    ami_buf_init(&t->resp_body, h->cfg.max_response_bytes);
    if (req->owner && !(t->owner = owner_acquire(h, req->owner, err))) {
        transfer_free(h, t);
        return NULL;
    }
    if (httpc_request_prepare(h, t, req, err) < 0) {
        transfer_free(h, t);
        return NULL;
    }
    transfer_link(h, t);
    t->start_ns = ami_now_ns();
    queue_push(h, t);
    return t;
}

void ami_httpc_cancel(ami_httpc_t *h, ami_httpc_transfer_t *t)
{
    if (!t)
        return;
    if (t->queued)
        queue_remove(h, t);
    else
        curl_multi_remove_handle(h->multi, t->easy);
    ami_counter_inc(h->m.cancelled);
    transfer_free(h, t);
}

/* Out of the multi first, so `done` may start or cancel transfers freely. */
static void transfer_finish(ami_httpc_t *h, ami_httpc_transfer_t *t, CURLcode code)
{
    curl_multi_remove_handle(h->multi, t->easy);
    ami_httpc_response_t res;
    ami_httpc_header_t *headers = NULL;
    httpc_result_build(t, code, &res, &headers);
    ami_httpc_done_fn done = t->done;
    void *ud = t->ud;
    done(ud, &res);
    ami_free(headers);
    transfer_free(h, t);
}

/* At most DELIVER_BATCH answers per call: when a thousand arrive at once
 * the rest wait for the next loop iteration (curl keeps them), so their
 * callbacks never hold the loop for long. */
static void deliver_finished(ami_httpc_t *h)
{
    CURLMsg *msg;
    int left = 0;
    unsigned done = 0;
    while (done < DELIVER_BATCH && (msg = curl_multi_info_read(h->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        ami_httpc_transfer_t *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t)
            transfer_finish(h, t, msg->data.result);
        done++;
    }
    if (done == DELIVER_BATCH)
        schedule_more(h);
}

static void on_more(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    start_queued(w->data);
    deliver_finished(w->data);
}

/* ---- the loop glue ---------------------------------------------------------------------- */

static void on_socket_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    httpc_sock_t *s = w->data;
    ami_httpc_t *h = s->h;
    int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(h->multi, w->fd, action, &running); /* may free s */
    deliver_finished(h);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_httpc_t *h = w->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    deliver_finished(h);
}

static void sock_forget(ami_httpc_t *h, httpc_sock_t *s)
{
    ev_io_stop(h->loop, &s->io);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    ami_free(s);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    ami_httpc_t *h = userp;
    httpc_sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s)
            sock_forget(h, s);
        curl_multi_assign(h->multi, fd, NULL);
        return 0;
    }
    if (!s) {
        s = ami_calloc(1, sizeof *s);
        if (!s)
            return -1; /* curl fails the transfer */
        s->h = h;
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        ev_init(&s->io, on_socket_ready);
        s->io.data = s;
        curl_multi_assign(h->multi, fd, s);
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    ev_io_stop(h->loop, &s->io);
    ev_io_set(&s->io, fd, events);
    ev_io_start(h->loop, &s->io);
    return 0;
}

/* Curl asks for a call after timeout_ms (-1: none). Never act from here:
 * curl forbids calling back into the multi from its own callback. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    ami_httpc_t *h = userp;
    ev_timer_stop(h->loop, &h->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&h->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(h->loop, &h->timer);
    }
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

/* Once per process, never undone: OpenSSL cannot be set up twice. */
static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int check_libcurl(ami_httpc_err_t *err)
{
    char why[256];
    if (httpc_curl_load(why, sizeof why) < 0)
        return fail(err, AMI_HTTPC_INVALID, "%s", why);
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return fail(err, AMI_HTTPC_IO, "libcurl failed to initialise: %s", curl_easy_strerror(global_rc));
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!(v->features & CURL_VERSION_ASYNCHDNS))
        return fail(err, AMI_HTTPC_INVALID,
                    "http: libcurl %s resolves names synchronously (no AsynchDNS), which would stall the "
                    "engine's loop on every DNS lookup; install a libcurl built with the threaded resolver "
                    "(Debian: libcurl4, OpenSSL flavour) or remove the http section", v->version);
    if (v->version_num < 0x075500) /* 7.85: CURLOPT_PROTOCOLS_STR */
        return fail(err, AMI_HTTPC_INVALID, "http: libcurl %s is older than 7.85, which the engine needs to "
                                            "restrict requests to http and https", v->version);
    if (!(v->features & CURL_VERSION_SSL))
        return fail(err, AMI_HTTPC_INVALID, "http: libcurl %s has no TLS support; https would not work",
                    v->version);
    return 0;
}

static int copy_config(ami_httpc_t *h, const ami_httpc_config_t *cfg, ami_httpc_err_t *err)
{
    ami_httpc_config_default(&h->cfg);
    if (cfg)
        h->cfg = *cfg;
    h->cfg.ca_file = NULL;
    h->cfg.proxy = NULL;
    if (cfg && cfg->ca_file && !(h->cfg.ca_file = ami_strdup(cfg->ca_file)))
        return fail(err, AMI_HTTPC_NOMEM, "out of memory");
    if (cfg && cfg->proxy && !(h->cfg.proxy = ami_strdup(cfg->proxy)))
        return fail(err, AMI_HTTPC_NOMEM, "out of memory");
    if (!h->cfg.max_concurrent || !h->cfg.max_per_owner || !h->cfg.timeout_ms || !h->cfg.connect_timeout_ms ||
        !h->cfg.max_response_bytes || !h->cfg.max_header_bytes || !h->cfg.max_url_bytes)
        return fail(err, AMI_HTTPC_INVALID, "http: limits must be greater than zero");
    return 0;
}

static int setup_multi(ami_httpc_t *h, ami_httpc_err_t *err)
{
    h->multi = curl_multi_init();
    if (!h->multi)
        return fail(err, AMI_HTTPC_NOMEM, "cannot create libcurl's multi handle");
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, MAX_IDLE_CONNECTIONS);
    return 0;
}

ami_httpc_t *ami_httpc_new(struct ev_loop *loop, const ami_httpc_config_t *cfg, ami_metrics_t *metrics,
                           ami_logger_t *log, ami_httpc_err_t *err)
{
    if (check_libcurl(err) < 0)
        return NULL;
    ami_httpc_t *h = ami_calloc(1, sizeof *h);
    if (!h) {
        fail(err, AMI_HTTPC_NOMEM, "out of memory creating the HTTP client");
        return NULL;
    }
    h->loop = loop;
    h->log = log;
    ev_init(&h->timer, on_timer);
    h->timer.data = h;
    ev_init(&h->more, on_more);
    h->more.data = h;
    if (copy_config(h, cfg, err) < 0 || httpc_metrics_init(h, metrics) < 0 || setup_multi(h, err) < 0) {
        if (err && !err->msg[0])
            fail(err, AMI_HTTPC_NOMEM, "out of memory creating the HTTP client");
        ami_httpc_free(h);
        return NULL;
    }
    if (!h->cfg.verify && log)
        AMI_LOG(log, AMI_LOG_WARN, "http: TLS verification is off (http.verify = false): any server can "
                                   "pose as the one a script calls");
    return h;
}

void ami_httpc_free(ami_httpc_t *h)
{
    if (!h)
        return;
    while (h->transfers) {
        ami_httpc_transfer_t *t = h->transfers;
        if (t->queued)
            queue_remove(h, t);
        else
            curl_multi_remove_handle(h->multi, t->easy);
        transfer_free(h, t);
    }
    if (h->multi)
        curl_multi_cleanup(h->multi);
    while (h->socks)
        sock_forget(h, h->socks);
    ev_timer_stop(h->loop, &h->timer);
    ev_timer_stop(h->loop, &h->more);
    httpc_metrics_deinit(h);
    ami_free((char *)h->cfg.ca_file);
    ami_free((char *)h->cfg.proxy);
    ami_free(h);
}

void ami_httpc_note_invalid(ami_httpc_t *h)
{
    ami_counter_inc(h->m.refused[REFUSED_INVALID]);
}

uint32_t ami_httpc_active(const ami_httpc_t *h)
{
    return h->active;
}

uint32_t ami_httpc_queued(const ami_httpc_t *h)
{
    return h->nqueued;
}

const ami_httpc_config_t *ami_httpc_config(const ami_httpc_t *h)
{
    return &h->cfg;
}
