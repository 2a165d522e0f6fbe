/*
 * api-gateway end to end: the real binary against real PostgreSQL and Redis
 * and the Google fake. Sign-in (and its failures, a Google outage), sessions,
 * CSRF, every route's success and error paths, the authorization matrix
 * (no session → 401, another user's ids → 404), the 1 MiB cap, malformed JSON,
 * static files, rate limits, and the row-level-security proof.
 */
#include "crypto.h"
#include "fake_admin.h"
#include "gateway.h"
#include "gw_session.h"
#include "redis.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

static proc_t google;
static proc_t gw;
static char G[160];  /* the fake's base URL */
static char GW[160]; /* the gateway's base URL */
static redis_conn_t *redis;

static gwt_session_t alice, bob;

/* ---- helpers ---- */

/* One request to the gateway. session may be NULL; csrf adds X-CSRF-Token. */
static gwt_resp_t req(const char *method, const char *path, const gwt_session_t *s, bool csrf,
                      const char *body, const char *extra_header)
{
    return gwt_request_h(GW, method, path, s, csrf, body, extra_header);
}

static void expect_error(gwt_resp_t r, long status, const char *code, const char *field)
{
    if (r.status != status) {
        fprintf(stderr, "want %ld %s, got %ld: %s\n", status, code, r.status, r.body);
    }
    assert_int_equal(r.status, status);
    assert_non_null(gwt_error_code(&r));
    assert_string_equal(gwt_error_code(&r), code);
    if (field != NULL) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(r.json, "error");
        const char *msg = gwt_str(e, "message");
        assert_non_null(msg);
        assert_true(strncmp(msg, field, strlen(field)) == 0);
    }
    gwt_resp_free(&r);
}

/* A browser's binding cookie, as the header line "Cookie: ca_oauth=...". */
typedef struct {
    char line[256];
} binding_t;

/* GET /auth/google/login → the fake's authorize URL (Location); *b gets the
 * binding cookie the login set. */
static char *login_location(const char *email, binding_t *b)
{
    char *loc = NULL;
    assert_int_equal(gwt_login(GW, email, &loc, b->line, sizeof(b->line)), 0);
    return loc;
}

/* Follows the fake's consent: returns the callback URL Google sends back to. */
static char *consent(const char *authorize_url)
{
    char *headers = NULL;
    long st = http_call_h("GET", authorize_url, NULL, NULL, NULL, &headers);
    assert_int_equal(st, 302);
    char *loc = gwt_header(headers, "Location");
    free(headers);
    assert_non_null(loc);
    return loc;
}

static char *query_param(const char *url, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "%s=", name);
    const char *q = strchr(url, '?');
    for (const char *p = q; p != NULL; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, key, strlen(key)) == 0) {
            const char *v = p + 1 + strlen(key);
            return strndup(v, strcspn(v, "&"));
        }
    }
    return NULL;
}

/* GET the callback from the browser that holds binding b (NULL: none);
 * returns the response (caller frees). */
static gwt_resp_t get_url(const char *url, const binding_t *b)
{
    gwt_resp_t r;
    memset(&r, 0, sizeof(r));
    const char *headers[] = {b != NULL ? b->line : NULL, NULL};
    r.status = http_call_h("GET", url, headers, NULL, &r.body, &r.headers);
    return r;
}

/* True when the response sets the session cookie. */
static bool sets_session(const gwt_resp_t *r)
{
    char *set = gwt_set_cookie(r->headers, "ca_session");
    free(set);
    return set != NULL;
}

/* The user's stored Drive tokens are v2, sealed under the gateway's key for
 * the user's own id (issue 14): they open bound to it, not bound to any other
 * id, and need no re-seal. want_refresh: a refresh token is stored too. */
static void expect_tokens_bound(const char *email, bool want_refresh)
{
    char err[256];
    crypto_keyring_t *keys = crypto_keyring_new(GWT_ENCRYPTION_KEY, NULL, err, sizeof(err));
    assert_non_null(keys);
    const char *p[] = {email};
    char *id = sql_value("SELECT id FROM users WHERE email = $1", 1, p);
    assert_non_null(id);
    char *another = sql_value("SELECT gen_random_uuid()", 0, NULL);
    const char *columns[] = {"drive_access_token", "drive_refresh_token"};
    for (size_t i = 0; i < 2; i++) {
        char sql[96];
        snprintf(sql, sizeof(sql), "SELECT %s FROM users WHERE email = $1", columns[i]);
        char *tok = sql_value(sql, 1, p);
        if (i == 1 && !want_refresh) {
            assert_null(tok);
            continue;
        }
        if (tok == NULL || strncmp(tok, "v2:", 3) != 0) {
            fail_msg("%s of %s is not v2: %.8s", columns[i], email, tok != NULL ? tok : "NULL");
        }
        char *plain = crypto_envelope_open_bound(keys, tok, id);
        if (plain == NULL) {
            fail_msg("%s of %s does not open for the user's id", columns[i], email);
        }
        assert_true(plain[0] != '\0');
        crypto_free_secret(plain);
        assert_null(crypto_envelope_open_bound(keys, tok, another));
        assert_null(crypto_envelope_open(keys, tok)); /* not the unbound form */
        assert_false(crypto_envelope_needs_reseal(keys, tok, id));
        free(tok);
    }
    free(another);
    free(id);
    crypto_keyring_free(keys);
}

static void sign_in(const char *email, gwt_session_t *s)
{
    int rc = gwt_sign_in(GW, email, s);
    if (rc != 0) {
        proc_print_log(&gw);
    }
    assert_int_equal(rc, 0);
}

static long long count_sql(const char *sql, int n, const char *const *p)
{
    char *v = sql_value(sql, n, p);
    long long x = v != NULL ? atoll(v) : -1;
    free(v);
    return x;
}

static char *fake_folder(const char *email, const char *name, const char *parent, bool folder)
{
    char body[512];
    if (parent != NULL) {
        snprintf(body, sizeof(body), "{\"email\":\"%s\",\"name\":\"%s\",\"parents\":[\"%s\"],%s}",
                 email, name, parent,
                 folder ? "\"folder\":true" : "\"mimeType\":\"image/jpeg\",\"content\":\"x\"");
    } else {
        snprintf(body, sizeof(body), "{\"email\":\"%s\",\"name\":\"%s\",%s}", email, name,
                 folder ? "\"folder\":true" : "\"mimeType\":\"image/jpeg\",\"content\":\"x\"");
    }
    char id[128];
    fake_google_file(G, body, id, sizeof(id));
    return strdup(id);
}

static int start_gateway(proc_t *p, const char *ip_limit, const char *session_limit)
{
    char ip[80], session[80];
    snprintf(ip, sizeof(ip), "RATE_LIMIT_PER_MINUTE_IP=%s", ip_limit);
    snprintf(session, sizeof(session), "RATE_LIMIT_PER_MINUTE_SESSION=%s", session_limit);
    const char *extra[] = {ip, session, NULL};
    return gwt_start(p, G, extra);
}

static int setup(void **state)
{
    (void)state;
    if (fake_start(&google, "google", NULL) != 0) {
        return -1;
    }
    snprintf(G, sizeof(G), "%s", google.base_url);
    if (start_gateway(&gw, "100000", "100000") != 0) {
        return -1;
    }
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
    char err[256];
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    return redis != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    redis_close(redis);
    proc_stop(&gw);
    proc_stop(&google);
    return 0;
}

/* ---- sign-in ---- */

static void test_sign_in_flow(void **state)
{
    (void)state;
    binding_t bind;
    char *auth = login_location("alice@example.com", &bind);
    /* the binding cookie: short-lived, not for scripts, no Secure on http */
    assert_non_null(strstr(bind.line, "Cookie: ca_oauth="));
    assert_true(strlen(bind.line) >= strlen("Cookie: ca_oauth=") + 32);
    /* the authorization request */
    assert_true(strncmp(auth, G, strlen(G)) == 0);
    const char *want[] = {"response_type=code", "client_id=test-client", "access_type=offline",
                          "prompt=consent", "code_challenge_method=S256", "redirect_uri=http",
                          /* least privilege (issue 14): read all, write only its own files */
                          "scope=openid%20email%20profile%20"
                          "https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdrive.readonly%20"
                          "https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdrive.file&",
                          "login_hint=alice%40example.com"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (strstr(auth, want[i]) == NULL) {
            fail_msg("authorize URL lacks %s: %s", want[i], auth);
        }
    }
    char *state_v = query_param(auth, "state");
    char *challenge = query_param(auth, "code_challenge");
    assert_true(state_v != NULL && strlen(state_v) >= 32);
    assert_true(challenge != NULL && strlen(challenge) == 43);
    /* state kept server-side with an expiry, bound to the hash of the cookie */
    redisReply *ttl = redis_command(redis, NULL, 0, "PTTL ca:oauth:%s", state_v);
    assert_non_null(ttl);
    assert_true(ttl->integer > 590000 && ttl->integer <= 600000);
    freeReplyObject(ttl);
    {
        const char *value = bind.line + strlen("Cookie: ca_oauth=");
        uint8_t bh[32];
        char bhex[65];
        crypto_sha256(value, strlen(value), bh);
        crypto_hex(bh, 32, bhex);
        redisReply *v = redis_command(redis, NULL, 0, "GET ca:oauth:%s", state_v);
        assert_int_equal(v->type, REDIS_REPLY_STRING);
        assert_true(strncmp(v->str, bhex, 64) == 0 && v->str[64] == ':');
        assert_null(strstr(v->str, value)); /* the cookie's value itself is not stored */
        freeReplyObject(v);
    }

    char *cb = consent(auth);
    gwt_resp_t r = get_url(cb, &bind);
    assert_int_equal(r.status, 302);
    char *loc = gwt_header(r.headers, "Location");
    assert_string_equal(loc, "/");
    /* the binding cookie is cleared */
    char *cleared = gwt_set_cookie(r.headers, "ca_oauth");
    assert_non_null(cleared);
    assert_true(strncmp(cleared, "ca_oauth=;", 10) == 0);
    assert_non_null(strstr(cleared, "Max-Age=0"));
    free(cleared);
    char *set = gwt_set_cookie(r.headers, "ca_session");
    assert_non_null(set);
    assert_non_null(strstr(set, "ca_session="));
    assert_non_null(strstr(set, "HttpOnly"));
    assert_non_null(strstr(set, "SameSite=Lax"));
    assert_non_null(strstr(set, "Path=/"));
    assert_null(strstr(set, "Secure")); /* PUBLIC_URL is http */
    /* the session is stored under the hash of its id, never the id itself */
    char sid[128];
    snprintf(sid, sizeof(sid), "%.*s", (int)strcspn(set + 11, ";"), set + 11);
    uint8_t h[32];
    char hex[65];
    crypto_sha256(sid, strlen(sid), h);
    crypto_hex(h, 32, hex);
    redisReply *ex = redis_command(redis, NULL, 0, "EXISTS ca:session:%s", hex);
    assert_int_equal(ex->integer, 1);
    freeReplyObject(ex);
    ex = redis_command(redis, NULL, 0, "EXISTS ca:session:%s", sid);
    assert_int_equal(ex->integer, 0);
    freeReplyObject(ex);
    ttl = redis_command(redis, NULL, 0, "TTL ca:session:%s", hex);
    assert_true(ttl->integer > 2591000);
    freeReplyObject(ttl);
    /* the state is gone (one-time) */
    ex = redis_command(redis, NULL, 0, "EXISTS ca:oauth:%s", state_v);
    assert_int_equal(ex->integer, 0);
    freeReplyObject(ex);
    free(loc);
    free(set);
    gwt_resp_free(&r);

    /* replaying the same callback (same state and code): refused, no session */
    r = get_url(cb, &bind);
    assert_int_equal(r.status, 400);
    assert_false(sets_session(&r));
    assert_non_null(strstr(r.body, "<h1>"));
    gwt_resp_free(&r);

    /* the user row: upserted, tokens sealed (v2, bound to the user's id from
     * the first sign-in on), expiry, last login, free plan, audit */
    const char *p[] = {"alice@example.com"};
    expect_tokens_bound("alice@example.com", true);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE email = $1 AND last_login_at > "
                               "timezone('UTC', now()) - interval '1 minute' AND "
                               "drive_token_expires_at > timezone('UTC', now()) + interval '50 "
                               "minutes' AND google_id IS NOT NULL AND name IS NOT NULL",
                               1, p),
                     1);
    assert_int_equal(count_sql("SELECT count(*) FROM subscriptions s JOIN users u ON u.id = "
                               "s.user_id WHERE u.email = $1 AND s.tier = 'free'",
                               1, p),
                     1);
    assert_true(count_sql("SELECT count(*) FROM audit_log a JOIN users u ON u.id = a.user_id "
                          "WHERE u.email = $1 AND a.action = 'auth.login'",
                          1, p) >= 1);
    free(state_v);
    free(challenge);
    free(auth);
    free(cb);

    /* signing in again keeps one user row and the stored refresh token */
    sign_in("alice@example.com", &alice);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE email = $1", 1, p), 1);
    expect_tokens_bound("alice@example.com", true);
    sign_in("bob@example.com", &bob);
    assert_string_not_equal(alice.id, bob.id);
    expect_tokens_bound("bob@example.com", true);
}

/* A user whose stored tokens are legacy v1 (sealed unbound by an earlier
 * version's sign-in) signs in again: both are replaced by v2 tokens bound to
 * the user's id, the row keeps its id. */
static void test_sign_in_rebinds_legacy_tokens(void **state)
{
    (void)state;
    gwt_session_t s;
    sign_in("legacy@example.com", &s);
    char err[256];
    crypto_keyring_t *keys = crypto_keyring_new(GWT_ENCRYPTION_KEY, NULL, err, sizeof(err));
    assert_non_null(keys);
    char *v1_access = crypto_envelope_seal(keys, "ya29.legacy-access");
    char *v1_refresh = crypto_envelope_seal(keys, "1//legacy-refresh");
    const char *p[] = {s.id, v1_access, v1_refresh};
    assert_int_equal(sql_exec("UPDATE users SET drive_access_token = $2, drive_refresh_token = $3 "
                              "WHERE id = $1",
                              3, p),
                     0);
    gwt_session_t again;
    sign_in("legacy@example.com", &again);
    assert_string_equal(again.id, s.id);
    expect_tokens_bound("legacy@example.com", true);
    free(v1_access);
    free(v1_refresh);
    crypto_keyring_free(keys);
}

typedef struct {
    const char *url;
    const binding_t *bind;
    gwt_resp_t resp;
} callback_call_t;

static void *callback_thread(void *arg)
{
    callback_call_t *c = arg;
    c->resp = get_url(c->url, c->bind);
    return NULL;
}

static PGresult *must_exec(PGconn *c, const char *sql, int n, const char *const *p)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    }
    return res;
}

/* Two first sign-ins of one Google account at once: the other one's row
 * appears (with another id) between users_sign_in_id and users_sign_in. The
 * tokens were sealed for an id that is not the row's: users_sign_in raises
 * 40001, the gateway answers 503 with no session, the row is unchanged. Held
 * here by an uncommitted INSERT the gateway's upsert waits for. */
static void test_sign_in_race_stores_nothing(void **state)
{
    (void)state;
    fake_google_user_t u;
    fake_google_user(G, "race@example.com", NULL, &u);
    PGconn *db = PQconnectdb(db_url());
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    PQclear(must_exec(db, "BEGIN", 0, NULL));
    PGresult *res = must_exec(db,
                              "INSERT INTO users (google_id, email) "
                              "VALUES ($1, 'race-winner@example.com') RETURNING id",
                              1, (const char *[]){u.sub});
    char winner[40];
    snprintf(winner, sizeof(winner), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    binding_t bind;
    char *auth = login_location("race@example.com", &bind);
    char *cb = consent(auth);
    callback_call_t call = {.url = cb, .bind = &bind};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, callback_thread, &call), 0);
    /* the gateway's users_sign_in waits for our row's google_id */
    bool waiting = false;
    for (int i = 0; i < 200 && !waiting; i++) {
        waiting = count_sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND query LIKE 'SELECT users_sign_in(%'",
                            0, NULL) == 1;
        if (!waiting) {
            usleep(50 * 1000);
        }
    }
    PQclear(must_exec(db, "COMMIT", 0, NULL));
    PQfinish(db);
    pthread_join(th, NULL);
    assert_true(waiting);
    if (call.resp.status != 503) {
        proc_print_log(&gw);
    }
    assert_int_equal(call.resp.status, 503);
    assert_false(sets_session(&call.resp));
    assert_non_null(strstr(call.resp.body, "try again"));
    gwt_resp_free(&call.resp);
    const char *p[] = {u.sub, winner};
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE google_id = $1", 1, p), 1);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE google_id = $1 AND id = $2 AND "
                               "email = 'race-winner@example.com' AND drive_access_token IS NULL "
                               "AND drive_refresh_token IS NULL AND last_login_at IS NULL",
                               2, p),
                     1);
    assert_int_equal(count_sql("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = "
                               "'auth.login'",
                               1, (const char *[]){winner}),
                     0);
    free(auth);
    free(cb);

    /* the next attempt signs in to that row, tokens bound to its id */
    gwt_session_t s;
    sign_in("race@example.com", &s);
    assert_string_equal(s.id, winner);
    expect_tokens_bound("race@example.com", true);
}

static void test_sign_in_failures(void **state)
{
    (void)state;
    /* denied consent */
    binding_t bind;
    char *auth = login_location("deny@example.com", &bind);
    char *cb = consent(auth);
    assert_non_null(strstr(cb, "error=access_denied"));
    gwt_resp_t r = get_url(cb, &bind);
    assert_int_equal(r.status, 400);
    assert_false(sets_session(&r));
    assert_non_null(strstr(r.body, "Sign-in cancelled"));
    gwt_resp_free(&r);
    free(auth);
    free(cb);

    /* missing / unknown / malformed state */
    char url[512];
    const char *bad[] = {"?code=abc", "?state=notastatewehavemade1234567890&code=abc",
                         "?state=%3Cscript%3E&code=abc", "?state=abcdefabcdefabcdef"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(url, sizeof(url), "%s/auth/google/callback%s", GW, bad[i]);
        r = get_url(url, &bind);
        assert_int_equal(r.status, 400);
        assert_false(sets_session(&r));
        assert_null(strstr(r.body, "<script>"));
        gwt_resp_free(&r);
    }

    /* a replayed code with a fresh state: Google says invalid_grant */
    auth = login_location("carol@example.com", &bind);
    cb = consent(auth);
    char *code = query_param(cb, "code");
    r = get_url(cb, &bind);
    assert_int_equal(r.status, 302);
    gwt_resp_free(&r);
    char *auth2 = login_location("carol@example.com", &bind);
    char *state2 = query_param(auth2, "state");
    snprintf(url, sizeof(url), "%s/auth/google/callback?state=%s&code=%s", GW, state2, code);
    r = get_url(url, &bind);
    assert_int_equal(r.status, 400);
    assert_false(sets_session(&r));
    gwt_resp_free(&r);
    free(auth);
    free(cb);
    free(code);
    free(auth2);
    free(state2);
}

static void test_google_outage_during_sign_in(void **state)
{
    (void)state;
    fake_add_fault(G, "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},"
                      "\"action\":\"status\",\"status\":503,\"retry_after\":0}");
    const char *p[] = {"dave@example.com"};
    binding_t bind;
    char *auth = login_location("dave@example.com", &bind);
    char *cb = consent(auth);
    gwt_resp_t r = get_url(cb, &bind);
    assert_int_equal(r.status, 502);
    assert_false(sets_session(&r));
    assert_non_null(strstr(r.body, "Google"));
    gwt_resp_free(&r);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE email = $1", 1, p), 0);
    fake_clear_faults(G);
    free(auth);
    free(cb);
    /* a dropped connection on userinfo: also 502 */
    fake_add_fault(G, "{\"match\":{\"path\":\"/v1/userinfo\"},\"action\":\"drop\"}");
    auth = login_location("dave@example.com", &bind);
    cb = consent(auth);
    r = get_url(cb, &bind);
    assert_int_equal(r.status, 502);
    assert_false(sets_session(&r));
    gwt_resp_free(&r);
    fake_clear_faults(G);
    free(auth);
    free(cb);
    /* and sign-in works again afterwards */
    gwt_session_t d;
    sign_in("dave@example.com", &d);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE email = $1", 1, p), 1);
}

static void test_logout(void **state)
{
    (void)state;
    gwt_session_t s;
    sign_in("erin@example.com", &s);
    expect_error(req("POST", "/auth/logout", &s, false, NULL, NULL), 403, "csrf_failed", NULL);
    gwt_resp_t r = req("POST", "/auth/logout", &s, true, NULL, NULL);
    assert_int_equal(r.status, 204);
    char *set = gwt_header(r.headers, "Set-Cookie");
    assert_non_null(set);
    assert_non_null(strstr(set, "ca_session=;"));
    assert_non_null(strstr(set, "Max-Age=0"));
    free(set);
    gwt_resp_free(&r);
    expect_error(req("GET", "/api/me", &s, false, NULL, NULL), 401, "unauthorized", NULL);
}

/* Login CSRF: a callback opened in another browser (no binding cookie, or
 * another browser's) gets 400 sign_in_not_bound and no session; the binding
 * cookie is cleared. */
static void test_sign_in_other_browser(void **state)
{
    (void)state;
    const char *p[] = {"victim-jar@example.com"};
    binding_t attacker, other;
    char *auth = login_location("victim-jar@example.com", &attacker);
    char *cb = consent(auth);
    /* another cookie jar: no binding cookie at all */
    gwt_resp_t r = get_url(cb, NULL);
    assert_int_equal(r.status, 400);
    assert_false(sets_session(&r));
    assert_non_null(strstr(r.body, "sign_in_not_bound"));
    char *cleared = gwt_set_cookie(r.headers, "ca_oauth");
    assert_non_null(cleared);
    assert_non_null(strstr(cleared, "Max-Age=0"));
    free(cleared);
    gwt_resp_free(&r);
    /* another cookie jar with its own binding (a sign-in it started itself) */
    char *auth_other = login_location("someone-else@example.com", &other);
    r = get_url(cb, &other);
    assert_int_equal(r.status, 400);
    assert_false(sets_session(&r));
    assert_non_null(strstr(r.body, "sign_in_not_bound"));
    gwt_resp_free(&r);
    /* a forged binding cookie of the right shape */
    binding_t forged;
    snprintf(forged.line, sizeof(forged.line), "Cookie: ca_oauth=%s",
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    char *auth3 = login_location("victim-jar@example.com", &attacker);
    char *cb3 = consent(auth3);
    r = get_url(cb3, &forged);
    assert_int_equal(r.status, 400);
    assert_false(sets_session(&r));
    gwt_resp_free(&r);
    /* the state was used up by the refused callback: its own browser cannot
     * use it either now */
    r = get_url(cb3, &attacker);
    assert_int_equal(r.status, 400);
    assert_false(sets_session(&r));
    gwt_resp_free(&r);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE email = $1", 1, p), 0);
    free(auth);
    free(cb);
    free(auth_other);
    free(auth3);
    free(cb3);
}

/* An e-mail Google has not verified: 403 email_not_verified, no user row, no
 * session. */
static void test_sign_in_unverified_email(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof(url), "%s/__admin/users", G);
    assert_int_equal(http_call("POST", url,
                               "{\"email\":\"unverified@example.com\",\"email_verified\":false}",
                               NULL),
                     200);
    binding_t bind;
    char *auth = login_location("unverified@example.com", &bind);
    char *cb = consent(auth);
    gwt_resp_t r = get_url(cb, &bind);
    assert_int_equal(r.status, 403);
    assert_false(sets_session(&r));
    assert_non_null(strstr(r.body, "email_not_verified"));
    gwt_resp_free(&r);
    const char *p[] = {"unverified@example.com"};
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE email = $1", 1, p), 0);
    free(auth);
    free(cb);
}

/* POST /auth/logout-all ends every session of the user, not another user's. */
static void test_logout_everywhere(void **state)
{
    (void)state;
    gwt_session_t one, two, other;
    sign_in("frank@example.com", &one);
    sign_in("frank@example.com", &two);
    sign_in("grace@example.com", &other);
    assert_string_equal(one.id, two.id);
    assert_string_not_equal(one.cookie, two.cookie);
    expect_error(req("POST", "/auth/logout-all", NULL, false, NULL, NULL), 401, "unauthorized",
                 NULL);
    expect_error(req("POST", "/auth/logout-all", &one, false, NULL, NULL), 403, "csrf_failed",
                 NULL);
    /* the user's set holds both sessions */
    redisReply *n = redis_command(redis, NULL, 0, "SCARD ca:session:user:%s", one.id);
    assert_int_equal(n->integer, 2);
    freeReplyObject(n);
    gwt_resp_t r = req("POST", "/auth/logout-all", &one, true, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetObjectItem(r.json, "sessions_ended")->valueint, 2);
    char *set = gwt_set_cookie(r.headers, "ca_session");
    assert_non_null(set);
    assert_non_null(strstr(set, "Max-Age=0"));
    free(set);
    gwt_resp_free(&r);
    expect_error(req("GET", "/api/me", &one, false, NULL, NULL), 401, "unauthorized", NULL);
    expect_error(req("GET", "/api/me", &two, false, NULL, NULL), 401, "unauthorized", NULL);
    r = req("GET", "/api/me", &other, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    n = redis_command(redis, NULL, 0, "EXISTS ca:session:user:%s", one.id);
    assert_int_equal(n->integer, 0);
    freeReplyObject(n);
    /* signing in again works */
    sign_in("frank@example.com", &one);
}

/* ---- /api/me, /api/usage ---- */

static void test_me(void **state)
{
    (void)state;
    gwt_resp_t r = req("GET", "/api/me", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    const char *keys[] = {"id", "email", "default_preset", "tier", "csrf_token", "created_at"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        assert_non_null(gwt_str(r.json, keys[i]));
    }
    assert_string_equal(gwt_str(r.json, "email"), "alice@example.com");
    assert_string_equal(gwt_str(r.json, "tier"), "free");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "watched_folder_id")));
    assert_true(cJSON_IsBool(cJSON_GetObjectItem(r.json, "email_notifications")));
    assert_string_equal(gwt_str(r.json, "share_outputs"), "link"); /* the default */
    const char *ts = gwt_str(r.json, "created_at");
    assert_int_equal(strlen(ts), 24);
    assert_true(ts[10] == 'T' && ts[23] == 'Z');
    gwt_resp_free(&r);

    /* PATCH: success */
    r = req("PATCH", "/api/me", &alice, true,
            "{\"default_preset\":\"landscape_vivid\",\"email_notifications\":false}", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "default_preset"), "landscape_vivid");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(r.json, "email_notifications")));
    assert_string_equal(gwt_str(r.json, "share_outputs"), "link"); /* untouched */
    gwt_resp_free(&r);

    /* share_outputs: private, then back to link; stored in users.share_outputs */
    r = req("PATCH", "/api/me", &alice, true, "{\"share_outputs\":\"private\"}", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "share_outputs"), "private");
    assert_string_equal(gwt_str(r.json, "default_preset"), "landscape_vivid");
    gwt_resp_free(&r);
    const char *pa[] = {alice.id};
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE id = $1::uuid"
                               " AND share_outputs = 'private'",
                               1, pa),
                     1);
    r = req("GET", "/api/me", &alice, false, NULL, NULL);
    assert_string_equal(gwt_str(r.json, "share_outputs"), "private");
    gwt_resp_free(&r);
    r = req("PATCH", "/api/me", &alice, true, "{\"share_outputs\":\"link\"}", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "share_outputs"), "link");
    gwt_resp_free(&r);

    /* presets: bob's private one is not usable by alice, bob's public one is */
    const char *pb[] = {bob.id};
    assert_int_equal(sql_exec("INSERT INTO presets (created_by_user_id, name, workflow_json, "
                              "is_public) VALUES ($1, 'bob_private', '{}', false), ($1, "
                              "'bob_public', '{}', true)",
                              1, pb),
                     0);
    expect_error(
        req("PATCH", "/api/me", &alice, true, "{\"default_preset\":\"bob_private\"}", NULL), 400,
        "invalid_request", "default_preset");
    r = req("PATCH", "/api/me", &alice, true, "{\"default_preset\":\"bob_public\"}", NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    r = req("PATCH", "/api/me", &bob, true, "{\"default_preset\":\"bob_private\"}", NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);

    /* strict validation, table-driven */
    static const struct {
        const char *body;
        const char *code;
        const char *field;
    } cases[] = {
        {"{\"email_notifications\":\"yes\"}", "invalid_request", "email_notifications"},
        {"{\"email_notifications\":1}", "invalid_request", "email_notifications"},
        {"{\"default_preset\":123}", "invalid_request", "default_preset"},
        {"{\"default_preset\":\"\"}", "invalid_request", "default_preset"},
        {"{\"default_preset\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
         "invalid_request", "default_preset"},
        {"{\"default_preset\":\"no_such_preset\"}", "invalid_request", "default_preset"},
        {"{\"tier\":\"studio\"}", "invalid_request", "tier"},
        {"{\"share_outputs\":\"public\"}", "invalid_request", "share_outputs"},
        {"{\"share_outputs\":\"\"}", "invalid_request", "share_outputs"},
        {"{\"share_outputs\":\"Private\"}", "invalid_request", "share_outputs"},
        {"{\"share_outputs\":true}", "invalid_request", "share_outputs"},
        {"{\"share_outputs\":null}", "invalid_request", "share_outputs"},
        {"{\"share_outputs\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", "invalid_request",
         "share_outputs"},
        {"{\"watched_folder_id\":\"abc\"}", "invalid_request", "watched_folder_id"},
        {"{\"output_folder_id\":\"abc\"}", "invalid_request", "output_folder_id"},
        {"{\"default_preset\":", "invalid_json", NULL},
        {"[1,2]", "invalid_json", NULL},
        {"\"text\"", "invalid_json", NULL},
        {"{} trailing", "invalid_json", NULL},
        {"", "invalid_json", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(req("PATCH", "/api/me", &alice, true, cases[i].body, NULL), 400, cases[i].code,
                     cases[i].field);
    }
}

static void test_usage(void **state)
{
    (void)state;
    gwt_resp_t r = req("GET", "/api/usage", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    const char *keys[] = {
        "month",         "tier",           "monthly_limit",         "images_processed",
        "images_failed", "images_overage", "overage_charged_cents", "remaining"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        assert_non_null(cJSON_GetObjectItem(r.json, keys[i]));
    }
    assert_int_equal(cJSON_GetObjectItem(r.json, "remaining")->valueint, 10);
    /* a free plan's period ends when the next calendar month (UTC) starts */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char end[64];
    snprintf(end, sizeof(end), "%04d-%02d-01T00:00:00.000Z", tm.tm_year + 1900 + (tm.tm_mon == 11),
             tm.tm_mon == 11 ? 1 : tm.tm_mon + 2);
    assert_string_equal(gwt_str(r.json, "period_end"), end);
    gwt_resp_free(&r);
    const char *p[] = {alice.id};
    assert_int_equal(
        sql_exec("INSERT INTO usage_tracking (user_id, month, images_processed, "
                 "images_failed, tier, monthly_limit) VALUES ($1, "
                 "date_trunc('month', timezone('UTC', now()))::date, 7, 2, 'free', 10)",
                 1, p),
        0);
    r = req("GET", "/api/usage", &alice, false, NULL, NULL);
    assert_int_equal(cJSON_GetObjectItem(r.json, "images_processed")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(r.json, "images_failed")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(r.json, "remaining")->valueint, 3);
    gwt_resp_free(&r);
    /* bob sees his own (empty) usage, not alice's */
    r = req("GET", "/api/usage", &bob, false, NULL, NULL);
    assert_int_equal(cJSON_GetObjectItem(r.json, "images_processed")->valueint, 0);
    gwt_resp_free(&r);
}

/* GET /api/me: while Drive is disconnected, why and since when (the
 * dashboard's reconnect banner); null once connected. */
static void test_me_drive_disconnected(void **state)
{
    (void)state;
    const char *pb[] = {bob.id};
    gwt_resp_t r = req("GET", "/api/me", &bob, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r.json, "drive_connected")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "drive_disconnected_reason")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "drive_disconnected_at")));
    gwt_resp_free(&r);
    assert_int_equal(sql_exec("SELECT users_mark_drive_disconnected($1::uuid, "
                              "'invalid_grant: Google Drive access was revoked')",
                              1, pb),
                     0);
    r = req("GET", "/api/me", &bob, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(r.json, "drive_connected")));
    assert_string_equal(gwt_str(r.json, "drive_disconnected_reason"),
                        "invalid_grant: Google Drive access was revoked");
    assert_non_null(gwt_str(r.json, "drive_disconnected_at"));
    gwt_resp_free(&r);
    assert_int_equal(sql_exec("UPDATE users SET drive_connected = true, "
                              "drive_disconnected_reason = NULL, drive_disconnected_at = NULL "
                              "WHERE id = $1",
                              1, pb),
                     0);
}

/* ---- jobs ---- */

static char alice_failed[40], alice_queued[40], alice_done[40], bob_job[40];

static void seed_jobs(void)
{
    const char *pa[] = {alice.id};
    assert_int_equal(
        sql_exec(
            "INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, "
            "preset_name, status, created_at) SELECT $1, 'f' || i, 'img' || i || '.jpg', "
            "'folder', 'portrait_pro', CASE WHEN i % 3 = 0 THEN 'completed' ELSE 'queued' END, "
            "timezone('UTC', now()) - make_interval(mins => i) FROM generate_series(1, 44) i",
            1, pa),
        0);
    char *v = sql_value("INSERT INTO jobs (user_id, drive_file_id, drive_file_name, "
                        "drive_folder_id, preset_name, status, error_code, error_message, "
                        "retry_count, created_at) VALUES ($1, 'failed-file', 'bad.jpg', 'folder', "
                        "'portrait_pro', 'failed', 'processing_error', 'boom', 3, "
                        "timezone('UTC', now()) - interval '2 days') RETURNING id",
                        1, pa);
    snprintf(alice_failed, sizeof(alice_failed), "%s", v);
    free(v);
    v = sql_value("SELECT id FROM jobs WHERE user_id = $1 AND status = 'queued' LIMIT 1", 1, pa);
    snprintf(alice_queued, sizeof(alice_queued), "%s", v);
    free(v);
    v = sql_value("SELECT id FROM jobs WHERE user_id = $1 AND status = 'completed' LIMIT 1", 1, pa);
    snprintf(alice_done, sizeof(alice_done), "%s", v);
    free(v);
    const char *pb[] = {bob.id};
    v = sql_value("INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, "
                  "preset_name, status) VALUES ($1, 'bob-file', 'b.jpg', 'bf', 'portrait_pro', "
                  "'failed') RETURNING id",
                  1, pb);
    snprintf(bob_job, sizeof(bob_job), "%s", v);
    free(v);
}

static void test_jobs_list_and_paging(void **state)
{
    (void)state;
    seed_jobs();
    /* walk every page of 7: 45 distinct jobs, newest first */
    char path[512] = "/api/jobs?limit=7";
    int total = 0, pages = 0;
    char last_created[40] = "9999";
    char seen[64][40];
    for (;;) {
        gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
        assert_int_equal(r.status, 200);
        cJSON *jobs = cJSON_GetObjectItem(r.json, "jobs");
        assert_true(cJSON_IsArray(jobs));
        const cJSON *j = NULL;
        cJSON_ArrayForEach(j, jobs)
        {
            const char *created = gwt_str(j, "created_at");
            assert_true(strcmp(created, last_created) <= 0);
            snprintf(last_created, sizeof(last_created), "%s", created);
            for (int k = 0; k < total; k++) {
                assert_string_not_equal(seen[k], gwt_str(j, "id"));
            }
            snprintf(seen[total++], 40, "%s", gwt_str(j, "id"));
            const char *fields[] = {"id",
                                    "status",
                                    "drive_file_id",
                                    "drive_file_name",
                                    "preset_name",
                                    "created_at",
                                    "started_at",
                                    "completed_at",
                                    "processing_time_ms",
                                    "output_drive_file_id",
                                    "output_file_name",
                                    "output_url",
                                    "error_code",
                                    "error_message",
                                    "retry_count"};
            for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
                assert_non_null(cJSON_GetObjectItem(j, fields[f]));
            }
        }
        pages++;
        const cJSON *next = cJSON_GetObjectItem(r.json, "next_cursor");
        if (cJSON_IsNull(next)) {
            gwt_resp_free(&r);
            break;
        }
        assert_true(cJSON_GetArraySize(jobs) == 7);
        snprintf(path, sizeof(path), "/api/jobs?limit=7&cursor=%s", next->valuestring);
        gwt_resp_free(&r);
        assert_true(pages < 20);
    }
    assert_int_equal(total, 45);
    assert_int_equal(pages, 7);

    /* default limit 20; status filter */
    gwt_resp_t r = req("GET", "/api/jobs", &alice, false, NULL, NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "jobs")), 20);
    gwt_resp_free(&r);
    r = req("GET", "/api/jobs?status=completed&limit=100", &alice, false, NULL, NULL);
    cJSON *jobs = cJSON_GetObjectItem(r.json, "jobs");
    assert_int_equal(cJSON_GetArraySize(jobs), 14);
    const cJSON *j = NULL;
    cJSON_ArrayForEach(j, jobs)
    {
        assert_string_equal(gwt_str(j, "status"), "completed");
    }
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "next_cursor")));
    gwt_resp_free(&r);
    /* bob sees only his one job */
    r = req("GET", "/api/jobs", &bob, false, NULL, NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "jobs")), 1);
    gwt_resp_free(&r);

    static const struct {
        const char *query;
        const char *field;
    } bad[] = {
        {"?limit=0", "limit"},
        {"?limit=101", "limit"},
        {"?limit=abc", "limit"},
        {"?limit=-5", "limit"},
        {"?limit=1.5", "limit"},
        {"?status=done", "status"},
        {"?status=QUEUED", "status"},
        {"?cursor=zzz", "cursor"},
        {"?cursor=%21%21", "cursor"},
        {"?cursor=MjAyNi0wMS0wMVQwMDowMDowMC4wMDAwMDB8bm90LWEtdXVpZA", "cursor"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char p2[256];
        snprintf(p2, sizeof(p2), "/api/jobs%s", bad[i].query);
        expect_error(req("GET", p2, &alice, false, NULL, NULL), 400, "invalid_request",
                     bad[i].field);
    }
}

static void test_job_one_retry_cancel(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof(path), "/api/jobs/%s", alice_failed);
    gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "failed");
    assert_string_equal(gwt_str(r.json, "error_code"), "processing_error");
    gwt_resp_free(&r);
    expect_error(req("GET", "/api/jobs/not-a-uuid", &alice, false, NULL, NULL), 400,
                 "invalid_request", "id");
    expect_error(
        req("GET", "/api/jobs/00000000-0000-0000-0000-000000000000", &alice, false, NULL, NULL),
        404, "not_found", NULL);

    /* retry a failed job: queued, error cleared, id pushed; retry_count (3, its automatic
     * retries used up) is kept: a user's retry is one more run, not a fresh budget */
    redisReply *d = redis_command(redis, NULL, 0, "DEL ca:jobs ca:jobs:u:%s", alice.id);
    freeReplyObject(d);
    snprintf(path, sizeof(path), "/api/jobs/%s/retry", alice_failed);
    expect_error(req("POST", path, &alice, false, NULL, NULL), 403, "csrf_failed", NULL);
    r = req("POST", path, &alice, true, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "queued");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "error_code")));
    assert_int_equal(cJSON_GetObjectItem(r.json, "retry_count")->valueint, 3);
    gwt_resp_free(&r);
    /* pushed to alice's own list of the fair queue, her tier's ring knows her */
    redisReply *lr = redis_command(redis, NULL, 0, "LRANGE ca:jobs:u:%s 0 -1", alice.id);
    assert_int_equal(lr->elements, 1);
    assert_string_equal(lr->element[0]->str, alice_failed);
    freeReplyObject(lr);
    lr = redis_command(redis, NULL, 0, "LPOS ca:jobs:ready:free %s", alice.id);
    assert_int_equal(lr->type, REDIS_REPLY_INTEGER);
    freeReplyObject(lr);
    lr = redis_command(redis, NULL, 0, "LLEN ca:jobs");
    assert_int_equal(lr->integer, 0);
    freeReplyObject(lr);
    /* retrying a queued job conflicts */
    expect_error(req("POST", path, &alice, true, NULL, NULL), 409, "conflict", NULL);
    /* cancel reaches a processing job too (its worker stops it: test_worker_cancel) */
    const char *pf[] = {alice_failed};
    assert_int_equal(sql_exec("UPDATE jobs SET status = 'processing', attempt = attempt + 1,"
                              " lease_expires_at = timezone('UTC', now()) + interval '1 minute'"
                              " WHERE id = $1::uuid",
                              1, pf),
                     0);
    snprintf(path, sizeof(path), "/api/jobs/%s/cancel", alice_failed);
    r = req("POST", path, &alice, true, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "cancelled");
    gwt_resp_free(&r);
    snprintf(path, sizeof(path), "/api/jobs/%s/retry", alice_failed);

    /* cancel: queued → cancelled; completed → 409 */
    snprintf(path, sizeof(path), "/api/jobs/%s/cancel", alice_queued);
    r = req("POST", path, &alice, true, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "cancelled");
    assert_non_null(gwt_str(r.json, "completed_at"));
    gwt_resp_free(&r);
    expect_error(req("POST", path, &alice, true, NULL, NULL), 409, "conflict", NULL);
    snprintf(path, sizeof(path), "/api/jobs/%s/cancel", alice_done);
    expect_error(req("POST", path, &alice, true, NULL, NULL), 409, "conflict", NULL);
    /* a cancelled job can be retried */
    snprintf(path, sizeof(path), "/api/jobs/%s/retry", alice_queued);
    r = req("POST", path, &alice, true, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "status"), "queued");
    gwt_resp_free(&r);
    expect_error(req("POST", "/api/jobs/xyz/retry", &alice, true, NULL, NULL), 400,
                 "invalid_request", "id");
}

/* ---- watch and folders ---- */

static void test_watch_and_folders(void **state)
{
    (void)state;
    char *shoots = fake_folder("alice@example.com", "Shoots", NULL, true);
    char *photo = fake_folder("alice@example.com", "photo.jpg", shoots, false);
    char *bobs = fake_folder("bob@example.com", "BobFolder", NULL, true);
    char body[512];
    snprintf(body, sizeof(body), "{\"folder_id\":\"%s\"}", shoots);
    gwt_resp_t r = req("PUT", "/api/watch", &alice, true, body, NULL);
    if (r.status != 200) {
        proc_print_log(&gw);
    }
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "watched_folder_id"), shoots);
    char *processed = strdup(gwt_str(r.json, "output_folder_id"));
    gwt_resp_free(&r);
    const char *p[] = {alice.id, shoots, processed};
    assert_int_equal(count_sql("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND "
                               "folder_id = $2 AND output_folder_id = $3 AND active AND "
                               "changes_page_token IS NOT NULL",
                               3, p),
                     1);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE id = $1 AND watched_folder_id = "
                               "$2 AND output_folder_id = $3",
                               3, p),
                     1);
    assert_int_equal(count_sql("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = "
                               "'watch.start' AND target = 'drive_folder:' || $2",
                               2, p),
                     1);
    /* again: the same Processed folder is found (appProperties), not a second one */
    r = req("PUT", "/api/watch", &alice, true, body, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "output_folder_id"), processed);
    gwt_resp_free(&r);
    /* folders: the root lists Shoots; Shoots lists exactly one Processed */
    r = req("GET", "/api/drive/folders", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, shoots));
    assert_null(strstr(r.body, photo));
    gwt_resp_free(&r);
    char path[512];
    snprintf(path, sizeof(path), "/api/drive/folders?parent=%s", shoots);
    r = req("GET", path, &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "folders")), 1);
    assert_non_null(strstr(r.body, "\"Processed\""));
    gwt_resp_free(&r);
    expect_error(req("GET", "/api/drive/folders?parent=bad%20id", &alice, false, NULL, NULL), 400,
                 "invalid_request", "parent");

    /* errors: a file, another user's folder, bad input */
    snprintf(body, sizeof(body), "{\"folder_id\":\"%s\"}", photo);
    expect_error(req("PUT", "/api/watch", &alice, true, body, NULL), 400, "invalid_request",
                 "folder_id");
    snprintf(body, sizeof(body), "{\"folder_id\":\"%s\"}", bobs);
    expect_error(req("PUT", "/api/watch", &alice, true, body, NULL), 404, "not_found", NULL);
    expect_error(req("PUT", "/api/watch", &alice, true, "{}", NULL), 400, "invalid_request",
                 "folder_id");
    expect_error(req("PUT", "/api/watch", &alice, true, "{\"folder_id\":7}", NULL), 400,
                 "invalid_request", "folder_id");
    expect_error(req("PUT", "/api/watch", &alice, true, "{\"folder_id\":\"a/b\"}", NULL), 400,
                 "invalid_request", "folder_id");
    expect_error(req("PUT", "/api/watch", &alice, true, "{\"folder_id\":\"x\",\"y\":1}", NULL), 400,
                 "invalid_request", "y");
    expect_error(req("PUT", "/api/watch", &alice, true, "{nope", NULL), 400, "invalid_json", NULL);

    /* stop */
    r = req("DELETE", "/api/watch", &alice, true, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetObjectItem(r.json, "stopped")->valueint, 1);
    gwt_resp_free(&r);
    assert_int_equal(
        count_sql("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND active", 1, p), 0);
    assert_int_equal(count_sql("SELECT count(*) FROM users WHERE id = $1 AND watched_folder_id IS "
                               "NULL AND output_folder_id IS NULL",
                               1, p),
                     1);
    assert_int_equal(count_sql("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = "
                               "'watch.stop'",
                               1, p),
                     1);
    free(shoots);
    free(photo);
    free(bobs);
    free(processed);
}

/* ---- authorization matrix ---- */

static void test_no_session_is_401(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
    } routes[] = {
        {"GET", "/api/me"},
        {"PATCH", "/api/me"},
        {"GET", "/api/usage"},
        {"GET", "/api/jobs"},
        {"GET", "/api/jobs/00000000-0000-0000-0000-000000000001"},
        {"POST", "/api/jobs/00000000-0000-0000-0000-000000000001/retry"},
        {"POST", "/api/jobs/00000000-0000-0000-0000-000000000001/cancel"},
        {"PUT", "/api/watch"},
        {"DELETE", "/api/watch"},
        {"GET", "/api/drive/folders"},
    };
    gwt_session_t forged;
    memset(&forged, 0, sizeof(forged));
    snprintf(forged.cookie, sizeof(forged.cookie),
             "ca_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        expect_error(req(routes[i].method, routes[i].path, NULL, false, "{}", NULL), 401,
                     "unauthorized", NULL);
        expect_error(req(routes[i].method, routes[i].path, &forged, false, "{}", NULL), 401,
                     "unauthorized", NULL);
    }
}

static void test_other_users_ids_are_404(void **state)
{
    (void)state;
    char path[256];
    const char *suffix[] = {"", "/retry", "/cancel"};
    const char *method[] = {"GET", "POST", "POST"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/api/jobs/%s%s", bob_job, suffix[i]);
        expect_error(req(method[i], path, &alice, true, NULL, NULL), 404, "not_found", NULL);
        snprintf(path, sizeof(path), "/api/jobs/%s%s", alice_failed, suffix[i]);
        expect_error(req(method[i], path, &bob, true, NULL, NULL), 404, "not_found", NULL);
    }
    const char *pb[] = {bob_job};
    char *st = sql_value("SELECT status FROM jobs WHERE id = $1", 1, pb);
    assert_string_equal(st, "failed"); /* untouched */
    free(st);
    /* bob's folder through alice's folder browser: nothing of bob's */
    char *bobs = fake_folder("bob@example.com", "BobSecret", NULL, true);
    snprintf(path, sizeof(path), "/api/drive/folders?parent=%s", bobs);
    gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
    assert_true(r.status == 200 || r.status == 404);
    if (r.status == 200) {
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "folders")), 0);
    }
    gwt_resp_free(&r);
    free(bobs);
}

/* ---- CSRF, cap, static, unknown ---- */

static void test_csrf(void **state)
{
    (void)state;
    const char *body = "{\"email_notifications\":true}";
    expect_error(req("PATCH", "/api/me", &alice, false, body, NULL), 403, "csrf_failed", NULL);
    expect_error(req("PATCH", "/api/me", &alice, false, body, "Origin: https://evil.example"), 403,
                 "csrf_failed", NULL);
    expect_error(req("PATCH", "/api/me", &alice, false, body, "Referer: https://evil.example/x"),
                 403, "csrf_failed", NULL);
    expect_error(req("PATCH", "/api/me", &alice, false, body, "X-CSRF-Token: wrong-token"), 403,
                 "csrf_failed", NULL);
    /* another user's token does not work either */
    char other[160];
    snprintf(other, sizeof(other), "X-CSRF-Token: %s", bob.csrf);
    expect_error(req("PATCH", "/api/me", &alice, false, body, other), 403, "csrf_failed", NULL);
    char origin[200];
    snprintf(origin, sizeof(origin), "Origin: %s", GW);
    gwt_resp_t r = req("PATCH", "/api/me", &alice, false, body, origin);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    snprintf(origin, sizeof(origin), "Referer: %s/dashboard", GW);
    r = req("PATCH", "/api/me", &alice, false, body, origin);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    r = req("PATCH", "/api/me", &alice, true, body, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    /* GET needs no token */
    r = req("GET", "/api/me", &alice, false, NULL, "Origin: https://evil.example");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
}

static void test_body_cap_and_unknown(void **state)
{
    (void)state;
    size_t n = 1024 * 1024 + 10;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = '\0';
    expect_error(req("PATCH", "/api/me", &alice, true, big, NULL), 413, "body_too_large", NULL);
    free(big);
    expect_error(req("GET", "/api/nothing-here", &alice, false, NULL, NULL), 404, "not_found",
                 NULL);
    expect_error(req("DELETE", "/api/jobs", &alice, true, NULL, NULL), 405, "method_not_allowed",
                 NULL);
}

static void test_static_files(void **state)
{
    (void)state;
    gwt_resp_t r = req("GET", "/", NULL, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    char *ct = gwt_header(r.headers, "Content-Type");
    assert_non_null(strstr(ct, "text/html"));
    free(ct);
    char *cc = gwt_header(r.headers, "Cache-Control");
    assert_string_equal(cc, "no-cache");
    free(cc);
    char *etag = gwt_header(r.headers, "ETag");
    assert_non_null(etag);
    assert_non_null(strstr(r.body, "Creator Automation"));
    gwt_resp_free(&r);
    char inm[128];
    snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
    r = req("GET", "/index.html", NULL, false, NULL, inm);
    assert_int_equal(r.status, 304);
    gwt_resp_free(&r);
    free(etag);
    r = req("GET", "/app.css", NULL, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    ct = gwt_header(r.headers, "Content-Type");
    assert_non_null(strstr(ct, "text/css"));
    free(ct);
    cc = gwt_header(r.headers, "Cache-Control");
    assert_non_null(strstr(cc, "max-age"));
    free(cc);
    gwt_resp_free(&r);
    const char *bad[] = {"/../../../../etc/passwd",
                         "/%2e%2e/%2e%2e/etc/passwd",
                         "/..%2f..%2fetc%2fpasswd",
                         "/.git/config",
                         "/nope.html",
                         "/%2e%2e%2fMakefile",
                         "/web/../../../Makefile"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = req("GET", bad[i], NULL, false, NULL, NULL);
        assert_true(r.status == 404 || r.status == 400);
        assert_null(strstr(r.body != NULL ? r.body : "", "root:"));
        assert_null(strstr(r.body != NULL ? r.body : "", "SERVICES"));
        gwt_resp_free(&r);
    }
    expect_error(req("POST", "/index.html", NULL, false, "{}", NULL), 405, "method_not_allowed",
                 NULL);
}

/* ---- rate limits (a second gateway with small limits) ---- */

static void test_rate_limits(void **state)
{
    (void)state;
    redisReply *fl = redis_command(redis, NULL, 0, "EVAL %s 0",
                                   "for _,k in ipairs(redis.call('KEYS','ca:rl:*')) do "
                                   "redis.call('DEL',k) end return 1");
    freeReplyObject(fl);
    proc_t small;
    assert_int_equal(start_gateway(&small, "30", "5"), 0);
    char saved[160];
    snprintf(saved, sizeof(saved), "%s", GW);
    snprintf(GW, sizeof(GW), "%s", small.base_url);
    /* per session: 5 a minute */
    for (int i = 0; i < 5; i++) {
        gwt_resp_t r = req("GET", "/api/usage", &alice, false, NULL, NULL);
        assert_int_equal(r.status, 200);
        gwt_resp_free(&r);
    }
    gwt_resp_t r = req("GET", "/api/usage", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 429);
    assert_string_equal(gwt_error_code(&r), "rate_limited");
    char *ra = gwt_header(r.headers, "Retry-After");
    assert_non_null(ra);
    assert_true(atoi(ra) >= 1 && atoi(ra) <= 60);
    free(ra);
    gwt_resp_free(&r);
    /* another session from the same address still passes (until the IP limit) */
    r = req("GET", "/api/usage", &bob, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    /* per IP: 30 a minute, sessions or not */
    int limited = 0;
    for (int i = 0; i < 40; i++) {
        r = req("GET", "/api/jobs", NULL, false, NULL, NULL);
        if (r.status == 429) {
            limited++;
        } else {
            assert_int_equal(r.status, 401);
        }
        gwt_resp_free(&r);
    }
    assert_true(limited >= 10);
    /* health probes are never limited */
    r = req("GET", "/healthz", NULL, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    snprintf(GW, sizeof(GW), "%s", saved);
    assert_int_equal(daemon_stop(&small), 0);
    fl = redis_command(redis, NULL, 0, "EVAL %s 0",
                       "for _,k in ipairs(redis.call('KEYS','ca:rl:*')) do redis.call('DEL',k) "
                       "end return 1");
    freeReplyObject(fl);
}

/* ---- row-level security proof ---- */

static long long rls_count(PGconn *c, const char *uid, const char *table)
{
    char sql[256];
    PGresult *b = PQexec(c, "BEGIN");
    PQclear(b);
    const char *p[] = {uid};
    PGresult *s =
        PQexecParams(c, "SELECT set_config('app.user_id', $1, true)", 1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(s), PGRES_TUPLES_OK);
    PQclear(s);
    snprintf(sql, sizeof(sql), "SELECT * FROM %s", table); /* no WHERE, on purpose */
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", table, PQerrorMessage(c));
    }
    long long n = PQntuples(res);
    int col = PQfnumber(res, strcmp(table, "users") == 0 ? "id" : "user_id");
    for (int i = 0; i < PQntuples(res); i++) {
        assert_string_equal(PQgetvalue(res, i, col), uid);
    }
    PQclear(res);
    PGresult *e = PQexec(c, "COMMIT");
    PQclear(e);
    return n;
}

static void test_rls_proof(void **state)
{
    (void)state;
    /* make sure every table holds rows of several users */
    const char *pb[] = {bob.id, alice.id};
    assert_int_equal(sql_exec("INSERT INTO usage_tracking (user_id, month, tier, monthly_limit) "
                              "VALUES ($1, '2020-01-01', 'free', 10)",
                              1, pb),
                     0);
    assert_int_equal(sql_exec("INSERT INTO drive_polls (user_id, folder_id) VALUES ($1, 'bf1'), "
                              "($2, 'af1')",
                              2, pb),
                     0);
    PGconn *c = PQconnectdb(db_url_as("ca_api_gateway"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *tables[] = {"jobs",        "usage_tracking", "subscriptions",
                            "drive_polls", "users",          "audit_log"};
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", tables[t]);
        long long total = count_sql(sql, 0, NULL);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s = $1", tables[t],
                 strcmp(tables[t], "users") == 0 ? "id" : "user_id");
        const char *pa[] = {alice.id};
        long long mine = count_sql(sql, 1, pa);
        long long seen = rls_count(c, alice.id, tables[t]);
        if (seen != mine || total <= mine || mine < 1) {
            fail_msg("%s: RLS shows %lld rows, alice has %lld, table has %lld", tables[t], seen,
                     mine, total);
        }
        /* bob sees only his */
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s = $1", tables[t],
                 strcmp(tables[t], "users") == 0 ? "id" : "user_id");
        const char *pbb[] = {bob.id};
        assert_int_equal(rls_count(c, bob.id, tables[t]), count_sql(sql, 1, pbb));
        /* no user set: nothing */
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", tables[t]);
        PGresult *res = PQexec(c, sql);
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        assert_string_equal(PQgetvalue(res, 0, 0), "0");
        PQclear(res);
    }
    /* a write to another user's row changes nothing */
    PGresult *b = PQexec(c, "BEGIN");
    PQclear(b);
    const char *pa[] = {alice.id, bob.id};
    PGresult *s =
        PQexecParams(c, "SELECT set_config('app.user_id', $1, true)", 1, NULL, pa, NULL, NULL, 0);
    PQclear(s);
    PGresult *u = PQexecParams(c, "UPDATE users SET name = 'pwned' WHERE id = $1", 1, NULL, pb,
                               NULL, NULL, 0);
    assert_string_equal(PQcmdTuples(u), "0");
    PQclear(u);
    /* and jobs_retry refuses a user other than the transaction's */
    u = PQexecParams(c, "SELECT jobs_retry($2::uuid, $1::uuid)", 2, NULL,
                     (const char *const[]){bob_job, bob.id}, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(u), PGRES_FATAL_ERROR);
    PQclear(u);
    PGresult *e = PQexec(c, "ROLLBACK");
    PQclear(e);
    (void)pa;
    PQfinish(c);
}

/* A job's JSON is written by the gateway from plain columns: strings are
 * escaped, integers are numbers, NULL is null, text passes through as UTF-8. */
static void test_job_json_escaping(void **state)
{
    (void)state;
    const char *p[] = {alice.id,
                       "bad \"quote\" back\\slash\nnew\ttab\x01 \xc3\xa9t\xc3\xa9 \xe2\x9c\x93"};
    char *id =
        sql_value("INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id,"
                  " preset_name, status, error_code, error_message, processing_time_ms,"
                  " retry_count, started_at)"
                  " VALUES ($1, 'esc1', 'a \"b\".jpg', 'folder', 'portrait_pro', 'failed',"
                  " 'E_X', $2, 1234, 2, timezone('UTC', now())) RETURNING id",
                  2, p);
    assert_non_null(id);
    char path[128];
    snprintf(path, sizeof(path), "/api/jobs/%s", id);
    gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(gwt_str(r.json, "error_message"), p[1]);
    assert_string_equal(gwt_str(r.json, "drive_file_name"), "a \"b\".jpg");
    const cJSON *ms = cJSON_GetObjectItem(r.json, "processing_time_ms");
    assert_true(cJSON_IsNumber(ms));
    assert_int_equal((int)ms->valuedouble, 1234);
    const cJSON *rc = cJSON_GetObjectItem(r.json, "retry_count");
    assert_true(cJSON_IsNumber(rc));
    assert_int_equal((int)rc->valuedouble, 2);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "completed_at")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "output_url")));
    const char *started = gwt_str(r.json, "started_at");
    assert_non_null(started);
    assert_int_equal(strlen(started), 24); /* 2026-01-02T03:04:05.678Z */
    assert_int_equal(started[23], 'Z');
    gwt_resp_free(&r);
    const char *pd[] = {id};
    assert_int_equal(sql_exec("DELETE FROM jobs WHERE id = $1", 1, pd), 0);
    free(id);
}

/* Timestamps come from PostgreSQL as ISO text and are written by the gateway
 * as RFC 3339 with milliseconds, truncated as to_char's MS (a fraction of
 * .678912 is .678, none is .000, .5 is .500); the cursor keeps microseconds,
 * so jobs created in the same microsecond page by id without loss. */
static void test_jobs_timestamps_and_ties(void **state)
{
    (void)state;
    const char *pa[] = {alice.id};
    assert_int_equal(
        sql_exec("INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, "
                 "preset_name, status, created_at, started_at) "
                 "SELECT $1, 'tie' || i, 't.jpg', 'folder', 'portrait_pro', 'processing', "
                 "CASE WHEN i <= 5 THEN timestamp '1999-12-31 23:59:59.5' "
                 "     WHEN i = 6 THEN timestamp '1999-12-31 23:59:59' "
                 "     ELSE timestamp '1999-12-31 23:59:58.678912' END, "
                 "timestamp '2000-01-01 00:00:00.04' FROM generate_series(1, 7) i",
                 1, pa),
        0);
    char path[512] = "/api/jobs?status=processing&limit=2";
    const char *want_created[7] = {"1999-12-31T23:59:59.500Z", "1999-12-31T23:59:59.500Z",
                                   "1999-12-31T23:59:59.500Z", "1999-12-31T23:59:59.500Z",
                                   "1999-12-31T23:59:59.500Z", "1999-12-31T23:59:59.000Z",
                                   "1999-12-31T23:59:58.678Z"};
    char seen[8][40];
    int total = 0;
    for (int pages = 0; pages < 6; pages++) {
        gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
        assert_int_equal(r.status, 200);
        const cJSON *j = NULL;
        cJSON_ArrayForEach(j, cJSON_GetObjectItem(r.json, "jobs"))
        {
            assert_true(total < 7);
            assert_string_equal(gwt_str(j, "created_at"), want_created[total]);
            assert_string_equal(gwt_str(j, "started_at"), "2000-01-01T00:00:00.040Z");
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "completed_at")));
            for (int k = 0; k < total; k++) {
                assert_string_not_equal(seen[k], gwt_str(j, "id"));
            }
            snprintf(seen[total++], 40, "%s", gwt_str(j, "id"));
        }
        const cJSON *next = cJSON_GetObjectItem(r.json, "next_cursor");
        if (cJSON_IsNull(next)) {
            gwt_resp_free(&r);
            break;
        }
        if (total == 2) { /* the cursor holds the last job's created_at to the microsecond */
            size_t n = 0;
            uint8_t *raw = crypto_base64url_decode(next->valuestring, &n);
            assert_non_null(raw);
            assert_true(n > 27 && memcmp(raw, "1999-12-31T23:59:59.500000|", 27) == 0);
            free(raw);
        }
        snprintf(path, sizeof(path), "/api/jobs?status=processing&limit=2&cursor=%s",
                 next->valuestring);
        gwt_resp_free(&r);
    }
    assert_int_equal(total, 7);
    assert_int_equal(sql_exec("DELETE FROM jobs WHERE drive_file_id LIKE 'tie%'", 0, NULL), 0);
}

/* Walks every page of `query` (limit and filters, no cursor) and keeps the
 * drive_file_id of the jobs whose drive_file_id starts with "hist-", in the
 * order listed. Returns how many; checks the order and that no id repeats. */
static int walk_hist(const char *query, char out[][16], int max)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/jobs?%s", query);
    int n = 0, all = 0, pages = 0;
    char seen[128][40];
    char last[40] = "9999";
    for (;;) {
        gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
        assert_int_equal(r.status, 200);
        const cJSON *j = NULL;
        cJSON_ArrayForEach(j, cJSON_GetObjectItem(r.json, "jobs"))
        {
            assert_true(strcmp(gwt_str(j, "created_at"), last) <= 0);
            snprintf(last, sizeof(last), "%s", gwt_str(j, "created_at"));
            for (int k = 0; k < all; k++) {
                assert_string_not_equal(seen[k], gwt_str(j, "id"));
            }
            assert_true(all < 128);
            snprintf(seen[all++], 40, "%s", gwt_str(j, "id"));
            const char *f = gwt_str(j, "drive_file_id");
            if (strncmp(f, "hist-", 5) == 0) {
                assert_true(n < max);
                snprintf(out[n++], 16, "%s", f);
            }
        }
        const cJSON *next = cJSON_GetObjectItem(r.json, "next_cursor");
        if (cJSON_IsNull(next)) {
            gwt_resp_free(&r);
            break;
        }
        snprintf(path, sizeof(path), "/api/jobs?%s&cursor=%s", query, next->valuestring);
        gwt_resp_free(&r);
        assert_true(++pages < 200);
    }
    return n;
}

/* Jobs archived by the job-worker's retention (jobs_archive) are listed with
 * the live ones: same order, same paging, same cursor, same filters, and
 * GET /api/jobs/{id} finds them. The twelve jobs below are alice's oldest,
 * live and archived interleaved (a job still queued is never archived, so a
 * live job can be older than archived ones), with a live and an archived job
 * created in the same microsecond (ordered by id across the two tables). */
static void test_jobs_archived_listed(void **state)
{
    (void)state;
    const char *pa[] = {alice.id};
    /* hist-01 newest .. hist-12 oldest; A = archived, L = live */
    assert_int_equal(
        sql_exec(
            "INSERT INTO jobs (id, user_id, drive_file_id, drive_file_name, drive_folder_id, "
            "preset_name, status, created_at) SELECT "
            "CASE WHEN i = 5 THEN 'ffffffff-ffff-4fff-bfff-ffffffffffff'::uuid "
            "ELSE gen_random_uuid() END, $1, 'hist-' || lpad(i::text, 2, '0'), 'h.jpg', "
            "'folder', 'portrait_pro', CASE WHEN i % 2 = 0 THEN 'queued' ELSE 'completed' END, "
            "CASE WHEN i = 5 THEN timestamp '1980-01-01 23:55:00.123456' "
            "ELSE timestamp '1980-01-02' - make_interval(mins => i) END "
            "FROM generate_series(1, 12) i WHERE i IN (1, 2, 5, 8, 9, 12)",
            1, pa),
        0);
    assert_int_equal(
        sql_exec(
            "INSERT INTO jobs_archive (id, user_id, drive_file_id, drive_file_name, "
            "drive_folder_id, preset_name, status, created_at, completed_at, "
            "processing_time_ms, output_url) SELECT "
            "CASE WHEN i = 6 THEN '00000000-0000-4000-8000-000000000001'::uuid "
            "ELSE gen_random_uuid() END, $1, 'hist-' || lpad(i::text, 2, '0'), 'h.jpg', "
            "'folder', 'portrait_pro', CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'completed' END, "
            "CASE WHEN i = 6 THEN timestamp '1980-01-01 23:55:00.123456' "
            "ELSE timestamp '1980-01-02' - make_interval(mins => i) END, "
            "timestamp '1980-01-02', 1234, 'https://drive.google.com/x' "
            "FROM generate_series(1, 12) i WHERE i IN (3, 4, 6, 7, 10, 11)",
            1, pa),
        0);
    /* bob's archived job never shows in alice's list */
    const char *pb[] = {bob.id};
    assert_int_equal(
        sql_exec("INSERT INTO jobs_archive (user_id, drive_file_id, drive_file_name, "
                 "drive_folder_id, preset_name, status, created_at) VALUES ($1, 'hist-bob', "
                 "'b.jpg', 'bf', 'portrait_pro', 'completed', timestamp '1980-01-01 12:00')",
                 1, pb),
        0);

    /* every page size, including 1 (each page boundary crossed one by one) */
    const char *queries[] = {"limit=1", "limit=2", "limit=5", "limit=100"};
    for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
        char got[16][16];
        int n = walk_hist(queries[q], got, 16);
        assert_int_equal(n, 12);
        for (int i = 0; i < 12; i++) {
            char want[16];
            snprintf(want, sizeof(want), "hist-%02d", i + 1);
            assert_string_equal(got[i], want);
        }
    }
    /* status filters apply to both tables: completed = L1 L5 L9 A4 A7 A10 A11 */
    const char *want_completed[] = {"hist-01", "hist-04", "hist-05", "hist-07",
                                    "hist-09", "hist-10", "hist-11"};
    for (int limit = 1; limit <= 3; limit++) {
        char query[64], got[16][16];
        snprintf(query, sizeof(query), "status=completed&limit=%d", limit);
        int n = walk_hist(query, got, 16);
        assert_int_equal(n, 7);
        for (int i = 0; i < n; i++) {
            assert_string_equal(got[i], want_completed[i]);
        }
    }
    char got[16][16];
    assert_int_equal(walk_hist("status=failed&limit=1", got, 16), 2); /* A3, A6 */
    assert_string_equal(got[0], "hist-03");
    assert_string_equal(got[1], "hist-06");
    assert_int_equal(walk_hist("status=queued&limit=2", got, 16), 3); /* L2 L8 L12 */
    assert_string_equal(got[0], "hist-02");
    assert_string_equal(got[1], "hist-08");
    assert_string_equal(got[2], "hist-12");

    /* the cursor after the live hist-05 (same microsecond, larger id) goes on
     * with the archived hist-06: the format is the live jobs' */
    const char *raw = "1980-01-01T23:55:00.123456|ffffffff-ffff-4fff-bfff-ffffffffffff";
    char *cursor = crypto_base64url_encode(raw, strlen(raw));
    char path[256];
    snprintf(path, sizeof(path), "/api/jobs?limit=2&cursor=%s", cursor);
    free(cursor);
    gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *jobs = cJSON_GetObjectItem(r.json, "jobs");
    assert_int_equal(cJSON_GetArraySize(jobs), 2);
    assert_string_equal(gwt_str(cJSON_GetArrayItem(jobs, 0), "drive_file_id"), "hist-06");
    assert_string_equal(gwt_str(cJSON_GetArrayItem(jobs, 0), "id"),
                        "00000000-0000-4000-8000-000000000001");
    assert_string_equal(gwt_str(cJSON_GetArrayItem(jobs, 1), "drive_file_id"), "hist-07");
    gwt_resp_free(&r);

    /* one archived job by id, every field; bob's is 404 to alice */
    r = req("GET", "/api/jobs/00000000-0000-4000-8000-000000000001", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "drive_file_id"), "hist-06");
    assert_string_equal(gwt_str(r.json, "status"), "failed");
    assert_string_equal(gwt_str(r.json, "created_at"), "1980-01-01T23:55:00.123Z");
    assert_string_equal(gwt_str(r.json, "completed_at"), "1980-01-02T00:00:00.000Z");
    assert_int_equal(cJSON_GetObjectItem(r.json, "processing_time_ms")->valueint, 1234);
    assert_string_equal(gwt_str(r.json, "output_url"), "https://drive.google.com/x");
    gwt_resp_free(&r);
    char *bob_arch =
        sql_value("SELECT id FROM jobs_archive WHERE drive_file_id = 'hist-bob'", 0, NULL);
    snprintf(path, sizeof(path), "/api/jobs/%s", bob_arch);
    expect_error(req("GET", path, &alice, false, NULL, NULL), 404, "not_found", NULL);
    r = req("GET", path, &bob, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    free(bob_arch);
    /* an archived job is history: retry and cancel do not reach it (404) */
    expect_error(req("POST", "/api/jobs/00000000-0000-4000-8000-000000000001/retry", &alice, true,
                     NULL, NULL),
                 404, "not_found", NULL);

    assert_int_equal(sql_exec("DELETE FROM jobs WHERE drive_file_id LIKE 'hist-%'", 0, NULL), 0);
    assert_int_equal(
        sql_exec("DELETE FROM jobs_archive WHERE drive_file_id LIKE 'hist-%'", 0, NULL), 0);
}

/* GET /api/usage/history: the user's last 12 periods (usage rows), newest
 * first, with the plan snapshot and the overage of each; 14 periods stored,
 * 12 returned; another user's rows never. */
static void test_usage_history(void **state)
{
    (void)state;
    /* bob starts with no period (earlier tests may have counted his images) */
    const char *pb[] = {bob.id};
    assert_int_equal(sql_exec("DELETE FROM usage_tracking WHERE user_id = $1", 1, pb), 0);
    gwt_resp_t r = req("GET", "/api/usage/history", &bob, false, NULL, NULL);
    if (r.status != 200) {
        fail_msg("GET /api/usage/history: %ld %s", r.status, r.body);
    }
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(r.json, "periods")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "periods")), 0);
    gwt_resp_free(&r);
    /* 14 monthly periods, 2024-01 .. 2025-02: i = 0 oldest; creator from
     * i = 6 with overage in odd months */
    assert_int_equal(
        sql_exec("INSERT INTO usage_tracking (user_id, month, images_processed, images_failed, "
                 "images_overage, tier, monthly_limit, overage_charged_cents) SELECT $1, "
                 "(date '2024-01-01' + make_interval(months => i))::date, 10 + i, i % 3, "
                 "CASE WHEN i >= 6 AND i % 2 = 1 THEN i ELSE 0 END, "
                 "CASE WHEN i >= 6 THEN 'creator' ELSE 'free' END, "
                 "CASE WHEN i >= 6 THEN 100 ELSE 10 END, "
                 "CASE WHEN i >= 6 AND i % 2 = 1 THEN 50 * i ELSE 0 END "
                 "FROM generate_series(0, 13) i",
                 1, pb),
        0);
    r = req("GET", "/api/usage/history", &bob, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "no-store"));
    const cJSON *periods = cJSON_GetObjectItem(r.json, "periods");
    assert_int_equal(cJSON_GetArraySize(periods), 12);
    for (int k = 0; k < 12; k++) {
        const cJSON *p = cJSON_GetArrayItem(periods, k);
        int i = 13 - k; /* newest first: 2025-02 (i = 13) .. 2024-03 (i = 2) */
        char month[16];
        snprintf(month, sizeof(month), "%04d-%02d-01", 2024 + (i / 12), 1 + (i % 12));
        assert_string_equal(gwt_str(p, "month"), month);
        assert_string_equal(gwt_str(p, "tier"), i >= 6 ? "creator" : "free");
        assert_int_equal(cJSON_GetObjectItem(p, "monthly_limit")->valueint, i >= 6 ? 100 : 10);
        assert_int_equal(cJSON_GetObjectItem(p, "images_processed")->valueint, 10 + i);
        assert_int_equal(cJSON_GetObjectItem(p, "images_failed")->valueint, i % 3);
        bool over = i >= 6 && i % 2 == 1;
        assert_int_equal(cJSON_GetObjectItem(p, "images_overage")->valueint, over ? i : 0);
        assert_int_equal(cJSON_GetObjectItem(p, "overage_charged_cents")->valueint,
                         over ? 50 * i : 0);
        assert_int_equal(cJSON_GetArraySize(p), 7);
    }
    gwt_resp_free(&r);
    /* alice's history has only her own period (test_usage's) */
    r = req("GET", "/api/usage/history", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    periods = cJSON_GetObjectItem(r.json, "periods");
    assert_int_equal(cJSON_GetArraySize(periods), 1);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(periods, 0), "images_processed")->valueint, 7);
    gwt_resp_free(&r);
    assert_int_equal(sql_exec("DELETE FROM usage_tracking WHERE user_id = $1", 1, pb), 0);
}

/* The plan of GET /api/jobs, as the gateway runs it (prepared, generic plan,
 * as ca_api_gateway under row-level security) on a table where other users
 * have many jobs: it reads idx_jobs_user_created in order and stops at the
 * limit. The jobs policy is one equality with app.user_id, so the planner
 * merges it with the statement's `user_id = $1`; the earlier
 * `... OR app.rls_system` form made it expect a couple of rows and sort every
 * job of the user for each page. */
static void test_jobs_list_plan(void **state)
{
    (void)state;
    assert_int_equal(
        sql_exec(
            "WITH u AS (INSERT INTO users (google_id, email) "
            "  SELECT 'plan' || i, 'plan' || i || '@example.com' FROM generate_series(1, 30) i "
            "  RETURNING id) "
            "INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, "
            "preset_name, status, created_at) SELECT u.id, 'p' || i, 'p.jpg', 'folder', "
            "'portrait_pro', 'completed', timezone('UTC', now()) - make_interval(secs => i) "
            "FROM u, generate_series(1, 100) i",
            0, NULL),
        0);
    /* and as many archived jobs, older */
    assert_int_equal(
        sql_exec("INSERT INTO jobs_archive (user_id, drive_file_id, drive_file_name, "
                 "drive_folder_id, preset_name, status, created_at) SELECT u.id, 'a' || i, "
                 "'a.jpg', 'folder', 'portrait_pro', 'completed', "
                 "timezone('UTC', now()) - interval '100 days' - make_interval(secs => i) "
                 "FROM users u, generate_series(1, 100) i WHERE u.google_id LIKE 'plan%'",
                 0, NULL),
        0);
    assert_int_equal(sql_exec("ANALYZE jobs", 0, NULL), 0);
    assert_int_equal(sql_exec("ANALYZE jobs_archive", 0, NULL), 0);
    PGconn *c = PQconnectdb(db_url_as("ca_api_gateway"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *pa[] = {alice.id};
    PGresult *res =
        PQexecParams(c, "SELECT set_config('app.user_id', $1, false)", 1, NULL, pa, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    res = PQexec(c, "SET plan_cache_mode = force_generic_plan");
    PQclear(res);
    /* all sixteen statements: (status filter) x (waiting-for-quota filter) x
     * (cursor) x (date range) */
    for (size_t v = 0; v < 16; v++) {
        bool status = (v & 4) != 0, waiting = (v & 2) != 0, cursor = (v & 1) != 0;
        bool dated = (v & 8) != 0;
        char sql[4096];
        snprintf(sql, sizeof sql, "PREPARE q%zu AS %s", v,
                 jobs_list_sql(status, waiting, cursor, dated));
        res = PQexec(c, sql);
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        snprintf(sql, sizeof sql, "EXPLAIN EXECUTE q%zu('%s', 21%s%s%s)", v, alice.id,
                 status ? ", 'completed'" : "",
                 cursor ? ", '2100-01-01', '00000000-0000-4000-8000-000000000000'" : "",
                 dated ? ", '2000-01-01', 'infinity'" : "");
        res = PQexec(c, sql);
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        char plan[8192] = "";
        for (int i = 0; i < PQntuples(res); i++) {
            size_t used = strlen(plan);
            snprintf(plan + used, sizeof plan - used, "%s\n", PQgetvalue(res, i, 0));
        }
        PQclear(res);
        /* live and archived jobs: two ordered index scans merged, no Sort node
         * (Merge Append's own "Sort Key:" line is its merge order); the jobs
         * waiting for quota from their partial indexes (read backwards) */
        const char *live = waiting ? "idx_jobs_quota_waiting" : "idx_jobs_user_created";
        const char *archived =
            waiting ? "idx_jobs_archive_quota_waiting" : "idx_jobs_archive_user_created";
        if (strstr(plan, live) == NULL || strstr(plan, archived) == NULL ||
            strstr(plan, "Merge Append") == NULL || strstr(plan, "Sort  (") != NULL) {
            fail_msg("GET /api/jobs plan (variant %zu) is not a merge of ordered index scans:\n%s",
                     v, plan);
        }
    }
    PQfinish(c);
    assert_int_equal(sql_exec("DELETE FROM users WHERE google_id LIKE 'plan%'", 0, NULL), 0);
}

/* ?from=&to=: UTC days, both included, over live and archived jobs, with the
 * other filters and the cursor; bad dates are 400 on the field. */
static void test_jobs_date_filter(void **state)
{
    (void)state;
    const char *pa[] = {alice.id};
    assert_int_equal(
        sql_exec("INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, "
                 "preset_name, status, created_at) VALUES "
                 "($1, 'day-a', 'a.jpg', 'f', 'portrait_pro', 'completed', '1975-03-01 10:00'), "
                 "($1, 'day-b', 'b.jpg', 'f', 'portrait_pro', 'failed', '1975-03-02 00:00'), "
                 "($1, 'day-c', 'c.jpg', 'f', 'portrait_pro', 'completed', "
                 "'1975-03-02 23:59:59.999999')",
                 1, pa),
        0);
    assert_int_equal(
        sql_exec("INSERT INTO jobs_archive (user_id, drive_file_id, drive_file_name, "
                 "drive_folder_id, preset_name, status, created_at) VALUES "
                 "($1, 'day-d', 'd.jpg', 'f', 'portrait_pro', 'completed', '1975-03-03 00:00'), "
                 "($1, 'day-e', 'e.jpg', 'f', 'portrait_pro', 'completed', "
                 "'1975-02-28 23:59:59.999999')",
                 1, pa),
        0);
    static const struct {
        const char *query;
        const char *files; /* drive_file_ids, newest first */
    } cases[] = {
        {"from=1975-03-02&to=1975-03-02", "day-c day-b"},
        {"from=1975-03-01&to=1975-03-03", "day-d day-c day-b day-a"},
        {"from=1975-02-28&to=1975-02-28", "day-e"},
        {"to=1975-02-28", "day-e"},
        {"from=1975-02-28&to=1975-03-01", "day-a day-e"},
        {"from=1975-03-01&to=1975-03-03&status=completed", "day-d day-c day-a"},
        {"from=1975-03-01&to=1975-03-03&waiting_for=quota", ""},
        {"from=1975-03-04&to=1975-03-31", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "/api/jobs?limit=100&%s", cases[i].query);
        gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
        assert_int_equal(r.status, 200);
        char got[256] = "";
        const cJSON *j = NULL;
        cJSON_ArrayForEach(j, cJSON_GetObjectItem(r.json, "jobs"))
        {
            size_t used = strlen(got);
            snprintf(got + used, sizeof(got) - used, "%s%s", used ? " " : "",
                     gwt_str(j, "drive_file_id"));
        }
        gwt_resp_free(&r);
        if (strcmp(got, cases[i].files) != 0) {
            fail_msg("%s: got [%s], want [%s]", cases[i].query, got, cases[i].files);
        }
    }
    /* pages of 1 through the range, live and archived, in order */
    char path[512] = "/api/jobs?limit=1&from=1975-02-28&to=1975-03-03";
    char got[256] = "";
    for (int pages = 0;; pages++) {
        assert_true(pages < 10);
        gwt_resp_t r = req("GET", path, &alice, false, NULL, NULL);
        assert_int_equal(r.status, 200);
        const cJSON *j = NULL;
        cJSON_ArrayForEach(j, cJSON_GetObjectItem(r.json, "jobs"))
        {
            size_t used = strlen(got);
            snprintf(got + used, sizeof(got) - used, "%s%s", used ? " " : "",
                     gwt_str(j, "drive_file_id"));
        }
        const cJSON *next = cJSON_GetObjectItem(r.json, "next_cursor");
        if (cJSON_IsNull(next)) {
            gwt_resp_free(&r);
            break;
        }
        snprintf(path, sizeof(path), "/api/jobs?limit=1&from=1975-02-28&to=1975-03-03&cursor=%s",
                 next->valuestring);
        gwt_resp_free(&r);
    }
    assert_string_equal(got, "day-d day-c day-b day-a day-e");
    /* a leap day is a day; empty values are no filter */
    gwt_resp_t r = req("GET", "/api/jobs?from=1976-02-29&to=", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    static const struct {
        const char *query;
        const char *field;
    } bad[] = {
        {"?from=1975-3-01", "from"},
        {"?from=1975-02-29", "from"},
        {"?to=abc", "to"},
        {"?to=1975-03-32", "to"},
        {"?to=1975-13-01", "to"},
        {"?from=1969-12-31", "from"},
        {"?to=1975-03-01T00:00", "to"},
        {"?from=%2B975-03-01", "from"},
        {"?from=1975-03-02&to=1975-03-01", "from"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char p2[256];
        snprintf(p2, sizeof(p2), "/api/jobs%s", bad[i].query);
        expect_error(req("GET", p2, &alice, false, NULL, NULL), 400, "invalid_request",
                     bad[i].field);
    }
    assert_int_equal(sql_exec("DELETE FROM jobs WHERE drive_file_id LIKE 'day-%'", 0, NULL), 0);
    assert_int_equal(sql_exec("DELETE FROM jobs_archive WHERE drive_file_id LIKE 'day-%'", 0, NULL),
                     0);
}

/* gw_query: when the database answers with an error the route's callback does
 * not run, and the argument it would have freed is freed by gw_query_ex (a
 * leak before). A cursor of the right shape but an impossible date passes the
 * gateway's check and fails in PostgreSQL (22008), with the page state of
 * GET /api/jobs in flight. Under SANITIZE=address the leak checker runs when
 * the gateway exits, so its exit status tells (test_gateway_exits_cleanly). */
static void test_db_error_frees_route_state(void **state)
{
    (void)state;
    const char *raw = "2023-02-31T00:00:00.000000|00000000-0000-4000-8000-000000000000";
    char *cursor = crypto_base64url_encode(raw, strlen(raw));
    assert_non_null(cursor);
    char path[256];
    snprintf(path, sizeof(path), "/api/jobs?limit=5&cursor=%s", cursor);
    free(cursor);
    for (int i = 0; i < 3; i++) {
        expect_error(req("GET", path, &alice, false, NULL, NULL), 500, "internal", NULL);
    }
    gwt_resp_t r = req("GET", "/api/jobs?limit=5", &alice, false, NULL, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
}

/* Last: SIGTERM, and the gateway exits 0 (under the sanitizers: no leak, no
 * undefined behaviour in anything the suite made it do). */
static void test_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&gw), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_in_flow),
        cmocka_unit_test(test_sign_in_rebinds_legacy_tokens),
        cmocka_unit_test(test_sign_in_race_stores_nothing),
        cmocka_unit_test(test_sign_in_failures),
        cmocka_unit_test(test_google_outage_during_sign_in),
        cmocka_unit_test(test_logout),
        cmocka_unit_test(test_sign_in_other_browser),
        cmocka_unit_test(test_sign_in_unverified_email),
        cmocka_unit_test(test_logout_everywhere),
        cmocka_unit_test(test_me),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_me_drive_disconnected),
        cmocka_unit_test(test_jobs_list_and_paging),
        cmocka_unit_test(test_job_one_retry_cancel),
        cmocka_unit_test(test_watch_and_folders),
        cmocka_unit_test(test_no_session_is_401),
        cmocka_unit_test(test_other_users_ids_are_404),
        cmocka_unit_test(test_csrf),
        cmocka_unit_test(test_body_cap_and_unknown),
        cmocka_unit_test(test_static_files),
        cmocka_unit_test(test_rate_limits),
        cmocka_unit_test(test_rls_proof),
        cmocka_unit_test(test_job_json_escaping),
        cmocka_unit_test(test_jobs_timestamps_and_ties),
        cmocka_unit_test(test_jobs_archived_listed),
        cmocka_unit_test(test_usage_history),
        cmocka_unit_test(test_jobs_list_plan),
        cmocka_unit_test(test_jobs_date_filter),
        cmocka_unit_test(test_db_error_frees_route_state),
        cmocka_unit_test(test_gateway_exits_cleanly), /* last: stops the gateway */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
