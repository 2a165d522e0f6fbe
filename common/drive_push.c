/*
 * drive_push — changes.watch and channels.stop (see drive_push.h).
 */
#define _GNU_SOURCE
#include "drive_push.h"

#include "google_internal.h"
#include "http_client.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_UTF8 "application/json; charset=UTF-8"

void drive_channel_free(drive_channel_t *c)
{
    if (c == NULL)
        return;
    free(c->id);
    free(c->resource_id);
    free(c->resource_uri);
    memset(c, 0, sizeof(*c));
}

/* Google sends int64 values as decimal strings; numbers are taken too. 0: none. */
static int64_t json_ms(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsNumber(v))
        return v->valuedouble > 0 && v->valuedouble < 9.0e18 ? (int64_t)v->valuedouble : 0;
    if (cJSON_IsString(v) && v->valuestring[0] >= '0' && v->valuestring[0] <= '9') {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v->valuestring, &end, 10);
        if (errno == 0 && end != NULL && *end == '\0' && n > 0)
            return (int64_t)n;
    }
    return 0;
}

google_status_t drive_changes_watch(google_client_t *gc, const char *access_token,
                                    const char *page_token, const drive_watch_t *w,
                                    drive_channel_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    google_error_reset(err);
    if (page_token == NULL || page_token[0] == '\0' || w == NULL || w->id == NULL ||
        w->address == NULL || w->token == NULL)
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0,
                                "changes.watch: page token, id, address and token are required");
    if (gc->drive_api_url == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "changes.watch: DRIVE_API_URL not configured");
    char *tok = http_url_escape(page_token);
    char *url = NULL;
    if (tok == NULL || asprintf(&url, "%s/changes/watch?pageToken=%s&restrictToMyDrive=true",
                                gc->drive_api_url, tok) < 0)
        url = NULL;
    free(tok);
    cJSON *req = cJSON_CreateObject();
    char *body = NULL;
    if (req != NULL && cJSON_AddStringToObject(req, "id", w->id) != NULL &&
        cJSON_AddStringToObject(req, "type", "web_hook") != NULL &&
        cJSON_AddStringToObject(req, "address", w->address) != NULL &&
        cJSON_AddStringToObject(req, "token", w->token) != NULL) {
        char exp[32];
        snprintf(exp, sizeof(exp), "%lld", (long long)w->expiration_ms);
        if (w->expiration_ms <= 0 || cJSON_AddStringToObject(req, "expiration", exp) != NULL)
            body = cJSON_PrintUnformatted(req);
    }
    cJSON_Delete(req);
    if (url == NULL || body == NULL) {
        free(url);
        free(body);
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "changes.watch: out of memory");
    }
    google_request_t r = {
        .method = "POST",
        .url = url,
        .bearer = access_token,
        .content_type = JSON_UTF8,
        .body = body,
        .body_len = strlen(body),
        .max_body = 64 * 1024,
        .what = "changes.watch",
    };
    cJSON *root = NULL;
    google_status_t st = google_call_json(gc, &r, &root, err);
    free(url);
    /* the body holds the channel's secret */
    memset(body, 0, strlen(body));
    free(body);
    if (st != GOOGLE_OK)
        return st;
    if (google_json_str(root, "resourceId") == NULL ||
        google_json_str(root, "resourceId")[0] == '\0') {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.watch: no resourceId");
    } else if (google_json_dup(root, "id", &out->id) != 0 ||
               google_json_dup(root, "resourceId", &out->resource_id) != 0 ||
               google_json_dup(root, "resourceUri", &out->resource_uri) != 0) {
        drive_channel_free(out);
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.watch: out of memory");
    } else {
        out->expiration_ms = json_ms(root, "expiration");
    }
    cJSON_Delete(root);
    return st;
}

google_status_t drive_channels_stop(google_client_t *gc, const char *access_token, const char *id,
                                    const char *resource_id, google_error_t *err)
{
    google_error_reset(err);
    if (id == NULL || id[0] == '\0' || resource_id == NULL || resource_id[0] == '\0')
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0,
                                "channels.stop: id and resourceId are required");
    if (gc->drive_api_url == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "channels.stop: DRIVE_API_URL not configured");
    char *url = NULL;
    if (asprintf(&url, "%s/channels/stop", gc->drive_api_url) < 0)
        url = NULL;
    cJSON *req = cJSON_CreateObject();
    char *body = NULL;
    if (req != NULL && cJSON_AddStringToObject(req, "id", id) != NULL &&
        cJSON_AddStringToObject(req, "resourceId", resource_id) != NULL)
        body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (url == NULL || body == NULL) {
        free(url);
        free(body);
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "channels.stop: out of memory");
    }
    google_request_t r = {
        .method = "POST",
        .url = url,
        .bearer = access_token,
        .content_type = JSON_UTF8,
        .body = body,
        .body_len = strlen(body),
        .max_body = 64 * 1024,
        .what = "channels.stop",
    };
    http_response_t resp;
    google_status_t st = google_call(gc, &r, &resp, err);
    http_response_free(&resp);
    free(url);
    free(body);
    if (st == GOOGLE_ERR_NOT_FOUND) {
        google_error_reset(err);
        st = GOOGLE_OK;
    }
    return st;
}
