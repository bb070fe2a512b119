/* The TLS tests' shared world: see tls_world.h. */
#include "tls_world.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "proc.h"

static char pki[128]; /* the PKI folder of this test program */

const char *tw_pki(const char *name)
{
    static char buf[8][256];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", pki, name);
    return p;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p[512];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int tw_make_pki(void **state)
{
    (void)state;
    snprintf(pki, sizeof pki, "/tmp/ami-tls-test-XXXXXX");
    if (!mkdtemp(pki))
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash '%s/tests/support/make_certs.sh' '%s' >/dev/null 2>&1", AMI_SOURCE_DIR, pki);
    return system(cmd) == 0 ? 0 : -1;
}

int tw_remove_pki(void **state)
{
    (void)state;
    proc_kill_all(); /* a failed end-to-end test leaves its programs running */
    remove_dir(pki);
    return 0;
}

void tw_copy_file(const char *from, const char *to)
{
    char buf[8192];
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* ---- world ------------------------------------------------------------------------------ */

size_t tw_verify_off_warnings(const tls_world_t *w)
{
    static const char *const warn[] = {"level=warn", "tls certificate verification is off", NULL};
    return log_capture_lines_with(&w->logs, warn);
}

static void on_state(void *ud, const char *key, ami_conn_state_t from, ami_conn_state_t to, const char *reason)
{
    (void)key;
    (void)from;
    tls_world_t *w = ud;
    w->transitions[to]++;
    if (reason && *reason)
        snprintf(w->last_reason, sizeof w->last_reason, "%s", reason);
}

tls_world_t *tw_new(void)
{
    tls_world_t *w = calloc(1, sizeof *w);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = AMI_LOG_DEBUG;
    log_capture_attach(&w->logs, &lc);
    w->log = ami_logger_new(&lc);
    w->sim = ami_sim_new(w->loop, w->log);
    w->metrics = ami_metrics_new(5000);
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    cc.loop = w->loop;
    cc.metrics = w->metrics;
    cc.log = w->log;
    cc.seed = 7;
    w->client = ami_client_new(&cc, NULL);
    ami_client_on_state(w->client, on_state, w);
    return w;
}

void tw_free(tls_world_t *w)
{
    ami_client_free(w->client);
    ami_sim_free(w->sim);
    ami_metrics_free(w->metrics);
    ami_logger_free(w->log);
    ev_loop_destroy(w->loop);
    log_capture_free(&w->logs);
    free(w);
}

ami_sim_node_t *tw_add_node(tls_world_t *w, const tw_node_tls_t *t)
{
    ami_sim_node_config_t nc = {.name = "pbx1"};
    if (t) {
        nc.tls_cert_file = tw_pki(t->cert);
        nc.tls_key_file = tw_pki(strcmp(t->cert, "wrongname.crt") == 0 ? "wrongname.key" : "server.key");
        nc.tls_client_ca_file = t->client_ca ? tw_pki(t->client_ca) : NULL;
        nc.tls12_only = t->tls12_only;
    }
    ami_err_t err;
    ami_sim_node_t *n = ami_sim_add_node(w->sim, &nc, &err);
    if (!n)
        fail_msg("sim node: %s", err.msg);
    return n;
}

ami_sim_node_t *tw_add_tls_node(tls_world_t *w, const char *cert)
{
    tw_node_tls_t t = {.cert = cert};
    return tw_add_node(w, &t);
}

/* Fast timers, and TLS verified against the test CA (when tls). */
void tw_options(ami_server_options_t *o, const char *key, uint16_t port, bool tls)
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
    o->backoff_max_ms = 100;
    o->connect_timeout_ms = 1000;
    o->login_timeout_ms = 2000;
    o->action_timeout_ms = 2000;
    if (tls) {
        o->tls.enabled = true;
        o->tls.ca_file = tw_pki("ca.crt");
        o->tls.handshake_timeout_ms = 2000;
    }
}

void tw_add_server(tls_world_t *w, ami_server_options_t *o)
{
    ami_err_t err;
    if (ami_client_add_server(w->client, o, &err) < 0)
        fail_msg("add_server: %s", err.msg);
}

typedef struct wait_state {
    tls_world_t *w;
    size_t server;
    ami_conn_state_t state;
} wait_state_t;

static bool in_state(void *ud)
{
    wait_state_t *s = ud;
    return ami_conn_state(ami_client_conn(s->w->client, s->server)) == s->state;
}

void tw_expect_state(tls_world_t *w, size_t server, ami_conn_state_t state, uint32_t ms)
{
    wait_state_t s = {w, server, state};
    if (!harness_run_until(w->loop, in_state, &s, ms))
        fail_msg("server %zu not %s within %u ms (is %s; last reason: %s)", server, ami_conn_state_name(state),
                 ms, ami_conn_state_name(ami_conn_state(ami_client_conn(w->client, server))), w->last_reason);
}

const char *tw_last_error(tls_world_t *w, size_t server)
{
    return ami_conn_last_error(ami_client_conn(w->client, server));
}

void tw_expect_error(tls_world_t *w, size_t server, const char *fragment)
{
    if (!strstr(tw_last_error(w, server), fragment))
        fail_msg("last_error \"%s\" does not contain \"%s\"", tw_last_error(w, server), fragment);
}

double tw_metric(tls_world_t *w, const char *name, const char *const *labels)
{
    double v = 0;
    ami_metrics_value(w->metrics, name, labels, &v);
    return v;
}

double tw_failures(tls_world_t *w, const char *reason)
{
    return tw_metric(w, "ami_tls_handshake_failures_total",
                     (const char *const[]){"server_key", "pbx1", "reason", reason, NULL});
}

typedef struct outcome {
    int finals;
    ami_pending_signal_t signal;
    ami_status_t status;
} outcome_t;

static void capture(void *ud, const ami_pending_note_t *n)
{
    outcome_t *o = ud;
    if (n->signal != AMI_PENDING_DONE && n->signal != AMI_PENDING_FAILED)
        return;
    o->finals++;
    o->signal = n->signal;
    o->status = n->status;
}

static bool finished(void *ud)
{
    return ((outcome_t *)ud)->finals > 0;
}

void tw_ping_ok(tls_world_t *w, const char *server)
{
    outcome_t out = {0};
    ami_action_req_t req = {.name = "Ping"};
    ami_err_t err;
    if (ami_client_send(w->client, server, &req, capture, &out, NULL, &err) < 0)
        fail_msg("ping %s: %s", server, err.msg);
    assert_true(harness_run_until(w->loop, finished, &out, 3000));
    assert_int_equal(out.signal, AMI_PENDING_DONE);
}

/* A refused server: backoff with the reason, no login on the simulator. */
void tw_expect_refused(tls_world_t *w, ami_sim_node_t *n, const char *fragment)
{
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    tw_expect_error(w, 0, fragment);
    assert_int_equal(w->transitions[AMI_CONN_AUTHENTICATING], 0);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
}
