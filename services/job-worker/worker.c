/*
 * worker — job threads, the keeper thread (heartbeats, leases), drain and
 * stop (see worker.h).
 */
#define _GNU_SOURCE
#include "worker.h"

#include "cpu_exec.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static metric_t *m_in_flight;

int64_t worker_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t worker_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t worker_backoff_ms(int n, int base_ms, int max_ms)
{
    if (n < 1) {
        n = 1;
    }
    int64_t cap = base_ms;
    for (int i = 1; i < n && cap < max_ms; i++) {
        cap *= 2;
    }
    if (cap > max_ms) {
        cap = max_ms;
    }
    /* "equal jitter": half fixed, half random, so retries spread but never bunch at 0 */
    uint32_t r = 0;
    if (crypto_random(&r, sizeof(r)) != 0) {
        r = (uint32_t)rand();
    }
    int64_t half = cap / 2;
    return half + (half > 0 ? (int64_t)(r % (uint64_t)(half + 1)) : 0);
}

static long env_long(const char *name, long def, long min, long max)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        return def;
    }
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        return def;
    }
    return n;
}

/* ---- job threads ---- */

static void *job_thread_main(void *arg)
{
    worker_thread_t *t = arg;
    worker_ctx_t *ctx = t->ctx;
    char err[256];
    char tname[32];
    snprintf(tname, sizeof(tname), "worker-%d", t->index);
    log_context_set("thread", tname);
    log_context_set("worker_id", t->worker_id);

    char id[QUEUE_ID_MAX];
    char next[QUEUE_ID_MAX];
    bool have_next = false; /* taken with the previous ack */
    while (atomic_load(&ctx->stop) == 0 && atomic_load(&ctx->draining) == 0) {
        if (t->pg == NULL) {
            t->pg = pg_connect(daemon_get(ctx->d, "DATABASE_URL"), 2000, err, sizeof(err));
            if (t->pg == NULL) {
                log_debug("PostgreSQL not reachable: %s", err);
                continue;
            }
        }
        if (t->redis == NULL) {
            t->redis = redis_connect(daemon_get(ctx->d, "REDIS_URL"), 2000, err, sizeof(err));
            if (t->redis == NULL) {
                log_debug("Redis not reachable: %s", err);
                continue;
            }
            redis_set_retry(t->redis, 2000);
        }
        int rc;
        if (have_next) {
            memcpy(id, next, sizeof(id));
            have_next = false;
            rc = 1;
        } else {
            rc = queue_take(t->redis, t->worker_id, 1.0, id, sizeof(id), err, sizeof(err));
        }
        if (rc < 0) {
            log_debug("queue_take: %s", err);
            struct timespec ts = {0, 500 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (rc == 0) {
            continue;
        }
        if (atomic_load(&ctx->draining) != 0) {
            /* taken while SIGTERM arrived: hand it straight back */
            int moved = 0;
            if (queue_requeue_worker(t->redis, t->worker_id, &moved, err, sizeof(err)) != 0) {
                log_warn("hand back: %s", err);
            }
            break;
        }
        atomic_fetch_add(&ctx->in_flight, 1);
        metric_set(m_in_flight, (double)atomic_load(&ctx->in_flight));
        have_next = worker_process(t, id, next, sizeof(next)) == 1;
        atomic_fetch_sub(&ctx->in_flight, 1);
        metric_set(m_in_flight, (double)atomic_load(&ctx->in_flight));
    }
    if (have_next && t->redis != NULL) {
        /* taken with the last ack as the drain began: hand it back */
        int moved = 0;
        if (queue_requeue_worker(t->redis, t->worker_id, &moved, err, sizeof(err)) != 0) {
            log_warn("hand back: %s", err);
        }
    }
    log_context_clear();
    atomic_store(&t->exited, 1);
    return NULL;
}

/* ---- keeper: heartbeats and leases ---- */

static void keeper_tick(worker_ctx_t *ctx, pg_conn_t *pg, redis_conn_t *redis)
{
    char err[256];
    for (int i = 0; i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        if (redis != NULL && atomic_load(&t->exited) == 0 &&
            queue_heartbeat(redis, t->worker_id, WORKER_HEARTBEAT_TTL_S, err, sizeof(err)) != 0) {
            log_debug("heartbeat: %s", err);
        }
        char job[WORKER_JOB_ID_MAX];
        char attempt[16];
        pthread_mutex_lock(&t->lock);
        snprintf(job, sizeof(job), "%s", t->job_id);
        snprintf(attempt, sizeof(attempt), "%d", t->attempt);
        bool busy = t->attempt > 0 && !t->handed_back;
        pthread_mutex_unlock(&t->lock);
        if (!busy || pg == NULL) {
            continue;
        }
        char lease[16];
        snprintf(lease, sizeof(lease), "%d", ctx->lease_s);
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

static void *keeper_main(void *arg)
{
    worker_ctx_t *ctx = arg;
    pg_conn_t *pg = NULL;
    redis_conn_t *redis = NULL;
    char err[256];
    log_context_set("thread", "keeper");
    while (atomic_load(&ctx->stop) == 0) {
        if (pg == NULL) {
            pg = pg_connect(daemon_get(ctx->d, "DATABASE_URL"), 1000, err, sizeof(err));
        }
        if (redis == NULL) {
            redis = redis_connect(daemon_get(ctx->d, "REDIS_URL"), 1000, err, sizeof(err));
            if (redis != NULL) {
                redis_set_retry(redis, 1000);
            }
        }
        keeper_tick(ctx, pg, redis);

        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += WORKER_KEEPER_PERIOD_MS / 1000;
        pthread_mutex_lock(&ctx->keeper_lock);
        if (atomic_load(&ctx->stop) == 0) {
            pthread_cond_timedwait(&ctx->keeper_cond, &ctx->keeper_lock, &until);
        }
        pthread_mutex_unlock(&ctx->keeper_lock);
    }
    if (pg != NULL) {
        pg_close(pg);
    }
    if (redis != NULL) {
        redis_close(redis);
    }
    log_context_clear();
    return NULL;
}

/* ---- service hooks ---- */

int worker_start(daemon_t *d)
{
    char err[256];
    worker_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        return -1;
    }
    ctx->d = d;
    pthread_mutex_init(&ctx->keeper_lock, NULL);
    pthread_cond_init(&ctx->keeper_cond, NULL);
    daemon_set_data(d, ctx);

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
    ctx->comfyui_url = daemon_get(d, "COMFYUI_URL");
    ctx->smtp_url = daemon_get(d, "SMTP_URL");
    ctx->mail_from = daemon_get(d, "MAIL_FROM");
    ctx->max_image_bytes = (size_t)config_get_int(daemon_config(d), "MAX_IMAGE_BYTES");
    const char *conc = daemon_get(d, "WORKER_CONCURRENCY");
    ctx->concurrency = conc != NULL ? atoi(conc) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (ctx->concurrency < 1) {
        ctx->concurrency = 1;
    }
    ctx->lease_s = (int)config_get_int(daemon_config(d), "WORKER_LEASE_SECONDS");
    ctx->repush_s = (int)config_get_int(daemon_config(d), "WORKER_REPUSH_SECONDS");
    ctx->comfyui_timeout_s = (int)config_get_int(daemon_config(d), "COMFYUI_TIMEOUT_SECONDS");
    ctx->digest_wait_s = (int)config_get_int(daemon_config(d), "EMAIL_DIGEST_WAIT_SECONDS");
    ctx->backoff_base_ms = (int)config_get_int(daemon_config(d), "WORKER_RETRY_BASE_MS");
    ctx->backoff_max_ms = (int)env_long("WORKER_RETRY_MAX_MS", 300000, 1000, 3600000);
    ctx->drain_s = (int)env_long("WORKER_DRAIN_SECONDS", 20, 1, 24);

    if (cpu_exec_init("job-worker") != 0) {
        log_error("libvips failed to start");
        return -1;
    }
    worker_metrics_init();
    m_in_flight = metrics_gauge("ca_worker_jobs_in_flight", "Jobs being processed", NULL);

    ctx->threads = calloc((size_t)ctx->concurrency, sizeof(*ctx->threads));
    if (ctx->threads == NULL) {
        return -1;
    }
    for (int i = 0; i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        t->ctx = ctx;
        t->index = i;
        snprintf(t->worker_id, sizeof(t->worker_id), "%.100s-%d", daemon_instance_id(d), i);
        pthread_mutex_init(&t->lock, NULL);
        t->gc = google_client_new(&ctx->gcfg);
        t->http = http_client_new();
        if (t->gc == NULL || t->http == NULL) {
            log_error("out of memory");
            return -1;
        }
    }
    if (worker_tasks_register(ctx) != 0) {
        log_error("cannot register the maintenance tasks");
        return -1;
    }
    /* Heartbeats first, so no reaper sees our ids without one. */
    if (pthread_create(&ctx->keeper, NULL, keeper_main, ctx) != 0) {
        return -1;
    }
    ctx->keeper_started = true;
    for (int i = 0; i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        if (pthread_create(&t->tid, NULL, job_thread_main, t) != 0) {
            log_error("cannot start worker thread %d", i);
            return -1;
        }
        t->started = true;
    }
    log_info("job-worker: %d thread(s), lease %d s, ComfyUI %s, e-mail %s", ctx->concurrency,
             ctx->lease_s, ctx->comfyui_url != NULL ? "on" : "off",
             ctx->smtp_url != NULL ? "on" : "off");
    return 0;
}

void worker_drain(daemon_t *d)
{
    worker_ctx_t *ctx = daemon_data(d);
    if (ctx == NULL) {
        return;
    }
    atomic_store(&ctx->draining, 1);
    ctx->drain_started_ms = worker_mono_ms();
    log_info("draining: %d job(s) in flight", atomic_load(&ctx->in_flight));
}

/* Past the drain deadline: every job still in flight goes back to queued
 * (fenced: the thread's own later writes then change nothing) and its id back
 * to ca:jobs. */
static void hand_back(worker_ctx_t *ctx)
{
    char err[256];
    pg_conn_t *pg = pg_connect(daemon_get(ctx->d, "DATABASE_URL"), 2000, err, sizeof(err));
    redis_conn_t *redis = redis_connect(daemon_get(ctx->d, "REDIS_URL"), 2000, err, sizeof(err));
    for (int i = 0; i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        char job[WORKER_JOB_ID_MAX];
        char attempt[16];
        pthread_mutex_lock(&t->lock);
        snprintf(job, sizeof(job), "%s", t->job_id);
        snprintf(attempt, sizeof(attempt), "%d", t->attempt);
        bool busy = t->attempt > 0;
        t->handed_back = true;
        pthread_mutex_unlock(&t->lock);
        if (!busy) {
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
            queue_requeue_worker(redis, t->worker_id, &moved, err, sizeof(err)) != 0) {
            log_warn("requeue of %s: %s", t->worker_id, err);
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
    if (!ctx->handed_back && worker_mono_ms() - ctx->drain_started_ms > ctx->drain_s * 1000L) {
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
    atomic_store(&ctx->stop, 1);
    atomic_store(&ctx->draining, 1);
    bool all_joined = true;
    for (int i = 0; ctx->threads != NULL && i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        if (!t->started) {
            continue;
        }
        /* A thread still inside a job (handed back) gets a few seconds. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 3;
        if (pthread_timedjoin_np(t->tid, NULL, &until) != 0) {
            log_warn("worker thread %d still busy at exit; leaving it", i);
            all_joined = false;
            t->started = false;
            continue;
        }
        t->started = false;
    }
    if (ctx->keeper_started) {
        pthread_mutex_lock(&ctx->keeper_lock);
        pthread_cond_broadcast(&ctx->keeper_cond);
        pthread_mutex_unlock(&ctx->keeper_lock);
        pthread_join(ctx->keeper, NULL);
    }
    /* Hand back anything still held (nothing, normally) and stop beating. */
    char err[256];
    redis_conn_t *redis = redis_connect(daemon_get(d, "REDIS_URL"), 2000, err, sizeof(err));
    for (int i = 0; redis != NULL && ctx->threads != NULL && i < ctx->concurrency; i++) {
        int moved = 0;
        if (queue_requeue_worker(redis, ctx->threads[i].worker_id, &moved, err, sizeof(err)) != 0 ||
            queue_heartbeat_clear(redis, ctx->threads[i].worker_id, err, sizeof(err)) != 0) {
            log_warn("clean shutdown of %s: %s", ctx->threads[i].worker_id, err);
        }
    }
    if (redis != NULL) {
        redis_close(redis);
    }
    if (!all_joined) {
        return; /* a thread still uses its clients; the process exits now anyway */
    }
    for (int i = 0; ctx->threads != NULL && i < ctx->concurrency; i++) {
        worker_thread_t *t = &ctx->threads[i];
        if (t->pg != NULL) {
            pg_close(t->pg);
        }
        if (t->redis != NULL) {
            redis_close(t->redis);
        }
        google_client_free(t->gc);
        http_client_free(t->http);
        pthread_mutex_destroy(&t->lock);
    }
    free(ctx->threads);
    crypto_keyring_free(ctx->keys);
    pthread_mutex_destroy(&ctx->keeper_lock);
    pthread_cond_destroy(&ctx->keeper_cond);
    cpu_exec_shutdown();
    free(ctx);
    daemon_set_data(d, NULL);
}
