/*
 * Unit tests for services/job-worker/cpu_exec: ComfyUI node semantics checked
 * against values computed here from the reference formulas on tiny synthetic
 * images, plus the presets on real photos (scikit-image's sample photos, checked
 * in under tests/fixtures; run from the repository's root, as tests/run does).
 *
 * The reference code here (blur_ref, the blend modes, chain_ref) is written
 * again from ComfyUI's source on purpose, not shared with the executor: a test
 * that called the executor's arithmetic would agree with any mistake in it.
 *
 * Needs extra objects and libs (not only libcommon.a): the executor's
 * (services/job-worker/cpu_*.c; the Makefile links every job-worker object but
 * main.c) and $(VIPS_LIBS). By hand:
 *   cc -std=gnu11 -Icommon -Iservices/job-worker $(pkg-config --cflags vips libcjson) \
 *      tests/unit/test_cpu_exec.c services/job-worker/cpu_*.c build/lib/libcommon.a \
 *      $(pkg-config --libs vips libcjson cmocka) -lm -o build/tests/unit/test_cpu_exec
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define W 5
#define H 4

/* LeakSanitizer: libx265 (used only here, to make the HEIC test input; the
 * worker never encodes HEIC) leaks ~1 KB per encode inside x265_malloc. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:x265_malloc\n";
}

static float g_px[W * H * 3];

static VipsImage *tiny(void)
{
    for (int i = 0; i < W * H * 3; i++) {
        g_px[i] = (float)((i * 37) % 101) / 100.0f;
    }
    return vips_image_new_from_memory_copy(g_px, sizeof(g_px), W, H, 3, VIPS_FORMAT_FLOAT);
}

/* Runs `node_json` (a node "2" reading ["1",0]) between LoadImage and SaveImage
 * on `in`; returns the result pixels (g_malloc'd) and its size. */
static float *run_node(VipsImage *in, const char *node_json, int *w, int *h, int *bands)
{
    char *text = NULL;
    assert_true(asprintf(&text,
                         "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                         "\"2\":%s,"
                         "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}",
                         node_json) > 0);
    cJSON *graph = cJSON_Parse(text);
    free(text);
    assert_non_null(graph);
    cpu_exec_job_t job = {.input_image = in, .keep_result = true};
    char err[512];
    cpu_exec_status_t st = cpu_exec_run(graph, &job, err, sizeof(err));
    if (st != CPU_EXEC_OK) {
        fail_msg("run failed: %s", err);
    }
    cJSON_Delete(graph);
    size_t size = 0;
    VipsImage *f = NULL;
    assert_int_equal(vips_cast(job.result, &f, VIPS_FORMAT_FLOAT, NULL), 0);
    float *px = vips_image_write_to_memory(f, &size);
    *w = f->Xsize;
    *h = f->Ysize;
    *bands = f->Bands;
    g_object_unref(f);
    cpu_exec_job_free(&job);
    return px;
}

static int reflect101(int p, int n)
{
    if (p < 0) {
        return -p;
    }
    if (p >= n) {
        return 2 * (n - 1) - p;
    }
    return p;
}

/* The 2-D kernel of the reference: G[i][j] = exp(-(x_i²+y_j²)/2σ²) / sum. */
static void blur_ref(const float *src, float *dst, int r, double sigma)
{
    int k = 2 * r + 1;
    double G[63][63];
    double sum = 0;
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < k; j++) {
            double x = -1.0 + 2.0 * i / (k - 1);
            double y = -1.0 + 2.0 * j / (k - 1);
            G[i][j] = exp(-(x * x + y * y) / (2 * sigma * sigma));
            sum += G[i][j];
        }
    }
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int i = 0; i < k; i++) {
                    for (int j = 0; j < k; j++) {
                        int yy = reflect101(y + i - r, H);
                        int xx = reflect101(x + j - r, W);
                        acc += G[i][j] / sum * src[(yy * W + xx) * 3 + c];
                    }
                }
                dst[(y * W + x) * 3 + c] = (float)acc;
            }
        }
    }
}

static void test_blur_and_sharpen(void **state)
{
    (void)state;
    VipsImage *in = tiny();
    int w, h, b;
    float ref[W * H * 3];
    /* The reference's own kernel value: centre .20418 for r=1, σ=1. */
    double e0 = exp(0), e1 = exp(-0.5), e2 = exp(-1.0);
    double s = e0 + 4 * e1 + 4 * e2;
    assert_true(fabs(e0 / s - 0.20418) < 1e-5);
    assert_true(fabs(e2 / s - 0.07511) < 1e-5);
    const int radii[] = {1, 2, 3};
    const double sigmas[] = {1.0, 0.5, 2.5};
    for (int t = 0; t < 3; t++) {
        char node[256];
        snprintf(node, sizeof(node),
                 "{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":[\"1\",0],"
                 "\"blur_radius\":%d,\"sigma\":%g}}",
                 radii[t], sigmas[t]);
        float *px = run_node(in, node, &w, &h, &b);
        assert_int_equal(w, W);
        assert_int_equal(h, H);
        blur_ref(g_px, ref, radii[t], sigmas[t]);
        for (int i = 0; i < W * H * 3; i++) {
            if (fabsf(px[i] - ref[i]) > 1e-5f) {
                fail_msg("blur r=%d px %d: %f want %f", radii[t], i, px[i], ref[i]);
            }
        }
        g_free(px);
    }
    float *px = run_node(in,
                         "{\"class_type\":\"ImageSharpen\",\"inputs\":{\"image\":[\"1\",0],"
                         "\"sharpen_radius\":1,\"sigma\":1.0,\"alpha\":0.5}}",
                         &w, &h, &b);
    blur_ref(g_px, ref, 1, 1.0);
    for (int i = 0; i < W * H * 3; i++) {
        float want = g_px[i] + 5.0f * (g_px[i] - ref[i]);
        want = want < 0 ? 0 : (want > 1 ? 1 : want);
        assert_true(fabsf(px[i] - want) < 1e-5f);
    }
    g_free(px);
    g_object_unref(in);
}

/* ComfyUI's soft_light helper; the modes below are ComfyUI's blend_mode(),
 * written again from its source (not copied from cpu_comfy_nodes.c). */
static float soft_g(float a)
{
    return a <= 0.25f ? ((16 * a - 12) * a + 4) * a : sqrtf(a);
}

static void test_blend_modes(void **state)
{
    (void)state;
    VipsImage *a = tiny();
    /* image2 = the inverse of image1 (ImageInvert), so B(a, 1-a). */
    static const char *modes[] = {"normal",  "multiply",   "screen",
                                  "overlay", "soft_light", "difference"};
    for (int m = 0; m < 6; m++) {
        char *text = NULL;
        assert_true(
            asprintf(&text,
                     "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                     "\"4\":{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"1\",0]}},"
                     "\"2\":{\"class_type\":\"ImageBlend\",\"inputs\":{\"image1\":[\"1\",0],"
                     "\"image2\":[\"4\",0],\"blend_factor\":0.7,\"blend_mode\":\"%s\"}},"
                     "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}",
                     modes[m]) > 0);
        cJSON *graph = cJSON_Parse(text);
        free(text);
        cpu_exec_job_t job = {.input_image = a, .keep_result = true};
        char err[256];
        assert_int_equal(cpu_exec_run(graph, &job, err, sizeof(err)), CPU_EXEC_OK);
        size_t size;
        float *px = vips_image_write_to_memory(job.result, &size);
        for (int i = 0; i < W * H * 3; i++) {
            float x = g_px[i];
            float y = 1.0f - x;
            float bl = y;
            switch (m) {
            case 1:
                bl = x * y;
                break;
            case 2:
                bl = 1 - (1 - x) * (1 - y);
                break;
            case 3:
                bl = x <= 0.5f ? 2 * x * y : 1 - 2 * (1 - x) * (1 - y);
                break;
            case 4:
                bl = y <= 0.5f ? x - (1 - 2 * y) * x * (1 - x) : x + (2 * y - 1) * (soft_g(x) - x);
                break;
            case 5:
                bl = x - y;
                break;
            }
            float want = x * 0.3f + bl * 0.7f;
            want = want < 0 ? 0 : (want > 1 ? 1 : want);
            if (fabsf(px[i] - want) > 1e-5f) {
                fail_msg("%s px %d: %f want %f", modes[m], i, px[i], want);
            }
        }
        g_free(px);
        cpu_exec_job_free(&job);
        cJSON_Delete(graph);
    }
    g_object_unref(a);
}

static void test_geometry(void **state)
{
    (void)state;
    VipsImage *in = tiny();
    int w, h, b;
    /* ImageCrop overrunning the image is silently smaller. */
    float *px = run_node(in,
                         "{\"class_type\":\"ImageCrop\",\"inputs\":{\"image\":[\"1\",0],"
                         "\"width\":10,\"height\":2,\"x\":3,\"y\":1}}",
                         &w, &h, &b);
    assert_int_equal(w, 2);
    assert_int_equal(h, 2);
    assert_true(px[0] == g_px[(1 * W + 3) * 3]);
    g_free(px);
    /* "90 degrees" is clockwise: out(x, y) = in(y, H-1-x), size H×W. */
    px = run_node(in,
                  "{\"class_type\":\"ImageRotate\",\"inputs\":{\"image\":[\"1\",0],"
                  "\"rotation\":\"90 degrees\"}}",
                  &w, &h, &b);
    assert_int_equal(w, H);
    assert_int_equal(h, W);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            assert_true(px[(y * w + x) * 3] == g_px[((H - 1 - x) * W + y) * 3]);
        }
    }
    g_free(px);
    px = run_node(in,
                  "{\"class_type\":\"ImageFlip\",\"inputs\":{\"image\":[\"1\",0],"
                  "\"flip_method\":\"x-axis: vertically\"}}",
                  &w, &h, &b);
    assert_true(px[0] == g_px[(H - 1) * W * 3]);
    g_free(px);
    px = run_node(in, "{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"1\",0]}}", &w, &h,
                  &b);
    assert_true(fabsf(px[7] - (1.0f - g_px[7])) < 1e-6f);
    g_free(px);
    /* Pad: 0.5 grey around the original. */
    px = run_node(in,
                  "{\"class_type\":\"ImagePadForOutpaint\",\"inputs\":{\"image\":[\"1\",0],"
                  "\"left\":2,\"top\":1,\"right\":0,\"bottom\":3,\"feathering\":0}}",
                  &w, &h, &b);
    assert_int_equal(w, W + 2);
    assert_int_equal(h, H + 4);
    assert_true(px[0] == 0.5f);
    assert_true(px[(1 * w + 2) * 3] == g_px[0]);
    g_free(px);
    g_object_unref(in);
}

/* Sizes per the reference formulas (round half to even) and sampling values. */
static void test_scale(void **state)
{
    (void)state;
    VipsImage *in = tiny();
    int w, h, b;
    /* ImageScaleBy 0.5: round(2.5)=2, round(2)=2 */
    float *px = run_node(in,
                         "{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"1\",0],"
                         "\"upscale_method\":\"nearest-exact\",\"scale_by\":0.5}}",
                         &w, &h, &b);
    assert_int_equal(w, 2);
    assert_int_equal(h, 2);
    /* nearest-exact: src = floor((dst+0.5)*in/out) → x: 1, 3; y: 1, 3 */
    assert_true(px[0] == g_px[(1 * W + 1) * 3]);
    assert_true(px[3] == g_px[(1 * W + 3) * 3]);
    assert_true(px[2 * 3] == g_px[(3 * W + 1) * 3]);
    g_free(px);
    /* ImageScale width 0: h=2 → w = max(1, round(5*2/4)) = round(2.5) = 2 */
    px =
        run_node(in,
                 "{\"class_type\":\"ImageScale\",\"inputs\":{\"image\":[\"1\",0],"
                 "\"upscale_method\":\"bilinear\",\"width\":0,\"height\":2,\"crop\":\"disabled\"}}",
                 &w, &h, &b);
    assert_int_equal(w, 2);
    assert_int_equal(h, 2);
    /* bilinear: sx=2.5: x0 = 0.75 → 0/1 weights .25/.75; sy=2: y0 = 0.5 */
    float want = 0.5f * (0.25f * g_px[0] + 0.75f * g_px[3]) +
                 0.5f * (0.25f * g_px[W * 3] + 0.75f * g_px[(W + 1) * 3]);
    assert_true(fabsf(px[0] - want) < 1e-6f);
    g_free(px);
    /* ScaleToMaxDimension: 5x4 → 10 x round(4/5*10)=8 */
    px = run_node(in,
                  "{\"class_type\":\"ImageScaleToMaxDimension\",\"inputs\":{\"image\":[\"1\",0],"
                  "\"upscale_method\":\"area\",\"largest_size\":10}}",
                  &w, &h, &b);
    assert_int_equal(w, 10);
    assert_int_equal(h, 8);
    assert_true(px[0] == g_px[0]); /* area upscale ×2: pixel (0,0) copies source (0,0) */
    g_free(px);
    /* area 5x4 → 2x2 directly: output (0,0) averages rows 0..1, cols 0..2 (ceil(2.5)=3) */
    float src[W * H];
    for (int i = 0; i < W * H; i++) {
        src[i] = (float)i;
    }
    float *r = cpu_exec_upscale(src, W, H, 1, 2, 2, "area", "disabled");
    assert_true(fabsf(r[0] - (0 + 1 + 2 + 5 + 6 + 7) / 6.0f) < 1e-6f);
    g_free(r);
    /* bicubic on a constant stays constant (coefficients sum to 1) */
    for (int i = 0; i < W * H; i++) {
        src[i] = 0.25f;
    }
    r = cpu_exec_upscale(src, W, H, 1, 7, 3, "bicubic", "center");
    for (int i = 0; i < 21; i++) {
        assert_true(fabsf(r[i] - 0.25f) < 1e-6f);
    }
    g_free(r);
    /* ScaleToTotalPixels: s = sqrt(int(0.01*1048576)/20) */
    px = run_node(in,
                  "{\"class_type\":\"ImageScaleToTotalPixels\",\"inputs\":{\"image\":[\"1\",0],"
                  "\"upscale_method\":\"bicubic\",\"megapixels\":0.01}}",
                  &w, &h, &b);
    double sc = sqrt(10485.0 / 20.0);
    assert_int_equal(w, (int)rint(5 * sc));
    assert_int_equal(h, (int)rint(4 * sc));
    g_free(px);
    g_object_unref(in);
}

static void test_empty_and_encode(void **state)
{
    (void)state;
    cJSON *graph = cJSON_Parse(
        "{\"1\":{\"class_type\":\"EmptyImage\",\"inputs\":{\"width\":3,\"height\":2,"
        "\"color\":16744448}},"
        "\"2\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"1\",0],\"format\":\"png\"}}}");
    cpu_exec_job_t job = {.keep_result = true};
    char err[256];
    assert_int_equal(cpu_exec_run(graph, &job, err, sizeof(err)), CPU_EXEC_OK);
    assert_string_equal(job.ext, "png");
    VipsImage *png = vips_image_new_from_buffer(job.output, job.output_len, "", NULL);
    assert_non_null(png);
    double px[3] = {0};
    double *vec = NULL;
    int n = 0;
    assert_int_equal(vips_getpoint(png, &vec, &n, 1, 1, NULL), 0);
    memcpy(px, vec, sizeof(px));
    g_free(vec);
    /* 0xFF8000 → 255, 128, 0 (exact round trip through /255 and truncating ×255) */
    assert_true(px[0] == 255 && px[1] == 128 && px[2] == 0);
    g_object_unref(png);
    cpu_exec_job_free(&job);
    cJSON_Delete(graph);
}

static void test_errors(void **state)
{
    (void)state;
    cJSON *graph =
        cJSON_Parse("{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                    "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0]}}}");
    const char junk[] = "this is not an image at all";
    cpu_exec_job_t job = {.input = junk, .input_len = sizeof(junk)};
    char err[256];
    assert_int_equal(cpu_exec_run(graph, &job, err, sizeof(err)), CPU_EXEC_UNSUPPORTED_IMAGE);
    assert_non_null(strstr(err, "unsupported_image"));
    cpu_exec_job_free(&job);
    cJSON_Delete(graph);
    graph = cJSON_Parse("{\"1\":{\"class_type\":\"KSampler\",\"inputs\":{}},"
                        "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0]}}}");
    assert_int_equal(cpu_exec_run(graph, &job, err, sizeof(err)), CPU_EXEC_BAD_GRAPH);
    assert_non_null(strstr(err, "KSampler"));
    cJSON_Delete(graph);
}

/* ---- real photos --------------------------------------------------------- */

#define FIXTURES "tests/fixtures"

static cJSON *load_preset(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "services/job-worker/presets/%s.json", name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *g = cJSON_Parse(buf);
    assert_non_null(g);
    return g;
}

static VipsImage *render_file(const char *preset, VipsImage *input, cpu_exec_job_t *job)
{
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(vips_jpegsave_buffer(input, &buf, &len, "Q", 95, NULL), 0);
    cJSON *g = load_preset(preset);
    job->input = buf;
    job->input_len = len;
    char err[512];
    cpu_exec_status_t st = cpu_exec_run(g, job, err, sizeof(err));
    if (st != CPU_EXEC_OK) {
        fail_msg("%s: %s", preset, err);
    }
    cJSON_Delete(g);
    g_free(buf);
    job->input = NULL;
    VipsImage *out = vips_image_new_from_buffer(job->output, job->output_len, "", NULL);
    assert_non_null(out);
    return out;
}

static double stddev_luma(VipsImage *im)
{
    double d = 0;
    VipsImage *grey = NULL;
    assert_int_equal(vips_colourspace(im, &grey, VIPS_INTERPRETATION_B_W, NULL), 0);
    assert_int_equal(vips_deviate(grey, &d, NULL), 0);
    g_object_unref(grey);
    return d;
}

static double mean_saturation(VipsImage *im)
{
    VipsImage *lch = NULL;
    VipsImage *cband = NULL;
    double m = 0;
    assert_int_equal(vips_colourspace(im, &lch, VIPS_INTERPRETATION_LCH, NULL), 0);
    assert_int_equal(vips_extract_band(lch, &cband, 1, NULL), 0);
    assert_int_equal(vips_avg(cband, &m, NULL), 0);
    g_object_unref(cband);
    g_object_unref(lch);
    return m;
}

static double laplacian_variance(VipsImage *im)
{
    VipsImage *grey = NULL;
    VipsImage *lap = NULL;
    double d = 0;
    double k[9] = {0, 1, 0, 1, -4, 1, 0, 1, 0};
    VipsImage *mat = vips_image_new_matrix_from_array(3, 3, k, 9);
    assert_int_equal(vips_colourspace(im, &grey, VIPS_INTERPRETATION_B_W, NULL), 0);
    assert_int_equal(vips_conv(grey, &lap, mat, "precision", VIPS_PRECISION_FLOAT, NULL), 0);
    assert_int_equal(vips_deviate(lap, &d, NULL), 0);
    g_object_unref(mat);
    g_object_unref(grey);
    g_object_unref(lap);
    return d * d;
}

/* A sample photo from tests/fixtures (see its README.md). */
static VipsImage *photo(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), FIXTURES "/%s", name);
    VipsImage *im = vips_image_new_from_file(path, NULL);
    if (im == NULL) {
        fail_msg("%s: %s", path, vips_error_buffer());
    }
    return im;
}

static void test_presets_on_photos(void **state)
{
    (void)state;
    /* portrait_pro on a low-contrast version of astronaut: spread grows. */
    VipsImage *astro = photo("astronaut.png");
    VipsImage *flat = NULL;
    assert_int_equal(vips_linear1(astro, &flat, 0.6, 50.0, NULL), 0);
    VipsImage *flat8 = NULL;
    assert_int_equal(vips_cast(flat, &flat8, VIPS_FORMAT_UCHAR, NULL), 0);
    cpu_exec_job_t job = {0};
    VipsImage *out = render_file("portrait_pro", flat8, &job);
    assert_true(stddev_luma(out) > stddev_luma(flat8) * 1.2);
    assert_int_equal(out->Xsize, 512); /* never upscaled */
    g_object_unref(out);
    cpu_exec_job_free(&job);

    /* landscape_vivid on coffee: saturation and sharpness up. */
    VipsImage *coffee = photo("coffee.png");
    out = render_file("landscape_vivid", coffee, &job);
    assert_true(mean_saturation(out) > mean_saturation(coffee) * 1.1);
    assert_true(laplacian_variance(out) > laplacian_variance(coffee));
    g_object_unref(out);
    cpu_exec_job_free(&job);

    /* product_clean on chelsea: brighter. */
    VipsImage *cat = photo("chelsea.png");
    out = render_file("product_clean", cat, &job);
    double before = 0, after = 0;
    assert_int_equal(vips_avg(cat, &before, NULL), 0);
    assert_int_equal(vips_avg(out, &after, NULL), 0);
    assert_true(after > before);
    g_object_unref(out);
    cpu_exec_job_free(&job);

    /* Long edge: a 2x upscale of astronaut (1024) through portrait_pro at 3000 stays 1024,
     * and CA.ResizeLongEdge to 300 gives 300. GPS gone, ICC and Make kept. */
    VipsImage *tagged = NULL;
    VipsImage *icc = NULL;
    assert_int_equal(vips_icc_transform(cat, &icc, "srgb", "input_profile", "srgb", NULL), 0);
    assert_int_equal(vips_copy(icc, &tagged, NULL), 0);
    vips_image_set_string(tagged, "exif-ifd0-Make", "TestCam");
    vips_image_set_string(tagged, "exif-ifd3-GPSLatitude", "52/1 30/1 0/1");
    vips_image_set_string(tagged, "exif-ifd3-GPSLatitudeRef", "N");
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(vips_jpegsave_buffer(tagged, &buf, &len, NULL), 0);
    VipsImage *check = vips_image_new_from_buffer(buf, len, "", NULL);
    assert_true(vips_image_get_typeof(check, "exif-ifd3-GPSLatitude") != 0); /* precondition */
    assert_true(vips_image_get_typeof(check, VIPS_META_ICC_NAME) != 0);
    g_object_unref(check);
    cJSON *g = cJSON_Parse(
        "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
        "\"2\":{\"class_type\":\"CA.ResizeLongEdge\",\"inputs\":{\"image\":[\"1\",0],"
        "\"long_edge\":300}},"
        "\"3\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"2\",0],\"format\":\"jpeg\","
        "\"quality\":90}}}");
    job.input = buf;
    job.input_len = len;
    char err[256];
    assert_int_equal(cpu_exec_run(g, &job, err, sizeof(err)), CPU_EXEC_OK);
    out = vips_image_new_from_buffer(job.output, job.output_len, "", NULL);
    assert_int_equal(out->Xsize, 300);
    assert_int_equal(out->Ysize, 200); /* 451x300 → 300 x round(199.56) */
    assert_int_equal(vips_image_get_typeof(out, "exif-ifd3-GPSLatitude"), 0);
    assert_int_equal(vips_image_get_typeof(out, "exif-ifd3-GPSLatitudeRef"), 0);
    assert_true(vips_image_get_typeof(out, VIPS_META_ICC_NAME) != 0);
    const char *make = NULL;
    assert_int_equal(vips_image_get_string(out, "exif-ifd0-Make", &make), 0);
    assert_non_null(strstr(make, "TestCam"));
    g_object_unref(out);
    cpu_exec_job_free(&job);
    cJSON_Delete(g);
    g_free(buf);
    g_object_unref(tagged);
    g_object_unref(icc);
    g_object_unref(cat);
    g_object_unref(coffee);
    g_object_unref(flat8);
    g_object_unref(flat);
    g_object_unref(astro);
}

/* ---- input formats ------------------------------------------------------- */

#define IW 96
#define IH 64

/* 96x64 sRGB: left half orange (200,100,50), right half blue (60,110,170). */
static VipsImage *two_colour(void)
{
    unsigned char *px = g_malloc((size_t)IW * IH * 3);
    for (int y = 0; y < IH; y++) {
        for (int x = 0; x < IW; x++) {
            unsigned char *p = px + ((size_t)y * IW + x) * 3;
            bool left = x < IW / 2;
            p[0] = left ? 200 : 60;
            p[1] = left ? 100 : 110;
            p[2] = left ? 50 : 170;
        }
    }
    VipsImage *im =
        vips_image_new_from_memory_copy(px, (size_t)IW * IH * 3, IW, IH, 3, VIPS_FORMAT_UCHAR);
    g_free(px);
    assert_non_null(im);
    VipsImage *srgb = NULL;
    assert_int_equal(vips_copy(im, &srgb, "interpretation", VIPS_INTERPRETATION_sRGB, NULL), 0);
    g_object_unref(im);
    return srgb;
}

typedef enum { FMT_JPEG, FMT_PNG, FMT_WEBP, FMT_TIFF, FMT_HEIC } fmt_t;

typedef struct {
    const char *name;
    fmt_t fmt;
    int depth;     /* 8 or 16 */
    bool cmyk;     /* converted to CMYK (libvips' built-in profile) before saving */
    int tolerance; /* per channel, 0..255, after the round trip */
} input_case_t;

static const input_case_t INPUT_CASES[] = {
    {"JPEG 8-bit RGB", FMT_JPEG, 8, false, 10},  {"PNG 8-bit RGB", FMT_PNG, 8, false, 1},
    {"WebP 8-bit RGB", FMT_WEBP, 8, false, 12},  {"TIFF 8-bit RGB", FMT_TIFF, 8, false, 1},
    {"HEIC 8-bit RGB", FMT_HEIC, 8, false, 20},  {"PNG 16-bit RGB", FMT_PNG, 16, false, 1},
    {"TIFF 16-bit RGB", FMT_TIFF, 16, false, 1}, {"JPEG 8-bit CMYK", FMT_JPEG, 8, true, 30},
    {"TIFF 8-bit CMYK", FMT_TIFF, 8, true, 30},
};

/* Encodes `src` (8-bit sRGB) as the case asks; fails the test when this libvips
 * cannot (tools/deps.sh installs the HEIC encoder). */
static void *encode_case(const input_case_t *ic, VipsImage *src, size_t *len)
{
    VipsImage *im = src;
    g_object_ref(im);
    if (ic->cmyk) {
        VipsImage *cmyk = NULL;
        assert_int_equal(vips_icc_transform(im, &cmyk, "cmyk", "input_profile", "srgb", NULL), 0);
        g_object_unref(im);
        im = cmyk;
        assert_int_equal(im->Bands, 4);
        assert_int_equal(im->Type, VIPS_INTERPRETATION_CMYK);
    }
    if (ic->depth == 16) {
        VipsImage *wide = NULL;
        VipsImage *u16 = NULL;
        assert_int_equal(vips_linear1(im, &wide, 257.0, 0.0, NULL), 0);
        assert_int_equal(vips_cast(wide, &u16, VIPS_FORMAT_USHORT, NULL), 0);
        g_object_unref(wide);
        g_object_unref(im);
        assert_int_equal(vips_copy(u16, &im, "interpretation", VIPS_INTERPRETATION_RGB16, NULL), 0);
        g_object_unref(u16);
    }
    void *buf = NULL;
    int rc = -1;
    switch (ic->fmt) {
    case FMT_JPEG:
        rc = vips_jpegsave_buffer(im, &buf, len, "Q", 95, NULL);
        break;
    case FMT_PNG:
        rc = vips_pngsave_buffer(im, &buf, len, NULL);
        break;
    case FMT_WEBP:
        rc = vips_webpsave_buffer(im, &buf, len, "Q", 95, NULL);
        break;
    case FMT_TIFF:
        rc = vips_tiffsave_buffer(im, &buf, len, NULL);
        break;
    case FMT_HEIC:
        cpu_exec_heif_ready(); /* cpu_exec_init opens no libvips module */
        rc = vips_heifsave_buffer(im, &buf, len, "Q", 90, "compression",
                                  VIPS_FOREIGN_HEIF_COMPRESSION_HEVC, NULL);
        break;
    }
    g_object_unref(im);
    if (rc != 0) {
        fail_msg("%s: this libvips cannot write it: %s", ic->name, vips_error_buffer());
    }
    return buf;
}

static cpu_exec_status_t run_bytes(const char *graph_json, const void *buf, size_t len,
                                   cpu_exec_job_t *job, char *err, size_t errlen)
{
    cJSON *g = cJSON_Parse(graph_json);
    assert_non_null(g);
    job->input = buf;
    job->input_len = len;
    cpu_exec_status_t st = cpu_exec_run(g, job, err, errlen);
    job->input = NULL;
    cJSON_Delete(g);
    return st;
}

static const char PASS_PNG[] =
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
    "\"2\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"1\",0],\"format\":\"png\"}}}";

/* The mean colour of a 9x9 patch centred at (x, y). */
static void patch_mean(VipsImage *im, int x, int y, double rgb[3])
{
    VipsImage *area = NULL;
    VipsImage *stats = NULL;
    assert_int_equal(vips_extract_area(im, &area, x - 4, y - 4, 9, 9, NULL), 0);
    assert_int_equal(vips_stats(area, &stats, NULL), 0);
    for (int k = 0; k < 3; k++) {
        rgb[k] = *VIPS_MATRIX(stats, 4, k + 1);
    }
    g_object_unref(stats);
    g_object_unref(area);
}

static void assert_colour(const char *what, VipsImage *im, int x, int y, const double want[3],
                          int tol)
{
    double got[3];
    patch_mean(im, x, y, got);
    for (int k = 0; k < 3; k++) {
        if (fabs(got[k] - want[k]) > tol) {
            fail_msg("%s at (%d,%d) band %d: %.1f want %.0f ±%d", what, x, y, k, got[k], want[k],
                     tol);
        }
    }
}

static const double ORANGE[3] = {200, 100, 50};
static const double BLUE[3] = {60, 110, 170}; /* inside the CMYK gamut */

static void test_input_formats(void **state)
{
    (void)state;
    VipsImage *src = two_colour();
    cJSON *preset = load_preset("portrait_pro");
    char *preset_text = cJSON_PrintUnformatted(preset);
    cJSON_Delete(preset);
    for (size_t i = 0; i < sizeof(INPUT_CASES) / sizeof(INPUT_CASES[0]); i++) {
        const input_case_t *ic = &INPUT_CASES[i];
        size_t len = 0;
        void *buf = encode_case(ic, src, &len);
        /* Precondition: the file really is what the case says. */
        VipsImage *probe = vips_image_new_from_buffer(buf, len, "", NULL);
        assert_non_null(probe);
        assert_int_equal(probe->Bands, ic->cmyk ? 4 : 3);
        assert_int_equal(probe->BandFmt, ic->depth == 16 ? VIPS_FORMAT_USHORT : VIPS_FORMAT_UCHAR);
        g_object_unref(probe);

        /* Pass-through to PNG: same size, same colours. */
        cpu_exec_job_t job = {0};
        char err[512];
        cpu_exec_status_t st = run_bytes(PASS_PNG, buf, len, &job, err, sizeof(err));
        if (st != CPU_EXEC_OK) {
            fail_msg("%s: pass-through failed: %s", ic->name, err);
        }
        assert_int_equal(job.in_width, IW);
        assert_int_equal(job.in_height, IH);
        VipsImage *out = vips_image_new_from_buffer(job.output, job.output_len, "", NULL);
        assert_non_null(out);
        assert_int_equal(out->Xsize, IW);
        assert_int_equal(out->Ysize, IH);
        assert_int_equal(out->Bands, 3);
        assert_int_equal(out->BandFmt, VIPS_FORMAT_UCHAR);
        assert_colour(ic->name, out, IW / 4, IH / 2, ORANGE, ic->tolerance);
        assert_colour(ic->name, out, 3 * IW / 4, IH / 2, BLUE, ic->tolerance);
        if (ic->cmyk) { /* converted to sRGB: the CMYK profile must not be attached */
            assert_int_equal(vips_image_get_typeof(out, VIPS_META_ICC_NAME), 0);
        }
        g_object_unref(out);
        cpu_exec_job_free(&job);

        /* The default preset: a JPEG of the same size, hues kept. */
        st = run_bytes(preset_text, buf, len, &job, err, sizeof(err));
        if (st != CPU_EXEC_OK) {
            fail_msg("%s: portrait_pro failed: %s", ic->name, err);
        }
        assert_string_equal(job.ext, "jpg");
        out = vips_image_new_from_buffer(job.output, job.output_len, "", NULL);
        assert_non_null(out);
        assert_int_equal(out->Xsize, IW);
        assert_int_equal(out->Ysize, IH);
        double l[3];
        double r[3];
        patch_mean(out, IW / 4, IH / 2, l);
        patch_mean(out, 3 * IW / 4, IH / 2, r);
        if (!(l[0] > l[1] && l[1] > l[2] && r[2] > r[1] && r[1] > r[0])) {
            fail_msg("%s: portrait_pro changed the hues: left %.0f,%.0f,%.0f right %.0f,%.0f,%.0f",
                     ic->name, l[0], l[1], l[2], r[0], r[1], r[2]);
        }
        g_object_unref(out);
        cpu_exec_job_free(&job);
        g_free(buf);
    }
    free(preset_text);
    g_object_unref(src);
}

/* EXIF orientation 6 (rotate 90° clockwise to display): the output is upright
 * (64x96, the stored left half on top) and says orientation 1. */
static void test_exif_orientation(void **state)
{
    (void)state;
    VipsImage *src = two_colour();
    VipsImage *tagged = NULL;
    assert_int_equal(vips_copy(src, &tagged, NULL), 0);
    vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(vips_jpegsave_buffer(tagged, &buf, &len, "Q", 95, NULL), 0);
    VipsImage *probe = vips_image_new_from_buffer(buf, len, "", NULL);
    int orientation = 0;
    assert_int_equal(vips_image_get_int(probe, VIPS_META_ORIENTATION, &orientation), 0);
    assert_int_equal(orientation, 6); /* precondition */
    assert_int_equal(probe->Xsize, IW);
    g_object_unref(probe);

    const char *graphs[2] = {PASS_PNG, NULL};
    cJSON *preset = load_preset("portrait_pro");
    char *preset_text = cJSON_PrintUnformatted(preset);
    cJSON_Delete(preset);
    graphs[1] = preset_text;
    for (int g = 0; g < 2; g++) {
        cpu_exec_job_t job = {0};
        char err[512];
        if (run_bytes(graphs[g], buf, len, &job, err, sizeof(err)) != CPU_EXEC_OK) {
            fail_msg("orientation, graph %d: %s", g, err);
        }
        assert_int_equal(job.in_width, IH);
        assert_int_equal(job.in_height, IW);
        VipsImage *out = vips_image_new_from_buffer(job.output, job.output_len, "", NULL);
        assert_non_null(out);
        assert_int_equal(out->Xsize, IH);
        assert_int_equal(out->Ysize, IW);
        int o = 1;
        if (vips_image_get_typeof(out, VIPS_META_ORIENTATION) != 0) {
            assert_int_equal(vips_image_get_int(out, VIPS_META_ORIENTATION, &o), 0);
        }
        assert_int_equal(o, 1);
        double top[3];
        double bottom[3];
        patch_mean(out, IH / 2, IW / 4, top);
        patch_mean(out, IH / 2, 3 * IW / 4, bottom);
        if (g == 0) {
            assert_colour("orientation top", out, IH / 2, IW / 4, ORANGE, 10);
            assert_colour("orientation bottom", out, IH / 2, 3 * IW / 4, BLUE, 10);
        } else {
            assert_true(top[0] > top[2] && bottom[2] > bottom[0]);
        }
        g_object_unref(out);
        cpu_exec_job_free(&job);
    }
    free(preset_text);
    g_free(buf);
    g_object_unref(tagged);
    g_object_unref(src);
}

/* Corrupt files of each kind: unsupported_image, through the preset too. */
static void test_corrupt_inputs(void **state)
{
    (void)state;
    VipsImage *src = two_colour();
    /* A bigger, noisy image so truncation hits the pixel data, not the header. */
    VipsImage *big = NULL;
    VipsImage *noise = NULL;
    VipsImage *noisy = NULL;
    VipsImage *noisy8 = NULL;
    assert_int_equal(vips_resize(src, &big, 8.0, NULL), 0);
    assert_int_equal(vips_gaussnoise(&noise, big->Xsize, big->Ysize, "sigma", 30.0, NULL), 0);
    assert_int_equal(vips_add(big, noise, &noisy, NULL), 0);
    assert_int_equal(vips_cast(noisy, &noisy8, VIPS_FORMAT_UCHAR, NULL), 0);
    cJSON *preset = load_preset("portrait_pro");
    char *preset_text = cJSON_PrintUnformatted(preset);
    cJSON_Delete(preset);
    const fmt_t fmts[] = {FMT_JPEG, FMT_PNG, FMT_WEBP, FMT_TIFF, FMT_HEIC};
    const char *names[] = {"JPEG", "PNG", "WebP", "TIFF", "HEIC"};
    for (int f = 0; f < 5; f++) {
        input_case_t ic = {names[f], fmts[f], 8, false, 0};
        size_t len = 0;
        void *buf = encode_case(&ic, noisy8, &len);
        /* Truncated to 60%. */
        size_t cut = len * 6 / 10;
        for (int g = 0; g < 2; g++) {
            cpu_exec_job_t job = {0};
            char err[512];
            cpu_exec_status_t st =
                run_bytes(g == 0 ? PASS_PNG : preset_text, buf, cut, &job, err, sizeof(err));
            if (st != CPU_EXEC_UNSUPPORTED_IMAGE) {
                fail_msg("truncated %s (graph %d): status %d (%s), want unsupported_image",
                         names[f], g, st, err);
            }
            assert_non_null(strstr(err, "unsupported_image"));
            assert_null(job.output);
            cpu_exec_job_free(&job);
        }
        g_free(buf);
    }
    /* A valid JPEG header followed by garbage. */
    const unsigned char bad[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J',  'F',  'I', 'F',
                                 0,    1,    1,    0,    0,    1,    0,    1,    0,   0,
                                 0xFF, 0xDB, 0x00, 0x05, 0x01, 0x02, 0x03, 0xFF, 0xD9};
    cpu_exec_job_t job = {0};
    char err[512];
    assert_int_equal(run_bytes(preset_text, bad, sizeof(bad), &job, err, sizeof(err)),
                     CPU_EXEC_UNSUPPORTED_IMAGE);
    cpu_exec_job_free(&job);
    free(preset_text);
    g_object_unref(noisy8);
    g_object_unref(noisy);
    g_object_unref(noise);
    g_object_unref(big);
    g_object_unref(src);
}

/* AutoLevels and WhiteBalance compute their statistics on a small
 * shrink-on-load preview of the file: the result must match statistics on the
 * full image (the input_image path) to within a level or so. */
static void test_statistics_preview(void **state)
{
    (void)state;
    VipsImage *coffee = photo("coffee.png");
    VipsImage *big = NULL;
    VipsImage *cast = NULL;
    VipsImage *flat = NULL;
    /* 1800x1200, low contrast with a blue cast: both nodes have work to do. */
    assert_int_equal(vips_resize(coffee, &big, 3.0, NULL), 0);
    double a[3] = {0.55, 0.6, 0.7};
    double b[3] = {40, 45, 70};
    assert_int_equal(vips_linear(big, &cast, a, b, 3, NULL), 0);
    assert_int_equal(vips_cast(cast, &flat, VIPS_FORMAT_UCHAR, NULL), 0);
    void *jpg = NULL;
    size_t len = 0;
    assert_int_equal(vips_jpegsave_buffer(flat, &jpg, &len, "Q", 95, NULL), 0);
    static const char graph[] =
        "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
        "\"2\":{\"class_type\":\"CA.WhiteBalance\",\"inputs\":{\"image\":[\"1\",0],"
        "\"strength\":1.0}},"
        "\"3\":{\"class_type\":\"CA.AutoLevels\",\"inputs\":{\"image\":[\"2\",0],"
        "\"clip_percent\":0.5,\"strength\":1.0}},"
        "\"4\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"3\",0],\"format\":\"png\"}}}";
    cpu_exec_job_t fast = {0};
    char err[512];
    if (run_bytes(graph, jpg, len, &fast, err, sizeof(err)) != CPU_EXEC_OK) {
        fail_msg("preview run: %s", err);
    }
    /* The same decoded pixels, given as an image: statistics on the full image. */
    VipsImage *dec = vips_image_new_from_buffer(jpg, len, "", NULL);
    VipsImage *scaled = NULL;
    VipsImage *f = NULL;
    assert_int_equal(vips_linear1(dec, &scaled, 1.0 / 255.0, 0.0, NULL), 0);
    assert_int_equal(vips_cast(scaled, &f, VIPS_FORMAT_FLOAT, NULL), 0);
    cJSON *g = cJSON_Parse(graph);
    cpu_exec_job_t full = {.input_image = f};
    assert_int_equal(cpu_exec_run(g, &full, err, sizeof(err)), CPU_EXEC_OK);
    cJSON_Delete(g);
    VipsImage *o1 = vips_image_new_from_buffer(fast.output, fast.output_len, "", NULL);
    VipsImage *o2 = vips_image_new_from_buffer(full.output, full.output_len, "", NULL);
    assert_non_null(o1);
    assert_non_null(o2);
    VipsImage *diff = NULL;
    VipsImage *adiff = NULL;
    VipsImage *moved = NULL;
    VipsImage *amoved = NULL;
    double d = 0;
    double m = 0;
    assert_int_equal(vips_subtract(o1, o2, &diff, NULL), 0);
    assert_int_equal(vips_abs(diff, &adiff, NULL), 0);
    assert_int_equal(vips_avg(adiff, &d, NULL), 0);
    assert_int_equal(vips_subtract(o2, dec, &moved, NULL), 0);
    assert_int_equal(vips_abs(moved, &amoved, NULL), 0);
    assert_int_equal(vips_avg(amoved, &m, NULL), 0);
    printf("statistics on a preview vs full: mean |diff| %.2f levels (the nodes moved pixels by "
           "%.1f)\n",
           d, m);
    assert_true(m > 10.0); /* the nodes did change the image */
    assert_true(d < 1.5);
    VipsImage *all[] = {coffee, big, cast, flat,  dec,   scaled, f,
                        o1,     o2,  diff, adiff, moved, amoved};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        g_object_unref(all[i]);
    }
    cpu_exec_job_free(&fast);
    cpu_exec_job_free(&full);
    g_free(jpg);
}

/* ---- fused point chains and the resize ----------------------------------- */

/* The chain of point nodes, from the reference formulas (double). */
static void chain_ref(const float *src, float *dst, int w, int h)
{
    const double l[3] = {0.2126, 0.7152, 0.0722};
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double v[3];
            for (int k = 0; k < 3; k++) {
                double t = src[(y * w + x) * 3 + k];
                t = fmin(1, fmax(0, (t - 0.1) / 0.8));           /* Levels 0.1..0.9 */
                t = pow(t, 1 / 1.3);                             /* gamma 1.3 */
                t = fmin(1, fmax(0, t * pow(2.0, 0.3 / 2.2)));   /* Exposure +0.3 */
                t = fmin(1, fmax(0, 1.2 * t + 0.5 * (1 - 1.2))); /* Contrast 0.2 */
                v[k] = t;
            }
            double o[3];
            for (int r = 0; r < 3; r++) { /* Saturation 1.4 */
                double acc = 0;
                for (int k = 0; k < 3; k++) {
                    acc += ((1 - 1.4) * l[k] + (r == k ? 1.4 : 0)) * v[k];
                }
                o[r] = fmin(1, fmax(0, acc));
            }
            const double warm[3] = {1 + 0.08 * 0.3, 1 + 0.02 * 0.3, 1 - 0.08 * 0.3};
            double dx = ((x + 0.5) / w - 0.5) * 2;
            double dy = ((y + 0.5) / h - 0.5) * 2;
            double t = (sqrt(dx * dx + dy * dy) - 0.5) / (sqrt(2.0) - 0.5);
            t = fmin(1, fmax(0, t));
            double m = 1 - 0.3 * t * t * (3 - 2 * t); /* Vignette 0.3, radius 0.5 */
            for (int k = 0; k < 3; k++) {
                double u = fmin(1, fmax(0, o[k] * warm[k]));     /* Warmth 0.3 */
                dst[(y * w + x) * 3 + k] = (float)((1 - u) * m); /* Invert, Vignette */
            }
        }
    }
}

static const char CHAIN[] =
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
    "\"2\":{\"class_type\":\"CA.Levels\",\"inputs\":{\"image\":[\"1\",0],\"black\":0.1,"
    "\"white\":0.9,\"gamma\":1.3}},"
    "\"3\":{\"class_type\":\"CA.Exposure\",\"inputs\":{\"image\":[\"2\",0],\"stops\":0.3}},"
    "\"4\":{\"class_type\":\"CA.Contrast\",\"inputs\":{\"image\":[\"3\",0],\"amount\":0.2}},"
    "\"5\":{\"class_type\":\"CA.Saturation\",\"inputs\":{\"image\":[\"4\",0],\"amount\":1.4}},"
    "\"6\":{\"class_type\":\"CA.Warmth\",\"inputs\":{\"image\":[\"5\",0],\"amount\":0.3}},"
    "\"7\":{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"6\",0]}},"
    "\"8\":{\"class_type\":\"CA.Vignette\",\"inputs\":{\"image\":[\"7\",0],\"strength\":0.3,"
    "\"radius\":0.5}},"
    "\"9\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"8\",0],\"format\":\"png\"}}}";

static float *result_floats(cpu_exec_job_t *job)
{
    VipsImage *f = NULL;
    size_t size = 0;
    assert_int_equal(vips_cast(job->result, &f, VIPS_FORMAT_FLOAT, NULL), 0);
    float *px = vips_image_write_to_memory(f, &size);
    g_object_unref(f);
    if (px == NULL) {
        fail_msg("result: %s", vips_error_buffer());
    }
    return px;
}

/* Eight point nodes run as one fused operation: the same values as the
 * formulas node by node, from a float image and from 8-bit pixels (where
 * the leading per-band nodes become a lookup table). */
static void test_point_chain(void **state)
{
    (void)state;
    enum { CW = 37, CH = 23 };
    static float src[CW * CH * 3];
    static unsigned char src8[CW * CH * 3];
    static float want[CW * CH * 3];
    for (int i = 0; i < CW * CH * 3; i++) {
        src8[i] = (unsigned char)((i * 53) % 256);
        src[i] = src8[i] / 255.0f;
    }
    chain_ref(src, want, CW, CH);
    cJSON *g = cJSON_Parse(CHAIN);
    assert_non_null(g);
    char err[512];
    /* float input */
    VipsImage *in = vips_image_new_from_memory_copy(src, sizeof(src), CW, CH, 3, VIPS_FORMAT_FLOAT);
    cpu_exec_job_t job = {.input_image = in, .keep_result = true};
    if (cpu_exec_run(g, &job, err, sizeof(err)) != CPU_EXEC_OK) {
        fail_msg("chain: %s", err);
    }
    float *px = result_floats(&job);
    for (int i = 0; i < CW * CH * 3; i++) {
        if (fabsf(px[i] - want[i]) > 2e-5f) {
            fail_msg("float chain px %d: %f want %f", i, px[i], want[i]);
        }
    }
    g_free(px);
    cpu_exec_job_free(&job);
    g_object_unref(in);
    /* 8-bit PNG input (decoded as the output is encoded: the result is only
     * the encoded file) */
    VipsImage *im8 =
        vips_image_new_from_memory_copy(src8, sizeof(src8), CW, CH, 3, VIPS_FORMAT_UCHAR);
    void *png = NULL;
    size_t len = 0;
    assert_int_equal(vips_pngsave_buffer(im8, &png, &len, NULL), 0);
    cpu_exec_job_t j8 = {.input = png, .input_len = len};
    if (cpu_exec_run(g, &j8, err, sizeof(err)) != CPU_EXEC_OK) {
        fail_msg("chain 8-bit: %s", err);
    }
    /* clip(255x) truncated; a value within 1e-3 of a level may land either side */
    VipsImage *dec = vips_image_new_from_buffer(j8.output, j8.output_len, "", NULL);
    assert_non_null(dec);
    size_t dlen = 0;
    unsigned char *d = vips_image_write_to_memory(dec, &dlen);
    assert_int_equal(dlen, sizeof(src8));
    for (int i = 0; i < CW * CH * 3; i++) {
        int t = (int)fminf(255.0f, fmaxf(0.0f, want[i] * 255.0f + 1e-4f));
        if (abs((int)d[i] - t) > (fabsf(want[i] * 255.0f - rintf(want[i] * 255.0f)) < 1e-3f)) {
            fail_msg("encoded px %d: %d want %d", i, d[i], t);
        }
    }
    g_free(d);
    g_object_unref(dec);
    cpu_exec_job_free(&j8);
    g_object_unref(im8);
    g_free(png);
    cJSON_Delete(g);
}

/* A w×h 3-band 8-bit image whose pixel (x, y) is what at() writes. */
static VipsImage *rgb8_image(int w, int h, void (*at)(int x, int y, int w, unsigned char *p))
{
    size_t n = (size_t)w * h * 3;
    unsigned char *px = g_malloc(n);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            at(x, y, w, px + ((size_t)y * w + x) * 3);
        }
    }
    VipsImage *im = vips_image_new_from_memory_copy(px, n, w, h, 3, VIPS_FORMAT_UCHAR);
    g_free(px);
    return im;
}

/* smooth waves, a ramp and hard edges */
static void smooth_and_edges(int x, int y, int w, unsigned char *p)
{
    p[0] = (unsigned char)(127 + 120 * sin(x * 0.05) * cos(y * 0.07));
    p[1] = (unsigned char)((x * 255) / w);
    p[2] = (unsigned char)(((x / 7 + y / 5) % 2) * 200 + 20); /* hard edges */
}

/* fast waves, flat 0 and 255 with hard edges, a wrapping ramp */
static void flats_and_ramps(int x, int y, int w, unsigned char *p)
{
    (void)w;
    p[0] = (unsigned char)(127 + 127 * sin(x * 0.3) * cos(y * 0.07));
    p[1] = (unsigned char)(x % 11 < 5 ? 255 : 0); /* flat 0 and 255, hard edges */
    p[2] = (unsigned char)((x * 7 + y * 13) % 256);
}

/* CA.ResizeLongEdge's output size for a w×h input and a long edge target. */
static void long_edge_size(int w, int h, int target, int *ew, int *eh)
{
    bool landscape = w >= h;
    *ew = landscape ? target : (int)fmax(1, rint((double)w * target / h));
    *eh = landscape ? (int)fmax(1, rint((double)h * target / w)) : target;
}

/* CA.ResizeLongEdge downscales (libvips' vertical pass, ours horizontal):
 * exact sizes, and within a fraction of a level of vips_resize(lanczos3). */
static void test_resize_long_edge(void **state)
{
    (void)state;
    /* 422 → 300: 10 taps (9 or 10 is the unrolled case, as 4224 → 3000) */
    const int sizes[][3] = {
        {400, 300, 300}, {301, 199, 150}, {160, 480, 200}, {90, 60, 31}, {422, 316, 300}};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int IWd = sizes[s][0];
        int IHt = sizes[s][1];
        int target = sizes[s][2];
        VipsImage *im8 = rgb8_image(IWd, IHt, smooth_and_edges);
        void *png = NULL;
        size_t len = 0;
        assert_int_equal(vips_pngsave_buffer(im8, &png, &len, NULL), 0);
        char graph[512];
        snprintf(graph, sizeof(graph),
                 "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                 "\"2\":{\"class_type\":\"CA.ResizeLongEdge\",\"inputs\":{\"image\":[\"1\",0],"
                 "\"long_edge\":%d}},"
                 "\"3\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"2\",0],"
                 "\"format\":\"png\"}}}",
                 target);
        cJSON *g = cJSON_Parse(graph);
        int ew, eh;
        long_edge_size(IWd, IHt, target, &ew, &eh);
        VipsImage *ref = NULL;
        VipsImage *ref8 = NULL;
        assert_int_equal(vips_resize(im8, &ref, (double)ew / IWd, "vscale", (double)eh / IHt,
                                     "kernel", VIPS_KERNEL_LANCZOS3, NULL),
                         0);
        assert_int_equal(vips_cast(ref, &ref8, VIPS_FORMAT_FLOAT, NULL), 0);
        for (int pass = 0; pass < 2; pass++) {
            /* pass 0: 8-bit file; pass 1: the same pixels as a float image */
            VipsImage *f = NULL;
            VipsImage *scaled = NULL;
            cpu_exec_job_t job = {0};
            if (pass == 0) {
                job.input = png; /* the 8-bit output, truncated: up to a level more */
                job.input_len = len;
            } else {
                job.keep_result = true;
                assert_int_equal(vips_linear1(im8, &scaled, 1.0 / 255.0, 0.0, NULL), 0);
                assert_int_equal(vips_cast(scaled, &f, VIPS_FORMAT_FLOAT, NULL), 0);
                job.input_image = f;
            }
            char err[256];
            if (cpu_exec_run(g, &job, err, sizeof(err)) != CPU_EXEC_OK) {
                fail_msg("resize: %s", err);
            }
            assert_int_equal(job.out_width, ew);
            assert_int_equal(job.out_height, eh);
            VipsImage *got = NULL;
            VipsImage *diff = NULL;
            VipsImage *adiff = NULL;
            double mean = 0;
            double mx = 0;
            VipsImage *dec = NULL;
            if (pass == 0) {
                dec = vips_image_new_from_buffer(job.output, job.output_len, "", NULL);
                assert_non_null(dec);
                assert_int_equal(vips_linear1(dec, &got, 1.0, 0.5, NULL), 0);
            } else {
                assert_int_equal(job.result->Xsize, ew);
                assert_int_equal(job.result->Ysize, eh);
                assert_int_equal(vips_linear1(job.result, &got, 255.0, 0.0, NULL), 0);
            }
            VipsImage *fref = NULL; /* float: vips_resize of the float image (no clipping) */
            VipsImage *fref255 = NULL;
            if (pass == 1) {
                assert_int_equal(vips_resize(f, &fref, (double)ew / IWd, "vscale", (double)eh / IHt,
                                             "kernel", VIPS_KERNEL_LANCZOS3, NULL),
                                 0);
                assert_int_equal(vips_linear1(fref, &fref255, 255.0, 0.0, NULL), 0);
            }
            assert_int_equal(vips_subtract(got, pass == 0 ? ref8 : fref255, &diff, NULL), 0);
            assert_int_equal(vips_abs(diff, &adiff, NULL), 0);
            assert_int_equal(vips_avg(adiff, &mean, NULL), 0);
            assert_int_equal(vips_max(adiff, &mx, NULL), 0);
            printf("resize %dx%d -> %d (%s): mean |diff| %.3f, max %.2f levels\n", IWd, IHt, target,
                   pass == 0 ? "8-bit file" : "float", mean, mx);
            if (mean > (pass == 0 ? 0.6 : 0.1) || mx > (pass == 0 ? 2.0 : 1.5)) {
                fail_msg("resize %dx%d -> %d (pass %d): mean |diff| %.3f, max %.2f levels", IWd,
                         IHt, target, pass, mean, mx);
            }
            if (dec != NULL) {
                g_object_unref(dec);
            }
            if (fref != NULL) {
                g_object_unref(fref);
                g_object_unref(fref255);
            }
            g_object_unref(got);
            g_object_unref(diff);
            g_object_unref(adiff);
            cpu_exec_job_free(&job);
            if (f != NULL) {
                g_object_unref(f);
                g_object_unref(scaled);
            }
        }
        g_object_unref(ref);
        g_object_unref(ref8);
        cJSON_Delete(g);
        g_free(png);
        g_object_unref(im8);
    }
}

/* CA.ResizeLongEdge on 8-bit pixels followed by point nodes: the horizontal
 * lanczos3 pass (in fixed point on 8-bit input) and the leading per-band
 * nodes (folded into one a·x + b with clamp bounds) against the formulas in
 * double: libvips' vertical pass (taken as is), then lanczos3 weights
 * computed here, edge pixels repeated, then each node. Contrast, Warmth,
 * Invert (a < 0, no clamp), Exposure fold; Saturation does not, nor does the
 * Warmth after it. Within 0.03 of a level (the fixed-point weights: at most
 * 2^-15 × the input's variation over the taps, times the nodes' gains). */
static double lanczos3_ref(double d)
{
    if (d == 0.0) {
        return 1.0;
    }
    if (fabs(d) >= 3.0) {
        return 0.0;
    }
    return 3.0 * sin(M_PI * d) * sin(M_PI * d / 3.0) / (M_PI * M_PI * d * d);
}

static void test_resize_then_points(void **state)
{
    (void)state;
    /* 422 → 300: 10 taps; 400 → 300: 8; the others the generic loop */
    const int sizes[][3] = {
        {422, 316, 300}, {400, 300, 300}, {301, 199, 150}, {160, 480, 200}, {90, 60, 31}};
    /* an 8-bit file (LoadImage keeps the 8-bit pixels for the resize); the
     * second LoadImage, unused, makes the graph non-streaming, so that the
     * kept result can be read again after the encode */
    static const char graph_fmt[] =
        "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
        "\"10\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"y\"}},"
        "\"2\":{\"class_type\":\"CA.ResizeLongEdge\",\"inputs\":{\"image\":[\"1\",0],"
        "\"long_edge\":%d}},"
        "\"3\":{\"class_type\":\"CA.Contrast\",\"inputs\":{\"image\":[\"2\",0],\"amount\":0.3}},"
        "\"4\":{\"class_type\":\"CA.Warmth\",\"inputs\":{\"image\":[\"3\",0],\"amount\":0.9}},"
        "\"5\":{\"class_type\":\"ImageInvert\",\"inputs\":{\"image\":[\"4\",0]}},"
        "\"6\":{\"class_type\":\"CA.Exposure\",\"inputs\":{\"image\":[\"5\",0],\"stops\":0.5}},"
        "\"7\":{\"class_type\":\"CA.Saturation\",\"inputs\":{\"image\":[\"6\",0],\"amount\":1.4}},"
        "\"8\":{\"class_type\":\"CA.Warmth\",\"inputs\":{\"image\":[\"7\",0],\"amount\":-0.5}},"
        "\"9\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"8\",0],\"format\":\"png\"}}}";
    const double l[3] = {0.2126, 0.7152, 0.0722};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int IWd = sizes[s][0];
        int IHt = sizes[s][1];
        int target = sizes[s][2];
        VipsImage *im8 = rgb8_image(IWd, IHt, flats_and_ramps);
        int ew, eh;
        long_edge_size(IWd, IHt, target, &ew, &eh);
        VipsImage *v = NULL;
        assert_int_equal(
            vips_reducev(im8, &v, (double)IHt / eh, "kernel", VIPS_KERNEL_LANCZOS3, NULL), 0);
        assert_int_equal(v->Ysize, eh);
        size_t vlen = 0;
        unsigned char *vp = vips_image_write_to_memory(v, &vlen);
        assert_int_equal(vlen, (size_t)IWd * eh * 3);
        char graph[2048];
        snprintf(graph, sizeof(graph), graph_fmt, target);
        cJSON *g = cJSON_Parse(graph);
        assert_non_null(g);
        void *png = NULL;
        size_t len = 0;
        assert_int_equal(vips_pngsave_buffer(im8, &png, &len, NULL), 0);
        cpu_exec_job_t job = {.input = png, .input_len = len, .keep_result = true};
        char err[256];
        if (cpu_exec_run(g, &job, err, sizeof(err)) != CPU_EXEC_OK) {
            fail_msg("resize + points: %s", err);
        }
        assert_int_equal(job.result->Xsize, ew);
        assert_int_equal(job.result->Ysize, eh);
        float *got = result_floats(&job);
        double sc = (double)IWd / ew;
        double mx = 0;
        double sum = 0;
        for (int y = 0; y < eh; y++) {
            for (int x = 0; x < ew; x++) {
                double c = (x + 0.5) * sc - 0.5;
                double acc[3] = {0, 0, 0};
                double wsum = 0;
                for (int i = (int)floor(c - 3 * sc); i <= (int)ceil(c + 3 * sc); i++) {
                    double wgt = lanczos3_ref((i - c) / sc);
                    int xi = i < 0 ? 0 : (i >= IWd ? IWd - 1 : i);
                    wsum += wgt;
                    for (int k = 0; k < 3; k++) {
                        acc[k] += wgt * vp[((size_t)y * IWd + xi) * 3 + k] / 255.0;
                    }
                }
                const double warm[3] = {1 + 0.08 * 0.9, 1 + 0.02 * 0.9, 1 - 0.08 * 0.9};
                const double cool[3] = {1 - 0.08 * 0.5, 1 - 0.02 * 0.5, 1 + 0.08 * 0.5};
                double u[3];
                for (int k = 0; k < 3; k++) {
                    double t = acc[k] / wsum;
                    t = fmin(1, fmax(0, 1.3 * t + 0.5 * (1 - 1.3)));  /* Contrast 0.3 */
                    t = fmin(1, fmax(0, t * warm[k]));                /* Warmth 0.9 */
                    t = 1 - t;                                        /* Invert */
                    u[k] = fmin(1, fmax(0, t * pow(2.0, 0.5 / 2.2))); /* Exposure 0.5 */
                }
                for (int r = 0; r < 3; r++) {
                    double o = 0;
                    for (int k = 0; k < 3; k++) { /* Saturation 1.4 */
                        o += ((1 - 1.4) * l[k] + (r == k ? 1.4 : 0)) * u[k];
                    }
                    o = fmin(1, fmax(0, o));
                    o = fmin(1, fmax(0, o * cool[r])); /* Warmth −0.5 */
                    double d = fabs(got[((size_t)y * ew + x) * 3 + r] - o);

                    mx = fmax(mx, d);
                    sum += d;
                }
            }
        }
        double mean = sum / ((double)ew * eh * 3);
        printf("resize %dx%d -> %d + points: max |diff| %.4f, mean %.5f levels\n", IWd, IHt, target,
               mx * 255, mean * 255);
        if (mx * 255 > 0.03 || mean * 255 > 0.003) {
            fail_msg("resize %dx%d -> %d + points: max |diff| %.4f, mean %.5f levels", IWd, IHt,
                     target, mx * 255, mean * 255);
        }
        g_free(got);
        g_free(vp);
        g_free(png);
        g_object_unref(v);
        cpu_exec_job_free(&job);
        cJSON_Delete(g);
        g_object_unref(im8);
    }
}

/* The statistics preview decoded by libjpeg itself (an upright baseline
 * JPEG) is byte for byte libvips' shrink-on-load (floor(W/s) × floor(H/s),
 * the top-left of libjpeg's rounded-up output), also at odd sizes and 4:2:0;
 * a progressive file or a rotated one goes through libvips (and is rotated). */
static void test_jpeg_preview_direct(void **state)
{
    (void)state;
    VipsImage *astro = photo("astronaut.png");
    struct {
        int w, h;
        bool sub, prog;
    } cases[] = {{512, 512, false, false}, {503, 389, true, false},   {1003, 757, false, false},
                 {1021, 771, true, false}, {3100, 1700, true, false}, {1003, 757, false, true}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        VipsImage *big = NULL;
        VipsImage *cut = NULL;
        assert_int_equal(vips_resize(astro, &big, 6.1, NULL), 0);
        assert_int_equal(vips_crop(big, &cut, 7, 5, cases[i].w, cases[i].h, NULL), 0);
        void *jpg = NULL;
        size_t len = 0;
        assert_int_equal(vips_jpegsave_buffer(cut, &jpg, &len, "Q", 85, "subsample_mode",
                                              cases[i].sub ? VIPS_FOREIGN_SUBSAMPLE_ON
                                                           : VIPS_FOREIGN_SUBSAMPLE_OFF,
                                              "interlace", cases[i].prog, NULL),
                         0);
        VipsImage *got = cpu_exec_jpeg_preview(jpg, len, true);
        assert_non_null(got);
        /* the direct decode attaches none of the loader's metadata */
        assert_int_equal(vips_image_get_typeof(got, "jpeg-multiscan") == 0, !cases[i].prog);
        int longest = cases[i].w > cases[i].h ? cases[i].w : cases[i].h;
        int shrink = 1;
        while (shrink < 8 && longest / (shrink * 2) >= 384) {
            shrink *= 2;
        }
        VipsImage *ref = NULL;
        assert_int_equal(vips_jpegload_buffer(jpg, len, &ref, "shrink", shrink, NULL), 0);
        assert_int_equal(got->Xsize, ref->Xsize);
        assert_int_equal(got->Ysize, ref->Ysize);
        assert_int_equal(got->Bands, 3);
        size_t a = 0;
        size_t b = 0;
        void *pa = vips_image_write_to_memory(got, &a);
        void *pb = vips_image_write_to_memory(ref, &b);
        assert_int_equal(a, b);
        assert_memory_equal(pa, pb, a);
        g_free(pa);
        g_free(pb);
        g_object_unref(ref);
        g_object_unref(got);
        if (i == 2) { /* rotated: libvips' loader, then autorot */
            VipsImage *turned = NULL;
            assert_int_equal(vips_copy(cut, &turned, NULL), 0);
            vips_image_set_int(turned, VIPS_META_ORIENTATION, 6);
            void *rj = NULL;
            size_t rlen = 0;
            assert_int_equal(vips_jpegsave_buffer(turned, &rj, &rlen, "Q", 85, NULL), 0);
            VipsImage *r = cpu_exec_jpeg_preview(rj, rlen, false);
            assert_non_null(r);
            assert_int_equal(r->Xsize, cases[i].h / shrink);
            assert_int_equal(r->Ysize, cases[i].w / shrink);
            g_object_unref(r);
            g_free(rj);
            g_object_unref(turned);
        }
        g_free(jpg);
        g_object_unref(cut);
        g_object_unref(big);
    }
    g_object_unref(astro);
}

/* portrait_pro on buf with decode ahead on and off: the same status, the same
 * bytes out; returns whether the decode ahead went through libjpeg directly. */
static bool same_with_and_without_ahead(const cJSON *pp, const void *buf, size_t len)
{
    char err[512];
    cpu_exec_set_decode_ahead(CPU_AHEAD_OFF);
    cpu_exec_job_t off = {.input = buf, .input_len = len};
    cpu_exec_status_t st_off = cpu_exec_run(pp, &off, err, sizeof(err));
    cpu_exec_set_decode_ahead(CPU_AHEAD_ON);
    cpu_exec_job_t on = {.input = buf, .input_len = len};
    cpu_exec_status_t st_on = cpu_exec_run(pp, &on, err, sizeof(err));
    assert_int_equal(st_on, st_off);
    if (st_on == CPU_EXEC_OK) {
        assert_int_equal(on.output_len, off.output_len);
        assert_memory_equal(on.output, off.output, on.output_len);
    }
    /* the flags of a run that fell back describe the second (up-front) run */
    bool direct = on.decoded_direct || st_on != CPU_EXEC_OK;
    cpu_exec_job_free(&on);
    cpu_exec_job_free(&off);
    return direct;
}

/* The direct decode is for upright RGB baseline JPEGs only; a progressive or
 * EXIF-rotated JPEG is decoded ahead through libvips' loader; a JPEG whose
 * entropy data is damaged (libjpeg warns and goes on) comes out as without
 * decode ahead — libvips' up-front decode decides. */
static void decode_ahead_variants(const cJSON *pp, VipsImage *big)
{
    void *prog = NULL;
    size_t plen = 0;
    assert_int_equal(vips_jpegsave_buffer(big, &prog, &plen, "Q", 90, "interlace", TRUE, NULL), 0);
    assert_false(same_with_and_without_ahead(pp, prog, plen));
    VipsImage *turned = NULL;
    assert_int_equal(vips_copy(big, &turned, NULL), 0);
    vips_image_set_int(turned, VIPS_META_ORIENTATION, 6);
    void *rot = NULL;
    size_t rlen = 0;
    assert_int_equal(vips_jpegsave_buffer(turned, &rot, &rlen, "Q", 90, NULL), 0);
    assert_false(same_with_and_without_ahead(pp, rot, rlen));
    void *bad = NULL;
    size_t blen = 0;
    assert_int_equal(vips_jpegsave_buffer(big, &bad, &blen, "Q", 90, NULL), 0);
    memset((unsigned char *)bad + blen / 2, 0x00, 64); /* bad Huffman codes mid-image */
    (void)same_with_and_without_ahead(pp, bad, blen);
    g_free(prog);
    g_free(rot);
    g_free(bad);
    g_object_unref(turned);
}

/* Decode ahead: portrait_pro on a JPEG decodes the original in a thread while
 * the statistics preview is computed; the output is the same file as without
 * it. Not for a PNG, nor for a graph without preview statistics. */
static void test_decode_ahead(void **state)
{
    (void)state;
    VipsImage *astro = photo("astronaut.png");
    VipsImage *big = NULL;
    assert_int_equal(vips_resize(astro, &big, 3.0, NULL), 0); /* 1536x1536 */
    void *jpg = NULL;
    size_t jlen = 0;
    assert_int_equal(vips_jpegsave_buffer(big, &jpg, &jlen, "Q", 90, NULL), 0);
    void *png = NULL;
    size_t plen = 0;
    assert_int_equal(vips_pngsave_buffer(big, &png, &plen, "compression", 1, NULL), 0);
    cJSON *pp = load_preset("portrait_pro");
    char err[512];
    cpu_exec_set_decode_ahead(CPU_AHEAD_ON); /* whatever the machine's load */
    cpu_exec_job_t on = {.input = jpg, .input_len = jlen};
    assert_int_equal(cpu_exec_run(pp, &on, err, sizeof(err)), CPU_EXEC_OK);
    assert_true(on.decoded_ahead);
    assert_true(on.decoded_direct); /* an upright RGB baseline JPEG: libjpeg into memory */
    cpu_exec_set_decode_ahead(CPU_AHEAD_OFF);
    cpu_exec_job_t off = {.input = jpg, .input_len = jlen};
    assert_int_equal(cpu_exec_run(pp, &off, err, sizeof(err)), CPU_EXEC_OK);
    cpu_exec_set_decode_ahead(CPU_AHEAD_ON);
    assert_false(off.decoded_ahead);
    assert_false(off.decoded_direct);
    assert_int_equal(on.output_len, off.output_len);
    assert_memory_equal(on.output, off.output, on.output_len);
    cpu_exec_job_t p = {.input = png, .input_len = plen};
    assert_int_equal(cpu_exec_run(pp, &p, err, sizeof(err)), CPU_EXEC_OK);
    assert_false(p.decoded_ahead);
    cJSON *pass = cJSON_Parse(PASS_PNG);
    assert_non_null(pass);
    cpu_exec_job_t q = {.input = jpg, .input_len = jlen};
    assert_int_equal(cpu_exec_run(pass, &q, err, sizeof(err)), CPU_EXEC_OK);
    assert_false(q.decoded_ahead);
    /* a truncated JPEG: the thread's decode fails, the run falls back to the
     * up-front decode, which says unsupported_image */
    cpu_exec_job_t t = {.input = jpg, .input_len = jlen * 7 / 10};
    assert_int_equal(cpu_exec_run(pp, &t, err, sizeof(err)), CPU_EXEC_UNSUPPORTED_IMAGE);
    decode_ahead_variants(pp, big);
    /* AUTO: only with an idle core — fewer pipelines in flight than libvips'
     * threads (2 here); with every thread's core taken by a pipeline the copy
     * costs CPU and saves no wall time */
    int threads = vips_concurrency_get();
    cpu_exec_set_threads(2);
    cpu_exec_set_decode_ahead(CPU_AHEAD_AUTO);
    cpu_exec_set_busy_for_tests(0);
    cpu_exec_job_t idle = {.input = jpg, .input_len = jlen};
    assert_int_equal(cpu_exec_run(pp, &idle, err, sizeof(err)), CPU_EXEC_OK);
    assert_true(idle.decoded_ahead);
    cpu_exec_set_busy_for_tests(1); /* another job's pipeline runs */
    cpu_exec_job_t busy = {.input = jpg, .input_len = jlen};
    assert_int_equal(cpu_exec_run(pp, &busy, err, sizeof(err)), CPU_EXEC_OK);
    assert_false(busy.decoded_ahead);
    assert_int_equal(busy.output_len, on.output_len);
    assert_memory_equal(busy.output, on.output, on.output_len);
    cpu_exec_set_busy_for_tests(0);
    cpu_exec_set_threads(threads);
    cpu_exec_job_free(&idle);
    cpu_exec_job_free(&busy);
    cpu_exec_job_free(&on);
    cpu_exec_job_free(&off);
    cpu_exec_job_free(&p);
    cpu_exec_job_free(&q);
    cpu_exec_job_free(&t);
    cJSON_Delete(pass);
    cJSON_Delete(pp);
    g_free(jpg);
    g_free(png);
    g_object_unref(big);
    g_object_unref(astro);
}

/* A point node, ImageSharpen and Vignette: the kernel computes its input rows
 * in place from the point node's input (reflect-101 edges, radius 1 and 2). */
static void test_sharpen_after_points(void **state)
{
    (void)state;
    enum { SW = 29, SH = 17 };
    static unsigned char src8[SW * SH * 3];
    static float pt[SW * SH * 3];
    static float want[SW * SH * 3];
    for (int i = 0; i < SW * SH * 3; i++) {
        src8[i] = (unsigned char)((i * 97 + (i / 7) * 13) % 256);
        double t = src8[i] / 255.0;
        pt[i] = (float)fmin(1, fmax(0, 1.3 * t + 0.5 * (1 - 1.3))); /* Contrast 0.3 */
    }
    VipsImage *im8 =
        vips_image_new_from_memory_copy(src8, sizeof(src8), SW, SH, 3, VIPS_FORMAT_UCHAR);
    void *png = NULL;
    size_t len = 0;
    assert_int_equal(vips_pngsave_buffer(im8, &png, &len, NULL), 0);
    for (int r = 1; r <= 2; r++) {
        int k = 2 * r + 1;
        double g[5];
        double sum = 0;
        for (int i = 0; i < k; i++) {
            double x = -1.0 + 2.0 * i / (k - 1);
            g[i] = exp(-(x * x) / 2.0);
            sum += g[i];
        }
        for (int y = 0; y < SH; y++) {
            for (int x = 0; x < SW; x++) {
                double dx = ((x + 0.5) / SW - 0.5) * 2;
                double dy = ((y + 0.5) / SH - 0.5) * 2;
                double t = fmin(1, fmax(0, (sqrt(dx * dx + dy * dy) - 0.6) / (sqrt(2.0) - 0.6)));
                double m = 1 - 0.25 * t * t * (3 - 2 * t);
                for (int c = 0; c < 3; c++) {
                    double blur = 0;
                    for (int i = 0; i < k; i++) {
                        for (int j = 0; j < k; j++) {
                            int yy = reflect101(y + i - r, SH);
                            int xx = reflect101(x + j - r, SW);
                            blur += g[i] * g[j] / (sum * sum) * pt[(yy * SW + xx) * 3 + c];
                        }
                    }
                    double v = pt[(y * SW + x) * 3 + c];
                    v = fmin(1, fmax(0, v + 4.0 * (v - blur))); /* alpha 0.4 */
                    want[(y * SW + x) * 3 + c] = (float)(v * m);
                }
            }
        }
        char graph[1024];
        snprintf(graph, sizeof(graph),
                 "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                 "\"2\":{\"class_type\":\"CA.Contrast\",\"inputs\":{\"image\":[\"1\",0],"
                 "\"amount\":0.3}},"
                 "\"3\":{\"class_type\":\"ImageSharpen\",\"inputs\":{\"image\":[\"2\",0],"
                 "\"sharpen_radius\":%d,\"sigma\":1.0,\"alpha\":0.4}},"
                 "\"4\":{\"class_type\":\"CA.Vignette\",\"inputs\":{\"image\":[\"3\",0],"
                 "\"strength\":0.25,\"radius\":0.6}},"
                 "\"5\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"4\",0],"
                 "\"format\":\"png\"}}}",
                 r);
        cJSON *gr = cJSON_Parse(graph);
        assert_non_null(gr);
        char err[256];
        /* float input (kept result) */
        VipsImage *scaled = NULL;
        VipsImage *f = NULL;
        assert_int_equal(vips_linear1(im8, &scaled, 1.0 / 255.0, 0.0, NULL), 0);
        assert_int_equal(vips_cast(scaled, &f, VIPS_FORMAT_FLOAT, NULL), 0);
        cpu_exec_job_t job = {.input_image = f, .keep_result = true};
        if (cpu_exec_run(gr, &job, err, sizeof(err)) != CPU_EXEC_OK) {
            fail_msg("sharpen chain: %s", err);
        }
        float *px = result_floats(&job);
        for (int i = 0; i < SW * SH * 3; i++) {
            if (fabsf(px[i] - want[i]) > 2e-5f) {
                fail_msg("r=%d px %d: %f want %f", r, i, px[i], want[i]);
            }
        }
        g_free(px);
        cpu_exec_job_free(&job);
        /* 8-bit file (lookup table, streamed): the encoded pixels */
        cpu_exec_job_t j8 = {.input = png, .input_len = len};
        if (cpu_exec_run(gr, &j8, err, sizeof(err)) != CPU_EXEC_OK) {
            fail_msg("sharpen chain 8-bit: %s", err);
        }
        VipsImage *dec = vips_image_new_from_buffer(j8.output, j8.output_len, "", NULL);
        assert_non_null(dec);
        size_t dlen = 0;
        unsigned char *d = vips_image_write_to_memory(dec, &dlen);
        assert_int_equal(dlen, sizeof(src8));
        for (int i = 0; i < SW * SH * 3; i++) {
            int t = (int)fminf(255.0f, fmaxf(0.0f, want[i] * 255.0f + 1e-4f));
            if (abs((int)d[i] - t) > (fabsf(want[i] * 255.0f - rintf(want[i] * 255.0f)) < 1e-3f)) {
                fail_msg("r=%d encoded px %d: %d want %d", r, i, d[i], t);
            }
        }
        g_free(d);
        g_object_unref(dec);
        cpu_exec_job_free(&j8);
        g_object_unref(f);
        g_object_unref(scaled);
        cJSON_Delete(gr);
    }
    g_free(png);
    g_object_unref(im8);
}

/* The work budget with the real image: a 1×64 photo scaled to a width of 16384
 * (keeping its aspect) would be 16384×1048576 pixels. The validator, which
 * takes a photo to be 6000×4000, lets the graph through; the walk checks each
 * node's size from its real input before running it, and refuses. */
static void test_work_budget_real_sizes(void **state)
{
    (void)state;
    static float tall[1 * 64 * 3];
    VipsImage *in =
        vips_image_new_from_memory_copy(tall, sizeof(tall), 1, 64, 3, VIPS_FORMAT_FLOAT);
    assert_non_null(in);
    cJSON *graph = cJSON_Parse(
        "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
        "\"2\":{\"class_type\":\"ImageScale\",\"inputs\":{\"image\":[\"1\",0],"
        "\"upscale_method\":\"lanczos\",\"width\":16384,\"height\":0,\"crop\":\"disabled\"}},"
        "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}");
    assert_non_null(graph);
    cJSON *verr = NULL;
    assert_int_equal(graph_validate(graph, cpu_exec_registry(), &verr), GRAPH_OK);
    cpu_exec_job_t job = {.input_image = in};
    char err[512];
    assert_int_equal(cpu_exec_run(graph, &job, err, sizeof(err)), CPU_EXEC_ERROR);
    if (strstr(err, "work budget") == NULL) {
        fail_msg("error without the budget: %s", err);
    }
    cpu_exec_job_free(&job);
    cJSON_Delete(graph);
    g_object_unref(in);
}

int main(void)
{
    if (cpu_exec_init("test_cpu_exec") != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blur_and_sharpen),
        cmocka_unit_test(test_blend_modes),
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_empty_and_encode),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_presets_on_photos),
        cmocka_unit_test(test_input_formats),
        cmocka_unit_test(test_exif_orientation),
        cmocka_unit_test(test_corrupt_inputs),
        cmocka_unit_test(test_statistics_preview),
        cmocka_unit_test(test_point_chain),
        cmocka_unit_test(test_resize_long_edge),
        cmocka_unit_test(test_resize_then_points),
        cmocka_unit_test(test_sharpen_after_points),
        cmocka_unit_test(test_decode_ahead),
        cmocka_unit_test(test_jpeg_preview_direct),
        cmocka_unit_test(test_work_budget_real_sizes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cpu_exec_shutdown();
    return rc;
}
