/*
 * migrate — apply a service's slice of the schema.
 *
 * Each binary embeds its migrations (tools/embed.c → `<svc>_migrations[]`):
 * sql/000_roles.sql first (idempotent: creates the four service roles if they
 * are missing and grants them what the slices need), then sql/<svc>/NNN_*.sql
 * in name order.
 *
 * migrate_apply():
 *   - takes a session advisory lock (pg_advisory_lock(hashtext('ca_migrate')))
 *     so replicas migrating at once wait for each other;
 *   - creates schema_migrations(service, version, name, checksum, applied_at)
 *     if missing; version is the file's NNN prefix;
 *   - skips files already recorded for this service (a recorded file whose
 *     checksum changed is an error: migrations are append-only);
 *   - applies each new file in its own transaction; every file but 000_roles
 *     runs under `SET LOCAL ROLE <role>` (ca_api_gateway, ca_drive_poller,
 *     ca_job_worker, ca_billing_webhook) so the slice's objects are owned by
 *     the service's role — unless the connection is already that role.
 * The connecting user must be a superuser, or the service's own role when the
 * roles were created beforehand by a DBA.
 */
#ifndef CA_MIGRATE_H
#define CA_MIGRATE_H

#include "pg.h"

#include <stddef.h>

typedef struct {
    const char *name; /* file name, e.g. "001_users.sql" */
    const char *sql;
} migration_file_t;

/* "job-worker" → "ca_job_worker" into out. */
void migrate_role_name(const char *service, char *out, size_t outlen);

/* Applies what is missing. *applied gets how many files were applied now.
 * Returns 0 or -1 (err filled with the file name and PostgreSQL's message). */
__attribute__((warn_unused_result)) int migrate_apply(pg_conn_t *conn, const char *service,
                                                      const migration_file_t *files, size_t nfiles,
                                                      int *applied, char *err, size_t errlen);

/* What migrate_status found. */
typedef struct {
    size_t known;            /* files the binary embeds */
    size_t missing;          /* of those, not recorded yet */
    size_t unknown;          /* versions recorded that the binary does not embed */
    size_t newer;            /* of those, numbered above the binary's last file */
    char newest_unknown[32]; /* the highest of them ("" when none) */
} migrate_status_t;

enum {
    MIGRATE_STATUS_CURRENT = 0,  /* every file recorded with its checksum */
    MIGRATE_STATUS_PENDING = 1,  /* some not recorded (or no schema_migrations yet) */
    MIGRATE_STATUS_MISMATCH = 2, /* a recorded checksum differs (err names the file) */
    MIGRATE_STATUS_ERROR = -1,   /* cannot tell: a bad list, no privilege, no connection */
};

/* Compares the files with schema_migrations, changing nothing and taking no
 * lock (`<binary> wait-schema`): needs only SELECT on schema_migrations.
 * Versions recorded but not embedded are counted in *out (a newer release
 * migrated: fine for a forward-only rolling update). Returns a
 * MIGRATE_STATUS_*; err says what is missing or wrong. */
int migrate_status(pg_conn_t *conn, const char *service, const migration_file_t *files,
                   size_t nfiles, migrate_status_t *out, char *err, size_t errlen);

#endif
