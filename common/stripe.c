/*
 * stripe — the Stripe API client and webhook signature verification. See
 * stripe.h for the contract and docs/billing.md for how billing uses it.
 */
#include "stripe.h"

#include "crypto.h"
#include "errbuf.h"
#include "http_client.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRIPE_MAX_BODY (4 * 1024 * 1024)
#define STRIPE_MAX_V1 16

struct stripe_client {
    char *secret_key;
    char *api_url;
    char *api_version;
    char *auth_header;
    long timeout_ms;
    int max_retries;
    http_client_t *http;
};

static const char *const status_names[] = {
    [STRIPE_OK] = "ok",
    [STRIPE_ERR_AUTH] = "auth",
    [STRIPE_ERR_INVALID] = "invalid_request",
    [STRIPE_ERR_NOT_FOUND] = "not_found",
    [STRIPE_ERR_CARD] = "card_error",
    [STRIPE_ERR_IDEMPOTENCY] = "idempotency_error",
    [STRIPE_ERR_CONFLICT] = "conflict",
    [STRIPE_ERR_RATE_LIMITED] = "rate_limited",
    [STRIPE_ERR_SERVER] = "server_error",
    [STRIPE_ERR_NETWORK] = "network",
    [STRIPE_ERR_PROTOCOL] = "protocol",
    [STRIPE_ERR_INTERNAL] = "internal",
};

const char *stripe_status_name(stripe_status_t st)
{
    if ((int)st < 0 || (size_t)st >= sizeof(status_names) / sizeof(status_names[0])) {
        return "unknown";
    }
    return status_names[st];
}

bool stripe_status_transient(stripe_status_t st)
{
    switch (st) {
    case STRIPE_ERR_CONFLICT:
    case STRIPE_ERR_RATE_LIMITED:
    case STRIPE_ERR_SERVER:
    case STRIPE_ERR_NETWORK:
    case STRIPE_ERR_PROTOCOL:
        return true;
    default:
        return false;
    }
}

static char *dup_or_null(const char *s)
{
    if (s == NULL || s[0] == '\0') {
        return NULL;
    }
    return strdup(s);
}

stripe_client_t *stripe_client_new(const stripe_config_t *cfg)
{
    if (cfg == NULL || cfg->secret_key == NULL || cfg->secret_key[0] == '\0' ||
        cfg->api_url == NULL || cfg->api_url[0] == '\0') {
        return NULL;
    }
    stripe_client_t *sc = calloc(1, sizeof *sc);
    if (sc == NULL) {
        return NULL;
    }
    sc->secret_key = strdup(cfg->secret_key);
    sc->api_url = strdup(cfg->api_url);
    sc->api_version = dup_or_null(cfg->api_version);
    size_t alen = strlen(cfg->secret_key) + sizeof("Bearer ");
    sc->auth_header = malloc(alen);
    sc->http = http_client_new();
    if (sc->secret_key == NULL || sc->api_url == NULL || sc->auth_header == NULL ||
        sc->http == NULL ||
        (cfg->api_version != NULL && cfg->api_version[0] != '\0' && sc->api_version == NULL)) {
        stripe_client_free(sc);
        return NULL;
    }
    snprintf(sc->auth_header, alen, "Bearer %s", cfg->secret_key);
    /* No trailing slash: paths start with "/v1/". */
    size_t ulen = strlen(sc->api_url);
    while (ulen > 0 && sc->api_url[ulen - 1] == '/') {
        sc->api_url[--ulen] = '\0';
    }
    sc->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 15000;
    sc->max_retries = cfg->max_retries < 0 ? 2 : cfg->max_retries;
    return sc;
}

void stripe_client_free(stripe_client_t *sc)
{
    if (sc == NULL) {
        return;
    }
    if (sc->secret_key != NULL) {
        memset(sc->secret_key, 0, strlen(sc->secret_key));
    }
    if (sc->auth_header != NULL) {
        memset(sc->auth_header, 0, strlen(sc->auth_header));
    }
    free(sc->secret_key);
    free(sc->auth_header);
    free(sc->api_url);
    free(sc->api_version);
    http_client_free(sc->http);
    free(sc);
}

void stripe_session_free(stripe_session_t *s)
{
    if (s == NULL) {
        return;
    }
    free(s->id);
    free(s->url);
    s->id = NULL;
    s->url = NULL;
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    snprintf(dst, dstlen, "%s", src);
}

static void err_reset(stripe_error_t *err)
{
    memset(err, 0, sizeof *err);
    err->retry_after_ms = -1;
}

/* The error a public call fills: the caller's, or `local` when it passed
 * NULL; reset either way. */
static stripe_error_t *err_begin(stripe_error_t *err, stripe_error_t *local)
{
    if (err == NULL) {
        err = local;
    }
    err_reset(err);
    return err;
}

/* Sets err's status and message (NULL: none) and returns the status. */
static stripe_status_t err_fail(stripe_error_t *err, stripe_status_t st, const char *message)
{
    err->status = st;
    if (message != NULL) {
        copy_str(err->message, sizeof err->message, message);
    }
    return st;
}

static stripe_status_t classify_http(long status, const char *type)
{
    bool idem = type != NULL && strcmp(type, "idempotency_error") == 0;
    if (status == 401 || status == 403) {
        return STRIPE_ERR_AUTH;
    }
    if (status == 402) {
        return STRIPE_ERR_CARD;
    }
    if (status == 404) {
        return STRIPE_ERR_NOT_FOUND;
    }
    if (idem) {
        return STRIPE_ERR_IDEMPOTENCY;
    }
    if (status == 409) {
        return STRIPE_ERR_CONFLICT;
    }
    if (status == 429) {
        return STRIPE_ERR_RATE_LIMITED;
    }
    if (status >= 500) {
        return STRIPE_ERR_SERVER;
    }
    return STRIPE_ERR_INVALID;
}

/* Parses Stripe's error body into err (fields stay empty when absent). */
static void parse_error_body(const char *body, size_t len, stripe_error_t *err)
{
    if (body == NULL || len == 0) {
        return;
    }
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (root == NULL) {
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (cJSON_IsObject(e)) {
        copy_str(err->type, sizeof err->type,
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "type")));
        copy_str(err->code, sizeof err->code,
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code")));
        copy_str(err->param, sizeof err->param,
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "param")));
        copy_str(err->message, sizeof err->message,
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "message")));
    }
    cJSON_Delete(root);
}

/* One API call. On STRIPE_OK *out is the parsed 2xx JSON body (caller deletes). */
static stripe_status_t stripe_call(stripe_client_t *sc, const char *method, const char *path,
                                   const http_pair_t *params, size_t nparams,
                                   const char *idempotency_key, cJSON **out, stripe_error_t *err)
{
    *out = NULL;
    err_reset(err);
    char *form = NULL;
    if (nparams > 0) {
        form = http_form_encode(params, nparams);
        if (form == NULL) {
            return err_fail(err, STRIPE_ERR_INTERNAL, "out of memory");
        }
    }
    size_t ulen = strlen(sc->api_url) + strlen(path) + 1;
    char *url = malloc(ulen);
    if (url == NULL) {
        free(form);
        return err_fail(err, STRIPE_ERR_INTERNAL, "out of memory");
    }
    snprintf(url, ulen, "%s%s", sc->api_url, path);

    http_pair_t headers[3];
    size_t nh = 0;
    headers[nh++] = (http_pair_t){"Authorization", sc->auth_header};
    if (sc->api_version != NULL) {
        headers[nh++] = (http_pair_t){"Stripe-Version", sc->api_version};
    }
    if (idempotency_key != NULL && idempotency_key[0] != '\0') {
        headers[nh++] = (http_pair_t){"Idempotency-Key", idempotency_key};
    }
    http_opts_t opts = {
        .connect_timeout_ms = sc->timeout_ms < 5000 ? sc->timeout_ms : 5000,
        .timeout_ms = sc->timeout_ms,
        .max_body = STRIPE_MAX_BODY,
        .max_retries = sc->max_retries,
        .base_backoff_ms = 200,
        .max_backoff_ms = 5000,
    };
    http_request_t req = {
        .method = method,
        .url = url,
        .headers = headers,
        .nheaders = nh,
        .body = form,
        .body_len = form != NULL ? strlen(form) : 0,
        .content_type = form != NULL ? "application/x-www-form-urlencoded" : NULL,
        .opts = &opts,
    };
    http_response_t resp;
    memset(&resp, 0, sizeof resp);
    http_result_t rc = http_client_do(sc->http, &req, &resp);
    free(url);
    free(form);

    if (rc != HTTP_RESULT_OK) {
        err->status = rc == HTTP_ERR_TOO_LARGE  ? STRIPE_ERR_PROTOCOL
                      : rc == HTTP_ERR_INTERNAL ? STRIPE_ERR_INTERNAL
                                                : STRIPE_ERR_NETWORK;
        snprintf(err->message, sizeof err->message, "%s", resp.error);
        http_response_free(&resp);
        return err->status;
    }
    err->http_status = resp.status;
    err->retry_after_ms = http_retry_after_ms(resp.retry_after);
    if (resp.status >= 200 && resp.status < 300) {
        cJSON *root = resp.body != NULL ? cJSON_ParseWithLength(resp.body, resp.body_len) : NULL;
        http_response_free(&resp);
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return err_fail(err, STRIPE_ERR_PROTOCOL, "unparseable Stripe response");
        }
        *out = root;
        err->status = STRIPE_OK;
        return STRIPE_OK;
    }
    parse_error_body(resp.body, resp.body_len, err);
    err->status = classify_http(resp.status, err->type);
    if (err->message[0] == '\0') {
        snprintf(err->message, sizeof err->message, "HTTP %ld", resp.status);
    }
    http_response_free(&resp);
    return err->status;
}

static stripe_status_t session_from(cJSON *root, stripe_session_t *out, stripe_error_t *err)
{
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "id"));
    const char *url = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "url"));
    if (id == NULL || url == NULL) {
        return err_fail(err, STRIPE_ERR_PROTOCOL, "session without id or url");
    }
    out->id = strdup(id);
    out->url = strdup(url);
    if (out->id == NULL || out->url == NULL) {
        stripe_session_free(out);
        return err_fail(err, STRIPE_ERR_INTERNAL, NULL);
    }
    return STRIPE_OK;
}

/* Empties a caller's session before anything can fail (out may be NULL). */
static void session_clear(stripe_session_t *out)
{
    if (out != NULL) {
        out->id = NULL;
        out->url = NULL;
    }
}

/* POSTs params to a Checkout or Portal sessions path; fills out from the answer. */
static stripe_status_t create_session(stripe_client_t *sc, const char *path,
                                      const http_pair_t *params, size_t n,
                                      const char *idempotency_key, stripe_session_t *out,
                                      stripe_error_t *err)
{
    cJSON *root = NULL;
    stripe_status_t st = stripe_call(sc, "POST", path, params, n, idempotency_key, &root, err);
    if (st == STRIPE_OK) {
        st = session_from(root, out, err);
    }
    cJSON_Delete(root);
    return st;
}

stripe_status_t stripe_create_checkout_session(stripe_client_t *sc,
                                               const stripe_checkout_params_t *p,
                                               stripe_session_t *out, stripe_error_t *err)
{
    stripe_error_t local;
    err = err_begin(err, &local);
    session_clear(out);
    if (sc == NULL || p == NULL || out == NULL || p->price_id == NULL || p->success_url == NULL ||
        p->cancel_url == NULL) {
        return err_fail(err, STRIPE_ERR_INTERNAL, "missing checkout parameters");
    }
    http_pair_t params[10];
    size_t n = 0;
    params[n++] = (http_pair_t){"mode", "subscription"};
    params[n++] = (http_pair_t){"line_items[0][price]", p->price_id};
    params[n++] = (http_pair_t){"line_items[0][quantity]", "1"};
    params[n++] = (http_pair_t){"success_url", p->success_url};
    params[n++] = (http_pair_t){"cancel_url", p->cancel_url};
    if (p->client_reference_id != NULL && p->client_reference_id[0] != '\0') {
        params[n++] = (http_pair_t){"client_reference_id", p->client_reference_id};
        params[n++] = (http_pair_t){"metadata[user_id]", p->client_reference_id};
        /* Copied onto the Subscription: its events name the user directly. */
        params[n++] = (http_pair_t){"subscription_data[metadata][user_id]", p->client_reference_id};
    }
    if (p->customer != NULL && p->customer[0] != '\0') {
        params[n++] = (http_pair_t){"customer", p->customer};
    } else if (p->customer_email != NULL && p->customer_email[0] != '\0') {
        params[n++] = (http_pair_t){"customer_email", p->customer_email};
    }
    return create_session(sc, "/v1/checkout/sessions", params, n, p->idempotency_key, out, err);
}

stripe_status_t stripe_create_portal_session(stripe_client_t *sc, const char *customer,
                                             const char *return_url, const char *idempotency_key,
                                             stripe_session_t *out, stripe_error_t *err)
{
    stripe_error_t local;
    err = err_begin(err, &local);
    session_clear(out);
    if (sc == NULL || out == NULL || customer == NULL || customer[0] == '\0') {
        return err_fail(err, STRIPE_ERR_INTERNAL, "missing portal parameters");
    }
    http_pair_t params[2];
    size_t n = 0;
    params[n++] = (http_pair_t){"customer", customer};
    if (return_url != NULL && return_url[0] != '\0') {
        params[n++] = (http_pair_t){"return_url", return_url};
    }
    return create_session(sc, "/v1/billing_portal/sessions", params, n, idempotency_key, out, err);
}

/* Stripe's answer to a repeated meter event identifier (400, param identifier,
 * "An event already exists with identifier X."). */
static bool is_duplicate_identifier(const stripe_error_t *err)
{
    if (err->http_status != 400 || strcmp(err->type, "idempotency_error") == 0) {
        return false;
    }
    if (strstr(err->message, "already exists") == NULL) {
        return false;
    }
    return strcmp(err->param, "identifier") == 0 || strstr(err->message, "identifier") != NULL;
}

stripe_status_t stripe_create_meter_event(stripe_client_t *sc, const stripe_meter_event_t *ev,
                                          bool *already_exists, stripe_error_t *err)
{
    stripe_error_t local;
    err = err_begin(err, &local);
    if (already_exists != NULL) {
        *already_exists = false;
    }
    if (sc == NULL || ev == NULL || ev->event_name == NULL || ev->stripe_customer_id == NULL ||
        ev->stripe_customer_id[0] == '\0' || ev->identifier == NULL || ev->identifier[0] == '\0') {
        return err_fail(err, STRIPE_ERR_INTERNAL, "missing meter event parameters");
    }
    char value[32];
    char ts[32];
    snprintf(value, sizeof value, "%lld", ev->value);
    snprintf(ts, sizeof ts, "%lld", ev->timestamp);
    http_pair_t params[5];
    size_t n = 0;
    params[n++] = (http_pair_t){"event_name", ev->event_name};
    params[n++] = (http_pair_t){"payload[stripe_customer_id]", ev->stripe_customer_id};
    params[n++] = (http_pair_t){"payload[value]", value};
    params[n++] = (http_pair_t){"identifier", ev->identifier};
    if (ev->timestamp > 0) {
        params[n++] = (http_pair_t){"timestamp", ts};
    }
    /* No Idempotency-Key: Stripe would replay a saved 5xx for it; the
     * identifier already deduplicates (a repeat answers "already exists"). */
    cJSON *root = NULL;
    stripe_status_t st =
        stripe_call(sc, "POST", "/v1/billing/meter_events", params, n, NULL, &root, err);
    cJSON_Delete(root);
    if (st != STRIPE_OK && is_duplicate_identifier(err)) {
        if (already_exists != NULL) {
            *already_exists = true;
        }
        err->status = STRIPE_OK;
        return STRIPE_OK;
    }
    return st;
}

stripe_status_t stripe_retrieve_subscription(stripe_client_t *sc, const char *subscription_id,
                                             cJSON **out, stripe_error_t *err)
{
    stripe_error_t local;
    err = err_begin(err, &local);
    if (out != NULL) {
        *out = NULL;
    }
    if (sc == NULL || out == NULL || subscription_id == NULL || subscription_id[0] == '\0') {
        return err_fail(err, STRIPE_ERR_INTERNAL, "missing subscription id");
    }
    char *escaped = http_url_escape(subscription_id);
    if (escaped == NULL) {
        return err_fail(err, STRIPE_ERR_INTERNAL, NULL);
    }
    size_t plen = strlen(escaped) + sizeof("/v1/subscriptions/");
    char *path = malloc(plen);
    if (path == NULL) {
        free(escaped);
        return err_fail(err, STRIPE_ERR_INTERNAL, NULL);
    }
    snprintf(path, plen, "/v1/subscriptions/%s", escaped);
    free(escaped);
    stripe_status_t st = stripe_call(sc, "GET", path, NULL, 0, NULL, out, err);
    free(path);
    return st;
}

stripe_status_t stripe_cancel_subscription_at_period_end(stripe_client_t *sc,
                                                         const char *subscription_id,
                                                         const char *idempotency_key, cJSON **out,
                                                         stripe_error_t *err)
{
    stripe_error_t local;
    err = err_begin(err, &local);
    if (out != NULL) {
        *out = NULL;
    }
    if (sc == NULL || subscription_id == NULL || subscription_id[0] == '\0') {
        return err_fail(err, STRIPE_ERR_INTERNAL, "missing subscription id");
    }
    char *escaped = http_url_escape(subscription_id);
    if (escaped == NULL) {
        return err_fail(err, STRIPE_ERR_INTERNAL, NULL);
    }
    size_t plen = strlen(escaped) + sizeof("/v1/subscriptions/");
    char *path = malloc(plen);
    if (path == NULL) {
        free(escaped);
        return err_fail(err, STRIPE_ERR_INTERNAL, NULL);
    }
    snprintf(path, plen, "/v1/subscriptions/%s", escaped);
    free(escaped);
    const http_pair_t params[] = {{"cancel_at_period_end", "true"}};
    cJSON *root = NULL;
    stripe_status_t st = stripe_call(sc, "POST", path, params, 1, idempotency_key, &root, err);
    free(path);
    if (out != NULL) {
        *out = root;
    } else {
        cJSON_Delete(root);
    }
    return st;
}

/* ---- webhook signatures ---- */

const char *stripe_sig_result_name(stripe_sig_result_t r)
{
    switch (r) {
    case STRIPE_SIG_OK:
        return "ok";
    case STRIPE_SIG_MALFORMED:
        return "malformed";
    case STRIPE_SIG_NO_V1:
        return "no_v1";
    case STRIPE_SIG_MISMATCH:
        return "mismatch";
    case STRIPE_SIG_STALE:
        return "stale";
    case STRIPE_SIG_FUTURE:
        return "future";
    }
    return "unknown";
}

static void hmac_hex(const char *secret, size_t secret_len, const void *msg, size_t msglen,
                     char out[65])
{
    uint8_t mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(secret, secret_len, msg, msglen, mac);
    crypto_hex(mac, sizeof mac, out);
}

/* "<t>.<payload>" as one buffer. Returns a new buffer (caller frees). */
static char *signed_payload(long long t, const void *payload, size_t len, size_t *outlen)
{
    char prefix[32];
    int plen = snprintf(prefix, sizeof prefix, "%lld.", t);
    char *buf = malloc((size_t)plen + len + 1);
    if (buf == NULL) {
        return NULL;
    }
    memcpy(buf, prefix, (size_t)plen);
    if (len > 0) {
        memcpy(buf + plen, payload, len);
    }
    buf[(size_t)plen + len] = '\0';
    *outlen = (size_t)plen + len;
    return buf;
}

void stripe_compute_signature(const char *secret, long long t, const void *payload, size_t len,
                              char out[65])
{
    size_t mlen = 0;
    char *msg = signed_payload(t, payload, len, &mlen);
    if (msg == NULL) {
        out[0] = '\0';
        return;
    }
    hmac_hex(secret, strlen(secret), msg, mlen, out);
    free(msg);
}

/* Parses a non-negative decimal of [p, p+n). Returns false when malformed. */
static bool parse_ts(const char *p, size_t n, long long *out)
{
    if (n == 0 || n > 15) {
        return false;
    }
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

stripe_sig_result_t stripe_verify_signature(const void *payload, size_t len, const char *header,
                                            const char *secrets, long tolerance_s, long long now,
                                            char *err, size_t errlen)
{
    static const char bad_header[] = "Unable to extract timestamp and signatures from header";
    if (header == NULL || header[0] == '\0' || (payload == NULL && len > 0)) {
        errbuf_set(err, errlen, "%s", bad_header);
        return STRIPE_SIG_MALFORMED;
    }
    if (tolerance_s <= 0) {
        tolerance_s = STRIPE_DEFAULT_TOLERANCE_S;
    }

    /* Split on ',' then each item on the first '='. */
    long long t = -1;
    const char *v1[STRIPE_MAX_V1];
    size_t v1len[STRIPE_MAX_V1];
    size_t nv1 = 0;
    const char *p = header;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *item = p;
        while (n > 0 && is_space(*item)) {
            item++;
            n--;
        }
        while (n > 0 && is_space(item[n - 1])) {
            n--;
        }
        const char *eq = memchr(item, '=', n);
        if (eq != NULL) {
            size_t klen = (size_t)(eq - item);
            const char *val = eq + 1;
            size_t vlen = n - klen - 1;
            if (klen == 1 && item[0] == 't') {
                long long parsed;
                if (t >= 0 || !parse_ts(val, vlen, &parsed)) {
                    errbuf_set(err, errlen, "%s", bad_header);
                    return STRIPE_SIG_MALFORMED;
                }
                t = parsed;
            } else if (klen == 2 && item[0] == 'v' && item[1] == '1' && nv1 < STRIPE_MAX_V1) {
                v1[nv1] = val;
                v1len[nv1] = vlen;
                nv1++;
            }
        }
        if (end == NULL) {
            break;
        }
        p = end + 1;
    }
    if (t < 0) {
        errbuf_set(err, errlen, "%s", bad_header);
        return STRIPE_SIG_MALFORMED;
    }
    if (nv1 == 0) {
        errbuf_set(err, errlen, "No signatures found with expected scheme");
        return STRIPE_SIG_NO_V1;
    }

    size_t mlen = 0;
    char *msg = signed_payload(t, payload, len, &mlen);
    if (msg == NULL) {
        errbuf_set(err, errlen, "out of memory");
        return STRIPE_SIG_MISMATCH;
    }
    bool matched = false;
    const char *s = secrets != NULL ? secrets : "";
    while (*s != '\0' && !matched) {
        const char *end = strchr(s, ',');
        size_t n = end != NULL ? (size_t)(end - s) : strlen(s);
        const char *sec = s;
        while (n > 0 && isspace((unsigned char)*sec)) {
            sec++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)sec[n - 1])) {
            n--;
        }
        if (n > 0) {
            char expected[65];
            hmac_hex(sec, n, msg, mlen, expected);
            /* Compare against every v1 without stopping early. */
            for (size_t i = 0; i < nv1; i++) {
                bool eq = v1len[i] == 64 && crypto_equal(expected, v1[i], 64);
                matched = matched || eq;
            }
            memset(expected, 0, sizeof expected);
        }
        if (end == NULL) {
            break;
        }
        s = end + 1;
    }
    free(msg);
    if (!matched) {
        errbuf_set(err, errlen, "No signatures found matching the expected signature for payload");
        return STRIPE_SIG_MISMATCH;
    }
    if (now - t > tolerance_s) {
        errbuf_set(err, errlen, "Timestamp outside the tolerance zone");
        return STRIPE_SIG_STALE;
    }
    if (t - now > tolerance_s) {
        errbuf_set(err, errlen, "Timestamp outside the tolerance zone (in the future)");
        return STRIPE_SIG_FUTURE;
    }
    return STRIPE_SIG_OK;
}
