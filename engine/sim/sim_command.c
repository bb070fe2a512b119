/*
 * Action: Command (the modern format: "Message: Command output follows" and
 * one Output: header per CLI line) and ShowDialPlan, both over the
 * simulator's [test] context, laid out like the recorded one.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sim/sim_internal.h"

typedef struct plan_line {
    const char *exten;
    int prio;
    const char *app;
    const char *data;
} plan_line_t;

static const plan_line_t TEST_PLAN[] = {
    {"100", 1, "Answer", ""},    {"100", 2, "Wait", "2"},
    {"100", 3, "Hangup", ""},    {"200", 1, "Answer", ""},
    {"200", 2, "Echo", ""},      {"300", 1, "Wait", "1"},
    {"300", 2, "Hangup", "17"},  {"400", 1, "Answer", ""},
    {"400", 2, "Queue", "support,,,,20"}, {"400", 3, "Hangup", ""},
    {"410", 1, "Answer", ""},    {"410", 2, "Queue", "sales,,,,10"},
    {"410", 3, "Hangup", ""},    {"500", 1, "Answer", ""},
    {"500", 2, "Wait", "3"},     {"500", 3, "Hangup", ""},
    {"600", 1, "Answer", ""},    {"600", 2, "Set", "CALLTAG=long-${UNIQUEID}"},
    {"600", 3, "Wait", "60"},    {"600", 4, "Hangup", ""},
    {"700", 1, "Answer", ""},    {"700", 2, "Set", "FOO=bar"},
    {"700", 3, "UserEvent", "EngineTest,Source: dialplan,Step: 1"},
    {"700", 4, "Verbose", "1,exten 700 reached"},
    {"700", 5, "Wait", "1"},     {"700", 6, "Hangup", "16"},
    {"800", 1, "Dial", "Local/100@test,10"}, {"800", 2, "Hangup", ""},
};
#define PLAN_LINES (sizeof TEST_PLAN / sizeof TEST_PLAN[0])
#define PLAN_FIRST_LINE 11

static void output(ami_buf_t *b, const char *line)
{
    sim_put(b, "Output", line);
}

static size_t plan_extensions(void)
{
    size_t n = 0;
    for (size_t i = 0; i < PLAN_LINES; i++)
        n += TEST_PLAN[i].prio == 1;
    return n;
}

static void dialplan_show(ami_buf_t *b)
{
    char head[32], call[128], line[256];
    size_t gaps = 0; /* a blank line separates extensions in extensions.conf */
    output(b, "[ Context 'test' created by 'pbx_config' ]");
    for (size_t i = 0; i < PLAN_LINES; i++) {
        const plan_line_t *p = &TEST_PLAN[i];
        if (p->prio == 1 && i > 0)
            gaps++;
        if (p->prio == 1)
            snprintf(head, sizeof head, "'%s' =>", p->exten);
        else
            head[0] = '\0';
        snprintf(call, sizeof call, "%d. %s(%s)", p->prio, p->app, p->data);
        snprintf(line, sizeof line, "  %-17s %-45s [extensions.conf:%zu]", head, call,
                 PLAN_FIRST_LINE + i + gaps);
        output(b, line);
    }
    output(b, "");
    snprintf(line, sizeof line, "-= %zu extensions (%zu priorities) in 1 context. =-",
             plan_extensions(), PLAN_LINES);
    output(b, line);
}

static void append_unit(char *out, size_t size, long v, const char *unit)
{
    if (!v)
        return;
    size_t len = strlen(out);
    snprintf(out + len, size - len, "%s%ld %s%s", len ? ", " : "", v, unit, v == 1 ? "" : "s");
}

/* Asterisk's "1 hour, 2 minutes, 41 seconds". */
static void format_span(long secs, char *out, size_t size)
{
    out[0] = '\0';
    append_unit(out, size, secs / 86400, "day");
    append_unit(out, size, secs / 3600 % 24, "hour");
    append_unit(out, size, secs / 60 % 60, "minute");
    append_unit(out, size, secs % 60, "second");
    if (!out[0])
        snprintf(out, size, "0 seconds");
}

static void core_show_channels(ami_sim_node_t *n, ami_buf_t *b)
{
    char line[256], loc[96], app[160];
    size_t count = 0;
    snprintf(line, sizeof line, "%-64.64s %-32.32s %-7.7s %-35.35s", "Channel", "Location", "State",
             "Application(Data)");
    output(b, line);
    for (const sim_chan_t *c = n->chans; c; c = c->next, count++) {
        snprintf(loc, sizeof loc, "%s@%s:%d", c->exten, c->context, c->priority);
        snprintf(app, sizeof app, "%s(%s)", c->app, c->appdata);
        snprintf(line, sizeof line, "%-64.64s %-32.32s %-7.7s %-35.35s", c->name, loc,
                 sim_state_desc(c->state), app);
        output(b, line);
    }
    snprintf(line, sizeof line, "%zu active channel%s", count, count == 1 ? "" : "s");
    output(b, line);
    size_t calls = sim_active_calls(n);
    snprintf(line, sizeof line, "%zu active call%s", calls, calls == 1 ? "" : "s");
    output(b, line);
    snprintf(line, sizeof line, "%llu call%s processed", (unsigned long long)n->processed_calls,
             n->processed_calls == 1 ? "" : "s");
    output(b, line);
}

/* The CLI suggests help for the first words of what it could not run. */
static void no_such_command(ami_buf_t *b, const char *cmd)
{
    char words[128], line[512];
    size_t len = 0, seen = 0;
    for (const char *p = cmd; *p && len < sizeof words - 1; p++) {
        if (*p == ' ' && ++seen == 2)
            break;
        words[len++] = *p;
    }
    words[len] = '\0';
    snprintf(line, sizeof line,
             "No such command '%.200s' (type 'core show help %s' for other possible commands)", cmd,
             words);
    output(b, line);
}

static bool run_cli(ami_sim_node_t *n, const char *cmd, ami_buf_t *b)
{
    char line[256], span[128];
    long up = (long)(sim_wall_now() - n->started_wall);
    if (strcasecmp(cmd, "core show version") == 0) {
        snprintf(line, sizeof line,
                 "Asterisk %s built by ami-sim @ %s on a x86_64 running Linux on 2026-11-27 17:25:13 UTC",
                 SIM_ASTERISK_VERSION, n->name);
        output(b, line);
    } else if (strcasecmp(cmd, "core show uptime") == 0) {
        format_span(up, span, sizeof span);
        snprintf(line, sizeof line, "System uptime: %s", span);
        output(b, line);
        snprintf(line, sizeof line, "Last reload: %s", span);
        output(b, line);
    } else if (strcasecmp(cmd, "core show channels") == 0) {
        core_show_channels(n, b);
    } else if (strcasecmp(cmd, "dialplan show test") == 0) {
        dialplan_show(b);
    } else {
        no_such_command(b, cmd);
        return false;
    }
    return true;
}

void sim_act_command(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *cmd = ami_msg_get(m, "Command");
    if (!cmd || !*cmd) {
        sim_reply(s, aid, "Error", "No command provided");
        return;
    }
    ami_buf_t out;
    ami_buf_init(&out, 1u << 20);
    bool ok = run_cli(s->node, cmd, &out);
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, ok ? "Success" : "Error", aid);
    sim_put(b, "Message", "Command output follows");
    ami_buf_append(b, out.data, out.len);
    sim_end(b);
    ami_buf_deinit(&out);
    sim_reply_flush(s);
}

void sim_act_show_dialplan(sim_session_t *s, const ami_msg_t *m)
{
    const char *aid = sim_action_id(m);
    const char *ctx = ami_msg_get(m, "Context");
    const char *ext = ami_msg_get(m, "Extension");
    if (ctx && *ctx && strcmp(ctx, "test") != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "Did not find context %.64s", ctx);
        sim_reply(s, aid, "Error", msg);
        return;
    }
    ami_buf_t *b = &s->node->reply;
    sim_resp_begin(b, "Success", aid);
    sim_put(b, "EventList", "start");
    sim_put(b, "Message", "DialPlan list will follow");
    sim_end(b);
    sim_reply_flush(s);
    size_t items = 0, exts = 0;
    for (size_t i = 0; i < PLAN_LINES && !s->closed; i++) {
        const plan_line_t *p = &TEST_PLAN[i];
        if (ext && *ext && strcmp(ext, p->exten) != 0)
            continue;
        sim_put(b, "Event", "ListDialplan");
        if (aid)
            sim_put(b, "ActionID", aid);
        sim_put(b, "Context", "test");
        sim_put(b, "Extension", p->exten);
        sim_put_int(b, "Priority", p->prio);
        sim_put(b, "Application", p->app);
        sim_put(b, "AppData", p->data);
        sim_put(b, "Registrar", "pbx_config");
        sim_end(b);
        sim_reply_flush(s);
        items++;
        exts += p->prio == 1;
    }
    sim_put(b, "Event", "ShowDialPlanComplete");
    if (aid)
        sim_put(b, "ActionID", aid);
    sim_put(b, "EventList", "Complete");
    sim_put_int(b, "ListItems", (long long)items);
    sim_put_int(b, "ListExtensions", (long long)exts);
    sim_put_int(b, "ListPriorities", (long long)items);
    sim_put(b, "ListContexts", "1");
    sim_end(b);
    sim_reply_flush(s);
}
