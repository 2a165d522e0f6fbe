/*
 * job — one job, from claim to the fenced completion (see job.h and
 * docs/job-worker.md for the steps and their failure codes).
 */
#define _GNU_SOURCE
#include "job.h"

#include "backoff.h"
#include "comfyui.h"
#include "cpu_exec.h"
#include "cpu_nodes.h"
#include "drive.h"
#include "drive_auth.h"
#include "infile.h"
#include "log.h"
#include "metrics.h"
#include "now.h"
#include "preview.h"
#include "redis.h"
#include "uuid.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Not an error code: the job was cancelled (or taken over) while it ran;
 * nothing is recorded (jobs_cancel did, releasing the usage reservation). */
static const char JOB_STOPPED[] = "stopped";

/* The largest ComfyUI output taken (it is held in memory until uploaded). */
#define COMFY_MAX_OUTPUT_BYTES ((size_t)256 * 1024 * 1024)

typedef struct {
    const char *code; /* DESIGN.md job error code, or JOB_STOPPED */
    bool transient;   /* retry with backoff while retries remain */
    char message[512];
} job_err_t;

typedef struct {
    char id[JOB_ID_MAX];
    char attempt[16];
    char user_id[JOB_ID_MAX];
    char *drive_file_id;
    char *drive_file_name;
    char *drive_folder_id;
    char *preset_name;
    char *prompt_id; /* comfyui_prompt_id of an earlier attempt, "" when none */
    int retry_count;
    int max_retries;
    char *workflow;      /* the preset's workflow_json, read with the claim; NULL: no such preset */
    char *output_folder; /* users.output_folder_id when it applies to this job, else "" */
    bool reserved;       /* usage reserved by this attempt (release on permanent failure) */
    char *reservation;   /* "<outcome> <monthly_limit>" of the reservation made with the claim */
    bool share_link;     /* users.share_outputs = 'link', read with the claim */
    /* the user's stored Drive tokens, read with the claim (used once: a forced
     * refresh after a 401 reads them again) */
    drive_auth_stored_t stored;
    bool have_stored;
    char *access_enc;
    char *refresh_enc;
    int64_t started_ms;

    /* time per step, for the debug log ("steps: claim=1.2 reserve=0.8 ...", ms) */
    int64_t step_us;
    char steps[320];
    size_t steps_len;

    /* results */
    char *output_file_id;
    char *output_name;
    char *output_url;
    preview_pair_t thumbs; /* before/after thumbnails, stored at completion */
} job_t;

static metric_t *m_jobs;
static metric_t *m_seconds;
static metric_t *m_drive;
static metric_t *m_retries;

void job_metrics_init(void)
{
    static const double buckets[] = {0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300};
    m_jobs = metrics_counter("ca_worker_jobs_total", "Jobs finished by this worker",
                             "status,error_code");
    m_seconds =
        metrics_histogram("ca_worker_job_seconds", "Processing time of completed jobs per preset",
                          "preset", buckets, sizeof(buckets) / sizeof(buckets[0]));
    m_drive = metrics_counter("ca_worker_drive_calls_total", "Google Drive calls", "call,status");
    m_retries =
        metrics_counter("ca_worker_job_retries_total", "Jobs scheduled for a retry", "error_code");
}

static void metric_drive(const char *call, google_status_t st)
{
    metric_add(m_drive, 1, call, google_status_name(st));
}

/* Notes the time since the previous step under `name` (debug log only). */
static void step(job_t *j, const char *name)
{
    int64_t now = now_mono_us();
    if (j->steps_len < sizeof(j->steps)) {
        int n = snprintf(j->steps + j->steps_len, sizeof(j->steps) - j->steps_len, "%s%s=%.1f",
                         j->steps_len > 0 ? " " : "", name, (double)(now - j->step_us) / 1000.0);
        if (n > 0) {
            j->steps_len += (size_t)n;
        }
    }
    j->step_us = now;
}

static void job_free(job_t *j)
{
    free(j->drive_file_id);
    free(j->drive_file_name);
    free(j->drive_folder_id);
    free(j->preset_name);
    free(j->prompt_id);
    free(j->workflow);
    free(j->output_folder);
    free(j->reservation);
    free(j->access_enc);
    free(j->refresh_enc);
    free(j->output_file_id);
    free(j->output_name);
    free(j->output_url);
    preview_pair_free(&j->thumbs);
}

/* Fills the failure a job records: its error code, whether it is retried, and
 * the message the user reads (not a char *err: see job_err_t). */
static void job_err_set(job_err_t *e, const char *code, bool transient, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void job_err_set(job_err_t *e, const char *code, bool transient, const char *fmt, ...)
{
    e->code = code;
    e->transient = transient;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

/* True (e set to JOB_STOPPED) when the cancel watch stopped the job. */
static bool stopped(job_runner_t *t, job_err_t *e)
{
    if (atomic_load(&t->stop) == 0) {
        return false;
    }
    job_err_set(e, JOB_STOPPED, false, "The job was cancelled.");
    return true;
}

static char *dupv(PGresult *res, int col)
{
    return strdup(PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col));
}

/* ---- claim ---- */

/* 1 claimed, 0 not claimable (done, cancelled, held, waiting for quota), -1
 * database error; 1 with reservation 'blocked <limit>' too, when the claim put
 * the job to wait for quota instead (waits_for_quota, sql/job-worker/105).
 * One round trip, one commit (jobs_worker_claim, sql/job-worker/060; a
 * statement prepared once per connection, pg_exec_prepared): the
 * claim (fenced by the new attempt number), the usage reservation for the
 * job's user (billing_reserve_usage, idempotent per job: a retried attempt
 * finds its reservation) and what the job needs later from PostgreSQL: the
 * preset's graph (by name, active, the user's own first, then system, then
 * a public one the user adopted, at the adopted version: sql/job-worker/082),
 * the user's output folder (when the job comes from the watched
 * folder, or none is watched), the user's stored Drive tokens
 * (drive_auth_access_token_from then needs no read of its own) and the
 * user's sharing setting (sql/job-worker/115). An error
 * anywhere (the reservation included) rolls the claim back: the job stays
 * queued and its id comes back after a delay. */
static int claim(job_runner_t *t, const char *id, job_t *j)
{
    char lease[16];
    char err[256];
    snprintf(lease, sizeof(lease), "%d", t->set->lease_s);
    const char *params[4] = {id, t->worker_id, lease, DRIVE_AUTH_MARGIN_SECONDS};
    PGresult *res = pg_exec_prepared(
        t->pg, "ca_worker_claim", "SELECT * FROM jobs_worker_claim($1::uuid, $2, $3::int, $4::int)",
        4, params, err, sizeof(err));
    if (res == NULL) {
        log_warn("claim failed: %s", err);
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->attempt, sizeof(j->attempt), "%s", PQgetvalue(res, 0, 0));
    snprintf(j->user_id, sizeof(j->user_id), "%s", PQgetvalue(res, 0, 1));
    j->drive_file_id = dupv(res, 2);
    j->drive_file_name = dupv(res, 3);
    j->drive_folder_id = dupv(res, 4);
    j->preset_name = dupv(res, 5);
    j->prompt_id = dupv(res, 6);
    j->retry_count = atoi(PQgetvalue(res, 0, 7));
    j->max_retries = atoi(PQgetvalue(res, 0, 8));
    j->workflow = PQgetisnull(res, 0, 9) ? NULL : strdup(PQgetvalue(res, 0, 9));
    j->output_folder = dupv(res, 10);
    j->reservation = PQgetisnull(res, 0, 11) ? NULL : strdup(PQgetvalue(res, 0, 11));
    j->stored.found = strcmp(PQgetvalue(res, 0, 12), "t") == 0;
    j->access_enc = PQgetisnull(res, 0, 13) ? NULL : strdup(PQgetvalue(res, 0, 13));
    j->refresh_enc = PQgetisnull(res, 0, 14) ? NULL : strdup(PQgetvalue(res, 0, 14));
    j->stored.connected = strcmp(PQgetvalue(res, 0, 15), "t") == 0;
    j->stored.fresh = strcmp(PQgetvalue(res, 0, 16), "t") == 0;
    /* no column: a schema before sql/job-worker/115, share nothing */
    j->share_link = PQnfields(res) > 17 && strcmp(PQgetvalue(res, 0, 17), "t") == 0;
    j->stored.access_enc = j->access_enc;
    j->stored.refresh_enc = j->refresh_enc;
    j->have_stored = true;
    PQclear(res);
    return 1;
}

/* The claim answered 'blocked <limit>': the plan's limit is reached (or an
 * older job of the user waits), and jobs_worker_claim (sql/job-worker/105)
 * put the job to wait for quota instead of claiming it. */
static bool waits_for_quota(const job_t *j)
{
    return j->reservation != NULL && strncmp(j->reservation, "blocked ", 8) == 0;
}

/* ---- finishing (fenced) ---- */

static int outbox_add(job_runner_t *t, const job_t *j, char *err, size_t errlen)
{
    if (t->set->smtp_url == NULL || j->user_id[0] == '\0') {
        return 0;
    }
    const char *p[2] = {j->user_id, j->id};
    return pg_exec_cmd(t->pg,
                       "INSERT INTO email_outbox (user_id, job_ids)"
                       " SELECT u.id, ARRAY[$2::uuid] FROM users u"
                       " WHERE u.id = $1::uuid AND COALESCE(u.email_notifications, true)",
                       2, p, err, errlen);
}

/* The fenced completion in one round trip and one commit
 * (jobs_worker_complete, sql/job-worker/060): the job's row (only while this
 * attempt holds it), the usage finalised and, with e-mail on, the outbox row.
 * false back: fenced out (another attempt took over, or the job was
 * cancelled), nothing recorded. Retried on errors (serialization, a dropped
 * connection: a retry after a lost commit finds the job completed and counts
 * as fenced, recording nothing twice). */
static int complete(job_runner_t *t, job_t *j, bool *fenced_out)
{
    char err[512];
    char ms[32];
    snprintf(ms, sizeof(ms), "%" PRId64, now_mono_ms() - j->started_ms);
    *fenced_out = false;
    const char *mail = t->set->smtp_url != NULL ? "true" : "false";
    const char *p[8] = {j->id,          j->attempt,    ms,  t->worker_id, j->output_file_id,
                        j->output_name, j->output_url, mail};
    for (int tries = 0; tries < 3; tries++) {
        PGresult *res = pg_exec_prepared(t->pg, "ca_worker_complete",
                                         "SELECT jobs_worker_complete($1::uuid, $2::int, $3::int,"
                                         " $4, $5, $6, $7, $8::bool)",
                                         8, p, err, sizeof(err));
        if (res == NULL) {
            continue;
        }
        *fenced_out = PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0;
        PQclear(res);
        return 0;
    }
    log_warn("completion not recorded: %s", err);
    return -1;
}

/* Records a failure: back to queued (transient, retries left) or failed.
 * Returns the new status ("queued", "failed"), "" when fenced out, NULL on a
 * database error. *retry_n gets the new retry_count. */
static const char *record_failure(job_runner_t *t, job_t *j, const job_err_t *e, int *retry_n)
{
    char err[512];
    char ms[32];
    snprintf(ms, sizeof(ms), "%" PRId64, now_mono_ms() - j->started_ms);
    for (int tries = 0; tries < 3; tries++) {
        if (pg_begin(t->pg, err, sizeof(err)) != 0) {
            continue;
        }
        const char *p[7] = {j->id,       j->attempt, e->transient ? "true" : "false",
                            e->code,     e->message, ms,
                            t->worker_id};
        PGresult *res = pg_exec(
            t->pg,
            "UPDATE jobs SET"
            " status = CASE WHEN $3::bool AND COALESCE(retry_count, 0) < COALESCE(max_retries, 3)"
            "   THEN 'queued' ELSE 'failed' END,"
            " retry_count = CASE WHEN $3::bool AND COALESCE(retry_count, 0) < COALESCE(max_retries, 3)"
            "   THEN COALESCE(retry_count, 0) + 1 ELSE retry_count END,"
            " completed_at = CASE WHEN $3::bool AND COALESCE(retry_count, 0) < COALESCE(max_retries, 3)"
            "   THEN NULL ELSE timezone('UTC', now()) END,"
            " error_code = $4, error_message = $5, processing_time_ms = $6::int, worker_id = $7,"
            " lease_expires_at = NULL"
            " WHERE id = $1::uuid AND attempt = $2::int AND status = 'processing'"
            " RETURNING status, retry_count",
            7, p, err, sizeof(err));
        if (res == NULL) {
            pg_rollback(t->pg);
            continue;
        }
        if (PQntuples(res) == 0) {
            PQclear(res);
            pg_rollback(t->pg);
            return "";
        }
        const char *status = strcmp(PQgetvalue(res, 0, 0), "queued") == 0 ? "queued" : "failed";
        *retry_n = atoi(PQgetvalue(res, 0, 1));
        PQclear(res);
        bool ok = true;
        if (strcmp(status, "failed") == 0) {
            if (j->reserved) {
                const char *rp[1] = {j->id};
                res = pg_exec(t->pg, "SELECT billing_release_usage($1::uuid, true)", 1, rp, err,
                              sizeof(err));
                ok = res != NULL;
                PQclear(res);
            }
            ok = ok && outbox_add(t, j, err, sizeof(err)) == 0;
        }
        if (!ok || pg_commit(t->pg, err, sizeof(err)) != 0) {
            pg_rollback(t->pg);
            continue;
        }
        return status;
    }
    log_warn("failure not recorded: %s", err);
    return NULL;
}

/* ---- Drive ---- */

static int access_token(job_runner_t *t, job_t *j, bool force, char *token, size_t toklen,
                        job_err_t *e)
{
    google_error_t gerr = {0};
    const drive_auth_stored_t *stored = j->have_stored && !force ? &j->stored : NULL;
    j->have_stored = false;
    drive_auth_status_t st = drive_auth_access_token_from(t->pg, t->gc, t->set->keys, j->user_id,
                                                          stored, force, token, toklen, &gerr);
    switch (st) {
    case DRIVE_AUTH_OK:
        return 0;
    case DRIVE_AUTH_REVOKED: {
        char err[256];
        const char *p[2] = {j->user_id, "invalid_grant: Google Drive access was revoked"};
        PGresult *res = pg_exec(t->pg, "SELECT users_mark_drive_disconnected($1::uuid, $2)", 2, p,
                                err, sizeof(err));
        if (res == NULL) {
            log_warn("could not mark the user's Drive disconnected: %s", err);
        }
        PQclear(res);
        job_err_set(e, "drive_auth_revoked", false,
                    "Google Drive access was revoked. Reconnect Google Drive in the dashboard and "
                    "retry this image.");
        return -1;
    }
    case DRIVE_AUTH_NO_TOKENS:
        job_err_set(
            e, "drive_auth_revoked", false,
            "Google Drive is not connected. Connect Google Drive in the dashboard and retry "
            "this image.");
        return -1;
    case DRIVE_AUTH_TRANSIENT:
        job_err_set(e, "timeout", true, "Google did not answer when we renewed Drive access (%s).",
                    gerr.message[0] != '\0' ? gerr.message : google_status_name(gerr.status));
        return -1;
    case DRIVE_AUTH_DB:
        job_err_set(e, "processing_error", true,
                    "A temporary database problem stopped this image.");
        return -1;
    }
    job_err_set(e, "processing_error", true, "unexpected token state");
    return -1;
}

/* The error of a Drive call made while reading the original. */
static void download_err(google_status_t st, const google_error_t *g, size_t cap, job_err_t *e)
{
    switch (st) {
    case GOOGLE_ERR_NOT_FOUND:
        job_err_set(e, "drive_file_not_found", false,
                    "The original is no longer in Google Drive (deleted, moved out of reach or "
                    "unshared).");
        return;
    case GOOGLE_ERR_FORBIDDEN:
        job_err_set(e, "drive_forbidden", false,
                    "Google Drive does not let this app read the original (%s).",
                    g->reason[0] != '\0' ? g->reason : "permission denied");
        return;
    case GOOGLE_ERR_TOO_LARGE:
        job_err_set(e, "image_too_large", false, "The original is larger than the %zu MB limit.",
                    cap / (1024 * 1024));
        return;
    case GOOGLE_ERR_INVALID_GRANT:
        job_err_set(e, "drive_auth_revoked", false,
                    "Google Drive access was revoked. Reconnect Google Drive in the dashboard.");
        return;
    case GOOGLE_ERR_NETWORK:
        job_err_set(e, "timeout", true, "Google Drive did not answer in time; we will retry.");
        return;
    default:
        job_err_set(e, "processing_error", google_status_transient(st) || st == GOOGLE_ERR_AUTH,
                    "Google Drive could not send the original (%s, HTTP %ld).",
                    google_status_name(st), g->http_status);
        return;
    }
}

static void upload_err(google_status_t st, const google_error_t *g, const char *what, job_err_t *e)
{
    if (st == GOOGLE_ERR_FORBIDDEN) {
        job_err_set(e, "drive_forbidden", false,
                    "Google Drive does not let this app write to the output folder (%s).",
                    g->reason[0] != '\0' ? g->reason : "permission denied");
        return;
    }
    if (st == GOOGLE_ERR_INVALID_GRANT) {
        job_err_set(e, "drive_auth_revoked", false,
                    "Google Drive access was revoked. Reconnect Google Drive in the dashboard.");
        return;
    }
    bool transient = google_status_transient(st) || st == GOOGLE_ERR_AUTH;
    job_err_set(e, "upload_failed", transient,
                "Saving the result to Google Drive failed (%s: %s%s).", what,
                google_status_name(st), transient ? "; we will retry" : "");
}

/* The output folder: users.output_folder_id when the job comes from the watched
 * folder, else (or when unset) the "Processed" folder inside the job's folder,
 * made if missing. */
static int output_folder(job_runner_t *t, job_t *j, const char *token, char *folder,
                         size_t folderlen, job_err_t *e)
{
    if (drive_id_valid(j->output_folder)) { /* read with the claim */
        snprintf(folder, folderlen, "%s", j->output_folder);
        return 0;
    }
    if (!drive_id_valid(j->drive_folder_id)) {
        job_err_set(e, "upload_failed", false, "The job has no valid Drive folder.");
        return -1;
    }
    char q[512];
    snprintf(q, sizeof(q),
             "'%s' in parents and name = 'Processed' and mimeType = '" DRIVE_FOLDER_MIME
             "' and trashed = false",
             j->drive_folder_id);
    drive_file_list_t list = {0};
    google_error_t gerr = {0};
    google_status_t st = drive_files_list(t->gc, token, q, NULL, 10, NULL, &list, &gerr);
    metric_drive("files.list", st);
    if (st != GOOGLE_OK) {
        upload_err(st, &gerr, "finding the Processed folder", e);
        return -1;
    }
    if (list.n > 0) {
        snprintf(folder, folderlen, "%s", list.files[0].id);
        drive_file_list_free(&list);
        return 0;
    }
    drive_file_list_free(&list);
    drive_file_t f = {0};
    st = drive_create_folder(t->gc, token, "Processed", j->drive_folder_id, NULL, &f, &gerr);
    metric_drive("files.create", st);
    if (st != GOOGLE_OK) {
        upload_err(st, &gerr, "creating the Processed folder", e);
        return -1;
    }
    snprintf(folder, folderlen, "%s", f.id);
    drive_file_free(&f);
    return 0;
}

/* "<stem>_<preset>.<ext>" */
static char *output_name(const char *original, const char *preset, const char *ext)
{
    const char *dot = strrchr(original, '.');
    size_t stem = (dot != NULL && dot != original) ? (size_t)(dot - original) : strlen(original);
    size_t n = stem + strlen(preset) + strlen(ext) + 3;
    char *name = malloc(n);
    if (name != NULL) {
        snprintf(name, n, "%.*s_%s.%s", (int)stem, original, preset, ext);
    }
    return name;
}

/* After this attempt lost the job (the cancel watch stopped it, or the fenced
 * completion answered false): 1 when its user cancelled it during this
 * attempt (status 'cancelled' at this attempt) or the row is gone, so that no
 * attempt will ever record or reuse this attempt's output; 0 when it was taken
 * over (another attempt claimed it and may reuse the output through its
 * ca_job_id, see write_back) or finished otherwise; -1 on a database error
 * (then nothing is deleted). The worker owns jobs (no RLS for it). */
static int cancelled_meanwhile(job_runner_t *t, const job_t *j)
{
    char err[256];
    const char *p[2] = {j->id, j->attempt};
    PGresult *res = pg_exec(t->pg,
                            "SELECT status = 'cancelled' AND attempt = $2::int FROM jobs"
                            " WHERE id = $1::uuid",
                            2, p, err, sizeof(err));
    if (res == NULL) {
        log_warn("reading the job's status after it was stopped failed: %s", err);
        return -1;
    }
    int rc = PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 1 : 0;
    PQclear(res);
    return rc;
}

/* Deletes the output file_id of a job cancelled while its output was being
 * saved (files.delete: gone for good, not trashed; with the drive.file scope
 * the app may delete what it created). A 401 refreshes the token once. Logs
 * the outcome; 0 deleted (or already gone), -1 not. */
static int discard_output(job_runner_t *t, job_t *j, char *token, size_t toklen,
                          const char *file_id)
{
    google_error_t gerr = {0};
    google_status_t st = GOOGLE_OK;
    for (int pass = 0; pass < 2; pass++) {
        st = drive_files_delete(t->gc, token, file_id, &gerr);
        metric_drive("files.delete", st);
        if (st != GOOGLE_ERR_AUTH || pass == 1) {
            break;
        }
        job_err_t e = {0};
        if (access_token(t, j, true, token, toklen, &e) != 0) {
            log_warn("the job was cancelled while its output was saved; deleting the output %s "
                     "from Drive failed: %s",
                     file_id, e.message);
            return -1;
        }
    }
    step(j, "delete");
    if (st != GOOGLE_OK) {
        log_warn("the job was cancelled while its output was saved; deleting the output %s from "
                 "Drive failed (%s, HTTP %ld)",
                 file_id, google_status_name(st), gerr.http_status);
        return -1;
    }
    log_info("the job was cancelled while its output was saved: deleted the output %s from Drive",
             file_id);
    return 0;
}

/* ---- resumable uploads: the session kept for a retry ---- */

/* The session of a job's resumable upload lives in Redis under
 * ca:upload:<job_id> as "<fingerprint> <session URI>", for a little less than
 * Drive keeps a session (about a week). The fingerprint (SHA-256 of the name,
 * type, folder and bytes) makes sure a retry only goes on with a session for
 * exactly the same upload. The URI is a capability: never logged. */
#define UPLOAD_SESSION_TTL_S (6 * 24 * 3600)
#define UPLOAD_KEY_PREFIX "ca:upload:"

typedef struct {
    job_runner_t *t;
    const job_t *j;
    char fp[65];
} upload_ctx_t;

static void upload_fingerprint(const char *name, const char *mime, const char *folder,
                               const void *data, size_t len, char out[65])
{
    size_t hn = strlen(name) + strlen(mime) + strlen(folder) + 3 + 65;
    char *head = malloc(hn);
    uint8_t d[32];
    if (head == NULL) {
        out[0] = '\0';
        return;
    }
    crypto_sha256(data, len, d);
    char hex[65];
    crypto_hex(d, sizeof(d), hex);
    int n = snprintf(head, hn, "%s\n%s\n%s\n%s", name, mime, folder, hex);
    crypto_sha256(head, (size_t)n, d);
    crypto_hex(d, sizeof(d), out);
    free(head);
}

/* The stored session of this upload, or NULL (none, another upload's, Redis
 * down: a new session then, which costs a re-send, nothing else). */
static char *upload_session_load(upload_ctx_t *u)
{
    char err[256];
    if (u->fp[0] == '\0') {
        return NULL;
    }
    redisReply *r =
        redis_command(u->t->redis, err, sizeof(err), "GET " UPLOAD_KEY_PREFIX "%s", u->j->id);
    char *uri = NULL;
    if (r == NULL) {
        log_warn("reading the stored upload session failed: %s", err);
    } else if (r->type == REDIS_REPLY_STRING && r->len > 66 && strncmp(r->str, u->fp, 64) == 0 &&
               r->str[64] == ' ') {
        uri = strdup(r->str + 65);
    }
    freeReplyObject(r);
    return uri;
}

static void upload_session_store(void *arg, const char *uri)
{
    upload_ctx_t *u = arg;
    char err[256];
    if (u->fp[0] == '\0') {
        return;
    }
    char *val = NULL;
    if (asprintf(&val, "%s %s", u->fp, uri) < 0) {
        return;
    }
    redisReply *r =
        redis_command(u->t->redis, err, sizeof(err), "SET " UPLOAD_KEY_PREFIX "%s %s EX %d",
                      u->j->id, val, UPLOAD_SESSION_TTL_S);
    if (r == NULL) {
        log_warn("storing the upload session failed (a retry starts a new one): %s", err);
    }
    freeReplyObject(r);
    crypto_free_secret(val);
}

static void upload_session_forget(job_runner_t *t, const job_t *j)
{
    char err[256];
    redisReply *r = redis_command(t->redis, err, sizeof(err), "DEL " UPLOAD_KEY_PREFIX "%s", j->id);
    if (r == NULL) {
        log_debug("forgetting the upload session failed (it expires): %s", err);
    }
    freeReplyObject(r);
}

/* Outputs over DRIVE_MULTIPART_MAX_BYTES: Drive's resumable protocol, going on
 * with the session an earlier attempt of this job stored, when it is still
 * good. */
static google_status_t upload_resumable(job_runner_t *t, const job_t *j, const char *token,
                                        const char *name, const char *mime, const char *folder,
                                        const cJSON *props, const void *data, size_t len,
                                        drive_file_t *f, google_error_t *gerr)
{
    upload_ctx_t u = {.t = t, .j = j};
    upload_fingerprint(name, mime != NULL ? mime : "", folder, data, len, u.fp);
    drive_upload_session_t sess = {.uri = upload_session_load(&u)};
    bool had = sess.uri != NULL;
    google_status_t st = drive_upload_resumable(t->gc, token, name, mime, folder, props, data, len,
                                                0, &sess, upload_session_store, &u, f, gerr);
    log_info("resumable upload of %zu bytes: %s%s%s, %d resume(s)", len, google_status_name(st),
             had ? (sess.reused ? ", went on with the stored session" : ", stored session unusable")
                 : "",
             sess.restarted ? ", session expired: started again" : "", sess.resumes);
    if (st == GOOGLE_OK || sess.uri == NULL) {
        upload_session_forget(t, j); /* done, or Drive said the session is gone */
    }
    drive_upload_session_free(&sess);
    return st;
}

static int write_back(job_runner_t *t, job_t *j, char *token, size_t toklen, const void *data,
                      size_t len, const char *ext, const char *mime, job_err_t *e)
{
    google_error_t gerr = {0};
    google_status_t st = GOOGLE_OK;
    drive_file_t f = {0};
    bool have = false;

    /* 1. an upload of an earlier attempt of this job? Only a job claimed before
     * can have one: `attempt` counts every claim (a crashed one included, and a
     * user's retry keeps it), so the first attempt skips this files.list. */
    char q[256];
    snprintf(q, sizeof(q),
             "appProperties has { key='ca_job_id' and value='%s' } and trashed = false", j->id);
    for (int pass = 0; pass < 2 && atoi(j->attempt) > 1; pass++) {
        drive_file_list_t list = {0};
        st = drive_files_list(t->gc, token, q, NULL, 10, NULL, &list, &gerr);
        metric_drive("files.list", st);
        if (st == GOOGLE_OK && list.n > 0) {
            f = list.files[0];
            memset(&list.files[0], 0, sizeof(list.files[0]));
            have = true;
        }
        drive_file_list_free(&list);
        if (st != GOOGLE_ERR_AUTH || pass == 1) {
            break;
        }
        if (access_token(t, j, true, token, toklen, e) != 0) {
            return -1;
        }
    }
    if (atoi(j->attempt) > 1) {
        step(j, "list");
    }
    if (st != GOOGLE_OK) {
        upload_err(st, &gerr, "looking for an earlier upload", e);
        return -1;
    }
    if (have) {
        log_info("reusing the output %s uploaded by an earlier attempt", f.id);
    } else {
        char folder[256];
        if (output_folder(t, j, token, folder, sizeof(folder), e) != 0) {
            return -1;
        }
        step(j, "folder");
        char *name = output_name(j->drive_file_name, j->preset_name, ext);
        cJSON *props = cJSON_CreateObject();
        if (name == NULL || props == NULL) {
            free(name);
            cJSON_Delete(props);
            job_err_set(e, "processing_error", true, "out of memory");
            return -1;
        }
        cJSON_AddStringToObject(props, "ca_job_id", j->id);
        for (int pass = 0; pass < 2; pass++) {
            if (len > DRIVE_MULTIPART_MAX_BYTES) {
                st = upload_resumable(t, j, token, name, mime, folder, props, data, len, &f, &gerr);
            } else {
                st = drive_upload(t->gc, token, name, mime, folder, props, data, len, &f, &gerr);
            }
            metric_drive(
                len > DRIVE_MULTIPART_MAX_BYTES ? "files.upload_resumable" : "files.upload", st);
            if (st != GOOGLE_ERR_AUTH || pass == 1 ||
                access_token(t, j, true, token, toklen, e) != 0) {
                break;
            }
        }
        if (e->code != NULL) { /* the token refresh failed */
            free(name);
            cJSON_Delete(props);
            return -1;
        }
        free(name);
        cJSON_Delete(props);
        step(j, "upload");
        if (st != GOOGLE_OK) {
            upload_err(st, &gerr, "upload", e);
            return -1;
        }
    }

    /* cancelled while the upload was in flight: no sharing, and the file goes
     * again at once (taken over: the other attempt reuses it, so it stays) */
    if (stopped(t, e)) {
        if (cancelled_meanwhile(t, j) == 1) {
            discard_output(t, j, token, toklen, f.id);
        }
        drive_file_free(&f);
        return -1;
    }

    /* 2. share: anyone with the link can view, only when the user's setting
     * (users.share_outputs, read with the claim) says so; private outputs get
     * no permission (the e-mail then carries no link, see email.c) */
    if (j->share_link) {
        st = drive_share_anyone_reader(t->gc, token, f.id, &gerr);
        metric_drive("permissions.create", st);
        step(j, "share");
        if (st != GOOGLE_OK) {
            upload_err(st, &gerr, "sharing", e);
            drive_file_free(&f);
            return -1;
        }
    }
    j->output_file_id = strdup(f.id);
    j->output_name = strdup(f.name != NULL ? f.name : "");
    j->output_url = strdup(f.web_view_link != NULL ? f.web_view_link : "");
    drive_file_free(&f);
    if (j->output_file_id == NULL || j->output_name == NULL || j->output_url == NULL) {
        job_err_set(e, "processing_error", true, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- the pipeline ---- */

/* The usage reservation made with the claim (see claim()). A refused one
 * ('blocked') never gets here: the claim put the job to wait for quota. */
static int reserve(job_t *j, job_err_t *e)
{
    if (j->reservation == NULL) {
        log_warn("usage reservation: no outcome");
        job_err_set(e, "processing_error", true,
                    "A temporary database problem stopped this image.");
        return -1;
    }
    j->reserved = true;
    return 0;
}

/* The preset's graph, read with the claim (see claim()). */
static cJSON *load_preset(job_t *j, job_err_t *e)
{
    if (j->workflow == NULL) {
        job_err_set(
            e, "preset_not_found", false,
            "The preset \"%s\" does not exist or is no longer available. Pick another preset "
            "and retry.",
            j->preset_name);
        return NULL;
    }
    cJSON *graph = cJSON_Parse(j->workflow);
    if (graph == NULL) {
        job_err_set(e, "processing_error", false, "The preset's workflow is not valid JSON.");
    }
    return graph;
}

typedef struct {
    job_runner_t *t;
    job_t *j;
} prompt_arg_t;

static void store_prompt_id(void *arg, const char *prompt_id)
{
    prompt_arg_t *a = arg;
    char err[256];
    const char *p[3] = {a->j->id, a->j->attempt, prompt_id};
    if (pg_exec_cmd(a->t->pg,
                    "UPDATE jobs SET comfyui_prompt_id = $3 WHERE id = $1::uuid"
                    " AND attempt = $2::int AND status = 'processing'",
                    3, p, err, sizeof(err)) != 0) {
        log_warn("could not store the ComfyUI prompt id: %s", err);
    }
}

static int run_comfyui(job_runner_t *t, job_t *j, const cJSON *graph, const void *input, size_t len,
                       comfy_result_t *out, job_err_t *e)
{
    char upload_name[128];
    const char *dot = strrchr(j->drive_file_name, '.');
    char ext[8] = "jpg";
    if (dot != NULL && strlen(dot + 1) < sizeof(ext) && drive_id_valid(dot + 1)) {
        snprintf(ext, sizeof(ext), "%s", dot + 1);
    }
    snprintf(upload_name, sizeof(upload_name), "ca_%s.%s", j->id, ext);
    prompt_arg_t pa = {t, j};
    comfy_opts_t o = {.http = t->http,
                      .base_url = t->set->comfyui_url,
                      .client_id = t->worker_id,
                      .timeout_s = t->set->comfyui_timeout_s,
                      /* held in memory: not 4 x MAX_IMAGE_BYTES (800 MiB) since the
                       * original goes to disk; 256 MiB is a 16K x 16K PNG */
                      .max_output = t->set->max_image_bytes * 4 < COMFY_MAX_OUTPUT_BYTES
                                        ? t->set->max_image_bytes * 4
                                        : COMFY_MAX_OUTPUT_BYTES,
                      .stop = t->set->stop,
                      .cancel = &t->stop,
                      .on_prompt = store_prompt_id,
                      .on_prompt_arg = &pa};
    char msg[400];
    comfy_status_t st =
        comfy_run(&o, graph, upload_name, input, len, j->prompt_id, out, msg, sizeof(msg));
    switch (st) {
    case COMFY_OK:
        return 0;
    case COMFY_INVALID:
    case COMFY_NODE_ERROR:
        job_err_set(e, "processing_error", false, "%s", msg);
        return -1;
    case COMFY_TIMEOUT:
        job_err_set(e, "timeout", true, "%s", msg);
        return -1;
    case COMFY_TOO_LARGE:
        job_err_set(e, "image_too_large", false, "The processed image is too large to save.");
        return -1;
    case COMFY_UNAVAILABLE:
    case COMFY_PROTOCOL:
        job_err_set(e, "comfyui_unavailable", true, "%s", msg);
        return -1;
    case COMFY_CANCELLED:
        job_err_set(e, JOB_STOPPED, false, "%s", msg);
        return -1;
    }
    return -1;
}

/* The job error of an input the front door refused (cpu_exec_open's
 * statuses): returns -1 with e set, else 0. Neither is retried. */
static int input_err(cpu_exec_status_t st, const char *msg, job_err_t *e)
{
    if (st == CPU_EXEC_UNSUPPORTED_IMAGE) {
        job_err_set(e, "unsupported_image", false,
                    "This file is not an image we can read (JPEG, PNG, WebP, TIFF or HEIC): %s",
                    msg);
        return -1;
    }
    if (st == CPU_EXEC_TOO_LARGE) {
        const char *reason = strncmp(msg, "image_too_large: ", 17) == 0 ? msg + 17 : msg;
        job_err_set(e, "image_too_large", false, "This image is too large to process: %s.", reason);
        return -1;
    }
    return 0;
}

static int pipeline(job_runner_t *t, job_t *j, job_err_t *e)
{
    int rc = -1;
    cJSON *graph = NULL;
    cJSON *verr = NULL;
    infile_t in = {.fd = -1};
    const void *input = NULL;
    size_t input_len = 0;
    cpu_exec_job_t cj = {0};
    comfy_result_t cr = {0};
    thumbs_task_t *thumbs = NULL;
    char token[4096];

    if (j->user_id[0] == '\0') {
        job_err_set(e, "processing_error", false, "The job has no user.");
        goto out;
    }
    if (reserve(j, e) != 0) {
        goto out;
    }
    step(j, "reserve");
    graph = load_preset(j, e);
    if (graph == NULL) {
        goto out;
    }
    graph_status_t gs = graph_validate(graph, cpu_exec_registry(), &verr);
    bool use_comfy = false;
    if (gs == GRAPH_UNKNOWN_CLASS) {
        if (t->set->comfyui_url == NULL) {
            job_err_set(e, "comfyui_unavailable", false,
                        "The preset \"%s\" needs the GPU image server, which is not available.",
                        j->preset_name);
            goto out;
        }
        use_comfy = true;
    } else if (gs == GRAPH_INVALID) {
        char *summary = graph_error_summary(verr);
        job_err_set(e, "processing_error", false, "The preset \"%s\" is not valid: %s",
                    j->preset_name, summary != NULL ? summary : "validation failed");
        free(summary);
        goto out;
    }
    step(j, "preset");

    if (access_token(t, j, false, token, sizeof(token), e) != 0) {
        goto out;
    }
    step(j, "token");
    if (!drive_id_valid(j->drive_file_id)) {
        job_err_set(e, "drive_file_not_found", false, "The job's Drive file id is not valid.");
        goto out;
    }
    google_error_t gerr = {0};
    google_status_t st = GOOGLE_OK;
    for (int pass = 0; pass < 2; pass++) {
        /* to an unnamed temporary file, mapped: never the whole body in the heap */
        st = infile_download(t->gc, token, j->drive_file_id, t->set->max_image_bytes, &in, &gerr);
        metric_drive("files.download", st);
        if (st != GOOGLE_ERR_AUTH || pass == 1) {
            break;
        }
        if (access_token(t, j, true, token, sizeof(token), e) != 0) {
            goto out;
        }
    }
    step(j, "download");
    if (st != GOOGLE_OK) {
        download_err(st, &gerr, t->set->max_image_bytes, e);
        goto out;
    }
    input = in.data;
    input_len = in.len;
    /* The front door, for ComfyUI too: a supported format by its magic bytes,
     * within the pixel limit and memory budget, from the header alone. */
    char ferr[256] = "";
    cpu_exec_status_t fs = cpu_exec_open(input, input_len, VIPS_ACCESS_SEQUENTIAL,
                                         t->set->max_image_pixels, NULL, ferr, sizeof(ferr));
    if (input_err(fs, ferr, e) != 0) {
        goto out;
    }

    const void *out_data;
    size_t out_len;
    const char *ext;
    const char *mime;
    if (stopped(t, e)) {
        goto out;
    }
    if (use_comfy) {
        if (run_comfyui(t, j, graph, input, input_len, &cr, e) != 0) {
            goto out;
        }
        out_data = cr.output;
        out_len = cr.output_len;
        ext = cr.ext;
        mime = cr.mime;
    } else {
        char xerr[256] = "";
        cj.input = input;
        cj.input_len = input_len;
        cj.max_pixels = t->set->max_image_pixels;
        /* the wall-time budget (JOB_MAX_SECONDS) and the cancel watch: both
         * stop the pipeline mid-computation */
        cj.deadline_ms = now_mono_ms() + (int64_t)t->set->job_max_s * 1000;
        cj.cancel = &t->stop;
        cpu_exec_status_t xs = cpu_exec_run(graph, &cj, xerr, sizeof(xerr));
        if (input_err(xs, xerr, e) != 0) {
            goto out;
        }
        if (xs == CPU_EXEC_CANCELLED) {
            job_err_set(e, JOB_STOPPED, false, "The job was cancelled.");
            goto out;
        }
        if (xs == CPU_EXEC_TIMEOUT) {
            /* permanent: the same graph on the same image would run as long */
            job_err_set(e, "timeout", false,
                        "Processing this image took longer than the %d s limit and was stopped. "
                        "Use a lighter preset or a smaller image.",
                        t->set->job_max_s);
            goto out;
        }
        if (xs != CPU_EXEC_OK) {
            job_err_set(e, "processing_error", false, "Processing failed: %s", xerr);
            goto out;
        }
        out_data = cj.output;
        out_len = cj.output_len;
        ext = cj.ext;
        mime = cj.mime;
    }
    step(j, "exec");
    /* the dashboard's thumbnails, made on a thread of their own while the
     * output is saved (input and output stay until it is joined, at out:) */
    if (t->set->thumb_ttl_s > 0) {
        thumbs = thumbs_start(input, input_len, out_data, out_len, t->set->max_image_pixels);
    }

    /* the last look before anything reaches the user's Drive */
    if (stopped(t, e)) {
        goto out;
    }
    if (write_back(t, j, token, sizeof(token), out_data, out_len, ext, mime, e) != 0) {
        goto out;
    }
    rc = 0;
out:
    if (thumbs != NULL) {
        if (thumbs_finish(thumbs, rc == 0 ? &j->thumbs : NULL) != 0 && rc == 0) {
            log_debug("no thumbnails for this job");
        }
        step(j, "thumbs");
    }
    explicit_bzero(token, sizeof(token));
    infile_close(&in); /* the thumbnails' thread is joined: nothing reads it now */
    cpu_exec_job_free(&cj);
    comfy_result_free(&cr);
    cJSON_Delete(graph);
    cJSON_Delete(verr);
    return rc;
}

/* Acks id. With `next` (and no drain under way), the ack also takes the next
 * id when one is waiting (queue_ack_take: one round trip between two jobs):
 * returns 1 with next filled, else 0. */
static int ack(job_runner_t *t, const char *id, char *next, size_t nextlen)
{
    char err[256];
    if (next != NULL && atomic_load(t->set->draining) == 0) {
        int rc = queue_ack_take(t->redis, t->worker_id, id, next, nextlen, err, sizeof(err));
        if (rc >= 0) {
            return rc;
        }
        log_debug("ack and take: %s", err);
    }
    if (queue_ack(t->redis, t->worker_id, id, err, sizeof(err)) != 0) {
        log_warn("ack failed: %s", err);
    }
    return 0;
}

static void delay(job_runner_t *t, const char *id, int64_t ms)
{
    char err[256];
    if (queue_delay_held(t->redis, t->worker_id, id, now_wall_ms() + ms, err, sizeof(err)) < 0) {
        log_warn("delay failed (the re-push task will find the job): %s", err);
    }
}

int job_process(job_runner_t *t, const char *id, char *next, size_t nextlen)
{
    job_t j = {0};
    int got = 0;
    if (!uuid_is_valid(id)) {
        log_warn("dropping a queue item that is not a job id");
        return ack(t, id, next, nextlen);
    }
    log_context_set("job_id", id);
    j.step_us = now_mono_us();
    int c = claim(t, id, &j);
    if (c < 0) {
        /* PostgreSQL trouble: look again later rather than lose the id. */
        delay(t, id, 5000);
        got = ack(t, id, next, nextlen);
        goto out;
    }
    if (c == 0) {
        log_debug("job not claimable (done, cancelled or held by a live worker); skipped");
        metric_add(m_jobs, 1, "skipped", "");
        got = ack(t, id, next, nextlen);
        goto out;
    }
    if (waits_for_quota(&j)) {
        /* The claim put it to wait in its own transaction (queued, waiting
         * for quota, nothing counted, no e-mail): only the queue item goes.
         * jobs_quota_release (worker_tasks.c) pushes it again when the plan
         * has room. */
        log_context_set("user_id", j.user_id);
        log_info("waiting for quota (plan limit %s this period)", j.reservation + 8);
        metric_add(m_jobs, 1, "waiting_for_quota", "");
        got = ack(t, id, next, nextlen);
        goto out;
    }
    j.started_ms = now_mono_ms();
    step(&j, "claim");
    atomic_store(&t->stop, 0);
    pthread_mutex_lock(&t->lock);
    snprintf(t->job_id, sizeof(t->job_id), "%s", id);
    t->attempt = atoi(j.attempt);
    t->handed_back = false;
    pthread_mutex_unlock(&t->lock);
    log_context_set("user_id", j.user_id);
    log_info("claimed (attempt %s, preset %s)", j.attempt, j.preset_name);

    job_err_t e = {0};
    if (pipeline(t, &j, &e) == 0) {
        bool fenced = false;
        int crc = complete(t, &j, &fenced);
        step(&j, "complete");
        if (crc != 0) {
            delay(t, id, 5000);
        } else if (fenced && cancelled_meanwhile(t, &j) == 1) {
            /* cancelled after the last look at the flag (while sharing, or
             * before the cancel watch saw it): the output goes again */
            char token[4096];
            job_err_t te = {0};
            if (access_token(t, &j, false, token, sizeof(token), &te) == 0) {
                discard_output(t, &j, token, sizeof(token), j.output_file_id);
            } else {
                log_warn("the job was cancelled while its output was saved; no Drive access to "
                         "delete the output %s: %s",
                         j.output_file_id, te.message);
            }
            explicit_bzero(token, sizeof(token));
            metric_add(m_jobs, 1, "cancelled", "");
        } else if (fenced) {
            log_warn("completed, but the job was taken over or cancelled meanwhile");
            metric_add(m_jobs, 1, "fenced", "");
        } else {
            double s = (double)(now_mono_ms() - j.started_ms) / 1000.0;
            metric_observe(m_seconds, s, j.preset_name);
            metric_add(m_jobs, 1, "completed", "");
            log_info("completed in %.3f s: %s", s, j.output_name);
            if (j.thumbs.before != NULL) {
                (void)thumbs_store(t->redis, id, j.user_id, &j.thumbs, t->set->thumb_ttl_s);
            }
        }
    } else if (e.code == JOB_STOPPED) {
        /* cancelled (jobs_cancel made it so and released the reservation) or
         * taken over: nothing uploaded, nothing to record */
        log_info("stopped: the job was cancelled or taken over while it ran");
        metric_add(m_jobs, 1, "cancelled", "");
    } else {
        int n = 0;
        const char *status = record_failure(t, &j, &e, &n);
        if (status == NULL) {
            delay(t, id, 5000);
        } else if (status[0] == '\0') {
            log_warn("failed (%s), but the job was taken over or cancelled meanwhile", e.code);
            metric_add(m_jobs, 1, "fenced", "");
        } else if (strcmp(status, "queued") == 0) {
            int64_t wait = backoff_delay_ms(n, t->set->retry_base_ms, t->set->retry_max_ms);
            log_warn("retry %d in %" PRId64 " ms: %s: %s", n, wait, e.code, e.message);
            metric_add(m_retries, 1, e.code);
            delay(t, id, wait);
        } else {
            log_info("failed: %s: %s", e.code, e.message);
            metric_add(m_jobs, 1, "failed", e.code);
        }
    }
    got = ack(t, id, next, nextlen);
    step(&j, "ack");
    log_debug("steps (ms): %s", j.steps);
    pthread_mutex_lock(&t->lock);
    t->job_id[0] = '\0';
    t->attempt = 0;
    pthread_mutex_unlock(&t->lock);
out:
    job_free(&j);
    log_context_set("job_id", NULL);
    log_context_set("user_id", NULL);
    return got;
}
