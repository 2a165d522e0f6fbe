/*
 * stopwait.h — a sleep that a stop (or a nudge) cuts short.
 *
 * Background threads (the daemon's maintenance thread, the worker's threads,
 * the billing meter, the poller) sleep between rounds and must wake at once
 * on SIGTERM. One stopwait_t per group of threads:
 *
 *   stopwait_t sw;  stopwait_init(&sw);
 *   while (!stopwait_stopped(&sw)) {              // thread
 *       do_round();
 *       stopwait_sleep(&sw, 1000);                // returns early on stop
 *   }
 *   stopwait_stop(&sw);                           // drain: wakes every sleeper
 *   ... join the threads ...; stopwait_destroy(&sw);
 *
 * stopwait_nudge wakes the sleepers without stopping them (new work is due).
 * The wait runs on CLOCK_MONOTONIC, so a wall-clock step does not stretch it.
 */
#ifndef CA_STOPWAIT_H
#define CA_STOPWAIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_int stop;
    uint64_t nudges; /* under lock */
} stopwait_t;

void stopwait_init(stopwait_t *sw);
void stopwait_destroy(stopwait_t *sw);

/* Sleeps up to ms (<= 0: not at all). Returns true when stopped (at once if
 * it already was), false after the time or a nudge. */
bool stopwait_sleep(stopwait_t *sw, int64_t ms);

/* Sets the stop flag and wakes every sleeper; later sleeps return at once. */
void stopwait_stop(stopwait_t *sw);
bool stopwait_stopped(stopwait_t *sw);

/* Wakes every sleeper without stopping. */
void stopwait_nudge(stopwait_t *sw);

#endif
