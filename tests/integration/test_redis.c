/*
 * common/redis against a real Redis (TEST_REDIS_URL, TEST_REDIS_PORT, CA_ROOT,
 * CA_TEST_DIR from tests/run): URL parsing, AUTH/SELECT on reconnect, a server
 * restart, an outage longer than the retry budget, blocking commands, the
 * command timeout and the reply cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "log.h"
#include "redis.h"
#include "support.h"

static char redis_url[256];
static int redis_port;

static redis_conn_t *connect_url(const char *url)
{
    char err[256] = "";
    redis_conn_t *conn = redis_connect(url, 5000, err, sizeof(err));

    if (conn == NULL) {
        fail_msg("connect: %s", err);
    }
    return conn;
}

static redis_conn_t *connect_default(void)
{
    return connect_url(redis_url);
}

/* Runs a command that must succeed; returns the reply. */
static redisReply *must(redis_conn_t *conn, const char *fmt, const char *arg)
{
    char err[256] = "";
    redisReply *reply = redis_command(conn, err, sizeof(err), fmt, arg);

    if (reply == NULL) {
        fail_msg("%s: %s", fmt, err);
    }
    return reply;
}

static void must_ok(redis_conn_t *conn, const char *fmt, const char *arg)
{
    freeReplyObject(must(conn, fmt, arg));
}

/* INFO stats total_connections_received: connections the server accepted. */
static long long connections_received(redis_conn_t *admin)
{
    redisReply *reply = must(admin, "INFO %s", "stats");
    const char *at = reply->str != NULL ? strstr(reply->str, "total_connections_received:") : NULL;
    assert_non_null(at);
    long long n = atoll(at + strlen("total_connections_received:"));
    freeReplyObject(reply);
    return n;
}

static int flush_all(void **state)
{
    redis_conn_t *conn = connect_default();

    must_ok(conn, "FLUSHALL%s", "");
    redis_close(conn);
    return 0;
}

/* ------------------------------------------------------------ URL table */

typedef struct {
    const char *url;
    const char *host;
    int port;
    const char *user;
    const char *password;
    int db;
} url_ok_case_t;

static void test_url_parse_valid(void **state)
{
    static const url_ok_case_t cases[] = {
        {"redis://127.0.0.1:6379/0", "127.0.0.1", 6379, "", "", 0},
        {"redis://localhost", "localhost", 6379, "", "", 0},
        {"redis://localhost/", "localhost", 6379, "", "", 0},
        {"REDIS://cache.internal:7000/15", "cache.internal", 7000, "", "", 15},
        {"redis://:secret@host:1234/3", "host", 1234, "", "secret", 3},
        {"redis://alice:p%40ss%2Fw@h/2", "h", 6379, "alice", "p@ss/w", 2},
        {"redis://:p@ss@redis-1", "redis-1", 6379, "", "p@ss", 0},
        {"redis://bob:@h:1", "h", 1, "bob", "", 0},
        {"redis://[::1]:7001/5", "::1", 7001, "", "", 5},
        {"redis://", "127.0.0.1", 6379, "", "", 0},
        {"redis://:pw@:6380", "127.0.0.1", 6380, "", "pw", 0},
        {"redis://h:65535/2147483647", "h", 65535, "", "", 2147483647},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redis_url_t url;
        char err[256] = "";

        if (redis_url_parse(cases[i].url, &url, err, sizeof(err)) != 0) {
            fail_msg("case %zu (%s): %s", i, cases[i].url, err);
        }
        assert_string_equal(url.host, cases[i].host);
        assert_int_equal(url.port, cases[i].port);
        assert_string_equal(url.user, cases[i].user);
        assert_string_equal(url.password, cases[i].password);
        assert_int_equal(url.db, cases[i].db);
    }
}

typedef struct {
    const char *url;
    const char *err_has;
} url_bad_case_t;

static void test_url_parse_invalid(void **state)
{
    static const url_bad_case_t cases[] = {
        {"", "empty"},
        {NULL, "empty"},
        {"rediss://:topsecret@h:6380", "rediss"},
        {"http://h", "redis://"},
        {"garbage", "redis://"},
        {"redis:/h", "redis://"},
        {"redis://h:0", "port"},
        {"redis://h:65536", "port"},
        {"redis://h:abc", "port"},
        {"redis://h:", "port"},
        {"redis://h:6379:1", "port"},
        {"redis://h/x", "database"},
        {"redis://h/-1", "database"},
        {"redis://h/1/2", "database"},
        {"redis://h/99999999999", "database"},
        {"redis://topsecret@h", "credentials"},
        {"redis://h?db=1", "query"},
        {"redis://h/1?timeout=1", "query"},
        {"redis://h#frag", "fragment"},
        {"redis://h o", "whitespace"},
        {"redis://:top secret@h", "whitespace"},
        {"redis://[::1", "["},
        {"redis://[zz]:1", "IPv6"},
        {"redis://[::1]x", "unexpected"},
        {"redis://ho$t", "host"},
        {"redis://:topsecret%zz@h", "percent"},
        {"redis://:topsecret%0@h", "percent"},
        {"redis://:top%00secret@h", "%00"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redis_url_t url;
        char err[256] = "";

        if (redis_url_parse(cases[i].url, &url, err, sizeof(err)) == 0) {
            fail_msg("case %zu (%s) parsed", i, cases[i].url ? cases[i].url : "NULL");
        }
        if (strstr(err, cases[i].err_has) == NULL) {
            fail_msg("case %zu (%s): err \"%s\" lacks \"%s\"", i, cases[i].url, err,
                     cases[i].err_has);
        }
        assert_null(strstr(err, "topsecret"));
        assert_null(strstr(err, "top secret"));
        assert_string_equal(url.password, "");
    }
}

static void test_url_parse_long_parts(void **state)
{
    char url[1200];
    char err[256] = "";
    redis_url_t parsed;
    char host[300];

    memset(host, 'a', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(url, sizeof(url), "redis://%s:1", host);
    assert_int_equal(redis_url_parse(url, &parsed, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too long"));

    memset(host, 'p', sizeof(host) - 1);
    snprintf(url, sizeof(url), "redis://:%s@h", host);
    assert_int_equal(redis_url_parse(url, &parsed, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "password"));
    assert_null(strstr(err, "pppppp"));
}

/* ------------------------------------------------------------ commands */

static void test_connect_and_commands(void **state)
{
    redis_conn_t *conn = connect_default();
    char err[256] = "";
    redisReply *reply;
    const char *argv[3] = {"SET", "ca:test:bin", "a\0b"};
    size_t lens[3] = {3, 11, 3};

    assert_int_equal(redis_connect_count(conn), 1);
    assert_non_null(redis_raw(conn));
    assert_true(redis_ping(conn));

    must_ok(conn, "SET ca:test:k %s", "v1");
    reply = must(conn, "GET %s", "ca:test:k");
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_string_equal(reply->str, "v1");
    freeReplyObject(reply);

    reply = redis_command_argv(conn, 3, argv, lens, err, sizeof(err));
    assert_non_null(reply);
    freeReplyObject(reply);
    reply = must(conn, "GET %s", "ca:test:bin");
    assert_int_equal(reply->len, 3);
    assert_memory_equal(reply->str, "a\0b", 3);
    freeReplyObject(reply);

    /* An error reply is NULL + the server's message, and the connection stays. */
    reply = redis_command(conn, err, sizeof(err), "INCR %s", "ca:test:k");
    assert_null(reply);
    assert_non_null(strstr(err, "not an integer"));
    reply = redis_command(conn, err, sizeof(err), "NOSUCHCOMMAND");
    assert_null(reply);
    assert_non_null(strstr(err, "unknown command"));
    assert_int_equal(redis_connect_count(conn), 1);
    redis_close(conn);
}

static void test_connect_refused_respects_deadline(void **state)
{
    char err[256] = "";
    /* Port 1 on loopback: nothing listens there. */
    redis_conn_t *conn = redis_connect("redis://127.0.0.1:1/0", 600, err, sizeof(err));

    assert_null(conn);
    assert_non_null(strstr(err, "127.0.0.1:1"));

    conn = redis_connect("rediss://127.0.0.1/0", 600, err, sizeof(err));
    assert_null(conn);
    assert_non_null(strstr(err, "rediss"));
}

/* Drops every connection of `user` (or of the default user) from another client. */
static void kill_clients(redis_conn_t *admin, const char *user)
{
    must_ok(admin, "CLIENT KILL USER %s", user);
}

static void test_auth_and_select_on_reconnect(void **state)
{
    redis_conn_t *admin = connect_default();
    redis_conn_t *conn;
    redis_conn_t *db3;
    redisReply *reply;
    char url[256];
    char err[512] = "";

    must_ok(admin, "ACL SETUSER ca_test on >s3cret-pw-acl ~* &* +@all%s", "");
    snprintf(url, sizeof(url), "redis://ca_test:s3cret-pw-acl@127.0.0.1:%d/3", redis_port);
    conn = connect_url(url);
    must_ok(conn, "SET ca:test:db %s", "three");
    reply = must(conn, "ACL WHOAMI%s", "");
    assert_string_equal(reply->str, "ca_test");
    freeReplyObject(reply);

    /* The key went to db 3, not db 0. */
    reply = must(admin, "EXISTS %s", "ca:test:db");
    assert_int_equal(reply->integer, 0);
    freeReplyObject(reply);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/3", redis_port);
    db3 = connect_url(url);
    reply = must(db3, "GET %s", "ca:test:db");
    assert_string_equal(reply->str, "three");
    freeReplyObject(reply);
    redis_close(db3);

    /* Kill the connection: the next command reconnects, AUTHs and SELECTs again. */
    kill_clients(admin, "ca_test");
    reply = must(conn, "GET %s", "ca:test:db");
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_string_equal(reply->str, "three");
    freeReplyObject(reply);
    assert_int_equal(redis_connect_count(conn), 2);
    reply = must(conn, "ACL WHOAMI%s", "");
    assert_string_equal(reply->str, "ca_test");
    freeReplyObject(reply);
    redis_close(conn);

    /* A wrong password fails at once (one connection, no retrying) and is
     * never echoed. */
    snprintf(url, sizeof(url), "redis://ca_test:wrong-pw-xyz@127.0.0.1:%d/3", redis_port);
    long long connections = connections_received(admin);
    conn = redis_connect(url, 3000, err, sizeof(err));
    assert_null(conn);
    assert_int_equal(connections_received(admin) - connections, 1);
    assert_non_null(strstr(err, "AUTH"));
    assert_null(strstr(err, "wrong-pw-xyz"));

    /* A database that does not exist is a clear error too. */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/100000", redis_port);
    conn = redis_connect(url, 3000, err, sizeof(err));
    assert_null(conn);
    assert_non_null(strstr(err, "SELECT"));

    /* requirepass: the ":password@" form. */
    must_ok(admin, "CONFIG SET requirepass %s", "pw-for-default");
    snprintf(url, sizeof(url), "redis://:pw-for-default@127.0.0.1:%d/0", redis_port);
    conn = connect_url(url);
    assert_true(redis_ping(conn));
    kill_clients(admin, "default"); /* admin is a default-user client too */
    assert_true(redis_ping(conn));
    assert_int_equal(redis_connect_count(conn), 2);
    must_ok(conn, "CONFIG SET requirepass %s", "");
    must_ok(conn, "ACL DELUSER %s", "ca_test");
    redis_close(conn);
    redis_close(admin);
}

/* Leaves no password behind even if the AUTH test failed half-way. */
static int reset_auth(void **state)
{
    char url[256];
    char err[256];
    redis_conn_t *conn;
    redisReply *reply;

    snprintf(url, sizeof(url), "redis://:pw-for-default@127.0.0.1:%d/0", redis_port);
    conn = redis_connect(url, 1000, err, sizeof(err));
    if (conn != NULL) {
        reply = redis_command(conn, err, sizeof(err), "CONFIG SET requirepass %s", "");
        if (reply != NULL) {
            freeReplyObject(reply);
        }
        redis_close(conn);
    }
    conn = connect_default();
    reply = redis_command(conn, err, sizeof(err), "ACL DELUSER %s", "ca_test");
    if (reply != NULL) {
        freeReplyObject(reply);
    }
    redis_close(conn);
    return 0;
}

static void test_survives_restart(void **state)
{
    redis_conn_t *conn = connect_default();
    redisReply *reply;

    must_ok(conn, "SET ca:test:before %s", "1");
    assert_int_equal(services_sh("restart-redis"), 0);
    /* Same redis_conn_t: the command reconnects and succeeds (the data is gone:
     * the test server does not persist). */
    reply = must(conn, "GET %s", "ca:test:before");
    assert_int_equal(reply->type, REDIS_REPLY_NIL);
    freeReplyObject(reply);
    assert_int_equal(redis_connect_count(conn), 2);
    must_ok(conn, "SET ca:test:after %s", "1");
    redis_close(conn);
}

static void test_outage_beyond_retry_budget(void **state)
{
    redis_conn_t *conn = connect_default();
    char err[256] = "";
    redisReply *reply;

    redis_set_retry(conn, 700);
    assert_int_equal(services_sh("stop-redis"), 0);
    assert_false(redis_ping(conn));

    reply = redis_command(conn, err, sizeof(err), "SET ca:test:x %s", "1");
    assert_null(reply);
    assert_non_null(strstr(err, "127.0.0.1"));

    assert_int_equal(services_sh("start-redis"), 0);
    reply = redis_command(conn, err, sizeof(err), "SET ca:test:x %s", "1");
    if (reply == NULL) {
        fail_msg("after start: %s", err);
    }
    freeReplyObject(reply);
    assert_true(redis_ping(conn));
    redis_close(conn);
}

static void test_retry_covers_short_outage(void **state)
{
    redis_conn_t *conn = connect_default();
    redisReply *reply;

    /* Stop Redis, start it again 0.6 s later in the background; the command
     * blocks in the retry loop and succeeds once it is back. */
    redis_set_retry(conn, 8000);
    assert_int_equal(services_sh("stop-redis"), 0);
    {
        char cmd[1024];
        const char *root = getenv("CA_ROOT");

        snprintf(cmd, sizeof(cmd),
                 "(sleep 0.6; \"%s/tests/lib/services.sh\" start-redis) >/dev/null 2>&1 &",
                 root != NULL ? root : ".");
        assert_int_equal(system(cmd), 0);
    }
    reply = must(conn, "SET ca:test:y %s", "2");
    freeReplyObject(reply);
    reply = must(conn, "GET %s", "ca:test:y");
    assert_string_equal(reply->str, "2");
    freeReplyObject(reply);
    redis_close(conn);
}

static void test_blocking_command_outlives_timeout(void **state)
{
    redis_conn_t *conn = connect_default();
    redisReply *reply;
    char err[256] = "";
    const char *argv[6] = {"BLMOVE", "ca:test:src", "ca:test:dst", "RIGHT", "LEFT", "0.8"};

    /* Each waits out its own timeout in Redis (NIL: nothing came) on the same
     * connection, although that is longer than the 200 ms command timeout. */
    redis_set_timeout(conn, 200);
    reply = must(conn, "BLPOP ca:test:empty %s", "1");
    assert_int_equal(reply->type, REDIS_REPLY_NIL);
    freeReplyObject(reply);
    assert_int_equal(redis_connect_count(conn), 1);

    reply = redis_command_argv(conn, 6, argv, NULL, err, sizeof(err));
    if (reply == NULL) {
        fail_msg("BLMOVE: %s", err);
    }
    assert_int_equal(reply->type, REDIS_REPLY_NIL);
    freeReplyObject(reply);
    assert_int_equal(redis_connect_count(conn), 1);

    /* The normal timeout is back afterwards. */
    assert_true(redis_ping(conn));
    redis_close(conn);
}

static void test_command_timeout(void **state)
{
    redis_conn_t *admin = connect_default();
    redis_conn_t *conn = connect_default();
    redisReply *reply;
    char err[256] = "";

    /* A command that waited the pause out would succeed: it must time out. */
    redis_set_timeout(conn, 200);
    redis_set_retry(conn, 0);
    must_ok(admin, "CLIENT PAUSE %s WRITE", "3000");
    reply = redis_command(conn, err, sizeof(err), "SET ca:test:paused %s", "1");
    assert_null(reply);
    assert_non_null(strstr(err, "timed out"));
    must_ok(admin, "CLIENT UNPAUSE%s", "");

    reply = must(conn, "SET ca:test:paused %s", "2");
    freeReplyObject(reply);
    redis_close(conn);
    redis_close(admin);
}

static void test_reply_cap(void **state)
{
    redis_conn_t *conn = connect_default();
    redisReply *reply;
    char err[256] = "";
    char offset[32];

    /* 1 MiB arrives over many reads and is fine. */
    must_ok(conn, "SETRANGE ca:test:mid 1048575 %s", "x");
    reply = must(conn, "GET %s", "ca:test:mid");
    assert_int_equal(reply->len, 1048576);
    freeReplyObject(reply);

    /* A value one byte over 64 MiB, made on the server. */
    snprintf(offset, sizeof(offset), "%u", REDIS_REPLY_MAX);
    must_ok(conn, "SETRANGE ca:test:big %s x", offset);
    reply = redis_command(conn, err, sizeof(err), "GET %s", "ca:test:big");
    assert_null(reply);
    assert_non_null(strstr(err, "64 MiB"));
    /* The connection was dropped; the next command works on a new one. */
    must_ok(conn, "DEL %s", "ca:test:big");
    assert_int_equal(redis_connect_count(conn), 2);
    redis_close(conn);
}

int main(void)
{
    const char *url = getenv("TEST_REDIS_URL");
    const char *port = getenv("TEST_REDIS_PORT");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse_valid),
        cmocka_unit_test(test_url_parse_invalid),
        cmocka_unit_test(test_url_parse_long_parts),
        cmocka_unit_test_setup(test_connect_and_commands, flush_all),
        cmocka_unit_test(test_connect_refused_respects_deadline),
        cmocka_unit_test_setup_teardown(test_auth_and_select_on_reconnect, flush_all, reset_auth),
        cmocka_unit_test_setup(test_survives_restart, flush_all),
        cmocka_unit_test_setup(test_outage_beyond_retry_budget, flush_all),
        cmocka_unit_test_setup(test_retry_covers_short_outage, flush_all),
        cmocka_unit_test_setup(test_blocking_command_outlives_timeout, flush_all),
        cmocka_unit_test_setup(test_command_timeout, flush_all),
        cmocka_unit_test_setup(test_reply_cap, flush_all),
    };
    int failed;

    if (url == NULL || port == NULL || getenv("CA_TEST_DIR") == NULL) {
        fprintf(stderr, "TEST_REDIS_URL, TEST_REDIS_PORT and CA_TEST_DIR must be set\n");
        return 1;
    }
    snprintf(redis_url, sizeof(redis_url), "%s", url);
    redis_port = atoi(port);
    log_init("test_redis", CA_LOG_ERROR);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    log_shutdown();
    return failed;
}
