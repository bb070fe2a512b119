/*
 * The heartbeat of one server connection (private to session/; see conn.h
 * for the contract and docs/configuration.md for the detection time).
 *
 * Rounds, on the loop's clock: a Ping goes out every interval I (one
 * repeating timer, so rounds do not drift); T (timeout <= I) after each
 * Ping the round is judged. Answered in time: the failure count goes back
 * to 0. Not answered, answered with an error, or not sent at all (the
 * write buffer is over its high-water mark): one failure, and the Ping is
 * cancelled so a late Pong is ignored. At max_failures consecutive
 * failures the connection is force-closed ("Max heartbeat failures").
 * So a server that goes silent is closed exactly N*I + T after the last
 * answered Ping (or the login) went out, whatever loads the connection.
 *
 * When T == I the judgement and the next Ping are due together; the Ping's
 * timer judges the open round first, so the order of the two timers does
 * not matter. Loop thread only.
 */
#include <ev.h>
#include <stdio.h>
#include <string.h>

#include "session/conn_internal.h"
#include "session/conn_metrics.h"

/* coverage-begin: seed-3.1 (heartbeat rounds, failures to force close) */
static void fail_round(ami_conn_t *c, const char *why)
{
    c->hb_failures++;
    c->stats.heartbeat_failures++;
    ami_conn_metrics_heartbeat_failure(&c->m);
    AMI_LOG(c->env.log, AMI_LOG_WARN, "heartbeat failed", AMI_F_STR("server_key", c->opt.server_key),
            AMI_F_UINT("failures", c->hb_failures), AMI_F_UINT("max", c->opt.heartbeat_max_failures),
            AMI_F_STR("reason", why));
    if (c->hb_failures >= c->opt.heartbeat_max_failures)
        ami_conn_force_close(c, AMI_E_HEARTBEAT, "Max heartbeat failures");
}

static void judge_round(ami_conn_t *c)
{
    ev_timer_stop(c->env.loop, &c->hb_check_timer);
    c->hb_round_open = false;
    if (c->hb_answered)
        return;
    if (c->ping_id) {
        ami_conn_cancel(c, c->ping_id); /* a late Pong is now unmatched (observers hear of it) */
        c->ping_id = 0;
    }
    char why[200];
    if (c->hb_problem[0])
        snprintf(why, sizeof why, "%s", c->hb_problem);
    else
        snprintf(why, sizeof why, "no Pong within %u ms", c->opt.heartbeat_timeout_ms);
    fail_round(c, why);
}

static void on_ping_done(void *ud, const ami_pending_note_t *n)
{
    ami_conn_t *c = ud;
    c->ping_id = 0;
    if (n->signal == AMI_PENDING_DONE) {
        c->hb_answered = true;
        c->hb_failures = 0;
        return;
    }
    if (n->status == AMI_E_SERVER)
        snprintf(c->hb_problem, sizeof c->hb_problem, "Ping answered with an error: %.100s",
                 n->reason ? n->reason : "");
    /* Other failures mean the session is going away; the round dies with it. */
}

static void send_ping(ami_conn_t *c)
{
    c->hb_round_open = true;
    c->hb_answered = false;
    c->hb_problem[0] = '\0';
    /* The round is judged at T; the registry's own deadline is only a
     * backstop past that, so the two never race. */
    ami_action_req_t ping = {.name = "Ping", .strategy = AMI_STRATEGY_SINGLE,
                             .timeout_ms = c->opt.heartbeat_timeout_ms + c->opt.heartbeat_interval_ms};
    ami_err_t err;
    if (conn_send_spec(c, &ping, true, on_ping_done, c, &c->ping_id, &err) < 0) {
        c->ping_id = 0;
        snprintf(c->hb_problem, sizeof c->hb_problem, "Ping not sent: %.120s", err.msg);
    }
}

/* Both timers run only while the session is logged in: every close stops
 * them (conn_heartbeat_stop). */
static void on_check_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_conn_t *c = w->data;
    if (c->hb_round_open)
        judge_round(c);
}

static void on_ping_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    ami_conn_t *c = w->data;
    if (c->hb_round_open) {
        judge_round(c);
        if (c->state != AMI_CONN_CONNECTED)
            return; /* that was the last failure allowed */
    }
    send_ping(c);
    /* Judge T after this round's scheduled start (its timer's next expiry
     * minus I), not after now: a late wake-up does not stretch the round. */
    double after = ev_timer_remaining(loop, w) - c->opt.heartbeat_interval_ms / 1000.0 +
                   c->opt.heartbeat_timeout_ms / 1000.0;
    ev_timer_set(&c->hb_check_timer, after > 0 ? after : 0., 0.);
    ev_timer_start(loop, &c->hb_check_timer);
}

void conn_heartbeat_init(ami_conn_t *c)
{
    ev_init(&c->heartbeat_timer, on_ping_timer);
    ev_init(&c->hb_check_timer, on_check_timer);
    c->heartbeat_timer.data = c->hb_check_timer.data = c;
}

void conn_heartbeat_start(ami_conn_t *c)
{
    c->hb_failures = 0;
    c->hb_round_open = false;
    if (!c->opt.heartbeat_interval_ms)
        return;
    double every = c->opt.heartbeat_interval_ms / 1000.0;
    ev_timer_set(&c->heartbeat_timer, every, every);
    ev_timer_start(c->env.loop, &c->heartbeat_timer);
}

void conn_heartbeat_stop(ami_conn_t *c)
{
    ev_timer_stop(c->env.loop, &c->heartbeat_timer);
    ev_timer_stop(c->env.loop, &c->hb_check_timer);
    c->hb_round_open = false;
    c->ping_id = 0;
}
/* coverage-end: seed-3.1 */
