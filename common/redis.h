/*
 * redis — hiredis connections that reconnect.
 *
 * redis_connect() parses redis://[:password@]host[:port][/db] (rediss is not
 * supported and is refused). redis_command() runs one command; on an I/O error
 * it reconnects with exponential backoff (100 ms doubling, capped at 5 s) until
 * `retry_ms` passes, then runs it once more. Replies larger than 64 MiB are
 * refused by hiredis's reader limit. One redis_conn_t per thread.
 */
#ifndef CA_REDIS_H
#define CA_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct redis_conn redis_conn_t;

/* Returns a connection or NULL (err filled) once deadline_ms passed (0: forever,
 * unless redis_abort_flag is set). */
redis_conn_t *redis_connect(const char *url, int64_t deadline_ms, char *err, size_t errlen);
void redis_close(redis_conn_t *conn);

extern volatile int redis_abort_flag;

/* Sets how long a command keeps retrying through reconnects (default 10 s). */
void redis_set_retry(redis_conn_t *conn, int64_t retry_ms);

/* printf-style command (hiredis format). Returns a reply the caller frees with
 * freeReplyObject, or NULL (err filled). A REDIS_REPLY_ERROR reply is returned
 * as NULL + err. */
redisReply *redis_command(redis_conn_t *conn, char *err, size_t errlen, const char *fmt, ...);
redisReply *redis_command_argv(redis_conn_t *conn, int argc, const char **argv,
                               const size_t *argvlen, char *err, size_t errlen);

bool redis_ping(redis_conn_t *conn);
redisContext *redis_raw(redis_conn_t *conn);

#endif
