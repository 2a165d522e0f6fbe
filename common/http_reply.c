/*
 * http_reply — the reply side of http_server: http_reply_*, the headers every
 * reply carries (X-Request-Id, nosniff, no-store on JSON), the access log
 * line and the request metrics, then the end of the request.
 * See http_server.h and http_server_internal.h.
 */
#define _GNU_SOURCE
#include "http_server.h"

#include "http_server_internal.h"
#include "log.h"
#include "metrics.h"
#include "now.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void access_log(http_req_t *req, int status, size_t bytes)
{
    double seconds = (double)(now_mono_us() - req->started_us) / 1e6;
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
void http_reply_write_now(struct evhttp_connection *evcon)
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

void http_reply_send(http_req_t *req, int status, const char *content_type, bool json,
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
        if (req->conn != NULL) {
            req->conn->req = NULL; /* the connection's close no longer concerns req */
            req->conn = NULL;
        } else if (evcon != NULL) {
            evhttp_connection_set_closecb(evcon, NULL, NULL);
        }
        evhttp_send_reply(req->ev, status, NULL, NULL);
        req->ev = NULL; /* libevent's now */
        flush = evcon;
    }
    access_log(req, status, len);
    http_server_t *srv = req->srv;
    if (srv->in_handler != req) {
        http_req_free(req);
        /* The request is finished on our side (data freed) before the client
         * can see the reply. */
        if (flush != NULL) {
            http_reply_write_now(flush);
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
        http_reply_send(req, 500, "application/json", true, fallback, sizeof(fallback) - 1);
        return;
    }
    http_reply_send(req, status, "application/json", true, text, strlen(text));
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
    http_reply_send(req, status, content_type != NULL ? content_type : "application/octet-stream",
                    false, data, data != NULL ? len : 0);
}

void http_reply_redirect(http_req_t *req, int status, const char *location)
{
    http_reply_header(req, "Location", location);
    http_reply_send(req, status, NULL, false, NULL, 0);
}

/* The body as a JSON object, parsed once (http_server.h); answers 400
 * invalid_json itself, so it lives with the replies. */
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
