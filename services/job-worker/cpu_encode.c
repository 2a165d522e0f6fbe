/*
 * cpu_encode — the executor's output: the final float image to 8 bits
 * (ComfyUI's clip(255x) truncated, in the fused operation when it can be),
 * the metadata kept from the original (ICC, EXIF without GPS, orientation 1),
 * and the encoding CA.Export asks for (jpeg, png, webp, tiff). See
 * docs/image-pipeline.md, "Metadata on export".
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int cpu_encode(ctx_t *c, VipsImage *im, const enode_t *out_node)
{
    cpu_exec_job_t *job = c->job;
    const char *format = "jpeg";
    int quality = 92;
    bool keep_icc = true;
    bool strip_location = true;
    if (strcmp(out_node->class_type, "CA.Export") == 0) {
        format = cpu_str(out_node, "format", "jpeg");
        quality = cpu_inum(out_node, "quality", 92);
        keep_icc = cpu_bool(out_node, "keep_icc", true);
        strip_location = cpu_bool(out_node, "strip_location", true);
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
            cpu_vips_fail(c, "encode");
            goto out;
        }
        rgb = t[3];
    }
    const fused_t *fu = g_object_get_data(G_OBJECT(rgb), FUSED_KEY);
    if (fu != NULL && !fu->out_u8) {
        /* the last pass of the fused chain writes 8-bit pixels */
        fused_t *f8 = cpu_fused_copy(fu);
        f8->out_u8 = true;
        t[2] = cpu_fused_build(f8);
    } else if (rgb->BandFmt == VIPS_FORMAT_FLOAT && cpu_fused_input_ok(rgb)) {
        fused_t *f8 = cpu_fused_new(rgb, 1.0);
        f8->out_u8 = true;
        t[2] = cpu_fused_build(f8);
    }
    if (t[2] != NULL) {
        /* done */
    } else if (vips_copy(rgb, &t[0], NULL) != 0 ||
               vips_linear1(t[0], &t[1], 255.0, 1e-4, NULL) != 0 ||
               /* vips_cast clips to 0..255 itself. */
               vips_cast(t[1], &t[2], VIPS_FORMAT_UCHAR, NULL) != 0) {
        cpu_vips_fail(c, "encode");
        goto out;
    }
    VipsImage *u8 = NULL;
    if (vips_copy(t[2], &u8, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) != 0) {
        cpu_vips_fail(c, "encode");
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
        src = vips_tiffsave_buffer(u8, &buf, &len, "compression",
                                   VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, NULL);
        snprintf(job->ext, sizeof(job->ext), "tif");
        snprintf(job->mime, sizeof(job->mime), "image/tiff");
    } else {
        /* Optimised Huffman tables keep every DCT coefficient in memory
         * (~70 MB at 12 MP): only for outputs up to 4 MP. */
        bool optimize = (double)u8->Xsize * u8->Ysize <= 4e6;
        src = vips_jpegsave_buffer(u8, &buf, &len, "Q", quality, "optimize_coding", optimize, NULL);
        snprintf(job->ext, sizeof(job->ext), "jpg");
        snprintf(job->mime, sizeof(job->mime), "image/jpeg");
    }
    job->out_width = u8->Xsize;
    job->out_height = u8->Ysize;
    g_object_unref(u8);
    if (src != 0) {
        cpu_vips_fail(c, "encode");
        goto out;
    }
    job->output = malloc(len);
    if (job->output == NULL) {
        g_free(buf);
        cpu_fail(c, CPU_EXEC_ERROR, "encode: out of memory");
        goto out;
    }
    memcpy(job->output, buf, len);
    job->output_len = len;
    g_free(buf);
    rc = 0;
out:
    cpu_unref_all(t, NIN(t));
    return rc;
}
