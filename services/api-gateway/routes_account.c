/*
 * routes_account — the account is the user's (issue 15).
 *
 *   GET    /api/me/export  a JSON download (Content-Disposition: attachment) of
 *                          everything held about the user; never a token
 *   DELETE /api/me         {"confirm": "<the account's e-mail>"} deletes the
 *                          account (200 {"deleted": true, "sessions_ended"})
 *
 * Export: one statement under the user's RLS (every table it reads has a
 * gateway policy showing the user's own rows), built as one JSON text by
 * PostgreSQL. Lists are capped at EXPORT_MAX_ROWS rows each, newest first;
 * "counts" gives each list's full size and "truncated" names the lists that
 * were cut. The notices and settings.email_opt_out are added around that
 * document (EXPORT_NOTICES_SQL). Left out on purpose: users.drive_access_token and
 * drive_refresh_token (sealed Google tokens), drive_polls' internal cursor
 * and lease columns. Stripe customer and subscription ids are included: they
 * are identifiers of the user's own records at Stripe, no credential.
 * Audit row: account.export.
 *
 * Deletion (docs/api-gateway.md, "Deleting the account") runs so that a
 * failure at any step loses nothing and the same request can be sent again:
 *   1. the confirmation is checked against users.email (case-insensitive);
 *   2. users_deletion_begin (sql/api-gateway/095): the row is marked
 *      deletion_requested_at, polling stops, queued/processing jobs are
 *      cancelled, account.deletion_requested is audited; it returns the
 *      sealed Google tokens and the Stripe subscription;
 *   3. on a pool thread: the Google grant is revoked (the refresh token, else
 *      the access token; "already revoked" counts as done), then the Stripe
 *      subscription is set to cancel at the period's end (idempotency key
 *      ca-del-<subscription>; an unknown or already canceled one counts as
 *      done). A failure answers 502 and changes nothing more;
 *   4. users_delete_account: the rows go (see the migration for what is kept);
 *   5. every session of the user ends (Redis), the cookie is cleared.
 */
#include "gateway.h"

#include "log.h"
#include "stripe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* $1 user id, $2 the cap of each list. The lists are newest first. */
#define LIST(name, from_where_order, item)                                                         \
    " '" name "', COALESCE((SELECT jsonb_agg(x.j) FROM (SELECT " item " AS j " from_where_order    \
    " LIMIT $2::int) x), '[]'::jsonb),"
#define COUNT(name, from_where) " '" name "', (SELECT count(*) " from_where "),"

/* The document; the statement below adds "truncated". */
#define EXPORT_DOC_SQL                                                                                                                                                            \
    "SELECT jsonb_build_object("                                                                                                                                                  \
    " 'export', jsonb_build_object('format', 'creator-automation-export', 'version', 1,"                                                                                          \
    "   'generated_at', to_char(timezone('UTC', now()), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"                                                                                       \
    "   'user_id', $1::uuid, 'timezone', 'UTC', 'max_rows_per_list', $2::int),"                                                                                                   \
    " 'profile', (SELECT jsonb_build_object('id', u.id, 'google_id', u.google_id,"                                                                                                \
    "   'email', u.email, 'name', u.name, 'avatar_url', u.avatar_url,"                                                                                                            \
    "   'created_at', u.created_at, 'updated_at', u.updated_at, 'last_login_at', u.last_login_at,"                                                                                \
    "   'is_active', u.is_active, 'deletion_requested_at', u.deletion_requested_at)"                                                                                              \
    "   FROM users u WHERE u.id = $1),"                                                                                                                                           \
    " 'settings', (SELECT jsonb_build_object('default_preset', u.default_preset,"                                                                                                 \
    "   'email_notifications', u.email_notifications, 'share_outputs', u.share_outputs)"                                                                                          \
    "   FROM users u WHERE u.id = $1),"                                                                                                                                           \
    " 'drive', (SELECT jsonb_build_object('connected', u.drive_connected,"                                                                                                        \
    "   'disconnected_reason', u.drive_disconnected_reason,"                                                                                                                      \
    "   'disconnected_at', u.drive_disconnected_at,"                                                                                                                              \
    "   'token_expires_at', u.drive_token_expires_at,"                                                                                                                            \
    "   'watched_folder_id', u.watched_folder_id, 'output_folder_id', u.output_folder_id)"                                                                                        \
    "   FROM users u WHERE u.id = $1),"                                                                                                                                           \
    " 'subscription', (SELECT to_jsonb(s) FROM subscriptions s WHERE s.user_id = $1)," LIST(                                                                                      \
        "watched_folders", "FROM drive_polls d WHERE d.user_id = $1 ORDER BY d.created_at DESC",                                                                                  \
        "to_jsonb(d) - 'changes_page_token' - 'lease_owner' - 'lease_expires_at'")                                                                                                \
        LIST(                                                                                                                                                                     \
            "presets",                                                                                                                                                            \
            "FROM presets p WHERE p.created_by_user_id = $1 ORDER BY p.created_at DESC",                                                                                          \
            "to_jsonb(p) || jsonb_build_object('versions', COALESCE((SELECT jsonb_agg(to_jsonb(v)"                                                                                \
            " ORDER BY v.version) FROM preset_versions v WHERE v.preset_id = p.id), '[]'::jsonb))")                                                                               \
            LIST(                                                                                                                                                                 \
                "preset_ratings",                                                                                                                                                 \
                "FROM preset_ratings r WHERE r.user_id = $1 ORDER BY r.updated_at DESC",                                                                                          \
                "to_jsonb(r)") LIST("preset_adoptions",                                                                                                                           \
                                    "FROM preset_adoptions a WHERE a.user_id = $1 ORDER BY a.created_at DESC",                                                                    \
                                    "to_jsonb(a)") LIST("jobs",                                                                                                                   \
                                                        "FROM jobs j WHERE j.user_id = $1 ORDER BY j.created_at DESC, j.id DESC",                                                 \
                                                        "to_jsonb(j)")                                                                                                            \
                LIST(                                                                                                                                                             \
                    "jobs_archived",                                                                                                                                              \
                    "FROM jobs_archive j WHERE j.user_id = $1 ORDER BY j.created_at DESC, j.id DESC",                                                                             \
                    "to_jsonb(j)") LIST("usage",                                                                                                                                  \
                                        "FROM usage_tracking t WHERE t.user_id = $1 ORDER BY t.month DESC",                                                                       \
                                        "to_jsonb(t)")                                                                                                                            \
                    LIST(                                                                                                                                                         \
                        "usage_reservations",                                                                                                                                     \
                        "FROM usage_reservations r WHERE r.user_id = $1 ORDER BY r.created_at DESC",                                                                              \
                        "to_jsonb(r)") LIST("overage_events",                                                                                                                     \
                                            "FROM meter_outbox m WHERE m.user_id = $1 ORDER BY m.id DESC",                                                                        \
                                            "to_jsonb(m)")                                                                                                                        \
                        LIST(                                                                                                                                                     \
                            "email_notices",                                                                                                                                      \
                            "FROM email_outbox e WHERE e.user_id = $1 ORDER BY e.created_at DESC",                                                                                \
                            "to_jsonb(e)")                                                                                                                                        \
                            LIST(                                                                                                                                                 \
                                "audit_log",                                                                                                                                      \
                                "FROM audit_log a WHERE a.user_id = $1 ORDER BY a.id DESC",                                                                                       \
                                "to_jsonb(a)") " 'counts', jsonb_build_object(" COUNT("watched_folders",                                                                          \
                                                                                      "FROM drive_polls d WHERE d.user_id = $1")                                                  \
                                COUNT("presets", "FROM presets p WHERE p.created_by_user_id = $1") COUNT(                                                                         \
                                    "preset_ratings",                                                                                                                             \
                                    "FROM preset_ratings r WHERE r.user_id = $1")                                                                                                 \
                                    COUNT("preset_adoptions",                                                                                                                     \
                                          "FROM preset_adoptions a WHERE a.user_id = $1")                                                                                         \
                                        COUNT("jobs", "FROM jobs j WHERE j.user_id = $1") COUNT(                                                                                  \
                                            "jobs_archived",                                                                                                                      \
                                            "FROM jobs_archive j WHERE j.user_id = $1")                                                                                           \
                                            COUNT("usage",                                                                                                                        \
                                                  "FROM usage_tracking t WHERE t.user_id = $1")                                                                                   \
                                                COUNT(                                                                                                                            \
                                                    "usage_reservations",                                                                                                         \
                                                    "FROM usage_reservations r WHERE r.user_id = $1")                                                                             \
                                                    COUNT(                                                                                                                        \
                                                        "overage_events",                                                                                                         \
                                                        "FROM meter_outbox m WHERE m.user_id = $1")                                                                               \
                                                        COUNT(                                                                                                                    \
                                                            "email_notices",                                                                                                      \
                                                            "FROM email_outbox e WHERE e.user_id = $1") " 'audit_log', (SELECT count(*) FROM audit_log a WHERE a.user_id = $1)))" \
                                                                                                        " AS doc"

/* The lists whose count is over the cap, as "truncated"; the text. */
/* The notices (issue 15) and the e-mail opt-outs, added to the document here
 * (a list, its count, settings.email_opt_out). */
#define EXPORT_NOTICES_SQL                                                                            \
    "SELECT jsonb_set(d.doc, '{settings,email_opt_out}',"                                             \
    "   to_jsonb((SELECT u.email_opt_out FROM users u WHERE u.id = $1)))"                             \
    " || jsonb_build_object(" LIST(                                                                   \
        "notices",                                                                                    \
        "FROM notices n WHERE n.user_id = $1"                                                         \
        " ORDER BY n.created_at DESC, n.id DESC",                                                     \
        "to_jsonb(n)") " 'counts', (d.doc -> 'counts') || jsonb_build_object("                        \
                       "   'notices', (SELECT count(*) FROM notices n WHERE n.user_id = $1))) AS doc" \
                       " FROM (" EXPORT_DOC_SQL ") d"

static const char EXPORT_SQL[] = "SELECT (e.doc || jsonb_build_object('truncated',"
                                 " COALESCE((SELECT jsonb_agg(c.k ORDER BY c.k)"
                                 " FROM jsonb_each(e.doc -> 'counts') c(k, v)"
                                 " WHERE (c.v)::bigint > $2::bigint), '[]'::jsonb)))::text"
                                 " FROM (" EXPORT_NOTICES_SQL ") e";

static void on_export(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)arg;
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        http_reply_error(req, 500, "internal", "could not build the export");
        return;
    }
    const char *doc = PQgetvalue(res, 0, 0);
    size_t len = (size_t)PQgetlength(res, 0, 0);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char disp[128];
    strftime(disp, sizeof(disp), "attachment; filename=\"creator-automation-export-%Y-%m-%d.json\"",
             &tm);
    http_reply_header(req, "Content-Disposition", disp);
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    http_reply_data(req, 200, "application/json", doc, len);
    (void)gw;
}

typedef struct {
    char user_id[GW_UUID_LEN + 1];
    char ip[64];
} export_t;

static void on_export_audited(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    export_t *x = arg;
    char details[64];
    snprintf(details, sizeof(details), "{\"bytes\":%d}",
             PQntuples(res) == 1 ? PQgetlength(res, 0, 0) : 0);
    char target[64];
    snprintf(target, sizeof(target), "user:%s", x->user_id);
    gw_audit(gw, x->user_id, "account.export", target, details, x->ip);
    free(x);
    on_export(gw, req, res, NULL);
}

static void get_export(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    export_t *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    snprintf(x->user_id, sizeof(x->user_id), "%s", user->id);
    snprintf(x->ip, sizeof(x->ip), "%s", gw_client_ip(req));
    const char *p[] = {user->id, gw->export_max_arg};
    gw_query_ex(gw, req, user->id, EXPORT_SQL, 2, p, on_export_audited, x, free);
}

/* ---- DELETE /api/me ---- */

typedef struct {
    gw_t *gw;
    http_req_t *req;
    char user_id[GW_UUID_LEN + 1];
    char ip[64];
    char confirm[GW_EMAIL_MAX + 1];
    char *access_enc;
    char *refresh_enc;
    char subscription[256];
    bool cancel_subscription;
    /* results of the pool thread */
    bool google_failed;
    bool google_transient;
    bool google_already;
    bool stripe_failed;
    bool stripe_transient;
    bool stripe_unconfigured;
    bool stripe_done_before;
} del_t;

static void del_free(void *arg)
{
    del_t *d = arg;
    if (d == NULL) {
        return;
    }
    crypto_free_secret(d->access_enc);
    crypto_free_secret(d->refresh_enc);
    free(d);
}

static void on_sessions_ended(redisReply *reply, const char *err, void *arg)
{
    del_t *d = arg;
    long long n = -1;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        /* The rows are gone: a session left behind is refused at its next
         * users.is_active check (SESSION_RECHECK_SECONDS; a deleted user → 401). */
        log_error("account deletion: sessions of %s not ended: %s", d->user_id,
                  err != NULL ? err : (reply != NULL && reply->str != NULL ? reply->str : "?"));
    } else {
        n = reply->integer;
    }
    char clear[256];
    gw_cookie_header(d->gw, d->gw->session_cookie, "", 0, clear, sizeof(clear));
    http_reply_header(d->req, "Set-Cookie", clear);
    http_reply_header(d->req, "Cache-Control", "no-store");
    cJSON *doc = cJSON_CreateObject();
    if (doc == NULL || cJSON_AddBoolToObject(doc, "deleted", true) == NULL ||
        (n >= 0 ? cJSON_AddNumberToObject(doc, "sessions_ended", (double)n)
                : cJSON_AddNullToObject(doc, "sessions_ended")) == NULL) {
        cJSON_Delete(doc);
        http_reply_error(d->req, 500, "internal", "could not build the response");
    } else {
        http_reply_json(d->req, 200, doc);
    }
    del_free(d);
}

static void on_deleted(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    del_t *d = arg;
    const char *outcome = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";
    if (strcmp(outcome, "ok") != 0 && strcmp(outcome, "not_found") != 0) {
        log_error("account deletion of %s: users_delete_account answered '%s'", d->user_id,
                  outcome);
        del_free(d);
        http_reply_error(req, 500, "internal", "the account could not be deleted; try again");
        return;
    }
    log_info("account %s deleted", d->user_id);
    gw_previews_forget_user(gw, d->user_id); /* the job thumbnails in Redis */
    if (gw_sessions_end_all(gw, d->user_id, on_sessions_ended, d) != 0) {
        on_sessions_ended(NULL, "session store not connected", d);
    }
}

/* On a pool thread: Google, then Stripe. */
static void del_work(void *arg)
{
    del_t *d = arg;
    const char *sealed = d->refresh_enc != NULL ? d->refresh_enc : d->access_enc;
    char *token =
        sealed != NULL ? crypto_envelope_open_bound(d->gw->keys, sealed, d->user_id) : NULL;
    if (token == NULL && d->access_enc != NULL && sealed != d->access_enc) {
        token = crypto_envelope_open_bound(d->gw->keys, d->access_enc, d->user_id);
    }
    if (token != NULL) {
        google_client_t *gc = gw_thread_google(d->gw);
        google_error_t gerr;
        google_status_t st = gc != NULL ? google_revoke_token(gc, token, &d->google_already, &gerr)
                                        : GOOGLE_ERR_NETWORK;
        crypto_free_secret(token);
        if (st != GOOGLE_OK) {
            d->google_failed = true;
            d->google_transient = gc == NULL || google_status_transient(st);
            log_error("account deletion of %s: Google revoke: %s (HTTP %ld): %s", d->user_id,
                      google_status_name(st), gc != NULL ? gerr.http_status : 0L,
                      gc != NULL ? gerr.message : "no client");
            return;
        }
    } else if (sealed != NULL) {
        /* A token that does not open (another key, corrupt) cannot be used
         * by us either: nothing to revoke from here. */
        log_warn("account deletion of %s: the stored Google token does not open; not revoked",
                 d->user_id);
    }
    if (!d->cancel_subscription || d->subscription[0] == '\0') {
        return;
    }
    stripe_client_t *sc = gw_thread_stripe(d->gw);
    if (sc == NULL) {
        d->stripe_failed = true;
        d->stripe_unconfigured = true;
        return;
    }
    char key[300];
    snprintf(key, sizeof(key), "ca-del-%s", d->subscription);
    stripe_error_t serr;
    stripe_status_t st =
        stripe_cancel_subscription_at_period_end(sc, d->subscription, key, NULL, &serr);
    if (st == STRIPE_ERR_NOT_FOUND) {
        d->stripe_done_before = true; /* Stripe no longer has it */
        return;
    }
    if (st == STRIPE_ERR_INVALID) {
        /* A canceled subscription refuses the update: look. */
        cJSON *sub = NULL;
        stripe_error_t rerr;
        if (stripe_retrieve_subscription(sc, d->subscription, &sub, &rerr) == STRIPE_OK) {
            const char *status =
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(sub, "status"));
            if (status != NULL && strcmp(status, "canceled") == 0) {
                d->stripe_done_before = true;
                cJSON_Delete(sub);
                return;
            }
        }
        cJSON_Delete(sub);
    }
    if (st != STRIPE_OK) {
        d->stripe_failed = true;
        d->stripe_transient = stripe_status_transient(st);
        log_error("account deletion of %s: Stripe cancel: %s (HTTP %ld): %s", d->user_id,
                  stripe_status_name(st), serr.http_status, serr.message);
    }
}

static void del_done(void *arg)
{
    del_t *d = arg;
    http_req_t *req = d->req;
    if (d->google_failed) {
        http_reply_header(req, "Retry-After", "5");
        http_reply_error(req, 502, d->google_transient ? "google_unavailable" : "google_error",
                         "Google did not revoke the app's access; nothing was deleted yet, "
                         "send the request again");
        del_free(d);
        return;
    }
    if (d->stripe_failed) {
        if (d->stripe_unconfigured) {
            http_reply_error(req, 503, "billing_unavailable",
                             "billing is not configured, so the subscription cannot be "
                             "cancelled; nothing was deleted yet");
        } else {
            http_reply_header(req, "Retry-After", "5");
            http_reply_error(req, 502, d->stripe_transient ? "stripe_unavailable" : "stripe_error",
                             "the payment provider did not cancel the subscription; nothing "
                             "was deleted yet, send the request again");
        }
        del_free(d);
        return;
    }
    cJSON *det = cJSON_CreateObject();
    const char *cancel = !d->cancel_subscription || d->subscription[0] == '\0' ? "none"
                         : d->stripe_done_before                               ? "already_ended"
                                                                               : "at_period_end";
    char *details = NULL;
    if (det != NULL && cJSON_AddBoolToObject(det, "google_revoked", !d->google_already) != NULL &&
        cJSON_AddBoolToObject(det, "google_already_revoked", d->google_already) != NULL &&
        cJSON_AddStringToObject(det, "subscription", d->subscription) != NULL &&
        cJSON_AddStringToObject(det, "subscription_cancel", cancel) != NULL) {
        details = cJSON_PrintUnformatted(det);
    }
    cJSON_Delete(det);
    if (details == NULL) {
        del_free(d);
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    const char *p[] = {d->user_id, d->ip, details};
    gw_query_ex(d->gw, req, d->user_id, "SELECT users_delete_account($1::uuid, $2, $3::jsonb)", 3,
                p, on_deleted, d, del_free);
    cJSON_free(details);
}

static char *dup_col(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? NULL : strdup(PQgetvalue(res, 0, col));
}

static void on_begun(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    del_t *d = arg;
    if (PQntuples(res) != 1) {
        del_free(d);
        http_reply_error(req, 401, "unauthorized", "sign in first");
        return;
    }
    d->access_enc = dup_col(res, 1);
    d->refresh_enc = dup_col(res, 2);
    if (!PQgetisnull(res, 0, 3)) {
        snprintf(d->subscription, sizeof(d->subscription), "%s", PQgetvalue(res, 0, 3));
    }
    d->cancel_subscription = !PQgetisnull(res, 0, 4) && strcmp(PQgetvalue(res, 0, 4), "t") == 0;
    if ((!PQgetisnull(res, 0, 1) && d->access_enc == NULL) ||
        (!PQgetisnull(res, 0, 2) && d->refresh_enc == NULL)) {
        del_free(d);
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    if (gw_offload(gw, del_work, del_done, d) != 0) {
        del_free(d);
        http_reply_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "too busy; try again");
    }
}

static void on_email(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    del_t *d = arg;
    if (PQntuples(res) != 1) {
        del_free(d);
        http_reply_error(req, 401, "unauthorized", "sign in first");
        return;
    }
    if (strcasecmp(PQgetvalue(res, 0, 0), d->confirm) != 0) {
        del_free(d);
        gw_reply_invalid(req, "confirm", "must be the account's e-mail address");
        return;
    }
    const char *p[] = {d->user_id, d->ip};
    gw_query_ex(gw, req, d->user_id,
                "SELECT email, access_enc, refresh_enc, stripe_subscription_id,"
                " cancel_subscription FROM users_deletion_begin($1::uuid, $2)",
                2, p, on_begun, d, del_free);
}

static void delete_me(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    static const char *const allowed[] = {"confirm", NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    const char *confirm = NULL;
    if (!gw_json_string(req, body, "confirm", 1, GW_EMAIL_MAX, &confirm)) {
        return;
    }
    if (confirm == NULL) {
        gw_reply_invalid(req, "confirm", "is required: the account's e-mail address");
        return;
    }
    del_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    d->gw = gw;
    d->req = req;
    snprintf(d->user_id, sizeof(d->user_id), "%s", user->id);
    snprintf(d->ip, sizeof(d->ip), "%s", gw_client_ip(req));
    snprintf(d->confirm, sizeof(d->confirm), "%s", confirm);
    const char *p[] = {user->id};
    gw_query_ex(gw, req, user->id, "SELECT email FROM users WHERE id = $1", 1, p, on_email, d,
                del_free);
}

int gw_routes_account(gw_t *gw)
{
    if (gw_route(gw, "GET", "/api/me/export", GW_AUTH, get_export) != 0 ||
        gw_route(gw, "DELETE", "/api/me", GW_AUTH, delete_me) != 0) {
        return -1;
    }
    return 0;
}
