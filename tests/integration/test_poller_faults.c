/*
 * drive-poller, faults (issue 5): each Drive fault kind backs off that folder
 * and recovers; other users are not held up; a 401 refreshes once; a revoked
 * grant disconnects the user and stops the watch; a deleted folder stops the
 * watch and says why; SIGTERM: /readyz 503 at once, the poll in flight
 * completes or is handed back, leases given back, exit 0.
 */
#include "test_poller_common.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* A watched user, the only active watch (so a count:1 fault hits it). */
static void only_watched_user(tp_user_t *u, const char *prefix)
{
    assert_int_equal(tp_new_user(u, prefix), 0);
    sql_exec("UPDATE drive_polls SET active = FALSE, stopped_reason = 'test' WHERE active", 0,
             NULL);
    assert_int_equal(tp_watch(u), 0);
    TP_CHECK(tp_wait_scanned(u, 10000));
    TP_CHECK(tp_wait_polls(u, 1, 5000));
}

typedef struct {
    const tp_user_t *u;
    const char *status;
} status_wait_t;

static bool has_status(void *arg)
{
    status_wait_t *w = arg;
    char v[32];
    tp_poll_field(w->u, "poll_status", v, sizeof(v));
    return strcmp(v, w->status) == 0;
}

static void one_fault_kind(const char *fault, const char *want_status, const char *want_in_message,
                           double min_backoff_s)
{
    tp_user_t u;
    only_watched_user(&u, "fault");
    fake_add_fault(tp_google.base_url, fault);
    status_wait_t w = {&u, want_status};
    TP_CHECK(wait_until(has_status, &w, 5000));
    char v[512];
    tp_poll_field(&u, "consecutive_errors", v, sizeof(v));
    assert_string_equal(v, "1");
    tp_poll_field(&u, "error_message", v, sizeof(v));
    if (strstr(v, want_in_message) == NULL) {
        fail_msg("error_message '%s' lacks '%s'", v, want_in_message);
    }
    tp_poll_field(&u, "extract(epoch FROM backoff_until - last_poll_at)", v, sizeof(v));
    if (atof(v) < min_backoff_s || atof(v) > 16.0) {
        fail_msg("backoff %s s, want >= %.1f", v, min_backoff_s);
    }
    tp_poll_field(&u, "(next_poll_at >= backoff_until)", v, sizeof(v));
    assert_string_equal(v, "true");
    /* recovery: the backoff passes, the next poll succeeds and finds the file */
    char id[128];
    assert_int_equal(tp_image(&u, "after-fault.jpg", u.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&u, 1, 20000));
    w.status = "success";
    TP_CHECK(wait_until(has_status, &w, 5000));
    tp_poll_field(&u, "consecutive_errors", v, sizeof(v));
    assert_string_equal(v, "0");
    tp_poll_field(&u, "coalesce(backoff_until::text, 'none')", v, sizeof(v));
    assert_string_equal(v, "none");
    tp_poll_field(&u, "coalesce(error_message, 'none')", v, sizeof(v));
    assert_string_equal(v, "none");
    assert_int_equal(tp_jobs_for_file(&u, id), 1);
    assert_int_equal(tp_jobs_of(&u), 1);
}

static void test_fault_403_user_rate_limit(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":403,\"reason\":\"userRateLimitExceeded\"}",
                   "rate_limited", "userRateLimitExceeded", 1.9);
}

static void test_fault_403_rate_limit(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":403,\"reason\":\"rateLimitExceeded\"}",
                   "rate_limited", "rateLimitExceeded", 1.9);
}

static void test_fault_429_retry_after(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":429,\"retry_after\":5}",
                   "rate_limited", "changes.list", 4.9);
}

static void test_fault_500(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":500}",
                   "error", "changes.list", 1.9);
}

static void test_fault_dropped_connection(void **state)
{
    (void)state;
    /* count 2: libcurl silently retries a request whose REUSED connection
     * died before any answer, once; the second drop reaches the poller */
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":2,"
                   "\"action\":\"drop\"}",
                   "error", "changes.list", 1.9);
}

static bool backed_off_twice(void *arg)
{
    char v[32];
    tp_poll_field(arg, "consecutive_errors", v, sizeof(v));
    return atoi(v) >= 2;
}

/* A persistent rate limit on one user's calls does not hold another user up:
 * B is polled, and its new image becomes a job, while A keeps backing off. */
static void test_other_users_not_slowed(void **state)
{
    (void)state;
    tp_user_t a, b;
    only_watched_user(&b, "steady");
    assert_int_equal(tp_new_user(&a, "limited"), 0);
    char early[128];
    assert_int_equal(tp_image(&a, "early.jpg", a.folder_id, early, sizeof(early)), 0);
    /* A's first poll lists its folder (files.get, files.list); B only reads changes */
    fake_add_fault(tp_google.base_url,
                   "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/files\"},"
                   "\"action\":\"status\",\"status\":403,\"reason\":\"userRateLimitExceeded\"}");
    assert_int_equal(tp_watch(&a), 0);
    status_wait_t w = {&a, "rate_limited"};
    TP_CHECK(wait_until(has_status, &w, 5000));
    /* B: polled again and again, and a new image is a job */
    TP_CHECK(tp_wait_polls(&b, 3, 30000));
    char id[128];
    assert_int_equal(tp_image(&b, "b.jpg", b.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&b, 1, 30000));
    /* A kept backing off meanwhile (its first wait is 2 to 4 s: poll_backoff_ms) */
    TP_CHECK(wait_until(backed_off_twice, &a, 10000));
    char v[64];
    tp_poll_field(&a, "poll_status", v, sizeof(v));
    assert_string_equal(v, "rate_limited");
    assert_int_equal(tp_jobs_of(&a), 0);
    fake_clear_faults(tp_google.base_url);
    TP_CHECK(tp_wait_jobs(&a, 1, 20000));
    assert_int_equal(tp_jobs_for_file(&a, early), 1);
    w.status = "success";
    TP_CHECK(wait_until(has_status, &w, 5000));
}

/* A 401 refreshes the token once, stores it sealed, and the poll goes on. */
static void test_unauthorized_refreshes_once(void **state)
{
    (void)state;
    tp_user_t u;
    only_watched_user(&u, "auth");
    char before[1024];
    tp_sql_str(before, sizeof(before), "SELECT drive_access_token FROM users WHERE id = $1::uuid",
               1, (const char *[]){u.user_id});
    fake_google_expire(tp_google.base_url, u.email);
    char id[128];
    assert_int_equal(tp_image(&u, "after-401.jpg", u.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&u, 1, 5000));
    char after[1024];
    tp_sql_str(after, sizeof(after), "SELECT drive_access_token FROM users WHERE id = $1::uuid", 1,
               (const char *[]){u.user_id});
    assert_string_not_equal(before, after);
    assert_non_null(strstr(after, "v2:")); /* sealed (bound to the user), not plain */
    char *plain = crypto_envelope_open_bound(tp_keys, after, u.user_id);
    assert_non_null(plain);
    assert_string_not_equal(plain, u.access);
    free(plain);
    char v[32];
    tp_poll_field(&u, "poll_status", v, sizeof(v));
    assert_string_equal(v, "success");
}

/* Requests to the fake after `since` that were a token refresh or answered 401. */
static int refreshes_or_401s_since(long since)
{
    cJSON *j = fake_requests(tp_google.base_url, since);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(j, "requests"))
    {
        const char *pth = cJSON_GetObjectItemCaseSensitive(r, "path")->valuestring;
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "status");
        if (strcmp(pth, "/token") == 0 || (cJSON_IsNumber(st) && st->valuedouble == 401)) {
            fprintf(stderr, "after the stop: %s %s -> %g\n",
                    cJSON_GetObjectItemCaseSensitive(r, "method")->valuestring, pth,
                    cJSON_IsNumber(st) ? st->valuedouble : 0.0);
            n++;
        }
    }
    cJSON_Delete(j);
    return n;
}

static void test_revoked_grant_stops_the_user(void **state)
{
    (void)state;
    tp_user_t u;
    only_watched_user(&u, "revoked");
    fake_google_revoke(tp_google.base_url, u.email);
    fake_google_expire(tp_google.base_url, u.email);
    const char *p[] = {u.user_id};
    long long deadline = tp_now_ms() + 8000;
    while (tp_now_ms() < deadline &&
           tp_sql_long("SELECT count(*) FROM drive_polls WHERE user_id = $1::uuid AND active", 1,
                       p) != 0) {
        tp_sleep_ms(50);
    }
    char v[512];
    tp_poll_field(&u, "active", v, sizeof(v));
    TP_CHECK(strcmp(v, "false") == 0);
    tp_poll_field(&u, "stopped_reason", v, sizeof(v));
    assert_string_equal(v, "drive_revoked");
    tp_poll_field(&u, "poll_status", v, sizeof(v));
    assert_string_equal(v, "error");
    tp_poll_field(&u, "error_message", v, sizeof(v));
    assert_string_equal(v, "Google access was revoked \xe2\x80\x94 reconnect Drive");
    tp_sql_str(v, sizeof(v),
               "SELECT drive_connected::text || '|' || (drive_disconnected_reason LIKE"
               " 'invalid_grant%')::text FROM users WHERE id = $1::uuid",
               1, p);
    assert_string_equal(v, "false|true");
    /* the user is told to sign in again: one drive_revoked notice, its e-mail queued */
    tp_sql_str(v, sizeof(v),
               "SELECT count(*) || '|' || min(n.data->>'action') || '|'"
               " || (SELECT count(*) FROM email_outbox o WHERE o.notice_id = min(n.id::text)::uuid)"
               " FROM notices n WHERE n.user_id = $1::uuid AND n.kind = 'drive_revoked'",
               1, p);
    assert_string_equal(v, "1|sign_in|1");
    /* No more calls for this user. Its access token is revoked, so any call
     * would be a 401 or a refresh at /token; a witness watched from now on is
     * polled twice (the poll loop went round) with neither. */
    long since = tp_requests_next();
    tp_user_t witness;
    assert_int_equal(tp_new_user(&witness, "witness"), 0);
    assert_int_equal(tp_watch(&witness), 0);
    TP_CHECK(tp_wait_scanned(&witness, 30000));
    TP_CHECK(tp_wait_polls(&witness, 2, 30000));
    assert_int_equal(refreshes_or_401s_since(since), 0);
}

static void test_deleted_folder_stops_the_watch(void **state)
{
    (void)state;
    tp_user_t u;
    only_watched_user(&u, "gone");
    char path[256];
    snprintf(path, sizeof(path), "/drive/v3/files/%s", u.folder_id);
    assert_int_equal(tp_drive(&u, "DELETE", path, NULL, NULL), 204);
    const char *p[] = {u.user_id};
    long long deadline = tp_now_ms() + 8000;
    while (tp_now_ms() < deadline &&
           tp_sql_long("SELECT count(*) FROM drive_polls WHERE user_id = $1::uuid AND active", 1,
                       p) != 0) {
        tp_sleep_ms(50);
    }
    char v[256];
    tp_poll_field(&u, "active", v, sizeof(v));
    TP_CHECK(strcmp(v, "false") == 0);
    tp_poll_field(&u, "stopped_reason", v, sizeof(v));
    assert_string_equal(v, "folder not found or no longer shared");
    tp_poll_field(&u, "error_message", v, sizeof(v));
    assert_string_equal(v, "folder not found or no longer shared");
    tp_poll_field(&u, "poll_status", v, sizeof(v));
    assert_string_equal(v, "error");
    /* the user's Drive is still connected: only the watch stopped */
    tp_sql_str(v, sizeof(v), "SELECT drive_connected::text FROM users WHERE id = $1::uuid", 1, p);
    assert_string_equal(v, "true");
    /* the user is told to pick a folder again: one folder_gone notice */
    tp_sql_str(v, sizeof(v),
               "SELECT count(*) || '|' || min(data->>'action') || '|' || min(data->>'folder_id')"
               " FROM notices WHERE user_id = $1::uuid AND kind = 'folder_gone'",
               1, p);
    char want[256];
    snprintf(want, sizeof(want), "1|pick_folder|%s", u.folder_id);
    assert_string_equal(v, want);
}

/* A changes.list after request `*since` is at the fake and not answered yet
 * (a delay fault holds it). */
static bool changes_call_in_flight(void *arg)
{
    return tp_changes_call_held(*(const long *)arg);
}

/* SIGTERM while a poll waits for Drive: /readyz answers 503 at once (while
 * the poll is still in flight), and the poll is not dropped: it either
 * completes (the image it finds is a job, the token advances, the poll is
 * recorded) or is handed back (lease given back, due again at once, token
 * unchanged). The poller then exits 0. */
static void test_sigterm_drains(void **state)
{
    (void)state;
    tp_user_t u;
    only_watched_user(&u, "drain");
    long since = tp_requests_next();
    fake_add_fault(tp_google.base_url,
                   "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"delay\",\"delay_ms\":5000}");
    char id[128];
    assert_int_equal(tp_image(&u, "in-flight.jpg", u.folder_id, id, sizeof(id)), 0);
    TP_CHECK(wait_until(changes_call_in_flight, &since, 30000));
    /* the poll in flight started from these (its lease keeps them) */
    char token_before[256], polled_before[64];
    tp_poll_field(&u, "changes_page_token", token_before, sizeof(token_before));
    tp_poll_field(&u, "last_poll_at", polled_before, sizeof(polled_before));

    assert_int_equal(kill(tp_poller.pid, SIGTERM), 0);
    char readyz[192];
    snprintf(readyz, sizeof(readyz), "%s/readyz", tp_poller.base_url);
    TP_CHECK(wait_http_status(readyz, 503, 2000));
    TP_CHECK(changes_call_in_flight(&since)); /* the 503 came before the drain ended */
    int rc = proc_wait(&tp_poller, 30000);
    if (rc != 0) {
        proc_print_log(&tp_poller);
        proc_kill9(&tp_poller);
    }
    assert_int_equal(rc, 0);

    assert_int_equal(
        tp_sql_long("SELECT count(*) FROM drive_polls WHERE lease_owner IS NOT NULL", 0, NULL), 0);
    char token_after[256], polled_after[64], status[32], due[8];
    tp_poll_field(&u, "changes_page_token", token_after, sizeof(token_after));
    tp_poll_field(&u, "last_poll_at", polled_after, sizeof(polled_after));
    tp_poll_field(&u, "poll_status", status, sizeof(status));
    tp_poll_field(&u, "(next_poll_at <= timezone('UTC', now()))", due, sizeof(due));
    bool completed = tp_jobs_for_file(&u, id) == 1 && strcmp(token_after, token_before) != 0 &&
                     strcmp(polled_after, polled_before) != 0 && strcmp(status, "success") == 0;
    bool handed_back = strcmp(token_after, token_before) == 0 && strcmp(due, "true") == 0;
    if (!completed && !handed_back) {
        proc_print_log(&tp_poller);
        fail_msg("the poll in flight was dropped: token %s -> %s, last_poll_at %s -> %s, status %s,"
                 " jobs for its image %ld, due again %s",
                 token_before, token_after, polled_before, polled_after, status,
                 tp_jobs_for_file(&u, id), due);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_403_user_rate_limit),
        cmocka_unit_test(test_fault_403_rate_limit),
        cmocka_unit_test(test_fault_429_retry_after),
        cmocka_unit_test(test_fault_500),
        cmocka_unit_test(test_fault_dropped_connection),
        cmocka_unit_test(test_other_users_not_slowed),
        cmocka_unit_test(test_unauthorized_refreshes_once),
        cmocka_unit_test(test_revoked_grant_stops_the_user),
        cmocka_unit_test(test_deleted_folder_stops_the_watch),
        cmocka_unit_test(test_sigterm_drains),
    };
    return cmocka_run_group_tests(tests, tp_group_setup, tp_group_teardown);
}
