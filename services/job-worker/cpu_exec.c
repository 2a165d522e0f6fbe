/*
 * cpu_exec — the built-in CPU executor on libvips. See cpu_exec.h and
 * docs/image-pipeline.md.
 *
 * Every node builds a lazy libvips pipeline that runs while the output is
 * encoded (decoding sequentially when the graph allows). Chains of per-pixel
 * nodes (with ImageSharpen, ResizeLongEdge's horizontal pass and the 8-bit
 * conversion) run as one fused operation of our own (see "fused point
 * operations"). ImageBlur is a libvips convolution with ComfyUI's kernel on
 * explicit reflect-101 borders; only ImageScale* with ComfyUI's own resamplers,
 * ImageBlend and oversized blur radii are computed in C on a packed float
 * buffer (the formulas of ComfyUI's source). Statistics (CA.AutoLevels,
 * CA.WhiteBalance) come from a shrink-on-load preview. See
 * docs/image-pipeline.md.
 */
#define _GNU_SOURCE
#include "cpu_exec.h"
#include "cpu_nodes.h"

#include <math.h>
#include <stdarg.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RESOLUTION CPU_NODES_MAX_RESOLUTION
#define NIN(a) (sizeof(a) / sizeof(a[0]))

const graph_registry_t *cpu_exec_registry(void)
{
    return cpu_nodes_registry();
}

/* ---- context ------------------------------------------------------------- */

typedef struct {
    const char *id;
    const char *class_type;
    const cJSON *inputs;
    bool done;
    VipsImage *out[2];
} enode_t;

typedef struct {
    enode_t *nodes;
    size_t n;
    cpu_exec_job_t *job;
    VipsImage *source; /* the decoded original after autorot: metadata source */
    bool source_converted; /* CMYK → sRGB: the embedded profile no longer applies */
    /* eager: decode into memory at LoadImage (a corrupt file fails there);
     * otherwise lazy, and sequential when the graph reads the source once. */
    bool eager;
    bool sequential;
    /* preview: this context runs on a small thumbnail of the input, to compute
     * statistics (AutoLevels, WhiteBalance) without a full-size pass. */
    bool preview;
    VipsImage *thumb; /* the thumbnail (memory), made once per run */
    /* LoadImage's 3-band pixels before the float conversion (8-bit only), so
     * a resize right after it can run on 8-bit data (vectorised, 4× less). */
    const enode_t *load_node;
    VipsImage *native;
    cpu_exec_status_t fail;
    char *err;
    size_t errlen;
} ctx_t;

typedef int (*node_fn)(ctx_t *c, enode_t *n, VipsImage **out);

static int fail(ctx_t *c, cpu_exec_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(ctx_t *c, cpu_exec_status_t st, const char *fmt, ...)
{
    if (c->fail == CPU_EXEC_OK) {
        c->fail = st;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int vips_fail(ctx_t *c, const char *what)
{
    const char *ve = vips_error_buffer();
    char buf[200];
    snprintf(buf, sizeof(buf), "%s", ve != NULL ? ve : "");
    for (char *p = buf; *p != '\0'; p++) {
        if (*p == '\n') {
            *p = ' ';
        }
    }
    vips_error_clear();
    return fail(c, CPU_EXEC_ERROR, "%s: %s", what, buf);
}

static enode_t *find_enode(ctx_t *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->nodes[i].id, id) == 0) {
            return &c->nodes[i];
        }
    }
    return NULL;
}

/* Python-ish coercion of an already validated literal. */
static double num(const enode_t *n, const char *name, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(n->inputs, name);
    if (cJSON_IsNumber(v)) {
        return v->valuedouble;
    }
    if (cJSON_IsBool(v)) {
        return cJSON_IsTrue(v) ? 1 : 0;
    }
    if (cJSON_IsString(v)) {
        return strtod(v->valuestring, NULL);
    }
    return def;
}

static int inum(const enode_t *n, const char *name, int def)
{
    return (int)trunc(num(n, name, def));
}

static const char *str(const enode_t *n, const char *name, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(n->inputs, name);
    return cJSON_IsString(v) ? v->valuestring : def;
}

static bool boolean(const enode_t *n, const char *name, bool def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(n->inputs, name);
    if (v == NULL || cJSON_IsNull(v)) {
        return def;
    }
    if (cJSON_IsBool(v)) {
        return cJSON_IsTrue(v);
    }
    if (cJSON_IsNumber(v)) {
        return v->valuedouble != 0;
    }
    if (cJSON_IsString(v)) {
        return v->valuestring[0] != '\0' && strcmp(v->valuestring, "false") != 0;
    }
    return true;
}

static int eval(ctx_t *c, enode_t *n);

/* The image an input links to (borrowed; owned by the source node). */
static VipsImage *input_image(ctx_t *c, enode_t *n, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(n->inputs, name);
    if (!graph_is_link(v)) {
        fail(c, CPU_EXEC_BAD_GRAPH, "node %s: input %s is not a link", n->id, name);
        return NULL;
    }
    enode_t *src = find_enode(c, cJSON_GetArrayItem(v, 0)->valuestring);
    int idx = (int)cJSON_GetArrayItem(v, 1)->valuedouble;
    if (src == NULL || idx < 0 || idx > 1 || eval(c, src) != 0) {
        return NULL;
    }
    if (src->out[idx] == NULL) {
        fail(c, CPU_EXEC_BAD_GRAPH, "node %s: input %s has no value", n->id, name);
    }
    return src->out[idx];
}

/* ---- packed float buffers ------------------------------------------------ */

typedef struct {
    float *px; /* g_malloc'd, HWC */
    int w, h, c;
} fbuf_t;

static int to_fbuf(ctx_t *c, VipsImage *im, fbuf_t *fb)
{
    VipsImage *f = NULL;
    if (vips_cast(im, &f, VIPS_FORMAT_FLOAT, NULL) != 0) {
        return vips_fail(c, "cast");
    }
    size_t size = 0;
    fb->px = vips_image_write_to_memory(f, &size);
    fb->w = f->Xsize;
    fb->h = f->Ysize;
    fb->c = f->Bands;
    g_object_unref(f);
    if (fb->px == NULL) {
        return vips_fail(c, "read pixels");
    }
    return 0;
}

/* Wraps (and frees) px as a new float image. */
static VipsImage *from_floats(ctx_t *c, float *px, int w, int h, int bands)
{
    VipsImage *im = vips_image_new_from_memory_copy(px, (size_t)w * h * bands * sizeof(float), w,
                                                    h, bands, VIPS_FORMAT_FLOAT);
    g_free(px);
    if (im == NULL) {
        vips_fail(c, "new image");
    }
    return im;
}

static inline float clamp01f(float v)
{
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

/* ---- common_upscale ------------------------------------------------------ */

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
        double old_aspect = (double)W / H;
        double new_aspect = (double)w / h;
        if (old_aspect > new_aspect) {
            x0 = (int)rint((W - W * (new_aspect / old_aspect)) / 2);
        } else if (old_aspect < new_aspect) {
            y0 = (int)rint((H - H * (old_aspect / new_aspect)) / 2);
        }
        cw = W - 2 * x0;
        ch = H - 2 * y0;
    }
    float *dst = g_try_malloc((size_t)w * h * C * sizeof(float));
    if (dst == NULL) {
        return NULL;
    }
#define SRC(x, y, k) src[(((size_t)(y0 + (y)) * W) + (size_t)(x0 + (x))) * C + (k)]
    float sx = (float)cw / (float)w;
    float sy = (float)ch / (float)h;
    if (strcmp(method, "nearest-exact") == 0) {
        for (int j = 0; j < h; j++) {
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
            float fy = sy * (j + 0.5f) - 0.5f;
            if (fy < 0) {
                fy = 0;
            }
            int yi = (int)fy;
            int yp = yi < ch - 1 ? 1 : 0;
            float ly1 = fy - yi;
            float ly0 = 1.0f - ly1;
            for (int i = 0; i < w; i++) {
                float fx = sx * (i + 0.5f) - 0.5f;
                if (fx < 0) {
                    fx = 0;
                }
                int xi = (int)fx;
                int xp = xi < cw - 1 ? 1 : 0;
                float lx1 = fx - xi;
                float lx0 = 1.0f - lx1;
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
            float fy = sy * (j + 0.5f) - 0.5f;
            int yi = (int)floorf(fy);
            float ty = fy - yi;
            float cy[4] = {cubic2(ty + 1, A), cubic1(ty, A), cubic1(1 - ty, A),
                           cubic2(2 - ty, A)};
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
    return dst;
}

/* common_upscale on a VipsImage; lanczos through vips_resize (see docs). */
static VipsImage *upscale_image(ctx_t *c, VipsImage *in, int w, int h, const char *method,
                                const char *crop)
{
    if (strcmp(method, "lanczos") == 0) {
        VipsImage *src = in;
        VipsImage *cropped = NULL;
        if (strcmp(crop, "center") == 0) {
            double old_aspect = (double)in->Xsize / in->Ysize;
            double new_aspect = (double)w / h;
            int x0 = 0;
            int y0 = 0;
            if (old_aspect > new_aspect) {
                x0 = (int)rint((in->Xsize - in->Xsize * (new_aspect / old_aspect)) / 2);
            } else if (old_aspect < new_aspect) {
                y0 = (int)rint((in->Ysize - in->Ysize * (old_aspect / new_aspect)) / 2);
            }
            if (vips_extract_area(in, &cropped, x0, y0, in->Xsize - 2 * x0, in->Ysize - 2 * y0,
                                  NULL) != 0) {
                vips_fail(c, "crop");
                return NULL;
            }
            src = cropped;
        }
        VipsImage *out = NULL;
        int rc = vips_resize(src, &out, (double)w / src->Xsize, "vscale",
                             (double)h / src->Ysize, "kernel", VIPS_KERNEL_LANCZOS3, NULL);
        if (cropped != NULL) {
            g_object_unref(cropped);
        }
        if (rc != 0) {
            vips_fail(c, "resize");
            return NULL;
        }
        if (out->Xsize != w || out->Ysize != h) {
            /* vips_resize may round a size differently: pad or trim by one. */
            VipsImage *fixed = NULL;
            rc = vips_embed(out, &fixed, 0, 0, w, h, "extend", VIPS_EXTEND_COPY, NULL);
            g_object_unref(out);
            if (rc != 0) {
                vips_fail(c, "resize fix");
                return NULL;
            }
            out = fixed;
        }
        return out;
    }
    fbuf_t fb;
    if (to_fbuf(c, in, &fb) != 0) {
        return NULL;
    }
    float *px = cpu_exec_upscale(fb.px, fb.w, fb.h, fb.c, w, h, method, crop);
    g_free(fb.px);
    if (px == NULL) {
        fail(c, CPU_EXEC_ERROR, "resample %s failed", method);
        return NULL;
    }
    return from_floats(c, px, w, h, fb.c);
}

static int reflect101(int p, int len);

/* ---- fused point operations ---------------------------------------------- */

/* A chain of per-pixel nodes (the CA. point nodes, ImageInvert, ImageSharpen's
 * kernel with radius ≤ 4, the 8-bit conversion of the encoder) runs as ONE
 * libvips operation (vips_image_generate) that reads its input once and makes
 * a single pass over each strip, instead of two or three float libvips
 * operations per node. The output image carries its recipe (g_object data
 * "ca-fused"): the next point node copies the recipe, appends its stage and
 * builds a new operation on the same input, so the earlier one is never
 * evaluated. Values are computed in float/double with the same formulas and
 * clamps as the per-node operations (to ~1e-7). With an 8-bit or 16-bit input
 * and no kernel, the leading per-band stages become a lookup table. */

#define FUSED_KEY "ca-fused"
#define FUSED_MAX_STAGES 16

typedef enum { ST_LINEAR, ST_RECOMB, ST_POW, ST_VIGNETTE } stage_kind_t;

typedef struct {
    gint refs;
    int f, mw, mh;
    float px[]; /* mw × mh, one value per f×f block */
} vmask_t;

/* 4-wide float vectors (GCC/Clang vector extensions: SSE, NEON): -O2 does
 * not vectorise these loops by itself. */
typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));
typedef unsigned char v4u8 __attribute__((vector_size(4)));

/* A horizontal lanczos3 reduction: output x = Σ wt[x·n + t] · input[start[x] + t]
 * (indices clamped to the image: edge pixels repeat). */
typedef struct {
    gint refs;
    int n, out_w;
    int *start;
    v4f *wt; /* out_w × n, each weight in all 4 lanes */
} hres_t;

typedef struct {
    stage_kind_t kind;
    bool clamp;       /* clamp the result to [0,1] */
    double a[3], b[3]; /* LINEAR: per band */
    double m[9];       /* RECOMB: row-major 3×3 */
    double p;          /* POW: exponent */
    vmask_t *mask;     /* VIGNETTE (a reference) */
} stage_t;

typedef struct fused {
    VipsImage *in;    /* a reference */
    double in_scale;  /* input sample → 0..1 */
    int r;            /* kernel radius, 0 = none */
    hres_t *hr;       /* horizontal reduction first (r = 0), or NULL */
    /* r > 0: the kernel's input computed in place from this point recipe's
     * input (no float image in between), or NULL: read `in` */
    struct fused *pre;
    bool conv_clamp;
    float kern[9 * 9];
    int nst;
    stage_t st[FUSED_MAX_STAGES];
    bool out_u8;      /* ComfyUI's clip(255x) truncated to uint8 (see encode) */
    /* built: a lookup table for 8/16-bit inputs (the first nlut stages) */
    int nlut;
    float *lut; /* 3 × (max+1) */
} fused_t;

static void vmask_unref(vmask_t *m)
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

/* Weights for a lanczos3 reduction from W to w < W pixels (centres aligned:
 * input x = (x + 0.5)·W/w − 0.5; the kernel stretched by W/w to filter). */
static hres_t *hres_new(int W, int w)
{
    double sc = (double)W / w;
    double support = 3.0 * sc;
    int n = (int)ceil(2.0 * support) + 1;
    hres_t *h = g_new0(hres_t, 1);
    h->refs = 1;
    h->out_w = w;
    h->start = g_new(int, w);
    float *wt = g_new(float, (size_t)w * n);
    for (int x = 0; x < w; x++) {
        double c = (x + 0.5) * sc - 0.5;
        int st = (int)floor(c - support) + 1;
        double sum = 0;
        for (int t = 0; t < n; t++) {
            sum += lanczos3((st + t - c) / sc);
        }
        for (int t = 0; t < n; t++) {
            wt[(size_t)x * n + t] = (float)(lanczos3((st + t - c) / sc) / sum);
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
    g_free(wt);
    return h;
}

static void fused_free(void *p)
{
    fused_t *fu = p;
    if (fu == NULL) {
        return;
    }
    hres_unref(fu->hr);
    fused_free(fu->pre);
    for (int i = 0; i < fu->nst; i++) {
        vmask_unref(fu->st[i].mask);
    }
    if (fu->in != NULL) {
        g_object_unref(fu->in);
    }
    g_free(fu->lut);
    g_free(fu);
}

static bool fused_input_ok(const VipsImage *in)
{
    return in->Bands == 3 && in->Coding == VIPS_CODING_NONE &&
           (in->BandFmt == VIPS_FORMAT_UCHAR || in->BandFmt == VIPS_FORMAT_USHORT ||
            in->BandFmt == VIPS_FORMAT_FLOAT);
}

static inline float clampf01(float v)
{
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

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
    return s->clamp ? clampf01(v) : v;
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
            for (int x = 0; x < 3 * x4; x += 12) {
                for (int q = 0; q < 3; q++) {
                    v4f v = A[q] * ld4(row + x + 4 * q) + B[q];
                    st4(row + x + 4 * q, s->clamp ? clamp4(v) : v);
                }
            }
            if (s->clamp) {
                for (int x = x4; x < w; x++) {
                    float *p = row + 3 * x;
                    p[0] = clampf01(a0 * p[0] + b0);
                    p[1] = clampf01(a1 * p[1] + b1);
                    p[2] = clampf01(a2 * p[2] + b2);
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
            for (int x = 0; x < w; x++) {
                float *p = row + 3 * x;
                float r = p[0], g = p[1], b = p[2];
                float o0 = m[0] * r + m[1] * g + m[2] * b;
                float o1 = m[3] * r + m[4] * g + m[5] * b;
                float o2 = m[6] * r + m[7] * g + m[8] * b;
                p[0] = s->clamp ? clampf01(o0) : o0;
                p[1] = s->clamp ? clampf01(o1) : o1;
                p[2] = s->clamp ? clampf01(o2) : o2;
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
        const float *p = (const float *)VIPS_REGION_ADDR(ir, reflect101(x0 - r + j, W), y);
        const float *q = (const float *)VIPS_REGION_ADDR(ir, reflect101(x0 + w + j, W), y);
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
static void conv_row(float *restrict acc, const float *const *rows, int n, const float *kern,
                     int k)
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

/* ComfyUI's clip(255x, 0, 255) truncated (see encode for the 1e-4). */
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
        v4i i = __builtin_convertvector(clampv(ld4(row + x) * k255 + eps, k255), v4i); /* truncates */
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
                        float *restrict hbuf, const float *u8f, float *restrict row, int x0,
                        int w)
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
        for (int i = 0; i < 3 * (b - a); i++) {
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
        hreduce_row(fu, ir, y, hx0, hlen, hbuf, u8f, row, x0, w);
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
    size_t need_f = 3 * ((size_t)w * (1 + k) + 2 * r * k) + (size_t)3 * hlen + 4;
    if (seq->cap < need_f) {
        g_free(seq->buf);
        seq->buf = g_try_malloc(sizeof(float) * need_f);
        seq->cap = seq->buf != NULL ? need_f : 0;
        if (seq->buf == NULL) {
            return -1;
        }
    }
    float *scratch = seq->buf; /* the row, when the output is 8-bit */
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
                int ry = reflect101(y + i - r, in->Ysize);
                int slot = ry % k;
                if (tag[slot] != ry && fu->pre != NULL) {
                    /* pre's output columns cl..cr, then the reflect-101 edges */
                    float *d = pad + slot * pw;
                    int x0 = o->left - r; /* the column of d[0] */
                    point_row(fu->pre, ir, ry, cl, cr - cl, d + 3 * (cl - x0), hbuf, u8f);
                    for (int x = x0; x < cl; x++) {
                        memcpy(d + 3 * (x - x0), d + 3 * (reflect101(x, in->Xsize) - x0),
                               3 * sizeof(float));
                    }
                    for (int x = cr; x < o->left + w + r; x++) {
                        memcpy(d + 3 * (x - x0), d + 3 * (reflect101(x, in->Xsize) - x0),
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
                    row[x] = clampf01(row[x]);
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

/* The recipe of a fused image that a stage can be appended to, or NULL. */
static const fused_t *fused_of(VipsImage *im)
{
    const fused_t *fu = g_object_get_data(G_OBJECT(im), FUSED_KEY);
    return fu != NULL && !fu->out_u8 && fu->nst < FUSED_MAX_STAGES ? fu : NULL;
}

static fused_t *fused_copy(const fused_t *old)
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
        fu->pre = fused_copy(fu->pre);
    }
    for (int i = 0; i < fu->nst; i++) {
        if (fu->st[i].mask != NULL) {
            g_atomic_int_inc(&fu->st[i].mask->refs);
        }
    }
    return fu;
}

/* Builds the operation for `fu` (taken over, freed on failure). */
static VipsImage *fused_build(fused_t *fu)
{
    VipsImage *in = fu->in;
    VipsImage *out = vips_image_new();
    if (vips_image_pipelinev(out, VIPS_DEMAND_STYLE_THINSTRIP, in, NULL) != 0) {
        g_object_unref(out);
        fused_free(fu);
        return NULL;
    }
    out->BandFmt = fu->out_u8 ? VIPS_FORMAT_UCHAR : VIPS_FORMAT_FLOAT;
    if (fu->hr != NULL) {
        out->Xsize = fu->hr->out_w;
    }
    out->Type = fu->out_u8 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_MULTIBAND;
    g_object_set_data_full(G_OBJECT(out), FUSED_KEY, fu, fused_free);
    if (vips_image_generate(out, fused_start, fused_gen, fused_stop,
                            fu->pre != NULL ? fu->pre->in : in, fu) != 0) {
        g_object_unref(out);
        return NULL;
    }
    return out;
}

/* A new recipe: `im` (3-band uchar/ushort/float) × in_scale, no stages. */
static fused_t *fused_new(VipsImage *im, double in_scale)
{
    fused_t *fu = g_new0(fused_t, 1);
    g_object_ref(im);
    fu->in = im;
    fu->in_scale = in_scale;
    return fu;
}

/* A copy of `im`'s recipe, or a new one reading `im`; NULL when im cannot be
 * fused (band count, format). */
static fused_t *fused_extend(VipsImage *im)
{
    const fused_t *old = fused_of(im);
    if (old == NULL) {
        return im->BandFmt == VIPS_FORMAT_FLOAT && fused_input_ok(im) ? fused_new(im, 1.0)
                                                                       : NULL;
    }
    return fused_copy(old);
}

/* Appends `s` to im's recipe: out is the fused image; returns 1 when im
 * cannot be fused (the caller uses libvips operations). */
static int fused_append(ctx_t *c, VipsImage *im, const stage_t *s, VipsImage **out,
                        const char *what)
{
    fused_t *fu = fused_extend(im);
    if (fu == NULL) {
        vmask_unref(s->mask);
        return 1;
    }
    fu->st[fu->nst++] = *s;
    *out = fused_build(fu);
    return *out != NULL ? 0 : vips_fail(c, what);
}

/* ---- ComfyUI nodes ------------------------------------------------------- */

/* 1 − alpha/max, or ComfyUI's 64×64 zero mask when there is no alpha. */
static VipsImage *make_mask(ctx_t *c, VipsImage *alpha, double max)
{
    VipsImage *m = NULL;
    int rc;
    if (alpha != NULL) {
        rc = vips_linear1(alpha, &m, -1.0 / max, 1.0, NULL);
    } else {
        VipsImage *b = NULL;
        rc = vips_black(&b, 64, 64, NULL);
        if (rc == 0) {
            rc = vips_cast(b, &m, VIPS_FORMAT_FLOAT, NULL);
            g_object_unref(b);
        }
    }
    if (rc != 0) {
        vips_fail(c, "mask");
        return NULL;
    }
    return m;
}

static int node_load(ctx_t *c, enode_t *n, VipsImage **out)
{
    cpu_exec_job_t *job = c->job;
    if (job->input_image != NULL) {
        g_object_ref(job->input_image);
        out[0] = job->input_image;
        out[1] = make_mask(c, NULL, 1);
        job->in_width = out[0]->Xsize;
        job->in_height = out[0]->Ysize;
        return out[1] != NULL ? 0 : -1;
    }
    if (job->input == NULL || job->input_len == 0) {
        return fail(c, CPU_EXEC_UNSUPPORTED_IMAGE, "unsupported_image: empty input");
    }
    int rc = -1;
    VipsImage *t[8] = {0};
    VipsImage *alpha = NULL;
    if (c->source == NULL) {
        VipsAccess access = c->sequential ? VIPS_ACCESS_SEQUENTIAL : VIPS_ACCESS_RANDOM;
        t[0] = vips_image_new_from_buffer(job->input, job->input_len, "", "fail_on",
                                          VIPS_FAIL_ON_ERROR, "access", access, NULL);
        if (t[0] == NULL) {
            vips_error_clear();
            return fail(c, CPU_EXEC_UNSUPPORTED_IMAGE,
                        "unsupported_image: not a JPEG, PNG, WebP, TIFF or HEIC image");
        }
        int orientation = 1;
        if (access == VIPS_ACCESS_SEQUENTIAL &&
            vips_image_get_typeof(t[0], VIPS_META_ORIENTATION) != 0 &&
            vips_image_get_int(t[0], VIPS_META_ORIENTATION, &orientation) == 0 &&
            orientation > 1) {
            /* Rotating needs random access. */
            g_object_unref(t[0]);
            t[0] = vips_image_new_from_buffer(job->input, job->input_len, "", "fail_on",
                                              VIPS_FAIL_ON_ERROR, NULL);
            if (t[0] == NULL) {
                vips_error_clear();
                return fail(c, CPU_EXEC_UNSUPPORTED_IMAGE,
                            "unsupported_image: not a JPEG, PNG, WebP, TIFF or HEIC image");
            }
        }
        VipsImage *rot = NULL;
        if (vips_autorot(t[0], &rot, NULL) != 0) {
            vips_fail(c, "autorotate");
            goto out;
        }
        if (c->eager) {
            /* Decode now: a corrupt file fails here, as unsupported_image. */
            c->source = vips_image_copy_memory(rot);
            g_object_unref(rot);
            if (c->source == NULL) {
                vips_error_clear();
                fail(c, CPU_EXEC_UNSUPPORTED_IMAGE, "unsupported_image: the file is corrupt");
                goto out;
            }
        } else {
            c->source = rot; /* decoded as the output is written */
        }
        job->in_width = c->source->Xsize;
        job->in_height = c->source->Ysize;
    }
    VipsImage *im = c->source;
    double max = 255.0;
    if (im->Type == VIPS_INTERPRETATION_CMYK) {
        if (vips_icc_transform(im, &t[1], "srgb", "embedded", TRUE, "input_profile", "cmyk",
                               "depth", 16, NULL) != 0) {
            vips_fail(c, "CMYK to sRGB");
            goto out;
        }
        c->source_converted = true;
        im = t[1];
    }
    switch (im->BandFmt) {
    case VIPS_FORMAT_UCHAR:
    case VIPS_FORMAT_CHAR:
        max = 255.0;
        break;
    case VIPS_FORMAT_USHORT:
    case VIPS_FORMAT_SHORT:
        max = 65535.0;
        break;
    case VIPS_FORMAT_UINT:
    case VIPS_FORMAT_INT:
        max = 4294967295.0;
        break;
    default:
        max = 1.0; /* float formats are taken as 0..1 */
        break;
    }
    int bands = im->Bands;
    bool has_alpha = bands == 2 || bands >= 4;
    int colour = bands >= 3 ? 3 : 1;
    if (has_alpha) {
        if (vips_extract_band(im, &alpha, colour, NULL) != 0) {
            vips_fail(c, "alpha");
            goto out;
        }
    }
    if (vips_extract_band(im, &t[2], 0, "n", colour, NULL) != 0) {
        vips_fail(c, "bands");
        goto out;
    }
    im = t[2];
    if (colour == 1) {
        VipsImage *three[3] = {im, im, im};
        if (vips_bandjoin(three, &t[3], 3, NULL) != 0) {
            vips_fail(c, "grey to RGB");
            goto out;
        }
        im = t[3];
    }
    if (!c->preview && c->native == NULL && im->BandFmt == VIPS_FORMAT_UCHAR) {
        g_object_ref(im);
        c->native = im;
        c->load_node = n;
    }
    if (fused_input_ok(im)) {
        /* /max as a lookup table, fused with the point nodes that follow */
        out[0] = fused_build(fused_new(im, 1.0 / max));
        if (out[0] == NULL) {
            vips_fail(c, "to float");
            goto out;
        }
    } else if (vips_linear1(im, &t[4], 1.0 / max, 0.0, NULL) != 0 ||
        vips_cast(t[4], &t[5], VIPS_FORMAT_FLOAT, NULL) != 0 ||
        vips_copy(t[5], &out[0], "interpretation", VIPS_INTERPRETATION_MULTIBAND, NULL) != 0) {
        vips_fail(c, "to float");
        goto out;
    }
    out[1] = make_mask(c, alpha, max);
    rc = out[1] != NULL ? 0 : -1;
out:
    for (size_t i = 0; i < 8; i++) {
        if (t[i] != NULL) {
            g_object_unref(t[i]);
        }
    }
    if (alpha != NULL) {
        g_object_unref(alpha);
    }
    return rc;
}

static int node_save(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, strcmp(n->class_type, "CA.Export") == 0 ? "image" : "images");
    if (im == NULL) {
        return -1;
    }
    g_object_ref(im);
    out[0] = im;
    return 0;
}

static int node_empty(ctx_t *c, enode_t *n, VipsImage **out)
{
    int w = inum(n, "width", 512);
    int h = inum(n, "height", 512);
    unsigned color = (unsigned)inum(n, "color", 0);
    double rgb[3] = {((color >> 16) & 255) / 255.0, ((color >> 8) & 255) / 255.0,
                     (color & 255) / 255.0};
    double zero[3] = {0, 0, 0};
    VipsImage *b = NULL;
    VipsImage *f = NULL;
    int rc = vips_black(&b, w, h, "bands", 3, NULL);
    if (rc == 0) {
        rc = vips_linear(b, &f, zero, rgb, 3, NULL);
        g_object_unref(b);
    }
    if (rc == 0) {
        rc = vips_cast(f, &out[0], VIPS_FORMAT_FLOAT, NULL);
        g_object_unref(f);
    }
    return rc != 0 ? vips_fail(c, "EmptyImage") : 0;
}

static int scale_to(ctx_t *c, enode_t *n, VipsImage *im, int w, int h, const char *crop,
                    VipsImage **out)
{
    const char *method = str(n, "upscale_method", "bilinear");
    if (w < 1) {
        w = 1;
    }
    if (h < 1) {
        h = 1;
    }
    out[0] = upscale_image(c, im, w, h, method, crop);
    return out[0] != NULL ? 0 : -1;
}

static int node_scale(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int W = im->Xsize;
    int H = im->Ysize;
    int w = inum(n, "width", 512);
    int h = inum(n, "height", 512);
    if (w == 0 && h == 0) {
        g_object_ref(im);
        out[0] = im;
        return 0;
    }
    if (w == 0) {
        w = (int)fmax(1, rint((double)W * h / H));
    } else if (h == 0) {
        h = (int)fmax(1, rint((double)H * w / W));
    }
    return scale_to(c, n, im, w, h, str(n, "crop", "disabled"), out);
}

static int node_scale_by(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double s = num(n, "scale_by", 1.0);
    return scale_to(c, n, im, (int)rint(im->Xsize * s), (int)rint(im->Ysize * s), "disabled", out);
}

static int node_scale_total(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double total = trunc(num(n, "megapixels", 1.0) * 1024 * 1024);
    double s = sqrt(total / ((double)im->Xsize * im->Ysize));
    return scale_to(c, n, im, (int)rint(im->Xsize * s), (int)rint(im->Ysize * s), "disabled", out);
}

static int node_scale_max(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int largest = inum(n, "largest_size", 512);
    int W = im->Xsize;
    int H = im->Ysize;
    int w;
    int h;
    if (W > H) {
        w = largest;
        h = (int)rint((double)H / W * largest);
    } else if (H > W) {
        h = largest;
        w = (int)rint((double)W / H * largest);
    } else {
        w = h = largest;
    }
    return scale_to(c, n, im, w, h, "disabled", out);
}

static int node_invert(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    stage_t s = {.kind = ST_LINEAR, .a = {-1, -1, -1}, .b = {1, 1, 1}};
    int rc = fused_append(c, im, &s, out, "ImageInvert");
    if (rc <= 0) {
        return rc;
    }
    return vips_linear1(im, &out[0], -1.0, 1.0, NULL) != 0 ? vips_fail(c, "ImageInvert") : 0;
}

/* reflect-101: -1 → 1, n → n-2 (repeated for radii past the edge). */
static int reflect101(int p, int len)
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
static void gaussian_1d(double *g, int k, double sigma)
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
static float *gaussian_blur(const fbuf_t *fb, int r, double sigma)
{
    int k = 2 * r + 1;
    double *g = g_new(double, k);
    gaussian_1d(g, k, sigma);
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
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            for (int ch = 0; ch < C; ch++) {
                double acc = 0;
                for (int i = 0; i < k; i++) {
                    int xx = reflect101(x + i - r, W);
                    acc += g[i] * fb->px[((size_t)y * W + xx) * C + ch];
                }
                tmp[((size_t)y * W + x) * C + ch] = (float)acc;
            }
        }
    }
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            for (int ch = 0; ch < C; ch++) {
                double acc = 0;
                for (int i = 0; i < k; i++) {
                    int yy = reflect101(y + i - r, H);
                    acc += g[i] * tmp[((size_t)yy * W + x) * C + ch];
                }
                dst[((size_t)y * W + x) * C + ch] = (float)acc;
            }
        }
    }
    g_free(tmp);
    g_free(g);
    return dst;
}

static int clamp01(VipsImage *in, VipsImage **out);
#define CLAMP_SCALE 4294967295.0
static int linear_clamped(ctx_t *c, VipsImage *in, const double *a, const double *b, int n,
                          VipsImage **out, const char *what);

static void unref_all(VipsImage **t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (t[i] != NULL) {
            g_object_unref(t[i]);
            t[i] = NULL;
        }
    }
}

/* ComfyUI's blur (or sharpen) as a lazy libvips pipeline: reflect-101
 * borders built from flipped strips (VIPS_EXTEND_MIRROR repeats the edge
 * pixel, which is plain reflect), a float convolution, the padding cut off.
 * Blur: separable, the 1-D factor. Sharpen (sharpen_k = 10α > 0): one 2-D
 * kernel (1+k)δ − k·G so the input is read once, the result × CLAMP_SCALE and
 * clamped. Returns 1 (nothing done) when the radius needs repeated
 * reflection (r ≥ width or height) or is too large for a 2-D kernel: the
 * caller uses the buffer path. */
static int conv_lazy(ctx_t *c, VipsImage *in, int r, double sigma, double sharpen_k,
                     VipsImage **out)
{
    int W = in->Xsize;
    int H = in->Ysize;
    bool sharpen = sharpen_k != 0.0;
    if (r < 1 || r >= W || r >= H || r > 64 || (sharpen && r > 4)) {
        return 1;
    }
    int k = 2 * r + 1;
    double g[2 * 64 + 1];
    gaussian_1d(g, k, sigma);
    VipsImage *mask = NULL;
    if (sharpen && in->BandFmt == VIPS_FORMAT_FLOAT && fused_input_ok(in)) {
        /* one fused operation: the kernel on reflect-101 borders (read in
         * place, so the input streams), clamped, and the point nodes after */
        fused_t *fu = fused_new(in, 1.0);
        fu->r = r;
        fu->conv_clamp = true;
        const fused_t *pa = g_object_get_data(G_OBJECT(in), FUSED_KEY);
        if (pa != NULL && pa->r == 0 && !pa->out_u8) {
            fu->pre = fused_copy(pa); /* `in` itself is never evaluated */
        }
        for (int y = 0; y < k; y++) {
            for (int x = 0; x < k; x++) {
                double v = -sharpen_k * g[y] * g[x];
                if (x == r && y == r) {
                    v += 1.0 + sharpen_k;
                }
                fu->kern[y * k + x] = (float)v;
            }
        }
        *out = fused_build(fu);
        return *out != NULL ? 0 : vips_fail(c, "ImageSharpen");
    }
    if (sharpen) {
        double m[9 * 9];
        for (int y = 0; y < k; y++) {
            for (int x = 0; x < k; x++) {
                double v = -sharpen_k * g[y] * g[x];
                if (x == r && y == r) {
                    v += 1.0 + sharpen_k;
                }
                m[y * k + x] = v * CLAMP_SCALE;
            }
        }
        mask = vips_image_new_matrix_from_array(k, k, m, k * k);
    } else {
        mask = vips_image_new_matrix_from_array(k, 1, g, k);
    }
    VipsImage *t[14] = {0};
    int rc = mask == NULL || vips_cast(in, &t[0], VIPS_FORMAT_FLOAT, NULL) ||
             /* columns 1..r and W-1-r..W-2, mirrored */
             vips_extract_area(t[0], &t[1], 1, 0, r, H, NULL) ||
             vips_flip(t[1], &t[2], VIPS_DIRECTION_HORIZONTAL, NULL) ||
             vips_extract_area(t[0], &t[3], W - 1 - r, 0, r, H, NULL) ||
             vips_flip(t[3], &t[4], VIPS_DIRECTION_HORIZONTAL, NULL) ||
             vips_join(t[2], t[0], &t[5], VIPS_DIRECTION_HORIZONTAL, NULL) ||
             vips_join(t[5], t[4], &t[6], VIPS_DIRECTION_HORIZONTAL, NULL) ||
             /* rows 1..r and H-1-r..H-2 of the widened image, mirrored */
             vips_extract_area(t[6], &t[7], 0, 1, W + 2 * r, r, NULL) ||
             vips_flip(t[7], &t[8], VIPS_DIRECTION_VERTICAL, NULL) ||
             vips_extract_area(t[6], &t[9], 0, H - 1 - r, W + 2 * r, r, NULL) ||
             vips_flip(t[9], &t[10], VIPS_DIRECTION_VERTICAL, NULL) ||
             vips_join(t[8], t[6], &t[11], VIPS_DIRECTION_VERTICAL, NULL) ||
             vips_join(t[11], t[10], &t[12], VIPS_DIRECTION_VERTICAL, NULL);
    if (rc == 0) {
        rc = sharpen ? vips_conv(t[12], &t[13], mask, "precision", VIPS_PRECISION_FLOAT, NULL)
                     : vips_convsep(t[12], &t[13], mask, "precision", VIPS_PRECISION_FLOAT, NULL);
    }
    if (rc == 0) {
        if (sharpen) {
            VipsImage *inner = NULL;
            rc = vips_extract_area(t[13], &inner, r, r, W, H, NULL) || clamp01(inner, out);
            if (inner != NULL) {
                g_object_unref(inner);
            }
        } else {
            rc = vips_extract_area(t[13], out, r, r, W, H, NULL);
        }
    }
    if (mask != NULL) {
        g_object_unref(mask);
    }
    unref_all(t, NIN(t));
    return rc != 0 ? vips_fail(c, sharpen ? "ImageSharpen" : "ImageBlur") : 0;
}

static int node_blur(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int lazy = conv_lazy(c, im, inum(n, "blur_radius", 1), num(n, "sigma", 1.0), 0.0, &out[0]);
    if (lazy <= 0) {
        return lazy;
    }
    fbuf_t fb;
    if (to_fbuf(c, im, &fb) != 0) {
        return -1;
    }
    float *px = gaussian_blur(&fb, inum(n, "blur_radius", 1), num(n, "sigma", 1.0));
    int w = fb.w;
    int h = fb.h;
    int bands = fb.c;
    g_free(fb.px);
    if (px == NULL) {
        return fail(c, CPU_EXEC_ERROR, "ImageBlur: out of memory");
    }
    out[0] = from_floats(c, px, w, h, bands);
    return out[0] != NULL ? 0 : -1;
}

static int node_sharpen(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double alpha = num(n, "alpha", 1.0);
    /* clamp(x + 10α(x − blur)) */
    int lazy = 1;
    if (alpha == 0.0) {
        double one[1] = {1.0};
        double zero[1] = {0.0};
        return linear_clamped(c, im, one, zero, 1, out, "ImageSharpen");
    } else {
        lazy = conv_lazy(c, im, inum(n, "sharpen_radius", 1), num(n, "sigma", 1.0), 10.0 * alpha,
                         &out[0]);
    }
    if (lazy <= 0) {
        return lazy;
    }
    fbuf_t fb;
    if (to_fbuf(c, im, &fb) != 0) {
        return -1;
    }
    float *blur = gaussian_blur(&fb, inum(n, "sharpen_radius", 1), num(n, "sigma", 1.0));
    if (blur == NULL) {
        g_free(fb.px);
        return fail(c, CPU_EXEC_ERROR, "ImageSharpen: out of memory");
    }
    float k = (float)(10.0 * alpha);
    size_t total = (size_t)fb.w * fb.h * fb.c;
    for (size_t i = 0; i < total; i++) {
        blur[i] = clamp01f(fb.px[i] + k * (fb.px[i] - blur[i]));
    }
    g_free(fb.px);
    out[0] = from_floats(c, blur, fb.w, fb.h, fb.c);
    return out[0] != NULL ? 0 : -1;
}

static float soft_light_g(float a)
{
    return a <= 0.25f ? ((16 * a - 12) * a + 4) * a : sqrtf(a);
}

static int node_blend(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im1 = input_image(c, n, "image1");
    VipsImage *im2 = input_image(c, n, "image2");
    if (im1 == NULL || im2 == NULL) {
        return -1;
    }
    fbuf_t a;
    fbuf_t b;
    if (to_fbuf(c, im1, &a) != 0) {
        return -1;
    }
    if (to_fbuf(c, im2, &b) != 0) {
        g_free(a.px);
        return -1;
    }
    if (b.w != a.w || b.h != a.h || b.c != a.c) {
        if (b.c != a.c) {
            g_free(a.px);
            g_free(b.px);
            return fail(c, CPU_EXEC_ERROR, "ImageBlend: channel counts differ");
        }
        float *r = cpu_exec_upscale(b.px, b.w, b.h, b.c, a.w, a.h, "bicubic", "center");
        g_free(b.px);
        if (r == NULL) {
            g_free(a.px);
            return fail(c, CPU_EXEC_ERROR, "ImageBlend: out of memory");
        }
        b.px = r;
        b.w = a.w;
        b.h = a.h;
    }
    float f = (float)num(n, "blend_factor", 0.5);
    const char *mode = str(n, "blend_mode", "normal");
    int m = 0;
    for (; cpu_nodes_blend_modes[m] != NULL && strcmp(cpu_nodes_blend_modes[m], mode) != 0; m++) {
    }
    size_t total = (size_t)a.w * a.h * a.c;
    for (size_t i = 0; i < total; i++) {
        float x = a.px[i];
        float y = b.px[i];
        float bl;
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
            bl = y <= 0.5f ? x - (1 - 2 * y) * x * (1 - x) : x + (2 * y - 1) * (soft_light_g(x) - x);
            break;
        case 5:
            bl = x - y;
            break;
        default:
            bl = y;
            break;
        }
        a.px[i] = clamp01f(x * (1 - f) + bl * f);
    }
    g_free(b.px);
    out[0] = from_floats(c, a.px, a.w, a.h, a.c);
    return out[0] != NULL ? 0 : -1;
}

static int node_crop(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int x = inum(n, "x", 0);
    int y = inum(n, "y", 0);
    if (x > im->Xsize - 1) {
        x = im->Xsize - 1;
    }
    if (y > im->Ysize - 1) {
        y = im->Ysize - 1;
    }
    int w = inum(n, "width", 512);
    int h = inum(n, "height", 512);
    if (x + w > im->Xsize) {
        w = im->Xsize - x;
    }
    if (y + h > im->Ysize) {
        h = im->Ysize - y;
    }
    return vips_extract_area(im, &out[0], x, y, w, h, NULL) != 0 ? vips_fail(c, "ImageCrop") : 0;
}

static int node_flip(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    bool vertical = strcmp(str(n, "flip_method", cpu_nodes_flip_methods[0]), cpu_nodes_flip_methods[0]) == 0;
    return vips_flip(im, &out[0], vertical ? VIPS_DIRECTION_VERTICAL : VIPS_DIRECTION_HORIZONTAL,
                     NULL) != 0
               ? vips_fail(c, "ImageFlip")
               : 0;
}

static int node_rotate(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    const char *r = str(n, "rotation", "none");
    VipsAngle angle = VIPS_ANGLE_D0;
    if (strcmp(r, "90 degrees") == 0) {
        angle = VIPS_ANGLE_D90; /* clockwise, like torch.rot90(k, dims=[2,1]) */
    } else if (strcmp(r, "180 degrees") == 0) {
        angle = VIPS_ANGLE_D180;
    } else if (strcmp(r, "270 degrees") == 0) {
        angle = VIPS_ANGLE_D270;
    }
    return vips_rot(im, &out[0], angle, NULL) != 0 ? vips_fail(c, "ImageRotate") : 0;
}

static int node_pad(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int left = inum(n, "left", 0);
    int top = inum(n, "top", 0);
    int right = inum(n, "right", 0);
    int bottom = inum(n, "bottom", 0);
    int feathering = inum(n, "feathering", 40);
    int W = im->Xsize;
    int H = im->Ysize;
    int NW = W + left + right;
    int NH = H + top + bottom;
    double grey[4] = {0.5, 0.5, 0.5, 0.5};
    VipsArrayDouble *bg = vips_array_double_new(grey, im->Bands > 4 ? 4 : im->Bands);
    int rc = vips_embed(im, &out[0], left, top, NW, NH, "extend", VIPS_EXTEND_BACKGROUND,
                        "background", bg, NULL);
    vips_area_unref(VIPS_AREA(bg));
    if (rc != 0) {
        return vips_fail(c, "ImagePadForOutpaint");
    }
    float *mask = g_try_malloc((size_t)NW * NH * sizeof(float));
    if (mask == NULL) {
        return fail(c, CPU_EXEC_ERROR, "ImagePadForOutpaint: out of memory");
    }
    for (size_t i = 0; i < (size_t)NW * NH; i++) {
        mask[i] = 1.0f;
    }
    bool feather = feathering > 0 && feathering * 2 < H && feathering * 2 < W;
    for (int i = 0; i < H; i++) {
        for (int j = 0; j < W; j++) {
            float v = 0.0f;
            if (feather) {
                int dt = top != 0 ? i : H;
                int db = bottom != 0 ? H - i : H;
                int dl = left != 0 ? j : W;
                int dr = right != 0 ? W - j : W;
                int d = dt < db ? dt : db;
                d = d < dl ? d : dl;
                d = d < dr ? d : dr;
                if (d < feathering) {
                    float t = (float)(feathering - d) / (float)feathering;
                    v = t * t;
                }
            }
            mask[(size_t)(i + top) * NW + (j + left)] = v;
        }
    }
    out[1] = from_floats(c, mask, NW, NH, 1);
    return out[1] != NULL ? 0 : -1;
}

/* ---- streaming and previews ---------------------------------------------- */

/* Long edge of the thumbnail statistics are computed on. */
#define PREVIEW_SIZE 768
/* JPEG: the largest shrink-on-load (2, 4, 8) that keeps the long edge at
 * least this; libjpeg then skips most of the IDCT (at 8, only DC terms). */
#define PREVIEW_MIN 384

/* The preview of a JPEG: decoded at 1/2, 1/4 or 1/8 scale, autorotated, in
 * memory; NULL (error cleared) when not a JPEG or when it fails.
 * vips_thumbnail picks a milder shrink (2 for 4000x3000 → 768) and resizes
 * with lanczos3: ~4x the time, all of it before the first output pixel. */
static VipsImage *jpeg_preview(const void *buf, size_t len)
{
    const char *loader = vips_foreign_find_load_buffer(buf, len);
    if (loader == NULL || strstr(loader, "Jpeg") == NULL) {
        vips_error_clear();
        return NULL;
    }
    VipsImage *hdr = vips_image_new_from_buffer(buf, len, "", NULL);
    if (hdr == NULL) {
        vips_error_clear();
        return NULL;
    }
    int longest = hdr->Xsize > hdr->Ysize ? hdr->Xsize : hdr->Ysize;
    g_object_unref(hdr);
    int shrink = 1;
    while (shrink < 8 && longest / (shrink * 2) >= PREVIEW_MIN) {
        shrink *= 2;
    }
    VipsImage *t = vips_image_new_from_buffer(buf, len, "", "shrink", shrink, "access",
                                              VIPS_ACCESS_SEQUENTIAL, NULL);
    VipsImage *mem = t != NULL ? vips_image_copy_memory(t) : NULL;
    VipsImage *rot = NULL;
    if (mem != NULL && vips_autorot(mem, &rot, NULL) != 0) {
        rot = NULL;
    }
    VipsImage *all[] = {t, mem};
    for (size_t i = 0; i < 2; i++) {
        if (all[i] != NULL) {
            g_object_unref(all[i]);
        }
    }
    if (rot == NULL) {
        vips_error_clear();
    }
    return rot;
}

static bool in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i] != NULL; i++) {
        if (strcmp(list[i], s) == 0) {
            return true;
        }
    }
    return false;
}

/* Nodes whose statistics-relevant effect a preview reproduces: point
 * operations, whole-frame geometry, and the blurs (run at preview scale). */
static const char *const PREVIEW_SAFE[] = {
    "LoadImage",      "ImageInvert",       "ImageFlip",
    "ImageRotate",    "ImageBlur",         "ImageSharpen",
    "ImageScaleBy",   "ImageScaleToTotalPixels", "ImageScaleToMaxDimension",
    "CA.AutoLevels",  "CA.Levels",         "CA.WhiteBalance",
    "CA.Exposure",    "CA.Contrast",       "CA.Saturation",
    "CA.Warmth",      "CA.ResizeLongEdge", NULL,
};

/* Resizes that keep the whole frame: the identity on a preview. */
static const char *const PREVIEW_IDENTITY[] = {
    "ImageScaleBy", "ImageScaleToTotalPixels", "ImageScaleToMaxDimension", "CA.ResizeLongEdge",
    NULL,
};

/* Nodes that are lazy libvips pipelines reading their input once, top to
 * bottom (ImageScale* only with lanczos; the statistics nodes only when they
 * can use a preview). Not ImageBlur/ImageSharpen: their reflect-101 borders
 * read rows out of order (libvips' mirror extend is plain reflect), so those
 * graphs decode with random access (one 8-bit copy of the original). */
static const char *const STREAMING[] = {
    "LoadImage",       "SaveImage",          "PreviewImage",   "EmptyImage",
    "ImageInvert",     "ImageCrop",
    "ImagePadForOutpaint", "ImageScale",     "ImageScaleBy",   "ImageScaleToTotalPixels",
    "ImageScaleToMaxDimension", "CA.AutoLevels", "CA.Levels",  "CA.WhiteBalance",
    "CA.Exposure",     "CA.Contrast",        "CA.Saturation",  "CA.Warmth",
    "CA.Vignette",     "CA.Watermark",       "CA.ResizeLongEdge", "CA.Export",
    "ImageSharpen",
    NULL,
};

/* Every node upstream of n is PREVIEW_SAFE. */
static bool upstream_preview_safe(ctx_t *c, const enode_t *n, int depth)
{
    if (depth > 64) {
        return false;
    }
    const cJSON *v = NULL;
    cJSON_ArrayForEach(v, n->inputs)
    {
        if (!graph_is_link(v)) {
            continue;
        }
        const enode_t *src = find_enode(c, cJSON_GetArrayItem(v, 0)->valuestring);
        if (src == NULL || !in_list(PREVIEW_SAFE, src->class_type) ||
            !upstream_preview_safe(c, src, depth + 1)) {
            return false;
        }
    }
    return true;
}

/* Whether the whole graph can decode its input sequentially. */
static bool graph_streams(ctx_t *c)
{
    int loads = 0;
    for (size_t i = 0; i < c->n; i++) {
        const enode_t *n = &c->nodes[i];
        if (!in_list(STREAMING, n->class_type)) {
            return false;
        }
        if (strcmp(n->class_type, "LoadImage") == 0 && ++loads > 1) {
            return false;
        }
        if (strcmp(n->class_type, "ImageSharpen") == 0 && inum(n, "sharpen_radius", 1) > 4) {
            return false;
        }
        if (strncmp(n->class_type, "ImageScale", 10) == 0 &&
            strcmp(str(n, "upscale_method", "bilinear"), "lanczos") != 0) {
            return false;
        }
        if ((strcmp(n->class_type, "CA.AutoLevels") == 0 ||
             strcmp(n->class_type, "CA.WhiteBalance") == 0) &&
            !upstream_preview_safe(c, n, 0)) {
            return false;
        }
    }
    return true;
}

/* The image node n's statistics are computed on: its input `full` run on a
 * PREVIEW_SIZE thumbnail of the original (shrink-on-load, no full-size pass)
 * when everything upstream allows, else `full` itself. A new reference. */
static int stats_image(ctx_t *c, enode_t *n, VipsImage *full, VipsImage **out)
{
    cpu_exec_job_t *job = c->job;
    if (c->preview || job->input_image != NULL || job->input == NULL ||
        !upstream_preview_safe(c, n, 0)) {
        g_object_ref(full);
        *out = full;
        return 0;
    }
    if (c->thumb == NULL) {
        c->thumb = jpeg_preview(job->input, job->input_len);
    }
    if (c->thumb == NULL) {
        VipsImage *t = NULL;
        if (vips_thumbnail_buffer((void *)job->input, job->input_len, &t, PREVIEW_SIZE, "height",
                                  PREVIEW_SIZE, "size", VIPS_SIZE_DOWN, NULL) == 0) {
            c->thumb = vips_image_copy_memory(t);
        }
        if (t != NULL) {
            g_object_unref(t);
        }
        if (c->thumb == NULL) {
            vips_error_clear();
            g_object_ref(full);
            *out = full;
            return 0;
        }
    }
    char perr[256];
    ctx_t p = {0};
    p.n = c->n;
    p.nodes = calloc(p.n, sizeof(*p.nodes));
    p.job = job;
    p.preview = true;
    p.err = perr;
    p.errlen = sizeof(perr);
    VipsImage *im = NULL;
    if (p.nodes != NULL) {
        for (size_t i = 0; i < p.n; i++) {
            p.nodes[i].id = c->nodes[i].id;
            p.nodes[i].class_type = c->nodes[i].class_type;
            p.nodes[i].inputs = c->nodes[i].inputs;
        }
        g_object_ref(c->thumb);
        p.source = c->thumb;
        im = input_image(&p, &p.nodes[n - c->nodes], "image");
        if (im != NULL) {
            g_object_ref(im);
        }
        for (size_t i = 0; i < p.n; i++) {
            for (int k = 0; k < 2; k++) {
                if (p.nodes[i].out[k] != NULL) {
                    g_object_unref(p.nodes[i].out[k]);
                }
            }
        }
        g_object_unref(p.source);
        free(p.nodes);
    }
    if (im == NULL) {
        vips_error_clear();
        g_object_ref(full);
        im = full;
    }
    *out = im;
    return 0;
}

/* ---- CA. nodes ----------------------------------------------------------- */

/* Clamping to [0,1] with streaming ops that read their input ONCE (libvips
 * recomputes a lazy input for every reference, so |x| − |x − 1| tricks
 * double the work upstream at each node): scale to 0..2³²−1 (CLAMP_SCALE),
 * cast to uint (which clips), scale back. The round trip is exact to ~1e-7.
 * clamp01() takes its input already scaled by CLAMP_SCALE. */

/* out = clamp(in * a + b) per band (n = 1 or bands). */
static int linear_clamped(ctx_t *c, VipsImage *in, const double *a, const double *b, int n,
                          VipsImage **out, const char *what)
{
    double as[4];
    double bs[4];
    if (n > 4) {
        return fail(c, CPU_EXEC_ERROR, "%s: too many bands", what);
    }
    if (n == 1 || n == 3) {
        stage_t s = {.kind = ST_LINEAR, .clamp = true};
        for (int k = 0; k < 3; k++) {
            s.a[k] = a[n == 1 ? 0 : k];
            s.b[k] = b[n == 1 ? 0 : k];
        }
        int rc = fused_append(c, in, &s, out, what);
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
    unref_all(t, NIN(t));
    return rc != 0 ? vips_fail(c, what) : 0;
}

static int clamp01(VipsImage *in, VipsImage **out)
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
        vips_fail(c, "histogram");
        goto out;
    }
    size_t size = 0;
    VipsImage *hu = NULL;
    if (vips_cast(hist, &hu, VIPS_FORMAT_DOUBLE, NULL) != 0) {
        vips_fail(c, "histogram");
        goto out;
    }
    double *h = vips_image_write_to_memory(hu, &size);
    g_object_unref(hu);
    if (h == NULL) {
        vips_fail(c, "histogram");
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
    for (size_t i = 0; i < 4; i++) {
        if (all[i] != NULL) {
            g_object_unref(all[i]);
        }
    }
    return rc;
}

static int node_autolevels(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double p = num(n, "clip_percent", 0.5) / 100.0;
    double strength = num(n, "strength", 1.0);
    double lo = 0;
    double hi = 1;
    VipsImage *st = NULL;
    if (stats_image(c, n, im, &st) != 0) {
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
    return linear_clamped(c, im, a, b, 1, out, "CA.AutoLevels");
}

static int node_levels(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double black = num(n, "black", 0.0);
    double white = num(n, "white", 1.0);
    double gamma = num(n, "gamma", 1.0);
    if (white - black < 1e-3) {
        white = black + 1e-3;
    }
    double a[1] = {1.0 / (white - black)};
    double b[1] = {-black / (white - black)};
    VipsImage *t = NULL;
    if (linear_clamped(c, im, a, b, 1, &t, "CA.Levels") != 0) {
        return -1;
    }
    if (fabs(gamma - 1.0) < 1e-9) {
        out[0] = t;
        return 0;
    }
    stage_t s = {.kind = ST_POW, .p = 1.0 / gamma};
    int rc = fused_append(c, t, &s, out, "CA.Levels");
    if (rc <= 0) {
        g_object_unref(t);
        return rc;
    }
    rc = vips_pow_const1(t, &out[0], 1.0 / gamma, NULL);
    g_object_unref(t);
    return rc != 0 ? vips_fail(c, "CA.Levels") : 0;
}

static int node_white_balance(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double strength = num(n, "strength", 1.0);
    VipsImage *stats = NULL;
    VipsImage *st = NULL;
    if (stats_image(c, n, im, &st) != 0) {
        return -1;
    }
    int rc = vips_stats(st, &stats, NULL);
    g_object_unref(st);
    if (rc != 0) {
        return vips_fail(c, "CA.WhiteBalance");
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
    return linear_clamped(c, im, a, b, 3, out, "CA.WhiteBalance");
}

static int node_exposure(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    /* 2^stops in linear light is 2^(stops/2.2) on gamma-encoded values. */
    double a[1] = {pow(2.0, num(n, "stops", 0.0) / 2.2)};
    double b[1] = {0};
    return linear_clamped(c, im, a, b, 1, out, "CA.Exposure");
}

static int node_contrast(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double k = 1.0 + num(n, "amount", 0.0);
    double a[1] = {k};
    double b[1] = {0.5 * (1.0 - k)};
    return linear_clamped(c, im, a, b, 1, out, "CA.Contrast");
}

static int node_saturation(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double s = num(n, "amount", 1.0);
    double l[3] = {0.2126, 0.7152, 0.0722};
    stage_t st = {.kind = ST_RECOMB, .clamp = true};
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < 3; k++) {
            st.m[r * 3 + k] = (1.0 - s) * l[k] + (r == k ? s : 0.0);
        }
    }
    int frc = fused_append(c, im, &st, out, "CA.Saturation");
    if (frc <= 0) {
        return frc;
    }
    double m[9];
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < 3; k++) {
            m[r * 3 + k] = ((1.0 - s) * l[k] + (r == k ? s : 0.0)) * CLAMP_SCALE;
        }
    }
    VipsImage *mat = vips_image_new_matrix_from_array(3, 3, m, 9);
    VipsImage *t = NULL;
    int rc = vips_recomb(im, &t, mat, NULL);
    g_object_unref(mat);
    if (rc != 0) {
        return vips_fail(c, "CA.Saturation");
    }
    rc = clamp01(t, &out[0]);
    g_object_unref(t);
    return rc != 0 ? vips_fail(c, "CA.Saturation") : 0;
}

static int node_warmth(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double w = num(n, "amount", 0.0);
    double a[3] = {1.0 + 0.08 * w, 1.0 + 0.02 * w, 1.0 - 0.08 * w};
    double b[3] = {0, 0, 0};
    return linear_clamped(c, im, a, b, 3, out, "CA.Warmth");
}

static int node_vignette(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double strength = num(n, "strength", 0.3);
    double radius = num(n, "radius", 0.7);
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
        return fail(c, CPU_EXEC_ERROR, "CA.Vignette: out of memory");
    }
    vm->refs = 1;
    vm->f = f;
    vm->mw = mw;
    vm->mh = mh;
    float *m = vm->px;
    for (int y = 0; y < mh; y++) {
        double dy = ((fmin((y + 0.5) * f, im->Ysize - 0.5)) / im->Ysize - 0.5) * 2.0;
        for (int x = 0; x < mw; x++) {
            double dx = ((fmin((x + 0.5) * f, im->Xsize - 0.5)) / im->Xsize - 0.5) * 2.0;
            double d = sqrt((dx * dx + dy * dy) / 2.0) * 1.4142135623730951; /* 0 centre, √2 corner */
            double t = (d - radius) / (1.4142135623730951 - radius);
            t = t < 0 ? 0 : (t > 1 ? 1 : t);
            t = t * t * (3 - 2 * t);
            m[(size_t)y * mw + x] = (float)(1.0 - strength * t);
        }
    }
    stage_t st = {.kind = ST_VIGNETTE, .mask = vm};
    g_atomic_int_inc(&vm->refs);
    int frc = fused_append(c, im, &st, out, "CA.Vignette"); /* takes a reference */
    if (frc <= 0) {
        vmask_unref(vm);
        return frc;
    }
    VipsImage *small = vips_image_new_from_memory_copy(m, (size_t)mw * mh * sizeof(float), mw, mh,
                                                       1, VIPS_FORMAT_FLOAT);
    vmask_unref(vm);
    if (small == NULL) {
        return vips_fail(c, "CA.Vignette");
    }
    VipsImage *big = NULL;
    int rc = vips_zoom(small, &big, f, f, NULL);
    g_object_unref(small);
    if (rc != 0) {
        return vips_fail(c, "CA.Vignette");
    }
    VipsImage *fit = NULL;
    rc = vips_extract_area(big, &fit, 0, 0, im->Xsize, im->Ysize, NULL);
    g_object_unref(big);
    if (rc != 0) {
        return vips_fail(c, "CA.Vignette");
    }
    rc = vips_multiply(im, fit, &out[0], NULL);
    g_object_unref(fit);
    return rc != 0 ? vips_fail(c, "CA.Vignette") : 0;
}

static int node_watermark(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    const char *text = str(n, "text", "");
    double opacity = num(n, "opacity", 0.5);
    double size = num(n, "size", 0.03);
    const char *pos = str(n, "position", "bottom-right");
    if (text[0] == '\0') {
        g_object_ref(im);
        out[0] = im;
        return 0;
    }
    int short_edge = im->Xsize < im->Ysize ? im->Xsize : im->Ysize;
    int dpi = (int)fmax(10, size * short_edge * 72.0 / 12.0); /* "sans 12" → size·edge px tall */
    VipsImage *txt = NULL;
    if (vips_text(&txt, text, "font", "sans 12", "dpi", dpi, NULL) != 0) {
        return vips_fail(c, "CA.Watermark");
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
    for (size_t i = 0; i < 4; i++) {
        if (all[i] != NULL) {
            g_object_unref(all[i]);
        }
    }
    return rc != 0 ? vips_fail(c, "CA.Watermark") : 0;
}

static int node_long_edge(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int target = inum(n, "long_edge", 3000);
    int W = im->Xsize;
    int H = im->Ysize;
    int longest = W > H ? W : H;
    if (target >= longest && (target == longest || !boolean(n, "allow_upscale", false))) {
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
    if (w < W && h < H && (double)W / w <= 3.0 && fused_input_ok(src)) {
        /* Downscale: libvips' vertical lanczos3 pass (vectorised for 8-bit
         * input, rounded to 8 bits like vips_resize), then the horizontal
         * lanczos3 pass inside the fused operation (libvips' horizontal pass
         * on 8-bit input is scalar C: half of the preset's CPU time), in
         * float, followed by the point nodes after this one. */
        VipsImage *v = NULL;
        if (vips_reducev(src, &v, (double)H / h, "kernel", VIPS_KERNEL_LANCZOS3, NULL) != 0) {
            return vips_fail(c, "CA.ResizeLongEdge");
        }
        if (v->Ysize != h) {
            VipsImage *fixed = NULL;
            int rc = vips_embed(v, &fixed, 0, 0, W, h, "extend", VIPS_EXTEND_COPY, NULL);
            g_object_unref(v);
            if (rc != 0) {
                return vips_fail(c, "CA.ResizeLongEdge");
            }
            v = fixed;
        }
        fused_t *fu = fused_new(v, after_load ? 1.0 / 255.0 : 1.0);
        g_object_unref(v);
        fu->hr = hres_new(W, w);
        out[0] = fused_build(fu);
        return out[0] != NULL ? 0 : vips_fail(c, "CA.ResizeLongEdge");
    }
    if (after_load) {
        /* Straight after LoadImage: resize the decoded 8-bit pixels. */
        VipsImage *small = upscale_image(c, c->native, w, h, "lanczos", "disabled");
        if (small == NULL) {
            return -1;
        }
        out[0] = fused_build(fused_new(small, 1.0 / 255.0));
        g_object_unref(small);
        return out[0] != NULL ? 0 : vips_fail(c, "CA.ResizeLongEdge");
    }
    out[0] = upscale_image(c, im, w, h, "lanczos", "disabled");
    return out[0] != NULL ? 0 : -1;
}

typedef struct {
    const char *class_type;
    node_fn fn;
} impl_t;

static const impl_t IMPLS[] = {
    {"LoadImage", node_load},
    {"SaveImage", node_save},
    {"PreviewImage", node_save},
    {"EmptyImage", node_empty},
    {"ImageScale", node_scale},
    {"ImageScaleBy", node_scale_by},
    {"ImageScaleToTotalPixels", node_scale_total},
    {"ImageScaleToMaxDimension", node_scale_max},
    {"ImageInvert", node_invert},
    {"ImageBlur", node_blur},
    {"ImageSharpen", node_sharpen},
    {"ImageBlend", node_blend},
    {"ImageCrop", node_crop},
    {"ImageFlip", node_flip},
    {"ImageRotate", node_rotate},
    {"ImagePadForOutpaint", node_pad},
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
    {"CA.Export", node_save},
};

static int eval(ctx_t *c, enode_t *n)
{
    if (n->done) {
        return n->out[0] != NULL || n->out[1] != NULL ? 0 : -1;
    }
    n->done = true; /* the validator rejected cycles; this stops any recursion */
    if (c->preview && in_list(PREVIEW_IDENTITY, n->class_type)) {
        VipsImage *im = input_image(c, n, "image");
        if (im == NULL) {
            return -1;
        }
        g_object_ref(im);
        n->out[0] = im;
        return 0;
    }
    for (size_t i = 0; i < NIN(IMPLS); i++) {
        if (strcmp(IMPLS[i].class_type, n->class_type) == 0) {
            int rc = IMPLS[i].fn(c, n, n->out);
            if (rc != 0 && c->fail == CPU_EXEC_OK) {
                fail(c, CPU_EXEC_ERROR, "node %s (%s) failed", n->id, n->class_type);
            }
            return rc;
        }
    }
    return fail(c, CPU_EXEC_BAD_GRAPH, "node %s: class %s is unknown to the CPU executor", n->id,
                n->class_type);
}

/* ---- encoding ------------------------------------------------------------ */

/* Copies the original's metadata that is safe to keep: the ICC profile (when
 * asked and still valid) and EXIF without the GPS IFD; orientation becomes 1
 * (pixels are already upright). */
static void copy_metadata(ctx_t *c, VipsImage *dst, bool keep_icc, bool strip_location)
{
    /* Operations carry their inputs' metadata along: start from nothing
     * (drops XMP and IPTC too, which can hold a location). */
    gchar **all = vips_image_get_fields(dst);
    for (int i = 0; all[i] != NULL; i++) {
        (void)vips_image_remove(dst, all[i]);
    }
    g_strfreev(all);
    VipsImage *src = c->source;
    if (src == NULL) {
        return;
    }
    if (keep_icc && !c->source_converted && vips_image_get_typeof(src, VIPS_META_ICC_NAME) != 0) {
        const void *data = NULL;
        size_t len = 0;
        if (vips_image_get_blob(src, VIPS_META_ICC_NAME, &data, &len) == 0) {
            vips_image_set_blob_copy(dst, VIPS_META_ICC_NAME, data, len);
        }
    }
    if (vips_image_get_typeof(src, VIPS_META_EXIF_NAME) != 0) {
        /* Not the exif-data blob: libvips keeps every tag of the blob when it
         * saves, so GPS would survive. The saver builds new EXIF from the
         * exif-ifd* fields copied here. */
        gchar **fields = vips_image_get_fields(src);
        for (int i = 0; fields[i] != NULL; i++) {
            const char *f = fields[i];
            if (strncmp(f, "exif-ifd", 8) != 0) {
                continue;
            }
            if (strip_location && strncmp(f, "exif-ifd3-", 10) == 0) {
                continue; /* IFD3 is GPS */
            }
            const char *v = NULL;
            if (vips_image_get_string(src, f, &v) == 0) {
                vips_image_set_string(dst, f, v);
            }
        }
        g_strfreev(fields);
    }
    vips_image_set_int(dst, VIPS_META_ORIENTATION, 1);
    (void)c;
}

static int encode(ctx_t *c, VipsImage *im, const enode_t *out_node)
{
    cpu_exec_job_t *job = c->job;
    const char *format = "jpeg";
    int quality = 92;
    bool keep_icc = true;
    bool strip_location = true;
    if (strcmp(out_node->class_type, "CA.Export") == 0) {
        format = str(out_node, "format", "jpeg");
        quality = inum(out_node, "quality", 92);
        keep_icc = boolean(out_node, "keep_icc", true);
        strip_location = boolean(out_node, "strip_location", true);
    }
    /* ComfyUI: np.clip(255·x, 0, 255).astype(uint8) — truncation. The 1e-4
     * makes k/255 come back as k, as it does in float32 numpy (vips_linear
     * can land just below). */
    VipsImage *t[4] = {0};
    int rc = -1;
    VipsImage *rgb = im;
    if (im->Bands == 1) {
        VipsImage *three[3] = {im, im, im};
        if (vips_bandjoin(three, &t[3], 3, NULL) != 0) {
            vips_fail(c, "encode");
            goto out;
        }
        rgb = t[3];
    }
    const fused_t *fu = g_object_get_data(G_OBJECT(rgb), FUSED_KEY);
    if (fu != NULL && !fu->out_u8) {
        /* the last pass of the fused chain writes 8-bit pixels */
        fused_t *f8 = fused_copy(fu);
        f8->out_u8 = true;
        t[2] = fused_build(f8);
    } else if (rgb->BandFmt == VIPS_FORMAT_FLOAT && fused_input_ok(rgb)) {
        fused_t *f8 = fused_new(rgb, 1.0);
        f8->out_u8 = true;
        t[2] = fused_build(f8);
    }
    if (t[2] != NULL) {
        /* done */
    } else if (vips_copy(rgb, &t[0], NULL) != 0 ||
               vips_linear1(t[0], &t[1], 255.0, 1e-4, NULL) != 0 ||
               /* vips_cast clips to 0..255 itself. */
               vips_cast(t[1], &t[2], VIPS_FORMAT_UCHAR, NULL) != 0) {
        vips_fail(c, "encode");
        goto out;
    }
    VipsImage *u8 = NULL;
    if (vips_copy(t[2], &u8, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) != 0) {
        vips_fail(c, "encode");
        goto out;
    }
    copy_metadata(c, u8, keep_icc, strip_location);
    void *buf = NULL;
    size_t len = 0;
    int src;
    if (strcmp(format, "png") == 0) {
        src = vips_pngsave_buffer(u8, &buf, &len, "compression", 4, NULL);
        snprintf(job->ext, sizeof(job->ext), "png");
        snprintf(job->mime, sizeof(job->mime), "image/png");
    } else if (strcmp(format, "webp") == 0) {
        src = vips_webpsave_buffer(u8, &buf, &len, "Q", quality, NULL);
        snprintf(job->ext, sizeof(job->ext), "webp");
        snprintf(job->mime, sizeof(job->mime), "image/webp");
    } else if (strcmp(format, "tiff") == 0) {
        src = vips_tiffsave_buffer(u8, &buf, &len, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE,
                                   NULL);
        snprintf(job->ext, sizeof(job->ext), "tif");
        snprintf(job->mime, sizeof(job->mime), "image/tiff");
    } else {
        /* Optimised Huffman tables keep every DCT coefficient in memory
         * (~70 MB at 12 MP): only for outputs up to 4 MP. */
        bool optimize = (double)u8->Xsize * u8->Ysize <= 4e6;
        src = vips_jpegsave_buffer(u8, &buf, &len, "Q", quality, "optimize_coding", optimize,
                                   NULL);
        snprintf(job->ext, sizeof(job->ext), "jpg");
        snprintf(job->mime, sizeof(job->mime), "image/jpeg");
    }
    job->out_width = u8->Xsize;
    job->out_height = u8->Ysize;
    g_object_unref(u8);
    if (src != 0) {
        vips_fail(c, "encode");
        goto out;
    }
    job->output = malloc(len);
    if (job->output == NULL) {
        g_free(buf);
        fail(c, CPU_EXEC_ERROR, "encode: out of memory");
        goto out;
    }
    memcpy(job->output, buf, len);
    job->output_len = len;
    g_free(buf);
    rc = 0;
out:
    for (int i = 0; i < 4; i++) {
        if (t[i] != NULL) {
            g_object_unref(t[i]);
        }
    }
    return rc;
}

/* ---- entry points -------------------------------------------------------- */

static bool vips_started;

int cpu_exec_init(const char *argv0)
{
    if (vips_started) {
        return 0;
    }
    if (VIPS_INIT(argv0 != NULL ? argv0 : "job-worker") != 0) {
        return -1;
    }
    vips_cache_set_max(0); /* a job's images are used once */
    vips_started = true;
    return 0;
}

void cpu_exec_shutdown(void)
{
    if (vips_started) {
        vips_shutdown();
        vips_started = false;
    }
}

void cpu_exec_job_free(cpu_exec_job_t *job)
{
    free(job->output);
    job->output = NULL;
    job->output_len = 0;
    if (job->result != NULL) {
        g_object_unref(job->result);
        job->result = NULL;
    }
}

/* One evaluation of a validated graph. `eager` decodes the input into memory
 * first (the old, safe path); otherwise the pipeline is lazy and, when the
 * graph allows, the input is decoded sequentially while the output is encoded. */
static cpu_exec_status_t run_once(const cJSON *graph, cpu_exec_job_t *job, char *err,
                                  size_t errlen, bool eager)
{
    ctx_t c = {0};
    c.job = job;
    c.err = err;
    c.errlen = errlen;
    c.eager = eager;
    c.n = (size_t)cJSON_GetArraySize(graph);
    c.nodes = calloc(c.n, sizeof(*c.nodes));
    if (c.nodes == NULL) {
        snprintf(err, errlen, "out of memory");
        return CPU_EXEC_ERROR;
    }
    size_t i = 0;
    const cJSON *node = NULL;
    const enode_t *output = NULL;
    cJSON_ArrayForEach(node, graph)
    {
        enode_t *en = &c.nodes[i++];
        en->id = node->string;
        en->class_type = cJSON_GetObjectItemCaseSensitive(node, "class_type")->valuestring;
        en->inputs = cJSON_GetObjectItemCaseSensitive(node, "inputs");
    }
    c.sequential = !eager && graph_streams(&c);
    /* The output: the first CA.Export, else the first SaveImage/PreviewImage. */
    for (i = 0; i < c.n && output == NULL; i++) {
        if (strcmp(c.nodes[i].class_type, "CA.Export") == 0) {
            output = &c.nodes[i];
        }
    }
    for (i = 0; i < c.n && output == NULL; i++) {
        if (graph_registry_find(cpu_nodes_registry(), c.nodes[i].class_type)->output_node) {
            output = &c.nodes[i];
        }
    }
    if (eval(&c, (enode_t *)output) == 0 && encode(&c, output->out[0], output) == 0) {
        if (job->keep_result) {
            g_object_ref(output->out[0]);
            job->result = output->out[0];
        }
    }
    cpu_exec_status_t st = c.fail;
    for (i = 0; i < c.n; i++) {
        for (int k = 0; k < 2; k++) {
            if (c.nodes[i].out[k] != NULL) {
                g_object_unref(c.nodes[i].out[k]);
            }
        }
    }
    if (c.source != NULL) {
        g_object_unref(c.source);
    }
    if (c.thumb != NULL) {
        g_object_unref(c.thumb);
    }
    if (c.native != NULL) {
        g_object_unref(c.native);
    }
    free(c.nodes);
    return st;
}

cpu_exec_status_t cpu_exec_run(const cJSON *graph, cpu_exec_job_t *job, char *err, size_t errlen)
{
    if (errlen > 0) {
        err[0] = '\0';
    }
    cJSON *verr = NULL;
    graph_status_t gs = graph_validate(graph, cpu_nodes_registry(), &verr);
    if (gs != GRAPH_OK) {
        char *summary = graph_error_summary(verr);
        snprintf(err, errlen, "%s", summary != NULL ? summary : "invalid graph");
        free(summary);
        cJSON_Delete(verr);
        return CPU_EXEC_BAD_GRAPH;
    }
    cpu_exec_status_t st = run_once(graph, job, err, errlen, false);
    if (st == CPU_EXEC_ERROR) {
        /* A lazy pipeline fails while encoding when the file is corrupt (or a
         * node read its input twice): run again decoding up front, which tells
         * unsupported_image from a processing error. */
        cpu_exec_job_free(job);
        job->ext[0] = '\0';
        job->mime[0] = '\0';
        job->out_width = job->out_height = 0;
        if (errlen > 0) {
            err[0] = '\0';
        }
        st = run_once(graph, job, err, errlen, true);
    }
    return st;
}
