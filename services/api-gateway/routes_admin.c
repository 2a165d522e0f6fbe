/*
 * routes_admin — the schema's analytics queries for administrators (users whose
 * e-mail is in ADMIN_EMAILS; anyone else gets 403).
 *
 *   GET /api/admin/analytics/mau?from=YYYY-MM-DD&to=YYYY-MM-DD
 *   GET /api/admin/analytics/retention?from=&to=
 *   GET /api/admin/analytics/revenue?from=&to=
 *   GET /api/admin/analytics/performance?from=&to=
 *
 * Dates are UTC days, both included. Defaults: `to` today; `from` the first
 * day of the month eleven months before `to` (the last 12 months), or six days
 * before `to` for performance (the last 7 days). 400 on a malformed or
 * impossible date, from > to, or a range over 3660 days. The numbers come from
 * admin_analytics(), which also writes the "admin.read" audit row in the same
 * transaction. Its live body is the one of
 * sql/api-gateway/060_admin_analytics_jobs.sql (it replaced 021's); read it in
 * docs/schema/current.sql, the schema after every migration.
 */
#include "gateway.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RANGE_DAYS 3660

/* Strict YYYY-MM-DD of a real calendar day; *day gets days since 1970-01-01. */
static bool parse_date(const char *s, long *day)
{
    if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-') {
        return false;
    }
    for (int i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31) {
        return false;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    tm.tm_hour = 12;
    time_t t = timegm(&tm);
    struct tm back;
    if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_year != y - 1900 ||
        back.tm_mon != m - 1 || back.tm_mday != d) {
        return false; /* 2026-02-30 */
    }
    *day = (long)(t / 86400);
    return true;
}

static void format_day(long day, char *out, size_t outlen)
{
    time_t t = (time_t)day * 86400 + 43200;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%d", &tm);
}

/* The first day of the month `months` before the month of `day`. */
static long month_start_before(long day, int months)
{
    time_t t = (time_t)day * 86400 + 43200;
    struct tm tm;
    gmtime_r(&t, &tm);
    int m = tm.tm_year * 12 + tm.tm_mon - months;
    struct tm first;
    memset(&first, 0, sizeof(first));
    first.tm_year = m / 12;
    first.tm_mon = m % 12;
    first.tm_mday = 1;
    first.tm_hour = 12;
    return (long)(timegm(&first) / 86400);
}

typedef struct {
    char kind[16];
    char from[11];
    char to[11];
} analytics_t;

static void on_analytics(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    analytics_t *a = arg;
    cJSON *data = PQntuples(res) == 1 ? cJSON_Parse(PQgetvalue(res, 0, 0)) : NULL;
    if (data == NULL || !cJSON_IsObject(data)) {
        cJSON_Delete(data);
        free(a);
        http_reply_error(req, 500, "internal", "could not build the response");
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "kind", a->kind);
    cJSON_AddStringToObject(doc, "from", a->from);
    cJSON_AddStringToObject(doc, "to", a->to);
    cJSON *item = data->child;
    while (item != NULL) {
        cJSON *next = item->next;
        cJSON *moved = cJSON_DetachItemViaPointer(data, item);
        cJSON_AddItemToObject(doc, moved->string, moved);
        item = next;
    }
    cJSON_Delete(data);
    free(a);
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 200, doc);
}

static void analytics(gw_t *gw, http_req_t *req, const gw_user_t *user, const char *kind)
{
    const char *from_s = http_req_query(req, "from");
    const char *to_s = http_req_query(req, "to");
    long from = 0, to = 0;
    if (to_s != NULL && to_s[0] != '\0') {
        if (!parse_date(to_s, &to)) {
            gw_reply_invalid(req, "to", "must be a date YYYY-MM-DD");
            return;
        }
    } else {
        to = (long)(time(NULL) / 86400);
    }
    if (from_s != NULL && from_s[0] != '\0') {
        if (!parse_date(from_s, &from)) {
            gw_reply_invalid(req, "from", "must be a date YYYY-MM-DD");
            return;
        }
    } else if (strcmp(kind, "performance") == 0) {
        from = to - 6;
    } else {
        from = month_start_before(to, 11);
    }
    if (from > to) {
        gw_reply_invalid(req, "from", "must not be after to");
        return;
    }
    if (to - from > MAX_RANGE_DAYS) {
        gw_reply_invalid(req, "from", "the range may span at most %d days", MAX_RANGE_DAYS);
        return;
    }
    analytics_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    snprintf(a->kind, sizeof(a->kind), "%s", kind);
    format_day(from, a->from, sizeof(a->from));
    format_day(to, a->to, sizeof(a->to));
    char actor[GW_EMAIL_MAX + 16];
    snprintf(actor, sizeof(actor), "admin:%s", user->email);
    const char *p[] = {kind, a->from, a->to, user->id, actor, gw_client_ip(req)};
    gw_query_ex(gw, req, user->id,
                "SELECT admin_analytics($1, $2::date, $3::date, $4::uuid, $5, $6)::text", 6, p,
                on_analytics, a, free);
}

static void get_mau(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    analytics(gw, req, user, "mau");
}

static void get_retention(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    analytics(gw, req, user, "retention");
}

static void get_revenue(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    analytics(gw, req, user, "revenue");
}

static void get_performance(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    analytics(gw, req, user, "performance");
}

int gw_routes_admin(gw_t *gw)
{
    if (gw_route(gw, "GET", "/api/admin/analytics/mau", GW_ADMIN, get_mau) != 0 ||
        gw_route(gw, "GET", "/api/admin/analytics/retention", GW_ADMIN, get_retention) != 0 ||
        gw_route(gw, "GET", "/api/admin/analytics/revenue", GW_ADMIN, get_revenue) != 0 ||
        gw_route(gw, "GET", "/api/admin/analytics/performance", GW_ADMIN, get_performance) != 0) {
        return -1;
    }
    return 0;
}
