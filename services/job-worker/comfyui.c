/*
 * comfyui — ComfyUI client of the job-worker (see comfyui.h).
 */
#include "comfyui.h"

#include "crypto.h"
#include "graph.h"
#include "log.h"
#include "now.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define COMFY_POLL_MS 250
#define COMFY_JSON_MAX (4u * 1024u * 1024u)

/* One job's files on ComfyUI: the input is input/ca/<token>.<ext>, the outputs
 * output/ca/<token>_NNNNN_.png; the token is 128 random bits in hex. */
#define COMFY_SUBFOLDER "ca"
#define COMFY_TOKEN_HEX 32

/* A 1x1 grey PNG: after a job, its input and outputs on ComfyUI are
 * overwritten with it (ComfyUI has no route that deletes a file). */
static const unsigned char PLACEHOLDER_PNG[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00,
    0x00, 0x3a, 0x7e, 0x9b, 0x55, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78,
    0xda, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0xe5, 0x27, 0xde, 0xfc, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

const char *comfy_status_name(comfy_status_t st)
{
    switch (st) {
    case COMFY_OK:
        return "ok";
    case COMFY_INVALID:
        return "invalid";
    case COMFY_NODE_ERROR:
        return "node_error";
    case COMFY_TIMEOUT:
        return "timeout";
    case COMFY_UNAVAILABLE:
        return "unavailable";
    case COMFY_TOO_LARGE:
        return "too_large";
    case COMFY_CANCELLED:
        return "cancelled";
    case COMFY_PROTOCOL:
        return "protocol";
    }
    return "?";
}

void comfy_result_free(comfy_result_t *r)
{
    if (r == NULL) {
        return;
    }
    free(r->output);
    r->output = NULL;
    r->output_len = 0;
}

/* Waits ms before the next look at /history, less when o->stop is stopped. */
static void poll_wait(const comfy_opts_t *o, int ms)
{
    if (o->stop != NULL) {
        (void)stopwait_sleep(o->stop, ms);
        return;
    }
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Strips CR, LF and quotes so a value is safe inside a part header. */
static void header_safe(char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\r' || *s == '\n' || *s == '"') {
            *s = '_';
        }
    }
}

char *comfy_multipart_form(const char *field, const char *filename, const char *type,
                           const void *data, size_t len, const http_pair_t *fields, size_t nfields,
                           size_t *out_len, char **content_type)
{
    unsigned char rnd[12];
    char boundary[64];
    char hex[25];
    if (crypto_random(rnd, sizeof(rnd)) != 0) {
        return NULL;
    }
    crypto_hex(rnd, sizeof(rnd), hex);
    snprintf(boundary, sizeof(boundary), "----ca-comfy-%s", hex);

    char fname[256];
    snprintf(fname, sizeof(fname), "%s", filename);
    header_safe(fname);

    size_t cap = len + 1024;
    for (size_t i = 0; i < nfields; i++) {
        cap += strlen(fields[i].name) + strlen(fields[i].value) + 256;
    }
    char *body = malloc(cap);
    if (body == NULL) {
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < nfields; i++) {
        n += (size_t)snprintf(body + n, cap - n,
                              "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n",
                              boundary, fields[i].name, fields[i].value);
    }
    n += (size_t)snprintf(body + n, cap - n,
                          "--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                          "Content-Type: %s\r\n\r\n",
                          boundary, field, fname, type);
    memcpy(body + n, data, len);
    n += len;
    n += (size_t)snprintf(body + n, cap - n, "\r\n--%s--\r\n", boundary);

    size_t ctlen = strlen(boundary) + 64;
    *content_type = malloc(ctlen);
    if (*content_type == NULL) {
        free(body);
        return NULL;
    }
    snprintf(*content_type, ctlen, "multipart/form-data; boundary=%s", boundary);
    *out_len = n;
    return body;
}

static comfy_status_t transport_status(http_result_t rc, const http_response_t *resp, char *msg,
                                       size_t msglen, const char *what)
{
    if (rc != HTTP_RESULT_OK) {
        snprintf(msg, msglen, "The image server could not be reached (%s: %s).", what, resp->error);
        return rc == HTTP_ERR_TOO_LARGE
                   ? COMFY_TOO_LARGE
                   : (rc == HTTP_ERR_TIMEOUT ? COMFY_TIMEOUT : COMFY_UNAVAILABLE);
    }
    if (resp->status >= 500 || resp->status == 429 || resp->status == 408) {
        snprintf(msg, msglen, "The image server is unavailable (%s: HTTP %ld).", what,
                 resp->status);
        return COMFY_UNAVAILABLE;
    }
    return COMFY_OK;
}

static http_result_t do_get(const comfy_opts_t *o, const char *path, size_t max_body,
                            http_response_t *resp)
{
    char url[2048];
    size_t blen = strlen(o->base_url);
    while (blen > 0 && o->base_url[blen - 1] == '/') {
        blen--;
    }
    snprintf(url, sizeof(url), "%.*s%s", (int)blen, o->base_url, path);
    http_opts_t opts = {.timeout_ms = 30000,
                        .max_body = max_body,
                        .max_retries = 2,
                        .base_backoff_ms = 200,
                        .max_backoff_ms = 2000};
    http_request_t req = {.method = "GET", .url = url, .opts = &opts};
    return http_client_do(o->http, &req, resp);
}

static http_result_t do_post(const comfy_opts_t *o, const char *path, const void *body, size_t len,
                             const char *ctype, int retries, http_response_t *resp)
{
    char url[2048];
    size_t blen = strlen(o->base_url);
    while (blen > 0 && o->base_url[blen - 1] == '/') {
        blen--;
    }
    snprintf(url, sizeof(url), "%.*s%s", (int)blen, o->base_url, path);
    http_opts_t opts = {.timeout_ms = 60000,
                        .max_body = COMFY_JSON_MAX,
                        .max_retries = retries,
                        .base_backoff_ms = 200,
                        .max_backoff_ms = 2000};
    http_request_t req = {.method = "POST",
                          .url = url,
                          .body = body,
                          .body_len = len,
                          .content_type = ctype,
                          .opts = &opts};
    return http_client_do(o->http, &req, resp);
}

static const char *ext_mime(const char *ext)
{
    if (strcasecmp(ext, "png") == 0) {
        return "image/png";
    }
    if (strcasecmp(ext, "jpg") == 0 || strcasecmp(ext, "jpeg") == 0) {
        return "image/jpeg";
    }
    if (strcasecmp(ext, "webp") == 0) {
        return "image/webp";
    }
    if (strcasecmp(ext, "tif") == 0 || strcasecmp(ext, "tiff") == 0) {
        return "image/tiff";
    }
    return "application/octet-stream";
}

/* The first image of the history entry's outputs (output type preferred). */
static const cJSON *first_output_image(const cJSON *entry)
{
    const cJSON *outputs = cJSON_GetObjectItemCaseSensitive(entry, "outputs");
    const cJSON *fallback = NULL;
    const cJSON *node;
    cJSON_ArrayForEach(node, outputs)
    {
        const cJSON *images = cJSON_GetObjectItemCaseSensitive(node, "images");
        const cJSON *img;
        cJSON_ArrayForEach(img, images)
        {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(img, "type");
            if (cJSON_IsString(type) && strcmp(type->valuestring, "output") == 0) {
                return img;
            }
            if (fallback == NULL) {
                fallback = img;
            }
        }
    }
    return fallback;
}

/* "KSampler (node 3) failed: CUDA out of memory" from the execution_error message. */
static void execution_error_message(const cJSON *entry, char *msg, size_t msglen)
{
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(entry, "status");
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(status, "messages");
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        const cJSON *kind = cJSON_GetArrayItem(m, 0);
        const cJSON *data = cJSON_GetArrayItem(m, 1);
        if (!cJSON_IsString(kind)) {
            continue;
        }
        if (strcmp(kind->valuestring, "execution_error") == 0) {
            const cJSON *nt = cJSON_GetObjectItemCaseSensitive(data, "node_type");
            const cJSON *nid = cJSON_GetObjectItemCaseSensitive(data, "node_id");
            const cJSON *em = cJSON_GetObjectItemCaseSensitive(data, "exception_message");
            const cJSON *et = cJSON_GetObjectItemCaseSensitive(data, "exception_type");
            snprintf(msg, msglen, "The preset's step %s (node %s) failed: %s%s%s",
                     cJSON_IsString(nt) ? nt->valuestring : "?",
                     cJSON_IsString(nid) ? nid->valuestring : "?",
                     cJSON_IsString(et) ? et->valuestring : "", cJSON_IsString(et) ? ": " : "",
                     cJSON_IsString(em) ? em->valuestring : "unknown error");
            return;
        }
        if (strcmp(kind->valuestring, "execution_interrupted") == 0) {
            snprintf(msg, msglen, "Processing was interrupted on the image server.");
            return;
        }
    }
    snprintf(msg, msglen, "The image server reported an error for this preset.");
}

static comfy_status_t fetch_output(const comfy_opts_t *o, const cJSON *entry, comfy_result_t *out,
                                   char *msg, size_t msglen)
{
    const cJSON *img = first_output_image(entry);
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(img, "filename");
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(img, "subfolder");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(img, "type");
    if (!cJSON_IsString(fn)) {
        snprintf(msg, msglen, "The preset produced no image (no SaveImage output).");
        return COMFY_NODE_ERROR;
    }
    char *efn = http_url_escape(fn->valuestring);
    char *esub = http_url_escape(cJSON_IsString(sub) ? sub->valuestring : "");
    char *etype = http_url_escape(cJSON_IsString(type) ? type->valuestring : "output");
    comfy_status_t st = COMFY_PROTOCOL;
    if (efn == NULL || esub == NULL || etype == NULL) {
        snprintf(msg, msglen, "out of memory");
        goto out;
    }
    char path[1024];
    snprintf(path, sizeof(path), "/view?filename=%s&subfolder=%s&type=%s", efn, esub, etype);
    http_response_t resp = {0};
    http_result_t rc = do_get(o, path, o->max_output, &resp);
    st = transport_status(rc, &resp, msg, msglen, "view");
    if (st == COMFY_OK && resp.status != 200) {
        snprintf(msg, msglen, "The image server lost the result (HTTP %ld).", resp.status);
        st = COMFY_PROTOCOL;
    }
    if (st == COMFY_OK) {
        out->output = resp.body;
        out->output_len = resp.body_len;
        resp.body = NULL;
        const char *dot = strrchr(fn->valuestring, '.');
        snprintf(out->ext, sizeof(out->ext), "%s", dot != NULL ? dot + 1 : "png");
        for (char *p = out->ext; *p != '\0'; p++) {
            if (*p >= 'A' && *p <= 'Z') {
                *p = (char)(*p - 'A' + 'a');
            }
        }
        snprintf(out->mime, sizeof(out->mime), "%s", ext_mime(out->ext));
    }
    http_response_free(&resp);
out:
    free(efn);
    free(esub);
    free(etype);
    return st;
}

/* 1: finished (entry set), 0: not yet, -1: error (status in *st). */
static int history_get(const comfy_opts_t *o, const char *prompt_id, cJSON **entry,
                       comfy_status_t *st, char *msg, size_t msglen)
{
    char path[256];
    char *eid = http_url_escape(prompt_id);
    if (eid == NULL) {
        *st = COMFY_PROTOCOL;
        return -1;
    }
    snprintf(path, sizeof(path), "/history/%s", eid);
    free(eid);
    http_response_t resp = {0};
    http_result_t rc = do_get(o, path, COMFY_JSON_MAX, &resp);
    *st = transport_status(rc, &resp, msg, msglen, "history");
    int result = -1;
    if (*st == COMFY_OK) {
        if (resp.status != 200) {
            snprintf(msg, msglen, "The image server answered HTTP %ld to a status check.",
                     resp.status);
            *st = COMFY_PROTOCOL;
        } else {
            cJSON *doc = cJSON_ParseWithLength(resp.body, resp.body_len);
            cJSON *e = cJSON_DetachItemFromObjectCaseSensitive(doc, prompt_id);
            cJSON_Delete(doc);
            if (e != NULL) {
                *entry = e;
                result = 1;
            } else {
                result = 0;
            }
        }
    }
    http_response_free(&resp);
    return result;
}

static comfy_status_t finished(const comfy_opts_t *o, cJSON *entry, comfy_result_t *out, char *msg,
                               size_t msglen)
{
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(entry, "status");
    const cJSON *str = cJSON_GetObjectItemCaseSensitive(status, "status_str");
    if (cJSON_IsString(str) && strcmp(str->valuestring, "error") == 0) {
        execution_error_message(entry, msg, msglen);
        return COMFY_NODE_ERROR;
    }
    return fetch_output(o, entry, out, msg, msglen);
}

static void interrupt(const comfy_opts_t *o, const char *prompt_id)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "prompt_id", prompt_id);
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    if (s == NULL) {
        return;
    }
    http_response_t resp = {0};
    (void)do_post(o, "/interrupt", s, strlen(s), "application/json", 0, &resp);
    http_response_free(&resp);
    free(s);
}

/* Whether a string literal of the graph addresses ComfyUI's folders ("x [output]"):
 * refused for every preset (msg says where). */
static bool graph_addresses_folder(const cJSON *graph, char *msg, size_t msglen)
{
    const cJSON *node;
    cJSON_ArrayForEach(node, graph)
    {
        const cJSON *val;
        cJSON_ArrayForEach(val, cJSON_GetObjectItemCaseSensitive(node, "inputs"))
        {
            if (cJSON_IsString(val) && graph_string_addresses_folder(val->valuestring)) {
                snprintf(msg, msglen,
                         "The preset is not valid: input %.64s of node %.32s names a file of the "
                         "image server.",
                         val->string, node->string);
                return true;
            }
        }
    }
    return false;
}

/* The extension of `name` for the upload (1..5 letters or digits), else "png". */
static void upload_ext(const char *name, char *ext, size_t extlen)
{
    const char *dot = name != NULL ? strrchr(name, '.') : NULL;
    size_t n = dot != NULL ? strlen(dot + 1) : 0;
    bool ok = n >= 1 && n <= 5 && n < extlen;
    for (size_t i = 0; ok && i < n; i++) {
        char c = dot[1 + i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    }
    snprintf(ext, extlen, "%s", ok ? dot + 1 : "png");
}

/* Uploads `data` as type/subfolder/name with overwrite; returns the HTTP
 * status (0 on a transport error), the answer in *resp (caller frees). */
static long upload_file(const comfy_opts_t *o, const char *type, const char *subfolder,
                        const char *name, const void *data, size_t len, http_response_t *resp,
                        http_result_t *rc_out)
{
    const char *dot = strrchr(name, '.');
    http_pair_t fields[] = {{"type", type}, {"subfolder", subfolder}, {"overwrite", "true"}};
    size_t blen = 0;
    char *ctype = NULL;
    char *body = comfy_multipart_form("image", name, ext_mime(dot != NULL ? dot + 1 : ""), data,
                                      len, fields, 3, &blen, &ctype);
    *rc_out = HTTP_ERR_INTERNAL;
    if (body == NULL) {
        return 0;
    }
    *rc_out = do_post(o, "/upload/image", body, blen, ctype, 2, resp);
    free(body);
    free(ctype);
    return *rc_out == HTTP_RESULT_OK ? resp->status : 0;
}

/* Overwrites a file of ours with the placeholder (best effort: logged). */
static void overwrite(const comfy_opts_t *o, const char *type, const char *subfolder,
                      const char *name)
{
    if (strchr(name, '/') != NULL || strstr(name, "..") != NULL ||
        strstr(subfolder, "..") != NULL || subfolder[0] == '/') {
        return;
    }
    http_response_t resp = {0};
    http_result_t rc;
    long status =
        upload_file(o, type, subfolder, name, PLACEHOLDER_PNG, sizeof(PLACEHOLDER_PNG), &resp, &rc);
    if (status != 200) {
        log_warn("comfyui: could not overwrite %s/%s/%s after the job (HTTP %ld)", type, subfolder,
                 name, status);
    }
    http_response_free(&resp);
}

/* Whether `ref` ("ca/<token>.<ext>") is one of our uploads. */
static bool our_upload(const char *ref)
{
    size_t pre = strlen(COMFY_SUBFOLDER "/");
    if (strncmp(ref, COMFY_SUBFOLDER "/", pre) != 0 || strlen(ref) < pre + COMFY_TOKEN_HEX + 2) {
        return false;
    }
    for (size_t i = 0; i < COMFY_TOKEN_HEX; i++) {
        char c = ref[pre + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return ref[pre + COMFY_TOKEN_HEX] == '.' && strchr(ref + pre, '/') == NULL;
}

static void post_json(const comfy_opts_t *o, const char *path, const char *key,
                      const char *prompt_id)
{
    cJSON *b = cJSON_CreateObject();
    cJSON *ids = cJSON_AddArrayToObject(b, key);
    cJSON_AddItemToArray(ids, cJSON_CreateString(prompt_id));
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    if (s == NULL) {
        return;
    }
    http_response_t resp = {0};
    http_result_t rc = do_post(o, path, s, strlen(s), "application/json", 1, &resp);
    if (rc != HTTP_RESULT_OK || resp.status != 200) {
        log_warn("comfyui: POST %s {%s} for prompt %s failed", path, key, prompt_id);
    }
    http_response_free(&resp);
    free(s);
}

/*
 * After a job (done, failed, or given up): what ComfyUI keeps of it goes.
 * ComfyUI has no route that deletes a file, so the images the prompt's
 * history lists (its outputs) and its uploaded input (`input_ref`, or the
 * LoadImage inputs of the stored prompt that are ours) are overwritten with a
 * 1x1 PNG under their unguessable names; the prompt leaves the queue (when
 * still pending) and the history. The files themselves stay until the
 * operator's sweep of ComfyUI's input/ and output/ (docs/job-worker.md).
 */
static void cleanup(const comfy_opts_t *o, const char *prompt_id, const cJSON *entry,
                    const char *input_ref)
{
    const cJSON *node;
    cJSON_ArrayForEach(node, cJSON_GetObjectItemCaseSensitive(entry, "outputs"))
    {
        const cJSON *img;
        cJSON_ArrayForEach(img, cJSON_GetObjectItemCaseSensitive(node, "images"))
        {
            const char *fn =
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(img, "filename"));
            const char *sub =
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(img, "subfolder"));
            const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(img, "type"));
            if (fn != NULL && type != NULL &&
                (strcmp(type, "output") == 0 || strcmp(type, "temp") == 0)) {
                overwrite(o, type, sub != NULL ? sub : "", fn);
            }
        }
    }
    if (input_ref != NULL && our_upload(input_ref)) {
        overwrite(o, "input", COMFY_SUBFOLDER, input_ref + strlen(COMFY_SUBFOLDER "/"));
    } else if (input_ref == NULL) {
        /* history's "prompt": [number, id, graph, extra, outputs] */
        const cJSON *graph =
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(entry, "prompt"), 2);
        cJSON_ArrayForEach(node, graph)
        {
            const char *ref = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(node, "inputs"), "image"));
            if (ref != NULL && our_upload(ref)) {
                overwrite(o, "input", COMFY_SUBFOLDER, ref + strlen(COMFY_SUBFOLDER "/"));
                break;
            }
        }
    }
    if (prompt_id != NULL && prompt_id[0] != '\0') {
        if (entry == NULL) { /* not finished: may still be pending */
            post_json(o, "/queue", "delete", prompt_id);
        }
        post_json(o, "/history", "delete", prompt_id);
    }
}

comfy_status_t comfy_run(const comfy_opts_t *o, const cJSON *graph, const char *upload_name,
                         const void *input, size_t input_len, const char *resume_prompt_id,
                         comfy_result_t *out, char *msg, size_t msglen)
{
    comfy_status_t st = COMFY_PROTOCOL;
    cJSON *entry = NULL;
    cJSON *prompt = NULL;
    cJSON *upload = NULL;
    char *body = NULL;
    char token[COMFY_TOKEN_HEX + 1] = "";
    char image_ref[512] = "";
    http_response_t resp = {0};
    int64_t deadline = now_mono_ms() + (int64_t)o->timeout_s * 1000;
    memset(out, 0, sizeof(*out));
    snprintf(msg, msglen, "unknown error");

    /* A retry after a crash: the earlier prompt may have finished. */
    if (resume_prompt_id != NULL && resume_prompt_id[0] != '\0') {
        int r = history_get(o, resume_prompt_id, &entry, &st, msg, msglen);
        if (r == 1) {
            snprintf(out->prompt_id, sizeof(out->prompt_id), "%s", resume_prompt_id);
            st = finished(o, entry, out, msg, msglen);
            cleanup(o, resume_prompt_id, entry, NULL);
            if (st == COMFY_OK) {
                log_info("comfyui: reused the result of prompt %s", resume_prompt_id);
                goto out;
            }
            cJSON_Delete(entry);
            entry = NULL;
        }
    }

    /* No preset may read ComfyUI's other files ("x [output]"): stored user
     * presets from before graph_validate_user included. */
    if (graph_addresses_folder(graph, msg, msglen)) {
        st = COMFY_INVALID;
        goto out;
    }

    /* 1. upload the input under a fresh unguessable name, never the job's */
    unsigned char rnd[COMFY_TOKEN_HEX / 2];
    if (crypto_random(rnd, sizeof(rnd)) != 0) {
        snprintf(msg, msglen, "no randomness for the upload name");
        st = COMFY_PROTOCOL;
        goto out;
    }
    crypto_hex(rnd, sizeof(rnd), token);
    char ext[8];
    upload_ext(upload_name, ext, sizeof(ext));
    char name[COMFY_TOKEN_HEX + 16];
    snprintf(name, sizeof(name), "%s.%s", token, ext);
    http_result_t rc;
    long ustatus = upload_file(o, "input", COMFY_SUBFOLDER, name, input, input_len, &resp, &rc);
    st = transport_status(rc, &resp, msg, msglen, "upload");
    if (st != COMFY_OK) {
        goto out;
    }
    if (ustatus != 200) {
        snprintf(msg, msglen, "The image server refused the input image (HTTP %ld).", ustatus);
        st = ustatus == 413 ? COMFY_TOO_LARGE : COMFY_PROTOCOL;
        goto out;
    }
    upload = cJSON_ParseWithLength(resp.body, resp.body_len);
    const cJSON *uname = cJSON_GetObjectItemCaseSensitive(upload, "name");
    const cJSON *usub = cJSON_GetObjectItemCaseSensitive(upload, "subfolder");
    if (!cJSON_IsString(uname)) {
        snprintf(msg, msglen, "The image server's upload answer had no name.");
        st = COMFY_PROTOCOL;
        goto out;
    }
    if (cJSON_IsString(usub) && usub->valuestring[0] != '\0') {
        snprintf(image_ref, sizeof(image_ref), "%s/%s", usub->valuestring, uname->valuestring);
    } else {
        snprintf(image_ref, sizeof(image_ref), "%s", uname->valuestring);
    }
    http_response_free(&resp);
    memset(&resp, 0, sizeof(resp));

    /* 2. queue the prompt with the input on every LoadImage and our own
     * unguessable prefix on every filename_prefix */
    char prefix[COMFY_TOKEN_HEX + 16];
    snprintf(prefix, sizeof(prefix), COMFY_SUBFOLDER "/%s", token);
    prompt = cJSON_CreateObject();
    cJSON *copy = cJSON_Duplicate(graph, 1);
    if (prompt == NULL || copy == NULL) {
        cJSON_Delete(copy);
        snprintf(msg, msglen, "out of memory");
        st = COMFY_PROTOCOL;
        goto out;
    }
    cJSON *node;
    cJSON_ArrayForEach(node, copy)
    {
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(node, "class_type");
        cJSON *inputs = cJSON_GetObjectItemCaseSensitive(node, "inputs");
        if (cJSON_IsString(ct) && strcmp(ct->valuestring, "LoadImage") == 0 &&
            cJSON_IsObject(inputs)) {
            cJSON_DeleteItemFromObjectCaseSensitive(inputs, "image");
            cJSON_AddStringToObject(inputs, "image", image_ref);
        }
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(inputs, "filename_prefix"))) {
            cJSON_DeleteItemFromObjectCaseSensitive(inputs, "filename_prefix");
            cJSON_AddStringToObject(inputs, "filename_prefix", prefix);
        }
    }
    cJSON_AddItemToObject(prompt, "prompt", copy);
    cJSON_AddStringToObject(prompt, "client_id", o->client_id != NULL ? o->client_id : "ca");
    body = cJSON_PrintUnformatted(prompt);
    if (body == NULL) {
        snprintf(msg, msglen, "out of memory");
        st = COMFY_PROTOCOL;
        goto out;
    }
    /* No transport retries: a repeat could queue the prompt twice. */
    rc = do_post(o, "/prompt", body, strlen(body), "application/json", 0, &resp);
    st = transport_status(rc, &resp, msg, msglen, "prompt");
    if (st != COMFY_OK) {
        goto out;
    }
    cJSON *answer = cJSON_ParseWithLength(resp.body, resp.body_len);
    if (resp.status == 400) {
        char *summary = answer != NULL ? graph_error_summary(answer) : NULL;
        snprintf(msg, msglen, "The preset is not valid: %s",
                 summary != NULL ? summary : "the image server refused it");
        free(summary);
        cJSON_Delete(answer);
        cleanup(o, NULL, NULL, image_ref);
        st = COMFY_INVALID;
        goto out;
    }
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(answer, "prompt_id");
    if (resp.status != 200 || !cJSON_IsString(pid)) {
        snprintf(msg, msglen, "The image server answered HTTP %ld to the preset.", resp.status);
        cJSON_Delete(answer);
        st = COMFY_PROTOCOL;
        goto out;
    }
    snprintf(out->prompt_id, sizeof(out->prompt_id), "%s", pid->valuestring);
    cJSON_Delete(answer);
    if (o->on_prompt != NULL) {
        o->on_prompt(o->on_prompt_arg, out->prompt_id);
    }

    /* 3. follow it through /history */
    for (;;) {
        int r = history_get(o, out->prompt_id, &entry, &st, msg, msglen);
        if (r == 1) {
            st = finished(o, entry, out, msg, msglen);
            cleanup(o, out->prompt_id, entry, image_ref);
            break;
        }
        if (r < 0 && st != COMFY_UNAVAILABLE && st != COMFY_TIMEOUT) {
            break;
        }
        if (o->cancel != NULL && atomic_load(o->cancel) != 0) {
            interrupt(o, out->prompt_id);
            snprintf(msg, msglen, "The job was cancelled.");
            st = COMFY_CANCELLED;
            break;
        }
        bool stopped = o->stop != NULL && stopwait_stopped(o->stop);
        if (now_mono_ms() >= deadline || stopped) {
            interrupt(o, out->prompt_id);
            cleanup(o, out->prompt_id, NULL, image_ref);
            snprintf(msg, msglen, "The image server did not finish within %d s.", o->timeout_s);
            st = COMFY_TIMEOUT;
            break;
        }
        poll_wait(o, COMFY_POLL_MS);
    }

out:
    http_response_free(&resp);
    cJSON_Delete(entry);
    cJSON_Delete(prompt);
    cJSON_Delete(upload);
    free(body);
    if (st != COMFY_OK) {
        comfy_result_free(out);
    }
    return st;
}
