/*
 * Replay of a recorded session (.flow, JSON Lines, see the fixtures README).
 *
 * Each accepted connection walks the entries in order. An s2c entry is sent
 * at its recorded offset from the last point where the two sides met (the
 * connection's start, or the moment the client delivered what a c2s entry
 * recorded), divided by the replay speed. A c2s entry waits until the
 * client has sent as many complete messages as the recording had up to and
 * including it (counting messages, not bytes, so a client that frames
 * differently still lines up). The eof entry closes the connection once the
 * output is flushed.
 *
 * The JSON reader understands exactly this format: one flat object per
 * line with string, number and boolean values.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"
#include "util/alloc.h"

#define FLOW_MAX_BYTES (64u << 20)

typedef struct flow_entry {
    bool c2s, eof;
    double t;
    char *data;
    size_t len;
    uint64_t msgs_needed; /* c2s: client messages complete by the end of this entry */
} flow_entry_t;

struct sim_flow {
    flow_entry_t *e;
    size_t n, cap;
};

void sim_flow_free(sim_flow_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        ami_free(f->e[i].data);
    ami_free(f->e);
    ami_free(f);
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int put_utf8(ami_buf_t *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else {
        u[0] = (char)(0xE0 | cp >> 12);
        u[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    }
    return ami_buf_append(b, u, n);
}

/* p at the opening quote; returns past the closing one, or NULL. */
static const char *json_string(const char *p, ami_buf_t *out)
{
    static const char SIMPLE[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
    if (*p++ != '"')
        return NULL;
    while (*p && *p != '"') {
        if (*p != '\\') {
            if (ami_buf_append(out, p++, 1) < 0)
                return NULL;
            continue;
        }
        p++;
        if (*p == 'u') {
            unsigned cp = 0;
            for (int i = 1; i <= 4; i++) {
                int h = hexval(p[i]);
                if (h < 0)
                    return NULL;
                cp = cp << 4 | (unsigned)h;
            }
            if (put_utf8(out, cp) < 0)
                return NULL;
            p += 5;
            continue;
        }
        const char *m = *p ? strchr(SIMPLE, *p) : NULL;
        if (!m || (m - SIMPLE) % 2 || ami_buf_append(out, m + 1, 1) < 0)
            return NULL;
        p++;
    }
    return *p == '"' ? p + 1 : NULL;
}

/* One {"dir":..,"t":..,"data":..,"eof":..} line into e. */
static int parse_line(const char *p, flow_entry_t *e)
{
    ami_buf_t key, val;
    ami_buf_init(&key, 256);
    ami_buf_init(&val, FLOW_MAX_BYTES);
    int rc = -1;
    p = skip_ws(p);
    if (*p++ != '{')
        goto out;
    for (;;) {
        p = skip_ws(p);
        if (*p == '}') {
            rc = 0;
            break;
        }
        ami_buf_clear(&key);
        if (!(p = json_string(p, &key)) || ami_buf_append(&key, "", 1) < 0)
            goto out;
        p = skip_ws(p);
        if (*p++ != ':')
            goto out;
        p = skip_ws(p);
        if (*p == '"') {
            ami_buf_clear(&val);
            if (!(p = json_string(p, &val)))
                goto out;
            if (strcmp(key.data, "dir") == 0) {
                e->c2s = val.len == 3 && memcmp(val.data, "c2s", 3) == 0;
            } else if (strcmp(key.data, "data") == 0) {
                e->data = ami_strndup(val.data ? val.data : "", val.len);
                e->len = val.len;
                if (!e->data)
                    goto out;
            }
        } else if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0) {
            bool t = *p == 't';
            if (strcmp(key.data, "eof") == 0)
                e->eof = t;
            p += t ? 4 : 5;
        } else {
            char *end;
            double d = strtod(p, &end);
            if (end == p)
                goto out;
            if (strcmp(key.data, "t") == 0)
                e->t = d;
            p = end;
        }
        p = skip_ws(p);
        if (*p == ',')
            p++;
        else if (*p != '}')
            goto out;
    }
out:
    ami_buf_deinit(&key);
    ami_buf_deinit(&val);
    return rc;
}

static char *read_file(const char *path, size_t *len, ami_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ami_err_set(err, AMI_E_CONFIG, "replay file %s: %s", path, strerror(errno));
        return NULL;
    }
    ami_buf_t b;
    ami_buf_init(&b, FLOW_MAX_BYTES);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (ami_buf_append(&b, chunk, n) < 0) {
            fclose(f);
            ami_buf_deinit(&b);
            ami_err_set(err, AMI_E_LIMIT, "replay file %s is larger than %u bytes", path, FLOW_MAX_BYTES);
            return NULL;
        }
    }
    fclose(f);
    if (ami_buf_append(&b, "", 1) < 0) {
        ami_buf_deinit(&b);
        ami_err_set(err, AMI_E_NOMEM, "replay file %s: out of memory", path);
        return NULL;
    }
    *len = b.len - 1;
    return b.data;
}

static int add_entry(sim_flow_t *f, const flow_entry_t *e)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        flow_entry_t *grown = ami_realloc(f->e, cap * sizeof *grown);
        if (!grown)
            return -1;
        f->e = grown;
        f->cap = cap;
    }
    f->e[f->n++] = *e;
    return 0;
}

/* How many complete client messages the recording holds after each c2s entry. */
static int count_client_messages(sim_flow_t *f)
{
    ami_parser_t p;
    if (ami_parser_init(&p, NULL) < 0)
        return -1;
    ami_parser_expect_banner(&p, false);
    uint64_t total = 0;
    int rc = 0;
    for (size_t i = 0; i < f->n && rc == 0; i++) {
        if (!f->e[i].c2s)
            continue;
        ami_msg_t m;
        ami_err_t err;
        if (ami_parser_feed(&p, f->e[i].data, f->e[i].len, &err) < 0)
            rc = -1;
        int r;
        while (rc == 0 && (r = ami_parser_next(&p, &m, &err)) == 1)
            total++;
        f->e[i].msgs_needed = total;
    }
    ami_parser_deinit(&p);
    return rc;
}

static int parse_lines(sim_flow_t *f, char *text, const char *path, ami_err_t *err)
{
    size_t lineno = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        if (*skip_ws(line)) {
            flow_entry_t e = {0};
            if (parse_line(line, &e) < 0 || add_entry(f, &e) < 0) {
                ami_free(e.data);
                return ami_err_set(err, AMI_E_CONFIG, "replay file %s line %zu: not a flow entry",
                                   path, lineno);
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

int sim_flow_load(const char *path, sim_flow_t **out, ami_err_t *err)
{
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text)
        return -1;
    sim_flow_t *f = ami_calloc(1, sizeof *f);
    int rc = f ? parse_lines(f, text, path, err) : ami_err_set(err, AMI_E_NOMEM, "out of memory");
    ami_free(text);
    if (rc == 0 && count_client_messages(f) < 0)
        rc = ami_err_set(err, AMI_E_CONFIG, "replay file %s: client data does not parse as AMI", path);
    if (rc < 0) {
        sim_flow_free(f);
        return -1;
    }
    *out = f;
    return 0;
}

static void pump(sim_session_t *s);

static void on_replay_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    SIM_ACCOUNT();
    pump(w->data);
}

static void pump(sim_session_t *s)
{
    ami_sim_node_t *n = s->node;
    struct ev_loop *loop = n->sim->loop;
    const sim_flow_t *f = n->flow;
    double now = ev_now(loop);
    while (!s->closed && s->rp_idx < f->n) {
        const flow_entry_t *e = &f->e[s->rp_idx];
        if (e->c2s) {
            if (s->rp_msgs < e->msgs_needed)
                return;
            s->rp_anchor_t = e->t;
            s->rp_anchor_at = now;
            s->rp_idx++;
            continue;
        }
        if (n->replay_speed > 0) {
            double due = s->rp_anchor_at + (e->t - s->rp_anchor_t) / n->replay_speed;
            if (due > now + 1e-4) {
                ev_timer_stop(loop, &s->rp_timer);
                ev_timer_set(&s->rp_timer, due - now, 0.);
                ev_timer_start(loop, &s->rp_timer);
                return;
            }
        }
        s->rp_idx++;
        if (e->eof) {
            sim_session_close_after_flush(s);
            return;
        }
        if (e->len)
            sim_session_send(s, e->data, e->len);
    }
}

void sim_replay_start(sim_session_t *s)
{
    ev_set_cb(&s->rp_timer, on_replay_timer);
    s->rp_idx = 0;
    s->rp_msgs = 0;
    s->rp_anchor_t = 0;
    s->rp_anchor_at = ev_now(s->node->sim->loop);
    pump(s);
}

void sim_replay_input(sim_session_t *s, size_t nmsgs)
{
    s->rp_msgs += nmsgs;
    pump(s);
}

void sim_replay_stop(sim_session_t *s)
{
    ev_timer_stop(s->node->sim->loop, &s->rp_timer);
}
