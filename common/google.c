/*
 * google — Google OAuth 2.0, OpenID userinfo, Drive v3 and the shared Drive
 * token manager. See google.h for the contract and docs/common/google.md.
 *
 * Every call goes through api_call(): one http_client_do() with the client's
 * timeouts and retries (network, 408, 429, 5xx; never 403), then one
 * classification of the outcome into google_status_t. Nothing here logs, and
 * no error message is built from a URL, a header or a request body, so tokens,
 * codes and secrets cannot end up in one.
 */
#define _GNU_SOURCE
#include "google.h"

#include "http_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GOOGLE_DEFAULT_TIMEOUT_MS 30000L
#define GOOGLE_DEFAULT_RETRIES 3
/* Cap on JSON answers (lists of 1000 files with every field fit easily). */
#define GOOGLE_JSON_MAX_BODY (8u * 1024u * 1024u)
/* Downloads: room for an error body even when the caller's cap is tiny. */
#define GOOGLE_ERROR_BODY_ROOM (64u * 1024u)
/* Refresh when the access token expires within this many seconds. */
#define GOOGLE_APPS_PREFIX "application/vnd.google-apps."

struct google_client {
    http_client_t *http;
    char *client_id;
    char *client_secret;
    char *token_url;
    char *userinfo_url;
    char *drive_api_url;
    char *drive_upload_url;
    long timeout_ms;
    int max_retries;
};

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

/* Overwrites a secret before freeing it. */
static void free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static void err_reset(google_error_t *err)
{
    if (err == NULL)
        return;
    memset(err, 0, sizeof(*err));
    err->retry_after_ms = -1;
}

__attribute__((format(printf, 4, 5))) static google_status_t
err_set(google_error_t *err, google_status_t st, long http_status, const char *fmt, ...)
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

/* A growing string for URLs. On OOM it turns into the failed state (NULL). */
typedef struct {
    char *s;
    size_t len;
    size_t cap;
    bool failed;
} strbuf_t;

static void sb_add(strbuf_t *sb, const char *s)
{
    if (sb->failed || s == NULL)
        return;
    size_t n = strlen(s);
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 128;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *p = realloc(sb->s, cap);
        if (p == NULL) {
            sb->failed = true;
            return;
        }
        sb->s = p;
        sb->cap = cap;
    }
    memcpy(sb->s + sb->len, s, n + 1);
    sb->len += n;
}

static void sb_add_escaped(strbuf_t *sb, const char *s)
{
    if (sb->failed)
        return;
    char *e = http_url_escape(s != NULL ? s : "");
    if (e == NULL) {
        sb->failed = true;
        return;
    }
    sb_add(sb, e);
    free(e);
}

/* "&name=value" (value escaped); the first parameter gets '?' instead. */
static void sb_param(strbuf_t *sb, const char *name, const char *value)
{
    if (sb->failed)
        return;
    sb_add(sb, strchr(sb->s != NULL ? sb->s : "", '?') != NULL ? "&" : "?");
    sb_add(sb, name);
    sb_add(sb, "=");
    sb_add_escaped(sb, value);
}

/* Drive's "pageSize" parameter: page_size within 1..1000, 100 when below 1. */
static void sb_page_size(strbuf_t *sb, int page_size)
{
    if (page_size < 1)
        page_size = 100;
    if (page_size > 1000)
        page_size = 1000;
    char size[16];
    snprintf(size, sizeof(size), "%d", page_size);
    sb_param(sb, "pageSize", size);
}

/* Returns the built string (caller frees) or NULL on OOM. */
static char *sb_take(strbuf_t *sb)
{
    if (sb->failed || sb->s == NULL) {
        free(sb->s);
        sb->s = NULL;
        return NULL;
    }
    char *s = sb->s;
    sb->s = NULL;
    return s;
}

/* ---- JSON helpers ----------------------------------------------------------- */

static const char *json_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Copies obj[name] when it is a string into *slot; -1 on OOM only. */
static int json_dup(const cJSON *obj, const char *name, char **slot)
{
    const char *s = json_str(obj, name);
    *slot = NULL;
    if (s == NULL)
        return 0;
    *slot = strdup(s);
    return *slot == NULL ? -1 : 0;
}

static bool json_bool(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    /* Some Google answers carry booleans as strings ("true"). */
    return cJSON_IsString(v) && strcmp(v->valuestring, "true") == 0;
}

/* Drive sends int64 values as decimal strings; accept numbers too. -1: none. */
static long long json_int64(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsNumber(v))
        return v->valuedouble >= 0 ? (long long)v->valuedouble : -1;
    if (cJSON_IsString(v) && v->valuestring[0] >= '0' && v->valuestring[0] <= '9') {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v->valuestring, &end, 10);
        if (errno == 0 && end != NULL && *end == '\0')
            return n;
    }
    return -1;
}

/* ---- the one request path ----------------------------------------------------- */

typedef enum {
    API_RESOURCE, /* Drive, userinfo: a bearer token; 401 means that token */
    API_TOKEN,    /* the token endpoint: client auth in the body, grants */
} api_kind_t;

typedef struct {
    const char *method;
    const char *url;
    const char *bearer; /* access token or NULL */
    const char *content_type;
    const void *body;
    size_t body_len;
    size_t max_body; /* 0: GOOGLE_JSON_MAX_BODY */
    api_kind_t kind;
    const char *what; /* "files.list": names the call in messages */
} api_req_t;

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
        reason = json_str(first, "reason");
        if (reason == NULL)
            reason = json_str(e, "status"); /* newer bodies: "PERMISSION_DENIED" */
        message = json_str(e, "message");
        if (message == NULL)
            message = json_str(first, "message");
    } else if (cJSON_IsString(e)) {
        reason = e->valuestring;
        message = json_str(root, "error_description");
    }
    if (reason != NULL)
        snprintf(err->reason, sizeof(err->reason), "%s", reason);
    if (message != NULL)
        snprintf(err->message, sizeof(err->message), "%s", message);
    cJSON_Delete(root);
}

/* The status for a final non-2xx answer. */
static google_status_t classify(long status, const char *reason, api_kind_t kind)
{
    if (kind == API_TOKEN && status < 500 && status != 429) {
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

/* Performs the request. On GOOGLE_OK, resp holds a 2xx answer. resp must
 * always be freed with http_response_free by the caller. */
static google_status_t api_call(google_client_t *gc, const api_req_t *r, http_response_t *resp,
                                google_error_t *err)
{
    char *auth = NULL;
    http_pair_t headers[1];
    size_t nheaders = 0;

    if (r->url == NULL) {
        memset(resp, 0, sizeof(*resp));
        return err_set(err, GOOGLE_ERR_PROTOCOL, 0, "%s: out of memory or URL not configured",
                       r->what);
    }
    if (r->bearer != NULL) {
        if (asprintf(&auth, "Bearer %s", r->bearer) < 0) {
            memset(resp, 0, sizeof(*resp));
            return err_set(err, GOOGLE_ERR_PROTOCOL, 0, "%s: out of memory", r->what);
        }
        headers[nheaders++] = (http_pair_t){"Authorization", auth};
    }

    http_opts_t opts = {
        .timeout_ms = gc->timeout_ms,
        .max_body = r->max_body != 0 ? r->max_body : GOOGLE_JSON_MAX_BODY,
        .max_retries = gc->max_retries,
    };
    http_request_t req = {
        .method = r->method,
        .url = r->url,
        .headers = headers,
        .nheaders = nheaders,
        .body = r->body,
        .body_len = r->body_len,
        .content_type = r->content_type,
        .opts = &opts,
    };
    http_result_t hr = http_client_do(gc->http, &req, resp);
    free_secret(auth);

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
            return err_set(err, st, resp->status, "%s: HTTP %ld", r->what, resp->status);
        }
        return err_set(err, GOOGLE_ERR_TOO_LARGE, resp->status, "%s: %s", r->what, resp->error);
    case HTTP_ERR_CONNECT:
    case HTTP_ERR_TIMEOUT:
    case HTTP_ERR_IO:
        return err_set(err, GOOGLE_ERR_NETWORK, 0, "%s: %s (after %d attempts)", r->what,
                       resp->error, resp->attempts);
    case HTTP_ERR_INTERNAL:
    default:
        return err_set(err, GOOGLE_ERR_PROTOCOL, 0, "%s: %s", r->what, resp->error);
    }
    if (resp->status >= 200 && resp->status < 300)
        return GOOGLE_OK;

    google_error_t body_err;
    err_reset(&body_err);
    parse_error_body(resp, &body_err);
    google_status_t st = classify(resp->status, body_err.reason, r->kind);
    if (err != NULL) {
        snprintf(err->reason, sizeof(err->reason), "%s", body_err.reason);
        if (body_err.message[0] != '\0')
            err_set(err, st, resp->status, "%s: %s", r->what, body_err.message);
        else
            err_set(err, st, resp->status, "%s: HTTP %ld", r->what, resp->status);
    }
    return st;
}

/* api_call + parse the JSON object of a 2xx answer (*root: caller deletes). */
static google_status_t api_json(google_client_t *gc, const api_req_t *r, cJSON **root,
                                google_error_t *err)
{
    http_response_t resp;
    *root = NULL;
    google_status_t st = api_call(gc, r, &resp, err);
    if (st == GOOGLE_OK) {
        *root = cJSON_ParseWithLength(resp.body != NULL ? resp.body : "", resp.body_len);
        if (!cJSON_IsObject(*root)) {
            cJSON_Delete(*root);
            *root = NULL;
            st = err_set(err, GOOGLE_ERR_PROTOCOL, resp.status,
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
    free_secret(gc->client_secret);
    free(gc->token_url);
    free(gc->userinfo_url);
    free(gc->drive_api_url);
    free(gc->drive_upload_url);
    free(gc);
}

/* ---- OAuth ------------------------------------------------------------------ */

void google_tokens_free(google_tokens_t *t)
{
    if (t == NULL)
        return;
    free_secret(t->access_token);
    free_secret(t->refresh_token);
    free(t->scope);
    free_secret(t->id_token);
    memset(t, 0, sizeof(*t));
}

static google_status_t token_request(google_client_t *gc, const http_pair_t *pairs, size_t n,
                                     const char *what, google_tokens_t *out, google_error_t *err)
{
    char *form = http_form_encode(pairs, n);
    if (form == NULL)
        return err_set(err, GOOGLE_ERR_PROTOCOL, 0, "%s: out of memory", what);
    api_req_t r = {
        .method = "POST",
        .url = gc->token_url,
        .content_type = "application/x-www-form-urlencoded",
        .body = form,
        .body_len = strlen(form),
        .max_body = 1u << 20,
        .kind = API_TOKEN,
        .what = what,
    };
    cJSON *root = NULL;
    google_status_t st = api_json(gc, &r, &root, err);
    free_secret(form);
    if (st != GOOGLE_OK)
        return st;

    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
    if (json_str(root, "access_token") == NULL) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "%s: no access_token in the answer", what);
        goto out;
    }
    if (json_dup(root, "access_token", &out->access_token) != 0 ||
        json_dup(root, "refresh_token", &out->refresh_token) != 0 ||
        json_dup(root, "scope", &out->scope) != 0 ||
        json_dup(root, "id_token", &out->id_token) != 0) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "%s: out of memory", what);
        goto out;
    }
    if (cJSON_IsNumber(exp))
        out->expires_in = (long)exp->valuedouble;
    else if (cJSON_IsString(exp))
        out->expires_in = strtol(exp->valuestring, NULL, 10);
    else
        out->expires_in = 3600; /* Google always sends it; assume its usual hour */
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
    err_reset(err);
    if (code == NULL || redirect_uri == NULL)
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "token: code and redirect_uri are required");
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
    err_reset(err);
    if (refresh_token == NULL || refresh_token[0] == '\0')
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "token: no refresh token");
    const http_pair_t pairs[] = {
        {"grant_type", "refresh_token"},
        {"refresh_token", refresh_token},
        {"client_id", gc->client_id != NULL ? gc->client_id : ""},
        {"client_secret", gc->client_secret != NULL ? gc->client_secret : ""},
    };
    return token_request(gc, pairs, sizeof(pairs) / sizeof(pairs[0]), "token (refresh_token)", out,
                         err);
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
    err_reset(err);
    api_req_t r = {
        .method = "GET",
        .url = gc->userinfo_url,
        .bearer = access_token,
        .max_body = 1u << 20,
        .kind = API_RESOURCE,
        .what = "userinfo",
    };
    cJSON *root = NULL;
    google_status_t st = api_json(gc, &r, &root, err);
    if (st != GOOGLE_OK)
        return st;
    if (json_str(root, "sub") == NULL || json_str(root, "sub")[0] == '\0') {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "userinfo: no sub in the answer");
    } else if (json_dup(root, "sub", &out->sub) != 0 || json_dup(root, "email", &out->email) != 0 ||
               json_dup(root, "name", &out->name) != 0 ||
               json_dup(root, "picture", &out->picture) != 0) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "userinfo: out of memory");
    } else {
        out->email_verified = json_bool(root, "email_verified");
    }
    cJSON_Delete(root);
    if (st != GOOGLE_OK)
        google_userinfo_free(out);
    return st;
}

/* ---- Drive: files ------------------------------------------------------------- */

void drive_file_free(drive_file_t *f)
{
    if (f == NULL)
        return;
    free(f->id);
    free(f->name);
    free(f->mime_type);
    free(f->modified_time);
    free(f->created_time);
    free(f->md5);
    for (size_t i = 0; i < f->nparents; i++)
        free(f->parents[i]);
    free(f->parents);
    free(f->web_view_link);
    free(f->web_content_link);
    cJSON_Delete(f->app_properties);
    memset(f, 0, sizeof(*f));
    f->size = -1;
}

/* Fills f from a Drive file resource. 0, or -1 (f freed) when it has no id or
 * memory ran out. */
static int file_from_json(const cJSON *j, drive_file_t *f)
{
    memset(f, 0, sizeof(*f));
    f->size = -1;
    if (!cJSON_IsObject(j) || json_str(j, "id") == NULL)
        return -1;
    if (json_dup(j, "id", &f->id) != 0 || json_dup(j, "name", &f->name) != 0 ||
        json_dup(j, "mimeType", &f->mime_type) != 0 ||
        json_dup(j, "modifiedTime", &f->modified_time) != 0 ||
        json_dup(j, "createdTime", &f->created_time) != 0 ||
        json_dup(j, "md5Checksum", &f->md5) != 0 ||
        json_dup(j, "webViewLink", &f->web_view_link) != 0 ||
        json_dup(j, "webContentLink", &f->web_content_link) != 0)
        goto fail;
    f->size = json_int64(j, "size");
    f->trashed = json_bool(j, "trashed");
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(j, "capabilities");
    f->can_add_children = json_bool(caps, "canAddChildren");
    f->can_edit = json_bool(caps, "canEdit");

    const cJSON *parents = cJSON_GetObjectItemCaseSensitive(j, "parents");
    if (cJSON_IsArray(parents)) {
        int n = cJSON_GetArraySize(parents);
        if (n > 0) {
            f->parents = calloc((size_t)n, sizeof(char *));
            if (f->parents == NULL)
                goto fail;
            const cJSON *p;
            cJSON_ArrayForEach(p, parents)
            {
                if (!cJSON_IsString(p))
                    continue;
                f->parents[f->nparents] = strdup(p->valuestring);
                if (f->parents[f->nparents] == NULL)
                    goto fail;
                f->nparents++;
            }
        }
    }
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(j, "appProperties");
    if (cJSON_IsObject(props)) {
        f->app_properties = cJSON_Duplicate(props, true);
        if (f->app_properties == NULL)
            goto fail;
    }
    return 0;
fail:
    drive_file_free(f);
    return -1;
}

static bool ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

bool drive_file_is_image(const drive_file_t *f)
{
    static const char *const types[] = {"image/jpeg", "image/png",  "image/webp",
                                        "image/tiff", "image/heic", "image/heif"};
    static const char *const exts[] = {".jpg", ".jpeg", ".png",  ".webp",
                                       ".tif", ".tiff", ".heic", ".heif"};
    if (f == NULL)
        return false;
    const char *mime = f->mime_type != NULL ? f->mime_type : "";
    if (strcmp(mime, DRIVE_FOLDER_MIME) == 0 ||
        strncmp(mime, GOOGLE_APPS_PREFIX, sizeof(GOOGLE_APPS_PREFIX) - 1) == 0)
        return false;
    /* Ignore parameters ("image/jpeg; charset=..." never happens, but cheap). */
    size_t mlen = strcspn(mime, ";");
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strlen(types[i]) == mlen && strncasecmp(mime, types[i], mlen) == 0)
            return true;
    }
    bool generic = mlen == 0 || (mlen == strlen("application/octet-stream") &&
                                 strncasecmp(mime, "application/octet-stream", mlen) == 0);
    if (!generic || f->name == NULL)
        return false;
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        if (ends_with_ci(f->name, exts[i]))
            return true;
    }
    return false;
}

void drive_file_list_free(drive_file_list_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        drive_file_free(&l->files[i]);
    free(l->files);
    free(l->next_page_token);
    memset(l, 0, sizeof(*l));
}

/* Base URL + "/" + escaped file id + suffix. */
static char *file_url(const char *base, const char *file_id, const char *suffix)
{
    if (base == NULL || file_id == NULL)
        return NULL;
    strbuf_t sb = {0};
    sb_add(&sb, base);
    sb_add(&sb, "/files/");
    sb_add_escaped(&sb, file_id);
    sb_add(&sb, suffix);
    return sb_take(&sb);
}

google_status_t drive_files_list(google_client_t *gc, const char *access_token, const char *q,
                                 const char *order_by, int page_size, const char *page_token,
                                 drive_file_list_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    err_reset(err);
    if (gc->drive_api_url == NULL)
        return err_set(err, GOOGLE_ERR_PROTOCOL, 0, "files.list: DRIVE_API_URL not configured");

    strbuf_t sb = {0};
    sb_add(&sb, gc->drive_api_url);
    sb_add(&sb, "/files");
    sb_page_size(&sb, page_size);
    sb_param(&sb, "fields", "nextPageToken,files(" DRIVE_FILE_FIELDS ")");
    if (q != NULL && q[0] != '\0')
        sb_param(&sb, "q", q);
    if (order_by != NULL && order_by[0] != '\0')
        sb_param(&sb, "orderBy", order_by);
    if (page_token != NULL && page_token[0] != '\0')
        sb_param(&sb, "pageToken", page_token);
    char *url = sb_take(&sb);

    api_req_t r = {.method = "GET", .url = url, .bearer = access_token, .what = "files.list"};
    cJSON *root = NULL;
    google_status_t st = api_json(gc, &r, &root, err);
    free(url);
    if (st != GOOGLE_OK)
        return st;

    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    int n = cJSON_IsArray(files) ? cJSON_GetArraySize(files) : 0;
    if (files != NULL && !cJSON_IsArray(files)) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "files.list: files is not an array");
        goto out;
    }
    if (n > 0) {
        out->files = calloc((size_t)n, sizeof(drive_file_t));
        if (out->files == NULL) {
            st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "files.list: out of memory");
            goto out;
        }
        const cJSON *jf;
        cJSON_ArrayForEach(jf, files)
        {
            if (file_from_json(jf, &out->files[out->n]) != 0) {
                st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "files.list: a file without an id");
                goto out;
            }
            out->n++;
        }
    }
    if (json_dup(root, "nextPageToken", &out->next_page_token) != 0)
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "files.list: out of memory");
out:
    cJSON_Delete(root);
    if (st != GOOGLE_OK)
        drive_file_list_free(out);
    return st;
}

/* A file resource answer into out. */
static google_status_t file_answer(google_client_t *gc, const api_req_t *r, drive_file_t *out,
                                   google_error_t *err)
{
    cJSON *root = NULL;
    google_status_t st = api_json(gc, r, &root, err);
    if (st != GOOGLE_OK)
        return st;
    if (file_from_json(root, out) != 0)
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "%s: no file id in the answer", r->what);
    cJSON_Delete(root);
    return st;
}

google_status_t drive_files_get(google_client_t *gc, const char *access_token, const char *file_id,
                                drive_file_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->size = -1;
    err_reset(err);
    if (file_id == NULL || file_id[0] == '\0')
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "files.get: no file id");
    char *url = NULL;
    if (gc->drive_api_url != NULL) {
        strbuf_t sb = {0};
        sb_add(&sb, gc->drive_api_url);
        sb_add(&sb, "/files/");
        sb_add_escaped(&sb, file_id);
        sb_add(&sb, "?fields=");
        sb_add_escaped(&sb, DRIVE_FILE_FIELDS);
        url = sb_take(&sb);
    }
    api_req_t r = {.method = "GET", .url = url, .bearer = access_token, .what = "files.get"};
    google_status_t st = file_answer(gc, &r, out, err);
    free(url);
    return st;
}

google_status_t drive_download(google_client_t *gc, const char *access_token, const char *file_id,
                               size_t max_bytes, void **data, size_t *len, google_error_t *err)
{
    *data = NULL;
    *len = 0;
    err_reset(err);
    if (file_id == NULL || file_id[0] == '\0')
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "download: no file id");
    char *url = file_url(gc->drive_api_url, file_id, "?alt=media");
    /* The transport cap leaves room for an error body; the caller's cap is
     * checked exactly below. When the file is bigger than the transport cap,
     * curl stops early (Content-Length or streaming). */
    size_t transport_cap = max_bytes > GOOGLE_ERROR_BODY_ROOM ? max_bytes : GOOGLE_ERROR_BODY_ROOM;
    api_req_t r = {
        .method = "GET",
        .url = url,
        .bearer = access_token,
        .max_body = transport_cap,
        .what = "download",
    };
    http_response_t resp;
    google_status_t st = api_call(gc, &r, &resp, err);
    free(url);
    if (st == GOOGLE_OK) {
        if (resp.body_len > max_bytes) {
            st = err_set(err, GOOGLE_ERR_TOO_LARGE, resp.status, "download: file over %zu bytes",
                         max_bytes);
        } else {
            /* Hand the body over (it is NUL-terminated, which callers may ignore). */
            *data = resp.body;
            *len = resp.body_len;
            resp.body = NULL;
            resp.body_len = 0;
        }
    } else if (st == GOOGLE_ERR_TOO_LARGE && err != NULL) {
        snprintf(err->message, sizeof(err->message), "download: file over %zu bytes", max_bytes);
    }
    http_response_free(&resp);
    return st;
}

/* {"name","mimeType","parents":[p],"appProperties":{...}} (mime may be NULL). */
static char *file_metadata(const char *name, const char *mime_type, const char *parent_id,
                           const cJSON *app_properties)
{
    cJSON *meta = cJSON_CreateObject();
    char *out = NULL;
    if (meta == NULL)
        return NULL;
    if (cJSON_AddStringToObject(meta, "name", name) == NULL)
        goto done;
    if (mime_type != NULL && cJSON_AddStringToObject(meta, "mimeType", mime_type) == NULL)
        goto done;
    if (parent_id != NULL && parent_id[0] != '\0') {
        cJSON *parents = cJSON_AddArrayToObject(meta, "parents");
        cJSON *p = cJSON_CreateString(parent_id);
        if (parents == NULL || p == NULL || !cJSON_AddItemToArray(parents, p)) {
            cJSON_Delete(p);
            goto done;
        }
    }
    if (app_properties != NULL) {
        cJSON *props = cJSON_Duplicate(app_properties, true);
        if (props == NULL || !cJSON_AddItemToObject(meta, "appProperties", props)) {
            cJSON_Delete(props);
            goto done;
        }
    }
    out = cJSON_PrintUnformatted(meta);
done:
    cJSON_Delete(meta);
    return out;
}

static char *with_fields(const char *base, const char *path, const char *extra_query)
{
    if (base == NULL)
        return NULL;
    strbuf_t sb = {0};
    sb_add(&sb, base);
    sb_add(&sb, path);
    sb_add(&sb, "?");
    if (extra_query != NULL) {
        sb_add(&sb, extra_query);
        sb_add(&sb, "&");
    }
    sb_add(&sb, "fields=");
    sb_add_escaped(&sb, DRIVE_FILE_FIELDS);
    return sb_take(&sb);
}

google_status_t drive_create_folder(google_client_t *gc, const char *access_token, const char *name,
                                    const char *parent_id, const cJSON *app_properties,
                                    drive_file_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->size = -1;
    err_reset(err);
    if (name == NULL)
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "files.create: no folder name");
    char *meta = file_metadata(name, DRIVE_FOLDER_MIME, parent_id, app_properties);
    char *url = with_fields(gc->drive_api_url, "/files", NULL);
    google_status_t st;
    if (meta == NULL) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 0, "files.create: out of memory");
    } else {
        api_req_t r = {
            .method = "POST",
            .url = url,
            .bearer = access_token,
            .content_type = "application/json; charset=UTF-8",
            .body = meta,
            .body_len = strlen(meta),
            .what = "files.create (folder)",
        };
        st = file_answer(gc, &r, out, err);
    }
    free(meta);
    free(url);
    return st;
}

google_status_t drive_upload(google_client_t *gc, const char *access_token, const char *name,
                             const char *mime_type, const char *parent_id,
                             const cJSON *app_properties, const void *data, size_t len,
                             drive_file_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->size = -1;
    err_reset(err);
    if (name == NULL || (data == NULL && len > 0))
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "upload: no name or no data");
    if (gc->drive_upload_url == NULL)
        return err_set(err, GOOGLE_ERR_PROTOCOL, 0, "upload: DRIVE_UPLOAD_URL not configured");
    const char *media_type = mime_type != NULL ? mime_type : "application/octet-stream";
    char *meta = file_metadata(name, mime_type, parent_id, app_properties);
    char *ctype = NULL;
    size_t body_len = 0;
    char *body = meta != NULL ? http_multipart_related(meta, data != NULL ? data : "", len,
                                                       media_type, &body_len, &ctype)
                              : NULL;
    char *url = with_fields(gc->drive_upload_url, "/files", "uploadType=multipart");
    google_status_t st;
    if (body == NULL || ctype == NULL) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 0, "upload: out of memory");
    } else {
        api_req_t r = {
            .method = "POST",
            .url = url,
            .bearer = access_token,
            .content_type = ctype,
            .body = body,
            .body_len = body_len,
            .what = "files.create (upload)",
        };
        st = file_answer(gc, &r, out, err);
    }
    free(meta);
    free(body);
    free(ctype);
    free(url);
    return st;
}

google_status_t drive_share_anyone_reader(google_client_t *gc, const char *access_token,
                                          const char *file_id, google_error_t *err)
{
    err_reset(err);
    if (file_id == NULL || file_id[0] == '\0')
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "permissions.create: no file id");
    static const char body[] = "{\"type\":\"anyone\",\"role\":\"reader\"}";
    char *url = file_url(gc->drive_api_url, file_id, "/permissions?fields=id,type,role");
    api_req_t r = {
        .method = "POST",
        .url = url,
        .bearer = access_token,
        .content_type = "application/json; charset=UTF-8",
        .body = body,
        .body_len = sizeof(body) - 1,
        .what = "permissions.create",
    };
    cJSON *root = NULL;
    google_status_t st = api_json(gc, &r, &root, err);
    free(url);
    cJSON_Delete(root);
    return st;
}

/* ---- Drive: changes ----------------------------------------------------------- */

void drive_change_list_free(drive_change_list_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->changes[i].file_id);
        free(l->changes[i].time);
        if (l->changes[i].has_file)
            drive_file_free(&l->changes[i].file);
    }
    free(l->changes);
    free(l->next_page_token);
    free(l->new_start_page_token);
    memset(l, 0, sizeof(*l));
}

google_status_t drive_changes_start_token(google_client_t *gc, const char *access_token,
                                          char **token, google_error_t *err)
{
    *token = NULL;
    err_reset(err);
    char *url = NULL;
    if (gc->drive_api_url != NULL &&
        asprintf(&url, "%s/changes/startPageToken?fields=startPageToken", gc->drive_api_url) < 0)
        url = NULL;
    api_req_t r = {
        .method = "GET",
        .url = url,
        .bearer = access_token,
        .what = "changes.getStartPageToken",
    };
    cJSON *root = NULL;
    google_status_t st = api_json(gc, &r, &root, err);
    free(url);
    if (st != GOOGLE_OK)
        return st;
    const char *t = json_str(root, "startPageToken");
    if (t == NULL || t[0] == '\0')
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200,
                     "changes.getStartPageToken: no startPageToken in the answer");
    else if ((*token = strdup(t)) == NULL)
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.getStartPageToken: out of memory");
    cJSON_Delete(root);
    return st;
}

google_status_t drive_changes_list(google_client_t *gc, const char *access_token,
                                   const char *page_token, int page_size, drive_change_list_t *out,
                                   google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    err_reset(err);
    if (page_token == NULL || page_token[0] == '\0')
        return err_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "changes.list: no page token");
    if (gc->drive_api_url == NULL)
        return err_set(err, GOOGLE_ERR_PROTOCOL, 0, "changes.list: DRIVE_API_URL not configured");

    strbuf_t sb = {0};
    sb_add(&sb, gc->drive_api_url);
    sb_add(&sb, "/changes");
    sb_param(&sb, "pageToken", page_token);
    sb_page_size(&sb, page_size);
    sb_param(&sb, "includeRemoved", "true");
    sb_param(&sb, "restrictToMyDrive", "true");
    sb_param(&sb, "fields",
             "nextPageToken,newStartPageToken,changes(fileId,removed,time,file(" DRIVE_FILE_FIELDS
             "))");
    char *url = sb_take(&sb);

    api_req_t r = {.method = "GET", .url = url, .bearer = access_token, .what = "changes.list"};
    cJSON *root = NULL;
    google_status_t st = api_json(gc, &r, &root, err);
    free(url);
    if (st != GOOGLE_OK)
        return st;

    const cJSON *changes = cJSON_GetObjectItemCaseSensitive(root, "changes");
    if (changes != NULL && !cJSON_IsArray(changes)) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: changes is not an array");
        goto out;
    }
    int n = cJSON_IsArray(changes) ? cJSON_GetArraySize(changes) : 0;
    if (n > 0) {
        out->changes = calloc((size_t)n, sizeof(drive_change_t));
        if (out->changes == NULL) {
            st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: out of memory");
            goto out;
        }
    }
    const cJSON *jc;
    cJSON_ArrayForEach(jc, changes)
    {
        drive_change_t *c = &out->changes[out->n];
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(jc, "file");
        const char *file_id = json_str(jc, "fileId");
        if (file_id == NULL)
            file_id = json_str(file, "id");
        if (file_id == NULL)
            continue; /* a drive-type change (shared drives): not ours */
        c->removed = json_bool(jc, "removed");
        c->file.size = -1;
        if ((c->file_id = strdup(file_id)) == NULL || json_dup(jc, "time", &c->time) != 0) {
            out->n++; /* so that free sees what was filled */
            st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: out of memory");
            goto out;
        }
        if (!c->removed && cJSON_IsObject(file)) {
            if (file_from_json(file, &c->file) != 0) {
                out->n++;
                st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: a file without an id");
                goto out;
            }
            c->has_file = true;
        }
        out->n++;
    }
    if (json_dup(root, "nextPageToken", &out->next_page_token) != 0 ||
        json_dup(root, "newStartPageToken", &out->new_start_page_token) != 0) {
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: out of memory");
        goto out;
    }
    if (out->next_page_token == NULL && out->new_start_page_token == NULL)
        st = err_set(err, GOOGLE_ERR_PROTOCOL, 200,
                     "changes.list: neither nextPageToken nor newStartPageToken");
out:
    cJSON_Delete(root);
    if (st != GOOGLE_OK)
        drive_change_list_free(out);
    return st;
}

/* ---- the token manager ---------------------------------------------------------- */

/* One user's stored token state. Strings are copies (sealed values). */
typedef struct {
    bool found;
    bool connected;
    bool fresh; /* drive_token_expires_at is more than the margin away */
    char *access_enc;
    char *refresh_enc;
} stored_tokens_t;

static void stored_free(stored_tokens_t *s)
{
    free(s->access_enc);
    free(s->refresh_enc);
    memset(s, 0, sizeof(*s));
}

static int dup_field(PGresult *res, int col, char **slot)
{
    *slot = NULL;
    if (PQgetisnull(res, 0, col))
        return 0;
    *slot = strdup(PQgetvalue(res, 0, col));
    return *slot == NULL ? -1 : 0;
}

/* Reads the user's row. 0 (s->found says whether the user exists) or -1 on a
 * database error (message in err). A malformed user id is "not found". */
static int stored_read(pg_conn_t *pg, const char *user_id, stored_tokens_t *s, char *err,
                       size_t errlen)
{
    static const char sql[] =
        "SELECT drive_access_token, drive_refresh_token, drive_connected,"
        "       COALESCE(drive_token_expires_at > timezone('UTC', now())"
        "                + interval '" DRIVE_AUTH_MARGIN_SECONDS " seconds', false)"
        "  FROM users WHERE id = $1";
    const char *params[] = {user_id};
    memset(s, 0, sizeof(*s));
    PGresult *res = pg_exec(pg, sql, 1, params, err, errlen);
    if (res == NULL)
        return strcmp(pg_last_sqlstate(pg), "22P02") == 0 ? 0 : -1; /* invalid uuid */
    int rc = 0;
    if (PQntuples(res) == 1) {
        s->found = true;
        s->connected = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
        s->fresh = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        if (dup_field(res, 0, &s->access_enc) != 0 || dup_field(res, 1, &s->refresh_enc) != 0) {
            snprintf(err, errlen, "out of memory");
            stored_free(s);
            rc = -1;
        }
    }
    PQclear(res);
    return rc;
}

/* A failure that is not Google's: err->status stays GOOGLE_OK, the message says why. */
__attribute__((format(printf, 2, 3))) static void auth_note(google_error_t *err, const char *fmt,
                                                            ...)
{
    if (err == NULL)
        return;
    err_reset(err);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

/* Copies a plaintext token into the caller's buffer. */
static drive_auth_status_t give_token(const char *plain, char *token, size_t tokenlen,
                                      google_error_t *err)
{
    size_t n = strlen(plain);
    if (token == NULL || n >= tokenlen) {
        err_set(err, GOOGLE_ERR_PROTOCOL, 0, "access token (%zu bytes) does not fit the buffer", n);
        return DRIVE_AUTH_TRANSIENT;
    }
    memcpy(token, plain, n + 1);
    return DRIVE_AUTH_OK;
}

/* The cached token when it is usable as is: fresh, opens, current key. */
static char *usable_cached(const crypto_keyring_t *keys, const stored_tokens_t *s, bool force)
{
    if (force || !s->found || !s->connected || !s->fresh || s->access_enc == NULL)
        return NULL;
    if (crypto_envelope_needs_rotation(keys, s->access_enc))
        return NULL;
    return crypto_envelope_open(keys, s->access_enc);
}

drive_auth_status_t drive_auth_access_token(pg_conn_t *pg, google_client_t *gc,
                                            const crypto_keyring_t *keys, const char *user_id,
                                            bool force, char *token, size_t tokenlen,
                                            google_error_t *err)
{
    return drive_auth_access_token_from(pg, gc, keys, user_id, NULL, force, token, tokenlen, err);
}

drive_auth_status_t drive_auth_access_token_from(pg_conn_t *pg, google_client_t *gc,
                                                 const crypto_keyring_t *keys, const char *user_id,
                                                 const drive_auth_stored_t *stored, bool force,
                                                 char *token, size_t tokenlen, google_error_t *err)
{
    char dberr[256];
    stored_tokens_t first = {0};
    stored_tokens_t now = {0};
    google_tokens_t fresh_tokens = {0};
    char *plain = NULL;
    char *refresh_plain = NULL;
    char *access_sealed = NULL;
    char *refresh_sealed = NULL;
    bool own_tx = false;
    drive_auth_status_t st = DRIVE_AUTH_DB;

    err_reset(err);
    if (token != NULL && tokenlen > 0)
        token[0] = '\0';
    if (pg == NULL || gc == NULL || keys == NULL || user_id == NULL) {
        auth_note(err, "drive_auth: missing argument");
        return DRIVE_AUTH_NO_TOKENS;
    }

    /* 1. The common case, without a lock: a fresh token under the current key. */
    if (stored != NULL) {
        first.found = stored->found;
        first.connected = stored->connected;
        first.fresh = stored->fresh;
        if ((stored->access_enc != NULL &&
             (first.access_enc = strdup(stored->access_enc)) == NULL) ||
            (stored->refresh_enc != NULL &&
             (first.refresh_enc = strdup(stored->refresh_enc)) == NULL)) {
            auth_note(err, "out of memory");
            stored_free(&first);
            return DRIVE_AUTH_DB;
        }
    } else if (stored_read(pg, user_id, &first, dberr, sizeof(dberr)) != 0) {
        auth_note(err, "database: %s", dberr);
        return DRIVE_AUTH_DB;
    }
    if (!first.found || !first.connected ||
        (first.access_enc == NULL && first.refresh_enc == NULL)) {
        auth_note(err, "%s",
                  !first.found       ? "no such user"
                  : !first.connected ? "Drive is disconnected"
                                     : "no Drive tokens stored");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }
    plain = usable_cached(keys, &first, force);
    if (plain != NULL) {
        st = give_token(plain, token, tokenlen, err);
        goto out;
    }

    /* 2. Refresh under a per-user advisory lock, so that two threads (or the
     * poller and the worker) never refresh the same user at once: a rotated
     * refresh token is stored before the next one reads it. */
    if (!pg_in_transaction(pg)) {
        if (pg_begin(pg, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
        own_tx = true;
    }
    {
        const char *params[] = {user_id};
        if (pg_exec_cmd(pg,
                        "SELECT pg_advisory_xact_lock(hashtext('ca_drive_tokens'), hashtext($1))",
                        1, params, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
    }
    if (stored_read(pg, user_id, &now, dberr, sizeof(dberr)) != 0) {
        auth_note(err, "database: %s", dberr);
        st = DRIVE_AUTH_DB;
        goto out;
    }
    if (!now.found || !now.connected) {
        auth_note(err, "%s", !now.found ? "no such user" : "Drive is disconnected");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }
    /* Someone refreshed while we waited for the lock: take theirs. With
     * `force`, only a token other than the one we first saw counts. */
    bool changed = now.access_enc != NULL &&
                   (first.access_enc == NULL || strcmp(now.access_enc, first.access_enc) != 0);
    plain = usable_cached(keys, &now, force && !changed);
    if (plain != NULL) {
        st = give_token(plain, token, tokenlen, err);
        goto out;
    }
    if (now.refresh_enc == NULL) {
        auth_note(err, "no refresh token stored");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }
    refresh_plain = crypto_envelope_open(keys, now.refresh_enc);
    if (refresh_plain == NULL) {
        /* Sealed with a key we no longer hold (or corrupt): nothing to refresh with. */
        auth_note(err, "the stored refresh token cannot be opened with the configured keys");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }

    google_status_t gs = google_refresh(gc, refresh_plain, &fresh_tokens, err);
    if (gs == GOOGLE_ERR_INVALID_GRANT) {
        st = DRIVE_AUTH_REVOKED;
        goto out;
    }
    if (gs != GOOGLE_OK) {
        st = DRIVE_AUTH_TRANSIENT;
        goto out;
    }

    access_sealed = crypto_envelope_seal(keys, fresh_tokens.access_token);
    if (fresh_tokens.refresh_token != NULL)
        refresh_sealed = crypto_envelope_seal(keys, fresh_tokens.refresh_token);
    else if (crypto_envelope_needs_rotation(keys, now.refresh_enc))
        refresh_sealed = crypto_envelope_seal(keys, refresh_plain); /* re-seal, current key */
    if (access_sealed == NULL ||
        (refresh_sealed == NULL && (fresh_tokens.refresh_token != NULL ||
                                    crypto_envelope_needs_rotation(keys, now.refresh_enc)))) {
        err_set(err, GOOGLE_ERR_PROTOCOL, 0, "could not seal the refreshed tokens");
        st = DRIVE_AUTH_TRANSIENT;
        goto out;
    }
    {
        char expires[32];
        snprintf(expires, sizeof(expires), "%ld", fresh_tokens.expires_in);
        const char *params[] = {user_id, access_sealed, refresh_sealed, expires};
        if (pg_exec_cmd(pg,
                        "SELECT users_store_drive_tokens($1, $2, $3,"
                        " timezone('UTC', now()) + make_interval(secs => $4::double precision))",
                        4, params, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
    }
    if (own_tx) {
        own_tx = false;
        if (pg_commit(pg, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
    }
    st = give_token(fresh_tokens.access_token, token, tokenlen, err);

out:
    if (own_tx)
        pg_rollback(pg); /* nothing was written, or the write failed; ends the lock */
    stored_free(&first);
    stored_free(&now);
    google_tokens_free(&fresh_tokens);
    free_secret(plain);
    free_secret(refresh_plain);
    free(access_sealed);
    free(refresh_sealed);
    if (st != DRIVE_AUTH_OK && token != NULL && tokenlen > 0)
        token[0] = '\0';
    return st;
}
