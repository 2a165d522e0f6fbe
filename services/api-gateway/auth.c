/*
 * auth — Google sign-in (authorization code + PKCE S256, state kept in Redis
 * for 10 minutes and used once), sessions, logout.
 *
 *   GET  /auth/google/login      302 to GOOGLE_AUTH_URL (state, PKCE, offline, consent)
 *   GET  /auth/google/callback   code exchange (pool thread) → users_sign_in() → session
 *   POST /auth/logout            ends the session, clears the cookie (204)
 *
 * Redis: ca:oauth:<state> → PKCE verifier (PX 600000, GETDEL);
 *        ca:session:<hex sha256(session id)> → hash {user_id, csrf, email} with
 *        a sliding TTL (SESSION_TTL_SECONDS). The raw session id lives only in
 *        the client's cookie.
 */
#include "gateway.h"

#include "log.h"

#include <ctype.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OAUTH_STATE_TTL_MS 600000

static const char SESSION_CREATE_SCRIPT[] =
    "redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'csrf', ARGV[2], 'email', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "return 1\n";

/* Defined in gateway.c. */
void gw_session_key(const char *session_id, char *hash_hex, size_t hexlen);

static bool token_chars(const char *s, size_t maxlen)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > maxlen) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_') {
            return false;
        }
    }
    return true;
}

static void reply_unavailable_page(http_req_t *req)
{
    http_reply_header(req, "Retry-After", "5");
    gw_reply_html(req, 503, "Sign-in is unavailable",
                  "We could not reach our session store. Please try again in a moment.");
}

/* ---- /auth/google/login ---- */

typedef struct {
    http_req_t *req;
    char *location;
} login_t;

static void on_state_stored(redisReply *reply, const char *err, void *arg)
{
    login_t *l = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        log_error("sign-in: cannot store the OAuth state: %s",
                  err != NULL ? err : reply->str);
        reply_unavailable_page(l->req);
    } else {
        http_reply_header(l->req, "Cache-Control", "no-store");
        http_reply_redirect(l->req, 302, l->location);
    }
    free(l->location);
    free(l);
}

static char *enc(const char *s)
{
    return evhttp_uriencode(s, -1, 0);
}

static void login(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    (void)user;
    const char *hint = http_req_query(req, "login_hint");
    if (hint != NULL) {
        size_t n = strlen(hint);
        bool ok = n > 0 && n <= 254;
        for (size_t i = 0; ok && i < n; i++) {
            ok = isgraph((unsigned char)hint[i]) != 0;
        }
        if (!ok) {
            gw_reply_html(req, 400, "Sign-in failed", "The login_hint parameter is not valid.");
            return;
        }
    }
    char *state = crypto_random_token(24);
    char *verifier = crypto_random_token(48); /* 64 characters (RFC 7636: 43..128) */
    char *challenge = NULL;
    char *location = NULL;
    char *e_client = NULL, *e_redirect = NULL, *e_scope = NULL, *e_hint = NULL;
    login_t *l = NULL;
    if (state == NULL || verifier == NULL) {
        goto fail;
    }
    uint8_t digest[CRYPTO_SHA256_LEN];
    crypto_sha256(verifier, strlen(verifier), digest);
    challenge = crypto_base64url_encode(digest, sizeof(digest));
    char scope[1024];
    snprintf(scope, sizeof(scope), "openid email profile %s",
             config_get(gw->cfg, "DRIVE_SCOPE"));
    e_client = enc(config_get(gw->cfg, "GOOGLE_CLIENT_ID"));
    e_redirect = enc(gw->redirect_uri);
    e_scope = enc(scope);
    e_hint = hint != NULL ? enc(hint) : NULL;
    if (challenge == NULL || e_client == NULL || e_redirect == NULL || e_scope == NULL ||
        (hint != NULL && e_hint == NULL)) {
        goto fail;
    }
    const char *auth_url = config_get(gw->cfg, "GOOGLE_AUTH_URL");
    size_t need = strlen(auth_url) + strlen(e_client) + strlen(e_redirect) + strlen(e_scope) +
                  strlen(state) + strlen(challenge) + (e_hint != NULL ? strlen(e_hint) : 0) + 512;
    location = malloc(need);
    l = calloc(1, sizeof(*l));
    if (location == NULL || l == NULL) {
        goto fail;
    }
    snprintf(location, need,
             "%s%sresponse_type=code&client_id=%s&redirect_uri=%s&scope=%s"
             "&access_type=offline&prompt=consent&include_granted_scopes=true&state=%s"
             "&code_challenge=%s&code_challenge_method=S256%s%s",
             auth_url, strchr(auth_url, '?') != NULL ? "&" : "?", e_client, e_redirect, e_scope,
             state, challenge, e_hint != NULL ? "&login_hint=" : "", e_hint != NULL ? e_hint : "");
    l->req = req;
    l->location = location;
    char key[192];
    snprintf(key, sizeof(key), "ca:oauth:%s", state);
    if (gw_redis_cmd(gw->redis, on_state_stored, l, "SET %s %s PX %d", key, verifier,
                     OAUTH_STATE_TTL_MS) != 0) {
        free(l);
        l = NULL;
        reply_unavailable_page(req);
        goto out;
    }
    location = NULL; /* l owns it */
    goto out;
fail:
    free(l);
    http_reply_error(req, 500, "internal", "could not start the sign-in");
out:
    free(location);
    free(state);
    free(verifier);
    free(challenge);
    free(e_client);
    free(e_redirect);
    free(e_scope);
    free(e_hint);
}

/* ---- /auth/google/callback ---- */

typedef struct {
    gw_t *gw;
    http_req_t *req;
    char *code;
    char *verifier;
    char ip[64];
    /* results of the pool thread */
    google_status_t st;
    google_error_t gerr;
    google_userinfo_t info;
    char *access_enc;
    char *refresh_enc;
    long expires_in;
    /* the session */
    char user_id[GW_UUID_LEN + 1];
    char *session_id;
} callback_t;

static void callback_free(callback_t *cb)
{
    free(cb->code);
    free(cb->verifier);
    google_userinfo_free(&cb->info);
    free(cb->access_enc);
    free(cb->refresh_enc);
    free(cb->session_id);
    free(cb);
}

static void exchange_work(void *arg)
{
    callback_t *cb = arg;
    google_client_t *gc = gw_thread_google(cb->gw);
    if (gc == NULL) {
        cb->st = GOOGLE_ERR_NETWORK;
        return;
    }
    google_tokens_t tokens;
    memset(&tokens, 0, sizeof(tokens));
    cb->st = google_exchange_code(gc, cb->code, cb->verifier, cb->gw->redirect_uri, &tokens,
                                  &cb->gerr);
    if (cb->st != GOOGLE_OK) {
        google_tokens_free(&tokens);
        return;
    }
    cb->st = google_userinfo(gc, tokens.access_token, &cb->info, &cb->gerr);
    if (cb->st == GOOGLE_OK) {
        cb->access_enc = crypto_envelope_seal(cb->gw->keys, tokens.access_token);
        if (tokens.refresh_token != NULL) {
            cb->refresh_enc = crypto_envelope_seal(cb->gw->keys, tokens.refresh_token);
        }
        cb->expires_in = tokens.expires_in > 0 ? tokens.expires_in : 3600;
        if (cb->access_enc == NULL || (tokens.refresh_token != NULL && cb->refresh_enc == NULL)) {
            cb->st = GOOGLE_ERR_PROTOCOL;
        }
    }
    google_tokens_free(&tokens);
}

static void on_session_stored(redisReply *reply, const char *err, void *arg)
{
    callback_t *cb = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        log_error("sign-in: cannot store the session: %s", err != NULL ? err : reply->str);
        reply_unavailable_page(cb->req);
        callback_free(cb);
        return;
    }
    char cookie[512];
    snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; Max-Age=%ld; HttpOnly; SameSite=Lax%s",
             GW_SESSION_COOKIE, cb->session_id, cb->gw->session_ttl_s,
             cb->gw->secure_cookies ? "; Secure" : "");
    http_reply_header(cb->req, "Set-Cookie", cookie);
    http_reply_header(cb->req, "Cache-Control", "no-store");
    log_info("sign-in: user %s signed in", cb->user_id);
    http_reply_redirect(cb->req, 302, "/");
    callback_free(cb);
}

static void on_user_upserted(const PGresult *res, const char *err, const char *sqlstate,
                             void *arg)
{
    callback_t *cb = arg;
    if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        log_error("sign-in: cannot save the user: %s (SQLSTATE %s)", err != NULL ? err : "no row",
                  sqlstate != NULL ? sqlstate : "");
        gw_reply_html(cb->req, 500, "Sign-in failed",
                      "We could not save your account. Please try again.");
        callback_free(cb);
        return;
    }
    snprintf(cb->user_id, sizeof(cb->user_id), "%s", PQgetvalue(res, 0, 0));
    cb->session_id = crypto_random_token(32);
    char *csrf = crypto_random_token(24);
    if (cb->session_id == NULL || csrf == NULL) {
        free(csrf);
        gw_reply_html(cb->req, 500, "Sign-in failed", "Please try again.");
        callback_free(cb);
        return;
    }
    char hash[2 * CRYPTO_SHA256_LEN + 1];
    gw_session_key(cb->session_id, hash, sizeof(hash));
    char key[128], ttl[32];
    snprintf(key, sizeof(key), "ca:session:%s", hash);
    snprintf(ttl, sizeof(ttl), "%ld", cb->gw->session_ttl_s * 1000);
    const char *args[] = {key, cb->user_id, csrf, cb->info.email, ttl};
    int rc = gw_redis_eval(cb->gw->redis, on_session_stored, cb, SESSION_CREATE_SCRIPT, 1, 5,
                           args);
    free(csrf);
    if (rc != 0) {
        reply_unavailable_page(cb->req);
        callback_free(cb);
    }
}

static void exchange_done(void *arg)
{
    callback_t *cb = arg;
    if (cb->st != GOOGLE_OK) {
        log_warn("sign-in: Google answered %s (HTTP %ld, %s)", google_status_name(cb->st),
                 cb->gerr.http_status, cb->gerr.reason);
        if (cb->st == GOOGLE_ERR_INVALID_GRANT || cb->st == GOOGLE_ERR_BAD_REQUEST) {
            gw_reply_html(cb->req, 400, "Sign-in failed",
                          "Google did not accept this sign-in (the code was already used or has "
                          "expired). Please sign in again.");
        } else {
            gw_reply_html(cb->req, 502, "Google is not answering",
                          "We could not complete the sign-in with Google. Please try again in a "
                          "few minutes.");
        }
        callback_free(cb);
        return;
    }
    if (cb->info.sub == NULL || cb->info.sub[0] == '\0' || cb->info.email == NULL ||
        cb->info.email[0] == '\0' || strlen(cb->info.email) > GW_EMAIL_MAX ||
        strlen(cb->info.sub) > 255) {
        gw_reply_html(cb->req, 400, "Sign-in failed",
                      "Your Google account did not share an e-mail address with us.");
        callback_free(cb);
        return;
    }
    char expires[32];
    snprintf(expires, sizeof(expires), "%ld", cb->expires_in);
    const char *p[] = {cb->info.sub,   cb->info.email, cb->info.name, cb->info.picture,
                       cb->access_enc, cb->refresh_enc, expires,       cb->ip};
    if (pg_pool_query(cb->gw->pg, NULL,
                      "SELECT users_sign_in($1, $2, $3, $4, $5, $6, $7::int, $8)", 8, p,
                      on_user_upserted, cb) != 0) {
        gw_reply_html(cb->req, 503, "Sign-in is unavailable", "Please try again in a moment.");
        callback_free(cb);
    }
}

static void on_state_taken(redisReply *reply, const char *err, void *arg)
{
    callback_t *cb = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        log_error("sign-in: cannot read the OAuth state: %s", err != NULL ? err : reply->str);
        reply_unavailable_page(cb->req);
        callback_free(cb);
        return;
    }
    if (reply->type != REDIS_REPLY_STRING) {
        gw_reply_html(cb->req, 400, "Sign-in failed",
                      "This sign-in link has expired or was already used. Please sign in again.");
        callback_free(cb);
        return;
    }
    cb->verifier = strndup(reply->str, reply->len);
    if (cb->verifier == NULL || gw_offload(cb->gw, exchange_work, exchange_done, cb) != 0) {
        gw_reply_html(cb->req, 503, "Sign-in is unavailable", "Please try again in a moment.");
        callback_free(cb);
    }
}

static void callback(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    (void)user;
    const char *error = http_req_query(req, "error");
    if (error != NULL) {
        if (strcmp(error, "access_denied") == 0) {
            gw_reply_html(req, 400, "Sign-in cancelled",
                          "You did not allow Creator Automation to use your Google account, so "
                          "you are not signed in.");
        } else {
            gw_reply_html(req, 400, "Sign-in failed", "Google reported an error. Please try again.");
        }
        return;
    }
    const char *state = http_req_query(req, "state");
    const char *code = http_req_query(req, "code");
    if (!token_chars(state, 128)) {
        gw_reply_html(req, 400, "Sign-in failed",
                      "The sign-in request is missing its state. Please sign in again.");
        return;
    }
    if (code == NULL || code[0] == '\0' || strlen(code) > 2048) {
        gw_reply_html(req, 400, "Sign-in failed", "Google sent no authorization code.");
        return;
    }
    callback_t *cb = calloc(1, sizeof(*cb));
    if (cb == NULL || (cb->code = strdup(code)) == NULL) {
        free(cb);
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    cb->gw = gw;
    cb->req = req;
    snprintf(cb->ip, sizeof(cb->ip), "%s", gw_client_ip(req));
    char key[192];
    snprintf(key, sizeof(key), "ca:oauth:%s", state);
    if (gw_redis_cmd(gw->redis, on_state_taken, cb, "GETDEL %s", key) != 0) {
        reply_unavailable_page(req);
        callback_free(cb);
    }
}

/* ---- /auth/logout ---- */

static void reply_logged_out(http_req_t *req)
{
    http_reply_header(req, "Set-Cookie",
                      GW_SESSION_COOKIE "=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_data(req, 204, "application/json", "", 0);
}

static void on_session_deleted(redisReply *reply, const char *err, void *arg)
{
    http_req_t *req = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        log_error("logout: %s", err != NULL ? err : reply->str);
        http_reply_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "the session store is not reachable");
        return;
    }
    reply_logged_out(req);
}

static void logout(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    if (!user->signed_in) {
        reply_logged_out(req);
        return;
    }
    gw_audit(gw, user->id, "auth.logout", NULL, NULL, gw_client_ip(req));
    if (gw_redis_cmd(gw->redis, on_session_deleted, req, "DEL ca:session:%s",
                     user->session_hash) != 0) {
        http_reply_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "the session store is not reachable");
    }
}

int gw_routes_auth(gw_t *gw)
{
    if (gw_route(gw, "GET", "/auth/google/login", GW_PUBLIC | GW_NO_SESSION, login) != 0 ||
        gw_route(gw, "GET", "/auth/google/callback", GW_PUBLIC | GW_NO_SESSION, callback) != 0 ||
        gw_route(gw, "POST", "/auth/logout", GW_PUBLIC, logout) != 0) {
        return -1;
    }
    return 0;
}
