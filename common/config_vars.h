/*
 * config_vars — configuration table entries that several daemons declare the
 * same way (name, type, default, required, secret, help), so that they cannot
 * drift apart. Use them inside a config_var_t table:
 *
 *   static const config_var_t vars[] = {
 *       CONFIG_VARS_ENCRYPTION,
 *       CONFIG_VARS_GOOGLE_CLIENT,
 *       CONFIG_VAR_GOOGLE_TOKEN_URL("OAuth token endpoint (refresh)"),
 *       CONFIG_VAR_DRIVE_API_URL,
 *       {"POLL_INTERVAL_SECONDS", CFG_INT, "60", false, false, 1, 86400, "..."},
 *   };
 *
 * Used by the api-gateway, the drive-poller and the job-worker.
 */
#ifndef CA_CONFIG_VARS_H
#define CA_CONFIG_VARS_H

#include "config.h"

/* one table entry a line, as in the daemons' tables */
/* clang-format off */

/* ENCRYPTION_KEY (seals Drive tokens) and ENCRYPTION_KEYS_OLD (rotation). */
#define CONFIG_VARS_ENCRYPTION \
    {"ENCRYPTION_KEY", CFG_KEY32, NULL, true, true, 0, 0, "base64 of 32 bytes: seals Drive tokens"}, \
    {"ENCRYPTION_KEYS_OLD", CFG_KEYLIST, "", false, true, 0, 0, "comma list of previous keys (rotation)"}

/* GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET (required; the secret is redacted). */
#define CONFIG_VARS_GOOGLE_CLIENT \
    {"GOOGLE_CLIENT_ID", CFG_STRING, NULL, true, false, 0, 0, "OAuth client id"}, \
    {"GOOGLE_CLIENT_SECRET", CFG_STRING, NULL, true, true, 0, 0, "OAuth client secret"}

/* GOOGLE_TOKEN_URL with the daemon's own help text (what it uses it for). */
#define CONFIG_VAR_GOOGLE_TOKEN_URL(help) \
    {"GOOGLE_TOKEN_URL", CFG_URL, "https://oauth2.googleapis.com/token", false, false, 0, 0, help}

#define CONFIG_VAR_DRIVE_API_URL \
    {"DRIVE_API_URL", CFG_URL, "https://www.googleapis.com/drive/v3", false, false, 0, 0, "Drive v3 base URL"}

/* clang-format on */

#endif
