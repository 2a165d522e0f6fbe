/*
 * cpu_exec — the built-in CPU executor: runs a ComfyUI API-format workflow
 * whose nodes are all model-free image operations, on libvips.
 *
 * Images flow between nodes as VipsImage, 3 bands, VIPS_FORMAT_FLOAT, values
 * sRGB-encoded in [0,1] (ComfyUI's IMAGE convention); MASK is 1 band float.
 * ComfyUI's core nodes follow the formulas of its source (see
 * docs/image-pipeline.md for where libvips is not bit-exact); our own nodes are
 * namespaced "CA.".
 *
 *   cpu_exec_init(argv[0]);
 *   cpu_exec_job_t job = {.input = bytes, .input_len = n};
 *   char err[256];
 *   cpu_exec_status_t st = cpu_exec_run(graph, &job, err, sizeof(err));
 *   if (st == CPU_EXEC_OK) { write(fd, job.output, job.output_len); }
 *   cpu_exec_job_free(&job);
 *   cpu_exec_shutdown();
 */
#ifndef CA_CPU_EXEC_H
#define CA_CPU_EXEC_H

#include "graph.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vips/vips.h>

typedef enum {
    CPU_EXEC_OK = 0,
    CPU_EXEC_BAD_GRAPH,         /* validation failed, or a class the executor lacks */
    CPU_EXEC_UNSUPPORTED_IMAGE, /* the input cannot be decoded: `unsupported_image` */
    CPU_EXEC_ERROR,             /* anything else: `processing_error` */
    CPU_EXEC_TOO_LARGE,         /* over the pixel limit or memory budget: `image_too_large` */
    CPU_EXEC_TIMEOUT,           /* past job->deadline_ms: stopped mid-pipeline (`timeout`) */
    CPU_EXEC_CANCELLED,         /* *job->cancel became non-zero: stopped mid-pipeline */
} cpu_exec_status_t;

/* The pixel limit when the caller sets none (MAX_IMAGE_PIXELS: 100 megapixels). */
#define CPU_EXEC_MAX_PIXELS_DEFAULT 100000000LL
/* The memory budget of a decoded input: width·height·bands·sample size at most
 * max_pixels times this (a 16-bit RGBA image at the pixel limit). */
#define CPU_EXEC_BYTES_PER_PIXEL 8

/* The input formats the product reads (the libvips loaders left unblocked). */
typedef enum {
    CPU_FORMAT_NONE = 0,
    CPU_FORMAT_JPEG,
    CPU_FORMAT_PNG,
    CPU_FORMAT_WEBP,
    CPU_FORMAT_TIFF,
    CPU_FORMAT_HEIF, /* HEIC, HEIF and AVIF */
} cpu_exec_format_t;

typedef struct {
    /* In: the original file's bytes, read by every LoadImage node. */
    const void *input;
    size_t input_len;
    /* In (tests): when set, LoadImage yields this image (3-band float) instead. */
    VipsImage *input_image;
    /* In: the pixel limit checked on the header (0: CPU_EXEC_MAX_PIXELS_DEFAULT). */
    long long max_pixels;
    /* In (tests): keep the final float image in `result` (a new reference). */
    bool keep_result;
    /* In: the wall-time budget, a now_mono_ms() instant (0: none), and a flag
     * another thread sets to stop the job (NULL: none). Both are checked
     * before every node, on every libvips evaluation tick of the images the
     * nodes make (the pipeline is killed mid-computation: vips_image_set_kill)
     * and per row in the executor's own C loops; cpu_exec_run then returns
     * CPU_EXEC_TIMEOUT or CPU_EXEC_CANCELLED, without output. */
    int64_t deadline_ms;
    const atomic_int *cancel;

    /* Out: the encoded file (malloc'd), its extension and MIME type. */
    void *output;
    size_t output_len;
    char ext[8];
    char mime[24];
    int in_width, in_height, out_width, out_height;
    /* out: the original was decoded ahead by a thread while the statistics
     * preview was computed (cpu_stream.c, "decode ahead") */
    bool decoded_ahead;
    /* out: decoded ahead by libjpeg straight into memory (an upright RGB
     * baseline JPEG), not through libvips' loader */
    bool decoded_direct;
    VipsImage *result;
} cpu_exec_job_t;

/* VIPS_INIT, then blocks every libvips loader but those of cpu_exec_format_t
 * (and all that libvips marks untrusted); safe to call more than once.
 * Returns 0 or -1. */
__attribute__((warn_unused_result)) int cpu_exec_init(const char *argv0);
void cpu_exec_shutdown(void);
/* Threads libvips may use for one pipeline (vips_concurrency_set); after
 * cpu_exec_init. */
void cpu_exec_set_threads(int n);

/* The node classes this executor runs (static data). */
const graph_registry_t *cpu_exec_registry(void);

/* Validates and runs `graph`. `err` gets a one-line message on failure. */
__attribute__((warn_unused_result)) cpu_exec_status_t
cpu_exec_run(const cJSON *graph, cpu_exec_job_t *job, char *err, size_t errlen);

/* The format of buf from its magic bytes alone (never a name or MIME type),
 * or CPU_FORMAT_NONE; and its display name ("JPEG", ...). */
cpu_exec_format_t cpu_exec_format(const void *buf, size_t len);
const char *cpu_exec_format_name(cpu_exec_format_t f);

/* Opens libvips' HEIF module (load and save) if not yet done: cpu_exec_init
 * opens no libvips module, cpu_exec_open does this for a HEIF input. Safe to
 * call from any thread, any number of times. */
void cpu_exec_heif_ready(void);

/* The statistics preview of a JPEG (cpu_stream.c): decoded at 1/2, 1/4 or
 * 1/8 into memory — by libjpeg itself when `upright` (no EXIF rotation) and
 * the file is a 3-component baseline JPEG, else by libvips' loader and
 * autorotated — or NULL. Exposed for tests. */
VipsImage *cpu_exec_jpeg_preview(const void *buf, size_t len, bool upright);

/* The front door for an untrusted file: opens buf with the one loader its
 * magic bytes name and checks the header (nothing decoded yet) against
 * max_pixels (0: the default) and the memory budget. Returns CPU_EXEC_OK with
 * *out a new lazy image reading buf (which must outlive it), or with out NULL
 * a check only; CPU_EXEC_UNSUPPORTED_IMAGE ("unsupported_image: ...") or
 * CPU_EXEC_TOO_LARGE ("image_too_large: ...") with the reason in err. */
__attribute__((warn_unused_result)) cpu_exec_status_t
cpu_exec_open(const void *buf, size_t len, VipsAccess access, long long max_pixels, VipsImage **out,
              char *err, size_t errlen);

/* Frees output and result (the job struct itself is the caller's). */
void cpu_exec_job_free(cpu_exec_job_t *job);

/* ComfyUI's common_upscale on a packed float HWC buffer: returns a new
 * g_malloc'd w*h*c buffer, or NULL. `method` is nearest-exact, bilinear,
 * bicubic or area (lanczos goes through libvips, see ImageScale); `crop` is
 * "disabled" or "center". Exposed for tests. */
float *cpu_exec_upscale(const float *src, int W, int H, int C, int w, int h, const char *method,
                        const char *crop);

/* Decoding ahead (cpu_stream.c): AUTO (the default) decodes ahead where the
 * graph allows it and a core is idle (the pipelines in flight in this
 * process, this one included, fewer than libvips' threads): it hides the
 * statistics preview behind the main decode but costs CPU (a copy of the
 * decoded original) and memory, a loss when the cores are busy. ON ignores
 * the other pipelines, OFF never decodes ahead (tests). */
typedef enum { CPU_AHEAD_AUTO, CPU_AHEAD_ON, CPU_AHEAD_OFF } cpu_ahead_t;
void cpu_exec_set_decode_ahead(cpu_ahead_t mode);
/* Tests: N pipelines AUTO counts as running besides the real ones. */
void cpu_exec_set_busy_for_tests(int n);

#endif
