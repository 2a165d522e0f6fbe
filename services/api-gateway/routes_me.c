/*
 * routes_me — the signed-in user's profile and usage.
 *
 *   GET   /api/me      profile, preferences, folders, tier, csrf_token, is_admin
 *   PATCH /api/me      {"default_preset"?, "email_notifications"?, "share_outputs"?,
 *                       "email_opt_out"?: ["usage"|"quota_waiting"|"drive"|"payment"|"jobs"]}
 *                      (email_opt_out replaces the whole set; email_notifications
 *                      stays the master switch: off, no e-mail of any kind)
 *   GET   /api/usage   the current period's usage against the plan
 *   GET   /api/usage/history   the last 12 periods, newest first
 */
#include "gateway.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char ME_SQL[] =
    "SELECT json_build_object("
    " 'id', u.id, 'email', u.email, 'name', u.name, 'avatar_url', u.avatar_url,"
    " 'default_preset', u.default_preset, 'email_notifications', u.email_notifications,"
    " 'share_outputs', u.share_outputs, 'email_opt_out', to_json(u.email_opt_out),"
    " 'watched_folder_id', u.watched_folder_id, 'output_folder_id', u.output_folder_id,"
    " 'drive_connected', u.drive_connected,"
    " 'drive_disconnected_reason', CASE WHEN NOT u.drive_connected"
    "   THEN u.drive_disconnected_reason END,"
    " 'drive_disconnected_at', CASE WHEN NOT u.drive_connected THEN " GW_SQL_TS(
        "u.drive_disconnected_at") " END,"
                                   " 'tier', COALESCE(CASE WHEN s.status IN ('active', 'trialing', 'past_due') THEN s.tier END,"
                                   "                  'free'),"
                                   " 'subscription_status', s.status,"
                                   " 'created_at', " GW_SQL_TS(
                                       "u.created_at") ","
                                                       " 'last_login_at', " GW_SQL_TS(
                                                           "u.last_login_at") ")::text"
                                                                              " FROM users u LEFT JOIN subscriptions s ON s.user_id = u.id"
                                                                              " WHERE u.id = $1";

typedef struct {
    char csrf[64];
    bool is_admin;
} me_extra_t;

static void on_me(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    me_extra_t *x = arg;
    if (PQntuples(res) != 1) {
        free(x);
        http_reply_error(req, 401, "unauthorized", "sign in first");
        return;
    }
    cJSON *doc = cJSON_Parse(PQgetvalue(res, 0, 0));
    if (doc == NULL) {
        free(x);
        http_reply_error(req, 500, "internal", "could not build the response");
        return;
    }
    cJSON_AddStringToObject(doc, "csrf_token", x->csrf);
    cJSON_AddBoolToObject(doc, "is_admin", x->is_admin);
    free(x);
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 200, doc);
}

static void send_me(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    me_extra_t *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    snprintf(x->csrf, sizeof(x->csrf), "%s", user->csrf);
    x->is_admin = user->is_admin;
    const char *p[] = {user->id};
    gw_query_ex(gw, req, user->id, ME_SQL, 1, p, on_me, x, free);
}

static void get_me(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    send_me(gw, req, user);
}

typedef struct {
    me_extra_t extra;
    char user_id[GW_UUID_LEN + 1];
    char ip[64];
    char *details; /* the fields changed, as JSON (settings.update audit row) */
} patch_t;

static void patch_free(void *arg)
{
    patch_t *pt = arg;
    if (pt != NULL) {
        cJSON_free(pt->details);
        free(pt);
    }
}

static void on_patched(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    patch_t *pt = arg;
    if (PQntuples(res) != 1) {
        patch_free(pt);
        gw_reply_invalid(req, "default_preset",
                         "no active preset of that name that you may use (system, your own or "
                         "public)");
        return;
    }
    char target[64];
    snprintf(target, sizeof(target), "user:%s", pt->user_id);
    gw_audit(gw, pt->user_id, "settings.update", target, pt->details, pt->ip);
    me_extra_t *x = malloc(sizeof(*x));
    if (x == NULL) {
        patch_free(pt);
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    *x = pt->extra;
    const char *p[] = {pt->user_id};
    gw_query_ex(gw, req, pt->user_id, ME_SQL, 1, p, on_me, x, free);
    patch_free(pt);
}

/* The e-mail kinds a user may opt out of (users.email_opt_out's CHECK). */
static const char *const OPT_OUT_KINDS[] = {"usage",   "quota_waiting", "drive",
                                            "payment", "jobs",          NULL};

/* Reads "email_opt_out": absent → *present false; an array of known kinds →
 * out gets a PostgreSQL array literal ("{usage,drive}"); else 400. */
static bool read_opt_out(http_req_t *req, const cJSON *body, bool *present, char *out,
                         size_t outlen)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(body, "email_opt_out");
    *present = a != NULL;
    if (a == NULL) {
        return true;
    }
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > 10) {
        gw_reply_invalid(req, "email_opt_out",
                         "must be an array of usage, quota_waiting, drive, payment, jobs");
        return false;
    }
    size_t used = 0;
    out[used++] = '{';
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, a)
    {
        bool known = false;
        for (size_t k = 0; cJSON_IsString(it) && OPT_OUT_KINDS[k] != NULL; k++) {
            known = known || strcmp(it->valuestring, OPT_OUT_KINDS[k]) == 0;
        }
        if (!known) {
            gw_reply_invalid(req, "email_opt_out",
                             "unknown e-mail kind: use usage, quota_waiting, drive, payment, jobs");
            return false;
        }
        int n = snprintf(out + used, outlen - used, "%s%s", i++ > 0 ? "," : "", it->valuestring);
        if (n < 0 || (size_t)n >= outlen - used) {
            gw_reply_invalid(req, "email_opt_out", "too long");
            return false;
        }
        used += (size_t)n;
    }
    if (used + 2 > outlen) {
        gw_reply_invalid(req, "email_opt_out", "too long");
        return false;
    }
    out[used++] = '}';
    out[used] = '\0';
    return true;
}

static void patch_me(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    cJSON *body = http_req_json(req);
    if (body == NULL) {
        return;
    }
    if (cJSON_GetObjectItemCaseSensitive(body, "watched_folder_id") != NULL ||
        cJSON_GetObjectItemCaseSensitive(body, "output_folder_id") != NULL) {
        gw_reply_invalid(req,
                         cJSON_GetObjectItemCaseSensitive(body, "watched_folder_id") != NULL
                             ? "watched_folder_id"
                             : "output_folder_id",
                         "folders change through PUT /api/watch");
        return;
    }
    static const char *const allowed[] = {"default_preset", "email_notifications", "share_outputs",
                                          "email_opt_out", NULL};
    if (!gw_json_only_keys(req, body, allowed)) {
        return;
    }
    const char *preset = NULL;
    const char *share = NULL;
    bool notif_present = false, notif = false;
    if (!gw_json_string(req, body, "default_preset", 1, 50, &preset) ||
        !gw_json_bool(req, body, "email_notifications", &notif_present, &notif) ||
        !gw_json_string(req, body, "share_outputs", 1, 16, &share)) {
        return;
    }
    if (share != NULL && strcmp(share, "link") != 0 && strcmp(share, "private") != 0) {
        gw_reply_invalid(req, "share_outputs", "must be \"link\" or \"private\"");
        return;
    }
    bool opt_present = false;
    char opt_out[160];
    if (!read_opt_out(req, body, &opt_present, opt_out, sizeof(opt_out))) {
        return;
    }
    patch_t *pt = calloc(1, sizeof(*pt));
    if (pt == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    snprintf(pt->extra.csrf, sizeof(pt->extra.csrf), "%s", user->csrf);
    pt->extra.is_admin = user->is_admin;
    snprintf(pt->user_id, sizeof(pt->user_id), "%s", user->id);
    snprintf(pt->ip, sizeof(pt->ip), "%s", gw_client_ip(req));
    /* The audit row names the fields sent, with their new values (none is secret). */
    cJSON *det = cJSON_CreateObject();
    if (det == NULL ||
        (preset != NULL && cJSON_AddStringToObject(det, "default_preset", preset) == NULL) ||
        (notif_present && cJSON_AddBoolToObject(det, "email_notifications", notif) == NULL) ||
        (share != NULL && cJSON_AddStringToObject(det, "share_outputs", share) == NULL) ||
        (opt_present && cJSON_AddItemToObject(
                            det, "email_opt_out",
                            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(body, "email_opt_out"),
                                            true)) == 0) ||
        (pt->details = cJSON_PrintUnformatted(det)) == NULL) {
        cJSON_Delete(det);
        patch_free(pt);
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    cJSON_Delete(det);
    const char *p[] = {user->id, preset, notif_present ? (notif ? "true" : "false") : NULL, share,
                       opt_present ? opt_out : NULL};
    gw_query_ex(gw, req, user->id,
                "UPDATE users SET default_preset = COALESCE($2, default_preset),"
                " email_notifications = COALESCE($3::boolean, email_notifications),"
                " share_outputs = COALESCE($4, share_outputs),"
                " email_opt_out = CASE WHEN $5::text[] IS NULL THEN email_opt_out"
                "   ELSE ARRAY(SELECT DISTINCT k FROM unnest($5::text[]) k ORDER BY k) END"
                " WHERE id = $1"
                "   AND ($2::text IS NULL OR EXISTS ("
                "     SELECT 1 FROM presets p WHERE p.name = $2 AND COALESCE(p.is_active, TRUE)"
                "        AND (p.created_by_user_id IS NULL OR p.created_by_user_id = $1"
                "             OR COALESCE(p.is_public, FALSE))))"
                /* Adopting someone else's public preset counts one download
                 * (once per user; presets_count_adoption decides). */
                " RETURNING id, CASE WHEN $2::text IS NOT NULL"
                "   THEN presets_count_adoption($1::uuid, $2) END",
                5, p, on_patched, pt, patch_free);
}

/* The plan in force and the period as billing_reserve_usage computes them
 * (period_end: when the next period starts: a paid plan's Stripe period end,
 * else the first of next month, 00:00 UTC);
 * waiting_for_quota: the user's jobs waiting for the plan to have room
 * (sql/job-worker/105; idx_jobs_quota_waiting). */
static const char USAGE_SQL[] =
    "WITH s AS (SELECT * FROM subscriptions WHERE user_id = $1),"
    " plan AS ("
    "  SELECT CASE WHEN s.status IN ('active', 'trialing', 'past_due') THEN s.tier"
    "              ELSE 'free' END AS tier,"
    "         CASE WHEN s.status IN ('active', 'trialing', 'past_due') THEN s.monthly_limit"
    "              ELSE 10 END AS monthly_limit,"
    "         CASE WHEN s.tier <> 'free' AND s.status IN ('active', 'trialing', 'past_due')"
    "                   AND s.current_period_start <= timezone('UTC', now())"
    "                   AND timezone('UTC', now()) < s.current_period_end"
    "              THEN s.current_period_start::date"
    "              ELSE date_trunc('month', timezone('UTC', now()))::date END AS month,"
    "         CASE WHEN s.tier <> 'free' AND s.status IN ('active', 'trialing', 'past_due')"
    "                   AND s.current_period_start <= timezone('UTC', now())"
    "                   AND timezone('UTC', now()) < s.current_period_end"
    "              THEN s.current_period_end"
    "              ELSE date_trunc('month', timezone('UTC', now())) + interval '1 month'"
    "         END AS period_end"
    "    FROM (SELECT 1) one LEFT JOIN s ON TRUE)"
    " SELECT json_build_object("
    "  'month', to_char(plan.month, 'YYYY-MM-DD'),"
    "  'period_end', " GW_SQL_TS(
        "plan.period_end") ","
                           "  'tier', plan.tier,"
                           "  'monthly_limit', plan.monthly_limit,"
                           "  'images_processed', COALESCE(u.images_processed, 0),"
                           "  'images_failed', COALESCE(u.images_failed, 0),"
                           "  'images_overage', COALESCE(u.images_overage, 0),"
                           "  'overage_charged_cents', COALESCE(u.overage_charged_cents, 0),"
                           "  'remaining', GREATEST(plan.monthly_limit - COALESCE(u.images_processed, 0), 0),"
                           "  'waiting_for_quota', (SELECT count(*) FROM jobs w"
                           "    WHERE w.user_id = $1 AND w.quota_waiting_since IS NOT NULL))::text"
                           " FROM plan LEFT JOIN usage_tracking u ON u.user_id = $1 AND u.month = plan.month";

static void on_usage(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    (void)arg;
    if (PQntuples(res) != 1) {
        http_reply_error(req, 500, "internal", "no usage row");
        return;
    }
    http_reply_header(req, "Cache-Control", "no-store");
    gw_reply_json_text(req, 200, PQgetvalue(res, 0, 0));
}

static void get_usage(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *p[] = {user->id};
    gw_query(gw, req, user->id, USAGE_SQL, 1, p, on_usage, NULL);
}

/* The last 12 periods with a usage row (a period is one usage_tracking row:
 * `month` is its first day, a calendar month for free plans or the Stripe
 * period's start for paid ones, as billing_reserve_usage keys it), newest
 * first, from idx_usage_user_month read backwards. A period in which nothing
 * was reserved has no row and is not listed. The tier and limit are the
 * row's snapshot of the plan in force during that period. */
static const char USAGE_HISTORY_SQL[] =
    "SELECT json_build_object('periods', COALESCE(json_agg(json_build_object("
    "  'month', to_char(h.month, 'YYYY-MM-DD'),"
    "  'tier', h.tier,"
    "  'monthly_limit', h.monthly_limit,"
    "  'images_processed', COALESCE(h.images_processed, 0),"
    "  'images_failed', COALESCE(h.images_failed, 0),"
    "  'images_overage', COALESCE(h.images_overage, 0),"
    "  'overage_charged_cents', COALESCE(h.overage_charged_cents, 0))"
    "  ORDER BY h.month DESC), '[]'::json))::text"
    " FROM (SELECT * FROM usage_tracking WHERE user_id = $1 ORDER BY month DESC LIMIT 12) h";

static void get_usage_history(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *p[] = {user->id};
    gw_query(gw, req, user->id, USAGE_HISTORY_SQL, 1, p, on_usage, NULL);
}

int gw_routes_me(gw_t *gw)
{
    if (gw_route(gw, "GET", "/api/me", GW_AUTH, get_me) != 0 ||
        gw_route(gw, "PATCH", "/api/me", GW_AUTH, patch_me) != 0 ||
        gw_route(gw, "GET", "/api/usage", GW_AUTH, get_usage) != 0 ||
        gw_route(gw, "GET", "/api/usage/history", GW_AUTH, get_usage_history) != 0) {
        return -1;
    }
    return 0;
}
