/*
 * migrate — apply a service's slice of the schema. See migrate.h and
 * docs/common/migrate.md.
 */
#include "migrate.h"

#include "errbuf.h"
#include "log.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATE_LOCK_SQL "SELECT pg_advisory_lock(hashtext('ca_migrate'))"
#define MIGRATE_UNLOCK_SQL "SELECT pg_advisory_unlock(hashtext('ca_migrate'))"
#define MIGRATE_VERSION_MAX 32

void migrate_role_name(const char *service, char *out, size_t outlen)
{
    if (out == NULL || outlen == 0)
        return;
    size_t n = (size_t)snprintf(out, outlen, "ca_%s", service != NULL ? service : "");
    if (n >= outlen)
        n = outlen - 1;
    for (size_t i = 3; i < n; i++) {
        unsigned char ch = (unsigned char)out[i];
        if (ch == '-' || ch == '.' || ch == ' ')
            out[i] = '_';
        else
            out[i] = (char)tolower(ch);
    }
}

/* SHA-256 of text as 64 lowercase hex characters. Returns 0 or -1. */
static int sha256_hex(const char *text, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0x0f];
    }
    out[64] = '\0';
    return 0;
}

/* "001_users.sql" → "001". Returns 0, or -1 when the name has no digit prefix. */
static int file_version(const char *name, char *out, size_t outlen)
{
    size_t n = 0;
    while (name[n] != '\0' && isdigit((unsigned char)name[n]))
        n++;
    if (n == 0 || n >= outlen)
        return -1;
    memcpy(out, name, n);
    out[n] = '\0';
    return 0;
}

/* Files whose version is 000 (000_roles.sql) bootstrap the roles: they run as
 * the connecting user, not under the service's role. */
static bool is_bootstrap(const char *version)
{
    return strspn(version, "0") == strlen(version);
}

/* Numeric comparison of two digit strings. */
static int version_cmp(const char *a, const char *b)
{
    while (*a == '0' && a[1] != '\0')
        a++;
    while (*b == '0' && b[1] != '\0')
        b++;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(a, b);
}

static int ensure_table(pg_conn_t *conn, char *err, size_t errlen)
{
    char msg[512];
    PGresult *res = pg_exec(conn,
                            "SELECT to_regclass('schema_migrations') IS NOT NULL, "
                            "current_setting('is_superuser') = 'on'",
                            0, NULL, msg, sizeof msg);
    if (res == NULL) {
        errbuf_set(err, errlen, "schema_migrations: %s", msg);
        return -1;
    }
    bool exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool superuser = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    if (exists)
        return 0;
    if (pg_exec_cmd(conn,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " service text NOT NULL,"
                    " version text NOT NULL,"
                    " name text NOT NULL,"
                    " checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now(),"
                    " PRIMARY KEY (service, version))",
                    0, NULL, msg, sizeof msg) != 0) {
        errbuf_set(err, errlen, "creating schema_migrations: %s", msg);
        return -1;
    }
    (void)superuser;
    return 0;
}

/* The service roles (000_roles.sql). */
static const char *const service_roles[] = {"ca_api_gateway", "ca_billing_webhook", "ca_job_worker",
                                            "ca_drive_poller"};
#define N_SERVICE_ROLES (sizeof service_roles / sizeof service_roles[0])

/* schema_migrations is written by migrate only, never by PUBLIC (a service's
 * runtime role must not be able to mark a migration applied). Its owner takes
 * back any PUBLIC grant (an earlier version granted SELECT, INSERT to PUBLIC)
 * and grants each existing service role, by name, SELECT (`<binary>
 * wait-schema` reads it with the service's own role) — and, connected as a
 * service's own role (roles made by a DBA, no superuser), INSERT too so the
 * others can record their files. Called before and after the files run (a
 * fresh database has the roles only once 000_roles.sql ran). Returns 0 or -1. */
static int harden_table(pg_conn_t *conn, char *err, size_t errlen)
{
    char msg[512];
    PGresult *res = pg_exec(conn,
                            "SELECT pg_has_role(current_user, c.relowner, 'USAGE'),"
                            "       current_setting('is_superuser') = 'on'"
                            "  FROM pg_class c WHERE c.oid = 'schema_migrations'::regclass",
                            0, NULL, msg, sizeof msg);
    if (res == NULL) {
        errbuf_set(err, errlen, "schema_migrations: %s", msg);
        return -1;
    }
    bool owner = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool superuser = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    if (!owner)
        return 0; /* another service's role created it and granted us */
    if (pg_exec_cmd(conn, "REVOKE ALL ON schema_migrations FROM PUBLIC", 0, NULL, msg,
                    sizeof msg) != 0) {
        errbuf_set(err, errlen, "revoking schema_migrations from PUBLIC: %s", msg);
        return -1;
    }
    for (size_t i = 0; i < N_SERVICE_ROLES; i++) {
        const char *p[1] = {service_roles[i]};
        res = pg_exec(conn, "SELECT 1 FROM pg_roles WHERE rolname = $1", 1, p, msg, sizeof msg);
        if (res == NULL) {
            errbuf_set(err, errlen, "schema_migrations: %s", msg);
            return -1;
        }
        bool exists = PQntuples(res) == 1;
        PQclear(res);
        if (!exists)
            continue;
        char sql[512];
        /* A fixed role name from the list above: no quoting issue. */
        snprintf(sql, sizeof sql, "GRANT %s ON schema_migrations TO %s",
                 superuser ? "SELECT" : "SELECT, INSERT", service_roles[i]);
        if (pg_exec_cmd(conn, sql, 0, NULL, msg, sizeof msg) != 0) {
            errbuf_set(err, errlen, "granting schema_migrations to %s: %s", service_roles[i], msg);
            return -1;
        }
    }
    return 0;
}

/* True when this connection may grant and revoke on schema public (a
 * superuser or its owner, pg_database_owner in PostgreSQL 15). */
static int can_admin_public(pg_conn_t *conn, bool *out, char *err, size_t errlen)
{
    char msg[512];
    PGresult *res = pg_exec(conn,
                            "SELECT pg_has_role(current_user, n.nspowner, 'USAGE')"
                            "  FROM pg_namespace n WHERE n.nspname = 'public'",
                            0, NULL, msg, sizeof msg);
    if (res == NULL) {
        errbuf_set(err, errlen, "schema public: %s", msg);
        return -1;
    }
    *out = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

/* The runtime roles keep USAGE on schema public but not CREATE: they cannot
 * plant a table, function or operator that a SECURITY DEFINER function or a
 * query would resolve (docs/common/migrate.md). A file gets CREATE only inside
 * its own transaction (apply_file). */
static int revoke_create(pg_conn_t *conn, char *err, size_t errlen)
{
    char msg[512];
    if (pg_exec_cmd(conn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC", 0, NULL, msg, sizeof msg) !=
        0) {
        errbuf_set(err, errlen, "REVOKE CREATE ON SCHEMA public: %s", msg);
        return -1;
    }
    for (size_t i = 0; i < N_SERVICE_ROLES; i++) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN "
                 "REVOKE CREATE ON SCHEMA public FROM %s; END IF; END $$",
                 service_roles[i], service_roles[i]);
        if (pg_exec_cmd(conn, sql, 0, NULL, msg, sizeof msg) != 0) {
            errbuf_set(err, errlen, "REVOKE CREATE ON SCHEMA public FROM %s: %s", service_roles[i],
                       msg);
            return -1;
        }
    }
    return 0;
}

typedef struct {
    char version[MIGRATE_VERSION_MAX];
    char checksum[65];
    bool recorded;
    char recorded_checksum[65];
} file_state_t;

/* Applies one file in its own transaction. Returns 0 or -1 (err filled). */
static int apply_file(pg_conn_t *conn, const char *service, const char *role, bool set_role,
                      bool grant_create, int backend_pid, const migration_file_t *f,
                      const file_state_t *fs, char *err, size_t errlen)
{
    char msg[1024];
    if (pg_begin(conn, msg, sizeof msg) != 0) {
        errbuf_set(err, errlen, "%s: BEGIN: %s", f->name, msg);
        return -1;
    }
    /* pg_begin reconnects on a lost connection: the new session does not hold
     * the advisory lock, so stop rather than race another replica. */
    if (PQbackendPID(pg_raw(conn)) != backend_pid) {
        errbuf_set(err, errlen, "%s: the connection was lost while migrating; run again", f->name);
        goto fail;
    }
    char grant_sql[320];
    if (set_role && grant_create) {
        /* CREATE on public for this transaction only: revoked before COMMIT. */
        snprintf(grant_sql, sizeof grant_sql, "GRANT CREATE ON SCHEMA public TO \"%s\"", role);
        if (pg_exec_cmd(conn, grant_sql, 0, NULL, msg, sizeof msg) != 0) {
            errbuf_set(err, errlen, "%s: GRANT CREATE to %s: %s", f->name, role, msg);
            goto fail;
        }
    }
    if (set_role) {
        /* SET LOCAL ROLE, parameterized. */
        const char *p[1] = {role};
        if (pg_exec_cmd(conn, "SELECT set_config('role', $1, true)", 1, p, msg, sizeof msg) != 0) {
            errbuf_set(err, errlen, "%s: SET LOCAL ROLE %s: %s", f->name, role, msg);
            goto fail;
        }
    }
    /* The file body: trusted SQL embedded in the binary, several statements,
     * so the simple protocol (PQexec). The only non-parameterized exec. */
    PGresult *res = PQexec(pg_raw(conn), f->sql);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        snprintf(msg, sizeof msg, "%s",
                 res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(pg_raw(conn)));
        size_t n = strlen(msg);
        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            msg[--n] = '\0';
        errbuf_set(err, errlen, "%s: %s", f->name, msg);
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    if (PQtransactionStatus(pg_raw(conn)) != PQTRANS_INTRANS) {
        errbuf_set(err, errlen, "%s: the file must not end or abort the transaction itself",
                   f->name);
        goto fail;
    }
    if (set_role && pg_exec_cmd(conn, "SELECT set_config('role', 'none', true)", 0, NULL, msg,
                                sizeof msg) != 0) {
        errbuf_set(err, errlen, "%s: RESET ROLE: %s", f->name, msg);
        goto fail;
    }
    if (set_role && grant_create) {
        snprintf(grant_sql, sizeof grant_sql, "REVOKE CREATE ON SCHEMA public FROM \"%s\"", role);
        if (pg_exec_cmd(conn, grant_sql, 0, NULL, msg, sizeof msg) != 0) {
            errbuf_set(err, errlen, "%s: REVOKE CREATE from %s: %s", f->name, role, msg);
            goto fail;
        }
    }
    const char *p[4] = {service, fs->version, f->name, fs->checksum};
    if (pg_exec_cmd(conn,
                    "INSERT INTO schema_migrations (service, version, name, checksum) "
                    "VALUES ($1, $2, $3, $4)",
                    4, p, msg, sizeof msg) != 0) {
        errbuf_set(err, errlen, "%s: recording: %s", f->name, msg);
        goto fail;
    }
    if (pg_commit(conn, msg, sizeof msg) != 0) {
        errbuf_set(err, errlen, "%s: COMMIT: %s", f->name, msg);
        return -1;
    }
    return 0;
fail:
    pg_rollback(conn);
    return -1;
}

/* Checks the list (NNN_ names, strictly ascending) and fills each file's
 * version and checksum. Returns 0 or -1 (err filled). */
static int check_files(const migration_file_t *files, size_t nfiles, file_state_t *st, char *err,
                       size_t errlen)
{
    for (size_t i = 0; i < nfiles; i++) {
        if (files[i].name == NULL || files[i].sql == NULL ||
            file_version(files[i].name, st[i].version, sizeof st[i].version) != 0) {
            errbuf_set(err, errlen, "%s: a migration file name must start with its number (NNN_)",
                       files[i].name != NULL ? files[i].name : "(null)");
            return -1;
        }
        if (i > 0 && version_cmp(st[i - 1].version, st[i].version) >= 0) {
            errbuf_set(err, errlen, "%s: versions must be unique and in ascending order (after %s)",
                       files[i].name, files[i - 1].name);
            return -1;
        }
        if (sha256_hex(files[i].sql, st[i].checksum) != 0) {
            errbuf_set(err, errlen, "%s: cannot compute its checksum", files[i].name);
            return -1;
        }
    }
    return 0;
}

int migrate_apply(pg_conn_t *conn, const char *service, const migration_file_t *files,
                  size_t nfiles, int *applied, char *err, size_t errlen)
{
    char ebuf[1024];
    if (err == NULL || errlen == 0) {
        err = ebuf;
        errlen = sizeof ebuf;
    }
    err[0] = '\0';
    int count = 0;
    if (applied != NULL)
        *applied = 0;
    if (conn == NULL || service == NULL || service[0] == '\0' || (nfiles > 0 && files == NULL)) {
        errbuf_set(err, errlen, "migrate: bad arguments");
        return -1;
    }
    if (pg_in_transaction(conn)) {
        errbuf_set(err, errlen, "migrate: a transaction is open on the connection");
        return -1;
    }

    int rc = -1;
    bool locked = false;
    int backend_pid = 0;
    char role[128];
    char msg[1024];
    migrate_role_name(service, role, sizeof role);

    file_state_t *st = calloc(nfiles > 0 ? nfiles : 1, sizeof *st);
    if (st == NULL) {
        errbuf_set(err, errlen, "migrate: out of memory");
        return -1;
    }
    if (check_files(files, nfiles, st, err, errlen) != 0)
        goto out;

    /* Replicas migrating at once wait here for each other. */
    if (pg_exec_cmd(conn, MIGRATE_LOCK_SQL, 0, NULL, msg, sizeof msg) != 0) {
        errbuf_set(err, errlen, "migrate: advisory lock: %s", msg);
        goto out;
    }
    locked = true;
    backend_pid = PQbackendPID(pg_raw(conn));

    if (ensure_table(conn, err, errlen) != 0 || harden_table(conn, err, errlen) != 0)
        goto out;
    bool admin_public = false;
    if (can_admin_public(conn, &admin_public, err, errlen) != 0)
        goto out;

    const char *sp[1] = {service};
    PGresult *res = pg_exec(conn,
                            "SELECT version, checksum, name FROM schema_migrations "
                            "WHERE service = $1",
                            1, sp, msg, sizeof msg);
    if (res == NULL) {
        errbuf_set(err, errlen, "migrate: reading schema_migrations: %s", msg);
        goto out;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        const char *v = PQgetvalue(res, r, 0);
        for (size_t i = 0; i < nfiles; i++) {
            if (strcmp(st[i].version, v) == 0) {
                st[i].recorded = true;
                snprintf(st[i].recorded_checksum, sizeof st[i].recorded_checksum, "%s",
                         PQgetvalue(res, r, 1));
            }
        }
    }
    PQclear(res);

    /* Migrations are append-only: check every recorded file before applying. */
    for (size_t i = 0; i < nfiles; i++) {
        if (st[i].recorded && strcmp(st[i].recorded_checksum, st[i].checksum) != 0) {
            errbuf_set(
                err, errlen,
                "%s: checksum changed since it was applied (recorded %.12s..., now %.12s...); "
                "migrations are append-only: add a new file instead",
                files[i].name, st[i].recorded_checksum, st[i].checksum);
            goto out;
        }
    }

    res = pg_exec(conn, "SELECT current_user", 0, NULL, msg, sizeof msg);
    if (res == NULL) {
        errbuf_set(err, errlen, "migrate: current_user: %s", msg);
        goto out;
    }
    bool already_role = strcmp(PQgetvalue(res, 0, 0), role) == 0;
    PQclear(res);

    for (size_t i = 0; i < nfiles; i++) {
        if (st[i].recorded)
            continue;
        bool set_role = !is_bootstrap(st[i].version) && !already_role;
        if (apply_file(conn, service, role, set_role, admin_public, backend_pid, &files[i], &st[i],
                       err, errlen) != 0)
            goto out;
        count++;
        log_info("migration applied: %s %s", service, files[i].name);
    }
    /* The roles 000_roles.sql just created get their grant too. */
    if (harden_table(conn, err, errlen) != 0)
        goto out;
    /* 000_roles.sql grants CREATE on public to every service role; take it
     * back (also from deployments migrated before this rule). Without the
     * right to (connected as a service's own role), the DBA decides. */
    if (admin_public && revoke_create(conn, err, errlen) != 0)
        goto out;
    if (!admin_public)
        log_warn("migrate: this role cannot revoke CREATE on schema public from the service "
                 "roles; run migrate as the database owner (MIGRATION_DATABASE_URL)");
    rc = 0;
out:
    if (locked && PQbackendPID(pg_raw(conn)) == backend_pid) {
        if (pg_exec_cmd(conn, MIGRATE_UNLOCK_SQL, 0, NULL, msg, sizeof msg) != 0)
            log_warn("migrate: releasing the advisory lock: %s", msg);
    }
    if (rc != 0)
        log_warn("migrate %s failed: %s", service, err);
    free(st);
    if (applied != NULL)
        *applied = count;
    return rc;
}

int migrate_status(pg_conn_t *conn, const char *service, const migration_file_t *files,
                   size_t nfiles, migrate_status_t *out, char *err, size_t errlen)
{
    char ebuf[1024];
    if (err == NULL || errlen == 0) {
        err = ebuf;
        errlen = sizeof ebuf;
    }
    err[0] = '\0';
    if (out == NULL || conn == NULL || service == NULL || service[0] == '\0' ||
        (nfiles > 0 && files == NULL)) {
        errbuf_set(err, errlen, "wait-schema: bad arguments");
        return MIGRATE_STATUS_ERROR;
    }
    memset(out, 0, sizeof *out);
    out->known = nfiles;
    file_state_t *st = calloc(nfiles > 0 ? nfiles : 1, sizeof *st);
    if (st == NULL) {
        errbuf_set(err, errlen, "out of memory");
        return MIGRATE_STATUS_ERROR;
    }
    int rc = MIGRATE_STATUS_ERROR;
    char msg[1024];
    PGresult *res = NULL;
    if (check_files(files, nfiles, st, err, errlen) != 0)
        goto out;

    res = pg_exec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL, msg,
                  sizeof msg);
    if (res == NULL) {
        errbuf_set(err, errlen, "%s", msg);
        goto out;
    }
    bool exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    res = NULL;
    if (!exists) {
        out->missing = nfiles;
        errbuf_set(err, errlen, "schema_migrations does not exist yet (no migration ran)");
        rc = MIGRATE_STATUS_PENDING;
        goto out;
    }

    const char *sp[1] = {service};
    res = pg_exec(conn, "SELECT version, checksum FROM schema_migrations WHERE service = $1", 1, sp,
                  msg, sizeof msg);
    if (res == NULL) {
        errbuf_set(err, errlen, "reading schema_migrations: %s", msg);
        goto out;
    }
    const char *last = nfiles > 0 ? st[nfiles - 1].version : "";
    for (int r = 0; r < PQntuples(res); r++) {
        const char *v = PQgetvalue(res, r, 0);
        bool known = false;
        for (size_t i = 0; i < nfiles; i++) {
            if (strcmp(st[i].version, v) == 0) {
                known = true;
                st[i].recorded = true;
                snprintf(st[i].recorded_checksum, sizeof st[i].recorded_checksum, "%s",
                         PQgetvalue(res, r, 1));
            }
        }
        if (!known) {
            /* Recorded by a newer release (a rolling update: the schema is
             * forward-compatible), or a version this binary never had. */
            out->unknown++;
            bool digits = v[0] != '\0' && strspn(v, "0123456789") == strlen(v);
            if (digits &&
                (out->newest_unknown[0] == '\0' || version_cmp(v, out->newest_unknown) > 0)) {
                snprintf(out->newest_unknown, sizeof out->newest_unknown, "%s", v);
            }
            if (digits && nfiles > 0 && version_cmp(v, last) > 0)
                out->newer++;
        }
    }
    PQclear(res);
    res = NULL;

    for (size_t i = 0; i < nfiles; i++) {
        if (st[i].recorded && strcmp(st[i].recorded_checksum, st[i].checksum) != 0) {
            errbuf_set(err, errlen,
                       "%s: recorded with checksum %.12s..., this binary has %.12s... "
                       "(an applied migration was changed: this binary and the database "
                       "disagree)",
                       files[i].name, st[i].recorded_checksum, st[i].checksum);
            rc = MIGRATE_STATUS_MISMATCH;
            goto out;
        }
    }
    const char *first_missing = NULL;
    for (size_t i = 0; i < nfiles; i++) {
        if (!st[i].recorded) {
            if (first_missing == NULL)
                first_missing = files[i].name;
            out->missing++;
        }
    }
    if (out->missing > 0) {
        errbuf_set(err, errlen, "%zu of %zu file(s) not applied yet (first: %s)", out->missing,
                   nfiles, first_missing);
        rc = MIGRATE_STATUS_PENDING;
        goto out;
    }
    rc = MIGRATE_STATUS_CURRENT;
out:
    PQclear(res);
    free(st);
    return rc;
}
