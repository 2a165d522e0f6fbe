/*
 * worker — the job-worker daemon's threads and their life cycle (worker.c),
 * behind the service_t hooks of main.c.
 *
 * worker_start reads the configuration, starts WORKER_CONCURRENCY job threads
 * (each with its own PostgreSQL, Redis, Google and HTTP clients) that take
 * job ids from the fair queue and run each through job_process (job.h), and registers
 * periodic tasks on the daemon's maintenance thread: the heartbeats of every
 * job thread's queue id and the lease extension of the jobs in flight (here),
 * the queue recovery, gauges and e-mail digests (worker_tasks.h). A job
 * thread beats its own heartbeat once when it connects to Redis, before it
 * takes anything.
 *
 * worker_drain stops taking work; worker_drained is true when no job is in
 * flight, or once WORKER_DRAIN_SECONDS have passed, after the jobs still in
 * flight were handed back (queued again, fenced by their attempt);
 * worker_stop joins the threads and frees everything. See docs/job-worker.md.
 */
#ifndef CA_WORKER_H
#define CA_WORKER_H

#include "daemon.h"
#include "sysres.h"

#include <stdbool.h>
#include <stddef.h>

int worker_start(daemon_t *d);
void worker_drain(daemon_t *d);
bool worker_drained(daemon_t *d);
void worker_stop(daemon_t *d);

/* The job threads to run when WORKER_CONCURRENCY is unset: the usable CPUs
 * (affinity and cgroup quota, not the node's cores), lowered so that that many
 * jobs of JOB_MB megabytes each fit in the cgroup memory limit less
 * WORKER_MEMORY_RESERVE_MB (the process's own base); at least 1. Writes the
 * reason to WHY (for the start-up log line). */
#define WORKER_MEMORY_RESERVE_MB 128
int worker_default_concurrency(const sysres_t *r, int job_mb, char *why, size_t why_size);

#endif
