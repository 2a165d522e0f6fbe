/*
 * The daily retention's schedule (common/daemon.c): RETENTION_AT's forms and
 * the next run after a given instant, in UTC, across midnight.
 */
#include "daemon.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_parse(void **state)
{
    (void)state;
    int s = 0;
    assert_int_equal(daemon_parse_time_of_day("02:00", &s), 0);
    assert_int_equal(s, 7200);
    assert_int_equal(daemon_parse_time_of_day("23:59:59", &s), 0);
    assert_int_equal(s, 86399);
    assert_int_equal(daemon_parse_time_of_day("00:00", &s), 0);
    assert_int_equal(s, 0);
    assert_int_equal(daemon_parse_time_of_day("off", &s), 0);
    assert_int_equal(s, -1);
    const char *bad[] = {"",       "2:00",  "24:00",   "02:60",     "02:00:60", "0200", "02:00 ",
                         " 02:00", "02-00", "02:00:0", "02:00:000", "+2:00",    "OFF",  "ab:cd"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        s = 123;
        if (daemon_parse_time_of_day(bad[i], &s) != -1) {
            fail_msg("'%s' accepted", bad[i]);
        }
        assert_int_equal(s, 123);
    }
}

static void test_next(void **state)
{
    (void)state;
    const int64_t day = 1796515200; /* 2026-12-06 00:00:00 UTC */
    /* before the time: today; at or after it: tomorrow */
    assert_int_equal(daemon_next_time_of_day(day + 3600, 7200), day + 7200);
    assert_int_equal(daemon_next_time_of_day(day + 7199, 7200), day + 7200);
    assert_int_equal(daemon_next_time_of_day(day + 7200, 7200), day + 86400 + 7200);
    assert_int_equal(daemon_next_time_of_day(day + 80000, 7200), day + 86400 + 7200);
    /* midnight itself */
    assert_int_equal(daemon_next_time_of_day(day - 1, 0), day);
    assert_int_equal(daemon_next_time_of_day(day, 0), day + 86400);
    /* late in the day */
    assert_int_equal(daemon_next_time_of_day(day + 86398, 86399), day + 86399);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_next),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
