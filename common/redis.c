/*
 * redis — hiredis connections that reconnect. See redis.h and docs/common/redis.md.
 *
 * Every command goes through run_formatted(): the command is formatted once
 * (RESP), so it can be sent again on a new connection after an I/O error. The
 * reply is read by our own loop so that the bytes of one reply can be capped
 * (REDIS_REPLY_MAX) before hiredis builds a huge object.
 */
#include "redis.h"

#include "backoff.h"
#include "errbuf.h"
#include "log.h"
#include "now.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REDIS_DEFAULT_PORT 6379
#define REDIS_CONNECT_TIMEOUT_MS 2000
#define REDIS_DEFAULT_TIMEOUT_MS 5000
#define REDIS_DEFAULT_RETRY_MS 10000
#define REDIS_BACKOFF_START_MS 100
#define REDIS_BACKOFF_MAX_MS 5000

/* blocking_wait_ms(): the command does not block / blocks without a limit. */
#define WAIT_NOT_BLOCKING (-2)
#define WAIT_FOREVER (-1)

volatile int redis_abort_flag = 0;

struct redis_conn {
    redis_url_t url;
    redisContext *ctx; /* NULL while disconnected */
    int64_t retry_ms;
    int64_t timeout_ms;
    uint64_t connects;
    bool down; /* an outage was logged; log the recovery */
};

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}

/* Sleeps ms, in slices, returning early when redis_abort_flag is set. */
static void sleep_ms(int64_t ms)
{
    while (ms > 0 && !redis_abort_flag) {
        int64_t slice = ms < 50 ? ms : 50;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000L};

        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

/* ---------------------------------------------------------------- URL */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Percent-decodes [src, src+len) into out (outlen bytes with the NUL). */
static int decode_part(const char *src, size_t len, char *out, size_t outlen, const char *what,
                       char *err, size_t errlen)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        char c = src[i];

        if (c == '%') {
            if (i + 2 >= len || hex_value(src[i + 1]) < 0 || hex_value(src[i + 2]) < 0) {
                errbuf_set(err, errlen, "redis URL: bad percent-encoding in the %s", what);
                return -1;
            }
            c = (char)(hex_value(src[i + 1]) * 16 + hex_value(src[i + 2]));
            if (c == '\0') {
                errbuf_set(err, errlen, "redis URL: the %s contains %%00", what);
                return -1;
            }
            i += 2;
        }
        if (n + 1 >= outlen) {
            errbuf_set(err, errlen, "redis URL: the %s is longer than %zu bytes", what, outlen - 1);
            return -1;
        }
        out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

static bool host_char_ok(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_';
}

static bool ipv6_char_ok(char c)
{
    return isxdigit((unsigned char)c) || c == ':' || c == '.';
}

/* Parses the decimal number [s, s+len) within [min, max]. */
static int parse_number(const char *s, size_t len, long min, long max, long *out)
{
    long value = 0;

    if (len == 0 || len > 10) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
        value = value * 10 + (s[i] - '0');
    }
    if (value < min || value > max) {
        return -1;
    }
    *out = value;
    return 0;
}

int redis_url_parse(const char *url, redis_url_t *out, char *err, size_t errlen)
{
    const char *p;
    const char *auth_end;
    const char *at = NULL;
    const char *host;
    size_t host_len;
    long number;

    memset(out, 0, sizeof(*out));
    out->port = REDIS_DEFAULT_PORT;
    if (url == NULL || url[0] == '\0') {
        errbuf_set(err, errlen, "redis URL: empty");
        return -1;
    }
    for (p = url; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            errbuf_set(err, errlen, "redis URL: contains whitespace or control characters");
            return -1;
        }
    }
    if (strncasecmp(url, "rediss://", 9) == 0) {
        errbuf_set(err, errlen, "redis URL: rediss:// (TLS) is not supported; use redis://");
        return -1;
    }
    if (strncasecmp(url, "redis://", 8) != 0) {
        errbuf_set(err, errlen, "redis URL: must start with redis://");
        return -1;
    }
    p = url + 8;
    auth_end = p + strcspn(p, "/?#");
    for (const char *q = p; q < auth_end; q++) {
        if (*q == '@') {
            at = q;
        }
    }
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));

        if (colon == NULL) {
            errbuf_set(err, errlen, "redis URL: credentials must be user:password@ or :password@");
            return -1;
        }
        if (decode_part(p, (size_t)(colon - p), out->user, sizeof(out->user), "user name", err,
                        errlen) != 0 ||
            decode_part(colon + 1, (size_t)(at - colon - 1), out->password, sizeof(out->password),
                        "password", err, errlen) != 0) {
            memset(out->password, 0, sizeof(out->password));
            return -1;
        }
        p = at + 1;
    }

    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(auth_end - p));

        if (close == NULL) {
            errbuf_set(err, errlen, "redis URL: unterminated [ in the host");
            goto fail;
        }
        host = p + 1;
        host_len = (size_t)(close - host);
        for (size_t i = 0; i < host_len; i++) {
            if (!ipv6_char_ok(host[i])) {
                errbuf_set(err, errlen, "redis URL: bad IPv6 address");
                goto fail;
            }
        }
        if (host_len == 0) {
            errbuf_set(err, errlen, "redis URL: empty IPv6 address");
            goto fail;
        }
        p = close + 1;
    } else {
        host = p;
        while (p < auth_end && *p != ':') {
            if (!host_char_ok(*p)) {
                errbuf_set(err, errlen, "redis URL: bad character in the host name");
                goto fail;
            }
            p++;
        }
        host_len = (size_t)(p - host);
    }
    if (host_len == 0) {
        host = "127.0.0.1";
        host_len = strlen(host);
    }
    if (host_len >= sizeof(out->host)) {
        errbuf_set(err, errlen, "redis URL: host name too long");
        goto fail;
    }
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';

    if (p < auth_end && *p == ':') {
        p++;
        if (parse_number(p, (size_t)(auth_end - p), 1, 65535, &number) != 0) {
            errbuf_set(err, errlen, "redis URL: port must be a number between 1 and 65535");
            goto fail;
        }
        out->port = (int)number;
        p = auth_end;
    }
    if (p != auth_end) {
        errbuf_set(err, errlen, "redis URL: unexpected text after the host");
        goto fail;
    }

    if (*p == '/') {
        size_t len;

        p++;
        len = strcspn(p, "?#");
        if (len > 0) {
            if (parse_number(p, len, 0, INT_MAX, &number) != 0) {
                errbuf_set(err, errlen, "redis URL: the database must be a non-negative number");
                goto fail;
            }
            out->db = (int)number;
        }
        p += len;
    }
    if (*p == '?') {
        errbuf_set(err, errlen, "redis URL: query parameters are not supported");
        goto fail;
    }
    if (*p == '#') {
        errbuf_set(err, errlen, "redis URL: a fragment is not supported");
        goto fail;
    }
    return 0;

fail:
    memset(out->password, 0, sizeof(out->password));
    return -1;
}

/* ---------------------------------------------------------------- wire */

/* Splits our own RESP-formatted command into at most `max` argument views.
 * Returns argc, or -1 if it does not look like one. */
static int resp_args(const char *cmd, size_t len, const char **argv, size_t *argvlen, int max)
{
    const char *p = cmd;
    const char *end = cmd + len;
    char *stop;
    long argc;

    if (len < 4 || *p != '*') {
        return -1;
    }
    argc = strtol(p + 1, &stop, 10);
    if (argc <= 0 || stop + 2 > end || stop[0] != '\r') {
        return -1;
    }
    p = stop + 2;
    for (long i = 0; i < argc; i++) {
        long arglen;

        if (p >= end || *p != '$') {
            return -1;
        }
        arglen = strtol(p + 1, &stop, 10);
        if (arglen < 0 || stop + 2 > end || stop[0] != '\r') {
            return -1;
        }
        p = stop + 2;
        if (p + arglen + 2 > end) {
            return -1;
        }
        if (i < max) {
            argv[i] = p;
            argvlen[i] = (size_t)arglen;
        }
        p += arglen + 2;
    }
    return argc > max ? max : (int)argc;
}

static bool arg_is(const char *arg, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(arg, name, len) == 0;
}

/* For a blocking command, how long the server may hold it: its timeout
 * argument in ms (WAIT_FOREVER for 0); WAIT_NOT_BLOCKING otherwise. */
static int64_t blocking_wait_ms(const char *cmd, size_t len)
{
    const char *argv[64];
    size_t argvlen[64];
    int argc = resp_args(cmd, len, argv, argvlen, 64);
    int timeout_index;
    char number[32];
    char *stop;
    double seconds;

    if (argc < 2) {
        return WAIT_NOT_BLOCKING;
    }
    if (arg_is(argv[0], argvlen[0], "BLPOP") || arg_is(argv[0], argvlen[0], "BRPOP") ||
        arg_is(argv[0], argvlen[0], "BLMOVE") || arg_is(argv[0], argvlen[0], "BRPOPLPUSH") ||
        arg_is(argv[0], argvlen[0], "BZPOPMIN") || arg_is(argv[0], argvlen[0], "BZPOPMAX")) {
        timeout_index = argc - 1;
    } else if (arg_is(argv[0], argvlen[0], "BLMPOP") || arg_is(argv[0], argvlen[0], "BZMPOP")) {
        timeout_index = 1;
    } else {
        return WAIT_NOT_BLOCKING;
    }
    if (argvlen[timeout_index] == 0 || argvlen[timeout_index] >= sizeof(number)) {
        return WAIT_NOT_BLOCKING; /* Redis answers an error at once */
    }
    memcpy(number, argv[timeout_index], argvlen[timeout_index]);
    number[argvlen[timeout_index]] = '\0';
    errno = 0;
    seconds = strtod(number, &stop);
    if (errno != 0 || *stop != '\0' || seconds < 0 || seconds > 1e9) {
        return WAIT_NOT_BLOCKING;
    }
    if (seconds == 0) {
        return WAIT_FOREVER;
    }
    return (int64_t)(seconds * 1000.0 + 0.999);
}

/* Sends one formatted command and reads its reply (an error reply included).
 * NULL: the connection is unusable (err filled); *fatal when retrying on a new
 * connection would not help. */
static redisReply *ctx_roundtrip(redisContext *ctx, const char *cmd, size_t len, bool *fatal,
                                 char *err, size_t errlen)
{
    void *reply = NULL;
    int done = 0;
    size_t received = 0;

    if (redisAppendFormattedCommand(ctx, cmd, len) != REDIS_OK) {
        goto io_error;
    }
    while (!done) {
        if (redisBufferWrite(ctx, &done) != REDIS_OK) {
            goto io_error;
        }
    }
    for (;;) {
        size_t before;

        if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK) {
            goto io_error;
        }
        if (reply != NULL) {
            return reply;
        }
        before = ctx->reader->len;
        if (redisBufferRead(ctx) != REDIS_OK) {
            goto io_error;
        }
        if (ctx->reader->len > before) {
            received += ctx->reader->len - before;
        }
        if (received > (size_t)REDIS_REPLY_MAX) {
            *fatal = true;
            errbuf_set(err, errlen, "reply larger than %u MiB refused",
                       (unsigned)(REDIS_REPLY_MAX / (1024 * 1024)));
            return NULL;
        }
    }

io_error:
    if (ctx->err == REDIS_ERR_IO && strstr(ctx->errstr, "temporarily unavailable") != NULL) {
        errbuf_set(err, errlen, "timed out waiting for the reply");
    } else if (ctx->errstr[0] != '\0') {
        errbuf_set(err, errlen, "%s", ctx->errstr);
    } else {
        errbuf_set(err, errlen, "I/O error");
    }
    return NULL;
}

/* Runs an internal command (AUTH, SELECT) built from argv on a fresh context.
 * Returns 0, or -1 with *fatal for a Redis error other than LOADING. */
static int ctx_setup_command(redisContext *ctx, int argc, const char **argv, bool *fatal, char *err,
                             size_t errlen)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    redisReply *reply;
    int rc = -1;

    if (len < 0) {
        errbuf_set(err, errlen, "out of memory");
        *fatal = true;
        return -1;
    }
    reply = ctx_roundtrip(ctx, cmd, (size_t)len, fatal, err, errlen);
    if (reply == NULL) {
        goto out;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        errbuf_set(err, errlen, "%s failed: %s", argv[0], reply->str);
        *fatal = strncmp(reply->str, "LOADING", 7) != 0;
        goto out;
    }
    rc = 0;

out:
    if (reply != NULL) {
        freeReplyObject(reply);
    }
    if (cmd != NULL) {
        memset(cmd, 0, (size_t)len); /* may hold the password */
        redisFreeCommand(cmd);
    }
    return rc;
}

/* One connection attempt: TCP connect, timeouts, AUTH, SELECT. */
static int connect_once(redis_conn_t *conn, bool *fatal, char *err, size_t errlen)
{
    char detail[256] = "";
    redisContext *ctx;

    ctx =
        redisConnectWithTimeout(conn->url.host, conn->url.port, ms_to_tv(REDIS_CONNECT_TIMEOUT_MS));
    if (ctx == NULL) {
        errbuf_set(err, errlen, "redis %s:%d: out of memory", conn->url.host, conn->url.port);
        return -1;
    }
    if (ctx->err != 0) {
        errbuf_set(err, errlen, "redis %s:%d: connect: %s", conn->url.host, conn->url.port,
                   ctx->errstr);
        redisFree(ctx);
        return -1;
    }
    if (redisSetTimeout(ctx, ms_to_tv(conn->timeout_ms)) != REDIS_OK) {
        errbuf_set(err, errlen, "redis %s:%d: cannot set the timeout: %s", conn->url.host,
                   conn->url.port, ctx->errstr);
        redisFree(ctx);
        return -1;
    }
    (void)redisEnableKeepAlive(ctx);

    if (conn->url.user[0] != '\0' || conn->url.password[0] != '\0') {
        const char *argv[3];
        int argc = 0;

        argv[argc++] = "AUTH";
        if (conn->url.user[0] != '\0') {
            argv[argc++] = conn->url.user;
        }
        argv[argc++] = conn->url.password;
        if (ctx_setup_command(ctx, argc, argv, fatal, detail, sizeof(detail)) != 0) {
            goto fail;
        }
    }
    if (conn->url.db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof(db), "%d", conn->url.db);
        if (ctx_setup_command(ctx, 2, argv, fatal, detail, sizeof(detail)) != 0) {
            goto fail;
        }
    }
    conn->ctx = ctx;
    conn->connects++;
    return 0;

fail:
    errbuf_set(err, errlen, "redis %s:%d: %s", conn->url.host, conn->url.port, detail);
    redisFree(ctx);
    return -1;
}

static void drop_ctx(redis_conn_t *conn)
{
    if (conn->ctx != NULL) {
        redisFree(conn->ctx);
        conn->ctx = NULL;
    }
}

/* Runs one formatted command with the retry policy of redis.h. */
static redisReply *run_formatted(redis_conn_t *conn, const char *cmd, size_t len, int64_t retry_ms,
                                 char *err, size_t errlen)
{
    int64_t wait_ms = blocking_wait_ms(cmd, len);
    int64_t start = now_mono_ms();
    int pauses = 0;
    bool last_try = false;
    char detail[REDIS_URL_HOST_MAX + 512];

    for (;;) {
        bool fatal = false;

        detail[0] = '\0';
        if (conn->ctx == NULL) {
            if (connect_once(conn, &fatal, detail, sizeof(detail)) == 0 && conn->down) {
                log_info("redis %s:%d: reconnected", conn->url.host, conn->url.port);
                conn->down = false;
            }
        }
        if (conn->ctx != NULL) {
            redisReply *reply;
            char io[256] = "";
            bool changed_timeout = false;

            if (wait_ms != WAIT_NOT_BLOCKING) {
                int64_t total = wait_ms == WAIT_FOREVER ? 0 : wait_ms + conn->timeout_ms;

                changed_timeout = redisSetTimeout(conn->ctx, ms_to_tv(total)) == REDIS_OK;
            }
            reply = ctx_roundtrip(conn->ctx, cmd, len, &fatal, io, sizeof(io));
            if (reply != NULL) {
                if (changed_timeout &&
                    redisSetTimeout(conn->ctx, ms_to_tv(conn->timeout_ms)) != REDIS_OK) {
                    drop_ctx(conn); /* the next command reconnects with the normal timeout */
                }
                if (reply->type == REDIS_REPLY_ERROR) {
                    errbuf_set(err, errlen, "%s", reply->str != NULL ? reply->str : "error reply");
                    freeReplyObject(reply);
                    return NULL;
                }
                return reply;
            }
            snprintf(detail, sizeof(detail), "redis %s:%d: %s", conn->url.host, conn->url.port, io);
            drop_ctx(conn);
        }
        if (!conn->down && !fatal) {
            log_warn("%s; reconnecting", detail);
            conn->down = true;
        }
        if (fatal || last_try || redis_abort_flag) {
            errbuf_set(err, errlen, "%s", detail);
            return NULL;
        }
        int64_t elapsed = now_mono_ms() - start;
        if (elapsed >= retry_ms) {
            last_try = true; /* the budget passed: run it once more */
            continue;
        }
        int64_t pause = backoff_delay_ms(++pauses, REDIS_BACKOFF_START_MS, REDIS_BACKOFF_MAX_MS);
        if (pause > retry_ms - elapsed) {
            pause = retry_ms - elapsed;
        }
        sleep_ms(pause);
    }
}

/* ---------------------------------------------------------------- API */

redis_conn_t *redis_connect(const char *url, int64_t deadline_ms, char *err, size_t errlen)
{
    redis_conn_t *conn = calloc(1, sizeof(*conn));
    int64_t start = now_mono_ms();
    int pauses = 0;
    bool logged = false;

    if (conn == NULL) {
        errbuf_set(err, errlen, "redis: out of memory");
        return NULL;
    }
    if (redis_url_parse(url, &conn->url, err, errlen) != 0) {
        free(conn);
        return NULL;
    }
    conn->retry_ms = REDIS_DEFAULT_RETRY_MS;
    conn->timeout_ms = REDIS_DEFAULT_TIMEOUT_MS;

    for (;;) {
        bool fatal = false;
        int64_t elapsed;
        int64_t pause;

        if (connect_once(conn, &fatal, err, errlen) == 0) {
            if (logged) {
                log_info("redis %s:%d: connected", conn->url.host, conn->url.port);
            }
            return conn;
        }
        elapsed = now_mono_ms() - start;
        if (fatal || redis_abort_flag || (deadline_ms > 0 && elapsed >= deadline_ms)) {
            break;
        }
        if (!logged) {
            log_warn("%s; retrying", err);
            logged = true;
        }
        pause = backoff_delay_ms(++pauses, REDIS_BACKOFF_START_MS, REDIS_BACKOFF_MAX_MS);
        if (deadline_ms > 0 && pause > deadline_ms - elapsed) {
            pause = deadline_ms - elapsed;
        }
        sleep_ms(pause);
    }
    redis_close(conn);
    return NULL;
}

void redis_close(redis_conn_t *conn)
{
    if (conn == NULL) {
        return;
    }
    drop_ctx(conn);
    memset(conn->url.password, 0, sizeof(conn->url.password));
    free(conn);
}

void redis_set_retry(redis_conn_t *conn, int64_t retry_ms)
{
    conn->retry_ms = retry_ms < 0 ? 0 : retry_ms;
}

void redis_set_timeout(redis_conn_t *conn, int64_t timeout_ms)
{
    conn->timeout_ms = timeout_ms < 1 ? 1 : timeout_ms;
    if (conn->ctx != NULL && redisSetTimeout(conn->ctx, ms_to_tv(conn->timeout_ms)) != REDIS_OK) {
        drop_ctx(conn);
    }
}

/* Runs a command hiredis formatted (len < 0: it could not) and frees it. */
static redisReply *run_command(redis_conn_t *conn, char *cmd, int len, char *err, size_t errlen)
{
    if (len < 0) {
        errbuf_set(err, errlen, "redis: cannot format the command");
        return NULL;
    }
    redisReply *reply = run_formatted(conn, cmd, (size_t)len, conn->retry_ms, err, errlen);
    redisFreeCommand(cmd);
    return reply;
}

redisReply *redis_command(redis_conn_t *conn, char *err, size_t errlen, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    int len;

    va_start(ap, fmt);
    len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    return run_command(conn, cmd, len, err, errlen);
}

redisReply *redis_command_argv(redis_conn_t *conn, int argc, const char **argv,
                               const size_t *argvlen, char *err, size_t errlen)
{
    char *cmd = NULL;
    int len;

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    return run_command(conn, cmd, len, err, errlen);
}

bool redis_ping(redis_conn_t *conn)
{
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    char err[256];
    redisReply *reply = run_formatted(conn, ping, sizeof(ping) - 1, 0, err, sizeof(err));
    bool ok;

    if (reply == NULL) {
        return false;
    }
    ok = reply->type == REDIS_REPLY_STATUS && reply->str != NULL && strcmp(reply->str, "PONG") == 0;
    freeReplyObject(reply);
    return ok;
}

redisContext *redis_raw(redis_conn_t *conn)
{
    return conn->ctx;
}

uint64_t redis_connect_count(const redis_conn_t *conn)
{
    return conn->connects;
}
