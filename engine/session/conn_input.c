/*
 * A connection's input (see conn.h): bytes from the transport into the
 * parser, messages routed to their pending action or to the event callback,
 * within the read budget.
 *
 * The budget keeps one loop iteration short whatever the read size and the
 * number of servers: a 64 KiB read holds ~700 Ping responses or ~200
 * events, and 256 servers flooding at once hand the loop 16 MiB in one
 * iteration. A connection handles at most env.read_budget messages per
 * iteration; once the iteration has spent env.read_budget_us on input (the
 * clock is read every CLOCK_EVERY messages) a wake-up takes one message
 * and reads nothing new. What is left stays in the parser's buffer,
 * reading pauses (the kernel holds back the peer) and the connection joins
 * the queue of its pace (every connection of a client shares one), which
 * the next iterations serve in turn in their check phase, before their I/O
 * callbacks, without waiting for the socket (an idle watcher keeps the
 * loop from blocking meanwhile): each iteration serves connections from
 * the head until its input time is spent, so a connection whose turn does
 * not come costs nothing, and one whose turn came goes to the back with
 * what it has left. A turn that empties the buffer resumes reading at
 * once, inside the turn. Order is the parser's: nothing is skipped or
 * handled twice. Loop thread only.
 */
#include <ev.h>

#include "session/conn_internal.h"
#include "session/conn_metrics.h"
#include "transport/tcp.h"
#include "util/clock.h"

#define DEFAULT_READ_BUDGET 512u
#define DEFAULT_READ_BUDGET_US 200u
#define CLOCK_EVERY 16u

static void drain_start(ami_conn_t *c);
static bool iteration_spent(ami_conn_t *c);
static void on_pace_drain(struct ev_loop *loop, ev_check *w, int revents);
static void on_pace_idle(struct ev_loop *loop, ev_idle *w, int revents);

/* No read once the iteration has spent its input time (with many servers
 * ready at once, copying a chunk from each would be the iteration's cost),
 * but never twice in a row: the next wake-up reads whatever the time.
 * Nothing complete is buffered here (a wake-up handles its messages or
 * queues), so the socket's readiness brings that wake-up in the next
 * iteration: a quiet server's event waits one iteration, not a turn behind
 * every flooding server in the queue. A TLS session holding input no
 * readiness would announce queues instead, and reads in its turn. */
char *conn_input_read_buffer(void *ud, size_t want, size_t *got)
{
    ami_conn_t *c = ud;
    if (!c->read_deferred && iteration_spent(c)) {
        c->read_deferred = true;
        *got = 0;
        if (!ami_tcp_skip_read(c->tcp))
            drain_start(c);
        return NULL;
    }
    c->read_deferred = false;
    return ami_parser_reserve(&c->parser, want, got);
}

static void handle_message(ami_conn_t *c, const ami_msg_t *msg)
{
    if (c->obs.on_message)
        c->obs.on_message(c->obs.ud, c, msg);
    if (msg->kind == AMI_MSG_BANNER) {
        if (c->phase == WAIT_BANNER)
            conn_begin_login(c);
        return;
    }
    uint64_t gen = c->close_gen;
    ami_registry_took_t took = ami_registry_on_message(c->reg, msg);
    /* The completion event of an action (OriginateResponse) is also an
     * event like any other: subscribers that ask for it see it, after the
     * action's own callback. List items and responses are the action's. */
    if (took != AMI_TOOK_NOTHING && (took != AMI_TOOK_COMPLETION || gen != c->close_gen))
        return;
    if (msg->kind == AMI_MSG_EVENT) {
        c->stats.events++;
        ami_conn_metrics_event(&c->m);
        if (c->cb.on_event)
            c->cb.on_event(c->ud, c, msg);
    }
}

/* One odd line relayed by the server (any AMI user may send UserEvent) is
 * bad data of its message: counted always, logged at most once per
 * MALFORMED_LOG_EVERY_S so a peer cannot flood the log either. */
#define MALFORMED_LOG_EVERY_S 10.0

static void note_malformed_lines(ami_conn_t *c)
{
    uint64_t total = ami_parser_stats(&c->parser)->bad_lines;
    if (total == c->bad_lines_seen)
        return;
    uint64_t fresh = total - c->bad_lines_seen;
    c->bad_lines_seen = total;
    c->stats.malformed_lines += fresh;
    c->bad_lines_unlogged += fresh;
    ami_conn_metrics_malformed(&c->m, fresh);
    double now = ev_now(c->env.loop);
    if (c->bad_lines_logged_at > 0 && now - c->bad_lines_logged_at < MALFORMED_LOG_EVERY_S)
        return;
    const ami_parser_bad_t *bad = ami_parser_last_bad(&c->parser);
    AMI_LOG(c->env.log, AMI_LOG_WARN, "malformed line dropped from a message",
            AMI_F_STR("server_key", c->opt.server_key), AMI_F_STR("kind", ami_bad_kind_name(bad->kind)),
            AMI_F_UINT("line", bad->line), AMI_F_STR("excerpt", bad->excerpt),
            AMI_F_UINT("dropped", c->bad_lines_unlogged), AMI_F_UINT("total", c->stats.malformed_lines));
    c->bad_lines_unlogged = 0;
    c->bad_lines_logged_at = now;
}

/* The iteration's input clock starts at the first message any connection
 * sharing the pace handles in it (monotonic: a step of the system clock or
 * a handler refreshing the loop's time, as ami.sleep does, cannot move it). */
static bool iteration_spent(ami_conn_t *c)
{
    ami_conn_pace_t *p = c->pace;
    unsigned it = ev_iteration(c->env.loop);
    c->input_ns = ami_now_ns();
    if (p->iteration != it) {
        p->iteration = it;
        p->started_ns = c->input_ns;
        return false;
    }
    return c->input_ns - p->started_ns > c->budget_ns;
}

/* The pace's watchers, made the first time a connection of it queues. */
static void pace_ready(ami_conn_pace_t *p, struct ev_loop *loop)
{
    if (p->watchers_ready)
        return;
    p->loop = loop;
    ev_check_init(&p->drain_check, on_pace_drain);
    ev_idle_init(&p->drain_idle, on_pace_idle);
    p->drain_check.data = p->drain_idle.data = p;
    p->watchers_ready = true;
}

/* Link c into its pace's queue before `next` (NULL: at the end). */
static void drain_link(ami_conn_pace_t *p, ami_conn_t *c, ami_conn_t *next)
{
    c->drain_next = next;
    c->drain_prev = next ? next->drain_prev : p->drain_tail;
    if (c->drain_prev)
        c->drain_prev->drain_next = c;
    else
        p->drain_head = c;
    if (next)
        next->drain_prev = c;
    else
        p->drain_tail = c;
    c->draining = true;
}

/* Input left: reading pauses and the connection queues. One back from its
 * turn goes to the end; one that queues from a read (a quiet server with
 * two events in one chunk) goes ahead of those served in this iteration,
 * so it does not wait behind a flooding server's next turn too. */
static void drain_start(ami_conn_t *c)
{
    ami_tcp_pause_reading(c->tcp);
    if (c->draining)
        return;
    ami_conn_pace_t *p = c->pace;
    pace_ready(p, c->env.loop);
    unsigned it = ev_iteration(c->env.loop);
    bool served_now = p->served_from && p->served_it == it;
    if (c->drained_in == it) {
        drain_link(p, c, NULL);
        if (!served_now) {
            p->served_from = c;
            p->served_it = it;
        }
    } else {
        drain_link(p, c, served_now ? p->served_from : NULL);
    }
    ev_check_start(p->loop, &p->drain_check);
    ev_idle_start(p->loop, &p->drain_idle);
}

static void drain_unlink(ami_conn_t *c)
{
    ami_conn_pace_t *p = c->pace;
    if (p->served_from == c)
        p->served_from = c->drain_next;
    if (c->drain_prev)
        c->drain_prev->drain_next = c->drain_next;
    else
        p->drain_head = c->drain_next;
    if (c->drain_next)
        c->drain_next->drain_prev = c->drain_prev;
    else
        p->drain_tail = c->drain_prev;
    c->drain_next = c->drain_prev = NULL;
    c->draining = false;
}

void conn_input_stop(ami_conn_t *c)
{
    if (!c->draining)
        return;
    drain_unlink(c);
    ami_conn_pace_t *p = c->pace;
    if (!p->drain_head) {
        ev_check_stop(p->loop, &p->drain_check);
        ev_idle_stop(p->loop, &p->drain_idle);
    }
}

/* How many messages this wake-up may take: what is left of the connection's
 * budget in this iteration (a drain and a read may share one), one once the
 * iteration has spent its input time. */
static uint32_t wakeup_cap(ami_conn_t *c)
{
    unsigned it = ev_iteration(c->env.loop);
    if (c->budget_iteration != it) {
        c->budget_iteration = it;
        c->budget_used = 0;
    }
    uint32_t left = c->budget - c->budget_used;
    return left && iteration_spent(c) ? 1 : left;
}

/* Messages up to the budget. 1: stopped at the budget, more may be left;
 * 0: every complete message handled; -1: the session closed meanwhile. */
static int dispatch_some(ami_conn_t *c)
{
    uint64_t gen = c->close_gen;
    uint32_t cap = wakeup_cap(c);
    ami_msg_t msg;
    ami_err_t err;
    int rc = 1;
    c->in_dispatch = true;
    for (uint32_t n = 0; n < cap && (rc = ami_parser_next(&c->parser, &msg, &err)) == 1;) {
        handle_message(c, &msg);
        if (gen != c->close_gen)
            break;
        n++;
        if (++c->budget_used % CLOCK_EVERY == 0 && iteration_spent(c))
            break;
    }
    c->in_dispatch = false;
    note_malformed_lines(c);
    if (gen != c->close_gen) {
        ami_parser_reset(&c->parser); /* closed while dispatching */
        return -1;
    }
    if (rc < 0) {
        c->stats.protocol_errors++;
        ami_conn_metrics_protocol_error(&c->m);
        ami_conn_force_close(c, err.code == AMI_E_LIMIT ? AMI_E_PROTOCOL : err.code, err.msg);
        return -1;
    }
    return rc == 1 ? 1 : 0;
}

void conn_input_on_read(void *ud, size_t n)
{
    ami_conn_t *c = ud;
    c->stats.bytes_in += n;
    ami_parser_commit(&c->parser, n);
    if (dispatch_some(c) == 1) {
        ami_conn_metrics_budget_hit(&c->m);
        drain_start(c);
    }
}

/* One turn: input left over again goes to the end of the queue. */
static void drain_turn(ami_conn_t *c)
{
    c->drained_in = ev_iteration(c->env.loop);
    int rc = dispatch_some(c);
    if (rc == 1) {
        ami_conn_metrics_budget_hit(&c->m);
        if (c->draining) {
            drain_unlink(c);
            drain_start(c);
        }
        return;
    }
    conn_input_stop(c);
    if (rc == 0)
        ami_tcp_resume_reading(c->tcp);
}

/* The queue in order, each connection once per iteration, until the
 * iteration has spent its input time (the first turn always runs, so
 * input moves in every iteration). A connection whose turn does not come
 * costs nothing: with hundreds of servers flooding, visiting each in every
 * iteration for a message or two (its state and its buffer cold in the
 * cache each time) cost more than the messages. */
static void on_pace_drain(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)revents;
    ami_conn_pace_t *p = w->data;
    unsigned it = ev_iteration(loop);
    ami_conn_t *c;
    while ((c = p->drain_head) && c->drained_in != it) {
        drain_turn(c);
        if (p->drain_head && iteration_spent(p->drain_head))
            break;
    }
}

static void on_pace_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents; /* only there so that the loop polls without blocking */
}

void conn_input_init(ami_conn_t *c)
{
    c->budget = c->env.read_budget ? c->env.read_budget : DEFAULT_READ_BUDGET;
    c->budget_ns = (int64_t)(c->env.read_budget_us ? c->env.read_budget_us : DEFAULT_READ_BUDGET_US) * 1000;
    c->pace = c->env.pace ? c->env.pace : &c->own_pace;
}
