/*
 * Integration tests for common/migrate against a real PostgreSQL, with
 * synthetic migration files for fake services ("test-svc-…").
 */
#include "log.h"
#include "migrate.h"
#include "pg.h"
#include "support.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void exec_ok(pg_conn_t *c, const char *sql, int n, const char *const *p)
{
    char err[512];
    if (pg_exec_cmd(c, sql, n, p, err, sizeof err) != 0)
        fail_msg("%s: %s", sql, err);
}

/* The first value of a one-row query, copied into out ("<null>" for NULL). */
static void query_value(pg_conn_t *c, const char *sql, int n, const char *const *p, char *out,
                        size_t outlen)
{
    char err[512];
    PGresult *res = pg_exec(c, sql, n, p, err, sizeof err);
    if (res == NULL)
        fail_msg("%s: %s", sql, err);
    assert_int_equal(PQntuples(res), 1);
    snprintf(out, outlen, "%s", PQgetisnull(res, 0, 0) ? "<null>" : PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* Creates the service's role (roles are cluster-wide: only if missing) and
 * lets it create objects in public, as sql/000_roles.sql would. */
static void ensure_role(pg_conn_t *c, const char *service)
{
    char role[128];
    migrate_role_name(service, role, sizeof role);
    const char *p[1] = {role};
    char exists[16];
    query_value(c, "SELECT count(*) FROM pg_roles WHERE rolname = $1", 1, p, exists, sizeof exists);
    char *quoted = PQescapeIdentifier(pg_raw(c), role, strlen(role));
    assert_non_null(quoted);
    char sql[512];
    if (strcmp(exists, "0") == 0) {
        snprintf(sql, sizeof sql, "CREATE ROLE %s NOLOGIN", quoted);
        exec_ok(c, sql, 0, NULL);
    }
    snprintf(sql, sizeof sql, "GRANT CREATE, USAGE ON SCHEMA public TO %s", quoted);
    exec_ok(c, sql, 0, NULL);
    PQfreemem(quoted);
}

static void sha256_hex(const char *text, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL), 1);
    for (unsigned int i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static long count_of(pg_conn_t *c, const char *sql, const char *service)
{
    char v[32];
    const char *p[1] = {service};
    query_value(c, sql, service != NULL ? 1 : 0, p, v, sizeof v);
    return atol(v);
}

static void test_role_name(void **state)
{
    static const struct {
        const char *service;
        const char *role;
    } cases[] = {
        {"api-gateway", "ca_api_gateway"},
        {"drive-poller", "ca_drive_poller"},
        {"job-worker", "ca_job_worker"},
        {"billing-webhook", "ca_billing_webhook"},
        {"test-svc", "ca_test_svc"},
        {"Test-Svc", "ca_test_svc"},
        {"", "ca_"},
    };
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        migrate_role_name(cases[i].service, out, sizeof out);
        assert_string_equal(out, cases[i].role);
    }
    char small[8];
    migrate_role_name("job-worker", small, sizeof small);
    assert_string_equal(small, "ca_job_");
}

static void test_applies_in_order_and_records(void **state)
{
    pg_conn_t *c = db_connect_ok();
    ensure_role(c, "test-svc");
    migration_file_t files[] = {
        {"000_roles.sql", "CREATE TABLE IF NOT EXISTS mig_bootstrap (x int);"},
        {"001_first.sql", "CREATE TABLE mig_a (id int PRIMARY KEY, note text);\n"
                          "CREATE INDEX mig_a_note ON mig_a (note);"},
        /* needs 001: fails if run out of order */
        {"002_second.sql", "INSERT INTO mig_a VALUES (1, 'it''s; here');\n"
                           "CREATE TABLE mig_b (a_id int REFERENCES mig_a (id));\n"
                           "CREATE FUNCTION mig_f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;"},
    };
    char err[512];
    int applied = -1;
    assert_int_equal(migrate_apply(c, "test-svc", files, 3, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 3);
    assert_false(pg_in_transaction(c));

    char v[128];
    query_value(c, "SELECT note FROM mig_a WHERE id = 1", 0, NULL, v, sizeof v);
    assert_string_equal(v, "it's; here");
    assert_int_equal(
        count_of(c, "SELECT count(*) FROM schema_migrations WHERE service = $1", "test-svc"), 3);

    /* Rows: version is the NNN prefix, checksum the SHA-256 of the text. */
    PGresult *res = pg_exec(c,
                            "SELECT version, name, checksum FROM schema_migrations "
                            "WHERE service = 'test-svc' ORDER BY version",
                            0, NULL, err, sizeof err);
    assert_non_null(res);
    static const char *const versions[] = {"000", "001", "002"};
    for (int i = 0; i < 3; i++) {
        char sum[65];
        sha256_hex(files[i].sql, sum);
        assert_string_equal(PQgetvalue(res, i, 0), versions[i]);
        assert_string_equal(PQgetvalue(res, i, 1), files[i].name);
        assert_string_equal(PQgetvalue(res, i, 2), sum);
    }
    PQclear(res);

    /* Objects belong to the service's role; 000_roles ran as the session user. */
    query_value(c, "SELECT tableowner FROM pg_tables WHERE tablename = 'mig_a'", 0, NULL, v,
                sizeof v);
    assert_string_equal(v, "ca_test_svc");
    query_value(c, "SELECT tableowner FROM pg_tables WHERE tablename = 'mig_b'", 0, NULL, v,
                sizeof v);
    assert_string_equal(v, "ca_test_svc");
    query_value(c, "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'mig_f'", 0, NULL,
                v, sizeof v);
    assert_string_equal(v, "ca_test_svc");
    query_value(c, "SELECT tableowner FROM pg_tables WHERE tablename = 'mig_bootstrap'", 0, NULL, v,
                sizeof v);
    assert_string_equal(v, "postgres");
    /* The role is not left set on the session. */
    query_value(c, "SELECT current_user", 0, NULL, v, sizeof v);
    assert_string_equal(v, "postgres");

    /* Second run: nothing to do. */
    applied = -1;
    assert_int_equal(migrate_apply(c, "test-svc", files, 3, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);

    /* A new file is applied alone. */
    migration_file_t more[] = {
        files[0],
        files[1],
        files[2],
        {"003_third.sql", "ALTER TABLE mig_a ADD COLUMN extra int DEFAULT 3;"},
    };
    assert_int_equal(migrate_apply(c, "test-svc", more, 4, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 1);
    query_value(c, "SELECT extra FROM mig_a WHERE id = 1", 0, NULL, v, sizeof v);
    assert_string_equal(v, "3");

    /* The advisory lock was released: another session can take it at once. */
    pg_conn_t *c2 = db_connect_ok();
    query_value(c2, "SELECT pg_try_advisory_lock(hashtext('ca_migrate'))", 0, NULL, v, sizeof v);
    assert_string_equal(v, "t");
    pg_close(c2);
    pg_close(c);
}

static void test_changed_checksum_is_error(void **state)
{
    pg_conn_t *c = db_connect_ok();
    ensure_role(c, "test-svc-sum");
    migration_file_t files[] = {
        {"001_a.sql", "CREATE TABLE mig_sum_a (id int);"},
        {"002_b.sql", "CREATE TABLE mig_sum_b (id int);"},
    };
    char err[512];
    int applied = -1;
    assert_int_equal(migrate_apply(c, "test-svc-sum", files, 2, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 2);

    migration_file_t edited[] = {
        {"001_a.sql", "CREATE TABLE mig_sum_a (id bigint);"},
        {"002_b.sql", "CREATE TABLE mig_sum_b (id int);"},
        {"003_c.sql", "CREATE TABLE mig_sum_c (id int);"},
    };
    applied = -1;
    assert_int_equal(migrate_apply(c, "test-svc-sum", edited, 3, &applied, err, sizeof err), -1);
    assert_int_equal(applied, 0);
    assert_non_null(strstr(err, "001_a.sql"));
    assert_non_null(strstr(err, "checksum"));
    /* Nothing after it was applied either. */
    char v[16];
    query_value(c, "SELECT to_regclass('mig_sum_c') IS NULL", 0, NULL, v, sizeof v);
    assert_string_equal(v, "t");

    /* The same version under another service is independent. */
    ensure_role(c, "test-svc-other");
    migration_file_t other[] = {{"001_a.sql", "CREATE TABLE mig_other_a (id int);"}};
    assert_int_equal(migrate_apply(c, "test-svc-other", other, 1, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 1);

    /* Bad file lists are refused before anything runs. */
    migration_file_t unnumbered[] = {{"a.sql", "SELECT 1;"}};
    assert_int_equal(migrate_apply(c, "test-svc-sum", unnumbered, 1, &applied, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "a.sql"));
    migration_file_t unordered[] = {files[1], files[0]};
    assert_int_equal(migrate_apply(c, "test-svc-sum", unordered, 2, &applied, err, sizeof err), -1);
    pg_close(c);
}

static void test_failing_file_rolls_back(void **state)
{
    pg_conn_t *c = db_connect_ok();
    ensure_role(c, "test-svc-fail");
    migration_file_t files[] = {
        {"001_ok.sql", "CREATE TABLE mig_fail_ok (id int);"},
        {"002_bad.sql", "CREATE TABLE mig_fail_partial (id int);\n"
                        "INSERT INTO mig_fail_ok VALUES (1);\n"
                        "SELECT 1/0;"},
        {"003_after.sql", "CREATE TABLE mig_fail_after (id int);"},
    };
    char err[512];
    int applied = -1;
    assert_int_equal(migrate_apply(c, "test-svc-fail", files, 3, &applied, err, sizeof err), -1);
    assert_int_equal(applied, 1);
    assert_non_null(strstr(err, "002_bad.sql"));
    assert_non_null(strstr(err, "division by zero"));
    assert_false(pg_in_transaction(c));

    char v[16];
    query_value(c, "SELECT to_regclass('mig_fail_partial') IS NULL", 0, NULL, v, sizeof v);
    assert_string_equal(v, "t");
    query_value(c, "SELECT to_regclass('mig_fail_after') IS NULL", 0, NULL, v, sizeof v);
    assert_string_equal(v, "t");
    assert_int_equal(count_of(c, "SELECT count(*) FROM mig_fail_ok", NULL), 0);
    assert_int_equal(
        count_of(c, "SELECT count(*) FROM schema_migrations WHERE service = $1", "test-svc-fail"),
        1);

    /* A file that ends the transaction itself is refused. */
    migration_file_t committing[] = {files[0], {"002_commit.sql", "COMMIT; SELECT 1;"}};
    assert_int_equal(migrate_apply(c, "test-svc-fail", committing, 2, &applied, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "002_commit.sql"));

    /* Fixed (never recorded, so it may change) and run again: the rest applies. */
    files[1].sql = "CREATE TABLE mig_fail_partial (id int);\nINSERT INTO mig_fail_ok VALUES (1);";
    assert_int_equal(migrate_apply(c, "test-svc-fail", files, 3, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 2);
    assert_int_equal(count_of(c, "SELECT count(*) FROM mig_fail_ok", NULL), 1);

    /* The lock is free again after the failures. */
    pg_conn_t *c2 = db_connect_ok();
    query_value(c2, "SELECT pg_try_advisory_lock(hashtext('ca_migrate'))", 0, NULL, v, sizeof v);
    assert_string_equal(v, "t");
    pg_close(c2);
    pg_close(c);
}

/* ------------------------------------------------------------- concurrency */

static const migration_file_t race_files[] = {
    {"000_roles.sql", "SELECT 1;"},
    {"001_t.sql", "CREATE TABLE mig_race (id int); SELECT pg_sleep(0.2);"},
    {"002_rows.sql", "INSERT INTO mig_race VALUES (1);"},
    {"003_more.sql", "CREATE TABLE mig_race_2 (id int); INSERT INTO mig_race VALUES (2);"},
};

typedef struct {
    int rc;
    int applied;
    char err[512];
} race_t;

static void *race_thread(void *arg)
{
    race_t *r = arg;
    pg_conn_t *c = pg_connect(db_url(), 30000, r->err, sizeof r->err);
    if (c == NULL) {
        r->rc = -2;
        return NULL;
    }
    r->rc = migrate_apply(c, "test-svc-race", race_files, 4, &r->applied, r->err, sizeof r->err);
    pg_close(c);
    return NULL;
}

static void test_concurrent_replicas_apply_once(void **state)
{
    pg_conn_t *c = db_connect_ok();
    ensure_role(c, "test-svc-race");
    enum { T = 4 };
    pthread_t th[T];
    race_t r[T];
    memset(r, 0, sizeof r);
    for (int i = 0; i < T; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r[i]), 0);
    int total = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        if (r[i].rc != 0)
            fail_msg("thread %d: %s", i, r[i].err);
        total += r[i].applied;
    }
    assert_int_equal(total, 4);
    assert_int_equal(
        count_of(c, "SELECT count(*) FROM schema_migrations WHERE service = $1", "test-svc-race"),
        4);
    assert_int_equal(count_of(c, "SELECT count(*) FROM mig_race", NULL), 2);
    char v[64];
    query_value(c, "SELECT tableowner FROM pg_tables WHERE tablename = 'mig_race'", 0, NULL, v,
                sizeof v);
    assert_string_equal(v, "ca_test_svc_race");
    pg_close(c);
}

int main(void)
{
    log_init("test_migrate", CA_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_name),
        cmocka_unit_test(test_applies_in_order_and_records),
        cmocka_unit_test(test_changed_checksum_is_error),
        cmocka_unit_test(test_failing_file_rolls_back),
        cmocka_unit_test(test_concurrent_replicas_apply_once),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    log_shutdown();
    return failed;
}
