/* AMI over TLS, verification and handshakes: the C client against the
 * simulator serving TLS on 127.0.0.1, with a PKI the test makes with the
 * openssl CLI (tests/support/make_certs.sh) in a temporary folder it removes.
 *
 * A good certificate logs in (plain and MD5), by IP or by server_name (sent
 * as SNI); an unknown CA, a wrong name or IP, an expired and a not-yet-valid
 * certificate are refused with their reasons (last_error and the failure
 * metric); a peer that stalls or closes mid-handshake, or speaks plain AMI,
 * is reported as such; client certificates are sent, missing or refused;
 * verify = false connects anywhere and warns at every connect. The session
 * itself is test_tls_session.c. Every test bounds its own time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tls_world.h"

/* "pbx1.test" resolves to 127.0.0.1 and nothing else resolves: this
 * definition replaces libc's (the resolver thread calls it). One block, so
 * libc's freeaddrinfo can free it. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    (void)service;
    (void)hints;
    if (!node || strcmp(node, "pbx1.test") != 0)
        return EAI_NONAME;
    struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in));
    struct sockaddr_in *sin = (struct sockaddr_in *)(ai + 1);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ai->ai_family = AF_INET;
    ai->ai_socktype = SOCK_STREAM;
    ai->ai_addr = (struct sockaddr *)sin;
    ai->ai_addrlen = sizeof *sin;
    *res = ai;
    return 0;
}

/* ---- verification ---------------------------------------------------------------------------- */

static void good_certificate_logs_in_with_plain_and_md5_login(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t plain, md5;
    tw_options(&plain, "pbx1", ami_sim_node_port(n), true);
    tw_options(&md5, "pbx2", ami_sim_node_port(n), true);
    md5.auth = AMI_AUTH_MD5;
    tw_add_server(w, &plain);
    tw_add_server(w, &md5);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    tw_expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
    tw_ping_ok(w, "pbx1");
    tw_ping_ok(w, "pbx2");
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 2);
    assert_int_equal(ami_sim_node_stats(n).tls_handshakes, 2);
    /* no SNI for an IP endpoint (RFC 6066), and the handshake was timed */
    assert_non_null(strstr(log_capture_text(&w->logs), "sim tls established"));
    assert_null(strstr(log_capture_text(&w->logs), "sni=pbx"));
    assert_non_null(strstr(log_capture_text(&w->logs), "verified_name=\"IP 127.0.0.1\""));
    assert_true(tw_metric(w, "ami_tls_handshake_seconds", (const char *const[]){"server_key", "pbx1", NULL}) == 1);
    assert_true(tw_metric(w, "ami_tls_handshake_seconds", (const char *const[]){"server_key", "pbx2", NULL}) == 1);
    tw_free(w);
}

static void server_name_is_verified_and_sent_as_sni(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.server_name = "pbx1.test";
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(log_capture_text(&w->logs), "sni=pbx1.test"));
    assert_non_null(strstr(log_capture_text(&w->logs), "verified_name=pbx1.test"));
    tw_free(w);
}

static void hostname_endpoint_is_verified_by_name_and_sent_as_sni(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.host = "pbx1.test";
    o.enforce_ip_endpoints = false;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(log_capture_text(&w->logs), "sni=pbx1.test"));
    assert_non_null(strstr(log_capture_text(&w->logs), "verified_name=pbx1.test"));
    tw_free(w);
}

static void ipv6_endpoint_is_verified_by_its_ip(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    bool have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a, sizeof a) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6) {
        print_message("SKIPPED ipv6_endpoint_is_verified_by_its_ip: this machine has no ::1 to listen on\n");
        skip();
    }
    tls_world_t *w = tw_new();
    ami_sim_node_config_t nc = {.name = "v6", .bind_ip = "::1", .tls_cert_file = tw_pki("server.crt"),
                                .tls_key_file = tw_pki("server.key")};
    ami_sim_node_t *n = ami_sim_add_node(w->sim, &nc, NULL);
    assert_non_null(n);
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.host = "[::1]";
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(log_capture_text(&w->logs), "verified_name=\"IP ::1\""));
    tw_free(w);
}

static void unknown_ca_is_refused_with_its_reason(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "rogue.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "unknown CA");
    tw_expect_error(w, 0, "CN=rogue CA");
    tw_expect_error(w, 0, "tls.ca_file");
    assert_true(tw_failures(w, "unknown_ca") >= 1);
    tw_free(w);
}

static void a_self_signed_certificate_is_refused_as_an_unknown_ca(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "selfsigned.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "unknown CA");
    tw_expect_error(w, 0, "CN=pbx1.test");
    assert_true(tw_failures(w, "unknown_ca") >= 1);
    tw_free(w);
}

/* Signed by the trusted CA, holding the right names, but issued for client
 * authentication only: refused for what it is, with OpenSSL's words. */
static void a_certificate_for_another_purpose_is_refused_as_bad(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "clientonly.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "certificate refused");
    tw_expect_error(w, 0, "purpose");
    assert_true(tw_failures(w, "bad_certificate") >= 1);
    tw_free(w);
}

static void wrong_ip_is_refused_as_a_name_mismatch(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "wrongname.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "name mismatch");
    tw_expect_error(w, 0, "not for IP 127.0.0.1");
    tw_expect_error(w, 0, "DNS:other.test, IP:10.9.9.9");
    assert_true(tw_failures(w, "name_mismatch") >= 1);
    tw_free(w);
}

static void wrong_server_name_is_refused_as_a_name_mismatch(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.server_name = "pbx2.test";
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "name mismatch");
    tw_expect_error(w, 0, "not for pbx2.test");
    tw_free(w);
}

static void expired_certificate_is_refused_with_its_date(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "expired.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "certificate expired");
    tw_expect_error(w, 0, "expired on 2020-01-02 00:00:00 UTC");
    assert_true(tw_failures(w, "expired") >= 1);
    tw_free(w);
}

static void not_yet_valid_certificate_is_refused(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "future.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "not yet valid");
    tw_expect_error(w, 0, "valid from 2040-01-01");
    assert_true(tw_failures(w, "not_yet_valid") >= 1);
    tw_free(w);
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
    tls_world_t *w = tw_new();
    ami_server_options_t o;
    tw_options(&o, "pbx1", port, true);
    o.tls.handshake_timeout_ms = 200;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    tw_expect_error(w, 0, "TLS handshake with 127.0.0.1:");
    tw_expect_error(w, 0, "timed out after 200 ms");
    assert_int_equal(w->transitions[AMI_CONN_AUTHENTICATING], 0);
    assert_true(tw_failures(w, "timeout") >= 1);
    assert_true(tw_metric(w, "ami_connect_failures_total",
                          (const char *const[]){"server_key", "pbx1", "reason", "timeout", NULL}) >= 1);
    tw_free(w);
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
    tls_world_t *w = tw_new();
    closer_t c = {.accepted = 0};
    ev_io_init(&c.w, accept_and_close, lfd, EV_READ);
    ev_io_start(w->loop, &c.w);
    ami_server_options_t o;
    tw_options(&o, "pbx1", port, true);
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    tw_expect_error(w, 0, "closed the connection during the TLS handshake");
    assert_true(c.accepted >= 1);
    assert_true(tw_failures(w, "peer_closed") >= 1);
    ev_io_stop(w->loop, &c.w);
    tw_free(w);
    close(lfd);
}

static void plain_ami_port_is_reported_as_not_tls(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_node(w, NULL);
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    tw_expect_refused(w, n, "does not speak TLS on this port");
    assert_true(tw_failures(w, "not_tls") >= 1);
    tw_free(w);
}

/* ---- client certificates ------------------------------------------------------------------- */

static void client_certificate_is_sent_when_configured(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    tw_node_tls_t t = {.cert = "server.crt", .client_ca = "ca.crt"};
    ami_sim_node_t *n = tw_add_node(w, &t);
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.cert_file = tw_pki("client.crt");
    o.tls.key_file = tw_pki("client.key");
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    tw_ping_ok(w, "pbx1");
    assert_int_equal(ami_sim_node_stats(n).tls_handshake_failures, 0);
    tw_free(w);
}

static void missing_client_certificate_is_reported(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    tw_node_tls_t t = {.cert = "server.crt", .client_ca = "ca.crt"};
    ami_sim_node_t *n = tw_add_node(w, &t);
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    tw_expect_error(w, 0, "requires a client certificate");
    tw_expect_error(w, 0, "tls.cert_file");
    assert_true(tw_failures(w, "no_certificate") >= 1);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
    tw_free(w);
}

static void client_certificate_from_another_ca_is_refused(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    tw_node_tls_t t = {.cert = "server.crt", .client_ca = "ca.crt"};
    ami_sim_node_t *n = tw_add_node(w, &t);
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.cert_file = tw_pki("rogue-client.crt");
    o.tls.key_file = tw_pki("client.key");
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    tw_expect_error(w, 0, "refused our certificate");
    assert_true(tw_failures(w, "certificate_refused") >= 1);
    assert_int_equal(ami_sim_node_stats(n).logins_ok, 0);
    tw_free(w);
}

/* ---- verify = false --------------------------------------------------------------------------- */

static void verify_off_connects_anywhere_and_warns_at_every_connect(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "rogue.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.no_verify = true;
    o.tls.ca_file = NULL;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(tw_verify_off_warnings(w), 1);
    ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_DISCONNECTED, "test reconnect");
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_int_equal(tw_verify_off_warnings(w), 2);
    /* the certificate nobody checked is not blamed for a connection cut later */
    ami_sim_faults_t cut = {.tls_abrupt_close = true};
    ami_sim_node_set_faults(n, &cut);
    ami_sim_node_drop_sessions(n);
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    tw_expect_error(w, 0, "closed the connection (without TLS close_notify)");
    assert_true(tw_failures(w, "unknown_ca") == 0);
    tw_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_certificate_logs_in_with_plain_and_md5_login),
        cmocka_unit_test(server_name_is_verified_and_sent_as_sni),
        cmocka_unit_test(hostname_endpoint_is_verified_by_name_and_sent_as_sni),
        cmocka_unit_test(ipv6_endpoint_is_verified_by_its_ip),
        cmocka_unit_test(unknown_ca_is_refused_with_its_reason),
        cmocka_unit_test(a_self_signed_certificate_is_refused_as_an_unknown_ca),
        cmocka_unit_test(a_certificate_for_another_purpose_is_refused_as_bad),
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
    };
    return cmocka_run_group_tests(tests, tw_make_pki, tw_remove_pki);
}
