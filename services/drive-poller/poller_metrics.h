/*
 * poller_metrics — the drive-poller's metrics (poller_metrics.c): what the
 * polls count, and the gauges of the folders read from drive_polls by a
 * maintenance task.
 *
 *   poller_metrics_init();                       // once, before any poll
 *   poller_metrics_drive_call("changes.list", st);
 *   poller_metrics_gauges(pg, interval_s);       // the maintenance task
 */
#ifndef CA_POLLER_METRICS_H
#define CA_POLLER_METRICS_H

#include "google_oauth.h"
#include "pg.h"

void poller_metrics_init(void);

/* One Drive call by endpoint and result. */
void poller_metrics_drive_call(const char *endpoint, google_status_t st);
/* Images seen in a folder, and jobs created for them. */
void poller_metrics_files(int seen, int created);
/* Job ids not pushed to ca:jobs (the worker re-pushes them). */
void poller_metrics_push_failures(int n);
/* A poll started (+1) or ended (-1) in this process. */
void poller_metrics_in_flight(int delta);
/* A finished poll: its outcome and how long it took. */
void poller_metrics_poll(const char *status, double seconds);

/* The folders due / overdue (due for longer than interval_s) / watched /
 * backing off, from one query. Nothing when pg is NULL. */
void poller_metrics_gauges(pg_conn_t *pg, int interval_s);

#endif
