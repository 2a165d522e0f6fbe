/*
 * pg_internal.h — what the two halves of the pg module share: pg.c (the
 * blocking connection) and pg_pool.c (the non-blocking pool). Private to
 * them; the public API is pg.h.
 */
#ifndef CA_PG_INTERNAL_H
#define CA_PG_INTERNAL_H

/* Reconnect backoff (backoff.h): 100 ms doubling up to 5 s, equal jitter. */
#define PG_BACKOFF_START_MS 100
#define PG_BACKOFF_CAP_MS 5000
#define PG_CONNECT_STEP_MS 5000 /* one connection attempt */

/* Connection keywords for PQconnectStartParams (expand_dbname = 1): our
 * defaults first (timeouts, keepalives, application_name, DateStyle=ISO), the
 * URL last so that anything it sets wins. keys and values have PG_NKEYS
 * slots, NULL-terminated. */
#define PG_NKEYS 9
void pg_conn_params(const char *url, const char **keys, const char **values);

/* libpq's notice processor: notices go to the log (FATAL/PANIC as warnings,
 * the rest at debug), not to stderr. */
void pg_notice_to_log(void *arg, const char *message);

/* A description of the URL for logs: host, port, database and user, never the
 * password (which is registered for redaction). A new string; caller frees. */
char *pg_describe_url(const char *url);

#endif
