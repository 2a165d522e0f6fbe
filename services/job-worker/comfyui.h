/*
 * comfyui — the job-worker's client of a ComfyUI server (COMFYUI_URL).
 *
 *   upload the input      POST /upload/image (multipart/form-data, overwrite) as
 *                         input/ca/<token>.<ext>, token = 128 random bits in hex
 *   queue the graph       POST /prompt {prompt, client_id}; 400 → validation error;
 *                         every filename_prefix becomes "ca/<token>"
 *   follow it             GET /history/{prompt_id} every 250 ms (history polling;
 *                         the websocket is not used) until it has outputs or an
 *                         error, or the timeout passes (then POST /interrupt)
 *   fetch the result      GET /view?filename&subfolder&type
 *   clean up              the outputs the history lists and the input are
 *                         overwritten with a 1x1 PNG (POST /upload/image,
 *                         overwrite: ComfyUI cannot delete a file), then
 *                         POST /history {"delete": [id]} (and /queue when the
 *                         prompt did not finish)
 *
 * Blocking, on the caller's http_client_t (one per thread).
 */
#ifndef CA_COMFYUI_H
#define CA_COMFYUI_H

#include "http_client.h"
#include "stopwait.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stddef.h>

typedef enum {
    COMFY_OK = 0,
    COMFY_INVALID,     /* 400 from /prompt (node_errors): permanent, processing_error */
    COMFY_NODE_ERROR,  /* the prompt ran and a node failed: permanent, processing_error */
    COMFY_TIMEOUT,     /* no result within the timeout: retryable, timeout */
    COMFY_UNAVAILABLE, /* connection refused, 5xx, 429: retryable */
    COMFY_TOO_LARGE,   /* the result is over the cap */
    COMFY_PROTOCOL,    /* an answer we could not understand: retryable */
    COMFY_CANCELLED,   /* *cancel was set: the prompt was interrupted (POST /interrupt) */
} comfy_status_t;

typedef struct {
    http_client_t *http;
    const char *base_url; /* COMFYUI_URL, no trailing slash needed */
    const char *client_id;
    int timeout_s;     /* overall, from queueing to result */
    size_t max_output; /* cap on the fetched result */
    stopwait_t *stop;  /* may be NULL: stopped → give up like a timeout */
    /* may be NULL: non-zero → the prompt is interrupted at the next look at
     * /history (every 250 ms) and comfy_run returns COMFY_CANCELLED */
    const atomic_int *cancel;
    /* Called once the prompt is queued (store the id on the job). May be NULL. */
    void (*on_prompt)(void *arg, const char *prompt_id);
    void *on_prompt_arg;
} comfy_opts_t;

typedef struct {
    char prompt_id[64];
    void *output; /* malloc'd */
    size_t output_len;
    char ext[8];   /* from the output's file name, e.g. "png" */
    char mime[24]; /* from the extension */
} comfy_result_t;

/* Runs `graph` (not modified: a copy gets the uploaded input's name on every
 * LoadImage node and "ca/<token>" on every filename_prefix) with `input` as
 * the image; only the extension of `upload_name` is used (the name on ComfyUI
 * is random). A graph with a string that addresses ComfyUI's folders
 * ("x [output]", graph_string_addresses_folder) is COMFY_INVALID before
 * anything is sent. When `resume_prompt_id` is not NULL/empty and ComfyUI's
 * history still holds that prompt finished, its output is fetched instead of
 * running again. Once the prompt is done, failed or given up, its files are
 * overwritten and its history entry deleted (see above). `msg` gets a one-line
 * message a user can read on failure. */
comfy_status_t comfy_run(const comfy_opts_t *o, const cJSON *graph, const char *upload_name,
                         const void *input, size_t input_len, const char *resume_prompt_id,
                         comfy_result_t *out, char *msg, size_t msglen);
void comfy_result_free(comfy_result_t *r);

/* Builds a multipart/form-data body with one file part (`field`, `filename`,
 * `type`) and text fields (pairs, may be NULL). Returns the body (caller
 * frees), its length and the content type (caller frees). Exposed for tests. */
char *comfy_multipart_form(const char *field, const char *filename, const char *type,
                           const void *data, size_t len, const http_pair_t *fields, size_t nfields,
                           size_t *out_len, char **content_type);

const char *comfy_status_name(comfy_status_t st);

#endif
