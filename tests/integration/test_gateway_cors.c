/*
 * api-gateway CORS for separately hosted frontends (FRONTEND_ORIGIN, a comma
 * list of exact origins): a listed origin's requests get
 * Access-Control-Allow-Origin (that origin, never *), -Allow-Credentials: true
 * and Vary: Origin; its preflight (OPTIONS with Access-Control-Request-Method)
 * is 204 with the path's methods and the headers the API reads (X-CSRF-Token
 * among them). Another origin gets no Access-Control-* header, and its
 * preflight is refused as before (405). CSRF is unchanged: a listed origin is
 * not the gateway's own, so its credentialed POST/PATCH/DELETE pass only with
 * X-CSRF-Token.
 */
#define _GNU_SOURCE /* strcasestr */
#include "gw_session.h"
#include "support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define APP "https://app.example.test"
#define APP2 "http://localhost:5173"
#define EVIL "https://evil.example.test"

static proc_t google, gw;
static char GW[160];
static gwt_session_t alice;

typedef struct {
    long status;
    char *body;
    char *headers;
} resp_t;

/* One request with the session's cookie (when s), X-CSRF-Token (when csrf),
 * and up to three more header lines. */
static resp_t call(const char *method, const char *path, const gwt_session_t *s, bool csrf,
                   const char *body, const char *h1, const char *h2, const char *h3)
{
    char url[512], cookie[256], token[160];
    snprintf(url, sizeof(url), "%s%s", GW, path);
    const char *headers[8];
    int n = 0;
    if (s != NULL) {
        snprintf(cookie, sizeof(cookie), "Cookie: %s", s->cookie);
        headers[n++] = cookie;
    }
    if (csrf) {
        snprintf(token, sizeof(token), "X-CSRF-Token: %s", s->csrf);
        headers[n++] = token;
    }
    if (body != NULL) {
        headers[n++] = "Content-Type: application/json";
    }
    const char *more[] = {h1, h2, h3};
    for (int i = 0; i < 3; i++) {
        if (more[i] != NULL) {
            headers[n++] = more[i];
        }
    }
    headers[n] = NULL;
    resp_t r = {0, NULL, NULL};
    r.status = http_call_h(method, url, headers, body, &r.body, &r.headers);
    return r;
}

static void resp_free(resp_t *r)
{
    free(r->body);
    free(r->headers);
}

static void assert_header(const resp_t *r, const char *name, const char *want)
{
    char *v = gwt_header(r->headers, name);
    if (v == NULL) {
        fail_msg("no %s header in:\n%s", name, r->headers);
    }
    assert_string_equal(v, want);
    free(v);
}

static void assert_no_header(const resp_t *r, const char *name)
{
    char *v = gwt_header(r->headers, name);
    if (v != NULL) {
        fail_msg("unexpected %s: %s", name, v);
    }
}

/* Any Access-Control-* header at all. */
static void assert_no_cors(const resp_t *r)
{
    assert_no_header(r, "Access-Control-Allow-Origin");
    assert_no_header(r, "Access-Control-Allow-Credentials");
    assert_no_header(r, "Access-Control-Allow-Methods");
    assert_no_header(r, "Access-Control-Allow-Headers");
    assert_null(strcasestr(r->headers, "access-control-"));
}

static int setup(void **state)
{
    (void)state;
    /* two origins, with the spaces a person types */
    const char *extra[] = {"FRONTEND_ORIGIN=" APP " , " APP2, NULL};
    if (fake_start(&google, "google", NULL) != 0 || gwt_start(&gw, google.base_url, extra) != 0) {
        return -1;
    }
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
    return gwt_sign_in(GW, "alice@example.com", &alice);
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&gw);
    proc_stop(&google);
    return 0;
}

/* A listed origin's credentialed GET: the origin itself, credentials, Vary. */
static void test_allowed_origin(void **state)
{
    (void)state;
    const char *origins[] = {"Origin: " APP, "Origin: " APP2};
    const char *want[] = {APP, APP2};
    for (int i = 0; i < 2; i++) {
        resp_t r = call("GET", "/api/me", &alice, false, NULL, origins[i], NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "alice@example.com"));
        assert_header(&r, "Access-Control-Allow-Origin", want[i]);
        assert_header(&r, "Access-Control-Allow-Credentials", "true");
        assert_header(&r, "Vary", "Origin");
        char *expose = gwt_header(r.headers, "Access-Control-Expose-Headers");
        assert_non_null(expose);
        assert_non_null(strstr(expose, "Retry-After"));
        free(expose);
        resp_free(&r);
    }
    /* errors carry them too (the frontend reads the error body) */
    resp_t r = call("GET", "/api/me", NULL, false, NULL, "Origin: " APP, NULL, NULL);
    assert_int_equal(r.status, 401);
    assert_header(&r, "Access-Control-Allow-Origin", APP);
    assert_header(&r, "Access-Control-Allow-Credentials", "true");
    resp_free(&r);
}

/* Another origin, a prefix of a listed one, a listed one with a path, no
 * Origin, "null": no Access-Control-* header. */
static void test_other_origin(void **state)
{
    (void)state;
    const char *others[] = {"Origin: " EVIL,
                            "Origin: https://app.example.test.evil.test",
                            "Origin: https://app.example",
                            "Origin: HTTPS://APP.EXAMPLE.TEST",
                            "Origin: null",
                            NULL};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        resp_t r = call("GET", "/api/me", &alice, false, NULL, others[i], NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_no_cors(&r);
        resp_free(&r);
    }
}

/* Preflight: 204 for a listed origin with methods and headers; refused for
 * another origin, and without Access-Control-Request-Method. */
static void test_preflight(void **state)
{
    (void)state;
    resp_t r = call("OPTIONS", "/api/me", NULL, false, NULL, "Origin: " APP,
                    "Access-Control-Request-Method: PATCH",
                    "Access-Control-Request-Headers: content-type, x-csrf-token");
    assert_int_equal(r.status, 204);
    assert_header(&r, "Access-Control-Allow-Origin", APP);
    assert_header(&r, "Access-Control-Allow-Credentials", "true");
    assert_header(&r, "Vary", "Origin");
    char *methods = gwt_header(r.headers, "Access-Control-Allow-Methods");
    char *allowed = gwt_header(r.headers, "Access-Control-Allow-Headers");
    assert_non_null(methods);
    assert_non_null(allowed);
    assert_non_null(strstr(methods, "GET"));
    assert_non_null(strstr(methods, "PATCH"));
    assert_non_null(strstr(methods, "DELETE"));
    assert_non_null(strcasestr(allowed, "X-CSRF-Token"));
    assert_non_null(strcasestr(allowed, "Content-Type"));
    free(methods);
    free(allowed);
    resp_free(&r);

    /* a path with a parameter, and /auth/logout */
    r = call("OPTIONS", "/api/jobs/00000000-0000-0000-0000-000000000001/retry", NULL, false, NULL,
             "Origin: " APP2, "Access-Control-Request-Method: POST", NULL);
    assert_int_equal(r.status, 204);
    assert_header(&r, "Access-Control-Allow-Origin", APP2);
    assert_header(&r, "Access-Control-Allow-Methods", "POST");
    resp_free(&r);
    r = call("OPTIONS", "/auth/logout", NULL, false, NULL, "Origin: " APP,
             "Access-Control-Request-Method: POST", NULL);
    assert_int_equal(r.status, 204);
    resp_free(&r);

    /* another origin: refused as before CORS, nothing that allows it */
    r = call("OPTIONS", "/api/me", NULL, false, NULL, "Origin: " EVIL,
             "Access-Control-Request-Method: PATCH", NULL);
    assert_int_equal(r.status, 405);
    assert_no_cors(&r);
    char *allow = gwt_header(r.headers, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "PATCH"));
    free(allow);
    resp_free(&r);
    /* not a preflight (no Access-Control-Request-Method) */
    r = call("OPTIONS", "/api/me", NULL, false, NULL, "Origin: " APP, NULL, NULL);
    assert_int_equal(r.status, 405);
    resp_free(&r);
    /* no such route */
    r = call("OPTIONS", "/api/nothing-here", NULL, false, NULL, "Origin: " APP,
             "Access-Control-Request-Method: GET", NULL);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

/* Credentials and CSRF: a listed origin is not the gateway's own, so its
 * state-changing requests pass the CSRF check only with the token. */
static void test_credentials_need_csrf_token(void **state)
{
    (void)state;
    const char *body = "{\"share_outputs\":\"private\"}";
    resp_t r = call("PATCH", "/api/me", &alice, false, body, "Origin: " APP, NULL, NULL);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.body, "csrf_failed"));
    assert_header(&r, "Access-Control-Allow-Origin", APP); /* the page can read why */
    resp_free(&r);
    char *v =
        sql_value("SELECT share_outputs FROM users WHERE email = 'alice@example.com'", 0, NULL);
    assert_string_equal(v, "link");
    free(v);

    r = call("PATCH", "/api/me", &alice, true, body, "Origin: " APP, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Access-Control-Allow-Origin", APP);
    assert_header(&r, "Access-Control-Allow-Credentials", "true");
    resp_free(&r);
    v = sql_value("SELECT share_outputs FROM users WHERE email = 'alice@example.com'", 0, NULL);
    assert_string_equal(v, "private");
    free(v);

    /* a wrong token from a listed origin: refused */
    gwt_session_t forged = alice;
    forged.csrf[0] = forged.csrf[0] == 'A' ? 'B' : 'A';
    r = call("PATCH", "/api/me", &forged, true, "{\"share_outputs\":\"link\"}", "Origin: " APP,
             NULL, NULL);
    assert_int_equal(r.status, 403);
    resp_free(&r);

    /* another origin without the token: refused, and no CORS header */
    r = call("POST", "/auth/logout", &alice, false, NULL, "Origin: " EVIL, NULL, NULL);
    assert_int_equal(r.status, 403);
    assert_no_cors(&r);
    resp_free(&r);

    /* the gateway's own origin still passes without the token (unchanged) */
    char own[200];
    snprintf(own, sizeof(own), "Origin: %s", GW);
    r = call("PATCH", "/api/me", &alice, false, "{\"share_outputs\":\"link\"}", own, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_no_cors(&r);
    resp_free(&r);
}

/* A malformed FRONTEND_ORIGIN ("*" among them) stops the gateway at start. */
static void test_bad_config(void **state)
{
    (void)state;
    const char *bad[] = {"FRONTEND_ORIGIN=" APP ",*"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        proc_t other;
        const char *extra[] = {bad[i], NULL};
        assert_int_not_equal(gwt_start(&other, google.base_url, extra), 0);
        proc_stop(&other);
    }
}

/* Last: SIGTERM, and the gateway exits 0 (a sanitizer's report would not). */
static void test_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&gw), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowed_origin),
        cmocka_unit_test(test_other_origin),
        cmocka_unit_test(test_preflight),
        cmocka_unit_test(test_credentials_need_csrf_token),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_gateway_exits_cleanly), /* last: stops the gateway */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
