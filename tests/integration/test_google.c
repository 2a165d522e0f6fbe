/*
 * Integration tests for common/google against the Google fake (tests/fakes/google.js)
 * and, for the token manager, a real PostgreSQL (TEST_DATABASE_URL) connected as the
 * roles that use it (ca_drive_poller, ca_job_worker).
 */
#define _GNU_SOURCE
#include "crypto.h"
#include "drive.h"
#include "drive_auth.h"
#include "fake_admin.h"
#include "google_oauth.h"
#include "http_client.h"
#include "pg.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define CLIENT_ID "test-client.apps.googleusercontent.com"
#define CLIENT_SECRET "test-secret"
#define REDIRECT_URI "http://localhost:8080/auth/callback"
/* Two 32-byte keys, base64. */
#define KEY_CURRENT "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define KEY_OLD "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="

static proc_t fake;
static google_client_t *gc;
static crypto_keyring_t *keys;     /* current + old */
static crypto_keyring_t *old_keys; /* the old key alone: seals "old" values */
static char url_token[256], url_userinfo[256], url_api[256], url_upload[256];

/* ---------------------------------------------------------------- helpers */

/* The token endpoint's and files.list's requests in the fake's log. */
static const fake_match_t token_calls = {.method = "POST", .path = "/token"};
static const fake_match_t list_calls = {.method = "GET", .path = "/drive/v3/files"};

/* A Drive call made directly (PATCH/DELETE for the change tests), with a bearer token. */
static long drive_direct(const char *method, const char *path_and_query, const char *body,
                         const char *access)
{
    char auth[512];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", access);
    const char *headers[] = {auth, NULL};
    char *u = NULL;
    assert_true(asprintf(&u, "%s%s", url_api, path_and_query) > 0);
    char *resp = NULL;
    long st = http_call_h(method, u, headers, body, &resp, NULL);
    free(u);
    free(resp);
    return st;
}

/* drive_download_to into a temporary file, read back into a buffer (the
 * caller frees *data): the assertions below compare bytes. Nothing is
 * returned unless the download succeeded. */
static google_status_t download_bytes(const char *token, const char *file_id, size_t max_bytes,
                                      void **data, size_t *len, google_error_t *err)
{
    *data = NULL;
    *len = 0;
    FILE *f = tmpfile();
    assert_non_null(f);
    size_t got = 0;
    google_status_t st = drive_download_to(gc, token, file_id, max_bytes, 0, f, &got, err);
    if (st == GOOGLE_OK) {
        char *buf = malloc(got + 1);
        assert_non_null(buf);
        rewind(f);
        assert_int_equal(fread(buf, 1, got, f), got);
        buf[got] = '\0';
        *data = buf;
        *len = got;
    }
    fclose(f);
    return st;
}

static google_client_t *new_client(long timeout_ms, int max_retries, const char *secret)
{
    google_config_t cfg = {
        .client_id = CLIENT_ID,
        .client_secret = secret,
        .token_url = url_token,
        .userinfo_url = url_userinfo,
        .drive_api_url = url_api,
        .drive_upload_url = url_upload,
        .timeout_ms = timeout_ms,
        .max_retries = max_retries,
    };
    google_client_t *c = google_client_new(&cfg);
    assert_non_null(c);
    return c;
}

static pg_conn_t *connect_as(const char *role)
{
    char err[256];
    pg_conn_t *c = pg_connect(db_url_as(role), 20000, err, sizeof(err));
    if (c == NULL)
        fail_msg("connect as %s: %s", role, err);
    return c;
}

/* ---------------------------------------------------------------- setup */

static int group_setup(void **state)
{
    (void)state;
    http_client_global_init();
    const char *args[] = {"--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, NULL};
    if (fake_start(&fake, "google", args) != 0) {
        fprintf(stderr, "could not start the google fake\n");
        return -1;
    }
    snprintf(url_token, sizeof(url_token), "%s/token", fake.base_url);
    snprintf(url_userinfo, sizeof(url_userinfo), "%s/v1/userinfo", fake.base_url);
    snprintf(url_api, sizeof(url_api), "%s/drive/v3", fake.base_url);
    snprintf(url_upload, sizeof(url_upload), "%s/upload/drive/v3/", fake.base_url);
    gc = new_client(10000, 3, CLIENT_SECRET);
    char err[128];
    keys = crypto_keyring_new(KEY_CURRENT, KEY_OLD, err, sizeof(err));
    old_keys = crypto_keyring_new(KEY_OLD, NULL, err, sizeof(err));
    if (keys == NULL || old_keys == NULL) {
        fprintf(stderr, "keyring: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    google_client_free(gc);
    crypto_keyring_free(keys);
    crypto_keyring_free(old_keys);
    proc_stop(&fake);
    http_client_global_cleanup();
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    fake_reset(fake.base_url);
    return 0;
}

/* ---------------------------------------------------------------- status table */

static void test_status_names_and_transience(void **state)
{
    (void)state;
    static const struct {
        google_status_t st;
        const char *name;
        bool transient;
    } cases[] = {
        {GOOGLE_OK, "ok", false},
        {GOOGLE_ERR_AUTH, "auth", false},
        {GOOGLE_ERR_INVALID_GRANT, "invalid_grant", false},
        {GOOGLE_ERR_NOT_FOUND, "not_found", false},
        {GOOGLE_ERR_FORBIDDEN, "forbidden", false},
        {GOOGLE_ERR_RATE_LIMITED, "rate_limited", true},
        {GOOGLE_ERR_SERVER, "server", true},
        {GOOGLE_ERR_NETWORK, "network", true},
        {GOOGLE_ERR_TOO_LARGE, "too_large", false},
        {GOOGLE_ERR_BAD_REQUEST, "bad_request", false},
        {GOOGLE_ERR_PROTOCOL, "protocol", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_string_equal(google_status_name(cases[i].st), cases[i].name);
        assert_int_equal(google_status_transient(cases[i].st), cases[i].transient);
    }
}

static void test_image_detection(void **state)
{
    (void)state;
    static const struct {
        const char *mime;
        const char *name;
        bool image;
    } cases[] = {
        {"image/jpeg", "a.jpg", true},
        {"image/png", "noext", true},
        {"image/webp", "x", true},
        {"image/tiff", "x.tif", true},
        {"image/heic", "IMG_0001.HEIC", true},
        {"image/heif", "x", true},
        {"IMAGE/JPEG", "x", true},
        {"image/gif", "a.gif", false},
        {"image/svg+xml", "a.svg", false},
        {"text/plain", "photo.jpg", false},
        {"application/octet-stream", "photo.JPG", true},
        {"application/octet-stream", "photo.jpeg", true},
        {"application/octet-stream", "scan.tiff", true},
        {"application/octet-stream", "x.heif", true},
        {"application/octet-stream", "notes.txt", false},
        {"application/octet-stream", "jpg", false},
        {"", "raw.png", true},
        {NULL, "raw.webp", true},
        {"", NULL, false},
        {DRIVE_FOLDER_MIME, "folder.jpg", false},
        {"application/vnd.google-apps.document", "doc.png", false},
        {"application/vnd.google-apps.photo", "x.jpg", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        drive_file_t f = {.mime_type = (char *)cases[i].mime, .name = (char *)cases[i].name};
        if (drive_file_is_image(&f) != cases[i].image)
            fail_msg("case %zu (%s, %s): want %d", i, cases[i].mime ? cases[i].mime : "NULL",
                     cases[i].name ? cases[i].name : "NULL", cases[i].image);
    }
    assert_false(drive_file_is_image(NULL));
}

/* ---------------------------------------------------------------- OAuth */

static char hexval(char c)
{
    if (c >= '0' && c <= '9')
        return (char)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (char)(c - 'a' + 10);
    return (char)(c - 'A' + 10);
}

/* The url-decoded value of `name` in a URL's query (caller frees) or NULL. */
static char *query_param(const char *url, const char *name)
{
    const char *q = strchr(url, '?');
    size_t nlen = strlen(name);
    while (q != NULL) {
        q++;
        if (strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
            const char *v = q + nlen + 1;
            size_t len = strcspn(v, "&#");
            char *out = calloc(1, len + 1);
            size_t j = 0;
            for (size_t i = 0; i < len; i++) {
                if (v[i] == '%' && i + 2 < len + 1) {
                    out[j++] = (char)(hexval(v[i + 1]) * 16 + hexval(v[i + 2]));
                    i += 2;
                } else {
                    out[j++] = v[i] == '+' ? ' ' : v[i];
                }
            }
            return out;
        }
        q = strchr(q, '&');
    }
    return NULL;
}

/* Drives the fake's consent page with PKCE S256; returns the code (caller frees). */
static char *authorize(const char *email, const char *verifier)
{
    uint8_t digest[CRYPTO_SHA256_LEN];
    crypto_sha256(verifier, strlen(verifier), digest);
    char *challenge = crypto_base64url_encode(digest, sizeof(digest));
    char *redirect = http_url_escape(REDIRECT_URI);
    char *scope =
        http_url_escape("openid email profile https://www.googleapis.com/auth/drive.file");
    char *hint = http_url_escape(email);
    char *url = NULL;
    assert_true(asprintf(&url,
                         "%s/o/oauth2/v2/auth?client_id=%s&redirect_uri=%s&response_type=code"
                         "&scope=%s&access_type=offline&prompt=consent&state=st-42"
                         "&code_challenge=%s&code_challenge_method=S256&login_hint=%s",
                         fake.base_url, CLIENT_ID, redirect, scope, challenge, hint) > 0);
    http_client_t *hc = http_client_new();
    http_request_t req = {.method = "GET", .url = url};
    http_response_t resp;
    assert_int_equal(http_client_do(hc, &req, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 302);
    assert_non_null(resp.location);
    assert_true(strncmp(resp.location, REDIRECT_URI "?", strlen(REDIRECT_URI) + 1) == 0);
    char *state = query_param(resp.location, "state");
    assert_string_equal(state, "st-42");
    char *code = query_param(resp.location, "code");
    assert_non_null(code);
    free(state);
    http_response_free(&resp);
    http_client_free(hc);
    free(url);
    free(challenge);
    free(redirect);
    free(scope);
    free(hint);
    return code;
}

static void test_oauth_code_exchange_refresh_userinfo(void **state)
{
    (void)state;
    char *verifier = crypto_random_token(48);
    char *code = authorize("pkce.user@example.com", verifier);

    google_tokens_t t;
    google_error_t err;
    assert_int_equal(google_exchange_code(gc, code, verifier, REDIRECT_URI, &t, &err), GOOGLE_OK);
    assert_non_null(t.access_token);
    assert_non_null(t.refresh_token);
    assert_non_null(t.id_token);
    assert_int_equal(t.expires_in, 3599);
    assert_non_null(strstr(t.scope, "drive.file"));

    /* A code is single-use. */
    google_tokens_t t2;
    assert_int_equal(google_exchange_code(gc, code, verifier, REDIRECT_URI, &t2, &err),
                     GOOGLE_ERR_INVALID_GRANT);
    assert_int_equal(err.http_status, 400);
    assert_string_equal(err.reason, "invalid_grant");
    assert_null(t2.access_token);
    /* The code never shows up in the message. */
    assert_null(strstr(err.message, code));

    /* A wrong PKCE verifier. */
    char *code2 = authorize("pkce.user@example.com", verifier);
    assert_int_equal(google_exchange_code(gc, code2, "not-the-verifier-at-all-0123456789abcdef0123",
                                          REDIRECT_URI, &t2, &err),
                     GOOGLE_ERR_INVALID_GRANT);

    /* userinfo */
    google_userinfo_t ui;
    assert_int_equal(google_userinfo(gc, t.access_token, &ui, &err), GOOGLE_OK);
    assert_true(strlen(ui.sub) > 5);
    assert_string_equal(ui.email, "pkce.user@example.com");
    assert_true(ui.email_verified);
    assert_string_equal(ui.name, "Pkce User");
    assert_non_null(ui.picture);
    google_userinfo_free(&ui);
    assert_int_equal(google_userinfo(gc, "ya29.bogus", &ui, &err), GOOGLE_ERR_AUTH);
    assert_int_equal(err.http_status, 401);
    assert_null(ui.sub);

    /* Refresh: a new access token, no new refresh token. */
    google_tokens_t r;
    assert_int_equal(google_refresh(gc, t.refresh_token, &r, &err), GOOGLE_OK);
    assert_non_null(r.access_token);
    assert_string_not_equal(r.access_token, t.access_token);
    assert_null(r.refresh_token);
    assert_int_equal(r.expires_in, 3599);
    drive_file_list_t l;
    assert_int_equal(drive_files_list(gc, r.access_token, NULL, NULL, 10, NULL, &l, &err),
                     GOOGLE_OK);
    drive_file_list_free(&l);
    google_tokens_free(&r);

    /* A wrong client secret is a configuration error, not a revoked grant. */
    google_client_t *bad = new_client(5000, 0, "wrong-secret");
    assert_int_equal(google_refresh(bad, t.refresh_token, &r, &err), GOOGLE_ERR_BAD_REQUEST);
    assert_int_equal(err.http_status, 401);
    assert_string_equal(err.reason, "invalid_client");
    google_client_free(bad);
    /* Other token-endpoint refusals are ours to fix, never "refresh and retry". */
    fake_add_fault(
        fake.base_url,
        "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},\"count\":1,"
        "\"action\":\"status\",\"status\":401,\"body\":{\"error\":\"unauthorized_client\","
        "\"error_description\":\"Unauthorized\"}}");
    assert_int_equal(google_refresh(gc, t.refresh_token, &r, &err), GOOGLE_ERR_BAD_REQUEST);
    assert_string_equal(err.reason, "unauthorized_client");
    assert_string_equal(err.message, "token (refresh_token): Unauthorized");
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},\"count\":1,"
                   "\"action\":\"status\",\"status\":429}");
    assert_int_equal(google_refresh(gc, t.refresh_token, &r, &err), GOOGLE_OK);
    google_tokens_free(&r);

    /* Revoked at Google: invalid_grant. */
    char body[512];
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", t.refresh_token);
    cJSON_Delete(fake_admin(fake.base_url, "POST", "/__admin/revoke", body));
    assert_int_equal(google_refresh(gc, t.refresh_token, &r, &err), GOOGLE_ERR_INVALID_GRANT);
    assert_string_equal(err.reason, "invalid_grant");
    assert_false(google_status_transient(err.status));
    assert_null(strstr(err.message, t.refresh_token));
    assert_int_equal(google_refresh(gc, "", &r, &err), GOOGLE_ERR_BAD_REQUEST);

    google_tokens_free(&t);
    free(code);
    free(code2);
    free(verifier);
}

/* ---------------------------------------------------------------- Drive */

static void test_files_list_pages_and_fields(void **state)
{
    (void)state;
    fake_google_user_t u;
    fake_google_user(fake.base_url, "lister@example.com", NULL, &u);
    char json[1024];
    snprintf(
        json, sizeof(json),
        "{\"email\":\"lister@example.com\",\"name\":\"In\",\"folder\":true,\"parents\":[\"%s\"]}",
        u.root_id);
    char folder[128];
    fake_google_file(fake.base_url, json, folder, sizeof(folder));
    const char *names[] = {"e.jpg", "b.png", "d.webp", "a.jpg", "c.heic"};
    const char *mimes[] = {"image/jpeg", "image/png", "image/webp", "image/jpeg", "image/heic"};
    for (int i = 0; i < 5; i++) {
        snprintf(json, sizeof(json),
                 "{\"email\":\"lister@example.com\",\"name\":\"%s\",\"mimeType\":\"%s\","
                 "\"parents\":[\"%s\"],\"content\":\"%.*s\"}",
                 names[i], mimes[i], folder, i + 1, "xxxxxxxx");
        fake_google_file(fake.base_url, json, NULL, 0);
    }
    /* Noise: not an image, trashed, elsewhere. */
    snprintf(json, sizeof(json),
             "{\"email\":\"lister@example.com\",\"name\":\"notes.txt\",\"mimeType\":\"text/plain\","
             "\"parents\":[\"%s\"],\"content\":\"hi\"}",
             folder);
    fake_google_file(fake.base_url, json, NULL, 0);
    snprintf(json, sizeof(json),
             "{\"email\":\"lister@example.com\",\"name\":\"old.jpg\",\"mimeType\":\"image/jpeg\","
             "\"parents\":[\"%s\"],\"content\":\"x\",\"trashed\":true}",
             folder);
    fake_google_file(fake.base_url, json, NULL, 0);
    snprintf(json, sizeof(json),
             "{\"email\":\"lister@example.com\",\"name\":\"root.jpg\",\"mimeType\":\"image/jpeg\","
             "\"parents\":[\"%s\"],\"content\":\"x\"}",
             u.root_id);
    fake_google_file(fake.base_url, json, NULL, 0);

    char q[256];
    snprintf(q, sizeof(q), "'%s' in parents and trashed = false and mimeType contains 'image/'",
             folder);
    google_error_t err;
    char *token = NULL;
    char *seen[8] = {0};
    int nseen = 0;
    int pages = 0;
    do {
        drive_file_list_t l;
        assert_int_equal(drive_files_list(gc, u.access_token, q, "name", 2, token, &l, &err),
                         GOOGLE_OK);
        pages++;
        assert_true(l.n <= 2);
        for (size_t i = 0; i < l.n; i++) {
            drive_file_t *f = &l.files[i];
            assert_true(nseen < 8);
            seen[nseen++] = strdup(f->name);
            assert_int_equal(f->nparents, 1);
            assert_string_equal(f->parents[0], folder);
            assert_true(drive_file_is_image(f));
            assert_false(f->trashed);
            assert_true(f->can_edit);
            assert_non_null(f->md5);
            assert_non_null(f->modified_time);
            assert_non_null(f->created_time);
            assert_non_null(f->web_view_link);
            assert_true(f->size >= 1 && f->size <= 5);
        }
        free(token);
        token = l.next_page_token != NULL ? strdup(l.next_page_token) : NULL;
        drive_file_list_free(&l);
    } while (token != NULL && pages < 10);
    assert_int_equal(pages, 3);
    assert_int_equal(nseen, 5);
    const char *sorted[] = {"a.jpg", "b.png", "c.heic", "d.webp", "e.jpg"};
    for (int i = 0; i < 5; i++) {
        assert_string_equal(seen[i], sorted[i]);
        free(seen[i]);
    }

    /* The folder itself: size -1, a folder capability. */
    drive_file_list_t l;
    snprintf(q, sizeof(q), "mimeType = '%s' and name = 'In'", DRIVE_FOLDER_MIME);
    assert_int_equal(drive_files_list(gc, u.access_token, q, NULL, 100, NULL, &l, &err), GOOGLE_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.files[0].id, folder);
    assert_int_equal(l.files[0].size, -1);
    assert_true(l.files[0].can_add_children);
    assert_false(drive_file_is_image(&l.files[0]));
    assert_null(l.next_page_token);
    drive_file_list_free(&l);

    /* A query with a quote inside a value, escaped as Drive wants. */
    snprintf(json, sizeof(json),
             "{\"email\":\"lister@example.com\",\"name\":\"it's & 100%%.jpg\",\"mimeType\":"
             "\"image/jpeg\",\"parents\":[\"%s\"],\"content\":\"x\"}",
             u.root_id);
    fake_google_file(fake.base_url, json, NULL, 0);
    assert_int_equal(drive_files_list(gc, u.access_token, "name = 'it\\'s & 100%.jpg'", NULL, 10,
                                      NULL, &l, &err),
                     GOOGLE_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.files[0].name, "it's & 100%.jpg");
    drive_file_list_free(&l);

    /* A bad query is a bad request. */
    assert_int_equal(drive_files_list(gc, u.access_token, "name === 'x", NULL, 10, NULL, &l, &err),
                     GOOGLE_ERR_BAD_REQUEST);
    assert_int_equal(err.http_status, 400);
    assert_int_equal(l.n, 0);
}

static void test_files_get_and_download(void **state)
{
    (void)state;
    fake_google_user_t u;
    fake_google_user(fake.base_url, "downloader@example.com", NULL, &u);
    size_t len = 300 * 1024 + 7;
    uint8_t *content = malloc(len);
    assert_int_equal(crypto_random(content, len), 0);
    char *b64 = crypto_base64_encode(content, len);
    char *json = NULL;
    assert_true(asprintf(&json,
                         "{\"email\":\"downloader@example.com\",\"name\":\"big.png\",\"mimeType\":"
                         "\"image/png\",\"parents\":[\"%s\"],\"appProperties\":{\"k\":\"v\"},"
                         "\"content_base64\":\"%s\"}",
                         u.root_id, b64) > 0);
    char id[128];
    fake_google_file(fake.base_url, json, id, sizeof(id));
    free(json);
    free(b64);

    google_error_t err;
    drive_file_t f;
    assert_int_equal(drive_files_get(gc, u.access_token, id, &f, &err), GOOGLE_OK);
    assert_string_equal(f.id, id);
    assert_string_equal(f.name, "big.png");
    assert_string_equal(f.mime_type, "image/png");
    assert_int_equal(f.size, (long long)len);
    assert_int_equal(f.nparents, 1);
    assert_string_equal(f.parents[0], u.root_id);
    assert_int_equal(strlen(f.md5), 32);
    assert_string_equal(cJSON_GetObjectItem(f.app_properties, "k")->valuestring, "v");
    drive_file_free(&f);

    void *data = NULL;
    size_t got = 0;
    assert_int_equal(download_bytes(u.access_token, id, len, &data, &got, &err), GOOGLE_OK);
    assert_int_equal(got, len);
    assert_memory_equal(data, content, len);
    free(data);

    assert_int_equal(download_bytes(u.access_token, id, len - 1, &data, &got, &err),
                     GOOGLE_ERR_TOO_LARGE);
    assert_null(data);
    assert_int_equal(got, 0);
    /* A cap below the error-body room, too. */
    assert_int_equal(download_bytes(u.access_token, id, 1000, &data, &got, &err),
                     GOOGLE_ERR_TOO_LARGE);

    /* A 404 is a 404 even with a tiny cap. */
    assert_int_equal(drive_files_get(gc, u.access_token, "nope-0000", &f, &err),
                     GOOGLE_ERR_NOT_FOUND);
    assert_string_equal(err.reason, "notFound");
    assert_null(f.id);
    assert_int_equal(download_bytes(u.access_token, "nope-0000", 10, &data, &got, &err),
                     GOOGLE_ERR_NOT_FOUND);
    assert_int_equal(err.http_status, 404);

    /* A folder cannot be downloaded: Drive's 403 fileNotDownloadable. */
    assert_int_equal(download_bytes(u.access_token, u.root_id, 1000, &data, &got, &err),
                     GOOGLE_ERR_FORBIDDEN);
    assert_string_equal(err.reason, "fileNotDownloadable");

    /* Another user's unshared file is a 404, as on Drive. */
    fake_google_user_t other;
    fake_google_user(fake.base_url, "other@example.com", NULL, &other);
    assert_int_equal(drive_files_get(gc, other.access_token, id, &f, &err), GOOGLE_ERR_NOT_FOUND);

    free(content);
}

static void test_folder_upload_find_share(void **state)
{
    (void)state;
    fake_google_user_t u;
    fake_google_user(fake.base_url, "uploader@example.com", NULL, &u);
    google_error_t err;

    cJSON *props = cJSON_CreateObject();
    cJSON_AddStringToObject(props, "ca_kind", "outputs");
    drive_file_t folder;
    assert_int_equal(
        drive_create_folder(gc, u.access_token, "Processed", u.root_id, props, &folder, &err),
        GOOGLE_OK);
    assert_string_equal(folder.name, "Processed");
    assert_string_equal(folder.mime_type, DRIVE_FOLDER_MIME);
    assert_string_equal(folder.parents[0], u.root_id);
    assert_string_equal(cJSON_GetObjectItem(folder.app_properties, "ca_kind")->valuestring,
                        "outputs");
    assert_true(folder.can_add_children);
    cJSON_Delete(props);

    /* Upload with appProperties, binary bytes including NULs and CRLFs. */
    uint8_t png[4096];
    assert_int_equal(crypto_random(png, sizeof(png)), 0);
    memcpy(png, "\x89PNG\r\n\x1a\n\0\0\r\n--", 14);
    props = cJSON_CreateObject();
    cJSON_AddStringToObject(props, "ca_job_id", "job-7f3a");
    cJSON_AddStringToObject(props, "ca_source", "src-1");
    drive_file_t up;
    assert_int_equal(drive_upload(gc, u.access_token, "out.png", "image/png", folder.id, props, png,
                                  sizeof(png), &up, &err),
                     GOOGLE_OK);
    cJSON_Delete(props);
    assert_string_equal(up.name, "out.png");
    assert_string_equal(up.mime_type, "image/png");
    assert_int_equal(up.size, (long long)sizeof(png));
    assert_string_equal(up.parents[0], folder.id);
    assert_string_equal(cJSON_GetObjectItem(up.app_properties, "ca_job_id")->valuestring,
                        "job-7f3a");

    /* Found again by its job id. */
    drive_file_list_t l;
    assert_int_equal(drive_files_list(gc, u.access_token,
                                      "appProperties has { key='ca_job_id' and value='job-7f3a' }"
                                      " and trashed = false",
                                      NULL, 10, NULL, &l, &err),
                     GOOGLE_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.files[0].id, up.id);
    drive_file_list_free(&l);
    assert_int_equal(drive_files_list(gc, u.access_token,
                                      "appProperties has { key='ca_job_id' and value='job-other' }",
                                      NULL, 10, NULL, &l, &err),
                     GOOGLE_OK);
    assert_int_equal(l.n, 0);
    drive_file_list_free(&l);

    void *data = NULL;
    size_t got = 0;
    assert_int_equal(download_bytes(u.access_token, up.id, sizeof(png), &data, &got, &err),
                     GOOGLE_OK);
    assert_int_equal(got, sizeof(png));
    assert_memory_equal(data, png, sizeof(png));
    free(data);

    /* Share with anyone: the permission exists and the file has its view link. */
    assert_int_equal(drive_share_anyone_reader(gc, u.access_token, up.id, &err), GOOGLE_OK);
    char auth[600];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", u.access_token);
    const char *headers[] = {auth, NULL};
    char *purl = NULL;
    assert_true(asprintf(&purl, "%s/files/%s/permissions", url_api, up.id) > 0);
    char *resp = NULL;
    assert_int_equal(http_call_h("GET", purl, headers, NULL, &resp, NULL), 200);
    assert_non_null(strstr(resp, "\"type\":\"anyone\""));
    assert_non_null(strstr(resp, "\"role\":\"reader\""));
    free(resp);
    free(purl);
    drive_file_t again;
    assert_int_equal(drive_files_get(gc, u.access_token, up.id, &again, &err), GOOGLE_OK);
    assert_non_null(again.web_view_link);
    assert_non_null(strstr(again.web_view_link, up.id));
    drive_file_free(&again);

    /* Sharing somebody else's file: 404 for them. */
    assert_int_equal(drive_share_anyone_reader(gc, u.access_token, "missing-id", &err),
                     GOOGLE_ERR_NOT_FOUND);

    /* A read-only token cannot upload: 403 (not a rate limit). */
    char body[256];
    snprintf(body, sizeof(body),
             "{\"email\":\"reader@example.com\",\"scope\":\"openid "
             "https://www.googleapis.com/auth/drive.readonly\"}");
    cJSON *j = fake_admin(fake.base_url, "POST", "/__admin/users", body);
    const cJSON *ro_token = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    assert_true(cJSON_IsString(ro_token));
    char *ro = strdup(ro_token->valuestring);
    cJSON_Delete(j);
    drive_file_t f;
    assert_int_equal(drive_upload(gc, ro, "x.png", "image/png", NULL, NULL, "x", 1, &f, &err),
                     GOOGLE_ERR_FORBIDDEN);
    assert_string_equal(err.reason, "insufficientPermissions");
    assert_null(f.id);
    free(ro);

    drive_file_free(&up);
    drive_file_free(&folder);
}

/* files.delete: the app's own upload is gone for good (not trashed); a
 * second delete (already gone) and a delete retried after a 503 count as
 * done; a file the app did not create, or a read-only token, is refused. */
static void test_files_delete(void **state)
{
    (void)state;
    fake_google_user_t u;
    fake_google_user_scoped(fake.base_url, "deleter@example.com", CLIENT_ID,
                            "openid email https://www.googleapis.com/auth/drive.file", &u);
    google_error_t err;
    drive_file_t up;
    cJSON *props = cJSON_CreateObject();
    cJSON_AddStringToObject(props, "ca_job_id", "job-del-1");
    assert_int_equal(drive_upload(gc, u.access_token, "gone.png", "image/png", u.root_id, props,
                                  "png", 3, &up, &err),
                     GOOGLE_OK);
    cJSON_Delete(props);

    long since = fake_requests_next(fake.base_url);
    assert_int_equal(drive_files_delete(gc, u.access_token, up.id, &err), GOOGLE_OK);
    char path[256];
    snprintf(path, sizeof(path), "/drive/v3/files/%s", up.id);
    assert_int_equal(
        fake_count_requests(
            fake.base_url,
            &(fake_match_t){.method = "DELETE", .path = path, .status = 204, .since = since}),
        1);
    drive_file_t f;
    assert_int_equal(drive_files_get(gc, u.access_token, up.id, &f, &err), GOOGLE_ERR_NOT_FOUND);
    /* not in the trash either */
    drive_file_list_t l;
    assert_int_equal(drive_files_list(gc, u.access_token,
                                      "appProperties has { key='ca_job_id' and value='job-del-1' }",
                                      NULL, 10, NULL, &l, &err),
                     GOOGLE_OK);
    assert_int_equal(l.n, 0);
    drive_file_list_free(&l);

    /* already gone: 404, which counts as done */
    assert_int_equal(drive_files_delete(gc, u.access_token, up.id, &err), GOOGLE_OK);
    assert_int_equal(
        fake_count_requests(
            fake.base_url,
            &(fake_match_t){.method = "DELETE", .path = path, .status = 404, .since = since}),
        1);
    drive_file_free(&up);

    /* a 503 is retried */
    assert_int_equal(drive_upload(gc, u.access_token, "again.png", "image/png", u.root_id, NULL,
                                  "png", 3, &up, &err),
                     GOOGLE_OK);
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"DELETE\",\"path\":\"/drive/v3/files/\"},"
                   "\"count\":1,\"action\":\"status\",\"status\":503,"
                   "\"retry_after\":0}");
    assert_int_equal(drive_files_delete(gc, u.access_token, up.id, &err), GOOGLE_OK);
    assert_int_equal(drive_files_get(gc, u.access_token, up.id, &f, &err), GOOGLE_ERR_NOT_FOUND);
    fake_clear_faults(fake.base_url);
    drive_file_free(&up);

    /* a file of the user's that this app did not create: with drive.file it
     * is invisible (404: nothing of ours to delete); seen through
     * drive.readonly it is 403 appNotAuthorizedToFile, and it stays */
    char body[512];
    snprintf(body, sizeof(body),
             "{\"email\":\"deleter@example.com\",\"name\":\"mine.jpg\","
             "\"mimeType\":\"image/jpeg\",\"parents\":[\"%s\"],\"content_base64\":\"eA==\"}",
             u.root_id);
    char theirs[128];
    fake_google_file(fake.base_url, body, theirs, sizeof(theirs));
    assert_int_equal(drive_files_delete(gc, u.access_token, theirs, &err), GOOGLE_OK);
    fake_google_user_t both;
    fake_google_user_scoped(fake.base_url, "deleter@example.com", CLIENT_ID,
                            "openid email https://www.googleapis.com/auth/drive.file "
                            "https://www.googleapis.com/auth/drive.readonly",
                            &both);
    assert_int_equal(drive_files_delete(gc, both.access_token, theirs, &err), GOOGLE_ERR_FORBIDDEN);
    assert_string_equal(err.reason, "appNotAuthorizedToFile");
    assert_int_equal(drive_files_get(gc, both.access_token, theirs, &f, &err), GOOGLE_OK);
    drive_file_free(&f);

    /* an expired token: AUTH (the caller refreshes and tries once more) */
    fake_google_expire(fake.base_url, "deleter@example.com");
    assert_int_equal(drive_files_delete(gc, u.access_token, theirs, &err), GOOGLE_ERR_AUTH);
    assert_int_equal(drive_files_delete(gc, u.access_token, "", &err), GOOGLE_ERR_BAD_REQUEST);
}

static const drive_change_t *find_change(const drive_change_list_t *all, size_t n,
                                         const char *file_id)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(all->changes[i].file_id, file_id) == 0)
            return &all->changes[i];
    }
    return NULL;
}

static void test_changes_feed(void **state)
{
    (void)state;
    fake_google_user_t u;
    fake_google_user(fake.base_url, "changer@example.com", NULL, &u);
    char json[512];
    snprintf(
        json, sizeof(json),
        "{\"email\":\"changer@example.com\",\"name\":\"A\",\"folder\":true,\"parents\":[\"%s\"]}",
        u.root_id);
    char a[128];
    fake_google_file(fake.base_url, json, a, sizeof(a));
    snprintf(
        json, sizeof(json),
        "{\"email\":\"changer@example.com\",\"name\":\"B\",\"folder\":true,\"parents\":[\"%s\"]}",
        u.root_id);
    char b[128];
    fake_google_file(fake.base_url, json, b, sizeof(b));
    char ids[3][128];
    const char *names[] = {"moved.jpg", "trashed.jpg", "deleted.jpg"};
    for (int i = 0; i < 3; i++) {
        snprintf(json, sizeof(json),
                 "{\"email\":\"changer@example.com\",\"name\":\"%s\",\"mimeType\":\"image/jpeg\","
                 "\"parents\":[\"%s\"],\"content\":\"abc\"}",
                 names[i], a);
        fake_google_file(fake.base_url, json, ids[i], sizeof(ids[i]));
    }

    google_error_t err;
    char *start = NULL;
    assert_int_equal(drive_changes_start_token(gc, u.access_token, &start, &err), GOOGLE_OK);
    assert_non_null(start);

    snprintf(json, sizeof(json),
             "{\"email\":\"changer@example.com\",\"name\":\"new.png\",\"mimeType\":\"image/png\","
             "\"parents\":[\"%s\"],\"content\":\"png\"}",
             a);
    char created[128];
    fake_google_file(fake.base_url, json, created, sizeof(created));
    char path[512];
    snprintf(path, sizeof(path), "/files/%s?addParents=%s&removeParents=%s", ids[0], b, a);
    assert_int_equal(drive_direct("PATCH", path, "{}", u.access_token), 200);
    snprintf(path, sizeof(path), "/files/%s", ids[1]);
    assert_int_equal(drive_direct("PATCH", path, "{\"trashed\":true}", u.access_token), 200);
    snprintf(path, sizeof(path), "/files/%s", ids[2]);
    assert_int_equal(drive_direct("DELETE", path, NULL, u.access_token), 204);

    /* Collect every page (2 per page). */
    drive_change_list_t all = {0};
    all.changes = calloc(16, sizeof(drive_change_t));
    char *token = strdup(start);
    char *next_start = NULL;
    int pages = 0;
    while (token != NULL && pages < 10) {
        drive_change_list_t page;
        assert_int_equal(drive_changes_list(gc, u.access_token, token, 2, &page, &err), GOOGLE_OK);
        pages++;
        assert_true(page.n <= 2);
        assert_true((page.next_page_token == NULL) != (page.new_start_page_token == NULL));
        for (size_t i = 0; i < page.n && all.n < 16; i++) {
            all.changes[all.n++] = page.changes[i]; /* take ownership */
        }
        free(page.changes);
        page.changes = NULL;
        page.n = 0;
        free(token);
        token = page.next_page_token != NULL ? strdup(page.next_page_token) : NULL;
        if (page.new_start_page_token != NULL)
            next_start = strdup(page.new_start_page_token);
        drive_change_list_free(&page);
    }
    assert_true(pages >= 2);
    assert_non_null(next_start);

    const drive_change_t *c = find_change(&all, all.n, created);
    assert_non_null(c);
    assert_false(c->removed);
    assert_true(c->has_file);
    assert_string_equal(c->file.name, "new.png");
    assert_string_equal(c->file.parents[0], a);
    assert_non_null(c->time);

    c = find_change(&all, all.n, ids[0]);
    assert_non_null(c);
    assert_true(c->has_file);
    assert_int_equal(c->file.nparents, 1);
    assert_string_equal(c->file.parents[0], b);
    assert_false(c->file.trashed);

    c = find_change(&all, all.n, ids[1]);
    assert_non_null(c);
    assert_false(c->removed);
    assert_true(c->has_file);
    assert_true(c->file.trashed);

    c = find_change(&all, all.n, ids[2]);
    assert_non_null(c);
    assert_true(c->removed);
    assert_false(c->has_file);
    assert_null(c->file.id);
    drive_change_list_free(&all);

    /* Nothing new since: empty, with a start token for next time. */
    drive_change_list_t empty;
    assert_int_equal(drive_changes_list(gc, u.access_token, next_start, 100, &empty, &err),
                     GOOGLE_OK);
    assert_int_equal(empty.n, 0);
    assert_non_null(empty.new_start_page_token);
    assert_null(empty.next_page_token);
    drive_change_list_free(&empty);

    /* A bad token is a bad request. */
    assert_int_equal(drive_changes_list(gc, u.access_token, "999999999", 100, &empty, &err),
                     GOOGLE_ERR_BAD_REQUEST);

    free(start);
    free(next_start);
}

/* ---------------------------------------------------------------- faults */

static void test_error_classification(void **state)
{
    (void)state;
    fake_google_user_t u;
    fake_google_user(fake.base_url, "faults@example.com", NULL, &u);
    static const struct {
        const char *fault; /* on GET /drive/v3/files */
        google_status_t want;
        const char *reason;  /* NULL: not checked */
        int requests;        /* attempts the fake saw; negative: at least that many (curl
                              * itself retries a request once on a reused connection it
                              * finds dead) */
        long retry_after_ms; /* -2: not checked */
    } cases[] = {
        {"\"count\":1,\"action\":\"status\",\"status\":403,\"reason\":\"userRateLimitExceeded\"",
         GOOGLE_ERR_RATE_LIMITED, "userRateLimitExceeded", 1, -1},
        {"\"count\":1,\"action\":\"status\",\"status\":403,\"reason\":\"rateLimitExceeded\","
         "\"retry_after\":7",
         GOOGLE_ERR_RATE_LIMITED, "rateLimitExceeded", 1, 7000},
        {"\"count\":1,\"action\":\"status\",\"status\":403,\"reason\":"
         "\"insufficientFilePermissions\"",
         GOOGLE_ERR_FORBIDDEN, "insufficientFilePermissions", 1, -1},
        {"\"count\":1,\"action\":\"status\",\"status\":403,\"reason\":\"dailyLimitExceeded\"",
         GOOGLE_ERR_FORBIDDEN, "dailyLimitExceeded", 1, -2},
        {"\"count\":1,\"action\":\"status\",\"status\":429", GOOGLE_OK, NULL, 2, -2},
        {"\"count\":2,\"action\":\"status\",\"status\":500", GOOGLE_OK, NULL, 3, -2},
        {"\"count\":10,\"action\":\"status\",\"status\":500", GOOGLE_ERR_SERVER, "backendError", 4,
         -1},
        {"\"count\":10,\"action\":\"status\",\"status\":503,\"retry_after\":0", GOOGLE_ERR_SERVER,
         "backendError", 4, 0},
        {"\"count\":1,\"action\":\"status\",\"status\":404", GOOGLE_ERR_NOT_FOUND, "notFound", 1,
         -2},
        {"\"count\":1,\"action\":\"status\",\"status\":401", GOOGLE_ERR_AUTH, "authError", 1, -2},
        {"\"count\":1,\"action\":\"status\",\"status\":400,\"reason\":\"invalid\"",
         GOOGLE_ERR_BAD_REQUEST, "invalid", 1, -2},
        {"\"count\":1,\"action\":\"drop\"", GOOGLE_OK, NULL, 2, -2},
        {"\"count\":10,\"action\":\"drop\"", GOOGLE_ERR_NETWORK, NULL, -4, -2},
        {"\"count\":1,\"action\":\"status\",\"status\":200,\"body\":\"not json\"",
         GOOGLE_ERR_PROTOCOL, NULL, 1, -2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_clear_requests(fake.base_url);
        fake_clear_faults(fake.base_url);
        char fault[512];
        snprintf(fault, sizeof(fault),
                 "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/files\"},%s}",
                 cases[i].fault);
        fake_add_fault(fake.base_url, fault);
        drive_file_list_t l;
        google_error_t err;
        google_status_t st = drive_files_list(gc, u.access_token, NULL, NULL, 10, NULL, &l, &err);
        if (st != cases[i].want)
            fail_msg("case %zu (%s): got %s (%s), want %s", i, cases[i].fault,
                     google_status_name(st), err.message, google_status_name(cases[i].want));
        if (st != GOOGLE_OK) {
            assert_int_equal(err.status, st);
            assert_true(err.message[0] != '\0');
            assert_null(strstr(err.message, u.access_token));
        }
        if (cases[i].reason != NULL)
            assert_string_equal(err.reason, cases[i].reason);
        if (cases[i].retry_after_ms != -2)
            assert_int_equal(err.retry_after_ms, cases[i].retry_after_ms);
        int n = fake_count_requests(fake.base_url, &list_calls);
        bool count_ok = cases[i].requests >= 0 ? n == cases[i].requests : n >= -cases[i].requests;
        if (!count_ok)
            fail_msg("case %zu (%s): %d requests, want %d", i, cases[i].fault, n,
                     cases[i].requests);
        drive_file_list_free(&l);
    }

    /* A per-attempt timeout is a network error. */
    google_client_t *quick = new_client(300, 0, CLIENT_SECRET);
    fake_clear_requests(fake.base_url);
    fake_clear_faults(fake.base_url);
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"path\":\"/drive/v3/files\"},\"count\":1,\"action\":\"delay\","
                   "\"delay_ms\":1500}");
    drive_file_list_t l;
    google_error_t err;
    assert_int_equal(drive_files_list(quick, u.access_token, NULL, NULL, 10, NULL, &l, &err),
                     GOOGLE_ERR_NETWORK);
    assert_int_equal(err.http_status, 0);
    google_client_free(quick);

    /* Nobody listening. */
    google_config_t cfg = {
        .client_id = CLIENT_ID,
        .client_secret = CLIENT_SECRET,
        .token_url = "http://127.0.0.1:1/token",
        .drive_api_url = "http://127.0.0.1:1/drive/v3",
        .max_retries = 0,
    };
    google_client_t *dead = google_client_new(&cfg);
    assert_int_equal(drive_files_list(dead, u.access_token, NULL, NULL, 10, NULL, &l, &err),
                     GOOGLE_ERR_NETWORK);
    google_tokens_t t;
    assert_int_equal(google_refresh(dead, u.refresh_token, &t, &err), GOOGLE_ERR_NETWORK);
    assert_true(google_status_transient(err.status));
    /* Not configured. */
    drive_file_t f;
    assert_int_equal(
        drive_upload(dead, u.access_token, "x", "image/png", NULL, NULL, "x", 1, &f, &err),
        GOOGLE_ERR_PROTOCOL);
    google_userinfo_t ui;
    assert_int_equal(google_userinfo(dead, u.access_token, &ui, &err), GOOGLE_ERR_PROTOCOL);
    google_client_free(dead);

    /* The token endpoint: 5xx retried, then a server error. */
    fake_clear_requests(fake.base_url);
    fake_clear_faults(fake.base_url);
    fake_add_fault(
        fake.base_url,
        "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},\"count\":1,\"action\":\"status\","
        "\"status\":503}");
    assert_int_equal(google_refresh(gc, u.refresh_token, &t, &err), GOOGLE_OK);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 2);
    google_tokens_free(&t);
}

/* ---------------------------------------------------------------- token manager */

typedef struct {
    char id[64];
    fake_google_user_t g;
} db_user_t;

/* Inserts a users row with the fake user's tokens sealed by `ring` (NULL
 * tokens when ring is NULL), expiring `expires` from now (an interval). */
static db_user_t db_user(const char *email, const crypto_keyring_t *ring, const char *expires)
{
    db_user_t u;
    memset(&u, 0, sizeof(u));
    fake_google_user(fake.base_url, email, NULL, &u.g);
    char *access = ring != NULL ? crypto_envelope_seal(ring, u.g.access_token) : NULL;
    char *refresh = ring != NULL ? crypto_envelope_seal(ring, u.g.refresh_token) : NULL;
    const char *params[] = {u.g.sub, email, access, refresh, expires};
    char *id =
        sql_value("INSERT INTO users (google_id, email, drive_access_token, drive_refresh_token,"
                  " drive_token_expires_at) VALUES ($1, $2, $3, $4,"
                  " timezone('UTC', now()) + $5::interval) RETURNING id::text",
                  5, params);
    assert_non_null(id);
    snprintf(u.id, sizeof(u.id), "%s", id);
    free(id);
    free(access);
    free(refresh);
    return u;
}

static char *db_col(const db_user_t *u, const char *expr)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT (%s)::text FROM users WHERE id = $1", expr);
    const char *params[] = {u->id};
    return sql_value(sql, 1, params);
}

/* drive_auth_access_token, failing with its message when the status is not `want`. */
static void auth_expect(pg_conn_t *pg, const char *user_id, bool force, char *token,
                        size_t tokenlen, google_error_t *err, drive_auth_status_t want)
{
    drive_auth_status_t got =
        drive_auth_access_token(pg, gc, keys, user_id, force, token, tokenlen, err);
    if (got != want)
        fail_msg("drive_auth_access_token: got %d, want %d (%s)", got, want, err->message);
}

static void test_auth_fresh_expired_force(void **state)
{
    (void)state;
    pg_conn_t *pg = connect_as("ca_drive_poller");
    db_user_t u = db_user("tm.fresh@example.com", keys, "1 hour");
    char token[2048];
    google_error_t err;

    /* Fresh: the stored token, no call to Google. */
    fake_clear_requests(fake.base_url);
    fake_clear_faults(fake.base_url);
    auth_expect(pg, u.id, false, token, sizeof(token), &err, DRIVE_AUTH_OK);
    assert_string_equal(token, u.g.access_token);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 0);

    /* Expired: refreshed, stored sealed under the current key, refresh token kept. */
    char *before_access = db_col(&u, "drive_access_token");
    char *before_refresh = db_col(&u, "drive_refresh_token");
    const char *params[] = {u.id};
    assert_int_equal(sql_exec("UPDATE users SET drive_token_expires_at = timezone('UTC', now()) -"
                              " interval '1 minute' WHERE id = $1",
                              1, params),
                     0);
    auth_expect(pg, u.id, false, token, sizeof(token), &err, DRIVE_AUTH_OK);
    assert_string_not_equal(token, u.g.access_token);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 1);
    char *after_access = db_col(&u, "drive_access_token");
    char *after_refresh = db_col(&u, "drive_refresh_token");
    assert_string_not_equal(after_access, before_access);
    assert_null(strstr(after_access, token)); /* sealed, not plain */
    char *opened = crypto_envelope_open_bound(keys, after_access, u.id);
    assert_string_equal(opened, token);
    assert_false(crypto_envelope_needs_reseal(keys, after_access, u.id));
    free(opened);
    /* The refresh token Google did not rotate: the same token, re-sealed as v2 bound
     * to the user (it was a legacy v1 seal). */
    assert_int_equal(strncmp(before_refresh, "v1:", 3), 0);
    assert_int_equal(strncmp(after_refresh, "v2:", 3), 0);
    opened = crypto_envelope_open_bound(keys, after_refresh, u.id);
    assert_string_equal(opened, u.g.refresh_token);
    free(opened);
    char *later =
        db_col(&u, "drive_token_expires_at > timezone('UTC', now()) + interval '59 minutes'"
                   " AND drive_token_expires_at < timezone('UTC', now()) + interval '61 minutes'");
    assert_string_equal(later, "true");
    free(later);
    /* The new token works. */
    drive_file_list_t l;
    assert_int_equal(drive_files_list(gc, token, NULL, NULL, 10, NULL, &l, &err), GOOGLE_OK);
    drive_file_list_free(&l);
    /* And is now served from the database. */
    char second[2048];
    auth_expect(pg, u.id, false, second, sizeof(second), &err, DRIVE_AUTH_OK);
    assert_string_equal(second, token);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 1);

    /* Within the 120 s margin: refreshed. */
    assert_int_equal(sql_exec("UPDATE users SET drive_token_expires_at = timezone('UTC', now()) +"
                              " interval '60 seconds' WHERE id = $1",
                              1, params),
                     0);
    auth_expect(pg, u.id, false, token, sizeof(token), &err, DRIVE_AUTH_OK);
    assert_string_not_equal(token, second);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 2);

    /* force (after a 401): refreshed although fresh. */
    snprintf(second, sizeof(second), "%s", token);
    auth_expect(pg, u.id, true, token, sizeof(token), &err, DRIVE_AUTH_OK);
    assert_string_not_equal(token, second);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 3);

    /* A buffer too small for the token. */
    char tiny[8];
    assert_int_not_equal(
        drive_auth_access_token(pg, gc, keys, u.id, false, tiny, sizeof(tiny), &err),
        DRIVE_AUTH_OK);
    assert_string_equal(tiny, "");

    free(before_access);
    free(before_refresh);
    free(after_access);
    free(after_refresh);
    pg_close(pg);
}

/* drive_auth_access_token_from: the caller's read of the users row decides
 * (a fresh token there is used as is, without a read of its own); anything
 * else takes the usual path. */
static void test_auth_from_stored_state(void **state)
{
    (void)state;
    pg_conn_t *pg = connect_as("ca_job_worker");
    db_user_t u = db_user("tm.from@example.com", keys, "1 hour");
    char token[2048];
    google_error_t err;
    char *access = db_col(&u, "drive_access_token");
    char *refresh = db_col(&u, "drive_refresh_token");
    drive_auth_stored_t st = {.found = true,
                              .connected = true,
                              .fresh = true,
                              .access_enc = access,
                              .refresh_enc = refresh};

    /* The row now says expired, the caller's earlier read said fresh: that
     * read is what counts (no refresh). */
    const char *params[] = {u.id};
    assert_int_equal(sql_exec("UPDATE users SET drive_token_expires_at = timezone('UTC', now()) -"
                              " interval '1 minute' WHERE id = $1",
                              1, params),
                     0);
    fake_clear_requests(fake.base_url);
    fake_clear_faults(fake.base_url);
    assert_int_equal(
        drive_auth_access_token_from(pg, gc, keys, u.id, &st, false, token, sizeof(token), &err),
        DRIVE_AUTH_OK);
    assert_string_equal(token, u.g.access_token);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 0);

    /* Not fresh: refreshed and stored, as drive_auth_access_token does. */
    st.fresh = false;
    assert_int_equal(
        drive_auth_access_token_from(pg, gc, keys, u.id, &st, false, token, sizeof(token), &err),
        DRIVE_AUTH_OK);
    assert_string_not_equal(token, u.g.access_token);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 1);
    char *after = db_col(&u, "drive_access_token");
    char *opened = crypto_envelope_open_bound(keys, after, u.id);
    assert_string_equal(opened, token);
    free(opened);
    free(after);

    /* Disconnected, or no row: no tokens, nothing asked of Google. */
    st.fresh = true;
    st.connected = false;
    assert_int_equal(
        drive_auth_access_token_from(pg, gc, keys, u.id, &st, false, token, sizeof(token), &err),
        DRIVE_AUTH_NO_TOKENS);
    st.connected = true;
    st.found = false;
    assert_int_equal(
        drive_auth_access_token_from(pg, gc, keys, u.id, &st, false, token, sizeof(token), &err),
        DRIVE_AUTH_NO_TOKENS);
    assert_string_equal(token, "");
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 1);

    /* NULL: the function reads the row itself (fresh again after the refresh). */
    char again[2048];
    assert_int_equal(
        drive_auth_access_token_from(pg, gc, keys, u.id, NULL, false, again, sizeof(again), &err),
        DRIVE_AUTH_OK);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 1);

    free(access);
    free(refresh);
    pg_close(pg);
}

static void test_auth_revoked_transient_rotated(void **state)
{
    (void)state;
    pg_conn_t *pg = connect_as("ca_job_worker");
    char token[2048];
    google_error_t err;

    /* Revoked at Google: REVOKED, and the user is not marked here. */
    db_user_t r = db_user("tm.revoked@example.com", keys, "-5 minutes");
    char body[256];
    snprintf(body, sizeof(body), "{\"email\":\"tm.revoked@example.com\"}");
    cJSON_Delete(fake_admin(fake.base_url, "POST", "/__admin/revoke", body));
    auth_expect(pg, r.id, false, token, sizeof(token), &err, DRIVE_AUTH_REVOKED);
    assert_string_equal(err.reason, "invalid_grant");
    assert_string_equal(token, "");
    char *connected = db_col(&r, "drive_connected");
    assert_string_equal(connected, "true");
    free(connected);

    /* Google trouble: TRANSIENT. */
    db_user_t t = db_user("tm.transient@example.com", keys, "-5 minutes");
    fake_clear_requests(fake.base_url);
    fake_clear_faults(fake.base_url);
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},\"count\":10,\"action\":"
                   "\"status\",\"status\":500}");
    auth_expect(pg, t.id, false, token, sizeof(token), &err, DRIVE_AUTH_TRANSIENT);
    assert_int_equal(err.status, GOOGLE_ERR_SERVER);
    fake_clear_requests(fake.base_url);
    fake_clear_faults(fake.base_url);
    /* ...and fine once Google is back (the failed attempt left nothing locked). */
    auth_expect(pg, t.id, false, token, sizeof(token), &err, DRIVE_AUTH_OK);

    /* Sealed with the old key while fresh: refreshed and everything re-sealed under the current
     * key. */
    db_user_t o = db_user("tm.oldkey@example.com", old_keys, "1 hour");
    char *old_access = db_col(&o, "drive_access_token");
    assert_true(crypto_envelope_needs_rotation(keys, old_access));
    auth_expect(pg, o.id, false, token, sizeof(token), &err, DRIVE_AUTH_OK);
    char *new_access = db_col(&o, "drive_access_token");
    char *new_refresh = db_col(&o, "drive_refresh_token");
    /* re-sealed as v2, bound to the user, current key */
    assert_false(crypto_envelope_needs_reseal(keys, new_access, o.id));
    assert_false(crypto_envelope_needs_reseal(keys, new_refresh, o.id));
    assert_int_equal(strncmp(new_refresh, "v2:", 3), 0);
    char *opened = crypto_envelope_open_bound(keys, new_access, o.id);
    assert_string_equal(opened, token);
    free(opened);
    opened = crypto_envelope_open_bound(keys, new_refresh, o.id);
    assert_string_equal(opened, o.g.refresh_token);
    free(opened);
    free(old_access);
    free(new_access);
    free(new_refresh);

    /* Google sent a new refresh token: it is stored (sealed). */
    db_user_t n = db_user("tm.rotate@example.com", keys, "-5 minutes");
    fake_add_fault(
        fake.base_url,
        "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},\"count\":1,\"action\":"
        "\"status\",\"status\":200,\"body\":{\"access_token\":\"ya29.rotated-access\","
        "\"expires_in\":1800,\"refresh_token\":\"1//rotated-refresh\",\"token_type\":\"Bearer\"}}");
    auth_expect(pg, n.id, false, token, sizeof(token), &err, DRIVE_AUTH_OK);
    assert_string_equal(token, "ya29.rotated-access");
    char *stored = db_col(&n, "drive_refresh_token");
    opened = crypto_envelope_open_bound(keys, stored, n.id);
    assert_string_equal(opened, "1//rotated-refresh");
    free(opened);
    free(stored);
    char *later =
        db_col(&n, "drive_token_expires_at BETWEEN timezone('UTC', now()) + interval '29 minutes'"
                   " AND timezone('UTC', now()) + interval '31 minutes'");
    assert_string_equal(later, "true");
    free(later);

    pg_close(pg);
}

static void test_auth_no_tokens_and_db_errors(void **state)
{
    (void)state;
    pg_conn_t *pg = connect_as("ca_drive_poller");
    char token[2048];
    google_error_t err;

    db_user_t none = db_user("tm.none@example.com", NULL, "1 hour");
    auth_expect(pg, none.id, false, token, sizeof(token), &err, DRIVE_AUTH_NO_TOKENS);

    db_user_t off = db_user("tm.off@example.com", keys, "1 hour");
    const char *params[] = {off.id};
    assert_int_equal(sql_exec("UPDATE users SET drive_connected = false WHERE id = $1", 1, params),
                     0);
    auth_expect(pg, off.id, false, token, sizeof(token), &err, DRIVE_AUTH_NO_TOKENS);
    assert_string_equal(token, "");
    assert_int_equal(err.status, GOOGLE_OK); /* not Google's error */
    assert_string_equal(err.message, "Drive is disconnected");

    /* Expired with no refresh token. */
    db_user_t half = db_user("tm.half@example.com", keys, "-1 hour");
    const char *p2[] = {half.id};
    assert_int_equal(sql_exec("UPDATE users SET drive_refresh_token = NULL WHERE id = $1", 1, p2),
                     0);
    auth_expect(pg, half.id, false, token, sizeof(token), &err, DRIVE_AUTH_NO_TOKENS);

    auth_expect(pg, "00000000-0000-0000-0000-000000000000", false, token, sizeof(token), &err,
                DRIVE_AUTH_NO_TOKENS);
    auth_expect(pg, "not-a-uuid", false, token, sizeof(token), &err, DRIVE_AUTH_NO_TOKENS);
    /* The connection is still usable after that error. */
    assert_true(pg_ping(pg));
    pg_close(pg);

    /* A role that may read users but not store tokens: DB error, nothing changed. */
    db_user_t b = db_user("tm.billing@example.com", keys, "-1 hour");
    char *before = db_col(&b, "drive_access_token");
    pg_conn_t *billing = connect_as("ca_billing_webhook");
    auth_expect(billing, b.id, false, token, sizeof(token), &err, DRIVE_AUTH_DB);
    assert_non_null(strstr(err.message, "permission denied"));
    assert_false(pg_in_transaction(billing));
    char *after = db_col(&b, "drive_access_token");
    assert_string_equal(before, after);
    free(before);
    free(after);
    pg_close(billing);
}

typedef struct {
    const char *db_url; /* db_url_as() uses a static buffer: resolved before the threads */
    const char *user_id;
    drive_auth_status_t st;
    char token[2048];
} racer_t;

static void *racer(void *arg)
{
    racer_t *r = arg;
    char dberr[256];
    pg_conn_t *pg = pg_connect(r->db_url, 20000, dberr, sizeof(dberr));
    if (pg == NULL) {
        r->st = DRIVE_AUTH_DB;
        return NULL;
    }
    /* No cmocka asserts in a thread: plain calls only. */
    google_config_t cfg = {
        .client_id = CLIENT_ID,
        .client_secret = CLIENT_SECRET,
        .token_url = url_token,
        .drive_api_url = url_api,
        .timeout_ms = 10000,
        .max_retries = 3,
    };
    google_client_t *c = google_client_new(&cfg);
    google_error_t err;
    r->st =
        drive_auth_access_token(pg, c, keys, r->user_id, false, r->token, sizeof(r->token), &err);
    google_client_free(c);
    pg_close(pg);
    return NULL;
}

static void test_auth_concurrent_refresh_once(void **state)
{
    (void)state;
    db_user_t u = db_user("tm.race@example.com", keys, "-1 minute");
    fake_clear_requests(fake.base_url);
    fake_clear_faults(fake.base_url);
    /* Slow the token endpoint so that both threads arrive while one refreshes. */
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},\"count\":1,\"action\":"
                   "\"delay\",\"delay_ms\":500}");
    char url[512];
    snprintf(url, sizeof(url), "%s", db_url_as("ca_job_worker"));
    enum { N = 4 };
    racer_t r[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].user_id = u.id;
        r[i].db_url = url;
        assert_int_equal(pthread_create(&th[i], NULL, racer, &r[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].st, DRIVE_AUTH_OK);
        assert_string_equal(r[i].token, r[0].token);
    }
    assert_string_not_equal(r[0].token, u.g.access_token);
    assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 1);
}

typedef struct {
    const char *db_url;
    const char *user_id;
    bool force;
    drive_auth_status_t st;
    char token[2048];
} waiter_t;

static void *waiter(void *arg)
{
    waiter_t *w = arg;
    char dberr[256];
    pg_conn_t *pg = pg_connect(w->db_url, 20000, dberr, sizeof(dberr));
    google_config_t cfg = {
        .client_id = CLIENT_ID,
        .client_secret = CLIENT_SECRET,
        .token_url = url_token,
        .drive_api_url = url_api,
        .timeout_ms = 10000,
        .max_retries = 3,
    };
    google_client_t *c = google_client_new(&cfg);
    google_error_t err;
    w->st = pg == NULL || c == NULL ? DRIVE_AUTH_DB
                                    : drive_auth_access_token(pg, c, keys, w->user_id, w->force,
                                                              w->token, sizeof(w->token), &err);
    google_client_free(c);
    pg_close(pg);
    return NULL;
}

static bool someone_waits_for_advisory_lock(void *arg)
{
    (void)arg;
    char *n = sql_value(
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", 0, NULL);
    bool waiting = n != NULL && strcmp(n, "0") != 0;
    free(n);
    return waiting;
}

/* While another holder (the test) has the user's refresh lock and stores a new token,
 * a caller that needed a refresh (expired, or force after a 401) takes that token
 * instead of refreshing again. */
static void test_auth_takes_token_refreshed_meanwhile(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof(url), "%s", db_url_as("ca_drive_poller"));
    for (int force = 0; force <= 1; force++) {
        db_user_t u = db_user(force ? "tm.wait.force@example.com" : "tm.wait@example.com", keys,
                              force ? "1 hour" : "-1 minute");
        char lock_err[256];
        pg_conn_t *holder =
            pg_connect(getenv("TEST_DATABASE_URL"), 20000, lock_err, sizeof(lock_err));
        assert_non_null(holder);
        assert_int_equal(pg_begin(holder, lock_err, sizeof(lock_err)), 0);
        const char *lp[] = {u.id};
        assert_int_equal(pg_exec_cmd(holder,
                                     "SELECT pg_advisory_xact_lock(hashtext('ca_drive_tokens'), "
                                     "hashtext($1))",
                                     1, lp, lock_err, sizeof(lock_err)),
                         0);
        fake_clear_requests(fake.base_url);
        fake_clear_faults(fake.base_url);

        waiter_t w = {.db_url = url, .user_id = u.id, .force = force != 0};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, waiter, &w), 0);
        assert_true(wait_until(someone_waits_for_advisory_lock, NULL, 10000));

        char *sealed = crypto_envelope_seal(keys, "ya29.from-the-other-holder");
        const char *sp[] = {u.id, sealed};
        assert_int_equal(pg_exec_cmd(holder,
                                     "SELECT users_store_drive_tokens($1, $2, NULL,"
                                     " timezone('UTC', now()) + interval '1 hour')",
                                     2, sp, lock_err, sizeof(lock_err)),
                         0);
        assert_int_equal(pg_commit(holder, lock_err, sizeof(lock_err)), 0);
        pthread_join(th, NULL);

        assert_int_equal(w.st, DRIVE_AUTH_OK);
        assert_string_equal(w.token, "ya29.from-the-other-holder");
        assert_int_equal(fake_count_requests(fake.base_url, &token_calls), 0);
        free(sealed);
        pg_close(holder);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names_and_transience),
        cmocka_unit_test(test_image_detection),
        cmocka_unit_test_setup(test_oauth_code_exchange_refresh_userinfo, test_setup),
        cmocka_unit_test_setup(test_files_list_pages_and_fields, test_setup),
        cmocka_unit_test_setup(test_files_get_and_download, test_setup),
        cmocka_unit_test_setup(test_folder_upload_find_share, test_setup),
        cmocka_unit_test_setup(test_files_delete, test_setup),
        cmocka_unit_test_setup(test_changes_feed, test_setup),
        cmocka_unit_test_setup(test_error_classification, test_setup),
        cmocka_unit_test_setup(test_auth_fresh_expired_force, test_setup),
        cmocka_unit_test_setup(test_auth_from_stored_state, test_setup),
        cmocka_unit_test_setup(test_auth_revoked_transient_rotated, test_setup),
        cmocka_unit_test_setup(test_auth_no_tokens_and_db_errors, test_setup),
        cmocka_unit_test_setup(test_auth_concurrent_refresh_once, test_setup),
        cmocka_unit_test_setup(test_auth_takes_token_refreshed_meanwhile, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
