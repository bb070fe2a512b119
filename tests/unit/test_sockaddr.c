/* util/sockaddr: IP literals become socket addresses without a resolver;
 * anything else (a hostname, NULL, junk in brackets) is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "util/sockaddr.h"

static void ipv4_literal_with_its_port(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    assert_true(ami_sockaddr_from_ip("10.0.0.5", 5038, &ss, &len));
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)&ss;
    assert_int_equal(v4->sin_family, AF_INET);
    assert_int_equal(ntohs(v4->sin_port), 5038);
    assert_int_equal(ntohl(v4->sin_addr.s_addr), 0x0a000005);
    assert_int_equal(len, sizeof *v4);
}

static void ipv6_literal_bare_or_in_brackets(void **state)
{
    (void)state;
    static const char *const forms[] = {"::1", "[::1]"};
    for (size_t i = 0; i < 2; i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        assert_true(ami_sockaddr_from_ip(forms[i], 9100, &ss, &len));
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&ss;
        assert_int_equal(v6->sin6_family, AF_INET6);
        assert_int_equal(ntohs(v6->sin6_port), 9100);
        assert_memory_equal(&v6->sin6_addr, &in6addr_loopback, sizeof in6addr_loopback);
        assert_int_equal(len, sizeof *v6);
    }
}

static void names_and_junk_are_refused_without_a_lookup(void **state)
{
    (void)state;
    char long_bracket[100];
    memset(long_bracket, 'a', sizeof long_bracket - 1);
    long_bracket[0] = '[';
    long_bracket[sizeof long_bracket - 2] = ']';
    long_bracket[sizeof long_bracket - 1] = '\0';
    static const char *const bad[] = {"localhost", "pbx1.example.com", "", "[10.0.0.5]", "[]", "1.2.3",
                                      "::1]", "[::1", "10.0.0.5:5038"};
    struct sockaddr_storage ss;
    socklen_t len = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(ami_sockaddr_from_ip(bad[i], 1, &ss, &len));
    assert_false(ami_sockaddr_from_ip(long_bracket, 1, &ss, &len));
    assert_false(ami_sockaddr_from_ip(NULL, 1, &ss, &len));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ipv4_literal_with_its_port),
        cmocka_unit_test(ipv6_literal_bare_or_in_brackets),
        cmocka_unit_test(names_and_junk_are_refused_without_a_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
