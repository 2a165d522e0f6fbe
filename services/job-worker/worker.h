/*
 * worker — the job-worker daemon's real work (issue 4): WORKER_CONCURRENCY
 * threads take job ids from ca:jobs, claim the job in PostgreSQL with a fencing
 * attempt number, reserve quota, run the preset (CPU executor or ComfyUI), write
 * the result back to Drive and record it in one fenced transaction.
 *
 * Threads: N job threads (own PostgreSQL, Redis, Google and HTTP clients), one
 * keeper thread (heartbeats of every job thread's id, lease extension of the
 * jobs in flight), and the daemon's maintenance thread (promote delayed ids,
 * reap dead workers, re-push jobs Redis lost, requeue expired leases, queue
 * depth gauge, e-mail digests). See docs/job-worker.md.
 */
#ifndef CA_WORKER_H
#define CA_WORKER_H

#include "crypto.h"
#include "daemon.h"
#include "drive.h"
#include "drive_auth.h"
#include "google_oauth.h"
#include "http_client.h"
#include "queue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define WORKER_JOB_ID_MAX 64
#define WORKER_HEARTBEAT_TTL_S 15
#define WORKER_KEEPER_PERIOD_MS 5000

typedef struct worker_ctx worker_ctx_t;

typedef struct {
    worker_ctx_t *ctx;
    int index;
    char worker_id[QUEUE_ID_MAX];
    pthread_t tid;
    bool started;
    atomic_int exited;

    pg_conn_t *pg;
    redis_conn_t *redis;
    google_client_t *gc;
    http_client_t *http;

    /* The job in flight (keeper extends its lease; drain hands it back). */
    pthread_mutex_t lock;
    char job_id[WORKER_JOB_ID_MAX];
    int attempt; /* 0: none in flight */
    bool handed_back;
} worker_thread_t;

struct worker_ctx {
    daemon_t *d;
    crypto_keyring_t *keys;
    google_config_t gcfg;
    const char *comfyui_url;  /* NULL: no ComfyUI */
    const char *smtp_url;     /* NULL: no e-mail */
    const char *mail_from;
    size_t max_image_bytes;
    int concurrency;
    int lease_s;
    int repush_s;
    int comfyui_timeout_s;
    int digest_wait_s;
    int backoff_base_ms;
    int backoff_max_ms;
    int drain_s;

    worker_thread_t *threads;
    pthread_t keeper;
    bool keeper_started;
    pthread_mutex_t keeper_lock;
    pthread_cond_t keeper_cond;
    atomic_int stop;     /* threads exit their loops */
    atomic_int draining; /* no new work */
    atomic_int in_flight;
    int64_t drain_started_ms;
    bool handed_back;
};

/* service_t hooks (main.c). */
int worker_start(daemon_t *d);
void worker_drain(daemon_t *d);
bool worker_drained(daemon_t *d);
void worker_stop(daemon_t *d);

/* Processes one job id taken from the queue, then acks (or delays) it. With
 * `next`, the ack also takes the next waiting id (queue_ack_take): returns 1
 * with next filled (it is in this thread's processing list), else 0. */
int worker_process(worker_thread_t *t, const char *job_id, char *next, size_t nextlen);

/* Metrics registered once by worker_start. */
void worker_metrics_init(void);
void worker_metric_drive(const char *call, google_status_t st);

/* Maintenance tasks (worker_tasks.c). */
int worker_tasks_register(worker_ctx_t *ctx);

/* Monotonic and wall clocks in ms. */
int64_t worker_mono_ms(void);
int64_t worker_wall_ms(void);

/* Retry delay for the n-th retry (1-based): base·2^(n-1), capped, full jitter
 * on the upper half. Exposed for tests. */
int64_t worker_backoff_ms(int n, int base_ms, int max_ms);

#endif
