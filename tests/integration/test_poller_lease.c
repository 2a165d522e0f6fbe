/*
 * drive-poller, lease fencing (docs/drive-poller.md "Scheduling"): every write
 * a poll makes to its drive_polls row is fenced on the lease it claimed, so a
 * poll that lost its lease to another replica records nothing (no success, no
 * error, no backoff) and does not advance the page token. The other replica
 * is played by the test: while the poll waits for Drive, it takes the row
 * over as a claim after the lease expired would.
 */
#include "test_poller_common.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define OTHER_REPLICA "other-replica/t0"

typedef struct {
    tp_user_t u;
    char poll_id[64];
    long since; /* the fake's request log from here */
} stale_t;

/* The columns a poll records; a stale poll must leave them all as they were. */
static const char *const recorded[] = {
    "changes_page_token", "last_poll_at",       "files_found",   "poll_status",
    "error_message",      "consecutive_errors", "backoff_until", "next_poll_at",
    "last_full_scan_at",  "last_modified_time", "lease_owner",   "lease_expires_at",
};
#define NRECORDED (sizeof(recorded) / sizeof(recorded[0]))

static void snapshot(const tp_user_t *u, char out[][256])
{
    for (size_t i = 0; i < NRECORDED; i++) {
        char expr[128];
        snprintf(expr, sizeof(expr), "coalesce(%s::text, 'NULL')", recorded[i]);
        tp_poll_field(u, expr, out[i], 256);
    }
}

/* Lines of the poller's log that contain `needle`. */
static int log_count(const proc_t *p, const char *needle)
{
    FILE *f = fopen(p->log_path, "r");
    if (f == NULL) {
        return 0;
    }
    int n = 0;
    char line[16384];
    while (fgets(line, sizeof(line), f) != NULL) {
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

/* The poll's changes.list is at the fake and not answered yet. */
static bool changes_call_held(void *arg)
{
    const stale_t *s = arg;
    return tp_changes_call_held(s->since);
}

typedef struct {
    const char *needle;
    int before;
} log_wait_t;

static bool log_grew(void *arg)
{
    const log_wait_t *w = arg;
    return log_count(&tp_poller, w->needle) > w->before;
}

static bool not_leased(void *arg)
{
    const stale_t *s = arg;
    const char *p[] = {s->poll_id};
    return tp_sql_long("SELECT count(*) FROM drive_polls WHERE id = $1::uuid"
                       " AND lease_owner IS NULL",
                       1, p) == 1;
}

/* The only watched user, its first poll done. Then, the row held back: a
 * new image for the next poll to find, its changes.list to be held 4 s by the
 * fake and, with `reconcile`, a reconciliation due whose files.get of the
 * folder answers 500. Returns when that poll waits for Drive. */
static void poll_waiting_for_drive(stale_t *s, const char *prefix, bool reconcile)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(tp_new_user(&s->u, prefix), 0);
    sql_exec("UPDATE drive_polls SET active = FALSE, stopped_reason = 'test' WHERE active", 0,
             NULL);
    assert_int_equal(tp_watch(&s->u), 0);
    TP_CHECK(tp_wait_scanned(&s->u, 30000));
    TP_CHECK(tp_wait_polls(&s->u, 1, 30000));
    tp_poll_field(&s->u, "id", s->poll_id, sizeof(s->poll_id));
    const char *p[] = {s->poll_id};
    assert_int_equal(sql_exec("UPDATE drive_polls SET next_poll_at = timezone('UTC', now())"
                              " + interval '1 hour' WHERE id = $1::uuid",
                              1, p),
                     0);
    TP_CHECK(wait_until(not_leased, s, 30000)); /* no poll of it runs now */
    if (reconcile) {
        assert_int_equal(sql_exec("UPDATE drive_polls SET last_full_scan_at ="
                                  " timezone('UTC', now()) - interval '2 days' WHERE id = $1::uuid",
                                  1, p),
                         0);
        char fault[512];
        snprintf(fault, sizeof(fault),
                 "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/files/%s\"},\"count\":1,"
                 "\"action\":\"status\",\"status\":500}",
                 s->u.folder_id);
        fake_add_fault(tp_google.base_url, fault);
    }
    char id[128];
    assert_int_equal(tp_image(&s->u, "while-stale.jpg", s->u.folder_id, id, sizeof(id)), 0);
    s->since = tp_requests_next();
    fake_add_fault(tp_google.base_url,
                   "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},\"count\":1,"
                   "\"action\":\"delay\",\"delay_ms\":4000}");
    assert_int_equal(sql_exec("UPDATE drive_polls SET next_poll_at = timezone('UTC', now())"
                              " WHERE id = $1::uuid",
                              1, p),
                     0);
    TP_CHECK(wait_until(changes_call_held, s, 30000));
}

/* Another replica takes the row over while the poll waits; waits until the
 * stale poll has ended (its "poll done" line); checks nothing was recorded. */
static void take_over_and_check(stale_t *s, const char *want_status)
{
    char needle[128];
    snprintf(needle, sizeof(needle), "poll=%s ", s->poll_id);
    log_wait_t done = {needle, log_count(&tp_poller, needle)};
    const char *p[] = {s->poll_id, OTHER_REPLICA};
    assert_int_equal(sql_exec("UPDATE drive_polls SET lease_owner = $2,"
                              " lease_expires_at = timezone('UTC', now()) + interval '10 minutes'"
                              " WHERE id = $1::uuid",
                              2, p),
                     0);
    char before[NRECORDED][256];
    snapshot(&s->u, before);
    TP_CHECK(wait_until(log_grew, &done, 30000));
    char after[NRECORDED][256];
    snapshot(&s->u, after);
    for (size_t i = 0; i < NRECORDED; i++) {
        if (strcmp(before[i], after[i]) != 0) {
            proc_print_log(&tp_poller);
            fail_msg("the stale poll recorded %s: %s -> %s", recorded[i], before[i], after[i]);
        }
    }
    char line[160];
    snprintf(line, sizeof(line), "poll done: status=%s poll=%s ", want_status, s->poll_id);
    TP_CHECK(proc_log_contains(&tp_poller, line));
    /* the other replica lets go: the row is due for the next test's cleanup */
    assert_int_equal(sql_exec("UPDATE drive_polls SET lease_owner = NULL, lease_expires_at = NULL,"
                              " active = FALSE, stopped_reason = 'test' WHERE id = $1::uuid",
                              1, p),
                     0);
}

/* The stale poll got its changes (a new image among them): it records no
 * success and the token stays where the new owner will read from. */
static void test_stale_poll_records_nothing(void **state)
{
    (void)state;
    stale_t s;
    poll_waiting_for_drive(&s, "fenced", false);
    take_over_and_check(&s, "success");
    TP_CHECK(proc_log_contains(&tp_poller, "lease lost before the poll was recorded"));
}

/* The stale poll fails after it lost the lease (files.get answers 500 in the
 * reconciliation its row was due for): no error, no backoff recorded either. */
static void test_stale_failed_poll_records_no_error(void **state)
{
    (void)state;
    stale_t s;
    poll_waiting_for_drive(&s, "fencederr", true);
    take_over_and_check(&s, "error");
}

/* Last: SIGTERM, and the poller exits 0 (cmocka does not count a failed
 * group teardown). */
static void test_poller_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&tp_poller), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stale_poll_records_nothing),
        cmocka_unit_test(test_stale_failed_poll_records_no_error),
        cmocka_unit_test(test_poller_exits_cleanly), /* last: stops the poller */
    };
    return cmocka_run_group_tests(tests, tp_group_setup, tp_group_teardown);
}
