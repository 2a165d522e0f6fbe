/*
 * email — notification digests (see email.h).
 */
#include "email.h"

#include "log.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EMAIL_MAX_ATTEMPTS 8
#define EMAIL_MAX_JOBS 200
/* A notice's e-mail not sent within this many days is dropped ('expired'). */
#define NOTICE_MAIL_MAX_AGE_DAYS "3"

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
    bool failed;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf_t *b, const char *fmt, ...)
{
    if (b->failed) {
        return;
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf != NULL ? b->buf + b->len : NULL,
                          b->buf != NULL ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->buf != NULL && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap == 0 ? 1024 : b->cap * 2) + (size_t)n;
        char *nb = realloc(b->buf, cap);
        if (nb == NULL) {
            b->failed = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
}

/* A copy with CR/LF (and other controls) replaced by spaces, cut to max bytes. */
static char *clean(const char *s, size_t max)
{
    if (s == NULL) {
        s = "";
    }
    size_t n = strlen(s);
    if (n > max) {
        n = max;
    }
    char *c = malloc(n + 1);
    if (c == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        c[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    c[n] = '\0';
    return c;
}

void email_address(const char *from, char *out, size_t outlen)
{
    const char *lt = strchr(from, '<');
    const char *gt = lt != NULL ? strchr(lt, '>') : NULL;
    if (lt != NULL && gt != NULL) {
        snprintf(out, outlen, "%.*s", (int)(gt - lt - 1), lt + 1);
    } else {
        snprintf(out, outlen, "%s", from);
    }
}

/* The message's header block and greeting: every value stripped of CR/LF
 * (clean), Date now in UTC. false (b->failed) when out of memory. */
static bool add_head(sbuf_t *b, const char *mail_from, const char *to, const char *name,
                     const char *message_id, const char *subject)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    char *cfrom = clean(mail_from, 300);
    char *cto = clean(to, 300);
    char *cname = clean(name, 100);
    char *cid = clean(message_id, 100);
    char *csubject = clean(subject, 300);
    if (cfrom == NULL || cto == NULL || cname == NULL || cid == NULL || csubject == NULL) {
        b->failed = true;
    } else {
        sb_add(b,
               "From: %s\r\nTo: %s\r\nSubject: Creator Automation: %s\r\nDate: %s\r\n"
               "Message-ID: <%s@creator-automation>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
               "Auto-Submitted: auto-generated\r\n\r\n",
               cfrom, cto, csubject, date, cid);
        sb_add(b, "Hello%s%s,\r\n\r\n", cname[0] != '\0' ? " " : "", cname);
    }
    free(cfrom);
    free(cto);
    free(cname);
    free(cid);
    free(csubject);
    return !b->failed;
}

char *email_build_digest(const char *mail_from, const char *to, const char *name,
                         const char *message_id, const email_job_t *jobs, size_t njobs)
{
    sbuf_t b = {0};
    size_t ok = 0;
    for (size_t i = 0; i < njobs; i++) {
        if (strcmp(jobs[i].status, "completed") == 0) {
            ok++;
        }
    }
    size_t failed = njobs - ok;
    char subject[128];
    if (failed == 0) {
        snprintf(subject, sizeof(subject), "%zu photo%s ready", ok, ok == 1 ? "" : "s");
    } else if (ok == 0) {
        snprintf(subject, sizeof(subject), "%zu photo%s could not be processed", failed,
                 failed == 1 ? "" : "s");
    } else {
        snprintf(subject, sizeof(subject), "%zu photo%s ready, %zu could not be processed", ok,
                 ok == 1 ? "" : "s", failed);
    }
    if (!add_head(&b, mail_from, to, name, message_id, subject)) {
        goto out;
    }
    if (ok > 0) {
        sb_add(&b, "%s ready in your Google Drive \"Processed\" folder:\r\n\r\n",
               ok == 1 ? "One photo is" : "These photos are");
        for (size_t i = 0; i < njobs; i++) {
            if (strcmp(jobs[i].status, "completed") != 0) {
                continue;
            }
            char *f = clean(jobs[i].file, 200);
            char *o = clean(jobs[i].output_name, 200);
            char *u = clean(jobs[i].output_url, 500);
            if (f != NULL && o != NULL && u != NULL && u[0] != '\0') {
                sb_add(&b, "  * %s -> %s\r\n    %s\r\n", f, o, u);
            } else if (f != NULL && o != NULL && u != NULL) {
                /* a private output (users.share_outputs): no link in the mail */
                sb_add(&b, "  * %s -> %s\r\n    (private: open it in your Google Drive)\r\n", f, o);
            }
            free(f);
            free(o);
            free(u);
        }
        sb_add(&b, "\r\n");
    }
    if (failed > 0) {
        sb_add(&b, "%s could not be processed:\r\n\r\n",
               failed == 1 ? "One photo" : "These photos");
        for (size_t i = 0; i < njobs; i++) {
            if (strcmp(jobs[i].status, "completed") == 0) {
                continue;
            }
            char *f = clean(jobs[i].file, 200);
            char *c = clean(jobs[i].error_code, 50);
            char *m = clean(jobs[i].error_message, 600);
            if (f != NULL && c != NULL && m != NULL) {
                sb_add(&b, "  * %s (%s)\r\n    %s\r\n", f, c, m);
            }
            free(f);
            free(c);
            free(m);
        }
        sb_add(&b, "\r\n");
    }
    sb_add(&b, "You can turn these e-mails off in the dashboard's settings.\r\n");
out:
    if (b.failed) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

/* The link a notice's e-mail carries, and the line before it. */
static void notice_link(const char *kind, const char **lead, const char **path)
{
    *path = "/";
    if (strcmp(kind, "drive_revoked") == 0) {
        *lead = "Sign in again with Google to reconnect your Drive:";
        *path = "/auth/google/login";
    } else if (strcmp(kind, "folder_gone") == 0) {
        *lead = "Pick a folder again in the dashboard:";
    } else if (strcmp(kind, "payment_failed") == 0) {
        *lead = "Update your payment method in the billing portal:";
        *path = "/billing/portal";
    } else {
        *lead = "Your usage and plan are in the dashboard:";
    }
}

char *email_build_notice(const char *mail_from, const char *to, const char *name,
                         const char *message_id, const email_notice_t *n, const char *public_url)
{
    sbuf_t b = {0};
    char *ctitle = clean(n->title, 200);
    char *cmsg = clean(n->message, 2000);
    char *curl = clean(public_url, 500);
    if (ctitle == NULL || cmsg == NULL || curl == NULL) {
        b.failed = true;
        goto out;
    }
    size_t ul = strlen(curl);
    while (ul > 0 && curl[ul - 1] == '/') {
        curl[--ul] = '\0';
    }
    const char *lead;
    const char *path;
    notice_link(n->kind, &lead, &path);
    if (!add_head(&b, mail_from, to, name, message_id, ctitle)) {
        goto out;
    }
    sb_add(&b, "%s\r\n\r\n", cmsg);
    sb_add(&b, "%s\r\n  %s%s\r\n\r\n", lead, curl, path);
    sb_add(&b, "You can turn these e-mails off in the dashboard's settings.\r\n");
out:
    free(ctitle);
    free(cmsg);
    free(curl);
    if (b.failed) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

typedef struct {
    const char *data;
    size_t len;
    size_t off;
} upload_t;

static size_t read_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    upload_t *u = userdata;
    size_t room = size * nmemb;
    size_t left = u->len - u->off;
    size_t n = left < room ? left : room;
    memcpy(ptr, u->data + u->off, n);
    u->off += n;
    return n;
}

int email_smtp_send(const char *smtp_url, const char *from_addr, const char *to_addr,
                    const char *message, char *err, size_t errlen)
{
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        return 1;
    }
    char from[320];
    char to[320];
    snprintf(from, sizeof(from), "<%s>", from_addr);
    snprintf(to, sizeof(to), "<%s>", to_addr);
    struct curl_slist *rcpt = curl_slist_append(NULL, to);
    upload_t up = {message, strlen(message), 0};
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, smtp_url);
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(curl, CURLOPT_READDATA, &up);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up.len);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(curl);
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(curl);
    if (rc == CURLE_OK) {
        return 0;
    }
    snprintf(err, errlen, "SMTP %ld: %s", code, cerr[0] != '\0' ? cerr : curl_easy_strerror(rc));
    return code >= 500 && code < 600 ? 2 : 1;
}

/* One user's digest. 1 sent, 0 nothing due, -1 error. */

/* Records a send's outcome for the outbox rows ids (a uuid[] literal) and
 * commits: sent; or one more attempt with a backoff of 5 s·2^n (max 1 h),
 * failed when permanent (sent_rc 2) or at the 8th attempt. 1 sent, 0 not
 * sent, -1 when the outcome could not be recorded (rolled back by the
 * caller; the rows stay due, so a sent message may go twice, never none). */
static int outbox_record(pg_conn_t *pg, const char *ids, int sent_rc, const char *serr)
{
    char err[256];
    const char *ip[1] = {ids};
    if (sent_rc == 0) {
        if (pg_exec_cmd(pg,
                        "UPDATE email_outbox SET status = 'sent', attempts = attempts + 1,"
                        " sent_at = timezone('UTC', now()) WHERE id = ANY($1::uuid[])",
                        1, ip, err, sizeof(err)) != 0 ||
            pg_commit(pg, err, sizeof(err)) != 0) {
            log_error("e-mail sent but not marked sent: %s", err);
            return -1;
        }
        return 1;
    }
    const char *fp[3] = {ids, serr, sent_rc == 2 ? "true" : "false"};
    if (pg_exec_cmd(pg,
                    "UPDATE email_outbox SET attempts = attempts + 1, last_error = $2,"
                    " status = CASE WHEN $3::bool OR attempts + 1 >= 8 THEN 'failed'"
                    "   ELSE 'pending' END,"
                    " next_attempt_at = timezone('UTC', now()) + make_interval(secs =>"
                    "   least(3600, 5 * power(2, attempts))::int)"
                    " WHERE id = ANY($1::uuid[])",
                    3, fp, err, sizeof(err)) != 0 ||
        pg_commit(pg, err, sizeof(err)) != 0) {
        log_warn("e-mail: could not record the attempt: %s", err);
        return -1;
    }
    return 0;
}

static int send_one(pg_conn_t *pg, const char *smtp_url, const char *mail_from, int wait_s)
{
    char err[512];
    char wait[16];
    snprintf(wait, sizeof(wait), "%d", wait_s);
    if (pg_begin(pg, err, sizeof(err)) != 0) {
        return -1;
    }
    int result = -1;
    PGresult *jobs = NULL;
    const char *wp[1] = {wait};
    PGresult *res =
        pg_exec(pg,
                "SELECT o.user_id::text FROM email_outbox o WHERE o.status = 'pending'"
                " AND o.notice_id IS NULL AND o.next_attempt_at <= timezone('UTC', now())"
                " AND (o.created_at < timezone('UTC', now()) - make_interval(secs => $1::int)"
                "      OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.user_id = o.user_id"
                "                     AND j.status IN ('queued', 'processing')"
                "                     AND j.quota_waiting_since IS NULL))"
                " ORDER BY o.created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
                1, wp, err, sizeof(err));
    if (res == NULL) {
        goto fail;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        pg_rollback(pg);
        return 0;
    }
    char user[64];
    snprintf(user, sizeof(user), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    const char *up[1] = {user};
    res = pg_exec(pg,
                  "WITH rows AS (SELECT id, job_ids FROM email_outbox WHERE user_id = $1::uuid"
                  "   AND status = 'pending' AND notice_id IS NULL"
                  "   AND next_attempt_at <= timezone('UTC', now())"
                  "   FOR UPDATE SKIP LOCKED)"
                  " SELECT array_agg(id)::text, min(id::text),"
                  "   (SELECT email FROM users WHERE id = $1::uuid),"
                  "   (SELECT COALESCE(name, '') FROM users WHERE id = $1::uuid),"
                  "   (SELECT COALESCE(email_notifications, true)"
                  "      AND NOT ('jobs' = ANY (email_opt_out)) FROM users WHERE id = $1::uuid),"
                  "   (SELECT share_outputs = 'link' FROM users WHERE id = $1::uuid)"
                  " FROM rows",
                  1, up, err, sizeof(err));
    if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        res = NULL;
        if (pg_in_transaction(pg)) {
            pg_rollback(pg);
        }
        return 0;
    }
    char *ids = strdup(PQgetvalue(res, 0, 0));
    char *msgid = strdup(PQgetvalue(res, 0, 1));
    char *email = strdup(PQgetvalue(res, 0, 2));
    char *name = strdup(PQgetvalue(res, 0, 3));
    bool wanted = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
    /* links only for a user who shares outputs (read at send time: a link
     * mailed after a switch to 'link' still needs the owner's sign-in) */
    bool links = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
    PQclear(res);
    if (ids == NULL || msgid == NULL || email == NULL || name == NULL) {
        goto out_free;
    }
    const char *ip[1] = {ids};
    if (!wanted || email[0] == '\0') {
        /* turned off since: drop them */
        if (pg_exec_cmd(
                pg,
                "UPDATE email_outbox SET status = 'failed', last_error = 'notifications off'"
                " WHERE id = ANY($1::uuid[])",
                1, ip, err, sizeof(err)) == 0 &&
            pg_commit(pg, err, sizeof(err)) == 0) {
            result = 0;
        }
        goto out_free;
    }
    jobs = pg_exec(pg,
                   "SELECT COALESCE(j.drive_file_name, ''), j.status,"
                   " COALESCE(j.output_file_name, ''), COALESCE(j.output_url, ''),"
                   " COALESCE(j.error_code, ''), COALESCE(j.error_message, '')"
                   " FROM jobs j WHERE j.id IN (SELECT unnest(job_ids) FROM email_outbox"
                   "   WHERE id = ANY($1::uuid[])) AND j.status IN ('completed', 'failed')"
                   " ORDER BY j.completed_at, j.id LIMIT 200",
                   1, ip, err, sizeof(err));
    if (jobs == NULL) {
        goto out_free;
    }
    size_t n = (size_t)PQntuples(jobs);
    int sent_rc = 0;
    char serr[300] = "";
    if (n > 0) {
        email_job_t list[EMAIL_MAX_JOBS];
        for (size_t i = 0; i < n && i < EMAIL_MAX_JOBS; i++) {
            list[i] =
                (email_job_t){PQgetvalue(jobs, (int)i, 0), PQgetvalue(jobs, (int)i, 1),
                              PQgetvalue(jobs, (int)i, 2), links ? PQgetvalue(jobs, (int)i, 3) : "",
                              PQgetvalue(jobs, (int)i, 4), PQgetvalue(jobs, (int)i, 5)};
        }
        char *message = email_build_digest(mail_from, email, name, msgid, list, n);
        if (message == NULL) {
            goto out_free;
        }
        char from_addr[256];
        email_address(mail_from, from_addr, sizeof(from_addr));
        sent_rc = email_smtp_send(smtp_url, from_addr, email, message, serr, sizeof(serr));
        free(message);
    }
    result = outbox_record(pg, ids, sent_rc, serr);
    if (result == 1) {
        log_info("e-mail digest of %zu job(s) sent", n);
    } else if (result == 0) {
        log_warn("e-mail digest not sent (%s): %s", sent_rc == 2 ? "permanent" : "will retry",
                 serr);
    }
out_free:
    PQclear(jobs);
    free(ids);
    free(msgid);
    free(email);
    free(name);
    if (pg_in_transaction(pg)) {
        pg_rollback(pg);
    }
    return result;
fail:
    log_debug("e-mail: %s", err);
    pg_rollback(pg);
    return -1;
}

int email_send_due(pg_conn_t *pg, const char *smtp_url, const char *mail_from, int wait_s,
                   int max_users)
{
    int sent = 0;
    for (int i = 0; i < max_users; i++) {
        int rc = send_one(pg, smtp_url, mail_from, wait_s);
        if (rc < 0) {
            return sent > 0 ? sent : -1;
        }
        if (rc == 0) {
            break;
        }
        sent++;
    }
    return sent;
}

/* One notice's e-mail. 1 sent, 0 nothing due (or not sent), -1 error. */
static int send_notice_one(pg_conn_t *pg, const char *smtp_url, const char *mail_from,
                           const char *public_url)
{
    char err[512];
    if (pg_begin(pg, err, sizeof(err)) != 0) {
        return -1;
    }
    int result = -1;
    PGresult *res = pg_exec(
        pg,
        "SELECT o.id::text, n.kind, n.title, n.message, COALESCE(u.email, ''),"
        " COALESCE(u.name, ''),"
        " COALESCE(u.email_notifications, true)"
        "   AND NOT (COALESCE(notice_email_category(n.kind), '') = ANY (u.email_opt_out)),"
        " o.created_at < timezone('UTC', now()) - make_interval(days => " NOTICE_MAIL_MAX_AGE_DAYS
        ")"
        " FROM email_outbox o JOIN notices n ON n.id = o.notice_id JOIN users u ON u.id = o.user_id"
        " WHERE o.status = 'pending' AND o.notice_id IS NOT NULL"
        "   AND o.next_attempt_at <= timezone('UTC', now())"
        " ORDER BY o.next_attempt_at LIMIT 1 FOR UPDATE OF o SKIP LOCKED",
        0, NULL, err, sizeof(err));
    if (res == NULL) {
        log_debug("notice e-mail: %s", err);
        pg_rollback(pg);
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        pg_rollback(pg);
        return 0;
    }
    const char *id = PQgetvalue(res, 0, 0);
    const char *email = PQgetvalue(res, 0, 4);
    bool wanted = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    bool expired = strcmp(PQgetvalue(res, 0, 7), "t") == 0;
    if (!wanted || expired || email[0] == '\0') {
        /* switched off (or opted out) since the notice was raised, or too old
         * to be news (e.g. raised while no SMTP server was configured) */
        const char *xp[2] = {id, expired && wanted ? "expired" : "notifications off"};
        if (pg_exec_cmd(pg,
                        "UPDATE email_outbox SET status = 'failed', last_error = $2"
                        " WHERE id = $1::uuid",
                        2, xp, err, sizeof(err)) == 0 &&
            pg_commit(pg, err, sizeof(err)) == 0) {
            result = 0;
        }
        goto out;
    }
    email_notice_t n = {PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3)};
    char *message = email_build_notice(mail_from, email, PQgetvalue(res, 0, 5), id, &n, public_url);
    if (message == NULL) {
        goto out;
    }
    char from_addr[256];
    email_address(mail_from, from_addr, sizeof(from_addr));
    char serr[300] = "";
    int sent_rc = email_smtp_send(smtp_url, from_addr, email, message, serr, sizeof(serr));
    free(message);
    char one[64];
    snprintf(one, sizeof(one), "{%s}", id);
    result = outbox_record(pg, one, sent_rc, serr);
    if (result == 1) {
        log_info("notice e-mail (%s) sent", n.kind);
    } else if (result == 0) {
        log_warn("notice e-mail not sent (%s): %s", sent_rc == 2 ? "permanent" : "will retry",
                 serr);
    }
out:
    PQclear(res);
    if (pg_in_transaction(pg)) {
        pg_rollback(pg);
    }
    return result;
}

int email_send_notices(pg_conn_t *pg, const char *smtp_url, const char *mail_from,
                       const char *public_url, int max)
{
    int sent = 0;
    for (int i = 0; i < max; i++) {
        int rc = send_notice_one(pg, smtp_url, mail_from, public_url);
        if (rc < 0) {
            return sent > 0 ? sent : -1;
        }
        if (rc == 0) {
            break;
        }
        sent++;
    }
    return sent;
}
