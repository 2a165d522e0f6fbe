/*
 * preview — the preview lane and the job thumbnails (see preview.h and
 * docs/job-worker.md, "Previews and thumbnails").
 */
#define _GNU_SOURCE
#include "preview.h"

#include "cpu_exec.h"
#include "drive.h"
#include "drive_auth.h"
#include "graph.h"
#include "infile.h"
#include "log.h"
#include "metrics.h"
#include "now.h"
#include "pg.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The sample photo, in the binary (so the container image needs no file):
 * tests/fixtures/astronaut.png (public domain, NASA) as a 512×512 JPEG. The
 * path is relative to the repository root, where make runs the compiler. */
__asm__(".section .rodata\n"
        ".balign 16\n"
        "ca_preview_sample_start:\n"
        ".incbin \"services/job-worker/sample.jpg\"\n"
        "ca_preview_sample_end:\n"
        ".previous\n");
extern const unsigned char ca_preview_sample_start[] __asm__("ca_preview_sample_start");
extern const unsigned char ca_preview_sample_end[] __asm__("ca_preview_sample_end");

const unsigned char *preview_sample(size_t *len)
{
    *len = (size_t)(ca_preview_sample_end - ca_preview_sample_start);
    return ca_preview_sample_start;
}

void preview_pair_free(preview_pair_t *p)
{
    g_free(p->before);
    g_free(p->after);
    memset(p, 0, sizeof(*p));
}

static void perr(preview_err_t *e, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perr(preview_err_t *e, const char *code, const char *fmt, ...)
{
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

/* A JPEG in sRGB or greyscale shrunk straight by its loader (libjpeg's DCT
 * scaling: 1/2, 1/4 or 1/8 while decoding), then rotated by its EXIF
 * orientation and resized: about a quarter cheaper than vips_thumbnail_buffer
 * on a 12 MP photo (it reads the header twice and checks more). 1: not such a
 * JPEG (the caller uses vips_thumbnail_buffer); 0 with *out; -1 on error. */
static int shrink_jpeg_fast(const void *buf, size_t len, int edge, VipsImage **out)
{
    if (cpu_exec_format(buf, len) != CPU_FORMAT_JPEG) {
        return 1;
    }
    VipsImage *head = NULL;
    if (vips_jpegload_buffer((void *)buf, len, &head, NULL) != 0) {
        vips_error_clear();
        return 1;
    }
    int w = vips_image_get_width(head);
    int h = vips_image_get_height(head);
    VipsInterpretation in = vips_image_get_interpretation(head);
    g_object_unref(head);
    if (in != VIPS_INTERPRETATION_sRGB && in != VIPS_INTERPRETATION_B_W) {
        return 1; /* CMYK and the like: vips_thumbnail converts them */
    }
    int longest = w > h ? w : h;
    int shrink = 1;
    while (shrink < 8 && longest / (shrink * 2) >= edge) {
        shrink *= 2;
    }
    VipsImage *loaded = NULL, *rotated = NULL;
    if (vips_jpegload_buffer((void *)buf, len, &loaded, "shrink", shrink, "access",
                             VIPS_ACCESS_SEQUENTIAL, NULL) != 0) {
        vips_error_clear();
        return -1;
    }
    int rc = vips_autorot(loaded, &rotated, NULL);
    g_object_unref(loaded);
    if (rc != 0) {
        vips_error_clear();
        return -1;
    }
    int rw = vips_image_get_width(rotated);
    int rh = vips_image_get_height(rotated);
    int rl = rw > rh ? rw : rh;
    if (rl <= edge) {
        *out = rotated; /* never enlarged */
        return 0;
    }
    rc = vips_resize(rotated, out, (double)edge / rl, NULL);
    g_object_unref(rotated);
    if (rc != 0) {
        vips_error_clear();
        return -1;
    }
    return 0;
}

/* buf (a format the front door let through) shrunk to `edge` px on its long
 * edge (never enlarged; EXIF orientation applied), as a baseline JPEG. */
static int shrink_jpeg(const void *buf, size_t len, int edge, void **out, size_t *outlen, int *w,
                       int *h)
{
    VipsImage *img = NULL;
    int fast = shrink_jpeg_fast(buf, len, edge, &img);
    if (fast < 0) {
        return -1;
    }
    if (fast > 0 && vips_thumbnail_buffer((void *)buf, len, &img, edge, "height", edge, "size",
                                          VIPS_SIZE_DOWN, NULL) != 0) {
        vips_error_clear();
        return -1;
    }
    int rc = vips_jpegsave_buffer(img, out, outlen, "Q", 82, "strip", TRUE, NULL);
    if (rc == 0 && w != NULL) {
        *w = vips_image_get_width(img);
        *h = vips_image_get_height(img);
    }
    g_object_unref(img);
    if (rc != 0) {
        vips_error_clear();
        return -1;
    }
    return 0;
}

static int front_door(const void *src, size_t len, long long max_pixels, preview_err_t *e)
{
    char err[256] = "";
    cpu_exec_status_t st =
        cpu_exec_open(src, len, VIPS_ACCESS_SEQUENTIAL, max_pixels, NULL, err, sizeof(err));
    if (st == CPU_EXEC_UNSUPPORTED_IMAGE) {
        perr(e, "unsupported_image",
             "This file is not an image we can read (JPEG, PNG, WebP, TIFF or HEIC): %s", err);
        return -1;
    }
    if (st == CPU_EXEC_TOO_LARGE) {
        const char *reason = strncmp(err, "image_too_large: ", 17) == 0 ? err + 17 : err;
        perr(e, "image_too_large", "This image is too large to process: %s.", reason);
        return -1;
    }
    if (st != CPU_EXEC_OK) {
        perr(e, "processing_error", "The image could not be opened: %s", err);
        return -1;
    }
    return 0;
}

static int preview_render_c(const void *src, size_t len, long long max_pixels, const cJSON *graph,
                            int edge, const atomic_int *cancel, preview_pair_t *out,
                            preview_err_t *e)
{
    memset(out, 0, sizeof(*out));
    cJSON *verr = NULL;
    graph_status_t gs = graph_validate(graph, cpu_exec_registry(), &verr);
    if (gs == GRAPH_UNKNOWN_CLASS) {
        cJSON_Delete(verr);
        perr(e, "comfyui_unavailable",
             "This preset needs the GPU image server; previews run on the CPU executor only.");
        return -1;
    }
    if (gs != GRAPH_OK) {
        char *summary = graph_error_summary(verr);
        perr(e, "processing_error", "The preset is not valid: %s",
             summary != NULL ? summary : "validation failed");
        free(summary);
        e->details = verr;
        return -1;
    }
    cJSON_Delete(verr);
    if (front_door(src, len, max_pixels, e) != 0) {
        return -1;
    }
    if (shrink_jpeg(src, len, edge, &out->before, &out->before_len, NULL, NULL) != 0) {
        perr(e, "unsupported_image", "The image could not be decoded.");
        return -1;
    }
    cpu_exec_job_t cj = {.input = out->before,
                         .input_len = out->before_len,
                         .max_pixels = max_pixels,
                         .deadline_ms = now_mono_ms() + PREVIEW_MAX_SECONDS * 1000,
                         .cancel = cancel};
    char xerr[256] = "";
    cpu_exec_status_t xs = cpu_exec_run(graph, &cj, xerr, sizeof(xerr));
    int rc = -1;
    if (xs == CPU_EXEC_TIMEOUT) {
        perr(e, "timeout", "The preview took longer than %d s and was stopped.",
             PREVIEW_MAX_SECONDS);
    } else if (xs == CPU_EXEC_CANCELLED) {
        perr(e, "processing_error", "The preview was stopped (the worker is shutting down).");
    } else if (xs == CPU_EXEC_TOO_LARGE) {
        perr(e, "image_too_large", "Processing failed: %s", xerr);
    } else if (xs != CPU_EXEC_OK) {
        perr(e, "processing_error", "Processing failed: %s", xerr);
    } else if (shrink_jpeg(cj.output, cj.output_len, edge, &out->after, &out->after_len,
                           &out->width, &out->height) != 0) {
        perr(e, "processing_error", "The preview's output could not be encoded.");
    } else {
        rc = 0;
    }
    cpu_exec_job_free(&cj);
    if (rc != 0) {
        preview_pair_free(out);
    }
    return rc;
}

int preview_render(const void *src, size_t len, long long max_pixels, const cJSON *graph, int edge,
                   preview_pair_t *out, preview_err_t *e)
{
    return preview_render_c(src, len, max_pixels, graph, edge, NULL, out, e);
}

/* ---- thumbnails ---- */

int thumbs_make(const void *original, size_t original_len, const void *output, size_t output_len,
                long long max_pixels, preview_pair_t *out)
{
    memset(out, 0, sizeof(*out));
    preview_err_t e = {0};
    /* the output of a ComfyUI preset is not ours: the front door for it too */
    if (front_door(output, output_len, max_pixels, &e) != 0 ||
        shrink_jpeg(original, original_len, THUMB_EDGE, &out->before, &out->before_len, NULL,
                    NULL) != 0 ||
        shrink_jpeg(output, output_len, THUMB_EDGE, &out->after, &out->after_len, &out->width,
                    &out->height) != 0) {
        preview_pair_free(out);
        return -1;
    }
    return 0;
}

struct thumbs_task {
    const void *original, *output;
    size_t original_len, output_len;
    long long max_pixels;
    pthread_t tid;
    bool threaded;
    int rc;
    preview_pair_t pair;
};

static void *thumbs_main(void *arg)
{
    thumbs_task_t *task = arg;
    task->rc = thumbs_make(task->original, task->original_len, task->output, task->output_len,
                           task->max_pixels, &task->pair);
    return NULL;
}

thumbs_task_t *thumbs_start(const void *original, size_t original_len, const void *output,
                            size_t output_len, long long max_pixels)
{
    thumbs_task_t *task = calloc(1, sizeof(*task));
    if (task == NULL) {
        return NULL;
    }
    *task = (thumbs_task_t){.original = original,
                            .original_len = original_len,
                            .output = output,
                            .output_len = output_len,
                            .max_pixels = max_pixels};
    task->threaded = pthread_create(&task->tid, NULL, thumbs_main, task) == 0;
    if (!task->threaded) {
        thumbs_main(task);
    }
    return task;
}

int thumbs_finish(thumbs_task_t *task, preview_pair_t *out)
{
    if (task == NULL) {
        return -1;
    }
    if (task->threaded) {
        pthread_join(task->tid, NULL);
    }
    int rc = task->rc;
    if (out != NULL && rc == 0) {
        *out = task->pair;
    } else {
        preview_pair_free(&task->pair);
    }
    free(task);
    return out != NULL ? rc : 0;
}

int thumbs_store(redis_conn_t *redis, const char *job_id, const char *user_id,
                 const preview_pair_t *p, int ttl_s)
{
    if (p->before == NULL || p->after == NULL || redis == NULL) {
        return -1;
    }
    char key[128], index[128];
    snprintf(key, sizeof(key), THUMB_KEY_PREFIX "%s", job_id);
    snprintf(index, sizeof(index), THUMB_USER_KEY_PREFIX "%s", user_id);
    char err[256];
    /* the pair, and the job in its user's index (scored by expiry, pruned
     * here) so that an account deletion finds every thumbnail of the user */
    redisReply *r =
        redis_command(redis, err, sizeof(err), "EVAL %s 2 %s %s %b %b %d %lld %s",
                      "redis.call('HSET', KEYS[1], 'before', ARGV[1], 'after', ARGV[2])\n"
                      "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
                      "local now = tonumber(ARGV[4])\n"
                      "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[5])\n"
                      "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
                      "redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
                      "return 1",
                      key, index, p->before, p->before_len, p->after, p->after_len, ttl_s,
                      (long long)(now_wall_ms() / 1000), job_id);
    if (r == NULL) {
        log_warn("thumbnails not stored: %s", err);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/* ---- the lane ---- */

typedef struct {
    preview_lane_t *lane;
    int index;
    pthread_t tid;
    bool started;
    redis_conn_t *redis;
    pg_conn_t *pg;
    google_client_t *gc;
} lane_thread_t;

struct preview_lane {
    preview_lane_config_t cfg;
    stopwait_t stop;
    atomic_int stopping; /* stops a render in progress (cpu_exec_job_t.cancel) */
    lane_thread_t *threads;
};

static metric_t *m_previews;

/* Writes the outcome into the result key, only while it exists (the gateway
 * made it with its TTL; an expired request is nobody's any more). ttl_s > 0
 * resets the TTL (a system preset's cached preview is kept longer). */
static const char RESULT_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'status', ARGV[1], 'before', ARGV[2], 'after', ARGV[3],"
    " 'width', ARGV[4], 'height', ARGV[5], 'error_code', ARGV[6], 'error_message', ARGV[7],"
    " 'error_details', ARGV[8])\n"
    "local ttl = tonumber(ARGV[9])\n"
    "if ttl ~= nil and ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end\n"
    "return 1";

static void write_result(lane_thread_t *t, const char *key, const preview_pair_t *p,
                         const preview_err_t *e, long ttl_s)
{
    char err[256];
    bool ok = e->code == NULL;
    char *details = e->details != NULL ? cJSON_PrintUnformatted(e->details) : NULL;
    redisReply *r = redis_command(
        t->redis, err, sizeof(err), "EVAL %s 1 %s %s %b %b %d %d %s %s %s %ld", RESULT_LUA, key,
        ok ? "done" : "failed", ok ? p->before : "", ok ? p->before_len : (size_t)0,
        ok ? p->after : "", ok ? p->after_len : (size_t)0, ok ? p->width : 0, ok ? p->height : 0,
        ok ? "" : e->code, ok ? "" : e->message, details != NULL ? details : "", ok ? ttl_s : 0L);
    free(details);
    if (r == NULL) {
        log_warn("preview result not stored: %s", err);
        return;
    }
    freeReplyObject(r);
}

static int token_err(drive_auth_status_t st, preview_err_t *e)
{
    switch (st) {
    case DRIVE_AUTH_OK:
        return 0;
    case DRIVE_AUTH_REVOKED:
    case DRIVE_AUTH_NO_TOKENS:
        perr(e, "drive_auth_revoked",
             "Google Drive is not connected. Reconnect Google Drive in the dashboard.");
        return -1;
    case DRIVE_AUTH_TRANSIENT:
        perr(e, "timeout", "Google did not answer when we renewed Drive access.");
        return -1;
    case DRIVE_AUTH_DB:
        perr(e, "processing_error", "A temporary database problem stopped this preview.");
        return -1;
    }
    return -1;
}

/* The user's Drive file, with the job's limits (MAX_IMAGE_BYTES) and the
 * job's error codes. */
static int download(lane_thread_t *t, const char *user_id, const char *file_id,
                    const char *folder_id, infile_t *in, preview_err_t *e)
{
    const preview_lane_config_t *cfg = &t->lane->cfg;
    char err[256];
    if (!drive_id_valid(file_id)) {
        perr(e, "drive_file_not_found", "The Drive file id is not valid.");
        return -1;
    }
    if (t->pg == NULL) {
        t->pg = pg_connect(daemon_get(cfg->d, "DATABASE_URL"), 2000, err, sizeof(err));
        if (t->pg == NULL) {
            perr(e, "processing_error", "A temporary database problem stopped this preview.");
            return -1;
        }
    }
    char token[4096];
    google_error_t gerr = {0};
    google_status_t st = GOOGLE_OK;
    int rc = -1;
    for (int pass = 0; pass < 2; pass++) {
        if (token_err(drive_auth_access_token(t->pg, t->gc, cfg->keys, user_id, pass == 1, token,
                                              sizeof(token), &gerr),
                      e) != 0) {
            goto out;
        }
        /* a photo of the watched folder (the gateway sent its id), not any
         * file the token can read */
        drive_file_t f = {0};
        st = drive_files_get(t->gc, token, file_id, &f, &gerr);
        bool in_folder = false;
        for (size_t i = 0; st == GOOGLE_OK && folder_id != NULL && i < f.nparents; i++) {
            in_folder = in_folder || strcmp(f.parents[i], folder_id) == 0;
        }
        bool trashed = f.trashed;
        drive_file_free(&f);
        if (st == GOOGLE_OK && (!in_folder || trashed)) {
            perr(e, "drive_file_not_found", "The file is not in your watched folder.");
            goto out;
        }
        if (st == GOOGLE_OK) {
            st = infile_download(t->gc, token, file_id, cfg->max_image_bytes, in, &gerr);
        }
        if (st != GOOGLE_ERR_AUTH) {
            break;
        }
    }
    switch (st) {
    case GOOGLE_OK:
        rc = 0;
        break;
    case GOOGLE_ERR_NOT_FOUND:
        perr(e, "drive_file_not_found", "The file is not in Google Drive (or not shared with us).");
        break;
    case GOOGLE_ERR_FORBIDDEN:
        perr(e, "drive_forbidden", "Google Drive does not let this app read the file.");
        break;
    case GOOGLE_ERR_TOO_LARGE:
        perr(e, "image_too_large", "The file is larger than the %zu MB limit.",
             cfg->max_image_bytes / (1024 * 1024));
        break;
    case GOOGLE_ERR_INVALID_GRANT:
        perr(e, "drive_auth_revoked",
             "Google Drive access was revoked. Reconnect Google Drive in the dashboard.");
        break;
    case GOOGLE_ERR_NETWORK:
        perr(e, "timeout", "Google Drive did not answer in time.");
        break;
    default:
        perr(e, "processing_error", "Google Drive could not send the file (%s).",
             google_status_name(st));
        break;
    }
out:
    explicit_bzero(token, sizeof(token));
    return rc;
}

/* A key this lane may write: ca:preview:<id> or ca:preset_preview:<id>:<version>. */
static bool result_key_ok(const char *key)
{
    if (key == NULL || strlen(key) > 120) {
        return false;
    }
    return strncmp(key, PREVIEW_KEY_PREFIX, strlen(PREVIEW_KEY_PREFIX)) == 0 ||
           strncmp(key, PRESET_PREVIEW_KEY_PREFIX, strlen(PRESET_PREVIEW_KEY_PREFIX)) == 0;
}

/* One request: {"key", "graph", "source": "sample"|"drive", "drive_file_id",
 * "user_id", "ttl"} (the gateway's, docs/job-worker.md). */
static void handle(lane_thread_t *t, const char *item)
{
    cJSON *req = cJSON_Parse(item);
    const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "key"));
    const cJSON *graph = cJSON_GetObjectItemCaseSensitive(req, "graph");
    const char *source = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "source"));
    const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(req, "ttl");
    if (!result_key_ok(key) || !cJSON_IsObject(graph) || source == NULL) {
        log_warn("dropping a preview request that is not one");
        metric_add(m_previews, 1, "dropped", "");
        cJSON_Delete(req);
        return;
    }
    char err[256];
    redisReply *ex = redis_command(t->redis, err, sizeof(err), "EXISTS %s", key);
    bool live = ex != NULL && ex->type == REDIS_REPLY_INTEGER && ex->integer == 1;
    freeReplyObject(ex);
    if (!live) {
        log_debug("preview request expired before its turn");
        metric_add(m_previews, 1, "expired", "");
        cJSON_Delete(req);
        return;
    }
    int64_t t0 = now_mono_ms();
    preview_err_t e = {0};
    preview_pair_t pair = {0};
    infile_t in = {.fd = -1};
    size_t len = 0;
    const void *src = NULL;
    if (strcmp(source, "sample") == 0) {
        src = preview_sample(&len);
    } else if (strcmp(source, "drive") == 0) {
        const char *user = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "user_id"));
        const char *file =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "drive_file_id"));
        if (user == NULL) {
            perr(&e, "processing_error", "The preview has no user.");
        } else if (download(
                       t, user, file,
                       cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "folder_id")),
                       &in, &e) == 0) {
            src = in.len > 0 ? in.data : ""; /* an empty file: unsupported_image */
            len = in.len;
        }
    } else {
        perr(&e, "processing_error", "Unknown preview source.");
    }
    if (src != NULL) {
        (void)preview_render_c(src, len, t->lane->cfg.max_image_pixels, graph, PREVIEW_EDGE,
                               &t->lane->stopping, &pair, &e);
    }
    infile_close(&in);
    write_result(t, key, &pair, &e, cJSON_IsNumber(ttl) ? (long)ttl->valuedouble : 0L);
    metric_add(m_previews, 1, e.code == NULL ? "done" : "failed", e.code != NULL ? e.code : "");
    log_info("preview %s in %lld ms%s%s", e.code == NULL ? "done" : "failed",
             (long long)(now_mono_ms() - t0), e.code != NULL ? ": " : "",
             e.code != NULL ? e.code : "");
    preview_pair_free(&pair);
    cJSON_Delete(e.details);
    cJSON_Delete(req);
}

static void *lane_main(void *arg)
{
    lane_thread_t *t = arg;
    preview_lane_t *lane = t->lane;
    char name[32];
    snprintf(name, sizeof(name), "preview-%d", t->index);
    log_context_set("thread", name);
    char err[256];
    while (!stopwait_stopped(&lane->stop)) {
        if (t->redis == NULL) {
            t->redis = redis_connect(daemon_get(lane->cfg.d, "REDIS_URL"), 2000, err, sizeof(err));
            if (t->redis == NULL) {
                stopwait_sleep(&lane->stop, 500);
                continue;
            }
            redis_set_retry(t->redis, 2000);
        }
        redisReply *r = redis_command(t->redis, err, sizeof(err), "BRPOP %s 1", PREVIEW_QUEUE);
        if (r == NULL) {
            log_debug("preview lane: %s", err);
            stopwait_sleep(&lane->stop, 500);
            continue;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            handle(t, r->element[1]->str);
        }
        freeReplyObject(r);
    }
    log_context_clear();
    return NULL;
}

/* KEYS: result key, queue. ARGV: item, pending TTL. Queues the render of a
 * system preset's preview unless its key exists (done, failed or pending):
 * the same key and item as the gateway's GET /api/presets/{id}/preview/... */
static const char WARM_LUA[] = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
                               "redis.call('HSET', KEYS[1], 'status', 'pending')\n"
                               "redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))\n"
                               "redis.call('LPUSH', KEYS[2], ARGV[1])\n"
                               "return 1";

/* A maintenance task: the landing page's previews of the active system
 * presets are rendered before anyone asks (after a deploy, a new version, or
 * a Redis that lost them). */
static void task_warm_presets(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    (void)d;
    (void)arg;
    if (pg == NULL || redis == NULL) {
        return;
    }
    char err[256];
    PGresult *res = pg_exec(pg,
                            "SELECT id::text, version::text, workflow_json::text FROM presets"
                            " WHERE created_by_user_id IS NULL AND COALESCE(is_active, TRUE)"
                            " ORDER BY name LIMIT 100",
                            0, NULL, err, sizeof(err));
    if (res == NULL) {
        log_debug("preset previews: %s", err);
        return;
    }
    int queued = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        char key[128];
        snprintf(key, sizeof(key), PRESET_PREVIEW_KEY_PREFIX "%s:%s", PQgetvalue(res, i, 0),
                 PQgetvalue(res, i, 1));
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "key", key);
        cJSON *graph = cJSON_Parse(PQgetvalue(res, i, 2));
        if (graph == NULL) {
            cJSON_Delete(item);
            continue;
        }
        cJSON_AddItemToObject(item, "graph", graph);
        cJSON_AddStringToObject(item, "source", "sample");
        cJSON_AddNumberToObject(item, "ttl", PRESET_PREVIEW_TTL_S);
        char *text = cJSON_PrintUnformatted(item);
        cJSON_Delete(item);
        if (text == NULL) {
            continue;
        }
        redisReply *r = redis_command(redis, err, sizeof(err), "EVAL %s 2 %s %s %s %d", WARM_LUA,
                                      key, PREVIEW_QUEUE, text, PRESET_PREVIEW_PENDING_S);
        free(text);
        if (r == NULL) {
            log_debug("preset previews: %s", err);
            break;
        }
        queued += r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
    }
    PQclear(res);
    if (queued > 0) {
        log_info("queued the preview of %d system preset(s)", queued);
    }
}

preview_lane_t *preview_lane_start(const preview_lane_config_t *cfg)
{
    preview_lane_t *lane = calloc(1, sizeof(*lane));
    if (lane == NULL) {
        return NULL;
    }
    lane->cfg = *cfg;
    stopwait_init(&lane->stop);
    if (m_previews == NULL) {
        m_previews =
            metrics_counter("ca_worker_previews_total",
                            "Preview requests handled by the preview lane", "status,error_code");
    }
    if (cfg->concurrency <= 0) {
        return lane;
    }
    lane->threads = calloc((size_t)cfg->concurrency, sizeof(*lane->threads));
    if (lane->threads == NULL) {
        preview_lane_stop(lane);
        return NULL;
    }
    for (int i = 0; i < cfg->concurrency; i++) {
        lane_thread_t *t = &lane->threads[i];
        t->lane = lane;
        t->index = i;
        t->gc = google_client_new(cfg->gcfg);
        if (t->gc == NULL || pthread_create(&t->tid, NULL, lane_main, t) != 0) {
            log_error("cannot start preview thread %d", i);
            preview_lane_stop(lane);
            return NULL;
        }
        t->started = true;
    }
    if (daemon_add_task(cfg->d, "preset-previews", PRESET_PREVIEW_WARM_MS, task_warm_presets,
                        NULL) != 0) {
        log_error("cannot register the preset previews task");
        preview_lane_stop(lane);
        return NULL;
    }
    return lane;
}

void preview_lane_stop(preview_lane_t *lane)
{
    if (lane == NULL) {
        return;
    }
    atomic_store(&lane->stopping, 1);
    stopwait_stop(&lane->stop);
    for (int i = 0; lane->threads != NULL && i < lane->cfg.concurrency; i++) {
        lane_thread_t *t = &lane->threads[i];
        if (t->started) {
            pthread_join(t->tid, NULL);
        }
        if (t->redis != NULL) {
            redis_close(t->redis);
        }
        if (t->pg != NULL) {
            pg_close(t->pg);
        }
        google_client_free(t->gc);
    }
    free(lane->threads);
    stopwait_destroy(&lane->stop);
    free(lane);
}
