/* AMI over TLS, the session: once up, a TLS connection behaves as over
 * plain TCP (hostile input, heartbeats, reconnects: asserted identical in
 * both modes), carries floods without starving other servers, takes every
 * decrypted byte with small reads, survives renegotiation and key updates,
 * closes with close_notify; certificate files rotate at the next reconnect;
 * 200 reconnects leak no TLS object; and the ami-sim and ami-engine programs
 * speak TLS end to end. Certificates: tests/support/make_certs.sh, in a
 * temporary folder. Every test bounds its own time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "proc.h"
#include "tls_world.h"
#include "transport/tls.h"
#include "util/alloc.h"

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
static void close_and_back(tls_world_t *w, char *reason_out)
{
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    snprintf(reason_out, AMI_ERR_MSG_MAX, "%s", tw_last_error(w, 0));
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    tw_ping_ok(w, "pbx1");
}

/* One server misbehaving in every way the plain-TCP tests know, over TLS or not. */
static void misbehave(bool tls, behaviour_t *b)
{
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tls ? tw_add_tls_node(w, "server.crt") : tw_add_node(w, NULL);
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), tls);
    o.parser.max_line = 4096;
    o.parser.max_message = 16384;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);

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
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    snprintf(b->heartbeat, sizeof b->heartbeat, "%s", tw_last_error(w, 0));
    ami_sim_node_set_faults(n, &none);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);

    ami_sim_node_drop_sessions(n);
    close_and_back(w, b->dropped);

    const ami_conn_stats_t *st = ami_conn_stats(ami_client_conn(w->client, 0));
    b->protocol_errors = st->protocol_errors;
    b->force_closes = st->force_closes;
    b->connected = w->transitions[AMI_CONN_CONNECTED];
    tw_free(w);
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
    tls_world_t *w = tw_new();
    ami_sim_node_t *a = tw_add_tls_node(w, "server.crt");
    ami_sim_node_t *b = tw_add_tls_node(w, "server.crt");
    ami_server_options_t oa, ob;
    tw_options(&oa, "flood", ami_sim_node_port(a), true);
    tw_options(&ob, "quiet", ami_sim_node_port(b), true);
    oa.heartbeat_interval_ms = ob.heartbeat_interval_ms = 0;
    oa.action_timeout_ms = 10000;
    tw_add_server(w, &oa);
    tw_add_server(w, &ob);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    tw_expect_state(w, 1, AMI_CONN_CONNECTED, 3000);
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
    tw_free(w);
}

static bool all_answered(void *ud)
{
    pinger_t *p = ud;
    return p->done + p->failed >= 16000;
}

/* A server that stops reading: the kernel's buffers fill, TLS writes say
 * "want write", the rest waits in the write buffer; once the server reads
 * again every action goes out whole and is answered. */
static void writes_blocked_over_tls_resume_when_the_server_reads(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.heartbeat_interval_ms = 0;
    o.action_timeout_ms = 30000;
    o.max_pending = 20000;
    o.write_hwm = 32u << 20;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){.stall_reads = true});
    harness_run_for(w->loop, 20);
    static char big[1000]; /* a line within Asterisk's 1024-byte buffer */
    memset(big, 'x', sizeof big - 1);
    ami_kv_t h[] = {ami_kv("UserEvent", "Fill"), ami_kv("Data", big)};
    pinger_t p = {0};
    for (int i = 0; i < 16000; i++) { /* 16 MB: more than loopback's socket buffers hold */
        ami_action_req_t req = {.name = "UserEvent", .hdrs = h, .nhdrs = 2};
        ami_err_t err = {0};
        if (ami_client_send(w->client, "pbx1", &req, count_ping, &p, NULL, &err) < 0)
            fail_msg("action %d refused: %s", i, err.msg);
        if (i % 100 == 99)
            harness_run_for(w->loop, 1);
    }
    harness_run_for(w->loop, 200);
    const ami_conn_stats_t *st = ami_conn_stats(ami_client_conn(w->client, 0));
    uint64_t out_while_stalled = st->bytes_out;
    assert_int_equal(p.done + p.failed, 0);
    ami_sim_node_set_faults(n, &(ami_sim_faults_t){0});
    assert_true(harness_run_until(w->loop, all_answered, &p, 20000));
    assert_int_equal(p.failed, 0);
    st = ami_conn_stats(ami_client_conn(w->client, 0)); /* refreshed when asked */
    /* the writes really blocked: megabytes waited for the server to read */
    print_message("written while the server did not read: %llu of %llu bytes\n",
                  (unsigned long long)out_while_stalled, (unsigned long long)st->bytes_out);
    assert_true(out_while_stalled + (1u << 20) < st->bytes_out);
    assert_int_equal(st->force_closes, 0);
    tw_free(w);
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
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.read_chunk = 512;
    o.heartbeat_interval_ms = 0;
    tw_add_server(w, &o);
    int events = 0;
    assert_non_null(ami_client_subscribe(w->client, "UserEvent", count_event, &events, NULL));
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    static char ev[9000];
    int len = snprintf(ev, sizeof ev, "Event: UserEvent\r\nUserEvent: Big\r\nData: ");
    memset(ev + len, 'y', 8000);
    memcpy(ev + len + 8000, "\r\n\r\n", 4);
    ami_sim_node_inject(n, ev, (size_t)len + 8004); /* one record, then silence */
    assert_true(harness_run_until(w->loop, got_one, &events, 2000));
    tw_ping_ok(w, "pbx1");
    tw_free(w);
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
    tls_world_t *w = tw_new();
    tw_node_tls_t t = {.cert = "server.crt", .tls12_only = true};
    ami_sim_node_t *n = tw_add_node(w, &t);
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(log_capture_text(&w->logs), "version=TLSv1.2"));
    ami_sim_faults_t reneg = {.tls_renegotiate = true};
    ami_sim_node_set_faults(n, &reneg);
    assert_int_equal(ami_sim_node_stats(n).tls_renegotiations, 1);
    tw_ping_ok(w, "pbx1"); /* the client answers the HelloRequest inside its reads */
    assert_true(harness_run_until(w->loop, handshakes_reach, n, 3000));
    tw_ping_ok(w, "pbx1");
    assert_int_equal(ami_sim_node_stats(n).sessions_accepted, 1);
    assert_int_equal(w->transitions[AMI_CONN_CONNECTED], 1);
    tw_free(w);
}

static void tls13_key_update_keeps_the_session_working(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(log_capture_text(&w->logs), "version=TLSv1.3"));
    for (int i = 0; i < 3; i++) {
        ami_sim_faults_t update = {.tls_renegotiate = true};
        ami_sim_node_set_faults(n, &update);
        tw_ping_ok(w, "pbx1");
    }
    assert_int_equal(ami_sim_node_stats(n).tls_renegotiations, 3);
    assert_int_equal(w->transitions[AMI_CONN_CONNECTED], 1);
    tw_free(w);
}

static bool notified(void *ud)
{
    return ami_sim_node_stats(ud).tls_close_notify_received >= 1;
}

static void the_engine_closes_with_close_notify(void **state)
{
    (void)state;
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.backoff_initial_ms = o.backoff_max_ms = 2000;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_HEARTBEAT, "Max heartbeat failures");
    assert_true(harness_run_until(w->loop, notified, n, 2000));
    tw_free(w);
}

/* ---- certificate rotation -------------------------------------------------------------------- */

static void rotated_ca_file_applies_at_the_next_reconnect(void **state)
{
    (void)state;
    const char *rot = tw_pki("rotating-ca.crt");
    tw_copy_file(tw_pki("rogue-ca.crt"), rot);
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.tls.ca_file = rot;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    tw_expect_state(w, 0, AMI_CONN_BACKOFF, 3000);
    tw_expect_error(w, 0, "unknown CA");

    tw_copy_file(tw_pki("ca.crt"), rot); /* the operator puts the right CA in place */
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(log_capture_text(&w->logs), "tls files reloaded"));

    FILE *f = fopen(rot, "w"); /* a broken file: the working context stays */
    fputs("not a certificate\n", f);
    fclose(f);
    ami_conn_force_close(ami_client_conn(w->client, 0), AMI_E_DISCONNECTED, "test reconnect");
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    assert_non_null(strstr(log_capture_text(&w->logs), "tls files changed but do not load"));
    tw_free(w);
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
    tls_world_t *w = tw_new();
    ami_sim_node_t *n = tw_add_tls_node(w, "server.crt");
    ami_server_options_t o;
    tw_options(&o, "pbx1", ami_sim_node_port(n), true);
    o.backoff_initial_ms = 1;
    o.backoff_max_ms = 2;
    o.heartbeat_interval_ms = 0;
    tw_add_server(w, &o);
    ami_client_start(w->client);
    ami_conn_t *c = ami_client_conn(w->client, 0);
    long warm_objects = 0;
    int64_t warm_bytes = 0;
    for (int cycle = 1; cycle <= 200; cycle++) {
        tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
        if (cycle == 5 || cycle == 200) {
            harness_run_for(w->loop, 30); /* the simulator reaps its closed sessions */
            if (cycle == 5) {
                warm_objects = ami_tls_live_objects();
                warm_bytes = ami_alloc_live_bytes();
            }
        }
        ami_conn_force_close(c, AMI_E_HEARTBEAT, "Max heartbeat failures");
    }
    tw_expect_state(w, 0, AMI_CONN_CONNECTED, 3000);
    harness_run_for(w->loop, 30);
    print_message("live TLS objects: %ld after 5 cycles, %ld after 200\n", warm_objects, ami_tls_live_objects());
    assert_int_equal(warm_objects, before + 4); /* 2 contexts, a session at each end */
    assert_int_equal(ami_tls_live_objects(), warm_objects);
    assert_int_equal(ami_alloc_live_bytes(), warm_bytes);
    assert_int_equal(ami_sim_node_stats(n).tls_handshakes, 201);
    tw_free(w);
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
    char ports[256], config[256];
    snprintf(ports, sizeof ports, "%s", tw_pki("sim.ports"));
    snprintf(config, sizeof config, "%s", tw_pki("engine.lua"));
    proc_t sim = {0}, engine = {0};
    assert_int_equal(proc_spawn(&sim,
                                L(SIM_BIN, "--nodes", "1", "--base-port", "0", "--port-file", ports, "--cps", "2",
                                  "--duration", "60", "--tls-cert", tw_pki("server.crt"), "--tls-key",
                                  tw_pki("server.key")),
                                NULL, tw_pki("sim.out"), tw_pki("sim.err")),
                     0);
    assert_true(file_wait_contains(tw_pki("sim.out"), "READY", 4000));
    uint16_t port = port_file_wait(ports, "pbx1", 4000); /* the port the kernel gave it */
    assert_int_not_equal(port, 0);
    assert_true(file_wait_contains(tw_pki("sim.out"), "(user engine, TLS)", 100));
    char text[512];
    snprintf(text, sizeof text,
             "servers = { { key = \"pbx1\", host = \"127.0.0.1\", port = %u, username = \"engine\",\n"
             "  secret = \"s3cret\", tls = { ca_file = \"ca.crt\", server_name = \"pbx1.test\" } } }\n"
             "metrics = { listen = false }\nscripts = { dir = false }\n",
             (unsigned)port);
    assert_int_equal(file_write_atomic(config, text), 0);
    assert_int_equal(proc_run(L(ENGINE_BIN, "--check-config", "-c", config), NULL, tw_pki("check.out"),
                              tw_pki("check.err"), 4000),
                     0);
    assert_true(file_wait_contains(tw_pki("check.out"), "tls: verify pbx1.test against", 100));
    assert_int_equal(proc_spawn(&engine, L(ENGINE_BIN, "-c", config), NULL, tw_pki("engine.out"),
                                tw_pki("engine.err")),
                     0);
    assert_true(file_wait_contains(tw_pki("engine.err"), "msg=\"tls established\" server_key=pbx1", 4000));
    assert_true(file_wait_contains(tw_pki("engine.err"), "verified_name=pbx1.test", 100));
    assert_true(file_wait_contains(tw_pki("engine.err"), "msg=\"logged in\" server_key=pbx1", 4000));
    assert_int_equal(proc_signal(&engine, SIGTERM), 0);
    assert_true(proc_wait(&engine, 8000));
    assert_int_equal(engine.exit_code, 0);
    proc_kill(&sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hostile_input_heartbeats_and_reconnects_behave_as_over_plain_tcp),
        cmocka_unit_test(event_flood_over_tls_does_not_starve_another_server),
        cmocka_unit_test(small_reads_take_every_decrypted_byte),
        cmocka_unit_test(writes_blocked_over_tls_resume_when_the_server_reads),
        cmocka_unit_test(tls12_renegotiation_keeps_the_session_working),
        cmocka_unit_test(tls13_key_update_keeps_the_session_working),
        cmocka_unit_test(the_engine_closes_with_close_notify),
        cmocka_unit_test(rotated_ca_file_applies_at_the_next_reconnect),
        cmocka_unit_test(reconnect_loop_leaks_no_tls_object),
        cmocka_unit_test(the_programs_speak_tls_end_to_end),
    };
    return cmocka_run_group_tests(tests, tw_make_pki, tw_remove_pki);
}
