/*
 * Background call traffic and the two simulated queues ("support", "sales").
 *
 * Calls arrive as a Poisson process (exponential gaps drawn from the seeded
 * generator). Most are PJSIP extension-to-extension calls that ring, then
 * answer and bridge or fail busy/no answer/rejected; some wait in a queue for
 * an agent. Each step emits the events a real Asterisk 22 emits for it, and
 * the channels live in the node's table so Status, CoreShowChannels and
 * Hangup see them.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sim/sim_internal.h"

#define MAX_SPAWN_PER_TICK 1000
#define QUEUE_MAX_WAIT_S 30.0


double sim_rand01(ami_sim_node_t *n)
{
    /* xorshift64*: tiny, seedable, good enough for arrival times */
    uint64_t x = n->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    n->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0);
}

static double exp_gap(ami_sim_node_t *n, double mean)
{
    return -log(1.0 - sim_rand01(n)) * mean;
}

static int rand_range(ami_sim_node_t *n, int lo, int hi)
{
    return lo + (int)(sim_rand01(n) * (double)(hi - lo + 1));
}

/* ---- queues ------------------------------------------------------------- */

static void add_member(sim_queue_t *q, const char *iface, const char *name, bool dynamic, long long now)
{
    if (q->nmembers >= SIM_QUEUE_MEMBERS)
        return;
    sim_member_t *m = &q->members[q->nmembers++];
    memset(m, 0, sizeof *m);
    snprintf(m->iface, sizeof m->iface, "%s", iface);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->dynamic = dynamic;
    m->status = 1;
    m->login_time = now;
}

void sim_queues_init(ami_sim_node_t *n)
{
    long long now = (long long)n->started_wall;
    memset(n->queues, 0, sizeof n->queues);
    snprintf(n->queues[0].name, sizeof n->queues[0].name, "support");
    add_member(&n->queues[0], "PJSIP/1101", "Alice", false, now);
    add_member(&n->queues[0], "PJSIP/1102", "Bob", false, now);
    snprintf(n->queues[1].name, sizeof n->queues[1].name, "sales");
    add_member(&n->queues[1], "PJSIP/1201", "Carol", false, now);
    add_member(&n->queues[1], "PJSIP/1202", "Dave", false, now);
}

sim_queue_t *sim_queue_find(ami_sim_node_t *n, const char *name)
{
    for (size_t i = 0; name && i < SIM_NQUEUES; i++)
        if (strcmp(n->queues[i].name, name) == 0)
            return &n->queues[i];
    return NULL;
}

void sim_queue_drop_caller(sim_queue_t *q, const sim_chan_t *c)
{
    for (size_t i = 0; i < q->ncallers; i++) {
        if (q->callers[i] != c)
            continue;
        memmove(&q->callers[i], &q->callers[i + 1], (q->ncallers - i - 1) * sizeof q->callers[0]);
        memmove(&q->joined[i], &q->joined[i + 1], (q->ncallers - i - 1) * sizeof q->joined[0]);
        q->ncallers--;
        return;
    }
}

static void member_event(ami_sim_node_t *n, const char *event, const sim_queue_t *q, const sim_member_t *m)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, "agent,all");
    sim_put(b, "Queue", q->name);
    sim_put(b, "MemberName", m->name);
    sim_put(b, "Interface", m->iface);
    sim_put(b, "StateInterface", m->iface);
    sim_put(b, "Membership", m->dynamic ? "dynamic" : "static");
    sim_put(b, "Penalty", "0");
    sim_put_int(b, "CallsTaken", m->calls_taken);
    sim_put_int(b, "LastCall", m->last_call);
    sim_put(b, "LastPause", "0");
    sim_put_int(b, "LoginTime", m->login_time);
    sim_put_int(b, "InCall", m->in_call);
    sim_put_int(b, "Status", m->status);
    sim_put(b, "Paused", m->paused ? "1" : "0");
    sim_put(b, "PausedReason", "");
    sim_put(b, "Ringinuse", m->dynamic ? "1" : "0");
    sim_put(b, "Wrapuptime", "0");
    sim_end(b);
    sim_emit(n, SIM_EV_AGENT);
}

static long find_member(const sim_queue_t *q, const char *iface)
{
    for (size_t i = 0; i < q->nmembers; i++)
        if (strcmp(q->members[i].iface, iface) == 0)
            return (long)i;
    return -1;
}

void sim_act_queue_add(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *qn = ami_msg_get(m, "Queue");
    const char *iface = ami_msg_get(m, "Interface");
    if (!qn || !*qn || !iface || !*iface) {
        sim_reply(s, aid, "Error", !qn || !*qn ? "'Queue' not specified." : "'Interface' not specified.");
        return;
    }
    sim_queue_t *q = sim_queue_find(s->node, qn);
    if (!q) {
        sim_reply(s, aid, "Error", "Unable to add interface to queue: No such queue");
        return;
    }
    if (find_member(q, iface) >= 0) {
        sim_reply(s, aid, "Error", "Unable to add interface: Already there");
        return;
    }
    if (q->nmembers >= SIM_QUEUE_MEMBERS) {
        sim_reply(s, aid, "Error", "Out of memory");
        return;
    }
    const char *name = ami_msg_get(m, "MemberName");
    add_member(q, iface, name && *name ? name : iface, true, (long long)sim_wall_now());
    const char *paused = ami_msg_get(m, "Paused");
    q->members[q->nmembers - 1].paused = paused && (!strcasecmp(paused, "true") || !strcmp(paused, "1"));
    sim_reply(s, aid, "Success", "Added interface to queue");
    member_event(s->node, "QueueMemberAdded", q, &q->members[q->nmembers - 1]);
}

void sim_act_queue_remove(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    sim_queue_t *q = sim_queue_find(s->node, ami_msg_get(m, "Queue"));
    const char *iface = ami_msg_get(m, "Interface");
    if (!q) {
        sim_reply(s, aid, "Error", "Unable to remove interface from queue: No such queue");
        return;
    }
    long i = iface ? find_member(q, iface) : -1;
    if (i < 0) {
        sim_reply(s, aid, "Error", "Unable to remove interface: Not there");
        return;
    }
    sim_member_t gone = q->members[i];
    memmove(&q->members[i], &q->members[i + 1], (q->nmembers - (size_t)i - 1) * sizeof gone);
    q->nmembers--;
    sim_reply(s, aid, "Success", "Removed interface from queue");
    member_event(s->node, "QueueMemberRemoved", q, &gone);
}

/* ---- events of a bridged call ------------------------------------------ */

void sim_bridge_event(ami_sim_node_t *n, const char *event, const char *bridge, int count, const sim_chan_t *c)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, "call,all");
    sim_put(b, "BridgeUniqueid", bridge);
    sim_put(b, "BridgeType", "basic");
    sim_put(b, "BridgeTechnology", "simple_bridge");
    sim_put(b, "BridgeCreator", "<unknown>");
    sim_put(b, "BridgeName", "<unknown>");
    sim_put_int(b, "BridgeNumChannels", count);
    sim_put(b, "BridgeVideoSourceMode", "none");
    if (c)
        sim_chan_block(b, "", c);
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

void sim_pair_event(ami_sim_node_t *n, const char *event, uint32_t cls, const sim_chan_t *from,
                    const sim_chan_t *to, const char *tail)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, cls == SIM_EV_AGENT ? "agent,all" : "call,all");
    sim_chan_block(b, "", from);
    sim_chan_block(b, "Dest", to);
    if (tail)
        ami_buf_append_str(b, tail);
    sim_end(b);
    sim_emit(n, cls);
}

static void agent_event(ami_sim_node_t *n, const char *event, const sim_call_t *call, const char *more)
{
    const sim_member_t *m = &call->queue->members[call->member];
    char tail[512];
    snprintf(tail, sizeof tail, "Queue: %s\r\nInterface: %s\r\nMemberName: %s\r\n%s", call->queue->name,
             m->iface, m->name, more ? more : "");
    sim_pair_event(n, event, SIM_EV_AGENT, call->a, call->b, tail);
}

static void chan_state(ami_sim_node_t *n, sim_chan_t *c, int state)
{
    c->state = state;
    sim_emit_chan_event(n, "Newstate", SIM_EV_CALL, c);
}

void sim_bridge_id(ami_sim_node_t *n, char out[40])
{
    snprintf(out, 40, "%08x-%04x-4%03x-a%03x-%012llx", (unsigned)(sim_rand01(n) * 4294967295.0),
             (unsigned)rand_range(n, 0, 0xffff), (unsigned)rand_range(n, 0, 0xfff),
             (unsigned)rand_range(n, 0, 0xfff), (unsigned long long)(sim_rand01(n) * 281474976710655.0));
}

static void bridge_up(ami_sim_node_t *n, sim_call_t *call)
{
    sim_bridge_id(n, call->bridge);
    snprintf(call->a->bridge, sizeof call->a->bridge, "%s", call->bridge);
    snprintf(call->b->bridge, sizeof call->b->bridge, "%s", call->bridge);
    sim_bridge_event(n, "BridgeCreate", call->bridge, 0, NULL);
    sim_bridge_event(n, "BridgeEnter", call->bridge, 1, call->b);
    sim_bridge_event(n, "BridgeEnter", call->bridge, 2, call->a);
}

static void release_member(ami_sim_node_t *n, sim_call_t *call)
{
    if (!call->queue || call->member < 0)
        return;
    sim_member_t *m = &call->queue->members[call->member];
    m->in_call = 0;
    m->status = 1;
    m->calls_taken++;
    m->last_call = (long long)sim_wall_now();
    call->queue->completed++;
    member_event(n, "QueueMemberStatus", call->queue, m);
    call->member = -1;
}

/* Everything still up goes away with `cause`. */
static void teardown(sim_call_t *call, int cause)
{
    ami_sim_node_t *n = call->node;
    if (call->phase == SIM_T_XFER_RING || call->phase == SIM_T_XFER_TALK)
        sim_xfer_abandon(call);
    bool talking = call->phase == SIM_T_TALK && call->b;
    if (talking && call->queue && call->member >= 0) {
        char more[128];
        snprintf(more, sizeof more, "HoldTime: %d\r\nTalkTime: %d\r\nReason: caller\r\n",
                 (int)(call->b->created - call->queued_at),
                 (int)(ev_now(n->sim->loop) - call->b->created));
        agent_event(n, "AgentComplete", call, more);
    }
    if (talking) {
        sim_bridge_event(n, "BridgeLeave", call->bridge, 1, call->a);
        sim_bridge_event(n, "BridgeLeave", call->bridge, 0, call->b);
        sim_bridge_event(n, "BridgeDestroy", call->bridge, 0, NULL);
    }
    if (call->phase == SIM_T_QUEUE_WAIT && call->queue) {
        sim_queue_drop_caller(call->queue, call->a);
        call->queue->abandoned++;
    }
    sim_emit_cause_event(n, "HangupRequest", call->a, cause);
    if (call->b)
        sim_emit_hangup(n, call->b, cause);
    sim_emit_hangup(n, call->a, cause);
    sim_emit_devstate(n, call->device, "NOT_INUSE");
    release_member(n, call);
    sim_call_free(call);
}

static void traffic_hangup(sim_call_t *call, sim_chan_t *which, int cause)
{
    teardown(call, cause);
}

sim_chan_t *sim_traffic_leg(ami_sim_node_t *n, sim_call_t *call, const char *dev, const char *exten)
{
    sim_chan_t *c = sim_chan_new(n, call);
    if (!c)
        return NULL;
    snprintf(c->name, sizeof c->name, "%s-%08x", dev, n->chan_seq++);
    snprintf(c->context, sizeof c->context, "from-internal");
    snprintf(c->exten, sizeof c->exten, "%s", exten);
    sim_next_uniqueid(n, c->uniqueid);
    snprintf(c->linkedid, sizeof c->linkedid, "%s", call->a ? call->a->linkedid : c->uniqueid);
    return c;
}

static void answer(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    chan_state(n, call->b, 6);
    chan_state(n, call->a, 6);
    sim_pair_event(n, "DialEnd", SIM_EV_CALL, call->a, call->b, "DialStatus: ANSWER\r\n");
    bridge_up(n, call);
    sim_emit_devstate(n, call->device, "INUSE");
    sim_emit_varset(n, call->a, "BRIDGEPEER", call->b->name);
    sim_traffic_talk(call);
}

void sim_traffic_talk(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    call->phase = SIM_T_TALK;
    double mean = n->call_duration_ms / 1000.0;
    double talk = exp_gap(n, mean);
    sim_call_schedule(call, talk < 0.2 ? 0.2 : talk > 10 * mean ? 10 * mean : talk);
}

static void ring_outcome(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    double r = sim_rand01(n);
    if (r < 0.75) {
        answer(call);
        return;
    }
    int cause = r < 0.85 ? 17 : r < 0.95 ? 19 : 21;
    const char *status = cause == 17 ? "BUSY" : cause == 19 ? "NOANSWER" : "CHANUNAVAIL";
    char tail[64];
    snprintf(tail, sizeof tail, "DialStatus: %s\r\n", status);
    sim_pair_event(n, "DialEnd", SIM_EV_CALL, call->a, call->b, tail);
    sim_emit_varset(n, call->a, "DIALSTATUS", status);
    teardown(call, cause);
}

static void agent_call(sim_call_t *call, int member)
{
    ami_sim_node_t *n = call->node;
    sim_queue_t *q = call->queue;
    sim_member_t *m = &q->members[member];
    sim_queue_drop_caller(q, call->a);
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "QueueCallerLeave", "agent,all");
    sim_chan_block(b, "", call->a);
    sim_put(b, "Queue", q->name);
    sim_put(b, "Position", "1");
    sim_put_int(b, "Count", (long long)q->ncallers);
    sim_end(b);
    sim_emit(n, SIM_EV_AGENT);
    call->member = member;
    m->status = 6; /* ringing */
    if (!(call->b = sim_traffic_leg(n, call, m->iface, call->a->exten))) {
        teardown(call, 34);
        return;
    }
    snprintf(call->device, sizeof call->device, "%s", m->iface);
    sim_emit_chan_event(n, "Newchannel", SIM_EV_CALL, call->b);
    agent_event(n, "AgentCalled", call, NULL);
    chan_state(n, call->b, 5);
    call->phase = SIM_T_AGENT_RING;
    sim_call_schedule(call, 0.5 + sim_rand01(n));
}

static void agent_answer(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    sim_member_t *m = &call->queue->members[call->member];
    chan_state(n, call->b, 6);
    char more[96];
    snprintf(more, sizeof more, "HoldTime: %d\r\nRingTime: 1\r\n",
             (int)(ev_now(n->sim->loop) - call->queued_at));
    agent_event(n, "AgentConnect", call, more);
    m->in_call = 1;
    m->status = 2;
    member_event(n, "QueueMemberStatus", call->queue, m);
    bridge_up(n, call);
    sim_traffic_talk(call);
}

static void queue_wait(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    sim_queue_t *q = call->queue;
    for (size_t i = 0; i < q->nmembers; i++) {
        if (q->members[i].status == 1 && !q->members[i].paused) {
            agent_call(call, (int)i);
            return;
        }
    }
    if (ev_now(n->sim->loop) - call->queued_at > QUEUE_MAX_WAIT_S) {
        teardown(call, 16);
        return;
    }
    sim_call_schedule(call, 1.0);
}

static void sim_traffic_step(sim_call_t *call)
{
    switch (call->phase) {
    case SIM_T_RING:
        ring_outcome(call);
        break;
    case SIM_T_QUEUE_WAIT:
        queue_wait(call);
        break;
    case SIM_T_AGENT_RING:
        agent_answer(call);
        break;
    case SIM_T_XFER_RING:
    case SIM_T_XFER_TALK:
        sim_xfer_step(call);
        break;
    default:
        teardown(call, 16);
        break;
    }
}

static void start_queue_leg(ami_sim_node_t *n, sim_call_t *call, sim_queue_t *q)
{
    sim_emit_newexten(n, call->a, 1, "Answer", "");
    chan_state(n, call->a, 6);
    sim_emit_newexten(n, call->a, 2, "Queue", q->name);
    call->queue = q;
    call->queued_at = ev_now(n->sim->loop);
    if (q->ncallers < SIM_QUEUE_CALLERS) {
        q->callers[q->ncallers] = call->a;
        q->joined[q->ncallers] = call->queued_at;
        q->ncallers++;
    }
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "QueueCallerJoin", "agent,all");
    sim_chan_block(b, "", call->a);
    sim_put(b, "Queue", q->name);
    sim_put_int(b, "Position", (long long)q->ncallers);
    sim_put_int(b, "Count", (long long)q->ncallers);
    sim_end(b);
    sim_emit(n, SIM_EV_AGENT);
    call->phase = SIM_T_QUEUE_WAIT;
    sim_call_schedule(call, 1.0 + 3.0 * sim_rand01(n));
}

bool sim_traffic_owns(const sim_call_t *call)
{
    return call->step == sim_traffic_step;
}

void sim_traffic_dial(ami_sim_node_t *n, sim_call_t *call, const char *ext)
{
    char dev[48], dial[64];
    snprintf(dev, sizeof dev, "PJSIP/%.32s", ext);
    snprintf(dial, sizeof dial, "%s,30", dev);
    sim_emit_newexten(n, call->a, 1, "Dial", dial);
    if (!(call->b = sim_traffic_leg(n, call, dev, ext))) {
        teardown(call, 34);
        return;
    }
    snprintf(call->b->cid_num, sizeof call->b->cid_num, "%s", ext);
    snprintf(call->b->conn_num, sizeof call->b->conn_num, "%s", call->a->cid_num);
    snprintf(call->b->conn_name, sizeof call->b->conn_name, "%s", call->a->cid_name);
    snprintf(call->device, sizeof call->device, "%s", dev);
    sim_emit_chan_event(n, "Newchannel", SIM_EV_CALL, call->b);
    char tail[48];
    snprintf(tail, sizeof tail, "DialString: %s\r\n", ext);
    sim_pair_event(n, "DialBegin", SIM_EV_CALL, call->a, call->b, tail);
    chan_state(n, call->b, 5);
    sim_emit_devstate(n, dev, "RINGING");
    call->phase = SIM_T_RING;
    sim_call_schedule(call, 0.5 + 3.5 * sim_rand01(n));
}

/* A CRM asking for a call, as a UserEvent would arrive from another AMI
 * client: what scripts/click_to_call.lua serves. */
static void click_to_call_request(ami_sim_node_t *n)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "UserEvent", "user,all");
    sim_put(b, "UserEvent", "ClickToCall");
    sim_putf(b, "Agent", "%d", rand_range(n, 1001, 1020));
    sim_putf(b, "Number", "+1555%07d", rand_range(n, 0, 9999999));
    sim_putf(b, "RequestId", "crm-%s-%llu", n->name, (unsigned long long)n->stats.calls_started);
    sim_end(b);
    sim_emit(n, SIM_EV_USER);
}

/* Who calls: an internal extension, or the outside world through a
 * trunk (20%), arriving in from-pstn on a DID: what scripts/after_hours.lua watches. */
static sim_chan_t *caller_leg(ami_sim_node_t *n, sim_call_t *call, const char *exten)
{
    bool inbound = sim_rand01(n) < 0.20;
    int caller = rand_range(n, 1001, 1020);
    char dev[32];
    snprintf(dev, sizeof dev, inbound ? "PJSIP/trunk" : "PJSIP/%d", caller);
    sim_chan_t *a = sim_traffic_leg(n, call, dev, inbound ? "5550100" : exten);
    if (!a)
        return NULL;
    a->state = 4;
    if (inbound) {
        snprintf(a->context, sizeof a->context, "from-pstn");
        snprintf(a->cid_num, sizeof a->cid_num, "+1555%07d", rand_range(n, 0, 9999999));
        snprintf(a->cid_name, sizeof a->cid_name, "Caller %s", a->cid_num + 8);
    } else {
        snprintf(a->cid_num, sizeof a->cid_num, "%d", caller);
        snprintf(a->cid_name, sizeof a->cid_name, "User %d", caller);
    }
    snprintf(call->device, sizeof call->device, "%s", dev);
    return a;
}

static void start_call(ami_sim_node_t *n)
{
    if (sim_rand01(n) < 0.05)
        click_to_call_request(n);
    sim_call_t *call = sim_call_new(n);
    if (!call)
        return;
    call->step = sim_traffic_step;
    call->hangup = traffic_hangup;
    call->default_cause = 16;
    bool queued = sim_rand01(n) < 0.15;
    sim_queue_t *q = queued ? &n->queues[rand_range(n, 0, SIM_NQUEUES - 1)] : NULL;
    int callee = rand_range(n, 2001, 2020);
    char exten[16];
    snprintf(exten, sizeof exten, "%d", q ? (q == &n->queues[0] ? 600 : 601) : callee);
    if (!(call->a = caller_leg(n, call, exten))) {
        sim_call_free(call);
        return;
    }
    sim_emit_chan_event(n, "Newchannel", SIM_EV_CALL, call->a);
    if (q)
        start_queue_leg(n, call, q);
    else
        sim_traffic_dial(n, call, exten);
}

static void on_traffic(struct ev_loop *loop, ev_timer *w, int revents)
{
    SIM_ACCOUNT();
    ami_sim_node_t *n = w->data;
    double now = ev_now(loop);
    int spawned = 0;
    while (n->cps > 0 && n->next_arrival <= now && spawned++ < MAX_SPAWN_PER_TICK) {
        start_call(n);
        n->next_arrival += exp_gap(n, 1.0 / n->cps);
    }
    if (n->next_arrival < now)
        n->next_arrival = now; /* overloaded: drop the backlog rather than burst */
    if (n->cps > 0) {
        ev_timer_set(w, n->next_arrival - now, 0.);
        ev_timer_start(loop, w);
    }
}

void sim_traffic_start(ami_sim_node_t *n)
{
    struct ev_loop *loop = n->sim->loop;
    ev_timer_stop(loop, &n->traffic_timer);
    ev_init(&n->traffic_timer, on_traffic);
    n->traffic_timer.data = n;
    if (n->cps <= 0 || !n->running)
        return;
    n->next_arrival = ev_now(loop) + exp_gap(n, 1.0 / n->cps);
    ev_timer_set(&n->traffic_timer, n->next_arrival - ev_now(loop), 0.);
    ev_timer_start(loop, &n->traffic_timer);
}

void sim_traffic_stop(ami_sim_node_t *n)
{
    ev_timer_stop(n->sim->loop, &n->traffic_timer);
}

void sim_traffic_set_rate(ami_sim_node_t *n, double cps)
{
    n->cps = cps > 0 ? cps : 0;
    sim_traffic_start(n);
}
