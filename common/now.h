/*
 * now.h — the clocks, in milliseconds (or microseconds).
 *
 *   int64_t t0 = now_mono_ms();          // for durations and deadlines
 *   ...; int64_t took = now_mono_ms() - t0;
 *   int64_t stamp = now_wall_ms();       // Unix time, for what leaves the process
 *
 * Monotonic time never jumps (use it for timeouts, periods and elapsed time);
 * wall time is the calendar (use it for timestamps written to Redis or logs).
 */
#ifndef CA_NOW_H
#define CA_NOW_H

#include <stdint.h>

/* CLOCK_MONOTONIC in ms / µs. */
int64_t now_mono_ms(void);
int64_t now_mono_us(void);
/* CLOCK_REALTIME in ms since the Unix epoch. */
int64_t now_wall_ms(void);

#endif
