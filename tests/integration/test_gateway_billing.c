/*
 * api-gateway billing routes end to end against the Stripe fake:
 * POST /api/billing/checkout and /api/billing/portal — what Stripe receives
 * (price, client_reference_id, customer or customer_email, URLs, an
 * Idempotency-Key that makes a repeated click return the same session), the
 * 409 paths (already on the tier, other paid tier, no customer), input
 * validation, no session / CSRF, Stripe failing (502 in our error shape) and
 * not configured (503), and the audit rows.
 */
#include "fake_admin.h"
#include "gw_session.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static proc_t google, stripe, gw;
static char GW[160], ST[160];
static gwt_session_t alice, bob, carol, dave;

static const char *const PRICE_CREATOR = "price_basic_monthly";
static const char *const PRICE_STUDIO = "price_pro_monthly";

/* ---- the fake ---- */

static void stripe_admin(const char *method, const char *path, const char *body)
{
    cJSON_Delete(fake_admin(ST, method, path, body));
}

/* The newest request the fake recorded for `path` (a new object), or NULL. */
static cJSON *last_request(const char *path)
{
    cJSON *all = fake_requests(ST, 0);
    cJSON *list = cJSON_GetObjectItemCaseSensitive(all, "requests");
    cJSON *found = NULL;
    for (int i = cJSON_GetArraySize(list) - 1; i >= 0 && found == NULL; i--) {
        cJSON *r = cJSON_GetArrayItem(list, i);
        if (strcmp(gwt_str(r, "path"), path) == 0) {
            found = cJSON_Duplicate(r, true);
        }
    }
    cJSON_Delete(all);
    return found;
}

static const cJSON *params_of(const cJSON *req)
{
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(req, "note");
    assert_non_null(note);
    return cJSON_GetObjectItemCaseSensitive(note, "params");
}

/* ---- helpers ---- */

static gwt_resp_t post(const char *path, const gwt_session_t *s, const char *body)
{
    return gwt_request(GW, "POST", path, s, s != NULL, body);
}

static void expect(gwt_resp_t r, long status, const char *code)
{
    if (r.status != status) {
        fprintf(stderr, "want %ld %s, got %ld: %s\n", status, code, r.status, r.body ? r.body : "");
    }
    assert_int_equal(r.status, status);
    assert_non_null(gwt_error_code(&r));
    assert_string_equal(gwt_error_code(&r), code);
    /* our error shape: {"error":{"code","message"}} */
    assert_non_null(gwt_str(cJSON_GetObjectItemCaseSensitive(r.json, "error"), "message"));
    gwt_resp_free(&r);
}

static void set_subscription(const gwt_session_t *s, const char *tier, const char *status,
                             const char *customer)
{
    const char *p[] = {s->id, tier, status, customer};
    assert_int_equal(sql_exec("UPDATE subscriptions SET tier = $2::text, status = $3,"
                              " monthly_limit = CASE $2::text WHEN 'creator' THEN 100 WHEN 'studio'"
                              " THEN 500 ELSE 10 END, stripe_customer_id = $4 WHERE user_id = $1",
                              4, p),
                     0);
}

typedef struct {
    const char *user_id;
    const char *action;
    int want;
} audit_wait_t;

static bool audit_count_is(void *arg)
{
    audit_wait_t *w = arg;
    const char *p[] = {w->user_id, w->action};
    char *v = sql_value("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = $2", 2, p);
    bool ok = v != NULL && atoi(v) == w->want;
    free(v);
    return ok;
}

static void start_gateway(proc_t *p, bool with_stripe)
{
    static char env[4][300];
    snprintf(env[0], sizeof(env[0]), "STRIPE_SECRET_KEY=%s", with_stripe ? "sk_test_gateway" : "");
    snprintf(env[1], sizeof(env[1]), "STRIPE_API_URL=%s", ST);
    snprintf(env[2], sizeof(env[2]), "STRIPE_PRICE_CREATOR=%s", PRICE_CREATOR);
    snprintf(env[3], sizeof(env[3]), "STRIPE_PRICE_STUDIO=%s", PRICE_STUDIO);
    const char *extra[] = {env[0], env[1], env[2], env[3], NULL};
    assert_int_equal(gwt_start(p, google.base_url, extra), 0);
}

static int setup(void **state)
{
    (void)state;
    if (fake_start(&google, "google", NULL) != 0 || fake_start(&stripe, "stripe", NULL) != 0) {
        return -1;
    }
    snprintf(ST, sizeof(ST), "%s", stripe.base_url);
    start_gateway(&gw, true);
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
    if (gwt_sign_in(GW, "alice@example.com", &alice) != 0 ||
        gwt_sign_in(GW, "bob@example.com", &bob) != 0 ||
        gwt_sign_in(GW, "carol@example.com", &carol) != 0 ||
        gwt_sign_in(GW, "dave@example.com", &dave) != 0) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&gw);
    proc_stop(&stripe);
    proc_stop(&google);
    return 0;
}

/* ---- tests ---- */

static void test_checkout_new_customer(void **state)
{
    (void)state;
    gwt_resp_t r = post("/api/billing/checkout", &carol, "{\"tier\":\"creator\"}");
    if (r.status != 200) {
        proc_print_log(&gw);
    }
    assert_int_equal(r.status, 200);
    const char *url = gwt_str(r.json, "url");
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s/checkout/cs_", ST);
    assert_non_null(url);
    assert_true(strncmp(url, prefix, strlen(prefix)) == 0);
    char *first_url = strdup(url);
    gwt_resp_free(&r);

    cJSON *req = last_request("/v1/checkout/sessions");
    const cJSON *prm = params_of(req);
    assert_string_equal(gwt_str(prm, "mode"), "subscription");
    assert_string_equal(gwt_str(prm, "client_reference_id"), carol.id);
    assert_string_equal(gwt_str(prm, "customer_email"), "carol@example.com");
    assert_null(cJSON_GetObjectItemCaseSensitive(prm, "customer"));
    const cJSON *item = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(prm, "line_items"), 0);
    assert_string_equal(gwt_str(item, "price"), PRICE_CREATOR);
    assert_string_equal(gwt_str(item, "quantity"), "1");
    char want[256];
    snprintf(want, sizeof(want), "%s/?checkout=success", GW);
    assert_string_equal(gwt_str(prm, "success_url"), want);
    snprintf(want, sizeof(want), "%s/?checkout=cancel", GW);
    assert_string_equal(gwt_str(prm, "cancel_url"), want);
    const char *key = gwt_str(cJSON_GetObjectItemCaseSensitive(req, "note"), "idempotency_key");
    assert_non_null(key);
    assert_true(strncmp(key, "ca-co-", 6) == 0);
    char *first_key = strdup(key);
    cJSON_Delete(req);

    audit_wait_t w = {carol.id, "billing.checkout", 1};
    assert_true(wait_until(audit_count_is, &w, 5000));

    /* a second click: the same key, Stripe replays the same session */
    r = post("/api/billing/checkout", &carol, "{\"tier\":\"creator\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "url"), first_url);
    gwt_resp_free(&r);
    req = last_request("/v1/checkout/sessions");
    assert_string_equal(gwt_str(cJSON_GetObjectItemCaseSensitive(req, "note"), "idempotency_key"),
                        first_key);
    cJSON_Delete(req);

    /* the other tier: its own price, another key, another session */
    r = post("/api/billing/checkout", &carol, "{\"tier\":\"studio\"}");
    assert_int_equal(r.status, 200);
    assert_string_not_equal(gwt_str(r.json, "url"), first_url);
    gwt_resp_free(&r);
    req = last_request("/v1/checkout/sessions");
    item = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(params_of(req), "line_items"), 0);
    assert_string_equal(gwt_str(item, "price"), PRICE_STUDIO);
    assert_string_not_equal(
        gwt_str(cJSON_GetObjectItemCaseSensitive(req, "note"), "idempotency_key"), first_key);
    cJSON_Delete(req);
    free(first_url);
    free(first_key);
}

static void test_checkout_reuses_customer(void **state)
{
    (void)state;
    stripe_admin("POST", "/__admin/seed",
                 "{\"customers\":[{\"id\":\"cus_bob\",\"email\":\"bob@example.com\"}]}");
    /* bob had a plan once: free again, the customer kept */
    set_subscription(&bob, "free", "active", "cus_bob");
    gwt_resp_t r = post("/api/billing/checkout", &bob, "{\"tier\":\"studio\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    cJSON *req = last_request("/v1/checkout/sessions");
    const cJSON *prm = params_of(req);
    assert_string_equal(gwt_str(prm, "customer"), "cus_bob");
    assert_null(cJSON_GetObjectItemCaseSensitive(prm, "customer_email"));
    assert_string_equal(gwt_str(prm, "client_reference_id"), bob.id);
    cJSON_Delete(req);
    /* a cancelled creator may subscribe to creator again */
    set_subscription(&bob, "creator", "cancelled", "cus_bob");
    r = post("/api/billing/checkout", &bob, "{\"tier\":\"creator\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
}

static void test_checkout_conflicts(void **state)
{
    (void)state;
    stripe_admin("POST", "/__admin/seed",
                 "{\"customers\":[{\"id\":\"cus_alice\",\"email\":\"alice@example.com\"}]}");
    int before = fake_count_requests(ST, &(fake_match_t){.path = "/v1/checkout/sessions"});
    const char *in_force[] = {"active", "trialing", "past_due"};
    for (size_t i = 0; i < 3; i++) {
        set_subscription(&alice, "creator", in_force[i], "cus_alice");
        expect(post("/api/billing/checkout", &alice, "{\"tier\":\"creator\"}"), 409,
               "already_subscribed");
        expect(post("/api/billing/checkout", &alice, "{\"tier\":\"studio\"}"), 409,
               "change_in_portal");
    }
    set_subscription(&alice, "studio", "active", "cus_alice");
    expect(post("/api/billing/checkout", &alice, "{\"tier\":\"studio\"}"), 409,
           "already_subscribed");
    assert_int_equal(fake_count_requests(ST, &(fake_match_t){.path = "/v1/checkout/sessions"}),
                     before);
}

static void test_validation_auth_csrf(void **state)
{
    (void)state;
    int before = fake_count_requests(ST, &(fake_match_t){.path = "/v1/checkout/sessions"});
    const char *bad[] = {"{\"tier\":\"free\"}",
                         "{\"tier\":\"gold\"}",
                         "{\"tier\":5}",
                         "{}",
                         "{\"tier\":\"creator\",\"coupon\":\"x\"}",
                         "{\"tier\":\"Creator\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect(post("/api/billing/checkout", &dave, bad[i]), 400, "invalid_request");
    }
    expect(post("/api/billing/checkout", &dave, "{\"tier\":"), 400, "invalid_json");
    expect(post("/api/billing/portal", &dave, "{\"x\":1}"), 400, "invalid_request");
    /* no session */
    expect(gwt_request(GW, "POST", "/api/billing/checkout", NULL, false, "{\"tier\":\"creator\"}"),
           401, "unauthorized");
    expect(gwt_request(GW, "POST", "/api/billing/portal", NULL, false, NULL), 401, "unauthorized");
    /* signed in, no CSRF token, no same-origin header */
    expect(gwt_request(GW, "POST", "/api/billing/checkout", &dave, false, "{\"tier\":\"creator\"}"),
           403, "csrf_failed");
    expect(gwt_request(GW, "POST", "/api/billing/portal", &dave, false, NULL), 403, "csrf_failed");
    /* wrong method */
    gwt_resp_t r = gwt_request(GW, "GET", "/api/billing/checkout", &dave, false, NULL);
    assert_int_equal(r.status, 405);
    gwt_resp_free(&r);
    assert_int_equal(fake_count_requests(ST, &(fake_match_t){.path = "/v1/checkout/sessions"}),
                     before);
}

static void test_portal(void **state)
{
    (void)state;
    expect(post("/api/billing/portal", &dave, NULL), 409, "no_customer");
    set_subscription(&alice, "creator", "active", "cus_alice");
    gwt_resp_t r = post("/api/billing/portal", &alice, NULL);
    assert_int_equal(r.status, 200);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s/billing_portal/bps_", ST);
    assert_true(strncmp(gwt_str(r.json, "url"), prefix, strlen(prefix)) == 0);
    gwt_resp_free(&r);
    cJSON *req = last_request("/v1/billing_portal/sessions");
    const cJSON *prm = params_of(req);
    assert_string_equal(gwt_str(prm, "customer"), "cus_alice");
    char want[256];
    snprintf(want, sizeof(want), "%s/", GW);
    assert_string_equal(gwt_str(prm, "return_url"), want);
    cJSON_Delete(req);
    audit_wait_t w = {alice.id, "billing.portal", 1};
    assert_true(wait_until(audit_count_is, &w, 5000));
    /* a past_due user reaches the portal to fix the card */
    set_subscription(&alice, "creator", "past_due", "cus_alice");
    r = post("/api/billing/portal", &alice, "{}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
}

static void test_stripe_down(void **state)
{
    (void)state;
    set_subscription(&dave, "free", "active", NULL);
    fake_add_fault(ST, "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/checkout/sessions\"},"
                       "\"action\":\"status\",\"status\":500}");
    fake_add_fault(ST, "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/billing_portal/sessions\"},"
                       "\"action\":\"status\",\"status\":503}");
    gwt_resp_t r = post("/api/billing/checkout", &dave, "{\"tier\":\"creator\"}");
    char *ra = gwt_header(r.headers, "Retry-After");
    assert_non_null(ra);
    free(ra);
    expect(r, 502, "stripe_unavailable");
    set_subscription(&alice, "creator", "active", "cus_alice");
    expect(post("/api/billing/portal", &alice, NULL), 502, "stripe_unavailable");
    fake_clear_faults(ST);
    /* Stripe refusing the key: not transient */
    fake_add_fault(ST, "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/checkout/sessions\"},"
                       "\"count\":1,\"action\":\"status\",\"status\":401}");
    expect(post("/api/billing/checkout", &dave, "{\"tier\":\"creator\"}"), 502, "stripe_error");
    /* unreachable: the connection dropped */
    fake_add_fault(ST, "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/checkout/sessions\"},"
                       "\"action\":\"drop\"}");
    expect(post("/api/billing/checkout", &dave, "{\"tier\":\"creator\"}"), 502,
           "stripe_unavailable");
    fake_clear_faults(ST);
    /* recovered: the same request works (no audit row was written for the failures) */
    audit_wait_t w = {dave.id, "billing.checkout", 0};
    assert_true(audit_count_is(&w));
    r = post("/api/billing/checkout", &dave, "{\"tier\":\"creator\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    w.want = 1;
    assert_true(wait_until(audit_count_is, &w, 5000));
}

static void test_not_configured(void **state)
{
    (void)state;
    proc_t gw2;
    start_gateway(&gw2, false);
    gwt_session_t s;
    assert_int_equal(gwt_sign_in(gw2.base_url, "erin@example.com", &s), 0);
    gwt_resp_t r = gwt_request(gw2.base_url, "POST", "/api/billing/checkout", &s, true,
                               "{\"tier\":\"studio\"}");
    assert_int_equal(r.status, 503);
    assert_string_equal(gwt_error_code(&r), "billing_unavailable");
    gwt_resp_free(&r);
    assert_int_equal(daemon_stop(&gw2), 0);
}

/* Last: SIGTERM, and the gateway exits 0 (a sanitizer's report would not). */
static void test_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&gw), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkout_new_customer),
        cmocka_unit_test(test_checkout_reuses_customer),
        cmocka_unit_test(test_checkout_conflicts),
        cmocka_unit_test(test_validation_auth_csrf),
        cmocka_unit_test(test_portal),
        cmocka_unit_test(test_stripe_down),
        cmocka_unit_test(test_not_configured),
        cmocka_unit_test(test_gateway_exits_cleanly), /* last: stops the gateway */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
