/*
 * cpu_float — the executor's computations in C on packed float buffers (HWC):
 * image ↔ buffer, ComfyUI's common_upscale (nearest-exact, bilinear, bicubic,
 * area; lanczos through vips_resize) and the gaussian blur of the buffer path
 * (ImageBlur, ImageSharpen when the radius is too large for the lazy
 * pipeline). Formulas of ComfyUI's source; see docs/image-pipeline.md.
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cpu_to_fbuf(ctx_t *c, VipsImage *im, fbuf_t *fb)
{
    VipsImage *f = NULL;
    if (vips_cast(im, &f, VIPS_FORMAT_FLOAT, NULL) != 0) {
        return cpu_vips_fail(c, "cast");
    }
    size_t size = 0;
    fb->px = vips_image_write_to_memory(f, &size);
    fb->w = f->Xsize;
    fb->h = f->Ysize;
    fb->c = f->Bands;
    g_object_unref(f);
    if (fb->px == NULL) {
        return cpu_vips_fail(c, "read pixels");
    }
    return 0;
}

/* Wraps (and frees) px as a new float image. */
VipsImage *cpu_from_floats(ctx_t *c, float *px, int w, int h, int bands)
{
    VipsImage *im = vips_image_new_from_memory_copy(px, (size_t)w * h * bands * sizeof(float), w, h,
                                                    bands, VIPS_FORMAT_FLOAT);
    g_free(px);
    if (im == NULL) {
        cpu_vips_fail(c, "new image");
    }
    return im;
}

static float cubic1(float x, float a)
{
    return ((a + 2) * x - (a + 3)) * x * x + 1;
}

static float cubic2(float x, float a)
{
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* One axis of the bilinear resampler (the source coordinate clamped at 0):
 * output index j → source index *i, the step to the next source pixel (0 at
 * the last one) and the weights of the two. */
static void bilinear_axis(float scale, int j, int len, int *i, int *step, float *w0, float *w1)
{
    float f = scale * (j + 0.5f) - 0.5f;
    if (f < 0) {
        f = 0;
    }
    *i = (int)f;
    *step = *i < len - 1 ? 1 : 0;
    *w1 = f - *i;
    *w0 = 1.0f - *w1;
}

/* common_upscale's crop="center": the offsets (x0, y0) of the centred W×H
 * window with the aspect ratio of w×h (a margin of x0 or y0 on both sides). */
static void center_crop(int W, int H, int w, int h, int *x0, int *y0)
{
    double old_aspect = (double)W / H;
    double new_aspect = (double)w / h;
    *x0 = 0;
    *y0 = 0;
    if (old_aspect > new_aspect) {
        *x0 = (int)rint((W - W * (new_aspect / old_aspect)) / 2);
    } else if (old_aspect < new_aspect) {
        *y0 = (int)rint((H - H * (old_aspect / new_aspect)) / 2);
    }
}

float *cpu_exec_upscale(const float *src, int W, int H, int C, int w, int h, const char *method,
                        const char *crop)
{
    if (W <= 0 || H <= 0 || w <= 0 || h <= 0 || C <= 0) {
        return NULL;
    }
    int x0 = 0;
    int y0 = 0;
    int cw = W;
    int ch = H;
    if (crop != NULL && strcmp(crop, "center") == 0) {
        center_crop(W, H, w, h, &x0, &y0);
        cw = W - 2 * x0;
        ch = H - 2 * y0;
    }
    float *dst = g_try_malloc((size_t)w * h * C * sizeof(float));
    if (dst == NULL) {
        return NULL;
    }
#define SRC(x, y, k) src[(((size_t)(y0 + (y)) * W) + (size_t)(x0 + (x))) * C + (k)]
    /* a job told to stop (cpu_stop_now) gives up between rows */
#define STOP_ROW()                                                                                 \
    if (cpu_stop_now()) {                                                                          \
        g_free(dst);                                                                               \
        return NULL;                                                                               \
    }
    float sx = (float)cw / (float)w;
    float sy = (float)ch / (float)h;
    if (strcmp(method, "nearest-exact") == 0) {
        for (int j = 0; j < h; j++) {
            STOP_ROW();
            int yy = clampi((int)floorf((j + 0.5f) * sy), 0, ch - 1);
            for (int i = 0; i < w; i++) {
                int xx = clampi((int)floorf((i + 0.5f) * sx), 0, cw - 1);
                for (int k = 0; k < C; k++) {
                    dst[((size_t)j * w + i) * C + k] = SRC(xx, yy, k);
                }
            }
        }
    } else if (strcmp(method, "bilinear") == 0) {
        for (int j = 0; j < h; j++) {
            STOP_ROW();
            int yi;
            int yp;
            float ly0;
            float ly1;
            bilinear_axis(sy, j, ch, &yi, &yp, &ly0, &ly1);
            for (int i = 0; i < w; i++) {
                int xi;
                int xp;
                float lx0;
                float lx1;
                bilinear_axis(sx, i, cw, &xi, &xp, &lx0, &lx1);
                for (int k = 0; k < C; k++) {
                    dst[((size_t)j * w + i) * C + k] =
                        ly0 * (lx0 * SRC(xi, yi, k) + lx1 * SRC(xi + xp, yi, k)) +
                        ly1 * (lx0 * SRC(xi, yi + yp, k) + lx1 * SRC(xi + xp, yi + yp, k));
                }
            }
        }
    } else if (strcmp(method, "bicubic") == 0) {
        const float A = -0.75f;
        for (int j = 0; j < h; j++) {
            STOP_ROW();
            float fy = sy * (j + 0.5f) - 0.5f;
            int yi = (int)floorf(fy);
            float ty = fy - yi;
            float cy[4] = {cubic2(ty + 1, A), cubic1(ty, A), cubic1(1 - ty, A), cubic2(2 - ty, A)};
            for (int i = 0; i < w; i++) {
                float fx = sx * (i + 0.5f) - 0.5f;
                int xi = (int)floorf(fx);
                float tx = fx - xi;
                float cx[4] = {cubic2(tx + 1, A), cubic1(tx, A), cubic1(1 - tx, A),
                               cubic2(2 - tx, A)};
                for (int k = 0; k < C; k++) {
                    float acc = 0;
                    for (int m = 0; m < 4; m++) {
                        int yy = clampi(yi - 1 + m, 0, ch - 1);
                        float row = 0;
                        for (int q = 0; q < 4; q++) {
                            int xx = clampi(xi - 1 + q, 0, cw - 1);
                            row += cx[q] * SRC(xx, yy, k);
                        }
                        acc += cy[m] * row;
                    }
                    dst[((size_t)j * w + i) * C + k] = acc;
                }
            }
        }
    } else if (strcmp(method, "area") == 0) {
        for (int j = 0; j < h; j++) {
            STOP_ROW();
            int ys = (int)floor((double)j * ch / h);
            int ye = (int)ceil((double)(j + 1) * ch / h);
            for (int i = 0; i < w; i++) {
                int xs = (int)floor((double)i * cw / w);
                int xe = (int)ceil((double)(i + 1) * cw / w);
                for (int k = 0; k < C; k++) {
                    float sum = 0;
                    for (int yy = ys; yy < ye; yy++) {
                        for (int xx = xs; xx < xe; xx++) {
                            sum += SRC(xx, yy, k);
                        }
                    }
                    dst[((size_t)j * w + i) * C + k] = sum / (float)((ye - ys) * (xe - xs));
                }
            }
        }
    } else {
        g_free(dst);
        return NULL;
    }
#undef SRC
#undef STOP_ROW
    return dst;
}

/* common_upscale on a VipsImage; lanczos through vips_resize (see docs). */
VipsImage *cpu_upscale_image(ctx_t *c, VipsImage *in, int w, int h, const char *method,
                             const char *crop)
{
    if (strcmp(method, "lanczos") == 0) {
        VipsImage *src = in;
        VipsImage *cropped = NULL;
        if (strcmp(crop, "center") == 0) {
            int x0;
            int y0;
            center_crop(in->Xsize, in->Ysize, w, h, &x0, &y0);
            if (vips_extract_area(in, &cropped, x0, y0, in->Xsize - 2 * x0, in->Ysize - 2 * y0,
                                  NULL) != 0) {
                cpu_vips_fail(c, "crop");
                return NULL;
            }
            src = cropped;
        }
        VipsImage *out = NULL;
        int rc = vips_resize(src, &out, (double)w / src->Xsize, "vscale", (double)h / src->Ysize,
                             "kernel", VIPS_KERNEL_LANCZOS3, NULL);
        if (cropped != NULL) {
            g_object_unref(cropped);
        }
        if (rc != 0) {
            cpu_vips_fail(c, "resize");
            return NULL;
        }
        if (out->Xsize != w || out->Ysize != h) {
            /* vips_resize may round a size differently: pad or trim by one. */
            VipsImage *fixed = NULL;
            rc = vips_embed(out, &fixed, 0, 0, w, h, "extend", VIPS_EXTEND_COPY, NULL);
            g_object_unref(out);
            if (rc != 0) {
                cpu_vips_fail(c, "resize fix");
                return NULL;
            }
            out = fixed;
        }
        return out;
    }
    fbuf_t fb;
    if (cpu_to_fbuf(c, in, &fb) != 0) {
        return NULL;
    }
    float *px = cpu_exec_upscale(fb.px, fb.w, fb.h, fb.c, w, h, method, crop);
    g_free(fb.px);
    if (px == NULL) {
        cpu_fail(c, CPU_EXEC_ERROR, "resample %s failed", method);
        return NULL;
    }
    return cpu_from_floats(c, px, w, h, fb.c);
}

/* reflect-101: -1 → 1, n → n-2 (repeated for radii past the edge). */
int cpu_reflect101(int p, int len)
{
    if (len == 1) {
        return 0;
    }
    while (p < 0 || p >= len) {
        if (p < 0) {
            p = -p;
        }
        if (p >= len) {
            p = 2 * (len - 1) - p;
        }
    }
    return p;
}

/* The normalised 1-D factor of ComfyUI's gaussian_kernel(k, sigma):
 * exp(-x²/2σ²) on linspace(-1, 1, k), into g[0..k-1]. */
void cpu_gaussian_1d(double *g, int k, double sigma)
{
    double sum = 0;
    for (int i = 0; i < k; i++) {
        double x = -1.0 + 2.0 * i / (k - 1);
        g[i] = exp(-(x * x) / (2 * sigma * sigma));
        sum += g[i];
    }
    for (int i = 0; i < k; i++) {
        g[i] /= sum;
    }
}

/* ComfyUI's gaussian_kernel(2r+1, sigma) is separable: the 1-D factor
 * exp(-x²/2σ²) on linspace(-1, 1, k), normalised. Returns a new g_malloc'd
 * blurred copy of fb's pixels (HWC), with reflect-101 borders. */
float *cpu_gaussian_blur(const fbuf_t *fb, int r, double sigma)
{
    int k = 2 * r + 1;
    double *g = g_new(double, k);
    cpu_gaussian_1d(g, k, sigma);
    size_t total = (size_t)fb->w * fb->h * fb->c;
    float *tmp = g_try_malloc(total * sizeof(float));
    float *dst = g_try_malloc(total * sizeof(float));
    if (tmp == NULL || dst == NULL) {
        g_free(tmp);
        g_free(dst);
        g_free(g);
        return NULL;
    }
    int W = fb->w;
    int H = fb->h;
    int C = fb->c;
    bool stopped = false;
    for (int y = 0; y < H && !(stopped = cpu_stop_now()); y++) {
        for (int x = 0; x < W; x++) {
            for (int ch = 0; ch < C; ch++) {
                double acc = 0;
                for (int i = 0; i < k; i++) {
                    int xx = cpu_reflect101(x + i - r, W);
                    acc += g[i] * fb->px[((size_t)y * W + xx) * C + ch];
                }
                tmp[((size_t)y * W + x) * C + ch] = (float)acc;
            }
        }
    }
    for (int y = 0; y < H && !stopped && !(stopped = cpu_stop_now()); y++) {
        for (int x = 0; x < W; x++) {
            for (int ch = 0; ch < C; ch++) {
                double acc = 0;
                for (int i = 0; i < k; i++) {
                    int yy = cpu_reflect101(y + i - r, H);
                    acc += g[i] * tmp[((size_t)yy * W + x) * C + ch];
                }
                dst[((size_t)y * W + x) * C + ch] = (float)acc;
            }
        }
    }
    g_free(tmp);
    g_free(g);
    if (stopped) {
        g_free(dst);
        return NULL;
    }
    return dst;
}
