/*
 * job-worker: fair scheduling end to end (issue 15), with real PostgreSQL and
 * Redis, the Google fake and the real binary.
 *
 * A studio user has 500 photos queued and a creator 100, pushed the way the
 * poller pushes them (each to its user's list with the user's tier); then a
 * free user's single photo arrives. With today's single FIFO it would start
 * after all 600. The fair queue starts it within a few takes: the test
 * requires fewer than 60 of the backlog's jobs (10%) to have started before
 * it, and that each user's own photos still start in arrival order.
 */
#define _GNU_SOURCE
#include "crypto.h"
#include "queue.h"
#include "redis.h"
#include "support.h"
#include "worker_user.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define KEY_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define CLIENT_ID "ca-worker-test"
#define NSTUDIO 500
#define NCREATOR 100

static proc_t google, worker;
static crypto_keyring_t *keys;
static redis_conn_t *redis;

static const char PASSTHROUGH[] =
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.jpg\"}},"
    "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0],"
    "\"filename_prefix\":\"p\"}}}";

/* A user of tier with a limit that never blocks, and the pass-through preset. */
static wu_user_t tier_user(const char *email, const char *tier)
{
    wu_user_t u = wu_make_user(google.base_url, keys, CLIENT_ID, email, NULL);
    const char *p[] = {u.id, tier};
    assert_int_equal(sql_exec("INSERT INTO subscriptions (user_id, tier, status, monthly_limit)"
                              " VALUES ($1::uuid, $2, 'active', 100000)"
                              " ON CONFLICT (user_id) DO UPDATE SET tier = EXCLUDED.tier,"
                              " monthly_limit = EXCLUDED.monthly_limit",
                              2, p),
                     0);
    wu_user_preset(&u, "passthrough", PASSTHROUGH);
    return u;
}

/* n photos in the user's Inbox and their jobs, made as the poller makes them;
 * the ids in jobs (not pushed yet). */
static void make_jobs(const wu_user_t *u, const char *prefix, int n, char (*jobs)[40])
{
    for (int i = 0; i < n; i++) {
        char name[64], file[128];
        snprintf(name, sizeof(name), "%s%04d.jpg", prefix, i);
        wu_drive_file(google.base_url, u, name, "image/jpeg", TINY_JPEG_B64, file, sizeof(file));
        const char *p[] = {u->id, file, name, u->inbox};
        char *id = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2, $3,"
                             " $4, 1000, 'image/jpeg', 'passthrough')",
                             4, p);
        assert_non_null(id);
        snprintf(jobs[i], 40, "%s", id);
        free(id);
    }
}

static void push_jobs(const wu_user_t *u, const char *tier, int n, char (*jobs)[40])
{
    char err[256];
    for (int i = 0; i < n; i++) {
        assert_int_equal(queue_push_user(redis, jobs[i], u->id, tier, err, sizeof(err)), 0);
    }
}

static bool job_done(void *arg)
{
    char *st = wu_job_col(arg, "status");
    bool done = st != NULL && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0);
    free(st);
    return done;
}

/* How many of the user's jobs had started before `job` started, and whether
 * those are the user's first ones (FIFO within a user: none started while an
 * earlier one of the same user had not, beyond what the threads overlap). */
static long started_before(const wu_user_t *u, const char *job, long *max_seq)
{
    const char *p[] = {u->id, job};
    char *v = sql_value("WITH s AS (SELECT j.started_at, row_number() OVER (ORDER BY j.created_at,"
                        " j.drive_file_name) AS seq FROM jobs j WHERE j.user_id = $1::uuid)"
                        " SELECT count(*) || ' ' || COALESCE(max(seq), 0) FROM s"
                        " WHERE s.started_at < (SELECT started_at FROM jobs WHERE id = $2::uuid)",
                        2, p);
    assert_non_null(v);
    long n = 0;
    assert_int_equal(sscanf(v, "%ld %ld", &n, max_seq), 2);
    free(v);
    return n;
}

static int setup(void **state)
{
    (void)state;
    if (getenv("TEST_DATABASE_URL") == NULL || getenv("TEST_REDIS_URL") == NULL) {
        fprintf(stderr, "TEST_DATABASE_URL / TEST_REDIS_URL not set (run through tests/run)\n");
        return -1;
    }
    char err[256];
    keys = crypto_keyring_new(KEY_B64, NULL, err, sizeof(err));
    redis = redis_connect(getenv("TEST_REDIS_URL"), 5000, err, sizeof(err));
    return keys == NULL || redis == NULL || fake_start(&google, "google", NULL) != 0 ? -1 : 0;
}

static int start_worker(void)
{
    const char *extra[] = {"WORKER_CONCURRENCY=2", NULL};
    return wu_start_worker(&worker, google.base_url, KEY_B64, CLIENT_ID, extra);
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (worker.pid > 0) {
        rc = proc_stop(&worker);
        if (rc != 0) {
            proc_print_log(&worker);
        }
    }
    proc_stop(&google);
    redis_close(redis);
    crypto_keyring_free(keys);
    return rc == 0 ? 0 : -1;
}

static void test_late_free_photo_overtakes_backlog(void **state)
{
    (void)state;
    static char studio_jobs[NSTUDIO][40], creator_jobs[NCREATOR][40], free_job[1][40];
    wu_user_t studio = tier_user("studio.fair@example.com", "studio");
    wu_user_t creator = tier_user("creator.fair@example.com", "creator");
    wu_user_t freeu = tier_user("free.fair@example.com", "free");
    make_jobs(&studio, "s", NSTUDIO, studio_jobs);
    make_jobs(&creator, "c", NCREATOR, creator_jobs);
    make_jobs(&freeu, "f", 1, free_job);

    /* the worker is running while the backlog arrives, as in production */
    assert_int_equal(start_worker(), 0);
    push_jobs(&studio, "studio", NSTUDIO, studio_jobs);
    push_jobs(&creator, "creator", NCREATOR, creator_jobs);
    push_jobs(&freeu, "free", 1, free_job);

    if (!wait_until(job_done, free_job[0], 120000)) {
        proc_print_log(&worker);
        fail_msg("the free user's photo did not finish within 120 s");
    }
    char *st = wu_job_col(free_job[0], "status");
    assert_non_null(st);
    assert_string_equal(st, "completed");
    free(st);
    assert_int_equal(wu_outputs_for(google.base_url, &freeu, free_job[0]), 1);

    long smax = 0, cmax = 0;
    long s = started_before(&studio, free_job[0], &smax);
    long c = started_before(&creator, free_job[0], &cmax);
    print_message("backlog jobs started before the free photo: studio %ld, creator %ld "
                  "(FIFO: %d)\n",
                  s, c, NSTUDIO + NCREATOR);
    assert_true(s + c < (NSTUDIO + NCREATOR) / 10);
    /* FIFO within each user: the started ones are that user's first ones
     * (two threads may start neighbours in either order) */
    assert_true(smax <= s + 2);
    assert_true(cmax <= c + 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_late_free_photo_overtakes_backlog),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
