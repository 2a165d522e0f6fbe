/*
 * job — one job, from the claim to the fenced completion (job.c): claim the
 * job in PostgreSQL with a fencing attempt number (the usage reservation comes
 * with it), run the preset (CPU executor or ComfyUI), write the result back to
 * Drive, record it in one fenced transaction, then ack (or delay) the queue
 * item. See docs/job-worker.md for the steps and their failure codes.
 *
 *   job_settings_t set = {...};                 // shared, read-only
 *   job_runner_t r = {.set = &set, ...};        // one per job thread
 *   pthread_mutex_init(&r.lock, NULL);
 *   have_next = job_process(&r, id, next, sizeof(next)) == 1;
 *
 * The job thread that owns a runner (worker.c) connects its clients; job.c
 * only uses them. Another thread may read the job in flight (job_id, attempt)
 * under `lock`, to extend its lease or hand it back.
 */
#ifndef CA_JOB_H
#define CA_JOB_H

#include "crypto.h"
#include "google_oauth.h"
#include "http_client.h"
#include "pg.h"
#include "queue.h"
#include "redis.h"
#include "stopwait.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define JOB_ID_MAX 64

/* What every job needs to know, the same for all job threads. */
typedef struct {
    const crypto_keyring_t *keys;
    const char *comfyui_url; /* NULL: no ComfyUI */
    const char *smtp_url;    /* NULL: no e-mail (no outbox rows) */
    size_t max_image_bytes;
    long long max_image_pixels; /* MAX_IMAGE_PIXELS: checked on the header */
    int lease_s;
    int job_max_s; /* JOB_MAX_SECONDS: the CPU pipeline's wall-time budget */
    int comfyui_timeout_s;
    int retry_base_ms;          /* WORKER_RETRY_BASE_MS */
    int retry_max_ms;           /* WORKER_RETRY_MAX_MS */
    int thumb_ttl_s;            /* WORKER_THUMBNAIL_TTL_SECONDS (0: no thumbnails) */
    stopwait_t *stop;           /* stopped at shutdown: a ComfyUI wait gives up */
    const atomic_int *draining; /* set: an ack takes no next id */
} job_settings_t;

/* One job thread's clients and the job it has in flight. */
typedef struct {
    const job_settings_t *set;
    char worker_id[QUEUE_ID_MAX]; /* the thread's queue identity */
    pg_conn_t *pg;
    redis_conn_t *redis;
    google_client_t *gc;
    http_client_t *http;

    /* The job in flight, under lock (0 attempt: none). handed_back is set by
     * the thread that handed it back at the drain deadline. */
    pthread_mutex_t lock;
    char job_id[JOB_ID_MAX];
    int attempt;
    bool handed_back;
    /* Set (by the cancel watch, worker.c) when the job in flight was
     * cancelled or is no longer this attempt's: the job stops where it is
     * (the CPU pipeline mid-computation, a ComfyUI prompt interrupted),
     * uploads nothing and records nothing. Cleared at each claim. */
    atomic_int stop;
} job_runner_t;

/* Registers the job metrics (once, before the first job_process). */
void job_metrics_init(void);

/* Processes one job id taken from the queue, then acks (or delays) it. With
 * `next`, the ack also takes the next waiting id (queue_ack_take): returns 1
 * with next filled (it is in this thread's processing list), else 0. */
int job_process(job_runner_t *r, const char *job_id, char *next, size_t nextlen);

#endif
