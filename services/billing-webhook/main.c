/*
 * billing-webhook — receives Stripe webhooks, keeps subscriptions and usage,
 * enforces quotas through its SQL functions, reports overage to Stripe. Owns
 * subscriptions, usage_tracking, webhook_events, usage_reservations and
 * meter_outbox.
 *
 * serve: POST /webhooks/stripe (webhook.c: verify, record + apply in one
 * transaction on the non-blocking pool), the meter outbox drainer thread
 * (meter.c) and a periodic task for the outbox gauges. See docs/billing.md.
 */
#include "daemon.h"
#include "log.h"
#include "meter.h"
#include "webhook.h"

#include <stdlib.h>

extern const migration_file_t billing_webhook_migrations[];
extern const size_t billing_webhook_migrations_count;

static const config_var_t billing_vars[] = {
    {"STRIPE_SECRET_KEY", CFG_STRING, NULL, false, true, 0, 0, "Stripe API key (meter events)"},
    {"STRIPE_WEBHOOK_SECRET", CFG_LIST, NULL, true, true, 0, 0,
     "webhook signing secret; a comma list while rolling"},
    {"STRIPE_API_URL", CFG_URL, "https://api.stripe.com", false, false, 0, 0,
     "Stripe API base URL"},
    {"STRIPE_PRICE_CREATOR", CFG_STRING, NULL, false, false, 0, 0, "price id of the creator tier"},
    {"STRIPE_PRICE_STUDIO", CFG_STRING, NULL, false, false, 0, 0, "price id of the studio tier"},
    {"STRIPE_METER_EVENT", CFG_STRING, "image_overage", false, false, 0, 0,
     "Billing Meter event name for overage images"},
    {"STRIPE_API_VERSION", CFG_STRING, NULL, false, false, 0, 0,
     "Stripe-Version header on API calls (unset: the account's default)"},
    {"STRIPE_TIMEOUT_MS", CFG_INT, "10000", false, false, 100, 600000,
     "per Stripe API call (meter events)"},
    {"STRIPE_MAX_RETRIES", CFG_INT, "0", false, false, 0, 10,
     "retries inside one Stripe call; 0: the meter outbox's backoff is the retry"},
    {"STRIPE_WEBHOOK_TOLERANCE_SECONDS", CFG_INT, "300", false, false, 1, 86400,
     "accepted age of a webhook signature's timestamp"},
    {"WEBHOOK_PG_POOL_SIZE", CFG_INT, "4", false, false, 1, 64,
     "PostgreSQL connections recording webhook events"},
    {"WEBHOOK_BATCH_MAX", CFG_INT, "64", false, false, 1, 1000,
     "webhook events written by one group-commit statement (1: one event each)"},
    {"WEBHOOK_BATCH_INFLIGHT", CFG_INT, "2", false, false, 1, 64,
     "group-commit statements in flight at once; events arriving meanwhile wait for the next"},
    {"METER_MAX_ATTEMPTS", CFG_INT, "15", false, false, 1, 1000,
     "attempts before a meter event is marked failed"},
    {"METER_BACKOFF_BASE_MS", CFG_INT, "2000", false, false, 1, 3600000,
     "first retry delay of a meter event (doubles, with jitter)"},
    {"METER_BACKOFF_MAX_MS", CFG_INT, "3600000", false, false, 1, 86400000,
     "longest retry delay of a meter event"},
    {"METER_POLL_MS", CFG_INT, "1000", false, false, 10, 600000,
     "how often the meter outbox is checked when idle"},
    {"METER_LEASE_SECONDS", CFG_INT, "120", false, false, 1, 86400,
     "a claimed meter event is retried after this if the sender died"},
    {"METER_BATCH", CFG_INT, "50", false, false, 1, 1000, "meter outbox rows one claim takes"},
    {"METER_GAUGES_PERIOD_MS", CFG_INT, "5000", false, false, 100, 3600000,
     "how often the meter outbox gauges are read from PostgreSQL"},
};

typedef struct {
    webhook_t *webhook;
    meter_t *meter;
} billing_state_t;

static void outbox_gauges_task(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    meter_update_gauges(pg);
}

static int billing_start(daemon_t *d)
{
    billing_state_t *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return -1;
    }
    daemon_set_data(d, st);
    webhook_config_t wcfg = {
        .database_url = daemon_get(d, "DATABASE_URL"),
        .secrets = daemon_get(d, "STRIPE_WEBHOOK_SECRET"),
        .price_creator = daemon_get(d, "STRIPE_PRICE_CREATOR"),
        .price_studio = daemon_get(d, "STRIPE_PRICE_STUDIO"),
        .tolerance_s = config_get_int(daemon_config(d), "STRIPE_WEBHOOK_TOLERANCE_SECONDS"),
        .pool_size = (int)config_get_int(daemon_config(d), "WEBHOOK_PG_POOL_SIZE"),
        .batch_max = (int)config_get_int(daemon_config(d), "WEBHOOK_BATCH_MAX"),
        .batch_inflight = (int)config_get_int(daemon_config(d), "WEBHOOK_BATCH_INFLIGHT"),
    };
    st->webhook = webhook_new(daemon_base(d), daemon_http(d), &wcfg);
    if (st->webhook == NULL) {
        return -1;
    }
    if (daemon_get(d, "STRIPE_PRICE_CREATOR") == NULL ||
        daemon_get(d, "STRIPE_PRICE_STUDIO") == NULL) {
        log_warn(
            "STRIPE_PRICE_CREATOR/STRIPE_PRICE_STUDIO not set: paid subscriptions map to free");
    }
    const char *key = daemon_get(d, "STRIPE_SECRET_KEY");
    if (key == NULL) {
        log_warn("STRIPE_SECRET_KEY not set: overage meter events stay in the outbox");
    } else {
        meter_config_t mcfg = {
            .database_url = daemon_get(d, "DATABASE_URL"),
            .stripe = {.secret_key = key,
                       .api_url = daemon_get(d, "STRIPE_API_URL"),
                       .api_version = daemon_get(d, "STRIPE_API_VERSION"),
                       .timeout_ms = config_get_int(daemon_config(d), "STRIPE_TIMEOUT_MS"),
                       .max_retries = (int)config_get_int(daemon_config(d), "STRIPE_MAX_RETRIES")},
            .event_name = daemon_get(d, "STRIPE_METER_EVENT"),
            .max_attempts = (int)config_get_int(daemon_config(d), "METER_MAX_ATTEMPTS"),
            .backoff_base_ms = config_get_int(daemon_config(d), "METER_BACKOFF_BASE_MS"),
            .backoff_max_ms = config_get_int(daemon_config(d), "METER_BACKOFF_MAX_MS"),
            .poll_ms = config_get_int(daemon_config(d), "METER_POLL_MS"),
            .lease_s = (int)config_get_int(daemon_config(d), "METER_LEASE_SECONDS"),
            .batch = (int)config_get_int(daemon_config(d), "METER_BATCH"),
        };
        st->meter = meter_start(&mcfg);
        if (st->meter == NULL) {
            log_error("could not start the meter outbox drainer");
            return -1;
        }
    }
    int gauges_ms = (int)config_get_int(daemon_config(d), "METER_GAUGES_PERIOD_MS");
    if (daemon_add_task(d, "meter_outbox_gauges", gauges_ms, outbox_gauges_task, NULL) != 0) {
        return -1;
    }
    return 0;
}

static void billing_drain(daemon_t *d)
{
    billing_state_t *st = daemon_data(d);
    if (st != NULL) {
        meter_request_stop(st->meter);
    }
}

static bool billing_drained(daemon_t *d)
{
    billing_state_t *st = daemon_data(d);
    if (st == NULL) {
        return true;
    }
    return webhook_inflight(st->webhook) == 0 && meter_stopped(st->meter);
}

static void billing_stop(daemon_t *d)
{
    billing_state_t *st = daemon_data(d);
    if (st == NULL) {
        return;
    }
    meter_free(st->meter);
    webhook_free(st->webhook);
    free(st);
    daemon_set_data(d, NULL);
}

/* Retention (seed schema): webhook events older than 30 days, usage rows older
 * than 12 months. */
static int billing_cleanup(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen)
{
    (void)d;
    PGresult *res =
        pg_exec(pg, "DELETE FROM webhook_events WHERE created_at < now() - interval '30 days'", 0,
                NULL, err, errlen);
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
    .nmigrations = &billing_webhook_migrations_count,
    .start = billing_start,
    .drain = billing_drain,
    .drained = billing_drained,
    .stop = billing_stop,
    .cleanup = billing_cleanup,
};

int main(int argc, char **argv)
{
    return daemon_main(&billing_webhook_service, argc, argv);
}
