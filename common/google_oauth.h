/*
 * google_oauth — the Google client, OAuth 2.0 and OpenID userinfo, over
 * http_client.
 *
 * The client (google_client_t) is what every Google call runs on, the Drive
 * calls of drive.h too: it holds the configured URLs and credentials and one
 * http_client_t. Blocking; one google_client_t per thread. Every call
 * classifies failures the same way (google_status_t) from the HTTP status and
 * Google's JSON error body ({"error":{"errors":[{"reason"}]}} for Drive,
 * {"error":"invalid_grant"} for OAuth), so callers decide retry/permanent from
 * one enum. Network errors, 408, 429 and 5xx are retried inside the call with
 * backoff (cfg.max_retries); 403 rate limits are NOT retried inside (the
 * caller backs off that user only). Tokens and codes are never logged.
 *
 * See docs/common/google_oauth.md; Drive v3 is drive.h, the stored-token
 * manager drive_auth.h.
 */
#ifndef CA_GOOGLE_OAUTH_H
#define CA_GOOGLE_OAUTH_H

#include <stdbool.h>
#include <stddef.h>

/* The Drive scopes the product asks for at sign-in (the gateway's DRIVE_SCOPE
 * default): read every file (the watched folder holds files the user put there,
 * which drive.file would not show) and create/change only what the app made
 * (Processed, outputs, their "anyone with the link" permission). Full `drive`
 * is not needed. Why: docs/api-gateway.md "Google scopes". */
#define GOOGLE_DRIVE_SCOPES                                                                        \
    "https://www.googleapis.com/auth/drive.readonly https://www.googleapis.com/auth/drive.file"

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

/* Clears err (may be NULL): GOOGLE_OK, no HTTP status, reason or message,
 * retry_after_ms -1. Every call starts with it. */
void google_error_reset(google_error_t *err);
/* Sets err's status, HTTP status and message (printf-style; never put a
 * token, code or secret in it) and returns st. err may be NULL. For a module
 * that fails on its own behalf with a google_error_t (drive_auth). */
google_status_t google_error_set(google_error_t *err, google_status_t st, long http_status,
                                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

typedef struct {
    const char *client_id;
    const char *client_secret;
    const char *token_url;        /* GOOGLE_TOKEN_URL */
    const char *userinfo_url;     /* GOOGLE_USERINFO_URL (gateway only; may be NULL) */
    const char *revoke_url;       /* GOOGLE_REVOKE_URL (gateway only; may be NULL) */
    const char *drive_api_url;    /* DRIVE_API_URL, e.g. https://www.googleapis.com/drive/v3 */
    const char *drive_upload_url; /* DRIVE_UPLOAD_URL (worker only; may be NULL) */
    long timeout_ms;              /* per attempt; 0: 30000 */
    int max_retries;              /* network/429/5xx inside a call; 0: none, default 3 if < 0 */
} google_config_t;

typedef struct google_client google_client_t;

/* Copies every string in cfg. NULL on allocation failure. */
google_client_t *google_client_new(const google_config_t *cfg);
void google_client_free(google_client_t *gc);

/* ---- OAuth and OpenID userinfo ---- */

typedef struct {
    char *access_token;
    char *refresh_token; /* NULL when Google sent none (refresh grant, or consent not shown) */
    long expires_in;     /* seconds, clamped to [0, 86400] */
    char *scope;
    char *id_token;
} google_tokens_t;
void google_tokens_free(google_tokens_t *t);

google_status_t google_exchange_code(google_client_t *gc, const char *code,
                                     const char *code_verifier, const char *redirect_uri,
                                     google_tokens_t *out, google_error_t *err);
google_status_t google_refresh(google_client_t *gc, const char *refresh_token, google_tokens_t *out,
                               google_error_t *err);

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

/* POST revoke_url with token=<token> in a form body (Google also takes it in
 * the query; the body keeps it out of access logs): revokes the grant the
 * token belongs to (a refresh token or an access token: either ends both).
 * Google answers 200 {} when revoked, 400 {"error":"invalid_token"} when the
 * token is unknown, expired or already revoked: *already (may be NULL) is
 * then set and GOOGLE_OK returned, since the grant is gone either way.
 * Anything else: the classified error (google_status_transient). */
google_status_t google_revoke_token(google_client_t *gc, const char *token, bool *already,
                                    google_error_t *err);

#endif
