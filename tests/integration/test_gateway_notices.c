/*
 * The notices routes (issue 15) on the real stack (PostgreSQL, Redis, the
 * gateway, the Google fake; Stripe for the portal link):
 *
 *   GET /api/notifications: unread first, then newest; keyset pages with an
 *   opaque cursor; unread_count; only the user's own notices; bad limit or
 *   cursor → 400.
 *   POST /api/notifications/{id}/read: the notice with read_at; someone
 *   else's (or none) → 404; a bad id → 400; CSRF as for every POST.
 *   POST /api/notifications/read: marks all; unread_count 0 after.
 *   PATCH /api/me email_opt_out: stored (sorted, no duplicates), shown by
 *   GET /api/me; unknown kinds or a non-array → 400 and nothing changes;
 *   absent → unchanged.
 *   GET /billing/portal: no session → 303 to the sign-in; a customer → 303
 *   to a fresh Stripe portal session; no customer → 303 to the dashboard.
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
static char GW[160];
static gwt_session_t alice, bob;

static int setup(void **state)
{
    (void)state;
    if (fake_start(&google, "google", NULL) != 0 || fake_start(&stripe, "stripe", NULL) != 0) {
        return -1;
    }
    static char env[2][300];
    snprintf(env[0], sizeof(env[0]), "STRIPE_SECRET_KEY=sk_test_gateway");
    snprintf(env[1], sizeof(env[1]), "STRIPE_API_URL=%s", stripe.base_url);
    const char *extra[] = {env[0], env[1], NULL};
    if (gwt_start(&gw, google.base_url, extra) != 0) {
        return -1;
    }
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
    if (gwt_sign_in(GW, "alice-n@example.com", &alice) != 0 ||
        gwt_sign_in(GW, "bob-n@example.com", &bob) != 0) {
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

/* A notice for user, created `age` minutes ago; its id in out (37 bytes). */
static void notice(const char *user, const char *kind, const char *key, int age, bool read,
                   char *out)
{
    char a[16];
    snprintf(a, sizeof(a), "%d", age);
    const char *p[] = {user, kind, key};
    char *id = sql_value("SELECT notice_raise($1::uuid, $2, $3, '{}')", 3, p);
    assert_non_null(id);
    const char *q[] = {id, a, read ? "t" : "f"};
    assert_int_equal(sql_exec("UPDATE notices SET created_at = timezone('UTC', now())"
                              "   - make_interval(mins => $2::int),"
                              "   read_at = CASE WHEN $3::boolean THEN timezone('UTC', now()) END"
                              " WHERE id = $1::uuid",
                              3, q),
                     0);
    assert_non_null(id);
    snprintf(out, 37, "%s", id);
    free(id);
}

static const char *item_id(const cJSON *list, int i)
{
    return gwt_str(cJSON_GetArrayItem(list, i), "id");
}

static void test_list_paging_unread_first(void **state)
{
    (void)state;
    /* alice: unread u1 (30 min), u2 (10 min), u3 (20 min); read r1 (1 min), r2 (40 min) */
    char u1[37], u2[37], u3[37], r1[37], r2[37], other[37];
    notice(alice.id, "folder_gone", "p-u1", 30, false, u1);
    notice(alice.id, "usage_80", "p-u2", 10, false, u2);
    notice(alice.id, "drive_revoked", "p-u3", 20, false, u3);
    notice(alice.id, "payment_failed", "p-r1", 1, true, r1);
    notice(alice.id, "usage_100", "p-r2", 40, true, r2);
    notice(bob.id, "folder_gone", "p-bob", 0, false, other);
    const char *want[] = {u2, u3, u1, r1, r2};

    char path[512] = "/api/notifications?limit=2";
    int seen = 0;
    for (int page = 0; page < 4; page++) {
        gwt_resp_t r = gwt_request(GW, "GET", path, &alice, false, NULL);
        assert_int_equal(r.status, 200);
        cJSON *list = cJSON_GetObjectItem(r.json, "notifications");
        assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(r.json, "unread_count")), 3);
        for (int i = 0; i < cJSON_GetArraySize(list); i++) {
            assert_true(seen < 5);
            assert_string_equal(item_id(list, i), want[seen]);
            seen++;
        }
        if (seen == 1 || page == 0) {
            const cJSON *first = cJSON_GetArrayItem(list, 0);
            assert_string_equal(gwt_str(first, "kind"), "usage_80");
            assert_non_null(gwt_str(first, "title"));
            assert_non_null(gwt_str(first, "message"));
            assert_true(cJSON_IsObject(cJSON_GetObjectItem(first, "data")));
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(first, "read_at")));
        }
        const cJSON *next = cJSON_GetObjectItem(r.json, "next_cursor");
        if (cJSON_IsNull(next)) {
            gwt_resp_free(&r);
            break;
        }
        snprintf(path, sizeof(path), "/api/notifications?limit=2&cursor=%s", next->valuestring);
        gwt_resp_free(&r);
    }
    assert_int_equal(seen, 5);

    /* bob sees only his */
    gwt_resp_t rb = gwt_request(GW, "GET", "/api/notifications", &bob, false, NULL);
    assert_int_equal(rb.status, 200);
    cJSON *bl = cJSON_GetObjectItem(rb.json, "notifications");
    assert_int_equal(cJSON_GetArraySize(bl), 1);
    assert_string_equal(item_id(bl, 0), other);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(rb.json, "next_cursor")));
    gwt_resp_free(&rb);

    /* bad input */
    const char *bad[] = {"/api/notifications?limit=0", "/api/notifications?limit=101",
                         "/api/notifications?limit=x", "/api/notifications?cursor=%25%25",
                         "/api/notifications?cursor=YWJj" /* "abc" */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gwt_resp_t r = gwt_request(GW, "GET", bad[i], &alice, false, NULL);
        assert_int_equal(r.status, 400);
        gwt_resp_free(&r);
    }
    gwt_resp_t anon = gwt_request(GW, "GET", "/api/notifications", NULL, false, NULL);
    assert_int_equal(anon.status, 401);
    gwt_resp_free(&anon);

    /* mark one read: it moves to the read part */
    char p1[128];
    snprintf(p1, sizeof(p1), "/api/notifications/%s/read", u2);
    gwt_resp_t m = gwt_request(GW, "POST", p1, &alice, true, NULL);
    assert_int_equal(m.status, 200);
    assert_string_equal(gwt_str(m.json, "id"), u2);
    assert_non_null(gwt_str(m.json, "read_at"));
    gwt_resp_free(&m);
    gwt_resp_t l = gwt_request(GW, "GET", "/api/notifications?limit=1", &alice, false, NULL);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(l.json, "unread_count")), 2);
    assert_string_equal(item_id(cJSON_GetObjectItem(l.json, "notifications"), 0), u3);
    gwt_resp_free(&l);

    /* someone else's notice, or none: 404, and nothing changes */
    snprintf(p1, sizeof(p1), "/api/notifications/%s/read", other);
    m = gwt_request(GW, "POST", p1, &alice, true, NULL);
    assert_int_equal(m.status, 404);
    gwt_resp_free(&m);
    const char *op[] = {other};
    char *still = sql_value("SELECT (read_at IS NULL)::text FROM notices WHERE id = $1", 1, op);
    assert_string_equal(still, "true");
    free(still);
    m = gwt_request(GW, "POST", "/api/notifications/00000000-0000-4000-8000-000000000000/read",
                    &alice, true, NULL);
    assert_int_equal(m.status, 404);
    gwt_resp_free(&m);
    m = gwt_request(GW, "POST", "/api/notifications/nope/read", &alice, true, NULL);
    assert_int_equal(m.status, 400);
    gwt_resp_free(&m);
    /* CSRF as for every POST */
    snprintf(p1, sizeof(p1), "/api/notifications/%s/read", u3);
    m = gwt_request(GW, "POST", p1, &alice, false, NULL);
    assert_int_equal(m.status, 403);
    assert_string_equal(gwt_error_code(&m), "csrf_failed");
    gwt_resp_free(&m);
    m = gwt_request(GW, "POST", "/api/notifications/read", &alice, false, NULL);
    assert_int_equal(m.status, 403);
    gwt_resp_free(&m);

    /* mark all read */
    m = gwt_request(GW, "POST", "/api/notifications/read", &alice, true, NULL);
    assert_int_equal(m.status, 200);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(m.json, "marked")), 2);
    gwt_resp_free(&m);
    l = gwt_request(GW, "GET", "/api/notifications", &alice, false, NULL);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(l.json, "unread_count")), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(l.json, "notifications")), 5);
    /* all read: newest first */
    assert_string_equal(item_id(cJSON_GetObjectItem(l.json, "notifications"), 0), r1);
    gwt_resp_free(&l);
    /* bob's is untouched */
    still = sql_value("SELECT (read_at IS NULL)::text FROM notices WHERE id = $1", 1, op);
    assert_string_equal(still, "true");
    free(still);
}

static void test_email_opt_out_setting(void **state)
{
    (void)state;
    gwt_resp_t r = gwt_request(GW, "GET", "/api/me", &alice, false, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "email_opt_out")), 0);
    gwt_resp_free(&r);
    r = gwt_request(GW, "PATCH", "/api/me", &alice, true,
                    "{\"email_opt_out\":[\"usage\",\"drive\",\"usage\"]}");
    assert_int_equal(r.status, 200);
    char *got = cJSON_PrintUnformatted(cJSON_GetObjectItem(r.json, "email_opt_out"));
    assert_string_equal(got, "[\"drive\",\"usage\"]");
    free(got);
    gwt_resp_free(&r);
    const char *p[] = {alice.id};
    char *v = sql_value("SELECT email_opt_out::text FROM users WHERE id = $1", 1, p);
    assert_string_equal(v, "{drive,usage}");
    free(v);
    /* another field alone leaves it */
    r = gwt_request(GW, "PATCH", "/api/me", &alice, true, "{\"email_notifications\":true}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    v = sql_value("SELECT email_opt_out::text FROM users WHERE id = $1", 1, p);
    assert_string_equal(v, "{drive,usage}");
    free(v);
    /* bad values: 400, nothing changes */
    const char *bad[] = {"{\"email_opt_out\":[\"usage\",\"spam\"]}",
                         "{\"email_opt_out\":\"usage\"}", "{\"email_opt_out\":[1]}",
                         "{\"email_opt_out\":null}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = gwt_request(GW, "PATCH", "/api/me", &alice, true, bad[i]);
        assert_int_equal(r.status, 400);
        gwt_resp_free(&r);
    }
    v = sql_value("SELECT email_opt_out::text FROM users WHERE id = $1", 1, p);
    assert_string_equal(v, "{drive,usage}");
    free(v);
    /* the empty set clears it */
    r = gwt_request(GW, "PATCH", "/api/me", &alice, true, "{\"email_opt_out\":[]}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    v = sql_value("SELECT email_opt_out::text FROM users WHERE id = $1", 1, p);
    assert_string_equal(v, "{}");
    free(v);
}

static void test_portal_link(void **state)
{
    (void)state;
    gwt_resp_t r = gwt_request(GW, "GET", "/billing/portal", NULL, false, NULL);
    assert_int_equal(r.status, 303);
    char *loc = gwt_header(r.headers, "Location");
    assert_string_equal(loc, "/auth/google/login");
    free(loc);
    gwt_resp_free(&r);
    /* no billing account yet: the dashboard */
    r = gwt_request(GW, "GET", "/billing/portal", &bob, false, NULL);
    assert_int_equal(r.status, 303);
    loc = gwt_header(r.headers, "Location");
    assert_string_equal(loc, "/");
    free(loc);
    gwt_resp_free(&r);
    /* a customer: a fresh portal session at Stripe */
    cJSON_Delete(fake_admin(stripe.base_url, "POST", "/__admin/seed",
                            "{\"customers\":[{\"id\":\"cus_portal_link\","
                            "\"email\":\"bob-n@example.com\"}]}"));
    const char *p[] = {bob.id};
    assert_int_equal(sql_exec("UPDATE subscriptions SET stripe_customer_id = 'cus_portal_link'"
                              " WHERE user_id = $1",
                              1, p),
                     0);
    r = gwt_request(GW, "GET", "/billing/portal", &bob, false, NULL);
    loc = gwt_header(r.headers, "Location");
    if (r.status != 303) {
        fprintf(stderr, "portal: %ld %s\n", r.status, r.body != NULL ? r.body : "");
    }
    assert_int_equal(r.status, 303);
    assert_non_null(loc);
    assert_non_null(strstr(loc, "/billing_portal/"));
    free(loc);
    gwt_resp_free(&r);
}

/* Last: the gateway exits 0 (a sanitizer's report would make it 23). */
static void test_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&gw), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_paging_unread_first),
        cmocka_unit_test(test_email_opt_out_setting),
        cmocka_unit_test(test_portal_link),
        cmocka_unit_test(test_gateway_exits_cleanly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
