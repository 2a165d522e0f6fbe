/*
 * The gateway's session TTL slides (docs/api-gateway.md "Sign-in"): Redis
 * holds ca:session:<hex sha256 of the cookie's id> for SESSION_TTL_SECONDS
 * from sign-in, every authenticated request pushes that expiry out again, and
 * a session left alone expires and is then refused.
 *
 * The test never waits for a TTL to run down: it shortens the key's TTL in
 * Redis itself, then sees a request lengthen it again (or lets it lapse).
 *
 * Besides the sliding TTL: the absolute lifetime (SESSION_MAX_AGE_SECONDS,
 * a second gateway with 3 s, used without a pause until it refuses), and the
 * users.is_active check (a deactivated user loses its session and cannot
 * sign in).
 *
 * And the caps of issue 14 on a fourth gateway (gw_caps) with the default
 * RATE_LIMIT_PER_MINUTE_LOGIN (20) and SESSION_MAX_PER_USER=3: the 21st
 * /auth/google/login of a minute from one address is a 429 page that stores
 * no ca:oauth: key (another address still signs in), and a fourth sign-in of
 * one user ends that user's oldest session.
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
#include <time.h>

#include <curl/curl.h>
#include <cmocka.h>

#define TTL_S 600
#define MAX_AGE_S 3
#define LOGIN_LIMIT_DEFAULT 20 /* RATE_LIMIT_PER_MINUTE_LOGIN's default (main.c) */
#define SESSION_CAP 3

static proc_t google, gw, gw_short, gw_https, gw_caps;
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

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A session used without a pause is still refused once it is
 * SESSION_MAX_AGE_SECONDS old; its TTL never runs past that end. */
static void test_absolute_lifetime(void **state)
{
    (void)state;
    long long t0 = now_ms();
    gwt_session_t carol;
    assert_int_equal(gwt_sign_in(gw_short.base_url, "carol@example.com", &carol), 0);
    char key[128];
    session_key(&carol, key, sizeof(key));
    assert_true(redis_int("PTTL %s", key) <= MAX_AGE_S * 1000LL);
    long long refused_at = 0;
    while (now_ms() - t0 < (MAX_AGE_S + 5) * 1000LL) {
        gwt_resp_t r = gwt_request(gw_short.base_url, "GET", "/api/me", &carol, false, NULL);
        long st = r.status;
        gwt_resp_free(&r);
        if (st == 401) {
            refused_at = now_ms();
            break;
        }
        assert_int_equal(st, 200);
        assert_true(redis_int("PTTL %s", key) <= MAX_AGE_S * 1000LL);
        struct timespec pause = {0, 100 * 1000000L};
        nanosleep(&pause, NULL);
    }
    if (refused_at == 0) {
        fail_msg("the session was still accepted %d s after sign-in", MAX_AGE_S + 5);
    }
    /* not before its lifetime (the sign-in started at t0) */
    assert_true(refused_at - t0 >= MAX_AGE_S * 1000LL - 100);
    assert_int_equal(redis_int("EXISTS %s", key), 0);
}

/* A session from before created_ms existed gets it on its next use. */
static void test_old_session_gets_a_start(void **state)
{
    (void)state;
    char key[128];
    session_key(&alice, key, sizeof(key));
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "HDEL %s created_ms", key);
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    assert_int_equal(status_of("GET", "/api/me", &alice), 200);
    r = redis_command(redis, err, sizeof(err), "HEXISTS %s created_ms", key);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    char set[128];
    snprintf(set, sizeof(set), "ca:session:user:%s", alice.id);
    r = redis_command(redis, err, sizeof(err), "SISMEMBER %s %s", set, key + 11);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

/* The sign-in of `email` to its callback; returns the callback's response. */
static gwt_resp_t callback_of(const char *email)
{
    char *authorize = NULL;
    char binding[256];
    assert_int_equal(gwt_login(gw.base_url, email, &authorize, binding, sizeof(binding)), 0);
    char *headers = NULL;
    assert_int_equal(http_call_h("GET", authorize, NULL, NULL, NULL, &headers), 302);
    char *cb = gwt_header(headers, "Location");
    assert_non_null(cb);
    const char *h[] = {binding, NULL};
    gwt_resp_t r;
    memset(&r, 0, sizeof(r));
    r.status = http_call_h("GET", cb, h, NULL, &r.body, &r.headers);
    free(cb);
    free(headers);
    free(authorize);
    return r;
}

/* UPDATE users SET is_active = false: the session is refused (once the check
 * interval has passed: the test clears the stamp instead of waiting) and
 * deleted, and the user cannot sign in; reactivated, the user can. */
static void test_deactivated_user(void **state)
{
    (void)state;
    gwt_session_t dora;
    assert_int_equal(gwt_sign_in(gw.base_url, "dora@example.com", &dora), 0);
    char key[128];
    session_key(&dora, key, sizeof(key));
    const char *p[] = {dora.id};
    assert_int_equal(sql_exec("UPDATE users SET is_active = false WHERE id = $1", 1, p), 0);
    /* checked at sign-in: SESSION_RECHECK_SECONDS (60) not over yet */
    assert_int_equal(status_of("GET", "/api/me", &dora), 200);
    assert_int_equal(redis_int("HDEL %s checked_ms", key), 1);
    gwt_resp_t r = gwt_request(gw.base_url, "GET", "/api/me", &dora, false, NULL);
    assert_int_equal(r.status, 403);
    assert_string_equal(gwt_error_code(&r), "account_disabled");
    gwt_resp_free(&r);
    assert_int_equal(redis_int("EXISTS %s", key), 0);
    assert_int_equal(status_of("GET", "/api/me", &dora), 401);
    char set[128];
    snprintf(set, sizeof(set), "ca:session:user:%s", dora.id);
    assert_int_equal(redis_int("SCARD %s", set), 0);

    /* the callback refuses: 403 account_disabled, no session, nothing changed */
    char *before = sql_value("SELECT last_login_at::text FROM users WHERE id = $1", 1, p);
    r = callback_of("dora@example.com");
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.body, "account_disabled"));
    char *set_cookie = gwt_set_cookie(r.headers, "ca_session");
    assert_null(set_cookie);
    gwt_resp_free(&r);
    char *after = sql_value("SELECT last_login_at::text FROM users WHERE id = $1", 1, p);
    assert_string_equal(before, after);
    free(before);
    free(after);
    char *refused = sql_value("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = "
                              "'auth.login_refused'",
                              1, p);
    assert_string_equal(refused, "1");
    free(refused);

    /* reactivated: signs in again */
    assert_int_equal(sql_exec("UPDATE users SET is_active = true WHERE id = $1", 1, p), 0);
    assert_int_equal(gwt_sign_in(gw.base_url, "dora@example.com", &dora), 0);
}

/* PUBLIC_URL https: the cookies are __Host-ca_oauth and __Host-ca_session,
 * Secure, Path=/, no Domain; the plain names are not read. (The test talks
 * http to the gateway and rewrites Google's redirect to it.) */
static void test_https_cookie_names(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof(url), "%s/auth/google/login?login_hint=hank@example.com",
             gw_https.base_url);
    char *headers = NULL;
    assert_int_equal(http_call_h("GET", url, NULL, NULL, NULL, &headers), 302);
    char *authorize = gwt_header(headers, "Location");
    char *bind = gwt_set_cookie(headers, "__Host-ca_oauth");
    free(headers);
    assert_non_null(authorize);
    assert_non_null(bind);
    assert_non_null(strstr(bind, "; Secure"));
    assert_non_null(strstr(bind, "Path=/;"));
    assert_null(strstr(bind, "Domain"));
    headers = NULL;
    assert_int_equal(http_call_h("GET", authorize, NULL, NULL, NULL, &headers), 302);
    char *cb = gwt_header(headers, "Location");
    free(headers);
    const char *prefix = "https://gw.example.test";
    assert_true(cb != NULL && strncmp(cb, prefix, strlen(prefix)) == 0);
    snprintf(url, sizeof(url), "%s%s", gw_https.base_url, cb + strlen(prefix));
    char cookie[256];
    snprintf(cookie, sizeof(cookie), "Cookie: %.*s", (int)strcspn(bind, ";"), bind);
    const char *h[] = {cookie, NULL};
    headers = NULL;
    assert_int_equal(http_call_h("GET", url, h, NULL, NULL, &headers), 302);
    char *set = gwt_set_cookie(headers, "__Host-ca_session");
    free(headers);
    assert_non_null(set);
    assert_non_null(strstr(set, "; Secure"));
    assert_non_null(strstr(set, "Path=/;"));
    gwt_session_t hank;
    memset(&hank, 0, sizeof(hank));
    snprintf(hank.cookie, sizeof(hank.cookie), "%.*s", (int)strcspn(set, ";"), set);
    gwt_resp_t r = gwt_request(gw_https.base_url, "GET", "/api/me", &hank, false, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    /* the same id under the plain name: not a session here */
    gwt_session_t plain = hank;
    snprintf(plain.cookie, sizeof(plain.cookie), "ca_session=%s", strchr(hank.cookie, '=') + 1);
    r = gwt_request(gw_https.base_url, "GET", "/api/me", &plain, false, NULL);
    assert_int_equal(r.status, 401);
    gwt_resp_free(&r);
    free(set);
    free(cb);
    free(bind);
    free(authorize);
}

/* Deletes the sign-in counter of an address (every gateway of this suite
 * counts 127.0.0.1's sign-ins in the same key). */
static void login_counter_reset(const char *ip)
{
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "DEL ca:rl:login:%s", ip);
    if (r == NULL) {
        fail_msg("DEL ca:rl:login:%s: %s", ip, err);
    }
    freeReplyObject(r);
}

static size_t oauth_keys(void)
{
    char err[256];
    redisReply *r = redis_command(redis, err, sizeof(err), "KEYS ca:oauth:*");
    if (r == NULL) {
        fail_msg("KEYS ca:oauth:*: %s", err);
    }
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    size_t n = r->elements;
    freeReplyObject(r);
    return n;
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

/* GET url from the local address `from` (127.0.0.2: the gateway listens on
 * 0.0.0.0 and sees that peer). Returns the status, or -1 when this host
 * cannot connect from that address. */
static long get_from(const char *url, const char *from)
{
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_INTERFACE, from);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    long st = -1;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    } else {
        fprintf(stderr, "GET %s from %s: %s\n", url, from, curl_easy_strerror(rc));
    }
    curl_easy_cleanup(c);
    return st;
}

/* RATE_LIMIT_PER_MINUTE_LOGIN at its default: 20 sign-ins started from one
 * address in a minute are redirected to Google; the 21st is a 429 HTML page
 * (rate_limited, Retry-After, no binding cookie) and stores no ca:oauth: key.
 * Another address is counted apart. */
static void test_login_rate_limit(void **state)
{
    (void)state;
    login_counter_reset("127.0.0.1");
    login_counter_reset("127.0.0.2");
    char url[512];
    snprintf(url, sizeof(url), "%s/auth/google/login?login_hint=rita@example.com",
             gw_caps.base_url);
    size_t before = oauth_keys();
    for (int i = 0; i < LOGIN_LIMIT_DEFAULT; i++) {
        char *headers = NULL;
        long st = http_call_h("GET", url, NULL, NULL, NULL, &headers);
        free(headers);
        if (st != 302) {
            fail_msg("sign-in %d of %d from one address answered %ld, want 302", i + 1,
                     LOGIN_LIMIT_DEFAULT, st);
        }
    }
    size_t stored = oauth_keys();
    assert_int_equal(stored, before + LOGIN_LIMIT_DEFAULT);

    gwt_resp_t r;
    memset(&r, 0, sizeof(r));
    r.status = http_call_h("GET", url, NULL, NULL, &r.body, &r.headers);
    assert_int_equal(r.status, 429);
    char *ra = gwt_header(r.headers, "Retry-After");
    char *ct = gwt_header(r.headers, "Content-Type");
    char *bind = gwt_set_cookie(r.headers, "ca_oauth");
    assert_non_null(ra);
    long secs = strtol(ra, NULL, 10);
    if (secs < 1 || secs > 60) {
        fail_msg("Retry-After: %s, want 1..60 (seconds left in the minute)", ra);
    }
    assert_non_null(ct);
    assert_non_null(strstr(ct, "text/html"));
    assert_non_null(strstr(r.body, "<code>rate_limited</code>"));
    assert_null(bind); /* no binding cookie either */
    free(ra);
    free(ct);
    gwt_resp_free(&r);
    assert_int_equal(oauth_keys(), stored); /* the refused sign-in stored no state */
    long long ttl = redis_int("PTTL %s", "ca:rl:login:127.0.0.1");
    assert_true(ttl > 0 && ttl <= 60000);

    /* another address: not limited by 127.0.0.1's count */
    long st = get_from(url, "127.0.0.2");
    if (st == -1) {
        fprintf(stderr, "note: cannot connect from 127.0.0.2 here; the other-address part "
                        "is not checked\n");
    } else {
        assert_int_equal(st, 302);
        assert_int_equal(oauth_keys(), stored + 1);
        assert_int_equal(redis_int("EXISTS %s", "ca:rl:login:127.0.0.2"), 1);
    }
    login_counter_reset("127.0.0.1");
    login_counter_reset("127.0.0.2");
}

/* TRUSTED_PROXIES: behind a trusted proxy the sign-in limit counts the client
 * that X-Forwarded-For names (the right-most hop that is not a proxy), and a
 * client cannot pick its own bucket by sending the header to a gateway that
 * trusts nobody. */
static void test_forwarded_client(void **state)
{
    (void)state;
    char url[512];
    const char *xff[] = {"X-Forwarded-For: 192.0.2.66, 198.51.100.23", NULL};
    login_counter_reset("127.0.0.1");
    login_counter_reset("198.51.100.23");
    login_counter_reset("192.0.2.66");

    snprintf(url, sizeof(url), "%s/auth/google/login?login_hint=fred@example.com",
             gw_https.base_url);
    char *headers = NULL;
    assert_int_equal(http_call_h("GET", url, xff, NULL, NULL, &headers), 302);
    free(headers);
    assert_int_equal(redis_int("EXISTS %s", "ca:rl:login:198.51.100.23"), 1);
    assert_int_equal(redis_int("EXISTS %s", "ca:rl:login:192.0.2.66"), 0); /* client-supplied */
    assert_int_equal(redis_int("EXISTS %s", "ca:rl:login:127.0.0.1"), 0);

    /* a gateway without TRUSTED_PROXIES ignores the header */
    login_counter_reset("198.51.100.23");
    snprintf(url, sizeof(url), "%s/auth/google/login?login_hint=fred@example.com", gw.base_url);
    headers = NULL;
    assert_int_equal(http_call_h("GET", url, xff, NULL, NULL, &headers), 302);
    free(headers);
    assert_int_equal(redis_int("EXISTS %s", "ca:rl:login:198.51.100.23"), 0);
    assert_int_equal(redis_int("EXISTS %s", "ca:rl:login:127.0.0.1"), 1);
    login_counter_reset("127.0.0.1");
}

static long me_status(const gwt_session_t *s)
{
    gwt_resp_t r = gwt_request(gw_caps.base_url, "GET", "/api/me", s, false, NULL);
    long st = r.status;
    gwt_resp_free(&r);
    return st;
}

/* SESSION_MAX_PER_USER=3: the fourth sign-in of a user ends the oldest
 * session (deleted from Redis and from the user's set); the newest three
 * work. A fifth ends the next oldest. */
static void test_sessions_per_user_capped(void **state)
{
    (void)state;
    login_counter_reset("127.0.0.1");
    gwt_session_t s[SESSION_CAP + 2];
    for (int i = 0; i < SESSION_CAP + 1; i++) {
        assert_int_equal(gwt_sign_in(gw_caps.base_url, "ivy@example.com", &s[i]), 0);
        struct timespec pause = {0, 5 * 1000000L}; /* distinct created_ms */
        nanosleep(&pause, NULL);
    }
    char set[128], key[128];
    snprintf(set, sizeof(set), "ca:session:user:%s", s[0].id);
    assert_int_equal(redis_int("SCARD %s", set), SESSION_CAP);
    session_key(&s[0], key, sizeof(key));
    assert_int_equal(redis_int("EXISTS %s", key), 0);
    assert_int_equal(me_status(&s[0]), 401);
    for (int i = 1; i <= SESSION_CAP; i++) {
        assert_int_equal(me_status(&s[i]), 200);
    }

    assert_int_equal(gwt_sign_in(gw_caps.base_url, "ivy@example.com", &s[SESSION_CAP + 1]), 0);
    assert_int_equal(redis_int("SCARD %s", set), SESSION_CAP);
    assert_int_equal(me_status(&s[1]), 401);
    for (int i = 2; i <= SESSION_CAP + 1; i++) {
        assert_int_equal(me_status(&s[i]), 200);
    }
    login_counter_reset("127.0.0.1");
}

/* Last: SIGTERM, and the gateway exits 0 (a sanitizer's report would not). */
static void test_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&gw), 0);
    assert_int_equal(daemon_stop(&gw_short), 0);
    assert_int_equal(daemon_stop(&gw_https), 0);
    assert_int_equal(daemon_stop(&gw_caps), 0);
}

static int setup(void **state)
{
    (void)state;
    char ttl[64];
    snprintf(ttl, sizeof(ttl), "SESSION_TTL_SECONDS=%d", TTL_S);
    const char *extra[] = {ttl, NULL};
    char max_age[64];
    snprintf(max_age, sizeof(max_age), "SESSION_MAX_AGE_SECONDS=%d", MAX_AGE_S);
    const char *extra_short[] = {ttl, max_age, NULL};
    /* behind an ingress on loopback: X-Forwarded-For from 127.0.0.0/8 names the client */
    const char *extra_https[] = {"PUBLIC_URL=https://gw.example.test",
                                 "TRUSTED_PROXIES=127.0.0.0/8, 2001:db8::/32", NULL};
    char cap[64];
    snprintf(cap, sizeof(cap), "SESSION_MAX_PER_USER=%d", SESSION_CAP);
    /* "NAME=": unset, so the gateway's default sign-in limit applies */
    const char *extra_caps[] = {"RATE_LIMIT_PER_MINUTE_LOGIN=", cap, NULL};
    if (fake_start(&google, "google", NULL) != 0 || gwt_start(&gw, google.base_url, extra) != 0 ||
        gwt_start(&gw_short, google.base_url, extra_short) != 0 ||
        gwt_start(&gw_https, google.base_url, extra_https) != 0 ||
        gwt_start(&gw_caps, google.base_url, extra_caps) != 0) {
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
    proc_stop(&gw_short);
    proc_stop(&gw_https);
    proc_stop(&gw_caps);
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
        cmocka_unit_test(test_absolute_lifetime),
        cmocka_unit_test(test_old_session_gets_a_start),
        cmocka_unit_test(test_deactivated_user),
        cmocka_unit_test(test_https_cookie_names),
        cmocka_unit_test(test_login_rate_limit),
        cmocka_unit_test(test_forwarded_client),
        cmocka_unit_test(test_sessions_per_user_capped),
        cmocka_unit_test(test_gateway_exits_cleanly), /* last: stops the gateway */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
