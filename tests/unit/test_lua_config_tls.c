/* The config's tls tables (engine/cli/config_tls.c): values, paths
 * relative to the config file, defaults merged key by key, tls = false,
 * the TLS port, the --check-config line; and the load-time errors an
 * operator meets (missing CA, unreadable file, key not matching its
 * certificate, key behind a passphrase, typos), each with its words.
 * Certificates come from tests/support/make_certs.sh in a temporary folder.
 *
 * Named test_lua_* so the build links ami_lua, as test_lua_config.c explains. */

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

static char dir[128];

static const char *path_in(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/ami-tls-config-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "bash '%s/tests/support/make_certs.sh' '%s' >/dev/null 2>&1 && "
             "openssl pkey -in '%s/client.key' -aes256 -passout pass:x -out '%s/locked.key' 2>/dev/null",
             AMI_SOURCE_DIR, dir, dir, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write engine.lua in the PKI folder (so relative paths find the files) and load it. */
static int load_text(const char *text, ami_engine_config_t *cfg, ami_config_errors_t *errs)
{
    FILE *f = fopen(path_in("engine.lua"), "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    int rc = ami_config_load(path_in("engine.lua"), cfg, errs);
    for (size_t i = 0; rc < 0 && i < errs->count; i++)
        print_message("  config error: %s\n", errs->msg[i]);
    return rc;
}

static void expect_only_error(const char *text, const char *fragment)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text(text, &cfg, &errs), -1);
    bool found = false;
    for (size_t i = 0; i < errs.count; i++)
        found = found || strstr(errs.msg[i], fragment) != NULL;
    if (!found)
        fail_msg("no error contains: %s", fragment);
    assert_int_equal(errs.count, 1);
}

#define SERVER(extra) "{ key = \"pbx1\", host = \"127.0.0.1\", username = \"u\", secret = \"s\", " extra " }"

static void tls_table_values_and_relative_paths(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text("servers = { " SERVER("tls = { ca_file = \"ca.crt\", server_name = \"pbx1.test\", "
                                                     "cert_file = \"./client.crt\", key_file = \"client.key\", "
                                                     "handshake_timeout_ms = 1500 }") " }",
                               &cfg, &errs),
                     0);
    const ami_tls_options_t *t = &cfg.servers[0].tls;
    assert_true(t->enabled);
    assert_false(t->no_verify);
    assert_string_equal(t->ca_file, path_in("ca.crt"));
    assert_string_equal(t->cert_file, path_in("client.crt"));
    assert_string_equal(t->key_file, path_in("client.key"));
    assert_string_equal(t->server_name, "pbx1.test");
    assert_int_equal(t->handshake_timeout_ms, 1500);
    assert_int_equal(cfg.servers[0].port, AMI_TLS_DEFAULT_PORT); /* Asterisk's TLS port */
    ami_config_free(&cfg);
}

static void defaults_merge_key_by_key_and_false_turns_tls_off(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text("defaults = { tls = { ca_file = \"ca.crt\", handshake_timeout_ms = 900 } }\n"
                               "servers = { " SERVER("tls = { server_name = \"pbx1.test\" }, port = 6000") ", "
                               "{ key = \"pbx2\", host = \"127.0.0.1\", username = \"u\", secret = \"s\", tls = false },"
                               "{ key = \"pbx3\", host = \"127.0.0.1\", username = \"u\", secret = \"s\" } }",
                               &cfg, &errs),
                     0);
    const ami_server_options_t *a = &cfg.servers[0], *b = &cfg.servers[1], *c = &cfg.servers[2];
    assert_true(a->tls.enabled);
    assert_string_equal(a->tls.ca_file, path_in("ca.crt"));
    assert_string_equal(a->tls.server_name, "pbx1.test");
    assert_int_equal(a->tls.handshake_timeout_ms, 900);
    assert_int_equal(a->port, 6000);
    assert_false(b->tls.enabled);
    assert_int_equal(b->port, 5038);
    assert_true(c->tls.enabled);
    assert_null(c->tls.server_name);
    assert_int_equal(c->port, AMI_TLS_DEFAULT_PORT);
    ami_config_free(&cfg);
}

static void check_config_shows_tls_and_verify_off(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load_text("servers = { " SERVER("tls = { ca_file = \"ca.crt\", cert_file = \"client.crt\", "
                                                     "key_file = \"client.key\" }") ", "
                               "{ key = \"pbx2\", host = \"127.0.0.1\", username = \"u\", secret = \"s\", "
                               "tls = { verify = false } } }",
                               &cfg, &errs),
                     0);
    assert_true(cfg.servers[1].tls.no_verify);
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_config_describe(&cfg, &out);
    ami_buf_append(&out, "", 1);
    print_message("%s", out.data);
    assert_non_null(strstr(out.data, "tls: verify the host 127.0.0.1 against "));
    assert_non_null(strstr(out.data, "client certificate "));
    assert_non_null(strstr(out.data, "tls: VERIFY OFF (insecure"));
    ami_buf_deinit(&out);
    ami_config_free(&cfg);
}

static void missing_ca_file_is_an_error(void **state)
{
    (void)state;
    expect_only_error("servers = { " SERVER("tls = { server_name = \"pbx1.test\" }") " }",
                      "servers[1] (pbx1).tls.ca_file: missing; give the CA certificate (PEM)");
}

static void unreadable_ca_file_is_an_error(void **state)
{
    (void)state;
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"nope.crt\" }") " }",
                      "tls.ca_file \"");
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"nope.crt\" }") " }",
                      "nope.crt\": cannot read it: No such file or directory");
}

static void ca_file_without_a_certificate_is_an_error(void **state)
{
    (void)state;
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.key\" }") " }",
                      "holds no usable PEM certificate");
}

static void key_not_matching_the_certificate_is_an_error(void **state)
{
    (void)state;
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.crt\", cert_file = \"client.crt\", "
                                            "key_file = \"server.key\" }") " }",
                      "server.key\" does not match the certificate in tls.cert_file");
}

static void key_behind_a_passphrase_is_an_error(void **state)
{
    (void)state;
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.crt\", cert_file = \"client.crt\", "
                                            "key_file = \"locked.key\" }") " }",
                      "protected by a passphrase, which the engine cannot ask for");
}

static void key_without_certificate_is_an_error(void **state)
{
    (void)state;
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.crt\", key_file = \"client.key\" }") " }",
                      "tls.key_file: set without cert_file");
}

static void typos_and_wrong_types_are_errors(void **state)
{
    (void)state;
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.crt\", verfy = false }") " }",
                      "tls: unknown option \"verfy\"; did you mean \"verify\"?");
    expect_only_error("servers = { " SERVER("tls = \"on\"") " }", "tls: expected a table");
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.crt\", verify = \"no\" }") " }",
                      "tls.verify: expected");
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.crt\", server_name = \"pbx 1\" }") " }",
                      "tls.server_name \"pbx 1\" is not a host name");
    expect_only_error("servers = { " SERVER("tls = { ca_file = \"ca.crt\", handshake_timeout_ms = 0 }") " }",
                      "tls.handshake_timeout_ms: expected an integer from 1 to 600000");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tls_table_values_and_relative_paths),
        cmocka_unit_test(defaults_merge_key_by_key_and_false_turns_tls_off),
        cmocka_unit_test(check_config_shows_tls_and_verify_off),
        cmocka_unit_test(missing_ca_file_is_an_error),
        cmocka_unit_test(unreadable_ca_file_is_an_error),
        cmocka_unit_test(ca_file_without_a_certificate_is_an_error),
        cmocka_unit_test(key_not_matching_the_certificate_is_an_error),
        cmocka_unit_test(key_behind_a_passphrase_is_an_error),
        cmocka_unit_test(key_without_certificate_is_an_error),
        cmocka_unit_test(typos_and_wrong_types_are_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
