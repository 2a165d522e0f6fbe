/*
 * stripe — the Stripe API client (Checkout, Billing Portal, Billing Meter
 * events, subscriptions) and webhook signature verification.
 *
 * Blocking; one stripe_client_t per thread (it owns an http_client_t).
 * Requests are application/x-www-form-urlencoded with bracket notation
 * (http_form_encode), authenticated with "Authorization: Bearer <key>", pinned
 * with "Stripe-Version" when the config names one, and carry an
 * "Idempotency-Key" when the caller gives one (POST only). Network errors, 429
 * and 5xx are retried inside a call (cfg.max_retries, same idempotency key).
 * Every failure is classified into stripe_status_t from the HTTP status and
 * Stripe's error body {"error":{"type","code","message","param"}}, so callers
 * decide retry/permanent from one enum. The secret key is never logged.
 */
#ifndef CA_STRIPE_H
#define CA_STRIPE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    STRIPE_OK = 0,
    STRIPE_ERR_AUTH,         /* 401, 403: bad or missing key (permanent) */
    STRIPE_ERR_INVALID,      /* 400 and other 4xx not below (permanent) */
    STRIPE_ERR_NOT_FOUND,    /* 404 (resource_missing, unrecognized URL) */
    STRIPE_ERR_CARD,         /* 402 card_error / request failed (permanent) */
    STRIPE_ERR_IDEMPOTENCY,  /* idempotency_error: key reused with other params (permanent) */
    STRIPE_ERR_CONFLICT,     /* 409 lock_timeout / concurrent use of a key (transient) */
    STRIPE_ERR_RATE_LIMITED, /* 429 after retries (transient) */
    STRIPE_ERR_SERVER,       /* 5xx after retries (transient) */
    STRIPE_ERR_NETWORK,      /* connect, timeout, dropped connection after retries (transient) */
    STRIPE_ERR_PROTOCOL,     /* a 2xx answer we could not parse (transient) */
    STRIPE_ERR_INTERNAL,     /* bad arguments, out of memory (permanent) */
} stripe_status_t;

typedef struct {
    stripe_status_t status;
    long http_status;    /* 0 when no response */
    char type[48];       /* error.type, e.g. "invalid_request_error" */
    char code[64];       /* error.code, e.g. "resource_missing" */
    char param[64];      /* error.param */
    char message[256];   /* error.message or a transport message (no secrets) */
    long retry_after_ms; /* from Retry-After, else -1 */
} stripe_error_t;

/* True for statuses worth retrying later with the same idempotency key. */
bool stripe_status_transient(stripe_status_t st);
const char *stripe_status_name(stripe_status_t st);

typedef struct {
    const char *secret_key;  /* STRIPE_SECRET_KEY, "sk_..." */
    const char *api_url;     /* STRIPE_API_URL, e.g. https://api.stripe.com (no trailing /v1) */
    const char *api_version; /* Stripe-Version header; NULL or "": none sent */
    long timeout_ms;         /* per attempt; 0: 15000 */
    int max_retries;         /* network/429/5xx inside a call; 0: none; < 0: default 2 */
} stripe_config_t;

typedef struct stripe_client stripe_client_t;

/* Copies every string in cfg. NULL on a missing key/url or allocation failure. */
stripe_client_t *stripe_client_new(const stripe_config_t *cfg);
void stripe_client_free(stripe_client_t *sc);

/* ---- Checkout and Billing Portal ---- */

typedef struct {
    const char *price_id;            /* line_items[0][price]; quantity 1 */
    const char *client_reference_id; /* our user id; also metadata[user_id] and
                                      * subscription_data[metadata][user_id] */
    const char *customer;            /* "cus_..." to reuse, or NULL */
    const char *customer_email;      /* sent only when customer is NULL; may be NULL */
    const char *success_url;         /* may contain {CHECKOUT_SESSION_ID} */
    const char *cancel_url;
    const char *idempotency_key; /* NULL: none (not recommended) */
} stripe_checkout_params_t;

typedef struct {
    char *id;  /* "cs_..." / "bps_..."; owned */
    char *url; /* owned */
} stripe_session_t;

void stripe_session_free(stripe_session_t *s); /* frees the members, not s */

/* POST /v1/checkout/sessions with mode=subscription. On STRIPE_OK, out holds
 * the id and url (free with stripe_session_free). err may be NULL. */
__attribute__((warn_unused_result)) stripe_status_t
stripe_create_checkout_session(stripe_client_t *sc, const stripe_checkout_params_t *p,
                               stripe_session_t *out, stripe_error_t *err);

/* POST /v1/billing_portal/sessions {customer, return_url}. idempotency_key may
 * be NULL. On STRIPE_OK, out holds the id and url. */
__attribute__((warn_unused_result)) stripe_status_t
stripe_create_portal_session(stripe_client_t *sc, const char *customer, const char *return_url,
                             const char *idempotency_key, stripe_session_t *out,
                             stripe_error_t *err);

/* ---- Billing Meter events ---- */

typedef struct {
    const char *event_name;         /* STRIPE_METER_EVENT */
    const char *stripe_customer_id; /* payload[stripe_customer_id] */
    long long value;                /* payload[value] */
    const char *identifier;         /* dedup key (our job id); required here */
    long long timestamp;            /* unix seconds; 0: omitted (Stripe uses now) */
} stripe_meter_event_t;

/* POST /v1/billing/meter_events. Returns STRIPE_OK when Stripe accepted the
 * event AND when it answered 400 "An event already exists with identifier"
 * (the event was delivered earlier): *already_exists tells which (may be
 * NULL). Anything else: the classified error (stripe_status_transient says
 * whether to retry). No Idempotency-Key is sent (Stripe would replay a saved
 * 5xx for it): the identifier is the deduplication key. */
__attribute__((warn_unused_result)) stripe_status_t
stripe_create_meter_event(stripe_client_t *sc, const stripe_meter_event_t *ev, bool *already_exists,
                          stripe_error_t *err);

/* ---- Objects ---- */

/* GET /v1/subscriptions/{id}. On STRIPE_OK *out is the parsed object (caller
 * cJSON_Delete's it). */
__attribute__((warn_unused_result)) stripe_status_t
stripe_retrieve_subscription(stripe_client_t *sc, const char *subscription_id, cJSON **out,
                             stripe_error_t *err);

/* POST /v1/subscriptions/{id} cancel_at_period_end=true: the subscription
 * runs to the end of the period already paid and is not renewed (Stripe then
 * sends customer.subscription.updated, and .deleted at the period's end).
 * idempotency_key may be NULL. On STRIPE_OK *out (may be NULL) is the updated
 * subscription (caller cJSON_Delete's it). A subscription Stripe no longer
 * knows answers STRIPE_ERR_NOT_FOUND; one already canceled answers
 * STRIPE_ERR_INVALID ("A canceled subscription can only update ..."). */
__attribute__((warn_unused_result)) stripe_status_t
stripe_cancel_subscription_at_period_end(stripe_client_t *sc, const char *subscription_id,
                                         const char *idempotency_key, cJSON **out,
                                         stripe_error_t *err);

/* ---- Webhook signatures ---- */

#define STRIPE_DEFAULT_TOLERANCE_S 300

typedef enum {
    STRIPE_SIG_OK = 0,
    STRIPE_SIG_MALFORMED, /* no header, no/bad t=, nothing parseable */
    STRIPE_SIG_NO_V1,     /* "No signatures found with expected scheme" */
    STRIPE_SIG_MISMATCH,  /* no v1 matches any secret (forged, wrong secret, altered body) */
    STRIPE_SIG_STALE,     /* now - t > tolerance */
    STRIPE_SIG_FUTURE,    /* t - now > tolerance (stricter than stripe-node) */
} stripe_sig_result_t;

const char *stripe_sig_result_name(stripe_sig_result_t r);

/* Verifies a Stripe-Signature header ("t=...,v1=...,v1=...,v0=...") over the
 * exact raw payload bytes: expected = hex(HMAC-SHA256(secret, "t.payload"))
 * for each secret of the comma list `secrets` (whitespace around items is
 * ignored), compared in constant time with every v1 entry; other schemes are
 * ignored. The signature is checked first, then |now - t| <= tolerance_s
 * (tolerance_s <= 0: STRIPE_DEFAULT_TOLERANCE_S). err (may be NULL) gets a
 * stripe-node-like message on failure. Never logs. */
stripe_sig_result_t stripe_verify_signature(const void *payload, size_t len, const char *header,
                                            const char *secrets, long tolerance_s, long long now,
                                            char *err, size_t errlen);

/* hex(HMAC-SHA256(secret, "<t>.<payload>")) into out (65 bytes). For tests and
 * benchmarks of the receiving side; production never signs. */
void stripe_compute_signature(const char *secret, long long t, const void *payload, size_t len,
                              char out[65]);

#endif
