/*
 * job-worker: photos held back by the quota are not lost (issue 15), end to
 * end on the real stack: PostgreSQL, Redis, the Google and Stripe fakes, the
 * real job-worker, api-gateway and billing-webhook binaries.
 *
 * - Photos over a free user's limit wait (status queued, waiting_for "quota"
 *   in the API, GET /api/usage counts them), in no Redis list, no failure and
 *   no e-mail; after a plan upgrade (a signed customer.subscription.created to
 *   creator, applied by the billing-webhook) they complete by themselves, in
 *   arrival order, one usage count and one output each.
 * - Again at a period renewal (the usage functions' period is the calendar
 *   month for a free user: the count is moved to last month; for a paid plan
 *   the subscription's period: a customer.subscription.updated with the next
 *   period).
 * - With room for only k of n waiting jobs, exactly k run and n - k wait on.
 * - A waiting job can be cancelled (it stops waiting; the release skips it).
 * - A waiting job survives a Redis FLUSHALL and the re-push recovery leaves it
 *   alone; a released job whose push was lost is recovered.
 * - A new photo claimed while an older one waits does not overtake it.
 *
 * The worker runs one job at a time here, so that completion order is
 * arrival order.
 */
#define _GNU_SOURCE
#include "cpu_exec.h"
#include "crypto.h"
#include "fake_admin.h"
#include "google_oauth.h"
#include "gw_session.h"
#include "queue.h"
#include "redis.h"
#include "support.h"
#include "worker_user.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define KEY_B64 GWT_ENCRYPTION_KEY
#define CLIENT_ID "ca-worker-test"
#define WEBHOOK_SECRET "whsec_quota_tests"
#define PRICE_CREATOR "price_basic_monthly"
#define PRICE_STUDIO "price_pro_monthly"

static proc_t google, stripe, worker, gw, billing;
static crypto_keyring_t *keys;
static redis_conn_t *redis;
static char worker_db_url[512];
static char webhook_url[192];
static char *jpeg_b64;

/* ---------------------------------------------------------------- helpers */

static char *b64_jpeg(int w, int h)
{
    VipsImage *bands[3] = {NULL, NULL, NULL};
    VipsImage *joined = NULL;
    VipsImage *u8 = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            vips_gaussnoise(&bands[i], w, h, "mean", 110.0 + 20 * i, "sigma", 35.0, NULL), 0);
    }
    assert_int_equal(vips_bandjoin(bands, &joined, 3, NULL), 0);
    assert_int_equal(vips_cast_uchar(joined, &u8, NULL), 0);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(vips_jpegsave_buffer(u8, &buf, &len, "Q", 85, NULL), 0);
    char *b64 = crypto_base64_encode(buf, len);
    g_free(buf);
    for (int i = 0; i < 3; i++) {
        g_object_unref(bands[i]);
    }
    g_object_unref(joined);
    g_object_unref(u8);
    return b64;
}

typedef wu_user_t user_t;

static user_t make_user(const char *email)
{
    return wu_make_user(google.base_url, keys, CLIENT_ID, email,
                        "openid email profile " GOOGLE_DRIVE_SCOPES);
}

/* A photo in the user's inbox and its job (as the poller makes it: created,
 * then pushed to the user's fair-queue list). created_at strictly increases
 * between two calls (arrival order is (created_at, id)). */
static void new_photo(const user_t *u, const char *name, bool push, char *job, size_t joblen)
{
    char file[128];
    wu_drive_file(google.base_url, u, name, "image/jpeg", jpeg_b64, file, sizeof(file));
    const char *params[] = {u->id, file, name, u->inbox};
    char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2, $3, $4,"
                         " 1000, 'image/jpeg', 'landscape_vivid')",
                         4, params);
    assert_non_null(id);
    snprintf(job, joblen, "%s", id);
    free(id);
    if (push) {
        char err[256];
        assert_int_equal(queue_push_user(redis, job, u->id, "free", err, sizeof(err)), 0);
    }
    usleep(2000);
}

static long count_sql(const char *sql, const char *a)
{
    const char *p[] = {a};
    char *v = sql_value(sql, a != NULL ? 1 : 0, p);
    assert_non_null(v);
    long n = atol(v);
    free(v);
    return n;
}

static long n_status(const user_t *u, const char *status)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM jobs WHERE user_id = $1::uuid AND status = '%s'"
             " AND quota_waiting_since IS NULL",
             status);
    return count_sql(sql, u->id);
}

static long n_waiting(const user_t *u)
{
    return count_sql("SELECT count(*) FROM jobs WHERE user_id = $1::uuid AND status = 'queued'"
                     " AND quota_waiting_since IS NOT NULL",
                     u->id);
}

typedef struct {
    const user_t *u;
    long completed;
    long waiting;
} state_want_t;

static bool reached(void *arg)
{
    const state_want_t *w = arg;
    return n_status(w->u, "completed") == w->completed && n_waiting(w->u) == w->waiting &&
           n_status(w->u, "queued") == 0 && n_status(w->u, "processing") == 0;
}

/* Waits until the user has exactly `completed` completed jobs and `waiting`
 * jobs waiting for quota, and nothing else queued or running. */
static void wait_state(const user_t *u, long completed, long waiting, int timeout_ms)
{
    state_want_t w = {u, completed, waiting};
    if (!wait_until(reached, &w, timeout_ms)) {
        proc_print_log(&worker);
        fail_msg("want %ld completed / %ld waiting, have %ld / %ld (queued %ld, processing %ld,"
                 " failed %ld)",
                 completed, waiting, n_status(u, "completed"), n_waiting(u), n_status(u, "queued"),
                 n_status(u, "processing"), n_status(u, "failed"));
    }
}

/* How many times `job` is in the queue: ca:jobs, the users' lists, the
 * processing lists and the delayed set. */
static long long id_in_redis(const char *job)
{
    static const char script[] =
        "local n = 0\n"
        "local function is(v)\n"
        "  return v == ARGV[1] or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' '\n"
        "end\n"
        "local function count(k)\n"
        "  for _, v in ipairs(redis.call('LRANGE', k, 0, -1)) do if is(v) then n = n + 1 end end\n"
        "end\n"
        "count('ca:jobs')\n"
        "for _, k in ipairs(redis.call('KEYS', 'ca:jobs:processing:*')) do count(k) end\n"
        "for _, k in ipairs(redis.call('KEYS', 'ca:jobs:u:*')) do count(k) end\n"
        "for _, v in ipairs(redis.call('ZRANGE', 'ca:jobs:delayed', 0, -1)) do\n"
        "  if is(v) then n = n + 1 end\n"
        "end\n"
        "return n\n";
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "EVAL %s 0 %s", script, job);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* The user's usage this calendar month (a free user's period). */
static long usage_now(const user_t *u, const char *col)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT COALESCE((SELECT %s FROM usage_tracking WHERE user_id = $1::uuid"
             " AND month = date_trunc('month', timezone('UTC', now()))::date), 0)",
             col);
    return count_sql(sql, u->id);
}

/* A free user who used the whole month already (10 of 10): what they drop
 * now waits. */
static void use_up_month(const user_t *u)
{
    const char *p[] = {u->id};
    assert_int_equal(sql_exec("INSERT INTO usage_tracking (user_id, month, tier, monthly_limit,"
                              " images_processed) VALUES ($1::uuid,"
                              " date_trunc('month', timezone('UTC', now()))::date, 'free', 10, 10)",
                              1, p),
                     0);
}

static bool digest_tried(void *arg)
{
    return count_sql("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid"
                     " AND notice_id IS NULL AND attempts > 0",
                     arg) > 0;
}

/* A signed Stripe event (stripe-send-event.js, npm stripe's signature) to the
 * billing-webhook: subscription `sub` of the user is `price`'s plan, active;
 * `extra` more --set options (or ""). */
static void stripe_event(const user_t *u, const char *type, const char *evt, long long created,
                         const char *sub, const char *price, const char *extra)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "node %s/tests/fakes/stripe-send-event.js --url %s --secret %s"
             " --type %s --id %s --set created=%lld"
             " --set data.object.id=sub_%s --set data.object.customer=cus_%s"
             " --set data.object.metadata.user_id=%s"
             " --set data.object.items.data.0.price.id=%s --set data.object.status=active %s",
             getenv("CA_ROOT"), webhook_url, WEBHOOK_SECRET, type, evt, created, sub, sub, u->id,
             price, extra);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char out[512] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    pclose(f);
    long status = -1;
    if (sscanf(out, "status %ld", &status) != 1 || status != 200) {
        fprintf(stderr, "stripe event: %s\n", out);
        proc_print_log(&billing);
    }
    assert_int_equal(status, 200);
}

/* The upgrade, as Stripe sends it: customer.subscription.created for `price`. */
static void subscribe(const user_t *u, const char *evt, const char *price)
{
    stripe_event(u, "customer.subscription.created", evt, (long long)time(NULL), evt, price, "");
}

/* The completed jobs of the user ordered by completion equal `jobs` (n ids,
 * in arrival order). */
static void assert_completed_in_order(const user_t *u, char jobs[][64], int from, int n)
{
    const char *p[] = {u->id};
    char *got = sql_value("SELECT string_agg(id::text, ',' ORDER BY completed_at, id) FROM jobs"
                          " WHERE user_id = $1::uuid AND status = 'completed'",
                          1, p);
    assert_non_null(got);
    size_t cap = (size_t)(n + from) * 40 + 1;
    char *want = calloc(1, cap);
    for (int i = from; i < from + n; i++) {
        if (want[0] != '\0') {
            strcat(want, ",");
        }
        strcat(want, jobs[i]);
    }
    if (strstr(got, want) == NULL) {
        fprintf(stderr, "completion order:\n  got  %s\n  want ...%s\n", got, want);
        char *rows = sql_value("SELECT string_agg(id || ' ' || created_at || ' ' || completed_at"
                               " || ' attempt ' || attempt || ' retries ' || retry_count,"
                               " E'\n' ORDER BY created_at) FROM jobs WHERE user_id = $1::uuid",
                               1, p);
        fprintf(stderr, "%s\n", rows);
        free(rows);
        proc_print_log(&worker);
    }
    /* the last n completions are these, in this order */
    size_t gl = strlen(got), wl = strlen(want);
    assert_true(gl >= wl);
    assert_string_equal(got + gl - wl, want);
    free(want);
    free(got);
}

/* Every job of `jobs` completed exactly once: one processed reservation and
 * one output in Drive. */
static void assert_once_each(const user_t *u, char jobs[][64], int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(count_sql("SELECT count(*) FROM usage_reservations WHERE job_id = $1::uuid"
                                   " AND state = 'processed'",
                                   jobs[i]),
                         1);
        assert_int_equal(wu_outputs_for(google.base_url, u, jobs[i]), 1);
    }
}

static long long log_count(const proc_t *p, const char *needle)
{
    FILE *f = fopen(p->log_path, "r");
    assert_non_null(f);
    char line[4096];
    long long n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

static gwt_resp_t api(const gwt_session_t *s, const char *method, const char *path)
{
    return gwt_request(gw.base_url, method, path, s, strcmp(method, "GET") != 0, NULL);
}

static int start_worker(void)
{
    const char *extra[] = {"LOG_LEVEL=debug", "WORKER_CONCURRENCY=1", "WORKER_REPUSH_SECONDS=2",
                           "WORKER_QUOTA_RELEASE_MS=300", "WORKER_RETRY_BASE_MS=200",
                           /* completions write e-mail outbox rows (nothing listens:
                            * they stay pending) */
                           "SMTP_URL=smtp://127.0.0.1:9", NULL};
    return wu_start_worker(&worker, google.base_url, KEY_B64, CLIENT_ID, extra);
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
    (void)state;
    if (getenv("TEST_DATABASE_URL") == NULL || getenv("TEST_REDIS_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL / TEST_REDIS_URL not set (run through tests/run)\n");
        return -1;
    }
    if (cpu_exec_init("test_worker_quota") != 0) {
        return -1;
    }
    char err[256];
    keys = crypto_keyring_new(KEY_B64, NULL, err, sizeof(err));
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    if (keys == NULL || redis == NULL) {
        return -1;
    }
    snprintf(worker_db_url, sizeof(worker_db_url), "%s", db_url_as("ca_job_worker"));
    setenv("REDIS_URL", getenv("TEST_REDIS_URL"), 1);
    setenv("ENCRYPTION_KEY", KEY_B64, 1);
    if (fake_start(&google, "google", NULL) != 0 || fake_start(&stripe, "stripe", NULL) != 0) {
        return -1;
    }
    char db[512], rurl[256], sapi[256];
    snprintf(db, sizeof db, "DATABASE_URL=%s", db_url_as("ca_billing_webhook"));
    snprintf(rurl, sizeof rurl, "REDIS_URL=%s", getenv("TEST_REDIS_URL"));
    snprintf(sapi, sizeof sapi, "STRIPE_API_URL=%s", stripe.base_url);
    const char *benv[] = {db,
                          rurl,
                          sapi,
                          "STRIPE_WEBHOOK_SECRET=" WEBHOOK_SECRET,
                          "STRIPE_SECRET_KEY=sk_test_quota",
                          "STRIPE_PRICE_CREATOR=" PRICE_CREATOR,
                          "STRIPE_PRICE_STUDIO=" PRICE_STUDIO,
                          "LOG_LEVEL=info",
                          NULL};
    if (daemon_start(&billing, "billing-webhook", benv) != 0) {
        return -1;
    }
    snprintf(webhook_url, sizeof webhook_url, "%s/webhooks/stripe", billing.base_url);
    if (gwt_start(&gw, google.base_url, NULL) != 0) {
        return -1;
    }
    jpeg_b64 = b64_jpeg(160, 120);
    return start_worker();
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    proc_t *daemons[] = {&worker, &gw, &billing};
    for (size_t i = 0; i < sizeof(daemons) / sizeof(daemons[0]); i++) {
        if (daemons[i]->pid > 0 && proc_stop(daemons[i]) != 0) {
            proc_print_log(daemons[i]);
            rc = -1;
        }
    }
    proc_stop(&google);
    proc_stop(&stripe);
    redis_close(redis);
    crypto_keyring_free(keys);
    free(jpeg_b64);
    cpu_exec_shutdown();
    return rc;
}

/* ---------------------------------------------------------------- tests */

/* 20 photos of a free user: 10 complete, 10 wait (shown as waiting, counted
 * in /api/usage, in no Redis list, no failure, no e-mail); the upgrade to
 * creator releases them and they complete in arrival order, once each. */
static void test_wait_then_upgrade(void **state)
{
    (void)state;
    user_t u = make_user("quota-upgrade@example.com");
    gwt_session_t s;
    assert_int_equal(gwt_sign_in(gw.base_url, u.email, &s), 0);
    assert_string_equal(s.id, u.id);
    char jobs[20][64];
    for (int i = 0; i < 20; i++) {
        char name[32];
        snprintf(name, sizeof(name), "up%02d.jpg", i);
        new_photo(&u, name, true, jobs[i], sizeof(jobs[i]));
    }
    wait_state(&u, 10, 10, 60000);
    assert_completed_in_order(&u, jobs, 0, 10);
    assert_int_equal(n_status(&u, "failed"), 0);
    assert_int_equal(usage_now(&u, "images_processed"), 10);
    assert_int_equal(usage_now(&u, "images_failed"), 0);
    for (int i = 10; i < 20; i++) {
        assert_int_equal(n_waiting(&u), 10);
        assert_int_equal(id_in_redis(jobs[i]), 0);
        char *lease = wu_job_col(jobs[i], "COALESCE(lease_expires_at::text, '-') || ' ' ||"
                                          " COALESCE(worker_id, '-') || ' ' || retry_count");
        assert_string_equal(lease, "- - 0");
        free(lease);
        /* nothing counted for it, no e-mail about it */
        assert_int_equal(count_sql("SELECT count(*) FROM usage_reservations WHERE job_id ="
                                   " $1::uuid AND state IN ('reserved', 'processed')",
                                   jobs[i]),
                         0);
        assert_int_equal(
            count_sql("SELECT count(*) FROM email_outbox WHERE $1::uuid = ANY(job_ids)", jobs[i]),
            0);
    }

    /* the API shows them waiting */
    char path[160];
    snprintf(path, sizeof(path), "/api/jobs/%s", jobs[15]);
    gwt_resp_t r = api(&s, "GET", path);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "queued");
    assert_string_equal(gwt_str(r.json, "waiting_for"), "quota");
    gwt_resp_free(&r);
    snprintf(path, sizeof(path), "/api/jobs/%s", jobs[3]);
    r = api(&s, "GET", path);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "completed");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "waiting_for")));
    gwt_resp_free(&r);
    r = api(&s, "GET", "/api/jobs?waiting_for=quota&limit=100");
    assert_int_equal(r.status, 200);
    const cJSON *list = cJSON_GetObjectItem(r.json, "jobs");
    assert_int_equal(cJSON_GetArraySize(list), 10);
    int i = 19; /* newest first */
    const cJSON *job;
    cJSON_ArrayForEach(job, list)
    {
        assert_string_equal(gwt_str(job, "id"), jobs[i--]);
        assert_string_equal(gwt_str(job, "waiting_for"), "quota");
        assert_string_equal(gwt_str(job, "status"), "queued");
    }
    gwt_resp_free(&r);
    /* pages of the filtered list: 10 = 4 + 4 + 2 */
    r = api(&s, "GET", "/api/jobs?waiting_for=quota&limit=4");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "jobs")), 4);
    char next[300];
    snprintf(next, sizeof(next), "/api/jobs?waiting_for=quota&status=queued&limit=4&cursor=%s",
             gwt_str(r.json, "next_cursor"));
    gwt_resp_free(&r);
    r = api(&s, "GET", next);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "jobs"), 0), "id"),
                        jobs[15]);
    gwt_resp_free(&r);
    r = api(&s, "GET", "/api/jobs?waiting_for=disk");
    assert_int_equal(r.status, 400);
    gwt_resp_free(&r);
    r = api(&s, "GET", "/api/jobs?status=completed&limit=100");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "jobs")), 10);
    gwt_resp_free(&r);
    r = api(&s, "GET", "/api/usage");
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetObjectItem(r.json, "waiting_for_quota")->valueint, 10);
    assert_int_equal(cJSON_GetObjectItem(r.json, "images_processed")->valueint, 10);
    assert_int_equal(cJSON_GetObjectItem(r.json, "monthly_limit")->valueint, 10);
    gwt_resp_free(&r);

    /* still waiting a few release sweeps later: no room, nothing moves */
    usleep(1500 * 1000);
    assert_int_equal(n_waiting(&u), 10);
    /* one "photos waiting for quota" notice for the period, saying how many,
     * with one e-mail (notices_quota_waiting, job-worker 107) */
    assert_int_equal(count_sql("SELECT count(*) FROM notices WHERE user_id = $1::uuid"
                               " AND kind = 'quota_waiting'",
                               u.id),
                     1);
    assert_int_equal(count_sql("SELECT (data->>'waiting')::int FROM notices"
                               " WHERE user_id = $1::uuid AND kind = 'quota_waiting'",
                               u.id),
                     10);
    assert_int_equal(count_sql("SELECT count(*) FROM notices n WHERE n.user_id = $1::uuid"
                               " AND n.kind = 'quota_waiting' AND n.message LIKE '10 photos wait%'"
                               " AND n.cause_key = (SELECT period_start::text"
                               " FROM billing_quota_room($1::uuid))",
                               u.id),
                     1);
    assert_int_equal(count_sql("SELECT count(*) FROM email_outbox o JOIN notices n"
                               " ON n.id = o.notice_id WHERE o.user_id = $1::uuid"
                               " AND n.kind = 'quota_waiting'",
                               u.id),
                     1);

    /* the upgrade, as Stripe sends it */
    subscribe(&u, "evt_quota_up", PRICE_CREATOR);
    wait_state(&u, 20, 0, 60000);
    assert_completed_in_order(&u, jobs, 10, 10);
    assert_once_each(&u, jobs, 20);
    wu_assert_usage(&u, "images_processed", "20");
    wu_assert_usage(&u, "images_overage", "0");
    wu_assert_usage(&u, "images_failed", "0");
    r = api(&s, "GET", "/api/usage");
    assert_int_equal(cJSON_GetObjectItem(r.json, "waiting_for_quota")->valueint, 0);
    assert_string_equal(gwt_str(r.json, "tier"), "creator");
    gwt_resp_free(&r);
    snprintf(path, sizeof(path), "/api/jobs/%s", jobs[15]);
    r = api(&s, "GET", path);
    assert_string_equal(gwt_str(r.json, "status"), "completed");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "waiting_for")));
    gwt_resp_free(&r);
}

/* A free user at 10/10 with 10 photos waiting: the month turns (the usage
 * functions' period for a free plan is the calendar month; this month's count
 * is moved to last month), and the ten run, in order, counted in the new
 * period. */
static void test_period_renewal(void **state)
{
    (void)state;
    user_t u = make_user("quota-renew@example.com");
    use_up_month(&u);
    char jobs[10][64];
    for (int i = 0; i < 10; i++) {
        char name[32];
        snprintf(name, sizeof(name), "rn%02d.jpg", i);
        new_photo(&u, name, true, jobs[i], sizeof(jobs[i]));
    }
    wait_state(&u, 0, 10, 30000);
    usleep(1000 * 1000);
    assert_int_equal(n_waiting(&u), 10);
    assert_int_equal(usage_now(&u, "images_processed"), 10);

    const char *p[] = {u.id};
    assert_int_equal(sql_exec("UPDATE usage_tracking SET month = (month - interval '1 month')::date"
                              " WHERE user_id = $1::uuid",
                              1, p),
                     0);
    wait_state(&u, 10, 0, 60000);
    assert_completed_in_order(&u, jobs, 0, 10);
    assert_once_each(&u, jobs, 10);
    assert_int_equal(usage_now(&u, "images_processed"), 10);
    wu_assert_usage(&u, "images_processed", "20"); /* last month's 10 and this month's */
}

/* The e-mail digest waits for a user's jobs still running, not for jobs
 * waiting for quota (they may wait a month): with 9 of 10 used, one photo
 * completes and two wait, and the digest of the completed one goes at once
 * (EMAIL_DIGEST_WAIT_SECONDS is 300 here; SMTP_URL points at nothing, so
 * "goes" is seen as an attempt). */
static void test_digest_not_held_by_waiting(void **state)
{
    (void)state;
    user_t u = make_user("quota-digest@example.com");
    use_up_month(&u);
    const char *p[] = {u.id};
    assert_int_equal(sql_exec("UPDATE usage_tracking SET images_processed = 9"
                              " WHERE user_id = $1::uuid",
                              1, p),
                     0);
    char jobs[3][64];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "dg%02d.jpg", i);
        new_photo(&u, name, true, jobs[i], sizeof(jobs[i]));
    }
    wait_state(&u, 1, 2, 30000);
    /* the job digest's row (notice e-mails have a notice_id and their own rules) */
    assert_int_equal(count_sql("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid"
                               " AND notice_id IS NULL",
                               u.id),
                     1);
    /* the earlier tests' digests (failing against SMTP_URL, retried with
     * backoff, oldest first) out of the way */
    assert_int_equal(
        sql_exec("UPDATE email_outbox SET status = 'failed' WHERE user_id <> $1::uuid", 1, p), 0);
    if (!wait_until(digest_tried, u.id, 15000)) {
        proc_print_log(&worker);
        fail_msg("the digest waited for the jobs waiting for quota");
    }
}

/* A studio user at 500 of 500 in its paid period: photos wait; the renewal
 * (customer.subscription.updated with the next period, as Stripe sends it
 * when the subscription renews) starts a new period, and they run, counted
 * in it. The period of a paid plan is the subscription's current period, not
 * the calendar month. */
static void test_paid_period_renewal(void **state)
{
    (void)state;
    user_t u = make_user("quota-paid@example.com");
    long long now = (long long)time(NULL);
    char period[256];
    snprintf(period, sizeof(period),
             "--set data.object.items.data.0.current_period_start=%lld"
             " --set data.object.items.data.0.current_period_end=%lld",
             now - 20 * 86400, now + 10 * 86400);
    stripe_event(&u, "customer.subscription.created", "evt_paid_1", now - 5, "paid", PRICE_STUDIO,
                 period);
    const char *p[] = {u.id};
    char *start = sql_value("SELECT current_period_start::date::text FROM subscriptions"
                            " WHERE user_id = $1::uuid",
                            1, p);
    assert_non_null(start);
    const char *pu[] = {u.id, start};
    assert_int_equal(sql_exec("INSERT INTO usage_tracking (user_id, month, tier, monthly_limit,"
                              " images_processed) VALUES ($1::uuid, $2::date, 'studio', 500, 500)",
                              2, pu),
                     0);
    char jobs[2][64];
    new_photo(&u, "pp0.jpg", true, jobs[0], sizeof(jobs[0]));
    new_photo(&u, "pp1.jpg", true, jobs[1], sizeof(jobs[1]));
    wait_state(&u, 0, 2, 30000);
    usleep(1000 * 1000); /* sweeps: the paid period has no room (a calendar month would) */
    wait_state(&u, 0, 2, 1000);
    for (int i = 0; i < 2; i++) {
        char *a = wu_job_col(jobs[i], "attempt");
        assert_string_equal(a, "1");
        free(a);
    }

    /* the subscription renews: the next period starts now */
    snprintf(period, sizeof(period),
             "--set data.object.items.data.0.current_period_start=%lld"
             " --set data.object.items.data.0.current_period_end=%lld",
             now - 60, now + 30 * 86400);
    stripe_event(&u, "customer.subscription.updated", "evt_paid_2", now, "paid", PRICE_STUDIO,
                 period);
    wait_state(&u, 2, 0, 30000);
    assert_completed_in_order(&u, jobs, 0, 2);
    assert_once_each(&u, jobs, 2);
    assert_int_equal(
        count_sql("SELECT images_processed FROM usage_tracking WHERE user_id = $1::uuid"
                  " AND month = (SELECT current_period_start::date FROM subscriptions"
                  " WHERE user_id = $1::uuid)",
                  u.id),
        2);
    const char *ps[] = {u.id, start};
    char *old_period = sql_value("SELECT images_processed::text FROM usage_tracking"
                                 " WHERE user_id = $1::uuid AND month = $2::date",
                                 2, ps);
    assert_string_equal(old_period, "500");
    free(old_period);
    free(start);
}

/* Room for 3 of 5 (the limit rises from 10 to 13): exactly the 3 oldest run,
 * the other 2 keep waiting, the limit is never passed. */
static void test_room_for_k_of_n(void **state)
{
    (void)state;
    user_t u = make_user("quota-k-of-n@example.com");
    use_up_month(&u);
    char jobs[5][64];
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "kn%02d.jpg", i);
        new_photo(&u, name, true, jobs[i], sizeof(jobs[i]));
    }
    wait_state(&u, 0, 5, 30000);
    const char *p[] = {u.id};
    assert_int_equal(sql_exec("UPDATE subscriptions SET monthly_limit = 13"
                              " WHERE user_id = $1::uuid",
                              1, p),
                     0);
    wait_state(&u, 3, 2, 30000);
    usleep(1500 * 1000); /* several release sweeps: nothing more moves */
    wait_state(&u, 3, 2, 1000);
    assert_completed_in_order(&u, jobs, 0, 3);
    assert_once_each(&u, jobs, 3);
    for (int i = 3; i < 5; i++) {
        /* waiting, and never released into room that was not there: claimed
         * once only, when they were first put to wait */
        char *w = wu_job_col(jobs[i], "(quota_waiting_since IS NOT NULL)::text || ' ' || attempt");
        assert_string_equal(w, "true 1");
        free(w);
    }
    assert_int_equal(usage_now(&u, "images_processed"), 13);
    assert_int_equal(count_sql("SELECT count(*) FROM jobs WHERE user_id = $1::uuid"
                               " AND status = 'failed'",
                               u.id),
                     0);
}

static bool one_completed(void *arg)
{
    return n_status(arg, "completed") == 1;
}

/* A waiting job is cancelled through the API: cancelled, no longer waiting,
 * never run after the upgrade; the other waiting job runs. */
static void test_cancel_waiting(void **state)
{
    (void)state;
    user_t u = make_user("quota-cancel@example.com");
    gwt_session_t s;
    assert_int_equal(gwt_sign_in(gw.base_url, u.email, &s), 0);
    assert_string_equal(s.id, u.id);
    use_up_month(&u);
    char jobs[2][64];
    new_photo(&u, "c0.jpg", true, jobs[0], sizeof(jobs[0]));
    new_photo(&u, "c1.jpg", true, jobs[1], sizeof(jobs[1]));
    wait_state(&u, 0, 2, 30000);
    char path[160];
    snprintf(path, sizeof(path), "/api/jobs/%s/cancel", jobs[0]);
    gwt_resp_t r = api(&s, "POST", path);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "cancelled");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "waiting_for")));
    gwt_resp_free(&r);
    r = api(&s, "GET", "/api/usage");
    assert_int_equal(cJSON_GetObjectItem(r.json, "waiting_for_quota")->valueint, 1);
    gwt_resp_free(&r);

    subscribe(&u, "evt_quota_cancel", PRICE_STUDIO);
    assert_true(wait_until(one_completed, &u, 30000));
    usleep(1000 * 1000);
    char *st = wu_job_col(jobs[0], "status || ' ' || (quota_waiting_since IS NULL)::text");
    assert_string_equal(st, "cancelled true");
    free(st);
    st = wu_job_col(jobs[1], "status");
    assert_string_equal(st, "completed");
    free(st);
    assert_int_equal(wu_outputs_for(google.base_url, &u, jobs[0]), 0);
    assert_int_equal(n_waiting(&u), 0);
}

/* Waiting jobs survive a Redis FLUSHALL and the re-push recovery leaves them
 * alone (they are in no list on purpose); after the upgrade they run. */
static void test_waiting_survives_flush(void **state)
{
    (void)state;
    user_t u = make_user("quota-flush@example.com");
    use_up_month(&u);
    char jobs[3][64];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "fl%02d.jpg", i);
        new_photo(&u, name, true, jobs[i], sizeof(jobs[i]));
    }
    wait_state(&u, 0, 3, 30000);
    char *attempts = sql_value("SELECT string_agg(attempt::text, ',' ORDER BY created_at) FROM jobs"
                               " WHERE user_id = $1::uuid",
                               1, (const char *[]){u.id});
    long long repushed = log_count(&worker, "re-push:");
    char err[256];
    redisReply *rr = redis_command(redis, err, sizeof(err), "FLUSHALL");
    assert_non_null(rr);
    freeReplyObject(rr);
    /* WORKER_REPUSH_SECONDS=2: the re-push runs every second; give it 4 s */
    usleep(4000 * 1000);
    assert_int_equal(n_waiting(&u), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(id_in_redis(jobs[i]), 0);
    }
    char *after = sql_value("SELECT string_agg(attempt::text, ',' ORDER BY created_at) FROM jobs"
                            " WHERE user_id = $1::uuid",
                            1, (const char *[]){u.id});
    assert_string_equal(after, attempts); /* not claimed again */
    free(after);
    free(attempts);
    assert_int_equal(log_count(&worker, "re-push:"), repushed);

    subscribe(&u, "evt_quota_flush", PRICE_CREATOR);
    wait_state(&u, 3, 0, 30000);
    assert_completed_in_order(&u, jobs, 0, 3);
    assert_once_each(&u, jobs, 3);
}

/* The release committed but its push was lost (the worker died in between):
 * the released jobs are queued and not waiting, so the re-push recovery
 * pushes them and they run, once each. */
static void test_released_push_lost(void **state)
{
    (void)state;
    user_t u = make_user("quota-lost@example.com");
    use_up_month(&u);
    char jobs[3][64];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "lp%02d.jpg", i);
        new_photo(&u, name, true, jobs[i], sizeof(jobs[i]));
    }
    wait_state(&u, 0, 3, 30000);
    assert_int_equal(daemon_stop(&worker), 0);
    const char *p[] = {u.id};
    assert_int_equal(sql_exec("UPDATE subscriptions SET monthly_limit = 13"
                              " WHERE user_id = $1::uuid",
                              1, p),
                     0);
    /* the oldest job's row version moves to the end of the heap (as any
     * update of it does): the release's order must not follow the heap */
    const char *j0[] = {jobs[0]};
    assert_int_equal(sql_exec("UPDATE jobs SET drive_file_name = drive_file_name"
                              " WHERE id = $1::uuid",
                              1, j0),
                     0);
    /* the worker's release, without its push: in arrival order */
    /* (with the join the planner picks for a small table: a hash join over
     * jobs read in heap order; set before the function plans its statements) */
    char *released = sql_value("SELECT string_agg(r.job_id::text, ',' ORDER BY r.ord)"
                               " FROM (SELECT set_config('enable_nestloop', 'off', true),"
                               "              set_config('enable_mergejoin', 'off', true)) s,"
                               " LATERAL jobs_quota_release(100) WITH ORDINALITY"
                               " AS r(job_id, user_id, tier, ord) WHERE r.user_id = $1::uuid",
                               1, p);
    assert_non_null(released);
    char want[3 * 64 + 3];
    snprintf(want, sizeof(want), "%s,%s,%s", jobs[0], jobs[1], jobs[2]);
    assert_string_equal(released, want);
    free(released);
    assert_int_equal(n_waiting(&u), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(id_in_redis(jobs[i]), 0);
    }
    assert_int_equal(start_worker(), 0);
    wait_state(&u, 3, 0, 30000);
    assert_once_each(&u, jobs, 3);
    assert_true(proc_log_contains(&worker, "re-push: ")); /* recovered by the re-push */
    assert_int_equal(usage_now(&u, "images_processed"), 13);
}

/* Arrival order against new photos: room for one appears while a photo waits
 * and before the release sweep has run; a newer photo claimed first does not
 * take it (it waits behind, counting nothing), and the sweep then releases the
 * older one. */
static void test_new_photo_waits_behind(void **state)
{
    (void)state;
    user_t u = make_user("quota-behind@example.com");
    use_up_month(&u);
    char older[64], newer[64];
    new_photo(&u, "old.jpg", true, older, sizeof(older));
    wait_state(&u, 0, 1, 30000);
    assert_int_equal(daemon_stop(&worker), 0); /* no sweep from here on */
    const char *p[] = {u.id};
    assert_int_equal(sql_exec("UPDATE subscriptions SET monthly_limit = 11"
                              " WHERE user_id = $1::uuid",
                              1, p),
                     0);
    new_photo(&u, "new.jpg", false, newer, sizeof(newer));
    /* the newer photo's claim, as a worker makes it */
    const char *c[] = {newer};
    char *res = sql_value("SELECT reservation FROM jobs_worker_claim($1::uuid, 'quota-test-0', 60,"
                          " 120)",
                          1, c);
    assert_non_null(res);
    assert_string_equal(res, "blocked 11");
    free(res);
    char *st = wu_job_col(newer, "status || ' ' || (quota_waiting_since IS NOT NULL)::text");
    assert_string_equal(st, "queued true");
    free(st);
    assert_int_equal(usage_now(&u, "images_processed"), 10);
    assert_int_equal(
        count_sql("SELECT count(*) FROM usage_reservations WHERE job_id = $1::uuid", newer), 0);
    assert_int_equal(start_worker(), 0);
    wait_state(&u, 1, 1, 30000);
    st = wu_job_col(older, "status");
    assert_string_equal(st, "completed");
    free(st);
    assert_int_equal(usage_now(&u, "images_processed"), 11);
}

/* one test a line */
/* clang-format off */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_then_upgrade),
        cmocka_unit_test(test_period_renewal),
        cmocka_unit_test(test_paid_period_renewal),
        cmocka_unit_test(test_room_for_k_of_n),
        cmocka_unit_test(test_cancel_waiting),
        cmocka_unit_test(test_waiting_survives_flush),
        cmocka_unit_test(test_released_push_lost),
        cmocka_unit_test(test_new_photo_waits_behind),
        cmocka_unit_test(test_digest_not_held_by_waiting),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
/* clang-format on */
