/*
 * Notices (issue 15) on the real stack: PostgreSQL with every slice migrated,
 * the SMTP fake, and the job-worker's e-mail code (email_send_notices,
 * email_send_due) run here on a ca_job_worker connection, as the worker's
 * e-mail task runs them.
 *
 *   - notice_raise twice for one cause: one notice, one outbox row, one e-mail;
 *   - an opted-out kind: the notice, no e-mail (at raise time and at send
 *     time); the master switch off: no e-mail at all (the digest included);
 *     opting out of 'jobs' stops the digest;
 *   - usage crossing 80 % and 100 % of a free plan through
 *     billing_reserve_usage: each notice exactly once, also after a release
 *     and a new reservation; each e-mailed once;
 *   - jobs failed for good: one notice per batch, no e-mail of its own;
 *   - SMTP 4xx: the row waits with backoff; 5xx: failed;
 *   - header values of a notice's e-mail are cleaned of CR/LF.
 */
#include "email.h"
#include "fake_admin.h"
#include "pg.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define PUBLIC "https://ca.example.com"
#define FROM "Creator Automation <no-reply@ca.example.com>"

static proc_t smtp;
static char smtp_url[64];
static char smtp_admin[64];
static pg_conn_t *wpg; /* as ca_job_worker */

static int setup(void **state)
{
    (void)state;
    const char *args[] = {"--admin-port", "0", NULL};
    if (fake_start(&smtp, "smtp", args) != 0) {
        return -1;
    }
    int admin_port = 0;
    FILE *f = fopen(smtp.log_path, "r");
    char line[256];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        const char *at = strstr(line, "admin listening on 127.0.0.1:");
        if (at != NULL) {
            admin_port = atoi(at + strlen("admin listening on 127.0.0.1:"));
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    if (admin_port <= 0) {
        return -1;
    }
    snprintf(smtp_admin, sizeof(smtp_admin), "http://127.0.0.1:%d", admin_port);
    snprintf(smtp_url, sizeof(smtp_url), "smtp://127.0.0.1:%d", smtp.port);
    char err[256];
    wpg = pg_connect(db_url_as("ca_job_worker"), 30000, err, sizeof(err));
    if (wpg == NULL) {
        fprintf(stderr, "connect: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pg_close(wpg);
    proc_stop(&smtp);
    return 0;
}

/* ---- helpers ---- */

static void make_user(const char *tag, char *id)
{
    const char *p[] = {tag};
    char *v = sql_value("INSERT INTO users (google_id, email, name) VALUES ('g-' || $1,"
                        " $1 || '@example.com', 'User ' || $1) RETURNING id",
                        1, p);
    assert_non_null(v);
    snprintf(id, 40, "%s", v);
    free(v);
}

static long count_of(const char *sql, int n, const char *const *p)
{
    char *v = sql_value(sql, n, p);
    assert_non_null(v);
    long c = atol(v);
    free(v);
    return c;
}

/* notice_raise as the worker; the returned id ("" when it existed) in out. */
static void raise_notice(const char *user, const char *kind, const char *key, const char *data,
                         char *out, size_t outlen)
{
    char err[256];
    const char *p[] = {user, kind, key, data};
    PGresult *res =
        pg_exec(wpg, "SELECT COALESCE(notice_raise($1::uuid, $2, $3, $4::jsonb)::text, '')", 4, p,
                err, sizeof(err));
    if (res == NULL) {
        fail_msg("notice_raise: %s", err);
    }
    if (out != NULL) {
        snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
}

/* The SMTP fake's messages to addr (the caller deletes them). */
static cJSON *messages_to(const char *addr)
{
    char path[256];
    snprintf(path, sizeof(path), "/__admin/messages?to=%s", addr);
    cJSON *j = fake_admin(smtp_admin, "GET", path, NULL);
    assert_non_null(j);
    return j;
}

static int nmessages(const char *addr)
{
    cJSON *j = messages_to(addr);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "messages"));
    cJSON_Delete(j);
    return n;
}

static int send_notices(void)
{
    return email_send_notices(wpg, smtp_url, FROM, PUBLIC, 20);
}

static long notices_of(const char *user, const char *kind)
{
    const char *p[] = {user, kind};
    return count_of("SELECT count(*) FROM notices WHERE user_id = $1::uuid AND kind = $2", 2, p);
}

static long outbox_of(const char *user, const char *status)
{
    const char *p[] = {user, status};
    return count_of("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid"
                    " AND notice_id IS NOT NULL AND status = $2",
                    2, p);
}

/* ---- tests ---- */

static void test_raise_once_one_email(void **state)
{
    (void)state;
    char u[40], first[40], second[40];
    make_user("once", u);
    raise_notice(u, "folder_gone", "watch:1", "{\"folder_id\":\"f1\"}", first, sizeof(first));
    raise_notice(u, "folder_gone", "watch:1", "{\"folder_id\":\"f1\"}", second, sizeof(second));
    assert_int_equal(strlen(first), 36);
    assert_string_equal(second, "");
    assert_int_equal(notices_of(u, "folder_gone"), 1);
    assert_int_equal(outbox_of(u, "pending"), 1);

    assert_int_equal(send_notices(), 1);
    assert_int_equal(send_notices(), 0);
    assert_int_equal(outbox_of(u, "sent"), 1);
    cJSON *j = messages_to("once@example.com");
    cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 1);
    const char *data = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "data")->valuestring;
    assert_non_null(strstr(data, "Subject: Creator Automation: Your watched folder is gone\r\n"));
    assert_non_null(strstr(data, "Pick a folder again"));
    assert_non_null(strstr(data, "\r\n  " PUBLIC "/\r\n"));
    assert_non_null(strstr(data, "Hello User once,"));
    cJSON_Delete(j);

    /* the same cause again, later: nothing new */
    raise_notice(u, "folder_gone", "watch:1", "{}", second, sizeof(second));
    assert_string_equal(second, "");
    assert_int_equal(send_notices(), 0);
    assert_int_equal(nmessages("once@example.com"), 1);
    /* another cause of the same kind is another notice */
    raise_notice(u, "folder_gone", "watch:2", "{}", second, sizeof(second));
    assert_int_equal(notices_of(u, "folder_gone"), 2);
    assert_int_equal(send_notices(), 1);
    assert_int_equal(nmessages("once@example.com"), 2);
}

static void test_links_per_kind(void **state)
{
    (void)state;
    char u[40];
    make_user("links", u);
    raise_notice(u, "drive_revoked", "watch:r", "{}", NULL, 0);
    assert_int_equal(send_notices(), 1);
    raise_notice(u, "payment_failed", "invoice:in_1", "{\"tier\":\"creator\"}", NULL, 0);
    assert_int_equal(send_notices(), 1);
    cJSON *j = messages_to("links@example.com");
    cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 2);
    bool revoked = false, payment = false;
    for (int i = 0; i < 2; i++) {
        const char *d = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, i), "data")->valuestring;
        if (strstr(d, "Subject: Creator Automation: Reconnect Google Drive") != NULL) {
            revoked = strstr(d, PUBLIC "/auth/google/login") != NULL &&
                      strstr(d, "Sign in again") != NULL;
        }
        if (strstr(d, "Subject: Creator Automation: Your payment failed") != NULL) {
            payment = strstr(d, PUBLIC "/billing/portal") != NULL &&
                      strstr(d, "your creator plan") != NULL;
        }
    }
    cJSON_Delete(j);
    assert_true(revoked);
    assert_true(payment);

    /* quota_waiting (raised by the quota work through notice_raise) */
    raise_notice(u, "quota_waiting", "2026-01-01", "{\"waiting\": 3}", NULL, 0);
    assert_int_equal(send_notices(), 1);
    j = messages_to("links@example.com");
    msgs = cJSON_GetObjectItem(j, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 3);
    bool waiting = false;
    for (int i = 0; i < 3; i++) {
        const char *d = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, i), "data")->valuestring;
        waiting = waiting ||
                  (strstr(d, "Subject: Creator Automation: Photos are waiting for your monthly "
                             "limit") != NULL &&
                   strstr(d, "3 photos wait") != NULL);
    }
    cJSON_Delete(j);
    assert_true(waiting);

    /* an e-mail not sent within 3 days (e.g. no SMTP server then) is not news any more */
    const char *p[] = {u};
    raise_notice(u, "folder_gone", "watch:old", "{}", NULL, 0);
    assert_int_equal(sql_exec("UPDATE email_outbox SET created_at = created_at - interval '4 days'"
                              " WHERE user_id = $1::uuid AND status = 'pending'",
                              1, p),
                     0);
    assert_int_equal(send_notices(), 0);
    assert_int_equal(nmessages("links@example.com"), 3);
    assert_int_equal(count_of("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid"
                              " AND status = 'failed' AND last_error = 'expired'",
                              1, p),
                     1);
}

static void test_opt_out_and_master_switch(void **state)
{
    (void)state;
    char u[40];
    make_user("optout", u);
    const char *p[] = {u};
    assert_int_equal(
        sql_exec("UPDATE users SET email_opt_out = '{drive}' WHERE id = $1::uuid", 1, p), 0);
    raise_notice(u, "drive_revoked", "watch:a", "{}", NULL, 0);
    /* the in-app notice is recorded; no e-mail */
    assert_int_equal(notices_of(u, "drive_revoked"), 1);
    assert_int_equal(outbox_of(u, "pending"), 0);
    /* another category still mails */
    raise_notice(u, "usage_80", "2026-01-01/10", "{\"images_used\":8,\"monthly_limit\":10}", NULL,
                 0);
    assert_int_equal(outbox_of(u, "pending"), 1);
    /* opted out after the notice was raised: read again at send time */
    assert_int_equal(
        sql_exec("UPDATE users SET email_opt_out = '{drive,usage}' WHERE id = $1::uuid", 1, p), 0);
    assert_int_equal(send_notices(), 0);
    assert_int_equal(outbox_of(u, "failed"), 1);
    assert_int_equal(nmessages("optout@example.com"), 0);

    /* master switch off: the notice, no e-mail, whatever the opt-outs */
    char q[40];
    make_user("quietn", q);
    const char *qp[] = {q};
    assert_int_equal(
        sql_exec("UPDATE users SET email_notifications = false WHERE id = $1::uuid", 1, qp), 0);
    raise_notice(q, "payment_failed", "invoice:in_q", "{}", NULL, 0);
    assert_int_equal(notices_of(q, "payment_failed"), 1);
    assert_int_equal(outbox_of(q, "pending"), 0);
    /* switched off between raise and send */
    assert_int_equal(
        sql_exec("UPDATE users SET email_notifications = true WHERE id = $1::uuid", 1, qp), 0);
    raise_notice(q, "payment_failed", "invoice:in_q2", "{}", NULL, 0);
    assert_int_equal(outbox_of(q, "pending"), 1);
    assert_int_equal(
        sql_exec("UPDATE users SET email_notifications = false WHERE id = $1::uuid", 1, qp), 0);
    assert_int_equal(send_notices(), 0);
    assert_int_equal(outbox_of(q, "failed"), 1);
    assert_int_equal(nmessages("quietn@example.com"), 0);
}

static void test_digest_opt_out(void **state)
{
    (void)state;
    char u[40];
    make_user("nodigest", u);
    const char *p[] = {u};
    char *job = sql_value("INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name,"
                          " drive_folder_id, preset_name, completed_at, output_file_name)"
                          " VALUES ($1, 'completed', 'df-nd', 'nd.jpg', 'fo', 'portrait_pro',"
                          " now(), 'nd_portrait_pro.jpg') RETURNING id",
                          1, p);
    assert_non_null(job);
    const char *jp[] = {u, job};
    assert_int_equal(sql_exec("INSERT INTO email_outbox (user_id, job_ids)"
                              " VALUES ($1, ARRAY[$2::uuid])",
                              2, jp),
                     0);
    assert_int_equal(
        sql_exec("UPDATE users SET email_opt_out = '{jobs}' WHERE id = $1::uuid", 1, p), 0);
    assert_int_equal(email_send_due(wpg, smtp_url, FROM, 0, 20), 0);
    assert_int_equal(nmessages("nodigest@example.com"), 0);
    assert_int_equal(count_of("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid"
                              " AND status = 'failed' AND last_error = 'notifications off'",
                              1, p),
                     1);
    /* and a digest is never sent for a notice's row (nor a notice for a digest row) */
    assert_int_equal(sql_exec("UPDATE users SET email_opt_out = '{}' WHERE id = $1::uuid", 1, p),
                     0);
    raise_notice(u, "folder_gone", "watch:nd", "{}", NULL, 0);
    assert_int_equal(email_send_due(wpg, smtp_url, FROM, 0, 20), 0);
    assert_int_equal(outbox_of(u, "pending"), 1);
    assert_int_equal(send_notices(), 1);
    free(job);
}

/* billing_reserve_usage as the worker calls it (in the claim). */
static void reserve(const char *user, int n, char *outcome, size_t outlen)
{
    char job[40];
    snprintf(job, sizeof(job), "00000000-0000-4000-8000-%012d", n);
    const char *p[] = {job, user};
    char err[256];
    PGresult *res = pg_exec(wpg, "SELECT outcome FROM billing_reserve_usage($1::uuid, $2::uuid)", 2,
                            p, err, sizeof(err));
    if (res == NULL) {
        fail_msg("reserve: %s", err);
    }
    snprintf(outcome, outlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void test_usage_crossings_once(void **state)
{
    (void)state;
    char u[40], outcome[16];
    make_user("usage", u);
    for (int i = 1; i <= 7; i++) {
        reserve(u, i, outcome, sizeof(outcome));
        assert_string_equal(outcome, "ok");
    }
    assert_int_equal(notices_of(u, "usage_80"), 0);
    reserve(u, 8, outcome, sizeof(outcome));
    assert_int_equal(notices_of(u, "usage_80"), 1);
    reserve(u, 9, outcome, sizeof(outcome));
    assert_int_equal(notices_of(u, "usage_80"), 1);
    assert_int_equal(notices_of(u, "usage_100"), 0);
    reserve(u, 10, outcome, sizeof(outcome));
    assert_string_equal(outcome, "ok");
    assert_int_equal(notices_of(u, "usage_100"), 1);
    reserve(u, 11, outcome, sizeof(outcome));
    assert_string_equal(outcome, "blocked");
    /* a released reservation brings the count back under the limit; a new one
     * reaches it again: no second notice */
    const char *rp[] = {"00000000-0000-4000-8000-000000000010"};
    char err[256];
    assert_int_equal(
        pg_exec_cmd(wpg, "SELECT billing_release_usage($1::uuid, true)", 1, rp, err, sizeof(err)),
        0);
    reserve(u, 12, outcome, sizeof(outcome));
    assert_string_equal(outcome, "ok");
    assert_int_equal(notices_of(u, "usage_80"), 1);
    assert_int_equal(notices_of(u, "usage_100"), 1);
    const char *p[] = {u};
    char *data = sql_value("SELECT data::text || ' ' || message FROM notices"
                           " WHERE user_id = $1::uuid AND kind = 'usage_100'",
                           1, p);
    assert_non_null(data);
    assert_non_null(strstr(data, "\"images_used\": 10"));
    assert_non_null(strstr(data, "\"monthly_limit\": 10"));
    assert_non_null(strstr(data, "10 of the 10 images your free plan"));
    free(data);
    assert_int_equal(send_notices(), 2);
    cJSON *j = messages_to("usage@example.com");
    cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 2);
    int s80 = 0, s100 = 0;
    for (int i = 0; i < 2; i++) {
        const char *d = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, i), "data")->valuestring;
        s80 += strstr(d, "Subject: Creator Automation: You have used 80% of your monthly images") !=
               NULL;
        s100 +=
            strstr(d, "Subject: Creator Automation: You have reached your monthly image limit") !=
            NULL;
    }
    cJSON_Delete(j);
    assert_int_equal(s80, 1);
    assert_int_equal(s100, 1);
}

static void test_jobs_failed_batch(void **state)
{
    (void)state;
    char u[40];
    make_user("failbatch", u);
    const char *p[] = {u};
    char *jobs[3];
    for (int i = 0; i < 3; i++) {
        char file[32];
        snprintf(file, sizeof(file), "fb%d.jpg", i);
        const char *jp[] = {u, file};
        jobs[i] = sql_value("INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name,"
                            " drive_folder_id, preset_name) VALUES ($1, 'processing', 'df-' || $2,"
                            " $2, 'fo', 'portrait_pro') RETURNING id",
                            2, jp);
        assert_non_null(jobs[i]);
    }
    for (int i = 0; i < 2; i++) {
        const char *jp[] = {jobs[i]};
        assert_int_equal(sql_exec("UPDATE jobs SET status = 'failed', error_code ="
                                  " 'unsupported_image' WHERE id = $1::uuid",
                                  1, jp),
                         0);
    }
    assert_int_equal(notices_of(u, "jobs_failed"), 1);
    char *d = sql_value("SELECT (data->>'count') || ' ' || jsonb_array_length(data->'jobs') || ' '"
                        " || title FROM notices WHERE user_id = $1::uuid AND kind = 'jobs_failed'",
                        1, p);
    assert_string_equal(d, "2 2 2 photos could not be processed");
    free(d);
    /* one photo is one photo: singular title and text ("photo(s)" before) */
    d = sql_value("SELECT t.title || ' / ' || t.message FROM notice_text('jobs_failed',"
                  " '{\"count\": 1}') t",
                  0, NULL);
    assert_string_equal(d, "1 photo could not be processed / 1 photo failed for good. The job "
                           "list shows why; you can retry it there.");
    free(d);
    d = sql_value("SELECT t.message FROM notice_text('quota_waiting', '{\"waiting\": 1}') t", 0,
                  NULL);
    assert_non_null(strstr(d, "1 photo waits because"));
    assert_non_null(strstr(d, "It is processed by itself"));
    free(d);
    /* no e-mail of its own (the digest mails failed jobs) */
    assert_int_equal(count_of("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid", 1, p),
                     0);
    /* read: the next failure starts a new batch */
    assert_int_equal(sql_exec("UPDATE notices SET read_at = now() WHERE user_id = $1::uuid", 1, p),
                     0);
    const char *jp[] = {jobs[2]};
    assert_int_equal(
        sql_exec("UPDATE jobs SET status = 'failed', error_code = 'timeout' WHERE id = $1::uuid", 1,
                 jp),
        0);
    assert_int_equal(notices_of(u, "jobs_failed"), 2);

    /* the batch lock held elsewhere: the failure does not wait for it (it could
     * deadlock with billing's locks), the job gets a notice of its own */
    const char *jp4[] = {u, "fb4.jpg"};
    char *job4 = sql_value("INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name,"
                           " drive_folder_id, preset_name) VALUES ($1, 'processing', 'df-' || $2,"
                           " $2, 'fo', 'portrait_pro') RETURNING id",
                           2, jp4);
    assert_non_null(job4);
    pg_conn_t *holder = db_connect_ok();
    char err[256];
    assert_int_equal(pg_exec_cmd(holder,
                                 "SELECT pg_advisory_lock(hashtext('ca_notice_jobs_failed'),"
                                 " hashtext($1))",
                                 1, p, err, sizeof(err)),
                     0);
    assert_int_equal(pg_exec_cmd(wpg, "SET statement_timeout = '5s'", 0, NULL, err, sizeof(err)),
                     0);
    const char *j4[] = {job4};
    int rc = pg_exec_cmd(wpg,
                         "UPDATE jobs SET status = 'failed', error_code = 'timeout'"
                         " WHERE id = $1::uuid",
                         1, j4, err, sizeof(err));
    assert_int_equal(pg_exec_cmd(wpg, "RESET statement_timeout", 0, NULL, err, sizeof(err)), 0);
    pg_close(holder);
    assert_int_equal(rc, 0);
    assert_int_equal(notices_of(u, "jobs_failed"), 3);
    free(job4);
    for (int i = 0; i < 3; i++) {
        free(jobs[i]);
    }
}

static void smtp_fault(const char *json)
{
    cJSON *r = fake_admin(smtp_admin, "POST", "/__admin/smtp/faults", json);
    assert_non_null(r);
    cJSON_Delete(r);
}

static void test_smtp_retry_rules(void **state)
{
    (void)state;
    char u[40];
    make_user("retryn", u);
    const char *p[] = {u};
    smtp_fault("{\"stage\":\"rcpt\",\"code\":451,\"count\":1}");
    raise_notice(u, "folder_gone", "watch:t", "{}", NULL, 0);
    assert_int_equal(send_notices(), 0);
    assert_int_equal(count_of("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid"
                              " AND status = 'pending' AND attempts = 1"
                              " AND next_attempt_at > timezone('UTC', now())",
                              1, p),
                     1);
    /* not due yet: nothing sent */
    assert_int_equal(send_notices(), 0);
    assert_int_equal(nmessages("retryn@example.com"), 0);
    /* due again: sent */
    assert_int_equal(sql_exec("UPDATE email_outbox SET next_attempt_at = now() - interval '1 s'"
                              " WHERE user_id = $1::uuid",
                              1, p),
                     0);
    assert_int_equal(send_notices(), 1);
    assert_int_equal(nmessages("retryn@example.com"), 1);
    /* a permanent refusal: failed at once */
    smtp_fault("{\"stage\":\"rcpt\",\"code\":550,\"count\":1}");
    raise_notice(u, "folder_gone", "watch:t2", "{}", NULL, 0);
    assert_int_equal(send_notices(), 0);
    assert_int_equal(count_of("SELECT count(*) FROM email_outbox WHERE user_id = $1::uuid"
                              " AND status = 'failed' AND attempts = 1",
                              1, p),
                     1);
    cJSON_Delete(fake_admin(smtp_admin, "DELETE", "/__admin/smtp/faults", NULL));
}

static void test_notice_headers_clean(void **state)
{
    (void)state;
    email_notice_t n = {"folder_gone", "Gone\r\nBcc: evil@example.com", "text"};
    char *m = email_build_notice(FROM, "u@example.com\r\nBcc: evil@example.com", "Ann\r\nX: y",
                                 "id1", &n, PUBLIC "/");
    assert_non_null(m);
    assert_null(strstr(m, "\r\nBcc:"));
    assert_null(strstr(m, "\nBcc:"));
    assert_null(strstr(m, "\r\nX: y"));
    /* the trailing slash of PUBLIC_URL is not doubled */
    assert_non_null(strstr(m, "  " PUBLIC "/\r\n"));
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raise_once_one_email),
        cmocka_unit_test(test_links_per_kind),
        cmocka_unit_test(test_opt_out_and_master_switch),
        cmocka_unit_test(test_digest_opt_out),
        cmocka_unit_test(test_usage_crossings_once),
        cmocka_unit_test(test_jobs_failed_batch),
        cmocka_unit_test(test_smtp_retry_rules),
        cmocka_unit_test(test_notice_headers_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
