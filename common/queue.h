/*
 * queue — the reliable, fair job queue on Redis (DESIGN.md "Redis keys",
 * docs/common/queue.md "Fair scheduling").
 *
 *   ca:jobs:u:<user_id>             one FIFO list per user (LPUSH; taken from the right)
 *   ca:jobs:ready:<tier>            ring of the users of a tier that have ids waiting
 *   ca:jobs:sched                   hash: the tiers' weighted round robin counters
 *   ca:jobs:inflight                hash: user id -> ids held by workers
 *   ca:jobs:wake                    list of wake-up tokens (BLPOP by idle workers)
 *   ca:jobs                         legacy list (pseudo user "_", tier free)
 *   ca:jobs:processing:<worker_id>  what a worker holds: "<job_id> <tier> <user_id>"
 *   ca:jobs:delayed                 sorted set: "<job_id> <tier> <user_id>" by due time (ms)
 *   ca:worker:<worker_id>           heartbeat, a key with a TTL
 *   ca:workers                      set of worker ids that ever held work
 *
 * A take (one Lua script) picks the tier by smooth weighted round robin, the
 * user round robin within it (skipping users at their in-flight cap) and moves
 * the id into the worker's processing list. An id taken stays there until
 * queue_ack(). If the worker dies, its heartbeat expires and queue_reap() (run
 * by any live worker) moves its items back to their users' lists atomically.
 * Delayed retries sit in ca:jobs:delayed and queue_promote_due() moves the due
 * ones back atomically.
 */
#ifndef CA_QUEUE_H
#define CA_QUEUE_H

#include "redis.h"

#include <stddef.h>
#include <stdint.h>

#define QUEUE_JOBS "ca:jobs"
#define QUEUE_PROCESSING_PREFIX "ca:jobs:processing:"
#define QUEUE_DELAYED "ca:jobs:delayed"
#define QUEUE_HEARTBEAT_PREFIX "ca:worker:"
#define QUEUE_WORKERS "ca:workers"
#define QUEUE_WAKE "ca:jobs:wake"
#define QUEUE_ID_MAX 128
#define QUEUE_TIERS 3 /* studio, creator, free: the order of queue_fair_t.weights */

typedef struct {
    int weights[QUEUE_TIERS]; /* studio, creator, free; each 1-1000 */
    int user_inflight_max;    /* ids of one user held by all workers at once */
} queue_fair_t;

/* The weights and cap this process's takes use (default {6, 3, 1}, 4). Call
 * before the worker threads start. */
void queue_fair_set(const queue_fair_t *cfg);
/* Parses "studio=6,creator=3,free=1" (each tier once, 1-1000) and a cap of
 * 1-10000 into *out. -1 with err on bad input. */
__attribute__((warn_unused_result)) int queue_fair_parse(const char *weights, int user_inflight_max,
                                                         queue_fair_t *out, char *err,
                                                         size_t errlen);
/* "studio" or "creator" as given; anything else (NULL too) is "free". */
const char *queue_tier_name(const char *tier);

/* Appends id to user_id's FIFO (tier: see queue_tier_name). user_id NULL: the
 * legacy list ca:jobs (free tier, no cap). A user id has the job id's rules. */
__attribute__((warn_unused_result)) int queue_push_user(redis_conn_t *r, const char *id,
                                                        const char *user_id, const char *tier,
                                                        char *err, size_t errlen);

/* The Lua text queue_push_user runs (no KEYS; ARGV id, tier, user id), for an
 * asynchronous client (the gateway's retry). A static string. */
const char *queue_push_script(void);

/* queue_push_user(id, NULL, NULL): the legacy list, for pushers without an owner. */
__attribute__((warn_unused_result)) int queue_push(redis_conn_t *r, const char *id, char *err,
                                                   size_t errlen);

/* Takes the next id by the fair order, waiting up to timeout_s (fractions
 * allowed; below 1 ms: no wait) on ca:jobs:wake when there is none. Returns 1
 * and fills id (ids of 128 bytes or more are dropped with a warning by the
 * script), 0 on timeout, -1 on error. */
__attribute__((warn_unused_result)) int queue_take(redis_conn_t *r, const char *worker_id,
                                                   double timeout_s, char *id, size_t idlen,
                                                   char *err, size_t errlen);

/* Removes the newest item for id from the worker's processing list and lowers
 * its user's in-flight count. */
__attribute__((warn_unused_result)) int queue_ack(redis_conn_t *r, const char *worker_id,
                                                  const char *id, char *err, size_t errlen);

/* queue_ack(id) and a queue_take() that does not wait, in one atomic script:
 * returns 1 and fills next, 0 when nothing can be taken (the ack is done either
 * way), -1 on error (the ack may not be done: fall back to queue_ack). */
__attribute__((warn_unused_result)) int queue_ack_take(redis_conn_t *r, const char *worker_id,
                                                       const char *id, char *next, size_t nextlen,
                                                       char *err, size_t errlen);

/* SET ca:worker:<id> <now> EX ttl_s and SADD ca:workers <id>. */
__attribute__((warn_unused_result)) int queue_heartbeat(redis_conn_t *r, const char *worker_id,
                                                        int ttl_s, char *err, size_t errlen);
/* Deletes the heartbeat (clean shutdown after handing work back). */
__attribute__((warn_unused_result)) int
queue_heartbeat_clear(redis_conn_t *r, const char *worker_id, char *err, size_t errlen);

/* Moves every item of a processing list back to its user's list (taken next)
 * and deletes the list;
 * used by a worker handing back its own work on shutdown. *moved gets the count. */
__attribute__((warn_unused_result)) int queue_requeue_worker(redis_conn_t *r, const char *worker_id,
                                                             int *moved, char *err, size_t errlen);

/* For every worker in ca:workers (and every ca:jobs:processing:* list) whose
 * heartbeat key is gone: requeue its items atomically. *returned gets the total. */
__attribute__((warn_unused_result)) int queue_reap(redis_conn_t *r, int *returned, char *err,
                                                   size_t errlen);

/* ZADD ca:jobs:delayed due_ms id, bare (promoted to the legacy list; the
 * caller acks its copy). Prefer queue_delay_held. */
__attribute__((warn_unused_result)) int queue_delay(redis_conn_t *r, const char *id, int64_t due_ms,
                                                    char *err, size_t errlen);
/* Atomically: the worker's item for id leaves its processing list (as
 * queue_ack) and enters ca:jobs:delayed with its owner, due at due_ms: 1. An
 * id not held is delayed bare: 0. -1 on error. */
__attribute__((warn_unused_result)) int queue_delay_held(redis_conn_t *r, const char *worker_id,
                                                         const char *id, int64_t due_ms, char *err,
                                                         size_t errlen);
/* Atomically moves up to `limit` items with score <= now_ms to the back of
 * their users' lists. */
__attribute__((warn_unused_result)) int
queue_promote_due(redis_conn_t *r, int64_t now_ms, int limit, int *moved, char *err, size_t errlen);

/* Pushes each (ids[i], user_ids[i], tiers[i]) whose id waits neither in its
 * user's list, the legacy list nor the delayed set (recovery from PostgreSQL).
 * n 0-10000. *pushed gets the count. */
__attribute__((warn_unused_result)) int
queue_repush_missing(redis_conn_t *r, int n, const char *const *ids, const char *const *user_ids,
                     const char *const *tiers, int *pushed, char *err, size_t errlen);

/* Ids waiting in all user lists and ca:jobs (the autoscaler's number);
 * ZCARD ca:jobs:delayed. -1 on error. */
long queue_depth(redis_conn_t *r);
long queue_delayed_count(redis_conn_t *r);

#endif
