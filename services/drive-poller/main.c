/*
 * drive-poller — finds new images in watched folders, creates jobs, pushes
 * their ids to Redis; refreshes Drive tokens. Owns drive_polls.
 *
 * main.c is the boot script: the configuration table, then start/drain/stop
 * hooks around the poller (poller.c; docs/drive-poller.md).
 */
#include "config_vars.h"
#include "daemon.h"
#include "log.h"
#include "poller.h"
#include "push.h"

#include <stdlib.h>

extern const migration_file_t drive_poller_migrations[];
extern const size_t drive_poller_migrations_count;

static const config_var_t poller_vars[] = {
    CONFIG_VARS_ENCRYPTION,
    CONFIG_VARS_GOOGLE_CLIENT,
    CONFIG_VAR_GOOGLE_TOKEN_URL("OAuth token endpoint (refresh)"),
    CONFIG_VAR_DRIVE_API_URL,
    {"POLL_INTERVAL_SECONDS", CFG_INT, "60", false, false, 1, 86400,
     "seconds between polls of a folder"},
    {"POLLER_CONCURRENCY", CFG_INT, "8", false, false, 1, 256,
     "poll threads (Drive calls are I/O bound), each with its own PostgreSQL connection"},
    {"RECONCILE_INTERVAL_SECONDS", CFG_INT, "3600", false, false, 1, 604800,
     "a full listing of each folder at least this often (and whenever the changes token is lost)"},
    {"POLL_LEASE_SECONDS", CFG_INT, "120", false, false, 5, 3600,
     "lease on a claimed folder; renewed during long polls, expires if a replica dies"},
    {"POLLER_CLAIM_BATCH", CFG_INT, "1", false, false, 1, 100, "folders one claim takes"},
    {"POLLER_IDLE_MS", CFG_INT, "500", false, false, 10, 10000,
     "how often an idle poll thread looks for due folders"},
    {"DRIVE_TIMEOUT_MS", CFG_INT, "30000", false, false, 100, 600000, "per Drive call"},
    {"DRIVE_MAX_RETRIES", CFG_INT, "0", false, false, 0, 10,
     "retries inside one Drive call (network, 429, 5xx); 0: the folder's backoff is the retry"},
    {"DRIVE_WEBHOOK_URL", CFG_URL, NULL, false, false, 0, 0,
     "public https address of POST /webhooks/drive (Drive push notifications; http only to a "
     "loopback host); unset: polling only"},
    {"DRIVE_WEBHOOK_CHANNEL_SECONDS", CFG_INT, "86400", false, false, 60, 604800,
     "requested lifetime of a push channel (Drive may shorten it); renewed before it ends"},
    {"DRIVE_WEBHOOK_RATE", CFG_INT, "200", false, false, 1, 100000,
     "notifications /webhooks/drive accepts per second (burst the same); past it 429"},
};

typedef struct {
    crypto_keyring_t *keys;
    poller_t *poller;
    push_sweeper_t *sweeper;
    push_webhook_t *webhook;
} poller_state_t;

static void push_sweep_task(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    (void)d;
    (void)redis;
    push_sweep(arg, pg);
}

static void gauges_task(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg)
{
    (void)d;
    (void)redis;
    poller_update_gauges(arg, pg);
}

static int poller_service_start(daemon_t *d)
{
    char err[256];
    poller_state_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    daemon_set_data(d, s);
    s->keys = crypto_keyring_new(daemon_get(d, "ENCRYPTION_KEY"),
                                 daemon_get(d, "ENCRYPTION_KEYS_OLD"), err, sizeof(err));
    if (s->keys == NULL) {
        log_error("ENCRYPTION_KEY: %s", err);
        return -1;
    }
    const config_t *cfg = daemon_config(d);
    const char *webhook_url = daemon_get(d, "DRIVE_WEBHOOK_URL");
    if (webhook_url != NULL && webhook_url[0] == '\0') {
        webhook_url = NULL;
    }
    if (webhook_url != NULL && !push_url_ok(webhook_url, err, sizeof(err))) {
        log_error("DRIVE_WEBHOOK_URL: %s", err);
        return -1;
    }
    poller_config_t pc = {
        .database_url = daemon_get(d, "DATABASE_URL"),
        .redis_url = daemon_get(d, "REDIS_URL"),
        .instance_id = daemon_instance_id(d),
        .google =
            {
                .client_id = daemon_get(d, "GOOGLE_CLIENT_ID"),
                .client_secret = daemon_get(d, "GOOGLE_CLIENT_SECRET"),
                .token_url = daemon_get(d, "GOOGLE_TOKEN_URL"),
                .drive_api_url = daemon_get(d, "DRIVE_API_URL"),
                .timeout_ms = config_get_int(cfg, "DRIVE_TIMEOUT_MS"),
                .max_retries = (int)config_get_int(cfg, "DRIVE_MAX_RETRIES"),
            },
        .keys = s->keys,
        .concurrency = (int)config_get_int(cfg, "POLLER_CONCURRENCY"),
        .interval_s = (int)config_get_int(cfg, "POLL_INTERVAL_SECONDS"),
        .reconcile_s = (int)config_get_int(cfg, "RECONCILE_INTERVAL_SECONDS"),
        .lease_s = (int)config_get_int(cfg, "POLL_LEASE_SECONDS"),
        .claim_batch = (int)config_get_int(cfg, "POLLER_CLAIM_BATCH"),
        .idle_ms = (int)config_get_int(cfg, "POLLER_IDLE_MS"),
        .webhook_url = webhook_url,
        .channel_s = (int)config_get_int(cfg, "DRIVE_WEBHOOK_CHANNEL_SECONDS"),
    };
    s->poller = poller_new(&pc, err, sizeof(err));
    if (s->poller == NULL) {
        log_error("%s", err);
        return -1;
    }
    if (daemon_add_task(d, "poller-gauges", 5000, gauges_task, s->poller) != 0) {
        log_error("cannot register the gauges task");
        return -1;
    }
    /* Push channels: the stopper runs even when push is off (it then stops
     * every channel left from when it was on); the route only when on. */
    s->sweeper = push_sweeper_new(&pc.google, s->keys, webhook_url);
    if (s->sweeper == NULL ||
        daemon_add_task(d, "push-channels", 2000, push_sweep_task, s->sweeper) != 0) {
        log_error("cannot register the push channel task");
        return -1;
    }
    if (webhook_url != NULL) {
        s->webhook = push_webhook_new(daemon_base(d), daemon_http(d), pc.database_url,
                                      (int)config_get_int(cfg, "DRIVE_WEBHOOK_RATE"), poller_nudge,
                                      s->poller);
        if (s->webhook == NULL) {
            log_error("cannot register POST /webhooks/drive");
            return -1;
        }
        log_info("push notifications: channels for %s", webhook_url);
    }
    return poller_start(s->poller);
}

static void poller_service_drain(daemon_t *d)
{
    poller_state_t *s = daemon_data(d);
    if (s != NULL) {
        poller_drain(s->poller);
    }
}

static bool poller_service_drained(daemon_t *d)
{
    poller_state_t *s = daemon_data(d);
    return s == NULL || poller_drained(s->poller);
}

static void poller_service_stop(daemon_t *d)
{
    poller_state_t *s = daemon_data(d);
    if (s == NULL) {
        return;
    }
    push_webhook_free(s->webhook);
    poller_free(s->poller);
    push_sweeper_free(s->sweeper);
    crypto_keyring_free(s->keys);
    free(s);
    daemon_set_data(d, NULL);
}

static const service_t drive_poller_service = {
    .name = "drive-poller",
    .default_port = 9102,
    .vars = poller_vars,
    .nvars = sizeof(poller_vars) / sizeof(poller_vars[0]),
    .migrations = drive_poller_migrations,
    .nmigrations = &drive_poller_migrations_count,
    .start = poller_service_start,
    .drain = poller_service_drain,
    .drained = poller_service_drained,
    .stop = poller_service_stop,
    /* drive_polls has no retention rule: a row lives as long as its watch. */
    .cleanup = NULL,
};

int main(int argc, char **argv)
{
    return daemon_main(&drive_poller_service, argc, argv);
}
