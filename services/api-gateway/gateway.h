/*
 * gateway.h — the api-gateway's internal interface, shared by its route files.
 *
 * The gateway is one libevent loop. Nothing on it blocks: PostgreSQL goes
 * through the non-blocking pool (gw->pg, pg_pool_*), Redis through an async
 * hiredis connection (gw_redis_*), and Google (the blocking clients of
 * common/google_oauth, drive and drive_auth) runs on a small thread pool
 * (gw->offload, offload_run) whose results come back to the loop.
 *
 * ADDING ROUTES (e.g. routes_presets.c, routes_admin.c, routes_billing.c)
 *
 *   // routes_presets.c
 *   #include "gateway.h"
 *   #include "uuid.h"
 *   static void get_preset(gw_t *gw, http_req_t *req, const gw_user_t *user) {
 *       const char *id = http_req_param(req, "id");
 *       if (!uuid_is_valid(id)) {
 *           gw_reply_invalid(req, "id", "must be a UUID");
 *           return;
 *       }
 *       const char *p[] = {user->id, id};
 *       gw_query(gw, req, user->id, "SELECT ... WHERE id = $2", 2, p, on_preset, NULL);
 *   }
 *   int gw_routes_presets(gw_t *gw) {
 *       return gw_route(gw, "GET", "/api/presets/{id}", GW_AUTH, get_preset);
 *   }
 *
 *   then declare `int gw_routes_presets(gw_t *gw);` in the list at the end of
 *   this header and add it to the table in gw_register_routes() (gateway.c).
 *   Add the route to docs/api/openapi.yaml too: test_gateway_openapi checks
 *   that code and spec list the same routes (it greps the literal text
 *   `gw_route(gw, "METHOD", "/path"`, so keep that on one line).
 *
 * What gw_route() does before the handler runs, in this order:
 *   1. one Redis round trip (a Lua script): the session (cookie ca_session,
 *      __Host-ca_session on https; refused past its absolute lifetime), the
 *      per-IP and per-session rate limits (ca:rl:ip:<ip>,
 *      ca:rl:session:<sha256>); over a limit → 429 rate_limited + Retry-After
 *      (a route with a limit of its own, like /auth/google/login's
 *      ca:rl:login:<ip>, counts it in its handler with GW_LUA_RATE_HIT);
 *   2. GW_AUTH: no valid session → 401 unauthorized; when the session's last
 *      users.is_active check is older than SESSION_RECHECK_SECONDS, one
 *      query reads it again: a deactivated user → the session is deleted and
 *      403 account_disabled (a deleted user → 401); GW_ADMIN: the session's
 *      email is not in ADMIN_EMAILS → 403 forbidden;
 *   3. POST/PUT/PATCH/DELETE: CSRF — Origin (else Referer) equal to
 *      PUBLIC_URL's origin, or X-CSRF-Token equal to the session's token
 *      (GET /api/me returns it as csrf_token) → else 403 csrf_failed.
 * The handler then owns the reply (exactly one http_reply_* / gw_reply_*,
 * now or later from a callback on the loop thread). `user` stays valid until
 * the request ends (it lives in the request's data: do not use
 * http_req_set_data on gw routes).
 *
 * DATABASE AND ROW-LEVEL SECURITY
 *   gw_query(gw, req, user->id, sql, ...) runs one statement for that user on
 *   one of the pool's connections (common/pg.c, docs/common/pg.md), in its own
 *   implicit transaction: no BEGIN/COMMIT around it. app.user_id is a SESSION
 *   setting of the connection, not a per-transaction one: each connection
 *   remembers the value its session holds and, when it differs from the
 *   query's user (or is unknown: a new connection, an error in a segment that
 *   set it, another set still in flight), sends
 *   SELECT set_config('app.user_id', <user>, false) just before the statement
 *   in the same pipeline segment; otherwise the statement goes alone. A query
 *   with user_id NULL runs with '' (the policies show no user's rows). The
 *   value then stays on the connection until a later query needs another one.
 *   The policies (sql/<slice>/050_rls.sql, whose header still describes a
 *   per-transaction SET LOCAL: see docs/schema/current.sql) show
 *   ca_api_gateway only that user's rows of users, jobs, jobs_archive,
 *   email_outbox, notices, subscriptions, usage_tracking, usage_reservations,
 *   meter_outbox, drive_polls, preset_ratings, preset_adoptions, audit_log,
 *   and of presets the
 *   system, own and public active ones (writes: own only).
 *   What a route must do:
 *     - pass user->id for every statement that touches users' rows; NULL only
 *       for a SECURITY DEFINER call that needs no user (users_sign_in_id,
 *       users_sign_in);
 *     - never set app.user_id or app.rls_system in its own SQL (set_config,
 *       SET): the pool would not know, and the next query on that connection
 *       (another user's) would run with the route's value;
 *     - do in ONE statement what must be atomic (a CTE or a function): two
 *       gw_query calls are two transactions, possibly on two connections;
 *     - still write WHERE user_id = $1 (indexes, and defence in depth).
 *   Statements that must see several users' rows (sign-in before the user id
 *   is known, admin analytics, counting a download on someone else's preset)
 *   go through a SECURITY DEFINER function owned by ca_api_gateway that turns
 *   app.rls_system = 'on' for its own call, the one switch the policies honour
 *   besides app.user_id. PostgreSQL 15 lets only superusers put a custom
 *   parameter in a function's SET clause, so the function brackets its body:
 *     prev := current_setting('app.rls_system', true);
 *     PERFORM set_config('app.rls_system', 'on', true);
 *     ...
 *     PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
 *   (see docs/api-gateway.md, "Row-level security").
 *   On a pool thread (gw_thread_pg: a blocking connection the pool does not
 *   track), set app.user_id yourself with set_config(..., false) and put ''
 *   back afterwards, as gw_drive_token() does.
 *   Timestamps: write GW_SQL_TS("col") to get RFC 3339 UTC text.
 *
 * BLOCKING WORK (Google, Stripe)
 *   gw_offload(gw, work, done, arg): work(arg) runs on a pool thread, then
 *   done(arg) on the loop thread (reply there). On a pool thread,
 *   gw_thread_google(gw) and gw_thread_pg(gw) give that thread's own
 *   google_client_t and pg_conn_t (created on first use, freed at exit);
 *   gw_drive_token() gets a user's Drive access token on such a thread.
 */
#ifndef CA_GATEWAY_H
#define CA_GATEWAY_H

#include "config.h"
#include "crypto.h"
#include "daemon.h"
#include "drive.h"
#include "drive_auth.h"
#include "google_oauth.h"
#include "http_server.h"
#include "offload.h"
#include "pg.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;

#define GW_UUID_LEN 36
#define GW_EMAIL_MAX 255
/* Cookie names: with an https PUBLIC_URL the cookies carry the __Host- prefix
 * (the browser then insists on Secure, Path=/ and no Domain, so a sibling
 * subdomain cannot plant them); a local http site uses the plain names. */
#define GW_SESSION_COOKIE "ca_session"
#define GW_SESSION_COOKIE_HOST "__Host-ca_session"
#define GW_OAUTH_COOKIE "ca_oauth"
#define GW_OAUTH_COOKIE_HOST "__Host-ca_oauth"
/* Redis: the set of a user's session hashes ("sign out everywhere"). */
#define GW_USER_SESSIONS_PREFIX "ca:session:user:"

/* Rate limits: fixed windows of one minute. GW_LUA_RATE_HIT defines the Lua
 * function hit(key, limit, window) that the scripts count a request with: it
 * returns 0 (allowed) or the milliseconds left in the window (refused). */
#define GW_RATE_WINDOW_MS 60000
#define GW_LUA_RATE_HIT                                                                            \
    "local function hit(key, limit, window)\n"                                                     \
    "  local n = redis.call('INCR', key)\n"                                                        \
    "  if n == 1 then redis.call('PEXPIRE', key, window) end\n"                                    \
    "  if n > limit then\n"                                                                        \
    "    local t = redis.call('PTTL', key)\n"                                                      \
    "    if t < 0 then redis.call('PEXPIRE', key, window); t = window end\n"                       \
    "    return t\n"                                                                               \
    "  end\n"                                                                                      \
    "  return 0\n"                                                                                 \
    "end\n"

/* ---- async Redis (gw_redis.c) ---- */
typedef struct gw_redis gw_redis_t;
/* reply is NULL when the connection failed (err says why); a Redis error reply
 * is passed as a REDIS_REPLY_ERROR reply. Freed by hiredis after the call. */
typedef void (*gw_redis_cb)(redisReply *reply, const char *err, void *arg);

gw_redis_t *gw_redis_new(struct event_base *base, const char *url);
/* Queues one command. Returns 0 (cb runs exactly once, later, on the loop) or
 * -1 when not connected (cb is not called). */
__attribute__((warn_unused_result)) int gw_redis_argv(gw_redis_t *r, gw_redis_cb cb, void *arg,
                                                      int argc, const char **argv,
                                                      const size_t *lens);
/* printf-style (hiredis format). Same contract. */
__attribute__((warn_unused_result)) int gw_redis_cmd(gw_redis_t *r, gw_redis_cb cb, void *arg,
                                                     const char *fmt, ...);
/* EVALSHA of a script (NOSCRIPT falls back to EVAL, which loads it). args
 * holds the nkeys keys and then the script's ARGV: nargs counts both. script
 * must stay valid (a string literal). */
__attribute__((warn_unused_result)) int gw_redis_eval(gw_redis_t *r, gw_redis_cb cb, void *arg,
                                                      const char *script, int nkeys, int nargs,
                                                      const char **args);
bool gw_redis_connected(const gw_redis_t *r);
void gw_redis_free(gw_redis_t *r);

/* ---- the gateway context ---- */
typedef struct gw {
    daemon_t *daemon;
    struct event_base *base;
    http_server_t *http;
    const config_t *cfg;
    pg_pool_t *pg;
    gw_redis_t *redis;
    offload_t *offload;
    crypto_keyring_t *keys;
    google_config_t google;     /* strings borrowed from cfg */
    const char *db_url;         /* DATABASE_URL (pool threads connect with it) */
    char public_url[512];       /* PUBLIC_URL without a trailing slash */
    char public_origin[512];    /* scheme://host[:port] of PUBLIC_URL */
    bool secure_cookies;        /* PUBLIC_URL is https */
    const char *session_cookie; /* GW_SESSION_COOKIE or its __Host- form */
    const char *oauth_cookie;   /* GW_OAUTH_COOKIE or its __Host- form */
    char redirect_uri[600];     /* PUBLIC_URL/auth/google/callback */
    char **admin_emails;        /* ADMIN_EMAILS, lowercased */
    size_t nadmin_emails;
    char **frontend_origins; /* FRONTEND_ORIGIN: exact origins allowed by CORS */
    size_t nfrontend_origins;
    long rl_per_minute_ip;
    long rl_per_minute_session;
    long session_ttl_s;     /* SESSION_TTL_SECONDS: idle lifetime (sliding) */
    long session_max_age_s; /* SESSION_MAX_AGE_SECONDS: absolute lifetime */
    long session_check_s;   /* SESSION_RECHECK_SECONDS: users.is_active re-read */

    long rl_per_minute_login;  /* RATE_LIMIT_PER_MINUTE_LOGIN: /auth/google/login per address */
    long session_max_per_user; /* SESSION_MAX_PER_USER: older sessions end at sign-in */
    /* The session script's fixed arguments as text, made once (gw_new). */
    char rl_window_arg[16], rl_ip_arg[24], rl_session_arg[24], session_ttl_arg[32];
    char session_max_age_arg[32], session_check_arg[32];
    char rl_login_arg[24], session_max_per_user_arg[24];
    long presets_max;         /* PRESETS_MAX_PER_USER: presets a user may own */
    char presets_max_arg[24]; /* presets_max as text ($6 of presets_create) */
    char export_max_arg[24];  /* EXPORT_MAX_ROWS as text: rows per export list */
    char web_root[4096];
    int in_flight; /* gw requests not yet answered (drain) */
} gw_t;

/* The signed-in user of an authenticated route. */
typedef struct {
    bool signed_in;
    char id[GW_UUID_LEN + 1];
    char email[GW_EMAIL_MAX + 1];
    bool is_admin;
    char csrf[64];
    char session_hash[2 * CRYPTO_SHA256_LEN + 1]; /* hex SHA-256 of the session id */
} gw_user_t;

/* Route flags. */
#define GW_PUBLIC 0u
#define GW_AUTH 1u       /* a session is required: 401 otherwise */
#define GW_ADMIN 2u      /* implies GW_AUTH; email in ADMIN_EMAILS: 403 otherwise */
#define GW_NO_CSRF 4u    /* a state-changing route that does not need the check (none yet) */
#define GW_NO_SESSION 8u /* skip the session lookup (only the IP rate limit) */

typedef void (*gw_handler_fn)(gw_t *gw, http_req_t *req, const gw_user_t *user);

/* Registers method + pattern (http_server patterns) with the steps above.
 * Returns 0 or -1. */
__attribute__((warn_unused_result)) int gw_route(gw_t *gw, const char *method, const char *pattern,
                                                 unsigned flags, gw_handler_fn fn);

/* The methods registered with gw_route for a path (", "-separated into out);
 * returns how many. */
size_t gw_allowed_methods(const char *path, char *out, size_t outlen);

/* ---- database ---- */
/* res is never NULL: on a database error gw_query replies 503/500 itself and
 * does not call cb (so a malloc'd arg that cb frees must go through
 * gw_query_ex with its arg_free). */
typedef void (*gw_query_cb)(gw_t *gw, http_req_t *req, const PGresult *res, void *arg);
/* user_id NULL: no RLS user (only for SECURITY DEFINER calls). On a queue
 * failure it replies 503 itself. */
void gw_query(gw_t *gw, http_req_t *req, const char *user_id, const char *sql, int nparams,
              const char *const *params, gw_query_cb cb, void *arg);
/* gw_query for a callback argument the callback frees: when the callback does
 * not run (database error, queue full, out of memory: gw_query_ex replies
 * itself), arg_free(arg) is called instead, so the argument never leaks. */
void gw_query_ex(gw_t *gw, http_req_t *req, const char *user_id, const char *sql, int nparams,
                 const char *const *params, gw_query_cb cb, void *arg, void (*arg_free)(void *));
/* Fire and forget (audit rows): errors are logged. details_json may be NULL. */
void gw_audit(gw_t *gw, const char *user_id, const char *action, const char *target,
              const char *details_json, const char *ip);

/* RFC 3339 UTC text of a TIMESTAMP (UTC) column, for SQL. */
#define GW_SQL_TS(col) "to_char(" col ", 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* ---- replies ---- */
/* 400 invalid_request with a message that starts with the field's name. */
void gw_reply_invalid(http_req_t *req, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void gw_reply_not_found(http_req_t *req);
/* Replies with a JSON document given as text (a row built by json_build_object). */
void gw_reply_json_text(http_req_t *req, int status, const char *json);
/* A small HTML page (sign-in errors). message is escaped. */
void gw_reply_html(http_req_t *req, int status, const char *title, const char *message);
/* The same page with an error code shown under the message (code: [a-z_]). */
void gw_reply_html_code(http_req_t *req, int status, const char *code, const char *title,
                        const char *message);

/* ---- sessions ---- */
/* The hex SHA-256 of a session id (the Redis key's suffix); hexlen >= 65. */
void gw_session_key(const char *session_id, char *hash_hex, size_t hexlen);
/* "name=value; Path=/; Max-Age=N; HttpOnly; SameSite=Lax[; Secure]" into out
 * (Secure when PUBLIC_URL is https; max_age 0 with value "" clears it). */
void gw_cookie_header(const gw_t *gw, const char *name, const char *value, long max_age, char *out,
                      size_t outlen);
/* Deletes one session (ca:session:<hash>) and takes it out of the user's set.
 * Same contract as gw_redis_cmd. */
__attribute__((warn_unused_result)) int gw_session_delete(gw_t *gw, const char *user_id,
                                                          const char *session_hash, gw_redis_cb cb,
                                                          void *arg);

/* Deletes every session of the user (ca:session:user:<id> and each
 * ca:session:<hash> in it; auth.c); the reply is the number ended. Same
 * contract as gw_redis_cmd. */
__attribute__((warn_unused_result)) int gw_sessions_end_all(gw_t *gw, const char *user_id,
                                                            gw_redis_cb cb, void *arg);

/* ---- validation ---- */
/* Strict JSON body checks: every key of obj must be in allowed (NULL-terminated);
 * else replies 400 naming the key and returns false. */
bool gw_json_only_keys(http_req_t *req, const cJSON *obj, const char *const *allowed);
/* The request's body as a JSON object whose keys are all in allowed
 * (NULL-terminated); NULL after replying 400. The object belongs to the
 * request (do not free). */
cJSON *gw_json_body(http_req_t *req, const char *const *allowed);
/* For a route that takes no fields: no body, or an empty JSON object; else
 * replies 400 (or what http_req_json replied) and returns false. */
bool gw_json_no_body(http_req_t *req);
/* Reads an optional string field: absent → *out NULL, true; wrong type or
 * length outside [minlen, maxlen] → replies 400 and returns false. */
bool gw_json_string(http_req_t *req, const cJSON *obj, const char *field, size_t minlen,
                    size_t maxlen, const char **out);
/* Reads an optional boolean: *present tells whether it was there. */
bool gw_json_bool(http_req_t *req, const cJSON *obj, const char *field, bool *present, bool *out);

/* The value of cookie `name` (copied into out) or false. */
bool gw_cookie(const http_req_t *req, const char *name, char *out, size_t outlen);
/* The client's address for rate limits and the audit log. */
const char *gw_client_ip(const http_req_t *req);
/* Counts a request refused by a rate limit (ca_gateway_rate_limited_total)
 * for a route that answers the 429 itself. */
void gw_count_rate_limited(void);

/* ---- blocking work ---- */
/* Returns 0, or -1 (queue full / shutting down: done is not called). */
__attribute__((warn_unused_result)) int gw_offload(gw_t *gw, offload_work_fn work,
                                                   offload_done_fn done, void *arg);
/* On a pool thread only. NULL when it cannot be made. */
google_client_t *gw_thread_google(gw_t *gw);
pg_conn_t *gw_thread_pg(gw_t *gw);
/* On a pool thread: the user's Drive access token (sets app.user_id on the
 * thread's connection first, so RLS lets it read and store the tokens, and
 * sets it back to '' after). */
drive_auth_status_t gw_drive_token(gw_t *gw, const char *user_id, bool force, char *token,
                                   size_t tokenlen, google_error_t *gerr);

/* ---- life cycle (main.c) ---- */
gw_t *gw_new(daemon_t *d);
/* Registers every route file's routes (and the static files last). */
__attribute__((warn_unused_result)) int gw_register_routes(gw_t *gw);
bool gw_idle(const gw_t *gw);
void gw_free(gw_t *gw);

/* ---- route files: one registration function each ---- */
int gw_routes_auth(gw_t *gw); /* auth.c: /auth/google/login, /callback, /auth/logout{,-all} */
int gw_routes_me(gw_t *gw);   /* routes_me.c: /api/me, /api/usage */
int gw_routes_jobs(gw_t *gw); /* routes_jobs.c: /api/jobs... */
/* The statement of GET /api/jobs for a status filter, the waiting-for-quota
 * filter, a cursor and/or a date range ($1 user id, $2 rows, then the status,
 * then the cursor's created_at and id, then the range's first instant and the
 * instant after it). */
const char *jobs_list_sql(bool status, bool waiting, bool cursor, bool dated);
int gw_routes_drive(gw_t *gw);   /* routes_drive.c: /api/watch, /api/drive/folders */
int gw_routes_presets(gw_t *gw); /* routes_presets.c: /api/presets... */
int gw_routes_admin(gw_t *gw);   /* routes_admin.c: /api/admin/analytics/... */
int gw_routes_billing(gw_t *gw); /* routes_billing.c: /api/billing/checkout, /portal */
int gw_routes_account(gw_t *gw); /* routes_account.c: /api/me/export, DELETE /api/me */
int gw_routes_notices(gw_t *gw); /* routes_notices.c: /api/notifications... */
/* On a pool thread: that thread's Stripe client (routes_billing.c; NULL when
 * STRIPE_SECRET_KEY is not set or out of memory). */
struct stripe_client *gw_thread_stripe(const gw_t *gw);
int gw_routes_previews(gw_t *gw); /* routes_previews.c: /api/previews..., thumbnails */
/* Deletes the user's job thumbnails (ca:thumbs:u:<user> and each ca:thumb:
 * in it) once the account is deleted; fire and forget (logged). */
void gw_previews_forget_user(gw_t *gw, const char *user_id);
/* 400 for a graph the validator refused, as POST /api/presets answers it
 * (routes_presets.c); takes gerr (may be NULL). */
void gw_reply_bad_workflow(http_req_t *req, cJSON *gerr);
int gw_routes_static(gw_t *gw); /* static.c: the dashboard (registered last) */

#endif
