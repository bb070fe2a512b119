/*
 * The shapes of what the server writes, copied from the recorded sessions:
 * header names and order, CRLF, "Key: " for empty values, the channel block
 * that most call events share (optionally prefixed: Dest, LocalOne, ...).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sim/sim_internal.h"

void sim_put(ami_buf_t *b, const char *key, const char *val)
{
    ami_buf_append_str(b, key);
    ami_buf_append(b, ": ", 2);
    ami_buf_append_str(b, val ? val : "");
    ami_buf_append(b, "\r\n", 2);
}

void sim_putf(ami_buf_t *b, const char *key, const char *fmt, ...)
{
    ami_buf_append_str(b, key);
    ami_buf_append(b, ": ", 2);
    va_list ap;
    va_start(ap, fmt);
    ami_buf_vprintf(b, fmt, ap);
    va_end(ap);
    ami_buf_append(b, "\r\n", 2);
}

void sim_put_int(ami_buf_t *b, const char *key, long long v)
{
    sim_putf(b, key, "%lld", v);
}

void sim_ev_begin(ami_buf_t *b, const char *event, const char *priv)
{
    sim_put(b, "Event", event);
    if (priv)
        sim_put(b, "Privilege", priv);
}

void sim_end(ami_buf_t *b)
{
    ami_buf_append(b, "\r\n", 2);
}

void sim_resp_begin(ami_buf_t *b, const char *response, const char *action_id)
{
    sim_put(b, "Response", response);
    if (action_id && *action_id)
        sim_put(b, "ActionID", action_id);
}

const char *sim_state_desc(int state)
{
    static const char *const NAMES[] = {"Down", "Rsrvd", "OffHook", "Dialing", "Ring",
                                        "Ringing", "Up", "Busy", "Dialing Offhook", "Pre-ring"};
    return state >= 0 && state < 10 ? NAMES[state] : "Unknown";
}

static const char *sim_cause_text(int cause)
{
    switch (cause) {
    case 1: return "Unallocated (unassigned) number";
    case 3: return "No route to destination";
    case 16: return "Normal Clearing";
    case 17: return "User busy";
    case 18: return "No user responding";
    case 19: return "User alerting, no answer";
    case 21: return "Call Rejected";
    case 27: return "Destination out of order";
    case 34: return "Circuit/channel congestion";
    case 38: return "Network out of order";
    default: return "Unknown";
    }
}

/* 2026-11-27T17:38:35.171+0000 */
static void sim_tv_string(double wall, char out[40])
{
    time_t secs = (time_t)wall;
    int ms = (int)((wall - (double)secs) * 1000.0);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%.24s.%03d+0000", day, ms < 0 ? 0 : ms > 999 ? 999 : ms);
}

static void put_p(ami_buf_t *b, const char *prefix, const char *key, const char *val)
{
    char k[64];
    snprintf(k, sizeof k, "%s%s", prefix, key);
    sim_put(b, k, val);
}

void sim_chan_block(ami_buf_t *b, const char *prefix, const sim_chan_t *c)
{
    char num[24];
    put_p(b, prefix, "Channel", c->name);
    snprintf(num, sizeof num, "%d", c->state);
    put_p(b, prefix, "ChannelState", num);
    put_p(b, prefix, "ChannelStateDesc", sim_state_desc(c->state));
    put_p(b, prefix, "CallerIDNum", c->cid_num);
    put_p(b, prefix, "CallerIDName", c->cid_name);
    put_p(b, prefix, "ConnectedLineNum", c->conn_num);
    put_p(b, prefix, "ConnectedLineName", c->conn_name);
    put_p(b, prefix, "Language", "en");
    put_p(b, prefix, "AccountCode", "");
    put_p(b, prefix, "Context", c->context);
    put_p(b, prefix, "Exten", c->exten);
    snprintf(num, sizeof num, "%d", c->priority);
    put_p(b, prefix, "Priority", num);
    put_p(b, prefix, "Uniqueid", c->uniqueid);
    put_p(b, prefix, "Linkedid", c->linkedid);
}

void sim_emit_chan_event(ami_sim_node_t *n, const char *event, uint32_t cls, const sim_chan_t *c)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, cls == SIM_EV_DIALPLAN ? "dialplan,all" : "call,all");
    sim_chan_block(b, "", c);
    sim_end(b);
    sim_emit(n, cls);
}

void sim_emit_newexten(ami_sim_node_t *n, sim_chan_t *c, int prio, const char *app, const char *data)
{
    c->priority = prio;
    snprintf(c->app, sizeof c->app, "%s", app);
    snprintf(c->appdata, sizeof c->appdata, "%s", data);
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "Newexten", "dialplan,all");
    sim_chan_block(b, "", c);
    sim_put(b, "Extension", c->exten);
    sim_put(b, "Application", app);
    sim_put(b, "AppData", data);
    sim_end(b);
    sim_emit(n, SIM_EV_DIALPLAN);
}

void sim_emit_cause_event(ami_sim_node_t *n, const char *event, const sim_chan_t *c, int cause)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, "call,all");
    sim_chan_block(b, "", c);
    sim_put_int(b, "Cause", cause);
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

void sim_emit_hangup(ami_sim_node_t *n, const sim_chan_t *c, int cause)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "Hangup", "call,all");
    sim_chan_block(b, "", c);
    sim_put_int(b, "Cause", cause);
    sim_put(b, "Cause-txt", sim_cause_text(cause));
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

void sim_emit_devstate(ami_sim_node_t *n, const char *device, const char *state)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "DeviceStateChange", "call,all");
    sim_put(b, "Device", device);
    sim_put(b, "State", state);
    sim_end(b);
    sim_emit(n, SIM_EV_CALL);
}

void sim_emit_varset(ami_sim_node_t *n, const sim_chan_t *c, const char *var, const char *val)
{
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, "VarSet", "dialplan,all");
    if (c) {
        sim_chan_block(b, "", c);
    } else {
        sim_put(b, "Channel", "none");
        sim_put(b, "Uniqueid", "none");
    }
    sim_put(b, "Variable", var);
    sim_put(b, "Value", val);
    sim_end(b);
    sim_emit(n, SIM_EV_DIALPLAN);
}

/* The security events that a login, a bad request or a refusal produce.
 * `extra` holds already framed lines placed before SessionTV. */
void sim_emit_security(ami_sim_node_t *n, sim_session_t *s, const char *event, const char *severity,
                       int version, const char *extra)
{
    char now[40], stv[40];
    sim_tv_string(sim_wall_now(), now);
    sim_tv_string(s->logged_in ? s->started_wall : 0.0, stv);
    ami_buf_t *b = &n->scratch;
    sim_ev_begin(b, event, "security,all");
    sim_put(b, "EventTV", now);
    sim_put(b, "Severity", severity);
    sim_put(b, "Service", "AMI");
    sim_put_int(b, "EventVersion", version);
    bool account_last = strcmp(event, "RequestBadFormat") == 0;
    if (!account_last && strcmp(event, "ChallengeResponseFailed") != 0)
        sim_put(b, "AccountID", s->username);
    else if (!account_last)
        sim_put(b, "AccountID", "");
    sim_putf(b, "SessionID", "0x%llx", (unsigned long long)(0x7ff100000000ULL + s->id * 0x10));
    sim_put(b, "LocalAddress", s->local);
    sim_put(b, "RemoteAddress", s->remote);
    if (extra)
        ami_buf_append_str(b, extra);
    sim_put(b, "SessionTV", stv);
    if (account_last)
        sim_put(b, "AccountID", s->username);
    sim_end(b);
    sim_emit(n, SIM_EV_SECURITY);
}
