/*
 * cpu_ca_nodes — our own "CA." nodes: AutoLevels, Levels, WhiteBalance,
 * Exposure, Contrast, Saturation, Warmth, Vignette, Watermark,
 * ResizeLongEdge (CA.Export is the output node: its options are read by
 * cpu_encode.c). What each does: docs/image-pipeline.md, "CA. nodes". The
 * class table cpu_ca_impls is at the end.
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

/* The `p`-th and `1-p`-th percentiles of the luma (Rec. 709 on encoded values), in 0..1. */
static int luma_percentiles(ctx_t *c, VipsImage *im, double p, double *lo, double *hi)
{
    double m[3] = {0.2126, 0.7152, 0.0722};
    VipsImage *mat = vips_image_new_matrix_from_array(3, 1, m, 3);
    VipsImage *y = NULL;
    VipsImage *y8 = NULL;
    VipsImage *y255 = NULL;
    VipsImage *hist = NULL;
    int rc = -1;
    if (vips_recomb(im, &y, mat, NULL) != 0 || vips_linear1(y, &y255, 255.0, 0.0, NULL) != 0 ||
        vips_cast(y255, &y8, VIPS_FORMAT_UCHAR, NULL) != 0 ||
        vips_hist_find(y8, &hist, NULL) != 0) {
        cpu_vips_fail(c, "histogram");
        goto out;
    }
    size_t size = 0;
    VipsImage *hu = NULL;
    if (vips_cast(hist, &hu, VIPS_FORMAT_DOUBLE, NULL) != 0) {
        cpu_vips_fail(c, "histogram");
        goto out;
    }
    double *h = vips_image_write_to_memory(hu, &size);
    g_object_unref(hu);
    if (h == NULL) {
        cpu_vips_fail(c, "histogram");
        goto out;
    }
    double total = 0;
    for (int i = 0; i < 256; i++) {
        total += h[i];
    }
    double acc = 0;
    int l = 0;
    for (; l < 255; l++) {
        acc += h[l];
        if (acc > total * p) {
            break;
        }
    }
    acc = 0;
    int u = 255;
    for (; u > 0; u--) {
        acc += h[u];
        if (acc > total * p) {
            break;
        }
    }
    g_free(h);
    *lo = l / 255.0;
    *hi = (u + 1) / 255.0;
    rc = 0;
out:
    g_object_unref(mat);
    VipsImage *all[] = {y, y8, y255, hist};
    cpu_unref_all(all, NIN(all));
    return rc;
}

static int node_autolevels(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double p = cpu_num(n, "clip_percent", 0.5) / 100.0;
    double strength = cpu_num(n, "strength", 1.0);
    double lo = 0;
    double hi = 1;
    VipsImage *st = NULL;
    if (cpu_stats_image(c, n, im, &st) != 0) {
        return -1;
    }
    int rc = luma_percentiles(c, st, p, &lo, &hi);
    g_object_unref(st);
    if (rc != 0) {
        return -1;
    }
    if (hi - lo < 0.05) { /* flat image: leave it */
        hi = lo + 0.05;
    }
    double scale = 1.0 / (hi - lo);
    /* blend with identity by strength: a = 1 + s(scale − 1), b = −s·lo·scale */
    double a[1] = {1.0 + strength * (scale - 1.0)};
    double b[1] = {-strength * lo * scale};
    return cpu_linear_clamped(c, im, a, b, 1, out, "CA.AutoLevels");
}

static int node_levels(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double black = cpu_num(n, "black", 0.0);
    double white = cpu_num(n, "white", 1.0);
    double gamma = cpu_num(n, "gamma", 1.0);
    if (white - black < 1e-3) {
        white = black + 1e-3;
    }
    double a[1] = {1.0 / (white - black)};
    double b[1] = {-black / (white - black)};
    VipsImage *t = NULL;
    if (cpu_linear_clamped(c, im, a, b, 1, &t, "CA.Levels") != 0) {
        return -1;
    }
    if (fabs(gamma - 1.0) < 1e-9) {
        out[0] = t;
        return 0;
    }
    stage_t s = {.kind = ST_POW, .p = 1.0 / gamma};
    int rc = cpu_fused_append(c, t, &s, out, "CA.Levels");
    if (rc <= 0) {
        g_object_unref(t);
        return rc;
    }
    rc = vips_pow_const1(t, &out[0], 1.0 / gamma, NULL);
    g_object_unref(t);
    return rc != 0 ? cpu_vips_fail(c, "CA.Levels") : 0;
}

static int node_white_balance(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double strength = cpu_num(n, "strength", 1.0);
    VipsImage *stats = NULL;
    VipsImage *st = NULL;
    if (cpu_stats_image(c, n, im, &st) != 0) {
        return -1;
    }
    int rc = vips_stats(st, &stats, NULL);
    g_object_unref(st);
    if (rc != 0) {
        return cpu_vips_fail(c, "CA.WhiteBalance");
    }
    double mean[3];
    for (int k = 0; k < 3; k++) {
        mean[k] = *VIPS_MATRIX(stats, 4, k + 1); /* column 4 is the mean; row k+1 band k */
    }
    g_object_unref(stats);
    double grey = (mean[0] + mean[1] + mean[2]) / 3.0;
    double a[3];
    double b[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        double gain = mean[k] > 1e-4 ? grey / mean[k] : 1.0;
        if (gain > 2.0) {
            gain = 2.0;
        }
        if (gain < 0.5) {
            gain = 0.5;
        }
        a[k] = 1.0 + strength * (gain - 1.0);
    }
    return cpu_linear_clamped(c, im, a, b, 3, out, "CA.WhiteBalance");
}

static int node_exposure(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    /* 2^stops in linear light is 2^(stops/2.2) on gamma-encoded values. */
    double a[1] = {pow(2.0, cpu_num(n, "stops", 0.0) / 2.2)};
    double b[1] = {0};
    return cpu_linear_clamped(c, im, a, b, 1, out, "CA.Exposure");
}

static int node_contrast(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double k = 1.0 + cpu_num(n, "amount", 0.0);
    double a[1] = {k};
    double b[1] = {0.5 * (1.0 - k)};
    return cpu_linear_clamped(c, im, a, b, 1, out, "CA.Contrast");
}

static int node_saturation(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double s = cpu_num(n, "amount", 1.0);
    double l[3] = {0.2126, 0.7152, 0.0722};
    stage_t st = {.kind = ST_RECOMB, .clamp = true};
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < 3; k++) {
            st.m[r * 3 + k] = (1.0 - s) * l[k] + (r == k ? s : 0.0);
        }
    }
    int frc = cpu_fused_append(c, im, &st, out, "CA.Saturation");
    if (frc <= 0) {
        return frc;
    }
    double m[9];
    for (int i = 0; i < 9; i++) {
        m[i] = st.m[i] * CLAMP_SCALE;
    }
    VipsImage *mat = vips_image_new_matrix_from_array(3, 3, m, 9);
    VipsImage *t = NULL;
    int rc = vips_recomb(im, &t, mat, NULL);
    g_object_unref(mat);
    if (rc != 0) {
        return cpu_vips_fail(c, "CA.Saturation");
    }
    rc = cpu_clamp01_image(t, &out[0]);
    g_object_unref(t);
    return rc != 0 ? cpu_vips_fail(c, "CA.Saturation") : 0;
}

static int node_warmth(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double w = cpu_num(n, "amount", 0.0);
    double a[3] = {1.0 + 0.08 * w, 1.0 + 0.02 * w, 1.0 - 0.08 * w};
    double b[3] = {0, 0, 0};
    return cpu_linear_clamped(c, im, a, b, 3, out, "CA.Warmth");
}

static int node_vignette(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double strength = cpu_num(n, "strength", 0.3);
    double radius = cpu_num(n, "radius", 0.7);
    /* The mask computed in C, on blocks of f×f pixels above 1 MP and
     * replicated with vips_zoom (cheap, streaming). The falloff is smooth: a
     * block step changes the mask by at most strength·1.5·2f/(W·(√2−radius)),
     * 0.23 of an 8-bit level for portrait_pro at 3000 px. Fused with the
     * point nodes around it when it can be (one multiply per pixel). */
    int f = (double)im->Xsize * im->Ysize > 1e6 ? 4 : 1;
    int mw = (im->Xsize + f - 1) / f;
    int mh = (im->Ysize + f - 1) / f;
    vmask_t *vm = g_try_malloc(sizeof(vmask_t) + (size_t)mw * mh * sizeof(float));
    if (vm == NULL) {
        return cpu_fail(c, CPU_EXEC_ERROR, "CA.Vignette: out of memory");
    }
    vm->refs = 1;
    vm->f = f;
    vm->mw = mw;
    vm->mh = mh;
    float *m = vm->px;
    /* dx² per column, computed once; inside the radius (d < radius: t = 0,
     * the value 1.0f exactly) no square root nor division. The same values. */
    double *dxx = g_try_malloc(sizeof(double) * (size_t)mw);
    if (dxx == NULL) {
        g_free(vm);
        return cpu_fail(c, CPU_EXEC_ERROR, "CA.Vignette: out of memory");
    }
    for (int x = 0; x < mw; x++) {
        double dx = ((fmin((x + 0.5) * f, im->Xsize - 0.5)) / im->Xsize - 0.5) * 2.0;
        dxx[x] = dx * dx;
    }
    /* d = √(s/2)·√2 for s = dx² + dy² (to a few ulps, √s): s below this is
     * well inside the radius */
    double inside =
        radius > 0 && radius < 1.4142135623730951 ? radius * radius * (1.0 - 1e-9) : -1.0;
    for (int y = 0; y < mh; y++) {
        double dy = ((fmin((y + 0.5) * f, im->Ysize - 0.5)) / im->Ysize - 0.5) * 2.0;
        double dyy = dy * dy;
        float *mr = m + (size_t)y * mw;
        for (int x = 0; x < mw; x++) {
            double s2 = dxx[x] + dyy;
            if (s2 < inside) {
                mr[x] = 1.0f; /* (float)(1.0 − strength · 0) */
                continue;
            }
            double d = sqrt(s2 / 2.0) * 1.4142135623730951; /* 0 centre, √2 corner */
            double t = (d - radius) / (1.4142135623730951 - radius);
            t = t < 0 ? 0 : (t > 1 ? 1 : t);
            t = t * t * (3 - 2 * t);
            mr[x] = (float)(1.0 - strength * t);
        }
    }
    g_free(dxx);
    stage_t st = {.kind = ST_VIGNETTE, .mask = vm};
    g_atomic_int_inc(&vm->refs);
    int frc = cpu_fused_append(c, im, &st, out, "CA.Vignette"); /* takes a reference */
    if (frc <= 0) {
        cpu_vmask_unref(vm);
        return frc;
    }
    VipsImage *small = vips_image_new_from_memory_copy(m, (size_t)mw * mh * sizeof(float), mw, mh,
                                                       1, VIPS_FORMAT_FLOAT);
    cpu_vmask_unref(vm);
    if (small == NULL) {
        return cpu_vips_fail(c, "CA.Vignette");
    }
    VipsImage *big = NULL;
    int rc = vips_zoom(small, &big, f, f, NULL);
    g_object_unref(small);
    if (rc != 0) {
        return cpu_vips_fail(c, "CA.Vignette");
    }
    VipsImage *fit = NULL;
    rc = vips_extract_area(big, &fit, 0, 0, im->Xsize, im->Ysize, NULL);
    g_object_unref(big);
    if (rc != 0) {
        return cpu_vips_fail(c, "CA.Vignette");
    }
    rc = vips_multiply(im, fit, &out[0], NULL);
    g_object_unref(fit);
    return rc != 0 ? cpu_vips_fail(c, "CA.Vignette") : 0;
}

static int node_watermark(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    const char *text = cpu_str(n, "text", "");
    double opacity = cpu_num(n, "opacity", 0.5);
    double size = cpu_num(n, "size", 0.03);
    const char *pos = cpu_str(n, "position", "bottom-right");
    if (text[0] == '\0') {
        g_object_ref(im);
        out[0] = im;
        return 0;
    }
    int short_edge = im->Xsize < im->Ysize ? im->Xsize : im->Ysize;
    int dpi = (int)fmax(10, size * short_edge * 72.0 / 12.0); /* "sans 12" → size·edge px tall */
    VipsImage *txt = NULL;
    /* vips_text reads Pango markup: the graph's text is drawn as written. */
    char *literal = g_markup_escape_text(text, -1);
    int trc = vips_text(&txt, literal, "font", "sans 12", "dpi", dpi, NULL);
    g_free(literal);
    if (trc != 0) {
        return cpu_vips_fail(c, "CA.Watermark");
    }
    int margin = (int)(short_edge * 0.02);
    int tw = txt->Xsize;
    int th = txt->Ysize;
    int x = im->Xsize - tw - margin;
    int y = im->Ysize - th - margin;
    if (strcmp(pos, "bottom-left") == 0) {
        x = margin;
    } else if (strcmp(pos, "top-right") == 0) {
        y = margin;
    } else if (strcmp(pos, "top-left") == 0) {
        x = margin;
        y = margin;
    } else if (strcmp(pos, "center") == 0) {
        x = (im->Xsize - tw) / 2;
        y = (im->Ysize - th) / 2;
    }
    VipsImage *placed = NULL;
    VipsImage *alpha = NULL;
    VipsImage *inv = NULL;
    VipsImage *keep = NULL;
    int rc = vips_embed(txt, &placed, x, y, im->Xsize, im->Ysize, NULL);
    g_object_unref(txt);
    /* out = x·(1 − o·m) + o·m (white text) */
    if (rc == 0) {
        rc = vips_linear1(placed, &alpha, opacity / 255.0, 0.0, NULL);
    }
    if (rc == 0) {
        rc = vips_linear1(alpha, &inv, -1.0, 1.0, NULL);
    }
    if (rc == 0) {
        rc = vips_multiply(im, inv, &keep, NULL);
    }
    if (rc == 0) {
        rc = vips_add(keep, alpha, &out[0], NULL);
    }
    VipsImage *all[] = {placed, alpha, inv, keep};
    cpu_unref_all(all, NIN(all));
    return rc != 0 ? cpu_vips_fail(c, "CA.Watermark") : 0;
}

static int node_long_edge(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int target = cpu_inum(n, "long_edge", 3000);
    int W = im->Xsize;
    int H = im->Ysize;
    int longest = W > H ? W : H;
    if (target >= longest && (target == longest || !cpu_bool(n, "allow_upscale", false))) {
        g_object_ref(im);
        out[0] = im;
        return 0;
    }
    int w = W >= H ? target : (int)fmax(1, rint((double)W * target / H));
    int h = H > W ? target : (int)fmax(1, rint((double)H * target / W));
    const cJSON *link = cJSON_GetObjectItemCaseSensitive(n->inputs, "image");
    bool after_load = c->native != NULL && c->load_node != NULL &&
                      strcmp(cJSON_GetArrayItem(link, 0)->valuestring, c->load_node->id) == 0 &&
                      cJSON_GetArrayItem(link, 1)->valuedouble == 0;
    VipsImage *src = after_load ? c->native : im;
    if (w < W && h < H && (double)W / w <= 3.0 && cpu_fused_input_ok(src)) {
        /* Downscale: libvips' vertical lanczos3 pass (vectorised for 8-bit
         * input, rounded to 8 bits like vips_resize), then the horizontal
         * lanczos3 pass inside the fused operation (libvips' horizontal pass
         * on 8-bit input is scalar C: half of the preset's CPU time), in
         * float, followed by the point nodes after this one. */
        VipsImage *v = NULL;
        if (vips_reducev(src, &v, (double)H / h, "kernel", VIPS_KERNEL_LANCZOS3, NULL) != 0) {
            return cpu_vips_fail(c, "CA.ResizeLongEdge");
        }
        if (v->Ysize != h) {
            VipsImage *fixed = NULL;
            int rc = vips_embed(v, &fixed, 0, 0, W, h, "extend", VIPS_EXTEND_COPY, NULL);
            g_object_unref(v);
            if (rc != 0) {
                return cpu_vips_fail(c, "CA.ResizeLongEdge");
            }
            v = fixed;
        }
        fused_t *fu = cpu_fused_new(v, after_load ? 1.0 / 255.0 : 1.0);
        g_object_unref(v);
        fu->hr = cpu_hres_new(W, w);
        out[0] = cpu_fused_build(fu);
        return out[0] != NULL ? 0 : cpu_vips_fail(c, "CA.ResizeLongEdge");
    }
    if (after_load) {
        /* Straight after LoadImage: resize the decoded 8-bit pixels. */
        VipsImage *small = cpu_upscale_image(c, c->native, w, h, "lanczos", "disabled");
        if (small == NULL) {
            return -1;
        }
        out[0] = cpu_fused_build(cpu_fused_new(small, 1.0 / 255.0));
        g_object_unref(small);
        return out[0] != NULL ? 0 : cpu_vips_fail(c, "CA.ResizeLongEdge");
    }
    out[0] = cpu_upscale_image(c, im, w, h, "lanczos", "disabled");
    return out[0] != NULL ? 0 : -1;
}

const cpu_impl_t cpu_ca_impls[] = {
    {"CA.AutoLevels", node_autolevels},
    {"CA.Levels", node_levels},
    {"CA.WhiteBalance", node_white_balance},
    {"CA.Exposure", node_exposure},
    {"CA.Contrast", node_contrast},
    {"CA.Saturation", node_saturation},
    {"CA.Warmth", node_warmth},
    {"CA.Vignette", node_vignette},
    {"CA.Watermark", node_watermark},
    {"CA.ResizeLongEdge", node_long_edge},
    {NULL, NULL},
};
