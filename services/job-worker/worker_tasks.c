/*
 * worker_tasks — the job-worker's periodic tasks on the daemon's maintenance
 * thread (see worker_tasks.h).
 */
#include "worker_tasks.h"

#include "email.h"
#include "log.h"
#include "metrics.h"
#include "now.h"
#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows one run of a task takes (written into the statements). */
#define REPUSH_BATCH 500
#define STUCK_BATCH 100
#define EMAIL_BATCH 20
#define TEXT(n) TEXT_(n)
#define TEXT_(n) #n

static metric_t *m_depth;
static metric_t *m_jobs_now;
static metric_t *m_recovered;

/* The tier of the user in column `user`, for the fair queue (no subscription: free). */
#define TIER_OF_SQL(user)                                                                          \
    "COALESCE((SELECT s.tier FROM subscriptions s WHERE s.user_id = " user                         \
    " ORDER BY s.created_at DESC LIMIT 1), 'free')"

static void task_promote(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    if (redis == NULL) {
        return;
    }
    char err[256];
    int moved = 0;
    if (queue_promote_due(redis, now_wall_ms(), 1000, &moved, err, sizeof(err)) != 0) {
        log_debug("promote: %s", err);
    } else if (moved > 0) {
        log_debug("promote: %d retry(ies) due", moved);
    }
}

static void task_reap(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    if (redis == NULL) {
        return;
    }
    char err[256];
    int returned = 0;
    if (queue_reap(redis, &returned, err, sizeof(err)) != 0) {
        log_debug("reap: %s", err);
    } else if (returned > 0) {
        log_info("reap: %d id(s) of dead workers back in the queue", returned);
        metric_add(m_recovered, returned, "reaped");
    }
}

/* Re-pushes queued jobs untouched for repush_s that wait nowhere in the queue
 * (user lists, ca:jobs, the delayed set) (Redis restarted empty, or a pusher died after its
 * commit). */
static int repush(const worker_tasks_config_t *cfg, pg_conn_t *pg, redis_conn_t *redis, int *pushed)
{
    char err[256];
    char age[16];
    snprintf(age, sizeof(age), "%d", cfg->repush_s);
    const char *p[1] = {age};
    *pushed = 0;
    PGresult *res = pg_exec(
        pg,
        "SELECT j.id::text, j.user_id::text, " TIER_OF_SQL(
            "j.user_id") " FROM jobs j WHERE j.status = 'queued'"
                         " AND j.updated_at < timezone('UTC', now()) - make_interval(secs => $1::int)"
                         " ORDER BY j.updated_at LIMIT " TEXT(REPUSH_BATCH),
        1, p, err, sizeof(err));
    if (res == NULL) {
        log_debug("re-push: %s", err);
        return -1;
    }
    int n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        return 0;
    }
    const char **cols = calloc((size_t)n * 3, sizeof(char *));
    if (cols == NULL) {
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        cols[i] = PQgetvalue(res, i, 0);
        cols[n + i] = PQgetvalue(res, i, 1);
        cols[2 * n + i] = PQgetvalue(res, i, 2);
    }
    int rc = queue_repush_missing(redis, n, cols, cols + n, cols + 2 * n, pushed, err, sizeof(err));
    if (rc != 0) {
        log_debug("re-push: %s", err);
    }
    free(cols);
    PQclear(res);
    return rc;
}

static void task_repush(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    const worker_tasks_config_t *cfg = arg;
    if (pg == NULL || redis == NULL) {
        return;
    }
    int pushed = 0;
    if (repush(cfg, pg, redis, &pushed) == 0 && pushed > 0) {
        log_info("re-push: %d queued job(s) missing from Redis pushed again", pushed);
        metric_add(m_recovered, pushed, "repushed");
    }
}

/* Jobs in processing whose lease expired (their worker died or hung): back to
 * queued with one more retry counted, or failed once retries are used up. */
static void task_stuck(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    if (pg == NULL) {
        return;
    }
    char err[256];
    if (pg_begin(pg, err, sizeof(err)) != 0) {
        return;
    }
    PGresult *res = pg_exec(
        pg,
        "WITH stuck AS (SELECT id FROM jobs WHERE status = 'processing'"
        "   AND lease_expires_at < timezone('UTC', now())"
        "   ORDER BY lease_expires_at LIMIT " TEXT(
            STUCK_BATCH) " FOR UPDATE SKIP LOCKED),"
                         " upd AS (UPDATE jobs j SET"
                         "   status = CASE WHEN COALESCE(j.retry_count, 0) < COALESCE(j.max_retries, 3)"
                         "     THEN 'queued' ELSE 'failed' END,"
                         "   error_code = CASE WHEN COALESCE(j.retry_count, 0) < COALESCE(j.max_retries, 3)"
                         "     THEN j.error_code ELSE 'processing_error' END,"
                         "   error_message = CASE WHEN COALESCE(j.retry_count, 0) < COALESCE(j.max_retries, 3)"
                         "     THEN j.error_message ELSE 'Processing this image stopped unexpectedly several"
                         " times; it may be too large or damaged.' END,"
                         "   completed_at = CASE WHEN COALESCE(j.retry_count, 0) < COALESCE(j.max_retries, 3)"
                         "     THEN NULL ELSE timezone('UTC', now()) END,"
                         "   retry_count = CASE WHEN COALESCE(j.retry_count, 0) < COALESCE(j.max_retries, 3)"
                         "     THEN COALESCE(j.retry_count, 0) + 1 ELSE j.retry_count END,"
                         "   lease_expires_at = NULL"
                         "   FROM stuck WHERE j.id = stuck.id RETURNING j.id, j.status, j.user_id)"
                         " SELECT id::text, status, CASE WHEN status = 'failed'"
                         "   THEN billing_release_usage(id, true) END, user_id::text, " TIER_OF_SQL(
                             "upd.user_id") " FROM upd",
        0, NULL, err, sizeof(err));
    if (res == NULL || pg_commit(pg, err, sizeof(err)) != 0) {
        PQclear(res);
        pg_rollback(pg);
        log_debug("lease requeue: %s", err);
        return;
    }
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(res, i, 0);
        if (strcmp(PQgetvalue(res, i, 1), "queued") == 0) {
            if (redis == NULL || queue_push_user(redis, id, PQgetvalue(res, i, 3),
                                                 PQgetvalue(res, i, 4), err, sizeof(err)) != 0) {
                log_warn("lease requeue: push of %s failed (the re-push task will do it)", id);
            }
            log_info("job %s: lease expired; back in the queue", id);
            metric_add(m_recovered, 1, "lease_expired");
        } else {
            log_warn("job %s: lease expired too often; failed", id);
        }
    }
    PQclear(res);
}

static void task_gauges(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    if (redis != NULL) {
        long ready = queue_depth(redis);
        long delayed = queue_delayed_count(redis);
        if (ready >= 0) {
            metric_set(m_depth, (double)ready, "ready");
        }
        if (delayed >= 0) {
            metric_set(m_depth, (double)delayed, "delayed");
        }
    }
    if (pg != NULL) {
        char err[256];
        PGresult *res = pg_exec(pg,
                                "SELECT s, (SELECT count(*) FROM jobs WHERE status = s)"
                                " FROM unnest(ARRAY['queued', 'processing']) AS s",
                                0, NULL, err, sizeof(err));
        for (int i = 0; res != NULL && i < PQntuples(res); i++) {
            metric_set(m_jobs_now, atof(PQgetvalue(res, i, 1)), PQgetvalue(res, i, 0));
        }
        PQclear(res);
    }
}

static void task_email(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    const worker_tasks_config_t *cfg = arg;
    if (pg == NULL) {
        return;
    }
    email_send_due(pg, cfg->smtp_url, cfg->mail_from, cfg->digest_wait_s, EMAIL_BATCH);
    email_send_notices(pg, cfg->smtp_url, cfg->mail_from, cfg->public_url, EMAIL_BATCH);
}

int worker_tasks_register(daemon_t *d, const worker_tasks_config_t *cfg)
{
    m_depth = metrics_gauge("ca_worker_queue_depth", "Job ids waiting in Redis", "queue");
    m_jobs_now = metrics_gauge("ca_worker_jobs", "Jobs in PostgreSQL by status", "status");
    m_recovered = metrics_counter("ca_worker_recovered_total",
                                  "Jobs put back in the queue by recovery", "how");
    /* cast away const: the task argument is a void *, the tasks only read it */
    void *arg = (void *)cfg;
    int repush_ms = cfg->repush_s * 1000 / 2 > 500 ? cfg->repush_s * 1000 / 2 : 500;
    int rc = 0;
    rc |= daemon_add_task(d, "promote", 500, task_promote, arg);
    rc |= daemon_add_task(d, "reap", 5000, task_reap, arg);
    rc |= daemon_add_task(d, "lease-requeue", 5000, task_stuck, arg);
    rc |= daemon_add_task(d, "re-push", repush_ms, task_repush, arg);
    rc |= daemon_add_task(d, "gauges", 5000, task_gauges, arg);
    if (cfg->smtp_url != NULL) {
        rc |= daemon_add_task(d, "e-mail", 2000, task_email, arg);
    }
    return rc != 0 ? -1 : 0;
}
