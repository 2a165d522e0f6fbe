/*
 * cpu_fused_gen — the fused point operation at work: cpu_fused_build makes the
 * libvips operation for a recipe (cpu_fused.c), and its generate function
 * computes each output strip row by row: the input row (a lookup table for
 * 8/16-bit input, the horizontal lanczos3 reduction, or the 2-D kernel on
 * reflect-101 rows), the stages, the 8-bit packing. 4-wide vectors (GCC/Clang
 * vector extensions, SSE2 where it helps). See docs/image-pipeline.md,
 * "Fused operations".
 *
 * Also here, as the users of a recipe: cpu_fused_append (a node adds its stage
 * and gets the new image) and cpu_linear_clamped, the clamped per-band linear
 * operation most point nodes use (a fused stage, or libvips operations when
 * the input cannot be fused), with cpu_clamp01_image.
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <math.h>
#include <stdint.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <string.h>

typedef int v4i __attribute__((vector_size(16)));
typedef unsigned char v4u8 __attribute__((vector_size(4)));
typedef double v4d __attribute__((vector_size(32)));

static inline v4f ld4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void st4(float *p, v4f v)
{
    memcpy(p, &v, sizeof(v));
}

/* max(v, 0) then min(·, hi) */
static inline v4f clampv(v4f v, v4f hi)
{
#ifdef __SSE2__
    return (v4f)_mm_min_ps(_mm_max_ps((__m128)v, _mm_setzero_ps()), (__m128)hi);
#else
    const v4f zero = {0, 0, 0, 0};
    v4i lt = v < zero;
    v = (v4f)((v4i)v & ~lt);
    v4i gt = v > hi;
    return (v4f)(((v4i)v & ~gt) | ((v4i)hi & gt));
#endif
}

static inline v4f clamp4(v4f v)
{
    const v4f one = {1, 1, 1, 1};
    return clampv(v, one);
}

/* One per-band stage on one value of band k. */
static inline float stage_point(const stage_t *s, float v, int k)
{
    if (s->kind == ST_LINEAR) {
        v = (float)(s->a[k] * v + s->b[k]);
    } else {
        v = (float)pow(v, s->p);
    }
    return s->clamp ? cpu_clamp01f(v) : v;
}

/* Applies stages [from, nst) to a row of w RGB pixels at (x0, y). */
static void stages_row(const fused_t *fu, int from, float *row, int w, int x0, int y)
{
    for (int i = from; i < fu->nst; i++) {
        const stage_t *s = &fu->st[i];
        switch (s->kind) {
        case ST_LINEAR: {
            const float a0 = (float)s->a[0], a1 = (float)s->a[1], a2 = (float)s->a[2];
            const float b0 = (float)s->b[0], b1 = (float)s->b[1], b2 = (float)s->b[2];
            /* 4 pixels = 12 values = 3 vectors; the band pattern repeats */
            const v4f A[3] = {{a0, a1, a2, a0}, {a1, a2, a0, a1}, {a2, a0, a1, a2}};
            const v4f B[3] = {{b0, b1, b2, b0}, {b1, b2, b0, b1}, {b2, b0, b1, b2}};
            int x4 = w / 4 * 4;
            /* s->clamp in a local: the row's stores (memcpy) could alias it */
            const bool clamp = s->clamp;
            for (int x = 0; x < 3 * x4; x += 12) {
                for (int q = 0; q < 3; q++) {
                    v4f v = A[q] * ld4(row + x + 4 * q) + B[q];
                    st4(row + x + 4 * q, clamp ? clamp4(v) : v);
                }
            }
            if (clamp) {
                for (int x = x4; x < w; x++) {
                    float *p = row + 3 * x;
                    p[0] = cpu_clamp01f(a0 * p[0] + b0);
                    p[1] = cpu_clamp01f(a1 * p[1] + b1);
                    p[2] = cpu_clamp01f(a2 * p[2] + b2);
                }
            } else {
                for (int x = x4; x < w; x++) {
                    float *p = row + 3 * x;
                    p[0] = a0 * p[0] + b0;
                    p[1] = a1 * p[1] + b1;
                    p[2] = a2 * p[2] + b2;
                }
            }
            break;
        }
        case ST_RECOMB: {
            float m[9];
            for (int k = 0; k < 9; k++) {
                m[k] = (float)s->m[k];
            }
            const bool clamp = s->clamp;
            for (int x = 0; x < w; x++) {
                float *p = row + 3 * x;
                float r = p[0], g = p[1], b = p[2];
                float o0 = m[0] * r + m[1] * g + m[2] * b;
                float o1 = m[3] * r + m[4] * g + m[5] * b;
                float o2 = m[6] * r + m[7] * g + m[8] * b;
                p[0] = clamp ? cpu_clamp01f(o0) : o0;
                p[1] = clamp ? cpu_clamp01f(o1) : o1;
                p[2] = clamp ? cpu_clamp01f(o2) : o2;
            }
            break;
        }
        case ST_POW:
            for (int x = 0; x < 3 * w; x++) {
                row[x] = stage_point(s, row[x], 0);
            }
            break;
        case ST_VIGNETTE: {
            const vmask_t *vm = s->mask;
            const float *mrow = vm->px + (size_t)(y / vm->f) * vm->mw;
            int bx = x0 / vm->f;
            int in_block = x0 % vm->f;
            int x = 0;
            if (vm->f == 4 && in_block == 0) {
                /* a block is 4 pixels = 12 values = 3 vectors */
                for (; x + 4 <= w; x += 4, bx++) {
                    float mv = mrow[bx];
                    v4f m4 = {mv, mv, mv, mv};
                    float *p = row + 3 * x;
                    st4(p, ld4(p) * m4);
                    st4(p + 4, ld4(p + 4) * m4);
                    st4(p + 8, ld4(p + 8) * m4);
                }
            }
            for (; x < w; x++) {
                float mv = mrow[bx];
                float *p = row + 3 * x;
                p[0] *= mv;
                p[1] *= mv;
                p[2] *= mv;
                if (++in_block == vm->f) {
                    in_block = 0;
                    bx++;
                }
            }
            break;
        }
        }
    }
}

/* Source row y (float), reflect-101 padded by r pixels on both sides. */
static void load_row(const fused_t *fu, VipsRegion *ir, int x0, int w, int y, float *dst)
{
    int W = fu->in->Xsize;
    int r = fu->r;
    memcpy(dst + 3 * r, VIPS_REGION_ADDR(ir, x0, y), (size_t)w * 3 * sizeof(float));
    for (int j = 0; j < r; j++) {
        const float *p = (const float *)VIPS_REGION_ADDR(ir, cpu_reflect101(x0 - r + j, W), y);
        const float *q = (const float *)VIPS_REGION_ADDR(ir, cpu_reflect101(x0 + w + j, W), y);
        memcpy(dst + 3 * j, p, 3 * sizeof(float));
        memcpy(dst + 3 * (w + r + j), q, 3 * sizeof(float));
    }
}

/* The lookup table for an 8/16-bit input without a kernel: the input
 * conversion and the leading per-band stages. Made by the first region. */
static GMutex fused_lut_lock;

static int fused_make_lut(fused_t *fu)
{
    VipsImage *in = fu->in;
    g_mutex_lock(&fused_lut_lock);
    if (fu->lut != NULL) {
        g_mutex_unlock(&fused_lut_lock);
        return 0;
    }
    int size = in->BandFmt == VIPS_FORMAT_UCHAR ? 256 : 65536;
    int nlut = 0;
    while (nlut < fu->nst && (fu->st[nlut].kind == ST_LINEAR || fu->st[nlut].kind == ST_POW)) {
        nlut++;
    }
    float *lut = g_try_malloc(sizeof(float) * 3 * (size_t)size);
    if (lut != NULL) {
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < size; i++) {
                float v = (float)(i * fu->in_scale);
                for (int s = 0; s < nlut; s++) {
                    v = stage_point(&fu->st[s], v, k);
                }
                lut[(size_t)k * size + i] = v;
            }
        }
        fu->nlut = nlut;
        g_atomic_pointer_set(&fu->lut, lut);
    }
    g_mutex_unlock(&fused_lut_lock);
    return lut != NULL ? 0 : -1;
}

/* Per-thread state: the input region and a scratch buffer kept between
 * strips (a fresh malloc per strip would be an mmap and page faults). */
typedef struct {
    VipsRegion *ir;
    float *buf;
    size_t cap; /* floats */
} fused_seq_t;

static bool needs_lut(const fused_t *fu)
{
    return fu->r == 0 && fu->hr == NULL && fu->in->BandFmt != VIPS_FORMAT_FLOAT;
}

static void *fused_start(VipsImage *out, void *a, void *b)
{
    fused_t *fu = b;
    (void)out;
    if ((needs_lut(fu) && fused_make_lut(fu) != 0) ||
        (fu->pre != NULL && needs_lut(fu->pre) && fused_make_lut(fu->pre) != 0)) {
        return NULL;
    }
    fused_seq_t *seq = g_new0(fused_seq_t, 1);
    seq->ir = vips_region_new((VipsImage *)a); /* fu->in, or fu->pre->in */
    return seq;
}

static int fused_stop(void *vseq, void *a, void *b)
{
    fused_seq_t *seq = vseq;
    (void)a;
    (void)b;
    if (seq->ir != NULL) {
        g_object_unref(seq->ir);
    }
    g_free(seq->buf);
    g_free(seq);
    return 0;
}

/* acc[x] = Σ kern[i][j] · rows[i][x + 3j] over k padded rows. */
static void conv_row(float *restrict acc, const float *const *rows, int n, const float *kern, int k)
{
    int x = 0;
    if (k == 3) {
        const float *restrict p0 = rows[0];
        const float *restrict p1 = rows[1];
        const float *restrict p2 = rows[2];
        const float m0 = kern[0], m1 = kern[1], m2 = kern[2], m3 = kern[3], m4 = kern[4],
                    m5 = kern[5], m6 = kern[6], m7 = kern[7], m8 = kern[8];
        for (; x + 4 <= n; x += 4) {
            v4f v = m0 * ld4(p0 + x) + m1 * ld4(p0 + x + 3) + m2 * ld4(p0 + x + 6);
            v += m3 * ld4(p1 + x) + m4 * ld4(p1 + x + 3) + m5 * ld4(p1 + x + 6);
            v += m6 * ld4(p2 + x) + m7 * ld4(p2 + x + 3) + m8 * ld4(p2 + x + 6);
            st4(acc + x, v);
        }
        for (; x < n; x++) {
            acc[x] = m0 * p0[x] + m1 * p0[x + 3] + m2 * p0[x + 6] + m3 * p1[x] + m4 * p1[x + 3] +
                     m5 * p1[x + 6] + m6 * p2[x] + m7 * p2[x + 3] + m8 * p2[x + 6];
        }
        return;
    }
    for (x = 0; x < n; x++) {
        acc[x] = 0.0f;
    }
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < k; j++) {
            const float m = kern[i * k + j];
            const float *restrict src = rows[i] + 3 * j;
            for (x = 0; x < n; x++) {
                acc[x] += m * src[x];
            }
        }
    }
}

/* ComfyUI's clip(255x, 0, 255) truncated (see cpu_encode.c for the 1e-4). */
static void to_u8(unsigned char *restrict q, const float *restrict row, int n)
{
    const v4f k255 = {255.0f, 255.0f, 255.0f, 255.0f};
    const v4f eps = {1e-4f, 1e-4f, 1e-4f, 1e-4f};
    int x = 0;
#ifdef __SSE2__
    for (; x + 16 <= n; x += 16) {
        __m128i i0 = _mm_cvttps_epi32((__m128)clampv(ld4(row + x) * k255 + eps, k255));
        __m128i i1 = _mm_cvttps_epi32((__m128)clampv(ld4(row + x + 4) * k255 + eps, k255));
        __m128i i2 = _mm_cvttps_epi32((__m128)clampv(ld4(row + x + 8) * k255 + eps, k255));
        __m128i i3 = _mm_cvttps_epi32((__m128)clampv(ld4(row + x + 12) * k255 + eps, k255));
        __m128i b = _mm_packus_epi16(_mm_packs_epi32(i0, i1), _mm_packs_epi32(i2, i3));
        _mm_storeu_si128((__m128i *)(q + x), b);
    }
#endif
    for (; x + 4 <= n; x += 4) {
        v4i i =
            __builtin_convertvector(clampv(ld4(row + x) * k255 + eps, k255), v4i); /* truncates */
        v4u8 b = __builtin_convertvector(i, v4u8);
        memcpy(q + x, &b, sizeof(b));
    }
    for (; x < n; x++) {
        float v = row[x] * 255.0f + 1e-4f;
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        q[x] = (unsigned char)(int)v;
    }
}

/* One output row of the horizontal reduction: the input row (x from hx0, hlen
 * pixels, clamped to the image) to float in hbuf, then n taps per pixel on
 * 4-wide vectors (RGB + one spare lane). */
static void hreduce_row(const fused_t *fu, VipsRegion *ir, int y, int hx0, int hlen,
                        float *restrict hbuf, const float *u8f, float *restrict row, int x0, int w)
{
    const hres_t *hr = fu->hr;
    VipsImage *in = fu->in;
    int W = in->Xsize;
    const float sc = (float)fu->in_scale;
    size_t ps = VIPS_IMAGE_SIZEOF_PEL(in);
    const VipsPel *base = VIPS_REGION_ADDR(ir, ir->valid.left, y) - ir->valid.left * ps;
    int j = 0;
    if (in->BandFmt == VIPS_FORMAT_UCHAR) {
        /* the part inside the image: one contiguous run */
        int a = hx0 < 0 ? -hx0 : 0;
        int b = hx0 + hlen > W ? W - hx0 : hlen;
        for (; j < a; j++) {
            const VipsPel *p = base;
            hbuf[3 * j] = u8f[p[0]];
            hbuf[3 * j + 1] = u8f[p[1]];
            hbuf[3 * j + 2] = u8f[p[2]];
        }
        const VipsPel *p = base + (size_t)(hx0 + a) * 3;
        float *d = hbuf + 3 * a;
        int i = 0;
        /* the table's values, (float)(v * in_scale), four at a time: the
         * product in double, then rounded to float, as the table has it */
        const v4d sc4 = {fu->in_scale, fu->in_scale, fu->in_scale, fu->in_scale};
#ifdef __SSE2__
        /* sixteen at a time on SSE2: bytes to int32 to float (exact), to
         * double (exact), the product in double, rounded to float: the same
         * operations as the v4d loop below, which GCC leaves scalar */
        const __m128d sc2 = _mm_set1_pd(fu->in_scale);
        const __m128i zero = _mm_setzero_si128();
        for (; i + 16 <= 3 * (b - a); i += 16) {
            __m128i b16 = _mm_loadu_si128((const __m128i *)(p + i));
            __m128i lo = _mm_unpacklo_epi8(b16, zero);
            __m128i hi = _mm_unpackhi_epi8(b16, zero);
            __m128i q[4] = {_mm_unpacklo_epi16(lo, zero), _mm_unpackhi_epi16(lo, zero),
                            _mm_unpacklo_epi16(hi, zero), _mm_unpackhi_epi16(hi, zero)};
            for (int k = 0; k < 4; k++) {
                __m128 f = _mm_cvtepi32_ps(q[k]);
                __m128d d0 = _mm_mul_pd(_mm_cvtps_pd(f), sc2);
                __m128d d1 = _mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(f, f)), sc2);
                _mm_storeu_ps(d + i + 4 * k, _mm_movelh_ps(_mm_cvtpd_ps(d0), _mm_cvtpd_ps(d1)));
            }
        }
#endif
        for (; i + 4 <= 3 * (b - a); i += 4) {
            v4u8 b4;
            memcpy(&b4, p + i, sizeof(b4));
            st4(d + i, __builtin_convertvector(__builtin_convertvector(b4, v4d) * sc4, v4f));
        }
        for (; i < 3 * (b - a); i++) {
            d[i] = u8f[p[i]];
        }
        j = b;
    }
    for (; j < hlen; j++) {
        int sx = hx0 + j;
        sx = sx < 0 ? 0 : (sx >= W ? W - 1 : sx);
        const VipsPel *p = base + sx * ps;
        float *d = hbuf + 3 * j;
        if (in->BandFmt == VIPS_FORMAT_UCHAR) {
            d[0] = u8f[p[0]];
            d[1] = u8f[p[1]];
            d[2] = u8f[p[2]];
        } else if (in->BandFmt == VIPS_FORMAT_USHORT) {
            const unsigned short *q = (const unsigned short *)p;
            d[0] = q[0] * sc;
            d[1] = q[1] * sc;
            d[2] = q[2] * sc;
        } else {
            const float *q = (const float *)p;
            d[0] = q[0] * sc;
            d[1] = q[1] * sc;
            d[2] = q[2] * sc;
        }
    }
    hbuf[3 * hlen] = 0.0f; /* the spare lane of the last load */
    int n = hr->n;
    for (int x = 0; x < w; x++) {
        const v4f *wt = hr->wt + (size_t)(x0 + x) * n;
        const float *src = hbuf + 3 * (hr->start[x0 + x] - hx0);
        v4f acc = {0, 0, 0, 0};
        int t = 0;
        if (n == 8) { /* 4000 → 3000: unrolled */
            acc = wt[0] * ld4(src) + wt[1] * ld4(src + 3) + wt[2] * ld4(src + 6) +
                  wt[3] * ld4(src + 9);
            acc += wt[4] * ld4(src + 12) + wt[5] * ld4(src + 15) + wt[6] * ld4(src + 18) +
                   wt[7] * ld4(src + 21);
            t = 8;
        }
        if (n == 9 || n == 10) { /* ~4200 → 3000: the loop below, unrolled */
            acc = wt[0] * ld4(src) + wt[1] * ld4(src + 3) + wt[2] * ld4(src + 6);
            acc += wt[3] * ld4(src + 9) + wt[4] * ld4(src + 12) + wt[5] * ld4(src + 15);
            acc += wt[6] * ld4(src + 18) + wt[7] * ld4(src + 21) + wt[8] * ld4(src + 24);
            if (n == 10) {
                acc += wt[9] * ld4(src + 27);
            }
            t = n;
        }
        for (; t + 3 <= n; t += 3) {
            acc += wt[t] * ld4(src + 3 * t) + wt[t + 1] * ld4(src + 3 * t + 3) +
                   wt[t + 2] * ld4(src + 3 * t + 6);
        }
        for (; t < n; t++) {
            acc += wt[t] * ld4(src + 3 * t);
        }
        row[3 * x] = acc[0];
        row[3 * x + 1] = acc[1];
        row[3 * x + 2] = acc[2];
    }
}

#ifdef __SSE2__
/* The leading per-band linear stages of fu folded into one, with the input
 * scale: value = min(max(a·x + b, lo), hi) per band, for x the fixed-point
 * sum. Exact in real arithmetic, clamps included: a clamp to [0,1] after a
 * stage a'·y + b' of a value already clamped to [lo, hi] is a clamp of the
 * composed linear function to the image of [lo, hi] clamped (a' > 0: [a'lo +
 * b', a'hi + b'], bounds swapped for a' < 0, the constant b' for a' = 0).
 * Rounded to float once instead of at every stage: differs from the
 * stage-by-stage float values by a few units in the last place. Returns the
 * number of stages folded. */
static int hfold_stages(const fused_t *fu, double scale, v4f *fa, v4f *fb, v4f *flo, v4f *fhi)
{
    double a[3], b[3], lo[3], hi[3];
    for (int k = 0; k < 3; k++) {
        a[k] = scale;
        b[k] = 0.0;
        lo[k] = -INFINITY;
        hi[k] = INFINITY;
    }
    int i = 0;
    for (; i < fu->nst && fu->st[i].kind == ST_LINEAR; i++) {
        const stage_t *s = &fu->st[i];
        for (int k = 0; k < 3; k++) {
            double A = s->a[k];
            double B = s->b[k];
            if (A > 0.0) {
                lo[k] = A * lo[k] + B;
                hi[k] = A * hi[k] + B;
            } else if (A < 0.0) {
                double l = A * hi[k] + B;
                hi[k] = A * lo[k] + B;
                lo[k] = l;
            } else {
                lo[k] = -INFINITY;
                hi[k] = INFINITY;
            }
            a[k] = A * a[k];
            b[k] = A * b[k] + B;
            if (s->clamp) {
                lo[k] = fmin(fmax(lo[k], 0.0), 1.0);
                hi[k] = fmax(fmin(hi[k], 1.0), 0.0);
            }
        }
    }
    *fa = (v4f){(float)a[0], (float)a[1], (float)a[2], 0.0f};
    *fb = (v4f){(float)b[0], (float)b[1], (float)b[2], 0.0f};
    *flo = (v4f){(float)lo[0], (float)lo[1], (float)lo[2], 0.0f};
    *fhi = (v4f){(float)hi[0], (float)hi[1], (float)hi[2], 0.0f};
    return i;
}

/* P[j] = the pixels j and j + 1 of the 8-bit row e (RGB) as int16 pairs
 * [R, R', G, G', B, B', ·, ·], for j in [from, to) (and maybe `to`). */
static void hpairs(__m128i *P, const unsigned char *e, int from, int to)
{
    const __m128i zero = _mm_setzero_si128();
    for (int j = from; j < to; j += 2) {
        __m128i a = _mm_loadu_si128((const __m128i *)(e + 3 * j));
        __m128i l = _mm_unpacklo_epi8(a, _mm_srli_si128(a, 3));
        _mm_store_si128(P + j, _mm_unpacklo_epi8(l, zero));
        _mm_store_si128(P + j + 1, _mm_unpacklo_epi8(_mm_srli_si128(l, 6), zero));
    }
}

static inline __m128i madd(__m128i p, const __m128i *w)
{
    return _mm_madd_epi16(p, _mm_load_si128(w));
}

/* hreduce_row for 8-bit input with integer weights (hr->wi): the taps in
 * fixed point (_mm_madd_epi16 on pairs of taps, 32-bit sums: exact), one
 * conversion to float per output pixel, with the leading per-band linear
 * stages folded in (hfold_stages); returns how many stages it applied.
 * hbuf: 16·(hlen + 1) + 3·(hlen + 1) + 32 bytes. */
static int hreduce_row_u8(const fused_t *fu, VipsRegion *ir, int y, int hx0, int hlen, void *hbuf,
                          float *restrict row, int x0, int w)
{
    const hres_t *hr = fu->hr;
    int W = fu->in->Xsize;
    const VipsPel *base = VIPS_REGION_ADDR(ir, ir->valid.left, y) - ir->valid.left * 3;
    __m128i *P = (__m128i *)(((uintptr_t)hbuf + 15) & ~(uintptr_t)15);
    unsigned char *e = (unsigned char *)(P + hlen + 1);
    /* e: the input columns hx0 .. hx0 + hlen − 1 clamped to the image, then
     * one more (the second of the last pair: weight 0) and zeros for the
     * 16-byte loads */
    int a = hx0 < 0 ? -hx0 : 0;
    int b = hx0 + hlen > W ? W - hx0 : hlen;
    for (int j = 0; j < a; j++) {
        memcpy(e + 3 * j, base, 3);
    }
    memcpy(e + 3 * a, base + (size_t)(hx0 + a) * 3, (size_t)(b - a) * 3);
    for (int j = b; j < hlen; j++) {
        memcpy(e + 3 * j, base + (size_t)(W - 1) * 3, 3);
    }
    memcpy(e + 3 * hlen, e + 3 * (hlen - 1), 3);
    memset(e + 3 * (hlen + 1), 0, 16);
    v4f fa;
    v4f fb;
    v4f flo;
    v4f fhi;
    int nfold = hfold_stages(fu, fu->in_scale / (1 << HRES_SHIFT), &fa, &fb, &flo, &fhi);
    int np = hr->np;
    /* in locals: the row's stores (memcpy) could alias hr's fields */
    const int *restrict start = hr->start + x0;
    const __m128i *restrict wv = (const __m128i *)hr->wi + (size_t)x0 * np;
    int built = 0; /* P[0 .. built) made: a few hundred at a time, still in L1 when read */
    for (int x = 0; x < w; x++, wv += np) {
        int s = start[x] - hx0;
        if (s + 2 * np - 1 > built) {
            int to = s + 2 * np - 1 > built + 256 ? s + 2 * np - 1 : built + 256;
            to = to < hlen ? to : hlen;
            hpairs(P, e, built, to);
            built = to;
        }
        const __m128i *p = P + s;
        __m128i acc;
        if (np == 5) { /* 9 or 10 taps: ~4200 → 3000 */
            acc = _mm_add_epi32(_mm_add_epi32(madd(p[0], wv), madd(p[2], wv + 1)),
                                _mm_add_epi32(madd(p[4], wv + 2), madd(p[6], wv + 3)));
            acc = _mm_add_epi32(acc, madd(p[8], wv + 4));
        } else if (np == 4) { /* 7 or 8 taps: 4000 → 3000 */
            acc = _mm_add_epi32(_mm_add_epi32(madd(p[0], wv), madd(p[2], wv + 1)),
                                _mm_add_epi32(madd(p[4], wv + 2), madd(p[6], wv + 3)));
        } else {
            acc = madd(p[0], wv);
            for (int k = 1; k < np; k++) {
                acc = _mm_add_epi32(acc, madd(p[2 * k], wv + k));
            }
        }
        v4f v = fa * (v4f)_mm_cvtepi32_ps(acc) + fb;
        v = (v4f)_mm_min_ps(_mm_max_ps((__m128)v, (__m128)flo), (__m128)fhi);
        if (x + 1 < w) {
            st4(row + 3 * x, v); /* the 4th lane: pixel x + 1's R, written next */
        } else {
            row[3 * x] = v[0];
            row[3 * x + 1] = v[1];
            row[3 * x + 2] = v[2];
        }
    }
    return nfold;
}
#endif

/* The input columns a point recipe (r = 0) reads for output columns x0..x0+w. */
static void point_cols(const fused_t *fu, int x0, int w, int *left, int *width)
{
    if (fu->hr != NULL) {
        *left = fu->hr->start[x0];
        *width = fu->hr->start[x0 + w - 1] + fu->hr->n - *left;
    } else {
        *left = x0;
        *width = w;
    }
}

/* Output row y, columns x0..x0+w, of a point recipe (r = 0) into row; ir
 * covers the input columns (point_cols) of row y. */
static void point_row(const fused_t *fu, VipsRegion *ir, int y, int x0, int w, float *row,
                      float *hbuf, const float *u8f)
{
    VipsImage *in = fu->in;
    int from = 0;
    if (fu->hr != NULL) {
        int hx0;
        int hlen;
        point_cols(fu, x0, w, &hx0, &hlen);
#ifdef __SSE2__
        if (fu->hr->wi != NULL && in->BandFmt == VIPS_FORMAT_UCHAR) {
            from = hreduce_row_u8(fu, ir, y, hx0, hlen, hbuf, row, x0, w);
        } else
#endif
        {
            hreduce_row(fu, ir, y, hx0, hlen, hbuf, u8f, row, x0, w);
        }
    } else if (in->BandFmt != VIPS_FORMAT_FLOAT) {
        from = fu->nlut;
        int size = in->BandFmt == VIPS_FORMAT_UCHAR ? 256 : 65536;
        const float *l0 = fu->lut;
        const float *l1 = l0 + size;
        const float *l2 = l1 + size;
        if (in->BandFmt == VIPS_FORMAT_UCHAR) {
            const unsigned char *p = VIPS_REGION_ADDR(ir, x0, y);
            for (int x = 0; x < w; x++) {
                row[3 * x] = l0[p[3 * x]];
                row[3 * x + 1] = l1[p[3 * x + 1]];
                row[3 * x + 2] = l2[p[3 * x + 2]];
            }
        } else {
            const unsigned short *p = (const unsigned short *)VIPS_REGION_ADDR(ir, x0, y);
            for (int x = 0; x < w; x++) {
                row[3 * x] = l0[p[3 * x]];
                row[3 * x + 1] = l1[p[3 * x + 1]];
                row[3 * x + 2] = l2[p[3 * x + 2]];
            }
        }
    } else {
        const float *p = (const float *)VIPS_REGION_ADDR(ir, x0, y);
        const float s = (float)fu->in_scale;
        for (int x = 0; x < 3 * w; x++) {
            row[x] = p[x] * s;
        }
    }
    stages_row(fu, from, row, w, x0, y);
}

static int fused_gen(VipsRegion *out, void *vseq, void *a, void *b, gboolean *stop)
{
    fused_seq_t *seq = vseq;
    VipsRegion *ir = seq->ir;
    const fused_t *fu = b;
    (void)a;
    (void)stop;
    const VipsRect *o = &out->valid;
    VipsImage *in = fu->in;
    int r = fu->r;
    VipsRect need = {o->left - r, o->top - r, o->width + 2 * r, o->height + 2 * r};
    /* the recipe whose input the region reads: fu, or fu->pre (then rows
     * cl..cr of pre's output are computed in place for the kernel) */
    const fused_t *pt = fu->pre != NULL ? fu->pre : fu;
    const hres_t *hr = pt->hr;
    int cl = 0;
    int cr = 0;
    VipsRect whole = {0, 0, in->Xsize, in->Ysize};
    vips_rect_intersectrect(&need, &whole, &need);
    if (fu->pre != NULL) {
        cl = need.left;
        cr = need.left + need.width;
    }
    int hlen = 0; /* hbuf: the input columns of the horizontal reduction */
    if (pt->r == 0 && (fu->pre != NULL || r == 0)) {
        int pl = fu->pre != NULL ? cl : o->left;
        int pwid = fu->pre != NULL ? cr - cl : o->width;
        int il;
        int iw;
        point_cols(pt, pl, pwid, &il, &iw);
        if (hr != NULL) {
            hlen = iw;
        }
        VipsRect pneed = {il, need.top, iw, need.height};
        VipsRect pwhole = {0, 0, pt->in->Xsize, pt->in->Ysize};
        vips_rect_intersectrect(&pneed, &pwhole, &need);
    }
    if (vips_region_prepare(ir, &need) != 0) {
        return -1;
    }
    int w = o->width;
    int k = 2 * r + 1;
    /* hbuf: 3·hlen + 4 floats for hreduce_row, 16·(hlen + 1) + 3·(hlen + 1)
     * + 32 bytes (+ 15 to align) for hreduce_row_u8 */
    size_t need_f = 3 * ((size_t)w * (1 + k) + 2 * r * k) + (size_t)5 * hlen + 20;
    if (seq->cap < need_f) {
        g_free(seq->buf);
        seq->buf = g_try_malloc(sizeof(float) * need_f);
        seq->cap = seq->buf != NULL ? need_f : 0;
        if (seq->buf == NULL) {
            return -1;
        }
    }
    float *scratch = seq->buf;            /* the row, when the output is 8-bit */
    float *pad = scratch + 3 * (size_t)w; /* k padded rows of w + 2r pixels */
    size_t pw = 3 * ((size_t)w + 2 * r);
    int tag[9 * 2 + 1]; /* the source row each padded row holds (slot = row mod k) */
    for (int i = 0; i < k; i++) {
        tag[i] = -1;
    }
    float *hbuf = pad + k * pw; /* hr: the input row as float, edges repeated */
    float u8f[256];
    if (hr != NULL && pt->in->BandFmt == VIPS_FORMAT_UCHAR) {
        for (int i = 0; i < 256; i++) {
            u8f[i] = (float)(i * pt->in_scale);
        }
    }
    for (int y = o->top; y < o->top + o->height; y++) {
        int from = 0;
        /* float output: computed in place */
        float *row = fu->out_u8 ? scratch : (float *)VIPS_REGION_ADDR(out, o->left, y);
        if (r > 0) {
            const float *rows[9];
            for (int i = 0; i < k; i++) {
                /* rows y−r..y+r reflected lie in a window of k rows: distinct mod k */
                int ry = cpu_reflect101(y + i - r, in->Ysize);
                int slot = ry % k;
                if (tag[slot] != ry && fu->pre != NULL) {
                    /* pre's output columns cl..cr, then the reflect-101 edges */
                    float *d = pad + slot * pw;
                    int x0 = o->left - r; /* the column of d[0] */
                    point_row(fu->pre, ir, ry, cl, cr - cl, d + 3 * (cl - x0), hbuf, u8f);
                    for (int x = x0; x < cl; x++) {
                        memcpy(d + 3 * (x - x0), d + 3 * (cpu_reflect101(x, in->Xsize) - x0),
                               3 * sizeof(float));
                    }
                    for (int x = cr; x < o->left + w + r; x++) {
                        memcpy(d + 3 * (x - x0), d + 3 * (cpu_reflect101(x, in->Xsize) - x0),
                               3 * sizeof(float));
                    }
                    tag[slot] = ry;
                } else if (tag[slot] != ry) {
                    load_row(fu, ir, o->left, w, ry, pad + slot * pw);
                    tag[slot] = ry;
                }
                rows[i] = pad + slot * pw;
            }
            conv_row(row, rows, 3 * w, fu->kern, k);
            if (fu->conv_clamp) {
                int x = 0;
                for (; x + 4 <= 3 * w; x += 4) {
                    st4(row + x, clamp4(ld4(row + x)));
                }
                for (; x < 3 * w; x++) {
                    row[x] = cpu_clamp01f(row[x]);
                }
            }
        } else {
            point_row(fu, ir, y, o->left, w, row, hbuf, u8f);
            from = fu->nst; /* point_row ran the stages */
        }
        stages_row(fu, from, row, w, o->left, y);
        if (fu->out_u8) {
            unsigned char *q = VIPS_REGION_ADDR(out, o->left, y);
            to_u8(q, row, 3 * w);
        }
    }
    return 0;
}

/* Builds the operation for `fu` (taken over, freed on failure). */
VipsImage *cpu_fused_build(fused_t *fu)
{
    VipsImage *in = fu->in;
    VipsImage *out = vips_image_new();
    if (vips_image_pipelinev(out, VIPS_DEMAND_STYLE_THINSTRIP, in, NULL) != 0) {
        g_object_unref(out);
        cpu_fused_free(fu);
        return NULL;
    }
    out->BandFmt = fu->out_u8 ? VIPS_FORMAT_UCHAR : VIPS_FORMAT_FLOAT;
    if (fu->hr != NULL) {
        out->Xsize = fu->hr->out_w;
    }
    out->Type = fu->out_u8 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_MULTIBAND;
    g_object_set_data_full(G_OBJECT(out), FUSED_KEY, fu, cpu_fused_free);
    if (vips_image_generate(out, fused_start, fused_gen, fused_stop,
                            fu->pre != NULL ? fu->pre->in : in, fu) != 0) {
        g_object_unref(out);
        return NULL;
    }
    return out;
}

/* Appends `s` to im's recipe: out is the fused image; returns 1 when im
 * cannot be fused (the caller uses libvips operations). */
int cpu_fused_append(ctx_t *c, VipsImage *im, const stage_t *s, VipsImage **out, const char *what)
{
    fused_t *fu = cpu_fused_extend(im);
    if (fu == NULL) {
        cpu_vmask_unref(s->mask);
        return 1;
    }
    fu->st[fu->nst++] = *s;
    *out = cpu_fused_build(fu);
    return *out != NULL ? 0 : cpu_vips_fail(c, what);
}

/* Clamping to [0,1] with streaming ops that read their input ONCE (libvips
 * recomputes a lazy input for every reference, so |x| − |x − 1| tricks
 * double the work upstream at each node): scale to 0..2³²−1 (CLAMP_SCALE),
 * cast to uint (which clips), scale back. The round trip is exact to ~1e-7.
 * cpu_clamp01_image() takes its input already scaled by CLAMP_SCALE. */

/* out = clamp(in * a + b) per band (n = 1 or bands). */
int cpu_linear_clamped(ctx_t *c, VipsImage *in, const double *a, const double *b, int n,
                       VipsImage **out, const char *what)
{
    double as[4];
    double bs[4];
    if (n > 4) {
        return cpu_fail(c, CPU_EXEC_ERROR, "%s: too many bands", what);
    }
    if (n == 1 || n == 3) {
        stage_t s = {.kind = ST_LINEAR, .clamp = true};
        for (int k = 0; k < 3; k++) {
            s.a[k] = a[n == 1 ? 0 : k];
            s.b[k] = b[n == 1 ? 0 : k];
        }
        int rc = cpu_fused_append(c, in, &s, out, what);
        if (rc <= 0) {
            return rc;
        }
    }
    for (int i = 0; i < n; i++) {
        as[i] = a[i] * CLAMP_SCALE;
        bs[i] = b[i] * CLAMP_SCALE;
    }
    VipsImage *t[2] = {0};
    int rc = vips_linear(in, &t[0], as, bs, n, NULL) ||
             vips_cast(t[0], &t[1], VIPS_FORMAT_UINT, NULL) ||
             vips_linear1(t[1], out, 1.0 / CLAMP_SCALE, 0.0, NULL);
    cpu_unref_all(t, NIN(t));
    return rc != 0 ? cpu_vips_fail(c, what) : 0;
}

int cpu_clamp01_image(VipsImage *in, VipsImage **out)
{
    VipsImage *t = NULL;
    int rc = vips_cast(in, &t, VIPS_FORMAT_UINT, NULL);
    if (rc == 0) {
        rc = vips_linear1(t, out, 1.0 / CLAMP_SCALE, 0.0, NULL);
    }
    if (t != NULL) {
        g_object_unref(t);
    }
    return rc != 0 ? -1 : 0;
}
