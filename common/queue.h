/*
 * queue — the reliable job queue on Redis lists (DESIGN.md "Redis keys").
 *
 *   ca:jobs                         LPUSH job ids; workers take from the right
 *   ca:jobs:processing:<worker_id>  what a worker holds (BLMOVE ca:jobs → here)
 *   ca:jobs:delayed                 sorted set: job id scored by due time (ms)
 *   ca:worker:<worker_id>           heartbeat, a key with a TTL
 *   ca:workers                      set of worker ids that ever held work
 *
 * An id taken stays in the worker's processing list until queue_ack(). If the
 * worker dies, its heartbeat expires and queue_reap() (run by any live worker)
 * moves its items back to ca:jobs atomically (a Lua script). Delayed retries sit in
 * ca:jobs:delayed and queue_promote_due() moves the due ones back atomically.
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
#define QUEUE_ID_MAX 128

__attribute__((warn_unused_result)) int queue_push(redis_conn_t *r, const char *id, char *err,
                                                   size_t errlen);

/* Blocks up to timeout_s (fractions allowed) for an id. Returns 1 and fills id
 * (at most QUEUE_ID_MAX-1 bytes; longer ids are dropped with a warning), 0 on
 * timeout, -1 on error. */
__attribute__((warn_unused_result)) int queue_take(redis_conn_t *r, const char *worker_id,
                                                   double timeout_s, char *id, size_t idlen,
                                                   char *err, size_t errlen);

/* Removes one occurrence of id from the worker's processing list. */
__attribute__((warn_unused_result)) int queue_ack(redis_conn_t *r, const char *worker_id,
                                                  const char *id, char *err, size_t errlen);

/* queue_ack(id) and a queue_take() that does not wait, in one atomic script:
 * returns 1 and fills next, 0 when ca:jobs is empty (the ack is done either
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

/* Moves every item of a processing list back to ca:jobs and deletes the list;
 * used by a worker handing back its own work on shutdown. *moved gets the count. */
__attribute__((warn_unused_result)) int queue_requeue_worker(redis_conn_t *r, const char *worker_id,
                                                             int *moved, char *err, size_t errlen);

/* For every worker in ca:workers (and every ca:jobs:processing:* list) whose
 * heartbeat key is gone: requeue its items atomically. *returned gets the total. */
__attribute__((warn_unused_result)) int queue_reap(redis_conn_t *r, int *returned, char *err,
                                                   size_t errlen);

/* ZADD ca:jobs:delayed due_ms id (and the id leaves nothing elsewhere). */
__attribute__((warn_unused_result)) int queue_delay(redis_conn_t *r, const char *id, int64_t due_ms,
                                                    char *err, size_t errlen);
/* Atomically moves up to `limit` ids with score <= now_ms to ca:jobs. */
__attribute__((warn_unused_result)) int
queue_promote_due(redis_conn_t *r, int64_t now_ms, int limit, int *moved, char *err, size_t errlen);

/* LLEN ca:jobs, ZCARD ca:jobs:delayed. -1 on error. */
long queue_depth(redis_conn_t *r);
long queue_delayed_count(redis_conn_t *r);

#endif
