/*
 * The gateway's session TTL slides (docs/api-gateway.md "Sign-in"): Redis
 * holds ca:session:<hex sha256 of the cookie's id> for SESSION_TTL_SECONDS
 * from sign-in, every authenticated request pushes that expiry out again, and
 * a session left alone expires and is then refused.
 *
 * The test never waits for a TTL to run down: it shortens the key's TTL in
 * Redis itself, then sees a request lengthen it again (or lets it lapse).
 */
#include "crypto.h"
#include "gw_session.h"
#include "redis.h"
#include "support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TTL_S 600

static proc_t google, gw;
static redis_conn_t *redis;
static gwt_session_t alice;

/* "ca:session:" + hex sha256 of the session id in s->cookie ("ca_session=<id>"). */
static void session_key(const gwt_session_t *s, char *out, size_t n)
{
    const char *id = strchr(s->cookie, '=');
    assert_non_null(id);
    id++;
    uint8_t h[CRYPTO_SHA256_LEN];
    crypto_sha256(id, strlen(id), h);
    char hex[2 * CRYPTO_SHA256_LEN + 1];
    crypto_hex(h, sizeof(h), hex);
    snprintf(out, n, "ca:session:%s", hex);
}

static long long redis_int(const char *cmd, const char *key)
{
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), cmd, key);
    if (r == NULL) {
        fail_msg("%s %s: %s", cmd, key, err);
    }
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void shorten_ttl(const char *key, const char *ms)
{
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "PEXPIRE %s %s", key, ms);
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

static long status_of(const char *method, const char *path, const gwt_session_t *s)
{
    gwt_resp_t r = gwt_request(gw.base_url, method, path, s, method[0] != 'G', NULL);
    long st = r.status;
    gwt_resp_free(&r);
    return st;
}

/* Sign-in stores the session for SESSION_TTL_SECONDS. */
static void test_ttl_from_sign_in(void **state)
{
    (void)state;
    char key[128];
    session_key(&alice, key, sizeof(key));
    long long ttl = redis_int("PTTL %s", key);
    if (ttl <= (TTL_S - 60) * 1000LL || ttl > TTL_S * 1000LL) {
        fail_msg("PTTL %s = %lld ms, want about %d s", key, ttl, TTL_S);
    }
}

/* Each authenticated request pushes the expiry out to SESSION_TTL_SECONDS. */
static void test_each_request_pushes_expiry_out(void **state)
{
    (void)state;
    char key[128];
    session_key(&alice, key, sizeof(key));
    const char *paths[] = {"/api/me", "/api/usage", "/api/jobs"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        shorten_ttl(key, "30000");
        assert_int_equal(status_of("GET", paths[i], &alice), 200);
        long long ttl = redis_int("PTTL %s", key);
        if (ttl <= (TTL_S - 60) * 1000LL) {
            fail_msg("after GET %s the session expires in %lld ms, want about %d s", paths[i], ttl,
                     TTL_S);
        }
    }
}

/* A request without the cookie leaves the session alone (nothing slides). */
static void test_other_requests_leave_it(void **state)
{
    (void)state;
    char key[128];
    session_key(&alice, key, sizeof(key));
    shorten_ttl(key, "30000");
    assert_int_equal(status_of("GET", "/api/me", NULL), 401);
    assert_true(redis_int("PTTL %s", key) <= 30000);
    assert_int_equal(status_of("GET", "/api/me", &alice), 200); /* and slides it back */
}

static bool key_gone(void *key)
{
    return redis_int("EXISTS %s", key) == 0;
}

/* A session left alone lapses: then it is refused. */
static void test_idle_session_expires(void **state)
{
    (void)state;
    gwt_session_t bob;
    assert_int_equal(gwt_sign_in(gw.base_url, "bob@example.com", &bob), 0);
    char key[128];
    session_key(&bob, key, sizeof(key));
    shorten_ttl(key, "1");
    assert_true(wait_until(key_gone, key, 10000));
    assert_int_equal(status_of("GET", "/api/me", &bob), 401);
    assert_int_equal(redis_int("EXISTS %s", key), 0); /* a refused request makes none */
}

/* Last: SIGTERM, and the gateway exits 0 (a sanitizer's report would not). */
static void test_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&gw), 0);
}

static int setup(void **state)
{
    (void)state;
    char ttl[64];
    snprintf(ttl, sizeof(ttl), "SESSION_TTL_SECONDS=%d", TTL_S);
    const char *extra[] = {ttl, NULL};
    if (fake_start(&google, "google", NULL) != 0 || gwt_start(&gw, google.base_url, extra) != 0) {
        return -1;
    }
    char err[256];
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    if (redis == NULL) {
        fprintf(stderr, "redis: %s\n", err);
        return -1;
    }
    return gwt_sign_in(gw.base_url, "alice@example.com", &alice);
}

static int teardown(void **state)
{
    (void)state;
    redis_close(redis);
    proc_stop(&gw); /* already stopped by the last test unless it failed */
    proc_stop(&google);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl_from_sign_in),
        cmocka_unit_test(test_each_request_pushes_expiry_out),
        cmocka_unit_test(test_other_requests_leave_it),
        cmocka_unit_test(test_idle_session_expires),
        cmocka_unit_test(test_gateway_exits_cleanly), /* last: stops the gateway */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
