/*
 * preview.c without Redis (issue 16): preview_render (the preview lane's
 * render: the source shrunk to the preview size, the graph run on it, the
 * output shrunk the same way) and thumbs_make (a completed job's 256 px
 * pair), on the bundled sample and on a 12 MP JPEG; and what a thumbnail
 * pair adds to a job on that 12 MP photo (printed, not asserted: the
 * machine is shared).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_exec.h"
#include "now.h"
#include "preview.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INVERT_GRAPH                                                                               \
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x.png\"}},"                      \
    "\"2\":{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"1\",0]}},"                     \
    "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0],"                        \
    "\"filename_prefix\":\"p\"}}}"

typedef struct {
    int w, h;
    double mean;
} img_t;

static img_t jpeg_info(const void *buf, size_t len)
{
    img_t r = {0};
    VipsImage *im = NULL;
    assert_int_equal(vips_jpegload_buffer((void *)buf, len, &im, "fail", TRUE, NULL), 0);
    r.w = vips_image_get_width(im);
    r.h = vips_image_get_height(im);
    assert_int_equal(vips_avg(im, &r.mean, NULL), 0);
    g_object_unref(im);
    return r;
}

/* tests/fixtures/astronaut.png scaled to w×h, as a JPEG (g_free). */
static void *photo(int w, int h, size_t *len)
{
    VipsImage *in = NULL, *out = NULL;
    assert_int_equal(vips_pngload("tests/fixtures/astronaut.png", &in, NULL), 0);
    assert_int_equal(vips_resize(in, &out, (double)w / vips_image_get_width(in), "vscale",
                                 (double)h / vips_image_get_height(in), NULL),
                     0);
    void *buf = NULL;
    assert_int_equal(vips_jpegsave_buffer(out, &buf, len, "Q", 90, NULL), 0);
    g_object_unref(in);
    g_object_unref(out);
    return buf;
}

static int setup(void **state)
{
    (void)state;
    return cpu_exec_init("test_cpu_exec_preview");
}

static int teardown(void **state)
{
    (void)state;
    cpu_exec_shutdown();
    return 0;
}

static void test_sample_is_a_jpeg(void **state)
{
    (void)state;
    size_t len = 0;
    const unsigned char *s = preview_sample(&len);
    assert_true(len > 10000);
    img_t i = jpeg_info(s, len);
    assert_int_equal(i.w, 512);
    assert_int_equal(i.h, 512);
}

static void test_render_shrinks_then_runs(void **state)
{
    (void)state;
    cJSON *g = cJSON_Parse(INVERT_GRAPH);
    size_t len = 0;
    void *big = photo(4000, 3000, &len);
    preview_pair_t p = {0};
    preview_err_t e = {0};
    int64_t t0 = now_mono_us();
    assert_int_equal(preview_render(big, len, 0, g, PREVIEW_EDGE, &p, &e), 0);
    print_message("preview of a 12 MP JPEG: %.1f ms\n", (double)(now_mono_us() - t0) / 1000.0);
    img_t b = jpeg_info(p.before, p.before_len);
    img_t a = jpeg_info(p.after, p.after_len);
    assert_int_equal(b.w, 768);
    assert_int_equal(b.h, 576);
    assert_int_equal(a.w, 768);
    assert_int_equal(a.h, 576);
    assert_int_equal(p.width, 768);
    assert_int_equal(p.height, 576);
    assert_true(a.mean > 255.0 - b.mean - 4.0 && a.mean < 255.0 - b.mean + 4.0);
    preview_pair_free(&p);
    g_free(big);
    cJSON_Delete(g);
}

static void test_render_errors(void **state)
{
    (void)state;
    size_t len = 0;
    const unsigned char *s = preview_sample(&len);
    preview_pair_t p = {0};
    /* an invalid graph: processing_error with the validator's node errors */
    cJSON *bad = cJSON_Parse("{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                             "\"2\":{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"9\","
                             "0]}},\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":["
                             "\"2\",0],\"filename_prefix\":\"p\"}}}");
    preview_err_t e = {0};
    assert_int_equal(preview_render(s, len, 0, bad, PREVIEW_EDGE, &p, &e), -1);
    assert_string_equal(e.code, "processing_error");
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(e.details, "node_errors"), "2"));
    cJSON_Delete(e.details);
    cJSON_Delete(bad);
    /* a class only ComfyUI has */
    cJSON *comfy = cJSON_Parse("{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                               "\"2\":{\"class_type\":\"KSampler\",\"inputs\":{}}}");
    memset(&e, 0, sizeof(e));
    assert_int_equal(preview_render(s, len, 0, comfy, PREVIEW_EDGE, &p, &e), -1);
    assert_string_equal(e.code, "comfyui_unavailable");
    cJSON_Delete(comfy);
    /* not an image; over the pixel limit */
    cJSON *g = cJSON_Parse(INVERT_GRAPH);
    memset(&e, 0, sizeof(e));
    assert_int_equal(preview_render("hello, world", 12, 0, g, PREVIEW_EDGE, &p, &e), -1);
    assert_string_equal(e.code, "unsupported_image");
    memset(&e, 0, sizeof(e));
    assert_int_equal(preview_render(s, len, 1000, g, PREVIEW_EDGE, &p, &e), -1);
    assert_string_equal(e.code, "image_too_large");
    assert_null(p.before);
    assert_null(p.after);
    cJSON_Delete(g);
}

/* A JPEG that asks to be rotated (EXIF orientation 6: 90° clockwise) is
 * shown upright; a CMYK JPEG becomes RGB. */
static void test_orientation_and_cmyk(void **state)
{
    (void)state;
    size_t len = 0;
    void *land = photo(400, 300, &len);
    VipsImage *im = NULL, *copy = NULL;
    assert_int_equal(vips_jpegload_buffer(land, len, &im, NULL), 0);
    assert_int_equal(vips_copy(im, &copy, NULL), 0);
    vips_image_set_int(copy, VIPS_META_ORIENTATION, 6);
    void *rot = NULL;
    size_t rlen = 0;
    assert_int_equal(vips_jpegsave_buffer(copy, &rot, &rlen, NULL), 0);
    g_object_unref(copy);
    preview_pair_t p = {0};
    assert_int_equal(thumbs_make(rot, rlen, rot, rlen, 0, &p), 0);
    img_t b = jpeg_info(p.before, p.before_len);
    assert_int_equal(b.w, 192);
    assert_int_equal(b.h, 256);
    preview_pair_free(&p);
    g_free(rot);

    VipsImage *cmyk = NULL;
    assert_int_equal(vips_colourspace(im, &cmyk, VIPS_INTERPRETATION_CMYK, NULL), 0);
    void *cbuf = NULL;
    size_t clen = 0;
    assert_int_equal(vips_jpegsave_buffer(cmyk, &cbuf, &clen, NULL), 0);
    g_object_unref(cmyk);
    assert_int_equal(thumbs_make(cbuf, clen, cbuf, clen, 0, &p), 0);
    VipsImage *t = NULL;
    assert_int_equal(vips_jpegload_buffer(p.before, p.before_len, &t, NULL), 0);
    assert_int_equal(vips_image_get_bands(t), 3);
    assert_int_equal(vips_image_get_width(t), 256);
    g_object_unref(t);
    preview_pair_free(&p);
    g_free(cbuf);
    g_object_unref(im);
    g_free(land);
}

/* What the thumbnails add to a job on a 12 MP JPEG (its original and an
 * output of the same size are in memory already). */
static void test_thumbs_of_12mp(void **state)
{
    (void)state;
    size_t olen = 0, xlen = 0;
    void *orig = photo(4000, 3000, &olen);
    void *out = photo(4000, 3000, &xlen);
    preview_pair_t p = {0};
    assert_int_equal(thumbs_make(orig, olen, out, xlen, 0, &p), 0);
    img_t b = jpeg_info(p.before, p.before_len);
    img_t a = jpeg_info(p.after, p.after_len);
    assert_int_equal(b.w, 256);
    assert_int_equal(b.h, 192);
    assert_int_equal(a.w, 256);
    assert_int_equal(a.h, 192);
    print_message("thumbnail pair sizes: %zu + %zu bytes\n", p.before_len, p.after_len);
    preview_pair_free(&p);
    const int n = 10;
    int64_t t0 = now_mono_us();
    for (int i = 0; i < n; i++) {
        assert_int_equal(thumbs_make(orig, olen, out, xlen, 0, &p), 0);
        preview_pair_free(&p);
    }
    print_message("thumbnails of a 12 MP JPEG job: %.1f ms per job (mean of %d)\n",
                  (double)(now_mono_us() - t0) / 1000.0 / n, n);
    /* on a thread of its own (the job overlaps it with the upload) */
    thumbs_task_t *task = thumbs_start(orig, olen, out, xlen, 0);
    assert_non_null(task);
    assert_int_equal(thumbs_finish(task, &p), 0);
    assert_int_equal(jpeg_info(p.after, p.after_len).w, 256);
    preview_pair_free(&p);
    task = thumbs_start(orig, olen, "nope", 4, 0);
    assert_int_equal(thumbs_finish(task, &p), -1);
    assert_null(p.before);
    /* an output that is not an image: no thumbnails, nothing kept */
    assert_int_equal(thumbs_make(orig, olen, "nope", 4, 0, &p), -1);
    assert_null(p.before);
    g_free(orig);
    g_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_is_a_jpeg), cmocka_unit_test(test_render_shrinks_then_runs),
        cmocka_unit_test(test_render_errors),    cmocka_unit_test(test_orientation_and_cmyk),
        cmocka_unit_test(test_thumbs_of_12mp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
