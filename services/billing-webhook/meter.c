/*
 * The meter outbox drainer: one thread with its own blocking PostgreSQL
 * connection and Stripe client.
 *
 * Claim: pending rows that are due are taken with FOR UPDATE SKIP LOCKED (so
 * several replicas share the outbox), and in the same statement their
 * attempts are counted and next_attempt_at is pushed out by a lease; the
 * claim commits before Stripe is called, so no lock is held over HTTP. Send:
 * a Billing Meter event with identifier = the job id. Then:
 *   accepted, or "already exists" (sent before a crash)  → sent
 *   transient (network, 429, 5xx)                       → pending, next_attempt_at
 *                                                          = now + backoff with jitter
 *   permanent, or transient after max_attempts          → failed + last_error
 * A crash between Stripe's answer and our update leaves the row pending with
 * its lease: the retry gets "already exists" and marks it sent. So each image
 * is billed once.
 */
#include "meter.h"

#include "backoff.h"
#include "log.h"
#include "metrics.h"
#include "stopwait.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct meter {
    meter_config_t cfg;
    char *database_url;
    char *secret_key;
    char *api_url;
    char *api_version;
    char *event_name;
    pthread_t thread;
    bool started;
    stopwait_t stop; /* meter_request_stop; cuts the idle sleep short */
    atomic_int stopped;
};

static metric_t *m_calls;
static metric_t *m_failed;
static metric_t *m_depth;
static metric_t *m_oldest;
static metric_t *m_failed_rows;

static void register_metrics(void)
{
    m_calls = metrics_counter("ca_billing_meter_calls_total",
                              "Stripe meter event calls by result "
                              "(sent, duplicate, transient, permanent)",
                              "status");
    m_failed = metrics_counter("ca_billing_meter_failed_total",
                               "Outbox rows given up (status failed): alert on any", NULL);
    m_depth = metrics_gauge("ca_billing_meter_outbox_depth", "Pending meter outbox rows", NULL);
    m_oldest = metrics_gauge("ca_billing_meter_outbox_oldest_age_seconds",
                             "Age of the oldest pending meter outbox row", NULL);
    m_failed_rows =
        metrics_gauge("ca_billing_meter_outbox_failed", "Meter outbox rows in status failed", NULL);
}

/* The delay before retry number `attempts` (1-based). */
static long retry_delay_ms(const meter_t *m, int attempts)
{
    return (long)backoff_delay_ms(attempts, m->cfg.backoff_base_ms, m->cfg.backoff_max_ms);
}

void meter_update_gauges(pg_conn_t *pg)
{
    if (m_depth == NULL) {
        register_metrics();
    }
    if (pg == NULL) {
        return;
    }
    char err[256];
    PGresult *res = pg_exec(pg,
                            "SELECT count(*) FILTER (WHERE status = 'pending'),"
                            " COALESCE(EXTRACT(EPOCH FROM timezone('UTC', now())"
                            "   - min(created_at) FILTER (WHERE status = 'pending')), 0),"
                            " count(*) FILTER (WHERE status = 'failed')"
                            " FROM meter_outbox WHERE status IN ('pending', 'failed')",
                            0, NULL, err, sizeof err);
    if (res == NULL) {
        log_warn("meter: gauges: %s", err);
        return;
    }
    metric_set(m_depth, atof(PQgetvalue(res, 0, 0)));
    metric_set(m_oldest, atof(PQgetvalue(res, 0, 1)));
    metric_set(m_failed_rows, atof(PQgetvalue(res, 0, 2)));
    PQclear(res);
}

static const char claim_sql[] =
    "WITH due AS ("
    "  SELECT id FROM meter_outbox"
    "   WHERE status = 'pending' AND next_attempt_at <= timezone('UTC', now())"
    "   ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
    " UPDATE meter_outbox m"
    "    SET attempts = m.attempts + 1,"
    "        next_attempt_at = timezone('UTC', now()) + make_interval(secs => $2::int),"
    "        stripe_customer_id = COALESCE(m.stripe_customer_id,"
    "          (SELECT s.stripe_customer_id FROM subscriptions s WHERE s.user_id = m.user_id))"
    "   FROM due WHERE m.id = due.id"
    " RETURNING m.id, m.job_id, m.stripe_customer_id, m.value, m.attempts,"
    "           EXTRACT(EPOCH FROM m.created_at)::bigint";

static void finish_row(meter_t *m, pg_conn_t *pg, const char *id, const char *status, long delay_ms,
                       const char *last_error)
{
    char err[256];
    char delay[32];
    snprintf(delay, sizeof delay, "%ld", delay_ms);
    const char *params[4] = {id, status, delay, last_error};
    if (pg_exec_cmd(pg,
                    "UPDATE meter_outbox SET status = $2::text,"
                    " sent_at = CASE WHEN $2::text = 'sent' THEN timezone('UTC', now()) END,"
                    " next_attempt_at = CASE WHEN $2::text = 'pending' THEN timezone('UTC', now())"
                    "   + make_interval(secs => $3::bigint / 1000.0) ELSE next_attempt_at END,"
                    " last_error = $4::text"
                    " WHERE id = $1 AND status = 'pending'",
                    4, params, err, sizeof err) != 0) {
        /* The lease brings the row back; Stripe dedupes the identifier. */
        log_warn("meter: could not update outbox row %s to %s: %s", id, status, err);
    }
    (void)m;
}

static void send_row(meter_t *m, pg_conn_t *pg, stripe_client_t *sc, PGresult *res, int i)
{
    const char *id = PQgetvalue(res, i, 0);
    const char *job_id = PQgetvalue(res, i, 1);
    const char *customer = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
    long long value = atoll(PQgetvalue(res, i, 3));
    int attempts = atoi(PQgetvalue(res, i, 4));
    long long created = atoll(PQgetvalue(res, i, 5));
    bool last_try = attempts >= m->cfg.max_attempts;

    if (customer == NULL || customer[0] == '\0') {
        /* The customer may still be linked (checkout event not yet in). */
        const char *why = "no Stripe customer for the user";
        if (last_try) {
            metric_add(m_calls, 1, "permanent");
            metric_add(m_failed, 1);
            log_error("meter: job %s given up: %s", job_id, why);
            finish_row(m, pg, id, "failed", 0, why);
        } else {
            finish_row(m, pg, id, "pending", retry_delay_ms(m, attempts), why);
        }
        return;
    }

    /* Stripe takes timestamps from the past 35 days; older: let it use now. */
    long long now = (long long)time(NULL);
    long long ts = created > now - 34LL * 86400 && created <= now + 60 ? created : 0;
    stripe_meter_event_t ev = {
        .event_name = m->event_name,
        .stripe_customer_id = customer,
        .value = value,
        .identifier = job_id,
        .timestamp = ts,
    };
    bool already = false;
    stripe_error_t err;
    stripe_status_t st = stripe_create_meter_event(sc, &ev, &already, &err);
    if (st == STRIPE_OK) {
        metric_add(m_calls, 1, already ? "duplicate" : "sent");
        log_info("meter: job %s %s", job_id, already ? "was already sent" : "sent");
        finish_row(m, pg, id, "sent", 0, already ? "already existed at Stripe" : NULL);
        return;
    }
    char why[320];
    snprintf(why, sizeof why, "%s (HTTP %ld): %s", stripe_status_name(st), err.http_status,
             err.message);
    if (stripe_status_transient(st) && !last_try) {
        metric_add(m_calls, 1, "transient");
        long delay = retry_delay_ms(m, attempts);
        if (err.retry_after_ms > delay) {
            delay = err.retry_after_ms;
        }
        log_warn("meter: job %s attempt %d: %s; retry in %ld ms", job_id, attempts, why, delay);
        finish_row(m, pg, id, "pending", delay, why);
        return;
    }
    metric_add(m_calls, 1, stripe_status_transient(st) ? "transient" : "permanent");
    metric_add(m_failed, 1);
    log_error("meter: job %s given up after %d attempt(s): %s", job_id, attempts, why);
    finish_row(m, pg, id, "failed", 0, why);
}

static void *meter_main(void *arg)
{
    meter_t *m = arg;
    pg_conn_t *pg = NULL;
    stripe_config_t scfg = m->cfg.stripe;
    scfg.secret_key = m->secret_key;
    scfg.api_url = m->api_url;
    scfg.api_version = m->api_version;
    stripe_client_t *sc = stripe_client_new(&scfg);
    char err[256];
    log_context_set("thread", "meter");
    if (sc == NULL) {
        log_error("meter: could not create the Stripe client");
    }
    while (sc != NULL && !stopwait_stopped(&m->stop)) {
        if (pg == NULL) {
            pg = pg_connect(m->database_url, 2000, err, sizeof err);
            if (pg == NULL) {
                log_warn("meter: PostgreSQL not reachable: %s", err);
                stopwait_sleep(&m->stop, m->cfg.poll_ms);
                continue;
            }
        }
        char batch[16];
        char lease[16];
        snprintf(batch, sizeof batch, "%d", m->cfg.batch);
        snprintf(lease, sizeof lease, "%d", m->cfg.lease_s);
        const char *params[2] = {batch, lease};
        PGresult *res = pg_exec(pg, claim_sql, 2, params, err, sizeof err);
        if (res == NULL) {
            log_warn("meter: claim failed: %s", err);
            if (!pg_ping(pg)) {
                pg_close(pg);
                pg = NULL;
            }
            stopwait_sleep(&m->stop, m->cfg.poll_ms);
            continue;
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            /* Rows not reached before a stop keep their lease and come back. */
            if (stopwait_stopped(&m->stop)) {
                break;
            }
            send_row(m, pg, sc, res, i);
        }
        PQclear(res);
        if (n < m->cfg.batch) {
            stopwait_sleep(&m->stop, m->cfg.poll_ms);
        }
    }
    if (pg != NULL) {
        pg_close(pg);
    }
    stripe_client_free(sc);
    log_context_clear();
    atomic_store(&m->stopped, 1);
    return NULL;
}

static void meter_destroy(meter_t *m)
{
    free(m->database_url);
    free(m->secret_key);
    free(m->api_url);
    free(m->api_version);
    free(m->event_name);
    stopwait_destroy(&m->stop);
    free(m);
}

meter_t *meter_start(const meter_config_t *cfg)
{
    if (cfg->max_attempts <= 0 || cfg->backoff_base_ms <= 0 || cfg->backoff_max_ms <= 0 ||
        cfg->poll_ms <= 0 || cfg->lease_s <= 0 || cfg->batch <= 0) {
        log_error("meter: attempts, backoff, poll period, lease and batch must be positive");
        return NULL;
    }
    register_metrics();
    meter_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->cfg = *cfg;
    stopwait_init(&m->stop);
    atomic_init(&m->stopped, 0);
    m->database_url = strdup(cfg->database_url);
    m->secret_key = cfg->stripe.secret_key != NULL ? strdup(cfg->stripe.secret_key) : NULL;
    m->api_url = strdup(cfg->stripe.api_url != NULL ? cfg->stripe.api_url : "");
    m->api_version = cfg->stripe.api_version != NULL ? strdup(cfg->stripe.api_version) : NULL;
    m->event_name = cfg->event_name != NULL ? strdup(cfg->event_name) : NULL;
    if (m->database_url == NULL || m->secret_key == NULL || m->api_url == NULL ||
        m->event_name == NULL) {
        meter_destroy(m);
        return NULL;
    }
    if (pthread_create(&m->thread, NULL, meter_main, m) != 0) {
        meter_destroy(m);
        return NULL;
    }
    m->started = true;
    return m;
}

void meter_request_stop(meter_t *m)
{
    if (m == NULL) {
        return;
    }
    stopwait_stop(&m->stop);
}

bool meter_stopped(const meter_t *m)
{
    return m == NULL || atomic_load(&m->stopped) != 0;
}

void meter_free(meter_t *m)
{
    if (m == NULL) {
        return;
    }
    meter_request_stop(m);
    if (m->started) {
        pthread_join(m->thread, NULL);
    }
    meter_destroy(m);
}
