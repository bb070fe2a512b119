/*
 * Calls started by Originate. A Local/EXT@CTX originate produces the event
 * sequence recorded in originate-async.ami (and -failure, hangup-cause,
 * status); a PJSIP/SIP/IAX2/DAHDI one a single ringing channel; any other
 * technology fails at once like Bogus/123.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sim/sim_internal.h"
#include "util/alloc.h"

enum { X_WAIT, X_ECHO, X_BUSY, X_QUEUE, X_TAG, X_USEREVENT };

typedef struct sim_exten {
    const char *exten;
    int kind;
    double secs; /* how long its dialplan runs; <0 forever, 0 the node's call duration */
    const char *arg;
} sim_exten_t;

/* The recorded server's [test] context (see the fixtures README). */
static const sim_exten_t TEST_EXTENS[] = {
    {"100", X_WAIT, 2, NULL},        {"200", X_ECHO, -1, NULL},        {"300", X_BUSY, 1, NULL},
    {"400", X_QUEUE, -1, "support"}, {"410", X_QUEUE, -1, "sales"},    {"500", X_WAIT, 3, NULL},
    {"600", X_TAG, 60, NULL},        {"700", X_USEREVENT, 1, NULL},    {"800", X_WAIT, 2, NULL},
};
static const sim_exten_t GENERIC_EXTEN = {"", X_WAIT, 0, NULL};
/* Contexts where any numeric extension answers and talks for call_duration_ms. */
static const char *const OPEN_CONTEXTS[] = {"default", "from-internal", "from-pstn", "internal", NULL};

enum { PH_RING, PH_END, PH_BUSY };

static const sim_exten_t *lookup_exten(const char *ctx, const char *exten)
{
    if (strcmp(ctx, "test") == 0) {
        for (size_t i = 0; i < sizeof TEST_EXTENS / sizeof TEST_EXTENS[0]; i++)
            if (strcmp(TEST_EXTENS[i].exten, exten) == 0)
                return &TEST_EXTENS[i];
        return NULL;
    }
    for (const char *const *c = OPEN_CONTEXTS; *c; c++) {
        if (strcmp(*c, ctx) != 0)
            continue;
        if (!*exten || strspn(exten, "0123456789*#+") != strlen(exten))
            return strcmp(exten, "s") == 0 ? &GENERIC_EXTEN : NULL;
        return &GENERIC_EXTEN;
    }
    return NULL;
}

/* ---- originate ---------------------------------------------------------- */

static void originate_response(sim_call_t *call, bool ok)
{
    ami_sim_node_t *n = call->node;
    if (!call->async)
        return;
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "OriginateResponse", "call,all");
    if (call->action_id[0])
        sim_put(b, "ActionID", call->action_id);
    sim_put(b, "Response", ok ? "Success" : "Failure");
    sim_put(b, "Channel", ok && call->a ? call->a->name : call->dial);
    if (call->app_mode) {
        sim_put(b, "Application", call->app);
        sim_put(b, "Data", call->data);
    } else {
        sim_put(b, "Context", call->dest_ctx);
        sim_put(b, "Exten", call->dest_exten);
    }
    sim_put(b, "Reason", ok ? "4" : "0");
    sim_put(b, "Uniqueid", ok && call->a ? call->a->uniqueid : "<unknown>");
    sim_put(b, "CallerIDNum", call->a ? call->a->cid_num : "<unknown>");
    sim_put(b, "CallerIDName", call->a ? call->a->cid_name : "<unknown>");
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

static void local_bridge(ami_sim_node_t *n, const sim_call_t *call)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "LocalBridge", "call,all");
    sim_chan_block(b, "LocalOne", call->a);
    sim_chan_block(b, "LocalTwo", call->b);
    sim_put(b, "Context", call->b->context);
    sim_put(b, "Exten", call->b->exten);
    sim_put(b, "LocalOptimization", "Yes");
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

static void dial_event(ami_sim_node_t *n, const char *event, const sim_chan_t *dest, const char *k,
                       const char *v)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, "call,all");
    sim_chan_block(b, "Dest", dest);
    sim_put(b, k, v);
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

static void set_state(ami_sim_node_t *n, sim_chan_t *c, int state)
{
    c->state = state;
    sim_emit_chan_event(n, "Newstate", SIM_EV_CALL, c);
}

static void dialplan_user_event(ami_sim_node_t *n, const sim_chan_t *c)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "UserEvent", "user,all");
    sim_chan_block(b, "", c);
    sim_put(b, "UserEvent", "EngineTest");
    sim_put(b, "Source", "dialplan");
    sim_put(b, "Step", "1");
    sim_end(b);
    sim_emit(n, SIM_EV_USER);
}

static void queue_join(ami_sim_node_t *n, sim_call_t *call, sim_chan_t *c, const char *qname)
{
    sim_queue_t *q = sim_queue_find(n, qname);
    if (!q || q->ncallers >= SIM_QUEUE_CALLERS)
        return;
    q->callers[q->ncallers] = c;
    q->joined[q->ncallers] = ev_now(n->sim->loop);
    q->ncallers++;
    call->queue = q;
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "QueueCallerJoin", "agent,all");
    sim_chan_block(b, "", c);
    sim_put(b, "Queue", q->name);
    sim_put_int(b, "Position", (long long)q->ncallers);
    sim_put_int(b, "Count", (long long)q->ncallers);
    sim_end(b);
    sim_emit(n, SIM_EV_AGENT);
}

/* What the ;2 side runs once answered (priority 2 on). */
static void run_exten(ami_sim_node_t *n, sim_call_t *call, sim_chan_t *c)
{
    const sim_exten_t *x = call->ext;
    char arg[96];
    switch (x->kind) {
    case X_TAG:
        sim_emit_newexten(n, c, 2, "Set", "CALLTAG=long-${UNIQUEID}");
        snprintf(arg, sizeof arg, "long-%s", c->uniqueid);
        sim_var_set(&c->vars, "CALLTAG", arg);
        sim_emit_varset(n, c, "CALLTAG", arg);
        sim_emit_newexten(n, c, 3, "Wait", "60");
        break;
    case X_USEREVENT:
        sim_emit_newexten(n, c, 2, "Set", "FOO=bar");
        sim_var_set(&c->vars, "FOO", "bar");
        sim_emit_varset(n, c, "FOO", "bar");
        sim_emit_newexten(n, c, 3, "UserEvent", "EngineTest,Source: dialplan,Step: 1");
        dialplan_user_event(n, c);
        sim_emit_newexten(n, c, 5, "Wait", "1");
        break;
    case X_ECHO:
        sim_emit_newexten(n, c, 2, "Echo", "");
        break;
    case X_QUEUE:
        sim_emit_newexten(n, c, 2, "Queue", x->arg);
        queue_join(n, call, c, x->arg);
        break;
    default:
        snprintf(arg, sizeof arg, "%g", x->secs > 0 ? x->secs : call->duration);
        sim_emit_newexten(n, c, 2, "Wait", arg);
        break;
    }
}

static void queue_leave(ami_sim_node_t *n, sim_call_t *call, sim_chan_t *c)
{
    if (!call->queue)
        return;
    sim_queue_drop_caller(call->queue, c);
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "QueueCallerLeave", "agent,all");
    sim_chan_block(b, "", c);
    sim_put(b, "Queue", call->queue->name);
    sim_put(b, "Position", "1");
    sim_put_int(b, "Count", (long long)call->queue->ncallers);
    sim_end(b);
    sim_emit(n, SIM_EV_AGENT);
    call->queue = NULL;
}

/* Both halves go away: the sequence of status.ami / hangup-action.ami. */
static void local_end(sim_call_t *call, sim_chan_t *target, int cause)
{
    ami_sim_node_t *n = call->node;
    sim_chan_t *other = target == call->a ? call->b : call->a;
    queue_leave(n, call, call->b);
    if (other) {
        sim_emit_cause_event(n, "HangupRequest", other, cause);
        sim_emit_hangup(n, target, cause);
        sim_emit_devstate(n, call->device, "NOT_INUSE");
        sim_emit_cause_event(n, "SoftHangupRequest", other, 16);
        sim_emit_hangup(n, other, cause);
    } else {
        sim_emit_hangup(n, target, cause);
    }
    sim_emit_devstate(n, call->device, "NOT_INUSE");
    sim_call_free(call);
}

static void local_busy(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    sim_emit_cause_event(n, "SoftHangupRequest", call->b, 16);
    sim_emit_cause_event(n, "HangupRequest", call->a, 17);
    sim_emit_hangup(n, call->b, 17);
    dial_event(n, "DialEnd", call->a, "DialStatus", "BUSY");
    sim_emit_devstate(n, call->device, "NOT_INUSE");
    sim_emit_hangup(n, call->a, 17);
    originate_response(call, false);
    sim_emit_devstate(n, call->device, "NOT_INUSE");
    sim_call_free(call);
}

static void local_step(sim_call_t *call)
{
    if (call->phase == PH_BUSY)
        local_busy(call);
    else
        local_end(call, call->a, call->cause);
}

static void local_hangup(sim_call_t *call, sim_chan_t *which, int cause)
{
    local_end(call, which, cause);
}

static void local_answer(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    call->answered = true;
    sim_call_sync_finish(call, true);
    originate_response(call, true);
    set_state(n, call->a, 6);
    dial_event(n, "DialEnd", call->a, "DialStatus", "ANSWER");
    set_state(n, call->b, 6);
    sim_emit_devstate(n, call->device, "INUSE");
    sim_emit_devstate(n, call->device, "INUSE");
    run_exten(n, call, call->b);
    call->phase = PH_END;
    if (call->duration >= 0)
        sim_call_schedule(call, call->duration);
}

static void local_unknown_exten(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    sim_emit_hangup(n, call->b, 0);
    originate_response(call, false);
    sim_emit_hangup(n, call->a, 0);
    sim_emit_devstate(n, call->device, "INVALID");
    sim_emit_devstate(n, call->device, "INVALID");
    sim_call_free(call);
}

static void name_local(ami_sim_node_t *n, sim_call_t *call, const char *exten, const char *ctx,
                       const ami_msg_t *m)
{
    unsigned seq = n->chan_seq++;
    const char *id1 = ami_msg_get(m, "ChannelId");
    const char *id2 = ami_msg_get(m, "OtherChannelId");
    sim_chan_t *cs[2] = {call->a, call->b};
    for (int i = 0; i < 2; i++) {
        sim_chan_t *c = cs[i];
        snprintf(c->name, sizeof c->name, "Local/%s@%s-%08x;%d", exten, ctx, seq, i + 1);
        snprintf(c->context, sizeof c->context, "%s", ctx);
        snprintf(c->exten, sizeof c->exten, "%s", exten);
        const char *id = i == 0 ? id1 : id2;
        if (id && *id)
            snprintf(c->uniqueid, sizeof c->uniqueid, "%s", id);
        else
            sim_next_uniqueid(n, c->uniqueid);
        snprintf(c->linkedid, sizeof c->linkedid, "%s", call->a->uniqueid);
    }
    call->b->state = 4;
    snprintf(call->device, sizeof call->device, "Local/%s@%s", exten, ctx);
}

/* "Name" <num>, or <num>, or num. */
static void parse_callerid(sim_chan_t *c, const char *cid)
{
    if (!cid || !*cid)
        return;
    const char *lt = strchr(cid, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt) {
        snprintf(c->cid_num, sizeof c->cid_num, "%.*s", (int)(gt - lt - 1), lt + 1);
        const char *s = cid, *e = lt;
        while (s < e && (*s == ' ' || *s == '"'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '"'))
            e--;
        if (e > s)
            snprintf(c->cid_name, sizeof c->cid_name, "%.*s", (int)(e - s), s);
    } else {
        snprintf(c->cid_num, sizeof c->cid_num, "%s", cid);
    }
}

static void apply_variables(ami_sim_node_t *n, sim_chan_t *c, const ami_msg_t *m)
{
    long i = -1;
    while ((i = ami_msg_next_index(m, "Variable", 8, (size_t)(i + 1))) >= 0) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", ami_msg_value(m, (size_t)i, NULL));
        char *eq = strchr(buf, '=');
        if (!eq)
            continue;
        *eq = '\0';
        sim_var_set(&c->vars, buf, eq + 1);
        sim_emit_varset(n, c, buf, eq + 1);
    }
}

static double pick_duration(const sim_call_t *call, const sim_exten_t *x, double fallback)
{
    double d = -1;
    if (call->app_mode && strcasecmp(call->app, "Wait") == 0)
        d = atof(call->data);
    double xs = x->secs == 0 ? fallback : x->secs;
    if (xs >= 0 && (d < 0 || xs < d))
        d = xs;
    if (!call->app_mode) {
        const sim_exten_t *dx = lookup_exten(call->dest_ctx, call->dest_exten);
        double ds = dx ? (dx->secs == 0 ? fallback : dx->secs) : -1;
        if (ds >= 0 && (d < 0 || ds < d))
            d = ds;
    }
    return d;
}

static void start_local(ami_sim_node_t *n, sim_call_t *call, const char *target, const ami_msg_t *m)
{
    char exten[40], ctx[40];
    const char *at = strchr(target, '@');
    size_t elen = at ? (size_t)(at - target) : strlen(target);
    snprintf(exten, sizeof exten, "%.*s", (int)elen, target);
    snprintf(ctx, sizeof ctx, "%s", at ? at + 1 : "default");
    ctx[strcspn(ctx, "/")] = '\0';
    call->a = sim_chan_new(n, call);
    call->b = sim_chan_new(n, call);
    if (!call->a || !call->b) {
        sim_call_free(call);
        return;
    }
    call->step = local_step;
    call->hangup = local_hangup;
    call->default_cause = 0; /* what the recorded Local channels report */
    name_local(n, call, exten, ctx, m);
    parse_callerid(call->a, ami_msg_get(m, "CallerID"));
    sim_emit_chan_event(n, "Newchannel", SIM_EV_CALL, call->a);
    sim_emit_chan_event(n, "Newchannel", SIM_EV_CALL, call->b);
    sim_emit_newexten(n, call->a, 1, "AppDial2", "(Outgoing Line)");
    apply_variables(n, call->a, m);
    const sim_exten_t *x = lookup_exten(ctx, exten);
    if (!x) {
        local_unknown_exten(call);
        return;
    }
    call->ext = x;
    call->duration = pick_duration(call, x, n->call_duration_ms / 1000.0);
    if (call->app_mode) {
        snprintf(call->a->app, sizeof call->a->app, "%s", call->app);
        snprintf(call->a->appdata, sizeof call->a->appdata, "%s", call->data);
    }
    local_bridge(n, call);
    char ds[96];
    snprintf(ds, sizeof ds, "%s@%s", exten, ctx);
    dial_event(n, "DialBegin", call->a, "DialString", ds);
    if (x->kind == X_BUSY) {
        sim_emit_newexten(n, call->b, 1, "Wait", "1");
        call->phase = PH_BUSY;
        sim_call_schedule(call, x->secs);
        return;
    }
    sim_emit_newexten(n, call->b, 1, "Answer", "");
    local_answer(call);
}

/* ---- a single outbound channel (PJSIP/SIP/IAX2/DAHDI) ---------------- */

static void tech_end(sim_call_t *call, sim_chan_t *which, int cause)
{
    ami_sim_node_t *n = call->node;
    sim_emit_hangup(n, call->a, cause);
    sim_emit_devstate(n, call->device, "NOT_INUSE");
    sim_call_free(call);
}

static void tech_step(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    if (call->phase == PH_END) {
        tech_end(call, call->a, 16);
        return;
    }
    call->answered = true;
    sim_call_sync_finish(call, true);
    set_state(n, call->a, 6);
    originate_response(call, true);
    sim_emit_devstate(n, call->device, "INUSE");
    if (call->app_mode)
        sim_emit_newexten(n, call->a, 1, call->app, call->data);
    else
        sim_emit_newexten(n, call->a, 1, "Wait", "");
    call->phase = PH_END;
    if (call->duration >= 0)
        sim_call_schedule(call, call->duration);
}

static void start_tech(ami_sim_node_t *n, sim_call_t *call, const char *dial, const ami_msg_t *m)
{
    if (!(call->a = sim_chan_new(n, call))) {
        sim_call_free(call);
        return;
    }
    call->step = tech_step;
    call->hangup = tech_end;
    call->default_cause = 16;
    const char *slash = strchr(dial, '/');
    snprintf(call->device, sizeof call->device, "%s", dial);
    snprintf(call->a->name, sizeof call->a->name, "%s-%08x", dial, n->chan_seq++);
    snprintf(call->a->context, sizeof call->a->context, "%s", call->app_mode ? "default" : call->dest_ctx);
    snprintf(call->a->exten, sizeof call->a->exten, "%s", call->app_mode ? "s" : call->dest_exten);
    snprintf(call->a->conn_num, sizeof call->a->conn_num, "%s", slash ? slash + 1 : dial);
    sim_next_uniqueid(n, call->a->uniqueid);
    const char *id = ami_msg_get(m, "ChannelId");
    if (id && *id)
        snprintf(call->a->uniqueid, sizeof call->a->uniqueid, "%s", id);
    snprintf(call->a->linkedid, sizeof call->a->linkedid, "%s", call->a->uniqueid);
    parse_callerid(call->a, ami_msg_get(m, "CallerID"));
    double d = call->app_mode && strcasecmp(call->app, "Wait") == 0 ? atof(call->data) : -1;
    call->duration = d >= 0 ? d : n->call_duration_ms / 1000.0;
    sim_emit_chan_event(n, "Newchannel", SIM_EV_CALL, call->a);
    apply_variables(n, call->a, m);
    set_state(n, call->a, 5);
    call->phase = PH_RING;
    sim_call_schedule(call, 0.2 + 0.3 * sim_rand01(n));
}

static bool is_tech(const char *dial, const char *tech)
{
    size_t len = strlen(tech);
    return strncasecmp(dial, tech, len) == 0 && dial[len] == '/' && dial[len + 1];
}

static bool ast_true(const char *v)
{
    return v && (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "y") ||
                 !strcasecmp(v, "t") || !strcasecmp(v, "1") || !strcasecmp(v, "on"));
}

static void fill_originate(sim_call_t *call, const ami_msg_t *m, const char *dial)
{
    const char *aid = sim_action_id(m);
    const char *app = ami_msg_get(m, "Application");
    snprintf(call->action_id, sizeof call->action_id, "%s", aid ? aid : "");
    snprintf(call->dial, sizeof call->dial, "%s", dial);
    call->async = ast_true(ami_msg_get(m, "Async"));
    call->app_mode = app && *app;
    snprintf(call->app, sizeof call->app, "%s", app ? app : "");
    const char *data = ami_msg_get(m, "Data");
    snprintf(call->data, sizeof call->data, "%s", data ? data : "");
    const char *ctx = ami_msg_get(m, "Context");
    const char *ext = ami_msg_get(m, "Exten");
    snprintf(call->dest_ctx, sizeof call->dest_ctx, "%s", ctx && *ctx ? ctx : "default");
    snprintf(call->dest_exten, sizeof call->dest_exten, "%s", ext && *ext ? ext : "s");
}

void sim_act_originate(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    const char *aid = sim_action_id(m);
    const char *dial = ami_msg_get(m, "Channel");
    n->stats.originates++;
    if (!dial || !*dial) {
        sim_reply(s, aid, "Error", "Channel not specified");
        return;
    }
    sim_call_t *call = sim_call_new(n);
    if (!call) {
        sim_reply(s, aid, "Error", "Originate failed");
        return;
    }
    fill_originate(call, m, dial);
    if (call->async) {
        sim_reply(s, aid, "Success", "Originate successfully queued");
    } else {
        call->sync_session = s;
        s->sync_call = call;
        s->busy = true;
        sim_session_update_reading(s);
    }
    if (is_tech(dial, "Local"))
        start_local(n, call, dial + 6, m);
    else if (is_tech(dial, "PJSIP") || is_tech(dial, "SIP") || is_tech(dial, "IAX2") ||
             is_tech(dial, "DAHDI"))
        start_tech(n, call, dial, m);
    else {
        originate_response(call, false);
        sim_call_free(call);
    }
}
