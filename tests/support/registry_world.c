#include "registry_world.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/parser.h"
#include "util/alloc.h"

world_t *registry_world_new(uint32_t max_pending, const uint32_t caps[AMI_STRATEGY_COUNT])
{
    world_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    ami_actionid_init(&w->ids, 0x1234abcd);
    w->metrics = ami_metrics_new(1000);
    w->log = log_capture_logger(&w->log_lines, AMI_LOG_DEBUG, AMI_LOG_FMT_LOGFMT, 0);
    ami_registry_config_t rc;
    ami_registry_config_default(&rc);
    rc.max_pending = max_pending;
    if (caps)
        memcpy(rc.max_messages, caps, sizeof rc.max_messages);
    rc.server_key = "pbx1";
    rc.ids = &w->ids;
    rc.log = w->log;
    rc.metrics = w->metrics;
    w->reg = ami_registry_new(&rc, NULL);
    assert_non_null(w->reg);
    return w;
}

world_t *world_new(uint32_t max_pending, uint32_t list_cap)
{
    uint32_t caps[AMI_STRATEGY_COUNT] = {0};
    caps[AMI_STRATEGY_LIST] = caps[AMI_STRATEGY_AUTO] = list_cap;
    return registry_world_new(max_pending, caps);
}

void world_free(world_t *w)
{
    ami_registry_free(w->reg);
    ami_logger_free(w->log);
    ami_metrics_free(w->metrics);
    log_capture_free(&w->log_lines);
    free(w);
}

void record(void *ud, const ami_pending_note_t *n)
{
    world_t *w = ud;
    assert_true(w->nnotes < MAX_NOTES);
    seen_t *s = &w->notes[w->nnotes++];
    memset(s, 0, sizeof *s);
    s->signal = n->signal;
    s->id = n->id;
    s->strategy = n->strategy;
    s->items = n->items;
    s->dropped = n->dropped;
    s->truncated = n->truncated;
    s->status = n->status;
    if (n->msg) {
        snprintf(s->name, sizeof s->name, "%s", ami_msg_name(n->msg));
        const char *m = ami_msg_get(n->msg, "Message");
        snprintf(s->message, sizeof s->message, "%s", m ? m : "");
    }
    if (n->reason)
        snprintf(s->reason, sizeof s->reason, "%s", n->reason);
}

uint64_t add_action(world_t *w, const char *action, ami_strategy_t strategy,
                    const char *completion_event, int64_t deadline)
{
    uint64_t id = ami_actionid_next(&w->ids);
    ami_pending_spec_t spec = {
        .id = id, .action = action, .strategy = strategy, .completion_event = completion_event,
        .deadline_ms = deadline, .timeout_ms = 1000, .cb = record, .ud = w,
    };
    ami_err_t err;
    if (ami_registry_add(w->reg, &spec, &err) < 0)
        fail_msg("registry_add: %s", err.msg);
    return id;
}

size_t feed_text(world_t *w, const char *text, size_t len)
{
    ami_parser_t p;
    ami_parser_init(&p, NULL);
    ami_parser_expect_banner(&p, strncmp(text, "Asterisk Call Manager", 21) == 0);
    assert_int_equal(ami_parser_feed(&p, text, len, NULL), 0);
    ami_msg_t m;
    size_t taken = 0;
    int rc;
    while ((rc = ami_parser_next(&p, &m, NULL)) == 1)
        taken += ami_registry_on_message(w->reg, &m) != AMI_TOOK_NOTHING;
    assert_int_equal(rc, 0);
    ami_parser_deinit(&p);
    return taken;
}

size_t feed(world_t *w, const char *text)
{
    return feed_text(w, text, strlen(text));
}

char *rewrite_ids(world_t *w, const fixture_t *fx, const rename_t *map, size_t n, size_t *out_len)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    const char *p = fx->data, *end = fx->data + fx->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        bool replaced = false;
        for (size_t i = 0; i < n && !replaced; i++) {
            char want[80];
            int wl = snprintf(want, sizeof want, "ActionID: %s\r\n", map[i].recorded);
            if ((size_t)wl == len && memcmp(p, want, len) == 0) {
                char id[AMI_ACTIONID_MAX];
                ami_actionid_format(&w->ids, map[i].id, id);
                ami_buf_printf(&out, "ActionID: %s\r\n", id);
                replaced = true;
            }
        }
        if (!replaced)
            ami_buf_append(&out, p, len);
        p += len;
    }
    *out_len = out.len;
    return out.data; /* caller frees with ami_free */
}

const seen_t *final_note(const world_t *w, uint64_t id)
{
    for (size_t i = 0; i < w->nnotes; i++)
        if (w->notes[i].id == id &&
            (w->notes[i].signal == AMI_PENDING_DONE || w->notes[i].signal == AMI_PENDING_FAILED))
            return &w->notes[i];
    fail_msg("action %llu never completed", (unsigned long long)id);
    return NULL;
}

size_t count_notes(const world_t *w, uint64_t id, ami_pending_signal_t sig)
{
    size_t n = 0;
    for (size_t i = 0; i < w->nnotes; i++)
        n += w->notes[i].id == id && w->notes[i].signal == sig;
    return n;
}

double dropped_metric(world_t *w)
{
    double v = -1;
    ami_metrics_value(w->metrics, "ami_correlation_events_dropped_total",
                      (const char *const[]){"server_key", "pbx1", NULL}, &v);
    return v;
}

char *id_text(world_t *w, uint64_t id, char *buf)
{
    ami_actionid_format(&w->ids, id, buf);
    return buf;
}

/* How many captured lines contain needle; the first of them copied into out. */
static size_t each_line_with(world_t *w, const char *needle, char *out, size_t out_size)
{
    const char *const needles[] = {needle, NULL};
    long first = log_capture_find(&w->log_lines, 0, needles);
    if (first >= 0 && out)
        snprintf(out, out_size, "%s", w->log_lines.line[first]);
    return log_capture_lines_with(&w->log_lines, needles);
}

void the_log_line(world_t *w, const char *needle, char *out, size_t out_size)
{
    size_t n = each_line_with(w, needle, out, out_size);
    if (n != 1)
        fail_msg("%zu log lines contain \"%s\", expected exactly one", n, needle);
}

size_t count_log_lines(world_t *w, const char *needle)
{
    return each_line_with(w, needle, NULL, 0);
}

void send_list(world_t *w, uint64_t id, int items, bool complete)
{
    char ia[AMI_ACTIONID_MAX];
    id_text(w, id, ia);
    ami_buf_t t;
    ami_buf_init(&t, 0);
    ami_buf_printf(&t, "Response: Success\r\nActionID: %s\r\nEventList: start\r\n\r\n", ia);
    for (int i = 0; i < items; i++)
        ami_buf_printf(&t, "Event: CoreShowChannel\r\nActionID: %s\r\nChannel: c%d\r\n\r\n", ia, i);
    if (complete)
        ami_buf_printf(&t, "Event: CoreShowChannelsComplete\r\nActionID: %s\r\nEventList: Complete\r\n"
                           "ListItems: %d\r\n\r\n", ia, items);
    feed_text(w, t.data, t.len);
    ami_buf_deinit(&t);
}
