/*
 * http_server — helpers on libevent's evhttp.
 *
 * Routing with path parameters ("/api/jobs/{id}"), JSON replies and the error
 * format {"error":{"code","message"}}, a body cap (413 body_too_large), a
 * request id (X-Request-Id taken when sane, else generated, and echoed back),
 * an access log line per request, and the built-in routes every daemon has:
 *   GET /healthz   200 {"status":"ok"}
 *   GET /readyz    200 {"status":"ready"} or 503 {"error":{"code":"not_ready",...}}
 *   GET /metrics   Prometheus text (metrics_render()) plus http request metrics
 * Unknown path: 404 not_found; known path, wrong method: 405 method_not_allowed
 * with Allow. A handler may reply later (after async work): the request stays
 * alive until one http_reply_*() call; if the client went away, the reply is
 * dropped safely.
 */
#ifndef CA_HTTP_SERVER_H
#define CA_HTTP_SERVER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evhttp_request;

typedef struct http_server http_server_t;
typedef struct http_req http_req_t;

typedef void (*http_handler_fn)(http_req_t *req, void *arg);
/* Returns true when ready; otherwise fills why. Must not block. */
typedef bool (*http_ready_fn)(void *arg, char *why, size_t whylen);

http_server_t *http_server_new(struct event_base *base, size_t max_body_bytes);

/* Connection limits (docs/common/http_server.md). 0 in a cap means no cap. */
typedef struct {
    size_t max_connections;          /* open connections per process (default 512) */
    size_t max_connections_per_peer; /* open connections per client address (default 128) */
    int header_timeout_ms; /* request line + headers must arrive within this (default 10 s) */
    int idle_timeout_ms;   /* no byte read or written for this long: closed (default 60 s) */
} http_limits_t;
/* Connections past a cap get HTTP_PROBE_RESERVE more slots that answer only
 * GET /healthz and /readyz (503 too_many_connections otherwise); past those
 * they are closed at once with a 503. */
#define HTTP_PROBE_RESERVE 8
void http_server_set_limits(http_server_t *srv, const http_limits_t *limits);
/* Peers whose X-Forwarded-For names the client (TRUSTED_PROXIES; borrowed,
 * must outlive the server; NULL or empty: the header is ignored). */
struct trusted_proxies;
void http_server_set_trusted_proxies(http_server_t *srv, const struct trusted_proxies *l);
/* Open connections (admitted ones, probe slots included). */
size_t http_server_connections(const http_server_t *srv);
/* Binds addr:port (port 0 picks a free one; see http_server_port). Returns 0 or -1. */
__attribute__((warn_unused_result)) int http_server_listen(http_server_t *srv, const char *addr,
                                                           int port);
int http_server_port(const http_server_t *srv);
/* pattern: literal segments and {name} segments; a final "{name*}" matches the
 * rest of the path (static files). Method "*" matches any method. */
__attribute__((warn_unused_result)) int http_server_route(http_server_t *srv, const char *method,
                                                          const char *pattern, http_handler_fn fn,
                                                          void *arg);
void http_server_set_ready(http_server_t *srv, http_ready_fn fn, void *arg);
/* Stops accepting connections (drain); in-flight requests finish. */
void http_server_close_listeners(http_server_t *srv);
void http_server_free(http_server_t *srv);

/* ---- the request ---- */
const char *http_req_method(const http_req_t *req);
const char *http_req_path(const http_req_t *req);                    /* decoded path, no query */
const char *http_req_param(const http_req_t *req, const char *name); /* path parameter */
const char *http_req_query(const http_req_t *req, const char *name); /* decoded, first value */
const char *http_req_header(const http_req_t *req, const char *name);
const char *http_req_body(const http_req_t *req, size_t *len); /* NUL-terminated copy */
const char *http_req_id(const http_req_t *req);
const char *http_req_peer(const http_req_t *req); /* client address */
/* Parses the body as a JSON object. On failure replies 400 invalid_json itself
 * and returns NULL. The object belongs to the request (do not free). */
cJSON *http_req_json(http_req_t *req);
/* Per-request user data (freed with `free_fn` when the request ends). */
void http_req_set_data(http_req_t *req, void *data, void (*free_fn)(void *));
void *http_req_data(const http_req_t *req);
struct evhttp_request *http_req_raw(http_req_t *req);

/* ---- replies (exactly one per request) ---- */
void http_reply_header(http_req_t *req, const char *name, const char *value);
/* Takes ownership of body. */
void http_reply_json(http_req_t *req, int status, cJSON *body);
void http_reply_error(http_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_reply_data(http_req_t *req, int status, const char *content_type, const void *data,
                     size_t len);
void http_reply_redirect(http_req_t *req, int status, const char *location);

#endif
