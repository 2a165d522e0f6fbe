/*
 * The CPU executor stopped mid-pipeline (issue 14): a wall-time budget
 * (cpu_exec_job_t.deadline_ms) and a cancel flag another thread sets
 * (cpu_exec_job_t.cancel). A graph that takes seconds stops within a fraction
 * of a second of either, with CPU_EXEC_TIMEOUT / CPU_EXEC_CANCELLED and no
 * output, on the libvips path (a lazy pipeline killed while it encodes) and
 * on the executor's own C loops (ComfyUI's resamplers, the large-radius blur).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_exec.h"
#include "now.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A 2000×2000 noise photo, scaled ×2.5 (5000×5000, 25 MP) and blurred, then
 * encoded as PNG: several seconds on one core. `method` picks the path:
 * lanczos is libvips (lazy, killed while encoding), bicubic is the C loop. */
static cJSON *slow_graph(const char *method)
{
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
             "\"2\":{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"1\",0],"
             "\"upscale_method\":\"%s\",\"scale_by\":2.5}},"
             "\"3\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":[\"2\",0],"
             "\"blur_radius\":31,\"sigma\":8}},"
             "\"4\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"3\",0],"
             "\"format\":\"png\"}}}",
             method);
    cJSON *g = cJSON_Parse(json);
    assert_non_null(g);
    return g;
}

static VipsImage *noise(int w, int h)
{
    VipsImage *n = NULL;
    VipsImage *f = NULL;
    VipsImage *bands[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vips_gaussnoise(&bands[i], w, h, "mean", 0.5, "sigma", 0.2, NULL), 0);
    }
    assert_int_equal(vips_bandjoin(bands, &n, 3, NULL), 0);
    assert_int_equal(vips_cast(n, &f, VIPS_FORMAT_FLOAT, NULL), 0);
    VipsImage *mem = vips_image_copy_memory(f);
    assert_non_null(mem);
    for (int i = 0; i < 3; i++) {
        g_object_unref(bands[i]);
    }
    g_object_unref(n);
    g_object_unref(f);
    return mem;
}

typedef struct {
    atomic_int *flag;
    int after_ms;
} canceller_t;

static void *cancel_later(void *arg)
{
    canceller_t *c = arg;
    struct timespec ts = {c->after_ms / 1000, (long)(c->after_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(c->flag, 1);
    return NULL;
}

/* Runs the slow graph with a deadline `deadline_in_ms` from now (0: none) and
 * a cancel set `cancel_after_ms` from now (0: never); returns the status and
 * the elapsed ms in *ms. */
static cpu_exec_status_t run_slow(const char *method, int deadline_in_ms, int cancel_after_ms,
                                  long *ms, char *err, size_t errlen)
{
    VipsImage *in = noise(2000, 2000);
    cJSON *graph = slow_graph(method);
    atomic_int flag = 0;
    cpu_exec_job_t job = {.input_image = in, .cancel = &flag};
    int64_t t0 = now_mono_ms();
    if (deadline_in_ms > 0) {
        job.deadline_ms = t0 + deadline_in_ms;
    }
    pthread_t tid;
    canceller_t cc = {&flag, cancel_after_ms};
    if (cancel_after_ms > 0) {
        assert_int_equal(pthread_create(&tid, NULL, cancel_later, &cc), 0);
    }
    cpu_exec_status_t st = cpu_exec_run(graph, &job, err, errlen);
    *ms = (long)(now_mono_ms() - t0);
    if (cancel_after_ms > 0) {
        pthread_join(tid, NULL);
    }
    if (st != CPU_EXEC_OK) {
        assert_null(job.output);
        assert_int_equal(job.output_len, 0);
    }
    cpu_exec_job_free(&job);
    cJSON_Delete(graph);
    g_object_unref(in);
    return st;
}

/* The slow graph really is slow (else the stops below prove nothing): with
 * a 1.5 s budget it is still running at the deadline. */
static void test_slow_graph_is_slow(void **state)
{
    (void)state;
    char err[256];
    long ms = 0;
    cpu_exec_status_t st = run_slow("lanczos", 1500, 0, &ms, err, sizeof(err));
    print_message("lanczos graph with a 1.5 s budget: status %d after %ld ms (%s)\n", st, ms, err);
    assert_int_equal(st, CPU_EXEC_TIMEOUT);
    assert_true(ms >= 1500);
}

static void test_deadline_stops_libvips_pipeline(void **state)
{
    (void)state;
    char err[256];
    long ms = 0;
    cpu_exec_status_t st = run_slow("lanczos", 300, 0, &ms, err, sizeof(err));
    print_message("lanczos graph, 300 ms budget: stopped after %ld ms (%s)\n", ms, err);
    assert_int_equal(st, CPU_EXEC_TIMEOUT);
    assert_non_null(strstr(err, "time budget"));
    assert_true(ms < 1300);
}

static void test_cancel_stops_libvips_pipeline(void **state)
{
    (void)state;
    char err[256];
    long ms = 0;
    cpu_exec_status_t st = run_slow("lanczos", 0, 400, &ms, err, sizeof(err));
    print_message("lanczos graph cancelled at 400 ms: stopped after %ld ms (%s)\n", ms, err);
    assert_int_equal(st, CPU_EXEC_CANCELLED);
    assert_non_null(strstr(err, "cancelled"));
    assert_true(ms < 1400);
}

static void test_stops_c_loops(void **state)
{
    (void)state;
    char err[256];
    long ms = 0;
    /* bicubic: ComfyUI's resampler in C on the packed buffer, then the
     * 31-radius blur (C as well on a float buffer) */
    cpu_exec_status_t st = run_slow("bicubic", 0, 400, &ms, err, sizeof(err));
    print_message("bicubic graph cancelled at 400 ms: stopped after %ld ms (%s)\n", ms, err);
    assert_int_equal(st, CPU_EXEC_CANCELLED);
    assert_true(ms < 1400);
    st = run_slow("bicubic", 300, 0, &ms, err, sizeof(err));
    print_message("bicubic graph, 300 ms budget: stopped after %ld ms (%s)\n", ms, err);
    assert_int_equal(st, CPU_EXEC_TIMEOUT);
    assert_true(ms < 1300);
}

/* A quick graph with a generous budget and a flag never set completes. */
static void test_budget_not_hit(void **state)
{
    (void)state;
    VipsImage *in = noise(64, 48);
    cJSON *graph = slow_graph("lanczos");
    atomic_int flag = 0;
    cpu_exec_job_t job = {.input_image = in, .cancel = &flag, .deadline_ms = now_mono_ms() + 60000};
    char err[256];
    assert_int_equal(cpu_exec_run(graph, &job, err, sizeof(err)), CPU_EXEC_OK);
    assert_non_null(job.output);
    assert_int_equal(job.out_width, 160);
    cpu_exec_job_free(&job);
    cJSON_Delete(graph);
    g_object_unref(in);
}

int main(void)
{
    if (cpu_exec_init("test_cpu_exec_stop") != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_not_hit),
        cmocka_unit_test(test_slow_graph_is_slow),
        cmocka_unit_test(test_deadline_stops_libvips_pipeline),
        cmocka_unit_test(test_cancel_stops_libvips_pipeline),
        cmocka_unit_test(test_stops_c_loops),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cpu_exec_shutdown();
    return rc;
}
