/*
 * fuzz_drive_response — Google's answers as the Drive and OAuth clients read
 * them (common/drive.c, common/google_oauth.c): files.list, files.get,
 * changes.list, changes.getStartPageToken, the token endpoint (code exchange
 * and refresh), userinfo, alt=media downloads (streamed to a file), and the
 * error bodies of each.
 *
 * Their parsers (file_from_json, parse_error_body, the token and change
 * readers) are static; they are reached through the public functions with a
 * fake HTTP response. The seam is the link: the target is linked with
 * -Wl,--wrap=http_client_do, so every call the Google client makes lands in
 * __wrap_http_client_do below, which answers with the fuzzed status, headers
 * and body (and the transport's body cap, like the real client). No network.
 *
 * Input: byte 0 picks the call, byte 1 the HTTP status, byte 2 whether the
 * first line of the rest is a Retry-After header; the rest is the body.
 */
#include "drive.h"
#include "google_oauth.h"
#include "http_client.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
http_result_t __wrap_http_client_do(http_client_t *c, const http_request_t *req,
                                    http_response_t *resp);

static const long STATUSES[] = {200, 200, 200, 200, 201, 204, 302, 400,
                                401, 403, 404, 408, 413, 429, 500, 503};

static struct {
    long status;
    const uint8_t *body;
    size_t body_len;
    const uint8_t *retry_after;
    size_t retry_after_len;
} answer;

static char *dup_bytes(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

http_result_t __wrap_http_client_do(http_client_t *c, const http_request_t *req,
                                    http_response_t *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->attempts = 1;
    resp->status = answer.status;
    if (answer.retry_after != NULL) {
        resp->retry_after = dup_bytes(answer.retry_after, answer.retry_after_len);
    }
    size_t cap = req->opts != NULL && req->opts->max_body != 0 ? req->opts->max_body : 10u << 20;
    if (answer.body_len > cap) {
        snprintf(resp->error, sizeof(resp->error), "body over %zu bytes", cap);
        return HTTP_ERR_TOO_LARGE;
    }
    /* As the real client: a 2xx body goes to the sink when there is one. */
    if (req->sink != NULL && answer.status >= 200 && answer.status < 300) {
        if (answer.body_len > 0 &&
            fwrite(answer.body, 1, answer.body_len, req->sink) != answer.body_len) {
            snprintf(resp->error, sizeof(resp->error), "writing the body to the file failed");
            return HTTP_ERR_INTERNAL;
        }
        return HTTP_RESULT_OK;
    }
    resp->body = dup_bytes(answer.body, answer.body_len);
    resp->body_len = answer.body_len;
    return HTTP_RESULT_OK;
}

static google_client_t *client(void)
{
    static google_client_t *gc;
    if (gc == NULL) {
        google_config_t cfg = {
            .client_id = "id",
            .client_secret = "secret",
            .token_url = "http://fuzz.invalid/token",
            .userinfo_url = "http://fuzz.invalid/userinfo",
            .drive_api_url = "http://fuzz.invalid/drive/v3",
            .drive_upload_url = "http://fuzz.invalid/upload/drive/v3",
            .timeout_ms = 1000,
            .max_retries = 0,
        };
        gc = google_client_new(&cfg);
        if (gc == NULL) {
            abort();
        }
    }
    return gc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) {
        return 0;
    }
    unsigned call = data[0];
    answer.status = STATUSES[data[1] % (sizeof(STATUSES) / sizeof(STATUSES[0]))];
    const uint8_t *rest = data + 3;
    size_t rest_len = size - 3;
    answer.retry_after = NULL;
    if (data[2] & 1) {
        const uint8_t *nl = memchr(rest, '\n', rest_len);
        size_t n = nl != NULL ? (size_t)(nl - rest) : rest_len;
        answer.retry_after = rest;
        answer.retry_after_len = n;
        rest += nl != NULL ? n + 1 : n;
        rest_len -= nl != NULL ? n + 1 : n;
    }
    answer.body = rest;
    answer.body_len = rest_len;

    google_client_t *gc = client();
    google_error_t err;
    google_error_reset(&err);
    switch (call % 8) {
    case 0: {
        drive_file_list_t list;
        memset(&list, 0, sizeof(list));
        if (drive_files_list(gc, "tok", "'x' in parents", "createdTime", 100, NULL, &list, &err) ==
            GOOGLE_OK) {
            for (size_t i = 0; i < list.n; i++) {
                (void)drive_file_is_image(&list.files[i]);
            }
        }
        drive_file_list_free(&list);
        break;
    }
    case 1: {
        drive_file_t f;
        memset(&f, 0, sizeof(f));
        if (drive_files_get(gc, "tok", "file1", &f, &err) == GOOGLE_OK) {
            (void)drive_file_is_image(&f);
        }
        drive_file_free(&f);
        break;
    }
    case 2: {
        drive_change_list_t changes;
        memset(&changes, 0, sizeof(changes));
        if (drive_changes_list(gc, "tok", "42", 100, &changes, &err) == GOOGLE_OK) {
            for (size_t i = 0; i < changes.n; i++) {
                if (changes.changes[i].has_file) {
                    (void)drive_file_is_image(&changes.changes[i].file);
                }
            }
        }
        drive_change_list_free(&changes);
        break;
    }
    case 3: {
        char *token = NULL;
        (void)drive_changes_start_token(gc, "tok", &token, &err);
        free(token);
        break;
    }
    case 4: {
        google_tokens_t t;
        memset(&t, 0, sizeof(t));
        (void)google_exchange_code(gc, "code", "verifier", "http://localhost/cb", &t, &err);
        google_tokens_free(&t);
        break;
    }
    case 5: {
        google_tokens_t t;
        memset(&t, 0, sizeof(t));
        (void)google_refresh(gc, "refresh", &t, &err);
        google_tokens_free(&t);
        break;
    }
    case 6: {
        google_userinfo_t u;
        memset(&u, 0, sizeof(u));
        (void)google_userinfo(gc, "tok", &u, &err);
        google_userinfo_free(&u);
        break;
    }
    default: {
        /* One temporary file for the whole run, emptied before each call. */
        static FILE *sink;
        if (sink == NULL && (sink = tmpfile()) == NULL)
            abort();
        rewind(sink);
        if (ftruncate(fileno(sink), 0) != 0)
            abort();
        size_t len = 0;
        (void)drive_download_to(gc, "tok", "file1", 4096, 0, sink, &len, &err);
        break;
    }
    }
    (void)google_status_name(GOOGLE_OK);
    return 0;
}
