/* The ha section of the config file (engine/cli/config_ha.c): values,
 * defaults, the Redis address forms, the password from the environment
 * (never shown), the timing rules and every mistake reported in words.
 *
 * The CLI sources are compiled into the ami-engine program only, so they
 * are included here, as in test_lua_config.c. */

#include "cli/config.h"
#include "cli/config_internal.h"
#include "util/alloc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];
static char path[300];

#define SERVERS "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret = 's' } }\n"

static int load_text(const char *text, ami_engine_config_t *cfg, ami_config_errors_t *errs)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(SERVERS, f);
    fputs(text, f);
    fclose(f);
    int rc = ami_config_load(path, cfg, errs);
    for (size_t i = 0; i < errs->count; i++)
        print_message("  config error: %s\n", errs->msg[i]);
    return rc;
}

static void expect_error(const char *text, const char *fragment)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text(text, &cfg, &errs), -1);
    for (size_t i = 0; i < errs.count; i++)
        if (strstr(errs.msg[i], fragment))
            return;
    fail_msg("no error contains: %s", fragment);
}

static char *describe(const ami_engine_config_t *cfg)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_config_describe(cfg, &out);
    char *s = strndup(out.data ? out.data : "", out.len);
    ami_buf_deinit(&out);
    return s;
}

static int group_setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/ami_config_ha_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/engine.lua", dir);
    setenv("AMI_TEST_REDIS_SECRET", "redis-Secret-77", 1);
    return 0;
}

static int group_teardown(void **state)
{
    unlink(path);
    return rmdir(dir);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void without_an_ha_section_high_availability_is_off(void **state)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text("", &cfg, &errs), 0);
    assert_false(cfg.ha_enabled);
    char *d = describe(&cfg);
    assert_null(strstr(d, "ha:"));
    free(d);
    ami_config_free(&cfg);
}

static void every_value_is_read_and_the_password_never_shown(void **state)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    int64_t live = ami_alloc_live_bytes();
    assert_int_equal(load_text("ha = { cluster = 'prod', instance = 'engine-a', lease_ms = 6000, renew_ms = 2000,\n"
                               "  redis = { address = '10.0.0.9:6390', username = 'engine',\n"
                               "            secret_env = 'AMI_TEST_REDIS_SECRET', command_timeout_ms = 700,\n"
                               "            connect_timeout_ms = 800, max_pending = 77 },\n"
                               "  kv = { max_key_bytes = 100, max_value_bytes = 1000 },\n"
                               "  stream = { name = 'ami:prod:events', events = {'Hangup', 'Newchannel'},\n"
                               "             maxlen = 500, max_inflight = 9 } }\n",
                               &cfg, &errs),
                     0);
    assert_true(cfg.ha_enabled);
    const ami_ha_config_t *h = &cfg.ha;
    assert_string_equal(h->cluster, "prod");
    assert_string_equal(h->instance, "engine-a");
    assert_int_equal(h->lease_ms, 6000);
    assert_int_equal(h->renew_ms, 2000);
    assert_string_equal(h->redis.ip, "10.0.0.9");
    assert_int_equal(h->redis.port, 6390);
    assert_string_equal(h->redis.username, "engine");
    assert_string_equal(h->redis.password, "redis-Secret-77");
    assert_int_equal(h->redis.command_timeout_ms, 700);
    assert_int_equal(h->redis.connect_timeout_ms, 800);
    assert_int_equal(h->redis.max_pending, 77);
    assert_int_equal(h->kv_max_key, 100);
    assert_int_equal(h->kv_max_value, 1000);
    assert_string_equal(h->stream, "ami:prod:events");
    assert_int_equal(h->nstream_events, 2);
    assert_string_equal(h->stream_events[1], "Newchannel");
    assert_int_equal(h->stream_maxlen, 500);
    assert_int_equal(h->stream_max_inflight, 9);
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "password from env AMI_TEST_REDIS_SECRET"));
    assert_null(strstr(d, "redis-Secret-77"));
    free(d);
    ami_config_free(&cfg);
    assert_int_equal(ami_alloc_live_bytes(), live); /* every string given back */
}

static void defaults_and_a_unix_socket_relative_to_the_config(void **state)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text("ha = { cluster = 'c', redis = { address = 'unix:run/redis.sock' } }\n", &cfg, &errs), 0);
    char want[400];
    snprintf(want, sizeof want, "%s/run/redis.sock", dir);
    assert_string_equal(cfg.ha.redis.unix_path, want);
    assert_null(cfg.ha.redis.ip);
    assert_null(cfg.ha.instance);
    assert_null(cfg.ha.redis.password);
    assert_int_equal(cfg.ha.lease_ms, 3000);
    assert_int_equal(cfg.ha.renew_ms, 1000);
    assert_null(cfg.ha.stream);
    ami_config_free(&cfg);
    assert_int_equal(load_text("ha = { cluster = 'c', redis = { address = '127.0.0.1' } }\n", &cfg, &errs), 0);
    assert_int_equal(cfg.ha.redis.port, 6379);
    ami_config_free(&cfg);
}

static void mistakes_are_reported_in_words(void **state)
{
    expect_error("ha = { redis = { address = '10.0.0.9:6379' } }\n", "ha.cluster: missing");
    expect_error("ha = { cluster = 'a b', redis = { address = '10.0.0.9' } }\n", "ha.cluster: \"a b\" must be");
    expect_error("ha = { cluster = 'c' }\n", "ha.redis: missing");
    expect_error("ha = { cluster = 'c', redis = {} }\n", "ha.redis.address: missing");
    expect_error("ha = { cluster = 'c', redis = { address = 'redis.example.com:6379' } }\n", "no host names");
    expect_error("ha = { cluster = 'c', redis = { address = '[::1]:6379' } }\n", "for IPv6 use a unix socket");
    expect_error("ha = { cluster = 'c', redis = { address = '::1' } }\n", "is not an IPv4 address");
    expect_error("ha = { cluster = 'c', redis = { address = '10.0.0.9:99999' } }\n", "is not an IPv4 address");
    expect_error("ha = { cluster = 'c', redis = { address = 'unix:' } }\n", "needs a socket path");
    expect_error("ha = { cluster = 'c', renew_ms = 2000, redis = { address = '10.0.0.9' } }\n",
                 "more than half of lease_ms");
    expect_error("ha = { cluster = 'c', lease_ms = 3000, renew_ms = 1500,\n"
                 "       redis = { address = '10.0.0.9', command_timeout_ms = 1500 } }\n",
                 "must be less than lease_ms");
    expect_error("ha = { cluster = 'c', redis = { address = '10.0.0.9', secret_env = 'AMI_TEST_NOT_SET_X' } }\n",
                 "AMI_TEST_NOT_SET_X is not set");
    expect_error("ha = { cluster = 'c', redis = { address = '10.0.0.9', secret = 'a', secret_env = 'B' } }\n",
                 "more than one secret source");
    expect_error("ha = { cluster = 'c', leese_ms = 5, redis = { address = '10.0.0.9' } }\n", "did you mean \"lease_ms\"");
    expect_error("ha = { cluster = 'c', redis = { address = '10.0.0.9', backoff_initial_ms = 9000, "
                 "backoff_max_ms = 10 } }\n",
                 "backoff_initial_ms (9000) is larger");
    expect_error("ha = { cluster = 'c', redis = { address = '10.0.0.9' }, stream = { events = '*' } }\n",
                 "ha.stream.name: missing");
    expect_error("ha = { cluster = 'c', redis = { address = '10.0.0.9' }, stream = { name = 's', events = 5 } }\n",
                 "ha.stream.events: expected");
    expect_error("ha = { cluster = 'c', redis = { address = '10.0.0.9' }, kv = { max_key_bytes = 0 } }\n",
                 "ha.kv.max_key_bytes");
    expect_error("ha = 'on'\n", "ha: expected a table");
}

static void the_coordinator_refuses_what_the_config_would(void **state)
{
    ami_ha_config_t c;
    ami_ha_config_default(&c);
    c.cluster = "c";
    c.redis.ip = "127.0.0.1";
    c.renew_ms = 2000; /* more than half of the 3000 ms lease */
    ami_client_config_t cc;
    ami_client_config_default(&cc);
    ami_client_t *client = ami_client_new(&cc, NULL);
    ami_err_t err;
    assert_null(ami_ha_new(client, &c, &err));
    assert_non_null(strstr(err.msg, "at most half of lease_ms"));
    c.renew_ms = 1000;
    c.cluster = "bad cluster";
    assert_null(ami_ha_new(client, &c, &err));
    assert_non_null(strstr(err.msg, "ha.cluster"));
    ami_client_free(client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(without_an_ha_section_high_availability_is_off),
        cmocka_unit_test(every_value_is_read_and_the_password_never_shown),
        cmocka_unit_test(defaults_and_a_unix_socket_relative_to_the_config),
        cmocka_unit_test(mistakes_are_reported_in_words),
        cmocka_unit_test(the_coordinator_refuses_what_the_config_would),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
