/*
 * http_server — see http_server.h.
 *
 * One evhttp generic callback does everything: path decoding, routing, the
 * body cap, the request id, then the handler. Every request gets an
 * http_req_t that lives until its one reply (or until the server is freed).
 *
 * Lifetime of the libevent request when a client goes away before the reply:
 *   - libevent notices EOF while the request waits for us: it detaches the
 *     request from the connection (evhttp_request_get_connection() == NULL)
 *     and frees only the connection; the request stays valid and is ours to
 *     free at reply time.
 *   - the connection is freed with the request still attached (server freed):
 *     libevent frees the request right after our close callback, so the close
 *     callback forgets the pointer.
 * In both cases the late reply is logged and dropped.
 *
 * Body cap: libevent 2.1 answers bodies over evhttp_set_max_body_size() with
 * its own HTML 413 and offers no hook to change it. So libevent's cap is set
 * to a hard ceiling well above ours (4 x cap + 1 MiB) and our cap is checked
 * here, from Content-Length and from the bytes read, with the JSON 413. Only a
 * body past the hard ceiling gets libevent's own (HTML) 413.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "http_server.h"

#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_MAX_HEADERS_BYTES (16 * 1024)
#define HTTP_TIMEOUT_SECONDS 60
#define HTTP_MAX_PARAMS 16
#define HTTP_REQUEST_ID_MAX 64
#define HTTP_DEFAULT_MAX_BODY (1024 * 1024)

typedef struct route {
    char *method;
    char *pattern;
    char **segs;  /* pattern segments */
    char **names; /* per segment: parameter name, or NULL for a literal */
    size_t nsegs;
    bool tail; /* last segment is {name*} */
    http_handler_fn fn;
    void *arg;
} route_t;

typedef struct listener {
    struct evhttp_bound_socket *handle;
    struct listener *next;
} listener_t;

struct http_server {
    struct event_base *base;
    struct evhttp *http;
    size_t max_body;
    route_t *routes;
    size_t nroutes;
    size_t cap_routes;
    listener_t *listeners;
    int port;
    http_ready_fn ready_fn;
    void *ready_arg;
    http_req_t *live; /* requests not yet replied to */
    http_req_t *in_handler;
    struct evhttp_connection *flush_evcon; /* a reply made inside its handler, to write */
    metric_t *requests_total;
    metric_t *request_seconds;
};

struct http_req {
    http_server_t *srv;
    struct evhttp_request *ev; /* NULL once libevent freed it */
    struct evhttp_connection *evcon;
    bool replied;
    bool client_gone;
    const char *method;
    const char *route; /* pattern, or a fixed word: bounded metric labels */
    char *raw_path;    /* undecoded, no query: for the access log */
    char *path;        /* decoded */
    char **segs;
    size_t nsegs;
    const char *param_names[HTTP_MAX_PARAMS];
    char *param_values[HTTP_MAX_PARAMS];
    size_t nparams;
    char **query_keys;
    char **query_values;
    size_t nquery;
    char *body;
    size_t body_len;
    cJSON *json;
    void *data;
    void (*data_free)(void *);
    char id[HTTP_REQUEST_ID_MAX + 1];
    char peer[64];
    struct timespec started;
    http_req_t *prev;
    http_req_t *next;
};

/* ---- small helpers ---- */

static char *xstrdup(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static void free_strings(char **v, size_t n)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* Splits "/a/b/c" (after the leading '/') into copies of a, b, c. */
static int split_path(const char *path, char ***out, size_t *nout)
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
            free_strings(segs, i);
            return -1;
        }
        p += len + 1;
    }
    *out = segs;
    *nout = n;
    return 0;
}

static char *join_segments(char *const *segs, size_t n, bool leading_slash)
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

static bool valid_request_id(const char *id)
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
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        seed = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ ((uint64_t)getpid() << 40);
    }
    request_id_seed = mix64(seed) | 1;
}

static void generate_request_id(char *out)
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

static const char *method_name(enum evhttp_cmd_type cmd)
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

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Parses "a=1&b=x%20y" into decoded pairs ('+' is a space). */
static int parse_query(http_req_t *req, const char *query)
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

/* ---- request lifetime ---- */

static void req_free(http_req_t *req)
{
    http_server_t *srv = req->srv;
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
    free_strings(req->query_keys, req->nquery);
    free_strings(req->query_values, req->nquery);
    free_strings(req->segs, req->nsegs);
    cJSON_Delete(req->json);
    free(req->body);
    free(req->path);
    free(req->raw_path);
    free(req);
}

static void on_connection_close(struct evhttp_connection *evcon, void *arg)
{
    http_req_t *req = arg;
    req->client_gone = true;
    req->evcon = NULL;
    if (req->ev != NULL && evhttp_request_get_connection(req->ev) != NULL) {
        /* Still attached: libevent frees it with the connection. */
        req->ev = NULL;
    }
}

static void access_log(http_req_t *req, int status, size_t bytes)
{
    double seconds = seconds_since(&req->started);
    char status_text[8];
    if (status >= 100 && status <= 999) { /* every HTTP status: no snprintf per request */
        status_text[0] = (char)('0' + status / 100);
        status_text[1] = (char)('0' + status / 10 % 10);
        status_text[2] = (char)('0' + status % 10);
        status_text[3] = '\0';
    } else {
        snprintf(status_text, sizeof(status_text), "%d", status);
    }
    metric_add(req->srv->requests_total, 1, req->method, req->route, status_text);
    metric_observe(req->srv->request_seconds, seconds, req->route);

    /* Successful probes (/healthz, /readyz, /metrics: polled every few seconds
     * by Kubernetes and Prometheus) are logged at debug level, so they neither
     * drown the log nor cost a write per probe; they still count in the metrics. */
    bool probe = status < 400 && req->route != NULL &&
                 (strcmp(req->route, "/healthz") == 0 || strcmp(req->route, "/readyz") == 0 ||
                  strcmp(req->route, "/metrics") == 0);
    log_level_t level = probe ? CA_LOG_DEBUG : CA_LOG_INFO;
    if (!log_enabled(level)) {
        return;
    }
    bool own_context = req->srv->in_handler != req;
    if (own_context) {
        log_context_set("request_id", req->id);
    }
    log_write(level, __FILE__, __LINE__, "http %s %s %d %zu bytes %.1f ms request_id=%s peer=%s%s",
              req->method, req->path != NULL ? req->path : req->raw_path, status, bytes,
              seconds * 1000.0, req->id, req->peer,
              req->client_gone ? " (client closed, reply dropped)" : "");
    if (own_context) {
        log_context_set("request_id", NULL);
    }
}

static void set_header_default(struct evkeyvalq *headers, const char *name, const char *value)
{
    if (evhttp_find_header(headers, name) == NULL) {
        evhttp_add_header(headers, name, value);
    }
}

/* Writes a reply evhttp has just queued at once instead of on the next loop
 * iteration, and when all of it went out, tells evhttp so (its write callback:
 * the request is finished and the connection reads the next one, or closes).
 *
 * evhttp on its own enables the write event, waits for epoll to report the
 * socket writable, writes, and switches back to reading: two epoll_ctl calls
 * and one more loop iteration per request. Done here, the enable/disable pairs
 * cancel out within the iteration (the loop uses the epoll change list: see
 * daemon.c) and the reply leaves in the same writev.
 *
 * Safe from inside a handler: evhttp does not touch the request or the
 * connection after calling our request callback (libevent 2.1 http.c,
 * evhttp_connection_done), and the bufferevent holds a reference while its
 * read callback runs. A partial write or an error is left to the bufferevent
 * (its write event is still armed). */
static void write_now(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    if (bev == NULL) {
        return;
    }
    evutil_socket_t fd = bufferevent_getfd(bev);
    struct evbuffer *out = bufferevent_get_output(bev);
    if (fd < 0 || evbuffer_get_length(out) == 0) {
        return;
    }
    /* The socket bufferevent keeps the front of its output frozen outside its
     * own write callback. */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, fd);
    evbuffer_freeze(out, 1);
    if (n > 0 && evbuffer_get_length(out) == 0) {
        bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
    }
}

/* The one way a reply leaves: headers, send, access log, free. */
static void reply_send(http_req_t *req, int status, const char *content_type, bool json,
                       const void *data, size_t len)
{
    if (req == NULL) {
        return;
    }
    if (req->replied) {
        log_warn("http: second reply to request %s ignored", req->id);
        return;
    }
    req->replied = true;
    struct evhttp_connection *flush = NULL;
    if (req->ev != NULL && evhttp_request_get_connection(req->ev) == NULL) {
        /* Detached after the client went away: ours to free. */
        req->client_gone = true;
        evhttp_request_free(req->ev);
        req->ev = NULL;
    }
    if (req->ev != NULL) {
        struct evkeyvalq *headers = evhttp_request_get_output_headers(req->ev);
        if (content_type != NULL) {
            evhttp_remove_header(headers, "Content-Type");
            evhttp_add_header(headers, "Content-Type", content_type);
        }
        if (json) {
            set_header_default(headers, "Cache-Control", "no-store");
        }
        set_header_default(headers, "X-Content-Type-Options", "nosniff");
        evhttp_remove_header(headers, "X-Request-Id");
        evhttp_add_header(headers, "X-Request-Id", req->id);

        /* The body goes straight into the request's own output buffer. */
        struct evbuffer *out = evhttp_request_get_output_buffer(req->ev);
        if (len > 0 && evbuffer_add(out, data, len) != 0) {
            evbuffer_drain(out, evbuffer_get_length(out));
            status = 500;
        }
        struct evhttp_connection *evcon = evhttp_request_get_connection(req->ev);
        if (evcon != NULL) {
            evhttp_connection_set_closecb(evcon, NULL, NULL);
        }
        evhttp_send_reply(req->ev, status, NULL, NULL);
        req->ev = NULL; /* libevent's now */
        flush = evcon;
    }
    access_log(req, status, len);
    http_server_t *srv = req->srv;
    if (srv->in_handler != req) {
        req_free(req);
        /* The request is finished on our side (data freed) before the client
         * can see the reply. */
        if (flush != NULL) {
            write_now(flush);
        }
    } else {
        srv->flush_evcon = flush; /* written once the handler returns */
    }
    /* else handle_request frees it when the handler returns, so that a
     * second reply from the same handler is caught instead of touching
     * freed memory. */
}

/* ---- replies ---- */

void http_reply_header(http_req_t *req, const char *name, const char *value)
{
    if (req == NULL || req->replied || req->ev == NULL || name == NULL || value == NULL) {
        return;
    }
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req->ev);
    if (evhttp_add_header(headers, name, value) != 0) {
        log_warn("http: header %s rejected (bad characters)", name);
    }
}

void http_reply_json(http_req_t *req, int status, cJSON *body)
{
    char *text = body != NULL ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (text == NULL) {
        static const char fallback[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"could not encode reply\"}}";
        reply_send(req, 500, "application/json", true, fallback, sizeof(fallback) - 1);
        return;
    }
    reply_send(req, status, "application/json", true, text, strlen(text));
    free(text);
}

static cJSON *error_body(const char *code, const char *message)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *error = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(error, "code", code != NULL ? code : "error");
    cJSON_AddStringToObject(error, "message", message != NULL ? message : "");
    return root;
}

void http_reply_error(http_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    message[0] = '\0';
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
    }
    http_reply_json(req, status, error_body(code, message));
}

void http_reply_data(http_req_t *req, int status, const char *content_type, const void *data,
                     size_t len)
{
    reply_send(req, status, content_type != NULL ? content_type : "application/octet-stream", false,
               data, data != NULL ? len : 0);
}

void http_reply_redirect(http_req_t *req, int status, const char *location)
{
    http_reply_header(req, "Location", location);
    reply_send(req, status, NULL, false, NULL, 0);
}

/* ---- request accessors ---- */

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

cJSON *http_req_json(http_req_t *req)
{
    if (req->json != NULL) {
        return req->json;
    }
    cJSON *parsed = NULL;
    if (req->body_len > 0) {
        const char *end = NULL;
        parsed = cJSON_ParseWithLengthOpts(req->body, req->body_len, &end, false);
        /* Only whitespace may follow the value. */
        const char *limit = req->body + req->body_len;
        while (parsed != NULL && end != NULL && end < limit &&
               (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) {
            end++;
        }
        if (parsed != NULL && end != limit) {
            cJSON_Delete(parsed);
            parsed = NULL;
        }
    }
    if (parsed == NULL || !cJSON_IsObject(parsed)) {
        cJSON_Delete(parsed);
        http_reply_error(req, 400, "invalid_json", "the request body must be a JSON object");
        return NULL;
    }
    req->json = parsed;
    return parsed;
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

/* ---- routing ---- */

/* "{name}" or "{name*}": returns a copy of the name, else NULL (a literal). */
static char *pattern_param_name(const char *seg, bool *is_tail)
{
    size_t len = strlen(seg);
    *is_tail = false;
    if (len < 3 || seg[0] != '{' || seg[len - 1] != '}') {
        return NULL;
    }
    size_t name_len = len - 2;
    if (seg[len - 2] == '*') {
        *is_tail = true;
        name_len--;
    }
    return strndup(seg + 1, name_len);
}

/* True when the route's pattern matches req's decoded segments. */
static bool route_match(const route_t *route, const http_req_t *req)
{
    size_t fixed = route->tail ? route->nsegs - 1 : route->nsegs;
    if (route->tail ? req->nsegs < fixed : req->nsegs != fixed) {
        return false;
    }
    for (size_t i = 0; i < fixed; i++) {
        if (route->names[i] != NULL) {
            if (req->segs[i][0] == '\0') {
                return false;
            }
        } else if (strcmp(route->segs[i], req->segs[i]) != 0) {
            return false;
        }
    }
    return true;
}

static int route_bind_params(const route_t *route, http_req_t *req)
{
    size_t fixed = route->tail ? route->nsegs - 1 : route->nsegs;
    for (size_t i = 0; i < route->nsegs; i++) {
        if (route->names[i] == NULL) {
            continue;
        }
        char *value = NULL;
        if (i < fixed) {
            value = strdup(req->segs[i]);
        } else {
            value = join_segments(req->segs + fixed, req->nsegs - fixed, false);
        }
        if (value == NULL) {
            return -1;
        }
        req->param_names[req->nparams] = route->names[i];
        req->param_values[req->nparams] = value;
        req->nparams++;
    }
    return 0;
}

static void route_clear(route_t *route)
{
    free(route->method);
    free(route->pattern);
    free_strings(route->names, route->nsegs);
    free_strings(route->segs, route->nsegs);
}

int http_server_route(http_server_t *srv, const char *method, const char *pattern,
                      http_handler_fn fn, void *arg)
{
    if (srv == NULL || method == NULL || method[0] == '\0' || pattern == NULL || fn == NULL ||
        pattern[0] != '/') {
        return -1;
    }
    route_t route;
    memset(&route, 0, sizeof(route));
    if (split_path(pattern, &route.segs, &route.nsegs) != 0) {
        return -1;
    }
    route.names = calloc(route.nsegs, sizeof(*route.names));
    if (route.names == NULL) {
        goto fail;
    }
    size_t nparams = 0;
    for (size_t i = 0; i < route.nsegs; i++) {
        bool tail = false;
        route.names[i] = pattern_param_name(route.segs[i], &tail);
        if (route.names[i] == NULL) {
            if (strchr(route.segs[i], '{') != NULL || strchr(route.segs[i], '}') != NULL) {
                goto fail; /* half a parameter: a typo */
            }
            continue;
        }
        nparams++;
        if (route.names[i][0] == '\0' || (tail && i != route.nsegs - 1) ||
            nparams > HTTP_MAX_PARAMS) {
            goto fail;
        }
        route.tail = tail;
    }
    if (srv->nroutes == srv->cap_routes) {
        size_t ncap = srv->cap_routes == 0 ? 16 : srv->cap_routes * 2;
        route_t *grown = realloc(srv->routes, ncap * sizeof(*grown));
        if (grown == NULL) {
            goto fail;
        }
        srv->routes = grown;
        srv->cap_routes = ncap;
    }
    route.method = strdup(method);
    route.pattern = strdup(pattern);
    if (route.method == NULL || route.pattern == NULL) {
        goto fail;
    }
    route.fn = fn;
    route.arg = arg;
    srv->routes[srv->nroutes++] = route;
    return 0;
fail:
    route_clear(&route);
    return -1;
}

/* ---- built-in routes ---- */

static void handle_healthz(http_req_t *req, void *arg)
{
    (void)arg;
    static const char body[] = "{\"status\":\"ok\"}";
    reply_send(req, 200, "application/json", true, body, sizeof(body) - 1);
}

static void handle_readyz(http_req_t *req, void *arg)
{
    http_server_t *srv = arg;
    char why[256] = "";
    if (srv->ready_fn != NULL && !srv->ready_fn(srv->ready_arg, why, sizeof(why))) {
        http_reply_error(req, 503, "not_ready", "%s", why[0] != '\0' ? why : "not ready");
        return;
    }
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "status", "ready");
    http_reply_json(req, 200, body);
}

static void handle_metrics(http_req_t *req, void *arg)
{
    char *text = metrics_render();
    if (text == NULL) {
        http_reply_error(req, 500, "internal", "could not render metrics");
        return;
    }
    http_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
}

/* ---- the generic callback ---- */

static int decode_request_path(http_req_t *req, const char *raw)
{
    if (split_path(raw, &req->segs, &req->nsegs) != 0) {
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
    req->path = join_segments(req->segs, req->nsegs, true);
    return req->path != NULL ? 0 : -1;
}

static int read_body(http_req_t *req)
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

static bool body_too_large(http_req_t *req)
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

static void handle_request(struct evhttp_request *ev, void *arg)
{
    http_server_t *srv = arg;
    http_req_t *req = calloc(1, sizeof(*req));
    if (req == NULL) {
        evhttp_send_error(ev, 503, NULL);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &req->started);
    req->srv = srv;
    req->ev = ev;
    req->method = method_name(evhttp_request_get_command(ev));
    req->route = "unmatched";
    req->next = srv->live;
    if (srv->live != NULL) {
        srv->live->prev = req;
    }
    srv->live = req;

    const char *given_id = http_req_header(req, "X-Request-Id");
    if (valid_request_id(given_id)) {
        snprintf(req->id, sizeof(req->id), "%s", given_id);
    } else {
        generate_request_id(req->id);
    }
    req->evcon = evhttp_request_get_connection(ev);
    memcpy(req->peer, "-", 2);
    if (req->evcon != NULL) {
        char *address = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(req->evcon, &address, &port);
        if (address != NULL) {
            size_t n = strnlen(address, sizeof(req->peer) - 1);
            memcpy(req->peer, address, n);
            req->peer[n] = '\0';
        }
        evhttp_connection_set_closecb(req->evcon, on_connection_close, req);
    }

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *raw = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    req->raw_path = xstrdup(raw != NULL ? raw : "-");
    if (req->raw_path == NULL) {
        http_reply_error(req, 503, "internal", "out of memory");
        return;
    }
    if (raw == NULL || raw[0] == '\0') {
        raw = "/";
    }
    if (decode_request_path(req, raw) != 0) {
        req->route = "invalid";
        free(req->path);
        req->path = NULL;
        http_reply_error(req, 400, "invalid_path", "the request path is not valid");
        return;
    }
    if (parse_query(req, uri != NULL ? evhttp_uri_get_query(uri) : NULL) != 0) {
        req->route = "invalid";
        http_reply_error(req, 400, "invalid_query", "the query string is not valid");
        return;
    }

    const route_t *found = NULL;
    char allow[128] = "";
    for (size_t i = 0; i < srv->nroutes; i++) {
        const route_t *route = &srv->routes[i];
        if (!route_match(route, req)) {
            continue;
        }
        if (strcmp(route->method, "*") == 0 || strcmp(route->method, req->method) == 0) {
            found = route;
            break;
        }
        req->route = route->pattern;
        if (strstr(allow, route->method) == NULL &&
            strlen(allow) + strlen(route->method) + 3 < sizeof(allow)) {
            if (allow[0] != '\0') {
                strcat(allow, ", ");
            }
            strcat(allow, route->method);
        }
    }
    if (found == NULL) {
        if (allow[0] != '\0') {
            http_reply_header(req, "Allow", allow);
            http_reply_error(req, 405, "method_not_allowed", "%s is not allowed here", req->method);
        } else {
            http_reply_error(req, 404, "not_found", "no such resource");
        }
        return;
    }
    req->route = found->pattern;
    if (route_bind_params(found, req) != 0) {
        http_reply_error(req, 503, "internal", "out of memory");
        return;
    }
    if (body_too_large(req)) {
        http_reply_error(req, 413, "body_too_large", "the request body is over %zu bytes",
                         srv->max_body);
        return;
    }
    if (read_body(req) != 0) {
        http_reply_error(req, 503, "internal", "out of memory");
        return;
    }

    /* The handler may reply now or later; after it returns, req may be gone. */
    srv->in_handler = req;
    log_context_set("request_id", req->id);
    found->fn(req, found->arg);
    log_context_set("request_id", NULL);
    srv->in_handler = NULL;
    if (req->replied) {
        req_free(req);
    }
    if (srv->flush_evcon != NULL) {
        struct evhttp_connection *evcon = srv->flush_evcon;
        srv->flush_evcon = NULL;
        write_now(evcon);
    }
}

/* ---- the server ---- */

http_server_t *http_server_new(struct event_base *base, size_t max_body_bytes)
{
    if (base == NULL) {
        return NULL;
    }
    http_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return NULL;
    }
    srv->base = base;
    srv->max_body = max_body_bytes > 0 ? max_body_bytes : HTTP_DEFAULT_MAX_BODY;
    srv->http = evhttp_new(base);
    if (srv->http == NULL) {
        free(srv);
        return NULL;
    }
    size_t hard_cap = srv->max_body * 4 + 1024 * 1024;
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)hard_cap);
    evhttp_set_max_headers_size(srv->http, HTTP_MAX_HEADERS_BYTES);
    evhttp_set_timeout(srv->http, HTTP_TIMEOUT_SECONDS);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(srv->http, handle_request, srv);

    srv->requests_total =
        metrics_counter("http_requests_total", "HTTP requests served", "method,route,status");
    srv->request_seconds = metrics_histogram("http_request_duration_seconds",
                                             "Time from request to reply", "route", NULL, 0);

    if (http_server_route(srv, "GET", "/healthz", handle_healthz, srv) != 0 ||
        http_server_route(srv, "GET", "/readyz", handle_readyz, srv) != 0 ||
        http_server_route(srv, "GET", "/metrics", handle_metrics, srv) != 0) {
        http_server_free(srv);
        return NULL;
    }
    return srv;
}

int http_server_listen(http_server_t *srv, const char *addr, int port)
{
    if (srv == NULL || port < 0 || port > 65535) {
        return -1;
    }
    listener_t *listener = calloc(1, sizeof(*listener));
    if (listener == NULL) {
        return -1;
    }
    listener->handle = evhttp_bind_socket_with_handle(srv->http, addr != NULL ? addr : "0.0.0.0",
                                                      (ev_uint16_t)port);
    if (listener->handle == NULL) {
        free(listener);
        return -1;
    }
    evutil_socket_t fd = evhttp_bound_socket_get_fd(listener->handle);
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0) {
        int bound = 0;
        if (ss.ss_family == AF_INET) {
            bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        if (srv->port == 0) {
            srv->port = bound;
        }
    }
    listener->next = srv->listeners;
    srv->listeners = listener;
    return 0;
}

int http_server_port(const http_server_t *srv)
{
    return srv != NULL ? srv->port : 0;
}

void http_server_set_ready(http_server_t *srv, http_ready_fn fn, void *arg)
{
    srv->ready_fn = fn;
    srv->ready_arg = arg;
}

void http_server_close_listeners(http_server_t *srv)
{
    if (srv == NULL) {
        return;
    }
    listener_t *listener = srv->listeners;
    while (listener != NULL) {
        listener_t *next = listener->next;
        evhttp_del_accept_socket(srv->http, listener->handle);
        free(listener);
        listener = next;
    }
    srv->listeners = NULL;
}

void http_server_free(http_server_t *srv)
{
    if (srv == NULL) {
        return;
    }
    http_server_close_listeners(srv);
    /* Frees every connection; our close callback forgets attached requests. */
    evhttp_free(srv->http);
    while (srv->live != NULL) {
        http_req_t *req = srv->live;
        if (req->ev != NULL) {
            evhttp_request_free(req->ev); /* detached, never replied */
            req->ev = NULL;
        }
        req_free(req);
    }
    for (size_t i = 0; i < srv->nroutes; i++) {
        route_clear(&srv->routes[i]);
    }
    free(srv->routes);
    free(srv);
}
