/*
 * The channel table, channel and global variables, the life of a call
 * object (its timer, its sync-Originate waiter), and the actions that act on
 * an existing channel: Hangup and Redirect.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"
#include "util/alloc.h"

/* ---- variables ---------------------------------------------------------- */

const char *sim_var_get(sim_var_t *list, const char *name)
{
    for (; list; list = list->next)
        if (strcmp(list->name, name) == 0)
            return list->value;
    return NULL;
}

int sim_var_set(sim_var_t **list, const char *name, const char *value)
{
    for (sim_var_t *v = *list; v; v = v->next) {
        if (strcmp(v->name, name) != 0)
            continue;
        char *copy = ami_strdup(value);
        if (!copy)
            return -1;
        ami_free(v->value);
        v->value = copy;
        return 0;
    }
    sim_var_t *v = ami_calloc(1, sizeof *v);
    if (!v || !(v->name = ami_strdup(name)) || !(v->value = ami_strdup(value))) {
        if (v)
            ami_free(v->name);
        ami_free(v);
        return -1;
    }
    v->next = *list;
    *list = v;
    return 0;
}

void sim_vars_free(sim_var_t **list)
{
    while (*list) {
        sim_var_t *v = *list;
        *list = v->next;
        ami_free(v->name);
        ami_free(v->value);
        ami_free(v);
    }
}

/* ---- channels ----------------------------------------------------------- */

void sim_next_uniqueid(ami_sim_node_t *n, char out[64])
{
    snprintf(out, 64, "%lld.%llu", (long long)sim_wall_now(), (unsigned long long)n->uniq_seq++);
}

sim_chan_t *sim_chan_new(ami_sim_node_t *n, sim_call_t *call)
{
    sim_chan_t *c = ami_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->call = call;
    strcpy(c->cid_num, "<unknown>");
    strcpy(c->cid_name, "<unknown>");
    strcpy(c->conn_num, "<unknown>");
    strcpy(c->conn_name, "<unknown>");
    c->priority = 1;
    c->created = ev_now(n->sim->loop);
    c->next = n->chans;
    if (n->chans)
        n->chans->prev = c;
    n->chans = c;
    return c;
}

static void sim_chan_free(ami_sim_node_t *n, sim_chan_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < SIM_NQUEUES; i++)
        sim_queue_drop_caller(&n->queues[i], c);
    if (c->prev)
        c->prev->next = c->next;
    else
        n->chans = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sim_vars_free(&c->vars);
    ami_free(c);
}

void sim_chan_drop(ami_sim_node_t *n, sim_chan_t *c)
{
    sim_call_t *call = c->call;
    if (call && call->a == c)
        call->a = NULL;
    if (call && call->b == c)
        call->b = NULL;
    if (call && call->c == c)
        call->c = NULL;
    if (call && call->xferer == c)
        call->xferer = NULL;
    sim_chan_free(n, c);
}

sim_chan_t *sim_chan_find(ami_sim_node_t *n, const char *name)
{
    for (sim_chan_t *c = n->chans; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

/* ---- calls -------------------------------------------------------------- */

static void on_call_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    SIM_ACCOUNT();
    sim_call_t *call = w->data;
    call->step(call);
}

sim_call_t *sim_call_new(ami_sim_node_t *n)
{
    if (n->stats.calls_active >= SIM_MAX_CALLS) {
        n->stats.calls_refused++;
        return NULL;
    }
    sim_call_t *call = ami_calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->node = n;
    ev_timer_init(&call->timer, on_call_timer, 0., 0.);
    call->timer.data = call;
    call->member = -1;
    call->next = n->calls;
    if (n->calls)
        n->calls->prev = call;
    n->calls = call;
    n->stats.calls_started++;
    n->stats.calls_active++;
    return call;
}

/* The session waiting on a sync Originate: its answer now, then the events
 * it missed meanwhile, then its next actions. */
void sim_call_sync_finish(sim_call_t *call, bool ok)
{
    sim_session_t *s = call->sync_session;
    if (!s)
        return;
    call->sync_session = NULL;
    s->sync_call = NULL;
    s->busy = false;
    sim_reply(s, call->action_id[0] ? call->action_id : NULL, ok ? "Success" : "Error",
              ok ? "Originate successfully queued" : "Originate failed");
    if (s->held.len)
        sim_session_send(s, s->held.data, s->held.len);
    ami_buf_clear(&s->held);
    ami_buf_shrink(&s->held, 0);
    sim_session_resume_soon(s);
}

void sim_session_forget_call(sim_session_t *s)
{
    if (s->sync_call)
        s->sync_call->sync_session = NULL;
    s->sync_call = NULL;
}

void sim_call_free(sim_call_t *call)
{
    ami_sim_node_t *n = call->node;
    ev_timer_stop(n->sim->loop, &call->timer);
    sim_call_sync_finish(call, call->answered);
    sim_chan_free(n, call->a);
    sim_chan_free(n, call->b);
    sim_chan_free(n, call->c);
    if (call->prev)
        call->prev->next = call->next;
    else
        n->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    n->stats.calls_active--;
    n->processed_calls++;
    ami_free(call);
}

void sim_call_schedule(sim_call_t *call, double after_s)
{
    struct ev_loop *loop = call->node->sim->loop;
    ev_timer_stop(loop, &call->timer);
    ev_timer_set(&call->timer, after_s > 0 ? after_s : 0., 0.);
    ev_timer_start(loop, &call->timer);
}

void sim_calls_init(ami_sim_node_t *n)
{
    sim_var_set(&n->globals, "TESTGLOBAL", "hello");
}

void sim_calls_clear(ami_sim_node_t *n)
{
    while (n->calls)
        sim_call_free(n->calls);
}

size_t sim_active_calls(const ami_sim_node_t *n)
{
    return (size_t)n->stats.calls_active;
}

/* ---- Hangup, Redirect --------------------------------------------------- */

void sim_act_hangup(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *name = ami_msg_get(m, "Channel");
    if (!name || !*name) {
        sim_reply(s, aid, "Error", "No channel specified");
        return;
    }
    sim_chan_t *c = sim_chan_find(s->node, name);
    if (!c || !c->call) {
        sim_reply(s, aid, "Error", "No such channel");
        return;
    }
    const char *cause = ami_msg_get(m, "Cause");
    int code = cause && *cause ? atoi(cause) : c->call->default_cause;
    sim_reply(s, aid, "Success", "Channel Hungup");
    c->call->hangup(c->call, c, code);
}

void sim_act_redirect(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *name = ami_msg_get(m, "Channel");
    const char *exten = ami_msg_get(m, "Exten");
    const char *ctx = ami_msg_get(m, "Context");
    const char *prio = ami_msg_get(m, "Priority");
    if (!name || !*name) {
        sim_reply(s, aid, "Error", "Channel not specified");
        return;
    }
    sim_chan_t *c = sim_chan_find(s->node, name);
    if (!c) {
        sim_reply(s, aid, "Error", "No such channel");
        return;
    }
    if (!exten || !*exten) {
        sim_reply(s, aid, "Error", "Exten not specified");
        return;
    }
    if (ctx && *ctx)
        snprintf(c->context, sizeof c->context, "%s", ctx);
    snprintf(c->exten, sizeof c->exten, "%s", exten);
    sim_reply(s, aid, "Success", "Redirect successful");
    if (c->bridge[0]) { /* a redirected channel leaves its bridge first */
        sim_bridge_event(s->node, "BridgeLeave", c->bridge, 1, c);
        c->bridge[0] = '\0';
    }
    sim_emit_newexten(s->node, c, prio && *prio ? atoi(prio) : 1, "Wait", "");
}
