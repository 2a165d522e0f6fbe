/*
 * Unit tests for the job-worker's image front door (services/job-worker/
 * cpu_load.c through cpu_exec.h): files from a user's Drive are untrusted.
 * Only JPEG, PNG, WebP, TIFF and HEIF open, chosen by magic bytes (an SVG or
 * a PDF that libvips would sniff is refused), every other libvips loader is
 * blocked, the pixel limit and the decoded-memory budget are checked on the
 * header before decoding (a PNG bomb fails fast), and CA.Watermark draws its
 * text literally (no Pango markup).
 *
 * Links the job-worker's objects (the Makefile does so for test_cpu_exec*).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_exec.h"
#include "now.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LeakSanitizer: libx265 (used only here, to make the HEIC test input) leaks
 * ~1 KB per encode inside x265_malloc; fontconfig's font set, loaded once by
 * Pango for vips_text (CA.Watermark), lives until exit (nothing calls FcFini). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:x265_malloc\nleak:libfontconfig.so\n";
}

static const char PASS_PNG[] =
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
    "\"2\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"1\",0],\"format\":\"png\"}}}";

/* A 121-byte SVG that libvips' sniffing opens as 20000x20000x4. */
static const char SVG[] = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"20000\" "
                          "height=\"20000\"><rect width=\"9\" height=\"9\" fill=\"red\"/></svg>";

/* A minimal PDF, one page of 200000x200000 points. */
static const char PDF[] = "%PDF-1.4\n"
                          "1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                          "2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
                          "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200000 200000]>>endobj\n"
                          "trailer<</Root 1 0 R>>\n%EOF\n";

static cpu_exec_status_t run_bytes(const char *graph_json, const void *buf, size_t len,
                                   long long max_pixels, cpu_exec_job_t *job, char *err,
                                   size_t errlen)
{
    cJSON *g = cJSON_Parse(graph_json);
    assert_non_null(g);
    job->input = buf;
    job->input_len = len;
    job->max_pixels = max_pixels;
    cpu_exec_status_t st = cpu_exec_run(g, job, err, errlen);
    job->input = NULL;
    cJSON_Delete(g);
    return st;
}

/* A 64x48 orange-and-blue 8-bit sRGB image. */
static VipsImage *small_image(void)
{
    VipsImage *black = NULL;
    VipsImage *im = NULL;
    double rgb[3] = {230, 120, 40};
    assert_int_equal(vips_black(&black, 64, 48, "bands", 3, NULL), 0);
    assert_int_equal(vips_linear(black, &im, (double[]){1, 1, 1}, rgb, 3, "uchar", TRUE, NULL), 0);
    g_object_unref(black);
    return im;
}

/* A real PNG bomb: 20000x20000 1-bit black, a few tens of KB. */
static void *png_bomb(size_t *len)
{
    VipsImage *black = NULL;
    void *buf = NULL;
    assert_int_equal(vips_black(&black, 20000, 20000, NULL), 0);
    assert_int_equal(vips_pngsave_buffer(black, &buf, len, "bitdepth", 1, "compression", 9,
                                         "filter", VIPS_FOREIGN_PNG_FILTER_NONE, NULL),
                     0);
    g_object_unref(black);
    assert_true(*len < 200 * 1024);
    return buf;
}

static void assert_refused(const char *what, const void *buf, size_t len, cpu_exec_status_t want,
                           const char *code)
{
    cpu_exec_job_t job = {0};
    char err[512] = "";
    int64_t t0 = now_mono_ms();
    cpu_exec_status_t st = run_bytes(PASS_PNG, buf, len, 0, &job, err, sizeof(err));
    int64_t ms = now_mono_ms() - t0;
    if (st != want || strncmp(err, code, strlen(code)) != 0) {
        fail_msg("%s: status %d (%s), want %d (%s)", what, st, err, want, code);
    }
    assert_null(job.output);
    /* Refused from the header: nothing decoded. */
    if (ms > 1000) {
        fail_msg("%s: refused after %ld ms, want < 1000", what, (long)ms);
    }
    cpu_exec_job_free(&job);
}

/* An SVG and a PDF (which libvips would sniff and render huge), a GIF and a
 * JPEG 2000 (real images, formats the product does not take) are refused
 * as unsupported_image whatever the file is called. */
static void test_refuses_other_formats(void **state)
{
    (void)state;
    assert_int_equal(cpu_exec_format(SVG, strlen(SVG)), CPU_FORMAT_NONE);
    assert_refused("SVG named .jpg", SVG, strlen(SVG), CPU_EXEC_UNSUPPORTED_IMAGE,
                   "unsupported_image");
    assert_refused("PDF", PDF, strlen(PDF), CPU_EXEC_UNSUPPORTED_IMAGE, "unsupported_image");

    VipsImage *im = small_image();
    void *gif = NULL;
    size_t gif_len = 0;
    assert_int_equal(vips_gifsave_buffer(im, &gif, &gif_len, NULL), 0);
    assert_refused("GIF", gif, gif_len, CPU_EXEC_UNSUPPORTED_IMAGE, "unsupported_image");
    g_free(gif);
    void *jp2 = NULL;
    size_t jp2_len = 0;
    assert_int_equal(vips_jp2ksave_buffer(im, &jp2, &jp2_len, NULL), 0);
    assert_refused("JPEG 2000", jp2, jp2_len, CPU_EXEC_UNSUPPORTED_IMAGE, "unsupported_image");
    g_free(jp2);
    g_object_unref(im);

    /* A PNG signature on an SVG body is a PNG that fails to open, not an SVG. */
    char fake[sizeof(SVG) + 8];
    memcpy(fake, "\x89PNG\r\n\x1a\n", 8);
    memcpy(fake + 8, SVG, sizeof(SVG));
    assert_refused("SVG behind a PNG signature", fake, sizeof(fake), CPU_EXEC_UNSUPPORTED_IMAGE,
                   "unsupported_image");
}

/* A real PNG header followed by a tEXt chunk that declares 1.5 GB and carries
 * 100 bytes: libpng would allocate the declared length before reading (the
 * finding of fuzz_image_load in CI). The front door refuses it from the chunk
 * walk; a real PNG with a real 1 MB text chunk still opens. */
static void test_png_chunk_longer_than_file(void **state)
{
    (void)state;
    /* The signature and IHDR (8 + 25 bytes, CRC included) of a real PNG, then
     * the forged chunk: its CRC would come after the 1.5 GB, never reached. */
    VipsImage *im = small_image();
    void *real = NULL;
    size_t real_len = 0;
    assert_int_equal(vips_pngsave_buffer(im, &real, &real_len, NULL), 0);
    assert_true(real_len > 33);
    assert_memory_equal((char *)real + 12, "IHDR", 4);
    unsigned char png[33 + 8 + 100];
    memcpy(png, real, 33);
    g_free(real);
    static const unsigned char forged[8] = {0x5D, 0x00, 0x00, 0x03, 't', 'E', 'X', 't'};
    memcpy(png + 33, forged, sizeof(forged)); /* 0x5D000003 = 1560281091 bytes */
    memset(png + 41, 'x', 100);
    size_t n = sizeof(png);
    char err[256];
    assert_int_equal(cpu_exec_open(png, n, VIPS_ACCESS_SEQUENTIAL, 0, NULL, err, sizeof(err)),
                     CPU_EXEC_UNSUPPORTED_IMAGE);
    assert_non_null(strstr(err, "chunk is longer than the file"));
    assert_refused("PNG with a 1.5 GB tEXt", png, n, CPU_EXEC_UNSUPPORTED_IMAGE,
                   "unsupported_image");

    /* A real PNG carrying a 1 MB comment opens. */
    VipsImage *copy = NULL;
    assert_int_equal(vips_copy(im, &copy, NULL), 0);
    char *comment = g_malloc(1 << 20);
    uint32_t x = 2463534242u; /* xorshift: text that does not compress */
    for (size_t i = 0; i < (1 << 20) - 1; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        comment[i] = (char)('a' + x % 26);
    }
    comment[(1 << 20) - 1] = '\0';
    vips_image_set_string(copy, "png-comment-0-big", comment);
    g_free(comment);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(vips_pngsave_buffer(copy, &buf, &len, NULL), 0);
    assert_true(len > (1 << 19));
    VipsImage *out = NULL;
    assert_int_equal(cpu_exec_open(buf, len, VIPS_ACCESS_SEQUENTIAL, 0, &out, err, sizeof(err)),
                     CPU_EXEC_OK);
    g_object_unref(out);
    /* Cut inside that chunk: refused before libpng sees it. */
    assert_int_equal(cpu_exec_open(buf, len / 2, VIPS_ACCESS_SEQUENTIAL, 0, NULL, err, sizeof(err)),
                     CPU_EXEC_UNSUPPORTED_IMAGE);
    g_free(buf);
    g_object_unref(copy);
    g_object_unref(im);
}

/* Every loader but the allowed ones is blocked in libvips itself (and those
 * of libvips' modules other than HEIF are not even loaded): neither libvips'
 * own sniffing open nor a direct call gets an image. */
static void test_other_loaders_blocked(void **state)
{
    (void)state;
    VipsImage *im = vips_image_new_from_buffer(SVG, strlen(SVG), "", NULL);
    assert_null(im);
    im = vips_image_new_from_buffer(PDF, strlen(PDF), "", NULL);
    assert_null(im);
    assert_int_not_equal(vips_svgload_buffer((void *)SVG, strlen(SVG), &im, NULL), 0);
    assert_null(im);
    assert_int_not_equal(vips_pdfload_buffer((void *)PDF, strlen(PDF), &im, NULL), 0);
    assert_null(im);
    assert_int_not_equal(vips_magickload_buffer((void *)SVG, strlen(SVG), &im, NULL), 0);
    assert_null(im);
    vips_error_clear();
}

/* cpu_exec_init opens no libvips module: the ImageMagick, PDF, OpenSlide and
 * JPEG XL modules (~25 ms of dynamic linking per process, for blocked
 * loaders) are not even registered, and VIPSHOME is left as it was; the HEIF
 * module is opened for the first HEIF input (cpu_exec_heif_ready) and its
 * loader is then not blocked. */
static void test_only_heif_module(void **state)
{
    (void)state;
    const char *absent[] = {"magickload_buffer", "pdfload_buffer", "openslideload",
                            "jxlload_buffer"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
        if (vips_type_find("VipsOperation", absent[i]) != 0) {
            fail_msg("%s is registered: its module was loaded", absent[i]);
        }
    }
    const char *home = getenv("VIPSHOME");
    assert_true(home == NULL || strcmp(home, "/dev/null") != 0);
    /* the first test of the suite: no HEIF input yet */
    assert_int_equal(vips_type_find("VipsOperation", "heifload_buffer"), 0);
    cpu_exec_heif_ready();
    cpu_exec_heif_ready();
    assert_int_not_equal(vips_type_find("VipsOperation", "heifload_buffer"), 0);
    assert_int_not_equal(vips_type_find("VipsOperation", "heifsave_buffer"), 0);
    VipsImage *im = small_image();
    void *buf = NULL;
    size_t len = 0;
    if (vips_heifsave_buffer(im, &buf, &len, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_HEVC,
                             NULL) != 0) {
        fail_msg("cannot encode the test input: %s", vips_error_buffer());
    }
    VipsImage *back = NULL;
    char err[256];
    assert_int_equal(cpu_exec_open(buf, len, VIPS_ACCESS_SEQUENTIAL, 0, &back, err, sizeof(err)),
                     CPU_EXEC_OK);
    assert_int_equal(back->Xsize, im->Xsize);
    g_object_unref(back);
    g_free(buf);
    g_object_unref(im);
}

/* A PNG whose header says 20000x20000 (400 MP) fails fast with
 * image_too_large; the limit is the caller's when set. */
static void test_pixel_limit(void **state)
{
    (void)state;
    size_t len = 0;
    void *bomb = png_bomb(&len);
    assert_int_equal(cpu_exec_format(bomb, len), CPU_FORMAT_PNG);
    assert_refused("20000x20000 PNG", bomb, len, CPU_EXEC_TOO_LARGE, "image_too_large");
    char err[256];
    assert_int_equal(cpu_exec_open(bomb, len, VIPS_ACCESS_SEQUENTIAL, 0, NULL, err, sizeof(err)),
                     CPU_EXEC_TOO_LARGE);
    assert_non_null(strstr(err, "20000x20000"));
    /* Allowed under a 400 MP limit (header only: nothing decoded). */
    VipsImage *hdr = NULL;
    assert_int_equal(
        cpu_exec_open(bomb, len, VIPS_ACCESS_SEQUENTIAL, 400000000LL, &hdr, err, sizeof(err)),
        CPU_EXEC_OK);
    assert_int_equal(hdr->Xsize, 20000);
    g_object_unref(hdr);
    g_free(bomb);

    /* 64x48 = 3072 pixels: over a 3000-pixel limit, within 3072. */
    VipsImage *im = small_image();
    void *png = NULL;
    assert_int_equal(vips_pngsave_buffer(im, &png, &len, NULL), 0);
    g_object_unref(im);
    cpu_exec_job_t job = {0};
    assert_int_equal(run_bytes(PASS_PNG, png, len, 3000, &job, err, sizeof(err)),
                     CPU_EXEC_TOO_LARGE);
    assert_null(job.output);
    cpu_exec_job_free(&job);
    assert_int_equal(run_bytes(PASS_PNG, png, len, 3072, &job, err, sizeof(err)), CPU_EXEC_OK);
    cpu_exec_job_free(&job);
    g_free(png);
}

/* Within the pixel limit but over the memory budget (8 bytes a pixel of the
 * limit): a 100x100 TIFF of 4 float bands needs 160 KB decoded. */
static void test_memory_budget(void **state)
{
    (void)state;
    VipsImage *black = NULL;
    VipsImage *dbl = NULL;
    assert_int_equal(vips_black(&black, 100, 100, "bands", 4, NULL), 0);
    assert_int_equal(vips_cast(black, &dbl, VIPS_FORMAT_FLOAT, NULL), 0);
    void *tif = NULL;
    size_t len = 0;
    assert_int_equal(vips_tiffsave_buffer(dbl, &tif, &len, NULL), 0);
    g_object_unref(black);
    g_object_unref(dbl);
    char err[256];
    /* 10000 pixels ≤ 15000, but 160000 bytes > 15000 × 8. */
    cpu_exec_job_t job = {0};
    assert_int_equal(run_bytes(PASS_PNG, tif, len, 15000, &job, err, sizeof(err)),
                     CPU_EXEC_TOO_LARGE);
    assert_non_null(strstr(err, "budget"));
    assert_null(job.output);
    cpu_exec_job_free(&job);
    assert_int_equal(cpu_exec_open(tif, len, VIPS_ACCESS_RANDOM, 20000, NULL, err, sizeof(err)),
                     CPU_EXEC_OK);
    g_free(tif);
}

/* The product's formats still open, each by its own magic bytes. */
static void test_allowed_formats(void **state)
{
    (void)state;
    VipsImage *im = small_image();
    struct {
        const char *name;
        cpu_exec_format_t want;
    } cases[] = {
        {"JPEG", CPU_FORMAT_JPEG}, {"PNG", CPU_FORMAT_PNG},   {"WebP", CPU_FORMAT_WEBP},
        {"TIFF", CPU_FORMAT_TIFF}, {"HEIC", CPU_FORMAT_HEIF}, {"AVIF", CPU_FORMAT_HEIF},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        void *buf = NULL;
        size_t len = 0;
        int rc = -1;
        switch (i) {
        case 0:
            rc = vips_jpegsave_buffer(im, &buf, &len, NULL);
            break;
        case 1:
            rc = vips_pngsave_buffer(im, &buf, &len, NULL);
            break;
        case 2:
            rc = vips_webpsave_buffer(im, &buf, &len, NULL);
            break;
        case 3:
            rc = vips_tiffsave_buffer(im, &buf, &len, NULL);
            break;
        case 4:
            cpu_exec_heif_ready(); /* the module opens with the first HEIF input */
            rc = vips_heifsave_buffer(im, &buf, &len, "compression",
                                      VIPS_FOREIGN_HEIF_COMPRESSION_HEVC, NULL);
            break;
        default:
            cpu_exec_heif_ready();
            rc = vips_heifsave_buffer(im, &buf, &len, "compression",
                                      VIPS_FOREIGN_HEIF_COMPRESSION_AV1, NULL);
            break;
        }
        if (rc != 0) {
            fail_msg("%s: cannot encode the test input: %s", cases[i].name, vips_error_buffer());
        }
        assert_int_equal(cpu_exec_format(buf, len), cases[i].want);
        cpu_exec_job_t job = {0};
        char err[512];
        cpu_exec_status_t st = run_bytes(PASS_PNG, buf, len, 0, &job, err, sizeof(err));
        if (st != CPU_EXEC_OK) {
            fail_msg("%s: %s", cases[i].name, err);
        }
        assert_int_equal(job.in_width, 64);
        assert_int_equal(job.in_height, 48);
        cpu_exec_job_free(&job);
        g_free(buf);
    }
    g_object_unref(im);
}

/* The number of output pixels brighter than mid-grey of a watermark with
 * `text` on a black 400x100 image, or -1 when the run fails. */
static long watermark_ink(const char *text)
{
    cJSON *g = cJSON_Parse(
        "{\"1\":{\"class_type\":\"EmptyImage\",\"inputs\":{\"width\":400,\"height\":100}},"
        "\"2\":{\"class_type\":\"CA.Watermark\",\"inputs\":{\"image\":[\"1\",0],\"text\":\"\","
        "\"opacity\":1.0,\"size\":0.3,\"position\":\"center\"}},"
        "\"3\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"2\",0],\"format\":\"png\"}}}");
    assert_non_null(g);
    cJSON *inputs = cJSON_GetObjectItem(cJSON_GetObjectItem(g, "2"), "inputs");
    cJSON_ReplaceItemInObject(inputs, "text", cJSON_CreateString(text));
    cpu_exec_job_t job = {0};
    char err[512];
    cpu_exec_status_t st = cpu_exec_run(g, &job, err, sizeof(err));
    cJSON_Delete(g);
    if (st != CPU_EXEC_OK) {
        print_message("watermark \"%s\": %s\n", text, err);
        cpu_exec_job_free(&job);
        return -1;
    }
    VipsImage *out = NULL;
    assert_int_equal(vips_pngload_buffer(job.output, job.output_len, &out, NULL), 0);
    VipsImage *bright = NULL;
    VipsImage *band = NULL;
    double mean = 0;
    assert_int_equal(vips_extract_band(out, &band, 0, NULL), 0);
    assert_int_equal(vips_moreeq_const1(band, &bright, 128, NULL), 0);
    assert_int_equal(vips_avg(bright, &mean, NULL), 0);
    long ink = (long)(mean / 255.0 * out->Xsize * out->Ysize + 0.5);
    g_object_unref(bright);
    g_object_unref(band);
    g_object_unref(out);
    cpu_exec_job_free(&job);
    return ink;
}

/* CA.Watermark draws Pango markup literally: "<span></span>W" has more ink
 * than "W" (with markup, the same), and unbalanced markup still draws. */
static void test_watermark_no_markup(void **state)
{
    (void)state;
    long plain = watermark_ink("W");
    long tags = watermark_ink("<span></span>W");
    assert_true(plain > 0);
    if (tags <= plain) {
        fail_msg("\"<span></span>W\" drew %ld bright pixels, \"W\" %ld: markup was interpreted",
                 tags, plain);
    }
    long unbalanced = watermark_ink("<b>bold & <i>");
    assert_true(unbalanced > 0);
}

int main(void)
{
    if (cpu_exec_init("test_cpu_exec_front_door") != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_only_heif_module), /* first: before any HEIF input */
        cmocka_unit_test(test_refuses_other_formats),
        cmocka_unit_test(test_other_loaders_blocked),
        cmocka_unit_test(test_png_chunk_longer_than_file),
        cmocka_unit_test(test_pixel_limit),
        cmocka_unit_test(test_memory_budget),
        cmocka_unit_test(test_allowed_formats),
        cmocka_unit_test(test_watermark_no_markup),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cpu_exec_shutdown();
    return rc;
}
