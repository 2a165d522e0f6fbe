/*
 * http_client — outbound HTTP on libcurl. See http_client.h for the contract
 * and docs/common/http_client.md for the notes.
 *
 * One curl easy handle per http_client_t; curl_easy_reset() between requests
 * keeps its connection and DNS caches, so repeated calls to one host reuse the
 * connection. Nothing here logs: the caller sees attempts, status and curl's
 * message in the response and decides what to log (never headers or bodies).
 */
#define _GNU_SOURCE
#include "http_client.h"

#include "backoff.h"
#include "crypto.h"
#include "now.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef CA_VERSION
#define CA_VERSION "0.0.0"
#endif

#define HTTP_DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define HTTP_DEFAULT_TIMEOUT_MS 30000L
#define HTTP_DEFAULT_MAX_BODY ((size_t)10 * 1024 * 1024)
#define HTTP_DEFAULT_BASE_BACKOFF_MS 200L
#define HTTP_DEFAULT_MAX_BACKOFF_MS 30000L
#define HTTP_MAX_RETRIES_LIMIT 20

struct http_client {
    CURL *easy;
};

/* Per-attempt transfer state shared with the curl callbacks. */
typedef struct {
    http_response_t *resp;
    CURL *easy;
    FILE *sink;
    bool head;
    size_t max_body;
    size_t cap;          /* allocated size of resp->body */
    size_t sink_written; /* bytes written to the sink in this attempt */
    bool too_large;
    bool sink_failed;
    bool oom;
} transfer_t;

/* ---- small helpers ------------------------------------------------------ */

static void sleep_ms(long ms)
{
    if (ms <= 0)
        return;
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

static bool has_crlf(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") != NULL;
}

/* Trims leading and trailing whitespace (including CR/LF) of [start, start+len). */
static char *dup_trimmed(const char *start, size_t len)
{
    while (len > 0 && isspace((unsigned char)*start)) {
        start++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)start[len - 1]))
        len--;
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, start, len);
    out[len] = '\0';
    return out;
}

static void response_clear(http_response_t *resp)
{
    free(resp->body);
    free(resp->content_type);
    free(resp->retry_after);
    free(resp->location);
    free(resp->range);
    resp->body = NULL;
    resp->body_len = 0;
    resp->content_type = NULL;
    resp->retry_after = NULL;
    resp->location = NULL;
    resp->range = NULL;
    resp->status = 0;
    resp->error[0] = '\0';
}

void http_response_free(http_response_t *resp)
{
    if (resp == NULL)
        return;
    response_clear(resp);
    resp->attempts = 0;
}

/* ---- global and client lifetime ----------------------------------------- */

void http_client_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void http_client_global_cleanup(void)
{
    curl_global_cleanup();
}

http_client_t *http_client_new(void)
{
    http_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->easy = curl_easy_init();
    if (c->easy == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void http_client_free(http_client_t *c)
{
    if (c == NULL)
        return;
    curl_easy_cleanup(c->easy);
    free(c);
}

/* ---- curl callbacks ------------------------------------------------------ */

static bool status_is_success(long status)
{
    return status >= 200 && status < 300;
}

static int buffer_append(transfer_t *t, const char *data, size_t len)
{
    http_response_t *resp = t->resp;
    if (len > t->max_body || resp->body_len > t->max_body - len) {
        t->too_large = true;
        return -1;
    }
    size_t need = resp->body_len + len + 1;
    if (need > t->cap) {
        size_t cap = t->cap != 0 ? t->cap : 4096;
        while (cap < need)
            cap *= 2;
        char *grown = realloc(resp->body, cap);
        if (grown == NULL) {
            t->oom = true;
            return -1;
        }
        resp->body = grown;
        t->cap = cap;
    }
    memcpy(resp->body + resp->body_len, data, len);
    resp->body_len += len;
    resp->body[resp->body_len] = '\0';
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    transfer_t *t = userdata;
    size_t len = size * nmemb;
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);

    /* Only a successful body goes to the sink; an error body stays in memory
     * so that the caller can read the API's error message. */
    if (t->sink != NULL && status_is_success(status)) {
        if (len > t->max_body || t->sink_written > t->max_body - len) {
            t->too_large = true;
            return 0;
        }
        if (len > 0 && fwrite(data, 1, len, t->sink) != len) {
            t->sink_failed = true;
            return 0;
        }
        t->sink_written += len;
        return len;
    }
    if (buffer_append(t, data, len) != 0)
        return 0;
    return len;
}

/* Matches "Name:" case-insensitively at the start of a header line and
 * returns a pointer just past the colon, or NULL. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
        return NULL;
    *vlen = len - nlen - 1;
    return line + nlen + 1;
}

static int replace_header(char **slot, const char *value, size_t vlen)
{
    char *copy = dup_trimmed(value, vlen);
    if (copy == NULL)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    transfer_t *t = userdata;
    http_response_t *resp = t->resp;
    size_t len = size * nmemb;
    const char *value;
    size_t vlen = 0;

    /* A new status line (after 100 Continue, say) starts a fresh header set. */
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        free(resp->retry_after);
        free(resp->location);
        free(resp->range);
        resp->retry_after = NULL;
        resp->location = NULL;
        resp->range = NULL;
        return len;
    }
    /* The headers kept in the response. */
    struct {
        const char *name;
        char **slot;
    } kept[] = {{"Retry-After", &resp->retry_after},
                {"Location", &resp->location},
                {"Range", &resp->range}};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        value = header_value(data, len, kept[i].name, &vlen);
        if (value != NULL) {
            if (replace_header(kept[i].slot, value, vlen) != 0) {
                t->oom = true;
                return 0;
            }
            return len;
        }
    }
    value = header_value(data, len, "Content-Length", &vlen);
    if (value != NULL && !t->head) {
        /* Refuse an advertised body over the cap before any of it arrives. */
        char digits[32];
        char *trimmed = dup_trimmed(value, vlen);
        if (trimmed == NULL) {
            t->oom = true;
            return 0;
        }
        snprintf(digits, sizeof(digits), "%s", trimmed);
        free(trimmed);
        char *end = NULL;
        errno = 0;
        unsigned long long advertised = strtoull(digits, &end, 10);
        if (end != digits && *end == '\0' && digits[0] != '-' &&
            (errno == ERANGE || advertised > (unsigned long long)t->max_body)) {
            t->too_large = true;
            return 0;
        }
    }
    return len;
}

/* ---- one attempt ------------------------------------------------------------ */

static http_result_t map_curl_code(CURLcode code, const transfer_t *t)
{
    if (code == CURLE_OK)
        return HTTP_OK;
    if (t->too_large)
        return HTTP_ERR_TOO_LARGE;
    if (t->sink_failed)
        return HTTP_ERR_IO;
    if (t->oom)
        return HTTP_ERR_INTERNAL;
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return HTTP_ERR_TIMEOUT;
    case CURLE_FILESIZE_EXCEEDED:
        return HTTP_ERR_TOO_LARGE;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_USE_SSL_FAILED:
        return HTTP_ERR_CONNECT;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_UNKNOWN_OPTION:
        return HTTP_ERR_INTERNAL;
    default:
        /* RECV_ERROR, SEND_ERROR, PARTIAL_FILE, GOT_NOTHING, HTTP2, ... */
        return HTTP_ERR_IO;
    }
}

/* Whether a failed attempt is worth another try. Certificate problems and
 * local errors are not: they will fail the same way again. */
static bool result_retryable(http_result_t result, CURLcode code, const transfer_t *t)
{
    if (t->too_large || t->sink_failed || t->oom)
        return false;
    switch (result) {
    case HTTP_ERR_CONNECT:
        return code != CURLE_PEER_FAILED_VERIFICATION && code != CURLE_SSL_CACERT_BADFILE &&
               code != CURLE_SSL_CERTPROBLEM;
    case HTTP_ERR_TIMEOUT:
    case HTTP_ERR_IO:
        return true;
    default:
        return false;
    }
}

static int setopts(CURL *easy, const http_request_t *req, const http_opts_t *opts,
                   struct curl_slist *headers, transfer_t *t, char *errbuf)
{
    CURLcode rc = CURLE_OK;
    const char *method = req->method != NULL ? req->method : "GET";

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(easy, opt, val);                                                 \
    } while (0)

    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, opts->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, opts->timeout_ms);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_USERAGENT, "creator-automation/" CA_VERSION);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, t);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, t);
    SET(CURLOPT_HTTPHEADER, headers);
    if (req->fresh_connection) {
        SET(CURLOPT_FRESH_CONNECT, 1L);
        SET(CURLOPT_FORBID_REUSE, 1L);
    }

    if (strcmp(method, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, method);
        /* POST, PUT and PATCH always carry a body (possibly empty, so that
         * Content-Length: 0 is sent); DELETE only when one was given. */
        if (req->body != NULL || strcmp(method, "DELETE") != 0) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            SET(CURLOPT_POSTFIELDS, req->body != NULL ? (const char *)req->body : "");
        }
    }
#undef SET
    return rc == CURLE_OK ? 0 : -1;
}

/* Appends line to *list and frees it. line NULL (asprintf failed) or out of
 * memory: -1, *list unchanged. */
static int append_line(struct curl_slist **list, char *line)
{
    if (line == NULL)
        return -1;
    struct curl_slist *next = curl_slist_append(*list, line);
    free(line);
    if (next == NULL)
        return -1;
    *list = next;
    return 0;
}

static struct curl_slist *build_headers(const http_request_t *req)
{
    /* No "Expect: 100-continue" round trip for large uploads. */
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    if (list == NULL)
        return NULL;
    if (req->content_type != NULL) {
        char *line = NULL;
        if (has_crlf(req->content_type) ||
            asprintf(&line, "Content-Type: %s", req->content_type) < 0)
            line = NULL;
        if (append_line(&list, line) != 0)
            goto fail;
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_pair_t *h = &req->headers[i];
        if (h->name == NULL || h->name[0] == '\0' || strchr(h->name, ':') != NULL ||
            has_crlf(h->name) || has_crlf(h->value))
            goto fail;
        char *line = NULL;
        int n;
        if (h->value == NULL || h->value[0] == '\0')
            n = asprintf(&line, "%s;", h->name); /* curl's form for an empty header */
        else
            n = asprintf(&line, "%s: %s", h->name, h->value);
        if (n < 0)
            line = NULL;
        if (append_line(&list, line) != 0)
            goto fail;
    }
    return list;

fail:
    curl_slist_free_all(list);
    return NULL;
}

/* Rewinds the sink to where this request started, dropping a partial body,
 * so that a retry writes the file from the beginning. */
static int sink_rewind(FILE *sink, off_t start)
{
    if (fflush(sink) != 0)
        return -1;
    if (fseeko(sink, start, SEEK_SET) != 0)
        return -1;
    if (ftruncate(fileno(sink), start) != 0)
        return -1;
    return 0;
}

static http_result_t attempt_once(http_client_t *c, const http_request_t *req,
                                  const http_opts_t *opts, struct curl_slist *headers,
                                  http_response_t *resp, bool *retryable, size_t *sink_written)
{
    char errbuf[CURL_ERROR_SIZE];
    transfer_t t = {
        .resp = resp,
        .easy = c->easy,
        .sink = req->sink,
        .head = req->method != NULL && strcmp(req->method, "HEAD") == 0,
        .max_body = opts->max_body,
    };

    errbuf[0] = '\0';
    *retryable = false;
    curl_easy_reset(c->easy);
    if (setopts(c->easy, req, opts, headers, &t, errbuf) != 0) {
        snprintf(resp->error, sizeof(resp->error), "could not set curl options");
        return HTTP_ERR_INTERNAL;
    }
    CURLcode code = curl_easy_perform(c->easy);
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &resp->status);
    *sink_written = t.sink_written;
    /* Drop the error buffer pointer: errbuf goes out of scope. */
    curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, NULL);

    http_result_t result = map_curl_code(code, &t);
    if (result != HTTP_OK) {
        if (t.too_large)
            snprintf(resp->error, sizeof(resp->error), "response body over %zu bytes",
                     opts->max_body);
        else if (t.sink_failed)
            snprintf(resp->error, sizeof(resp->error), "writing the body to the file failed");
        else if (errbuf[0] != '\0')
            snprintf(resp->error, sizeof(resp->error), "%s", errbuf);
        else
            snprintf(resp->error, sizeof(resp->error), "%s", curl_easy_strerror(code));
        *retryable = result_retryable(result, code, &t);
        return result;
    }

    char *ctype = NULL;
    if (curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ctype) == CURLE_OK && ctype != NULL) {
        resp->content_type = strdup(ctype);
        if (resp->content_type == NULL) {
            snprintf(resp->error, sizeof(resp->error), "out of memory");
            return HTTP_ERR_INTERNAL;
        }
    }
    /* Callers may always treat body as a string, even when it is empty,
     * except for a body that went to the sink. */
    if (resp->body == NULL && !(req->sink != NULL && status_is_success(resp->status))) {
        resp->body = calloc(1, 1);
        if (resp->body == NULL) {
            snprintf(resp->error, sizeof(resp->error), "out of memory");
            return HTTP_ERR_INTERNAL;
        }
    }
    *retryable = http_status_retryable(resp->status);
    return HTTP_OK;
}

static void resolve_opts(const http_opts_t *in, http_opts_t *out)
{
    out->connect_timeout_ms = HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
    out->timeout_ms = HTTP_DEFAULT_TIMEOUT_MS;
    out->max_body = HTTP_DEFAULT_MAX_BODY;
    out->max_retries = 0;
    out->base_backoff_ms = HTTP_DEFAULT_BASE_BACKOFF_MS;
    out->max_backoff_ms = HTTP_DEFAULT_MAX_BACKOFF_MS;
    if (in == NULL)
        return;
    /* Zero (or negative) fields keep their defaults, so a caller may set
     * only what it cares about. */
    if (in->connect_timeout_ms > 0)
        out->connect_timeout_ms = in->connect_timeout_ms;
    if (in->timeout_ms > 0)
        out->timeout_ms = in->timeout_ms;
    if (in->max_body > 0)
        out->max_body = in->max_body;
    if (in->max_retries > 0)
        out->max_retries =
            in->max_retries < HTTP_MAX_RETRIES_LIMIT ? in->max_retries : HTTP_MAX_RETRIES_LIMIT;
    if (in->base_backoff_ms > 0)
        out->base_backoff_ms = in->base_backoff_ms;
    if (in->max_backoff_ms > 0)
        out->max_backoff_ms = in->max_backoff_ms;
}

http_result_t http_client_do(http_client_t *c, const http_request_t *req, http_response_t *resp)
{
    if (resp == NULL)
        return HTTP_ERR_INTERNAL;
    memset(resp, 0, sizeof(*resp));
    if (c == NULL || req == NULL || req->url == NULL || (req->body == NULL && req->body_len > 0) ||
        has_crlf(req->method)) {
        snprintf(resp->error, sizeof(resp->error), "bad arguments");
        return HTTP_ERR_INTERNAL;
    }

    http_opts_t opts;
    resolve_opts(req->opts, &opts);

    off_t sink_start = 0;
    bool sink_seekable = false;
    if (req->sink != NULL) {
        sink_start = ftello(req->sink);
        sink_seekable = sink_start >= 0;
        if (!sink_seekable)
            sink_start = 0;
    }

    struct curl_slist *headers = build_headers(req);
    if (headers == NULL) {
        snprintf(resp->error, sizeof(resp->error), "bad header or out of memory");
        return HTTP_ERR_INTERNAL;
    }

    http_result_t result = HTTP_ERR_INTERNAL;
    for (int attempt = 0;; attempt++) {
        bool retryable = false;
        size_t sink_written = 0;

        if (attempt > 0)
            response_clear(resp);
        resp->attempts = attempt + 1;
        result = attempt_once(c, req, &opts, headers, resp, &retryable, &sink_written);

        if (!retryable || attempt >= opts.max_retries)
            break;
        if (req->sink != NULL && sink_written > 0) {
            if (!sink_seekable || sink_rewind(req->sink, sink_start) != 0)
                break; /* cannot undo the partial file: report this attempt */
        }

        long delay = -1;
        if (result == HTTP_OK && resp->retry_after != NULL) {
            delay = http_retry_after_ms(resp->retry_after);
            if (delay > opts.max_backoff_ms)
                delay = opts.max_backoff_ms;
        }
        if (delay < 0) /* the (attempt + 1)-th retry */
            delay = (long)backoff_delay_ms(attempt + 1, opts.base_backoff_ms, opts.max_backoff_ms);
        sleep_ms(delay);
    }

    curl_slist_free_all(headers);
    return result;
}

/* ---- builders -------------------------------------------------------------- */

static bool is_unreserved(unsigned char ch)
{
    return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* Appends the percent-encoding of s to out (which has room: 3 * strlen(s)). */
static char *escape_into(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (is_unreserved(*p)) {
            *out++ = (char)*p;
        } else {
            *out++ = '%';
            *out++ = hex[*p >> 4];
            *out++ = hex[*p & 0x0F];
        }
    }
    return out;
}

char *http_url_escape(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t len = strlen(s);
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = malloc(len * 3 + 1);
    if (out == NULL)
        return NULL;
    char *end = escape_into(out, s);
    *end = '\0';
    return out;
}

char *http_form_encode(const http_pair_t *pairs, size_t n)
{
    if (pairs == NULL && n > 0)
        return NULL;
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (pairs[i].name == NULL)
            return NULL;
        size_t vlen = pairs[i].value != NULL ? strlen(pairs[i].value) : 0;
        size_t nlen = strlen(pairs[i].name);
        if (nlen > SIZE_MAX / 8 || vlen > SIZE_MAX / 8)
            return NULL;
        size_t piece = 3 * (nlen + vlen) + 2; /* '&' and '=' */
        if (total > SIZE_MAX - piece)
            return NULL;
        total += piece;
    }
    char *out = malloc(total);
    if (out == NULL)
        return NULL;
    char *p = out;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *p++ = '&';
        p = escape_into(p, pairs[i].name);
        *p++ = '=';
        if (pairs[i].value != NULL)
            p = escape_into(p, pairs[i].value);
    }
    *p = '\0';
    return out;
}

/* Returns true when "--boundary" occurs in data. */
static bool boundary_in(const void *data, size_t len, const char *delimiter, size_t dlen)
{
    return data != NULL && len >= dlen && memmem(data, len, delimiter, dlen) != NULL;
}

char *http_multipart_related(const char *json_metadata, const void *media, size_t media_len,
                             const char *media_type, size_t *out_len, char **content_type)
{
    char boundary[48];
    char delimiter[52];
    size_t dlen = 0;
    const char *json = json_metadata != NULL ? json_metadata : "{}";
    size_t json_len = strlen(json);
    const char *mtype = media_type != NULL ? media_type : "application/octet-stream";

    if (out_len == NULL || content_type == NULL || (media == NULL && media_len > 0) ||
        has_crlf(mtype))
        return NULL;
    *out_len = 0;
    *content_type = NULL;

    /* A random boundary that occurs in neither part. */
    bool found = false;
    for (int tries = 0; tries < 16 && !found; tries++) {
        unsigned char raw[16];
        if (crypto_random(raw, sizeof(raw)) != 0)
            continue;
        memcpy(boundary, "ca_boundary_", 12);
        crypto_hex(raw, sizeof(raw), boundary + 12);
        dlen = (size_t)snprintf(delimiter, sizeof(delimiter), "--%s", boundary);
        found = !boundary_in(json, json_len, delimiter, dlen) &&
                !boundary_in(media, media_len, delimiter, dlen);
    }
    if (!found)
        return NULL;

    char *head1 = NULL;
    char *head2 = NULL;
    char *body = NULL;
    int h1 =
        asprintf(&head1, "--%s\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n", boundary);
    int h2 = asprintf(&head2, "\r\n--%s\r\nContent-Type: %s\r\n\r\n", boundary, mtype);
    if (h1 < 0 || h2 < 0) {
        if (h1 >= 0)
            free(head1);
        if (h2 >= 0)
            free(head2);
        return NULL;
    }
    char tail[64];
    int tl = snprintf(tail, sizeof(tail), "\r\n--%s--\r\n", boundary);

    size_t fixed = (size_t)h1 + (size_t)h2 + (size_t)tl + json_len + 1;
    if (media_len > SIZE_MAX - fixed)
        goto out;
    size_t total = fixed + media_len - 1;
    body = malloc(total + 1);
    if (body == NULL)
        goto out;
    char *p = body;
    memcpy(p, head1, (size_t)h1);
    p += h1;
    memcpy(p, json, json_len);
    p += json_len;
    memcpy(p, head2, (size_t)h2);
    p += h2;
    if (media_len > 0)
        memcpy(p, media, media_len);
    p += media_len;
    memcpy(p, tail, (size_t)tl);
    p += tl;
    *p = '\0';

    if (asprintf(content_type, "multipart/related; boundary=%s", boundary) < 0) {
        *content_type = NULL;
        free(body);
        body = NULL;
        goto out;
    }
    *out_len = total;

out:
    free(head1);
    free(head2);
    return body;
}

/* ---- Retry-After ------------------------------------------------------------ */

static int month_index(const char *s)
{
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++) {
        if (strncmp(s, months[i], 3) == 0)
            return i;
    }
    return -1;
}

static bool day_name_ok(const char *s, size_t len, bool long_form)
{
    static const char *const short_days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const long_days[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                            "Friday", "Saturday", "Sunday"};
    for (int i = 0; i < 7; i++) {
        const char *name = long_form ? long_days[i] : short_days[i];
        if (strlen(name) == len && strncmp(s, name, len) == 0)
            return true;
    }
    return false;
}

static bool read_digits(const char **p, int count, int *out)
{
    int value = 0;
    for (int i = 0; i < count; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        value = value * 10 + ((*p)[i] - '0');
    }
    *p += count;
    *out = value;
    return true;
}

static bool expect_char(const char **p, char ch)
{
    if (**p != ch)
        return false;
    (*p)++;
    return true;
}

static bool read_time(const char **p, struct tm *tm)
{
    return read_digits(p, 2, &tm->tm_hour) && expect_char(p, ':') &&
           read_digits(p, 2, &tm->tm_min) && expect_char(p, ':') &&
           read_digits(p, 2, &tm->tm_sec) && tm->tm_hour < 24 && tm->tm_min < 60 &&
           tm->tm_sec <= 60;
}

static bool read_month(const char **p, struct tm *tm)
{
    int month = month_index(*p);
    if (month < 0)
        return false;
    tm->tm_mon = month;
    *p += 3;
    return true;
}

/* RFC 9110 HTTP-date: IMF-fixdate, or the obsolete RFC 850 and asctime forms.
 * Returns the time or -1. */
static time_t parse_http_date(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = s;
    const char *comma = strchr(s, ',');
    const char *space = strchr(s, ' ');
    if (space == NULL)
        return -1;

    if (comma != NULL && comma < space && comma == s + 3) {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (!day_name_ok(s, 3, false))
            return -1;
        p = s + 4;
        if (!expect_char(&p, ' ') || !read_digits(&p, 2, &tm.tm_mday) || !expect_char(&p, ' ') ||
            !read_month(&p, &tm) || !expect_char(&p, ' ') || !read_digits(&p, 4, &tm.tm_year) ||
            !expect_char(&p, ' ') || !read_time(&p, &tm) || strcmp(p, " GMT") != 0)
            return -1;
        tm.tm_year -= 1900;
    } else if (comma != NULL && comma < space) {
        /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
        if (!day_name_ok(s, (size_t)(comma - s), true))
            return -1;
        p = comma + 1;
        if (!expect_char(&p, ' ') || !read_digits(&p, 2, &tm.tm_mday) || !expect_char(&p, '-') ||
            !read_month(&p, &tm) || !expect_char(&p, '-') || !read_digits(&p, 2, &tm.tm_year) ||
            !expect_char(&p, ' ') || !read_time(&p, &tm) || strcmp(p, " GMT") != 0)
            return -1;
        /* Two-digit year: RFC 9110 says a year more than 50 years ahead is in
         * the past century. 70..99 → 19xx, 00..69 → 20xx is that rule today. */
        if (tm.tm_year < 70)
            tm.tm_year += 100;
    } else if (space == s + 3) {
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        if (!day_name_ok(s, 3, false))
            return -1;
        p = s + 3;
        if (!expect_char(&p, ' ') || !read_month(&p, &tm) || !expect_char(&p, ' '))
            return -1;
        if (*p == ' ') {
            p++;
            if (!read_digits(&p, 1, &tm.tm_mday))
                return -1;
        } else if (!read_digits(&p, 2, &tm.tm_mday)) {
            return -1;
        }
        if (!expect_char(&p, ' ') || !read_time(&p, &tm) || !expect_char(&p, ' ') ||
            !read_digits(&p, 4, &tm.tm_year) || *p != '\0')
            return -1;
        tm.tm_year -= 1900;
    } else {
        return -1;
    }

    static const int days_in_month[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (tm.tm_mday < 1 || tm.tm_mday > days_in_month[tm.tm_mon])
        return -1;
    int year = tm.tm_year + 1900;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (tm.tm_mon == 1 && tm.tm_mday == 29 && !leap)
        return -1;
    return timegm(&tm);
}

long http_retry_after_ms(const char *value)
{
    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t' || value[len - 1] == '\r' ||
                       value[len - 1] == '\n'))
        len--;
    if (len == 0 || len >= 64)
        return -1;
    char text[64];
    memcpy(text, value, len);
    text[len] = '\0';

    if (isdigit((unsigned char)text[0])) {
        /* delay-seconds = 1*DIGIT; a huge value is clamped, not refused. */
        long seconds = 0;
        for (const char *p = text; *p != '\0'; p++) {
            if (!isdigit((unsigned char)*p))
                return -1;
            if (seconds > (LONG_MAX / 1000 - 9) / 10)
                seconds = LONG_MAX / 1000;
            else
                seconds = seconds * 10 + (*p - '0');
        }
        return seconds * 1000;
    }

    time_t when = parse_http_date(text);
    if (when == (time_t)-1)
        return -1;
    double delta_ms = (double)when * 1000.0 - (double)now_wall_ms();
    if (delta_ms <= 0)
        return 0;
    if (delta_ms >= (double)LONG_MAX)
        return LONG_MAX;
    return (long)delta_ms;
}

bool http_status_retryable(long status)
{
    switch (status) {
    case 408:
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
        return true;
    default:
        return false;
    }
}
