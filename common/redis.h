/*
 * redis — hiredis connections that reconnect.
 *
 * redis_connect() parses redis://[:password@]host[:port][/db] (rediss is not
 * supported and is refused). redis_command() runs one command; on an I/O error
 * it reconnects with exponential backoff (100 ms doubling, capped at 5 s) until
 * `retry_ms` passes, then runs it once more. A reply larger than 64 MiB (wire
 * bytes) is refused and the connection dropped. One redis_conn_t per thread.
 *
 * Timeouts: connecting gives up after 2 s; a command's reply is awaited for the
 * command timeout (default 5 s, redis_set_timeout). Blocking commands (BLPOP,
 * BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP) wait for their
 * own timeout argument plus the command timeout (a 0 timeout: no limit).
 * AUTH and SELECT are sent on every (re)connect. Passwords are never logged or
 * copied into err. See docs/common/redis.md.
 */
#ifndef CA_REDIS_H
#define CA_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct redis_conn redis_conn_t;

#define REDIS_URL_HOST_MAX 256
#define REDIS_URL_SECRET_MAX 256
#define REDIS_REPLY_MAX (64u * 1024u * 1024u)

/* A parsed redis:// URL. user and password are percent-decoded ("" when absent). */
typedef struct {
    char host[REDIS_URL_HOST_MAX]; /* without [] for IPv6 literals */
    int port;                      /* default 6379 */
    char user[REDIS_URL_SECRET_MAX];
    char password[REDIS_URL_SECRET_MAX];
    int db; /* default 0 */
} redis_url_t;

/* Parses redis://[[user]:password@]host[:port][/db]. Returns 0, or -1 with a one
 * line reason in err (never containing the password). rediss:// is refused. */
__attribute__((warn_unused_result)) int redis_url_parse(const char *url, redis_url_t *out,
                                                        char *err, size_t errlen);

/* Returns a connection or NULL (err filled) once deadline_ms passed (0: forever,
 * unless redis_abort_flag is set). */
redis_conn_t *redis_connect(const char *url, int64_t deadline_ms, char *err, size_t errlen);
void redis_close(redis_conn_t *conn);

extern volatile int redis_abort_flag;

/* Sets how long a command keeps retrying through reconnects (default 10 s). */
void redis_set_retry(redis_conn_t *conn, int64_t retry_ms);
/* Sets how long a reply is awaited (default 5000 ms; minimum 1 ms). */
void redis_set_timeout(redis_conn_t *conn, int64_t timeout_ms);

/* printf-style command (hiredis format). Returns a reply the caller frees with
 * freeReplyObject, or NULL (err filled). A REDIS_REPLY_ERROR reply is returned
 * as NULL + err. */
redisReply *redis_command(redis_conn_t *conn, char *err, size_t errlen, const char *fmt, ...);
redisReply *redis_command_argv(redis_conn_t *conn, int argc, const char **argv,
                               const size_t *argvlen, char *err, size_t errlen);

/* PING with no retry budget (one reconnect attempt when broken). */
bool redis_ping(redis_conn_t *conn);
/* The current hiredis context, or NULL while disconnected. Borrowed: valid until
 * the next redis_* call on conn. */
redisContext *redis_raw(redis_conn_t *conn);
/* How many times conn has (re)connected successfully (1 after redis_connect). */
uint64_t redis_connect_count(const redis_conn_t *conn);

#endif
