/* trusted_proxies: parsing TRUSTED_PROXIES and finding the client behind them. */
#include "trusted_proxies.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static trusted_proxies_t *parse_ok(const char *spec)
{
    char err[256] = "";
    trusted_proxies_t *l = trusted_proxies_parse(spec, err, sizeof(err));
    if (l == NULL) {
        fail_msg("'%s' refused: %s", spec, err);
    }
    return l;
}

static void test_parse(void **state)
{
    (void)state;
    trusted_proxies_t *l = parse_ok(NULL);
    assert_int_equal(trusted_proxies_count(l), 0);
    trusted_proxies_free(l);
    l = parse_ok(" 10.0.0.0/8 , 192.168.1.7,fd00::/8,, ::ffff:172.16.0.0/108 ");
    assert_int_equal(trusted_proxies_count(l), 4);
    trusted_proxies_free(l);

    static const char *const bad[] = {
        "10.0.0.0/33", "10.0.0.0/",   "10.0.0.0/8x", "fd00::/129",
        "localhost",   "10.0.0.0/-1", "1.2.3",       "::ffff:1.2.3.4/95",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        trusted_proxies_t *b = trusted_proxies_parse(bad[i], err, sizeof(err));
        if (b != NULL) {
            fail_msg("'%s' accepted", bad[i]);
        }
        assert_non_null(strstr(err, "TRUSTED_PROXIES"));
    }
    /* the cap on entries */
    char many[TRUSTED_PROXIES_MAX * 16 + 64] = "";
    for (int i = 0; i <= TRUSTED_PROXIES_MAX; i++) {
        char one[24];
        snprintf(one, sizeof(one), "10.0.%d.1,", i);
        strcat(many, one);
    }
    char err[256] = "";
    assert_null(trusted_proxies_parse(many, err, sizeof(err)));
}

static void test_match(void **state)
{
    (void)state;
    trusted_proxies_t *l = parse_ok("10.0.0.0/8,192.168.1.7,fd00::/8,172.16.0.0/12");
    assert_true(trusted_proxies_match(l, "10.255.1.2"));
    assert_true(trusted_proxies_match(l, "192.168.1.7"));
    assert_false(trusted_proxies_match(l, "192.168.1.8"));
    assert_true(trusted_proxies_match(l, "172.31.255.255"));
    assert_false(trusted_proxies_match(l, "172.32.0.1"));
    assert_true(trusted_proxies_match(l, "fd12:3456::1"));
    assert_false(trusted_proxies_match(l, "fe80::1"));
    assert_true(trusted_proxies_match(l, "::ffff:10.1.2.3")); /* v4-mapped is v4 */
    assert_false(trusted_proxies_match(l, "11.0.0.1"));
    assert_false(trusted_proxies_match(l, "garbage"));
    assert_false(trusted_proxies_match(l, NULL));
    trusted_proxies_free(l);
}

static void expect_client(const trusted_proxies_t *l, const char *peer, const char *const *xff,
                          size_t n, const char *want)
{
    char out[64];
    trusted_proxies_client(l, peer, xff, n, out, sizeof(out));
    if (strcmp(out, want) != 0) {
        fail_msg("peer %s, %zu header(s) (first '%s'): client %s, want %s", peer, n,
                 n > 0 ? xff[0] : "", out, want);
    }
}

static void test_client(void **state)
{
    (void)state;
    trusted_proxies_t *l = parse_ok("10.0.0.0/8,2001:db8::/32");
    trusted_proxies_t *none = parse_ok("");

    const char *one[] = {"203.0.113.7"};
    /* no list, or a peer outside it: the header is anyone's, ignored */
    expect_client(none, "10.0.0.1", one, 1, "10.0.0.1");
    expect_client(l, "198.51.100.1", one, 1, "198.51.100.1");
    /* a trusted peer: the right-most untrusted entry */
    expect_client(l, "10.0.0.1", one, 1, "203.0.113.7");
    const char *chain[] = {"1.1.1.1, 203.0.113.7, 10.2.3.4"}; /* 1.1.1.1 is client-supplied */
    expect_client(l, "10.0.0.1", chain, 1, "203.0.113.7");
    /* several headers are one list, in order */
    const char *split[] = {"1.1.1.1", "203.0.113.9", "10.9.9.9"};
    expect_client(l, "10.0.0.1", split, 3, "203.0.113.9");
    /* ports and brackets */
    const char *ports[] = {"[2001:db8::5]:443, 203.0.113.8:5555"};
    expect_client(l, "10.0.0.1", ports, 1, "203.0.113.8");
    const char *v6[] = {"[2606:4700::1111]:1234, [2001:db8::5]"};
    expect_client(l, "2001:db8::9", v6, 1, "2606:4700::1111");
    /* a forged non-address stops the walk at the last trusted hop */
    const char *junk[] = {"203.0.113.7, <script>, 10.1.1.1"};
    expect_client(l, "10.0.0.1", junk, 1, "10.1.1.1");
    const char *empty[] = {""};
    expect_client(l, "10.0.0.1", empty, 1, "10.0.0.1");
    expect_client(l, "10.0.0.1", NULL, 0, "10.0.0.1");
    /* all trusted: the farthest one */
    const char *inner[] = {"10.3.3.3, 10.2.2.2"};
    expect_client(l, "10.0.0.1", inner, 1, "10.3.3.3");
    /* a v4-mapped peer and canonical text */
    expect_client(l, "::ffff:10.0.0.1", one, 1, "203.0.113.7");
    const char *upper[] = {"2606:4700:0:0:0:0:0:1111"};
    expect_client(l, "10.0.0.1", upper, 1, "2606:4700::1111");
    /* a long chain: only the last TRUSTED_PROXIES_MAX_HOPS entries are read */
    char *longv = calloc(1, 64 * 16);
    assert_non_null(longv);
    strcpy(longv, "198.51.100.99");
    for (int i = 0; i < 60; i++) {
        strcat(longv, ", 10.0.0.2");
    }
    const char *lv[] = {longv};
    expect_client(l, "10.0.0.1", lv, 1, "10.0.0.2");
    free(longv);
    /* an unparsable peer is returned as is */
    expect_client(l, "-", one, 1, "-");
    trusted_proxies_free(l);
    trusted_proxies_free(none);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
