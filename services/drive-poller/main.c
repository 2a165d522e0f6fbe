/*
 * drive-poller — finds new images in watched folders, creates jobs, pushes
 * their ids to Redis; refreshes Drive tokens. Owns drive_polls.
 *
 * Foundation state: boots, migrates its slice, answers /healthz, /readyz and
 * /metrics. Polling is issue #5.
 */
#include "daemon.h"

extern const migration_file_t drive_poller_migrations[];
extern const size_t drive_poller_migrations_count;

static const config_var_t poller_vars[] = {
    {"ENCRYPTION_KEY", CFG_KEY32, NULL, true, true, 0, 0, "base64 of 32 bytes: seals Drive tokens"},
    {"ENCRYPTION_KEYS_OLD", CFG_KEYLIST, "", false, true, 0, 0, "comma list of previous keys (rotation)"},
    {"GOOGLE_CLIENT_ID", CFG_STRING, NULL, true, false, 0, 0, "OAuth client id"},
    {"GOOGLE_CLIENT_SECRET", CFG_STRING, NULL, true, true, 0, 0, "OAuth client secret"},
    {"GOOGLE_TOKEN_URL", CFG_URL, "https://oauth2.googleapis.com/token", false, false, 0, 0,
     "OAuth token endpoint (refresh)"},
    {"DRIVE_API_URL", CFG_URL, "https://www.googleapis.com/drive/v3", false, false, 0, 0,
     "Drive v3 base URL"},
    {"POLL_INTERVAL_SECONDS", CFG_INT, "60", false, false, 1, 86400, "seconds between polls of a folder"},
};

static const service_t drive_poller_service = {
    .name = "drive-poller",
    .default_port = 9102,
    .vars = poller_vars,
    .nvars = sizeof(poller_vars) / sizeof(poller_vars[0]),
    .migrations = drive_poller_migrations,
    /* drive_polls has no retention rule: a row lives as long as its watch. */
    .cleanup = NULL,
};

int main(int argc, char **argv)
{
    service_t svc = drive_poller_service;
    svc.nmigrations = drive_poller_migrations_count;
    return daemon_main(&svc, argc, argv);
}
