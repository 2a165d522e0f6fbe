/*
 * log — JSON lines with per-thread context and secret redaction.
 * See log.h for the contract and docs/common/log.md for the notes.
 */
#define _GNU_SOURCE /* program_invocation_short_name, vasprintf */
#include "log.h"

#include "jbuf.h"
#include "now.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_CONTEXT_MAX 8
#define LOG_MSG_MAX (16 * 1024) /* message bytes kept after redaction */
#define LOG_SERVICE_MAX 64
#define REDACTED "[REDACTED]"
#define REDACTED_LEN (sizeof(REDACTED) - 1)
#define SECRET_MIN_LEN 6

/* ------------------------------------------------------------------ state */

static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER; /* service name + write(2) */
static char g_service[LOG_SERVICE_MAX];
static bool g_service_set;
static atomic_int g_level = CA_LOG_INFO;
static atomic_int g_fd = -1; /* -1: stdout */

static pthread_rwlock_t g_redact_lock = PTHREAD_RWLOCK_INITIALIZER;
static char **g_secrets; /* sorted by length, longest first */
static size_t *g_secret_lens;
static size_t g_nsecrets;

typedef struct {
    size_t n;
    char *keys[LOG_CONTEXT_MAX];
    char *values[LOG_CONTEXT_MAX];
} log_ctx_t;

static __thread log_ctx_t *tls_ctx;
static pthread_key_t g_ctx_key;
static pthread_once_t g_ctx_once = PTHREAD_ONCE_INIT;

static const char *const LEVEL_NAMES[] = {"debug", "info", "warn", "error"};

/* -------------------------------------------------------------- redaction */

static bool is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Counts bytes from `s` that satisfy `ok`, up to n. */
static size_t span(const char *s, size_t n, bool (*ok)(unsigned char))
{
    size_t i = 0;
    while (i < n && ok((unsigned char)s[i])) {
        i++;
    }
    return i;
}

static bool is_bearer_char(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' ||
           c == '=';
}

static bool is_google_char(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_';
}

static bool is_whsec_char(unsigned char c)
{
    return is_word(c) || c == '+' || c == '/' || c == '=';
}

static bool is_param_value_char(unsigned char c)
{
    return c > ' ' && c != '&' && c != '"' && c != '\'' && c != ',' && c != ';' && c != '<' &&
           c != '>' && c != ')' && c != ']' && c != '}' && c != 0x7f;
}

static bool starts_with(const char *s, size_t n, const char *prefix)
{
    size_t plen = strlen(prefix);
    return n >= plen && memcmp(s, prefix, plen) == 0;
}

/* A match: bytes [0, keep) are kept, [keep, len) are masked. */
typedef struct {
    size_t len;
    size_t keep;
} match_t;

/* "Bearer <token>" (any case). */
static bool match_bearer(const char *s, size_t n, match_t *m)
{
    if (n < 8 || strncasecmp(s, "bearer", 6) != 0 || (s[6] != ' ' && s[6] != '\t')) {
        return false;
    }
    size_t i = 6;
    while (i < n && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    size_t tok = span(s + i, n - i, is_bearer_char);
    if (tok == 0) {
        return false;
    }
    m->keep = i;
    m->len = i + tok;
    return true;
}

/* Google access tokens "ya29.…" and refresh tokens "1//…". */
static bool match_google(const char *s, size_t n, match_t *m)
{
    if (starts_with(s, n, "ya29.")) {
        size_t tok = span(s + 5, n - 5, is_google_char);
        if (tok >= 1) {
            m->keep = 0;
            m->len = 5 + tok;
            return true;
        }
    }
    if (starts_with(s, n, "1//")) {
        size_t tok = span(s + 3, n - 3, is_google_char);
        if (tok >= 4) {
            m->keep = 0;
            m->len = 3 + tok;
            return true;
        }
    }
    return false;
}

/* Stripe secret keys sk_…, rk_… and webhook secrets whsec_…. */
static bool match_stripe(const char *s, size_t n, match_t *m)
{
    size_t plen = 0;
    bool (*ok)(unsigned char) = is_word;
    if (starts_with(s, n, "sk_") || starts_with(s, n, "rk_")) {
        plen = 3;
    } else if (starts_with(s, n, "whsec_")) {
        plen = 6;
        ok = is_whsec_char;
    } else {
        return false;
    }
    size_t tok = span(s + plen, n - plen, ok);
    if (tok < 6) {
        return false;
    }
    m->keep = 0;
    m->len = plen + tok;
    return true;
}

static const char *const PARAM_NAMES[] = {"access_token", "refresh_token", "client_secret",
                                          "id_token", "code"};

/* name=value (query strings, form bodies) and "name": "value" (JSON). */
static bool match_param(const char *s, size_t n, match_t *m)
{
    for (size_t k = 0; k < sizeof(PARAM_NAMES) / sizeof(PARAM_NAMES[0]); k++) {
        const char *name = PARAM_NAMES[k];
        size_t nlen = strlen(name);
        if (starts_with(s, n, name) && n > nlen && s[nlen] == '=') {
            size_t val = span(s + nlen + 1, n - nlen - 1, is_param_value_char);
            if (val == 0) {
                return false;
            }
            m->keep = nlen + 1;
            m->len = nlen + 1 + val;
            return true;
        }
        /* JSON form; "code" is left out: {"error":{"code":"not_found"}}. */
        if (strcmp(name, "code") != 0 && n > nlen + 2 && s[0] == '"' &&
            memcmp(s + 1, name, nlen) == 0 && s[nlen + 1] == '"') {
            size_t i = nlen + 2;
            while (i < n && (s[i] == ' ' || s[i] == '\t')) {
                i++;
            }
            if (i >= n || s[i] != ':') {
                return false;
            }
            i++;
            while (i < n && (s[i] == ' ' || s[i] == '\t')) {
                i++;
            }
            if (i >= n || s[i] != '"') {
                return false;
            }
            i++;
            size_t start = i;
            while (i < n && s[i] != '"') {
                i += (s[i] == '\\' && i + 1 < n) ? 2 : 1;
            }
            if (i > n) {
                i = n;
            }
            if (i == start) {
                return false;
            }
            m->keep = start;
            m->len = i;
            return true;
        }
    }
    return false;
}

/* The password in a URL's userinfo: scheme://user:password@host. */
static bool match_url_password(const char *s, size_t n, match_t *m)
{
    if (!starts_with(s, n, "://")) {
        return false;
    }
    size_t colon = 0;
    for (size_t i = 3; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '/' || c <= ' ' || c == '"' || c == '\'' || c == '?' || c == '#') {
            return false;
        }
        if (c == ':' && colon == 0) {
            colon = i;
        } else if (c == '@') {
            if (colon == 0 || i == colon + 1) {
                return false;
            }
            m->keep = colon + 1;
            m->len = i;
            return true;
        }
    }
    return false;
}

/* Caller holds g_redact_lock for reading. */
static bool match_secret(const char *s, size_t n, match_t *m)
{
    for (size_t k = 0; k < g_nsecrets; k++) {
        size_t len = g_secret_lens[k];
        if (len <= n && s[0] == g_secrets[k][0] && memcmp(s, g_secrets[k], len) == 0) {
            m->keep = 0;
            m->len = len;
            return true;
        }
    }
    return false;
}

static bool match_at(const char *text, size_t pos, size_t n, match_t *m)
{
    const char *s = text + pos;
    size_t rest = n - pos;
    unsigned char prev = pos > 0 ? (unsigned char)text[pos - 1] : ' ';
    if (match_secret(s, rest, m)) {
        return true;
    }
    if (!is_alnum(prev) && match_bearer(s, rest, m)) {
        return true;
    }
    if (!is_alnum(prev) && prev != '/' && match_google(s, rest, m)) {
        return true;
    }
    if (is_word(prev)) {
        return s[0] == ':' && match_url_password(s, rest, m);
    }
    switch (s[0]) { /* cheap filter: the first byte of every shape below */
    case 's':
    case 'r':
    case 'w':
    case 'a':
    case 'c':
    case 'i':
    case '"':
        return match_stripe(s, rest, m) || match_param(s, rest, m);
    case ':':
        return match_url_password(s, rest, m);
    default:
        return false;
    }
}

/* Appends `text` to `out` with every secret masked by "[REDACTED]".
 * When `shrink_only`, a masked span shorter than the marker becomes '*'s of
 * its own length, so the result is never longer than the input. */
static void redact_into(jbuf_t *out, const char *text, size_t n, bool shrink_only)
{
    size_t pos = 0;
    size_t copied = 0; /* text[copied, pos) is pending plain text */
    pthread_rwlock_rdlock(&g_redact_lock);
    while (pos < n) {
        match_t m = {0, 0};
        if (!match_at(text, pos, n, &m) || m.len == 0) {
            pos++;
            continue;
        }
        jbuf_append(out, text + copied, pos + m.keep - copied);
        size_t masked = m.len - m.keep;
        if (!shrink_only || masked >= REDACTED_LEN) {
            jbuf_append(out, REDACTED, REDACTED_LEN);
        } else {
            jbuf_append(out, "******", masked < 6 ? masked : 6);
        }
        pos += m.len;
        copied = pos;
    }
    pthread_rwlock_unlock(&g_redact_lock);
    jbuf_append(out, text + copied, n - copied);
}

void log_redact_inplace(char *text)
{
    if (text == NULL) {
        return;
    }
    size_t n = strlen(text);
    jbuf_t out = {0};
    redact_into(&out, text, n, true);
    if (out.oom) {
        /* Cannot build the masked copy: drop the text rather than leak. */
        memset(text, '*', n);
    } else if (out.len <= n) {
        memcpy(text, out.p, out.len + 1);
    }
    free(out.p);
}

void log_redact_add(const char *secret)
{
    if (secret == NULL) {
        return;
    }
    size_t len = strlen(secret);
    if (len < SECRET_MIN_LEN) {
        return;
    }
    pthread_rwlock_wrlock(&g_redact_lock);
    for (size_t k = 0; k < g_nsecrets; k++) {
        if (g_secret_lens[k] == len && memcmp(g_secrets[k], secret, len) == 0) {
            goto out;
        }
    }
    char *copy = strdup(secret);
    char **secrets = realloc(g_secrets, (g_nsecrets + 1) * sizeof(*secrets));
    if (secrets != NULL) {
        g_secrets = secrets;
    }
    size_t *lens = realloc(g_secret_lens, (g_nsecrets + 1) * sizeof(*lens));
    if (lens != NULL) {
        g_secret_lens = lens;
    }
    if (copy == NULL || secrets == NULL || lens == NULL) {
        free(copy);
        goto out;
    }
    size_t at = 0;
    while (at < g_nsecrets && g_secret_lens[at] >= len) {
        at++;
    }
    memmove(g_secrets + at + 1, g_secrets + at, (g_nsecrets - at) * sizeof(*g_secrets));
    memmove(g_secret_lens + at + 1, g_secret_lens + at, (g_nsecrets - at) * sizeof(*g_secret_lens));
    g_secrets[at] = copy;
    g_secret_lens[at] = len;
    g_nsecrets++;
out:
    pthread_rwlock_unlock(&g_redact_lock);
}

/* ------------------------------------------------------------ JSON output */

/* Length of the well-formed UTF-8 sequence at s, or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) {
            lo = 0xA0;
        } else if (c == 0xED) {
            hi = 0x9F; /* no UTF-16 surrogates */
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) {
            lo = 0x90;
        } else if (c == 0xF4) {
            hi = 0x8F;
        }
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) {
            return 0;
        }
    }
    return len;
}

/* Appends a JSON string literal; invalid UTF-8 bytes become U+FFFD. */
static void json_string(jbuf_t *b, const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    jbuf_append(b, "\"", 1);
    while (i < n) {
        size_t run = i;
        /* Copy plain bytes in runs. */
        while (run < n && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\') {
            run++;
        }
        if (run > i) {
            jbuf_append(b, text + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = s[i];
        char esc[8];
        switch (c) {
        case '"':
            jbuf_append(b, "\\\"", 2);
            i++;
            break;
        case '\\':
            jbuf_append(b, "\\\\", 2);
            i++;
            break;
        case '\n':
            jbuf_append(b, "\\n", 2);
            i++;
            break;
        case '\r':
            jbuf_append(b, "\\r", 2);
            i++;
            break;
        case '\t':
            jbuf_append(b, "\\t", 2);
            i++;
            break;
        case '\b':
            jbuf_append(b, "\\b", 2);
            i++;
            break;
        case '\f':
            jbuf_append(b, "\\f", 2);
            i++;
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                jbuf_append(b, esc, 6);
                i++;
            } else {
                size_t len = utf8_len(s + i, n - i);
                if (len == 0) {
                    jbuf_append(b, "\\ufffd", 6);
                    i++;
                } else {
                    jbuf_append(b, text + i, len);
                    i += len;
                }
            }
            break;
        }
    }
    jbuf_append(b, "\"", 1);
}

static void json_string_redacted(jbuf_t *b, const char *text, size_t n)
{
    jbuf_t masked = {0};
    redact_into(&masked, text, n, false);
    if (masked.oom) {
        b->oom = true;
    } else {
        json_string(b, masked.p != NULL ? masked.p : "", masked.len);
    }
    free(masked.p);
}

static void json_field(jbuf_t *b, const char *key, const char *value, size_t vlen, bool redact)
{
    jbuf_append(b, ",", 1);
    json_string(b, key, strlen(key));
    jbuf_append(b, ":", 1);
    if (redact) {
        json_string_redacted(b, value, vlen);
    } else {
        json_string(b, value, vlen);
    }
}

/* ------------------------------------------------------------- public API */

void log_init(const char *service, log_level_t level)
{
    pthread_mutex_lock(&g_write_lock);
    snprintf(g_service, sizeof(g_service), "%s", service != NULL ? service : "");
    g_service_set = true;
    pthread_mutex_unlock(&g_write_lock);
    if (level < CA_LOG_DEBUG) {
        level = CA_LOG_DEBUG;
    }
    if (level > CA_LOG_ERROR) {
        level = CA_LOG_ERROR;
    }
    atomic_store(&g_level, (int)level);
}

int log_level_parse(const char *name, log_level_t *out)
{
    if (name == NULL || out == NULL) {
        return -1;
    }
    if (strcasecmp(name, "debug") == 0) {
        *out = CA_LOG_DEBUG;
    } else if (strcasecmp(name, "info") == 0) {
        *out = CA_LOG_INFO;
    } else if (strcasecmp(name, "warn") == 0 || strcasecmp(name, "warning") == 0) {
        *out = CA_LOG_WARN;
    } else if (strcasecmp(name, "error") == 0) {
        *out = CA_LOG_ERROR;
    } else {
        return -1;
    }
    return 0;
}

void log_set_fd(int fd)
{
    atomic_store(&g_fd, fd < 0 ? -1 : fd);
}

bool log_enabled(log_level_t level)
{
    return (int)level >= atomic_load(&g_level);
}

static void ctx_free(log_ctx_t *ctx)
{
    if (ctx == NULL) {
        return;
    }
    for (size_t i = 0; i < ctx->n; i++) {
        free(ctx->keys[i]);
        free(ctx->values[i]);
    }
    free(ctx);
}

static void ctx_destroy(void *p)
{
    ctx_free(p);
    tls_ctx = NULL;
}

static void ctx_key_create(void)
{
    (void)pthread_key_create(&g_ctx_key, ctx_destroy);
}

static bool is_reserved_key(const char *key)
{
    return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "service") == 0 ||
           strcmp(key, "msg") == 0 || strcmp(key, "src") == 0;
}

void log_context_set(const char *key, const char *value)
{
    if (key == NULL || key[0] == '\0' || is_reserved_key(key)) {
        return;
    }
    log_ctx_t *ctx = tls_ctx;
    if (ctx == NULL) {
        if (value == NULL) {
            return;
        }
        pthread_once(&g_ctx_once, ctx_key_create);
        ctx = calloc(1, sizeof(*ctx));
        if (ctx == NULL) {
            return;
        }
        tls_ctx = ctx;
        /* Frees the context when the thread exits without clearing it. */
        (void)pthread_setspecific(g_ctx_key, ctx);
    }
    for (size_t i = 0; i < ctx->n; i++) {
        if (strcmp(ctx->keys[i], key) != 0) {
            continue;
        }
        if (value == NULL) {
            free(ctx->keys[i]);
            free(ctx->values[i]);
            ctx->n--;
            /* Keep insertion order. */
            memmove(ctx->keys + i, ctx->keys + i + 1, (ctx->n - i) * sizeof(char *));
            memmove(ctx->values + i, ctx->values + i + 1, (ctx->n - i) * sizeof(char *));
            return;
        }
        char *copy = strdup(value);
        if (copy != NULL) {
            free(ctx->values[i]);
            ctx->values[i] = copy;
        }
        return;
    }
    if (value == NULL || ctx->n >= LOG_CONTEXT_MAX) {
        return;
    }
    char *kcopy = strdup(key);
    char *vcopy = strdup(value);
    if (kcopy == NULL || vcopy == NULL) {
        free(kcopy);
        free(vcopy);
        return;
    }
    ctx->keys[ctx->n] = kcopy;
    ctx->values[ctx->n] = vcopy;
    ctx->n++;
}

void log_context_clear(void)
{
    log_ctx_t *ctx = tls_ctx;
    if (ctx == NULL) {
        return;
    }
    for (size_t i = 0; i < ctx->n; i++) {
        free(ctx->keys[i]);
        free(ctx->values[i]);
        ctx->keys[i] = NULL;
        ctx->values[i] = NULL;
    }
    ctx->n = 0;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* nowhere to report a logging failure */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void emit(const char *line, size_t len)
{
    int fd = atomic_load(&g_fd);
    if (fd < 0) {
        fd = STDOUT_FILENO;
    }
    pthread_mutex_lock(&g_write_lock);
    write_all(fd, line, len);
    pthread_mutex_unlock(&g_write_lock);
}

static void format_ts(char *out, size_t outlen)
{
    int64_t now = now_wall_ms();
    time_t seconds = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, outlen - n, ".%03dZ", (int)(now % 1000));
}

void log_write(log_level_t level, const char *src_file, int src_line, const char *fmt, ...)
{
    if (!log_enabled(level)) {
        return;
    }
    if ((int)level < CA_LOG_DEBUG || level > CA_LOG_ERROR) {
        level = CA_LOG_ERROR;
    }

    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int msglen = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (msglen < 0) {
        msg = NULL;
    }

    char ts[40];
    char service[LOG_SERVICE_MAX];
    format_ts(ts, sizeof(ts));
    pthread_mutex_lock(&g_write_lock);
    snprintf(service, sizeof(service), "%s",
             g_service_set ? g_service : program_invocation_short_name);
    pthread_mutex_unlock(&g_write_lock);

    jbuf_t line = {0};
    jbuf_puts(&line, "{\"ts\":\"");
    jbuf_puts(&line, ts);
    jbuf_puts(&line, "\",\"level\":\"");
    jbuf_puts(&line, LEVEL_NAMES[level]);
    jbuf_puts(&line, "\"");
    json_field(&line, "service", service, strlen(service), false);

    const log_ctx_t *ctx = tls_ctx;
    for (size_t i = 0; ctx != NULL && i < ctx->n; i++) {
        json_field(&line, ctx->keys[i], ctx->values[i], strlen(ctx->values[i]), true);
    }

    /* Redact first, then truncate: a cut must never split a secret. */
    jbuf_t masked = {0};
    if (msg != NULL) {
        redact_into(&masked, msg, (size_t)msglen, false);
    }
    if (msg == NULL || masked.oom) {
        json_field(&line, "msg", "(log message lost: out of memory)", 33, false);
    } else {
        size_t keep = masked.len;
        bool truncated = false;
        if (keep > LOG_MSG_MAX) {
            keep = LOG_MSG_MAX;
            while (keep > 0 && ((unsigned char)masked.p[keep] & 0xC0) == 0x80) {
                keep--; /* do not cut a UTF-8 sequence */
            }
            truncated = true;
        }
        jbuf_puts(&line, ",\"msg\":");
        json_string(&line, masked.p != NULL ? masked.p : "", keep);
        if (truncated) {
            line.len--; /* reopen the string to mark the cut */
            jbuf_puts(&line, " [truncated]\"");
        }
    }
    free(masked.p);
    if (msg != NULL) {
        memset(msg, 0, (size_t)msglen);
        free(msg);
    }

    if (src_file != NULL) {
        const char *base = strrchr(src_file, '/');
        char src[256];
        int n = snprintf(src, sizeof(src), "%s:%d", base != NULL ? base + 1 : src_file, src_line);
        if (n > 0) {
            json_field(&line, "src", src, strlen(src), false);
        }
    }
    jbuf_puts(&line, "}\n");

    if (line.oom) {
        static const char oom[] = "{\"level\":\"error\",\"msg\":\"log: out of memory\"}\n";
        emit(oom, sizeof(oom) - 1);
    } else {
        emit(line.p, line.len);
    }
    free(line.p);
}

void log_shutdown(void)
{
    pthread_rwlock_wrlock(&g_redact_lock);
    for (size_t k = 0; k < g_nsecrets; k++) {
        memset(g_secrets[k], 0, g_secret_lens[k]);
        free(g_secrets[k]);
    }
    free(g_secrets);
    free(g_secret_lens);
    g_secrets = NULL;
    g_secret_lens = NULL;
    g_nsecrets = 0;
    pthread_rwlock_unlock(&g_redact_lock);

    if (tls_ctx != NULL) {
        ctx_free(tls_ctx);
        tls_ctx = NULL;
        (void)pthread_setspecific(g_ctx_key, NULL);
    }
}
