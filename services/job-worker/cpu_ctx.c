/*
 * cpu_ctx — the CPU executor's context and graph walk: failure recording,
 * node input coercion (cpu_num, cpu_str, ...), links to other nodes'
 * outputs, and cpu_eval, which runs a node once through the class tables of
 * cpu_comfy_nodes.c and cpu_ca_nodes.c; releasing a context. Types in
 * cpu_internal.h; see docs/image-pipeline.md.
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include "cpu_nodes.h"
#include "now.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cpu_fail(ctx_t *c, cpu_exec_status_t st, const char *fmt, ...)
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

int cpu_vips_fail(ctx_t *c, const char *what)
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
    return cpu_fail(c, CPU_EXEC_ERROR, "%s: %s", what, buf);
}

enode_t *cpu_find_enode(ctx_t *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->nodes[i].id, id) == 0) {
            return &c->nodes[i];
        }
    }
    return NULL;
}

/* Python-ish coercion of an already validated literal. */
double cpu_num(const enode_t *n, const char *name, double def)
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

int cpu_inum(const enode_t *n, const char *name, int def)
{
    return (int)trunc(cpu_num(n, name, def));
}

const char *cpu_str(const enode_t *n, const char *name, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(n->inputs, name);
    return cJSON_IsString(v) ? v->valuestring : def;
}

bool cpu_bool(const enode_t *n, const char *name, bool def)
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

/* The image an input links to (borrowed; owned by the source node). */
VipsImage *cpu_input_image(ctx_t *c, enode_t *n, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(n->inputs, name);
    if (!graph_is_link(v)) {
        cpu_fail(c, CPU_EXEC_BAD_GRAPH, "node %s: input %s is not a link", n->id, name);
        return NULL;
    }
    enode_t *src = cpu_find_enode(c, cJSON_GetArrayItem(v, 0)->valuestring);
    double didx = cJSON_GetArrayItem(v, 1)->valuedouble; /* range first, then int */
    int idx = didx >= 0 && didx <= 1 ? (int)didx : -1;
    if (src == NULL || idx < 0 || cpu_eval(c, src) != 0) {
        return NULL;
    }
    if (src->out[idx] == NULL) {
        cpu_fail(c, CPU_EXEC_BAD_GRAPH, "node %s: input %s has no value", n->id, name);
    }
    return src->out[idx];
}

cpu_exec_status_t cpu_stop_reason(const cpu_exec_job_t *job)
{
    if (job == NULL) {
        return CPU_EXEC_OK;
    }
    if (job->cancel != NULL && atomic_load(job->cancel) != 0) {
        return CPU_EXEC_CANCELLED;
    }
    if (job->deadline_ms > 0 && now_mono_ms() >= job->deadline_ms) {
        return CPU_EXEC_TIMEOUT;
    }
    return CPU_EXEC_OK;
}

static __thread const cpu_exec_job_t *running_job;

void cpu_set_running_job(const cpu_exec_job_t *job)
{
    running_job = job;
}

bool cpu_stop_now(void)
{
    return cpu_stop_reason(running_job) != CPU_EXEC_OK;
}

/* The "eval" signal of libvips, emitted (on a libvips worker thread) on the
 * image a computation's progress is reported on; progress->im is the image
 * being computed, the one whose kill flag the sink checks after each tick. */
static void on_eval(VipsImage *image, VipsProgress *progress, void *arg)
{
    (void)image;
    const cpu_exec_job_t *job = arg;
    if (cpu_stop_reason(job) != CPU_EXEC_OK && progress != NULL && progress->im != NULL) {
        vips_image_set_kill(progress->im, TRUE);
    }
}

gulong cpu_watch_image(ctx_t *c, VipsImage *im)
{
    if (c->job->cancel == NULL && c->job->deadline_ms <= 0) {
        return 0;
    }
    /* Images made from im carry im as their progress_signal, so every
     * computation downstream reports its ticks here. */
    vips_image_set_progress(im, TRUE);
    return g_signal_connect(im, "eval", G_CALLBACK(on_eval), c->job);
}

/* Resizes that keep the whole frame: the identity on a preview. */
static bool preview_identity(const char *class_type)
{
    static const char *const identity[] = {
        "ImageScaleBy", "ImageScaleToTotalPixels", "ImageScaleToMaxDimension", "CA.ResizeLongEdge",
        NULL,
    };
    for (size_t i = 0; identity[i] != NULL; i++) {
        if (strcmp(identity[i], class_type) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * The work budget of graph.h with the real sizes (the validator took a photo
 * to be 6000×4000): before node n runs, the size of the image it will make,
 * from the image on its first IMAGE input (cpu_nodes' size function); a loaded
 * image counts at its real size once loaded. Over GRAPH_MAX_IMAGE_PIXELS for
 * one image or GRAPH_MAX_WORK_PIXELS in all: the job fails.
 */
static int budget_add(ctx_t *c, const enode_t *n, graph_size_t size)
{
    double pixels = size.width * size.height * size.batch;
    c->pixels_made += pixels;
    if (pixels > GRAPH_MAX_IMAGE_PIXELS || c->pixels_made > GRAPH_MAX_WORK_PIXELS) {
        return cpu_fail(c, CPU_EXEC_ERROR,
                        "node %s (%s): over the work budget: %.0fx%.0f pixels, %.0f made in all "
                        "(at most %.0f an image, %.0f in all)",
                        n->id, n->class_type, size.width, size.height, c->pixels_made,
                        GRAPH_MAX_IMAGE_PIXELS, GRAPH_MAX_WORK_PIXELS);
    }
    return 0;
}

static int budget_before(ctx_t *c, enode_t *n)
{
    const graph_registry_t *reg = cpu_nodes_registry();
    const graph_class_t *cls = graph_registry_find(reg, n->class_type);
    if (cls == NULL || reg->size == NULL || strcmp(n->class_type, "LoadImage") == 0) {
        return 0;
    }
    graph_size_t in_size = {0, 0, 1};
    const graph_size_t *in = NULL;
    for (size_t i = 0; i < cls->ninputs; i++) {
        if (cls->inputs[i].type != GRAPH_T_IMAGE) {
            continue;
        }
        if (cJSON_GetObjectItemCaseSensitive(n->inputs, cls->inputs[i].name) != NULL) {
            VipsImage *im = cpu_input_image(c, n, cls->inputs[i].name);
            if (im == NULL) {
                return -1;
            }
            in_size = (graph_size_t){im->Xsize, im->Ysize, 1};
            in = &in_size;
        }
        break;
    }
    graph_size_t out = {0, 0, 1};
    if (!reg->size(n->class_type, n->inputs, in, &out)) {
        return 0;
    }
    return budget_add(c, n, out);
}

int cpu_eval(ctx_t *c, enode_t *n)
{
    if (n->done) {
        return n->out[0] != NULL || n->out[1] != NULL ? 0 : -1;
    }
    n->done = true; /* the validator rejected cycles; this stops any recursion */
    if (c->preview && preview_identity(n->class_type)) {
        VipsImage *im = cpu_input_image(c, n, "image");
        if (im == NULL) {
            return -1;
        }
        g_object_ref(im);
        n->out[0] = im;
        return 0;
    }
    cpu_exec_status_t stop = cpu_stop_reason(c->job);
    if (stop != CPU_EXEC_OK) {
        return cpu_fail(c, stop, "stopped before node %s", n->id);
    }
    const cpu_impl_t *tables[] = {cpu_comfy_impls, cpu_ca_impls};
    for (size_t t = 0; t < NIN(tables); t++) {
        for (const cpu_impl_t *impl = tables[t]; impl->class_type != NULL; impl++) {
            if (strcmp(impl->class_type, n->class_type) != 0) {
                continue;
            }
            if (budget_before(c, n) != 0) {
                return -1;
            }
            int rc = impl->fn(c, n, n->out);
            if (rc == 0 && strcmp(n->class_type, "LoadImage") == 0 && n->out[0] != NULL) {
                rc = budget_add(c, n, (graph_size_t){n->out[0]->Xsize, n->out[0]->Ysize, 1});
            }
            for (size_t k = 0; rc == 0 && k < NIN(n->out); k++) {
                if (n->out[k] != NULL) {
                    n->eval_handler[k] = cpu_watch_image(c, n->out[k]);
                }
            }
            if (rc != 0 && c->fail == CPU_EXEC_OK) {
                cpu_fail(c, CPU_EXEC_ERROR, "node %s (%s) failed", n->id, n->class_type);
            }
            return rc;
        }
    }
    return cpu_fail(c, CPU_EXEC_BAD_GRAPH, "node %s: class %s is unknown to the CPU executor",
                    n->id, n->class_type);
}

void cpu_unref_all(VipsImage **t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (t[i] != NULL) {
            g_object_unref(t[i]);
            t[i] = NULL;
        }
    }
}

void cpu_ctx_release(ctx_t *c)
{
    for (size_t i = 0; i < c->n && c->nodes != NULL; i++) {
        enode_t *n = &c->nodes[i];
        for (size_t k = 0; k < NIN(n->out); k++) {
            if (n->eval_handler[k] != 0 && n->out[k] != NULL) {
                g_signal_handler_disconnect(n->out[k], n->eval_handler[k]);
            }
            n->eval_handler[k] = 0;
        }
        cpu_unref_all(n->out, NIN(n->out));
    }
    VipsImage *held[] = {c->source, c->thumb, c->native};
    cpu_unref_all(held, NIN(held));
    c->source = NULL;
    c->thumb = NULL;
    c->native = NULL;
    free(c->nodes);
    c->nodes = NULL;
    c->n = 0;
}
