/*
 * fake_admin — the fakes' admin API (/__admin, docs/fakes.md) for the C tests:
 * faults, the request log and reset (every fake has them), and the Google
 * fake's accounts and Drive files.
 *
 *   proc_t google;
 *   fake_start(&google, "google", NULL);
 *   fake_add_fault(google.base_url, "{\"match\":{\"method\":\"POST\",\"path\":\"/token\"},"
 *                                   "\"count\":1,\"action\":\"status\",\"status\":503}");
 *   ... the code under test ...
 *   assert_int_equal(fake_count_requests(google.base_url,
 *                                        &(fake_match_t){.method = "POST", .path = "/token"}), 2);
 *   fake_clear_faults(google.base_url);
 *
 * Every call but fake_admin_call fails the running cmocka test (fail_msg, the
 * reply printed) when the fake answers anything but 2xx: a test never goes on
 * with a fault or an account it did not get. base_url is the fake's
 * "http://127.0.0.1:PORT" (proc_t.base_url).
 */
#ifndef CA_TEST_FAKE_ADMIN_H
#define CA_TEST_FAKE_ADMIN_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* METHOD base_url + path with `body` (may be NULL; JSON). Returns the status,
 * or -1 on a transport error; *reply (may be NULL) gets the parsed body or
 * NULL (caller deletes). Never fails the test. */
long fake_admin_call(const char *base_url, const char *method, const char *path, const char *body,
                     cJSON **reply);

/* fake_admin_call that fails the test unless the status is 2xx. Returns the
 * parsed reply (caller deletes; a JSON null when the body is empty). */
cJSON *fake_admin(const char *base_url, const char *method, const char *path, const char *body);

/* POST /__admin/reset: the request log, the faults and the fake's own state. */
void fake_reset(const char *base_url);
/* POST /__admin/faults with one fault (docs/fakes.md, "Faults"). */
void fake_add_fault(const char *base_url, const char *fault_json);
/* DELETE /__admin/faults: all of them. */
void fake_clear_faults(const char *base_url);
/* DELETE /__admin/requests: the request log. */
void fake_clear_requests(const char *base_url);

/* GET /__admin/requests?since=SINCE (0: the whole log): the reply,
 * {requests:[{seq,method,path,query,status,fault,...}],next} (caller deletes). */
cJSON *fake_requests(const char *base_url, long since);
/* The seq the next request will get: pass it as `since` to see only later ones. */
long fake_requests_next(const char *base_url);

/* Which logged requests fake_count_requests counts; every member left zero
 * or NULL matches anything. */
typedef struct {
    const char *method;    /* "GET" */
    const char *path;      /* the whole path, without the query */
    const char *path_part; /* a part of the path */
    long status;           /* the status answered (0: any) */
    long since;            /* only requests from this seq on */
    bool unanswered; /* only requests not answered yet (status null: a delay fault holds them) */
    bool or_dropped; /* with unanswered: also those whose caller went away first (status 0) */
} fake_match_t;

/* The number of requests in the fake's log that match `m`. */
int fake_count_requests(const char *base_url, const fake_match_t *m);

/* ---- the Google fake ---- */

/* An account made by POST /__admin/users. */
typedef struct {
    char sub[64];
    char access_token[512];
    char refresh_token[512];
    char root_id[128]; /* the root folder of its Drive */
} fake_google_user_t;

/* A new account `email` that has granted `client_id` (NULL: the fake's own
 * client) every scope, with fresh tokens. */
void fake_google_user(const char *base_url, const char *email, const char *client_id,
                      fake_google_user_t *user);
/* The same with the tokens granting exactly `scope` (space-separated; NULL:
 * every scope); the fake enforces Drive scopes as Google does (docs/fakes.md). */
void fake_google_user_scoped(const char *base_url, const char *email, const char *client_id,
                             const char *scope, fake_google_user_t *user);
/* POST /__admin/revoke {"email"}: every token of the account is revoked (a
 * refresh answers invalid_grant). */
void fake_google_revoke(const char *base_url, const char *email);
/* POST /__admin/expire {"email"}: the account's access tokens expire (a Drive
 * call answers 401). */
void fake_google_expire(const char *base_url, const char *email);
/* POST /__admin/files with `json` (names the owner with "email"; see
 * docs/fakes.md); copies the new file's id into id[idlen] (id may be NULL). */
void fake_google_file(const char *base_url, const char *json, char *id, size_t idlen);

#endif
