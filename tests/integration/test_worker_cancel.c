/*
 * job-worker: stopping a job that is running (issue 14), end to end with real
 * PostgreSQL and Redis, the Google fake and the real binary.
 *
 * - Cancel of a processing job (jobs_cancel, as the gateway calls it): the
 *   worker stops the CPU pipeline mid-computation within 2 s (its only thread
 *   is free: the next job starts), nothing is uploaded, nothing is charged
 *   (the reservation is released, no failure counted), the job ends
 *   cancelled.
 * - The wall-time budget (JOB_MAX_SECONDS): a job over it fails `timeout`,
 *   not retried, nothing uploaded or charged, and the thread takes the next
 *   job.
 * - A user's retry keeps retry_count: a job whose automatic retries are used
 *   up gets one more run, not max_retries + 1 more.
 * - Cancel while the output is being saved (the upload, or the sharing, held
 *   in flight by the fake): the file the worker uploaded is deleted from
 *   Drive (not trashed), the job stays cancelled and uncharged. A takeover
 *   at the same moment (another attempt holds the job) keeps the file: the
 *   other attempt reuses it.
 */
#define _GNU_SOURCE
#include "cpu_exec.h"
#include "crypto.h"
#include "fake_admin.h"
#include "http_client.h"
#include "now.h"
#include "queue.h"
#include "redis.h"
#include "support.h"
#include "worker_user.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define KEY_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define CLIENT_ID "ca-worker-test"
/* The worker's budget here: longer than the cancel test needs, far shorter
 * than the slow preset takes (12-20 s on one core). */
#define BUDGET_S 4

static proc_t google, worker;
static crypto_keyring_t *keys;
static redis_conn_t *redis;
static char *slow_jpeg_b64;

/* ScaleBy 2.5 (lanczos, libvips) then a 31-radius blur, as PNG: a 2000×2000
 * photo becomes 5000×5000 and takes seconds. */
static const char SLOW_PRESET[] =
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
    "\"2\":{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"1\",0],"
    "\"upscale_method\":\"lanczos\",\"scale_by\":2.5}},"
    "\"3\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":[\"2\",0],"
    "\"blur_radius\":31,\"sigma\":8}},"
    "\"4\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"3\",0],\"format\":\"png\"}}}";

static char *b64_noise_jpeg(int w, int h)
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
    assert_int_equal(vips_jpegsave_buffer(u8, &buf, &len, "Q", 75, NULL), 0);
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
    return wu_make_user(google.base_url, keys, CLIENT_ID, email, NULL);
}

static void drive_file(const user_t *u, const char *name, const char *b64, char *out, size_t outlen)
{
    wu_drive_file(google.base_url, u, name, "image/jpeg", b64, out, outlen);
}

/* A file in the user's inbox and its job (as the poller makes it), pushed. */
static void queue_job(const user_t *u, const char *name, const char *b64, const char *preset,
                      char *job, size_t joblen)
{
    char file[128];
    drive_file(u, name, b64, file, sizeof(file));
    const char *params[] = {u->id, file, name, u->inbox, preset};
    char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2, $3, $4,"
                         " 1000, 'image/jpeg', $5)",
                         5, params);
    assert_non_null(id);
    snprintf(job, joblen, "%s", id);
    free(id);
    char err[256];
    assert_int_equal(queue_push(redis, job, err, sizeof(err)), 0);
}

static void assert_job_col(const char *job, const char *col, const char *want)
{
    char *v = wu_job_col(job, col);
    if (v == NULL || strcmp(v, want) != 0) {
        char *msg = wu_job_col(job, "status || ' ' || COALESCE(error_message, '')");
        fprintf(stderr, "job %s: %s is %s, want %s (%s)\n", job, col, v, want, msg);
        free(msg);
        proc_print_log(&worker);
    }
    assert_non_null(v);
    assert_string_equal(v, want);
    free(v);
}

typedef struct {
    const char *job;
    const char *const *statuses; /* NULL-terminated */
} status_wait_t;

static bool job_in(void *arg)
{
    const status_wait_t *w = arg;
    char *st = wu_job_col(w->job, "status");
    bool yes = false;
    for (int i = 0; st != NULL && w->statuses[i] != NULL; i++) {
        yes = yes || strcmp(st, w->statuses[i]) == 0;
    }
    free(st);
    return yes;
}

static bool wait_status(const char *job, const char *const *statuses, int timeout_ms)
{
    status_wait_t w = {job, statuses};
    return wait_until(job_in, &w, timeout_ms);
}

static const char *const DONE[] = {"completed", "failed", "cancelled", NULL};
static const char *const STARTED[] = {"processing", "completed", "failed", NULL};

/* Outputs of `job` in the user's Processed folder, as the user sees Drive. */
static int outputs_for(const user_t *u, const char *job)
{
    return wu_outputs_for(google.base_url, u, job);
}

/* jobs_cancel / jobs_retry as the gateway calls them: its role, in a
 * transaction whose app.user_id is the session's user. Returns the answer. */
static char *as_gateway(const char *fn, const user_t *u, const char *job)
{
    PGconn *c = PQconnectdb(db_url_as("ca_api_gateway"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "BEGIN");
    PQclear(r);
    const char *p1[] = {u->id};
    r = PQexecParams(c, "SELECT set_config('app.user_id', $1, true)", 1, NULL, p1, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT %s($1::uuid, $2::uuid)", fn);
    const char *p2[] = {u->id, job};
    r = PQexecParams(c, sql, 2, NULL, p2, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "%s: %s\n", fn, PQerrorMessage(c));
    }
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char *out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    r = PQexec(c, "COMMIT");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    return out;
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
    (void)state;
    if (getenv("TEST_DATABASE_URL") == NULL || getenv("TEST_REDIS_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL / TEST_REDIS_URL not set (run through tests/run)\n");
        return -1;
    }
    if (cpu_exec_init("test_worker_cancel") != 0) {
        return -1;
    }
    char err[256];
    keys = crypto_keyring_new(KEY_B64, NULL, err, sizeof(err));
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    if (keys == NULL || redis == NULL || fake_start(&google, "google", NULL) != 0) {
        return -1;
    }
    slow_jpeg_b64 = b64_noise_jpeg(2000, 2000);

    static char budget[32];
    snprintf(budget, sizeof(budget), "JOB_MAX_SECONDS=%d", BUDGET_S);
    const char *extra[] = {"WORKER_CONCURRENCY=1", /* one thread: its release shows */
                           budget, "WORKER_RETRY_BASE_MS=100", "LOG_LEVEL=debug", NULL};
    return wu_start_worker(&worker, google.base_url, KEY_B64, CLIENT_ID, extra);
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (worker.pid > 0) {
        rc = proc_stop(&worker);
        if (rc != 0) {
            proc_print_log(&worker);
        }
    }
    proc_stop(&google);
    redis_close(redis);
    crypto_keyring_free(keys);
    free(slow_jpeg_b64);
    cpu_exec_shutdown();
    return rc == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------- tests */

static void test_cancel_processing_job(void **state)
{
    (void)state;
    user_t u = make_user("cancel@example.com");
    user_t other = make_user("next@example.com");
    wu_user_preset(&u, "slow", SLOW_PRESET);
    char slow[64], next[64];
    queue_job(&u, "big.jpg", slow_jpeg_b64, "slow", slow, sizeof(slow));
    assert_true(wait_status(slow, STARTED, 20000));
    /* well inside the pipeline (the download and decode of 2000×2000 take
     * far less), and before the BUDGET_S budget */
    struct timespec ts = {1, 500000000L};
    nanosleep(&ts, NULL);
    assert_job_col(slow, "status", "processing");
    queue_job(&other, "small.jpg", TINY_JPEG_B64, "portrait_pro", next, sizeof(next));

    int64_t t0 = now_mono_ms();
    char *answer = as_gateway("jobs_cancel", &u, slow);
    assert_string_equal(answer, "ok");
    free(answer);
    /* the only job thread is free again: the next job is taken */
    bool taken = wait_status(next, STARTED, 5000);
    long ms = (long)(now_mono_ms() - t0);
    print_message("cancel of a processing job: the worker's thread took the next job %ld ms "
                  "after the cancel\n",
                  ms);
    if (!taken) {
        proc_print_log(&worker);
    }
    assert_true(taken);
    if (ms > 2000) {
        proc_print_log(&worker);
        fail_msg("the cancelled job held its thread for %ld ms (want < 2000)", ms);
    }
    assert_true(wait_status(next, DONE, 30000));
    assert_job_col(next, "status", "completed");
    assert_true(proc_log_contains(&worker, "was cancelled: stopping it"));
    assert_true(proc_log_contains(&worker, "stopped: the job was cancelled"));

    /* cancelled, nothing uploaded, nothing charged or counted as failed */
    assert_job_col(slow, "status", "cancelled");
    assert_job_col(slow, "error_code", "");
    assert_job_col(slow, "output_drive_file_id", "");
    assert_int_equal(outputs_for(&u, NULL), 0);
    wu_assert_usage(&u, "images_processed", "0");
    wu_assert_usage(&u, "images_failed", "0");
    const char *p[] = {slow};
    char *res = sql_value("SELECT state FROM usage_reservations WHERE job_id = $1::uuid", 1, p);
    assert_string_equal(res, "released");
    free(res);
    wu_assert_usage(&other, "images_processed", "1");

    /* a second cancel, or one of a finished job, is a conflict */
    answer = as_gateway("jobs_cancel", &u, slow);
    assert_string_equal(answer, "conflict");
    free(answer);
}

static void test_time_budget(void **state)
{
    (void)state;
    user_t u = make_user("budget@example.com");
    wu_user_preset(&u, "slow", SLOW_PRESET);
    char slow[64], next[64];
    queue_job(&u, "big.jpg", slow_jpeg_b64, "slow", slow, sizeof(slow));
    queue_job(&u, "small.jpg", TINY_JPEG_B64, "portrait_pro", next, sizeof(next));
    assert_true(wait_status(slow, STARTED, 20000));
    int64_t t0 = now_mono_ms();
    assert_true(wait_status(slow, DONE, 30000));
    long ms = (long)(now_mono_ms() - t0);
    print_message("a job over JOB_MAX_SECONDS=%d: failed %ld ms after it started\n", BUDGET_S, ms);
    assert_job_col(slow, "status || ':' || error_code", "failed:timeout");
    assert_job_col(slow, "retry_count", "0"); /* permanent: not retried */
    char *msg = wu_job_col(slow, "error_message");
    assert_non_null(strstr(msg, "longer than the 4 s limit"));
    free(msg);
    assert_true(ms < (BUDGET_S + 3) * 1000L);
    /* nothing uploaded; the reservation released with one failure; the
     * thread went on with the next job */
    assert_int_equal(outputs_for(&u, slow), 0);
    assert_true(wait_status(next, DONE, 30000));
    assert_job_col(next, "status", "completed");
    wu_assert_usage(&u, "images_processed", "1");
    wu_assert_usage(&u, "images_failed", "1");
}

/* A job whose automatic retries are used up, retried by its user, runs once
 * more: retry_count is kept, so a transient failure then fails it for good
 * instead of buying max_retries more runs. */
static void test_user_retry_keeps_retry_budget(void **state)
{
    (void)state;
    user_t u = make_user("retry@example.com");
    char job[64];
    queue_job(&u, "r.jpg", TINY_JPEG_B64, "portrait_pro", job, sizeof(job));
    assert_true(wait_status(job, DONE, 30000));
    assert_job_col(job, "status", "completed");
    /* as if it had failed after its three automatic retries */
    const char *p[] = {job};
    assert_int_equal(sql_exec("UPDATE jobs SET status = 'failed', error_code = 'timeout',"
                              " retry_count = max_retries WHERE id = $1::uuid",
                              1, p),
                     0);
    char *before = wu_job_col(job, "attempt");
    int attempt0 = atoi(before);
    free(before);

    /* Drive's download keeps failing (a transient error) */
    char *file = wu_job_col(job, "drive_file_id");
    char fault[512];
    snprintf(fault, sizeof(fault),
             "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/files/%s\"},\"count\":1000,"
             "\"action\":\"status\",\"status\":500}",
             file);
    free(file);
    fake_add_fault(google.base_url, fault);

    char *answer = as_gateway("jobs_retry", &u, job);
    assert_string_equal(answer, "ok");
    free(answer);
    assert_job_col(job, "status", "queued");
    assert_job_col(job, "retry_count", "3"); /* kept, not reset to 0 */
    char err[256];
    assert_int_equal(queue_push(redis, job, err, sizeof(err)), 0);
    assert_true(wait_status(job, (const char *const[]){"failed", NULL}, 60000));
    /* give a wrongly refilled budget the time to requeue it */
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    fake_clear_faults(google.base_url);
    assert_job_col(job, "status", "failed");
    char *after = wu_job_col(job, "attempt");
    print_message("a retried job with its retries used up ran %d more time(s)\n",
                  atoi(after) - attempt0);
    assert_int_equal(atoi(after), attempt0 + 1); /* one run, not max_retries + 1 */
    free(after);
}

/* ------------------------------------------- cancel while saving the output */

/* Files of `job` (appProperties.ca_job_id) anywhere in the user's Drive,
 * trashed ones included. */
static int files_of_job(const user_t *u, const char *job)
{
    char q[256];
    snprintf(q, sizeof(q), "appProperties has { key='ca_job_id' and value='%s' }", job);
    char *eq = http_url_escape(q);
    char url[1024];
    snprintf(url, sizeof(url), "%s/drive/v3/files?q=%s&fields=files(id,trashed)", google.base_url,
             eq);
    free(eq);
    char auth[600];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", u->access);
    const char *hdr[] = {auth, NULL};
    char *resp = NULL;
    assert_int_equal(http_call_h("GET", url, hdr, NULL, &resp, NULL), 200);
    cJSON *j = cJSON_Parse(resp);
    free(resp);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "files"));
    cJSON_Delete(j);
    return n;
}

static bool request_in_flight(void *arg)
{
    const fake_match_t *m = arg;
    return fake_count_requests(google.base_url, m) > 0;
}

typedef enum {
    HOLD_UPLOAD, /* the upload's request is held */
    HOLD_SHARE,  /* the sharing's request is held (after the last look at the flag) */
} hold_t;

typedef enum {
    BY_CANCEL,   /* the user cancels (jobs_cancel, as the gateway calls it) */
    BY_TAKEOVER, /* another attempt claims the job (as after an expired lease) */
} lost_t;

/* A job whose upload or sharing the fake holds for 1.5 s; while it is held,
 * the job is cancelled or taken over. Returns when the worker's only thread
 * has finished the next job (the held one settled first), with job filled. */
static void lose_while_saving(const user_t *u, const user_t *other, hold_t hold, lost_t how,
                              char *job, size_t joblen, long *since)
{
    const char *path = hold == HOLD_UPLOAD ? "/upload/drive/v3/files" : "/permissions";
    char fault[512];
    snprintf(fault, sizeof(fault),
             "{\"match\":{\"method\":\"POST\",\"path_regex\":\"%s%s\"},\"count\":1,"
             "\"action\":\"delay\",\"delay_ms\":1500}",
             hold == HOLD_UPLOAD ? "^" : "", hold == HOLD_UPLOAD ? path : "/permissions$");
    *since = fake_requests_next(google.base_url);
    fake_add_fault(google.base_url, fault);
    queue_job(u, "save.jpg", TINY_JPEG_B64, "portrait_pro", job, joblen);
    fake_match_t held = {.method = "POST", .unanswered = true, .since = *since};
    if (hold == HOLD_UPLOAD) {
        held.path = path;
    } else {
        held.path_part = path;
    }
    if (!wait_until(request_in_flight, &held, 20000)) {
        proc_print_log(&worker);
        fail_msg("the held request never came");
    }
    if (how == BY_CANCEL) {
        char *answer = as_gateway("jobs_cancel", u, job);
        assert_string_equal(answer, "ok");
        free(answer);
    } else {
        const char *p[] = {job};
        assert_int_equal(sql_exec("UPDATE jobs SET attempt = attempt + 1, worker_id = 'other',"
                                  " lease_expires_at = timezone('UTC', now()) + interval '1 hour'"
                                  " WHERE id = $1::uuid AND status = 'processing'",
                                  1, p),
                         0);
    }
    /* still held when the job was lost */
    assert_int_equal(fake_count_requests(google.base_url, &held), 1);
    /* settled: the worker's only thread has taken and finished the next job */
    char next[64];
    queue_job(other, "after.jpg", TINY_JPEG_B64, "portrait_pro", next, sizeof(next));
    assert_true(wait_status(next, DONE, 30000));
    assert_job_col(next, "status", "completed");
    fake_clear_faults(google.base_url);
}

static int deletes_since(long since, long status)
{
    return fake_count_requests(google.base_url, &(fake_match_t){.method = "DELETE",
                                                                .path_part = "/drive/v3/files/",
                                                                .status = status,
                                                                .since = since});
}

/* Cancelled (by its user) while the file goes up, and while it is shared:
 * the upload is deleted from Drive, nothing is charged. */
static void assert_cancelled_and_clean(const user_t *u, const char *job, long since)
{
    assert_job_col(job, "status", "cancelled");
    assert_job_col(job, "error_code", "");
    assert_job_col(job, "output_drive_file_id", "");
    int left = files_of_job(u, job);
    if (left != 0) {
        proc_print_log(&worker);
    }
    assert_int_equal(left, 0); /* deleted, not trashed */
    assert_int_equal(outputs_for(u, NULL), 0);
    assert_int_equal(deletes_since(since, 204), 1);
    wu_assert_usage(u, "images_processed", "0");
    wu_assert_usage(u, "images_failed", "0");
    const char *p[] = {job};
    char *res = sql_value("SELECT state FROM usage_reservations WHERE job_id = $1::uuid", 1, p);
    assert_string_equal(res, "released");
    free(res);
    assert_true(proc_log_contains(&worker, "cancelled while its output was saved: deleted"));
}

static void test_cancel_during_upload(void **state)
{
    (void)state;
    user_t u = make_user("cancel-upload@example.com");
    user_t other = make_user("after-upload@example.com");
    char job[64];
    long since = 0;
    lose_while_saving(&u, &other, HOLD_UPLOAD, BY_CANCEL, job, sizeof(job), &since);
    assert_cancelled_and_clean(&u, job, since);
    /* seen right after the upload: the file was never shared */
    assert_int_equal(
        fake_count_requests(
            google.base_url,
            &(fake_match_t){.method = "POST", .path_part = "/permissions", .since = since}),
        1); /* the next job's only */
}

static void test_cancel_during_sharing(void **state)
{
    (void)state;
    user_t u = make_user("cancel-share@example.com");
    user_t other = make_user("after-share@example.com");
    char job[64];
    long since = 0;
    /* the cancel lands after the last look at the flag: the fenced
     * completion loses, then the worker finds the job cancelled */
    lose_while_saving(&u, &other, HOLD_SHARE, BY_CANCEL, job, sizeof(job), &since);
    assert_cancelled_and_clean(&u, job, since);
}

/* Taken over while the file goes up or is shared: the file stays for the
 * attempt that holds the job now (it finds it by ca_job_id). */
static void takeover(hold_t hold, const char *email, const char *email2)
{
    user_t u = make_user(email);
    user_t other = make_user(email2);
    char job[64];
    long since = 0;
    lose_while_saving(&u, &other, hold, BY_TAKEOVER, job, sizeof(job), &since);
    assert_job_col(job, "status", "processing");
    assert_job_col(job, "worker_id", "other");
    assert_int_equal(files_of_job(&u, job), 1);
    assert_int_equal(outputs_for(&u, job), 1);
    assert_int_equal(deletes_since(since, 0), 0);
    /* the reservation is kept for the attempt that holds the job now */
    const char *p[] = {job};
    char *res = sql_value("SELECT state FROM usage_reservations WHERE job_id = $1::uuid", 1, p);
    assert_string_equal(res, "reserved");
    free(res);
    assert_int_equal(sql_exec("UPDATE jobs SET status = 'failed', lease_expires_at = NULL"
                              " WHERE id = $1::uuid",
                              1, p),
                     0);
}

static void test_takeover_during_upload_keeps_output(void **state)
{
    (void)state;
    takeover(HOLD_UPLOAD, "takeover-upload@example.com", "after-tu@example.com");
}

static void test_takeover_during_sharing_keeps_output(void **state)
{
    (void)state;
    takeover(HOLD_SHARE, "takeover-share@example.com", "after-ts@example.com");
    assert_true(proc_log_contains(&worker, "completed, but the job was taken over"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_processing_job),
        cmocka_unit_test(test_time_budget),
        cmocka_unit_test(test_user_retry_keeps_retry_budget),
        cmocka_unit_test(test_cancel_during_upload),
        cmocka_unit_test(test_cancel_during_sharing),
        cmocka_unit_test(test_takeover_during_upload_keeps_output),
        cmocka_unit_test(test_takeover_during_sharing_keeps_output),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
