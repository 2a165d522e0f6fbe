/*
 * cpu_fused — the recipe of a fused point operation: what it computes and how
 * the nodes extend it. The operation itself (vips_image_generate and its row
 * loops) is in cpu_fused_gen.c; the types in cpu_internal.h. See
 * docs/image-pipeline.md, "Fused operations".
 *
 * A chain of per-pixel nodes (the CA. point nodes, ImageInvert, ImageSharpen's
 * kernel with radius ≤ 4, the 8-bit conversion of the encoder) runs as ONE
 * libvips operation (vips_image_generate) that reads its input once and makes
 * a single pass over each strip, instead of two or three float libvips
 * operations per node. The output image carries its recipe (g_object data
 * "ca-fused"): the next point node copies the recipe, appends its stage and
 * builds a new operation on the same input, so the earlier one is never
 * evaluated. Values are computed in float/double with the same formulas and
 * clamps as the per-node operations (to ~1e-7). With an 8-bit or 16-bit input
 * and no kernel, the leading per-band stages become a lookup table.

 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void cpu_vmask_unref(vmask_t *m)
{
    if (m != NULL && g_atomic_int_dec_and_test(&m->refs)) {
        g_free(m);
    }
}

static void hres_unref(hres_t *h)
{
    if (h != NULL && g_atomic_int_dec_and_test(&h->refs)) {
        g_free(h->start);
        g_free(h->wt);
        free(h->wi);
        g_free(h);
    }
}

static double lanczos3(double d)
{
    if (d == 0.0) {
        return 1.0;
    }
    if (d <= -3.0 || d >= 3.0) {
        return 0.0;
    }
    double pd = G_PI * d;
    return 3.0 * sin(pd) * sin(pd / 3.0) / (pd * pd);
}

/* The 8-bit input's weights in fixed point (see hres_t): each tap rounded so
 * that every prefix sum is the exact prefix sum rounded (so a row sums to
 * exactly 2^HRES_SHIFT, a flat input stays exact, and the error of a sum is
 * at most 2^-(HRES_SHIFT+1) × the input's total variation over the taps).
 * Leaves h->wi NULL (the float path) if a weight does not fit 16 bits. */
static void hres_int_weights(hres_t *h, const double *wd, int n, int lead)
{
    int keep = h->n;
    int np = (keep + 1) / 2;
    size_t bytes = (size_t)h->out_w * np * 8 * sizeof(short);
    void *mem = NULL;
    if (posix_memalign(&mem, 16, bytes) != 0) {
        return;
    }
    short *wi = memset(mem, 0, bytes);
    for (int x = 0; x < h->out_w; x++) {
        double cum = 0.0;
        long prev = 0;
        for (int t = 0; t < keep; t++) {
            cum += wd[(size_t)x * n + lead + t];
            long r = lround(cum * (1 << HRES_SHIFT));
            if (t == keep - 1) {
                r = 1 << HRES_SHIFT; /* the dropped taps are < 1e-7 */
            }
            long v = r - prev;
            prev = r;
            if (v < -32768 || v > 32767) {
                free(wi);
                return;
            }
            short *q = wi + ((size_t)x * np + t / 2) * 8;
            q[t % 2] = q[2 + t % 2] = q[4 + t % 2] = (short)v;
        }
    }
    h->np = np;
    h->wi = wi;
}

/* Weights for a lanczos3 reduction from W to w < W pixels (centres aligned:
 * input x = (x + 0.5)·W/w − 0.5; the kernel stretched by W/w to filter). */
hres_t *cpu_hres_new(int W, int w)
{
    double sc = (double)W / w;
    double support = 3.0 * sc;
    int n = (int)ceil(2.0 * support) + 1;
    hres_t *h = g_new0(hres_t, 1);
    h->refs = 1;
    h->out_w = w;
    h->start = g_new(int, w);
    float *wt = g_new(float, (size_t)w *n);
    double *wd = g_new(double, (size_t)w *n);
    for (int x = 0; x < w; x++) {
        double c = (x + 0.5) * sc - 0.5;
        int st = (int)floor(c - support) + 1;
        double sum = 0;
        for (int t = 0; t < n; t++) {
            sum += lanczos3((st + t - c) / sc);
        }
        for (int t = 0; t < n; t++) {
            wd[(size_t)x * n + t] = lanczos3((st + t - c) / sc) / sum;
            wt[(size_t)x * n + t] = (float)wd[(size_t)x * n + t];
        }
        h->start[x] = st;
    }
    /* Drop a first or last tap that is zero for every x (the kernel is zero
     * at ±support: 8 taps instead of 9 at 4000 → 3000). */
    int lead = 0;
    int keep = n;
    for (;;) {
        bool first0 = keep > 1;
        bool last0 = keep > 1;
        for (int x = 0; x < w && (first0 || last0); x++) {
            first0 = first0 && fabsf(wt[(size_t)x * n + lead]) < 1e-7f;
            last0 = last0 && fabsf(wt[(size_t)x * n + lead + keep - 1]) < 1e-7f;
        }
        if (last0) {
            keep--;
        } else if (first0) {
            lead++;
            keep--;
        } else {
            break;
        }
    }
    h->n = keep;
    h->wt = g_new(v4f, (size_t)w * keep);
    for (int x = 0; x < w; x++) {
        h->start[x] += lead;
        for (int t = 0; t < keep; t++) {
            float v = wt[(size_t)x * n + lead + t];
            h->wt[(size_t)x * keep + t] = (v4f){v, v, v, v};
        }
    }
    hres_int_weights(h, wd, n, lead);
    g_free(wt);
    g_free(wd);
    return h;
}

void cpu_fused_free(void *p)
{
    fused_t *fu = p;
    if (fu == NULL) {
        return;
    }
    hres_unref(fu->hr);
    cpu_fused_free(fu->pre);
    for (int i = 0; i < fu->nst; i++) {
        cpu_vmask_unref(fu->st[i].mask);
    }
    if (fu->in != NULL) {
        g_object_unref(fu->in);
    }
    g_free(fu->lut);
    g_free(fu);
}

bool cpu_fused_input_ok(const VipsImage *in)
{
    return in->Bands == 3 && in->Coding == VIPS_CODING_NONE &&
           (in->BandFmt == VIPS_FORMAT_UCHAR || in->BandFmt == VIPS_FORMAT_USHORT ||
            in->BandFmt == VIPS_FORMAT_FLOAT);
}

/* The recipe of a fused image that a stage can be appended to, or NULL. */
static const fused_t *fused_of(VipsImage *im)
{
    const fused_t *fu = g_object_get_data(G_OBJECT(im), FUSED_KEY);
    return fu != NULL && !fu->out_u8 && fu->nst < FUSED_MAX_STAGES ? fu : NULL;
}

fused_t *cpu_fused_copy(const fused_t *old)
{
    fused_t *fu = g_new(fused_t, 1);
    *fu = *old;
    fu->lut = NULL;
    fu->nlut = 0;
    g_object_ref(fu->in);
    if (fu->hr != NULL) {
        g_atomic_int_inc(&fu->hr->refs);
    }
    if (fu->pre != NULL) {
        fu->pre = cpu_fused_copy(fu->pre);
    }
    for (int i = 0; i < fu->nst; i++) {
        if (fu->st[i].mask != NULL) {
            g_atomic_int_inc(&fu->st[i].mask->refs);
        }
    }
    return fu;
}

/* A new recipe: `im` (3-band uchar/ushort/float) × in_scale, no stages. */
fused_t *cpu_fused_new(VipsImage *im, double in_scale)
{
    fused_t *fu = g_new0(fused_t, 1);
    g_object_ref(im);
    fu->in = im;
    fu->in_scale = in_scale;
    return fu;
}

/* A copy of `im`'s recipe, or a new one reading `im`; NULL when im cannot be
 * fused (band count, format). */
fused_t *cpu_fused_extend(VipsImage *im)
{
    const fused_t *old = fused_of(im);
    if (old == NULL) {
        return im->BandFmt == VIPS_FORMAT_FLOAT && cpu_fused_input_ok(im) ? cpu_fused_new(im, 1.0)
                                                                          : NULL;
    }
    return cpu_fused_copy(old);
}
