/* The HTTP client's policies (engine/httpc): concurrency bounds overall and
 * per owner, cancellation (in flight, queued, on free), callbacks that start
 * more, the start queue, metric labels, proxies ignored from the environment,
 * TLS verification with certificates made at test time, config checks. */
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
#include "httpc_world.h"
#include "https_peer.h"

static ami_sim_http_t *srv; /* one server for the whole file */

/* ---- concurrency and cancellation --------------------------------------------------------------- */

typedef struct many {
    hw_outcome_t o[8];
} many_t;

static bool all_done(void *ud)
{
    hw_outcome_t *o = ud;
    return o[0].done && o[1].done;
}

static void concurrency_is_bounded_overall_and_per_owner(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_concurrent = 2;
    c.max_per_owner = 1;
    hw_t *w = hw_new(&c, srv);
    char url[128];
    hw_url(w, "/delay/200", url, sizeof url);
    hw_outcome_t o[3] = {0};
    ami_httpc_request_t r = hw_get(url);
    r.owner = "a.lua";
    ami_httpc_err_t err;
    assert_non_null(ami_httpc_start(w->h, &r, hw_on_done, &o[0], &err));
    assert_null(ami_httpc_start(w->h, &r, hw_on_done, &o[2], &err)); /* a.lua has its one */
    assert_int_equal(err.kind, AMI_HTTPC_LIMIT);
    assert_non_null(strstr(err.msg, "max_per_script"));
    r.owner = "b.lua";
    assert_non_null(ami_httpc_start(w->h, &r, hw_on_done, &o[1], &err));
    r.owner = "c.lua";
    assert_null(ami_httpc_start(w->h, &r, hw_on_done, &o[2], &err)); /* two in flight overall */
    assert_non_null(strstr(err.msg, "max_concurrent"));
    assert_true(hw_refused(w, "max_per_script") == 1);
    assert_true(hw_refused(w, "max_concurrent") == 1);
    assert_true(hw_metric(w, "ami_http_client_in_flight", NULL) == 2);
    assert_true(harness_run_until(w->loop, all_done, o, 10000));
    assert_false(o[2].done);
    r.owner = "a.lua"; /* finished transfers give their places back */
    assert_non_null(ami_httpc_start(w->h, &r, hw_on_done, &o[2], &err));
    assert_true(harness_run_until(w->loop, hw_is_done, &o[2], 10000));
    assert_true(hw_metric(w, "ami_http_client_in_flight", NULL) == 0);
    hw_free(w);
}

static void a_cancelled_transfer_never_calls_back_and_closes_its_connection(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char url[128];
    hw_url(w, "/never", url, sizeof url);
    hw_outcome_t o = {0};
    ami_httpc_request_t r = hw_get(url);
    ami_httpc_transfer_t *t = ami_httpc_start(w->h, &r, hw_on_done, &o, NULL);
    assert_non_null(t);
    uint64_t requests = ami_sim_http_stats(srv).requests;
    for (int i = 0; i < 400 && ami_sim_http_stats(srv).requests == requests; i++)
        harness_run_for(w->loop, 5);
    assert_int_equal(ami_sim_http_stats(srv).open, 1);
    ami_httpc_cancel(w->h, t);
    assert_true(harness_run_until(w->loop, hw_server_idle, srv, 5000));
    harness_run_for(w->loop, 50);
    assert_false(o.done);
    assert_int_equal(ami_httpc_active(w->h), 0);
    assert_true(hw_metric(w, "ami_http_client_cancelled_total", NULL) == 1);
    hw_free(w);
}

static void a_transfer_cancelled_before_the_loop_runs_never_reaches_the_server(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char url[128];
    hw_url(w, "/ok", url, sizeof url);
    uint64_t requests = ami_sim_http_stats(srv).requests;
    hw_outcome_t o[3] = {0};
    ami_httpc_request_t r = hw_get(url);
    ami_httpc_transfer_t *t[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(t[i] = ami_httpc_start(w->h, &r, hw_on_done, &o[i], NULL));
    ami_httpc_cancel(w->h, t[1]); /* the middle one of the start queue */
    assert_true(harness_run_until(w->loop, hw_is_done, &o[2], 5000));
    assert_true(harness_run_until(w->loop, hw_is_done, &o[0], 5000));
    harness_run_for(w->loop, 50);
    assert_false(o[1].done);
    assert_int_equal(ami_sim_http_stats(srv).requests, requests + 2);
    ami_httpc_cancel(w->h, ami_httpc_start(w->h, &r, hw_on_done, &o[1], NULL));
    hw_free(w); /* and one freed while still queued */
    assert_false(o[1].done);
}

static void a_burst_of_starts_joins_curl_in_batches_and_all_finish(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_concurrent = c.max_per_owner = 300;
    hw_t *w = hw_new(&c, srv);
    char url[128];
    hw_url(w, "/ok", url, sizeof url);
    static hw_outcome_t o[300];
    memset(o, 0, sizeof o);
    ami_httpc_request_t r = hw_get(url);
    for (int i = 0; i < 300; i++)
        assert_non_null(ami_httpc_start(w->h, &r, hw_on_done, &o[i], NULL));
    assert_int_equal(ami_httpc_queued(w->h), 300);
    ev_run(w->loop, EVRUN_ONCE); /* one iteration hands 64 to curl */
    assert_int_equal(ami_httpc_queued(w->h), 300 - 64);
    ev_run(w->loop, EVRUN_ONCE);
    assert_int_equal(ami_httpc_queued(w->h), 300 - 128);
    assert_true(harness_run_until(w->loop, hw_is_done, &o[299], 20000));
    assert_int_equal(ami_httpc_queued(w->h), 0);
    for (int i = 0; i < 300; i++) {
        assert_true(harness_run_until(w->loop, hw_is_done, &o[i], 20000));
        assert_int_equal(o[i].status, 200);
    }
    assert_int_equal(ami_httpc_active(w->h), 0);
    hw_free(w);
}

typedef struct chain {
    hw_t *w;
    hw_outcome_t first, second;
    char url[128];
} chain_t;

static void on_first_done(void *ud, const ami_httpc_response_t *res)
{
    chain_t *ch = ud;
    hw_on_done(&ch->first, res);
    ami_httpc_request_t r = hw_get(ch->url);
    assert_non_null(ami_httpc_start(ch->w->h, &r, hw_on_done, &ch->second, NULL));
}

static void a_done_callback_may_start_the_next_request(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    chain_t ch = {.w = hw_new(&c, srv)};
    hw_url(ch.w, "/ok", ch.url, sizeof ch.url);
    ami_httpc_request_t r = hw_get(ch.url);
    assert_non_null(ami_httpc_start(ch.w->h, &r, on_first_done, &ch, NULL));
    assert_true(harness_run_until(ch.w->loop, hw_is_done, &ch.second, 10000));
    assert_int_equal(ch.first.status, 200);
    assert_int_equal(ch.second.status, 200);
    hw_free(ch.w);
}

static void freeing_the_client_ends_transfers_without_callbacks(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    char url[128];
    hw_url(w, "/never", url, sizeof url);
    hw_outcome_t o = {0};
    ami_httpc_request_t r = hw_get(url);
    assert_non_null(ami_httpc_start(w->h, &r, hw_on_done, &o, NULL));
    harness_run_for(w->loop, 50);
    hw_free(w);
    assert_false(o.done);
}

/* ---- metrics labels ---------------------------------------------------------------------------- */

static void hosts_past_the_label_cap_count_as_other(void **state)
{
    (void)state;
    ami_httpc_config_t c = hw_config();
    c.max_host_labels = 1;
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/ok", &o);
    char url[128];
    snprintf(url, sizeof url, "http://localhost:%u/ok", ami_sim_http_port(srv));
    ami_httpc_request_t r = hw_get(url);
    hw_perform(w, &r, &o);
    assert_int_equal(o.status, 200);
    assert_true(hw_metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "127.0.0.1", "class", "2xx", NULL}) == 1);
    assert_true(hw_metric(w, "ami_http_client_requests_total", (const char *const[]){"host", "other", "class", "2xx", NULL}) == 1);
    hw_free(w);
}

/* ---- proxies ------------------------------------------------------------------------------------ */

static void proxies_in_the_environment_are_ignored(void **state)
{
    (void)state;
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%u", ami_sim_http_refused_port(srv));
    setenv("http_proxy", proxy, 1);
    setenv("HTTP_PROXY", proxy, 1);
    setenv("ALL_PROXY", proxy, 1);
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    hw_perform_path(w, "/ok", &o);
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("ALL_PROXY");
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 200);
    hw_free(w);
}

static void a_configured_proxy_is_used(void **state)
{
    (void)state;
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%u", ami_sim_http_port(srv));
    ami_httpc_config_t c = hw_config();
    c.proxy = proxy; /* the echo route shows the absolute URL a proxy receives */
    hw_t *w = hw_new(&c, srv);
    ami_httpc_request_t r = hw_get("http://crm.example/echo");
    hw_outcome_t o;
    hw_perform(w, &r, &o);
    assert_int_equal(o.status, 200);
    assert_non_null(strstr(o.body, "GET http://crm.example/echo\n"));
    hw_free(w);
}

/* ---- TLS ------------------------------------------------------------------------------------------ */

static https_certs_t certs;

static void https_get(hw_t *w, uint16_t port, hw_outcome_t *o)
{
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%u/", port);
    ami_httpc_request_t r = hw_get(url);
    hw_perform(w, &r, o);
}

static void tls_peers_are_verified_against_the_configured_ca(void **state)
{
    (void)state;
    if (!certs.dir[0] && !https_certs_make(&certs))
        fail_msg("cannot make test certificates");
    https_peer_t good, wrong;
    assert_true(https_peer_start(&good, &certs, certs.cert, certs.key));
    assert_true(https_peer_start(&wrong, &certs, certs.wrong_cert, certs.wrong_key));
    hw_outcome_t o;

    ami_httpc_config_t c = hw_config();
    c.ca_file = certs.ca;
    hw_t *w = hw_new(&c, srv);
    https_get(w, good.port, &o);
    assert_int_equal(o.kind, AMI_HTTPC_OK);
    assert_int_equal(o.status, 200);
    https_get(w, wrong.port, &o); /* the right CA, the wrong name */
    hw_expect_error(&o, AMI_HTTPC_TLS, NULL);
    hw_free(w);

    c.ca_file = certs.other_ca; /* a CA that did not sign the server's certificate */
    w = hw_new(&c, srv);
    https_get(w, good.port, &o);
    hw_expect_error(&o, AMI_HTTPC_TLS, NULL);
    assert_true(hw_metric(w, "ami_http_client_errors_total", (const char *const[]){"kind", "tls", NULL}) == 1);
    hw_free(w);

    c.verify = false;
    w = hw_new(&c, srv);
    https_get(w, good.port, &o);
    assert_int_equal(o.status, 200);
    hw_free(w);

    https_peer_stop(&good);
    https_peer_stop(&wrong);
}

static void the_system_store_does_not_trust_a_test_ca(void **state)
{
    (void)state;
    if (!certs.dir[0] && !https_certs_make(&certs))
        fail_msg("cannot make test certificates");
    https_peer_t good;
    assert_true(https_peer_start(&good, &certs, certs.cert, certs.key));
    ami_httpc_config_t c = hw_config();
    hw_t *w = hw_new(&c, srv);
    hw_outcome_t o;
    https_get(w, good.port, &o);
    hw_expect_error(&o, AMI_HTTPC_TLS, NULL);
    hw_free(w);
    https_peer_stop(&good);
}

/* ---- the client's own checks -------------------------------------------------------------------- */

static void a_zero_limit_in_the_config_is_refused(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_metrics_t *m = ami_metrics_new(1000);
    ami_httpc_config_t c = hw_config();
    c.max_concurrent = 0;
    ami_httpc_err_t err = {0};
    assert_null(ami_httpc_new(loop, &c, m, NULL, &err));
    assert_int_equal(err.kind, AMI_HTTPC_INVALID);
    ami_metrics_free(m);
    ev_loop_destroy(loop);
}

static int group_setup(void **state)
{
    (void)state;
    ami_err_t err;
    srv = ami_sim_http_start(&err);
    return srv ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    ami_sim_http_stop(srv);
    https_certs_remove(&certs);
    proc_kill_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrency_is_bounded_overall_and_per_owner),
        cmocka_unit_test(a_cancelled_transfer_never_calls_back_and_closes_its_connection),
        cmocka_unit_test(a_transfer_cancelled_before_the_loop_runs_never_reaches_the_server),
        cmocka_unit_test(a_burst_of_starts_joins_curl_in_batches_and_all_finish),
        cmocka_unit_test(a_done_callback_may_start_the_next_request),
        cmocka_unit_test(freeing_the_client_ends_transfers_without_callbacks),
        cmocka_unit_test(hosts_past_the_label_cap_count_as_other),
        cmocka_unit_test(proxies_in_the_environment_are_ignored),
        cmocka_unit_test(a_configured_proxy_is_used),
        cmocka_unit_test(tls_peers_are_verified_against_the_configured_ca),
        cmocka_unit_test(the_system_store_does_not_trust_a_test_ca),
        cmocka_unit_test(a_zero_limit_in_the_config_is_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
