/*
 * Test support shared by the C integration tests: start a fake (tests/fakes)
 * or one of our daemons as a child process, talk to it over HTTP, and print
 * its log when a test fails. Linked into every test binary.
 *
 *   proc_t google;
 *   assert_int_equal(fake_start(&google, "google", NULL), 0);   // port in google.port
 *   char *body = NULL;
 *   long st = http_call("POST", url, "{\"email\":\"a@example.com\"}", &body);
 *   ...
 *   proc_stop(&google);
 *
 *   const char *env[] = {"PORT=0", "POLL_INTERVAL_SECONDS=1", NULL};  // added to environ
 *   proc_t poller;
 *   daemon_start(&poller, "drive-poller", env);  // waits for /readyz 200 (PORT chosen free)
 */
#ifndef CA_TEST_SUPPORT_H
#define CA_TEST_SUPPORT_H

#include "pg.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A 16×16 JPEG (vips black 16 16 --bands 3, then linear 1 128). */
#define TINY_JPEG_B64                                                                              \
    "/9j/4QC8RXhpZgAASUkqAAgAAAAGABIBAwABAAAAAQAAABoBBQABAAAAVgAAABsBBQABAAAAXgAAACgBAwABAAAAAgAA" \
    "ABMCAwABAAAAAQAAAGmHBAABAAAAZgAAAAAAAAA4YwAA6AMAADhjAADoAwAABgAAkAcABAAAADAyMTABkQcABAAAAAEC" \
    "AwAAoAcABAAAADAxMDABoAMAAQAAAP//AAACoAQAAQAAABAAAAADoAQAAQAAABAAAAAAAAAA/9sAQwAIBgYHBgUIBwcH" \
    "CQkICgwUDQwLCwwZEhMPFB0aHx4dGhwcICQuJyAiLCMcHCg3KSwwMTQ0NB8nOT04MjwuMzQy/9sAQwEJCQkMCwwYDQ0Y" \
    "MiEcITIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy/8AAEQgAEAAQAwEiAAIR" \
    "AQMRAf/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgMEBQYHCAkKC//EALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFB" \
    "BhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJChYXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hp" \
    "anN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqio6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn" \
    "6Onq8fLz9PX29/j5+v/EAB8BAAMBAQEBAQEBAQEAAAAAAAABAgMEBQYHCAkKC//EALURAAIBAgQEAwQHBQQEAAECdwAB" \
    "AgMRBAUhMQYSQVEHYXETIjKBCBRCkaGxwQkjM1LwFWJy0QoWJDThJfEXGBkaJicoKSo1Njc4OTpDREVGR0hJSlNUVVZX" \
    "WFlaY2RlZmdoaWpzdHV2d3h5eoKDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW" \
    "19jZ2uLj5OXm5+jp6vLz9PX29/j5+v/aAAwDAQACEQMRAD8A9/ooooA//9k="

typedef struct {
    pid_t pid;
    int port;
    char name[64];
    char log_path[256]; /* stdout+stderr of the child */
    char base_url[128]; /* http://127.0.0.1:PORT */
} proc_t;

/* Starts tests/fakes/run NAME --port 0 [extra args...] and waits for its
 * "listening on 127.0.0.1:PORT" line (10 s). extra_args: NULL-terminated or NULL.
 * Returns 0 or -1. */
int fake_start(proc_t *p, const char *name, const char *const *extra_args);

/* Starts $CA_BIN/<service> serve with the current environment plus `env`
 * ("NAME=value" strings, NULL-terminated; they override), PORT set to a free
 * port unless env sets it, LISTEN_ADDR=127.0.0.1, and waits up to 15 s for
 * /readyz to answer 200. Returns 0 or -1 (the log is printed). */
int daemon_start(proc_t *p, const char *service, const char *const *env);

/* Waits up to `timeout_ms` for the child to exit, sending nothing. Returns its
 * exit status as from waitpid's WEXITSTATUS, 128+signal when killed, or -1
 * when it still runs (then it is left running). */
int proc_wait(proc_t *p, int timeout_ms);
/* SIGTERM, wait up to `timeout_ms` (then SIGKILL). Returns the exit status as
 * from waitpid's WEXITSTATUS, 128+signal when killed, or -1. */
int proc_stop_timeout(proc_t *p, int timeout_ms);
int proc_stop(proc_t *p); /* 30 s */
/* Stops one of our daemons the way a test must: proc_stop, and its exit status
 * printed with the log when it is not 0 (after SIGTERM a daemon exits 0; a
 * sanitizer's report makes it 23). A daemon already stopped (pid 0) gives 0.
 * Call it from a test, not only from a group teardown: cmocka 1.1 reports a
 * failed group teardown yet still exits 0. */
int daemon_stop(proc_t *p);
void proc_kill9(proc_t *p); /* SIGKILL and reap */
/* Prints the child's log to stderr (call when a test fails). */
void proc_print_log(const proc_t *p);
/* True when `needle` appears in the child's log. */
bool proc_log_contains(const proc_t *p, const char *needle);

/* One HTTP request with libcurl. body may be NULL; when it starts with '{' or
 * '[' the Content-Type is application/json. *resp (may be NULL) gets the body
 * (caller frees). Returns the status, or -1 on a transport error. */
long http_call(const char *method, const char *url, const char *body, char **resp);
/* The same with extra headers ("Name: value", NULL-terminated) and the
 * response headers (caller frees, may be NULL). */
long http_call_h(const char *method, const char *url, const char *const *headers, const char *body,
                 char **resp, char **resp_headers);

/* A free TCP port on 127.0.0.1. */
int free_port(void);
/* Polls GET url until it answers `status` or timeout_ms passes. */
bool wait_http_status(const char *url, long status, int timeout_ms);
/* Polls `cond(arg)` every 50 ms until true or timeout_ms passes. */
bool wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* PostgreSQL helpers on TEST_DATABASE_URL (superuser): run SQL with params,
 * return the first column of the first row as a new string (NULL when no row
 * or error; the error is printed). */
char *sql_value(const char *sql, int nparams, const char *const *params);
/* Returns 0 or -1 (error printed). */
int sql_exec(const char *sql, int nparams, const char *const *params);
/* True when sql_value gives something other than "0" (a count that is not
 * zero); false when it gives "0", no row or an error. */
bool sql_nonzero(const char *sql, int nparams, const char *const *params);
/* TEST_DATABASE_URL (the superuser); exits 1 when it is not set. */
const char *db_url(void);
/* pg_connect to db_url() (30 s); fails the running cmocka test when it
 * cannot. Caller closes with pg_close. */
pg_conn_t *db_connect_ok(void);
/* TEST_DATABASE_URL with the user replaced by `role` (e.g. "ca_job_worker").
 * Returns a buffer of the calling thread's, valid until its next call. */
const char *db_url_as(const char *role);

/* Runs tests/lib/services.sh CMD (stop-pg, start-pg, restart-pg, stop-redis,
 * start-redis, restart-redis) and returns its exit status (0: done). */
int services_sh(const char *cmd);

#endif
