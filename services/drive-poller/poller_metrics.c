/*
 * poller_metrics — the drive-poller's metrics (see poller_metrics.h).
 */
#include "poller_metrics.h"

#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>

#define NOW_UTC "timezone('UTC', now())"

static metric_t *m_polls;
static metric_t *m_drive_calls;
static metric_t *m_files_found;
static metric_t *m_jobs_created;
static metric_t *m_push_failures;
static metric_t *m_poll_duration;
static metric_t *m_due;
static metric_t *m_overdue;
static metric_t *m_watched;
static metric_t *m_backing_off;
static metric_t *m_in_flight;

void poller_metrics_init(void)
{
    static const double buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    m_polls = metrics_counter("ca_poller_polls_total", "Folder polls by outcome", "status");
    m_drive_calls = metrics_counter("ca_poller_drive_calls_total",
                                    "Drive API calls by endpoint and result", "endpoint,status");
    m_files_found = metrics_counter("ca_poller_files_found_total",
                                    "Images seen in watched folders (new or not)", NULL);
    m_jobs_created = metrics_counter("ca_poller_jobs_created_total", "Jobs created", NULL);
    m_push_failures =
        metrics_counter("ca_poller_push_failures_total",
                        "Job ids not pushed to the job queue (re-pushed by the worker)", NULL);
    m_poll_duration = metrics_histogram("ca_poller_poll_duration_seconds", "One folder's poll",
                                        NULL, buckets, sizeof(buckets) / sizeof(buckets[0]));
    m_due = metrics_gauge("ca_poller_folders_due", "Active folders due for a poll now", NULL);
    m_overdue = metrics_gauge("ca_poller_folders_overdue",
                              "Active folders due for longer than one poll interval", NULL);
    m_watched = metrics_gauge("ca_poller_folders_watched", "Active watched folders", NULL);
    m_backing_off = metrics_gauge("ca_poller_folders_backing_off",
                                  "Active folders waiting out an error backoff", NULL);
    m_in_flight = metrics_gauge("ca_poller_polls_in_flight", "Polls running in this process", NULL);
}

void poller_metrics_drive_call(const char *endpoint, google_status_t st)
{
    metric_add(m_drive_calls, 1, endpoint, google_status_name(st));
}

void poller_metrics_files(int seen, int created)
{
    metric_add(m_files_found, (double)seen);
    metric_add(m_jobs_created, (double)created);
}

void poller_metrics_push_failures(int n)
{
    metric_add(m_push_failures, (double)n);
}

void poller_metrics_in_flight(int delta)
{
    metric_add(m_in_flight, (double)delta);
}

void poller_metrics_poll(const char *status, double seconds)
{
    metric_observe(m_poll_duration, seconds);
    metric_add(m_polls, 1, status);
}

void poller_metrics_gauges(pg_conn_t *pg, int interval_s)
{
    if (pg == NULL) {
        return;
    }
    char interval[16];
    snprintf(interval, sizeof(interval), "%d", interval_s);
    const char *params[] = {interval};
    char err[256];
    PGresult *res = pg_exec(pg,
                            "SELECT count(*),"
                            " count(*) FILTER (WHERE next_poll_at <= " NOW_UTC
                            "   AND (backoff_until IS NULL OR backoff_until <= " NOW_UTC ")),"
                            " count(*) FILTER (WHERE next_poll_at < " NOW_UTC
                            "   - make_interval(secs => $1::double precision)"
                            "   AND (backoff_until IS NULL OR backoff_until <= " NOW_UTC ")),"
                            " count(*) FILTER (WHERE backoff_until > " NOW_UTC ")"
                            " FROM drive_polls WHERE active",
                            1, params, err, sizeof(err));
    if (res == NULL) {
        log_debug("gauges: %s", err);
        return;
    }
    if (PQntuples(res) == 1) {
        metric_set(m_watched, atof(PQgetvalue(res, 0, 0)));
        metric_set(m_due, atof(PQgetvalue(res, 0, 1)));
        metric_set(m_overdue, atof(PQgetvalue(res, 0, 2)));
        metric_set(m_backing_off, atof(PQgetvalue(res, 0, 3)));
    }
    PQclear(res);
}
