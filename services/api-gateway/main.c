/*
 * api-gateway — Google sign-in, sessions, the REST API, the dashboard's static
 * files, Stripe Checkout/Portal sessions. Owns users, presets (+ ratings),
 * audit_log.
 *
 * Foundation state: boots, migrates its slice, answers /healthz, /readyz and
 * /metrics, and applies its retention rule. The REST API is issue #7.
 */
#include "daemon.h"
#include "log.h"

#include <stdio.h>

extern const migration_file_t api_gateway_migrations[];
extern const size_t api_gateway_migrations_count;

static const config_var_t gateway_vars[] = {
    {"ENCRYPTION_KEY", CFG_KEY32, NULL, true, true, 0, 0, "base64 of 32 bytes: seals Drive tokens"},
    {"ENCRYPTION_KEYS_OLD", CFG_KEYLIST, "", false, true, 0, 0, "comma list of previous keys (rotation)"},
    {"PUBLIC_URL", CFG_URL, "http://localhost:8080", false, false, 0, 0,
     "public base URL; OAuth redirect is PUBLIC_URL/auth/google/callback"},
    {"SESSION_SECRET", CFG_STRING, NULL, true, true, 0, 0, "secret for session and CSRF tokens"},
    {"GOOGLE_CLIENT_ID", CFG_STRING, NULL, true, false, 0, 0, "OAuth client id"},
    {"GOOGLE_CLIENT_SECRET", CFG_STRING, NULL, true, true, 0, 0, "OAuth client secret"},
    {"GOOGLE_AUTH_URL", CFG_URL, "https://accounts.google.com/o/oauth2/v2/auth", false, false, 0, 0,
     "OAuth authorization endpoint"},
    {"GOOGLE_TOKEN_URL", CFG_URL, "https://oauth2.googleapis.com/token", false, false, 0, 0,
     "OAuth token endpoint"},
    {"GOOGLE_USERINFO_URL", CFG_URL, "https://openidconnect.googleapis.com/v1/userinfo", false,
     false, 0, 0, "OpenID userinfo endpoint"},
    {"DRIVE_API_URL", CFG_URL, "https://www.googleapis.com/drive/v3", false, false, 0, 0,
     "Drive v3 base URL"},
    {"DRIVE_SCOPE", CFG_STRING, "https://www.googleapis.com/auth/drive", false, false, 0, 0,
     "Drive scope asked for at sign-in"},
    {"STRIPE_SECRET_KEY", CFG_STRING, NULL, false, true, 0, 0, "Stripe API key (billing routes)"},
    {"STRIPE_API_URL", CFG_URL, "https://api.stripe.com", false, false, 0, 0, "Stripe API base URL"},
    {"STRIPE_PRICE_CREATOR", CFG_STRING, NULL, false, false, 0, 0, "price id of the creator tier"},
    {"STRIPE_PRICE_STUDIO", CFG_STRING, NULL, false, false, 0, 0, "price id of the studio tier"},
    {"ADMIN_EMAILS", CFG_LIST, "", false, false, 0, 0, "comma list of users who may read /api/admin/*"},
};

/* Retention: the audit log keeps one year (the seed schema names no rule for
 * the gateway's tables; a year covers an annual review). */
static int gateway_cleanup(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen)
{
    (void)d;
    PGresult *res = pg_exec(pg,
                            "DELETE FROM audit_log WHERE created_at < now() - interval '365 days'",
                            0, NULL, err, errlen);
    if (res == NULL) {
        return -1;
    }
    log_info("cleanup: %s audit_log row(s) older than 365 days deleted", PQcmdTuples(res));
    PQclear(res);
    return 0;
}

static const service_t api_gateway_service = {
    .name = "api-gateway",
    .default_port = 8080,
    .vars = gateway_vars,
    .nvars = sizeof(gateway_vars) / sizeof(gateway_vars[0]),
    .migrations = api_gateway_migrations,
    .cleanup = gateway_cleanup,
};

int main(int argc, char **argv)
{
    service_t svc = api_gateway_service;
    svc.nmigrations = api_gateway_migrations_count;
    return daemon_main(&svc, argc, argv);
}
