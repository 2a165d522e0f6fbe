/*
 * http_request — the request side of http_server: the path split and decoded,
 * the query, the body and its cap, the request id, and the http_req_*
 * accessors. See http_server.h and http_server_internal.h.
 */
#define _GNU_SOURCE
#include "http_server.h"

#include "http_server_internal.h"
#include "now.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* ---- path, query, body ---- */

void http_strings_free(char **v, size_t n)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

int http_path_split(const char *path, char ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (path == NULL || path[0] != '/') {
        return -1;
    }
    size_t n = 1;
    for (const char *p = path + 1; *p != '\0'; p++) {
        if (*p == '/') {
            n++;
        }
    }
    char **segs = calloc(n, sizeof(*segs));
    if (segs == NULL) {
        return -1;
    }
    const char *p = path + 1;
    for (size_t i = 0; i < n; i++) {
        const char *slash = strchr(p, '/');
        size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);
        segs[i] = strndup(p, len);
        if (segs[i] == NULL) {
            http_strings_free(segs, i);
            return -1;
        }
        p += len + 1;
    }
    *out = segs;
    *nout = n;
    return 0;
}

char *http_path_join(char *const *segs, size_t n, bool leading_slash)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++) {
        len += strlen(segs[i]) + 1;
    }
    char *out = malloc(len + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 || leading_slash) {
            out[pos++] = '/';
        }
        size_t sl = strlen(segs[i]);
        memcpy(out + pos, segs[i], sl);
        pos += sl;
    }
    if (pos == 0 && leading_slash) {
        out[pos++] = '/';
    }
    out[pos] = '\0';
    return out;
}

/* Percent-decodes one path segment. NULL for an encoded NUL or '/', or for
 * "." and ".." (no traversal through a decoded path). */
static char *decode_segment(const char *seg)
{
    size_t outlen = 0;
    char *out = evhttp_uridecode(seg, 0, &outlen);
    if (out == NULL) {
        return NULL;
    }
    if (outlen != strlen(out) || strchr(out, '/') != NULL || strcmp(out, ".") == 0 ||
        strcmp(out, "..") == 0) {
        free(out);
        return NULL;
    }
    return out;
}

bool http_req_id_valid(const char *id)
{
    if (id == NULL) {
        return false;
    }
    size_t len = strlen(id);
    if (len == 0 || len > HTTP_REQUEST_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* Request ids: a per-process random seed, then a counter through the
 * splitmix64 finalizer (a bijection, so no two requests of a process share an
 * id; the seed keeps replicas apart). One getrandom() per process instead of
 * one system call per request; the ids correlate log lines and are no secret. */
static uint64_t request_id_seed;
static uint64_t request_id_counter;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void request_id_seed_init(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
        seed =
            ((uint64_t)now_mono_us() << 20) ^ (uint64_t)now_wall_ms() ^ ((uint64_t)getpid() << 40);
    }
    request_id_seed = mix64(seed) | 1;
}

void http_req_id_generate(char *out)
{
    static const char hex[] = "0123456789abcdef";
    if (request_id_seed == 0) {
        request_id_seed_init();
    }
    /* Odd-step Weyl sequence from the seed: distinct for 2^64 requests. */
    uint64_t v = mix64(request_id_seed + (++request_id_counter) * 0x9e3779b97f4a7c15ULL);
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[v & 0x0f];
        v >>= 4;
    }
    out[16] = '\0';
}

const char *http_method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "OTHER";
}

int http_req_parse_query(http_req_t *req, const char *query)
{
    if (query == NULL || query[0] == '\0') {
        return 0;
    }
    size_t n = 1;
    for (const char *p = query; *p != '\0'; p++) {
        if (*p == '&') {
            n++;
        }
    }
    req->query_keys = calloc(n, sizeof(char *));
    req->query_values = calloc(n, sizeof(char *));
    if (req->query_keys == NULL || req->query_values == NULL) {
        return -1;
    }
    const char *p = query;
    for (;;) {
        const char *amp = strchr(p, '&');
        size_t len = amp != NULL ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            char *pair = strndup(p, len);
            if (pair == NULL) {
                return -1;
            }
            char *eq = strchr(pair, '=');
            const char *value = "";
            if (eq != NULL) {
                *eq = '\0';
                value = eq + 1;
            }
            char *key = evhttp_uridecode(pair, 1, NULL);
            char *decoded = evhttp_uridecode(value, 1, NULL);
            free(pair);
            if (key == NULL || decoded == NULL) {
                free(key);
                free(decoded);
                return -1;
            }
            req->query_keys[req->nquery] = key;
            req->query_values[req->nquery] = decoded;
            req->nquery++;
        }
        if (amp == NULL) {
            break;
        }
        p = amp + 1;
    }
    return 0;
}

int http_req_parse_path(http_req_t *req, const char *raw)
{
    if (http_path_split(raw, &req->segs, &req->nsegs) != 0) {
        return -1;
    }
    for (size_t i = 0; i < req->nsegs; i++) {
        char *decoded = decode_segment(req->segs[i]);
        if (decoded == NULL) {
            return -1;
        }
        free(req->segs[i]);
        req->segs[i] = decoded;
    }
    req->path = http_path_join(req->segs, req->nsegs, true);
    return req->path != NULL ? 0 : -1;
}

int http_req_read_body(http_req_t *req)
{
    struct evbuffer *input = evhttp_request_get_input_buffer(req->ev);
    size_t len = evbuffer_get_length(input);
    if (len == 0) {
        return 0;
    }
    req->body = malloc(len + 1);
    if (req->body == NULL) {
        return -1;
    }
    if (evbuffer_copyout(input, req->body, len) != (ev_ssize_t)len) {
        return -1;
    }
    req->body[len] = '\0';
    req->body_len = len;
    return 0;
}

bool http_req_body_too_large(http_req_t *req)
{
    size_t max = req->srv->max_body;
    const char *declared = http_req_header(req, "Content-Length");
    if (declared != NULL) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(declared, &end, 10);
        if (errno != 0 || end == declared || n > max) {
            return true;
        }
    }
    return evbuffer_get_length(evhttp_request_get_input_buffer(req->ev)) > max;
}

void http_req_free(http_req_t *req)
{
    http_server_t *srv = req->srv;
    if (req->conn != NULL) {
        req->conn->req = NULL;
        req->conn = NULL;
    }
    if (req->prev != NULL) {
        req->prev->next = req->next;
    } else if (srv->live == req) {
        srv->live = req->next;
    }
    if (req->next != NULL) {
        req->next->prev = req->prev;
    }
    if (srv->in_handler == req) {
        srv->in_handler = NULL;
    }
    if (req->data_free != NULL && req->data != NULL) {
        req->data_free(req->data);
    }
    for (size_t i = 0; i < req->nparams; i++) {
        free(req->param_values[i]);
    }
    http_strings_free(req->query_keys, req->nquery);
    http_strings_free(req->query_values, req->nquery);
    http_strings_free(req->segs, req->nsegs);
    cJSON_Delete(req->json);
    free(req->body);
    free(req->path);
    free(req->raw_path);
    free(req);
}

void http_req_on_close(struct evhttp_connection *evcon, void *arg)
{
    http_req_t *req = arg;
    req->client_gone = true;
    req->evcon = NULL;
    req->conn = NULL;
    if (req->ev != NULL && evhttp_request_get_connection(req->ev) != NULL) {
        /* Still attached: libevent frees it with the connection. */
        req->ev = NULL;
    }
}

/* ---- accessors ---- */

const char *http_req_method(const http_req_t *req)
{
    return req->method;
}

const char *http_req_path(const http_req_t *req)
{
    return req->path;
}

const char *http_req_param(const http_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++) {
        if (strcmp(req->param_names[i], name) == 0) {
            return req->param_values[i];
        }
    }
    return NULL;
}

const char *http_req_query(const http_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->nquery; i++) {
        if (strcmp(req->query_keys[i], name) == 0) {
            return req->query_values[i];
        }
    }
    return NULL;
}

const char *http_req_header(const http_req_t *req, const char *name)
{
    if (req->ev == NULL) {
        return NULL;
    }
    return evhttp_find_header(evhttp_request_get_input_headers(req->ev), name);
}

const char *http_req_body(const http_req_t *req, size_t *len)
{
    if (len != NULL) {
        *len = req->body_len;
    }
    return req->body != NULL ? req->body : "";
}

const char *http_req_id(const http_req_t *req)
{
    return req->id;
}

const char *http_req_peer(const http_req_t *req)
{
    return req->peer;
}

void http_req_set_data(http_req_t *req, void *data, void (*free_fn)(void *))
{
    if (req->data_free != NULL && req->data != NULL && req->data != data) {
        req->data_free(req->data);
    }
    req->data = data;
    req->data_free = free_fn;
}

void *http_req_data(const http_req_t *req)
{
    return req->data;
}

struct evhttp_request *http_req_raw(http_req_t *req)
{
    return req->ev;
}
