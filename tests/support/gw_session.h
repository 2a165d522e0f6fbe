/*
 * gw_session — test helpers for suites that drive the api-gateway binary:
 * start it against the Google fake, sign a user in through the real OAuth
 * flow, and make requests with the session cookie and CSRF token.
 *
 *   proc_t google, gw;
 *   fake_start(&google, "google", NULL);
 *   const char *extra[] = {"ADMIN_EMAILS=root@example.com", NULL};
 *   gwt_start(&gw, google.base_url, extra);
 *   gwt_session_t alice;
 *   gwt_sign_in(gw.base_url, "alice@example.com", &alice);       // 0 or -1
 *   gwt_resp_t r = gwt_request(gw.base_url, "GET", "/api/me", &alice, false, NULL);
 *   ... r.status, r.json ...
 *   gwt_resp_free(&r);
 *
 * Names are gwt_* so that they never clash with the gateway's own gw_* (the
 * test_gateway_* binaries link the service's objects).
 */
#ifndef CA_TEST_GW_SESSION_H
#define CA_TEST_GW_SESSION_H

#include "support.h"

#include <cjson/cJSON.h>
#include <stdbool.h>

/* The ENCRYPTION_KEY gwt_start gives the gateway (tests open the tokens it
 * stores with it). */
#define GWT_ENCRYPTION_KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

typedef struct {
    char cookie[200]; /* "ca_session=..." */
    char csrf[100];
    char id[40];
    char email[120];
} gwt_session_t;

typedef struct {
    long status;
    char *body;
    char *headers;
    cJSON *json; /* parsed body or NULL */
} gwt_resp_t;

/* Starts build/bin/api-gateway with a test configuration (PORT free,
 * PUBLIC_URL http://127.0.0.1:PORT, the gateway role's DATABASE_URL,
 * TEST_REDIS_URL, keys, Google URLs at google_base, high rate limits, the
 * sign-in one included) plus `extra` ("NAME=value", NULL-terminated, may be
 * NULL; they override; "NAME=" is unset, so the gateway's default applies).
 * Returns 0 or -1. */
int gwt_start(proc_t *gw, const char *google_base, const char *const *extra);

/* GET /auth/google/login for `email`: *authorize gets the fake's authorize
 * URL (new string), binding the header line "Cookie: ca_oauth=..." that the
 * callback must carry (the login's binding cookie). Returns 0 or -1. */
int gwt_login(const char *gw_base, const char *email, char **authorize, char *binding,
              size_t bindinglen);

/* Signs `email` in through /auth/google/login → the fake's consent →
 * /auth/google/callback (with the login's binding cookie), then reads
 * csrf_token and id from GET /api/me. Returns 0 or -1 (the reason is
 * printed). */
int gwt_sign_in(const char *gw_base, const char *email, gwt_session_t *s);

/* One request. s may be NULL (no cookie); csrf adds X-CSRF-Token. */
gwt_resp_t gwt_request(const char *gw_base, const char *method, const char *path,
                       const gwt_session_t *s, bool csrf, const char *body);
/* The same with one more raw header line ("Origin: ..."), or NULL. */
gwt_resp_t gwt_request_h(const char *gw_base, const char *method, const char *path,
                         const gwt_session_t *s, bool csrf, const char *body,
                         const char *extra_header);
void gwt_resp_free(gwt_resp_t *r);

/* error.code of an error response, or NULL. */
const char *gwt_error_code(const gwt_resp_t *r);
/* A string member of obj, or NULL. */
const char *gwt_str(const cJSON *obj, const char *key);
/* The value of header `name` in a raw header block (new string) or NULL. */
char *gwt_header(const char *headers, const char *name);
/* The Set-Cookie header that sets cookie `name` ("name=value; ...", new
 * string) or NULL. */
char *gwt_set_cookie(const char *headers, const char *name);

#endif
