/*
 * Redis down, at the level of the services (docs/architecture.md,
 * docs/api-gateway.md "Sign-in", docs/drive-poller.md "One poll" 4,
 * docs/job-worker.md "Recovery", docs/operations.md "Probes"): the gateway,
 * the poller and the worker run against the Google fake while Redis is
 * stopped, then started again empty.
 *   - the gateway makes no session: sign-in answers 503 without a cookie, a
 *     signed-in user's requests answer 503 (not 200, not 401); /healthz stays
 *     200 and /readyz turns 503;
 *   - an image that arrives meanwhile still becomes a job (in PostgreSQL; the
 *     poller's push fails and is counted), and once Redis is back the worker
 *     finds the job through its re-push of queued jobs and completes it;
 *   - afterwards sign-in works again, and every daemon exits 0 on SIGTERM.
 */
#include "fake_admin.h"
#include "gw_session.h"
#include "redis.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* gwt_start's key and Google client, shared by the poller and the worker */
#define KEY_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define CLIENT_ID "test-client"
#define CLIENT_SECRET "test-client-secret"

static proc_t google, gw, poller, worker;
static gwt_session_t alice;
static char inbox[128];
static bool redis_stopped;

static void stop_redis(void)
{
    redis_stopped = true;
    assert_int_equal(services_sh("stop-redis"), 0);
}

static void start_redis(void)
{
    assert_int_equal(services_sh("start-redis"), 0);
    redis_stopped = false;
}

/* A folder (content NULL) or a JPEG in alice's Drive; fills id. */
static void drive_item(const char *name, const char *parent, bool folder, char *id, size_t n)
{
    char body[2048];
    snprintf(body, sizeof(body), "{\"email\":\"%s\",\"name\":\"%s\",\"parents\":[\"%s\"],%s}",
             alice.email, name, parent,
             folder ? "\"folder\":true"
                    : "\"mimeType\":\"image/jpeg\",\"content_base64\":\"" TINY_JPEG_B64 "\"");
    fake_google_file(google.base_url, body, id, n);
}

static char *sql1(const char *sql, const char *arg)
{
    const char *p[] = {arg};
    return sql_value(sql, arg != NULL ? 1 : 0, p);
}

static bool sql_is(const char *sql, const char *arg, const char *want)
{
    char *v = sql1(sql, arg);
    bool yes = v != NULL && strcmp(v, want) == 0;
    free(v);
    return yes;
}

static bool watch_scanned(void *arg)
{
    (void)arg;
    return sql_is("SELECT count(*)::text FROM drive_polls WHERE user_id = $1::uuid AND active"
                  " AND changes_page_token IS NOT NULL AND last_full_scan_at IS NOT NULL",
                  alice.id, "1");
}

static bool job_queued(void *file)
{
    return sql_is("SELECT status FROM jobs WHERE drive_file_id = $1", file, "queued");
}

static bool job_completed(void *file)
{
    return sql_is("SELECT status FROM jobs WHERE drive_file_id = $1", file, "completed");
}

static bool push_failure_counted(void *arg)
{
    (void)arg;
    char url[192];
    snprintf(url, sizeof(url), "%s/metrics", poller.base_url);
    char *body = NULL;
    bool yes = http_call("GET", url, NULL, &body) == 200 && body != NULL &&
               strstr(body, "ca_poller_push_failures_total 1") != NULL;
    free(body);
    return yes;
}

static gwt_resp_t request(const char *method, const char *path, const gwt_session_t *s,
                          const char *body)
{
    return gwt_request(gw.base_url, method, path, s, method[0] != 'G', body);
}

static void test_redis_down_then_back(void **state)
{
    (void)state;
    /* alice signs in (Redis up) and watches her Inbox through the gateway */
    assert_int_equal(gwt_sign_in(gw.base_url, "alice@example.com", &alice), 0);
    fake_google_user_t u;
    fake_google_user(google.base_url, "alice@example.com", NULL, &u);
    drive_item("Inbox", u.root_id, true, inbox, sizeof(inbox));
    char body[256];
    snprintf(body, sizeof(body), "{\"folder_id\":\"%s\"}", inbox);
    gwt_resp_t r = request("PUT", "/api/watch", &alice, body);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    if (!wait_until(watch_scanned, NULL, 30000)) {
        proc_print_log(&poller);
        fail_msg("the watch was not polled");
    }

    stop_redis();

    /* the gateway: no session, cleanly */
    char url[192];
    snprintf(url, sizeof(url), "%s/readyz", gw.base_url);
    assert_true(wait_http_status(url, 503, 30000));
    snprintf(url, sizeof(url), "%s/healthz", gw.base_url);
    assert_int_equal(http_call("GET", url, NULL, NULL), 200);
    r = request("GET", "/api/me", &alice, NULL);
    assert_int_equal(r.status, 503);
    assert_string_equal(gwt_error_code(&r), "unavailable");
    gwt_resp_free(&r);
    snprintf(url, sizeof(url), "%s/auth/google/login", gw.base_url);
    char *headers = NULL;
    assert_int_equal(http_call_h("GET", url, NULL, NULL, NULL, &headers), 503);
    char *cookie = gwt_header(headers, "Set-Cookie");
    assert_null(cookie);
    free(headers);

    /* an image arrives: a job in PostgreSQL, its push to Redis failed */
    char file[128];
    drive_item("while-down.jpg", inbox, false, file, sizeof(file));
    if (!wait_until(job_queued, file, 60000) || !wait_until(push_failure_counted, NULL, 30000)) {
        proc_print_log(&poller);
        fail_msg("no queued job (or no push failure counted) while Redis was down");
    }

    /* Redis back, empty: the worker re-pushes the queued job and completes it */
    start_redis();
    if (!wait_until(job_completed, file, 90000)) {
        proc_print_log(&worker);
        fail_msg("the job was not delivered after Redis came back");
    }
    assert_true(proc_log_contains(&worker, "missing from Redis pushed again"));
    assert_true(sql_is("SELECT count(*)::text FROM jobs WHERE drive_file_id = $1", file, "1"));

    /* the gateway: the old session went with Redis's data; signing in works */
    snprintf(url, sizeof(url), "%s/readyz", gw.base_url);
    assert_true(wait_http_status(url, 200, 30000));
    r = request("GET", "/api/me", &alice, NULL);
    assert_int_equal(r.status, 401);
    gwt_resp_free(&r);
    gwt_session_t again;
    assert_int_equal(gwt_sign_in(gw.base_url, "alice@example.com", &again), 0);
}

/* Last: each daemon exits 0 on SIGTERM (a sanitizer's report would not). */
static void test_daemons_exit_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&worker), 0);
    assert_int_equal(daemon_stop(&poller), 0);
    assert_int_equal(daemon_stop(&gw), 0);
}

static int setup(void **state)
{
    (void)state;
    if (fake_start(&google, "google", NULL) != 0 || gwt_start(&gw, google.base_url, NULL) != 0) {
        return -1;
    }
    setenv("REDIS_URL", getenv("TEST_REDIS_URL"), 1);
    static char env[6][512];
    snprintf(env[0], 512, "GOOGLE_TOKEN_URL=%s/token", google.base_url);
    snprintf(env[1], 512, "DRIVE_API_URL=%s/drive/v3", google.base_url);
    snprintf(env[2], 512, "DRIVE_UPLOAD_URL=%s/upload/drive/v3", google.base_url);
    snprintf(env[3], 512, "DATABASE_URL=%s", db_url_as("ca_drive_poller"));
    snprintf(env[4], 512, "DATABASE_URL=%s", db_url_as("ca_job_worker"));
    const char *poller_env[] = {env[0],
                                env[1],
                                env[3],
                                "ENCRYPTION_KEY=" KEY_B64,
                                "GOOGLE_CLIENT_ID=" CLIENT_ID,
                                "GOOGLE_CLIENT_SECRET=" CLIENT_SECRET,
                                "POLL_INTERVAL_SECONDS=1",
                                "POLLER_CONCURRENCY=1",
                                NULL};
    const char *worker_env[] = {env[0],
                                env[1],
                                env[2],
                                env[4],
                                "ENCRYPTION_KEY=" KEY_B64,
                                "GOOGLE_CLIENT_ID=" CLIENT_ID,
                                "GOOGLE_CLIENT_SECRET=" CLIENT_SECRET,
                                "WORKER_CONCURRENCY=1",
                                "WORKER_REPUSH_SECONDS=2",
                                NULL};
    if (daemon_start(&poller, "drive-poller", poller_env) != 0 ||
        daemon_start(&worker, "job-worker", worker_env) != 0) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (redis_stopped && services_sh("start-redis") != 0) { /* the suites that follow need it */
        fprintf(stderr, "could not start Redis again\n");
    }
    proc_stop(&worker); /* already stopped by the last test unless it failed */
    proc_stop(&poller);
    proc_stop(&gw);
    proc_stop(&google);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_down_then_back),
        cmocka_unit_test(test_daemons_exit_cleanly), /* last: stops the daemons */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
