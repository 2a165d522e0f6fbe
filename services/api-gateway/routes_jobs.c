/*
 * routes_jobs — the user's jobs.
 *
 *   GET  /api/jobs?status=&waiting_for=&from=&to=&limit=&cursor=   newest first, keyset
 *                                pages (waiting_for=quota: only the jobs waiting for quota;
 *                                from/to: UTC days YYYY-MM-DD, both included)
 *   GET  /api/jobs/{id}
 *   POST /api/jobs/{id}/retry    failed|cancelled → queued (jobs_retry), id pushed to the user's
 *                                fair queue (queue_push_script, the user's tier)
 *   POST /api/jobs/{id}/cancel   queued → cancelled (jobs_cancel); else 409
 *
 * The cursor is opaque to clients: base64url("<created_at with µs>|<id>") of
 * the last job of the page; the next page is (created_at, id) < that pair.
 * Jobs the job-worker's retention moved to jobs_archive (older than 90 days)
 * are listed and found like live ones: the list merges the two tables' ordered
 * index scans, so paging, filters and cursors do not see the boundary.
 */
#include "gateway.h"
#include "paging.h"

#include "log.h"
#include "queue.h"
#include "uuid.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A job's columns, in the order of JOB_FIELDS. The JSON object is written by
 * the gateway (paging_write_row): PostgreSQL's json_build_object cost about
 * as much as the rest of the query, and to_char on the three timestamps about
 * a fifth of it (they come in PostgreSQL's ISO text: PAGING_TS). waiting_for
 * is "quota" while the job waits for its user's plan to have room
 * (jobs.quota_waiting_since, sql/job-worker/105; the status stays queued),
 * else null. JOB_ROW_COLUMNS are the plain columns JOB_COLUMNS computes from. */
#define JOB_ROW_COLUMNS                                                                            \
    "j.id, j.status, j.drive_file_id, j.drive_file_name, j.preset_name, "                          \
    "j.created_at, j.started_at, j.completed_at, "                                                 \
    "j.processing_time_ms, j.output_drive_file_id, j.output_file_name, j.output_url, "             \
    "j.error_code, j.error_message, j.retry_count, j.quota_waiting_since"
#define JOB_COLUMNS                                                                                \
    "j.id, j.status, j.drive_file_id, j.drive_file_name, j.preset_name, "                          \
    "j.created_at, j.started_at, j.completed_at, "                                                 \
    "j.processing_time_ms, j.output_drive_file_id, j.output_file_name, j.output_url, "             \
    "j.error_code, j.error_message, j.retry_count, "                                               \
    "CASE WHEN j.quota_waiting_since IS NOT NULL THEN 'quota' END"

static const paging_field_t JOB_FIELDS[] = {
    {"id", PAGING_STRING},
    {"status", PAGING_STRING},
    {"drive_file_id", PAGING_STRING},
    {"drive_file_name", PAGING_STRING},
    {"preset_name", PAGING_STRING},
    {"created_at", PAGING_TS},
    {"started_at", PAGING_TS},
    {"completed_at", PAGING_TS},
    {"processing_time_ms", PAGING_INT},
    {"output_drive_file_id", PAGING_STRING},
    {"output_file_name", PAGING_STRING},
    {"output_url", PAGING_STRING},
    {"error_code", PAGING_STRING},
    {"error_message", PAGING_STRING},
    {"retry_count", PAGING_INT},
    {"waiting_for", PAGING_STRING},
};
#define JOB_NFIELDS ((int)(sizeof(JOB_FIELDS) / sizeof(JOB_FIELDS[0])))

static const char *const STATUSES[] = {"queued", "processing", "completed",
                                       "failed", "cancelled",  NULL};

/* Strict: digits only, no sign, within [min, max]. */
/* Decodes a cursor into ts ("YYYY-MM-DDTHH:MM:SS.ffffff") and id. */
static bool cursor_decode(const char *cursor, char *ts, size_t tslen, char *id, size_t idlen)
{
    char text[PAGING_CURSOR_TEXT_MAX];
    char *key[2];
    if (!paging_cursor_split(cursor, text, key, 2)) {
        return false;
    }
    int y, mo, d, h, mi, s, us, consumed = 0;
    if (sscanf(key[0], "%4d-%2d-%2dT%2d:%2d:%2d.%6d%n", &y, &mo, &d, &h, &mi, &s, &us, &consumed) !=
            7 ||
        (size_t)consumed != strlen(key[0]) || strlen(key[0]) != 26 || y < 1970 || y > 9999 ||
        mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60 || us < 0) {
        return false;
    }
    if (!uuid_is_valid(key[1]) || strlen(key[0]) >= tslen || strlen(key[1]) >= idlen) {
        return false;
    }
    snprintf(ts, tslen, "%s", key[0]);
    snprintf(id, idlen, "%s", key[1]);
    return true;
}

/* One statement per combination of filters, each a plain conjunction: the
 * plan reads idx_jobs_user_created in order and stops after limit + 1 rows
 * (a generic plan of "$2 IS NULL OR status = $2" can use no index condition
 * for the cursor and sorted all the user's jobs for every page).
 * Archived jobs: the statement reads jobs UNION ALL jobs_archive, with the
 * conditions, order and limit outside. The planner pushes the conditions into
 * both branches and merges their ordered index scans, idx_jobs_user_created
 * and idx_jobs_archive_user_created (same key): a Merge Append, no Sort,
 * stopped at the limit (test_jobs_list_plan). The conditions must stay
 * outside: written inside each branch, `user_id = $1` forms no equivalence
 * class with a constant, the index order (user_id, created_at, id) no longer
 * matches the ORDER BY, and PostgreSQL sorted every job of the user again.
 * A job is in one table only (the archive moves it in one statement).
 * The waiting filter reads idx_jobs_quota_waiting backwards (and its empty
 * twin on jobs_archive): a partial index of the waiting jobs only.
 * The date filter is a range on created_at, the index's second column: the
 * same ordered scans, bounded.
 * Parameters: $1 user id, $2 rows to fetch, then the status when filtered,
 * then the cursor's created_at and id, then (dated) the first instant and the
 * instant after the last (timestamps; -infinity / infinity when open). */
#define LIST_SQL(cond)                                                                             \
    "SELECT " JOB_COLUMNS " FROM (SELECT j.user_id, " JOB_ROW_COLUMNS " FROM jobs j UNION ALL"     \
    " SELECT j.user_id, " JOB_ROW_COLUMNS " FROM jobs_archive j) j WHERE j.user_id = $1" cond      \
    " ORDER BY j.created_at DESC, j.id DESC LIMIT $2::int"
#define AFTER_CURSOR(ts, id) " AND (j.created_at, j.id) < (" ts "::timestamp, " id "::uuid)"
#define WAITING " AND j.quota_waiting_since IS NOT NULL"
#define DATED(from, until)                                                                         \
    " AND j.created_at >= " from "::timestamp AND j.created_at < " until "::timestamp"
#define STATUS " AND j.status = $3"
const char *jobs_list_sql(bool status, bool waiting, bool cursor, bool dated)
{
    static const char *const SQL[2][2][2][2] = {
        {{{LIST_SQL(""), LIST_SQL(DATED("$3", "$4"))},
          {LIST_SQL(AFTER_CURSOR("$3", "$4")),
           LIST_SQL(AFTER_CURSOR("$3", "$4") DATED("$5", "$6"))}},
         {{LIST_SQL(WAITING), LIST_SQL(WAITING DATED("$3", "$4"))},
          {LIST_SQL(WAITING AFTER_CURSOR("$3", "$4")),
           LIST_SQL(WAITING AFTER_CURSOR("$3", "$4") DATED("$5", "$6"))}}},
        {{{LIST_SQL(STATUS), LIST_SQL(STATUS DATED("$4", "$5"))},
          {LIST_SQL(STATUS AFTER_CURSOR("$4", "$5")),
           LIST_SQL(STATUS AFTER_CURSOR("$4", "$5") DATED("$6", "$7"))}},
         {{LIST_SQL(STATUS WAITING), LIST_SQL(STATUS WAITING DATED("$4", "$5"))},
          {LIST_SQL(STATUS WAITING AFTER_CURSOR("$4", "$5")),
           LIST_SQL(STATUS WAITING AFTER_CURSOR("$4", "$5") DATED("$6", "$7"))}}},
    };
    return SQL[status][waiting][cursor][dated];
}
#undef LIST_SQL
#undef AFTER_CURSOR
#undef WAITING
#undef DATED
#undef STATUS

/* A UTC day "YYYY-MM-DD" (a real one, from 1970 to 9998) into y, m, d. */
static bool parse_day(const char *s, int *y, int *m, int *d)
{
    if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-') {
        return false;
    }
    for (int i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    *y = atoi(s);
    *m = atoi(s + 5);
    *d = atoi(s + 8);
    static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (*y < 1970 || *y > 9998 || *m < 1 || *m > 12 || *d < 1) {
        return false;
    }
    bool leap = (*y % 4 == 0 && *y % 100 != 0) || *y % 400 == 0;
    return *d <= DAYS[*m - 1] + (*m == 2 && leap ? 1 : 0);
}

/* The day after y-m-d, as "YYYY-MM-DD" into out. */
static void next_day(int y, int m, int d, char *out, size_t outlen)
{
    static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int last = DAYS[m - 1] + (m == 2 && leap ? 1 : 0);
    if (++d > last) {
        d = 1;
        if (++m > 12) {
            m = 1;
            y++;
        }
    }
    snprintf(out, outlen, "%04d-%02d-%02d", y, m, d);
}

static void list_jobs(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *status = http_req_query(req, "status");
    const char *waiting_for = http_req_query(req, "waiting_for");
    const char *limit_s = http_req_query(req, "limit");
    const char *cursor = http_req_query(req, "cursor");
    const char *from_s = http_req_query(req, "from");
    const char *to_s = http_req_query(req, "to");
    if (status != NULL && status[0] == '\0') {
        status = NULL;
    }
    if (status != NULL) {
        bool ok = false;
        for (size_t i = 0; STATUSES[i] != NULL; i++) {
            ok = ok || strcmp(status, STATUSES[i]) == 0;
        }
        if (!ok) {
            gw_reply_invalid(req, "status",
                             "must be one of queued, processing, completed, failed, cancelled");
            return;
        }
    }
    bool waiting = waiting_for != NULL && waiting_for[0] != '\0';
    if (waiting && strcmp(waiting_for, "quota") != 0) {
        gw_reply_invalid(req, "waiting_for", "must be quota");
        return;
    }
    long limit = 20;
    if (limit_s != NULL && !paging_parse_limit(limit_s, &limit)) {
        gw_reply_invalid(req, "limit", "must be an integer from 1 to 100");
        return;
    }
    /* from/to: UTC days, both included; the bounds are [from 00:00, to + 1 day 00:00) */
    bool have_from = from_s != NULL && from_s[0] != '\0';
    bool have_to = to_s != NULL && to_s[0] != '\0';
    int fy = 0, fm = 0, fd = 0, ty = 0, tm = 0, td = 0;
    if (have_from && !parse_day(from_s, &fy, &fm, &fd)) {
        gw_reply_invalid(req, "from", "must be a date YYYY-MM-DD");
        return;
    }
    if (have_to && !parse_day(to_s, &ty, &tm, &td)) {
        gw_reply_invalid(req, "to", "must be a date YYYY-MM-DD");
        return;
    }
    if (have_from && have_to && strcmp(from_s, to_s) > 0) {
        gw_reply_invalid(req, "from", "must not be after to");
        return;
    }
    char from_ts[48] = "-infinity", until_ts[48] = "infinity";
    if (have_from) {
        snprintf(from_ts, sizeof(from_ts), "%04d-%02d-%02d", fy, fm, fd);
    }
    if (have_to) {
        next_day(ty, tm, td, until_ts, sizeof(until_ts));
    }
    bool dated = have_from || have_to;
    char ts[40] = "", id[GW_UUID_LEN + 1] = "";
    bool have_cursor = cursor != NULL && cursor[0] != '\0';
    if (have_cursor && !cursor_decode(cursor, ts, sizeof(ts), id, sizeof(id))) {
        gw_reply_invalid(req, "cursor", "is not a cursor this API returned");
        return;
    }
    paging_t *page = paging_new_fields("jobs", limit, 2, JOB_FIELDS, JOB_NFIELDS);
    if (page == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    static const int KEY_COLS[2] = {5 /* created_at */, 0 /* id */};
    paging_key_timestamp_cols(page, KEY_COLS);
    char fetch[24];
    snprintf(fetch, sizeof(fetch), "%ld", limit + 1);
    const char *p[7] = {user->id, fetch};
    int n = 2;
    if (status != NULL)
        p[n++] = status;
    if (have_cursor) {
        p[n++] = ts;
        p[n++] = id;
    }
    if (dated) {
        p[n++] = from_ts;
        p[n++] = until_ts;
    }
    gw_query_ex(gw, req, user->id, jobs_list_sql(status != NULL, waiting, have_cursor, dated), n, p,
                paging_on_page, page, free);
}

static void on_job(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    (void)arg;
    if (PQntuples(res) != 1) {
        gw_reply_not_found(req);
        return;
    }
    jbuf_t b = {0};
    paging_write_row(&b, res, 0, 0, JOB_FIELDS, JOB_NFIELDS);
    paging_reply(req, &b);
}

static void send_job(gw_t *gw, http_req_t *req, const char *user_id, const char *job_id)
{
    const char *p[] = {user_id, job_id};
    /* Live or archived: a job is in one of the two tables. */
    gw_query(gw, req, user_id,
             "SELECT " JOB_COLUMNS " FROM jobs j WHERE j.user_id = $1 AND j.id = $2::uuid"
             " UNION ALL SELECT " JOB_COLUMNS
             " FROM jobs_archive j WHERE j.user_id = $1 AND j.id = $2::uuid LIMIT 1",
             2, p, on_job, NULL);
}

static bool job_id_param(http_req_t *req, const char **id)
{
    *id = http_req_param(req, "id");
    if (!uuid_is_valid(*id)) {
        gw_reply_invalid(req, "id", "must be a UUID");
        return false;
    }
    return true;
}

static void get_job(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *id = NULL;
    if (job_id_param(req, &id)) {
        send_job(gw, req, user->id, id);
    }
}

typedef struct {
    gw_t *gw;
    http_req_t *req;
    bool retry;
    char user_id[GW_UUID_LEN + 1];
    char job_id[GW_UUID_LEN + 1];
    char ip[64];
    char tier[16]; /* the user's subscription tier, for the fair queue */
} change_t;

static void on_pushed(redisReply *reply, const char *err, void *arg)
{
    change_t *c = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* The job is queued in PostgreSQL; the worker's recovery re-pushes it. */
        log_warn("retry: could not push job %s: %s", c->job_id, err != NULL ? err : reply->str);
    }
    send_job(c->gw, c->req, c->user_id, c->job_id);
    free(c);
}

static void on_changed(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    change_t *c = arg;
    const char *outcome = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "not_found";
    if (strcmp(outcome, "ok") == 0) {
        char target[64];
        snprintf(target, sizeof(target), "job:%s", c->job_id);
        gw_audit(gw, c->user_id, c->retry ? "job.retry" : "job.cancel", target, NULL, c->ip);
        if (c->retry) {
            const char *args[3] = {c->job_id, c->tier, c->user_id};
            snprintf(c->tier, sizeof(c->tier), "%s",
                     PQnfields(res) > 1 && PQntuples(res) == 1 ? PQgetvalue(res, 0, 1) : "free");
            if (gw_redis_eval(gw->redis, on_pushed, c, queue_push_script(), 0, 3, args) == 0) {
                return;
            }
            log_warn("retry: Redis unavailable; job %s stays queued in PostgreSQL", c->job_id);
        }
        send_job(gw, req, c->user_id, c->job_id);
    } else if (strcmp(outcome, "conflict") == 0) {
        http_reply_error(req, 409, "conflict",
                         c->retry ? "only a failed or cancelled job can be retried"
                                  : "only a queued or processing job can be cancelled");
    } else {
        gw_reply_not_found(req);
    }
    free(c);
}

static void change_job(gw_t *gw, http_req_t *req, const gw_user_t *user, bool retry)
{
    const char *id = NULL;
    if (!job_id_param(req, &id)) {
        return;
    }
    change_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    c->gw = gw;
    c->req = req;
    c->retry = retry;
    snprintf(c->user_id, sizeof(c->user_id), "%s", user->id);
    snprintf(c->job_id, sizeof(c->job_id), "%s", id);
    snprintf(c->ip, sizeof(c->ip), "%s", gw_client_ip(req));
    const char *p[] = {user->id, id};
    gw_query_ex(gw, req, user->id,
                retry ? "SELECT jobs_retry($1::uuid, $2::uuid), COALESCE((SELECT s.tier"
                        " FROM subscriptions s WHERE s.user_id = $1::uuid"
                        " ORDER BY s.created_at DESC LIMIT 1), 'free')"
                      : "SELECT jobs_cancel($1::uuid, $2::uuid)",
                2, p, on_changed, c, free);
}

static void retry_job(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    change_job(gw, req, user, true);
}

static void cancel_job(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    change_job(gw, req, user, false);
}

int gw_routes_jobs(gw_t *gw)
{
    if (gw_route(gw, "GET", "/api/jobs", GW_AUTH, list_jobs) != 0 ||
        gw_route(gw, "GET", "/api/jobs/{id}", GW_AUTH, get_job) != 0 ||
        gw_route(gw, "POST", "/api/jobs/{id}/retry", GW_AUTH, retry_job) != 0 ||
        gw_route(gw, "POST", "/api/jobs/{id}/cancel", GW_AUTH, cancel_job) != 0) {
        return -1;
    }
    return 0;
}
