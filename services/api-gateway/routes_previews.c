/*
 * routes_previews — before/after previews and job thumbnails (issue 16).
 *
 *   POST /api/previews   {preset_id?, graph?, source: "sample" | {"drive_file_id"}}: a saved
 *        preset, an unsaved graph, or both (an edit of that preset, not saved yet)
 *        → 202 {id, status: "pending"}; the request goes to the worker's
 *        preview lane (Redis list ca:previews), never to the job queue
 *   GET  /api/previews/{id}             → {id, status: pending|done|failed, ...}
 *   GET  /api/previews/{id}/before.jpg  → the JPEG (after.jpg likewise)
 *   GET  /api/jobs/{id}/thumbnail/before.jpg (after.jpg) → a completed job's thumbnail
 *   GET  /api/presets/{id}/preview/before.jpg (after.jpg) → a system preset's
 *        preview on the sample photo, public, rendered once per preset version
 *   GET  /api/system-presets → {presets: [{id, name, description, category,
 *        before_url, after_url}]}: the active system presets, public (the
 *        landing page finds the previews' ids here)
 *
 * The gateway never decodes an image: it validates the graph (an unsaved one
 * exactly as POST /api/presets does, on the offload pool), hands the request
 * to the worker through Redis and copies the bytes the worker wrote back.
 *
 * Redis (docs/job-worker.md, "Previews and thumbnails"):
 *   ca:preview:<id>   hash {user, status, before, after, width, height,
 *                     error_code, error_message, error_details}; made here
 *                     (status pending) with PREVIEW_TTL_SECONDS; the worker
 *                     fills it while it exists
 *   ca:preset_preview:<preset id>:<version>  the same for a system preset
 *                     (no user), pending for PRESET_PREVIEW_PENDING_S, kept
 *                     PRESET_PREVIEW_TTL_S once done
 *   ca:previews       the preview lane's list (LPUSH here, BRPOP in the worker),
 *                     at most PREVIEW_QUEUE_MAX items (then 503)
 *   ca:rl:preview:<user>  PREVIEW_RATE_PER_MINUTE previews per user a minute
 *   ca:thumb:<job id> hash {before, after}, written by the worker at completion
 *   ca:thumbs:u:<user> sorted set of the user's jobs with thumbnails (score:
 *                     expiry), emptied with them when the account is deleted
 */
#include "gateway.h"

#include "cpu_nodes.h"
#include "crypto.h"
#include "graph.h"
#include "log.h"
#include "uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREVIEW_QUEUE "ca:previews"
#define PREVIEW_QUEUE_MAX "200"
#define PREVIEW_WORKFLOW_MAX (256 * 1024) /* as POST /api/presets */
/* A system preset's preview: kept 7 days once done, 120 s while pending or
 * failed (the worker's warm-up task, preview.h, uses the same values and key). */
#define PRESET_PREVIEW_TTL_S "604800"
#define PRESET_PREVIEW_PENDING_S "120"

/* KEYS: result key, rate key, queue. ARGV: user, ttl, item, limit, window, max
 * queue. Returns 0 (queued), -1 (the lane is full) or the ms left in the
 * rate window. */
static const char ENQUEUE_SCRIPT[] =
    GW_LUA_RATE_HIT "local wait = hit(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))\n"
                    "if wait > 0 then return wait end\n"
                    "if redis.call('LLEN', KEYS[3]) >= tonumber(ARGV[6]) then return -1 end\n"
                    "redis.call('HSET', KEYS[1], 'user', ARGV[1], 'status', 'pending')\n"
                    "redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))\n"
                    "redis.call('LPUSH', KEYS[3], ARGV[3])\n"
                    "return 0\n";

/* KEYS: result key, queue. ARGV: field (before|after), item, pending ttl, max
 * queue. A cached preview: {"done", bytes}; else {status} after queueing the
 * render when none is pending. */
static const char PRESET_PREVIEW_SCRIPT[] =
    "local st = redis.call('HGET', KEYS[1], 'status')\n"
    "if st == 'done' then return {'done', redis.call('HGET', KEYS[1], ARGV[1])} end\n"
    "if st then return {st} end\n"
    "if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[4]) then return {'busy'} end\n"
    "redis.call('HSET', KEYS[1], 'status', 'pending')\n"
    "redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))\n"
    "redis.call('LPUSH', KEYS[2], ARGV[2])\n"
    "return {'pending'}\n";

/* A new random (version 4) UUID in out (37 bytes). */
static int new_uuid(char out[GW_UUID_LEN + 1])
{
    unsigned char b[16];
    if (crypto_random(b, sizeof(b)) != 0) {
        return -1;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, GW_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

static void reply_redis_down(http_req_t *req)
{
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, 503, "unavailable", "the preview store is not reachable");
}

/* ---- POST /api/previews ---- */

typedef struct {
    gw_t *gw;
    http_req_t *req;
    char user_id[GW_UUID_LEN + 1];
    char id[GW_UUID_LEN + 1];
    char drive_file_id[256]; /* "" : the sample */
    char folder_id[256];     /* the user's watched folder (a Drive source must be in it) */
    bool saved;              /* preset_id was given */
    const cJSON *graph;      /* an unsaved graph, in the request's body */
    /* set by the pool thread */
    char *compact;
    bool too_big;
    graph_status_t graph_status;
    cJSON *graph_error;
    char *item; /* the lane's request */
} preview_t;

static void preview_free(void *arg)
{
    preview_t *p = arg;
    if (p == NULL) {
        return;
    }
    free(p->compact);
    free(p->item);
    cJSON_Delete(p->graph_error);
    free(p);
}

static void on_enqueued(redisReply *reply, const char *err, void *arg)
{
    preview_t *p = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        log_warn("preview not queued: %s",
                 err != NULL ? err : (reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply"));
        reply_redis_down(p->req);
    } else if (reply->integer > 0) {
        char ra[32];
        snprintf(ra, sizeof(ra), "%lld", (reply->integer + 999) / 1000);
        gw_count_rate_limited();
        http_reply_header(p->req, "Retry-After", ra);
        http_reply_error(p->req, 429, "rate_limited",
                         "too many previews this minute; try again in %s s", ra);
    } else if (reply->integer < 0) {
        http_reply_header(p->req, "Retry-After", "5");
        http_reply_error(p->req, 503, "unavailable", "too many previews waiting; try again");
    } else {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "id", p->id);
        cJSON_AddStringToObject(doc, "status", "pending");
        char loc[128];
        snprintf(loc, sizeof(loc), "/api/previews/%s", p->id);
        http_reply_header(p->req, "Location", loc);
        http_reply_header(p->req, "Cache-Control", "no-store");
        http_reply_json(p->req, 202, doc);
    }
    preview_free(p);
}

/* The lane's request for `graph` (taken) and the result key; queues it. Takes p. */
static void enqueue(preview_t *p, cJSON *graph)
{
    char key[64];
    snprintf(key, sizeof(key), "ca:preview:%s", p->id);
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "key", key);
    cJSON_AddItemToObject(item, "graph", graph);
    cJSON_AddStringToObject(item, "source", p->drive_file_id[0] != '\0' ? "drive" : "sample");
    if (p->drive_file_id[0] != '\0') {
        cJSON_AddStringToObject(item, "drive_file_id", p->drive_file_id);
        cJSON_AddStringToObject(item, "folder_id", p->folder_id);
    }
    cJSON_AddStringToObject(item, "user_id", p->user_id);
    p->item = cJSON_PrintUnformatted(item);
    cJSON_Delete(item);
    if (p->item == NULL) {
        http_reply_error(p->req, 503, "unavailable", "out of memory");
        preview_free(p);
        return;
    }
    char rate_key[64], limit[24], ttl[24], window[24];
    snprintf(rate_key, sizeof(rate_key), "ca:rl:preview:%s", p->user_id);
    snprintf(limit, sizeof(limit), "%ld", config_get_int(p->gw->cfg, "PREVIEW_RATE_PER_MINUTE"));
    snprintf(ttl, sizeof(ttl), "%ld", config_get_int(p->gw->cfg, "PREVIEW_TTL_SECONDS"));
    snprintf(window, sizeof(window), "%d", GW_RATE_WINDOW_MS);
    const char *args[] = {key,     rate_key, PREVIEW_QUEUE, p->user_id,       ttl,
                          p->item, limit,    window,        PREVIEW_QUEUE_MAX};
    if (gw_redis_eval(p->gw->redis, on_enqueued, p, ENQUEUE_SCRIPT, 3, 9, args) != 0) {
        reply_redis_down(p->req);
        preview_free(p);
    }
}

static void validate_work(void *arg)
{
    preview_t *p = arg;
    p->compact = cJSON_PrintUnformatted(p->graph);
    if (p->compact == NULL) {
        return;
    }
    if (strlen(p->compact) > PREVIEW_WORKFLOW_MAX) {
        p->too_big = true;
        return;
    }
    /* exactly as a user preset is checked (routes_presets.c) */
    p->graph_status = graph_validate_user(p->graph, cpu_nodes_registry(), &p->graph_error);
}

static void validate_done(void *arg)
{
    preview_t *p = arg;
    if (p->compact == NULL) {
        http_reply_error(p->req, 503, "unavailable", "out of memory");
    } else if (p->too_big) {
        gw_reply_invalid(p->req, "graph", "must be at most 256 KiB");
    } else if (p->graph_status != GRAPH_OK) {
        gw_reply_bad_workflow(p->req, p->graph_error);
        p->graph_error = NULL;
    } else {
        cJSON *graph = cJSON_Parse(p->compact);
        if (graph == NULL) {
            http_reply_error(p->req, 503, "unavailable", "out of memory");
        } else {
            enqueue(p, graph);
            return;
        }
    }
    preview_free(p);
}

/* Validates p->graph off the loop, then queues it. Takes p. */
static void start_validation(preview_t *p)
{
    if (gw_offload(p->gw, validate_work, validate_done, p) != 0) {
        http_reply_header(p->req, "Retry-After", "1");
        http_reply_error(p->req, 503, "unavailable", "too busy; try again");
        preview_free(p);
    }
}

/* The look-up: column 0 the user's watched folder, column 1 the saved
 * preset's graph (NULL: none asked, or not one the user may see). */
static void on_lookup(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    preview_t *p = arg;
    if (PQntuples(res) != 1 || (p->saved && PQgetisnull(res, 0, 1))) {
        gw_reply_not_found(req);
        preview_free(p);
        return;
    }
    if (p->drive_file_id[0] != '\0') {
        const char *folder = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
        if (folder[0] == '\0' || strlen(folder) >= sizeof(p->folder_id)) {
            gw_reply_invalid(req, "source",
                             "a Drive photo must be in your watched folder; you watch none");
            preview_free(p);
            return;
        }
        snprintf(p->folder_id, sizeof(p->folder_id), "%s", folder);
    }
    if (p->graph != NULL) {
        start_validation(p); /* unsaved, or an edit of that preset */
        return;
    }
    cJSON *graph = cJSON_Parse(PQgetvalue(res, 0, 1));
    if (graph == NULL) {
        http_reply_error(req, 500, "internal", "the preset's graph cannot be read");
        preview_free(p);
    } else {
        enqueue(p, graph);
    }
}

static void create_preview(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    static const char *const allowed[] = {"preset_id", "graph", "source", NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    const char *preset_id = NULL;
    if (!gw_json_string(req, body, "preset_id", 36, 36, &preset_id)) {
        return;
    }
    const cJSON *graph = cJSON_GetObjectItemCaseSensitive(body, "graph");
    if (preset_id == NULL && graph == NULL) {
        gw_reply_invalid(req, "preset_id", "or graph is required");
        return;
    }
    if (preset_id != NULL && !uuid_is_valid(preset_id)) {
        gw_reply_invalid(req, "preset_id", "must be a UUID");
        return;
    }
    if (graph != NULL && !cJSON_IsObject(graph)) {
        gw_reply_invalid(req, "graph", "must be an object (a ComfyUI workflow in API format)");
        return;
    }
    const cJSON *source = cJSON_GetObjectItemCaseSensitive(body, "source");
    const char *drive_file_id = NULL;
    if (source == NULL || (cJSON_IsString(source) && strcmp(source->valuestring, "sample") == 0)) {
        drive_file_id = NULL;
    } else if (cJSON_IsObject(source)) {
        static const char *const src_allowed[] = {"drive_file_id", NULL};
        if (!gw_json_only_keys(req, source, src_allowed) ||
            !gw_json_string(req, source, "drive_file_id", 1, 255, &drive_file_id)) {
            return;
        }
        if (drive_file_id == NULL || !drive_id_valid(drive_file_id)) {
            gw_reply_invalid(req, "source",
                             "drive_file_id must be a Drive file id ([A-Za-z0-9_-], 1 to 255)");
            return;
        }
    } else {
        gw_reply_invalid(req, "source", "must be \"sample\" or {\"drive_file_id\": \"...\"}");
        return;
    }
    preview_t *p = calloc(1, sizeof(*p));
    if (p == NULL || new_uuid(p->id) != 0) {
        free(p);
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    p->gw = gw;
    p->req = req;
    snprintf(p->user_id, sizeof(p->user_id), "%s", user->id);
    snprintf(p->drive_file_id, sizeof(p->drive_file_id), "%s",
             drive_file_id != NULL ? drive_file_id : "");
    p->graph = graph;
    p->saved = preset_id != NULL;
    if (preset_id == NULL && drive_file_id == NULL) {
        start_validation(p);
        return;
    }
    /* One statement: the watched folder (a Drive source must be one of its
     * photos: the worker checks the file's parents) and a saved preset the
     * user may see (own, system, public) with the graph the user's jobs run
     * (the version adopted of someone else's, else the current one); with a
     * graph too, the preset is only checked (the graph is its edit). */
    const char *params[] = {user->id, preset_id != NULL ? preset_id : ""};
    gw_query_ex(gw, req, user->id,
                "SELECT (SELECT u.watched_folder_id FROM users u WHERE u.id = $1::uuid),"
                " (SELECT COALESCE(v.workflow_json, p.workflow_json)::text"
                " FROM presets p LEFT JOIN preset_adoptions a ON a.preset_id = p.id"
                " AND a.user_id = $1::uuid AND p.created_by_user_id IS DISTINCT FROM $1::uuid"
                " LEFT JOIN preset_versions v ON v.preset_id = p.id AND v.version = a.version"
                " WHERE p.id = NULLIF($2, '')::uuid AND (p.created_by_user_id = $1::uuid"
                " OR (COALESCE(p.is_active, TRUE) AND (p.created_by_user_id IS NULL"
                " OR COALESCE(p.is_public, FALSE)))))",
                2, params, on_lookup, p, preview_free);
}

/* ---- GET /api/previews/{id}[/before.jpg|/after.jpg] ---- */

typedef struct {
    http_req_t *req;
    char id[GW_UUID_LEN + 1];
    char user_id[GW_UUID_LEN + 1];
    const char *field; /* NULL: the status document */
} fetch_t;

static const char *elem_str(const redisReply *r, size_t i, size_t *len)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
        r->element[i]->type != REDIS_REPLY_STRING) {
        return NULL;
    }
    if (len != NULL) {
        *len = r->element[i]->len;
    }
    return r->element[i]->str;
}

static void reply_jpeg(http_req_t *req, const char *data, size_t len, const char *cache)
{
    http_reply_header(req, "Cache-Control", cache);
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    http_reply_data(req, 200, "image/jpeg", data, len);
}

static void on_fetched(redisReply *reply, const char *err, void *arg)
{
    fetch_t *f = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("preview read: %s", err != NULL ? err : "bad reply");
        reply_redis_down(f->req);
        free(f);
        return;
    }
    const char *user = elem_str(reply, 0, NULL);
    const char *status = elem_str(reply, 1, NULL);
    if (user == NULL || status == NULL || strcmp(user, f->user_id) != 0) {
        gw_reply_not_found(f->req); /* none, expired, or someone else's */
        free(f);
        return;
    }
    if (f->field != NULL) {
        size_t len = 0;
        const char *data = elem_str(reply, 2, &len);
        if (strcmp(status, "done") != 0 || data == NULL || len == 0) {
            gw_reply_not_found(f->req);
        } else {
            reply_jpeg(f->req, data, len, "private, max-age=600");
        }
        free(f);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "id", f->id);
    cJSON_AddStringToObject(doc, "status", status);
    if (strcmp(status, "done") == 0) {
        const char *w = elem_str(reply, 2, NULL);
        const char *h = elem_str(reply, 3, NULL);
        cJSON_AddNumberToObject(doc, "width", w != NULL ? atoi(w) : 0);
        cJSON_AddNumberToObject(doc, "height", h != NULL ? atoi(h) : 0);
        char url[128];
        snprintf(url, sizeof(url), "/api/previews/%s/before.jpg", f->id);
        cJSON_AddStringToObject(doc, "before_url", url);
        snprintf(url, sizeof(url), "/api/previews/%s/after.jpg", f->id);
        cJSON_AddStringToObject(doc, "after_url", url);
    } else if (strcmp(status, "failed") == 0) {
        const char *code = elem_str(reply, 4, NULL);
        const char *msg = elem_str(reply, 5, NULL);
        const char *details = elem_str(reply, 6, NULL);
        cJSON *e = cJSON_AddObjectToObject(doc, "error");
        cJSON_AddStringToObject(e, "code", code != NULL ? code : "processing_error");
        cJSON_AddStringToObject(e, "message", msg != NULL ? msg : "");
        cJSON *d = details != NULL && details[0] != '\0' ? cJSON_Parse(details) : NULL;
        if (d != NULL) {
            cJSON_AddItemToObject(e, "details", d);
        } else {
            cJSON_AddNullToObject(e, "details");
        }
    }
    http_reply_header(f->req, "Cache-Control", "no-store");
    http_reply_json(f->req, 200, doc);
    free(f);
}

static void fetch_preview(http_req_t *req, gw_t *gw, const gw_user_t *user, const char *field)
{
    const char *id = http_req_param(req, "id");
    if (!uuid_is_valid(id)) {
        gw_reply_not_found(req);
        return;
    }
    fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    f->req = req;
    f->field = field;
    snprintf(f->id, sizeof(f->id), "%s", id);
    snprintf(f->user_id, sizeof(f->user_id), "%s", user->id);
    int rc;
    if (field != NULL) {
        rc = gw_redis_cmd(gw->redis, on_fetched, f, "HMGET ca:preview:%s user status %s", f->id,
                          field);
    } else {
        rc = gw_redis_cmd(gw->redis, on_fetched, f,
                          "HMGET ca:preview:%s user status width height error_code error_message"
                          " error_details",
                          f->id);
    }
    if (rc != 0) {
        reply_redis_down(req);
        free(f);
    }
}

static void get_preview(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    fetch_preview(req, gw, user, NULL);
}

static void get_preview_before(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    fetch_preview(req, gw, user, "before");
}

static void get_preview_after(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    fetch_preview(req, gw, user, "after");
}

/* ---- GET /api/jobs/{id}/thumbnail/{before,after}.jpg ---- */

typedef struct {
    gw_t *gw;
    http_req_t *req;
    char id[GW_UUID_LEN + 1];
    const char *field;
} thumb_t;

static void on_thumb(redisReply *reply, const char *err, void *arg)
{
    thumb_t *t = arg;
    if (reply == NULL || (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL)) {
        log_warn("thumbnail read: %s", err != NULL ? err : "bad reply");
        reply_redis_down(t->req);
    } else if (reply->type == REDIS_REPLY_NIL || reply->len == 0) {
        gw_reply_not_found(t->req); /* none made, or expired (WORKER_THUMBNAIL_TTL_SECONDS) */
    } else {
        reply_jpeg(t->req, reply->str, reply->len, "private, max-age=86400");
    }
    free(t);
}

static void on_job_owned(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    thumb_t *t = arg;
    if (PQntuples(res) == 0) {
        gw_reply_not_found(req);
        free(t);
        return;
    }
    if (gw_redis_cmd(gw->redis, on_thumb, t, "HGET ca:thumb:%s %s", t->id, t->field) != 0) {
        reply_redis_down(req);
        free(t);
    }
}

static void job_thumbnail(gw_t *gw, http_req_t *req, const gw_user_t *user, const char *field)
{
    const char *id = http_req_param(req, "id");
    if (!uuid_is_valid(id)) {
        gw_reply_not_found(req);
        return;
    }
    thumb_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    t->gw = gw;
    t->req = req;
    t->field = field;
    snprintf(t->id, sizeof(t->id), "%s", id);
    const char *p[] = {user->id, id};
    gw_query_ex(gw, req, user->id,
                "SELECT 1 FROM jobs WHERE id = $2::uuid AND user_id = $1::uuid"
                " AND status = 'completed'"
                " UNION ALL SELECT 1 FROM jobs_archive WHERE id = $2::uuid"
                " AND user_id = $1::uuid AND status = 'completed'",
                2, p, on_job_owned, t, free);
}

static void job_thumb_before(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    job_thumbnail(gw, req, user, "before");
}

static void job_thumb_after(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    job_thumbnail(gw, req, user, "after");
}

/* ---- GET /api/presets/{id}/preview/{before,after}.jpg (system presets) ---- */

typedef struct {
    http_req_t *req;
    char *item;
} sys_t;

static void sys_free(void *arg)
{
    sys_t *s = arg;
    if (s != NULL) {
        free(s->item);
        free(s);
    }
}

static void on_sys_preview(redisReply *reply, const char *err, void *arg)
{
    sys_t *s = arg;
    const char *st = reply != NULL ? elem_str(reply, 0, NULL) : NULL;
    if (st == NULL) {
        log_warn("preset preview: %s",
                 err != NULL ? err
                             : (reply != NULL && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                                  : "bad reply"));
        reply_redis_down(s->req);
    } else if (strcmp(st, "done") == 0) {
        size_t len = 0;
        const char *data = elem_str(reply, 1, &len);
        if (data == NULL || len == 0) {
            gw_reply_not_found(s->req);
        } else {
            reply_jpeg(s->req, data, len, "public, max-age=3600");
        }
    } else if (strcmp(st, "failed") == 0) {
        http_reply_error(s->req, 404, "not_found", "this preset has no CPU preview");
    } else {
        /* pending (just queued or in the lane) or the lane is full */
        http_reply_header(s->req, "Retry-After", "2");
        http_reply_header(s->req, "Cache-Control", "no-store");
        http_reply_error(s->req, 503, "preview_pending", "the preview is being rendered; retry");
    }
    sys_free(s);
}

static void on_system_preset(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    sys_t *s = arg;
    const char *field = strstr(http_req_path(req), "/after.jpg") != NULL ? "after" : "before";
    cJSON *graph = PQntuples(res) == 1 ? cJSON_Parse(PQgetvalue(res, 0, 1)) : NULL;
    if (graph == NULL) {
        http_reply_error(req, 404, "not_found", "no such system preset");
        sys_free(s);
        return;
    }
    char key[128];
    snprintf(key, sizeof(key), "ca:preset_preview:%s:%s", http_req_param(req, "id"),
             PQgetvalue(res, 0, 0));
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "key", key);
    cJSON_AddItemToObject(item, "graph", graph);
    cJSON_AddStringToObject(item, "source", "sample");
    cJSON_AddNumberToObject(item, "ttl", atof(PRESET_PREVIEW_TTL_S));
    s->item = cJSON_PrintUnformatted(item);
    cJSON_Delete(item);
    if (s->item == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        sys_free(s);
        return;
    }
    const char *args[] = {
        key, PREVIEW_QUEUE, field, s->item, PRESET_PREVIEW_PENDING_S, PREVIEW_QUEUE_MAX};
    if (gw_redis_eval(gw->redis, on_sys_preview, s, PRESET_PREVIEW_SCRIPT, 2, 6, args) != 0) {
        reply_redis_down(req);
        sys_free(s);
    }
}

static void system_preview(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    (void)user;
    const char *id = http_req_param(req, "id");
    if (!uuid_is_valid(id)) {
        http_reply_error(req, 404, "not_found", "no such system preset");
        return;
    }
    sys_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    s->req = req;
    const char *p[] = {id};
    /* system presets only (visible to everyone: the presets policy shows
     * created_by_user_id IS NULL rows without a user) */
    gw_query_ex(gw, req, NULL,
                "SELECT version::text, workflow_json::text FROM presets WHERE id = $1::uuid"
                " AND created_by_user_id IS NULL AND COALESCE(is_active, TRUE)",
                1, p, on_system_preset, s, sys_free);
}

/* ---- account deletion ---- */

/* KEYS: the user's thumbnail index. Deletes every thumbnail in it, then the
 * index (the keys are built here: standalone Redis, as the session scripts). */
static const char FORGET_SCRIPT[] = "local ids = redis.call('ZRANGE', KEYS[1], 0, -1)\n"
                                    "for _, id in ipairs(ids) do\n"
                                    "  redis.call('DEL', 'ca:thumb:' .. id)\n"
                                    "end\n"
                                    "redis.call('DEL', KEYS[1])\n"
                                    "return #ids\n";

static void on_forgotten(redisReply *reply, const char *err, void *arg)
{
    char *user = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        log_error("account deletion: thumbnails of %s not deleted (they expire with "
                  "WORKER_THUMBNAIL_TTL_SECONDS): %s",
                  user, err != NULL ? err : "bad reply");
    } else if (reply->integer > 0) {
        log_info("account deletion: %lld job thumbnail(s) deleted", reply->integer);
    }
    free(user);
}

void gw_previews_forget_user(gw_t *gw, const char *user_id)
{
    char key[96];
    snprintf(key, sizeof(key), "ca:thumbs:u:%s", user_id);
    char *user = strdup(user_id);
    const char *args[] = {key};
    if (user == NULL ||
        gw_redis_eval(gw->redis, on_forgotten, user, FORGET_SCRIPT, 1, 1, args) != 0) {
        on_forgotten(NULL, "session store not connected", user);
    }
}

static void on_system_presets(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    (void)arg;
    if (PQntuples(res) != 1) {
        http_reply_error(req, 500, "internal", "could not build the response");
        return;
    }
    http_reply_header(req, "Cache-Control", "public, max-age=300");
    gw_reply_json_text(req, 200, PQgetvalue(res, 0, 0));
}

/* The active system presets, for anyone (the landing page). */
static void system_presets(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    (void)user;
    gw_query_ex(gw, req, NULL,
                "SELECT json_build_object('presets', COALESCE(json_agg(json_build_object("
                "  'id', id, 'name', name, 'description', description, 'category', category,"
                "  'before_url', '/api/presets/' || id || '/preview/before.jpg',"
                "  'after_url', '/api/presets/' || id || '/preview/after.jpg') ORDER BY name),"
                "  '[]'::json))::text"
                " FROM presets WHERE created_by_user_id IS NULL AND COALESCE(is_active, TRUE)",
                0, NULL, on_system_presets, NULL, NULL);
}

int gw_routes_previews(gw_t *gw)
{
    int rc = 0;
    rc |= gw_route(gw, "POST", "/api/previews", GW_AUTH, create_preview);
    rc |= gw_route(gw, "GET", "/api/previews/{id}", GW_AUTH, get_preview);
    rc |= gw_route(gw, "GET", "/api/previews/{id}/before.jpg", GW_AUTH, get_preview_before);
    rc |= gw_route(gw, "GET", "/api/previews/{id}/after.jpg", GW_AUTH, get_preview_after);
    rc |= gw_route(gw, "GET", "/api/jobs/{id}/thumbnail/before.jpg", GW_AUTH, job_thumb_before);
    rc |= gw_route(gw, "GET", "/api/jobs/{id}/thumbnail/after.jpg", GW_AUTH, job_thumb_after);
    rc |= gw_route(gw, "GET", "/api/presets/{id}/preview/before.jpg", GW_PUBLIC, system_preview);
    rc |= gw_route(gw, "GET", "/api/presets/{id}/preview/after.jpg", GW_PUBLIC, system_preview);
    rc |= gw_route(gw, "GET", "/api/system-presets", GW_PUBLIC, system_presets);
    return rc != 0 ? -1 : 0;
}
