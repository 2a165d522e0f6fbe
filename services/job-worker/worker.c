/*
 * worker — the job threads, the heartbeat and lease tasks, drain and stop
 * (see worker.h).
 */
#define _GNU_SOURCE
#include "worker.h"

#include "cpu_exec.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "now.h"
#include "preview.h"
#include "stopwait.h"
#include "worker_tasks.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A job thread's heartbeat lives this long; the heartbeat task renews it
 * every WORKER_KEEPER_PERIOD_MS, and extends the lease of the jobs in flight
 * as often. */
#define WORKER_HEARTBEAT_TTL_S 15
#define WORKER_KEEPER_PERIOD_MS 5000
/* A job thread waits this long after a PostgreSQL, Redis or queue error. */
#define WORKER_ERROR_WAIT_MS 500
/* The cancel watch looks at the jobs in flight this often (a cancelled job
 * stops within about this long plus one libvips tick). */
#define WORKER_CANCEL_POLL_MS 250

typedef struct worker_ctx worker_ctx_t;

typedef struct {
    worker_ctx_t *ctx;
    int index;
    pthread_t tid;
    bool started;
    atomic_int exited;
    job_runner_t run; /* its clients and the job in flight */
} worker_thread_t;

struct worker_ctx {
    daemon_t *d;
    crypto_keyring_t *keys;
    google_config_t gcfg;
    job_settings_t set;          /* points at keys, stop and draining */
    worker_tasks_config_t tasks; /* the maintenance tasks keep a pointer */
    int concurrency;
    int drain_s;

    worker_thread_t *threads;
    pthread_t cancel_tid; /* the cancel watch (cancel_watch_main) */
    bool cancel_started;
    preview_lane_t *previews; /* the preview lane (preview.h) */
    int preview_concurrency;
    int vips_threads;    /* 0: libvips decides (VIPS_CONCURRENCY set) */
    stopwait_t stop;     /* stopped by worker_stop; nudged by worker_drain */
    atomic_int draining; /* no new work */
    atomic_int in_flight;
    int64_t drain_started_ms;
    bool handed_back;
};

static metric_t *m_in_flight;

/* ---- job threads ---- */

/* Connects what is missing of the thread's PostgreSQL and Redis connections.
 * A new Redis connection beats the thread's heartbeat at once, so that no
 * reaper finds an item the thread takes without one. */
static int connect_clients(worker_thread_t *t)
{
    job_runner_t *r = &t->run;
    char err[256];
    if (r->pg == NULL) {
        r->pg = pg_connect(daemon_get(t->ctx->d, "DATABASE_URL"), 2000, err, sizeof(err));
        if (r->pg == NULL) {
            log_debug("PostgreSQL not reachable: %s", err);
            return -1;
        }
    }
    if (r->redis == NULL) {
        r->redis = redis_connect(daemon_get(t->ctx->d, "REDIS_URL"), 2000, err, sizeof(err));
        if (r->redis == NULL) {
            log_debug("Redis not reachable: %s", err);
            return -1;
        }
        redis_set_retry(r->redis, 2000);
        if (queue_heartbeat(r->redis, r->worker_id, WORKER_HEARTBEAT_TTL_S, err, sizeof(err)) !=
            0) {
            log_debug("heartbeat: %s", err);
        }
    }
    return 0;
}

/* Puts the ids in this thread's processing list back in their users' lists. */
static void give_back_taken(worker_thread_t *t)
{
    char err[256];
    int moved = 0;
    if (queue_requeue_worker(t->run.redis, t->run.worker_id, &moved, err, sizeof(err)) != 0) {
        log_warn("hand back: %s", err);
    }
}

static void *job_thread_main(void *arg)
{
    worker_thread_t *t = arg;
    worker_ctx_t *ctx = t->ctx;
    char err[256];
    char tname[32];
    snprintf(tname, sizeof(tname), "worker-%d", t->index);
    log_context_set("thread", tname);
    log_context_set("worker_id", t->run.worker_id);

    char id[QUEUE_ID_MAX];
    char next[QUEUE_ID_MAX];
    bool have_next = false; /* taken with the previous ack */
    while (!stopwait_stopped(&ctx->stop) && atomic_load(&ctx->draining) == 0) {
        if (connect_clients(t) != 0) {
            stopwait_sleep(&ctx->stop, WORKER_ERROR_WAIT_MS);
            continue;
        }
        int rc;
        if (have_next) {
            memcpy(id, next, sizeof(id));
            have_next = false;
            rc = 1;
        } else {
            rc = queue_take(t->run.redis, t->run.worker_id, 1.0, id, sizeof(id), err, sizeof(err));
        }
        if (rc < 0) {
            log_debug("queue_take: %s", err);
            stopwait_sleep(&ctx->stop, WORKER_ERROR_WAIT_MS);
            continue;
        }
        if (rc == 0) {
            continue;
        }
        if (atomic_load(&ctx->draining) != 0) {
            /* taken while SIGTERM arrived: hand it straight back */
            give_back_taken(t);
            break;
        }
        atomic_fetch_add(&ctx->in_flight, 1);
        metric_set(m_in_flight, (double)atomic_load(&ctx->in_flight));
        have_next = job_process(&t->run, id, next, sizeof(next)) == 1;
        atomic_fetch_sub(&ctx->in_flight, 1);
        metric_set(m_in_flight, (double)atomic_load(&ctx->in_flight));
    }
    if (have_next && t->run.redis != NULL) {
        /* taken with the last ack as the drain began: hand it back */
        give_back_taken(t);
    }
    log_context_clear();
    atomic_store(&t->exited, 1);
    return NULL;
}

/* ---- heartbeats and leases (tasks on the daemon's maintenance thread) ---- */

/* Copies the runner's job in flight (id and attempt as text) under its lock;
 * with hand_back, also marks it handed back. True when there is one (and,
 * without hand_back, it was not handed back). */
static bool in_flight_job(job_runner_t *r, bool hand_back, char job[JOB_ID_MAX], char attempt[16])
{
    pthread_mutex_lock(&r->lock);
    snprintf(job, JOB_ID_MAX, "%s", r->job_id);
    snprintf(attempt, 16, "%d", r->attempt);
    bool busy = r->attempt > 0 && (hand_back || !r->handed_back);
    if (hand_back) {
        r->handed_back = true;
    }
    pthread_mutex_unlock(&r->lock);
    return busy;
}

/* Renews the heartbeat of every job thread still running. */
static void task_heartbeats(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    worker_ctx_t *ctx = arg;
    char err[256];
    for (int i = 0; redis != NULL && i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        if (atomic_load(&t->exited) == 0 &&
            queue_heartbeat(redis, t->run.worker_id, WORKER_HEARTBEAT_TTL_S, err, sizeof(err)) !=
                0) {
            log_debug("heartbeat: %s", err);
        }
    }
}

/* Extends the lease of every job in flight (fenced by its attempt), through
 * the drain too. */
static void task_leases(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    worker_ctx_t *ctx = arg;
    char err[256];
    char lease[16];
    snprintf(lease, sizeof(lease), "%d", ctx->set.lease_s);
    for (int i = 0; pg != NULL && i < ctx->concurrency; i++) {
        char job[JOB_ID_MAX];
        char attempt[16];
        if (!in_flight_job(&ctx->threads[i].run, false, job, attempt)) {
            continue;
        }
        const char *p[3] = {job, attempt, lease};
        if (pg_exec_cmd(pg,
                        "UPDATE jobs SET lease_expires_at = timezone('UTC', now())"
                        " + make_interval(secs => $3::int)"
                        " WHERE id = $1::uuid AND attempt = $2::int AND status = 'processing'",
                        3, p, err, sizeof(err)) != 0) {
            log_debug("lease extension: %s", err);
        }
    }
}

/* ---- the cancel watch ---- */

/* One look: every job in flight whose row is cancelled, gone, or claimed by
 * another attempt since gets its runner's stop flag (checked by the job at
 * each step, by the CPU executor on every libvips tick, and by the ComfyUI
 * client between two looks at /history). One query for all the threads. */
static void cancel_watch_once(worker_ctx_t *ctx, pg_conn_t *pg)
{
    char ids[4096];
    size_t len = 0;
    int n = 0;
    ids[len++] = '{';
    for (int i = 0; i < ctx->concurrency; i++) {
        char job[JOB_ID_MAX];
        char attempt[16];
        if (!in_flight_job(&ctx->threads[i].run, false, job, attempt) ||
            len + strlen(job) + 3 > sizeof(ids)) {
            continue;
        }
        len += (size_t)snprintf(ids + len, sizeof(ids) - len, "%s%s", n > 0 ? "," : "", job);
        n++;
    }
    if (n == 0) {
        return;
    }
    ids[len++] = '}';
    ids[len] = '\0';
    char err[256];
    const char *p[1] = {ids};
    PGresult *res = pg_exec(pg,
                            "SELECT i::text, j.attempt, j.status FROM unnest($1::uuid[]) AS i"
                            " LEFT JOIN jobs j ON j.id = i",
                            1, p, err, sizeof(err));
    if (res == NULL) {
        log_debug("cancel watch: %s", err);
        return;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        bool gone = PQgetisnull(res, r, 1);
        int attempt = gone ? 0 : atoi(PQgetvalue(res, r, 1));
        bool cancelled = !gone && strcmp(PQgetvalue(res, r, 2), "cancelled") == 0;
        for (int i = 0; i < ctx->concurrency; i++) {
            job_runner_t *run = &ctx->threads[i].run;
            pthread_mutex_lock(&run->lock);
            /* still that job, and no longer this attempt's to finish */
            if (run->attempt > 0 && strcmp(run->job_id, id) == 0 &&
                (gone || cancelled || attempt != run->attempt) && atomic_load(&run->stop) == 0) {
                atomic_store(&run->stop, 1);
                log_info("job %s %s: stopping it", id,
                         cancelled ? "was cancelled" : "is no longer this attempt's");
            }
            pthread_mutex_unlock(&run->lock);
        }
    }
    PQclear(res);
}

static void *cancel_watch_main(void *arg)
{
    worker_ctx_t *ctx = arg;
    log_context_set("thread", "cancel-watch");
    pg_conn_t *pg = NULL;
    while (!stopwait_sleep(&ctx->stop, WORKER_CANCEL_POLL_MS)) {
        if (atomic_load(&ctx->in_flight) == 0) {
            continue;
        }
        if (pg == NULL) {
            char err[256];
            pg = pg_connect(daemon_get(ctx->d, "DATABASE_URL"), 2000, err, sizeof(err));
            if (pg == NULL) {
                log_debug("cancel watch: %s", err);
                continue;
            }
        }
        cancel_watch_once(ctx, pg);
    }
    if (pg != NULL) {
        pg_close(pg);
    }
    log_context_clear();
    return NULL;
}

/* ---- service hooks ---- */

/* Reads the configuration into ctx. Returns 0 or -1 (logged). */
static int read_config(worker_ctx_t *ctx, daemon_t *d)
{
    char err[256];
    const config_t *cfg = daemon_config(d);
    ctx->keys = crypto_keyring_new(daemon_get(d, "ENCRYPTION_KEY"),
                                   daemon_get(d, "ENCRYPTION_KEYS_OLD"), err, sizeof(err));
    if (ctx->keys == NULL) {
        log_error("ENCRYPTION_KEY: %s", err);
        return -1;
    }
    ctx->gcfg = (google_config_t){
        .client_id = daemon_get(d, "GOOGLE_CLIENT_ID"),
        .client_secret = daemon_get(d, "GOOGLE_CLIENT_SECRET"),
        .token_url = daemon_get(d, "GOOGLE_TOKEN_URL"),
        .drive_api_url = daemon_get(d, "DRIVE_API_URL"),
        .drive_upload_url = daemon_get(d, "DRIVE_UPLOAD_URL"),
        .timeout_ms = 30000,
        .max_retries = 3,
    };
    ctx->set = (job_settings_t){
        .keys = ctx->keys,
        .comfyui_url = daemon_get(d, "COMFYUI_URL"),
        .smtp_url = daemon_get(d, "SMTP_URL"),
        .max_image_bytes = (size_t)config_get_int(cfg, "MAX_IMAGE_BYTES"),
        .max_image_pixels = config_get_int(cfg, "MAX_IMAGE_PIXELS"),
        .lease_s = (int)config_get_int(cfg, "WORKER_LEASE_SECONDS"),
        .job_max_s = (int)config_get_int(cfg, "JOB_MAX_SECONDS"),
        .comfyui_timeout_s = (int)config_get_int(cfg, "COMFYUI_TIMEOUT_SECONDS"),
        .retry_base_ms = (int)config_get_int(cfg, "WORKER_RETRY_BASE_MS"),
        .retry_max_ms = (int)config_get_int(cfg, "WORKER_RETRY_MAX_MS"),
        .thumb_ttl_s = (int)config_get_int(cfg, "WORKER_THUMBNAIL_TTL_SECONDS"),
        .stop = &ctx->stop,
        .draining = &ctx->draining,
    };
    ctx->tasks = (worker_tasks_config_t){
        .repush_s = (int)config_get_int(cfg, "WORKER_REPUSH_SECONDS"),
        .quota_release_ms = (int)config_get_int(cfg, "WORKER_QUOTA_RELEASE_MS"),
        .smtp_url = ctx->set.smtp_url,
        .mail_from = daemon_get(d, "MAIL_FROM"),
        .digest_wait_s = (int)config_get_int(cfg, "EMAIL_DIGEST_WAIT_SECONDS"),
        .public_url = daemon_get(d, "PUBLIC_URL"),
    };
    const char *conc = daemon_get(d, "WORKER_CONCURRENCY");
    sysres_t res;
    sysres_read(&res);
    char why[256];
    if (conc != NULL) {
        ctx->concurrency = atoi(conc);
        snprintf(why, sizeof(why), "WORKER_CONCURRENCY");
    } else {
        ctx->concurrency = worker_default_concurrency(
            &res, (int)config_get_int(cfg, "WORKER_JOB_MEMORY_MB"), why, sizeof(why));
    }
    if (ctx->concurrency < 1) {
        ctx->concurrency = 1;
    }
    log_info("job-worker: %d job thread(s): %s", ctx->concurrency, why);
    /* libvips sizes its own thread pools from the node's cores unless told:
     * keep each pipeline within the CPUs the cgroup gives us (VIPS_CONCURRENCY,
     * read by libvips itself, still wins). */
    if (getenv("VIPS_CONCURRENCY") == NULL) {
        ctx->vips_threads = res.cpus;
    }
    ctx->drain_s = (int)config_get_int(cfg, "WORKER_DRAIN_SECONDS");
    ctx->preview_concurrency = (int)config_get_int(cfg, "WORKER_PREVIEW_CONCURRENCY");
    queue_fair_t fair;
    if (queue_fair_parse(daemon_get(d, "WORKER_TIER_WEIGHTS"),
                         (int)config_get_int(cfg, "WORKER_USER_INFLIGHT_MAX"), &fair, err,
                         sizeof(err)) != 0) {
        log_error("WORKER_TIER_WEIGHTS / WORKER_USER_INFLIGHT_MAX: %s", err);
        return -1;
    }
    queue_fair_set(&fair); /* before the threads start */
    return 0;
}

int worker_start(daemon_t *d)
{
    worker_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        return -1;
    }
    ctx->d = d;
    stopwait_init(&ctx->stop);
    daemon_set_data(d, ctx);
    if (read_config(ctx, d) != 0) {
        return -1;
    }

    if (cpu_exec_init("job-worker") != 0) {
        log_error("libvips failed to start");
        return -1;
    }
    if (ctx->vips_threads > 0) {
        cpu_exec_set_threads(ctx->vips_threads);
    }
    job_metrics_init();
    m_in_flight = metrics_gauge("ca_worker_jobs_in_flight", "Jobs being processed", NULL);

    ctx->threads = calloc((size_t)ctx->concurrency, sizeof(*ctx->threads));
    if (ctx->threads == NULL) {
        return -1;
    }
    for (int i = 0; i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        t->ctx = ctx;
        t->index = i;
        t->run.set = &ctx->set;
        snprintf(t->run.worker_id, sizeof(t->run.worker_id), "%.100s-%d", daemon_instance_id(d), i);
        pthread_mutex_init(&t->run.lock, NULL);
        t->run.gc = google_client_new(&ctx->gcfg);
        t->run.http = http_client_new();
        if (t->run.gc == NULL || t->run.http == NULL) {
            log_error("out of memory");
            return -1;
        }
    }
    if (worker_tasks_register(d, &ctx->tasks) != 0 ||
        daemon_add_task(d, "heartbeats", WORKER_KEEPER_PERIOD_MS, task_heartbeats, ctx) != 0 ||
        daemon_add_task(d, "lease-extension", WORKER_KEEPER_PERIOD_MS, task_leases, ctx) != 0) {
        log_error("cannot register the maintenance tasks");
        return -1;
    }
    for (int i = 0; i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        if (pthread_create(&t->tid, NULL, job_thread_main, t) != 0) {
            log_error("cannot start worker thread %d", i);
            return -1;
        }
        t->started = true;
    }
    if (pthread_create(&ctx->cancel_tid, NULL, cancel_watch_main, ctx) != 0) {
        log_error("cannot start the cancel watch");
        return -1;
    }
    ctx->cancel_started = true;
    preview_lane_config_t pl = {.d = d,
                                .keys = ctx->keys,
                                .gcfg = &ctx->gcfg,
                                .max_image_bytes = ctx->set.max_image_bytes,
                                .max_image_pixels = ctx->set.max_image_pixels,
                                .concurrency = ctx->preview_concurrency};
    ctx->previews = preview_lane_start(&pl);
    if (ctx->previews == NULL) {
        log_error("cannot start the preview lane");
        return -1;
    }
    log_info("job-worker: %d thread(s), %d preview thread(s), lease %d s, ComfyUI %s, e-mail %s",
             ctx->concurrency, ctx->preview_concurrency, ctx->set.lease_s,
             ctx->set.comfyui_url != NULL ? "on" : "off", ctx->set.smtp_url != NULL ? "on" : "off");
    return 0;
}

int worker_default_concurrency(const sysres_t *r, int job_mb, char *why, size_t why_size)
{
    int n = r->cpus > 0 ? r->cpus : 1;
    int at = snprintf(why, why_size, "%d usable CPU(s)", n);
    if (r->cpu_quota > 0 && at >= 0 && (size_t)at < why_size) {
        at += snprintf(why + at, why_size - (size_t)at, " (cgroup quota %.2f of %d)", r->cpu_quota,
                       r->cpus_online);
    }
    if (r->memory_limit > 0 && job_mb > 0) {
        uint64_t mb = r->memory_limit / (1024 * 1024);
        uint64_t room = mb > WORKER_MEMORY_RESERVE_MB ? mb - WORKER_MEMORY_RESERVE_MB : 0;
        uint64_t fit = room / (uint64_t)job_mb;
        if (fit < 1) {
            fit = 1;
        }
        if (at >= 0 && (size_t)at < why_size) {
            snprintf(why + at, why_size - (size_t)at,
                     ", memory limit %" PRIu64 " MB fits %" PRIu64 " job(s) of %d MB", mb, fit,
                     job_mb);
        }
        if (fit < (uint64_t)n) {
            n = (int)fit;
        }
    }
    return n;
}

void worker_drain(daemon_t *d)
{
    worker_ctx_t *ctx = daemon_data(d);
    if (ctx == NULL) {
        return;
    }
    atomic_store(&ctx->draining, 1);
    stopwait_nudge(&ctx->stop); /* a thread waiting out an error sees the drain */
    ctx->drain_started_ms = now_mono_ms();
    log_info("draining: %d job(s) in flight", atomic_load(&ctx->in_flight));
}

/* Past the drain deadline: every job still in flight goes back to queued
 * (fenced: the thread's own later writes then change nothing) and its id back
 * to its user's list of the fair queue. */
static void hand_back(worker_ctx_t *ctx)
{
    char err[256];
    pg_conn_t *pg = pg_connect(daemon_get(ctx->d, "DATABASE_URL"), 2000, err, sizeof(err));
    redis_conn_t *redis = redis_connect(daemon_get(ctx->d, "REDIS_URL"), 2000, err, sizeof(err));
    for (int i = 0; i < ctx->concurrency; i++) {
        job_runner_t *r = &ctx->threads[i].run;
        char job[JOB_ID_MAX];
        char attempt[16];
        if (!in_flight_job(r, true, job, attempt)) {
            continue;
        }
        const char *p[2] = {job, attempt};
        if (pg != NULL && pg_exec_cmd(pg,
                                      "UPDATE jobs SET status = 'queued', lease_expires_at = NULL"
                                      " WHERE id = $1::uuid AND attempt = $2::int"
                                      " AND status = 'processing'",
                                      2, p, err, sizeof(err)) != 0) {
            log_warn("hand back of %s: %s (its lease will expire)", job, err);
        }
        int moved = 0;
        if (redis != NULL &&
            queue_requeue_worker(redis, r->worker_id, &moved, err, sizeof(err)) != 0) {
            log_warn("requeue of %s: %s", r->worker_id, err);
        }
        log_info("handed back job %s (%d id(s) requeued)", job, moved);
    }
    if (pg != NULL) {
        pg_close(pg);
    }
    if (redis != NULL) {
        redis_close(redis);
    }
}

bool worker_drained(daemon_t *d)
{
    worker_ctx_t *ctx = daemon_data(d);
    if (ctx == NULL || atomic_load(&ctx->in_flight) == 0) {
        return true;
    }
    if (!ctx->handed_back && now_mono_ms() - ctx->drain_started_ms > ctx->drain_s * 1000L) {
        ctx->handed_back = true;
        hand_back(ctx);
        return true;
    }
    return false;
}

void worker_stop(daemon_t *d)
{
    worker_ctx_t *ctx = daemon_data(d);
    if (ctx == NULL) {
        return;
    }
    atomic_store(&ctx->draining, 1);
    stopwait_stop(&ctx->stop);
    bool all_joined = true;
    for (int i = 0; ctx->threads != NULL && i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        if (!t->started) {
            continue;
        }
        /* A thread still inside a job (handed back) gets a few seconds. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until); /* pthread_timedjoin_np's clock */
        until.tv_sec += 3;
        if (pthread_timedjoin_np(t->tid, NULL, &until) != 0) {
            log_warn("worker thread %d still busy at exit; leaving it", i);
            all_joined = false;
            t->started = false;
            continue;
        }
        t->started = false;
    }
    preview_lane_stop(ctx->previews); /* a preview in progress is stopped */
    ctx->previews = NULL;
    if (ctx->cancel_started) {
        pthread_join(ctx->cancel_tid, NULL); /* woken by the stop; one query at most */
        ctx->cancel_started = false;
    }
    /* Hand back anything still held (nothing, normally) and stop beating. The
     * heartbeat task ended with the maintenance thread, before this. */
    char err[256];
    redis_conn_t *redis = redis_connect(daemon_get(d, "REDIS_URL"), 2000, err, sizeof(err));
    for (int i = 0; redis != NULL && ctx->threads != NULL && i < ctx->concurrency; i++) {
        const char *id = ctx->threads[i].run.worker_id;
        int moved = 0;
        if (queue_requeue_worker(redis, id, &moved, err, sizeof(err)) != 0 ||
            queue_heartbeat_clear(redis, id, err, sizeof(err)) != 0) {
            log_warn("clean shutdown of %s: %s", id, err);
        }
    }
    if (redis != NULL) {
        redis_close(redis);
    }
    if (!all_joined) {
        return; /* a thread still uses its clients; the process exits now anyway */
    }
    for (int i = 0; ctx->threads != NULL && i < ctx->concurrency; i++) {
        job_runner_t *r = &ctx->threads[i].run;
        if (r->pg != NULL) {
            pg_close(r->pg);
        }
        if (r->redis != NULL) {
            redis_close(r->redis);
        }
        google_client_free(r->gc);
        http_client_free(r->http);
        pthread_mutex_destroy(&r->lock);
    }
    free(ctx->threads);
    crypto_keyring_free(ctx->keys);
    stopwait_destroy(&ctx->stop);
    cpu_exec_shutdown();
    free(ctx);
    daemon_set_data(d, NULL);
}
