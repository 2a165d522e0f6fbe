/*
 * pg_pool — the non-blocking PostgreSQL pool of pg.h (pg_pool_*): pooled
 * connections on a libevent base, each pipelined, with app.user_id tracked
 * per session and statements prepared once per connection. The connection
 * parameters and logging are pg.c's (pg_internal.h). See pg.h and
 * docs/common/pg.md.
 */
#define _GNU_SOURCE
#include "pg.h"

#include "backoff.h"
#include "errbuf.h"
#include "log.h"
#include "now.h"
#include "pg_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define PG_POOL_QUEUE_CAP 10000
#define PG_POOL_STMT_CAP 128      /* prepared statements cached per pooled connection */
#define PG_POOL_USER_MAX 128      /* longer user ids are set on every query */
#define PG_POOL_FRESH_MS 20       /* a connection answered this recently needs no liveness check */
#define PG_POOL_PIPELINE_DEPTH 16 /* queries in flight per pooled connection */
/* Pools up to this size flush connections once per dispatch (larger: on each send). */
#define PG_POOL_MAX_SIZE_PIPELINED 64

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
    int failures; /* drops since the last connect: the backoff step */
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
    pc->failures++;
    int64_t sleep_ms = backoff_delay_ms(pc->failures, PG_BACKOFF_START_MS, PG_BACKOFF_CAP_MS);
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
    errbuf_set(msg, sizeof msg, "%s", why != NULL && why[0] != '\0' ? why : "connection lost");
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
    PQsetNoticeProcessor(pc->pg, pg_notice_to_log, NULL);
    if (PQsetnonblocking(pc->pg, 1) != 0 || PQenterPipelineMode(pc->pg) != 1) {
        pc_drop(pc, PQerrorMessage(pc->pg));
        return;
    }
    if (pc->failures > 0)
        log_info("PostgreSQL pool connection %d re-established (%s)", pc->index, pc->pool->display);
    pc->failures = 0;
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
        if (pc->failures == 0)
            log_warn("PostgreSQL pool connection %d cannot connect (%s): %s", pc->index,
                     pc->pool->display, PQerrorMessage(pc->pg));
        pc_drop(pc, PQerrorMessage(pc->pg));
        return;
    }
}

static void pc_start_connect(pool_conn_t *pc)
{
    const char *keys[PG_NKEYS], *values[PG_NKEYS];
    pg_conn_params(pc->pool->url, keys, values);
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
    errbuf_set(sg->err, sizeof sg->err, "%s", msg != NULL && msg[0] != '\0' ? msg : fallback);
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
        return now_mono_ms();
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
        errbuf_set(msg, sizeof msg, "%s", errmsg != NULL ? errmsg : "invalid database URL");
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
    pool->display = pg_describe_url(url);
    pool->conns = calloc((size_t)size, sizeof *pool->conns);
    pool->kick = event_new(base, -1, 0, pool_kick_cb, pool);
    if (pool->url == NULL || pool->display == NULL || pool->conns == NULL || pool->kick == NULL)
        goto fail;
    for (int i = 0; i < size; i++) {
        pool_conn_t *pc = &pool->conns[i];
        pc->pool = pool;
        pc->index = i;
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
