/* AMI over TLS, end to end on 127.0.0.1: the C client against the
 * simulator serving TLS, with a PKI the test makes with the openssl CLI
 * (tests/support/make_certs.sh) in a temporary folder it removes.
 *
 * Verification: a good certificate logs in (plain and MD5); an unknown CA,
 * a wrong name or IP, an expired and a not-yet-valid certificate are
 * refused with their reasons (in last_error and the failure metric); a
 * peer that stalls or closes mid-handshake, or speaks plain AMI, is
 * reported as such; client certificates; verify = false warns at every
 * connect. Then the connection behaves as over plain TCP: heartbeats,
 * reconnects, hostile input (asserted identical in both modes), floods;
 * renegotiation and key updates keep it working; certificate files
 * rotate at the next reconnect; reconnect loops leak no TLS object.
 * Every test bounds its own time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <ev.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/client.h"
#include "harness.h"
#include "proc.h"
#include "sim/sim.h"
#include "transport/tls.h"
#include "util/alloc.h"

static char pki[128];

static const char *pki_path(const char *name)
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

static int make_pki(void **state)
{
    (void)state;
    snprintf(pki, sizeof pki, "/tmp/ami-tls-test-XXXXXX");
    if (!mkdtemp(pki))
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash '%s/tests/support/make_certs.sh' '%s' >/dev/null 2>&1", AMI_SOURCE_DIR, pki);
    return system(cmd) == 0 ? 0 : -1;
}

static int remove_pki(void **state)
{
    (void)state;
    proc_kill_all(); /* a failed end-to-end test leaves its programs running */
    remove_dir(pki);
    return 0;
}

static void copy_file(const char *from, const char *to)
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

typedef struct world {
    struct ev_loop *loop;
    ami_logger_t *log;
    ami_sim_t *sim;
    ami_client_t *client;
    ami_metrics_t *metrics;
    int transitions[AMI_CONN_STATE_COUNT];
    char last_reason[AMI_ERR_MSG_MAX];
    char lines[32768]; /* log lines that mention TLS */
    size_t nlines;
    int verify_off_warnings;
} world_t;

static void sink(void *ud, ami_log_level_t level, const char *line, size_t len)
{
    world_t *w = ud;
    if (level == AMI_LOG_WARN && memmem(line, len, "tls certificate verification is off", 35))
        w->verify_off_warnings++;
    if (!memmem(line, len, "tls", 3) || w->nlines + len + 1 >= sizeof w->lines)
        return;
    memcpy(w->lines + w->nlines, line, len);
    w->nlines += len;
    w->lines[w->nlines] = '\0';
}

static void on_state(void *ud, const char *key, ami_conn_state_t from, ami_conn_state_t to, const char *reason)
{
    (void)key;
    (void)from;
    world_t *w = ud;
    w->transitions[to]++;
    if (reason && *reason)
        snprintf(w->last_reason, sizeof w->last_reason, "%s", reason);
}

static world_t *world_new(void)
{
    world_t *w = calloc(1, sizeof *w);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = AMI_LOG_DEBUG;
    lc.sink = sink;
    lc.sink_ud = w;
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

static void world_free(world_t *w)
{
    ami_client_free(w->client);
    ami_sim_free(w->sim);
    ami_metrics_free(w->metrics);
    ami_logger_free(w->log);
    ev_loop_destroy(w->loop);
    free(w);
}

typedef struct node_tls {
    const char *cert;       /* file name in the PKI folder */
    const char *client_ca;  /* require client certificates signed by it */
    bool tls12_only;
} node_tls_t;

static ami_sim_node_t *add_node(world_t *w, const node_tls_t *t)
{
    ami_sim_node_config_t nc = {.name = "pbx1"};
    if (t) {
        nc.tls_cert_file = pki_path(t->cert);
        nc.tls_key_file = pki_path(strcmp(t->cert, "wrongname.crt") == 0 ? "wrongname.key" : "server.key");
        nc.tls_client_ca_file = t->client_ca ? pki_path(t->client_ca) : NULL;
        nc.tls12_only = t->tls12_only;
    }
    ami_err_t err;
    ami_sim_node_t *n = ami_sim_add_node(w->sim, &nc, &err);
    if (!n)
        fail_msg("sim node: %s", err.msg);
    return n;
}

static ami_sim_node_t *add_tls_node(world_t *w, const char *cert)
{
    node_tls_t t = {.cert = cert};
    return add_node(w, &t);
}

/* Fast timers, and TLS verified against the test CA (when tls). */
static void options(ami_server_options_t *o, const char *key, uint16_t port, bool tls)
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
        o->tls.ca_file = pki_path("ca.crt");
        o->tls.handshake_timeout_ms = 2000;
    }
}

static void add_server(world_t *w, ami_server_options_t *o)
{
    ami_err_t err;
    if (ami_client_add_server(w->client, o, &err) < 0)
        fail_msg("add_server: %s", err.msg);
}

typedef struct wait_state {
    world_t *w;
    size_t server;
    ami_conn_state_t state;
} wait_state_t;

static bool in_state(void *ud)
{
    wait_state_t *s = ud;
    return ami_conn_state(ami_client_conn(s->w->client, s->server)) == s->state;
}

static void expect_state(world_t *w, size_t server, ami_conn_state_t state, uint32_t ms)
{
    wait_state_t s = {w, server, state};
    if (!harness_run_until(w->loop, in_state, &s, ms))
        fail_msg("server %zu not %s within %u ms (is %s; last reason: %s)", server, ami_conn_state_name(state),
                 ms, ami_conn_state_name(ami_conn_state(ami_client_conn(w->client, server))), w->last_reason);
}

static const char *last_error(world_t *w, size_t server)
{
    return ami_conn_last_error(ami_client_conn(w->client, server));
}

static void expect_error(world_t *w, size_t server, const char *fragment)
{
    if (!strstr(last_error(w, server), fragment))
        fail_msg("last_error \"%s\" does not contain \"%s\"", last_error(w, server), fragment);
}

static double metric(world_t *w, const char *name, const char *const *labels)
{
    double v = 0;
    ami_metrics_value(w->metrics, name, labels, &v);
    return v;
}

static double failures(world_t *w, const char *reason)
{
    return metric(w, "ami_tls_handshake_failures_total",
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

static void ping_ok(world_t *w, const char *server)
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
static void expect_refused(world_t *w, ami_sim_node_t *n, const char *fragment)
{
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    expect_error(w, 0, fragment);
    assert_int_equal(w->transitions[AMI_CONN_AUTHENTICATING], 0);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
}

/* ---- verification ---------------------------------------------------------------------------- */

static void good_certificate_logs_in_with_plain_and_md5_login(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t plain, md5;
    options(&plain, "pbx1", ami_sim_node_port(n), true);
    options(&md5, "pbx2", ami_sim_node_port(n), true);
    md5.auth = AMI_AUTH_MD5;
    add_server(w, &plain);
    add_server(w, &md5);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
    ping_ok(w, "pbx1");
    ping_ok(w, "pbx2");
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 2);
    assert_int_equal(ami_sim_node_stats(n).tls_handshakes, 2);
    /* no SNI for an IP endpoint (RFC 6066), and the handshake was timed */
    assert_non_null(strstr(w->lines, "sim tls established"));
    assert_null(strstr(w->lines, "sni=pbx"));
    assert_non_null(strstr(w->lines, "verified_name=\"IP 127.0.0.1\""));
    assert_true(metric(w, "ami_tls_handshake_seconds", (const char *const[]){"server_key", "pbx1", NULL}) == 1);
    assert_true(metric(w, "ami_tls_handshake_seconds", (const char *const[]){"server_key", "pbx2", NULL}) == 1);
    world_free(w);
}

static void server_name_is_verified_and_sent_as_sni(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.server_name = "pbx1.test";
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(w->lines, "sni=pbx1.test"));
    assert_non_null(strstr(w->lines, "verified_name=pbx1.test"));
    world_free(w);
}

static void unknown_ca_is_refused_with_its_reason(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "rogue.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    expect_refused(w, n, "unknown CA");
    expect_error(w, 0, "CN=rogue CA");
    expect_error(w, 0, "tls.ca_file");
    assert_true(failures(w, "unknown_ca") >= 1);
    world_free(w);
}

static void wrong_ip_is_refused_as_a_name_mismatch(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "wrongname.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    expect_refused(w, n, "name mismatch");
    expect_error(w, 0, "not for IP 127.0.0.1");
    expect_error(w, 0, "DNS:other.test, IP:10.9.9.9");
    assert_true(failures(w, "name_mismatch") >= 1);
    world_free(w);
}

static void wrong_server_name_is_refused_as_a_name_mismatch(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.server_name = "pbx2.test";
    add_server(w, &o);
    expect_refused(w, n, "name mismatch");
    expect_error(w, 0, "not for pbx2.test");
    world_free(w);
}

static void expired_certificate_is_refused_with_its_date(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "expired.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    expect_refused(w, n, "certificate expired");
    expect_error(w, 0, "expired on 2020-01-02 00:00:00 UTC");
    assert_true(failures(w, "expired") >= 1);
    world_free(w);
}

static void not_yet_valid_certificate_is_refused(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "future.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    expect_refused(w, n, "not yet valid");
    expect_error(w, 0, "valid from 2040-01-01");
    assert_true(failures(w, "not_yet_valid") >= 1);
    world_free(w);
}

/* ---- peers that do not finish the handshake ------------------------------------------------------ */

static int listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

/* The kernel completes the TCP handshake; nobody ever answers the ClientHello. */
static void stalled_handshake_times_out(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = listener(&port);
    world_t *w = world_new();
    ami_server_options_t o;
    options(&o, "pbx1", port, true);
    o.tls.handshake_timeout_ms = 200;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    expect_error(w, 0, "TLS handshake with 127.0.0.1:");
    expect_error(w, 0, "timed out after 200 ms");
    assert_int_equal(w->transitions[AMI_CONN_AUTHENTICATING], 0);
    assert_true(failures(w, "timeout") >= 1);
    assert_true(metric(w, "ami_disconnects_total",
                       (const char *const[]){"server_key", "pbx1", "reason", "timeout", NULL}) >= 1);
    world_free(w);
    close(lfd);
}

typedef struct closer {
    ev_io w;
    int accepted;
} closer_t;

static void accept_and_close(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    closer_t *c = (closer_t *)w;
    int fd = accept(w->fd, NULL, NULL);
    if (fd >= 0) {
        c->accepted++;
        close(fd);
    }
}

static void peer_closing_mid_handshake_is_reported(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = listener(&port);
    world_t *w = world_new();
    closer_t c = {.accepted = 0};
    ev_io_init(&c.w, accept_and_close, lfd, EV_READ);
    ev_io_start(w->loop, &c.w);
    ami_server_options_t o;
    options(&o, "pbx1", port, true);
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    expect_error(w, 0, "closed the connection during the TLS handshake");
    assert_true(c.accepted >= 1);
    assert_true(failures(w, "peer_closed") >= 1);
    ev_io_stop(w->loop, &c.w);
    world_free(w);
    close(lfd);
}

static void plain_ami_port_is_reported_as_not_tls(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_node(w, NULL);
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    expect_refused(w, n, "does not speak TLS on this port");
    assert_true(failures(w, "not_tls") >= 1);
    world_free(w);
}

/* ---- client certificates ------------------------------------------------------------------- */

static void client_certificate_is_sent_when_configured(void **state)
{
    (void)state;
    world_t *w = world_new();
    node_tls_t t = {.cert = "server.crt", .client_ca = "ca.crt"};
    ami_sim_node_t *n = add_node(w, &t);
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.cert_file = pki_path("client.crt");
    o.tls.key_file = pki_path("client.key");
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ping_ok(w, "pbx1");
    assert_int_equal(ami_sim_node_stats(n).tls_handshake_failures, 0);
    world_free(w);
}

static void missing_client_certificate_is_reported(void **state)
{
    (void)state;
    world_t *w = world_new();
    node_tls_t t = {.cert = "server.crt", .client_ca = "ca.crt"};
    ami_sim_node_t *n = add_node(w, &t);
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    expect_error(w, 0, "requires a client certificate");
    expect_error(w, 0, "tls.cert_file");
    assert_true(failures(w, "no_certificate") >= 1);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
    world_free(w);
}

static void client_certificate_from_another_ca_is_refused(void **state)
{
    (void)state;
    world_t *w = world_new();
    node_tls_t t = {.cert = "server.crt", .client_ca = "ca.crt"};
    ami_sim_node_t *n = add_node(w, &t);
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.cert_file = pki_path("rogue-client.crt");
    o.tls.key_file = pki_path("client.key");
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    expect_error(w, 0, "refused our certificate");
    assert_true(failures(w, "certificate_refused") >= 1);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
    world_free(w);
}

/* ---- verify = false --------------------------------------------------------------------------- */

static void verify_off_connects_anywhere_and_warns_at_every_connect(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "rogue.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.no_verify = true;
    o.tls.ca_file = NULL;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(w->verify_off_warnings, 1);
    ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_DISCONNECTED, "test reconnect");
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(w->verify_off_warnings, 2);
    /* the certificate nobody checked is not blamed for a connection cut later */
    ami_sim_faults_t cut = {.tls_abrupt_close = true};
    ami_sim_node_set_faults(n, &cut);
    ami_sim_node_drop_sessions(n);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    expect_error(w, 0, "closed the connection (without TLS close_notify)");
    assert_true(failures(w, "unknown_ca") == 0);
    world_free(w);
}

/* ---- the same connection as over plain TCP ----------------------------------------------------- */

typedef struct behaviour {
    char garbage[AMI_ERR_MSG_MAX];
    char oversized[AMI_ERR_MSG_MAX];
    char heartbeat[AMI_ERR_MSG_MAX];
    char dropped[AMI_ERR_MSG_MAX];
    uint64_t protocol_errors;
    uint64_t force_closes;
    int connected;
} behaviour_t;

/* Wait for the force-close that `what` causes, note its reason, wait for the reconnect. */
static void close_and_back(world_t *w, char *reason_out)
{
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    snprintf(reason_out, AMI_ERR_MSG_MAX, "%s", last_error(w, 0));
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ping_ok(w, "pbx1");
}

/* One server misbehaving in every way the plain-TCP tests know, over TLS or not. */
static void misbehave(bool tls, behaviour_t *b)
{
    world_t *w = world_new();
    ami_sim_node_t *n = tls ? add_tls_node(w, "server.crt") : add_node(w, NULL);
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), tls);
    o.parser.max_line = 4096;
    o.parser.max_message = 16384;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);

    ami_sim_faults_t garbage = {.send_garbage = true};
    ami_sim_node_set_faults(n, &garbage);
    close_and_back(w, b->garbage);

    static char big[70000];
    int len = snprintf(big, sizeof big, "Event: UserEvent\r\nUserEvent: Big\r\nData: ");
    memset(big + len, 'x', 65536);
    memcpy(big + len + 65536, "\r\n\r\n", 4);
    ami_sim_node_inject(n, big, (size_t)len + 65536 + 4);
    close_and_back(w, b->oversized);

    ami_sim_faults_t silent = {.ping_silent = true}, none = {0};
    ami_sim_node_set_faults(n, &silent);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    snprintf(b->heartbeat, sizeof b->heartbeat, "%s", last_error(w, 0));
    ami_sim_node_set_faults(n, &none);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);

    ami_sim_node_drop_sessions(n);
    close_and_back(w, b->dropped);

    const ami_conn_stats_t *st = ami_conn_stats(ami_client_conn(w->client, 0));
    b->protocol_errors = st->protocol_errors;
    b->force_closes = st->force_closes;
    b->connected = w->transitions[AMI_CONN_CONNECTED];
    world_free(w);
}

static void hostile_input_heartbeats_and_reconnects_behave_as_over_plain_tcp(void **state)
{
    (void)state;
    behaviour_t plain, tls;
    memset(&plain, 0, sizeof plain);
    memset(&tls, 0, sizeof tls);
    misbehave(false, &plain);
    misbehave(true, &tls);
    print_message("garbage: %s\noversized: %s\nheartbeat: %s\ndropped: %s / %s\n", tls.garbage,
                  tls.oversized, tls.heartbeat, plain.dropped, tls.dropped);
    assert_string_equal(tls.garbage, plain.garbage);
    assert_string_equal(tls.oversized, plain.oversized);
    assert_string_equal(tls.heartbeat, "Max heartbeat failures");
    assert_string_equal(plain.heartbeat, "Max heartbeat failures");
    assert_non_null(strstr(plain.dropped, "closed the connection"));
    assert_non_null(strstr(tls.dropped, "closed the connection (with TLS close_notify)"));
    assert_int_equal(tls.protocol_errors, 2);
    assert_int_equal(plain.protocol_errors, 2);
    assert_int_equal(tls.force_closes, plain.force_closes);
    assert_int_equal(tls.connected, 5);
    assert_int_equal(plain.connected, 5);
}

typedef struct pinger {
    int done, failed;
} pinger_t;

static void count_ping(void *ud, const ami_pending_note_t *n)
{
    pinger_t *p = ud;
    p->done += n->signal == AMI_PENDING_DONE;
    p->failed += n->signal == AMI_PENDING_FAILED;
}

static bool pings_over(void *ud)
{
    pinger_t *p = ud;
    return p->done + p->failed >= 200;
}

static void event_flood_over_tls_does_not_starve_another_server(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *a = add_tls_node(w, "server.crt");
    ami_sim_node_t *b = add_tls_node(w, "server.crt");
    ami_server_options_t oa, ob;
    options(&oa, "flood", ami_sim_node_port(a), true);
    options(&ob, "quiet", ami_sim_node_port(b), true);
    oa.heartbeat_interval_ms = ob.heartbeat_interval_ms = 0;
    oa.action_timeout_ms = 10000;
    add_server(w, &oa);
    add_server(w, &ob);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
    ami_sim_faults_t flood = {.flood_events_per_sec = -1};
    ami_sim_node_set_faults(a, &flood);
    harness_run_for(w->loop, 100);
    /* the quiet server answers at once; the flooding one answers between
     * event blocks, which exercises the simulator's TLS write retries too */
    pinger_t p = {0}, pf = {0};
    for (int i = 0; i < 200; i++) {
        ami_action_req_t req = {.name = "Ping"};
        assert_int_equal(ami_client_send(w->client, "quiet", &req, count_ping, &p, NULL, NULL), 0);
        assert_int_equal(ami_client_send(w->client, "flood", &req, count_ping, &pf, NULL, NULL), 0);
        if (i % 20 == 19)
            harness_run_for(w->loop, 5);
    }
    assert_true(harness_run_until(w->loop, pings_over, &p, 10000));
    assert_int_equal(p.failed, 0);
    assert_true(harness_run_until(w->loop, pings_over, &pf, 10000));
    assert_int_equal(pf.failed, 0);
    const ami_conn_stats_t *st = ami_conn_stats(ami_client_conn(w->client, 0));
    print_message("events over TLS meanwhile: %llu\n", (unsigned long long)st->events);
    assert_true(st->events > 1000);
    assert_int_equal(st->protocol_errors, 0);
    assert_int_equal(st->force_closes, 0);
    world_free(w);
}

static void count_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    (void)server_key;
    (void)msg;
    (*(int *)ud)++;
}

static bool got_one(void *ud)
{
    return *(int *)ud >= 1;
}

/* A TLS record is up to 16 KiB; with reads smaller than that, the rest of a
 * record waits decrypted inside the session, where no socket readiness will
 * ever announce it: the transport must take it in the same wake-up. */
static void small_reads_take_every_decrypted_byte(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.read_chunk = 512;
    o.heartbeat_interval_ms = 0;
    add_server(w, &o);
    int events = 0;
    assert_non_null(ami_client_subscribe(w->client, "UserEvent", count_event, &events, NULL));
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    static char ev[9000];
    int len = snprintf(ev, sizeof ev, "Event: UserEvent\r\nUserEvent: Big\r\nData: ");
    memset(ev + len, 'y', 8000);
    memcpy(ev + len + 8000, "\r\n\r\n", 4);
    ami_sim_node_inject(n, ev, (size_t)len + 8004); /* one record, then silence */
    assert_true(harness_run_until(w->loop, got_one, &events, 2000));
    ping_ok(w, "pbx1");
    world_free(w);
}

/* ---- renegotiation, key updates, close_notify ------------------------------------------------------ */

static bool handshakes_reach(void *ud)
{
    ami_sim_node_t *n = ud;
    return ami_sim_node_stats(n).tls_handshakes >= 2;
}

static void tls12_renegotiation_keeps_the_session_working(void **state)
{
    (void)state;
    world_t *w = world_new();
    node_tls_t t = {.cert = "server.crt", .tls12_only = true};
    ami_sim_node_t *n = add_node(w, &t);
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(w->lines, "version=TLSv1.2"));
    ami_sim_faults_t reneg = {.tls_renegotiate = true};
    ami_sim_node_set_faults(n, &reneg);
    assert_int_equal(ami_sim_node_stats(n).tls_renegotiations, 1);
    ping_ok(w, "pbx1"); /* the client answers the HelloRequest inside its reads */
    assert_true(harness_run_until(w->loop, handshakes_reach, n, 3000));
    ping_ok(w, "pbx1");
    assert_int_equal(ami_sim_node_stats(n).sessions_accepted, 1);
    assert_int_equal(w->transitions[AMI_CONN_CONNECTED], 1);
    world_free(w);
}

static void tls13_key_update_keeps_the_session_working(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(w->lines, "version=TLSv1.3"));
    for (int i = 0; i < 3; i++) {
        ami_sim_faults_t update = {.tls_renegotiate = true};
        ami_sim_node_set_faults(n, &update);
        ping_ok(w, "pbx1");
    }
    assert_int_equal(ami_sim_node_stats(n).tls_renegotiations, 3);
    assert_int_equal(w->transitions[AMI_CONN_CONNECTED], 1);
    world_free(w);
}

static bool notified(void *ud)
{
    return ami_sim_node_stats(ud).tls_close_notify_received >= 1;
}

static void the_engine_closes_with_close_notify(void **state)
{
    (void)state;
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.backoff_initial_ms = o.backoff_max_ms = 2000;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_HEARTBEAT, "Max heartbeat failures");
    assert_true(harness_run_until(w->loop, notified, n, 2000));
    world_free(w);
}

/* ---- certificate rotation -------------------------------------------------------------------- */

static void rotated_ca_file_applies_at_the_next_reconnect(void **state)
{
    (void)state;
    const char *rot = pki_path("rotating-ca.crt");
    copy_file(pki_path("rogue-ca.crt"), rot);
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.ca_file = rot;
    add_server(w, &o);
    ami_client_start(w->client);
    expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    expect_error(w, 0, "unknown CA");

    copy_file(pki_path("ca.crt"), rot); /* the operator puts the right CA in place */
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(w->lines, "tls files reloaded"));

    FILE *f = fopen(rot, "w"); /* a broken file: the working context stays */
    fputs("not a certificate\n", f);
    fclose(f);
    ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_DISCONNECTED, "test reconnect");
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(w->lines, "tls files changed but do not load"));
    world_free(w);
    unlink(rot);
}

/* ---- memory ------------------------------------------------------------------------------------ */

/* Our allocator does not see OpenSSL's allocations: the count of live TLS
 * objects must stay flat here, and LeakSanitizer (the ASan run) checks
 * OpenSSL's memory itself at exit. */
static void reconnect_loop_leaks_no_tls_object(void **state)
{
    (void)state;
    long before = ami_tls_live_objects();
    world_t *w = world_new();
    ami_sim_node_t *n = add_tls_node(w, "server.crt");
    ami_server_options_t o;
    options(&o, "pbx1", ami_sim_node_port(n), true);
    o.backoff_initial_ms = 1;
    o.backoff_max_ms = 2;
    o.heartbeat_interval_ms = 0;
    add_server(w, &o);
    ami_client_start(w->client);
    ami_conn_t *c = ami_client_conn(w->client, 0);
    long warm_objects = 0;
    int64_t warm_bytes = 0;
    for (int cycle = 1; cycle <= 200; cycle++) {
        expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
        if (cycle == 5 || cycle == 200) {
            harness_run_for(w->loop, 30); /* the simulator reaps its closed sessions */
            if (cycle == 5) {
                warm_objects = ami_tls_live_objects();
                warm_bytes = ami_alloc_live_bytes();
            }
        }
        ami_conn_force_close(c, AMI_E_HEARTBEAT, "Max heartbeat failures");
    }
    expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    harness_run_for(w->loop, 30);
    print_message("live TLS objects: %ld after 5 cycles, %ld after 200\n", warm_objects, ami_tls_live_objects());
    assert_int_equal(warm_objects, before + 4); /* 2 contexts, a session at each end */
    assert_int_equal(ami_tls_live_objects(), warm_objects);
    assert_int_equal(ami_alloc_live_bytes(), warm_bytes);
    assert_int_equal(ami_sim_node_stats(n).tls_handshakes, 201);
    world_free(w);
    assert_int_equal(ami_tls_live_objects(), before);
}

/* ---- the programs ------------------------------------------------------------------------ */

#define ENGINE_BIN AMI_BINARY_DIR "/ami-engine"
#define SIM_BIN AMI_BINARY_DIR "/ami-sim"
#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ami-sim --tls-cert and ami-engine with a tls table, as an operator runs them. */
static void the_programs_speak_tls_end_to_end(void **state)
{
    (void)state;
    if (access(ENGINE_BIN, X_OK) != 0 || access(SIM_BIN, X_OK) != 0) {
        print_message("SKIP: build ami-engine and ami-sim first\n");
        skip();
    }
    uint16_t port = free_port();
    char portbuf[16], config[256];
    snprintf(portbuf, sizeof portbuf, "%u", (unsigned)port);
    snprintf(config, sizeof config, "%s", pki_path("engine.lua"));
    proc_t sim = {0}, engine = {0};
    assert_int_equal(proc_spawn(&sim,
                                L(SIM_BIN, "--nodes", "1", "--base-port", portbuf, "--cps", "2", "--duration", "60",
                                  "--tls-cert", pki_path("server.crt"), "--tls-key", pki_path("server.key")),
                                NULL, pki_path("sim.out"), pki_path("sim.err")),
                     0);
    assert_true(file_wait_contains(pki_path("sim.out"), "READY", 4000));
    assert_true(file_wait_contains(pki_path("sim.out"), "(user engine, TLS)", 100));
    char text[512];
    snprintf(text, sizeof text,
             "servers = { { key = \"pbx1\", host = \"127.0.0.1\", port = %u, username = \"engine\",\n"
             "  secret = \"s3cret\", tls = { ca_file = \"ca.crt\", server_name = \"pbx1.test\" } } }\n"
             "metrics = { listen = false }\nscripts = { dir = false }\n",
             (unsigned)port);
    assert_int_equal(file_write_atomic(config, text), 0);
    assert_int_equal(proc_run(L(ENGINE_BIN, "--check-config", "-c", config), NULL, pki_path("check.out"),
                              pki_path("check.err"), 4000),
                     0);
    assert_true(file_wait_contains(pki_path("check.out"), "tls: verify pbx1.test against", 100));
    assert_int_equal(proc_spawn(&engine, L(ENGINE_BIN, "-c", config), NULL, pki_path("engine.out"),
                                pki_path("engine.err")),
                     0);
    assert_true(file_wait_contains(pki_path("engine.err"), "msg=\"tls established\" server_key=pbx1", 4000));
    assert_true(file_wait_contains(pki_path("engine.err"), "verified_name=pbx1.test", 100));
    assert_true(file_wait_contains(pki_path("engine.err"), "msg=\"logged in\" server_key=pbx1", 4000));
    assert_int_equal(proc_signal(&engine, SIGTERM), 0);
    assert_true(proc_wait(&engine, 8000));
    assert_int_equal(engine.exit_code, 0);
    proc_kill(&sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_certificate_logs_in_with_plain_and_md5_login),
        cmocka_unit_test(server_name_is_verified_and_sent_as_sni),
        cmocka_unit_test(unknown_ca_is_refused_with_its_reason),
        cmocka_unit_test(wrong_ip_is_refused_as_a_name_mismatch),
        cmocka_unit_test(wrong_server_name_is_refused_as_a_name_mismatch),
        cmocka_unit_test(expired_certificate_is_refused_with_its_date),
        cmocka_unit_test(not_yet_valid_certificate_is_refused),
        cmocka_unit_test(stalled_handshake_times_out),
        cmocka_unit_test(peer_closing_mid_handshake_is_reported),
        cmocka_unit_test(plain_ami_port_is_reported_as_not_tls),
        cmocka_unit_test(client_certificate_is_sent_when_configured),
        cmocka_unit_test(missing_client_certificate_is_reported),
        cmocka_unit_test(client_certificate_from_another_ca_is_refused),
        cmocka_unit_test(verify_off_connects_anywhere_and_warns_at_every_connect),
        cmocka_unit_test(hostile_input_heartbeats_and_reconnects_behave_as_over_plain_tcp),
        cmocka_unit_test(event_flood_over_tls_does_not_starve_another_server),
        cmocka_unit_test(small_reads_take_every_decrypted_byte),
        cmocka_unit_test(tls12_renegotiation_keeps_the_session_working),
        cmocka_unit_test(tls13_key_update_keeps_the_session_working),
        cmocka_unit_test(the_engine_closes_with_close_notify),
        cmocka_unit_test(rotated_ca_file_applies_at_the_next_reconnect),
        cmocka_unit_test(reconnect_loop_leaks_no_tls_object),
        cmocka_unit_test(the_programs_speak_tls_end_to_end),
    };
    return cmocka_run_group_tests(tests, make_pki, remove_pki);
}
