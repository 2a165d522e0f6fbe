/*
 * http_server_internal.h — the parts of the http_server module, and what
 * they share. Private to them; the public API is http_server.h.
 *
 *   http_server.c   the server: listeners, routing, the built-in routes and
 *                   the one evhttp callback that takes a request through them
 *   http_request.c  the request as it came in: path, query, body, request id,
 *                   and the http_req_* accessors
 *   http_reply.c    the reply: http_reply_*, headers, the access log line and
 *                   metrics, then the end of the request
 */
#ifndef CA_HTTP_SERVER_INTERNAL_H
#define CA_HTTP_SERVER_INTERNAL_H

#include "http_server.h"
#include "metrics.h"
#include "trusted_proxies.h"

#include <event2/http.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_PARAMS 16
#define HTTP_REQUEST_ID_MAX 64

/* One accepted connection, from accept to close (http_server.c). */
typedef enum { CONN_HEADERS, CONN_BODY, CONN_IDLE } conn_phase_t;

typedef struct http_conn {
    http_server_t *srv;
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until set up */
    struct event *setup_ev;          /* runs once, right after accept */
    struct event *deadline_ev;       /* the header deadline */
    struct evbuffer_cb_entry *input_cb;
    struct evbuffer_cb_entry *output_cb;
    struct event *fix_ev; /* rewrites libevent's own HTML 413 as our JSON one */
    http_req_t *req;      /* the request waiting for its reply, if any */
    conn_phase_t phase;
    unsigned char eol; /* header-end scanner: 0 mid-line, 1 line start, 2 CR at line start */
    bool linger;       /* refused mid-body (413): drain the rest after the reply */
    bool admitted;     /* counted in srv->nconns */
    bool probe_only;   /* past a cap: health probes only, counted in srv->nprobe */
    char peer[64];
    struct http_conn *prev;
    struct http_conn *next;
} http_conn_t;

typedef struct listener {
    struct evhttp_bound_socket *handle;
    struct listener *next;
} listener_t;

struct http_server {
    struct event_base *base;
    struct evhttp *http;
    size_t max_body;
    struct route *routes; /* http_server.c */
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
    http_limits_t limits;
    http_conn_t *conns;   /* every tracked connection */
    http_conn_t *reading; /* the connection whose bytes were read last */
    size_t nconns;        /* admitted within the caps */
    size_t nprobe;        /* admitted to a probe slot */
    metric_t *connections;
    metric_t *conn_refused;
    const trusted_proxies_t *trusted; /* X-Forwarded-For is read only from these peers */
    struct linger_fd *lingering;      /* sockets drained after a 413 (http_server.c) */
    size_t nlingering;
};

struct http_req {
    http_server_t *srv;
    struct evhttp_request *ev; /* NULL once libevent freed it */
    struct evhttp_connection *evcon;
    http_conn_t *conn; /* NULL when the connection is not tracked (or gone) */
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
    int64_t started_us; /* now_mono_us() at arrival */
    http_req_t *prev;
    http_req_t *next;
};

/* ---- http_request.c ---- */

/* Frees n strings and the vector (NULL is ignored). */
void http_strings_free(char **v, size_t n);
/* Splits "/a/b/c" (after the leading '/') into copies of a, b, c. 0 or -1. */
int http_path_split(const char *path, char ***out, size_t *nout);
/* Joins segments with '/' (and a leading one when asked); a new string. */
char *http_path_join(char *const *segs, size_t n, bool leading_slash);
/* A client's X-Request-Id worth keeping: 1-64 of [A-Za-z0-9._-]. */
bool http_req_id_valid(const char *id);
/* A new 16-hex-digit request id into out (17 bytes). */
void http_req_id_generate(char *out);
const char *http_method_name(enum evhttp_cmd_type cmd);
/* Fills req->segs and req->path from the raw path, each segment decoded;
 * -1 for an invalid path (an encoded NUL or '/', "." or ".."). */
int http_req_parse_path(http_req_t *req, const char *raw);
/* Parses "a=1&b=x%20y" into decoded pairs ('+' is a space). 0 or -1. */
int http_req_parse_query(http_req_t *req, const char *query);
/* Copies the body (NUL-terminated) into req->body. 0 or -1 (out of memory). */
int http_req_read_body(http_req_t *req);
/* True when Content-Length or the bytes read pass the server's cap. */
bool http_req_body_too_large(http_req_t *req);
/* Unlinks the request from the server's live list and frees it. */
void http_req_free(http_req_t *req);
/* evhttp's close callback for the request's connection: the client is gone. */
void http_req_on_close(struct evhttp_connection *evcon, void *arg);

/* ---- http_reply.c ---- */

/* The one way a reply leaves: headers, send, access log, free (or, inside the
 * handler, left for handle_request to free and flush). */
void http_reply_send(http_req_t *req, int status, const char *content_type, bool json,
                     const void *data, size_t len);
/* Writes what evhttp queued on the connection now, in the same iteration. */
void http_reply_write_now(struct evhttp_connection *evcon);

#endif
