/*
 * The simulated web service's answers (the routes listed in sim_http.h)
 * and its record of the requests it read. Runs on the server's thread,
 * except the record accessors, which take the lock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_http_internal.h"
#include "util/alloc.h"

static const char JSON_DOC[] =
    "{\"agent\":\"1001\",\"queue\":\"sales\",\"priority\":3,\"tags\":[\"vip\",\"fr\"],"
    "\"transfer\":{\"to\":\"+33123456789\",\"after\":null},\"ok\":true}";

typedef struct request_line {
    char method[16];
    char path[512];
    const char *query;     /* after '?' in path, or "" */
    const char *route;     /* path without a proxy request's scheme and host */
} request_line_t;

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 302: return "Found";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

/* The head (and a body unless it is generated or the request was HEAD). */
static void answer(sim_http_conn_t *c, const request_line_t *rl, int status, const char *headers,
                   const char *body, size_t body_len, uint64_t generated, bool announce_length)
{
    ami_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nConnection: close\r\n", status, reason(status));
    if (announce_length)
        ami_buf_printf(&c->out, "Content-Length: %llu\r\n", (unsigned long long)(body_len + generated));
    ami_buf_printf(&c->out, "%s\r\n", headers ? headers : "");
    if (strcmp(rl->method, "HEAD") != 0) {
        ami_buf_append(&c->out, body, body_len);
        c->stream_left = generated;
    }
    sim_http_send(c);
}

static void answer_text(sim_http_conn_t *c, const request_line_t *rl, int status, const char *text)
{
    answer(c, rl, status, "Content-Type: text/plain\r\n", text, strlen(text), 0, true);
}

/* ---- records --------------------------------------------------------------------- */

static void record(sim_http_conn_t *c, const request_line_t *rl)
{
    ami_sim_http_t *s = c->srv;
    const char *head = c->in.data;
    const char *eol = memmem(head, c->head_len, "\r\n", 2);
    const char *hstart = eol ? eol + 2 : head + c->head_len;
    size_t hlen = (size_t)(head + c->head_len - hstart);
    size_t blen = c->body_len < SIM_HTTP_RECORD_BODY ? c->body_len : SIM_HTTP_RECORD_BODY;
    ami_sim_http_seen_t seen = {0};
    snprintf(seen.method, sizeof seen.method, "%s", rl->method);
    snprintf(seen.path, sizeof seen.path, "%s", rl->path);
    seen.headers = ami_strndup(hstart, hlen);
    seen.body = ami_strndup(head + c->head_len, blen);
    seen.body_len = blen;
    pthread_mutex_lock(&s->lock);
    sim_http_record_t *r = &s->records[s->nrecords % SIM_HTTP_RECORDS];
    if (r->used)
        ami_sim_http_seen_free(&r->seen);
    r->seen = seen;
    r->used = true;
    s->nrecords++;
    if (s->nrecords - s->first > SIM_HTTP_RECORDS)
        s->first = s->nrecords - SIM_HTTP_RECORDS;
    pthread_mutex_unlock(&s->lock);
}

size_t ami_sim_http_seen_count(ami_sim_http_t *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->nrecords - s->first;
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool ami_sim_http_seen(ami_sim_http_t *s, size_t i, ami_sim_http_seen_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->lock);
    bool ok = i < s->nrecords - s->first;
    if (ok) {
        const ami_sim_http_seen_t *r = &s->records[(s->first + i) % SIM_HTTP_RECORDS].seen;
        *out = *r;
        out->headers = ami_strdup(r->headers ? r->headers : "");
        out->body = ami_strndup(r->body ? r->body : "", r->body_len);
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void ami_sim_http_seen_free(ami_sim_http_seen_t *seen)
{
    ami_free(seen->headers);
    ami_free(seen->body);
    seen->headers = seen->body = NULL;
}

void ami_sim_http_forget(ami_sim_http_t *s)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < SIM_HTTP_RECORDS; i++)
        if (s->records[i].used) {
            ami_sim_http_seen_free(&s->records[i].seen);
            s->records[i].used = false;
        }
    s->nrecords = s->first = 0;
    pthread_mutex_unlock(&s->lock);
}

/* ---- routes ------------------------------------------------------------------------ */

static bool parse_request_line(const sim_http_conn_t *c, request_line_t *rl)
{
    char line[600];
    const char *eol = memmem(c->in.data, c->head_len, "\r\n", 2);
    size_t n = eol ? (size_t)(eol - c->in.data) : 0;
    if (n == 0 || n >= sizeof line)
        return false;
    memcpy(line, c->in.data, n);
    line[n] = '\0';
    if (sscanf(line, "%15s %511s", rl->method, rl->path) != 2)
        return false;
    char *q = strchr(rl->path, '?');
    rl->query = q ? q + 1 : "";
    rl->route = rl->path;
    if (strncmp(rl->path, "http://", 7) == 0) { /* as a proxy receives it: route on the path part */
        const char *slash = strchr(rl->path + 7, '/');
        rl->route = slash ? slash : "/";
    }
    return true;
}

static void on_delay_over(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    sim_http_conn_t *c = t->data;
    request_line_t rl = {.method = "GET"};
    answer_text(c, &rl, 200, "slow");
}

static void hold(sim_http_conn_t *c, double seconds)
{
    c->phase = PH_WAIT;
    if (seconds < 0)
        return; /* /never: the client's close ends it (conn_io drains input) */
    ev_init(&c->timer, on_delay_over);
    ev_timer_set(&c->timer, seconds, 0.);
    ev_timer_start(c->srv->loop, &c->timer);
}

static void answer_echo(sim_http_conn_t *c, const request_line_t *rl)
{
    ami_buf_t body;
    ami_buf_init(&body, 0);
    const char *eol = memmem(c->in.data, c->head_len, "\r\n", 2);
    const char *hstart = eol ? eol + 2 : c->in.data;
    ami_buf_printf(&body, "%s %s\n", rl->method, rl->path);
    ami_buf_append(&body, hstart, (size_t)(c->in.data + c->head_len - hstart));
    ami_buf_append(&body, c->in.data + c->head_len, c->body_len);
    answer(c, rl, 200, "Content-Type: text/plain\r\n", body.data, body.len, 0, true);
    ami_buf_deinit(&body);
}

static void answer_redirect(sim_http_conn_t *c, const request_line_t *rl, const char *location)
{
    char headers[700];
    snprintf(headers, sizeof headers, "Location: %s\r\n", location);
    answer(c, rl, 302, headers, "", 0, 0, true);
}

static void answer_big_header(sim_http_conn_t *c, const request_line_t *rl, size_t n)
{
    ami_buf_t h;
    ami_buf_init(&h, 0);
    ami_buf_append_str(&h, "X-Big: ");
    if (ami_buf_reserve(&h, n + 3) < 0) {
        sim_http_close(c);
        return;
    }
    memset(h.data + h.len, 'y', n);
    h.len += n;
    ami_buf_append(&h, "\r\n", 3); /* with the NUL */
    answer(c, rl, 200, h.data, "big", 3, 0, true);
    ami_buf_deinit(&h);
}

static void answer_webhook(sim_http_conn_t *c, const request_line_t *rl)
{
    ami_sim_http_t *s = c->srv;
    pthread_mutex_lock(&s->lock);
    int status = s->fail_left ? s->fail_status : 200;
    if (s->fail_left)
        s->fail_left--;
    pthread_mutex_unlock(&s->lock);
    if (status == 200)
        answer(c, rl, 200, "Content-Type: application/json\r\n", "{\"ok\":true}", 11, 0, true);
    else
        answer_text(c, rl, status, "failing");
}

static bool route_number(const char *path, const char *prefix, unsigned long long *n)
{
    size_t len = strlen(prefix);
    if (strncmp(path, prefix, len) != 0)
        return false;
    char *end;
    *n = strtoull(path + len, &end, 10);
    return end != path + len && (*end == '\0' || *end == '?');
}

static bool route_fixed(sim_http_conn_t *c, const request_line_t *rl)
{
    const char *p = rl->route;
    if (strcmp(p, "/ok") == 0)
        answer_text(c, rl, 200, "ok");
    else if (strncmp(p, "/echo", 5) == 0)
        answer_echo(c, rl);
    else if (strcmp(p, "/never") == 0)
        hold(c, -1);
    else if (strcmp(p, "/headers") == 0)
        answer(c, rl, 200, "X-Multi: a\r\nX-MiXeD-Case: v\r\nSet-Cookie: c=1\r\nX-Multi: b\r\n"
                           "Set-Cookie: d=2\r\nX-Empty:\r\n", "h", 1, 0, true);
    else if (strcmp(p, "/loop") == 0)
        answer_redirect(c, rl, "/loop");
    else if (strncmp(p, "/redirect-to?", 13) == 0)
        answer_redirect(c, rl, rl->query);
    else if (strcmp(p, "/json") == 0)
        answer(c, rl, 200, "Content-Type: application/json\r\n", JSON_DOC, sizeof JSON_DOC - 1, 0, true);
    else if (strncmp(p, "/webhook", 8) == 0)
        answer_webhook(c, rl);
    else if (strcmp(p, "/garbage") == 0) {
        c->close_now = true;
        ami_buf_append_str(&c->out, "THIS IS NOT HTTP\r\n\r\n");
        sim_http_send(c);
    } else if (strcmp(p, "/close") == 0)
        sim_http_close(c);
    else
        return false;
    return true;
}

void sim_http_route(sim_http_conn_t *c)
{
    request_line_t rl;
    if (!parse_request_line(c, &rl)) {
        sim_http_close(c);
        return;
    }
    record(c, &rl);
    unsigned long long n;
    char where[64];
    if (route_fixed(c, &rl))
        return;
    if (route_number(rl.route, "/status/", &n) && n >= 100 && n <= 599) {
        snprintf(where, sizeof where, "status %llu", n);
        answer_text(c, &rl, (int)n, where);
    } else if (route_number(rl.route, "/delay/", &n))
        hold(c, (double)n / 1000.0);
    else if (route_number(rl.route, "/big/", &n))
        answer(c, &rl, 200, "Content-Type: application/octet-stream\r\n", "", 0, n, true);
    else if (route_number(rl.route, "/stream/", &n))
        answer(c, &rl, 200, "Content-Type: application/octet-stream\r\n", "", 0, n, false);
    else if (route_number(rl.route, "/bigheader/", &n) && n <= (16u << 20))
        answer_big_header(c, &rl, (size_t)n);
    else if (route_number(rl.route, "/redirect/", &n)) {
        snprintf(where, sizeof where, "/redirect/%llu", n ? n - 1 : 0);
        if (n)
            answer_redirect(c, &rl, where);
        else
            answer_text(c, &rl, 200, "arrived");
    } else
        answer_text(c, &rl, 404, "no such route");
}
