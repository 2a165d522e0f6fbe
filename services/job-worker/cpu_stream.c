/*
 * cpu_stream — whether a graph can decode its input sequentially
 * (cpu_graph_streams), and the statistics preview: AutoLevels and
 * WhiteBalance computed on a small shrink-on-load decode run through the same
 * upstream nodes (cpu_stats_image). See docs/image-pipeline.md, "Streaming"
 * and "Statistics".
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <jpeglib.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Long edge of the thumbnail statistics are computed on. */
#define PREVIEW_SIZE 768
/* JPEG: the largest shrink-on-load (2, 4, 8) that keeps the long edge at
 * least this; libjpeg then skips most of the IDCT (at 8, only DC terms). */
#define PREVIEW_MIN 384

/* libjpeg's error manager for our own decodes (the preview's, the decode
 * ahead's): an error or any warning longjmps out, and the caller falls back
 * to libvips' loader, whose fail_on=error policy then decides. */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
} ahead_jerr_t;

static void ahead_jpeg_error(j_common_ptr cinfo)
{
    ahead_jerr_t *e = (ahead_jerr_t *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jmp, 1);
}

static void ahead_jpeg_message(j_common_ptr cinfo, int level)
{
    if (level < 0) { /* a warning */
        ahead_jpeg_error(cinfo);
    }
}

/* ci with our error manager (jerr): errors and warnings longjmp to
 * jerr->jmp. Call before setjmp, then jpeg_create_decompress. */
static void ahead_jpeg_init(struct jpeg_decompress_struct *ci, ahead_jerr_t *jerr)
{
    memset(ci, 0, sizeof(*ci));
    memset(jerr, 0, sizeof(*jerr));
    ci->err = jpeg_std_error(&jerr->pub);
    jerr->pub.error_exit = ahead_jpeg_error;
    jerr->pub.emit_message = ahead_jpeg_message;
}

/* Whether a read header is a file we decode ourselves: one scan (baseline),
 * three components, YCbCr or RGB. */
static bool ahead_jpeg_plain(struct jpeg_decompress_struct *ci)
{
    return !jpeg_has_multiple_scans(ci) && ci->num_components == 3 &&
           (ci->jpeg_color_space == JCS_YCbCr || ci->jpeg_color_space == JCS_RGB);
}

/* The preview of an upright 3-component baseline JPEG decoded by libjpeg
 * itself at 1/shrink, as libvips' jpegload with "shrink" gives it (the top-left
 * floor(W/shrink) × floor(H/shrink) of libjpeg's output, libjpeg's defaults:
 * byte-identical, checked on the bench photos and odd sizes) but without the
 * loader's line cache and a thread pool to copy it into memory. NULL when the
 * file is not one for it or libjpeg complains: the caller uses libvips. */
static VipsImage *jpeg_preview_direct(const void *buf, size_t len)
{
    struct jpeg_decompress_struct ci;
    ahead_jerr_t jerr;
    VipsImage *volatile im = NULL;
    JSAMPLE *volatile row = NULL;
    ahead_jpeg_init(&ci, &jerr);
    if (setjmp(jerr.jmp) != 0) {
        jpeg_destroy_decompress(&ci);
        if (im != NULL) {
            g_object_unref(im);
        }
        g_free(row);
        return NULL;
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, buf, (unsigned long)len);
    (void)jpeg_read_header(&ci, TRUE);
    if (!ahead_jpeg_plain(&ci)) {
        jpeg_destroy_decompress(&ci);
        return NULL;
    }
    int longest = ci.image_width > ci.image_height ? (int)ci.image_width : (int)ci.image_height;
    int shrink = 1;
    while (shrink < 8 && longest / (shrink * 2) >= PREVIEW_MIN) {
        shrink *= 2;
    }
    ci.scale_num = 1;
    ci.scale_denom = (unsigned)shrink;
    (void)jpeg_start_decompress(&ci);
    int w = (int)ci.image_width / shrink;
    int h = (int)ci.image_height / shrink;
    if (w < 1 || h < 1 || (int)ci.output_width < w || (int)ci.output_height < h ||
        ci.output_components != 3) {
        jpeg_destroy_decompress(&ci);
        return NULL;
    }
    im = vips_image_new_memory();
    vips_image_init_fields(im, w, h, 3, VIPS_FORMAT_UCHAR, VIPS_CODING_NONE,
                           VIPS_INTERPRETATION_sRGB, 1.0, 1.0);
    row = g_malloc((size_t)ci.output_width * 3);
    if (vips_image_write_prepare(im) != 0) {
        vips_error_clear();
        snprintf(jerr.msg, sizeof(jerr.msg), "out of memory");
        longjmp(jerr.jmp, 1);
    }
    JSAMPROW rows[1] = {row};
    for (int y = 0; y < h; y++) {
        if (jpeg_read_scanlines(&ci, rows, 1) != 1) {
            snprintf(jerr.msg, sizeof(jerr.msg), "no progress at row %d", y);
            longjmp(jerr.jmp, 1);
        }
        memcpy(VIPS_IMAGE_ADDR(im, 0, y), row, (size_t)w * 3);
    }
    jpeg_destroy_decompress(&ci);
    g_free(row);
    return im;
}

/* The preview of a JPEG: decoded at 1/2, 1/4 or 1/8 scale, autorotated, in
 * memory; NULL (error cleared) when not a JPEG or when it fails. Called after
 * LoadImage opened the input through the front door (cpu_exec_open).
 * vips_thumbnail picks a milder shrink (2 for 4000x3000 → 768) and resizes
 * with lanczos3: ~4x the time, all of it before the first output pixel. */
VipsImage *cpu_exec_jpeg_preview(const void *buf, size_t len, bool upright)
{
    if (cpu_exec_format(buf, len) != CPU_FORMAT_JPEG) {
        return NULL;
    }
    VipsImage *direct = upright ? jpeg_preview_direct(buf, len) : NULL;
    if (direct != NULL) {
        return direct;
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
        c->thumb = cpu_exec_jpeg_preview(job->input, job->input_len, c->upright);
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

/* ---- decode ahead ---------------------------------------------------------
 * A graph that streams and takes statistics from the preview decodes its
 * input twice, the preview first: the main decode (pulled by the encoder) did
 * not start until the preview was done. Decoding ahead, a thread writes the
 * decoded original top to bottom into memory (ahead_main) from the moment
 * LoadImage runs, while the preview is computed; the pipeline's regions point
 * at the rows there (ahead_gen), waiting for those not decoded yet. The same
 * pixels; memory: the whole decoded original (bounded by AHEAD_MAX_BYTES). */

#define AHEAD_MAX_BYTES (64L * 1024 * 1024)
#define AHEAD_HUGE ((size_t)2 * 1024 * 1024)

typedef struct {
    VipsImage *in;   /* a reference */
    VipsImage *mem;  /* buf as an image: the pipeline's regions point into it */
    const void *src; /* the JPEG file, for the direct decode (NULL: none) */
    size_t src_len;
    VipsPel *buf;
    size_t map_len; /* buf's mapping */
    size_t line;
    GMutex lock;
    GCond cond;
    int rows_done; /* under lock */
    bool failed;   /* under lock */
    bool stop;     /* under lock: the reader is gone */
    char err[256];
    GThread *thread;
} ahead_t;

/* ---- the direct decode: libjpeg straight into buf --------------------------
 * For an upright 3-component baseline JPEG (what cameras write), the thread
 * runs libjpeg itself with libvips' settings (libjpeg's defaults: the same
 * pixels, checked byte for byte) and writes the scanlines into buf: no line
 * cache, no region chain, no copy. libjpeg goes on after a warning (corrupt
 * data; a truncated file comes out grey), where libvips' fail_on=error stops
 * on some: any warning fails the direct decode like an error, and the run
 * falls back to libvips' up-front decode, which decides (unsupported_image or
 * the same pixels). */

#define AHEAD_STRIP 16

/* Whether libjpeg's header of src says a file for the direct decode: plain
 * (ahead_jpeg_plain) and w×h. Errors and warnings: no. */
static bool ahead_direct_ok(const void *src, size_t len, int w, int h)
{
    struct jpeg_decompress_struct ci;
    ahead_jerr_t jerr;
    ahead_jpeg_init(&ci, &jerr);
    if (setjmp(jerr.jmp) != 0) {
        jpeg_destroy_decompress(&ci);
        return false;
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, src, (unsigned long)len);
    (void)jpeg_read_header(&ci, TRUE);
    bool ok = ahead_jpeg_plain(&ci) && (int)ci.image_width == w && (int)ci.image_height == h;
    jpeg_destroy_decompress(&ci);
    return ok;
}

/* 1: buf holds the image; 0: not a file for it (nothing decoded: the libvips
 * loop decodes); -1: failed or stopped (ah->err says which). */
static int ahead_direct(ahead_t *ah)
{
    struct jpeg_decompress_struct ci;
    ahead_jerr_t jerr;
    ahead_jpeg_init(&ci, &jerr);
    if (setjmp(jerr.jmp) != 0) {
        jpeg_destroy_decompress(&ci);
        snprintf(ah->err, sizeof(ah->err), "decode: %s", jerr.msg);
        return -1;
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, ah->src, (unsigned long)ah->src_len);
    (void)jpeg_read_header(&ci, TRUE);
    if (!ahead_jpeg_plain(&ci) || (int)ci.image_width != ah->in->Xsize ||
        (int)ci.image_height != ah->in->Ysize) {
        jpeg_destroy_decompress(&ci);
        return 0;
    }
    (void)jpeg_start_decompress(&ci);
    if (ci.output_components != 3 || (int)ci.output_width != ah->in->Xsize ||
        (int)ci.output_height != ah->in->Ysize) {
        jpeg_destroy_decompress(&ci);
        return 0;
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW rows[AHEAD_STRIP];
        JDIMENSION top = ci.output_scanline;
        JDIMENSION n = ci.output_height - top < AHEAD_STRIP ? ci.output_height - top : AHEAD_STRIP;
        for (JDIMENSION i = 0; i < n; i++) {
            rows[i] = ah->buf + (size_t)(top + i) * ah->line;
        }
        for (JDIMENSION got = 0; got < n;) {
            JDIMENSION k = jpeg_read_scanlines(&ci, rows + got, n - got);
            if (k == 0) {
                snprintf(jerr.msg, sizeof(jerr.msg), "no progress at row %u", top + got);
                longjmp(jerr.jmp, 1);
            }
            got += k;
        }
        g_mutex_lock(&ah->lock);
        ah->rows_done = (int)(top + n);
        bool stop = ah->stop;
        g_cond_broadcast(&ah->cond);
        g_mutex_unlock(&ah->lock);
        if (stop) {
            jpeg_destroy_decompress(&ci);
            snprintf(ah->err, sizeof(ah->err), "decode: stopped");
            return -1;
        }
    }
    /* not jpeg_finish_decompress: libvips does not read the file's tail either */
    jpeg_destroy_decompress(&ci);
    return 1;
}

/* The thread: decodes `in` top to bottom a strip at a time into buf. Its own
 * loop rather than vips_sink_disc: the region of `in` points at the loader's
 * line cache (libvips' copies pass regions along), so the strip is copied once,
 * into buf, and no thread pool or write-behind buffer is started for a decode
 * that is sequential anyway. */
static gpointer ahead_main(gpointer a)
{
    ahead_t *ah = a;
    VipsImage *in = ah->in;
    int direct = ah->src != NULL ? ahead_direct(ah) : 0;
    if (direct != 0) {
        g_mutex_lock(&ah->lock);
        ah->failed = direct < 0;
        g_cond_broadcast(&ah->cond);
        g_mutex_unlock(&ah->lock);
        return NULL;
    }
    int tw = 0;
    int strip = 0; /* the loader's strip (16 rows for 4:2:x JPEG): its line cache stays small */
    int nlines = 0;
    vips_get_tile_size(in, &tw, &strip, &nlines);
    if (strip < 8) {
        strip = 8;
    }
    VipsRegion *reg = vips_region_new(in);
    int rc = reg == NULL ? -1 : 0;
    bool stop = false;
    for (int top = 0; rc == 0 && !stop && top < in->Ysize; top += strip) {
        VipsRect r = {0, top, in->Xsize, in->Ysize - top < strip ? in->Ysize - top : strip};
        if (vips_region_prepare(reg, &r) != 0) {
            rc = -1;
            break;
        }
        for (int y = r.top; y < r.top + r.height; y++) {
            memcpy(ah->buf + (size_t)y * ah->line, VIPS_REGION_ADDR(reg, 0, y), ah->line);
        }
        g_mutex_lock(&ah->lock);
        ah->rows_done = r.top + r.height;
        stop = ah->stop;
        g_cond_broadcast(&ah->cond);
        g_mutex_unlock(&ah->lock);
    }
    if (reg != NULL) {
        g_object_unref(reg);
    }
    g_mutex_lock(&ah->lock);
    if (rc != 0 || (stop && ah->rows_done < in->Ysize)) {
        ah->failed = true;
        snprintf(ah->err, sizeof(ah->err), "decode: %s",
                 ah->stop ? "stopped" : vips_error_buffer());
    }
    g_cond_broadcast(&ah->cond);
    g_mutex_unlock(&ah->lock);
    vips_thread_shutdown();
    return NULL;
}

/* The image's close: stop the thread (its next strip fails) and free. */
static void ahead_close(VipsImage *im, void *a)
{
    ahead_t *ah = a;
    (void)im;
    g_mutex_lock(&ah->lock);
    ah->stop = true;
    g_mutex_unlock(&ah->lock);
    if (ah->thread != NULL) {
        g_thread_join(ah->thread);
    }
    g_object_unref(ah->in);
    if (ah->mem != NULL) {
        g_object_unref(ah->mem);
    }
    if (ah->buf != NULL) {
        munmap(ah->buf, ah->map_len);
    }
    g_mutex_clear(&ah->lock);
    g_cond_clear(&ah->cond);
    g_free(ah);
}

/* A sequence of the pipeline's image: a region on buf's image. */
static void *ahead_start(VipsImage *out, void *a, void *b)
{
    ahead_t *ah = b;
    (void)out;
    (void)a;
    return vips_region_new(ah->mem);
}

static int ahead_stop(void *seq, void *a, void *b)
{
    (void)a;
    (void)b;
    g_object_unref(seq);
    return 0;
}

/* Waits for the rows of the request, then points the output region at them in
 * buf (vips_region_region): no copy. */
static int ahead_gen(VipsRegion *out, void *seq, void *a, void *b, gboolean *stop)
{
    VipsRegion *ir = seq;
    ahead_t *ah = b;
    VipsRect *r = &out->valid;
    (void)a;
    (void)stop;
    g_mutex_lock(&ah->lock);
    while (ah->rows_done < r->top + r->height && !ah->failed) {
        g_cond_wait(&ah->cond, &ah->lock);
    }
    bool failed = ah->rows_done < r->top + r->height;
    g_mutex_unlock(&ah->lock);
    if (failed) {
        vips_error("decode-ahead", "%s", ah->err);
        return -1;
    }
    if (vips_region_prepare(ir, r) != 0 || vips_region_region(out, ir, r, r->left, r->top) != 0) {
        return -1;
    }
    return 0;
}

/* Whether node n needs statistics taken from the preview (AutoLevels or
 * WhiteBalance with everything upstream preview-safe). */
static bool graph_uses_preview(ctx_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const enode_t *n = &c->nodes[i];
        if ((strcmp(n->class_type, "CA.AutoLevels") == 0 ||
             strcmp(n->class_type, "CA.WhiteBalance") == 0) &&
            upstream_preview_safe(c, n, 0)) {
            return true;
        }
    }
    return false;
}

static int ahead_mode = CPU_AHEAD_AUTO; /* cpu_exec_set_decode_ahead */
static int pipelines;                   /* cpu_exec_run calls in flight in this process */
static int pretend_busy;                /* cpu_exec_set_busy_for_tests */

void cpu_exec_set_decode_ahead(cpu_ahead_t mode)
{
    g_atomic_int_set(&ahead_mode, (int)mode);
}

void cpu_exec_set_busy_for_tests(int n)
{
    g_atomic_int_set(&pretend_busy, n);
}

void cpu_pipelines_enter(void)
{
    g_atomic_int_inc(&pipelines);
}

void cpu_pipelines_leave(void)
{
    (void)g_atomic_int_dec_and_test(&pipelines);
}

/* Whether decoding ahead may use a core: ON, or AUTO when the pipelines this
 * process runs (this one included) leave one of libvips' threads idle — the
 * threads are the CPUs the cgroup gives the worker (common/sysres), so a pod
 * whose every job thread is busy never decodes ahead. With no idle core the
 * decode ahead saves little wall time (there is no core for the preview) and
 * costs the whole decoded original in memory (its CPU cost, ~10 % of
 * portrait_pro's through libvips' loader, is about nil with the direct
 * decode: docs/image-pipeline.md). The process's own count, not the load
 * average: in a container that is the node's, not the pod's. */
static bool ahead_allowed(void)
{
    int mode = g_atomic_int_get(&ahead_mode);
    if (mode != CPU_AHEAD_AUTO) {
        return mode == CPU_AHEAD_ON;
    }
    int busy = g_atomic_int_get(&pipelines) + g_atomic_int_get(&pretend_busy);
    return busy < vips_concurrency_get();
}

VipsImage *cpu_decode_ahead(ctx_t *c, VipsImage *in, bool upright)
{
    size_t bytes = VIPS_IMAGE_SIZEOF_LINE(in) * (size_t)in->Ysize;
    if (c->eager || !c->sequential || c->preview || !graph_uses_preview(c) ||
        bytes > (size_t)AHEAD_MAX_BYTES ||
        cpu_exec_format(c->job->input, c->job->input_len) != CPU_FORMAT_JPEG || !ahead_allowed()) {
        return NULL;
    }
    ahead_t *ah = g_new0(ahead_t, 1);
    /* its own mapping, in 2 MB pages where the kernel has them (MADV_HUGEPAGE):
     * ~20 page faults instead of one per 4 kB page (~10000 for 13 MP) */
    ah->map_len = (bytes + AHEAD_HUGE - 1) / AHEAD_HUGE * AHEAD_HUGE;
    void *m = mmap(NULL, ah->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        g_free(ah);
        return NULL;
    }
    (void)madvise(m, ah->map_len, MADV_HUGEPAGE);
    ah->buf = m;
    ah->line = VIPS_IMAGE_SIZEOF_LINE(in);
    if (upright && in->Bands == 3 && in->BandFmt == VIPS_FORMAT_UCHAR &&
        in->Coding == VIPS_CODING_NONE &&
        ahead_direct_ok(c->job->input, c->job->input_len, in->Xsize, in->Ysize)) {
        ah->src = c->job->input;
        ah->src_len = c->job->input_len;
    }
    g_mutex_init(&ah->lock);
    g_cond_init(&ah->cond);
    g_object_ref(in);
    ah->in = in;
    VipsImage *out = vips_image_new();
    if (vips_image_pipelinev(out, VIPS_DEMAND_STYLE_THINSTRIP, in, NULL) != 0) {
        g_object_unref(out);
        ahead_close(NULL, ah);
        return NULL;
    }
    g_signal_connect(out, "close", G_CALLBACK(ahead_close), ah);
    ah->mem =
        vips_image_new_from_memory(ah->buf, bytes, in->Xsize, in->Ysize, in->Bands, in->BandFmt);
    if (ah->mem == NULL ||
        vips_image_generate(out, ahead_start, ahead_gen, ahead_stop, NULL, ah) != 0) {
        g_object_unref(out); /* close frees ah */
        return NULL;
    }
    ah->thread = g_thread_try_new("decode-ahead", ahead_main, ah, NULL);
    if (ah->thread == NULL) {
        g_object_unref(out);
        return NULL;
    }
    c->job->decoded_ahead = true;
    c->job->decoded_direct = ah->src != NULL;
    return out;
}
