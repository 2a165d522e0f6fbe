/*
 * poll — one poll of one claimed folder: Drive calls, jobs, the changes feed,
 * the full listing, and the records of the outcome (see poll.h).
 */
#include "poll.h"

#include "backoff.h"
#include "drive_auth.h"
#include "log.h"
#include "now.h"
#include "poller_metrics.h"
#include "queue.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_RETRY_S 5
#define CHANGES_PAGE_SIZE 1000
#define LIST_PAGE_SIZE 1000
#define TOKEN_MAX 4096
/* also matched by sql/drive-poller/100_stop_notice.sql (the folder_gone notice) */
#define FOLDER_GONE_REASON "folder not found or no longer shared"
#define REVOKED_MESSAGE "Google access was revoked \xe2\x80\x94 reconnect Drive"
#define DISCONNECTED_MESSAGE "Google Drive is not connected \xe2\x80\x94 reconnect Drive"
#define NOW_UTC "timezone('UTC', now())"

typedef enum {
    RES_OK = 0,
    RES_ERROR,         /* transient or unexpected: back off this folder */
    RES_TOKEN_INVALID, /* Drive refused the changes token (internal) */
    RES_REVOKED,
    RES_NO_TOKENS,
    RES_FOLDER_GONE,
    RES_DB,
    RES_ABORT, /* draining or the lease was lost */
} poll_result_t;

typedef struct {
    poll_env_t *t;
    const lease_row_t *row;
    char token[TOKEN_MAX];
    drive_auth_status_t auth;
    google_error_t err;
    char errmsg[512];
    char *new_token;     /* the token to save when the poll succeeds */
    bool scanned;        /* a full listing was made */
    bool folder_check;   /* the changes touched the folder itself */
    bool folder_trashed; /* files.get says the folder is in the trash */
    char max_mtime[40];
    int new_jobs;
    int seen;
    int64_t lease_renewed_ms;
} poll_ctx_t;

/* ---- pure rules ---- */

bool poll_file_is_candidate(const drive_file_t *f, const char *folder_id)
{
    if (f == NULL || folder_id == NULL || f->id == NULL || f->trashed) {
        return false;
    }
    if (!drive_file_is_image(f)) {
        return false;
    }
    for (size_t i = 0; i < f->nparents; i++) {
        if (f->parents[i] != NULL && strcmp(f->parents[i], folder_id) == 0) {
            return true;
        }
    }
    return false;
}

long poll_backoff_ms(int consecutive_errors, long retry_after_ms)
{
    long wait =
        (long)backoff_delay_ms(consecutive_errors, POLL_BACKOFF_BASE_MS, POLL_BACKOFF_MAX_MS);
    if (retry_after_ms > wait) {
        wait = retry_after_ms > POLL_RETRY_AFTER_MAX_MS ? POLL_RETRY_AFTER_MAX_MS : retry_after_ms;
    }
    return wait;
}

char *poll_children_query(const char *folder_id)
{
    size_t n = strlen(folder_id);
    const char *tail = "' in parents and trashed = false";
    char *q = malloc(2 * n + strlen(tail) + 2);
    if (q == NULL) {
        return NULL;
    }
    char *w = q;
    *w++ = '\'';
    for (const char *s = folder_id; *s != '\0'; s++) {
        if (*s == '\'' || *s == '\\') {
            *w++ = '\\';
        }
        *w++ = *s;
    }
    strcpy(w, tail);
    return q;
}

/* ---- Drive calls: metrics and one forced refresh after a 401 ---- */

typedef enum { OP_START_TOKEN, OP_CHANGES, OP_LIST, OP_GET } drive_op_t;

typedef struct {
    const char *page_token;
    const char *q;
    char *start_token;
    drive_change_list_t changes;
    drive_file_list_t list;
    drive_file_t file;
} drive_args_t;

static const char *op_name(drive_op_t op)
{
    switch (op) {
    case OP_START_TOKEN:
        return "changes.getStartPageToken";
    case OP_CHANGES:
        return "changes.list";
    case OP_LIST:
        return "files.list";
    case OP_GET:
        return "files.get";
    }
    return "unknown";
}

/* 0: c->token holds a usable token; -1: c->auth tells why not. */
static int get_token(poll_ctx_t *c, bool force)
{
    google_error_t e;
    memset(&e, 0, sizeof(e));
    c->auth = drive_auth_access_token(c->t->pg, c->t->gc, c->t->set->keys, c->row->user_id, force,
                                      c->token, sizeof(c->token), &e);
    if (c->auth == DRIVE_AUTH_OK) {
        return 0;
    }
    c->err = e;
    snprintf(c->errmsg, sizeof(c->errmsg), "token: %s",
             e.message[0] != '\0' ? e.message : "failed");
    return -1;
}

static google_status_t drive_call(poll_ctx_t *c, drive_op_t op, drive_args_t *a)
{
    google_client_t *gc = c->t->gc;
    for (int attempt = 0;; attempt++) {
        google_error_t e;
        memset(&e, 0, sizeof(e));
        google_status_t st = GOOGLE_ERR_PROTOCOL;
        switch (op) {
        case OP_START_TOKEN:
            free(a->start_token);
            a->start_token = NULL;
            st = drive_changes_start_token(gc, c->token, &a->start_token, &e);
            break;
        case OP_CHANGES:
            drive_change_list_free(&a->changes);
            st =
                drive_changes_list(gc, c->token, a->page_token, CHANGES_PAGE_SIZE, &a->changes, &e);
            break;
        case OP_LIST:
            drive_file_list_free(&a->list);
            st = drive_files_list(gc, c->token, a->q, NULL, LIST_PAGE_SIZE, a->page_token, &a->list,
                                  &e);
            break;
        case OP_GET:
            drive_file_free(&a->file);
            st = drive_files_get(gc, c->token, c->row->folder_id, &a->file, &e);
            break;
        }
        poller_metrics_drive_call(op_name(op), st);
        if (st == GOOGLE_OK) {
            return st;
        }
        c->err = e;
        const char *what = e.message[0] != '\0' ? e.message : google_status_name(st);
        bool named = strncmp(what, op_name(op), strlen(op_name(op))) == 0;
        snprintf(c->errmsg, sizeof(c->errmsg), "%s%s%s%s%s%s", named ? "" : op_name(op),
                 named ? "" : ": ", what, e.reason[0] != '\0' ? " (" : "", e.reason,
                 e.reason[0] != '\0' ? ")" : "");
        if (st != GOOGLE_ERR_AUTH || attempt > 0) {
            return st;
        }
        log_info("%s: 401, refreshing the access token once", op_name(op));
        if (get_token(c, true) != 0) {
            return GOOGLE_ERR_AUTH; /* c->auth says why */
        }
    }
}

/* What a failed call means for the poll. */
static poll_result_t call_failed(poll_ctx_t *c, google_status_t st)
{
    if (st == GOOGLE_ERR_AUTH && c->auth != DRIVE_AUTH_OK) {
        switch (c->auth) {
        case DRIVE_AUTH_REVOKED:
            return RES_REVOKED;
        case DRIVE_AUTH_NO_TOKENS:
            return RES_NO_TOKENS;
        case DRIVE_AUTH_DB:
            return RES_DB;
        default:
            return RES_ERROR;
        }
    }
    return RES_ERROR;
}

/* Between pages: stop when draining, renew the lease when a third of it has
 * gone, stop when it was lost (the row is someone else's now). */
static poll_result_t keep_lease(poll_ctx_t *c)
{
    poll_env_t *t = c->t;
    if (stopwait_stopped(t->set->stop)) {
        snprintf(c->errmsg, sizeof(c->errmsg), "draining");
        return RES_ABORT;
    }
    if (now_mono_ms() - c->lease_renewed_ms < (int64_t)t->set->lease_s * 1000 / 3) {
        return RES_OK;
    }
    char err[256];
    int renewed = lease_renew(t->pg, t->owner, c->row->id, t->set->lease_s, err, sizeof(err));
    if (renewed < 0) {
        snprintf(c->errmsg, sizeof(c->errmsg), "database: %s", err);
        return RES_DB;
    }
    if (renewed == 0) {
        snprintf(c->errmsg, sizeof(c->errmsg), "lease lost");
        return RES_ABORT;
    }
    c->lease_renewed_ms = now_mono_ms();
    return RES_OK;
}

/* ---- jobs ---- */

static int cmp_file_ptr(const void *a, const void *b)
{
    const drive_file_t *x = *(const drive_file_t *const *)a;
    const drive_file_t *y = *(const drive_file_t *const *)b;
    return strcmp(x->id, y->id);
}

/* Pushes the new ids to the user's fair queue (tier: the user's subscription). */
static void push_ids(poll_ctx_t *c, char **ids, int n, const char *tier)
{
    poll_env_t *t = c->t;
    char err[256];
    for (int i = 0; i < n; i++) {
        if (t->redis == NULL) {
            t->redis = redis_connect(t->set->redis_url, 2000, err, sizeof(err));
            if (t->redis == NULL) {
                log_warn("Redis unreachable, %d job id(s) left for the worker's re-push: %s", n - i,
                         err);
                poller_metrics_push_failures(n - i);
                return;
            }
            redis_set_retry(t->redis, 2000);
        }
        if (queue_push_user(t->redis, ids[i], c->row->user_id, tier, err, sizeof(err)) != 0) {
            log_warn("push of job %s failed (the worker re-pushes queued jobs): %s", ids[i], err);
            poller_metrics_push_failures(1);
        }
    }
}

/* Creates the jobs of `files` (candidates) in one statement (its own
 * transaction), then pushes the new ids. */
static poll_result_t create_jobs(poll_ctx_t *c, drive_file_t **files, size_t n)
{
    if (n == 0) {
        return RES_OK;
    }
    /* one lock order for every poller: by file id */
    qsort(files, n, sizeof(files[0]), cmp_file_ptr);
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL) {
        snprintf(c->errmsg, sizeof(c->errmsg), "out of memory");
        return RES_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        const drive_file_t *f = files[i];
        cJSON *o = cJSON_CreateObject();
        if (o == NULL) {
            cJSON_Delete(arr);
            snprintf(c->errmsg, sizeof(c->errmsg), "out of memory");
            return RES_ERROR;
        }
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "id", f->id);
        cJSON_AddStringToObject(o, "name", f->name != NULL ? f->name : f->id);
        if (f->size >= 0) {
            cJSON_AddNumberToObject(o, "size", (double)f->size);
        }
        if (f->mime_type != NULL) {
            cJSON_AddStringToObject(o, "mime", f->mime_type);
        }
        if (f->modified_time != NULL && strcmp(f->modified_time, c->max_mtime) > 0) {
            snprintf(c->max_mtime, sizeof(c->max_mtime), "%s", f->modified_time);
        }
    }
    char *json = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (json == NULL) {
        snprintf(c->errmsg, sizeof(c->errmsg), "out of memory");
        return RES_ERROR;
    }
    const char *params[] = {c->row->user_id, json, c->row->folder_id};
    char err[256];
    PGresult *res = NULL;
    for (int attempt = 0; attempt < 3 && res == NULL; attempt++) {
        res = pg_exec(c->t->pg,
                      "SELECT r.job_id, r.is_new, COALESCE((SELECT s.tier FROM subscriptions s"
                      "       WHERE s.user_id = $1::uuid ORDER BY s.created_at DESC LIMIT 1),"
                      "       'free')"
                      "  FROM jsonb_to_recordset($2::jsonb)"
                      "       AS f(id text, name text, size bigint, mime text)"
                      "  CROSS JOIN LATERAL jobs_create_for_drive_file($1::uuid, f.id,"
                      "       left(f.name, 500), $3, f.size, left(f.mime, 100), NULL) AS r",
                      3, params, err, sizeof(err));
        if (res == NULL && !pg_error_is_retryable(c->t->pg)) {
            break;
        }
    }
    free(json);
    if (res == NULL) {
        snprintf(c->errmsg, sizeof(c->errmsg), "database: %s", err);
        return RES_DB;
    }
    int rows = PQntuples(res);
    char **ids = calloc((size_t)rows + 1, sizeof(char *));
    int nnew = 0;
    for (int i = 0; ids != NULL && i < rows; i++) {
        if (strcmp(PQgetvalue(res, i, 1), "t") == 0 && !PQgetisnull(res, i, 0)) {
            ids[nnew++] = PQgetvalue(res, i, 0);
        }
    }
    c->seen += (int)n;
    c->new_jobs += nnew;
    poller_metrics_files((int)n, nnew);
    if (nnew > 0) {
        log_info("%d new job(s) for %zu image(s)", nnew, n);
        push_ids(c, ids, nnew, PQgetvalue(res, 0, 2));
    }
    free(ids);
    PQclear(res);
    return RES_OK;
}

/* ---- the poll ---- */

static poll_result_t process_changes(poll_ctx_t *c, const char *start)
{
    drive_args_t a;
    memset(&a, 0, sizeof(a));
    char *cursor = strdup(start);
    poll_result_t r = RES_OK;
    drive_file_t **cands = NULL;
    for (int page = 0; cursor != NULL; page++) {
        if (page > 0 && (r = keep_lease(c)) != RES_OK) {
            break;
        }
        a.page_token = cursor;
        google_status_t st = drive_call(c, OP_CHANGES, &a);
        if (st == GOOGLE_ERR_BAD_REQUEST || st == GOOGLE_ERR_NOT_FOUND) {
            log_warn("Drive refused the changes token (%s): a new token and a full listing",
                     c->errmsg);
            r = RES_TOKEN_INVALID;
            break;
        }
        if (st != GOOGLE_OK) {
            r = call_failed(c, st);
            break;
        }
        free(cands);
        cands = calloc(a.changes.n + 1, sizeof(*cands));
        if (cands == NULL) {
            r = RES_ERROR;
            break;
        }
        size_t nc = 0;
        for (size_t i = 0; i < a.changes.n; i++) {
            drive_change_t *ch = &a.changes.changes[i];
            if (ch->file_id != NULL && strcmp(ch->file_id, c->row->folder_id) == 0) {
                c->folder_check = true; /* the folder moved, was trashed or is gone */
                continue;
            }
            if (ch->removed || !ch->has_file) {
                continue;
            }
            if (poll_file_is_candidate(&ch->file, c->row->folder_id)) {
                cands[nc++] = &ch->file;
            }
        }
        r = create_jobs(c, cands, nc);
        if (r != RES_OK) {
            break;
        }
        free(cursor);
        cursor = NULL;
        if (a.changes.next_page_token != NULL) {
            cursor = strdup(a.changes.next_page_token);
        } else if (a.changes.new_start_page_token != NULL) {
            free(c->new_token);
            c->new_token = strdup(a.changes.new_start_page_token);
        } else {
            snprintf(c->errmsg, sizeof(c->errmsg), "changes.list: a page with no token");
            r = RES_ERROR;
        }
    }
    free(cursor);
    free(cands);
    drive_change_list_free(&a.changes);
    return r;
}

static poll_result_t check_folder(poll_ctx_t *c)
{
    drive_args_t a;
    memset(&a, 0, sizeof(a));
    google_status_t st = drive_call(c, OP_GET, &a);
    poll_result_t r = RES_OK;
    if (st == GOOGLE_ERR_NOT_FOUND) {
        snprintf(c->errmsg, sizeof(c->errmsg), FOLDER_GONE_REASON);
        r = RES_FOLDER_GONE;
    } else if (st != GOOGLE_OK) {
        r = call_failed(c, st);
    } else {
        c->folder_trashed = a.file.trashed;
    }
    drive_file_free(&a.file);
    return r;
}

static poll_result_t full_listing(poll_ctx_t *c)
{
    drive_args_t a;
    memset(&a, 0, sizeof(a));
    char *q = poll_children_query(c->row->folder_id);
    char *cursor = NULL;
    drive_file_t **cands = NULL;
    poll_result_t r = q == NULL ? RES_ERROR : RES_OK;
    for (int page = 0; r == RES_OK; page++) {
        if (page > 0 && (r = keep_lease(c)) != RES_OK) {
            break;
        }
        a.q = q;
        a.page_token = cursor;
        google_status_t st = drive_call(c, OP_LIST, &a);
        if (st == GOOGLE_ERR_NOT_FOUND) {
            snprintf(c->errmsg, sizeof(c->errmsg), FOLDER_GONE_REASON);
            r = RES_FOLDER_GONE;
            break;
        }
        if (st != GOOGLE_OK) {
            r = call_failed(c, st);
            break;
        }
        free(cands);
        cands = calloc(a.list.n + 1, sizeof(*cands));
        if (cands == NULL) {
            r = RES_ERROR;
            break;
        }
        size_t nc = 0;
        for (size_t i = 0; i < a.list.n; i++) {
            if (poll_file_is_candidate(&a.list.files[i], c->row->folder_id)) {
                cands[nc++] = &a.list.files[i];
            }
        }
        r = create_jobs(c, cands, nc);
        free(cursor);
        cursor = a.list.next_page_token != NULL ? strdup(a.list.next_page_token) : NULL;
        if (cursor == NULL) {
            break;
        }
    }
    if (r == RES_OK) {
        c->scanned = true;
    }
    free(cursor);
    free(cands);
    free(q);
    drive_file_list_free(&a.list);
    return r;
}

static poll_result_t do_poll(poll_ctx_t *c)
{
    if (get_token(c, false) != 0) {
        return call_failed(c, GOOGLE_ERR_AUTH);
    }
    bool scan = c->row->scan_due;
    bool have_token = c->row->page_token != NULL;
    if (have_token) {
        poll_result_t r = process_changes(c, c->row->page_token);
        if (r == RES_TOKEN_INVALID) {
            have_token = false;
        } else if (r != RES_OK) {
            return r;
        }
    }
    if (!have_token) {
        /* The new token comes BEFORE the listing: what appears during the
         * listing is then in the listing, in the next changes, or both. */
        drive_args_t a;
        memset(&a, 0, sizeof(a));
        google_status_t st = drive_call(c, OP_START_TOKEN, &a);
        if (st != GOOGLE_OK) {
            free(a.start_token);
            return call_failed(c, st);
        }
        free(c->new_token);
        c->new_token = a.start_token;
        scan = true;
    }
    if (scan || c->folder_check) {
        poll_result_t r = check_folder(c);
        if (r != RES_OK) {
            return r;
        }
    }
    if (scan) {
        return full_listing(c);
    }
    return RES_OK;
}

/* ---- records ---- */

static void record_success(poll_ctx_t *c)
{
    poll_env_t *t = c->t;
    char found[16];
    char interval[16];
    snprintf(found, sizeof(found), "%d", c->new_jobs);
    snprintf(interval, sizeof(interval), "%d", t->set->interval_s);
    const char *status = c->folder_trashed ? "error" : "success";
    const char *message = c->folder_trashed ? "the watched folder is in the Drive trash" : NULL;
    const char *params[] = {c->row->id,
                            t->owner,
                            c->max_mtime[0] != '\0' ? c->max_mtime : NULL,
                            found,
                            c->new_token,
                            c->scanned ? "true" : "false",
                            c->row->claimed_at,
                            interval,
                            status,
                            message};
    char err[256];
    PGresult *res = pg_exec(
        t->pg,
        "UPDATE drive_polls SET last_poll_at = " NOW_UTC ","
        " last_modified_time = GREATEST(last_modified_time, $3::timestamptz AT TIME ZONE 'UTC'),"
        " files_found = COALESCE(files_found, 0) + $4::int,"
        " poll_status = $9, error_message = $10,"
        " consecutive_errors = 0, backoff_until = NULL,"
        " changes_page_token = COALESCE($5, changes_page_token),"
        " last_full_scan_at = CASE WHEN $6::boolean THEN " NOW_UTC " ELSE last_full_scan_at END,"
        /* a notification during this poll: due again at once (the change may
         * be after its changes.list); else an interval after the claim, or
         * earlier when the push channel is to be renewed (push.c) */
        " next_poll_at = CASE WHEN push_requested_at > $7::timestamp THEN " NOW_UTC
        "   ELSE LEAST(GREATEST($7::timestamp + make_interval(secs => $8::double precision), " NOW_UTC
        "),"
        "     (SELECT min(GREATEST(c.expires_at - LEAST((c.expires_at - c.created_at) / 5,"
        "                interval '1 hour'), " NOW_UTC " + LEAST(interval '10 seconds',"
        "                (c.expires_at - c.created_at) / 10)))"
        "        FROM drive_push_channels c WHERE c.poll_id = drive_polls.id"
        "         AND c.stop_after IS NULL AND c.resource_id IS NOT NULL)) END,"
        " lease_owner = NULL, lease_expires_at = NULL"
        " WHERE id = $1 AND lease_owner = $2 RETURNING id",
        10, params, err, sizeof(err));
    if (res == NULL) {
        log_warn("could not record the poll (it is repeated; jobs are idempotent): %s", err);
        return;
    }
    if (PQntuples(res) == 0) {
        log_warn("lease lost before the poll was recorded (the token is not advanced)");
    }
    PQclear(res);
}

static void record_error(poll_ctx_t *c)
{
    poll_env_t *t = c->t;
    int n = c->row->consecutive_errors + 1;
    long wait_ms = poll_backoff_ms(n, c->err.retry_after_ms);
    char wait[32];
    char found[16];
    snprintf(wait, sizeof(wait), "%.3f", (double)wait_ms / 1000.0);
    snprintf(found, sizeof(found), "%d", c->new_jobs);
    const char *status = c->err.status == GOOGLE_ERR_RATE_LIMITED ? "rate_limited" : "error";
    const char *params[] = {c->row->id,
                            t->owner,
                            status,
                            c->errmsg,
                            wait,
                            found,
                            c->max_mtime[0] != '\0' ? c->max_mtime : NULL};
    char err[256];
    if (pg_exec_cmd(t->pg,
                    "UPDATE drive_polls SET last_poll_at = " NOW_UTC ","
                    " poll_status = $3, error_message = left($4, 1000),"
                    " consecutive_errors = consecutive_errors + 1,"
                    " backoff_until = " NOW_UTC " + make_interval(secs => $5::double precision),"
                    " next_poll_at = " NOW_UTC " + make_interval(secs => $5::double precision),"
                    " files_found = COALESCE(files_found, 0) + $6::int,"
                    " last_modified_time = GREATEST(last_modified_time,"
                    "     $7::timestamptz AT TIME ZONE 'UTC'),"
                    " lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE id = $1 AND lease_owner = $2",
                    7, params, err, sizeof(err)) != 0) {
        log_warn("could not record the error: %s", err);
    }
    log_warn("poll failed (%s), retry in %ld ms: %s", status, wait_ms, c->errmsg);
}

/* Stops watching: `all_of_user` for a revoked grant, else this row. */
static void record_stop(poll_ctx_t *c, bool all_of_user, const char *reason, const char *message)
{
    poll_env_t *t = c->t;
    char err[256];
    int rc;
    if (all_of_user) {
        const char *params[] = {c->row->user_id, reason, message};
        rc = pg_exec_cmd(t->pg,
                         "UPDATE drive_polls SET active = FALSE, stopped_reason = $2,"
                         " poll_status = 'error', error_message = $3, last_poll_at = " NOW_UTC ","
                         " lease_owner = NULL, lease_expires_at = NULL"
                         " WHERE user_id = $1::uuid AND active",
                         3, params, err, sizeof(err));
    } else {
        const char *params[] = {c->row->id, t->owner, reason, message};
        rc = pg_exec_cmd(t->pg,
                         "UPDATE drive_polls SET active = FALSE, stopped_reason = $3,"
                         " poll_status = 'error', error_message = $4, last_poll_at = " NOW_UTC ","
                         " lease_owner = NULL, lease_expires_at = NULL"
                         " WHERE id = $1 AND lease_owner = $2",
                         4, params, err, sizeof(err));
    }
    if (rc != 0) {
        log_warn("could not stop the watch: %s", err);
        return;
    }
    log_warn("watch stopped: %s", message);
}

static void record_revoked(poll_ctx_t *c)
{
    char reason[320];
    snprintf(reason, sizeof(reason), "invalid_grant: %s",
             c->err.message[0] != '\0' ? c->err.message : "refresh token revoked or expired");
    const char *params[] = {c->row->user_id, reason};
    char err[256];
    PGresult *res = pg_exec(c->t->pg, "SELECT users_mark_drive_disconnected($1::uuid, $2)", 2,
                            params, err, sizeof(err));
    if (res == NULL) {
        log_warn("could not mark Drive disconnected: %s", err);
    } else {
        PQclear(res);
    }
    record_stop(c, true, "drive_revoked", REVOKED_MESSAGE);
}

static const char *finish(poll_ctx_t *c, poll_result_t r)
{
    switch (r) {
    case RES_OK:
        record_success(c);
        return c->folder_trashed ? "folder_trashed" : "success";
    case RES_ERROR:
    case RES_TOKEN_INVALID:
        record_error(c);
        return c->err.status == GOOGLE_ERR_RATE_LIMITED ? "rate_limited" : "error";
    case RES_REVOKED:
        record_revoked(c);
        return "revoked";
    case RES_NO_TOKENS:
        record_stop(c, true, "drive_disconnected", DISCONNECTED_MESSAGE);
        return "disconnected";
    case RES_FOLDER_GONE:
        record_stop(c, false, FOLDER_GONE_REASON, FOLDER_GONE_REASON);
        return "folder_gone";
    case RES_DB:
        log_warn("database trouble during the poll, retry in %d s: %s", DB_RETRY_S, c->errmsg);
        lease_release(c->t->pg, c->t->owner, c->row, DB_RETRY_S);
        return "db_error";
    case RES_ABORT:
        lease_release(c->t->pg, c->t->owner, c->row, 0);
        return "aborted";
    }
    return "error";
}

void poll_folder(poll_env_t *t, const lease_row_t *row)
{
    poll_ctx_t c;
    memset(&c, 0, sizeof(c));
    c.t = t;
    c.row = row;
    c.err.retry_after_ms = -1;
    c.lease_renewed_ms = now_mono_ms();
    int64_t started = now_mono_ms();
    int64_t started_wall = now_wall_ms();
    log_context_set("user_id", row->user_id);
    log_context_set("folder_id", row->folder_id);
    poller_metrics_in_flight(1);

    poll_result_t r = do_poll(&c);
    if (r == RES_OK && t->set->push != NULL && t->set->push->url != NULL) {
        push_channel_ensure(t->set->push, t->pg, t->gc, t->set->keys, t->owner, row, c.token,
                            c.new_token != NULL ? c.new_token : row->page_token);
    }
    const char *status = finish(&c, r);

    double secs = (double)(now_mono_ms() - started) / 1000.0;
    poller_metrics_poll(status, secs);
    poller_metrics_in_flight(-1);
    log_debug("poll done: status=%s poll=%s start_ms=%lld end_ms=%lld seen=%d new_jobs=%d "
              "scanned=%d",
              status, row->id, (long long)started_wall, (long long)now_wall_ms(), c.seen,
              c.new_jobs, c.scanned ? 1 : 0);
    free(c.new_token);
    memset(c.token, 0, sizeof(c.token));
    log_context_set("user_id", NULL);
    log_context_set("folder_id", NULL);
}
