/*
 * job-worker: full-size camera files (issue 18). The real binary against the
 * Google fake: outputs over 5 MB go through Drive's resumable protocol (byte
 * for byte), a connection cut mid-chunk is resumed from the offset Drive
 * reports, a worker retry goes on with the session it stored, an expired
 * session is started again; the fake refuses multipart over 5 MB; originals
 * go through an unnamed temporary file that is gone after every job.
 */
#define _GNU_SOURCE
#include "cpu_exec.h"
#include "crypto.h"
#include "drive.h"
#include "fake_admin.h"
#include "google_oauth.h"
#include "http_client.h"
#include "queue.h"
#include "redis.h"
#include "support.h"
#include "worker_user.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define KEY_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define CLIENT_ID "ca-upload-test"
#define SCOPES "openid email profile " GOOGLE_DRIVE_SCOPES
#define MIB (1024 * 1024)

/* LoadImage → CA.Export as PNG: a noise photo makes a PNG over 5 MB. */
static const char BIG_PNG[] =
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"in.jpg\"}},"
    "\"2\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"1\",0],\"format\":\"png\"}}}";

static proc_t google, worker;
static crypto_keyring_t *keys;
static redis_conn_t *redis;
static char tmpdir[PATH_MAX];
static char tmpdir_env[PATH_MAX + 16];
static char *photo_b64; /* the original (JPEG) */
static void *expected;  /* what the executor makes of it (PNG) */
static size_t expected_len;
static int users;

static void *noise_jpeg(int w, int h, size_t *len)
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
    assert_int_equal(vips_jpegsave_buffer(u8, &buf, len, "Q", 90, NULL), 0);
    for (int i = 0; i < 3; i++) {
        g_object_unref(bands[i]);
    }
    g_object_unref(joined);
    g_object_unref(u8);
    return buf;
}

static int setup(void **state)
{
    (void)state;
    if (getenv("TEST_DATABASE_URL") == NULL || getenv("TEST_REDIS_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL / TEST_REDIS_URL not set (run through tests/run)\n");
        return -1;
    }
    if (cpu_exec_init("test_worker_upload") != 0) {
        return -1;
    }
    char err[256];
    keys = crypto_keyring_new(KEY_B64, NULL, err, sizeof(err));
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    if (keys == NULL || redis == NULL || fake_start(&google, "google", NULL) != 0) {
        return -1;
    }
    snprintf(tmpdir, sizeof(tmpdir), "%s/ca-upload-tmp-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        return -1;
    }
    snprintf(tmpdir_env, sizeof(tmpdir_env), "TMPDIR=%s", tmpdir);

    size_t len = 0;
    void *jpeg = noise_jpeg(1800, 1800, &len);
    photo_b64 = crypto_base64_encode(jpeg, len);
    cJSON *graph = cJSON_Parse(BIG_PNG);
    cpu_exec_job_t job = {.input = jpeg, .input_len = len};
    char xerr[256];
    if (cpu_exec_run(graph, &job, xerr, sizeof(xerr)) != CPU_EXEC_OK) {
        fprintf(stderr, "expected output: %s\n", xerr);
        return -1;
    }
    expected = job.output;
    expected_len = job.output_len;
    job.output = NULL;
    cpu_exec_job_free(&job);
    cJSON_Delete(graph);
    g_free(jpeg);
    if (expected_len <= DRIVE_MULTIPART_MAX_BYTES + MIB) {
        fprintf(stderr, "the test output is only %zu bytes\n", expected_len);
        return -1;
    }

    /* 1.5-3 s before a retry: time for a test to expire the stored session */
    const char *extra[] = {"WORKER_CONCURRENCY=1",
                           "WORKER_RETRY_BASE_MS=3000",
                           "WORKER_THUMBNAIL_TTL_SECONDS=0",
                           "WORKER_PREVIEW_CONCURRENCY=0",
                           "LOG_LEVEL=debug",
                           tmpdir_env,
                           NULL};
    return wu_start_worker(&worker, google.base_url, KEY_B64, CLIENT_ID, extra);
}

static int teardown(void **state)
{
    (void)state;
    int rc = worker.pid > 0 ? proc_stop(&worker) : 0;
    proc_stop(&google);
    redis_close(redis);
    crypto_keyring_free(keys);
    free(photo_b64);
    free(expected);
    rmdir(tmpdir);
    cpu_exec_shutdown();
    return rc == 0 ? 0 : -1;
}

/* ---- helpers ---- */

typedef struct {
    wu_user_t u;
    char file[128];
    char job[64];
    char name[128]; /* the output's name */
} big_job_t;

/* A user with the big_png preset and the photo as `stem`.jpg in the Inbox; a
 * job for it, not pushed yet. */
static big_job_t make_job(const char *stem)
{
    big_job_t b;
    memset(&b, 0, sizeof(b));
    char email[64];
    snprintf(email, sizeof(email), "upload%d@example.com", ++users);
    b.u = wu_make_user(google.base_url, keys, CLIENT_ID, email, SCOPES);
    wu_user_preset(&b.u, "big_png", BIG_PNG);
    char fname[64];
    snprintf(fname, sizeof(fname), "%s.jpg", stem);
    wu_drive_file(google.base_url, &b.u, fname, "image/jpeg", photo_b64, b.file, sizeof(b.file));
    const char *params[] = {b.u.id, b.file, fname, b.u.inbox};
    char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2, $3, $4,"
                         " 1000, 'image/jpeg', 'big_png')",
                         4, params);
    assert_non_null(id);
    snprintf(b.job, sizeof(b.job), "%s", id);
    free(id);
    snprintf(b.name, sizeof(b.name), "%s_big_png.png", stem);
    return b;
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

static void expect_completed(const char *job)
{
    assert_true(wait_until(job_is_done, (void *)job, 60000));
    char *st =
        wu_job_col(job, "status || COALESCE(':' || error_code || ': ' || error_message, '')");
    if (strcmp(st, "completed") != 0) {
        fprintf(stderr, "job %s: %s\n", job, st);
        proc_print_log(&worker);
    }
    assert_string_equal(st, "completed");
    free(st);
}

/* The output in Drive is the executor's bytes, exactly, and the only one. */
static void assert_output_exact(const big_job_t *b)
{
    assert_int_equal(wu_outputs_for(google.base_url, &b->u, b->job), 1);
    char *id = wu_job_col(b->job, "output_drive_file_id");
    assert_non_null(id);
    char url[512];
    snprintf(url, sizeof(url), "%s/drive/v3/files/%s?alt=media", google.base_url, id);
    free(id);
    char auth[600];
    snprintf(auth, sizeof(auth), "Bearer %s", b->u.access);
    http_pair_t h[] = {{"Authorization", auth}};
    http_opts_t opts = {.max_body = 64 * MIB};
    http_request_t req = {.method = "GET", .url = url, .headers = h, .nheaders = 1, .opts = &opts};
    http_client_t *c = http_client_new();
    http_response_t resp;
    assert_int_equal(http_client_do(c, &req, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body_len, expected_len);
    assert_memory_equal(resp.body, expected, expected_len);
    http_response_free(&resp);
    http_client_free(c);
}

/* The fake's resumable sessions for this output name, oldest first (caller
 * deletes). */
static cJSON *sessions_of(const char *name)
{
    cJSON *all = fake_admin(google.base_url, "GET", "/__admin/uploads", NULL);
    cJSON *out = cJSON_CreateArray();
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(all, "uploads"))
    {
        const cJSON *n = cJSON_GetObjectItem(s, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) {
            cJSON_AddItemToArray(out, cJSON_Duplicate(s, true));
        }
    }
    cJSON_Delete(all);
    return out;
}

/* "start:status" of each PUT of a session ("*" for a status query), joined
 * by spaces: e.g. "0:0 *:308 2097152:200". */
static void puts_of(const cJSON *session, char *out, size_t outlen)
{
    out[0] = '\0';
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(session, "puts"))
    {
        const cJSON *st = cJSON_GetObjectItem(p, "status");
        const cJSON *start = cJSON_GetObjectItem(p, "start");
        char one[64];
        if (cJSON_IsTrue(cJSON_GetObjectItem(p, "query"))) {
            snprintf(one, sizeof(one), "*:%d", cJSON_IsNumber(st) ? st->valueint : -1);
        } else {
            snprintf(one, sizeof(one), "%.0f:%d", cJSON_IsNumber(start) ? start->valuedouble : -1.0,
                     cJSON_IsNumber(st) ? st->valueint : -1);
        }
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s%s", l > 0 ? " " : "", one);
    }
}

/* The PUTs that send the output from `from` on in 8 MiB chunks, as puts_of
 * writes them: "1048576:308 9437184:200". */
static void chunks_from(size_t from, char *out, size_t outlen)
{
    out[0] = '\0';
    for (size_t o = from; o < expected_len; o += DRIVE_RESUMABLE_CHUNK_BYTES) {
        bool last = expected_len - o <= DRIVE_RESUMABLE_CHUNK_BYTES;
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s%zu:%d", l > 0 ? " " : "", o, last ? 200 : 308);
    }
}

/* Requests to the upload endpoint from `since` on with uploadType `type`. */
static int count_uploads(long since, const char *type)
{
    cJSON *j = fake_requests(google.base_url, since);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "requests"))
    {
        const cJSON *q = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "query"), "uploadType");
        if (strcmp(cJSON_GetObjectItem(r, "method")->valuestring, "POST") == 0 &&
            strcmp(cJSON_GetObjectItem(r, "path")->valuestring, "/upload/drive/v3/files") == 0 &&
            cJSON_IsString(q) && strcmp(q->valuestring, type) == 0) {
            n++;
        }
    }
    cJSON_Delete(j);
    return n;
}

static void drop_next_chunks(long keep_bytes, int count)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"keep_bytes\":%ld,\"count\":%d}", keep_bytes, count);
    cJSON_Delete(fake_admin(google.base_url, "POST", "/__admin/uploads/drop", body));
}

static char *redis_get(const char *key)
{
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "GET %s", key);
    assert_non_null(r);
    char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return v;
}

/* ---- tests ---- */

/* An output over 5 MB: one resumable session, no multipart, the file byte
 * for byte; the stored session is forgotten once the file is there. */
static void test_large_output_resumable(void **state)
{
    (void)state;
    long since = fake_requests_next(google.base_url);
    big_job_t b = make_job("large");
    push(b.job);
    expect_completed(b.job);
    assert_output_exact(&b);
    assert_int_equal(count_uploads(since, "resumable"), 1);
    assert_int_equal(count_uploads(since, "multipart"), 0);
    cJSON *ss = sessions_of(b.name);
    assert_int_equal(cJSON_GetArraySize(ss), 1);
    char p[256];
    puts_of(cJSON_GetArrayItem(ss, 0), p, sizeof(p));
    char want[256];
    chunks_from(0, want, sizeof(want));
    assert_string_equal(p, want);
    cJSON_Delete(ss);
    char key[128];
    snprintf(key, sizeof(key), "ca:upload:%s", b.job);
    char *v = redis_get(key);
    assert_null(v);
}

/* The connection is cut 2 MiB into the chunk: the worker asks Drive where it
 * stands and sends the rest from there, not from 0. */
static void test_drop_resumed_from_offset(void **state)
{
    (void)state;
    big_job_t b = make_job("dropped");
    drop_next_chunks(2 * MIB, 1);
    push(b.job);
    expect_completed(b.job);
    assert_output_exact(&b);
    cJSON *ss = sessions_of(b.name);
    assert_int_equal(cJSON_GetArraySize(ss), 1);
    char p[256];
    puts_of(cJSON_GetArrayItem(ss, 0), p, sizeof(p));
    char want[256] = "0:0 *:308 ";
    chunks_from(2 * MIB, want + strlen(want), sizeof(want) - strlen(want));
    assert_string_equal(p, want);
    cJSON_Delete(ss);
    char *attempt = wu_job_col(b.job, "attempt");
    assert_string_equal(attempt, "1");
    free(attempt);
}

/* The first attempt gets 1 MiB through, then every chunk is cut until it
 * gives up (upload_failed, retried); the retry finds the stored session,
 * asks where it stands and sends the rest from 1 MiB: one session, one file. */
static void test_retry_reuses_session(void **state)
{
    (void)state;
    long since = fake_requests_next(google.base_url);
    big_job_t b = make_job("reused");
    drop_next_chunks(MIB, 1);
    drop_next_chunks(0, 6);
    push(b.job);
    expect_completed(b.job);
    assert_output_exact(&b);
    char *attempt = wu_job_col(b.job, "attempt || ' ' || retry_count");
    assert_string_equal(attempt, "2 1");
    free(attempt);
    assert_int_equal(count_uploads(since, "resumable"), 1);
    cJSON *ss = sessions_of(b.name);
    assert_int_equal(cJSON_GetArraySize(ss), 1);
    char p[512];
    puts_of(cJSON_GetArrayItem(ss, 0), p, sizeof(p));
    /* attempt 1: 0 cut at 1 MiB, then 6 cuts at 1 MiB (each asked about);
     * attempt 2: a status query, then the rest from 1 MiB */
    char tail[256] = " *:308 ";
    chunks_from(MIB, tail + strlen(tail), sizeof(tail) - strlen(tail));
    assert_true(strlen(p) > strlen(tail));
    assert_string_equal(p + strlen(p) - strlen(tail), tail);
    assert_true(strncmp(p, "0:0 *:308 1048576:0 *:308 ", 26) == 0);
    if (strlen(p) > 400) {
        fprintf(stderr, "puts: %s\n", p);
    }
    cJSON_Delete(ss);
}

static bool waits_for_retry(void *arg)
{
    char *v = wu_job_col(arg, "status || ' ' || retry_count");
    bool yes = v != NULL && strcmp(v, "queued 1") == 0;
    free(v);
    return yes;
}

/* As above, but the session expires before the retry: Drive answers 404 and
 * the retry starts a new session, from 0. Still one file. */
static void test_expired_session_restarted(void **state)
{
    (void)state;
    long since = fake_requests_next(google.base_url);
    big_job_t b = make_job("expired");
    drop_next_chunks(MIB, 1);
    drop_next_chunks(0, 6);
    push(b.job);
    assert_true(wait_until(waits_for_retry, b.job, 60000));
    cJSON_Delete(fake_admin(google.base_url, "POST", "/__admin/uploads/expire", "{}"));
    expect_completed(b.job);
    assert_output_exact(&b);
    assert_int_equal(count_uploads(since, "resumable"), 2);
    cJSON *ss = sessions_of(b.name);
    assert_int_equal(cJSON_GetArraySize(ss), 2);
    char p[512];
    puts_of(cJSON_GetArrayItem(ss, 0), p, sizeof(p));
    const char *tail = " *:404"; /* the retry's status query on the old session */
    assert_string_equal(p + strlen(p) - strlen(tail), tail);
    puts_of(cJSON_GetArrayItem(ss, 1), p, sizeof(p));
    char want[256];
    chunks_from(0, want, sizeof(want));
    assert_string_equal(p, want);
    cJSON_Delete(ss);
}

static void count_sessions(void *arg, const char *uri)
{
    assert_non_null(uri);
    (*(int *)arg)++;
}

/* The fake keeps Drive's documented limit: multipart is for 5 MB or less
 * (413 above it, which the client reports as GOOGLE_ERR_TOO_LARGE). */
static void test_multipart_over_5mb_refused(void **state)
{
    (void)state;
    fake_google_user_t g;
    fake_google_user(google.base_url, "multipart@example.com", CLIENT_ID, &g);
    char api[256];
    char up[256];
    snprintf(api, sizeof(api), "%s/drive/v3", google.base_url);
    snprintf(up, sizeof(up), "%s/upload/drive/v3", google.base_url);
    google_config_t cfg = {.drive_api_url = api, .drive_upload_url = up, .max_retries = 0};
    google_client_t *gc = google_client_new(&cfg);
    assert_non_null(gc);
    size_t n = DRIVE_MULTIPART_MAX_BYTES + 1;
    char *data = calloc(1, n);
    assert_non_null(data);
    drive_file_t f;
    google_error_t gerr;
    assert_int_equal(
        drive_upload(gc, g.access_token, "big.bin", NULL, NULL, NULL, data, n, &f, &gerr),
        GOOGLE_ERR_TOO_LARGE);
    assert_int_equal(gerr.http_status, 413);
    drive_file_free(&f);
    assert_int_equal(
        drive_upload(gc, g.access_token, "five.bin", NULL, NULL, NULL, data, n - 1, &f, &gerr),
        GOOGLE_OK);
    assert_int_equal(f.size, (long long)(n - 1));
    drive_file_free(&f);
    /* the same bytes (and one more) go through the resumable protocol */
    drive_upload_session_t s = {0};
    assert_int_equal(drive_upload_resumable(gc, g.access_token, "big.bin", NULL, NULL, NULL, data,
                                            n, 0, &s, NULL, NULL, &f, &gerr),
                     GOOGLE_OK);
    assert_int_equal(f.size, (long long)n);
    drive_file_free(&f);
    drive_upload_session_free(&s);
    free(data);
    google_client_free(gc);
}

/* The final chunk reaches Drive but its answer is lost (the fake drops the
 * connection after handling it): the status query gets the file, and there
 * is one file, not two. */
static void test_lost_final_answer_one_file(void **state)
{
    (void)state;
    fake_google_user_t g;
    fake_google_user(google.base_url, "lostanswer@example.com", CLIENT_ID, &g);
    char api[256];
    char up[256];
    snprintf(api, sizeof(api), "%s/drive/v3", google.base_url);
    snprintf(up, sizeof(up), "%s/upload/drive/v3", google.base_url);
    google_config_t cfg = {.drive_api_url = api, .drive_upload_url = up, .max_retries = 2};
    google_client_t *gc = google_client_new(&cfg);
    assert_non_null(gc);
    size_t n = 300 * 1024; /* one chunk: the first PUT is the last */
    char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++) {
        data[i] = (char)(i * 7);
    }
    fake_add_fault(google.base_url, "{\"match\":{\"method\":\"PUT\",\"path\":"
                                    "\"/upload/drive/v3/files\"},\"count\":1,"
                                    "\"action\":\"drop\",\"when\":\"after\"}");
    drive_upload_session_t s = {0};
    int calls = 0;
    drive_file_t f;
    google_error_t gerr;
    assert_int_equal(drive_upload_resumable(gc, g.access_token, "lost.bin", NULL, NULL, NULL, data,
                                            n, 0, &s, count_sessions, &calls, &f, &gerr),
                     GOOGLE_OK);
    assert_int_equal(calls, 1);
    assert_int_equal(s.resumes, 1);
    assert_int_equal(f.size, (long long)n);
    fake_clear_faults(google.base_url);
    /* exactly one file of that name in the account */
    char url[512];
    snprintf(url, sizeof(url),
             "%s/drive/v3/files?q=name%%20%%3D%%20%%27lost.bin%%27&fields=files(id)",
             google.base_url);
    char auth[600];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", g.access_token);
    const char *hdr[] = {auth, NULL};
    char *resp = NULL;
    assert_int_equal(http_call_h("GET", url, hdr, NULL, &resp, NULL), 200);
    cJSON *j = cJSON_Parse(resp);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "files")), 1);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "files"), 0), "id")
            ->valuestring,
        f.id);
    cJSON_Delete(j);
    free(resp);
    drive_file_free(&f);
    drive_upload_session_free(&s);
    free(data);
    google_client_free(gc);
}

/* Originals go through an unnamed temporary file in TMPDIR: after the jobs
 * (completed, failed) the worker holds no descriptor or mapping of one, and
 * the directory is empty. */
static void test_temporary_files_gone(void **state)
{
    (void)state;
    big_job_t b = make_job("tmpcheck");
    char bad[128];
    wu_drive_file(google.base_url, &b.u, "notes.jpg", "image/jpeg", "bm90IGFuIGltYWdl", bad,
                  sizeof(bad));
    const char *params[] = {b.u.id, bad, b.u.inbox};
    char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2,"
                         " 'notes.jpg', $3, 12, 'image/jpeg', 'big_png')",
                         3, params);
    assert_non_null(id);
    push(b.job);
    push(id);
    expect_completed(b.job);
    assert_true(wait_until(job_is_done, id, 30000));
    char *code = wu_job_col(id, "error_code");
    assert_string_equal(code, "unsupported_image");
    free(code);
    free(id);
    usleep(200 * 1000); /* the job thread closes the file right after the job */

    char path[PATH_MAX];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)worker.pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *de;
    int open_in_tmp = 0;
    while ((de = readdir(d)) != NULL) {
        char fd_path[PATH_MAX + 300];
        char target[PATH_MAX];
        snprintf(fd_path, sizeof(fd_path), "%s/%s", path, de->d_name);
        ssize_t n = readlink(fd_path, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            if (strncmp(target, tmpdir, strlen(tmpdir)) == 0) {
                fprintf(stderr, "still open: %s\n", target);
                open_in_tmp++;
            }
        }
    }
    closedir(d);
    assert_int_equal(open_in_tmp, 0);
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)worker.pid);
    FILE *m = fopen(path, "r");
    assert_non_null(m);
    char line[1024];
    int mapped = 0;
    while (fgets(line, sizeof(line), m) != NULL) {
        mapped += strstr(line, tmpdir) != NULL;
    }
    fclose(m);
    assert_int_equal(mapped, 0);
    d = opendir(tmpdir);
    assert_non_null(d);
    int entries = 0;
    while ((de = readdir(d)) != NULL) {
        entries += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    }
    closedir(d);
    assert_int_equal(entries, 0);
    /* and the worker did use it: its log names no other directory */
    assert_false(proc_log_contains(&worker, "no temporary file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multipart_over_5mb_refused),
        cmocka_unit_test(test_large_output_resumable),
        cmocka_unit_test(test_drop_resumed_from_offset),
        cmocka_unit_test(test_retry_reuses_session),
        cmocka_unit_test(test_expired_session_restarted),
        cmocka_unit_test(test_lost_final_answer_one_file),
        cmocka_unit_test(test_temporary_files_gone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
