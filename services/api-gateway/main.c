/*
 * api-gateway — Google sign-in, sessions, the REST API, the dashboard's static
 * files, Stripe Checkout/Portal sessions. Owns users, presets (+ ratings),
 * audit_log.
 *
 * main.c is the boot script: the configuration table, the service hooks and
 * the retention rule. Everything else is in gateway.h and the route files.
 */
#include "config_vars.h"
#include "crypto.h"
#include "daemon.h"
#include "drive_auth.h"
#include "gateway.h"
#include "google_oauth.h"
#include "log.h"

#include <stdio.h>

extern const migration_file_t api_gateway_migrations[];
extern const size_t api_gateway_migrations_count;

static const config_var_t gateway_vars[] = {
    CONFIG_VARS_ENCRYPTION,
    {"PUBLIC_URL", CFG_URL, "http://localhost:8080", false, false, 0, 0,
     "public base URL; OAuth redirect is PUBLIC_URL/auth/google/callback"},
    {"SESSION_SECRET", CFG_STRING, NULL, true, true, 0, 0, "secret for session and CSRF tokens"},
    CONFIG_VARS_GOOGLE_CLIENT,
    {"GOOGLE_AUTH_URL", CFG_URL, "https://accounts.google.com/o/oauth2/v2/auth", false, false, 0, 0,
     "OAuth authorization endpoint"},
    CONFIG_VAR_GOOGLE_TOKEN_URL("OAuth token endpoint"),
    {"GOOGLE_USERINFO_URL", CFG_URL, "https://openidconnect.googleapis.com/v1/userinfo", false,
     false, 0, 0, "OpenID userinfo endpoint"},
    {"GOOGLE_REVOKE_URL", CFG_URL, "https://oauth2.googleapis.com/revoke", false, false, 0, 0,
     "OAuth token revocation endpoint (DELETE /api/me)"},
    CONFIG_VAR_DRIVE_API_URL,
    {"DRIVE_SCOPE", CFG_STRING, GOOGLE_DRIVE_SCOPES, false, false, 0, 0,
     "Drive scopes asked for at sign-in (space-separated)"},
    {"STRIPE_SECRET_KEY", CFG_STRING, NULL, false, true, 0, 0, "Stripe API key (billing routes)"},
    {"STRIPE_API_URL", CFG_URL, "https://api.stripe.com", false, false, 0, 0,
     "Stripe API base URL"},
    {"STRIPE_PRICE_CREATOR", CFG_STRING, NULL, false, false, 0, 0, "price id of the creator tier"},
    {"STRIPE_PRICE_STUDIO", CFG_STRING, NULL, false, false, 0, 0, "price id of the studio tier"},
    {"ADMIN_EMAILS", CFG_LIST, "", false, false, 0, 0,
     "comma list of users who may read /api/admin/*"},
    {"FRONTEND_ORIGIN", CFG_LIST, "", false, false, 0, 0,
     "comma list of exact origins (scheme://host[:port]) of separately hosted frontends: CORS "
     "with credentials for them, nothing for others"},
    {"RATE_LIMIT_PER_MINUTE_IP", CFG_INT, "1200", false, false, 1, 100000000,
     "requests per minute per client address (/api/*, /auth/*)"},
    {"RATE_LIMIT_PER_MINUTE_SESSION", CFG_INT, "600", false, false, 1, 100000000,
     "requests per minute per session"},
    {"RATE_LIMIT_PER_MINUTE_LOGIN", CFG_INT, "20", false, false, 1, 100000000,
     "sign-ins started (GET /auth/google/login) per minute per client address"},
    {"SESSION_TTL_SECONDS", CFG_INT, "2592000", false, false, 60, 31536000,
     "idle lifetime of a session (sliding)"},
    {"SESSION_MAX_AGE_SECONDS", CFG_INT, "2592000", false, false, 1, 31536000,
     "absolute lifetime of a session from sign-in, however much it is used"},
    {"SESSION_RECHECK_SECONDS", CFG_INT, "60", false, false, 0, 86400,
     "how often a session re-reads users.is_active (0: every authenticated request)"},
    {"SESSION_MAX_PER_USER", CFG_INT, "20", false, false, 1, 100000,
     "sessions a user may hold; a sign-in over it ends the oldest ones"},
    {"PRESETS_MAX_PER_USER", CFG_INT, "100", false, false, 1, 100000,
     "presets a user may own (inactive ones count; POST /api/presets is 409 beyond)"},
    {"EXPORT_MAX_ROWS", CFG_INT, "50000", false, false, 1, 1000000,
     "rows per list in GET /api/me/export (newest first; a longer list is named in "
     "\"truncated\")"},
    {"PREVIEW_RATE_PER_MINUTE", CFG_INT, "30", false, false, 1, 100000,
     "previews (POST /api/previews) a user may ask for per minute"},
    {"PREVIEW_TTL_SECONDS", CFG_INT, "600", false, false, 30, 86400,
     "how long a preview and its images are kept in Redis"},
    {"PG_POOL_SIZE", CFG_INT, "4", false, false, 1, 64,
     "PostgreSQL connections of the pool (each pipelines up to 16 queries)"},
    {"GOOGLE_THREADS", CFG_INT, "4", false, false, 1, 64, "threads for blocking Google calls"},
    {"GOOGLE_TIMEOUT_MS", CFG_INT, "10000", false, false, 100, 120000,
     "timeout of one Google request attempt"},
    {"WEB_ROOT", CFG_STRING, NULL, false, false, 0, 0,
     "folder of the dashboard's files (default: the checkout's services/api-gateway/web, else "
     "<binary>/../share/creator-automation/web)"},
};

/* Retention: the audit log keeps one year (the seed schema names no rule for
 * the gateway's tables; a year covers an annual review). audit_log is under
 * row-level security, so the DELETE goes through audit_log_cleanup(), a
 * SECURITY DEFINER function that sees every row (050_rls.sql). */
static int gateway_cleanup(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen)
{
    (void)d;
    PGresult *res = pg_exec(pg, "SELECT audit_log_cleanup(365)", 0, NULL, err, errlen);
    if (res == NULL) {
        return -1;
    }
    log_info("cleanup: %s audit_log row(s) older than 365 days deleted", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* `rekey`: every stored Drive token re-sealed under ENCRYPTION_KEY, bound to
 * its user (drive_auth_rekey). Exit 1 when a token does not open with the
 * configured keys: its old key must stay in ENCRYPTION_KEYS_OLD. */
static int gateway_rekey(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen)
{
    crypto_keyring_t *keys = crypto_keyring_new(daemon_get(d, "ENCRYPTION_KEY"),
                                                daemon_get(d, "ENCRYPTION_KEYS_OLD"), err, errlen);
    if (keys == NULL) {
        return -1;
    }
    drive_auth_rekey_stats_t st;
    int rc = drive_auth_rekey(pg, keys, &st, err, errlen);
    crypto_keyring_free(keys);
    if (rc != 0) {
        return -1;
    }
    log_info("rekey: %ld user(s) with tokens, %ld token(s) re-sealed, %ld already current, %ld "
             "cannot be opened",
             st.users, st.resealed, st.current, st.unopenable);
    if (st.unopenable > 0) {
        snprintf(err, errlen,
                 "%ld token(s) do not open with ENCRYPTION_KEY or ENCRYPTION_KEYS_OLD (left as "
                 "they are): do not retire an old key yet",
                 st.unopenable);
        return -1;
    }
    return 0;
}

static int gateway_start(daemon_t *d)
{
    gw_t *gw = gw_new(d);
    if (gw == NULL) {
        return -1;
    }
    daemon_set_data(d, gw);
    if (gw_register_routes(gw) != 0) {
        log_error("cannot register the routes");
        return -1;
    }
    log_info("gateway: public URL %s, web root %s", gw->public_url, gw->web_root);
    return 0;
}

static bool gateway_drained(daemon_t *d)
{
    gw_t *gw = daemon_data(d);
    return gw == NULL || gw_idle(gw);
}

static void gateway_stop(daemon_t *d)
{
    gw_free(daemon_data(d));
    daemon_set_data(d, NULL);
}

static const service_t api_gateway_service = {
    .name = "api-gateway",
    .default_port = 8080,
    .vars = gateway_vars,
    .nvars = sizeof(gateway_vars) / sizeof(gateway_vars[0]),
    .migrations = api_gateway_migrations,
    .nmigrations = &api_gateway_migrations_count,
    .start = gateway_start,
    .drained = gateway_drained,
    .stop = gateway_stop,
    .cleanup = gateway_cleanup,
    .rekey = gateway_rekey,
};

int main(int argc, char **argv)
{
    return daemon_main(&api_gateway_service, argc, argv);
}
