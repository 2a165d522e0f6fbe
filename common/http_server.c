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
 * Body cap: libevent enforces our cap while reading (evhttp_set_max_body_size):
 * a declared length over it is refused when the headers are in, a chunked
 * body when it passes the cap, with libevent's own HTML 413 and no hook to
 * change it: conn_fix_reply swaps that reply for the JSON one before it is
 * written, and the socket then lingers (linger_start) so that a client still
 * sending reads the 413 rather than a reset. A request under the cap is
 * checked again at dispatch (http_req_body_too_large).
 */
#define _GNU_SOURCE
#include "http_server.h"

#include "http_server_internal.h"
#include "log.h"
#include "metrics.h"
#include "now.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_HEADERS_BYTES (16 * 1024)
#define HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define HTTP_DEFAULT_MAX_CONNECTIONS 512
#define HTTP_DEFAULT_MAX_CONNECTIONS_PER_PEER 128
#define HTTP_DEFAULT_HEADER_TIMEOUT_MS 10000
#define HTTP_DEFAULT_IDLE_TIMEOUT_MS 60000

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

/* ---- connections: caps, the header deadline ---- */

static const char refused_reply[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    "Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 79\r\n\r\n"
    "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections\"}}";

/* Lingering close (as nginx does) after a body refused while it was being
 * read: the 413 is written at once, but closing a socket with unread input
 * makes the kernel send RST, and a client still sending would see the reset
 * instead of the reply. So the socket is kept (a dup of libevent's, which
 * libevent then closes), its write side shut (FIN after the reply), and what
 * still arrives is read and dropped until EOF, a pause of LINGER_PAUSE_MS, or
 * LINGER_MAX_MS / LINGER_MAX_BYTES in all. At most LINGER_MAX_SOCKETS at once:
 * past that the socket closes at once, as before. */
#define LINGER_PAUSE_MS 2000
#define LINGER_MAX_MS 10000
#define LINGER_MAX_BYTES (64u * 1024u * 1024u)
#define LINGER_MAX_SOCKETS 64

typedef struct linger_fd {
    http_server_t *srv;
    evutil_socket_t fd;
    struct event *ev;
    int64_t until_ms;
    size_t dropped;
    struct linger_fd *prev, *next;
} linger_fd_t;

static void linger_end(linger_fd_t *l)
{
    http_server_t *srv = l->srv;
    if (l->prev != NULL) {
        l->prev->next = l->next;
    } else {
        srv->lingering = l->next;
    }
    if (l->next != NULL) {
        l->next->prev = l->prev;
    }
    srv->nlingering--;
    event_free(l->ev);
    evutil_closesocket(l->fd);
    free(l);
}

static void linger_on_read(evutil_socket_t fd, short what, void *arg)
{
    linger_fd_t *l = arg;
    if ((what & EV_TIMEOUT) != 0 || now_mono_ms() >= l->until_ms) {
        linger_end(l);
        return;
    }
    char scratch[16384];
    for (int i = 0; i < 16; i++) { /* then back to the loop: others' turn */
        ssize_t n = recv(fd, scratch, sizeof(scratch), 0);
        if (n > 0) {
            l->dropped += (size_t)n;
            if (l->dropped > LINGER_MAX_BYTES) {
                linger_end(l);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            return; /* more later: the pause restarts */
        }
        linger_end(l); /* EOF or an error */
        return;
    }
}

/* Takes over fd's socket for the drain; false when it cannot (the caller's
 * close then happens as usual). */
static bool linger_start(http_server_t *srv, evutil_socket_t fd)
{
    if (fd < 0 || srv->nlingering >= LINGER_MAX_SOCKETS) {
        return false;
    }
    linger_fd_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return false;
    }
    l->fd = dup(fd);
    if (l->fd < 0) {
        free(l);
        return false;
    }
    l->srv = srv;
    l->until_ms = now_mono_ms() + LINGER_MAX_MS;
    l->ev = event_new(srv->base, l->fd, EV_READ | EV_PERSIST, linger_on_read, l);
    struct timeval pause = {LINGER_PAUSE_MS / 1000, (LINGER_PAUSE_MS % 1000) * 1000};
    if (l->ev == NULL || evutil_make_socket_nonblocking(l->fd) != 0 ||
        shutdown(l->fd, SHUT_WR) != 0 || event_add(l->ev, &pause) != 0) {
        if (l->ev != NULL) {
            event_free(l->ev);
        }
        evutil_closesocket(l->fd);
        free(l);
        return false;
    }
    l->next = srv->lingering;
    if (l->next != NULL) {
        l->next->prev = l;
    }
    srv->lingering = l;
    srv->nlingering++;
    return true;
}

static void conn_unlink_free(http_conn_t *conn)
{
    http_server_t *srv = conn->srv;
    if (conn->prev != NULL) {
        conn->prev->next = conn->next;
    } else if (srv->conns == conn) {
        srv->conns = conn->next;
    }
    if (conn->next != NULL) {
        conn->next->prev = conn->prev;
    }
    if (srv->reading == conn) {
        srv->reading = NULL;
    }
    if (conn->admitted) {
        srv->nconns--;
    }
    if (conn->probe_only) {
        srv->nprobe--;
    }
    if (conn->input_cb != NULL && conn->bev != NULL) {
        evbuffer_remove_cb_entry(bufferevent_get_input(conn->bev), conn->input_cb);
    }
    if (conn->output_cb != NULL && conn->bev != NULL) {
        evbuffer_remove_cb_entry(bufferevent_get_output(conn->bev), conn->output_cb);
    }
    if (conn->fix_ev != NULL) {
        event_free(conn->fix_ev);
    }
    if (conn->req != NULL) {
        conn->req->conn = NULL;
    }
    if (conn->setup_ev != NULL) {
        event_free(conn->setup_ev);
    }
    if (conn->deadline_ev != NULL) {
        event_free(conn->deadline_ev);
    }
    metric_set(srv->connections, (double)(srv->nconns + srv->nprobe));
    free(conn);
}

/* evhttp's close callback, set once per connection: libevent is freeing it. */
static void conn_on_close(struct evhttp_connection *evcon, void *arg)
{
    http_conn_t *conn = arg;
    if (conn->linger && conn->bev != NULL) {
        (void)linger_start(conn->srv, bufferevent_getfd(conn->bev));
    }
    if (conn->req != NULL) {
        http_req_on_close(evcon, conn->req);
    }
    conn_unlink_free(conn);
}

static void conn_arm_deadline(http_conn_t *conn)
{
    conn->phase = CONN_HEADERS;
    conn->eol = 0;
    struct timeval tv = {conn->srv->limits.header_timeout_ms / 1000,
                         (conn->srv->limits.header_timeout_ms % 1000) * 1000};
    evtimer_add(conn->deadline_ev, &tv);
}

/* Scans bytes of the head for its end (an empty line: "\n\n" or "\n\r\n",
 * as evhttp reads lines). True at the end. */
static bool conn_scan_head(http_conn_t *conn, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (conn->eol != 0) {
                return true;
            }
            conn->eol = 1;
        } else if (p[i] == '\r' && conn->eol == 1) {
            conn->eol = 2;
        } else {
            conn->eol = 0;
        }
    }
    return false;
}

/* Called by the input evbuffer each time bytes are read from the socket,
 * before evhttp parses them: the header deadline starts with the first byte
 * of a request (or at accept) and ends with the empty line after the headers;
 * each byte resets evhttp's idle timeout, never this deadline. */
static void conn_on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    http_conn_t *conn = arg;
    if (info->n_added == 0) {
        return;
    }
    conn->srv->reading = conn;
    if (conn->phase == CONN_BODY) {
        return;
    }
    if (conn->phase == CONN_IDLE) {
        conn_arm_deadline(conn);
    }
    size_t len = evbuffer_get_length(buf);
    if (info->n_added > len) {
        return;
    }
    struct evbuffer_ptr pos;
    if (evbuffer_ptr_set(buf, &pos, len - info->n_added, EVBUFFER_PTR_SET) != 0) {
        return;
    }
    struct evbuffer_iovec vec[16];
    int nvec = evbuffer_peek(buf, (ev_ssize_t)info->n_added, &pos, vec, 16);
    size_t left = info->n_added;
    for (int i = 0; i < nvec && i < 16 && left > 0; i++) {
        size_t n = vec[i].iov_len < left ? vec[i].iov_len : left;
        if (conn_scan_head(conn, vec[i].iov_base, n)) {
            conn->phase = CONN_BODY;
            evtimer_del(conn->deadline_ev);
            return;
        }
        left -= n;
    }
}

static const char too_large_reply[] =
    "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n"
    "Content-Length: 80\r\n\r\n"
    "{\"error\":{\"code\":\"body_too_large\",\"message\":\"the request body is over the cap\"}}";

/* libevent answers a body over evhttp_set_max_body_size() itself, with an
 * HTML page and no hook (2.1). A reply that starts while the request is still
 * being read is one of libevent's own; when it is that 413, it is swapped for
 * the JSON one before it is written (the write waits for the next poll). */
static void conn_fix_reply(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_conn_t *conn = arg;
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    unsigned char head[13];
    if (evbuffer_copyout(out, head, sizeof(head)) != (ev_ssize_t)sizeof(head) ||
        (memcmp(head, "HTTP/1.1 413 ", 13) != 0 && memcmp(head, "HTTP/1.0 413 ", 13) != 0) ||
        evbuffer_search(out, "<HTML>", 6, NULL).pos < 0) {
        return;
    }
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_add(out, too_large_reply, sizeof(too_large_reply) - 1);
    evbuffer_freeze(out, 1);
    conn->linger = true; /* the rest of the body may still be coming */
}

static void conn_on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    http_conn_t *conn = arg;
    if (info->n_added > 0 && info->orig_size == 0 && conn->phase != CONN_IDLE) {
        event_active(conn->fix_ev, EV_TIMEOUT, 1);
    }
    (void)buf;
}

static void conn_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_conn_t *conn = arg;
    log_info("http: closed a connection from %s: no complete request head within %d ms", conn->peer,
             conn->srv->limits.header_timeout_ms);
    metric_add(conn->srv->conn_refused, 1, "header_timeout");
    evhttp_connection_free(conn->evcon); /* conn_on_close frees conn */
}

static size_t peer_count(const http_server_t *srv, const http_conn_t *self)
{
    size_t n = 0;
    for (const http_conn_t *c = srv->conns; c != NULL; c = c->next) {
        if (c != self && (c->admitted || c->probe_only) && strcmp(c->peer, self->peer) == 0) {
            n++;
        }
    }
    return n;
}

/* Right after accept (evhttp has made the connection on our bufferevent):
 * the caps, then the header deadline. */
static void conn_setup(evutil_socket_t fd_unused, short what, void *arg)
{
    (void)fd_unused;
    (void)what;
    http_conn_t *conn = arg;
    http_server_t *srv = conn->srv;
    void *cbarg = NULL;
    bufferevent_getcb(conn->bev, NULL, NULL, NULL, &cbarg);
    evutil_socket_t fd = bufferevent_getfd(conn->bev);
    if (cbarg == NULL || fd < 0) {
        conn->bev = NULL;
        conn_unlink_free(conn);
        return;
    }
    conn->evcon = cbarg;
    evhttp_connection_set_closecb(conn->evcon, conn_on_close, conn);
    conn->input_cb = evbuffer_add_cb(bufferevent_get_input(conn->bev), conn_on_input, conn);
    conn->output_cb = evbuffer_add_cb(bufferevent_get_output(conn->bev), conn_on_output, conn);

    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    memcpy(conn->peer, "-", 2);
    if (getpeername(fd, (struct sockaddr *)&ss, &sslen) == 0) {
        const void *addr = NULL;
        if (ss.ss_family == AF_INET) {
            addr = &((struct sockaddr_in *)&ss)->sin_addr;
        } else if (ss.ss_family == AF_INET6) {
            addr = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        }
        if (addr == NULL || inet_ntop(ss.ss_family, addr, conn->peer, sizeof(conn->peer)) == NULL) {
            memcpy(conn->peer, "-", 2);
        }
    }

    const http_limits_t *lim = &srv->limits;
    bool process_ok = lim->max_connections == 0 || srv->nconns < lim->max_connections;
    bool peer_ok =
        lim->max_connections_per_peer == 0 || peer_count(srv, conn) < lim->max_connections_per_peer;
    if (process_ok && peer_ok) {
        conn->admitted = true;
        srv->nconns++;
    } else if (srv->nprobe < HTTP_PROBE_RESERVE) {
        conn->probe_only = true;
        srv->nprobe++;
        metric_add(srv->conn_refused, 1, process_ok ? "peer_cap_probe_slot" : "cap_probe_slot");
    } else {
        metric_add(srv->conn_refused, 1, process_ok ? "peer_cap" : "cap");
        log_warn("http: refused a connection from %s: %s cap reached", conn->peer,
                 process_ok ? "per-peer" : "connection");
        ssize_t sent =
            send(fd, refused_reply, sizeof(refused_reply) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent;
        evhttp_connection_free(conn->evcon); /* conn_on_close frees conn */
        return;
    }
    metric_set(srv->connections, (double)(srv->nconns + srv->nprobe));
    conn_arm_deadline(conn);
}

/* evhttp's bufferevent factory: called for each accepted connection before
 * evhttp sets the socket on it. No fd yet, so the rest waits for conn_setup,
 * made active now: it runs before the loop polls again, so before any byte
 * of the connection is read. */
static struct bufferevent *conn_new(struct event_base *base, void *arg)
{
    http_server_t *srv = arg;
    http_conn_t *conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        return NULL; /* evhttp makes its own: an untracked connection */
    }
    conn->srv = srv;
    conn->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    conn->setup_ev = event_new(base, -1, 0, conn_setup, conn);
    conn->deadline_ev = evtimer_new(base, conn_on_deadline, conn);
    conn->fix_ev = event_new(base, -1, 0, conn_fix_reply, conn);
    if (conn->bev == NULL || conn->setup_ev == NULL || conn->deadline_ev == NULL ||
        conn->fix_ev == NULL) {
        if (conn->bev != NULL) {
            bufferevent_free(conn->bev);
        }
        if (conn->setup_ev != NULL) {
            event_free(conn->setup_ev);
        }
        if (conn->deadline_ev != NULL) {
            event_free(conn->deadline_ev);
        }
        if (conn->fix_ev != NULL) {
            event_free(conn->fix_ev);
        }
        free(conn);
        return NULL;
    }
    conn->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = conn;
    }
    srv->conns = conn;
    event_active(conn->setup_ev, EV_TIMEOUT, 1);
    return conn->bev;
}

/* The tracked connection of evcon: the one just read from, else a search. */
static http_conn_t *conn_of(http_server_t *srv, struct evhttp_connection *evcon)
{
    if (evcon == NULL) {
        return NULL;
    }
    if (srv->reading != NULL && srv->reading->evcon == evcon) {
        return srv->reading;
    }
    for (http_conn_t *c = srv->conns; c != NULL; c = c->next) {
        if (c->evcon == evcon) {
            return c;
        }
    }
    return NULL;
}

void http_server_set_limits(http_server_t *srv, const http_limits_t *limits)
{
    if (srv == NULL || limits == NULL) {
        return;
    }
    srv->limits = *limits;
    if (srv->limits.header_timeout_ms <= 0) {
        srv->limits.header_timeout_ms = HTTP_DEFAULT_HEADER_TIMEOUT_MS;
    }
    if (srv->limits.idle_timeout_ms <= 0) {
        srv->limits.idle_timeout_ms = HTTP_DEFAULT_IDLE_TIMEOUT_MS;
    }
    struct timeval tv = {srv->limits.idle_timeout_ms / 1000,
                         (srv->limits.idle_timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(srv->http, &tv);
}

size_t http_server_connections(const http_server_t *srv)
{
    return srv != NULL ? srv->nconns + srv->nprobe : 0;
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

/* The client behind a trusted proxy: every X-Forwarded-For header, in order
 * (trusted_proxies.h). The peer stays the connection's for the caps. */
static void forwarded_client(http_server_t *srv, http_req_t *req)
{
    const char *values[TRUSTED_PROXIES_MAX_HOPS];
    size_t n = 0;
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req->ev);
    for (struct evkeyval *h = headers != NULL ? headers->tqh_first : NULL; h != NULL;
         h = h->next.tqe_next) {
        if (strcasecmp(h->key, "X-Forwarded-For") == 0) {
            if (n == TRUSTED_PROXIES_MAX_HOPS) { /* keep the last ones: the walk starts there */
                memmove(values, values + 1, (n - 1) * sizeof(values[0]));
                n--;
            }
            values[n++] = h->value;
        }
    }
    char client[sizeof(req->peer)];
    trusted_proxies_client(srv->trusted, req->peer, values, n, client, sizeof(client));
    snprintf(req->peer, sizeof(req->peer), "%s", client);
}

void http_server_set_trusted_proxies(http_server_t *srv, const trusted_proxies_t *l)
{
    srv->trusted = l;
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
        if (trusted_proxies_count(srv->trusted) > 0 &&
            trusted_proxies_match(srv->trusted, req->peer)) {
            forwarded_client(srv, req);
        }
        req->conn = conn_of(srv, req->evcon);
        if (req->conn != NULL) {
            /* The request is complete: the head's deadline is over. */
            req->conn->req = req;
            req->conn->phase = CONN_IDLE;
            evtimer_del(req->conn->deadline_ev);
        } else {
            evhttp_connection_set_closecb(req->evcon, http_req_on_close, req);
        }
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
    if (req->conn != NULL && req->conn->probe_only) {
        /* A slot past the caps: health probes only, then the connection closes. */
        http_reply_header(req, "Connection", "close");
        if (found->fn != handle_healthz && found->fn != handle_readyz) {
            http_reply_header(req, "Retry-After", "1");
            http_reply_error(req, 503, "too_many_connections", "too many open connections");
            return;
        }
    }
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
    /* libevent enforces the body cap while reading: a declared length over
     * it is refused as soon as the headers are in, a chunked body as soon as
     * it passes the cap (see the header comment). */
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->max_body);
    evhttp_set_max_headers_size(srv->http, HTTP_MAX_HEADERS_BYTES);
    evhttp_set_bevcb(srv->http, conn_new, srv);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(srv->http, handle_request, srv);

    srv->requests_total =
        metrics_counter("http_requests_total", "HTTP requests served", "method,route,status");
    srv->request_seconds = metrics_histogram("http_request_duration_seconds",
                                             "Time from request to reply", "route", NULL, 0);
    srv->connections = metrics_gauge("http_connections", "Open HTTP connections", NULL);
    srv->conn_refused = metrics_counter("http_connections_refused_total",
                                        "Connections refused or closed by a limit", "reason");
    http_limits_t limits = {HTTP_DEFAULT_MAX_CONNECTIONS, HTTP_DEFAULT_MAX_CONNECTIONS_PER_PEER,
                            HTTP_DEFAULT_HEADER_TIMEOUT_MS, HTTP_DEFAULT_IDLE_TIMEOUT_MS};
    http_server_set_limits(srv, &limits);

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
    /* Frees every connection; our close callback forgets attached requests
     * and frees the connection's tracking. */
    evhttp_free(srv->http);
    while (srv->conns != NULL) { /* accepted, never set up */
        srv->conns->bev = NULL;
        conn_unlink_free(srv->conns);
    }
    while (srv->lingering != NULL) {
        linger_end(srv->lingering);
    }
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
