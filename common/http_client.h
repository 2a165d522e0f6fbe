/*
 * http_client — outbound HTTP on libcurl.
 *
 * Every call has a connect timeout and a total timeout, a cap on the response
 * body (exceeding it fails with HTTP_ERR_TOO_LARGE), and optional retries on
 * connection errors, 408, 429 and 5xx after the delay of backoff.h
 * (exponential, equal jitter: the n-th retry waits a random time in
 * [cap/2, cap], cap = min(max_backoff_ms, base_backoff_ms * 2^(n-1))), or
 * after Retry-After (seconds or HTTP date, capped by max_backoff_ms).
 * Bodies: raw bytes, JSON, application/x-www-form-urlencoded (built from pairs
 * with proper escaping, brackets allowed in keys for Stripe), and
 * multipart/related (Drive uploads: a JSON metadata part and a media part).
 * Downloads can stream into a capped memory buffer or a file.
 * Thread-safe: one http_client_t per thread (it keeps a curl easy handle for
 * connection reuse). Secrets in URLs or headers are never logged.
 */
#ifndef CA_HTTP_CLIENT_H
#define CA_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* libevent's <event2/http.h> #defines HTTP_OK as 200. In a file that includes
 * it, compare against HTTP_RESULT_OK (same value as our HTTP_OK) instead. */
typedef enum {
    HTTP_RESULT_OK = 0, /* a response arrived (any status) */
#ifndef HTTP_OK
    HTTP_OK = HTTP_RESULT_OK,
#endif
    HTTP_ERR_CONNECT = -1,   /* could not connect / DNS / TLS */
    HTTP_ERR_TIMEOUT = -2,   /* connect or total timeout */
    HTTP_ERR_TOO_LARGE = -3, /* response body over the cap */
    HTTP_ERR_IO = -4,        /* connection dropped mid-transfer, write to file failed */
    HTTP_ERR_INTERNAL = -5,  /* bad arguments, out of memory */
} http_result_t;

/* Zero (or negative) fields take the defaults, so `{.max_retries = 3}` works.
 * Both timeouts apply to each attempt; backoff sleeps come on top. */
typedef struct {
    long connect_timeout_ms; /* default 5000 */
    long timeout_ms;         /* total, default 30000 */
    size_t max_body;         /* default 10 MiB */
    int max_retries;         /* default 0: no retries */
    long base_backoff_ms;    /* default 200 */
    long max_backoff_ms;     /* default 30000 */
} http_opts_t;

typedef struct {
    const char *name;
    const char *value;
} http_pair_t;

typedef struct {
    long status; /* 0 when no response */
    char *body;  /* NUL-terminated, owned; NULL when streamed to a file */
    size_t body_len;
    char *content_type; /* owned or NULL */
    char *retry_after;  /* owned or NULL: raw Retry-After header */
    char *location;     /* owned or NULL: raw Location header (redirects are not followed) */
    char *range;        /* owned or NULL: raw Range header of the answer (Drive's 308) */
    int attempts;       /* how many tries were made */
    char error[256];    /* curl's message when the result is not HTTP_OK */
} http_response_t;

typedef struct {
    const char *method; /* "GET", "POST", "PATCH", "DELETE", "PUT" */
    const char *url;
    const http_pair_t *headers; /* extra headers, e.g. Authorization */
    size_t nheaders;
    const void *body; /* raw body (content_type says what) */
    size_t body_len;
    const char *content_type;
    FILE *sink;              /* when set, a 2xx body streams here (capped); an error
                              * body stays in resp->body. A retry truncates the file
                              * back to its position at the call. */
    const http_opts_t *opts; /* NULL: defaults */
    bool fresh_connection;   /* a connection of its own, closed after: libcurl re-sends a
                              * request by itself when a reused connection dies before the
                              * answer, which a resumable upload's chunk must not be (the
                              * caller asks the server where it stands instead) */
} http_request_t;

typedef struct http_client http_client_t;

http_client_t *http_client_new(void);
void http_client_free(http_client_t *c);

/* Performs the request with retries as opts say. Fills resp (call
 * http_response_free after). Returns HTTP_OK when a final response arrived
 * (check resp->status), else an error of the last attempt. */
http_result_t http_client_do(http_client_t *c, const http_request_t *req, http_response_t *resp);

void http_response_free(http_response_t *resp);

/* Builders. Return a new string (caller frees). */
char *http_form_encode(const http_pair_t *pairs, size_t n); /* a=1&b%5Bc%5D=2 */
char *http_url_escape(const char *s);
/* A multipart/related body: part 1 application/json metadata, part 2 media.
 * Returns the body (caller frees) with its length and fills content_type
 * ("multipart/related; boundary=…", caller frees). */
char *http_multipart_related(const char *json_metadata, const void *media, size_t media_len,
                             const char *media_type, size_t *out_len, char **content_type);

/* Parses Retry-After (delta seconds or HTTP date) into milliseconds from now;
 * -1 when absent or malformed. */
long http_retry_after_ms(const char *value);
/* True for statuses worth retrying: 408, 429, 500, 502, 503, 504. */
bool http_status_retryable(long status);

/* curl_global_init / cleanup, once per process. */
void http_client_global_init(void);
void http_client_global_cleanup(void);

#endif
