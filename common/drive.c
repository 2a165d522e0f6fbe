/*
 * drive — Drive v3: files and changes, on the Google client's request path
 * (google_internal.h). See drive.h for the contract and docs/common/drive.md.
 */
#define _GNU_SOURCE
#include "drive.h"

#include "backoff.h"
#include "crypto.h"
#include "google_internal.h"
#include "http_client.h"
#include "jbuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>

/* Downloads: room for an error body even when the caller's cap is tiny. */
#define GOOGLE_ERROR_BODY_ROOM (64u * 1024u)
#define GOOGLE_APPS_PREFIX "application/vnd.google-apps."

/* ---- JSON ------------------------------------------------------------------- */

/* Drive sends int64 values as decimal strings; accept numbers too. -1: none
 * (also for a number outside long long: converting it would be undefined). */
static long long json_int64(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsNumber(v))
        return v->valuedouble >= 0 && v->valuedouble < 9223372036854775808.0
                   ? (long long)v->valuedouble
                   : -1;
    if (cJSON_IsString(v) && v->valuestring[0] >= '0' && v->valuestring[0] <= '9') {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v->valuestring, &end, 10);
        if (errno == 0 && end != NULL && *end == '\0')
            return n;
    }
    return -1;
}

/* ---- URLs ------------------------------------------------------------------- */

/* URLs are built in a jbuf_t; a failed allocation makes the URL NULL, which
 * google_call reports. */

static void url_add_escaped(jbuf_t *url, const char *s)
{
    if (url->oom)
        return;
    char *e = http_url_escape(s != NULL ? s : "");
    if (e == NULL) {
        url->oom = true;
        return;
    }
    jbuf_puts(url, e);
    free(e);
}

/* "&name=value" (value escaped); the first parameter gets '?' instead. */
static void url_param(jbuf_t *url, const char *name, const char *value)
{
    if (url->oom)
        return;
    jbuf_puts(url, strchr(url->p != NULL ? url->p : "", '?') != NULL ? "&" : "?");
    jbuf_puts(url, name);
    jbuf_puts(url, "=");
    url_add_escaped(url, value);
}

/* Drive's "pageSize" parameter: page_size within 1..1000, 100 when below 1. */
static void url_page_size(jbuf_t *url, int page_size)
{
    if (page_size < 1)
        page_size = 100;
    if (page_size > 1000)
        page_size = 1000;
    char size[16];
    snprintf(size, sizeof(size), "%d", page_size);
    url_param(url, "pageSize", size);
}

/* Returns the built URL (caller frees) or NULL on OOM. */
static char *url_take(jbuf_t *url)
{
    if (url->oom || url->p == NULL) {
        jbuf_free(url);
        return NULL;
    }
    char *s = url->p;
    url->p = NULL;
    return s;
}

/* GETs url with the bearer token; *root is the answer's JSON object (caller
 * deletes). Takes url (freed here; NULL: out of memory or not configured). */
static google_status_t get_json(google_client_t *gc, const char *access_token, char *url,
                                const char *what, cJSON **root, google_error_t *err)
{
    google_request_t r = {.method = "GET", .url = url, .bearer = access_token, .what = what};
    google_status_t st = google_call_json(gc, &r, root, err);
    free(url);
    return st;
}

/* ---- files ------------------------------------------------------------------ */

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
    if (!cJSON_IsObject(j) || google_json_str(j, "id") == NULL)
        return -1;
    if (google_json_dup(j, "id", &f->id) != 0 || google_json_dup(j, "name", &f->name) != 0 ||
        google_json_dup(j, "mimeType", &f->mime_type) != 0 ||
        google_json_dup(j, "modifiedTime", &f->modified_time) != 0 ||
        google_json_dup(j, "createdTime", &f->created_time) != 0 ||
        google_json_dup(j, "md5Checksum", &f->md5) != 0 ||
        google_json_dup(j, "webViewLink", &f->web_view_link) != 0 ||
        google_json_dup(j, "webContentLink", &f->web_content_link) != 0)
        goto fail;
    f->size = json_int64(j, "size");
    f->trashed = google_json_bool(j, "trashed");
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(j, "capabilities");
    f->can_add_children = google_json_bool(caps, "canAddChildren");
    f->can_edit = google_json_bool(caps, "canEdit");

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
    jbuf_t b = {0};
    jbuf_puts(&b, base);
    jbuf_puts(&b, "/files/");
    url_add_escaped(&b, file_id);
    jbuf_puts(&b, suffix);
    return url_take(&b);
}

google_status_t drive_files_list(google_client_t *gc, const char *access_token, const char *q,
                                 const char *order_by, int page_size, const char *page_token,
                                 drive_file_list_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    google_error_reset(err);
    if (gc->drive_api_url == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "files.list: DRIVE_API_URL not configured");

    jbuf_t b = {0};
    jbuf_puts(&b, gc->drive_api_url);
    jbuf_puts(&b, "/files");
    url_page_size(&b, page_size);
    url_param(&b, "fields", "nextPageToken,files(" DRIVE_FILE_FIELDS ")");
    if (q != NULL && q[0] != '\0')
        url_param(&b, "q", q);
    if (order_by != NULL && order_by[0] != '\0')
        url_param(&b, "orderBy", order_by);
    if (page_token != NULL && page_token[0] != '\0')
        url_param(&b, "pageToken", page_token);
    char *url = url_take(&b);

    cJSON *root = NULL;
    google_status_t st = get_json(gc, access_token, url, "files.list", &root, err);
    if (st != GOOGLE_OK)
        return st;

    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    int n = cJSON_IsArray(files) ? cJSON_GetArraySize(files) : 0;
    if (files != NULL && !cJSON_IsArray(files)) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "files.list: files is not an array");
        goto out;
    }
    if (n > 0) {
        out->files = calloc((size_t)n, sizeof(drive_file_t));
        if (out->files == NULL) {
            st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "files.list: out of memory");
            goto out;
        }
        const cJSON *jf;
        cJSON_ArrayForEach(jf, files)
        {
            if (file_from_json(jf, &out->files[out->n]) != 0) {
                st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200,
                                      "files.list: a file without an id");
                goto out;
            }
            out->n++;
        }
    }
    if (google_json_dup(root, "nextPageToken", &out->next_page_token) != 0)
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "files.list: out of memory");
out:
    cJSON_Delete(root);
    if (st != GOOGLE_OK)
        drive_file_list_free(out);
    return st;
}

/* A file resource answer into out. */
static google_status_t file_answer(google_client_t *gc, const google_request_t *r,
                                   drive_file_t *out, google_error_t *err)
{
    cJSON *root = NULL;
    google_status_t st = google_call_json(gc, r, &root, err);
    if (st != GOOGLE_OK)
        return st;
    if (file_from_json(root, out) != 0)
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "%s: no file id in the answer",
                              r->what);
    cJSON_Delete(root);
    return st;
}

google_status_t drive_files_get(google_client_t *gc, const char *access_token, const char *file_id,
                                drive_file_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->size = -1;
    google_error_reset(err);
    if (file_id == NULL || file_id[0] == '\0')
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "files.get: no file id");
    char *url = NULL;
    if (gc->drive_api_url != NULL) {
        jbuf_t b = {0};
        jbuf_puts(&b, gc->drive_api_url);
        jbuf_puts(&b, "/files/");
        url_add_escaped(&b, file_id);
        jbuf_puts(&b, "?fields=");
        url_add_escaped(&b, DRIVE_FILE_FIELDS);
        url = url_take(&b);
    }
    google_request_t r = {.method = "GET", .url = url, .bearer = access_token, .what = "files.get"};
    google_status_t st = file_answer(gc, &r, out, err);
    free(url);
    return st;
}

google_status_t drive_download_to(google_client_t *gc, const char *access_token,
                                  const char *file_id, size_t max_bytes, long timeout_ms,
                                  FILE *sink, size_t *len, google_error_t *err)
{
    *len = 0;
    google_error_reset(err);
    if (file_id == NULL || file_id[0] == '\0' || sink == NULL)
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "download: no file id or file");
    off_t start = ftello(sink);
    if (start < 0)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "download: the file cannot seek");
    char *url = file_url(gc->drive_api_url, file_id, "?alt=media");
    /* The transport cap leaves room for an error body (an error's body stays
     * in memory, never in the file); the streamed bytes are capped by it too,
     * and the caller's cap is checked exactly below. */
    size_t transport_cap = max_bytes > GOOGLE_ERROR_BODY_ROOM ? max_bytes : GOOGLE_ERROR_BODY_ROOM;
    google_request_t r = {
        .method = "GET",
        .url = url,
        .bearer = access_token,
        .max_body = transport_cap,
        .sink = sink,
        .timeout_ms = timeout_ms,
        .what = "download",
    };
    http_response_t resp;
    google_status_t st = google_call(gc, &r, &resp, err);
    free(url);
    if (st == GOOGLE_OK) {
        off_t end = fflush(sink) == 0 ? ftello(sink) : -1;
        if (end < start) {
            st = google_error_set(err, GOOGLE_ERR_PROTOCOL, resp.status,
                                  "download: writing the file failed");
        } else if ((unsigned long long)(end - start) > max_bytes) {
            st = google_error_set(err, GOOGLE_ERR_TOO_LARGE, resp.status,
                                  "download: file over %zu bytes", max_bytes);
        } else {
            *len = (size_t)(end - start);
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
    jbuf_t b = {0};
    jbuf_puts(&b, base);
    jbuf_puts(&b, path);
    jbuf_puts(&b, "?");
    if (extra_query != NULL) {
        jbuf_puts(&b, extra_query);
        jbuf_puts(&b, "&");
    }
    jbuf_puts(&b, "fields=");
    url_add_escaped(&b, DRIVE_FILE_FIELDS);
    return url_take(&b);
}

google_status_t drive_create_folder(google_client_t *gc, const char *access_token, const char *name,
                                    const char *parent_id, const cJSON *app_properties,
                                    drive_file_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->size = -1;
    google_error_reset(err);
    if (name == NULL)
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "files.create: no folder name");
    char *meta = file_metadata(name, DRIVE_FOLDER_MIME, parent_id, app_properties);
    char *url = with_fields(gc->drive_api_url, "/files", NULL);
    google_status_t st;
    if (meta == NULL) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "files.create: out of memory");
    } else {
        google_request_t r = {
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
    google_error_reset(err);
    if (name == NULL || (data == NULL && len > 0))
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "upload: no name or no data");
    if (gc->drive_upload_url == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "upload: DRIVE_UPLOAD_URL not configured");
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
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "upload: out of memory");
    } else {
        google_request_t r = {
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

/* ---- resumable uploads ------------------------------------------------------- */

#define RESUMABLE_MAX_FAILURES 5 /* failed chunks in a row without progress */
#define RESUMABLE_MAX_RESTARTS 1 /* expired sessions replaced per call */
#define RESUMABLE_MAX_STALLS 3   /* 308 answers that moved nothing, in a row */
#define RESUMABLE_BACKOFF_BASE_MS 250
#define RESUMABLE_BACKOFF_MAX_MS 4000

static void sleep_ms(long ms)
{
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

void drive_upload_session_free(drive_upload_session_t *s)
{
    if (s == NULL)
        return;
    crypto_free_secret(s->uri);
    s->uri = NULL;
}

/* The last byte Drive holds from a 308's "Range: bytes=0-N": N, or -1 when
 * there is no Range (nothing persisted yet); -2 when it is malformed. */
static long long range_last(const char *range)
{
    if (range == NULL)
        return -1;
    if (strncmp(range, "bytes=0-", 8) != 0)
        return -2;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(range + 8, &end, 10);
    if (errno != 0 || end == range + 8 || *end != '\0' || n < 0)
        return -2;
    return n;
}

typedef enum {
    PUT_DONE,      /* 200/201: the file is in out */
    PUT_MORE,      /* 308: *next is where Drive wants the next byte */
    PUT_GONE,      /* 404/410: the session expired or is unknown */
    PUT_TRANSIENT, /* dropped connection, timeout, 5xx, 429, rate limits */
    PUT_FAIL,      /* anything else (st says what) */
} put_outcome_t;

/* One PUT on the session: a chunk [start, start+n) of total, or (n == 0) the
 * status query. A chunk is sent once (no_retry): after a failure the caller
 * asks where Drive stands instead; the status query is retried as usual. */
static put_outcome_t session_put(google_client_t *gc, const char *uri, const char *media_type,
                                 const unsigned char *data, size_t start, size_t n, size_t total,
                                 size_t *next, drive_file_t *out, google_status_t *st,
                                 google_error_t *err)
{
    char cr[80];
    if (n == 0)
        snprintf(cr, sizeof(cr), "bytes */%zu", total);
    else
        snprintf(cr, sizeof(cr), "bytes %zu-%zu/%zu", start, start + n - 1, total);
    http_pair_t h[1] = {{"Content-Range", cr}};
    google_request_t r = {
        .method = "PUT",
        .url = uri,
        .content_type = media_type,
        .body = n > 0 ? data + start : NULL,
        .body_len = n,
        .headers = h,
        .nheaders = 1,
        .no_retry = n > 0,
        .what = n > 0 ? "upload (chunk)" : "upload (status)",
    };
    http_response_t resp;
    google_error_reset(err);
    *st = google_call(gc, &r, &resp, err);
    put_outcome_t o;
    if (*st == GOOGLE_OK) {
        cJSON *root = cJSON_ParseWithLength(resp.body != NULL ? resp.body : "", resp.body_len);
        if (!cJSON_IsObject(root) || file_from_json(root, out) != 0) {
            *st = google_error_set(err, GOOGLE_ERR_PROTOCOL, resp.status,
                                   "upload: no file in the final answer");
            o = PUT_FAIL;
        } else {
            o = PUT_DONE;
        }
        cJSON_Delete(root);
    } else if (resp.status == 308) {
        long long last = range_last(resp.range);
        if (last < -1 || last >= (long long)total) {
            *st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 308, "upload: a bad Range in a 308");
            o = PUT_FAIL;
        } else {
            *next = (size_t)(last + 1);
            *st = GOOGLE_OK;
            google_error_reset(err);
            o = PUT_MORE;
        }
    } else if (resp.status == 404 || resp.status == 410) {
        o = PUT_GONE;
    } else if (google_status_transient(*st)) {
        o = PUT_TRANSIENT;
    } else {
        o = PUT_FAIL;
    }
    http_response_free(&resp);
    return o;
}

/* POST ...?uploadType=resumable: a new session into s->uri. */
static google_status_t session_start(google_client_t *gc, const char *access_token,
                                     const char *meta, const char *media_type, size_t len,
                                     drive_upload_session_t *s, google_error_t *err)
{
    char total[32];
    snprintf(total, sizeof(total), "%zu", len);
    http_pair_t h[2] = {{"X-Upload-Content-Type", media_type}, {"X-Upload-Content-Length", total}};
    char *url = with_fields(gc->drive_upload_url, "/files", "uploadType=resumable");
    google_request_t r = {
        .method = "POST",
        .url = url,
        .bearer = access_token,
        .content_type = "application/json; charset=UTF-8",
        .body = meta,
        .body_len = strlen(meta),
        .headers = h,
        .nheaders = 2,
        .what = "files.create (resumable)",
    };
    http_response_t resp;
    google_status_t st = google_call(gc, &r, &resp, err);
    free(url);
    if (st == GOOGLE_OK) {
        if (resp.location == NULL || strncmp(resp.location, "http", 4) != 0) {
            st = google_error_set(err, GOOGLE_ERR_PROTOCOL, resp.status,
                                  "upload: no session URI in the answer");
        } else {
            s->uri = strdup(resp.location);
            if (s->uri == NULL)
                st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "upload: out of memory");
        }
    }
    http_response_free(&resp);
    return st;
}

google_status_t drive_upload_resumable(google_client_t *gc, const char *access_token,
                                       const char *name, const char *mime_type,
                                       const char *parent_id, const cJSON *app_properties,
                                       const void *data, size_t len, size_t chunk_bytes,
                                       drive_upload_session_t *session,
                                       drive_session_cb_t on_session, void *cb_arg,
                                       drive_file_t *out, google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->size = -1;
    google_error_reset(err);
    session->reused = false;
    session->restarted = false;
    session->resumes = 0;
    if (name == NULL || data == NULL || len == 0)
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "upload: no name or no data");
    if (gc->drive_upload_url == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "upload: DRIVE_UPLOAD_URL not configured");
    if (chunk_bytes == 0)
        chunk_bytes = DRIVE_RESUMABLE_CHUNK_BYTES;
    chunk_bytes -= chunk_bytes % DRIVE_RESUMABLE_CHUNK_UNIT;
    if (chunk_bytes == 0)
        chunk_bytes = DRIVE_RESUMABLE_CHUNK_UNIT;
    const char *media_type = mime_type != NULL ? mime_type : "application/octet-stream";
    char *meta = file_metadata(name, mime_type, parent_id, app_properties);
    if (meta == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "upload: out of memory");

    google_status_t st = GOOGLE_OK;
    size_t offset = 0;
    int failures = 0;
    int stalls = 0;
    int restarts = 0;
    bool given = session->uri != NULL;
    bool ask = given; /* a session from an earlier try: where does it stand? */
    for (;;) {
        if (session->uri == NULL) {
            st = session_start(gc, access_token, meta, media_type, len, session, err);
            if (st != GOOGLE_OK)
                break;
            if (on_session != NULL)
                on_session(cb_arg, session->uri);
            offset = 0;
            ask = false;
        }
        size_t n = ask ? 0 : (len - offset < chunk_bytes ? len - offset : chunk_bytes);
        size_t next = offset;
        put_outcome_t o =
            session_put(gc, session->uri, media_type, data, offset, n, len, &next, out, &st, err);
        bool was_status = ask;
        ask = false;
        if (o == PUT_FAIL && was_status && given && !session->reused) {
            o = PUT_GONE; /* the session we were given is of no use: start over */
        }
        if (given && was_status && (o == PUT_DONE || o == PUT_MORE))
            session->reused = true;
        if (o == PUT_DONE)
            break;
        if (o == PUT_MORE) {
            if (!was_status && next <= offset) {
                if (++stalls > RESUMABLE_MAX_STALLS) {
                    st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 308,
                                          "upload: Drive keeps no byte of the chunks sent");
                    break;
                }
            } else if (next > offset) {
                stalls = 0;
                failures = 0;
            }
            offset = next;
            if (offset >= len) { /* everything is there but no file came back: ask */
                ask = true;
                if (++stalls > RESUMABLE_MAX_STALLS) {
                    st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 308,
                                          "upload: every byte sent, but no file");
                    break;
                }
            }
            continue;
        }
        if (o == PUT_GONE) {
            crypto_free_secret(session->uri);
            session->uri = NULL;
            if (restarts++ >= RESUMABLE_MAX_RESTARTS) {
                st = google_error_set(err, GOOGLE_ERR_SERVER, 404,
                                      "upload: the new session expired at once as well");
                break;
            }
            if (given && was_status && !session->reused) {
                restarts--; /* replacing the stale session we were given is free */
            }
            session->restarted = true;
            continue;
        }
        if (o == PUT_TRANSIENT) {
            if (++failures > RESUMABLE_MAX_FAILURES)
                break;
            sleep_ms((long)backoff_delay_ms(failures, RESUMABLE_BACKOFF_BASE_MS,
                                            RESUMABLE_BACKOFF_MAX_MS));
            session->resumes++;
            ask = true;
            continue;
        }
        break; /* PUT_FAIL: st and err say what */
    }
    free(meta);
    return st;
}

google_status_t drive_share_anyone_reader(google_client_t *gc, const char *access_token,
                                          const char *file_id, google_error_t *err)
{
    google_error_reset(err);
    if (file_id == NULL || file_id[0] == '\0')
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "permissions.create: no file id");
    static const char body[] = "{\"type\":\"anyone\",\"role\":\"reader\"}";
    char *url = file_url(gc->drive_api_url, file_id, "/permissions?fields=id,type,role");
    google_request_t r = {
        .method = "POST",
        .url = url,
        .bearer = access_token,
        .content_type = "application/json; charset=UTF-8",
        .body = body,
        .body_len = sizeof(body) - 1,
        .what = "permissions.create",
    };
    cJSON *root = NULL;
    google_status_t st = google_call_json(gc, &r, &root, err);
    free(url);
    cJSON_Delete(root);
    return st;
}

google_status_t drive_files_delete(google_client_t *gc, const char *access_token,
                                   const char *file_id, google_error_t *err)
{
    google_error_reset(err);
    if (file_id == NULL || file_id[0] == '\0')
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "files.delete: no file id");
    char *url = file_url(gc->drive_api_url, file_id, "");
    google_request_t r = {
        .method = "DELETE",
        .url = url,
        .bearer = access_token,
        .max_body = GOOGLE_ERROR_BODY_ROOM,
        .what = "files.delete",
    };
    http_response_t resp;
    google_status_t st = google_call(gc, &r, &resp, err);
    http_response_free(&resp);
    free(url);
    /* Gone already (deleted by hand, or a retry after a lost 204): done. */
    if (st == GOOGLE_ERR_NOT_FOUND) {
        google_error_reset(err);
        st = GOOGLE_OK;
    }
    return st;
}

/* ---- changes ----------------------------------------------------------- */

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
    google_error_reset(err);
    char *url = NULL;
    if (gc->drive_api_url != NULL &&
        asprintf(&url, "%s/changes/startPageToken?fields=startPageToken", gc->drive_api_url) < 0)
        url = NULL;
    cJSON *root = NULL;
    google_status_t st = get_json(gc, access_token, url, "changes.getStartPageToken", &root, err);
    if (st != GOOGLE_OK)
        return st;
    const char *t = google_json_str(root, "startPageToken");
    if (t == NULL || t[0] == '\0')
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200,
                              "changes.getStartPageToken: no startPageToken in the answer");
    else if ((*token = strdup(t)) == NULL)
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200,
                              "changes.getStartPageToken: out of memory");
    cJSON_Delete(root);
    return st;
}

google_status_t drive_changes_list(google_client_t *gc, const char *access_token,
                                   const char *page_token, int page_size, drive_change_list_t *out,
                                   google_error_t *err)
{
    memset(out, 0, sizeof(*out));
    google_error_reset(err);
    if (page_token == NULL || page_token[0] == '\0')
        return google_error_set(err, GOOGLE_ERR_BAD_REQUEST, 0, "changes.list: no page token");
    if (gc->drive_api_url == NULL)
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "changes.list: DRIVE_API_URL not configured");

    jbuf_t b = {0};
    jbuf_puts(&b, gc->drive_api_url);
    jbuf_puts(&b, "/changes");
    url_param(&b, "pageToken", page_token);
    url_page_size(&b, page_size);
    url_param(&b, "includeRemoved", "true");
    url_param(&b, "restrictToMyDrive", "true");
    url_param(&b, "fields",
              "nextPageToken,newStartPageToken,changes(fileId,removed,time,file(" DRIVE_FILE_FIELDS
              "))");
    char *url = url_take(&b);

    cJSON *root = NULL;
    google_status_t st = get_json(gc, access_token, url, "changes.list", &root, err);
    if (st != GOOGLE_OK)
        return st;

    const cJSON *changes = cJSON_GetObjectItemCaseSensitive(root, "changes");
    if (changes != NULL && !cJSON_IsArray(changes)) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200,
                              "changes.list: changes is not an array");
        goto out;
    }
    int n = cJSON_IsArray(changes) ? cJSON_GetArraySize(changes) : 0;
    if (n > 0) {
        out->changes = calloc((size_t)n, sizeof(drive_change_t));
        if (out->changes == NULL) {
            st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: out of memory");
            goto out;
        }
    }
    const cJSON *jc;
    cJSON_ArrayForEach(jc, changes)
    {
        drive_change_t *c = &out->changes[out->n];
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(jc, "file");
        const char *file_id = google_json_str(jc, "fileId");
        if (file_id == NULL)
            file_id = google_json_str(file, "id");
        if (file_id == NULL)
            continue; /* a drive-type change (shared drives): not ours */
        c->removed = google_json_bool(jc, "removed");
        c->file.size = -1;
        if ((c->file_id = strdup(file_id)) == NULL || google_json_dup(jc, "time", &c->time) != 0) {
            out->n++; /* so that free sees what was filled */
            st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: out of memory");
            goto out;
        }
        if (!c->removed && cJSON_IsObject(file)) {
            if (file_from_json(file, &c->file) != 0) {
                out->n++;
                st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200,
                                      "changes.list: a file without an id");
                goto out;
            }
            c->has_file = true;
        }
        out->n++;
    }
    if (google_json_dup(root, "nextPageToken", &out->next_page_token) != 0 ||
        google_json_dup(root, "newStartPageToken", &out->new_start_page_token) != 0) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200, "changes.list: out of memory");
        goto out;
    }
    if (out->next_page_token == NULL && out->new_start_page_token == NULL)
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 200,
                              "changes.list: neither nextPageToken nor newStartPageToken");
out:
    cJSON_Delete(root);
    if (st != GOOGLE_OK)
        drive_change_list_free(out);
    return st;
}

bool drive_id_valid(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 255) {
        return false;
    }
    for (; *s != '\0'; s++) {
        char c = *s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}
