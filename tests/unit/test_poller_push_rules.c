/*
 * test_poller_push_rules — the drive-poller's push rules (push.h):
 * DRIVE_WEBHOOK_URL must be https, or http to a loopback host only; a channel
 * is renewed a fifth of its life before its end, at most an hour before.
 */
#include "push.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_webhook_url_rule(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        bool ok;
    } cases[] = {
        {"https://app.example.com/webhooks/drive", true},
        {"HTTPS://app.example.com:8443/webhooks/drive", true},
        {"http://127.0.0.1:9102/webhooks/drive", true},
        {"http://localhost/webhooks/drive", true},
        {"http://[::1]:9102/webhooks/drive", true},
        {"http://127.0.0.1", true},
        {"http://app.example.com/webhooks/drive", false},
        {"http://127.0.0.1.evil.example/webhooks/drive", false},
        {"http://localhost.evil.example/", false},
        {"http://10.0.0.1/webhooks/drive", false},
        {"http://localhost:80@evil.example/webhooks/drive", false},
        {"http://127.0.0.1@evil.example/", false},
        {"https://user@app.example.com/webhooks/drive", false},
        {"ftp://app.example.com/x", false},
        {"https://", false},
        {"https:///path", false},
        {"https://app.example.com/web hooks", false},
        {"https://app.example.com/\x01", false},
        {"", false},
        {NULL, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[160] = "";
        bool ok = push_url_ok(cases[i].url, why, sizeof(why));
        if (ok != cases[i].ok) {
            fail_msg("%s: got %d want %d", cases[i].url != NULL ? cases[i].url : "(null)", ok,
                     cases[i].ok);
        }
        if (!ok) {
            assert_true(why[0] != '\0');
        }
    }
}

static void test_renew_margin(void **state)
{
    (void)state;
    assert_int_equal(push_renew_margin_s(604800), 3600); /* a week: an hour before */
    assert_int_equal(push_renew_margin_s(86400), 3600);
    assert_int_equal(push_renew_margin_s(3600), 720); /* an hour: a fifth */
    assert_int_equal(push_renew_margin_s(6), 1);
    assert_int_equal(push_renew_margin_s(2), 1); /* at least a second */
    assert_int_equal(push_renew_margin_s(0), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_webhook_url_rule),
        cmocka_unit_test(test_renew_margin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
