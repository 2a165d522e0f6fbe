/*
 * fake_admin — the fakes' admin API for the C tests. See fake_admin.h.
 */
#define _GNU_SOURCE
#include "fake_admin.h"

#include "support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

long fake_admin_call(const char *base_url, const char *method, const char *path, const char *body,
                     cJSON **reply)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", base_url, path);
    char *resp = NULL;
    long status = http_call(method, url, body, &resp);
    if (reply != NULL) {
        *reply = resp != NULL ? cJSON_Parse(resp) : NULL;
    }
    free(resp);
    return status;
}

cJSON *fake_admin(const char *base_url, const char *method, const char *path, const char *body)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", base_url, path);
    char *resp = NULL;
    long status = http_call(method, url, body, &resp);
    if (status < 200 || status >= 300) {
        fail_msg("%s %s -> %ld (want 2xx): %s", method, url, status, resp != NULL ? resp : "");
    }
    cJSON *reply = cJSON_Parse(resp != NULL && resp[0] != '\0' ? resp : "null");
    free(resp);
    if (reply == NULL) {
        fail_msg("%s %s: the reply is not JSON", method, url);
    }
    return reply;
}

static void admin_no_reply(const char *base_url, const char *method, const char *path,
                           const char *body)
{
    cJSON_Delete(fake_admin(base_url, method, path, body));
}

void fake_reset(const char *base_url)
{
    admin_no_reply(base_url, "POST", "/__admin/reset", NULL);
}

void fake_add_fault(const char *base_url, const char *fault_json)
{
    admin_no_reply(base_url, "POST", "/__admin/faults", fault_json);
}

void fake_clear_faults(const char *base_url)
{
    admin_no_reply(base_url, "DELETE", "/__admin/faults", NULL);
}

void fake_clear_requests(const char *base_url)
{
    admin_no_reply(base_url, "DELETE", "/__admin/requests", NULL);
}

cJSON *fake_requests(const char *base_url, long since)
{
    char path[64];
    snprintf(path, sizeof(path), "/__admin/requests?since=%ld", since);
    cJSON *log = fake_admin(base_url, "GET", path, NULL);
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(log, "requests"))) {
        fail_msg("GET %s%s: no requests array", base_url, path);
    }
    return log;
}

long fake_requests_next(const char *base_url)
{
    cJSON *log = fake_requests(base_url, 999999999);
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(log, "next");
    if (!cJSON_IsNumber(next)) {
        fail_msg("GET %s/__admin/requests: no next", base_url);
    }
    long seq = (long)next->valuedouble;
    cJSON_Delete(log);
    return seq;
}

/* A string member, or "" when it is missing or not a string. */
static const char *member(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static bool request_matches(const cJSON *r, const fake_match_t *m)
{
    const char *path = member(r, "path");
    if (m->method != NULL && strcmp(member(r, "method"), m->method) != 0) {
        return false;
    }
    if (m->path != NULL && strcmp(path, m->path) != 0) {
        return false;
    }
    if (m->path_part != NULL && strstr(path, m->path_part) == NULL) {
        return false;
    }
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(r, "status");
    if (m->status != 0) {
        if (!cJSON_IsNumber(status) || (long)status->valuedouble != m->status) {
            return false;
        }
    }
    if (m->unanswered) {
        bool held = cJSON_IsNull(status);
        bool dropped = cJSON_IsNumber(status) && status->valuedouble == 0;
        if (!held && !(m->or_dropped && dropped)) {
            return false;
        }
    }
    return true;
}

int fake_count_requests(const char *base_url, const fake_match_t *m)
{
    cJSON *log = fake_requests(base_url, m->since);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(log, "requests"))
    {
        if (request_matches(r, m)) {
            n++;
        }
    }
    cJSON_Delete(log);
    return n;
}

/* Copies string member `key` of `obj` into dst[n]; fails the test when it is
 * missing or does not fit. */
static void copy_member(char *dst, size_t n, const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v)) {
        fail_msg("the fake's reply has no string %s", key);
    }
    if ((size_t)snprintf(dst, n, "%s", v->valuestring) >= n) {
        fail_msg("the fake's %s is longer than %zu bytes", key, n - 1);
    }
}

void fake_google_user(const char *base_url, const char *email, const char *client_id,
                      fake_google_user_t *user)
{
    fake_google_user_scoped(base_url, email, client_id, NULL, user);
}

void fake_google_user_scoped(const char *base_url, const char *email, const char *client_id,
                             const char *scope, fake_google_user_t *user)
{
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "email", email);
    if (client_id != NULL) {
        cJSON_AddStringToObject(req, "client_id", client_id);
    }
    if (scope != NULL) {
        cJSON_AddStringToObject(req, "scope", scope);
    }
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    cJSON *reply = fake_admin(base_url, "POST", "/__admin/users", body);
    free(body);
    memset(user, 0, sizeof(*user));
    copy_member(user->sub, sizeof(user->sub), reply, "sub");
    copy_member(user->access_token, sizeof(user->access_token), reply, "access_token");
    copy_member(user->refresh_token, sizeof(user->refresh_token), reply, "refresh_token");
    copy_member(user->root_id, sizeof(user->root_id), reply, "root_id");
    cJSON_Delete(reply);
}

/* POST `path` with {"email":EMAIL}. */
static void google_email_call(const char *base_url, const char *path, const char *email)
{
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "email", email);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    admin_no_reply(base_url, "POST", path, body);
    free(body);
}

void fake_google_revoke(const char *base_url, const char *email)
{
    google_email_call(base_url, "/__admin/revoke", email);
}

void fake_google_expire(const char *base_url, const char *email)
{
    google_email_call(base_url, "/__admin/expire", email);
}

void fake_google_file(const char *base_url, const char *json, char *id, size_t idlen)
{
    cJSON *reply = fake_admin(base_url, "POST", "/__admin/files", json);
    if (id != NULL) {
        copy_member(id, idlen, reply, "id");
    }
    cJSON_Delete(reply);
}
