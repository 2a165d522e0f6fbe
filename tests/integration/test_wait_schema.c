/*
 * `<binary> wait-schema` (common/daemon.c, migrate_status in common/migrate.c),
 * run as the real binaries with each service's own role, as a Deployment's init
 * container does: on a fresh database it waits and gives up after
 * WAIT_SCHEMA_SECONDS (exit 1); while the four slices are migrated next to it,
 * it exits 0 within a poll of the last one; a recorded checksum that differs
 * exits 1 at once; a version recorded by a newer release is fine; a missing
 * file keeps it waiting; an unreachable database keeps it waiting too. And
 * migrate grants SELECT on schema_migrations to the four roles by name, never
 * to PUBLIC, nor INSERT.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const services[] = {"api-gateway", "billing-webhook", "job-worker",
                                       "drive-poller"};
static const char *const roles[] = {"ca_api_gateway", "ca_billing_webhook", "ca_job_worker",
                                    "ca_drive_poller"};
#define NSVC (sizeof(services) / sizeof(services[0]))

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* postgresql://ROLE@127.0.0.1:PORT/DB */
static void url_for(char *out, size_t outlen, const char *role, const char *db)
{
    const char *port = getenv("TEST_PG_PORT");
    snprintf(out, outlen, "postgresql://%s@127.0.0.1:%s/%s", role, port != NULL ? port : "5432",
             db);
}

typedef struct {
    pid_t pid;
    char log[256];
} run_t;

/* Starts $CA_BIN/SERVICE COMMAND with DATABASE_URL=url, WAIT_SCHEMA_SECONDS=secs
 * (when > 0), and no MIGRATION_DATABASE_URL; output to r->log. */
static void start_cmd(run_t *r, const char *service, const char *command, const char *url, int secs)
{
    static int counter;
    snprintf(r->log, sizeof(r->log), "/tmp/ca-wait-schema-%d-%d.log", (int)getpid(), ++counter);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", getenv("CA_BIN") != NULL ? getenv("CA_BIN") : "build/bin",
             service);
    fflush(NULL);
    r->pid = fork();
    assert_true(r->pid >= 0);
    if (r->pid == 0) {
        if (freopen(r->log, "w", stdout) == NULL || dup2(fileno(stdout), 2) < 0) {
            _exit(120);
        }
        setenv("DATABASE_URL", url, 1);
        unsetenv("MIGRATION_DATABASE_URL");
        setenv("LOG_LEVEL", "info", 1);
        if (secs > 0) {
            char s[16];
            snprintf(s, sizeof(s), "%d", secs);
            setenv("WAIT_SCHEMA_SECONDS", s, 1);
        }
        execl(path, path, command, (char *)NULL);
        _exit(127);
    }
}

/* The exit status, or -1 when it still runs after timeout_ms (left running). */
static int wait_cmd(run_t *r, int timeout_ms)
{
    long long deadline = mono_ms() + timeout_ms;
    for (;;) {
        int status = 0;
        pid_t got = waitpid(r->pid, &status, WNOHANG);
        if (got == r->pid) {
            r->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (mono_ms() >= deadline) {
            return -1;
        }
        usleep(20000);
    }
}

static void kill_cmd(run_t *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

static bool log_has(const run_t *r, const char *needle)
{
    FILE *f = fopen(r->log, "r");
    if (f == NULL) {
        return false;
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void print_log(const run_t *r)
{
    FILE *f = fopen(r->log, "r");
    if (f == NULL) {
        return;
    }
    char line[1024];
    fprintf(stderr, "--- %s\n", r->log);
    while (fgets(line, sizeof(line), f) != NULL) {
        fputs(line, stderr);
    }
    fclose(f);
}

/* Runs to completion (60 s at most) and returns the exit status. */
static int run_cmd(const char *service, const char *command, const char *url, int secs, run_t *r)
{
    start_cmd(r, service, command, url, secs);
    int rc = wait_cmd(r, 60000);
    if (rc == -1) {
        kill_cmd(r);
    }
    return rc;
}

/* A new empty database (owned by the superuser), name into db. */
static void create_db(char *db, size_t dblen)
{
    static int counter;
    snprintf(db, dblen, "ca_ws_%d_%d", (int)getpid(), ++counter);
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    assert_int_equal(sql_exec(sql, 0, NULL), 0);
}

static void drop_db(const char *db)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    assert_int_equal(sql_exec(sql, 0, NULL), 0);
}

/* A fresh database: nothing migrated. wait-schema as the service's role keeps
 * waiting (it polls; no crash, no exit) and gives up after WAIT_SCHEMA_SECONDS
 * with exit 1, saying why. */
static void test_fresh_database_times_out(void **state)
{
    (void)state;
    char db[64], url[256];
    create_db(db, sizeof(db));
    url_for(url, sizeof(url), "ca_job_worker", db);
    run_t r;
    long long t0 = mono_ms();
    int rc = run_cmd("job-worker", "wait-schema", url, 3, &r);
    long long took = mono_ms() - t0;
    if (rc != 1 || took < 2900 || took > 9000 ||
        !log_has(&r, "schema_migrations does not exist yet") ||
        !log_has(&r, "the schema is not current after 3 s")) {
        print_log(&r);
        fail_msg("fresh database: exit %d after %lld ms, want 1 after ~3 s", rc, took);
    }
    drop_db(db);
}

/* An unreachable database (no such database) is waited for too, not an
 * immediate failure: the init container may start before PostgreSQL. */
static void test_unreachable_database_is_waited_for(void **state)
{
    (void)state;
    char url[256];
    url_for(url, sizeof(url), "ca_job_worker", "ca_ws_no_such_database");
    run_t r;
    long long t0 = mono_ms();
    int rc = run_cmd("drive-poller", "wait-schema", url, 2, &r);
    long long took = mono_ms() - t0;
    if (rc != 1 || took < 1900 || took > 9000 || !log_has(&r, "cannot connect")) {
        print_log(&r);
        fail_msg("unreachable: exit %d after %lld ms, want 1 after ~2 s", rc, took);
    }
}

/* The four wait-schema run (each with its own role) while the migration runs
 * next to them, in slice order, as the migration Job does: none exits before
 * its slice is recorded, each exits 0 within a poll (2 s) of its migrate. */
static void test_exits_once_migrated_concurrently(void **state)
{
    (void)state;
    char db[64], url[256], su[256];
    create_db(db, sizeof(db));
    url_for(su, sizeof(su), "postgres", db);
    run_t waiters[NSVC];
    for (size_t i = 0; i < NSVC; i++) {
        url_for(url, sizeof(url), roles[i], db);
        start_cmd(&waiters[i], services[i], "wait-schema", url, 60);
    }
    usleep(2500 * 1000);
    for (size_t i = 0; i < NSVC; i++) {
        if (wait_cmd(&waiters[i], 0) != -1) {
            print_log(&waiters[i]);
            fail_msg("%s wait-schema exited before any migration", services[i]);
        }
    }
    for (size_t i = 0; i < NSVC; i++) {
        run_t m;
        int rc = run_cmd(services[i], "migrate", su, 0, &m);
        if (rc != 0) {
            print_log(&m);
            fail_msg("%s migrate: exit %d", services[i], rc);
        }
        unlink(m.log);
        long long migrated = mono_ms();
        /* Its own slice is there (and the grant, also when it is the first
         * slice: the roles 000_roles.sql created in this run): it exits 0. */
        rc = wait_cmd(&waiters[i], 5000);
        long long after = mono_ms() - migrated;
        if (rc != 0 || !log_has(&waiters[i], "schema current")) {
            print_log(&waiters[i]);
            kill_cmd(&waiters[i]);
            fail_msg("%s wait-schema: exit %d %lld ms after its migration, want 0 within 2 s",
                     services[i], rc, after);
        }
        assert_true(after < 4000);
        unlink(waiters[i].log);
        /* The slices not migrated yet still wait. */
        for (size_t j = i + 1; j < NSVC; j++) {
            if (wait_cmd(&waiters[j], 0) != -1) {
                print_log(&waiters[j]);
                fail_msg("%s wait-schema exited before its slice was migrated", services[j]);
            }
        }
    }
    drop_db(db);
}

/* A migrated database (the suite's clone of the template): exit 0 at once. A
 * recorded checksum that differs from the binary's file: exit 1 at once, not
 * after WAIT_SCHEMA_SECONDS, naming the file. */
static void test_checksum_mismatch_fails_at_once(void **state)
{
    (void)state;
    run_t r;
    long long t0 = mono_ms();
    int rc = run_cmd("job-worker", "wait-schema", db_url_as("ca_job_worker"), 60, &r);
    if (rc != 0 || mono_ms() - t0 > 2000) {
        print_log(&r);
        fail_msg("migrated database: exit %d after %lld ms, want 0 at once", rc, mono_ms() - t0);
    }
    unlink(r.log);

    char *name = sql_value("SELECT name FROM schema_migrations WHERE service = 'job-worker' AND "
                           "version <> '000' ORDER BY version LIMIT 1",
                           0, NULL);
    assert_non_null(name);
    assert_int_equal(sql_exec("UPDATE schema_migrations SET checksum = repeat('0', 64) "
                              "WHERE service = 'job-worker' AND name = $1",
                              1, (const char *[]){name}),
                     0);
    t0 = mono_ms();
    rc = run_cmd("job-worker", "wait-schema", db_url_as("ca_job_worker"), 60, &r);
    long long took = mono_ms() - t0;
    if (rc != 1 || took > 2000 || !log_has(&r, name) || !log_has(&r, "recorded with checksum")) {
        print_log(&r);
        fail_msg("tampered %s: exit %d after %lld ms, want 1 at once", name, rc, took);
    }
    unlink(r.log);
    /* Another slice is not concerned. */
    rc = run_cmd("api-gateway", "wait-schema", db_url_as("ca_api_gateway"), 60, &r);
    assert_int_equal(rc, 0);
    unlink(r.log);
    free(name);
}

/* A version recorded that the binary does not embed, numbered after its last
 * file (a newer release migrated, then this pod started during the rolling
 * update): exit 0, logged. A file of the binary missing from the records: it
 * waits (then gives up). */
static void test_newer_is_fine_missing_waits(void **state)
{
    (void)state;
    assert_int_equal(sql_exec("INSERT INTO schema_migrations (service, version, name, checksum) "
                              "VALUES ('drive-poller', '999', '999_from_a_newer_release.sql', 'x')",
                              0, NULL),
                     0);
    run_t r;
    int rc = run_cmd("drive-poller", "wait-schema", db_url_as("ca_drive_poller"), 60, &r);
    if (rc != 0 || !log_has(&r, "newest 999") || !log_has(&r, "newer release")) {
        print_log(&r);
        fail_msg("newer version recorded: exit %d, want 0 with a warning", rc);
    }
    unlink(r.log);

    char *name = sql_value("SELECT name FROM schema_migrations WHERE service = 'billing-webhook' "
                           "ORDER BY version DESC LIMIT 1",
                           0, NULL);
    assert_non_null(name);
    assert_int_equal(sql_exec("DELETE FROM schema_migrations WHERE service = 'billing-webhook' "
                              "AND name = $1",
                              1, (const char *[]){name}),
                     0);
    long long t0 = mono_ms();
    rc = run_cmd("billing-webhook", "wait-schema", db_url_as("ca_billing_webhook"), 2, &r);
    long long took = mono_ms() - t0;
    if (rc != 1 || took < 1900 || !log_has(&r, "not applied yet") || !log_has(&r, name)) {
        print_log(&r);
        fail_msg("missing %s: exit %d after %lld ms, want 1 after ~2 s", name, rc, took);
    }
    unlink(r.log);
    free(name);
}

/* What migrate granted on schema_migrations (the template was migrated by a
 * superuser): SELECT to each service role by name; nothing to PUBLIC; no
 * INSERT/UPDATE/DELETE to the service roles. */
static void test_grants_on_schema_migrations(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSVC; i++) {
        const char *p[1] = {roles[i]};
        char *sel =
            sql_value("SELECT has_table_privilege($1, 'schema_migrations', 'SELECT')", 1, p);
        char *wr = sql_value("SELECT has_table_privilege($1, 'schema_migrations', "
                             "'INSERT, UPDATE, DELETE, TRUNCATE')",
                             1, p);
        assert_non_null(sel);
        assert_non_null(wr);
        if (strcmp(sel, "t") != 0 || strcmp(wr, "f") != 0) {
            fail_msg("%s on schema_migrations: SELECT %s, write %s; want t, f", roles[i], sel, wr);
        }
        free(sel);
        free(wr);
    }
    char *pub = sql_value("SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a "
                          "WHERE c.oid = 'schema_migrations'::regclass AND a.grantee = 0",
                          0, NULL);
    assert_non_null(pub);
    assert_string_equal(pub, "0");
    free(pub);
}

int main(void)
{
    if (getenv("TEST_DATABASE_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL is not set (run through tests/run)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grants_on_schema_migrations),
        cmocka_unit_test(test_fresh_database_times_out),
        cmocka_unit_test(test_unreachable_database_is_waited_for),
        cmocka_unit_test(test_exits_once_migrated_concurrently),
        cmocka_unit_test(test_checksum_mismatch_fails_at_once),
        cmocka_unit_test(test_newer_is_fine_missing_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
