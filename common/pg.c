/*
 * pg — PostgreSQL through libpq: the blocking connection with reconnects, and
 * the connection parameters and logging the pool (pg_pool.c) shares through
 * pg_internal.h. See pg.h and docs/common/pg.md.
 */
#define _GNU_SOURCE
#include "pg.h"

#include "backoff.h"
#include "errbuf.h"
#include "log.h"
#include "now.h"
#include "pg_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

volatile int pg_abort_flag = 0;

#define PG_RECONNECT_BUDGET_MS 15000 /* pg_exec's reconnect before its retry */
#define PG_PING_TIMEOUT_MS 2000

/* ------------------------------------------------------------------ */
/* connection parameters and logging, shared with pg_pool.c            */
/* ------------------------------------------------------------------ */

static const char *app_name(void)
{
    const char *name = program_invocation_short_name;
    if (name == NULL || name[0] == '\0')
        name = "creator-automation";
    return name;
}

void pg_conn_params(const char *url, const char **keys, const char **values)
{
    static const char *const k[PG_NKEYS] = {"connect_timeout",
                                            "keepalives",
                                            "keepalives_idle",
                                            "keepalives_interval",
                                            "keepalives_count",
                                            "application_name",
                                            "options",
                                            "dbname",
                                            NULL};
    /* DateStyle ISO whatever the server's default: the gateway reads TIMESTAMP
     * columns as text of that form (paging_ts_rfc3339). The URL comes last, so
     * options it sets win. */
    const char *v[PG_NKEYS] = {"5", "1", "30", "10", "3", app_name(), "-c DateStyle=ISO",
                               url, NULL};
    for (int i = 0; i < PG_NKEYS; i++) {
        keys[i] = k[i];
        values[i] = v[i];
    }
}

void pg_notice_to_log(void *arg, const char *message)
{
    char msg[512];
    errbuf_set(msg, sizeof msg, "%s", message);
    if (strncmp(msg, "FATAL", 5) == 0 || strncmp(msg, "PANIC", 5) == 0)
        log_warn("PostgreSQL: %s", msg);
    else
        log_debug("PostgreSQL: %s", msg);
}

char *pg_describe_url(const char *url)
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
        int64_t left = deadline - now_mono_ms();
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
    pg_conn_params(url, keys, values);
    PGconn *pg = PQconnectStartParams(keys, values, 1);
    if (pg == NULL) {
        errbuf_set(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(pg) == CONNECTION_BAD) {
        errbuf_set(err, errlen, "%s", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    int64_t deadline = now_mono_ms() + timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK) {
            PQsetNoticeProcessor(pg, pg_notice_to_log, NULL);
            return pg;
        }
        if (st == PGRES_POLLING_FAILED) {
            errbuf_set(err, errlen, "%s", PQerrorMessage(pg));
            PQfinish(pg);
            return NULL;
        }
        int r = wait_fd(PQsocket(pg), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (r <= 0) {
            errbuf_set(err, errlen,
                       r == 0 ? "timeout connecting to PostgreSQL" : "connect aborted");
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
    /* names prepared on this PGconn (pg_exec_prepared); emptied whenever the
     * PGconn is replaced, so a new session prepares them again */
    int nprep;
    char prep[PG_PREPARED_MAX][PG_PREPARED_NAME_MAX];
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
    char msg[512] = "";
    for (int attempt = 1;; attempt++) {
        int step = PG_CONNECT_STEP_MS;
        if (deadline != 0) {
            int64_t left = deadline - now_mono_ms();
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
            errbuf_set(err, errlen, "connect aborted: %s", msg);
            return NULL;
        }
        int64_t wake =
            now_mono_ms() + backoff_delay_ms(attempt, PG_BACKOFF_START_MS, PG_BACKOFF_CAP_MS);
        if (deadline != 0 && wake >= deadline) {
            errbuf_set(err, errlen, "%s", msg);
            return NULL;
        }
        while (now_mono_ms() < wake && !pg_abort_flag)
            usleep(20000);
        if (pg_abort_flag) {
            errbuf_set(err, errlen, "connect aborted: %s", msg);
            return NULL;
        }
    }
}

pg_conn_t *pg_connect(const char *url, int64_t deadline_ms, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (url == NULL) {
        errbuf_set(err, errlen, "no database URL");
        return NULL;
    }
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        /* A configuration error: retrying cannot help. */
        errbuf_set(err, errlen, "%s", perr != NULL ? perr : "invalid database URL");
        PQfreemem(perr);
        return NULL;
    }
    PQconninfoFree(opts);
    pg_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        errbuf_set(err, errlen, "out of memory");
        return NULL;
    }
    c->url = strdup(url);
    c->display = pg_describe_url(url);
    if (c->url == NULL || c->display == NULL) {
        errbuf_set(err, errlen, "out of memory");
        goto fail;
    }
    int64_t deadline = deadline_ms > 0 ? now_mono_ms() + deadline_ms : 0;
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
    c->nprep = 0;
    log_warn("PostgreSQL connection lost (%s); reconnecting", c->display);
    c->pg = connect_retry(c->url, c->display, now_mono_ms() + budget_ms, err, errlen);
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

/* -1: `name` is not prepared on this session yet (and there is room to). */
static int prepared_index(const pg_conn_t *c, const char *name)
{
    for (int i = 0; i < c->nprep; i++) {
        if (strcmp(c->prep[i], name) == 0)
            return i;
    }
    return -1;
}

/* One try of the statement: unnamed (PQexecParams) when name is NULL, else
 * the named prepared statement, prepared first when this session has not yet
 * (a failed PREPARE comes back as its own failed result). */
static PGresult *exec_once(pg_conn_t *c, const char *name, const char *sql, int nparams,
                           const char *const *params)
{
    if (name == NULL)
        return PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    if (prepared_index(c, name) < 0) {
        PGresult *res = PQprepare(c->pg, name, sql, nparams, NULL);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
            return res;
        PQclear(res);
        snprintf(c->prep[c->nprep], sizeof c->prep[0], "%s", name);
        c->nprep++;
    }
    return PQexecPrepared(c->pg, name, nparams, params, NULL, NULL, 0);
}

static PGresult *exec_common(pg_conn_t *conn, const char *name, const char *sql, int nparams,
                             const char *const *params, char *err, size_t errlen)
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
        errbuf_set(err, errlen, "connection to PostgreSQL lost inside a transaction; roll back");
        return NULL;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (conn_is_bad(conn)) {
            if (conn->in_tx) {
                conn->tx_failed = true;
                set_sqlstate(conn, "08006");
                errbuf_set(err, errlen,
                           "connection to PostgreSQL lost inside a transaction; roll back");
                return NULL;
            }
            if (reconnect(conn, PG_RECONNECT_BUDGET_MS, err, errlen) != 0) {
                set_sqlstate(conn, "08006");
                return NULL;
            }
        }
        bool was_in_tx = conn->in_tx || PQtransactionStatus(conn->pg) != PQTRANS_IDLE;
        PGresult *res = exec_once(conn, name, sql, nparams, params);
        ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            update_tx_state(conn);
            return res;
        }
        if (res != NULL && !is_connection_error(conn->pg, res)) {
            set_sqlstate(conn, PQresultErrorField(res, PG_DIAG_SQLSTATE));
            const char *msg = PQresultErrorMessage(res);
            errbuf_set(err, errlen, "%s", msg[0] != '\0' ? msg : PQresStatus(st));
            PQclear(res);
            update_tx_state(conn);
            return NULL;
        }
        /* The connection is gone. */
        const char *code = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        set_sqlstate(conn, code != NULL && code[0] != '\0' ? code : "08006");
        errbuf_set(err, errlen, "%s",
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

PGresult *pg_exec(pg_conn_t *conn, const char *sql, int nparams, const char *const *params,
                  char *err, size_t errlen)
{
    return exec_common(conn, NULL, sql, nparams, params, err, errlen);
}

PGresult *pg_exec_prepared(pg_conn_t *conn, const char *name, const char *sql, int nparams,
                           const char *const *params, char *err, size_t errlen)
{
    /* a name too long, or no room left: the unnamed path (same result) */
    if (name == NULL || strlen(name) >= PG_PREPARED_NAME_MAX ||
        (prepared_index(conn, name) < 0 && conn->nprep >= PG_PREPARED_MAX))
        name = NULL;
    return exec_common(conn, name, sql, nparams, params, err, errlen);
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
        errbuf_set(err, errlen, "a transaction is already open");
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
        errbuf_set(err, errlen, "no transaction is open");
        return -1;
    }
    if (conn->tx_failed) {
        pg_rollback(conn);
        set_sqlstate(conn, "08006");
        errbuf_set(err, errlen, "connection to PostgreSQL lost inside the transaction");
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
        errbuf_set(err, errlen, "transaction was rolled back: an earlier statement failed");
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
    int64_t deadline = now_mono_ms() + PG_PING_TIMEOUT_MS;
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
        conn->nprep = 0;
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
        conn->nprep = 0;
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
