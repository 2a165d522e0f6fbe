/*
 * cpu_exec — the built-in CPU executor on libvips: the entry points of
 * cpu_exec.h (init, run, free). See cpu_exec.h and docs/image-pipeline.md,
 * whose "Where things are" maps the other cpu_*.c files.
 *
 * Every node builds a lazy libvips pipeline that runs while the output is
 * encoded (decoding sequentially when the graph allows: cpu_stream.c). Chains
 * of per-pixel nodes (with ImageSharpen, ResizeLongEdge's horizontal pass and
 * the 8-bit conversion) run as one fused operation of our own (cpu_fused.c).
 * ImageBlur is a libvips convolution with ComfyUI's kernel on explicit
 * reflect-101 borders; only ImageScale* with ComfyUI's own resamplers,
 * ImageBlend and oversized blur radii are computed in C on a packed float
 * buffer (the formulas of ComfyUI's source: cpu_float.c). Statistics
 * (CA.AutoLevels, CA.WhiteBalance) come from a shrink-on-load preview.
 */
#define _GNU_SOURCE
#include "cpu_internal.h"
#include "cpu_nodes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const graph_registry_t *cpu_exec_registry(void)
{
    return cpu_nodes_registry();
}

static bool vips_started;

/* libvips' init opens every module in <libdir>/vips-modules-X.Y — ImageMagick,
 * PDF (poppler), OpenSlide, JPEG XL, HEIF — and so links their libraries and
 * runs their constructors: ~25 ms of CPU in each process (a `render`, every
 * `vips` command), for loaders cpu_load_block_others() blocks anyway. VIPS_INIT
 * runs with VIPSHOME (where libvips looks for its libdir) on a path that cannot
 * be a directory, so it finds none; the HEIF module, the only one the product
 * reads, is opened when the first HEIF input arrives (cpu_exec_heif_ready). */
#define NO_MODULES_HOME "/dev/null"

int cpu_exec_init(const char *argv0)
{
    if (vips_started) {
        return 0;
    }
    char *home = g_strdup(g_getenv("VIPSHOME"));
    g_setenv("VIPSHOME", NO_MODULES_HOME, TRUE);
    int rc = VIPS_INIT(argv0 != NULL ? argv0 : "job-worker");
    if (home != NULL) {
        g_setenv("VIPSHOME", home, TRUE);
    } else {
        /* what libvips' init leaves without our detour: VIPSHOME set to the
         * prefix it guesses (so a later guess never sets it from a thread) */
        g_unsetenv("VIPSHOME");
        (void)vips_guess_prefix(argv0 != NULL ? argv0 : "job-worker", "VIPSHOME");
    }
    g_free(home);
    if (rc != 0) {
        return -1;
    }
    vips_cache_set_max(0);   /* a job's images are used once */
    cpu_load_block_others(); /* untrusted input: only the loaders we support */
    vips_started = true;
    return 0;
}

void cpu_exec_set_threads(int n)
{
    vips_concurrency_set(n > 0 ? n : 1);
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
static cpu_exec_status_t run_once(const cJSON *graph, cpu_exec_job_t *job, char *err, size_t errlen,
                                  bool eager)
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
    c.sequential = !eager && cpu_graph_streams(&c);
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
    if (cpu_eval(&c, (enode_t *)output) == 0 && cpu_encode(&c, output->out[0], output) == 0) {
        if (job->keep_result) {
            g_object_ref(output->out[0]);
            job->result = output->out[0];
        }
    }
    cpu_exec_status_t st = c.fail;
    cpu_ctx_release(&c);
    cpu_exec_status_t stop = cpu_stop_reason(job);
    if (st != CPU_EXEC_OK && stop != CPU_EXEC_OK) {
        /* killed mid-pipeline (a libvips "killed" error, a C loop's NULL):
         * the reason is the stop, not what failed */
        st = stop;
        vips_error_clear();
        if (stop == CPU_EXEC_TIMEOUT) {
            snprintf(err, errlen, "stopped: over the time budget");
        } else {
            snprintf(err, errlen, "stopped: cancelled");
        }
    }
    if (st != CPU_EXEC_OK) {
        cpu_exec_job_free(job);
    }
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
    cpu_set_running_job(job);
    job->decoded_ahead = false;
    job->decoded_direct = false;
    cpu_pipelines_enter();
    cpu_exec_status_t st = run_once(graph, job, err, errlen, false);
    if (st == CPU_EXEC_ERROR) {
        /* A lazy pipeline fails while encoding when the file is corrupt (or a
         * node read its input twice): run again decoding up front, which tells
         * unsupported_image from a processing error. */
        cpu_exec_job_free(job);
        job->ext[0] = '\0';
        job->mime[0] = '\0';
        job->out_width = job->out_height = 0;
        job->decoded_ahead = false;
        job->decoded_direct = false;
        if (errlen > 0) {
            err[0] = '\0';
        }
        st = run_once(graph, job, err, errlen, true);
    }
    cpu_pipelines_leave();
    cpu_set_running_job(NULL);
    return st;
}
