/*
 * poller — the drive-poller's work (poller.c): N poll threads share the due
 * rows of drive_polls with every other replica through leases (lease.h), and
 * each poll turns the Drive changes feed (and, now and then, a full listing of
 * the folder) into exactly one job per image (poll.h). See
 * docs/drive-poller.md.
 *
 *   poller_config_t cfg = {...};
 *   poller_t *p = poller_new(&cfg, err, sizeof(err));
 *   poller_start(p);          // threads claim and poll
 *   ... poller_drain(p); while (!poller_drained(p)) wait; ...
 *   poller_free(p);           // joins the threads
 */
#ifndef CA_POLLER_H
#define CA_POLLER_H

#include "crypto.h"
#include "drive.h"
#include "drive_auth.h"
#include "google_oauth.h"
#include "pg.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *database_url;
    const char *redis_url;
    const char *instance_id;      /* lease owner prefix: "<instance>/t<n>" per thread */
    google_config_t google;       /* strings copied by each thread's client */
    const crypto_keyring_t *keys; /* borrowed; outlives the poller */
    int concurrency;              /* poll threads */
    int interval_s;               /* POLL_INTERVAL_SECONDS */
    int reconcile_s;              /* full listing of each folder at least this often */
    int lease_s;                  /* a claim's lease; renewed while a long poll runs */
    int claim_batch;              /* rows one claim takes */
    int idle_ms;                  /* how long a thread sleeps when nothing is due */
    const char *webhook_url;      /* DRIVE_WEBHOOK_URL; NULL: no push channels (push.h) */
    int channel_s;                /* DRIVE_WEBHOOK_CHANNEL_SECONDS */
} poller_config_t;

typedef struct poller poller_t;

/* Copies cfg's strings. NULL (err filled) on a bad value. */
poller_t *poller_new(const poller_config_t *cfg, char *err, size_t errlen);
/* Starts the threads. Returns 0 or -1. */
__attribute__((warn_unused_result)) int poller_start(poller_t *p);
/* Stop claiming; in-flight polls finish (a long one stops between pages) and
 * give their leases back. */
void poller_drain(poller_t *p);
/* True when no poll thread is running. */
bool poller_drained(poller_t *p);
/* Drains, joins and frees. NULL is fine. */
void poller_free(poller_t *p);

/* Wakes the idle poll threads (a push notification made a folder due). */
void poller_nudge(void *p);

/* The maintenance task: the folders due / overdue / watched / backing off
 * gauges from one query. */
void poller_update_gauges(poller_t *p, pg_conn_t *pg);

#endif
