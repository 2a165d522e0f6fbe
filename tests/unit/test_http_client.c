/*
 * Unit tests for common/http_client.c.
 *
 * A tiny libevent evhttp server runs in a thread of this process on
 * 127.0.0.1 (port chosen by the kernel); its handlers misbehave on purpose:
 * flaky 503s, 429 with Retry-After, bodies over the cap, slow replies,
 * connections dropped mid-body. The builders and parsers are table-driven.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "now.h"

/* ---- the test server ------------------------------------------------------ */

static struct event_base *server_base;
static struct evhttp *server_http;
static pthread_t server_thread;
static int server_port;
static char base_url[64];

/* Per-route hit counters: written by the server thread, reset by tests. */
static int hits_flaky;
static int hits_retry_after;
static int hits_drop_once;
static int hits_not_found;

static int counter_next(int *counter)
{
    return __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST) + 1;
}

static void counter_reset(int *counter)
{
    __atomic_store_n(counter, 0, __ATOMIC_SEQ_CST);
}

static int counter_get(int *counter)
{
    return __atomic_load_n(counter, __ATOMIC_SEQ_CST);
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    default:
        return "OTHER";
    }
}

static long query_long(struct evhttp_request *req, const char *key, long fallback)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params;
    long value = fallback;
    if (query == NULL || evhttp_parse_query_str(query, &params) != 0)
        return fallback;
    const char *text = evhttp_find_header(&params, key);
    if (text != NULL)
        value = strtol(text, NULL, 10);
    evhttp_clear_headers(&params);
    return value;
}

/* Deterministic download content: byte i is (i * 7 + 3) mod 256. */
static unsigned char pattern_byte(size_t i)
{
    return (unsigned char)((i * 7 + 3) & 0xFF);
}

static void add_pattern(struct evbuffer *buf, size_t from, size_t len)
{
    unsigned char chunk[4096];
    while (len > 0) {
        size_t n = len < sizeof(chunk) ? len : sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern_byte(from + i);
        evbuffer_add(buf, chunk, n);
        from += n;
        len -= n;
    }
}

/* "method=..\n" "h:Name: value\n"... "body_len=N\n" "peer_port=P\n" "\n" body */
static void handle_echo(struct evhttp_request *req)
{
    struct evbuffer *out = evbuffer_new();
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evkeyval *h;
    char *peer = NULL;
    ev_uint16_t peer_port = 0;

    evbuffer_add_printf(out, "method=%s\n", method_name(evhttp_request_get_command(req)));
    TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next)
    {
        evbuffer_add_printf(out, "h:%s: %s\n", h->key, h->value);
    }
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &peer_port);
    evbuffer_add_printf(out, "body_len=%zu\npeer_port=%u\n\n", evbuffer_get_length(in),
                        (unsigned)peer_port);
    evbuffer_add_buffer(out, in);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, text, strlen(text));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

/* Promises `promised` bytes, sends `sent` and closes the connection. */
static void reply_truncated(struct evhttp_request *req, size_t promised, size_t sent)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    char length[32];
    struct evbuffer *out = evbuffer_new();
    snprintf(length, sizeof(length), "%zu", promised);
    evhttp_add_header(headers, "Content-Length", length);
    evhttp_add_header(headers, "Connection", "close");
    add_pattern(out, 0, sent);
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void reply_download(struct evhttp_request *req, size_t size, bool chunked)
{
    struct evbuffer *out = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/octet-stream");
    if (!chunked) {
        add_pattern(out, 0, size);
        evhttp_send_reply(req, 200, "OK", out);
        evbuffer_free(out);
        return;
    }
    /* No Content-Length: only the write callback can notice the size. */
    evhttp_send_reply_start(req, 200, "OK");
    for (size_t at = 0; at < size; at += 16384) {
        size_t n = size - at < 16384 ? size - at : 16384;
        add_pattern(out, at, n);
        evhttp_send_reply_chunk(req, out);
    }
    evhttp_send_reply_end(req);
    evbuffer_free(out);
}

static void server_dispatch(struct evhttp_request *req, void *arg)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq *out_headers = evhttp_request_get_output_headers(req);
    (void)arg;

    if (path == NULL) {
        reply_text(req, 400, "Bad Request", "no path");
    } else if (strcmp(path, "/echo") == 0) {
        handle_echo(req);
    } else if (strcmp(path, "/flaky") == 0) {
        if (counter_next(&hits_flaky) <= 2)
            reply_text(req, 503, "Service Unavailable", "try later");
        else
            reply_text(req, 200, "OK", "finally");
    } else if (strcmp(path, "/retry-after") == 0) {
        if (counter_next(&hits_retry_after) == 1) {
            evhttp_add_header(out_headers, "Retry-After", "1");
            reply_text(req, 429, "Too Many Requests", "slow down");
        } else {
            reply_text(req, 200, "OK", "welcome back");
        }
    } else if (strcmp(path, "/retry-after-long") == 0) {
        counter_next(&hits_retry_after);
        evhttp_add_header(out_headers, "Retry-After", "120");
        reply_text(req, 503, "Service Unavailable", "down for a while");
    } else if (strcmp(path, "/download") == 0) {
        reply_download(req, (size_t)query_long(req, "size", 1024), false);
    } else if (strcmp(path, "/download-chunked") == 0) {
        reply_download(req, (size_t)query_long(req, "size", 1024), true);
    } else if (strcmp(path, "/slow") == 0) {
        usleep((useconds_t)query_long(req, "ms", 800) * 1000);
        reply_text(req, 200, "OK", "too late");
    } else if (strcmp(path, "/drop") == 0) {
        reply_truncated(req, 100000, 1000);
    } else if (strcmp(path, "/drop-once") == 0) {
        size_t size = (size_t)query_long(req, "size", 50000);
        if (counter_next(&hits_drop_once) == 1)
            reply_truncated(req, size, size / 3);
        else
            reply_download(req, size, false);
    } else if (strcmp(path, "/redirect") == 0) {
        evhttp_add_header(out_headers, "Location", "/echo?from=redirect");
        reply_text(req, 302, "Found", "moved");
    } else {
        counter_next(&hits_not_found);
        reply_text(req, 404, "Not Found", "{\"error\":\"not found\"}");
    }
}

static void *server_main(void *arg)
{
    (void)arg;
    event_base_dispatch(server_base);
    return NULL;
}

static int server_start(void)
{
    if (evthread_use_pthreads() != 0)
        return -1;
    server_base = event_base_new();
    if (server_base == NULL)
        return -1;
    server_http = evhttp_new(server_base);
    if (server_http == NULL)
        return -1;
    evhttp_set_allowed_methods(server_http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                                EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                                EVHTTP_REQ_HEAD);
    evhttp_set_gencb(server_http, server_dispatch, NULL);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(server_http, "127.0.0.1", 0);
    if (bound == NULL)
        return -1;
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&addr, &len) != 0)
        return -1;
    server_port = ntohs(addr.sin_port);
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%d", server_port);
    if (pthread_create(&server_thread, NULL, server_main, NULL) != 0)
        return -1;
    return 0;
}

static void server_stop(void)
{
    event_base_loopbreak(server_base);
    pthread_join(server_thread, NULL);
    evhttp_free(server_http);
    event_base_free(server_base);
    libevent_global_shutdown();
}

/* ---- helpers ----------------------------------------------------------------- */

static char *url_for(const char *path_and_query)
{
    char *url = NULL;
    assert_true(asprintf(&url, "%s%s", base_url, path_and_query) > 0);
    return url;
}

static http_result_t do_get(http_client_t *c, const char *path, const http_opts_t *opts, FILE *sink,
                            http_response_t *resp)
{
    char *url = url_for(path);
    http_request_t req = {.method = "GET", .url = url, .opts = opts, .sink = sink};
    http_result_t result = http_client_do(c, &req, resp);
    free(url);
    return result;
}

/* The echo server's header block (up to the blank line), as a new string. */
static char *echo_head(const http_response_t *resp)
{
    assert_non_null(resp->body);
    const char *end = strstr(resp->body, "\n\n");
    assert_non_null(end);
    return strndup(resp->body, (size_t)(end - resp->body) + 1);
}

static const char *echo_body(const http_response_t *resp, size_t *len)
{
    const char *end = strstr(resp->body, "\n\n");
    assert_non_null(end);
    *len = resp->body_len - (size_t)(end + 2 - resp->body);
    return end + 2;
}

static int group_setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    http_client_global_init();
    if (server_start() != 0)
        return -1;
    http_client_t *c = http_client_new();
    if (c == NULL)
        return -1;
    *state = c;
    return 0;
}

static int group_teardown(void **state)
{
    http_client_free(*state);
    server_stop();
    http_client_global_cleanup();
    return 0;
}

/* ---- requests against the server ---------------------------------------------- */

static void test_echo_method_headers_body(void **state)
{
    http_client_t *c = *state;
    char *url = url_for("/echo?x=1");
    static const char body[] = "{\"a\":1,\"b\":\"two\"}";
    http_pair_t headers[] = {
        {"Authorization", "Bearer sekret-token-value"},
        {"X-Custom", "abc def"},
        {"Idempotency-Key", "key-123"},
    };
    http_request_t req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .nheaders = 3,
        .body = body,
        .body_len = strlen(body),
        .content_type = "application/json",
    };
    http_response_t resp;

    assert_int_equal(http_client_do(c, &req, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.attempts, 1);
    assert_string_equal(resp.content_type, "text/plain; charset=utf-8");
    assert_null(resp.retry_after);
    assert_null(resp.location);
    char *head = echo_head(&resp);
    assert_non_null(strstr(head, "method=POST\n"));
    assert_non_null(strstr(head, "h:Authorization: Bearer sekret-token-value\n"));
    assert_non_null(strstr(head, "h:X-Custom: abc def\n"));
    assert_non_null(strstr(head, "h:Idempotency-Key: key-123\n"));
    assert_non_null(strstr(head, "h:Content-Type: application/json\n"));
    assert_null(strstr(head, "h:Expect:"));
    assert_non_null(strstr(head, "h:User-Agent: creator-automation/"));
    size_t len = 0;
    const char *echoed = echo_body(&resp, &len);
    assert_int_equal(len, strlen(body));
    assert_memory_equal(echoed, body, len);
    const char *port_line = strstr(head, "peer_port=");
    assert_non_null(port_line);
    long first_port = strtol(port_line + strlen("peer_port="), NULL, 10);
    free(head);
    http_response_free(&resp);

    /* A second request on the same client reuses the connection. */
    req.method = "GET";
    req.body = NULL;
    req.body_len = 0;
    req.content_type = NULL;
    req.headers = NULL;
    req.nheaders = 0;
    assert_int_equal(http_client_do(c, &req, &resp), HTTP_RESULT_OK);
    head = echo_head(&resp);
    assert_non_null(strstr(head, "method=GET\n"));
    assert_null(strstr(head, "h:X-Custom"));
    assert_null(strstr(head, "h:Authorization"));
    port_line = strstr(head, "peer_port=");
    assert_non_null(port_line);
    assert_int_equal(strtol(port_line + strlen("peer_port="), NULL, 10), first_port);
    assert_non_null(strstr(head, "body_len=0\n"));
    free(head);
    http_response_free(&resp);
    free(url);
}

static void test_echo_other_methods(void **state)
{
    http_client_t *c = *state;
    char *url = url_for("/echo");
    /* Binary body with NULs and CRLFs must arrive byte for byte. */
    static const unsigned char binary[] = {0x00, 0x01, '\r', '\n', 0xFF, 0x00, 'z'};
    static const struct {
        const char *method;
        const void *body;
        size_t len;
        const char *expect_method;
    } cases[] = {
        {"PUT", binary, sizeof(binary), "method=PUT\n"},
        {"PATCH", "a=1", 3, "method=PATCH\n"},
        {"DELETE", NULL, 0, "method=DELETE\n"},
        {"POST", NULL, 0, "method=POST\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        http_request_t req = {
            .method = cases[i].method,
            .url = url,
            .body = cases[i].body,
            .body_len = cases[i].len,
            .content_type = "application/octet-stream",
        };
        http_response_t resp;
        assert_int_equal(http_client_do(c, &req, &resp), HTTP_RESULT_OK);
        assert_int_equal(resp.status, 200);
        char *head = echo_head(&resp);
        assert_non_null(strstr(head, cases[i].expect_method));
        size_t len = 0;
        const char *echoed = echo_body(&resp, &len);
        assert_int_equal(len, cases[i].len);
        if (len > 0)
            assert_memory_equal(echoed, cases[i].body, len);
        free(head);
        http_response_free(&resp);
    }
    free(url);
}

static void test_retries_503_then_ok(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.max_retries = 3, .base_backoff_ms = 20, .max_backoff_ms = 100};
    http_response_t resp;

    counter_reset(&hits_flaky);
    assert_int_equal(do_get(c, "/flaky", &opts, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.attempts, 3);
    assert_string_equal(resp.body, "finally");
    assert_int_equal(counter_get(&hits_flaky), 3);
    http_response_free(&resp);

    /* Without retries the first 503 is the answer. */
    counter_reset(&hits_flaky);
    assert_int_equal(do_get(c, "/flaky", NULL, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 503);
    assert_int_equal(resp.attempts, 1);
    assert_string_equal(resp.body, "try later");
    http_response_free(&resp);

    /* Retries exhausted: the last response is returned as a response. */
    counter_reset(&hits_flaky);
    opts.max_retries = 1;
    assert_int_equal(do_get(c, "/flaky", &opts, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 503);
    assert_int_equal(resp.attempts, 2);
    http_response_free(&resp);
}

/* backoff.h's policy, equal jitter: the n-th retry waits at least half of
 * min(max, base * 2^(n-1)), never nothing (full jitter's zero delay). Two
 * retries with base 100 ms: at least 50 + 100 ms. Only the lower bound is
 * checked: it holds however slow the machine. */
static void test_retry_waits_half_its_cap(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.max_retries = 3, .base_backoff_ms = 100, .max_backoff_ms = 400};
    http_response_t resp;

    counter_reset(&hits_flaky);
    int64_t start = now_mono_ms();
    assert_int_equal(do_get(c, "/flaky", &opts, NULL, &resp), HTTP_RESULT_OK);
    int64_t elapsed = now_mono_ms() - start;
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.attempts, 3);
    assert_true(elapsed >= 150);
    http_response_free(&resp);
}

static void test_retry_after_honoured(void **state)
{
    http_client_t *c = *state;
    /* Backoff alone would wait at most 10 ms; Retry-After says 1 s. */
    http_opts_t opts = {.max_retries = 2, .base_backoff_ms = 10, .max_backoff_ms = 5000};
    http_response_t resp;

    counter_reset(&hits_retry_after);
    int64_t start = now_mono_ms();
    assert_int_equal(do_get(c, "/retry-after", &opts, NULL, &resp), HTTP_RESULT_OK);
    int64_t elapsed = now_mono_ms() - start;
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.attempts, 2);
    assert_null(resp.retry_after); /* the final response had none */
    assert_in_range(elapsed, 950, 2500);
    http_response_free(&resp);
}

static void test_retry_after_capped_by_max_backoff(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.max_retries = 2, .base_backoff_ms = 10, .max_backoff_ms = 150};
    http_response_t resp;

    counter_reset(&hits_retry_after);
    int64_t start = now_mono_ms();
    assert_int_equal(do_get(c, "/retry-after-long", &opts, NULL, &resp), HTTP_RESULT_OK);
    int64_t elapsed = now_mono_ms() - start;
    assert_int_equal(resp.status, 503);
    assert_int_equal(resp.attempts, 3);
    assert_int_equal(counter_get(&hits_retry_after), 3);
    assert_string_equal(resp.retry_after, "120");
    /* Two sleeps of max_backoff_ms, not two minutes. */
    assert_in_range(elapsed, 290, 1500);
    http_response_free(&resp);
}

static void test_not_found_not_retried(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.max_retries = 3, .base_backoff_ms = 10};
    http_response_t resp;

    counter_reset(&hits_not_found);
    assert_int_equal(do_get(c, "/no/such/thing", &opts, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 404);
    assert_int_equal(resp.attempts, 1);
    assert_int_equal(counter_get(&hits_not_found), 1);
    assert_string_equal(resp.body, "{\"error\":\"not found\"}");
    assert_int_equal(resp.body_len, strlen("{\"error\":\"not found\"}"));
    http_response_free(&resp);
}

static void test_body_over_cap(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.max_body = 1000, .max_retries = 2, .base_backoff_ms = 10};
    http_response_t resp;
    static const char *const paths[] = {
        "/download?size=5000",          /* refused on Content-Length */
        "/download-chunked?size=70000", /* refused in the write callback */
    };

    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(do_get(c, paths[i], &opts, NULL, &resp), HTTP_ERR_TOO_LARGE);
        assert_int_equal(resp.attempts, 1); /* never retried */
        assert_true(strlen(resp.error) > 0);
        http_response_free(&resp);
    }

    /* Exactly at the cap is fine, chunked or not. */
    assert_int_equal(do_get(c, "/download?size=1000", &opts, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.body_len, 1000);
    http_response_free(&resp);
    assert_int_equal(do_get(c, "/download-chunked?size=1000", &opts, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.body_len, 1000);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal((unsigned char)resp.body[i], pattern_byte(i));
    http_response_free(&resp);
}

static void test_total_timeout(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.timeout_ms = 250};
    http_response_t resp;

    int64_t start = now_mono_ms();
    assert_int_equal(do_get(c, "/slow?ms=1500", &opts, NULL, &resp), HTTP_ERR_TIMEOUT);
    int64_t elapsed = now_mono_ms() - start;
    assert_int_equal(resp.attempts, 1);
    assert_in_range(elapsed, 200, 1200);
    assert_true(strlen(resp.error) > 0);
    http_response_free(&resp);

    /* Wait for the server to finish its sleep before the next test. */
    assert_int_equal(do_get(c, "/echo", NULL, NULL, &resp), HTTP_RESULT_OK);
    http_response_free(&resp);
}

static void test_connection_dropped_mid_body(void **state)
{
    http_client_t *c = *state;
    http_response_t resp;

    assert_int_equal(do_get(c, "/drop", NULL, NULL, &resp), HTTP_ERR_IO);
    assert_int_equal(resp.attempts, 1);
    http_response_free(&resp);

    /* With retries the second attempt succeeds and the body is whole. */
    http_opts_t opts = {.max_retries = 2, .base_backoff_ms = 10};
    counter_reset(&hits_drop_once);
    assert_int_equal(do_get(c, "/drop-once?size=30000", &opts, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.attempts, 2);
    assert_int_equal(resp.body_len, 30000);
    for (size_t i = 0; i < 30000; i++)
        assert_int_equal((unsigned char)resp.body[i], pattern_byte(i));
    http_response_free(&resp);
}

static void check_file_pattern(FILE *file, size_t expect_len)
{
    assert_int_equal(fflush(file), 0);
    assert_int_equal(fseek(file, 0, SEEK_END), 0);
    assert_int_equal(ftell(file), (long)expect_len);
    rewind(file);
    for (size_t i = 0; i < expect_len; i++) {
        int ch = fgetc(file);
        if (ch != pattern_byte(i))
            fail_msg("byte %zu: got %d, want %d", i, ch, pattern_byte(i));
    }
    assert_int_equal(fgetc(file), EOF);
}

static void test_download_to_file(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.max_body = 1 << 20};
    http_response_t resp;
    FILE *file = tmpfile();
    assert_non_null(file);

    assert_int_equal(do_get(c, "/download?size=300001", &opts, file, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 200);
    assert_null(resp.body);
    assert_int_equal(resp.body_len, 0);
    assert_string_equal(resp.content_type, "application/octet-stream");
    check_file_pattern(file, 300001);
    http_response_free(&resp);
    fclose(file);

    /* Chunked (no Content-Length) streams the same way. */
    file = tmpfile();
    assert_non_null(file);
    assert_int_equal(do_get(c, "/download-chunked?size=100000", &opts, file, &resp),
                     HTTP_RESULT_OK);
    check_file_pattern(file, 100000);
    http_response_free(&resp);
    fclose(file);

    /* A dropped first attempt is rewound: the file holds one whole copy. */
    file = tmpfile();
    assert_non_null(file);
    opts.max_retries = 1;
    opts.base_backoff_ms = 10;
    counter_reset(&hits_drop_once);
    assert_int_equal(do_get(c, "/drop-once?size=90000", &opts, file, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.attempts, 2);
    check_file_pattern(file, 90000);
    http_response_free(&resp);
    fclose(file);

    /* An error response keeps its body in memory and leaves the file alone. */
    file = tmpfile();
    assert_non_null(file);
    assert_int_equal(do_get(c, "/missing", &opts, file, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 404);
    assert_string_equal(resp.body, "{\"error\":\"not found\"}");
    check_file_pattern(file, 0);
    http_response_free(&resp);
    fclose(file);
}

static void test_download_to_file_capped(void **state)
{
    http_client_t *c = *state;
    http_opts_t opts = {.max_body = 50000};
    http_response_t resp;
    static const char *const paths[] = {"/download?size=50001", "/download-chunked?size=200000"};

    for (size_t i = 0; i < 2; i++) {
        FILE *file = tmpfile();
        assert_non_null(file);
        assert_int_equal(do_get(c, paths[i], &opts, file, &resp), HTTP_ERR_TOO_LARGE);
        assert_int_equal(fseek(file, 0, SEEK_END), 0);
        if (i == 0)
            assert_int_equal(ftell(file), 0); /* refused on Content-Length, before any byte */
        else
            assert_true(ftell(file) <= 50000);
        http_response_free(&resp);
        fclose(file);
    }
}

static void test_redirect_not_followed(void **state)
{
    http_client_t *c = *state;
    http_response_t resp;

    assert_int_equal(do_get(c, "/redirect", NULL, NULL, &resp), HTTP_RESULT_OK);
    assert_int_equal(resp.status, 302);
    assert_string_equal(resp.location, "/echo?from=redirect");
    assert_string_equal(resp.body, "moved");
    http_response_free(&resp);
}

static void test_connect_error_retried(void **state)
{
    http_client_t *c = *state;
    /* A port that was free a moment ago: nothing listens there. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);

    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(addr.sin_port));
    http_opts_t opts = {.max_retries = 2, .base_backoff_ms = 5, .max_backoff_ms = 20};
    http_request_t req = {.method = "GET", .url = url, .opts = &opts};
    http_response_t resp;
    assert_int_equal(http_client_do(c, &req, &resp), HTTP_ERR_CONNECT);
    assert_int_equal(resp.attempts, 3);
    assert_int_equal(resp.status, 0);
    assert_true(strlen(resp.error) > 0);
    http_response_free(&resp);
}

static void test_bad_requests_refused(void **state)
{
    http_client_t *c = *state;
    char *url = url_for("/echo");
    http_response_t resp;

    /* Header injection. */
    http_pair_t evil[] = {{"X-Evil", "a\r\nX-Injected: 1"}};
    http_request_t req = {.method = "GET", .url = url, .headers = evil, .nheaders = 1};
    assert_int_equal(http_client_do(c, &req, &resp), HTTP_ERR_INTERNAL);
    http_response_free(&resp);

    /* Only http and https. */
    http_request_t file_req = {.method = "GET", .url = "file:///etc/passwd"};
    assert_int_equal(http_client_do(c, &file_req, &resp), HTTP_ERR_INTERNAL);
    assert_null(resp.body);
    http_response_free(&resp);

    /* Body length without a body. */
    http_request_t no_body = {.method = "POST", .url = url, .body_len = 4};
    assert_int_equal(http_client_do(c, &no_body, &resp), HTTP_ERR_INTERNAL);
    http_response_free(&resp);

    assert_int_equal(http_client_do(NULL, &req, &resp), HTTP_ERR_INTERNAL);
    http_response_free(&resp);
    free(url);
}

/* ---- builders and parsers --------------------------------------------------- */

static void test_form_encode_table(void **state)
{
    (void)state;
    static const struct {
        http_pair_t pairs[3];
        size_t n;
        const char *want;
    } cases[] = {
        {{{"a", "1"}, {"b[c]", "2"}}, 2, "a=1&b%5Bc%5D=2"},
        {{{"line_items[0][price]", "price_123"},
          {"line_items[0][quantity]", "1"},
          {"mode", "subscription"}},
         3,
         "line_items%5B0%5D%5Bprice%5D=price_123&line_items%5B0%5D%5Bquantity%5D=1&mode=subscription"},
        {{{"q", "a b&c=d+e/f?g#h"}}, 1, "q=a%20b%26c%3Dd%2Be%2Ff%3Fg%23h"},
        {{{"email", "user@example.com"}}, 1, "email=user%40example.com"},
        {{{"success_url", "https://x.test/ok?s={CHECKOUT_SESSION_ID}"}},
         1,
         "success_url=https%3A%2F%2Fx.test%2Fok%3Fs%3D%7BCHECKOUT_SESSION_ID%7D"},
        {{{"name", "Caf\xC3\xA9 \xE2\x82\xAC"}}, 1, "name=Caf%C3%A9%20%E2%82%AC"},
        {{{"keep", "AZaz09-._~"}}, 1, "keep=AZaz09-._~"},
        {{{"empty", ""}, {"null", NULL}}, 2, "empty=&null="},
        {{{"metadata[user id]", "42"}}, 1, "metadata%5Buser%20id%5D=42"},
        {{{"x", "%41"}}, 1, "x=%2541"},
        {{{0}}, 0, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = http_form_encode(cases[i].pairs, cases[i].n);
        assert_non_null(got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, got, cases[i].want);
        free(got);
    }
    http_pair_t no_name[] = {{NULL, "v"}};
    assert_null(http_form_encode(no_name, 1));
}

static void test_url_escape_table(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"", ""},
        {"abcXYZ019", "abcXYZ019"},
        {"-._~", "-._~"},
        {"a b", "a%20b"},
        {"a+b", "a%2Bb"},
        {"/?#[]@", "%2F%3F%23%5B%5D%40"},
        {"!$&'()*,;=", "%21%24%26%27%28%29%2A%2C%3B%3D"},
        {"100%", "100%25"},
        {"\xC3\xA4\xF0\x9F\x93\xB7", "%C3%A4%F0%9F%93%B7"},
        {"line\r\nbreak", "line%0D%0Abreak"},
        {"'name' = 'x.jpg' and trashed = false",
         "%27name%27%20%3D%20%27x.jpg%27%20and%20trashed%20%3D%20false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = http_url_escape(cases[i].in);
        assert_non_null(got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, got, cases[i].want);
        free(got);
    }
    assert_null(http_url_escape(NULL));
}

/* The formats come from a table below, hence not literals. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void format_date(char *out, size_t len, const char *fmt, long offset_s)
{
    time_t when = time(NULL) + offset_s;
    struct tm tm;
    gmtime_r(&when, &tm);
    assert_true(strftime(out, len, fmt, &tm) > 0);
}
#pragma GCC diagnostic pop

static void test_retry_after_parse_table(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        long want;
    } fixed[] = {
        {"0", 0},
        {"1", 1000},
        {"120", 120000},
        {"  7 ", 7000},
        {"\t3\r\n", 3000},
        {"007", 7000},
        {"1.5", -1},
        {"-3", -1},
        {"+3", -1},
        {"12abc", -1},
        {"abc", -1},
        {"", -1},
        {"   ", -1},
        {"1 2", -1},
        /* HTTP-dates in the past mean "now". */
        {"Sun, 06 Nov 1994 08:49:37 GMT", 0},
        {"Sunday, 06-Nov-94 08:49:37 GMT", 0},
        {"Sun Nov  6 08:49:37 1994", 0},
        /* Malformed dates. */
        {"Sun, 06 Nov 1994 08:49:37", -1},
        {"Sun, 06 Nov 1994 08:49:37 UTC", -1},
        {"Sun, 32 Nov 1994 08:49:37 GMT", -1},
        {"Sun, 29 Feb 1995 08:49:37 GMT", -1},
        {"Sun, 06 Foo 1994 08:49:37 GMT", -1},
        {"Xyz, 06 Nov 1994 08:49:37 GMT", -1},
        {"Sun, 06 Nov 1994 25:49:37 GMT", -1},
        {"Sun, 6 Nov 1994 08:49:37 GMT", -1},
        {"Sun, 06 Nov 94 08:49:37 GMT", -1},
        {"Someday, 06-Nov-94 08:49:37 GMT", -1},
        {"Sun Nov 6 08:49:37 1994", -1},
        {"tomorrow", -1},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        long got = http_retry_after_ms(fixed[i].in);
        if (got != fixed[i].want)
            fail_msg("case %zu \"%s\": got %ld, want %ld", i, fixed[i].in, got, fixed[i].want);
    }
    assert_int_equal(http_retry_after_ms(NULL), -1);
    /* Too many digits to represent: clamped, never negative or wrapped. */
    assert_true(http_retry_after_ms("99999999999999999999999") >= 1000L * 86400 * 365);

    /* Future dates in all three forms. */
    static const struct {
        const char *fmt;
        long offset_s;
    } future[] = {
        {"%a, %d %b %Y %H:%M:%S GMT", 90},
        {"%A, %d-%b-%y %H:%M:%S GMT", 30},
        {"%a %b %e %H:%M:%S %Y", 600},
    };
    for (size_t i = 0; i < sizeof(future) / sizeof(future[0]); i++) {
        char text[64];
        format_date(text, sizeof(text), future[i].fmt, future[i].offset_s);
        long got = http_retry_after_ms(text);
        long want = future[i].offset_s * 1000;
        if (got < want - 2000 || got > want)
            fail_msg("\"%s\": got %ld, want about %ld", text, got, want);
    }
}

static void test_status_retryable_table(void **state)
{
    (void)state;
    static const struct {
        long status;
        bool want;
    } cases[] = {
        {0, false},   {200, false}, {201, false}, {301, false}, {400, false}, {401, false},
        {403, false}, {404, false}, {408, true},  {409, false}, {429, true},  {500, true},
        {501, false}, {502, true},  {503, true},  {504, true},  {505, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (http_status_retryable(cases[i].status) != cases[i].want)
            fail_msg("status %ld", cases[i].status);
    }
}

typedef struct {
    char headers[256];
    const char *content;
    size_t len;
} mime_part_t;

/* Parses a multipart body per RFC 2046 into at most `max` parts; returns the
 * count or -1 when the framing is wrong. */
static int parse_multipart(const char *body, size_t body_len, const char *boundary,
                           mime_part_t *parts, int max)
{
    char delimiter[128];
    int dlen = snprintf(delimiter, sizeof(delimiter), "--%s", boundary);
    const char *end = body + body_len;
    const char *p = body;
    int count = 0;

    if (body_len < (size_t)dlen || memcmp(p, delimiter, (size_t)dlen) != 0)
        return -1;
    p += dlen;
    for (;;) {
        if (end - p >= 4 && memcmp(p, "--\r\n", 4) == 0)
            return p + 4 == end ? count : -1; /* close delimiter, then nothing */
        if (end - p < 2 || memcmp(p, "\r\n", 2) != 0)
            return -1;
        p += 2;
        const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (head_end == NULL || count == max || head_end - p >= 255)
            return -1;
        memcpy(parts[count].headers, p, (size_t)(head_end - p));
        parts[count].headers[head_end - p] = '\0';
        const char *content = head_end + 4;
        char next[132];
        int nlen = snprintf(next, sizeof(next), "\r\n%s", delimiter);
        const char *stop = memmem(content, (size_t)(end - content), next, (size_t)nlen);
        if (stop == NULL)
            return -1;
        parts[count].content = content;
        parts[count].len = (size_t)(stop - content);
        count++;
        p = stop + nlen;
    }
}

static void test_multipart_related_structure(void **state)
{
    (void)state;
    static const char json[] = "{\"name\":\"photo_portrait_pro.jpg\",\"parents\":[\"folder1\"],"
                               "\"appProperties\":{\"ca_job_id\":\"42\"}}";
    unsigned char media[2048];
    for (size_t i = 0; i < sizeof(media); i++)
        media[i] = (unsigned char)(i * 31 + 7);
    /* Things that look like framing inside the media must not confuse it. */
    memcpy(media + 100, "\r\n--ca_boundary_\r\n\r\n--", 22);
    memset(media + 300, 0, 16);

    static const struct {
        const char *type_in;
        const char *type_header;
        size_t media_len;
    } cases[] = {
        {"image/jpeg", "Content-Type: image/jpeg", sizeof(media)},
        {NULL, "Content-Type: application/octet-stream", sizeof(media)},
        {"image/png", "Content-Type: image/png", 0},
    };
    char *previous_boundary = NULL;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = 0;
        char *ctype = NULL;
        char *body = http_multipart_related(json, cases[i].media_len > 0 ? media : NULL,
                                            cases[i].media_len, cases[i].type_in, &len, &ctype);
        assert_non_null(body);
        assert_non_null(ctype);
        static const char prefix[] = "multipart/related; boundary=";
        assert_int_equal(strncmp(ctype, prefix, strlen(prefix)), 0);
        const char *boundary = ctype + strlen(prefix);
        assert_true(strlen(boundary) >= 16 && strlen(boundary) <= 70);
        assert_null(strpbrk(boundary, " \"\r\n;"));
        if (previous_boundary != NULL)
            assert_string_not_equal(boundary, previous_boundary);

        mime_part_t parts[3];
        int n = parse_multipart(body, len, boundary, parts, 3);
        assert_int_equal(n, 2);
        assert_string_equal(parts[0].headers, "Content-Type: application/json; charset=UTF-8");
        assert_int_equal(parts[0].len, strlen(json));
        assert_memory_equal(parts[0].content, json, strlen(json));
        assert_string_equal(parts[1].headers, cases[i].type_header);
        assert_int_equal(parts[1].len, cases[i].media_len);
        if (cases[i].media_len > 0)
            assert_memory_equal(parts[1].content, media, cases[i].media_len);
        /* The boundary occurs only as framing: three delimiters in all. */
        int seen = 0;
        for (const char *p = body;
             (p = memmem(p, (size_t)(body + len - p), boundary, strlen(boundary))) != NULL; p++)
            seen++;
        assert_int_equal(seen, 3);

        free(previous_boundary);
        previous_boundary = strdup(boundary);
        free(body);
        free(ctype);
    }
    free(previous_boundary);

    size_t len = 0;
    char *ctype = NULL;
    assert_null(http_multipart_related(json, media, 10, "image/jpeg\r\nX-Evil: 1", &len, &ctype));
    assert_null(ctype);
    assert_null(http_multipart_related(json, NULL, 10, "image/jpeg", &len, &ctype));
}

static void test_multipart_upload_round_trip(void **state)
{
    http_client_t *c = *state;
    static const char json[] = "{\"name\":\"x.jpg\"}";
    static const unsigned char media[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F'};
    size_t len = 0;
    char *ctype = NULL;
    char *body = http_multipart_related(json, media, sizeof(media), "image/jpeg", &len, &ctype);
    assert_non_null(body);
    char *url = url_for("/echo?uploadType=multipart");
    http_request_t req = {
        .method = "POST", .url = url, .body = body, .body_len = len, .content_type = ctype};
    http_response_t resp;
    assert_int_equal(http_client_do(c, &req, &resp), HTTP_RESULT_OK);
    char *head = echo_head(&resp);
    char *want = NULL;
    assert_true(asprintf(&want, "h:Content-Type: %s\n", ctype) > 0);
    assert_non_null(strstr(head, want));
    size_t echoed_len = 0;
    const char *echoed = echo_body(&resp, &echoed_len);
    assert_int_equal(echoed_len, len);
    assert_memory_equal(echoed, body, len);
    free(want);
    free(head);
    http_response_free(&resp);
    free(url);
    free(body);
    free(ctype);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_method_headers_body),
        cmocka_unit_test(test_echo_other_methods),
        cmocka_unit_test(test_retries_503_then_ok),
        cmocka_unit_test(test_retry_after_honoured),
        cmocka_unit_test(test_retry_waits_half_its_cap),
        cmocka_unit_test(test_retry_after_capped_by_max_backoff),
        cmocka_unit_test(test_not_found_not_retried),
        cmocka_unit_test(test_body_over_cap),
        cmocka_unit_test(test_total_timeout),
        cmocka_unit_test(test_connection_dropped_mid_body),
        cmocka_unit_test(test_download_to_file),
        cmocka_unit_test(test_download_to_file_capped),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_connect_error_retried),
        cmocka_unit_test(test_bad_requests_refused),
        cmocka_unit_test(test_form_encode_table),
        cmocka_unit_test(test_url_escape_table),
        cmocka_unit_test(test_retry_after_parse_table),
        cmocka_unit_test(test_status_retryable_table),
        cmocka_unit_test(test_multipart_related_structure),
        cmocka_unit_test(test_multipart_upload_round_trip),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
