/*
 * cpu_comfy_nodes — ComfyUI's core nodes that the CPU executor runs:
 * LoadImage, SaveImage/PreviewImage (and CA.Export, the output node),
 * EmptyImage, ImageScale*, ImageInvert, ImageBlur, ImageSharpen, ImageBlend,
 * ImageCrop, ImageFlip, ImageRotate, ImagePadForOutpaint — with the formulas
 * of ComfyUI's source (where libvips is not bit-exact: docs/image-pipeline.md).
 * The class table cpu_comfy_impls is at the end.
 */
#define _GNU_SOURCE
#include "cpu_internal.h"
#include "cpu_nodes.h"

#include <math.h>
#include <string.h>

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
        cpu_vips_fail(c, "mask");
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
        return cpu_fail(c, CPU_EXEC_UNSUPPORTED_IMAGE, "unsupported_image: empty input");
    }
    int rc = -1;
    VipsImage *t[8] = {0};
    VipsImage *alpha = NULL;
    if (c->source == NULL) {
        VipsAccess access = c->sequential ? VIPS_ACCESS_SEQUENTIAL : VIPS_ACCESS_RANDOM;
        char lerr[256];
        cpu_exec_status_t ls = cpu_exec_open(job->input, job->input_len, access, job->max_pixels,
                                             &t[0], lerr, sizeof(lerr));
        if (ls != CPU_EXEC_OK) {
            return cpu_fail(c, ls, "%s", lerr);
        }
        int orientation = 1;
        if (access == VIPS_ACCESS_SEQUENTIAL &&
            vips_image_get_typeof(t[0], VIPS_META_ORIENTATION) != 0 &&
            vips_image_get_int(t[0], VIPS_META_ORIENTATION, &orientation) == 0 && orientation > 1) {
            /* Rotating needs random access. */
            g_object_unref(t[0]);
            ls = cpu_exec_open(job->input, job->input_len, VIPS_ACCESS_RANDOM, job->max_pixels,
                               &t[0], lerr, sizeof(lerr));
            if (ls != CPU_EXEC_OK) {
                return cpu_fail(c, ls, "%s", lerr);
            }
        }
        int o = 1;
        c->upright = vips_image_get_typeof(t[0], VIPS_META_ORIENTATION) == 0 ||
                     (vips_image_get_int(t[0], VIPS_META_ORIENTATION, &o) == 0 && o <= 1);
        VipsImage *rot = NULL;
        if (vips_autorot(t[0], &rot, NULL) != 0) {
            cpu_vips_fail(c, "autorotate");
            goto out;
        }
        if (c->eager) {
            /* Decode now: a corrupt file fails here, as unsupported_image. */
            c->source = vips_image_copy_memory(rot);
            g_object_unref(rot);
            if (c->source == NULL) {
                vips_error_clear();
                cpu_fail(c, CPU_EXEC_UNSUPPORTED_IMAGE, "unsupported_image: the file is corrupt");
                goto out;
            }
        } else {
            /* decoded as the output is written, or ahead of it while the
             * statistics preview is computed */
            VipsImage *ahead = cpu_decode_ahead(c, rot, c->upright);
            if (ahead != NULL) {
                g_object_unref(rot);
                rot = ahead;
            }
            c->source = rot;
        }
        job->in_width = c->source->Xsize;
        job->in_height = c->source->Ysize;
    }
    VipsImage *im = c->source;
    double max = 255.0;
    if (im->Type == VIPS_INTERPRETATION_CMYK) {
        if (vips_icc_transform(im, &t[1], "srgb", "embedded", TRUE, "input_profile", "cmyk",
                               "depth", 16, NULL) != 0) {
            cpu_vips_fail(c, "CMYK to sRGB");
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
            cpu_vips_fail(c, "alpha");
            goto out;
        }
    }
    if (vips_extract_band(im, &t[2], 0, "n", colour, NULL) != 0) {
        cpu_vips_fail(c, "bands");
        goto out;
    }
    im = t[2];
    if (colour == 1) {
        VipsImage *three[3] = {im, im, im};
        if (vips_bandjoin(three, &t[3], 3, NULL) != 0) {
            cpu_vips_fail(c, "grey to RGB");
            goto out;
        }
        im = t[3];
    }
    if (!c->preview && c->native == NULL && im->BandFmt == VIPS_FORMAT_UCHAR) {
        g_object_ref(im);
        c->native = im;
        c->load_node = n;
    }
    if (cpu_fused_input_ok(im)) {
        /* /max as a lookup table, fused with the point nodes that follow */
        out[0] = cpu_fused_build(cpu_fused_new(im, 1.0 / max));
        if (out[0] == NULL) {
            cpu_vips_fail(c, "to float");
            goto out;
        }
    } else if (vips_linear1(im, &t[4], 1.0 / max, 0.0, NULL) != 0 ||
               vips_cast(t[4], &t[5], VIPS_FORMAT_FLOAT, NULL) != 0 ||
               vips_copy(t[5], &out[0], "interpretation", VIPS_INTERPRETATION_MULTIBAND, NULL) !=
                   0) {
        cpu_vips_fail(c, "to float");
        goto out;
    }
    out[1] = make_mask(c, alpha, max);
    rc = out[1] != NULL ? 0 : -1;
out:
    cpu_unref_all(t, NIN(t));
    if (alpha != NULL) {
        g_object_unref(alpha);
    }
    return rc;
}

static int node_save(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im =
        cpu_input_image(c, n, strcmp(n->class_type, "CA.Export") == 0 ? "image" : "images");
    if (im == NULL) {
        return -1;
    }
    g_object_ref(im);
    out[0] = im;
    return 0;
}

static int node_empty(ctx_t *c, enode_t *n, VipsImage **out)
{
    int w = cpu_inum(n, "width", 512);
    int h = cpu_inum(n, "height", 512);
    unsigned color = (unsigned)cpu_inum(n, "color", 0);
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
    return rc != 0 ? cpu_vips_fail(c, "EmptyImage") : 0;
}

static int scale_to(ctx_t *c, enode_t *n, VipsImage *im, int w, int h, const char *crop,
                    VipsImage **out)
{
    const char *method = cpu_str(n, "upscale_method", "bilinear");
    if (w < 1) {
        w = 1;
    }
    if (h < 1) {
        h = 1;
    }
    out[0] = cpu_upscale_image(c, im, w, h, method, crop);
    return out[0] != NULL ? 0 : -1;
}

static int node_scale(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int W = im->Xsize;
    int H = im->Ysize;
    int w = cpu_inum(n, "width", 512);
    int h = cpu_inum(n, "height", 512);
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
    return scale_to(c, n, im, w, h, cpu_str(n, "crop", "disabled"), out);
}

static int node_scale_by(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double s = cpu_num(n, "scale_by", 1.0);
    return scale_to(c, n, im, (int)rint(im->Xsize * s), (int)rint(im->Ysize * s), "disabled", out);
}

static int node_scale_total(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double total = trunc(cpu_num(n, "megapixels", 1.0) * 1024 * 1024);
    double s = sqrt(total / ((double)im->Xsize * im->Ysize));
    return scale_to(c, n, im, (int)rint(im->Xsize * s), (int)rint(im->Ysize * s), "disabled", out);
}

static int node_scale_max(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int largest = cpu_inum(n, "largest_size", 512);
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
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    stage_t s = {.kind = ST_LINEAR, .a = {-1, -1, -1}, .b = {1, 1, 1}};
    int rc = cpu_fused_append(c, im, &s, out, "ImageInvert");
    if (rc <= 0) {
        return rc;
    }
    return vips_linear1(im, &out[0], -1.0, 1.0, NULL) != 0 ? cpu_vips_fail(c, "ImageInvert") : 0;
}

/* ImageSharpen's 2-D kernel (1+k)δ − k·G on (2r+1)², from G's 1-D factor g. */
static void sharpen_kernel(double *m, const double *g, int r, double sharpen_k)
{
    int k = 2 * r + 1;
    for (int y = 0; y < k; y++) {
        for (int x = 0; x < k; x++) {
            double v = -sharpen_k * g[y] * g[x];
            if (x == r && y == r) {
                v += 1.0 + sharpen_k;
            }
            m[y * k + x] = v;
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
    cpu_gaussian_1d(g, k, sigma);
    double m[9 * 9]; /* sharpen: r ≤ 4 */
    if (sharpen) {
        sharpen_kernel(m, g, r, sharpen_k);
    }
    VipsImage *mask = NULL;
    if (sharpen && in->BandFmt == VIPS_FORMAT_FLOAT && cpu_fused_input_ok(in)) {
        /* one fused operation: the kernel on reflect-101 borders (read in
         * place, so the input streams), clamped, and the point nodes after */
        fused_t *fu = cpu_fused_new(in, 1.0);
        fu->r = r;
        fu->conv_clamp = true;
        const fused_t *pa = g_object_get_data(G_OBJECT(in), FUSED_KEY);
        if (pa != NULL && pa->r == 0 && !pa->out_u8) {
            fu->pre = cpu_fused_copy(pa); /* `in` itself is never evaluated */
        }
        for (int i = 0; i < k * k; i++) {
            fu->kern[i] = (float)m[i];
        }
        *out = cpu_fused_build(fu);
        return *out != NULL ? 0 : cpu_vips_fail(c, "ImageSharpen");
    }
    if (sharpen) {
        for (int i = 0; i < k * k; i++) {
            m[i] *= CLAMP_SCALE;
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
            rc =
                vips_extract_area(t[13], &inner, r, r, W, H, NULL) || cpu_clamp01_image(inner, out);
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
    cpu_unref_all(t, NIN(t));
    return rc != 0 ? cpu_vips_fail(c, sharpen ? "ImageSharpen" : "ImageBlur") : 0;
}

static int node_blur(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int lazy =
        conv_lazy(c, im, cpu_inum(n, "blur_radius", 1), cpu_num(n, "sigma", 1.0), 0.0, &out[0]);
    if (lazy <= 0) {
        return lazy;
    }
    fbuf_t fb;
    if (cpu_to_fbuf(c, im, &fb) != 0) {
        return -1;
    }
    float *px = cpu_gaussian_blur(&fb, cpu_inum(n, "blur_radius", 1), cpu_num(n, "sigma", 1.0));
    int w = fb.w;
    int h = fb.h;
    int bands = fb.c;
    g_free(fb.px);
    if (px == NULL) {
        return cpu_fail(c, CPU_EXEC_ERROR, "ImageBlur: out of memory");
    }
    out[0] = cpu_from_floats(c, px, w, h, bands);
    return out[0] != NULL ? 0 : -1;
}

static int node_sharpen(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    double alpha = cpu_num(n, "alpha", 1.0);
    /* clamp(x + 10α(x − blur)) */
    int lazy = 1;
    if (alpha == 0.0) {
        double one[1] = {1.0};
        double zero[1] = {0.0};
        return cpu_linear_clamped(c, im, one, zero, 1, out, "ImageSharpen");
    } else {
        lazy = conv_lazy(c, im, cpu_inum(n, "sharpen_radius", 1), cpu_num(n, "sigma", 1.0),
                         10.0 * alpha, &out[0]);
    }
    if (lazy <= 0) {
        return lazy;
    }
    fbuf_t fb;
    if (cpu_to_fbuf(c, im, &fb) != 0) {
        return -1;
    }
    float *blur =
        cpu_gaussian_blur(&fb, cpu_inum(n, "sharpen_radius", 1), cpu_num(n, "sigma", 1.0));
    if (blur == NULL) {
        g_free(fb.px);
        return cpu_fail(c, CPU_EXEC_ERROR, "ImageSharpen: out of memory");
    }
    float k = (float)(10.0 * alpha);
    size_t total = (size_t)fb.w * fb.h * fb.c;
    for (size_t i = 0; i < total; i++) {
        blur[i] = cpu_clamp01f(fb.px[i] + k * (fb.px[i] - blur[i]));
    }
    g_free(fb.px);
    out[0] = cpu_from_floats(c, blur, fb.w, fb.h, fb.c);
    return out[0] != NULL ? 0 : -1;
}

static float soft_light_g(float a)
{
    return a <= 0.25f ? ((16 * a - 12) * a + 4) * a : sqrtf(a);
}

static int node_blend(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im1 = cpu_input_image(c, n, "image1");
    VipsImage *im2 = cpu_input_image(c, n, "image2");
    if (im1 == NULL || im2 == NULL) {
        return -1;
    }
    fbuf_t a;
    fbuf_t b;
    if (cpu_to_fbuf(c, im1, &a) != 0) {
        return -1;
    }
    if (cpu_to_fbuf(c, im2, &b) != 0) {
        g_free(a.px);
        return -1;
    }
    if (b.w != a.w || b.h != a.h || b.c != a.c) {
        if (b.c != a.c) {
            g_free(a.px);
            g_free(b.px);
            return cpu_fail(c, CPU_EXEC_ERROR, "ImageBlend: channel counts differ");
        }
        float *r = cpu_exec_upscale(b.px, b.w, b.h, b.c, a.w, a.h, "bicubic", "center");
        g_free(b.px);
        if (r == NULL) {
            g_free(a.px);
            return cpu_fail(c, CPU_EXEC_ERROR, "ImageBlend: out of memory");
        }
        b.px = r;
        b.w = a.w;
        b.h = a.h;
    }
    float f = (float)cpu_num(n, "blend_factor", 0.5);
    const char *mode = cpu_str(n, "blend_mode", "normal");
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
            bl =
                y <= 0.5f ? x - (1 - 2 * y) * x * (1 - x) : x + (2 * y - 1) * (soft_light_g(x) - x);
            break;
        case 5:
            bl = x - y;
            break;
        default:
            bl = y;
            break;
        }
        a.px[i] = cpu_clamp01f(x * (1 - f) + bl * f);
    }
    g_free(b.px);
    out[0] = cpu_from_floats(c, a.px, a.w, a.h, a.c);
    return out[0] != NULL ? 0 : -1;
}

static int node_crop(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int x = cpu_inum(n, "x", 0);
    int y = cpu_inum(n, "y", 0);
    if (x > im->Xsize - 1) {
        x = im->Xsize - 1;
    }
    if (y > im->Ysize - 1) {
        y = im->Ysize - 1;
    }
    int w = cpu_inum(n, "width", 512);
    int h = cpu_inum(n, "height", 512);
    if (x + w > im->Xsize) {
        w = im->Xsize - x;
    }
    if (y + h > im->Ysize) {
        h = im->Ysize - y;
    }
    return vips_extract_area(im, &out[0], x, y, w, h, NULL) != 0 ? cpu_vips_fail(c, "ImageCrop")
                                                                 : 0;
}

static int node_flip(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    bool vertical = strcmp(cpu_str(n, "flip_method", cpu_nodes_flip_methods[0]),
                           cpu_nodes_flip_methods[0]) == 0;
    return vips_flip(im, &out[0], vertical ? VIPS_DIRECTION_VERTICAL : VIPS_DIRECTION_HORIZONTAL,
                     NULL) != 0
               ? cpu_vips_fail(c, "ImageFlip")
               : 0;
}

static int node_rotate(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    const char *r = cpu_str(n, "rotation", "none");
    VipsAngle angle = VIPS_ANGLE_D0;
    if (strcmp(r, "90 degrees") == 0) {
        angle = VIPS_ANGLE_D90; /* clockwise, like torch.rot90(k, dims=[2,1]) */
    } else if (strcmp(r, "180 degrees") == 0) {
        angle = VIPS_ANGLE_D180;
    } else if (strcmp(r, "270 degrees") == 0) {
        angle = VIPS_ANGLE_D270;
    }
    return vips_rot(im, &out[0], angle, NULL) != 0 ? cpu_vips_fail(c, "ImageRotate") : 0;
}

static int node_pad(ctx_t *c, enode_t *n, VipsImage **out)
{
    VipsImage *im = cpu_input_image(c, n, "image");
    if (im == NULL) {
        return -1;
    }
    int left = cpu_inum(n, "left", 0);
    int top = cpu_inum(n, "top", 0);
    int right = cpu_inum(n, "right", 0);
    int bottom = cpu_inum(n, "bottom", 0);
    int feathering = cpu_inum(n, "feathering", 40);
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
        return cpu_vips_fail(c, "ImagePadForOutpaint");
    }
    float *mask = g_try_malloc((size_t)NW * NH * sizeof(float));
    if (mask == NULL) {
        return cpu_fail(c, CPU_EXEC_ERROR, "ImagePadForOutpaint: out of memory");
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
    out[1] = cpu_from_floats(c, mask, NW, NH, 1);
    return out[1] != NULL ? 0 : -1;
}

const cpu_impl_t cpu_comfy_impls[] = {
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
    {"CA.Export", node_save}, /* its options are read by cpu_encode */
    {NULL, NULL},
};
