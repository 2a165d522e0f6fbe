/*
 * email — notification digests from email_outbox over SMTP (libcurl).
 *
 * A finished job (completed, failed, quota blocked) of a user with
 * email_notifications on gets an email_outbox row in the same transaction that
 * records the result (job.c). email_send_due() picks users whose pending rows
 * are due — none of their jobs still queued or processing, or the oldest row
 * older than `wait_s` — locks that user's rows (FOR UPDATE SKIP LOCKED), sends
 * one digest for all of them and marks them sent in the same transaction, so
 * two workers never send the same rows. A transient SMTP error (4xx, network)
 * reschedules with backoff; a permanent one (5xx) or 8 attempts marks them
 * failed. Rows with a notice_id are notices' e-mails (email_send_notices),
 * never part of a digest; a user who opted out of 'jobs' (users.email_opt_out)
 * gets no digest.
 */
#ifndef CA_EMAIL_H
#define CA_EMAIL_H

#include "pg.h"

#include <stddef.h>

typedef struct {
    const char *file;   /* original name */
    const char *status; /* completed | failed */
    const char *output_name;
    const char *output_url; /* "": a private output, the mail carries no link */
    const char *error_code;
    const char *error_message;
} email_job_t;

/* A notice's e-mail (sql/job-worker/100_notices.sql): title and message as
 * notice_raise wrote them. */
typedef struct {
    const char *kind; /* usage_80, usage_100, quota_waiting, drive_revoked, folder_gone,
                         payment_failed */
    const char *title;
    const char *message;
} email_notice_t;

/* Sends up to max notice e-mails (email_outbox rows with a notice_id), one
 * message each, with the digest's retry rules; the master switch and the
 * user's opt-outs are read again at send time (off: the row is dropped as
 * 'failed', "notifications off"); a row older than 3 days (raised while no
 * SMTP server was configured, or retried that long) is dropped as 'expired'.
 * Links start with public_url (PUBLIC_URL).
 * Returns how many were sent, -1 on a database error. */
int email_send_notices(pg_conn_t *pg, const char *smtp_url, const char *mail_from,
                       const char *public_url, int max);

/* The RFC 5322 message of a notice (CRLF line ends; header values cleaned of
 * CR/LF): the title as subject, the message, the kind's link. New string;
 * caller frees. Exposed for tests. */
char *email_build_notice(const char *mail_from, const char *to, const char *name,
                         const char *message_id, const email_notice_t *n, const char *public_url);

/* Sends up to max_users digests. Returns how many were sent, -1 on a database error. */
int email_send_due(pg_conn_t *pg, const char *smtp_url, const char *mail_from, int wait_s,
                   int max_users);

/* The RFC 5322 message of a digest (CRLF line ends; header values cleaned of
 * CR/LF). New string; caller frees. Exposed for tests. */
char *email_build_digest(const char *mail_from, const char *to, const char *name,
                         const char *message_id, const email_job_t *jobs, size_t njobs);

/* The address inside "Name <addr>" (or the whole string). Writes into out. */
void email_address(const char *from, char *out, size_t outlen);

/* 0 sent, 1 transient failure, 2 permanent failure (err filled). */
int email_smtp_send(const char *smtp_url, const char *from_addr, const char *to_addr,
                    const char *message, char *err, size_t errlen);

#endif
