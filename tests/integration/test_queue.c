/*
 * common/queue against a real Redis (TEST_REDIS_URL from tests/run): FIFO,
 * take timeout, ack, heartbeat, the reaper (dead vs live workers, orphan lists),
 * hand-back, delayed retries and concurrent promoters.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "queue.h"

static const char *redis_url;

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static redis_conn_t *open_conn(void)
{
    char err[256] = "";
    redis_conn_t *r = redis_connect(redis_url, 5000, err, sizeof(err));

    if (r == NULL) {
        fail_msg("connect: %s", err);
    }
    return r;
}

/* Per test: a connection in *state and an empty Redis. */
static int setup(void **state)
{
    redis_conn_t *r = open_conn();
    char err[256];
    redisReply *reply = redis_command(r, err, sizeof(err), "FLUSHALL");

    if (reply == NULL) {
        fail_msg("FLUSHALL: %s", err);
    }
    freeReplyObject(reply);
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    const queue_fair_t defaults = {{6, 3, 1}, 4};

    queue_fair_set(&defaults);
    redis_close(*state);
    return 0;
}

static void push(redis_conn_t *r, const char *id)
{
    char err[256] = "";

    if (queue_push(r, id, err, sizeof(err)) != 0) {
        fail_msg("push %s: %s", id, err);
    }
}

/* Takes one id, which must be `expect`. */
static void take_expect(redis_conn_t *r, const char *worker, const char *expect)
{
    char id[QUEUE_ID_MAX];
    char err[256] = "";
    int rc = queue_take(r, worker, 1.0, id, sizeof(id), err, sizeof(err));

    if (rc != 1) {
        fail_msg("take as %s: rc %d (%s), expected %s", worker, rc, err, expect);
    }
    assert_string_equal(id, expect);
}

static long list_len(redis_conn_t *r, const char *key)
{
    char err[256] = "";
    redisReply *reply = redis_command(r, err, sizeof(err), "LLEN %s", key);
    long n;

    if (reply == NULL) {
        fail_msg("LLEN: %s", err);
    }
    n = (long)reply->integer;
    freeReplyObject(reply);
    return n;
}

static long long integer(redis_conn_t *r, const char *fmt, const char *arg)
{
    char err[256] = "";
    redisReply *reply = redis_command(r, err, sizeof(err), fmt, arg);
    long long n;

    if (reply == NULL) {
        fail_msg("%s: %s", fmt, err);
    }
    assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
    n = reply->integer;
    freeReplyObject(reply);
    return n;
}

/* The list's items left to right, joined by ','. */
static void list_items(redis_conn_t *r, const char *key, char *out, size_t outlen)
{
    char err[256] = "";
    redisReply *reply = redis_command(r, err, sizeof(err), "LRANGE %s 0 -1", key);
    size_t used = 0;

    if (reply == NULL) {
        fail_msg("LRANGE: %s", err);
    }
    out[0] = '\0';
    for (size_t i = 0; i < reply->elements; i++) {
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", i > 0 ? "," : "",
                                 reply->element[i]->str);
        assert_true(used < outlen);
    }
    freeReplyObject(reply);
}

static void test_push_take_fifo(void **state)
{
    redis_conn_t *r = *state;
    char items[256];

    push(r, "job-1");
    push(r, "job-2");
    push(r, "job-3");
    assert_int_equal(queue_depth(r), 3);
    take_expect(r, "w1", "job-1");
    take_expect(r, "w1", "job-2");
    assert_int_equal(queue_depth(r), 1);
    /* What was taken sits in the worker's processing list, newest at the left. */
    list_items(r, QUEUE_PROCESSING_PREFIX "w1", items, sizeof(items));
    assert_string_equal(items, "job-2,job-1");
    take_expect(r, "w1", "job-3");
    assert_int_equal(queue_depth(r), 0);
}

static void test_take_timeout(void **state)
{
    redis_conn_t *r = *state;
    char id[QUEUE_ID_MAX] = "untouched";
    char err[256] = "";
    int rc = queue_take(r, "w1", 0.5, id, sizeof(id), err, sizeof(err));

    assert_int_equal(rc, 0);
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "w1"), 0);

    /* A zero timeout does not block (BLMOVE's 0 would block for ever). */
    rc = queue_take(r, "w1", 0, id, sizeof(id), err, sizeof(err));
    assert_int_equal(rc, 0);
    push(r, "now");
    assert_int_equal(queue_take(r, "w1", 0, id, sizeof(id), err, sizeof(err)), 1);
    assert_string_equal(id, "now");
}

/* Waits (10 s at most) until a client is blocked in Redis, then pushes
 * "late"; *arg is set true when the blocked client was seen. */
static void *push_when_blocked(void *arg)
{
    bool *seen_blocked = arg;
    char err[256] = "";
    redis_conn_t *r = redis_connect(redis_url, 5000, err, sizeof(err));
    int64_t deadline = mono_ms() + 10000;

    while (r != NULL && !*seen_blocked && mono_ms() < deadline) {
        redisReply *reply = redis_command(r, err, sizeof(err), "INFO %s", "clients");
        *seen_blocked =
            reply != NULL && reply->str != NULL && strstr(reply->str, "blocked_clients:1") != NULL;
        if (reply != NULL) {
            freeReplyObject(reply);
        }
        if (!*seen_blocked) {
            sleep_ms(20);
        }
    }
    if (r != NULL) {
        if (queue_push(r, "late", err, sizeof(err)) != 0) {
            fprintf(stderr, "push late: %s\n", err);
        }
        redis_close(r);
    }
    return NULL;
}

/* A take blocks in Redis and returns as soon as an id is pushed (its timeout
 * is far away). */
static void test_take_wakes_on_push(void **state)
{
    redis_conn_t *r = *state;
    char id[QUEUE_ID_MAX];
    char err[256] = "";
    bool seen_blocked = false;
    pthread_t pusher;

    assert_int_equal(pthread_create(&pusher, NULL, push_when_blocked, &seen_blocked), 0);
    int rc = queue_take(r, "w1", 60.0, id, sizeof(id), err, sizeof(err));
    pthread_join(pusher, NULL);
    assert_int_equal(rc, 1);
    assert_string_equal(id, "late");
    assert_true(seen_blocked);
}

static void test_ack_removes_exactly_one(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char items[256];

    push(r, "a");
    push(r, "dup");
    push(r, "dup");
    push(r, "b");
    take_expect(r, "w1", "a");
    take_expect(r, "w1", "dup");
    take_expect(r, "w1", "dup");
    take_expect(r, "w1", "b");
    assert_int_equal(queue_ack(r, "w1", "dup", err, sizeof(err)), 0);
    list_items(r, QUEUE_PROCESSING_PREFIX "w1", items, sizeof(items));
    assert_string_equal(items, "b,dup,a");
    assert_int_equal(queue_ack(r, "w1", "a", err, sizeof(err)), 0);
    assert_int_equal(queue_ack(r, "w1", "not-there", err, sizeof(err)), 0);
    list_items(r, QUEUE_PROCESSING_PREFIX "w1", items, sizeof(items));
    assert_string_equal(items, "b,dup");
    /* Another worker's ack does not touch w1's list. */
    assert_int_equal(queue_ack(r, "w2", "b", err, sizeof(err)), 0);
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "w1"), 2);
}

/* queue_ack_take: the ack, then the next id moved into the same processing
 * list (FIFO, like queue_take); 0 with the ack done when ca:jobs is empty;
 * the script is loaded again after SCRIPT FLUSH. */
static void test_ack_take(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char next[QUEUE_ID_MAX];
    char items[256];

    push(r, "a");
    push(r, "b");
    take_expect(r, "w1", "a");
    assert_int_equal(queue_ack_take(r, "w1", "a", next, sizeof(next), err, sizeof(err)), 1);
    assert_string_equal(next, "b");
    list_items(r, QUEUE_PROCESSING_PREFIX "w1", items, sizeof(items));
    assert_string_equal(items, "b");
    assert_int_equal(list_len(r, QUEUE_JOBS), 0);
    redisReply *rep = redis_command(r, err, sizeof(err), "SCRIPT FLUSH");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_int_equal(queue_ack_take(r, "w1", "b", next, sizeof(next), err, sizeof(err)), 0);
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "w1"), 0);
    assert_int_equal(queue_ack_take(r, "w1", "bad id", next, sizeof(next), err, sizeof(err)), -1);
}

static void test_worker_and_job_id_validation(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char id[QUEUE_ID_MAX];
    char long_worker[102];
    char long_job[QUEUE_ID_MAX + 1];
    int moved = 0;
    static const char *bad_workers[] = {"",        "with space", "star*",
                                        "slash/x", "new\nline",  "braces{x}"};

    memset(long_worker, 'w', sizeof(long_worker) - 1);
    long_worker[sizeof(long_worker) - 1] = '\0'; /* 101 chars */
    for (size_t i = 0; i < sizeof(bad_workers) / sizeof(bad_workers[0]); i++) {
        assert_int_equal(queue_take(r, bad_workers[i], 0, id, sizeof(id), err, sizeof(err)), -1);
        assert_non_null(strstr(err, "worker id"));
        assert_int_equal(queue_heartbeat(r, bad_workers[i], 5, err, sizeof(err)), -1);
        assert_int_equal(queue_ack(r, bad_workers[i], "x", err, sizeof(err)), -1);
        assert_int_equal(queue_requeue_worker(r, bad_workers[i], &moved, err, sizeof(err)), -1);
        assert_int_equal(queue_heartbeat_clear(r, bad_workers[i], err, sizeof(err)), -1);
    }
    assert_int_equal(queue_take(r, NULL, 0, id, sizeof(id), err, sizeof(err)), -1);
    assert_int_equal(queue_heartbeat(r, long_worker, 5, err, sizeof(err)), -1);
    long_worker[100] = '\0'; /* exactly 100 is fine */
    assert_int_equal(queue_heartbeat(r, long_worker, 5, err, sizeof(err)), 0);
    assert_int_equal(queue_heartbeat(r, "host-1.pod:1234_t-0", 5, err, sizeof(err)), 0);
    assert_int_equal(queue_heartbeat(r, "w1", 0, err, sizeof(err)), -1);

    memset(long_job, 'j', sizeof(long_job) - 1);
    long_job[sizeof(long_job) - 1] = '\0';
    assert_int_equal(queue_push(r, long_job, err, sizeof(err)), -1);
    assert_int_equal(queue_push(r, "", err, sizeof(err)), -1);
    assert_int_equal(queue_push(r, "a b", err, sizeof(err)), -1);
    assert_int_equal(queue_delay(r, long_job, 1, err, sizeof(err)), -1);
    assert_int_equal(queue_depth(r), 0);
    assert_int_equal(queue_delayed_count(r), 0);
}

static void test_take_drops_overlong_ids(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char id[QUEUE_ID_MAX];
    char small[4];
    char huge[QUEUE_ID_MAX + 10];
    redisReply *reply;

    memset(huge, 'h', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    reply = redis_command(r, err, sizeof(err), "LPUSH %s %s", QUEUE_JOBS, huge);
    assert_non_null(reply);
    freeReplyObject(reply);
    push(r, "fine");
    /* The over-long id is dropped (not left in the processing list), the next taken. */
    assert_int_equal(queue_take(r, "w1", 0.2, id, sizeof(id), err, sizeof(err)), 1);
    assert_string_equal(id, "fine");
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "w1"), 1);
    assert_int_equal(queue_ack(r, "w1", "fine", err, sizeof(err)), 0);
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "w1"), 0);
    push(r, "fine");
    /* A caller buffer too small is an error; the id stays held for the reaper. */
    assert_int_equal(queue_take(r, "w1", 0.2, small, sizeof(small), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too small"));
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "w1"), 1);
}

static void test_heartbeat_ttl(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    long long ttl;
    long long value;
    char *stop;
    redisReply *reply;

    assert_int_equal(queue_heartbeat(r, "w1", 30, err, sizeof(err)), 0);
    ttl = integer(r, "TTL %s", QUEUE_HEARTBEAT_PREFIX "w1");
    assert_true(ttl > 25 && ttl <= 30);
    assert_int_equal(integer(r, "SISMEMBER " QUEUE_WORKERS " %s", "w1"), 1);
    reply = redis_command(r, err, sizeof(err), "GET %s", QUEUE_HEARTBEAT_PREFIX "w1");
    assert_non_null(reply);
    value = strtoll(reply->str, &stop, 10);
    assert_int_equal(*stop, '\0');
    assert_true(llabs(value - wall_ms()) < 5000);
    freeReplyObject(reply);

    /* A new heartbeat refreshes the TTL. */
    assert_int_equal(queue_heartbeat(r, "w1", 100, err, sizeof(err)), 0);
    assert_true(integer(r, "TTL %s", QUEUE_HEARTBEAT_PREFIX "w1") > 95);

    assert_int_equal(queue_heartbeat_clear(r, "w1", err, sizeof(err)), 0);
    assert_int_equal(integer(r, "EXISTS %s", QUEUE_HEARTBEAT_PREFIX "w1"), 0);
}

static void test_reap_dead_worker_only(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char items[256];
    int returned = -1;

    push(r, "j1");
    push(r, "j2");
    push(r, "j3");
    push(r, "j4");
    push(r, "j5");
    /* A takes three with a 1 s heartbeat, B (alive) takes one. */
    assert_int_equal(queue_heartbeat(r, "worker-A", 1, err, sizeof(err)), 0);
    assert_int_equal(queue_heartbeat(r, "worker-B", 60, err, sizeof(err)), 0);
    take_expect(r, "worker-A", "j1");
    take_expect(r, "worker-A", "j2");
    take_expect(r, "worker-A", "j3");
    take_expect(r, "worker-B", "j4");

    /* While A's heartbeat lives, nothing moves. */
    assert_int_equal(queue_reap(r, &returned, err, sizeof(err)), 0);
    assert_int_equal(returned, 0);
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "worker-A"), 3);

    /* A's heartbeat expires (Redis's TTL, 1 s). */
    int64_t deadline = mono_ms() + 10000;
    while (integer(r, "EXISTS %s", QUEUE_HEARTBEAT_PREFIX "worker-A") != 0 &&
           mono_ms() < deadline) {
        sleep_ms(50);
    }
    assert_int_equal(integer(r, "EXISTS %s", QUEUE_HEARTBEAT_PREFIX "worker-A"), 0);
    assert_int_equal(queue_reap(r, &returned, err, sizeof(err)), 0);
    assert_int_equal(returned, 3);

    /* A's items are back at the right end (taken next), in their original order. */
    list_items(r, QUEUE_JOBS, items, sizeof(items));
    assert_string_equal(items, "j5,j3,j2,j1");
    assert_int_equal(integer(r, "EXISTS %s", QUEUE_PROCESSING_PREFIX "worker-A"), 0);
    assert_int_equal(integer(r, "SISMEMBER " QUEUE_WORKERS " %s", "worker-A"), 0);
    /* B is untouched. */
    list_items(r, QUEUE_PROCESSING_PREFIX "worker-B", items, sizeof(items));
    assert_string_equal(items, "j4");
    assert_int_equal(integer(r, "SISMEMBER " QUEUE_WORKERS " %s", "worker-B"), 1);

    take_expect(r, "worker-B", "j1");
    take_expect(r, "worker-B", "j2");
    take_expect(r, "worker-B", "j3");
    take_expect(r, "worker-B", "j5");

    /* Reaping again changes nothing. */
    assert_int_equal(queue_reap(r, &returned, err, sizeof(err)), 0);
    assert_int_equal(returned, 0);
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "worker-B"), 5);
}

static void test_reap_orphan_list(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    int returned = -1;
    redisReply *reply;

    /* A worker that took work without ever sending a heartbeat (not in
     * ca:workers): found by SCAN. A non-list key under the prefix is ignored. */
    push(r, "o1");
    push(r, "o2");
    take_expect(r, "ghost", "o1");
    take_expect(r, "ghost", "o2");
    reply = redis_command(r, err, sizeof(err), "SET %s x", QUEUE_PROCESSING_PREFIX "not-a-list");
    assert_non_null(reply);
    freeReplyObject(reply);
    assert_int_equal(queue_reap(r, &returned, err, sizeof(err)), 0);
    assert_int_equal(returned, 2);
    assert_int_equal(queue_depth(r), 2);
    take_expect(r, "w1", "o1");
    take_expect(r, "w1", "o2");
    assert_int_equal(integer(r, "EXISTS %s", QUEUE_PROCESSING_PREFIX "ghost"), 0);
}

static void test_requeue_worker(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char items[256];
    int moved = -1;

    push(r, "r1");
    push(r, "r2");
    push(r, "r3");
    assert_int_equal(queue_heartbeat(r, "w1", 60, err, sizeof(err)), 0);
    take_expect(r, "w1", "r1");
    take_expect(r, "w1", "r2");
    /* Handing back ignores the (live) heartbeat. */
    assert_int_equal(queue_requeue_worker(r, "w1", &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 2);
    list_items(r, QUEUE_JOBS, items, sizeof(items));
    assert_string_equal(items, "r3,r2,r1");
    assert_int_equal(integer(r, "EXISTS %s", QUEUE_PROCESSING_PREFIX "w1"), 0);
    assert_int_equal(integer(r, "SISMEMBER " QUEUE_WORKERS " %s", "w1"), 0);
    assert_int_equal(queue_requeue_worker(r, "w1", &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 0);
    take_expect(r, "w2", "r1");
    take_expect(r, "w2", "r2");
    take_expect(r, "w2", "r3");
}

static void test_delayed_promotion(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char items[256];
    int moved = -1;
    int64_t now = wall_ms();

    assert_int_equal(queue_delay(r, "d-late", now + 60000, err, sizeof(err)), 0);
    assert_int_equal(queue_delay(r, "d-second", now + 1000, err, sizeof(err)), 0);
    assert_int_equal(queue_delay(r, "d-first", now + 500, err, sizeof(err)), 0);
    assert_int_equal(queue_delayed_count(r), 3);

    /* Nothing is due yet. */
    assert_int_equal(queue_promote_due(r, now, 100, &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 0);
    assert_int_equal(queue_depth(r), 0);

    /* Due ones move, earliest first, and leave the set; the limit holds. */
    assert_int_equal(queue_promote_due(r, now + 2000, 1, &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 1);
    assert_int_equal(queue_promote_due(r, now + 2000, 100, &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 1);
    assert_int_equal(queue_delayed_count(r), 1);
    list_items(r, QUEUE_JOBS, items, sizeof(items));
    assert_string_equal(items, "d-second,d-first");
    take_expect(r, "w1", "d-first");

    /* Delaying again replaces the due time (a sorted set holds an id once). */
    assert_int_equal(queue_delay(r, "d-late", now - 1, err, sizeof(err)), 0);
    assert_int_equal(queue_delayed_count(r), 1);
    assert_int_equal(queue_promote_due(r, now, 100, &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 1);
    assert_int_equal(queue_delayed_count(r), 0);
    assert_int_equal(queue_promote_due(r, now, 0, &moved, err, sizeof(err)), -1);
}

#define PROMOTERS 4
#define DELAYED_IDS 600

typedef struct {
    int64_t now;
    int moved;
    int calls;
    char err[256];
    int rc;
} promoter_t;

static void *promoter(void *arg)
{
    promoter_t *p = arg;
    char err[256] = "";
    redis_conn_t *r = redis_connect(redis_url, 5000, err, sizeof(err));

    p->rc = -1;
    if (r == NULL) {
        snprintf(p->err, sizeof(p->err), "%s", err);
        return NULL;
    }
    for (;;) {
        int moved = 0;

        if (queue_promote_due(r, p->now, 7, &moved, p->err, sizeof(p->err)) != 0) {
            redis_close(r);
            return NULL;
        }
        p->calls++;
        if (moved == 0) {
            break;
        }
        p->moved += moved;
    }
    p->rc = 0;
    redis_close(r);
    return NULL;
}

static void test_concurrent_promoters_never_duplicate(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    pthread_t threads[PROMOTERS];
    promoter_t promoters[PROMOTERS];
    int64_t now = wall_ms();
    int total = 0;
    redisReply *reply;
    static unsigned char seen[DELAYED_IDS];

    for (int i = 0; i < DELAYED_IDS; i++) {
        char id[32];

        snprintf(id, sizeof(id), "c-%d", i);
        assert_int_equal(queue_delay(r, id, now - 1000 + i, err, sizeof(err)), 0);
    }
    /* A Lua script with no cached SHA yet: the first calls race on NOSCRIPT too. */
    reply = redis_command(r, err, sizeof(err), "SCRIPT FLUSH");
    assert_non_null(reply);
    freeReplyObject(reply);

    memset(promoters, 0, sizeof(promoters));
    for (int i = 0; i < PROMOTERS; i++) {
        promoters[i].now = now;
        assert_int_equal(pthread_create(&threads[i], NULL, promoter, &promoters[i]), 0);
    }
    for (int i = 0; i < PROMOTERS; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        if (promoters[i].rc != 0) {
            fail_msg("promoter %d: %s", i, promoters[i].err);
        }
        total += promoters[i].moved;
    }
    assert_int_equal(total, DELAYED_IDS);
    assert_int_equal(queue_delayed_count(r), 0);
    assert_int_equal(queue_depth(r), DELAYED_IDS);

    memset(seen, 0, sizeof(seen));
    reply = redis_command(r, err, sizeof(err), "LRANGE %s 0 -1", QUEUE_JOBS);
    assert_non_null(reply);
    assert_int_equal(reply->elements, DELAYED_IDS);
    for (size_t i = 0; i < reply->elements; i++) {
        int n = atoi(reply->element[i]->str + 2);

        assert_in_range(n, 0, DELAYED_IDS - 1);
        assert_int_equal(seen[n], 0);
        seen[n] = 1;
    }
    freeReplyObject(reply);
}

static void test_depth_counts(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char id[QUEUE_ID_MAX];

    assert_int_equal(queue_depth(r), 0);
    assert_int_equal(queue_delayed_count(r), 0);
    for (int i = 0; i < 25; i++) {
        char name[16];

        snprintf(name, sizeof(name), "n%d", i);
        push(r, name);
    }
    assert_int_equal(queue_delay(r, "later-1", wall_ms() + 60000, err, sizeof(err)), 0);
    assert_int_equal(queue_delay(r, "later-2", wall_ms() + 60000, err, sizeof(err)), 0);
    assert_int_equal(queue_depth(r), 25);
    assert_int_equal(queue_delayed_count(r), 2);
    assert_int_equal(queue_take(r, "w1", 0.1, id, sizeof(id), err, sizeof(err)), 1);
    assert_int_equal(queue_depth(r), 24);
}

static void test_queue_survives_redis_restart(void **state)
{
    redis_conn_t *r = *state;
    char cmd[1024];
    const char *root = getenv("CA_ROOT");
    char id[QUEUE_ID_MAX];
    char err[256] = "";

    snprintf(cmd, sizeof(cmd), "\"%s/tests/lib/services.sh\" restart-redis",
             root != NULL ? root : ".");
    assert_int_equal(system(cmd), 0);
    /* Scripts are gone from the new server: EVALSHA → NOSCRIPT → EVAL. */
    assert_int_equal(queue_delay(r, "after-restart", 1, err, sizeof(err)), 0);
    int moved = 0;
    assert_int_equal(queue_promote_due(r, 2, 10, &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 1);
    assert_int_equal(queue_take(r, "w1", 0.5, id, sizeof(id), err, sizeof(err)), 1);
    assert_string_equal(id, "after-restart");
}

/* ---- fair scheduling (issue 15) ---- */

static void push_user(redis_conn_t *r, const char *id, const char *user, const char *tier)
{
    char err[256] = "";

    if (queue_push_user(r, id, user, tier, err, sizeof(err)) != 0) {
        fail_msg("push %s for %s: %s", id, user, err);
    }
}

/* Pushes prefix0..prefix(n-1) for user. */
static void push_many(redis_conn_t *r, const char *prefix, int n, const char *user,
                      const char *tier)
{
    for (int i = 0; i < n; i++) {
        char id[32];

        snprintf(id, sizeof(id), "%s%d", prefix, i);
        push_user(r, id, user, tier);
    }
}

/* Takes and acks one id; returns its first character (the tests' user tag). */
static char take_ack(redis_conn_t *r, const char *worker)
{
    char id[QUEUE_ID_MAX];
    char err[256] = "";

    if (queue_take(r, worker, 0.5, id, sizeof(id), err, sizeof(err)) != 1) {
        fail_msg("take: %s", err);
    }
    assert_int_equal(queue_ack(r, worker, id, err, sizeof(err)), 0);
    return id[0];
}

static long long inflight_of(redis_conn_t *r, const char *user)
{
    char err[256] = "";
    redisReply *reply = redis_command(r, err, sizeof(err), "HGET ca:jobs:inflight %s", user);
    long long n = 0;

    if (reply == NULL) {
        fail_msg("HGET: %s", err);
    }
    if (reply->type == REDIS_REPLY_STRING) {
        n = atoll(reply->str);
    }
    freeReplyObject(reply);
    return n;
}

/* With every tier busy, each window of 6+3+1 takes gives 6 studio, 3 creator,
 * 1 free; a user without a tier counts as free (round robin with user-f). */
static void test_fair_tier_weights(void **state)
{
    redis_conn_t *r = *state;
    const queue_fair_t cfg = {{6, 3, 1}, 100};

    queue_fair_set(&cfg);
    push_many(r, "s", 40, "user-s", "studio");
    push_many(r, "c", 40, "user-c", "creator");
    push_many(r, "f", 40, "user-f", "free");
    push_many(r, "x", 40, "user-x", NULL); /* no tier: free */
    /* the three tiers are back from idle: each is served once, in tier order */
    assert_int_equal(take_ack(r, "w1"), 's');
    assert_int_equal(take_ack(r, "w1"), 'c');
    assert_int_equal(take_ack(r, "w1"), 'f');
    for (int window = 0; window < 3; window++) {
        int count[128] = {0};

        for (int i = 0; i < 10; i++) {
            count[(unsigned char)take_ack(r, "w1")]++;
        }
        assert_int_equal(count['s'], 6);
        assert_int_equal(count['c'], 3);
        assert_int_equal(count['f'] + count['x'], 1);
    }
    assert_int_equal(queue_depth(r), 160 - 33);
}

/* Round robin between the users of a tier; FIFO within one user. */
static void test_fair_round_robin_fifo(void **state)
{
    redis_conn_t *r = *state;
    const char *expect[] = {"a0", "b0", "c0", "a1", "b1", "a2", "b2", "b3"};

    push_many(r, "a", 3, "user-a", "creator");
    push_many(r, "b", 4, "user-b", "creator");
    push_many(r, "c", 1, "user-c", "creator");
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        char err[256] = "";

        take_expect(r, "w1", expect[i]);
        assert_int_equal(queue_ack(r, "w1", expect[i], err, sizeof(err)), 0);
    }
    assert_int_equal(queue_depth(r), 0);
    assert_int_equal(list_len(r, "ca:jobs:ready:creator"), 0);
}

/* A free user's single id, pushed behind a large studio and creator backlog,
 * is taken at the next take (a tier back from idle goes first once). */
static void test_fair_late_free_overtakes(void **state)
{
    redis_conn_t *r = *state;
    int takes = 0;

    push_many(r, "s", 200, "user-s", "studio");
    push_many(r, "c", 50, "user-c", "creator");
    for (int i = 0; i < 37; i++) {
        (void)take_ack(r, "w1");
    }
    for (int round = 0; round < 5; round++) {
        char id[32];

        snprintf(id, sizeof(id), "free-late-%d", round);
        push_user(r, id, "user-f", "free");
        assert_int_equal(take_ack(r, "w1"), 'f');
        for (int i = 0; i < 3 + round; i++) { /* studio and creator go on */
            takes += take_ack(r, "w1") == 's' ? 1 : 0;
        }
    }
    assert_true(takes > 0);
}

/* The per-user cap: a user at the cap is skipped (others go on), taken again
 * once an ack frees a slot; the count follows take, ack, delay and reap. */
static void test_fair_inflight_cap(void **state)
{
    redis_conn_t *r = *state;
    const queue_fair_t cfg = {{6, 3, 1}, 2};
    char err[256] = "";
    char id[QUEUE_ID_MAX];
    int returned = 0;

    queue_fair_set(&cfg);
    push_many(r, "a", 5, "user-a", "studio");
    push_many(r, "b", 1, "user-b", "studio");
    take_expect(r, "w1", "a0");
    take_expect(r, "w2", "b0");
    take_expect(r, "w3", "a1");
    assert_int_equal(inflight_of(r, "user-a"), 2);
    /* user-a is at its cap with 3 waiting: nothing to take */
    assert_int_equal(queue_take(r, "w4", 0.05, id, sizeof(id), err, sizeof(err)), 0);
    assert_int_equal(queue_depth(r), 3);
    assert_int_equal(queue_ack(r, "w1", "a0", err, sizeof(err)), 0);
    assert_int_equal(inflight_of(r, "user-a"), 1);
    take_expect(r, "w4", "a2");
    assert_int_equal(inflight_of(r, "user-a"), 2);
    /* delay lowers the count too, and keeps the owner */
    assert_int_equal(queue_delay_held(r, "w4", "a2", 1, err, sizeof(err)), 1);
    assert_int_equal(inflight_of(r, "user-a"), 1);
    assert_int_equal(list_len(r, QUEUE_PROCESSING_PREFIX "w4"), 0);
    /* w3 dies (no heartbeat): reaping returns a1 to user-a, count back to 0 */
    assert_int_equal(queue_reap(r, &returned, err, sizeof(err)), 0);
    assert_int_equal(returned, 2); /* w2's b0 and w3's a1 */
    assert_int_equal(inflight_of(r, "user-a"), 0);
    assert_int_equal(inflight_of(r, "user-b"), 0);
}

/* An idle worker blocked in queue_take wakes when an ack un-caps a user. */
typedef struct {
    const char *url;
    int rc;
    char id[QUEUE_ID_MAX];
    int64_t took_ms;
} blocked_take_t;

static void *blocked_take(void *arg)
{
    blocked_take_t *b = arg;
    char err[256] = "";
    redis_conn_t *r = redis_connect(b->url, 5000, err, sizeof(err));
    int64_t t0 = mono_ms();

    if (r == NULL) {
        b->rc = -2;
        return NULL;
    }
    b->rc = queue_take(r, "w-blocked", 3.0, b->id, sizeof(b->id), err, sizeof(err));
    b->took_ms = mono_ms() - t0;
    redis_close(r);
    return NULL;
}

static void test_fair_ack_wakes_capped(void **state)
{
    redis_conn_t *r = *state;
    const queue_fair_t cfg = {{6, 3, 1}, 1};
    char err[256] = "";
    blocked_take_t b = {redis_url, 0, "", 0};
    pthread_t th;
    redisReply *reply;

    queue_fair_set(&cfg);
    push_many(r, "a", 2, "user-a", "studio");
    take_expect(r, "w1", "a0");
    reply = redis_command(r, err, sizeof(err), "DEL %s", QUEUE_WAKE); /* no stale tokens */
    assert_non_null(reply);
    freeReplyObject(reply);
    assert_int_equal(pthread_create(&th, NULL, blocked_take, &b), 0);
    sleep_ms(300);
    assert_int_equal(queue_ack(r, "w1", "a0", err, sizeof(err)), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(b.rc, 1);
    assert_string_equal(b.id, "a1");
    assert_true(b.took_ms < 1500);
}

/* Processing items carry their owner; a worker handing back its work returns
 * each id to the taking end of its own user's list, order kept. */
static void test_fair_requeue_to_user(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char items[512];
    int moved = 0;

    push_many(r, "a", 3, "user-a", "studio");
    take_expect(r, "w1", "a0");
    take_expect(r, "w1", "a1");
    list_items(r, QUEUE_PROCESSING_PREFIX "w1", items, sizeof(items));
    assert_string_equal(items, "a1 studio user-a,a0 studio user-a");
    assert_int_equal(queue_requeue_worker(r, "w1", &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 2);
    list_items(r, "ca:jobs:u:user-a", items, sizeof(items));
    assert_string_equal(items, "a2,a1,a0");
    assert_int_equal(inflight_of(r, "user-a"), 0);
    assert_int_equal(list_len(r, QUEUE_JOBS), 0);
    take_expect(r, "w2", "a0");
}

/* A delayed retry keeps its owner and returns to the back of its user's list. */
static void test_fair_delay_keeps_owner(void **state)
{
    redis_conn_t *r = *state;
    char err[256] = "";
    char items[512];
    int moved = 0;

    push_many(r, "a", 2, "user-a", "creator");
    take_expect(r, "w1", "a0");
    assert_int_equal(queue_delay_held(r, "w1", "a0", 5, err, sizeof(err)), 1);
    assert_int_equal(queue_delay_held(r, "w1", "never-held", 1000000, err, sizeof(err)), 0);
    assert_int_equal(queue_delayed_count(r), 2);
    assert_int_equal(queue_promote_due(r, 10, 10, &moved, err, sizeof(err)), 0);
    assert_int_equal(moved, 1);
    list_items(r, "ca:jobs:u:user-a", items, sizeof(items));
    assert_string_equal(items, "a0,a1");
    take_expect(r, "w1", "a1");
    take_expect(r, "w1", "a0");
    list_items(r, QUEUE_PROCESSING_PREFIX "w1", items, sizeof(items));
    assert_string_equal(items, "a0 creator user-a,a1 creator user-a");
}

/* After a flush, PostgreSQL's queued jobs (id, user, tier) are pushed again to
 * their users' lists; ids already waiting or delayed are not pushed twice. */
static void test_fair_repush_after_flush(void **state)
{
    redis_conn_t *r = *state;
    const char *ids[] = {"j1", "j2", "j3", "j4"};
    const char *users[] = {"user-a", "user-a", "user-b", "user-c"};
    const char *tiers[] = {"studio", "studio", "free", NULL};
    char err[256] = "";
    char items[512];
    int pushed = 0;
    redisReply *reply;

    push_user(r, "j1", "user-a", "studio");
    reply = redis_command(r, err, sizeof(err), "FLUSHALL");
    assert_non_null(reply);
    freeReplyObject(reply);
    assert_int_equal(queue_depth(r), 0);
    push_user(r, "j2", "user-a", "studio"); /* pushed again after the flush */
    push_user(r, "j4", "user-c", "free");
    reply = redis_command(r, err, sizeof(err), "LPUSH %s j4", QUEUE_JOBS); /* legacy copy */
    assert_non_null(reply);
    freeReplyObject(reply);
    assert_int_equal(queue_take(r, "w1", 0.1, items, sizeof(items), err, sizeof(err)), 1);
    assert_int_equal(queue_delay_held(r, "w1", items, 1000000, err, sizeof(err)), 1);
    assert_int_equal(queue_repush_missing(r, 4, ids, users, tiers, &pushed, err, sizeof(err)), 0);
    assert_int_equal(pushed, 2); /* j1 and j3; j4 waits (legacy), the taken one is delayed */
    assert_int_equal(queue_repush_missing(r, 4, ids, users, tiers, &pushed, err, sizeof(err)), 0);
    assert_int_equal(pushed, 0);
    list_items(r, "ca:jobs:u:user-b", items, sizeof(items));
    assert_string_equal(items, "j3");
    list_items(r, "ca:jobs:ready:free", items, sizeof(items));
    assert_non_null(strstr(items, "user-b"));
}

static void test_fair_parse(void **state)
{
    queue_fair_t cfg;
    char err[256] = "";

    (void)state;
    assert_int_equal(queue_fair_parse("free=1,studio=8,creator=3", 4, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.weights[0], 8);
    assert_int_equal(cfg.weights[1], 3);
    assert_int_equal(cfg.weights[2], 1);
    assert_int_equal(cfg.user_inflight_max, 4);
    assert_int_equal(queue_fair_parse("studio=8,creator=3", 4, &cfg, err, sizeof(err)), -1);
    assert_int_equal(queue_fair_parse("studio=8,creator=3,free=0", 4, &cfg, err, sizeof(err)), -1);
    assert_int_equal(
        queue_fair_parse("studio=8,creator=3,free=1,free=2", 4, &cfg, err, sizeof(err)), -1);
    assert_int_equal(queue_fair_parse("studio=8x,creator=3,free=1", 4, &cfg, err, sizeof(err)), -1);
    assert_int_equal(queue_fair_parse("gold=8,creator=3,free=1", 4, &cfg, err, sizeof(err)), -1);
    assert_int_equal(queue_fair_parse("studio=8,creator=3,free=1", 0, &cfg, err, sizeof(err)), -1);
    assert_string_equal(queue_tier_name("studio"), "studio");
    assert_string_equal(queue_tier_name("gold"), "free");
    assert_string_equal(queue_tier_name(NULL), "free");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_push_take_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_wakes_on_push, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_removes_exactly_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_take, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_and_job_id_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_drops_overlong_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reap_dead_worker_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reap_orphan_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delayed_promotion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_promoters_never_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_survives_redis_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_tier_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_round_robin_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_late_free_overtakes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_inflight_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_ack_wakes_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_requeue_to_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_delay_keeps_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_repush_after_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_parse, setup, teardown),
    };
    int failed;

    redis_url = getenv("TEST_REDIS_URL");
    if (redis_url == NULL || getenv("TEST_REDIS_PORT") == NULL) {
        fprintf(stderr, "TEST_REDIS_URL and TEST_REDIS_PORT must be set\n");
        return 1;
    }
    log_init("test_queue", CA_LOG_ERROR);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    log_shutdown();
    return failed;
}
