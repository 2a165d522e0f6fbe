/*
 * offload — a thread pool whose results come back to a libevent loop.
 * See offload.h and docs/common/offload.md.
 */
#define _GNU_SOURCE
#include "offload.h"

#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct item {
    struct item *next;
    offload_work_fn work;
    offload_done_fn done;
    void *arg;
} item_t;

struct offload {
    struct event_base *base;
    struct event *wake_ev;
    int pipe_rd, pipe_wr;
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    item_t *todo_head, *todo_tail; /* waiting for a thread */
    item_t *done_head, *done_tail; /* waiting for the loop */
    size_t queued;                 /* in todo */
    size_t pending;                /* todo + running + done */
    bool stopping;
};

static void push(item_t **head, item_t **tail, item_t *it)
{
    it->next = NULL;
    if (*tail != NULL) {
        (*tail)->next = it;
    } else {
        *head = it;
    }
    *tail = it;
}

static void *worker_main(void *arg)
{
    offload_t *pool = arg;
    log_context_set("thread", "offload");
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->todo_head == NULL && !pool->stopping) {
            pthread_cond_wait(&pool->cond, &pool->lock);
        }
        if (pool->todo_head == NULL) {
            break; /* stopping and nothing left */
        }
        item_t *it = pool->todo_head;
        pool->todo_head = it->next;
        if (pool->todo_head == NULL) {
            pool->todo_tail = NULL;
        }
        pool->queued--;
        pthread_mutex_unlock(&pool->lock);

        it->work(it->arg);

        pthread_mutex_lock(&pool->lock);
        push(&pool->done_head, &pool->done_tail, it);
        /* One byte per finished item is not needed: one wakes the loop, which
         * drains the whole done list. A full pipe already means "wake up". */
        char b = 1;
        ssize_t w = write(pool->pipe_wr, &b, 1);
        (void)w;
    }
    pthread_mutex_unlock(&pool->lock);
    log_context_clear();
    return NULL;
}

/* Runs the done callbacks of finished items (loop thread). */
static void run_done(offload_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    item_t *list = pool->done_head;
    pool->done_head = pool->done_tail = NULL;
    pthread_mutex_unlock(&pool->lock);
    while (list != NULL) {
        item_t *it = list;
        list = it->next;
        if (it->done != NULL) {
            it->done(it->arg);
        }
        free(it);
        pthread_mutex_lock(&pool->lock);
        pool->pending--;
        pthread_mutex_unlock(&pool->lock);
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    run_done(arg);
}

offload_t *offload_new(struct event_base *base, int nthreads)
{
    if (base == NULL || nthreads < 1 || nthreads > 64) {
        return NULL;
    }
    offload_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return NULL;
    }
    pool->base = base;
    pool->pipe_rd = pool->pipe_wr = -1;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(pool);
        return NULL;
    }
    pool->pipe_rd = fds[0];
    pool->pipe_wr = fds[1];
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    pool->wake_ev = event_new(base, pool->pipe_rd, EV_READ | EV_PERSIST, on_wake, pool);
    pool->threads = calloc((size_t)nthreads, sizeof(*pool->threads));
    if (pool->wake_ev == NULL || pool->threads == NULL || event_add(pool->wake_ev, NULL) != 0) {
        goto fail;
    }
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0) {
            goto fail;
        }
        pool->nthreads++;
    }
    return pool;
fail:
    offload_free(pool);
    return NULL;
}

int offload_run(offload_t *pool, offload_work_fn work, offload_done_fn done, void *arg)
{
    if (pool == NULL || work == NULL) {
        return -1;
    }
    item_t *it = calloc(1, sizeof(*it));
    if (it == NULL) {
        return -1;
    }
    it->work = work;
    it->done = done;
    it->arg = arg;
    pthread_mutex_lock(&pool->lock);
    if (pool->stopping || pool->queued >= OFFLOAD_MAX_QUEUE) {
        pthread_mutex_unlock(&pool->lock);
        free(it);
        return -1;
    }
    push(&pool->todo_head, &pool->todo_tail, it);
    pool->queued++;
    pool->pending++;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

size_t offload_pending(offload_t *pool)
{
    if (pool == NULL) {
        return 0;
    }
    pthread_mutex_lock(&pool->lock);
    size_t n = pool->pending;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void offload_free(offload_t *pool)
{
    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++) {
        pthread_join(pool->threads[i], NULL);
    }
    run_done(pool);
    if (pool->wake_ev != NULL) {
        event_free(pool->wake_ev);
    }
    if (pool->pipe_rd >= 0) {
        close(pool->pipe_rd);
    }
    if (pool->pipe_wr >= 0) {
        close(pool->pipe_wr);
    }
    free(pool->threads);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->cond);
    free(pool);
}
