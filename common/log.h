/*
 * log — one JSON object per line on stdout.
 *
 *   {"ts":"2026-11-25T15:04:05.123Z","level":"info","service":"job-worker",
 *    "job_id":"…","request_id":"…","msg":"…","src":"worker.c:120"}
 *
 * Context keys (request_id, job_id, user_id, …) are per thread: set them when a
 * request or job starts and clear them when it ends. Secrets are never printed:
 * every value registered with log_redact_add() is replaced by "[REDACTED]"
 * wherever it appears in a message or context value, and well-known token shapes
 * (Bearer …, Google ya29./1// tokens, Stripe sk_/rk_/whsec_ keys, OAuth
 * access_token=/refresh_token=/client_secret=/code= values) are masked too.
 * Thread-safe; each line is written with a single write(2).
 */
#ifndef CA_LOG_H
#define CA_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CA_LOG_DEBUG = 0,
    CA_LOG_INFO = 1,
    CA_LOG_WARN = 2,
    CA_LOG_ERROR = 3,
} log_level_t;

/* Sets the service name and minimum level. Safe to call again. */
void log_init(const char *service, log_level_t level);

/* "debug", "info", "warn"/"warning", "error" → level. Returns 0 or -1. */
__attribute__((warn_unused_result)) int log_level_parse(const char *name, log_level_t *out);

/* Redirect output (tests). fd -1 restores stdout. */
void log_set_fd(int fd);

/* Registers a secret (copied) that must never appear in output. Values shorter
 * than 6 bytes are ignored (too many false hits). */
void log_redact_add(const char *secret);

/* Per-thread context fields, added to every line this thread writes.
 * value NULL removes the key. Keys and values are copied. At most 8 keys. */
void log_context_set(const char *key, const char *value);
void log_context_clear(void);

bool log_enabled(log_level_t level);

void log_write(log_level_t level, const char *src_file, int src_line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Masks secrets in `text` in place (registered values and token shapes). */
void log_redact_inplace(char *text);

/* Frees the redaction list and this thread's context (clean exit for ASan). */
void log_shutdown(void);

#define log_debug(...) log_write(CA_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...) log_write(CA_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...) log_write(CA_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_error(...) log_write(CA_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
