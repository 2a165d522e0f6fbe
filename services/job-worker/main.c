/*
 * job-worker — takes job ids from Redis, downloads, runs the preset, uploads to
 * Processed, records the result; sends notification e-mail. Owns jobs and
 * jobs_archive.
 *
 * Boots, migrates its slice, answers /healthz, /readyz and /metrics, archives
 * old jobs on `cleanup` and every day at RETENTION_AT (the daemon's retention
 * thread, one replica), and processes jobs (worker.c, job.c, worker_tasks.c;
 * see docs/job-worker.md).
 */
#include "config_vars.h"
#include "daemon.h"
#include "log.h"
#include "render.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>

extern const migration_file_t job_worker_migrations[];
extern const size_t job_worker_migrations_count;

static const config_var_t worker_vars[] = {
    CONFIG_VARS_ENCRYPTION,
    CONFIG_VARS_GOOGLE_CLIENT,
    CONFIG_VAR_GOOGLE_TOKEN_URL("OAuth token endpoint (refresh)"),
    CONFIG_VAR_DRIVE_API_URL,
    {"DRIVE_UPLOAD_URL", CFG_URL, "https://www.googleapis.com/upload/drive/v3", false, false, 0, 0,
     "Drive v3 upload base URL"},
    {"COMFYUI_URL", CFG_URL, NULL, false, false, 0, 0,
     "ComfyUI server; unset: only presets the built-in executor runs"},
    {"SMTP_URL", CFG_URL, NULL, false, true, 0, 0,
     "smtp://host:port for notification e-mail; unset: none"},
    {"MAIL_FROM", CFG_STRING, "Creator Automation <no-reply@localhost>", false, false, 0, 0,
     "From: of notification e-mail"},
    {"PUBLIC_URL", CFG_URL, "http://localhost:8080", false, false, 0, 0,
     "the gateway's public base URL: links in notice e-mails"},
    {"WORKER_CONCURRENCY", CFG_INT, NULL, false, false, 1, 256,
     "jobs at a time (default: the CPUs the cgroup allows, lowered to fit WORKER_JOB_MEMORY_MB "
     "a job in the cgroup memory limit)"},
    {"WORKER_JOB_MEMORY_MB", CFG_INT, "200", false, false, 16, 65536,
     "peak memory of one job, for the default WORKER_CONCURRENCY under a memory limit"},
    {"MAX_IMAGE_BYTES", CFG_INT, "209715200", false, false, 1024, 1073741824L,
     "largest original accepted (bytes); streamed to a temporary file in TMPDIR, not memory"},
    {"MAX_IMAGE_PIXELS", CFG_INT, "100000000", false, false, 1, 1000000000L,
     "largest original accepted (width x height, read from the header before decoding); "
     "decoded size is capped at 8 bytes a pixel of it"},
    {"WORKER_LEASE_SECONDS", CFG_INT, "60", false, false, 5, 3600,
     "a claimed job's lease; extended every 5 s while it runs, requeued when it expires"},
    {"WORKER_TIER_WEIGHTS", CFG_STRING, "studio=6,creator=3,free=1", false, false, 0, 0,
     "fair queue: share of takes per tier while all have work (docs/common/queue.md)"},
    {"WORKER_USER_INFLIGHT_MAX", CFG_INT, "4", false, false, 1, 10000,
     "fair queue: jobs of one user held by the whole worker pool at once"},
    {"WORKER_REPUSH_SECONDS", CFG_INT, "30", false, false, 1, 3600,
     "queued jobs untouched this long and missing from Redis are pushed again"},
    {"WORKER_QUOTA_RELEASE_MS", CFG_INT, "5000", false, false, 100, 3600000,
     "how often jobs waiting for quota are released when their user's plan has room again (a "
     "plan upgrade, a new period)"},
    {"WORKER_RETRY_BASE_MS", CFG_INT, "2000", false, false, 10, 600000,
     "first retry delay of a failed job; doubles per retry up to WORKER_RETRY_MAX_MS (equal jitter)"},
    {"WORKER_RETRY_MAX_MS", CFG_INT, "300000", false, false, 1000, 3600000,
     "longest retry delay of a failed job"},
    {"WORKER_DRAIN_SECONDS", CFG_INT, "20", false, false, 1, 24,
     "on SIGTERM, jobs in flight get this long to finish, then are handed back to the queue"},
    {"JOB_MAX_SECONDS", CFG_INT, "120", false, false, 1, 3600,
     "wall-time budget of a job's CPU pipeline; a job over it is stopped mid-pipeline and fails "
     "with timeout (not retried)"},
    {"COMFYUI_TIMEOUT_SECONDS", CFG_INT, "600", false, false, 1, 86400,
     "a ComfyUI prompt taking longer fails with timeout (retried)"},
    {"WORKER_PREVIEW_CONCURRENCY", CFG_INT, "1", false, false, 0, 16,
     "preview lane threads (ca:previews; 0: no previews from this worker)"},
    {"WORKER_THUMBNAIL_TTL_SECONDS", CFG_INT, "604800", false, false, 0, 7776000,
     "lifetime of a completed job's before/after thumbnails in Redis (0: none made)"},
    {"EMAIL_DIGEST_WAIT_SECONDS", CFG_INT, "300", false, false, 0, 86400,
     "a digest waits for the user's queued jobs at most this long"},
};

/* The columns retention copies, by name (jobs_archive is LIKE jobs plus
 * archived_at, but a column added to both later sits after archived_at there:
 * a positional copy would shift it). Add new jobs columns here too. */
#define ARCHIVE_COLUMNS                                                                            \
    "id, user_id, status, drive_file_id, drive_file_name, drive_folder_id, file_size_bytes, "      \
    "file_mime_type, preset_name, started_at, completed_at, processing_time_ms, "                  \
    "output_drive_file_id, output_file_name, output_url, error_code, error_message, "              \
    "retry_count, max_retries, comfyui_prompt_id, worker_id, created_at, updated_at, attempt, "    \
    "lease_expires_at, quota_waiting_since"

/* Retention (seed schema): jobs older than 90 days move to jobs_archive, in one
 * statement per batch so a job is never in both tables or in neither. Jobs still
 * queued or processing are left alone. Run by `cleanup` and daily by serve's
 * retention thread (common/daemon.c); GET /api/jobs still lists them. */
static int worker_cleanup(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen)
{
    (void)d;
    long total = 0;
    for (;;) {
        PGresult *res =
            pg_exec(pg,
                    "WITH moved AS ("
                    "  DELETE FROM jobs WHERE id IN ("
                    "    SELECT id FROM jobs WHERE created_at < now() - interval '90 days'"
                    "      AND status IN ('completed', 'failed', 'cancelled') LIMIT 5000)"
                    "  RETURNING " ARCHIVE_COLUMNS ") "
                    "INSERT INTO jobs_archive (" ARCHIVE_COLUMNS ", archived_at)"
                    " SELECT " ARCHIVE_COLUMNS ", now() FROM moved",
                    0, NULL, err, errlen);
        if (res == NULL) {
            return -1;
        }
        long n = strtol(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        total += n;
        if (n == 0) {
            break;
        }
    }
    log_info("cleanup: %ld job(s) older than 90 days archived", total);
    return 0;
}

static const service_t job_worker_service = {
    .name = "job-worker",
    .default_port = 9103,
    .vars = worker_vars,
    .nvars = sizeof(worker_vars) / sizeof(worker_vars[0]),
    .migrations = job_worker_migrations,
    .nmigrations = &job_worker_migrations_count,
    .start = worker_start,
    .drain = worker_drain,
    .drained = worker_drained,
    .stop = worker_stop,
    .cleanup = worker_cleanup,
    .command = render_command,
    .command_help = "  render GRAPH_OR_PRESET INPUT OUTPUT  run the CPU executor on local files\n",
};

int main(int argc, char **argv)
{
    return daemon_main(&job_worker_service, argc, argv);
}
