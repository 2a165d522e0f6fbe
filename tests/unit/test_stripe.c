/*
 * Unit tests for common/stripe: webhook signature verification (a table of
 * headers; the reference signatures were produced by npm stripe's
 * webhooks.generateTestHeaderString), status classification names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "stripe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAYLOAD "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"invoice.paid\"}"
#define T0 1700000000LL
/* From npm stripe: generateTestHeaderString({payload, secret, timestamp: T0}). */
#define SIG_TEST "dfb4777aaaec4ea29ff455dd4df7fe6b2ef71096ad3a93a158db7e100109ea91"
#define SIG_NEW "4b1cf3c84ca83c4204d2591bdc0f68c14855c66e01271767b37a0fbe7501f692"
#define SIG_FORGED "0fb4777aaaec4ea29ff455dd4df7fe6b2ef71096ad3a93a158db7e100109ea91"

typedef struct {
    const char *name;
    const char *header;
    const char *secrets;
    const char *payload; /* NULL: PAYLOAD */
    long long now;
    stripe_sig_result_t want;
} sig_case_t;

static const sig_case_t sig_cases[] = {
    {"valid", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0, STRIPE_SIG_OK},
    {"valid, 299 s old", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0 + 299,
     STRIPE_SIG_OK},
    {"valid, exactly 300 s old", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0 + 300,
     STRIPE_SIG_OK},
    {"stale, 301 s old", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0 + 301,
     STRIPE_SIG_STALE},
    {"stale, a day old", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0 + 86400,
     STRIPE_SIG_STALE},
    {"future within tolerance", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0 - 200,
     STRIPE_SIG_OK},
    {"future beyond tolerance", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0 - 301,
     STRIPE_SIG_FUTURE},
    {"forged signature", "t=1700000000,v1=" SIG_FORGED, "whsec_test_secret", NULL, T0,
     STRIPE_SIG_MISMATCH},
    {"altered body", "t=1700000000,v1=" SIG_TEST, "whsec_test_secret",
     "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"invoice.paid\" }", T0, STRIPE_SIG_MISMATCH},
    {"altered timestamp", "t=1700000001,v1=" SIG_TEST, "whsec_test_secret", NULL, T0,
     STRIPE_SIG_MISMATCH},
    {"wrong secret", "t=1700000000,v1=" SIG_TEST, "whsec_other", NULL, T0, STRIPE_SIG_MISMATCH},
    {"secret without prefix is a different key", "t=1700000000,v1=" SIG_TEST, "test_secret", NULL,
     T0, STRIPE_SIG_MISMATCH},
    {"rotated list: old secret signs", "t=1700000000,v1=" SIG_TEST,
     "whsec_rotated_new,whsec_test_secret", NULL, T0, STRIPE_SIG_OK},
    {"rotated list: new secret signs", "t=1700000000,v1=" SIG_NEW,
     "whsec_test_secret, whsec_rotated_new", NULL, T0, STRIPE_SIG_OK},
    {"rotated list: neither", "t=1700000000,v1=" SIG_FORGED, "whsec_test_secret,whsec_rotated_new",
     NULL, T0, STRIPE_SIG_MISMATCH},
    {"multiple v1, second matches", "t=1700000000,v1=" SIG_FORGED ",v1=" SIG_TEST,
     "whsec_test_secret", NULL, T0, STRIPE_SIG_OK},
    {"multiple v1 (both secrets sign), one secret configured",
     "t=1700000000,v1=" SIG_NEW ",v1=" SIG_TEST, "whsec_test_secret", NULL, T0, STRIPE_SIG_OK},
    {"v0 ignored", "t=1700000000,v0=" SIG_TEST, "whsec_test_secret", NULL, T0, STRIPE_SIG_NO_V1},
    {"v0 plus valid v1, any order", "v0=abc,v1=" SIG_TEST ",t=1700000000,x=1", "whsec_test_secret",
     NULL, T0, STRIPE_SIG_OK},
    {"spaces around items", " t=1700000000 , v1=" SIG_TEST " ", "whsec_test_secret", NULL, T0,
     STRIPE_SIG_OK},
    {"uppercase hex is not Stripe's",
     "t=1700000000,v1=DFB4777AAAEC4EA29FF455DD4DF7FE6B2EF71096AD3A93A158DB7E100109EA91",
     "whsec_test_secret", NULL, T0, STRIPE_SIG_MISMATCH},
    {"truncated v1", "t=1700000000,v1=dfb4777a", "whsec_test_secret", NULL, T0,
     STRIPE_SIG_MISMATCH},
    {"missing t", "v1=" SIG_TEST, "whsec_test_secret", NULL, T0, STRIPE_SIG_MALFORMED},
    {"empty t", "t=,v1=" SIG_TEST, "whsec_test_secret", NULL, T0, STRIPE_SIG_MALFORMED},
    {"non-numeric t", "t=17000000x0,v1=" SIG_TEST, "whsec_test_secret", NULL, T0,
     STRIPE_SIG_MALFORMED},
    {"negative t", "t=-1700000000,v1=" SIG_TEST, "whsec_test_secret", NULL, T0,
     STRIPE_SIG_MALFORMED},
    {"two t values", "t=1700000000,t=1700000001,v1=" SIG_TEST, "whsec_test_secret", NULL, T0,
     STRIPE_SIG_MALFORMED},
    {"no v1", "t=1700000000", "whsec_test_secret", NULL, T0, STRIPE_SIG_NO_V1},
    {"empty header", "", "whsec_test_secret", NULL, T0, STRIPE_SIG_MALFORMED},
    {"garbage header", "garbage", "whsec_test_secret", NULL, T0, STRIPE_SIG_MALFORMED},
    {"only commas", ",,,", "whsec_test_secret", NULL, T0, STRIPE_SIG_MALFORMED},
    {"no secrets configured", "t=1700000000,v1=" SIG_TEST, "", NULL, T0, STRIPE_SIG_MISMATCH},
    {"empty list items skipped", "t=1700000000,v1=" SIG_TEST, ",,whsec_test_secret,", NULL, T0,
     STRIPE_SIG_OK},
};

static void test_signature_table(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(sig_cases) / sizeof(sig_cases[0]); i++) {
        const sig_case_t *c = &sig_cases[i];
        const char *payload = c->payload != NULL ? c->payload : PAYLOAD;
        char err[160] = "";
        stripe_sig_result_t got = stripe_verify_signature(payload, strlen(payload), c->header,
                                                          c->secrets, 300, c->now, err, sizeof err);
        if (got != c->want) {
            fprintf(stderr, "case '%s': got %s (%s), want %s\n", c->name,
                    stripe_sig_result_name(got), err, stripe_sig_result_name(c->want));
            failures++;
        }
        if (got != STRIPE_SIG_OK && err[0] == '\0') {
            fprintf(stderr, "case '%s': no error message\n", c->name);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static void test_null_header(void **state)
{
    (void)state;
    char err[128];
    assert_int_equal(stripe_verify_signature(PAYLOAD, strlen(PAYLOAD), NULL, "whsec_x", 300, T0,
                                             err, sizeof err),
                     STRIPE_SIG_MALFORMED);
    assert_string_equal(err, "Unable to extract timestamp and signatures from header");
    /* err may be NULL */
    assert_int_equal(
        stripe_verify_signature(PAYLOAD, strlen(PAYLOAD), "t=1", "whsec_x", 300, T0, NULL, 0),
        STRIPE_SIG_NO_V1);
}

static void test_default_tolerance(void **state)
{
    (void)state;
    const char *h = "t=1700000000,v1=" SIG_TEST;
    assert_int_equal(stripe_verify_signature(PAYLOAD, strlen(PAYLOAD), h, "whsec_test_secret", 0,
                                             T0 + 300, NULL, 0),
                     STRIPE_SIG_OK);
    assert_int_equal(stripe_verify_signature(PAYLOAD, strlen(PAYLOAD), h, "whsec_test_secret", 0,
                                             T0 + 301, NULL, 0),
                     STRIPE_SIG_STALE);
    /* a wider tolerance accepts it */
    assert_int_equal(stripe_verify_signature(PAYLOAD, strlen(PAYLOAD), h, "whsec_test_secret", 3600,
                                             T0 + 3000, NULL, 0),
                     STRIPE_SIG_OK);
}

/* The body is compared byte for byte: an embedded NUL counts. */
static void test_binary_payload(void **state)
{
    (void)state;
    const char body[] = {'{', '}', '\0', 'x'};
    char sig[65];
    stripe_compute_signature("whsec_bin", T0, body, sizeof body, sig);
    char header[128];
    snprintf(header, sizeof header, "t=%lld,v1=%s", T0, sig);
    assert_int_equal(
        stripe_verify_signature(body, sizeof body, header, "whsec_bin", 300, T0, NULL, 0),
        STRIPE_SIG_OK);
    assert_int_equal(stripe_verify_signature(body, 2, header, "whsec_bin", 300, T0, NULL, 0),
                     STRIPE_SIG_MISMATCH);
}

static void test_compute_matches_stripe_node(void **state)
{
    (void)state;
    char sig[65];
    stripe_compute_signature("whsec_test_secret", T0, PAYLOAD, strlen(PAYLOAD), sig);
    assert_string_equal(sig, SIG_TEST);
    stripe_compute_signature("whsec_rotated_new", T0, PAYLOAD, strlen(PAYLOAD), sig);
    assert_string_equal(sig, SIG_NEW);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(stripe_status_name(STRIPE_OK), "ok");
    assert_string_equal(stripe_status_name(STRIPE_ERR_SERVER), "server_error");
    assert_string_equal(stripe_status_name((stripe_status_t)99), "unknown");
    assert_true(stripe_status_transient(STRIPE_ERR_SERVER));
    assert_true(stripe_status_transient(STRIPE_ERR_RATE_LIMITED));
    assert_true(stripe_status_transient(STRIPE_ERR_NETWORK));
    assert_true(stripe_status_transient(STRIPE_ERR_CONFLICT));
    assert_false(stripe_status_transient(STRIPE_ERR_INVALID));
    assert_false(stripe_status_transient(STRIPE_ERR_AUTH));
    assert_false(stripe_status_transient(STRIPE_ERR_IDEMPOTENCY));
    assert_false(stripe_status_transient(STRIPE_OK));
}

static void test_client_new_requires_key_and_url(void **state)
{
    (void)state;
    stripe_config_t cfg = {.secret_key = "sk_test_x", .api_url = NULL};
    assert_null(stripe_client_new(&cfg));
    cfg.api_url = "http://127.0.0.1:1/";
    cfg.secret_key = "";
    assert_null(stripe_client_new(&cfg));
    cfg.secret_key = "sk_test_x";
    stripe_client_t *sc = stripe_client_new(&cfg);
    assert_non_null(sc);
    /* Nothing listens on port 1: a network error, classified transient. */
    stripe_error_t err;
    bool dup = true;
    stripe_meter_event_t ev = {"image_overage", "cus_1", 1, "job-1", 0};
    stripe_status_t st = stripe_create_meter_event(sc, &ev, &dup, &err);
    assert_int_equal(st, STRIPE_ERR_NETWORK);
    assert_false(dup);
    assert_true(stripe_status_transient(st));
    /* Missing identifier: refused before any request. */
    ev.identifier = NULL;
    assert_int_equal(stripe_create_meter_event(sc, &ev, NULL, NULL), STRIPE_ERR_INTERNAL);
    stripe_client_free(sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_table),
        cmocka_unit_test(test_null_header),
        cmocka_unit_test(test_default_tolerance),
        cmocka_unit_test(test_binary_payload),
        cmocka_unit_test(test_compute_matches_stripe_node),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_client_new_requires_key_and_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
