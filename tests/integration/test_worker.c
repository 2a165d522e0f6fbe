/*
 * job-worker end to end: real PostgreSQL and Redis, the Google, ComfyUI and
 * SMTP fakes, the real binary started with daemon_start and driven through the
 * database (jobs_create_for_drive_file, as the poller does), Redis (LPUSH) and
 * the fakes' admin APIs.
 */
#define _GNU_SOURCE
#include "backoff.h"
#include "comfyui.h"
#include "cpu_exec.h"
#include "crypto.h"
#include "email.h"
#include "fake_admin.h"
#include "google_oauth.h"
#include "now.h"
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

#define KEY_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define CLIENT_ID "ca-worker-test"

static proc_t google, comfy, smtp, worker;
static int smtp_admin_port;
static char smtp_admin_url[64]; /* the SMTP fake's admin API */
static crypto_keyring_t *keys;
static redis_conn_t *redis;
static char worker_db_url[512];
static char env_google[6][256];
static char env_smtp[256];
static char *small_jpeg_b64, *big_jpeg_b64, *png_b64;
static size_t small_jpeg_len;

/* ---------------------------------------------------------------- helpers */

static char *b64_image(bool png, int w, int h, size_t *raw_len)
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
    if (png) {
        assert_int_equal(vips_pngsave_buffer(u8, &buf, &len, NULL), 0);
    } else {
        assert_int_equal(vips_jpegsave_buffer(u8, &buf, &len, "Q", 90, NULL), 0);
    }
    char *b64 = crypto_base64_encode(buf, len);
    if (raw_len != NULL) {
        *raw_len = len;
    }
    g_free(buf);
    for (int i = 0; i < 3; i++) {
        g_object_unref(bands[i]);
    }
    g_object_unref(joined);
    g_object_unref(u8);
    return b64;
}

/* The scopes the gateway asks for at sign-in: every test's user has exactly
 * these (the fake enforces them as Google does). */
#define PRODUCT_SCOPES "openid email profile " GOOGLE_DRIVE_SCOPES

typedef wu_user_t user_t;

static user_t make_user_scoped(const char *email, const char *scope)
{
    return wu_make_user(google.base_url, keys, CLIENT_ID, email, scope);
}

static user_t make_user(const char *email)
{
    return make_user_scoped(email, PRODUCT_SCOPES);
}

/* Puts a file in the user's inbox; its Drive id in out. */
static void drive_file(const user_t *u, const char *name, const char *mime, const char *b64,
                       char *out, size_t outlen)
{
    wu_drive_file(google.base_url, u, name, mime, b64, out, outlen);
}

/* jobs_create_for_drive_file as the poller calls it; returns the job id. */
static void create_job(const user_t *u, const char *file_id, const char *name, const char *preset,
                       char *job, size_t joblen)
{
    const char *params[] = {u->id, file_id, name, u->inbox, preset};
    char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2, $3, $4,"
                         " 1000, 'image/jpeg', $5)",
                         5, params);
    assert_non_null(id);
    snprintf(job, joblen, "%s", id);
    free(id);
}

static void push(const char *job)
{
    char err[256];
    assert_int_equal(queue_push(redis, job, err, sizeof(err)), 0);
}

static bool job_is_done(void *arg)
{
    char *st = wu_job_col(arg, "status");
    bool done = st != NULL && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0);
    free(st);
    return done;
}

/* Waits for the job to finish and returns "completed" or "failed:<code>". */
static char *wait_job(const char *job, int timeout_ms, const proc_t *daemon)
{
    if (!wait_until(job_is_done, (void *)job, timeout_ms)) {
        proc_print_log(daemon);
        char *st = wu_job_col(job, "status");
        fprintf(stderr, "job %s still %s\n", job, st);
        free(st);
        fail_msg("job did not finish");
    }
    char *st = wu_job_col(job, "status || COALESCE(':' || error_code, '')");
    return st;
}

static void expect_job(const char *job, const char *want, const proc_t *daemon)
{
    char *got = wait_job(job, 30000, daemon);
    if (strcmp(got, want) != 0) {
        char *msg = wu_job_col(job, "error_message");
        fprintf(stderr, "job %s: want %s, got %s (%s)\n", job, want, got, msg);
        free(msg);
        proc_print_log(daemon);
    }
    assert_string_equal(got, want);
    free(got);
}

static cJSON *list_folder(const user_t *u, const char *folder)
{
    return wu_list_folder(google.base_url, u, folder);
}

static int count_outputs_for(const user_t *u, const char *job)
{
    return wu_outputs_for(google.base_url, u, job);
}
/* files.list calls that looked for an earlier upload of `job` (q has its ca_job_id). */
static int count_lookups(const char *job)
{
    cJSON *j = fake_requests(google.base_url, 0);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "requests"))
    {
        const cJSON *q = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "query"), "q");
        if (strcmp(cJSON_GetObjectItem(r, "path")->valuestring, "/drive/v3/files") == 0 &&
            cJSON_IsString(q) && strstr(q->valuestring, "ca_job_id") != NULL &&
            strstr(q->valuestring, job) != NULL) {
            n++;
        }
    }
    cJSON_Delete(j);
    return n;
}

/* Every daemon a test starts, so teardown stops them even after a failed assert. */
static proc_t *started[16];
static int nstarted;

/* Starts the worker with the shared env plus `extra` (NULL-terminated). */
static int start_worker(proc_t *p, const char *const *extra)
{
    if (nstarted < 16) {
        started[nstarted++] = p;
    }
    const char *env[40];
    int n = 0;
    static char dburl[600];
    snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", worker_db_url);
    env[n++] = dburl;
    for (int i = 0; i < 6; i++) {
        env[n++] = env_google[i];
    }
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 38; i++) {
        env[n++] = extra[i];
    }
    env[n] = NULL;
    return daemon_start(p, "job-worker", env);
}

/* The shared worker: CPU only, 1 MiB cap, quick re-push and retries, e-mail. */
static int shared_start(void)
{
    const char *extra[] = {"WORKER_CONCURRENCY=2",
                           "MAX_IMAGE_BYTES=1048576",
                           "WORKER_REPUSH_SECONDS=2",
                           "WORKER_RETRY_BASE_MS=200",
                           "EMAIL_DIGEST_WAIT_SECONDS=3",
                           env_smtp,
                           NULL};
    return start_worker(&worker, extra);
}

/* Tests that run their own workers stop the shared one (they share ca:jobs). */
static void shared_stop(void)
{
    assert_int_equal(daemon_stop(&worker), 0);
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
    (void)state;
    if (getenv("TEST_DATABASE_URL") == NULL || getenv("TEST_REDIS_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL / TEST_REDIS_URL not set (run through tests/run)\n");
        return -1;
    }
    if (cpu_exec_init("test_worker") != 0) {
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

    const char *smtp_args[] = {"--admin-port", "0", NULL};
    if (fake_start(&google, "google", NULL) != 0 || fake_start(&comfy, "comfyui", NULL) != 0 ||
        fake_start(&smtp, "smtp", smtp_args) != 0) {
        return -1;
    }
    FILE *f = fopen(smtp.log_path, "r");
    char line[256];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        const char *at = strstr(line, "admin listening on 127.0.0.1:");
        if (at != NULL) {
            smtp_admin_port = atoi(at + strlen("admin listening on 127.0.0.1:"));
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    if (smtp_admin_port <= 0) {
        return -1;
    }
    snprintf(smtp_admin_url, sizeof(smtp_admin_url), "http://127.0.0.1:%d", smtp_admin_port);
    snprintf(env_google[0], 256, "GOOGLE_CLIENT_ID=" CLIENT_ID);
    snprintf(env_google[1], 256, "GOOGLE_CLIENT_SECRET=secret-for-tests");
    snprintf(env_google[2], 256, "GOOGLE_TOKEN_URL=%s/token", google.base_url);
    snprintf(env_google[3], 256, "DRIVE_API_URL=%s/drive/v3", google.base_url);
    snprintf(env_google[4], 256, "DRIVE_UPLOAD_URL=%s/upload/drive/v3", google.base_url);
    snprintf(env_google[5], 256, "LOG_LEVEL=debug");
    snprintf(env_smtp, sizeof(env_smtp), "SMTP_URL=smtp://127.0.0.1:%d", smtp.port);

    small_jpeg_b64 = b64_image(false, 320, 240, &small_jpeg_len);
    big_jpeg_b64 = b64_image(false, 1400, 1400, NULL); /* > 1 MiB of noise */
    png_b64 = b64_image(true, 24, 16, NULL);

    return shared_start();
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
    for (int i = 0; i < nstarted; i++) {
        if (started[i]->pid > 0) {
            proc_kill9(started[i]);
        }
    }
    proc_stop(&google);
    proc_stop(&comfy);
    proc_stop(&smtp);
    redis_close(redis);
    crypto_keyring_free(keys);
    free(small_jpeg_b64);
    free(big_jpeg_b64);
    free(png_b64);
    cpu_exec_shutdown();
    return rc == 0 ? 0 : -1;
}

/* How many times `job` is in the queue's lists: ca:jobs, the users' lists and
 * the processing lists (whose items are "<job_id> <tier> <user_id>"). */
static long long id_in_redis(const char *job)
{
    static const char script[] =
        "local n = 0\n"
        "local function count(k)\n"
        "  for _, v in ipairs(redis.call('LRANGE', k, 0, -1)) do\n"
        "    if v == ARGV[1] or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then n = n + 1 end\n"
        "  end\n"
        "end\n"
        "count('ca:jobs')\n"
        "for _, k in ipairs(redis.call('KEYS', 'ca:jobs:processing:*')) do count(k) end\n"
        "for _, k in ipairs(redis.call('KEYS', 'ca:jobs:u:*')) do count(k) end\n"
        "return n\n";
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "EVAL %s 0 %s", script, job);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* Every delivery of the job was taken and acked. */
static bool deliveries_done(void *arg)
{
    return id_in_redis(arg) == 0;
}

static bool any_started(void *arg)
{
    const char *p[] = {arg};
    return sql_nonzero("SELECT count(*)::text FROM jobs WHERE user_id = $1::uuid"
                       " AND status IN ('processing', 'completed')",
                       1, p);
}

static bool outbox_settled(void *arg)
{
    const char *p[] = {arg};
    char *n = sql_value("SELECT count(*)::text FROM email_outbox WHERE user_id = $1::uuid"
                        " AND status = 'pending'",
                        1, p);
    bool yes = n != NULL && strcmp(n, "0") == 0;
    free(n);
    return yes;
}

static bool metrics_have_gauges(void *arg)
{
    char *body = NULL;
    bool yes = http_call("GET", arg, NULL, &body) == 200 && body != NULL &&
               strstr(body, "ca_worker_queue_depth{queue=\"ready\"}") != NULL;
    free(body);
    return yes;
}

/* ---------------------------------------------------------------- tests */

static void test_presets_end_to_end(void **state)
{
    (void)state;
    user_t u = make_user("presets@example.com");
    const char *presets[] = {"portrait_pro", "product_clean", "landscape_vivid"};
    char jobs[3][64];
    char files[3][128];
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof(name), "IMG_%d.jpg", i);
        drive_file(&u, name, "image/jpeg", small_jpeg_b64, files[i], sizeof(files[i]));
        create_job(&u, files[i], name, presets[i], jobs[i], sizeof(jobs[i]));
        push(jobs[i]);
    }
    cJSON *inbox = list_folder(&u, u.inbox);
    const char *in_md5 = NULL;
    const cJSON *f;
    cJSON_ArrayForEach(f, inbox)
    {
        if (strcmp(cJSON_GetObjectItem(f, "name")->valuestring, "IMG_0.jpg") == 0) {
            in_md5 = cJSON_GetObjectItem(f, "md5Checksum")->valuestring;
        }
    }
    assert_non_null(in_md5);
    for (int i = 0; i < 3; i++) {
        expect_job(jobs[i], "completed", &worker);
        char *url = wu_job_col(jobs[i], "output_url");
        char *name = wu_job_col(jobs[i], "output_file_name");
        char *ms = wu_job_col(jobs[i], "processing_time_ms");
        char *times = wu_job_col(jobs[i], "started_at <= completed_at AND lease_expires_at IS NULL"
                                          " AND worker_id IS NOT NULL AND attempt = 1");
        char want[64];
        snprintf(want, sizeof(want), "IMG_%d_%s.jpg", i, presets[i]);
        assert_string_equal(name, want);
        assert_true(strlen(url) > 10);
        assert_true(atoi(ms) > 0);
        assert_string_equal(times, "true");
        free(url);
        free(name);
        free(ms);
        free(times);
        assert_int_equal(count_outputs_for(&u, jobs[i]), 1);
    }
    /* outputs differ from the input */
    cJSON *out = list_folder(&u, u.processed);
    assert_int_equal(cJSON_GetArraySize(out), 3);
    cJSON_ArrayForEach(f, out)
    {
        assert_string_not_equal(cJSON_GetObjectItem(f, "md5Checksum")->valuestring, in_md5);
        assert_string_equal(cJSON_GetObjectItem(f, "mimeType")->valuestring, "image/jpeg");
    }
    cJSON_Delete(out);
    cJSON_Delete(inbox);
    wu_assert_usage(&u, "images_processed", "3");
    /* shared anyone-with-link */
    fake_match_t shared = {.method = "POST", .path_part = "/permissions", .status = 200};
    assert_true(fake_count_requests(google.base_url, &shared) >= 3);
}

static void test_same_id_twice(void **state)
{
    (void)state;
    user_t u = make_user("twice@example.com");
    char file[128], job[64];
    drive_file(&u, "twice.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "twice.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    push(job);
    push(job);
    expect_job(job, "completed", &worker);
    /* the other deliveries come and go */
    assert_true(wait_until(deliveries_done, job, 30000));
    char *attempt = wu_job_col(job, "attempt");
    assert_string_equal(attempt, "1");
    free(attempt);
    assert_int_equal(count_outputs_for(&u, job), 1);
    wu_assert_usage(&u, "images_processed", "1");
    /* pushed again after completion: nothing changes */
    push(job);
    assert_true(wait_until(deliveries_done, job, 30000));
    attempt = wu_job_col(job, "attempt");
    assert_string_equal(attempt, "1");
    free(attempt);
    assert_int_equal(count_outputs_for(&u, job), 1);
    /* a first attempt cannot have uploaded before: no files.list by ca_job_id */
    assert_int_equal(count_lookups(job), 0);
}

static void test_error_codes(void **state)
{
    (void)state;
    user_t u = make_user("errors@example.com");
    char file[128], job[64];

    /* unsupported_image: not an image at all */
    char *junk = crypto_base64_encode("this is not a JPEG at all", 25);
    drive_file(&u, "junk.jpg", "image/jpeg", junk, file, sizeof(file));
    free(junk);
    create_job(&u, file, "junk.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "failed:unsupported_image", &worker);
    char *rc = wu_job_col(job, "retry_count");
    assert_string_equal(rc, "0"); /* permanent: not retried */
    free(rc);

    /* drive_file_not_found */
    create_job(&u, "NoSuchFile123", "gone.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "failed:drive_file_not_found", &worker);

    /* image_too_large (the shared worker's cap is 1 MiB) */
    drive_file(&u, "huge.jpg", "image/jpeg", big_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "huge.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "failed:image_too_large", &worker);

    /* preset_not_found */
    drive_file(&u, "np.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "np.jpg", "no_such_preset", job, sizeof(job));
    push(job);
    expect_job(job, "failed:preset_not_found", &worker);

    /* processing_error: a preset that fails validation, message shaped like ComfyUI's */
    wu_user_preset(&u, "broken",
                   "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.png\"}},"
                   "\"2\":{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"1\",0],"
                   "\"upscale_method\":\"bilinear\",\"scale_by\":-3}},"
                   "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0],"
                   "\"filename_prefix\":\"x\"}}}");
    drive_file(&u, "br.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "br.jpg", "broken", job, sizeof(job));
    push(job);
    expect_job(job, "failed:processing_error", &worker);
    char *msg = wu_job_col(job, "error_message");
    assert_non_null(strstr(msg, "smaller than min"));
    free(msg);

    /* comfyui_unavailable: a model node and no COMFYUI_URL */
    wu_user_preset(&u, "needs_gpu",
                   "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.png\"}},"
                   "\"2\":{\"class_type\":\"UpscaleModelLoader\",\"inputs\":{\"model_name\":"
                   "\"2x-FakeUpscaler.pth\"}},"
                   "\"3\":{\"class_type\":\"ImageUpscaleWithModel\",\"inputs\":{\"upscale_model\":"
                   "[\"2\",0],\"image\":[\"1\",0]}},"
                   "\"4\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"3\",0],"
                   "\"filename_prefix\":\"x\"}}}");
    drive_file(&u, "gpu.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "gpu.jpg", "needs_gpu", job, sizeof(job));
    push(job);
    expect_job(job, "failed:comfyui_unavailable", &worker);

    /* drive_forbidden: Drive refuses the download */
    drive_file(&u, "forb.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    char fault[512];
    snprintf(fault, sizeof(fault),
             "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/files/%s\"},\"count\":1,"
             "\"action\":\"status\",\"status\":403,\"reason\":\"insufficientFilePermissions\"}",
             file);
    fake_add_fault(google.base_url, fault);
    create_job(&u, file, "forb.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "failed:drive_forbidden", &worker);
    fake_clear_faults(google.base_url);

    /* upload_failed: Drive refuses the upload (permanent 400) */
    drive_file(&u, "up.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    fake_add_fault(
        google.base_url,
        "{\"match\":{\"method\":\"POST\",\"path\":\"/upload/drive/v3/files\"},\"count\":1,"
        "\"action\":\"status\",\"status\":400,\"reason\":\"badRequest\"}");
    create_job(&u, file, "up.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "failed:upload_failed", &worker);
    fake_clear_faults(google.base_url);

    /* every permanent failure after a reservation gave the count back and counted a failure */
    wu_assert_usage(&u, "images_processed", "0");
    wu_assert_usage(&u, "images_failed", "8");

    /* drive_auth_revoked: expired access token, refresh token revoked at Google */
    user_t r = make_user("revoked@example.com");
    drive_file(&r, "rv.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    fake_google_revoke(google.base_url, r.email);
    const char *p[] = {r.id};
    assert_int_equal(sql_exec("UPDATE users SET drive_token_expires_at = timezone('UTC', now())"
                              " - interval '1 hour' WHERE id = $1::uuid",
                              1, p),
                     0);
    create_job(&r, file, "rv.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "failed:drive_auth_revoked", &worker);
    char *conn = sql_value("SELECT drive_connected::text FROM users WHERE id = $1::uuid", 1, p);
    assert_string_equal(conn, "false");
    free(conn);
}

/* The worker's peak resident set (VmHWM) in kB, or -1. */
static long worker_peak_rss_kb(const proc_t *p)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)p->pid);
    FILE *f = fopen(path, "r");
    char line[256];
    long kb = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kb;
}

/* Files from a user's Drive are untrusted (issue 14): an SVG and a PDF named
 * .jpg with a generic MIME type, and a 20000x20000 PNG bomb, queued ahead of
 * a normal photo, fail fast with clear codes (not retried); the photo
 * completes, and the worker stays small. */
static void test_hostile_images(void **state)
{
    (void)state;
    user_t u = make_user("hostile@example.com");
    static const char svg[] = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"20000\" "
                              "height=\"20000\"><rect width=\"9\" height=\"9\"/></svg>";
    static const char pdf[] =
        "%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        "2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200000 200000]>>endobj\n"
        "trailer<</Root 1 0 R>>\n%EOF\n";
    VipsImage *black = NULL;
    void *bomb = NULL;
    size_t bomb_len = 0;
    assert_int_equal(vips_black(&black, 20000, 20000, NULL), 0);
    assert_int_equal(vips_pngsave_buffer(black, &bomb, &bomb_len, "bitdepth", 1, "compression", 9,
                                         "filter", VIPS_FOREIGN_PNG_FILTER_NONE, NULL),
                     0);
    g_object_unref(black);
    assert_true(bomb_len < 1048576); /* under the shared worker's MAX_IMAGE_BYTES */

    struct {
        const char *name;
        const void *data;
        size_t len;
        const char *want;
        char job[64];
    } cases[] = {
        {"a.jpg", svg, sizeof(svg) - 1, "failed:unsupported_image", ""},
        {"scan.jpg", pdf, sizeof(pdf) - 1, "failed:unsupported_image", ""},
        {"bomb.png", bomb, bomb_len, "failed:image_too_large", ""},
        {"photo.jpg", NULL, 0, "completed", ""},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < n; i++) {
        char file[128];
        char *b64 = cases[i].data != NULL ? crypto_base64_encode(cases[i].data, cases[i].len)
                                          : strdup(small_jpeg_b64);
        drive_file(&u, cases[i].name, "application/octet-stream", b64, file, sizeof(file));
        free(b64);
        create_job(&u, file, cases[i].name, "portrait_pro", cases[i].job, sizeof(cases[i].job));
    }
    int64_t t0 = now_mono_ms();
    for (size_t i = 0; i < n; i++) {
        push(cases[i].job);
    }
    for (size_t i = 0; i < n; i++) {
        expect_job(cases[i].job, cases[i].want, &worker);
        char *rc = wu_job_col(cases[i].job, "retry_count");
        assert_string_equal(rc, "0");
        free(rc);
    }
    long ms = (long)(now_mono_ms() - t0);
    char *msg = wu_job_col(cases[2].job, "error_message");
    assert_non_null(strstr(msg, "20000x20000"));
    free(msg);
    wu_assert_usage(&u, "images_processed", "1");
    wu_assert_usage(&u, "images_failed", "3");
    g_free(bomb);
    long kb = worker_peak_rss_kb(&worker);
    print_message("hostile images: all four done in %ld ms; worker VmHWM %ld MB\n", ms, kb / 1024);
    if (ms > 10000) {
        fail_msg("the hostile files took %ld ms, want them refused from the header", ms);
    }
    if (kb > 400 * 1024) {
        fail_msg("the worker peaked at %ld MB", kb / 1024);
    }
}

static void test_drive_faults_recovered(void **state)
{
    (void)state;
    user_t u = make_user("faults@example.com");
    char file[128], job[64];
    drive_file(&u, "f429.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    /* 6 × 429 on the download: more than the client's own retries, so the job
     * is retried through ca:jobs:delayed too */
    char fault[512];
    snprintf(fault, sizeof(fault),
             "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/files/%s\"},\"count\":6,"
             "\"action\":\"status\",\"status\":429,\"retry_after\":0}",
             file);
    fake_add_fault(google.base_url, fault);
    /* and 3 × 503 on the upload */
    fake_add_fault(
        google.base_url,
        "{\"match\":{\"method\":\"POST\",\"path\":\"/upload/drive/v3/files\"},\"count\":3,"
        "\"action\":\"status\",\"status\":503,\"retry_after\":0}");
    create_job(&u, file, "f429.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "completed", &worker);
    fake_clear_faults(google.base_url);
    fake_match_t limited = {.method = "GET", .path_part = file, .status = 429};
    fake_match_t unavailable = {
        .method = "POST", .path_part = "/upload/drive/v3/files", .status = 503};
    assert_true(fake_count_requests(google.base_url, &limited) == 6);
    assert_true(fake_count_requests(google.base_url, &unavailable) >= 3);
    char *rc = wu_job_col(job, "retry_count");
    assert_true(atoi(rc) >= 1);
    free(rc);
    /* later attempts look for an earlier upload first */
    assert_true(count_lookups(job) >= 1);
    char *code = wu_job_col(job, "COALESCE(error_code, 'none')");
    assert_string_equal(code, "none");
    free(code);
    assert_int_equal(count_outputs_for(&u, job), 1);
    wu_assert_usage(&u, "images_processed", "1");
}

static bool all_done(void *arg)
{
    const char *user = arg;
    const char *p[] = {user};
    char *n = sql_value("SELECT count(*)::text FROM jobs WHERE user_id = $1::uuid"
                        " AND status NOT IN ('completed', 'failed')",
                        1, p);
    bool done = n != NULL && strcmp(n, "0") == 0;
    free(n);
    return done;
}

static bool ten_done_twenty_waiting(void *arg)
{
    const char *p[] = {arg};
    char *n = sql_value("SELECT count(*) FILTER (WHERE status = 'completed') || ' '"
                        " || count(*) FILTER (WHERE quota_waiting_since IS NOT NULL)"
                        " FROM jobs WHERE user_id = $1::uuid",
                        1, p);
    bool done = n != NULL && strcmp(n, "10 20") == 0;
    free(n);
    return done;
}

static void test_free_user_30_images(void **state)
{
    (void)state;
    user_t u = make_user("thirty@example.com");
    char jobs[30][64];
    for (int i = 0; i < 30; i++) {
        char name[32], file[128];
        snprintf(name, sizeof(name), "p%02d.jpg", i);
        drive_file(&u, name, "image/jpeg", small_jpeg_b64, file, sizeof(file));
        create_job(&u, file, name, "portrait_pro", jobs[i], sizeof(jobs[i]));
    }
    for (int i = 0; i < 30; i++) {
        push(jobs[i]);
    }
    /* 10 complete; the other 20 wait for quota (issue 15: queued, nothing
     * failed; test_worker_quota follows them to the end) */
    if (!wait_until(ten_done_twenty_waiting, u.id, 90000)) {
        proc_print_log(&worker);
        fail_msg("30 jobs did not settle");
    }
    const char *p[] = {u.id};
    char *ok = sql_value("SELECT count(*)::text FROM jobs WHERE user_id = $1::uuid"
                         " AND status = 'completed'",
                         1, p);
    char *q = sql_value("SELECT count(*)::text FROM jobs WHERE user_id = $1::uuid"
                        " AND status = 'queued' AND quota_waiting_since IS NOT NULL"
                        " AND error_code IS NULL AND retry_count = 0",
                        1, p);
    assert_string_equal(ok, "10");
    assert_string_equal(q, "20");
    free(ok);
    free(q);
    wu_assert_usage(&u, "images_processed", "10");
    wu_assert_usage(&u, "images_failed", "0");
    cJSON *out = list_folder(&u, u.processed);
    assert_int_equal(cJSON_GetArraySize(out), 10);
    cJSON_Delete(out);
}

static void test_redis_flushed_mid_run(void **state)
{
    (void)state;
    user_t u = make_user("flush@example.com");
    char jobs[10][64]; /* a free user's whole month */
    for (int i = 0; i < 10; i++) {
        char name[32], file[128];
        snprintf(name, sizeof(name), "fl%02d.jpg", i);
        drive_file(&u, name, "image/jpeg", small_jpeg_b64, file, sizeof(file));
        create_job(&u, file, name, "landscape_vivid", jobs[i], sizeof(jobs[i]));
    }
    /* Each download waits 200 ms, so with 2 threads the ten jobs take a second
     * at least and the flush below lands mid-run (the worker got fast enough to
     * finish ten small images in 150 ms, and then nothing was lost to test). */
    fake_add_fault(google.base_url,
                   "{\"match\":{\"method\":\"GET\",\"path_regex\":\"^/drive/v3/files/[^/]+$\"},"
                   "\"count\":10,\"action\":\"delay\",\"delay_ms\":200}");
    for (int i = 0; i < 10; i++) {
        push(jobs[i]);
    }
    assert_true(wait_until(any_started, u.id, 30000));
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "FLUSHALL");
    assert_non_null(r);
    freeReplyObject(r);
    const char *pu[] = {u.id};
    char *done_at_flush = sql_value("SELECT count(*)::text FROM jobs WHERE user_id = $1::uuid"
                                    " AND status = 'completed'",
                                    1, pu);
    assert_non_null(done_at_flush);
    assert_true(atoi(done_at_flush) < 10); /* the flush really was mid-run */
    free(done_at_flush);
    /* WORKER_REPUSH_SECONDS=2: what Redis lost is pushed again from PostgreSQL */
    if (!wait_until(all_done, u.id, 40000)) {
        proc_print_log(&worker);
        fail_msg("jobs lost after FLUSHALL");
    }
    const char *p[] = {u.id};
    char *ok = sql_value("SELECT count(*)::text FROM jobs WHERE user_id = $1::uuid"
                         " AND status = 'completed'",
                         1, p);
    assert_string_equal(ok, "10");
    free(ok);
    wu_assert_usage(&u, "images_processed", "10");
    assert_true(proc_log_contains(&worker, "re-push"));
    fake_clear_faults(google.base_url);
}

/* The processing item holding `job` ("<job_id> <tier> <user_id>"), or NULL. */
static char *held_item(const char *job)
{
    static const char script[] =
        "for _, k in ipairs(redis.call('KEYS', 'ca:jobs:processing:*')) do\n"
        "  for _, v in ipairs(redis.call('LRANGE', k, 0, -1)) do\n"
        "    if string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then return v end\n"
        "  end\n"
        "end\n"
        "return false\n";
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "EVAL %s 0 %s", script, job);
    assert_non_null(r);
    char *item = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return item;
}

static bool is_held(void *arg)
{
    char *item = held_item(arg);
    bool held = item != NULL;
    free(item);
    return held;
}

/* Recovery from PostgreSQL (a queued job Redis does not know, as after a
 * flush) pushes the job to its user's list of the fair queue with the user's
 * tier: the worker holds it as "<job> studio <user>". */
static void test_repush_keeps_user_and_tier(void **state)
{
    (void)state;
    user_t u = make_user("studio-repush@example.com");
    const char *pu[] = {u.id};
    assert_int_equal(sql_exec("INSERT INTO subscriptions (user_id, tier, monthly_limit)"
                              " SELECT $1::uuid, 'studio', 2000 WHERE NOT EXISTS"
                              " (SELECT 1 FROM subscriptions WHERE user_id = $1::uuid)",
                              1, pu),
                     0);
    assert_int_equal(sql_exec("UPDATE subscriptions SET tier = 'studio', monthly_limit = 2000"
                              " WHERE user_id = $1::uuid",
                              1, pu),
                     0);
    char file[128], job[64];
    drive_file(&u, "repush.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    /* the download waits, so the worker holds the job long enough to look */
    fake_add_fault(google.base_url,
                   "{\"match\":{\"method\":\"GET\",\"path_regex\":\"^/drive/v3/files/[^/]+$\"},"
                   "\"count\":1,\"action\":\"delay\",\"delay_ms\":1500}");
    create_job(&u, file, "repush.jpg", "landscape_vivid", job, sizeof(job)); /* not pushed */
    if (!wait_until(is_held, job, 20000)) {
        proc_print_log(&worker);
        fail_msg("the queued job was not re-pushed");
    }
    char *item = held_item(job);
    char expect[256];
    snprintf(expect, sizeof(expect), "%s studio %s", job, u.id);
    if (item != NULL) {
        assert_string_equal(item, expect);
    }
    free(item);
    assert_true(wait_until(all_done, u.id, 30000));
    fake_clear_faults(google.base_url);
}

static bool has_message_for(void *arg)
{
    char path[256];
    snprintf(path, sizeof(path), "/__admin/messages?to=%s", (const char *)arg);
    cJSON *j = fake_admin(smtp_admin_url, "GET", path, NULL);
    bool yes = cJSON_GetArraySize(cJSON_GetObjectItem(j, "messages")) > 0;
    cJSON_Delete(j);
    return yes;
}

static void test_email_digest(void **state)
{
    (void)state;
    user_t u = make_user("mail@example.com");
    char file[128], jobs[3][64];
    drive_file(&u, "m1.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "m1.jpg", "portrait_pro", jobs[0], sizeof(jobs[0]));
    drive_file(&u, "m2.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "m2.jpg", "product_clean", jobs[1], sizeof(jobs[1]));
    char *junk = crypto_base64_encode("garbage bytes", 13);
    drive_file(&u, "m3.jpg", "image/jpeg", junk, file, sizeof(file));
    free(junk);
    create_job(&u, file, "m3.jpg", "portrait_pro", jobs[2], sizeof(jobs[2]));
    for (int i = 0; i < 3; i++) {
        push(jobs[i]);
    }
    for (int i = 0; i < 3; i++) {
        char *st = wait_job(jobs[i], 30000, &worker);
        free(st);
    }
    if (!wait_until(has_message_for, u.email, 20000)) {
        proc_print_log(&worker);
        fail_msg("no digest");
    }
    /* every row is sent (a row goes to 'sent' with the message that carried
     * it): then a second message would be there already */
    if (!wait_until(outbox_settled, u.id, 30000)) {
        proc_print_log(&worker);
        fail_msg("e-mail rows still pending");
    }
    char path[256];
    snprintf(path, sizeof(path), "/__admin/messages?to=%s", u.email);
    cJSON *j = fake_admin(smtp_admin_url, "GET", path, NULL);
    cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 1);
    const char *body = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "body")->valuestring;
    assert_non_null(strstr(body, "m1_portrait_pro.jpg"));
    assert_non_null(strstr(body, "m2_product_clean.jpg"));
    assert_non_null(strstr(body, "m3.jpg (unsupported_image)"));
    cJSON_Delete(j);
    const char *p[] = {u.id};
    char *sent = sql_value("SELECT count(*)::text FROM email_outbox WHERE user_id = $1::uuid"
                           " AND status = 'sent'",
                           1, p);
    assert_string_equal(sent, "3");
    free(sent);
    /* notifications off: nothing queued */
    user_t quiet = make_user("quiet@example.com");
    const char *qp[] = {quiet.id};
    assert_int_equal(
        sql_exec("UPDATE users SET email_notifications = false WHERE id = $1::uuid", 1, qp), 0);
    create_job(&quiet, "nofile", "n.jpg", "portrait_pro", jobs[0], sizeof(jobs[0]));
    push(jobs[0]);
    free(wait_job(jobs[0], 30000, &worker));
    char *none =
        sql_value("SELECT count(*)::text FROM email_outbox WHERE user_id = $1::uuid", 1, qp);
    assert_string_equal(none, "0");
    free(none);
}

/* The product works with exactly drive.readonly + drive.file (every other test
 * runs with them too); a token with less fails the way Google makes it fail. */
static void test_drive_scopes(void **state)
{
    (void)state;
    static const struct {
        const char *email;
        const char *scope;
        const char *want;
    } cases[] = {
        {"scope-narrow@example.com", PRODUCT_SCOPES, "completed"},
        /* the user's photo is invisible to a drive.file-only app: 404 */
        {"scope-file@example.com", "openid email https://www.googleapis.com/auth/drive.file",
         "failed:drive_file_not_found"},
        /* read-only: the upload is 403 insufficientPermissions */
        {"scope-read@example.com", "openid email https://www.googleapis.com/auth/drive.readonly",
         "failed:drive_forbidden"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        user_t u = make_user_scoped(cases[i].email, cases[i].scope);
        char file[128], job[64];
        drive_file(&u, "s.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
        create_job(&u, file, "s.jpg", "portrait_pro", job, sizeof(job));
        push(job);
        expect_job(job, cases[i].want, &worker);
        assert_int_equal(count_outputs_for(&u, job), strcmp(cases[i].want, "completed") == 0);
    }
    fake_match_t scope_error = {.method = "POST", .status = 403};
    assert_true(fake_count_requests(google.base_url, &scope_error) >= 1);
}

/* The permissions of a Drive file as its owner sees them: "anyoneWithLink"
 * present or not. */
static bool shared_with_link(const user_t *u, const char *file_id)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/drive/v3/files/%s/permissions", google.base_url, file_id);
    char auth[600];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", u->access);
    const char *hdr[] = {auth, NULL};
    char *resp = NULL;
    assert_int_equal(http_call_h("GET", url, hdr, NULL, &resp, NULL), 200);
    bool yes = strstr(resp, "\"anyoneWithLink\"") != NULL;
    free(resp);
    return yes;
}

/* users.share_outputs: 'link' gets the anyone-with-the-link permission and the
 * link in the e-mail; 'private' gets neither. */
static void test_output_sharing(void **state)
{
    (void)state;
    user_t shared = make_user("share-link@example.com");
    user_t priv = make_user("share-private@example.com");
    const char *pp[] = {priv.id};
    assert_int_equal(
        sql_exec("UPDATE users SET share_outputs = 'private' WHERE id = $1::uuid", 1, pp), 0);
    const user_t *users[2] = {&shared, &priv};
    char jobs[2][64];
    for (int i = 0; i < 2; i++) {
        char file[128];
        drive_file(users[i], "pic.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
        create_job(users[i], file, "pic.jpg", "portrait_pro", jobs[i], sizeof(jobs[i]));
        push(jobs[i]);
    }
    for (int i = 0; i < 2; i++) {
        expect_job(jobs[i], "completed", &worker);
        if (!wait_until(has_message_for, (void *)users[i]->email, 20000)) {
            proc_print_log(&worker);
            fail_msg("no digest for %s", users[i]->email);
        }
        char *out = wu_job_col(jobs[i], "output_drive_file_id");
        char *url = wu_job_col(jobs[i], "output_url");
        assert_true(strlen(url) > 10);
        assert_int_equal(shared_with_link(users[i], out), i == 0);
        char path[256];
        snprintf(path, sizeof(path), "/__admin/messages?to=%s", users[i]->email);
        cJSON *j = fake_admin(smtp_admin_url, "GET", path, NULL);
        const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 0);
        const char *body = cJSON_GetObjectItem(m, "body")->valuestring;
        assert_non_null(strstr(body, "pic_portrait_pro.jpg"));
        if (i == 0) {
            assert_non_null(strstr(body, url));
        } else {
            assert_null(strstr(body, url));
            assert_null(strstr(body, out));
            assert_null(strstr(body, "https://"));
            assert_non_null(strstr(body, "private: open it in your Google Drive"));
        }
        cJSON_Delete(j);
        free(out);
        free(url);
    }
}

static bool outputs_exist(void *arg)
{
    const user_t *u = arg;
    cJSON *files = list_folder(u, u->processed);
    bool yes = cJSON_GetArraySize(files) > 0;
    cJSON_Delete(files);
    return yes;
}

static bool fenced_logged(void *arg)
{
    (void)arg;
    return proc_log_contains(&worker, "completed, but the job was taken over");
}

/* A completion after another attempt took the job over records nothing: the
 * job row, the usage reservation and the e-mail outbox stay as they were. */
static void test_completion_fenced(void **state)
{
    (void)state;
    user_t u = make_user("fenced@example.com");
    char file[128], job[64];
    drive_file(&u, "fe.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    fake_add_fault(google.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path_regex\":\"/permissions\"},\"count\":1,"
                   "\"action\":\"delay\",\"delay_ms\":1500}");
    create_job(&u, file, "fe.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    assert_true(wait_until(outputs_exist, &u, 20000));
    const char *p[1] = {job};
    /* another claim (attempt + 1) while this one is still sharing */
    assert_int_equal(sql_exec("UPDATE jobs SET attempt = attempt + 1 WHERE id = $1::uuid", 1, p),
                     0);
    assert_true(wait_until(fenced_logged, NULL, 20000));
    fake_clear_faults(google.base_url);
    char *st = wu_job_col(job, "status || ' ' || (completed_at IS NULL)::text"
                               " || ' ' || (output_url IS NULL)::text");
    assert_string_equal(st, "processing true true");
    free(st);
    char *res = sql_value("SELECT state FROM usage_reservations WHERE job_id = $1::uuid", 1, p);
    assert_string_equal(res, "reserved");
    free(res);
    char *mail =
        sql_value("SELECT count(*)::text FROM email_outbox WHERE $1::uuid = ANY(job_ids)", 1, p);
    assert_string_equal(mail, "0");
    free(mail);
    /* out of the way of the tests that follow */
    assert_int_equal(sql_exec("UPDATE jobs SET status = 'cancelled', lease_expires_at = NULL"
                              " WHERE id = $1::uuid",
                              1, p),
                     0);
}

static int shares_before;

/* A share call arrived at the fake after shares_before were counted (the
 * delay fault then holds it). */
static bool share_in_flight(void *arg)
{
    (void)arg;
    return fake_count_requests(google.base_url,
                               &(fake_match_t){.method = "POST", .path_part = "/permissions"}) >
           shares_before;
}

/* kill -9 after the upload and before the job is recorded: another worker
 * finishes it with the same output file and one usage count. */
static void test_kill9_mid_job(void **state)
{
    (void)state;
    shared_stop(); /* this test runs its own pair */
    user_t u = make_user("kill9@example.com");
    char file[128], job[64];
    drive_file(&u, "k9.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    fake_add_fault(google.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path_regex\":\"/permissions\"},\"count\":1,"
                   "\"action\":\"delay\",\"delay_ms\":8000}");
    const char *extra[] = {"WORKER_CONCURRENCY=1", "WORKER_LEASE_SECONDS=5",
                           "WORKER_RETRY_BASE_MS=200", NULL};
    static proc_t a;
    assert_int_equal(start_worker(&a, extra), 0);
    shares_before = fake_count_requests(
        google.base_url, &(fake_match_t){.method = "POST", .path_part = "/permissions"});
    create_job(&u, file, "k9.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    if (!wait_until(outputs_exist, &u, 20000) || !wait_until(share_in_flight, NULL, 20000)) {
        proc_print_log(&a);
        fail_msg("no upload, or no share after it");
    }
    proc_kill9(&a);
    fake_clear_faults(google.base_url);
    char *st = wu_job_col(job, "status");
    assert_string_equal(st, "processing");
    free(st);

    static proc_t b;
    assert_int_equal(start_worker(&b, extra), 0);
    char *got = wait_job(job, 40000, &b);
    if (strcmp(got, "completed") != 0) {
        proc_print_log(&b);
    }
    assert_string_equal(got, "completed");
    free(got);
    assert_int_equal(count_outputs_for(&u, job), 1);
    wu_assert_usage(&u, "images_processed", "1");
    char *attempt = wu_job_col(job, "attempt");
    assert_true(atoi(attempt) >= 2);
    free(attempt);
    assert_true(proc_log_contains(&b, "reusing the output"));
    assert_int_equal(daemon_stop(&b), 0);

    /* the shared worker back for the tests that follow */
    assert_int_equal(shared_start(), 0);
}

/* sha256 of the 1x1 PNG the worker leaves in place of a job's files on ComfyUI. */
#define COMFY_PLACEHOLDER_SHA "a4d4c009619311d9b83904acfd62fe3b7f918c312522bbcc6ad51cdec4fd1edf"

/* Whether `s` starts with 32 lower-case hex digits followed by `rest`. */
static bool token_name(const char *s, const char *rest_prefix)
{
    for (int i = 0; i < 32; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return strncmp(s + 32, rest_prefix, strlen(rest_prefix)) == 0;
}

/* The fake ComfyUI's files of `type` ("input", "output"): a new array (caller deletes). */
static cJSON *comfy_files(const char *type)
{
    cJSON *all = fake_admin(comfy.base_url, "GET", "/__admin/files", NULL);
    cJSON *list = cJSON_DetachItemFromObjectCaseSensitive(all, type);
    cJSON_Delete(all);
    assert_non_null(list);
    return list;
}

/* Every file of the job's on ComfyUI (subfolder "ca") has an unguessable name
 * and was overwritten with the placeholder; returns how many there are. */
static int comfy_files_cleaned(const char *type, const char *rest_prefix)
{
    cJSON *list = comfy_files(type);
    int n = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, list)
    {
        const char *sub = cJSON_GetObjectItem(f, "subfolder")->valuestring;
        const char *name = cJSON_GetObjectItem(f, "name")->valuestring;
        if (strcmp(sub, "ca") != 0) {
            fail_msg("a %s file outside ca/: %s/%s", type, sub, name);
        }
        if (!token_name(name, rest_prefix)) {
            fail_msg("a guessable %s name: %s", type, name);
        }
        assert_string_equal(cJSON_GetObjectItem(f, "sha256")->valuestring, COMFY_PLACEHOLDER_SHA);
        n++;
    }
    cJSON_Delete(list);
    return n;
}

/* The first input name on ComfyUI that is not in `seen` (NULL-terminated). */
static char *comfy_new_input(char **seen)
{
    cJSON *list = comfy_files("input");
    char *found = NULL;
    const cJSON *f;
    cJSON_ArrayForEach(f, list)
    {
        const char *name = cJSON_GetObjectItem(f, "name")->valuestring;
        bool old = false;
        for (int i = 0; seen[i] != NULL; i++) {
            old = old || strcmp(seen[i], name) == 0;
        }
        if (!old && found == NULL) {
            found = strdup(name);
        }
    }
    cJSON_Delete(list);
    return found;
}

static void test_comfyui_path(void **state)
{
    (void)state;
    char comfy_url[256];
    snprintf(comfy_url, sizeof(comfy_url), "COMFYUI_URL=%s", comfy.base_url);
    const char *extra[] = {"WORKER_CONCURRENCY=1", comfy_url, "COMFYUI_TIMEOUT_SECONDS=3",
                           "WORKER_RETRY_BASE_MS=200", NULL};
    shared_stop();
    static proc_t w;
    assert_int_equal(start_worker(&w, extra), 0);
    user_t u = make_user("comfy@example.com");
    wu_user_preset(&u, "upscale2x",
                   "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.png\"}},"
                   "\"2\":{\"class_type\":\"UpscaleModelLoader\",\"inputs\":{\"model_name\":"
                   "\"2x-FakeUpscaler.pth\"}},"
                   "\"3\":{\"class_type\":\"ImageUpscaleWithModel\",\"inputs\":{\"upscale_model\":"
                   "[\"2\",0],\"image\":[\"1\",0]}},"
                   "\"4\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"3\",0],"
                   "\"filename_prefix\":\"ca\"}}}");
    wu_user_preset(&u, "badgpu",
                   "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.png\"}},"
                   "\"2\":{\"class_type\":\"UpscaleModelLoader\",\"inputs\":{\"model_name\":"
                   "\"no-such-model.pth\"}},"
                   "\"3\":{\"class_type\":\"ImageUpscaleWithModel\",\"inputs\":{\"upscale_model\":"
                   "[\"2\",0],\"image\":[\"1\",0]}},"
                   "\"4\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"3\",0],"
                   "\"filename_prefix\":\"ca\"}}}");
    char file[128], job[64];

    /* success: 24x16 PNG → 48x32 PNG */
    drive_file(&u, "small.png", "image/png", png_b64, file, sizeof(file));
    create_job(&u, file, "small.png", "upscale2x", job, sizeof(job));
    push(job);
    expect_job(job, "completed", &w);
    char *name = wu_job_col(job, "output_file_name");
    assert_string_equal(name, "small_upscale2x.png");
    free(name);
    char *pid = wu_job_col(job, "comfyui_prompt_id");
    assert_true(strlen(pid) > 0);
    free(pid);
    cJSON *out = list_folder(&u, u.processed);
    assert_int_equal(cJSON_GetArraySize(out), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(out, 0), "mimeType")->valuestring,
                        "image/png");
    cJSON_Delete(out);
    fake_match_t uploads = {.method = "POST", .path_part = "/upload/image", .status = 200};
    fake_match_t views = {.method = "GET", .path_part = "/view", .status = 200};
    assert_true(fake_count_requests(comfy.base_url, &uploads) >= 1);
    assert_true(fake_count_requests(comfy.base_url, &views) >= 1);

    /* After the job: the input and the output on ComfyUI have unguessable
     * names (128 random bits, not the job id nor a counter) and hold a 1x1
     * placeholder; the prompt is gone from the history. */
    assert_int_equal(comfy_files_cleaned("input", ".png"), 1);
    assert_int_equal(comfy_files_cleaned("output", "_00001_.png"), 1);
    pid = wu_job_col(job, "comfyui_prompt_id");
    cJSON *hist = fake_admin(comfy.base_url, "GET", "/history", NULL);
    assert_null(cJSON_GetObjectItemCaseSensitive(hist, pid));
    assert_int_equal(cJSON_GetArraySize(hist), 0);
    cJSON_Delete(hist);
    free(pid);
    /* a second job: another random name, sharing nothing with the first */
    char *seen[3] = {comfy_new_input((char *[]){NULL}), NULL, NULL};
    assert_non_null(seen[0]);
    drive_file(&u, "small2.png", "image/png", png_b64, file, sizeof(file));
    create_job(&u, file, "small2.png", "upscale2x", job, sizeof(job));
    push(job);
    expect_job(job, "completed", &w);
    seen[1] = comfy_new_input(seen);
    assert_non_null(seen[1]);
    assert_int_equal(strncmp(seen[0], seen[1], 8) == 0, 0);
    assert_int_equal(comfy_files_cleaned("input", ".png"), 2);
    assert_int_equal(comfy_files_cleaned("output", "_00001_.png"), 2);
    free(seen[0]);
    free(seen[1]);

    /* A preset stored before the gateway refused it reads another tenant's
     * output by name ("<prefix>_00001_.png [output]" through LoadImageMask):
     * the worker refuses it before anything reaches ComfyUI. */
    cJSON *outs = comfy_files("output");
    const cJSON *victim = cJSON_GetArrayItem(outs, 0);
    assert_non_null(victim);
    char peek[1024];
    const char *vsub = cJSON_GetObjectItem(victim, "subfolder")->valuestring;
    snprintf(peek, sizeof(peek),
             "{\"1\":{\"class_type\":\"LoadImageMask\",\"inputs\":{\"image\":\"%s%s%s "
             "[output]\",\"channel\":\"red\"}},"
             "\"2\":{\"class_type\":\"MaskToImage\",\"inputs\":{\"mask\":[\"1\",0]}},"
             "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0],"
             "\"filename_prefix\":\"p\"}}}",
             vsub, vsub[0] != '\0' ? "/" : "", cJSON_GetObjectItem(victim, "name")->valuestring);
    cJSON_Delete(outs);
    wu_user_preset(&u, "peek", peek);
    fake_match_t prompts = {.method = "POST", .path = "/prompt"};
    int prompts_before = fake_count_requests(comfy.base_url, &prompts);
    drive_file(&u, "pk.png", "image/png", png_b64, file, sizeof(file));
    create_job(&u, file, "pk.png", "peek", job, sizeof(job));
    push(job);
    expect_job(job, "failed:processing_error", &w);
    char *pmsg = wu_job_col(job, "error_message");
    assert_non_null(strstr(pmsg, "names a file of the image server"));
    free(pmsg);
    assert_int_equal(fake_count_requests(comfy.base_url, &prompts), prompts_before);

    /* validation error from ComfyUI (unknown model): processing_error, ComfyUI's words */
    drive_file(&u, "v.png", "image/png", png_b64, file, sizeof(file));
    create_job(&u, file, "v.png", "badgpu", job, sizeof(job));
    push(job);
    expect_job(job, "failed:processing_error", &w);
    char *msg = wu_job_col(job, "error_message");
    assert_non_null(strstr(msg, "not in"));
    free(msg);

    /* a failing node */
    cJSON *j = fake_admin(comfy.base_url, "POST", "/__admin/fail_node",
                          "{\"class_type\":\"ImageUpscaleWithModel\",\"exception_type\":"
                          "\"RuntimeError\",\"exception_message\":\"CUDA out of memory\"}");
    cJSON_Delete(j);
    drive_file(&u, "f.png", "image/png", png_b64, file, sizeof(file));
    create_job(&u, file, "f.png", "upscale2x", job, sizeof(job));
    push(job);
    expect_job(job, "failed:processing_error", &w);
    msg = wu_job_col(job, "error_message");
    assert_non_null(strstr(msg, "CUDA out of memory"));
    free(msg);
    j = fake_admin(comfy.base_url, "DELETE", "/__admin/fail_node", NULL);
    cJSON_Delete(j);

    /* timeout: slower than COMFYUI_TIMEOUT_SECONDS, no retries left */
    j = fake_admin(comfy.base_url, "POST", "/__admin/latency", "{\"ms\":2000}");
    cJSON_Delete(j);
    drive_file(&u, "t.png", "image/png", png_b64, file, sizeof(file));
    create_job(&u, file, "t.png", "upscale2x", job, sizeof(job));
    const char *p[] = {job};
    assert_int_equal(sql_exec("UPDATE jobs SET max_retries = 0 WHERE id = $1::uuid", 1, p), 0);
    push(job);
    expect_job(job, "failed:timeout", &w);
    j = fake_admin(comfy.base_url, "POST", "/__admin/latency", "{\"ms\":0}");
    cJSON_Delete(j);
    /* refused, failed and timed-out prompts left no input behind either */
    assert_int_equal(comfy_files_cleaned("input", "."), 5);
    wu_assert_usage(&u, "images_processed", "2");
    assert_int_equal(daemon_stop(&w), 0);
    assert_int_equal(shared_start(), 0);
}

static void test_metrics_exposed(void **state)
{
    (void)state;
    user_t u = make_user("metrics@example.com");
    char file[128], job[64];
    drive_file(&u, "me.jpg", "image/jpeg", small_jpeg_b64, file, sizeof(file));
    create_job(&u, file, "me.jpg", "portrait_pro", job, sizeof(job));
    push(job);
    expect_job(job, "completed", &worker);
    char url[256];
    snprintf(url, sizeof(url), "%s/metrics", worker.base_url);
    assert_true(wait_until(metrics_have_gauges, url, 30000)); /* the gauges task, every 5 s */
    char *body = NULL;
    assert_int_equal(http_call("GET", url, NULL, &body), 200);
    assert_non_null(strstr(body, "ca_worker_jobs_total{status=\"completed\""));
    assert_non_null(strstr(body, "ca_worker_job_seconds_bucket{preset=\"portrait_pro\""));
    assert_non_null(strstr(body, "ca_worker_queue_depth{queue=\"ready\"}"));
    assert_non_null(strstr(body, "ca_worker_drive_calls_total"));
    free(body);
}

/* Last: SIGTERM, and the shared worker exits 0 (a sanitizer's report would
 * not; cmocka does not count a failed group teardown). */
static void test_worker_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&worker), 0);
}

static void test_units(void **state)
{
    (void)state;
    /* the worker's retry policy (WORKER_RETRY_BASE_MS 2000, WORKER_RETRY_MAX_MS
     * 300000): within [cap/2, cap], doubling, capped */
    for (int n = 1; n <= 12; n++) {
        int64_t cap = 2000LL << (n - 1);
        if (cap > 300000) {
            cap = 300000;
        }
        int64_t b = backoff_delay_ms(n, 2000, 300000);
        assert_true(b >= cap / 2 && b <= cap);
    }
    char addr[128];
    email_address("Creator Automation <no-reply@example.com>", addr, sizeof(addr));
    assert_string_equal(addr, "no-reply@example.com");
    email_address("plain@example.com", addr, sizeof(addr));
    assert_string_equal(addr, "plain@example.com");
    email_job_t jobs[] = {{"a.jpg", "completed", "a_p.jpg", "https://x/a", "", ""},
                          {"b\r\nBcc: evil@x.com", "failed", "", "", "unsupported_image", "bad"}};
    char *m =
        email_build_digest("CA <n@x.com>", "u@x.com\r\nBcc: evil@x.com", "Ann", "id1", jobs, 2);
    assert_non_null(m);
    assert_null(strstr(m, "\r\nBcc:"));
    assert_non_null(strstr(m, "Subject: Creator Automation: 1 photo ready, 1 could not"));
    free(m);
    size_t len = 0;
    char *ct = NULL;
    http_pair_t f[] = {{"overwrite", "true"}};
    char *body =
        comfy_multipart_form("image", "a\"b.png", "image/png", "PNGDATA", 7, f, 1, &len, &ct);
    assert_non_null(body);
    assert_non_null(strstr(ct, "multipart/form-data; boundary="));
    assert_non_null(memmem(body, len, "filename=\"a_b.png\"", 18));
    assert_non_null(memmem(body, len, "PNGDATA\r\n--", 11));
    free(body);
    free(ct);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_presets_end_to_end),
        cmocka_unit_test(test_same_id_twice),
        cmocka_unit_test(test_error_codes),
        cmocka_unit_test(test_hostile_images),
        cmocka_unit_test(test_drive_faults_recovered),
        cmocka_unit_test(test_email_digest),
        cmocka_unit_test(test_output_sharing),
        cmocka_unit_test(test_drive_scopes),
        cmocka_unit_test(test_free_user_30_images),
        cmocka_unit_test(test_redis_flushed_mid_run),
        cmocka_unit_test(test_repush_keeps_user_and_tier),
        cmocka_unit_test(test_completion_fenced),
        cmocka_unit_test(test_kill9_mid_job),
        cmocka_unit_test(test_comfyui_path),
        cmocka_unit_test(test_metrics_exposed),
        cmocka_unit_test(test_worker_exits_cleanly), /* last: stops the shared worker */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
