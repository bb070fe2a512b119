/* The Redis connection (engine/ha/redis.c) against a real redis-server
 * started by the test on a unix socket in a temporary folder (and on a free
 * TCP port of 127.0.0.1): commands, AUTH, refusals while down, command
 * timeouts on a paused server, reconnect after a restart, the bound on
 * commands in flight, cancellation, pub/sub. Every test bounds its time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/redis.h"
#include "harness.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "redis_server.h"

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct world {
    struct ev_loop *loop;
    redis_server_t srv;
    ami_metrics_t *metrics;
    ami_redis_t *r;
    int ups, downs;
} world_t;

typedef struct answer {
    int calls;
    ami_status_t code; /* AMI_OK on a reply */
    char text[256];
    long long integer;
    ami_redis_type_t type;
} answer_t;

static void on_answer(void *ud, const ami_redis_reply_t *reply, const ami_err_t *err)
{
    answer_t *a = ud;
    a->calls++;
    a->code = err ? err->code : AMI_OK;
    a->type = reply ? ami_redis_reply_type(reply) : AMI_REDIS_OTHER;
    a->integer = reply ? ami_redis_reply_integer(reply) : 0;
    size_t len = 0;
    const char *s = reply ? ami_redis_reply_str(reply, &len) : err->msg;
    snprintf(a->text, sizeof a->text, "%.*s", (int)(reply ? len : strlen(s ? s : "")), s ? s : "");
}

static void on_state(void *ud, bool up, const char *why)
{
    world_t *w = ud;
    if (up)
        w->ups++;
    else
        w->downs++;
}

static bool is_up(void *ud)
{
    return ami_redis_up(((world_t *)ud)->r);
}

static bool answered(void *ud)
{
    return ((answer_t *)ud)->calls > 0;
}

static void need_redis(void)
{
    if (!redis_server_available()) {
        print_message("SKIP: redis-server is not installed (bash tests/deps.sh installs it)\n");
        skip();
    }
}

static world_t *world_new(bool tcp, const char *password, const char *user, uint32_t timeout_ms,
                          uint32_t max_pending)
{
    need_redis();
    world_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_int_equal(redis_server_start(&w->srv, NULL, tcp, password, user), 0);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->metrics = ami_metrics_new(1000);
    ami_redis_config_t rc;
    ami_redis_config_default(&rc);
    rc.name = "test";
    if (tcp) {
        rc.ip = "127.0.0.1";
        rc.port = w->srv.port;
    } else {
        rc.unix_path = w->srv.socket;
    }
    rc.password = password;
    rc.username = user;
    rc.command_timeout_ms = timeout_ms;
    rc.connect_timeout_ms = 500;
    rc.backoff_initial_ms = 20;
    rc.backoff_max_ms = 200;
    rc.max_pending = max_pending;
    ami_err_t err;
    w->r = ami_redis_new(w->loop, &rc, NULL, w->metrics, &err);
    assert_non_null(w->r);
    ami_redis_on_state(w->r, on_state, w);
    return w;
}

static void world_free(world_t *w)
{
    ami_redis_free(w->r);
    ami_metrics_free(w->metrics);
    ev_loop_destroy(w->loop);
    redis_server_stop(&w->srv);
    free(w);
}

static double metric(world_t *w, const char *name, const char *const *labels)
{
    double v = -1;
    ami_metrics_value(w->metrics, name, labels, &v);
    return v;
}

static void run_cmd(world_t *w, answer_t *a, const char *const *argv)
{
    int argc = 0;
    size_t lens[16];
    while (argv[argc]) {
        lens[argc] = strlen(argv[argc]);
        argc++;
    }
    memset(a, 0, sizeof *a);
    ami_err_t err;
    assert_int_equal(ami_redis_command(w->r, argc, argv, lens, on_answer, a, NULL, &err), 0);
    assert_true(harness_run_until(w->loop, answered, a, 3000));
}

/* ---- tests ------------------------------------------------------------------------------ */

static void commands_round_trip_over_a_unix_socket(void **state)
{
    world_t *w = world_new(false, NULL, NULL, 1000, 100);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    assert_int_equal(w->ups, 1);
    answer_t a;
    run_cmd(w, &a, L("SET", "k", "hello"));
    assert_int_equal(a.code, AMI_OK);
    assert_string_equal(a.text, "OK");
    run_cmd(w, &a, L("GET", "k"));
    assert_int_equal(a.type, AMI_REDIS_STRING);
    assert_string_equal(a.text, "hello");
    run_cmd(w, &a, L("INCRBY", "n", "41"));
    assert_int_equal(a.integer, 41);
    run_cmd(w, &a, L("NOSUCHCOMMAND"));
    assert_int_equal(a.code, AMI_E_SERVER);
    assert_non_null(strstr(a.text, "redis: ERR"));
    assert_true(metric(w, "ami_redis_connected", L("conn", "test")) == 1);
    world_free(w);
}

static void commands_round_trip_over_tcp(void **state)
{
    world_t *w = world_new(true, NULL, NULL, 1000, 100);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    answer_t a;
    run_cmd(w, &a, L("PING"));
    assert_string_equal(a.text, "PONG");
    world_free(w);
}

static void password_and_acl_user_log_in(void **state)
{
    world_t *w = world_new(false, "pw-1", NULL, 1000, 100);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    world_free(w);
    w = world_new(false, "pw-2", "engine", 1000, 100);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    answer_t a;
    run_cmd(w, &a, L("ACL", "WHOAMI"));
    assert_string_equal(a.text, "engine");
    world_free(w);
}

static void a_wrong_password_never_comes_up(void **state)
{
    need_redis();
    world_t *w = world_new(false, "right", NULL, 1000, 100);
    ami_redis_free(w->r);
    ami_redis_config_t rc;
    ami_redis_config_default(&rc);
    rc.unix_path = w->srv.socket;
    rc.password = "wrong";
    rc.backoff_initial_ms = 20;
    rc.backoff_max_ms = 50;
    w->r = ami_redis_new(w->loop, &rc, NULL, w->metrics, NULL);
    ami_redis_on_state(w->r, on_state, w);
    ami_redis_start(w->r);
    harness_run_for(w->loop, 400);
    assert_false(ami_redis_up(w->r));
    assert_int_equal(w->ups, 0);
    answer_t a = {0};
    ami_err_t err;
    const char *argv[] = {"PING"};
    size_t len = 4;
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &a, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_NOT_CONNECTED);
    assert_non_null(strstr(err.msg, "refused the login"));
    world_free(w);
}

static void commands_are_refused_at_once_while_down(void **state)
{
    world_t *w = world_new(false, NULL, NULL, 1000, 100);
    answer_t a = {0};
    ami_err_t err;
    const char *argv[] = {"PING"};
    size_t len = 4;
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &a, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_NOT_CONNECTED);
    assert_int_equal(a.calls, 0);
    assert_true(metric(w, "ami_redis_commands_refused_total", L("conn", "test", "reason", "not_connected")) == 1);
    ami_redis_start(w->r); /* connecting: AUTH and PING not answered yet */
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &a, NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_NOT_CONNECTED);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    assert_int_equal(a.calls, 0);
    world_free(w);
}

static void a_paused_server_times_commands_out_and_the_link_comes_back(void **state)
{
    world_t *w = world_new(false, NULL, NULL, 300, 100);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    redis_server_pause(&w->srv);
    answer_t a = {0}, b = {0};
    const char *argv[] = {"PING"};
    size_t len = 4;
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &a, NULL, NULL), 0);
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &b, NULL, NULL), 0);
    assert_true(harness_run_until(w->loop, answered, &b, 3000));
    assert_int_equal(a.code, AMI_E_TIMEOUT);
    assert_int_equal(b.code, AMI_E_DISCONNECTED); /* the timeout dropped the link: both resolved at once */
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_false(ami_redis_up(w->r));
    assert_int_equal(w->downs, 1);
    assert_true(metric(w, "ami_redis_command_timeouts_total", L("conn", "test")) == 1);
    harness_run_for(w->loop, 300); /* reconnects hang in the handshake and time out too */
    assert_false(ami_redis_up(w->r));
    redis_server_resume(&w->srv);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    answer_t c;
    run_cmd(w, &c, L("PING"));
    assert_string_equal(c.text, "PONG");
    world_free(w);
}

static void a_restarted_server_is_reconnected(void **state)
{
    world_t *w = world_new(false, NULL, NULL, 1000, 100);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    assert_int_equal(redis_server_restart(&w->srv), 0);
    answer_t a;
    for (int i = 0; i < 200 && !(w->downs == 1 && ami_redis_up(w->r)); i++)
        harness_run_for(w->loop, 20);
    assert_int_equal(w->downs, 1);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    assert_int_equal(w->ups, 2);
    run_cmd(w, &a, L("PING"));
    assert_string_equal(a.text, "PONG");
    assert_true(metric(w, "ami_redis_disconnects_total", L("conn", "test")) == 1);
    world_free(w);
}

static void commands_in_flight_are_bounded(void **state)
{
    world_t *w = world_new(false, NULL, NULL, 2000, 3);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    redis_server_pause(&w->srv);
    answer_t a[4] = {{0}};
    const char *argv[] = {"PING"};
    size_t len = 4;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &a[i], NULL, NULL), 0);
    ami_err_t err;
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &a[3], NULL, &err), -1);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_int_equal(ami_redis_pending(w->r), 3);
    assert_true(metric(w, "ami_redis_commands_refused_total", L("conn", "test", "reason", "max_pending")) == 1);
    redis_server_resume(&w->srv);
    assert_true(harness_run_until(w->loop, answered, &a[2], 3000));
    assert_int_equal(a[2].code, AMI_OK);
    assert_int_equal(a[3].calls, 0);
    assert_int_equal(ami_redis_pending(w->r), 0);
    world_free(w);
}

static void a_cancelled_command_never_calls_back(void **state)
{
    world_t *w = world_new(false, NULL, NULL, 1000, 100);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    answer_t a = {0}, b = {0};
    const char *argv[] = {"PING"};
    size_t len = 4;
    ami_redis_req_t *req;
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &a, &req, NULL), 0);
    ami_redis_cancel(w->r, req);
    assert_int_equal(ami_redis_command(w->r, 1, argv, &len, on_answer, &b, NULL, NULL), 0);
    assert_true(harness_run_until(w->loop, answered, &b, 3000));
    assert_int_equal(a.calls, 0);
    world_free(w);
}

typedef struct heard {
    int n;
    char last[64];
} heard_t;

static void on_heard(void *ud, const char *payload, size_t len)
{
    heard_t *h = ud;
    h->n++;
    snprintf(h->last, sizeof h->last, "%.*s", (int)len, payload);
}

static bool heard_one(void *ud)
{
    return ((heard_t *)ud)->n > 0;
}

static void a_subscriber_hears_every_message_after_reconnects(void **state)
{
    world_t *w = world_new(false, NULL, NULL, 1000, 100);
    ami_redis_config_t rc;
    ami_redis_config_default(&rc);
    rc.unix_path = w->srv.socket;
    rc.backoff_initial_ms = 20;
    rc.backoff_max_ms = 100;
    rc.name = "sub";
    ami_redis_t *sub = ami_redis_new(w->loop, &rc, NULL, w->metrics, NULL);
    heard_t h = {0};
    assert_int_equal(ami_redis_subscribe(sub, "chan", on_heard, &h, NULL), 0);
    ami_redis_start(sub);
    ami_redis_start(w->r);
    assert_true(harness_run_until(w->loop, is_up, w, 3000));
    for (int round = 0; round < 2; round++) {
        harness_run_for(w->loop, 200); /* SUBSCRIBE is in place */
        answer_t a;
        run_cmd(w, &a, L("PUBLISH", "chan", round ? "second" : "first"));
        assert_true(harness_run_until(w->loop, heard_one, &h, 3000));
        assert_string_equal(h.last, round ? "second" : "first");
        h.n = 0;
        if (round == 0) {
            assert_int_equal(redis_server_restart(&w->srv), 0);
            harness_run_for(w->loop, 100);
            assert_true(harness_run_until(w->loop, is_up, w, 3000));
        }
    }
    ami_redis_free(sub);
    world_free(w);
}

/* A failed test skips its own cleanup: stop whatever it started (and
 * continue a redis-server it paused, so it can die). */
static int kill_leftovers(void **state)
{
    proc_kill_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(commands_round_trip_over_a_unix_socket, kill_leftovers),
        cmocka_unit_test_teardown(commands_round_trip_over_tcp, kill_leftovers),
        cmocka_unit_test_teardown(password_and_acl_user_log_in, kill_leftovers),
        cmocka_unit_test_teardown(a_wrong_password_never_comes_up, kill_leftovers),
        cmocka_unit_test_teardown(commands_are_refused_at_once_while_down, kill_leftovers),
        cmocka_unit_test_teardown(a_paused_server_times_commands_out_and_the_link_comes_back, kill_leftovers),
        cmocka_unit_test_teardown(a_restarted_server_is_reconnected, kill_leftovers),
        cmocka_unit_test_teardown(commands_in_flight_are_bounded, kill_leftovers),
        cmocka_unit_test_teardown(a_cancelled_command_never_calls_back, kill_leftovers),
        cmocka_unit_test_teardown(a_subscriber_hears_every_message_after_reconnects, kill_leftovers),
    };
    if (getenv("AMI_TEST_FILTER")) /* run one: AMI_TEST_FILTER=name* */
        cmocka_set_test_filter(getenv("AMI_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
