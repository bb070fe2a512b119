/* The config's http section (engine/cli/config_http.c): off without it,
 * on with the defaults when present, every value read, relative ca_file
 * resolved, describe never showing a proxy's credentials; then each
 * mistake with the message the operator sees, and no memory left behind.
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

static char tmpdir[256];

#define SERVER "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'engine', secret = 'pw' } }\n"

static const char *write_config(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int load_text(const char *text, ami_engine_config_t *cfg, ami_config_errors_t *errs)
{
    int rc = ami_config_load(write_config("engine.lua", text), cfg, errs);
    for (size_t i = 0; i < errs->count; i++)
        print_message("  config error: %s\n", errs->msg[i]);
    return rc;
}

static char *describe(const ami_engine_config_t *cfg)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_config_describe(cfg, &out);
    ami_buf_append(&out, "", 1);
    return out.data;
}

static void without_a_section_http_is_off(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text(SERVER, &cfg, &errs), 0);
    assert_false(cfg.http_enabled);
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "http: off"));
    ami_free(d);
    ami_config_free(&cfg);
    assert_int_equal(load_text(SERVER "http = false\n", &cfg, &errs), 0);
    assert_false(cfg.http_enabled);
    ami_config_free(&cfg);
}

static void an_empty_section_turns_it_on_with_the_defaults(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text(SERVER "http = {}\n", &cfg, &errs), 0);
    assert_true(cfg.http_enabled);
    ami_httpc_config_t d;
    ami_httpc_config_default(&d);
    assert_int_equal(cfg.http.max_concurrent, d.max_concurrent);
    assert_int_equal(cfg.http.timeout_ms, d.timeout_ms);
    assert_true(cfg.http.verify);
    assert_null(cfg.http.ca_file);
    assert_null(cfg.http.proxy);
    ami_config_free(&cfg);
}

static void a_small_max_concurrent_lowers_the_default_per_script_bound(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text(SERVER "http = { max_concurrent = 9 }\n", &cfg, &errs), 0);
    assert_int_equal(cfg.http.max_concurrent, 9);
    assert_int_equal(cfg.http.max_per_owner, 9);
    ami_config_free(&cfg);
}

static void every_value_is_read(void **state)
{
    (void)state;
    write_config("crm-ca.pem", "not checked here, only that it can be read\n");
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    int64_t live = ami_alloc_live_bytes();
    assert_int_equal(load_text(SERVER "http = { max_concurrent = 500, max_per_script = 20, max_response_bytes = 2048,\n"
                                      "  max_request_bytes = 4096, max_header_bytes = 8192, max_url_bytes = 1000,\n"
                                      "  timeout_ms = 2500, connect_timeout_ms = 700, max_redirects = 0,\n"
                                      "  ca_file = 'crm-ca.pem', verify = false, proxy = 'http://user:pw@proxy.lan:3128',\n"
                                      "  max_host_labels = 7 }\n",
                               &cfg, &errs),
                     0);
    const ami_httpc_config_t *h = &cfg.http;
    assert_int_equal(h->max_concurrent, 500);
    assert_int_equal(h->max_per_owner, 20);
    assert_int_equal(h->max_response_bytes, 2048);
    assert_int_equal(h->max_request_bytes, 4096);
    assert_int_equal(h->max_header_bytes, 8192);
    assert_int_equal(h->max_url_bytes, 1000);
    assert_int_equal(h->timeout_ms, 2500);
    assert_int_equal(h->connect_timeout_ms, 700);
    assert_int_equal(h->max_redirects, 0);
    assert_int_equal(h->max_host_labels, 7);
    assert_false(h->verify);
    char ca[600];
    snprintf(ca, sizeof ca, "%s/crm-ca.pem", tmpdir);
    char *real = realpath(ca, NULL);
    assert_string_equal(h->ca_file, real);
    free(real);
    assert_string_equal(h->proxy, "http://user:pw@proxy.lan:3128");
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "verify OFF"));
    assert_null(strstr(d, "pw@"));
    ami_free(d);
    ami_config_free(&cfg);
    assert_int_equal(ami_alloc_live_bytes(), live);
}

typedef struct bad {
    const char *lua;
    const char *fragment;
} bad_t;

static const bad_t BAD[] = {
    {"http = 'on'", "http: expected a table { ... }, got string \"on\""},
    {"http = { conect_timeout_ms = 5000 }",
     "http: unknown option \"conect_timeout_ms\"; did you mean \"connect_timeout_ms\"?"},
    {"http = { timeout_ms = 1.5 }", "http.timeout_ms: expected an integer from 1 to 3600000, got number 1.5"},
    {"http = { timeout_ms = 0/0 }", "http.timeout_ms: expected an integer from 1 to 3600000"},
    {"http = { timeout_ms = math.huge }", "http.timeout_ms: expected an integer from 1 to 3600000, got number inf"},
    {"http = { max_concurrent = -1 }", "http.max_concurrent: expected an integer from 1 to 100000, got number -1"},
    {"http = { max_response_bytes = 1e12 }", "http.max_response_bytes: expected an integer from 1 to 268435456"},
    {"http = { max_redirects = '3' }", "http.max_redirects: expected an integer from 0 to 50, got string \"3\""},
    {"http = { max_concurrent = 10, max_per_script = 11 }",
     "http.max_per_script: 11 is more than http.max_concurrent (10)"},
    {"http = { ca_file = 'missing.pem' }", "cannot be read (No such file or directory)"},
    {"http = { ca_file = '' }", "http.ca_file: is empty"},
    {"http = { verify = 'no' }", "http.verify: expected true or false, got string \"no\""},
    {"http = { proxy = 'ftp://proxy.lan' }", "http.proxy: \"ftp://proxy.lan\" is not a proxy URL"},
    {"http = { proxy = 'http://a b' }", "is not a proxy URL"},
};

static void each_mistake_is_reported_with_its_place(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, SERVER "%s\n", BAD[i].lua);
        ami_engine_config_t cfg;
        ami_config_errors_t errs;
        int64_t live = ami_alloc_live_bytes();
        assert_int_equal(load_text(text, &cfg, &errs), -1);
        bool found = false;
        for (size_t e = 0; e < errs.count && !found; e++)
            found = strstr(errs.msg[e], BAD[i].fragment) != NULL;
        if (!found)
            fail_msg("%s: no error contains: %s", BAD[i].lua, BAD[i].fragment);
        assert_int_equal(ami_alloc_live_bytes(), live);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ami-config-http-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(without_a_section_http_is_off),
        cmocka_unit_test(an_empty_section_turns_it_on_with_the_defaults),
        cmocka_unit_test(a_small_max_concurrent_lowers_the_default_per_script_bound),
        cmocka_unit_test(every_value_is_read),
        cmocka_unit_test(each_mistake_is_reported_with_its_place),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
