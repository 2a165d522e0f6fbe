/*
 * google — Google OAuth 2.0, OpenID userinfo and Drive v3 over http_client.
 *
 * Blocking; one google_client_t per thread (it owns an http_client_t). Every
 * call classifies failures the same way (google_status_t) from the HTTP status
 * and Google's JSON error body ({"error":{"errors":[{"reason"}]}} for Drive,
 * {"error":"invalid_grant"} for OAuth), so callers decide retry/permanent from
 * one enum. Network errors, 429 and 5xx are retried inside the call with
 * backoff (cfg.max_retries); 403 rate limits are NOT retried inside (the
 * caller backs off that user only). Tokens and codes are never logged.
 *
 * drive_auth_* (below) is the token manager the poller and the worker share:
 * it reads a user's sealed tokens, refreshes before expiry or on demand, and
 * stores refreshed ones sealed through the users slice's function.
 */
#ifndef CA_GOOGLE_H
#define CA_GOOGLE_H

#include "crypto.h"
#include "pg.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    GOOGLE_OK = 0,
    GOOGLE_ERR_AUTH,          /* 401: access token invalid or expired: refresh, retry once */
    GOOGLE_ERR_INVALID_GRANT, /* OAuth invalid_grant: refresh token revoked/expired, code used */
    GOOGLE_ERR_NOT_FOUND,     /* 404 */
    GOOGLE_ERR_FORBIDDEN,     /* 403 other than rate limits (insufficientFilePermissions, ...) */
    GOOGLE_ERR_RATE_LIMITED,  /* 403 userRateLimitExceeded/rateLimitExceeded, 429 */
    GOOGLE_ERR_SERVER,        /* 5xx after retries */
    GOOGLE_ERR_NETWORK,       /* connect, timeout, dropped connection after retries */
    GOOGLE_ERR_TOO_LARGE,     /* response or download over its cap */
    GOOGLE_ERR_BAD_REQUEST,   /* other 4xx (bad query, invalid_client, ...) */
    GOOGLE_ERR_PROTOCOL,      /* an answer we could not parse */
} google_status_t;

typedef struct {
    google_status_t status;
    long http_status;    /* 0 when no response */
    char reason[64];     /* Drive errors[0].reason or the OAuth "error" code */
    char message[256];   /* a human-readable message (no secrets) */
    long retry_after_ms; /* from Retry-After, else -1 */
} google_error_t;

/* True for the statuses worth retrying later (rate limits, 5xx, network). */
bool google_status_transient(google_status_t st);
const char *google_status_name(google_status_t st);

typedef struct {
    const char *client_id;
    const char *client_secret;
    const char *token_url;        /* GOOGLE_TOKEN_URL */
    const char *userinfo_url;     /* GOOGLE_USERINFO_URL (gateway only; may be NULL) */
    const char *drive_api_url;    /* DRIVE_API_URL, e.g. https://www.googleapis.com/drive/v3 */
    const char *drive_upload_url; /* DRIVE_UPLOAD_URL (worker only; may be NULL) */
    long timeout_ms;              /* per attempt; 0: 30000 */
    int max_retries;              /* network/429/5xx inside a call; 0: none, default 3 if < 0 */
} google_config_t;

typedef struct google_client google_client_t;

/* Copies every string in cfg. NULL on allocation failure. */
google_client_t *google_client_new(const google_config_t *cfg);
void google_client_free(google_client_t *gc);

/* ---- OAuth ---- */
typedef struct {
    char *access_token;
    char *refresh_token; /* NULL when Google sent none (refresh grant, or consent not shown) */
    long expires_in;     /* seconds */
    char *scope;
    char *id_token;
} google_tokens_t;
void google_tokens_free(google_tokens_t *t);

google_status_t google_exchange_code(google_client_t *gc, const char *code,
                                     const char *code_verifier, const char *redirect_uri,
                                     google_tokens_t *out, google_error_t *err);
google_status_t google_refresh(google_client_t *gc, const char *refresh_token,
                               google_tokens_t *out, google_error_t *err);

typedef struct {
    char *sub; /* the Google account id (users.google_id) */
    char *email;
    bool email_verified;
    char *name;
    char *picture;
} google_userinfo_t;
void google_userinfo_free(google_userinfo_t *u);
google_status_t google_userinfo(google_client_t *gc, const char *access_token,
                                google_userinfo_t *out, google_error_t *err);

/* ---- Drive v3 ---- */

/* The fields every call asks for (files(...) in lists). */
#define DRIVE_FILE_FIELDS                                                                          \
    "id,name,mimeType,parents,modifiedTime,createdTime,size,md5Checksum,trashed,appProperties,"    \
    "webViewLink,webContentLink,capabilities(canAddChildren,canEdit)"
#define DRIVE_FOLDER_MIME "application/vnd.google-apps.folder"

typedef struct {
    char *id;
    char *name;
    char *mime_type;
    char *modified_time; /* RFC 3339 as Drive sent it */
    char *created_time;
    char *md5;
    char **parents;
    size_t nparents;
    long long size; /* -1 when Drive gave none (folders, Google-native documents) */
    bool trashed;
    bool can_add_children;
    bool can_edit;
    char *web_view_link;
    char *web_content_link;
    cJSON *app_properties; /* owned; NULL when none */
} drive_file_t;
void drive_file_free(drive_file_t *f);
/* True when the file is an image we process (by mimeType image/jpeg, png, webp,
 * tiff, heic/heif, or by extension when the type is generic). */
bool drive_file_is_image(const drive_file_t *f);

typedef struct {
    drive_file_t *files;
    size_t n;
    char *next_page_token; /* NULL on the last page */
} drive_file_list_t;
void drive_file_list_free(drive_file_list_t *l);

/* files.list. q and order_by may be NULL; page_size 1..1000; page_token NULL
 * for the first page. */
google_status_t drive_files_list(google_client_t *gc, const char *access_token, const char *q,
                                 const char *order_by, int page_size, const char *page_token,
                                 drive_file_list_t *out, google_error_t *err);
google_status_t drive_files_get(google_client_t *gc, const char *access_token,
                                const char *file_id, drive_file_t *out, google_error_t *err);
/* alt=media into a new buffer (caller frees) of at most max_bytes, else
 * GOOGLE_ERR_TOO_LARGE. */
google_status_t drive_download(google_client_t *gc, const char *access_token, const char *file_id,
                               size_t max_bytes, void **data, size_t *len, google_error_t *err);
/* app_properties may be NULL (not consumed). */
google_status_t drive_create_folder(google_client_t *gc, const char *access_token,
                                    const char *name, const char *parent_id,
                                    const cJSON *app_properties, drive_file_t *out,
                                    google_error_t *err);
/* uploadType=multipart to DRIVE_UPLOAD_URL/files. */
google_status_t drive_upload(google_client_t *gc, const char *access_token, const char *name,
                             const char *mime_type, const char *parent_id,
                             const cJSON *app_properties, const void *data, size_t len,
                             drive_file_t *out, google_error_t *err);
/* permissions.create {type: anyone, role: reader}. */
google_status_t drive_share_anyone_reader(google_client_t *gc, const char *access_token,
                                          const char *file_id, google_error_t *err);

typedef struct {
    char *file_id;
    bool removed;  /* permanently gone or no longer visible */
    bool has_file; /* `file` is filled */
    drive_file_t file;
    char *time;
} drive_change_t;

typedef struct {
    drive_change_t *changes;
    size_t n;
    char *next_page_token;      /* more pages of this batch */
    char *new_start_page_token; /* set on the last page: save it for the next poll */
} drive_change_list_t;
void drive_change_list_free(drive_change_list_t *l);

google_status_t drive_changes_start_token(google_client_t *gc, const char *access_token,
                                          char **token, google_error_t *err);
google_status_t drive_changes_list(google_client_t *gc, const char *access_token,
                                   const char *page_token, int page_size,
                                   drive_change_list_t *out, google_error_t *err);

/* ---- the token manager (poller and worker) ---- */
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

#endif
