/*
 * push — Drive push notification channels and POST /webhooks/drive (see
 * push.h and docs/drive-poller.md "Push notifications").
 */
#include "push.h"

#include "drive_auth.h"
#include "drive_push.h"
#include "log.h"
#include "metrics.h"
#include "now.h"
#include "poller_metrics.h"
#include "uuid.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NOW_UTC "timezone('UTC', now())"
/* A channel's renewal time: its end minus push_renew_margin_s of its life. */
#define RENEW_AT "(c.expires_at - LEAST((c.expires_at - c.created_at) / 5, interval '1 hour'))"
#define TOKEN_BYTES 32       /* the channel secret: 256 random bits */
#define TOKEN_MAX_LEN 256    /* Google's limit on a channel token */
#define NOTIFY_MAX_BODY 4096 /* Drive's notifications of changes carry no body */
#define STOP_BATCH 20        /* channels one sweep stops at most */
#define STOP_CLAIM_S "60"    /* a replica's claim on a channel it stops */
#define STOP_MAX_ATTEMPTS 5  /* then the channel is left to expire */
#define PENDING_MAX_S "300"  /* a registration that never finished */

static metric_t *m_notifications;
static metric_t *m_refused;
static metric_t *m_channels;
static metric_t *m_active;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_register(void)
{
    m_notifications =
        metrics_counter("ca_poller_push_notifications_total",
                        "Drive push notifications accepted, by resource state", "state");
    m_refused = metrics_counter("ca_poller_push_refused_total",
                                "Requests to /webhooks/drive refused, by reason", "reason");
    m_channels = metrics_counter("ca_poller_push_channels_total",
                                 "Push channel events: created, renewed, failed, stopped, "
                                 "stop_failed, abandoned, expired",
                                 "event");
    m_active = metrics_gauge("ca_poller_push_channels_active",
                             "Registered push channels not yet ended or replaced", "");
}

void push_metrics_init(void)
{
    pthread_once(&metrics_once, metrics_register);
}

/* ---- pure rules ---- */

bool push_url_ok(const char *url, char *why, size_t whylen)
{
    const char *host = NULL;
    bool https = false;
    if (url != NULL && strncasecmp(url, "https://", 8) == 0) {
        host = url + 8;
        https = true;
    } else if (url != NULL && strncasecmp(url, "http://", 7) == 0) {
        host = url + 7;
    }
    for (const char *p = url; p != NULL && *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            snprintf(why, whylen, "must not contain spaces or control characters");
            return false;
        }
    }
    if (host == NULL || host[0] == '\0' || host[0] == '/' || host[0] == ':' || strlen(url) > 1024) {
        snprintf(why, whylen, "must be an https:// URL (at most 1024 characters)");
        return false;
    }
    size_t authority = strcspn(host, "/?#");
    if (memchr(host, '@', authority) != NULL) {
        snprintf(why, whylen, "must not carry user information (user@host)");
        return false;
    }
    if (https) {
        return true;
    }
    static const char *const loopback[] = {"127.0.0.1", "localhost", "[::1]"};
    for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
        size_t n = strlen(loopback[i]);
        if (strncasecmp(host, loopback[i], n) == 0 &&
            (host[n] == '\0' || host[n] == ':' || host[n] == '/')) {
            return true;
        }
    }
    snprintf(why, whylen,
             "must be https (http only to a loopback host: 127.0.0.1, localhost, "
             "[::1])");
    return false;
}

int64_t push_renew_margin_s(int64_t lifetime_s)
{
    int64_t m = lifetime_s / 5;
    if (m > 3600) {
        m = 3600;
    }
    return m < 1 ? 1 : m;
}

/* A random (version 4) UUID into out[37]. -1 when no randomness. */
static int random_uuid(char out[37])
{
    unsigned char b[16];
    if (crypto_random(b, sizeof(b)) != 0) {
        return -1;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    char hex[33];
    crypto_hex(b, sizeof(b), hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
    return 0;
}

static void token_hash_hex(const char *token, char out[65])
{
    uint8_t h[32];
    crypto_sha256(token, strlen(token), h);
    crypto_hex(h, sizeof(h), out);
}

/* ---- registration and renewal (poll thread) ---- */

void push_channel_ensure(const push_settings_t *ps, pg_conn_t *pg, google_client_t *gc,
                         const crypto_keyring_t *keys, const char *owner, const lease_row_t *row,
                         const char *access_token, const char *page_token)
{
    (void)keys;
    if (ps == NULL || ps->url == NULL || page_token == NULL || page_token[0] == '\0') {
        return;
    }
    char err[256];
    const char *p_live[] = {row->id, ps->url};
    PGresult *res = pg_exec(pg,
                            "SELECT count(*) FILTER (WHERE c.address = $2 AND " RENEW_AT
                            " > " NOW_UTC "), count(*)"
                            "  FROM drive_push_channels c WHERE c.poll_id = $1::uuid"
                            "   AND c.stop_after IS NULL AND c.resource_id IS NOT NULL",
                            2, p_live, err, sizeof(err));
    if (res == NULL) {
        log_warn("push: could not read the channel: %s", err);
        return;
    }
    long live = atol(PQgetvalue(res, 0, 0));
    long any = atol(PQgetvalue(res, 0, 1));
    PQclear(res);
    if (live > 0) {
        return;
    }
    char id[37];
    char *token = crypto_random_token(TOKEN_BYTES);
    if (token == NULL || random_uuid(id) != 0) {
        crypto_free_secret(token);
        log_warn("push: no randomness for a channel");
        return;
    }
    char hash[65];
    token_hash_hex(token, hash);
    int64_t want_ms = now_wall_ms() + (int64_t)ps->channel_s * 1000;
    char want[32];
    snprintf(want, sizeof(want), "%lld", (long long)want_ms);
    /* The row first (resource_id NULL): a notification that beats the answer
     * of changes.watch (the sync message, or a change right away) finds it. */
    const char *p_ins[] = {id, row->id, hash, ps->url, want, owner};
    res = pg_exec(pg,
                  "INSERT INTO drive_push_channels (id, poll_id, user_id, token_sha256, address,"
                  "  expires_at)"
                  " SELECT $1::uuid, d.id, d.user_id, decode($3, 'hex'), $4,"
                  "   to_timestamp($5::double precision / 1000) AT TIME ZONE 'UTC'"
                  "  FROM drive_polls d WHERE d.id = $2::uuid AND d.lease_owner = $6 AND d.active"
                  " RETURNING id",
                  6, p_ins, err, sizeof(err));
    if (res == NULL || PQntuples(res) != 1) {
        if (res == NULL) {
            log_warn("push: could not record the channel: %s", err);
        }
        PQclear(res);
        crypto_free_secret(token);
        return;
    }
    PQclear(res);
    drive_watch_t w = {.id = id, .address = ps->url, .token = token, .expiration_ms = want_ms};
    drive_channel_t ch;
    google_error_t ge;
    google_status_t st = drive_changes_watch(gc, access_token, page_token, &w, &ch, &ge);
    poller_metrics_drive_call("changes.watch", st);
    crypto_free_secret(token);
    if (st != GOOGLE_OK) {
        const char *p_del[] = {id};
        if (pg_exec_cmd(pg, "DELETE FROM drive_push_channels WHERE id = $1::uuid", 1, p_del, err,
                        sizeof(err)) != 0) {
            log_warn("push: could not forget the failed channel: %s", err);
        }
        metric_add(m_channels, 1, "failed");
        log_warn("push: changes.watch failed (%s): %s; polling carries on", google_status_name(st),
                 ge.message);
        return;
    }
    char exp[32];
    snprintf(exp, sizeof(exp), "%lld",
             (long long)(ch.expiration_ms > 0 ? ch.expiration_ms : want_ms));
    const char *p_up[] = {id, ch.resource_id, exp, row->id};
    res = pg_exec(pg,
                  "WITH mine AS (UPDATE drive_push_channels SET resource_id = $2,"
                  "   expires_at = to_timestamp($3::double precision / 1000) AT TIME ZONE 'UTC'"
                  "  WHERE id = $1::uuid RETURNING id)"
                  " UPDATE drive_push_channels SET stop_after = " NOW_UTC ","
                  "   stop_claimed_until = " NOW_UTC " + interval '" STOP_CLAIM_S " seconds'"
                  "  WHERE poll_id = $4::uuid AND id <> $1::uuid AND stop_after IS NULL"
                  "    AND EXISTS (SELECT 1 FROM mine)"
                  " RETURNING id::text, resource_id",
                  4, p_up, err, sizeof(err));
    if (res == NULL) {
        log_warn("push: could not record the channel's resource: %s", err);
    } else {
        metric_add(m_channels, 1, any > 0 ? "renewed" : "created");
        log_info("push: channel %s %s, ends in %lld s", id, any > 0 ? "renewed" : "registered",
                 (long long)((atoll(exp) - now_wall_ms()) / 1000));
        /* The new one is live: stop the ones it replaces now (the stopper
         * takes over what fails here once this claim on them ends). */
        for (int i = 0; i < PQntuples(res); i++) {
            if (PQgetisnull(res, i, 1)) {
                continue;
            }
            const char *old_id = PQgetvalue(res, i, 0);
            google_error_t se;
            google_status_t sst =
                drive_channels_stop(gc, access_token, old_id, PQgetvalue(res, i, 1), &se);
            poller_metrics_drive_call("channels.stop", sst);
            if (sst == GOOGLE_OK) {
                const char *p_del[] = {old_id};
                if (pg_exec_cmd(pg, "DELETE FROM drive_push_channels WHERE id = $1::uuid", 1, p_del,
                                err, sizeof(err)) != 0) {
                    log_warn("push: could not delete channel %s: %s", old_id, err);
                }
                metric_add(m_channels, 1, "stopped");
                log_info("push: channel %s stopped (replaced)", old_id);
            } else {
                metric_add(m_channels, 1, "stop_failed");
                log_warn("push: channels.stop of %s failed (%s: %s); tried again later", old_id,
                         google_status_name(sst), se.message);
            }
        }
        PQclear(res);
    }
    drive_channel_free(&ch);
}

/* ---- stopping (maintenance task) ---- */

struct push_sweeper {
    google_config_t google;
    char *client_id, *client_secret, *token_url, *drive_api_url;
    google_client_t *gc;
    const crypto_keyring_t *keys;
    char *url;
    unsigned rounds;
    bool failing; /* the last claim failed (logged once per streak) */
};

static char *dup_opt(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

push_sweeper_t *push_sweeper_new(const google_config_t *google, const crypto_keyring_t *keys,
                                 const char *url)
{
    push_metrics_init();
    push_sweeper_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->google = *google;
    s->client_id = dup_opt(google->client_id);
    s->client_secret = dup_opt(google->client_secret);
    s->token_url = dup_opt(google->token_url);
    s->drive_api_url = dup_opt(google->drive_api_url);
    s->google.client_id = s->client_id;
    s->google.client_secret = s->client_secret;
    s->google.token_url = s->token_url;
    s->google.drive_api_url = s->drive_api_url;
    s->google.userinfo_url = NULL;
    s->google.revoke_url = NULL;
    s->google.drive_upload_url = NULL;
    s->keys = keys;
    s->url = dup_opt(url);
    return s;
}

void push_sweeper_free(push_sweeper_t *s)
{
    if (s == NULL) {
        return;
    }
    google_client_free(s->gc);
    free(s->client_id);
    free(s->client_secret);
    free(s->token_url);
    free(s->drive_api_url);
    free(s->url);
    free(s);
}

static void forget_channel(pg_conn_t *pg, const char *id, const char *event)
{
    char err[256];
    const char *p[] = {id};
    if (pg_exec_cmd(pg, "DELETE FROM drive_push_channels WHERE id = $1::uuid", 1, p, err,
                    sizeof(err)) != 0) {
        log_warn("push: could not delete channel %s: %s", id, err);
        return;
    }
    metric_add(m_channels, 1, event);
}

/* Stops one claimed channel at Google (with its user's token). */
static void stop_one(push_sweeper_t *s, pg_conn_t *pg, const char *id, const char *user_id,
                     const char *resource_id, int attempts)
{
    char token[4096];
    google_error_t ge;
    google_status_t st = GOOGLE_ERR_AUTH;
    for (int attempt = 0; attempt < 2 && st == GOOGLE_ERR_AUTH; attempt++) {
        drive_auth_status_t a = drive_auth_access_token(pg, s->gc, s->keys, user_id, attempt > 0,
                                                        token, sizeof(token), &ge);
        if (a == DRIVE_AUTH_REVOKED || a == DRIVE_AUTH_NO_TOKENS) {
            /* No grant left to stop it with: it ends at its expiration. */
            log_info("push: channel %s left to expire (no Drive access for its user)", id);
            forget_channel(pg, id, "abandoned");
            memset(token, 0, sizeof(token));
            return;
        }
        if (a != DRIVE_AUTH_OK) {
            st = GOOGLE_ERR_NETWORK;
            break;
        }
        st = drive_channels_stop(s->gc, token, id, resource_id, &ge);
        poller_metrics_drive_call("channels.stop", st);
    }
    memset(token, 0, sizeof(token));
    if (st == GOOGLE_OK) {
        log_info("push: channel %s stopped", id);
        forget_channel(pg, id, "stopped");
        return;
    }
    metric_add(m_channels, 1, "stop_failed");
    if (attempts >= STOP_MAX_ATTEMPTS || !google_status_transient(st)) {
        log_warn("push: channels.stop of %s failed (%s: %s); left to expire", id,
                 google_status_name(st), ge.message);
        forget_channel(pg, id, "abandoned");
    } else {
        log_warn("push: channels.stop of %s failed (%s: %s); tried again later", id,
                 google_status_name(st), ge.message);
    }
}

void push_sweep(push_sweeper_t *s, pg_conn_t *pg)
{
    if (s == NULL || pg == NULL) {
        return;
    }
    /* Push off: only channels left from when it was on; every 15th round. */
    if (s->url == NULL && s->rounds++ % 15 != 0) {
        return;
    }
    if (s->gc == NULL && (s->gc = google_client_new(&s->google)) == NULL) {
        return;
    }
    char err[256];
    char batch[16];
    snprintf(batch, sizeof(batch), "%d", STOP_BATCH);
    const char *params[] = {s->url != NULL ? s->url : "", batch};
    PGresult *res =
        pg_exec(pg,
                "WITH s AS ("
                "  SELECT c.id FROM drive_push_channels c"
                "    LEFT JOIN drive_polls d ON d.id = c.poll_id"
                "    LEFT JOIN users u ON u.id = c.user_id"
                "   WHERE (c.stop_claimed_until IS NULL OR c.stop_claimed_until < " NOW_UTC ")"
                "     AND (c.stop_after <= " NOW_UTC " OR c.expires_at <= " NOW_UTC
                "          OR c.address IS DISTINCT FROM NULLIF($1, '')"
                "          OR d.id IS NULL OR NOT d.active OR u.id IS NULL OR u.is_active IS FALSE"
                "          OR (c.resource_id IS NULL AND c.created_at < " NOW_UTC
                "              - interval '" PENDING_MAX_S " seconds'))"
                "   ORDER BY c.created_at LIMIT $2::int"
                "   FOR UPDATE OF c SKIP LOCKED)"
                " UPDATE drive_push_channels c SET stop_claimed_until = " NOW_UTC
                "   + interval '" STOP_CLAIM_S " seconds', stop_attempts = c.stop_attempts + 1"
                "  FROM s WHERE c.id = s.id"
                " RETURNING c.id, c.user_id, c.resource_id, (c.expires_at <= " NOW_UTC "),"
                "   c.stop_attempts",
                2, params, err, sizeof(err));
    if (res == NULL) {
        if (!s->failing) {
            log_warn("push: could not claim channels to stop: %s", err);
        }
        s->failing = true;
        return;
    }
    s->failing = false;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0);
        if (PQgetisnull(res, i, 2)) {
            forget_channel(pg, id, "abandoned");
        } else if (strcmp(PQgetvalue(res, i, 3), "t") == 0) {
            forget_channel(pg, id, "expired");
        } else {
            stop_one(s, pg, id, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                     atoi(PQgetvalue(res, i, 4)));
        }
    }
    PQclear(res);
    res = pg_exec(pg,
                  "SELECT count(*) FROM drive_push_channels WHERE stop_after IS NULL"
                  "  AND resource_id IS NOT NULL AND expires_at > " NOW_UTC,
                  0, NULL, err, sizeof(err));
    if (res != NULL) {
        metric_set(m_active, atof(PQgetvalue(res, 0, 0)));
        PQclear(res);
    }
}

/* ---- POST /webhooks/drive (loop thread) ---- */

struct push_webhook {
    pg_pool_t *pool;
    int rate;
    double tokens;
    int64_t refilled_ms;
    void (*nudge)(void *);
    void *nudge_arg;
};

typedef struct {
    push_webhook_t *w;
    http_req_t *req;
    char id[37];
    char hash[65];
    char poll_id[37];
} notify_t;

static void reply_ok(http_req_t *req, const char *state)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL) {
        cJSON_AddStringToObject(o, "status", state);
    }
    http_reply_json(req, 200, o);
}

static void refuse(http_req_t *req, int status, const char *code, const char *reason,
                   const char *message)
{
    metric_add(m_refused, 1, reason);
    http_reply_error(req, status, code, "%s", message);
}

static void on_marked(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    (void)sqlstate;
    notify_t *n = arg;
    if (res == NULL) {
        log_warn("webhook: could not mark the folder due: %s", err);
        refuse(n->req, 503, "unavailable", "unavailable", "try again");
        free(n);
        return;
    }
    metric_add(m_notifications, 1, "change");
    bool due = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    log_debug("webhook: change on channel %s%s", n->id, due ? ", folder due now" : "");
    reply_ok(n->req, "accepted");
    if (due && n->w->nudge != NULL) {
        n->w->nudge(n->w->nudge_arg);
    }
    free(n);
}

static void on_channel(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    (void)sqlstate;
    notify_t *n = arg;
    if (res == NULL) {
        log_warn("webhook: could not read the channel: %s", err);
        refuse(n->req, 503, "unavailable", "unavailable", "try again");
        free(n);
        return;
    }
    const char *peer = http_req_peer(n->req);
    if (PQntuples(res) != 1) {
        log_warn("webhook: unknown channel %s from %s", n->id, peer != NULL ? peer : "?");
        refuse(n->req, 403, "forbidden", "unknown_channel", "unknown channel or wrong token");
        free(n);
        return;
    }
    const char *stored = PQgetvalue(res, 0, 0);
    if (strlen(stored) != 64 || !crypto_equal(stored, n->hash, 64)) {
        log_warn("webhook: wrong token for channel %s from %s", n->id, peer != NULL ? peer : "?");
        refuse(n->req, 403, "forbidden", "bad_token", "unknown channel or wrong token");
        free(n);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        refuse(n->req, 403, "forbidden", "expired", "unknown channel or wrong token");
        free(n);
        return;
    }
    snprintf(n->poll_id, sizeof(n->poll_id), "%s", PQgetvalue(res, 0, 1));
    const char *params[] = {n->id, n->poll_id};
    if (pg_pool_query(n->w->pool, NULL,
                      "WITH d AS (UPDATE drive_polls SET push_requested_at = " NOW_UTC ","
                      "   next_poll_at = LEAST(next_poll_at, " NOW_UTC ")"
                      "  WHERE id = $2::uuid AND active RETURNING id),"
                      " c AS (UPDATE drive_push_channels SET notifications = notifications + 1,"
                      "   last_notification_at = " NOW_UTC " WHERE id = $1::uuid RETURNING id)"
                      " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM c)",
                      2, params, on_marked, n) != 0) {
        refuse(n->req, 503, "unavailable", "unavailable", "try again");
        free(n);
    }
}

static bool take_rate_token(push_webhook_t *w)
{
    int64_t now = now_mono_ms();
    w->tokens += (double)(now - w->refilled_ms) * w->rate / 1000.0;
    w->refilled_ms = now;
    if (w->tokens > w->rate) {
        w->tokens = w->rate;
    }
    if (w->tokens < 1.0) {
        return false;
    }
    w->tokens -= 1.0;
    return true;
}

static void on_notify(http_req_t *req, void *arg)
{
    push_webhook_t *w = arg;
    size_t len = 0;
    (void)http_req_body(req, &len);
    if (len > NOTIFY_MAX_BODY) {
        refuse(req, 413, "body_too_large", "too_large", "a notification has no body");
        return;
    }
    if (!take_rate_token(w)) {
        http_reply_header(req, "Retry-After", "1");
        refuse(req, 429, "rate_limited", "rate_limited", "too many notifications");
        return;
    }
    const char *id = http_req_header(req, "X-Goog-Channel-ID");
    const char *state = http_req_header(req, "X-Goog-Resource-State");
    const char *token = http_req_header(req, "X-Goog-Channel-Token");
    if (id == NULL || state == NULL || state[0] == '\0') {
        refuse(req, 400, "invalid_request", "bad_request",
               "X-Goog-Channel-ID and X-Goog-Resource-State are required");
        return;
    }
    if (!uuid_is_valid(id)) {
        refuse(req, 403, "forbidden", "unknown_channel", "unknown channel or wrong token");
        return;
    }
    if (strcmp(state, "sync") == 0) {
        /* The first message of every channel: nothing changed. */
        metric_add(m_notifications, 1, "sync");
        reply_ok(req, "ignored");
        return;
    }
    if (token == NULL || token[0] == '\0' || strlen(token) > TOKEN_MAX_LEN) {
        log_warn("webhook: missing or oversized token for channel %s", id);
        refuse(req, 403, "forbidden", "bad_token", "unknown channel or wrong token");
        return;
    }
    notify_t *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        refuse(req, 503, "unavailable", "unavailable", "out of memory");
        return;
    }
    n->w = w;
    n->req = req;
    snprintf(n->id, sizeof(n->id), "%s", id);
    token_hash_hex(token, n->hash);
    const char *params[] = {n->id};
    if (pg_pool_query(w->pool, NULL,
                      "SELECT encode(token_sha256, 'hex'), poll_id::text,"
                      "  expires_at > " NOW_UTC " FROM drive_push_channels WHERE id = $1::uuid",
                      1, params, on_channel, n) != 0) {
        refuse(req, 503, "unavailable", "unavailable", "try again");
        free(n);
    }
}

push_webhook_t *push_webhook_new(struct event_base *base, http_server_t *http,
                                 const char *database_url, int rate_per_s, void (*nudge)(void *),
                                 void *nudge_arg)
{
    push_metrics_init();
    push_webhook_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    w->rate = rate_per_s > 0 ? rate_per_s : 1;
    w->tokens = w->rate;
    w->refilled_ms = now_mono_ms();
    w->nudge = nudge;
    w->nudge_arg = nudge_arg;
    w->pool = pg_pool_new(base, database_url, 2);
    if (w->pool == NULL) {
        log_error("webhook: could not create the PostgreSQL pool");
        free(w);
        return NULL;
    }
    if (http_server_route(http, "POST", "/webhooks/drive", on_notify, w) != 0) {
        push_webhook_free(w);
        return NULL;
    }
    return w;
}

void push_webhook_free(push_webhook_t *w)
{
    if (w == NULL) {
        return;
    }
    pg_pool_free(w->pool);
    free(w);
}
