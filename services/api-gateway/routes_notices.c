/*
 * routes_notices — the user's in-app notices (issue 15, "Notices").
 *
 *   GET  /api/notifications?limit=&cursor=   unread first, then newest:
 *        {"notifications":[...],"unread_count":N,"next_cursor":"..."|null}
 *   POST /api/notifications/{id}/read        marks one read; the notice (404: not the user's)
 *   POST /api/notifications/read             marks all read: {"marked":N,"unread_count":0}
 *
 * The notices are the job-worker's table (sql/job-worker/100_notices.sql),
 * read under the user's RLS; marking goes through the slice's functions
 * (notices_mark_read, notices_mark_all_read), which check that the user is
 * the transaction's app.user_id. The cursor is opaque to clients:
 * base64url("<created_at with µs>|<id>|<u or r>") of the last notice of the
 * page; the next page is what sorts after it in (read, created_at DESC,
 * id DESC). A notice marked read while a client pages moves to the read part
 * (it may then be listed again there, or skipped if already passed).
 */
#include "gateway.h"
#include "paging.h"

#include "crypto.h"
#include "uuid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTICE_JSON(n)                                                                             \
    "json_build_object('id', " n ".id, 'kind', " n ".kind, 'title', " n ".title,"                  \
    " 'message', " n ".message, 'data', " n ".data,"                                               \
    " 'created_at', " GW_SQL_TS(n ".created_at") ", 'read_at', " GW_SQL_TS(n ".read_at") ")"

/* $1 user, $2 rows to show; with a cursor $3 read flag, $4 created_at, $5 id.
 * One row: the page's JSON (without next_cursor), whether there is more, and
 * the cursor text of the last notice shown. */
#define LIST_SQL(cond)                                                                                  \
    "WITH page AS (SELECT n.*, (n.read_at IS NOT NULL) AS is_read FROM notices n"                       \
    "  WHERE n.user_id = $1" cond                                                                       \
    "  ORDER BY (n.read_at IS NOT NULL), n.created_at DESC, n.id DESC LIMIT $2::int + 1),"              \
    " shown AS (SELECT * FROM page ORDER BY is_read, created_at DESC, id DESC LIMIT $2::int)"           \
    " SELECT json_build_object('notifications', COALESCE((SELECT json_agg(" NOTICE_JSON(                \
        "s") "   ORDER BY s.is_read, s.created_at DESC, s.id DESC) FROM shown s), '[]'::json),"         \
             "   'unread_count', (SELECT count(*) FROM notices WHERE user_id = $1 AND read_at IS NULL)" \
             " )::text,"                                                                                \
             " (SELECT count(*) FROM page) > $2::int,"                                                  \
             " (SELECT to_char(s.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '|' || s.id || '|'"     \
             "   || CASE WHEN s.is_read THEN 'r' ELSE 'u' END FROM shown s"                             \
             "   ORDER BY s.is_read DESC, s.created_at, s.id LIMIT 1)"

static const char LIST_FIRST_SQL[] = LIST_SQL("");
static const char LIST_NEXT_SQL[] =
    LIST_SQL(" AND ((n.read_at IS NOT NULL) > $3::boolean OR ((n.read_at IS NOT NULL) = $3::boolean"
             " AND (n.created_at, n.id) < ($4::timestamp, $5::uuid)))");

/* "<ts>|<id>|<u|r>" → the three keys, checked. */
static bool cursor_decode(const char *cursor, char *ts, size_t tslen, char *id, size_t idlen,
                          bool *is_read)
{
    char text[PAGING_CURSOR_TEXT_MAX];
    char *key[3];
    if (!paging_cursor_split(cursor, text, key, 3)) {
        return false;
    }
    int y, mo, d, h, mi, s, us, consumed = 0;
    if (strlen(key[0]) != 26 ||
        sscanf(key[0], "%4d-%2d-%2dT%2d:%2d:%2d.%6d%n", &y, &mo, &d, &h, &mi, &s, &us, &consumed) !=
            7 ||
        (size_t)consumed != strlen(key[0]) || y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 ||
        d > 31 || h > 23 || mi > 59 || s > 60 || us < 0) {
        return false;
    }
    if (!uuid_is_valid(key[1]) || strlen(key[0]) >= tslen || strlen(key[1]) >= idlen) {
        return false;
    }
    if (strcmp(key[2], "u") != 0 && strcmp(key[2], "r") != 0) {
        return false;
    }
    snprintf(ts, tslen, "%s", key[0]);
    snprintf(id, idlen, "%s", key[1]);
    *is_read = key[2][0] == 'r';
    return true;
}

static void on_list(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    (void)arg;
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        http_reply_error(req, 500, "internal", "could not list the notices");
        return;
    }
    const char *doc = PQgetvalue(res, 0, 0);
    size_t len = (size_t)PQgetlength(res, 0, 0);
    bool more = strcmp(PQgetvalue(res, 0, 1), "t") == 0 && !PQgetisnull(res, 0, 2);
    char *cursor = NULL;
    if (more) {
        cursor = crypto_base64url_encode(PQgetvalue(res, 0, 2), (size_t)PQgetlength(res, 0, 2));
    }
    jbuf_t b = {0};
    /* the object without its closing brace, then next_cursor */
    jbuf_append(&b, doc, len > 0 ? len - 1 : 0);
    jbuf_append(&b, ",\"next_cursor\":", 15);
    if (cursor != NULL) {
        jbuf_json_string(&b, cursor);
    } else {
        jbuf_append(&b, "null", 4);
    }
    jbuf_append(&b, "}", 1);
    if (more && cursor == NULL) {
        b.oom = true;
    }
    free(cursor);
    paging_reply(req, &b);
}

static void list_notices(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *limit_s = http_req_query(req, "limit");
    const char *cursor = http_req_query(req, "cursor");
    long limit = 20;
    if (limit_s != NULL && !paging_parse_limit(limit_s, &limit)) {
        gw_reply_invalid(req, "limit", "must be an integer from 1 to 100");
        return;
    }
    char ts[40] = "", id[GW_UUID_LEN + 1] = "";
    bool is_read = false;
    bool have_cursor = cursor != NULL && cursor[0] != '\0';
    if (have_cursor && !cursor_decode(cursor, ts, sizeof(ts), id, sizeof(id), &is_read)) {
        gw_reply_invalid(req, "cursor", "is not a cursor this API returned");
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *p[5] = {user->id, lim, is_read ? "true" : "false", ts, id};
    gw_query(gw, req, user->id, have_cursor ? LIST_NEXT_SQL : LIST_FIRST_SQL, have_cursor ? 5 : 2,
             p, on_list, NULL);
}

static void on_marked(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    (void)arg;
    if (PQntuples(res) != 1) {
        gw_reply_not_found(req);
        return;
    }
    http_reply_header(req, "Cache-Control", "no-store");
    gw_reply_json_text(req, 200, PQgetvalue(res, 0, 0));
}

static void mark_read(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *id = http_req_param(req, "id");
    if (!uuid_is_valid(id)) {
        gw_reply_invalid(req, "id", "must be a UUID");
        return;
    }
    if (!gw_json_no_body(req)) {
        return;
    }
    const char *p[] = {user->id, id};
    gw_query(gw, req, user->id,
             "SELECT " NOTICE_JSON("n") "::text FROM notices_mark_read($1::uuid, $2::uuid) n", 2, p,
             on_marked, NULL);
}

static void mark_all_read(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    if (!gw_json_no_body(req)) {
        return;
    }
    const char *p[] = {user->id};
    gw_query(gw, req, user->id,
             "SELECT json_build_object('marked', notices_mark_all_read($1::uuid),"
             " 'unread_count', 0)::text",
             1, p, on_marked, NULL);
}

int gw_routes_notices(gw_t *gw)
{
    if (gw_route(gw, "GET", "/api/notifications", GW_AUTH, list_notices) != 0 ||
        gw_route(gw, "POST", "/api/notifications/read", GW_AUTH, mark_all_read) != 0 ||
        gw_route(gw, "POST", "/api/notifications/{id}/read", GW_AUTH, mark_read) != 0) {
        return -1;
    }
    return 0;
}
