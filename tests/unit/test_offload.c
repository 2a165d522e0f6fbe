/*
 * common/offload: work runs off the loop thread, done runs on it, every item
 * exactly once, in parallel up to nthreads, and offload_free finishes what
 * is queued.
 */
#include "offload.h"

#include <event2/event.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct {
    pthread_t loop_thread;
    struct event_base *base;
    int work_runs;
    int done_runs;
    int done_on_loop;
    int work_off_loop;
    int expected;
    pthread_mutex_t lock;
    int concurrent;
    int max_concurrent;
    int sleep_ms;
} shared_t;

typedef struct {
    shared_t *s;
    int value;
    int result;
} job_t;

static void work(void *arg)
{
    job_t *j = arg;
    shared_t *s = j->s;
    pthread_mutex_lock(&s->lock);
    s->work_runs++;
    if (!pthread_equal(pthread_self(), s->loop_thread)) {
        s->work_off_loop++;
    }
    s->concurrent++;
    if (s->concurrent > s->max_concurrent) {
        s->max_concurrent = s->concurrent;
    }
    pthread_mutex_unlock(&s->lock);
    if (s->sleep_ms > 0) {
        usleep((useconds_t)s->sleep_ms * 1000);
    }
    j->result = j->value * 2;
    pthread_mutex_lock(&s->lock);
    s->concurrent--;
    pthread_mutex_unlock(&s->lock);
}

static void done(void *arg)
{
    job_t *j = arg;
    shared_t *s = j->s;
    assert_int_equal(j->result, j->value * 2);
    s->done_runs++;
    if (pthread_equal(pthread_self(), s->loop_thread)) {
        s->done_on_loop++;
    }
    if (s->done_runs == s->expected) {
        event_base_loopbreak(s->base);
    }
    free(j);
}

static void init_shared(shared_t *s, int expected, int sleep_ms)
{
    memset(s, 0, sizeof(*s));
    s->loop_thread = pthread_self();
    s->base = event_base_new();
    assert_non_null(s->base);
    s->expected = expected;
    s->sleep_ms = sleep_ms;
    pthread_mutex_init(&s->lock, NULL);
}

static void run_many(int nthreads, int nitems, int sleep_ms, shared_t *s)
{
    init_shared(s, nitems, sleep_ms);
    offload_t *pool = offload_new(s->base, nthreads);
    assert_non_null(pool);
    for (int i = 0; i < nitems; i++) {
        job_t *j = calloc(1, sizeof(*j));
        assert_non_null(j);
        j->s = s;
        j->value = i;
        assert_int_equal(offload_run(pool, work, done, j), 0);
    }
    struct timeval limit = {10, 0};
    event_base_loopexit(s->base, &limit);
    event_base_dispatch(s->base);
    assert_int_equal(offload_pending(pool), 0);
    offload_free(pool);
    event_base_free(s->base);
    pthread_mutex_destroy(&s->lock);
}

static void test_every_item_once_done_on_loop(void **state)
{
    (void)state;
    shared_t s;
    run_many(3, 500, 0, &s);
    assert_int_equal(s.work_runs, 500);
    assert_int_equal(s.work_off_loop, 500);
    assert_int_equal(s.done_runs, 500);
    assert_int_equal(s.done_on_loop, 500);
}

static void test_runs_in_parallel(void **state)
{
    (void)state;
    shared_t s;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run_many(4, 8, 100, &s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_int_equal(s.done_runs, 8);
    assert_int_equal(s.max_concurrent, 4);
    /* 8 items of 100 ms on 4 threads: about 200 ms, far below the serial 800. */
    assert_true(secs < 0.6);
}

static void test_one_thread_is_serial(void **state)
{
    (void)state;
    shared_t s;
    run_many(1, 5, 20, &s);
    assert_int_equal(s.max_concurrent, 1);
    assert_int_equal(s.done_runs, 5);
}

static void test_free_finishes_queued_work(void **state)
{
    (void)state;
    shared_t s;
    init_shared(&s, -1, 10);
    offload_t *pool = offload_new(s.base, 2);
    assert_non_null(pool);
    for (int i = 0; i < 10; i++) {
        job_t *j = calloc(1, sizeof(*j));
        j->s = &s;
        j->value = i;
        assert_int_equal(offload_run(pool, work, done, j), 0);
    }
    assert_true(offload_pending(pool) > 0);
    /* The loop never runs: offload_free runs the done callbacks itself. */
    offload_free(pool);
    assert_int_equal(s.work_runs, 10);
    assert_int_equal(s.done_runs, 10);
    assert_int_equal(s.done_on_loop, 10);
    event_base_free(s.base);
    pthread_mutex_destroy(&s.lock);
}

static void count_work(void *arg)
{
    int *n = arg;
    __atomic_add_fetch(n, 1, __ATOMIC_SEQ_CST);
}

static void test_done_may_be_null(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    offload_t *pool = offload_new(base, 2);
    int n = 0;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(offload_run(pool, count_work, NULL, &n), 0);
    }
    offload_free(pool);
    assert_int_equal(n, 20);
    event_base_free(base);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_null(offload_new(NULL, 2));
    assert_null(offload_new(base, 0));
    assert_null(offload_new(base, 65));
    offload_t *pool = offload_new(base, 1);
    assert_int_equal(offload_run(pool, NULL, NULL, NULL), -1);
    assert_int_equal(offload_run(NULL, count_work, NULL, NULL), -1);
    assert_int_equal(offload_pending(NULL), 0);
    offload_free(pool);
    offload_free(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_item_once_done_on_loop),
        cmocka_unit_test(test_runs_in_parallel),
        cmocka_unit_test(test_one_thread_is_serial),
        cmocka_unit_test(test_free_finishes_queued_work),
        cmocka_unit_test(test_done_may_be_null),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
