/*
 * drive-poller, Drive push notifications (issue 18; docs/drive-poller.md
 * "Push notifications"): with DRIVE_WEBHOOK_URL set, each watched row gets a
 * changes.watch channel at the Google fake, which POSTs to the poller's
 * /webhooks/drive like Drive does. POLL_INTERVAL_SECONDS is 300 here, so a
 * job within seconds can only come from a notification. Covered: no channel
 * when the variable is unset; registration; a drop becomes a job within
 * seconds; sync is ignored; a wrong token or an unknown channel is refused
 * and polls nothing; renewal before the end; stop on unwatch, on a folder
 * change and on deactivation; a lost notification is caught by the poll.
 */
#define _GNU_SOURCE
#include "test_poller_common.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static int push_port;
static char hook_url[128];
static char hook_env[160];
static char port_env[32];

/* The fake's channels of one account: the JSON array (caller deletes the
 * whole reply through *all). */
static cJSON *fake_channels(const char *email, cJSON **all)
{
    *all = tp_admin("GET", "/__admin/push", NULL);
    cJSON *out = cJSON_CreateArray();
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(*all, "channels"))
    {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(c, "email");
        if (cJSON_IsString(e) && strcmp(e->valuestring, email) == 0) {
            cJSON_AddItemReferenceToArray(out, (cJSON *)c);
        }
    }
    return out;
}

/* Whether the fake recorded the sync message of channel id as answered 200,
 * looking again every 100 ms for up to ms. */
static bool sync_delivered(const char *id, int ms)
{
    for (int waited = 0;; waited += 100) {
        cJSON *all = tp_admin("GET", "/__admin/push", NULL);
        bool ok = false;
        const cJSON *dl;
        cJSON_ArrayForEach(dl, cJSON_GetObjectItemCaseSensitive(all, "deliveries"))
        {
            const cJSON *ch = cJSON_GetObjectItemCaseSensitive(dl, "channel");
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(dl, "state");
            const cJSON *code = cJSON_GetObjectItemCaseSensitive(dl, "status");
            if (cJSON_IsString(ch) && strcmp(ch->valuestring, id) == 0 && cJSON_IsString(st) &&
                strcmp(st->valuestring, "sync") == 0 && cJSON_IsNumber(code) &&
                code->valueint == 200) {
                ok = true;
            }
        }
        cJSON_Delete(all);
        if (ok || waited >= ms) {
            return ok;
        }
        tp_sleep_ms(100);
    }
}

static int fake_live_channels(const char *email)
{
    cJSON *all = NULL;
    cJSON *arr = fake_channels(email, &all);
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, arr)
    {
        n += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "live"));
    }
    cJSON_Delete(arr);
    cJSON_Delete(all);
    return n;
}

/* Our registered channels of the user's active row (resource_id known). */
static long db_channels(const tp_user_t *u)
{
    const char *p[] = {u->user_id};
    return tp_sql_long("SELECT count(*) FROM drive_push_channels c JOIN drive_polls d"
                       " ON d.id = c.poll_id WHERE d.user_id = $1::uuid AND d.active"
                       " AND c.resource_id IS NOT NULL AND c.stop_after IS NULL",
                       1, p);
}

static long all_db_channels(const tp_user_t *u)
{
    const char *p[] = {u->user_id};
    return tp_sql_long("SELECT count(*) FROM drive_push_channels WHERE user_id = $1::uuid", 1, p);
}

static bool wait_db_channels(const tp_user_t *u, long want, int ms)
{
    long long end = tp_now_ms() + ms;
    while (tp_now_ms() < end) {
        if (db_channels(u) == want) {
            return true;
        }
        tp_sleep_ms(50);
    }
    return db_channels(u) == want;
}

static bool wait_all_db_channels(const tp_user_t *u, long want, int ms)
{
    long long end = tp_now_ms() + ms;
    while (tp_now_ms() < end) {
        if (all_db_channels(u) == want) {
            return true;
        }
        tp_sleep_ms(50);
    }
    return all_db_channels(u) == want;
}

/* POST /webhooks/drive as Google would, with our choice of headers. */
static long notify(const char *channel, const char *token, const char *state, char **resp)
{
    char h1[128], h2[400], h3[64];
    const char *headers[5] = {NULL};
    int n = 0;
    if (channel != NULL) {
        snprintf(h1, sizeof(h1), "X-Goog-Channel-ID: %s", channel);
        headers[n++] = h1;
    }
    if (token != NULL) {
        snprintf(h2, sizeof(h2), "X-Goog-Channel-Token: %s", token);
        headers[n++] = h2;
    }
    if (state != NULL) {
        snprintf(h3, sizeof(h3), "X-Goog-Resource-State: %s", state);
        headers[n++] = h3;
    }
    headers[n] = NULL;
    return http_call_h("POST", hook_url, headers, NULL, resp, NULL);
}

/* A metric's value from the poller's /metrics (the line's prefix), 0 when absent. */
static double metric(const char *prefix)
{
    char url[192];
    snprintf(url, sizeof(url), "%s/metrics", tp_poller.base_url);
    char *body = NULL;
    double v = 0;
    if (http_call("GET", url, NULL, &body) == 200 && body != NULL) {
        const char *l = strstr(body, prefix);
        if (l != NULL) {
            const char *sp = strchr(l, ' ');
            v = sp != NULL ? atof(sp + 1) : 0;
        }
    }
    free(body);
    return v;
}

/* A user watched, first poll and its channel done. */
static void watched_user(tp_user_t *u, const char *prefix)
{
    assert_int_equal(tp_new_user(u, prefix), 0);
    assert_int_equal(tp_watch(u), 0);
    TP_CHECK(tp_wait_scanned(u, 10000));
    TP_CHECK(wait_db_channels(u, 1, 10000));
}

static long changes_calls(long since)
{
    return tp_requests_count(since, "/drive/v3/changes", NULL);
}

static int start_push_poller(const char *interval)
{
    const char *extra[] = {"POLLER_CONCURRENCY=2", hook_env, port_env, "DRIVE_WEBHOOK_RATE=50",
                           NULL};
    return tp_start_poller(&tp_poller, interval, extra);
}

static int group_setup(void **state)
{
    (void)state;
    if (tp_setup_world() != 0) {
        return -1;
    }
    push_port = free_port();
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%d/webhooks/drive", push_port);
    snprintf(hook_env, sizeof(hook_env), "DRIVE_WEBHOOK_URL=%s", hook_url);
    snprintf(port_env, sizeof(port_env), "PORT=%d", push_port);
    return 0;
}

/* DRIVE_WEBHOOK_URL unset: polling only, no changes.watch, no channel row. */
static void test_no_channel_when_unset(void **state)
{
    (void)state;
    const char *extra[] = {"POLLER_CONCURRENCY=2", NULL};
    assert_int_equal(tp_start_poller(&tp_poller, "300", extra), 0);
    long since = tp_requests_next();
    tp_user_t u;
    assert_int_equal(tp_new_user(&u, "nopush"), 0);
    assert_int_equal(tp_watch(&u), 0);
    TP_CHECK(tp_wait_scanned(&u, 10000));
    tp_sleep_ms(500);
    fake_match_t m = {.method = "POST", .path = "/drive/v3/changes/watch", .since = since};
    TP_CHECK(fake_count_requests(tp_google.base_url, &m) == 0);
    TP_CHECK(all_db_channels(&u) == 0);
    /* no route either */
    TP_CHECK(http_call("POST", tp_poller.base_url, NULL, NULL) != 200);
    char url[192];
    snprintf(url, sizeof(url), "%s/webhooks/drive", tp_poller.base_url);
    TP_CHECK(http_call("POST", url, NULL, NULL) == 404);
    assert_int_equal(daemon_stop(&tp_poller), 0);
    /* that user's folder is not ours any more */
    const char *p[] = {u.user_id};
    assert_int_equal(sql_exec("SELECT drive_polls_stop_watch($1::uuid)", 1, p), 0);
}

/* With the URL: a channel at the fake for the watch, with our address, the
 * secret stored only as a hash; the sync message answered 200 and ignored. */
static void test_register_and_sync_ignored(void **state)
{
    (void)state;
    assert_int_equal(start_push_poller("300"), 0);
    tp_user_t u;
    long since = tp_requests_next();
    watched_user(&u, "reg");
    cJSON *all = NULL;
    cJSON *chs = fake_channels(u.email, &all);
    TP_CHECK(cJSON_GetArraySize(chs) == 1);
    const cJSON *c = cJSON_GetArrayItem(chs, 0);
    TP_CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(c, "address")->valuestring, hook_url) == 0);
    TP_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "live")));
    char id[64];
    tp_copy_str(id, sizeof(id), c, "id");
    char rid[128];
    tp_copy_str(rid, sizeof(rid), c, "resourceId");
    const char *p[] = {id, rid};
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_push_channels WHERE id = $1::uuid"
                         " AND resource_id = $2 AND octet_length(token_sha256) = 32",
                         2, p) == 1);
    cJSON_Delete(chs);
    cJSON_Delete(all);
    /* the sync message was delivered and answered 200 (the fake sends it
     * after the channel exists and records the answer when it arrives: under
     * ASan that can be after the first look, so look until it is there) */
    TP_CHECK(sync_delivered(id, 10000));
    /* sync made nothing due: the one changes.list of the first poll only
     * (or none: a first poll without a token lists instead) */
    long before = changes_calls(since);
    tp_sleep_ms(1500);
    TP_CHECK(changes_calls(since) == before);
    TP_CHECK(metric("ca_poller_push_notifications_total{state=\"sync\"}") >= 1);
    const char *q[] = {u.user_id};
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_polls WHERE user_id = $1::uuid AND active"
                         " AND push_requested_at IS NULL",
                         1, q) == 1);
}

/* A photo dropped into the folder becomes a job within seconds although the
 * next poll is five minutes away. */
static void test_drop_becomes_job_within_seconds(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u, "drop");
    long jobs = tp_jobs_of(&u);
    char fid[128];
    long long t0 = tp_now_ms();
    assert_int_equal(tp_image(&u, "IMG_0001.jpg", u.folder_id, fid, sizeof(fid)), 0);
    TP_CHECK(tp_wait_jobs(&u, jobs + 1, 5000));
    long long took = tp_now_ms() - t0;
    print_message("drop to job: %lld ms (poll interval 300 s)\n", took);
    TP_CHECK(took < 5000);
    TP_CHECK(tp_jobs_for_file(&u, fid) == 1);
    TP_CHECK(metric("ca_poller_push_notifications_total{state=\"change\"}") >= 1);
    long dups = 0;
    TP_CHECK(tp_queue_check(&u, &dups) == jobs + 1 && dups == 0);
}

/* A wrong token, an unknown channel, a missing header: refused with the
 * error format, counted, and nothing is polled; the token is never logged. */
static void test_bad_token_and_unknown_channel_refused(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u, "bad");
    char id[64];
    const char *p[] = {u.user_id};
    tp_sql_str(id, sizeof(id),
               "SELECT c.id::text FROM drive_push_channels c JOIN drive_polls d ON d.id = c.poll_id"
               " WHERE d.user_id = $1::uuid AND d.active",
               1, p);
    TP_CHECK(id[0] != '\0');
    double bad0 = metric("ca_poller_push_refused_total{reason=\"bad_token\"}");
    double unk0 = metric("ca_poller_push_refused_total{reason=\"unknown_channel\"}");
    long since = tp_requests_next();
    char *resp = NULL;
    TP_CHECK(notify(id, "not-the-secret-0123456789", "change", &resp) == 403);
    TP_CHECK(resp != NULL && strstr(resp, "\"code\":\"forbidden\"") != NULL);
    free(resp);
    resp = NULL;
    TP_CHECK(notify(id, NULL, "change", NULL) == 403);
    TP_CHECK(notify("6f1c1d58-2a4b-4c1e-9b0e-0d7c3f5a9e11", "whatever", "change", &resp) == 403);
    TP_CHECK(resp != NULL && strstr(resp, "\"code\":\"forbidden\"") != NULL);
    free(resp);
    TP_CHECK(notify("not-a-uuid", "whatever", "change", NULL) == 403);
    TP_CHECK(notify(NULL, "whatever", "change", NULL) == 400);
    TP_CHECK(notify(id, "whatever", NULL, NULL) == 400);
    tp_sleep_ms(1500);
    TP_CHECK(changes_calls(since) == 0);
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_polls WHERE user_id = $1::uuid AND active"
                         " AND push_requested_at IS NULL AND next_poll_at > timezone('UTC', now())"
                         " + interval '60 seconds'",
                         1, p) == 1);
    TP_CHECK(metric("ca_poller_push_refused_total{reason=\"bad_token\"}") >= bad0 + 2);
    TP_CHECK(metric("ca_poller_push_refused_total{reason=\"unknown_channel\"}") >= unk0 + 2);
    TP_CHECK(!proc_log_contains(&tp_poller, "not-the-secret-0123456789"));
    /* a body is not a notification */
    char big[8192];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *h[] = {"X-Goog-Resource-State: change", NULL};
    TP_CHECK(http_call_h("POST", hook_url, h, big, NULL, NULL) == 413);
}

static bool changes_held(void *arg)
{
    return tp_changes_call_held(*(const long *)arg);
}

/* A notification that arrives while the folder is being polled (its
 * changes.list held by the fake) makes it due again at once when that poll
 * records, instead of an interval later: the change may be after the poll's
 * changes.list. */
static void test_notification_during_poll_polls_again(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u, "during");
    tp_sleep_ms(300);
    long since = tp_requests_next();
    fake_add_fault(tp_google.base_url,
                   "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},"
                   "\"count\":1,\"action\":\"delay\",\"delay_ms\":1500}");
    const char *p[] = {u.user_id};
    assert_int_equal(sql_exec("UPDATE drive_polls SET next_poll_at = timezone('UTC', now())"
                              " WHERE user_id = $1::uuid AND active",
                              1, p),
                     0);
    TP_CHECK(wait_until(changes_held, &since, 5000));
    /* a change (not an image: no job) while that poll waits for Drive */
    char fid[128];
    assert_int_equal(tp_file(&u, "notes.txt", "text/plain", u.folder_id, "", fid, sizeof(fid)), 0);
    long long end = tp_now_ms() + 6000;
    while (tp_now_ms() < end && changes_calls(since) < 2) {
        tp_sleep_ms(50);
    }
    fake_clear_faults(tp_google.base_url);
    TP_CHECK(changes_calls(since) >= 2);
    /* and then it rests: the next poll is an interval away */
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_polls WHERE user_id = $1::uuid AND active"
                         " AND next_poll_at > timezone('UTC', now()) + interval '60 seconds'",
                         1, p) == 1);
}

/* Past DRIVE_WEBHOOK_RATE (50/s here) requests get 429 rate_limited with
 * Retry-After, before anything else is looked at. */
static void test_rate_limited(void **state)
{
    (void)state;
    double before = metric("ca_poller_push_refused_total{reason=\"rate_limited\"}");
    int limited = 0;
    int bad = 0;
    char *hdrs = NULL;
    for (int i = 0; i < 150; i++) {
        char *resp = NULL;
        char *rh = NULL;
        long st = http_call_h("POST", hook_url, NULL, NULL, &resp, &rh);
        if (st == 429) {
            limited++;
            if (hdrs == NULL && resp != NULL && strstr(resp, "\"code\":\"rate_limited\"") != NULL) {
                hdrs = rh;
                rh = NULL;
            }
        } else if (st != 400) {
            bad++;
        }
        free(resp);
        free(rh);
    }
    print_message("150 requests at once: %d refused with 429\n", limited);
    TP_CHECK(bad == 0);
    TP_CHECK(limited >= 50);
    TP_CHECK(hdrs != NULL && strcasestr(hdrs, "Retry-After: 1") != NULL);
    free(hdrs);
    TP_CHECK(metric("ca_poller_push_refused_total{reason=\"rate_limited\"}") >= before + limited);
    tp_sleep_ms(1200); /* the bucket fills again */
}

/* A short channel (the fake caps it at 6 s) is renewed before it ends: the
 * new channel exists before the old one's end, then the old one is stopped. */
static void test_renewed_before_expiry(void **state)
{
    (void)state;
    cJSON_Delete(tp_admin("POST", "/__admin/push", "{\"max_seconds\":6}"));
    tp_user_t u;
    watched_user(&u, "renew");
    cJSON *all = NULL;
    cJSON *chs = fake_channels(u.email, &all);
    TP_CHECK(cJSON_GetArraySize(chs) == 1);
    char first[64];
    char first_exp[32];
    tp_copy_str(first, sizeof(first), cJSON_GetArrayItem(chs, 0), "id");
    tp_copy_str(first_exp, sizeof(first_exp), cJSON_GetArrayItem(chs, 0), "expiration");
    cJSON_Delete(chs);
    cJSON_Delete(all);
    long since = tp_requests_next();
    /* wait for a second channel at the fake */
    long long end = tp_now_ms() + 10000;
    char second[64] = "";
    char second_created[64] = "";
    while (tp_now_ms() < end && second[0] == '\0') {
        chs = fake_channels(u.email, &all);
        const cJSON *c;
        cJSON_ArrayForEach(c, chs)
        {
            char cid[64];
            tp_copy_str(cid, sizeof(cid), c, "id");
            if (strcmp(cid, first) != 0) {
                snprintf(second, sizeof(second), "%s", cid);
                tp_copy_str(second_created, sizeof(second_created), c, "created");
            }
        }
        cJSON_Delete(chs);
        cJSON_Delete(all);
        tp_sleep_ms(100);
    }
    cJSON_Delete(tp_admin("POST", "/__admin/push", "{\"max_seconds\":604800}"));
    TP_CHECK(second[0] != '\0');
    /* made before the first one ended */
    const char *p[] = {second_created, first_exp};
    TP_CHECK(
        tp_sql_long("SELECT ($1::timestamptz < to_timestamp($2::double precision / 1000))::int", 2,
                    p) == 1);
    /* the old one is stopped at Google and forgotten here */
    fake_match_t m = {.method = "POST", .path = "/drive/v3/channels/stop", .since = since};
    end = tp_now_ms() + 8000;
    while (tp_now_ms() < end && fake_count_requests(tp_google.base_url, &m) < 1) {
        tp_sleep_ms(100);
    }
    TP_CHECK(fake_count_requests(tp_google.base_url, &m) >= 1);
    const char *q[] = {first};
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_push_channels WHERE id = $1::uuid", 1, q) ==
             0);
    TP_CHECK(metric("ca_poller_push_channels_total{event=\"renewed\"}") >= 1);
    /* and a drop still arrives in seconds through the renewed channel */
    TP_CHECK(wait_db_channels(&u, 1, 10000));
    long jobs = tp_jobs_of(&u);
    char fid[128];
    assert_int_equal(tp_image(&u, "renewed.jpg", u.folder_id, fid, sizeof(fid)), 0);
    TP_CHECK(tp_wait_jobs(&u, jobs + 1, 5000));
}

static bool wait_stopped_at_fake(const tp_user_t *u, int ms)
{
    long long end = tp_now_ms() + ms;
    while (tp_now_ms() < end) {
        if (fake_live_channels(u->email) == 0) {
            return true;
        }
        tp_sleep_ms(100);
    }
    return fake_live_channels(u->email) == 0;
}

/* The watch stops: the channel is stopped at Google (channels.stop). */
static void test_stopped_on_unwatch(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u, "unwatch");
    TP_CHECK(fake_live_channels(u.email) == 1);
    const char *p[] = {u.user_id};
    assert_int_equal(sql_exec("SELECT drive_polls_stop_watch($1::uuid)", 1, p), 0);
    TP_CHECK(wait_stopped_at_fake(&u, 8000));
    TP_CHECK(wait_all_db_channels(&u, 0, 5000));
}

/* Another folder: the old row's channel is stopped, the new row gets one. */
static void test_replaced_on_folder_change(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u, "refold");
    char old_id[64];
    const char *p[] = {u.user_id};
    tp_sql_str(old_id, sizeof(old_id),
               "SELECT id::text FROM drive_push_channels WHERE user_id = $1::uuid", 1, p);
    assert_int_equal(tp_file(&u, "Second", NULL, u.root_id, "", u.folder_id, sizeof(u.folder_id)),
                     0);
    assert_int_equal(tp_watch(&u), 0);
    TP_CHECK(wait_db_channels(&u, 1, 10000));
    const char *q[] = {old_id};
    long long end = tp_now_ms() + 8000;
    while (tp_now_ms() < end &&
           tp_sql_long("SELECT count(*) FROM drive_push_channels WHERE id = $1::uuid", 1, q) != 0) {
        tp_sleep_ms(100);
    }
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_push_channels WHERE id = $1::uuid", 1, q) ==
             0);
    TP_CHECK(fake_live_channels(u.email) == 1);
}

/* A deactivated user: the channel is stopped. */
static void test_stopped_on_deactivation(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u, "deact");
    const char *p[] = {u.user_id};
    assert_int_equal(sql_exec("UPDATE users SET is_active = false WHERE id = $1::uuid", 1, p), 0);
    TP_CHECK(wait_stopped_at_fake(&u, 8000));
    TP_CHECK(wait_all_db_channels(&u, 0, 5000));
    TP_CHECK(metric("ca_poller_push_channels_total{event=\"stopped\"}") >= 1);
}

/* A channel that silently stopped (and a dropped message): the drop is
 * found by the next poll, which push does not replace. The poller runs here
 * with a 4 s interval (same address). */
static void test_lost_notification_caught_by_poll(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&tp_poller), 0);
    assert_int_equal(start_push_poller("4"), 0);
    tp_user_t u;
    watched_user(&u, "lost");
    char body[256];
    snprintf(body, sizeof(body), "{\"email\":\"%s\",\"mode\":\"stop\"}", u.email);
    cJSON_Delete(tp_admin("POST", "/__admin/push/silence", body));
    double changes0 = metric("ca_poller_push_notifications_total{state=\"change\"}");
    long jobs = tp_jobs_of(&u);
    char fid[128];
    assert_int_equal(tp_image(&u, "lost.jpg", u.folder_id, fid, sizeof(fid)), 0);
    TP_CHECK(tp_wait_jobs(&u, jobs + 1, 12000));
    TP_CHECK(tp_jobs_for_file(&u, fid) == 1);
    TP_CHECK(metric("ca_poller_push_notifications_total{state=\"change\"}") == changes0);
}

/* Push turned off (the variable unset): the poller stops every channel left
 * from when it was on. */
static void test_push_off_stops_every_channel(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&tp_poller), 0);
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_push_channels", 0, NULL) > 0);
    const char *extra[] = {"POLLER_CONCURRENCY=2", NULL};
    assert_int_equal(tp_start_poller(&tp_poller, "300", extra), 0);
    long long end = tp_now_ms() + 10000;
    while (tp_now_ms() < end &&
           tp_sql_long("SELECT count(*) FROM drive_push_channels", 0, NULL) != 0) {
        tp_sleep_ms(100);
    }
    TP_CHECK(tp_sql_long("SELECT count(*) FROM drive_push_channels", 0, NULL) == 0);
    cJSON *all = tp_admin("GET", "/__admin/push", NULL);
    int live = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(all, "channels"))
    {
        live += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "live"));
    }
    cJSON_Delete(all);
    TP_CHECK(live == 0);
}

static void test_poller_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&tp_poller), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_channel_when_unset),
        cmocka_unit_test(test_register_and_sync_ignored),
        cmocka_unit_test(test_drop_becomes_job_within_seconds),
        cmocka_unit_test(test_bad_token_and_unknown_channel_refused),
        cmocka_unit_test(test_notification_during_poll_polls_again),
        cmocka_unit_test(test_rate_limited),
        cmocka_unit_test(test_renewed_before_expiry),
        cmocka_unit_test(test_stopped_on_unwatch),
        cmocka_unit_test(test_replaced_on_folder_change),
        cmocka_unit_test(test_stopped_on_deactivation),
        cmocka_unit_test(test_lost_notification_caught_by_poll),
        cmocka_unit_test(test_push_off_stops_every_channel),
        cmocka_unit_test(test_poller_exits_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, tp_group_teardown);
}
