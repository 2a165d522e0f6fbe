/* The test support library itself: a fake and a daemon start, answer, stop. */
#include "support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_fake_starts_and_answers(void **state)
{
    (void)state;
    proc_t g;
    assert_int_equal(fake_start(&g, "google", NULL), 0);
    assert_true(g.port > 0);
    char url[256];
    snprintf(url, sizeof(url), "%s/__admin/health", g.base_url);
    char *body = NULL;
    assert_int_equal(http_call("GET", url, NULL, &body), 200);
    assert_non_null(strstr(body, "google"));
    free(body);
    assert_int_equal(proc_stop_timeout(&g, 5000) >= 0, 1);
}

static void test_daemon_starts_ready_and_stops(void **state)
{
    (void)state;
    const char *env[] = {"ENCRYPTION_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                         "GOOGLE_CLIENT_ID=x", "GOOGLE_CLIENT_SECRET=y", NULL};
    setenv("DATABASE_URL", db_url_as("ca_drive_poller"), 1); /* serve refuses a superuser */
    setenv("REDIS_URL", getenv("TEST_REDIS_URL"), 1);
    proc_t p;
    assert_int_equal(daemon_start(&p, "drive-poller", env), 0);
    assert_true(proc_log_contains(&p, "\"msg\":\"ready: "));
    assert_int_equal(proc_stop(&p), 0);
}

static void test_sql_helpers(void **state)
{
    (void)state;
    const char *params[] = {"41"};
    char *v = sql_value("SELECT ($1::int + 1)::text", 1, params);
    assert_string_equal(v, "42");
    free(v);
    assert_int_equal(sql_exec("SELECT 1", 0, NULL), 0);
    assert_non_null(strstr(db_url_as("ca_job_worker"), "ca_job_worker@127.0.0.1:"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fake_starts_and_answers),
        cmocka_unit_test(test_daemon_starts_ready_and_stops),
        cmocka_unit_test(test_sql_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
