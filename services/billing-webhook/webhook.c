/*
 * POST /webhooks/stripe — verify, then record and apply in one transaction.
 *
 * On the loop thread: the body (capped at 1 MiB by the HTTP server: 413) is
 * verified against Stripe-Signature BEFORE it is parsed; a verified body must
 * be one JSON object. Then one statement, billing_webhook_receive(), runs on
 * the non-blocking pool (record + apply in one transaction, see
 * sql/billing-webhook/010_webhook_apply.sql) and its callback answers:
 * 200 for every recorded event (duplicates, stale, ignored and unknown types
 * included), 400 for a bad signature or a malformed body, 500 when the apply
 * failed (the event stays with processed = false) or nothing could be
 * recorded, so Stripe retries.
 */
#include "billing.h"

#include "log.h"
#include "metrics.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct webhook {
    pg_pool_t *pool;
    char *secrets;
    char *price_creator;
    char *price_studio;
    long tolerance_s;
    atomic_int inflight;
};

typedef struct {
    webhook_t *w;
    http_req_t *req;
    const char *type_label;
} pending_t;

static metric_t *m_events;
static metric_t *m_sig_failures;
static metric_t *m_record_seconds;

static const char *const known_types[] = {
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_failed",
};

const char *webhook_type_label(const char *type)
{
    if (type == NULL) {
        return "invalid";
    }
    for (size_t i = 0; i < sizeof(known_types) / sizeof(known_types[0]); i++) {
        if (strcmp(type, known_types[i]) == 0) {
            return known_types[i];
        }
    }
    return "other";
}

int webhook_outcome_status(const char *outcome)
{
    if (outcome == NULL) {
        return 500;
    }
    if (strcmp(outcome, "malformed") == 0) {
        return 400;
    }
    if (strcmp(outcome, "failed") == 0) {
        return 500;
    }
    return 200; /* applied, duplicate, stale, ignored, recorded, unlinked */
}

static void register_metrics(void)
{
    m_events = metrics_counter("ca_billing_webhook_events_total",
                               "Stripe webhook events by type and outcome", "type,outcome");
    m_sig_failures = metrics_counter("ca_billing_webhook_signature_failures_total",
                                     "Webhook requests refused for their signature", "reason");
    m_record_seconds = metrics_histogram("ca_billing_webhook_record_seconds",
                                         "Time to record and apply one event", NULL, NULL, 0);
}

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    pending_t p;
    double started;
} pending_timed_t;

/* Second step after an apply failure: the receive statement rolled back, so
 * record the event with processed = false and its error, then answer 500. */
typedef struct {
    webhook_t *w;
    http_req_t *req;
} failure_t;

static void on_failure_recorded(const PGresult *res, const char *err, const char *sqlstate,
                                void *arg)
{
    failure_t *f = arg;
    (void)sqlstate;
    if (res == NULL) {
        log_error("webhook: could not record the failed event either: %s", err != NULL ? err : "?");
    }
    atomic_fetch_sub(&f->w->inflight, 1);
    http_reply_error(f->req, 500, "apply_failed", "the event could not be applied");
    free(f);
}

static void on_recorded(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    pending_timed_t *pt = arg;
    webhook_t *w = pt->p.w;
    http_req_t *req = pt->p.req;
    const char *type = pt->p.type_label;
    metric_observe(m_record_seconds, mono_seconds() - pt->started);
    free(pt);

    if (res == NULL) {
        /* Class 22 (data exception): the payload is not JSON PostgreSQL takes
         * (invalid UTF-8), a field has the wrong type or is too long: a
         * malformed event that no retry could apply. */
        if (sqlstate != NULL && strncmp(sqlstate, "22", 2) == 0) {
            atomic_fetch_sub(&w->inflight, 1);
            metric_add(m_events, 1, type, "malformed");
            http_reply_error(req, 400, "invalid_payload", "the event could not be read");
            return;
        }
        log_error("webhook: a %s event was not applied: %s (%s)", type, err != NULL ? err : "?",
                  sqlstate != NULL ? sqlstate : "");
        metric_add(m_events, 1, type, "failed");
        size_t len = 0;
        const char *body = http_req_body(req, &len);
        char msg[1100];
        snprintf(msg, sizeof msg, "%s: %s", sqlstate != NULL ? sqlstate : "?",
                 err != NULL ? err : "unknown error");
        failure_t *f = calloc(1, sizeof *f);
        const char *params[2] = {body, msg};
        if (f != NULL) {
            f->w = w;
            f->req = req;
            if (pg_pool_query(w->pool, NULL, "SELECT billing_webhook_record_failure($1, $2)", 2,
                              params, on_failure_recorded, f) == 0) {
                return; /* inflight is released there */
            }
            free(f);
        }
        atomic_fetch_sub(&w->inflight, 1);
        http_reply_error(req, 500, "apply_failed", "the event could not be applied");
        return;
    }
    atomic_fetch_sub(&w->inflight, 1);
    const char *outcome = PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "failed";
    const char *detail = PQntuples(res) > 0 && !PQgetisnull(res, 0, 1) ? PQgetvalue(res, 0, 1)
                                                                       : NULL;
    int status = webhook_outcome_status(outcome);
    metric_add(m_events, 1, type, outcome);
    if (status == 500) {
        log_error("webhook: applying a %s event failed: %s", type, detail != NULL ? detail : "?");
        http_reply_error(req, 500, "apply_failed", "the event was recorded but not applied");
        return;
    }
    if (status == 400) {
        http_reply_error(req, 400, "invalid_payload", "%s",
                         detail != NULL ? detail : "not a Stripe event");
        return;
    }
    cJSON *body = cJSON_CreateObject();
    cJSON_AddBoolToObject(body, "received", true);
    cJSON_AddStringToObject(body, "outcome", outcome);
    http_reply_json(req, 200, body);
}

/* True when [p, p+len) is one JSON object and nothing but whitespace after it.
 * *type_out: the event's "type" label. */
static bool parse_event(const char *body, size_t len, const char **type_out)
{
    *type_out = "invalid";
    if (len == 0 || memchr(body, '\0', len) != NULL) {
        return false;
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (doc == NULL) {
        return false;
    }
    bool ok = cJSON_IsObject(doc);
    for (const char *p = end; ok && p < body + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            ok = false;
        }
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    if (ok && cJSON_IsString(type)) {
        *type_out = webhook_type_label(type->valuestring);
    }
    cJSON_Delete(doc);
    return ok;
}

static void on_webhook(http_req_t *req, void *arg)
{
    webhook_t *w = arg;
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    const char *header = http_req_header(req, "Stripe-Signature");
    char err[160] = "";

    stripe_sig_result_t sig = stripe_verify_signature(body, len, header, w->secrets, w->tolerance_s,
                                                      (long long)time(NULL), err, sizeof err);
    if (sig != STRIPE_SIG_OK) {
        metric_add(m_sig_failures, 1, stripe_sig_result_name(sig));
        log_warn("webhook: signature refused (%s) from %s", stripe_sig_result_name(sig),
                 http_req_peer(req));
        http_reply_error(req, 400, "invalid_signature", "%s", err);
        return;
    }
    const char *type = NULL;
    if (!parse_event(body, len, &type)) {
        metric_add(m_events, 1, "invalid", "malformed");
        http_reply_error(req, 400, "invalid_payload", "the body is not a JSON object");
        return;
    }

    pending_timed_t *pt = calloc(1, sizeof *pt);
    if (pt == NULL) {
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    pt->p.w = w;
    pt->p.req = req;
    pt->p.type_label = type;
    pt->started = mono_seconds();
    const char *params[3] = {body, w->price_creator, w->price_studio};
    atomic_fetch_add(&w->inflight, 1);
    if (pg_pool_query(w->pool, NULL,
                      "SELECT outcome, detail FROM billing_webhook_receive($1, $2, $3)", 3, params,
                      on_recorded, pt) != 0) {
        atomic_fetch_sub(&w->inflight, 1);
        free(pt);
        metric_add(m_events, 1, type, "error");
        http_reply_error(req, 503, "overloaded", "too many events waiting; retry later");
    }
}

static char *dup_opt(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

webhook_t *webhook_new(struct event_base *base, http_server_t *http, const webhook_config_t *cfg)
{
    register_metrics();
    webhook_t *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return NULL;
    }
    atomic_init(&w->inflight, 0);
    w->secrets = strdup(cfg->secrets != NULL ? cfg->secrets : "");
    w->price_creator = dup_opt(cfg->price_creator);
    w->price_studio = dup_opt(cfg->price_studio);
    w->tolerance_s = cfg->tolerance_s > 0 ? cfg->tolerance_s : STRIPE_DEFAULT_TOLERANCE_S;
    w->pool = pg_pool_new(base, cfg->database_url, cfg->pool_size > 0 ? cfg->pool_size : 4);
    if (w->secrets == NULL || w->pool == NULL) {
        log_error("webhook: could not create the PostgreSQL pool");
        webhook_free(w);
        return NULL;
    }
    if (http_server_route(http, "POST", "/webhooks/stripe", on_webhook, w) != 0) {
        webhook_free(w);
        return NULL;
    }
    return w;
}

int webhook_inflight(const webhook_t *w)
{
    return w != NULL ? atomic_load(&w->inflight) : 0;
}

void webhook_free(webhook_t *w)
{
    if (w == NULL) {
        return;
    }
    if (w->pool != NULL) {
        pg_pool_free(w->pool);
    }
    free(w->secrets);
    free(w->price_creator);
    free(w->price_studio);
    free(w);
}
