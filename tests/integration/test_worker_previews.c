/*
 * Previews and thumbnails (issue 16) on the real stack: PostgreSQL, Redis,
 * the Google fake, the real api-gateway and job-worker binaries.
 *
 *   - POST /api/previews of an unsaved graph and of a saved preset, on the
 *     bundled sample and on a file of the user's Drive: two JPEGs of the
 *     right size (long edge 768 at most, never enlarged), the "after" one
 *     really processed (an inverting graph: its mean is 255 minus the
 *     before's);
 *   - an invalid graph: 400 with the validator's error at the failing node,
 *     the same answer as POST /api/presets;
 *   - another user's preview is 404 (status and images);
 *   - GET /api/system-presets: public, the three system presets' ids and preview URLs
 *   - a system preset's public preview (GET /api/presets/{id}/preview/...):
 *     503 preview_pending, then the JPEG, rendered once per version; the
 *     worker renders them before anyone asks;
 *   - a completed job has both thumbnails (256 px), others get 404; deleting
 *     the account deletes them;
 *   - a preview is served while the job queue holds a backlog of 200 jobs
 *     (the preview lane is separate);
 *   - PREVIEW_RATE_PER_MINUTE: the next preview is 429.
 * Named test_worker_* so that it links the worker's objects (libvips decodes
 * the JPEGs here to check them).
 */
#define _GNU_SOURCE
#include "cpu_exec.h"
#include "crypto.h"
#include "fake_admin.h"
#include "gw_session.h"
#include "queue.h"
#include "redis.h"
#include "support.h"
#include "worker_user.h"

#include <curl/curl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define RATE_LIMIT 8
#define BACKLOG 200

static proc_t google, gw, worker;
static crypto_keyring_t *keys;
static redis_conn_t *redis;
static gwt_session_t alice, bob, carol;
static wu_user_t alice_drive; /* alice's Drive, for files and jobs */
static char alice_root[128];  /* her Drive's root folder (not watched) */
static char GW[160];
static char alice_preview[40]; /* made by the first test, used by the 404 test */
static char alice_job[40];
static char alice_preset[40]; /* her private "inverted" preset */

/* Inverts the picture: after = 255 - before (per channel), any size. */
#define INVERT_GRAPH                                                                               \
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.png\"}},"                      \
    "\"2\":{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"1\",0]}},"                     \
    "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0],"                        \
    "\"filename_prefix\":\"p\"}}}"

/* Node "2" reads an output node "9" that does not exist. */
#define BAD_GRAPH                                                                                  \
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.png\"}},"                      \
    "\"2\":{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"9\",0]}},"                     \
    "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0],"                        \
    "\"filename_prefix\":\"p\"}}}"

/* The backlog's jobs: a 16 px photo scaled to 1200×1200 and blurred
 * (some 100 ms a job on one thread). */
#define SLOW_GRAPH                                                                                 \
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.jpg\"}},"                      \
    "\"2\":{\"class_type\":\"ImageScale\",\"inputs\":{\"image\":[\"1\",0],"                        \
    "\"upscale_method\":\"bilinear\",\"width\":1200,\"height\":1200,\"crop\":\"disabled\"}},"      \
    "\"3\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":[\"2\",0],\"blur_radius\":8,"       \
    "\"sigma\":3.0}},"                                                                             \
    "\"4\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"3\",0],"                        \
    "\"filename_prefix\":\"p\"}}}"

/* ---- HTTP with bytes ---- */

typedef struct {
    unsigned char *data;
    size_t len;
} buf_t;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    buf_t *b = arg;
    unsigned char *grown = realloc(b->data, b->len + size * n + 1);
    if (grown == NULL) {
        return 0;
    }
    b->data = grown;
    memcpy(b->data + b->len, p, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

/* GET GW+path with the session's cookie (s may be NULL): the status, the
 * body in *out (caller frees) and its Content-Type in ctype. */
static long get_bytes(const char *path, const gwt_session_t *s, buf_t *out, char *ctype,
                      size_t ctypelen)
{
    memset(out, 0, sizeof(*out));
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[512], cookie[300];
    snprintf(url, sizeof(url), "%s%s", GW, path);
    struct curl_slist *h = NULL;
    if (s != NULL) {
        snprintf(cookie, sizeof(cookie), "Cookie: %s", s->cookie);
        h = curl_slist_append(h, cookie);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (ctype != NULL) {
            snprintf(ctype, ctypelen, "%s", ct != NULL ? ct : "");
        }
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* A JPEG that libvips decodes: its size and mean (0..255). */
typedef struct {
    int w, h;
    double mean;
} img_t;

static img_t decode_jpeg(const buf_t *b)
{
    img_t r = {0};
    assert_true(b->len > 4);
    assert_int_equal(b->data[0], 0xff);
    assert_int_equal(b->data[1], 0xd8);
    VipsImage *im = NULL;
    assert_int_equal(vips_jpegload_buffer(b->data, b->len, &im, "fail", TRUE, NULL), 0);
    r.w = vips_image_get_width(im);
    r.h = vips_image_get_height(im);
    assert_int_equal(vips_avg(im, &r.mean, NULL), 0);
    g_object_unref(im);
    return r;
}

/* The JPEG at path, as s sees it: asserts 200 image/jpeg. */
static img_t get_jpeg(const char *path, const gwt_session_t *s)
{
    buf_t b;
    char ct[64];
    long st = get_bytes(path, s, &b, ct, sizeof(ct));
    if (st != 200) {
        fprintf(stderr, "GET %s: %ld %s\n", path, st, b.data != NULL ? (char *)b.data : "");
    }
    assert_int_equal(st, 200);
    assert_string_equal(ct, "image/jpeg");
    img_t r = decode_jpeg(&b);
    free(b.data);
    return r;
}

static long get_status(const char *path, const gwt_session_t *s)
{
    buf_t b;
    long st = get_bytes(path, s, &b, NULL, 0);
    free(b.data);
    return st;
}

/* ---- previews ---- */

/* POST /api/previews; returns the status, the id in id (202). */
static long post_preview(const gwt_session_t *s, const char *body, char id[40], gwt_resp_t *keep)
{
    gwt_resp_t r = gwt_request(GW, "POST", "/api/previews", s, true, body);
    long st = r.status;
    if (st == 202) {
        snprintf(id, 40, "%s", gwt_str(r.json, "id"));
    }
    if (keep != NULL) {
        *keep = r;
    } else {
        gwt_resp_free(&r);
    }
    return st;
}

/* Polls GET /api/previews/{id} until it is no longer pending (15 s): the
 * final document (caller deletes). */
static cJSON *wait_preview(const gwt_session_t *s, const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/previews/%s", id);
    for (int i = 0; i < 300; i++) {
        gwt_resp_t r = gwt_request(GW, "GET", path, s, false, NULL);
        assert_int_equal(r.status, 200);
        const char *st = gwt_str(r.json, "status");
        assert_non_null(st);
        if (strcmp(st, "pending") != 0) {
            cJSON *doc = r.json;
            r.json = NULL;
            gwt_resp_free(&r);
            return doc;
        }
        gwt_resp_free(&r);
        usleep(50 * 1000);
    }
    proc_print_log(&worker);
    fail_msg("preview %s still pending after 15 s", id);
    return NULL;
}

/* The preview's two images: both w×h, after = inverted before. */
static void assert_inverted_pair(const gwt_session_t *s, const char *id, int w, int h)
{
    cJSON *doc = wait_preview(s, id);
    const char *st = gwt_str(doc, "status");
    if (strcmp(st, "done") != 0) {
        char *t = cJSON_Print(doc);
        fprintf(stderr, "preview: %s\n", t);
        free(t);
    }
    assert_string_equal(st, "done");
    assert_int_equal((int)cJSON_GetObjectItem(doc, "width")->valuedouble, w);
    assert_int_equal((int)cJSON_GetObjectItem(doc, "height")->valuedouble, h);
    char before[128], after[128];
    snprintf(before, sizeof(before), "%s", gwt_str(doc, "before_url"));
    snprintf(after, sizeof(after), "%s", gwt_str(doc, "after_url"));
    cJSON_Delete(doc);
    img_t b = get_jpeg(before, s);
    img_t a = get_jpeg(after, s);
    print_message("preview %s: before %dx%d mean %.1f, after %dx%d mean %.1f\n", id, b.w, b.h,
                  b.mean, a.w, a.h, a.mean);
    assert_int_equal(b.w, w);
    assert_int_equal(b.h, h);
    assert_int_equal(a.w, w);
    assert_int_equal(a.h, h);
    /* the graph ran: inverted, up to JPEG rounding */
    assert_true(a.mean > 255.0 - b.mean - 4.0 && a.mean < 255.0 - b.mean + 4.0);
    assert_true(b.mean < 120.0 || b.mean > 135.0); /* not a grey that inverts to itself */
}

/* A photo of w×h (tests/fixtures/coffee.png scaled) as base64 JPEG (g_free). */
static char *photo_b64(int w, int h)
{
    VipsImage *in = NULL, *out = NULL;
    assert_int_equal(vips_pngload("tests/fixtures/coffee.png", &in, NULL), 0);
    assert_int_equal(vips_resize(in, &out, (double)w / vips_image_get_width(in), "vscale",
                                 (double)h / vips_image_get_height(in), NULL),
                     0);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(vips_jpegsave_buffer(out, &buf, &len, "Q", 85, NULL), 0);
    g_object_unref(in);
    g_object_unref(out);
    char *b64 = g_base64_encode(buf, len);
    g_free(buf);
    return b64;
}

/* ---- setup ---- */

static int start_worker(void)
{
    const char *extra[] = {"WORKER_CONCURRENCY=1", "WORKER_PREVIEW_CONCURRENCY=1", NULL};
    return wu_start_worker(&worker, google.base_url, GWT_ENCRYPTION_KEY, "test-client", extra);
}

static int setup(void **state)
{
    (void)state;
    if (getenv("TEST_DATABASE_URL") == NULL || getenv("TEST_REDIS_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL / TEST_REDIS_URL not set (run through tests/run)\n");
        return -1;
    }
    char err[256];
    keys = crypto_keyring_new(GWT_ENCRYPTION_KEY, NULL, err, sizeof(err));
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    if (keys == NULL || redis == NULL || cpu_exec_init("test") != 0 ||
        fake_start(&google, "google", NULL) != 0) {
        return -1;
    }
    char rate[64];
    snprintf(rate, sizeof(rate), "PREVIEW_RATE_PER_MINUTE=%d", RATE_LIMIT);
    const char *extra[] = {rate, NULL};
    if (gwt_start(&gw, google.base_url, extra) != 0) {
        return -1;
    }
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
    if (gwt_sign_in(GW, "alice.preview@example.com", &alice) != 0 ||
        gwt_sign_in(GW, "bob.preview@example.com", &bob) != 0 ||
        gwt_sign_in(GW, "carol.preview@example.com", &carol) != 0) {
        return -1;
    }
    /* alice's Drive: an Inbox folder (her watched folder) under her root */
    fake_google_user_t g;
    fake_google_user(google.base_url, alice.email, "test-client", &g);
    snprintf(alice_root, sizeof(alice_root), "%s", g.root_id);
    memset(&alice_drive, 0, sizeof(alice_drive));
    snprintf(alice_drive.id, sizeof(alice_drive.id), "%s", alice.id);
    snprintf(alice_drive.email, sizeof(alice_drive.email), "%s", alice.email);
    snprintf(alice_drive.access, sizeof(alice_drive.access), "%s", g.access_token);
    wu_drive_folder(google.base_url, alice.email, "Inbox", g.root_id, alice_drive.inbox,
                    sizeof(alice_drive.inbox));
    const char *p[] = {alice.id, alice_drive.inbox};
    if (sql_exec("UPDATE users SET watched_folder_id = $2 WHERE id = $1::uuid", 2, p) != 0) {
        return -1;
    }
    return start_worker();
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (worker.pid > 0) {
        rc = proc_stop(&worker);
        if (rc != 0) {
            proc_print_log(&worker);
        }
    }
    if (gw.pid > 0 && proc_stop(&gw) != 0) {
        proc_print_log(&gw);
        rc = -1;
    }
    proc_stop(&google);
    redis_close(redis);
    crypto_keyring_free(keys);
    cpu_exec_shutdown();
    return rc == 0 ? 0 : -1;
}

/* ---- tests ---- */

static void test_unsaved_graph_on_sample(void **state)
{
    (void)state;
    char id[40];
    assert_int_equal(
        post_preview(&alice, "{\"graph\":" INVERT_GRAPH ",\"source\":\"sample\"}", id, NULL), 202);
    /* the sample is 512×512: shrunk only, never enlarged */
    assert_inverted_pair(&alice, id, 512, 512);
    snprintf(alice_preview, sizeof(alice_preview), "%s", id);
}

static void test_saved_preset_on_drive_file(void **state)
{
    (void)state;
    /* a saved preset of alice's */
    gwt_resp_t r = gwt_request(GW, "POST", "/api/presets", &alice, true,
                               "{\"name\":\"inverted\",\"workflow_json\":" INVERT_GRAPH "}");
    assert_int_equal(r.status, 201);
    char preset[40];
    snprintf(preset, sizeof(preset), "%s", gwt_str(r.json, "id"));
    snprintf(alice_preset, sizeof(alice_preset), "%s", preset);
    gwt_resp_free(&r);
    /* a 1500×1000 photo in her watched folder */
    char *b64 = photo_b64(1500, 1000);
    char file[128];
    wu_drive_file(google.base_url, &alice_drive, "big.jpg", "image/jpeg", b64, file, sizeof(file));
    g_free(b64);

    char body[512], id[40];
    snprintf(body, sizeof(body), "{\"preset_id\":\"%s\",\"source\":{\"drive_file_id\":\"%s\"}}",
             preset, file);
    assert_int_equal(post_preview(&alice, body, id, NULL), 202);
    assert_inverted_pair(&alice, id, 768, 512);

    /* the same file through an unsaved graph */
    snprintf(body, sizeof(body),
             "{\"graph\":" INVERT_GRAPH ",\"source\":{\"drive_file_id\":\"%s\"}}", file);
    assert_int_equal(post_preview(&alice, body, id, NULL), 202);
    assert_inverted_pair(&alice, id, 768, 512);

    /* an edit of the saved preset, not saved yet (preset_id and graph) */
    snprintf(body, sizeof(body),
             "{\"preset_id\":\"%s\",\"graph\":" INVERT_GRAPH
             ",\"source\":{\"drive_file_id\":\"%s\"}}",
             preset, file);
    assert_int_equal(post_preview(&alice, body, id, NULL), 202);
    assert_inverted_pair(&alice, id, 768, 512);

    /* a photo of her Drive outside the watched folder: not previewed */
    char *small = photo_b64(300, 200);
    size_t n = strlen(small) + 512;
    char *json = malloc(n);
    assert_non_null(json);
    snprintf(json, n,
             "{\"email\":\"%s\",\"name\":\"outside.jpg\",\"mimeType\":\"image/jpeg\","
             "\"parents\":[\"%s\"],\"content_base64\":\"%s\"}",
             alice.email, alice_root, small);
    char outside[128];
    fake_google_file(google.base_url, json, outside, sizeof(outside));
    free(json);
    g_free(small);
    snprintf(body, sizeof(body),
             "{\"graph\":" INVERT_GRAPH ",\"source\":{\"drive_file_id\":\"%s\"}}", outside);
    assert_int_equal(post_preview(&alice, body, id, NULL), 202);
    cJSON *out = wait_preview(&alice, id);
    assert_string_equal(gwt_str(out, "status"), "failed");
    assert_string_equal(gwt_str(cJSON_GetObjectItem(out, "error"), "code"), "drive_file_not_found");
    cJSON_Delete(out);
    /* and bob, who watches no folder, previews only the sample */
    gwt_resp_t nb;
    assert_int_equal(post_preview(&bob, body, id, &nb), 400);
    assert_string_equal(gwt_error_code(&nb), "invalid_request");
    gwt_resp_free(&nb);

    /* a file that is not there: the job's error code */
    assert_int_equal(post_preview(&alice,
                                  "{\"graph\":" INVERT_GRAPH
                                  ",\"source\":{\"drive_file_id\":\"nosuchfile123\"}}",
                                  id, NULL),
                     202);
    cJSON *doc = wait_preview(&alice, id);
    assert_string_equal(gwt_str(doc, "status"), "failed");
    assert_string_equal(gwt_str(cJSON_GetObjectItem(doc, "error"), "code"), "drive_file_not_found");
    cJSON_Delete(doc);
}

static void test_invalid_graph_names_the_node(void **state)
{
    (void)state;
    gwt_resp_t r;
    char id[40];
    assert_int_equal(
        post_preview(&alice, "{\"graph\":" BAD_GRAPH ",\"source\":\"sample\"}", id, &r), 400);
    assert_string_equal(gwt_error_code(&r), "invalid_workflow");
    const cJSON *details = cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "error"), "details");
    const cJSON *node_errors = cJSON_GetObjectItem(details, "node_errors");
    assert_non_null(cJSON_GetObjectItem(node_errors, "2")); /* the failing node */
    /* exactly what POST /api/presets answers for the same graph */
    gwt_resp_t p = gwt_request(GW, "POST", "/api/presets", &alice, true,
                               "{\"name\":\"bad\",\"workflow_json\":" BAD_GRAPH "}");
    assert_int_equal(p.status, 400);
    char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(r.json, "error"));
    char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(p.json, "error"));
    assert_string_equal(a, b);
    free(a);
    free(b);
    gwt_resp_free(&r);
    gwt_resp_free(&p);
    /* a class the CPU executor lacks: refused as for a user preset */
    assert_int_equal(post_preview(&alice,
                                  "{\"graph\":{\"1\":{\"class_type\":\"KSampler\",\"inputs\":{}}},"
                                  "\"source\":\"sample\"}",
                                  id, &r),
                     400);
    assert_string_equal(gwt_error_code(&r), "workflow_node_not_allowed");
    gwt_resp_free(&r);
    /* bad requests */
    assert_int_equal(post_preview(&alice, "{\"source\":\"sample\"}", id, NULL), 400);
    assert_int_equal(
        post_preview(&alice, "{\"graph\":" INVERT_GRAPH ",\"source\":\"camera\"}", id, NULL), 400);
    assert_int_equal(
        post_preview(&alice, "{\"graph\":" INVERT_GRAPH ",\"source\":{\"drive_file_id\":\"../x\"}}",
                     id, NULL),
        400);
    /* CSRF as every POST: no token, no preview */
    gwt_resp_t c = gwt_request(GW, "POST", "/api/previews", &alice, false,
                               "{\"graph\":" INVERT_GRAPH ",\"source\":\"sample\"}");
    assert_int_equal(c.status, 403);
    gwt_resp_free(&c);
}

static void test_other_users_preview_is_404(void **state)
{
    (void)state;
    assert_true(alice_preview[0] != '\0');
    char path[160];
    const char *suffix[] = {"", "/before.jpg", "/after.jpg"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/api/previews/%s%s", alice_preview, suffix[i]);
        assert_int_equal(get_status(path, &alice), 200);
        assert_int_equal(get_status(path, &bob), 404);
        assert_int_equal(get_status(path, NULL), 401);
    }
    assert_int_equal(get_status("/api/previews/00000000-0000-4000-8000-000000000000", &alice), 404);
    /* nor may bob preview alice's private preset, alone or as an "edit" */
    char body[400], id[40];
    snprintf(body, sizeof(body), "{\"preset_id\":\"%s\",\"source\":\"sample\"}", alice_preset);
    assert_int_equal(post_preview(&bob, body, id, NULL), 404);
    snprintf(body, sizeof(body), "{\"preset_id\":\"%s\",\"graph\":" INVERT_GRAPH "}", alice_preset);
    assert_int_equal(post_preview(&bob, body, id, NULL), 404);
}

static void test_system_preset_preview(void **state)
{
    (void)state;
    char *preset = sql_value("SELECT id::text FROM presets WHERE name = 'portrait_pro'"
                             " AND created_by_user_id IS NULL",
                             0, NULL);
    assert_non_null(preset);
    char *version = sql_value("SELECT version::text FROM presets WHERE name = 'portrait_pro'"
                              " AND created_by_user_id IS NULL",
                              0, NULL);
    char key[160];
    snprintf(key, sizeof(key), "ca:preset_preview:%s:%s", preset, version);
    char err[256];
    redisReply *del = redis_command(redis, err, sizeof(err), "DEL %s", key); /* not rendered */
    freeReplyObject(del);
    char path[200];
    snprintf(path, sizeof(path), "/api/presets/%s/preview/after.jpg", preset);
    /* public: no session; the first request queues the render */
    gwt_resp_t first = gwt_request(GW, "GET", path, NULL, false, NULL);
    assert_int_equal(first.status, 503);
    assert_string_equal(gwt_error_code(&first), "preview_pending");
    char *ra = gwt_header(first.headers, "Retry-After");
    assert_non_null(ra);
    free(ra);
    gwt_resp_free(&first);
    long st = 503;
    for (int i = 0; i < 300 && st != 200; i++) {
        usleep(50 * 1000);
        st = get_status(path, NULL);
    }
    assert_int_equal(st, 200);
    img_t a = get_jpeg(path, NULL);
    snprintf(path, sizeof(path), "/api/presets/%s/preview/before.jpg", preset);
    img_t b = get_jpeg(path, NULL);
    assert_int_equal(a.w, 512);
    assert_int_equal(b.w, 512);
    /* cached per version: kept for days */
    redisReply *ttl = redis_command(redis, err, sizeof(err), "TTL %s", key);
    assert_non_null(ttl);
    assert_true(ttl->integer > 86400); /* kept for days once rendered */
    freeReplyObject(ttl);
    /* a user's preset is not public */
    char *own = sql_value("SELECT id::text FROM presets WHERE created_by_user_id IS NOT NULL"
                          " LIMIT 1",
                          0, NULL);
    if (own != NULL) {
        snprintf(path, sizeof(path), "/api/presets/%s/preview/after.jpg", own);
        assert_int_equal(get_status(path, NULL), 404);
    }
    /* and previews by preset_id work for system presets too */
    char body[200], id[40];
    snprintf(body, sizeof(body), "{\"preset_id\":\"%s\",\"source\":\"sample\"}", preset);
    assert_int_equal(post_preview(&bob, body, id, NULL), 202);
    cJSON *doc = wait_preview(&bob, id);
    assert_string_equal(gwt_str(doc, "status"), "done");
    cJSON_Delete(doc);
    free(own);
    free(version);
    free(preset);
}

/* GET /api/system-presets: public, the active system presets by name with
 * their preview URLs (the landing page finds the ids there); no user's
 * preset, public or not. */
static void test_system_presets_list(void **state)
{
    (void)state;
    gwt_resp_t r = gwt_request(GW, "GET", "/api/system-presets", NULL, false, NULL);
    assert_int_equal(r.status, 200);
    char *cc = gwt_header(r.headers, "Cache-Control");
    assert_non_null(cc);
    assert_string_equal(cc, "public, max-age=300");
    free(cc);
    cJSON *list = cJSON_GetObjectItemCaseSensitive(r.json, "presets");
    assert_true(cJSON_IsArray(list));
    const char *names[] = {"landscape_vivid", "portrait_pro", "product_clean"};
    assert_int_equal(cJSON_GetArraySize(list), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *p = cJSON_GetArrayItem(list, i);
        assert_string_equal(gwt_str(p, "name"), names[i]);
        const char *q[] = {names[i]};
        char *id = sql_value("SELECT id::text FROM presets WHERE name = $1"
                             " AND created_by_user_id IS NULL",
                             1, q);
        assert_non_null(id);
        assert_string_equal(gwt_str(p, "id"), id);
        char want[200];
        snprintf(want, sizeof(want), "/api/presets/%s/preview/before.jpg", id);
        assert_string_equal(gwt_str(p, "before_url"), want);
        snprintf(want, sizeof(want), "/api/presets/%s/preview/after.jpg", id);
        assert_string_equal(gwt_str(p, "after_url"), want);
        assert_non_null(gwt_str(p, "description"));
        free(id);
    }
    gwt_resp_free(&r);
}

static bool preset_preview_done(void *arg)
{
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "HGET %s status", (const char *)arg);
    bool done = r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "done") == 0;
    freeReplyObject(r);
    return done;
}

/* The worker renders the system presets' previews before anyone asks: the
 * landing page's first visitor gets the images, not 503. */
static void test_system_presets_warmed(void **state)
{
    (void)state;
    char *row = sql_value("SELECT id::text || ':' || version FROM presets"
                          " WHERE name = 'product_clean' AND created_by_user_id IS NULL",
                          0, NULL);
    assert_non_null(row);
    char key[200];
    snprintf(key, sizeof(key), "ca:preset_preview:%s", row);
    if (!wait_until(preset_preview_done, key, 30000)) {
        proc_print_log(&worker);
        fail_msg("%s was not rendered by the worker within 30 s", key);
    }
    char path[200];
    *strchr(row, ':') = '\0';
    snprintf(path, sizeof(path), "/api/presets/%s/preview/after.jpg", row);
    img_t a = get_jpeg(path, NULL); /* the first request: 200 at once */
    assert_int_equal(a.w, 512);
    free(row);
}

static bool job_finished(void *arg)
{
    char *st = wu_job_col(arg, "status");
    bool done = st != NULL && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0);
    free(st);
    return done;
}

static void test_completed_job_has_thumbnails(void **state)
{
    (void)state;
    char *b64 = photo_b64(1200, 800);
    char file[128];
    wu_drive_file(google.base_url, &alice_drive, "thumbme.jpg", "image/jpeg", b64, file,
                  sizeof(file));
    g_free(b64);
    const char *p[] = {alice.id, file, "thumbme.jpg", alice_drive.inbox};
    char *job = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2, $3,"
                          " $4, 1000, 'image/jpeg', 'inverted')",
                          4, p);
    assert_non_null(job);
    snprintf(alice_job, sizeof(alice_job), "%s", job);
    free(job);
    char err[256];
    assert_int_equal(queue_push_user(redis, alice_job, alice.id, "free", err, sizeof(err)), 0);
    if (!wait_until(job_finished, alice_job, 30000)) {
        proc_print_log(&worker);
        fail_msg("the job did not finish");
    }
    char *st = wu_job_col(alice_job, "status");
    assert_string_equal(st, "completed");
    free(st);
    char path[200];
    snprintf(path, sizeof(path), "/api/jobs/%s/thumbnail/before.jpg", alice_job);
    img_t b = get_jpeg(path, &alice);
    assert_int_equal(get_status(path, &bob), 404);
    snprintf(path, sizeof(path), "/api/jobs/%s/thumbnail/after.jpg", alice_job);
    img_t a = get_jpeg(path, &alice);
    assert_int_equal(get_status(path, &bob), 404);
    assert_int_equal(get_status(path, NULL), 401);
    assert_int_equal(b.w, 256);
    assert_int_equal(b.h, 171);
    assert_int_equal(a.w, 256);
    assert_int_equal(a.h, 171);
    assert_true(a.mean > 255.0 - b.mean - 4.0 && a.mean < 255.0 - b.mean + 4.0);
    /* a job without thumbnails (none stored): 404 */
    redisReply *del = redis_command(redis, err, sizeof(err), "DEL ca:thumb:%s", alice_job);
    freeReplyObject(del);
    assert_int_equal(get_status(path, &alice), 404);
}

static long redis_exists(const char *key)
{
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "EXISTS %s", key);
    assert_non_null(r);
    long n = (long)r->integer;
    freeReplyObject(r);
    return n;
}

/* Deleting the account deletes the thumbnails of its photos (they would
 * otherwise stay in Redis until WORKER_THUMBNAIL_TTL_SECONDS). */
static void test_account_deletion_deletes_thumbnails(void **state)
{
    (void)state;
    gwt_session_t dave;
    assert_int_equal(gwt_sign_in(GW, "dave.preview@example.com", &dave), 0);
    fake_google_user_t g;
    fake_google_user(google.base_url, dave.email, "test-client", &g);
    wu_user_t d;
    memset(&d, 0, sizeof(d));
    snprintf(d.id, sizeof(d.id), "%s", dave.id);
    snprintf(d.email, sizeof(d.email), "%s", dave.email);
    wu_drive_folder(google.base_url, dave.email, "Inbox", g.root_id, d.inbox, sizeof(d.inbox));
    wu_user_preset(&d, "inv", INVERT_GRAPH);
    char key[2][80];
    for (int i = 0; i < 2; i++) {
        char name[32], file[128];
        snprintf(name, sizeof(name), "dave%d.jpg", i);
        wu_drive_file(google.base_url, &d, name, "image/jpeg", TINY_JPEG_B64, file, sizeof(file));
        const char *p[] = {d.id, file, name, d.inbox};
        char *job = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2,"
                              " $3, $4, 1000, 'image/jpeg', 'inv')",
                              4, p);
        assert_non_null(job);
        char err[256];
        assert_int_equal(queue_push_user(redis, job, d.id, "free", err, sizeof(err)), 0);
        if (!wait_until(job_finished, job, 30000)) {
            proc_print_log(&worker);
            fail_msg("dave's job did not finish");
        }
        snprintf(key[i], sizeof(key[i]), "ca:thumb:%s", job);
        free(job);
        assert_int_equal(redis_exists(key[i]), 1);
    }
    char body[200];
    snprintf(body, sizeof(body), "{\"confirm\":\"%s\"}", dave.email);
    gwt_resp_t r = gwt_request(GW, "DELETE", "/api/me", &dave, true, body);
    if (r.status != 200) {
        fprintf(stderr, "DELETE /api/me: %ld %s\n", r.status, r.body);
    }
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    /* fire and forget after the reply: give it a moment */
    for (int i = 0; i < 40 && (redis_exists(key[0]) || redis_exists(key[1])); i++) {
        usleep(50 * 1000);
    }
    assert_int_equal(redis_exists(key[0]), 0);
    assert_int_equal(redis_exists(key[1]), 0);
    char index[80];
    snprintf(index, sizeof(index), "ca:thumbs:u:%s", dave.id);
    assert_int_equal(redis_exists(index), 0);
}

static long queued_left(const char *user)
{
    const char *p[] = {user};
    char *v =
        sql_value("SELECT count(*) FROM jobs WHERE user_id = $1::uuid AND status = 'queued'", 1, p);
    long n = v != NULL ? atol(v) : -1;
    free(v);
    return n;
}

static void test_preview_not_behind_backlog(void **state)
{
    (void)state;
    wu_user_t u =
        wu_make_user(google.base_url, keys, "test-client", "backlog.preview@example.com", NULL);
    const char *sp[] = {u.id};
    assert_int_equal(sql_exec("INSERT INTO subscriptions (user_id, tier, status, monthly_limit)"
                              " VALUES ($1::uuid, 'studio', 'active', 100000)"
                              " ON CONFLICT (user_id) DO UPDATE SET tier = 'studio',"
                              " monthly_limit = 100000",
                              1, sp),
                     0);
    wu_user_preset(&u, "slow", SLOW_GRAPH);
    static char jobs[BACKLOG][40];
    for (int i = 0; i < BACKLOG; i++) {
        char name[32], file[128];
        snprintf(name, sizeof(name), "b%04d.jpg", i);
        wu_drive_file(google.base_url, &u, name, "image/jpeg", TINY_JPEG_B64, file, sizeof(file));
        const char *p[] = {u.id, file, name, u.inbox};
        char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2, $3,"
                             " $4, 1000, 'image/jpeg', 'slow')",
                             4, p);
        assert_non_null(id);
        snprintf(jobs[i], 40, "%s", id);
        free(id);
    }
    char err[256];
    for (int i = 0; i < BACKLOG; i++) {
        assert_int_equal(queue_push_user(redis, jobs[i], u.id, "studio", err, sizeof(err)), 0);
    }
    /* the worker is busy with the backlog */
    usleep(300 * 1000);
    char id[40];
    assert_int_equal(
        post_preview(&alice, "{\"graph\":" INVERT_GRAPH ",\"source\":\"sample\"}", id, NULL), 202);
    assert_inverted_pair(&alice, id, 512, 512);
    long left = queued_left(u.id);
    const char *p[] = {u.id};
    char *started = sql_value("SELECT count(*) FROM jobs WHERE user_id = $1::uuid"
                              " AND started_at IS NOT NULL",
                              1, p);
    print_message("backlog jobs still queued when the preview was done: %ld of %d (%s started)\n",
                  left, BACKLOG, started);
    /* the worker was busy with the backlog, and the preview did not wait for it */
    assert_true(started != NULL && atol(started) >= 1);
    free(started);
    assert_true(left >= BACKLOG * 3 / 4);
    /* the rest of the backlog is not this suite's business */
    assert_int_equal(sql_exec("UPDATE jobs SET status = 'cancelled' WHERE user_id = $1::uuid"
                              " AND status = 'queued'",
                              1, sp),
                     0);
}

static void test_rate_limit(void **state)
{
    (void)state;
    char id[40];
    for (int i = 0; i < RATE_LIMIT; i++) {
        assert_int_equal(
            post_preview(&carol, "{\"graph\":" INVERT_GRAPH ",\"source\":\"sample\"}", id, NULL),
            202);
    }
    gwt_resp_t r;
    assert_int_equal(
        post_preview(&carol, "{\"graph\":" INVERT_GRAPH ",\"source\":\"sample\"}", id, &r), 429);
    assert_string_equal(gwt_error_code(&r), "rate_limited");
    char *ra = gwt_header(r.headers, "Retry-After");
    assert_non_null(ra);
    free(ra);
    gwt_resp_free(&r);
    /* per user: bob is not limited by carol's previews */
    assert_int_equal(
        post_preview(&bob, "{\"graph\":" INVERT_GRAPH ",\"source\":\"sample\"}", id, NULL), 202);
}

static void test_daemons_stop_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&worker), 0);
    assert_int_equal(daemon_stop(&gw), 0); /* 0: no sanitizer report either */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsaved_graph_on_sample),
        cmocka_unit_test(test_saved_preset_on_drive_file),
        cmocka_unit_test(test_invalid_graph_names_the_node),
        cmocka_unit_test(test_other_users_preview_is_404),
        cmocka_unit_test(test_system_preset_preview),
        cmocka_unit_test(test_system_presets_warmed),
        cmocka_unit_test(test_system_presets_list),
        cmocka_unit_test(test_completed_job_has_thumbnails),
        cmocka_unit_test(test_account_deletion_deletes_thumbnails),
        cmocka_unit_test(test_preview_not_behind_backlog),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_daemons_stop_cleanly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
