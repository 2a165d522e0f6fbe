/*
 * The small common/ modules every service shares: now (clocks), backoff (the
 * one retry-delay policy), errbuf (one-line error messages), uuid (the id
 * check) and stopwait (a sleep that a stop cuts short).
 */
#include "backoff.h"
#include "errbuf.h"
#include "now.h"
#include "stopwait.h"
#include "uuid.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static void test_now_clocks_agree_with_the_system(void **state)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t ours = now_wall_ms();
    assert_true(ours >= wall && ours - wall < 1000);

    int64_t m1 = now_mono_ms();
    int64_t u1 = now_mono_us();
    assert_true(u1 / 1000 >= m1 && u1 / 1000 - m1 < 1000);
    struct timespec nap = {0, 20 * 1000000L};
    nanosleep(&nap, NULL);
    assert_true(now_mono_ms() - m1 >= 20);
    assert_true(now_mono_us() - u1 >= 20000);
}

static void test_backoff_cap_doubles_to_the_maximum(void **state)
{
    assert_int_equal(backoff_cap_ms(1, 100, 1000), 100);
    assert_int_equal(backoff_cap_ms(2, 100, 1000), 200);
    assert_int_equal(backoff_cap_ms(4, 100, 1000), 800);
    assert_int_equal(backoff_cap_ms(5, 100, 1000), 1000);
    assert_int_equal(backoff_cap_ms(500, 100, 1000), 1000);
    assert_int_equal(backoff_cap_ms(0, 100, 1000), 100); /* n < 1 is the first retry */
    assert_int_equal(backoff_cap_ms(-3, 100, 1000), 100);
    assert_int_equal(backoff_cap_ms(3, 100, 50), 100); /* max below base: base */
    assert_int_equal(backoff_cap_ms(3, 0, 1000), 4);   /* base <= 0 counts as 1 */
    assert_int_equal(backoff_cap_ms(80, INT64_MAX / 4, INT64_MAX), INT64_MAX); /* no overflow */
}

static void test_backoff_delay_is_equal_jitter(void **state)
{
    /* Every delay in [cap/2, cap]; both halves of the range are used. */
    for (int n = 1; n <= 8; n++) {
        int64_t cap = backoff_cap_ms(n, 100, 5000);
        int64_t lo = INT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            int64_t d = backoff_delay_ms(n, 100, 5000);
            assert_true(d >= cap / 2);
            assert_true(d <= cap);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_true(lo < cap / 2 + cap / 8);
        assert_true(hi > cap - cap / 8);
    }
    assert_true(backoff_delay_ms(1, 1, 1) <= 1); /* cap 1: half 0 plus 0 or 1 */
}

static void test_backoff_random_stays_in_bounds(void **state)
{
    int seen[5] = {0};
    for (int i = 0; i < 1000; i++) {
        uint64_t r = backoff_random(4);
        assert_true(r <= 4);
        seen[r]++;
    }
    for (int i = 0; i < 5; i++) {
        assert_true(seen[i] > 100);
    }
    assert_int_equal(backoff_random(0), 0);
}

static void test_errbuf_makes_one_line(void **state)
{
    char err[32];
    errbuf_set(err, sizeof(err), "connect: %s\n", "refused");
    assert_string_equal(err, "connect: refused");
    errbuf_set(err, sizeof(err), "a\nb\tc\r\n  ");
    assert_string_equal(err, "a b c");
    errbuf_set(err, 8, "%s", "truncated message");
    assert_string_equal(err, "truncat");
    errbuf_set(NULL, 10, "ignored %d", 1);
    err[0] = 'x';
    errbuf_set(err, 0, "ignored");
    assert_int_equal(err[0], 'x');
}

static void test_uuid_check(void **state)
{
    assert_true(uuid_is_valid("123e4567-e89b-12d3-a456-426614174000"));
    assert_true(uuid_is_valid("123E4567-E89B-12D3-A456-426614174000"));
    assert_false(uuid_is_valid(NULL));
    assert_false(uuid_is_valid(""));
    assert_false(uuid_is_valid("123e4567-e89b-12d3-a456-42661417400"));   /* short */
    assert_false(uuid_is_valid("123e4567-e89b-12d3-a456-4266141740000")); /* long */
    assert_false(uuid_is_valid("123e4567e89b12d3a456426614174000"));      /* no dashes */
    assert_false(uuid_is_valid("{23e4567-e89b-12d3-a456-426614174000"));
    assert_false(uuid_is_valid("123e4567-e89b-12d3-a456-42661417400g"));
    assert_false(uuid_is_valid("123e4567-e89b-12d3-a456_426614174000"));
    assert_false(uuid_is_valid("123e4567-e89b-12d3-a456-4266141740'0"));
}

typedef struct {
    stopwait_t *sw;
    int64_t ms;
    bool stopped;
    int64_t took_ms;
} sleeper_t;

static void *sleeper(void *arg)
{
    sleeper_t *s = arg;
    int64_t t0 = now_mono_ms();
    s->stopped = stopwait_sleep(s->sw, s->ms);
    s->took_ms = now_mono_ms() - t0;
    return NULL;
}

static void test_stopwait_sleeps_and_times_out(void **state)
{
    stopwait_t sw;
    stopwait_init(&sw);
    int64_t t0 = now_mono_ms();
    assert_false(stopwait_sleep(&sw, 30));
    assert_true(now_mono_ms() - t0 >= 30);
    assert_false(stopwait_sleep(&sw, 0));
    assert_false(stopwait_stopped(&sw));
    stopwait_destroy(&sw);
}

static void test_stopwait_stop_wakes_every_sleeper(void **state)
{
    stopwait_t sw;
    stopwait_init(&sw);
    sleeper_t s[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        s[i] = (sleeper_t){.sw = &sw, .ms = 60000};
        assert_int_equal(pthread_create(&th[i], NULL, sleeper, &s[i]), 0);
    }
    struct timespec nap = {0, 50 * 1000000L};
    nanosleep(&nap, NULL);
    stopwait_stop(&sw);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_true(s[i].stopped);
        assert_true(s[i].took_ms < 60000); /* did not sleep out the minute */
    }
    assert_true(stopwait_stopped(&sw));
    assert_true(stopwait_sleep(&sw, 60000)); /* at once once stopped */
    stopwait_destroy(&sw);
}

static void test_stopwait_nudge_wakes_without_stopping(void **state)
{
    stopwait_t sw;
    stopwait_init(&sw);
    sleeper_t s = {.sw = &sw, .ms = 60000};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sleeper, &s), 0);
    /* A nudge sent before the thread sleeps is not seen: nudge for a while. */
    for (int i = 0; i < 50; i++) {
        struct timespec nap = {0, 10 * 1000000L};
        nanosleep(&nap, NULL);
        stopwait_nudge(&sw);
    }
    pthread_join(th, NULL);
    assert_false(s.stopped);
    assert_true(s.took_ms < 60000);
    assert_false(stopwait_stopped(&sw));
    stopwait_destroy(&sw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_now_clocks_agree_with_the_system),
        cmocka_unit_test(test_backoff_cap_doubles_to_the_maximum),
        cmocka_unit_test(test_backoff_delay_is_equal_jitter),
        cmocka_unit_test(test_backoff_random_stays_in_bounds),
        cmocka_unit_test(test_errbuf_makes_one_line),
        cmocka_unit_test(test_uuid_check),
        cmocka_unit_test(test_stopwait_sleeps_and_times_out),
        cmocka_unit_test(test_stopwait_stop_wakes_every_sleeper),
        cmocka_unit_test(test_stopwait_nudge_wakes_without_stopping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
