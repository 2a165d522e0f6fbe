/*
 * lease — the drive-poller's scheduling: which folder is polled next and by
 * whom (lease.c). Every replica's poll threads share the rows of drive_polls
 * that are due: a claim takes some (FOR UPDATE SKIP LOCKED) and leases them
 * to one thread (lease_owner, lease_expires_at); a long poll renews its lease
 * between pages; a poll records its result fenced by the lease (poll.c), or
 * gives the row back unpolled with lease_release. A replica that dies leaves
 * its leases to expire. See docs/drive-poller.md.
 *
 *   lease_row_t rows[8];
 *   int n = lease_claim(pg, owner, 8, lease_s, reconcile_s, rows);
 *   for (i < n) { poll...; lease_row_free(&rows[i]); }
 */
#ifndef CA_LEASE_H
#define CA_LEASE_H

#include "pg.h"

#include <stdbool.h>
#include <stddef.h>

/* A claimed row of drive_polls. */
typedef struct {
    char id[64];
    char user_id[64];
    char *folder_id;  /* never NULL */
    char *page_token; /* the saved changes token; NULL: none */
    bool scan_due;    /* no full listing for reconcile_s seconds */
    int consecutive_errors;
    char claimed_at[40]; /* PostgreSQL's time of the claim (the next poll counts from it) */
} lease_row_t;

/* Claims up to `max` due rows for `owner` with a lease of lease_s seconds.
 * Rows of a deactivated user (users.is_active false) are never claimed: they
 * wait, unchanged, until the user is active again.
 * Returns how many (rows filled: free each with lease_row_free), -1 on a
 * database error (logged). */
int lease_claim(pg_conn_t *pg, const char *owner, int max, int lease_s, int reconcile_s,
                lease_row_t *rows);

/* Extends the lease of a row `owner` holds by lease_s seconds. Returns 1
 * renewed, 0 lost (the row is someone else's now, or no longer watched), -1
 * on a database error (err filled). */
int lease_renew(pg_conn_t *pg, const char *owner, const char *row_id, int lease_s, char *err,
                size_t errlen);

/* Gives a row back without recording a poll; it is due again after delay_s. */
void lease_release(pg_conn_t *pg, const char *owner, const lease_row_t *row, int delay_s);

void lease_row_free(lease_row_t *r);

#endif
