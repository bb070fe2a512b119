/*
 * The AMI session of one server connection (private to session/): what is
 * said over the socket once it is open. Sending actions (registered with
 * the correlation registry, serialised, their deadlines on one timer;
 * Originate forced asynchronous), the login (plain, or MD5 over a
 * Challenge), the session settings (Events mask, Filters) re-applied after
 * every login. The heartbeat is conn_heartbeat.c's; the socket, the state
 * machine and reconnecting are conn.c's; failures here end in
 * ami_conn_force_close.
 * Loop thread only.
 */
#include <ev.h>
#include <stdio.h>
#include <string.h>

#include "session/conn_internal.h"
#include "session/conn_metrics.h"
#include "transport/tcp.h"
#include "util/clock.h"
#include "util/md5.h"

static int64_t now_ms(void)
{
    return ami_now_ms();
}

/* ---- actions --------------------------------------------------------------------- */

void conn_arm_action_timer(ami_conn_t *c)
{
    int64_t next = ami_registry_next_deadline(c->reg);
    if (next == 0) {
        ev_timer_stop(c->env.loop, &c->action_timer);
        c->armed_deadline = 0;
        return;
    }
    if (ev_is_active(&c->action_timer) && c->armed_deadline == next)
        return;
    int64_t delay = next - now_ms();
    ev_timer_stop(c->env.loop, &c->action_timer);
    ev_timer_set(&c->action_timer, delay > 0 ? (double)delay / 1000.0 : 0.0, 0.);
    ev_timer_start(c->env.loop, &c->action_timer);
    c->armed_deadline = next;
}

static void on_action_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_conn_t *c = w->data;
    c->armed_deadline = 0;
    ami_registry_expire(c->reg, now_ms());
    conn_arm_action_timer(c);
}

static void log_sent(ami_conn_t *c, const char *name, const char *id, const ami_kv_t *hdrs, size_t n)
{
    if (!ami_log_enabled(c->env.log, AMI_LOG_DEBUG))
        return;
    char text[512];
    ami_action_describe(text, sizeof text, name, id, hdrs, n);
    AMI_LOG(c->env.log, AMI_LOG_DEBUG, "action sent", AMI_F_STR("server_key", c->opt.server_key),
            AMI_F_STR("action", text));
}

/* Register, serialise into the write buffer, schedule the flush. The state
 * check is the caller's: login actions go out before CONNECTED. */
int conn_send_spec(ami_conn_t *c, const ami_action_req_t *req, bool reserved, ami_pending_cb cb,
                   void *ud, uint64_t *id_out, ami_err_t *err)
{
    uint64_t id = ami_actionid_next(c->env.ids);
    char idtext[AMI_ACTIONID_MAX];
    ami_actionid_format(c->env.ids, id, idtext);
    uint32_t timeout = req->timeout_ms ? req->timeout_ms : c->opt.action_timeout_ms;
    int64_t start = ami_now_ns();
    ami_pending_spec_t spec = {
        .id = id, .action = req->name, .strategy = req->strategy,
        .completion_event = req->completion_event, .deadline_ms = start / 1000000 + timeout,
        .timeout_ms = timeout, .start_ns = start, .cb = cb, .ud = ud, .reserved = reserved,
    };
    if (ami_registry_add(c->reg, &spec, err) < 0)
        return -1;
    if (ami_write_action(ami_tcp_wbuf(c->tcp), req->name, idtext, req->hdrs, req->nhdrs, err) < 0) {
        ami_registry_cancel(c->reg, id);
        return -1;
    }
    ami_tcp_schedule_flush(c->tcp);
    log_sent(c, req->name, idtext, req->hdrs, req->nhdrs);
    ami_conn_metrics_sent(&c->m);
    if (c->obs.on_sent)
        c->obs.on_sent(c->obs.ud, c, id, req->name);
    if (!ev_is_active(&c->action_timer) || spec.deadline_ms < c->armed_deadline)
        conn_arm_action_timer(c);
    if (id_out)
        *id_out = id;
    return 0;
}

int conn_send_raw(ami_conn_t *c, const ami_action_req_t *req, ami_pending_cb cb, void *ud,
                  uint64_t *id_out, ami_err_t *err)
{
    return conn_send_spec(c, req, false, cb, ud, id_out, err);
}

/* Originate must be asynchronous: force "Async: true", complete on OriginateResponse. */
static int send_originate(ami_conn_t *c, const ami_action_req_t *req, ami_pending_cb cb, void *ud,
                          uint64_t *id, ami_err_t *err)
{
    if (req->nhdrs >= AMI_WRITER_MAX_LINES)
        return ami_err_set(err, AMI_E_LIMIT, "Originate has %zu headers; Asterisk accepts at most %d lines",
                           req->nhdrs, AMI_WRITER_MAX_LINES);
    ami_kv_t hdrs[AMI_WRITER_MAX_LINES];
    size_t n = 0;
    for (size_t i = 0; i < req->nhdrs; i++)
        if (!ami_str_ieq(req->hdrs[i].key, req->hdrs[i].key_len, "Async", 5))
            hdrs[n++] = req->hdrs[i];
    hdrs[n++] = AMI_KV("Async", "true");
    ami_action_req_t async = *req;
    async.hdrs = hdrs;
    async.nhdrs = n;
    async.strategy = AMI_STRATEGY_EVENT;
    async.completion_event = "OriginateResponse";
    return conn_send_raw(c, &async, cb, ud, id, err);
}

int ami_conn_send(ami_conn_t *c, const ami_action_req_t *req, ami_pending_cb cb, void *ud,
                  uint64_t *id, ami_err_t *err)
{
    ami_err_t local;
    if (!err)
        err = &local;
    int rc;
    if (c->state != AMI_CONN_CONNECTED || c->stopping) {
        rc = ami_err_set(err, c->stopping ? AMI_E_SHUTDOWN : AMI_E_NOT_CONNECTED,
                         "server %s is %s%s%s: the action was not sent", c->opt.server_key,
                         c->stopping ? "stopping" : ami_conn_state_name(c->state),
                         c->last_error[0] && !c->stopping ? ", last error: " : "",
                         c->stopping ? "" : c->last_error);
    } else if (!req->name || !cb) {
        rc = ami_err_set(err, AMI_E_INVALID, "an action needs a name and a callback");
    } else if (ami_str_ieq(req->name, strlen(req->name), "Originate", 9)) {
        rc = send_originate(c, req, cb, ud, id, err);
    } else {
        ami_action_req_t r = *req;
        if (r.strategy == AMI_STRATEGY_AUTO && ami_str_ieq(r.name, strlen(r.name), "Command", 7))
            r.strategy = AMI_STRATEGY_COMMAND;
        rc = conn_send_raw(c, &r, cb, ud, id, err);
    }
    if (rc < 0)
        ami_conn_metrics_refused(&c->m, err->code);
    return rc;
}

bool ami_conn_cancel(ami_conn_t *c, uint64_t id)
{
    if (!ami_registry_cancel(c->reg, id))
        return false;
    if (c->obs.on_cancel)
        c->obs.on_cancel(c->obs.ud, c, id);
    return true;
}

void conn_on_final(void *ud, const ami_pending_note_t *n)
{
    ami_conn_t *c = ud;
    /* An answer is timed by the clock reading taken while handling the
     * input that held it (at most 16 messages old; one reading per answer
     * is a few percent of a Lua round trip). Anything else (a timeout, an
     * action sent and failed within this input) reads the clock. */
    bool from_input = c->in_dispatch && c->input_ns >= n->start_ns;
    ami_conn_metrics_final(&c->m, n, from_input ? c->input_ns : ami_now_ns());
    if (c->obs.on_final)
        c->obs.on_final(c->obs.ud, c, n);
}

/* ---- login ---------------------------------------------------------------------------- */

static void on_server_setting_done(void *ud, const ami_pending_note_t *n)
{
    ami_conn_t *c = ud;
    if (n->signal == AMI_PENDING_FAILED && n->status != AMI_E_DISCONNECTED &&
        n->status != AMI_E_HEARTBEAT && n->status != AMI_E_SHUTDOWN)
        AMI_LOG(c->env.log, AMI_LOG_ERROR, "server refused a session setting",
                AMI_F_STR("server_key", c->opt.server_key), AMI_F_STR("action", n->action),
                AMI_F_STR("reason", n->reason ? n->reason : ""));
}

/* Events and Filter live in Asterisk's session: apply them after every login. */
static void apply_session_settings(ami_conn_t *c)
{
    if (c->opt.events) {
        ami_kv_t h[] = {ami_kv("EventMask", c->opt.events)};
        ami_action_req_t req = {.name = "Events", .hdrs = h, .nhdrs = 1, .strategy = AMI_STRATEGY_SINGLE};
        conn_send_raw(c, &req, on_server_setting_done, c, NULL, NULL);
    }
    for (size_t i = 0; i < c->opt.nfilters; i++) {
        ami_kv_t h[] = {AMI_KV("Operation", "Add"), ami_kv("Filter", c->opt.filters[i])};
        ami_action_req_t req = {.name = "Filter", .hdrs = h, .nhdrs = 2, .strategy = AMI_STRATEGY_SINGLE};
        conn_send_raw(c, &req, on_server_setting_done, c, NULL, NULL);
    }
}

static void logged_in(ami_conn_t *c)
{
    ev_timer_stop(c->env.loop, &c->login_timer);
    c->phase = LOGGED_IN;
    c->last_error[0] = '\0';
    conn_session_healthy_after(c, c->opt.backoff_reset_ms);
    c->stats.logins++;
    AMI_LOG(c->env.log, AMI_LOG_INFO, "logged in", AMI_F_STR("server_key", c->opt.server_key),
            AMI_F_STR("peer", ami_tcp_peer(c->tcp)), AMI_F_STR("username", c->opt.username));
    apply_session_settings(c);
    conn_heartbeat_start(c);
    conn_set_state(c, AMI_CONN_CONNECTED, NULL);
}

static void on_login_done(void *ud, const ami_pending_note_t *n)
{
    ami_conn_t *c = ud;
    if (n->signal == AMI_PENDING_DONE) {
        logged_in(c);
        return;
    }
    if (n->status != AMI_E_SERVER && n->status != AMI_E_TIMEOUT)
        return; /* closed meanwhile; the close path already ran */
    c->stats.login_failures++;
    ami_conn_metrics_login_failure(&c->m);
    char reason[AMI_ERR_MSG_MAX];
    snprintf(reason, sizeof reason,
             "login to %s as \"%.40s\" refused: %.80s; check username and secret (and the "
             "manager.conf permit/deny lists)",
             c->opt.server_key, c->opt.username, n->reason ? n->reason : "no answer");
    AMI_LOG(c->env.log, AMI_LOG_ERROR, "login failed", AMI_F_STR("server_key", c->opt.server_key),
            AMI_F_STR("reason", reason));
    ami_conn_force_close(c, AMI_E_AUTH, reason);
}

static void send_login(ami_conn_t *c, const char *challenge)
{
    ami_kv_t h[3];
    size_t n = 0;
    char key[33];
    if (challenge) {
        ami_md5_t md5;
        ami_md5_init(&md5);
        ami_md5_update(&md5, challenge, strlen(challenge));
        ami_md5_update(&md5, c->opt.secret, strlen(c->opt.secret));
        ami_md5_final_hex(&md5, key);
        h[n++] = AMI_KV("AuthType", "MD5");
        h[n++] = ami_kv("Username", c->opt.username);
        h[n++] = ami_kv("Key", key);
    } else {
        h[n++] = ami_kv("Username", c->opt.username);
        h[n++] = ami_kv("Secret", c->opt.secret);
    }
    ami_action_req_t req = {.name = "Login", .hdrs = h, .nhdrs = n, .strategy = AMI_STRATEGY_SINGLE,
                            .timeout_ms = c->opt.login_timeout_ms};
    ami_err_t err;
    c->phase = WAIT_LOGIN;
    if (conn_send_raw(c, &req, on_login_done, c, NULL, &err) < 0)
        ami_conn_force_close(c, err.code, err.msg);
}

static void on_challenge_done(void *ud, const ami_pending_note_t *n)
{
    ami_conn_t *c = ud;
    if (n->signal == AMI_PENDING_DONE) {
        const char *challenge = ami_msg_get(n->msg, "Challenge");
        if (challenge && *challenge) {
            send_login(c, challenge);
            return;
        }
        ami_conn_force_close(c, AMI_E_PROTOCOL, "Challenge answer has no Challenge header");
        return;
    }
    if (n->status == AMI_E_SERVER || n->status == AMI_E_TIMEOUT)
        on_login_done(ud, n);
}

void conn_begin_login(ami_conn_t *c)
{
    if (c->opt.auth != AMI_AUTH_MD5) {
        send_login(c, NULL);
        return;
    }
    ami_kv_t h[] = {AMI_KV("AuthType", "MD5")};
    ami_action_req_t req = {.name = "Challenge", .hdrs = h, .nhdrs = 1,
                            .strategy = AMI_STRATEGY_SINGLE, .timeout_ms = c->opt.login_timeout_ms};
    ami_err_t err;
    c->phase = WAIT_CHALLENGE;
    if (conn_send_raw(c, &req, on_challenge_done, c, NULL, &err) < 0)
        ami_conn_force_close(c, err.code, err.msg);
}

static void on_login_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_conn_t *c = w->data;
    char reason[160];
    snprintf(reason, sizeof reason, "%s did not complete login within %u ms (%s)", c->opt.server_key,
             c->opt.login_timeout_ms, c->phase == WAIT_BANNER ? "no banner" : "no login answer");
    ami_conn_force_close(c, AMI_E_TIMEOUT, reason);
}

/* ---- timers -------------------------------------------------------------------------- */

void conn_session_init_timers(ami_conn_t *c)
{
    ev_init(&c->action_timer, on_action_timer);
    ev_init(&c->login_timer, on_login_timer);
    c->action_timer.data = c->login_timer.data = c;
    conn_heartbeat_init(c);
}
