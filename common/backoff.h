/*
 * backoff.h — the one retry-delay policy: exponential, capped, "equal jitter".
 *
 * The n-th consecutive retry (n >= 1) waits a uniform random time in
 * [cap/2, cap], where cap = min(max_ms, base_ms * 2^(n-1)):
 *
 *   n:      1        2        3        ...
 *   wait:   [b/2,b]  [b,2b]   [2b,4b]  ... up to [max/2, max]
 *
 * Half the delay is fixed, so a retry never fires at once (full jitter's
 * zero delay would hammer a server that just failed); the other half is
 * random, so clients that failed together spread out instead of retrying in
 * step. Used by the HTTP client, PostgreSQL and Redis reconnects, the
 * worker's job retries, the billing meter outbox and the poller's folder
 * backoff. Thread-safe: each thread has its own generator, seeded from the
 * operating system's random source.
 *
 *   int64_t wait = backoff_delay_ms(attempt, 1000, 300000);
 */
#ifndef CA_BACKOFF_H
#define CA_BACKOFF_H

#include <stdint.h>

/* The delay before the n-th retry (n < 1 counts as 1), with jitter. base_ms
 * <= 0 counts as 1; max_ms < base_ms counts as base_ms. */
int64_t backoff_delay_ms(int n, int64_t base_ms, int64_t max_ms);

/* The same without jitter: the upper bound of backoff_delay_ms. */
int64_t backoff_cap_ms(int n, int64_t base_ms, int64_t max_ms);

/* A uniform random number in [0, bound] from this thread's generator
 * (xorshift64*: fast, not for secrets — use crypto_random for those). */
uint64_t backoff_random(uint64_t bound);

#endif
