/*
 * drive_auth — the Drive token manager the poller, the worker and the gateway
 * share: it reads a user's sealed tokens from PostgreSQL (users), refreshes
 * them with Google before expiry or on demand (google_refresh), and stores
 * refreshed ones sealed through the users slice's function. Refreshes of one
 * user are serialised by a per-user advisory lock, across processes.
 * See docs/common/drive_auth.md.
 */
#ifndef CA_DRIVE_AUTH_H
#define CA_DRIVE_AUTH_H

#include "crypto.h"
#include "google_oauth.h"
#include "pg.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    DRIVE_AUTH_OK = 0,
    DRIVE_AUTH_REVOKED,   /* invalid_grant: the user must reconnect (not retried) */
    DRIVE_AUTH_NO_TOKENS, /* never connected, or disconnected */
    DRIVE_AUTH_TRANSIENT, /* Google or network trouble: retry later */
    DRIVE_AUTH_DB,        /* PostgreSQL trouble: retry later */
} drive_auth_status_t;

/* Fills `token` (NUL-terminated) with a usable access token for user_id:
 * decrypts users.drive_access_token unless it expires within 120 s or `force`
 * is set (after a 401), in which case it refreshes with the refresh token and
 * stores the new tokens sealed (current key) through users_store_drive_tokens.
 * A token sealed with an old key is re-sealed under the current one.
 * err (may be NULL) gets Google's error on failure. */
drive_auth_status_t drive_auth_access_token(pg_conn_t *pg, google_client_t *gc,
                                            const crypto_keyring_t *keys, const char *user_id,
                                            bool force, char *token, size_t tokenlen,
                                            google_error_t *err);

/* The users row's token state as the caller read it itself, in a statement it
 * makes anyway (the worker: with its claim, jobs_worker_claim): the sealed
 * tokens, drive_connected and whether drive_token_expires_at is more than
 * DRIVE_AUTH_MARGIN_SECONDS away. */
#define DRIVE_AUTH_MARGIN_SECONDS "120"
typedef struct {
    bool found;             /* the row exists */
    bool connected;         /* drive_connected */
    bool fresh;             /* the access token expires more than the margin away */
    const char *access_enc; /* sealed, NULL when none (not copied: the caller's) */
    const char *refresh_enc;
} drive_auth_stored_t;

/* drive_auth_access_token, starting from `stored` (may be NULL: read it here)
 * instead of its own read of the users row: a fresh token under the current
 * key costs no round trip. Refreshing reads the row again under the per-user
 * lock, as drive_auth_access_token does. */
drive_auth_status_t drive_auth_access_token_from(pg_conn_t *pg, google_client_t *gc,
                                                 const crypto_keyring_t *keys, const char *user_id,
                                                 const drive_auth_stored_t *stored, bool force,
                                                 char *token, size_t tokenlen, google_error_t *err);

/* `rekey`: re-seals every stored token (users.drive_access_token and
 * drive_refresh_token) that is legacy v1 or under an old key as v2, bound to
 * its user's id, under the current key, 100 users per transaction (rows locked
 * FOR UPDATE, so a concurrent refresh waits). A value that does not open with
 * the ring (another key, another user's row, corrupt) is left as it is and
 * counted. Run it on a connection allowed to update users (the gateway's role
 * or the migration role). Returns 0, or -1 on a database error (err filled). */
typedef struct {
    long users;      /* rows with at least one token */
    long resealed;   /* values rewritten */
    long current;    /* values already v2 under the current key */
    long unopenable; /* values left as they were: they do not open */
} drive_auth_rekey_stats_t;
int drive_auth_rekey(pg_conn_t *pg, const crypto_keyring_t *keys, drive_auth_rekey_stats_t *stats,
                     char *err, size_t errlen);

#endif
