/*
 * cpu_stream — whether a graph can decode its input sequentially
 * (cpu_graph_streams), and the statistics preview: AutoLevels and
 * WhiteBalance computed on a small shrink-on-load decode run through the same
 * upstream nodes (cpu_stats_image). See docs/image-pipeline.md, "Streaming"
 * and "Statistics".
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <stdlib.h>
#include <string.h>

/* Long edge of the thumbnail statistics are computed on. */
#define PREVIEW_SIZE 768
/* JPEG: the largest shrink-on-load (2, 4, 8) that keeps the long edge at
 * least this; libjpeg then skips most of the IDCT (at 8, only DC terms). */
#define PREVIEW_MIN 384

/* The preview of a JPEG: decoded at 1/2, 1/4 or 1/8 scale, autorotated, in
 * memory; NULL (error cleared) when not a JPEG or when it fails. Called after
 * LoadImage opened the input through the front door (cpu_exec_open).
 * vips_thumbnail picks a milder shrink (2 for 4000x3000 → 768) and resizes
 * with lanczos3: ~4x the time, all of it before the first output pixel. */
static VipsImage *jpeg_preview(const void *buf, size_t len)
{
    if (cpu_exec_format(buf, len) != CPU_FORMAT_JPEG) {
        return NULL;
    }
    VipsImage *hdr = NULL;
    if (vips_jpegload_buffer((void *)buf, len, &hdr, NULL) != 0) {
        vips_error_clear();
        return NULL;
    }
    int longest = hdr->Xsize > hdr->Ysize ? hdr->Xsize : hdr->Ysize;
    g_object_unref(hdr);
    int shrink = 1;
    while (shrink < 8 && longest / (shrink * 2) >= PREVIEW_MIN) {
        shrink *= 2;
    }
    VipsImage *t = NULL;
    if (vips_jpegload_buffer((void *)buf, len, &t, "shrink", shrink, "access",
                             VIPS_ACCESS_SEQUENTIAL, NULL) != 0) {
        t = NULL;
    }
    VipsImage *mem = t != NULL ? vips_image_copy_memory(t) : NULL;
    VipsImage *rot = NULL;
    if (mem != NULL && vips_autorot(mem, &rot, NULL) != 0) {
        rot = NULL;
    }
    VipsImage *all[] = {t, mem};
    cpu_unref_all(all, NIN(all));
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
    "LoadImage",
    "ImageInvert",
    "ImageFlip",
    "ImageRotate",
    "ImageBlur",
    "ImageSharpen",
    "ImageScaleBy",
    "ImageScaleToTotalPixels",
    "ImageScaleToMaxDimension",
    "CA.AutoLevels",
    "CA.Levels",
    "CA.WhiteBalance",
    "CA.Exposure",
    "CA.Contrast",
    "CA.Saturation",
    "CA.Warmth",
    "CA.ResizeLongEdge",
    NULL,
};

/* Nodes that are lazy libvips pipelines reading their input once, top to
 * bottom (ImageScale* only with lanczos; the statistics nodes only when they
 * can use a preview). Not ImageBlur/ImageSharpen: their reflect-101 borders
 * read rows out of order (libvips' mirror extend is plain reflect), so those
 * graphs decode with random access (one 8-bit copy of the original). */
static const char *const STREAMING[] = {
    "LoadImage",
    "SaveImage",
    "PreviewImage",
    "EmptyImage",
    "ImageInvert",
    "ImageCrop",
    "ImagePadForOutpaint",
    "ImageScale",
    "ImageScaleBy",
    "ImageScaleToTotalPixels",
    "ImageScaleToMaxDimension",
    "CA.AutoLevels",
    "CA.Levels",
    "CA.WhiteBalance",
    "CA.Exposure",
    "CA.Contrast",
    "CA.Saturation",
    "CA.Warmth",
    "CA.Vignette",
    "CA.Watermark",
    "CA.ResizeLongEdge",
    "CA.Export",
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
        const enode_t *src = cpu_find_enode(c, cJSON_GetArrayItem(v, 0)->valuestring);
        if (src == NULL || !in_list(PREVIEW_SAFE, src->class_type) ||
            !upstream_preview_safe(c, src, depth + 1)) {
            return false;
        }
    }
    return true;
}

/* Whether the whole graph can decode its input sequentially. */
bool cpu_graph_streams(ctx_t *c)
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
        if (strcmp(n->class_type, "ImageSharpen") == 0 && cpu_inum(n, "sharpen_radius", 1) > 4) {
            return false;
        }
        if (strncmp(n->class_type, "ImageScale", 10) == 0 &&
            strcmp(cpu_str(n, "upscale_method", "bilinear"), "lanczos") != 0) {
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
int cpu_stats_image(ctx_t *c, enode_t *n, VipsImage *full, VipsImage **out)
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
        im = cpu_input_image(&p, &p.nodes[n - c->nodes], "image");
        if (im != NULL) {
            g_object_ref(im);
        }
        cpu_ctx_release(&p);
    }
    if (im == NULL) {
        vips_error_clear();
        g_object_ref(full);
        im = full;
    }
    *out = im;
    return 0;
}
