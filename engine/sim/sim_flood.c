/*
 * The event flood: the benchmark load generator.
 *
 * A block of realistic call events (Newchannel, Newstate, VarSet, Hangup,
 * DeviceStateChange shaped like the fixtures) is rendered once per node.
 * At a rate, a timer appends the due number of events to every logged-in
 * session's output each tick. At max speed (rate < 0) nothing is copied: the
 * write watcher sends straight from the block until the socket would block,
 * finishing a block before any queued response so messages never interleave.
 * Over TLS a blocked write must be retried with the same bytes, so there each
 * whole block is staged into the session's output instead, behind what is
 * queued there.
 * A session with filters or a narrower event mask gets its own filtered copy
 * of the block, built once.
 */
#include <stdio.h>
#include <string.h>

#include "sim/sim_internal.h"
#include "util/alloc.h"

#define FLOOD_EVENTS 4096
#define FLOOD_TICK_S 0.005
#define FLOOD_WRITE_BUDGET (4u << 20)

static void block_free(sim_evblock_t *b)
{
    ami_free(b->data);
    ami_free(b->offs);
    memset(b, 0, sizeof *b);
}

/* Event i belongs to call i / 5: a call's five events describe one
 * channel (its name, caller and Uniqueid), as a real call's do. */
static void fake_channel(sim_chan_t *c, unsigned i, long long epoch)
{
    memset(c, 0, sizeof *c);
    unsigned call = i / 5;
    unsigned ext = 1001 + call % 50, dialled = 2001 + call % 40;
    snprintf(c->name, sizeof c->name, "PJSIP/%u-%08x", ext, call);
    snprintf(c->cid_num, sizeof c->cid_num, "%u", ext);
    snprintf(c->cid_name, sizeof c->cid_name, "User %u", ext);
    snprintf(c->conn_num, sizeof c->conn_num, "%u", dialled);
    snprintf(c->conn_name, sizeof c->conn_name, "<unknown>");
    snprintf(c->context, sizeof c->context, "from-internal");
    snprintf(c->exten, sizeof c->exten, "%u", dialled);
    snprintf(c->uniqueid, sizeof c->uniqueid, "%lld.%u", epoch, call);
    snprintf(c->linkedid, sizeof c->linkedid, "%s", c->uniqueid);
    c->priority = 1;
}

static void render_one(ami_buf_t *b, unsigned i, long long epoch)
{
    sim_chan_t c;
    fake_channel(&c, i, epoch);
    switch (i % 5) {
    case 0:
        c.state = 4;
        sim_ev_begin(b, "Newchannel", "call,all");
        sim_chan_block(b, "", &c);
        break;
    case 1:
        c.state = 6;
        sim_ev_begin(b, "Newstate", "call,all");
        sim_chan_block(b, "", &c);
        break;
    case 2:
        c.state = 6;
        sim_ev_begin(b, "VarSet", "dialplan,all");
        sim_chan_block(b, "", &c);
        sim_put(b, "Variable", "BRIDGEPEER");
        sim_putf(b, "Value", "PJSIP/%s-%08x", c.exten, i / 5 + 1);
        break;
    case 3:
        c.state = 6;
        sim_ev_begin(b, "Hangup", "call,all");
        sim_chan_block(b, "", &c);
        sim_put(b, "Cause", "16");
        sim_put(b, "Cause-txt", "Normal Clearing");
        break;
    default:
        sim_ev_begin(b, "DeviceStateChange", "call,all");
        sim_putf(b, "Device", "PJSIP/%s", c.cid_num); /* the call's own device */
        sim_put(b, "State", "NOT_INUSE");
        break;
    }
    sim_end(b);
}

static int render_block(ami_sim_node_t *n)
{
    sim_evblock_t *blk = &n->flood.block;
    ami_buf_t b;
    ami_buf_init(&b, 16u << 20);
    blk->offs = ami_malloc((FLOOD_EVENTS + 1) * sizeof *blk->offs);
    if (!blk->offs)
        return -1;
    long long epoch = (long long)n->started_wall;
    for (unsigned i = 0; i < FLOOD_EVENTS; i++) {
        blk->offs[i] = (uint32_t)b.len;
        render_one(&b, i, epoch);
    }
    blk->offs[FLOOD_EVENTS] = (uint32_t)b.len;
    if (ami_buf_append(&b, "", 1) < 0) { /* a NUL after the last event, for filters' regexec */
        ami_buf_deinit(&b);
        return -1;
    }
    b.len--;
    blk->data = b.data;
    blk->bytes = b.len;
    blk->count = FLOOD_EVENTS;
    return 0;
}

static int sim_flood_init(ami_sim_node_t *n)
{
    if (n->flood.block.data)
        return 0;
    if (render_block(n) < 0) {
        block_free(&n->flood.block);
        return -1;
    }
    return 0;
}

void sim_flood_free(ami_sim_node_t *n)
{
    ev_timer_stop(n->sim->loop, &n->flood.timer);
    block_free(&n->flood.block);
}

void sim_flood_session_reset(sim_session_t *s)
{
    block_free(&s->own_view);
    s->view_valid = false;
    s->view_private = false;
}

static int build_private(sim_session_t *s)
{
    const sim_evblock_t *src = &s->node->flood.block;
    ami_buf_t b;
    ami_buf_init(&b, src->bytes + 1); /* a subset of the node's block */
    uint32_t *offs = ami_malloc((src->count + 1) * sizeof *offs);
    if (!offs)
        return -1;
    size_t count = 0;
    for (size_t i = 0; i < src->count; i++) {
        const char *ev = src->data + src->offs[i];
        size_t len = src->offs[i + 1] - src->offs[i];
        if (!sim_session_wants(s, sim_class_of_event(ev, len), ev, len))
            continue;
        offs[count++] = (uint32_t)b.len;
        if (ami_buf_append(&b, ev, len) < 0) {
            ami_buf_deinit(&b);
            ami_free(offs);
            return -1;
        }
    }
    offs[count] = (uint32_t)b.len;
    s->own_view = (sim_evblock_t){b.data, offs, count, b.len};
    return 0;
}

/* Rebuilt only between blocks: a half-sent block must finish unchanged. */
static const sim_evblock_t *view_of(sim_session_t *s)
{
    if (!s->node->flood.block.data)
        return NULL;
    if (!s->view_valid && s->flood_off == 0) {
        block_free(&s->own_view);
        s->view_private = s->mask != SIM_EV_ALL || s->nfilters > 0;
        if (s->view_private && build_private(s) < 0)
            return NULL;
        s->view_valid = true;
        s->flood_idx = 0;
    }
    return s->view_private ? &s->own_view : &s->node->flood.block;
}

static bool eligible(sim_session_t *s)
{
    return !s->closed && s->logged_in && s->mask && !s->replaying && !s->sync_call &&
           !s->close_after_flush;
}

bool sim_flood_max_active(sim_session_t *s)
{
    if (s->flood_off)
        return true;
    if (s->node->flood.rate >= 0 || !eligible(s))
        return false;
    const sim_evblock_t *v = view_of(s);
    return v && v->count > 0;
}

static int stage_block(sim_session_t *s)
{
    if (s->out_pos < s->out.len)
        return 2;
    if (!sim_flood_max_active(s))
        return 1;
    const sim_evblock_t *v = view_of(s);
    ami_buf_clear(&s->out);
    s->out_pos = 0;
    if (ami_buf_append(&s->out, v->data, v->bytes) < 0)
        return 1;
    s->node->stats.events_sent += v->count;
    return 2;
}

int sim_flood_write(sim_session_t *s)
{
    if (s->tls)
        return stage_block(s);
    size_t written = 0;
    for (;;) {
        if (s->flood_off == 0 && s->out_pos < s->out.len)
            return 2;
        if (s->flood_off == 0 && !sim_flood_max_active(s))
            return 1;
        const sim_evblock_t *v = view_of(s);
        long r = sim_write_raw(s, v->data + s->flood_off, v->bytes - s->flood_off);
        if (r <= 0)
            return (int)r;
        s->flood_off += (size_t)r;
        written += (size_t)r;
        if (s->flood_off == v->bytes) {
            s->flood_off = 0;
            s->node->stats.events_sent += v->count;
        }
        if (written >= FLOOD_WRITE_BUDGET)
            return 0;
    }
}

/* Append `count` events of the session's view, wrapping around. */
static void feed_session(sim_session_t *s, size_t count)
{
    const sim_evblock_t *v = view_of(s);
    if (!v || v->count == 0)
        return;
    while (count && !s->closed) {
        size_t idx = s->flood_idx % v->count;
        size_t take = v->count - idx < count ? v->count - idx : count;
        if (sim_session_send(s, v->data + v->offs[idx], v->offs[idx + take] - v->offs[idx]) < 0)
            return;
        s->node->stats.events_sent += take;
        s->flood_idx = idx + take;
        count -= take;
    }
}

static void on_flood_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    SIM_ACCOUNT();
    ami_sim_node_t *n = w->data;
    sim_flood_t *f = &n->flood;
    double want = (ev_now(loop) - f->started) * f->rate;
    if (want < (double)f->due_sent + 1)
        return;
    uint64_t due = (uint64_t)(want - (double)f->due_sent);
    uint64_t cap = (uint64_t)(f->rate * 0.25) + 1;
    if (due > cap) {
        /* we fell behind (stalled loop): skip ahead instead of bursting */
        f->due_sent = (uint64_t)want - cap;
        due = cap;
    }
    f->due_sent += due;
    sim_session_t *next;
    for (sim_session_t *s = n->sessions; s; s = next) {
        next = s->next;
        if (eligible(s))
            feed_session(s, (size_t)due);
    }
}

void sim_flood_apply(ami_sim_node_t *n)
{
    struct ev_loop *loop = n->sim->loop;
    sim_flood_t *f = &n->flood;
    double rate = n->running ? n->faults.flood_events_per_sec : 0;
    if (rate != 0 && sim_flood_init(n) < 0)
        rate = 0;
    if (rate != f->rate) {
        f->started = ev_now(loop);
        f->due_sent = 0;
    }
    f->rate = rate;
    ev_timer_stop(loop, &f->timer);
    if (rate > 0) {
        ev_timer_init(&f->timer, on_flood_tick, FLOOD_TICK_S, FLOOD_TICK_S);
        f->timer.data = n;
        ev_timer_start(loop, &f->timer);
    }
    if (rate < 0)
        for (sim_session_t *s = n->sessions; s; s = s->next)
            if (sim_flood_max_active(s))
                sim_session_want_write(s);
}
