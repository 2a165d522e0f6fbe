/*
 * offload — run blocking work on a small thread pool, finish on the loop.
 *
 *   offload_t *pool = offload_new(base, 4);
 *   offload_run(pool, fetch_from_google, reply_to_client, ctx);
 *     fetch_from_google(ctx)  runs on a pool thread (may block)
 *     reply_to_client(ctx)    runs afterwards on the thread of `base`'s loop
 *
 * For event loops that must never block (api-gateway): Google calls, Stripe
 * calls, anything with a blocking client. Work items run in FIFO order on
 * `nthreads` threads; each finished item is handed back through a pipe watched
 * by the loop, so done callbacks run one at a time on the loop thread, in the
 * order the work finished. work must not be NULL; done may be NULL (fire and
 * forget). The pool never frees `arg`: done does.
 *
 * Thread-local resources (a blocking client per thread): create them lazily
 * in work (pthread_key_create with a destructor frees them at thread exit).
 */
#ifndef CA_OFFLOAD_H
#define CA_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

typedef struct offload offload_t;
typedef void (*offload_work_fn)(void *arg);
typedef void (*offload_done_fn)(void *arg);

#define OFFLOAD_MAX_QUEUE 10000

/* Starts nthreads (1..64) threads. NULL on failure. */
offload_t *offload_new(struct event_base *base, int nthreads);
/* Queues work. Returns 0, or -1 when the queue holds OFFLOAD_MAX_QUEUE items
 * or the pool is shutting down (neither callback will run). Loop thread or any
 * thread. */
__attribute__((warn_unused_result)) int offload_run(offload_t *pool, offload_work_fn work,
                                                    offload_done_fn done, void *arg);
/* Items queued, running, or finished but whose done has not run yet. */
size_t offload_pending(offload_t *pool);
/* Finishes queued and running work, joins the threads, runs the outstanding
 * done callbacks on the calling (loop) thread, frees the pool. */
void offload_free(offload_t *pool);

#endif
