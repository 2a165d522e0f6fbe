/* Unit tests for common/metrics.c: exact exposition text, escaping, the
 * cardinality cap and concurrent updates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static int teardown(void **state)
{
    metrics_shutdown();
    return 0;
}

static void assert_render(const char *expected)
{
    char *text = metrics_render();
    assert_non_null(text);
    assert_string_equal(text, expected);
    free(text);
}

static void test_exact_text(void **state)
{
    metric_t *jobs = metrics_counter("t_jobs_total", "Jobs finished", "status");
    metric_t *depth = metrics_gauge("t_queue_depth", "Queue depth", NULL);
    const double buckets[] = {0.1, 0.5};
    metric_t *latency = metrics_histogram("t_latency_seconds", "Latency", "route", buckets, 2);
    assert_non_null(jobs);
    assert_non_null(depth);
    assert_non_null(latency);

    metric_add(jobs, 1, "ok");
    metric_add(jobs, 2, "ok");
    metric_add(jobs, 1, "failed");
    metric_add(jobs, -5, "ok"); /* counters never go down */
    metric_set(depth, 7);
    metric_observe(latency, 0.05, "/a");
    metric_observe(latency, 0.1, "/a"); /* le is inclusive */
    metric_observe(latency, 0.3, "/a");
    metric_observe(latency, 2, "/a");

    assert_render("# HELP t_jobs_total Jobs finished\n"
                  "# TYPE t_jobs_total counter\n"
                  "t_jobs_total{status=\"ok\"} 3\n"
                  "t_jobs_total{status=\"failed\"} 1\n"
                  "# HELP t_queue_depth Queue depth\n"
                  "# TYPE t_queue_depth gauge\n"
                  "t_queue_depth 7\n"
                  "# HELP t_latency_seconds Latency\n"
                  "# TYPE t_latency_seconds histogram\n"
                  "t_latency_seconds_bucket{route=\"/a\",le=\"0.1\"} 2\n"
                  "t_latency_seconds_bucket{route=\"/a\",le=\"0.5\"} 3\n"
                  "t_latency_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n"
                  "t_latency_seconds_sum{route=\"/a\"} 2.45\n"
                  "t_latency_seconds_count{route=\"/a\"} 4\n");
}

static void test_unlabeled_start_at_zero_and_gauge_ops(void **state)
{
    metric_t *up = metrics_counter("t_up_total", "Starts", "");
    metric_t *temp = metrics_gauge("t_temp", "Temperature", "room");
    const double buckets[] = {1};
    metric_t *size = metrics_histogram("t_size", "Size", NULL, buckets, 1);
    assert_non_null(up);
    assert_non_null(temp);
    assert_non_null(size);
    metric_add(temp, 1.5, "a");
    metric_add(temp, -2, "a"); /* gauges go both ways */
    metric_set(temp, 0.1, "b");
    metric_set(up, 100);   /* set is for gauges only: ignored */
    metric_observe(up, 1); /* observe is for histograms only: ignored */
    metric_add(size, 1);   /* add is not for histograms: ignored */

    assert_render("# HELP t_up_total Starts\n"
                  "# TYPE t_up_total counter\n"
                  "t_up_total 0\n"
                  "# HELP t_temp Temperature\n"
                  "# TYPE t_temp gauge\n"
                  "t_temp{room=\"a\"} -0.5\n"
                  "t_temp{room=\"b\"} 0.1\n"
                  "# HELP t_size Size\n"
                  "# TYPE t_size histogram\n"
                  "t_size_bucket{le=\"1\"} 0\n"
                  "t_size_bucket{le=\"+Inf\"} 0\n"
                  "t_size_sum 0\n"
                  "t_size_count 0\n");
}

static void test_escaping(void **state)
{
    metric_t *m = metrics_counter("t_esc_total", "Help with \\ and\nnewline \"kept\"", "a,b");
    assert_non_null(m);
    metric_add(m, 1, "back\\slash \"quoted\"\nline", "");
    metric_add(m, 1, NULL, "plain"); /* NULL is an empty value */
    assert_render("# HELP t_esc_total Help with \\\\ and\\nnewline \"kept\"\n"
                  "# TYPE t_esc_total counter\n"
                  "t_esc_total{a=\"back\\\\slash \\\"quoted\\\"\\nline\",b=\"\"} 1\n"
                  "t_esc_total{a=\"\",b=\"plain\"} 1\n");
}

static void test_registration_rules(void **state)
{
    metric_t *a = metrics_counter("t_same_total", "x", "l");
    assert_non_null(a);
    assert_ptr_equal(metrics_counter("t_same_total", "x", "l"), a);
    assert_null(metrics_gauge("t_same_total", "x", "l")); /* other type */

    static const char *bad_names[] = {"", "1abc", "a-b", "a b", "é"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        assert_null(metrics_counter(bad_names[i], "x", NULL));
    }
    static const char *bad_labels[] = {"a,", ",a", "a,,b", "a-b", "__reserved", "a,a", "1x"};
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++) {
        assert_null(metrics_counter("t_bad_labels_total", "x", bad_labels[i]));
    }
    const double unsorted[] = {1, 0.5};
    const double infinite[] = {1, INFINITY};
    assert_null(metrics_histogram("t_h1", "x", NULL, unsorted, 2));
    assert_null(metrics_histogram("t_h2", "x", NULL, infinite, 2));
    assert_null(metrics_histogram("t_h3", "x", "le", NULL, 0));
    assert_non_null(metrics_counter("ns:t_colon_total", "x", "_ok,b2"));

    /* Updates on NULL metrics are harmless no-ops. */
    metric_add(NULL, 1);
    metric_set(NULL, 1);
    metric_observe(NULL, 1);
}

static void test_default_buckets_and_numbers(void **state)
{
    metric_t *h = metrics_histogram("t_lat", "x", NULL, NULL, 0);
    metric_t *g = metrics_gauge("t_num", "x", "k");
    assert_non_null(h);
    assert_non_null(g);
    metric_observe(h, 0.003);
    metric_observe(h, 20);
    metric_set(g, 1e-9, "tiny");
    metric_set(g, 123456789012.0, "big");
    metric_set(g, INFINITY, "inf");
    metric_set(g, -INFINITY, "ninf");
    metric_set(g, 1.0 / 3.0, "third");

    char *text = metrics_render();
    assert_non_null(text);
    assert_non_null(strstr(text, "t_lat_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(text, "t_lat_bucket{le=\"10\"} 1\n"));
    assert_non_null(strstr(text, "t_lat_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text, "t_lat_sum 20.003\n"));
    assert_non_null(strstr(text, "t_num{k=\"tiny\"} 1e-09\n"));
    assert_non_null(strstr(text, "t_num{k=\"big\"} 123456789012\n"));
    assert_non_null(strstr(text, "t_num{k=\"inf\"} +Inf\n"));
    assert_non_null(strstr(text, "t_num{k=\"ninf\"} -Inf\n"));
    /* Shortest text that reads back exactly. */
    assert_non_null(strstr(text, "t_num{k=\"third\"} 0.3333333333333333\n"));
    /* 11 default buckets + Inf */
    size_t buckets = 0;
    for (const char *p = text; (p = strstr(p, "t_lat_bucket")) != NULL; p++) {
        buckets++;
    }
    assert_int_equal(buckets, 12);
    free(text);
}

static void test_cardinality_cap(void **state)
{
    metric_t *m = metrics_counter("t_big_total", "x", "id");
    assert_non_null(m);
    char value[32];
    for (int i = 0; i < 1005; i++) {
        snprintf(value, sizeof(value), "v%d", i);
        metric_add(m, 1, value);
    }
    metric_add(m, 1, "v0"); /* existing series still update */
    char *text = metrics_render();
    assert_non_null(text);
    assert_non_null(strstr(text, "t_big_total{id=\"v0\"} 2\n"));
    assert_non_null(strstr(text, "t_big_total{id=\"v999\"} 1\n"));
    assert_null(strstr(text, "t_big_total{id=\"v1000\"}"));
    assert_non_null(strstr(text, "ca_metrics_dropped_total{metric=\"t_big_total\"} 5\n"));
    free(text);
}

#define THREADS 8
#define ADDS_PER_THREAD 20000

typedef struct {
    metric_t *counter;
    metric_t *histogram;
    int index;
} worker_arg_t;

static void *worker(void *arg)
{
    worker_arg_t *w = arg;
    char label[16];
    snprintf(label, sizeof(label), "t%d", w->index % 2);
    for (int i = 0; i < ADDS_PER_THREAD; i++) {
        metric_add(w->counter, 1, "all");
        metric_add(w->counter, 1, label);
        metric_observe(w->histogram, 0.5);
    }
    return NULL;
}

static void test_concurrent_adds(void **state)
{
    worker_arg_t args[THREADS];
    pthread_t threads[THREADS];
    metric_t *counter = metrics_counter("t_conc_total", "x", "who");
    const double buckets[] = {1};
    metric_t *histogram = metrics_histogram("t_conc_seconds", "x", NULL, buckets, 1);
    assert_non_null(counter);
    assert_non_null(histogram);
    for (int i = 0; i < THREADS; i++) {
        args[i].counter = counter;
        args[i].histogram = histogram;
        args[i].index = i;
        assert_int_equal(pthread_create(&threads[i], NULL, worker, &args[i]), 0);
    }
    /* Render while writers run: must not crash or tear. */
    for (int i = 0; i < 20; i++) {
        free(metrics_render());
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    char *text = metrics_render();
    assert_non_null(text);
    char expected[128];
    snprintf(expected, sizeof(expected), "t_conc_total{who=\"all\"} %d\n",
             THREADS * ADDS_PER_THREAD);
    assert_non_null(strstr(text, expected));
    snprintf(expected, sizeof(expected), "t_conc_total{who=\"t0\"} %d\n",
             THREADS / 2 * ADDS_PER_THREAD);
    assert_non_null(strstr(text, expected));
    snprintf(expected, sizeof(expected), "t_conc_seconds_count %d\n", THREADS * ADDS_PER_THREAD);
    assert_non_null(strstr(text, expected));
    snprintf(expected, sizeof(expected), "t_conc_seconds_sum %d\n", THREADS * ADDS_PER_THREAD / 2);
    assert_non_null(strstr(text, expected));
    free(text);
}

static void test_shutdown_empties_registry(void **state)
{
    assert_non_null(metrics_counter("t_gone_total", "x", NULL));
    metrics_shutdown();
    assert_render("");
    /* Usable again after shutdown. */
    metric_t *m = metrics_counter("t_gone_total", "x", NULL);
    metric_add(m, 2);
    assert_render("# HELP t_gone_total x\n# TYPE t_gone_total counter\nt_gone_total 2\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_exact_text, teardown),
        cmocka_unit_test_teardown(test_unlabeled_start_at_zero_and_gauge_ops, teardown),
        cmocka_unit_test_teardown(test_escaping, teardown),
        cmocka_unit_test_teardown(test_registration_rules, teardown),
        cmocka_unit_test_teardown(test_default_buckets_and_numbers, teardown),
        cmocka_unit_test_teardown(test_cardinality_cap, teardown),
        cmocka_unit_test_teardown(test_concurrent_adds, teardown),
        cmocka_unit_test_teardown(test_shutdown_empties_registry, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
