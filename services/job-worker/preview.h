/*
 * preview — the preview lane and the thumbnails of completed jobs (preview.c).
 *
 * The preview lane: WORKER_PREVIEW_CONCURRENCY threads of their own (default
 * 1, 0: none) take preview requests from the Redis list ca:previews (pushed by
 * the gateway, POST /api/previews and GET /api/presets/{id}/preview/...),
 * never from the job queue, so a preview does not wait behind a backlog of
 * jobs. A request names a graph, a source (the bundled sample photo or a file
 * of the user's Drive, downloaded with the user's token under the job limits)
 * and the result key the gateway made (ca:preview:<id> or
 * ca:preset_preview:<preset>:<version>). The thread shrinks the source to
 * PREVIEW_EDGE px on its long edge (the "before" JPEG), runs the graph on it
 * with the CPU executor, shrinks the output the same way (the "after" JPEG)
 * and writes both into the result key (status done), or an error code and
 * message (status failed). See docs/job-worker.md, "Previews".
 *
 * Thumbnails: at a job's completion the worker makes a THUMB_EDGE px
 * before/after JPEG pair (thumbs_make, from the original and the output it
 * already holds) and writes it to ca:thumb:<job id> with a TTL
 * (WORKER_THUMBNAIL_TTL_SECONDS) once the completion is recorded
 * (thumbs_store). Best effort: a failure is logged, the job is unaffected.
 */
#ifndef CA_PREVIEW_H
#define CA_PREVIEW_H

#include "crypto.h"
#include "daemon.h"
#include "google_oauth.h"
#include "redis.h"
#include "stopwait.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#define PREVIEW_QUEUE "ca:previews"
#define PREVIEW_KEY_PREFIX "ca:preview:"
#define PRESET_PREVIEW_KEY_PREFIX "ca:preset_preview:"
#define THUMB_KEY_PREFIX "ca:thumb:"
#define THUMB_USER_KEY_PREFIX "ca:thumbs:u:" /* a user's jobs with thumbnails (deletion) */
#define PREVIEW_EDGE 768
#define THUMB_EDGE 256
/* A system preset's preview: kept this long once done, retried after the
 * pending TTL (the gateway's routes_previews.c uses the same values). */
#define PRESET_PREVIEW_TTL_S 604800
#define PRESET_PREVIEW_PENDING_S 120
/* How often a worker with a preview lane looks for system presets whose
 * preview (at their current version) is missing, and queues it. */
#define PRESET_PREVIEW_WARM_MS 30000
/* The CPU pipeline's wall-time budget for one preview. */
#define PREVIEW_MAX_SECONDS 30

/* The bundled sample photo (a 512×512 JPEG, services/job-worker/sample.jpg). */
const unsigned char *preview_sample(size_t *len);

/* A before/after JPEG pair (malloc'd; g_free'd by preview_pair_free). */
typedef struct {
    void *before, *after;
    size_t before_len, after_len;
    int width, height; /* of `after` */
} preview_pair_t;

void preview_pair_free(preview_pair_t *p);

/* The outcome of a render: 0 with pair filled; else -1 with a job error code
 * (DESIGN.md's list) and a message, and for an invalid graph the validator's
 * error object in *details (new; the caller frees). */
typedef struct {
    const char *code;
    char message[400];
    cJSON *details;
} preview_err_t;

/* Renders graph on src (untrusted bytes: the front door first, under
 * max_pixels) at edge px. */
int preview_render(const void *src, size_t len, long long max_pixels, const cJSON *graph, int edge,
                   preview_pair_t *out, preview_err_t *e);

/* Thumbnails of a job: `before` of the original, `after` of the output, each
 * THUMB_EDGE px on the long edge. 0 or -1 (nothing kept). */
int thumbs_make(const void *original, size_t original_len, const void *output, size_t output_len,
                long long max_pixels, preview_pair_t *out);
/* thumbs_make on a thread of its own, so that it overlaps the upload: the
 * buffers must stay valid until thumbs_finish. Without a thread (none could
 * be started) it runs here. Returns NULL only out of memory. */
typedef struct thumbs_task thumbs_task_t;
thumbs_task_t *thumbs_start(const void *original, size_t original_len, const void *output,
                            size_t output_len, long long max_pixels);
/* Joins and frees the task; with out, moves the pair there. 0, or -1 when no
 * pair was made (out left empty). */
int thumbs_finish(thumbs_task_t *task, preview_pair_t *out);
/* Writes the pair to ca:thumb:<job_id> (fields before, after) with ttl_s, and
 * the job id into the user's index ca:thumbs:u:<user_id> (a sorted set scored
 * by expiry, read when the account is deleted). 0 or -1. */
int thumbs_store(redis_conn_t *redis, const char *job_id, const char *user_id,
                 const preview_pair_t *p, int ttl_s);

/* The lane's settings (strings borrowed from the daemon's configuration). */
typedef struct {
    daemon_t *d;
    const crypto_keyring_t *keys;
    const google_config_t *gcfg;
    size_t max_image_bytes;
    long long max_image_pixels;
    int concurrency;
} preview_lane_config_t;

typedef struct preview_lane preview_lane_t;

/* Starts the lane's threads and registers the system presets' warm-up task
 * (neither when concurrency is 0). NULL on error. */
preview_lane_t *preview_lane_start(const preview_lane_config_t *cfg);
/* Stops and joins the threads (a render in progress finishes first, at most
 * PREVIEW_MAX_SECONDS), frees the lane. NULL is fine. */
void preview_lane_stop(preview_lane_t *lane);

#endif
