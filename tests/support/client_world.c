#include "client_world.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "proc.h"

static void on_state(void *ud, const char *key, ami_conn_state_t from, ami_conn_state_t to,
                     const char *reason)
{
    (void)from;
    cworld_t *w = ud;
    w->transitions[to]++;
    w->entered_at[to] = ev_now(w->loop);
    if (reason)
        snprintf(w->last_reason, sizeof w->last_reason, "%s", reason);
    if (to == AMI_CONN_BACKOFF && w->nbackoffs < 64) {
        int i = ami_client_server_index(w->client, key);
        w->backoffs[w->nbackoffs++] = ami_conn_backoff_delay(ami_client_conn(w->client, (size_t)i));
    }
}

/* cw_closed_port's sockets, held until cw_free. */
static int held[16];
static size_t nheld;

cworld_t *cw_new(const cw_config_t *cfg)
{
    cw_config_t none = {0};
    if (!cfg)
        cfg = &none;
    cworld_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->sim = ami_sim_new(w->loop, NULL);
    w->metrics = ami_metrics_new(5000);
    if (cfg->capture_logs) {
        ami_logger_config_t lc;
        ami_logger_config_default(&lc);
        lc.level = AMI_LOG_INFO;
        log_capture_attach(&w->logs, &lc);
        w->log = ami_logger_new(&lc);
    }
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = w->loop;
    cc.metrics = w->metrics;
    cc.log = w->log;
    cc.route = cfg->route;
    cc.seed = 42;
    w->client = ami_client_new(&cc, NULL);
    assert_non_null(w->client);
    ami_client_on_state(w->client, on_state, w);
    return w;
}

void cw_free(cworld_t *w)
{
    ami_client_free(w->client);
    ami_sim_free(w->sim);
    ami_metrics_free(w->metrics);
    ami_logger_free(w->log);
    ev_loop_destroy(w->loop);
    log_capture_free(&w->logs);
    free(w);
    while (nheld)
        close(held[--nheld]);
}

ami_sim_node_t *cw_add_node(cworld_t *w, const char *name)
{
    ami_sim_node_config_t nc = {.name = name};
    ami_err_t err;
    ami_sim_node_t *n = ami_sim_add_node(w->sim, &nc, &err);
    if (!n)
        fail_msg("sim node: %s", err.msg);
    return n;
}

void cw_fast_options(ami_server_options_t *o, const char *key, uint16_t port)
{
    ami_server_options_default(o);
    o->server_key = key;
    o->host = "127.0.0.1";
    o->port = port;
    o->username = "engine";
    o->secret = "s3cret";
    o->heartbeat_interval_ms = 100;
    o->heartbeat_timeout_ms = 100;
    o->heartbeat_max_failures = 2;
    o->backoff_initial_ms = 20;
    o->backoff_max_ms = 200;
    o->connect_timeout_ms = 500;
    o->login_timeout_ms = 1000;
    o->action_timeout_ms = 2000;
}

void cw_add_server(cworld_t *w, const ami_server_options_t *o)
{
    ami_err_t err;
    if (ami_client_add_server(w->client, o, &err) < 0)
        fail_msg("add_server: %s", err.msg);
}

uint16_t cw_closed_port(void)
{
    uint16_t port = 0;
    int fd = nheld < sizeof held / sizeof held[0] ? refusing_port(&port) : -1;
    if (fd < 0)
        fail_msg("no refusing port: %s", strerror(errno));
    held[nheld++] = fd;
    return port;
}

typedef struct wait_state {
    cworld_t *w;
    size_t server;
    ami_conn_state_t state;
} wait_state_t;

bool cw_in_state(cworld_t *w, size_t server, ami_conn_state_t state)
{
    return ami_conn_state(ami_client_conn(w->client, server)) == state;
}

static bool reached(void *ud)
{
    wait_state_t *s = ud;
    return cw_in_state(s->w, s->server, s->state);
}

void cw_expect_state(cworld_t *w, size_t server, ami_conn_state_t state, uint32_t ms)
{
    wait_state_t s = {w, server, state};
    if (!harness_run_until(w->loop, reached, &s, ms))
        fail_msg("server %zu not %s within %u ms (is %s; last reason: %s)", server,
                 ami_conn_state_name(state), ms,
                 ami_conn_state_name(ami_conn_state(ami_client_conn(w->client, server))), w->last_reason);
}

double cw_metric(cworld_t *w, const char *name, const char *const *labels)
{
    double v = 0;
    ami_metrics_value(w->metrics, name, labels, &v);
    return v;
}

size_t cw_log_lines(const cworld_t *w, const char *const *needles)
{
    return log_capture_lines_with(&w->logs, needles);
}

void cw_capture(void *ud, const ami_pending_note_t *n)
{
    outcome_t *o = ud;
    if (n->signal != AMI_PENDING_DONE && n->signal != AMI_PENDING_FAILED)
        return;
    o->finals++;
    o->signal = n->signal;
    o->status = n->status;
    snprintf(o->reason, sizeof o->reason, "%s", n->reason ? n->reason : "");
    snprintf(o->name, sizeof o->name, "%s", n->msg ? ami_msg_name(n->msg) : "");
    const char *v = n->msg && o->probe ? ami_msg_get(n->msg, o->probe) : NULL;
    snprintf(o->probe_value, sizeof o->probe_value, "%s", v ? v : "");
}

bool cw_finished(void *ud)
{
    return ((outcome_t *)ud)->finals > 0;
}

int cw_send(cworld_t *w, const char *server, const char *action, outcome_t *o, ami_err_t *err)
{
    ami_action_req_t req = {.name = action};
    return ami_client_send(w->client, server, &req, cw_capture, o, NULL, err);
}
