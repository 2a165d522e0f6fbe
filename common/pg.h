/*
 * pg — PostgreSQL through libpq. Parameterized queries only.
 *
 * Blocking path (drive-poller, job-worker, billing-webhook worker threads, the
 * maintenance thread, migrations, tools): one pg_conn_t per thread.
 *   - pg_connect() retries with exponential backoff (100 ms doubling, capped at
 *     5 s, with jitter) until it connects or `deadline_ms` passes (0: forever,
 *     unless pg_abort_flag is set).
 *   - pg_exec() runs one statement with text parameters. When the connection is
 *     broken and no transaction is open, it reconnects (same backoff) and runs
 *     the statement once more; inside a transaction it fails and the caller
 *     rolls back and retries the whole unit. So a PostgreSQL restart is survived.
 *
 * Non-blocking path (api-gateway): pg_pool_t on a libevent base. Queries are
 * queued; each pooled connection is driven by its socket's events; the callback
 * runs on the loop thread. Each connection is pipelined: up to 16 queries in
 * flight, each its own segment ending in its own Sync (own implicit
 * transaction). A query may carry a user id, which row-level security reads
 * from app.user_id: each connection tracks its session's value and, when it
 * differs (or a segment in flight sets one), sends
 * SELECT set_config('app.user_id', $uid, false) in the query's segment before
 * it; a query without a user runs with ''. Queries are prepared once per
 * connection. See docs/common/pg.md.
 */
#ifndef CA_PG_H
#define CA_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct pg_conn pg_conn_t;

/* Set to true (e.g. on a second SIGTERM) to make every retry loop give up. */
extern volatile int pg_abort_flag;

/* Returns a connection or NULL (err filled) once deadline_ms has passed. */
pg_conn_t *pg_connect(const char *url, int64_t deadline_ms, char *err, size_t errlen);
void pg_close(pg_conn_t *conn);

/* Runs one parameterized statement. Returns a PGresult the caller must PQclear,
 * or NULL on error (err filled; SQLSTATE in pg_last_sqlstate()). A result whose
 * status is not COMMAND_OK/TUPLES_OK is turned into NULL + err. */
PGresult *pg_exec(pg_conn_t *conn, const char *sql, int nparams, const char *const *params,
                  char *err, size_t errlen);
/* pg_exec for a statement run often (a job's claim and completion): the
 * statement is prepared under `name` once per session (PQprepare, then
 * PQexecPrepared: no parse and plan a call). The session's names are
 * forgotten when the connection is replaced (a reconnect prepares again).
 * Same results, errors and reconnect rules as pg_exec. Give each SQL text its
 * own name; beyond PG_PREPARED_MAX names, or a name of PG_PREPARED_NAME_MAX
 * characters or more, it runs as pg_exec does. */
#define PG_PREPARED_MAX 16
#define PG_PREPARED_NAME_MAX 32
PGresult *pg_exec_prepared(pg_conn_t *conn, const char *name, const char *sql, int nparams,
                           const char *const *params, char *err, size_t errlen);
/* pg_exec for statements whose result is not needed. Returns 0 or -1. */
__attribute__((warn_unused_result)) int pg_exec_cmd(pg_conn_t *conn, const char *sql, int nparams,
                                                    const char *const *params, char *err,
                                                    size_t errlen);

/* Transactions. pg_rollback never fails loudly (safe in cleanup paths). */
__attribute__((warn_unused_result)) int pg_begin(pg_conn_t *conn, char *err, size_t errlen);
__attribute__((warn_unused_result)) int pg_commit(pg_conn_t *conn, char *err, size_t errlen);
void pg_rollback(pg_conn_t *conn);
bool pg_in_transaction(const pg_conn_t *conn);

/* SQLSTATE of the last failed statement on this connection ("" if none). */
const char *pg_last_sqlstate(const pg_conn_t *conn);
/* True for serialization failure / deadlock (40001, 40P01): retry the unit. */
bool pg_error_is_retryable(const pg_conn_t *conn);

/* SELECT 1 with a short timeout; reconnects (one attempt) when broken. */
bool pg_ping(pg_conn_t *conn);
PGconn *pg_raw(pg_conn_t *conn);

/* ---- non-blocking pool ---- */
typedef struct pg_pool pg_pool_t;

/* res is NULL on error (err holds the message, sqlstate the code). The result
 * is freed by the pool after the callback returns. */
typedef void (*pg_pool_cb)(const PGresult *res, const char *err, const char *sqlstate, void *arg);

pg_pool_t *pg_pool_new(struct event_base *base, const char *url, int size);
/* Queues a query. params are copied. user_id may be NULL. Returns 0 or -1 (queue full:
 * more than 10,000 waiting). The callback always runs exactly once, later. */
__attribute__((warn_unused_result)) int pg_pool_query(pg_pool_t *pool, const char *user_id,
                                                      const char *sql, int nparams,
                                                      const char *const *params, pg_pool_cb cb,
                                                      void *arg);
/* Number of connections currently open and healthy. */
int pg_pool_healthy(const pg_pool_t *pool);
/* Fails queued queries (callback with err "shutting down") and closes. */
void pg_pool_free(pg_pool_t *pool);

#endif
