/* gw_session — see gw_session.h. */
#include "gw_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *gwt_header(const char *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = headers; p != NULL && *p != '\0';) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (len > n + 1 && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ') {
                v++;
            }
            return strndup(v, len - (size_t)(v - p));
        }
        p = eol != NULL ? eol + 2 : NULL;
    }
    return NULL;
}

const char *gwt_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *gwt_error_code(const gwt_resp_t *r)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    return e != NULL ? gwt_str(e, "code") : NULL;
}

void gwt_resp_free(gwt_resp_t *r)
{
    free(r->body);
    free(r->headers);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

gwt_resp_t gwt_request(const char *gw_base, const char *method, const char *path,
                       const gwt_session_t *s, bool csrf, const char *body)
{
    return gwt_request_h(gw_base, method, path, s, csrf, body, NULL);
}

gwt_resp_t gwt_request_h(const char *gw_base, const char *method, const char *path,
                         const gwt_session_t *s, bool csrf, const char *body,
                         const char *extra_header)
{
    char url[2048], cookie[256], token[160];
    snprintf(url, sizeof(url), "%s%s", gw_base, path);
    const char *headers[5];
    int nh = 0;
    if (s != NULL) {
        snprintf(cookie, sizeof(cookie), "Cookie: %s", s->cookie);
        headers[nh++] = cookie;
    }
    if (csrf && s != NULL) {
        snprintf(token, sizeof(token), "X-CSRF-Token: %s", s->csrf);
        headers[nh++] = token;
    }
    if (extra_header != NULL) {
        headers[nh++] = extra_header;
    }
    headers[nh] = NULL;
    gwt_resp_t r;
    memset(&r, 0, sizeof(r));
    r.status = http_call_h(method, url, headers, body, &r.body, &r.headers);
    if (r.body != NULL) {
        r.json = cJSON_Parse(r.body);
    }
    return r;
}

int gwt_start(proc_t *gw, const char *google_base, const char *const *extra)
{
    static char buf[32][700];
    const char *env[33];
    int n = 0;
    int port = free_port();
    const char *redis = getenv("TEST_REDIS_URL");
    snprintf(buf[n++], 700, "PORT=%d", port);
    snprintf(buf[n++], 700, "PUBLIC_URL=http://127.0.0.1:%d", port);
    snprintf(buf[n++], 700, "DATABASE_URL=%s", db_url_as("ca_api_gateway"));
    snprintf(buf[n++], 700, "REDIS_URL=%s", redis != NULL ? redis : "");
    snprintf(buf[n++], 700, "ENCRYPTION_KEY=%s", GWT_ENCRYPTION_KEY);
    snprintf(buf[n++], 700, "SESSION_SECRET=test-session-secret");
    snprintf(buf[n++], 700, "GOOGLE_CLIENT_ID=test-client");
    snprintf(buf[n++], 700, "GOOGLE_CLIENT_SECRET=test-client-secret");
    snprintf(buf[n++], 700, "GOOGLE_AUTH_URL=%s/o/oauth2/v2/auth", google_base);
    snprintf(buf[n++], 700, "GOOGLE_TOKEN_URL=%s/token", google_base);
    snprintf(buf[n++], 700, "GOOGLE_USERINFO_URL=%s/v1/userinfo", google_base);
    snprintf(buf[n++], 700, "GOOGLE_REVOKE_URL=%s/revoke", google_base);
    snprintf(buf[n++], 700, "DRIVE_API_URL=%s/drive/v3", google_base);
    snprintf(buf[n++], 700, "RATE_LIMIT_PER_MINUTE_IP=1000000");
    snprintf(buf[n++], 700, "RATE_LIMIT_PER_MINUTE_SESSION=1000000");
    /* suites sign in many times from 127.0.0.1 (one counter for all their
     * gateways); test_gateway_session checks the default with its own gateway */
    snprintf(buf[n++], 700, "RATE_LIMIT_PER_MINUTE_LOGIN=1000000");
    snprintf(buf[n++], 700, "GOOGLE_TIMEOUT_MS=3000");
    /* a default that `extra` sets again is left out, so that extra overrides it */
    int k = 0;
    for (int i = 0; i < n; i++) {
        size_t name_len = strcspn(buf[i], "=") + 1;
        bool overridden = false;
        for (size_t j = 0; extra != NULL && extra[j] != NULL; j++) {
            overridden = overridden || strncmp(extra[j], buf[i], name_len) == 0;
        }
        if (!overridden) {
            env[k++] = buf[i];
        }
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL && k < 32; i++) {
        env[k++] = extra[i];
    }
    env[k] = NULL;
    return daemon_start(gw, "api-gateway", env);
}

char *gwt_set_cookie(const char *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = headers; p != NULL && *p != '\0';) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (len > 11 && strncasecmp(p, "Set-Cookie:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ') {
                v++;
            }
            if (strncmp(v, name, n) == 0 && v[n] == '=') {
                return strndup(v, len - (size_t)(v - p));
            }
        }
        p = eol != NULL ? eol + 2 : NULL;
    }
    return NULL;
}

int gwt_login(const char *gw_base, const char *email, char **authorize, char *binding,
              size_t bindinglen)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/auth/google/login?login_hint=%s", gw_base, email);
    char *headers = NULL;
    long st = http_call_h("GET", url, NULL, NULL, NULL, &headers);
    *authorize = st == 302 ? gwt_header(headers, "Location") : NULL;
    char *set = st == 302 ? gwt_set_cookie(headers, "ca_oauth") : NULL;
    if (*authorize == NULL || set == NULL) {
        fprintf(stderr, "gwt_login: GET %s answered %ld (%s)\n", url, st,
                set == NULL ? "no ca_oauth cookie" : "no Location");
        free(*authorize);
        *authorize = NULL;
        free(set);
        free(headers);
        return -1;
    }
    snprintf(binding, bindinglen, "Cookie: %.*s", (int)strcspn(set, ";"), set);
    free(set);
    free(headers);
    return 0;
}

int gwt_sign_in(const char *gw_base, const char *email, gwt_session_t *s)
{
    memset(s, 0, sizeof(*s));
    char *authorize = NULL, *callback = NULL;
    char binding[256];
    int rc = -1;
    char *headers = NULL, *set = NULL;
    if (gwt_login(gw_base, email, &authorize, binding, sizeof(binding)) != 0) {
        goto out;
    }
    long st = http_call_h("GET", authorize, NULL, NULL, NULL, &headers);
    callback = st == 302 ? gwt_header(headers, "Location") : NULL;
    free(headers);
    headers = NULL;
    if (callback == NULL) {
        fprintf(stderr, "gwt_sign_in: GET %s answered %ld\n", authorize, st);
        goto out;
    }
    const char *cb_headers[] = {binding, NULL};
    st = http_call_h("GET", callback, cb_headers, NULL, NULL, &headers);
    set = st == 302 ? gwt_set_cookie(headers, "ca_session") : NULL;
    if (set == NULL) {
        fprintf(stderr, "gwt_sign_in: callback answered %ld without a session cookie\n", st);
        goto out;
    }
    snprintf(s->cookie, sizeof(s->cookie), "%.*s", (int)strcspn(set, ";"), set);
    gwt_resp_t me = gwt_request(gw_base, "GET", "/api/me", s, false, NULL);
    const char *csrf = gwt_str(me.json, "csrf_token");
    const char *id = gwt_str(me.json, "id");
    if (me.status == 200 && csrf != NULL && id != NULL) {
        snprintf(s->csrf, sizeof(s->csrf), "%s", csrf);
        snprintf(s->id, sizeof(s->id), "%s", id);
        snprintf(s->email, sizeof(s->email), "%s", email);
        rc = 0;
    } else {
        fprintf(stderr, "gwt_sign_in: GET /api/me answered %ld: %s\n", me.status,
                me.body != NULL ? me.body : "");
    }
    gwt_resp_free(&me);
out:
    free(set);
    free(headers);
    free(callback);
    free(authorize);
    return rc;
}
