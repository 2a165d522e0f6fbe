/*
 * The database's side of issue 14, proven on a database migrated by the real
 * binaries: the runtime roles cannot CREATE in schema public nor write
 * schema_migrations (also after an older migrate left PUBLIC grants); every
 * SECURITY DEFINER function pins its search_path; the gateway cannot read
 * webhook_events; drive_polls_start_watch / stop_watch refuse another user's
 * id; a sealed token copied to another user's row does not open; and
 * `api-gateway rekey` re-seals every token under the current key so that the
 * old key can be removed; sign-in stores tokens sealed for the id it stores
 * them under (users_sign_in_id, then users_sign_in with that id: another id
 * is refused with 40001 and changes nothing). (serve refusing a superuser:
 * test_daemons.sh.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto.h"
#include "drive_auth.h"
#include "support.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY_OLD "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" /* 0123456789abcdef... */
#define KEY_NEW "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleSE=" /* new-key-new-key-... */

static const char *const roles[] = {"ca_api_gateway", "ca_billing_webhook", "ca_job_worker",
                                    "ca_drive_poller"};
#define NROLES (sizeof(roles) / sizeof(roles[0]))

static PGconn *connect_url(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fail_msg("connect: %s", PQerrorMessage(c));
    }
    return c;
}

/* The SQLSTATE of running sql ("" on success). */
static void run_state(PGconn *c, const char *sql, int n, const char *const *p, char *st,
                      size_t stlen)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(res);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
        snprintf(st, stlen, "%s", "");
    } else {
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(st, stlen, "%s", code != NULL ? code : "?");
    }
    PQclear(res);
}

static char *value(const char *sql, int n, const char *const *p)
{
    char *v = sql_value(sql, n, p);
    if (v == NULL) {
        fail_msg("no value from: %s", sql);
    }
    return v;
}

static long count(const char *sql, int n, const char *const *p)
{
    char *v = value(sql, n, p);
    long r = atol(v);
    free(v);
    return r;
}

static void make_user(const char *tag, char uid[37])
{
    char email[96];
    snprintf(email, sizeof(email), "%s-%d@example.com", tag, rand());
    const char *p[] = {email};
    char *v =
        value("INSERT INTO users (google_id, email) VALUES ('g-' || $1, $1) RETURNING id", 1, p);
    snprintf(uid, 37, "%s", v);
    free(v);
}

/* Runs $CA_BIN/api-gateway CMD with extra environment; returns its exit status. */
static int run_gateway(const char *cmd, const char *const *env, const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
            putenv((char *)env[i]);
        }
        if (freopen(log, "w", stdout) == NULL || freopen(log, "a", stderr) == NULL) {
            _exit(120);
        }
        char path[512];
        snprintf(path, sizeof(path), "%s/api-gateway", getenv("CA_BIN"));
        execl(path, path, cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* ---- schema public, schema_migrations ---- */

static void test_runtime_roles_cannot_create_in_public(void **state)
{
    (void)state;
    for (size_t r = 0; r < NROLES; r++) {
        PGconn *c = connect_url(db_url_as(roles[r]));
        char st[8];
        run_state(c, "CREATE TABLE public.planted (x int)", 0, NULL, st, sizeof(st));
        if (strcmp(st, "42501") != 0) {
            fail_msg("%s: CREATE TABLE in public gave '%s', want 42501", roles[r], st);
        }
        run_state(c, "CREATE FUNCTION public.now_planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                  0, NULL, st, sizeof(st));
        if (strcmp(st, "42501") != 0) {
            fail_msg("%s: CREATE FUNCTION in public gave '%s', want 42501", roles[r], st);
        }
        PQfinish(c);
    }
    assert_int_equal(count("SELECT count(*) FROM unnest($1::text[]) r "
                           "WHERE has_schema_privilege(r, 'public', 'CREATE')",
                           1,
                           (const char *[]){"{ca_api_gateway,ca_billing_webhook,ca_job_worker,"
                                            "ca_drive_poller}"}),
                     0);
}

static void test_runtime_roles_cannot_write_schema_migrations(void **state)
{
    (void)state;
    /* A database migrated by an older migrate that granted PUBLIC: the next
     * migrate takes it back. */
    assert_int_equal(sql_exec("GRANT SELECT, INSERT ON schema_migrations TO PUBLIC", 0, NULL), 0);
    assert_int_equal(
        sql_exec("GRANT CREATE ON SCHEMA public TO ca_api_gateway, ca_job_worker", 0, NULL), 0);
    char env_url[600];
    snprintf(env_url, sizeof(env_url), "DATABASE_URL=%s", db_url());
    const char *env[] = {env_url, "LOG_LEVEL=warn", NULL};
    assert_int_equal(run_gateway("migrate", env, "/dev/null"), 0);

    for (size_t r = 0; r < NROLES; r++) {
        PGconn *c = connect_url(db_url_as(roles[r]));
        char st[8];
        run_state(c,
                  "INSERT INTO schema_migrations (service, version, name, checksum) "
                  "VALUES ('api-gateway', '999', '999_fake.sql', 'x')",
                  0, NULL, st, sizeof(st));
        if (strcmp(st, "42501") != 0) {
            fail_msg("%s: INSERT INTO schema_migrations gave '%s', want 42501", roles[r], st);
        }
        run_state(c, "DELETE FROM schema_migrations", 0, NULL, st, sizeof(st));
        if (strcmp(st, "42501") != 0) {
            fail_msg("%s: DELETE FROM schema_migrations gave '%s', want 42501", roles[r], st);
        }
        PQfinish(c);
    }
    assert_int_equal(count("SELECT count(*) FROM unnest(ARRAY['INSERT','UPDATE','DELETE',"
                           "'TRUNCATE']) p "
                           "WHERE has_table_privilege('public', 'schema_migrations', p)",
                           0, NULL),
                     0);
    assert_int_equal(count("SELECT count(*) FROM unnest($1::text[]) r "
                           "WHERE has_schema_privilege(r, 'public', 'CREATE')",
                           1, (const char *[]){"{ca_api_gateway,ca_job_worker}"}),
                     0);
}

static void test_security_definer_functions_pin_search_path(void **state)
{
    (void)state;
    /* every SECURITY DEFINER function, in any schema but the system's */
    assert_true(count("SELECT count(*) FROM pg_proc p WHERE p.prosecdef", 0, NULL) > 10);
    char *bad = value("SELECT COALESCE(string_agg(p.oid::regprocedure::text, ', '), '') "
                      "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                      "WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', "
                      "'information_schema') "
                      "AND NOT ('search_path=public, pg_temp' = ANY (COALESCE(p.proconfig, "
                      "'{}')))",
                      0, NULL);
    if (bad[0] != '\0') {
        fail_msg("SECURITY DEFINER without a pinned search_path: %s", bad);
    }
    free(bad);
}

/* ---- webhook_events ---- */

static void test_gateway_cannot_read_webhook_events(void **state)
{
    (void)state;
    PGconn *c = connect_url(db_url_as("ca_api_gateway"));
    char st[8];
    run_state(c, "SELECT count(*) FROM webhook_events", 0, NULL, st, sizeof(st));
    assert_string_equal(st, "42501");
    PQfinish(c);
    c = connect_url(db_url_as("ca_billing_webhook"));
    run_state(c, "SELECT count(*) FROM webhook_events", 0, NULL, st, sizeof(st));
    assert_string_equal(st, "");
    PQfinish(c);
}

/* ---- drive_polls_start_watch / stop_watch ---- */

static void test_watch_functions_check_the_caller(void **state)
{
    (void)state;
    char a[37], b[37];
    make_user("watch-a", a);
    make_user("watch-b", b);
    /* b watches a folder (as b) */
    PGconn *gw = connect_url(db_url_as("ca_api_gateway"));
    char st[8];
    run_state(gw, "SELECT set_config('app.user_id', $1, false)", 1, (const char *[]){b}, st,
              sizeof(st));
    assert_string_equal(st, "");
    run_state(gw, "SELECT drive_polls_start_watch($1, 'folder_b', NULL, NULL)", 1,
              (const char *[]){b}, st, sizeof(st));
    assert_string_equal(st, "");

    /* a's transaction names b: refused, b's watch untouched */
    run_state(gw, "SELECT set_config('app.user_id', $1, false)", 1, (const char *[]){a}, st,
              sizeof(st));
    run_state(gw, "SELECT drive_polls_stop_watch($1)", 1, (const char *[]){b}, st, sizeof(st));
    assert_string_equal(st, "42501");
    run_state(gw, "SELECT drive_polls_start_watch($1, 'folder_evil', NULL, NULL)", 1,
              (const char *[]){b}, st, sizeof(st));
    assert_string_equal(st, "42501");
    /* no user at all: refused too */
    run_state(gw, "SELECT set_config('app.user_id', '', false)", 0, NULL, st, sizeof(st));
    run_state(gw, "SELECT drive_polls_stop_watch($1)", 1, (const char *[]){b}, st, sizeof(st));
    assert_string_equal(st, "42501");
    assert_int_equal(count("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND active "
                           "AND folder_id = 'folder_b'",
                           1, (const char *[]){b}),
                     1);
    assert_int_equal(
        count("SELECT count(*) FROM drive_polls WHERE folder_id = 'folder_evil'", 0, NULL), 0);
    /* a's own: allowed */
    run_state(gw, "SELECT set_config('app.user_id', $1, false)", 1, (const char *[]){a}, st,
              sizeof(st));
    run_state(gw, "SELECT drive_polls_stop_watch($1)", 1, (const char *[]){a}, st, sizeof(st));
    assert_string_equal(st, "");
    PQfinish(gw);
}

/* ---- sealed tokens ---- */

static crypto_keyring_t *ring(const char *current, const char *old)
{
    char err[256];
    crypto_keyring_t *k = crypto_keyring_new(current, old, err, sizeof(err));
    if (k == NULL) {
        fail_msg("keyring: %s", err);
    }
    return k;
}

static void store(const char *uid, const char *access, const char *refresh)
{
    assert_int_equal(sql_exec("UPDATE users SET drive_access_token = $2, drive_refresh_token = $3,"
                              " drive_connected = true WHERE id = $1",
                              3, (const char *[]){uid, access, refresh}),
                     0);
}

static char *stored(const char *uid, const char *column)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT %s FROM users WHERE id = $1", column);
    return value(sql, 1, (const char *[]){uid});
}

static void test_token_copied_to_another_row_does_not_open(void **state)
{
    (void)state;
    crypto_keyring_t *k = ring(KEY_NEW, NULL);
    char a[37], b[37];
    make_user("seal-a", a);
    make_user("seal-b", b);
    char *sealed_a = crypto_envelope_seal_bound(k, "ya29.token-of-a", a);
    assert_non_null(sealed_a);
    store(a, sealed_a, sealed_a);
    store(b, sealed_a, sealed_a); /* copied into b's row */

    char *in_b = stored(b, "drive_access_token");
    assert_null(crypto_envelope_open_bound(k, in_b, b));
    char *pt = crypto_envelope_open_bound(k, in_b, a);
    assert_non_null(pt);
    assert_string_equal(pt, "ya29.token-of-a");
    crypto_free_secret(pt);

    /* rekey does not launder it either: left as is, counted, exit 1 */
    pg_conn_t *pg = db_connect_ok();
    drive_auth_rekey_stats_t st;
    char err[256];
    assert_int_equal(drive_auth_rekey(pg, k, &st, err, sizeof(err)), 0);
    assert_true(st.unopenable >= 2);
    char *after = stored(b, "drive_access_token");
    assert_string_equal(after, sealed_a);
    pg_close(pg);
    assert_int_equal(sql_exec("UPDATE users SET drive_access_token = NULL, "
                              "drive_refresh_token = NULL WHERE id = $1",
                              1, (const char *[]){b}),
                     0);
    free(after);
    free(in_b);
    free(sealed_a);
    crypto_keyring_free(k);
}

static void test_rekey_reseals_every_token(void **state)
{
    (void)state;
    /* whatever earlier tests left: no tokens but ours */
    assert_int_equal(
        sql_exec("UPDATE users SET drive_access_token = NULL, drive_refresh_token = NULL", 0, NULL),
        0);
    crypto_keyring_t *old_only = ring(KEY_OLD, NULL);
    enum { N = 130 }; /* more than one batch of 100 */
    static char uid[N][37];
    for (int i = 0; i < N; i++) {
        make_user("rekey", uid[i]);
        char access[64], refresh[64];
        snprintf(access, sizeof(access), "ya29.access-%d", i);
        snprintf(refresh, sizeof(refresh), "1//refresh-%d", i);
        /* a third legacy v1 (no binding), the rest v2 bound; all under the old key */
        char *sa = i % 3 == 0 ? crypto_envelope_seal(old_only, access)
                              : crypto_envelope_seal_bound(old_only, access, uid[i]);
        char *sr = i % 2 == 0 ? crypto_envelope_seal(old_only, refresh)
                              : crypto_envelope_seal_bound(old_only, refresh, uid[i]);
        store(uid[i], sa, i % 5 == 0 ? NULL : sr);
        free(sa);
        free(sr);
    }

    char key_env[128], old_env[128], url_env[600];
    snprintf(key_env, sizeof(key_env), "ENCRYPTION_KEY=%s", KEY_NEW);
    snprintf(old_env, sizeof(old_env), "ENCRYPTION_KEYS_OLD=%s", KEY_OLD);
    snprintf(url_env, sizeof(url_env), "DATABASE_URL=%s", db_url_as("ca_api_gateway"));
    const char *env[] = {key_env, old_env, url_env, NULL};
    char log[] = "/tmp/ca-rekey-XXXXXX";
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    close(fd);
    int rc = run_gateway("rekey", env, log);
    if (rc != 0) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "cat %s >&2", log);
        (void)system(cmd);
    }
    assert_int_equal(rc, 0);

    /* the old key removed: every token opens, bound to its own user */
    crypto_keyring_t *new_only = ring(KEY_NEW, NULL);
    for (int i = 0; i < N; i++) {
        char want[64];
        char *sa = stored(uid[i], "drive_access_token");
        assert_false(crypto_envelope_needs_reseal(new_only, sa, uid[i]));
        char *pt = crypto_envelope_open_bound(new_only, sa, uid[i]);
        snprintf(want, sizeof(want), "ya29.access-%d", i);
        assert_non_null(pt);
        assert_string_equal(pt, want);
        assert_int_equal(strncmp(sa, "v2:", 3), 0);
        crypto_free_secret(pt);
        free(sa);
        if (i % 5 != 0) {
            char *sr = stored(uid[i], "drive_refresh_token");
            pt = crypto_envelope_open_bound(new_only, sr, uid[i]);
            snprintf(want, sizeof(want), "1//refresh-%d", i);
            assert_non_null(pt);
            assert_string_equal(pt, want);
            crypto_free_secret(pt);
            free(sr);
        }
    }
    /* a second run has nothing to do */
    pg_conn_t *pg = db_connect_ok();
    drive_auth_rekey_stats_t st;
    char err[256];
    assert_int_equal(drive_auth_rekey(pg, new_only, &st, err, sizeof(err)), 0);
    assert_int_equal(st.resealed, 0);
    assert_int_equal(st.unopenable, 0);
    assert_int_equal(st.users, N);
    pg_close(pg);
    unlink(log);
    crypto_keyring_free(old_only);
    crypto_keyring_free(new_only);
}

/* ---- sign-in: the id the tokens are sealed for ---- */

static char *sign_in_id(PGconn *c, const char *google_id)
{
    PGresult *res = PQexecParams(c, "SELECT users_sign_in_id($1)", 1, NULL,
                                 (const char *[]){google_id}, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        fail_msg("users_sign_in_id: %s", PQresultErrorMessage(res));
    }
    char *v = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

#define SIGN_IN_SQL "SELECT users_sign_in($1, $2, 'Name', NULL, $3, $4, 3600, '127.0.0.1', $5)"

static void test_sign_in_stores_tokens_for_the_sealed_id(void **state)
{
    (void)state;
    crypto_keyring_t *k = ring(KEY_OLD, NULL);
    char google_id[64], email[96];
    snprintf(google_id, sizeof(google_id), "g-bind-%d", rand());
    snprintf(email, sizeof(email), "bind-%d@example.com", rand());
    PGconn *gw = connect_url(db_url_as("ca_api_gateway"));

    /* a new Google account: a fresh id each time, nothing written */
    char *id = sign_in_id(gw, google_id);
    char *other = sign_in_id(gw, google_id);
    assert_int_equal(strlen(id), 36);
    assert_string_not_equal(id, other);
    assert_int_equal(
        count("SELECT count(*) FROM users WHERE google_id = $1", 1, (const char *[]){google_id}),
        0);

    /* the first sign-in inserts the row under that id */
    char *access = crypto_envelope_seal_bound(k, "ya29.bind-access", id);
    char *refresh = crypto_envelope_seal_bound(k, "1//bind-refresh", id);
    PGresult *res =
        PQexecParams(gw, SIGN_IN_SQL, 5, NULL,
                     (const char *[]){google_id, email, access, refresh, id}, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), id);
    PQclear(res);
    char *again = sign_in_id(gw, google_id);
    assert_string_equal(again, id);
    free(again);
    char *in_row = stored(id, "drive_access_token");
    assert_string_equal(in_row, access);
    free(in_row);

    /* a sign-in that sealed for another id (a concurrent first sign-in of the
     * same account): 40001, the row is not touched */
    char *wrong_access = crypto_envelope_seal_bound(k, "ya29.raced", other);
    char *wrong_refresh = crypto_envelope_seal_bound(k, "1//raced", other);
    char st[8];
    run_state(gw, SIGN_IN_SQL, 5,
              (const char *[]){google_id, "raced@example.com", wrong_access, wrong_refresh, other},
              st, sizeof(st));
    assert_string_equal(st, "40001");
    assert_int_equal(count("SELECT count(*) FROM users WHERE google_id = $1 AND id = $2 "
                           "AND drive_access_token = $3 AND drive_refresh_token = $4 "
                           "AND email = $5",
                           5, (const char *[]){google_id, id, access, refresh, email}),
                     1);
    assert_int_equal(count("SELECT count(*) FROM users WHERE id = $1", 1, (const char *[]){other}),
                     0);
    assert_int_equal(count("SELECT count(*) FROM audit_log WHERE user_id = $1 "
                           "AND action = 'auth.login'",
                           1, (const char *[]){id}),
                     1);

    /* the id is required; the unbound 8-argument form is gone */
    run_state(gw, SIGN_IN_SQL, 5, (const char *[]){google_id, email, access, refresh, NULL}, st,
              sizeof(st));
    assert_string_equal(st, "22004");
    run_state(gw, "SELECT users_sign_in($1, $2, NULL, NULL, $3, NULL, 3600, NULL)", 3,
              (const char *[]){google_id, email, access}, st, sizeof(st));
    assert_string_equal(st, "42883");
    PQfinish(gw);

    /* only the gateway may call them */
    for (size_t r = 1; r < NROLES; r++) {
        PGconn *c = connect_url(db_url_as(roles[r]));
        run_state(c, "SELECT users_sign_in_id($1)", 1, (const char *[]){google_id}, st, sizeof(st));
        if (strcmp(st, "42501") != 0) {
            fail_msg("%s: users_sign_in_id gave '%s', want 42501", roles[r], st);
        }
        run_state(c, SIGN_IN_SQL, 5, (const char *[]){google_id, email, access, refresh, id}, st,
                  sizeof(st));
        if (strcmp(st, "42501") != 0) {
            fail_msg("%s: users_sign_in gave '%s', want 42501", roles[r], st);
        }
        PQfinish(c);
    }
    assert_int_equal(count("SELECT count(*) FROM pg_proc p WHERE p.proname IN "
                           "('users_sign_in', 'users_sign_in_id') "
                           "AND has_function_privilege('public', p.oid, 'EXECUTE')",
                           0, NULL),
                     0);

    /* leave no tokens behind for the other tests' rekey runs */
    assert_int_equal(sql_exec("UPDATE users SET drive_access_token = NULL, "
                              "drive_refresh_token = NULL WHERE id = $1",
                              1, (const char *[]){id}),
                     0);
    free(id);
    free(other);
    free(access);
    free(refresh);
    free(wrong_access);
    free(wrong_refresh);
    crypto_keyring_free(k);
}

int main(void)
{
    if (getenv("TEST_DATABASE_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL is not set (run through tests/run)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime_roles_cannot_create_in_public),
        cmocka_unit_test(test_runtime_roles_cannot_write_schema_migrations),
        cmocka_unit_test(test_security_definer_functions_pin_search_path),
        cmocka_unit_test(test_gateway_cannot_read_webhook_events),
        cmocka_unit_test(test_watch_functions_check_the_caller),
        cmocka_unit_test(test_token_copied_to_another_row_does_not_open),
        cmocka_unit_test(test_rekey_reseals_every_token),
        cmocka_unit_test(test_sign_in_stores_tokens_for_the_sealed_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
