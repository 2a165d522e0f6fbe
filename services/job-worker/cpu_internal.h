/*
 * cpu_internal — what the parts of the CPU executor share. Private to
 * services/job-worker/cpu_*.c; the public API is cpu_exec.h. Which file holds
 * what: docs/image-pipeline.md, "Where things are".
 *
 * A node implementation is a node_fn: it reads its inputs with
 * cpu_input_image() (which evaluates the source node first) and the cpu_num()
 * family, puts new references in out[0] (and out[1] for a MASK), and returns
 * 0, or -1 after cpu_fail()/cpu_vips_fail() recorded the reason in the
 * context (the first reason wins).
 */
#ifndef CA_CPU_INTERNAL_H
#define CA_CPU_INTERNAL_H

#include "cpu_exec.h"

#include <stdbool.h>
#include <stddef.h>
#include <vips/vips.h>

#define NIN(a) (sizeof(a) / sizeof(a[0]))

/* ---- context and graph walk (cpu_ctx.c) ---------------------------------- */

typedef struct {
    const char *id;
    const char *class_type;
    const cJSON *inputs;
    bool done;
    VipsImage *out[2];
    gulong eval_handler[2]; /* the stop watch on out[i] (cpu_watch_image), 0: none */
} enode_t;

typedef struct {
    enode_t *nodes;
    size_t n;
    cpu_exec_job_t *job;
    VipsImage *source;     /* the decoded original after autorot: metadata source */
    bool source_converted; /* CMYK → sRGB: the embedded profile no longer applies */
    bool upright;          /* the input has no EXIF rotation (LoadImage) */
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
    double pixels_made; /* the work budget, with real sizes (cpu_ctx.c) */
} ctx_t;

typedef int (*node_fn)(ctx_t *c, enode_t *n, VipsImage **out);

/* A class and its implementation; each node file has a table of them, ended
 * by {NULL, NULL}: cpu_comfy_impls (cpu_comfy_nodes.c), cpu_ca_impls
 * (cpu_ca_nodes.c). */
typedef struct {
    const char *class_type;
    node_fn fn;
} cpu_impl_t;

extern const cpu_impl_t cpu_comfy_impls[];
extern const cpu_impl_t cpu_ca_impls[];

/* Records the failure (status and message) unless one is recorded already;
 * returns -1. */
int cpu_fail(ctx_t *c, cpu_exec_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* cpu_fail(CPU_EXEC_ERROR, "what: <libvips' error buffer on one line>"). */
int cpu_vips_fail(ctx_t *c, const char *what);
enode_t *cpu_find_enode(ctx_t *c, const char *id);

/* An input literal of node n (already validated), with Python-ish coercion;
 * `def` when absent. */
double cpu_num(const enode_t *n, const char *name, double def);
int cpu_inum(const enode_t *n, const char *name, int def);
const char *cpu_str(const enode_t *n, const char *name, const char *def);
bool cpu_bool(const enode_t *n, const char *name, bool def);

/* Evaluates node n once (its outputs in n->out). Returns 0 or -1. */
int cpu_eval(ctx_t *c, enode_t *n);
/* The image an input links to (borrowed; owned by the source node). */
VipsImage *cpu_input_image(ctx_t *c, enode_t *n, const char *name);

/* ---- stopping a job mid-pipeline (cpu_ctx.c) ----------------------------- */

/* CPU_EXEC_CANCELLED when *job->cancel is set, CPU_EXEC_TIMEOUT past
 * job->deadline_ms, else CPU_EXEC_OK. */
cpu_exec_status_t cpu_stop_reason(const cpu_exec_job_t *job);
/* Sets (or, with NULL, clears) the job the calling thread runs, for
 * cpu_stop_now in the C loops that have no context. */
void cpu_set_running_job(const cpu_exec_job_t *job);
/* Whether the calling thread's job must stop (for the C loops of
 * cpu_float.c, checked once per row: they give up and return NULL). */
bool cpu_stop_now(void);
/* Watches the evaluations of `im` (and of every image libvips builds from
 * it): on each progress tick of a computation that reads it, when the job
 * must stop, the image being computed is killed (vips_image_set_kill) and
 * the computation fails at once. Returns the signal handler id. */
gulong cpu_watch_image(ctx_t *c, VipsImage *im);

/* Unrefs the non-NULL images of t[0..n) and sets them to NULL. */
void cpu_unref_all(VipsImage **t, size_t n);
/* Releases what a context holds: the nodes' outputs, source, thumb and native
 * images, and the node array (not the ctx_t itself). */
void cpu_ctx_release(ctx_t *c);

/* ---- packed float buffers, common_upscale, gaussian blur (cpu_float.c) --- */

typedef struct {
    float *px; /* g_malloc'd, HWC */
    int w, h, c;
} fbuf_t;

int cpu_to_fbuf(ctx_t *c, VipsImage *im, fbuf_t *fb);
/* Wraps (and frees) px as a new float image. */
VipsImage *cpu_from_floats(ctx_t *c, float *px, int w, int h, int bands);

static inline float cpu_clamp01f(float v)
{
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

/* common_upscale on a VipsImage; lanczos through vips_resize (see docs). */
VipsImage *cpu_upscale_image(ctx_t *c, VipsImage *in, int w, int h, const char *method,
                             const char *crop);

/* reflect-101: -1 → 1, n → n-2 (repeated for radii past the edge). */
int cpu_reflect101(int p, int len);
/* The normalised 1-D factor of ComfyUI's gaussian_kernel(k, sigma):
 * exp(-x²/2σ²) on linspace(-1, 1, k), into g[0..k-1]. */
void cpu_gaussian_1d(double *g, int k, double sigma);
/* A new g_malloc'd blurred copy of fb's pixels (HWC), reflect-101 borders;
 * NULL when out of memory. */
float *cpu_gaussian_blur(const fbuf_t *fb, int r, double sigma);

/* ---- fused point operations (cpu_fused.c, cpu_fused_gen.c) --------------- */

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

/* A horizontal lanczos3 reduction: output x = Σ wt[x·n + t] · input[start[x] + t]
 * (indices clamped to the image: edge pixels repeat). */
#define HRES_SHIFT 15
typedef struct {
    gint refs;
    int n, out_w;
    int *start;
    v4f *wt; /* out_w × n, each weight in all 4 lanes */
    /* 8-bit input: the weights × 2^HRES_SHIFT as integers (each row sums to
     * exactly 2^HRES_SHIFT), np = ⌈n/2⌉ pairs of taps per output pixel, pair
     * k as 8 int16 [w2k, w2k+1, w2k, w2k+1, w2k, w2k+1, 0, 0] (16-byte
     * aligned, for _mm_madd_epi16 on RGB pairs); NULL: the float path */
    int np;
    short *wi;
} hres_t;

typedef struct {
    stage_kind_t kind;
    bool clamp;        /* clamp the result to [0,1] */
    double a[3], b[3]; /* LINEAR: per band */
    double m[9];       /* RECOMB: row-major 3×3 */
    double p;          /* POW: exponent */
    vmask_t *mask;     /* VIGNETTE (a reference) */
} stage_t;

typedef struct fused {
    VipsImage *in;   /* a reference */
    double in_scale; /* input sample → 0..1 */
    int r;           /* kernel radius, 0 = none */
    hres_t *hr;      /* horizontal reduction first (r = 0), or NULL */
    /* r > 0: the kernel's input computed in place from this point recipe's
     * input (no float image in between), or NULL: read `in` */
    struct fused *pre;
    bool conv_clamp;
    float kern[9 * 9];
    int nst;
    stage_t st[FUSED_MAX_STAGES];
    bool out_u8; /* ComfyUI's clip(255x) truncated to uint8 (cpu_encode.c) */
    /* built: a lookup table for 8/16-bit inputs (the first nlut stages) */
    int nlut;
    float *lut; /* 3 × (max+1) */
} fused_t;

void cpu_vmask_unref(vmask_t *m);
/* Weights for a lanczos3 reduction from W to w < W pixels. */
hres_t *cpu_hres_new(int W, int w);
/* Frees a recipe (a GDestroyNotify for the image's FUSED_KEY data). */
void cpu_fused_free(void *p);
/* 3 bands, uchar, ushort or float, not coded. */
bool cpu_fused_input_ok(const VipsImage *in);
/* A new recipe: `im` (3-band uchar/ushort/float) × in_scale, no stages. */
fused_t *cpu_fused_new(VipsImage *im, double in_scale);
fused_t *cpu_fused_copy(const fused_t *old);
/* A copy of `im`'s recipe, or a new one reading `im`; NULL when im cannot be
 * fused (band count, format). */
fused_t *cpu_fused_extend(VipsImage *im);
/* Appends `s` to im's recipe: out is the fused image; returns 1 when im
 * cannot be fused (the caller uses libvips operations). */
int cpu_fused_append(ctx_t *c, VipsImage *im, const stage_t *s, VipsImage **out, const char *what);
/* Builds the operation for `fu` (taken over, freed on failure). */
VipsImage *cpu_fused_build(fused_t *fu);

/* Clamping to [0,1] with streaming ops (see cpu_fused.c): the scale, the
 * clamped per-band linear operation (fused when it can be) and the clamp of
 * an input already scaled by CLAMP_SCALE. */
#define CLAMP_SCALE 4294967295.0
int cpu_linear_clamped(ctx_t *c, VipsImage *in, const double *a, const double *b, int n,
                       VipsImage **out, const char *what);
int cpu_clamp01_image(VipsImage *in, VipsImage **out);

/* ---- the input front door (cpu_load.c; the rest is in cpu_exec.h) ------- */

/* vips_block_untrusted_set(TRUE), then blocks every VipsForeignLoad but the
 * loaders of cpu_exec_format_t (called once by cpu_exec_init). */
void cpu_load_block_others(void);

/* ---- streaming and previews (cpu_stream.c) ------------------------------- */

/* Whether the whole graph can decode its input sequentially. */
bool cpu_graph_streams(ctx_t *c);
/* The image node n's statistics are computed on (a new reference). */
int cpu_stats_image(ctx_t *c, enode_t *n, VipsImage *full, VipsImage **out);
/* The decoded original `in` decoded ahead by a thread into memory while the
 * statistics preview is computed (a new image), or NULL when not worth it
 * (not a streaming JPEG graph with preview statistics, too large, no memory).
 * `upright`: `in` is the file's pixels as stored (no EXIF rotation), so an
 * RGB baseline JPEG can be decoded by libjpeg straight into memory. */
VipsImage *cpu_decode_ahead(ctx_t *c, VipsImage *in, bool upright);
/* cpu_exec_run's count of pipelines in flight (decode ahead's AUTO rule). */
void cpu_pipelines_enter(void);
void cpu_pipelines_leave(void);

/* ---- encoding (cpu_encode.c) --------------------------------------------- */

/* Encodes `im` as out_node asks (CA.Export's options) into c->job. */
int cpu_encode(ctx_t *c, VipsImage *im, const enode_t *out_node);

#endif
