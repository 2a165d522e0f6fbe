/*
 * routes_billing — Stripe Checkout and the Billing Portal.
 *
 *   POST /api/billing/checkout {"tier": "creator"|"studio"} → {"url"}
 *   POST /api/billing/portal                                 → {"url"}
 *
 * Checkout: a subscription-mode Checkout Session for the tier's price
 * (STRIPE_PRICE_CREATOR / STRIPE_PRICE_STUDIO), client_reference_id = our user
 * id (billing-webhook links the customer and subscription from
 * checkout.session.completed), the known Stripe customer reused (else
 * customer_email), success/cancel URLs PUBLIC_URL/?checkout=success|cancel.
 * 409 already_subscribed when the user's subscription is on that tier and in
 * force (active, trialing, past_due); 409 change_in_portal when it is on the
 * other paid tier (a second Checkout would make a second subscription billed
 * alongside the first: plan changes go through the portal).
 *
 * Idempotency-Key: "ca-co-" + hex SHA-256 of (user, tier, price, customer or
 * e-mail, 10-minute bucket), cut to 40 characters. A double click or a client
 * retry within the bucket gets the same session back from Stripe (replayed),
 * and since every parameter is in the key, the key is never reused with other
 * parameters (which Stripe would refuse).
 *
 * Portal: 409 no_customer until billing knows the user's Stripe customer.
 *
 * Stripe is called on the gateway's thread pool (blocking common/stripe.c,
 * one client per pool thread). Stripe failing or unreachable → 502
 * stripe_unavailable (transient) or 502 stripe_error; no key or price
 * configured → 503 billing_unavailable. Both routes write audit rows
 * (billing.checkout, billing.portal).
 */
#include "gateway.h"

#include "log.h"
#include "stripe.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDEMPOTENCY_BUCKET_S 600

/* ---- the pool threads' Stripe clients ---- */

static pthread_key_t stripe_key;
static pthread_once_t stripe_once = PTHREAD_ONCE_INIT;

static void stripe_key_free(void *p)
{
    stripe_client_free(p);
}

static void stripe_key_init(void)
{
    (void)pthread_key_create(&stripe_key, stripe_key_free);
}

/* On a pool thread: that thread's client (made on first use). NULL when not
 * configured or out of memory. */
stripe_client_t *gw_thread_stripe(const gw_t *gw)
{
    pthread_once(&stripe_once, stripe_key_init);
    stripe_client_t *sc = pthread_getspecific(stripe_key);
    if (sc == NULL) {
        stripe_config_t cfg = {
            .secret_key = config_get(gw->cfg, "STRIPE_SECRET_KEY"),
            .api_url = config_get(gw->cfg, "STRIPE_API_URL"),
            .api_version = NULL,
            .timeout_ms = 15000,
            .max_retries = -1,
        };
        sc = stripe_client_new(&cfg);
        if (sc != NULL) {
            (void)pthread_setspecific(stripe_key, sc);
        }
    }
    return sc;
}

static bool configured(const char *v)
{
    return v != NULL && v[0] != '\0';
}

/* ---- one Stripe call on the pool ---- */

typedef struct {
    gw_t *gw;
    http_req_t *req;
    bool portal;
    bool redirect; /* GET /billing/portal: 303 to the session, HTML errors */
    char user_id[GW_UUID_LEN + 1];
    char ip[64];
    char tier[16];
    char price[256];
    char customer[256];
    char email[GW_EMAIL_MAX + 1];
    char success_url[700];
    char cancel_url[700];
    char idempotency_key[64];
    /* results */
    stripe_status_t st;
    stripe_error_t err;
    stripe_session_t session;
} call_t;

static void call_work(void *arg)
{
    call_t *c = arg;
    memset(&c->err, 0, sizeof(c->err));
    stripe_client_t *sc = gw_thread_stripe(c->gw);
    if (sc == NULL) {
        c->st = STRIPE_ERR_INTERNAL;
        snprintf(c->err.message, sizeof(c->err.message), "no Stripe client");
        return;
    }
    if (c->portal) {
        c->st = stripe_create_portal_session(sc, c->customer, c->success_url, NULL, &c->session,
                                             &c->err);
        return;
    }
    stripe_checkout_params_t p = {
        .price_id = c->price,
        .client_reference_id = c->user_id,
        .customer = c->customer[0] != '\0' ? c->customer : NULL,
        .customer_email = c->email[0] != '\0' ? c->email : NULL,
        .success_url = c->success_url,
        .cancel_url = c->cancel_url,
        .idempotency_key = c->idempotency_key,
    };
    c->st = stripe_create_checkout_session(sc, &p, &c->session, &c->err);
}

static void call_done(void *arg)
{
    call_t *c = arg;
    const char *what = c->portal ? "portal" : "checkout";
    if (c->redirect && c->st == STRIPE_OK && c->session.url != NULL) {
        char target[64];
        snprintf(target, sizeof(target), "user:%s", c->user_id);
        char details[512];
        snprintf(details, sizeof(details), "{\"session_id\":\"%s\",\"via\":\"link\"}",
                 c->session.id != NULL ? c->session.id : "");
        gw_audit(c->gw, c->user_id, "billing.portal", target, details, c->ip);
        http_reply_header(c->req, "Cache-Control", "no-store");
        http_reply_redirect(c->req, 303, c->session.url);
    } else if (c->redirect) {
        log_error("billing portal link: Stripe %s (HTTP %ld): %s", stripe_status_name(c->st),
                  c->err.http_status, c->err.message);
        gw_reply_html(c->req, 502, "Billing unavailable",
                      "The payment provider did not answer. Please try again in a moment.");
    } else if (c->st == STRIPE_OK && c->session.url != NULL) {
        char details[512];
        if (c->portal) {
            snprintf(details, sizeof(details), "{\"session_id\":\"%s\"}",
                     c->session.id != NULL ? c->session.id : "");
        } else {
            snprintf(details, sizeof(details), "{\"tier\":\"%s\",\"session_id\":\"%s\"}", c->tier,
                     c->session.id != NULL ? c->session.id : "");
        }
        char target[64];
        snprintf(target, sizeof(target), "user:%s", c->user_id);
        gw_audit(c->gw, c->user_id, c->portal ? "billing.portal" : "billing.checkout", target,
                 details, c->ip);
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "url", c->session.url);
        http_reply_header(c->req, "Cache-Control", "no-store");
        http_reply_json(c->req, 200, doc);
    } else {
        log_error("billing %s: Stripe %s (HTTP %ld): %s", what, stripe_status_name(c->st),
                  c->err.http_status, c->err.message);
        if (stripe_status_transient(c->st)) {
            http_reply_header(c->req, "Retry-After", "5");
            http_reply_error(c->req, 502, "stripe_unavailable",
                             "the payment provider did not answer; try again in a moment");
        } else {
            http_reply_error(c->req, 502, "stripe_error",
                             "the payment provider refused the request");
        }
    }
    stripe_session_free(&c->session);
    free(c);
}

static void start_call(gw_t *gw, http_req_t *req, call_t *c)
{
    if (gw_offload(gw, call_work, call_done, c) != 0) {
        free(c);
        http_reply_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "too busy; try again");
    }
}

static call_t *call_new(gw_t *gw, http_req_t *req, const gw_user_t *user, bool portal)
{
    call_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return NULL;
    }
    c->gw = gw;
    c->req = req;
    c->portal = portal;
    snprintf(c->user_id, sizeof(c->user_id), "%s", user->id);
    snprintf(c->ip, sizeof(c->ip), "%s", gw_client_ip(req));
    return c;
}

/* ---- checkout ---- */

static const char SUBSCRIPTION_SQL[] =
    "SELECT u.email, s.tier, s.status IN ('active', 'trialing', 'past_due'), s.stripe_customer_id"
    " FROM users u LEFT JOIN subscriptions s ON s.user_id = u.id WHERE u.id = $1";

static void make_idempotency_key(call_t *c)
{
    char material[1600];
    long long bucket = (long long)time(NULL) / IDEMPOTENCY_BUCKET_S;
    snprintf(material, sizeof(material), "%s|%s|%s|%s|%s|%lld", c->user_id, c->tier, c->price,
             c->customer, c->customer[0] != '\0' ? "" : c->email, bucket);
    uint8_t h[CRYPTO_SHA256_LEN];
    crypto_sha256(material, strlen(material), h);
    char hex[2 * CRYPTO_SHA256_LEN + 1];
    crypto_hex(h, sizeof(h), hex);
    snprintf(c->idempotency_key, sizeof(c->idempotency_key), "ca-co-%.40s", hex);
}

static void on_checkout_user(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    call_t *c = arg;
    if (PQntuples(res) != 1) {
        free(c);
        http_reply_error(req, 401, "unauthorized", "sign in first");
        return;
    }
    const char *tier = PQgetisnull(res, 0, 1) ? "free" : PQgetvalue(res, 0, 1);
    bool in_force = !PQgetisnull(res, 0, 2) && strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    if (in_force && strcmp(tier, c->tier) == 0) {
        free(c);
        http_reply_error(req, 409, "already_subscribed", "you are already on the %s plan", tier);
        return;
    }
    if (in_force && strcmp(tier, "free") != 0) {
        free(c);
        http_reply_error(req, 409, "change_in_portal",
                         "you have a %s subscription: change plans in the billing portal "
                         "(POST /api/billing/portal)",
                         tier);
        return;
    }
    snprintf(c->email, sizeof(c->email), "%s", PQgetvalue(res, 0, 0));
    if (!PQgetisnull(res, 0, 3)) {
        snprintf(c->customer, sizeof(c->customer), "%s", PQgetvalue(res, 0, 3));
    }
    snprintf(c->success_url, sizeof(c->success_url), "%s/?checkout=success", gw->public_url);
    snprintf(c->cancel_url, sizeof(c->cancel_url), "%s/?checkout=cancel", gw->public_url);
    make_idempotency_key(c);
    start_call(gw, req, c);
}

static void checkout(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    static const char *const allowed[] = {"tier", NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    const char *tier = NULL;
    if (!gw_json_string(req, body, "tier", 1, 20, &tier)) {
        return;
    }
    if (tier == NULL || (strcmp(tier, "creator") != 0 && strcmp(tier, "studio") != 0)) {
        gw_reply_invalid(req, "tier", "must be \"creator\" or \"studio\"");
        return;
    }
    const char *price = config_get(gw->cfg, strcmp(tier, "creator") == 0 ? "STRIPE_PRICE_CREATOR"
                                                                         : "STRIPE_PRICE_STUDIO");
    if (!configured(config_get(gw->cfg, "STRIPE_SECRET_KEY")) || !configured(price) ||
        strlen(price) >= sizeof(((call_t *)0)->price)) {
        http_reply_error(req, 503, "billing_unavailable", "billing is not configured");
        return;
    }
    call_t *c = call_new(gw, req, user, false);
    if (c == NULL) {
        return;
    }
    snprintf(c->tier, sizeof(c->tier), "%s", tier);
    snprintf(c->price, sizeof(c->price), "%s", price);
    const char *p[] = {user->id};
    gw_query_ex(gw, req, user->id, SUBSCRIPTION_SQL, 1, p, on_checkout_user, c, free);
}

/* ---- portal ---- */

static void on_portal_user(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    call_t *c = arg;
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 3) || PQgetvalue(res, 0, 3)[0] == '\0') {
        bool redirect = c->redirect;
        free(c);
        if (redirect) { /* no billing account: the dashboard's billing part */
            http_reply_redirect(req, 303, "/");
            return;
        }
        http_reply_error(req, 409, "no_customer",
                         "no billing account yet: subscribe first (POST /api/billing/checkout)");
        return;
    }
    snprintf(c->customer, sizeof(c->customer), "%s", PQgetvalue(res, 0, 3));
    snprintf(c->success_url, sizeof(c->success_url), "%s/", gw->public_url);
    start_call(gw, req, c);
}

static void portal(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    if (!gw_json_no_body(req)) {
        return;
    }
    if (!configured(config_get(gw->cfg, "STRIPE_SECRET_KEY"))) {
        http_reply_error(req, 503, "billing_unavailable", "billing is not configured");
        return;
    }
    call_t *c = call_new(gw, req, user, true);
    if (c == NULL) {
        return;
    }
    const char *p[] = {user->id};
    gw_query_ex(gw, req, user->id, SUBSCRIPTION_SQL, 1, p, on_portal_user, c, free);
}

/* GET /billing/portal — the link in the payment_failed notice's e-mail
 * (sql/job-worker/100_notices.sql, services/job-worker/email.c): a browser
 * with a session is sent (303) to a fresh Stripe billing portal session; one
 * without is sent to the sign-in (which returns to the dashboard). A GET: the
 * session cookie (SameSite=Lax) comes with a click in a mail client; it
 * changes nothing here (a portal session is created at Stripe and audited). */
static void portal_link(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    if (!user->signed_in) {
        http_reply_redirect(req, 303, "/auth/google/login");
        return;
    }
    if (!configured(config_get(gw->cfg, "STRIPE_SECRET_KEY"))) {
        gw_reply_html(req, 503, "Billing unavailable", "Billing is not configured.");
        return;
    }
    call_t *c = call_new(gw, req, user, true);
    if (c == NULL) {
        return;
    }
    c->redirect = true;
    const char *p[] = {user->id};
    gw_query_ex(gw, req, user->id, SUBSCRIPTION_SQL, 1, p, on_portal_user, c, free);
}

int gw_routes_billing(gw_t *gw)
{
    if (gw_route(gw, "POST", "/api/billing/checkout", GW_AUTH, checkout) != 0 ||
        gw_route(gw, "POST", "/api/billing/portal", GW_AUTH, portal) != 0 ||
        gw_route(gw, "GET", "/billing/portal", GW_PUBLIC, portal_link) != 0) {
        return -1;
    }
    return 0;
}
