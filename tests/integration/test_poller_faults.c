/*
 * drive-poller, faults (issue 5): each Drive fault kind backs off that folder
 * and recovers; other users are not slowed; a 401 refreshes once; a revoked
 * grant disconnects the user and stops the watch; a deleted folder stops the
 * watch and says why; SIGTERM drains and gives leases back.
 */
#include "test_poller_common.h"

#include <setjmp.h>
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

static void add_fault(const char *json)
{
    cJSON *j = tp_admin("POST", "/__admin/faults", json);
    assert_non_null(j);
    cJSON_Delete(j);
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
    add_fault(fault);
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

static void fault_403_user_rate_limit(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":403,\"reason\":\"userRateLimitExceeded\"}",
                   "rate_limited", "userRateLimitExceeded", 1.9);
}

static void fault_403_rate_limit(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":403,\"reason\":\"rateLimitExceeded\"}",
                   "rate_limited", "rateLimitExceeded", 1.9);
}

static void fault_429_retry_after(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":429,\"retry_after\":5}",
                   "rate_limited", "changes.list", 4.9);
}

static void fault_500(void **state)
{
    (void)state;
    one_fault_kind("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":500}",
                   "error", "changes.list", 1.9);
}

static void fault_dropped_connection(void **state)
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

/* A persistent rate limit on one user's calls does not slow another user. */
static void other_users_not_slowed(void **state)
{
    (void)state;
    tp_user_t a, b;
    only_watched_user(&b, "steady");
    assert_int_equal(tp_new_user(&a, "limited"), 0);
    char early[128];
    assert_int_equal(tp_image(&a, "early.jpg", a.folder_id, early, sizeof(early)), 0);
    /* A's first poll lists its folder (files.get, files.list); B only reads changes */
    add_fault("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/files\"},"
              "\"action\":\"status\",\"status\":403,\"reason\":\"userRateLimitExceeded\"}");
    assert_int_equal(tp_watch(&a), 0);
    status_wait_t w = {&a, "rate_limited"};
    TP_CHECK(wait_until(has_status, &w, 5000));
    long long t0 = tp_now_ms();
    /* B: polled every second and a new image is a job at once */
    TP_CHECK(tp_wait_polls(&b, 3, 5000));
    char id[128];
    assert_int_equal(tp_image(&b, "b.jpg", b.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&b, 1, 3000));
    assert_true(tp_now_ms() - t0 < 7000);
    /* A kept backing off meanwhile (its first wait is 2 to 4 s: poll_backoff_ms) */
    TP_CHECK(wait_until(backed_off_twice, &a, 10000));
    char v[64];
    tp_poll_field(&a, "poll_status", v, sizeof(v));
    assert_string_equal(v, "rate_limited");
    assert_int_equal(tp_jobs_of(&a), 0);
    cJSON_Delete(tp_admin("DELETE", "/__admin/faults", NULL));
    TP_CHECK(tp_wait_jobs(&a, 1, 20000));
    assert_int_equal(tp_jobs_for_file(&a, early), 1);
    w.status = "success";
    TP_CHECK(wait_until(has_status, &w, 5000));
}

/* A 401 refreshes the token once, stores it sealed, and the poll goes on. */
static void unauthorized_refreshes_once(void **state)
{
    (void)state;
    tp_user_t u;
    only_watched_user(&u, "auth");
    char before[1024];
    tp_sql_str(before, sizeof(before), "SELECT drive_access_token FROM users WHERE id = $1::uuid",
               1, (const char *[]){u.user_id});
    char body[256];
    snprintf(body, sizeof(body), "{\"email\":\"%s\"}", u.email);
    cJSON_Delete(tp_admin("POST", "/__admin/expire", body));
    char id[128];
    assert_int_equal(tp_image(&u, "after-401.jpg", u.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&u, 1, 5000));
    char after[1024];
    tp_sql_str(after, sizeof(after), "SELECT drive_access_token FROM users WHERE id = $1::uuid", 1,
               (const char *[]){u.user_id});
    assert_string_not_equal(before, after);
    assert_non_null(strstr(after, "v1:")); /* sealed, not plain */
    char *plain = crypto_envelope_open(tp_keys, after);
    assert_non_null(plain);
    assert_string_not_equal(plain, u.access);
    free(plain);
    char v[32];
    tp_poll_field(&u, "poll_status", v, sizeof(v));
    assert_string_equal(v, "success");
}

static void revoked_grant_stops_the_user(void **state)
{
    (void)state;
    tp_user_t u;
    only_watched_user(&u, "revoked");
    char body[256];
    snprintf(body, sizeof(body), "{\"email\":\"%s\"}", u.email);
    cJSON_Delete(tp_admin("POST", "/__admin/revoke", body));
    cJSON_Delete(tp_admin("POST", "/__admin/expire", body));
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
    /* no more calls for this user: nothing else is watched, so none at all */
    long since = tp_requests_next();
    tp_sleep_ms(2500);
    long other = 0;
    assert_int_equal(tp_requests_count(since, "/drive/v3/changes", &other), 0);
    assert_int_equal(other, 0);
}

static void deleted_folder_stops_the_watch(void **state)
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
}

/* SIGTERM during a slow poll: it finishes, the lease is given back, exit 0. */
static void sigterm_drains(void **state)
{
    (void)state;
    tp_user_t u;
    only_watched_user(&u, "drain");
    add_fault("{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
              "\"action\":\"delay\",\"delay_ms\":1500}");
    const char *p[] = {u.user_id};
    long long deadline = tp_now_ms() + 5000;
    while (tp_now_ms() < deadline &&
           tp_sql_long("SELECT count(*) FROM drive_polls WHERE user_id = $1::uuid AND"
                       " lease_owner IS NOT NULL",
                       1, p) != 1) {
        tp_sleep_ms(20);
    }
    tp_sleep_ms(200);
    long long t0 = tp_now_ms();
    assert_int_equal(proc_stop_timeout(&tp_poller, 30000), 0);
    assert_true(tp_now_ms() - t0 < 10000);
    tp_poller.pid = 0;
    assert_int_equal(
        tp_sql_long("SELECT count(*) FROM drive_polls WHERE lease_owner IS NOT NULL", 0, NULL), 0);
    char v[32];
    tp_poll_field(&u, "poll_status", v, sizeof(v));
    assert_string_equal(v, "success");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fault_403_user_rate_limit),
        cmocka_unit_test(fault_403_rate_limit),
        cmocka_unit_test(fault_429_retry_after),
        cmocka_unit_test(fault_500),
        cmocka_unit_test(fault_dropped_connection),
        cmocka_unit_test(other_users_not_slowed),
        cmocka_unit_test(unauthorized_refreshes_once),
        cmocka_unit_test(revoked_grant_stops_the_user),
        cmocka_unit_test(deleted_folder_stops_the_watch),
        cmocka_unit_test(sigterm_drains),
    };
    return cmocka_run_group_tests(tests, tp_group_setup, tp_group_teardown);
}
