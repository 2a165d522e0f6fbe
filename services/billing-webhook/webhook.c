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
#include <math.h>
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

enum { RECEIVE_FIELDS_N = 10 };

typedef struct {
    pending_t p;
    double started;
    bool empty_is_duplicate; /* the statement returns no row for a duplicate */
    /* The fast "unlinked" insert returned no row: run
     * billing_webhook_receive_fields() with these parameters (owned). */
    bool has_fallback;
    char *fallback[RECEIVE_FIELDS_N];
} pending_timed_t;

static const char *const sql_receive_fields =
    "SELECT outcome, detail FROM billing_webhook_receive_fields("
    "$1, $2, $3::bigint, $4, $5, $6, $7, $8, $9, $10)";

static void pending_free(pending_timed_t *pt)
{
    for (int i = 0; i < RECEIVE_FIELDS_N; i++) {
        free(pt->fallback[i]);
    }
    free(pt);
}

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
    bool empty_is_duplicate = pt->empty_is_duplicate;
    metric_observe(m_record_seconds, mono_seconds() - pt->started);
    pending_free(pt);

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
    const char *outcome = PQntuples(res) > 0 ? PQgetvalue(res, 0, 0)
                          : empty_is_duplicate ? "duplicate"
                                               : "failed";
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

/* The fast "unlinked" insert answered: one row means the event is recorded
 * as unlinked; no row means it is linked to a subscription (or a user) or an
 * earlier delivery exists, so the full function decides. */
static void on_fast_unlinked(const PGresult *res, const char *err, const char *sqlstate,
                             void *arg)
{
    pending_timed_t *pt = arg;
    if (res == NULL || PQntuples(res) > 0 || !pt->has_fallback) {
        on_recorded(res, err, sqlstate, arg);
        return;
    }
    pt->has_fallback = false;
    if (pg_pool_query(pt->p.w->pool, NULL, sql_receive_fields, RECEIVE_FIELDS_N,
                      (const char *const *)pt->fallback, on_recorded, pt) != 0) {
        webhook_t *w = pt->p.w;
        http_req_t *req = pt->p.req;
        metric_add(m_events, 1, pt->p.type_label, "error");
        pending_free(pt);
        atomic_fetch_sub(&w->inflight, 1);
        http_reply_error(req, 503, "overloaded", "too many events waiting; retry later");
    }
}

/* What the service reads from a verified event (after the signature). When
 * `plain` is false the event has an unusual shape (a non-string id, a huge
 * number, a truncated field…) and goes through billing_webhook_receive(),
 * which decides everything from the raw payload. */
typedef struct {
    bool plain;
    const char *id;
    const char *type;
    long long created;
    const char *customer;  /* billing_json_id(data.object.customer) */
    const char *object_id; /* data.object.id */
    const char *sub;       /* the subscription the event is about */
    const char *user_ref;  /* data.object.metadata.user_id */
    char created_s[24];
} event_fields_t;

enum { FIELD_MAX = 255 };

/* A JSON value read as text the way `->>` would, when that is simple: a
 * string (up to FIELD_MAX bytes) or nothing (absent or null). False for any
 * other value. */
static bool text_field(const cJSON *v, const char **out)
{
    *out = NULL;
    if (v == NULL || cJSON_IsNull(v)) {
        return true;
    }
    if (cJSON_IsString(v) && v->valuestring != NULL && strlen(v->valuestring) <= FIELD_MAX) {
        *out = v->valuestring;
        return true;
    }
    return false;
}

/* billing_json_id(): a string, or an expanded object's "id"; other JSON
 * types give NULL. */
static bool id_field(const cJSON *v, const char **out)
{
    *out = NULL;
    if (cJSON_IsObject(v)) {
        return text_field(cJSON_GetObjectItemCaseSensitive(v, "id"), out);
    }
    if (cJSON_IsString(v)) {
        return text_field(v, out);
    }
    return true;
}

static const cJSON *obj_item(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static bool is_subscription_type(const char *t)
{
    return strcmp(t, "customer.subscription.created") == 0 ||
           strcmp(t, "customer.subscription.updated") == 0 ||
           strcmp(t, "customer.subscription.deleted") == 0;
}

/* True for the types whose apply changes subscriptions. */
static bool applies_type(const char *t)
{
    return is_subscription_type(t) || strcmp(t, "invoice.paid") == 0 ||
           strcmp(t, "invoice.payment_failed") == 0 ||
           strcmp(t, "checkout.session.completed") == 0;
}

static void read_fields(const cJSON *doc, event_fields_t *f)
{
    memset(f, 0, sizeof *f);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    const cJSON *created = cJSON_GetObjectItemCaseSensitive(doc, "created");
    const cJSON *obj = obj_item(cJSON_GetObjectItemCaseSensitive(doc, "data"), "object");
    if (!cJSON_IsString(id) || !cJSON_IsString(type) || !cJSON_IsNumber(created) ||
        !cJSON_IsObject(obj) || id->valuestring == NULL || type->valuestring == NULL ||
        strlen(id->valuestring) > FIELD_MAX || strlen(type->valuestring) > 100) {
        return;
    }
    double c = created->valuedouble;
    if (!(c > -9007199254740992.0 && c < 9007199254740992.0)) {
        return; /* beyond a double's exact integers (or NaN): let SQL decide */
    }
    f->id = id->valuestring;
    f->type = type->valuestring;
    f->created = (long long)floor(c);
    snprintf(f->created_s, sizeof f->created_s, "%lld", f->created);
    if (!id_field(cJSON_GetObjectItemCaseSensitive(obj, "customer"), &f->customer) ||
        !text_field(cJSON_GetObjectItemCaseSensitive(obj, "id"), &f->object_id)) {
        return;
    }
    if (is_subscription_type(f->type)) {
        f->sub = f->object_id;
        if (!text_field(obj_item(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "user_id"),
                        &f->user_ref)) {
            return;
        }
    } else if (strncmp(f->type, "invoice.", 8) == 0) {
        const cJSON *details =
            obj_item(cJSON_GetObjectItemCaseSensitive(obj, "parent"), "subscription_details");
        if (!id_field(obj_item(details, "subscription"), &f->sub)) {
            return;
        }
        if (f->sub == NULL &&
            !id_field(cJSON_GetObjectItemCaseSensitive(obj, "subscription"), &f->sub)) {
            return;
        }
    }
    f->plain = true;
}

/* True when [p, p+len) is one JSON object and nothing but whitespace after it.
 * *doc_out: the parsed document (the caller deletes it). */
static bool parse_event(const char *body, size_t len, cJSON **doc_out)
{
    *doc_out = NULL;
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
    if (!ok) {
        cJSON_Delete(doc);
        return false;
    }
    *doc_out = doc;
    return true;
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
    cJSON *doc = NULL;
    if (!parse_event(body, len, &doc)) {
        metric_add(m_events, 1, "invalid", "malformed");
        http_reply_error(req, 400, "invalid_payload", "the body is not a JSON object");
        return;
    }
    const cJSON *type_item = cJSON_GetObjectItemCaseSensitive(doc, "type");
    const char *type = webhook_type_label(cJSON_IsString(type_item) ? type_item->valuestring : NULL);
    event_fields_t f;
    read_fields(doc, &f);

    pending_timed_t *pt = calloc(1, sizeof *pt);
    if (pt == NULL) {
        cJSON_Delete(doc);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    pt->p.w = w;
    pt->p.req = req;
    pt->p.type_label = type;
    pt->started = mono_seconds();
    atomic_fetch_add(&w->inflight, 1);
    int rc;
    if (!f.plain) {
        const char *params[3] = {body, w->price_creator, w->price_studio};
        rc = pg_pool_query(w->pool, NULL,
                           "SELECT outcome, detail FROM billing_webhook_receive($1, $2, $3)", 3,
                           params, on_recorded, pt);
    } else if (!applies_type(f.type)) {
        /* Nothing to apply: one insert; no row back means an earlier delivery
         * was already processed. */
        pt->empty_is_duplicate = true;
        const char *outcome =
            strcmp(f.type, "customer.subscription.trial_will_end") == 0 ? "recorded" : "ignored";
        const char *params[7] = {f.id,       f.type,      body,   f.created_s,
                                 f.customer, f.object_id, outcome};
        rc = pg_pool_query(
            w->pool, NULL,
            "INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,"
            " stripe_customer_id, stripe_object_id, processed, processed_at, outcome)"
            " VALUES ($1, $2, $3::jsonb, $4::bigint, $5, $6, TRUE, timezone('UTC', now()), $7)"
            " ON CONFLICT (event_id) DO UPDATE SET processed = TRUE,"
            " processed_at = EXCLUDED.processed_at, outcome = EXCLUDED.outcome,"
            " error_message = NULL WHERE NOT w.processed"
            " RETURNING w.outcome::text, NULL::text",
            7, params, on_recorded, pt);
    } else {
        const char *params[RECEIVE_FIELDS_N] = {
            f.id,   f.type,     f.created_s, body,           f.customer,
            f.object_id, f.sub, f.user_ref,  w->price_creator, w->price_studio};
        /* Subscription and invoice events for a customer we do not know yet
         * (the usual case before the checkout lands): one insert, when
         * nothing links them; otherwise the function applies them. */
        bool fast = (is_subscription_type(f.type) && f.sub != NULL) ||
                    strncmp(f.type, "invoice.", 8) == 0;
        for (int i = 0; fast && i < RECEIVE_FIELDS_N; i++) {
            if (params[i] != NULL && (pt->fallback[i] = strdup(params[i])) == NULL) {
                fast = false;
            }
        }
        if (fast) {
            pt->has_fallback = true;
            rc = pg_pool_query(
                w->pool, NULL,
                "INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,"
                " stripe_customer_id, stripe_object_id, processed, outcome, error_message)"
                " SELECT $1::text, $2::text, $4::jsonb, $3::bigint, $5::text, $6::text, FALSE,"
                " 'unlinked', 'no user known for this customer yet'"
                " WHERE NOT EXISTS (SELECT 1 FROM subscriptions s"
                "                    WHERE s.stripe_subscription_id = $7::text)"
                " AND NOT EXISTS (SELECT 1 FROM subscriptions s"
                "                  WHERE s.stripe_customer_id = $5::text)"
                " AND NOT CASE WHEN $8::text IS NULL THEN FALSE"
                "              ELSE billing_user_from_ref($8::text) IS NOT NULL END"
                " ON CONFLICT (event_id) DO UPDATE SET processed = FALSE, processed_at = NULL,"
                " outcome = EXCLUDED.outcome, error_message = EXCLUDED.error_message"
                " WHERE NOT w.processed"
                " RETURNING w.outcome::text, NULL::text",
                8, params, on_fast_unlinked, pt);
        } else {
            rc = pg_pool_query(w->pool, NULL, sql_receive_fields, RECEIVE_FIELDS_N, params,
                               on_recorded, pt);
        }
    }
    cJSON_Delete(doc);
    if (rc != 0) {
        atomic_fetch_sub(&w->inflight, 1);
        pending_free(pt);
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
