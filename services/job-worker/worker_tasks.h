/*
 * worker_tasks — the job-worker's periodic tasks on the daemon's maintenance
 * thread (worker_tasks.c): promote due retries, reap dead workers' items,
 * requeue jobs whose lease expired, re-push queued jobs Redis lost, queue
 * gauges, e-mail digests. Any replica may run them at any time: each is safe
 * to run concurrently with itself.
 *
 *   static worker_tasks_config_t tasks = {.repush_s = 30, ...};
 *   if (worker_tasks_register(d, &tasks) != 0) ...
 */
#ifndef CA_WORKER_TASKS_H
#define CA_WORKER_TASKS_H

#include "daemon.h"

typedef struct {
    int repush_s;           /* WORKER_REPUSH_SECONDS */
    const char *smtp_url;   /* NULL: no e-mail task */
    const char *mail_from;  /* MAIL_FROM */
    int digest_wait_s;      /* EMAIL_DIGEST_WAIT_SECONDS */
    const char *public_url; /* PUBLIC_URL: links in notice e-mails */
} worker_tasks_config_t;

/* Registers the tasks (from the service's start hook). cfg must outlive the
 * daemon's loop: the tasks keep the pointer. Returns 0 or -1. */
__attribute__((warn_unused_result)) int worker_tasks_register(daemon_t *d,
                                                              const worker_tasks_config_t *cfg);

#endif
