/*
 * gateway — the api-gateway's context, the authenticated-route wrapper
 * (session, rate limits, CSRF), database and reply helpers, validation, and the
 * pool threads' own clients. See gateway.h.
 */
#include "gateway.h"

#include "log.h"
#include "metrics.h"
#include "uuid.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* One Redis round trip per request: the per-IP limit, then (when a session id
 * was presented) the session and the per-session limit.
 * KEYS: session, ip-limit, session-limit. ARGV: window ms, ip limit, session
 * limit, session ttl ms, "1" to look the session up, absolute lifetime ms,
 * is_active check interval ms, the session's hash.
 * A session past its absolute lifetime (created_ms + lifetime, Redis' clock)
 * is deleted and not returned; otherwise its TTL slides to the idle lifetime,
 * never past the absolute end. A session made before created_ms existed gets
 * it now (and joins its user's set, a key the script builds: standalone Redis).
 * When the last users.is_active check (checked_ms) is older than the interval,
 * the script stamps checked_ms = now and asks the caller to check ("1").
 * Returns {retry_after_ms (0 = allowed), user_id, csrf, email, check}. */
static const char SESSION_SCRIPT[] = GW_LUA_RATE_HIT
    "local window = tonumber(ARGV[1])\n"
    "local retry = hit(KEYS[2], tonumber(ARGV[2]), window)\n"
    "local uid, csrf, email, check = false, false, false, '0'\n"
    "if ARGV[5] == '1' then\n"
    "  local s = redis.call('HMGET', KEYS[1], 'user_id', 'csrf', 'email', 'created_ms',\n"
    "                       'checked_ms')\n"
    "  if s[1] then\n"
    "    local t = redis.call('TIME')\n"
    "    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "    local max_age = tonumber(ARGV[6])\n"
    "    local created = tonumber(s[4])\n"
    "    if not created then\n"
    "      created = now\n"
    "      redis.call('HSET', KEYS[1], 'created_ms', string.format('%d', now))\n"
    "      local set = '" GW_USER_SESSIONS_PREFIX "' .. s[1]\n"
    "      redis.call('SADD', set, ARGV[8])\n"
    "      redis.call('PEXPIRE', set, max_age)\n"
    "    end\n"
    "    local left = created + max_age - now\n"
    "    if left <= 0 then\n"
    "      redis.call('DEL', KEYS[1])\n"
    "    else\n"
    "      uid, csrf, email = s[1], s[2], s[3]\n"
    "      local ttl = tonumber(ARGV[4])\n"
    "      if left < ttl then ttl = left end\n"
    "      redis.call('PEXPIRE', KEYS[1], ttl)\n"
    "      if (tonumber(s[5]) or 0) + tonumber(ARGV[7]) <= now then\n"
    "        check = '1'\n"
    "        redis.call('HSET', KEYS[1], 'checked_ms', string.format('%d', now))\n"
    "      end\n"
    "      local r2 = hit(KEYS[3], tonumber(ARGV[3]), window)\n"
    "      if r2 > retry then retry = r2 end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {retry, uid, csrf, email, check}\n";

/* Ends one session: KEYS session, the user's set; ARGV the session's hash. */
static const char SESSION_DELETE_SCRIPT[] = "redis.call('DEL', KEYS[1])\n"
                                            "redis.call('SREM', KEYS[2], ARGV[1])\n"
                                            "return 1\n";

typedef struct {
    gw_t *gw;
    char *method;
    char *pattern;
    unsigned flags;
    gw_handler_fn fn;
} gw_route_t;

/* Per request (http_req_set_data). */
typedef struct {
    gw_t *gw;
    const gw_route_t *route;
    http_req_t *req;
    gw_user_t user;
} gw_call_t;

static gw_route_t **all_routes;
static size_t nall_routes;
static metric_t *m_rate_limited;
static metric_t *m_csrf_failed;

/* ---- small helpers ---- */

bool gw_cookie(const http_req_t *req, const char *name, char *out, size_t outlen)
{
    const char *h = http_req_header(req, "Cookie");
    if (h == NULL) {
        return false;
    }
    size_t nlen = strlen(name);
    const char *p = h;
    while (*p != '\0') {
        while (*p == ' ' || *p == ';') {
            p++;
        }
        const char *end = strchr(p, ';');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            size_t vlen = len - nlen - 1;
            if (vlen + 1 > outlen) {
                return false;
            }
            memcpy(out, p + nlen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        if (end == NULL) {
            break;
        }
        p = end + 1;
    }
    return false;
}

const char *gw_client_ip(const http_req_t *req)
{
    const char *peer = http_req_peer(req);
    return peer != NULL && peer[0] != '\0' ? peer : "unknown";
}

void gw_count_rate_limited(void)
{
    metric_add(m_rate_limited, 1);
}

void gw_reply_invalid(http_req_t *req, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_reply_error(req, 400, "invalid_request", "%s: %s", field, msg);
}

void gw_reply_not_found(http_req_t *req)
{
    http_reply_error(req, 404, "not_found", "no such resource");
}

void gw_reply_json_text(http_req_t *req, int status, const char *json)
{
    cJSON *doc = json != NULL ? cJSON_Parse(json) : NULL;
    if (doc == NULL) {
        http_reply_error(req, 500, "internal", "could not build the response");
        return;
    }
    http_reply_json(req, status, doc);
}

static void html_escape(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (const char *p = in; *p != '\0' && o + 7 < outlen; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '&':
            rep = "&amp;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            break;
        }
        if (rep != NULL) {
            size_t l = strlen(rep);
            memcpy(out + o, rep, l);
            o += l;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

void gw_reply_html(http_req_t *req, int status, const char *title, const char *message)
{
    gw_reply_html_code(req, status, NULL, title, message);
}

void gw_reply_html_code(http_req_t *req, int status, const char *code, const char *title,
                        const char *message)
{
    char t[256], m[1024], k[128], line[192] = "", page[2304];
    html_escape(title, t, sizeof(t));
    html_escape(message, m, sizeof(m));
    if (code != NULL) {
        html_escape(code, k, sizeof(k));
        snprintf(line, sizeof(line), "<p>Error code: <code>%s</code></p>\n", k);
    }
    int n = snprintf(page, sizeof(page),
                     "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<link rel=\"icon\" href=\"data:,\"><title>%s</title></head>\n"
                     "<body><h1>%s</h1>\n<p>%s</p>\n%s"
                     "<p><a href=\"/\">Back to Creator Automation</a></p></body></html>\n",
                     t, t, m, line);
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_data(req, status, "text/html; charset=utf-8", page,
                    n > 0 && (size_t)n < sizeof(page) ? (size_t)n : strlen(page));
}

bool gw_json_only_keys(http_req_t *req, const cJSON *obj, const char *const *allowed)
{
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, obj)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] != NULL; i++) {
            if (it->string != NULL && strcmp(it->string, allowed[i]) == 0) {
                ok = true;
                break;
            }
        }
        if (!ok) {
            char name[64];
            snprintf(name, sizeof(name), "%s", it->string != NULL ? it->string : "?");
            gw_reply_invalid(req, name, "is not a field of this request");
            return false;
        }
    }
    return true;
}

cJSON *gw_json_body(http_req_t *req, const char *const *allowed)
{
    cJSON *body = http_req_json(req);
    if (body == NULL || !gw_json_only_keys(req, body, allowed)) {
        return NULL;
    }
    return body;
}

bool gw_json_no_body(http_req_t *req)
{
    size_t len = 0;
    const char *raw = http_req_body(req, &len);
    if (raw == NULL || len == 0) {
        return true;
    }
    static const char *const none[] = {NULL};
    return gw_json_body(req, none) != NULL;
}

bool gw_json_string(http_req_t *req, const cJSON *obj, const char *field, size_t minlen,
                    size_t maxlen, const char **out)
{
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (v == NULL) {
        return true;
    }
    if (!cJSON_IsString(v) || v->valuestring == NULL) {
        gw_reply_invalid(req, field, "must be a string");
        return false;
    }
    size_t len = strlen(v->valuestring);
    if (len < minlen || len > maxlen) {
        gw_reply_invalid(req, field, "must be %zu to %zu characters long", minlen, maxlen);
        return false;
    }
    *out = v->valuestring;
    return true;
}

bool gw_json_bool(http_req_t *req, const cJSON *obj, const char *field, bool *present, bool *out)
{
    *present = false;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (v == NULL) {
        return true;
    }
    if (!cJSON_IsBool(v)) {
        gw_reply_invalid(req, field, "must be true or false");
        return false;
    }
    *present = true;
    *out = cJSON_IsTrue(v);
    return true;
}

/* ---- database ---- */

typedef struct {
    gw_t *gw;
    http_req_t *req;
    gw_query_cb cb;
    void *arg;
    void (*arg_free)(void *);
} gw_q_t;

static void on_query(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    gw_q_t *q = arg;
    if (res == NULL) {
        log_error("database: %s (SQLSTATE %s)", err != NULL ? err : "?",
                  sqlstate != NULL ? sqlstate : "");
        bool down = sqlstate == NULL || sqlstate[0] == '\0' || strncmp(sqlstate, "08", 2) == 0 ||
                    strncmp(sqlstate, "57", 2) == 0;
        if (down) {
            http_reply_header(q->req, "Retry-After", "1");
            http_reply_error(q->req, 503, "unavailable", "the database is not reachable");
        } else {
            http_reply_error(q->req, 500, "internal", "database error");
        }
        /* The callback does not run: the argument it would have freed is freed here. */
        if (q->arg_free != NULL && q->arg != NULL) {
            q->arg_free(q->arg);
        }
    } else {
        q->cb(q->gw, q->req, res, q->arg);
    }
    free(q);
}

void gw_query_ex(gw_t *gw, http_req_t *req, const char *user_id, const char *sql, int nparams,
                 const char *const *params, gw_query_cb cb, void *arg, void (*arg_free)(void *))
{
    gw_q_t *q = malloc(sizeof(*q));
    if (q == NULL) {
        if (arg_free != NULL && arg != NULL) {
            arg_free(arg);
        }
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    q->gw = gw;
    q->req = req;
    q->cb = cb;
    q->arg = arg;
    q->arg_free = arg_free;
    if (pg_pool_query(gw->pg, user_id, sql, nparams, params, on_query, q) != 0) {
        free(q);
        if (arg_free != NULL && arg != NULL) {
            arg_free(arg);
        }
        http_reply_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "the database queue is full");
    }
}

void gw_query(gw_t *gw, http_req_t *req, const char *user_id, const char *sql, int nparams,
              const char *const *params, gw_query_cb cb, void *arg)
{
    gw_query_ex(gw, req, user_id, sql, nparams, params, cb, arg, NULL);
}

static void on_audit(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    char *action = arg;
    if (res == NULL) {
        log_error("audit_log: cannot record %s: %s (SQLSTATE %s)", action, err ? err : "?",
                  sqlstate ? sqlstate : "");
    }
    free(action);
}

void gw_audit(gw_t *gw, const char *user_id, const char *action, const char *target,
              const char *details_json, const char *ip)
{
    const char *p[] = {user_id, action, target, details_json, ip};
    char *copy = strdup(action);
    if (copy == NULL) {
        return;
    }
    if (pg_pool_query(gw->pg, user_id,
                      "INSERT INTO audit_log (user_id, actor, action, target, details, ip) "
                      "VALUES ($1::uuid, 'user:' || $1, $2, $3, COALESCE($4::jsonb, '{}'::jsonb), "
                      "CASE WHEN $5 ~ '^[0-9a-fA-F:.]+$' THEN $5::inet END)",
                      5, p, on_audit, copy) != 0) {
        log_error("audit_log: queue full, %s not recorded", action);
        free(copy);
    }
}

/* ---- the route wrapper ---- */

static void call_free(void *data)
{
    gw_call_t *c = data;
    c->gw->in_flight--;
    free(c);
}

static bool state_changing(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0 || strcmp(method, "DELETE") == 0;
}

static bool origin_ok(const gw_t *gw, const http_req_t *req)
{
    const char *origin = http_req_header(req, "Origin");
    if (origin != NULL && strcmp(origin, "null") != 0) {
        return strcmp(origin, gw->public_origin) == 0;
    }
    const char *referer = http_req_header(req, "Referer");
    if (referer != NULL) {
        size_t n = strlen(gw->public_origin);
        return strncmp(referer, gw->public_origin, n) == 0 &&
               (referer[n] == '/' || referer[n] == '\0');
    }
    return false;
}

static bool csrf_ok(const gw_t *gw, const http_req_t *req, const gw_user_t *user)
{
    if (origin_ok(gw, req)) {
        return true;
    }
    const char *token = http_req_header(req, "X-CSRF-Token");
    if (token == NULL || !user->signed_in || user->csrf[0] == '\0') {
        return false;
    }
    size_t n = strlen(user->csrf);
    return strlen(token) == n && crypto_equal(token, user->csrf, n);
}

/* ---- CORS for FRONTEND_ORIGIN (docs/api-gateway.md "CORS") ---- */

/* The request's Origin when it is exactly one of FRONTEND_ORIGIN's, else NULL. */
static const char *frontend_origin(const gw_t *gw, const http_req_t *req)
{
    const char *origin = http_req_header(req, "Origin");
    if (origin == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < gw->nfrontend_origins; i++) {
        if (strcmp(gw->frontend_origins[i], origin) == 0) {
            return gw->frontend_origins[i];
        }
    }
    return NULL;
}

/* The headers of an actual (not preflight) response; none for another origin.
 * Vary: Origin whenever CORS is configured, so that a cache keeps them apart. */
static void cors_headers(const gw_t *gw, http_req_t *req)
{
    if (gw->nfrontend_origins == 0) {
        return;
    }
    http_reply_header(req, "Vary", "Origin");
    const char *origin = frontend_origin(gw, req);
    if (origin == NULL) {
        return;
    }
    http_reply_header(req, "Access-Control-Allow-Origin", origin);
    http_reply_header(req, "Access-Control-Allow-Credentials", "true");
    http_reply_header(req, "Access-Control-Expose-Headers", "Retry-After, Location, X-Request-Id");
}

/* OPTIONS /api/... and /auth/...: a listed origin's preflight gets 204 with the
 * path's methods and the headers the API reads; anything else is answered as
 * before CORS (405 with Allow, or 404). No session, no rate limit count. */
static void preflight(http_req_t *req, void *arg)
{
    const gw_t *gw = arg;
    char methods[128];
    size_t n = gw_allowed_methods(http_req_path(req), methods, sizeof(methods));
    const char *origin = frontend_origin(gw, req);
    if (gw->nfrontend_origins > 0) {
        http_reply_header(req, "Vary", "Origin");
    }
    if (n == 0) {
        http_reply_error(req, 404, "not_found", "no such resource");
        return;
    }
    if (origin == NULL || http_req_header(req, "Access-Control-Request-Method") == NULL) {
        http_reply_header(req, "Allow", methods);
        http_reply_error(req, 405, "method_not_allowed", "OPTIONS is not allowed here");
        return;
    }
    http_reply_header(req, "Access-Control-Allow-Origin", origin);
    http_reply_header(req, "Access-Control-Allow-Credentials", "true");
    http_reply_header(req, "Access-Control-Allow-Methods", methods);
    http_reply_header(req, "Access-Control-Allow-Headers",
                      "Accept, Content-Type, X-CSRF-Token, X-Request-Id");
    http_reply_header(req, "Access-Control-Max-Age", "600");
    http_reply_data(req, 204, "text/plain", "", 0);
}

static int routes_preflight(gw_t *gw)
{
    if (http_server_route(gw->http, "OPTIONS", "/api/{path*}", preflight, gw) != 0 ||
        http_server_route(gw->http, "OPTIONS", "/auth/{path*}", preflight, gw) != 0) {
        return -1;
    }
    return 0;
}

/* "scheme://host[:port]" with http or https, nothing after: an exact origin. */
static bool plausible_origin(const char *s)
{
    const char *rest = strncmp(s, "https://", 8) == 0  ? s + 8
                       : strncmp(s, "http://", 7) == 0 ? s + 7
                                                       : NULL;
    if (rest == NULL || rest[0] == '\0' || strlen(s) > 255) {
        return false;
    }
    for (const char *p = rest; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != ':' && *p != '[' &&
            *p != ']') {
            return false;
        }
    }
    return true;
}

/* A comma list from the environment (NAME): each entry trimmed of spaces,
 * empty ones skipped, appended to *items (strdup'd) and counted in *n. An
 * entry VALID (may be NULL) refuses is logged as "not <WHAT>" and fails the
 * list, as does running out of memory. Returns 0 or -1. */
static int split_comma_list(const char *name, const char *text, bool (*valid)(const char *),
                            const char *what, char ***items, size_t *n)
{
    if (text == NULL || text[0] == '\0') {
        return 0;
    }
    char *copy = strdup(text);
    if (copy == NULL) {
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') {
            tok++;
        }
        size_t tl = strlen(tok);
        while (tl > 0 && tok[tl - 1] == ' ') {
            tok[--tl] = '\0';
        }
        if (tl == 0) {
            continue;
        }
        if (valid != NULL && !valid(tok)) {
            log_error("%s: \"%s\" is not %s", name, tok, what);
            rc = -1;
            break;
        }
        char **grown = realloc(*items, (*n + 1) * sizeof(char *));
        char *dup = grown != NULL ? strdup(tok) : NULL;
        if (grown != NULL) {
            *items = grown;
        }
        if (dup == NULL) {
            rc = -1;
            break;
        }
        (*items)[(*n)++] = dup;
    }
    free(copy);
    return rc;
}

static bool is_admin_email(const gw_t *gw, const char *email)
{
    for (size_t i = 0; i < gw->nadmin_emails; i++) {
        if (strcasecmp(gw->admin_emails[i], email) == 0) {
            return true;
        }
    }
    return false;
}

static void copy_str(char *dst, size_t dstlen, const redisReply *r)
{
    dst[0] = '\0';
    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len < dstlen) {
        memcpy(dst, r->str, r->len);
        dst[r->len] = '\0';
    }
}

static void run_handler(gw_call_t *c)
{
    const gw_route_t *rt = c->route;
    http_req_t *req = c->req;
    if ((rt->flags & (GW_AUTH | GW_ADMIN)) != 0 && !c->user.signed_in) {
        http_reply_error(req, 401, "unauthorized", "sign in first");
        return;
    }
    if ((rt->flags & GW_NO_CSRF) == 0 && state_changing(http_req_method(req)) &&
        !csrf_ok(c->gw, req, &c->user)) {
        metric_add(m_csrf_failed, 1);
        http_reply_error(req, 403, "csrf_failed",
                         "cross-site request refused: send X-CSRF-Token (from GET /api/me) or "
                         "a same-origin Origin header");
        return;
    }
    if ((rt->flags & GW_ADMIN) != 0 && !c->user.is_admin) {
        http_reply_error(req, 403, "forbidden", "administrators only");
        return;
    }
    if (c->user.signed_in) {
        log_context_set("user_id", c->user.id);
    }
    rt->fn(c->gw, req, &c->user);
    log_context_set("user_id", NULL);
}

static bool needs_user(const gw_route_t *rt)
{
    return (rt->flags & (GW_AUTH | GW_ADMIN)) != 0;
}

/* The refusal of a session whose user is deactivated (403) or gone (401). */
static void reply_refused(http_req_t *req, bool exists)
{
    if (exists) {
        http_reply_error(req, 403, "account_disabled", "this account is deactivated");
    } else {
        http_reply_error(req, 401, "unauthorized", "sign in first");
    }
}

static void on_checked_cleared(redisReply *reply, const char *err, void *arg)
{
    (void)reply;
    (void)err;
    (void)arg;
}

/* One users.is_active check. Its own allocation: when the query fails,
 * gw_query_ex has replied (and the request, with its gw_call_t, may be gone)
 * before check_not_done runs. */
typedef struct {
    gw_t *gw;
    gw_call_t *call;
    char session_hash[2 * CRYPTO_SHA256_LEN + 1];
    bool user_exists;
} active_check_t;

/* The session is deleted: now the refusal (so that the next request, whatever
 * its order, finds no session). */
static void on_refused_session_deleted(redisReply *reply, const char *err, void *arg)
{
    active_check_t *ac = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        log_warn("session: cannot delete a refused session: %s", err != NULL ? err : reply->str);
    }
    reply_refused(ac->call->req, ac->user_exists);
    free(ac);
}

/* The user's row as the check reads it: "t"/"f" (is_active), none when the
 * user is gone. */
static void on_user_active(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    active_check_t *ac = arg;
    gw_call_t *c = ac->call;
    ac->user_exists = PQntuples(res) == 1;
    if (ac->user_exists && strcmp(PQgetvalue(res, 0, 0), "f") != 0) {
        free(ac);
        run_handler(c);
        return;
    }
    log_info("session: user %s is %s: session deleted", c->user.id,
             ac->user_exists ? "deactivated" : "gone");
    if (gw_session_delete(gw, c->user.id, c->user.session_hash, on_refused_session_deleted, ac) !=
        0) {
        log_warn("session: cannot delete the session of user %s (Redis down)", c->user.id);
        reply_refused(req, ac->user_exists);
        free(ac);
    }
}

/* The query did not answer (gw_query_ex replied 503): the check stamp is
 * cleared so that the next request checks again. */
static void check_not_done(void *arg)
{
    active_check_t *ac = arg;
    char key[128];
    snprintf(key, sizeof(key), "ca:session:%s", ac->session_hash);
    if (gw_redis_cmd(ac->gw->redis, on_checked_cleared, NULL, "HDEL %s checked_ms", key) != 0) {
        log_warn("session: cannot clear the check stamp (Redis down)");
    }
    free(ac);
}

static void on_session(redisReply *reply, const char *err, void *arg)
{
    gw_call_t *c = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 5) {
        log_error("session lookup failed: %s",
                  err != NULL ? err
                              : (reply != NULL && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                                   : "bad reply"));
        http_reply_header(c->req, "Retry-After", "1");
        http_reply_error(c->req, 503, "unavailable", "the session store is not reachable");
        return;
    }
    long long retry_ms =
        reply->element[0]->type == REDIS_REPLY_INTEGER ? reply->element[0]->integer : 0;
    if (retry_ms > 0) {
        char ra[32];
        snprintf(ra, sizeof(ra), "%lld", (retry_ms + 999) / 1000);
        metric_add(m_rate_limited, 1);
        http_reply_header(c->req, "Retry-After", ra);
        http_reply_error(c->req, 429, "rate_limited", "too many requests; retry in %s s", ra);
        return;
    }
    copy_str(c->user.id, sizeof(c->user.id), reply->element[1]);
    copy_str(c->user.csrf, sizeof(c->user.csrf), reply->element[2]);
    copy_str(c->user.email, sizeof(c->user.email), reply->element[3]);
    char check[4];
    copy_str(check, sizeof(check), reply->element[4]);
    c->user.signed_in = uuid_is_valid(c->user.id);
    if (!c->user.signed_in) {
        memset(&c->user, 0, sizeof(c->user));
        run_handler(c);
        return;
    }
    c->user.is_admin = is_admin_email(c->gw, c->user.email);
    if (strcmp(check, "1") == 0 && needs_user(c->route)) {
        /* users.is_active, read again (the deactivation is an UPDATE in the
         * database: the session store does not hear of it). */
        active_check_t *ac = calloc(1, sizeof(*ac));
        if (ac == NULL) {
            http_reply_error(c->req, 503, "unavailable", "out of memory");
            return;
        }
        ac->gw = c->gw;
        ac->call = c;
        snprintf(ac->session_hash, sizeof(ac->session_hash), "%s", c->user.session_hash);
        const char *p[] = {c->user.id};
        gw_query_ex(c->gw, c->req, c->user.id,
                    "SELECT COALESCE(is_active, TRUE) FROM users WHERE id = $1", 1, p,
                    on_user_active, ac, check_not_done);
        return;
    }
    run_handler(c);
}

/* A session id as we make them: base64url, 16..128 characters. */
static bool plausible_session_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 16 || n > 128) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '-' && ch != '_') {
            return false;
        }
    }
    return true;
}

void gw_session_key(const char *session_id, char *hash_hex, size_t hexlen)
{
    uint8_t h[CRYPTO_SHA256_LEN];
    crypto_sha256(session_id, strlen(session_id), h);
    if (hexlen >= 2 * CRYPTO_SHA256_LEN + 1) {
        crypto_hex(h, sizeof(h), hash_hex);
    }
}

void gw_cookie_header(const gw_t *gw, const char *name, const char *value, long max_age, char *out,
                      size_t outlen)
{
    snprintf(out, outlen, "%s=%s; Path=/; Max-Age=%ld; HttpOnly; SameSite=Lax%s", name, value,
             max_age, gw->secure_cookies ? "; Secure" : "");
}

int gw_session_delete(gw_t *gw, const char *user_id, const char *session_hash, gw_redis_cb cb,
                      void *arg)
{
    char key[128], set[128];
    snprintf(key, sizeof(key), "ca:session:%s", session_hash);
    snprintf(set, sizeof(set), GW_USER_SESSIONS_PREFIX "%s", user_id);
    const char *args[] = {key, set, session_hash};
    return gw_redis_eval(gw->redis, cb, arg, SESSION_DELETE_SCRIPT, 2, 3, args);
}

static void dispatch(http_req_t *req, void *arg)
{
    gw_route_t *rt = arg;
    gw_t *gw = rt->gw;
    cors_headers(gw, req);
    gw_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    c->gw = gw;
    c->route = rt;
    c->req = req;
    gw->in_flight++;
    http_req_set_data(req, c, call_free);

    char sid[160];
    bool have_sid = (rt->flags & GW_NO_SESSION) == 0 &&
                    gw_cookie(req, gw->session_cookie, sid, sizeof(sid)) &&
                    plausible_session_id(sid);
    char session_key[128] = "ca:session:-";
    char session_rl[128] = "ca:rl:session:-";
    if (have_sid) {
        gw_session_key(sid, c->user.session_hash, sizeof(c->user.session_hash));
        snprintf(session_key, sizeof(session_key), "ca:session:%s", c->user.session_hash);
        snprintf(session_rl, sizeof(session_rl), "ca:rl:session:%s", c->user.session_hash);
    }
    char ip_rl[128];
    snprintf(ip_rl, sizeof(ip_rl), "ca:rl:ip:%s", gw_client_ip(req));
    const char *args[] = {session_key,
                          ip_rl,
                          session_rl,
                          gw->rl_window_arg,
                          gw->rl_ip_arg,
                          gw->rl_session_arg,
                          gw->session_ttl_arg,
                          have_sid ? "1" : "0",
                          gw->session_max_age_arg,
                          gw->session_check_arg,
                          have_sid ? c->user.session_hash : "-"};
    if (gw_redis_eval(gw->redis, on_session, c, SESSION_SCRIPT, 3, 11, args) != 0) {
        http_reply_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "the session store is not reachable");
    }
}

int gw_route(gw_t *gw, const char *method, const char *pattern, unsigned flags, gw_handler_fn fn)
{
    gw_route_t *rt = calloc(1, sizeof(*rt));
    gw_route_t **grown = realloc(all_routes, (nall_routes + 1) * sizeof(*all_routes));
    if (rt == NULL || grown == NULL) {
        free(rt);
        if (grown != NULL) {
            all_routes = grown;
        }
        return -1;
    }
    all_routes = grown;
    rt->gw = gw;
    rt->method = strdup(method);
    rt->pattern = strdup(pattern);
    rt->flags = flags;
    rt->fn = fn;
    all_routes[nall_routes++] = rt;
    if (rt->method == NULL || rt->pattern == NULL) {
        return -1;
    }
    return http_server_route(gw->http, method, pattern, dispatch, rt);
}

/* True when a gw pattern ("/api/jobs/{id}") matches a path ("/api/jobs/x"). */
static bool pattern_matches(const char *pattern, const char *path)
{
    const char *p = pattern, *q = path;
    while (*p != '\0' && *q != '\0') {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            size_t seg = strcspn(q, "/");
            if (pe == NULL || seg == 0) {
                return false;
            }
            p = pe + 1;
            q += seg;
            continue;
        }
        if (*p != *q) {
            return false;
        }
        p++;
        q++;
    }
    return *p == '\0' && *q == '\0';
}

size_t gw_allowed_methods(const char *path, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < nall_routes; i++) {
        if (!pattern_matches(all_routes[i]->pattern, path) ||
            strstr(out, all_routes[i]->method) != NULL) {
            continue;
        }
        if (strlen(out) + strlen(all_routes[i]->method) + 3 < outlen) {
            if (out[0] != '\0') {
                strcat(out, ", ");
            }
            strcat(out, all_routes[i]->method);
            n++;
        }
    }
    return n;
}

/* ---- pool threads ---- */

typedef struct {
    gw_t *gw;
    google_client_t *gc;
    pg_conn_t *pg;
} thread_res_t;

static pthread_key_t res_key;
static pthread_once_t res_once = PTHREAD_ONCE_INIT;

static void res_free(void *p)
{
    thread_res_t *r = p;
    google_client_free(r->gc);
    pg_close(r->pg);
    free(r);
}

static void res_key_init(void)
{
    (void)pthread_key_create(&res_key, res_free);
}

static thread_res_t *thread_res(gw_t *gw)
{
    pthread_once(&res_once, res_key_init);
    thread_res_t *r = pthread_getspecific(res_key);
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL) {
            return NULL;
        }
        r->gw = gw;
        (void)pthread_setspecific(res_key, r);
    }
    return r;
}

google_client_t *gw_thread_google(gw_t *gw)
{
    thread_res_t *r = thread_res(gw);
    if (r == NULL) {
        return NULL;
    }
    if (r->gc == NULL) {
        r->gc = google_client_new(&gw->google);
    }
    return r->gc;
}

pg_conn_t *gw_thread_pg(gw_t *gw)
{
    thread_res_t *r = thread_res(gw);
    if (r == NULL) {
        return NULL;
    }
    if (r->pg == NULL) {
        char err[256];
        r->pg = pg_connect(gw->db_url, 5000, err, sizeof(err));
        if (r->pg == NULL) {
            log_warn("pool thread: PostgreSQL: %s", err);
        }
    }
    return r->pg;
}

drive_auth_status_t gw_drive_token(gw_t *gw, const char *user_id, bool force, char *token,
                                   size_t tokenlen, google_error_t *gerr)
{
    pg_conn_t *pg = gw_thread_pg(gw);
    google_client_t *gc = gw_thread_google(gw);
    if (pg == NULL) {
        return DRIVE_AUTH_DB;
    }
    if (gc == NULL) {
        return DRIVE_AUTH_TRANSIENT;
    }
    char err[256];
    const char *p[] = {user_id};
    if (pg_exec_cmd(pg, "SELECT set_config('app.user_id', $1, false)", 1, p, err, sizeof(err)) !=
        0) {
        log_warn("pool thread: cannot set the RLS user: %s", err);
        return DRIVE_AUTH_DB;
    }
    drive_auth_status_t st =
        drive_auth_access_token(pg, gc, gw->keys, user_id, force, token, tokenlen, gerr);
    if (pg_exec_cmd(pg, "SELECT set_config('app.user_id', '', false)", 0, NULL, err, sizeof(err)) !=
        0) {
        log_warn("pool thread: cannot clear the RLS user: %s", err);
    }
    return st;
}

int gw_offload(gw_t *gw, offload_work_fn work, offload_done_fn done, void *arg)
{
    return offload_run(gw->offload, work, done, arg);
}

/* ---- life cycle ---- */

static void origin_of(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    const char *host = p != NULL ? p + 3 : url;
    const char *slash = strchr(host, '/');
    size_t n = slash != NULL ? (size_t)(slash - url) : strlen(url);
    if (n >= outlen) {
        n = outlen - 1;
    }
    memcpy(out, url, n);
    out[n] = '\0';
    for (size_t i = 0; i < n && out[i] != ':'; i++) {
        out[i] = (char)tolower((unsigned char)out[i]);
    }
}

static void find_web_root(gw_t *gw)
{
    const char *cfg = config_get(gw->cfg, "WEB_ROOT");
    if (cfg != NULL && cfg[0] != '\0') {
        snprintf(gw->web_root, sizeof(gw->web_root), "%s", cfg);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            char candidate[PATH_MAX + 64];
            /* build/bin/api-gateway or build/san/bin/api-gateway in a checkout */
            const char *ups[] = {"/../../services/api-gateway/web",
                                 "/../../../services/api-gateway/web",
                                 "/../share/creator-automation/web"};
            for (size_t i = 0; i < sizeof(ups) / sizeof(ups[0]); i++) {
                snprintf(candidate, sizeof(candidate), "%s%s", exe, ups[i]);
                char real[PATH_MAX];
                if (realpath(candidate, real) != NULL) {
                    snprintf(gw->web_root, sizeof(gw->web_root), "%s", real);
                    return;
                }
            }
        }
    }
    snprintf(gw->web_root, sizeof(gw->web_root), "services/api-gateway/web");
}

gw_t *gw_new(daemon_t *d)
{
    gw_t *gw = calloc(1, sizeof(*gw));
    if (gw == NULL) {
        return NULL;
    }
    const config_t *cfg = daemon_config(d);
    gw->daemon = d;
    gw->base = daemon_base(d);
    gw->http = daemon_http(d);
    gw->cfg = cfg;
    gw->db_url = config_get(cfg, "DATABASE_URL");
    if (!m_rate_limited) {
        m_rate_limited = metrics_counter("ca_gateway_rate_limited_total",
                                         "Requests refused by a rate limit", NULL);
        m_csrf_failed = metrics_counter("ca_gateway_csrf_failed_total",
                                        "State-changing requests refused by the CSRF check", NULL);
    }

    const char *pub = config_get(cfg, "PUBLIC_URL");
    snprintf(gw->public_url, sizeof(gw->public_url), "%s", pub);
    size_t pl = strlen(gw->public_url);
    while (pl > 0 && gw->public_url[pl - 1] == '/') {
        gw->public_url[--pl] = '\0';
    }
    origin_of(gw->public_url, gw->public_origin, sizeof(gw->public_origin));
    gw->secure_cookies = strncasecmp(gw->public_url, "https://", 8) == 0;
    gw->session_cookie = gw->secure_cookies ? GW_SESSION_COOKIE_HOST : GW_SESSION_COOKIE;
    gw->oauth_cookie = gw->secure_cookies ? GW_OAUTH_COOKIE_HOST : GW_OAUTH_COOKIE;
    snprintf(gw->redirect_uri, sizeof(gw->redirect_uri), "%s/auth/google/callback", gw->public_url);

    if (split_comma_list("ADMIN_EMAILS", config_get(cfg, "ADMIN_EMAILS"), NULL, NULL,
                         &gw->admin_emails, &gw->nadmin_emails) != 0 ||
        split_comma_list("FRONTEND_ORIGIN", config_get(cfg, "FRONTEND_ORIGIN"), plausible_origin,
                         "an origin (scheme://host[:port])", &gw->frontend_origins,
                         &gw->nfrontend_origins) != 0) {
        gw_free(gw);
        return NULL;
    }
    gw->rl_per_minute_ip = config_get_int(cfg, "RATE_LIMIT_PER_MINUTE_IP");
    gw->rl_per_minute_session = config_get_int(cfg, "RATE_LIMIT_PER_MINUTE_SESSION");
    gw->session_ttl_s = config_get_int(cfg, "SESSION_TTL_SECONDS");
    snprintf(gw->rl_window_arg, sizeof(gw->rl_window_arg), "%d", GW_RATE_WINDOW_MS);
    snprintf(gw->rl_ip_arg, sizeof(gw->rl_ip_arg), "%ld", gw->rl_per_minute_ip);
    snprintf(gw->rl_session_arg, sizeof(gw->rl_session_arg), "%ld", gw->rl_per_minute_session);
    gw->rl_per_minute_login = config_get_int(cfg, "RATE_LIMIT_PER_MINUTE_LOGIN");
    snprintf(gw->rl_login_arg, sizeof(gw->rl_login_arg), "%ld", gw->rl_per_minute_login);
    gw->session_max_per_user = config_get_int(cfg, "SESSION_MAX_PER_USER");
    snprintf(gw->session_max_per_user_arg, sizeof(gw->session_max_per_user_arg), "%ld",
             gw->session_max_per_user);
    snprintf(gw->session_ttl_arg, sizeof(gw->session_ttl_arg), "%ld", gw->session_ttl_s * 1000);
    gw->session_max_age_s = config_get_int(cfg, "SESSION_MAX_AGE_SECONDS");
    gw->session_check_s = config_get_int(cfg, "SESSION_RECHECK_SECONDS");
    snprintf(gw->session_max_age_arg, sizeof(gw->session_max_age_arg), "%ld",
             gw->session_max_age_s * 1000);
    snprintf(gw->session_check_arg, sizeof(gw->session_check_arg), "%ld",
             gw->session_check_s * 1000);
    snprintf(gw->export_max_arg, sizeof(gw->export_max_arg), "%ld",
             config_get_int(cfg, "EXPORT_MAX_ROWS"));
    gw->presets_max = config_get_int(cfg, "PRESETS_MAX_PER_USER");
    snprintf(gw->presets_max_arg, sizeof(gw->presets_max_arg), "%ld", gw->presets_max);

    char err[256];
    gw->keys = crypto_keyring_new(config_get(cfg, "ENCRYPTION_KEY"),
                                  config_get(cfg, "ENCRYPTION_KEYS_OLD"), err, sizeof(err));
    if (gw->keys == NULL) {
        log_error("ENCRYPTION_KEY: %s", err);
        gw_free(gw);
        return NULL;
    }
    gw->google.client_id = config_get(cfg, "GOOGLE_CLIENT_ID");
    gw->google.client_secret = config_get(cfg, "GOOGLE_CLIENT_SECRET");
    gw->google.token_url = config_get(cfg, "GOOGLE_TOKEN_URL");
    gw->google.userinfo_url = config_get(cfg, "GOOGLE_USERINFO_URL");
    gw->google.revoke_url = config_get(cfg, "GOOGLE_REVOKE_URL");
    gw->google.drive_api_url = config_get(cfg, "DRIVE_API_URL");
    gw->google.timeout_ms = config_get_int(cfg, "GOOGLE_TIMEOUT_MS");
    gw->google.max_retries = -1;
    find_web_root(gw);

    gw->pg = pg_pool_new(gw->base, gw->db_url, (int)config_get_int(cfg, "PG_POOL_SIZE"));
    gw->redis = gw_redis_new(gw->base, config_get(cfg, "REDIS_URL"));
    gw->offload = offload_new(gw->base, (int)config_get_int(cfg, "GOOGLE_THREADS"));
    if (gw->pg == NULL || gw->redis == NULL || gw->offload == NULL) {
        log_error("cannot start the database pool, Redis or the thread pool");
        gw_free(gw);
        return NULL;
    }
    return gw;
}

int gw_register_routes(gw_t *gw)
{
    int (*const files[])(gw_t *) = {
        gw_routes_auth,
        gw_routes_me,
        gw_routes_jobs,
        gw_routes_drive,
        /* routes added by other route files go here, before the static files */
        gw_routes_presets,
        gw_routes_admin,
        gw_routes_billing,
        gw_routes_account,
        gw_routes_notices,
        gw_routes_previews,
        routes_preflight,
        gw_routes_static,
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (files[i](gw) != 0) {
            return -1;
        }
    }
    return 0;
}

bool gw_idle(const gw_t *gw)
{
    return gw->in_flight == 0 && offload_pending(gw->offload) == 0;
}

void gw_free(gw_t *gw)
{
    if (gw == NULL) {
        return;
    }
    offload_free(gw->offload); /* runs outstanding done callbacks (they may query) */
    gw_redis_free(gw->redis);
    pg_pool_free(gw->pg);
    crypto_keyring_free(gw->keys);
    for (size_t i = 0; i < gw->nadmin_emails; i++) {
        free(gw->admin_emails[i]);
    }
    free(gw->admin_emails);
    for (size_t i = 0; i < gw->nfrontend_origins; i++) {
        free(gw->frontend_origins[i]);
    }
    free(gw->frontend_origins);
    for (size_t i = 0; i < nall_routes; i++) {
        free(all_routes[i]->method);
        free(all_routes[i]->pattern);
        free(all_routes[i]);
    }
    free(all_routes);
    all_routes = NULL;
    nall_routes = 0;
    free(gw);
}
