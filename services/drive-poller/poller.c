/*
 * poller — the poll threads and their life cycle (see poller.h): each thread
 * claims due folders (lease.h), polls them one by one (poll.h), and sleeps
 * POLLER_IDLE_MS when nothing is due.
 */
#include "poller.h"

#include "lease.h"
#include "log.h"
#include "poll.h"
#include "poller_metrics.h"
#include "redis.h"
#include "stopwait.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CLAIM_BATCH 100
/* A thread waits this long after a PostgreSQL error. */
#define DB_ERROR_WAIT_MS 1000

typedef struct poll_thread poll_thread_t;

struct poller {
    poller_config_t cfg;
    char *database_url;
    char *redis_url;
    char *instance_id;
    char *client_id;
    char *client_secret;
    char *token_url;
    char *drive_api_url;
    char *webhook_url;
    push_settings_t push;
    poll_settings_t set; /* what each poll reads; points at redis_url and stop */
    poll_thread_t *threads;
    stopwait_t stop; /* stopped by poller_drain */
    atomic_int running;
};

struct poll_thread {
    poller_t *p;
    int index;
    pthread_t thread;
    bool started;
    char owner[200];
    poll_env_t env; /* the thread's clients */
};

static void *thread_main(void *arg)
{
    poll_thread_t *t = arg;
    poller_t *p = t->p;
    poll_env_t *env = &t->env;
    char name[32];
    char err[256];
    snprintf(name, sizeof(name), "poll-%d", t->index);
    log_context_set("thread", name);
    lease_row_t rows[MAX_CLAIM_BATCH];

    env->gc = google_client_new(&p->cfg.google);
    if (env->gc == NULL) {
        log_error("poll thread %d: no Google client (out of memory)", t->index);
        goto out;
    }
    while (!stopwait_stopped(&p->stop)) {
        if (env->pg == NULL) {
            env->pg = pg_connect(p->database_url, 2000, err, sizeof(err));
            if (env->pg == NULL) {
                log_warn("PostgreSQL unreachable: %s", err);
                stopwait_sleep(&p->stop, DB_ERROR_WAIT_MS);
                continue;
            }
        }
        int n = lease_claim(env->pg, t->owner, p->cfg.claim_batch, p->cfg.lease_s,
                            p->cfg.reconcile_s, rows);
        if (n < 0) {
            stopwait_sleep(&p->stop, DB_ERROR_WAIT_MS);
            continue;
        }
        if (n == 0) {
            stopwait_sleep(&p->stop, p->cfg.idle_ms);
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (stopwait_stopped(&p->stop)) {
                lease_release(env->pg, t->owner, &rows[i], 0);
            } else {
                poll_folder(env, &rows[i]);
            }
            lease_row_free(&rows[i]);
        }
    }
out:
    if (env->pg != NULL) {
        pg_close(env->pg);
        env->pg = NULL;
    }
    if (env->redis != NULL) {
        redis_close(env->redis);
        env->redis = NULL;
    }
    google_client_free(env->gc);
    env->gc = NULL;
    log_context_clear();
    atomic_fetch_sub(&p->running, 1);
    return NULL;
}

static char *dup_opt(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

poller_t *poller_new(const poller_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->database_url == NULL || cfg->redis_url == NULL || cfg->keys == NULL) {
        snprintf(err, errlen, "poller: database_url, redis_url and keys are required");
        return NULL;
    }
    if (cfg->concurrency < 1 || cfg->interval_s < 1 || cfg->lease_s < 1 || cfg->claim_batch < 1 ||
        cfg->claim_batch > MAX_CLAIM_BATCH || cfg->reconcile_s < 1) {
        snprintf(err, errlen, "poller: bad concurrency, interval, lease, batch or reconcile");
        return NULL;
    }
    poller_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = *cfg;
    if (p->cfg.idle_ms < 10) {
        p->cfg.idle_ms = 500;
    }
    p->database_url = strdup(cfg->database_url);
    p->redis_url = strdup(cfg->redis_url);
    p->instance_id = strdup(cfg->instance_id != NULL ? cfg->instance_id : "poller");
    p->client_id = dup_opt(cfg->google.client_id);
    p->client_secret = dup_opt(cfg->google.client_secret);
    p->token_url = dup_opt(cfg->google.token_url);
    p->drive_api_url = dup_opt(cfg->google.drive_api_url);
    p->webhook_url = dup_opt(cfg->webhook_url);
    p->cfg.webhook_url = p->webhook_url;
    p->push = (push_settings_t){.url = p->webhook_url,
                                .channel_s = cfg->channel_s > 0 ? cfg->channel_s : 86400};
    p->cfg.google.client_id = p->client_id;
    p->cfg.google.client_secret = p->client_secret;
    p->cfg.google.token_url = p->token_url;
    p->cfg.google.drive_api_url = p->drive_api_url;
    p->cfg.google.userinfo_url = NULL;
    p->cfg.google.drive_upload_url = NULL;
    p->cfg.database_url = p->database_url;
    p->cfg.redis_url = p->redis_url;
    p->cfg.instance_id = p->instance_id;
    p->threads = calloc((size_t)cfg->concurrency, sizeof(poll_thread_t));
    stopwait_init(&p->stop);
    p->set = (poll_settings_t){
        .keys = cfg->keys,
        .redis_url = p->redis_url,
        .interval_s = cfg->interval_s,
        .lease_s = cfg->lease_s,
        .stop = &p->stop,
        .push = &p->push,
    };
    if (p->database_url == NULL || p->redis_url == NULL || p->instance_id == NULL ||
        p->threads == NULL) {
        snprintf(err, errlen, "out of memory");
        poller_free(p);
        return NULL;
    }
    poller_metrics_init();
    return p;
}

int poller_start(poller_t *p)
{
    for (int i = 0; i < p->cfg.concurrency; i++) {
        poll_thread_t *t = &p->threads[i];
        t->p = p;
        t->index = i;
        snprintf(t->owner, sizeof(t->owner), "%s/t%d", p->instance_id, i);
        t->env.set = &p->set;
        t->env.owner = t->owner;
        atomic_fetch_add(&p->running, 1);
        if (pthread_create(&t->thread, NULL, thread_main, t) != 0) {
            atomic_fetch_sub(&p->running, 1);
            log_error("cannot start poll thread %d", i);
            return -1;
        }
        t->started = true;
    }
    log_info("poller: %d thread(s), interval %d s, reconcile %d s, lease %d s, push %s",
             p->cfg.concurrency, p->cfg.interval_s, p->cfg.reconcile_s, p->cfg.lease_s,
             p->webhook_url != NULL ? "on" : "off (polling only)");
    return 0;
}

void poller_drain(poller_t *p)
{
    if (p == NULL) {
        return;
    }
    stopwait_stop(&p->stop);
}

bool poller_drained(poller_t *p)
{
    return p == NULL || atomic_load(&p->running) == 0;
}

void poller_free(poller_t *p)
{
    if (p == NULL) {
        return;
    }
    poller_drain(p);
    for (int i = 0; p->threads != NULL && i < p->cfg.concurrency; i++) {
        if (p->threads[i].started) {
            pthread_join(p->threads[i].thread, NULL);
        }
    }
    free(p->threads);
    stopwait_destroy(&p->stop);
    free(p->database_url);
    free(p->redis_url);
    free(p->instance_id);
    free(p->client_id);
    free(p->client_secret);
    free(p->token_url);
    free(p->drive_api_url);
    free(p->webhook_url);
    free(p);
}

void poller_nudge(void *arg)
{
    poller_t *p = arg;
    if (p != NULL) {
        stopwait_nudge(&p->stop);
    }
}

void poller_update_gauges(poller_t *p, pg_conn_t *pg)
{
    if (p != NULL) {
        poller_metrics_gauges(pg, p->cfg.interval_s);
    }
}
