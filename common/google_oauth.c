/*
 * google_oauth — the Google client, its one request path, OAuth 2.0 and
 * OpenID userinfo. See google_oauth.h for the contract, google_internal.h for
 * the request path drive.c shares, and docs/common/google_oauth.md.
 */
#define _GNU_SOURCE
#include "google_oauth.h"

#include "crypto.h"
#include "google_internal.h"
#include "http_client.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOOGLE_DEFAULT_TIMEOUT_MS 30000L
#define GOOGLE_DEFAULT_RETRIES 3
/* Cap on JSON answers (lists of 1000 files with every field fit easily). */
#define GOOGLE_JSON_MAX_BODY (8u * 1024u * 1024u)
#define GOOGLE_EXPIRES_IN_MAX 86400L /* a token lifetime we believe (Google: ~3600 s) */

/* ---- status names ----------------------------------------------------------- */

bool google_status_transient(google_status_t st)
{
    return st == GOOGLE_ERR_RATE_LIMITED || st == GOOGLE_ERR_SERVER || st == GOOGLE_ERR_NETWORK;
}

const char *google_status_name(google_status_t st)
{
    switch (st) {
    case GOOGLE_OK:
        return "ok";
    case GOOGLE_ERR_AUTH:
        return "auth";
    case GOOGLE_ERR_INVALID_GRANT:
        return "invalid_grant";
    case GOOGLE_ERR_NOT_FOUND:
        return "not_found";
    case GOOGLE_ERR_FORBIDDEN:
        return "forbidden";
    case GOOGLE_ERR_RATE_LIMITED:
        return "rate_limited";
    case GOOGLE_ERR_SERVER:
        return "server";
    case GOOGLE_ERR_NETWORK:
        return "network";
    case GOOGLE_ERR_TOO_LARGE:
        return "too_large";
    case GOOGLE_ERR_BAD_REQUEST:
        return "bad_request";
    case GOOGLE_ERR_PROTOCOL:
        return "protocol";
    }
    return "unknown";
}

/* ---- small helpers ---------------------------------------------------------- */

/* A copy without trailing slashes; NULL stays NULL. Returns -1 on OOM. */
static int dup_url(char **slot, const char *url)
{
    *slot = NULL;
    if (url == NULL)
        return 0;
    size_t len = strlen(url);
    while (len > 0 && url[len - 1] == '/')
        len--;
    *slot = strndup(url, len);
    return *slot == NULL ? -1 : 0;
}

static int dup_opt(char **slot, const char *s)
{
    *slot = NULL;
    if (s == NULL)
        return 0;
    *slot = strdup(s);
    return *slot == NULL ? -1 : 0;
}

void google_error_reset(google_error_t *err)
{
    if (err == NULL)
        return;
    memset(err, 0, sizeof(*err));
    err->retry_after_ms = -1;
}

google_status_t google_error_set(google_error_t *err, google_status_t st, long http_status,
                                 const char *fmt, ...)
{
    if (err == NULL)
        return st;
    err->status = st;
    err->http_status = http_status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return st;
}

/* ---- JSON helpers ----------------------------------------------------------- */

const char *google_json_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int google_json_dup(const cJSON *obj, const char *name, char **slot)
{
    const char *s = google_json_str(obj, name);
    *slot = NULL;
    if (s == NULL)
        return 0;
    *slot = strdup(s);
    return *slot == NULL ? -1 : 0;
}

bool google_json_bool(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    /* Some Google answers carry booleans as strings ("true"). */
    return cJSON_IsString(v) && strcmp(v->valuestring, "true") == 0;
}

/* ---- the one request path ----------------------------------------------------- */

/* Fills err->reason / err->message from Google's error body, if any. */
static void parse_error_body(const http_response_t *resp, google_error_t *err)
{
    if (resp->body == NULL || resp->body_len == 0)
        return;
    cJSON *root = cJSON_ParseWithLength(resp->body, resp->body_len);
    if (root == NULL)
        return;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    const char *reason = NULL;
    const char *message = NULL;
    if (cJSON_IsObject(e)) {
        const cJSON *errors = cJSON_GetObjectItemCaseSensitive(e, "errors");
        const cJSON *first = cJSON_IsArray(errors) ? cJSON_GetArrayItem(errors, 0) : NULL;
        reason = google_json_str(first, "reason");
        if (reason == NULL)
            reason = google_json_str(e, "status"); /* newer bodies: "PERMISSION_DENIED" */
        message = google_json_str(e, "message");
        if (message == NULL)
            message = google_json_str(first, "message");
    } else if (cJSON_IsString(e)) {
        reason = e->valuestring;
        message = google_json_str(root, "error_description");
    }
    if (reason != NULL)
        snprintf(err->reason, sizeof(err->reason), "%s", reason);
    if (message != NULL)
        snprintf(err->message, sizeof(err->message), "%s", message);
    cJSON_Delete(root);
}

/* The status for a final non-2xx answer. */
static google_status_t classify(long status, const char *reason, google_api_kind_t kind)
{
    if (kind == GOOGLE_API_TOKEN && status < 500 && status != 429) {
        /* invalid_grant: the code or refresh token is dead. Anything else
         * (invalid_client, unauthorized_client, invalid_request, ...) is our
         * configuration or request, never "refresh the access token". */
        if (strcmp(reason, "invalid_grant") == 0)
            return GOOGLE_ERR_INVALID_GRANT;
        if (status >= 400 && status != 408)
            return GOOGLE_ERR_BAD_REQUEST;
    }
    if (status == 401)
        return GOOGLE_ERR_AUTH;
    if (status == 403) {
        if (strcmp(reason, "userRateLimitExceeded") == 0 ||
            strcmp(reason, "rateLimitExceeded") == 0)
            return GOOGLE_ERR_RATE_LIMITED;
        return GOOGLE_ERR_FORBIDDEN;
    }
    if (status == 404)
        return GOOGLE_ERR_NOT_FOUND;
    if (status == 429)
        return GOOGLE_ERR_RATE_LIMITED;
    if (status == 408)
        return GOOGLE_ERR_NETWORK;
    if (status == 413)
        return GOOGLE_ERR_TOO_LARGE;
    if (status >= 500)
        return GOOGLE_ERR_SERVER;
    if (status >= 400)
        return GOOGLE_ERR_BAD_REQUEST;
    return GOOGLE_ERR_PROTOCOL; /* 1xx/3xx: nothing we asked for */
}

/* See google_internal.h. */
google_status_t google_call(google_client_t *gc, const google_request_t *r, http_response_t *resp,
                            google_error_t *err)
{
    char *auth = NULL;
    http_pair_t headers[1 + GOOGLE_MAX_EXTRA_HEADERS];
    size_t nheaders = 0;

    if (r->url == NULL || r->nheaders > GOOGLE_MAX_EXTRA_HEADERS) {
        memset(resp, 0, sizeof(*resp));
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "%s: out of memory or URL not configured", r->what);
    }
    if (r->bearer != NULL) {
        if (asprintf(&auth, "Bearer %s", r->bearer) < 0) {
            memset(resp, 0, sizeof(*resp));
            return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "%s: out of memory", r->what);
        }
        headers[nheaders++] = (http_pair_t){"Authorization", auth};
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        headers[nheaders++] = r->headers[i];
    }

    http_opts_t opts = {
        .timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : gc->timeout_ms,
        .max_body = r->max_body != 0 ? r->max_body : GOOGLE_JSON_MAX_BODY,
        .max_retries = r->no_retry ? 0 : gc->max_retries,
    };
    http_request_t req = {
        .method = r->method,
        .url = r->url,
        .headers = headers,
        .nheaders = nheaders,
        .body = r->body,
        .body_len = r->body_len,
        .content_type = r->content_type,
        .sink = r->sink,
        .opts = &opts,
        .fresh_connection = r->no_retry,
    };
    http_result_t hr = http_client_do(gc->http, &req, resp);
    crypto_free_secret(auth);

    if (err != NULL) {
        err->http_status = resp->status;
        err->retry_after_ms = http_retry_after_ms(resp->retry_after);
    }
    switch (hr) {
    case HTTP_RESULT_OK:
        break;
    case HTTP_ERR_TOO_LARGE:
        /* An error status with a big body is still that error. */
        if (resp->status >= 300) {
            google_status_t st = classify(resp->status, "", r->kind);
            return google_error_set(err, st, resp->status, "%s: HTTP %ld", r->what, resp->status);
        }
        return google_error_set(err, GOOGLE_ERR_TOO_LARGE, resp->status, "%s: %s", r->what,
                                resp->error);
    case HTTP_ERR_CONNECT:
    case HTTP_ERR_TIMEOUT:
    case HTTP_ERR_IO:
        return google_error_set(err, GOOGLE_ERR_NETWORK, 0, "%s: %s (after %d attempts)", r->what,
                                resp->error, resp->attempts);
    case HTTP_ERR_INTERNAL:
    default:
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "%s: %s", r->what, resp->error);
    }
    if (resp->status >= 200 && resp->status < 300)
        return GOOGLE_OK;

    google_error_t body_err;
    google_error_reset(&body_err);
    parse_error_body(resp, &body_err);
    google_status_t st = classify(resp->status, body_err.reason, r->kind);
    if (err != NULL) {
        snprintf(err->reason, sizeof(err->reason), "%s", body_err.reason);
        if (body_err.message[0] != '\0')
            google_error_set(err, st, resp->status, "%s: %s", r->what, body_err.message);
        else
            google_error_set(err, st, resp->status, "%s: HTTP %ld", r->what, resp->status);
    }
    return st;
}

google_status_t google_call_json(google_client_t *gc, const google_request_t *r, cJSON **root,
                                 google_error_t *err)
{
    http_response_t resp;
    *root = NULL;
    google_status_t st = google_call(gc, r, &resp, err);
    if (st == GOOGLE_OK) {
        *root = cJSON_ParseWithLength(resp.body != NULL ? resp.body : "", resp.body_len);
        if (!cJSON_IsObject(*root)) {
            cJSON_Delete(*root);
            *root = NULL;
            st = google_error_set(err, GOOGLE_ERR_PROTOCOL, resp.status,
                                  "%s: the answer is not a JSON object", r->what);
        }
    }
    http_response_free(&resp);
    return st;
}

/* ---- client ----------------------------------------------------------------- */

google_client_t *google_client_new(const google_config_t *cfg)
{
    if (cfg == NULL)
        return NULL;
    google_client_t *gc = calloc(1, sizeof(*gc));
    if (gc == NULL)
        return NULL;
    gc->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : GOOGLE_DEFAULT_TIMEOUT_MS;
    gc->max_retries = cfg->max_retries < 0 ? GOOGLE_DEFAULT_RETRIES : cfg->max_retries;
    gc->http = http_client_new();
    if (gc->http == NULL || dup_opt(&gc->client_id, cfg->client_id) != 0 ||
        dup_opt(&gc->client_secret, cfg->client_secret) != 0 ||
        dup_url(&gc->token_url, cfg->token_url) != 0 ||
        dup_url(&gc->userinfo_url, cfg->userinfo_url) != 0 ||
        dup_url(&gc->revoke_url, cfg->revoke_url) != 0 ||
        dup_url(&gc->drive_api_url, cfg->drive_api_url) != 0 ||
        dup_url(&gc->drive_upload_url, cfg->drive_upload_url) != 0) {
        google_client_free(gc);
        return NULL;
    }
    return gc;
}

void google_client_free(google_client_t *gc)
{
    if (gc == NULL)
        return;
    http_client_free(gc->http);
    free(gc->client_id);
    crypto_free_secret(gc->client_secret);
    free(gc->token_url);
    free(gc->userinfo_url);
    free(gc->revoke_url);
    free(gc->drive_api_url);
    free(gc->drive_upload_url);
    free(gc);
}

/* ---- OAuth ------------------------------------------------------------------ */

void google_tokens_free(google_tokens_t *t)
{
    if (t == NULL)
        return;
    crypto_free_secret(t->access_token);
    crypto_free_secret(t->refresh_token);
    free(t->scope);
    crypto_free_secret(t->id_token);
    memset(t, 0, sizeof(*t));
}

static google_status_t token_request(google_client_t *gc, const http_pair_t *pairs, size_t n,
                                     const char *what, google_tokens_t *out, google_error_t *err)
{
    char *form = http_form_encode(pairs, n);
    if (form == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "%s: out of memory", what);
    google_request_t r = {
        .method = "POST",
        .url = gc->token_url,
        .content_type = "application/x-www-form-urlencoded",
        .body = form,
        .body_len = strlen(form),
        .max_body = 1u << 20,
        .kind = GOOGLE_API_TOKEN,
        .what = what,
    };
    cJSON *root = NULL;
    google_status_t st = google_call_json(gc, &r, &root, err);
    crypto_free_secret(form);
    if (st != GOOGLE_OK)
        return st;

    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
    if (google_json_str(root, "access_token") == NULL) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "%s: no access_token in the answer",
                              what);
        goto out;
    }
    if (google_json_dup(root, "access_token", &out->access_token) != 0 ||
        google_json_dup(root, "refresh_token", &out->refresh_token) != 0 ||
        google_json_dup(root, "scope", &out->scope) != 0 ||
        google_json_dup(root, "id_token", &out->id_token) != 0) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "%s: out of memory", what);
        goto out;
    }
    /* Google always sends it (about an hour); none: assume the hour. Clamped to
     * [0, a day] before any conversion: a double beyond long is undefined
     * behaviour to convert, and a far expiry would keep a dead token. */
    double secs = 3600;
    if (cJSON_IsNumber(exp))
        secs = exp->valuedouble;
    else if (cJSON_IsString(exp))
        secs = strtod(exp->valuestring, NULL);
    if (!(secs >= 0)) /* negative or NaN */
        secs = 0;
    out->expires_in = secs > GOOGLE_EXPIRES_IN_MAX ? GOOGLE_EXPIRES_IN_MAX : (long)secs;
    if (out->refresh_token != NULL && out->refresh_token[0] == '\0') {
        free(out->refresh_token);
        out->refresh_token = NULL;
    }
out:
    cJSON_Delete(root);
    if (st != GOOGLE_OK)
        google_tokens_free(out);
    return st;
}

google_status_t google_exchange_code(google_client_t *gc, const char *code,
                                     const char *code_verifier, const char *redirect_uri,
                                     google_tokens_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    google_error_reset(err);
    if (code == NULL || redirect_uri == NULL)
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0,
                                "token: code and redirect_uri are required");
    http_pair_t pairs[6];
    size_t n = 0;
    pairs[n++] = (http_pair_t){"grant_type", "authorization_code"};
    pairs[n++] = (http_pair_t){"code", code};
    pairs[n++] = (http_pair_t){"redirect_uri", redirect_uri};
    pairs[n++] = (http_pair_t){"client_id", gc->client_id != NULL ? gc->client_id : ""};
    pairs[n++] = (http_pair_t){"client_secret", gc->client_secret != NULL ? gc->client_secret : ""};
    if (code_verifier != NULL)
        pairs[n++] = (http_pair_t){"code_verifier", code_verifier};
    return token_request(gc, pairs, n, "token (authorization_code)", out, err);
}

google_status_t google_refresh(google_client_t *gc, const char *refresh_token, google_tokens_t *out,
                               google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    google_error_reset(err);
    if (refresh_token == NULL || refresh_token[0] == '\0')
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "token: no refresh token");
    const http_pair_t pairs[] = {
        {"grant_type", "refresh_token"},
        {"refresh_token", refresh_token},
        {"client_id", gc->client_id != NULL ? gc->client_id : ""},
        {"client_secret", gc->client_secret != NULL ? gc->client_secret : ""},
    };
    return token_request(gc, pairs, sizeof(pairs) / sizeof(pairs[0]), "token (refresh_token)", out,
                         err);
}

google_status_t google_revoke_token(google_client_t *gc, const char *token, bool *already,
                                    google_error_t *err)
{
    google_error_reset(err);
    if (already != NULL)
        *already = false;
    if (token == NULL || token[0] == '\0')
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "revoke: no token");
    const http_pair_t pairs[] = {{"token", token}};
    char *form = http_form_encode(pairs, 1);
    if (form == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "revoke: out of memory");
    google_request_t r = {
        .method = "POST",
        .url = gc->revoke_url,
        .content_type = "application/x-www-form-urlencoded",
        .body = form,
        .body_len = strlen(form),
        .max_body = 1u << 16,
        .kind = GOOGLE_API_TOKEN,
        .what = "revoke",
    };
    http_response_t resp;
    google_error_t local;
    google_error_reset(&local);
    google_status_t st = google_call(gc, &r, &resp, &local);
    crypto_free_secret(form);
    http_response_free(&resp);
    if (st == GOOGLE_ERR_BAD_REQUEST && local.http_status == 400 &&
        strcmp(local.reason, "invalid_token") == 0) {
        if (already != NULL)
            *already = true;
        st = GOOGLE_OK;
    } else if (err != NULL) {
        *err = local;
    }
    return st;
}

void google_userinfo_free(google_userinfo_t *u)
{
    if (u == NULL)
        return;
    free(u->sub);
    free(u->email);
    free(u->name);
    free(u->picture);
    memset(u, 0, sizeof(*u));
}

google_status_t google_userinfo(google_client_t *gc, const char *access_token,
                                google_userinfo_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    google_error_reset(err);
    google_request_t r = {
        .method = "GET",
        .url = gc->userinfo_url,
        .bearer = access_token,
        .max_body = 1u << 20,
        .kind = GOOGLE_API_RESOURCE,
        .what = "userinfo",
    };
    cJSON *root = NULL;
    google_status_t st = google_call_json(gc, &r, &root, err);
    if (st != GOOGLE_OK)
        return st;
    if (google_json_str(root, "sub") == NULL || google_json_str(root, "sub")[0] == '\0') {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "userinfo: no sub in the answer");
    } else if (google_json_dup(root, "sub", &out->sub) != 0 ||
               google_json_dup(root, "email", &out->email) != 0 ||
               google_json_dup(root, "name", &out->name) != 0 ||
               google_json_dup(root, "picture", &out->picture) != 0) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "userinfo: out of memory");
    } else {
        out->email_verified = google_json_bool(root, "email_verified");
    }
    cJSON_Delete(root);
    if (st != GOOGLE_OK)
        google_userinfo_free(out);
    return st;
}
