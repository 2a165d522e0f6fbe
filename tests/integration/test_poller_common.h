/*
 * Helpers shared by the drive-poller integration tests (test_poller_*.c):
 * the Google fake's admin and Drive routes, users with sealed tokens in
 * PostgreSQL, watches, jobs and the ca:jobs list. Included by each test (one
 * translation unit each), so everything is static.
 */
#ifndef TEST_POLLER_COMMON_H
#define TEST_POLLER_COMMON_H

#include "crypto.h"
#include "fake_admin.h"
#include "pg.h"
#include "redis.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TP_KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define TP_CLIENT_ID "poller-test-client"
#define TP_CLIENT_SECRET "poller-test-secret"

static proc_t tp_google;
static crypto_keyring_t *tp_keys;
static pg_conn_t *tp_pg;
static __attribute__((unused)) int tp_user_seq;

typedef struct {
    char email[128];
    char user_id[64]; /* users.id */
    char access[512];
    char refresh[512];
    char root_id[128];
    char folder_id[128]; /* the watched folder */
} tp_user_t;

static __attribute__((unused)) void tp_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static __attribute__((unused)) long long tp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts the fake and opens the test's own connections. 0 or -1. */
static __attribute__((unused)) int tp_setup_world(void)
{
    const char *args[] = {"--client-id", TP_CLIENT_ID, "--client-secret", TP_CLIENT_SECRET, NULL};
    if (fake_start(&tp_google, "google", args) != 0) {
        return -1;
    }
    char err[256];
    tp_keys = crypto_keyring_new(TP_KEY, NULL, err, sizeof(err));
    tp_pg = pg_connect(getenv("TEST_DATABASE_URL"), 10000, err, sizeof(err));
    if (tp_keys == NULL || tp_pg == NULL) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    setenv("DATABASE_URL", db_url_as("ca_drive_poller"), 1);
    setenv("REDIS_URL", getenv("TEST_REDIS_URL"), 1);
    return 0;
}

static __attribute__((unused)) void tp_teardown_world(void)
{
    proc_stop_timeout(&tp_google, 5000);
    if (tp_pg != NULL) {
        pg_close(tp_pg);
        tp_pg = NULL;
    }
    crypto_keyring_free(tp_keys);
    tp_keys = NULL;
}

/* Starts a drive-poller against the fake; extra: more NAME=value (NULL-terminated). */
static __attribute__((unused)) int tp_start_poller(proc_t *p, const char *interval,
                                                   const char *const *extra)
{
    static char drive[256], token[256], iv[64];
    snprintf(drive, sizeof(drive), "DRIVE_API_URL=%s/drive/v3", tp_google.base_url);
    snprintf(token, sizeof(token), "GOOGLE_TOKEN_URL=%s/token", tp_google.base_url);
    snprintf(iv, sizeof(iv), "POLL_INTERVAL_SECONDS=%s", interval);
    const char *env[32] = {"ENCRYPTION_KEY=" TP_KEY,
                           "GOOGLE_CLIENT_ID=" TP_CLIENT_ID,
                           "GOOGLE_CLIENT_SECRET=" TP_CLIENT_SECRET,
                           drive,
                           token,
                           iv,
                           "LOG_LEVEL=debug"};
    size_t n = 7;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 31; i++) {
        env[n++] = extra[i];
    }
    env[n] = NULL;
    return daemon_start(p, "drive-poller", env);
}

/* ---- one poller for a whole suite (test_poller_detect, test_poller_faults) ---- */

static __attribute__((unused)) proc_t tp_poller;

/* cmocka group setup: the fake, the test's connections, then tp_poller
 * (POLL_INTERVAL_SECONDS=1, POLLER_CONCURRENCY=4). */
static __attribute__((unused)) int tp_group_setup(void **state)
{
    (void)state;
    if (tp_setup_world() != 0) {
        return -1;
    }
    const char *extra[] = {"POLLER_CONCURRENCY=4", NULL};
    return tp_start_poller(&tp_poller, "1", extra);
}

/* cmocka group teardown: stops tp_poller (unless a test already did and set
 * its pid to 0), printing its log when it did not exit cleanly. */
static __attribute__((unused)) int tp_group_teardown(void **state)
{
    (void)state;
    int rc = tp_poller.pid > 0 ? proc_stop_timeout(&tp_poller, 30000) : 0;
    if (rc != 0) {
        proc_print_log(&tp_poller);
    }
    tp_teardown_world();
    return rc == 0 ? 0 : -1;
}

/* A cmocka check that prints tp_poller's log before failing. */
#define TP_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            proc_print_log(&tp_poller);                                                            \
            fail_msg("%s", #cond);                                                                 \
        }                                                                                          \
    } while (0)

/* ---- the fake ---- */

/* The Google fake's admin API (tests/support/fake_admin.h); fails the test
 * unless it answers 2xx. */
static __attribute__((unused)) cJSON *tp_admin(const char *method, const char *path,
                                               const char *body)
{
    return fake_admin(tp_google.base_url, method, path, body);
}

static __attribute__((unused)) void tp_copy_str(char *dst, size_t n, const cJSON *o,
                                                const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    snprintf(dst, n, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

/* A Drive call as the user. Returns the status; *out (may be NULL) the JSON. */
static __attribute__((unused)) long tp_drive(const tp_user_t *u, const char *method,
                                             const char *path_and_query, const char *body,
                                             cJSON **out)
{
    char url[1024];
    char auth[600];
    snprintf(url, sizeof(url), "%s%s", tp_google.base_url, path_and_query);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", u->access);
    const char *headers[] = {auth, NULL};
    char *resp = NULL;
    long st = http_call_h(method, url, headers, body, &resp, NULL);
    if (out != NULL) {
        *out = resp != NULL ? cJSON_Parse(resp) : NULL;
    }
    free(resp);
    return st;
}

/* Creates a file (or folder when mime is NULL and folder) through the admin
 * route; fills id. extra_json: more members, e.g. "\"trashed\":true" or "". */
static __attribute__((unused)) int tp_file(const tp_user_t *u, const char *name, const char *mime,
                                           const char *parent, const char *extra_json, char *id,
                                           size_t idlen)
{
    char body[2048];
    int len = snprintf(
        body, sizeof(body),
        "{\"email\":\"%s\",\"name\":\"%s\",%s%s%s\"parents\":[\"%s\"],\"content\":\"x\"%s%s}",
        u->email, name, mime != NULL ? "\"mimeType\":\"" : "\"folder\":true",
        mime != NULL ? mime : "", mime != NULL ? "\"," : ",", parent,
        extra_json != NULL && extra_json[0] != '\0' ? "," : "",
        extra_json != NULL ? extra_json : "");
    if (len < 0 || (size_t)len >= sizeof(body)) {
        return -1;
    }
    fake_google_file(tp_google.base_url, body, id, idlen);
    return 0;
}

static __attribute__((unused)) int tp_image(const tp_user_t *u, const char *name,
                                            const char *parent, char *id, size_t n)
{
    return tp_file(u, name, "image/jpeg", parent, "", id, n);
}

/* A fake user, a users row with sealed tokens, a watched folder (not yet
 * watched: call tp_watch). */
static __attribute__((unused)) int tp_new_user(tp_user_t *u, const char *prefix)
{
    memset(u, 0, sizeof(*u));
    snprintf(u->email, sizeof(u->email), "%s%d.%d@example.com", prefix, (int)getpid(),
             ++tp_user_seq);
    fake_google_user_t g;
    fake_google_user(tp_google.base_url, u->email, TP_CLIENT_ID, &g);
    snprintf(u->access, sizeof(u->access), "%s", g.access_token);
    snprintf(u->refresh, sizeof(u->refresh), "%s", g.refresh_token);
    snprintf(u->root_id, sizeof(u->root_id), "%s", g.root_id);
    char *a = crypto_envelope_seal(tp_keys, u->access);
    char *r = crypto_envelope_seal(tp_keys, u->refresh);
    const char *params[] = {g.sub, u->email, a, r};
    char err[256];
    PGresult *res =
        pg_exec(tp_pg,
                "INSERT INTO users (google_id, email, drive_access_token,"
                " drive_refresh_token, drive_token_expires_at)"
                " VALUES ($1, $2, $3, $4, timezone('UTC', now()) + interval '50 minutes')"
                " RETURNING id",
                4, params, err, sizeof(err));
    free(a);
    free(r);
    if (res == NULL) {
        fprintf(stderr, "insert user: %s\n", err);
        return -1;
    }
    snprintf(u->user_id, sizeof(u->user_id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return tp_file(u, "Watched", NULL, u->root_id, "", u->folder_id, sizeof(u->folder_id));
}

static __attribute__((unused)) int tp_watch(const tp_user_t *u)
{
    const char *params[] = {u->user_id, u->folder_id};
    char err[256];
    PGresult *res = pg_exec(tp_pg, "SELECT drive_polls_start_watch($1::uuid, $2, NULL, NULL)", 2,
                            params, err, sizeof(err));
    if (res == NULL) {
        fprintf(stderr, "watch: %s\n", err);
        return -1;
    }
    PQclear(res);
    return 0;
}

/* ---- reading state ---- */

/* First column of the first row as a long (-1 when none or error). */
static __attribute__((unused)) long tp_sql_long(const char *sql, int n, const char *const *params)
{
    char err[256];
    PGresult *res = pg_exec(tp_pg, sql, n, params, err, sizeof(err));
    if (res == NULL) {
        fprintf(stderr, "sql: %s\n", err);
        return -1;
    }
    long v = (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) ? atol(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return v;
}

/* First column of the first row, copied ("" when none). */
static __attribute__((unused)) void tp_sql_str(char *out, size_t n, const char *sql, int np,
                                               const char *const *params)
{
    char err[256];
    out[0] = '\0';
    PGresult *res = pg_exec(tp_pg, sql, np, params, err, sizeof(err));
    if (res == NULL) {
        fprintf(stderr, "sql: %s\n", err);
        return;
    }
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
        snprintf(out, n, "%s", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
}

static __attribute__((unused)) long tp_jobs_of(const tp_user_t *u)
{
    const char *p[] = {u->user_id};
    return tp_sql_long("SELECT count(*) FROM jobs WHERE user_id = $1::uuid", 1, p);
}

static __attribute__((unused)) long tp_jobs_for_file(const tp_user_t *u, const char *file_id)
{
    const char *p[] = {u->user_id, file_id};
    return tp_sql_long("SELECT count(*) FROM jobs WHERE user_id = $1::uuid AND drive_file_id = $2",
                       2, p);
}

/* Successful polls since the watch started: completed polls are counted by
 * last_poll_at moving; this returns last_poll_at as epoch ms (-1 if none). */
static __attribute__((unused)) long long tp_last_poll_ms(const tp_user_t *u)
{
    const char *p[] = {u->user_id};
    char v[64];
    tp_sql_str(v, sizeof(v),
               "SELECT (extract(epoch FROM last_poll_at) * 1000)::bigint::text FROM drive_polls"
               " WHERE user_id = $1::uuid ORDER BY updated_at DESC LIMIT 1",
               1, p);
    return v[0] != '\0' ? atoll(v) : -1;
}

static __attribute__((unused)) void tp_poll_field(const tp_user_t *u, const char *column, char *out,
                                                  size_t n)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT %s::text FROM drive_polls WHERE user_id = $1::uuid ORDER BY updated_at DESC"
             " LIMIT 1",
             column);
    const char *p[] = {u->user_id};
    tp_sql_str(out, n, sql, 1, p);
}

/* Waits until the user's row has had `n` more successful polls recorded after
 * now (last_poll_at strictly advances n times with status success). */
static __attribute__((unused)) bool tp_wait_polls(const tp_user_t *u, int n, int timeout_ms)
{
    long long deadline = tp_now_ms() + timeout_ms;
    long long last = tp_last_poll_ms(u);
    int seen = 0;
    while (tp_now_ms() < deadline) {
        tp_sleep_ms(50);
        long long now = tp_last_poll_ms(u);
        if (now != last) {
            char st[32];
            tp_poll_field(u, "poll_status", st, sizeof(st));
            last = now;
            if (strcmp(st, "success") == 0 && ++seen >= n) {
                return true;
            }
        }
    }
    return false;
}

static __attribute__((unused)) bool tp_wait_jobs(const tp_user_t *u, long want, int timeout_ms)
{
    long long deadline = tp_now_ms() + timeout_ms;
    while (tp_now_ms() < deadline) {
        if (tp_jobs_of(u) >= want) {
            return true;
        }
        tp_sleep_ms(50);
    }
    return tp_jobs_of(u) >= want;
}

/* Waits until the first poll (with its full listing) is recorded. */
static __attribute__((unused)) bool tp_wait_scanned(const tp_user_t *u, int timeout_ms)
{
    long long deadline = tp_now_ms() + timeout_ms;
    const char *p[] = {u->user_id};
    while (tp_now_ms() < deadline) {
        if (tp_sql_long("SELECT count(*) FROM drive_polls WHERE user_id = $1::uuid AND active"
                        " AND last_full_scan_at IS NOT NULL AND changes_page_token IS NOT NULL",
                        1, p) == 1) {
            return true;
        }
        tp_sleep_ms(50);
    }
    return false;
}

/* ---- ca:jobs ---- */

/* How many times each of the user's job ids is in the user's list of the fair queue
 * (ca:jobs:u:<user_id>): returns the number
 * of ids found exactly once; *dups gets those found more than once. */
static __attribute__((unused)) long tp_queue_check(const tp_user_t *u, long *dups)
{
    char err[256];
    redis_conn_t *r = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    if (r == NULL) {
        return -1;
    }
    redisReply *rep = redis_command(r, err, sizeof(err), "LRANGE ca:jobs:u:%s 0 -1", u->user_id);
    const char *p[] = {u->user_id};
    PGresult *res = pg_exec(tp_pg, "SELECT id::text FROM jobs WHERE user_id = $1::uuid", 1, p, err,
                            sizeof(err));
    long once = 0;
    *dups = 0;
    for (int i = 0; res != NULL && rep != NULL && i < PQntuples(res); i++) {
        int c = 0;
        for (size_t k = 0; k < rep->elements; k++) {
            if (strcmp(rep->element[k]->str, PQgetvalue(res, i, 0)) == 0) {
                c++;
            }
        }
        if (c == 1) {
            once++;
        } else if (c > 1) {
            (*dups)++;
        }
    }
    if (res != NULL) {
        PQclear(res);
    }
    if (rep != NULL) {
        freeReplyObject(rep);
    }
    redis_close(r);
    return once;
}

/* ---- the poller's metrics ---- */

/* The sum of ca_poller_polls_total over its labels (polls finished), from the
 * poller's /metrics; -1 when it does not answer. */
static __attribute__((unused)) long tp_polls_total(const proc_t *poller)
{
    char url[192];
    snprintf(url, sizeof(url), "%s/metrics", poller->base_url);
    char *body = NULL;
    if (http_call("GET", url, NULL, &body) != 200 || body == NULL) {
        free(body);
        return -1;
    }
    long n = 0;
    for (const char *line = body; line != NULL && *line != '\0';) {
        if (strncmp(line, "ca_poller_polls_total{", 22) == 0) {
            const char *sp = strchr(line, ' ');
            n += sp != NULL ? atol(sp + 1) : 0;
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    free(body);
    return n;
}

/* Waits until every active folder has been polled after this call (its
 * last_poll_at is later than the database's now at the start). */
static __attribute__((unused)) bool tp_wait_all_polled_again(int timeout_ms)
{
    char t0[64];
    tp_sql_str(t0, sizeof(t0), "SELECT timezone('UTC', now())::text", 0, NULL);
    const char *params[] = {t0};
    long long deadline = tp_now_ms() + timeout_ms;
    while (tp_now_ms() < deadline) {
        if (tp_sql_long("SELECT count(*) FROM drive_polls WHERE active AND"
                        " (last_poll_at IS NULL OR last_poll_at <= $1::timestamp)",
                        1, params) == 0) {
            return true;
        }
        tp_sleep_ms(100);
    }
    return false;
}

/* ---- the fake's request log ---- */

static __attribute__((unused)) long tp_requests_next(void)
{
    return fake_requests_next(tp_google.base_url);
}

/* A changes.list after request `since` is at the fake and not answered yet
 * (a delay fault holds it). */
static __attribute__((unused)) bool tp_changes_call_held(long since)
{
    fake_match_t m = {.path = "/drive/v3/changes", .since = since, .unanswered = true};
    return fake_count_requests(tp_google.base_url, &m) > 0;
}

/* Counts requests after `since` whose method is GET and path starts with prefix. */
static __attribute__((unused)) long tp_requests_count(long since, const char *prefix,
                                                      long *other_drive)
{
    cJSON *j = fake_requests(tp_google.base_url, since);
    long n = 0;
    if (other_drive != NULL) {
        *other_drive = 0;
    }
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(j, "requests");
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs)
    {
        const char *m = cJSON_GetObjectItemCaseSensitive(r, "method")->valuestring;
        const char *pth = cJSON_GetObjectItemCaseSensitive(r, "path")->valuestring;
        if (strcmp(m, "GET") != 0) {
            continue;
        }
        if (strncmp(pth, prefix, strlen(prefix)) == 0 &&
            (strlen(pth) == strlen(prefix) || pth[strlen(prefix)] == '?')) {
            n++;
        } else if (other_drive != NULL && strncmp(pth, "/drive/v3/", 10) == 0) {
            (*other_drive)++;
        }
    }
    cJSON_Delete(j);
    return n;
}

#endif
