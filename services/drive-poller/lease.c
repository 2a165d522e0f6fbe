/*
 * lease — claiming, renewing and releasing rows of drive_polls (see lease.h).
 */
#include "lease.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW_UTC "timezone('UTC', now())"

void lease_row_free(lease_row_t *r)
{
    free(r->folder_id);
    free(r->page_token);
    r->folder_id = NULL;
    r->page_token = NULL;
}

static char *dup_or_null(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        return NULL;
    }
    return strdup(PQgetvalue(res, row, col));
}

int lease_claim(pg_conn_t *pg, const char *owner, int max, int lease_s, int reconcile_s,
                lease_row_t *rows)
{
    char limit[16];
    char lease[16];
    char reconcile[16];
    snprintf(limit, sizeof(limit), "%d", max);
    snprintf(lease, sizeof(lease), "%d", lease_s);
    snprintf(reconcile, sizeof(reconcile), "%d", reconcile_s);
    const char *params[] = {owner, limit, lease, reconcile};
    char err[256];
    PGresult *res = pg_exec(
        pg,
        "WITH due AS ("
        "  SELECT id FROM drive_polls"
        "   WHERE active AND next_poll_at <= " NOW_UTC
        "     AND (backoff_until IS NULL OR backoff_until <= " NOW_UTC ")"
        "     AND (lease_expires_at IS NULL OR lease_expires_at < " NOW_UTC ")"
        /* a deactivated user is not polled (issue 14); the
         * row stays as it is and is due again on reactivation */
        "     AND EXISTS (SELECT 1 FROM users u WHERE u.id = drive_polls.user_id"
        "                   AND COALESCE(u.is_active, TRUE))"
        "   ORDER BY next_poll_at"
        "   LIMIT $2::int"
        "   FOR UPDATE SKIP LOCKED)"
        " UPDATE drive_polls d"
        "    SET lease_owner = $1,"
        "        lease_expires_at = " NOW_UTC " + make_interval(secs => $3::double precision)"
        "   FROM due WHERE d.id = due.id"
        " RETURNING d.id, d.user_id, d.folder_id, d.changes_page_token,"
        "   (d.last_full_scan_at IS NULL OR d.last_full_scan_at <= " NOW_UTC
        "      - make_interval(secs => $4::double precision)),"
        "   d.consecutive_errors,"
        "   to_char(" NOW_UTC ", 'YYYY-MM-DD\"T\"HH24:MI:SS.US')",
        4, params, err, sizeof(err));
    if (res == NULL) {
        log_warn("claim failed: %s", err);
        return -1;
    }
    int n = PQntuples(res);
    if (n > max) {
        n = max;
    }
    for (int i = 0; i < n; i++) {
        lease_row_t *r = &rows[i];
        memset(r, 0, sizeof(*r));
        snprintf(r->id, sizeof(r->id), "%s", PQgetvalue(res, i, 0));
        snprintf(r->user_id, sizeof(r->user_id), "%s", PQgetvalue(res, i, 1));
        r->folder_id = dup_or_null(res, i, 2);
        r->page_token = dup_or_null(res, i, 3);
        if (r->page_token != NULL && r->page_token[0] == '\0') {
            free(r->page_token);
            r->page_token = NULL;
        }
        r->scan_due = strcmp(PQgetvalue(res, i, 4), "t") == 0;
        r->consecutive_errors = atoi(PQgetvalue(res, i, 5));
        snprintf(r->claimed_at, sizeof(r->claimed_at), "%s", PQgetvalue(res, i, 6));
        if (r->folder_id == NULL) {
            r->folder_id = strdup("");
        }
    }
    PQclear(res);
    return n;
}

int lease_renew(pg_conn_t *pg, const char *owner, const char *row_id, int lease_s, char *err,
                size_t errlen)
{
    char lease[16];
    snprintf(lease, sizeof(lease), "%d", lease_s);
    const char *params[] = {row_id, owner, lease};
    PGresult *res = pg_exec(pg,
                            "UPDATE drive_polls SET lease_expires_at = " NOW_UTC
                            " + make_interval(secs => $3::double precision)"
                            " WHERE id = $1 AND lease_owner = $2 AND active RETURNING id",
                            3, params, err, errlen);
    if (res == NULL) {
        return -1;
    }
    int n = PQntuples(res);
    PQclear(res);
    return n == 1 ? 1 : 0;
}

void lease_release(pg_conn_t *pg, const char *owner, const lease_row_t *row, int delay_s)
{
    char delay[16];
    snprintf(delay, sizeof(delay), "%d", delay_s);
    const char *params[] = {row->id, owner, delay};
    char err[256];
    if (pg_exec_cmd(pg,
                    "UPDATE drive_polls SET lease_owner = NULL, lease_expires_at = NULL,"
                    " next_poll_at = GREATEST(next_poll_at, " NOW_UTC
                    " + make_interval(secs => $3::double precision))"
                    " WHERE id = $1 AND lease_owner = $2",
                    3, params, err, sizeof(err)) != 0) {
        log_warn("could not release the lease (it expires by itself): %s", err);
    }
}
