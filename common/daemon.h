/*
 * daemon — the boot sequence and main loop every service shares.
 *
 *   static const service_t job_worker_service = {.name = "job-worker", ...};
 *   int main(int argc, char **argv) { return daemon_main(&job_worker_service, argc, argv); }
 *
 * Commands: `serve` (default), `migrate`, `cleanup`, `--help`, `--version`.
 * serve: config (exit 2 naming the variable) → log → libevent base → HTTP
 * server on PORT with /healthz, /readyz, /metrics → signals as loop events
 * (SIGTERM/SIGINT drain, a second one exits at once with status 1, SIGPIPE
 * ignored) →
 * svc->start() → the maintenance thread (own PostgreSQL and Redis
 * connections, readiness pings, the service's periodic tasks) → one "ready"
 * line → loop.
 * On SIGTERM: /readyz answers 503, svc->drain() is called, the loop waits
 * until svc->drained() (or 25 s); the maintenance thread and its tasks run
 * until then; then it is joined, svc->stop() is called, everything is freed,
 * exit 0.
 * Retention: when the service has a cleanup hook and RETENTION_AT is not "off",
 * a thread of serve runs svc->cleanup every day at RETENTION_AT (UTC), once
 * across replicas (Redis SET NX on ca:retention:<service>:<YYYY-MM-DD>).
 *
 * The variable table is the common variables (DATABASE_URL,
 * MIGRATION_DATABASE_URL, REDIS_URL, PORT, LISTEN_ADDR, LOG_LEVEL, the HTTP
 * limits, RETENTION_AT) followed by
 * every one of the service's, without a limit. The only variable read outside
 * it is HOSTNAME (daemon_instance_id).
 */
#ifndef CA_DAEMON_H
#define CA_DAEMON_H

#include "config.h"
#include "http_server.h"
#include "migrate.h"
#include "pg.h"
#include "redis.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct daemon daemon_t;

typedef struct {
    const char *name; /* "job-worker" */
    int default_port;
    const config_var_t *vars; /* the service's own; common ones are added */
    size_t nvars;
    const migration_file_t *migrations;
    const size_t *nmigrations; /* the generated <service>_migrations_count */
    /* serve: register routes, start threads. Returns 0 or -1 (exit 1). */
    int (*start)(daemon_t *d);
    /* First SIGTERM: stop taking work, hand back or finish what is in flight. */
    void (*drain)(daemon_t *d);
    /* Polled every 100 ms after drain(): true when nothing is in flight. */
    bool (*drained)(daemon_t *d);
    /* Join threads, free everything. */
    void (*stop)(daemon_t *d);
    /* `cleanup`: the slice's retention rules. Returns 0 or -1 (err filled). */
    int (*cleanup)(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen);
    /* `rekey`: re-seal stored secrets under ENCRYPTION_KEY (the gateway: Drive
     * tokens). Configuration: the common variables plus ENCRYPTION_KEY and
     * ENCRYPTION_KEYS_OLD. Returns 0 or -1 (err filled). NULL: no such command. */
    int (*rekey)(daemon_t *d, pg_conn_t *pg, char *err, size_t errlen);
    /* Extra commands (e.g. job-worker's `render`), run before any
     * configuration is read: returns the exit code, or -1 when `cmd` is not
     * one of its commands. argv[0] is the command. May be NULL. */
    int (*command)(const char *cmd, int argc, char **argv);
    /* One line per extra command for --help, e.g. "  render G IN OUT  run a preset". */
    const char *command_help;
} service_t;

int daemon_main(const service_t *svc, int argc, char **argv);

const service_t *daemon_service(const daemon_t *d);
const config_t *daemon_config(const daemon_t *d);
const char *daemon_get(const daemon_t *d, const char *name); /* config_get shortcut */
struct event_base *daemon_base(const daemon_t *d);
http_server_t *daemon_http(const daemon_t *d);
bool daemon_stopping(const daemon_t *d);
void daemon_set_data(daemon_t *d, void *data);
void *daemon_data(const daemon_t *d);
/* A stable id for this process: $HOSTNAME (the pod name) or host-pid. */
const char *daemon_instance_id(const daemon_t *d);

/* RETENTION_AT's form: "HH:MM" or "HH:MM:SS" (UTC) as seconds after midnight
 * in *secs, or "off" (and NULL) as -1. Returns 0, or -1 for anything else. */
int daemon_parse_time_of_day(const char *s, int *secs);
/* The first instant after `now` (Unix seconds) at `secs` after a UTC midnight. */
int64_t daemon_next_time_of_day(int64_t now, int secs);

/* A periodic task run on the maintenance thread, with that thread's
 * connections (either may be NULL while the server is unreachable). Tasks run
 * one after another, from about period_ms / 4 after registration, and keep
 * running through the drain until the loop ends; keep each short. Register
 * from start(); at most 16 tasks (-1 past that, or for a period <= 0). */
typedef void (*daemon_task_fn)(daemon_t *d, pg_conn_t *pg, redis_conn_t *redis, void *arg);
__attribute__((warn_unused_result)) int
daemon_add_task(daemon_t *d, const char *name, int period_ms, daemon_task_fn fn, void *arg);

#endif
