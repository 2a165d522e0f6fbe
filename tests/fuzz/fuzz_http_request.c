/*
 * fuzz_http_request — the HTTP request path of common/http_server, whole: the
 * bytes are one client's side of a connection to a real http_server_t on
 * 127.0.0.1 (libevent's request parser, then http_request.c's path, query,
 * body cap and X-Request-Id handling, the routing with path parameters, and
 * http_req_json as the routes call it).
 *
 * Each input: connect, write the bytes, half-close, and run the server's
 * event loop until it closes the connection. A server that neither answers
 * nor closes within HANG_SECONDS is a bug: the target aborts.
 */
#include "http_server.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY 4096
#define HANG_SECONDS 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static http_server_t *srv;
static struct sockaddr_in server_addr;

/* A route the way the gateway's handlers use a request: parameters, query,
 * headers, then the JSON body. */
static void handle_thing(http_req_t *req, void *arg)
{
    const char *id = http_req_param(req, "id");
    const char *cursor = http_req_query(req, "cursor");
    const char *cookie = http_req_header(req, "Cookie");
    size_t len = 0;
    (void)http_req_body(req, &len);
    cJSON *body = http_req_json(req);
    if (body == NULL) {
        return; /* http_req_json answered 400 */
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "id", id != NULL ? id : "");
    cJSON_AddStringToObject(out, "cursor", cursor != NULL ? cursor : "");
    cJSON_AddBoolToObject(out, "cookie", cookie != NULL);
    cJSON_AddNumberToObject(out, "keys", cJSON_GetArraySize(body));
    http_reply_json(req, 200, out);
}

static void handle_tail(http_req_t *req, void *arg)
{
    const char *path = http_req_param(req, "path");
    http_reply_data(req, 200, "text/plain", path != NULL ? path : "",
                    path != NULL ? strlen(path) : 0);
}

static void setup(void)
{
    log_init("fuzz", CA_LOG_ERROR);
    base = event_base_new();
    srv = http_server_new(base, MAX_BODY);
    if (srv == NULL || http_server_listen(srv, "127.0.0.1", 0) != 0 ||
        http_server_route(srv, "POST", "/api/things/{id}", handle_thing, NULL) != 0 ||
        http_server_route(srv, "PATCH", "/api/things/{id}", handle_thing, NULL) != 0 ||
        http_server_route(srv, "GET", "/static/{path*}", handle_tail, NULL) != 0) {
        fprintf(stderr, "fuzz_http_request: cannot start the server\n");
        abort();
    }
    memset(&server_addr, 0, sizeof(server_addr));
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)http_server_port(srv));
    server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (srv == NULL) {
        setup();
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fprintf(stderr, "fuzz_http_request: socket: %s\n", strerror(errno));
        abort();
    }
    /* Non-blocking: libFuzzer's timer signals cannot interrupt it, and on
     * loopback the kernel completes it without the server's accept. */
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) != 0 &&
        errno != EINPROGRESS && errno != EINTR) {
        fprintf(stderr, "fuzz_http_request: connect: %s\n", strerror(errno));
        abort();
    }
    size_t sent = 0;
    double deadline = now_s() + HANG_SECONDS;
    char sink[4096];
    for (;;) {
        if (sent < size) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0) {
                sent += (size_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR && errno != ENOTCONN) {
                sent = size; /* the server closed early: fine */
            }
            if (sent == size) {
                shutdown(fd, SHUT_WR);
            }
        } else if (size == 0) {
            shutdown(fd, SHUT_WR);
        }
        ssize_t r = recv(fd, sink, sizeof(sink), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR && errno != ENOTCONN)) {
            break; /* the server closed the connection */
        }
        if (now_s() > deadline) {
            fprintf(stderr, "fuzz_http_request: no answer and no close in %d s\n", HANG_SECONDS);
            abort();
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    close(fd);
    /* Let the server see the close and free what it holds. */
    for (int i = 0; i < 4; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    return 0;
}
