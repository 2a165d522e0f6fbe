/*
 * pg — PostgreSQL through libpq: a blocking connection with reconnects, and a
 * non-blocking pool on libevent. See pg.h and docs/common/pg.md.
 */
#define _GNU_SOURCE
#include "pg.h"

#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

volatile int pg_abort_flag = 0;

#define PG_BACKOFF_START_MS 100
#define PG_BACKOFF_CAP_MS 5000
#define PG_CONNECT_STEP_MS 5000      /* one connection attempt */
#define PG_RECONNECT_BUDGET_MS 15000 /* pg_exec's reconnect before its retry */
#define PG_PING_TIMEOUT_MS 2000
#define PG_POOL_QUEUE_CAP 10000
#define PG_POOL_STMT_CAP 128 /* prepared statements cached per pooled connection */
#define PG_POOL_USER_MAX 128 /* longer user ids are set on every query */
#define PG_POOL_FRESH_MS 20  /* a connection answered this recently needs no liveness check */
#define PG_POOL_PIPELINE_DEPTH 16 /* queries in flight per pooled connection */
#define PG_POOL_MAX_SIZE_PIPELINED 64 /* connections flushed once per dispatch (more: each send) */

/* ------------------------------------------------------------------ */
/* shared helpers                                                      */
/* ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t jitter_random(void)
{
    static __thread uint64_t state;
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
                (uint64_t)(uintptr_t)&ts;
        if (state == 0)
            state = 0x9e3779b97f4a7c15ULL;
    }
    /* xorshift64* */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (uint32_t)((state * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Next sleep for a backoff step: a random value in [delay/2, delay]; then
 * doubles *delay up to the cap. */
static int backoff_next(int *delay_ms)
{
    int delay = *delay_ms;
    if (delay < PG_BACKOFF_START_MS)
        delay = PG_BACKOFF_START_MS;
    int half = delay / 2;
    int sleep_ms = half + (int)(jitter_random() % (uint32_t)(delay - half + 1));
    int next = delay * 2;
    if (next > PG_BACKOFF_CAP_MS)
        next = PG_BACKOFF_CAP_MS;
    *delay_ms = next;
    return sleep_ms;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err == NULL || errlen == 0)
        return;
    snprintf(err, errlen, "%s", msg != NULL ? msg : "unknown error");
    /* libpq messages end with a newline; one-line errors read better. */
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == '\r' || err[n - 1] == ' '))
        err[--n] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (err[i] == '\n' || err[i] == '\t')
            err[i] = ' ';
    }
}

static const char *app_name(void)
{
    const char *name = program_invocation_short_name;
    if (name == NULL || name[0] == '\0')
        name = "creator-automation";
    return name;
}

/* Connection keywords: our defaults first, the URL last so that anything it
 * sets (connect_timeout, application_name, ...) wins (expand_dbname = 1). */
#define PG_NKEYS 9
static void conn_params(const char *url, const char **keys, const char **values)
{
    static const char *const k[PG_NKEYS] = {
        "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
        "keepalives_count", "application_name", "options",         "dbname", NULL};
    /* DateStyle ISO whatever the server's default: the gateway reads TIMESTAMP
     * columns as text of that form (paging_ts_rfc3339). The URL comes last, so
     * options it sets win. */
    const char *v[PG_NKEYS] = {"5", "1", "30", "10", "3", app_name(), "-c DateStyle=ISO", url, NULL};
    for (int i = 0; i < PG_NKEYS; i++) {
        keys[i] = k[i];
        values[i] = v[i];
    }
}

/* libpq prints notices on stderr by default; ours go to the log. */
static void notice_to_log(void *arg, const char *message)
{
    char msg[512];
    set_err(msg, sizeof msg, message);
    if (strncmp(msg, "FATAL", 5) == 0 || strncmp(msg, "PANIC", 5) == 0)
        log_warn("PostgreSQL: %s", msg);
    else
        log_debug("PostgreSQL: %s", msg);
}

/* A description of the URL for logs: host, port, database and user, never the
 * password. The password itself is registered for redaction. */
static char *describe_url(const char *url)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &errmsg);
    if (opts == NULL) {
        PQfreemem(errmsg);
        return strdup("(unparsable database URL)");
    }
    const char *host = NULL, *port = NULL, *dbname = NULL, *user = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0 ||
            (host == NULL && strcmp(o->keyword, "hostaddr") == 0))
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "password") == 0)
            log_redact_add(o->val);
    }
    char buf[512];
    snprintf(buf, sizeof buf, "host=%s port=%s dbname=%s user=%s", host ? host : "(default)",
             port ? port : "(default)", dbname ? dbname : "(default)", user ? user : "(default)");
    PQconninfoFree(opts);
    return strdup(buf);
}

/* Waits for fd to become ready for `events` until deadline (monotonic ms).
 * Returns 1 ready, 0 timeout, -1 error. Wakes every 100 ms to honour
 * pg_abort_flag. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        if (pg_abort_flag)
            return -1;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 100 ? 100 : (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* One connection attempt, non-blocking under the hood so that it honours
 * timeout_ms and pg_abort_flag. Returns a connected PGconn or NULL (err). */
static PGconn *connect_once(const char *url, int timeout_ms, char *err, size_t errlen)
{
    const char *keys[PG_NKEYS], *values[PG_NKEYS];
    conn_params(url, keys, values);
    PGconn *pg = PQconnectStartParams(keys, values, 1);
    if (pg == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(pg) == CONNECTION_BAD) {
        set_err(err, errlen, PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    int64_t deadline = now_ms() + timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK) {
            PQsetNoticeProcessor(pg, notice_to_log, NULL);
            return pg;
        }
        if (st == PGRES_POLLING_FAILED) {
            set_err(err, errlen, PQerrorMessage(pg));
            PQfinish(pg);
            return NULL;
        }
        int r = wait_fd(PQsocket(pg), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (r <= 0) {
            set_err(err, errlen, r == 0 ? "timeout connecting to PostgreSQL" : "connect aborted");
            PQfinish(pg);
            return NULL;
        }
        st = PQconnectPoll(pg);
    }
}

/* ------------------------------------------------------------------ */
/* blocking connection                                                 */
/* ------------------------------------------------------------------ */

struct pg_conn {
    PGconn *pg;
    char *url;     /* as given, password included: never logged */
    char *display; /* for logs */
    bool broken;   /* the PGconn must not be used (e.g. a ping timed out) */
    bool in_tx;
    bool tx_failed; /* the connection broke inside the transaction */
    char sqlstate[6];
};

static bool conn_is_bad(const pg_conn_t *c)
{
    return c->pg == NULL || c->broken || PQstatus(c->pg) == CONNECTION_BAD;
}

static void set_sqlstate(pg_conn_t *c, const char *code)
{
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", code != NULL ? code : "");
}

/* Retries connect_once with backoff until deadline (monotonic ms; 0 forever). */
static PGconn *connect_retry(const char *url, const char *display, int64_t deadline, char *err,
                             size_t errlen)
{
    int delay = PG_BACKOFF_START_MS;
    char msg[512] = "";
    for (int attempt = 1;; attempt++) {
        int step = PG_CONNECT_STEP_MS;
        if (deadline != 0) {
            int64_t left = deadline - now_ms();
            if (left < step)
                step = left > 100 ? (int)left : 100;
        }
        PGconn *pg = connect_once(url, step, msg, sizeof msg);
        if (pg != NULL) {
            if (attempt > 1)
                log_info("connected to PostgreSQL (%s) after %d attempts", display, attempt);
            return pg;
        }
        if (attempt == 1 || attempt % 10 == 0)
            log_warn("cannot connect to PostgreSQL (%s), attempt %d: %s", display, attempt, msg);
        if (pg_abort_flag) {
            snprintf(err, errlen, "connect aborted: %s", msg);
            return NULL;
        }
        int sleep_ms = backoff_next(&delay);
        int64_t wake = now_ms() + sleep_ms;
        if (deadline != 0 && wake >= deadline) {
            set_err(err, errlen, msg);
            return NULL;
        }
        while (now_ms() < wake && !pg_abort_flag)
            usleep(20000);
        if (pg_abort_flag) {
            snprintf(err, errlen, "connect aborted: %s", msg);
            return NULL;
        }
    }
}

pg_conn_t *pg_connect(const char *url, int64_t deadline_ms, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (url == NULL) {
        set_err(err, errlen, "no database URL");
        return NULL;
    }
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        /* A configuration error: retrying cannot help. */
        set_err(err, errlen, perr != NULL ? perr : "invalid database URL");
        PQfreemem(perr);
        return NULL;
    }
    PQconninfoFree(opts);
    pg_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    c->url = strdup(url);
    c->display = describe_url(url);
    if (c->url == NULL || c->display == NULL) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    int64_t deadline = deadline_ms > 0 ? now_ms() + deadline_ms : 0;
    c->pg = connect_retry(url, c->display, deadline, err, errlen);
    if (c->pg == NULL)
        goto fail;
    return c;
fail:
    free(c->url);
    free(c->display);
    free(c);
    return NULL;
}

void pg_close(pg_conn_t *conn)
{
    if (conn == NULL)
        return;
    if (conn->pg != NULL)
        PQfinish(conn->pg);
    free(conn->url);
    free(conn->display);
    free(conn);
}

/* Replaces a broken PGconn with a fresh one (backoff until budget_ms). */
static int reconnect(pg_conn_t *c, int64_t budget_ms, char *err, size_t errlen)
{
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->broken = false;
    c->in_tx = false;
    c->tx_failed = false;
    log_warn("PostgreSQL connection lost (%s); reconnecting", c->display);
    c->pg = connect_retry(c->url, c->display, now_ms() + budget_ms, err, errlen);
    return c->pg != NULL ? 0 : -1;
}

/* True when a failed statement means the connection itself is gone. */
static bool is_connection_error(PGconn *pg, const PGresult *res)
{
    if (PQstatus(pg) == CONNECTION_BAD || res == NULL)
        return true;
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (code == NULL || code[0] == '\0')
        return true;
    if (strncmp(code, "08", 2) == 0)
        return true;
    return strcmp(code, "57P01") == 0 || strcmp(code, "57P02") == 0 || strcmp(code, "57P03") == 0;
}

static void update_tx_state(pg_conn_t *c)
{
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
        c->in_tx = true;
    else if (ts == PQTRANS_IDLE)
        c->in_tx = false;
}

PGresult *pg_exec(pg_conn_t *conn, const char *sql, int nparams, const char *const *params,
                  char *err, size_t errlen)
{
    char ebuf[512];
    if (err == NULL || errlen == 0) {
        err = ebuf;
        errlen = sizeof ebuf;
    }
    err[0] = '\0';
    set_sqlstate(conn, "");
    if (conn->in_tx && conn->tx_failed) {
        set_sqlstate(conn, "08006");
        set_err(err, errlen, "connection to PostgreSQL lost inside a transaction; roll back");
        return NULL;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (conn_is_bad(conn)) {
            if (conn->in_tx) {
                conn->tx_failed = true;
                set_sqlstate(conn, "08006");
                set_err(err, errlen,
                        "connection to PostgreSQL lost inside a transaction; roll back");
                return NULL;
            }
            if (reconnect(conn, PG_RECONNECT_BUDGET_MS, err, errlen) != 0) {
                set_sqlstate(conn, "08006");
                return NULL;
            }
        }
        bool was_in_tx = conn->in_tx || PQtransactionStatus(conn->pg) != PQTRANS_IDLE;
        PGresult *res = PQexecParams(conn->pg, sql, nparams, NULL, params, NULL, NULL, 0);
        ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            update_tx_state(conn);
            return res;
        }
        if (res != NULL && !is_connection_error(conn->pg, res)) {
            set_sqlstate(conn, PQresultErrorField(res, PG_DIAG_SQLSTATE));
            const char *msg = PQresultErrorMessage(res);
            set_err(err, errlen, msg[0] != '\0' ? msg : PQresStatus(st));
            PQclear(res);
            update_tx_state(conn);
            return NULL;
        }
        /* The connection is gone. */
        const char *code = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        set_sqlstate(conn, code != NULL && code[0] != '\0' ? code : "08006");
        set_err(err, errlen,
                res != NULL && PQresultErrorMessage(res)[0] != '\0' ? PQresultErrorMessage(res)
                                                                    : PQerrorMessage(conn->pg));
        PQclear(res);
        conn->broken = true;
        if (was_in_tx) {
            conn->in_tx = true;
            conn->tx_failed = true;
            log_warn("PostgreSQL connection lost inside a transaction (%s): %s", conn->display,
                     err);
            return NULL;
        }
        /* Outside a transaction: reconnect (at the loop's top) and run it once more. */
    }
    return NULL;
}

int pg_exec_cmd(pg_conn_t *conn, const char *sql, int nparams, const char *const *params, char *err,
                size_t errlen)
{
    PGresult *res = pg_exec(conn, sql, nparams, params, err, errlen);
    if (res == NULL)
        return -1;
    PQclear(res);
    return 0;
}

int pg_begin(pg_conn_t *conn, char *err, size_t errlen)
{
    if (conn->in_tx) {
        set_err(err, errlen, "a transaction is already open");
        return -1;
    }
    if (pg_exec_cmd(conn, "BEGIN", 0, NULL, err, errlen) != 0)
        return -1;
    conn->in_tx = true;
    conn->tx_failed = false;
    return 0;
}

int pg_commit(pg_conn_t *conn, char *err, size_t errlen)
{
    if (!conn->in_tx) {
        set_err(err, errlen, "no transaction is open");
        return -1;
    }
    if (conn->tx_failed) {
        pg_rollback(conn);
        set_sqlstate(conn, "08006");
        set_err(err, errlen, "connection to PostgreSQL lost inside the transaction");
        return -1;
    }
    PGresult *res = pg_exec(conn, "COMMIT", 0, NULL, err, errlen);
    if (res == NULL) {
        pg_rollback(conn);
        return -1;
    }
    /* COMMIT of a failed transaction "succeeds" with the tag ROLLBACK. */
    bool rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    PQclear(res);
    conn->in_tx = false;
    conn->tx_failed = false;
    if (rolled_back) {
        set_sqlstate(conn, "25P02");
        set_err(err, errlen, "transaction was rolled back: an earlier statement failed");
        return -1;
    }
    return 0;
}

void pg_rollback(pg_conn_t *conn)
{
    if (conn == NULL)
        return;
    if (!conn_is_bad(conn) && PQtransactionStatus(conn->pg) != PQTRANS_IDLE) {
        PGresult *res = PQexecParams(conn->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
        PQclear(res);
    }
    conn->in_tx = false;
    conn->tx_failed = false;
}

bool pg_in_transaction(const pg_conn_t *conn)
{
    return conn->in_tx;
}

const char *pg_last_sqlstate(const pg_conn_t *conn)
{
    return conn->sqlstate;
}

bool pg_error_is_retryable(const pg_conn_t *conn)
{
    const char *s = conn->sqlstate;
    if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0)
        return true;
    /* A connection lost inside a transaction: roll back and run the unit again. */
    return strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
           strcmp(s, "57P03") == 0;
}

/* Reads results until the query completes or the deadline passes. Returns 1 ok,
 * 0 failed/timeout. */
static bool ping_once(pg_conn_t *c)
{
    PGconn *pg = c->pg;
    if (PQtransactionStatus(pg) != PQTRANS_IDLE)
        return PQstatus(pg) == CONNECTION_OK; /* do not disturb an open transaction */
    if (PQsetnonblocking(pg, 1) != 0)
        return false;
    bool ok = false;
    int64_t deadline = now_ms() + PG_PING_TIMEOUT_MS;
    if (!PQsendQueryParams(pg, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0))
        goto out;
    for (;;) {
        int f = PQflush(pg);
        if (f < 0)
            goto out;
        if (f == 1) {
            if (wait_fd(PQsocket(pg), POLLOUT | POLLIN, deadline) <= 0)
                goto timeout;
            if (!PQconsumeInput(pg))
                goto out;
            continue;
        }
        break;
    }
    bool got_ok = false;
    for (;;) {
        while (PQisBusy(pg)) {
            if (wait_fd(PQsocket(pg), POLLIN, deadline) <= 0)
                goto timeout;
            if (!PQconsumeInput(pg))
                goto out;
        }
        PGresult *res = PQgetResult(pg);
        if (res == NULL)
            break;
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            got_ok = true;
        PQclear(res);
    }
    ok = got_ok;
    goto out;
timeout:
    log_warn("PostgreSQL ping timed out after %d ms (%s)", PG_PING_TIMEOUT_MS, c->display);
    c->broken = true; /* a query is still in flight: the next use reconnects */
    return false;
out:
    if (PQsetnonblocking(pg, 0) != 0)
        c->broken = true;
    return ok && !conn_is_bad(c);
}

bool pg_ping(pg_conn_t *conn)
{
    if (conn == NULL)
        return false;
    if (conn_is_bad(conn)) {
        if (conn->in_tx) {
            conn->tx_failed = true;
            return false;
        }
        char msg[512];
        if (conn->pg != NULL)
            PQfinish(conn->pg);
        conn->broken = false;
        conn->pg = connect_once(conn->url, PG_PING_TIMEOUT_MS, msg, sizeof msg);
        if (conn->pg == NULL) {
            log_debug("PostgreSQL ping: reconnect failed (%s): %s", conn->display, msg);
            return false;
        }
        log_info("reconnected to PostgreSQL (%s)", conn->display);
    }
    if (ping_once(conn))
        return true;
    /* Broken while idle: one reconnect attempt. */
    if (!conn->in_tx && conn_is_bad(conn)) {
        char msg[512];
        PQfinish(conn->pg);
        conn->broken = false;
        conn->pg = connect_once(conn->url, PG_PING_TIMEOUT_MS, msg, sizeof msg);
        if (conn->pg == NULL)
            return false;
        return ping_once(conn);
    }
    return false;
}

PGconn *pg_raw(pg_conn_t *conn)
{
    return conn->pg;
}

/* ------------------------------------------------------------------ */
/* non-blocking pool                                                   */
/* ------------------------------------------------------------------ */

typedef struct pool_query {
    struct pool_query *next;
    char *user_id;
    char *sql;
    int nparams;
    char **params;
    pg_pool_cb cb;
    void *arg;
} pool_query_t;

typedef enum {
    PC_WAIT,       /* disconnected, a retry timer is set */
    PC_CONNECTING, /* PQconnectPoll in progress */
    PC_IDLE,
    PC_BUSY, /* queries are in flight */
} pc_state_t;

/* A statement prepared on one pooled connection (named "ca_s<id>"). */
typedef struct pool_stmt {
    uint64_t hash;
    char *sql;
    int nparams;
    unsigned id;
} pool_stmt_t;

/* One query in flight on a connection: its own pipeline segment, ended by its
 * own Sync (its own implicit transaction):
 *   [SELECT set_config('app.user_id', $1, false)] [Parse "ca_sN"] query, Sync */
typedef struct pool_seg {
    pool_query_t *q;
    int stage;        /* index of the statement whose results are being read */
    int query_stage;  /* index of the caller's query */
    PGresult *result; /* the query's result, delivered to the callback */
    bool failed;
    char err[512];
    char sqlstate[6];
    bool alone;        /* may begin a transaction: nothing is sent behind it */
    bool sending_user; /* this segment sets app.user_id */
    bool tracked;      /* ... to want_user (longer values are not remembered) */
    char want_user[PG_POOL_USER_MAX];
    long stmt_used;        /* id of the cached statement this segment runs, or -1 */
    pool_stmt_t preparing; /* a statement prepared by this segment (sql != NULL) */
} pool_seg_t;

typedef struct pool_conn {
    pg_pool_t *pool;
    int index;
    PGconn *pg;
    pc_state_t state;
    struct event *io;
    short armed; /* the events io was last assigned */
    int armed_fd;
    struct event *timer;
    int backoff_ms;
    /* Segments in flight, oldest first (a ring). */
    pool_seg_t segs[PG_POOL_PIPELINE_DEPTH];
    int seg_head;
    int nsegs;
    int nsetting_user; /* segments in flight that set app.user_id */
    /* The session's app.user_id as of the last settled segment, set with
     * set_config(..., false) only when a query needs another value. Unknown
     * after a (re)connect or any error of a segment that set it. */
    bool user_known;
    char user[PG_POOL_USER_MAX];
    pool_stmt_t *stmts; /* prepared statements of this session (confirmed) */
    int nstmts;
    unsigned next_stmt_id;
    int64_t answered_ms; /* loop time of the last complete answer, 0: none */
} pool_conn_t;

struct pg_pool {
    struct event_base *base;
    char *url;
    char *display;
    int size;
    pool_conn_t *conns;
    pool_query_t *head, *tail;
    int queued;
    struct event *kick;
    bool closing;
};

static void pc_io_cb(evutil_socket_t fd, short what, void *arg);
static int64_t loop_ms(pg_pool_t *pool);
static void pc_timer_cb(evutil_socket_t fd, short what, void *arg);
static void pc_start_connect(pool_conn_t *pc);
static void pool_dispatch(pg_pool_t *pool);

/* A query is one allocation: the struct, the parameter vector, then the SQL,
 * the user id and the parameters' bytes. */
static void query_free(pool_query_t *q)
{
    free(q);
}

static void query_fail(pool_query_t *q, const char *err, const char *sqlstate)
{
    q->cb(NULL, err, sqlstate != NULL ? sqlstate : "", q->arg);
    query_free(q);
}

/* (Re)arms the connection's single I/O event. Without a timeout the event is
 * persistent and left alone when it already waits for the same thing: no
 * epoll_ctl calls on the hot path. */
static void pc_arm(pool_conn_t *pc, short what, int timeout_ms)
{
    int fd = PQsocket(pc->pg);
    if (timeout_ms <= 0)
        what |= EV_PERSIST;
    if (timeout_ms <= 0 && pc->armed == what && pc->armed_fd == fd &&
        event_pending(pc->io, EV_READ | EV_WRITE, NULL))
        return;
    event_del(pc->io);
    event_assign(pc->io, pc->pool->base, fd, what, pc_io_cb, pc);
    pc->armed = what;
    pc->armed_fd = fd;
    if (timeout_ms > 0) {
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        event_add(pc->io, &tv);
    } else {
        event_add(pc->io, NULL);
    }
}

static void pc_schedule_retry(pool_conn_t *pc)
{
    int sleep_ms = backoff_next(&pc->backoff_ms);
    struct timeval tv = {.tv_sec = sleep_ms / 1000, .tv_usec = (sleep_ms % 1000) * 1000};
    pc->state = PC_WAIT;
    evtimer_add(pc->timer, &tv);
}

static void seg_clear(pool_seg_t *sg)
{
    if (sg->result != NULL)
        PQclear(sg->result);
    free(sg->preparing.sql);
    memset(sg, 0, sizeof *sg);
    sg->stmt_used = -1;
}

static pool_seg_t *pc_head(pool_conn_t *pc)
{
    return pc->nsegs > 0 ? &pc->segs[pc->seg_head] : NULL;
}

/* Takes the oldest segment off the ring; returns its query. */
static pool_query_t *pc_pop(pool_conn_t *pc)
{
    pool_seg_t *sg = &pc->segs[pc->seg_head];
    pool_query_t *q = sg->q;
    if (sg->sending_user)
        pc->nsetting_user--;
    seg_clear(sg);
    pc->seg_head = (pc->seg_head + 1) % PG_POOL_PIPELINE_DEPTH;
    pc->nsegs--;
    return q;
}

/* Forgets the session state (a new or lost connection). */
static void pc_forget_session(pool_conn_t *pc)
{
    pc->answered_ms = 0;
    pc->user_known = false;
    pc->user[0] = '\0';
    for (int i = 0; i < pc->nstmts; i++)
        free(pc->stmts[i].sql);
    free(pc->stmts);
    pc->stmts = NULL;
    pc->nstmts = 0;
}

/* FNV-1a of the SQL text: the statement cache's key (compared in full too). */
static uint64_t sql_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int pc_find_stmt(const pool_conn_t *pc, const char *sql, uint64_t hash, int nparams)
{
    for (int i = 0; i < pc->nstmts; i++) {
        const pool_stmt_t *st = &pc->stmts[i];
        if (st->hash == hash && st->nparams == nparams && strcmp(st->sql, sql) == 0)
            return i;
    }
    return -1;
}

static void pc_evict_stmt_id(pool_conn_t *pc, unsigned id)
{
    for (int i = 0; i < pc->nstmts; i++) {
        if (pc->stmts[i].id == id) {
            free(pc->stmts[i].sql);
            pc->stmts[i] = pc->stmts[pc->nstmts - 1];
            pc->nstmts--;
            return;
        }
    }
}

static void stmt_name(char *buf, size_t len, unsigned id)
{
    snprintf(buf, len, "ca_s%u", id);
}

/* The connection is gone: fail its queries in flight, close, retry later. */
static void pc_drop(pool_conn_t *pc, const char *why)
{
    pg_pool_t *pool = pc->pool;
    char msg[512];
    set_err(msg, sizeof msg, why != NULL && why[0] != '\0' ? why : "connection lost");
    if (pc->state != PC_CONNECTING && pc->state != PC_WAIT)
        log_warn("PostgreSQL pool connection %d lost (%s): %s", pc->index, pool->display, msg);
    event_del(pc->io);
    pool_query_t *failed[PG_POOL_PIPELINE_DEPTH];
    int nfailed = 0;
    while (pc->nsegs > 0)
        failed[nfailed++] = pc_pop(pc);
    pc->seg_head = 0;
    pc->nsetting_user = 0;
    pc_forget_session(pc);
    if (pc->pg != NULL)
        PQfinish(pc->pg);
    pc->pg = NULL;
    pc_schedule_retry(pc);
    char full[600];
    snprintf(full, sizeof full, "connection to PostgreSQL lost: %s", msg);
    for (int i = 0; i < nfailed; i++)
        query_fail(failed[i], full, "08006");
}

static void pc_connected(pool_conn_t *pc)
{
    PQsetNoticeProcessor(pc->pg, notice_to_log, NULL);
    if (PQsetnonblocking(pc->pg, 1) != 0 || PQenterPipelineMode(pc->pg) != 1) {
        pc_drop(pc, PQerrorMessage(pc->pg));
        return;
    }
    if (pc->backoff_ms > PG_BACKOFF_START_MS)
        log_info("PostgreSQL pool connection %d re-established (%s)", pc->index, pc->pool->display);
    pc->backoff_ms = PG_BACKOFF_START_MS;
    pc_forget_session(pc);
    pc->state = PC_IDLE;
    pc_arm(pc, EV_READ, 0);
    pool_dispatch(pc->pool);
}

static void pc_connect_step(pool_conn_t *pc, PostgresPollingStatusType st)
{
    switch (st) {
    case PGRES_POLLING_OK:
        pc_connected(pc);
        return;
    case PGRES_POLLING_READING:
        pc_arm(pc, EV_READ, PG_CONNECT_STEP_MS);
        return;
    case PGRES_POLLING_WRITING:
        pc_arm(pc, EV_WRITE, PG_CONNECT_STEP_MS);
        return;
    default:
        if (pc->backoff_ms <= PG_BACKOFF_START_MS)
            log_warn("PostgreSQL pool connection %d cannot connect (%s): %s", pc->index,
                     pc->pool->display, PQerrorMessage(pc->pg));
        pc_drop(pc, PQerrorMessage(pc->pg));
        return;
    }
}

static void pc_start_connect(pool_conn_t *pc)
{
    const char *keys[PG_NKEYS], *values[PG_NKEYS];
    conn_params(pc->pool->url, keys, values);
    pc->state = PC_CONNECTING;
    pc->pg = PQconnectStartParams(keys, values, 1);
    if (pc->pg == NULL || PQstatus(pc->pg) == CONNECTION_BAD) {
        pc_drop(pc, pc->pg != NULL ? PQerrorMessage(pc->pg) : "out of memory");
        return;
    }
    pc_connect_step(pc, PGRES_POLLING_WRITING);
}

static void pc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    pool_conn_t *pc = arg;
    if (pc->state == PC_WAIT && !pc->pool->closing)
        pc_start_connect(pc);
}

/* Records an error result of a segment (the first one wins). */
static void seg_note_error(pool_seg_t *sg, const PGresult *res, const char *fallback)
{
    if (sg->failed)
        return;
    sg->failed = true;
    const char *code = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(sg->sqlstate, sizeof sg->sqlstate, "%s", code != NULL ? code : "");
    const char *msg = res != NULL ? PQresultErrorMessage(res) : NULL;
    set_err(sg->err, sizeof sg->err, msg != NULL && msg[0] != '\0' ? msg : fallback);
}

/* After a segment: what the session now holds. An error in a segment that set
 * app.user_id makes it unknown (the implicit transaction that set it was
 * rolled back), so the next query sets it again; a statement prepared by the
 * segment is cached only when the segment succeeded. Segments settle in the
 * order they ran, so this follows the session exactly. */
static void pc_settle_segment(pool_conn_t *pc, pool_seg_t *sg, bool failed)
{
    if (sg->sending_user && (failed || !sg->tracked))
        pc->user_known = false;
    if (failed) {
        /* A cached plan that no longer fits (schema change) or a statement the
         * server lost: prepare it again next time. */
        if (sg->stmt_used >= 0 &&
            (strcmp(sg->sqlstate, "0A000") == 0 || strcmp(sg->sqlstate, "26000") == 0))
            pc_evict_stmt_id(pc, (unsigned)sg->stmt_used);
    } else {
        if (sg->sending_user && sg->tracked) {
            memcpy(pc->user, sg->want_user, sizeof pc->user);
            pc->user_known = true;
        }
        if (sg->preparing.sql != NULL && pc->stmts != NULL && pc->nstmts < PG_POOL_STMT_CAP) {
            pc->stmts[pc->nstmts++] = sg->preparing;
            sg->preparing.sql = NULL;
        }
    }
}

/* Hands the oldest segment's query to its callback and frees it. */
static void pc_deliver(pool_conn_t *pc)
{
    pool_seg_t *sg = pc_head(pc);
    PGresult *res = sg->result;
    sg->result = NULL;
    bool failed = sg->failed || res == NULL;
    char err[512], sqlstate[6];
    snprintf(err, sizeof err, "%s", sg->err[0] != '\0' ? sg->err : "query returned no result");
    snprintf(sqlstate, sizeof sqlstate, "%s", sg->sqlstate);
    pc_settle_segment(pc, sg, failed);
    pool_query_t *q = pc_pop(pc);
    if (failed) {
        if (res != NULL)
            PQclear(res);
        q->cb(NULL, err, sqlstate, q->arg);
    } else {
        q->cb(res, NULL, NULL, q->arg);
        PQclear(res);
    }
    query_free(q);
}

/* Consumes available results, segment by segment. Returns false when the
 * connection was dropped. */
static bool pc_read_results(pool_conn_t *pc)
{
    PGconn *pg = pc->pg;
    while (pc->nsegs > 0 && !PQisBusy(pg)) {
        pool_seg_t *sg = pc_head(pc);
        PGresult *res = PQgetResult(pg);
        if (res == NULL) {
            sg->stage++; /* end of one statement's results */
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            /* libpq reports the transaction state only with nothing else in
             * flight, which is how a query that opens a transaction is sent
             * (pc_send: alone). Left open, it is answered, then the session
             * is replaced: nothing may run inside that transaction. */
            PGTransactionStatusType ts = PQtransactionStatus(pg);
            if (pc->nsegs == 1 && (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)) {
                pc_deliver(pc);
                pc_drop(pc, "a query left a transaction open");
                return false;
            }
            pc_deliver(pc);
            pc->answered_ms = loop_ms(pc->pool);
            continue;
        }
        if (st == PGRES_PIPELINE_ABORTED) {
            seg_note_error(sg, NULL, "aborted by an earlier error in the transaction");
        } else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            seg_note_error(sg, res, PQresStatus(st));
        } else if (sg->stage == sg->query_stage) {
            if (sg->result != NULL)
                PQclear(sg->result);
            sg->result = res;
            continue;
        }
        PQclear(res);
    }
    return true;
}

/* Re-arms after I/O: always read, write too while output is pending. */
static bool pc_flush_and_arm(pool_conn_t *pc)
{
    int f = PQflush(pc->pg);
    if (f < 0) {
        pc_drop(pc, PQerrorMessage(pc->pg));
        return false;
    }
    pc_arm(pc, f == 1 ? EV_READ | EV_WRITE : EV_READ, 0);
    return true;
}

static void pc_io_cb(evutil_socket_t fd, short what, void *arg)
{
    pool_conn_t *pc = arg;
    if (pc->state == PC_CONNECTING) {
        if (what & EV_TIMEOUT) {
            pc_drop(pc, "timeout connecting to PostgreSQL");
            return;
        }
        pc_connect_step(pc, PQconnectPoll(pc->pg));
        return;
    }
    if (pc->pg == NULL)
        return;
    if ((what & EV_READ) && !PQconsumeInput(pc->pg)) {
        pc_drop(pc, PQerrorMessage(pc->pg));
        return;
    }
    if (PQstatus(pc->pg) == CONNECTION_BAD) {
        pc_drop(pc, PQerrorMessage(pc->pg));
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(pc->pg)) != NULL)
        PQfreemem(n);
    if (pc->state == PC_BUSY) {
        if (!pc_flush_and_arm(pc))
            return;
        if (!pc_read_results(pc))
            return;
        if (pc->nsegs == 0) {
            pc->state = PC_IDLE;
            pc_arm(pc, EV_READ, 0);
        }
        pool_dispatch(pc->pool);
        return;
    }
    pc_arm(pc, EV_READ, 0);
}

/* True for a statement that may leave a transaction open (BEGIN, START
 * TRANSACTION): it runs alone on its connection. */
static bool opens_transaction(const char *sql)
{
    while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' || *sql == '(')
        sql++;
    return strncasecmp(sql, "BEGIN", 5) == 0 || strncasecmp(sql, "START", 5) == 0;
}

/* Room for one more segment behind those in flight. */
static bool pc_has_room(const pool_conn_t *pc)
{
    if (pc->state != PC_BUSY || pc->nsegs >= PG_POOL_PIPELINE_DEPTH)
        return false;
    for (int i = 0; i < pc->nsegs; i++)
        if (pc->segs[(pc->seg_head + i) % PG_POOL_PIPELINE_DEPTH].alone)
            return false;
    return true;
}

/* Adds q as a new segment on a connection (idle, or with room in its
 * pipeline). Returns false when the connection was dropped (q is then failed;
 * the caller must not touch it).
 *
 * A segment carries what the session may lack, so it is right whatever
 * happened to the segments before it:
 *   - app.user_id ('' for a query without a user, so row-level security shows
 *     nothing): set in the segment unless the settled session holds the value
 *     and no segment in flight sets one (a failed one would roll its value
 *     back, so nothing sent after it may count on it);
 *   - the statement: a cached one is used; otherwise the first segment on an
 *     idle connection prepares it, and a segment behind others runs it
 *     unnamed (nothing server-side to leak if a sibling's Parse failed).
 * An error anywhere aborts the rest of the segment, so the query never runs
 * as another user. */
static bool pc_send(pool_conn_t *pc, pool_query_t *q)
{
    PGconn *pg = pc->pg;
    int slot = (pc->seg_head + pc->nsegs) % PG_POOL_PIPELINE_DEPTH;
    bool behind = pc->nsegs > 0;
    pool_seg_t *sg = &pc->segs[slot];
    seg_clear(sg);
    sg->q = q;
    sg->alone = opens_transaction(q->sql);
    pc->nsegs++;
    pc->state = PC_BUSY;
    const char *const *params = (const char *const *)q->params;
    const char *want = q->user_id != NULL ? q->user_id : "";
    bool need_user = pc->nsetting_user > 0 || !pc->user_known || strcmp(pc->user, want) != 0;
    if (need_user) {
        sg->sending_user = true;
        pc->nsetting_user++;
        /* Values too long to track are set every time (never counted as known). */
        sg->tracked = strlen(want) < sizeof sg->want_user;
        if (sg->tracked)
            snprintf(sg->want_user, sizeof sg->want_user, "%s", want);
    }

    uint64_t hash = sql_hash(q->sql);
    int idx = pc_find_stmt(pc, q->sql, hash, q->nparams);
    bool prepare = false;
    char name[32] = "";
    if (idx >= 0) {
        sg->stmt_used = pc->stmts[idx].id;
        stmt_name(name, sizeof name, pc->stmts[idx].id);
    } else if (!behind && pc->nstmts < PG_POOL_STMT_CAP) {
        if (pc->stmts == NULL)
            pc->stmts = calloc(PG_POOL_STMT_CAP, sizeof *pc->stmts);
        sg->preparing.sql = pc->stmts != NULL ? strdup(q->sql) : NULL;
        if (sg->preparing.sql != NULL) {
            prepare = true;
            sg->preparing.hash = hash;
            sg->preparing.nparams = q->nparams;
            /* A fresh name every time: a statement whose segment failed may
             * still exist on the server and must not collide. */
            sg->preparing.id = pc->next_stmt_id++;
            stmt_name(name, sizeof name, sg->preparing.id);
        }
    }

    bool sent = true;
    if (need_user) {
        const char *uid[1] = {want};
        sent = PQsendQueryParams(pg, "SELECT set_config('app.user_id', $1, false)", 1, NULL, uid,
                                 NULL, NULL, 0);
        sg->query_stage++;
    }
    if (sent && prepare) {
        sent = PQsendPrepare(pg, name, q->sql, q->nparams, NULL);
        sg->query_stage++;
    }
    if (sent)
        sent = (prepare || idx >= 0)
                   ? PQsendQueryPrepared(pg, name, q->nparams, params, NULL, NULL, 0)
                   : PQsendQueryParams(pg, q->sql, q->nparams, NULL, params, NULL, NULL, 0);
    if (sent)
        sent = PQpipelineSync(pg) == 1;
    if (!sent) {
        pc_drop(pc, PQerrorMessage(pg));
        return false;
    }
    return true;
}

/* An idle connection may have been closed by the server while nobody looked
 * (e.g. a restart while the loop was busy): check before sending on it. */
static bool pc_alive(pool_conn_t *pc)
{
    /* A server that shut down sends a FATAL message (libpq takes it as a
     * notice while idle) and closes: consume it, then peek for end-of-file. */
    for (int i = 0; i < 4; i++) {
        if (!PQconsumeInput(pc->pg) || PQstatus(pc->pg) == CONNECTION_BAD) {
            pc_drop(pc, PQerrorMessage(pc->pg));
            return false;
        }
        if (PQsslInUse(pc->pg))
            return true; /* TLS buffers its own reads; rely on the read event */
        char byte;
        ssize_t n = recv(PQsocket(pc->pg), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0) {
            pc_drop(pc, "server closed the connection");
            return false;
        }
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
    return true;
}

/* The loop's cached time in ms (no system call). */
static int64_t loop_ms(pg_pool_t *pool)
{
    struct timeval tv;
    if (event_base_gettimeofday_cached(pool->base, &tv) != 0)
        return now_ms();
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static pool_query_t *pool_pop(pg_pool_t *pool)
{
    pool_query_t *q = pool->head;
    pool->head = q->next;
    if (pool->head == NULL)
        pool->tail = NULL;
    pool->queued--;
    q->next = NULL;
    return q;
}

/* Hands queued queries to connections, oldest first: idle connections first,
 * then the connection with the fewest segments in flight, up to
 * PG_POOL_PIPELINE_DEPTH each. Pipelining lets a backend run the next query
 * without waiting for the gateway's round trip, and one wake-up of the backend
 * (and of the loop) serve several queries. (libpq 15's PQpipelineSync flushes,
 * so each segment still leaves in its own send().) */
static void pool_dispatch(pg_pool_t *pool)
{
    if (pool->closing)
        return;
    for (int i = 0; i < pool->size && pool->head != NULL; i++) {
        pool_conn_t *pc = &pool->conns[i];
        if (pc->state != PC_IDLE)
            continue;
        /* A connection that answered a moment ago is alive: skip the two
         * recv() calls of the check (a restart in between fails that one
         * query with 08006, like a query in flight). */
        int64_t since = loop_ms(pool) - pc->answered_ms;
        bool fresh = pc->answered_ms != 0 && since >= 0 && since < PG_POOL_FRESH_MS;
        if (!fresh && !pc_alive(pc))
            continue;
        if (pc_send(pc, pool_pop(pool)))
            (void)pc_flush_and_arm(pc);
    }
    bool sent[PG_POOL_MAX_SIZE_PIPELINED] = {false};
    while (pool->head != NULL) {
        pool_conn_t *best = NULL;
        int best_i = -1;
        for (int i = 0; i < pool->size; i++) {
            pool_conn_t *pc = &pool->conns[i];
            if (!pc_has_room(pc))
                continue;
            if (best == NULL || pc->nsegs < best->nsegs) {
                best = pc;
                best_i = i;
            }
        }
        if (best == NULL || opens_transaction(pool->head->sql))
            break; /* (a BEGIN waits for an idle connection: FIFO order holds) */
        if (!pc_send(best, pool_pop(pool)))
            continue;
        if (best_i < PG_POOL_MAX_SIZE_PIPELINED)
            sent[best_i] = true;
        else
            (void)pc_flush_and_arm(best);
    }
    for (int i = 0; i < pool->size && i < PG_POOL_MAX_SIZE_PIPELINED; i++)
        if (sent[i] && pool->conns[i].pg != NULL)
            (void)pc_flush_and_arm(&pool->conns[i]);
}

static void pool_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    pool_dispatch(arg);
}

pg_pool_t *pg_pool_new(struct event_base *base, const char *url, int size)
{
    if (base == NULL || url == NULL || size <= 0)
        return NULL;
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &errmsg);
    if (opts == NULL) {
        char msg[256];
        set_err(msg, sizeof msg, errmsg != NULL ? errmsg : "invalid database URL");
        log_error("invalid database URL: %s", msg);
        PQfreemem(errmsg);
        return NULL;
    }
    PQconninfoFree(opts);
    pg_pool_t *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return NULL;
    pool->base = base;
    pool->size = size;
    pool->url = strdup(url);
    pool->display = describe_url(url);
    pool->conns = calloc((size_t)size, sizeof *pool->conns);
    pool->kick = event_new(base, -1, 0, pool_kick_cb, pool);
    if (pool->url == NULL || pool->display == NULL || pool->conns == NULL || pool->kick == NULL)
        goto fail;
    for (int i = 0; i < size; i++) {
        pool_conn_t *pc = &pool->conns[i];
        pc->pool = pool;
        pc->index = i;
        pc->backoff_ms = PG_BACKOFF_START_MS;
        pc->io = event_new(base, -1, 0, pc_io_cb, pc);
        pc->timer = evtimer_new(base, pc_timer_cb, pc);
        if (pc->io == NULL || pc->timer == NULL)
            goto fail;
    }
    for (int i = 0; i < size; i++)
        pc_start_connect(&pool->conns[i]);
    return pool;
fail:
    pool->closing = true;
    pg_pool_free(pool);
    return NULL;
}

int pg_pool_query(pg_pool_t *pool, const char *user_id, const char *sql, int nparams,
                  const char *const *params, pg_pool_cb cb, void *arg)
{
    if (pool == NULL || pool->closing || sql == NULL || cb == NULL || nparams < 0)
        return -1;
    if (pool->queued >= PG_POOL_QUEUE_CAP) {
        log_warn("PostgreSQL pool queue full (%d waiting)", pool->queued);
        return -1;
    }
    size_t sql_len = strlen(sql) + 1;
    size_t user_len = user_id != NULL ? strlen(user_id) + 1 : 0;
    size_t bytes = sql_len + user_len;
    for (int i = 0; i < nparams; i++)
        bytes += params[i] != NULL ? strlen(params[i]) + 1 : 0;
    pool_query_t *q = malloc(sizeof *q + (size_t)nparams * sizeof(char *) + bytes);
    if (q == NULL)
        return -1;
    memset(q, 0, sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->nparams = nparams;
    q->params = nparams > 0 ? (char **)(q + 1) : NULL;
    char *text = (char *)(q + 1) + (size_t)nparams * sizeof(char *);
    memcpy(text, sql, sql_len);
    q->sql = text;
    text += sql_len;
    if (user_id != NULL) {
        memcpy(text, user_id, user_len);
        q->user_id = text;
        text += user_len;
    }
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL) {
            q->params[i] = NULL;
            continue;
        }
        size_t n = strlen(params[i]) + 1;
        memcpy(text, params[i], n);
        q->params[i] = text;
        text += n;
    }
    if (pool->tail != NULL)
        pool->tail->next = q;
    else
        pool->head = q;
    pool->tail = q;
    pool->queued++;
    /* Dispatch from the loop, never from here: the callback always runs later
     * and a callback that queues another query does not re-enter the pool. */
    event_active(pool->kick, EV_TIMEOUT, 0);
    return 0;
}

int pg_pool_healthy(const pg_pool_t *pool)
{
    int n = 0;
    for (int i = 0; i < pool->size; i++) {
        pc_state_t st = pool->conns[i].state;
        if (st == PC_IDLE || st == PC_BUSY)
            n++;
    }
    return n;
}

void pg_pool_free(pg_pool_t *pool)
{
    if (pool == NULL)
        return;
    pool->closing = true;
    for (int i = 0; pool->conns != NULL && i < pool->size; i++) {
        pool_conn_t *pc = &pool->conns[i];
        if (pc->io != NULL)
            event_free(pc->io);
        if (pc->timer != NULL)
            event_free(pc->timer);
        pc->io = NULL;
        pc->timer = NULL;
        pool_query_t *failed[PG_POOL_PIPELINE_DEPTH];
        int nfailed = 0;
        while (pc->nsegs > 0)
            failed[nfailed++] = pc_pop(pc);
        pc_forget_session(pc);
        if (pc->pg != NULL)
            PQfinish(pc->pg);
        pc->pg = NULL;
        for (int k = 0; k < nfailed; k++)
            query_fail(failed[k], "shutting down", "");
    }
    while (pool->head != NULL) {
        pool_query_t *q = pool->head;
        pool->head = q->next;
        query_fail(q, "shutting down", "");
    }
    pool->tail = NULL;
    if (pool->kick != NULL)
        event_free(pool->kick);
    free(pool->conns);
    free(pool->url);
    free(pool->display);
    free(pool);
}
