/*
 * http_server — the server: listeners, routing, the built-in routes, and the
 * one evhttp generic callback that does everything: path decoding, routing,
 * the body cap, the request id, then the handler. Every request gets an
 * http_req_t that lives until its one reply (or until the server is freed).
 * The request is read in http_request.c and answered in http_reply.c
 * (http_server_internal.h). See http_server.h.
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
#define _GNU_SOURCE
#include "http_server.h"

#include "http_server_internal.h"
#include "log.h"
#include "metrics.h"
#include "now.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HTTP_MAX_HEADERS_BYTES (16 * 1024)
#define HTTP_TIMEOUT_SECONDS 60
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
            value = http_path_join(req->segs + fixed, req->nsegs - fixed, false);
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
    http_strings_free(route->names, route->nsegs);
    http_strings_free(route->segs, route->nsegs);
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
    if (http_path_split(pattern, &route.segs, &route.nsegs) != 0) {
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
    http_reply_send(req, 200, "application/json", true, body, sizeof(body) - 1);
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

static void handle_request(struct evhttp_request *ev, void *arg)
{
    http_server_t *srv = arg;
    http_req_t *req = calloc(1, sizeof(*req));
    if (req == NULL) {
        evhttp_send_error(ev, 503, NULL);
        return;
    }
    req->started_us = now_mono_us();
    req->srv = srv;
    req->ev = ev;
    req->method = http_method_name(evhttp_request_get_command(ev));
    req->route = "unmatched";
    req->next = srv->live;
    if (srv->live != NULL) {
        srv->live->prev = req;
    }
    srv->live = req;

    const char *given_id = http_req_header(req, "X-Request-Id");
    if (http_req_id_valid(given_id)) {
        snprintf(req->id, sizeof(req->id), "%s", given_id);
    } else {
        http_req_id_generate(req->id);
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
        evhttp_connection_set_closecb(req->evcon, http_req_on_close, req);
    }

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *raw = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    req->raw_path = strdup(raw != NULL ? raw : "-");
    if (req->raw_path == NULL) {
        http_reply_error(req, 503, "internal", "out of memory");
        return;
    }
    if (raw == NULL || raw[0] == '\0') {
        raw = "/";
    }
    if (http_req_parse_path(req, raw) != 0) {
        req->route = "invalid";
        free(req->path);
        req->path = NULL;
        http_reply_error(req, 400, "invalid_path", "the request path is not valid");
        return;
    }
    if (http_req_parse_query(req, uri != NULL ? evhttp_uri_get_query(uri) : NULL) != 0) {
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
    if (http_req_body_too_large(req)) {
        http_reply_error(req, 413, "body_too_large", "the request body is over %zu bytes",
                         srv->max_body);
        return;
    }
    if (http_req_read_body(req) != 0) {
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
        http_req_free(req);
    }
    if (srv->flush_evcon != NULL) {
        struct evhttp_connection *evcon = srv->flush_evcon;
        srv->flush_evcon = NULL;
        http_reply_write_now(evcon);
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
        http_req_free(req);
    }
    for (size_t i = 0; i < srv->nroutes; i++) {
        route_clear(&srv->routes[i]);
    }
    free(srv->routes);
    free(srv);
}
