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
#include "billing.h"

#include "crypto.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
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
    atomic_int stop;
    atomic_int stopped;
    pthread_mutex_t lock;
    pthread_cond_t cond;
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
    m_failed_rows = metrics_gauge("ca_billing_meter_outbox_failed",
                                  "Meter outbox rows in status failed", NULL);
}

long meter_backoff_ms(int attempts, long base_ms, long max_ms)
{
    if (base_ms <= 0) {
        base_ms = 1000;
    }
    if (max_ms < base_ms) {
        max_ms = base_ms;
    }
    long delay = base_ms;
    for (int i = 1; i < attempts && delay < max_ms; i++) {
        delay *= 2;
    }
    if (delay > max_ms) {
        delay = max_ms;
    }
    uint32_t r = 0;
    if (crypto_random(&r, sizeof r) != 0) {
        r = (uint32_t)rand();
    }
    long half = delay / 2;
    return half + (half > 0 ? (long)(r % (uint32_t)(half + 1)) : 0);
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

/* Sleeps up to ms, woken early by meter_request_stop. */
static void meter_sleep(meter_t *m, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m->lock);
    if (atomic_load(&m->stop) == 0) {
        pthread_cond_timedwait(&m->cond, &m->lock, &until);
    }
    pthread_mutex_unlock(&m->lock);
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

static void finish_row(meter_t *m, pg_conn_t *pg, const char *id, const char *status,
                       long delay_ms, const char *last_error)
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
            finish_row(m, pg, id, "pending",
                       meter_backoff_ms(attempts, m->cfg.backoff_base_ms, m->cfg.backoff_max_ms),
                       why);
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
        long delay = meter_backoff_ms(attempts, m->cfg.backoff_base_ms, m->cfg.backoff_max_ms);
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
    while (sc != NULL && atomic_load(&m->stop) == 0) {
        if (pg == NULL) {
            pg = pg_connect(m->database_url, 2000, err, sizeof err);
            if (pg == NULL) {
                log_warn("meter: PostgreSQL not reachable: %s", err);
                meter_sleep(m, m->cfg.poll_ms);
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
            meter_sleep(m, m->cfg.poll_ms);
            continue;
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            /* Rows not reached before a stop keep their lease and come back. */
            if (atomic_load(&m->stop) != 0) {
                break;
            }
            send_row(m, pg, sc, res, i);
        }
        PQclear(res);
        if (n < m->cfg.batch) {
            meter_sleep(m, m->cfg.poll_ms);
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
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
    free(m);
}

meter_t *meter_start(const meter_config_t *cfg)
{
    register_metrics();
    meter_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->cfg = *cfg;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    atomic_init(&m->stop, 0);
    atomic_init(&m->stopped, 0);
    m->database_url = strdup(cfg->database_url);
    m->secret_key = cfg->stripe.secret_key != NULL ? strdup(cfg->stripe.secret_key) : NULL;
    m->api_url = strdup(cfg->stripe.api_url != NULL ? cfg->stripe.api_url : "");
    m->api_version = cfg->stripe.api_version != NULL ? strdup(cfg->stripe.api_version) : NULL;
    m->event_name = strdup(cfg->event_name != NULL ? cfg->event_name : "image_overage");
    if (m->cfg.max_attempts <= 0) {
        m->cfg.max_attempts = 15;
    }
    if (m->cfg.poll_ms <= 0) {
        m->cfg.poll_ms = 1000;
    }
    if (m->cfg.lease_s <= 0) {
        m->cfg.lease_s = 120;
    }
    if (m->cfg.batch <= 0) {
        m->cfg.batch = 50;
    }
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
    pthread_mutex_lock(&m->lock);
    atomic_store(&m->stop, 1);
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
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
