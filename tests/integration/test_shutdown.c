/*
 * The shutdown contract of each of the four daemons (common/daemon.h,
 * docs/architecture.md "Shutdown", docs/operations.md), each with work in
 * flight when the signal comes:
 *   - on SIGTERM /readyz answers 503 at once: while that work is still in
 *     flight, not after the drain;
 *   - the work in flight then finishes, or is handed back after the drain,
 *     and the daemon exits 0;
 *   - a second SIGTERM exits at once, the work still in flight.
 * The work is held in flight by a lock on the table it writes (api-gateway,
 * billing-webhook) or by a delayed answer of the Google fake (job-worker,
 * drive-poller). The poller's drain that completes its poll is
 * test_poller_faults' sigterm_drains; here its poll is handed back between
 * two pages of changes.
 */
#include "crypto.h"
#include "fake_admin.h"
#include "gw_session.h"
#include "queue.h"
#include "redis.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define KEY_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define CLIENT_ID "ca-shutdown-test"
#define CLIENT_SECRET "ca-shutdown-secret"
#define WEBHOOK_SECRET "whsec_shutdown_test"

static proc_t google;
static crypto_keyring_t *keys;
static redis_conn_t *redis;

/* What one test holds; after_each releases what a failed test left. */
static proc_t daemon_p;   /* the daemon under test */
static PGconn *lock_conn; /* a table lock that holds its work */
static pthread_t client;  /* a request of the test's, waiting */
static bool client_started;

/* ---- holding work in flight ---- */

/* Locks `table` in an open transaction of the test's own (superuser). */
static void lock_table(const char *table)
{
    lock_conn = PQconnectdb(db_url());
    assert_int_equal(PQstatus(lock_conn), CONNECTION_OK);
    char sql[128];
    snprintf(sql, sizeof(sql), "BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", table);
    PGresult *r = PQexec(lock_conn, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
}

static void unlock_table(void)
{
    if (lock_conn != NULL) {
        PQclear(PQexec(lock_conn, "COMMIT"));
        PQfinish(lock_conn);
        lock_conn = NULL;
    }
}

/* A backend of the role `arg` waits for a lock: its work is held in flight. */
static bool role_waits_on_lock(void *arg)
{
    const char *p[] = {arg};
    return sql_nonzero("SELECT count(*)::text FROM pg_stat_activity"
                       " WHERE usename = $1 AND wait_event_type = 'Lock'",
                       1, p);
}

static void start_client(void *(*fn)(void *), void *arg)
{
    assert_int_equal(pthread_create(&client, NULL, fn, arg), 0);
    client_started = true;
}

static void join_client(void)
{
    if (client_started) {
        pthread_join(client, NULL);
        client_started = false;
    }
}

typedef struct {
    long since;
    char path[160];
} drive_call_t;

/* A request for `path` came to the fake after `since` and the fake has not
 * answered it: a delay fault holds it (status null), or the caller went away
 * before the answer (status 0). */
static bool drive_call_unanswered(void *arg)
{
    const drive_call_t *c = arg;
    fake_match_t m = {.path = c->path, .since = c->since, .unanswered = true, .or_dropped = true};
    return fake_count_requests(google.base_url, &m) > 0;
}

/* Holds the next GET of `path` for delay_ms. */
static void delay_next_call(const char *path, int delay_ms)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"match\":{\"method\":\"GET\",\"path\":\"%s\"},\"count\":1,\"action\":\"delay\","
             "\"delay_ms\":%d}",
             path, delay_ms);
    fake_add_fault(google.base_url, body);
}

/* ---- the contract ---- */

/* SIGTERM; /readyz answers 503 while the work is still in flight. */
static void sigterm_readyz_503(bool (*in_flight)(void *), void *arg)
{
    assert_int_equal(kill(daemon_p.pid, SIGTERM), 0);
    char url[192];
    snprintf(url, sizeof(url), "%s/readyz", daemon_p.base_url);
    if (!wait_http_status(url, 503, 2000)) {
        proc_print_log(&daemon_p);
        fail_msg("%s: /readyz did not answer 503 after SIGTERM", daemon_p.name);
    }
    if (!in_flight(arg)) {
        proc_print_log(&daemon_p);
        fail_msg("%s: the work was no longer in flight when /readyz answered 503", daemon_p.name);
    }
}

/* Waits for the daemon to exit by itself after its drain; returns its status. */
static int drained_exit(void)
{
    int rc = proc_wait(&daemon_p, 60000);
    if (rc != 0) {
        fprintf(stderr, "%s: exit status %d after the drain (-1: still running)\n", daemon_p.name,
                rc);
        proc_print_log(&daemon_p);
    }
    return rc;
}

/* After sigterm_readyz_503: a second SIGTERM ends the daemon at once — within
 * 15 s, before the drain's 25 s limit could, and with the work still held. */
static void second_sigterm_exits(bool (*in_flight)(void *), void *arg)
{
    assert_int_equal(kill(daemon_p.pid, SIGTERM), 0);
    int rc = proc_wait(&daemon_p, 15000);
    if (rc == -1) {
        proc_print_log(&daemon_p);
        fail_msg("%s still runs 15 s after a second SIGTERM", daemon_p.name);
    }
    if (!in_flight(arg)) {
        proc_print_log(&daemon_p);
        fail_msg("%s: the work was no longer in flight: the exit waited for it", daemon_p.name);
    }
}

/* ---- api-gateway: a request waiting for PostgreSQL ---- */

typedef struct {
    const char *base;
    gwt_session_t s;
    long status;
} gw_get_t;

static gw_get_t gw_get;

static void *gw_get_jobs(void *arg)
{
    gw_get_t *g = arg;
    gwt_resp_t r = gwt_request(g->base, "GET", "/api/jobs", &g->s, false, NULL);
    g->status = r.status;
    gwt_resp_free(&r);
    return NULL;
}

/* The gateway, a user signed in, and GET /api/jobs waiting for a lock on jobs. */
static void gw_request_in_flight(void)
{
    const char *extra[] = {"GOOGLE_CLIENT_ID=" CLIENT_ID, "GOOGLE_CLIENT_SECRET=" CLIENT_SECRET,
                           NULL};
    assert_int_equal(gwt_start(&daemon_p, google.base_url, extra), 0);
    memset(&gw_get, 0, sizeof(gw_get));
    gw_get.base = daemon_p.base_url;
    assert_int_equal(gwt_sign_in(daemon_p.base_url, "shutdown@example.com", &gw_get.s), 0);
    lock_table("jobs");
    start_client(gw_get_jobs, &gw_get);
    assert_true(wait_until(role_waits_on_lock, "ca_api_gateway", 30000));
}

static void test_gateway_drain_finishes_request(void **state)
{
    (void)state;
    gw_request_in_flight();
    sigterm_readyz_503(role_waits_on_lock, "ca_api_gateway");
    unlock_table();
    join_client();
    assert_int_equal(gw_get.status, 200); /* finished, answered */
    assert_int_equal(drained_exit(), 0);
}

static void test_gateway_second_signal_exits(void **state)
{
    (void)state;
    gw_request_in_flight();
    sigterm_readyz_503(role_waits_on_lock, "ca_api_gateway");
    second_sigterm_exits(role_waits_on_lock, "ca_api_gateway");
    unlock_table();
    join_client();
    assert_int_not_equal(gw_get.status, 200); /* the connection went with the process */
}

/* ---- billing-webhook: an event being recorded ---- */

typedef struct {
    char url[192];
    char event_id[64];
    long status;
} hook_send_t;

static hook_send_t hook;

/* Sends one signed event (npm stripe signs it) and keeps the HTTP status. */
static void *send_hook(void *arg)
{
    hook_send_t *h = arg;
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "node %s/tests/fakes/stripe-send-event.js --url %s --secret %s --id %s"
             " --type customer.subscription.trial_will_end 2>&1",
             getenv("CA_ROOT"), h->url, WEBHOOK_SECRET, h->event_id);
    FILE *f = popen(cmd, "r");
    char line[512] = "";
    h->status = -1;
    if (f != NULL) {
        if (fgets(line, sizeof(line), f) == NULL || sscanf(line, "status %ld", &h->status) != 1) {
            fprintf(stderr, "stripe-send-event: %s\n", line);
        }
        while (fgets(line, sizeof(line), f) != NULL) {
        }
        pclose(f);
    }
    return NULL;
}

/* billing-webhook, and an event waiting for a lock on webhook_events. */
static void billing_event_in_flight(const char *event_id)
{
    char db[512];
    snprintf(db, sizeof(db), "DATABASE_URL=%s", db_url_as("ca_billing_webhook"));
    const char *env[] = {db, "STRIPE_WEBHOOK_SECRET=" WEBHOOK_SECRET, NULL};
    assert_int_equal(daemon_start(&daemon_p, "billing-webhook", env), 0);
    lock_table("webhook_events");
    memset(&hook, 0, sizeof(hook));
    snprintf(hook.url, sizeof(hook.url), "%s/webhooks/stripe", daemon_p.base_url);
    snprintf(hook.event_id, sizeof(hook.event_id), "%s_%d", event_id, (int)getpid());
    start_client(send_hook, &hook);
    assert_true(wait_until(role_waits_on_lock, "ca_billing_webhook", 30000));
}

static void test_billing_drain_finishes_event(void **state)
{
    (void)state;
    billing_event_in_flight("evt_drain");
    sigterm_readyz_503(role_waits_on_lock, "ca_billing_webhook");
    unlock_table();
    join_client();
    assert_int_equal(hook.status, 200);
    assert_int_equal(drained_exit(), 0);
    const char *p[] = {hook.event_id};
    char *n = sql_value("SELECT count(*)::text FROM webhook_events WHERE event_id = $1", 1, p);
    assert_non_null(n);
    assert_string_equal(n, "1"); /* recorded */
    free(n);
}

static void test_billing_second_signal_exits(void **state)
{
    (void)state;
    billing_event_in_flight("evt_second");
    sigterm_readyz_503(role_waits_on_lock, "ca_billing_webhook");
    second_sigterm_exits(role_waits_on_lock, "ca_billing_webhook");
    unlock_table();
    join_client();
    assert_int_not_equal(hook.status, 200);
}

/* ---- users with Drive tokens (job-worker, drive-poller) ---- */

typedef struct {
    char id[64];
    char email[128];
    char root[128];
    char inbox[128];
} user_t;

/* A folder, or an image (the tiny JPEG), in the user's Drive. */
static void drive_item(const user_t *u, const char *name, const char *parent, bool folder, char *id,
                       size_t idlen)
{
    char body[2048];
    snprintf(body, sizeof(body), "{\"email\":\"%s\",\"name\":\"%s\",\"parents\":[\"%s\"],%s}",
             u->email, name, parent,
             folder ? "\"folder\":true"
                    : "\"mimeType\":\"image/jpeg\",\"content_base64\":\"" TINY_JPEG_B64 "\"");
    fake_google_file(google.base_url, body, id, idlen);
}

/* An account in the fake with an Inbox, and its users row (tokens sealed). */
static void make_user(user_t *u, const char *prefix)
{
    static int seq;
    memset(u, 0, sizeof(*u));
    snprintf(u->email, sizeof(u->email), "%s%d.%d@example.com", prefix, (int)getpid(), ++seq);
    fake_google_user_t g;
    fake_google_user(google.base_url, u->email, CLIENT_ID, &g);
    snprintf(u->root, sizeof(u->root), "%s", g.root_id);
    drive_item(u, "Inbox", u->root, true, u->inbox, sizeof(u->inbox));
    char *access = crypto_envelope_seal(keys, g.access_token);
    char *refresh = crypto_envelope_seal(keys, g.refresh_token);
    const char *params[] = {g.sub, u->email, access, refresh};
    char *id = sql_value("INSERT INTO users (google_id, email, drive_access_token,"
                         " drive_refresh_token, drive_token_expires_at)"
                         " VALUES ($1, $2, $3, $4, timezone('UTC', now()) + interval '50 minutes')"
                         " RETURNING id::text",
                         4, params);
    assert_non_null(id);
    snprintf(u->id, sizeof(u->id), "%s", id);
    free(id);
    free(access);
    free(refresh);
}

/* ---- job-worker: a job whose download Drive holds ---- */

/* A queued job whose download the fake holds for delay_ms, and a worker
 * (WORKER_DRAIN_SECONDS=drain_s) that took it. */
static void worker_job_in_flight(const char *drain_s, int delay_ms, char *job, size_t joblen,
                                 drive_call_t *call)
{
    /* nothing left over from an earlier test */
    assert_int_equal(sql_exec("UPDATE jobs SET status = 'cancelled', lease_expires_at = NULL"
                              " WHERE status IN ('queued', 'processing')",
                              0, NULL),
                     0);
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "FLUSHALL");
    assert_non_null(r);
    freeReplyObject(r);

    user_t u;
    make_user(&u, "worker");
    char file[128];
    drive_item(&u, "held.jpg", u.inbox, false, file, sizeof(file));
    const char *params[] = {u.id, file, u.inbox};
    char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2,"
                         " 'held.jpg', $3, 803, 'image/jpeg', 'portrait_pro')",
                         3, params);
    assert_non_null(id);
    snprintf(job, joblen, "%s", id);
    free(id);

    call->since = fake_requests_next(google.base_url);
    snprintf(call->path, sizeof(call->path), "/drive/v3/files/%s", file);
    delay_next_call(call->path, delay_ms);

    static char env[5][512];
    snprintf(env[0], 512, "DATABASE_URL=%s", db_url_as("ca_job_worker"));
    snprintf(env[1], 512, "GOOGLE_TOKEN_URL=%s/token", google.base_url);
    snprintf(env[2], 512, "DRIVE_API_URL=%s/drive/v3", google.base_url);
    snprintf(env[3], 512, "DRIVE_UPLOAD_URL=%s/upload/drive/v3", google.base_url);
    snprintf(env[4], 512, "WORKER_DRAIN_SECONDS=%s", drain_s);
    const char *e[] = {env[0],
                       env[1],
                       env[2],
                       env[3],
                       env[4],
                       "ENCRYPTION_KEY=" KEY_B64,
                       "GOOGLE_CLIENT_ID=" CLIENT_ID,
                       "GOOGLE_CLIENT_SECRET=" CLIENT_SECRET,
                       "WORKER_CONCURRENCY=1",
                       NULL};
    assert_int_equal(daemon_start(&daemon_p, "job-worker", e), 0);
    assert_int_equal(queue_push(redis, job, err, sizeof(err)), 0);
    if (!wait_until(drive_call_unanswered, call, 30000)) {
        proc_print_log(&daemon_p);
        fail_msg("the worker did not start the download");
    }
}

static char *job_status(const char *job)
{
    const char *p[] = {job};
    return sql_value("SELECT status FROM jobs WHERE id = $1::uuid", 1, p);
}

static void test_worker_drain_finishes_job(void **state)
{
    (void)state;
    char job[64];
    drive_call_t call;
    worker_job_in_flight("20", 4000, job, sizeof(job), &call);
    sigterm_readyz_503(drive_call_unanswered, &call);
    assert_int_equal(drained_exit(), 0);
    char *st = job_status(job);
    assert_non_null(st);
    assert_string_equal(st, "completed");
    free(st);
}

/* After WORKER_DRAIN_SECONDS the job still running goes back to queued and
 * its id back to ca:jobs, and the worker exits 0. */
static void test_worker_drain_hands_back_job(void **state)
{
    (void)state;
    char job[64];
    drive_call_t call;
    worker_job_in_flight("1", 30000, job, sizeof(job), &call);
    sigterm_readyz_503(drive_call_unanswered, &call);
    assert_int_equal(drained_exit(), 0);
    assert_true(drive_call_unanswered(&call)); /* handed back, not finished */
    char *st = job_status(job);
    assert_non_null(st);
    assert_string_equal(st, "queued");
    free(st);
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "LPOS %s %s", QUEUE_JOBS, job);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER); /* nil when the id is not there */
    freeReplyObject(r);
}

static void test_worker_second_signal_exits(void **state)
{
    (void)state;
    char job[64];
    drive_call_t call;
    worker_job_in_flight("20", 30000, job, sizeof(job), &call);
    sigterm_readyz_503(drive_call_unanswered, &call);
    second_sigterm_exits(drive_call_unanswered, &call);
}

/* ---- drive-poller: a poll waiting for its first page of changes ---- */

typedef struct {
    user_t u;
    char poll_id[64];
    char token[256];
} watch_t;

static void poll_field(const watch_t *wt, const char *expr, char *out, size_t n)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT (%s)::text FROM drive_polls WHERE id = $1::uuid", expr);
    const char *p[] = {wt->poll_id};
    char *v = sql_value(sql, 1, p);
    snprintf(out, n, "%s", v != NULL ? v : "");
    free(v);
}

static bool poll_field_true(const watch_t *wt, const char *expr)
{
    char v[16];
    poll_field(wt, expr, v, sizeof(v));
    return strcmp(v, "true") == 0;
}

static bool watch_scanned(void *arg)
{
    return poll_field_true(arg, "last_full_scan_at IS NOT NULL AND changes_page_token IS NOT NULL");
}

static bool watch_not_leased(void *arg)
{
    return poll_field_true(arg, "lease_owner IS NULL");
}

static void start_poller(void)
{
    static char env[3][512];
    snprintf(env[0], 512, "DATABASE_URL=%s", db_url_as("ca_drive_poller"));
    snprintf(env[1], 512, "GOOGLE_TOKEN_URL=%s/token", google.base_url);
    snprintf(env[2], 512, "DRIVE_API_URL=%s/drive/v3", google.base_url);
    const char *e[] = {env[0],
                       env[1],
                       env[2],
                       "ENCRYPTION_KEY=" KEY_B64,
                       "GOOGLE_CLIENT_ID=" CLIENT_ID,
                       "GOOGLE_CLIENT_SECRET=" CLIENT_SECRET,
                       "POLL_INTERVAL_SECONDS=1",
                       "POLLER_CONCURRENCY=1",
                       "LOG_LEVEL=debug",
                       NULL};
    assert_int_equal(daemon_start(&daemon_p, "drive-poller", e), 0);
}

/* A watched Inbox polled once (its token saved), then held while `changes`
 * more changes are made in the user's Drive (images in the root, outside the
 * watch); then the next changes.list is delayed by delay_ms and the row made
 * due. Returns when that poll waits for Drive. */
static void poll_in_flight(watch_t *wt, int changes, int delay_ms, drive_call_t *call)
{
    assert_int_equal(sql_exec("UPDATE drive_polls SET active = FALSE, stopped_reason = 'test'"
                              " WHERE active",
                              0, NULL),
                     0);
    memset(wt, 0, sizeof(*wt));
    make_user(&wt->u, "poller");
    const char *params[] = {wt->u.id, wt->u.inbox};
    char *id =
        sql_value("SELECT drive_polls_start_watch($1::uuid, $2, NULL, NULL)::text", 2, params);
    assert_non_null(id);
    snprintf(wt->poll_id, sizeof(wt->poll_id), "%s", id);
    free(id);
    start_poller();
    if (!wait_until(watch_scanned, wt, 30000)) {
        proc_print_log(&daemon_p);
        fail_msg("the first poll was not recorded");
    }
    const char *pid[] = {wt->poll_id};
    assert_int_equal(sql_exec("UPDATE drive_polls SET next_poll_at = timezone('UTC', now())"
                              " + interval '1 hour' WHERE id = $1::uuid",
                              1, pid),
                     0);
    assert_true(wait_until(watch_not_leased, wt, 30000)); /* no poll of it runs now */
    for (int i = 0; i < changes; i++) {
        char name[32];
        snprintf(name, sizeof(name), "elsewhere-%d.jpg", i);
        drive_item(&wt->u, name, wt->u.root, false, NULL, 0);
    }
    poll_field(wt, "changes_page_token", wt->token, sizeof(wt->token));
    call->since = fake_requests_next(google.base_url);
    snprintf(call->path, sizeof(call->path), "/drive/v3/changes");
    delay_next_call(call->path, delay_ms);
    assert_int_equal(sql_exec("UPDATE drive_polls SET next_poll_at = timezone('UTC', now())"
                              " WHERE id = $1::uuid",
                              1, pid),
                     0);
    if (!wait_until(drive_call_unanswered, call, 30000)) {
        proc_print_log(&daemon_p);
        fail_msg("the poll did not start");
    }
}

/* 1,001 changes are two pages: the drain lets the first page finish, then
 * gives the lease back before the second, the row due again at once and its
 * token unchanged (the next poll reads the same changes again). */
static void test_poller_drain_hands_back_poll(void **state)
{
    (void)state;
    watch_t wt;
    drive_call_t call;
    poll_in_flight(&wt, 1001, 3000, &call);
    sigterm_readyz_503(drive_call_unanswered, &call);
    assert_int_equal(drained_exit(), 0);
    assert_true(poll_field_true(&wt, "lease_owner IS NULL"));
    assert_true(poll_field_true(&wt, "next_poll_at <= timezone('UTC', now())"));
    char token[256];
    poll_field(&wt, "changes_page_token", token, sizeof(token));
    assert_string_equal(token, wt.token);
    assert_true(proc_log_contains(&daemon_p, "poll done: status=aborted"));
}

static void test_poller_second_signal_exits(void **state)
{
    (void)state;
    watch_t wt;
    drive_call_t call;
    poll_in_flight(&wt, 0, 30000, &call);
    sigterm_readyz_503(drive_call_unanswered, &call);
    second_sigterm_exits(drive_call_unanswered, &call);
}

/* ---- setup ---- */

static int setup(void **state)
{
    (void)state;
    const char *args[] = {"--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, NULL};
    if (fake_start(&google, "google", args) != 0) {
        return -1;
    }
    char err[256];
    keys = crypto_keyring_new(KEY_B64, NULL, err, sizeof(err));
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    if (keys == NULL || redis == NULL) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    setenv("REDIS_URL", getenv("TEST_REDIS_URL"), 1);
    return 0;
}

/* After each test: what a failed one left behind. */
static int after_each(void **state)
{
    (void)state;
    unlock_table();
    proc_kill9(&daemon_p);
    join_client();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&google);
    redis_close(redis);
    crypto_keyring_free(keys);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_gateway_drain_finishes_request, after_each),
        cmocka_unit_test_teardown(test_gateway_second_signal_exits, after_each),
        cmocka_unit_test_teardown(test_billing_drain_finishes_event, after_each),
        cmocka_unit_test_teardown(test_billing_second_signal_exits, after_each),
        cmocka_unit_test_teardown(test_worker_drain_finishes_job, after_each),
        cmocka_unit_test_teardown(test_worker_drain_hands_back_job, after_each),
        cmocka_unit_test_teardown(test_worker_second_signal_exits, after_each),
        cmocka_unit_test_teardown(test_poller_drain_hands_back_poll, after_each),
        cmocka_unit_test_teardown(test_poller_second_signal_exits, after_each),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
