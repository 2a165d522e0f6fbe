/*
 * queue — the reliable job queue on Redis lists. See queue.h and docs/common/queue.md.
 *
 * Multi-key moves (requeue, reap, promote) are Lua scripts: Redis runs a script
 * as one command, so no other client sees a half-moved state. Scripts are sent
 * with EVALSHA and fall back to EVAL when the server answers NOSCRIPT (after a
 * restart or SCRIPT FLUSH).
 */
#include "queue.h"

#include "errbuf.h"
#include "log.h"
#include "now.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORKER_ID_MAX 100
#define KEY_MAX 160

/*
 * Moves every item of a processing list to ca:jobs and forgets the worker.
 *   KEYS[1] ca:worker:<id>   KEYS[2] ca:jobs:processing:<id>
 *   KEYS[3] ca:jobs          KEYS[4] ca:workers
 *   ARGV[1] <id>             ARGV[2] "1": only if the heartbeat is gone
 * Returns -1 when the worker is alive (nothing changed), else the count moved.
 * LMOVE LEFT→RIGHT takes the most recently taken item first and appends at the
 * right (the end workers take from), so the item taken first is taken next.
 */
static const char REQUEUE_SCRIPT[] =
    "if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end\n"
    "local n = 0\n"
    "while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do n = n + 1 end\n"
    "redis.call('DEL', KEYS[2])\n"
    "redis.call('SREM', KEYS[4], ARGV[1])\n"
    "return n\n";

/*
 * Moves up to ARGV[2] ids with score <= ARGV[1] from KEYS[1] (ca:jobs:delayed)
 * to KEYS[2] (ca:jobs), earliest due first (so it is taken first).
 */
static const char PROMOTE_SCRIPT[] =
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "for _, id in ipairs(ids) do\n"
    "  redis.call('LPUSH', KEYS[2], id)\n"
    "  redis.call('ZREM', KEYS[1], id)\n"
    "end\n"
    "return #ids\n";

static bool worker_id_valid(const char *worker_id)
{
    size_t len;

    if (worker_id == NULL) {
        return false;
    }
    len = strlen(worker_id);
    if (len == 0 || len > WORKER_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = worker_id[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';

        if (!ok) {
            return false;
        }
    }
    return true;
}

static int check_worker_id(const char *worker_id, char *err, size_t errlen)
{
    if (!worker_id_valid(worker_id)) {
        errbuf_set(err, errlen, "queue: invalid worker id (1-%d of [A-Za-z0-9._:-])",
                   WORKER_ID_MAX);
        return -1;
    }
    return 0;
}

static int check_job_id(const char *id, char *err, size_t errlen)
{
    size_t len = id == NULL ? 0 : strlen(id);

    if (len == 0 || len >= QUEUE_ID_MAX) {
        errbuf_set(err, errlen, "queue: job id must be 1-%d bytes", QUEUE_ID_MAX - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)id[i] <= ' ' || id[i] == 0x7f) {
            errbuf_set(err, errlen, "queue: job id contains whitespace or control characters");
            return -1;
        }
    }
    return 0;
}

static void key_for(char *key, size_t keylen, const char *prefix, const char *worker_id)
{
    snprintf(key, keylen, "%s%s", prefix, worker_id);
}

static int sha1_hex(const char *text, char out[41])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;

    if (EVP_Digest(text, strlen(text), digest, &digest_len, EVP_sha1(), NULL) != 1 ||
        digest_len != 20) {
        return -1;
    }
    for (unsigned int i = 0; i < digest_len; i++) {
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    }
    out[40] = '\0';
    return 0;
}

/* EVALSHA, then EVAL on NOSCRIPT. Expects an integer reply; fills *result. */
static int run_script(redis_conn_t *r, const char *script, int nkeys, const char **keys, int nargs,
                      const char **args, long long *result, char *err, size_t errlen)
{
    const char *argv[16];
    char sha[41];
    char nkeys_text[8];
    redisReply *reply;
    int argc = 0;

    if (3 + nkeys + nargs > (int)(sizeof(argv) / sizeof(argv[0])) || sha1_hex(script, sha) != 0) {
        errbuf_set(err, errlen, "queue: cannot prepare the script");
        return -1;
    }
    snprintf(nkeys_text, sizeof(nkeys_text), "%d", nkeys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = sha;
    argv[argc++] = nkeys_text;
    for (int i = 0; i < nkeys; i++) {
        argv[argc++] = keys[i];
    }
    for (int i = 0; i < nargs; i++) {
        argv[argc++] = args[i];
    }
    reply = redis_command_argv(r, argc, argv, NULL, err, errlen);
    if (reply == NULL && err != NULL && strncmp(err, "NOSCRIPT", 8) == 0) {
        argv[0] = "EVAL";
        argv[1] = script;
        reply = redis_command_argv(r, argc, argv, NULL, err, errlen);
    }
    if (reply == NULL) {
        return -1;
    }
    if (reply->type != REDIS_REPLY_INTEGER) {
        errbuf_set(err, errlen, "queue: unexpected script reply type %d", reply->type);
        freeReplyObject(reply);
        return -1;
    }
    *result = reply->integer;
    freeReplyObject(reply);
    return 0;
}

/* Runs a command whose reply only needs to be "not an error". */
static int run_argv(redis_conn_t *r, int argc, const char **argv, char *err, size_t errlen)
{
    redisReply *reply = redis_command_argv(r, argc, argv, NULL, err, errlen);

    if (reply == NULL) {
        return -1;
    }
    freeReplyObject(reply);
    return 0;
}

int queue_push(redis_conn_t *r, const char *id, char *err, size_t errlen)
{
    const char *argv[3] = {"LPUSH", QUEUE_JOBS, id};

    if (check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    return run_argv(r, 3, argv, err, errlen);
}

static int taken(redis_conn_t *r, const char *processing, const char *what, redisReply *reply,
                 char *id, size_t idlen, char *err, size_t errlen);

int queue_take(redis_conn_t *r, const char *worker_id, double timeout_s, char *id, size_t idlen,
               char *err, size_t errlen)
{
    char processing[KEY_MAX];
    char timeout[32];
    const char *argv[6];
    int argc = 0;
    redisReply *reply;

    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    if (id == NULL || idlen == 0) {
        errbuf_set(err, errlen, "queue: no buffer for the id");
        return -1;
    }
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    if (timeout_s >= 0.001) {
        snprintf(timeout, sizeof(timeout), "%.3f", timeout_s);
        argv[argc++] = "BLMOVE";
    } else {
        argv[argc++] = "LMOVE"; /* no wait: 0 would mean "forever" to BLMOVE */
    }
    argv[argc++] = QUEUE_JOBS;
    argv[argc++] = processing;
    argv[argc++] = "RIGHT";
    argv[argc++] = "LEFT";
    if (timeout_s >= 0.001) {
        argv[argc++] = timeout;
    }
    reply = redis_command_argv(r, argc, argv, NULL, err, errlen);
    if (reply == NULL) {
        return -1;
    }
    return taken(r, processing, argv[0], reply, id, idlen, err, errlen);
}

/* The id a move into `processing` answered (reply: freed here): 1 and id
 * filled, 0 none (or an invalid id, dropped), -1 error. */
static int taken(redis_conn_t *r, const char *processing, const char *what, redisReply *reply,
                 char *id, size_t idlen, char *err, size_t errlen)
{
    int rc = -1;
    if (reply->type == REDIS_REPLY_NIL) {
        rc = 0;
        goto out;
    }
    if (reply->type != REDIS_REPLY_STRING) {
        errbuf_set(err, errlen, "queue: unexpected reply type %d from %s", reply->type, what);
        goto out;
    }
    if (reply->len >= QUEUE_ID_MAX || memchr(reply->str, '\0', reply->len) != NULL) {
        const char *lrem[4] = {"LREM", processing, "1", NULL};
        size_t lens[4] = {4, strlen(processing), 1, reply->len};
        redisReply *removed;

        lrem[3] = reply->str;
        log_warn("queue: dropped an invalid job id of %zu bytes from %s", reply->len, QUEUE_JOBS);
        removed = redis_command_argv(r, 4, lrem, lens, err, errlen);
        if (removed == NULL) {
            goto out;
        }
        freeReplyObject(removed);
        rc = 0;
        goto out;
    }
    if (reply->len >= idlen) {
        errbuf_set(err, errlen, "queue: id buffer of %zu bytes too small (the id stays in %s)",
                   idlen, processing);
        goto out;
    }
    memcpy(id, reply->str, reply->len);
    id[reply->len] = '\0';
    rc = 1;

out:
    freeReplyObject(reply);
    return rc;
}

int queue_ack(redis_conn_t *r, const char *worker_id, const char *id, char *err, size_t errlen)
{
    char processing[KEY_MAX];
    const char *argv[4] = {"LREM", processing, "1", id};

    if (check_worker_id(worker_id, err, errlen) != 0 || check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    return run_argv(r, 4, argv, err, errlen);
}

/* LREM the finished id, then LMOVE the next one, atomically: one round trip
 * between two jobs instead of two. */
static const char ACK_TAKE_SCRIPT[] =
    "redis.call('LREM', KEYS[2], 1, ARGV[1])\n"
    "return redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')\n";

int queue_ack_take(redis_conn_t *r, const char *worker_id, const char *id, char *next,
                   size_t nextlen, char *err, size_t errlen)
{
    char processing[KEY_MAX];
    char sha[41];
    if (check_worker_id(worker_id, err, errlen) != 0 || check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    if (next == NULL || nextlen == 0) {
        errbuf_set(err, errlen, "queue: no buffer for the id");
        return -1;
    }
    if (sha1_hex(ACK_TAKE_SCRIPT, sha) != 0) {
        errbuf_set(err, errlen, "queue: cannot prepare the script");
        return -1;
    }
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    const char *argv[6] = {"EVALSHA", sha, "2", QUEUE_JOBS, processing, id};
    redisReply *reply = redis_command_argv(r, 6, argv, NULL, err, errlen);
    if (reply == NULL && err != NULL && strncmp(err, "NOSCRIPT", 8) == 0) {
        argv[0] = "EVAL";
        argv[1] = ACK_TAKE_SCRIPT;
        reply = redis_command_argv(r, 6, argv, NULL, err, errlen);
    }
    if (reply == NULL) {
        return -1;
    }
    return taken(r, processing, "the ack-and-take script", reply, next, nextlen, err, errlen);
}

int queue_heartbeat(redis_conn_t *r, const char *worker_id, int ttl_s, char *err, size_t errlen)
{
    char heartbeat[KEY_MAX];
    char now[32];
    char ttl[16];
    const char *set_argv[5] = {"SET", heartbeat, now, "EX", ttl};
    const char *sadd_argv[3] = {"SADD", QUEUE_WORKERS, worker_id};

    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    if (ttl_s < 1) {
        errbuf_set(err, errlen, "queue: heartbeat TTL must be at least 1 s");
        return -1;
    }
    snprintf(now, sizeof(now), "%lld", (long long)now_wall_ms());
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    key_for(heartbeat, sizeof(heartbeat), QUEUE_HEARTBEAT_PREFIX, worker_id);
    if (run_argv(r, 5, set_argv, err, errlen) != 0) {
        return -1;
    }
    return run_argv(r, 3, sadd_argv, err, errlen);
}

int queue_heartbeat_clear(redis_conn_t *r, const char *worker_id, char *err, size_t errlen)
{
    char heartbeat[KEY_MAX];
    const char *argv[2] = {"DEL", heartbeat};

    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    key_for(heartbeat, sizeof(heartbeat), QUEUE_HEARTBEAT_PREFIX, worker_id);
    return run_argv(r, 2, argv, err, errlen);
}

/* Runs REQUEUE_SCRIPT for one worker. *moved: -1 when alive (only_if_dead). */
static int requeue_one(redis_conn_t *r, const char *worker_id, bool only_if_dead, long long *moved,
                       char *err, size_t errlen)
{
    char heartbeat[KEY_MAX];
    char processing[KEY_MAX];
    const char *keys[4] = {heartbeat, processing, QUEUE_JOBS, QUEUE_WORKERS};
    const char *args[2] = {worker_id, only_if_dead ? "1" : "0"};

    key_for(heartbeat, sizeof(heartbeat), QUEUE_HEARTBEAT_PREFIX, worker_id);
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    return run_script(r, REQUEUE_SCRIPT, 4, keys, 2, args, moved, err, errlen);
}

int queue_requeue_worker(redis_conn_t *r, const char *worker_id, int *moved, char *err,
                         size_t errlen)
{
    long long count = 0;

    if (moved != NULL) {
        *moved = 0;
    }
    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    if (requeue_one(r, worker_id, false, &count, err, errlen) != 0) {
        return -1;
    }
    if (moved != NULL) {
        *moved = (int)count;
    }
    return 0;
}

/* Reaps one candidate; adds what moved to *total. */
static int reap_one(redis_conn_t *r, const char *worker_id, long long *total, char *err,
                    size_t errlen)
{
    long long moved = 0;

    if (!worker_id_valid(worker_id)) {
        log_warn("queue: reaper skips an invalid worker id of %zu bytes", strlen(worker_id));
        return 0;
    }
    if (requeue_one(r, worker_id, true, &moved, err, errlen) != 0) {
        return -1;
    }
    if (moved > 0) {
        log_info("queue: returned %lld job(s) of dead worker %s to %s", moved, worker_id,
                 QUEUE_JOBS);
        *total += moved;
    }
    return 0;
}

static bool reply_array_has(const redisReply *array, const char *value, size_t len)
{
    for (size_t i = 0; i < array->elements; i++) {
        const redisReply *e = array->element[i];

        if (e->type == REDIS_REPLY_STRING && e->len == len && memcmp(e->str, value, len) == 0) {
            return true;
        }
    }
    return false;
}

int queue_reap(redis_conn_t *r, int *returned, char *err, size_t errlen)
{
    const char *smembers[2] = {"SMEMBERS", QUEUE_WORKERS};
    redisReply *members;
    char cursor[32] = "0";
    long long total = 0;
    const size_t prefix_len = strlen(QUEUE_PROCESSING_PREFIX);
    int rc = -1;

    if (returned != NULL) {
        *returned = 0;
    }
    members = redis_command_argv(r, 2, smembers, NULL, err, errlen);
    if (members == NULL) {
        return -1;
    }
    if (members->type != REDIS_REPLY_ARRAY) {
        errbuf_set(err, errlen, "queue: unexpected SMEMBERS reply type %d", members->type);
        goto out;
    }
    for (size_t i = 0; i < members->elements; i++) {
        const redisReply *e = members->element[i];

        if (e->type == REDIS_REPLY_STRING && reap_one(r, e->str, &total, err, errlen) != 0) {
            goto out;
        }
    }

    /* Lists of workers that never made it into ca:workers (or left it). */
    do {
        const char *scan[8] = {"SCAN",  cursor, "MATCH", QUEUE_PROCESSING_PREFIX "*",
                               "COUNT", "1000", "TYPE",  "list"};
        redisReply *page = redis_command_argv(r, 8, scan, NULL, err, errlen);

        if (page == NULL) {
            goto out;
        }
        if (page->type != REDIS_REPLY_ARRAY || page->elements != 2 ||
            page->element[0]->type != REDIS_REPLY_STRING ||
            page->element[0]->len >= sizeof(cursor) ||
            page->element[1]->type != REDIS_REPLY_ARRAY) {
            errbuf_set(err, errlen, "queue: unexpected SCAN reply");
            freeReplyObject(page);
            goto out;
        }
        memcpy(cursor, page->element[0]->str, page->element[0]->len);
        cursor[page->element[0]->len] = '\0';
        for (size_t i = 0; i < page->element[1]->elements; i++) {
            const redisReply *key = page->element[1]->element[i];
            const char *worker_id;

            if (key->type != REDIS_REPLY_STRING || key->len <= prefix_len) {
                continue;
            }
            worker_id = key->str + prefix_len;
            if (reply_array_has(members, worker_id, key->len - prefix_len)) {
                continue; /* already handled above */
            }
            if (reap_one(r, worker_id, &total, err, errlen) != 0) {
                freeReplyObject(page);
                goto out;
            }
        }
        freeReplyObject(page);
    } while (strcmp(cursor, "0") != 0);
    rc = 0;

out:
    freeReplyObject(members);
    if (returned != NULL) {
        *returned = (int)total;
    }
    return rc;
}

int queue_delay(redis_conn_t *r, const char *id, int64_t due_ms, char *err, size_t errlen)
{
    char score[32];
    const char *argv[4] = {"ZADD", QUEUE_DELAYED, score, id};

    if (check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    snprintf(score, sizeof(score), "%lld", (long long)due_ms);
    return run_argv(r, 4, argv, err, errlen);
}

int queue_promote_due(redis_conn_t *r, int64_t now_ms, int limit, int *moved, char *err,
                      size_t errlen)
{
    char now[32];
    char count[16];
    const char *keys[2] = {QUEUE_DELAYED, QUEUE_JOBS};
    const char *args[2] = {now, count};
    long long result = 0;

    if (moved != NULL) {
        *moved = 0;
    }
    if (limit < 1) {
        errbuf_set(err, errlen, "queue: promote limit must be at least 1");
        return -1;
    }
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    snprintf(count, sizeof(count), "%d", limit);
    if (run_script(r, PROMOTE_SCRIPT, 2, keys, 2, args, &result, err, errlen) != 0) {
        return -1;
    }
    if (moved != NULL) {
        *moved = (int)result;
    }
    return 0;
}

static long integer_of(redis_conn_t *r, const char *command, const char *key)
{
    const char *argv[2] = {command, key};
    char err[256];
    redisReply *reply = redis_command_argv(r, 2, argv, NULL, err, sizeof(err));
    long value = -1;

    if (reply == NULL) {
        log_warn("queue: %s %s: %s", command, key, err);
        return -1;
    }
    if (reply->type == REDIS_REPLY_INTEGER) {
        value = (long)reply->integer;
    }
    freeReplyObject(reply);
    return value;
}

long queue_depth(redis_conn_t *r)
{
    return integer_of(r, "LLEN", QUEUE_JOBS);
}

long queue_delayed_count(redis_conn_t *r)
{
    return integer_of(r, "ZCARD", QUEUE_DELAYED);
}
