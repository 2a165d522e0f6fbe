/*
 * Integration tests for common/pg: the blocking connection and the libevent
 * pool against a real PostgreSQL (TEST_DATABASE_URL), including restarts.
 */
#include "log.h"
#include "pg.h"
#include "support.h"

#include <event2/event.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void exec_ok(pg_conn_t *c, const char *sql)
{
    char err[512];
    if (pg_exec_cmd(c, sql, 0, NULL, err, sizeof err) != 0)
        fail_msg("%s: %s", sql, err);
}

/* ---------------------------------------------------------------- blocking */

static void test_params_null_and_injection(void **state)
{
    pg_conn_t *c = db_connect_ok();
    exec_ok(c, "CREATE TABLE pg_t_params (id int PRIMARY KEY, a text, b text)");

    static const struct {
        const char *a;
        const char *b;
    } rows[] = {
        {"Robert'); DROP TABLE pg_t_params;--", NULL},
        {"$1 $2 \\x00 \\' \"quoted\"", "; SELECT pg_sleep(10); --"},
        {"", "unicode: \xc3\xa9\xe2\x82\xac\xf0\x9f\x93\xb7"},
        {NULL, "' OR '1'='1"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char id[16];
        snprintf(id, sizeof id, "%zu", i);
        const char *p[3] = {id, rows[i].a, rows[i].b};
        assert_int_equal(pg_exec_cmd(c, "INSERT INTO pg_t_params (id, a, b) VALUES ($1, $2, $3)", 3,
                                     p, err, sizeof err),
                         0);
    }
    PGresult *res =
        pg_exec(c, "SELECT id, a, b FROM pg_t_params ORDER BY id", 0, NULL, err, sizeof err);
    assert_non_null(res);
    assert_int_equal(PQntuples(res), 4);
    for (int i = 0; i < 4; i++) {
        if (rows[i].a == NULL) {
            assert_true(PQgetisnull(res, i, 1));
        } else {
            assert_false(PQgetisnull(res, i, 1));
            assert_string_equal(PQgetvalue(res, i, 1), rows[i].a);
        }
        if (rows[i].b == NULL) {
            assert_true(PQgetisnull(res, i, 2));
        } else {
            assert_false(PQgetisnull(res, i, 2));
            assert_string_equal(PQgetvalue(res, i, 2), rows[i].b);
        }
    }
    PQclear(res);
    assert_string_equal(pg_last_sqlstate(c), "");

    /* A syntax error is an error with its SQLSTATE, not a crash. */
    res = pg_exec(c, "SELEC 1", 0, NULL, err, sizeof err);
    assert_null(res);
    assert_string_equal(pg_last_sqlstate(c), "42601");
    assert_non_null(strstr(err, "syntax error"));
    assert_null(strchr(err, '\n'));
    pg_close(c);
}

static long count_rows(pg_conn_t *c, const char *table)
{
    char sql[256], err[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    PGresult *res = pg_exec(c, sql, 0, NULL, err, sizeof err);
    if (res == NULL)
        fail_msg("%s: %s", sql, err);
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

static void test_transactions(void **state)
{
    pg_conn_t *c = db_connect_ok();
    char err[512];
    exec_ok(c, "CREATE TABLE pg_t_tx (v text)");
    const char *p[1] = {"committed"};

    assert_false(pg_in_transaction(c));
    assert_int_equal(pg_begin(c, err, sizeof err), 0);
    assert_true(pg_in_transaction(c));
    assert_int_equal(pg_begin(c, err, sizeof err), -1); /* no nesting */
    assert_int_equal(pg_exec_cmd(c, "INSERT INTO pg_t_tx VALUES ($1)", 1, p, err, sizeof err), 0);
    assert_int_equal(pg_commit(c, err, sizeof err), 0);
    assert_false(pg_in_transaction(c));
    assert_int_equal(count_rows(c, "pg_t_tx"), 1);

    p[0] = "rolled back";
    assert_int_equal(pg_begin(c, err, sizeof err), 0);
    assert_int_equal(pg_exec_cmd(c, "INSERT INTO pg_t_tx VALUES ($1)", 1, p, err, sizeof err), 0);
    pg_rollback(c);
    assert_false(pg_in_transaction(c));
    assert_int_equal(count_rows(c, "pg_t_tx"), 1);

    /* A failed statement aborts the transaction: COMMIT reports it. */
    assert_int_equal(pg_begin(c, err, sizeof err), 0);
    assert_int_equal(pg_exec_cmd(c, "INSERT INTO pg_t_tx VALUES ($1)", 1, p, err, sizeof err), 0);
    assert_int_equal(pg_exec_cmd(c, "SELECT 1/0", 0, NULL, err, sizeof err), -1);
    assert_string_equal(pg_last_sqlstate(c), "22012");
    assert_true(pg_in_transaction(c));
    assert_int_equal(pg_commit(c, err, sizeof err), -1);
    assert_false(pg_in_transaction(c));
    assert_int_equal(count_rows(c, "pg_t_tx"), 1);

    pg_rollback(c); /* harmless outside a transaction */
    pg_close(c);
}

static void test_unique_violation_sqlstate(void **state)
{
    pg_conn_t *c = db_connect_ok();
    char err[512];
    exec_ok(c, "CREATE TABLE pg_t_uniq (k text PRIMARY KEY)");
    const char *p[1] = {"same"};
    assert_int_equal(pg_exec_cmd(c, "INSERT INTO pg_t_uniq VALUES ($1)", 1, p, err, sizeof err), 0);
    assert_int_equal(pg_exec_cmd(c, "INSERT INTO pg_t_uniq VALUES ($1)", 1, p, err, sizeof err),
                     -1);
    assert_string_equal(pg_last_sqlstate(c), "23505");
    assert_false(pg_error_is_retryable(c));
    assert_non_null(strstr(err, "duplicate key"));
    /* The next good statement clears it. */
    assert_int_equal(count_rows(c, "pg_t_uniq"), 1);
    assert_string_equal(pg_last_sqlstate(c), "");
    pg_close(c);
}

/* pg_exec_prepared: prepared once per session under its name, the same
 * results as pg_exec; prepared again on the new session after a restart. */
static void prepared_count(pg_conn_t *c, const char *want)
{
    char err[512];
    PGresult *res = pg_exec(c, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'pg_t_p'",
                            0, NULL, err, sizeof err);
    if (res == NULL)
        fail_msg("%s", err);
    assert_string_equal(PQgetvalue(res, 0, 0), want);
    PQclear(res);
}

static void test_prepared_statement(void **state)
{
    (void)state;
    pg_conn_t *c = db_connect_ok();
    char err[512];
    for (int i = 0; i < 3; i++) {
        const char *p[2] = {"40", i == 1 ? NULL : "2"};
        PGresult *res =
            pg_exec_prepared(c, "pg_t_p", "SELECT $1::int + $2::int", 2, p, err, sizeof err);
        if (res == NULL)
            fail_msg("prepared %d: %s", i, err);
        if (i == 1)
            assert_true(PQgetisnull(res, 0, 0));
        else
            assert_string_equal(PQgetvalue(res, 0, 0), "42");
        PQclear(res);
        prepared_count(c, "1"); /* prepared once, then reused */
    }
    /* an error is an error, as with pg_exec */
    const char *bad[2] = {"x", "1"};
    assert_null(pg_exec_prepared(c, "pg_t_p", "SELECT $1::int + $2::int", 2, bad, err, sizeof err));
    assert_string_equal(pg_last_sqlstate(c), "22P02");

    assert_int_equal(services_sh("restart-pg"), 0);
    const char *p[2] = {"1", "2"};
    PGresult *res =
        pg_exec_prepared(c, "pg_t_p", "SELECT $1::int + $2::int", 2, p, err, sizeof err);
    if (res == NULL)
        fail_msg("after restart: %s", err);
    assert_string_equal(PQgetvalue(res, 0, 0), "3");
    PQclear(res);
    prepared_count(c, "1");
    pg_close(c);
}

static void test_survives_restart(void **state)
{
    pg_conn_t *c = db_connect_ok();
    char err[512];
    exec_ok(c, "CREATE TABLE pg_t_restart (v int)");
    exec_ok(c, "INSERT INTO pg_t_restart VALUES (1)");
    int pid_before = PQbackendPID(pg_raw(c));

    assert_int_equal(services_sh("restart-pg"), 0);

    /* Outside a transaction the statement is retried on a new connection. */
    PGresult *res = pg_exec(c, "SELECT count(*) FROM pg_t_restart", 0, NULL, err, sizeof err);
    if (res == NULL)
        fail_msg("after restart: %s", err);
    assert_string_equal(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    assert_int_not_equal(PQbackendPID(pg_raw(c)), pid_before);

    /* Inside a transaction it fails, the caller rolls back and runs it again. */
    assert_int_equal(pg_begin(c, err, sizeof err), 0);
    exec_ok(c, "INSERT INTO pg_t_restart VALUES (2)");
    assert_int_equal(services_sh("restart-pg"), 0);
    assert_int_equal(
        pg_exec_cmd(c, "INSERT INTO pg_t_restart VALUES (3)", 0, NULL, err, sizeof err), -1);
    assert_true(pg_in_transaction(c));
    assert_true(pg_error_is_retryable(c));
    assert_int_equal(pg_commit(c, err, sizeof err), -1);
    pg_rollback(c);
    assert_false(pg_in_transaction(c));
    assert_int_equal(count_rows(c, "pg_t_restart"), 1); /* 2 and 3 never committed */
    pg_close(c);
}

static void test_connect_waits_for_server(void **state)
{
    assert_int_equal(services_sh("stop-pg"), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        sleep(1);
        const char *root = getenv("CA_ROOT");
        char line[1024];
        snprintf(line, sizeof line, "\"%s/tests/lib/services.sh\" start-pg",
                 root != NULL ? root : ".");
        _exit(system(line) == 0 ? 0 : 1);
    }
    char err[512];
    pg_conn_t *c = pg_connect(db_url(), 60000, err, sizeof err);
    int status = 0;
    waitpid(child, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (c == NULL)
        fail_msg("pg_connect while starting: %s", err);
    assert_true(pg_ping(c));
    pg_close(c);
}

static void test_connect_deadline_and_ping_while_down(void **state)
{
    pg_conn_t *c = db_connect_ok();
    assert_true(pg_ping(c));
    assert_int_equal(services_sh("stop-pg"), 0);

    assert_false(pg_ping(c));

    /* A deadline ends the retries with an error. */
    char err[512] = "";
    pg_conn_t *c2 = pg_connect(db_url(), 700, err, sizeof err);
    assert_null(c2);
    assert_true(err[0] != '\0');

    /* A statement fails (after its bounded reconnect) instead of hanging. */
    assert_int_equal(services_sh("start-pg"), 0);
    assert_true(pg_ping(c)); /* one reconnect attempt, server is back */
    PGresult *res = pg_exec(c, "SELECT 42", 0, NULL, err, sizeof err);
    assert_non_null(res);
    assert_string_equal(PQgetvalue(res, 0, 0), "42");
    PQclear(res);
    pg_close(c);
}

/* A backend that stops answering (frozen with SIGSTOP) does not hang the ping:
 * after its 2 s timeout the connection is replaced by a fresh one (the server
 * itself still accepts connections, so the ping then succeeds). */
static void test_ping_does_not_hang(void **state)
{
    pg_conn_t *c = db_connect_ok();
    int backend = PQbackendPID(pg_raw(c));
    if (kill(backend, SIGSTOP) != 0) {
        pg_close(c);
        skip(); /* not allowed to signal the server's processes */
    }
    bool ok = pg_ping(c);
    kill(backend, SIGCONT);
    assert_true(ok);
    assert_int_not_equal(PQbackendPID(pg_raw(c)), backend);
    assert_true(pg_ping(c));
    pg_close(c);
}

static void *set_abort_later(void *arg)
{
    usleep(400 * 1000);
    pg_abort_flag = 1;
    return NULL;
}

static void test_abort_flag_stops_forever_connect(void **state)
{
    assert_int_equal(services_sh("stop-pg"), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, set_abort_later, NULL), 0);
    char err[512];
    pg_conn_t *c = pg_connect(db_url(), 0, err, sizeof err);
    pthread_join(th, NULL);
    pg_abort_flag = 0;
    assert_int_equal(services_sh("start-pg"), 0);
    assert_null(c);
}

/* The password of the URL never reaches the log. */
static void test_password_not_logged(void **state)
{
    char path[] = "/tmp/ca-pglog.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    log_set_fd(fd);

    const char *base = db_url(); /* postgresql://postgres@127.0.0.1:PORT/db */
    const char *at = strchr(base + strlen("postgresql://"), '@');
    assert_non_null(at);
    char url[512];
    snprintf(url, sizeof url, "postgresql://postgres:Pw-s3cr3t-zz@%s", at + 1);

    assert_int_equal(services_sh("stop-pg"), 0);
    char err[512];
    pg_conn_t *c = pg_connect(url, 400, err, sizeof err);
    assert_null(c);
    assert_int_equal(services_sh("start-pg"), 0);
    c = pg_connect(url, 30000, err, sizeof err);
    assert_non_null(c);
    pg_close(c);

    log_set_fd(-1);
    char buf[65536];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0); /* the failed attempt was logged */
    buf[n] = '\0';
    assert_null(strstr(buf, "s3cr3t"));
    assert_null(strstr(err, "s3cr3t"));
}

/* -------------------------------------------------------------------- pool */

typedef struct {
    struct event_base *base;
    int expected;
    int done;
    int ok;
    int failed;
    char last_err[512];
    char last_sqlstate[6];
    char last_value[256];
    bool last_null;
} pool_run_t;

typedef struct {
    pool_run_t *run;
    int want; /* expected integer result, or -1 to only record */
} pool_call_t;

static void pool_cb(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    pool_call_t *call = arg;
    pool_run_t *run = call->run;
    run->done++;
    if (res == NULL) {
        run->failed++;
        assert_non_null(err);
        assert_non_null(sqlstate);
        snprintf(run->last_err, sizeof run->last_err, "%s", err);
        snprintf(run->last_sqlstate, sizeof run->last_sqlstate, "%s", sqlstate);
    } else {
        run->ok++;
        run->last_null = PQntuples(res) < 1 || PQgetisnull(res, 0, 0);
        snprintf(run->last_value, sizeof run->last_value, "%s",
                 PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
        if (call->want >= 0)
            assert_int_equal(atoi(PQgetvalue(res, 0, 0)), call->want);
    }
    if (run->done == run->expected)
        event_base_loopbreak(run->base);
}

/* Runs the loop until `expected` callbacks arrived, at most timeout_s. */
static void pool_wait(pool_run_t *run, int timeout_s)
{
    struct timeval tv = {.tv_sec = timeout_s, .tv_usec = 0};
    int64_t end = mono_ms() + timeout_s * 1000;
    while (run->done < run->expected && mono_ms() < end) {
        event_base_loopexit(run->base, &tv);
        event_base_dispatch(run->base);
    }
    assert_int_equal(run->done, run->expected);
}

/* Runs the loop until `n` connections are up, at most timeout_s. */
static void pool_wait_healthy(struct event_base *base, pg_pool_t *pool, int n, int timeout_s)
{
    int64_t end = mono_ms() + timeout_s * 1000;
    while (pg_pool_healthy(pool) < n && mono_ms() < end) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 20 * 1000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    assert_int_equal(pg_pool_healthy(pool), n);
}

static void pool_query_ok(pg_pool_t *pool, const char *uid, const char *sql, int n,
                          const char *const *p, pool_call_t *call)
{
    assert_int_equal(pg_pool_query(pool, uid, sql, n, p, pool_cb, call), 0);
}

static void test_pool_200_queries(void **state)
{
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, db_url(), 4);
    assert_non_null(pool);
    enum { N = 200 };
    pool_run_t run = {.base = base, .expected = N};
    static pool_call_t calls[N];
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *p[1] = {v}; /* copied by the pool */
        calls[i] = (pool_call_t){.run = &run, .want = i * 2};
        pool_query_ok(pool, NULL, "SELECT $1::int * 2", 1, p, &calls[i]);
    }
    assert_int_equal(run.done, 0); /* callbacks only ever run later */
    pool_wait(&run, 30);
    assert_int_equal(run.ok, N);
    pool_wait_healthy(base, pool, 4, 10);

    /* NULL parameters and an error with its SQLSTATE. */
    pool_call_t c1 = {.run = &run, .want = -1};
    const char *pnull[1] = {NULL};
    run.expected += 1;
    pool_query_ok(pool, NULL, "SELECT $1::text", 1, pnull, &c1);
    pool_wait(&run, 10);
    assert_true(run.last_null);
    run.expected += 1;
    pool_query_ok(pool, NULL, "SELECT 1/0", 0, NULL, &c1);
    pool_wait(&run, 10);
    assert_int_equal(run.failed, 1);
    assert_string_equal(run.last_sqlstate, "22012");
    assert_non_null(strstr(run.last_err, "division by zero"));

    pg_pool_free(pool);
    event_base_free(base);
}

static void test_pool_user_id(void **state)
{
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, db_url(), 2);
    assert_non_null(pool);
    pool_run_t run = {.base = base};
    pool_call_t call = {.run = &run, .want = -1};

    run.expected = 1;
    pool_query_ok(pool, "user-42'; --", "SELECT current_setting('app.user_id')", 0, NULL, &call);
    pool_wait(&run, 10);
    assert_int_equal(run.ok, 1);
    assert_string_equal(run.last_value, "user-42'; --");

    /* A query with parameters inside the pipeline. */
    const char *p[2] = {"7", "6"};
    run.expected++;
    pool_query_ok(pool, "u2", "SELECT ($1::int * $2::int)::text || current_setting('app.user_id')",
                  2, p, &call);
    pool_wait(&run, 10);
    assert_string_equal(run.last_value, "42u2");

    /* The pool sets it per session only when it changes, and a query without
     * a user gets '' (row-level security then shows nothing): no leak. */
    for (int i = 0; i < 4; i++) {
        run.expected++;
        pool_query_ok(pool, NULL, "SELECT coalesce(current_setting('app.user_id', true), '')", 0,
                      NULL, &call);
        pool_wait(&run, 10);
        assert_string_equal(run.last_value, "");
    }

    /* An error inside the pipelined transaction is reported and rolled back. */
    run.expected++;
    pool_query_ok(pool, "u3", "SELECT 1/0", 0, NULL, &call);
    pool_wait(&run, 10);
    assert_int_equal(run.failed, 1);
    assert_string_equal(run.last_sqlstate, "22012");
    for (int i = 0; i < 4; i++) {
        run.expected++;
        pool_query_ok(pool, "u4", "SELECT current_setting('app.user_id')", 0, NULL, &call);
        pool_wait(&run, 10);
        assert_string_equal(run.last_value, "u4");
    }
    assert_int_equal(run.failed, 1);
    pool_wait_healthy(base, pool, 2, 10);

    /* The query's writes commit (its own implicit transaction). */
    run.expected++;
    pool_query_ok(pool, NULL, "CREATE TABLE pg_t_pool (uid text)", 0, NULL, &call);
    pool_wait(&run, 10);
    run.expected++;
    pool_query_ok(pool, "u5",
                  "INSERT INTO pg_t_pool VALUES (current_setting('app.user_id')) RETURNING uid", 0,
                  NULL, &call);
    pool_wait(&run, 10);
    assert_string_equal(run.last_value, "u5");
    run.expected++;
    pool_query_ok(pool, NULL, "SELECT string_agg(uid, ',') FROM pg_t_pool", 0, NULL, &call);
    pool_wait(&run, 10);
    assert_string_equal(run.last_value, "u5");

    pg_pool_free(pool);
    event_base_free(base);
}

static void test_pool_survives_restart(void **state)
{
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, db_url(), 4);
    assert_non_null(pool);
    pool_run_t run = {.base = base};
    pool_call_t calls[40];
    for (int i = 0; i < 8; i++) {
        calls[i] = (pool_call_t){.run = &run, .want = i};
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *p[1] = {v};
        run.expected++;
        pool_query_ok(pool, NULL, "SELECT $1::int", 1, p, &calls[i]);
    }
    pool_wait(&run, 10);
    assert_int_equal(run.ok, 8);
    pool_wait_healthy(base, pool, 4, 10);

    assert_int_equal(services_sh("restart-pg"), 0);

    for (int i = 8; i < 40; i++) {
        calls[i] = (pool_call_t){.run = &run, .want = i};
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *p[1] = {v};
        run.expected++;
        pool_query_ok(pool, (i % 2) ? "u" : NULL, "SELECT $1::int", 1, p, &calls[i]);
    }
    pool_wait(&run, 30);
    assert_int_equal(run.failed, 0);
    assert_int_equal(run.ok, 40);
    pool_wait_healthy(base, pool, 4, 10);

    /* Down for a while: queued queries wait, then run when it is back. */
    assert_int_equal(services_sh("stop-pg"), 0);
    pool_call_t late = {.run = &run, .want = 5};
    const char *p5[1] = {"5"};
    run.expected++;
    pool_query_ok(pool, NULL, "SELECT $1::int", 1, p5, &late);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 500 * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    assert_int_equal(services_sh("start-pg"), 0);
    pool_wait(&run, 30);
    assert_int_equal(run.failed, 0);
    assert_int_equal(run.ok, 41);
    pool_wait_healthy(base, pool, 4, 20);

    pg_pool_free(pool);
    event_base_free(base);
}

/* A call that expects an exact text value, or an error with a SQLSTATE. */
typedef struct {
    pool_run_t *run;
    const char *want_value; /* NULL: expect an error */
    const char *want_sqlstate;
    int mismatches;
    char got[256];
} user_call_t;

static void user_cb(const PGresult *res, const char *err, const char *sqlstate, void *arg)
{
    user_call_t *c = arg;
    c->run->done++;
    if (res == NULL) {
        c->run->failed++;
        snprintf(c->got, sizeof c->got, "error %s: %s", sqlstate, err);
        if (c->want_value != NULL || strcmp(sqlstate, c->want_sqlstate) != 0)
            c->mismatches++;
    } else {
        c->run->ok++;
        snprintf(c->got, sizeof c->got, "%s", PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
        if (c->want_value == NULL || strcmp(c->got, c->want_value) != 0)
            c->mismatches++;
    }
    if (c->run->done == c->run->expected)
        event_base_loopbreak(c->run->base);
}

#define RLS_SQL "SELECT coalesce(string_agg(v::text, ',' ORDER BY v), '') FROM pg_t_rls_rows"
#define RLS_A "1,2,3"
#define RLS_B "10,20"

/* A table whose policy reads app.user_id, read by a role that is not a
 * superuser (superusers bypass row-level security). Returns that role's URL. */
static const char *rls_setup(void)
{
    pg_conn_t *c = db_connect_ok();
    exec_ok(c, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 't_pg_rls') "
               "THEN CREATE ROLE t_pg_rls LOGIN; END IF; END $$");
    exec_ok(c, "CREATE TABLE pg_t_rls_rows (owner text NOT NULL, v int NOT NULL)");
    exec_ok(c, "INSERT INTO pg_t_rls_rows VALUES ('A', 1), ('A', 2), ('A', 3), ('B', 10), "
               "('B', 20), ('', 99)");
    exec_ok(c, "ALTER TABLE pg_t_rls_rows ENABLE ROW LEVEL SECURITY");
    exec_ok(c, "CREATE POLICY own ON pg_t_rls_rows USING "
               "(owner = NULLIF(current_setting('app.user_id', true), ''))");
    exec_ok(c, "GRANT SELECT ON pg_t_rls_rows TO t_pg_rls");
    char err[256];
    PGresult *r = pg_exec(c, "SELECT current_database()", 0, NULL, err, sizeof err);
    assert_non_null(r);
    static char url[512];
    const char *port = getenv("TEST_PG_PORT");
    snprintf(url, sizeof url, "postgresql://t_pg_rls@127.0.0.1:%s/%s", port != NULL ? port : "5432",
             PQgetvalue(r, 0, 0));
    PQclear(r);
    pg_close(c);
    return url;
}

/* Queues one query and runs the loop until it is answered. */
static void user_query_now(pg_pool_t *pool, pool_run_t *run, user_call_t *c, const char *uid,
                           const char *sql, const char *want, const char *want_sqlstate)
{
    *c = (user_call_t){.run = run, .want_value = want, .want_sqlstate = want_sqlstate};
    run->expected++;
    assert_int_equal(pg_pool_query(pool, uid, sql, 0, NULL, user_cb, c), 0);
    pool_wait(run, 10);
    if (c->mismatches != 0)
        fail_msg("user %s, %s: got \"%s\", want \"%s\"", uid != NULL ? uid : "(none)", sql, c->got,
                 want != NULL ? want : want_sqlstate);
}

/* Users A and B (and no user) interleaved on ONE pooled connection: each sees
 * only its rows, whether queued back to back or one at a time, and an error
 * never lets the next query inherit a user. */
static void test_pool_session_user_isolation(void **state)
{
    const char *url = rls_setup();
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, url, 1);
    assert_non_null(pool);
    pool_run_t run = {.base = base};

    /* Queued all at once: the connection switches users between queries. */
    static const char *const seq[] = {"A", "A", "B",  NULL, "A", NULL, NULL, "B", "B",
                                      "A", "B", NULL, "A",  "B", "A",  NULL, "B", "A"};
    enum { NSEQ = sizeof seq / sizeof seq[0] };
    static user_call_t calls[NSEQ];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < NSEQ; i++) {
            const char *u = seq[i];
            const char *want = u == NULL ? "" : u[0] == 'A' ? RLS_A : RLS_B;
            calls[i] = (user_call_t){.run = &run, .want_value = want};
            run.expected++;
            assert_int_equal(pg_pool_query(pool, u, RLS_SQL, 0, NULL, user_cb, &calls[i]), 0);
        }
        pool_wait(&run, 20);
        for (int i = 0; i < NSEQ; i++)
            if (calls[i].mismatches != 0)
                fail_msg("round %d query %d (user %s): got \"%s\", want \"%s\"", round, i,
                         seq[i] != NULL ? seq[i] : "(none)", calls[i].got, calls[i].want_value);
    }
    assert_int_equal(run.failed, 0);

    user_call_t c;
    /* An error in the round that switches the user (set_config + query in one
     * implicit transaction: both roll back, the session keeps A). The next
     * query without a user must not see A's rows. */
    user_query_now(pool, &run, &c, "A", RLS_SQL, RLS_A, NULL);
    user_query_now(pool, &run, &c, "B", "SELECT 1/0", NULL, "22012");
    user_query_now(pool, &run, &c, "B", RLS_SQL, RLS_B, NULL); /* B is set again */
    user_query_now(pool, &run, &c, "A", RLS_SQL, RLS_A, NULL);
    user_query_now(pool, &run, &c, "B", "SELECT 1/0", NULL, "22012");
    user_query_now(pool, &run, &c, NULL, RLS_SQL, "", NULL);
    user_query_now(pool, &run, &c, "B", RLS_SQL, RLS_B, NULL);
    /* An error in a round that needs no switch; then another user. */
    user_query_now(pool, &run, &c, "B", "SELECT 1/0", NULL, "22012");
    user_query_now(pool, &run, &c, "A", RLS_SQL, RLS_A, NULL);
    user_query_now(pool, &run, &c, "A", "SELECT v / (v - v) FROM pg_t_rls_rows", NULL, "22012");
    user_query_now(pool, &run, &c, "B", RLS_SQL, RLS_B, NULL);
    user_query_now(pool, &run, &c, NULL, RLS_SQL, "", NULL);
    /* A syntax error (nothing prepared) in a switching round. */
    user_query_now(pool, &run, &c, "A", "SELEC nonsense", NULL, "42601");
    user_query_now(pool, &run, &c, "A", RLS_SQL, RLS_A, NULL);
    user_query_now(pool, &run, &c, NULL, "SELEC nonsense", NULL, "42601");
    user_query_now(pool, &run, &c, NULL, RLS_SQL, "", NULL);
    user_query_now(pool, &run, &c, "A", RLS_SQL, RLS_A, NULL);
    /* After a restart the new session has no app.user_id: the pool must set
     * A again (the last user it had set). */
    assert_int_equal(services_sh("restart-pg"), 0);
    run.expected++;
    c = (user_call_t){.run = &run, .want_value = RLS_A};
    int64_t end = mono_ms() + 20000;
    /* The first query after the restart may fail with a lost connection. */
    while (mono_ms() < end) {
        c.mismatches = 0;
        assert_int_equal(pg_pool_query(pool, "A", RLS_SQL, 0, NULL, user_cb, &c), 0);
        pool_wait(&run, 20);
        if (c.mismatches == 0)
            break;
        assert_non_null(strstr(c.got, "error 08"));
        run.expected++;
    }
    assert_int_equal(c.mismatches, 0);
    user_query_now(pool, &run, &c, NULL, RLS_SQL, "", NULL);
    user_query_now(pool, &run, &c, "B", RLS_SQL, RLS_B, NULL);

    pg_pool_free(pool);
    event_base_free(base);
}

/* Pipelining: many queries in flight on ONE connection, each its own
 * transaction (an error in one leaves the others alone), answered in order;
 * a BEGIN runs alone and a session left inside a transaction is replaced, so
 * nothing queued behind it runs inside that transaction. */
static void test_pool_pipelined_segments(void **state)
{
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, db_url(), 1);
    assert_non_null(pool);
    pool_run_t run = {.base = base};
    enum { N = 40 };
    static user_call_t calls[N];
    static char want[N][16];
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *p[1] = {v};
        bool bad = i % 7 == 3;
        snprintf(want[i], sizeof want[i], "%d", i * 3);
        calls[i] = (user_call_t){
            .run = &run, .want_value = bad ? NULL : want[i], .want_sqlstate = bad ? "22012" : NULL};
        run.expected++;
        assert_int_equal(pg_pool_query(pool, i % 2 ? "u1" : NULL,
                                       bad ? "SELECT $1::int / 0" : "SELECT $1::int * 3", 1, p,
                                       user_cb, &calls[i]),
                         0);
    }
    pool_wait(&run, 20);
    for (int i = 0; i < N; i++)
        if (calls[i].mismatches != 0)
            fail_msg("query %d: got \"%s\"", i, calls[i].got);

    /* BEGIN then queries queued behind it: none runs in that transaction. */
    user_call_t b = {.run = &run, .want_value = ""};
    run.expected++;
    assert_int_equal(pg_pool_query(pool, NULL, "BEGIN", 0, NULL, user_cb, &b), 0);
    /* Inside one transaction now() would not move; with a pause between two
     * queries queued behind the BEGIN it must. */
    static const char *const sqls[3] = {"SELECT now()::text", "SELECT pg_sleep(0.02)::text",
                                        "SELECT now()::text"};
    static user_call_t after[3];
    for (int i = 0; i < 3; i++) {
        after[i] = (user_call_t){.run = &run, .want_value = ""};
        run.expected++;
        assert_int_equal(pg_pool_query(pool, NULL, sqls[i], 0, NULL, user_cb, &after[i]), 0);
    }
    pool_wait(&run, 20);
    assert_int_equal(b.mismatches, 0);
    for (int i = 0; i < 3; i++)
        if (strncmp(after[i].got, "error", 5) == 0)
            fail_msg("after BEGIN, query %d: got \"%s\"", i, after[i].got);
    assert_string_not_equal(after[0].got, after[2].got);
    pg_pool_free(pool);
    event_base_free(base);
}

/* The pool prepares a statement once per connection and reuses it; a plan
 * that a schema change invalidated is prepared again. */
static void test_pool_prepared_statements(void **state)
{
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, db_url(), 1);
    assert_non_null(pool);
    pool_run_t run = {.base = base};
    user_call_t c;
    const char *sql = "SELECT $1::int + 1";
    for (int i = 0; i < 5; i++) {
        char v[16], want[16];
        snprintf(v, sizeof v, "%d", i);
        snprintf(want, sizeof want, "%d", i + 1);
        const char *p[1] = {v};
        c = (user_call_t){.run = &run, .want_value = want};
        run.expected++;
        assert_int_equal(pg_pool_query(pool, i % 2 ? "u" : NULL, sql, 1, p, user_cb, &c), 0);
        pool_wait(&run, 10);
        assert_int_equal(c.mismatches, 0);
    }
    /* Exactly one server-side statement for that text, made by the pool. */
    const char *p[1] = {sql};
    c = (user_call_t){.run = &run, .want_value = "1"};
    run.expected++;
    assert_int_equal(pg_pool_query(pool, NULL,
                                   "SELECT count(*) FROM pg_prepared_statements "
                                   "WHERE statement = $1 AND name LIKE 'ca_s%'",
                                   1, p, user_cb, &c),
                     0);
    pool_wait(&run, 10);
    assert_int_equal(c.mismatches, 0);

    /* A failed round does not cache its statement (nor break the next one). */
    user_query_now(pool, &run, &c, "u", "SELECT 1/0", NULL, "22012");
    user_query_now(pool, &run, &c, "u", "SELECT 1/0", NULL, "22012");
    user_query_now(pool, &run, &c, NULL, "SELECT 'ok'", "ok", NULL);

    /* The result type changes under a cached statement: one error (0A000),
     * then the statement is prepared again and works. */
    user_query_now(pool, &run, &c, NULL, "CREATE TABLE pg_t_prep (a int)", "", NULL);
    user_query_now(pool, &run, &c, NULL, "INSERT INTO pg_t_prep VALUES (7)", "", NULL);
    user_query_now(pool, &run, &c, NULL, "SELECT * FROM pg_t_prep", "7", NULL);
    user_query_now(pool, &run, &c, NULL, "SELECT * FROM pg_t_prep", "7", NULL);
    user_query_now(pool, &run, &c, NULL, "ALTER TABLE pg_t_prep ADD COLUMN b int", "", NULL);
    c = (user_call_t){.run = &run, .want_value = "7"};
    run.expected++;
    assert_int_equal(pg_pool_query(pool, NULL, "SELECT * FROM pg_t_prep", 0, NULL, user_cb, &c), 0);
    pool_wait(&run, 10);
    if (c.mismatches != 0)
        assert_non_null(strstr(c.got, "error 0A000"));
    user_query_now(pool, &run, &c, NULL, "SELECT * FROM pg_t_prep", "7", NULL);
    user_query_now(pool, &run, &c, NULL, "SELECT * FROM pg_t_prep", "7", NULL);

    pg_pool_free(pool);
    event_base_free(base);
}

typedef struct {
    int ticks;
    struct event *ev;
} ticker_t;

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    ticker_t *t = arg;
    t->ticks++;
}

static void test_pool_is_non_blocking(void **state)
{
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, db_url(), 2);
    assert_non_null(pool);
    pool_run_t run = {.base = base};
    pool_call_t call = {.run = &run, .want = -1};
    run.expected = 1;
    pool_query_ok(pool, NULL, "SELECT 1", 0, NULL, &call); /* connections up */
    pool_wait(&run, 10);

    ticker_t t = {0};
    t.ev = event_new(base, -1, EV_PERSIST, tick_cb, &t);
    struct timeval ten_ms = {.tv_sec = 0, .tv_usec = 10 * 1000};
    event_add(t.ev, &ten_ms);
    run.expected++;
    pool_query_ok(pool, NULL, "SELECT pg_sleep(0.5)", 0, NULL, &call);
    pool_wait(&run, 10);
    event_free(t.ev);
    assert_int_equal(run.ok, 2);
    /* ~50 ticks if the loop never blocked; a loop blocked in the query gets
     * at most the one overdue tick after it */
    assert_true(t.ticks >= 5);

    pg_pool_free(pool);
    event_base_free(base);
}

static void test_pool_queue_cap_and_free(void **state)
{
    struct event_base *base = event_base_new();
    pg_pool_t *pool = pg_pool_new(base, db_url(), 4);
    assert_non_null(pool);
    pool_run_t run = {.base = base};
    pool_call_t call = {.run = &run, .want = 1};
    int accepted = 0;
    for (int i = 0; i < 10001; i++) {
        if (pg_pool_query(pool, NULL, "SELECT 1", 0, NULL, pool_cb, &call) == 0)
            accepted++;
    }
    assert_int_equal(accepted, 10000);
    run.expected = accepted;
    pool_wait(&run, 60);
    assert_int_equal(run.ok, 10000);

    /* Freed with queries waiting: each is called back once with an error. */
    pool_run_t run2 = {.base = base, .expected = 1000};
    pool_call_t call2 = {.run = &run2, .want = -1};
    for (int i = 0; i < 5; i++)
        assert_int_equal(pg_pool_query(pool, NULL, "SELECT 1", 0, NULL, pool_cb, &call2), 0);
    pg_pool_free(pool);
    assert_int_equal(run2.done, 5);
    assert_int_equal(run2.failed, 5);
    assert_string_equal(run2.last_err, "shutting down");
    event_base_free(base);
}

static void test_pool_bad_url(void **state)
{
    struct event_base *base = event_base_new();
    assert_null(pg_pool_new(base, "postgresql://[::1", 2));
    assert_null(pg_pool_new(base, "not a = valid = conninfo", 2));
    /* pg_connect fails at once on a malformed URL instead of retrying forever. */
    char err[256] = "";
    int64_t t0 = mono_ms();
    assert_null(pg_connect("postgresql://[::1", 0, err, sizeof err));
    assert_true(mono_ms() - t0 < 1000);
    assert_true(err[0] != '\0');
    event_base_free(base);
}

int main(void)
{
    log_init("test_pg", CA_LOG_DEBUG);
    if (getenv("CA_TEST_DIR") == NULL) {
        fprintf(stderr, "CA_TEST_DIR is not set (run through tests/run)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_null_and_injection),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_unique_violation_sqlstate),
        cmocka_unit_test(test_prepared_statement),
        cmocka_unit_test(test_survives_restart),
        cmocka_unit_test(test_connect_waits_for_server),
        cmocka_unit_test(test_connect_deadline_and_ping_while_down),
        cmocka_unit_test(test_ping_does_not_hang),
        cmocka_unit_test(test_abort_flag_stops_forever_connect),
        cmocka_unit_test(test_password_not_logged),
        cmocka_unit_test(test_pool_200_queries),
        cmocka_unit_test(test_pool_user_id),
        cmocka_unit_test(test_pool_session_user_isolation),
        cmocka_unit_test(test_pool_pipelined_segments),
        cmocka_unit_test(test_pool_prepared_statements),
        cmocka_unit_test(test_pool_survives_restart),
        cmocka_unit_test(test_pool_is_non_blocking),
        cmocka_unit_test(test_pool_queue_cap_and_free),
        cmocka_unit_test(test_pool_bad_url),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    log_shutdown();
    return failed;
}
