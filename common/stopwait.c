/* stopwait — a sleep that a stop cuts short. See stopwait.h. */
#include "stopwait.h"

#include <time.h>

void stopwait_init(stopwait_t *sw)
{
    pthread_condattr_t attr;
    pthread_mutex_init(&sw->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&sw->cond, &attr);
    pthread_condattr_destroy(&attr);
    atomic_store(&sw->stop, 0);
    sw->nudges = 0;
}

void stopwait_destroy(stopwait_t *sw)
{
    pthread_cond_destroy(&sw->cond);
    pthread_mutex_destroy(&sw->lock);
}

bool stopwait_sleep(stopwait_t *sw, int64_t ms)
{
    if (atomic_load(&sw->stop) != 0) {
        return true;
    }
    if (ms <= 0) {
        return false;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&sw->lock);
    uint64_t seen = sw->nudges;
    while (atomic_load(&sw->stop) == 0 && sw->nudges == seen) {
        if (pthread_cond_timedwait(&sw->cond, &sw->lock, &until) != 0) {
            break; /* ETIMEDOUT */
        }
    }
    pthread_mutex_unlock(&sw->lock);
    return atomic_load(&sw->stop) != 0;
}

void stopwait_stop(stopwait_t *sw)
{
    pthread_mutex_lock(&sw->lock);
    atomic_store(&sw->stop, 1);
    pthread_cond_broadcast(&sw->cond);
    pthread_mutex_unlock(&sw->lock);
}

bool stopwait_stopped(stopwait_t *sw)
{
    return atomic_load(&sw->stop) != 0;
}

void stopwait_nudge(stopwait_t *sw)
{
    pthread_mutex_lock(&sw->lock);
    sw->nudges++;
    pthread_cond_broadcast(&sw->cond);
    pthread_mutex_unlock(&sw->lock);
}
