/*
 * The account is the user's (issue 15), end to end on the real stack
 * (PostgreSQL, Redis, the gateway, the Google and Stripe fakes):
 *
 *   GET /api/me/export: an attachment holding the user's profile, settings,
 *   watched folders, presets, jobs (an archived one too), usage, ratings,
 *   adoptions, notices and audit rows; no token (neither the plaintexts nor
 *   the sealed "v2:" envelopes), nothing of another user; an account.export
 *   audit row.
 *
 *   DELETE /api/me: the confirmation (missing, wrong, other fields → 400,
 *   nothing changes); Google failing, then Stripe failing → 502 with the
 *   account marked, polling stopped and jobs cancelled but every row still
 *   there; then the retry: the Google fake saw the revoke (the refresh token
 *   is dead), the Stripe fake's subscription is cancel_at_period_end, no row
 *   of any table with a user_id column holds the user (audit_log and
 *   meter_outbox keep theirs with user_id NULL and no IP: the documented
 *   exceptions), the sessions are gone, and the other user is untouched.
 */
#include "crypto.h"
#include "fake_admin.h"
#include "gw_session.h"
#include "http_client.h"
#include "pg.h"
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

static proc_t google, stripe, gw;
static char GW[160], ST[160], GO[160];
/* EXPORT_MAX_ROWS of the test gateway: small, so a list can pass it. */
#define EXPORT_CAP 4

static int setup(void **state)
{
    (void)state;
    if (fake_start(&google, "google", NULL) != 0 || fake_start(&stripe, "stripe", NULL) != 0) {
        return -1;
    }
    snprintf(ST, sizeof(ST), "%s", stripe.base_url);
    snprintf(GO, sizeof(GO), "%s", google.base_url);
    static char env[5][300];
    snprintf(env[0], sizeof(env[0]), "STRIPE_SECRET_KEY=sk_test_gateway");
    snprintf(env[1], sizeof(env[1]), "STRIPE_API_URL=%s", ST);
    snprintf(env[2], sizeof(env[2]), "STRIPE_PRICE_CREATOR=price_basic_monthly");
    snprintf(env[3], sizeof(env[3]), "STRIPE_PRICE_STUDIO=price_pro_monthly");
    snprintf(env[4], sizeof(env[4]), "EXPORT_MAX_ROWS=%d", EXPORT_CAP);
    const char *extra[] = {env[0], env[1], env[2], env[3], env[4], NULL};
    if (gwt_start(&gw, google.base_url, extra) != 0) {
        return -1;
    }
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
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

/* ---- helpers ---- */

static void exec_ok(const char *sql, int n, const char *const *p)
{
    if (sql_exec(sql, n, p) != 0) {
        fail_msg("SQL failed: %s", sql);
    }
}

static long count_of(const char *sql, int n, const char *const *p)
{
    char *v = sql_value(sql, n, p);
    assert_non_null(v);
    long c = atol(v);
    free(v);
    return c;
}

/* The user's tokens: sealed (as stored) and opened. */
typedef struct {
    char *sealed[2];
    char *plain[2];
} tokens_t;

static void tokens_read(const char *user_id, tokens_t *t)
{
    char err[256];
    crypto_keyring_t *keys = crypto_keyring_new(GWT_ENCRYPTION_KEY, NULL, err, sizeof(err));
    assert_non_null(keys);
    const char *p[] = {user_id};
    t->sealed[0] = sql_value("SELECT drive_access_token FROM users WHERE id = $1", 1, p);
    t->sealed[1] = sql_value("SELECT drive_refresh_token FROM users WHERE id = $1", 1, p);
    for (int i = 0; i < 2; i++) {
        assert_non_null(t->sealed[i]);
        assert_true(strncmp(t->sealed[i], "v2:", 3) == 0);
        t->plain[i] = crypto_envelope_open_bound(keys, t->sealed[i], user_id);
        assert_non_null(t->plain[i]);
        assert_true(strlen(t->plain[i]) > 8);
    }
    crypto_keyring_free(keys);
}

static void tokens_free(tokens_t *t)
{
    for (int i = 0; i < 2; i++) {
        free(t->sealed[i]);
        crypto_free_secret(t->plain[i]);
    }
}

/* Rows of everything the export covers, for `u`: a job, an archived job, a
 * watched folder, an own preset with a version, a rating and an adoption of
 * another user's public preset, a usage period, a notice e-mail and Stripe ids.
 * Ids go to the out parameters (40 bytes each). */
static void seed_user(const gwt_session_t *u, const char *tag, char *job, char *archived,
                      char *preset)
{
    char name[64];
    snprintf(name, sizeof(name), "file-%s.jpg", tag);
    const char *p[] = {u->id, name, tag};
    char *v = sql_value("INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name,"
                        " drive_folder_id, preset_name) VALUES ($1, 'queued', 'df-' || $3, $2,"
                        " 'folder-' || $3, 'portrait_pro') RETURNING id",
                        3, p);
    assert_non_null(v);
    snprintf(job, 40, "%s", v);
    free(v);
    v = sql_value("INSERT INTO jobs_archive (user_id, status, drive_file_id, drive_file_name,"
                  " drive_folder_id, preset_name, created_at, archived_at)"
                  " VALUES ($1, 'completed', 'old-' || $3, 'archived-' || $2, 'folder-' || $3,"
                  " 'portrait_pro', now() - interval '200 days', now() - interval '100 days')"
                  " RETURNING id",
                  3, p);
    assert_non_null(v);
    snprintf(archived, 40, "%s", v);
    free(v);
    const char *pt[] = {u->id, tag};
    exec_ok("INSERT INTO drive_polls (user_id, folder_id, output_folder_id, changes_page_token,"
            " lease_owner) VALUES ($1, 'folder-' || $2, 'out-' || $2, 'page-token-secretish',"
            " 'poller-1')",
            2, pt);
    exec_ok("UPDATE users SET watched_folder_id = 'folder-' || $2, output_folder_id = 'out-' || $2"
            " WHERE id = $1",
            2, pt);
    v = sql_value("INSERT INTO presets (created_by_user_id, name, description, workflow_json,"
                  " category, is_public) VALUES ($1, 'own-' || $3, 'desc of ' || $2,"
                  " '{\"nodes\":[]}', 'portrait', true) RETURNING id",
                  3, p);
    assert_non_null(v);
    snprintf(preset, 40, "%s", v);
    free(v);
    const char *pv[] = {preset};
    exec_ok("INSERT INTO preset_versions (preset_id, version, workflow_json)"
            " VALUES ($1, 1, '{\"nodes\":[]}') ON CONFLICT DO NOTHING",
            1, pv);
    exec_ok("INSERT INTO usage_tracking (user_id, month, images_processed, tier, monthly_limit)"
            " VALUES ($1, date_trunc('month', now())::date, 7, 'creator', 100)"
            " ON CONFLICT (user_id, month) DO UPDATE SET images_processed = 7",
            1, p);
    exec_ok("INSERT INTO email_outbox (user_id, job_ids, status) VALUES ($1, ARRAY[]::uuid[],"
            " 'sent')",
            1, p);
    /* an in-app notice (a kind without an e-mail of its own: the outbox row above stays alone) */
    exec_ok("SELECT notice_raise($1, 'jobs_failed', 'seed-' || $2, '{\"count\": 1}')", 2, pt);
    exec_ok("INSERT INTO meter_outbox (job_id, user_id, stripe_customer_id)"
            " VALUES (gen_random_uuid(), $1, 'cus_' || $2)",
            2, pt);
    exec_ok("UPDATE subscriptions SET tier = 'creator', status = 'active', monthly_limit = 100,"
            " stripe_customer_id = 'cus_' || $2, stripe_subscription_id = 'sub_' || $2"
            " WHERE user_id = $1",
            2, pt);
}

/* u rates and adopts `preset` (another user's public one). */
static void rate_and_adopt(const gwt_session_t *u, const char *preset)
{
    const char *p[] = {u->id, preset};
    exec_ok("INSERT INTO preset_ratings (user_id, preset_id, rating) VALUES ($1, $2, 4)", 2, p);
    exec_ok("INSERT INTO preset_adoptions (user_id, preset_id, version) VALUES ($1, $2, 1)", 2, p);
}

static bool array_has_id(const cJSON *arr, const char *id)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        const char *v = gwt_str(it, "id");
        if (v == NULL) {
            v = gwt_str(it, "preset_id");
        }
        if (v != NULL && strcmp(v, id) == 0) {
            return true;
        }
    }
    return false;
}

typedef struct {
    const char *user_id;
    const char *action;
} audit_wait_t;

static bool audit_seen(void *arg)
{
    audit_wait_t *w = arg;
    const char *p[] = {w->user_id, w->action};
    char *v = sql_value("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = $2", 2, p);
    bool ok = v != NULL && atoi(v) > 0;
    free(v);
    return ok;
}

/* ---- export ---- */

static void test_export(void **state)
{
    (void)state;
    gwt_session_t ann, ben;
    assert_int_equal(gwt_sign_in(GW, "ann.export@example.com", &ann), 0);
    assert_int_equal(gwt_sign_in(GW, "ben.export@example.com", &ben), 0);
    char ann_job[40], ann_arch[40], ann_preset[40], ben_job[40], ben_arch[40], ben_preset[40];
    seed_user(&ann, "annx", ann_job, ann_arch, ann_preset);
    seed_user(&ben, "benx", ben_job, ben_arch, ben_preset);
    rate_and_adopt(&ann, ben_preset);
    tokens_t tok;
    tokens_read(ann.id, &tok);

    /* no session */
    gwt_resp_t r = gwt_request(GW, "GET", "/api/me/export", NULL, false, NULL);
    assert_int_equal(r.status, 401);
    gwt_resp_free(&r);

    r = gwt_request(GW, "GET", "/api/me/export", &ann, false, NULL);
    if (r.status != 200) {
        fprintf(stderr, "%ld %s\n", r.status, r.body ? r.body : "");
        proc_print_log(&gw);
    }
    assert_int_equal(r.status, 200);
    char *disp = gwt_header(r.headers, "Content-Disposition");
    assert_non_null(disp);
    assert_non_null(strstr(disp, "attachment"));
    assert_non_null(strstr(disp, "creator-automation-export-"));
    free(disp);
    char *ctype = gwt_header(r.headers, "Content-Type");
    assert_non_null(ctype);
    assert_non_null(strstr(ctype, "application/json"));
    free(ctype);
    char *cache = gwt_header(r.headers, "Cache-Control");
    assert_non_null(cache);
    assert_string_equal(cache, "no-store");
    free(cache);
    assert_non_null(r.json);

    /* the user's data */
    const cJSON *profile = cJSON_GetObjectItemCaseSensitive(r.json, "profile");
    assert_string_equal(gwt_str(profile, "email"), "ann.export@example.com");
    assert_string_equal(gwt_str(profile, "id"), ann.id);
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(r.json, "settings");
    assert_string_equal(gwt_str(settings, "default_preset"), "portrait_pro");
    const cJSON *drive = cJSON_GetObjectItemCaseSensitive(r.json, "drive");
    assert_string_equal(gwt_str(drive, "watched_folder_id"), "folder-annx");
    assert_true(array_has_id(cJSON_GetObjectItemCaseSensitive(r.json, "jobs"), ann_job));
    assert_true(array_has_id(cJSON_GetObjectItemCaseSensitive(r.json, "jobs_archived"), ann_arch));
    assert_true(array_has_id(cJSON_GetObjectItemCaseSensitive(r.json, "presets"), ann_preset));
    const cJSON *folders = cJSON_GetObjectItemCaseSensitive(r.json, "watched_folders");
    assert_int_equal(cJSON_GetArraySize(folders), 1);
    assert_string_equal(gwt_str(cJSON_GetArrayItem(folders, 0), "folder_id"), "folder-annx");
    assert_null(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(folders, 0), "changes_page_token"));
    assert_true(
        array_has_id(cJSON_GetObjectItemCaseSensitive(r.json, "preset_ratings"), ben_preset));
    assert_true(
        array_has_id(cJSON_GetObjectItemCaseSensitive(r.json, "preset_adoptions"), ben_preset));
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(r.json, "usage");
    assert_int_equal(cJSON_GetArraySize(usage), 1);
    assert_int_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(usage, 0), "images_processed")
            ->valueint,
        7);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "email_notices")),
                     1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "overage_events")),
                     1);
    const cJSON *notices = cJSON_GetObjectItemCaseSensitive(r.json, "notices");
    assert_int_equal(cJSON_GetArraySize(notices), 1);
    assert_string_equal(gwt_str(cJSON_GetArrayItem(notices, 0), "kind"), "jobs_failed");
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r.json, "settings"), "email_opt_out")));
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "audit_log")) >= 1);
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(r.json, "subscription");
    assert_string_equal(gwt_str(sub, "stripe_customer_id"), "cus_annx");
    assert_string_equal(gwt_str(sub, "tier"), "creator");
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(r.json, "counts");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(counts, "jobs_archived")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(counts, "notices")->valueint, 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "truncated")), 0);

    /* no secret: neither the tokens nor any sealed envelope */
    for (int i = 0; i < 2; i++) {
        assert_null(strstr(r.body, tok.plain[i]));
        assert_null(strstr(r.body, tok.sealed[i]));
    }
    assert_null(strstr(r.body, "v2:"));
    assert_null(strstr(r.body, "v1:"));
    assert_null(strstr(r.body, "page-token-secretish"));
    assert_null(strstr(r.body, "drive_access_token"));
    assert_null(strstr(r.body, "drive_refresh_token"));
    /* nothing of the other user (the preset ann rated is referred to by id only) */
    assert_null(strstr(r.body, ben.email));
    assert_null(strstr(r.body, ben_job));
    assert_null(strstr(r.body, ben_arch));
    assert_null(strstr(r.body, "cus_benx"));
    assert_null(strstr(r.body, "folder-benx"));
    gwt_resp_free(&r);
    tokens_free(&tok);

    audit_wait_t w = {ann.id, "account.export"};
    assert_true(wait_until(audit_seen, &w, 5000));
}

/* ---- deletion ---- */

/* EXPORT_MAX_ROWS: a list longer than the cap holds the newest rows only,
 * its full size is in "counts" and its name in "truncated"; lists within the
 * cap are whole. */
static void test_export_truncated(void **state)
{
    (void)state;
    gwt_session_t cat;
    assert_int_equal(gwt_sign_in(GW, "cat.export@example.com", &cat), 0);
    const char *p[] = {cat.id};
    assert_int_equal(sql_exec("INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name,"
                              " drive_folder_id, preset_name, created_at)"
                              " SELECT $1, 'completed', 'cat-' || i, 'cat-' || i || '.jpg', 'f',"
                              " 'portrait_pro', timestamp '2026-01-01' + i * interval '1 minute'"
                              " FROM generate_series(1, 7) AS i",
                              1, p),
                     0);
    gwt_resp_t r = gwt_request(GW, "GET", "/api/me/export", &cat, false, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
    assert_int_equal(cJSON_GetArraySize(jobs), EXPORT_CAP);
    for (int i = 0; i < EXPORT_CAP; i++) { /* the newest: cat-7, cat-6, ... */
        char want[32];
        snprintf(want, sizeof(want), "cat-%d.jpg", 7 - i);
        assert_string_equal(gwt_str(cJSON_GetArrayItem(jobs, i), "drive_file_name"), want);
    }
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(r.json, "counts");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(counts, "jobs")->valueint, 7);
    const cJSON *truncated = cJSON_GetObjectItemCaseSensitive(r.json, "truncated");
    assert_int_equal(cJSON_GetArraySize(truncated), 1);
    assert_string_equal(cJSON_GetArrayItem(truncated, 0)->valuestring, "jobs");
    gwt_resp_free(&r);
}

static void test_delete_confirmation(void **state)
{
    (void)state;
    gwt_session_t cid;
    assert_int_equal(gwt_sign_in(GW, "cid.keep@example.com", &cid), 0);
    const char *bad[] = {
        NULL,
        "{}",
        "{\"confirm\":\"someone.else@example.com\"}",
        "{\"confirm\":\"\"}",
        "{\"confirm\":42}",
        "{\"confirm\":\"cid.keep@example.com\",\"also\":1}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gwt_resp_t r = gwt_request(GW, "DELETE", "/api/me", &cid, true, bad[i]);
        if (r.status != 400) {
            fprintf(stderr, "body %s: %ld %s\n", bad[i] ? bad[i] : "(none)", r.status,
                    r.body ? r.body : "");
        }
        assert_int_equal(r.status, 400);
        /* no body or not an object: the gateway's invalid_json */
        assert_string_equal(gwt_error_code(&r), bad[i] == NULL || bad[i][0] == '['
                                                    ? "invalid_json"
                                                    : "invalid_request");
        gwt_resp_free(&r);
    }
    /* without the CSRF token */
    gwt_resp_t r =
        gwt_request(GW, "DELETE", "/api/me", &cid, false, "{\"confirm\":\"cid.keep@example.com\"}");
    assert_int_equal(r.status, 403);
    gwt_resp_free(&r);
    /* no session */
    r = gwt_request(GW, "DELETE", "/api/me", NULL, false, "{\"confirm\":\"cid.keep@example.com\"}");
    assert_int_equal(r.status, 401);
    gwt_resp_free(&r);
    const char *p[] = {cid.id};
    assert_int_equal(count_of("SELECT count(*) FROM users WHERE id = $1 AND"
                              " deletion_requested_at IS NULL",
                              1, p),
                     1);
    r = gwt_request(GW, "GET", "/api/me", &cid, false, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
}

/* Rows of `id` in every table with a user_id (or created_by_user_id) column. */
static long rows_of_user(const char *id, char *where, size_t wherelen)
{
    pg_conn_t *c = db_connect_ok();
    char err[256];
    PGresult *cols = pg_exec(c,
                             "SELECT table_name, column_name FROM information_schema.columns"
                             " WHERE table_schema = 'public' AND column_name IN ('user_id',"
                             " 'created_by_user_id') AND data_type = 'uuid' ORDER BY 1",
                             0, NULL, err, sizeof(err));
    assert_non_null(cols);
    long total = 0;
    where[0] = '\0';
    for (int i = 0; i < PQntuples(cols); i++) {
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM public.%s WHERE %s = $1",
                 PQgetvalue(cols, i, 0), PQgetvalue(cols, i, 1));
        const char *p[] = {id};
        long n = count_of(sql, 1, p);
        if (n > 0) {
            size_t len = strlen(where);
            snprintf(where + len, wherelen - len, "%s(%ld) ", PQgetvalue(cols, i, 0), n);
        }
        total += n;
    }
    assert_true(PQntuples(cols) >= 10);
    PQclear(cols);
    pg_close(c);
    return total;
}

/* The Stripe fake's subscription `id` (a new object). */
static cJSON *fake_subscription(const char *id)
{
    cJSON *st = fake_admin(ST, "GET", "/__admin/state", NULL);
    const cJSON *subs = cJSON_GetObjectItemCaseSensitive(st, "subscriptions");
    const cJSON *it;
    cJSON *found = NULL;
    cJSON_ArrayForEach(it, subs)
    {
        if (strcmp(gwt_str(it, "id"), id) == 0) {
            found = cJSON_Duplicate(it, true);
        }
    }
    cJSON_Delete(st);
    assert_non_null(found);
    return found;
}

static bool refresh_refused(const char *refresh)
{
    const http_pair_t f[] = {{"grant_type", "refresh_token"},
                             {"refresh_token", refresh},
                             {"client_id", "test-client"},
                             {"client_secret", "test-client-secret"}};
    char *form = http_form_encode(f, 4);
    char url[256];
    snprintf(url, sizeof(url), "%s/token", GO);
    const char *h[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    char *resp = NULL;
    long st = http_call_h("POST", url, h, form, &resp, NULL);
    bool refused = st == 400 && resp != NULL && strstr(resp, "invalid_grant") != NULL;
    free(resp);
    free(form);
    return refused;
}

static void test_delete_account(void **state)
{
    (void)state;
    gwt_session_t dee, eve, dee2;
    assert_int_equal(gwt_sign_in(GW, "dee.delete@example.com", &dee), 0);
    assert_int_equal(gwt_sign_in(GW, "dee.delete@example.com", &dee2), 0); /* a second session */
    assert_int_equal(gwt_sign_in(GW, "eve.stays@example.com", &eve), 0);
    char job[40], arch[40], preset[40], ejob[40], earch[40], epreset[40];
    seed_user(&dee, "deex", job, arch, preset);
    seed_user(&eve, "evex", ejob, earch, epreset);
    rate_and_adopt(&dee, epreset);
    rate_and_adopt(&eve, preset); /* eve adopted dee's public preset */
    cJSON_Delete(fake_admin(ST, "POST", "/__admin/seed",
                            "{\"subscriptions\":[{\"id\":\"sub_deex\",\"customer\":\"cus_deex\","
                            "\"price\":\"price_basic_monthly\"}]}"));
    tokens_t tok;
    tokens_read(dee.id, &tok);
    assert_false(refresh_refused(tok.plain[1]));
    const char *p[] = {dee.id};
    const char *body = "{\"confirm\":\"Dee.Delete@example.com\"}"; /* case does not matter */
    assert_int_equal(count_of("SELECT count(*) FROM notices WHERE user_id = $1", 1, p), 1);

    /* 1. Google down: 502, the account is marked, polling stopped, jobs
     * cancelled, nothing deleted, Stripe not called */
    fake_add_fault(GO, "{\"match\":{\"method\":\"POST\",\"path\":\"/revoke\"},\"count\":100,"
                       "\"action\":\"status\",\"status\":503}");
    long st_next = fake_requests_next(ST);
    gwt_resp_t r = gwt_request(GW, "DELETE", "/api/me", &dee, true, body);
    assert_int_equal(r.status, 502);
    assert_string_equal(gwt_error_code(&r), "google_unavailable");
    gwt_resp_free(&r);
    fake_clear_faults(GO);
    assert_int_equal(count_of("SELECT count(*) FROM users WHERE id = $1 AND"
                              " deletion_requested_at IS NOT NULL",
                              1, p),
                     1);
    assert_int_equal(
        count_of("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND active", 1, p), 0);
    assert_int_equal(count_of("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND NOT active"
                              " AND stopped_reason = 'account_deleted'",
                              1, p),
                     1);
    assert_int_equal(count_of("SELECT count(*) FROM jobs WHERE user_id = $1 AND status IN"
                              " ('queued', 'processing')",
                              1, p),
                     0);
    /* a poll that was listing the folder finds a new file: no job for an
     * account being deleted */
    assert_int_equal(count_of("SELECT count(*) FROM jobs_create_for_drive_file($1, 'f_late',"
                              " 'late.jpg', 'folder_late', 1, 'image/jpeg', NULL)",
                              1, p),
                     0);
    assert_int_equal(
        count_of("SELECT count(*) FROM jobs WHERE user_id = $1 AND drive_file_id = 'f_late'", 1, p),
        0);
    assert_int_equal(count_of("SELECT count(*) FROM jobs_archive WHERE user_id = $1", 1, p), 1);
    assert_int_equal(fake_count_requests(ST, &(fake_match_t){.path = "/v1/subscriptions/sub_deex",
                                                             .since = st_next}),
                     0);
    assert_false(refresh_refused(tok.plain[1]));
    r = gwt_request(GW, "GET", "/api/me", &dee, false, NULL);
    assert_int_equal(r.status, 200); /* the session stays: the request can be sent again */
    gwt_resp_free(&r);

    /* 2. Stripe down: 502, still nothing deleted (Google's revoke is done) */
    fake_add_fault(ST, "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/subscriptions/sub_deex\"},"
                       "\"count\":100,\"action\":\"status\",\"status\":500}");
    r = gwt_request(GW, "DELETE", "/api/me", &dee, true, body);
    assert_int_equal(r.status, 502);
    assert_string_equal(gwt_error_code(&r), "stripe_unavailable");
    gwt_resp_free(&r);
    fake_clear_faults(ST);
    assert_true(refresh_refused(tok.plain[1]));
    assert_int_equal(count_of("SELECT count(*) FROM users WHERE id = $1", 1, p), 1);
    cJSON *sub = fake_subscription("sub_deex");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sub, "cancel_at_period_end")));
    cJSON_Delete(sub);

    /* 3. the retry goes through (Google answers "already revoked": done) */
    long go_next = fake_requests_next(GO);
    r = gwt_request(GW, "DELETE", "/api/me", &dee, true, body);
    if (r.status != 200) {
        fprintf(stderr, "%ld %s\n", r.status, r.body ? r.body : "");
        proc_print_log(&gw);
    }
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "deleted")));
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(r.json, "sessions_ended")->valueint, 2);
    char *cookie = gwt_set_cookie(r.headers, "ca_session");
    assert_non_null(cookie);
    assert_non_null(strstr(cookie, "Max-Age=0"));
    free(cookie);
    gwt_resp_free(&r);

    /* the fakes saw the revoke and the cancellation */
    assert_true(fake_count_requests(
                    GO, &(fake_match_t){.method = "POST", .path = "/revoke", .since = go_next}) >=
                1);
    assert_true(refresh_refused(tok.plain[1]));
    sub = fake_subscription("sub_deex");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sub, "cancel_at_period_end")));
    assert_string_equal(gwt_str(sub, "status"), "active"); /* runs to the period's end */
    cJSON_Delete(sub);
    cJSON *req = NULL;
    {
        cJSON *all = fake_requests(ST, st_next);
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(all, "requests"))
        {
            if (strcmp(gwt_str(it, "path"), "/v1/subscriptions/sub_deex") == 0 &&
                cJSON_GetObjectItemCaseSensitive(it, "status")->valueint == 200) {
                cJSON_Delete(req);
                req = cJSON_Duplicate(it, true);
            }
        }
        cJSON_Delete(all);
    }
    assert_non_null(req);
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(req, "note");
    assert_string_equal(gwt_str(note, "idempotency_key"), "ca-del-sub_deex");
    cJSON_Delete(req);

    /* no row of the user anywhere */
    char where[1024];
    long left = rows_of_user(dee.id, where, sizeof(where));
    if (left != 0) {
        fail_msg("rows of the deleted user left: %s", where);
    }
    assert_int_equal(count_of("SELECT count(*) FROM notices WHERE user_id = $1", 1, p), 0);
    /* the documented exceptions: audit rows and overage events, without the user id / IP */
    char actor[64];
    snprintf(actor, sizeof(actor), "user:%s", dee.id);
    const char *pa[] = {actor};
    assert_true(count_of("SELECT count(*) FROM audit_log WHERE actor = $1 AND user_id IS NULL", 1,
                         pa) >= 3);
    assert_int_equal(
        count_of("SELECT count(*) FROM audit_log WHERE actor = $1 AND ip IS NOT NULL", 1, pa), 0);
    assert_int_equal(count_of("SELECT count(*) FROM audit_log WHERE actor = $1 AND action IN"
                              " ('account.deletion_requested', 'account.deleted')",
                              1, pa),
                     4); /* three requests, one deletion */
    assert_int_equal(count_of("SELECT count(*) FROM meter_outbox WHERE user_id IS NULL AND"
                              " stripe_customer_id = 'cus_deex'",
                              0, NULL),
                     1);
    /* the user's presets went with them (not turned into system presets) */
    const char *pp[] = {preset};
    assert_int_equal(count_of("SELECT count(*) FROM presets WHERE id = $1", 1, pp), 0);

    /* the sessions are gone */
    r = gwt_request(GW, "GET", "/api/me", &dee, false, NULL);
    assert_int_equal(r.status, 401);
    gwt_resp_free(&r);
    r = gwt_request(GW, "GET", "/api/me", &dee2, false, NULL);
    assert_int_equal(r.status, 401);
    gwt_resp_free(&r);

    /* the other user is untouched */
    const char *pe[] = {eve.id};
    assert_int_equal(count_of("SELECT count(*) FROM jobs WHERE user_id = $1", 1, pe), 1);
    assert_int_equal(count_of("SELECT count(*) FROM jobs_archive WHERE user_id = $1", 1, pe), 1);
    assert_int_equal(
        count_of("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND active", 1, pe), 1);
    r = gwt_request(GW, "GET", "/api/me", &eve, false, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    tokens_free(&tok);
}

/* A subscription Stripe no longer has (404) or has already canceled (the
 * update is refused with 400) counts as done: the account is deleted and the
 * account.deleted row says so. */
static void delete_with_subscription(const char *email, const char *sub_id)
{
    gwt_session_t s;
    assert_int_equal(gwt_sign_in(GW, email, &s), 0);
    const char *p[] = {s.id, sub_id};
    exec_ok("UPDATE subscriptions SET tier = 'creator', status = 'active', monthly_limit = 100,"
            " stripe_customer_id = 'cus_x', stripe_subscription_id = $2 WHERE user_id = $1",
            2, p);
    char body[300];
    snprintf(body, sizeof(body), "{\"confirm\":\"%s\"}", email);
    gwt_resp_t r = gwt_request(GW, "DELETE", "/api/me", &s, true, body);
    if (r.status != 200) {
        fprintf(stderr, "%ld %s\n", r.status, r.body ? r.body : "");
    }
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    char actor[64];
    snprintf(actor, sizeof(actor), "user:%s", s.id);
    const char *pa[] = {actor};
    char *v = sql_value("SELECT details->>'subscription_cancel' FROM audit_log WHERE actor = $1"
                        " AND action = 'account.deleted'",
                        1, pa);
    assert_non_null(v);
    assert_string_equal(v, "already_ended");
    free(v);
    const char *pu[] = {s.id};
    assert_int_equal(count_of("SELECT count(*) FROM users WHERE id = $1", 1, pu), 0);
}

static void test_delete_subscription_gone(void **state)
{
    (void)state;
    delete_with_subscription("gil.gone@example.com", "sub_unknown_to_stripe");
    cJSON_Delete(fake_admin(ST, "POST", "/__admin/seed",
                            "{\"subscriptions\":[{\"id\":\"sub_canceled1\",\"customer\":"
                            "\"cus_c1\",\"price\":\"price_basic_monthly\"}]}"));
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/subscriptions/sub_canceled1", ST);
    const char *h[] = {"Authorization: Bearer sk_test_gateway", NULL};
    assert_int_equal(http_call_h("DELETE", url, h, NULL, NULL, NULL), 200);
    delete_with_subscription("hal.canceled@example.com", "sub_canceled1");
}

/* retry, cancel and settings changes write audit rows (they did not before
 * issue 15); a refused change writes none. */
static bool audit_count(const char *user_id, const char *action, const char *target, long want)
{
    const char *p[] = {user_id, action, target};
    for (int i = 0; i < 50; i++) {
        if (count_of("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = $2"
                     " AND target = $3",
                     3, p) == want) {
            return true;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_job_and_settings_audit(void **state)
{
    (void)state;
    gwt_session_t fay;
    assert_int_equal(gwt_sign_in(GW, "fay.audit@example.com", &fay), 0);
    char job[40], arch[40], preset[40];
    seed_user(&fay, "fayx", job, arch, preset);
    char path[128], target[64];
    snprintf(target, sizeof(target), "job:%s", job);

    snprintf(path, sizeof(path), "/api/jobs/%s/cancel", job);
    gwt_resp_t r = gwt_request(GW, "POST", path, &fay, true, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_true(audit_count(fay.id, "job.cancel", target, 1));
    r = gwt_request(GW, "POST", path, &fay, true, NULL); /* 409: not audited */
    assert_int_equal(r.status, 409);
    gwt_resp_free(&r);

    snprintf(path, sizeof(path), "/api/jobs/%s/retry", job);
    r = gwt_request(GW, "POST", path, &fay, true, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_true(audit_count(fay.id, "job.retry", target, 1));
    assert_true(audit_count(fay.id, "job.cancel", target, 1));

    char me[64];
    snprintf(me, sizeof(me), "user:%s", fay.id);
    r = gwt_request(GW, "PATCH", "/api/me", &fay, true,
                    "{\"email_notifications\":false,\"share_outputs\":\"private\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_true(audit_count(fay.id, "settings.update", me, 1));
    const char *p[] = {fay.id};
    char *d = sql_value("SELECT details::text FROM audit_log WHERE user_id = $1"
                        " AND action = 'settings.update'",
                        1, p);
    assert_non_null(d);
    assert_string_equal(d, "{\"share_outputs\": \"private\", \"email_notifications\": false}");
    free(d);
    r = gwt_request(GW, "PATCH", "/api/me", &fay, true, "{\"default_preset\":\"no-such-preset\"}");
    assert_int_equal(r.status, 400);
    gwt_resp_free(&r);
    assert_true(audit_count(fay.id, "settings.update", me, 1));
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
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_export_truncated),
        cmocka_unit_test(test_delete_confirmation),
        cmocka_unit_test(test_delete_account),
        cmocka_unit_test(test_delete_subscription_gone),
        cmocka_unit_test(test_job_and_settings_audit),
        cmocka_unit_test(test_gateway_exits_cleanly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
