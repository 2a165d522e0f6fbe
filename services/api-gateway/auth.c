/*
 * auth — Google sign-in (authorization code + PKCE S256, state kept in Redis
 * for 10 minutes, used once and bound to the browser that started it),
 * sessions, logout.
 *
 *   GET  /auth/google/login      302 to GOOGLE_AUTH_URL (state, PKCE, offline, consent);
 *                                sets the binding cookie (ca_oauth, __Host-ca_oauth on https)
 *   GET  /auth/google/callback   binding cookie check → code exchange (pool thread) →
 *                                verified e-mail → users_sign_in_id() → tokens sealed
 *                                bound to that id (v2) → users_sign_in() (NULL:
 *                                deactivated; 40001: the id changed, 503) → session;
 *                                the binding cookie is cleared
 *   POST /auth/logout            ends the session, clears the cookie (204)
 *   POST /auth/logout-all        ends every session of the user (200 {"sessions_ended"})
 *
 * Redis: ca:oauth:<state> → "<hex sha256(binding)>:<PKCE verifier>" (PX 600000, GETDEL);
 *        ca:session:<hex sha256(session id)> → hash {user_id, csrf, email,
 *        created_ms, checked_ms} with a sliding TTL (SESSION_TTL_SECONDS) that
 *        never runs past created_ms + SESSION_MAX_AGE_SECONDS;
 *        ca:session:user:<user id> → set of the user's session hashes, at
 *        most SESSION_MAX_PER_USER (a sign-in over it ends the oldest);
 *        ca:rl:login:<client address> → the sign-ins it started this minute
 *        (RATE_LIMIT_PER_MINUTE_LOGIN; over it: 429 page, no ca:oauth: key).
 *        The raw session id lives only in the client's cookie.
 */
#include "gateway.h"

#include "log.h"

#include <ctype.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OAUTH_STATE_TTL_MS 600000
#define OAUTH_STATE_TTL_S (OAUTH_STATE_TTL_MS / 1000)
#define BINDING_MIN 32 /* characters of a binding cookie we accept (we make 32) */

/* KEYS: the session, the user's set. ARGV: user_id, csrf, email, idle ttl ms,
 * absolute lifetime ms, the session's hash, the most sessions a user may hold.
 * created_ms and checked_ms are Redis' clock (the lookup script compares with
 * it); the set loses the hashes of sessions that have expired (their keys are
 * built here: standalone Redis) and lives as long as its newest session can.
 * When the user would hold more than the cap, the oldest sessions (by
 * created_ms; one without it counts as oldest) are deleted: the new one always
 * stays. Returns how many were deleted. */
static const char SESSION_CREATE_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))\n"
    "redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'csrf', ARGV[2], 'email', ARGV[3],\n"
    "           'created_ms', now, 'checked_ms', now)\n"
    "local ttl = tonumber(ARGV[4])\n"
    "local max_age = tonumber(ARGV[5])\n"
    "if max_age < ttl then ttl = max_age end\n"
    "redis.call('PEXPIRE', KEYS[1], ttl)\n"
    "local others = {}\n"
    "for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "  if redis.call('EXISTS', 'ca:session:' .. h) == 0 then redis.call('SREM', KEYS[2], h)\n"
    "  elseif h ~= ARGV[6] then\n"
    "    local c = tonumber(redis.call('HGET', 'ca:session:' .. h, 'created_ms')) or 0\n"
    "    others[#others + 1] = {c, h}\n"
    "  end\n"
    "end\n"
    "local ended = 0\n"
    "local over = #others + 1 - tonumber(ARGV[7])\n"
    "if over > 0 then\n"
    "  table.sort(others, function(a, b)\n"
    "    if a[1] ~= b[1] then return a[1] < b[1] end\n"
    "    return a[2] < b[2]\n"
    "  end)\n"
    "  for i = 1, over do\n"
    "    redis.call('DEL', 'ca:session:' .. others[i][2])\n"
    "    redis.call('SREM', KEYS[2], others[i][2])\n"
    "    ended = ended + 1\n"
    "  end\n"
    "end\n"
    "redis.call('SADD', KEYS[2], ARGV[6])\n"
    "redis.call('PEXPIRE', KEYS[2], max_age)\n"
    "return ended\n";

/* KEYS: the client address' sign-in counter (ca:rl:login:<address>), the
 * state's key. ARGV: window ms, limit, the state's value, its TTL ms. Counts
 * the sign-in and, when it is within the limit, stores the state; over it
 * stores nothing. Returns 0 (stored) or the milliseconds left in the window. */
static const char LOGIN_STATE_SCRIPT[] =
    GW_LUA_RATE_HIT "local retry = hit(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[1]))\n"
                    "if retry > 0 then return retry end\n"
                    "redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])\n"
                    "return 0\n";

/* KEYS: the user's set. Deletes every session in it and the set.
 * Returns how many sessions existed. */
static const char SESSIONS_DELETE_ALL_SCRIPT[] =
    "local n = 0\n"
    "for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  n = n + redis.call('DEL', 'ca:session:' .. h)\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n";

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
    char cookie[256]; /* the binding cookie's Set-Cookie value */
} login_t;

static void on_state_stored(redisReply *reply, const char *err, void *arg)
{
    login_t *l = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        log_error("sign-in: cannot store the OAuth state: %s",
                  err != NULL ? err
                              : (reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply"));
        reply_unavailable_page(l->req);
    } else if (reply->integer > 0) {
        /* this address started too many sign-ins this minute: no state kept */
        char ra[32];
        snprintf(ra, sizeof(ra), "%lld", (reply->integer + 999) / 1000);
        gw_count_rate_limited();
        http_reply_header(l->req, "Retry-After", ra);
        gw_reply_html_code(l->req, 429, "rate_limited", "Too many sign-in attempts",
                           "Too many sign-ins were started from your network in the last minute. "
                           "Please wait a minute, then sign in again.");
    } else {
        http_reply_header(l->req, "Set-Cookie", l->cookie);
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
    /* The binding: a random value in a short-lived cookie of this browser,
     * its hash stored with the state; the callback wants both. A browser that
     * already holds one (another tab's sign-in) keeps it, so both tabs work. */
    char binding[160];
    char *new_binding = NULL;
    if (!gw_cookie(req, gw->oauth_cookie, binding, sizeof(binding)) ||
        strlen(binding) < BINDING_MIN || !token_chars(binding, 128)) {
        new_binding = crypto_random_token(24);
        snprintf(binding, sizeof(binding), "%s", new_binding != NULL ? new_binding : "");
    }
    char binding_hash[2 * CRYPTO_SHA256_LEN + 1];
    gw_session_key(binding, binding_hash, sizeof(binding_hash));
    char *state = crypto_random_token(24);
    char *verifier = crypto_random_token(48); /* 64 characters (RFC 7636: 43..128) */
    char *challenge = NULL;
    char *location = NULL;
    char *e_client = NULL, *e_redirect = NULL, *e_scope = NULL, *e_hint = NULL;
    login_t *l = NULL;
    if (state == NULL || verifier == NULL || binding[0] == '\0') {
        goto fail;
    }
    uint8_t digest[CRYPTO_SHA256_LEN];
    crypto_sha256(verifier, strlen(verifier), digest);
    challenge = crypto_base64url_encode(digest, sizeof(digest));
    char scope[1024];
    snprintf(scope, sizeof(scope), "openid email profile %s", config_get(gw->cfg, "DRIVE_SCOPE"));
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
    gw_cookie_header(gw, gw->oauth_cookie, binding, OAUTH_STATE_TTL_S, l->cookie,
                     sizeof(l->cookie));
    char key[192], rl[128], value[256], ttl[16];
    snprintf(key, sizeof(key), "ca:oauth:%s", state);
    snprintf(rl, sizeof(rl), "ca:rl:login:%s", gw_client_ip(req));
    snprintf(value, sizeof(value), "%s:%s", binding_hash, verifier);
    snprintf(ttl, sizeof(ttl), "%d", OAUTH_STATE_TTL_MS);
    const char *args[] = {rl, key, gw->rl_window_arg, gw->rl_login_arg, value, ttl};
    if (gw_redis_eval(gw->redis, on_state_stored, l, LOGIN_STATE_SCRIPT, 2, 6, args) != 0) {
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
    free(new_binding);
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

static void reply_not_bound(http_req_t *req)
{
    gw_reply_html_code(req, 400, "sign_in_not_bound", "Sign-in failed",
                       "This sign-in was started in another browser, or your browser did not "
                       "keep our sign-in cookie. Please sign in again from this browser.");
}

typedef struct {
    gw_t *gw;
    http_req_t *req;
    char *code;
    char *verifier;
    char binding_hash[2 * CRYPTO_SHA256_LEN + 1]; /* of the browser's binding cookie */
    char ip[64];
    /* results of the pool thread */
    google_status_t st;
    google_error_t gerr;
    google_userinfo_t info;
    char *access_plain; /* until sealed (crypto_free_secret) */
    char *refresh_plain;
    long expires_in;
    /* sealed bound to user_id (users_sign_in_id) */
    char *access_enc;
    char *refresh_enc;
    /* the session */
    char user_id[GW_UUID_LEN + 1];
    char *session_id;
} callback_t;

static void callback_free(callback_t *cb)
{
    free(cb->code);
    free(cb->verifier);
    google_userinfo_free(&cb->info);
    crypto_free_secret(cb->access_plain);
    crypto_free_secret(cb->refresh_plain);
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
    cb->st =
        google_exchange_code(gc, cb->code, cb->verifier, cb->gw->redirect_uri, &tokens, &cb->gerr);
    if (cb->st != GOOGLE_OK) {
        google_tokens_free(&tokens);
        return;
    }
    cb->st = google_userinfo(gc, tokens.access_token, &cb->info, &cb->gerr);
    if (cb->st == GOOGLE_OK) {
        /* Kept in plaintext until the user's id is known (on_user_id seals
         * them bound to it); callback_free wipes whatever is left. */
        cb->access_plain = tokens.access_token;
        cb->refresh_plain = tokens.refresh_token;
        tokens.access_token = NULL;
        tokens.refresh_token = NULL;
        cb->expires_in = tokens.expires_in > 0 ? tokens.expires_in : 3600;
        if (cb->access_plain == NULL || cb->access_plain[0] == '\0') {
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
    gw_t *gw = cb->gw;
    gw_cookie_header(gw, gw->session_cookie, cb->session_id,
                     gw->session_ttl_s < gw->session_max_age_s ? gw->session_ttl_s
                                                               : gw->session_max_age_s,
                     cookie, sizeof(cookie));
    http_reply_header(cb->req, "Set-Cookie", cookie);
    http_reply_header(cb->req, "Cache-Control", "no-store");
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        log_info("sign-in: user %s signed in; %lld older session(s) ended "
                 "(SESSION_MAX_PER_USER %ld)",
                 cb->user_id, reply->integer, gw->session_max_per_user);
    } else {
        log_info("sign-in: user %s signed in", cb->user_id);
    }
    http_reply_redirect(cb->req, 302, "/");
    callback_free(cb);
}

static void on_user_upserted(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    callback_t *cb = arg;
    if (res != NULL && PQntuples(res) == 1 && PQgetisnull(res, 0, 0)) {
        /* users_sign_in returns NULL for a deactivated user (070_sign_in_checks.sql) */
        log_warn("sign-in: refused: the account of Google user %s is deactivated", cb->info.sub);
        gw_reply_html_code(cb->req, 403, "account_disabled", "Sign-in refused",
                           "This account is deactivated. Contact support if you think this is "
                           "a mistake.");
        callback_free(cb);
        return;
    }
    if (res == NULL && sqlstate != NULL && strcmp(sqlstate, "40001") == 0) {
        /* the row of this Google account has another id than the one the
         * tokens were sealed for (a concurrent first sign-in): nothing stored */
        log_warn("sign-in: Google user %s: the user id changed during the sign-in; not stored",
                 cb->info.sub);
        http_reply_header(cb->req, "Retry-After", "1");
        gw_reply_html(cb->req, 503, "Sign-in is unavailable",
                      "Your account was being updated at the same time. Please try again.");
        callback_free(cb);
        return;
    }
    if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        strcmp(PQgetvalue(res, 0, 0), cb->user_id) != 0) {
        log_error("sign-in: cannot save the user: %s (SQLSTATE %s)",
                  err != NULL ? err
                              : (res != NULL && PQntuples(res) == 1 ? "another id" : "no row"),
                  sqlstate != NULL ? sqlstate : "");
        gw_reply_html(cb->req, 500, "Sign-in failed",
                      "We could not save your account. Please try again.");
        callback_free(cb);
        return;
    }
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
    char key[128], set[128];
    snprintf(key, sizeof(key), "ca:session:%s", hash);
    snprintf(set, sizeof(set), GW_USER_SESSIONS_PREFIX "%s", cb->user_id);
    const char *args[] = {key,
                          set,
                          cb->user_id,
                          csrf,
                          cb->info.email,
                          cb->gw->session_ttl_arg,
                          cb->gw->session_max_age_arg,
                          hash,
                          cb->gw->session_max_per_user_arg};
    int rc = gw_redis_eval(cb->gw->redis, on_session_stored, cb, SESSION_CREATE_SCRIPT, 2, 9, args);
    free(csrf);
    if (rc != 0) {
        reply_unavailable_page(cb->req);
        callback_free(cb);
    }
}

/* The id of the user (users_sign_in_id: existing, or a fresh one for a new
 * user): seal both tokens bound to it, wipe the plaintext, store them. */
static void on_user_id(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    callback_t *cb = arg;
    if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        PQgetlength(res, 0, 0) != GW_UUID_LEN) {
        log_error("sign-in: cannot read the user id: %s (SQLSTATE %s)",
                  err != NULL ? err : "no row", sqlstate != NULL ? sqlstate : "");
        gw_reply_html(cb->req, 503, "Sign-in is unavailable", "Please try again in a moment.");
        callback_free(cb);
        return;
    }
    snprintf(cb->user_id, sizeof(cb->user_id), "%s", PQgetvalue(res, 0, 0));
    cb->access_enc = crypto_envelope_seal_bound(cb->gw->keys, cb->access_plain, cb->user_id);
    if (cb->refresh_plain != NULL) {
        cb->refresh_enc = crypto_envelope_seal_bound(cb->gw->keys, cb->refresh_plain, cb->user_id);
    }
    bool sealed = cb->access_enc != NULL && (cb->refresh_plain == NULL || cb->refresh_enc != NULL);
    crypto_free_secret(cb->access_plain);
    crypto_free_secret(cb->refresh_plain);
    cb->access_plain = NULL;
    cb->refresh_plain = NULL;
    if (!sealed) {
        log_error("sign-in: cannot seal the Drive tokens");
        gw_reply_html(cb->req, 500, "Sign-in failed", "Please try again.");
        callback_free(cb);
        return;
    }
    char expires[32];
    snprintf(expires, sizeof(expires), "%ld", cb->expires_in);
    const char *p[] = {cb->info.sub,     cb->info.email, cb->info.name,
                       cb->info.picture, cb->access_enc, cb->refresh_enc,
                       expires,          cb->ip,         cb->user_id};
    if (pg_pool_query(cb->gw->pg, NULL,
                      "SELECT users_sign_in($1, $2, $3, $4, $5, $6, $7::int, $8, $9::uuid)", 9, p,
                      on_user_upserted, cb) != 0) {
        gw_reply_html(cb->req, 503, "Sign-in is unavailable", "Please try again in a moment.");
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
    if (!cb->info.email_verified) {
        /* An unverified address may belong to someone else (ADMIN_EMAILS, the
         * unique e-mail column): no user row, no session. */
        log_warn("sign-in: refused: Google user %s has an unverified e-mail", cb->info.sub);
        gw_reply_html_code(cb->req, 403, "email_not_verified", "Sign-in refused",
                           "Google has not verified the e-mail address of this account. Verify "
                           "it with Google, then sign in again.");
        callback_free(cb);
        return;
    }
    const char *p[] = {cb->info.sub};
    if (pg_pool_query(cb->gw->pg, NULL, "SELECT users_sign_in_id($1)", 1, p, on_user_id, cb) != 0) {
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
    size_t hexlen = 2 * CRYPTO_SHA256_LEN;
    if (reply->type != REDIS_REPLY_STRING || reply->len <= hexlen + 1 ||
        reply->str[hexlen] != ':') {
        gw_reply_html(cb->req, 400, "Sign-in failed",
                      "This sign-in link has expired or was already used. Please sign in again.");
        callback_free(cb);
        return;
    }
    if (!crypto_equal(reply->str, cb->binding_hash, hexlen)) {
        log_warn("sign-in: refused: the callback came to another browser than the sign-in");
        reply_not_bound(cb->req);
        callback_free(cb);
        return;
    }
    cb->verifier = strndup(reply->str + hexlen + 1, reply->len - hexlen - 1);
    if (cb->verifier == NULL || gw_offload(cb->gw, exchange_work, exchange_done, cb) != 0) {
        gw_reply_html(cb->req, 503, "Sign-in is unavailable", "Please try again in a moment.");
        callback_free(cb);
    }
}

static void callback(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    (void)user;
    /* The binding cookie is for this one callback, whatever it answers. */
    char binding[160], clear[256];
    bool bound = gw_cookie(req, gw->oauth_cookie, binding, sizeof(binding)) &&
                 strlen(binding) >= BINDING_MIN && token_chars(binding, 128);
    gw_cookie_header(gw, gw->oauth_cookie, "", 0, clear, sizeof(clear));
    http_reply_header(req, "Set-Cookie", clear);
    const char *error = http_req_query(req, "error");
    if (error != NULL) {
        if (strcmp(error, "access_denied") == 0) {
            gw_reply_html(req, 400, "Sign-in cancelled",
                          "You did not allow Creator Automation to use your Google account, so "
                          "you are not signed in.");
        } else {
            gw_reply_html(req, 400, "Sign-in failed",
                          "Google reported an error. Please try again.");
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
    if (!bound) {
        reply_not_bound(req);
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
    gw_session_key(binding, cb->binding_hash, sizeof(cb->binding_hash));
    snprintf(cb->ip, sizeof(cb->ip), "%s", gw_client_ip(req));
    char key[192];
    snprintf(key, sizeof(key), "ca:oauth:%s", state);
    if (gw_redis_cmd(gw->redis, on_state_taken, cb, "GETDEL %s", key) != 0) {
        reply_unavailable_page(req);
        callback_free(cb);
    }
}

/* ---- /auth/logout, /auth/logout-all ---- */

static void clear_session_cookie(gw_t *gw, http_req_t *req)
{
    char clear[256];
    gw_cookie_header(gw, gw->session_cookie, "", 0, clear, sizeof(clear));
    http_reply_header(req, "Set-Cookie", clear);
    http_reply_header(req, "Cache-Control", "no-store");
}

static void reply_store_down(http_req_t *req)
{
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, 503, "unavailable", "the session store is not reachable");
}

typedef struct {
    gw_t *gw;
    http_req_t *req;
} logout_t;

static void on_session_deleted(redisReply *reply, const char *err, void *arg)
{
    logout_t *l = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        log_error("logout: %s", err != NULL ? err : reply->str);
        reply_store_down(l->req);
    } else {
        clear_session_cookie(l->gw, l->req);
        http_reply_data(l->req, 204, "application/json", "", 0);
    }
    free(l);
}

static void logout(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    if (!user->signed_in) {
        clear_session_cookie(gw, req);
        http_reply_data(req, 204, "application/json", "", 0);
        return;
    }
    logout_t *l = malloc(sizeof(*l));
    if (l == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    l->gw = gw;
    l->req = req;
    gw_audit(gw, user->id, "auth.logout", NULL, NULL, gw_client_ip(req));
    if (gw_session_delete(gw, user->id, user->session_hash, on_session_deleted, l) != 0) {
        free(l);
        reply_store_down(req);
    }
}

static void on_all_deleted(redisReply *reply, const char *err, void *arg)
{
    logout_t *l = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        log_error("logout-all: %s",
                  err != NULL ? err
                              : (reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply"));
        reply_store_down(l->req);
    } else {
        clear_session_cookie(l->gw, l->req);
        cJSON *doc = cJSON_CreateObject();
        if (doc == NULL ||
            cJSON_AddNumberToObject(doc, "sessions_ended", (double)reply->integer) == NULL) {
            cJSON_Delete(doc);
            http_reply_error(l->req, 500, "internal", "could not build the response");
        } else {
            http_reply_json(l->req, 200, doc);
        }
    }
    free(l);
}

/* Sign out everywhere: every session in the user's set (this one included). */
static void logout_all(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    if (!gw_json_no_body(req)) {
        return;
    }
    logout_t *l = malloc(sizeof(*l));
    if (l == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    l->gw = gw;
    l->req = req;
    gw_audit(gw, user->id, "auth.logout_all", NULL, NULL, gw_client_ip(req));
    if (gw_sessions_end_all(gw, user->id, on_all_deleted, l) != 0) {
        free(l);
        reply_store_down(req);
    }
}

int gw_sessions_end_all(gw_t *gw, const char *user_id, gw_redis_cb cb, void *arg)
{
    char set[128];
    snprintf(set, sizeof(set), GW_USER_SESSIONS_PREFIX "%s", user_id);
    const char *args[] = {set};
    return gw_redis_eval(gw->redis, cb, arg, SESSIONS_DELETE_ALL_SCRIPT, 1, 1, args);
}

int gw_routes_auth(gw_t *gw)
{
    if (gw_route(gw, "GET", "/auth/google/login", GW_PUBLIC | GW_NO_SESSION, login) != 0 ||
        gw_route(gw, "GET", "/auth/google/callback", GW_PUBLIC | GW_NO_SESSION, callback) != 0 ||
        gw_route(gw, "POST", "/auth/logout", GW_PUBLIC, logout) != 0 ||
        gw_route(gw, "POST", "/auth/logout-all", GW_AUTH, logout_all) != 0) {
        return -1;
    }
    return 0;
}
