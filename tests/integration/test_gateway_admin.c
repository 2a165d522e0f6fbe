/*
 * api-gateway admin analytics end to end: GET /api/admin/analytics/{mau,
 * retention,revenue,performance} against users, jobs (and jobs_archive),
 * subscriptions and usage_tracking seeded as superuser with known values; the
 * figures are checked exactly. Non-admins get 403, no session 401; bad dates
 * 400; defaults; every read writes an admin.read audit row.
 */
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
#include <time.h>

#include <cmocka.h>

static proc_t google, gw;
static char GW[160];
static gwt_session_t root, alice;

#define UA "aaaaaaaa-0000-0000-0000-00000000000a"
#define UB "bbbbbbbb-0000-0000-0000-00000000000b"
#define UC "cccccccc-0000-0000-0000-00000000000c"
#define UD "dddddddd-0000-0000-0000-00000000000d"

static int seed(void)
{
    const char *sql[] = {
        /* four users: A, B, C signed up in January 2024, D in February */
        "INSERT INTO users (id, google_id, email, created_at) VALUES"
        " ('" UA "', 'ga', 'a@seed.test', '2024-01-05 10:00'),"
        " ('" UB "', 'gb', 'b@seed.test', '2024-01-20 10:00'),"
        " ('" UC "', 'gc', 'c@seed.test', '2024-01-31 23:59:59'),"
        " ('" UD "', 'gd', 'd@seed.test', '2024-02-01 00:00')",
        /* A: ten completed portrait_pro jobs in January, 100..1000 ms */
        "INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name,"
        " status, processing_time_ms, created_at)"
        " SELECT '" UA "', 'fa' || g, 'a.jpg', 'fold', 'portrait_pro', 'completed', g * 100,"
        "        timestamp '2024-01-10' + g * interval '1 hour'"
        "   FROM generate_series(1, 10) g",
        /* A: one completed product_clean job in February (300 ms) */
        "INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status,"
        " processing_time_ms, created_at) VALUES"
        " ('" UA "', 'fa-feb', 'a.jpg', 'fold', 'product_clean', 'completed', 300, '2024-02-15'),"
        /* B: one completed product_clean job in January (200 ms), and nothing later */
        " ('" UB
        "', 'fb', 'b.jpg', 'fold', 'product_clean', 'completed', 200, '2024-01-31 23:59:59'),"
        /* C: failed jobs only (January and March): not active, but retained */
        " ('" UC "', 'fc1', 'c.jpg', 'fold', 'portrait_pro', 'failed', 50, '2024-01-31 12:00'),"
        " ('" UC "', 'fc2', 'c.jpg', 'fold', 'portrait_pro', 'failed', 50, '2024-03-02'),"
        /* outside every range asked below */
        " ('" UB
        "', 'fb-old', 'b.jpg', 'fold', 'product_clean', 'completed', 9999, '2023-12-31 23:59:59')",
        /* D: a completed landscape_vivid job in March, already archived */
        "INSERT INTO jobs_archive (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status,"
        " processing_time_ms, created_at) VALUES"
        " ('" UD "', 'fd', 'd.jpg', 'fold', 'landscape_vivid', 'completed', 400, '2024-03-20')",
        /* subscriptions: 2 creator and 1 studio active, 1 studio cancelled, 1 created later */
        "INSERT INTO subscriptions (user_id, tier, status, monthly_limit, created_at) VALUES"
        " ('" UA "', 'creator', 'active', 100, '2024-01-06'),"
        " ('" UB "', 'creator', 'active', 100, '2024-03-01'),"
        " ('" UC "', 'studio', 'active', 500, '2024-02-01'),"
        " ('" UD "', 'studio', 'cancelled', 500, '2024-02-02')",
        /* overage: 3 images (150 cents) in range, 1 (50) before it */
        "INSERT INTO usage_tracking (user_id, month, tier, monthly_limit, images_processed,"
        " images_overage, overage_charged_cents) VALUES"
        " ('" UA "', '2024-02-01', 'creator', 100, 103, 3, 150),"
        " ('" UA "', '2023-12-01', 'creator', 100, 101, 1, 50)",
    };
    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        if (sql_exec(sql[i], 0, NULL) != 0) {
            return -1;
        }
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    const char *extra[] = {"ADMIN_EMAILS=someone@example.com, Root@Example.com", NULL};
    if (fake_start(&google, "google", NULL) != 0 || gwt_start(&gw, google.base_url, extra) != 0) {
        return -1;
    }
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
    if (gwt_sign_in(GW, "root@example.com", &root) != 0 ||
        gwt_sign_in(GW, "alice@example.com", &alice) != 0) {
        return -1;
    }
    return seed();
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&gw);
    proc_stop(&google);
    return 0;
}

static long long audit_reads(void)
{
    const char *p[] = {root.id};
    char *v = sql_value(
        "SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = 'admin.read'", 1, p);
    long long n = v != NULL ? atoll(v) : -1;
    free(v);
    return n;
}

/* GET as root; asserts 200 and the echoed range. Caller frees. */
static gwt_resp_t get_ok(const char *path, const char *from, const char *to)
{
    long long before = audit_reads();
    gwt_resp_t r = gwt_request(GW, "GET", path, &root, false, NULL);
    if (r.status != 200) {
        fprintf(stderr, "%s: %ld %s\n", path, r.status, r.body);
    }
    assert_int_equal(r.status, 200);
    if (from != NULL) {
        assert_string_equal(gwt_str(r.json, "from"), from);
    }
    if (to != NULL) {
        assert_string_equal(gwt_str(r.json, "to"), to);
    }
    assert_int_equal(audit_reads(), before + 1);
    return r;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) {
        fail_msg("%s is not a number", k);
    }
    return v->valuedouble;
}

static void test_mau(void **state)
{
    (void)state;
    gwt_resp_t r = get_ok("/api/admin/analytics/mau?from=2024-01-01&to=2024-03-31", "2024-01-01",
                          "2024-03-31");
    assert_string_equal(gwt_str(r.json, "kind"), "mau");
    const cJSON *months = cJSON_GetObjectItemCaseSensitive(r.json, "months");
    assert_int_equal(cJSON_GetArraySize(months), 3);
    const char *want_m[] = {"2024-03", "2024-02", "2024-01"};
    int want_n[] = {1 /* D, archived */, 1 /* A */, 2 /* A, B; C only failed */};
    for (int i = 0; i < 3; i++) {
        const cJSON *m = cJSON_GetArrayItem(months, i);
        assert_string_equal(gwt_str(m, "month"), want_m[i]);
        assert_int_equal((int)num(m, "active_users"), want_n[i]);
    }
    gwt_resp_free(&r);
    /* the range cuts inside a month: B's job at 2024-01-31 23:59:59 is in, A's are not */
    r = get_ok("/api/admin/analytics/mau?from=2024-01-31&to=2024-01-31", NULL, NULL);
    months = cJSON_GetObjectItemCaseSensitive(r.json, "months");
    assert_int_equal(cJSON_GetArraySize(months), 1);
    assert_int_equal((int)num(cJSON_GetArrayItem(months, 0), "active_users"), 1);
    gwt_resp_free(&r);
}

static void test_retention(void **state)
{
    (void)state;
    gwt_resp_t r =
        get_ok("/api/admin/analytics/retention?from=2024-01-01&to=2024-02-29", NULL, NULL);
    const cJSON *cohorts = cJSON_GetObjectItemCaseSensitive(r.json, "cohorts");
    assert_int_equal(cJSON_GetArraySize(cohorts), 2);
    const cJSON *feb = cJSON_GetArrayItem(cohorts, 0);
    const cJSON *jan = cJSON_GetArrayItem(cohorts, 1);
    assert_string_equal(gwt_str(feb, "cohort_month"), "2024-02");
    assert_int_equal((int)num(feb, "cohort_size"), 1);
    assert_int_equal((int)num(feb, "retained_month_1"), 1); /* D: archived March job */
    assert_string_equal(gwt_str(jan, "cohort_month"), "2024-01");
    assert_int_equal((int)num(jan, "cohort_size"), 3);
    assert_int_equal((int)num(jan, "retained_month_1"), 2); /* A (Feb), C (Mar); not B */
    assert_true(num(jan, "retention_rate") > 0.6666 && num(jan, "retention_rate") < 0.6668);
    gwt_resp_free(&r);
}

static void test_revenue(void **state)
{
    (void)state;
    gwt_resp_t r = get_ok("/api/admin/analytics/revenue?from=2024-01-01&to=2024-02-29", NULL, NULL);
    const cJSON *tiers = cJSON_GetObjectItemCaseSensitive(r.json, "tiers");
    assert_int_equal(cJSON_GetArraySize(tiers), 3);
    const char *names[] = {"free", "creator", "studio"};
    int subs[] = {0, 1 /* B's starts in March */, 1 /* D's is cancelled */};
    int revenue[] = {0, 29, 99};
    for (int i = 0; i < 3; i++) {
        const cJSON *t = cJSON_GetArrayItem(tiers, i);
        assert_string_equal(gwt_str(t, "tier"), names[i]);
        assert_int_equal((int)num(t, "subscribers"), subs[i]);
        assert_int_equal((int)num(t, "monthly_revenue"), revenue[i]);
    }
    assert_int_equal((int)num(r.json, "total_monthly_revenue"), 128);
    assert_int_equal((int)num(r.json, "subscribers"), 2);
    assert_int_equal((int)num(r.json, "overage_charged_cents"), 150);
    assert_int_equal((int)num(r.json, "overage_images"), 3);
    gwt_resp_free(&r);
    r = get_ok("/api/admin/analytics/revenue?from=2024-01-01&to=2024-03-31", NULL, NULL);
    assert_int_equal(
        (int)num(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.json, "tiers"), 1),
                 "monthly_revenue"),
        58);
    gwt_resp_free(&r);
}

static void test_performance(void **state)
{
    (void)state;
    gwt_resp_t r =
        get_ok("/api/admin/analytics/performance?from=2024-01-01&to=2024-01-31", NULL, NULL);
    const cJSON *presets = cJSON_GetObjectItemCaseSensitive(r.json, "presets");
    assert_int_equal(cJSON_GetArraySize(presets), 2);
    const cJSON *pp = cJSON_GetArrayItem(presets, 0);
    assert_string_equal(gwt_str(pp, "preset_name"), "portrait_pro");
    assert_int_equal((int)num(pp, "total_jobs"), 10);
    assert_true(num(pp, "avg_time_ms") == 550.0);
    assert_true(num(pp, "p95_time_ms") == 955.0); /* 900 + 0.55 * 100 */
    const cJSON *pc = cJSON_GetArrayItem(presets, 1);
    assert_string_equal(gwt_str(pc, "preset_name"), "product_clean");
    assert_int_equal((int)num(pc, "total_jobs"), 1);
    assert_true(num(pc, "p95_time_ms") == 200.0);
    gwt_resp_free(&r);
    /* February..March: product_clean (A, 300) and the archived landscape_vivid (400) */
    r = get_ok("/api/admin/analytics/performance?from=2024-02-01&to=2024-03-31", NULL, NULL);
    presets = cJSON_GetObjectItemCaseSensitive(r.json, "presets");
    assert_int_equal(cJSON_GetArraySize(presets), 2);
    assert_string_equal(gwt_str(cJSON_GetArrayItem(presets, 0), "preset_name"), "landscape_vivid");
    assert_true(num(cJSON_GetArrayItem(presets, 0), "avg_time_ms") == 400.0);
    gwt_resp_free(&r);
}

static void day_string(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d", &tm);
}

static void test_defaults(void **state)
{
    (void)state;
    time_t now = time(NULL);
    char today[32], week[32], first[32];
    day_string(now, today, sizeof(today));
    day_string(now - 6 * 86400, week, sizeof(week));
    struct tm tm;
    gmtime_r(&now, &tm);
    int m = tm.tm_year * 12 + tm.tm_mon - 11;
    snprintf(first, sizeof(first), "%04d-%02d-01", m / 12 + 1900, m % 12 + 1);

    gwt_resp_t r = get_ok("/api/admin/analytics/mau", first, today);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "months")), 12);
    gwt_resp_free(&r);
    r = get_ok("/api/admin/analytics/performance", week, today);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "presets")), 0);
    gwt_resp_free(&r);
    r = get_ok("/api/admin/analytics/retention?to=2024-02-29", "2023-03-01", "2024-02-29");
    gwt_resp_free(&r);
    r = get_ok("/api/admin/analytics/revenue?from=2024-01-01", "2024-01-01", today);
    gwt_resp_free(&r);
}

static void expect_status(const gwt_session_t *s, const char *path, long status, const char *code)
{
    gwt_resp_t r = gwt_request(GW, "GET", path, s, false, NULL);
    if (r.status != status) {
        fprintf(stderr, "%s: %ld %s\n", path, r.status, r.body);
    }
    assert_int_equal(r.status, status);
    assert_non_null(gwt_error_code(&r));
    assert_string_equal(gwt_error_code(&r), code);
    gwt_resp_free(&r);
}

static void test_bad_dates(void **state)
{
    (void)state;
    long long before = audit_reads();
    const char *bad[] = {
        "?from=2024-13-01",
        "?from=2024-02-30",
        "?to=abc",
        "?from=2024-1-01",
        "?from=2024-01-01x",
        "?to=2024-02-29T00:00",
        "?from=2024-03-01&to=2024-02-01",
        "?from=2000-01-01&to=2024-01-01",
        "?from=1969-12-31",
    };
    const char *kinds[] = {"mau", "retention", "revenue", "performance"};
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            char path[256];
            snprintf(path, sizeof(path), "/api/admin/analytics/%s%s", kinds[k], bad[i]);
            expect_status(&root, path, 400, "invalid_request");
        }
    }
    /* a leap day is a real day */
    gwt_resp_t r = get_ok("/api/admin/analytics/mau?from=2024-02-29&to=2024-02-29", NULL, NULL);
    gwt_resp_free(&r);
    assert_int_equal(audit_reads(), before + 1);
}

static void test_not_admin(void **state)
{
    (void)state;
    long long before = audit_reads();
    const char *kinds[] = {"mau", "retention", "revenue", "performance"};
    for (size_t k = 0; k < 4; k++) {
        char path[128];
        snprintf(path, sizeof(path), "/api/admin/analytics/%s", kinds[k]);
        expect_status(&alice, path, 403, "forbidden");
        expect_status(NULL, path, 401, "unauthorized");
    }
    const char *p[] = {alice.id};
    char *v = sql_value(
        "SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = 'admin.read'", 1, p);
    assert_string_equal(v, "0");
    free(v);
    assert_int_equal(audit_reads(), before);
    /* the audit row says who, what and the range */
    const char *q[] = {root.id};
    v = sql_value("SELECT actor || ' ' || target || ' ' || (details->>'from') FROM audit_log"
                  " WHERE user_id = $1 AND action = 'admin.read' ORDER BY id LIMIT 1",
                  1, q);
    assert_string_equal(v, "admin:root@example.com analytics:mau 2024-01-01");
    free(v);
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
        cmocka_unit_test(test_mau),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_revenue),
        cmocka_unit_test(test_performance),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bad_dates),
        cmocka_unit_test(test_not_admin),
        cmocka_unit_test(test_gateway_exits_cleanly), /* last: stops the gateway */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
