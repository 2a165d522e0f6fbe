/*
 * gw_redis — one async hiredis connection on the gateway's libevent loop, with
 * reconnects (100 ms doubling to 2 s), AUTH/SELECT from the URL, and EVALSHA
 * with an EVAL fallback. Never blocks the loop. See gateway.h.
 */
#include "gateway.h"

#include "log.h"
#include "redis.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GW_REDIS_MAX_SCRIPTS 8

struct gw_redis {
    struct event_base *base;
    redis_url_t url;
    redisAsyncContext *ac;
    bool connected;
    bool closing;
    int backoff_ms;
    struct event *retry_ev;
    struct {
        const char *script;
        char sha[41];
    } scripts[GW_REDIS_MAX_SCRIPTS];
    int nscripts;
};

typedef struct {
    gw_redis_cb cb;
    void *arg;
} pending_t;

static void start_connect(gw_redis_t *r);

static void schedule_retry(gw_redis_t *r)
{
    if (r->closing) {
        return;
    }
    struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};
    evtimer_add(r->retry_ev, &tv);
    r->backoff_ms = r->backoff_ms * 2 > 2000 ? 2000 : r->backoff_ms * 2;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_connect(arg);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    gw_redis_t *r = ac->data;
    if (status != REDIS_OK) {
        log_warn("redis: cannot connect to %s:%d: %s", r->url.host, r->url.port, ac->errstr);
        r->ac = NULL; /* hiredis frees it */
        r->connected = false;
        schedule_retry(r);
        return;
    }
    r->connected = true;
    r->backoff_ms = 100;
    log_info("redis: connected to %s:%d", r->url.host, r->url.port);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    gw_redis_t *r = ac->data;
    (void)status;
    r->ac = NULL;
    r->connected = false;
    if (!r->closing) {
        log_warn("redis: connection to %s:%d lost; reconnecting", r->url.host, r->url.port);
        schedule_retry(r);
    }
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redisReply *rep = reply;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
        log_error("redis: %s failed: %s", (const char *)privdata, rep->str);
    }
}

static void start_connect(gw_redis_t *r)
{
    if (r->closing || r->ac != NULL) {
        return;
    }
    redisAsyncContext *ac = redisAsyncConnect(r->url.host, r->url.port);
    if (ac == NULL || ac->err) {
        log_warn("redis: cannot connect to %s:%d: %s", r->url.host, r->url.port,
                 ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL) {
            redisAsyncFree(ac);
        }
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    /* Queued now, sent first once connected. */
    if (r->url.password[0] != '\0') {
        if (r->url.user[0] != '\0') {
            (void)redisAsyncCommand(ac, on_setup_reply, "AUTH", "AUTH %s %s", r->url.user,
                                    r->url.password);
        } else {
            (void)redisAsyncCommand(ac, on_setup_reply, "AUTH", "AUTH %s", r->url.password);
        }
    }
    if (r->url.db != 0) {
        (void)redisAsyncCommand(ac, on_setup_reply, "SELECT", "SELECT %d", r->url.db);
    }
}

gw_redis_t *gw_redis_new(struct event_base *base, const char *url)
{
    gw_redis_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return NULL;
    }
    char err[256];
    if (redis_url_parse(url, &r->url, err, sizeof(err)) != 0) {
        log_error("REDIS_URL: %s", err);
        free(r);
        return NULL;
    }
    r->base = base;
    r->backoff_ms = 100;
    r->retry_ev = evtimer_new(base, on_retry, r);
    if (r->retry_ev == NULL) {
        free(r);
        return NULL;
    }
    start_connect(r);
    return r;
}

bool gw_redis_connected(const gw_redis_t *r)
{
    return r != NULL && r->connected && r->ac != NULL;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    pending_t *p = privdata;
    p->cb(reply, reply == NULL ? "connection lost" : NULL, p->arg);
    free(p);
}

/* The callback record of one command; NULL when not connected or out of
 * memory. on_reply frees it. */
static pending_t *pending_new(gw_redis_t *r, gw_redis_cb cb, void *arg)
{
    if (!gw_redis_connected(r)) {
        return NULL;
    }
    pending_t *p = malloc(sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    p->cb = cb;
    p->arg = arg;
    return p;
}

int gw_redis_argv(gw_redis_t *r, gw_redis_cb cb, void *arg, int argc, const char **argv,
                  const size_t *lens)
{
    pending_t *p = pending_new(r, cb, arg);
    if (p == NULL) {
        return -1;
    }
    if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, lens) != REDIS_OK) {
        free(p);
        return -1;
    }
    return 0;
}

int gw_redis_cmd(gw_redis_t *r, gw_redis_cb cb, void *arg, const char *fmt, ...)
{
    pending_t *p = pending_new(r, cb, arg);
    if (p == NULL) {
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(r->ac, on_reply, p, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(p);
        return -1;
    }
    return 0;
}

/* ---- scripts ---- */

/* One allocation per call: the struct, the argument vector, the lengths and
 * the argument bytes. */
typedef struct {
    gw_redis_t *r;
    gw_redis_cb cb;
    void *arg;
    const char *script; /* the caller's, static */
    int argc;
    const char **argv;
    size_t *lens;
} eval_t;

static void eval_free(eval_t *e)
{
    free(e);
}

static const char *script_sha(gw_redis_t *r, const char *script)
{
    for (int i = 0; i < r->nscripts; i++) {
        if (r->scripts[i].script == script) {
            return r->scripts[i].sha;
        }
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(script, strlen(script), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) {
        return NULL;
    }
    char hex[41];
    for (unsigned i = 0; i < 20; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    if (r->nscripts == GW_REDIS_MAX_SCRIPTS) {
        return NULL;
    }
    r->scripts[r->nscripts].script = script;
    memcpy(r->scripts[r->nscripts].sha, hex, sizeof(hex));
    return r->scripts[r->nscripts++].sha;
}

static void on_eval_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    eval_t *e = privdata;
    redisReply *rep = reply;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 &&
        strcmp(e->argv[0], "EVALSHA") == 0 && gw_redis_connected(e->r)) {
        /* The server does not hold it yet (first use, or a restarted Redis):
         * EVAL loads it, the next EVALSHA finds it. */
        e->argv[0] = "EVAL";
        e->argv[1] = e->script;
        e->lens[0] = 4;
        e->lens[1] = strlen(e->script);
        if (redisAsyncCommandArgv(e->r->ac, on_eval_reply, e, e->argc, e->argv, e->lens) ==
            REDIS_OK) {
            return;
        }
        e->cb(NULL, "cannot send EVAL", e->arg);
        eval_free(e);
        return;
    }
    e->cb(rep, rep == NULL ? "connection lost" : NULL, e->arg);
    eval_free(e);
}

int gw_redis_eval(gw_redis_t *r, gw_redis_cb cb, void *arg, const char *script, int nkeys,
                  int nargs, const char **args)
{
    if (!gw_redis_connected(r)) {
        return -1;
    }
    const char *sha = script_sha(r, script);
    char nk[16];
    int nklen = snprintf(nk, sizeof(nk), "%d", nkeys);
    int argc = 3 + nargs;
    size_t bytes = (size_t)nklen + 1;
    for (int i = 0; i < nargs; i++) {
        bytes += strlen(args[i] != NULL ? args[i] : "") + 1;
    }
    eval_t *e = malloc(sizeof(*e) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (e == NULL) {
        return -1;
    }
    e->r = r;
    e->cb = cb;
    e->arg = arg;
    e->script = script;
    e->argc = argc;
    e->argv = (const char **)(e + 1);
    e->lens = (size_t *)(e->argv + argc);
    char *text = (char *)(e->lens + argc);
    e->argv[0] = sha != NULL ? "EVALSHA" : "EVAL";
    e->argv[1] = sha != NULL ? sha : script;
    memcpy(text, nk, (size_t)nklen + 1);
    e->argv[2] = text;
    text += nklen + 1;
    for (int i = 0; i < nargs; i++) {
        const char *a = args[i] != NULL ? args[i] : "";
        size_t n = strlen(a);
        memcpy(text, a, n + 1);
        e->argv[3 + i] = text;
        text += n + 1;
    }
    for (int i = 0; i < argc; i++) {
        e->lens[i] = strlen(e->argv[i]);
    }
    if (redisAsyncCommandArgv(r->ac, on_eval_reply, e, e->argc, e->argv, e->lens) != REDIS_OK) {
        eval_free(e);
        return -1;
    }
    return 0;
}

void gw_redis_free(gw_redis_t *r)
{
    if (r == NULL) {
        return;
    }
    r->closing = true;
    if (r->ac != NULL) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks get NULL */
    }
    event_free(r->retry_ev);
    free(r);
}
