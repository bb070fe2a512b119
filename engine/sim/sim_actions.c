/*
 * Action dispatch and the small actions: Login/Challenge/Logoff, Ping,
 * Events, Filter, UserEvent, Setvar/Getvar, CoreSettings/CoreStatus,
 * ListCommands. Texts and header order are the recorded Asterisk 22 ones.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "sim/sim_internal.h"
#include "util/md5.h"

typedef void (*sim_action_fn)(sim_session_t *s, const ami_msg_t *m);

static const char GARBAGE_LINE[] = "!garbage line without a colon!\r\n\r\n";

const char *sim_action_id(const ami_msg_t *m)
{
    const char *v = ami_msg_get(m, "ActionID");
    return v && *v ? v : NULL;
}

void sim_reply_flush(sim_session_t *s)
{
    ami_buf_t *b = &s->node->reply;
    if (b->len)
        sim_session_send(s, b->data, b->len);
    ami_buf_clear(b);
}

void sim_reply(sim_session_t *s, const char *action_id, const char *response, const char *message)
{
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, response, action_id);
    if (message)
        sim_put(b, "Message", message);
    sim_end(b);
    sim_reply_flush(s);
}

static bool secret_ok(const ami_sim_node_t *n, sim_session_t *s, const ami_msg_t *m)
{
    const char *user = ami_msg_get(m, "Username");
    if (!user || strcmp(user, n->username) != 0)
        return false;
    const char *auth = ami_msg_get(m, "AuthType");
    if (auth && strcasecmp(auth, "MD5") == 0) {
        const char *key = ami_msg_get(m, "Key");
        char both[256], want[33];
        int len = snprintf(both, sizeof both, "%s%s", s->challenge, n->secret);
        if (!s->challenge[0] || !key || len < 0 || (size_t)len >= sizeof both)
            return false;
        ami_md5_hex(both, (size_t)len, want);
        return strcasecmp(key, want) == 0;
    }
    const char *secret = ami_msg_get(m, "Secret");
    return secret && strcmp(secret, n->secret) == 0;
}

static void login_failed(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    const char *user = ami_msg_get(m, "Username");
    const char *auth = ami_msg_get(m, "AuthType");
    snprintf(s->username, sizeof s->username, "%s", user ? user : "");
    n->stats.logins_failed++;
    sim_reply(s, sim_action_id(m), "Error", "Authentication failed");
    if (!user || strcmp(user, n->username) != 0) {
        sim_emit_security(n, s, "InvalidAccountID", "Error", 1, NULL);
    } else if (auth && strcasecmp(auth, "MD5") == 0) {
        char extra[256], want[33], both[256];
        int len = snprintf(both, sizeof both, "%s%s", s->challenge, n->secret);
        ami_md5_hex(both, len > 0 && (size_t)len < sizeof both ? (size_t)len : 0, want);
        const char *key = ami_msg_get(m, "Key");
        snprintf(extra, sizeof extra, "Challenge: %s\r\nResponse: %.64s\r\nExpectedResponse: %s\r\n",
                 s->challenge, key ? key : "", want);
        sim_emit_security(n, s, "ChallengeResponseFailed", "Error", 1, extra);
    } else {
        sim_emit_security(n, s, "InvalidPassword", "Error", 2, NULL);
    }
    AMI_LOG(SIM_LOG(n), AMI_LOG_INFO, "sim login refused", AMI_F_STR("node", n->name),
            AMI_F_UINT("session", s->id), AMI_F_STR("user", s->username));
    sim_session_close_after_flush(s);
}

static void fully_booted(sim_session_t *s)
{
    ami_sim_node_t *n = s->node;
    long long up = (long long)(sim_wall_now() - n->started_wall);
    ami_buf_t *b = &n->reply;
    sim_ev_begin(b, "FullyBooted", "system,all");
    sim_put_int(b, "Uptime", up);
    sim_put_int(b, "LastReload", up);
    sim_put(b, "Status", "Fully Booted");
    sim_end(b);
    n->stats.events_sent++;
    sim_reply_flush(s);
}

static void act_login(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    if (s->logged_in) {
        sim_reply(s, sim_action_id(m), "Success", "Already authenticated");
        return;
    }
    if (n->faults.reject_login || !secret_ok(n, s, m)) {
        login_failed(s, m);
        return;
    }
    const char *ev = ami_msg_get(m, "Events");
    bool ok;
    s->mask = ev ? sim_class_parse(ev, &ok) : SIM_EV_ALL;
    s->logged_in = true;
    s->view_valid = false;
    s->started_wall = sim_wall_now();
    snprintf(s->username, sizeof s->username, "%s", n->username);
    ev_timer_stop(n->sim->loop, &s->auth_timer);
    n->stats.logins_ok++;
    sim_reply(s, sim_action_id(m), "Success", "Authentication accepted");
    if (s->mask & SIM_EV_SYSTEM)
        fully_booted(s);
    sim_emit_security(n, s, "SuccessfulAuth", "Informational", 1, "UsingPassword: 0\r\n");
    if (n->faults.send_garbage) {
        n->faults.send_garbage = false;
        sim_session_send(s, GARBAGE_LINE, sizeof GARBAGE_LINE - 1);
    }
    if (n->faults.half_close_after_login)
        s->half_close_pending = true;
    sim_flood_apply(n);
}

static void act_challenge(sim_session_t *s, const ami_msg_t *m)
{
    const char *auth = ami_msg_get(m, "AuthType");
    if (!auth || strcasecmp(auth, "MD5") != 0) {
        sim_reply(s, sim_action_id(m), "Error", "Must specify AuthType");
        return;
    }
    if (!s->challenge[0])
        snprintf(s->challenge, sizeof s->challenge, "%u",
                 (unsigned)(sim_rand01(s->node) * 899999999.0) + 100000000u);
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    sim_put(b, "Challenge", s->challenge);
    sim_end(b);
    sim_reply_flush(s);
}

static void act_logoff(sim_session_t *s, const ami_msg_t *m)
{
    sim_reply(s, sim_action_id(m), "Goodbye", "Thanks for all the fish.");
    sim_session_close_after_flush(s);
}

static void act_ping(sim_session_t *s, const ami_msg_t *m)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    ami_buf_printf(b, "Ping: Pong\r\nTimestamp: %lld.%06ld\r\n\r\n", (long long)ts.tv_sec,
                   ts.tv_nsec / 1000);
    s->node->stats.pings_answered++;
    sim_reply_flush(s);
}

static void act_events(sim_session_t *s, const ami_msg_t *m)
{
    bool ok;
    s->mask = sim_class_parse(ami_msg_get(m, "EventMask"), &ok);
    s->view_valid = false;
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    sim_put(b, "Events", s->mask ? "On" : "Off");
    sim_end(b);
    sim_reply_flush(s);
    sim_flood_apply(s->node);
}

static void act_filter(sim_session_t *s, const ami_msg_t *m)
{
    const char *err = NULL;
    if (sim_filter_add(s, m, &err) < 0)
        sim_reply(s, sim_action_id(m), "Error", err);
    else
        sim_reply(s, sim_action_id(m), "Success", "Success");
}

static void act_userevent(sim_session_t *s, const ami_msg_t *m)
{
    const char *name = ami_msg_get(m, "UserEvent");
    if (!name || !*name) {
        sim_reply(s, sim_action_id(m), "Error", "UserEvent header missing");
        return;
    }
    sim_reply(s, sim_action_id(m), "Success", "Event Sent");
    ami_buf_t *b = &s->node->scratch;
    sim_ev_begin(b, "UserEvent", "user,all");
    sim_put(b, "UserEvent", name);
    for (size_t i = 0; i < m->nhdrs; i++) {
        size_t klen;
        const char *k = ami_msg_key(m, i, &klen);
        if (ami_str_ieq(k, klen, "Action", 6) || ami_str_ieq(k, klen, "UserEvent", 9))
            continue;
        ami_buf_append(b, k, klen);
        ami_buf_append(b, ": ", 2);
        ami_buf_append_str(b, ami_msg_value(m, i, NULL));
        ami_buf_append(b, "\r\n", 2);
    }
    sim_end(b);
    sim_emit(s->node, SIM_EV_USER);
}

/* NULL: no such channel. *chan stays NULL for a global. */
static bool lookup_channel(sim_session_t *s, const ami_msg_t *m, sim_chan_t **chan)
{
    const char *name = ami_msg_get(m, "Channel");
    *chan = NULL;
    if (!name || !*name)
        return true;
    *chan = sim_chan_find(s->node, name);
    return *chan != NULL;
}

static void act_setvar(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *var = ami_msg_get(m, "Variable");
    const char *val = ami_msg_get(m, "Value");
    sim_chan_t *c;
    if (!var || !*var) {
        sim_reply(s, aid, "Error", "No variable specified");
        return;
    }
    if (!lookup_channel(s, m, &c)) {
        sim_reply(s, aid, "Error", "No such channel");
        return;
    }
    if (sim_var_set(c ? &c->vars : &s->node->globals, var, val ? val : "") < 0) {
        sim_reply(s, aid, "Error", "Failed to set variable");
        return;
    }
    sim_reply(s, aid, "Success", "Variable Set");
    sim_emit_varset(s->node, c, var, val ? val : "");
}

static const char *channel_function(const sim_chan_t *c, const char *var)
{
    if (!c)
        return NULL;
    if (strcasecmp(var, "CHANNEL(state)") == 0)
        return sim_state_desc(c->state);
    if (strcasecmp(var, "CHANNEL(name)") == 0 || strcmp(var, "CHANNEL") == 0)
        return c->name;
    if (strcmp(var, "UNIQUEID") == 0)
        return c->uniqueid;
    if (strcmp(var, "CONTEXT") == 0)
        return c->context;
    if (strcmp(var, "EXTEN") == 0)
        return c->exten;
    return NULL;
}

static void act_getvar(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *var = ami_msg_get(m, "Variable");
    sim_chan_t *c;
    if (!var || !*var) {
        sim_reply(s, aid, "Error", "No variable specified");
        return;
    }
    if (!lookup_channel(s, m, &c)) {
        sim_reply(s, aid, "Error", "No such channel");
        return;
    }
    const char *val = channel_function(c, var);
    if (!val && c)
        val = sim_var_get(c->vars, var);
    if (!val && !strchr(var, '(') && !strchr(var, '$'))
        val = sim_var_get(s->node->globals, var);
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", aid);
    sim_put(b, "Variable", var);
    sim_put(b, "Value", val ? val : "");
    sim_end(b);
    sim_reply_flush(s);
}

static void act_core_settings(sim_session_t *s, const ami_msg_t *m)
{
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    sim_put(b, "AMIversion", s->node->ami_version);
    sim_put(b, "AsteriskVersion", SIM_ASTERISK_VERSION);
    sim_put(b, "SystemName", s->node->name);
    ami_buf_append_str(b, "CoreMaxCalls: 0\r\nCoreMaxLoadAvg: 0.000000\r\nCoreRunUser: \r\n"
                          "CoreRunGroup: \r\nCoreMaxFilehandles: 0\r\nCoreRealTimeEnabled: No\r\n"
                          "CoreCDRenabled: No\r\nCoreHTTPenabled: No\r\nSoundsSearchCustomDir: No\r\n");
    sim_end(b);
    sim_reply_flush(s);
}

static void put_date_time(ami_buf_t *b, const char *dkey, const char *tkey, double wall)
{
    time_t t = (time_t)wall;
    struct tm tm;
    char day[16], hms[16];
    localtime_r(&t, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    strftime(hms, sizeof hms, "%H:%M:%S", &tm);
    sim_put(b, dkey, day);
    sim_put(b, tkey, hms);
}

static void act_core_status(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    ami_buf_t *b = &n->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    put_date_time(b, "CoreStartupDate", "CoreStartupTime", n->started_wall);
    put_date_time(b, "CoreReloadDate", "CoreReloadTime", n->started_wall);
    sim_put_int(b, "CoreCurrentCalls", (long long)sim_active_calls(n));
    sim_put_int(b, "CoreProcessedCalls", (long long)n->processed_calls);
    sim_end(b);
    sim_reply_flush(s);
}

static void act_extension_state(sim_session_t *s, const ami_msg_t *m)
{
    const char *exten = ami_msg_get(m, "Exten");
    const char *ctx = ami_msg_get(m, "Context");
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    sim_put(b, "Message", "Extension Status");
    sim_put(b, "Exten", exten);
    sim_put(b, "Context", ctx);
    ami_buf_append_str(b, "Hint: \r\nStatus: -1\r\nStatusText: Unknown\r\n\r\n");
    sim_reply_flush(s);
}

static void act_list_categories(sim_session_t *s, const ami_msg_t *m)
{
    const char *file = ami_msg_get(m, "Filename");
    if (!file || strcmp(file, "manager.conf") != 0) {
        sim_reply(s, sim_action_id(m), "Error", "Config file not found");
        return;
    }
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    sim_put(b, "Category-000000", "general");
    sim_put(b, "Category-000001", s->node->username);
    sim_end(b);
    sim_reply_flush(s);
}

static void act_list_commands(sim_session_t *s, const ami_msg_t *m);

static const struct {
    const char *name;
    sim_action_fn fn;
    const char *priv;
} ACTIONS[] = {
    {"Ping", act_ping, "<none>"},
    {"Challenge", act_challenge, "<none>"},
    {"Atxfer", sim_act_atxfer, "call,all"},
    {"BlindTransfer", sim_act_blind_transfer, "call,all"},
    {"Command", sim_act_command, "command,all"},
    {"CoreSettings", act_core_settings, "system,reporting,all"},
    {"CoreShowChannels", sim_act_core_show_channels, "system,reporting,all"},
    {"CoreStatus", act_core_status, "system,reporting,all"},
    {"Events", act_events, "<none>"},
    {"ExtensionState", act_extension_state, "call,reporting,all"},
    {"Filter", act_filter, "system,all"},
    {"Getvar", act_getvar, "call,reporting,all"},
    {"Hangup", sim_act_hangup, "system,call,all"},
    {"ListCategories", act_list_categories, "config,all"},
    {"ListCommands", act_list_commands, "<none>"},
    {"Login", act_login, "<none>"},
    {"Logoff", act_logoff, "<none>"},
    {"Originate", sim_act_originate, "originate,all"},
    {"QueueAdd", sim_act_queue_add, "agent,all"},
    {"QueueRemove", sim_act_queue_remove, "agent,all"},
    {"QueueStatus", sim_act_queue_status, "<none>"},
    {"QueueSummary", sim_act_queue_summary, "<none>"},
    {"Redirect", sim_act_redirect, "call,all"},
    {"Setvar", act_setvar, "call,all"},
    {"ShowDialPlan", sim_act_show_dialplan, "config,reporting,all"},
    {"Status", sim_act_status, "system,call,reporting,all"},
    {"UserEvent", act_userevent, "user,all"},
};
#define NACTIONS (sizeof ACTIONS / sizeof ACTIONS[0])

static void act_list_commands(sim_session_t *s, const ami_msg_t *m)
{
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", sim_action_id(m));
    for (size_t i = 0; i < NACTIONS; i++)
        ami_buf_printf(b, "%s:  (Priv: %s)\r\n", ACTIONS[i].name, ACTIONS[i].priv);
    sim_end(b);
    sim_reply_flush(s);
}

static sim_action_fn find_action(const char *name)
{
    for (size_t i = 0; i < NACTIONS; i++)
        if (strcasecmp(ACTIONS[i].name, name) == 0)
            return ACTIONS[i].fn;
    return NULL;
}

static void bad_format(sim_session_t *s, const char *action)
{
    char extra[160];
    snprintf(extra, sizeof extra, "RequestType: Action: %.100s\r\n", action);
    sim_emit_security(s->node, s, "RequestBadFormat", "Error", 1, extra);
}

static void dispatch_known(sim_session_t *s, const ami_msg_t *m, const char *action)
{
    const char *aid = sim_action_id(m);
    if (!action || !*action) {
        sim_reply(s, aid, "Error", "Missing action in request");
        bad_format(s, "NONE");
        return;
    }
    bool pre_login = !strcasecmp(action, "Login") || !strcasecmp(action, "Logoff") ||
                     !strcasecmp(action, "Challenge");
    if (!s->logged_in && !pre_login) {
        sim_reply(s, aid, "Error", "Permission denied");
        return;
    }
    sim_action_fn fn = find_action(action);
    if (!fn) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "Invalid/unknown command: %.100s. Use Action: ListCommands to show available commands.",
                 action);
        sim_reply(s, aid, "Error", msg);
        bad_format(s, action);
        return;
    }
    fn(s, m);
}

/* The close_mid_response fault: keep the first half of the first message
 * this action produced, drop the rest, and close. */
static void cut_reply(sim_session_t *s, size_t before)
{
    size_t unsent = s->out.len - s->out_pos;
    if (unsent <= before)
        return;
    char *start = s->out.data + s->out_pos + before;
    size_t added = unsent - before;
    char *end = memmem(start, added, "\r\n\r\n", 4);
    size_t first = end ? (size_t)(end - start) + 4 : added;
    s->out.len -= added - first / 2;
    sim_session_close_after_flush(s);
}

/* The answer_without_action_id fault: take the ActionID lines out of what
 * this action wrote (its unsent tail past `before` bytes). */
static void strip_action_ids(sim_session_t *s, size_t before)
{
    size_t unsent = s->out.len - s->out_pos;
    if (unsent <= before)
        return;
    char *p = s->out.data + s->out_pos + before;
    char *end = s->out.data + s->out.len;
    char *dst = p;
    while (p < end) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        if (!(len >= 9 && strncasecmp(p, "ActionID:", 9) == 0)) {
            memmove(dst, p, len);
            dst += len;
        }
        p += len;
    }
    s->out.len = (size_t)(dst - s->out.data);
}

void sim_dispatch_now(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    bool cut = n->faults.close_mid_response;
    size_t before = s->out.len - s->out_pos;
    dispatch_known(s, m, ami_msg_get(m, "Action"));
    if (n->faults.answer_without_action_id && !s->closed)
        strip_action_ids(s, before);
    if (cut && !s->closed) {
        n->faults.close_mid_response = false;
        cut_reply(s, before);
    }
}

static uint32_t delay_for(sim_session_t *s, const ami_msg_t *m, const char *action)
{
    const ami_sim_faults_t *f = &s->node->faults;
    if (action && strcasecmp(action, "Login") == 0) {
        if (s->logged_in)
            return 0;
        bool fails = f->reject_login || !secret_ok(s->node, s, m);
        if (fails && !f->login_delay_ms)
            return SIM_FAIL_LOGIN_DELAY_MS;
        return f->login_delay_ms;
    }
    return f->response_delay_ms;
}

void sim_dispatch(sim_session_t *s, const ami_msg_t *m)
{
    ami_sim_node_t *n = s->node;
    const char *action = ami_msg_get(m, "Action");
    n->stats.actions++;
    bool ping = action && strcasecmp(action, "Ping") == 0;
    if (ping)
        n->stats.pings++;
    if (n->faults.all_silent || (ping && n->faults.ping_silent))
        return;
    uint32_t delay = delay_for(s, m, action);
    if (delay == 0) {
        sim_dispatch_now(s, m);
        return;
    }
    /* Asterisk handles one action at a time per session: hold the rest. The
     * message stays valid because the parser is not touched until then. */
    s->pending = *m;
    s->has_pending = true;
    s->busy = true;
    ev_timer_stop(n->sim->loop, &s->delay_timer); /* a pending resume: this timer does it too */
    ev_timer_set(&s->delay_timer, delay / 1000.0, 0.);
    ev_timer_start(n->sim->loop, &s->delay_timer);
    sim_session_update_reading(s);
}
