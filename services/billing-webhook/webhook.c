/*
 * POST /webhooks/stripe — verify, then record and apply in one transaction.
 *
 * On the loop thread: the body (capped at 1 MiB by the HTTP server: 413) is
 * verified against Stripe-Signature BEFORE it is parsed; a verified body must
 * be one JSON object. Then the event is recorded (and applied) on the
 * non-blocking pool, and the callback answers: 200 for every recorded event
 * (duplicates, stale, ignored and unknown types included), 400 for a bad
 * signature or a malformed body, 500 when the apply failed (the event stays
 * with processed = false) or nothing could be recorded, so Stripe retries.
 *
 * Group commit. The events whose record needs no apply (record-only types,
 * and subscription or invoice events that nothing links to yet) are queued
 * and written by one INSERT … SELECT FROM unnest(…) per batch: one statement,
 * one implicit transaction, one commit for all the events the loop read
 * while the previous batch was in flight (at most WEBHOOK_BATCH_INFLIGHT
 * batches in flight, WEBHOOK_BATCH_MAX events each). Each answer is sent only
 * after the batch's commit. A row the batch did not write is decided for its
 * event alone (a linked event: billing_webhook_receive_fields(); an earlier
 * processed delivery: duplicate). When the batch statement fails, nothing
 * of it was committed and every event is sent again alone, so one bad event
 * gets its own answer (400 or 500) and the others theirs.
 */
#include "webhook.h"

#include "jbuf.h"
#include "log.h"
#include "metrics.h"
#include "now.h"
#include "pg.h"
#include "stripe.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct pending_timed pending_timed_t;

struct webhook {
    pg_pool_t *pool;
    char *secrets;
    char *price_creator;
    char *price_studio;
    long tolerance_s;
    atomic_int inflight;
    bool closing;
    /* group commit (loop thread only) */
    int batch_max;          /* events per batch statement */
    int batch_inflight_max; /* batch statements in flight at once */
    int batches_inflight;
    pending_timed_t *queue_head, *queue_tail; /* events waiting for a batch */
    int queued;
    struct event *flush_ev;
    bool flush_scheduled;
};

typedef struct {
    webhook_t *w;
    http_req_t *req;
    const char *type_label;
} pending_t;

static metric_t *m_events;
static metric_t *m_sig_failures;
static metric_t *m_record_seconds;
static metric_t *m_batches;
static metric_t *m_batched_events;
static metric_t *m_batch_queue;

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
    m_batches = metrics_counter("ca_billing_webhook_batches_total",
                                "Batch statements (group commit) sent", NULL);
    m_batched_events = metrics_counter("ca_billing_webhook_batched_events_total",
                                       "Events sent in batch statements", NULL);
    m_batch_queue = metrics_gauge("ca_billing_webhook_batch_queue",
                                  "Events waiting for the next batch statement", NULL);
}

/* The parameters of billing_webhook_receive_fields(), in its order. */
enum {
    F_ID,
    F_TYPE,
    F_CREATED,
    F_PAYLOAD,
    F_CUSTOMER,
    F_OBJECT_ID,
    F_SUB,
    F_USER_REF,
    F_PRICE_CREATOR,
    F_PRICE_STUDIO,
    RECEIVE_FIELDS_N
};

/* One event on its way to PostgreSQL. */
struct pending_timed {
    pending_t p;
    int64_t started_us;      /* now_mono_us() when the request came in */
    bool empty_is_duplicate; /* the statement returns no row for a duplicate */
    /* The parameters of billing_webhook_receive_fields(): the small fields
     * point into `strs` (owned), the payload into the request's body (alive
     * until the answer), the prices into the webhook_t. */
    char *strs;
    const char *fields[RECEIVE_FIELDS_N];
    /* Batched events: the outcome the batch records ("unlinked" for an event
     * nothing links to yet, "recorded" or "ignored" for record-only types). */
    const char *batch_outcome;
    /* No row from the batch for an "unlinked" event: it is linked (or was
     * processed before), so billing_webhook_receive_fields() decides. */
    bool fallback_to_fields;
    bool answered_by_batch;
    const char *batch_row_outcome; /* valid during the batch callback */
    pending_timed_t *next;
};

static const char *const sql_receive_fields =
    "SELECT outcome, detail FROM billing_webhook_receive_fields("
    "$1, $2, $3::bigint, $4, $5, $6, $7, $8, $9, $10)";

/* The group-commit statement. $1 is a JSON array with one object per event:
 * {"id", "type", "created", "customer", "object_id", "sub", "user_ref",
 * "outcome", "payload"} (the payload is the verified body itself). A
 * record-only event ("recorded", "ignored") is written processed; an
 * "unlinked" one only when no subscription matches its subscription or its
 * customer and its metadata names no user of ours (the test of
 * billing_webhook_receive_fields()). An earlier processed delivery is left
 * alone. One row back per event written; one transaction, one commit for the
 * whole batch.
 *
 * billing_webhook_record_batch() (014) first takes the shared customer locks
 * of the unlinked candidates, so its "no link" test cannot run on a snapshot
 * from before a checkout that links the customer commits (which would leave
 * the event unlinked forever). An unlinked candidate, even alone, therefore
 * goes through it.
 *
 * jsonb_to_recordset() rather than unnest() of arrays: PostgreSQL estimates
 * both plans alike, so the cached plan stays generic; with arrays a custom
 * plan always looks cheaper and the statement is planned again on every call
 * (that cost more than the batch saved). */
static const char *const sql_record_batch =
    "SELECT event_id, outcome FROM billing_webhook_record_batch($1::jsonb)";

/* A batch of one record-only event runs the single-event statement (as before
 * batching; cheaper than the JSON array for one row), with the same answer:
 * (event_id, outcome) when a row was written. */
static const char *const sql_record_one =
    "INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,"
    " stripe_customer_id, stripe_object_id, processed, processed_at, outcome)"
    " VALUES ($1, $2, $3::jsonb, $4::bigint, $5, $6, TRUE, timezone('UTC', now()), $7)"
    " ON CONFLICT (event_id) DO UPDATE SET processed = TRUE,"
    " processed_at = EXCLUDED.processed_at, outcome = EXCLUDED.outcome,"
    " error_message = NULL WHERE NOT w.processed"
    " RETURNING w.event_id::text, w.outcome::text";

static void pending_free(pending_timed_t *pt)
{
    free(pt->strs);
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

/* An event's statement is over: its time is observed and it is freed (the
 * caller keeps its w, req and type_label, which it does not own). */
static void event_done(pending_timed_t *pt)
{
    metric_observe(m_record_seconds, (double)(now_mono_us() - pt->started_us) / 1e6);
    pending_free(pt);
}

/* Answers an event from its outcome (and frees it). */
static void finish_event(pending_timed_t *pt, const char *outcome, const char *detail)
{
    webhook_t *w = pt->p.w;
    http_req_t *req = pt->p.req;
    const char *type = pt->p.type_label;
    event_done(pt);
    atomic_fetch_sub(&w->inflight, 1);
    int status = webhook_outcome_status(outcome);
    metric_add(m_events, 1, type, outcome != NULL ? outcome : "failed");
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

/* The event's statement failed (nothing of it was committed). */
static void fail_event(pending_timed_t *pt, const char *err, const char *sqlstate)
{
    webhook_t *w = pt->p.w;
    http_req_t *req = pt->p.req;
    const char *type = pt->p.type_label;
    event_done(pt);
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
        if (pg_pool_query(w->pool, NULL, "SELECT billing_webhook_record_failure($1, $2)", 2, params,
                          on_failure_recorded, f) == 0) {
            return; /* inflight is released there */
        }
        free(f);
    }
    atomic_fetch_sub(&w->inflight, 1);
    http_reply_error(req, 500, "apply_failed", "the event could not be applied");
}

/* The answer to a statement of one event. */
static void on_recorded(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    pending_timed_t *pt = arg;
    if (res == NULL) {
        fail_event(pt, err, sqlstate);
        return;
    }
    const char *outcome = PQntuples(res) > 0       ? PQgetvalue(res, 0, 0)
                          : pt->empty_is_duplicate ? "duplicate"
                                                   : "failed";
    const char *detail =
        PQntuples(res) > 0 && !PQgetisnull(res, 0, 1) ? PQgetvalue(res, 0, 1) : NULL;
    finish_event(pt, outcome, detail);
}

static void reply_overloaded(pending_timed_t *pt)
{
    webhook_t *w = pt->p.w;
    http_req_t *req = pt->p.req;
    metric_add(m_events, 1, pt->p.type_label, "error");
    pending_free(pt);
    atomic_fetch_sub(&w->inflight, 1);
    http_reply_error(req, 503, "overloaded", "too many events waiting; retry later");
}

/* billing_webhook_receive_fields() for one event (answered by on_recorded). */
static void send_fields(pending_timed_t *pt)
{
    pt->empty_is_duplicate = false;
    if (pg_pool_query(pt->p.w->pool, NULL, sql_receive_fields, RECEIVE_FIELDS_N, pt->fields,
                      on_recorded, pt) != 0) {
        reply_overloaded(pt);
    }
}

/* ---- group commit ---- */

/* `"key":` then s as a JSON string (or null). */
static void buf_json_field(jbuf_t *b, const char *key, const char *s)
{
    jbuf_append(b, "\"", 1);
    jbuf_puts(b, key);
    jbuf_append(b, "\":", 2);
    if (s == NULL)
        jbuf_append(b, "null", 4);
    else
        jbuf_json_string(b, s);
}

typedef struct {
    webhook_t *w;
    pending_timed_t *items; /* in the order of the arrays */
    int n;
} batch_t;

static void on_batch(const PGresult *res, const char *err, const char *sqlstate, void *arg);
static void schedule_flush(webhook_t *w);

/* Sends `items` (n of them, linked by next) as one statement. Returns 0, or
 * -1 when it could not be queued (the items are untouched). */
static int send_one(webhook_t *w, pending_timed_t *pt, batch_t *b)
{
    const char *const *f = pt->fields;
    const char *params[7] = {f[F_ID],       f[F_TYPE],      f[F_PAYLOAD],     f[F_CREATED],
                             f[F_CUSTOMER], f[F_OBJECT_ID], pt->batch_outcome};
    return pg_pool_query(w->pool, NULL, sql_record_one, 7, params, on_batch, b);
}

static int send_batch(webhook_t *w, pending_timed_t *items, int n)
{
    if (n == 1 && strcmp(items->batch_outcome, "unlinked") != 0) {
        batch_t *b = calloc(1, sizeof *b);
        if (b == NULL) {
            return -1;
        }
        b->w = w;
        b->items = items;
        b->n = 1;
        if (send_one(w, items, b) != 0) {
            free(b);
            return -1;
        }
        w->batches_inflight++;
        metric_add(m_batches, 1);
        metric_add(m_batched_events, 1);
        return 0;
    }
    jbuf_t json = {0};
    jbuf_append(&json, "[", 1);
    for (pending_timed_t *pt = items; pt != NULL; pt = pt->next) {
        jbuf_append(&json, pt == items ? "{" : ",{", pt == items ? 1 : 2);
        buf_json_field(&json, "id", pt->fields[F_ID]);
        jbuf_append(&json, ",", 1);
        buf_json_field(&json, "type", pt->fields[F_TYPE]);
        jbuf_append(&json, ",\"created\":", 11);
        jbuf_puts(&json, pt->fields[F_CREATED]); /* digits (and a sign) from %lld */
        jbuf_append(&json, ",", 1);
        buf_json_field(&json, "customer", pt->fields[F_CUSTOMER]);
        jbuf_append(&json, ",", 1);
        buf_json_field(&json, "object_id", pt->fields[F_OBJECT_ID]);
        jbuf_append(&json, ",", 1);
        buf_json_field(&json, "sub", pt->fields[F_SUB]);
        jbuf_append(&json, ",", 1);
        buf_json_field(&json, "user_ref", pt->fields[F_USER_REF]);
        jbuf_append(&json, ",", 1);
        buf_json_field(&json, "outcome", pt->batch_outcome);
        jbuf_append(&json, ",\"payload\":", 11);
        jbuf_puts(&json, pt->fields[F_PAYLOAD]); /* the verified JSON object */
        jbuf_append(&json, "}", 1);
    }
    jbuf_append(&json, "]", 1);
    batch_t *b = json.oom ? NULL : calloc(1, sizeof *b);
    int rc = -1;
    if (b != NULL) {
        b->w = w;
        b->items = items;
        b->n = n;
        const char *params[1] = {json.p};
        rc = pg_pool_query(w->pool, NULL, sql_record_batch, 1, params, on_batch, b);
        if (rc != 0) {
            free(b);
        }
    }
    jbuf_free(&json);
    if (rc == 0) {
        w->batches_inflight++;
        metric_add(m_batches, 1);
        metric_add(m_batched_events, n);
    }
    return rc;
}

/* Sends one event as a batch of its own, outside the in-flight limit (after
 * a failed batch); answers 503 when it cannot be queued. */
static void send_alone(webhook_t *w, pending_timed_t *pt)
{
    pt->next = NULL;
    if (send_batch(w, pt, 1) != 0) {
        reply_overloaded(pt);
    }
}

/* Sorts a batch by event id: two batches that hold deliveries of the same
 * events then take their row locks in the same order and cannot deadlock. */
static pending_timed_t *sort_by_id(pending_timed_t *items)
{
    pending_timed_t *sorted = NULL;
    while (items != NULL) {
        pending_timed_t *pt = items;
        items = pt->next;
        pending_timed_t **at = &sorted;
        while (*at != NULL && strcmp((*at)->fields[F_ID], pt->fields[F_ID]) < 0) {
            at = &(*at)->next;
        }
        pt->next = *at;
        *at = pt;
    }
    return sorted;
}

/* Takes up to batch_max queued events whose ids differ (two deliveries of one
 * event never share a statement: the second waits for the next batch) and
 * sends them, while fewer than batch_inflight_max batches are in flight. */
static void flush_queue(webhook_t *w)
{
    while (w->queue_head != NULL && w->batches_inflight < w->batch_inflight_max) {
        pending_timed_t *items = NULL, *items_tail = NULL;
        pending_timed_t *keep = NULL, *keep_tail = NULL;
        int n = 0;
        pending_timed_t *pt = w->queue_head;
        while (pt != NULL) {
            pending_timed_t *next = pt->next;
            pt->next = NULL;
            bool take = n < w->batch_max;
            for (pending_timed_t *q = items; take && q != NULL; q = q->next) {
                take = strcmp(q->fields[F_ID], pt->fields[F_ID]) != 0;
            }
            if (take) {
                if (items_tail != NULL) {
                    items_tail->next = pt;
                } else {
                    items = pt;
                }
                items_tail = pt;
                n++;
            } else {
                if (keep_tail != NULL) {
                    keep_tail->next = pt;
                } else {
                    keep = pt;
                }
                keep_tail = pt;
            }
            pt = next;
        }
        w->queue_head = keep;
        w->queue_tail = keep_tail;
        w->queued -= n;
        metric_set(m_batch_queue, w->queued);
        items = sort_by_id(items);
        if (send_batch(w, items, n) != 0) {
            while (items != NULL) {
                pending_timed_t *next = items->next;
                reply_overloaded(items);
                items = next;
            }
        }
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    webhook_t *w = arg;
    w->flush_scheduled = false;
    flush_queue(w);
}

/* Flushes once the loop has run the callbacks already due (the requests read
 * in this turn join the batch). */
static void schedule_flush(webhook_t *w)
{
    if (!w->flush_scheduled && w->queue_head != NULL) {
        w->flush_scheduled = true;
        event_active(w->flush_ev, EV_TIMEOUT, 0);
    }
}

static void enqueue(webhook_t *w, pending_timed_t *pt)
{
    pt->next = NULL;
    if (w->queue_tail != NULL) {
        w->queue_tail->next = pt;
    } else {
        w->queue_head = pt;
    }
    w->queue_tail = pt;
    w->queued++;
    metric_set(m_batch_queue, w->queued);
    schedule_flush(w);
}

static void on_batch(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    batch_t *b = arg;
    webhook_t *w = b->w;
    pending_timed_t *items = b->items;
    int n = b->n;
    free(b);
    w->batches_inflight--;
    if (res == NULL) {
        if (n == 1) {
            fail_event(items, err, sqlstate);
        } else {
            /* Nothing of the batch was committed: each event again on its own,
             * so each one gets its own answer. */
            log_info("webhook: a batch of %d events failed (%s: %s); sending them one by one", n,
                     sqlstate != NULL ? sqlstate : "?", err != NULL ? err : "?");
            while (items != NULL) {
                pending_timed_t *next = items->next;
                if (w->closing) {
                    reply_overloaded(items);
                } else {
                    send_alone(w, items);
                }
                items = next;
            }
        }
        schedule_flush(w);
        return;
    }
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        const char *id = PQgetvalue(res, r, 0);
        for (pending_timed_t *pt = items; pt != NULL; pt = pt->next) {
            if (!pt->answered_by_batch && strcmp(pt->fields[F_ID], id) == 0) {
                pt->answered_by_batch = true;
                pt->batch_row_outcome = PQgetvalue(res, r, 1);
                break;
            }
        }
    }
    while (items != NULL) {
        pending_timed_t *pt = items;
        items = pt->next;
        pt->next = NULL;
        if (pt->answered_by_batch) {
            finish_event(pt, pt->batch_row_outcome, NULL);
        } else if (pt->fallback_to_fields) {
            send_fields(pt);
        } else {
            finish_event(pt, "duplicate", NULL);
        }
    }
    schedule_flush(w);
}

/* ---- reading the event ---- */

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
/* The widths of webhook_events.event_id and event_type (VARCHAR(255), (100)):
 * a longer value goes through billing_webhook_receive(). */
enum { FIELD_MAX = 255, TYPE_MAX = 100 };

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
           strcmp(t, "invoice.payment_failed") == 0 || strcmp(t, "checkout.session.completed") == 0;
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
        strlen(id->valuestring) > FIELD_MAX || strlen(type->valuestring) > TYPE_MAX) {
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

/* Copies the small fields of f into one allocation and points pt->fields at
 * them (the payload at the request's body, the prices at w's). -1: no memory. */
static int keep_fields(pending_timed_t *pt, const event_fields_t *f, const char *body)
{
    webhook_t *w = pt->p.w;
    const char *src[RECEIVE_FIELDS_N] = {
        [F_ID] = f->id,
        [F_TYPE] = f->type,
        [F_CREATED] = f->created_s,
        [F_CUSTOMER] = f->customer,
        [F_OBJECT_ID] = f->object_id,
        [F_SUB] = f->sub,
        [F_USER_REF] = f->user_ref,
    };
    size_t total = 0;
    for (int i = 0; i < RECEIVE_FIELDS_N; i++) {
        total += src[i] != NULL ? strlen(src[i]) + 1 : 0;
    }
    pt->strs = malloc(total > 0 ? total : 1);
    if (pt->strs == NULL) {
        return -1;
    }
    char *p = pt->strs;
    for (int i = 0; i < RECEIVE_FIELDS_N; i++) {
        if (src[i] != NULL) {
            size_t n = strlen(src[i]) + 1;
            memcpy(p, src[i], n);
            pt->fields[i] = p;
            p += n;
        }
    }
    pt->fields[F_PAYLOAD] = body;
    pt->fields[F_PRICE_CREATOR] = w->price_creator;
    pt->fields[F_PRICE_STUDIO] = w->price_studio;
    return 0;
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
    const char *type =
        webhook_type_label(cJSON_IsString(type_item) ? type_item->valuestring : NULL);
    event_fields_t f;
    read_fields(doc, &f);

    pending_timed_t *pt = calloc(1, sizeof *pt);
    if (pt != NULL) {
        pt->p.w = w;
        if (f.plain && keep_fields(pt, &f, body) != 0) {
            free(pt);
            pt = NULL;
        }
    }
    cJSON_Delete(doc); /* f points into it: read no more of f below */
    if (pt == NULL) {
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    pt->p.req = req;
    pt->p.type_label = type;
    pt->started_us = now_mono_us();
    atomic_fetch_add(&w->inflight, 1);
    if (!f.plain) {
        const char *params[3] = {body, w->price_creator, w->price_studio};
        if (pg_pool_query(w->pool, NULL,
                          "SELECT outcome, detail FROM billing_webhook_receive($1, $2, $3)", 3,
                          params, on_recorded, pt) != 0) {
            reply_overloaded(pt);
        }
        return;
    }
    const char *t = pt->fields[F_TYPE];
    if (!applies_type(t)) {
        /* Nothing to apply: recorded by the next batch; no row back means an
         * earlier delivery was already processed. */
        pt->batch_outcome =
            strcmp(t, "customer.subscription.trial_will_end") == 0 ? "recorded" : "ignored";
        enqueue(w, pt);
    } else if ((is_subscription_type(t) && pt->fields[F_SUB] != NULL) ||
               strncmp(t, "invoice.", 8) == 0) {
        /* Subscription and invoice events for a customer we do not know yet
         * (the usual case before the checkout lands): recorded "unlinked" by
         * the next batch when nothing links them; otherwise the function
         * applies them. */
        pt->batch_outcome = "unlinked";
        pt->fallback_to_fields = true;
        enqueue(w, pt);
    } else {
        send_fields(pt);
    }
}

static char *dup_opt(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

webhook_t *webhook_new(struct event_base *base, http_server_t *http, const webhook_config_t *cfg)
{
    if (cfg->tolerance_s <= 0 || cfg->pool_size <= 0 || cfg->batch_max <= 0 ||
        cfg->batch_inflight <= 0) {
        log_error("webhook: tolerance, pool size and batch limits must be positive");
        return NULL;
    }
    register_metrics();
    webhook_t *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return NULL;
    }
    atomic_init(&w->inflight, 0);
    w->secrets = strdup(cfg->secrets != NULL ? cfg->secrets : "");
    w->price_creator = dup_opt(cfg->price_creator);
    w->price_studio = dup_opt(cfg->price_studio);
    w->tolerance_s = cfg->tolerance_s;
    w->batch_max = cfg->batch_max;
    w->batch_inflight_max = cfg->batch_inflight;
    w->pool = pg_pool_new(base, cfg->database_url, cfg->pool_size);
    w->flush_ev = event_new(base, -1, 0, on_flush, w);
    if (w->secrets == NULL || w->pool == NULL || w->flush_ev == NULL) {
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
    w->closing = true;
    /* Events still waiting for a batch (a stop without a drain). */
    while (w->queue_head != NULL) {
        pending_timed_t *pt = w->queue_head;
        w->queue_head = pt->next;
        reply_overloaded(pt);
    }
    w->queue_tail = NULL;
    w->queued = 0;
    if (w->pool != NULL) {
        pg_pool_free(w->pool); /* fails what is in flight through the callbacks */
    }
    while (w->queue_head != NULL) { /* queued by those callbacks */
        pending_timed_t *pt = w->queue_head;
        w->queue_head = pt->next;
        reply_overloaded(pt);
    }
    if (w->flush_ev != NULL) {
        event_free(w->flush_ev);
    }
    free(w->secrets);
    free(w->price_creator);
    free(w->price_studio);
    free(w);
}
