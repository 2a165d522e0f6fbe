/*
 * drive-poller, replicas and scale (issue 5): two pollers at once make no
 * duplicate job, push no id twice and never poll one folder concurrently
 * (checked from both logs' poll intervals); 1,000 watched folders are all
 * polled again and again, each idle poll costing one changes.list and no
 * other Drive call. How long a cycle over many folders takes is measured by
 * tests/bench/bench_poller.sh, not asserted here.
 */
#include "test_poller_common.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static int group_setup(void **state)
{
    (void)state;
    return tp_setup_world();
}

static int group_teardown(void **state)
{
    (void)state;
    tp_teardown_world();
    return 0;
}

typedef struct {
    char poll[64];
    long long start, end;
    int proc;
} poll_span_t;

/* Reads "poll done" lines from a poller's log into spans (grows *spans). */
static size_t read_spans(const proc_t *p, int proc, poll_span_t **spans, size_t n, size_t *cap)
{
    FILE *f = fopen(p->log_path, "r");
    if (f == NULL) {
        return n;
    }
    char line[4096];
    while (fgets(line, sizeof(line), f) != NULL) {
        const char *m = strstr(line, "poll done: status=");
        if (m == NULL) {
            continue;
        }
        const char *q = strstr(m, " poll=");
        poll_span_t s;
        memset(&s, 0, sizeof(s));
        if (q == NULL ||
            sscanf(q, " poll=%63s start_ms=%lld end_ms=%lld", s.poll, &s.start, &s.end) != 3) {
            continue;
        }
        s.proc = proc;
        if (n == *cap) {
            *cap = *cap != 0 ? *cap * 2 : 256;
            *spans = realloc(*spans, *cap * sizeof(**spans));
        }
        (*spans)[n++] = s;
    }
    fclose(f);
    return n;
}

static void test_two_pollers_no_duplicate_no_overlap(void **state)
{
    (void)state;
    enum { USERS = 40 };
    static tp_user_t users[USERS];
    for (int i = 0; i < USERS; i++) {
        assert_int_equal(tp_new_user(&users[i], "pair"), 0);
        for (int k = 0; k < 3; k++) {
            char name[32];
            snprintf(name, sizeof(name), "pre-%d.jpg", k);
            assert_int_equal(tp_image(&users[i], name, users[i].folder_id, NULL, 0), 0);
        }
    }
    proc_t a, b;
    const char *extra[] = {"POLLER_CONCURRENCY=4", NULL};
    assert_int_equal(tp_start_poller(&a, "1", extra), 0);
    assert_int_equal(tp_start_poller(&b, "1", extra), 0);
    for (int i = 0; i < USERS; i++) {
        assert_int_equal(tp_watch(&users[i]), 0);
    }
    /* new images in two waves while both poll: the first after every folder's
     * first listing, the second after the first wave became jobs */
    for (int wave = 0; wave < 2; wave++) {
        for (int i = 0; i < USERS; i++) {
            bool ready =
                wave == 0 ? tp_wait_scanned(&users[i], 60000) : tp_wait_jobs(&users[i], 4, 60000);
            if (!ready) {
                proc_print_log(&a);
                fail_msg("wave %d: user %d not ready (%ld jobs)", wave, i, tp_jobs_of(&users[i]));
            }
        }
        for (int i = 0; i < USERS; i++) {
            char name[32];
            snprintf(name, sizeof(name), "wave-%d.jpg", wave);
            assert_int_equal(tp_image(&users[i], name, users[i].folder_id, NULL, 0), 0);
        }
    }
    for (int i = 0; i < USERS; i++) {
        if (!tp_wait_jobs(&users[i], 5, 60000)) {
            proc_print_log(&a);
            fail_msg("user %d has %ld jobs", i, tp_jobs_of(&users[i]));
        }
    }
    /* two more cycles over every folder: nothing new may appear */
    assert_true(tp_wait_all_polled_again(60000));
    assert_true(tp_wait_all_polled_again(60000));
    assert_int_equal(daemon_stop(&a), 0);
    assert_int_equal(daemon_stop(&b), 0);
    for (int i = 0; i < USERS; i++) {
        assert_int_equal(tp_jobs_of(&users[i]), 5);
        long dups = 0;
        assert_int_equal(tp_queue_check(&users[i], &dups), 5);
        assert_int_equal(dups, 0);
    }
    poll_span_t *spans = NULL;
    size_t cap = 0;
    size_t n = read_spans(&a, 0, &spans, 0, &cap);
    size_t na = n;
    n = read_spans(&b, 1, &spans, n, &cap);
    /* both replicas worked */
    assert_true(na > (size_t)USERS);
    assert_true(n - na > (size_t)USERS);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = i + 1; k < n; k++) {
            if (strcmp(spans[i].poll, spans[k].poll) != 0) {
                continue;
            }
            bool apart = spans[i].end <= spans[k].start || spans[k].end <= spans[i].start;
            if (!apart) {
                fail_msg("folder %s polled concurrently: [%lld,%lld] p%d and [%lld,%lld] p%d",
                         spans[i].poll, spans[i].start, spans[i].end, spans[i].proc, spans[k].start,
                         spans[k].end, spans[k].proc);
            }
        }
    }
    free(spans);
    /* leases are all given back */
    assert_int_equal(
        tp_sql_long("SELECT count(*) FROM drive_polls WHERE lease_owner IS NOT NULL", 0, NULL), 0);
    sql_exec("UPDATE drive_polls SET active = FALSE, stopped_reason = 'test' WHERE active", 0,
             NULL);
}

static void test_thousand_folders_one_changes_call_each(void **state)
{
    (void)state;
    enum { USERS = 1000 };
    tp_user_t *users = calloc(USERS, sizeof(*users));
    assert_non_null(users);
    for (int i = 0; i < USERS; i++) {
        assert_int_equal(tp_new_user(&users[i], "k"), 0);
        assert_int_equal(tp_watch(&users[i]), 0);
    }
    assert_int_equal(tp_image(&users[USERS - 1], "last.jpg", users[USERS - 1].folder_id, NULL, 0),
                     0);
    proc_t p;
    const char *extra[] = {"POLLER_CONCURRENCY=8", "LOG_LEVEL=info", NULL};
    assert_int_equal(tp_start_poller(&p, "10", extra), 0);
    /* first round: every folder listed once */
    long long deadline = tp_now_ms() + 180000;
    while (
        tp_now_ms() < deadline &&
        tp_sql_long("SELECT count(*) FROM drive_polls WHERE active AND last_full_scan_at IS NULL",
                    0, NULL) != 0) {
        tp_sleep_ms(200);
    }
    assert_int_equal(
        tp_sql_long("SELECT count(*) FROM drive_polls WHERE active AND last_full_scan_at IS NULL",
                    0, NULL),
        0);
    assert_int_equal(tp_jobs_of(&users[USERS - 1]), 1);
    /* steady state: every folder is polled again, successfully, and the
     * Drive calls are only changes.list, one per poll (the two counts differ
     * by at most the polls in flight when each was read: 8 threads, twice) */
    long since = tp_requests_next();
    long polls_before = tp_polls_total(&p);
    bool again = tp_wait_all_polled_again(300000);
    long polls = tp_polls_total(&p) - polls_before;
    long failed = tp_sql_long("SELECT count(*) FROM drive_polls WHERE active AND"
                              " poll_status <> 'success'",
                              0, NULL);
    long other = 0;
    long changes = tp_requests_count(since, "/drive/v3/changes", &other);
    fprintf(stderr, "1,000 folders: %ld polls, %ld changes.list, %ld other Drive GETs\n", polls,
            changes, other);
    if (!again || failed != 0) {
        proc_print_log(&p);
    }
    assert_true(again);
    assert_int_equal(failed, 0);
    assert_int_equal(other, 0);
    assert_true(polls >= USERS && changes >= USERS);
    assert_true(labs(changes - polls) <= 16);
    /* the metrics carry it */
    char url[256];
    snprintf(url, sizeof(url), "%s/metrics", p.base_url);
    char *body = NULL;
    assert_int_equal(http_call("GET", url, NULL, &body), 200);
    assert_non_null(strstr(body, "ca_poller_polls_total{status=\"success\"}"));
    assert_non_null(strstr(body, "ca_poller_drive_calls_total{endpoint=\"changes.list\""));
    assert_non_null(strstr(body, "ca_poller_poll_duration_seconds_bucket"));
    assert_non_null(strstr(body, "ca_poller_folders_overdue"));
    free(body);
    assert_int_equal(daemon_stop(&p), 0);
    free(users);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_pollers_no_duplicate_no_overlap),
        cmocka_unit_test(test_thousand_folders_one_changes_call_each),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
