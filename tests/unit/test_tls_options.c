/* TLS options and contexts without a connection: what a config can get
 * wrong (caught before any file is read), what a file can hold wrong (caught
 * when the context is made, naming the file), what a context says it will
 * verify, and certificate rotation that keeps a working context when the
 * new files are bad. The PKI is made by make_certs.sh (openssl CLI). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls_world.h"
#include "transport/tls.h"

static ami_tls_options_t verified(const char *ca)
{
    return (ami_tls_options_t){.enabled = true, .ca_file = ca};
}

static void expect_invalid(const ami_tls_options_t *o, const char *fragment)
{
    ami_err_t err = {0};
    assert_int_equal(ami_tls_options_validate(o, &err), -1);
    assert_int_equal(err.code, AMI_E_CONFIG);
    if (!strstr(err.msg, fragment))
        fail_msg("\"%s\" does not say \"%s\"", err.msg, fragment);
}

static void options_are_checked_before_any_file_is_read(void **state)
{
    (void)state;
    ami_err_t err = {0};
    ami_tls_options_t off = {.enabled = false, .key_file = "k.pem"};
    assert_int_equal(ami_tls_options_validate(&off, &err), 0); /* TLS off: nothing applies */
    ami_tls_options_t o = verified(NULL);
    expect_invalid(&o, "tls.ca_file is missing");
    o.ca_file = "";
    expect_invalid(&o, "tls.ca_file is missing");
    o = verified("ca.pem");
    o.key_file = "client.key";
    expect_invalid(&o, "tls.key_file is set without tls.cert_file");
    const char *bad_names[] = {"", "pbx 1", "pbx/1", "pbx\\1", "pbx\r\n1", "\x7f"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        o = verified("ca.pem");
        o.server_name = bad_names[i];
        expect_invalid(&o, "is not a host name");
    }
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    o.server_name = long_name;
    expect_invalid(&o, "is not a host name");
    o = verified("ca.pem");
    o.handshake_timeout_ms = 600001;
    expect_invalid(&o, "tls.handshake_timeout_ms must be at most 600000");
    o.handshake_timeout_ms = 600000;
    o.server_name = "pbx1.example.com";
    assert_int_equal(ami_tls_options_validate(&o, &err), 0);
    ami_tls_options_t insecure = {.enabled = true, .no_verify = true};
    assert_int_equal(ami_tls_options_validate(&insecure, &err), 0); /* no CA needed without verification */
}

static void options_compare_by_value_and_copy_deeply(void **state)
{
    (void)state;
    char ca[] = "ca.pem", ca2[] = "ca.pem";
    ami_tls_options_t a = verified(ca), b = verified(ca2);
    assert_true(ami_tls_options_equal(&a, &b)); /* the same strings at other addresses */
    ami_tls_options_t off1 = {.enabled = false, .ca_file = "x"}, off2 = {.enabled = false, .ca_file = "y"};
    assert_true(ami_tls_options_equal(&off1, &off2)); /* TLS off either way */
    b.no_verify = true;
    assert_false(ami_tls_options_equal(&a, &b));
    b = verified(ca2);
    b.handshake_timeout_ms = 1;
    assert_false(ami_tls_options_equal(&a, &b));
    b = verified(ca2);
    b.server_name = "pbx1";
    assert_false(ami_tls_options_equal(&a, &b));
    b = verified(NULL);
    assert_false(ami_tls_options_equal(&a, &b));
    b = verified(ca2);
    b.cert_file = "c.pem";
    assert_false(ami_tls_options_equal(&a, &b));
    a.cert_file = "c.pem";
    a.key_file = "k.pem";
    assert_false(ami_tls_options_equal(&a, &b));
    assert_false(ami_tls_options_equal(&a, &off1));

    ami_tls_options_t copy = {0};
    assert_int_equal(ami_tls_options_copy(&copy, &a), 0);
    assert_true(ami_tls_options_equal(&copy, &a));
    assert_ptr_not_equal(copy.ca_file, a.ca_file);
    ami_tls_options_free(&copy);
    assert_null(copy.ca_file);
    assert_null(copy.key_file);
}

static void every_failure_reason_has_a_name(void **state)
{
    (void)state;
    for (int r = 0; r < AMI_TLS_R_COUNT; r++) {
        const char *name = ami_tls_reason_name((ami_tls_reason_t)r);
        assert_non_null(name);
        assert_true(strlen(name) > 0);
        for (int s = 0; s < r; s++)
            assert_string_not_equal(name, ami_tls_reason_name((ami_tls_reason_t)s));
    }
    assert_string_equal(ami_tls_reason_name(AMI_TLS_R_COUNT), "other");
    assert_string_equal(ami_tls_reason_name((ami_tls_reason_t)1000), "other");
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void expect_client_refused(const ami_tls_options_t *o, const char *host, const char *fragment)
{
    ami_err_t err = {0};
    long live = ami_tls_live_objects();
    assert_null(ami_tls_client_new(o, host, "pbx1", NULL, NULL, &err));
    if (!strstr(err.msg, fragment))
        fail_msg("\"%s\" does not say \"%s\"", err.msg, fragment);
    assert_int_equal(ami_tls_live_objects(), live); /* nothing left behind */
}

static void bad_files_are_refused_naming_the_file(void **state)
{
    (void)state;
    char garbage[256];
    snprintf(garbage, sizeof garbage, "%s", tw_pki("garbage.pem"));
    write_file(garbage, "this is not PEM\n");
    char folder[256];
    snprintf(folder, sizeof folder, "%s", tw_pki("a-folder.pem"));
    mkdir(folder, 0700);

    ami_tls_options_t o = verified(tw_pki("ca.crt"));
    expect_client_refused(&o, NULL, "needs the server's host");
    expect_client_refused(&o, "", "needs the server's host");
    o.ca_file = folder;
    expect_client_refused(&o, "127.0.0.1", "is not a regular file");
    o.ca_file = tw_pki("no-such-file.crt");
    expect_client_refused(&o, "127.0.0.1", "cannot read it");
    o.ca_file = garbage;
    expect_client_refused(&o, "127.0.0.1", "garbage.pem");
    o = verified(tw_pki("ca.crt"));
    o.cert_file = garbage;
    expect_client_refused(&o, "127.0.0.1", "holds no usable PEM certificate");
    o.cert_file = tw_pki("client.crt");
    o.key_file = garbage;
    expect_client_refused(&o, "127.0.0.1", "holds no usable PEM private key");

    ami_err_t err = {0};
    assert_null(ami_tls_server_new(NULL, &err));
    assert_non_null(strstr(err.msg, "a TLS server needs a certificate file"));
    ami_tls_server_options_t so = {.cert_file = NULL};
    assert_null(ami_tls_server_new(&so, &err));
    so.cert_file = garbage;
    assert_null(ami_tls_server_new(&so, &err));
    assert_non_null(strstr(err.msg, "garbage.pem"));
    unlink(garbage);
    rmdir(folder);
}

static void a_context_says_what_it_verifies(void **state)
{
    (void)state;
    ami_err_t err = {0};
    ami_tls_options_t o = verified(tw_pki("ca.crt"));
    ami_tls_ctx_t *ip = ami_tls_client_new(&o, "127.0.0.1", "pbx1", NULL, NULL, &err);
    assert_non_null(ip);
    assert_true(ami_tls_ctx_verifies(ip));
    assert_string_equal(ami_tls_ctx_expected_name(ip), "IP 127.0.0.1");
    assert_string_equal(ami_tls_ctx_server_key(ip), "pbx1");
    assert_int_equal(ami_tls_ctx_handshake_timeout_ms(ip), AMI_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS);
    assert_int_equal(ami_tls_ctx_handshakes(ip), 0);
    ami_tls_ctx_free(ip);

    ami_tls_ctx_t *v6 = ami_tls_client_new(&o, "[::1]", NULL, NULL, NULL, &err);
    assert_non_null(v6);
    assert_string_equal(ami_tls_ctx_expected_name(v6), "IP ::1");
    assert_string_equal(ami_tls_ctx_server_key(v6), "");
    ami_tls_ctx_free(v6);

    o.server_name = "pbx1.test"; /* the name wins over the IP */
    o.handshake_timeout_ms = 1234;
    ami_tls_ctx_t *named = ami_tls_client_new(&o, "127.0.0.1", "pbx1", NULL, NULL, &err);
    assert_non_null(named);
    assert_string_equal(ami_tls_ctx_expected_name(named), "pbx1.test");
    assert_int_equal(ami_tls_ctx_handshake_timeout_ms(named), 1234);
    ami_tls_ctx_free(named);

    ami_tls_options_t insecure = {.enabled = true, .no_verify = true};
    ami_tls_ctx_t *nv = ami_tls_client_new(&insecure, "10.0.0.5", "pbx2", NULL, NULL, &err);
    assert_non_null(nv);
    assert_false(ami_tls_ctx_verifies(nv));
    ami_tls_ctx_free(nv);

    ami_tls_server_options_t so = {.cert_file = tw_pki("server.crt"), .key_file = tw_pki("server.key")};
    ami_tls_ctx_t *server = ami_tls_server_new(&so, &err);
    assert_non_null(server);
    assert_string_equal(ami_tls_ctx_expected_name(server), "");
    assert_int_equal(ami_tls_ctx_refresh(server, &err), 0); /* a no-op for servers */
    ami_tls_ctx_free(server);
    assert_int_equal(ami_tls_live_objects(), 0);
}

static void a_bad_rotation_keeps_the_working_context(void **state)
{
    (void)state;
    char ca[256];
    snprintf(ca, sizeof ca, "%s", tw_pki("rotating-ca.crt"));
    tw_copy_file(tw_pki("ca.crt"), ca);
    ami_err_t err = {0};
    ami_tls_options_t o = verified(ca);
    ami_tls_ctx_t *ctx = ami_tls_client_new(&o, "127.0.0.1", "pbx1", NULL, NULL, &err);
    assert_non_null(ctx);
    assert_int_equal(ami_tls_ctx_refresh(ctx, &err), 0); /* nothing changed */
    write_file(ca, "half a certificate, being copied\n"); /* a different size: the stamp changes */
    assert_int_equal(ami_tls_ctx_refresh(ctx, &err), -1);
    assert_non_null(strstr(err.msg, "rotating-ca.crt"));
    assert_true(ami_tls_ctx_verifies(ctx)); /* the old context still serves */
    tw_copy_file(tw_pki("rogue-ca.crt"), ca);
    assert_int_equal(ami_tls_ctx_refresh(ctx, &err), 0);
    unlink(ca);
    assert_int_equal(ami_tls_ctx_refresh(ctx, &err), -1); /* gone: keep what works */
    ami_tls_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(options_are_checked_before_any_file_is_read),
        cmocka_unit_test(options_compare_by_value_and_copy_deeply),
        cmocka_unit_test(every_failure_reason_has_a_name),
        cmocka_unit_test(bad_files_are_refused_naming_the_file),
        cmocka_unit_test(a_context_says_what_it_verifies),
        cmocka_unit_test(a_bad_rotation_keeps_the_working_context),
    };
    return cmocka_run_group_tests(tests, tw_make_pki, tw_remove_pki);
}
