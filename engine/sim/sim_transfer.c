/*
 * Transfers of bridged background calls, and channel renames: the events
 * and the channel table change together, so CoreShowChannels always agrees
 * with what the events said.
 *
 * BlindTransfer (Channel = the transferer, Context, Exten): the
 * BlindTransfer event; both leave the bridge, which is destroyed; the
 * transferer hangs up; the transferee goes to Context/Exten and dials
 * PJSIP/<Exten>, which rings and answers (or not) like any call.
 *
 * Atxfer (Channel = the transferer, Context, Exten): the transferee hears
 * music on hold in the first bridge while the transferer leaves it and
 * dials the target; the target answers into a consultation bridge with the
 * transferer; shortly after, the transfer completes (AttendedTransfer,
 * DestType Bridge): the target moves into the first bridge, the
 * consultation bridge is destroyed and the transferer hangs up.
 *
 * Only a background call that is talking can be transferred ("Transfer
 * invalid" otherwise, as Asterisk says for a channel in no bridge).
 */
#include <stdio.h>
#include <string.h>

#include "sim/sim_internal.h"

#define XFER_CONSULT_S 0.3

static sim_chan_t *peer_of(const sim_call_t *call, const sim_chan_t *c)
{
    return c == call->a ? call->b : call->a;
}

/* Checks the action; the channel to transfer, or NULL (answered). */
static sim_chan_t *transfer_target(sim_session_t *s, const ami_msg_t *m, const char **ctx, const char **exten)
{
    const char *aid = sim_action_id(m);
    const char *name = ami_msg_get(m, "Channel");
    *exten = ami_msg_get(m, "Exten");
    *ctx = ami_msg_get(m, "Context");
    if (!*ctx || !**ctx)
        *ctx = "from-internal";
    if (!name || !*name) {
        sim_reply(s, aid, "Error", "No channel specified");
        return NULL;
    }
    sim_chan_t *c = sim_chan_find(s->node, name);
    if (!c) {
        sim_reply(s, aid, "Error", "Channel specified does not exist");
        return NULL;
    }
    if (!*exten || !**exten || strlen(*exten) > 32 || strspn(*exten, "0123456789*#+") != strlen(*exten)) {
        sim_reply(s, aid, "Error", "No extension specified");
        return NULL;
    }
    sim_call_t *call = c->call;
    if (!call || !sim_traffic_owns(call) || call->phase != SIM_T_TALK || !call->a || !call->b) {
        sim_reply(s, aid, "Error", "Transfer invalid");
        return NULL;
    }
    return c;
}

static void set_dest(sim_chan_t *c, const char *ctx, const char *exten)
{
    snprintf(c->context, sizeof c->context, "%s", ctx);
    snprintf(c->exten, sizeof c->exten, "%s", exten);
}

void sim_act_blind_transfer(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    const char *ctx, *exten;
    sim_chan_t *x = transfer_target(s, m, &ctx, &exten);
    if (!x)
        return;
    sim_call_t *call = x->call;
    sim_chan_t *y = peer_of(call, x);
    sim_reply(s, sim_action_id(m), "Success", "Transfer succeeded");
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "BlindTransfer", "call,all");
    sim_put(b, "Result", "Success");
    sim_chan_block(b, "Transferer", x);
    sim_chan_block(b, "Transferee", y);
    sim_put(b, "BridgeUniqueid", call->bridge);
    sim_put(b, "BridgeType", "basic");
    sim_put(b, "IsExternal", "Yes");
    sim_put(b, "Context", ctx);
    sim_put(b, "Extension", exten);
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
    sim_bridge_event(n, "BridgeLeave", call->bridge, 1, y);
    sim_bridge_event(n, "BridgeLeave", call->bridge, 0, x);
    sim_bridge_event(n, "BridgeDestroy", call->bridge, 0, NULL);
    call->bridge[0] = x->bridge[0] = y->bridge[0] = '\0';
    sim_emit_hangup(n, x, 16);
    sim_chan_drop(n, x);
    call->a = y;
    call->b = NULL;
    set_dest(y, ctx, exten);
    sim_traffic_dial(n, call, exten);
}

static void moh_event(ami_sim_node_t *n, const char *event, const sim_chan_t *c)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, "call,all");
    sim_chan_block(b, "", c);
    if (strcmp(event, "MusicOnHoldStart") == 0)
        sim_put(b, "Class", "default");
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

void sim_act_atxfer(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    const char *ctx, *exten;
    sim_chan_t *x = transfer_target(s, m, &ctx, &exten);
    if (!x)
        return;
    sim_call_t *call = x->call;
    sim_reply(s, sim_action_id(m), "Success", "Atxfer successfully queued");
    char dev[48], dial[64];
    snprintf(dev, sizeof dev, "PJSIP/%s", exten);
    snprintf(dial, sizeof dial, "%s,30", dev);
    moh_event(n, "MusicOnHoldStart", peer_of(call, x));
    sim_bridge_event(n, "BridgeLeave", call->bridge, 1, x);
    x->bridge[0] = '\0';
    set_dest(x, ctx, exten);
    sim_emit_newexten(n, x, 1, "Dial", dial);
    sim_chan_t *t = sim_traffic_leg(n, call, dev, exten);
    if (!t)
        return; /* the transferer stays out of the bridge; the call ends on its timer */
    snprintf(t->linkedid, sizeof t->linkedid, "%s", x->linkedid);
    snprintf(t->cid_num, sizeof t->cid_num, "%s", exten);
    call->c = t;
    call->xferer = x;
    sim_emit_chan_event(n, "Newchannel", SIM_EV_CALL, t);
    char tail[64];
    snprintf(tail, sizeof tail, "DialString: %s\r\n", exten);
    sim_pair_event(n, "DialBegin", SIM_EV_CALL, x, t, tail);
    t->state = 5;
    sim_emit_chan_event(n, "Newstate", SIM_EV_CALL, t);
    call->phase = SIM_T_XFER_RING;
    sim_call_schedule(call, 0.3 + 0.3 * sim_rand01(n));
}

static void target_answers(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    sim_chan_t *x = call->xferer, *t = call->c;
    t->state = 6;
    sim_emit_chan_event(n, "Newstate", SIM_EV_CALL, t);
    sim_pair_event(n, "DialEnd", SIM_EV_CALL, x, t, "DialStatus: ANSWER\r\n");
    sim_bridge_id(n, call->xfer_bridge);
    sim_bridge_event(n, "BridgeCreate", call->xfer_bridge, 0, NULL);
    snprintf(t->bridge, sizeof t->bridge, "%s", call->xfer_bridge);
    sim_bridge_event(n, "BridgeEnter", call->xfer_bridge, 1, t);
    snprintf(x->bridge, sizeof x->bridge, "%s", call->xfer_bridge);
    sim_bridge_event(n, "BridgeEnter", call->xfer_bridge, 2, x);
    call->phase = SIM_T_XFER_TALK;
    sim_call_schedule(call, XFER_CONSULT_S);
}

static void attended_event(sim_call_t *call, const sim_chan_t *x, const sim_chan_t *y, const sim_chan_t *t)
{
    ami_sim_node_t *n = call->node;
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "AttendedTransfer", "call,all");
    sim_put(b, "Result", "Success");
    sim_chan_block(b, "OrigTransferer", x);
    sim_put(b, "OrigBridgeUniqueid", call->bridge);
    sim_chan_block(b, "SecondTransferer", x);
    sim_put(b, "SecondBridgeUniqueid", call->xfer_bridge);
    sim_chan_block(b, "Transferee", y);
    sim_chan_block(b, "TransferTarget", t);
    sim_put(b, "IsExternal", "Yes");
    sim_put(b, "DestType", "Bridge");
    sim_put(b, "DestBridgeUniqueid", call->bridge);
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

static void complete(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    sim_chan_t *x = call->xferer, *t = call->c, *y = peer_of(call, x);
    attended_event(call, x, y, t);
    sim_bridge_event(n, "BridgeLeave", call->xfer_bridge, 1, t);
    snprintf(t->bridge, sizeof t->bridge, "%s", call->bridge);
    sim_bridge_event(n, "BridgeEnter", call->bridge, 2, t);
    moh_event(n, "MusicOnHoldStop", y);
    sim_bridge_event(n, "BridgeLeave", call->xfer_bridge, 0, x);
    sim_bridge_event(n, "BridgeDestroy", call->xfer_bridge, 0, NULL);
    x->bridge[0] = call->xfer_bridge[0] = '\0';
    sim_emit_hangup(n, x, 16);
    sim_chan_drop(n, x);
    call->a = y;
    call->b = t;
    call->c = NULL;
    sim_traffic_talk(call);
}

void sim_xfer_step(sim_call_t *call)
{
    if (call->phase == SIM_T_XFER_RING)
        target_answers(call);
    else
        complete(call);
}

void sim_xfer_abandon(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    sim_chan_t *x = call->xferer, *t = call->c, *y = x ? peer_of(call, x) : NULL;
    if (call->xfer_bridge[0]) {
        sim_bridge_event(n, "BridgeLeave", call->xfer_bridge, 1, t);
        sim_bridge_event(n, "BridgeLeave", call->xfer_bridge, 0, x);
        sim_bridge_event(n, "BridgeDestroy", call->xfer_bridge, 0, NULL);
        call->xfer_bridge[0] = '\0';
    }
    if (y && call->bridge[0]) {
        sim_bridge_event(n, "BridgeLeave", call->bridge, 0, y);
        sim_bridge_event(n, "BridgeDestroy", call->bridge, 0, NULL);
    }
    if (t)
        sim_emit_hangup(n, t, 16);
    call->phase = SIM_T_RING; /* no bridge left for the teardown to undo */
}

/* ---- renames ------------------------------------------------------------------------- */

int ami_sim_node_rename(ami_sim_node_t *n, const char *channel, const char *newname, ami_err_t *err)
{
    sim_chan_t *c = channel ? sim_chan_find(n, channel) : NULL;
    if (!c)
        return ami_err_set(err, AMI_E_INVALID, "no channel named \"%.80s\"", channel ? channel : "");
    if (!newname || !*newname || strlen(newname) >= sizeof c->name || strpbrk(newname, "\r\n"))
        return ami_err_set(err, AMI_E_INVALID, "a new name of 1 to %zu characters, one line, is needed",
                           sizeof c->name - 1);
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "Rename", "call,all");
    sim_put(b, "Channel", c->name);
    sim_put(b, "Newname", newname);
    sim_put(b, "Uniqueid", c->uniqueid);
    sim_end(b);
    snprintf(c->name, sizeof c->name, "%s", newname);
    sim_emit(n, SIM_EV_CALL);
    return 0;
}
