/*
 * poll — one poll of one claimed folder (poll.c), which turns the Drive
 * changes feed (and, now and then, a full listing of the folder) into exactly
 * one job per image:
 *   1. an access token (drive_auth_access_token: refresh before expiry; a
 *      Drive 401 forces one refresh and one retry of the call);
 *   2. with a saved changes token: changes.list from it through every page;
 *      each page's candidates become jobs in one statement (committed), their
 *      new ids are pushed to the user's fair-queue list, then the next page;
 *   3. without a token, or when Drive refuses it (400/404): a new start token
 *      FIRST, then a full listing — a file added meanwhile is in both or in the
 *      next changes, never in neither;
 *   4. every reconcile interval: the folder itself (files.get: 404 stops the
 *      watch) and a full listing of it, whatever the changes said;
 *   5. one UPDATE (fenced by the lease) records the result, advances the token
 *      (only now: every job it covers is committed), clears the lease and
 *      schedules the next poll; after an error, the folder's backoff
 *      (poll_backoff_ms). Between pages the lease is renewed (lease.h); a
 *      drain or a lost lease stops the poll and records nothing.
 * See docs/drive-poller.md.
 *
 *   poll_settings_t set = {...};                        // shared, read-only
 *   poll_env_t env = {.set = &set, .owner = "host-1/t0", .pg = pg, .gc = gc};
 *   poll_folder(&env, &row);                            // row from lease_claim
 *   ... redis_close(env.redis) when it is not NULL ...
 */
#ifndef CA_POLL_H
#define CA_POLL_H

#include "crypto.h"
#include "drive.h"
#include "google_oauth.h"
#include "lease.h"
#include "pg.h"
#include "push.h"
#include "redis.h"
#include "stopwait.h"

#include <stdbool.h>

/* The folder's backoff after errors: backoff_delay_ms(n, base, max), so the
 * n-th consecutive error waits 2^n to 2^(n+1) s, at most 15 min; a
 * Retry-After longer than that wins, up to one hour. */
#define POLL_BACKOFF_BASE_MS 4000L
#define POLL_BACKOFF_MAX_MS (15L * 60L * 1000L)
#define POLL_RETRY_AFTER_MAX_MS (60L * 60L * 1000L)

/* What every poll needs to know, the same for all poll threads. */
typedef struct {
    const crypto_keyring_t *keys; /* seals the Drive tokens */
    const char *redis_url;
    int interval_s;   /* POLL_INTERVAL_SECONDS: the next poll after a success */
    int lease_s;      /* POLL_LEASE_SECONDS */
    stopwait_t *stop; /* stopped (drain): a poll stops between pages, gives its row back */
    const push_settings_t *push; /* push notifications (push.h); url NULL: off */
} poll_settings_t;

/* One poll thread's clients. */
typedef struct {
    const poll_settings_t *set;
    const char *owner;   /* the lease owner: "<instance>/t<n>" */
    pg_conn_t *pg;       /* connected */
    redis_conn_t *redis; /* connected at the first push, kept; the caller closes it */
    google_client_t *gc;
} poll_env_t;

/* Polls `row` (claimed by env->owner) and records the outcome. */
void poll_folder(poll_env_t *env, const lease_row_t *row);

/* ---- pure rules (exported for the tests) ---- */

/* True when a file seen in the changes feed or a listing should be a job of
 * the folder: an image (drive_file_is_image), not trashed, not a folder or a
 * Google-native document, and `folder_id` among its parents (so never a file of
 * Processed or any other subfolder). */
bool poll_file_is_candidate(const drive_file_t *f, const char *folder_id);

/* The wait after the n-th consecutive error (n >= 1), in ms: the backoff
 * above, or retry_after_ms (>= 0: Drive's Retry-After) when that is longer,
 * capped at POLL_RETRY_AFTER_MAX_MS. */
long poll_backoff_ms(int consecutive_errors, long retry_after_ms);

/* Drive query string for the children of a folder: the id quoted with ' and
 * \ escaped. Returns a new string; caller frees. */
char *poll_children_query(const char *folder_id);

#endif
