/* Unit tests for common/http_server.c: a real server on an event_base in its
 * own thread (port 0), driven over plain sockets from the test thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "now.h"

#define MAX_BODY (1024 * 1024)

/* ---- the server under test ---- */

typedef struct {
    struct event_base *base;
    http_server_t *srv;
    pthread_t thread;
    bool running;
    int port;
    char log_path[64];
    int log_fd;
    atomic_bool ready;
    atomic_bool loop_running;
    atomic_int data_freed;
    atomic_int delayed_replies;
    http_req_t *never_replied;
} fixture_t;

static fixture_t fx;

static void *loop_thread(void *arg)
{
    event_base_loop(fx.base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void loop_started(evutil_socket_t fd, short what, void *arg)
{
    atomic_store(&fx.loop_running, true);
}

/* Returns once the loop runs, so that a later loopbreak is not lost (a break
 * requested before event_base_loop starts is reset by it). */
static void start_loop(void)
{
    atomic_store(&fx.loop_running, false);
    struct timeval now = {0, 0};
    assert_int_equal(event_base_once(fx.base, -1, EV_TIMEOUT, loop_started, NULL, &now), 0);
    assert_int_equal(pthread_create(&fx.thread, NULL, loop_thread, NULL), 0);
    fx.running = true;
    while (!atomic_load(&fx.loop_running)) {
        usleep(1000);
    }
}

static void stop_loop(void)
{
    if (fx.running) {
        event_base_loopbreak(fx.base);
        pthread_join(fx.thread, NULL);
        fx.running = false;
    }
}

/* ---- handlers ---- */

static void h_job(http_req_t *req, void *arg)
{
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "id", http_req_param(req, "id"));
    cJSON_AddStringToObject(body, "path", http_req_path(req));
    cJSON_AddStringToObject(body, "method", http_req_method(req));
    const char *status = http_req_query(req, "status");
    cJSON_AddStringToObject(body, "status", status != NULL ? status : "(none)");
    http_reply_json(req, 200, body);
}

static void h_static(http_req_t *req, void *arg)
{
    const char *rest = http_req_param(req, "file");
    http_reply_data(req, 200, "text/plain", rest, strlen(rest));
}

static void h_any(http_req_t *req, void *arg)
{
    http_reply_data(req, 200, "text/plain", http_req_method(req), strlen(http_req_method(req)));
}

static void h_echo_len(http_req_t *req, void *arg)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    /* No cmocka asserts on the server thread: a broken check shows as a 500. */
    if (body == NULL || body[len] != '\0') {
        http_reply_error(req, 500, "check", "body not NUL-terminated");
        return;
    }
    char text[64];
    int n = snprintf(text, sizeof(text), "%zu", len);
    http_reply_data(req, 201, "text/plain", text, (size_t)n);
}

static void h_json(http_req_t *req, void *arg)
{
    cJSON *in = http_req_json(req);
    if (in == NULL) {
        return; /* already replied 400 */
    }
    if (http_req_json(req) != in) { /* parsed once, owned by req */
        http_reply_error(req, 500, "check", "parsed twice");
        return;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "a", cJSON_GetNumberValue(cJSON_GetObjectItem(in, "a")));
    http_reply_json(req, 200, out);
}

static void h_headers(http_req_t *req, void *arg)
{
    http_reply_header(req, "X-Custom", "yes");
    http_reply_header(req, "X-Bad", "a\r\nInjected: 1"); /* refused */
    http_reply_header(req, "Cache-Control", "max-age=60");
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "peer", http_req_peer(req));
    cJSON_AddStringToObject(body, "id", http_req_id(req));
    const char *agent = http_req_header(req, "user-agent");
    cJSON_AddStringToObject(body, "agent", agent != NULL ? agent : "");
    http_reply_json(req, 200, body);
    /* A second reply is ignored, not sent. */
    http_reply_error(req, 500, "twice", "should not be sent");
}

static void h_redirect(http_req_t *req, void *arg)
{
    http_reply_redirect(req, 302, "/next");
}

static void count_free(void *data)
{
    free(data);
    atomic_fetch_add(&fx.data_freed, 1);
}

static void delayed_reply(evutil_socket_t fd, short what, void *arg)
{
    http_req_t *req = arg;
    int *stamp = http_req_data(req);
    if (stamp != NULL && *stamp == 4242) {
        atomic_fetch_add(&fx.delayed_replies, 1);
    }
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "late", "yes");
    http_reply_json(req, 200, body);
}

static void h_slow(http_req_t *req, void *arg)
{
    int *stamp = malloc(sizeof(*stamp));
    if (stamp == NULL) {
        http_reply_error(req, 500, "check", "out of memory");
        return;
    }
    *stamp = 4242;
    http_req_set_data(req, stamp, count_free);
    struct timeval delay = {0, 200 * 1000};
    if (event_base_once(fx.base, -1, EV_TIMEOUT, delayed_reply, req, &delay) != 0) {
        http_reply_error(req, 500, "check", "event_base_once failed");
    }
}

static void h_never(http_req_t *req, void *arg)
{
    http_req_set_data(req, malloc(16), count_free);
    fx.never_replied = req;
}

static bool ready_check(void *arg, char *why, size_t whylen)
{
    if (atomic_load(&fx.ready)) {
        return true;
    }
    snprintf(why, whylen, "postgres unreachable");
    return false;
}

static int setup(void **state)
{
    memset(&fx, 0, sizeof(fx));
    snprintf(fx.log_path, sizeof(fx.log_path), "/tmp/test_http_server_log_XXXXXX");
    fx.log_fd = mkstemp(fx.log_path);
    assert_true(fx.log_fd >= 0);
    log_init("test_http_server", CA_LOG_INFO);
    log_set_fd(fx.log_fd);

    fx.base = event_base_new();
    assert_non_null(fx.base);
    fx.srv = http_server_new(fx.base, MAX_BODY);
    assert_non_null(fx.srv);
    assert_int_equal(http_server_route(fx.srv, "GET", "/api/jobs/{id}", h_job, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "DELETE", "/api/jobs/{id}", h_job, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "GET", "/static/{file*}", h_static, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "*", "/any", h_any, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "POST", "/echo", h_echo_len, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "POST", "/json", h_json, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "GET", "/headers", h_headers, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "GET", "/redirect", h_redirect, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "GET", "/slow", h_slow, NULL), 0);
    assert_int_equal(http_server_route(fx.srv, "GET", "/never", h_never, NULL), 0);
    assert_int_equal(http_server_listen(fx.srv, "127.0.0.1", 0), 0);
    fx.port = http_server_port(fx.srv);
    assert_true(fx.port > 0);
    start_loop();
    return 0;
}

static int teardown(void **state)
{
    stop_loop();
    http_server_free(fx.srv);
    event_base_free(fx.base);
    metrics_shutdown();
    log_set_fd(-1);
    close(fx.log_fd);
    unlink(fx.log_path);
    return 0;
}

/* ---- a tiny HTTP/1.1 client over a plain socket ---- */

typedef struct {
    int status;
    char *raw;  /* whole response */
    char *body; /* points into raw */
    size_t body_len;
} response_t;

static void response_free(response_t *r)
{
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)fx.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; /* the server may close early; the reply tells */
        }
        data += n;
        len -= (size_t)n;
    }
}

static void send_request(int fd, const char *method, const char *target, const char *headers,
                         const char *body, size_t body_len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, target, headers != NULL ? headers : "", body_len);
    assert_true(n > 0 && (size_t)n < sizeof(head));
    send_all(fd, head, (size_t)n);
    if (body_len > 0) {
        send_all(fd, body, body_len);
    }
}

static void read_response(int fd, response_t *r)
{
    size_t cap = 4096;
    size_t len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    memset(r, 0, sizeof(*r));
    r->raw = buf;
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1) {
        status = -1;
    }
    r->status = status;
    char *end = strstr(buf, "\r\n\r\n");
    r->body = end != NULL ? end + 4 : buf + len;
    r->body_len = (size_t)(buf + len - r->body);
}

static void do_request(const char *method, const char *target, const char *headers,
                       const char *body, size_t body_len, response_t *r)
{
    int fd = connect_server();
    assert_true(fd >= 0);
    send_request(fd, method, target, headers, body, body_len);
    read_response(fd, r);
    close(fd);
}

/* Header value (case-insensitive name) copied into out; false when absent. */
static bool response_header(const response_t *r, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *line = strstr(r->raw, "\r\n");
    while (line != NULL && line + 2 < r->body) {
        line += 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ') {
                v++;
            }
            const char *e = strstr(v, "\r\n");
            size_t vlen = (size_t)(e - v);
            if (vlen >= outlen) {
                vlen = outlen - 1;
            }
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return true;
        }
        line = strstr(line, "\r\n");
    }
    return false;
}

static void assert_error_code(const response_t *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    cJSON *json = cJSON_ParseWithLength(r->body, r->body_len);
    assert_non_null(json);
    cJSON *error = cJSON_GetObjectItem(json, "error");
    assert_non_null(error);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(error, "code")), code);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(error, "message")));
    cJSON_Delete(json);
    char ct[128];
    assert_true(response_header(r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/json");
}

static char *json_field(const response_t *r, const char *name)
{
    cJSON *json = cJSON_ParseWithLength(r->body, r->body_len);
    assert_non_null(json);
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(json, name));
    char *copy = strdup(v != NULL ? v : "(missing)");
    cJSON_Delete(json);
    return copy;
}

static char *read_log(void)
{
    off_t size = lseek(fx.log_fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(pread(fx.log_fd, text, (size_t)size, 0), size);
    return text;
}

/* ---- tests ---- */

static void test_routing_params(void **state)
{
    static const struct {
        const char *method;
        const char *target;
        const char *id;
        const char *path;
        const char *status;
    } cases[] = {
        {"GET", "/api/jobs/42", "42", "/api/jobs/42", "(none)"},
        {"DELETE", "/api/jobs/42", "42", "/api/jobs/42", "(none)"},
        {"GET", "/api/jobs/a%20b?status=done", "a b", "/api/jobs/a b", "done"},
        {"GET", "/api/jobs/x?status=a+b%21&other=1", "x", "/api/jobs/x", "a b!"},
        {"GET", "/api/jobs/x?flag&status=", "x", "/api/jobs/x", ""},
        {"GET", "/api/jobs/%C3%A9t%C3%A9", "\xc3\xa9t\xc3\xa9", "/api/jobs/\xc3\xa9t\xc3\xa9",
         "(none)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        response_t r;
        do_request(cases[i].method, cases[i].target, NULL, NULL, 0, &r);
        assert_int_equal(r.status, 200);
        char *id = json_field(&r, "id");
        char *path = json_field(&r, "path");
        char *status = json_field(&r, "status");
        char *method = json_field(&r, "method");
        assert_string_equal(id, cases[i].id);
        assert_string_equal(path, cases[i].path);
        assert_string_equal(status, cases[i].status);
        assert_string_equal(method, cases[i].method);
        free(id);
        free(path);
        free(status);
        free(method);
        response_free(&r);
    }
}

static void test_tail_and_any_method(void **state)
{
    static const struct {
        const char *target;
        const char *rest;
    } cases[] = {
        {"/static/app.js", "app.js"},
        {"/static/css/site%20v2.css", "css/site v2.css"},
        {"/static/", ""},
        {"/static", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        response_t r;
        do_request("GET", cases[i].target, NULL, NULL, 0, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, strlen(cases[i].rest));
        assert_memory_equal(r.body, cases[i].rest, r.body_len);
        response_free(&r);
    }
    static const char *methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        response_t r;
        do_request(methods[i], "/any", NULL, NULL, 0, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, strlen(methods[i]));
        assert_memory_equal(r.body, methods[i], r.body_len);
        response_free(&r);
    }
}

static void test_not_found_and_method_not_allowed(void **state)
{
    static const char *missing[] = {"/nope",         "/api/jobs", "/api/jobs/",
                                    "/api/jobs/1/2", "/",         "/API/jobs/1"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        response_t r;
        do_request("GET", missing[i], NULL, NULL, 0, &r);
        assert_error_code(&r, 404, "not_found");
        response_free(&r);
    }
    response_t r;
    do_request("GET", "/nope", NULL, NULL, 0, &r);
    assert_true(strncmp(r.raw, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    response_free(&r);

    do_request("PUT", "/api/jobs/1", NULL, "{}", 2, &r);
    assert_error_code(&r, 405, "method_not_allowed");
    char allow[64];
    assert_true(response_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "GET, DELETE");
    response_free(&r);

    do_request("POST", "/healthz", NULL, NULL, 0, &r);
    assert_error_code(&r, 405, "method_not_allowed");
    assert_true(response_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "GET");
    response_free(&r);
}

static void test_bad_paths(void **state)
{
    static const char *bad[] = {
        "/api/jobs/a%00b",       "/static/%2e%2e/etc/passwd",
        "/static/../etc/passwd", "/static/a/%2E%2E/b",
        "/static/a%2fb",         "/static/./x",
        "/api/jobs/%2E",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        response_t r;
        do_request("GET", bad[i], NULL, NULL, 0, &r);
        assert_error_code(&r, 400, "invalid_path");
        response_free(&r);
    }
    /* ".." inside a name is not traversal. */
    response_t r;
    do_request("GET", "/static/a..b", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "a..b", 4);
    response_free(&r);
}

static void test_body_cap(void **state)
{
    size_t big = 2 * 1024 * 1024;
    char *body = malloc(big);
    assert_non_null(body);
    memset(body, 'x', big);

    response_t r;
    do_request("POST", "/echo", NULL, body, big, &r);
    assert_error_code(&r, 413, "body_too_large");
    response_free(&r);

    /* Exactly at the cap is fine, and the body arrives whole. */
    do_request("POST", "/echo", NULL, body, MAX_BODY, &r);
    assert_int_equal(r.status, 201);
    char expected[32];
    snprintf(expected, sizeof(expected), "%d", MAX_BODY);
    assert_int_equal(r.body_len, strlen(expected));
    assert_memory_equal(r.body, expected, r.body_len);
    response_free(&r);

    do_request("POST", "/echo", NULL, body, MAX_BODY + 1, &r);
    assert_error_code(&r, 413, "body_too_large");
    response_free(&r);

    /* A declared length over the cap is refused even with a short body on the wire. */
    int fd = connect_server();
    assert_true(fd >= 0);
    const char *head = "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                       "Content-Length: 1500000\r\n\r\n";
    send_all(fd, head, strlen(head));
    send_all(fd, body, 1500000);
    read_response(fd, &r);
    close(fd);
    assert_error_code(&r, 413, "body_too_large");
    response_free(&r);
    free(body);

    /* Past libevent's hard ceiling (4 x cap + 1 MiB) libevent itself refuses
     * the declared length before reading the body: the status is still 413. */
    fd = connect_server();
    assert_true(fd >= 0);
    const char *huge = "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                       "Content-Length: 104857600\r\n\r\n";
    send_all(fd, huge, strlen(huge));
    read_response(fd, &r);
    close(fd);
    assert_int_equal(r.status, 413);
    response_free(&r);
}

static void test_json_body(void **state)
{
    static const struct {
        const char *body;
        int status;
    } cases[] = {
        {"{\"a\":5}", 200}, {"{\"a\":5} \r\n", 200},
        {"{bad", 400},      {"[1,2]", 400},
        {"\"str\"", 400},   {"", 400},
        {"null", 400},      {"{\"a\":1} trailing", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        response_t r;
        do_request("POST", "/json", "Content-Type: application/json\r\n", cases[i].body,
                   strlen(cases[i].body), &r);
        if (cases[i].status == 400) {
            assert_error_code(&r, 400, "invalid_json");
        } else {
            assert_int_equal(r.status, 200);
            assert_memory_equal(r.body, "{\"a\":5}", 7);
        }
        response_free(&r);
    }
}

static bool is_generated_id(const char *id)
{
    if (strlen(id) != 16) {
        return false;
    }
    for (const char *p = id; *p != '\0'; p++) {
        if (strchr("0123456789abcdef", *p) == NULL) {
            return false;
        }
    }
    return true;
}

static void test_request_id(void **state)
{
    char id[128];
    response_t r;
    do_request("GET", "/healthz", "X-Request-Id: abc-123_X.y\r\n", NULL, 0, &r);
    assert_true(response_header(&r, "X-Request-Id", id, sizeof(id)));
    assert_string_equal(id, "abc-123_X.y");
    response_free(&r);

    char sixty_four[65];
    memset(sixty_four, 'a', 64);
    sixty_four[64] = '\0';
    char header[128];
    snprintf(header, sizeof(header), "X-Request-Id: %s\r\n", sixty_four);
    do_request("GET", "/healthz", header, NULL, 0, &r);
    assert_true(response_header(&r, "X-Request-Id", id, sizeof(id)));
    assert_string_equal(id, sixty_four);
    response_free(&r);

    static const char *rejected[] = {
        "X-Request-Id: bad id!\r\n", "X-Request-Id: a/b\r\n", "X-Request-Id: \"q\"\r\n",
        "X-Request-Id: "
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        NULL};
    char first[32] = "";
    for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
        do_request("GET", "/headers", rejected[i], NULL, 0, &r);
        assert_int_equal(r.status, 200);
        assert_true(response_header(&r, "X-Request-Id", id, sizeof(id)));
        assert_true(is_generated_id(id));
        char *seen = json_field(&r, "id"); /* the handler sees the same id */
        assert_string_equal(seen, id);
        free(seen);
        assert_string_not_equal(id, first); /* a new one each time */
        snprintf(first, sizeof(first), "%s", id);
        response_free(&r);
    }
}

static void test_reply_headers(void **state)
{
    response_t r;
    do_request("GET", "/headers", "User-Agent: cmocka\r\n", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    char v[128];
    assert_true(response_header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    assert_true(response_header(&r, "X-Content-Type-Options", v, sizeof(v)));
    assert_string_equal(v, "nosniff");
    assert_true(response_header(&r, "Cache-Control", v, sizeof(v)));
    assert_string_equal(v, "max-age=60"); /* the handler's own wins */
    assert_true(response_header(&r, "X-Custom", v, sizeof(v)));
    assert_string_equal(v, "yes");
    assert_false(response_header(&r, "X-Bad", v, sizeof(v)));
    assert_false(response_header(&r, "Injected", v, sizeof(v)));
    char *peer = json_field(&r, "peer");
    char *agent = json_field(&r, "agent");
    assert_string_equal(peer, "127.0.0.1");
    assert_string_equal(agent, "cmocka");
    free(peer);
    free(agent);
    assert_null(strstr(r.raw, "twice"));
    response_free(&r);

    do_request("GET", "/api/jobs/1", NULL, NULL, 0, &r);
    assert_true(response_header(&r, "Cache-Control", v, sizeof(v)));
    assert_string_equal(v, "no-store");
    response_free(&r);

    do_request("GET", "/redirect", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_true(response_header(&r, "Location", v, sizeof(v)));
    assert_string_equal(v, "/next");
    response_free(&r);

    do_request("GET", "/static/x", NULL, NULL, 0, &r);
    assert_true(response_header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "text/plain");
    assert_true(response_header(&r, "X-Content-Type-Options", v, sizeof(v)));
    assert_false(response_header(&r, "Cache-Control", v, sizeof(v)));
    response_free(&r);
}

static void test_health_and_ready(void **state)
{
    response_t r;
    do_request("GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen("{\"status\":\"ok\"}"));
    assert_memory_equal(r.body, "{\"status\":\"ok\"}", r.body_len);
    response_free(&r);

    /* No ready callback: ready. */
    do_request("GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "{\"status\":\"ready\"}", r.body_len);
    response_free(&r);

    stop_loop(); /* set_ready is not thread-safe: change it while the loop is idle */
    http_server_set_ready(fx.srv, ready_check, NULL);
    start_loop();
    atomic_store(&fx.ready, false);
    do_request("GET", "/readyz", NULL, NULL, 0, &r);
    assert_error_code(&r, 503, "not_ready");
    assert_non_null(strstr(r.body, "postgres unreachable"));
    response_free(&r);

    atomic_store(&fx.ready, true);
    do_request("GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
}

static void test_metrics_endpoint(void **state)
{
    response_t r;
    for (int i = 0; i < 3; i++) {
        do_request("GET", "/api/jobs/secret-id-1?status=x", NULL, NULL, 0, &r);
        response_free(&r);
    }
    do_request("GET", "/no/such/thing", NULL, NULL, 0, &r);
    response_free(&r);
    do_request("GET", "/metrics", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_true(response_header(&r, "Content-Type", ct, sizeof(ct)));
    assert_non_null(strstr(ct, "text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "# TYPE http_requests_total counter\n"));
    assert_non_null(strstr(
        r.body, "http_requests_total{method=\"GET\",route=\"/api/jobs/{id}\",status=\"200\"} 3\n"));
    assert_non_null(strstr(
        r.body, "http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n"));
    assert_non_null(strstr(r.body, "# TYPE http_request_duration_seconds histogram\n"));
    assert_non_null(
        strstr(r.body, "http_request_duration_seconds_count{route=\"/api/jobs/{id}\"} 3\n"));
    /* The raw path never becomes a label. */
    assert_null(strstr(r.body, "secret-id-1"));
    response_free(&r);
}

static void test_access_log(void **state)
{
    response_t r;
    do_request("GET", "/api/jobs/77?code=4%2F0Abc-secret-oauth-code", "X-Request-Id: log-req-1\r\n",
               NULL, 0, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
    /* The log line is written after the reply: give the loop a moment. */
    char *log = NULL;
    for (int i = 0; i < 50; i++) {
        free(log);
        log = read_log();
        if (strstr(log, "log-req-1") != NULL) {
            break;
        }
        usleep(10 * 1000);
    }
    const char *line = strstr(log, "GET /api/jobs/77 200");
    assert_non_null(line);
    const char *eol = strchr(line, '\n');
    assert_non_null(eol);
    char *one = strndup(line, (size_t)(eol - line));
    assert_non_null(strstr(one, "request_id=log-req-1"));
    assert_non_null(strstr(one, "peer=127.0.0.1"));
    assert_non_null(strstr(one, " ms "));
    free(one);
    assert_null(strstr(log, "secret-oauth-code"));
    assert_null(strstr(log, "code="));
    free(log);

    /* a successful probe is not logged at info level; a failed one is */
    do_request("GET", "/healthz", "X-Request-Id: probe-ok-1\r\n", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
    do_request("GET", "/nope", "X-Request-Id: probe-404-1\r\n", NULL, 0, &r);
    assert_int_equal(r.status, 404);
    response_free(&r);
    log = NULL;
    for (int i = 0; i < 50; i++) {
        free(log);
        log = read_log();
        if (strstr(log, "probe-404-1") != NULL) {
            break;
        }
        usleep(10 * 1000);
    }
    assert_non_null(strstr(log, "probe-404-1"));
    assert_null(strstr(log, "probe-ok-1"));
    free(log);
}

typedef struct {
    response_t r;
    int64_t finished_ms;
} slow_result_t;

static void *slow_client(void *arg)
{
    slow_result_t *res = arg;
    do_request("GET", "/slow", NULL, NULL, 0, &res->r);
    res->finished_ms = now_mono_ms();
    return NULL;
}

static void test_delayed_reply_does_not_block_others(void **state)
{
    slow_result_t slow;
    memset(&slow, 0, sizeof(slow));
    int64_t started = now_mono_ms();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_client, &slow), 0);
    usleep(30 * 1000); /* let the slow request reach its handler */

    response_t fast;
    do_request("GET", "/healthz", NULL, NULL, 0, &fast);
    int64_t fast_done = now_mono_ms();
    assert_int_equal(fast.status, 200);
    response_free(&fast);

    pthread_join(t, NULL);
    assert_int_equal(slow.r.status, 200);
    assert_memory_equal(slow.r.body, "{\"late\":\"yes\"}", slow.r.body_len);
    response_free(&slow.r);
    assert_true(slow.finished_ms - started >= 195);
    assert_true(fast_done < slow.finished_ms); /* served while the slow one waited */
    assert_true(fast_done - started < 180);
    assert_int_equal(atomic_load(&fx.delayed_replies), 1);
    assert_int_equal(atomic_load(&fx.data_freed), 1);
}

static void test_client_gone_before_delayed_reply(void **state)
{
    for (int i = 0; i < 3; i++) {
        int fd = connect_server();
        assert_true(fd >= 0);
        send_request(fd, "GET", "/slow", NULL, NULL, 0);
        usleep(30 * 1000);
        close(fd); /* gone before the 200 ms reply */
    }
    /* The late replies run, are dropped, and free their data. */
    for (int i = 0; i < 100 && atomic_load(&fx.data_freed) < 3; i++) {
        usleep(10 * 1000);
    }
    assert_int_equal(atomic_load(&fx.delayed_replies), 3);
    assert_int_equal(atomic_load(&fx.data_freed), 3);
    /* libevent 2.1 stops reading while a request waits for its reply, so a
     * gone client is usually noticed only when the reply is written: the
     * write fails and libevent frees the connection. ASan checks that no
     * memory is touched after free or leaked on this path. */

    /* The server is still fine. */
    response_t r;
    do_request("GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
}

static void test_free_with_request_pending(void **state)
{
    int fd = connect_server();
    assert_true(fd >= 0);
    send_request(fd, "GET", "/never", NULL, NULL, 0);
    for (int i = 0; i < 100 && fx.never_replied == NULL; i++) {
        usleep(10 * 1000);
    }
    assert_non_null(fx.never_replied);
    /* teardown frees the server with the request unanswered: its data must
     * be freed and nothing may leak (ASan). */
    stop_loop();
    http_server_free(fx.srv);
    fx.srv = NULL;
    assert_int_equal(atomic_load(&fx.data_freed), 1);
    close(fd);
}

/* Replies are written at once (http_server.c write_now): several requests on
 * one keep-alive connection, sent back to back (pipelined), answered by a
 * synchronous handler, an asynchronous one (200 ms timer) and a synchronous
 * one again, in order; the last asks to close. Then HTTP/1.0 without
 * keep-alive closes after its reply. */
static void test_keep_alive_sync_and_async_replies(void **state)
{
    (void)state;
    int fd = connect_server();
    assert_true(fd >= 0);
    const char *reqs = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /api/jobs/77 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    send_all(fd, reqs, strlen(reqs));
    response_t r;
    read_response(fd, &r); /* until the server closes */
    close(fd);
    const char *p1 = strstr(r.raw, "HTTP/1.1 200");
    assert_non_null(p1);
    const char *ok = strstr(p1, "{\"status\":\"ok\"}");
    assert_non_null(ok);
    const char *p2 = strstr(ok, "HTTP/1.1 200");
    assert_non_null(p2);
    const char *p3 = strstr(p2 + 1, "HTTP/1.1 200");
    assert_non_null(p3);
    assert_non_null(strstr(p3, "\"id\":\"77\""));
    assert_null(strstr(p3 + 1, "HTTP/1.1"));
    response_free(&r);

    /* One connection, one request after another (no pipelining). */
    fd = connect_server();
    assert_true(fd >= 0);
    for (int i = 0; i < 3; i++) {
        const char *one = "GET /api/jobs/5 HTTP/1.1\r\nHost: t\r\n\r\n";
        send_all(fd, one, strlen(one));
        char buf[2048];
        size_t len = 0;
        while (len < sizeof(buf) - 1) {
            ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
            assert_true(n > 0);
            len += (size_t)n;
            buf[len] = '\0';
            char *body = strstr(buf, "\r\n\r\n");
            if (body != NULL && strchr(body, '}') != NULL) {
                break;
            }
        }
        assert_non_null(strstr(buf, "HTTP/1.1 200"));
        assert_non_null(strstr(buf, "\"id\":\"5\""));
    }
    close(fd);

    fd = connect_server();
    assert_true(fd >= 0);
    const char *old = "GET /healthz HTTP/1.0\r\n\r\n";
    send_all(fd, old, strlen(old));
    read_response(fd, &r); /* returns at EOF: the server closed */
    close(fd);
    assert_non_null(strstr(r.raw, " 200 "));
    assert_non_null(strstr(r.raw, "{\"status\":\"ok\"}"));
    response_free(&r);
}

static void test_close_listeners(void **state)
{
    response_t r;
    do_request("GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);

    /* An open keep-alive connection survives the drain. */
    int fd = connect_server();
    assert_true(fd >= 0);
    usleep(50 * 1000); /* let the loop accept it */
    stop_loop();
    http_server_close_listeners(fx.srv);
    http_server_close_listeners(fx.srv); /* twice is harmless */
    start_loop();
    send_request(fd, "GET", "/healthz", NULL, NULL, 0);
    read_response(fd, &r);
    close(fd);
    assert_int_equal(r.status, 200);
    response_free(&r);

    assert_int_equal(connect_server(), -1);
}

static void test_listen_on_taken_port_fails(void **state)
{
    http_server_t *other = http_server_new(fx.base, 0);
    assert_non_null(other);
    assert_int_equal(http_server_listen(other, "127.0.0.1", fx.port), -1);
    assert_int_equal(http_server_port(other), 0);
    assert_int_equal(http_server_listen(other, "127.0.0.1", 70000), -1);
    stop_loop(); /* free on the loop's base while it is idle */
    http_server_free(other);
}

static void test_route_registration_errors(void **state)
{
    stop_loop(); /* routes are not to be changed while the loop serves */
    static const char *bad[] = {"no-slash", "/a/{rest*}/b", "/a/{", "/a/x{y}", "/a/{}", "/a/{*}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(http_server_route(fx.srv, "GET", bad[i], h_any, NULL), -1);
    }
    assert_int_equal(http_server_route(fx.srv, NULL, "/x", h_any, NULL), -1);
    assert_int_equal(http_server_route(fx.srv, "GET", "/x", NULL, NULL), -1);
}

/* ---- connection limits ---- */

static void set_limits(size_t max_conns, size_t per_peer, int header_ms, int idle_ms)
{
    stop_loop();
    http_limits_t lim = {max_conns, per_peer, header_ms, idle_ms};
    http_server_set_limits(fx.srv, &lim);
    start_loop();
}

/* Waits up to ms for fd to be readable (a reply or a close); true when it is. */
static bool readable_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/* Lingering close: a client that sends its whole over-cap body before it
 * reads (as most do) still gets the JSON 413, not a connection reset. 16 MiB
 * is far past the socket buffers: without the server draining the rest, the
 * kernel answers the unread bytes with RST and the send fails. */
static void test_body_refused_client_still_sending(void **state)
{
    (void)state;
    const size_t total = 16u * 1024u * 1024u;
    char *body = malloc(total);
    assert_non_null(body);
    memset(body, 'x', total);
    int fd = connect_server();
    assert_true(fd >= 0);
    char head[256];
    snprintf(head, sizeof(head),
             "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Content-Length: %zu\r\n\r\n",
             total);
    send_all(fd, head, strlen(head));
    size_t sent = 0;
    while (sent < total) {
        ssize_t n = send(fd, body + sent, total - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        sent += (size_t)n;
    }
    free(body);
    assert_int_equal(sent, total); /* drained, not reset */
    response_t r;
    read_response(fd, &r);
    close(fd);
    assert_error_code(&r, 413, "body_too_large");
    response_free(&r);
}

static void test_body_refused_while_reading(void **state)
{
    /* A declared length over the cap (3 MiB: under the former 5 MiB hard
     * ceiling) is refused as soon as the headers are in, without the body. */
    int fd = connect_server();
    assert_true(fd >= 0);
    const char *head = "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                       "Content-Length: 3145728\r\n\r\n";
    send_all(fd, head, strlen(head));
    assert_true(readable_within(fd, 2000));
    response_t r;
    read_response(fd, &r);
    close(fd);
    assert_error_code(&r, 413, "body_too_large");
    assert_true(strstr(r.raw, "Connection: close") != NULL);
    response_free(&r);

    /* A chunked body is refused once it passes the cap, while the client is
     * still sending: the reply is there before 2 MiB of 4 MiB went out. */
    fd = connect_server();
    assert_true(fd >= 0);
    const char *chead = "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n";
    send_all(fd, chead, strlen(chead));
    size_t chunk = 64 * 1024;
    char *data = malloc(chunk + 32);
    assert_non_null(data);
    int hl = snprintf(data, 32, "%zx\r\n", chunk);
    memset(data + hl, 'x', chunk);
    memcpy(data + hl + chunk, "\r\n", 2);
    size_t sent = 0;
    bool answered = false;
    while (sent < 4 * 1024 * 1024) {
        if (readable_within(fd, 0)) {
            answered = true;
            break;
        }
        send_all(fd, data, (size_t)hl + chunk + 2);
        sent += chunk;
        usleep(2000);
    }
    if (!answered) {
        answered = readable_within(fd, 2000);
    }
    free(data);
    assert_true(answered);
    assert_true(sent <= 2 * 1024 * 1024);
    read_response(fd, &r);
    close(fd);
    assert_error_code(&r, 413, "body_too_large");
    response_free(&r);
}

static void test_header_deadline(void **state)
{
    set_limits(0, 0, 500, 2000);
    /* One byte every 100 ms: each resets the 2 s idle timeout, but the head
     * is not complete within 500 ms: closed. */
    int fd = connect_server();
    assert_true(fd >= 0);
    const char *slow =
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    int64_t start = now_mono_ms();
    bool closed = false;
    for (size_t i = 0; slow[i] != '\0'; i++) {
        if (readable_within(fd, 100)) {
            char b[256];
            ssize_t n = recv(fd, b, sizeof(b), 0);
            closed = n <= 0;
            break;
        }
        if (send(fd, slow + i, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
    }
    int64_t took = now_mono_ms() - start;
    close(fd);
    assert_true(closed);
    assert_true(took >= 400 && took < 1500);

    /* The deadline starts with a request's first byte: a keep-alive
     * connection idle for longer than it between requests still works. */
    fd = connect_server();
    assert_true(fd >= 0);
    const char *get = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(fd, get, strlen(get));
    assert_true(readable_within(fd, 1000));
    char b[1024];
    ssize_t n = recv(fd, b, sizeof(b) - 1, 0);
    assert_true(n > 0);
    b[n] = '\0';
    assert_non_null(strstr(b, "200"));
    usleep(800 * 1000);
    const char *last = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    send_all(fd, last, strlen(last));
    response_t r;
    read_response(fd, &r);
    close(fd);
    assert_int_equal(r.status, 200);
    response_free(&r);
}

/* GET /healthz on a new connection: the status, and the time it took. */
static int health_within(int64_t *ms)
{
    int64_t start = now_mono_us();
    response_t r;
    do_request("GET", "/healthz", NULL, NULL, 0, &r);
    *ms = (now_mono_us() - start) / 1000;
    int status = r.status;
    response_free(&r);
    return status;
}

static void wait_connections(size_t n)
{
    for (int i = 0; i < 200 && http_server_connections(fx.srv) != n; i++) {
        usleep(5000);
    }
    assert_int_equal(http_server_connections(fx.srv), n);
}

static void test_connection_caps(void **state)
{
    /* Per peer: 4 from 127.0.0.1, the process cap far away. */
    set_limits(100, 4, 10000, 60000);
    int held[4 + HTTP_PROBE_RESERVE];
    for (int i = 0; i < 4; i++) {
        held[i] = connect_server();
        assert_true(held[i] >= 0);
    }
    wait_connections(4);
    /* The 5th from the same peer: no API request... */
    response_t r;
    do_request("GET", "/api/jobs/7", NULL, NULL, 0, &r);
    assert_error_code(&r, 503, "too_many_connections");
    response_free(&r);
    /* ...but health is answered, fast. */
    int64_t ms = 0;
    assert_int_equal(health_within(&ms), 200);
    assert_true(ms < 100);
    for (int i = 0; i < 4; i++) {
        close(held[i]);
    }
    wait_connections(0);

    /* Per process: 3 in all, any peer. */
    set_limits(3, 0, 10000, 60000);
    for (int i = 0; i < 3; i++) {
        held[i] = connect_server();
        assert_true(held[i] >= 0);
    }
    wait_connections(3);
    do_request("GET", "/api/jobs/7", NULL, NULL, 0, &r);
    assert_error_code(&r, 503, "too_many_connections");
    response_free(&r);
    assert_int_equal(health_within(&ms), 200);
    assert_true(ms < 100);
    /* The probe slots taken too: the next connection is refused at once. */
    for (int i = 3; i < 3 + HTTP_PROBE_RESERVE; i++) {
        held[i] = connect_server();
        assert_true(held[i] >= 0);
    }
    wait_connections(3 + HTTP_PROBE_RESERVE);
    int fd = connect_server();
    assert_true(fd >= 0);
    assert_true(readable_within(fd, 1000));
    read_response(fd, &r);
    close(fd);
    assert_error_code(&r, 503, "too_many_connections");
    response_free(&r);
    for (int i = 0; i < 3 + HTTP_PROBE_RESERVE; i++) {
        close(held[i]);
    }
    wait_connections(0);
    /* Below the cap again: served. */
    do_request("GET", "/api/jobs/7", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
}

int main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routing_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_and_any_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_and_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_and_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delayed_reply_does_not_block_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone_before_delayed_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_request_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_sync_and_async_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_listeners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_on_taken_port_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_registration_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_refused_while_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_refused_client_still_sending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_caps, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    log_shutdown();
    libevent_global_shutdown();
    return failed;
}
