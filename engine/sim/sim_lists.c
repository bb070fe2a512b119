/*
 * List actions: Status, CoreShowChannels, QueueStatus, QueueSummary.
 * Framing as recorded: a Success response with "EventList: start", the item
 * events, then an XxxComplete event with ListItems. Where the ActionID goes
 * differs per list (second line of CoreShowChannel and every *Complete; last
 * line of Status and the Queue* items), and so does the Privilege header.
 */
#include <stdio.h>
#include <string.h>

#include "sim/sim_internal.h"

static void list_start(sim_session_t *s, const char *aid, const char *message)
{
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", aid);
    sim_put(b, "EventList", "start");
    sim_put(b, "Message", message);
    sim_end(b);
    sim_reply_flush(s);
}

static void list_complete(sim_session_t *s, const char *event, const char *aid, size_t items,
                          bool with_items)
{
    ami_buf_t *b = &s->node->reply;
    sim_put(b, "Event", event);
    if (aid)
        sim_put(b, "ActionID", aid);
    sim_put(b, "EventList", "Complete");
    sim_put_int(b, "ListItems", (long long)items);
    if (with_items)
        sim_put_int(b, "Items", (long long)items);
    sim_end(b);
    s->node->stats.events_sent++;
    sim_reply_flush(s);
}

/* An item: aid last, then sent. */
static void item_done(sim_session_t *s, const char *aid)
{
    ami_buf_t *b = &s->node->reply;
    if (aid)
        sim_put(b, "ActionID", aid);
    sim_end(b);
    s->node->stats.events_sent++;
    sim_reply_flush(s);
}

static void status_item(sim_session_t *s, const sim_chan_t *c, const char *vars, const char *aid)
{
    ami_sim_node_t *n = s->node;
    ami_buf_t *b = &n->reply;
    char type[16];
    snprintf(type, sizeof type, "%.*s", (int)strcspn(c->name, "/"), c->name);
    bool local = strcmp(type, "Local") == 0;
    sim_ev_begin(b, "Status", "Call");
    sim_chan_block(b, "", c);
    sim_put(b, "Type", type);
    sim_put(b, "DNID", "");
    sim_put(b, "EffectiveConnectedLineNum", c->conn_num);
    sim_put(b, "EffectiveConnectedLineName", c->conn_name);
    sim_put(b, "TimeToHangup", "0");
    sim_put(b, "BridgeID", c->bridge);
    sim_put(b, "Application", c->app);
    sim_put(b, "Data", c->appdata);
    sim_put(b, "Nativeformats", local ? "(slin)" : "(ulaw)");
    sim_put(b, "Readformat", local ? "slin" : "ulaw");
    sim_put(b, "Readtrans", "");
    sim_put(b, "Writeformat", local ? "slin" : "ulaw");
    sim_put(b, "Writetrans", "");
    sim_put(b, "Callgroup", "0");
    sim_put(b, "Pickupgroup", "0");
    sim_put_int(b, "Seconds", (long long)(ev_now(n->sim->loop) - c->created));
    while (vars && *vars) {
        size_t len = strcspn(vars, ",");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)len, vars);
        const char *v = sim_var_get(c->vars, name);
        if (len)
            sim_putf(b, "Variable", "%s=%s", name, v ? v : "");
        vars += len + (vars[len] == ',');
    }
    item_done(s, aid);
}

void sim_act_status(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *name = ami_msg_get(m, "Channel");
    const char *vars = ami_msg_get(m, "Variables");
    if (name && *name) {
        sim_chan_t *c = sim_chan_find(s->node, name);
        if (!c) {
            sim_reply(s, aid, "Error", "No such channel");
            return;
        }
        list_start(s, aid, "Channel status will follow");
        status_item(s, c, vars, aid);
        list_complete(s, "StatusComplete", aid, 1, true);
        return;
    }
    list_start(s, aid, "Channel status will follow");
    size_t count = 0;
    for (sim_chan_t *c = s->node->chans; c && !s->closed; c = c->next, count++)
        status_item(s, c, vars, aid);
    list_complete(s, "StatusComplete", aid, count, true);
}

void sim_act_core_show_channels(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    const char *aid = sim_action_id(m);
    list_start(s, aid, "Channels will follow");
    size_t count = 0;
    double now = ev_now(n->sim->loop);
    for (sim_chan_t *c = n->chans; c && !s->closed; c = c->next, count++) {
        ami_buf_t *b = &n->reply;
        sim_put(b, "Event", "CoreShowChannel");
        if (aid)
            sim_put(b, "ActionID", aid);
        sim_chan_block(b, "", c);
        sim_put(b, "Application", c->app);
        sim_put(b, "ApplicationData", c->appdata);
        long secs = (long)(now - c->created);
        sim_putf(b, "Duration", "%02ld:%02ld:%02ld", secs / 3600, secs / 60 % 60, secs % 60);
        sim_put(b, "BridgeId", c->bridge);
        sim_end(b);
        n->stats.events_sent++;
        sim_reply_flush(s);
    }
    list_complete(s, "CoreShowChannelsComplete", aid, count, false);
}

static void queue_params(sim_session_t *s, const sim_queue_t *q, const char *aid)
{
    ami_buf_t *b = &s->node->reply;
    sim_put(b, "Event", "QueueParams");
    sim_put(b, "Queue", q->name);
    sim_put(b, "Max", "0");
    sim_put(b, "Strategy", "ringall");
    sim_put_int(b, "Calls", (long long)q->ncallers);
    sim_put(b, "Holdtime", "0");
    sim_put(b, "TalkTime", "0");
    sim_put_int(b, "Completed", q->completed);
    sim_put_int(b, "Abandoned", q->abandoned);
    sim_put(b, "ServiceLevel", "0");
    sim_put(b, "ServicelevelPerf", "0.0");
    sim_put(b, "ServicelevelPerf2", "0.0");
    sim_put(b, "Weight", "0");
    item_done(s, aid);
}

static void queue_member(sim_session_t *s, const sim_queue_t *q, const sim_member_t *mb, const char *aid)
{
    ami_buf_t *b = &s->node->reply;
    sim_put(b, "Event", "QueueMember");
    sim_put(b, "Queue", q->name);
    sim_put(b, "Name", mb->name);
    sim_put(b, "Location", mb->iface);
    sim_put(b, "StateInterface", mb->iface);
    sim_put(b, "Membership", mb->dynamic ? "dynamic" : "static");
    sim_put(b, "Penalty", "0");
    sim_put_int(b, "CallsTaken", mb->calls_taken);
    sim_put_int(b, "LastCall", mb->last_call);
    sim_put(b, "LastPause", "0");
    sim_put_int(b, "LoginTime", mb->login_time);
    sim_put_int(b, "InCall", mb->in_call);
    sim_put_int(b, "Status", mb->status);
    sim_put(b, "Paused", mb->paused ? "1" : "0");
    sim_put(b, "PausedReason", "");
    sim_put(b, "Wrapuptime", "0");
    item_done(s, aid);
}

/* QueueEntry shows an unset caller ID as "unknown", without the brackets. */
static const char *bare(const char *v)
{
    return strcmp(v, "<unknown>") == 0 ? "unknown" : v;
}

static void queue_entry(sim_session_t *s, const sim_queue_t *q, size_t i, const char *aid)
{
    const sim_chan_t *c = q->callers[i];
    ami_buf_t *b = &s->node->reply;
    sim_put(b, "Event", "QueueEntry");
    sim_put(b, "Queue", q->name);
    sim_put_int(b, "Position", (long long)i + 1);
    sim_put(b, "Channel", c->name);
    sim_put(b, "Uniqueid", c->uniqueid);
    sim_put(b, "CallerIDNum", bare(c->cid_num));
    sim_put(b, "CallerIDName", bare(c->cid_name));
    sim_put(b, "ConnectedLineNum", bare(c->conn_num));
    sim_put(b, "ConnectedLineName", bare(c->conn_name));
    sim_put_int(b, "Wait", (long long)(ev_now(s->node->sim->loop) - q->joined[i]));
    sim_put(b, "Priority", "0");
    item_done(s, aid);
}

void sim_act_queue_status(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *qname = ami_msg_get(m, "Queue");
    const char *member = ami_msg_get(m, "Member");
    list_start(s, aid, "Queue status will follow");
    size_t count = 0;
    for (size_t qi = 0; qi < SIM_NQUEUES && !s->closed; qi++) {
        const sim_queue_t *q = &s->node->queues[qi];
        if (qname && *qname && strcmp(qname, q->name) != 0)
            continue;
        queue_params(s, q, aid);
        count++;
        for (size_t i = 0; i < q->nmembers; i++) {
            if (member && *member && strcmp(member, q->members[i].iface) != 0 &&
                strcmp(member, q->members[i].name) != 0)
                continue;
            queue_member(s, q, &q->members[i], aid);
            count++;
        }
        for (size_t i = 0; i < q->ncallers; i++, count++)
            queue_entry(s, q, i, aid);
    }
    list_complete(s, "QueueStatusComplete", aid, count, false);
}

void sim_act_queue_summary(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *qname = ami_msg_get(m, "Queue");
    double now = ev_now(s->node->sim->loop);
    list_start(s, aid, "Queue summary will follow");
    size_t count = 0;
    for (size_t qi = 0; qi < SIM_NQUEUES && !s->closed; qi++) {
        const sim_queue_t *q = &s->node->queues[qi];
        if (qname && *qname && strcmp(qname, q->name) != 0)
            continue;
        int avail = 0;
        double longest = 0;
        for (size_t i = 0; i < q->nmembers; i++)
            avail += q->members[i].status == 1 && !q->members[i].paused;
        for (size_t i = 0; i < q->ncallers; i++)
            if (now - q->joined[i] > longest)
                longest = now - q->joined[i];
        ami_buf_t *b = &s->node->reply;
        sim_put(b, "Event", "QueueSummary");
        sim_put(b, "Queue", q->name);
        sim_put_int(b, "LoggedIn", (long long)q->nmembers);
        sim_put_int(b, "Available", avail);
        sim_put_int(b, "Callers", (long long)q->ncallers);
        sim_put(b, "HoldTime", "0");
        sim_put(b, "TalkTime", "0");
        sim_put_int(b, "LongestHoldTime", (long long)longest);
        item_done(s, aid);
        count++;
    }
    list_complete(s, "QueueSummaryComplete", aid, count, false);
}
