/*
 * billing-webhook — receives Stripe webhooks, keeps subscriptions and usage,
 * enforces quotas through its SQL functions, reports overage to Stripe. Owns
 * subscriptions, usage_tracking, webhook_events, usage_reservations and
 * meter_outbox.
 *
 * Foundation state: boots, migrates its slice, answers /healthz, /readyz and
 * /metrics, and applies its retention rules. Webhooks are issue #6.
 */
#include "daemon.h"
#include "log.h"

extern const migration_file_t billing_webhook_migrations[];
extern const size_t billing_webhook_migrations_count;

static const config_var_t billing_vars[] = {
    {"STRIPE_SECRET_KEY", CFG_STRING, NULL, false, true, 0, 0, "Stripe API key (meter events)"},
    {"STRIPE_WEBHOOK_SECRET", CFG_LIST, NULL, true, true, 0, 0,
     "webhook signing secret; a comma list while rolling"},
    {"STRIPE_API_URL", CFG_URL, "https://api.stripe.com", false, false, 0, 0, "Stripe API base URL"},
    {"STRIPE_PRICE_CREATOR", CFG_STRING, NULL, false, false, 0, 0, "price id of the creator tier"},
    {"STRIPE_PRICE_STUDIO", CFG_STRING, NULL, false, false, 0, 0, "price id of the studio tier"},
    {"STRIPE_METER_EVENT", CFG_STRING, "image_overage", false, false, 0, 0,
     "Billing Meter event name for overage images"},
};

/* Retention (seed schema): webhook events older than 30 days, usage rows older
 * than 12 months. */
static int billing_cleanup(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen)
{
    (void)d;
    PGresult *res = pg_exec(pg,
                            "DELETE FROM webhook_events WHERE created_at < now() - interval '30 days'",
                            0, NULL, err, errlen);
    if (res == NULL) {
        return -1;
    }
    log_info("cleanup: %s webhook event(s) older than 30 days deleted", PQcmdTuples(res));
    PQclear(res);
    res = pg_exec(pg, "DELETE FROM usage_tracking WHERE month < now() - interval '12 months'", 0,
                  NULL, err, errlen);
    if (res == NULL) {
        return -1;
    }
    log_info("cleanup: %s usage row(s) older than 12 months deleted", PQcmdTuples(res));
    PQclear(res);
    return 0;
}

static const service_t billing_webhook_service = {
    .name = "billing-webhook",
    .default_port = 8081,
    .vars = billing_vars,
    .nvars = sizeof(billing_vars) / sizeof(billing_vars[0]),
    .migrations = billing_webhook_migrations,
    .cleanup = billing_cleanup,
};

int main(int argc, char **argv)
{
    service_t svc = billing_webhook_service;
    svc.nmigrations = billing_webhook_migrations_count;
    return daemon_main(&svc, argc, argv);
}
