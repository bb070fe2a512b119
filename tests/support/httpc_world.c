#include "httpc_world.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

void hw_on_done(void *ud, const ami_httpc_response_t *res)
{
    hw_outcome_t *o = ud;
    o->done = true;
    o->calls++;
    o->kind = res->err.kind;
    snprintf(o->msg, sizeof o->msg, "%s", res->err.msg);
    o->status = res->status;
    o->body_len = res->body_len;
    snprintf(o->body, sizeof o->body, "%.*s", (int)(res->body_len < sizeof o->body ? res->body_len : sizeof o->body - 1),
             res->body ? res->body : "");
    o->nheaders = res->nheaders;
    o->headers[0] = '\0';
    for (size_t i = 0; i < res->nheaders; i++) {
        size_t at = strlen(o->headers);
        snprintf(o->headers + at, sizeof o->headers - at, "%.*s=%.*s\n", (int)res->headers[i].name_len,
                 res->headers[i].name, (int)res->headers[i].value_len, res->headers[i].value);
    }
    snprintf(o->url, sizeof o->url, "%s", res->url ? res->url : "");
}

hw_t *hw_new(const ami_httpc_config_t *cfg, ami_sim_http_t *srv)
{
    hw_t *w = calloc(1, sizeof *w);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->srv = srv;
    w->metrics = ami_metrics_new(5000);
    ami_httpc_err_t err = {0};
    w->h = ami_httpc_new(w->loop, cfg, w->metrics, NULL, &err);
    if (!w->h)
        fail_msg("ami_httpc_new: %s", err.msg);
    snprintf(w->base, sizeof w->base, "http://127.0.0.1:%u", ami_sim_http_port(srv));
    return w;
}

void hw_free(hw_t *w)
{
    ami_httpc_free(w->h);
    ami_metrics_free(w->metrics);
    ev_loop_destroy(w->loop);
    free(w);
}

ami_httpc_config_t hw_config(void)
{
    ami_httpc_config_t c;
    ami_httpc_config_default(&c);
    return c;
}

bool hw_is_done(void *ud)
{
    return ((hw_outcome_t *)ud)->done;
}

void hw_url(hw_t *w, const char *path, char *out, size_t n)
{
    snprintf(out, n, "%s%s", w->base, path);
}

ami_httpc_request_t hw_get(const char *url)
{
    return (ami_httpc_request_t){.method = "GET", .url = url, .url_len = strlen(url)};
}

/* Start req and run the loop until it is answered (fails the test if not). */
void hw_perform(hw_t *w, const ami_httpc_request_t *req, hw_outcome_t *o)
{
    memset(o, 0, sizeof *o);
    ami_httpc_err_t err = {0};
    if (!ami_httpc_start(w->h, req, hw_on_done, o, &err))
        fail_msg("hw_refused at once: %s: %s", ami_httpc_kind_name(err.kind), err.msg);
    if (!harness_run_until(w->loop, hw_is_done, o, 15000))
        fail_msg("no answer in 15 s");
}

void hw_perform_path(hw_t *w, const char *path, hw_outcome_t *o)
{
    char url[256];
    hw_url(w, path, url, sizeof url);
    ami_httpc_request_t req = hw_get(url);
    hw_perform(w, &req, o);
}

double hw_metric(hw_t *w, const char *name, const char *const *labels)
{
    double v = 0;
    if (ami_metrics_value(w->metrics, name, labels, &v) < 0)
        return 0;
    return v;
}

double hw_refused(hw_t *w, const char *reason)
{
    return hw_metric(w, "ami_http_client_refused_total", (const char *const[]){"reason", reason, NULL});
}

/* A request hw_refused before anything is sent: kind and counted reason. */
void hw_expect_refused_at_once(hw_t *w, const ami_httpc_request_t *req, ami_httpc_kind_t kind,
                                   const char *reason, const char *text)
{
    double before = hw_refused(w, reason);
    hw_outcome_t o = {0};
    ami_httpc_err_t err = {0};
    assert_null(ami_httpc_start(w->h, req, hw_on_done, &o, &err));
    assert_string_equal(ami_httpc_kind_name(err.kind), ami_httpc_kind_name(kind));
    if (!strstr(err.msg, text))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, text);
    assert_true(hw_refused(w, reason) == before + 1);
    harness_run_for(w->loop, 20);
    assert_false(o.done); /* a hw_refused request never calls back */
}

void hw_expect_error(hw_outcome_t *o, ami_httpc_kind_t kind, const char *text)
{
    assert_true(o->done);
    if (o->kind != kind)
        fail_msg("expected %s, got %s: %s", ami_httpc_kind_name(kind), ami_httpc_kind_name(o->kind), o->msg);
    if (text && !strstr(o->msg, text))
        fail_msg("message \"%s\" lacks \"%s\"", o->msg, text);
}

bool hw_server_idle(void *srv)
{
    return ami_sim_http_stats(srv).open == 0;
}
